//! The `wharf` host imports behind one safe, slice-based interface.
//!
//! On `wasm32` they are the real imports (`wasm.rs`); everywhere else a thread-local fake
//! (`fake.rs`) stands in, so the same SDK code runs under `cargo test` on the host.

/// The longest variable name the host accepts, in bytes.
pub(crate) const MAX_VAR_NAME_LEN: usize = 128;

/// `[A-Za-z_][A-Za-z0-9_]*`, at most [`MAX_VAR_NAME_LEN`] bytes: the host's rule for names.
pub(crate) fn is_valid_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    first_ok
        && name.len() <= MAX_VAR_NAME_LEN
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Where a log line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

#[cfg(target_arch = "wasm32")]
mod wasm;
#[cfg(target_arch = "wasm32")]
pub(crate) use wasm::{emit, environment, exit, read_body, request, set_var, write_line};

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod fake;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use fake::{emit, environment, exit, read_body, request, set_var, write_line};

#[cfg(test)]
mod tests {
    use super::is_valid_var_name;

    #[test]
    fn variable_names() {
        for ok in [
            "a",
            "_",
            "branch",
            "commit_count",
            "A1_b2",
            &"x".repeat(128),
        ] {
            assert!(is_valid_var_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a b", "é", "a.b", &"x".repeat(129)] {
            assert!(!is_valid_var_name(bad), "{bad}");
        }
    }
}
