//! Failed sign-ins, counted per client address: a wrong admin token given to
//! `POST /api/v1/session` or as a bearer token on `/api/v1` counts as one, each is logged at
//! `warn` with the address (never the token), and past `--max-failed-sign-ins` in a minute the
//! address is answered `429` with `Retry-After` until that minute is over — before its token is
//! compared, so a blocked guesser learns nothing, not even from a right guess.
//!
//! The window is fixed (it starts at an address's first failure), so the count an address can
//! reach is bounded whatever its pace. Addresses are grouped as [`client_key`] says: an IPv6
//! client usually holds a whole /64.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use super::ApiError;

/// How long failures are counted before an address starts afresh.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The address a limit counts a client under: an IPv4 address (IPv4-mapped IPv6 included) as it
/// is, an IPv6 address as its /64, since one host commonly owns the whole prefix and could
/// otherwise take a new address for each try.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The TCP peer's address of a request (not a forwarding header: see README, *Proxies*). A
/// request served without one (a router driven directly, as in unit tests) counts as
/// `0.0.0.0`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(peer_of(&parts.extensions)))
    }
}

/// The peer address the connection loop put in a request's extensions.
pub(crate) fn peer_of(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// One address's failures within its window.
struct Failures {
    since: Instant,
    count: AtomicU32,
}

/// Each client's failures within its window, by [`client_key`].
type Seen = Arc<moka::sync::Cache<IpAddr, Arc<Failures>>>;

/// Counts failed sign-ins per client address. Cheap to clone.
#[derive(Clone)]
pub struct SignInGuard {
    /// The most failures per window, and who failed; `None`: no limit (failures are still
    /// logged).
    limit: Option<(u32, Seen)>,
}

impl SignInGuard {
    /// At most `max` failures per address per [`WINDOW`]; 0 turns the limit off.
    pub fn new(max: u32) -> Self {
        let limit = (max > 0).then(|| {
            // Entries live for one window from the first failure; the capacity bounds memory
            // whatever number of addresses a client can draw on.
            let cache = moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(WINDOW)
                .build();
            (max, Arc::new(cache))
        });
        SignInGuard { limit }
    }

    /// `429` when `client` has used up its failures for the current window.
    pub(crate) fn check(&self, client: IpAddr) -> Result<(), ApiError> {
        let Some((max, seen)) = &self.limit else {
            return Ok(());
        };
        let Some(failures) = seen.get(&client_key(client)) else {
            return Ok(());
        };
        if failures.count.load(Ordering::Relaxed) < *max {
            return Ok(());
        }
        let left = WINDOW.saturating_sub(failures.since.elapsed());
        let retry_after = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        tracing::debug!(%client, "sign-in refused: too many failed sign-ins");
        Err(ApiError::SlowDown {
            message: format!(
                "too many failed sign-ins from this address: try again in {retry_after} s"
            ),
            retry_after: retry_after.max(1),
        })
    }

    /// Counts a wrong admin token from `client` at `route`, and logs it without the token.
    pub(crate) fn failed(&self, client: IpAddr, route: &str) {
        let count = self.limit.as_ref().map(|(_, seen)| {
            let failures = seen.get_with(client_key(client), || {
                Arc::new(Failures {
                    since: Instant::now(),
                    count: AtomicU32::new(0),
                })
            });
            failures.count.fetch_add(1, Ordering::Relaxed) + 1
        });
        tracing::warn!(%client, route, failures_this_minute = count, "failed sign-in: wrong admin token");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn an_address_is_refused_after_its_failures_and_others_are_not() {
        let guard = SignInGuard::new(3);
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(guard.check(one).is_ok());
            guard.failed(one, "test");
        }
        match guard.check(one) {
            Err(ApiError::SlowDown { retry_after, .. }) => {
                assert!((1..=60).contains(&retry_after))
            }
            other => panic!("not refused: {other:?}"),
        }
        assert!(guard.check(two).is_ok());
        let off = SignInGuard::new(0);
        for _ in 0..100 {
            off.failed(one, "test");
        }
        assert!(off.check(one).is_ok());
    }
}
