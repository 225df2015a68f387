//! Metrics of one-shot commands (`reconcile`, `audit verify`) as a Prometheus text file for the
//! node_exporter textfile collector: written to `PATH.tmp`, then renamed, so a scrape never sees
//! half a file.

use std::path::Path;

/// `ledgerflow reconcile`: differences found in the last run, by kind.
pub const RECONCILE_DIFFERENCES: &str = "ledgerflow_reconcile_differences";
/// `ledgerflow reconcile`: unix time of the last completed run.
pub const RECONCILE_LAST_RUN: &str = "ledgerflow_reconcile_last_run_timestamp_seconds";
/// `ledgerflow audit verify`: chains with a broken link in the last run.
pub const AUDIT_VERIFY_BROKEN_CHAINS: &str = "ledgerflow_audit_verify_broken_chains";
/// `ledgerflow audit verify`: unix time of the last completed run.
pub const AUDIT_VERIFY_LAST_RUN: &str = "ledgerflow_audit_verify_last_run_timestamp_seconds";

/// One gauge sample.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Metric name.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Label pairs.
    pub labels: Vec<(&'static str, String)>,
    /// Value.
    pub value: f64,
}

/// Renders gauges in the Prometheus text format (one HELP/TYPE block per name, in order).
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    let mut last: Option<&str> = None;
    for s in samples {
        if last != Some(s.name) {
            out.push_str(&format!(
                "# HELP {} {}\n# TYPE {} gauge\n",
                s.name, s.help, s.name
            ));
            last = Some(s.name);
        }
        let labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| {
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                format!("{k}=\"{v}\"")
            })
            .collect();
        if labels.is_empty() {
            out.push_str(&format!("{} {}\n", s.name, s.value));
        } else {
            out.push_str(&format!("{}{{{}}} {}\n", s.name, labels.join(","), s.value));
        }
    }
    out
}

/// Writes the samples atomically to `path`.
pub fn write(path: &Path, samples: &[Sample]) -> std::io::Result<()> {
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, render(samples))?;
    std::fs::rename(&tmp, path)
}

/// Seconds since the epoch, for the `*_last_run_timestamp_seconds` gauges.
pub fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_block_per_metric_with_escaped_labels() {
        let text = render(&[
            Sample {
                name: RECONCILE_DIFFERENCES,
                help: "differences",
                labels: vec![("kind", "missing".into())],
                value: 2.0,
            },
            Sample {
                name: RECONCILE_DIFFERENCES,
                help: "differences",
                labels: vec![("kind", "a\"b".into())],
                value: 0.0,
            },
            Sample {
                name: RECONCILE_LAST_RUN,
                help: "last run",
                labels: vec![],
                value: 1.5,
            },
        ]);
        assert_eq!(
            text,
            "# HELP ledgerflow_reconcile_differences differences\n\
             # TYPE ledgerflow_reconcile_differences gauge\n\
             ledgerflow_reconcile_differences{kind=\"missing\"} 2\n\
             ledgerflow_reconcile_differences{kind=\"a\\\"b\"} 0\n\
             # HELP ledgerflow_reconcile_last_run_timestamp_seconds last run\n\
             # TYPE ledgerflow_reconcile_last_run_timestamp_seconds gauge\n\
             ledgerflow_reconcile_last_run_timestamp_seconds 1.5\n"
        );
    }

    #[test]
    fn writes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledgerflow.prom");
        write(&path, &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert!(!dir.path().join("ledgerflow.prom.tmp").exists());
    }
}
