//! How a body is understood: JSON, form-urlencoded or opaque. One place decides, so that the
//! variable override, the Rhai `payload` and the docs agree.

use serde_json::{Map, Value};

/// The shape a body was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// A JSON document.
    Json,
    /// `application/x-www-form-urlencoded` fields.
    Form,
    /// Anything else: text or binary.
    Raw,
}

/// A parsed body; `T` is what JSON becomes (a `serde_json::Value` by default, a Rhai `Dynamic`
/// inside the Rhai runner, so the body is parsed once, straight into the form that is used).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload<T = Value> {
    /// A JSON value.
    Json(T),
    /// Form fields, in order; a repeated name keeps its last value in maps.
    Form(Vec<(String, String)>),
    /// Not structured.
    Raw,
}

/// What a JSON body is parsed into by [`Payload::parse`]: a [`Value`] for variable overrides.
/// A runner with its own value type (a Rhai `Dynamic`) parses through [`Payload::parse_with`];
/// both hold the same document: where a `Dynamic` cannot hold a number exactly, the `Value`
/// holds what the `Dynamic` does.
pub trait JsonForm: serde::de::DeserializeOwned {
    /// Brings a freshly parsed document to the form both agree on.
    fn settle(self) -> Self;
}

impl JsonForm for Value {
    /// An integer past `i64::MAX` becomes the nearest float, as it does in a Rhai script (whose
    /// integers are `i64`).
    fn settle(mut self) -> Self {
        widen_past_i64(&mut self);
        self
    }
}

/// Replaces every integer above `i64::MAX` with the nearest float. Depth is bounded by
/// serde_json's recursion limit.
fn widen_past_i64(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_u64() && !n.is_i64() => {
            if let Some(f) = n.as_f64().and_then(serde_json::Number::from_f64) {
                *n = f;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(widen_past_i64),
        Value::Object(map) => map.values_mut().for_each(widen_past_i64),
        _ => {}
    }
}

impl<T: JsonForm> Payload<T> {
    /// Parses a body (see [`Payload::parse_with`]), JSON into `T`.
    pub fn parse(content_type: &str, body: &[u8]) -> Payload<T> {
        Payload::parse_with(content_type, body, |bytes| {
            serde_json::from_slice::<T>(bytes)
                .ok()
                .map(JsonForm::settle)
        })
    }
}

impl<T> Payload<T> {
    /// Parses a body, JSON through `json` (`None`: not JSON after all). JSON is recognised by a
    /// JSON content type, or — because `curl -d` labels everything as a form — by a body that
    /// starts like a JSON object or array and parses as one. Form bodies need the form content
    /// type. Everything else is raw.
    pub fn parse_with(
        content_type: &str,
        body: &[u8],
        json: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Payload<T> {
        let ct = content_type.to_ascii_lowercase();
        let looks_json = body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{' || *b == b'[');
        if (ct.contains("json") || looks_json)
            && let Some(v) = json(body)
        {
            return Payload::Json(v);
        }
        if ct.starts_with("application/x-www-form-urlencoded") {
            return Payload::Form(
                form_urlencoded::parse(body)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
            );
        }
        Payload::Raw
    }
}

impl Payload {
    /// The kind recognised.
    pub fn kind(&self) -> PayloadKind {
        match self {
            Payload::Json(_) => PayloadKind::Json,
            Payload::Form(_) => PayloadKind::Form,
            Payload::Raw => PayloadKind::Raw,
        }
    }

    /// The top-level object of a JSON-object body, which overrides declared variables.
    pub fn object(&self) -> Option<&Map<String, Value>> {
        match self {
            Payload::Json(Value::Object(map)) => Some(map),
            _ => None,
        }
    }
}

/// The string form of a JSON value as a variable: strings as they are, everything else as JSON.
pub fn value_to_var(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_style_json_under_form_type_is_json() {
        let p: Payload = Payload::parse("application/x-www-form-urlencoded", br#"{"a":1}"#);
        assert_eq!(p.object().unwrap()["a"], 1);
    }

    #[test]
    fn form_fields_are_decoded() {
        let p: Payload = Payload::parse("application/x-www-form-urlencoded", b"a=1+2&b=%2F");
        assert_eq!(
            p,
            Payload::Form(vec![("a".into(), "1 2".into()), ("b".into(), "/".into())])
        );
    }

    #[test]
    fn broken_json_is_raw() {
        assert_eq!(
            Payload::<Value>::parse("application/json", b"{nope").kind(),
            PayloadKind::Raw
        );
        assert_eq!(
            Payload::<Value>::parse("", &[0xff, 0, 1]).kind(),
            PayloadKind::Raw
        );
    }
}
