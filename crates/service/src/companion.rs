//! Companions: the background tasks that run beside a consumer and stop after it (the outbox
//! dispatchers), so nothing a consumer wrote in its last batch waits for the next run without
//! need. Each dispatcher also knows its drain-on-exit step and its outbox table for the
//! sampler.

use std::time::Duration;

use ledgerflow_core::error_chain;
use ledgerflow_store::{Store, TenantStatusCount};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ServiceError;
use crate::config::{Environment, vars};

/// How long an `--exit-when-idle` run keeps delivering after its consumers stopped.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

/// What the companions are told, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompanionStop {
    /// Keep going.
    Running,
    /// Stop (a signal, or a run that did not drain).
    Now,
    /// Deliver what is due first, up to [`DRAIN_DEADLINE`] (a drained `--exit-when-idle`
    /// run), so a batch job leaves no deliverable work behind.
    AfterDrain,
}

/// An outbox dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dispatcher {
    /// ERP postings (`erp_outbox`).
    Erp,
    /// Webhook deliveries (`notification_outbox`).
    Webhooks,
}

impl Dispatcher {
    /// The task's name in logs.
    pub fn task_name(self) -> &'static str {
        match self {
            Self::Erp => "erp-dispatcher",
            Self::Webhooks => "webhook-dispatcher",
        }
    }

    /// The gauge of its outbox rows by (bounded) tenant and status.
    pub fn by_tenant_gauge(self) -> &'static str {
        match self {
            Self::Erp => ledgerflow_telemetry::ERP_POSTINGS,
            Self::Webhooks => ledgerflow_telemetry::WEBHOOK_DELIVERIES,
        }
    }

    /// Whether an outbox row in `status` still needs delivery or an operator: an ERP posting
    /// until it is confirmed or resolved, a webhook until it is delivered.
    pub fn unfinished(self, status: &str) -> bool {
        match self {
            Self::Erp => !matches!(status, "confirmed" | "resolved"),
            Self::Webhooks => status != "delivered",
        }
    }

    /// The consumer whose outbox it is.
    pub fn consumer(self) -> &'static str {
        match self {
            Self::Erp => ledgerflow_erp_receivables::CONSUMER_NAME,
            Self::Webhooks => ledgerflow_notifications::CONSUMER_NAME,
        }
    }

    /// Its outbox rows by tenant and status; `None` before the table exists.
    pub async fn outbox(
        self,
        store: &Store,
    ) -> Result<Option<Vec<TenantStatusCount>>, ServiceError> {
        let rows = match self {
            Self::Erp => {
                ledgerflow_erp_receivables::gauges::outbox_by_tenant_and_status(store).await
            }
            Self::Webhooks => ledgerflow_notifications::outbox_by_tenant_and_status(store).await,
        };
        rows.map_err(ServiceError::store("counting outbox rows"))
    }

    /// Starts the dispatcher; it runs until `stop` leaves [`CompanionStop::Running`].
    pub fn spawn(
        self,
        store: Store,
        env: &Environment,
        stop: watch::Receiver<CompanionStop>,
    ) -> Companion {
        let env = env.clone();
        let handle = match self {
            Self::Erp => tokio::spawn(run_erp(store, env, stop)),
            Self::Webhooks => tokio::spawn(run_webhooks(store, env, stop)),
        };
        Companion {
            name: self.task_name(),
            handle,
        }
    }
}

/// A running companion.
#[derive(Debug)]
pub struct Companion {
    name: &'static str,
    handle: JoinHandle<()>,
}

impl Companion {
    /// Waits for the task (it stops on [`CompanionStop`]).
    pub async fn finish(self) {
        if let Err(e) = self.handle.await {
            tracing::error!(task = self.name, error = %e, "background task panicked");
        }
    }
}

/// Resolves once the companions are told to stop; says whether to drain first.
async fn stopped(mut stop: watch::Receiver<CompanionStop>) -> bool {
    match stop.wait_for(|s| *s != CompanionStop::Running).await {
        Ok(s) => *s == CompanionStop::AfterDrain,
        // The sender is gone: the run ended without a word, so no drain.
        Err(_) => false,
    }
}

/// ERP dispatcher settings: production defaults, paced by the `LEDGERFLOW_ERP_*` variables
/// (operators tune retry pacing with these; tests shorten them).
fn erp_config(env: &Environment) -> ledgerflow_erp_receivables::DispatcherConfig {
    let mut cfg = ledgerflow_erp_receivables::DispatcherConfig::default();
    if let Some(ms) = env.number(vars::ERP_BACKOFF_BASE_MS) {
        cfg.backoff_base = Duration::from_millis(ms);
    }
    if let Some(ms) = env.number(vars::ERP_POLL_MS) {
        cfg.poll_interval = Duration::from_millis(ms);
    }
    if let Some(n) = env.number(vars::ERP_MAX_ATTEMPTS) {
        cfg.max_attempts = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(ms) = env.number(vars::ERP_REQUEST_TIMEOUT_MS) {
        cfg.request_timeout = Duration::from_millis(ms);
    }
    // A row claimed by a process that was killed waits out its lease before another claims
    // it; crash tests shorten it (with the request timeout, which it must exceed).
    if let Some(ms) = env.number(vars::ERP_LEASE_MS) {
        cfg.lease = Duration::from_millis(ms);
    }
    cfg
}

async fn run_erp(store: Store, env: Environment, stop: watch::Receiver<CompanionStop>) {
    let (pool, backend) = (store.pool().clone(), store.backend());
    let drain = std::sync::OnceLock::new();
    let shutdown = async {
        let after_drain = stopped(stop).await;
        drain.set(after_drain).ok();
    };
    let run = ledgerflow_erp_receivables::run_dispatcher(pool, backend, erp_config(&env), shutdown);
    if let Err(e) = run.await {
        tracing::error!(error = %error_chain(&e), "erp dispatcher stopped");
    }
    if drain.get() != Some(&true) {
        return;
    }
    let mut cfg = erp_config(&env);
    cfg.exit_when_idle = true;
    let run = ledgerflow_erp_receivables::run_dispatcher(
        store.pool().clone(),
        store.backend(),
        cfg,
        std::future::pending(),
    );
    match tokio::time::timeout(DRAIN_DEADLINE, run).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %error_chain(&e), "draining the erp outbox failed");
        }
        Err(_) => tracing::warn!(
            deadline = ?DRAIN_DEADLINE,
            "erp outbox still has pending deliveries; they resume on the next run"
        ),
    }
}

async fn run_webhooks(store: Store, env: Environment, stop: watch::Receiver<CompanionStop>) {
    // Production defaults, tuned by the `LEDGERFLOW_WEBHOOK_*` variables.
    let cfg = ledgerflow_notifications::DispatcherConfig::default()
        .with_env_overrides(|name| env.get(name).map(str::to_owned));
    let dispatcher =
        match ledgerflow_notifications::Dispatcher::new(store.pool().clone(), store.backend(), cfg)
        {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "webhook dispatcher not started");
                return;
            }
        };
    let drain = std::sync::OnceLock::new();
    let shutdown = async {
        let after_drain = stopped(stop).await;
        drain.set(after_drain).ok();
    };
    if let Err(e) = dispatcher.run(shutdown).await {
        tracing::error!(error = %error_chain(&e), "webhook dispatcher stopped");
    }
    if drain.get() == Some(&true) && !dispatcher.drain(DRAIN_DEADLINE).await {
        tracing::warn!(
            deadline = ?DRAIN_DEADLINE,
            "notification outbox still has pending deliveries; they resume on the next run"
        );
    }
}
