//! Runtime settings (already validated; the CLI merges flags, environment and file).

use std::time::Duration;

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
    /// Exit once no record has arrived for this long, nothing is pending and no rebalance is in
    /// progress. With peers in the group, make it longer than `session.timeout.ms` plus a
    /// heartbeat, or a survivor can leave before the coordinator hands it a dead peer's
    /// partitions.
    pub exit_when_idle: Option<Duration>,
    /// Extra librdkafka properties (security, tuning), applied last.
    pub kafka_properties: Vec<(String, String)>,
    /// Backoff for transient failures.
    pub retry_base: Duration,
    /// Backoff cap.
    pub retry_max: Duration,
}

impl RuntimeConfig {
    /// The consumer group of a consumer.
    pub fn group_id(&self, consumer: &str) -> String {
        format!("{}.{consumer}", self.group_prefix)
    }
}
