//! `ledgerflow warehouse export`: one warehouse table (optionally a business-time window) to a
//! CSV or Parquet file for analysts. The file appears only when complete; an unknown table is a
//! usage error (exit 2) that lists the known ones.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use ledgerflow_service::ops::exports;
use ledgerflow_warehouse_sink::{ExportFormat, ExportOptions, Table};

use ledgerflow_service::Environment;

use crate::args::{Bar, DatabaseArgs, parse_time};

/// `ledgerflow warehouse ...`
#[derive(Debug, Subcommand)]
pub(crate) enum WarehouseCommand {
    /// Export one table to a CSV or Parquet file.
    Export(ExportArgs),
}

/// File format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FileFormat {
    /// Parquet, typed columns (INT64 minor units and micros, UTF8 text, timestamps).
    Parquet,
    /// CSV with a header row; timestamps in RFC 3339 UTC.
    Csv,
}

/// `ledgerflow warehouse export`.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    /// Table: dim_tenant, dim_customer, fact_subscription_event, fact_usage, fact_invoice,
    /// fact_invoice_line, fact_payment, fact_credit_memo.
    #[arg(long, value_parser = parse_table)]
    table: Table,
    /// Business time from (RFC 3339 or YYYY-MM-DD, inclusive), on the table's time column.
    #[arg(long, value_parser = parse_time)]
    from: Option<i64>,
    /// Business time to (RFC 3339 or YYYY-MM-DD, exclusive).
    #[arg(long, value_parser = parse_time)]
    to: Option<i64>,
    /// Output file format.
    #[arg(long, value_enum)]
    format: FileFormat,
    /// Output file (replaced when the export completes).
    #[arg(long)]
    out: PathBuf,
}

fn parse_table(raw: &str) -> Result<Table, String> {
    raw.parse::<Table>().map_err(|e| e.to_string())
}

pub(crate) async fn run(cmd: WarehouseCommand, env: &Environment) -> anyhow::Result<ExitCode> {
    match cmd {
        WarehouseCommand::Export(args) => export(args, env).await,
    }
}

async fn export(args: ExportArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let store = args.db.open(env).await?;
    let format = match args.format {
        FileFormat::Parquet => ExportFormat::Parquet,
        FileFormat::Csv => ExportFormat::Csv,
    };
    let mut options = ExportOptions::new(args.table, format);
    options.from = args.from;
    options.to = args.to;
    let bar = Bar::new(
        "{spinner} {msg} [{bar:40}] {pos}/{len} rows ({eta})",
        format!("exporting {}", args.table),
    );
    let summary = exports::export_warehouse(&store, &options, &args.out, &bar).await;
    bar.finish();
    let summary = summary?;
    println!(
        "exported {} rows of {} to {} ({})",
        summary.rows,
        summary.table,
        summary.path.display(),
        summary.format.as_str()
    );
    Ok(ExitCode::SUCCESS)
}
