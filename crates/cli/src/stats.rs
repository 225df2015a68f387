//! `ledgerflow stats`: decisions, dead letters by reason, and positions against high watermarks.

use std::process::ExitCode;

use clap::Args;
use ledgerflow_service::Environment;

use crate::args::{DatabaseArgs, Format, print_json};
use crate::kafka::KafkaArgs;

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

pub(crate) async fn run(args: StatsArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let store = args.db.open(env).await?;
    let kafka = (!args.no_lag).then(|| args.kafka.client(env));
    let report =
        ledgerflow_service::ops::stats::stats(&store, kafka.as_ref(), args.consumer.as_deref())
            .await?;
    if args.format == Format::Json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<14} {:<22} {:>10}",
        "consumer", "decision", "reason", "count"
    );
    for d in &report.decisions {
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
    let opt = |v: Option<i64>| v.map_or("?".to_owned(), |x| x.to_string());
    for p in &report.positions {
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
    Ok(ExitCode::SUCCESS)
}
