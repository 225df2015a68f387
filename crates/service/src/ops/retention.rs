//! Retention: prune rows that exist only for delivery or deduplication once they are older than
//! a replay horizon (`ledgerflow retention`).
//!
//! What goes, and why nothing else:
//!
//! | table | pruned | kept |
//! | --- | --- | --- |
//! | `inbox` (store) | dedup rows applied before the horizon | newer rows |
//! | `notification_deliveries` | attempt rows of `delivered` webhooks | attempts of pending or failed webhooks |
//! | `erp_outbox` attempt log (`history`, `last_request`, `last_response`) | cleared on `confirmed`/`resolved` postings | every row: the external id is the unique key against a second posting |
//!
//! Never: the audit log (the hash chains), journals, AR documents, warehouse facts, outbox rows
//! (the source of truth of a delivery), dead letters. A pruned inbox row means its event would
//! be applied again if its record were re-read, so before anything is deleted the highest
//! pruned offset per consumer, topic and partition is recorded
//! ([`ledgerflow_store::InboxHorizon`]) and `ledgerflow replay` refuses to read at or below it.
//!
//! A dry run (the default) only counts. An executed run deletes in batches and, when it pruned
//! something, appends one `retention` operation to each consumer's operations chain in the
//! audit log (the same operation id as the horizons it recorded).

use std::time::Duration;

use ledgerflow_core::{now_micros, rfc3339_micros};
use ledgerflow_erp_receivables::ops as erp_ops;
use ledgerflow_notifications::admin as webhooks;
use ledgerflow_store::{InboxHorizon, Store};
use serde::Serialize;

use super::{Actor, Progress, new_operation_id, record};
use crate::{ConsumerKind, ServiceError};

/// The default horizon: records older than this are not replayed (30 days; Kafka's retention of
/// the billing topics should not be longer, or a replay could reach records whose dedup rows
/// are gone; the replay refuses those).
pub const DEFAULT_OLDER_THAN: Duration = Duration::from_secs(30 * 24 * 3600);

/// Rows deleted (or cleared) per statement.
pub const BATCH: i64 = 5_000;

/// `30d`, `12h`, `90m`, `3600s` or a bare number of seconds.
pub fn parse_older_than(raw: &str) -> Result<Duration, String> {
    let trimmed = raw.trim();
    if let Some(days) = trimmed.strip_suffix('d') {
        let days: u64 = days
            .parse()
            .map_err(|_| format!("{raw:?} is not a duration like 30d, 12h, 90m"))?;
        return Ok(Duration::from_secs(days.saturating_mul(24 * 3600)));
    }
    crate::config::parse_duration(trimmed)
        .map_err(|_| format!("{raw:?} is not a duration like 30d, 12h, 90m, 3600s"))
}

/// What to prune.
#[derive(Debug, Clone)]
pub struct RetentionRequest {
    /// Rows older than this go.
    pub older_than: Duration,
    /// Delete (who and why, audited); `None`: a dry run.
    pub execute: Option<Actor>,
}

/// One table's rows.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableCount {
    /// The table (or `erp_outbox.attempt_log`).
    pub table: &'static str,
    /// Its owner (`store`, a consumer).
    pub owner: &'static str,
    /// `delete` or `clear`.
    pub action: &'static str,
    /// Rows (that would be) deleted or cleared.
    pub rows: u64,
}

/// What a retention run did or would do.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionReport {
    /// `dry-run` or `execute`.
    pub mode: &'static str,
    /// Rows older than this (micros since the Unix epoch) are pruned.
    pub horizon: i64,
    /// The audited operation (executed runs that pruned something).
    pub operation_id: Option<String>,
    /// Per table.
    pub tables: Vec<TableCount>,
    /// Inbox horizons recorded now (executed runs): a replay refuses at or below them.
    pub horizons: Vec<InboxHorizon>,
}

impl RetentionReport {
    /// Rows in all tables.
    pub fn total(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Counts, and with `execute` prunes, everything older than the horizon.
pub async fn retention(
    store: &Store,
    req: &RetentionRequest,
    progress: &dyn Progress,
) -> Result<RetentionReport, ServiceError> {
    // Every consumer's tables exist afterwards, so the counts below need no existence checks.
    for kind in ConsumerKind::ALL {
        store
            .apply_schema(&kind.schema(store.backend()))
            .await
            .map_err(ServiceError::store(format!("applying the {kind} schema")))?;
    }
    let older = i64::try_from(req.older_than.as_micros()).unwrap_or(i64::MAX);
    let horizon = now_micros().saturating_sub(older);
    let inbox = store
        .inbox_prunable(horizon)
        .await
        .map_err(ServiceError::store("counting prunable inbox rows"))?;
    let inbox_rows: u64 = inbox.iter().map(|(_, n)| n).sum();
    let deliveries = webhooks::prunable_deliveries(store.pool(), horizon)
        .await
        .map_err(ServiceError::component(
            "counting prunable webhook deliveries",
        ))?;
    let attempt_logs = erp_ops::prunable_attempt_logs(store.pool(), horizon)
        .await
        .map_err(ServiceError::component(
            "counting prunable erp attempt logs",
        ))?;
    let mut tables = vec![
        TableCount {
            table: "inbox",
            owner: "store",
            action: "delete",
            rows: inbox_rows,
        },
        TableCount {
            table: "notification_deliveries",
            owner: ledgerflow_notifications::CONSUMER_NAME,
            action: "delete",
            rows: deliveries,
        },
        TableCount {
            table: "erp_outbox.attempt_log",
            owner: ledgerflow_erp_receivables::CONSUMER_NAME,
            action: "clear",
            rows: attempt_logs,
        },
    ];
    let Some(actor) = &req.execute else {
        return Ok(RetentionReport {
            mode: "dry-run",
            horizon,
            operation_id: None,
            tables,
            horizons: Vec::new(),
        });
    };

    let id = new_operation_id();
    progress.start(tables.iter().map(|t| t.rows).sum());
    // The horizons first: should the run stop half way, replay already refuses what may be gone.
    let horizons = store
        .record_inbox_horizons(horizon, &id)
        .await
        .map_err(ServiceError::store("recording the inbox horizons"))?;
    for table in &mut tables {
        let mut done = 0u64;
        loop {
            let n = match table.table {
                "inbox" => store
                    .prune_inbox(horizon, BATCH)
                    .await
                    .map_err(ServiceError::store("pruning the inbox"))?,
                "notification_deliveries" => {
                    webhooks::prune_deliveries(store.pool(), horizon, BATCH)
                        .await
                        .map_err(ServiceError::component("pruning webhook deliveries"))?
                }
                _ => erp_ops::prune_attempt_logs(store.pool(), horizon, BATCH)
                    .await
                    .map_err(ServiceError::component("pruning erp attempt logs"))?,
            };
            done += n;
            progress.advance(n);
            if n == 0 {
                break;
            }
        }
        table.rows = done;
    }
    let changed = tables.iter().any(|t| t.rows > 0) || !horizons.is_empty();
    // As postings requeue: an executed run that changed nothing leaves no audit entry.
    for kind in ConsumerKind::ALL.into_iter().filter(|_| changed) {
        let name = kind.name();
        let pruned: Vec<&TableCount> = tables
            .iter()
            .filter(|t| t.owner == name || t.owner == "store")
            .collect();
        let details = serde_json::json!({
            "horizon": horizon,
            "older_than_seconds": req.older_than.as_secs(),
            "inbox_rows": inbox.iter().find(|(c, _)| c == name).map_or(0, |(_, n)| *n),
            "tables": pruned,
            "horizons": horizons.iter().filter(|h| h.consumer == name).collect::<Vec<_>>(),
        });
        record(store, &id, name, "retention", actor, details).await?;
    }
    Ok(RetentionReport {
        mode: "execute",
        horizon,
        operation_id: changed.then_some(id),
        tables,
        horizons,
    })
}

/// The replay check: a span that starts at or below a recorded inbox horizon of its partition
/// would re-read records whose dedup rows are gone.
pub fn refuse_below_horizon(
    consumer: &str,
    horizons: &[InboxHorizon],
    spans: &[super::Span],
) -> Result<(), ServiceError> {
    for span in spans {
        let Some(h) = horizons.iter().find(|h| {
            h.consumer == consumer && h.topic == span.topic && h.partition == span.partition
        }) else {
            continue;
        };
        if span.start <= h.max_pruned_offset && span.end > span.start {
            return Err(ServiceError::Refused(format!(
                "refusing to replay {}/{} from offset {}: retention ({}) pruned the dedup rows \
                 of {consumer} up to offset {} (events applied before the horizon {}), so those \
                 records would be applied a second time; replay from offset {} or later (or a \
                 --from after the horizon)",
                span.topic,
                span.partition,
                span.start,
                h.operation_id,
                h.max_pruned_offset,
                rfc3339_micros(h.horizon),
                h.max_pruned_offset + 1,
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Span;

    fn horizon() -> InboxHorizon {
        InboxHorizon {
            consumer: "erp-receivables".into(),
            topic: "billing".into(),
            partition: 0,
            max_pruned_offset: 41,
            horizon: 1_700_000_000_000_000,
            operation_id: "op_1".into(),
            pruned_at: 1_700_000_000_000_001,
        }
    }

    fn span(partition: i32, start: i64, end: i64) -> Span {
        Span {
            topic: "billing".into(),
            partition,
            start,
            end,
        }
    }

    #[test]
    fn replay_is_refused_at_or_below_the_pruned_offset_only() {
        let hs = [horizon()];
        let err = refuse_below_horizon("erp-receivables", &hs, &[span(0, 41, 50)]).unwrap_err();
        assert!(err.is_usage(), "a refusal exits 2");
        let text = err.to_string();
        assert!(text.contains("up to offset 41"), "{text}");
        assert!(text.contains("2023-11-14T22:13:20.000000Z"), "{text}");
        assert!(text.contains("from offset 42 or later"), "{text}");
        refuse_below_horizon("erp-receivables", &hs, &[span(0, 42, 50)]).unwrap();
        // Another partition, another consumer, an empty span: no horizon applies.
        refuse_below_horizon("erp-receivables", &hs, &[span(1, 0, 50)]).unwrap();
        refuse_below_horizon("warehouse", &hs, &[span(0, 0, 50)]).unwrap();
        refuse_below_horizon("erp-receivables", &hs, &[span(0, 10, 10)]).unwrap();
    }

    #[test]
    fn horizons_parse_in_days_too() {
        assert_eq!(parse_older_than("30d"), Ok(DEFAULT_OLDER_THAN));
        assert_eq!(parse_older_than("12h"), Ok(Duration::from_secs(43_200)));
        assert!(parse_older_than("3w").is_err());
    }
}
