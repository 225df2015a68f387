//! Runtime settings (already validated; the CLI merges flags, environment and file).

use std::sync::Arc;
use std::time::Duration;

use crate::MemberStatus;

/// Which topics a consumer subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicSelector {
    /// An exact topic name.
    Name(String),
    /// A regex (librdkafka syntax, starts with `^`), e.g. `^billing\.events\..*`.
    Pattern(String),
}

impl TopicSelector {
    /// `^...` is a pattern, anything else a name.
    pub fn parse(raw: &str) -> Self {
        if raw.starts_with('^') {
            Self::Pattern(raw.to_owned())
        } else {
            Self::Name(raw.to_owned())
        }
    }

    /// The subscription string librdkafka takes.
    pub fn as_subscription(&self) -> &str {
        match self {
            Self::Name(s) | Self::Pattern(s) => s,
        }
    }
}

/// The consumer-group protocol a consumer speaks (Kafka 4 brokers run both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupProtocol {
    /// The classic protocol (join/sync, client-side assignment), with the cooperative-sticky
    /// assignor: a rebalance moves only the partitions that change owner, the others keep
    /// flowing. Works with every Kafka-compatible broker.
    #[default]
    Classic,
    /// KIP-848 (`group.protocol=consumer`, Kafka 4.0+): the broker assigns, incrementally, and
    /// owns the session timeout and heartbeat interval (`group.consumer.*` broker configs).
    Consumer,
}

impl GroupProtocol {
    /// `classic` or `consumer`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "classic" => Some(Self::Classic),
            "consumer" => Some(Self::Consumer),
            _ => None,
        }
    }

    /// The `group.protocol` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Consumer => "consumer",
        }
    }
}

/// Settings for one consumer loop.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Bootstrap brokers.
    pub brokers: String,
    /// Consumer group prefix; the group is `<prefix>.<consumer>`.
    pub group_prefix: String,
    /// Subscriptions.
    pub topics: Vec<TopicSelector>,
    /// Records per batch at most.
    pub batch_max_records: usize,
    /// A partition's batch is committed at the latest this long after its first record.
    pub batch_max_wait: Duration,
    /// Exit once drained: no record has arrived for this long, nothing is pending, and every
    /// partition of the subscribed topics has its position of record at the high watermark
    /// (whichever member of the group holds it). While a partition waits for a joining member,
    /// a rebalance or a dead member's session, the run keeps waiting and says why.
    pub exit_when_idle: Option<Duration>,
    /// With `exit_when_idle`: end the run (not drained) when it has not drained this long
    /// after its start.
    pub max_wait: Option<Duration>,
    /// Graceful shutdown budget: two thirds of it for committing buffered batches, the rest
    /// for leaving the group.
    pub shutdown_timeout: Duration,
    /// Extra librdkafka properties (security, tuning), applied last.
    pub kafka_properties: Vec<(String, String)>,
    /// Consumer-group protocol.
    pub group_protocol: GroupProtocol,
    /// Static membership (KIP-345): `group.instance.id` is `<instance_id>.<consumer>`, so a
    /// restarted instance with the same id takes its partitions back without a rebalance.
    pub instance_id: Option<String>,
    /// Classic protocol only: how long the group waits for a silent member before its
    /// partitions move (with KIP-848 the broker's `group.consumer.session.timeout.ms` rules).
    pub session_timeout: Duration,
    /// Backoff for transient failures.
    pub retry_base: Duration,
    /// Backoff cap.
    pub retry_max: Duration,
    /// Where the loop reports its group membership (for `/readyz`).
    pub status: Option<Arc<MemberStatus>>,
}

impl RuntimeConfig {
    /// The consumer group of a consumer.
    pub fn group_id(&self, consumer: &str) -> String {
        format!("{}.{consumer}", self.group_prefix)
    }

    /// The static member id of a consumer, when static membership is on.
    pub fn group_instance_id(&self, consumer: &str) -> Option<String> {
        self.instance_id
            .as_ref()
            .map(|id| format!("{id}.{consumer}"))
    }
}
