//! `ledgerflow offsets show|reset`: a consumer's positions of record (database) beside its
//! group's committed offsets (Kafka) and the partitions' watermarks; and moving them, both
//! together, as a dry run unless `--execute`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use ledgerflow_store::Store;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use sqlx::Row;

use crate::consumers;
use crate::erp::parse_time;
use crate::ops::{self, OperatorArgs};
use crate::output::Format;
use crate::range;
use crate::settings::{PipelineArgs, PipelineSettings};

const TIMEOUT: Duration = Duration::from_secs(10);

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
    #[arg(long, value_parser = consumers::parse_name)]
    consumer: String,
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
    #[arg(long, value_parser = consumers::parse_name)]
    consumer: String,
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

pub(crate) async fn run(cmd: OffsetsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        OffsetsCommand::Show(args) => show(args).await,
        OffsetsCommand::Reset(args) => reset(args).await,
    }
}

/// One partition's picture.
#[derive(Debug, Clone, Serialize)]
struct PartitionView {
    topic: String,
    partition: i32,
    /// Next offset of record (database); none before the first batch.
    position: Option<i64>,
    /// The group's committed offset (Kafka mirror); none when never committed.
    group_offset: Option<i64>,
    low_watermark: i64,
    high_watermark: i64,
    /// high watermark - position (position: the low watermark when none).
    lag: i64,
}

fn group_client(settings: &PipelineSettings, group: &str) -> anyhow::Result<BaseConsumer> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &settings.brokers)
        .set("client.id", "ledgerflow-offsets")
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    for (k, v) in &settings.kafka_properties {
        cfg.set(k, v);
    }
    cfg.create()
        .context("creating a Kafka client for the group")
}

async fn views(
    settings: &PipelineSettings,
    store: &Store,
    consumer: &str,
    only: Option<i32>,
) -> anyhow::Result<Vec<PartitionView>> {
    let kafka = range::tool_consumer(settings)?;
    let mut parts = range::topic_partitions(&kafka, &settings.topics)?;
    if let Some(p) = only {
        parts.retain(|(_, q)| *q == p);
    }
    let positions: BTreeMap<(String, i32), i64> = store
        .positions(Some(consumer))
        .await?
        .into_iter()
        .map(|p| ((p.topic, p.partition), p.next_offset))
        .collect();
    let group = group_client(settings, &format!("{}.{consumer}", settings.group_prefix))?;
    let mut tpl = TopicPartitionList::new();
    for (t, p) in &parts {
        tpl.add_partition(t, *p);
    }
    let committed: BTreeMap<(String, i32), i64> =
        tokio::task::block_in_place(|| group.committed_offsets(tpl, TIMEOUT))
            .map(|list| {
                list.elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the group's committed offsets");
                BTreeMap::new()
            });
    let mut out = Vec::new();
    for (topic, partition) in parts {
        let (low, high) =
            tokio::task::block_in_place(|| range::watermarks(&kafka, &topic, partition))?;
        let key = (topic.clone(), partition);
        let position = positions.get(&key).copied();
        out.push(PartitionView {
            topic,
            partition,
            position,
            group_offset: committed.get(&key).copied(),
            low_watermark: low,
            high_watermark: high,
            lag: high - position.unwrap_or(low),
        });
    }
    Ok(out)
}

async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let settings = args.pipeline.resolve()?;
    let store = crate::settings::open_store(&settings.database).await?;
    let views = views(&settings, &store, &args.consumer, None).await?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&views)?),
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

/// One partition's planned move.
#[derive(Debug, Clone, Serialize)]
struct Move {
    topic: String,
    partition: i32,
    current: Option<i64>,
    new: i64,
    /// Records between new and current: re-read (rewind) or never processed (forward).
    records: i64,
    /// Of the re-read records, events the inbox already holds (dedup hits on restart).
    already_applied: i64,
    /// The move skips records that were never processed.
    forward: bool,
}

#[derive(Debug, Serialize)]
struct ResetOutput {
    consumer: String,
    executed: bool,
    operation_id: Option<String>,
    moves: Vec<Move>,
    kafka_mirror: Option<String>,
}

async fn reset(args: ResetArgs) -> anyhow::Result<ExitCode> {
    let settings = args.pipeline.resolve()?;
    let store = crate::settings::open_store(&settings.database).await?;
    let views = views(&settings, &store, &args.consumer, args.partition).await?;
    let kafka = range::tool_consumer(&settings)?;
    let by_time = match args.to_datetime {
        Some(t) => {
            let parts: Vec<(String, i32)> = views
                .iter()
                .map(|v| (v.topic.clone(), v.partition))
                .collect();
            Some(tokio::task::block_in_place(|| {
                range::offsets_for_time(&kafka, &parts, t)
            })?)
        }
        None => None,
    };
    let mut moves = Vec::new();
    for v in &views {
        let from = v.position.unwrap_or(v.low_watermark);
        let target = if let Some(times) = &by_time {
            times.get(&(v.topic.clone(), v.partition)).copied()
        } else if !args.to_offset.is_empty() {
            args.to_offset
                .iter()
                .find(|(p, _)| *p == v.partition)
                .map(|(_, o)| *o)
        } else if let Some(n) = args.shift_by {
            Some(from.saturating_add(n))
        } else if args.to_earliest {
            Some(v.low_watermark)
        } else {
            Some(v.high_watermark)
        };
        let Some(new) = target.map(|t| t.clamp(v.low_watermark, v.high_watermark)) else {
            continue;
        };
        // No position yet: the consumer would start at the low watermark.
        if new == from {
            continue;
        }
        let (lo, hi) = (new.min(from), new.max(from));
        let already_applied = if new < from {
            let row = sqlx::query(
                "SELECT COUNT(*) FROM inbox WHERE consumer = $1 AND topic = $2 AND partition = $3 \
                 AND \"offset\" >= $4 AND \"offset\" < $5",
            )
            .bind(&args.consumer)
            .bind(&v.topic)
            .bind(v.partition)
            .bind(lo)
            .bind(hi)
            .fetch_one(store.pool())
            .await
            .context("counting applied events in the rewound range")?;
            row.try_get::<i64, _>(0)?
        } else {
            0
        };
        moves.push(Move {
            topic: v.topic.clone(),
            partition: v.partition,
            current: v.position,
            new,
            records: hi - lo,
            already_applied,
            forward: new > from,
        });
    }
    let forward: Vec<&Move> = moves.iter().filter(|m| m.forward).collect();
    let mut out = ResetOutput {
        consumer: args.consumer.clone(),
        executed: false,
        operation_id: None,
        moves: moves.clone(),
        kafka_mirror: None,
    };
    if args.execute && !moves.is_empty() {
        if !forward.is_empty() && !args.force {
            print_reset(&out, args.format)?;
            eprintln!(
                "refusing: {} partition(s) would move forward, and the records in between would never be processed; pass --force to skip them on purpose",
                forward.len()
            );
            return Ok(ExitCode::from(2));
        }
        let group = format!("{}.{}", settings.group_prefix, args.consumer);
        let client = group_client(&settings, &group)?;
        let members =
            tokio::task::block_in_place(|| client.fetch_group_list(Some(&group), TIMEOUT));
        match members {
            Ok(list) => {
                let live: usize = list
                    .groups()
                    .iter()
                    .filter(|g| g.name() == group)
                    .map(|g| g.members().len())
                    .sum();
                if live > 0 && !args.force {
                    print_reset(&out, args.format)?;
                    eprintln!(
                        "refusing: group {group} has {live} live member(s); stop the consumer first (or pass --force)"
                    );
                    return Ok(ExitCode::from(2));
                }
            }
            Err(e) if !args.force => {
                print_reset(&out, args.format)?;
                eprintln!(
                    "refusing: cannot tell whether group {group} has live members ({e}); stop the consumer and pass --force"
                );
                return Ok(ExitCode::from(2));
            }
            Err(_) => {}
        }
        let operation = ops::new_operation_id();
        store
            .set_positions(
                &args.consumer,
                &moves
                    .iter()
                    .map(|m| (m.topic.clone(), m.partition, m.new))
                    .collect::<Vec<_>>(),
            )
            .await
            .context("moving the positions of record")?;
        let mut tpl = TopicPartitionList::new();
        for m in &moves {
            tpl.add_partition_offset(&m.topic, m.partition, Offset::Offset(m.new))
                .context("building the group commit")?;
        }
        out.kafka_mirror = Some(
            match tokio::task::block_in_place(|| client.commit(&tpl, CommitMode::Sync)) {
                Ok(()) => "committed".to_owned(),
                // The database is the position of record; the runtime seeks to it. The group
                // offset is only a mirror for lag tooling.
                Err(e) => format!("not committed ({e}); the database positions rule"),
            },
        );
        ops::record(
            &store,
            &operation,
            &args.consumer,
            "offsets_reset",
            &args.operator,
            &args.reason,
            serde_json::json!({ "moves": moves, "forced": args.force }),
        )
        .await?;
        out.executed = true;
        out.operation_id = Some(operation);
    }
    print_reset(&out, args.format)?;
    Ok(ExitCode::SUCCESS)
}

fn print_reset(out: &ResetOutput, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(out)?),
        Format::Text => {
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
        }
    }
    Ok(())
}
