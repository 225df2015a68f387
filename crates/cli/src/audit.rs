//! `ledgerflow audit verify|head`.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use ledgerflow_service::ops::exports;

use ledgerflow_service::Environment;

use crate::args::{Bar, DatabaseArgs, Format};

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Recompute every hash chain; exit 1 and name the first broken link on tampering.
    Verify(AuditArgs),
    /// Print the head (latest seq and hash) of every chain, to anchor outside the database.
    Head(AuditArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    /// Only this consumer's chains.
    #[arg(long)]
    consumer: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Also write the result as Prometheus gauges to this file (node_exporter textfile
    /// collector): `ledgerflow_audit_verify_broken_chains` and its last-run timestamp.
    #[arg(long, value_name = "PATH")]
    metrics_textfile: Option<std::path::PathBuf>,
}

pub(crate) async fn run(cmd: AuditCommand, env: &Environment) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify(args) => verify(args, env).await,
        AuditCommand::Head(args) => head(args, env).await,
    }
}

async fn verify(args: AuditArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let store = args.db.open(env).await?;
    let bar = Bar::new("{spinner} audit verify: {pos} rows [{elapsed}]", "");
    let report = exports::verify_audit(&store, args.consumer.as_deref(), &bar).await;
    bar.finish();
    let report = report?;
    if let Some(path) = &args.metrics_textfile {
        exports::write_audit_metrics(path, &report)?;
    }
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "intact": report.is_intact(),
                "chains": report.chains,
                "rows": report.rows,
                "breaks": report.breaks,
            }))?
        ),
        Format::Text => {
            if report.is_intact() {
                println!(
                    "audit log intact: {} chains, {} rows verified",
                    report.chains, report.rows
                );
            } else {
                println!(
                    "AUDIT LOG BROKEN: {} of {} chains",
                    report.breaks.len(),
                    report.chains
                );
                for b in &report.breaks {
                    println!(
                        "  {} {}[{}] first bad row seq {}: {}",
                        b.consumer, b.topic, b.partition, b.seq, b.problem
                    );
                }
            }
        }
    }
    Ok(if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn head(args: AuditArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let store = args.db.open(env).await?;
    let heads = store
        .audit_heads(args.consumer.as_deref())
        .await
        .context("reading heads")?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&heads)?),
        Format::Text => {
            for h in &heads {
                println!(
                    "{} {}[{}] seq={} {}",
                    h.consumer, h.topic, h.partition, h.seq, h.hash
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
