//! Kafka arguments of the tools that talk to the broker without a pipeline (tail, stats,
//! produce).

use clap::Args;
use ledgerflow_service::config::{parse_property, vars};
use ledgerflow_service::{Environment, KafkaClient};

/// `--brokers` and extra librdkafka properties.
#[derive(Debug, Clone, Args)]
pub(crate) struct KafkaArgs {
    /// Bootstrap brokers, comma separated (host:port) [env: LEDGERFLOW_BROKERS]
    /// [default: 127.0.0.1:9092].
    #[arg(long)]
    brokers: Option<String>,
    /// Extra librdkafka property, repeatable: `--kafka-property security.protocol=SASL_SSL`; a
    /// value `${env:NAME}` or `${file:PATH}` is a secret reference, resolved when the client
    /// is built.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub(crate) properties: Vec<(String, String)>,
}

impl KafkaArgs {
    /// The brokers (flag, environment, default) and properties.
    pub(crate) fn client(&self, env: &Environment) -> KafkaClient {
        KafkaClient {
            brokers: self
                .brokers
                .clone()
                .or_else(|| env.get(vars::BROKERS).map(str::to_owned))
                .unwrap_or_else(|| "127.0.0.1:9092".to_owned()),
            properties: self.properties.clone(),
        }
    }
}
