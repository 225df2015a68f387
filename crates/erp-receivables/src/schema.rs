//! The consumer's tables, all prefixed `erp_`. Idempotent DDL for Postgres and SQLite.
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
//! additive. A new database gets the whole table from `CREATE TABLE`; an existing Postgres
//! database gets the new columns from `ALTER TABLE ... ADD COLUMN IF NOT EXISTS` in the same
//! statement list (the store applies it at every start); SQLite has no `IF NOT EXISTS` for
//! columns, so [`upgrade_sqlite`] adds them, checked by the writer and the dispatcher before
//! they touch the table. Rows from before adapters are migrated by idempotent updates:
//! `acked` becomes `confirmed`, and `pending` rows without a route (rendered for the generic
//! receiver) are parked as `failed` with class `mapping`, to be re-derived by a replay.

use ledgerflow_store::Backend;
use sqlx::{AnyConnection, Row};

const STATEMENTS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS erp_customers (
        tenant_id TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        name TEXT NOT NULL,
        email TEXT,
        country TEXT NOT NULL,
        currency TEXT NOT NULL,
        tax_id TEXT,
        updated_at BIGINT NOT NULL,
        event_id TEXT NOT NULL,
        PRIMARY KEY (tenant_id, customer_id)
    )",
    // Invoices and credit memos. `open_minor` of an invoice is total - applied payments -
    // credit memos (negative once credited beyond what is still owed: a customer credit);
    // for a credit memo it is 0. `applies_to` is the credited invoice of a credit memo.
    "CREATE TABLE IF NOT EXISTS erp_ar_documents (
        tenant_id TEXT NOT NULL,
        doc_type TEXT NOT NULL,
        doc_id TEXT NOT NULL,
        doc_number TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        currency TEXT NOT NULL,
        total_minor BIGINT NOT NULL,
        open_minor BIGINT NOT NULL,
        applies_to TEXT,
        receivable_account TEXT NOT NULL,
        issued_at BIGINT NOT NULL,
        event_id TEXT NOT NULL,
        journal_id TEXT NOT NULL,
        PRIMARY KEY (tenant_id, doc_type, doc_id),
        UNIQUE (tenant_id, event_id)
    )",
    "CREATE INDEX IF NOT EXISTS erp_ar_documents_applies_to
        ON erp_ar_documents (tenant_id, applies_to)",
    "CREATE TABLE IF NOT EXISTS erp_journal_entries (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        currency TEXT NOT NULL,
        posted_at BIGINT NOT NULL,
        document_type TEXT NOT NULL,
        document_id TEXT NOT NULL,
        memo TEXT NOT NULL,
        total_minor BIGINT NOT NULL,
        line_count BIGINT NOT NULL,
        erp_kind TEXT,
        UNIQUE (tenant_id, event_id, kind)
    )",
    "CREATE INDEX IF NOT EXISTS erp_journal_entries_document
        ON erp_journal_entries (tenant_id, kind, document_id)",
    "CREATE INDEX IF NOT EXISTS erp_journal_entries_posted
        ON erp_journal_entries (tenant_id, posted_at)",
    "CREATE TABLE IF NOT EXISTS erp_journal_lines (
        entry_id TEXT NOT NULL,
        line_no BIGINT NOT NULL,
        account TEXT NOT NULL,
        debit_minor BIGINT NOT NULL,
        credit_minor BIGINT NOT NULL,
        PRIMARY KEY (entry_id, line_no)
    )",
    // `unapplied_minor` = amount - applied. A payment whose invoice has not arrived is held
    // (no application row yet) and applied when the invoice is posted.
    "CREATE TABLE IF NOT EXISTS erp_payments (
        tenant_id TEXT NOT NULL,
        payment_id TEXT NOT NULL,
        invoice_id TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        currency TEXT NOT NULL,
        amount_minor BIGINT NOT NULL,
        fee_minor BIGINT NOT NULL,
        unapplied_minor BIGINT NOT NULL,
        unapplied_account TEXT NOT NULL,
        captured_at BIGINT NOT NULL,
        event_id TEXT NOT NULL,
        journal_id TEXT NOT NULL,
        PRIMARY KEY (tenant_id, payment_id),
        UNIQUE (tenant_id, event_id)
    )",
    "CREATE INDEX IF NOT EXISTS erp_payments_invoice ON erp_payments (tenant_id, invoice_id)",
    "CREATE TABLE IF NOT EXISTS erp_applications (
        tenant_id TEXT NOT NULL,
        payment_id TEXT NOT NULL,
        invoice_id TEXT NOT NULL,
        currency TEXT NOT NULL,
        amount_minor BIGINT NOT NULL,
        journal_id TEXT NOT NULL UNIQUE,
        applied_at BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, payment_id)
    )",
    "CREATE INDEX IF NOT EXISTS erp_applications_invoice
        ON erp_applications (tenant_id, invoice_id)",
    // Events whose business document already exists under another event id (an upstream
    // re-send with a new id): nothing is posted for them, the operator sees them here and in
    // reconcile.
    "CREATE TABLE IF NOT EXISTS erp_conflicts (
        tenant_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        document_id TEXT NOT NULL,
        existing_event_id TEXT NOT NULL,
        PRIMARY KEY (tenant_id, event_id)
    )",
    // One posting per journal to the tenant's ERP (see `crate::posting`): the document
    // rendered for the ERP, its external id, the route it was rendered for (with secret
    // *references*, never secrets) and the fingerprint of the tenant configuration, then the
    // delivery state. Legacy columns kept for old rows: `endpoint` (= the route's base URL),
    // `credential` (= the auth table, references only), `idempotency_key` (= external_id),
    // `acked_at` and `external_ref` (no longer written; see confirmed_at, erp_document_id).
    "CREATE TABLE IF NOT EXISTS erp_outbox (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        journal_id TEXT NOT NULL,
        erp_kind TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        credential TEXT NOT NULL,
        rate_limit_per_sec BIGINT,
        idempotency_key TEXT NOT NULL UNIQUE,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        claim_token TEXT,
        last_status BIGINT,
        last_error TEXT,
        created_at BIGINT NOT NULL,
        acked_at BIGINT,
        external_ref TEXT,
        external_id TEXT,
        journal_kind TEXT,
        document_kind TEXT,
        erp_account TEXT,
        route TEXT,
        config_version TEXT,
        job_ref TEXT,
        erp_document_id TEXT,
        last_error_class TEXT,
        indefinite BIGINT NOT NULL DEFAULT 0,
        last_request TEXT,
        last_response TEXT,
        history TEXT,
        updated_at BIGINT,
        confirmed_at BIGINT,
        resolved_at BIGINT,
        resolved_by TEXT,
        resolution TEXT
    )",
    "CREATE INDEX IF NOT EXISTS erp_outbox_due ON erp_outbox (status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS erp_outbox_tenant ON erp_outbox (tenant_id, status)",
    // Postings that must be confirmed (or resolved) before another is sent: a payment applied
    // to an invoice waits for the invoice and the payment.
    "CREATE TABLE IF NOT EXISTS erp_outbox_dependencies (
        outbox_id TEXT NOT NULL,
        depends_on TEXT NOT NULL,
        PRIMARY KEY (outbox_id, depends_on)
    )",
];

/// Columns added to `erp_outbox` by the adapters, with their type, in order.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("external_id", "TEXT"),
    ("journal_kind", "TEXT"),
    ("document_kind", "TEXT"),
    ("erp_account", "TEXT"),
    ("route", "TEXT"),
    ("config_version", "TEXT"),
    ("job_ref", "TEXT"),
    ("erp_document_id", "TEXT"),
    ("last_error_class", "TEXT"),
    ("indefinite", "BIGINT NOT NULL DEFAULT 0"),
    ("last_request", "TEXT"),
    ("last_response", "TEXT"),
    ("history", "TEXT"),
    ("updated_at", "BIGINT"),
    ("confirmed_at", "BIGINT"),
    ("resolved_at", "BIGINT"),
    ("resolved_by", "TEXT"),
    ("resolution", "TEXT"),
];

/// Idempotent updates of rows written before the adapters.
const MIGRATE_ROWS: &[&str] = &[
    "UPDATE erp_outbox SET status = 'confirmed', confirmed_at = acked_at,
        erp_document_id = external_ref, external_id = idempotency_key
     WHERE status = 'acked'",
    "UPDATE erp_outbox SET status = 'failed', last_error_class = 'mapping',
        last_error = 'rendered for the generic receiver before erp adapters; replay the event to post it',
        external_id = idempotency_key, claim_token = NULL
     WHERE status = 'pending' AND route IS NULL",
];

/// The DDL, in order: the tables, then (Postgres) the added columns of an older `erp_outbox`,
/// then the row migrations. SQLite's added columns come from [`upgrade_sqlite`].
pub fn statements(backend: Backend) -> Vec<String> {
    let mut out: Vec<String> = STATEMENTS.iter().map(|s| (*s).to_owned()).collect();
    if backend == Backend::Postgres {
        for (column, ty) in ADDED_COLUMNS {
            out.push(format!(
                "ALTER TABLE erp_outbox ADD COLUMN IF NOT EXISTS {column} {ty}"
            ));
        }
        out.extend(MIGRATE_ROWS.iter().map(|s| (*s).to_owned()));
    }
    out
}

/// Adds the columns an `erp_outbox` of a SQLite database created before the adapters lacks,
/// and migrates its rows. Cheap when there is nothing to do (one pragma read); a no-op on
/// Postgres, whose statements do it.
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
    let missing: Vec<_> = ADDED_COLUMNS
        .iter()
        .filter(|(c, _)| !present.iter().any(|p| p == c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (column, ty) in missing {
        sqlx::query(&format!("ALTER TABLE erp_outbox ADD COLUMN {column} {ty}"))
            .execute(&mut *conn)
            .await?;
    }
    for statement in MIGRATE_ROWS {
        sqlx::query(statement).execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_is_idempotent_and_portable() {
        for backend in [Backend::Postgres, Backend::Sqlite] {
            for s in statements(backend) {
                assert!(
                    s.contains("IF NOT EXISTS") || s.starts_with("UPDATE erp_outbox"),
                    "{s}"
                );
                assert!(s.contains(" erp_"), "{s}");
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
