//! Operator views of the outbox: list notifications, re-queue failed ones.

use ledgerflow_core::now_micros;
use ledgerflow_store::{Store, StoreError, TenantStatusCount};
use serde::Serialize;
use sqlx::{AnyPool, Row};

use crate::NotificationError;

/// The outbox table the dispatcher delivers from.
pub const OUTBOX_TABLE: &str = "notification_outbox";

/// Outbox rows by tenant and status (the metrics sampler's backlog gauges); `None` before the
/// consumer's schema exists.
pub async fn outbox_by_tenant_and_status(
    store: &Store,
) -> Result<Option<Vec<TenantStatusCount>>, StoreError> {
    store.rows_by_tenant_and_status(OUTBOX_TABLE).await
}

/// Which rows [`list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationFilter {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this status (`pending`, `delivered`, `failed`).
    pub status: Option<String>,
    /// At most this many rows (oldest first).
    pub limit: Option<u32>,
}

/// One outbox row as an operator sees it (never the secret; the body is left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationRow {
    /// Stable webhook-id.
    pub webhook_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Source event.
    pub event_id: String,
    /// Notification kind (`invoice_ready`, ...).
    pub kind: String,
    /// Endpoint id within the tenant.
    pub endpoint_id: String,
    /// Endpoint URL.
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// HTTP status of the last attempt, if it got a response.
    pub last_status: Option<i64>,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
    /// When the next attempt is due (micros; for pending rows).
    pub next_attempt_at: i64,
    /// When the row was written (micros).
    pub created_at: i64,
    /// When it was delivered (micros).
    pub delivered_at: Option<i64>,
}

/// Outbox rows matching `filter`, oldest first.
pub async fn list(
    pool: &AnyPool,
    filter: &NotificationFilter,
) -> Result<Vec<NotificationRow>, NotificationError> {
    let mut sql = "SELECT webhook_id, tenant_id, event_id, kind, endpoint_id, url, status, \
                   attempts, last_status, last_error, next_attempt_at, created_at, delivered_at \
                   FROM notification_outbox WHERE 1 = 1"
        .to_owned();
    let mut binds: Vec<String> = Vec::new();
    if let Some(tenant) = &filter.tenant {
        binds.push(tenant.clone());
        sql.push_str(&format!(" AND tenant_id = ${}", binds.len()));
    }
    if let Some(status) = &filter.status {
        binds.push(status.clone());
        sql.push_str(&format!(" AND status = ${}", binds.len()));
    }
    sql.push_str(" ORDER BY created_at, webhook_id");
    if let Some(limit) = filter.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let mut query = sqlx::query(&sql);
    for b in binds {
        query = query.bind(b);
    }
    let rows = query
        .fetch_all(pool)
        .await
        .map_err(NotificationError::db("listing notifications"))?;
    let decode = |e: sqlx::Error| NotificationError::Corrupt(format!("notification_outbox: {e}"));
    rows.into_iter()
        .map(|r| {
            Ok(NotificationRow {
                webhook_id: r.try_get(0).map_err(decode)?,
                tenant_id: r.try_get(1).map_err(decode)?,
                event_id: r.try_get(2).map_err(decode)?,
                kind: r.try_get(3).map_err(decode)?,
                endpoint_id: r.try_get(4).map_err(decode)?,
                url: r.try_get(5).map_err(decode)?,
                status: r.try_get(6).map_err(decode)?,
                attempts: r.try_get(7).map_err(decode)?,
                last_status: r.try_get(8).map_err(decode)?,
                last_error: r.try_get(9).map_err(decode)?,
                next_attempt_at: r.try_get(10).map_err(decode)?,
                created_at: r.try_get(11).map_err(decode)?,
                delivered_at: r.try_get(12).map_err(decode)?,
            })
        })
        .collect()
}

/// Which failed rows [`retry`] re-queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrySelector {
    /// One webhook-id.
    Id(String),
    /// Every failed row of a tenant.
    Tenant(String),
    /// Every failed row.
    AllFailed,
}

/// What [`retry`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryOutcome {
    /// Rows moved from `failed` back to `pending`.
    pub requeued: u64,
    /// For [`RetrySelector::Id`] when nothing was re-queued: the row's status (`pending`,
    /// `delivered`), or `None` when there is no such row.
    pub current_status: Option<String>,
}

/// Moves failed rows back to `pending`, due now, with a fresh attempt budget (attempt
/// numbers keep counting). Only `failed` rows move, so a delivered notification is never sent
/// again and running it twice re-queues nothing the second time.
pub async fn retry(
    pool: &AnyPool,
    selector: &RetrySelector,
) -> Result<RetryOutcome, NotificationError> {
    let now = now_micros();
    let base = "UPDATE notification_outbox SET status = 'pending', next_attempt_at = $1, \
                requeued_attempts = attempts, claim_token = NULL, updated_at = $1 \
                WHERE status = 'failed'";
    let (sql, key) = match selector {
        RetrySelector::Id(id) => (format!("{base} AND webhook_id = $2"), Some(id.clone())),
        RetrySelector::Tenant(t) => (format!("{base} AND tenant_id = $2"), Some(t.clone())),
        RetrySelector::AllFailed => (base.to_owned(), None),
    };
    let mut query = sqlx::query(&sql).bind(now);
    if let Some(key) = key {
        query = query.bind(key);
    }
    let requeued = query
        .execute(pool)
        .await
        .map_err(NotificationError::db("re-queueing notifications"))?
        .rows_affected();
    let mut current_status = None;
    if let (RetrySelector::Id(id), 0) = (selector, requeued) {
        current_status = sqlx::query_scalar::<_, String>(
            "SELECT status FROM notification_outbox WHERE webhook_id = $1",
        )
        .bind(id.clone())
        .fetch_optional(pool)
        .await
        .map_err(NotificationError::db("reading a notification's status"))?;
    }
    Ok(RetryOutcome {
        requeued,
        current_status,
    })
}

/// Retention: the delivery log rows (`notification_deliveries`, one per attempt) of delivered
/// webhooks attempted before `before` (micros). The outbox row itself stays: its webhook-id is
/// what makes a second derivation of the same notification a no-op. Attempts of pending or
/// failed webhooks stay too (an operator still needs them).
const PRUNABLE_DELIVERIES: &str = "SELECT d.id FROM notification_deliveries d \
     JOIN notification_outbox o ON o.webhook_id = d.webhook_id \
     WHERE o.status = 'delivered' AND d.attempted_at < $1";

/// How many delivery log rows [`prune_deliveries`] would delete.
pub async fn prunable_deliveries(pool: &AnyPool, before: i64) -> Result<u64, NotificationError> {
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM ({PRUNABLE_DELIVERIES}) AS x"
    ))
    .bind(before)
    .fetch_one(pool)
    .await
    .map_err(NotificationError::db("counting prunable deliveries"))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Deletes at most `batch` delivery log rows of delivered webhooks attempted before `before`;
/// returns how many went.
pub async fn prune_deliveries(
    pool: &AnyPool,
    before: i64,
    batch: i64,
) -> Result<u64, NotificationError> {
    let done = sqlx::query(&format!(
        "DELETE FROM notification_deliveries WHERE id IN ({PRUNABLE_DELIVERIES} LIMIT $2)"
    ))
    .bind(before)
    .bind(batch)
    .execute(pool)
    .await
    .map_err(NotificationError::db("pruning deliveries"))?;
    Ok(done.rows_affected())
}
