//! `ledgerflow-erp-sim`: runs the ERP simulators (NetSuite, Dynamics 365 F&O, SAP S/4HANA,
//! Oracle Fusion) on one local HTTP port. See crates/erp-sim/PROTOCOLS.md for the contract.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use ledgerflow_erp_sim::{FaultConfig, FaultKind, LimitConfig, SimConfig};

/// Local simulators of NetSuite, Dynamics 365 F&O, SAP S/4HANA and Oracle Fusion.
///
/// Serves /netsuite, /d365, /s4hana and /fusion, each with its own authentication, limits, keys
/// and error shapes, plus the admin API under /_sim/ (accounts, documents, jobs, faults, down,
/// limits, report). The first line on stdout is `listening on http://HOST:PORT`.
/// Accounts come from DIR/accounts.json (a JSON array) and/or POST /_sim/accounts.
#[derive(Debug, Parser)]
#[command(name = "ledgerflow-erp-sim", version, about, long_about)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// State directory: documents, jobs and accounts persist here (DIR/state.jsonl) and
    /// DIR/accounts.json is read at start.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// Probability in [0, 1] that an ERP request gets an injected fault.
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    faults: f64,
    /// Fault kinds to draw from: 5xx, 429, slow, drop (commit then drop the connection).
    #[arg(long, value_delimiter = ',', default_value = "5xx,429,slow,drop")]
    fault_kinds: Vec<String>,
    /// Delay of a `slow` fault, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    slow_ms: u64,
    /// Seed of the fault generator (same seed + same request order = same faults).
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// NetSuite account-wide concurrency limit (shared by every credential of the account).
    #[arg(long, value_name = "N", default_value_t = 5)]
    netsuite_concurrency: u32,
    /// D365 concurrent requests per environment before 429 + Retry-After.
    #[arg(long, value_name = "N", default_value_t = 52)]
    d365_concurrency: u32,
    /// D365 requests per environment per 300 s window before 429 (0 = unlimited).
    #[arg(long, value_name = "N", default_value_t = 0)]
    d365_requests_per_window: u32,
    /// Delay before an S/4HANA bulk message or a Fusion import job is processed, in ms.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    job_delay_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut kinds = Vec::new();
    for name in &args.fault_kinds {
        kinds.push(FaultKind::parse(name).with_context(|| format!("unknown fault kind {name}"))?);
    }
    let config = SimConfig {
        listen: args.listen,
        state_dir: args.state,
        faults: FaultConfig {
            rate: args.faults,
            kinds,
            slow_ms: args.slow_ms,
            ..FaultConfig::default()
        },
        seed: args.seed,
        limits: LimitConfig {
            netsuite_concurrency: args.netsuite_concurrency,
            d365_concurrency: args.d365_concurrency,
            d365_requests_per_window: args.d365_requests_per_window,
            ..LimitConfig::default()
        },
        job_delay_ms: args.job_delay_ms,
    };
    let running = ledgerflow_erp_sim::start(config)
        .await
        .context("starting the simulator")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", running.url()).context("writing to stdout")?;
        out.flush().context("flushing stdout")?;
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                // Without SIGTERM, Ctrl-C alone; an error listening for it ends the wait too.
                ctrl_c.await.ok();
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
