//! The crate's one error type.

use ledgerflow_store::StoreError;

/// What can go wrong outside the batch path: dispatching, listing, re-queueing, secrets.
///
/// Messages never contain a secret: a secret failure names the environment variable or file
/// only, and HTTP failures carry the status and a body excerpt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotificationError {
    /// A database statement failed.
    #[error("database error while {action}")]
    Database {
        /// What we were doing.
        action: &'static str,
        /// Driver error.
        #[source]
        source: sqlx::Error,
    },
    /// A store operation failed.
    #[error("store error")]
    Store(#[from] StoreError),
    /// A stored row could not be read back.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The HTTP client could not be built.
    #[error("cannot build the http client")]
    HttpClient(#[source] reqwest::Error),
    /// A signing secret is not a `whsec_<base64>` string (the message never quotes it).
    #[error("invalid webhook signing secret: {0}")]
    InvalidSecret(&'static str),
    /// A configuration value is out of range.
    #[error("invalid dispatcher configuration: {0}")]
    Config(String),
}

impl NotificationError {
    /// Adapter for `map_err`.
    pub(crate) fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { action, source }
    }
}
