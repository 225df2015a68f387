//! Reading dead letters (operators re-drive and discard them through the CLI).

use std::fmt;

use ledgerflow_core::{ReasonCode, now_micros};
use serde::Serialize;
use sqlx::Row;

use crate::{Store, StoreError};

/// Where a dead letter stands. Stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterStatus {
    /// Waiting for an operator (retry or discard); counted in the dead-letter depth.
    Open,
    /// A redrive gave the record another decision.
    Resolved,
    /// An operator gave up on it, with a reason in the audit log.
    Discarded,
}

impl DeadLetterStatus {
    /// Every status.
    pub const ALL: [Self; 3] = [Self::Open, Self::Resolved, Self::Discarded];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Resolved => "resolved",
            Self::Discarded => "discarded",
        }
    }

    /// A stored name back into a status.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for DeadLetterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Open dead letters of one consumer with one reason (the dead-letter depth gauge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenDeadLetters {
    /// Consumer.
    pub consumer: String,
    /// Reason code.
    pub reason: ReasonCode,
    /// How many are open.
    pub count: i64,
}

/// A stored dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Id (UUID).
    pub id: String,
    /// Consumer.
    pub consumer: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Reason code.
    pub reason: ReasonCode,
    /// Error text.
    pub error: String,
    /// Raw key.
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
    /// Raw value.
    #[serde(skip)]
    pub value: Option<Vec<u8>>,
    /// Headers JSON.
    pub headers: String,
    /// Schema id.
    pub schema_id: Option<i64>,
    /// Event id.
    pub event_id: Option<String>,
    /// Tenant.
    pub tenant_id: Option<String>,
    /// Event type.
    pub event_type: Option<String>,
    /// Where it stands.
    pub status: DeadLetterStatus,
    /// Re-drive attempts.
    pub attempts: i32,
    /// Created (micros).
    pub created_at: i64,
    /// Last change: another attempt, resolved or discarded (micros).
    pub updated_at: i64,
}

/// Filters for listing dead letters.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// Only this consumer.
    pub consumer: Option<String>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this reason code.
    pub reason: Option<ReasonCode>,
    /// Only this status (default: all).
    pub status: Option<DeadLetterStatus>,
    /// Created at or after (micros).
    pub since: Option<i64>,
    /// At most this many, oldest first.
    pub limit: Option<i64>,
}

impl Store {
    /// Lists dead letters, oldest first.
    pub async fn dead_letters(&self, f: &DeadLetterFilter) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, consumer, topic, partition, \"offset\", reason, error, record_key, record_value, \
             headers, schema_id, event_id, tenant_id, event_type, status, attempts, created_at, \
             updated_at FROM dead_letters \
             WHERE ($1 = '' OR consumer = $1) AND ($2 = '' OR tenant_id = $2) \
               AND ($3 = '' OR reason = $3) AND ($4 = '' OR status = $4) AND created_at >= $5 \
             ORDER BY created_at, topic, partition, \"offset\" LIMIT $6",
        )
        .bind(f.consumer.clone().unwrap_or_default())
        .bind(f.tenant.clone().unwrap_or_default())
        .bind(f.reason.map_or("", ReasonCode::as_str))
        .bind(f.status.map_or("", DeadLetterStatus::as_str))
        .bind(f.since.unwrap_or(0))
        .bind(f.limit.unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::query("listing dead letters"))?;
        rows.iter().map(letter_from).collect()
    }

    /// One dead letter by id.
    pub async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let row = sqlx::query(
            "SELECT id, consumer, topic, partition, \"offset\", reason, error, record_key, record_value, \
             headers, schema_id, event_id, tenant_id, event_type, status, attempts, created_at, \
             updated_at FROM dead_letters WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::query("reading a dead letter"))?;
        row.as_ref().map(letter_from).transpose()
    }

    /// Marks an open dead letter discarded; false when it was not open (already resolved or
    /// discarded, or unknown), which changes nothing.
    pub async fn discard_dead_letter(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE dead_letters SET status = 'discarded', updated_at = $1 \
             WHERE id = $2 AND status = 'open'",
        )
        .bind(now_micros())
        .bind(id)
        .execute(self.pool())
        .await
        .map_err(StoreError::query("discarding a dead letter"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Open dead letters by consumer and reason.
    pub async fn open_dead_letter_counts(&self) -> Result<Vec<OpenDeadLetters>, StoreError> {
        let rows = sqlx::query(
            "SELECT consumer, reason, CAST(COUNT(*) AS BIGINT) AS n FROM dead_letters \
             WHERE status = 'open' GROUP BY consumer, reason ORDER BY consumer, reason",
        )
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::query("counting open dead letters"))?;
        rows.iter()
            .map(|r| {
                let get = |e: sqlx::Error| StoreError::Corrupt(format!("dead letter count: {e}"));
                Ok(OpenDeadLetters {
                    consumer: r.try_get("consumer").map_err(get)?,
                    reason: reason_from(&r.try_get::<String, _>("reason").map_err(get)?)?,
                    count: r.try_get("n").map_err(get)?,
                })
            })
            .collect()
    }
}

fn reason_from(name: &str) -> Result<ReasonCode, StoreError> {
    ReasonCode::parse(name)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown dead-letter reason {name:?}")))
}

fn letter_from(r: &sqlx::any::AnyRow) -> Result<DeadLetter, StoreError> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("dead letter: {e}"));
    Ok(DeadLetter {
        id: r.try_get("id").map_err(get)?,
        consumer: r.try_get("consumer").map_err(get)?,
        topic: r.try_get("topic").map_err(get)?,
        partition: r.try_get("partition").map_err(get)?,
        offset: r.try_get("offset").map_err(get)?,
        reason: reason_from(&r.try_get::<String, _>("reason").map_err(get)?)?,
        error: r.try_get("error").map_err(get)?,
        key: r.try_get("record_key").map_err(get)?,
        value: r.try_get("record_value").map_err(get)?,
        headers: r.try_get("headers").map_err(get)?,
        schema_id: r.try_get("schema_id").map_err(get)?,
        event_id: r.try_get("event_id").map_err(get)?,
        tenant_id: r.try_get("tenant_id").map_err(get)?,
        event_type: r.try_get("event_type").map_err(get)?,
        status: {
            let name: String = r.try_get("status").map_err(get)?;
            DeadLetterStatus::parse(&name).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown dead-letter status {name:?}"))
            })?
        },
        attempts: r.try_get("attempts").map_err(get)?,
        created_at: r.try_get("created_at").map_err(get)?,
        updated_at: r.try_get("updated_at").map_err(get)?,
    })
}
