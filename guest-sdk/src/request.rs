//! [`Request`]: what a vessel knows about the webhook call and the run it belongs to.

use std::cell::OnceCell;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{Error, HostError, Result, form, host};

/// The environment variables the host sets besides the run's variables.
const RESERVED_ENV: [&str; 9] = [
    "WHARF_REQUEST_ID",
    "WHARF_FLEET_RUN_ID",
    "WHARF_FLEET_ID",
    "WHARF_PROJECT_ID",
    "WHARF_ORG_ID",
    "WHARF_VESSEL",
    "WHARF_ATTEMPT",
    "WHARF_METHOD",
    "WHARF_CONTENT_TYPE",
];

/// The webhook request and the run it started, handed to the [`run`](crate::run) handler.
///
/// The body comes from stdin, ids and variables from the environment, and headers and query
/// from the host's `request` call (made the first time either is asked for).
///
/// ```
/// use wharf_guest::testing::Harness;
///
/// let outcome = Harness::new()
///     .body("hello")
///     .header("X-GitHub-Event", "push")
///     .var("branch", "main")
///     .run(|req| -> wharf_guest::Result<()> {
///         assert_eq!(req.text()?, "hello");
///         assert_eq!(req.header("x-github-event"), Some("push"));
///         assert_eq!(req.var("branch").as_deref(), Some("main"));
///         Ok(())
///     });
/// assert!(outcome.success());
/// ```
#[derive(Debug)]
pub struct Request {
    body: Vec<u8>,
    env: BTreeMap<String, String>,
    metadata: OnceCell<Metadata>,
}

/// The part of the host's `request` JSON that the environment does not already carry.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Metadata {
    headers: BTreeMap<String, String>,
    query: BTreeMap<String, String>,
}

impl Request {
    /// Reads stdin and the environment of this vessel run.
    pub(crate) fn from_host() -> Result<Self> {
        let body = host::read_body()
            .map_err(|e| Error::msg(format!("reading the request body from stdin: {e}")))?;
        Ok(Request {
            body,
            env: host::environment(),
            metadata: OnceCell::new(),
        })
    }

    /// The raw request body.
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().body(vec![0xff, 0x00]).run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.body(), [0xff, 0x00]);
    /// # Ok(()) });
    /// ```
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8 text.
    ///
    /// # Errors
    ///
    /// The body is not valid UTF-8.
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().body("a,b\n1,2\n").run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.text()?.lines().count(), 2);
    /// # Ok(()) });
    /// ```
    pub fn text(&self) -> Result<&str> {
        std::str::from_utf8(&self.body)
            .map_err(|e| Error::msg(format!("request body is not UTF-8: {e}")))
    }

    /// The body parsed as JSON into any deserializable type.
    ///
    /// # Errors
    ///
    /// The body is not JSON of that shape.
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// struct Push { r#ref: String }
    ///
    /// # wharf_guest::testing::Harness::new().body(r#"{"ref":"refs/heads/main"}"#).run(|req| -> wharf_guest::Result<()> {
    /// let push: Push = req.json()?;
    /// assert_eq!(push.r#ref, "refs/heads/main");
    /// # Ok(()) });
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::msg(format!("request body is not the expected JSON: {e}")))
    }

    /// The body decoded as `application/x-www-form-urlencoded`; a repeated name keeps its last
    /// value (see [`form_pairs`](Self::form_pairs) for all of them).
    ///
    /// # Errors
    ///
    /// A decoded name or value is not UTF-8.
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().body("command=%2Fdeploy&text=prod+eu").run(|req| -> wharf_guest::Result<()> {
    /// let form = req.form()?;
    /// assert_eq!(form["command"], "/deploy");
    /// assert_eq!(form["text"], "prod eu");
    /// # Ok(()) });
    /// ```
    pub fn form(&self) -> Result<BTreeMap<String, String>> {
        Ok(self.form_pairs()?.into_iter().collect())
    }

    /// The body decoded as `application/x-www-form-urlencoded`, every pair in order.
    ///
    /// # Errors
    ///
    /// A decoded name or value is not UTF-8.
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().body("tag=a&tag=b").run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.form_pairs()?.len(), 2);
    /// # Ok(()) });
    /// ```
    pub fn form_pairs(&self) -> Result<Vec<(String, String)>> {
        form::parse(&self.body).map_err(|e| Error::msg(format!("form body is not UTF-8: {e}")))
    }

    /// One request header by name, case-insensitively.
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().header("Stripe-Signature", "t=1,v1=ab").run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.header("Stripe-Signature"), Some("t=1,v1=ab"));
    /// assert_eq!(req.header("missing"), None);
    /// # Ok(()) });
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.metadata()
            .headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// All request headers, names lower-cased.
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().header("X-A", "1").run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.headers().get("x-a").map(String::as_str), Some("1"));
    /// # Ok(()) });
    /// ```
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.metadata().headers
    }

    /// One query-string parameter of the webhook URL.
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().query("dry_run", "1").run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.query("dry_run"), Some("1"));
    /// # Ok(()) });
    /// ```
    pub fn query(&self, name: &str) -> Option<&str> {
        self.metadata().query.get(name).map(String::as_str)
    }

    /// All query-string parameters.
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().run(|req| -> wharf_guest::Result<()> {
    /// assert!(req.queries().is_empty());
    /// # Ok(()) });
    /// ```
    pub fn queries(&self) -> &BTreeMap<String, String> {
        &self.metadata().query
    }

    /// The HTTP method, e.g. `POST`.
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().method("PUT").run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.method(), "PUT");
    /// # Ok(()) });
    /// ```
    pub fn method(&self) -> &str {
        self.env_str("WHARF_METHOD")
    }

    /// The request's `Content-Type` (empty when it had none).
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().content_type("text/csv").run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.content_type(), "text/csv");
    /// # Ok(()) });
    /// ```
    pub fn content_type(&self) -> &str {
        self.env_str("WHARF_CONTENT_TYPE")
    }

    /// The id of the webhook request (`WHARF_REQUEST_ID`).
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().request_id("req_1").run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.request_id(), "req_1");
    /// # Ok(()) });
    /// ```
    pub fn request_id(&self) -> &str {
        self.env_str("WHARF_REQUEST_ID")
    }

    /// The id of the fleet run (`WHARF_FLEET_RUN_ID`).
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().fleet_run_id("run_1").run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.fleet_run_id(), "run_1");
    /// # Ok(()) });
    /// ```
    pub fn fleet_run_id(&self) -> &str {
        self.env_str("WHARF_FLEET_RUN_ID")
    }

    /// The id of the fleet (`WHARF_FLEET_ID`).
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().fleet_id("fleet_1").run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.fleet_id(), "fleet_1");
    /// # Ok(()) });
    /// ```
    pub fn fleet_id(&self) -> &str {
        self.env_str("WHARF_FLEET_ID")
    }

    /// The id of the project (`WHARF_PROJECT_ID`).
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().project_id("p_1").run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.project_id(), "p_1");
    /// # Ok(()) });
    /// ```
    pub fn project_id(&self) -> &str {
        self.env_str("WHARF_PROJECT_ID")
    }

    /// The id of the organisation (`WHARF_ORG_ID`).
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().org_id("o_1").run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.org_id(), "o_1");
    /// # Ok(()) });
    /// ```
    pub fn org_id(&self) -> &str {
        self.env_str("WHARF_ORG_ID")
    }

    /// This vessel's name in the fleet (`WHARF_VESSEL`).
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().vessel("parse").run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.vessel(), "parse");
    /// # Ok(()) });
    /// ```
    pub fn vessel(&self) -> &str {
        self.env_str("WHARF_VESSEL")
    }

    /// Which attempt of the run this is, from 1 (`WHARF_ATTEMPT`).
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().attempt(2).run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.attempt(), 2);
    /// # Ok(()) });
    /// ```
    pub fn attempt(&self) -> u32 {
        self.env
            .get("WHARF_ATTEMPT")
            .and_then(|a| a.parse().ok())
            .unwrap_or(1)
    }

    /// A variable of the run as it was when this vessel started: the fleet's declared value,
    /// overridden by the body or by earlier vessels.
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().var("branch", "main").run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.var("branch").as_deref(), Some("main"));
    /// assert_eq!(req.var("nope"), None);
    /// # Ok(()) });
    /// ```
    pub fn var(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }

    /// Every variable of the run (the environment without the `WHARF_*` ids).
    ///
    /// ```
    /// # wharf_guest::testing::Harness::new().var("a", "1").run(|req| -> wharf_guest::Result<()> {
    /// assert_eq!(req.vars().collect::<Vec<_>>(), [("a", "1")]);
    /// # Ok(()) });
    /// ```
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.env
            .iter()
            .filter(|(name, _)| !RESERVED_ENV.contains(&name.as_str()))
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    fn env_str(&self, name: &str) -> &str {
        self.env.get(name).map_or("", String::as_str)
    }

    /// Asks the host for headers and query once. A failure is logged and leaves them empty:
    /// a vessel that only needs the body should not fail because of them.
    fn metadata(&self) -> &Metadata {
        self.metadata.get_or_init(|| match fetch_metadata() {
            Ok(metadata) => metadata,
            Err(error) => {
                crate::log_error(format_args!(
                    "wharf-guest: request metadata unavailable: {error}"
                ));
                Metadata::default()
            }
        })
    }
}

/// Calls `request` with a buffer, growing it to the length the host says it needs.
fn fetch_metadata() -> Result<Metadata> {
    let mut buf = vec![0u8; 1024];
    // The needed length cannot change between calls; two tries suffice, a third is slack.
    for _ in 0..3 {
        let status = host::request(&mut buf);
        HostError::check("request", status)?;
        let needed = usize::try_from(status).unwrap_or(0);
        if needed <= buf.len() {
            buf.truncate(needed);
            return Ok(serde_json::from_slice(&buf)?);
        }
        buf.resize(needed, 0);
    }
    Err(Error::msg("wharf.request kept asking for a bigger buffer"))
}
