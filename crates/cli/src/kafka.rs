//! Kafka client settings shared by every command that talks to the broker.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext};

/// `--brokers` and extra librdkafka properties.
#[derive(Debug, Clone, Args)]
pub(crate) struct KafkaArgs {
    /// Bootstrap brokers, comma separated (host:port).
    #[arg(long, env = "LEDGERFLOW_BROKERS", default_value = "127.0.0.1:9092")]
    pub(crate) brokers: String,
    /// Extra librdkafka property, repeatable: `--kafka-property security.protocol=SASL_SSL`.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub(crate) properties: Vec<(String, String)>,
}

fn parse_property(raw: &str) -> Result<(String, String), String> {
    let (k, v) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?} is not KEY=VALUE"))?;
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

impl KafkaArgs {
    /// A client config with the brokers and the user's extra properties applied last.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers)
            .set("client.id", "ledgerflow");
        for (k, v) in &self.properties {
            cfg.set(k, v);
        }
        cfg
    }
}

/// Partition ids of a topic, from broker metadata.
pub(crate) fn partitions<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("fetching metadata for topic {topic}"))?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| format!("topic {topic} is not in the broker metadata"))?;
    if let Some(err) = t.error() {
        anyhow::bail!("topic {topic}: {err:?}");
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    if ids.is_empty() {
        anyhow::bail!("topic {topic} has no partitions (does it exist?)");
    }
    Ok(ids)
}
