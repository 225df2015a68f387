//! The consumer's tables, all prefixed `erp_`, as versioned migrations in
//! `crates/erp-receivables/migrations/{postgres,sqlite}/` (component `erp-receivables`; see
//! `ledgerflow_store::migrate`).
//!
//! Only TEXT and BIGINT columns (amounts in minor units, timestamps in microseconds), and text
//! primary keys (deterministic UUIDs or business ids), so one statement text serves both
//! backends and no autoincrement dialect is needed.
//!
//! The unique keys are the second line of defence against double posting, behind the inbox:
//!
//! - `erp_journal_entries`: UNIQUE (tenant_id, event_id, kind): one journal per event and role.
//!   An application journal is keyed by its payment's event, and a payment is applied at most
//!   once (`erp_applications` primary key), so this holds for applications too.
//! - `erp_ar_documents`, `erp_payments`: primary key on the business id, UNIQUE (tenant_id,
//!   event_id).
//! - `erp_applications`: primary key (tenant_id, payment_id): a payment is never applied twice.
//! - `erp_outbox`: primary key = journal id, UNIQUE `idempotency_key` (= the external id): one
//!   posting per journal and per external id.
//!
//! `erp_outbox` grew columns when ERP adapters replaced the generic POST; the change is
//! additive. The baseline (0001) adopts a database of any earlier release: a new database gets
//! the whole table from `CREATE TABLE`; an older Postgres table gets the new columns from
//! `ALTER TABLE ... ADD COLUMN IF NOT EXISTS` in the file; SQLite has no `IF NOT EXISTS` for
//! columns, so the migrator adds the missing ones ([`ADDED_COLUMNS`]) before the file runs.
//! Rows from before adapters are migrated by idempotent updates at the end of the file:
//! `acked` becomes `confirmed`, and `pending` rows without a route (rendered for the generic
//! receiver) are parked as `failed` with class `mapping`, to be re-derived by a replay.

use ledgerflow_store::{AddedColumn, Backend, Migration, Migrations};
use sqlx::{AnyConnection, Row};

/// The component name of these migrations.
pub const COMPONENT: &str = "erp-receivables";

const fn text(column: &'static str) -> AddedColumn {
    typed(column, "TEXT")
}

const fn typed(column: &'static str, definition: &'static str) -> AddedColumn {
    AddedColumn {
        table: "erp_outbox",
        column,
        definition,
    }
}

/// Columns added to `erp_outbox` by the adapters, with their type, in order.
const ADDED_COLUMNS: &[AddedColumn] = &[
    text("external_id"),
    text("journal_kind"),
    text("document_kind"),
    text("erp_account"),
    text("route"),
    text("config_version"),
    text("job_ref"),
    text("erp_document_id"),
    text("last_error_class"),
    typed("indefinite", "BIGINT NOT NULL DEFAULT 0"),
    text("last_request"),
    text("last_response"),
    text("history"),
    typed("updated_at", "BIGINT"),
    typed("confirmed_at", "BIGINT"),
    typed("resolved_at", "BIGINT"),
    text("resolved_by"),
    text("resolution"),
];

const POSTGRES: Migrations = Migrations::new(
    COMPONENT,
    &[
        Migration::new(
            1,
            "baseline",
            include_str!("../migrations/postgres/0001_baseline.sql"),
        ),
        Migration::new(
            2,
            "claim_index",
            include_str!("../migrations/postgres/0002_claim_index.sql"),
        ),
        Migration::new(
            3,
            "outbox_journal_index",
            include_str!("../migrations/postgres/0003_outbox_journal_index.sql"),
        ),
    ],
);

const SQLITE: Migrations = Migrations::new(
    COMPONENT,
    &[
        Migration::new(
            1,
            "baseline",
            include_str!("../migrations/sqlite/0001_baseline.sql"),
        )
        .adding_on_sqlite(ADDED_COLUMNS),
        Migration::new(
            2,
            "claim_index",
            include_str!("../migrations/sqlite/0002_claim_index.sql"),
        ),
        Migration::new(
            3,
            "outbox_journal_index",
            include_str!("../migrations/sqlite/0003_outbox_journal_index.sql"),
        ),
    ],
);

/// The consumer's migrations for a backend.
pub fn migrations(backend: Backend) -> Migrations {
    match backend {
        Backend::Postgres => POSTGRES,
        Backend::Sqlite => SQLITE,
    }
}

/// Adds the columns an `erp_outbox` of a SQLite database created before the adapters lacks.
/// The baseline migration does this when it adopts such a database, so after
/// `Store::apply_schema` this is a no-op (one pragma read); kept for the reconcile's check
/// until it relies on the migrations alone.
pub async fn upgrade_sqlite(conn: &mut AnyConnection, backend: Backend) -> Result<(), sqlx::Error> {
    if backend != Backend::Sqlite {
        return Ok(());
    }
    let rows = sqlx::query("SELECT name FROM pragma_table_info('erp_outbox')")
        .fetch_all(&mut *conn)
        .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut present = Vec::with_capacity(rows.len());
    for row in rows {
        present.push(row.try_get::<String, _>(0)?);
    }
    for added in ADDED_COLUMNS {
        if !present.iter().any(|p| p == added.column) {
            sqlx::query(&format!(
                "ALTER TABLE erp_outbox ADD COLUMN {} {}",
                added.column, added.definition
            ))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_portable_and_the_baseline_adopts() {
        for backend in [Backend::Postgres, Backend::Sqlite] {
            let baseline = migrations(backend).migrations()[0].sql;
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
            // Adoption of an earlier release's database: nothing is created unconditionally.
            assert!(!baseline.contains("CREATE TABLE erp_"), "{backend:?}");
            assert!(!baseline.contains("CREATE INDEX erp_"), "{backend:?}");
            assert_eq!(baseline.matches("UPDATE erp_outbox").count(), 2);
        }
        let pg = migrations(Backend::Postgres).migrations()[0].sql;
        for added in ADDED_COLUMNS {
            let alter = format!(
                "ALTER TABLE erp_outbox ADD COLUMN IF NOT EXISTS {} {};",
                added.column, added.definition
            );
            assert!(pg.contains(&alter), "{alter}");
        }
    }
}
