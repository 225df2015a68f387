//! The hash-chained audit log.
//!
//! Every record a consumer reads gets one row with its decision. Rows form one chain per
//! (consumer, topic, partition): `hash = sha256(prev_hash | seq | offset | event_id | ... )`,
//! the first row's `prev_hash` is 64 zeros. Triggers reject UPDATE and DELETE; anyone who
//! bypasses them (a superuser disabling triggers) breaks the chain, and `verify` names the first
//! broken link. `heads` gives the latest hash per chain so it can be anchored outside the database.

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::{Store, StoreError};

/// `prev_hash` of the first row of every chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// New event, effects written.
    Applied,
    /// Already applied earlier with the same payload; no effect.
    Duplicate,
    /// Permanent failure; a dead-letter row holds the record.
    DeadLettered,
    /// Not a type this consumer acts on.
    Skipped,
    /// An operator's action (replay, offsets reset, dead-letter retry or discard), recorded in
    /// the consumer's operations chain ([`crate::OPERATIONS_TOPIC`]).
    Operation,
}

impl Decision {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::DeadLettered => "dead_lettered",
            Self::Skipped => "skipped",
            Self::Operation => "operation",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Applied,
            Self::Duplicate,
            Self::DeadLettered,
            Self::Skipped,
            Self::Operation,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    /// Consumer.
    pub consumer: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Kafka offset of the record.
    pub offset: i64,
    /// Event id, when the record decoded.
    pub event_id: Option<String>,
    /// Tenant, when known.
    pub tenant_id: Option<String>,
    /// Event type, when known.
    pub event_type: Option<String>,
    /// Decision.
    pub decision: Decision,
    /// Reason code for dead letters.
    pub reason: Option<String>,
    /// Payload hash (hex), when decoded.
    pub payload_hash: Option<String>,
    /// Writer schema id, when framed.
    pub schema_id: Option<i64>,
    /// Free text (operation details for operator entries).
    pub detail: Option<String>,
    /// The event's correlation id (from its envelope), when known.
    pub correlation_id: Option<String>,
    /// The W3C trace id of the record's `traceparent` header, when it had one.
    pub trace_id: Option<String>,
    /// Microseconds since the epoch.
    pub recorded_at: i64,
    /// Hash of the previous row in the chain.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

impl AuditRow {
    /// The hash of this row's content chained to `prev_hash`. The correlation and trace ids
    /// (added later) are hashed only when the row has one, so rows written before them keep
    /// their hash.
    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut fields = vec![
            self.prev_hash.clone(),
            self.consumer.clone(),
            self.topic.clone(),
            self.partition.to_string(),
            self.seq.to_string(),
            self.offset.to_string(),
            opt(&self.event_id),
            opt(&self.tenant_id),
            opt(&self.event_type),
            self.decision.as_str().to_owned(),
            opt(&self.reason),
            opt(&self.payload_hash),
            self.schema_id.map(|s| s.to_string()).unwrap_or_default(),
            opt(&self.detail),
            self.recorded_at.to_string(),
        ];
        if self.correlation_id.is_some() || self.trace_id.is_some() {
            fields.push(opt(&self.correlation_id));
            fields.push(opt(&self.trace_id));
        }
        for f in &fields {
            // Length-prefixed so no two different field lists hash the same bytes.
            h.update((f.len() as u64).to_be_bytes());
            h.update(f.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// The latest row of one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditHead {
    /// Consumer.
    pub consumer: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Rows in the chain.
    pub seq: i64,
    /// Hash of the latest row.
    pub hash: String,
}

/// The first broken link found in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// Consumer.
    pub consumer: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Seq of the first bad row.
    pub seq: i64,
    /// What is wrong.
    pub problem: String,
}

/// Result of verifying every chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// Chains checked.
    pub chains: u64,
    /// Rows checked.
    pub rows: u64,
    /// First break per broken chain.
    pub breaks: Vec<ChainBreak>,
}

impl ChainReport {
    /// No chain is broken.
    pub fn is_intact(&self) -> bool {
        self.breaks.is_empty()
    }
}

pub(crate) const SELECT_ROWS: &str = "SELECT consumer, topic, partition, seq, \"offset\", event_id, tenant_id, \
    event_type, decision, reason, payload_hash, schema_id, detail, correlation_id, trace_id, \
    recorded_at, prev_hash, hash FROM audit_log";

pub(crate) fn row_from(r: &sqlx::any::AnyRow) -> Result<AuditRow, StoreError> {
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("audit row: {e}"));
    let decision: String = r.try_get("decision").map_err(get)?;
    Ok(AuditRow {
        consumer: r.try_get("consumer").map_err(get)?,
        topic: r.try_get("topic").map_err(get)?,
        partition: r.try_get("partition").map_err(get)?,
        seq: r.try_get("seq").map_err(get)?,
        offset: r.try_get("offset").map_err(get)?,
        event_id: r.try_get("event_id").map_err(get)?,
        tenant_id: r.try_get("tenant_id").map_err(get)?,
        event_type: r.try_get("event_type").map_err(get)?,
        decision: Decision::parse(&decision)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown decision {decision:?}")))?,
        reason: r.try_get("reason").map_err(get)?,
        payload_hash: r.try_get("payload_hash").map_err(get)?,
        schema_id: r.try_get("schema_id").map_err(get)?,
        detail: r.try_get("detail").map_err(get)?,
        correlation_id: r.try_get("correlation_id").map_err(get)?,
        trace_id: r.try_get("trace_id").map_err(get)?,
        recorded_at: r.try_get("recorded_at").map_err(get)?,
        prev_hash: r.try_get("prev_hash").map_err(get)?,
        hash: r.try_get("hash").map_err(get)?,
    })
}

/// Where the audit log saw one record of a consumer (one per recorded decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCoordinate {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Event id, when the record decoded that far.
    pub event_id: Option<String>,
    /// Tenant, when known.
    pub tenant_id: Option<String>,
    /// Event type, when known.
    pub event_type: Option<String>,
}

impl Store {
    /// The Kafka coordinates the audit log recorded for `consumer` between `from` (inclusive)
    /// and `to` (exclusive) recording times (micros), operations chains left out.
    pub async fn audit_coordinates(
        &self,
        consumer: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Vec<AuditCoordinate>, StoreError> {
        let rows = sqlx::query(
            "SELECT topic, partition, \"offset\", event_id, tenant_id, event_type FROM audit_log \
             WHERE consumer = $1 AND topic <> $2 AND recorded_at >= $3 AND recorded_at < $4",
        )
        .bind(consumer)
        .bind(crate::OPERATIONS_TOPIC)
        .bind(from.unwrap_or(i64::MIN))
        .bind(to.unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::query("reading coordinates from the audit log"))?;
        rows.iter()
            .map(|r| {
                let get = |e: sqlx::Error| StoreError::Corrupt(format!("audit coordinate: {e}"));
                Ok(AuditCoordinate {
                    topic: r.try_get(0).map_err(get)?,
                    partition: r.try_get(1).map_err(get)?,
                    offset: r.try_get(2).map_err(get)?,
                    event_id: r.try_get(3).map_err(get)?,
                    tenant_id: r.try_get(4).map_err(get)?,
                    event_type: r.try_get(5).map_err(get)?,
                })
            })
            .collect()
    }

    /// Recomputes every chain (of one consumer, or all) and reports the first break of each.
    /// Reads chain by chain in pages so memory stays flat on large logs.
    pub async fn verify_audit(
        &self,
        consumer: Option<&str>,
        mut progress: impl FnMut(u64),
    ) -> Result<ChainReport, StoreError> {
        let mut report = ChainReport::default();
        for head in self.audit_heads(consumer).await? {
            report.chains += 1;
            let mut expected_prev = GENESIS_HASH.to_owned();
            let mut expected_seq = 1i64;
            let mut broken = None;
            let page = 5000i64;
            'chain: loop {
                let sql = format!(
                    "{SELECT_ROWS} WHERE consumer = $1 AND topic = $2 AND partition = $3 \
                     AND seq >= $4 ORDER BY seq LIMIT {page}"
                );
                let rows = sqlx::query(&sql)
                    .bind(&head.consumer)
                    .bind(&head.topic)
                    .bind(head.partition)
                    .bind(expected_seq)
                    .fetch_all(self.pool())
                    .await
                    .map_err(StoreError::query("reading the audit log"))?;
                if rows.is_empty() {
                    break;
                }
                for r in &rows {
                    let row = row_from(r)?;
                    report.rows += 1;
                    let problem = if row.seq != expected_seq {
                        Some(format!("seq {} follows seq {}", row.seq, expected_seq - 1))
                    } else if row.prev_hash != expected_prev {
                        Some("prev_hash does not match the previous row's hash".to_owned())
                    } else if row.compute_hash() != row.hash {
                        Some("row content does not match its hash (modified)".to_owned())
                    } else {
                        None
                    };
                    if let Some(problem) = problem {
                        broken = Some(ChainBreak {
                            consumer: row.consumer.clone(),
                            topic: row.topic.clone(),
                            partition: row.partition,
                            seq: row.seq,
                            problem,
                        });
                        break 'chain;
                    }
                    expected_prev = row.hash.clone();
                    expected_seq += 1;
                }
                progress(report.rows);
            }
            if broken.is_none() && expected_seq - 1 != head.seq {
                broken = Some(ChainBreak {
                    consumer: head.consumer.clone(),
                    topic: head.topic.clone(),
                    partition: head.partition,
                    seq: expected_seq,
                    problem: format!(
                        "chain ends at seq {} but head is {}",
                        expected_seq - 1,
                        head.seq
                    ),
                });
            }
            report.breaks.extend(broken);
        }
        Ok(report)
    }

    /// The latest row of every chain (of one consumer, or all).
    pub async fn audit_heads(&self, consumer: Option<&str>) -> Result<Vec<AuditHead>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.consumer, a.topic, a.partition, a.seq, a.hash FROM audit_log a \
             JOIN (SELECT consumer, topic, partition, MAX(seq) AS seq FROM audit_log \
                   GROUP BY consumer, topic, partition) m \
               ON a.consumer = m.consumer AND a.topic = m.topic AND a.partition = m.partition \
              AND a.seq = m.seq \
             WHERE ($1 = '' OR a.consumer = $1) ORDER BY a.consumer, a.topic, a.partition",
        )
        .bind(consumer.unwrap_or(""))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::query("reading audit heads"))?;
        rows.iter()
            .map(|r| {
                let get = |e: sqlx::Error| StoreError::Corrupt(format!("audit head: {e}"));
                Ok(AuditHead {
                    consumer: r.try_get("consumer").map_err(get)?,
                    topic: r.try_get("topic").map_err(get)?,
                    partition: r.try_get("partition").map_err(get)?,
                    seq: r.try_get("seq").map_err(get)?,
                    hash: r.try_get("hash").map_err(get)?,
                })
            })
            .collect()
    }

    /// Audit rows of one chain in a seq range (for tools and tests).
    pub async fn audit_rows(
        &self,
        consumer: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let sql = format!(
            "{SELECT_ROWS} WHERE consumer = $1 AND topic = $2 AND partition = $3 ORDER BY seq"
        );
        let rows = sqlx::query(&sql)
            .bind(consumer)
            .bind(topic)
            .bind(partition)
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::query("reading the audit log"))?;
        rows.iter().map(row_from).collect()
    }
}
