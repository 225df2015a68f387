use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Event, EventMeta, SchemaId};

/// Where a record was read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Coordinates {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A decoded, validated event with everything the pipeline needs to apply it once.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Validated envelope fields.
    pub meta: EventMeta,
    /// The typed event.
    pub event: Event,
    /// Writer schema id.
    pub schema_id: SchemaId,
    /// SHA-256 of the event's canonical form (see [`payload_hash`]).
    pub payload_hash: [u8; 32],
    /// Source coordinates.
    pub coordinates: Coordinates,
    /// The W3C trace id of the record's `traceparent` header, when it carried one (set by the
    /// runtime; kept with the audit row and the effects for lineage).
    pub trace_id: Option<String>,
}

impl Envelope {
    /// Wraps a decoded event, computing its payload hash.
    pub fn new(
        meta: EventMeta,
        event: Event,
        schema_id: SchemaId,
        coordinates: Coordinates,
    ) -> Self {
        let payload_hash = payload_hash(&event);
        Self {
            meta,
            event,
            schema_id,
            payload_hash,
            coordinates,
            trace_id: None,
        }
    }
}

/// The trace id (32 lowercase hex digits) of a W3C `traceparent` header value
/// (`VERSION-TRACEID-PARENTID-FLAGS`), or none when it is not one.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    let valid = trace.len() == 32
        && trace.bytes().all(|b| b.is_ascii_hexdigit())
        && trace.bytes().any(|b| b != b'0');
    valid.then(|| trace.to_ascii_lowercase())
}

/// SHA-256 over the canonical JSON of the decoded event.
///
/// Hashing the decoded event rather than the bytes means the same business event written by a
/// v1 and a v2 producer (same values, different schema ids and encodings) is recognised as the
/// same payload, while any change of a value is an idempotency conflict.
pub fn payload_hash(event: &Event) -> [u8; 32] {
    // Serializing derived structs of strings and integers to JSON cannot fail.
    let json = serde_json::to_vec(event).unwrap_or_default();
    Sha256::digest(&json).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        assert_eq!(
            trace_id_of("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id_of("00-xyz-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id_of(""), None);
    }
}
