-- ledgerflow-notifications, migration 0001 (postgres): the webhook outbox and delivery log as the
-- last release before versioned migrations left them. IF NOT EXISTS throughout, so it also
-- adopts a database that release created.

CREATE TABLE IF NOT EXISTS notification_outbox (
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
);

CREATE INDEX IF NOT EXISTS notification_outbox_due
    ON notification_outbox (status, next_attempt_at);

CREATE INDEX IF NOT EXISTS notification_outbox_tenant
    ON notification_outbox (tenant_id, status);

CREATE TABLE IF NOT EXISTS notification_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    status_code BIGINT,
    error TEXT,
    latency_ms BIGINT NOT NULL,
    attempted_at BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS notification_deliveries_webhook
    ON notification_deliveries (webhook_id, attempt);
