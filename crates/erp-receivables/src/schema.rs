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
//! - `erp_outbox`: primary key = journal id, UNIQUE idempotency key: one delivery per journal.

use ledgerflow_store::Backend;

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
    // One delivery per journal to the tenant's ERP. Route columns are copied from the tenant
    // at mapping time; `credential` is the JSON of the secret *reference*, never a secret.
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
        external_ref TEXT
    )",
    "CREATE INDEX IF NOT EXISTS erp_outbox_due ON erp_outbox (status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS erp_outbox_tenant ON erp_outbox (tenant_id, status)",
];

/// The DDL, in order. The same text serves both backends today; the parameter keeps the
/// signature of [`ledgerflow_store::ConsumerLogic::schema`].
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
            for s in statements(backend) {
                assert!(s.contains("IF NOT EXISTS"), "{s}");
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
