// A wharf AssemblyScript vessel template: reads the body, sets variables, emits a row.
import { emit, env, jsonString, log, logError, readText, requestJson, setVar } from "./wharf";

const body = readText();
log(env("WHARF_VESSEL") + " got " + body.length.toString() + " characters of " + env("WHARF_CONTENT_TYPE"));
log("request: " + requestJson());

if (setVar("received_chars", body.length.toString()) != 0) {
  logError("set_var refused");
  process.exit(1);
}

const firstLine = body.split("\n")[0];
if (setVar("first_line", firstLine) != 0) {
  logError("set_var refused");
  process.exit(1);
}

const row = "{\"data\":{\"first_line\":" + jsonString(firstLine) + "},\"operation\":\"added\"}";
if (emit(row) != 0) {
  logError("emit refused");
  process.exit(1);
}
