//! The consumer's tables, prefixed `notification_`. Idempotent DDL for Postgres and SQLite.
//!
//! Only TEXT and BIGINT columns (timestamps in microseconds since the Unix epoch), text
//! primary keys, so one statement text serves both backends.
//!
//! - `notification_outbox`: one row per (notification, endpoint), primary key = webhook-id, so
//!   the writer's `ON CONFLICT (webhook_id) DO NOTHING` makes a second derivation of the same
//!   notification a no-op. Route columns (url, secret reference, rate limit) are copied from the
//!   tenant at mapping time; `secret_ref` is the JSON of the secret *reference*, never a secret.
//!   `status` is `pending`, `delivered` or `failed`. `attempts` counts every attempt ever made;
//!   `requeued_attempts` is its value when an operator last re-queued the row, so a re-queued
//!   row gets a fresh budget while attempt numbers keep growing.
//! - `notification_deliveries`: the delivery log, one row per attempt (webhook-id, attempt
//!   number, HTTP status or error, latency, time).

use ledgerflow_store::Backend;

const STATEMENTS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS notification_outbox (
        webhook_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        kind TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        url TEXT NOT NULL,
        secret_ref TEXT NOT NULL,
        rate_limit_per_sec BIGINT,
        body TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        requeued_attempts BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        claim_token TEXT,
        last_status BIGINT,
        last_error TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        delivered_at BIGINT
    )",
    "CREATE INDEX IF NOT EXISTS notification_outbox_due
        ON notification_outbox (status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS notification_outbox_tenant
        ON notification_outbox (tenant_id, status)",
    "CREATE TABLE IF NOT EXISTS notification_deliveries (
        id TEXT PRIMARY KEY,
        webhook_id TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        status_code BIGINT,
        error TEXT,
        latency_ms BIGINT NOT NULL,
        attempted_at BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS notification_deliveries_webhook
        ON notification_deliveries (webhook_id, attempt)",
];

/// The DDL, in order. The same text serves both backends.
pub fn statements(backend: Backend) -> Vec<String> {
    let _ = backend;
    STATEMENTS.iter().map(|s| (*s).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_is_idempotent_and_portable() {
        for backend in [Backend::Postgres, Backend::Sqlite] {
            let all = statements(backend);
            assert_eq!(all.len(), 5);
            for s in all {
                assert!(s.contains("IF NOT EXISTS"), "{s}");
                assert!(s.contains(" notification_"), "{s}");
                for banned in [
                    "BLOB",
                    "BYTEA",
                    "NUMERIC",
                    "SERIAL",
                    "AUTOINCREMENT",
                    "REAL",
                ] {
                    assert!(!s.contains(banned), "{banned} in {s}");
                }
            }
        }
    }
}
