//! `ledgerflow retention`: prune rows that exist only for delivery or deduplication once they
//! are older than the replay horizon ([`ledgerflow_service::ops::retention`]). Flags and
//! rendering only.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use ledgerflow_core::rfc3339_micros;
use ledgerflow_service::Environment;
use ledgerflow_service::ops::Progress;
use ledgerflow_service::ops::retention::{self, RetentionReport, RetentionRequest};

use crate::args::{DatabaseArgs, Format, OperatorArgs, print_json};

/// Exit codes (also in `--help`).
const EXIT_CODES: &str = "Exit codes: 0 success (the dry run's counts, or the rows pruned); 1 an \
     error (database); 2 bad usage. A dry run unless --execute; an executed run is recorded in \
     the audit log (operation retention, one per consumer) with the horizon, and `ledgerflow \
     replay` then refuses to re-read the records whose dedup rows it pruned.";

/// Prune what only delivery and deduplication need, once older than the replay horizon:
/// inbox (dedup) rows, the delivery log of delivered webhooks and the attempt log of confirmed
/// or resolved ERP postings. Never the audit log, journals or outbox rows.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct RetentionArgs {
    /// Prune rows older than this (30d, 12h, 90m, 3600s). Records older than it can no longer
    /// be replayed; keep it at least as long as the billing topics' Kafka retention.
    #[arg(long, default_value = "30d", value_parser = retention::parse_older_than)]
    older_than: Duration,
    /// Delete (default: a dry run that only counts).
    #[arg(long)]
    execute: bool,
    /// Why (recorded in the audit log).
    #[arg(long, default_value = "retention")]
    reason: String,
    #[command(flatten)]
    operator: OperatorArgs,
    #[command(flatten)]
    db: DatabaseArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// One progress line on stderr per batch (stdout keeps the report alone).
#[derive(Debug, Default)]
struct ProgressLine {
    total: AtomicU64,
    done: AtomicU64,
}

impl Progress for ProgressLine {
    fn start(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }
    fn advance(&self, n: u64) {
        if n == 0 {
            return;
        }
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        eprintln!(
            "retention: {done}/{} rows pruned",
            self.total.load(Ordering::Relaxed)
        );
    }
}

pub(crate) async fn run(args: RetentionArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let store = args.db.open(env).await?;
    let request = RetentionRequest {
        older_than: args.older_than,
        execute: args.execute.then(|| args.operator.actor(&args.reason, env)),
    };
    let report = retention::retention(&store, &request, &ProgressLine::default()).await?;
    match args.format {
        Format::Json => print_json(&report)?,
        Format::Text => print_text(&report),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(report: &RetentionReport) {
    let verb = if report.mode == "execute" {
        "pruned"
    } else {
        "would prune (dry run; --execute to delete)"
    };
    println!(
        "horizon {} (rows older than it) — {verb}",
        rfc3339_micros(report.horizon)
    );
    println!(
        "{:<26} {:<16} {:<7} {:>10}",
        "table", "owner", "action", "rows"
    );
    for t in &report.tables {
        println!(
            "{:<26} {:<16} {:<7} {:>10}",
            t.table, t.owner, t.action, t.rows
        );
    }
    println!("{} rows in all", report.total());
    if let Some(id) = &report.operation_id {
        println!("operation {id} (audit log)");
    }
    for h in &report.horizons {
        println!(
            "replay of {} refused at or below {}/{} offset {}",
            h.consumer, h.topic, h.partition, h.max_pruned_offset
        );
    }
}
