//! The row a vessel emits: `{"data": {…}, "operation": "added", "primary_key": "…"}`.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::Result;

/// A row to emit with [`emit_row`](crate::emit_row): an object of data plus an optional
/// operation (e.g. `"added"`) and primary key, delivered to the fleet's destinations.
///
/// ```
/// use wharf_guest::Row;
///
/// let row = Row::new().field("id", 7).field("name", "alice").operation("added").primary_key(7);
/// assert_eq!(
///     wharf_guest::serde_json::to_string(&row).unwrap(),
///     r#"{"data":{"id":7,"name":"alice"},"operation":"added","primary_key":"7"}"#
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    data: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_key: Option<String>,
}

impl Row {
    /// A row with empty data.
    ///
    /// ```
    /// let row = wharf_guest::Row::new();
    /// assert_eq!(wharf_guest::serde_json::to_string(&row).unwrap(), r#"{"data":{}}"#);
    /// ```
    pub fn new() -> Self {
        Row::default()
    }

    /// A row whose data is `data` serialized; it must serialize to a JSON object.
    ///
    /// # Errors
    ///
    /// `data` fails to serialize or is not an object.
    ///
    /// ```
    /// #[derive(serde::Serialize)]
    /// struct Commit<'a> { id: &'a str, message: &'a str }
    ///
    /// let row = wharf_guest::Row::from_data(&Commit { id: "abc", message: "fix" }).unwrap();
    /// assert!(wharf_guest::Row::from_data(&[1, 2]).is_err());
    /// # let _ = row;
    /// ```
    pub fn from_data<T: Serialize + ?Sized>(data: &T) -> Result<Self> {
        match serde_json::to_value(data)? {
            Value::Object(data) => Ok(Row {
                data,
                ..Row::default()
            }),
            other => Err(crate::Error::msg(format!(
                "row data must be a JSON object, not {other}"
            ))),
        }
    }

    /// Adds (or replaces) one field of the data.
    ///
    /// ```
    /// let row = wharf_guest::Row::new().field("amount", 2000).field("paid", true);
    /// # let _ = row;
    /// ```
    #[must_use]
    pub fn field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.data.insert(name.into(), value.into());
        self
    }

    /// Sets the operation, e.g. `"added"`, `"updated"` or `"deleted"`.
    ///
    /// ```
    /// let row = wharf_guest::Row::new().operation("updated");
    /// # let _ = row;
    /// ```
    #[must_use]
    pub fn operation(mut self, operation: impl Into<String>) -> Self {
        self.operation = Some(operation.into());
        self
    }

    /// Sets the primary key (stored as its string form).
    ///
    /// ```
    /// let row = wharf_guest::Row::new().primary_key(42);
    /// # let _ = row;
    /// ```
    #[must_use]
    pub fn primary_key(mut self, key: impl std::fmt::Display) -> Self {
        self.primary_key = Some(key.to_string());
        self
    }
}
