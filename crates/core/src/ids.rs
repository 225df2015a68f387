use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest tenant id accepted; tenant ids appear in keys, headers, topic names and labels.
const TENANT_ID_MAX_LEN: usize = 64;

/// A tenant identifier: 1 to 64 characters of `[a-z0-9_-]`, starting with a letter or digit.
///
/// The restriction keeps tenant ids safe as Kafka keys, topic-name suffixes
/// (`billing.events.<tenant>`), SQL values and metric labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Validates and wraps a tenant id.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > TENANT_ID_MAX_LEN {
            return Err(format!(
                "tenant id must be 1 to {TENANT_ID_MAX_LEN} characters, got {}",
                raw.len()
            ));
        }
        let first_ok = raw.as_bytes()[0].is_ascii_lowercase() || raw.as_bytes()[0].is_ascii_digit();
        let all_ok = raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !first_ok || !all_ok {
            return Err(format!("tenant id {raw:?} must match [a-z0-9][a-z0-9_-]*"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TenantId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TenantId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TenantId> for String {
    fn from(value: TenantId) -> Self {
        value.0
    }
}

/// The globally unique id of one business event; the idempotency key of every consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

impl EventId {
    /// Parses the hyphenated UUID text form.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Uuid::parse_str(raw)
            .map(Self)
            .map_err(|e| format!("event_id {raw:?} is not a UUID: {e}"))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// A schema registry id, as carried in bytes 1..5 of every Confluent-framed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SchemaId(pub u32);

impl fmt::Display for SchemaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_restricted_to_a_safe_alphabet() {
        assert!(TenantId::parse("acme-01").is_ok());
        assert!(TenantId::parse("t_9").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("-acme").is_err());
        assert!(TenantId::parse("Acme").is_err());
        assert!(TenantId::parse("a b").is_err());
        assert!(TenantId::parse(&"a".repeat(65)).is_err());
        assert!(TenantId::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn event_id_round_trips_through_text() {
        let id = EventId::parse("6f1c2d7e-8a4b-4c3d-9e2f-0a1b2c3d4e5f").unwrap();
        assert_eq!(id.to_string(), "6f1c2d7e-8a4b-4c3d-9e2f-0a1b2c3d4e5f");
        assert!(EventId::parse("not-a-uuid").is_err());
    }
}
