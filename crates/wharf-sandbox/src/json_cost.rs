//! What a JSON text costs once parsed, found without parsing it into values.
//!
//! A `serde_json::Value` takes far more memory than its text: `[0,0,0,…]` is two bytes per
//! element as text and a whole `Value` (tens of bytes) per element parsed. A row a guest hands
//! over is measured here first, by a pass that allocates nothing, and charged before it is
//! materialised, so that parsing never costs more than a small multiple of what was admitted.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Bytes one parsed value takes, besides the text of its strings.
const VALUE: u64 = std::mem::size_of::<serde_json::Value>() as u64;
/// Bytes one object key takes, besides its text.
const KEY: u64 = std::mem::size_of::<String>() as u64;

/// The memory `serde_json::from_slice::<Value>(text)` would hold at least: every value, object
/// key and string byte (arrays may hold up to twice that while they grow). Errors where the
/// text is not one JSON value, or nests deeper than serde_json's limit of 128.
pub(crate) fn parsed_cost(text: &[u8]) -> Result<u64, serde_json::Error> {
    let mut cost = 0u64;
    let mut de = serde_json::Deserializer::from_slice(text);
    Tally(&mut cost).deserialize(&mut de)?;
    de.end()?;
    Ok(cost)
}

/// Adds the cost of one value to its total.
struct Tally<'a>(&'a mut u64);

impl<'de> DeserializeSeed<'de> for Tally<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Tally<'_> {
    fn add(self, bytes: u64) {
        *self.0 = self.0.saturating_add(VALUE).saturating_add(bytes);
    }
}

impl<'de> Visitor<'de> for Tally<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.add(0);
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.add(0);
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.add(0);
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.add(0);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.add(0);
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.add(v.len() as u64);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let total = self.0;
        *total = total.saturating_add(VALUE);
        while seq.next_element_seed(Tally(&mut *total))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let total = self.0;
        *total = total.saturating_add(VALUE);
        while map.next_key_seed(Tally(&mut *total))?.is_some() {
            // The key was counted as a string value; a key is a `String` beside its value.
            *total = total.saturating_add(KEY).saturating_sub(VALUE);
            map.next_value_seed(Tally(&mut *total))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_value_and_string_byte() {
        assert_eq!(parsed_cost(b"0").unwrap(), VALUE);
        assert_eq!(parsed_cost(b"\"abc\"").unwrap(), VALUE + 3);
        assert_eq!(parsed_cost(b"[0,0,0]").unwrap(), 4 * VALUE);
        assert_eq!(
            parsed_cost(br#"{"ab":[1,"x"]}"#).unwrap(),
            4 * VALUE + KEY + 3
        );
    }

    #[test]
    fn a_dense_array_costs_many_times_its_text() {
        let text = format!("[{}0]", "0,".repeat(100_000));
        let cost = parsed_cost(text.as_bytes()).unwrap();
        assert!(
            cost >= 8 * text.len() as u64,
            "{cost} for {} bytes",
            text.len()
        );
    }

    #[test]
    fn refuses_what_is_not_one_json_value() {
        assert!(parsed_cost(b"[0,").is_err());
        assert!(parsed_cost(b"1 2").is_err());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(
            parsed_cost(deep.as_bytes()).is_err(),
            "serde_json's depth limit holds"
        );
    }
}
