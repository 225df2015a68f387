//! The crate's error type: failures to start, load or persist the simulator. Request-level
//! problems never become a `SimError`; each ERP module answers them in that ERP's own shape.

use std::path::PathBuf;

/// Why the simulator could not start, load its state or persist a change.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Reading or writing a file under the state directory failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the state log or `accounts.json` is not valid JSON of the expected shape.
    #[error("state file {path} line {line}: {source}")]
    Corrupt {
        /// The file that holds the bad line.
        path: PathBuf,
        /// One-based line number.
        line: usize,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// Serialising a state entry failed (should not happen for our own types).
    #[error("encode state entry: {0}")]
    Encode(#[from] serde_json::Error),
    /// Binding the listen address failed.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// An account definition is incomplete or inconsistent for its ERP.
    #[error("account {erp}/{account}: {reason}")]
    InvalidAccount {
        /// The ERP of the account.
        erp: String,
        /// The account name.
        account: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("config: {0}")]
    Config(String),
}
