//! The part of `wharf::auth` the signature targets need, mounted as `auth` so that
//! `src/auth/hmac.rs` compiles from its source file unchanged: its `super::secrets::Secret` is
//! the real `src/auth/secrets.rs`, its `super::AuthFailure` the copy below (`src/auth/mod.rs`
//! also declares modules the targets do not build).

#[path = "../../src/auth/hmac.rs"]
#[allow(dead_code)]
pub mod hmac;

#[path = "../../src/auth/secrets.rs"]
#[allow(dead_code)]
pub mod secrets;

/// `wharf::auth::AuthFailure`, variant for variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials in the form the webhook expects.
    Missing,
    /// Credentials were given and do not pass.
    Wrong,
}

/// HMAC-SHA256 of `parts` under `key`, computed here independently of `hmac.rs`.
pub fn sign(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use ::hmac::Mac as _;
    let mut mac = ::hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A header map of `pairs`; `None` when a value cannot be a header value.
pub fn headers(pairs: &[(&'static str, &[u8])]) -> Option<::http::HeaderMap> {
    let mut map = ::http::HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, ::http::HeaderValue::from_bytes(value).ok()?);
    }
    Some(map)
}

/// Keeps the printable ASCII of `text` (what a sender can put in a header as it is).
#[allow(dead_code)]
pub fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect()
}
