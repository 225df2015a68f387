//! Reconcile: the billing source (a produce manifest, a billing platform export, or the audit
//! log) against the posted journals, and the journals against ERP acknowledgements; and the
//! differences as node_exporter textfile gauges for alerting.

use std::path::Path;

use ledgerflow_erp_receivables::{
    BillingExport, Manifest, ReconcileOptions, ReconcileReport, ReconcileSource,
};
use ledgerflow_store::Store;
use ledgerflow_telemetry::textfile::{self, Sample};

use crate::{ConsumerKind, ServiceError};

/// The expected documents: a `*.csv` billing export, another file as a produce manifest
/// (JSON), or (none) the events the audit log recorded.
pub fn source(path: Option<&Path>) -> Result<ReconcileSource, ServiceError> {
    let Some(path) = path else {
        return Ok(ReconcileSource::AuditLog);
    };
    let text = std::fs::read_to_string(path).map_err(|source| ServiceError::Io {
        context: format!("reading {}", path.display()),
        source,
    })?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        let export = BillingExport::from_csv(&text).map_err(ServiceError::component(format!(
            "reading the billing export {}",
            path.display()
        )))?;
        return Ok(ReconcileSource::Billing(export));
    }
    let json: serde_json::Value = serde_json::from_str(&text).map_err(ServiceError::component(
        format!("{} is not JSON", path.display()),
    ))?;
    let manifest =
        Manifest::from_json(json).map_err(ServiceError::component("reading the manifest"))?;
    Ok(ReconcileSource::Manifest(manifest))
}

/// Runs the reconciliation (the consumer's schema applied first, so a store where it never ran
/// reconciles as empty). `options.stuck_after` is how long a posting may stay pending or
/// accepted before it counts as undelivered (`--stuck-after`).
pub async fn reconcile(
    store: &Store,
    options: &ReconcileOptions,
) -> Result<ReconcileReport, ServiceError> {
    store
        .apply_schema(&ConsumerKind::ErpReceivables.schema(store.backend()))
        .await
        .map_err(ServiceError::store("applying the erp-receivables schema"))?;
    ledgerflow_erp_receivables::reconcile(store.pool(), store.backend(), options)
        .await
        .map_err(ServiceError::component("reconciling"))
}

/// Differences by kind (`missing`, `extra`, `mismatched`, `count_or_total`, `double_posted`,
/// `unbalanced`, `delivery_failed`, `delivery_stuck`).
pub fn differences(report: &ReconcileReport) -> [(&'static str, u64); 8] {
    let mut kinds = [
        ("missing", 0),
        ("extra", 0),
        ("mismatched", 0),
        ("count_or_total", 0),
        ("double_posted", 0),
        ("unbalanced", 0),
        ("delivery_failed", 0),
        ("delivery_stuck", 0),
    ];
    for t in report.tenants.values() {
        for d in [&t.invoices, &t.payments, &t.credit_memos] {
            kinds[0].1 += d.missing_count;
            kinds[1].1 += d.extra_count;
            kinds[2].1 += d.mismatched_count;
            kinds[3].1 +=
                u64::from(d.count_matches == Some(false) || d.total_matches == Some(false));
        }
        kinds[4].1 += t.double_postings.len() as u64;
        kinds[5].1 += t.unbalanced_journals.len() as u64;
        kinds[6].1 += t.erp.failed;
        kinds[7].1 += t.erp.stuck;
    }
    kinds
}

/// Writes the differences by kind (`ledgerflow_reconcile_differences`) and the run's time to a
/// node_exporter textfile.
pub fn write_metrics(path: &Path, report: &ReconcileReport) -> Result<(), ServiceError> {
    let source = report.source.to_owned();
    let mut samples: Vec<Sample> = differences(report)
        .iter()
        .map(|(kind, n)| Sample {
            name: textfile::RECONCILE_DIFFERENCES,
            help: "Differences found by the last reconcile, by kind.",
            labels: vec![("kind", (*kind).to_owned()), ("source", source.clone())],
            value: *n as f64,
        })
        .collect();
    samples.push(Sample {
        name: textfile::RECONCILE_LAST_RUN,
        help: "Unix time of the last completed reconcile.",
        labels: vec![("source", source)],
        value: textfile::now_seconds(),
    });
    textfile::write(path, &samples).map_err(|source| ServiceError::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}
