//! `ledgerflow offsets show|reset`: arguments and rendering of
//! [`ledgerflow_service::ops::offsets`].

use std::process::ExitCode;

use clap::{Args, Subcommand};
use ledgerflow_service::ops::offsets::{ResetReport, ResetRequest, ResetTarget, reset, show};
use ledgerflow_service::{ConsumerKind, Environment, open_store};

use crate::args::{Format, OperatorArgs, PipelineArgs, parse_consumer, parse_time, print_json};

#[derive(Debug, Subcommand)]
pub(crate) enum OffsetsCommand {
    /// Positions of record, group offsets, watermarks and lag per partition.
    Show(ShowArgs),
    /// Move a consumer's positions (database and Kafka group). A dry run unless --execute.
    Reset(ResetArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// Consumer.
    #[arg(long, value_parser = parse_consumer)]
    consumer: ConsumerKind,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args([
    "to_datetime", "to_offset", "shift_by", "to_earliest", "to_latest"
])))]
pub(crate) struct ResetArgs {
    /// Consumer.
    #[arg(long, value_parser = parse_consumer)]
    consumer: ConsumerKind,
    /// The first offset at or after this time (RFC 3339 or YYYY-MM-DD), asked of the broker.
    #[arg(long, value_parser = parse_time)]
    to_datetime: Option<i64>,
    /// `PARTITION:OFFSET`, repeatable; other partitions are left alone.
    #[arg(long, value_parser = parse_partition_offset)]
    to_offset: Vec<(i32, i64)>,
    /// Move by N records (negative: rewind), clamped to the watermarks.
    #[arg(long, allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// The earliest offset the broker holds.
    #[arg(long)]
    to_earliest: bool,
    /// The end of each partition (skips everything not yet processed; needs --force).
    #[arg(long)]
    to_latest: bool,
    /// Only this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Apply the change (default: a dry run that only shows it).
    #[arg(long)]
    execute: bool,
    /// Proceed although the group has live members, or although a partition would move
    /// forward (records between the old and new position would never be processed).
    #[arg(long)]
    force: bool,
    /// Why (recorded in the audit log).
    #[arg(long, default_value = "offsets reset")]
    reason: String,
    #[command(flatten)]
    operator: OperatorArgs,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

fn parse_partition_offset(raw: &str) -> Result<(i32, i64), String> {
    let (p, o) = raw
        .split_once(':')
        .ok_or_else(|| format!("{raw:?} is not PARTITION:OFFSET"))?;
    Ok((
        p.trim()
            .parse()
            .map_err(|e| format!("partition {p:?}: {e}"))?,
        o.trim().parse().map_err(|e| format!("offset {o:?}: {e}"))?,
    ))
}

pub(crate) async fn run(cmd: OffsetsCommand, env: &Environment) -> anyhow::Result<ExitCode> {
    match cmd {
        OffsetsCommand::Show(args) => {
            let settings = args.pipeline.resolve(&[], env)?;
            let store = open_store(&settings.database).await?;
            let views = show(&settings, &store, args.consumer, None).await?;
            match args.format {
                Format::Json => print_json(&views)?,
                Format::Text => {
                    let opt = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
                    println!(
                        "{:<32} {:>5} {:>12} {:>12} {:>10} {:>10} {:>8}",
                        "topic", "part", "position", "group", "low", "high", "lag"
                    );
                    for v in &views {
                        println!(
                            "{:<32} {:>5} {:>12} {:>12} {:>10} {:>10} {:>8}",
                            v.topic,
                            v.partition,
                            opt(v.position),
                            opt(v.group_offset),
                            v.low_watermark,
                            v.high_watermark,
                            v.lag
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        OffsetsCommand::Reset(args) => {
            let settings = args.pipeline.resolve(&[], env)?;
            let store = open_store(&settings.database).await?;
            let target = if let Some(t) = args.to_datetime {
                ResetTarget::Time(t)
            } else if !args.to_offset.is_empty() {
                ResetTarget::Offsets(args.to_offset.clone())
            } else if let Some(n) = args.shift_by {
                ResetTarget::Shift(n)
            } else if args.to_earliest {
                ResetTarget::Earliest
            } else {
                ResetTarget::Latest
            };
            let request = ResetRequest {
                consumer: args.consumer,
                target,
                partition: args.partition,
                execute: args.execute,
                force: args.force,
                actor: args.operator.actor(&args.reason, env),
            };
            let out = reset(&settings, &store, &request).await?;
            print_reset(&out, args.format)?;
            Ok(match &out.refused {
                Some(refusal) => {
                    eprintln!("{refusal}");
                    ExitCode::from(crate::EXIT_USAGE)
                }
                None => ExitCode::SUCCESS,
            })
        }
    }
}

fn print_reset(out: &ResetReport, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        return print_json(out);
    }
    let verb = if out.executed {
        "moved"
    } else {
        "would move (dry run; --execute to apply)"
    };
    println!("offsets reset for {}: {verb}", out.consumer);
    println!(
        "{:<32} {:>5} {:>12} {:>12} {:>10} {:>16}",
        "topic", "part", "current", "new", "records", "already_applied"
    );
    for m in &out.moves {
        println!(
            "{:<32} {:>5} {:>12} {:>12} {:>10} {:>16}",
            m.topic,
            m.partition,
            m.current.map_or("-".to_owned(), |c| c.to_string()),
            m.new,
            if m.forward {
                format!("skip {}", m.records)
            } else {
                format!("re-read {}", m.records)
            },
            m.already_applied
        );
    }
    if out.moves.is_empty() {
        println!("nothing to move");
    }
    if let Some(k) = &out.kafka_mirror {
        println!("kafka group offsets: {k}");
    }
    if let Some(op) = &out.operation_id {
        println!("audited as operation {op}");
    }
    Ok(())
}
