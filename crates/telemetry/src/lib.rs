//! ledgerflow-telemetry: the metric catalogue (every metric name lives here, nowhere else), the
//! Prometheus recorder, and the `/metrics`, `/healthz` and `/readyz` endpoints.
//!
//! Labels are bounded by construction: consumer names, event types, decisions, statuses and
//! reason codes are closed sets; topic and partition are bounded by the subscription. A tenant
//! label only ever goes through [`TenantLabels`], which folds everything past an allowlist (or
//! the first N tenants seen) into `other`.

#[cfg(feature = "otlp")]
pub mod otlp;
mod readiness;
mod tenants;
pub mod textfile;
mod trace_context;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use readiness::{CheckFuture, Readiness, ReadinessReport};
pub use tenants::{DEFAULT_TOP_TENANTS, OTHER_TENANT, TENANTS_ENV, TenantLabels};
pub use trace_context::{TraceParent, continue_trace};

/// Records read, by consumer, event type (`any` for decisions other than applied) and decision.
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
/// Seconds to decode one record (framing, schema resolution, Avro), by consumer. Recorded by
/// the runtime.
pub const DECODE_SECONDS: &str = "ledgerflow_decode_seconds";
/// High watermark minus the position of record, by consumer, topic and partition. Sampled.
pub const CONSUMER_LAG_MESSAGES: &str = "ledgerflow_consumer_lag_messages";
/// Age of the record at the position of record (0 when caught up), by consumer, topic and
/// partition. Sampled.
pub const CONSUMER_LAG_SECONDS: &str = "ledgerflow_consumer_lag_seconds";
/// Unresolved (`open`) dead letters, by consumer and reason. Sampled.
pub const DEAD_LETTER_DEPTH: &str = "ledgerflow_dead_letter_depth";
/// Outbox rows not yet delivered, by consumer and status (`pending`, `failed`). Sampled.
pub const OUTBOX_BACKLOG: &str = "ledgerflow_outbox_backlog";
/// ERP postings (outbox rows) by tenant (bounded) and state (`pending`, `accepted`,
/// `confirmed`, `failed`, `resolved`): the inputs of the posting success ratio. Sampled.
pub const ERP_POSTINGS: &str = "ledgerflow_erp_postings";
/// Seconds since the oldest ERP posting still `pending`, `accepted` or `failed` was written
/// (0 when none is), by status. Sampled.
pub const ERP_OLDEST_POSTING_AGE_SECONDS: &str = "ledgerflow_erp_oldest_posting_age_seconds";
/// Seconds per ERP request (lookups, sends, polls; not token requests), by ERP kind.
pub const ERP_REQUEST_SECONDS: &str = "ledgerflow_erp_request_seconds";
/// ERP responses by ERP kind and class (`2xx`, `4xx`, `429`, `5xx`, `timeout`, `connection`).
pub const ERP_RESPONSES_TOTAL: &str = "ledgerflow_erp_responses_total";
/// ERP requests in flight, by ERP kind and account (accounts come from the tenants file).
pub const ERP_IN_FLIGHT: &str = "ledgerflow_erp_in_flight";
/// Delivery attempts by ERP kind and outcome (`confirmed`, `accepted`, `retry`, `failed`,
/// `deferred`).
pub const ERP_OUTCOMES_TOTAL: &str = "ledgerflow_erp_outcomes_total";
/// Webhook deliveries (notification outbox rows) by tenant (bounded) and status (`pending`,
/// `delivered`, `failed`): the inputs of the webhook delivery success ratio. Sampled.
pub const WEBHOOK_DELIVERIES: &str = "ledgerflow_webhook_deliveries";
/// Per-tenant delivery lag in seconds (age of the tenant's oldest unfinished outbox row), by
/// consumer, for the N tenants with the most lag (`LEDGERFLOW_METRICS_LAG_TENANTS`) and
/// `tenant="other"` for the largest among the rest. Sampled.
pub const TENANT_DELIVERY_LAG_SECONDS: &str = "ledgerflow_tenant_delivery_lag_seconds";
/// Per-tenant delivery lag in events (unfinished outbox rows), same tenants as
/// [`TENANT_DELIVERY_LAG_SECONDS`]. Sampled.
pub const TENANT_DELIVERY_LAG_EVENTS: &str = "ledgerflow_tenant_delivery_lag_events";
/// The median of the per-tenant delivery lag in seconds over every tenant the outbox holds
/// rows of (0 for a tenant with nothing unfinished), by consumer: what "the others" look like
/// when one tenant lags. Sampled.
pub const TENANT_DELIVERY_LAG_MEDIAN_SECONDS: &str =
    "ledgerflow_tenant_delivery_lag_median_seconds";
/// Sampler reads that failed, by source (`database`, `broker`).
pub const SAMPLER_ERRORS_TOTAL: &str = "ledgerflow_sampler_errors_total";
/// Payments posted whose invoice has not arrived yet (held as unapplied cash).
pub const HELD_PAYMENTS: &str = "ledgerflow_held_payments";
/// Age of the oldest held payment (payment application lag), from its capture time.
pub const HELD_PAYMENT_AGE_SECONDS: &str = "ledgerflow_held_payment_age_seconds";

/// The Prometheus type of a catalogued metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic counter (`_total`).
    Counter,
    /// Point-in-time value.
    Gauge,
    /// Bucketed distribution (explicit buckets, see [`install`]).
    Histogram,
}

/// One catalogue entry.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Full metric name.
    pub name: &'static str,
    /// Type.
    pub kind: MetricKind,
    /// Label names, in the order they are attached.
    pub labels: &'static [&'static str],
    /// Help text (also the README's meaning column).
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        labels,
        help,
    }
}

/// Every metric with its type, labels and help text.
pub const CATALOGUE: &[Metric] = &[
    metric(
        EVENTS_TOTAL,
        MetricKind::Counter,
        &["consumer", "event_type", "decision"],
        "Records read, by consumer, event type and decision (applied, duplicate, dead_lettered, skipped).",
    ),
    metric(
        DEAD_LETTERS_TOTAL,
        MetricKind::Counter,
        &["consumer", "reason"],
        "Dead letters written, by consumer and reason code.",
    ),
    metric(
        BATCH_RECORDS,
        MetricKind::Histogram,
        &["consumer"],
        "Records per committed batch.",
    ),
    metric(
        BATCH_COMMIT_SECONDS,
        MetricKind::Histogram,
        &["consumer"],
        "Seconds to prepare and commit one batch.",
    ),
    metric(
        RETRIES_TOTAL,
        MetricKind::Counter,
        &["consumer", "stage"],
        "Transient failures retried with backoff, by stage.",
    ),
    metric(
        STALE_BATCHES_TOTAL,
        MetricKind::Counter,
        &["consumer"],
        "Batches refused by the position fence (another owner committed first).",
    ),
    metric(
        OFFSET_GAPS_TOTAL,
        MetricKind::Counter,
        &["consumer"],
        "Offset ranges the broker could not deliver after re-fetching (compaction, transaction markers).",
    ),
    metric(
        POSITION,
        MetricKind::Gauge,
        &["consumer", "topic", "partition"],
        "Next offset of record per topic and partition.",
    ),
    metric(
        DECODE_SECONDS,
        MetricKind::Histogram,
        &["consumer"],
        "Seconds to decode one record: framing, schema resolution and Avro.",
    ),
    metric(
        CONSUMER_LAG_MESSAGES,
        MetricKind::Gauge,
        &["consumer", "topic", "partition"],
        "Records between the position of record and the high watermark (sampled).",
    ),
    metric(
        CONSUMER_LAG_SECONDS,
        MetricKind::Gauge,
        &["consumer", "topic", "partition"],
        "Age in seconds of the oldest record not yet committed, 0 when caught up (sampled).",
    ),
    metric(
        DEAD_LETTER_DEPTH,
        MetricKind::Gauge,
        &["consumer", "reason"],
        "Unresolved dead letters, by consumer and reason code (sampled).",
    ),
    metric(
        OUTBOX_BACKLOG,
        MetricKind::Gauge,
        &["consumer", "status"],
        "Outbox rows not yet delivered: pending (will be retried) and failed (parked) (sampled).",
    ),
    metric(
        ERP_POSTINGS,
        MetricKind::Gauge,
        &["tenant", "status"],
        "ERP postings by tenant (bounded, see LEDGERFLOW_METRICS_TENANTS) and state: pending, accepted, confirmed, failed, resolved (sampled).",
    ),
    metric(
        ERP_OLDEST_POSTING_AGE_SECONDS,
        MetricKind::Gauge,
        &["status"],
        "Seconds since the oldest ERP posting still pending, accepted or failed was written, 0 when none is (sampled).",
    ),
    metric(
        ERP_REQUEST_SECONDS,
        MetricKind::Histogram,
        &["erp"],
        "Seconds per ERP request (lookups, sends, job polls), by ERP kind.",
    ),
    metric(
        ERP_RESPONSES_TOTAL,
        MetricKind::Counter,
        &["erp", "class"],
        "ERP responses by ERP kind and class: 2xx, 4xx, 429, 5xx, timeout, connection.",
    ),
    metric(
        ERP_IN_FLIGHT,
        MetricKind::Gauge,
        &["erp", "account"],
        "ERP requests in flight per ERP account (accounts come from the tenants file).",
    ),
    metric(
        ERP_OUTCOMES_TOTAL,
        MetricKind::Counter,
        &["erp", "outcome"],
        "ERP delivery attempts by outcome: confirmed, accepted, retry, failed, deferred (account paused, no request made).",
    ),
    metric(
        WEBHOOK_DELIVERIES,
        MetricKind::Gauge,
        &["tenant", "status"],
        "Webhook deliveries by tenant (bounded, see LEDGERFLOW_METRICS_TENANTS) and status: pending, delivered, failed (sampled).",
    ),
    metric(
        TENANT_DELIVERY_LAG_SECONDS,
        MetricKind::Gauge,
        &["consumer", "tenant"],
        "Age in seconds of a tenant's oldest unfinished outbox row (ERP posting not confirmed or resolved, webhook not delivered), for the N tenants with the most lag (LEDGERFLOW_METRICS_LAG_TENANTS, default 10); tenant=other is the largest among the rest; a tenant that leaves the top N reads 0 (sampled).",
    ),
    metric(
        TENANT_DELIVERY_LAG_EVENTS,
        MetricKind::Gauge,
        &["consumer", "tenant"],
        "Unfinished outbox rows of a tenant, for the same tenants as ledgerflow_tenant_delivery_lag_seconds; tenant=other sums the rest (sampled).",
    ),
    metric(
        TENANT_DELIVERY_LAG_MEDIAN_SECONDS,
        MetricKind::Gauge,
        &["consumer"],
        "Median per-tenant delivery lag in seconds over every tenant with outbox rows, 0 for tenants with nothing unfinished (sampled).",
    ),
    metric(
        SAMPLER_ERRORS_TOTAL,
        MetricKind::Counter,
        &["source"],
        "Background sampler reads that failed, by source (database, broker).",
    ),
    metric(
        HELD_PAYMENTS,
        MetricKind::Gauge,
        &["consumer"],
        "Payments posted whose invoice has not arrived yet, held as unapplied cash (sampled).",
    ),
    metric(
        HELD_PAYMENT_AGE_SECONDS,
        MetricKind::Gauge,
        &["consumer"],
        "Payment application lag: seconds since the capture of the oldest held payment, 0 when none (sampled).",
    ),
];

/// Bucket bounds of the catalogued histograms. Decoding is microseconds, a batch commit
/// milliseconds to seconds, a batch 1 to 10,000 records, an ERP request up to a minute.
fn buckets(name: &str) -> &'static [f64] {
    match name {
        BATCH_RECORDS => &[
            1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        ],
        DECODE_SECONDS => &[
            0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25,
            1.0,
        ],
        // ERP calls: tens of milliseconds to the request timeout (tens of seconds).
        ERP_REQUEST_SECONDS => &[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ],
        _ => &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ],
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn install() -> Result<PrometheusHandle, TelemetryError> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let mut builder = PrometheusBuilder::new();
    for m in CATALOGUE.iter().filter(|m| m.kind == MetricKind::Histogram) {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(m.name.to_owned()), buckets(m.name))
            .map_err(|e| TelemetryError::Install(e.to_string()))?;
    }
    let handle = builder
        .install_recorder()
        .map_err(|e| TelemetryError::Install(e.to_string()))?;
    for m in CATALOGUE {
        match m.kind {
            MetricKind::Counter => metrics::describe_counter!(m.name, m.help),
            MetricKind::Gauge => metrics::describe_gauge!(m.name, m.help),
            MetricKind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
    Ok(HANDLE.get_or_init(|| handle).clone())
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
    /// The OTLP exporter could not be set up or flushed.
    #[error("otlp export: {0}")]
    Otlp(String),
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
    let report = state.ready.evaluate().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report))
}

/// Serves `/metrics`, `/healthz` (process alive, nothing else) and `/readyz` (see
/// [`Readiness`]) until `shutdown`.
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
        metrics::histogram!(DECODE_SECONDS, "consumer" => "erp-receivables").record(0.00003);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ready = Arc::new(Readiness::default());
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = Arc::clone(&healthy);
        ready.add_check("database", move || {
            let ok = flag.load(std::sync::atomic::Ordering::Relaxed);
            Box::pin(async move {
                if ok {
                    Ok(())
                } else {
                    Err("connection refused".to_owned())
                }
            })
        });
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
        assert!(
            body.contains("# TYPE ledgerflow_decode_seconds histogram"),
            "{body}"
        );
        assert!(
            body.contains(
                "ledgerflow_decode_seconds_bucket{consumer=\"erp-receivables\",le=\"0.00005\"} 1"
            ),
            "{body}"
        );
        assert_eq!(
            reqwest::get(format!("{base}/healthz"))
                .await
                .unwrap()
                .status(),
            200
        );
        let readyz = || async {
            let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        };
        let (status, body) = readyz().await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("\"started\""), "{body}");
        ready.set(true);
        let (status, body) = readyz().await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"database\":\"ok\""), "{body}");
        healthy.store(false, std::sync::atomic::Ordering::Relaxed);
        let (status, body) = readyz().await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("\"failed\":[\"database\"]") && body.contains("connection refused"),
            "{body}"
        );
    }

    #[test]
    fn every_catalogue_name_is_prefixed_unique_and_well_typed() {
        let mut names: Vec<_> = CATALOGUE.iter().map(|m| m.name).collect();
        assert!(names.iter().all(|n| n.starts_with("ledgerflow_")));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
        for m in CATALOGUE {
            // Prometheus conventions, which `promtool check metrics` also lints.
            assert_eq!(
                m.name.ends_with("_total"),
                m.kind == MetricKind::Counter,
                "{}",
                m.name
            );
            assert!(!m.help.is_empty() && !m.labels.is_empty(), "{}", m.name);
            assert!(
                !m.labels.contains(&"tenant") || m.kind == MetricKind::Gauge,
                "tenant labels only on sampled gauges, through TenantLabels: {}",
                m.name
            );
        }
    }

    #[test]
    fn histogram_buckets_are_increasing() {
        for m in CATALOGUE.iter().filter(|m| m.kind == MetricKind::Histogram) {
            let b = buckets(m.name);
            assert!(b.windows(2).all(|w| w[0] < w[1]), "{}", m.name);
        }
    }
}
