//! OpenTelemetry trace export over OTLP/HTTP with protobuf bodies, switched on by the standard
//! environment: `OTEL_EXPORTER_OTLP_ENDPOINT` (the SDK appends `/v1/traces`) or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is). The SDK also reads
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT` and `OTEL_RESOURCE_ATTRIBUTES`;
//! `OTEL_SERVICE_NAME` defaults to `ledgerflow`.
//!
//! Spans are batched and sent from the SDK's own thread with a blocking HTTP client, so export
//! never runs on (or blocks) the async runtime. Dropping [`OtlpGuard`] flushes what is queued.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

use crate::TelemetryError;

/// Base endpoint variable (export is on when it or [`TRACES_ENDPOINT_ENV`] is set).
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Traces-only endpoint variable (a full URL).
pub const TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const SERVICE_NAME_ENV: &str = "OTEL_SERVICE_NAME";

/// Keeps the tracer provider alive; dropping it flushes and stops the exporter.
pub struct OtlpGuard {
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for OtlpGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpGuard").finish_non_exhaustive()
    }
}

impl OtlpGuard {
    /// Export configured by the environment, or `None` when no endpoint is set.
    pub fn from_env() -> Result<Option<Self>, TelemetryError> {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        if !set(ENDPOINT_ENV) && !set(TRACES_ENDPOINT_ENV) {
            return Ok(None);
        }
        let service = std::env::var(SERVICE_NAME_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "ledgerflow".to_owned());
        Self::new(None, &service).map(Some)
    }

    /// Export to `traces_url` (a full URL such as `http://collector:4318/v1/traces`), or to the
    /// endpoint the environment names when `None`.
    pub fn new(traces_url: Option<&str>, service: &str) -> Result<Self, TelemetryError> {
        let mut builder = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary);
        if let Some(url) = traces_url {
            builder = builder.with_endpoint(url);
        }
        let exporter = builder
            .build()
            .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build();
        Ok(Self { provider })
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans for this exporter.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("ledgerflow"))
    }

    /// Sends everything queued now (blocking).
    pub fn flush(&self) -> Result<(), TelemetryError> {
        self.provider
            .force_flush()
            .map_err(|e| TelemetryError::Otlp(e.to_string()))
    }
}

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: flushing OpenTelemetry spans: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exports_spans_as_otlp_protobuf_over_http() {
        let received: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
        let sink = Arc::clone(&received);
        let app = Router::new().route(
            "/v1/traces",
            post(move |headers: HeaderMap, body: Bytes| {
                let sink = Arc::clone(&sink);
                async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    sink.lock().unwrap().push((content_type, body));
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        tokio::task::spawn_blocking(move || {
            let guard = OtlpGuard::new(Some(&url), "ledgerflow-test").unwrap();
            let subscriber = tracing_subscriber::registry().with(guard.layer());
            tracing::subscriber::with_default(subscriber, || {
                let span = tracing::info_span!("batch", consumer = "erp-receivables");
                span.in_scope(|| tracing::info!("inside"));
            });
            guard.flush().unwrap();
        })
        .await
        .unwrap();

        let received = received.lock().unwrap();
        assert_eq!(received.len(), 1, "one export request");
        let (content_type, body) = &received[0];
        assert_eq!(content_type, "application/x-protobuf");
        // The protobuf carries the span name, the attribute and the service name as strings.
        for needle in ["batch", "erp-receivables", "ledgerflow-test"] {
            assert!(
                body.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} missing from the export"
            );
        }
    }
}
