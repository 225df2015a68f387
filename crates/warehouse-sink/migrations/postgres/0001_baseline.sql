-- ledgerflow-warehouse-sink, migration 0001 (postgres): the star schema of the catalogue in
-- src/table.rs as the last release before versioned migrations left it (a unit test pins the
-- two together). IF NOT EXISTS throughout, so it also adopts a database that release created.

CREATE SCHEMA IF NOT EXISTS warehouse;

CREATE TABLE IF NOT EXISTS warehouse.dim_tenant (
    tenant_id TEXT NOT NULL,
    legal_entity TEXT NOT NULL,
    functional_currency TEXT NOT NULL,
    PRIMARY KEY (tenant_id)
);

CREATE TABLE IF NOT EXISTS warehouse.dim_customer (
    tenant_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    valid_from BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    name TEXT NOT NULL,
    email TEXT,
    country TEXT NOT NULL,
    currency TEXT NOT NULL,
    tax_id TEXT,
    valid_to BIGINT,
    is_current BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, valid_from, event_id)
);

CREATE INDEX IF NOT EXISTS warehouse_dim_customer_by_time ON warehouse.dim_customer (valid_from);

CREATE TABLE IF NOT EXISTS warehouse.fact_subscription_event (
    tenant_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    effective_at BIGINT NOT NULL,
    plan_id TEXT,
    product_family TEXT,
    billing_interval TEXT,
    currency TEXT,
    unit_amount_minor BIGINT,
    cancel_reason TEXT,
    occurred_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE INDEX IF NOT EXISTS warehouse_fact_subscription_event_by_time ON warehouse.fact_subscription_event (effective_at);

CREATE TABLE IF NOT EXISTS warehouse.fact_usage (
    tenant_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    meter TEXT NOT NULL,
    quantity_micros BIGINT NOT NULL,
    period_start BIGINT NOT NULL,
    period_end BIGINT NOT NULL,
    occurred_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE INDEX IF NOT EXISTS warehouse_fact_usage_by_time ON warehouse.fact_usage (period_start);

CREATE TABLE IF NOT EXISTS warehouse.fact_invoice (
    tenant_id TEXT NOT NULL,
    invoice_id TEXT NOT NULL,
    invoice_number TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    subscription_id TEXT,
    currency TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    subtotal_minor BIGINT NOT NULL,
    tax_minor BIGINT NOT NULL,
    total_minor BIGINT NOT NULL,
    line_count BIGINT NOT NULL,
    purchase_order TEXT,
    event_id TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, invoice_id)
);

CREATE INDEX IF NOT EXISTS warehouse_fact_invoice_by_time ON warehouse.fact_invoice (issued_at);

CREATE INDEX IF NOT EXISTS warehouse_fact_invoice_by_customer ON warehouse.fact_invoice (tenant_id, customer_id);

CREATE TABLE IF NOT EXISTS warehouse.fact_invoice_line (
    tenant_id TEXT NOT NULL,
    invoice_id TEXT NOT NULL,
    line_no BIGINT NOT NULL,
    line_kind TEXT NOT NULL,
    line_id TEXT,
    description TEXT,
    product_family TEXT,
    jurisdiction TEXT,
    rate_bps BIGINT,
    quantity_micros BIGINT,
    unit_amount_minor BIGINT,
    taxable_amount_minor BIGINT,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, invoice_id, line_no)
);

CREATE INDEX IF NOT EXISTS warehouse_fact_invoice_line_by_time ON warehouse.fact_invoice_line (issued_at);

CREATE TABLE IF NOT EXISTS warehouse.fact_payment (
    tenant_id TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    invoice_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    fee_minor BIGINT NOT NULL,
    net_minor BIGINT NOT NULL,
    method TEXT NOT NULL,
    processor_reference TEXT NOT NULL,
    settlement_currency TEXT,
    captured_at BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, payment_id)
);

CREATE INDEX IF NOT EXISTS warehouse_fact_payment_by_time ON warehouse.fact_payment (captured_at);

CREATE INDEX IF NOT EXISTS warehouse_fact_payment_by_invoice ON warehouse.fact_payment (tenant_id, invoice_id);

CREATE TABLE IF NOT EXISTS warehouse.fact_credit_memo (
    tenant_id TEXT NOT NULL,
    credit_memo_id TEXT NOT NULL,
    credit_memo_number TEXT NOT NULL,
    invoice_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    product_family TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    tax_minor BIGINT NOT NULL,
    total_minor BIGINT NOT NULL,
    reason TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, credit_memo_id)
);

CREATE INDEX IF NOT EXISTS warehouse_fact_credit_memo_by_time ON warehouse.fact_credit_memo (issued_at);

CREATE INDEX IF NOT EXISTS warehouse_fact_credit_memo_by_invoice ON warehouse.fact_credit_memo (tenant_id, invoice_id);
