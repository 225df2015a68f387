//! The one base configuration of every Kafka client built outside the consumer loops (tail,
//! produce, stats, replay, offsets, the metrics sampler), and the broker reads they share.
//! None of these clients joins a group or commits, except `offsets reset --execute`'s commit
//! for the group it resets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::ServiceError;

/// Bootstrap servers plus the operator's extra librdkafka properties (TLS, SASL, tuning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaClient {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// Extra properties, applied last so they override the tool's own.
    pub properties: Vec<(String, String)>,
}

/// How long a metadata, watermark or offsets-for-times request may take.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

impl KafkaClient {
    /// `bootstrap.servers`, `client.id`, the tool's own `settings`, then the operator's
    /// properties.
    pub fn config(&self, client_id: &str, settings: &[(&str, &str)]) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id);
        for (k, v) in settings {
            cfg.set(*k, *v);
        }
        for (k, v) in &self.properties {
            // A secret reference resolves here, at use; settings validated it at startup.
            let value = ledgerflow_core::secret::resolve(v).unwrap_or_else(|_| v.clone());
            cfg.set(k, value);
        }
        cfg
    }

    /// A consumer for metadata, watermarks, offsets-for-times and assign-mode reads. librdkafka
    /// wants a `group.id` on every consumer; assign mode never joins it and nothing commits.
    pub fn assign_only(
        &self,
        client_id: &str,
        group_id: &str,
        settings: &[(&str, &str)],
    ) -> Result<BaseConsumer, ServiceError> {
        let mut all = vec![
            ("group.id", group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
        ];
        all.extend_from_slice(settings);
        self.config(client_id, &all)
            .create()
            .map_err(ServiceError::kafka("creating a Kafka client"))
    }
}

/// Partition ids of a topic, from broker metadata.
pub fn partitions<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, ServiceError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(ServiceError::kafka(format!(
            "fetching metadata for topic {topic}"
        )))?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| {
            ServiceError::Request(format!("topic {topic} is not in the broker metadata"))
        })?;
    if let Some(err) = t.error() {
        return Err(ServiceError::Request(format!("topic {topic}: {err:?}")));
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    if ids.is_empty() {
        return Err(ServiceError::Request(format!(
            "topic {topic} has no partitions (does it exist?)"
        )));
    }
    Ok(ids)
}

/// Every (topic, partition) of the configured topics; `^...` entries are regexes matched
/// against the broker's topic list.
pub(crate) fn topic_partitions(
    kafka: &BaseConsumer,
    topics: &[String],
) -> Result<Vec<(String, i32)>, ServiceError> {
    let mut names = BTreeSet::new();
    let patterns: Vec<&String> = topics.iter().filter(|t| t.starts_with('^')).collect();
    if !patterns.is_empty() {
        let metadata = kafka
            .fetch_metadata(None, METADATA_TIMEOUT)
            .map_err(ServiceError::kafka("listing topics"))?;
        for pattern in patterns {
            let re = regex_lite::Regex::new(pattern)
                .map_err(|e| ServiceError::Request(format!("topic pattern {pattern:?}: {e}")))?;
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
        for p in partitions(kafka, &topic, METADATA_TIMEOUT)? {
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
) -> Result<(i64, i64), ServiceError> {
    kafka
        .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
        .map_err(ServiceError::kafka(format!(
            "reading the watermarks of {topic}/{partition}"
        )))
}

/// The first offset at or after `micros` per partition (the high watermark when none).
pub(crate) fn offsets_for_time(
    kafka: &BaseConsumer,
    parts: &[(String, i32)],
    micros: i64,
) -> Result<BTreeMap<(String, i32), i64>, ServiceError> {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition_offset(t, *p, Offset::Offset(micros / 1000))
            .map_err(ServiceError::kafka(
                "building the offsets-for-times request",
            ))?;
    }
    let answer = kafka
        .offsets_for_times(tpl, METADATA_TIMEOUT)
        .map_err(ServiceError::kafka("asking the broker for offsets by time"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_properties_come_last() {
        let client = KafkaClient {
            brokers: "b:9092".into(),
            properties: vec![("client.id".into(), "mine".into())],
        };
        let cfg = client.config("ledgerflow-tools", &[("enable.auto.commit", "false")]);
        assert_eq!(cfg.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(cfg.get("client.id"), Some("mine"));
        assert_eq!(cfg.get("enable.auto.commit"), Some("false"));
    }
}
