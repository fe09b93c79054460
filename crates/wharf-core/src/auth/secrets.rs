//! Secrets at rest. A secret wharf must use again later — an HMAC secret to verify a signature,
//! a destination's `Authorization` value — cannot be hashed, so it is sealed with
//! XChaCha20-Poly1305 under a key kept outside the database: `WHARF_SECRET_KEY` (base64 of 32
//! bytes; every node sharing a PostgreSQL database needs the same one), or else a key generated
//! at first start into the data folder, readable by its owner only (mode 0600). A stolen
//! database without the key yields no secret.
//!
//! Sealed text is `v2:` + base64(nonce ‖ ciphertext): a random 192-bit nonce per seal, so
//! sealing one secret twice gives two unrelated texts. Each seal is bound, as associated data, to
//! what the value is for and the row that holds it ([`SealContext`]): someone who can write the
//! database but lacks the key cannot move a sealed value to another place — a webhook's HMAC
//! secret into a destination's `Authorization` header sent to a URL they chose, or one fleet's
//! destination credential into another fleet — because it no longer opens there.
//!
//! `v1:` texts (earlier versions, sealed without associated data) open only through
//! [`SecretBox::open_legacy`], which the start-up migration uses to seal them again as `v2:`.

use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// File in the data folder holding the generated key, base64.
pub const KEY_FILE: &str = "secret.key";
/// Prefix of text sealed by earlier versions, without associated data.
const V1: &str = "v1:";
/// Prefix of sealed text bound to its [`SealContext`].
const V2: &str = "v2:";
const NONCE_LEN: usize = 24;

/// Why a secret could not be unsealed, or the key not loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key given or stored is not 32 bytes of base64.
    #[error("the secret key {0}")]
    BadKey(String),
    /// The key file could not be read or written.
    #[error("the secret key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The text is not sealed by this version of wharf, or by another key (a node started
    /// without the shared `WHARF_SECRET_KEY`?), or was altered.
    #[error("a stored secret cannot be opened: {0}")]
    Unsealable(&'static str),
}

/// The sealing key. Cheap to clone; its bytes never appear in `Debug`.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    /// HMAC-SHA256 keyed with the same key, for [`SecretBox::derive_key`].
    derive: Hmac<Sha256>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox([redacted])")
    }
}

impl SecretBox {
    /// The key from `key_b64` (the value of `WHARF_SECRET_KEY`) when given, else from the data
    /// folder's key file, created (mode 0600) if missing.
    pub fn load(key_b64: Option<&str>, data_dir: &Path) -> Result<Self, SecretError> {
        if let Some(key) = key_b64.filter(|k| !k.trim().is_empty()) {
            return Self::from_base64(key)
                .map_err(|e| SecretError::BadKey(format!("in WHARF_SECRET_KEY {e}")));
        }
        let path = data_dir.join(KEY_FILE);
        let io = |source| SecretError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_base64(&text)
                .map_err(|e| SecretError::BadKey(format!("in {} {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = XChaCha20Poly1305::generate_key(&mut OsRng);
                let text = base64::engine::general_purpose::STANDARD.encode(key);
                write_private(&path, text.as_bytes()).map_err(io)?;
                Self::from_key(&key).map_err(SecretError::BadKey)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A key from base64 text of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "is not base64".to_owned())?;
        if bytes.len() != 32 {
            return Err(format!("is {} bytes, not 32", bytes.len()));
        }
        Self::from_key(&bytes)
    }

    fn from_key(key: &[u8]) -> Result<Self, String> {
        Ok(SecretBox {
            cipher: XChaCha20Poly1305::new_from_slice(key).map_err(|e| e.to_string())?,
            derive: <Hmac<Sha256> as hmac::Mac>::new_from_slice(key).map_err(|e| e.to_string())?,
        })
    }

    /// A key for one `purpose` (a fixed label such as `b"wasm-artifacts"`), derived from the
    /// secret key as HMAC-SHA256(secret key, `wharf key derivation v1` ‖ 0 ‖ purpose): the same
    /// secret key and purpose always give the same key, every node sharing the secret key
    /// derives the same one, and knowing a derived key tells nothing of the secret key or of
    /// the keys of other purposes.
    pub fn derive_key(&self, purpose: &[u8]) -> [u8; 32] {
        let mut mac = self.derive.clone();
        mac.update(b"wharf key derivation v1\0");
        mac.update(purpose);
        mac.finalize().into_bytes().into()
    }

    /// Seals a secret for storage in the place `context` names.
    pub fn seal(&self, context: &SealContext, plaintext: &[u8]) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: plaintext,
            aad: context.0.as_bytes(),
        };
        // Encryption with a valid key and nonce cannot fail for in-memory data.
        let sealed = self.cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!(
            "{V2}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    /// Opens what [`SecretBox::seal`] sealed for the same `context`.
    pub fn open(&self, context: &SealContext, sealed: &str) -> Result<Vec<u8>, SecretError> {
        if sealed.starts_with(V1) {
            return Err(SecretError::Unsealable(
                "sealed by an earlier version without its purpose; a restart seals it again",
            ));
        }
        let body = sealed
            .strip_prefix(V2)
            .ok_or(SecretError::Unsealable("unknown format"))?;
        self.decrypt(body, context.0.as_bytes())
    }

    /// Opens a `v1:` text of an earlier version, sealed without associated data. Only the
    /// start-up migration calls it, to seal the value again for its place.
    pub fn open_legacy(&self, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let body = sealed
            .strip_prefix(V1)
            .ok_or(SecretError::Unsealable("not a v1 text"))?;
        self.decrypt(body, b"")
    }

    /// Whether `sealed` is a text of an earlier version that the migration should seal again.
    pub fn is_legacy(sealed: &str) -> bool {
        sealed.starts_with(V1)
    }

    fn decrypt(&self, body: &str, aad: &[u8]) -> Result<Vec<u8>, SecretError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| SecretError::Unsealable("not base64"))?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretError::Unsealable("too short"));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| SecretError::Unsealable("too short"))?;
        let payload = Payload {
            msg: ciphertext,
            aad,
        };
        self.cipher
            .decrypt(&XNonce::from(nonce), payload)
            .map_err(|_| {
                SecretError::Unsealable("wrong key, altered text, or another place's value")
            })
    }

    /// Opens a sealed UTF-8 secret.
    pub fn open_string(&self, context: &SealContext, sealed: &str) -> Result<Secret, SecretError> {
        String::from_utf8(self.open(context, sealed)?)
            .map(Secret::new)
            .map_err(|_| SecretError::Unsealable("not UTF-8"))
    }
}

/// What a sealed value is for and which row holds it; bound into its seal as associated data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealContext(String);

impl SealContext {
    /// A webhook's HMAC secret. Bound to the fleet, not the webhook id, which rotation changes.
    pub fn webhook_secret(fleet_id: uuid::Uuid) -> Self {
        SealContext(format!("wharf/v2/webhook-secret/{fleet_id}"))
    }

    /// A secret field (`authorization`, `api_key`, `signing_secret`) of a fleet's destination.
    pub fn destination(fleet_id: uuid::Uuid, destination: &str, field: &str) -> Self {
        // The name goes last: the field is one of three fixed words, so no two pairs collide.
        SealContext(format!(
            "wharf/v2/destination/{fleet_id}/{field}/{destination}"
        ))
    }

    /// A secret header value of one delivery, filled from its destination's secret.
    pub fn delivery_header(delivery_id: uuid::Uuid, header: &str) -> Self {
        SealContext(format!("wharf/v2/delivery-header/{delivery_id}/{header}"))
    }

    /// A dashboard session cookie.
    pub fn session_cookie() -> Self {
        SealContext("wharf/v2/session-cookie".into())
    }
}

/// Creates `path` with `bytes`, readable and writable by its owner only (mode 0600 from the
/// first byte, not chmod after), synced; fails if the file exists. Here rather than in
/// `crate::util` because the signature fuzz targets compile this file on its own.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A secret in memory: `Debug` and `Display` print `[redacted]` and it has no `Serialize`, so
/// it cannot reach a log line or an API answer by accident. [`Secret::expose`] is the one way in.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that must use it (a header, an HMAC key).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook() -> SealContext {
        SealContext::webhook_secret(uuid::Uuid::from_u128(1))
    }

    #[test]
    fn seals_and_opens_and_refuses_other_keys_and_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load(None, dir.path()).unwrap();
        let sealed = a.seal(&hook(), b"whsec_abc");
        assert!(sealed.starts_with("v2:"));
        assert!(!sealed.contains("whsec_abc"));
        assert_ne!(
            a.seal(&hook(), b"whsec_abc"),
            sealed,
            "a fresh nonce each time"
        );
        assert_eq!(a.open(&hook(), &sealed).unwrap(), b"whsec_abc");
        // The same data folder gives the same key back.
        let again = SecretBox::load(None, dir.path()).unwrap();
        assert_eq!(again.open(&hook(), &sealed).unwrap(), b"whsec_abc");
        let other =
            SecretBox::from_base64(&base64::engine::general_purpose::STANDARD.encode([7u8; 32]))
                .unwrap();
        assert!(other.open(&hook(), &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(a.open(&hook(), &tampered).is_err());
        assert!(a.open(&hook(), "plain").is_err());
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_own_place() {
        let dir = tempfile::tempdir().unwrap();
        let b = SecretBox::load(None, dir.path()).unwrap();
        let (f1, f2) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        let sealed = b.seal(
            &SealContext::destination(f1, "crm", "authorization"),
            b"Bearer x",
        );
        let elsewhere = [
            SealContext::destination(f2, "crm", "authorization"),
            SealContext::destination(f1, "crm2", "authorization"),
            SealContext::destination(f1, "crm", "api_key"),
            SealContext::webhook_secret(f1),
            SealContext::delivery_header(f1, "authorization"),
            SealContext::session_cookie(),
        ];
        for place in elsewhere {
            assert!(
                b.open(&place, &sealed).is_err(),
                "{place:?} must not open it"
            );
        }
        let home = SealContext::destination(f1, "crm", "authorization");
        assert_eq!(b.open(&home, &sealed).unwrap(), b"Bearer x");
    }

    #[test]
    fn a_v1_text_opens_only_through_the_migration() {
        use chacha20poly1305::aead::Aead as _;
        let dir = tempfile::tempdir().unwrap();
        let b = SecretBox::load(None, dir.path()).unwrap();
        // What earlier versions wrote: v1: + base64(nonce ‖ ciphertext), no associated data.
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut raw = nonce.to_vec();
        raw.extend(b.cipher.encrypt(&nonce, b"old secret".as_slice()).unwrap());
        let v1 = format!(
            "v1:{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        );
        assert!(SecretBox::is_legacy(&v1));
        assert!(b.open(&hook(), &v1).is_err(), "v1 is refused in normal use");
        assert_eq!(b.open_legacy(&v1).unwrap(), b"old secret");
        let v2 = b.seal(&hook(), b"new");
        assert!(!SecretBox::is_legacy(&v2));
        assert!(b.open_legacy(&v2).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn the_generated_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        SecretBox::load(None, dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_given_key_must_be_32_bytes_of_base64() {
        let dir = tempfile::tempdir().unwrap();
        assert!(SecretBox::load(Some("short"), dir.path()).is_err());
        let key = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let given = SecretBox::load(Some(&key), dir.path()).unwrap();
        assert!(
            !dir.path().join(KEY_FILE).exists(),
            "no file when the key is given"
        );
        assert_eq!(
            given.open(&hook(), &given.seal(&hook(), b"x")).unwrap(),
            b"x"
        );
    }

    #[test]
    fn derived_keys_depend_on_the_secret_key_and_the_purpose() {
        let key = |byte: u8| {
            SecretBox::from_base64(&base64::engine::general_purpose::STANDARD.encode([byte; 32]))
                .unwrap()
        };
        let (a, b) = (key(1), key(2));
        assert_eq!(a.derive_key(b"x"), key(1).derive_key(b"x"), "stable");
        assert_ne!(a.derive_key(b"x"), a.derive_key(b"y"), "per purpose");
        assert_ne!(a.derive_key(b"x"), b.derive_key(b"x"), "per secret key");
        assert_ne!(a.derive_key(b"x"), [1u8; 32], "not the secret key itself");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }
}
