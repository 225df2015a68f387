//! ledgerflow-store: where effect-once is made.
//!
//! One database holds, for every consumer, the inbox (which event ids were applied, with their
//! payload hash), the consumer's positions of record (next offset per topic and partition), the
//! hash-chained audit log, dead letters, and the consumer's own effect tables. A batch of one
//! partition commits all of them in ONE transaction ([`Store::commit_batch`]), so after any
//! crash either the whole batch (effects, audit, position) is there or none of it is.
//!
//! Backends: Postgres (production) and SQLite (embedded default), picked by URL scheme. All SQL
//! goes through `sqlx::Any` with `$N` placeholders, which both accept, so the same statements
//! run on both and one conformance suite covers both.

mod audit;
mod batch;
mod consumer;
mod dead_letter;
mod error;
pub mod lineage;
pub mod migrate;
mod operations;
mod retention;
mod schema;
mod sql;
mod stats;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, ConnectOptions};

pub use audit::{
    AuditCoordinate, AuditHead, AuditRow, ChainBreak, ChainReport, Decision, GENESIS_HASH,
};
pub use batch::{BatchInput, BatchOutcome, DeadLetterInput, RecordOutcome, SkippedInput};
pub use consumer::{ConsumerLogic, Effects, ErasedConsumer};
pub use dead_letter::{DeadLetter, DeadLetterFilter, DeadLetterStatus, OpenDeadLetters};
pub use error::StoreError;
pub use migrate::{AddedColumn, Migration, MigrationReport, Migrations};
pub use operations::{OPERATIONS_TOPIC, OperationInput};
pub use retention::InboxHorizon;
pub use sql::{Cell, PushCell, Rows, Values, lock_tenants, pg_array, placeholders};
pub use stats::{DecisionCount, PositionRow, TenantStatusCount};

/// Which SQL dialect the store speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL 13+.
    Postgres,
    /// SQLite 3.35+ (RETURNING).
    Sqlite,
}

/// A connection pool plus its dialect. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens `sqlite://FILE` (created when missing) or `postgres://...` and applies the
    /// store's own pending migrations (refusing a database migrated by a newer binary).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl { url: redact(url) });
        };
        let url = if backend == Backend::Sqlite && !url.contains("mode=") {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_owned()
        };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|source| StoreError::Connect {
                url: redact(&url),
                source,
            })?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
        let mut pool_options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        pool_options = match backend {
            // One writer at a time is all SQLite allows; a single connection avoids
            // SQLITE_BUSY between our own tasks.
            Backend::Sqlite => pool_options.max_connections(1),
            Backend::Postgres => pool_options.max_connections(16),
        };
        let pool =
            pool_options
                .connect_with(options)
                .await
                .map_err(|source| StoreError::Connect {
                    url: redact(&url),
                    source,
                })?;
        let store = Self { pool, backend };
        if backend == Backend::Sqlite {
            for pragma in [
                "PRAGMA journal_mode=WAL",
                "PRAGMA synchronous=FULL",
                "PRAGMA busy_timeout=10000",
            ] {
                sqlx::query(pragma)
                    .execute(&store.pool)
                    .await
                    .map_err(StoreError::query("sqlite pragma"))?;
            }
        }
        store.apply_schema(&schema::migrations(backend)).await?;
        Ok(store)
    }

    /// The dialect.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for consumers' own reads (reconcile, reports).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A round trip to the database (the readiness check).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(StoreError::query("pinging the database"))
    }

    /// Whether a table exists (in the search path on Postgres).
    pub async fn table_exists(&self, table: &str) -> Result<bool, StoreError> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT CAST(COUNT(*) AS BIGINT) FROM sqlite_master \
                 WHERE type = 'table' AND name = $1"
            }
            Backend::Postgres => {
                "SELECT CAST(COUNT(*) AS BIGINT) FROM information_schema.tables \
                 WHERE table_name = $1 AND table_schema = ANY(current_schemas(false))"
            }
        };
        let n: i64 = sqlx::query_scalar(sql)
            .bind(table)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::query("looking up a table"))?;
        Ok(n > 0)
    }

    /// Applies a component's pending migrations (a consumer's [`ConsumerLogic::schema`]);
    /// see [`migrate::run`].
    pub async fn apply_schema(&self, migrations: &Migrations) -> Result<(), StoreError> {
        self.migrate(migrations).await.map(drop)
    }

    /// [`Store::apply_schema`], returning what was applied.
    pub async fn migrate(&self, migrations: &Migrations) -> Result<MigrationReport, StoreError> {
        migrate::run(&self.pool, self.backend, migrations).await
    }

    /// The store's own migrations for this backend (component `store`).
    pub fn own_migrations(&self) -> Migrations {
        schema::migrations(self.backend)
    }
}

/// Hides a password in a database URL.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[tokio::test]
    async fn tables_are_found_only_once_created() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        store.ping().await.unwrap();
        assert!(store.table_exists("dead_letters").await.unwrap());
        assert!(!store.table_exists("erp_outbox").await.unwrap());
        assert_eq!(
            store.rows_by_tenant_and_status("erp_outbox").await.unwrap(),
            None
        );
    }
}
