//! The fleet document: parsed once at the edge into a [`FleetSpec`] whose vessels are in run
//! order and whose code is referenced by sha256. Nothing downstream re-validates it.

use std::collections::{BTreeMap, HashMap, HashSet};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sandbox::{LimitsDoc, VesselKind, value_to_var};

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

/// When a vessel runs, given how the vessels before it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    /// Only if nothing before it failed.
    #[default]
    Success,
    /// Only if something before it failed.
    Failure,
    /// Whatever happened before.
    Always,
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
    #[serde(default)]
    needs: Vec<String>,
    #[serde(default)]
    when: When,
}

/// A validated fleet, as stored. Vessels are in run order (dependencies first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        if !self.destinations.is_empty() {
            return err("destinations are not supported by this version of wharf");
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
            let vessel = parse_vessel(v, &mut code)?;
            if !seen.insert(vessel.name.clone()) {
                return err(format!("vessel name {:?} is used twice", vessel.name));
            }
            vessels.push(vessel);
        }
        let vessels = run_order(vessels)?;
        self.concurrency.check(&variables)?;
        let spec = FleetSpec {
            name,
            variables,
            concurrency: self.concurrency,
            limits: self.limits,
            vessels,
        };
        Ok(ParsedFleet { spec, code })
    }
}

fn parse_vessel(v: VesselDoc, code: &mut Vec<NewCode>) -> Result<VesselSpec, FleetError> {
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
    Ok(VesselSpec {
        name,
        kind,
        sha256,
        size,
        limits: v.limits,
        needs: v.needs,
        when: v.when,
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
