//! `ledgerflow tail`: arguments and rendering of [`ledgerflow_service::ops::tail`].

use std::process::ExitCode;

use clap::Args;
use ledgerflow_codec::error_chain;
use ledgerflow_service::Environment;
use ledgerflow_service::config::vars;
use ledgerflow_service::ops::tail::{Tail, TailRecord, TailRequest};
use serde_json::{Value, json};

use crate::args::Format;
use crate::kafka::KafkaArgs;

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Schema registry base URL [env: LEDGERFLOW_SCHEMA_REGISTRY_URL]
    /// [default: http://127.0.0.1:8081].
    #[arg(long)]
    registry: Option<String>,
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Start at the earliest offset instead of the end.
    #[arg(long)]
    from_beginning: bool,
    /// Only these partitions (repeatable); all by default.
    #[arg(long)]
    partition: Vec<i32>,
    /// Stop after printing this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Stop when every partition has been read to its end.
    #[arg(long)]
    exit_at_end: bool,
    /// Output: one JSON object per line, or text.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub(crate) async fn run(args: TailArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let request = TailRequest {
        registry: args
            .registry
            .clone()
            .or_else(|| env.get(vars::SCHEMA_REGISTRY_URL).map(str::to_owned))
            .unwrap_or_else(|| "http://127.0.0.1:8081".to_owned()),
        registry_auth: ledgerflow_codec::RegistryAuth::from_env(|n| env.get(n).map(str::to_owned))
            .map_err(anyhow::Error::msg)?,
        topic: args.topic.clone(),
        partitions: args.partition.clone(),
        from_beginning: args.from_beginning,
        exit_at_end: args.exit_at_end,
    };
    let mut tail = Tail::open(&args.kafka.client(env), request)?;
    let mut printed = 0u64;
    let shutdown = ledgerflow_service::signal::stop_requested();
    tokio::pin!(shutdown);
    while args.max.is_none_or(|max| printed < max) {
        let record = tokio::select! {
            () = &mut shutdown => break,
            r = tail.next() => r?,
        };
        let Some(record) = record else {
            break;
        };
        println!("{}", render(&record, args.format));
        printed += 1;
    }
    eprintln!("tail: {printed} records");
    Ok(ExitCode::SUCCESS)
}

fn render(r: &TailRecord, format: Format) -> String {
    match format {
        Format::Json => {
            let mut obj = json!({
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "timestamp_ms": r.timestamp_ms,
                "key": r.key,
                "headers": r.headers,
                "value_len": r.value_len,
            });
            match &r.decoded {
                Ok(d) => {
                    obj["schema_id"] = json!(d.schema_id.0);
                    obj["event_type"] = json!(d.meta.event_type.as_str());
                    obj["event"] = serde_json::to_value(&d.event).unwrap_or(Value::Null);
                }
                Err(e) => {
                    let failure = e.failure();
                    obj["error"] = json!({
                        "reason": failure.reason().map(|r| r.as_str()),
                        "retryable": failure.reason().is_none(),
                        "detail": error_chain(e),
                    });
                }
            }
            obj.to_string()
        }
        Format::Text => {
            let coords = format!("{}/{}@{}", r.topic, r.partition, r.offset);
            let key = r.key.as_deref().unwrap_or("-");
            match &r.decoded {
                Ok(d) => format!(
                    "{coords} key={key} schema={} {} {}",
                    d.schema_id,
                    d.meta.event_type,
                    serde_json::to_string(&d.event).unwrap_or_default()
                ),
                Err(e) => {
                    let reason = e.failure().reason().map_or("retryable", |r| r.as_str());
                    format!("{coords} key={key} ERROR {reason}: {}", error_chain(e))
                }
            }
        }
    }
}
