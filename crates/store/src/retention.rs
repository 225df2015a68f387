//! Retention of the inbox: dedup rows older than a horizon can go once nothing will re-read
//! their records, and what went is remembered ([`InboxHorizon`]) so that a replay refuses to
//! re-read those offsets (see `ledgerflow_service::ops::retention`). The audit log is never
//! pruned.

use serde::Serialize;
use sqlx::Row;

use ledgerflow_core::now_micros;

use crate::{Store, StoreError};

/// The inbox rows of one consumer, topic and partition that a retention run deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboxHorizon {
    /// Consumer.
    pub consumer: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The highest offset whose dedup row may be gone: a replay must start above it.
    pub max_pruned_offset: i64,
    /// Rows applied before this time (micros) were pruned.
    pub horizon: i64,
    /// The retention run's operation id (in the audit log).
    pub operation_id: String,
    /// When (micros).
    pub pruned_at: i64,
}

impl Store {
    /// Inbox rows applied before `before` (micros), per consumer.
    pub async fn inbox_prunable(&self, before: i64) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT consumer, CAST(COUNT(*) AS BIGINT) FROM inbox WHERE applied_at < $1 \
             GROUP BY consumer ORDER BY consumer",
        )
        .bind(before)
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::query("counting prunable inbox rows"))?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get(1)?;
                Ok((r.try_get(0)?, u64::try_from(n).unwrap_or(0)))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::query("counting prunable inbox rows"))
    }

    /// Records, before anything is deleted, the highest offset per consumer, topic and
    /// partition whose dedup row the pruning of rows applied before `before` removes (a
    /// horizon only moves forward). Returns the horizons now in force for those partitions.
    pub async fn record_inbox_horizons(
        &self,
        before: i64,
        operation_id: &str,
    ) -> Result<Vec<InboxHorizon>, StoreError> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(StoreError::query("beginning the inbox horizons"))?;
        let groups = sqlx::query(
            "SELECT consumer, topic, partition, MAX(\"offset\") FROM inbox WHERE applied_at < $1 \
             GROUP BY consumer, topic, partition",
        )
        .bind(before)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::query("reading the inbox horizons"))?;
        let now = now_micros();
        for group in &groups {
            let read = |e| StoreError::query("reading the inbox horizons")(e);
            let consumer: String = group.try_get(0).map_err(read)?;
            let topic: String = group.try_get(1).map_err(read)?;
            let partition: i32 = group.try_get(2).map_err(read)?;
            let offset: i64 = group.try_get(3).map_err(read)?;
            sqlx::query(
                "INSERT INTO inbox_horizons \
                 (consumer, topic, partition, max_pruned_offset, horizon, operation_id, pruned_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (consumer, topic, partition) DO UPDATE SET \
                 max_pruned_offset = CASE WHEN excluded.max_pruned_offset > \
                     inbox_horizons.max_pruned_offset THEN excluded.max_pruned_offset \
                     ELSE inbox_horizons.max_pruned_offset END, \
                 horizon = CASE WHEN excluded.horizon > inbox_horizons.horizon \
                     THEN excluded.horizon ELSE inbox_horizons.horizon END, \
                 operation_id = excluded.operation_id, pruned_at = excluded.pruned_at",
            )
            .bind(consumer)
            .bind(topic)
            .bind(partition)
            .bind(offset)
            .bind(before)
            .bind(operation_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query("recording an inbox horizon"))?;
        }
        tx.commit()
            .await
            .map_err(StoreError::query("committing the inbox horizons"))?;
        let all = self.inbox_horizons(None).await?;
        Ok(all
            .into_iter()
            .filter(|h| h.operation_id == operation_id)
            .collect())
    }

    /// Deletes at most `batch` inbox rows applied before `before`; returns how many went.
    /// Call [`Store::record_inbox_horizons`] first.
    pub async fn prune_inbox(&self, before: i64, batch: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM inbox WHERE (consumer, event_id) IN \
             (SELECT consumer, event_id FROM inbox WHERE applied_at < $1 LIMIT $2)",
        )
        .bind(before)
        .bind(batch)
        .execute(self.pool())
        .await
        .map_err(StoreError::query("pruning the inbox"))?;
        Ok(done.rows_affected())
    }

    /// The recorded horizons (of one consumer, or all).
    pub async fn inbox_horizons(
        &self,
        consumer: Option<&str>,
    ) -> Result<Vec<InboxHorizon>, StoreError> {
        let rows = sqlx::query(
            "SELECT consumer, topic, partition, max_pruned_offset, horizon, operation_id, \
             pruned_at FROM inbox_horizons WHERE ($1 = '' OR consumer = $1) \
             ORDER BY consumer, topic, partition",
        )
        .bind(consumer.unwrap_or_default())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::query("reading the inbox horizons"))?;
        rows.iter()
            .map(|r| {
                Ok(InboxHorizon {
                    consumer: r.try_get(0)?,
                    topic: r.try_get(1)?,
                    partition: r.try_get(2)?,
                    max_pruned_offset: r.try_get(3)?,
                    horizon: r.try_get(4)?,
                    operation_id: r.try_get(5)?,
                    pruned_at: r.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::query("reading the inbox horizons"))
    }
}
