//! Tail: decode a topic like `kcat -C -s avro`, without a consumer group. The consumer is in
//! assign mode and commits nothing, so it never disturbs the consumers' groups. Undecodable
//! records come back with their error, not skipped.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use ledgerflow_codec::{CodecError, Decoded, Decoder, DecoderConfig, RegistryClient, error_chain};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::{KafkaClient, METADATA_TIMEOUT, ServiceError, partitions};

/// What to read.
#[derive(Debug, Clone)]
pub struct TailRequest {
    /// Schema registry URL.
    pub registry: String,
    /// Registry credentials.
    pub registry_auth: Option<ledgerflow_codec::RegistryAuth>,
    /// Topic.
    pub topic: String,
    /// Only these partitions (none: all).
    pub partitions: Vec<i32>,
    /// From the earliest offset instead of the end.
    pub from_beginning: bool,
    /// End once every partition has been read to its end.
    pub exit_at_end: bool,
}

/// One record as read, and its value decoded (or why not).
#[derive(Debug)]
pub struct TailRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Record timestamp.
    pub timestamp_ms: Option<i64>,
    /// Key, as UTF-8 (lossy).
    pub key: Option<String>,
    /// Headers, values as UTF-8 (lossy).
    pub headers: BTreeMap<String, Option<String>>,
    /// Value size.
    pub value_len: usize,
    /// The decoded value, or the codec's error.
    pub decoded: Result<Decoded, CodecError>,
}

/// An open tail.
pub struct Tail {
    consumer: StreamConsumer,
    decoder: Decoder,
    all: HashSet<i32>,
    at_end: HashSet<i32>,
    request: TailRequest,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail")
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

impl Tail {
    /// Assigns the partitions at their start or end.
    pub fn open(kafka: &KafkaClient, request: TailRequest) -> Result<Self, ServiceError> {
        let client = RegistryClient::new(&request.registry, Duration::from_secs(10))
            .map_err(ServiceError::Config)?
            .with_auth(request.registry_auth.clone());
        let decoder = Decoder::new(client, DecoderConfig::default());
        let reset = if request.from_beginning {
            "earliest"
        } else {
            "latest"
        };
        let consumer: StreamConsumer = kafka
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
            .map_err(ServiceError::kafka("creating the Kafka consumer"))?;
        let mut ids = partitions(&consumer, &request.topic, METADATA_TIMEOUT)?;
        if !request.partitions.is_empty() {
            ids.retain(|p| request.partitions.contains(p));
            if ids.is_empty() {
                return Err(ServiceError::Request(format!(
                    "none of the partitions {:?} exist in {}",
                    request.partitions, request.topic
                )));
            }
        }
        let start = if request.from_beginning {
            Offset::Beginning
        } else {
            Offset::End
        };
        let mut tpl = TopicPartitionList::new();
        for p in &ids {
            tpl.add_partition_offset(&request.topic, *p, start)
                .map_err(ServiceError::kafka("building the assignment"))?;
        }
        consumer
            .assign(&tpl)
            .map_err(ServiceError::kafka("assigning partitions"))?;
        Ok(Self {
            consumer,
            decoder,
            all: ids.into_iter().collect(),
            at_end: HashSet::new(),
            request,
        })
    }

    /// The next record; `None` once every partition is at its end with `exit_at_end`.
    pub async fn next(&mut self) -> Result<Option<TailRecord>, ServiceError> {
        loop {
            match self.consumer.recv().await {
                Ok(msg) => {
                    self.at_end.remove(&msg.partition());
                    let mut headers = BTreeMap::new();
                    for header in msg.headers().iter().flat_map(|h| h.iter()) {
                        let value = header
                            .value
                            .map(|v| String::from_utf8_lossy(v).into_owned());
                        headers.insert(header.key.to_owned(), value);
                    }
                    let value = msg.payload().unwrap_or_default();
                    return Ok(Some(TailRecord {
                        topic: msg.topic().to_owned(),
                        partition: msg.partition(),
                        offset: msg.offset(),
                        timestamp_ms: msg.timestamp().to_millis(),
                        key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                        headers,
                        value_len: value.len(),
                        decoded: decode_with_retry(&self.decoder, value).await,
                    }));
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    self.at_end.insert(p);
                    if self.request.exit_at_end && self.at_end.is_superset(&self.all) {
                        return Ok(None);
                    }
                }
                Err(e) => {
                    let topic = &self.request.topic;
                    return Err(ServiceError::kafka(format!("consuming {topic}"))(e));
                }
            }
        }
    }
}

/// Decodes, retrying a retryable failure (registry unreachable) a few times.
async fn decode_with_retry(decoder: &Decoder, value: &[u8]) -> Result<Decoded, CodecError> {
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
