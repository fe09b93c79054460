//! A wharf vessel template: reads the webhook body, sets variables, emits a row.

use wharf_guest::serde_json::Value;
use wharf_guest::{Request, Row};

fn main() {
    wharf_guest::run(handle);
}

/// The vessel's logic, kept apart from `main` so tests call it through the harness.
fn handle(req: Request) -> wharf_guest::Result<()> {
    wharf_guest::log(format_args!(
        "{} {} ({} bytes)",
        req.method(),
        req.content_type(),
        req.body().len()
    ));
    wharf_guest::set_var("received_bytes", req.body().len())?;

    // A JSON object body: copy its `event` field, if any, into a variable.
    if req.content_type().starts_with("application/json") {
        let payload: Value = req.json()?;
        if let Some(event) = payload.get("event").and_then(Value::as_str) {
            wharf_guest::set_var("event", event)?;
        }
    }

    wharf_guest::emit_row(
        Row::new()
            .field("request_id", req.request_id())
            .field("bytes", req.body().len())
            .operation("added")
            .primary_key(req.request_id()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use wharf_guest::testing::Harness;

    #[test]
    fn sets_variables_and_emits_a_row() {
        let outcome = Harness::new()
            .json_body(&wharf_guest::serde_json::json!({"event": "deploy"}))
            .run(super::handle);
        assert_eq!(outcome.exit_code, 0, "{outcome:?}");
        assert_eq!(outcome.var("event"), Some("deploy"));
        assert_eq!(outcome.var("received_bytes"), Some("18"));
        assert_eq!(outcome.rows.len(), 1);
    }

    #[test]
    fn a_body_that_is_not_json_fails() {
        let outcome = Harness::new()
            .body("nope")
            .content_type("application/json")
            .run(super::handle);
        assert_eq!(outcome.exit_code, 1);
    }
}
