//! An in-process stand-in for the `wharf` host, for builds that are not `wasm32`.
//!
//! While a [`Harness`](crate::testing::Harness) runs, the calls read and record its thread-local
//! [`FakeHost`]. Outside a harness (a vessel run natively, say `echo '{}' | cargo run`) the body
//! and environment are the process's own and calls are echoed to stderr, so a guest can be
//! tried without a host.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde_json::{Map, Value};

use super::Stream;
use crate::testing::EmittedRow;

/// Everything one harness run reads and records, mirroring the real host's per-run state.
#[derive(Debug, Default)]
pub(crate) struct FakeHost {
    pub(crate) body: Vec<u8>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) request_json: Vec<u8>,
    pub(crate) max_variables: Option<usize>,
    pub(crate) max_rows: Option<usize>,
    pub(crate) variables: BTreeMap<String, String>,
    pub(crate) rows: Vec<EmittedRow>,
    pub(crate) stdout: Vec<String>,
    pub(crate) stderr: Vec<String>,
}

/// What [`exit`] unwinds with inside a harness; the harness catches it and reads the code.
pub(crate) struct ExitSignal(pub(crate) i32);

thread_local! {
    static ACTIVE: RefCell<Option<FakeHost>> = const { RefCell::new(None) };
}

/// Makes `host` the state the calls on this thread see. Panics if one is already installed.
pub(crate) fn install(host: FakeHost) {
    ACTIVE.with(|active| {
        let mut active = active.borrow_mut();
        assert!(
            active.is_none(),
            "a wharf_guest::testing::Harness is already running on this thread"
        );
        *active = Some(host);
    });
}

/// Removes and returns the installed state.
pub(crate) fn uninstall() -> Option<FakeHost> {
    ACTIVE.with(|active| active.borrow_mut().take())
}

/// Runs `f` on the installed state, or returns `None` outside a harness.
fn with_active<R>(f: impl FnOnce(&mut FakeHost) -> R) -> Option<R> {
    ACTIVE.with(|active| active.borrow_mut().as_mut().map(f))
}

pub(crate) fn set_var(name: &[u8], value: &[u8]) -> i32 {
    let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else {
        return -1;
    };
    if !super::is_valid_var_name(name) {
        return -1;
    }
    with_active(|host| {
        let is_new = !host.variables.contains_key(name);
        if is_new
            && host
                .max_variables
                .is_some_and(|max| host.variables.len() >= max)
        {
            return -2;
        }
        host.variables.insert(name.to_owned(), value.to_owned());
        0
    })
    .unwrap_or_else(|| {
        eprintln!("[wharf] set_var {name} = {value:?}");
        0
    })
}

pub(crate) fn emit(json: &[u8]) -> i32 {
    let Some(row) = parse_row(json) else {
        return -1;
    };
    with_active(|host| {
        if host.max_rows.is_some_and(|max| host.rows.len() >= max) {
            return -2;
        }
        host.rows.push(row.clone());
        0
    })
    .unwrap_or_else(|| {
        eprintln!("[wharf] emit {}", String::from_utf8_lossy(json));
        0
    })
}

/// The host's reading of an emitted value: `{"data":{…},"operation":…,"primary_key":…}` when a
/// `data` key is present, otherwise the whole object is the data.
fn parse_row(json: &[u8]) -> Option<EmittedRow> {
    let Value::Object(mut object) = serde_json::from_slice(json).ok()? else {
        return None;
    };
    if !object.contains_key("data") {
        return Some(EmittedRow {
            data: object,
            operation: None,
            primary_key: None,
        });
    }
    let Value::Object(data) = object.remove("data")? else {
        return None;
    };
    let text = |value: Option<Value>| match value {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(text)) => Some(Some(text)),
        Some(_) => None,
    };
    let operation = text(object.remove("operation"))?;
    let primary_key = text(object.remove("primary_key"))?;
    Some(EmittedRow {
        data,
        operation,
        primary_key,
    })
}

pub(crate) fn request(buf: &mut [u8]) -> i32 {
    let json = with_active(|host| host.request_json.clone())
        .unwrap_or_else(|| request_from_env(&environment()));
    let Ok(len) = i32::try_from(json.len()) else {
        return -1;
    };
    if json.len() <= buf.len() {
        buf[..json.len()].copy_from_slice(&json);
    }
    len
}

/// Outside a harness there are no headers; build what the environment can tell.
fn request_from_env(env: &BTreeMap<String, String>) -> Vec<u8> {
    let field = |name: &str| Value::String(env.get(name).cloned().unwrap_or_default());
    let mut meta = Map::new();
    meta.insert("id".into(), field("WHARF_REQUEST_ID"));
    meta.insert("method".into(), field("WHARF_METHOD"));
    meta.insert("content_type".into(), field("WHARF_CONTENT_TYPE"));
    meta.insert("headers".into(), Value::Object(Map::new()));
    meta.insert("query".into(), Value::Object(Map::new()));
    Value::Object(meta).to_string().into_bytes()
}

pub(crate) fn read_body() -> io::Result<Vec<u8>> {
    if let Some(body) = with_active(|host| host.body.clone()) {
        return Ok(body);
    }
    let mut body = Vec::new();
    io::stdin().read_to_end(&mut body)?;
    Ok(body)
}

pub(crate) fn environment() -> BTreeMap<String, String> {
    with_active(|host| host.env.clone()).unwrap_or_else(|| {
        std::env::vars_os()
            .map(|(name, value)| {
                (
                    name.to_string_lossy().into_owned(),
                    value.to_string_lossy().into_owned(),
                )
            })
            .collect()
    })
}

pub(crate) fn write_line(stream: Stream, line: &str) {
    let captured = with_active(|host| match stream {
        Stream::Stdout => host.stdout.push(line.to_owned()),
        Stream::Stderr => host.stderr.push(line.to_owned()),
    });
    if captured.is_none() {
        // As on wasm: a closed pipe drops the line rather than failing the vessel.
        let _ = match stream {
            Stream::Stdout => writeln!(io::stdout(), "{line}"),
            Stream::Stderr => writeln!(io::stderr(), "{line}"),
        };
    }
}

pub(crate) fn exit(code: i32) -> ! {
    if with_active(|_| ()).is_some() {
        // `resume_unwind` skips the panic hook, so a deliberate exit prints no panic message.
        std::panic::resume_unwind(Box::new(ExitSignal(code)));
    }
    std::process::exit(code)
}
