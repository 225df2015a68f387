//! ERP receivables wiring: the outbox dispatcher beside the consumer, and `ledgerflow reconcile`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ledgerflow_erp_receivables::{
    CONSUMER_NAME, DispatcherConfig, Manifest, ReconcileOptions, ReconcileSource,
    reconcile as run_reconcile, run_dispatcher,
};
use ledgerflow_store::Store;
use tokio::sync::watch;

use crate::consumers::Companion;
use crate::output::Format;
use crate::run::Pipeline;
use crate::settings::DatabaseArgs;

/// Starts the ERP outbox dispatcher when the consumer is erp-receivables. It runs until `stop`
/// flips; `ledgerflow run` flips it after the consumers have stopped and the outbox is drained.
pub(crate) fn spawn_dispatcher(
    name: &str,
    pipeline: &Pipeline,
    mut stop: watch::Receiver<bool>,
) -> Option<Companion> {
    if name != CONSUMER_NAME {
        return None;
    }
    let pool = pipeline.store.pool().clone();
    let backend = pipeline.store.backend();
    let cfg = dispatcher_config();
    let handle = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|v| *v).await;
        };
        if let Err(e) = run_dispatcher(pool, backend, cfg, shutdown).await {
            tracing::error!(error = %ledgerflow_codec::error_chain(&e), "erp dispatcher stopped");
        }
    });
    Some(Companion::new("erp-dispatcher", handle))
}

fn dispatcher_config() -> DispatcherConfig {
    let mut cfg = DispatcherConfig::default();
    // Operators tune retry pacing with these; tests shorten them.
    if let Some(ms) = env_u64("LEDGERFLOW_ERP_BACKOFF_BASE_MS") {
        cfg.backoff_base = Duration::from_millis(ms);
    }
    if let Some(ms) = env_u64("LEDGERFLOW_ERP_POLL_MS") {
        cfg.poll_interval = Duration::from_millis(ms);
    }
    if let Some(n) = env_u64("LEDGERFLOW_ERP_MAX_ATTEMPTS") {
        cfg.max_attempts = u32::try_from(n).unwrap_or(u32::MAX);
    }
    cfg
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Delivers what is due until nothing is pending (bounded by `deadline`); used on the way out
/// of an `--exit-when-idle` run so a batch job leaves no deliverable work behind.
pub(crate) async fn drain_outbox(store: &Store, deadline: Duration) {
    let mut cfg = dispatcher_config();
    cfg.exit_when_idle = true;
    let run = run_dispatcher(
        store.pool().clone(),
        store.backend(),
        cfg,
        std::future::pending(),
    );
    match tokio::time::timeout(deadline, run).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %ledgerflow_codec::error_chain(&e), "draining the erp outbox failed")
        }
        Err(_) => tracing::warn!(
            ?deadline,
            "erp outbox still has pending deliveries; they resume on the next run"
        ),
    }
}

#[derive(Debug, Args)]
pub(crate) struct ReconcileArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    /// Consumer to reconcile (only erp-receivables keeps journals).
    #[arg(long, default_value = CONSUMER_NAME)]
    consumer: String,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Business time from (RFC 3339 or YYYY-MM-DD, inclusive).
    #[arg(long, value_parser = parse_time)]
    from: Option<i64>,
    /// Business time to (RFC 3339 or YYYY-MM-DD, exclusive).
    #[arg(long, value_parser = parse_time)]
    to: Option<i64>,
    /// Expected documents: a produce manifest (JSON). Default: the events the audit log recorded.
    #[arg(long)]
    source: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

fn parse_time(raw: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    let parsed = time::OffsetDateTime::parse(raw, &Rfc3339).or_else(|_| {
        let date = time::Date::parse(
            raw,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .map_err(|e| format!("{raw:?} is neither RFC 3339 nor YYYY-MM-DD: {e}"))?;
        Ok::<_, String>(date.midnight().assume_utc())
    })?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1000).map_err(|e| e.to_string())
}

pub(crate) async fn reconcile(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    if args.consumer != CONSUMER_NAME {
        anyhow::bail!("reconcile supports --consumer {CONSUMER_NAME} only");
    }
    let url = args.db.url()?;
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening {}", ledgerflow_store::redact(&url)))?;
    let ddl = ledgerflow_store::ConsumerLogic::schema(
        &ledgerflow_erp_receivables::ErpReceivables,
        store.backend(),
    );
    store.apply_schema(&ddl).await?;
    let source = match &args.source {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            ReconcileSource::Manifest(Manifest::from_json(json).context("reading the manifest")?)
        }
        None => ReconcileSource::AuditLog,
    };
    let mut opts = ReconcileOptions::new(source);
    opts.tenant = args.tenant.clone();
    opts.from = args.from;
    opts.to = args.to;
    let report = run_reconcile(store.pool(), store.backend(), &opts)
        .await
        .context("reconciling")?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => {
            let value = serde_json::to_value(&report)?;
            println!(
                "reconcile against {}: {}",
                report.source,
                if report.clean { "CLEAN" } else { "DIFFERENCES" }
            );
            if let Some(tenants) = value["tenants"].as_object() {
                for (tenant, detail) in tenants {
                    println!("{tenant}: {}", serde_json::to_string(detail)?);
                }
            }
        }
    }
    Ok(if report.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
