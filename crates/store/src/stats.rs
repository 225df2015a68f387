//! Counts for `ledgerflow stats`, the operator tools and the metrics sampler.

use serde::Serialize;
use sqlx::Row;

use crate::{Store, StoreError};

/// Audit rows per consumer and decision (and reason for dead letters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionCount {
    /// Consumer.
    pub consumer: String,
    /// Decision.
    pub decision: String,
    /// Reason code (dead letters only).
    pub reason: Option<String>,
    /// Rows.
    pub count: i64,
}

/// A stored position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PositionRow {
    /// Consumer.
    pub consumer: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset to process.
    pub next_offset: i64,
    /// Last update (micros).
    pub updated_at: i64,
}

/// Rows of an outbox table for one tenant in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantStatusCount {
    /// Tenant.
    pub tenant_id: String,
    /// The row status (`pending`, `failed`, `delivered`, ...).
    pub status: String,
    /// Rows.
    pub count: i64,
    /// When the oldest of them was written (micros), if the table says.
    pub oldest_created_at: Option<i64>,
}

impl Store {
    /// Events of `consumer` the inbox holds at offsets `[from, to)` of one partition.
    pub async fn inbox_count(
        &self,
        consumer: &str,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM inbox WHERE consumer = $1 AND topic = $2 \
             AND partition = $3 AND \"offset\" >= $4 AND \"offset\" < $5",
        )
        .bind(consumer)
        .bind(topic)
        .bind(partition)
        .bind(from)
        .bind(to)
        .fetch_one(self.pool())
        .await
        .map_err(StoreError::query(
            "counting applied events in an offset range",
        ))
    }

    /// Rows of an outbox-shaped table (`tenant_id`, `status` and `created_at` columns) by tenant
    /// and status, with the oldest row's `created_at`;
    /// `None` when the table does not exist yet (its consumer never ran here). The crate that
    /// owns the table names it.
    pub async fn rows_by_tenant_and_status(
        &self,
        table: &'static str,
    ) -> Result<Option<Vec<TenantStatusCount>>, StoreError> {
        if !self.table_exists(table).await? {
            return Ok(None);
        }
        let rows = sqlx::query(&format!(
            "SELECT tenant_id, status, CAST(COUNT(*) AS BIGINT) AS n, \
             MIN(created_at) AS oldest FROM {table} GROUP BY tenant_id, status ORDER BY tenant_id, status"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::query(
            "counting outbox rows by tenant and status",
        ))?;
        let counts = rows
            .iter()
            .map(|r| {
                let get = |e: sqlx::Error| StoreError::Corrupt(format!("{table} count: {e}"));
                Ok(TenantStatusCount {
                    tenant_id: r.try_get("tenant_id").map_err(get)?,
                    status: r.try_get("status").map_err(get)?,
                    count: r.try_get("n").map_err(get)?,
                    oldest_created_at: r.try_get("oldest").map_err(get)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Some(counts))
    }

    /// Audit decisions per consumer (and reason).
    pub async fn decision_counts(
        &self,
        consumer: Option<&str>,
    ) -> Result<Vec<DecisionCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT consumer, decision, reason, CAST(COUNT(*) AS BIGINT) AS n FROM audit_log \
             WHERE ($1 = '' OR consumer = $1) GROUP BY consumer, decision, reason \
             ORDER BY consumer, decision, reason",
        )
        .bind(consumer.unwrap_or(""))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::query("counting decisions"))?;
        rows.iter()
            .map(|r| {
                let get = |e: sqlx::Error| StoreError::Corrupt(format!("decision count: {e}"));
                Ok(DecisionCount {
                    consumer: r.try_get("consumer").map_err(get)?,
                    decision: r.try_get("decision").map_err(get)?,
                    reason: r.try_get("reason").map_err(get)?,
                    count: r.try_get("n").map_err(get)?,
                })
            })
            .collect()
    }

    /// Stored positions.
    pub async fn positions(&self, consumer: Option<&str>) -> Result<Vec<PositionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT consumer, topic, partition, next_offset, updated_at FROM positions \
             WHERE ($1 = '' OR consumer = $1) ORDER BY consumer, topic, partition",
        )
        .bind(consumer.unwrap_or(""))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::query("reading positions"))?;
        rows.iter()
            .map(|r| {
                let get = |e: sqlx::Error| StoreError::Corrupt(format!("position: {e}"));
                Ok(PositionRow {
                    consumer: r.try_get("consumer").map_err(get)?,
                    topic: r.try_get("topic").map_err(get)?,
                    partition: r.try_get("partition").map_err(get)?,
                    next_offset: r.try_get("next_offset").map_err(get)?,
                    updated_at: r.try_get("updated_at").map_err(get)?,
                })
            })
            .collect()
    }

    /// Sets positions of record (an operator's offsets reset), all in one transaction. Only
    /// safe while the consumer is stopped: a running instance would keep its in-memory view.
    pub async fn set_positions(
        &self,
        consumer: &str,
        positions: &[(String, i32, i64)],
    ) -> Result<(), StoreError> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(StoreError::query("beginning a positions reset"))?;
        let now = ledgerflow_core::now_micros();
        for (topic, partition, offset) in positions {
            sqlx::query(
                "INSERT INTO positions (consumer, topic, partition, next_offset, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (consumer, topic, partition) \
                 DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at",
            )
            .bind(consumer)
            .bind(topic)
            .bind(*partition)
            .bind(*offset)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query("storing a position"))?;
        }
        tx.commit()
            .await
            .map_err(StoreError::query("committing a positions reset"))
    }
}
