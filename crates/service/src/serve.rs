//! `serve`: every configured consumer in one process, each with its own group, positions and
//! loop (so a slow consumer never holds back another), their companions, the tenants watcher,
//! and with a metrics address the metrics server, the sampler and `/readyz`.
//!
//! Shutdown: the first stop request stops the consumer loops (they commit what they buffered,
//! within the shutdown budget); the companions stop after them, having drained their outboxes
//! when a drained `--exit-when-idle` run ended without a request; the second request, or the
//! budget plus 5 s, returns at once with [`ServeReport::forced`] set, for the binary to exit
//! without waiting (nothing is lost: the uncommitted batches are re-read on the next start).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerflow_core::error_chain;
use ledgerflow_runtime::{ConsumerSummary, MemberStatus, RunExit, run_consumer};
use ledgerflow_telemetry::Readiness;
use tokio::sync::{oneshot, watch};

use crate::companion::CompanionStop;
use crate::config::Environment;
use crate::signal::StopRequests;
use crate::{ConsumerKind, Pipeline, ServiceError, sampler};

/// How a run ended before its consumers did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForcedExit {
    /// A second stop request.
    SecondSignal,
    /// The shutdown took longer than its budget (plus 5 s).
    Deadline(Duration),
}

impl fmt::Display for ForcedExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SecondSignal => f.write_str(
                "second signal: exiting at once (uncommitted batches are re-read on the next start)",
            ),
            Self::Deadline(budget) => write!(
                f,
                "shutdown took longer than {budget:?}: exiting (uncommitted batches are re-read on the next start)"
            ),
        }
    }
}

/// A consumer that ended with an error instead of a summary.
#[derive(Debug, Clone)]
pub struct ConsumerFailure {
    /// The consumer.
    pub consumer: ConsumerKind,
    /// Its error chain, or the panic.
    pub error: String,
    /// Whether its task panicked.
    pub panicked: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct ServeReport {
    /// Per consumer that ended normally: counts and how it ended.
    pub summaries: Vec<ConsumerSummary>,
    /// Consumers that failed.
    pub failures: Vec<ConsumerFailure>,
    /// Set when the run was cut short; the summaries are then empty.
    pub forced: Option<ForcedExit>,
}

impl ServeReport {
    /// The consumers that did not drain within `--max-wait`.
    pub fn not_drained(&self) -> impl Iterator<Item = &ConsumerSummary> {
        self.summaries
            .iter()
            .filter(|s| s.exit == RunExit::NotDrained)
    }
}

/// Runs the configured consumers until a stop request or, with `exit_when_idle`, until they
/// have drained. `env` tunes the dispatchers and the sampler.
pub async fn serve(
    pipeline: Pipeline,
    env: &Environment,
    mut stops: StopRequests,
) -> Result<ServeReport, ServiceError> {
    let settings = &pipeline.settings;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (forced_tx, forced_rx) = oneshot::channel();
    let budget = settings.shutdown_timeout;
    tokio::spawn(async move {
        stops.next().await;
        tracing::info!(
            ?budget,
            "shutdown requested: committing buffered batches (a second signal exits at once)"
        );
        // The receivers live until the consumers have stopped; a failed send means they have.
        stop_tx.send(true).ok();
        let forced = tokio::select! {
            () = stops.next() => ForcedExit::SecondSignal,
            () = tokio::time::sleep(budget + Duration::from_secs(5)) => ForcedExit::Deadline(budget),
        };
        // Nobody waits any more when the run ended in time.
        forced_tx.send(forced).ok();
    });
    let mut watcher_stop = stop_rx.clone();
    let watcher = pipeline
        .tenants
        .spawn_watcher(Duration::from_secs(2), async move {
            // An error means the sender is gone: the run is over either way.
            watcher_stop.wait_for(|v| *v).await.map(drop).unwrap_or(());
        });

    let (companion_tx, companion_rx) = watch::channel(CompanionStop::Running);
    let (metrics_tx, metrics_rx) = watch::channel(CompanionStop::Running);
    let ready = Arc::new(Readiness::default());
    let status = Arc::new(MemberStatus::default());
    let consumers = settings.consumers.clone();
    if let Some(addr) = &settings.metrics_listen {
        let handle = ledgerflow_telemetry::install()
            .map_err(ServiceError::component("installing the metrics recorder"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServiceError::Io {
                context: format!("binding the metrics address {addr}"),
                source,
            })?;
        tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
        sampler::start(
            &ready,
            settings,
            &pipeline.store,
            &consumers,
            env,
            metrics_rx.clone(),
        )?;
        let (status, grace) = (Arc::clone(&status), settings.not_ready_after);
        ready.add_check("membership", move || {
            let verdict = status.check(grace, Instant::now());
            Box::pin(async move { verdict })
        });
        let mut metrics_stop = metrics_rx;
        let ready = Arc::clone(&ready);
        tokio::spawn(async move {
            let stop = async move {
                let stopped = metrics_stop
                    .wait_for(|s| *s != CompanionStop::Running)
                    .await;
                stopped.map(drop).unwrap_or(());
            };
            if let Err(e) = ledgerflow_telemetry::serve(listener, handle, ready, stop).await {
                tracing::error!(error = %error_chain(&e), "metrics server stopped");
            }
        });
    }
    let mut config = settings.runtime_config();
    config.status = Some(Arc::clone(&status));
    let mut tasks = Vec::new();
    let mut companions = Vec::new();
    for kind in &consumers {
        let consumer = pipeline.consumer(*kind).await?;
        for dispatcher in kind.spec().companions {
            companions.push(dispatcher.spawn(pipeline.store.clone(), env, companion_rx.clone()));
        }
        let task = tokio::spawn(run_consumer(
            consumer,
            pipeline.store.clone(),
            Arc::clone(&pipeline.decoder),
            pipeline.tenants.clone(),
            config.clone(),
            stop_rx.clone(),
        ));
        tasks.push((*kind, task));
    }
    ready.set(true);

    let run = async {
        let mut report = ServeReport::default();
        for (consumer, task) in tasks {
            match task.await {
                Ok(Ok(summary)) => report.summaries.push(summary),
                Ok(Err(e)) => report.failures.push(ConsumerFailure {
                    consumer,
                    error: error_chain(&e),
                    panicked: false,
                }),
                Err(e) => report.failures.push(ConsumerFailure {
                    consumer,
                    error: e.to_string(),
                    panicked: true,
                }),
            }
        }
        // A drained batch run leaves no deliverable work behind; a stop request or a run that
        // did not drain means "stop now".
        let drain = !*stop_rx.borrow()
            && report.not_drained().next().is_none()
            && settings.exit_when_idle.is_some();
        // Every receiver may already be gone (no companions); nothing to tell then.
        companion_tx
            .send(if drain {
                CompanionStop::AfterDrain
            } else {
                CompanionStop::Now
            })
            .ok();
        for companion in companions {
            companion.finish().await;
        }
        metrics_tx.send(CompanionStop::Now).ok();
        watcher.abort();
        report
    };
    tokio::select! {
        report = run => Ok(report),
        Ok(forced) = forced_rx => Ok(ServeReport {
            forced: Some(forced),
            ..ServeReport::default()
        }),
    }
}
