//! Small shared helpers, from the crates that own them: time stamps, hashes and tokens from the
//! core, owner-only files from the store.

pub use wharf_core::util::*;
pub use wharf_store::files::{private_dir, restrict_file};
