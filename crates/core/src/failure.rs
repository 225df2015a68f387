use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an input was rejected for good. Stored with every dead letter, used as a metric label and
/// printed by the CLI, so the set is closed and the names are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The value is shorter than the 5-byte Confluent header (magic byte + schema id).
    TruncatedHeader,
    /// The record has no value at all (a tombstone): there is no event in it.
    Tombstone,
    /// The first byte is not the Confluent magic byte 0.
    UnsupportedMagic,
    /// The registry does not know the schema id in the header.
    UnknownSchemaId,
    /// The registry returned a schema that does not parse as Avro.
    InvalidSchema,
    /// The writer schema's record is not one of the event types ledgerflow knows.
    UnknownEventType,
    /// The writer schema cannot be resolved to ledgerflow's reader schema.
    SchemaResolution,
    /// The Avro body does not decode with the writer schema (truncated, corrupt, trailing bytes).
    AvroDecode,
    /// The event decoded but breaks a business rule (bad currency, totals that do not add up).
    Validation,
    /// The value is larger than the configured maximum.
    TooLarge,
    /// The tenant is not in the tenant registry.
    UnknownTenant,
    /// Record key, header and payload name different tenants.
    TenantMismatch,
    /// The same event id arrived earlier with a different payload.
    IdempotencyConflict,
    /// A tenant's notification template cannot be rendered for the event (not valid JSON, or
    /// a placeholder the event's notification kind does not have).
    TemplateRender,
}

impl ReasonCode {
    /// Every reason code, for catalogues and exhaustive tests.
    pub const ALL: [ReasonCode; 14] = [
        Self::TruncatedHeader,
        Self::Tombstone,
        Self::UnsupportedMagic,
        Self::UnknownSchemaId,
        Self::InvalidSchema,
        Self::UnknownEventType,
        Self::SchemaResolution,
        Self::AvroDecode,
        Self::Validation,
        Self::TooLarge,
        Self::UnknownTenant,
        Self::TenantMismatch,
        Self::IdempotencyConflict,
        Self::TemplateRender,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TruncatedHeader => "truncated_header",
            Self::Tombstone => "tombstone",
            Self::UnsupportedMagic => "unsupported_magic",
            Self::UnknownSchemaId => "unknown_schema_id",
            Self::InvalidSchema => "invalid_schema",
            Self::UnknownEventType => "unknown_event_type",
            Self::SchemaResolution => "schema_resolution",
            Self::AvroDecode => "avro_decode",
            Self::Validation => "validation",
            Self::TooLarge => "too_large",
            Self::UnknownTenant => "unknown_tenant",
            Self::TenantMismatch => "tenant_mismatch",
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::TemplateRender => "template_render",
        }
    }

    /// Parses a stable name back into a code.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The classification every fallible step attaches to its error where the error is created.
///
/// The runtime, not the step, decides what to do: retry with backoff and keep the partition
/// paused for `Retryable`, dead-letter and move on for `Permanent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Likely to succeed later without any change to the input (database down, registry 5xx).
    Retryable {
        /// What failed, for logs.
        detail: String,
    },
    /// Will fail again on every retry of the same input.
    Permanent {
        /// The stable reason code.
        reason: ReasonCode,
        /// What exactly was wrong, for the dead-letter row and the operator.
        detail: String,
    },
}

impl Failure {
    /// A permanent failure with a reason code.
    pub fn permanent(reason: ReasonCode, detail: impl Into<String>) -> Self {
        Self::Permanent {
            reason,
            detail: detail.into(),
        }
    }

    /// A retryable failure.
    pub fn retryable(detail: impl Into<String>) -> Self {
        Self::Retryable {
            detail: detail.into(),
        }
    }

    /// The reason code of a permanent failure.
    pub fn reason(&self) -> Option<ReasonCode> {
        match self {
            Self::Permanent { reason, .. } => Some(*reason),
            Self::Retryable { .. } => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retryable { detail } => write!(f, "retryable: {detail}"),
            Self::Permanent { reason, detail } => write!(f, "{reason}: {detail}"),
        }
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_round_trip_and_are_unique() {
        let mut names: Vec<_> = ReasonCode::ALL.iter().map(|c| c.as_str()).collect();
        for code in ReasonCode::ALL {
            assert_eq!(ReasonCode::parse(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ReasonCode::ALL.len());
    }
}
