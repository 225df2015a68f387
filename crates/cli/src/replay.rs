//! `ledgerflow replay plan|run`: re-read a range of a consumer's topics outside its group and
//! judge it (plan) or push it through the same pipeline again (run), without moving the live
//! group's positions. The inbox guarantees that nothing is posted twice.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use ledgerflow_runtime::{
    RawRecord, RedriveContext, RedriveFilter, RedriveReport, plan_chunk, run_chunk,
};
use ledgerflow_store::{ErasedConsumer, OPERATIONS_TOPIC};
use serde::Serialize;
use sqlx::Row;
use tokio::sync::mpsc;

use crate::consumers;
use crate::erp::parse_time;
use crate::ops::{self, OperatorArgs};
use crate::output::Format;
use crate::range::{self, Span};
use crate::run::Pipeline;
use crate::settings::PipelineArgs;

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
    #[arg(long, value_parser = consumers::parse_name)]
    consumer: String,
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

/// Coordinates the audit log recorded but the broker did not deliver.
#[derive(Debug, Clone, Serialize)]
struct Unavailable {
    topic: String,
    partition: i32,
    offset: i64,
    event_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct ReplayOutput<'a> {
    mode: &'static str,
    consumer: &'a str,
    operation_id: Option<&'a str>,
    spans: &'a [Span],
    #[serde(flatten)]
    report: &'a RedriveReport,
    unavailable_count: usize,
    unavailable: Vec<Unavailable>,
}

pub(crate) async fn run(cmd: ReplayCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ReplayCommand::Plan(args) => replay(args.range, None).await,
        ReplayCommand::Run(args) => {
            let run = RunOptions {
                reason: args.reason,
                max_events: args.max_events,
                rate: args.rate.filter(|r| *r > 0.0),
                operator: args.operator,
            };
            replay(args.range, Some(run)).await
        }
    }
}

#[derive(Debug)]
struct RunOptions {
    reason: String,
    max_events: Option<u64>,
    rate: Option<f64>,
    operator: OperatorArgs,
}

/// Per partition, the audit-recorded offsets still wanted, with their event ids.
type Wanted = BTreeMap<(String, i32), BTreeMap<i64, Option<String>>>;

async fn replay(args: RangeArgs, run: Option<RunOptions>) -> anyhow::Result<ExitCode> {
    let pipeline = Pipeline::open(&args.pipeline).await?;
    let consumer: Arc<dyn ErasedConsumer> = consumers::build(&args.consumer)?;
    pipeline
        .store
        .apply_schema(&consumer.schema(pipeline.store.backend()))
        .await
        .context("applying the consumer's schema")?;
    let kafka = range::tool_consumer(&pipeline.settings)?;
    let (spans, mut wanted) = spans(&args, &pipeline, &kafka).await?;
    let total: u64 = spans.iter().map(Span::len).sum();
    let filter = RedriveFilter {
        tenants: args.tenants.clone(),
        event_types: args.event_types.clone(),
    };
    let ctx = RedriveContext {
        consumer: consumer.as_ref(),
        store: &pipeline.store,
        decoder: &pipeline.decoder,
        tenants: &pipeline.tenants,
    };
    let operation = run.as_ref().map(|_| ops::new_operation_id());
    let filters = serde_json::json!({
        "tenants": args.tenants,
        "event_types": args.event_types,
        "from": args.from,
        "to": args.to,
        "from_audit": args.from_audit,
        "spans": spans,
    });
    if let (Some(run), Some(id)) = (&run, &operation) {
        ops::record(
            &pipeline.store,
            id,
            &args.consumer,
            "replay_run",
            &run.operator,
            &run.reason,
            serde_json::json!({"phase": "started", "filters": filters}),
        )
        .await?;
    }

    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replay {msg} [{bar:30}] {pos}/{len} records [{elapsed}, eta {eta}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(if run.is_some() { "run" } else { "plan" });
    let (tx, mut rx) = mpsc::channel::<Vec<RawRecord>>(4);
    let reader = range::read_spans(kafka, spans.clone(), tx);
    let mut report = RedriveReport::default();
    let mut seen = HashSet::new();
    let started = Instant::now();
    let mut stopped_early = false;
    'chunks: while let Some(mut chunk) = rx.recv().await {
        bar.inc(chunk.len() as u64);
        if let Some(w) = wanted.as_mut() {
            chunk.retain(|r| {
                w.get_mut(&(r.topic.clone(), r.partition))
                    .is_some_and(|offsets| offsets.remove(&r.offset).is_some())
            });
        }
        let Some(opts) = &run else {
            report.merge(plan_chunk(&ctx, chunk, &filter, &mut seen).await?);
            continue;
        };
        let id = operation.as_deref().unwrap_or_default();
        while !chunk.is_empty() {
            let room = opts.max_events.map_or(usize::MAX, |m| {
                usize::try_from(m.saturating_sub(report.selected)).unwrap_or(usize::MAX)
            });
            if room == 0 {
                stopped_early = true;
                break 'chunks;
            }
            let rest = chunk.split_off(chunk.len().min(room));
            let piece = std::mem::replace(&mut chunk, rest);
            report.merge(run_chunk(&ctx, piece, &filter, id).await?);
            if let Some(rate) = opts.rate {
                let due = Duration::from_secs_f64(report.selected as f64 / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    drop(rx);
    reader
        .await
        .context("the Kafka reader stopped")?
        .context("reading the range from Kafka")?;
    bar.finish_and_clear();

    let unavailable: Vec<Unavailable> = if stopped_early {
        Vec::new()
    } else {
        wanted
            .unwrap_or_default()
            .into_iter()
            .flat_map(|((topic, partition), offsets)| {
                offsets
                    .into_iter()
                    .map(move |(offset, event_id)| Unavailable {
                        topic: topic.clone(),
                        partition,
                        offset,
                        event_id,
                    })
            })
            .collect()
    };
    if let (Some(run), Some(id)) = (&run, &operation) {
        ops::record(
            &pipeline.store,
            id,
            &args.consumer,
            "replay_run",
            &run.operator,
            &run.reason,
            serde_json::json!({
                "phase": "finished",
                "filters": filters,
                "read": report.read,
                "selected": report.selected,
                "totals": report.totals,
                "resolved_dead_letters": report.resolved,
                "unavailable": unavailable.len(),
                "stopped_at_max_events": stopped_early,
            }),
        )
        .await?;
    }
    let out = ReplayOutput {
        mode: if run.is_some() { "run" } else { "plan" },
        consumer: &args.consumer,
        operation_id: operation.as_deref(),
        spans: &spans,
        report: &report,
        unavailable_count: unavailable.len(),
        unavailable: unavailable.into_iter().take(100).collect(),
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&out)?),
        Format::Text => print_text(&out),
    }
    Ok(ExitCode::SUCCESS)
}

/// The partitions and offsets to read, and (with --from-audit) the exact offsets wanted.
async fn spans(
    args: &RangeArgs,
    pipeline: &Pipeline,
    kafka: &rdkafka::consumer::BaseConsumer,
) -> anyhow::Result<(Vec<Span>, Option<Wanted>)> {
    let topics = &pipeline.settings.topics;
    if let Some(partition) = args.partition {
        let [topic] = topics.as_slice() else {
            anyhow::bail!("--partition needs exactly one --topic (got {topics:?})");
        };
        if topic.starts_with('^') {
            anyhow::bail!("--partition needs a topic name, not the pattern {topic}");
        }
        let (low, high) = range::watermarks(kafka, topic, partition)?;
        let start = args.from_offset.unwrap_or(low).max(low);
        let end = args
            .to_offset
            .map_or(high, |o| o.saturating_add(1))
            .min(high);
        let span = Span {
            topic: topic.clone(),
            partition,
            start,
            end: end.max(start),
        };
        return Ok((vec![span], None));
    }
    if args.from_audit {
        let wanted = audit_coordinates(args, pipeline).await?;
        let spans = wanted
            .iter()
            .filter_map(|((topic, partition), offsets)| {
                let (first, last) = (offsets.keys().next()?, offsets.keys().next_back()?);
                Some(Span {
                    topic: topic.clone(),
                    partition: *partition,
                    start: *first,
                    end: last + 1,
                })
            })
            .collect();
        return Ok((spans, Some(wanted)));
    }
    let Some(from) = args.from else {
        anyhow::bail!(
            "give a range: --from TIME [--to TIME], or --partition P --from-offset O [--to-offset O] with one --topic, or --from-audit"
        );
    };
    let parts = range::topic_partitions(kafka, topics)?;
    let starts = range::offsets_for_time(kafka, &parts, from)?;
    let ends = match args.to {
        Some(to) => Some(range::offsets_for_time(kafka, &parts, to)?),
        None => None,
    };
    let mut spans = Vec::new();
    for (topic, partition) in parts {
        let key = (topic.clone(), partition);
        let start = starts.get(&key).copied().unwrap_or(0);
        let end = match ends.as_ref().and_then(|e| e.get(&key)) {
            Some(end) => *end,
            None => range::watermarks(kafka, &topic, partition)?.1,
        };
        spans.push(Span {
            topic,
            partition,
            start,
            end: end.max(start),
        });
    }
    Ok((spans, None))
}

/// The coordinates the audit log holds for the consumer (one per offset, whatever the number of
/// decisions recorded there), filtered by tenant, type and audit time.
async fn audit_coordinates(args: &RangeArgs, pipeline: &Pipeline) -> anyhow::Result<Wanted> {
    let rows = sqlx::query(
        "SELECT topic, partition, \"offset\", event_id, tenant_id, event_type FROM audit_log \
         WHERE consumer = $1 AND topic <> $2 AND recorded_at >= $3 AND recorded_at < $4",
    )
    .bind(&args.consumer)
    .bind(OPERATIONS_TOPIC)
    .bind(args.from.unwrap_or(i64::MIN))
    .bind(args.to.unwrap_or(i64::MAX))
    .fetch_all(pipeline.store.pool())
    .await
    .context("reading coordinates from the audit log")?;
    let tenants: BTreeSet<&str> = args.tenants.iter().map(String::as_str).collect();
    let types: BTreeSet<&str> = args.event_types.iter().map(String::as_str).collect();
    let mut wanted: Wanted = BTreeMap::new();
    for row in rows {
        let tenant: Option<String> = row.try_get(4)?;
        let event_type: Option<String> = row.try_get(5)?;
        let admit = |set: &BTreeSet<&str>, v: &Option<String>| {
            set.is_empty() || v.as_deref().is_some_and(|v| set.contains(v))
        };
        if !admit(&tenants, &tenant) || !admit(&types, &event_type) {
            continue;
        }
        let topic: String = row.try_get(0)?;
        let partition: i32 = row.try_get(1)?;
        let offset: i64 = row.try_get(2)?;
        let event_id: Option<String> = row.try_get(3)?;
        wanted
            .entry((topic, partition))
            .or_default()
            .entry(offset)
            .or_insert(event_id);
    }
    Ok(wanted)
}

fn print_text(out: &ReplayOutput<'_>) {
    let r = out.report;
    println!(
        "replay {} for {}{}: {} records read, {} selected",
        out.mode,
        out.consumer,
        out.operation_id
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
    println!(
        "{:<12} {:<24} {:>12} {:>16} {:>10} {:>14} {:>8}",
        "tenant", "event_type", verb, "already_applied", "conflicts", "dead_lettered", "skipped"
    );
    for line in &r.lines {
        let c = &line.counts;
        println!(
            "{:<12} {:<24} {:>12} {:>16} {:>10} {:>14} {:>8}",
            line.tenant,
            line.event_type,
            c.applied,
            c.already_applied,
            c.conflicts,
            c.dead_lettered.values().sum::<u64>(),
            c.skipped
        );
    }
    let t = &r.totals;
    println!(
        "{:<12} {:<24} {:>12} {:>16} {:>10} {:>14} {:>8}",
        "total",
        "",
        t.applied,
        t.already_applied,
        t.conflicts,
        t.dead_lettered.values().sum::<u64>(),
        t.skipped
    );
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
