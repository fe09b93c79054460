//! Client commands over the admin API: `apply`, `fleets`, `webhook`, `runs`, `trigger`.
//!
//! They talk HTTP to a running server (`--url` / `WHARF_URL`, `--token` /
//! `WHARF_ADMIN_TOKEN`), print tables for people and JSON with `--json`, and end with an exit
//! code scripts can branch on:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done; with `trigger --wait`, the run succeeded |
//! | 1 | `trigger --wait`: the run failed |
//! | 2 | usage or local error: bad arguments, a missing or invalid fleet or payload file |
//! | 3 | the server: unreachable, token refused, unknown or ambiguous name, call refused |
//! | 4 | `trigger --wait`: the run was cancelled |
//! | 5 | `trigger --wait`: `--timeout` passed before the run ended |

mod apply;
mod client;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::types::{Accepted, Fleet, Run, RunPage, RunStatus, Webhook};

pub use apply::ApplyArgs;
pub use client::{CliError, CliResult, Client, Conn};

/// Exit code: a run that `trigger --wait` followed failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: usage or local error.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the server was unreachable or refused.
pub const EXIT_API: i32 = 3;
/// Exit code: a followed run was cancelled.
pub const EXIT_CANCELLED: i32 = 4;
/// Exit code: `--timeout` passed while following a run.
pub const EXIT_TIMEOUT: i32 = 5;

/// How often `trigger --wait` asks for the run's status.
const POLL: Duration = Duration::from_millis(200);

/// The client commands, as subcommands of `wharf`.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Create or replace fleets from fleet files, by name, in a project (config as code).
    Apply(Box<ApplyArgs>),
    /// List and show fleets.
    Fleets(FleetsArgs),
    /// Create, rotate or remove a fleet's webhook.
    Webhook(WebhookArgs),
    /// List and show runs.
    Runs(RunsArgs),
    /// POST a payload to a fleet's webhook; with --wait, follow the run and exit with its status.
    Trigger(TriggerArgs),
}

/// `wharf fleets …`.
#[derive(Debug, clap::Args)]
pub struct FleetsArgs {
    #[command(subcommand)]
    #[allow(missing_docs)]
    pub command: FleetsCommand,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// What to do with fleets.
#[derive(Debug, clap::Subcommand)]
pub enum FleetsCommand {
    /// Every fleet (of one project with --project), newest first.
    Ls {
        /// Only this project's fleets (its id).
        #[arg(long)]
        project: Option<Uuid>,
    },
    /// One fleet: its settings, vessels and webhook.
    Get {
        /// Fleet name or id.
        fleet: String,
    },
}

/// `wharf webhook …`.
#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    #[command(subcommand)]
    #[allow(missing_docs)]
    pub command: WebhookCommand,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// What to do with a webhook.
#[derive(Debug, clap::Subcommand)]
pub enum WebhookCommand {
    /// Give the fleet a webhook (auth mode none) and print its URL.
    Create {
        /// Fleet name or id.
        fleet: String,
    },
    /// Give the fleet's webhook a new URL; the old one stops working at once.
    Rotate {
        /// Fleet name or id.
        fleet: String,
    },
    /// Remove the fleet's webhook; its URL stops working.
    Rm {
        /// Fleet name or id.
        fleet: String,
    },
}

/// `wharf runs …`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    #[allow(missing_docs)]
    pub command: RunsCommand,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// What to do with runs.
#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first: of one fleet, or of every fleet.
    Ls {
        /// Only this fleet's runs (name or id).
        #[arg(long)]
        fleet: Option<String>,
        /// Only runs in this status (queued, running, succeeded, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// How many, 1 to 500.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
    },
    /// One run: status, variables and every vessel with its logs.
    Get {
        /// Run id.
        run: Uuid,
    },
    /// A run's output; with --follow, as it is written, until the run ends (exit code as
    /// `trigger --wait`: 0 succeeded, 1 failed, 4 cancelled).
    Logs {
        /// Run id.
        run: Uuid,
        /// Follow the run live (Server-Sent Events) until it ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Cancel a queued or running run.
    Cancel {
        /// Run id.
        run: Uuid,
    },
    /// Run a stored request again with the fleet's current code; with --from, resume at a vessel.
    Replay {
        /// Run id.
        run: Uuid,
        /// Resume: vessels not downstream of this one carry over from the run.
        #[arg(long)]
        from: Option<String>,
    },
}

/// `wharf trigger`.
#[derive(Debug, clap::Args)]
pub struct TriggerArgs {
    /// Fleet name or id.
    pub fleet: String,
    /// The body to send; `-` reads standard input; without it the body is empty.
    #[arg(long)]
    pub payload: Option<PathBuf>,
    /// Content type of the body; by default application/json for a .json payload, else
    /// application/octet-stream.
    #[arg(long)]
    pub content_type: Option<String>,
    /// Follow the run to its end and exit with its status (0 succeeded, 1 failed, 4 cancelled).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit 5); by default wait as long as it takes.
    #[arg(long, requires = "wait")]
    pub timeout: Option<u64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// Runs a client command; returns the process exit code (errors are printed on stderr).
pub async fn run(command: &ClientCommand) -> i32 {
    let result = match command {
        ClientCommand::Apply(args) => apply::apply(args).await,
        ClientCommand::Fleets(args) => fleets(args).await,
        ClientCommand::Webhook(args) => webhook(args).await,
        ClientCommand::Runs(args) => runs(args).await,
        ClientCommand::Trigger(args) => trigger(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wharf: {e}");
            e.exit_code()
        }
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Left-aligned columns, two spaces apart.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn fleets(args: &FleetsArgs) -> CliResult<i32> {
    let client = Client::new(&args.conn)?;
    match &args.command {
        FleetsCommand::Ls { project } => {
            let path = match project {
                Some(p) => format!("/projects/{p}/fleets"),
                None => "/fleets".to_owned(),
            };
            let fleets = client.all_pages(&path, "fleets").await?;
            if args.conn.json {
                print_json(&json!({ "fleets": fleets }));
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = fleets
                .iter()
                .map(|f| {
                    let vessels: Vec<String> = f["vessels"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(text)
                        .collect();
                    vec![
                        text(&f["name"]),
                        text(&f["id"]),
                        text(&f["project_id"]),
                        vessels.join(","),
                        text(&f["last_run_status"]),
                        text(&f["webhook_url"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["NAME", "ID", "PROJECT", "VESSELS", "LAST RUN", "WEBHOOK"],
                    &rows
                )
            );
        }
        FleetsCommand::Get { fleet } => {
            let f = client.resolve_fleet(fleet, None).await?;
            if args.conn.json {
                print_json(&f);
                return Ok(0);
            }
            let typed: Fleet = client::typed(&f)?;
            println!("fleet:       {} ({})", text(&f["name"]), typed.id);
            println!("project:     {}", typed.project_id);
            println!("org:         {}", typed.org_id);
            println!("concurrency: {}", text(&f["concurrency"]));
            println!(
                "webhook:     {}",
                typed.webhook.as_ref().map_or("-", |w| w.url.as_str())
            );
            println!("created:     {}", typed.created_at);
            println!("updated:     {}", typed.updated_at);
            if let Some(vars) = f["variables"].as_object().filter(|v| !v.is_empty()) {
                println!("variables:");
                for (k, v) in vars {
                    println!("  {k} = {}", text(v));
                }
            }
            let rows: Vec<Vec<String>> = f["vessels"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    let needs: Vec<String> = v["needs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(text)
                        .collect();
                    vec![
                        text(&v["name"]),
                        text(&v["kind"]),
                        text(&v["when"]),
                        if needs.is_empty() {
                            "-".into()
                        } else {
                            needs.join(",")
                        },
                        text(&v["sha256"]).chars().take(12).collect(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["VESSEL", "KIND", "WHEN", "NEEDS", "SHA256"], &rows)
            );
        }
    }
    Ok(0)
}

async fn webhook(args: &WebhookArgs) -> CliResult<i32> {
    let client = Client::new(&args.conn)?;
    let (fleet, verb) = match &args.command {
        WebhookCommand::Create { fleet } => (fleet, "create"),
        WebhookCommand::Rotate { fleet } => (fleet, "rotate"),
        WebhookCommand::Rm { fleet } => (fleet, "rm"),
    };
    let f = client.resolve_fleet(fleet, None).await?;
    let id = text(&f["id"]);
    let path = format!("/fleets/{id}/webhook");
    let answer = match verb {
        "create" => client.call(Method::POST, &path, Some(&json!({}))).await?,
        "rotate" => {
            client
                .call(Method::POST, &format!("{path}/rotate"), None)
                .await?
        }
        _ => {
            client.call(Method::DELETE, &path, None).await?;
            json!({"fleet_id": id, "removed": true})
        }
    };
    if args.conn.json {
        print_json(&answer);
    } else if verb == "rm" {
        println!("webhook of fleet {} removed", text(&f["name"]));
    } else {
        let hook: Webhook = client::typed(&answer)?;
        println!("{}", hook.url);
    }
    Ok(0)
}

async fn runs(args: &RunsArgs) -> CliResult<i32> {
    let client = Client::new(&args.conn)?;
    match &args.command {
        RunsCommand::Ls {
            fleet,
            status,
            limit,
        } => {
            let mut path = match fleet {
                Some(f) => {
                    let f = client.resolve_fleet(f, None).await?;
                    format!("/fleets/{}/runs?limit={limit}", text(&f["id"]))
                }
                None => format!("/runs?limit={limit}"),
            };
            if let Some(s) = status {
                path.push_str(&format!("&status={}", client::encode(s)));
            }
            let page = client.get(&path).await?;
            if args.conn.json {
                print_json(&page);
                return Ok(0);
            }
            let page: RunPage = client::typed(&page)?;
            let rows: Vec<Vec<String>> = page
                .runs
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        name(&r.status),
                        r.fleet_id.to_string(),
                        r.created_at.clone(),
                        duration(r),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["RUN", "STATUS", "FLEET", "CREATED", "DURATION"], &rows)
            );
        }
        RunsCommand::Get { run } => {
            let r = client.get(&format!("/runs/{run}")).await?;
            if args.conn.json {
                print_json(&r);
            } else {
                print!("{}", render_run(&client::typed(&r)?));
            }
        }
        RunsCommand::Logs { run, follow: false } => {
            let r: Run = client::typed(&client.get(&format!("/runs/{run}")).await?)?;
            for v in &r.vessels {
                print!("{}", v.stdout);
                eprint!("{}", v.stderr);
            }
        }
        RunsCommand::Logs { run, follow: true } => {
            let json = args.conn.json;
            let end = client
                .follow(&format!("/runs/{run}/events"), |kind, data| {
                    if json {
                        println!("{}", serde_json::json!({"event": kind, "data": data}));
                    } else if kind == "log" {
                        let text = data["text"].as_str().unwrap_or_default();
                        if data["stream"] == "stderr" {
                            eprint!("{text}");
                        } else {
                            print!("{text}");
                        }
                        use std::io::Write as _;
                        let _ = std::io::stdout().flush();
                    }
                })
                .await?;
            return Ok(match end.as_ref().and_then(|d| d["status"].as_str()) {
                Some("succeeded") => 0,
                Some("cancelled") => EXIT_CANCELLED,
                _ => EXIT_FAILED,
            });
        }
        RunsCommand::Cancel { run } => {
            let r = client
                .call(
                    reqwest::Method::POST,
                    &format!("/runs/{run}/cancel"),
                    Some(&serde_json::json!({})),
                )
                .await?;
            if args.conn.json {
                print_json(&r);
            } else {
                let r: Run = client::typed(&r)?;
                println!("run {run}: {}", name(&r.status));
            }
        }
        RunsCommand::Replay { run, from } => {
            let body = match from {
                Some(v) => serde_json::json!({"from": v}),
                None => serde_json::json!({}),
            };
            let r = client
                .call(
                    reqwest::Method::POST,
                    &format!("/runs/{run}/replay"),
                    Some(&body),
                )
                .await?;
            if args.conn.json {
                print_json(&r);
            } else {
                let r: Accepted = client::typed(&r)?;
                println!("{}", r.data.fleet_run_id);
            }
        }
    }
    Ok(0)
}

/// Seconds from start to finish of a run, when it has both.
fn duration(r: &Run) -> String {
    let at = |t: &Option<String>| {
        t.as_deref()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    };
    match (at(&r.started_at), at(&r.finished_at)) {
        (Some(a), Some(b)) => format!("{:.3}s", (b - a).num_milliseconds() as f64 / 1000.0),
        _ => "-".into(),
    }
}

/// A run for people: its facts, then each vessel with its logs.
fn render_run(r: &Run) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "run:      {}", r.id);
    let _ = writeln!(out, "fleet:    {}", r.fleet_id);
    let _ = writeln!(out, "status:   {}", name(&r.status));
    let _ = writeln!(out, "attempt:  {}", r.attempt);
    let _ = writeln!(out, "request:  {}", r.request.id);
    let _ = writeln!(out, "created:  {}", r.created_at);
    let _ = writeln!(out, "started:  {}", name(&r.started_at));
    let _ = writeln!(out, "finished: {}", name(&r.finished_at));
    if let Some(error) = &r.error {
        let _ = writeln!(out, "error:    {error} ({})", name(&r.reason));
    }
    if !r.variables.is_empty() {
        let _ = writeln!(out, "variables:");
        for (k, v) in &r.variables {
            let _ = writeln!(out, "  {k} = {v}");
        }
    }
    let rows: Vec<Vec<String>> = r
        .vessels
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                name(&v.status),
                name(&v.exit_code),
                name(&v.reason),
                v.fuel_used.to_string(),
                name(&v.duration_ms),
            ]
        })
        .collect();
    out.push_str(&table(
        &["VESSEL", "STATUS", "EXIT", "REASON", "FUEL", "MS"],
        &rows,
    ));
    for v in &r.vessels {
        for (t, label) in [
            (v.error.as_deref(), "error"),
            (Some(v.stdout.as_str()), "stdout"),
            (Some(v.stderr.as_str()), "stderr"),
        ] {
            if let Some(t) = t.filter(|t| !t.is_empty()) {
                let _ = writeln!(out, "{} {label}:", v.name);
                for line in t.lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
        }
    }
    out
}

/// A wire value as a table cell: its JSON form, strings unquoted, null as `-`.
fn name(v: &impl serde::Serialize) -> String {
    text(&serde_json::to_value(v).unwrap_or(Value::Null))
}

fn read_payload(args: &TriggerArgs) -> CliResult<(Vec<u8>, String)> {
    let body = match &args.payload {
        None => Vec::new(),
        Some(p) if p.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .map_err(|e| CliError::Usage(format!("cannot read standard input: {e}")))?;
            buf
        }
        Some(p) => std::fs::read(p)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", p.display())))?,
    };
    let content_type = args.content_type.clone().unwrap_or_else(|| {
        let json = args
            .payload
            .as_ref()
            .is_some_and(|p| p.extension().is_some_and(|x| x == "json"));
        if json {
            "application/json".into()
        } else {
            "application/octet-stream".into()
        }
    });
    Ok((body, content_type))
}

async fn trigger(args: &TriggerArgs) -> CliResult<i32> {
    let (body, content_type) = read_payload(args)?;
    let client = Client::new(&args.conn)?;
    let fleet = client.resolve_fleet(&args.fleet, None).await?;
    let Some(url) = fleet["webhook"]["url"].as_str() else {
        return Err(CliError::Api(format!(
            "fleet {} has no webhook; create one with `wharf webhook create {}`",
            text(&fleet["name"]),
            text(&fleet["id"])
        )));
    };
    let (status, answer) = client.post_raw(url, &content_type, body).await?;
    if status != reqwest::StatusCode::CREATED {
        let why = answer["error"]
            .as_str()
            .unwrap_or("the webhook is unknown or was rotated");
        return Err(CliError::Api(format!(
            "the webhook refused the call ({}): {why}",
            status.as_u16()
        )));
    }
    let accepted: Accepted = client::typed(&answer)?;
    let run_id = accepted.data.fleet_run_id;
    if !args.wait {
        if args.conn.json {
            print_json(&answer);
        } else {
            println!("request {}", accepted.request.id);
            println!("run     {run_id}");
        }
        return Ok(0);
    }
    if !args.conn.json {
        eprintln!("run {run_id} queued; waiting for it to end");
    }
    let started = Instant::now();
    let deadline = args.timeout.map(Duration::from_secs);
    let (answer, run) = loop {
        let answer = client.get(&format!("/runs/{run_id}")).await?;
        let run: Run = client::typed(&answer)?;
        if !matches!(run.status, RunStatus::Queued | RunStatus::Running) {
            break (answer, run);
        }
        if deadline.is_some_and(|d| started.elapsed() >= d) {
            eprintln!(
                "wharf: run {run_id} is still {} after {}s",
                name(&run.status),
                args.timeout.unwrap_or_default()
            );
            return Ok(EXIT_TIMEOUT);
        }
        tokio::time::sleep(POLL).await;
    };
    if args.conn.json {
        print_json(&answer);
    } else {
        print!("{}", render_run(&run));
    }
    Ok(match run.status {
        RunStatus::Succeeded => 0,
        RunStatus::Cancelled => EXIT_CANCELLED,
        _ => EXIT_FAILED,
    })
}
