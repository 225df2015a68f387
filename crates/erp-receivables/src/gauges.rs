//! What the metrics sampler reads from this consumer's tables: the outbox backlog by tenant
//! and status, the age of the oldest posting still pending, accepted or failed, and the
//! payments still waiting for their invoice.

use ledgerflow_store::{Store, StoreError, TenantStatusCount};
use sqlx::Row;

use crate::posting::PostingState;

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

/// The states whose oldest posting's age is a gauge: the ones that still need the ERP or an
/// operator (`confirmed` and `resolved` are settled).
pub const AGED_STATES: [PostingState; 3] = [
    PostingState::Pending,
    PostingState::Accepted,
    PostingState::Failed,
];

/// The oldest posting in one of the [`AGED_STATES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldestPosting {
    /// The state.
    pub status: PostingState,
    /// When the oldest posting in that state was written (micros), if any is.
    pub created_at: Option<i64>,
}

impl OldestPosting {
    /// Seconds from its writing to `now_micros`; 0 when no posting is in the state.
    pub fn age_seconds(&self, now_micros: i64) -> f64 {
        self.created_at
            .map_or(0.0, |t| (now_micros - t).max(0) as f64 / 1e6)
    }
}

/// The oldest posting of each of the [`AGED_STATES`], in that order; `None` before the
/// consumer's schema exists.
///
/// Age counts from when the posting was written (with its journal), not from when it entered
/// its state: a posting accepted an hour after it was written has waited an hour for the ERP,
/// whatever its job is doing. `ledgerflow reconcile` calls a posting stuck on the same clock.
pub async fn oldest_postings(store: &Store) -> Result<Option<Vec<OldestPosting>>, StoreError> {
    if !store.table_exists(OUTBOX_TABLE).await? {
        return Ok(None);
    }
    // One MIN per state, each served by the (status, ...) index.
    let rows = sqlx::query(
        "SELECT status, MIN(created_at) FROM erp_outbox \
         WHERE status IN ('pending', 'accepted', 'failed') GROUP BY status",
    )
    .fetch_all(store.pool())
    .await
    .map_err(StoreError::query("reading the oldest erp postings"))?;
    let get = |e: sqlx::Error| StoreError::Corrupt(format!("oldest erp postings: {e}"));
    let mut oldest: Vec<OldestPosting> = AGED_STATES
        .iter()
        .map(|&status| OldestPosting {
            status,
            created_at: None,
        })
        .collect();
    for row in rows {
        let status: String = row.try_get(0).map_err(get)?;
        let created_at: Option<i64> = row.try_get(1).map_err(get)?;
        if let Some(entry) = oldest.iter_mut().find(|o| o.status.as_str() == status) {
            entry.created_at = created_at;
        }
    }
    Ok(Some(oldest))
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

#[cfg(test)]
mod tests {
    use ledgerflow_store::Backend;

    use super::*;

    async fn insert(store: &Store, id: &str, status: &str, created_at: i64) {
        sqlx::query(
            "INSERT INTO erp_outbox (id, tenant_id, journal_id, erp_kind, endpoint, credential,
                idempotency_key, payload, status, attempts, next_attempt_at, created_at)
             VALUES ($1, 't1', $1, 'netsuite', 'http://erp.test', 'c', $1, '{}', $2, 0, 0, $3)",
        )
        .bind(id.to_owned())
        .bind(status.to_owned())
        .bind(created_at)
        .execute(store.pool())
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn the_oldest_posting_of_each_unsettled_state_and_none_before_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let store = Store::open(&url).await.unwrap();
        assert_eq!(oldest_postings(&store).await.unwrap(), None);

        store
            .apply_schema(&crate::schema::migrations(Backend::Sqlite))
            .await
            .unwrap();
        let none = oldest_postings(&store).await.unwrap().unwrap();
        assert!(none.iter().all(|o| o.created_at.is_none()), "{none:?}");
        assert_eq!(none[0].age_seconds(5_000_000), 0.0);

        insert(&store, "a", "pending", 3_000_000).await;
        insert(&store, "b", "pending", 1_000_000).await;
        insert(&store, "c", "accepted", 2_000_000).await;
        insert(&store, "d", "confirmed", 10).await;
        insert(&store, "e", "resolved", 20).await;
        let oldest = oldest_postings(&store).await.unwrap().unwrap();
        let at: Vec<(PostingState, Option<i64>)> =
            oldest.iter().map(|o| (o.status, o.created_at)).collect();
        assert_eq!(
            at,
            [
                (PostingState::Pending, Some(1_000_000)),
                (PostingState::Accepted, Some(2_000_000)),
                (PostingState::Failed, None),
            ]
        );
        assert_eq!(oldest[0].age_seconds(5_000_000), 4.0);
        // A clock behind the row never makes a negative age.
        assert_eq!(oldest[1].age_seconds(0), 0.0);
    }
}
