//! The rules of admission a webhook can be given, parsed once at the admin edge and applied by
//! the store inside the transaction that would queue a call: a rate limit, kept as a GCRA
//! (generic cell rate algorithm) timestamp, and the header a repeated call is recognised by.
//!
//! The store applies them, not ingress, because only the committing transaction sees every
//! other call — of this node and of every other node on the same database.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long a call's key makes repeats of it return its first answer.
pub const KEY_TTL_MS: i64 = 24 * 3600 * 1000;
/// The header a caller names a call by (any webhook, no opt-in needed).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Longest window a rate limit may have.
pub const MAX_PER_SECONDS: u32 = 30 * 24 * 3600;
/// Most calls a rate limit may allow per window; beyond it the emission interval of a second
/// long window would round to nothing.
pub const MAX_REQUESTS: u32 = 1_000_000;
/// Longest accepted key, in bytes.
const MAX_KEY_LEN: usize = 255;

/// At most `requests` admitted calls per `per_seconds`, as a token bucket kept exactly by GCRA:
/// a full bucket admits `requests` calls at once, and it refills continuously, one call per
/// `per_seconds / requests`. With `requests = 1` this is exactly one call per window, counted
/// from the last admitted call — no fixed windows, so no boundary lets two calls through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Calls per window (the burst size).
    pub requests: u32,
    /// The window, in seconds.
    pub per_seconds: u32,
}

/// A rate limit's answer to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Admitted; the state to store if the call is committed.
    Admit {
        /// The new theoretical arrival time (µs since the epoch).
        tat_us: i64,
    },
    /// Refused; a call would be admitted after this many milliseconds.
    Wait {
        /// Milliseconds to wait.
        ms: i64,
    },
}

impl RateLimit {
    /// Parses the `rate_limit` of a webhook setting; the message names the bad field.
    pub fn from_value(v: &Value) -> Result<RateLimit, String> {
        let Some(map) = v.as_object() else {
            return Err(format!(
                "rate_limit must be an object {{\"requests\": N, \"per_seconds\": S}}, not {v}"
            ));
        };
        if let Some(other) = map
            .keys()
            .find(|k| !matches!(k.as_str(), "requests" | "per_seconds"))
        {
            return Err(format!(
                "rate_limit: unknown field {other:?} (use \"requests\" and \"per_seconds\")"
            ));
        }
        let field = |name: &str, max: u32| -> Result<u32, String> {
            let raw = map
                .get(name)
                .ok_or_else(|| format!("rate_limit.{name} is missing"))?;
            // `3.0` is the whole number JSON Schema says it is.
            raw.as_u64()
                .or_else(|| {
                    raw.as_f64()
                        .filter(|f| f.fract() == 0.0 && (1.0..=f64::from(max)).contains(f))
                        .map(|f| f as u64)
                })
                .filter(|n| (1..=u64::from(max)).contains(n))
                .map(|n| n as u32)
                .ok_or_else(|| {
                    format!("rate_limit.{name} must be a whole number from 1 to {max}, not {raw}")
                })
        };
        Ok(RateLimit {
            requests: field("requests", MAX_REQUESTS)?,
            per_seconds: field("per_seconds", MAX_PER_SECONDS)?,
        })
    }

    /// Decides one call at `now_ms`, given the stored state (`None`: no call counted yet).
    pub fn pace(&self, tat_us: Option<i64>, now_ms: i64) -> Pace {
        let now = now_ms.saturating_mul(1000);
        let window = i64::from(self.per_seconds) * 1_000_000;
        let interval = window / i64::from(self.requests);
        // How far ahead of now the bucket may be booked: all but one call's worth of the window.
        let tolerance = window - interval;
        let tat = tat_us.map_or(now, |t| t.max(now));
        let ahead = tat - now;
        if ahead > tolerance {
            Pace::Wait {
                ms: ((ahead - tolerance) as u64).div_ceil(1000) as i64,
            }
        } else {
            Pace::Admit {
                tat_us: tat + interval,
            }
        }
    }

    /// The state is no longer needed once its time has passed: the bucket is full again, as if
    /// no call had ever been made. Stores prune rows older than this.
    pub fn is_spent(tat_us: i64, now_ms: i64) -> bool {
        tat_us <= now_ms.saturating_mul(1000)
    }

    /// How the limit reads in an error message.
    pub fn describe(&self) -> String {
        let calls = if self.requests == 1 { "call" } else { "calls" };
        let secs = if self.per_seconds == 1 {
            "second".to_string()
        } else {
            format!("{} seconds", self.per_seconds)
        };
        format!("{} {calls} per {secs}", self.requests)
    }
}

/// Seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(ms: i64) -> u64 {
    (ms.max(1) as u64).div_ceil(1000)
}

/// Which provider header identifies a delivery, for a webhook that deduplicates on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deduplicate {
    /// GitHub's `X-GitHub-Delivery`.
    GitHub,
    /// The Standard Webhooks `webhook-id`.
    StandardWebhooks,
    /// Any other header (stored lower-cased).
    Header(String),
}

/// Headers whose values are secrets: never a deduplication key, since keys are stored.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];

impl Deduplicate {
    /// Parses the `deduplicate` of a webhook setting; the message says what is accepted.
    pub fn from_value(v: &Value) -> Result<Deduplicate, String> {
        const SHAPES: &str = "\"github\", \"standard-webhooks\" or {\"header\": \"<header name>\"}";
        match v {
            Value::String(s) if s == "github" => Ok(Deduplicate::GitHub),
            Value::String(s) if s == "standard-webhooks" => Ok(Deduplicate::StandardWebhooks),
            Value::Object(map) if map.len() == 1 && map.contains_key("header") => {
                let name = map["header"]
                    .as_str()
                    .ok_or_else(|| format!("deduplicate.header must be a string, not {v}"))?;
                let name = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("deduplicate.header {name:?} is not a header name"))?;
                if SECRET_HEADERS.contains(&name.as_str()) {
                    return Err(format!(
                        "deduplicate.header {name:?} carries a secret and cannot be a key"
                    ));
                }
                Ok(Deduplicate::Header(name.as_str().to_owned()))
            }
            other => Err(format!("deduplicate must be {SHAPES}, not {other}")),
        }
    }

    /// The header (lower-case) whose value names a delivery.
    pub fn header(&self) -> &str {
        match self {
            Deduplicate::GitHub => "x-github-delivery",
            Deduplicate::StandardWebhooks => "webhook-id",
            Deduplicate::Header(h) => h,
        }
    }
}

impl Serialize for Deduplicate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Deduplicate::GitHub => "github".serialize(s),
            Deduplicate::StandardWebhooks => "standard-webhooks".serialize(s),
            Deduplicate::Header(h) => json!({ "header": h }).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Deduplicate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Deduplicate::from_value(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The key a call is deduplicated by: the identity its verified signature carries (`signed`,
/// see [`crate::auth::hmac::signed_key`]), which nothing unsigned overrides — else its
/// `Idempotency-Key`, else — when the webhook opted in — its provider's delivery id; `None` when
/// it has none. The stored key is prefixed by the header it came from, so a caller's own key can
/// never collide with a provider's id. A header present but not 1 to 255 printable ASCII
/// characters is an error naming it.
pub fn call_key(
    headers: &BTreeMap<String, String>,
    deduplicate: Option<&Deduplicate>,
    signed: Option<String>,
) -> Result<Option<String>, String> {
    if signed.is_some() {
        // Anyone who captured a signed call can add an Idempotency-Key of their own choosing:
        // only what the signature covers can name the call.
        return Ok(signed);
    }
    let (name, value) = match headers.get(IDEMPOTENCY_HEADER) {
        Some(v) => (IDEMPOTENCY_HEADER, v),
        None => match deduplicate.and_then(|d| headers.get_key_value(d.header())) {
            Some((name, v)) => (name.as_str(), v),
            None => return Ok(None),
        },
    };
    let printable = value.bytes().all(|b| (0x20..0x7f).contains(&b));
    if value.is_empty() || value.len() > MAX_KEY_LEN || !printable {
        return Err(format!(
            "the {} header must be 1 to {MAX_KEY_LEN} printable ASCII characters",
            display_name(name)
        ));
    }
    Ok(Some(format!("{name}:{value}")))
}

/// Header names as their specifications spell them, for messages.
fn display_name(lower: &str) -> &str {
    match lower {
        IDEMPOTENCY_HEADER => "Idempotency-Key",
        "x-github-delivery" => "X-GitHub-Delivery",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_hour_refuses_a_call_a_minute_later_for_the_rest_of_the_hour() {
        let limit = RateLimit {
            requests: 1,
            per_seconds: 3600,
        };
        let t0 = 1_000_000_000;
        let Pace::Admit { tat_us } = limit.pace(None, t0) else {
            panic!("first call admitted")
        };
        assert_eq!(
            limit.pace(Some(tat_us), t0 + 60_000),
            Pace::Wait { ms: 3_540_000 }
        );
        assert_eq!(
            limit.pace(Some(tat_us), t0 + 3_599_999),
            Pace::Wait { ms: 1 }
        );
        assert!(matches!(
            limit.pace(Some(tat_us), t0 + 3_600_000),
            Pace::Admit { .. }
        ));
    }

    #[test]
    fn a_full_bucket_admits_a_burst_then_refills_evenly() {
        let limit = RateLimit {
            requests: 3,
            per_seconds: 3,
        };
        let mut tat = None;
        for _ in 0..3 {
            match limit.pace(tat, 0) {
                Pace::Admit { tat_us } => tat = Some(tat_us),
                Pace::Wait { .. } => panic!("burst of 3 admitted"),
            }
        }
        assert_eq!(limit.pace(tat, 0), Pace::Wait { ms: 1000 });
        assert!(matches!(limit.pace(tat, 1000), Pace::Admit { .. }));
        assert!(RateLimit::is_spent(tat.unwrap(), 3000));
        assert!(!RateLimit::is_spent(tat.unwrap(), 2999));
    }

    #[test]
    fn settings_are_checked_with_messages_naming_the_field() {
        let ok = RateLimit::from_value(&json!({"requests": 1, "per_seconds": 3600})).unwrap();
        assert_eq!(ok.describe(), "1 call per 3600 seconds");
        for (bad, field) in [
            (json!({"requests": 0, "per_seconds": 1}), "requests"),
            (json!({"requests": 1, "per_seconds": 0}), "per_seconds"),
            (
                json!({"requests": 1, "per_seconds": MAX_PER_SECONDS + 1}),
                "per_seconds",
            ),
            (json!({"requests": 1.5, "per_seconds": 1}), "requests"),
            (json!({"per_seconds": 1}), "requests"),
            (
                json!({"requests": 1, "per_seconds": 1, "burst": 2}),
                "burst",
            ),
        ] {
            let e = RateLimit::from_value(&bad).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
        assert_eq!(
            Deduplicate::from_value(&json!({"header": "X-Delivery-Id"})).unwrap(),
            Deduplicate::Header("x-delivery-id".into())
        );
        assert!(Deduplicate::from_value(&json!({"header": "Authorization"})).is_err());
        assert!(Deduplicate::from_value(&json!("gitlab")).is_err());
    }

    #[test]
    fn keys_come_from_the_idempotency_header_first_then_the_opted_in_provider_header() {
        let h = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let gh = Some(&Deduplicate::GitHub);
        assert_eq!(
            call_key(
                &h(&[("idempotency-key", "a"), ("x-github-delivery", "b")]),
                gh,
                None
            ),
            Ok(Some("idempotency-key:a".into()))
        );
        assert_eq!(
            call_key(&h(&[("x-github-delivery", "b")]), gh, None),
            Ok(Some("x-github-delivery:b".into()))
        );
        assert_eq!(
            call_key(&h(&[("x-github-delivery", "b")]), None, None),
            Ok(None)
        );
        // A signed identity wins over an unsigned key, even a malformed one.
        assert_eq!(
            call_key(
                &h(&[("idempotency-key", "mine"), ("webhook-id", "msg_1")]),
                Some(&Deduplicate::StandardWebhooks),
                Some("webhook-id:msg_1".into())
            ),
            Ok(Some("webhook-id:msg_1".into()))
        );
        let long = "k".repeat(256);
        for bad in ["", long.as_str(), "caf\u{e9}", "a\tb"] {
            let e = call_key(&h(&[("idempotency-key", bad)]), None, None).unwrap_err();
            assert!(e.contains("Idempotency-Key"), "{e}");
        }
    }
}
