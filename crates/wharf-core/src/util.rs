//! Small shared helpers: time stamps, hashes, random tokens, and files only their owner reads.

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

/// Makes `dir` (and missing parents) and restricts it to its owner (mode 0700), whatever the
/// process umask, so payloads, ciphertexts and compiled modules in it are not world-readable.
/// A folder that exists already is restricted too: a data folder made by an older version, or
/// by hand, is closed on the next start.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Restricts an existing file to its owner (mode 0600); a missing file is not an error.
pub fn restrict_file(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
