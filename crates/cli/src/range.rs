//! Reading offset ranges from Kafka outside any consumer group (assign mode, no commits), for
//! the operator tools: replay plan/run, offsets reset.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use ledgerflow_runtime::RawRecord;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::settings::PipelineSettings;

/// Records per chunk handed to the pipeline (one partition per chunk).
pub(crate) const CHUNK: usize = 500;
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read waits for the broker to deliver the next record of a pending partition.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Offsets `[start, end)` of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Span {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) start: i64,
    pub(crate) end: i64,
}

impl Span {
    pub(crate) fn len(&self) -> u64 {
        u64::try_from(self.end - self.start).unwrap_or(0)
    }
}

/// A consumer for metadata, watermarks, offsets-for-times and assign-mode reads; it never
/// joins a group and never commits.
pub(crate) fn tool_consumer(settings: &PipelineSettings) -> anyhow::Result<BaseConsumer> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &settings.brokers)
        .set("client.id", "ledgerflow-tools")
        // Required by librdkafka for a consumer; assign mode never joins it.
        .set("group.id", format!("{}.tools", settings.group_prefix))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    for (k, v) in &settings.kafka_properties {
        cfg.set(k, v);
    }
    cfg.create().context("creating a Kafka client")
}

/// Every (topic, partition) of the configured topics; `^...` entries are regexes matched
/// against the broker's topic list.
pub(crate) fn topic_partitions(
    kafka: &BaseConsumer,
    topics: &[String],
) -> anyhow::Result<Vec<(String, i32)>> {
    let mut names = BTreeSet::new();
    let patterns: Vec<&String> = topics.iter().filter(|t| t.starts_with('^')).collect();
    if !patterns.is_empty() {
        let metadata = kafka
            .fetch_metadata(None, METADATA_TIMEOUT)
            .context("listing topics")?;
        for pattern in patterns {
            let re = regex_lite::Regex::new(pattern)
                .with_context(|| format!("topic pattern {pattern:?}"))?;
            for t in metadata.topics() {
                if re.is_match(t.name()) {
                    names.insert(t.name().to_owned());
                }
            }
        }
    }
    names.extend(topics.iter().filter(|t| !t.starts_with('^')).cloned());
    let mut out = Vec::new();
    for topic in names {
        for p in crate::kafka::partitions(kafka, &topic, METADATA_TIMEOUT)? {
            out.push((topic.clone(), p));
        }
    }
    Ok(out)
}

/// (low, high) watermarks.
pub(crate) fn watermarks(
    kafka: &BaseConsumer,
    topic: &str,
    partition: i32,
) -> anyhow::Result<(i64, i64)> {
    kafka
        .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
        .with_context(|| format!("reading the watermarks of {topic}/{partition}"))
}

/// The first offset at or after `micros` per partition (the high watermark when none).
pub(crate) fn offsets_for_time(
    kafka: &BaseConsumer,
    parts: &[(String, i32)],
    micros: i64,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition_offset(t, *p, Offset::Offset(micros / 1000))
            .context("building the offsets-for-times request")?;
    }
    let answer = kafka
        .offsets_for_times(tpl, METADATA_TIMEOUT)
        .context("asking the broker for offsets by time")?;
    let mut out = BTreeMap::new();
    for e in answer.elements() {
        let key = (e.topic().to_owned(), e.partition());
        let offset = match e.offset() {
            Offset::Offset(o) => o,
            // No record at or after the time: the end of the partition.
            _ => watermarks(kafka, e.topic(), e.partition())?.1,
        };
        out.insert(key, offset);
    }
    Ok(out)
}

/// Reads the spans on a blocking thread and sends chunks of up to [`CHUNK`] records of one
/// partition, in offset order. Offsets that the broker no longer has (retention, compaction)
/// are simply not delivered. Ends when every span is read, or with an error when the broker
/// stops delivering for [`STALL_TIMEOUT`].
pub(crate) fn read_spans(
    kafka: BaseConsumer,
    spans: Vec<Span>,
    tx: mpsc::Sender<Vec<RawRecord>>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::task::spawn_blocking(move || {
        let mut pending: BTreeMap<(String, i32), (i64, Vec<RawRecord>)> = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for s in spans.iter().filter(|s| s.end > s.start) {
            tpl.add_partition_offset(&s.topic, s.partition, Offset::Offset(s.start))
                .context("building the assignment")?;
            pending.insert((s.topic.clone(), s.partition), (s.end, Vec::new()));
        }
        if pending.is_empty() {
            return Ok(());
        }
        kafka
            .assign(&tpl)
            .context("assigning the partitions to read")?;
        let mut last_progress = Instant::now();
        while !pending.is_empty() {
            let Some(msg) = kafka.poll(Duration::from_millis(200)) else {
                // A range that ends in offsets the broker never delivers (transaction markers,
                // compacted records) is done once the fetch position has passed its end.
                if let Ok(positions) = kafka.position() {
                    for e in positions.elements() {
                        let key = (e.topic().to_owned(), e.partition());
                        if let (Offset::Offset(at), Some((end, _))) =
                            (e.offset(), pending.get(&key))
                            && at >= *end
                            && let Some((_, buffer)) = pending.remove(&key)
                            && !buffer.is_empty()
                            && tx.blocking_send(buffer).is_err()
                        {
                            return Ok(());
                        }
                    }
                }
                if pending.is_empty() {
                    break;
                }
                if last_progress.elapsed() > STALL_TIMEOUT {
                    let left: Vec<String> =
                        pending.keys().map(|(t, p)| format!("{t}/{p}")).collect();
                    anyhow::bail!(
                        "the broker delivered nothing for {STALL_TIMEOUT:?}; unfinished: {}",
                        left.join(", ")
                    );
                }
                continue;
            };
            let msg = msg.context("reading from Kafka")?;
            last_progress = Instant::now();
            let key = (msg.topic().to_owned(), msg.partition());
            let Some((end, buffer)) = pending.get_mut(&key) else {
                continue;
            };
            let offset = msg.offset();
            if offset < *end {
                buffer.push(RawRecord::from_message(&msg));
            }
            let done = offset + 1 >= *end;
            if buffer.len() >= CHUNK || (done && !buffer.is_empty()) {
                let chunk = std::mem::take(buffer);
                if tx.blocking_send(chunk).is_err() {
                    return Ok(()); // the receiver stopped (max events reached, or an error)
                }
            }
            if done {
                pending.remove(&key);
            }
        }
        Ok(())
    })
}
