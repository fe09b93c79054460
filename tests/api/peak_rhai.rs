//! One Rhai call cannot take the host past a vessel's memory limit: the reproductions of calls
//! that allocated hundreds of MB (or asked for a terabyte and aborted the process) before the
//! per-operation check saw them, run through the real binary while its peak RSS is watched.

use serde_json::{Value, json};

use crate::binary::{Proc, start};

/// A map holding one shared 1 MiB string under 1,000 keys: cheap to hold (the string is shared),
/// a gigabyte when every copy is written out.
const SHARED_MAP: &str = r#"let s = ""; s.pad(1048576, "x");
let m = #{}; for i in 0..1000 { m[`k${i}`] = s; }
"#;

/// The reproductions: a name, a script, and what the run's error must name as refused.
pub fn reproductions() -> Vec<(&'static str, String, &'static str)> {
    let a100 = "a".repeat(100);
    let a1000 = "a".repeat(1000);
    vec![
        (
            // 100 chars, squared twice: a 100 MB string in one call (a 214 MB peak before).
            "replace, two levels",
            format!(
                r#"let s = "{a100}"; let t = s; t.replace("a", s); let u = t; u.replace("a", t); u.len()"#
            ),
            "replace",
        ),
        (
            // 1,000 chars squared twice: a terabyte in one call, which aborted the process.
            "replace, a terabyte",
            format!(
                r#"let s = "{a1000}"; let t = s; t.replace("a", s); let u = t; u.replace("a", t); u.len()"#
            ),
            "replace",
        ),
        (
            "shared map through set_var",
            format!("{SHARED_MAP} set_var(\"m\", m);"),
            "set_var",
        ),
        (
            "shared map through emit",
            format!("{SHARED_MAP} emit(m);"),
            "emit",
        ),
        (
            "shared map through interpolation",
            format!("{SHARED_MAP} let text = `${{m}}`; text.len()"),
            "formatting a map",
        ),
        (
            "shared map through print",
            format!("{SHARED_MAP} print(m);"),
            "formatting a map",
        ),
        (
            "shared map through string +",
            format!("{SHARED_MAP} let text = \"m: \" + m; text.len()"),
            "formatting a map",
        ),
        (
            "shared map through to_json",
            format!("{SHARED_MAP} m.to_json().len()"),
            "to_json",
        ),
        (
            // 4 MB of text split into one-character strings: ~64 bytes a piece.
            "split into characters",
            r#"let s = ""; s.pad(4000000, "a"); let parts = s.split(""); parts.len()"#.into(),
            "split",
        ),
        (
            // 16 bytes a character.
            "to_chars",
            r#"let s = ""; s.pad(4000000, "a"); let c = s.to_chars(); c.len()"#.into(),
            "to_chars",
        ),
        (
            // 16 M characters of 4 bytes each: 64 MB from a count that passes the size check.
            "pad with a wide character",
            "let s = \"\"; s.pad(16000000, '\u{1F600}'); s.len()".into(),
            "pad",
        ),
    ]
}

/// Triggers `url` and waits for the run to end; returns its only vessel run.
async fn run_once(server: &Proc, url: &str) -> Value {
    let id = server.trigger(url, "{}").await;
    server.finished(&id).await["vessels"][0].clone()
}

/// The host's peak RSS rises by less than the vessel's 16 MiB (the default `memory_bytes`) plus
/// 8 MiB of slack for each reproduction. The slack covers what the server itself touches around
/// a run: the request and its row in SQLite's page cache, the run's JSON, a fresh vessel thread's
/// stack pages, and the allocator's own rounding. Before, the two-level `replace` peaked at
/// ~214 MB, the terabyte one aborted the server, and each serialisation of the shared map took
/// a gigabyte.
#[tokio::test]
async fn one_rhai_call_keeps_the_host_within_the_vessel_memory_limit() {
    const LIMIT: u64 = 16 << 20;
    const SLACK: u64 = 8 << 20;
    let data = tempfile::tempdir().unwrap();
    let mut server = start(data.path(), 0).await;
    // Every fleet is made first, so that what the server allocates for the admin calls is not
    // counted against a run.
    let mut hooks = Vec::new();
    for (name, script, refused) in reproductions() {
        let doc =
            json!({"name": "peak", "vessels": [{"name": "v", "kind": "rhai", "source": script}]});
        let (_, url) = server.fleet_with_hook(doc).await;
        hooks.push((name, url, refused));
    }
    // A run that runs out of fuel on the very operation that formats the map for interpolation
    // (Rhai then formatted it itself, unchecked, as if the formatting function had failed: a
    // 3 GB peak). The operation's number is fixed for a given script and Rhai, and lies in
    // this window.
    for fuel in 8_990..9_040 {
        let script = format!("{SHARED_MAP} let text = `${{m}}`; text.len()");
        let doc = json!({"name": "peak", "vessels": [{"name": "v", "kind": "rhai", "source": script,
            "limits": {"fuel": fuel}}]});
        let (_, url) = server.fleet_with_hook(doc).await;
        hooks.push(("interpolation at the last operation of fuel", url, ""));
    }
    // One honest run first, so that the vessel pool and the store have warmed up.
    let warm = json!({"name": "warm", "vessels": [{"name": "v", "kind": "rhai", "source": "let a = [1, 2]; a.len()"}]});
    let (_, warm_url) = server.fleet_with_hook(warm).await;
    run_once(&server, &warm_url).await;
    for (name, url, refused) in hooks {
        server.reset_peak();
        let before = server.peak_rss();
        let vessel = run_once(&server, &url).await;
        let peak = server.peak_rss();
        assert!(server.alive(), "{name}: the server died");
        let rise = peak.saturating_sub(before);
        eprintln!("{name}: peak RSS rose by {} KiB", rise >> 10);
        assert!(
            rise < LIMIT + SLACK,
            "{name}: the peak RSS rose by {rise} bytes, past {} ({vessel})",
            LIMIT + SLACK
        );
        if refused.is_empty() {
            let reason = vessel["reason"].as_str().unwrap_or_default();
            assert!(
                ["fuel_exhausted", "memory_limit"].contains(&reason),
                "{name}: {vessel}"
            );
            continue;
        }
        assert_eq!(vessel["reason"], "memory_limit", "{name}: {vessel}");
        let error = vessel["error"].as_str().unwrap_or_default();
        assert!(error.contains(refused), "{name}: {error}");
    }
}
