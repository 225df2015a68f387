//! The crate's one error type (outside the batch path, which reports `StoreError`).

use std::path::PathBuf;

use crate::Table;

/// What can go wrong exporting or naming warehouse tables.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WarehouseError {
    /// The name is not a warehouse table.
    #[error("unknown warehouse table {0:?}; known: {known}", known = crate::table::known_tables())]
    UnknownTable(String),
    /// A time filter was given for a table without business time.
    #[error("table {0} has no business-time column to filter on; drop --from/--to")]
    NoBusinessTime(Table),
    /// `from` is not before `to`.
    #[error("the time range is empty: from {from} is not before to {to}")]
    EmptyRange {
        /// Inclusive start (micros).
        from: i64,
        /// Exclusive end (micros).
        to: i64,
    },
    /// A database statement failed.
    #[error("database error while {action}")]
    Database {
        /// What we were doing.
        action: &'static str,
        /// Driver error.
        #[source]
        source: sqlx::Error,
    },
    /// A stored row could not be read back as its catalogue type.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The output file could not be written.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The CSV writer failed.
    #[error("cannot write csv to {path}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: csv::Error,
    },
    /// The Parquet writer failed.
    #[error("cannot write parquet to {path}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The store's schema could not be applied.
    #[error("store error")]
    Store(#[from] ledgerflow_store::StoreError),
}

impl WarehouseError {
    /// Adapter for `map_err`.
    pub(crate) fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { action, source }
    }
}
