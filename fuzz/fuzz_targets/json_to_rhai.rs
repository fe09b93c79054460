//! JSON into Rhai values, as a script's `payload` gets it: any bytes under a JSON content type.
//! Whatever becomes a `Dynamic` survives what the runner does with it — `emit` turns it back
//! into JSON, `set_var` into a string — and comes back as the same JSON value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use wharf_core::vessel::Payload;

fuzz_target!(|data: &[u8]| {
    let Payload::Json(dynamic) =
        Payload::<rhai::Dynamic>::parse_with("application/json", data, |b| {
            serde_json::from_slice(b).ok()
        })
    else {
        return;
    };
    let _ = dynamic.to_string();
    let text = serde_json::to_string(&dynamic).expect("a payload value serializes");
    let back: Value = rhai::serde::from_dynamic(&dynamic).expect("a payload value converts back");
    let Payload::Json(direct) = Payload::<Value>::parse("application/json", data) else {
        panic!("parsed as a Dynamic but not as a Value");
    };
    assert_eq!(back, direct);
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("valid JSON"),
        direct
    );
});
