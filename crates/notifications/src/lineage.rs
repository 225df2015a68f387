//! The webhooks one event made, for `ledgerflow lineage`: each outbox message (endpoint,
//! webhook-id, state, attempts) with its delivery log. Reads only; the tables must exist (the
//! caller applies the schema). With the tenant the outbox lookup uses its tenant index.

use serde::Serialize;
use sqlx::{AnyPool, Row};

use crate::NotificationError;

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageAttempt {
    /// Attempt number.
    pub attempt: i64,
    /// HTTP status, when the endpoint answered.
    pub status_code: Option<i64>,
    /// Error, when it failed.
    pub error: Option<String>,
    /// Round trip (milliseconds).
    pub latency_ms: i64,
    /// When (micros).
    pub attempted_at: i64,
}

/// One webhook of the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageWebhook {
    /// The `webhook-id` header value (the outbox id).
    pub webhook_id: String,
    /// Endpoint id.
    pub endpoint_id: String,
    /// Endpoint URL.
    pub url: String,
    /// Kind of notification.
    pub kind: String,
    /// State (`pending`, `delivered`, `failed`, ...).
    pub status: String,
    /// Attempts counted.
    pub attempts: i64,
    /// HTTP status of the last attempt.
    pub last_status: Option<i64>,
    /// The last error.
    pub last_error: Option<String>,
    /// Delivered (micros).
    pub delivered_at: Option<i64>,
    /// The delivery log, oldest first.
    pub deliveries: Vec<LineageAttempt>,
}

/// notifications' part of an event's lineage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NotificationLineage {
    /// Webhooks by endpoint.
    pub webhooks: Vec<LineageWebhook>,
}

fn corrupt(what: &'static str) -> impl Fn(sqlx::Error) -> NotificationError {
    move |e| NotificationError::Corrupt(format!("{what}: {e}"))
}

/// The webhooks of event `event_id` (of `tenant`, when known).
pub async fn for_event(
    pool: &AnyPool,
    tenant: Option<&str>,
    event_id: &str,
) -> Result<NotificationLineage, NotificationError> {
    let rows = sqlx::query(
        "SELECT webhook_id, endpoint_id, url, kind, status, attempts, last_status, last_error, \
         delivered_at FROM notification_outbox \
         WHERE ($1 = '' OR tenant_id = $1) AND event_id = $2 ORDER BY endpoint_id, webhook_id",
    )
    .bind(tenant.unwrap_or(""))
    .bind(event_id)
    .fetch_all(pool)
    .await
    .map_err(NotificationError::db("reading an event's webhooks"))?;
    let mut out = NotificationLineage::default();
    for r in &rows {
        let get = corrupt("webhook");
        let webhook_id: String = r.try_get("webhook_id").map_err(&get)?;
        let deliveries = sqlx::query(
            "SELECT attempt, status_code, error, latency_ms, attempted_at \
             FROM notification_deliveries WHERE webhook_id = $1 ORDER BY attempt, attempted_at",
        )
        .bind(webhook_id.as_str())
        .fetch_all(pool)
        .await
        .map_err(NotificationError::db("reading a webhook's deliveries"))?
        .iter()
        .map(|d| {
            let get = corrupt("delivery");
            Ok(LineageAttempt {
                attempt: d.try_get("attempt").map_err(&get)?,
                status_code: d.try_get("status_code").map_err(&get)?,
                error: d.try_get("error").map_err(&get)?,
                latency_ms: d.try_get("latency_ms").map_err(&get)?,
                attempted_at: d.try_get("attempted_at").map_err(&get)?,
            })
        })
        .collect::<Result<Vec<_>, NotificationError>>()?;
        out.webhooks.push(LineageWebhook {
            webhook_id,
            endpoint_id: r.try_get("endpoint_id").map_err(&get)?,
            url: r.try_get("url").map_err(&get)?,
            kind: r.try_get("kind").map_err(&get)?,
            status: r.try_get("status").map_err(&get)?,
            attempts: r.try_get("attempts").map_err(&get)?,
            last_status: r.try_get("last_status").map_err(&get)?,
            last_error: r.try_get("last_error").map_err(&get)?,
            delivered_at: r.try_get("delivered_at").map_err(&get)?,
            deliveries,
        });
    }
    Ok(out)
}
