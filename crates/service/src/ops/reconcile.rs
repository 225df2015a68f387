//! Reconcile: the billing source (a produce manifest, a billing platform export, or the audit
//! log) against the posted journals, the journals against ERP acknowledgements, and (with
//! `--erp-readback`) the acknowledged postings against the ERPs themselves; and the differences
//! as node_exporter textfile gauges for alerting.

use std::path::Path;
use std::time::Duration;

use ledgerflow_erp_receivables::{
    BillingExport, Dispatcher, DispatcherConfig, Manifest, ReadbackOptions, ReadbackProgress,
    ReadbackReport, ReconcileOptions, ReconcileReport, ReconcileSource,
};
use ledgerflow_store::Store;
use ledgerflow_telemetry::textfile::{self, Sample};

use crate::config::vars;
use crate::{ConsumerKind, Environment, ServiceError};

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

/// Asks each tenant's ERP for the document of every confirmed posting in scope (the
/// `--erp-readback` leg; see [`ledgerflow_erp_receivables::readback`]), through a dispatcher
/// built like the one `ledgerflow run` delivers with: the same adapters, auth (secrets from the
/// process environment), account limits from each posting's stored route, and request timeout
/// (`LEDGERFLOW_ERP_REQUEST_TIMEOUT_MS`). Attach the result with
/// [`ReconcileReport::attach_readback`].
pub async fn erp_readback(
    store: &Store,
    env: &Environment,
    options: &ReadbackOptions,
    progress: &dyn ReadbackProgress,
) -> Result<ReadbackReport, ServiceError> {
    store
        .apply_schema(&ConsumerKind::ErpReceivables.schema(store.backend()))
        .await
        .map_err(ServiceError::store("applying the erp-receivables schema"))?;
    let mut cfg = DispatcherConfig::default();
    if let Some(ms) = env.number(vars::ERP_REQUEST_TIMEOUT_MS) {
        cfg.request_timeout = Duration::from_millis(ms);
        // The lease is not used by a read-back, but the configuration must stay valid.
        cfg.lease = cfg.lease.max(cfg.request_timeout.saturating_mul(4));
    }
    let dispatcher = Dispatcher::new(store.pool().clone(), store.backend(), cfg).map_err(
        ServiceError::component("building the erp dispatcher for read-back"),
    )?;
    ledgerflow_erp_receivables::read_back(&dispatcher, options, progress)
        .await
        .map_err(ServiceError::component(
            "reading documents back from the erps",
        ))
}

/// Differences by kind (`missing`, `extra`, `mismatched`, `count_or_total`, `double_posted`,
/// `unbalanced`, `delivery_failed`, `delivery_stuck`, and from the ERP read-back
/// `erp_missing`, `erp_mismatched`, `erp_unanswered`; those three are 0 without a read-back).
pub fn differences(report: &ReconcileReport) -> [(&'static str, u64); 11] {
    let mut kinds = [
        ("missing", 0),
        ("extra", 0),
        ("mismatched", 0),
        ("count_or_total", 0),
        ("double_posted", 0),
        ("unbalanced", 0),
        ("delivery_failed", 0),
        ("delivery_stuck", 0),
        ("erp_missing", 0),
        ("erp_mismatched", 0),
        ("erp_unanswered", 0),
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
    if let Some(readback) = &report.erp_readback {
        kinds[8].1 = readback.missing;
        kinds[9].1 = readback.mismatched;
        kinds[10].1 = readback.unanswered;
    }
    kinds
}

/// Writes the differences by kind (`ledgerflow_reconcile_differences`) and the run's time to a
/// node_exporter textfile. The `erp_*` kinds are written only by a run with a read-back: a run
/// without one knows nothing about the ERPs and does not say 0.
pub fn write_metrics(path: &Path, report: &ReconcileReport) -> Result<(), ServiceError> {
    let source = report.source.to_owned();
    let mut samples: Vec<Sample> = differences(report)
        .iter()
        .filter(|(kind, _)| report.erp_readback.is_some() || !kind.starts_with("erp_"))
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn report(readback: Option<ReadbackReport>) -> ReconcileReport {
        let mut report = ReconcileReport {
            source: "audit_log",
            tenant: None,
            from: None,
            to: None,
            stuck_after_secs: 3600,
            clean: true,
            tenants: BTreeMap::new(),
            erp_readback: None,
        };
        if let Some(r) = readback {
            report.attach_readback(r);
        }
        report
    }

    #[test]
    fn read_back_differences_are_gauged_only_after_a_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reconcile.prom");
        write_metrics(&path, &report(None)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("erp_missing"), "{text}");

        let mut readback = ReadbackReport {
            missing: 2,
            mismatched: 1,
            ..ReadbackReport::default()
        };
        let tenant = readback.tenants.entry("t1".into()).or_default();
        tenant.missing_count = 2;
        tenant.mismatched_count = 1;
        let found = report(Some(readback));
        assert!(!found.clean);
        write_metrics(&path, &found).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in [
            "ledgerflow_reconcile_differences{kind=\"erp_missing\",source=\"audit_log\"} 2",
            "ledgerflow_reconcile_differences{kind=\"erp_mismatched\",source=\"audit_log\"} 1",
            "ledgerflow_reconcile_differences{kind=\"erp_unanswered\",source=\"audit_log\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
