//! A fleet's destinations: the document form, its checks, the sealing of its secrets, and the
//! deliveries a run's end creates.
//!
//! Variables go in the URL and in header values as `{{name}}` (spaces inside the braces are
//! allowed); the name must be a declared variable of the fleet, and its value at the end of the
//! run is used. Callers can set variables (a JSON body's keys override declared defaults), so a
//! URL's scheme, host and port never come from one: such a URL is refused at save. In the path
//! and query a value is percent-encoded, so it cannot add path segments, a query or a host, and
//! a value that makes a `.` or `..` segment (which would climb the path) refuses the delivery.

use std::collections::{BTreeMap, HashSet};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::secrets::{SealContext, SecretBox};
use crate::fleet::FleetError;
use crate::records::{DeliveryRequest, NewDelivery, RunStatus};

/// What a `GET` shows instead of a stored secret; sent back, it keeps the stored value.
pub const SET: &str = "set";
/// What `signing_secret` is given to have wharf generate one.
pub const GENERATE: &str = "generate";
/// Prefix of Standard Webhooks secrets.
pub const WHSEC: &str = "whsec_";

/// Headers wharf sets itself; a destination's `headers` cannot name them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "authorization",
    "x-api-key",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "transfer-encoding",
    "connection",
];

/// HTTP method of a destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryMethod {
    /// The default.
    #[default]
    #[serde(rename = "POST")]
    Post,
    /// `PUT`.
    #[serde(rename = "PUT")]
    Put,
    /// `PATCH`.
    #[serde(rename = "PATCH")]
    Patch,
}

impl DeliveryMethod {
    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMethod::Post => "POST",
            DeliveryMethod::Put => "PUT",
            DeliveryMethod::Patch => "PATCH",
        }
    }
}

/// After which runs a destination gets rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum On {
    /// Runs that succeeded.
    #[default]
    Success,
    /// Runs that failed.
    Failure,
    /// Every run that ended (cancelled ones too).
    Always,
}

/// Backoff between attempts: the ceiling doubles from `base_ms` up to `max_ms`, and each pause
/// is drawn between 0 and the ceiling (full jitter). The shape of a vessel's `retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryBackoff {
    /// Ceiling of the pause before the second attempt.
    #[serde(default = "DeliveryBackoff::default_base")]
    pub base_ms: u64,
    /// Largest ceiling.
    #[serde(default = "DeliveryBackoff::default_max")]
    pub max_ms: u64,
}

impl DeliveryBackoff {
    fn default_base() -> u64 {
        1_000
    }
    fn default_max() -> u64 {
        300_000
    }

    /// The ceiling of the pause after attempt `attempt` (1 for the first).
    pub fn ceiling(base_ms: u64, max_ms: u64, attempt: u32) -> u64 {
        crate::rules::delivery::backoff_ceiling(base_ms, max_ms, attempt)
    }
}

impl Default for DeliveryBackoff {
    fn default() -> Self {
        DeliveryBackoff {
            base_ms: Self::default_base(),
            max_ms: Self::default_max(),
        }
    }
}

/// A validated destination, as stored. Once stored, `authorization`, `api_key` and
/// `signing_secret` hold sealed values (see [`seal_secrets`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationSpec {
    /// Unique within the fleet.
    pub name: String,
    /// Absolute `http://` or `https://` URL, possibly with `{{variables}}`.
    pub url: String,
    /// Method.
    #[serde(default)]
    pub method: DeliveryMethod,
    /// The `Authorization` header's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    /// The `X-Api-Key` header's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// The Standard Webhooks secret (`whsec_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    /// Further headers (not secret), values possibly with `{{variables}}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Sent as the body's `sync_mode`.
    pub sync_mode: String,
    /// Rows per request.
    pub batch_size: u32,
    /// Per-attempt timeout.
    pub timeout_ms: u64,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Pauses between attempts.
    pub backoff: DeliveryBackoff,
    /// After which runs.
    pub on: On,
}

/// A destination as written in a fleet document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationDoc {
    name: String,
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    authorization: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    signing_secret: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    sync_mode: Option<String>,
    #[serde(default)]
    batch_size: Option<u32>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    backoff: Option<Value>,
    #[serde(default)]
    on: Option<String>,
}

fn err<T>(msg: impl Into<String>) -> Result<T, FleetError> {
    Err(FleetError(msg.into()))
}

/// The `{{name}}` placeholders of a template, in order.
fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    out
}

/// Fills `{{name}}` placeholders from `vars`, each value passed through `encode`.
pub fn fill(template: &str, vars: &BTreeMap<String, String>, encode: fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        let value = vars
            .get(after[..end].trim())
            .map(String::as_str)
            .unwrap_or("");
        out.push_str(&encode(value));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Where a URL template's path starts: after `scheme://` and the authority (host, port and
/// any credentials); `None` when it has no `://`.
fn path_start(template: &str) -> Option<usize> {
    let after = template.find("://")? + 3;
    Some(
        template[after..]
            .find(['/', '?', '#'])
            .map_or(template.len(), |i| after + i),
    )
}

/// Refuses a URL template whose scheme, host or port would come from a variable.
fn check_url_origin(template: &str, dest: &str) -> Result<(), FleetError> {
    let end = path_start(template).unwrap_or(template.len());
    if let Some(name) = placeholders(&template[..end]).first() {
        return err(format!(
            "destination {dest}: url takes its scheme, host or port from {{{{{name}}}}}; callers can set variables, so only the path and query may use them"
        ));
    }
    Ok(())
}

/// A path segment the URL parser would resolve away (`.`, `..`, or either written with
/// `%2e`), dropping the segment or the one before it.
fn is_dot_segment(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase().replace("%2e", ".");
    lower == "." || lower == ".."
}

/// Fills a destination URL: values percent-encoded; an error (no URL) when the scheme, host or
/// port would come from a variable, or a value makes a `.` or `..` path segment.
pub fn fill_url(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let Some(origin_end) = path_start(template) else {
        return Err("url is not an absolute http:// or https:// URL".into());
    };
    if let Some(name) = placeholders(&template[..origin_end]).first() {
        return Err(format!(
            "url takes its scheme, host or port from {{{{{name}}}}}; refused"
        ));
    }
    let path_end = template[origin_end..]
        .find(['?', '#'])
        .map_or(template.len(), |i| origin_end + i);
    let mut out = template[..origin_end].to_owned();
    for (i, segment) in template[origin_end..path_end].split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let filled = fill(segment, vars, url_encode);
        if segment.contains("{{") && is_dot_segment(&filled) {
            return Err(format!(
                "a variable makes the path segment {filled:?}, which would change the path; nothing was sent"
            ));
        }
        out.push_str(&filled);
    }
    out.push_str(&fill(&template[path_end..], vars, url_encode));
    Ok(out)
}

fn url_encode(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn as_is(v: &str) -> String {
    v.to_owned()
}

/// Checks that every placeholder of `template` names a declared variable.
fn check_template(
    template: &str,
    field: &str,
    dest: &str,
    variables: &BTreeMap<String, String>,
) -> Result<(), FleetError> {
    for name in placeholders(template) {
        if !variables.contains_key(name) {
            return err(format!(
                "destination {dest}: {field} uses {{{{{name}}}}}, which is not a declared variable (declare it under \"variables\")"
            ));
        }
    }
    Ok(())
}

/// Checks a signing secret as given: `generate`, `set`, or `whsec_` + base64 of 24 to 64 bytes.
fn check_signing_secret(value: &str, dest: &str) -> Result<(), FleetError> {
    if value == GENERATE || value == SET {
        return Ok(());
    }
    let decoded = value
        .strip_prefix(WHSEC)
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
    match decoded {
        Some(key) if (24..=64).contains(&key.len()) => Ok(()),
        _ => err(format!(
            "destination {dest}: signing_secret must be \"generate\", \"set\" (keep the stored one) or whsec_ followed by base64 of 24 to 64 bytes"
        )),
    }
}

impl DestinationDoc {
    /// Checks the destination against the fleet's declared variables.
    pub fn parse(
        self,
        variables: &BTreeMap<String, String>,
    ) -> Result<DestinationSpec, FleetError> {
        let name = self.name.trim().to_owned();
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if name.is_empty() || name.len() > 64 || !name.chars().all(valid) {
            return err(format!(
                "destination name {name:?} must be 1 to 64 letters, digits, - or _"
            ));
        }
        let n = &name;
        check_template(&self.url, "url", n, variables)?;
        check_url_origin(&self.url, n)?;
        // The URL's shape is checked with every placeholder filled by a plain word.
        let probe = fill(&self.url, &BTreeMap::new(), |_| "x".to_owned());
        match url::Url::parse(&probe) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                if !u.username().is_empty() || u.password().is_some() {
                    return err(format!(
                        "destination {n}: url must not carry credentials; use authorization"
                    ));
                }
            }
            _ => {
                return err(format!(
                    "destination {n}: url must be an absolute http:// or https:// URL, not {:?}",
                    self.url
                ));
            }
        }
        let method = match self
            .method
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("POST") => DeliveryMethod::Post,
            Some("PUT") => DeliveryMethod::Put,
            Some("PATCH") => DeliveryMethod::Patch,
            Some(other) => {
                return err(format!(
                    "destination {n}: method must be POST, PUT or PATCH, not {other:?}"
                ));
            }
        };
        for (field, value) in [
            ("authorization", &self.authorization),
            ("api_key", &self.api_key),
        ] {
            if let Some(v) = value {
                if v.is_empty() || v.len() > 8192 {
                    return err(format!(
                        "destination {n}: {field} must be 1 to 8192 characters"
                    ));
                }
                if v.chars().any(char::is_control) {
                    return err(format!(
                        "destination {n}: {field} must not contain control characters"
                    ));
                }
                check_template(v, field, n, variables)?;
            }
        }
        if let Some(s) = &self.signing_secret {
            check_signing_secret(s, n)?;
        }
        for (header, value) in &self.headers {
            let lower = header.to_ascii_lowercase();
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return err(format!(
                    "destination {n}: headers: {header:?} is not a valid header name"
                ));
            }
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return err(format!(
                    "destination {n}: headers: {header} is set by wharf (use authorization or api_key for credentials)"
                ));
            }
            if value.chars().any(char::is_control) || value.len() > 8192 {
                return err(format!(
                    "destination {n}: headers.{header} must be at most 8192 characters without control characters"
                ));
            }
            check_template(value, &format!("headers.{header}"), n, variables)?;
        }
        let sync_mode = self.sync_mode.unwrap_or_else(|| "insert".to_owned());
        if sync_mode.is_empty()
            || sync_mode.len() > 32
            || !sync_mode
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
        {
            return err(format!(
                "destination {n}: sync_mode must be 1 to 32 lower-case letters or _ (e.g. \"insert\", \"upsert\", \"mirror\")"
            ));
        }
        let batch_size = self.batch_size.unwrap_or(500);
        if !(1..=10_000).contains(&batch_size) {
            return err(format!("destination {n}: batch_size must be 1 to 10000"));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(10_000);
        if !(100..=300_000).contains(&timeout_ms) {
            return err(format!("destination {n}: timeout_ms must be 100 to 300000"));
        }
        let max_attempts = self.max_attempts.unwrap_or(8);
        if !(1..=50).contains(&max_attempts) {
            return err(format!(
                "destination {n}: max_attempts must be 1 to 50 (attempts in all, the first included)"
            ));
        }
        let backoff = match self.backoff {
            None => DeliveryBackoff::default(),
            Some(v) => serde_json::from_value::<DeliveryBackoff>(v).map_err(|e| {
                FleetError(format!(
                    "destination {n}: backoff must be {{\"base_ms\", \"max_ms\"}}: {e}"
                ))
            })?,
        };
        if backoff.base_ms == 0 || backoff.base_ms > 3_600_000 {
            return err(format!(
                "destination {n}: backoff.base_ms must be 1 to 3600000"
            ));
        }
        if backoff.max_ms < backoff.base_ms || backoff.max_ms > 3_600_000 {
            return err(format!(
                "destination {n}: backoff.max_ms must be at least base_ms and at most 3600000"
            ));
        }
        let on = match self.on.as_deref() {
            None | Some("success") => On::Success,
            Some("failure") => On::Failure,
            Some("always") => On::Always,
            Some(other) => {
                return err(format!(
                    "destination {n}: on must be \"success\", \"failure\" or \"always\", not {other:?}"
                ));
            }
        };
        Ok(DestinationSpec {
            name,
            url: self.url,
            method,
            authorization: self.authorization,
            api_key: self.api_key,
            signing_secret: self.signing_secret,
            headers: self.headers,
            sync_mode,
            batch_size,
            timeout_ms,
            max_attempts,
            backoff,
            on,
        })
    }
}

/// Parses a document's destinations: each checked, names unique.
pub fn parse_destinations(
    docs: Vec<Value>,
    variables: &BTreeMap<String, String>,
) -> Result<Vec<DestinationSpec>, FleetError> {
    if docs.len() > 32 {
        return err("a fleet has at most 32 destinations");
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(docs.len());
    for (i, doc) in docs.into_iter().enumerate() {
        let doc: DestinationDoc = serde_json::from_value(doc)
            .map_err(|e| FleetError(format!("destinations[{i}]: {e}")))?;
        let spec = doc.parse(variables)?;
        if !seen.insert(spec.name.clone()) {
            return err(format!("destination name {:?} is used twice", spec.name));
        }
        out.push(spec);
    }
    Ok(out)
}

impl DestinationSpec {
    /// The document form `GET` shows: secrets as `"set"`.
    pub fn to_document(&self) -> Value {
        let mut doc = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = doc.as_object_mut() {
            for field in ["authorization", "api_key", "signing_secret"] {
                if map.contains_key(field) {
                    map.insert(field.into(), SET.into());
                }
            }
        }
        doc
    }
}

/// Seals the secrets of freshly parsed destinations, in place: a value given in clear is
/// sealed, `"set"` takes the sealed value of the destination of the same name in `previous`
/// (the stored fleet), `"generate"` (signing secrets) makes a new `whsec_` secret. Returns the
/// generated secrets by destination name: they are shown once, in the answer of this save.
pub fn seal_secrets(
    fleet_id: uuid::Uuid,
    destinations: &mut [DestinationSpec],
    previous: &[DestinationSpec],
    secrets: &SecretBox,
) -> Result<BTreeMap<String, String>, FleetError> {
    let mut generated = BTreeMap::new();
    for d in destinations.iter_mut() {
        let old = previous.iter().find(|p| p.name == d.name);
        // Each secret field: its name, its value as given, and the stored destination's value.
        type Field<'a> = (
            &'static str,
            &'a mut Option<String>,
            Option<&'a Option<String>>,
        );
        let fields: [Field; 3] = [
            (
                "authorization",
                &mut d.authorization,
                old.map(|o| &o.authorization),
            ),
            ("api_key", &mut d.api_key, old.map(|o| &o.api_key)),
            (
                "signing_secret",
                &mut d.signing_secret,
                old.map(|o| &o.signing_secret),
            ),
        ];
        for (field, value, stored) in fields {
            let Some(v) = value.as_deref() else { continue };
            let place = SealContext::destination(fleet_id, &d.name, field);
            if v == SET {
                match stored.and_then(Option::as_ref) {
                    Some(sealed) => *value = Some(sealed.clone()),
                    None => {
                        return err(format!(
                            "destination {}: {field} is \"set\" but no stored destination of that name has one; give the value",
                            d.name
                        ));
                    }
                }
            } else if field == "signing_secret" && v == GENERATE {
                let mut key = [0u8; 32];
                rand::Rng::fill(&mut rand::rng(), &mut key);
                let secret = format!(
                    "{WHSEC}{}",
                    base64::engine::general_purpose::STANDARD.encode(key)
                );
                *value = Some(secrets.seal(&place, secret.as_bytes()));
                generated.insert(d.name.clone(), secret);
            } else {
                *value = Some(secrets.seal(&place, v.as_bytes()));
            }
        }
    }
    Ok(generated)
}

/// Whether a run that ended as `status` is delivered to a destination with `on`.
pub fn wanted(on: On, status: RunStatus) -> bool {
    match on {
        On::Success => status == RunStatus::Succeeded,
        On::Failure => status == RunStatus::Failed,
        On::Always => matches!(
            status,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        ),
    }
}

/// One planned request, as a dry run shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    /// Destination name.
    pub destination: String,
    /// Method.
    pub method: &'static str,
    /// URL with variables filled in.
    pub url: String,
    /// Batch number, 1 for the first.
    pub batch: u32,
    /// Batches in all.
    pub batches: u32,
    /// The body.
    pub body: Value,
    /// Why nothing will be sent, when the URL with variables filled in is refused (see
    /// [`fill_url`]); `url` is then the destination's template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// The requests a run's end makes: for each destination whose `on` matches, its rows (the
/// vessels' rows in the fleet's order) in batches of `batch_size`. A run without rows sends
/// nothing.
pub fn plan(
    destinations: &[DestinationSpec],
    status: RunStatus,
    variables: &BTreeMap<String, String>,
    rows: &[Value],
) -> Vec<(usize, Planned)> {
    let mut out = Vec::new();
    if rows.is_empty() {
        return out;
    }
    for (i, d) in destinations.iter().enumerate() {
        if !wanted(d.on, status) {
            continue;
        }
        let chunks: Vec<&[Value]> = rows.chunks(d.batch_size as usize).collect();
        let batches = chunks.len() as u32;
        let (url, refused) = match fill_url(&d.url, variables) {
            Ok(url) => (url, None),
            Err(e) => (d.url.clone(), Some(format!("destination {}: {e}", d.name))),
        };
        for (b, chunk) in chunks.into_iter().enumerate() {
            out.push((
                i,
                Planned {
                    destination: d.name.clone(),
                    method: d.method.as_str(),
                    url: url.clone(),
                    batch: b as u32 + 1,
                    batches,
                    body: serde_json::json!({"sync_mode": d.sync_mode, "rows": chunk}),
                    refused: refused.clone(),
                },
            ));
        }
    }
    out
}

/// The deliveries a run's end creates (see [`plan`]), secret header values opened, filled and
/// sealed again. A stored secret that cannot be opened (the key changed) is left out of the
/// request and logged by name, never by value.
pub fn deliveries(
    fleet_id: uuid::Uuid,
    destinations: &[DestinationSpec],
    status: RunStatus,
    variables: &BTreeMap<String, String>,
    rows: &[Value],
    secrets: &SecretBox,
) -> Vec<NewDelivery> {
    plan(destinations, status, variables, rows)
        .into_iter()
        .map(|(i, p)| {
            let d = &destinations[i];
            let mut headers = BTreeMap::new();
            headers.insert("content-type".to_owned(), "application/json".to_owned());
            for (k, v) in &d.headers {
                headers.insert(k.to_ascii_lowercase(), fill(v, variables, as_is));
            }
            let mut sealed_headers = BTreeMap::new();
            let id = uuid::Uuid::now_v7();
            for (header, field, value) in [
                ("authorization", "authorization", &d.authorization),
                ("x-api-key", "api_key", &d.api_key),
            ] {
                let Some(sealed) = value else { continue };
                let place = SealContext::destination(fleet_id, &d.name, field);
                match secrets.open_string(&place, sealed) {
                    Ok(clear) => {
                        let filled = fill(clear.expose(), variables, as_is);
                        let place = SealContext::delivery_header(id, header);
                        sealed_headers
                            .insert(header.to_owned(), secrets.seal(&place, filled.as_bytes()));
                    }
                    Err(_) => tracing::error!(
                        destination = %d.name, header,
                        "a stored destination secret cannot be opened with this server's key; sent without it"
                    ),
                }
            }
            NewDelivery {
                id,
                fleet_id,
                destination: p.destination,
                batch: p.batch,
                batches: p.batches,
                rows: p.body["rows"].as_array().map_or(0, Vec::len) as u32,
                request: DeliveryRequest {
                    method: p.method.to_owned(),
                    url: p.url,
                    headers,
                    sealed_headers,
                    signing_secret: d.signing_secret.clone(),
                    timeout_ms: d.timeout_ms,
                    max_attempts: d.max_attempts,
                    base_ms: d.backoff.base_ms,
                    max_ms: d.backoff.max_ms,
                    refused: p.refused,
                },
                body: p.body.to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        BTreeMap::from([("branch".to_owned(), "feat/x y".to_owned())])
    }

    fn parse(doc: Value) -> Result<DestinationSpec, FleetError> {
        parse_destinations(vec![doc], &vars()).map(|mut v| v.remove(0))
    }

    #[test]
    fn templates_fill_declared_variables_and_encode_in_urls() {
        let d = parse(serde_json::json!({"name": "a", "url": "https://h.example/{{ branch }}/x"}))
            .unwrap();
        assert_eq!(
            fill(&d.url, &vars(), url_encode),
            "https://h.example/feat%2Fx%20y/x"
        );
        assert_eq!(fill("b {{branch}}", &vars(), as_is), "b feat/x y");
        let e = parse(serde_json::json!({"name": "a", "url": "https://h/{{nope}}"})).unwrap_err();
        assert!(e.0.contains("{{nope}}"), "{e}");
    }

    #[test]
    fn hosts_and_ports_never_come_from_variables() {
        for url in [
            "http://{{branch}}/x",
            "http://h.example:{{branch}}/x",
            "http://{{branch}}.example",
            "{{branch}}://h.example/x",
            "http://u{{branch}}@h.example/x",
        ] {
            let e = parse(serde_json::json!({"name": "a", "url": url})).unwrap_err();
            assert!(
                e.0.contains("destination a: url") && e.0.contains("{{branch}}"),
                "{url}: {e}"
            );
            assert!(fill_url(url, &vars()).is_err(), "{url}");
        }
        let d = parse(serde_json::json!({"name": "a", "url": "http://h.example/p?b={{branch}}"}))
            .unwrap();
        assert_eq!(
            fill_url(&d.url, &vars()).unwrap(),
            "http://h.example/p?b=feat%2Fx%20y"
        );
    }

    #[test]
    fn a_value_making_a_dot_segment_is_refused() {
        let t = "http://h.example/a/{{v}}/b?q={{v}}";
        let with = |v: &str| BTreeMap::from([("v".to_owned(), v.to_owned())]);
        for bad in ["..", "."] {
            let e = fill_url(t, &with(bad)).unwrap_err();
            assert!(e.contains("path segment"), "{e}");
        }
        assert!(fill_url("http://h/%2E{{v}}/", &with(".")).is_err());
        assert!(fill_url("http://h/.{{v}}/", &with(".")).is_err());
        assert_eq!(
            fill_url(t, &with("...")).unwrap(),
            "http://h.example/a/.../b?q=..."
        );
        assert_eq!(
            fill_url(t, &with("../x")).unwrap(),
            "http://h.example/a/..%2Fx/b?q=..%2Fx"
        );
        // A query value of .. changes nothing.
        assert!(fill_url("http://h/a?q={{v}}", &with("..")).is_ok());
    }

    #[test]
    fn refuses_bad_values_naming_the_field() {
        for (doc, field) in [
            (serde_json::json!({"name": "a", "url": "ftp://x"}), "url"),
            (serde_json::json!({"name": "a", "url": "/relative"}), "url"),
            (
                serde_json::json!({"name": "a", "url": "http://x", "method": "GET"}),
                "method",
            ),
            (
                serde_json::json!({"name": "a", "url": "http://x", "batch_size": 0}),
                "batch_size",
            ),
            (
                serde_json::json!({"name": "a", "url": "http://x", "on": "never"}),
                "on",
            ),
            (
                serde_json::json!({"name": "a", "url": "http://x", "timeout_ms": 1}),
                "timeout_ms",
            ),
            (
                serde_json::json!({"name": "a", "url": "http://x", "max_attempts": 0}),
                "max_attempts",
            ),
            (
                serde_json::json!({"name": "a", "url": "http://x", "backoff": {"base_ms": 10, "max_ms": 1}}),
                "backoff.max_ms",
            ),
            (
                serde_json::json!({"name": "a", "url": "http://x", "signing_secret": "nope"}),
                "signing_secret",
            ),
            (
                serde_json::json!({"name": "a", "url": "http://x", "headers": {"Authorization": "x"}}),
                "headers",
            ),
            (
                serde_json::json!({"name": "a", "url": "http://x", "sync_mode": "Bad Mode"}),
                "sync_mode",
            ),
            (
                serde_json::json!({"name": "a", "url": "http://x", "colour": 1}),
                "colour",
            ),
        ] {
            let e = parse(doc).unwrap_err();
            assert!(e.0.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn batches_rows_per_destination_and_status() {
        let d =
            parse(serde_json::json!({"name": "a", "url": "http://x", "batch_size": 2})).unwrap();
        let rows: Vec<Value> = (0..5).map(|i| serde_json::json!({"data": i})).collect();
        let p = plan(
            std::slice::from_ref(&d),
            RunStatus::Succeeded,
            &vars(),
            &rows,
        );
        assert_eq!(p.len(), 3);
        assert_eq!(p[2].1.body["rows"], serde_json::json!([{"data": 4}]));
        assert!(plan(&[d], RunStatus::Failed, &vars(), &rows).is_empty());
    }
}
