//! Secrets and the ways callers prove who they are.
//!
//! - [`secrets`]: secrets that must stay usable (HMAC secrets, destination credentials) are
//!   sealed at rest with an AEAD key that never enters the database; [`secrets::Secret`] keeps
//!   a secret out of `Debug`, logs and API answers.
//! - [`keys`]: org API keys presented as `Authorization: Bearer <key>`, stored as hashes.
//! - [`hmac`]: the providers' HMAC signature schemes.
//! - [`redact`]: what of a call is stored and shown with its secrets replaced.

pub mod keys;
pub mod redact;

/// Sealing and signatures are the core's (the store and the fuzz targets use them too).
pub use wharf_core::auth::{AuthFailure, hmac, secrets};
