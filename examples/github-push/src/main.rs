//! The `github-push` vessel: reads a GitHub `push` event, records where it went, and stops the
//! fleet (exit 78) for pushes to any branch but the fleet variable `branch`.

use serde::Deserialize;
use wharf_guest::{Exit, Request, Row};

/// Exit status for "not our branch": a deliberate stop, not a failure of the vessel's code
/// (78 is `EX_CONFIG` in sysexits.h).
const OTHER_BRANCH: i32 = 78;

/// The fields of GitHub's push payload this vessel reads.
#[derive(Debug, Deserialize)]
struct Push {
    r#ref: String,
    repository: Repository,
    pusher: Pusher,
    #[serde(default)]
    commits: Vec<Commit>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Debug, Deserialize)]
struct Pusher {
    name: String,
}

#[derive(Debug, Deserialize)]
struct Commit {
    id: String,
    message: String,
    #[serde(default)]
    url: String,
}

fn main() {
    wharf_guest::run(handle);
}

fn handle(req: Request) -> wharf_guest::Result<()> {
    if let Some(event) = req
        .header("x-github-event")
        .filter(|event| *event != "push")
    {
        wharf_guest::log(format_args!("ignoring a {event} event"));
        return Ok(());
    }
    let push: Push = req.json()?;
    let branch = push
        .r#ref
        .strip_prefix("refs/heads/")
        .unwrap_or(&push.r#ref);

    wharf_guest::set_var("repository", &push.repository.full_name)?;
    wharf_guest::set_var("branch", branch)?;
    wharf_guest::set_var("pusher", &push.pusher.name)?;
    wharf_guest::set_var("commit_count", push.commits.len())?;

    let wanted = req.var("branch").unwrap_or_else(|| "main".to_owned());
    if branch != wanted {
        wharf_guest::log(format_args!(
            "push to {branch}, this fleet follows {wanted}: stopping"
        ));
        return Err(Exit(OTHER_BRANCH).into());
    }

    for commit in &push.commits {
        let title = commit.message.lines().next().unwrap_or("");
        wharf_guest::emit_row(
            Row::new()
                .field("repository", push.repository.full_name.as_str())
                .field("sha", commit.id.as_str())
                .field("title", title)
                .field("url", commit.url.as_str())
                .operation("added")
                .primary_key(&commit.id),
        )?;
    }
    wharf_guest::log(format_args!(
        "{} pushed {} commit(s) to {}@{branch}",
        push.pusher.name,
        push.commits.len(),
        push.repository.full_name
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use wharf_guest::testing::{Harness, Outcome};

    const PAYLOAD: &str = include_str!("../payload.json");

    fn run(branch_var: &str, payload: &str) -> Outcome {
        Harness::new()
            .body(payload)
            .content_type("application/json")
            .header("X-GitHub-Event", "push")
            .var("branch", branch_var)
            .run(super::handle)
    }

    #[test]
    fn push_to_the_followed_branch() {
        let outcome = run("main", PAYLOAD);
        assert_eq!(outcome.exit_code, 0, "{outcome:?}");
        assert_eq!(outcome.var("repository"), Some("acme/tools"));
        assert_eq!(outcome.var("branch"), Some("main"));
        assert_eq!(outcome.var("pusher"), Some("alice"));
        assert_eq!(outcome.var("commit_count"), Some("2"));
        assert_eq!(outcome.rows.len(), 2);
        assert_eq!(outcome.rows[0].data["title"], "Fix the release script");
    }

    #[test]
    fn matches_expected_json() {
        let expected: wharf_guest::serde_json::Value =
            wharf_guest::serde_json::from_str(include_str!("../expected.json")).unwrap();
        let outcome = run("main", PAYLOAD);
        assert_eq!(
            i64::from(outcome.exit_code),
            expected["exit_code"].as_i64().unwrap()
        );
        assert_eq!(
            outcome.rows.len() as u64,
            expected["rows"].as_u64().unwrap()
        );
        let variables = wharf_guest::serde_json::to_value(&outcome.variables).unwrap();
        assert_eq!(variables, expected["variables"]);
    }

    #[test]
    fn other_branches_stop_with_78() {
        let outcome = run("release", PAYLOAD);
        assert_eq!(outcome.exit_code, 78);
        assert_eq!(outcome.var("branch"), Some("main"));
        assert!(outcome.rows.is_empty());
        assert!(
            outcome.stderr.is_empty(),
            "a deliberate stop prints no error"
        );
    }

    #[test]
    fn not_a_push_payload_fails() {
        assert_eq!(
            run("main", r#"{"zen":"Keep it logically awesome."}"#).exit_code,
            1
        );
    }
}
