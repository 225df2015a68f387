//! `ledgerflow dlq list|show|retry|discard`: see dead letters, re-drive them through the
//! pipeline after a fix (a tenant onboarded, a schema registered), or discard them with a
//! reason. Retry and discard are audited and idempotent.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use clap::{Args, Subcommand};
use ledgerflow_core::ReasonCode;
use ledgerflow_runtime::{RawRecord, RedriveContext, RedriveFilter, RedriveReport, run_chunk};
use ledgerflow_store::{DeadLetter, DeadLetterFilter, DeadLetterStatus};
use serde::Serialize;

use crate::consumers;
use crate::erp::parse_time;
use crate::ops::{self, OperatorArgs};
use crate::output::Format;
use crate::run::Pipeline;
use crate::settings::{DatabaseArgs, PipelineArgs};

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead letters (open ones by default), oldest first.
    List(ListArgs),
    /// One dead letter: coordinates, error, attempts, headers, and the payload decoded when it
    /// decodes (raw bytes otherwise).
    Show(ShowArgs),
    /// Re-run dead letters through the pipeline; each one that now gets a decision other than
    /// a dead letter is marked resolved. Exit 1 when some are still failing.
    Retry(RetryArgs),
    /// Mark an open dead letter discarded, with a reason (audited).
    Discard(DiscardArgs),
}

/// Filters shared by list and retry.
#[derive(Debug, Clone, Args)]
pub(crate) struct Filters {
    /// Only this consumer.
    #[arg(long, value_parser = consumers::parse_name)]
    consumer: Option<String>,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only this reason code (e.g. unknown_tenant).
    #[arg(long, value_parser = parse_reason)]
    reason: Option<ReasonCode>,
    /// Only dead letters created at or after this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    filters: Filters,
    /// open, resolved, discarded or all.
    #[arg(long, default_value = "open")]
    status: String,
    /// At most this many.
    #[arg(long, default_value_t = 1000)]
    limit: i64,
    #[command(flatten)]
    db: DatabaseArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// Dead letter id.
    id: String,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct RetryArgs {
    /// Dead letter ids (or use the filters; only open dead letters are retried).
    ids: Vec<String>,
    #[command(flatten)]
    filters: Filters,
    /// Free text for the audit log.
    #[arg(long, default_value = "dead-letter retry")]
    comment: String,
    #[command(flatten)]
    operator: OperatorArgs,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct DiscardArgs {
    /// Dead letter id.
    id: String,
    /// Why it is discarded (recorded in the audit log).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    operator: OperatorArgs,
    #[command(flatten)]
    db: DatabaseArgs,
}

pub(crate) async fn run(cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DlqCommand::List(args) => list(args).await,
        DlqCommand::Show(args) => show(args).await,
        DlqCommand::Retry(args) => retry(args).await,
        DlqCommand::Discard(args) => discard(args).await,
    }
}

fn parse_reason(raw: &str) -> Result<ReasonCode, String> {
    ReasonCode::parse(raw).ok_or_else(|| {
        let known: Vec<&str> = ReasonCode::ALL.iter().map(|c| c.as_str()).collect();
        format!("unknown reason code {raw:?}; known: {}", known.join(", "))
    })
}

fn filter(f: &Filters, status: Option<&str>) -> DeadLetterFilter {
    DeadLetterFilter {
        consumer: f.consumer.clone(),
        tenant: f.tenant.clone(),
        reason: f.reason,
        status: status.and_then(DeadLetterStatus::parse),
        since: f.since,
        limit: None,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    if !["open", "resolved", "discarded", "all"].contains(&args.status.as_str()) {
        anyhow::bail!("--status must be open, resolved, discarded or all");
    }
    let store = args.db.open().await?;
    let mut f = filter(&args.filters, Some(&args.status));
    f.limit = Some(args.limit);
    let letters = store
        .dead_letters(&f)
        .await
        .context("listing dead letters")?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&letters)?),
        Format::Text => {
            println!(
                "{:<36} {:<16} {:<22} {:<26} {:<8} {:<9} {:>3}",
                "id", "consumer", "reason", "topic/partition@offset", "tenant", "status", "try"
            );
            for d in &letters {
                println!(
                    "{:<36} {:<16} {:<22} {:<26} {:<8} {:<9} {:>3}",
                    d.id,
                    d.consumer,
                    d.reason.as_str(),
                    format!("{}/{}@{}", d.topic, d.partition, d.offset),
                    d.tenant_id.as_deref().unwrap_or("-"),
                    d.status.as_str(),
                    d.attempts
                );
            }
            println!("{} dead letters", letters.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    letter: &'a DeadLetter,
    key_base64: Option<String>,
    value_base64: Option<String>,
    value_bytes: usize,
    /// The event as JSON when the value decodes now, else why not.
    decoded: Option<serde_json::Value>,
    decode_error: Option<String>,
}

async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let pipeline = Pipeline::open(&args.pipeline).await?;
    let Some(letter) = pipeline.store.dead_letter(&args.id).await? else {
        anyhow::bail!("no dead letter with id {}", args.id);
    };
    let b64 = |b: &Option<Vec<u8>>| {
        b.as_ref()
            .map(|v| base64::engine::general_purpose::STANDARD.encode(v))
    };
    let (decoded, decode_error) = match letter.value.as_deref() {
        None => (None, Some("no value (tombstone)".to_owned())),
        Some(bytes) => match pipeline.decoder.decode(bytes).await {
            Ok(d) => (serde_json::to_value(&d.event).ok(), None),
            Err(e) => (None, Some(ledgerflow_codec::error_chain(&e))),
        },
    };
    let shown = Shown {
        letter: &letter,
        key_base64: b64(&letter.key),
        value_base64: b64(&letter.value),
        value_bytes: letter.value.as_ref().map_or(0, Vec::len),
        decoded,
        decode_error,
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&shown)?),
        Format::Text => {
            let d = &letter;
            println!("dead letter {}", d.id);
            println!("  consumer    {}", d.consumer);
            println!("  at          {}/{}@{}", d.topic, d.partition, d.offset);
            println!("  reason      {}", d.reason);
            println!("  error       {}", d.error);
            println!("  status      {} (attempts {})", d.status, d.attempts);
            println!(
                "  event       {} {} tenant {}",
                d.event_type.as_deref().unwrap_or("-"),
                d.event_id.as_deref().unwrap_or("-"),
                d.tenant_id.as_deref().unwrap_or("-")
            );
            println!(
                "  schema id   {}",
                d.schema_id.map_or("-".to_owned(), |s| s.to_string())
            );
            println!("  headers     {}", d.headers);
            match (&shown.decoded, &shown.decode_error) {
                (Some(event), _) => {
                    println!("  payload (decoded):");
                    println!("{}", serde_json::to_string_pretty(event)?);
                }
                (None, error) => {
                    println!(
                        "  payload does not decode ({}); raw value, {} bytes, base64:",
                        error.as_deref().unwrap_or("?"),
                        shown.value_bytes
                    );
                    println!("{}", shown.value_base64.as_deref().unwrap_or("-"));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What happened to one retried dead letter.
#[derive(Debug, Serialize)]
struct RetryLine {
    id: String,
    consumer: String,
    coordinates: String,
    reason_before: String,
    status: String,
    reason_now: Option<String>,
}

#[derive(Debug, Serialize)]
struct RetryOutput {
    operation_id: Option<String>,
    targeted: usize,
    resolved: usize,
    still_open: usize,
    already_closed: Vec<String>,
    totals: ledgerflow_runtime::RedriveCounts,
    letters: Vec<RetryLine>,
}

fn raw_record(d: &DeadLetter) -> anyhow::Result<RawRecord> {
    let headers: Vec<(String, Option<String>)> = serde_json::from_str(&d.headers)
        .with_context(|| format!("dead letter {}: unreadable headers", d.id))?;
    Ok(RawRecord {
        topic: d.topic.clone(),
        partition: d.partition,
        offset: d.offset,
        key: d.key.clone(),
        value: d.value.clone(),
        headers,
    })
}

async fn retry(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let pipeline = Pipeline::open(&args.pipeline).await?;
    let store = &pipeline.store;
    let mut already_closed = Vec::new();
    let letters: Vec<DeadLetter> = if args.ids.is_empty() {
        store
            .dead_letters(&filter(&args.filters, Some("open")))
            .await
            .context("listing dead letters")?
    } else {
        let mut out = Vec::new();
        for id in &args.ids {
            match store.dead_letter(id).await? {
                Some(d) if d.status == DeadLetterStatus::Open => out.push(d),
                Some(d) => already_closed.push(format!("{} ({})", d.id, d.status)),
                None => anyhow::bail!("no dead letter with id {id}"),
            }
        }
        out
    };
    if letters.is_empty() {
        let out = RetryOutput {
            operation_id: None,
            targeted: 0,
            resolved: 0,
            still_open: 0,
            already_closed,
            totals: Default::default(),
            letters: Vec::new(),
        };
        print_retry(&out, args.format)?;
        return Ok(ExitCode::SUCCESS);
    }
    let operation = ops::new_operation_id();
    // By consumer, then partition, in offset order: each group is one redrive transaction.
    let mut groups: BTreeMap<(String, String, i32), Vec<&DeadLetter>> = BTreeMap::new();
    for d in &letters {
        groups
            .entry((d.consumer.clone(), d.topic.clone(), d.partition))
            .or_default()
            .push(d);
    }
    let mut report = RedriveReport::default();
    for ((consumer_name, _, _), mut group) in groups {
        group.sort_by_key(|d| d.offset);
        let consumer = consumers::build(&consumer_name)?;
        store
            .apply_schema(&consumer.schema(store.backend()))
            .await
            .context("applying the consumer's schema")?;
        let ctx = RedriveContext {
            consumer: consumer.as_ref(),
            store,
            decoder: &pipeline.decoder,
            tenants: &pipeline.tenants,
        };
        let records = group
            .iter()
            .map(|d| raw_record(d))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for chunk in records.chunks(crate::range::CHUNK) {
            report.merge(
                run_chunk(&ctx, chunk.to_vec(), &RedriveFilter::default(), &operation)
                    .await
                    .context("re-driving dead letters")?,
            );
        }
    }
    let mut lines = Vec::new();
    for d in &letters {
        let now = store.dead_letter(&d.id).await?;
        let (status, reason_now) = match now {
            Some(n) if n.status == DeadLetterStatus::Open => {
                ("open".to_owned(), Some(n.reason.to_string()))
            }
            Some(n) => (n.status.to_string(), None),
            None => ("missing".to_owned(), None),
        };
        lines.push(RetryLine {
            id: d.id.clone(),
            consumer: d.consumer.clone(),
            coordinates: format!("{}/{}@{}", d.topic, d.partition, d.offset),
            reason_before: d.reason.to_string(),
            status,
            reason_now,
        });
    }
    let resolved = lines.iter().filter(|l| l.status == "resolved").count();
    let still_open = lines.iter().filter(|l| l.status == "open").count();
    let consumers_touched: Vec<String> = {
        let mut c: Vec<String> = letters.iter().map(|d| d.consumer.clone()).collect();
        c.sort();
        c.dedup();
        c
    };
    for consumer in consumers_touched {
        let ids: Vec<&str> = letters
            .iter()
            .filter(|d| d.consumer == consumer)
            .map(|d| d.id.as_str())
            .collect();
        ops::record(
            store,
            &operation,
            &consumer,
            "dlq_retry",
            &args.operator,
            &args.comment,
            serde_json::json!({
                "dead_letters": ids,
                "resolved": lines.iter().filter(|l| l.consumer == consumer && l.status == "resolved").count(),
                "still_open": lines.iter().filter(|l| l.consumer == consumer && l.status == "open").count(),
                "totals": report.totals,
            }),
        )
        .await?;
    }
    let out = RetryOutput {
        operation_id: Some(operation),
        targeted: letters.len(),
        resolved,
        still_open,
        already_closed,
        totals: report.totals,
        letters: lines,
    };
    print_retry(&out, args.format)?;
    Ok(if still_open == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_retry(out: &RetryOutput, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(out)?),
        Format::Text => {
            if out.targeted == 0 {
                println!("nothing to retry: no open dead letter matches");
            } else {
                println!(
                    "retried {} dead letters (operation {}): {} resolved, {} still open; applied {}, already applied {}, skipped {}",
                    out.targeted,
                    out.operation_id.as_deref().unwrap_or("-"),
                    out.resolved,
                    out.still_open,
                    out.totals.applied,
                    out.totals.already_applied,
                    out.totals.skipped
                );
                for l in out.letters.iter().filter(|l| l.status == "open") {
                    println!(
                        "  still open: {} {} {} (was {})",
                        l.id,
                        l.coordinates,
                        l.reason_now.as_deref().unwrap_or("?"),
                        l.reason_before
                    );
                }
            }
            for c in &out.already_closed {
                println!("  not open, left alone: {c}");
            }
        }
    }
    Ok(())
}

async fn discard(args: DiscardArgs) -> anyhow::Result<ExitCode> {
    let store = args.db.open().await?;
    let Some(letter) = store.dead_letter(&args.id).await? else {
        anyhow::bail!("no dead letter with id {}", args.id);
    };
    if !store.discard_dead_letter(&args.id).await? {
        println!(
            "dead letter {} is {}, not open: nothing changed",
            letter.id, letter.status
        );
        return Ok(ExitCode::SUCCESS);
    }
    let operation = ops::new_operation_id();
    ops::record(
        &store,
        &operation,
        &letter.consumer,
        "dlq_discard",
        &args.operator,
        &args.reason,
        serde_json::json!({
            "dead_letter": letter.id,
            "coordinates": format!("{}/{}@{}", letter.topic, letter.partition, letter.offset),
            "reason_code": letter.reason,
            "event_id": letter.event_id,
        }),
    )
    .await?;
    println!(
        "dead letter {} discarded (operation {operation})",
        letter.id
    );
    Ok(ExitCode::SUCCESS)
}
