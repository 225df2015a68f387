//! What the metrics sampler reads from this consumer's tables: the outbox backlog by tenant
//! and status, and the payments still waiting for their invoice.

use ledgerflow_store::{Store, StoreError, TenantStatusCount};
use sqlx::Row;

/// The outbox table the dispatcher delivers from.
pub const OUTBOX_TABLE: &str = "erp_outbox";

/// Payments whose invoice has not been posted yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldPayments {
    /// How many.
    pub count: i64,
    /// Capture time of the oldest (micros), if any.
    pub oldest_captured_at: Option<i64>,
}

/// Outbox rows by tenant and status; `None` before the consumer's schema exists.
pub async fn outbox_by_tenant_and_status(
    store: &Store,
) -> Result<Option<Vec<TenantStatusCount>>, StoreError> {
    store.rows_by_tenant_and_status(OUTBOX_TABLE).await
}

/// The held payments; `None` before the consumer's schema exists.
pub async fn held_payments(store: &Store) -> Result<Option<HeldPayments>, StoreError> {
    if !store.table_exists("erp_payments").await? {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT), MIN(p.captured_at) FROM erp_payments p \
         WHERE NOT EXISTS (SELECT 1 FROM erp_ar_documents d WHERE d.tenant_id = p.tenant_id \
         AND d.doc_type = 'invoice' AND d.doc_id = p.invoice_id)",
    )
    .fetch_one(store.pool())
    .await
    .map_err(StoreError::query("counting held payments"))?;
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("held payments: {e}"));
    Ok(Some(HeldPayments {
        count: row.try_get(0).map_err(get)?,
        oldest_captured_at: row.try_get(1).map_err(get)?,
    }))
}
