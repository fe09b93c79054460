//! Write wharf Wasm vessels in Rust without touching pointers.
//!
//! A vessel is a WASI preview-1 command: the host runs `_start` with the webhook body on stdin,
//! the run's variables and `WHARF_*` ids in the environment, and three host functions in the
//! import module `wharf` (`set_var`, `emit`, `request`). This crate wraps all of that:
//!
//! ```no_run
//! use wharf_guest::{Request, Row};
//!
//! fn handle(req: Request) -> wharf_guest::Result<()> {
//!     let payload: serde_json::Value = req.json()?;
//!     wharf_guest::set_var("repository", payload["repository"]["full_name"].as_str().unwrap_or(""))?;
//!     wharf_guest::emit_row(Row::new().field("event", "push").primary_key(req.request_id()))?;
//!     Ok(())
//! }
//!
//! fn main() {
//!     wharf_guest::run(handle);
//! }
//! ```
//!
//! Build with `cargo build --target wasm32-wasip1 --release`.
//!
//! When compiled for anything but `wasm32`, the `wharf` imports are replaced by an in-process
//! fake, so vessel logic is tested with plain `cargo test` through [`testing::Harness`].
//!
//! # Layout
//!
//! - `request.rs` — [`Request`]: body, metadata, ids and variables of the run.
//! - `row.rs` — [`Row`], the builder for emitted rows.
//! - `error.rs` — [`Error`], [`Exit`] and how a handler's result becomes an exit code.
//! - `form.rs` — `application/x-www-form-urlencoded` decoding.
//! - `host/` — the `wharf` imports: `wasm.rs` (the only `unsafe` code, wasm32 only) and
//!   `fake.rs` (thread-local stand-in on every other target).
//! - `testing.rs` — [`testing::Harness`], host-side only.

mod error;
mod form;
mod host;
mod request;
mod row;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

use std::fmt::Display;
use std::io::Write;

use serde::Serialize;

pub use error::{Error, Exit, HostError, Result};
pub use request::Request;
pub use row::Row;
/// Re-exported so guests can use `serde_json::json!` and `Value` without naming the version.
///
/// ```
/// let value = wharf_guest::serde_json::json!({"ok": true});
/// assert_eq!(value["ok"], true);
/// ```
pub use serde_json;

/// Runs a vessel: reads the request, calls `handler`, and turns its result into the exit status.
///
/// `Ok(())` exits 0. `Err(e)` where `e` came from [`Exit`] exits with that code quietly; any other
/// error is printed to stderr as `error: …` and exits with [`Error::exit_code`] (1 unless set).
/// A handler's return type has to be nameable, so annotate closures or use a named function.
///
/// ```no_run
/// use wharf_guest::{Exit, Request};
///
/// fn main() {
///     wharf_guest::run(|req: Request| -> wharf_guest::Result<()> {
///         if req.body().is_empty() {
///             return Err(Exit(64).into());
///         }
///         wharf_guest::set_var("size", req.body().len())?;
///         Ok(())
///     });
/// }
/// ```
pub fn run<F, E>(handler: F)
where
    F: FnOnce(Request) -> std::result::Result<(), E>,
    E: Into<Error>,
{
    let code = match Request::from_host() {
        Ok(request) => match handler(request) {
            Ok(()) => 0,
            Err(error) => report(error.into()),
        },
        Err(error) => report(error),
    };
    if code != 0 {
        exit(code);
    }
    flush();
}

/// Prints a handler's error (unless it is a plain [`Exit`]) and returns the exit code to use.
fn report(error: Error) -> i32 {
    if !error.is_quiet() {
        log_error(format_args!("error: {error}"));
    }
    error.exit_code()
}

/// Ends the vessel now with `code` as its exit status (0 is success).
///
/// Inside [`testing::Harness::run`] this unwinds back to the harness instead of ending the test
/// process, and the outcome carries the code.
///
/// ```
/// let outcome = wharf_guest::testing::Harness::new().run(|_req| -> wharf_guest::Result<()> {
///     wharf_guest::exit(3);
/// });
/// assert_eq!(outcome.exit_code, 3);
/// ```
pub fn exit(code: i32) -> ! {
    flush();
    host::exit(code)
}

/// Sets a variable for this run; vessels that run later see it (Wasm: in their environment).
///
/// `name` must match `[A-Za-z_][A-Za-z0-9_]*` and be at most 128 bytes; `value` is anything
/// that displays, stored as its string form.
///
/// # Errors
///
/// An invalid name, or the host refusing the call ([`HostError`], e.g. a limit was reached).
///
/// ```
/// let outcome = wharf_guest::testing::Harness::new().run(|_req| -> wharf_guest::Result<()> {
///     wharf_guest::set_var("commit_count", 3)?;
///     assert!(wharf_guest::set_var("not a name", "x").is_err());
///     Ok(())
/// });
/// assert_eq!(outcome.var("commit_count"), Some("3"));
/// ```
pub fn set_var(name: &str, value: impl Display) -> Result<()> {
    if !host::is_valid_var_name(name) {
        return Err(Error::msg(format!(
            "invalid variable name {name:?}: use [A-Za-z_][A-Za-z0-9_]*, at most {} bytes",
            host::MAX_VAR_NAME_LEN
        )));
    }
    let value = value.to_string();
    HostError::check("set_var", host::set_var(name.as_bytes(), value.as_bytes()))
}

/// Emits one row. Use [`emit_row`] for the usual shape; `emit` sends any serializable value,
/// which must be a JSON object: either `{"data": {…}, "operation": …, "primary_key": …}` or a bare
/// object taken as the data.
///
/// # Errors
///
/// The value does not serialize, or the host refuses it (not an object, or a limit reached).
///
/// ```
/// use wharf_guest::serde_json::json;
///
/// let outcome = wharf_guest::testing::Harness::new().run(|_req| -> wharf_guest::Result<()> {
///     wharf_guest::emit(&json!({"name": "alice", "age": 31}))?;
///     Ok(())
/// });
/// assert_eq!(outcome.rows[0].data["name"], "alice");
/// ```
pub fn emit<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let json = serde_json::to_vec(value)?;
    HostError::check("emit", host::emit(&json))
}

/// Emits a [`Row`] built with its builder.
///
/// # Errors
///
/// The host refuses the row (a limit reached).
///
/// ```
/// use wharf_guest::Row;
///
/// let outcome = wharf_guest::testing::Harness::new().run(|_req| -> wharf_guest::Result<()> {
///     wharf_guest::emit_row(Row::new().field("sha", "abc123").operation("added").primary_key("abc123"))?;
///     Ok(())
/// });
/// assert_eq!(outcome.rows[0].primary_key.as_deref(), Some("abc123"));
/// ```
pub fn emit_row(row: Row) -> Result<()> {
    emit(&row)
}

/// Writes one line to stdout, which the host captures as the vessel's log.
///
/// In a [`testing::Harness`] the line lands in [`testing::Outcome::stdout`].
///
/// ```
/// let outcome = wharf_guest::testing::Harness::new().run(|_req| -> wharf_guest::Result<()> {
///     wharf_guest::log("hello");
///     Ok(())
/// });
/// assert_eq!(outcome.stdout, ["hello"]);
/// ```
pub fn log(message: impl Display) {
    host::write_line(host::Stream::Stdout, &message.to_string());
}

/// Writes one line to stderr (captured by the host as the vessel's error log).
///
/// In a [`testing::Harness`] the line lands in [`testing::Outcome::stderr`].
///
/// ```
/// let outcome = wharf_guest::testing::Harness::new().run(|_req| -> wharf_guest::Result<()> {
///     wharf_guest::log_error("careful");
///     Ok(())
/// });
/// assert_eq!(outcome.stderr, ["careful"]);
/// ```
pub fn log_error(message: impl Display) {
    host::write_line(host::Stream::Stderr, &message.to_string());
}

/// Flushes stdout and stderr; an exiting vessel must not lose its last lines.
fn flush() {
    // Nothing useful can be done if the host's pipe is gone.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}
