//! `wharf run` and `wharf bundle`: the guest author's loop, without a server.
//!
//! `wharf run` turns its target into a fleet (a single vessel becomes a one-vessel fleet) and
//! hands it to [`Scheduler::dry_run`] over a throwaway SQLite store — the very path the server's
//! dry-run endpoint and its workers take, so what passes here passes there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::fleet::{FleetDoc, read_fleet_file};
use crate::sandbox::{RequestMeta, Sandbox, SandboxConfig, VesselStatus};
use crate::scheduler::{FleetIds, FleetOutcome, PrepareError, Scheduler, SchedulerConfig};
use crate::store::{RunStatus, Store, sqlite::SqliteStore};

/// Arguments of `wharf run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A vessel (`.wasm` or `.rhai`) or a fleet file (`.json`, whose vessels may name their code
    /// by `source_file` / `wasm_file`, relative to it).
    pub target: PathBuf,
    /// The request body; `-` reads standard input; without it the body is empty.
    #[arg(long)]
    pub payload: Option<PathBuf>,
    /// Content type of the body; guessed from the payload's extension when not given
    /// (.json → application/json, .csv → text/csv, .txt → text/plain).
    #[arg(long)]
    pub content_type: Option<String>,
    /// A request header `name:value` (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// A query parameter `name=value` (repeatable).
    #[arg(long = "query", value_name = "NAME=VALUE", value_parser = parse_pair)]
    pub query: Vec<(String, String)>,
    /// A variable `name=value` (repeatable): declares it or replaces the fleet's default. As on
    /// the server, a JSON-object body's same-named top-level key still overrides it.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_pair)]
    pub vars: Vec<(String, String)>,
    /// Fuel for every vessel (instructions for Wasm, operations for Rhai).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Memory limit for every vessel, in bytes.
    #[arg(long)]
    pub memory: Option<u64>,
    /// Wall-clock timeout for every vessel, in milliseconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Print the result as JSON (the shape of the server's dry-run answer).
    #[arg(long)]
    pub json: bool,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once(':')
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not NAME:VALUE"))
}

/// What `wharf run` found: the dry-run answer and the process exit code it implies.
#[derive(Debug)]
pub struct LocalRun {
    /// The result in the shape of the server's dry-run answer.
    pub report: Value,
    /// Exit code for the `wharf` process.
    pub exit_code: i32,
    /// The outcome, for printing.
    pub outcome: FleetOutcome,
}

/// Exit code of `wharf run` when a vessel failed without an exit status of its own
/// (fuel, memory, timeout, trap, script error, output limit).
pub const EXIT_VESSEL_FAILED: i32 = 1;

/// Runs a vessel or fleet file on a payload. Errors are problems with the inputs (unreadable
/// files, invalid fleet, code that does not compile), not vessel failures.
pub async fn run(args: &RunArgs) -> anyhow::Result<LocalRun> {
    let mut doc = target_document(&args.target)?;
    apply_overrides(&mut doc, args);
    let doc: FleetDoc =
        serde_json::from_value(doc).map_err(|e| anyhow::anyhow!("invalid fleet document: {e}"))?;

    let scratch = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&scratch.path().join("run.db")).await?);
    let config = SchedulerConfig {
        workers: 1,
        max_slow: 1,
        node_id: "local".into(),
        ..SchedulerConfig::default()
    };
    let sandbox = Arc::new(Sandbox::new(&SandboxConfig {
        cache_dir: None,
        cache_key: None,
        max_concurrent: Scheduler::max_vessels(&config) as u32,
    })?);
    let scheduler = Scheduler::new(store, sandbox, config)?;
    let spec = scheduler.prepare_fleet(doc).await.map_err(|e| match e {
        PrepareError::Invalid(e) => anyhow::anyhow!("{e}"),
        PrepareError::Store(e) => anyhow::anyhow!("scratch store: {e}"),
    })?;

    let body = read_payload(args.payload.as_deref())?;
    let content_type = args
        .content_type
        .clone()
        .unwrap_or_else(|| guess_content_type(args.payload.as_deref()).to_owned());
    let mut headers: BTreeMap<String, String> = args.headers.iter().cloned().collect();
    if !content_type.is_empty() {
        headers.insert("content-type".into(), content_type.clone());
    }
    let request = RequestMeta {
        id: uuid::Uuid::now_v7().to_string(),
        method: "POST".into(),
        content_type,
        headers,
        query: args.query.iter().cloned().collect(),
    };
    let ids = FleetIds::local();
    let dry = scheduler.dry_run(&spec, ids, request, body.into()).await;
    Ok(LocalRun {
        exit_code: exit_code(&dry.outcome),
        report: dry.report,
        outcome: dry.outcome,
    })
}

/// 0 when the fleet succeeded; else the exit status of the first failed vessel, or
/// [`EXIT_VESSEL_FAILED`] when it failed without one.
fn exit_code(outcome: &FleetOutcome) -> i32 {
    if outcome.status == RunStatus::Succeeded {
        return 0;
    }
    outcome
        .vessels
        .iter()
        .find(|v| v.outcome.status == VesselStatus::Failed)
        .and_then(|v| v.outcome.exit_code)
        .filter(|c| *c != 0)
        .unwrap_or(EXIT_VESSEL_FAILED)
}

/// The fleet document for a target: a fleet file as it is, a vessel file wrapped in a fleet.
fn target_document(target: &Path) -> anyhow::Result<Value> {
    let ext = target
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    let name: String = target
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("vessel")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let (kind, file_key) = match ext {
        "json" => return Ok(read_fleet_file(target)?),
        "wasm" => ("wasm", "wasm_file"),
        "rhai" => ("rhai", "source_file"),
        other => anyhow::bail!(
            "{}: unknown extension {other:?}; give a .wasm or .rhai vessel or a .json fleet file",
            target.display()
        ),
    };
    // Go through the fleet-file reader so both paths read code the same way.
    let scratch = tempfile::tempdir()?;
    let fleet_file = scratch.path().join("fleet.json");
    let absolute = std::path::absolute(target)?;
    let doc = json!({"name": name, "vessels": [{"name": name, "kind": kind, file_key: absolute}]});
    std::fs::write(&fleet_file, doc.to_string())?;
    Ok(read_fleet_file(&fleet_file)?)
}

/// Folds the command line's variables and limits into the document: `--var` into `variables`,
/// the limit flags into every vessel so they win over whatever the file says.
fn apply_overrides(doc: &mut Value, args: &RunArgs) {
    let Some(map) = doc.as_object_mut() else {
        return;
    };
    if !args.vars.is_empty() {
        let vars = map
            .entry("variables")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(vars) = vars.as_object_mut() {
            for (k, v) in &args.vars {
                vars.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    let limits = [
        ("fuel", args.fuel),
        ("memory_bytes", args.memory),
        ("timeout_ms", args.timeout),
    ];
    if limits.iter().all(|(_, v)| v.is_none()) {
        return;
    }
    let vessels = map.get_mut("vessels").and_then(Value::as_array_mut);
    for vessel in vessels
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        let entry = vessel
            .entry("limits")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(entry) = entry.as_object_mut() {
            for (key, value) in limits {
                if let Some(v) = value {
                    entry.insert(key.into(), v.into());
                }
            }
        }
    }
}

fn read_payload(path: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    match path {
        None => Ok(Vec::new()),
        Some(p) if p == Path::new("-") => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            Ok(buf)
        }
        Some(p) => {
            std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
        }
    }
}

fn guess_content_type(path: Option<&Path>) -> &'static str {
    match path.and_then(|p| p.extension()).and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        Some("csv") => "text/csv",
        Some("txt") => "text/plain",
        Some("xml") => "application/xml",
        _ => "",
    }
}

/// A human-readable report of a local run.
pub fn render(run: &LocalRun) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for v in &run.outcome.vessels {
        let o = &v.outcome;
        let status = serde_json::to_value(o.status).unwrap_or_default();
        let _ = write!(out, "vessel {}: {}", v.name, status.as_str().unwrap_or("?"));
        if let Some(code) = o.exit_code {
            let _ = write!(out, ", exit {code}");
        }
        if let Some(reason) = o.reason {
            let reason = serde_json::to_value(reason).unwrap_or_default();
            let _ = write!(out, ", reason {}", reason.as_str().unwrap_or("?"));
        }
        let _ = writeln!(out, ", fuel {}, {:.2} ms", o.fuel_used, o.duration_ms);
        if let Some(error) = &o.error {
            let _ = writeln!(out, "  error: {error}");
        }
        for (k, val) in &o.variables {
            let _ = writeln!(out, "  set {k} = {val}");
        }
        for row in &o.rows {
            let _ = writeln!(out, "  row {row}");
        }
        for (name, text) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
            if !text.is_empty() {
                let _ = writeln!(out, "  {name}:");
                for line in text.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
    }
    let status = serde_json::to_value(run.outcome.status).unwrap_or_default();
    let _ = writeln!(out, "fleet: {}", status.as_str().unwrap_or("?"));
    let _ = writeln!(out, "variables:");
    for (k, v) in &run.outcome.variables {
        let _ = writeln!(out, "  {k} = {v}");
    }
    // What the fleet's destinations would be sent; `wharf run` sends nothing.
    for d in run.report["deliveries"].as_array().into_iter().flatten() {
        let rows = d["body"]["rows"].as_array().map_or(0, Vec::len);
        let _ = writeln!(
            out,
            "would send to {} ({} {}): batch {}/{}, {rows} rows",
            d["destination"].as_str().unwrap_or("?"),
            d["method"].as_str().unwrap_or("?"),
            d["url"].as_str().unwrap_or("?"),
            d["batch"],
            d["batches"],
        );
    }
    out
}

/// `wharf bundle FLEET_FILE`: the fleet file with its code inlined, ready to POST to the API.
pub fn bundle(path: &Path) -> anyhow::Result<String> {
    let doc = read_fleet_file(path)?;
    // Parse it as the server would, so a broken file is refused here, not at upload.
    serde_json::from_value::<FleetDoc>(doc.clone())
        .map_err(|e| anyhow::anyhow!("invalid fleet document: {e}"))?
        .parse()?;
    Ok(serde_json::to_string_pretty(&doc)?)
}
