//! ledgerflow-telemetry: the metric catalogue (every metric name lives here, nowhere else), the
//! Prometheus recorder, and the `/metrics`, `/healthz` and `/readyz` endpoints.
//!
//! Labels are bounded by construction: consumer names, event types, decisions and reason codes
//! are closed sets; topic and partition are bounded by the subscription. Tenants are not a label.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Records read, by consumer, event type (`unknown` when undecodable) and decision.
pub const EVENTS_TOTAL: &str = "ledgerflow_events_total";
/// Dead letters written, by consumer and reason code.
pub const DEAD_LETTERS_TOTAL: &str = "ledgerflow_dead_letters_total";
/// Records per committed batch, by consumer.
pub const BATCH_RECORDS: &str = "ledgerflow_batch_records";
/// Seconds from the start of preparing a batch to its COMMIT, by consumer.
pub const BATCH_COMMIT_SECONDS: &str = "ledgerflow_batch_commit_seconds";
/// Transient failures retried, by consumer and stage (`prepare`, `commit`, `position`).
pub const RETRIES_TOTAL: &str = "ledgerflow_retries_total";
/// Batches refused by the position fence, by consumer.
pub const STALE_BATCHES_TOTAL: &str = "ledgerflow_stale_batches_total";
/// Deliveries that started past the expected offset even after re-fetching, by consumer.
pub const OFFSET_GAPS_TOTAL: &str = "ledgerflow_offset_gaps_total";
/// Next offset of record, by consumer, topic and partition.
pub const POSITION: &str = "ledgerflow_position";

/// Every metric with its help text, for descriptions and the README catalogue test.
pub const CATALOGUE: &[(&str, &str)] = &[
    (
        EVENTS_TOTAL,
        "Records read, by consumer, event type and decision (applied, duplicate, dead_lettered, skipped).",
    ),
    (
        DEAD_LETTERS_TOTAL,
        "Dead letters written, by consumer and reason code.",
    ),
    (BATCH_RECORDS, "Records per committed batch."),
    (
        BATCH_COMMIT_SECONDS,
        "Seconds to prepare and commit one batch.",
    ),
    (
        RETRIES_TOTAL,
        "Transient failures retried with backoff, by stage.",
    ),
    (
        STALE_BATCHES_TOTAL,
        "Batches refused by the position fence (another owner committed first).",
    ),
    (
        OFFSET_GAPS_TOTAL,
        "Offset ranges the broker could not deliver after re-fetching (compaction, transaction markers).",
    ),
    (POSITION, "Next offset of record per topic and partition."),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn install() -> Result<PrometheusHandle, TelemetryError> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(BATCH_COMMIT_SECONDS.to_owned()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(BATCH_RECORDS.to_owned()),
                &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0],
            )
        })
        .map_err(|e| TelemetryError::Install(e.to_string()))?
        .install_recorder()
        .map_err(|e| TelemetryError::Install(e.to_string()))?;
    for (name, help) in CATALOGUE {
        if *name == BATCH_RECORDS || *name == BATCH_COMMIT_SECONDS {
            metrics::describe_histogram!(*name, *help);
        } else if *name == POSITION {
            metrics::describe_gauge!(*name, *help);
        } else {
            metrics::describe_counter!(*name, *help);
        }
    }
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Readiness: flipped by the process once its dependencies answered and work is assigned.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Marks the process ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// Whether the process is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Telemetry failures.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The recorder could not be installed.
    #[error("cannot install the metrics recorder: {0}")]
    Install(String),
    /// The HTTP server failed.
    #[error("metrics server failed")]
    Serve(#[source] std::io::Error),
}

#[derive(Clone)]
struct AppState {
    handle: PrometheusHandle,
    ready: Arc<Readiness>,
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.handle.render(),
    )
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.ready.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves `/metrics`, `/healthz` (alive) and `/readyz` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    ready: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), TelemetryError> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { handle, ready });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(TelemetryError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let handle = install().unwrap();
        metrics::counter!(EVENTS_TOTAL, "consumer" => "erp-receivables", "event_type" => "invoice_finalized", "decision" => "applied").increment(3);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ready = Arc::new(Readiness::default());
        tokio::spawn(serve(
            listener,
            handle,
            Arc::clone(&ready),
            std::future::pending(),
        ));
        let base = format!("http://{addr}");
        let body = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("ledgerflow_events_total{consumer=\"erp-receivables\",event_type=\"invoice_finalized\",decision=\"applied\"} 3"), "{body}");
        assert_eq!(
            reqwest::get(format!("{base}/healthz"))
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            reqwest::get(format!("{base}/readyz"))
                .await
                .unwrap()
                .status(),
            503
        );
        ready.set(true);
        assert_eq!(
            reqwest::get(format!("{base}/readyz"))
                .await
                .unwrap()
                .status(),
            200
        );
    }

    #[test]
    fn every_catalogue_name_is_prefixed_and_unique() {
        let mut names: Vec<_> = CATALOGUE.iter().map(|(n, _)| *n).collect();
        assert!(names.iter().all(|n| n.starts_with("ledgerflow_")));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
    }
}
