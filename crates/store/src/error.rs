/// Store failures. Database errors are retryable unless they say the data itself is wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not a `sqlite:` or `postgres:` URL.
    #[error("unsupported database url {url}: use sqlite://FILE or postgres://...")]
    UnsupportedUrl {
        /// Redacted URL.
        url: String,
    },
    /// Could not connect.
    #[error("cannot connect to {url}")]
    Connect {
        /// Redacted URL.
        url: String,
        /// Driver error.
        #[source]
        source: sqlx::Error,
    },
    /// A statement failed.
    #[error("database error while {action}")]
    Query {
        /// What we were doing.
        action: &'static str,
        /// Driver error.
        #[source]
        source: sqlx::Error,
    },
    /// An erased effect did not have the consumer's effect type (a wiring bug).
    #[error("effect handed to consumer {consumer} has the wrong type")]
    EffectType {
        /// Consumer name.
        consumer: &'static str,
    },
    /// A consistency check inside the transaction failed; the batch is rolled back.
    #[error("invariant violated: {0}")]
    Invariant(String),
    /// Stored data could not be read back (corrupt row, unknown decision).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Adapter for `map_err`: `.map_err(StoreError::query("inserting the inbox"))`.
    pub fn query(action: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Query { action, source }
    }

    /// Whether retrying the same batch later can succeed (connection lost, database restarting,
    /// serialization failure). Invariant violations and corrupt data are not retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Query { .. })
    }
}
