//! The fleet document: parsed once at the edge into a [`FleetSpec`] whose vessels are in run
//! order and whose code is referenced by sha256. Nothing downstream re-validates it.

use std::collections::{BTreeMap, HashMap, HashSet};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::vessel::{LimitsDoc, VesselKind, value_to_var};

/// Largest Wasm module a fleet may carry, decoded.
pub const MAX_WASM_BYTES: usize = 16 << 20;
/// Largest Rhai script a fleet may carry.
pub const MAX_SCRIPT_BYTES: usize = 1 << 20;

/// What happens to a webhook call while the fleet already has a run queued or running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Runs overlap.
    #[default]
    Parallel,
    /// One run at a time, in order.
    Queue,
    /// Refuse with 429.
    Reject,
}

/// A fleet's concurrency: a [`Policy`], applied to the whole fleet or, with a `key`, separately
/// to each value of that variable (one deploy per branch at a time). Written as the policy's
/// name, or as `{"policy": …, "key": "<variable>"}`; shown the way it was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Concurrency {
    /// The policy.
    pub policy: Policy,
    /// A declared variable whose initial value partitions the policy; `None`: the whole fleet.
    pub key: Option<String>,
}

impl Concurrency {
    /// A policy for the whole fleet.
    pub fn of(policy: Policy) -> Self {
        Concurrency { policy, key: None }
    }

    /// Reads the document form; the message says what is accepted.
    fn from_value(v: &Value) -> Result<Self, String> {
        const SHAPES: &str = "\"parallel\", \"queue\", \"reject\" or \
            {\"policy\": \"queue\"|\"reject\"|\"parallel\", \"key\": \"<variable>\"}";
        let policy = |v: &Value| serde_json::from_value::<Policy>(v.clone()).ok();
        match v {
            Value::String(_) => policy(v)
                .map(Concurrency::of)
                .ok_or_else(|| format!("concurrency must be {SHAPES}, not {v}")),
            Value::Object(map) => {
                if let Some(other) = map.keys().find(|k| !matches!(k.as_str(), "policy" | "key")) {
                    return Err(format!(
                        "concurrency: unknown field {other:?} (use {SHAPES})"
                    ));
                }
                let p = map.get("policy").and_then(policy).ok_or_else(|| {
                    "concurrency.policy must be \"parallel\", \"queue\" or \"reject\"".to_string()
                })?;
                let key = map
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| "concurrency.key must name a declared variable".to_string())?;
                Ok(Concurrency {
                    policy: p,
                    key: Some(key.to_owned()),
                })
            }
            other => Err(format!("concurrency must be {SHAPES}, not {other}")),
        }
    }

    /// A key must be one of the fleet's declared variables: only those have an initial value.
    fn check(&self, variables: &BTreeMap<String, String>) -> Result<(), FleetError> {
        match &self.key {
            Some(key) if !variables.contains_key(key) => err(format!(
                "concurrency.key {key:?} is not a declared variable (declare it under \"variables\")"
            )),
            _ => Ok(()),
        }
    }
}

impl Serialize for Concurrency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.key {
            None => self.policy.serialize(s),
            Some(key) => serde_json::json!({"policy": self.policy, "key": key}).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Concurrency::from_value(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// When a vessel runs, given how the vessels it needs ended (see [`crate::planner`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    /// Only if every vessel it needs is on a success path.
    #[default]
    Success,
    /// Only if a vessel it needs is on a failure path.
    Failure,
    /// Whatever happened upstream.
    Always,
}

/// How a failed vessel is attempted again, as written in a fleet document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all, the first included (2 to 20).
    pub max_attempts: u32,
    /// How the pause grows between attempts.
    #[serde(default)]
    pub backoff: Backoff,
    /// Pause before the second attempt, in milliseconds.
    #[serde(default = "Retry::default_base_ms")]
    pub base_ms: u64,
    /// Longest pause, in milliseconds.
    #[serde(default = "Retry::default_max_ms")]
    pub max_ms: u64,
    /// Only failures with one of these exit codes are retried (all non-zero codes when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exit_codes: Option<Vec<i32>>,
    /// Whether limits (fuel, memory, time, output) and traps or script errors are retried.
    #[serde(default = "Retry::yes")]
    pub on_limits: bool,
}

/// Growth of the pause between retries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// `base_ms`, then twice that, four times… up to `max_ms`.
    #[default]
    Exponential,
    /// `base_ms` every time.
    Fixed,
}

impl Retry {
    fn default_base_ms() -> u64 {
        500
    }
    fn default_max_ms() -> u64 {
        60_000
    }
    fn yes() -> bool {
        true
    }

    fn check(&self, vessel: &str) -> Result<(), FleetError> {
        if !(2..=20).contains(&self.max_attempts) {
            return err(format!(
                "vessel {vessel}: retry.max_attempts must be 2 to 20 (attempts in all, the first included)"
            ));
        }
        if self.base_ms == 0 || self.base_ms > 3_600_000 {
            return err(format!(
                "vessel {vessel}: retry.base_ms must be 1 to 3600000"
            ));
        }
        if self.max_ms < self.base_ms || self.max_ms > 3_600_000 {
            return err(format!(
                "vessel {vessel}: retry.max_ms must be at least base_ms and at most 3600000"
            ));
        }
        if self
            .on_exit_codes
            .as_ref()
            .is_some_and(|c| c.is_empty() || c.contains(&0))
        {
            return err(format!(
                "vessel {vessel}: retry.on_exit_codes must list non-zero exit codes"
            ));
        }
        Ok(())
    }

    /// The pause before attempt `next` (2 for the first retry).
    pub fn pause(&self, next: u32) -> std::time::Duration {
        let ms = match self.backoff {
            Backoff::Fixed => self.base_ms,
            Backoff::Exponential => self
                .base_ms
                .saturating_mul(1u64 << (next.saturating_sub(2)).min(32)),
        };
        std::time::Duration::from_millis(ms.min(self.max_ms))
    }
}

/// A fleet document as clients send it (API body or fleet file).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetDoc {
    name: String,
    #[serde(default)]
    variables: serde_json::Map<String, Value>,
    #[serde(default)]
    concurrency: Concurrency,
    #[serde(default)]
    limits: LimitsDoc,
    vessels: Vec<VesselDoc>,
    #[serde(default)]
    destinations: Vec<Value>,
    // Read-only fields of a fleet as `GET` returns it, accepted so a read document can be PUT back.
    #[serde(default, rename = "id")]
    _id: Option<Value>,
    #[serde(default, rename = "project_id")]
    _project_id: Option<Value>,
    #[serde(default, rename = "org_id")]
    _org_id: Option<Value>,
    #[serde(default, rename = "webhook")]
    _webhook: Option<Value>,
    #[serde(default, rename = "created_at")]
    _created_at: Option<Value>,
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<Value>,
}

/// One vessel as written in a fleet document. Code comes inline (`source`, `wasm_base64`) or as
/// the `sha256` of code the store already holds (as `GET` returns it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VesselDoc {
    name: String,
    kind: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    wasm_base64: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    size: Option<Value>,
    #[serde(default)]
    limits: LimitsDoc,
    /// Absent: the vessel written before (none for the first); `[]`: a root.
    #[serde(default)]
    needs: Option<Vec<String>>,
    #[serde(default)]
    when: When,
    #[serde(default)]
    retry: Option<Retry>,
}

/// A validated fleet, as stored. Vessels are in a topological order (what a vessel needs comes
/// before it), the written order where `needs` leave a choice; every vessel's `needs` is
/// explicit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredSpec")]
pub struct FleetSpec {
    /// Display name.
    pub name: String,
    /// Declared variables and their defaults.
    pub variables: BTreeMap<String, String>,
    /// Concurrency policy.
    pub concurrency: Concurrency,
    /// Fleet-wide limit defaults.
    #[serde(default)]
    pub limits: LimitsDoc,
    /// Vessels in run order.
    pub vessels: Vec<VesselSpec>,
    /// Version of the `needs` rule; always [`GRAPH_EXPLICIT`] once loaded.
    #[serde(default)]
    pub graph: u32,
    /// Where the run's rows are sent after it (DESIGN §4b); secrets sealed once stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<crate::destination::DestinationSpec>,
}

/// Specs stored with this `graph` have explicit `needs`. Specs stored before it (graph 0) meant
/// "runs after the vessel before it" by an empty `needs`; loading rewrites them so.
pub const GRAPH_EXPLICIT: u32 = 1;

/// A spec as stored, possibly by an older version; see [`GRAPH_EXPLICIT`].
#[derive(Deserialize)]
struct StoredSpec {
    name: String,
    variables: BTreeMap<String, String>,
    concurrency: Concurrency,
    #[serde(default)]
    limits: LimitsDoc,
    vessels: Vec<VesselSpec>,
    #[serde(default)]
    graph: u32,
    #[serde(default)]
    destinations: Vec<crate::destination::DestinationSpec>,
}

impl From<StoredSpec> for FleetSpec {
    fn from(s: StoredSpec) -> Self {
        let mut vessels = s.vessels;
        if s.graph < GRAPH_EXPLICIT {
            for i in 1..vessels.len() {
                if vessels[i].needs.is_empty() {
                    vessels[i].needs = vec![vessels[i - 1].name.clone()];
                }
            }
        }
        FleetSpec {
            name: s.name,
            variables: s.variables,
            concurrency: s.concurrency,
            limits: s.limits,
            vessels,
            graph: GRAPH_EXPLICIT,
            destinations: s.destinations,
        }
    }
}

/// A validated vessel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VesselSpec {
    /// Unique within the fleet.
    pub name: String,
    /// Wasm or Rhai.
    pub kind: VesselKind,
    /// Content address of the code.
    pub sha256: String,
    /// Size of the code in bytes.
    pub size: u64,
    /// Limits given for this vessel (over the fleet's).
    #[serde(default)]
    pub limits: LimitsDoc,
    /// Vessels this one runs after.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Condition on what happened before.
    #[serde(default)]
    pub when: When,
    /// How a failure is attempted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// Code carried inline by a document, to be checked and stored under its hash.
#[derive(Debug, Clone)]
pub struct NewCode {
    /// Kind of the vessel that carries it.
    pub kind: VesselKind,
    /// Content address.
    pub sha256: String,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The vessel that carries it, for error messages.
    pub vessel: String,
}

/// A parsed document: the spec plus the inline code it carried.
#[derive(Debug)]
pub struct ParsedFleet {
    /// The validated fleet.
    pub spec: FleetSpec,
    /// Inline code to check and store.
    pub code: Vec<NewCode>,
}

/// A document that is not a valid fleet; the message names what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FleetError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, FleetError> {
    Err(FleetError(msg.into()))
}

/// Variable names double as environment variable names of Wasm vessels, so they are kept to
/// identifiers; `WHARF_` is reserved for the ids wharf sets itself.
pub fn check_variable_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_start || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || name.len() > 128 {
        return Err(format!(
            "invalid variable name {name:?}: use letters, digits and _ (not first), at most 128"
        ));
    }
    if name.starts_with("WHARF_") {
        return Err(format!(
            "invalid variable name {name:?}: the WHARF_ prefix is reserved"
        ));
    }
    Ok(())
}

impl FleetDoc {
    /// Checks the document and puts the vessels in run order.
    pub fn parse(self) -> Result<ParsedFleet, FleetError> {
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.len() > 128 {
            return err("name must be 1 to 128 characters");
        }
        self.limits.check("fleet").map_err(FleetError)?;
        let mut variables = BTreeMap::new();
        for (k, v) in &self.variables {
            check_variable_name(k).map_err(|e| FleetError(format!("variables: {e}")))?;
            variables.insert(k.clone(), value_to_var(v));
        }
        if self.vessels.is_empty() {
            return err("a fleet needs at least one vessel");
        }
        if self.vessels.len() > 64 {
            return err("a fleet has at most 64 vessels");
        }
        let mut code = Vec::new();
        let mut vessels = Vec::new();
        let mut seen = HashSet::new();
        for v in self.vessels {
            let previous = vessels.last().map(|p: &VesselSpec| p.name.clone());
            let mut vessel = parse_vessel(v, &mut code)?;
            if !seen.insert(vessel.name.clone()) {
                return err(format!("vessel name {:?} is used twice", vessel.name));
            }
            // `needs` absent: after the vessel written before it, as fleets always ran.
            if vessel.needs.is_empty() && !vessel.explicit_root {
                vessel.spec.needs = previous.into_iter().collect();
            }
            vessels.push(vessel.spec);
        }
        let vessels = run_order(vessels)?;
        self.concurrency.check(&variables)?;
        let destinations = crate::destination::parse_destinations(self.destinations, &variables)?;
        let spec = FleetSpec {
            name,
            variables,
            concurrency: self.concurrency,
            limits: self.limits,
            vessels,
            graph: GRAPH_EXPLICIT,
            destinations,
        };
        Ok(ParsedFleet { spec, code })
    }
}

/// A parsed vessel, and whether its document said `"needs": []` (a root) rather than nothing.
struct ParsedVessel {
    spec: VesselSpec,
    explicit_root: bool,
}

impl std::ops::Deref for ParsedVessel {
    type Target = VesselSpec;
    fn deref(&self) -> &VesselSpec {
        &self.spec
    }
}

fn parse_vessel(v: VesselDoc, code: &mut Vec<NewCode>) -> Result<ParsedVessel, FleetError> {
    let name = v.name;
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.is_empty() || name.len() > 64 || !name.chars().all(valid) {
        return err(format!(
            "vessel name {name:?} must be 1 to 64 letters, digits, - or _"
        ));
    }
    let kind = match v.kind.as_str() {
        "rhai" => VesselKind::Rhai,
        "wasm" => VesselKind::Wasm,
        other => {
            return err(format!(
                "vessel {name}: unknown kind {other:?} (use \"wasm\" or \"rhai\")"
            ));
        }
    };
    v.limits
        .check(&format!("vessel {name}"))
        .map_err(FleetError)?;
    let _ = v.size;
    let inline = match (kind, v.source, v.wasm_base64) {
        (VesselKind::Rhai, Some(src), None) => {
            if src.len() > MAX_SCRIPT_BYTES {
                return err(format!(
                    "vessel {name}: script of {} bytes is over the {MAX_SCRIPT_BYTES} byte limit",
                    src.len()
                ));
            }
            Some(src.into_bytes())
        }
        (VesselKind::Wasm, None, Some(b64)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| {
                    FleetError(format!(
                        "vessel {name}: wasm_base64 is not valid base64: {e}"
                    ))
                })?;
            if bytes.len() > MAX_WASM_BYTES {
                return err(format!(
                    "vessel {name}: module of {} bytes is over the {MAX_WASM_BYTES} byte limit",
                    bytes.len()
                ));
            }
            Some(bytes)
        }
        (_, None, None) => None,
        (VesselKind::Rhai, _, Some(_)) => {
            return err(format!(
                "vessel {name}: a rhai vessel takes \"source\", not \"wasm_base64\""
            ));
        }
        (VesselKind::Wasm, Some(_), _) => {
            return err(format!(
                "vessel {name}: a wasm vessel takes \"wasm_base64\", not \"source\""
            ));
        }
    };
    let (sha256, size) = match (inline, v.sha256) {
        (Some(bytes), _) => {
            let sha = crate::util::sha256_hex(&bytes);
            let size = bytes.len() as u64;
            code.push(NewCode {
                kind,
                sha256: sha.clone(),
                bytes,
                vessel: name.clone(),
            });
            (sha, size)
        }
        (None, Some(sha)) if sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (sha.to_ascii_lowercase(), 0)
        }
        (None, Some(sha)) => {
            return err(format!(
                "vessel {name}: sha256 {sha:?} is not 64 hex digits"
            ));
        }
        (None, None) => {
            let field = if kind == VesselKind::Rhai {
                "source"
            } else {
                "wasm_base64"
            };
            return err(format!("vessel {name}: missing \"{field}\""));
        }
    };
    if let Some(retry) = &v.retry {
        retry.check(&name)?;
    }
    let explicit_root = v.needs.as_ref().is_some_and(Vec::is_empty);
    let mut needs = v.needs.unwrap_or_default();
    let mut unique = HashSet::new();
    needs.retain(|n| unique.insert(n.clone()));
    Ok(ParsedVessel {
        spec: VesselSpec {
            name,
            kind,
            sha256,
            size,
            limits: v.limits,
            needs,
            when: v.when,
            retry: v.retry,
        },
        explicit_root,
    })
}

/// Orders vessels so that each comes after what it needs, keeping the given order where the
/// `needs` leave a choice (so a fleet without `needs` runs in the order written).
fn run_order(vessels: Vec<VesselSpec>) -> Result<Vec<VesselSpec>, FleetError> {
    let names: HashMap<&str, usize> = vessels
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.as_str(), i))
        .collect();
    for v in &vessels {
        for need in &v.needs {
            if !names.contains_key(need.as_str()) {
                return err(format!("vessel {}: needs unknown vessel {need:?}", v.name));
            }
            if need == &v.name {
                return err(format!("vessel {} needs itself", v.name));
            }
        }
    }
    let mut placed = vec![false; vessels.len()];
    let mut order = Vec::with_capacity(vessels.len());
    while order.len() < vessels.len() {
        let next = (0..vessels.len())
            .find(|&i| !placed[i] && vessels[i].needs.iter().all(|n| placed[names[n.as_str()]]));
        match next {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => {
                let stuck: Vec<&str> = (0..vessels.len())
                    .filter(|&i| !placed[i])
                    .map(|i| vessels[i].name.as_str())
                    .collect();
                return err(format!(
                    "the needs of vessels {} form a cycle",
                    stuck.join(", ")
                ));
            }
        }
    }
    let mut slots: Vec<Option<VesselSpec>> = vessels.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

impl FleetSpec {
    /// The document form of this spec, as `GET` returns it: code by sha256, Rhai source inline.
    pub fn to_document(&self, sources: &HashMap<String, String>) -> Value {
        let vessels: Vec<Value> = self
            .vessels
            .iter()
            .map(|v| {
                let mut doc = serde_json::to_value(v).unwrap_or_default();
                if let (Some(src), Some(map)) = (sources.get(&v.sha256), doc.as_object_mut()) {
                    map.insert("source".into(), src.clone().into());
                }
                doc
            })
            .collect();
        serde_json::json!({
            "name": self.name,
            "variables": self.variables,
            "concurrency": self.concurrency,
            "limits": self.limits,
            "vessels": vessels,
            "destinations": self
                .destinations
                .iter()
                .map(crate::destination::DestinationSpec::to_document)
                .collect::<Vec<_>>(),
        })
    }
}

/// Reads a fleet file: a fleet document whose vessels may name their code by `source_file`
/// (Rhai) or `wasm_file` (Wasm), paths relative to the file's folder. Those are read and put
/// inline as `source` / `wasm_base64`, so the result is a document the API accepts as it is.
pub fn read_fleet_file(path: &std::path::Path) -> Result<Value, FleetError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| FleetError(format!("cannot read {}: {e}", path.display())))?;
    let mut doc: Value = serde_json::from_str(&text)
        .map_err(|e| FleetError(format!("{} is not valid JSON: {e}", path.display())))?;
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    let vessels = doc.get_mut("vessels").and_then(Value::as_array_mut);
    for vessel in vessels.into_iter().flatten() {
        let Some(map) = vessel.as_object_mut() else {
            continue;
        };
        for (file_key, inline_key) in [("source_file", "source"), ("wasm_file", "wasm_base64")] {
            let Some(file) = map.remove(file_key) else {
                continue;
            };
            let Some(file) = file.as_str() else {
                return err(format!("{file_key} must be a path"));
            };
            let full = base.join(file);
            let bytes = std::fs::read(&full)
                .map_err(|e| FleetError(format!("cannot read {}: {e}", full.display())))?;
            let inline = if inline_key == "source" {
                String::from_utf8(bytes)
                    .map_err(|_| FleetError(format!("{} is not UTF-8 text", full.display())))?
            } else {
                base64::engine::general_purpose::STANDARD.encode(bytes)
            };
            map.insert(inline_key.into(), Value::String(inline));
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(doc: Value) -> Result<ParsedFleet, FleetError> {
        serde_json::from_value::<FleetDoc>(doc)
            .map_err(|e| FleetError(e.to_string()))?
            .parse()
    }

    fn rhai(name: &str, needs: &[&str]) -> Value {
        serde_json::json!({"name": name, "kind": "rhai", "source": "1", "needs": needs})
    }

    #[test]
    fn orders_by_needs_keeping_written_order() {
        let p = parse(serde_json::json!({"name": "f", "vessels": [rhai("c", &["b"]), rhai("a", &[]), rhai("b", &["a"])]})).unwrap();
        let names: Vec<_> = p.spec.vessels.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(p.code.len(), 3);
    }

    #[test]
    fn refuses_cycles_unknown_needs_and_duplicates() {
        let cycle = parse(
            serde_json::json!({"name": "f", "vessels": [rhai("a", &["b"]), rhai("b", &["a"])]}),
        );
        assert!(cycle.unwrap_err().0.contains("cycle"));
        let unknown = parse(serde_json::json!({"name": "f", "vessels": [rhai("a", &["zz"])]}));
        assert!(unknown.unwrap_err().0.contains("zz"));
        let dup =
            parse(serde_json::json!({"name": "f", "vessels": [rhai("a", &[]), rhai("a", &[])]}));
        assert!(dup.unwrap_err().0.contains("twice"));
        let kind = parse(
            serde_json::json!({"name": "f", "vessels": [{"name": "a", "kind": "lua", "source": ""}]}),
        );
        assert!(kind.unwrap_err().0.contains("lua"));
    }

    #[test]
    fn absent_needs_mean_the_vessel_before_and_empty_needs_a_root() {
        let p = parse(serde_json::json!({"name": "f", "vessels": [
            {"name": "a", "kind": "rhai", "source": "1"},
            {"name": "b", "kind": "rhai", "source": "1"},
            {"name": "c", "kind": "rhai", "source": "1", "needs": []}
        ]}))
        .unwrap();
        let needs: Vec<_> = p.spec.vessels.iter().map(|v| v.needs.clone()).collect();
        assert_eq!(needs, [vec![], vec!["a".to_string()], vec![]]);
    }

    #[test]
    fn specs_stored_before_explicit_needs_keep_their_order() {
        // As an earlier version stored it: empty `needs` meant "after the vessel before".
        let old = serde_json::json!({"name": "f", "variables": {}, "concurrency": "parallel",
        "vessels": [
            {"name": "a", "kind": "rhai", "sha256": "00", "size": 1, "needs": [], "when": "success"},
            {"name": "b", "kind": "rhai", "sha256": "00", "size": 1, "needs": [], "when": "failure"}
        ]});
        let spec: FleetSpec = serde_json::from_value(old).unwrap();
        assert_eq!(spec.vessels[1].needs, ["a"]);
        assert_eq!(spec.graph, GRAPH_EXPLICIT);
        // A spec stored now loads as it was.
        let again: FleetSpec =
            serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);
        let root = FleetSpec {
            vessels: vec![VesselSpec {
                needs: vec![],
                ..spec.vessels[1].clone()
            }],
            ..spec.clone()
        };
        let again: FleetSpec =
            serde_json::from_value(serde_json::to_value(&root).unwrap()).unwrap();
        assert!(again.vessels[0].needs.is_empty());
    }

    #[test]
    fn retry_pauses_grow_to_the_cap() {
        let r: Retry = serde_json::from_value(
            serde_json::json!({"max_attempts": 5, "base_ms": 100, "max_ms": 300}),
        )
        .unwrap();
        let ms: Vec<u128> = (2..=5).map(|n| r.pause(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 300, 300]);
        let fixed: Retry = serde_json::from_value(
            serde_json::json!({"max_attempts": 3, "backoff": "fixed", "base_ms": 50}),
        )
        .unwrap();
        assert_eq!(fixed.pause(3).as_millis(), 50);
    }

    #[test]
    fn variables_become_strings() {
        let p = parse(serde_json::json!({"name": "f", "variables": {"a": 1, "b": "x"}, "vessels": [rhai("v", &[])]})).unwrap();
        assert_eq!(p.spec.variables["a"], "1");
        assert!(parse(serde_json::json!({"name": "f", "variables": {"WHARF_X": 1}, "vessels": [rhai("v", &[])]})).is_err());
    }

    #[test]
    fn keyed_concurrency_names_a_declared_variable_and_reads_back_as_written() {
        let keyed = serde_json::json!({"policy": "queue", "key": "branch"});
        let p = parse(
            serde_json::json!({"name": "f", "variables": {"branch": "main"},
            "concurrency": keyed, "vessels": [rhai("v", &[])]}),
        )
        .unwrap();
        assert_eq!(p.spec.concurrency.policy, Policy::Queue);
        assert_eq!(serde_json::to_value(&p.spec.concurrency).unwrap(), keyed);
        let plain = parse(
            serde_json::json!({"name": "f", "concurrency": "reject", "vessels": [rhai("v", &[])]}),
        )
        .unwrap();
        assert_eq!(plain.spec.concurrency, Concurrency::of(Policy::Reject));
        assert_eq!(
            serde_json::to_value(&plain.spec.concurrency).unwrap(),
            "reject"
        );
        let undeclared = parse(
            serde_json::json!({"name": "f", "concurrency": keyed, "vessels": [rhai("v", &[])]}),
        );
        assert!(
            undeclared
                .unwrap_err()
                .0
                .contains("\"branch\" is not a declared variable")
        );
        let bad = parse(
            serde_json::json!({"name": "f", "concurrency": "serial", "vessels": [rhai("v", &[])]}),
        );
        assert!(bad.unwrap_err().0.contains("concurrency must be"));
    }
}
