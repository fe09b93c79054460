//! Run vessel logic in-process with a fake host: `cargo test` on the host, no Wasm runtime.
//!
//! Only compiled when the target is not `wasm32`.

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::host::fake::{self, ExitSignal, FakeHost};
use crate::{Error, Request};

/// Builds one fake vessel run: body, metadata, ids and variables, then [`run`](Self::run)s a
/// handler the way [`wharf_guest::run`](crate::run) would on the real host.
///
/// ```
/// use wharf_guest::testing::Harness;
///
/// let outcome = Harness::new()
///     .json_body(&serde_json::json!({"ref": "refs/heads/main"}))
///     .var("branch", "main")
///     .run(|req| -> wharf_guest::Result<()> {
///         let push: serde_json::Value = req.json()?;
///         let branch = push["ref"].as_str().unwrap_or("").trim_start_matches("refs/heads/");
///         wharf_guest::set_var("branch", branch)?;
///         Ok(())
///     });
/// assert_eq!(outcome.exit_code, 0);
/// assert_eq!(outcome.var("branch"), Some("main"));
/// ```
#[derive(Debug, Clone)]
pub struct Harness {
    body: Vec<u8>,
    method: String,
    content_type: String,
    headers: BTreeMap<String, String>,
    query: BTreeMap<String, String>,
    variables: BTreeMap<String, String>,
    ids: BTreeMap<&'static str, String>,
    attempt: u32,
    max_variables: Option<usize>,
    max_rows: Option<usize>,
}

impl Default for Harness {
    fn default() -> Self {
        let ids = [
            ("WHARF_REQUEST_ID", "req_test"),
            ("WHARF_FLEET_RUN_ID", "run_test"),
            ("WHARF_FLEET_ID", "fleet_test"),
            ("WHARF_PROJECT_ID", "project_test"),
            ("WHARF_ORG_ID", "org_test"),
            ("WHARF_VESSEL", "vessel"),
        ];
        Harness {
            body: Vec::new(),
            method: "POST".into(),
            content_type: String::new(),
            headers: BTreeMap::new(),
            query: BTreeMap::new(),
            variables: BTreeMap::new(),
            ids: ids.into_iter().map(|(k, v)| (k, v.to_owned())).collect(),
            attempt: 1,
            max_variables: None,
            max_rows: None,
        }
    }
}

impl Harness {
    /// An empty `POST` with test ids (`req_test`, `run_test`, …), attempt 1, no limits.
    ///
    /// ```
    /// let outcome = wharf_guest::testing::Harness::new().run(|req| -> wharf_guest::Result<()> {
    ///     assert_eq!((req.method(), req.request_id(), req.attempt()), ("POST", "req_test", 1));
    ///     Ok(())
    /// });
    /// assert!(outcome.success());
    /// ```
    pub fn new() -> Self {
        Harness::default()
    }

    /// The raw body, as read from stdin.
    ///
    /// ```
    /// let harness = wharf_guest::testing::Harness::new().body("a,b\n1,2\n").content_type("text/csv");
    /// # let _ = harness;
    /// ```
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON body, with content type `application/json`.
    ///
    /// # Panics
    ///
    /// If `value` does not serialize.
    ///
    /// ```
    /// let harness = wharf_guest::testing::Harness::new().json_body(&serde_json::json!({"type": "ping"}));
    /// # let _ = harness;
    /// ```
    #[must_use]
    pub fn json_body<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        self.body = serde_json::to_vec(value).expect("the test body serializes to JSON");
        self.content_type = "application/json".into();
        self
    }

    /// The HTTP method (default `POST`).
    ///
    /// ```
    /// let harness = wharf_guest::testing::Harness::new().method("PUT");
    /// # let _ = harness;
    /// ```
    #[must_use]
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = method.into();
        self
    }

    /// The content type (default empty).
    ///
    /// ```
    /// let harness = wharf_guest::testing::Harness::new().content_type("application/x-www-form-urlencoded");
    /// # let _ = harness;
    /// ```
    #[must_use]
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }

    /// Adds a header; the name is lower-cased as the host does.
    ///
    /// ```
    /// let harness = wharf_guest::testing::Harness::new().header("X-GitHub-Event", "push");
    /// # let _ = harness;
    /// ```
    #[must_use]
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.insert(name.to_ascii_lowercase(), value.into());
        self
    }

    /// Adds a query-string parameter.
    ///
    /// ```
    /// let harness = wharf_guest::testing::Harness::new().query("dry_run", "1");
    /// # let _ = harness;
    /// ```
    #[must_use]
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.insert(name.into(), value.into());
        self
    }

    /// Sets a variable the run starts with (a fleet default, a body override or an earlier
    /// vessel's value).
    ///
    /// ```
    /// let harness = wharf_guest::testing::Harness::new().var("branch", "main");
    /// # let _ = harness;
    /// ```
    #[must_use]
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.variables.insert(name.into(), value.into());
        self
    }

    /// Sets `WHARF_REQUEST_ID`.
    ///
    /// ```
    /// let harness = wharf_guest::testing::Harness::new().request_id("req_42");
    /// # let _ = harness;
    /// ```
    #[must_use]
    pub fn request_id(self, id: impl Into<String>) -> Self {
        self.id("WHARF_REQUEST_ID", id)
    }

    /// Sets `WHARF_FLEET_RUN_ID`.
    ///
    /// ```
    /// let harness = wharf_guest::testing::Harness::new().fleet_run_id("run_42");
    /// # let _ = harness;
    /// ```
    #[must_use]
    pub fn fleet_run_id(self, id: impl Into<String>) -> Self {
        self.id("WHARF_FLEET_RUN_ID", id)
    }

    /// Sets `WHARF_FLEET_ID`.
    ///
    /// ```
    /// let harness = wharf_guest::testing::Harness::new().fleet_id("fleet_42");
    /// # let _ = harness;
    /// ```
    #[must_use]
    pub fn fleet_id(self, id: impl Into<String>) -> Self {
        self.id("WHARF_FLEET_ID", id)
    }

    /// Sets `WHARF_PROJECT_ID`.
    ///
    /// ```
    /// let harness = wharf_guest::testing::Harness::new().project_id("project_42");
    /// # let _ = harness;
    /// ```
    #[must_use]
    pub fn project_id(self, id: impl Into<String>) -> Self {
        self.id("WHARF_PROJECT_ID", id)
    }

    /// Sets `WHARF_ORG_ID`.
    ///
    /// ```
    /// let harness = wharf_guest::testing::Harness::new().org_id("org_42");
    /// # let _ = harness;
    /// ```
    #[must_use]
    pub fn org_id(self, id: impl Into<String>) -> Self {
        self.id("WHARF_ORG_ID", id)
    }

    /// Sets `WHARF_VESSEL`, this vessel's name.
    ///
    /// ```
    /// let harness = wharf_guest::testing::Harness::new().vessel("parse");
    /// # let _ = harness;
    /// ```
    #[must_use]
    pub fn vessel(self, name: impl Into<String>) -> Self {
        self.id("WHARF_VESSEL", name)
    }

    /// Sets `WHARF_ATTEMPT` (default 1).
    ///
    /// ```
    /// let harness = wharf_guest::testing::Harness::new().attempt(3);
    /// # let _ = harness;
    /// ```
    #[must_use]
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// After this many distinct variables, `set_var` is refused with status -2.
    ///
    /// ```
    /// let outcome = wharf_guest::testing::Harness::new().max_variables(1).run(|_req| -> wharf_guest::Result<()> {
    ///     wharf_guest::set_var("a", 1)?;
    ///     wharf_guest::set_var("b", 2)?;
    ///     Ok(())
    /// });
    /// assert_eq!(outcome.exit_code, 1);
    /// ```
    #[must_use]
    pub fn max_variables(mut self, max: usize) -> Self {
        self.max_variables = Some(max);
        self
    }

    /// After this many rows, `emit` is refused with status -2.
    ///
    /// ```
    /// let outcome = wharf_guest::testing::Harness::new().max_rows(0)
    ///     .run(|_req| wharf_guest::emit(&serde_json::json!({"a": 1})));
    /// assert_eq!(outcome.exit_code, 1);
    /// ```
    #[must_use]
    pub fn max_rows(mut self, max: usize) -> Self {
        self.max_rows = Some(max);
        self
    }

    fn id(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.ids.insert(name, value.into());
        self
    }

    /// Runs `handler` as [`wharf_guest::run`](crate::run) would and reports what it did.
    /// [`exit`](crate::exit) inside it ends the run, not the test process; any other panic
    /// propagates to the test.
    ///
    /// ```
    /// use wharf_guest::{Exit, testing::Harness};
    ///
    /// let outcome = Harness::new().var("branch", "main").run(|req| -> wharf_guest::Result<()> {
    ///     if req.var("branch").as_deref() != Some("dev") {
    ///         return Err(Exit(78).into());
    ///     }
    ///     Ok(())
    /// });
    /// assert_eq!(outcome.exit_code, 78);
    /// ```
    pub fn run<F, E>(self, handler: F) -> Outcome
    where
        F: FnOnce(Request) -> Result<(), E>,
        E: Into<Error>,
    {
        self.run_main(move || crate::run(handler))
    }

    /// Runs a whole vessel `main` (one that calls [`wharf_guest::run`](crate::run)) under the
    /// fake host, so a binary's entry point is tested as it is.
    ///
    /// ```
    /// // The vessel's `fn main`, under another name here.
    /// fn vessel_main() {
    ///     wharf_guest::run(|req: wharf_guest::Request| wharf_guest::set_var("size", req.body().len()));
    /// }
    ///
    /// let outcome = wharf_guest::testing::Harness::new().body("abc").run_main(vessel_main);
    /// assert_eq!(outcome.var("size"), Some("3"));
    /// ```
    pub fn run_main(self, main: impl FnOnce()) -> Outcome {
        fake::install(self.into_fake_host());
        let result = panic::catch_unwind(AssertUnwindSafe(main));
        let host = fake::uninstall().unwrap_or_default();
        let exit_code = match result {
            Ok(()) => 0,
            Err(payload) => match payload.downcast::<ExitSignal>() {
                Ok(signal) => signal.0,
                Err(payload) => panic::resume_unwind(payload),
            },
        };
        Outcome {
            exit_code,
            variables: host.variables,
            rows: host.rows,
            stdout: host.stdout,
            stderr: host.stderr,
        }
    }

    fn into_fake_host(self) -> FakeHost {
        let mut env = self.variables;
        env.extend(
            self.ids
                .iter()
                .map(|(name, value)| ((*name).to_owned(), value.clone())),
        );
        env.insert("WHARF_ATTEMPT".into(), self.attempt.to_string());
        env.insert("WHARF_METHOD".into(), self.method.clone());
        env.insert("WHARF_CONTENT_TYPE".into(), self.content_type.clone());
        let request = json!({
            "id": self.ids["WHARF_REQUEST_ID"],
            "method": self.method,
            "content_type": self.content_type,
            "headers": self.headers,
            "query": self.query,
        });
        FakeHost {
            body: self.body,
            env,
            request_json: request.to_string().into_bytes(),
            max_variables: self.max_variables,
            max_rows: self.max_rows,
            ..FakeHost::default()
        }
    }
}

/// What a harness run did: its exit status, the variables it set, the rows it emitted and the
/// lines it logged through [`log`](crate::log) / [`log_error`](crate::log_error) (plus the
/// `error: …` line of a failed handler).
///
/// ```
/// let outcome = wharf_guest::testing::Harness::new()
///     .run(|_req| -> wharf_guest::Result<()> { Err(wharf_guest::Error::msg("boom")) });
/// assert_eq!(outcome.exit_code, 1);
/// assert_eq!(outcome.stderr, ["error: boom"]);
/// assert!(outcome.variables.is_empty() && outcome.rows.is_empty() && outcome.stdout.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The exit status: 0 for success.
    pub exit_code: i32,
    /// Variables set with [`set_var`](crate::set_var), by name.
    pub variables: BTreeMap<String, String>,
    /// Rows emitted, in order, as the host reads them.
    pub rows: Vec<EmittedRow>,
    /// Lines written with [`log`](crate::log).
    pub stdout: Vec<String>,
    /// Lines written with [`log_error`](crate::log_error), and a failed handler's error.
    pub stderr: Vec<String>,
}

impl Outcome {
    /// True when the run exited 0.
    ///
    /// ```
    /// assert!(wharf_guest::testing::Harness::new().run(|_req| Ok::<(), wharf_guest::Error>(())).success());
    /// ```
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// A variable the run set.
    ///
    /// ```
    /// let outcome = wharf_guest::testing::Harness::new().run(|_req| wharf_guest::set_var("a", "1"));
    /// assert_eq!(outcome.var("a"), Some("1"));
    /// ```
    pub fn var(&self, name: &str) -> Option<&str> {
        self.variables.get(name).map(String::as_str)
    }
}

/// One emitted row, normalised the way the host stores it.
///
/// ```
/// let outcome = wharf_guest::testing::Harness::new()
///     .run(|_req| wharf_guest::emit(&serde_json::json!({"data": {"n": 1}, "operation": "added"})));
/// let row = &outcome.rows[0];
/// assert_eq!((row.data["n"].as_i64(), row.operation.as_deref(), row.primary_key.as_deref()), (Some(1), Some("added"), None));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EmittedRow {
    /// The row's data object.
    pub data: Map<String, Value>,
    /// The operation, when given.
    pub operation: Option<String>,
    /// The primary key, when given.
    pub primary_key: Option<String>,
}
