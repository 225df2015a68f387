//! Turning submitted schema text into the form that identifies a schema.
//!
//! Two texts are the same schema when they are the same JSON: layout and the order of object
//! keys do not matter (Confluent, which compares parsed schemas, agrees). The fingerprint is the
//! SHA-256 of a key-sorted compact serialization, unique in the store. What the registry stores
//! and serves is the first submission with its whitespace removed and its key order kept, so
//! GET /schemas/ids/{id} returns what the producer wrote, minus the layout.

use apache_avro::Schema;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A submitted Avro schema that parsed, in its identifying form.
#[derive(Debug)]
pub(crate) struct CanonicalSchema {
    /// Compact JSON text; this is what the registry stores and serves.
    pub(crate) text: String,
    /// Lowercase hex SHA-256 of the key-sorted compact JSON; unique in the store.
    pub(crate) fingerprint: String,
    /// The parsed schema, for compatibility checks.
    pub(crate) parsed: Schema,
}

impl CanonicalSchema {
    /// Validates `raw` as JSON and as Avro and computes its identifying form.
    ///
    /// The error is the reason, worded for the Confluent 42201 message.
    pub(crate) fn parse(raw: &str) -> Result<Self, String> {
        let json: Value =
            serde_json::from_str(raw).map_err(|e| format!("schema is not valid JSON: {e}"))?;
        let parsed = Schema::parse(&json).map_err(|e| format!("schema is not valid Avro: {e}"))?;
        let mut sorted = String::with_capacity(raw.len());
        write_sorted(&json, &mut sorted);
        Ok(Self {
            text: compact_json(raw),
            fingerprint: fingerprint(&sorted),
            parsed,
        })
    }
}

/// Parses stored text; stored text was validated when it was registered.
pub(crate) fn parse_stored(text: &str) -> Result<Schema, String> {
    Schema::parse_str(text).map_err(|e| format!("stored schema does not parse: {e}"))
}

/// Lowercase hex SHA-256 of the text.
fn fingerprint(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(byte & 0x0f), 16).unwrap_or('0'));
    }
    hex
}

/// JSON text (already validated) with insignificant whitespace removed.
///
/// Done on the text rather than through `serde_json::Value` so that key order and string
/// escapes stay as submitted.
fn compact_json(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in raw.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            // Only these four are whitespace in JSON; anything else outside a string is
            // significant.
            out.push(c);
        }
    }
    out
}

/// Compact JSON with object keys sorted at every level, whatever order `Value` keeps its keys
/// in (serde_json's `preserve_order` feature may be switched on by any crate in the build).
fn write_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_sorted(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_does_not_change_the_identity() {
        let a = CanonicalSchema::parse(
            r#"{"type":"record","name":"A","fields":[{"name":"f","type":"string"}]}"#,
        )
        .unwrap();
        let b = CanonicalSchema::parse(
            "{\n  \"type\" : \"record\",\n\t\"name\": \"A\",\r\n  \"fields\": [ { \"name\": \"f\", \
             \"type\": \"string\" } ]\n}\n",
        )
        .unwrap();
        assert_eq!(a.text, b.text);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 64);
    }

    #[test]
    fn key_order_does_not_change_the_identity_but_is_kept_in_the_text() {
        let a = CanonicalSchema::parse(r#"{"type":"fixed","name":"F","size":4}"#).unwrap();
        let b = CanonicalSchema::parse(r#"{"size": 4, "name": "F", "type": "fixed"}"#).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(b.text, r#"{"size":4,"name":"F","type":"fixed"}"#);
        let mut sorted = String::new();
        write_sorted(
            &serde_json::json!({"b": [{"d": 1, "c": "\"x\""}], "a": null}),
            &mut sorted,
        );
        assert_eq!(sorted, r#"{"a":null,"b":[{"c":"\"x\"","d":1}]}"#);
    }

    #[test]
    fn whitespace_inside_strings_and_escapes_are_kept() {
        let compact = compact_json(r#"{ "doc" : "two  words \" and a quote", "a": [1, 2] }"#);
        assert_eq!(compact, r#"{"doc":"two  words \" and a quote","a":[1,2]}"#);
        let compact = compact_json(r#"{"z": 1, "a": "\\", "m": " x "}"#);
        assert_eq!(compact, r#"{"z":1,"a":"\\","m":" x "}"#);
    }

    #[test]
    fn different_docs_are_different_schemas() {
        let a = CanonicalSchema::parse(r#"{"type":"fixed","name":"F","size":4,"doc":"a"}"#);
        let b = CanonicalSchema::parse(r#"{"type":"fixed","name":"F","size":4,"doc":"b"}"#);
        assert_ne!(a.unwrap().fingerprint, b.unwrap().fingerprint);
    }

    #[test]
    fn invalid_json_and_invalid_avro_are_rejected_with_a_reason() {
        let err = CanonicalSchema::parse("{not json").unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        let err = CanonicalSchema::parse(r#"{"type":"record","name":"A"}"#).unwrap_err();
        assert!(err.contains("not valid Avro"), "{err}");
        let err = CanonicalSchema::parse(r#""no_such_type""#).unwrap_err();
        assert!(err.contains("not valid Avro"), "{err}");
    }

    #[test]
    fn primitive_schemas_are_accepted() {
        let s = CanonicalSchema::parse(" \"string\" ").unwrap();
        assert_eq!(s.text, "\"string\"");
        assert_eq!(s.parsed, Schema::String);
    }

    #[test]
    fn fingerprint_is_sha256_hex() {
        assert_eq!(
            fingerprint(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
