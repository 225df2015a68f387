//! `ledgerflow`: one binary for the registry, the load producer, the tail tool, the consumers
//! and the operator commands. Each noun lives in its own module, which parses its arguments
//! and renders what `ledgerflow-service` reports; this file sets up logging, builds the
//! explicit environment and maps errors to exit codes.
//!
//! Exit codes: 0 success, 1 the command failed (the message says why), 2 bad usage or a
//! refused operation, 3 `run --exit-when-idle --max-wait` ended before the consumers drained,
//! 130 a second shutdown signal (or a shutdown past its deadline) ended the process at once.

mod args;
mod audit;
mod dlq;
mod kafka;
mod lineage;
mod notifications;
mod offsets;
mod postings;
mod produce;
mod reconcile;
mod registry;
mod replay;
mod retention;
mod run;
mod stats;
mod tail;
mod warehouse;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ledgerflow_service::config::vars;
use ledgerflow_service::{Environment, ServiceError};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bad usage or a refused operation.
pub(crate) const EXIT_USAGE: u8 = 2;
/// `run --exit-when-idle --max-wait`: the consumers did not drain in time.
pub(crate) const EXIT_NOT_DRAINED: u8 = 3;
/// A second shutdown signal, or a shutdown past its deadline.
pub(crate) const EXIT_FORCED: i32 = 130;

/// ledgerflow: effect-once consumers from billing events to finance systems.
#[derive(Debug, Parser)]
#[command(
    name = "ledgerflow",
    version,
    about = "Effect-once consumers from billing events (Kafka, Avro) to ERP journals",
    long_about = None,
    propagate_version = true,
    after_help = "Exit codes: 0 success; 1 the command failed or found a problem (reconcile \
                  differences, incl. failed or stuck ERP postings; a broken audit chain; dead \
                  letters still open after a retry); 2 bad usage, or a refused operation \
                  (offsets reset against live members or past unprocessed records without \
                  --force; a postings requeue or resolve of a posting that is not failed); 3 \
                  `run --max-wait` passed before the consumers drained; 130 a second shutdown \
                  signal ended the process at once.\n\
                  Settings: flags, then LEDGERFLOW_* environment variables, then --config FILE."
)]
struct Cli {
    /// Log line format on stderr [env: LEDGERFLOW_LOG_FORMAT] [default: text].
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `ledgerflow=debug`
    /// [env: LEDGERFLOW_LOG] [default: info].
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Confluent-compatible schema registry.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Produce a deterministic, realistic billing workload to a topic.
    Produce(produce::ProduceArgs),
    /// Decode and print events from a topic without joining a consumer group.
    Tail(tail::TailArgs),
    /// Run the enabled consumers until SIGINT/SIGTERM (or idle, with --exit-when-idle).
    Run(run::RunArgs),
    /// Counts by decision, dead letters by reason, positions and lag.
    Stats(stats::StatsArgs),
    /// Verify the hash-chained audit log or print its chain heads.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Compare the billing source with posted journals, and journals with ERP acknowledgements.
    Reconcile(reconcile::ReconcileArgs),
    /// Verify Standard Webhooks signatures (as a receiver would).
    #[command(subcommand)]
    Webhooks(notifications::WebhooksCommand),
    /// List notification deliveries or re-queue failed ones.
    #[command(subcommand)]
    Notifications(notifications::NotificationsCommand),
    /// Export warehouse tables (facts and dimensions) for analysts.
    #[command(subcommand)]
    Warehouse(warehouse::WarehouseCommand),
    /// Re-read a range outside the live group: plan what it would do, or push it through the
    /// pipeline again (dedup: nothing is posted twice).
    #[command(subcommand)]
    Replay(replay::ReplayCommand),
    /// Show or move a consumer's positions (database and Kafka group together).
    #[command(subcommand)]
    Offsets(offsets::OffsetsCommand),
    /// List, show, retry or discard dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// ERP postings: list, show, requeue failed ones (optionally re-rendered with the current
    /// tenants file), or resolve one fixed by hand in the ERP.
    #[command(subcommand)]
    Postings(postings::PostingsCommand),
    /// Prune inbox (dedup) rows and delivery logs older than the replay horizon (a dry run
    /// unless --execute; audited); replay then refuses below the horizon.
    Retention(retention::RetentionArgs),
    /// Everything the ledger knows of one event (or of an invoice and the events that refer to
    /// it), per consumer: audit entries, inbox, dead letters, journals, AR documents, ERP
    /// postings, warehouse rows and webhooks, with the correlation and trace ids.
    Lineage(lineage::LineageArgs),
}

/// Logs to stderr, plus OTLP trace export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the
/// returned guard flushes the spans when dropped at exit).
fn init_logging(format: LogFormat, filter: &str) -> Option<ledgerflow_telemetry::otlp::OtlpGuard> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = matches!(format, LogFormat::Json);
    let text_layer = (!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json_layer = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    let otlp = ledgerflow_telemetry::otlp::OtlpGuard::from_env().unwrap_or_else(|e| {
        eprintln!("warning: OpenTelemetry export is off: {e}");
        None
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text_layer)
        .with(json_layer)
        .with(otlp.as_ref().map(|guard| guard.layer()))
        .init();
    otlp
}

/// The process environment, as the explicit map the service reads settings from. Variables
/// that are not valid Unicode are left out (none of ledgerflow's is).
fn environment() -> Environment {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

async fn dispatch(command: Command, env: &Environment) -> anyhow::Result<ExitCode> {
    match command {
        Command::Registry(cmd) => registry::run(cmd, env).await,
        Command::Produce(args) => produce::run(args, env).await,
        Command::Tail(args) => tail::run(args, env).await,
        Command::Run(args) => run::run(args, env).await,
        Command::Stats(args) => stats::run(args, env).await,
        Command::Audit(cmd) => audit::run(cmd, env).await,
        Command::Reconcile(args) => reconcile::run(args, env).await,
        Command::Webhooks(cmd) => notifications::webhooks(cmd),
        Command::Notifications(cmd) => notifications::run(cmd, env).await,
        Command::Warehouse(cmd) => warehouse::run(cmd, env).await,
        Command::Replay(cmd) => replay::run(cmd, env).await,
        Command::Offsets(cmd) => offsets::run(cmd, env).await,
        Command::Dlq(cmd) => dlq::run(cmd, env).await,
        Command::Postings(cmd) => postings::run(cmd, env).await,
        Command::Retention(args) => retention::run(args, env).await,
        Command::Lineage(args) => lineage::run(args, env).await,
    }
}

fn main() -> ExitCode {
    // `ledgerflow ... | head` must end quietly like any Unix tool, not panic on EPIPE.
    sigpipe::reset();
    let cli = Cli::parse();
    let env = environment();
    let log_format = match cli.log_format {
        Some(f) => f,
        None => match env.get(vars::LOG_FORMAT) {
            None => LogFormat::Text,
            Some(raw) => match LogFormat::from_str(raw, false) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("error: {}={raw:?}: {e}", vars::LOG_FORMAT);
                    return ExitCode::from(EXIT_USAGE);
                }
            },
        },
    };
    let log = cli
        .log
        .clone()
        .or_else(|| env.get(vars::LOG).map(str::to_owned))
        .unwrap_or_else(|| "info".to_owned());
    let _otlp = init_logging(log_format, &log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, &env)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A bad environment value is bad usage, like a bad flag value.
            if e.downcast_ref::<ServiceError>()
                .is_some_and(ServiceError::is_usage)
            {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every variable that stands for a flag is named in some `--help`.
    #[test]
    fn every_settings_variable_is_in_the_help() {
        fn helps(cmd: &mut clap::Command, out: &mut String) {
            out.push_str(&cmd.render_long_help().to_string());
            for sub in cmd.get_subcommands_mut() {
                helps(sub, out);
            }
        }
        let mut all = String::new();
        helps(&mut Cli::command(), &mut all);
        for name in vars::WITH_FLAGS {
            assert!(all.contains(name), "{name} is in no --help");
        }
    }
}
