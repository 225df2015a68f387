//! The store's own tables. Idempotent DDL, applied at every start under a lock so several
//! processes starting together on one Postgres do not race on `CREATE TABLE IF NOT EXISTS`.

use crate::{Backend, Store, StoreError};

/// Advisory lock key for DDL (arbitrary, stable).
const DDL_LOCK_KEY: i64 = 0x6c65_6467_6572; // "ledger"

/// Runs statements on one connection, in a transaction, holding the DDL lock (Postgres).
pub(crate) async fn apply<S: AsRef<str>>(
    store: &Store,
    statements: &[S],
) -> Result<(), StoreError> {
    let mut tx = store
        .pool()
        .begin()
        .await
        .map_err(StoreError::query("beginning ddl"))?;
    if store.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(DDL_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query("taking the ddl lock"))?;
    }
    for statement in statements {
        sqlx::query(statement.as_ref())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query("applying the schema"))?;
    }
    tx.commit()
        .await
        .map_err(StoreError::query("committing ddl"))
}

/// The store's tables; only the binary column type differs between the dialects.
fn tables(blob: &str) -> Vec<String> {
    vec![
        // The dedup store: one row per (consumer, event) ever applied.
        "CREATE TABLE IF NOT EXISTS inbox (
            consumer TEXT NOT NULL,
            event_id TEXT NOT NULL,
            payload_hash TEXT NOT NULL,
            tenant_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            topic TEXT NOT NULL,
            partition INTEGER NOT NULL,
            \"offset\" BIGINT NOT NULL,
            applied_at BIGINT NOT NULL,
            PRIMARY KEY (consumer, event_id)
        )"
        .to_owned(),
        // Positions of record: the next offset to process per consumer, topic and partition.
        "CREATE TABLE IF NOT EXISTS positions (
            consumer TEXT NOT NULL,
            topic TEXT NOT NULL,
            partition INTEGER NOT NULL,
            next_offset BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (consumer, topic, partition)
        )"
        .to_owned(),
        // The audit log: one hash chain per (consumer, topic, partition), ordered by seq.
        "CREATE TABLE IF NOT EXISTS audit_log (
            consumer TEXT NOT NULL,
            topic TEXT NOT NULL,
            partition INTEGER NOT NULL,
            seq BIGINT NOT NULL,
            \"offset\" BIGINT NOT NULL,
            event_id TEXT,
            tenant_id TEXT,
            event_type TEXT,
            decision TEXT NOT NULL,
            reason TEXT,
            payload_hash TEXT,
            schema_id BIGINT,
            detail TEXT,
            recorded_at BIGINT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            correlation_id TEXT,
            trace_id TEXT,
            PRIMARY KEY (consumer, topic, partition, seq)
        )"
        .to_owned(),
        // No index by event id: nothing reads the chain by event (an event's coordinates are in
        // the inbox or the dead letters, and the chain is read by partition), and a random-key
        // index would cost every appended row a random page.
        format!(
            "CREATE TABLE IF NOT EXISTS dead_letters (
            id TEXT PRIMARY KEY,
            consumer TEXT NOT NULL,
            topic TEXT NOT NULL,
            partition INTEGER NOT NULL,
            \"offset\" BIGINT NOT NULL,
            reason TEXT NOT NULL,
            error TEXT NOT NULL,
            record_key {blob},
            record_value {blob},
            headers TEXT NOT NULL,
            schema_id BIGINT,
            event_id TEXT,
            tenant_id TEXT,
            event_type TEXT,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            UNIQUE (consumer, topic, partition, \"offset\")
        )"
        ),
        "CREATE INDEX IF NOT EXISTS dead_letters_open ON dead_letters (consumer, status, reason)"
            .to_owned(),
    ]
}

/// Columns added to `audit_log` after its first release (nullable, so old rows stay as they
/// were and keep their hashes): the event's correlation id and the record's W3C trace id.
const AUDIT_ADDED_COLUMNS: &[&str] = &["correlation_id", "trace_id"];

pub(crate) fn core_statements(backend: Backend) -> Vec<String> {
    let mut statements = tables(match backend {
        Backend::Postgres => "BYTEA",
        Backend::Sqlite => "BLOB",
    });
    if backend == Backend::Postgres {
        for column in AUDIT_ADDED_COLUMNS {
            statements.push(format!(
                "ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS {column} TEXT"
            ));
        }
    }
    let triggers: &[&str] = match backend {
        Backend::Postgres => &[
            "CREATE OR REPLACE FUNCTION ledgerflow_audit_append_only() RETURNS trigger AS $body$
             BEGIN
                RAISE EXCEPTION 'audit_log is append-only: % rejected', TG_OP;
             END
             $body$ LANGUAGE plpgsql",
            "CREATE OR REPLACE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
             FOR EACH ROW EXECUTE FUNCTION ledgerflow_audit_append_only()",
            "CREATE OR REPLACE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
             FOR EACH STATEMENT EXECUTE FUNCTION ledgerflow_audit_append_only()",
        ],
        Backend::Sqlite => &[
            "CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
             BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE rejected'); END",
            "CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
             BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE rejected'); END",
        ],
    };
    statements.extend(triggers.iter().map(|s| (*s).to_owned()));
    statements
}

/// Adds the columns an `audit_log` of a SQLite file created before them lacks (SQLite has no
/// `ADD COLUMN IF NOT EXISTS`; Postgres gets them from [`core_statements`]).
pub(crate) async fn upgrade_sqlite(store: &Store) -> Result<(), StoreError> {
    if store.backend() != Backend::Sqlite {
        return Ok(());
    }
    let present: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('audit_log')")
            .fetch_all(store.pool())
            .await
            .map_err(StoreError::query("reading the audit_log columns"))?;
    for column in AUDIT_ADDED_COLUMNS {
        if !present.iter().any(|p| p == column) {
            sqlx::query(&format!("ALTER TABLE audit_log ADD COLUMN {column} TEXT"))
                .execute(store.pool())
                .await
                .map_err(StoreError::query("adding an audit_log column"))?;
        }
    }
    Ok(())
}
