/// Failures that stop a consumer loop (everything else is retried or dead-lettered).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The Kafka client could not be created or subscribed.
    #[error("kafka client setup failed: {context}")]
    Kafka {
        /// What we were doing.
        context: String,
        /// Client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A store error that retrying cannot fix (corrupt data, invariant violation).
    #[error("store failure that retrying cannot fix")]
    Store(#[from] ledgerflow_store::StoreError),
}
