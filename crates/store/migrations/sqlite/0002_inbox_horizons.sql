-- ledgerflow-store, migration 0002: what `ledgerflow retention --execute` pruned from the inbox.
-- Per consumer, topic and partition, the highest offset whose dedup row was deleted and the
-- horizon (applied before it) of the run that did it. A replay refuses to re-read at or below
-- that offset: without its inbox row an event would be applied, and posted, a second time.
CREATE TABLE IF NOT EXISTS inbox_horizons (
    consumer TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    max_pruned_offset BIGINT NOT NULL,
    horizon BIGINT NOT NULL,
    operation_id TEXT NOT NULL,
    pruned_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, topic, partition)
);

-- Retention deletes the inbox by age in batches; applied_at only grows, so this index is
-- appended at its right edge by the hot path.
CREATE INDEX IF NOT EXISTS inbox_applied_at ON inbox (applied_at);
