//! The egress policy: which addresses deliveries may connect to, checked on the address a
//! connection is actually made to — the result of DNS resolution inside reqwest (a custom
//! resolver), or the literal address in the URL — so a host name that resolves to a denied
//! address (DNS rebinding included) is refused like the address itself.
//!
//! Rules are CIDR ranges, denied or allowed; the most specific range containing an address
//! decides (deny wins a tie), and an address no range contains is allowed. Always denied unless
//! an allow range is more specific: link-local 169.254.0.0/16 (cloud metadata) and fe80::/10,
//! the unspecified addresses and the IPv4 broadcast address. Loopback and private ranges are
//! allowed by default; operators add them with `--egress-deny`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Ranges denied whatever the flags say (unless an allow range is more specific).
pub const DEFAULT_DENY: &[&str] = &[
    "169.254.0.0/16",
    "fe80::/10",
    "0.0.0.0/32",
    "::/128",
    "255.255.255.255/32",
];

/// Denied and allowed ranges.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        EgressPolicy::new(Vec::new(), Vec::new())
    }
}

impl EgressPolicy {
    /// The default denials plus `deny`, and `allow`.
    pub fn new(deny: Vec<IpNet>, allow: Vec<IpNet>) -> Self {
        let mut all: Vec<IpNet> = DEFAULT_DENY.iter().filter_map(|c| c.parse().ok()).collect();
        all.extend(deny);
        EgressPolicy { deny: all, allow }
    }

    /// Parses a comma-separated CIDR list (a bare address is a single-address range).
    pub fn parse_list(list: &str) -> Result<Vec<IpNet>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("{s:?} is not a CIDR range (e.g. 10.0.0.0/8) or an address")
                    })
            })
            .collect()
    }

    /// Whether a connection to `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        // An IPv4 address written as IPv6 is judged as the IPv4 address it is.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let longest = |nets: &[IpNet]| {
            nets.iter()
                .filter(|n| n.contains(&ip))
                .map(IpNet::prefix_len)
                .max()
        };
        match (longest(&self.deny), longest(&self.allow)) {
            (None, _) => true,
            (Some(d), Some(a)) => a > d,
            (Some(_), None) => false,
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("egress policy refused {host}: every address it resolves to is denied ({addrs})")]
pub struct EgressDenied {
    host: String,
    addrs: String,
}

/// reqwest's resolver, filtered by the policy.
pub struct PolicyResolver(pub Arc<EgressPolicy>);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(resolve_allowed(self.0.clone(), name.as_str().to_owned()))
    }
}

/// The addresses `host` resolves to that the policy allows; an error naming the denied ones
/// when none is left.
async fn resolve_allowed(
    policy: Arc<EgressPolicy>,
    host: String,
) -> Result<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
    let (ok, denied): (Vec<SocketAddr>, Vec<SocketAddr>) =
        found.into_iter().partition(|a| policy.allows(a.ip()));
    if ok.is_empty() {
        let addrs: Vec<String> = denied.iter().map(|a| a.ip().to_string()).collect();
        let addrs = if addrs.is_empty() {
            "none found".to_owned()
        } else {
            addrs.join(", ")
        };
        return Err(Box::new(EgressDenied { host, addrs }));
    }
    Ok(Box::new(ok.into_iter()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_range_decides() {
        let p = EgressPolicy::default();
        assert!(!p.allows("169.254.169.254".parse().unwrap()));
        assert!(!p.allows("::ffff:169.254.169.254".parse().unwrap()));
        assert!(!p.allows("fe80::1".parse().unwrap()));
        assert!(!p.allows("0.0.0.0".parse().unwrap()));
        assert!(p.allows("127.0.0.1".parse().unwrap()));
        let p = EgressPolicy::new(
            EgressPolicy::parse_list("0.0.0.0/0, 10.0.0.0/8").unwrap(),
            EgressPolicy::parse_list("10.1.0.0/16,169.254.169.254").unwrap(),
        );
        assert!(p.allows("10.1.2.3".parse().unwrap()));
        assert!(!p.allows("10.2.0.1".parse().unwrap()));
        assert!(!p.allows("8.8.8.8".parse().unwrap()));
        assert!(p.allows("169.254.169.254".parse().unwrap()));
        assert!(EgressPolicy::parse_list("10.0.0.0/33").is_err());
    }
}
