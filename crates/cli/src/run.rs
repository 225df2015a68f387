//! `ledgerflow run`: [`ledgerflow_service::serve`] and its summary.

use std::process::ExitCode;

use clap::Args;
use ledgerflow_runtime::{ConsumerSummary, RunExit};
use ledgerflow_service::signal::StopRequests;
use ledgerflow_service::{ConsumerKind, Environment, Pipeline, ServeReport};

use crate::args::{Format, PipelineArgs, parse_consumer, print_json};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Consumer to run, repeatable (default: the config's `consumers`, else all).
    #[arg(long = "consumer", value_parser = parse_consumer)]
    consumers: Vec<ConsumerKind>,
    /// Summary format printed on exit.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub(crate) async fn run(args: RunArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let settings = args.pipeline.resolve(&args.consumers, env)?;
    let pipeline = Pipeline::open(settings).await?;
    let report = ledgerflow_service::serve(pipeline, env, StopRequests::os()).await?;
    if let Some(forced) = report.forced {
        eprintln!("{forced}");
        // At once: a consumer stuck in a broker call must not hold the process.
        std::process::exit(crate::EXIT_FORCED);
    }
    for f in &report.failures {
        let verb = if f.panicked { "panicked" } else { "failed" };
        eprintln!("consumer {} {verb}: {}", f.consumer, f.error);
    }
    match args.format {
        Format::Json => print_json(&report.summaries)?,
        Format::Text => report.summaries.iter().for_each(print_summary),
    }
    Ok(exit_code(&report))
}

fn exit_code(report: &ServeReport) -> ExitCode {
    if !report.failures.is_empty() {
        return ExitCode::FAILURE;
    }
    let mut not_drained = report.not_drained().peekable();
    if not_drained.peek().is_none() {
        return ExitCode::SUCCESS;
    }
    for s in not_drained {
        eprintln!(
            "{} did not drain within --max-wait: {}",
            s.consumer,
            s.not_drained.as_deref().unwrap_or("unknown")
        );
    }
    ExitCode::from(crate::EXIT_NOT_DRAINED)
}

fn print_summary(s: &ConsumerSummary) {
    let end = match s.exit {
        RunExit::Signal if s.left_uncommitted > 0 => format!(
            "stopped by signal ({} records left to re-read)",
            s.left_uncommitted
        ),
        RunExit::Signal => "stopped by signal".to_owned(),
        RunExit::Drained => "drained".to_owned(),
        RunExit::NotDrained => format!(
            "NOT drained: {}",
            s.not_drained.as_deref().unwrap_or("unknown")
        ),
    };
    println!(
        "{}: {} batches, {} applied, {} duplicates, {} dead-lettered, {} skipped, {} retries, {} stale, {} re-read, {end}",
        s.consumer,
        s.batches,
        s.applied,
        s.duplicates,
        s.dead_lettered,
        s.skipped,
        s.retries,
        s.stale_batches,
        s.rereads,
    );
}
