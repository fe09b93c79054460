#!/usr/bin/env node
// run-vessel.mjs — a small reference host for wharf Wasm vessels, on Node's WASI preview 1.
//
// It implements the guest ABI (stdin = body, argv = [vessel], env = variables + WHARF_* ids,
// imports "wharf".set_var / emit / request) closely enough to check guests without the wharf
// server. It is a test tool, not the product: no fuel, memory or time limits.
//
//   node scripts/run-vessel.mjs VESSEL.wasm [--body FILE] [--content-type CT] [--method M]
//        [--var NAME=VALUE]... [--header NAME=VALUE]... [--query NAME=VALUE]... [--name VESSEL]
//     runs one vessel and prints {"exit_code","variables","rows","stdout","stderr"} as JSON.
//
//   node scripts/run-vessel.mjs --check-module FILE.wasm...
//     checks that each module is a WASI p1 command the host accepts: exports `_start` and
//     `memory`, imports only from `wasi_snapshot_preview1` and `wharf`; exits 1 otherwise.
//
//   node scripts/run-vessel.mjs --check-example DIR
//     runs the Wasm vessels of DIR/fleet.json in order on DIR/payload.* and compares with
//     DIR/expected.json; exits 1 on a mismatch, 2 when the fleet has a non-Wasm vessel.

import { WASI } from "node:wasi";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

// Node flags WASI as experimental on every run; the warning is noise for this tool.
process.removeAllListeners("warning");

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Runs one vessel module; returns what it did. */
export function runVessel(wasmBytes, { body = new Uint8Array(), name = "vessel", method = "POST",
  contentType = "", variables = {}, headers = {}, query = {}, ids = {} } = {}) {
  const requestId = ids.request_id ?? "req_local";
  const env = {
    ...variables,
    WHARF_REQUEST_ID: requestId,
    WHARF_FLEET_RUN_ID: ids.fleet_run_id ?? "run_local",
    WHARF_FLEET_ID: ids.fleet_id ?? "fleet_local",
    WHARF_PROJECT_ID: ids.project_id ?? "project_local",
    WHARF_ORG_ID: ids.org_id ?? "org_local",
    WHARF_VESSEL: name,
    WHARF_ATTEMPT: String(ids.attempt ?? 1),
    WHARF_METHOD: method,
    WHARF_CONTENT_TYPE: contentType,
  };
  const lowerHeaders = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  const meta = Buffer.from(JSON.stringify({ id: requestId, method, content_type: contentType, headers: lowerHeaders, query }));

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wharf-vessel-"));
  const files = { stdin: path.join(dir, "stdin"), stdout: path.join(dir, "stdout"), stderr: path.join(dir, "stderr") };
  fs.writeFileSync(files.stdin, body);
  const fds = { stdin: fs.openSync(files.stdin, "r"), stdout: fs.openSync(files.stdout, "w"), stderr: fs.openSync(files.stderr, "w") };

  const set = {};
  const rows = [];
  let memory;
  const bytes = (ptr, len) => {
    const view = new Uint8Array(memory.buffer);
    if (ptr < 0 || len < 0 || ptr + len > view.length) throw new WebAssembly.RuntimeError("wharf: pointer out of bounds");
    return view.subarray(ptr, ptr + len);
  };
  const wharf = {
    set_var(namePtr, nameLen, valuePtr, valueLen) {
      let name, value;
      try {
        name = utf8.decode(bytes(namePtr, nameLen));
        value = utf8.decode(bytes(valuePtr, valueLen));
      } catch (e) {
        if (e instanceof WebAssembly.RuntimeError) throw e;
        return -1;
      }
      if (!NAME_RE.test(name) || nameLen > 128) return -1;
      set[name] = value;
      return 0;
    },
    emit(ptr, len) {
      let value;
      try {
        value = JSON.parse(utf8.decode(bytes(ptr, len)));
      } catch (e) {
        if (e instanceof WebAssembly.RuntimeError) throw e;
        return -1;
      }
      if (value === null || typeof value !== "object" || Array.isArray(value)) return -1;
      if (!("data" in value)) { rows.push({ data: value }); return 0; }
      const { data, operation, primary_key } = value;
      if (data === null || typeof data !== "object" || Array.isArray(data)) return -1;
      for (const field of [operation, primary_key]) if (field != null && typeof field !== "string") return -1;
      rows.push({ data, ...(operation != null && { operation }), ...(primary_key != null && { primary_key }) });
      return 0;
    },
    request(ptr, len) {
      if (len >= meta.length) bytes(ptr, meta.length).set(meta);
      return meta.length;
    },
  };

  const wasi = new WASI({ version: "preview1", args: [name], env, stdin: fds.stdin, stdout: fds.stdout, stderr: fds.stderr, returnOnExit: true });
  const module = new WebAssembly.Module(wasmBytes);
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.module !== "wasi_snapshot_preview1" && imp.module !== "wharf") throw new Error(`import outside WASI p1 and wharf: ${imp.module}.${imp.name}`);
  }
  const instance = new WebAssembly.Instance(module, { wasi_snapshot_preview1: wasi.wasiImport, wharf });
  memory = instance.exports.memory;
  let exitCode, trap = null;
  try {
    exitCode = wasi.start(instance);
  } catch (e) {
    trap = String(e);
    exitCode = null;
  } finally {
    for (const fd of Object.values(fds)) fs.closeSync(fd);
  }
  const outcome = {
    exit_code: exitCode, trap, variables: set, rows,
    stdout: fs.readFileSync(files.stdout, "utf8"), stderr: fs.readFileSync(files.stderr, "utf8"),
  };
  fs.rmSync(dir, { recursive: true, force: true });
  return outcome;
}

/** Runs an example folder's fleet on its payload and compares with expected.json. */
function checkExample(dir) {
  const fleet = JSON.parse(fs.readFileSync(path.join(dir, "fleet.json"), "utf8"));
  const expected = JSON.parse(fs.readFileSync(path.join(dir, "expected.json"), "utf8"));
  const payloadFile = fs.readdirSync(dir).find((f) => f.startsWith("payload."));
  const body = fs.readFileSync(path.join(dir, payloadFile));
  const contentType = fs.readFileSync(path.join(dir, "content-type"), "utf8").trim();
  const nonWasm = fleet.vessels.filter((v) => v.kind !== "wasm");
  if (nonWasm.length) {
    console.log(`${dir}: skipped, ${nonWasm.map((v) => `${v.name} is ${v.kind}`).join(", ")}`);
    return 2;
  }
  // Declared variables, overridden by top-level keys of a JSON-object body with the same names.
  const variables = { ...(fleet.variables ?? {}) };
  if (contentType.startsWith("application/json")) {
    const parsed = JSON.parse(body.toString("utf8"));
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) {
      for (const key of Object.keys(variables)) {
        if (key in parsed) variables[key] = typeof parsed[key] === "string" ? parsed[key] : JSON.stringify(parsed[key]);
      }
    }
  }
  const setByVessels = {};
  let rows = 0, exitCode = 0;
  for (const vessel of fleet.vessels) {
    const wasm = fs.readFileSync(path.join(dir, vessel.wasm_file));
    const outcome = runVessel(wasm, { body, name: vessel.name, contentType, variables });
    for (const line of outcome.stdout.split("\n").filter(Boolean)) console.log(`  [${vessel.name}] ${line}`);
    for (const line of outcome.stderr.split("\n").filter(Boolean)) console.log(`  [${vessel.name} stderr] ${line}`);
    Object.assign(variables, outcome.variables);
    Object.assign(setByVessels, outcome.variables);
    rows += outcome.rows.length;
    exitCode = outcome.exit_code ?? -1;
    if (outcome.trap) console.log(`  [${vessel.name}] trapped: ${outcome.trap}`);
    if (exitCode !== 0) break;
  }
  const actual = { exit_code: exitCode, variables: setByVessels, rows };
  const same = JSON.stringify(sortKeys(actual)) === JSON.stringify(sortKeys(expected));
  console.log(`${dir}: ${same ? "ok" : "MISMATCH"} ${JSON.stringify(actual)}`);
  if (!same) console.log(`  expected ${JSON.stringify(expected)}`);
  return same ? 0 : 1;
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys(value[k])]));
  return value;
}

/** Lists what keeps a module from being a vessel; empty when it is one. */
function moduleProblems(wasmBytes) {
  let module;
  try {
    module = new WebAssembly.Module(wasmBytes);
  } catch (e) {
    return [`does not validate: ${e.message}`];
  }
  const problems = [];
  const exports = new Map(WebAssembly.Module.exports(module).map((e) => [e.name, e.kind]));
  if (exports.get("_start") !== "function") problems.push("no exported function `_start`");
  if (exports.get("memory") !== "memory") problems.push("no exported `memory`");
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.module !== "wasi_snapshot_preview1" && imp.module !== "wharf") problems.push(`imports ${imp.module}.${imp.name}`);
    if (imp.module === "wharf" && !["set_var", "emit", "request"].includes(imp.name)) problems.push(`imports unknown wharf.${imp.name}`);
  }
  return problems;
}

function main(argv) {
  if (argv[0] === "--check-module") {
    for (const file of argv.slice(1)) {
      const problems = moduleProblems(fs.readFileSync(file));
      const wharf = WebAssembly.Module.imports(new WebAssembly.Module(fs.readFileSync(file))).filter((i) => i.module === "wharf").map((i) => i.name);
      console.log(`${file}: ${problems.length ? "NOT A VESSEL: " + problems.join("; ") : `ok (wharf imports: ${wharf.join(", ") || "none"})`}`);
      if (problems.length) process.exitCode = 1;
    }
    return;
  }
  if (argv[0] === "--check-example") {
    process.exitCode = checkExample(argv[1]);
    return;
  }
  const options = { variables: {}, headers: {}, query: {} };
  let wasmPath;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const pair = () => { const [k, ...v] = argv[++i].split("="); return [k, v.join("=")]; };
    if (arg === "--body") options.body = fs.readFileSync(argv[++i]);
    else if (arg === "--content-type") options.contentType = argv[++i];
    else if (arg === "--method") options.method = argv[++i];
    else if (arg === "--name") options.name = argv[++i];
    else if (arg === "--var") { const [k, v] = pair(); options.variables[k] = v; }
    else if (arg === "--header") { const [k, v] = pair(); options.headers[k] = v; }
    else if (arg === "--query") { const [k, v] = pair(); options.query[k] = v; }
    else if (!wasmPath) wasmPath = arg;
    else throw new Error(`unexpected argument ${arg}`);
  }
  if (!wasmPath) {
    console.error("usage: run-vessel.mjs VESSEL.wasm [--body FILE] [--content-type CT] [--var K=V]... | --check-example DIR");
    process.exitCode = 64;
    return;
  }
  console.log(JSON.stringify(runVessel(fs.readFileSync(wasmPath), options), null, 2));
}

main(process.argv.slice(2));
