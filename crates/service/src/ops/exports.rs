//! Audit verification and warehouse exports, with the files they leave for other tools: the
//! verdict as node_exporter textfile gauges, a table as CSV or Parquet.

use std::path::Path;

use ledgerflow_store::{ChainReport, Store};
use ledgerflow_telemetry::textfile::{self, Sample};
use ledgerflow_warehouse_sink::{ExportOptions, ExportSummary, count_rows, export_table};

use super::Progress;
use crate::{ConsumerKind, ServiceError};

/// Recomputes every hash chain (of one consumer, or all), reporting rows as they are read.
pub async fn verify_audit(
    store: &Store,
    consumer: Option<&str>,
    progress: &dyn Progress,
) -> Result<ChainReport, ServiceError> {
    store
        .verify_audit(consumer, |rows| progress.at(rows))
        .await
        .map_err(ServiceError::store("verifying the audit log"))
}

/// Writes the broken chains (`ledgerflow_audit_verify_broken_chains`) and the run's time to a
/// node_exporter textfile.
pub fn write_audit_metrics(path: &Path, report: &ChainReport) -> Result<(), ServiceError> {
    let samples = [
        Sample {
            name: textfile::AUDIT_VERIFY_BROKEN_CHAINS,
            help: "Audit chains with a broken link in the last audit verify.",
            labels: vec![],
            value: report.breaks.len() as f64,
        },
        Sample {
            name: textfile::AUDIT_VERIFY_LAST_RUN,
            help: "Unix time of the last completed audit verify.",
            labels: vec![],
            value: textfile::now_seconds(),
        },
    ];
    textfile::write(path, &samples).map_err(|source| ServiceError::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

/// Exports one warehouse table to `out` (which appears only when complete).
pub async fn export_warehouse(
    store: &Store,
    options: &ExportOptions,
    out: &Path,
    progress: &dyn Progress,
) -> Result<ExportSummary, ServiceError> {
    let table = options.table;
    // Idempotent: an export before the consumer ever ran gives an empty file, not an error.
    store
        .apply_schema(&ConsumerKind::Warehouse.schema(store.backend()))
        .await
        .map_err(ServiceError::store("applying the warehouse schema"))?;
    let total = count_rows(store.pool(), store.backend(), options)
        .await
        .map_err(ServiceError::component(format!("counting {table}")))?;
    progress.start(total);
    export_table(store.pool(), store.backend(), options, out, &mut |rows| {
        progress.at(rows);
    })
    .await
    .map_err(ServiceError::component(format!(
        "exporting {table} to {}",
        out.display()
    )))
}
