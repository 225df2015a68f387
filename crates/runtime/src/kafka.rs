//! The consumer's Kafka client: its librdkafka configuration, the rebalance callbacks that report
//! assignment changes to the loop, and the broker requests the loop makes besides fetching
//! (seek, pause, the advisory offset commit, watermarks, the group's description).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tracing::{debug, warn};

use crate::drain::{GroupView, MemberView, PartitionProgress, decode_assignment};
use crate::partitions::Key;
use crate::{GroupProtocol, RuntimeConfig, TopicSelector};

/// Budget of one broker request made outside the fetch path.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Assignment changes, sent from librdkafka's rebalance callbacks to the loop.
#[derive(Debug)]
pub(crate) enum Membership {
    /// Partitions added (incremental with cooperative-sticky and KIP-848).
    Assigned(Vec<Key>),
    /// Partitions taken away.
    Revoked(Vec<Key>),
}

/// The client context: forwards assignment changes to the loop.
pub(crate) struct LoopContext {
    pub(crate) tx: mpsc::Sender<Membership>,
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<Key> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for LoopContext {}

impl ConsumerContext for LoopContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // The loop drops buffered records of revoked partitions; a batch already in its
            // transaction is fenced by the position check if the new owner gets there first.
            // A send fails only when the loop has ended, when nobody needs to know.
            self.tx.send(Membership::Revoked(partitions_of(tpl))).ok();
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.tx.send(Membership::Assigned(partitions_of(tpl))).ok();
        }
    }
}

/// The consumer group member's client.
pub(crate) type KafkaConsumer = StreamConsumer<LoopContext>;

/// The librdkafka configuration of a consumer's group member.
pub(crate) fn consumer_client_config(config: &RuntimeConfig, name: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &config.brokers)
        .set("group.id", config.group_id(name))
        .set("client.id", format!("ledgerflow-{name}"))
        .set("group.protocol", config.group_protocol.as_str())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "10000")
        // A fetch the broker holds open waits at most this long for records (librdkafka's
        // default is 500 ms, which would be added to the latency of a record that arrives
        // while a fetch is parked); an idle consumer pays 20 fetches a second per broker.
        // Overridable with `--kafka-property fetch.wait.max.ms=...`.
        .set("fetch.wait.max.ms", "50");
    if config.group_protocol == GroupProtocol::Classic {
        // Incremental rebalances: members keep the partitions they are not giving up, so a
        // joining or leaving peer stalls only the partitions that move. With KIP-848 the broker
        // assigns, and session and heartbeat timing are broker settings (librdkafka refuses
        // these three there).
        cfg.set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout.as_millis() / 10)
                    .clamp(100, 3000)
                    .to_string(),
            );
    }
    if let Some(instance) = config.group_instance_id(name) {
        cfg.set("group.instance.id", instance);
    }
    for (k, v) in &config.kafka_properties {
        // A secret reference (`${env:..}`, `${file:..}`) resolves here, at use, so the secret
        // lives only in librdkafka's configuration; the service validated it at startup.
        let value = ledgerflow_core::secret::resolve(v).unwrap_or_else(|_| v.clone());
        cfg.set(k, value);
    }
    cfg
}

/// The partition's earliest available offset, or None when the broker does not answer.
pub(crate) fn low_watermark(kafka: &KafkaConsumer, topic: &str, partition: i32) -> Option<i64> {
    // A metadata round trip, once per partition per assignment; block_in_place keeps the
    // runtime's other tasks moving meanwhile.
    tokio::task::block_in_place(|| kafka.fetch_watermarks(topic, partition, REQUEST_TIMEOUT))
        .map(|(low, _)| low)
        .map_err(|e| warn!(topic, partition, error = %e, "cannot read the low watermark"))
        .ok()
}

/// Moves a partition's fetch position.
pub(crate) fn seek(kafka: &KafkaConsumer, topic: &str, partition: i32, offset: i64) {
    if let Err(e) = kafka.seek(topic, partition, Offset::Offset(offset), REQUEST_TIMEOUT) {
        // A failed seek leaves the fetch position where it was; the next batch is then stale
        // or unsynced and is corrected again. Nothing is committed from a wrong position.
        warn!(topic, partition, offset, error = %e, "seek failed");
    }
}

/// Pauses or resumes fetching of partitions (failures are logged: a pause that did not take
/// only means records keep arriving into the buffer, which the retry then includes).
pub(crate) fn set_paused(kafka: &KafkaConsumer, keys: &[Key], paused: bool) {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in keys {
        tpl.add_partition(topic, *partition);
    }
    let result = if paused {
        kafka.pause(&tpl)
    } else {
        kafka.resume(&tpl)
    };
    if let Err(e) = result {
        warn!(partitions = ?keys, paused, error = %e, "pause/resume failed");
    }
}

/// Mirrors positions of record into the group's committed offsets (advisory: lag tooling reads
/// them, correctness never does). `Async` after each batch; `Sync` once at shutdown, so a
/// restarted member fetches from where this one stopped instead of re-reading committed records.
pub(crate) fn mirror_commit(kafka: &KafkaConsumer, positions: &[(Key, i64)], mode: CommitMode) {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in positions {
        if tpl
            .add_partition_offset(topic, *partition, Offset::Offset(*next))
            .is_err()
        {
            return;
        }
    }
    if tpl.count() == 0 {
        return;
    }
    let result = match mode {
        CommitMode::Sync => tokio::task::block_in_place(|| kafka.commit(&tpl, mode)),
        CommitMode::Async => kafka.commit(&tpl, mode),
    };
    if let Err(e) = result {
        debug!(error = %e, "kafka offset mirror commit failed (advisory)");
    }
}

/// Watermarks of every partition of the subscribed topics (regexes matched against the
/// cluster's topics, internal topics excluded), with the given positions of record.
pub(crate) fn subscribed_progress(
    kafka: &KafkaConsumer,
    topics: &[TopicSelector],
    positions: &BTreeMap<Key, i64>,
) -> Result<BTreeMap<Key, PartitionProgress>, String> {
    tokio::task::block_in_place(|| {
        let metadata = kafka
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .map_err(|e| format!("metadata: {e}"))?;
        let patterns: Vec<regex_lite::Regex> = topics
            .iter()
            .filter_map(|t| match t {
                TopicSelector::Pattern(p) => regex_lite::Regex::new(p).ok(),
                TopicSelector::Name(_) => None,
            })
            .collect();
        let wanted = |name: &str| {
            topics
                .iter()
                .any(|t| matches!(t, TopicSelector::Name(n) if n == name))
                || (!name.starts_with("__") && patterns.iter().any(|re| re.is_match(name)))
        };
        let mut out = BTreeMap::new();
        for topic in metadata.topics().iter().filter(|t| wanted(t.name())) {
            for p in topic.partitions() {
                let (low, high) = kafka
                    .fetch_watermarks(topic.name(), p.id(), REQUEST_TIMEOUT)
                    .map_err(|e| format!("watermarks of {}/{}: {e}", topic.name(), p.id()))?;
                let key = (topic.name().to_owned(), p.id());
                let position = positions.get(&key).copied();
                out.insert(
                    key,
                    PartitionProgress {
                        low,
                        high,
                        position,
                    },
                );
            }
        }
        Ok(out)
    })
}

/// The coordinator's description of a group (its state and members with their assignments).
pub(crate) fn describe_group(kafka: &KafkaConsumer, group: &str) -> Option<GroupView> {
    let list = tokio::task::block_in_place(|| kafka.fetch_group_list(Some(group), REQUEST_TIMEOUT))
        .map_err(|e| debug!(group, error = %e, "describing the group failed"))
        .ok()?;
    let info = list.groups().iter().find(|g| g.name() == group)?;
    Some(GroupView {
        state: info.state().to_owned(),
        members: info
            .members()
            .iter()
            .map(|m| MemberView {
                id: m.id().to_owned(),
                client: format!("{}@{}", m.client_id(), m.client_host()),
                partitions: m
                    .assignment()
                    .and_then(decode_assignment)
                    .unwrap_or_else(BTreeSet::new),
            })
            .collect(),
    })
}
