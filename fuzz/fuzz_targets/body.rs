//! Body understanding: any content type and any body. The input's first line is the
//! `Content-Type`, the rest the body. Parsing never panics, and the two forms wharf parses a body
//! into — `serde_json::Value` for the variable override, a Rhai `Dynamic` for scripts — always
//! agree on what the body is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use wharf_core::vessel::{Payload, PayloadKind, value_to_var};

/// A body as a Rhai script's `payload` gets it (`wharf_sandbox::rhai::parse_payload`, without
/// the sandbox's Wasm engine in the fuzz build).
fn parse_rhai(content_type: &str, body: &[u8]) -> Payload<rhai::Dynamic> {
    Payload::parse_with(content_type, body, |b| serde_json::from_slice(b).ok())
}

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (String::new(), data),
    };
    let json: Payload<Value> = Payload::parse(&content_type, body);
    let rhai = parse_rhai(&content_type, body);
    let kind = |p: &Payload<rhai::Dynamic>| match p {
        Payload::Json(_) => PayloadKind::Json,
        Payload::Form(_) => PayloadKind::Form,
        Payload::Raw => PayloadKind::Raw,
    };
    assert_eq!(json.kind(), kind(&rhai), "content type {content_type:?}");
    if let (Payload::Form(a), Payload::Form(b)) = (&json, &rhai) {
        assert_eq!(a, b);
    }
    if let Some(object) = json.object() {
        for value in object.values() {
            let _ = value_to_var(value);
        }
    }
});
