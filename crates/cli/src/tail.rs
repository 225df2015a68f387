//! `ledgerflow tail`: decode and print a topic like `kcat -C -s avro`, without a consumer group.
//!
//! The consumer is in assign mode with no `group.id`, so it commits nothing and never disturbs
//! the consumers' groups. Undecodable records are printed with their reason code, not skipped.

use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ledgerflow_codec::{Decoder, DecoderConfig, RegistryClient, error_chain};
use ledgerflow_service::config::vars;
use ledgerflow_service::{Environment, partitions};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
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
    let registry = args
        .registry
        .clone()
        .or_else(|| env.get(vars::SCHEMA_REGISTRY_URL).map(str::to_owned))
        .unwrap_or_else(|| "http://127.0.0.1:8081".to_owned());
    let client =
        RegistryClient::new(&registry, Duration::from_secs(10)).map_err(anyhow::Error::msg)?;
    let decoder = Decoder::new(client, DecoderConfig::default());
    let reset = if args.from_beginning {
        "earliest"
    } else {
        "latest"
    };
    let consumer: StreamConsumer = args
        .kafka
        .client(env)
        .config(
            "ledgerflow",
            &[
                ("enable.auto.commit", "false"),
                ("enable.partition.eof", "true"),
                // Required by librdkafka's consumer API even in assign mode; nothing commits.
                ("group.id", "ledgerflow-tail"),
                ("auto.offset.reset", reset),
            ],
        )
        .create()
        .context("creating the Kafka consumer")?;
    let mut ids = partitions(&consumer, &args.topic, Duration::from_secs(10))?;
    if !args.partition.is_empty() {
        ids.retain(|p| args.partition.contains(p));
        if ids.is_empty() {
            anyhow::bail!(
                "none of the partitions {:?} exist in {}",
                args.partition,
                args.topic
            );
        }
    }
    let mut tpl = TopicPartitionList::new();
    let start = if args.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    for p in &ids {
        tpl.add_partition_offset(&args.topic, *p, start)
            .context("building the assignment")?;
    }
    consumer.assign(&tpl).context("assigning partitions")?;

    let all: HashSet<i32> = ids.iter().copied().collect();
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut printed = 0u64;
    let shutdown = ledgerflow_service::signal::stop_requested();
    tokio::pin!(shutdown);
    loop {
        if args.max.is_some_and(|max| printed >= max) {
            break;
        }
        let message = tokio::select! {
            () = &mut shutdown => break,
            m = consumer.recv() => m,
        };
        match message {
            Ok(msg) => {
                at_end.remove(&msg.partition());
                let line = render(&decoder, &msg, args.format).await;
                println!("{line}");
                printed += 1;
            }
            Err(KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
                if args.exit_at_end && at_end.is_superset(&all) {
                    break;
                }
            }
            Err(e) => anyhow::bail!("consuming {}: {e}", args.topic),
        }
    }
    eprintln!("tail: {printed} records");
    Ok(ExitCode::SUCCESS)
}

async fn decode_with_retry(
    decoder: &Decoder,
    value: &[u8],
) -> Result<ledgerflow_codec::Decoded, ledgerflow_codec::CodecError> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        match decoder.decode(value).await {
            Err(e) if e.failure().reason().is_none() && attempt < 5 => {
                attempt += 1;
                tracing::warn!(error = %error_chain(&e), attempt, "retrying decode");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
}

async fn render(decoder: &Decoder, msg: &BorrowedMessage<'_>, format: Format) -> String {
    let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
    let mut headers = BTreeMap::new();
    if let Some(h) = msg.headers() {
        for header in h.iter() {
            let value = header
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned());
            headers.insert(header.key.to_owned(), value);
        }
    }
    let value = msg.payload().unwrap_or_default();
    let decoded = decode_with_retry(decoder, value).await;
    match format {
        Format::Json => {
            let mut obj = json!({
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "timestamp_ms": msg.timestamp().to_millis(),
                "key": key,
                "headers": headers,
                "value_len": value.len(),
            });
            match &decoded {
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
            let coords = format!("{}/{}@{}", msg.topic(), msg.partition(), msg.offset());
            let key = key.unwrap_or_else(|| "-".to_owned());
            match &decoded {
                Ok(d) => format!(
                    "{coords} key={key} schema={} {} {}",
                    d.schema_id,
                    d.meta.event_type,
                    serde_json::to_string(&d.event).unwrap_or_default()
                ),
                Err(e) => {
                    let reason = e
                        .failure()
                        .reason()
                        .map_or("retryable", |r| r.as_str())
                        .to_owned();
                    format!("{coords} key={key} ERROR {reason}: {}", error_chain(e))
                }
            }
        }
    }
}
