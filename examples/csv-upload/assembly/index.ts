// csv-upload: a text/csv body becomes one emitted row per data line, keyed by the header line.
// Sets `row_count`. A line with the wrong number of fields fails the vessel with exit 65.
import { emit, env, jsonString, log, logError, readText, setVar } from "../../../guest-sdk/templates/assemblyscript/assembly/wharf";
import { parseCsv } from "./csv";

const EX_DATAERR = 65;

const records = parseCsv(readText());
if (records.length == 0) {
  logError("empty CSV: expected a header line");
  process.exit(EX_DATAERR);
}

const columns = records[0];
const idColumn = columns.indexOf("id");
let emitted = 0;
for (let r = 1; r < records.length; r++) {
  const fields = records[r];
  if (fields.length != columns.length) {
    logError("record " + r.toString() + " has " + fields.length.toString() + " fields, the header has " + columns.length.toString());
    process.exit(EX_DATAERR);
  }
  let data = "{";
  for (let c = 0; c < columns.length; c++) {
    if (c > 0) data += ",";
    data += jsonString(columns[c]) + ":" + jsonString(fields[c]);
  }
  data += "}";
  let row = "{\"data\":" + data + ",\"operation\":\"added\"";
  if (idColumn >= 0) row += ",\"primary_key\":" + jsonString(fields[idColumn]);
  row += "}";
  const status = emit(row);
  if (status != 0) {
    logError("emit refused record " + r.toString() + ": status " + status.toString());
    process.exit(1);
  }
  emitted++;
}

if (setVar("row_count", emitted.toString()) != 0) {
  logError("set_var refused");
  process.exit(1);
}
log(env("WHARF_VESSEL") + ": " + emitted.toString() + " rows with columns " + columns.join(", "));
