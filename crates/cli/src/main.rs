//! `ledgerflow`: one binary for the registry, the load producer, the tail tool and (as they
//! land) the consumers and operator commands. Each noun lives in its own module; this file only
//! parses arguments, sets up logging and maps errors to exit codes.
//!
//! Exit codes: 0 success, 1 the command failed (the message says why), 2 bad usage or a
//! refused operation, 3 `run --exit-when-idle --max-wait` ended before the consumers drained,
//! 130 a second shutdown signal (or a shutdown past its deadline) ended the process at once.

mod audit;
mod consumers;
mod dlq;
mod erp;
mod kafka;
mod lag;
mod notifications;
mod offsets;
mod ops;
mod output;
mod produce;
mod range;
mod registry;
mod replay;
mod run;
mod settings;
mod shutdown;
mod stats;
mod tail;
mod tenants_file;
mod warehouse;

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand, ValueEnum};

/// `run --exit-when-idle --max-wait`: the consumers did not drain in time.
pub(crate) const EXIT_NOT_DRAINED: u8 = 3;

/// ledgerflow: effect-once consumers from billing events to finance systems.
#[derive(Debug, Parser)]
#[command(
    name = "ledgerflow",
    version,
    about = "Effect-once consumers from billing events (Kafka, Avro) to ERP journals",
    long_about = None,
    propagate_version = true,
    after_help = "Exit codes: 0 success; 1 the command failed or found a problem (reconcile \
                  differences, a broken audit chain, dead letters still open after a retry); 2 \
                  bad usage, or a refused operation (offsets reset against live members or \
                  past unprocessed records without --force); 3 `run --max-wait` passed before the \
                  consumers drained; 130 a second shutdown signal ended the process at once.\n\
                  Settings: flags, then LEDGERFLOW_* environment variables, then --config FILE."
)]
struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LEDGERFLOW_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `ledgerflow=debug`.
    #[arg(long, global = true, default_value = "info", env = "LEDGERFLOW_LOG")]
    log: String,
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
    Reconcile(erp::ReconcileArgs),
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

fn main() -> ExitCode {
    // `ledgerflow ... | head` must end quietly like any Unix tool, not panic on EPIPE.
    sigpipe::reset();
    let cli = Cli::parse();
    let _otlp = init_logging(cli.log_format, &cli.log);
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
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Registry(cmd) => registry::run(cmd).await,
            Command::Produce(args) => produce::run(args).await,
            Command::Tail(args) => tail::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Stats(args) => stats::run(args).await,
            Command::Audit(cmd) => audit::run(cmd).await,
            Command::Reconcile(args) => erp::reconcile(args).await,
            Command::Webhooks(cmd) => notifications::webhooks(cmd).await,
            Command::Notifications(cmd) => notifications::run(cmd).await,
            Command::Warehouse(cmd) => warehouse::run(cmd).await,
            Command::Replay(cmd) => replay::run(cmd).await,
            Command::Offsets(cmd) => offsets::run(cmd).await,
            Command::Dlq(cmd) => dlq::run(cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
