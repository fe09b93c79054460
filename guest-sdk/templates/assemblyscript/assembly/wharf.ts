// wharf.ts — the wharf host imports for AssemblyScript vessels, and small helpers.
//
// A vessel is a WASI preview-1 command: the body arrives on stdin, variables and WHARF_* ids
// in the environment (process.env), logs go to stdout/stderr, and process.exit(code) sets the
// exit status. @assemblyscript/wasi-shim provides those. Note that the shim's console.error
// writes "Error: …" to stdout; use logError below for stderr.

// Sets a variable for this run. Returns 0 ok, -1 invalid name/UTF-8, -2 a limit reached.
@external("wharf", "set_var")
declare function wharf_set_var(namePtr: usize, nameLen: usize, valuePtr: usize, valueLen: usize): i32;

// Emits one row as JSON. Returns 0 ok, -1 invalid JSON / not an object, -2 a limit reached.
@external("wharf", "emit")
declare function wharf_emit(jsonPtr: usize, jsonLen: usize): i32;

// Writes the request metadata JSON into the buffer and returns its length; when the buffer is
// too small nothing is written and the needed length is returned. Negative = error.
@external("wharf", "request")
declare function wharf_request(bufPtr: usize, bufLen: usize): i32;

/** Sets a variable (UTF-8 encoded for the host). Returns the host's status. */
export function setVar(name: string, value: string): i32 {
  const n = String.UTF8.encode(name);
  const v = String.UTF8.encode(value);
  return wharf_set_var(changetype<usize>(n), <usize>n.byteLength, changetype<usize>(v), <usize>v.byteLength);
}

/** Emits one row given as a JSON string. Returns the host's status. */
export function emit(json: string): i32 {
  const j = String.UTF8.encode(json);
  return wharf_emit(changetype<usize>(j), <usize>j.byteLength);
}

/** The request metadata as a JSON string, or "" if the host refused. */
export function requestJson(): string {
  const need = wharf_request(0, 0);
  if (need < 0) return "";
  const buf = new ArrayBuffer(need);
  const got = wharf_request(changetype<usize>(buf), <usize>need);
  if (got < 0 || got > need) return "";
  return String.UTF8.decode(buf.slice(0, got));
}

/** An environment variable (a run variable or a WHARF_* id), or `fallback`. */
export function env(name: string, fallback: string = ""): string {
  return process.env.has(name) ? process.env.get(name) : fallback;
}

/** Writes one line to stdout (the vessel's log). */
export function log(message: string): void {
  process.stdout.write(message + "\n");
}

/** Writes one line to stderr. */
export function logError(message: string): void {
  process.stderr.write(message + "\n");
}

/** All of stdin (the webhook body) as bytes. */
export function readBody(): ArrayBuffer {
  let buf = new ArrayBuffer(4096);
  let len = 0;
  while (true) {
    if (len == buf.byteLength) {
      const bigger = new ArrayBuffer(buf.byteLength * 2);
      memory.copy(changetype<usize>(bigger), changetype<usize>(buf), <usize>len);
      buf = bigger;
    }
    const n = process.stdin.read(buf, len);
    if (n <= 0) break;
    len += n;
  }
  return buf.slice(0, len);
}

/** All of stdin decoded as UTF-8 text. */
export function readText(): string {
  return String.UTF8.decode(readBody());
}

/** `s` as a JSON string literal, quotes included. */
export function jsonString(s: string): string {
  let out = "\"";
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c == 0x22) out += "\\\"";
    else if (c == 0x5c) out += "\\\\";
    else if (c == 0x0a) out += "\\n";
    else if (c == 0x0d) out += "\\r";
    else if (c == 0x09) out += "\\t";
    else if (c < 0x20) {
      const hex = c.toString(16);
      out += "\\u" + "0000".substring(hex.length) + hex;
    } else out += String.fromCharCode(c);
  }
  return out + "\"";
}
