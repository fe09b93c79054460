//! HMAC signatures of webhook providers, verified over the raw body as received.
//!
//! - `github`: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the body, keyed with the
//!   secret's bytes.
//! - `stripe`: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 of `t.body`, keyed
//!   with the secret's bytes (`whsec_…` included); any `v1` may match (Stripe sends several
//!   while its own secret rotates).
//! - `standard-webhooks`: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`
//!   (several space-separated), HMAC-SHA256 of `id.timestamp.body`, keyed with the base64 after
//!   `whsec_`.
//!
//! Timestamps more than [`TOLERANCE_SECS`] away from now, in either direction, are refused, so a
//! captured call cannot be replayed later; within that window a replay is recognised by
//! [`signed_key`] and answered as a repeat of the first call. GitHub's signature carries no
//! timestamp: a captured GitHub call passes for ever unless the webhook deduplicates on
//! `X-GitHub-Delivery`. Every comparison is constant-time (`subtle`).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::AuthFailure;
use super::secrets::Secret;

/// Largest accepted distance between a signed timestamp and now, either way.
pub const TOLERANCE_SECS: i64 = 300;

/// Shortest secret accepted when one is given rather than generated (bytes of key material).
const MIN_GIVEN_SECRET: usize = 16;
/// Longest secret accepted when one is given.
const MAX_GIVEN_SECRET: usize = 512;

/// A provider's signature format.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HmacScheme {
    /// GitHub (and Gitea, Bitbucket…): `X-Hub-Signature-256`.
    Github,
    /// Stripe: `Stripe-Signature`.
    Stripe,
    /// Standard Webhooks (Svix and others): `webhook-id`/`-timestamp`/`-signature`.
    StandardWebhooks,
}

impl HmacScheme {
    /// Every scheme, for messages.
    pub const ALL: [HmacScheme; 3] = [
        HmacScheme::Github,
        HmacScheme::Stripe,
        HmacScheme::StandardWebhooks,
    ];

    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            HmacScheme::Github => "github",
            HmacScheme::Stripe => "stripe",
            HmacScheme::StandardWebhooks => "standard-webhooks",
        }
    }

    /// Parses an API name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// A new random secret of 256 bits, in the form the provider's tooling expects.
    pub fn generate_secret(self) -> Secret {
        let bytes: [u8; 32] = rand::random();
        Secret::new(match self {
            HmacScheme::Github => hex::encode(bytes),
            HmacScheme::Stripe => format!("whsec_{}", hex::encode(bytes)),
            HmacScheme::StandardWebhooks => format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
        })
    }

    /// Checks a secret given by the user (one the provider generated); the message names what
    /// is wrong without repeating the secret.
    pub fn check_secret(self, secret: &str) -> Result<(), String> {
        if secret.len() > MAX_GIVEN_SECRET || secret.chars().any(char::is_control) {
            return Err(format!(
                "secret must be at most {MAX_GIVEN_SECRET} printable characters"
            ));
        }
        let key = self.key(secret).map_err(str::to_owned)?;
        if key.len() < MIN_GIVEN_SECRET {
            return Err(format!(
                "secret is too short: at least {MIN_GIVEN_SECRET} bytes of key material"
            ));
        }
        Ok(())
    }

    /// The HMAC key of a secret.
    fn key(self, secret: &str) -> Result<Vec<u8>, &'static str> {
        match self {
            HmacScheme::Github | HmacScheme::Stripe => Ok(secret.as_bytes().to_vec()),
            HmacScheme::StandardWebhooks => base64::engine::general_purpose::STANDARD
                .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
                .map_err(|_| "a standard-webhooks secret is whsec_ followed by base64"),
        }
    }
}

/// Verifies a call signed under `scheme` with any of `secrets` (more than one during a
/// rotation window). `now` is Unix seconds.
pub fn verify(
    scheme: HmacScheme,
    secrets: &[Secret],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), AuthFailure> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match scheme {
        HmacScheme::Github => {
            let given = header("x-hub-signature-256").ok_or(AuthFailure::Missing)?;
            let sig = given
                .trim()
                .strip_prefix("sha256=")
                .and_then(|h| hex::decode(h).ok())
                .ok_or(AuthFailure::Wrong)?;
            any_matches(scheme, secrets, &[body], &[sig])
        }
        HmacScheme::Stripe => {
            let given = header("stripe-signature").ok_or(AuthFailure::Missing)?;
            let (mut t, mut sigs) = (None, Vec::new());
            for item in given.split(',') {
                match item.trim().split_once('=') {
                    Some(("t", v)) => t = Some(v),
                    Some(("v1", v)) => sigs.extend(hex::decode(v).ok()),
                    _ => {}
                }
            }
            let t = t.ok_or(AuthFailure::Wrong)?;
            fresh(t, now)?;
            any_matches(scheme, secrets, &[t.as_bytes(), b".", body], &sigs)
        }
        HmacScheme::StandardWebhooks => {
            let (id, ts, given) = match (
                header("webhook-id"),
                header("webhook-timestamp"),
                header("webhook-signature"),
            ) {
                (Some(id), Some(ts), Some(sig)) => (id, ts, sig),
                _ => return Err(AuthFailure::Missing),
            };
            fresh(ts, now)?;
            let sigs: Vec<Vec<u8>> = given
                .split_whitespace()
                .filter_map(|s| s.strip_prefix("v1,"))
                .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .collect();
            any_matches(
                scheme,
                secrets,
                &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
                &sigs,
            )
        }
    }
}

/// The signed identity of a call [`verify`] accepted, as a deduplication key (prefixed by the
/// header it comes from, like the keys of [`crate::admission::call_key`]): Stripe's `t` with
/// the digest of the body it signs — what every matching `v1` signs, so dropping or adding a
/// `v1` does not make a new key — and the Standard Webhooks `webhook-id`. GitHub signs no
/// identity: `None`.
pub fn signed_key(scheme: HmacScheme, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match scheme {
        HmacScheme::Github => None,
        HmacScheme::Stripe => {
            let t = header("stripe-signature")?
                .split(',')
                .find_map(|item| item.trim().strip_prefix("t="))?;
            let t: i64 = t.trim().parse().ok()?;
            Some(format!(
                "stripe-signature:t={t},sha256={}",
                hex_sha256(body)
            ))
        }
        HmacScheme::StandardWebhooks => {
            let id = header("webhook-id")?;
            let printable = id.bytes().all(|b| (0x20..0x7f).contains(&b));
            Some(if !id.is_empty() && id.len() <= 255 && printable {
                format!("webhook-id:{id}")
            } else {
                format!("webhook-id:sha256:{}", hex_sha256(id.as_bytes()))
            })
        }
    }
}

/// Lower-case hex of the sha256 of `bytes`. Written here rather than taken from `crate::util`:
/// the signature fuzz targets compile this file on its own.
fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(<Sha256 as sha2::Digest>::digest(bytes))
}

/// A signed timestamp within the tolerance of now.
fn fresh(timestamp: &str, now: i64) -> Result<(), AuthFailure> {
    let t: i64 = timestamp.trim().parse().map_err(|_| AuthFailure::Wrong)?;
    if now.abs_diff(t) > TOLERANCE_SECS as u64 {
        return Err(AuthFailure::Wrong);
    }
    Ok(())
}

/// True when some signature is the HMAC of `parts` under some secret. Every pair is compared,
/// in constant time, so the answer's timing does not tell which one (or how much of it) matched.
fn any_matches(
    scheme: HmacScheme,
    secrets: &[Secret],
    parts: &[&[u8]],
    signatures: &[Vec<u8>],
) -> Result<(), AuthFailure> {
    let mut ok = subtle::Choice::from(0);
    for secret in secrets {
        let Ok(key) = scheme.key(secret.expose()) else {
            continue;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
            continue;
        };
        for part in parts {
            mac.update(part);
        }
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        for sig in signatures {
            ok |= expected[..].ct_eq(sig);
        }
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(AuthFailure::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn secret(s: &str) -> Vec<Secret> {
        vec![Secret::new(s.into())]
    }

    #[test]
    fn the_signed_identity_is_the_replay_key() {
        let stripe = |sig: &str| headers(&[("stripe-signature", sig)]);
        let a = signed_key(HmacScheme::Stripe, &stripe("t=100,v1=aa,v1=bb"), b"x");
        let b = signed_key(HmacScheme::Stripe, &stripe("v1=bb, t=100"), b"x");
        assert!(
            a.as_deref()
                .is_some_and(|k| k.starts_with("stripe-signature:t=100,"))
        );
        assert_eq!(a, b, "the v1 list does not change the key");
        assert_ne!(
            a,
            signed_key(HmacScheme::Stripe, &stripe("t=101,v1=aa"), b"x")
        );
        assert_ne!(
            a,
            signed_key(HmacScheme::Stripe, &stripe("t=100,v1=aa"), b"y")
        );
        let sw = headers(&[("webhook-id", "msg_1")]);
        assert_eq!(
            signed_key(HmacScheme::StandardWebhooks, &sw, b"x").as_deref(),
            Some("webhook-id:msg_1")
        );
        let long = headers(&[("webhook-id", &"m".repeat(300))]);
        let key = signed_key(HmacScheme::StandardWebhooks, &long, b"x").unwrap();
        assert!(
            key.starts_with("webhook-id:sha256:") && key.len() < 100,
            "{key}"
        );
        assert_eq!(signed_key(HmacScheme::Github, &sw, b"x"), None);
    }

    /// GitHub's published example ("Validating webhook deliveries").
    #[test]
    fn github_published_vector() {
        let h = headers(&[(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        let s = secret("It's a Secret to Everybody");
        assert_eq!(
            verify(HmacScheme::Github, &s, &h, b"Hello, World!", 0),
            Ok(())
        );
        assert_eq!(
            verify(HmacScheme::Github, &s, &h, b"Hello, World?", 0),
            Err(AuthFailure::Wrong)
        );
        assert_eq!(
            verify(HmacScheme::Github, &s, &HeaderMap::new(), b"x", 0),
            Err(AuthFailure::Missing)
        );
    }

    /// The Standard Webhooks specification's example (also Svix's documentation).
    #[test]
    fn standard_webhooks_published_vector() {
        let h = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,bm9ldHZhbGlk v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        let s = secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        let at = 1614265330;
        assert_eq!(
            verify(HmacScheme::StandardWebhooks, &s, &h, body, at),
            Ok(())
        );
        // 300 s either way is the edge; one more second is refused.
        assert!(verify(HmacScheme::StandardWebhooks, &s, &h, body, at + 300).is_ok());
        assert!(verify(HmacScheme::StandardWebhooks, &s, &h, body, at - 300).is_ok());
        assert_eq!(
            verify(HmacScheme::StandardWebhooks, &s, &h, body, at + 301),
            Err(AuthFailure::Wrong)
        );
        assert_eq!(
            verify(HmacScheme::StandardWebhooks, &s, &h, body, at - 301),
            Err(AuthFailure::Wrong)
        );
        let other = secret("whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0");
        assert_eq!(
            verify(HmacScheme::StandardWebhooks, &other, &h, body, at),
            Err(AuthFailure::Wrong)
        );
        let both = [other, s].concat();
        assert!(verify(HmacScheme::StandardWebhooks, &both, &h, body, at).is_ok());
    }

    #[test]
    fn stripe_accepts_any_v1_and_checks_the_timestamp() {
        let key = "whsec_test_secret_0123456789";
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        let good = hex::encode(mac.finalize().into_bytes());
        let h = headers(&[(
            "stripe-signature",
            &format!("t=1700000000,v1={},v1={good},v0=00", "ab".repeat(32)),
        )]);
        let s = secret(key);
        assert!(verify(HmacScheme::Stripe, &s, &h, b"{\"a\":1}", 1_700_000_100).is_ok());
        assert_eq!(
            verify(HmacScheme::Stripe, &s, &h, b"{\"a\":1}", 1_700_000_301),
            Err(AuthFailure::Wrong)
        );
        let no_t = headers(&[("stripe-signature", &format!("v1={good}"))]);
        assert_eq!(
            verify(HmacScheme::Stripe, &s, &no_t, b"{\"a\":1}", 1_700_000_000),
            Err(AuthFailure::Wrong)
        );
    }

    /// What the `sig_*` fuzz targets feed: malformed values are refused, never a panic; a value
    /// that is not visible ASCII reads as no header at all.
    #[test]
    fn hostile_signature_headers_are_refused() {
        let s = secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let check = |scheme, pairs: &[(&'static str, &[u8])], now| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, http::HeaderValue::from_bytes(v).unwrap());
            }
            verify(scheme, &s, &h, b"{}", now)
        };
        let wrong = Err(AuthFailure::Wrong);
        for value in [
            &b"sha256="[..],
            b"sha256=zz",
            b"sha256=abc",
            b"sha1=00",
            b"",
            b"   ",
        ] {
            let got = check(HmacScheme::Github, &[("x-hub-signature-256", value)], 0);
            assert_eq!(got, wrong, "{value:?}");
        }
        let got = check(
            HmacScheme::Github,
            &[("x-hub-signature-256", b"sha256=\xff")],
            0,
        );
        assert_eq!(got, Err(AuthFailure::Missing));

        for (value, now) in [
            (&b"t=,v1=00"[..], 0),
            (b"t=abc,v1=00", 0),
            (b"t=99999999999999999999,v1=00", 0),
            (b"t=-9223372036854775808,v1=00", i64::MAX),
            (b"t=9223372036854775807,v1=00", i64::MIN),
            (b"t=0,v1=", 0),
            (b"t=0,v1", 0),
            (b",,,=,t", 0),
        ] {
            let got = check(HmacScheme::Stripe, &[("stripe-signature", value)], now);
            assert_eq!(got, wrong, "{value:?}");
        }

        for (ts, sig, now) in [
            (&b"-9223372036854775808"[..], &b"v1,AAAA"[..], i64::MAX),
            (b"9223372036854775807", b"v1,AAAA", i64::MIN),
            (b"1e9", b"v1,AAAA", 1_000_000_000),
            (b"0", b"v1,", 0),
            (b"0", b"v1,!!!! v2,AAAA v1 ,", 0),
        ] {
            let pairs = [
                ("webhook-id", &b"msg_1"[..]),
                ("webhook-timestamp", ts),
                ("webhook-signature", sig),
            ];
            let got = check(HmacScheme::StandardWebhooks, &pairs, now);
            assert_eq!(got, wrong, "{ts:?} {sig:?}");
        }
    }

    #[test]
    fn generated_secrets_have_256_bits_and_pass_their_own_check() {
        for scheme in HmacScheme::ALL {
            let s = scheme.generate_secret();
            assert!(scheme.key(s.expose()).unwrap().len() >= 32);
            scheme.check_secret(s.expose()).unwrap();
            assert_ne!(s, scheme.generate_secret());
        }
        assert!(HmacScheme::Github.check_secret("short").is_err());
        assert!(
            HmacScheme::StandardWebhooks
                .check_secret("whsec_not base64!")
                .is_err()
        );
    }
}
