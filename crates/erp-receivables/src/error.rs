//! The crate's one error type.

use ledgerflow_store::StoreError;

/// What can go wrong outside the batch path: rendering for an ERP, dispatching, reconciling.
///
/// Messages never contain a secret: a credential failure names the environment variable or
/// file only, and HTTP failures carry the status and a body excerpt with the token redacted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErpError {
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
    /// A credential could not be read.
    #[error("cannot read the erp credential")]
    Secret(#[source] ledgerflow_tenants::TenantsError),
    /// The reconciliation manifest is not usable.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// A reconciliation source file (billing export) is not usable.
    #[error("invalid reconciliation source: {0}")]
    Source(String),
    /// A journal cannot be rendered for the tenant's ERP with its mapping.
    #[error("cannot render for the erp: {0}")]
    Mapping(String),
    /// A configuration value is out of range.
    #[error("invalid dispatcher configuration: {0}")]
    Config(String),
}

impl ErpError {
    /// Adapter for `map_err`.
    pub(crate) fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { action, source }
    }
}
