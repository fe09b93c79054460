// csv.ts — a small RFC 4180 reader: quoted fields, "" escapes, CRLF or LF line ends.

/** The records of `text`, each a list of fields; blank lines are skipped. */
export function parseCsv(text: string): Array<Array<string>> {
  const records = new Array<Array<string>>();
  let record = new Array<string>();
  let field = "";
  let quoted = false;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charAt(i);
    if (quoted) {
      if (c == "\"") {
        if (i + 1 < n && text.charAt(i + 1) == "\"") {
          field += "\"";
          i += 2;
          continue;
        }
        quoted = false;
      } else {
        field += c;
      }
      i++;
      continue;
    }
    if (c == "\"" && field.length == 0) {
      quoted = true;
    } else if (c == ",") {
      record.push(field);
      field = "";
    } else if (c == "\n" || c == "\r") {
      if (c == "\r" && i + 1 < n && text.charAt(i + 1) == "\n") i++;
      record.push(field);
      field = "";
      if (!(record.length == 1 && record[0].length == 0)) records.push(record);
      record = new Array<string>();
    } else {
      field += c;
    }
    i++;
  }
  record.push(field);
  if (!(record.length == 1 && record[0].length == 0)) records.push(record);
  return records;
}
