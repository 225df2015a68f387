//! The consumers this binary ships, by name, and the background tasks each one brings along.

use std::sync::Arc;

use ledgerflow_store::ErasedConsumer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::run::Pipeline;

/// Every consumer `ledgerflow run` can start.
pub(crate) const ALL: &[&str] = &[
    ledgerflow_erp_receivables::CONSUMER_NAME,
    ledgerflow_warehouse_sink::CONSUMER_NAME,
    ledgerflow_notifications::CONSUMER_NAME,
];

pub(crate) fn parse_name(raw: &str) -> Result<String, String> {
    if ALL.contains(&raw) {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "unknown consumer {raw:?}; known: {}",
            ALL.join(", ")
        ))
    }
}

/// The consumer logic for a name.
pub(crate) fn build(name: &str) -> anyhow::Result<Arc<dyn ErasedConsumer>> {
    match name {
        ledgerflow_erp_receivables::CONSUMER_NAME => {
            Ok(Arc::new(ledgerflow_erp_receivables::ErpReceivables))
        }
        ledgerflow_warehouse_sink::CONSUMER_NAME => {
            Ok(Arc::new(ledgerflow_warehouse_sink::Warehouse))
        }
        ledgerflow_notifications::CONSUMER_NAME => {
            Ok(Arc::new(ledgerflow_notifications::Notifications))
        }
        other => anyhow::bail!("unknown consumer {other:?}"),
    }
}

/// A background task that runs beside a consumer (an outbox dispatcher).
#[derive(Debug)]
pub(crate) struct Companion {
    name: &'static str,
    handle: JoinHandle<()>,
}

impl Companion {
    pub(crate) fn new(name: &'static str, handle: JoinHandle<()>) -> Self {
        Self { name, handle }
    }

    /// Waits for the task (it stops on the same shutdown signal as the consumers).
    pub(crate) async fn finish(self) {
        if let Err(e) = self.handle.await {
            tracing::error!(task = self.name, error = %e, "background task panicked");
        }
    }
}

/// Starts the companions of a consumer.
pub(crate) fn spawn_companions(
    name: &str,
    pipeline: &Pipeline,
    stop: watch::Receiver<bool>,
) -> Vec<Companion> {
    crate::erp::spawn_dispatcher(name, pipeline, stop.clone())
        .into_iter()
        .chain(crate::notifications::spawn_dispatcher(name, pipeline, stop))
        .collect()
}
