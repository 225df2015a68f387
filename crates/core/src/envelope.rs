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
        }
    }
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
