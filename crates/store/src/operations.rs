//! Operator actions in the audit log: every replay run, offsets reset and dead-letter retry or
//! discard appends one row to its consumer's operations chain (topic [`OPERATIONS_TOPIC`],
//! partition 0, decision `operation`), hashed and verified like every other chain. The row's
//! `event_id` is the operation id, `event_type` its kind, and `detail` a JSON document with the
//! operator, the reason, the filters and the counts.

use serde::Serialize;

use crate::audit::{AuditRow, Decision, GENESIS_HASH, SELECT_ROWS, row_from};
use ledgerflow_core::now_micros;

use crate::batch::insert_audit_rows;
use crate::{Backend, Store, StoreError};

/// The pseudo-topic of the operations chains.
pub const OPERATIONS_TOPIC: &str = "_operations";

/// One operator action to record.
#[derive(Debug, Clone, Serialize)]
pub struct OperationInput {
    /// Operation id (shared with the audit rows of the records it redrove).
    pub id: String,
    /// Consumer acted on.
    pub consumer: String,
    /// `replay_run`, `offsets_reset`, `dlq_retry`, `dlq_discard`.
    pub kind: String,
    /// Who (from `--operator` or `$USER`).
    pub operator: String,
    /// Why (`--reason`).
    pub reason: String,
    /// Filters, targets and counts, as the command reports them.
    pub details: serde_json::Value,
}

impl Store {
    /// Appends an operation to the consumer's operations chain; returns its audit row.
    pub async fn record_operation(&self, op: &OperationInput) -> Result<AuditRow, StoreError> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(StoreError::query("beginning an operation record"))?;
        if self.backend() == Backend::Postgres {
            // One writer per operations chain at a time.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(format!("{OPERATIONS_TOPIC}/{}", op.consumer))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query("locking the operations chain"))?;
        }
        let head: Option<(i64, String)> = sqlx::query_as(
            "SELECT seq, hash FROM audit_log WHERE consumer = $1 AND topic = $2 AND partition = 0 \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(&op.consumer)
        .bind(OPERATIONS_TOPIC)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::query("reading the operations head"))?;
        let (seq, prev) = head.unwrap_or((0, GENESIS_HASH.to_owned()));
        let detail = serde_json::json!({
            "operator": op.operator,
            "reason": op.reason,
            "details": op.details,
        });
        let mut row = AuditRow {
            consumer: op.consumer.clone(),
            topic: OPERATIONS_TOPIC.to_owned(),
            partition: 0,
            seq: seq + 1,
            offset: seq + 1,
            event_id: Some(op.id.clone()),
            tenant_id: None,
            event_type: Some(op.kind.clone()),
            decision: Decision::Operation,
            reason: None,
            payload_hash: None,
            schema_id: None,
            detail: Some(detail.to_string()),
            correlation_id: None,
            trace_id: None,
            recorded_at: now_micros(),
            prev_hash: prev,
            hash: String::new(),
        };
        row.hash = row.compute_hash();
        insert_audit_rows(&mut tx, self.backend(), std::slice::from_ref(&row)).await?;
        tx.commit()
            .await
            .map_err(StoreError::query("committing an operation record"))?;
        Ok(row)
    }

    /// The recorded operations of a consumer (all consumers when `None`), oldest first.
    pub async fn operations(&self, consumer: Option<&str>) -> Result<Vec<AuditRow>, StoreError> {
        let sql = format!(
            "{SELECT_ROWS} WHERE topic = $1 AND partition = 0 AND ($2 = '' OR consumer = $2) \
             ORDER BY consumer, seq"
        );
        let rows = sqlx::query(&sql)
            .bind(OPERATIONS_TOPIC)
            .bind(consumer.unwrap_or_default())
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::query("reading operations"))?;
        rows.iter().map(row_from).collect()
    }
}
