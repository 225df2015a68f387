use ledgerflow_core::{EventType, Failure, ReasonCode, SchemaId, error_chain};

/// Everything that can go wrong turning bytes into a typed event or back.
///
/// Each variant is classified where it is defined (see [`CodecError::failure`]): the registry
/// being unreachable is retryable, everything about the bytes themselves is permanent.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Shorter than the Confluent header.
    #[error("value is {len} bytes, shorter than the 5-byte confluent header")]
    TruncatedHeader {
        /// Length of the value.
        len: usize,
    },
    /// Wrong magic byte.
    #[error("magic byte is {found:#04x}, expected 0x00 (confluent wire format)")]
    UnsupportedMagic {
        /// The byte found.
        found: u8,
    },
    /// Over the size limit.
    #[error("value is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Length of the value.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// The registry answered that the id does not exist.
    #[error("schema id {id} is not known to the schema registry")]
    UnknownSchemaId {
        /// The id.
        id: SchemaId,
    },
    /// The registry returned something that is not an Avro schema.
    #[error("schema id {id} is not a valid avro schema")]
    InvalidSchema {
        /// The id.
        id: SchemaId,
        /// Parser error.
        #[source]
        source: Box<apache_avro::Error>,
    },
    /// The registry returned a schema of another type (PROTOBUF, JSON).
    #[error("schema id {id} has schema type {schema_type}, only AVRO is supported")]
    UnsupportedSchemaType {
        /// The id.
        id: SchemaId,
        /// The type the registry named.
        schema_type: String,
    },
    /// The writer record is not a ledgerflow event.
    #[error("schema id {id} describes {name}, which is not a ledgerflow event type")]
    UnknownEventType {
        /// The id.
        id: SchemaId,
        /// Full name of the writer record.
        name: String,
    },
    /// Writer and reader schema cannot be resolved.
    #[error(
        "schema id {id} ({event_type}) cannot be read with ledgerflow's reader schema: {detail}"
    )]
    SchemaResolution {
        /// The id.
        id: SchemaId,
        /// The event type.
        event_type: EventType,
        /// What does not resolve.
        detail: String,
    },
    /// The Avro body does not decode with its writer schema.
    #[error("avro body for schema id {id} does not decode")]
    AvroDecode {
        /// The id.
        id: SchemaId,
        /// Decoder error.
        #[source]
        source: Box<apache_avro::Error>,
    },
    /// Bytes left after the record.
    #[error("avro body for schema id {id} has {trailing} trailing bytes after the record")]
    TrailingBytes {
        /// The id.
        id: SchemaId,
        /// How many bytes were left.
        trailing: usize,
    },
    /// The Avro decoder panicked on this input; caught and reported as a decode failure.
    #[error("avro decoder failed on schema id {id}: {detail}")]
    DecoderPanic {
        /// The id.
        id: SchemaId,
        /// Panic message.
        detail: String,
    },
    /// A schema found unusable earlier (remembered in the cache), repeated with its reason.
    #[error("schema id {id} cannot be used: {detail}")]
    SchemaUnusable {
        /// The id.
        id: SchemaId,
        /// Reason found when the schema was first resolved.
        reason: ReasonCode,
        /// The original error text.
        detail: String,
    },
    /// The decoded event breaks a business rule.
    #[error("event fails validation: {0}")]
    Validation(String),
    /// Network or server failure talking to the registry.
    #[error("schema registry request to {url} failed")]
    RegistryUnavailable {
        /// The URL called.
        url: String,
        /// Transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an error status that is not "not found".
    #[error("schema registry answered {status} for {url}: {body}")]
    RegistryStatus {
        /// HTTP status.
        status: u16,
        /// The URL called.
        url: String,
        /// Response body.
        body: String,
    },
    /// Encoding an event failed (a producer-side bug or a schema mismatch).
    #[error("cannot encode {event_type} with writer schema version {version}")]
    Encode {
        /// The event type.
        event_type: EventType,
        /// Writer version.
        version: u8,
        /// Encoder error.
        #[source]
        source: Box<apache_avro::Error>,
    },
    /// No writer schema of that version exists.
    #[error("no writer schema version {version} for {event_type}")]
    NoSuchWriterVersion {
        /// The event type.
        event_type: EventType,
        /// Writer version asked for.
        version: u8,
    },
}

impl CodecError {
    /// Retryable or permanent, and with which reason code.
    pub fn failure(&self) -> Failure {
        let reason = match self {
            Self::TruncatedHeader { .. } => ReasonCode::TruncatedHeader,
            Self::UnsupportedMagic { .. } => ReasonCode::UnsupportedMagic,
            Self::TooLarge { .. } => ReasonCode::TooLarge,
            Self::UnknownSchemaId { .. } => ReasonCode::UnknownSchemaId,
            Self::InvalidSchema { .. } | Self::UnsupportedSchemaType { .. } => {
                ReasonCode::InvalidSchema
            }
            Self::UnknownEventType { .. } => ReasonCode::UnknownEventType,
            Self::SchemaResolution { .. } => ReasonCode::SchemaResolution,
            Self::AvroDecode { .. } | Self::TrailingBytes { .. } | Self::DecoderPanic { .. } => {
                ReasonCode::AvroDecode
            }
            Self::SchemaUnusable { reason, .. } => *reason,
            Self::Validation(_) => ReasonCode::Validation,
            // 4xx other than "not found" (auth, bad request) will not fix themselves either, but
            // they say nothing about this record: retrying keeps the partition paused and visible
            // instead of dead-lettering every record while credentials are wrong.
            Self::RegistryUnavailable { .. } | Self::RegistryStatus { .. } => {
                return Failure::retryable(error_chain(self));
            }
            Self::Encode { .. } | Self::NoSuchWriterVersion { .. } => ReasonCode::Validation,
        };
        Failure::permanent(reason, error_chain(self))
    }
}
