//! `ledgerflow`: one binary for the registry, the load producer, the tail tool and (as they
//! land) the consumers and operator commands. Each noun lives in its own module; this file only
//! parses arguments, sets up logging and maps errors to exit codes.
//!
//! Exit codes: 0 success, 1 the command failed (the message says why), 2 bad usage.

mod audit;
mod consumers;
mod erp;
mod kafka;
mod output;
mod produce;
mod registry;
mod run;
mod settings;
mod shutdown;
mod stats;
mod tail;
mod tenants_file;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// ledgerflow: effect-once consumers from billing events to finance systems.
#[derive(Debug, Parser)]
#[command(
    name = "ledgerflow",
    version,
    about = "Effect-once consumers from billing events (Kafka, Avro) to ERP journals",
    long_about = None,
    propagate_version = true,
    after_help = "Exit codes: 0 success; 1 the command failed or found a problem (reconcile \
                  differences, a broken audit chain); 2 bad usage.\n\
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
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    // `ledgerflow ... | head` must end quietly like any Unix tool, not panic on EPIPE.
    sigpipe::reset();
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log);
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
