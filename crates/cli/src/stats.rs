//! `ledgerflow stats`: decisions, dead letters by reason, and positions against high watermarks.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;

use crate::kafka::KafkaArgs;
use crate::output::Format;
use crate::settings::DatabaseArgs;

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Only this consumer.
    #[arg(long)]
    consumer: Option<String>,
    /// Skip asking the broker for high watermarks (no lag column).
    #[arg(long)]
    no_lag: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Serialize)]
struct PositionLag {
    consumer: String,
    topic: String,
    partition: i32,
    next_offset: i64,
    high_watermark: Option<i64>,
    lag: Option<i64>,
}

pub(crate) async fn run(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let store = args.db.open().await?;
    let decisions = store.decision_counts(args.consumer.as_deref()).await?;
    let positions = store.positions(args.consumer.as_deref()).await?;
    let watermarks: Option<BaseConsumer> = if args.no_lag {
        None
    } else {
        args.kafka
            .client_config()
            .set("group.id", "ledgerflow-stats")
            .create()
            .ok()
    };
    let lags: Vec<PositionLag> = positions
        .into_iter()
        .map(|p| {
            let hi = watermarks.as_ref().and_then(|c| {
                c.fetch_watermarks(&p.topic, p.partition, Duration::from_secs(5))
                    .ok()
                    .map(|(_, hi)| hi)
            });
            PositionLag {
                lag: hi.map(|h| (h - p.next_offset).max(0)),
                high_watermark: hi,
                consumer: p.consumer,
                topic: p.topic,
                partition: p.partition,
                next_offset: p.next_offset,
            }
        })
        .collect();
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "decisions": decisions,
                "positions": lags,
            }))?
        ),
        Format::Text => {
            println!(
                "{:<20} {:<14} {:<22} {:>10}",
                "consumer", "decision", "reason", "count"
            );
            for d in &decisions {
                println!(
                    "{:<20} {:<14} {:<22} {:>10}",
                    d.consumer,
                    d.decision,
                    d.reason.as_deref().unwrap_or("-"),
                    d.count
                );
            }
            println!();
            println!(
                "{:<20} {:<24} {:>5} {:>12} {:>12} {:>8}",
                "consumer", "topic", "part", "position", "high", "lag"
            );
            for p in &lags {
                let opt = |v: Option<i64>| v.map_or("?".to_owned(), |x| x.to_string());
                println!(
                    "{:<20} {:<24} {:>5} {:>12} {:>12} {:>8}",
                    p.consumer,
                    p.topic,
                    p.partition,
                    p.next_offset,
                    opt(p.high_watermark),
                    opt(p.lag)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
