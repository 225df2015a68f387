//! What the store knows of one event: its inbox rows, the audit entries at its coordinates and
//! the dead letters of it or at its coordinates, for `ledgerflow lineage`.
//!
//! The audit log has no index by event id (see the schema), so the event's coordinates come
//! from the inbox (primary key per consumer) and the dead letters, and the audit rows are read
//! at those coordinates, per consumer. Every consumer reads the same topics, so coordinates
//! found through one consumer also find the audit rows of a consumer that skipped the event
//! (a skipped event has no inbox row).

use std::collections::BTreeSet;

use serde::Serialize;
use sqlx::Row;

use crate::audit::{AuditRow, SELECT_ROWS, row_from};
use crate::{DeadLetter, OPERATIONS_TOPIC, Store, StoreError};

/// One inbox row: the event was applied by `consumer` (recorded once, at its first coordinates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboxEntry {
    /// Consumer.
    pub consumer: String,
    /// Event id.
    pub event_id: String,
    /// Payload hash (hex).
    pub payload_hash: String,
    /// Tenant.
    pub tenant_id: String,
    /// Event type.
    pub event_type: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// When it was applied (micros since the epoch).
    pub applied_at: i64,
}

/// A record's place in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Coordinate {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// The store's part of an event's lineage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreLineage {
    /// Inbox rows, by consumer.
    pub inbox: Vec<InboxEntry>,
    /// Audit entries at the event's coordinates that name the event (or name no event: a
    /// record dead-lettered before it decoded), by consumer, topic, partition and seq.
    pub audit: Vec<AuditRow>,
    /// Dead letters of the event, or at its coordinates, by consumer and coordinates.
    pub dead_letters: Vec<DeadLetter>,
    /// Every coordinate the event was seen at.
    pub coordinates: Vec<Coordinate>,
}

impl StoreLineage {
    /// Whether the store has nothing of the event.
    pub fn is_empty(&self) -> bool {
        self.inbox.is_empty() && self.audit.is_empty() && self.dead_letters.is_empty()
    }

    /// The tenant the store recorded for the event, when it knows one.
    pub fn tenant_id(&self) -> Option<&str> {
        self.inbox
            .first()
            .map(|i| i.tenant_id.as_str())
            .or_else(|| self.audit.iter().find_map(|a| a.tenant_id.as_deref()))
            .or_else(|| {
                self.dead_letters
                    .iter()
                    .find_map(|d| d.tenant_id.as_deref())
            })
    }
}

fn corrupt(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

/// The consumers the store has positions for (every consumer that ever committed a batch),
/// or just `only`.
async fn consumers(store: &Store, only: Option<&str>) -> Result<Vec<String>, StoreError> {
    if let Some(c) = only {
        return Ok(vec![c.to_owned()]);
    }
    sqlx::query_scalar("SELECT DISTINCT consumer FROM positions ORDER BY consumer")
        .fetch_all(store.pool())
        .await
        .map_err(StoreError::query("listing consumers"))
}

/// Everything the store knows of `event_id` (of `consumer`, or of every consumer).
pub async fn for_event(
    store: &Store,
    consumer: Option<&str>,
    event_id: &str,
) -> Result<StoreLineage, StoreError> {
    let consumers = consumers(store, consumer).await?;
    let mut out = StoreLineage::default();
    for c in &consumers {
        let row = sqlx::query(
            "SELECT consumer, event_id, payload_hash, tenant_id, event_type, topic, partition, \
             \"offset\", applied_at FROM inbox WHERE consumer = $1 AND event_id = $2",
        )
        .bind(c.as_str())
        .bind(event_id)
        .fetch_optional(store.pool())
        .await
        .map_err(StoreError::query("reading the inbox"))?;
        if let Some(r) = row {
            let get = corrupt("inbox row");
            out.inbox.push(InboxEntry {
                consumer: r.try_get("consumer").map_err(&get)?,
                event_id: r.try_get("event_id").map_err(&get)?,
                payload_hash: r.try_get("payload_hash").map_err(&get)?,
                tenant_id: r.try_get("tenant_id").map_err(&get)?,
                event_type: r.try_get("event_type").map_err(&get)?,
                topic: r.try_get("topic").map_err(&get)?,
                partition: r.try_get("partition").map_err(&get)?,
                offset: r.try_get("offset").map_err(&get)?,
                applied_at: r.try_get("applied_at").map_err(&get)?,
            });
        }
    }
    let mut coordinates: BTreeSet<Coordinate> = out
        .inbox
        .iter()
        .map(|i| Coordinate {
            topic: i.topic.clone(),
            partition: i.partition,
            offset: i.offset,
        })
        .collect();
    // Dead letters that name the event (few rows: no index needed), then those at its
    // coordinates that did not decode far enough to name it.
    let mut letter_ids: BTreeSet<String> = BTreeSet::new();
    let rows = sqlx::query(
        "SELECT id, topic, partition, \"offset\" FROM dead_letters \
         WHERE event_id = $1 AND ($2 = '' OR consumer = $2)",
    )
    .bind(event_id)
    .bind(consumer.unwrap_or(""))
    .fetch_all(store.pool())
    .await
    .map_err(StoreError::query("finding dead letters of an event"))?;
    for r in &rows {
        let get = corrupt("dead letter");
        letter_ids.insert(r.try_get("id").map_err(&get)?);
        coordinates.insert(Coordinate {
            topic: r.try_get("topic").map_err(&get)?,
            partition: r.try_get("partition").map_err(&get)?,
            offset: r.try_get("offset").map_err(&get)?,
        });
    }
    for c in &consumers {
        for at in &coordinates {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM dead_letters WHERE consumer = $1 AND topic = $2 \
                 AND partition = $3 AND \"offset\" = $4 AND (event_id IS NULL OR event_id = $5)",
            )
            .bind(c.as_str())
            .bind(at.topic.as_str())
            .bind(at.partition)
            .bind(at.offset)
            .bind(event_id)
            .fetch_all(store.pool())
            .await
            .map_err(StoreError::query("finding dead letters at coordinates"))?;
            letter_ids.extend(ids);
        }
    }
    for id in &letter_ids {
        if let Some(letter) = store.dead_letter(id).await? {
            out.dead_letters.push(letter);
        }
    }
    out.dead_letters.sort_by(|a, b| {
        (&a.consumer, &a.topic, a.partition, a.offset).cmp(&(
            &b.consumer,
            &b.topic,
            b.partition,
            b.offset,
        ))
    });
    // Audit rows at the coordinates, per consumer (the primary key's prefix), operations
    // chains left out.
    let sql = format!(
        "{SELECT_ROWS} WHERE consumer = $1 AND topic = $2 AND partition = $3 AND \"offset\" = $4 \
         AND (event_id IS NULL OR event_id = $5) ORDER BY seq"
    );
    for c in &consumers {
        for at in coordinates.iter().filter(|at| at.topic != OPERATIONS_TOPIC) {
            let rows = sqlx::query(&sql)
                .bind(c.as_str())
                .bind(at.topic.as_str())
                .bind(at.partition)
                .bind(at.offset)
                .bind(event_id)
                .fetch_all(store.pool())
                .await
                .map_err(StoreError::query("reading the audit log at coordinates"))?;
            for r in &rows {
                out.audit.push(row_from(r)?);
            }
        }
    }
    out.coordinates = coordinates.into_iter().collect();
    Ok(out)
}
