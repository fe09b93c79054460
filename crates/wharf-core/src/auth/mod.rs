//! Secrets and signatures, as pure functions the server, the store and the fuzz targets share.
//!
//! - [`secrets`]: secrets that must stay usable (HMAC secrets, destination credentials) are
//!   sealed at rest with an AEAD key that never enters the database; [`secrets::Secret`] keeps
//!   a secret out of `Debug`, logs and API answers.
//! - [`hmac`]: the providers' HMAC signature schemes.

pub mod hmac;
pub mod secrets;

/// The answer to a call whose credentials do not pass, in the two messages webhook senders
/// know (the Zoovu model): nothing more specific, so a caller learns nothing about which part
/// was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials in the form the webhook expects.
    Missing,
    /// Credentials were given and do not pass: an unknown, revoked or other org's key, a wrong
    /// signature, a timestamp outside the tolerance.
    Wrong,
}

impl AuthFailure {
    /// The `error` of the `401` answer, byte for byte.
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => "Missing authorization header",
            AuthFailure::Wrong => "Wrong authentication credentials",
        }
    }
}
