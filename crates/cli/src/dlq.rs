//! `ledgerflow dlq list|show|retry|discard`: arguments and rendering of
//! [`ledgerflow_service::ops::dlq`].

use std::process::ExitCode;

use clap::{Args, Subcommand};
use ledgerflow_core::ReasonCode;
use ledgerflow_service::ops::dlq::{self, Discarded, RetriedStatus, RetryReport, RetrySelection};
use ledgerflow_service::{ConsumerKind, Environment};
use ledgerflow_store::{DeadLetterFilter, DeadLetterStatus};

use crate::args::{
    DatabaseArgs, Format, OperatorArgs, PipelineArgs, parse_consumer, parse_time, print_json,
};

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
    #[arg(long, value_parser = parse_consumer)]
    consumer: Option<ConsumerKind>,
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

impl Filters {
    fn filter(&self) -> DeadLetterFilter {
        DeadLetterFilter {
            consumer: self.consumer.map(|c| c.name().to_owned()),
            tenant: self.tenant.clone(),
            reason: self.reason,
            status: None,
            since: self.since,
            limit: None,
        }
    }
}

fn parse_reason(raw: &str) -> Result<ReasonCode, String> {
    ReasonCode::parse(raw).ok_or_else(|| {
        let known: Vec<&str> = ReasonCode::ALL.iter().map(|c| c.as_str()).collect();
        format!("unknown reason code {raw:?}; known: {}", known.join(", "))
    })
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

pub(crate) async fn run(cmd: DlqCommand, env: &Environment) -> anyhow::Result<ExitCode> {
    match cmd {
        DlqCommand::List(args) => list(args, env).await,
        DlqCommand::Show(args) => show(args, env).await,
        DlqCommand::Retry(args) => retry(args, env).await,
        DlqCommand::Discard(args) => discard(args, env).await,
    }
}

async fn list(args: ListArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let status =
        match args.status.as_str() {
            "all" => None,
            other => Some(DeadLetterStatus::parse(other).ok_or_else(|| {
                anyhow::anyhow!("--status must be open, resolved, discarded or all")
            })?),
        };
    let store = args.db.open(env).await?;
    let mut filter = args.filters.filter();
    filter.status = status;
    filter.limit = Some(args.limit);
    let letters = dlq::list(&store, &filter).await?;
    if args.format == Format::Json {
        print_json(&letters)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36} {:<16} {:<22} {:<26} {:<8} {:<9} {:>3}",
        "id", "consumer", "reason", "topic/partition@offset", "tenant", "status", "try"
    );
    for d in &letters {
        println!(
            "{:<36} {:<16} {:<22} {:<26} {:<8} {:<9} {:>3}",
            d.id,
            d.consumer,
            d.reason,
            format!("{}/{}@{}", d.topic, d.partition, d.offset),
            d.tenant_id.as_deref().unwrap_or("-"),
            d.status,
            d.attempts
        );
    }
    println!("{} dead letters", letters.len());
    Ok(ExitCode::SUCCESS)
}

async fn show(args: ShowArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let pipeline = args.pipeline.open(env).await?;
    let shown = dlq::show(&pipeline, &args.id).await?;
    if args.format == Format::Json {
        print_json(&shown)?;
        return Ok(ExitCode::SUCCESS);
    }
    let d = &shown.letter;
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
    match &shown.decoded {
        Some(event) => {
            println!("  payload (decoded):");
            println!("{}", serde_json::to_string_pretty(event)?);
        }
        None => {
            println!(
                "  payload does not decode ({}); raw value, {} bytes, base64:",
                shown.decode_error.as_deref().unwrap_or("?"),
                shown.value_bytes
            );
            println!("{}", shown.value_base64.as_deref().unwrap_or("-"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn retry(args: RetryArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let pipeline = args.pipeline.open(env).await?;
    let selection = if args.ids.is_empty() {
        RetrySelection::Matching(args.filters.filter())
    } else {
        RetrySelection::Ids(args.ids.clone())
    };
    let actor = args.operator.actor(&args.comment, env);
    let out = dlq::retry(&pipeline, &selection, &actor).await?;
    match args.format {
        Format::Json => print_json(&out)?,
        Format::Text => print_retry(&out),
    }
    Ok(if out.still_open == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_retry(out: &RetryReport) {
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
        for l in out
            .letters
            .iter()
            .filter(|l| l.status == RetriedStatus::Open)
        {
            println!(
                "  still open: {} {} {} (was {})",
                l.id,
                l.coordinates,
                l.reason_now.map_or("?", ReasonCode::as_str),
                l.reason_before
            );
        }
    }
    for c in &out.already_closed {
        println!("  not open, left alone: {c}");
    }
}

async fn discard(args: DiscardArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let store = args.db.open(env).await?;
    let actor = args.operator.actor(&args.reason, env);
    match dlq::discard(&store, &args.id, &actor).await? {
        Discarded::NotOpen(letter) => println!(
            "dead letter {} is {}, not open: nothing changed",
            letter.id, letter.status
        ),
        Discarded::Done {
            letter,
            operation_id,
        } => println!(
            "dead letter {} discarded (operation {operation_id})",
            letter.id
        ),
    }
    Ok(ExitCode::SUCCESS)
}
