//! ERP simulators for ledgerflow's adapter tests: one local HTTP server that behaves like
//! NetSuite (SuiteTalk REST), Dynamics 365 Finance & Operations (OData v4 + Entra ID), SAP
//! S/4HANA (SOAP journal entry services + OData read-back) and Oracle Fusion (erpintegrations,
//! FBDI, ESS jobs), each under its own prefix and with its own authentication, limits, keys and
//! error shapes, as the vendors document them. `PROTOCOLS.md` beside this crate is the contract.
//!
//! The simulators never deduplicate where the real ERP would not; they count what got stored
//! twice (`GET /_sim/report`), which is how tests prove effect-once delivery on the ERP side.
//!
//! Use [`start`] to run one in-process (tests), or the `ledgerflow-erp-sim` binary.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod conn;
pub mod d365;
pub mod error;
pub mod faults;
pub mod fusion;
pub mod limits;
pub mod netsuite;
pub mod report;
pub mod s4hana;
pub mod store;
mod text;
mod xml;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::any;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use crate::conn::ConnHandle;
pub use crate::error::SimError;
pub use crate::faults::{FaultConfig, FaultKind};
pub use crate::limits::LimitConfig;
pub use crate::store::{Account, Credentials, Document, Erp, Job};

use crate::auth::{NonceBook, TokenBook};
use crate::faults::Faults;
use crate::limits::{InFlight, Limits};
use crate::report::Report;
use crate::store::Store;

/// How to run a simulator.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// State directory (documents, jobs and accounts persist here).
    pub state_dir: PathBuf,
    /// Initial fault configuration (`--faults RATE`).
    pub faults: FaultConfig,
    /// Seed of the fault generator.
    pub seed: u64,
    /// Limits (`--netsuite-concurrency N` and friends).
    pub limits: LimitConfig,
    /// Delay before an asynchronous job (S/4 bulk message, Fusion import) is processed.
    pub job_delay_ms: u64,
}

impl SimConfig {
    /// A configuration with defaults: no faults, NetSuite concurrency 5, job delay 1 s.
    pub fn new(listen: SocketAddr, state_dir: PathBuf) -> SimConfig {
        SimConfig {
            listen,
            state_dir,
            faults: FaultConfig::default(),
            seed: 0,
            limits: LimitConfig::default(),
            job_delay_ms: 1000,
        }
    }
}

/// The shared state of a running simulator.
#[derive(Debug)]
pub struct Sim {
    pub(crate) store: Store,
    pub(crate) limits: Limits,
    pub(crate) faults: Faults,
    pub(crate) report: Report,
    pub(crate) tokens: TokenBook,
    pub(crate) nonces: NonceBook,
    pub(crate) job_delay_ms: AtomicU64,
    /// Serialises check-then-insert sequences (unique external ids, flexfields, batch numbers)
    /// so two concurrent requests cannot both pass a uniqueness check. Never held across await.
    pub(crate) writes: std::sync::Mutex<()>,
    /// Serialises job processing: the background ticker and a client's poll may both find the
    /// same due job, and processing it twice would post its documents twice.
    jobs: std::sync::Mutex<()>,
}

/// What admission decided for one ERP request that passed authentication.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Process it; drop the connection afterwards when `drop_after`.
    Go(Admitted),
    /// Answer 429 (limit or injected fault); `retry_after` where the ERP sends one.
    Throttled { retry_after: Option<u64> },
    /// Answer the ERP's 5xx (injected fault).
    ServerError,
}

/// An admitted request; holds its concurrency slot until dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    drop_after: bool,
    _slot: InFlight,
}

impl Admitted {
    /// Applies a "commit then drop" fault after the work is committed.
    pub(crate) fn finish(&self, conn: &ConnHandle) {
        if self.drop_after {
            conn.drop_connection();
        }
    }
}

/// Retry-After sent with an injected 429 by the ERPs that send one.
const FAULT_RETRY_AFTER_SECS: u64 = 2;

impl Sim {
    /// Opens the state directory and builds the simulator state.
    pub fn open(config: &SimConfig) -> Result<Sim, SimError> {
        if !(0.0..=1.0).contains(&config.faults.rate) {
            return Err(SimError::Config(format!(
                "fault rate {} is not within [0, 1]",
                config.faults.rate
            )));
        }
        Ok(Sim {
            store: Store::open(&config.state_dir)?,
            limits: Limits::new(config.limits.clone()),
            faults: Faults::new(config.faults.clone(), config.seed),
            report: Report::default(),
            tokens: TokenBook::default(),
            nonces: NonceBook::default(),
            job_delay_ms: AtomicU64::new(config.job_delay_ms),
            writes: std::sync::Mutex::new(()),
            jobs: std::sync::Mutex::new(()),
        })
    }

    /// The store (read access for tests in other crates).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The report document, as `GET /_sim/report` serves it.
    pub fn report(&self) -> serde_json::Value {
        self.report.render(&self.store, &self.limits)
    }

    pub(crate) fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn job_delay_ms(&self) -> u64 {
        self.job_delay_ms.load(Ordering::Relaxed)
    }

    /// Concurrency limit, then fault draw, for an authenticated ERP request.
    pub(crate) async fn admit(&self, erp: Erp, account: &str) -> Admission {
        let slot = match self.limits.enter(erp, account) {
            Ok(slot) => slot,
            Err(refused) => {
                self.report.throttled(erp, account);
                return Admission::Throttled {
                    retry_after: refused.retry_after,
                };
            }
        };
        let Some(kind) = self.faults.draw(erp, account) else {
            return Admission::Go(Admitted {
                drop_after: false,
                _slot: slot,
            });
        };
        self.report.fault(erp, account, kind);
        match kind {
            FaultKind::ServerError => Admission::ServerError,
            FaultKind::Throttle => {
                self.report.throttled(erp, account);
                let retry_after = (erp != Erp::NetSuite).then_some(FAULT_RETRY_AFTER_SECS);
                Admission::Throttled { retry_after }
            }
            FaultKind::Slow => {
                tokio::time::sleep(Duration::from_millis(self.faults.slow_ms())).await;
                Admission::Go(Admitted {
                    drop_after: false,
                    _slot: slot,
                })
            }
            FaultKind::Drop => Admission::Go(Admitted {
                drop_after: true,
                _slot: slot,
            }),
        }
    }

    /// Processes every asynchronous job whose time has come.
    pub(crate) fn process_due_jobs(&self) {
        let _serial = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let now = store::now_ms();
        for job in self.store.find_jobs(|j| !j.done && j.ready_ms <= now) {
            let outcome = match job.erp {
                Erp::S4Hana => s4hana::process_job(self, job),
                Erp::Fusion => fusion::process_job(self, job),
                Erp::NetSuite | Erp::D365 => Ok(()),
            };
            if let Err(error) = outcome {
                tracing::error!(%error, "processing an asynchronous job failed");
            }
        }
    }
}

/// The scheme and authority the client used, for Location headers and signature base strings.
pub(crate) fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{}", host.to_ascii_lowercase())
}

/// The router serving all four ERPs and the admin API.
pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/netsuite/{*rest}", any(netsuite::handle))
        .route("/d365/{*rest}", any(d365::handle))
        .route("/s4hana/{*rest}", any(s4hana::handle))
        .route("/fusion/{*rest}", any(fusion::handle))
        .merge(admin::routes())
        // FBDI zips arrive base64-encoded inside JSON; allow realistic sizes.
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(sim)
}

/// A simulator running in this process.
#[derive(Debug)]
pub struct RunningSim {
    addr: SocketAddr,
    sim: Arc<Sim>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    ticker: JoinHandle<()>,
}

impl RunningSim {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The simulator state.
    pub fn sim(&self) -> &Arc<Sim> {
        &self.sim
    }

    /// Stops serving and waits (up to five seconds) for open connections to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            // The server may have stopped already; then there is nobody to tell.
            tx.send(()).ok();
        }
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.ticker.abort();
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.ticker.abort();
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// Binds, starts serving and returns at once.
pub async fn start(config: SimConfig) -> Result<RunningSim, SimError> {
    let sim = Arc::new(Sim::open(&config)?);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: config.listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: config.listen.to_string(),
        source,
    })?;
    let (tx, rx) = oneshot::channel::<()>();
    let app = router(Arc::clone(&sim)).into_make_service_with_connect_info::<ConnHandle>();
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            // Sent or dropped: either means stop.
            rx.await.ok();
        });
        if let Err(error) = serve.await {
            tracing::error!(%error, "simulator server stopped");
        }
    });
    let ticking = Arc::clone(&sim);
    // Jobs are processed in the background so their documents appear even if nobody polls.
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            ticking.process_due_jobs();
        }
    });
    Ok(RunningSim {
        addr,
        sim,
        shutdown: Some(tx),
        server: Some(server),
        ticker,
    })
}
