-- The dispatcher claims the earliest due posting of each open ERP account. This index hands
-- each account's undelivered postings in due order without reading the wide rows (payload,
-- request, response, history), so a claim costs a few index entries per account however
-- large the backlog; a scan of every due row made each claim read the whole backlog and
-- slowed delivery to a few postings a second at 35,000 pending.
CREATE INDEX IF NOT EXISTS erp_outbox_claim
    ON erp_outbox (erp_kind, erp_account, next_attempt_at, id)
    WHERE status IN ('pending', 'accepted') AND route IS NOT NULL;

