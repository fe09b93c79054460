//! The real `wharf` imports and WASI stdio, for `wasm32` builds. The only `unsafe` in the SDK.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use super::Stream;

// Pointers and `usize` lengths lower to wasm `i32`, matching the host's signatures.
#[link(wasm_import_module = "wharf")]
unsafe extern "C" {
    #[link_name = "set_var"]
    fn wharf_set_var(
        name_ptr: *const u8,
        name_len: usize,
        value_ptr: *const u8,
        value_len: usize,
    ) -> i32;
    #[link_name = "emit"]
    fn wharf_emit(json_ptr: *const u8, json_len: usize) -> i32;
    #[link_name = "request"]
    fn wharf_request(buf_ptr: *mut u8, buf_len: usize) -> i32;
}

pub(crate) fn set_var(name: &[u8], value: &[u8]) -> i32 {
    // SAFETY: both pointers come from live slices with their exact lengths; the host only
    // reads that many bytes during the call and keeps no reference afterwards.
    unsafe { wharf_set_var(name.as_ptr(), name.len(), value.as_ptr(), value.len()) }
}

pub(crate) fn emit(json: &[u8]) -> i32 {
    // SAFETY: as for `set_var`: a live slice, read by the host only during the call.
    unsafe { wharf_emit(json.as_ptr(), json.len()) }
}

pub(crate) fn request(buf: &mut [u8]) -> i32 {
    // SAFETY: a live, exclusively borrowed slice; the host writes at most `buf.len()` bytes
    // into it (or none when it is too small) during the call.
    unsafe { wharf_request(buf.as_mut_ptr(), buf.len()) }
}

pub(crate) fn read_body() -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    io::stdin().read_to_end(&mut body)?;
    Ok(body)
}

pub(crate) fn environment() -> BTreeMap<String, String> {
    std::env::vars_os()
        .map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

pub(crate) fn write_line(stream: Stream, line: &str) {
    // A full or closed log pipe must not fail the vessel: the line is dropped.
    let _ = match stream {
        Stream::Stdout => writeln!(io::stdout(), "{line}"),
        Stream::Stderr => writeln!(io::stderr(), "{line}"),
    };
}

pub(crate) fn exit(code: i32) -> ! {
    std::process::exit(code)
}
