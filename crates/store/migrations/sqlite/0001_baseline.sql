-- ledgerflow-store, migration 0001 (sqlite): the store's own tables as the last release before
-- versioned migrations left them. IF NOT EXISTS throughout, so this baseline also adopts a
-- database that release created (it has the tables and no ledgerflow_migrations rows).

CREATE TABLE IF NOT EXISTS inbox (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" BIGINT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE IF NOT EXISTS positions (
    consumer TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, topic, partition)
);

CREATE TABLE IF NOT EXISTS audit_log (
    consumer TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    "offset" BIGINT NOT NULL,
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
);

CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    consumer TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" BIGINT NOT NULL,
    reason TEXT NOT NULL,
    error TEXT NOT NULL,
    record_key BLOB,
    record_value BLOB,
    headers TEXT NOT NULL,
    schema_id BIGINT,
    event_id TEXT,
    tenant_id TEXT,
    event_type TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (consumer, topic, partition, "offset")
);

CREATE INDEX IF NOT EXISTS dead_letters_open ON dead_letters (consumer, status, reason);

CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE rejected'); END;

CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE rejected'); END;
