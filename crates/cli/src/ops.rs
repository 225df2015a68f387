//! What every operator command shares: who is acting, the operation id, and the entry each
//! operation leaves in the consumer's operations chain of the audit log.

use anyhow::Context;
use clap::Args;
use ledgerflow_store::{OperationInput, Store};

/// `--operator` (default: `$USER`).
#[derive(Debug, Clone, Args)]
pub(crate) struct OperatorArgs {
    /// Who is acting, for the audit log (default: $USER).
    #[arg(long, env = "LEDGERFLOW_OPERATOR")]
    pub(crate) operator: Option<String>,
}

impl OperatorArgs {
    pub(crate) fn name(&self) -> String {
        self.operator
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

/// A fresh operation id (`op_<uuid>`), shared by the operation's audit entry and the audit rows
/// of the records it redrives.
pub(crate) fn new_operation_id() -> String {
    format!("op_{}", uuid::Uuid::new_v4().simple())
}

/// Appends the operation to the consumer's operations chain.
pub(crate) async fn record(
    store: &Store,
    id: &str,
    consumer: &str,
    kind: &str,
    operator: &OperatorArgs,
    reason: &str,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    store
        .record_operation(&OperationInput {
            id: id.to_owned(),
            consumer: consumer.to_owned(),
            kind: kind.to_owned(),
            operator: operator.name(),
            reason: reason.to_owned(),
            details,
        })
        .await
        .with_context(|| format!("recording the {kind} operation in the audit log"))?;
    Ok(())
}
