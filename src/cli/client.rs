//! The admin API as the CLI speaks it: one HTTP client, errors that say what to fix, and the
//! resolution of names given on the command line to ids.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// Where the server is and how to prove we may ask it things.
#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// Base URL of the wharf server.
    #[arg(
        long,
        env = "WHARF_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// The admin token.
    #[arg(long, env = "WHARF_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON (for scripts) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// An answer read into its wire type (`crate::api::types`), so that a field the CLI relies on
/// and the server stopped sending is an error naming it rather than a silent `-`.
pub fn typed<T: serde::de::DeserializeOwned>(answer: &Value) -> CliResult<T> {
    T::deserialize(answer).map_err(|e| {
        CliError::Api(format!(
            "the server's answer is not what this client expects ({e}); are both the same version?"
        ))
    })
}

/// Why a client command failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or local files (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached, refused the call or named something unknown (exit 3).
    #[error("{0}")]
    Api(String),
    /// The server answered `404` (exit 3, like any refusal); kept apart so that callers can name
    /// what was not found.
    #[error("{0}")]
    NotFound(String),
}

impl CliError {
    /// The process exit code (see `wharf --help` and the README).
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => super::EXIT_USAGE,
            CliError::Api(_) | CliError::NotFound(_) => super::EXIT_API,
        }
    }
}

/// Result of client commands.
pub type CliResult<T> = Result<T, CliError>;

/// A connection to one server's admin API.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for `conn`; nothing is sent yet.
    pub fn new(conn: &Conn) -> CliResult<Self> {
        let base = conn.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "--url {base:?} must start with http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot set up HTTP: {e}")))?;
        Ok(Client {
            http,
            base,
            token: conn.token.clone().filter(|t| !t.is_empty()),
        })
    }

    /// An admin call under `/api/v1`; the answer's JSON (Null when empty) on 2xx.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> CliResult<Value> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = res.status();
        let text = res.text().await.map_err(|e| self.unreachable(e))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| text.chars().take(200).collect());
        if status == StatusCode::NOT_FOUND {
            return Err(CliError::NotFound(format!(
                "{method} {path}: 404 {message}"
            )));
        }
        Err(CliError::Api(match status {
            StatusCode::UNAUTHORIZED if self.token.is_none() => format!(
                "the server wants the admin token: set --token or WHARF_ADMIN_TOKEN ({message})"
            ),
            StatusCode::UNAUTHORIZED => format!(
                "the server refused the admin token (401: {message}); check --token or WHARF_ADMIN_TOKEN"
            ),
            _ => format!("{method} {path}: {} {message}", status.as_u16()),
        }))
    }

    /// Follows a Server-Sent Events stream under `/api/v1`, calling `each` with every event's
    /// name and data, until an `end` event (whose data it returns) or the stream's close.
    pub async fn follow(
        &self,
        path: &str,
        mut each: impl FnMut(&str, &Value),
    ) -> CliResult<Option<Value>> {
        let url = format!("{}/api/v1{path}", self.base);
        // No overall timeout: a run may take as long as its vessels do.
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot set up HTTP: {e}")))?;
        let mut req = http.get(&url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let mut res = req.send().await.map_err(|e| self.unreachable(e))?;
        if !res.status().is_success() {
            // The same messages as any other call.
            return self.call(Method::GET, path, None).await.map(|_| None);
        }
        let mut buf = String::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| self.unreachable(e))? {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(at) = buf.find("\n\n") {
                let block: String = buf.drain(..at + 2).collect();
                let (mut kind, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(k) = line.strip_prefix("event:") {
                        kind = k.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if kind.is_empty() {
                    continue;
                }
                let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                each(&kind, &data);
                if kind == "end" {
                    return Ok(Some(data));
                }
            }
        }
        Ok(None)
    }

    /// `GET` under `/api/v1`.
    pub async fn get(&self, path: &str) -> CliResult<Value> {
        self.call(Method::GET, path, None).await
    }

    /// A POST of raw bytes to a full URL (a webhook); status and JSON answer, whatever the status.
    pub async fn post_raw(
        &self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> CliResult<(StatusCode, Value)> {
        let res = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = res.status();
        let text = res.text().await.map_err(|e| self.unreachable(e))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    fn unreachable(&self, e: reqwest::Error) -> CliError {
        // reqwest's own message names only the URL; the innermost cause says why (connection
        // refused, DNS, TLS, timeout).
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        CliError::Api(format!(
            "cannot reach the wharf server at {} ({cause}); is it running? set --url or WHARF_URL",
            self.base
        ))
    }

    /// Every item of a paged list (`key` holds the items), following `next_before`.
    pub async fn all_pages(&self, path: &str, key: &str) -> CliResult<Vec<Value>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let page_path = match &before {
                None => format!("{path}{sep}limit=500"),
                Some(b) => format!("{path}{sep}limit=500&before={b}"),
            };
            let page = self.get(&page_path).await?;
            items.extend(page[key].as_array().cloned().unwrap_or_default());
            match page["next_before"].as_str() {
                Some(next) => before = Some(next.to_owned()),
                None => return Ok(items),
            }
        }
    }

    /// The fleet a command-line argument names: an id, or a name that must be unique (within
    /// `project` when given).
    pub async fn resolve_fleet(&self, given: &str, project: Option<Uuid>) -> CliResult<Value> {
        if let Ok(id) = Uuid::parse_str(given) {
            return self
                .get(&format!("/fleets/{id}"))
                .await
                .map_err(|e| match e {
                    CliError::NotFound(_) => CliError::NotFound(format!("no fleet has id {id}")),
                    other => other,
                });
        }
        let name = encode(given);
        let path = match project {
            Some(p) => format!("/projects/{p}/fleets?name={name}"),
            None => format!("/fleets?name={name}"),
        };
        let found = self.all_pages(&path, "fleets").await?;
        match found.as_slice() {
            [] => Err(CliError::Api(format!("no fleet is named {given:?}"))),
            [one] => {
                let id = one["id"].as_str().unwrap_or_default();
                self.get(&format!("/fleets/{id}")).await
            }
            many => Err(CliError::Api(format!(
                "fleet name {given:?} is ambiguous: {}; pass an id (or --project)",
                many.iter()
                    .map(|f| format!(
                        "{} (project {})",
                        f["id"].as_str().unwrap_or("?"),
                        f["project_id"].as_str().unwrap_or("?")
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The one item of `list_path?name=…` (orgs, projects), created with `create` if there is
    /// none and `create` is given; `Ok((item, created))`.
    pub async fn find_or_create(
        &self,
        what: &str,
        list_path: &str,
        key: &str,
        name: &str,
        create: Option<&str>,
    ) -> CliResult<(Value, bool)> {
        let found = self
            .all_pages(&format!("{list_path}?name={}", encode(name)), key)
            .await?;
        match (found.as_slice(), create) {
            ([one], _) => Ok((one.clone(), false)),
            ([], Some(create_path)) => {
                let made = self
                    .call(Method::POST, create_path, Some(&json!({"name": name})))
                    .await?;
                Ok((made, true))
            }
            ([], None) => Err(CliError::Api(format!("no {what} is named {name:?}"))),
            (many, _) => Err(CliError::Api(format!(
                "{what} name {name:?} is ambiguous: ids {}; pass an id",
                many.iter()
                    .map(|v| v["id"].as_str().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
