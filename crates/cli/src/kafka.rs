//! Kafka arguments of the tools that talk to the broker without a pipeline (tail, stats,
//! produce).

use std::sync::OnceLock;

use clap::Args;
use ledgerflow_service::config::{parse_property, vars};
use ledgerflow_service::{Environment, KafkaClient};
use rdkafka::ClientConfig;

/// The environment [`KafkaArgs::client_config`] resolves `--brokers` from (set once by
/// `main`; the other tools pass theirs explicitly to [`KafkaArgs::client`]).
static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// Makes `env` the one [`KafkaArgs::client_config`] reads.
pub(crate) fn install_environment(env: Environment) {
    // Set once at start; a second call would carry the same process environment.
    ENVIRONMENT.set(env).ok();
}

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

    /// A client config with the brokers and the user's extra properties applied last.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let env = ENVIRONMENT.get_or_init(Environment::default);
        self.client(env).config("ledgerflow", &[])
    }
}
