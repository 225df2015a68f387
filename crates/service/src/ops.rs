//! Operator operations. Each returns a report struct; rendering (text, JSON) and exit codes
//! are the binary's. What every operation shares: who is acting, the operation id, and the
//! entry each one leaves in the consumer's operations chain of the audit log.

pub mod dlq;
pub mod exports;
pub mod lineage;
pub mod offsets;
pub mod postings;
mod range;
pub mod reconcile;
pub mod replay;
pub mod retention;
pub mod stats;
pub mod tail;

use ledgerflow_store::{OperationInput, Store};

pub use range::{CHUNK, Span};

use crate::ServiceError;

/// Progress of a long operation, for a progress bar.
pub trait Progress: Sync {
    /// The work is `total` units.
    fn start(&self, _total: u64) {}
    /// `n` more units done.
    fn advance(&self, _n: u64) {}
    /// `done` units done in all.
    fn at(&self, _done: u64) {}
}

/// No progress reporting.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Progress for Quiet {}

/// A fresh operation id (`op_<uuid>`), shared by the operation's audit entry and the audit
/// rows of the records it redrives.
pub fn new_operation_id() -> String {
    format!("op_{}", uuid::Uuid::new_v4().simple())
}

/// Who acts and why, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Who (see [`crate::config::operator_name`]).
    pub operator: String,
    /// Why.
    pub reason: String,
}

/// Appends an operation to the consumer's operations chain.
pub(crate) async fn record(
    store: &Store,
    id: &str,
    consumer: &str,
    kind: &str,
    actor: &Actor,
    details: serde_json::Value,
) -> Result<(), ServiceError> {
    store
        .record_operation(&OperationInput {
            id: id.to_owned(),
            consumer: consumer.to_owned(),
            kind: kind.to_owned(),
            operator: actor.operator.clone(),
            reason: actor.reason.clone(),
            details,
        })
        .await
        .map_err(ServiceError::store(format!(
            "recording the {kind} operation in the audit log"
        )))?;
    Ok(())
}
