//! `ledgerflow replay plan|run`: arguments, progress bar and rendering of
//! [`ledgerflow_service::ops::replay`].

use std::process::ExitCode;

use clap::{Args, Subcommand};
use ledgerflow_service::ops::replay::{ReplayReport, ReplayRequest, ReplayRun};
use ledgerflow_service::{ConsumerKind, Environment};

use crate::args::{
    Bar, Format, OperatorArgs, PipelineArgs, parse_consumer, parse_time, print_json,
};

#[derive(Debug, Subcommand)]
pub(crate) enum ReplayCommand {
    /// Report what a replay of the range would do (writes nothing).
    Plan(PlanArgs),
    /// Push the range through the pipeline again (dedup: nothing is posted twice).
    Run(RunArgs),
}

/// The range and the filters.
#[derive(Debug, Args)]
pub(crate) struct RangeArgs {
    /// Consumer whose pipeline judges the records.
    #[arg(long, value_parser = parse_consumer)]
    consumer: ConsumerKind,
    /// Only this tenant, repeatable.
    #[arg(long = "tenant", id = "tenant_filter")]
    tenants: Vec<String>,
    /// Only this event type, repeatable (e.g. invoice_finalized).
    #[arg(long = "event-type")]
    event_types: Vec<String>,
    /// Range start by record time (RFC 3339 or YYYY-MM-DD, inclusive): offsets are asked of the
    /// broker for every partition of the consumer's topics. With --from-audit: audit time.
    #[arg(long, value_parser = parse_time)]
    from: Option<i64>,
    /// Range end by record time (exclusive; default: the end of each partition).
    #[arg(long, value_parser = parse_time)]
    to: Option<i64>,
    /// Offset range instead: this partition of the one `--topic`.
    #[arg(long, requires = "from_offset")]
    partition: Option<i32>,
    /// First offset (inclusive), with --partition.
    #[arg(long, requires = "partition")]
    from_offset: Option<i64>,
    /// Last offset (inclusive), with --partition (default: the end of the partition).
    #[arg(long, requires = "partition")]
    to_offset: Option<i64>,
    /// Replay exactly the coordinates the audit log recorded for this consumer (filtered by
    /// --tenant, --event-type and audit time --from/--to) instead of scanning the topics.
    /// Coordinates whose records the broker no longer has are reported as unavailable.
    #[arg(long, conflicts_with_all = ["partition", "from_offset", "to_offset"])]
    from_audit: bool,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    range: RangeArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    range: RangeArgs,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: String,
    /// Stop after this many selected events.
    #[arg(long)]
    max_events: Option<u64>,
    /// Selected events per second at most.
    #[arg(long)]
    rate: Option<f64>,
    #[command(flatten)]
    operator: OperatorArgs,
}

pub(crate) async fn run(cmd: ReplayCommand, env: &Environment) -> anyhow::Result<ExitCode> {
    let (range, run) = match cmd {
        ReplayCommand::Plan(args) => (args.range, None),
        ReplayCommand::Run(args) => {
            let run = ReplayRun {
                actor: args.operator.actor(&args.reason, env),
                max_events: args.max_events,
                rate: args.rate.filter(|r| *r > 0.0),
            };
            (args.range, Some(run))
        }
    };
    let pipeline = range.pipeline.open(env).await?;
    let request = ReplayRequest {
        consumer: range.consumer,
        tenants: range.tenants,
        event_types: range.event_types,
        from: range.from,
        to: range.to,
        partition: range.partition,
        from_offset: range.from_offset,
        to_offset: range.to_offset,
        from_audit: range.from_audit,
        run,
    };
    let bar = Bar::new(
        "{spinner} replay {msg} [{bar:30}] {pos}/{len} records [{elapsed}, eta {eta}]",
        if request.run.is_some() { "run" } else { "plan" },
    );
    let report = ledgerflow_service::ops::replay::replay(&pipeline, &request, &bar).await;
    bar.finish();
    let report = report?;
    match range.format {
        Format::Json => print_json(&report)?,
        Format::Text => print_text(&report),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(out: &ReplayReport) {
    let r = &out.report;
    println!(
        "replay {} for {}{}: {} records read, {} selected",
        out.mode,
        out.consumer,
        out.operation_id
            .as_deref()
            .map(|id| format!(" (operation {id})"))
            .unwrap_or_default(),
        r.read,
        r.selected
    );
    let verb = if out.mode == "plan" {
        "would apply"
    } else {
        "applied"
    };
    let row = |tenant: &str, event_type: &str, c: &ledgerflow_runtime::RedriveCounts| {
        println!(
            "{:<12} {:<24} {:>12} {:>16} {:>10} {:>14} {:>8}",
            tenant,
            event_type,
            c.applied,
            c.already_applied,
            c.conflicts,
            c.dead_lettered.values().sum::<u64>(),
            c.skipped
        );
    };
    println!(
        "{:<12} {:<24} {:>12} {:>16} {:>10} {:>14} {:>8}",
        "tenant", "event_type", verb, "already_applied", "conflicts", "dead_lettered", "skipped"
    );
    for line in &r.lines {
        row(&line.tenant, &line.event_type, &line.counts);
    }
    let t = &r.totals;
    row("total", "", t);
    if !t.dead_lettered.is_empty() {
        let reasons: Vec<String> = t
            .dead_lettered
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("dead letters by reason: {}", reasons.join(", "));
    }
    if out.mode == "run" {
        println!("open dead letters resolved: {}", r.resolved);
    }
    if out.unavailable_count > 0 {
        println!(
            "{} audit-recorded records are no longer on the broker (retention or compaction); first: {:?}",
            out.unavailable_count,
            out.unavailable.first()
        );
    }
}
