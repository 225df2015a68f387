//! The outbox dispatcher: delivers each pending `erp_outbox` row to its tenant's ERP.
//!
//! A round ([`Dispatcher::dispatch_once`]) claims up to `batch_size` due rows, sends them with
//! at most `concurrency` requests in flight, and records each outcome:
//!
//! | response | outcome |
//! | --- | --- |
//! | 2xx | `acked`; `external_ref` = the response JSON's `id`, when there is one |
//! | 429, 5xx, timeout, connection error, unreadable credential | retried after exponential backoff with jitter (at least `Retry-After`), `failed` after `max_attempts` |
//! | any other status (4xx, 3xx: redirects are not followed) | `failed` at once with the status and a body excerpt, for an operator |
//!
//! Claiming is a lease, not a held transaction: the claim pushes `next_attempt_at` to
//! `now + lease` and stamps a claim token, and outcomes only land with the same token. A
//! dispatcher that dies mid-request leaves the row to be claimed again when the lease runs
//! out; the retry carries the same `Idempotency-Key` (derived from the journal id), so the ERP
//! posts the journal once. On Postgres the claim uses `FOR UPDATE SKIP LOCKED`, so several
//! dispatchers share the outbox; SQLite has one writer anyway.
//!
//! Requests carry `Authorization: Bearer <secret>`, read through the row's [`SecretRef`] at
//! send time (so rotation needs no restart). The secret is never logged, never stored, and is
//! redacted from response excerpts. Each tenant is limited to its `rate_limit_per_sec` by a
//! token bucket (burst = the rate) held by the [`Dispatcher`] and shared by its clones: the
//! limit is per process, so N dispatcher processes may reach N times the rate.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ledgerflow_outbox::{
    Backlog, Backoff, RateLimiter, RetryAfter, SHUTDOWN_GRACE, Stopped, error_chain, excerpt,
    micros,
};
use ledgerflow_store::Backend;
use ledgerflow_tenants::{ErpKind, SecretRef};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde::Serialize;
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use crate::ErpError;
use crate::payloads::default_path;
use crate::write::now_micros;

/// URL path appended to a tenant's endpoint, per ERP kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErpPaths {
    /// NetSuite.
    pub netsuite: String,
    /// Dynamics 365.
    pub dynamics365: String,
    /// S/4HANA.
    pub s4hana: String,
    /// Oracle Fusion.
    pub oracle_fusion: String,
}

impl Default for ErpPaths {
    fn default() -> Self {
        Self {
            netsuite: default_path(ErpKind::Netsuite).to_owned(),
            dynamics365: default_path(ErpKind::Dynamics365).to_owned(),
            s4hana: default_path(ErpKind::S4hana).to_owned(),
            oracle_fusion: default_path(ErpKind::OracleFusion).to_owned(),
        }
    }
}

impl ErpPaths {
    /// The path for a kind.
    pub fn for_kind(&self, kind: ErpKind) -> &str {
        match kind {
            ErpKind::Netsuite => &self.netsuite,
            ErpKind::Dynamics365 => &self.dynamics365,
            ErpKind::S4hana => &self.s4hana,
            ErpKind::OracleFusion => &self.oracle_fusion,
        }
    }
}

/// Dispatcher settings. [`Default`] gives production values.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Rows claimed per round (default 100).
    pub batch_size: u32,
    /// Requests in flight at once (default 8).
    pub concurrency: usize,
    /// Per-request timeout, connect included (default 10 s).
    pub request_timeout: Duration,
    /// Attempts before a retryable failure becomes `failed` (default 10).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt (default 1 s).
    pub backoff_base: Duration,
    /// Longest retry delay (default 5 min).
    pub backoff_max: Duration,
    /// How long a claim is exclusive; must exceed `request_timeout` (default 60 s).
    pub lease: Duration,
    /// Sleep between rounds when nothing is due (default 1 s).
    pub poll_interval: Duration,
    /// [`run_dispatcher`] returns once no row is pending (`--exit-when-idle`).
    pub exit_when_idle: bool,
    /// Per-kind URL paths.
    pub paths: ErpPaths,
    /// When set, credentials named by environment variable are looked up here instead of the
    /// process environment (tests, or a caller holding an explicit environment map).
    pub env: Option<BTreeMap<String, String>>,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            concurrency: 8,
            request_timeout: Duration::from_secs(10),
            max_attempts: 10,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            exit_when_idle: false,
            paths: ErpPaths::default(),
            env: None,
        }
    }
}

impl DispatcherConfig {
    fn validate(&self) -> Result<(), ErpError> {
        if self.batch_size == 0 || self.concurrency == 0 || self.max_attempts == 0 {
            return Err(ErpError::Config(
                "batch_size, concurrency and max_attempts must be at least 1".into(),
            ));
        }
        ledgerflow_outbox::check_lease(self.lease, self.request_timeout).map_err(ErpError::Config)
    }

    /// The retry schedule: a server's `Retry-After` is honoured in full (the ERP knows its own
    /// quota window).
    fn backoff(&self) -> Backoff {
        Backoff {
            base: self.backoff_base,
            max: self.backoff_max,
            retry_after: RetryAfter::Uncapped,
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DispatchStats {
    /// Rows claimed.
    pub claimed: u64,
    /// Delivered (2xx).
    pub acked: u64,
    /// Scheduled for another attempt.
    pub retried: u64,
    /// Parked as failed.
    pub failed: u64,
    /// Outcomes dropped because the lease had passed to another dispatcher.
    pub lease_lost: u64,
}

impl DispatchStats {
    fn add(&mut self, outcome: Recorded) {
        match outcome {
            Recorded::Acked => self.acked += 1,
            Recorded::Retried => self.retried += 1,
            Recorded::Failed => self.failed += 1,
            Recorded::LeaseLost => self.lease_lost += 1,
        }
    }
}

/// Outbox rows still to deliver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PendingSummary {
    /// Rows with status `pending`.
    pub pending: u64,
    /// Earliest `next_attempt_at` among them (micros).
    pub next_due_at: Option<i64>,
}

/// One claimed row.
#[derive(Debug)]
struct Claimed {
    id: String,
    tenant_id: String,
    kind: ErpKind,
    endpoint: String,
    credential: String,
    rate_limit: Option<u32>,
    idempotency_key: String,
    payload: String,
    attempts: u32,
}

/// The result of one request, before it is recorded.
#[derive(Debug)]
enum Delivery {
    Acked {
        status: u16,
        external_ref: Option<String>,
    },
    Retry {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
    Reject {
        status: Option<u16>,
        error: String,
    },
}

#[derive(Debug, Clone, Copy)]
enum Recorded {
    Acked,
    Retried,
    Failed,
    LeaseLost,
}

#[derive(Debug)]
struct Inner {
    pool: AnyPool,
    backend: Backend,
    cfg: DispatcherConfig,
    client: reqwest::Client,
    limiter: RateLimiter,
}

/// A dispatcher: an HTTP client, the rate limiter state and the pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl Dispatcher {
    /// Builds a dispatcher; fails on an invalid configuration.
    pub fn new(pool: AnyPool, backend: Backend, cfg: DispatcherConfig) -> Result<Self, ErpError> {
        cfg.validate()?;
        let client = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ledgerflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ErpError::HttpClient)?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                backend,
                cfg,
                client,
                limiter: RateLimiter::default(),
            }),
        })
    }

    /// Claims due rows, delivers them, records the outcomes.
    pub async fn dispatch_once(&self) -> Result<DispatchStats, ErpError> {
        let token = Uuid::new_v4().to_string();
        let claimed = self.claim(&token).await?;
        let mut stats = DispatchStats {
            claimed: claimed.len() as u64,
            ..DispatchStats::default()
        };
        if claimed.is_empty() {
            return Ok(stats);
        }
        ledgerflow_outbox::deliver_bounded(
            claimed,
            self.inner.cfg.concurrency,
            |row| {
                let this = self.clone();
                let token = token.clone();
                async move {
                    let rate = row.rate_limit;
                    this.inner.limiter.acquire(&row.tenant_id, rate).await;
                    let delivery = this.deliver(&row).await;
                    this.record(&row, &token, delivery).await
                }
            },
            |outcome| stats.add(outcome),
            |join| ErpError::Corrupt(format!("delivery task ended abnormally: {join}")),
        )
        .await?;
        Ok(stats)
    }

    /// Pending rows and the earliest due time.
    pub async fn pending(&self) -> Result<PendingSummary, ErpError> {
        let row = sqlx::query(
            "SELECT COUNT(*), MIN(next_attempt_at) FROM erp_outbox WHERE status = 'pending'",
        )
        .fetch_one(&self.inner.pool)
        .await
        .map_err(ErpError::db("counting pending erp deliveries"))?;
        let pending: i64 = row
            .try_get(0)
            .map_err(ErpError::db("decoding the pending count"))?;
        let next: Option<i64> = row
            .try_get(1)
            .map_err(ErpError::db("decoding the next due time"))?;
        Ok(PendingSummary {
            pending: u64::try_from(pending).unwrap_or(0),
            next_due_at: next,
        })
    }

    /// Runs rounds until `shutdown` resolves (or, with `exit_when_idle`, until nothing is
    /// pending). On shutdown, requests in flight get a 5 s grace to finish; the rest are retried
    /// after their lease by the next dispatcher. Database errors are logged and
    /// retried after `poll_interval`.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ErpError> {
        let round = || async {
            match self.dispatch_once().await {
                Ok(stats) => {
                    if stats.claimed > 0 {
                        tracing::debug!(?stats, "erp dispatch round");
                    }
                    stats.claimed
                }
                Err(e) => {
                    tracing::warn!(error = %e, "erp dispatch round failed; retrying");
                    0
                }
            }
        };
        let backlog = || async {
            match self.pending().await {
                Ok(summary) => Some(Backlog {
                    pending: summary.pending,
                    next_due_at: summary.next_due_at,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the erp outbox");
                    None
                }
            }
        };
        let cfg = &self.inner.cfg;
        let stopped = ledgerflow_outbox::run_rounds(
            round,
            backlog,
            cfg.poll_interval,
            cfg.exit_when_idle,
            shutdown,
        )
        .await;
        if stopped == Stopped::Abandoned {
            // Unanswered rows are claimed again after their lease, under the same idempotency key.
            tracing::warn!(
                grace = ?SHUTDOWN_GRACE,
                "erp deliveries still in flight at shutdown are abandoned; they are retried after their lease"
            );
        }
        Ok(())
    }

    async fn claim(&self, token: &str) -> Result<Vec<Claimed>, ErpError> {
        let inner = &self.inner;
        let now = now_micros();
        let lease_until = now + micros(inner.cfg.lease);
        let lock = match inner.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE erp_outbox SET next_attempt_at = $1, claim_token = $2
             WHERE id IN (SELECT id FROM erp_outbox
                          WHERE status = 'pending' AND next_attempt_at <= $3
                          ORDER BY next_attempt_at, id LIMIT $4 {lock})
             RETURNING id, tenant_id, erp_kind, endpoint, credential, rate_limit_per_sec,
                       idempotency_key, payload, attempts"
        );
        let rows = sqlx::query(&sql)
            .bind(lease_until)
            .bind(token.to_owned())
            .bind(now)
            .bind(i64::from(inner.cfg.batch_size))
            .fetch_all(&inner.pool)
            .await
            .map_err(ErpError::db("claiming erp deliveries"))?;
        let decode = |e: sqlx::Error| ErpError::Corrupt(format!("erp_outbox row: {e}"));
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let kind: String = row.try_get(2).map_err(decode)?;
            let kind = parse_kind(&kind)
                .ok_or_else(|| ErpError::Corrupt(format!("unknown erp kind {kind:?}")))?;
            let rate: Option<i64> = row.try_get(5).map_err(decode)?;
            let attempts: i64 = row.try_get(8).map_err(decode)?;
            claimed.push(Claimed {
                id: row.try_get(0).map_err(decode)?,
                tenant_id: row.try_get(1).map_err(decode)?,
                kind,
                endpoint: row.try_get(3).map_err(decode)?,
                credential: row.try_get(4).map_err(decode)?,
                rate_limit: ledgerflow_outbox::rate_per_sec(rate),
                idempotency_key: row.try_get(6).map_err(decode)?,
                payload: row.try_get(7).map_err(decode)?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            });
        }
        Ok(claimed)
    }

    fn read_credential(&self, credential: &str) -> Result<String, String> {
        let secret: SecretRef = serde_json::from_str(credential)
            .map_err(|e| format!("stored credential reference is not valid: {e}"))?;
        let env = self.inner.cfg.env.as_ref();
        ledgerflow_tenants::read_secret_with_env(&secret, |name| match env {
            Some(map) => map.get(name).map(OsString::from),
            None => std::env::var_os(name),
        })
        .map_err(|e| e.to_string())
    }

    async fn deliver(&self, row: &Claimed) -> Delivery {
        let token = match self.read_credential(&row.credential) {
            Ok(token) => token,
            Err(error) => {
                return Delivery::Retry {
                    status: None,
                    error: format!("credential unavailable: {error}"),
                    retry_after: None,
                };
            }
        };
        let url = format!(
            "{}{}",
            row.endpoint.trim_end_matches('/'),
            self.inner.cfg.paths.for_kind(row.kind)
        );
        let response = self
            .inner
            .client
            .post(&url)
            .header("Idempotency-Key", &row.idempotency_key)
            .bearer_auth(&token)
            .header(CONTENT_TYPE, "application/json")
            .body(row.payload.clone())
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                return Delivery::Retry {
                    status: None,
                    error: redact(&format!("{kind}: {}", error_chain(&e)), &token),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match response.text().await {
            Ok(body) => body,
            Err(e) if status.is_success() => {
                // The ERP accepted the request; a broken body only loses the external ref.
                tracing::debug!(error = %e, "erp response body unreadable");
                String::new()
            }
            Err(e) => {
                return Delivery::Retry {
                    status: Some(status.as_u16()),
                    error: redact(
                        &format!("reading the response: {}", error_chain(&e)),
                        &token,
                    ),
                    retry_after,
                };
            }
        };
        classify(status, &body, retry_after, &token)
    }

    async fn record(
        &self,
        row: &Claimed,
        token: &str,
        delivery: Delivery,
    ) -> Result<Recorded, ErpError> {
        let inner = &self.inner;
        let now = now_micros();
        let attempts = i64::from(row.attempts) + 1;
        let (outcome, query) = match delivery {
            Delivery::Acked {
                status,
                external_ref,
            } => {
                tracing::info!(
                    outbox_id = %row.id, tenant = %row.tenant_id, erp = row.kind.as_str(),
                    status, attempts, "erp delivery acknowledged"
                );
                (
                    Recorded::Acked,
                    sqlx::query(
                        "UPDATE erp_outbox SET status = 'acked', attempts = $1, acked_at = $2,
                            last_status = $3, last_error = NULL, external_ref = $4,
                            claim_token = NULL
                         WHERE id = $5 AND claim_token = $6 AND status = 'pending'",
                    )
                    .bind(attempts)
                    .bind(now)
                    .bind(i64::from(status))
                    .bind(external_ref),
                )
            }
            Delivery::Retry {
                status,
                error,
                retry_after,
            } if attempts < i64::from(inner.cfg.max_attempts) => {
                let delay = inner
                    .cfg
                    .backoff()
                    .delay_after(row.attempts + 1, retry_after);
                tracing::warn!(
                    outbox_id = %row.id, tenant = %row.tenant_id, erp = row.kind.as_str(),
                    status, attempts, retry_in_ms = delay.as_millis() as u64, error = %error,
                    "erp delivery failed; will retry"
                );
                let next = now + micros(delay);
                (
                    Recorded::Retried,
                    sqlx::query(
                        "UPDATE erp_outbox SET attempts = $1, next_attempt_at = $2,
                            last_status = $3, last_error = $4, claim_token = NULL
                         WHERE id = $5 AND claim_token = $6 AND status = 'pending'",
                    )
                    .bind(attempts)
                    .bind(next)
                    .bind(status.map(i64::from))
                    .bind(error),
                )
            }
            Delivery::Retry { status, error, .. } | Delivery::Reject { status, error } => {
                tracing::error!(
                    outbox_id = %row.id, tenant = %row.tenant_id, erp = row.kind.as_str(),
                    status, attempts, error = %error,
                    "erp delivery failed permanently; parked for an operator"
                );
                (
                    Recorded::Failed,
                    sqlx::query(
                        "UPDATE erp_outbox SET status = 'failed', attempts = $1,
                            last_status = $2, last_error = $3, claim_token = NULL,
                            next_attempt_at = $4
                         WHERE id = $5 AND claim_token = $6 AND status = 'pending'",
                    )
                    .bind(attempts)
                    .bind(status.map(i64::from))
                    .bind(error)
                    .bind(now),
                )
            }
        };
        let result = query
            .bind(row.id.clone())
            .bind(token.to_owned())
            .execute(&inner.pool)
            .await
            .map_err(ErpError::db("recording an erp delivery"))?;
        if result.rows_affected() == 0 {
            tracing::warn!(outbox_id = %row.id, "erp delivery lease was lost; outcome dropped");
            return Ok(Recorded::LeaseLost);
        }
        Ok(outcome)
    }
}

fn parse_kind(name: &str) -> Option<ErpKind> {
    [
        ErpKind::Netsuite,
        ErpKind::Dynamics365,
        ErpKind::S4hana,
        ErpKind::OracleFusion,
    ]
    .into_iter()
    .find(|k| k.as_str() == name)
}

/// Maps a response to an outcome.
fn classify(
    status: StatusCode,
    body: &str,
    retry_after: Option<Duration>,
    token: &str,
) -> Delivery {
    let code = status.as_u16();
    if status.is_success() {
        let external_ref = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| match v.get("id") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            });
        return Delivery::Acked {
            status: code,
            external_ref,
        };
    }
    let error = redact(&format!("http {code}: {}", excerpt(body)), token);
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Delivery::Retry {
            status: Some(code),
            error,
            retry_after,
        }
    } else {
        Delivery::Reject {
            status: Some(code),
            error,
        }
    }
}

/// Removes the secret from text that may echo it (a response body, an error message).
fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    text.replace(secret, "***")
}

/// Builds a [`Dispatcher`] and runs it until `shutdown` resolves (or until idle, see
/// [`DispatcherConfig::exit_when_idle`]).
pub async fn run_dispatcher(
    pool: AnyPool,
    backend: Backend,
    cfg: DispatcherConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ErpError> {
    Dispatcher::new(pool, backend, cfg)?.run(shutdown).await
}

/// One round with a fresh dispatcher (tests, one-shot tools). Long-lived callers should keep
/// a [`Dispatcher`] so rate limits hold across rounds.
pub async fn dispatch_once(
    pool: AnyPool,
    backend: Backend,
    cfg: DispatcherConfig,
) -> Result<DispatchStats, ErpError> {
    Dispatcher::new(pool, backend, cfg)?.dispatch_once().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_classified() {
        let ok = classify(StatusCode::CREATED, r#"{"id": 42}"#, None, "t");
        assert!(matches!(ok, Delivery::Acked { external_ref: Some(r), .. } if r == "42"));
        let ok = classify(StatusCode::OK, "not json", None, "t");
        assert!(matches!(
            ok,
            Delivery::Acked {
                external_ref: None,
                ..
            }
        ));
        for code in [429, 500, 502, 503, 504] {
            let d = classify(StatusCode::from_u16(code).unwrap(), "busy", None, "t");
            assert!(matches!(d, Delivery::Retry { .. }), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 301] {
            let d = classify(StatusCode::from_u16(code).unwrap(), "no", None, "t");
            assert!(matches!(d, Delivery::Reject { .. }), "{code}");
        }
    }

    #[test]
    fn rejections_carry_an_excerpt_without_the_secret() {
        let body = format!("bad account; you sent Bearer s3cr3t {}", "x".repeat(2000));
        let Delivery::Reject { status, error } =
            classify(StatusCode::BAD_REQUEST, &body, None, "s3cr3t")
        else {
            panic!("not rejected")
        };
        assert_eq!(status, Some(400));
        assert!(error.starts_with("http 400: bad account"), "{error}");
        assert!(!error.contains("s3cr3t"));
        assert!(error.len() < 600);
    }

    #[test]
    fn retry_after_is_honoured_beyond_the_longest_backoff() {
        let cfg = DispatcherConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..DispatcherConfig::default()
        };
        let delay = cfg.backoff().delay_after(1, Some(Duration::from_secs(30)));
        assert_eq!(delay, Duration::from_secs(30));
    }

    #[test]
    fn configuration_is_validated() {
        let bad = DispatcherConfig {
            lease: Duration::from_secs(1),
            ..DispatcherConfig::default()
        };
        assert!(bad.validate().is_err());
        assert!(DispatcherConfig::default().validate().is_ok());
    }
}
