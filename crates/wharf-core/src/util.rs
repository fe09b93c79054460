//! Small shared helpers: time stamps, hashes and random tokens.

use rand::Rng;
use sha2::{Digest, Sha256};

/// Milliseconds since the Unix epoch; the store keeps every time in this form so SQLite and
/// PostgreSQL compare and sort them the same way.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An RFC 3339 rendering (UTC, milliseconds) of a stored time, for JSON output.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Lower-case hex sha256 of some bytes: the content address of vessel code and the stored form
/// of high-entropy secrets (API keys, the admin token), which need no slow hash.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A random secret of `len` alphanumeric characters behind a readable prefix (`wharf_key_…`).
pub fn random_token(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let body: String = (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{body}")
}

/// Constant-time comparison of a presented secret against a stored sha256 hex digest.
pub fn secret_matches(presented: &str, stored_hash: &str) -> bool {
    use subtle::ConstantTimeEq;
    let presented = sha256_hex(presented.as_bytes());
    presented.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}
