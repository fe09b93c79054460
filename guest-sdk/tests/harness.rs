//! The SDK end to end through the fake host: what a vessel author relies on in tests.

use serde_json::json;
use wharf_guest::testing::Harness;
use wharf_guest::{Error, Exit, Request, Row};

#[test]
fn json_body_variables_and_rows() {
    let outcome = Harness::new()
        .json_body(&json!({"repository": {"full_name": "acme/tools"}, "commits": [{"id": "a"}, {"id": "b"}]}))
        .run(|req| -> wharf_guest::Result<()> {
            let push: serde_json::Value = req.json()?;
            wharf_guest::set_var("repository", push["repository"]["full_name"].as_str().unwrap_or(""))?;
            for commit in push["commits"].as_array().into_iter().flatten() {
                let id = commit["id"].as_str().unwrap_or("");
                wharf_guest::emit_row(Row::new().field("id", id).operation("added").primary_key(id))?;
            }
            wharf_guest::log("done");
            Ok(())
        });
    assert!(outcome.success(), "{outcome:?}");
    assert_eq!(outcome.var("repository"), Some("acme/tools"));
    assert_eq!(outcome.rows.len(), 2);
    assert_eq!(outcome.rows[1].primary_key.as_deref(), Some("b"));
    assert_eq!(outcome.stdout, ["done"]);
}

#[test]
fn request_metadata_larger_than_the_first_buffer() {
    let long = "x".repeat(5000);
    let outcome = Harness::new()
        .header("X-Long", long.clone())
        .query("q", "1")
        .run(|req| -> wharf_guest::Result<()> {
            assert_eq!(req.header("x-long").map(str::len), Some(5000));
            assert_eq!(req.query("q"), Some("1"));
            assert_eq!(req.headers().len(), 1);
            Ok(())
        });
    assert!(outcome.success(), "{outcome:?}");
}

#[test]
fn ids_and_reserved_names_are_not_variables() {
    let outcome = Harness::new()
        .var("branch", "main")
        .vessel("parse")
        .org_id("o")
        .project_id("p")
        .fleet_id("f")
        .fleet_run_id("r")
        .request_id("q")
        .attempt(2)
        .run(|req| -> wharf_guest::Result<()> {
            assert_eq!(
                [
                    req.vessel(),
                    req.org_id(),
                    req.project_id(),
                    req.fleet_id(),
                    req.fleet_run_id(),
                    req.request_id()
                ],
                ["parse", "o", "p", "f", "r", "q"]
            );
            assert_eq!(req.attempt(), 2);
            assert_eq!(req.vars().collect::<Vec<_>>(), [("branch", "main")]);
            Ok(())
        });
    assert!(outcome.success(), "{outcome:?}");
}

#[test]
fn exit_paths() {
    assert_eq!(Harness::new().run(|_req| Err(Exit(78))).exit_code, 78);
    assert_eq!(Harness::new().run(|_req| Err(Exit(0))).exit_code, 0);
    let quiet = Harness::new().run(|_req| -> wharf_guest::Result<()> { wharf_guest::exit(5) });
    assert_eq!((quiet.exit_code, quiet.stderr.len()), (5, 0));
    let loud = Harness::new()
        .run(|_req| -> wharf_guest::Result<()> { Err(Error::msg("bad").with_exit_code(65)) });
    assert_eq!(
        (loud.exit_code, loud.stderr.as_slice()),
        (65, &["error: bad".to_owned()][..])
    );
}

#[test]
fn variables_set_before_exit_are_kept() {
    let outcome = Harness::new().run(|_req| -> wharf_guest::Result<()> {
        wharf_guest::set_var("seen", "yes")?;
        wharf_guest::exit(78)
    });
    assert_eq!((outcome.exit_code, outcome.var("seen")), (78, Some("yes")));
}

#[test]
fn body_errors_fail_with_code_1() {
    let outcome = Harness::new()
        .body("{not json")
        .run(|req| req.json::<serde_json::Value>().map(drop));
    assert_eq!(outcome.exit_code, 1);
    assert!(
        outcome.stderr[0].starts_with("error: request body is not the expected JSON"),
        "{:?}",
        outcome.stderr
    );
    assert_eq!(
        Harness::new()
            .body(vec![0xff])
            .run(|req| req.text().map(drop))
            .exit_code,
        1
    );
    assert_eq!(
        Harness::new()
            .body("a=%FF")
            .run(|req| req.form().map(drop))
            .exit_code,
        1
    );
}

#[test]
fn emit_rejects_non_objects_and_bad_row_fields() {
    let outcome = Harness::new().run(|_req| -> wharf_guest::Result<()> {
        assert!(wharf_guest::emit(&json!([1])).is_err());
        assert!(wharf_guest::emit(&json!({"data": 1})).is_err());
        assert!(wharf_guest::emit(&json!({"data": {}, "operation": 1})).is_err());
        wharf_guest::emit(&json!({"plain": true}))?;
        Ok(())
    });
    assert!(outcome.success(), "{outcome:?}");
    assert_eq!(outcome.rows[0].data["plain"], true);
}

#[test]
fn set_var_overwrites_and_respects_limits() {
    let outcome = Harness::new()
        .max_variables(1)
        .run(|_req| -> wharf_guest::Result<()> {
            wharf_guest::set_var("a", 1)?;
            wharf_guest::set_var("a", 2)?; // overwriting is not a new variable
            let err = wharf_guest::set_var("b", 3).unwrap_err();
            assert!(
                err.downcast_ref::<wharf_guest::HostError>()
                    .is_some_and(|e| e.is_limit())
            );
            Ok(())
        });
    assert_eq!(outcome.var("a"), Some("2"));
}

#[test]
fn a_panic_propagates_and_leaves_the_thread_clean() {
    let result = std::panic::catch_unwind(|| {
        Harness::new().run(|_req: Request| -> wharf_guest::Result<()> { panic!("bug") })
    });
    assert!(result.is_err());
    // The fake host was uninstalled, so another harness can run on this thread.
    assert!(
        Harness::new()
            .run(|_req| wharf_guest::set_var("x", 1))
            .success()
    );
}
