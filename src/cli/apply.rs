//! `wharf apply`: fleet files as the source of truth. Each file's fleet is created in the
//! project, or replaced when its stored document differs, or left alone; the comparison is on
//! what the server would store (names, variables, policy, limits, vessels with their code's
//! sha256), never on times, so applying the same files twice changes nothing.

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use super::client::{CliError, CliResult, Client, Conn};
use super::table;
use crate::fleet::{FleetDoc, FleetSpec, read_fleet_file};

/// Arguments of `wharf apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A fleet file, or a folder whose `*.json` files are all fleet files (repeatable).
    #[arg(short = 'f', long = "file", required = true, value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// The project: its id, or its name together with --org. With names, a missing org or
    /// project is created.
    #[arg(long)]
    pub project: String,
    /// The org holding the project, by name (or id), when --project is a name.
    #[arg(long)]
    pub org: Option<String>,
    /// Also create a webhook for every applied fleet that has none, and print its URL.
    #[arg(long)]
    pub webhook: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: Conn,
}

/// What apply did to one fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Created,
    Updated,
    Unchanged,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
        }
    }
}

/// Every fleet file a `-f` argument names, in a stable order.
fn fleet_files(paths: &[PathBuf]) -> CliResult<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
                .collect();
            if found.is_empty() {
                return Err(CliError::Usage(format!(
                    "{} holds no *.json fleet file",
                    path.display()
                )));
            }
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(CliError::Usage(format!(
                "{} does not exist",
                path.display()
            )));
        }
    }
    Ok(files)
}

/// A fleet file read and checked locally: the document to send and the spec it makes.
fn load(path: &Path) -> CliResult<(Value, FleetSpec)> {
    let doc = read_fleet_file(path).map_err(|e| CliError::Usage(e.0))?;
    let spec = serde_json::from_value::<FleetDoc>(doc.clone())
        .map_err(|e| CliError::Usage(format!("{}: invalid fleet document: {e}", path.display())))?
        .parse()
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?
        .spec;
    Ok((doc, spec))
}

/// The parts of a stored fleet that apply compares: the document minus times, ids and webhook.
/// Code sizes are left out (the sha256 already says whether code changed, and a vessel that
/// refers to stored code has no size locally).
fn comparable(mut spec: FleetSpec) -> FleetSpec {
    for v in &mut spec.vessels {
        v.size = 0;
    }
    spec
}

/// The project `--project` / `--org` name; creates org and project when named and missing.
async fn project(client: &Client, args: &ApplyArgs, notes: &mut Vec<String>) -> CliResult<Uuid> {
    if args.org.is_none() {
        let id = Uuid::parse_str(&args.project).map_err(|_| {
            CliError::Usage(format!(
                "--project {:?} is not an id: give the org too (--org NAME) to use names",
                args.project
            ))
        })?;
        let p = client.get(&format!("/projects/{id}")).await?;
        return uuid_of(&p);
    }
    let org_arg = args.org.as_deref().unwrap_or_default();
    let org_id = match Uuid::parse_str(org_arg) {
        Ok(id) => uuid_of(&client.get(&format!("/orgs/{id}")).await?)?,
        Err(_) => {
            let (org, created) = client
                .find_or_create("org", "/orgs", "orgs", org_arg, Some("/orgs"))
                .await?;
            if created {
                notes.push(format!(
                    "created org {org_arg} ({})",
                    org["id"].as_str().unwrap_or("?")
                ));
            }
            uuid_of(&org)?
        }
    };
    if let Ok(id) = Uuid::parse_str(&args.project) {
        return uuid_of(&client.get(&format!("/projects/{id}")).await?);
    }
    let projects = format!("/orgs/{org_id}/projects");
    let (project, created) = client
        .find_or_create(
            "project",
            &projects,
            "projects",
            &args.project,
            Some(&projects),
        )
        .await?;
    if created {
        notes.push(format!(
            "created project {} ({})",
            args.project,
            project["id"].as_str().unwrap_or("?")
        ));
    }
    uuid_of(&project)
}

fn uuid_of(v: &Value) -> CliResult<Uuid> {
    v["id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| CliError::Api(format!("the server answered without an id: {v}")))
}

/// Runs `wharf apply`; prints one line per fleet and returns the exit code.
pub async fn apply(args: &ApplyArgs) -> CliResult<i32> {
    let files = fleet_files(&args.files)?;
    // Every file is read and checked before anything is sent: a broken file changes nothing.
    let loaded = files
        .iter()
        .map(|f| load(f).map(|(doc, spec)| (f, doc, spec)))
        .collect::<CliResult<Vec<_>>>()?;
    let mut names = std::collections::HashSet::new();
    for (file, _, spec) in &loaded {
        if !names.insert(spec.name.clone()) {
            return Err(CliError::Usage(format!(
                "{}: fleet {:?} is in two of the files",
                file.display(),
                spec.name
            )));
        }
    }
    let client = Client::new(&args.conn)?;
    let mut notes = Vec::new();
    let project_id = project(&client, args, &mut notes).await?;
    let mut results = Vec::new();
    for (file, doc, spec) in loaded {
        let existing = client
            .all_pages(
                &format!(
                    "/projects/{project_id}/fleets?name={}",
                    super::client::encode(&spec.name)
                ),
                "fleets",
            )
            .await?;
        let (fleet, change) = match existing.as_slice() {
            [] => {
                let path = format!("/projects/{project_id}/fleets");
                let made = client.call(Method::POST, &path, Some(&doc)).await?;
                (made, Change::Created)
            }
            [one] => {
                let id = one["id"].as_str().unwrap_or_default();
                let stored = client.get(&format!("/fleets/{id}")).await?;
                let same = serde_json::from_value::<FleetSpec>(stored.clone())
                    .is_ok_and(|s| comparable(s) == comparable(spec.clone()));
                if same {
                    (stored, Change::Unchanged)
                } else {
                    let put = client
                        .call(Method::PUT, &format!("/fleets/{id}"), Some(&doc))
                        .await?;
                    (put, Change::Updated)
                }
            }
            many => {
                return Err(CliError::Api(format!(
                    "{}: the project has {} fleets named {:?} ({}); apply needs names to be unique",
                    file.display(),
                    many.len(),
                    spec.name,
                    many.iter()
                        .map(|f| f["id"].as_str().unwrap_or("?"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        let id = fleet["id"].as_str().unwrap_or_default().to_owned();
        let mut webhook_url = fleet["webhook"]["url"].as_str().map(str::to_owned);
        let mut webhook_created = false;
        if args.webhook && webhook_url.is_none() {
            let hook = client
                .call(
                    Method::POST,
                    &format!("/fleets/{id}/webhook"),
                    Some(&json!({})),
                )
                .await?;
            webhook_url = hook["url"].as_str().map(str::to_owned);
            webhook_created = true;
        }
        results.push(json!({
            "file": file.display().to_string(), "name": spec.name, "id": id,
            "result": change.as_str(), "webhook_url": webhook_url,
            "webhook_created": webhook_created,
        }));
    }
    let count = |c: Change| results.iter().filter(|r| r["result"] == c.as_str()).count();
    let (created, updated, unchanged) = (
        count(Change::Created),
        count(Change::Updated),
        count(Change::Unchanged),
    );
    if args.conn.json {
        let out = json!({
            "project_id": project_id, "notes": notes, "fleets": results,
            "created": created, "updated": updated, "unchanged": unchanged,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(0);
    }
    for note in &notes {
        println!("{note}");
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let hook = match (r["webhook_url"].as_str(), r["webhook_created"] == true) {
                (Some(url), true) => format!("{url} (new)"),
                (Some(url), false) => url.to_owned(),
                (None, _) => "-".into(),
            };
            vec![
                r["name"].as_str().unwrap_or("").to_owned(),
                r["result"].as_str().unwrap_or("").to_owned(),
                r["id"].as_str().unwrap_or("").to_owned(),
                hook,
            ]
        })
        .collect();
    print!("{}", table(&["FLEET", "RESULT", "ID", "WEBHOOK"], &rows));
    if created + updated == 0 {
        println!("nothing to change: {unchanged} fleet(s) unchanged");
    } else {
        println!("{created} created, {updated} updated, {unchanged} unchanged");
    }
    Ok(0)
}
