//! Secrets and the ways callers prove who they are.
//!
//! - [`secrets`]: secrets that must stay usable (HMAC secrets, destination credentials) are
//!   sealed at rest with an AEAD key that never enters the database; [`secrets::Secret`] keeps
//!   a secret out of `Debug`, logs and API answers.

pub mod secrets;
