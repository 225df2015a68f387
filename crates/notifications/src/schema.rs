//! The consumer's tables, prefixed `notification_`, as versioned migrations in
//! `crates/notifications/migrations/{postgres,sqlite}/` (component `notifications`; see
//! `ledgerflow_store::migrate`).
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

use ledgerflow_store::{Backend, Migration, Migrations};

/// The component name of these migrations.
pub const COMPONENT: &str = "notifications";

const POSTGRES: Migrations = Migrations::new(
    COMPONENT,
    &[Migration::new(
        1,
        "baseline",
        include_str!("../migrations/postgres/0001_baseline.sql"),
    )],
);

const SQLITE: Migrations = Migrations::new(
    COMPONENT,
    &[Migration::new(
        1,
        "baseline",
        include_str!("../migrations/sqlite/0001_baseline.sql"),
    )],
);

/// The consumer's migrations for a backend.
pub fn migrations(backend: Backend) -> Migrations {
    match backend {
        Backend::Postgres => POSTGRES,
        Backend::Sqlite => SQLITE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_portable_and_the_baseline_adopts() {
        for backend in [Backend::Postgres, Backend::Sqlite] {
            let baseline = migrations(backend).migrations()[0].sql;
            assert_eq!(baseline.matches("IF NOT EXISTS notification_").count(), 5);
            assert_eq!(baseline.matches("CREATE ").count(), 5);
            for banned in [
                "BLOB",
                "BYTEA",
                "NUMERIC",
                "SERIAL",
                "AUTOINCREMENT",
                "REAL",
            ] {
                assert!(!baseline.contains(banned), "{banned} in {backend:?}");
            }
        }
    }
}
