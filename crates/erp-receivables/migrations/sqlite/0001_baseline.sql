-- ledgerflow-erp-receivables, migration 0001 (sqlite): the consumer's tables, all prefixed erp_,
-- as the last release before versioned migrations left them. IF NOT EXISTS throughout, so it
-- also adopts a database that release created. See src/schema.rs for the keys' roles.

CREATE TABLE IF NOT EXISTS erp_customers (
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
);

CREATE TABLE IF NOT EXISTS erp_ar_documents (
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
);

CREATE INDEX IF NOT EXISTS erp_ar_documents_applies_to
    ON erp_ar_documents (tenant_id, applies_to);

CREATE TABLE IF NOT EXISTS erp_journal_entries (
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
);

CREATE INDEX IF NOT EXISTS erp_journal_entries_document
    ON erp_journal_entries (tenant_id, kind, document_id);

CREATE INDEX IF NOT EXISTS erp_journal_entries_posted
    ON erp_journal_entries (tenant_id, posted_at);

CREATE TABLE IF NOT EXISTS erp_journal_lines (
    entry_id TEXT NOT NULL,
    line_no BIGINT NOT NULL,
    account TEXT NOT NULL,
    debit_minor BIGINT NOT NULL,
    credit_minor BIGINT NOT NULL,
    PRIMARY KEY (entry_id, line_no)
);

CREATE TABLE IF NOT EXISTS erp_payments (
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
);

CREATE INDEX IF NOT EXISTS erp_payments_invoice ON erp_payments (tenant_id, invoice_id);

CREATE TABLE IF NOT EXISTS erp_applications (
    tenant_id TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    invoice_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    journal_id TEXT NOT NULL UNIQUE,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, payment_id)
);

CREATE INDEX IF NOT EXISTS erp_applications_invoice
    ON erp_applications (tenant_id, invoice_id);

CREATE TABLE IF NOT EXISTS erp_conflicts (
    tenant_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    document_id TEXT NOT NULL,
    existing_event_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE TABLE IF NOT EXISTS erp_outbox (
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
);

CREATE INDEX IF NOT EXISTS erp_outbox_due ON erp_outbox (status, next_attempt_at);

CREATE INDEX IF NOT EXISTS erp_outbox_tenant ON erp_outbox (tenant_id, status);

CREATE TABLE IF NOT EXISTS erp_outbox_dependencies (
    outbox_id TEXT NOT NULL,
    depends_on TEXT NOT NULL,
    PRIMARY KEY (outbox_id, depends_on)
);

-- Rows written before the ERP adapters (a SQLite file older than them gets the columns these
-- updates set from the migrator, before this file runs): acked becomes confirmed, and pending
-- rows rendered for the generic receiver are parked as failed (class mapping), to be re-derived
-- by a replay. Both match nothing on a newer database.
UPDATE erp_outbox SET status = 'confirmed', confirmed_at = acked_at,
    erp_document_id = external_ref, external_id = idempotency_key
WHERE status = 'acked';

UPDATE erp_outbox SET status = 'failed', last_error_class = 'mapping',
    last_error = 'rendered for the generic receiver before erp adapters; replay the event to post it',
    external_id = idempotency_key, claim_token = NULL
WHERE status = 'pending' AND route IS NULL;
