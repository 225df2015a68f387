//! Reading offset ranges from Kafka outside any consumer group (assign mode, no commits), for
//! replay plan/run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ledgerflow_runtime::RawRecord;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::ServiceError;

/// Records per chunk handed to the pipeline (one partition per chunk).
pub const CHUNK: usize = 500;
/// How long a read waits for the broker to deliver the next record of a pending partition.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Offsets `[start, end)` of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset.
    pub start: i64,
    /// One past the last offset.
    pub end: i64,
}

impl Span {
    /// Offsets in the span.
    pub fn len(&self) -> u64 {
        u64::try_from(self.end - self.start).unwrap_or(0)
    }

    /// Whether the span holds no offset.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the spans on a blocking thread and sends chunks of up to [`CHUNK`] records of one
/// partition, in offset order. Offsets that the broker no longer has (retention, compaction)
/// are simply not delivered. Ends when every span is read, or with an error when the broker
/// stops delivering for [`STALL_TIMEOUT`].
pub(crate) fn read_spans(
    kafka: BaseConsumer,
    spans: Vec<Span>,
    tx: mpsc::Sender<Vec<RawRecord>>,
) -> tokio::task::JoinHandle<Result<(), ServiceError>> {
    tokio::task::spawn_blocking(move || {
        let mut pending: BTreeMap<(String, i32), (i64, Vec<RawRecord>)> = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for s in spans.iter().filter(|s| s.end > s.start) {
            tpl.add_partition_offset(&s.topic, s.partition, Offset::Offset(s.start))
                .map_err(ServiceError::kafka("building the assignment"))?;
            pending.insert((s.topic.clone(), s.partition), (s.end, Vec::new()));
        }
        if pending.is_empty() {
            return Ok(());
        }
        kafka
            .assign(&tpl)
            .map_err(ServiceError::kafka("assigning the partitions to read"))?;
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
                    return Err(ServiceError::Request(format!(
                        "the broker delivered nothing for {STALL_TIMEOUT:?}; unfinished: {}",
                        left.join(", ")
                    )));
                }
                continue;
            };
            let msg = msg.map_err(ServiceError::kafka("reading from Kafka"))?;
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
