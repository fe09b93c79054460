//! Org API keys: `wharf_key_` and 48 random alphanumerics (about 285 bits), shown once and
//! stored as their sha256. A key this random needs no slow hash: the digest cannot be reversed,
//! and looking a key up by its digest means the lookup's timing depends only on the digest,
//! never on how much of a real key a guess shares.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, header};
use uuid::Uuid;

use super::secrets::Secret;

/// Every key starts with this, which also lets scanners recognise a leaked one.
pub const KEY_PREFIX: &str = "wharf_key_";
/// Random characters after the prefix: 48 × log2(62) ≈ 285 bits.
pub const KEY_CHARS: usize = 48;
/// Characters of a key kept to list it by: the prefix and 6 random characters (36 bits, too
/// few to help a guess).
const SHOWN_CHARS: usize = KEY_PREFIX.len() + 6;
/// A node records a key's use at most this often.
pub const TOUCH_EVERY_MS: i64 = 60_000;

/// A new API key.
pub fn new_api_key() -> Secret {
    Secret::new(crate::util::random_token(KEY_PREFIX, KEY_CHARS))
}

/// The part of a key that may be listed.
pub fn shown_prefix(key: &str) -> String {
    key.chars().take(SHOWN_CHARS).collect()
}

/// The credentials of an `Authorization: Bearer <credentials>` header. The scheme name is
/// matched case-insensitively (RFC 7235 §2.1); `None` when the header is absent, not text or
/// another scheme.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.trim().split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
        .filter(|c| !c.is_empty())
}

/// When keys were last used, kept in memory so that accepting a call costs no write: a key's
/// use is written (off the call's path) at most once per [`TOUCH_EVERY_MS`] per node.
#[derive(Default)]
pub struct KeyUsage {
    written: Mutex<HashMap<Uuid, i64>>,
}

impl KeyUsage {
    /// Notes a use at `now` (ms); true when it should be written now.
    pub fn note(&self, id: Uuid, now: i64) -> bool {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        match written.get(&id) {
            Some(&at) if now - at < TOUCH_EVERY_MS => false,
            _ => {
                // Bounded: a node sees few keys, but a map must not grow without end.
                if written.len() > 100_000 {
                    written.clear();
                }
                written.insert(id, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut h = HeaderMap::new();
        for v in ["Bearer abc", "bearer abc", "BEARER  abc ", "BeArEr\tabc"] {
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            assert_eq!(bearer(&h), Some("abc"), "{v}");
        }
        for v in ["Basic abc", "Bearer", "Bearer ", "abc", "Bearerabc"] {
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            assert_eq!(bearer(&h), None, "{v}");
        }
    }

    #[test]
    fn keys_have_at_least_256_bits_and_list_by_a_short_prefix() {
        let key = new_api_key();
        let bits = KEY_CHARS as f64 * 62f64.log2();
        assert!(bits >= 256.0, "{bits}");
        assert_eq!(key.expose().len(), KEY_PREFIX.len() + KEY_CHARS);
        let shown = shown_prefix(key.expose());
        assert!(key.expose().starts_with(&shown));
        assert_eq!(shown.len(), 16);
    }

    #[test]
    fn usage_is_written_at_most_once_a_minute() {
        let usage = KeyUsage::default();
        let id = Uuid::new_v4();
        assert!(usage.note(id, 1_000));
        assert!(!usage.note(id, 30_000));
        assert!(usage.note(id, 61_000));
    }
}
