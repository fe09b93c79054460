//! The guest's error type and how it maps onto an exit status.

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;

/// `Result` with [`Error`] as the default error type.
///
/// ```
/// fn parse(text: &str) -> wharf_guest::Result<u32> {
///     Ok(text.parse()?)
/// }
/// assert!(parse("x").is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any failure of a vessel, carrying the exit code the vessel ends with.
///
/// Every `std::error::Error` converts into it with `?` (exit code 1). [`Exit`] converts into a
/// quiet error with its own code. Like `anyhow::Error`, this type does not itself implement
/// `std::error::Error`, which is what makes the blanket conversion possible.
///
/// ```
/// use wharf_guest::{Error, Exit};
///
/// let parse: Error = "x".parse::<u8>().unwrap_err().into();
/// assert_eq!(parse.exit_code(), 1);
/// assert_eq!(Error::from(Exit(78)).exit_code(), 78);
/// assert_eq!(Error::msg("bad input").with_exit_code(65).to_string(), "bad input");
/// ```
pub struct Error {
    code: i32,
    kind: Kind,
}

enum Kind {
    /// A deliberate exit: no message is printed.
    Exit,
    Message(String),
    Source(Box<dyn StdError + Send + Sync>),
}

impl Error {
    /// An error with a message, exiting with code 1.
    ///
    /// ```
    /// let err = wharf_guest::Error::msg(format!("unknown event {}", "ping"));
    /// assert_eq!(err.to_string(), "unknown event ping");
    /// ```
    pub fn msg(message: impl fmt::Display) -> Self {
        Error {
            code: 1,
            kind: Kind::Message(message.to_string()),
        }
    }

    /// A quiet exit with `code`, the same as `Error::from(Exit(code))`.
    ///
    /// ```
    /// let outcome = wharf_guest::testing::Harness::new()
    ///     .run(|_req| -> wharf_guest::Result<()> { Err(wharf_guest::Error::exit(78)) });
    /// assert_eq!(outcome.exit_code, 78);
    /// assert!(outcome.stderr.is_empty());
    /// ```
    pub fn exit(code: i32) -> Self {
        Error {
            code,
            kind: Kind::Exit,
        }
    }

    /// Keeps the error but exits with `code` instead.
    ///
    /// ```
    /// let err = wharf_guest::Error::msg("bad signature").with_exit_code(77);
    /// assert_eq!(err.exit_code(), 77);
    /// ```
    #[must_use]
    pub fn with_exit_code(mut self, code: i32) -> Self {
        self.code = code;
        self
    }

    /// The exit status the vessel ends with for this error.
    ///
    /// ```
    /// assert_eq!(wharf_guest::Error::msg("x").exit_code(), 1);
    /// ```
    pub fn exit_code(&self) -> i32 {
        self.code
    }

    /// The underlying error if it is a `T` (e.g. a [`HostError`] or `serde_json::Error`).
    ///
    /// ```
    /// let err: wharf_guest::Error = serde_json::from_str::<u8>("[").unwrap_err().into();
    /// assert!(err.downcast_ref::<serde_json::Error>().is_some());
    /// ```
    pub fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        match &self.kind {
            Kind::Source(source) => source.downcast_ref(),
            _ => None,
        }
    }

    /// A plain exit prints nothing when the vessel ends.
    pub(crate) fn is_quiet(&self) -> bool {
        matches!(self.kind, Kind::Exit)
    }
}

impl<E> From<E> for Error
where
    E: StdError + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        if let Some(Exit(code)) = (&error as &dyn Any).downcast_ref::<Exit>() {
            return Error::exit(*code);
        }
        Error {
            code: 1,
            kind: Kind::Source(Box::new(error)),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Exit => write!(f, "exit with code {}", self.code),
            Kind::Message(message) => f.write_str(message),
            Kind::Source(source) => {
                write!(f, "{source}")?;
                let mut cause = source.source();
                while let Some(inner) = cause {
                    write!(f, ": {inner}")?;
                    cause = inner.source();
                }
                Ok(())
            }
        }
    }
}

/// Shows the message, so `fn main() -> Result<(), Error>` prints something readable.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Ends the vessel with this exit code, without printing anything: `Err(Exit(78))?`.
///
/// ```
/// use wharf_guest::{testing::Harness, Exit};
///
/// let outcome = Harness::new().run(|_req| Err(Exit(78)));
/// assert_eq!(outcome.exit_code, 78);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub i32);

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit with code {}", self.0)
    }
}

impl StdError for Exit {}

/// The host refused a `wharf` call; `status` is what it returned (-1 invalid, -2 limit reached).
///
/// ```
/// let outcome = wharf_guest::testing::Harness::new()
///     .max_variables(0)
///     .run(|_req| -> wharf_guest::Result<()> {
///         let err = wharf_guest::set_var("x", 1).unwrap_err();
///         assert!(err.downcast_ref::<wharf_guest::HostError>().unwrap().is_limit());
///         Ok(())
///     });
/// assert!(outcome.success());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError {
    call: &'static str,
    status: i32,
}

impl HostError {
    /// Maps a host function's status (0 ok, negative refused) onto a `Result`.
    pub(crate) fn check(call: &'static str, status: i32) -> Result<()> {
        if status >= 0 {
            Ok(())
        } else {
            Err(HostError { call, status }.into())
        }
    }

    /// The name of the refused call: `set_var`, `emit` or `request`.
    ///
    /// ```
    /// # let outcome = wharf_guest::testing::Harness::new().max_rows(0).run(|_req| -> wharf_guest::Result<()> {
    /// let err = wharf_guest::emit(&serde_json::json!({})).unwrap_err();
    /// assert_eq!(err.downcast_ref::<wharf_guest::HostError>().unwrap().call(), "emit");
    /// # Ok(()) });
    /// # assert!(outcome.success());
    /// ```
    pub fn call(&self) -> &'static str {
        self.call
    }

    /// The negative status the host returned.
    ///
    /// ```
    /// # let outcome = wharf_guest::testing::Harness::new().run(|_req| -> wharf_guest::Result<()> {
    /// let err = wharf_guest::emit(&[1, 2]).unwrap_err();
    /// assert_eq!(err.downcast_ref::<wharf_guest::HostError>().unwrap().status(), -1);
    /// # Ok(()) });
    /// # assert!(outcome.success());
    /// ```
    pub fn status(&self) -> i32 {
        self.status
    }

    /// True when the host refused because a per-run limit (variables, rows, sizes) was reached.
    ///
    /// ```
    /// # let outcome = wharf_guest::testing::Harness::new().max_rows(0).run(|_req| -> wharf_guest::Result<()> {
    /// let err = wharf_guest::emit(&serde_json::json!({"a": 1})).unwrap_err();
    /// assert!(err.downcast_ref::<wharf_guest::HostError>().unwrap().is_limit());
    /// # Ok(()) });
    /// # assert!(outcome.success());
    /// ```
    pub fn is_limit(&self) -> bool {
        self.status == -2
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.status {
            -1 => "invalid argument",
            -2 => "limit reached",
            _ => "error",
        };
        write!(
            f,
            "wharf.{} refused: {why} (status {})",
            self.call, self.status
        )
    }
}

impl StdError for HostError {}
