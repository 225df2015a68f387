//! The service's one error type. Messages are lowercase and name what was being done; the
//! source chain is kept.

use std::path::PathBuf;

use ledgerflow_runtime::RedriveError;
use ledgerflow_store::StoreError;
use rdkafka::error::KafkaError;

/// Everything the composition root and the operator operations can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// An environment variable holds a value its setting cannot take (bad usage, like a bad
    /// flag value).
    #[error("{name}={value:?}: {reason}")]
    Environment {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// The settings, merged, break a rule (a key of the file, or two settings together).
    #[error("{0}")]
    Config(String),
    /// The config file cannot be read.
    #[error("reading config {}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for the settings (unknown keys included).
    #[error("parsing config {}", path.display())]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// A store operation failed.
    #[error("{context}")]
    Store {
        /// What was being done.
        context: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// A Kafka client or request failed.
    #[error("{context}")]
    Kafka {
        /// What was being done.
        context: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The tenants file cannot be loaded.
    #[error("loading tenants from {}", path.display())]
    Tenants {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ledgerflow_tenants::TenantsError,
    },
    /// Pushing records through the pipeline failed (transient: nothing was half-written).
    #[error("{context}")]
    Redrive {
        /// What was being done.
        context: String,
        /// The runtime's error.
        #[source]
        source: RedriveError,
    },
    /// A consumer's own read or the metrics setup failed.
    #[error("{context}")]
    Component {
        /// What was being done.
        context: String,
        /// The component's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A local resource (a listening socket, a file) failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The request cannot be carried out as asked (a range without bounds, an unknown id).
    #[error("{0}")]
    Request(String),
    /// A refused operation: carrying it out would break an invariant (a replay below the
    /// horizon retention pruned would apply records twice). Exit code 2, like bad usage.
    #[error("{0}")]
    Refused(String),
}

impl ServiceError {
    /// `map_err` adapter for store calls.
    pub(crate) fn store(context: impl Into<String>) -> impl FnOnce(StoreError) -> Self {
        let context = context.into();
        move |source| Self::Store { context, source }
    }

    /// `map_err` adapter for Kafka calls.
    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> Self {
        let context = context.into();
        move |source| Self::Kafka { context, source }
    }

    /// `map_err` adapter for other components' errors.
    pub(crate) fn component<E>(context: impl Into<String>) -> impl FnOnce(E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let context = context.into();
        move |source| Self::Component {
            context,
            source: Box::new(source),
        }
    }

    /// Whether the error is bad usage or a refused operation (exit code 2 in the binary) rather
    /// than a failure.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Environment { .. } | Self::Refused(_))
    }
}
