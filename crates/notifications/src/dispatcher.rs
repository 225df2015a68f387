//! The webhook dispatcher: delivers each pending `notification_outbox` row to its endpoint.
//!
//! A round ([`Dispatcher::dispatch_once`]) claims up to `batch_size` due rows, sends them with
//! at most `concurrency` requests in flight, and records each outcome:
//!
//! | response | outcome | breaker |
//! | --- | --- | --- |
//! | 2xx | `delivered` | success |
//! | 408, 429, 5xx, 3xx (redirects are not followed), timeout, connection error | retried after exponential backoff with jitter (at least `Retry-After`), `failed` after `max_attempts` | failure |
//! | any other 4xx | `failed` at once with the status and a body excerpt, for an operator | success (the endpoint answered) |
//! | unreadable or malformed signing secret | retried like a 5xx (an operator can fix the file) | untouched |
//! | breaker open | rescheduled for the end of the cool-down; no request, no attempt spent | — |
//!
//! Every request carries the Standard Webhooks headers: `webhook-id` (the row's stable id),
//! `webhook-timestamp` (unix seconds, fresh per attempt) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256>` over `{id}.{timestamp}.{body}`, fresh per attempt). The body is
//! the stored one, byte for byte, on every attempt. The secret is read through the row's
//! [`SecretRef`] at send time (rotation needs no restart), and is never logged or stored.
//!
//! Claiming is a lease, not a held transaction: the claim pushes `next_attempt_at` to
//! `now + lease` and stamps a claim token, and outcomes only land with the same token. A
//! dispatcher that dies mid-request leaves the row to be claimed again when the lease runs
//! out, with the same webhook-id, so a receiver that dedups by webhook-id applies it once. On
//! Postgres the claim uses `FOR UPDATE SKIP LOCKED`, so several dispatchers share the outbox.
//!
//! Each attempt appends a row to `notification_deliveries` (webhook-id, attempt number,
//! status or error, latency) in the same transaction as the outcome. Each tenant is limited to
//! its `rate_limit_per_sec` by a token bucket (burst = the rate); the circuit breakers and the
//! buckets are held by the [`Dispatcher`] and shared by its clones (per process).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerflow_outbox::{
    Backlog, Backoff, RateLimiter, RetryAfter, SHUTDOWN_GRACE, Stopped, error_chain, excerpt,
    jitter, micros, now_micros,
};
use ledgerflow_store::Backend;
use ledgerflow_tenants::SecretRef;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde::Serialize;
use sqlx::{AnyPool, Connection, Row};
use uuid::Uuid;

use crate::NotificationError;
use crate::breaker::{Admission, BreakerConfig, CircuitBreaker};
use crate::signature::{WebhookSecret, sign};

/// Dispatcher settings. [`Default`] gives production values.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Rows claimed per round (default 100).
    pub batch_size: u32,
    /// Requests in flight at once (default 8).
    pub concurrency: usize,
    /// Per-request timeout, connect included (default 10 s).
    pub request_timeout: Duration,
    /// Attempts before a retryable failure becomes `failed` (default 8).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt (default 1 s).
    pub backoff_base: Duration,
    /// Longest retry delay (default 10 min).
    pub backoff_max: Duration,
    /// How long a claim is exclusive; must exceed `request_timeout` (default 60 s).
    pub lease: Duration,
    /// Sleep between rounds when nothing is due (default 1 s).
    pub poll_interval: Duration,
    /// Circuit breaker per endpoint.
    pub breaker: BreakerConfig,
    /// [`run_dispatcher`] returns once no row is pending (`--exit-when-idle`).
    pub exit_when_idle: bool,
    /// When set, secrets named by environment variable are looked up here instead of the
    /// process environment (tests, or a caller holding an explicit environment map).
    pub env: Option<BTreeMap<String, String>>,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            concurrency: 8,
            request_timeout: Duration::from_secs(10),
            max_attempts: 8,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            breaker: BreakerConfig::default(),
            exit_when_idle: false,
            env: None,
        }
    }
}

impl DispatcherConfig {
    /// Applies the tuning variables found by `lookup` (pass `|k| std::env::var(k).ok()` for
    /// the process environment): `LEDGERFLOW_WEBHOOK_BACKOFF_BASE_MS`,
    /// `LEDGERFLOW_WEBHOOK_POLL_MS`, `LEDGERFLOW_WEBHOOK_MAX_ATTEMPTS`,
    /// `LEDGERFLOW_WEBHOOK_TIMEOUT_MS`, `LEDGERFLOW_WEBHOOK_BREAKER_THRESHOLD` and
    /// `LEDGERFLOW_WEBHOOK_BREAKER_COOLDOWN_MS`. Unparsable values are ignored with a warning.
    pub fn with_env_overrides(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let number = |name: &str| {
            let raw = lookup(name)?;
            match raw.trim().parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    tracing::warn!(variable = name, value = %raw, "not a number; ignored");
                    None
                }
            }
        };
        let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        if let Some(ms) = number("LEDGERFLOW_WEBHOOK_BACKOFF_BASE_MS") {
            self.backoff_base = Duration::from_millis(ms);
        }
        if let Some(ms) = number("LEDGERFLOW_WEBHOOK_POLL_MS") {
            self.poll_interval = Duration::from_millis(ms);
        }
        if let Some(n) = number("LEDGERFLOW_WEBHOOK_MAX_ATTEMPTS") {
            self.max_attempts = count(n);
        }
        if let Some(ms) = number("LEDGERFLOW_WEBHOOK_TIMEOUT_MS") {
            self.request_timeout = Duration::from_millis(ms);
            self.lease = self.lease.max(self.request_timeout * 2);
        }
        if let Some(n) = number("LEDGERFLOW_WEBHOOK_BREAKER_THRESHOLD") {
            self.breaker.failure_threshold = count(n);
        }
        if let Some(ms) = number("LEDGERFLOW_WEBHOOK_BREAKER_COOLDOWN_MS") {
            self.breaker.cool_down = Duration::from_millis(ms);
        }
        self
    }

    fn validate(&self) -> Result<(), NotificationError> {
        if self.batch_size == 0
            || self.concurrency == 0
            || self.max_attempts == 0
            || self.breaker.failure_threshold == 0
        {
            return Err(NotificationError::Config(
                "batch_size, concurrency, max_attempts and the breaker threshold must be at least 1"
                    .into(),
            ));
        }
        ledgerflow_outbox::check_lease(self.lease, self.request_timeout)
            .map_err(NotificationError::Config)
    }

    /// The retry schedule: a receiver's `Retry-After` is honoured up to `backoff_max`, so it
    /// cannot park a row for longer than the longest backoff.
    fn backoff(&self) -> Backoff {
        Backoff {
            base: self.backoff_base,
            max: self.backoff_max,
            retry_after: RetryAfter::CappedAtMax,
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DispatchStats {
    /// Rows claimed.
    pub claimed: u64,
    /// Delivered (2xx).
    pub delivered: u64,
    /// Scheduled for another attempt after a failed one.
    pub retried: u64,
    /// Parked as failed.
    pub failed: u64,
    /// Rescheduled without a request because the endpoint's breaker is open.
    pub deferred: u64,
    /// Outcomes dropped because the lease had passed to another dispatcher.
    pub lease_lost: u64,
}

impl DispatchStats {
    fn add(&mut self, outcome: Recorded) {
        match outcome {
            Recorded::Delivered => self.delivered += 1,
            Recorded::Retried => self.retried += 1,
            Recorded::Failed => self.failed += 1,
            Recorded::Deferred => self.deferred += 1,
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
    webhook_id: String,
    tenant_id: String,
    endpoint_id: String,
    url: String,
    secret_ref: String,
    rate_limit: Option<u32>,
    body: String,
    attempts: u32,
    requeued_attempts: u32,
}

impl Claimed {
    fn breaker_key(&self) -> String {
        format!("{}/{}", self.tenant_id, self.endpoint_id)
    }
}

/// The result of one attempt, before it is recorded.
#[derive(Debug)]
enum Delivery {
    Delivered {
        status: u16,
    },
    Retry {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
        /// Whether the endpoint is to blame (feeds the breaker).
        endpoint_fault: bool,
    },
    Reject {
        status: u16,
        error: String,
    },
}

#[derive(Debug, Clone, Copy)]
enum Recorded {
    Delivered,
    Retried,
    Failed,
    Deferred,
    LeaseLost,
}

#[derive(Debug)]
struct Inner {
    pool: AnyPool,
    backend: Backend,
    cfg: DispatcherConfig,
    client: reqwest::Client,
    limiter: RateLimiter,
    breaker: CircuitBreaker,
}

/// A dispatcher: an HTTP client, breaker and rate limiter state, and the pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl Dispatcher {
    /// Builds a dispatcher; fails on an invalid configuration.
    pub fn new(
        pool: AnyPool,
        backend: Backend,
        cfg: DispatcherConfig,
    ) -> Result<Self, NotificationError> {
        cfg.validate()?;
        let client = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ledgerflow-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(NotificationError::HttpClient)?;
        let breaker = CircuitBreaker::new(cfg.breaker);
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                backend,
                cfg,
                client,
                limiter: RateLimiter::default(),
                breaker,
            }),
        })
    }

    /// The endpoint breakers (for inspection).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.inner.breaker
    }

    /// Claims due rows, delivers them, records the outcomes.
    pub async fn dispatch_once(&self) -> Result<DispatchStats, NotificationError> {
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
                async move { this.process(row, &token).await }
            },
            |outcome| stats.add(outcome),
            |join| NotificationError::Corrupt(format!("delivery task ended abnormally: {join}")),
        )
        .await?;
        Ok(stats)
    }

    /// One claimed row: breaker, rate limit, attempt, record.
    async fn process(&self, row: Claimed, token: &str) -> Result<Recorded, NotificationError> {
        let inner = &self.inner;
        let key = row.breaker_key();
        if let Admission::Wait(wait) = inner.breaker.admit(&key, Instant::now()) {
            return self.defer(&row, token, wait).await;
        }
        // Over its rate the row goes back to the outbox until a slot is free: nothing sleeps
        // while holding a claim, so other tenants' rows keep flowing and no lease runs out.
        if let Err(wait) = inner.limiter.try_acquire(&row.tenant_id, row.rate_limit) {
            return self.defer(&row, token, wait).await;
        }
        let started = Instant::now();
        let delivery = self.deliver(&row).await;
        let latency = started.elapsed();
        match &delivery {
            Delivery::Delivered { .. } | Delivery::Reject { .. } => {
                inner.breaker.record_success(&key);
            }
            Delivery::Retry {
                endpoint_fault: true,
                ..
            } => inner.breaker.record_failure(&key, Instant::now()),
            Delivery::Retry { .. } => {}
        }
        self.record(&row, token, delivery, latency).await
    }

    /// Pending rows and the earliest due time.
    pub async fn pending(&self) -> Result<PendingSummary, NotificationError> {
        let row = sqlx::query(
            "SELECT COUNT(*), MIN(next_attempt_at) FROM notification_outbox \
             WHERE status = 'pending'",
        )
        .fetch_one(&self.inner.pool)
        .await
        .map_err(NotificationError::db("counting pending notifications"))?;
        let pending: i64 = row
            .try_get(0)
            .map_err(NotificationError::db("decoding the pending count"))?;
        let next: Option<i64> = row
            .try_get(1)
            .map_err(NotificationError::db("decoding the next due time"))?;
        Ok(PendingSummary {
            pending: u64::try_from(pending).unwrap_or(0),
            next_due_at: next,
        })
    }

    /// Runs rounds until `shutdown` resolves (or, with `exit_when_idle`, until nothing is
    /// pending). On shutdown, requests in flight get a 5 s grace to finish; the rest are retried
    /// after their lease by the next dispatcher. Database errors are logged and
    /// retried after `poll_interval`.
    pub async fn run(
        &self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), NotificationError> {
        self.run_loop(shutdown, self.inner.cfg.exit_when_idle).await;
        Ok(())
    }

    /// Delivers until nothing is pending or `deadline` passes; returns whether the outbox was
    /// drained. Used on the way out of an `--exit-when-idle` run.
    pub async fn drain(&self, deadline: Duration) -> bool {
        tokio::time::timeout(deadline, self.run_loop(std::future::pending(), true))
            .await
            .is_ok()
    }

    async fn run_loop(&self, shutdown: impl Future<Output = ()> + Send, exit_when_idle: bool) {
        let round = || async {
            match self.dispatch_once().await {
                Ok(stats) => {
                    if stats.claimed > 0 {
                        tracing::debug!(?stats, "webhook dispatch round");
                    }
                    stats.claimed
                }
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "webhook dispatch round failed; retrying");
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
                    tracing::warn!(error = %error_chain(&e), "cannot read the notification outbox");
                    None
                }
            }
        };
        let stopped = ledgerflow_outbox::run_rounds(
            round,
            backlog,
            self.inner.cfg.poll_interval,
            exit_when_idle,
            shutdown,
        )
        .await;
        if stopped == Stopped::Abandoned {
            // Unanswered rows are claimed again after their lease, with the same webhook-id.
            tracing::warn!(
                grace = ?SHUTDOWN_GRACE,
                "webhook deliveries still in flight at shutdown are abandoned; they are retried after their lease"
            );
        }
    }

    async fn claim(&self, token: &str) -> Result<Vec<Claimed>, NotificationError> {
        let inner = &self.inner;
        let now = now_micros();
        let lease_until = now + micros(inner.cfg.lease);
        let lock = match inner.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE notification_outbox SET next_attempt_at = $1, claim_token = $2
             WHERE webhook_id IN (SELECT webhook_id FROM notification_outbox
                          WHERE status = 'pending' AND next_attempt_at <= $3
                          ORDER BY next_attempt_at, webhook_id LIMIT $4 {lock})
             RETURNING webhook_id, tenant_id, endpoint_id, url, secret_ref, rate_limit_per_sec,
                       body, attempts, requeued_attempts"
        );
        let rows = sqlx::query(&sql)
            .bind(lease_until)
            .bind(token.to_owned())
            .bind(now)
            .bind(i64::from(inner.cfg.batch_size))
            .fetch_all(&inner.pool)
            .await
            .map_err(NotificationError::db("claiming notifications"))?;
        let decode =
            |e: sqlx::Error| NotificationError::Corrupt(format!("notification_outbox row: {e}"));
        let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let rate: Option<i64> = row.try_get(5).map_err(decode)?;
            claimed.push(Claimed {
                webhook_id: row.try_get(0).map_err(decode)?,
                tenant_id: row.try_get(1).map_err(decode)?,
                endpoint_id: row.try_get(2).map_err(decode)?,
                url: row.try_get(3).map_err(decode)?,
                secret_ref: row.try_get(4).map_err(decode)?,
                rate_limit: ledgerflow_outbox::rate_per_sec(rate),
                body: row.try_get(6).map_err(decode)?,
                attempts: count(row.try_get(7).map_err(decode)?),
                requeued_attempts: count(row.try_get(8).map_err(decode)?),
            });
        }
        Ok(claimed)
    }

    /// Reads and parses the signing secret; the error names the reference, never the value.
    fn read_secret(&self, secret_ref: &str) -> Result<WebhookSecret, String> {
        let secret: SecretRef = serde_json::from_str(secret_ref)
            .map_err(|e| format!("stored secret reference is not valid: {e}"))?;
        let env = self.inner.cfg.env.as_ref();
        let raw = ledgerflow_tenants::read_secret_with_env(&secret, |name| match env {
            Some(map) => map.get(name).map(OsString::from),
            None => std::env::var_os(name),
        })
        .map_err(|e| error_chain(&e))?;
        WebhookSecret::parse(&raw).map_err(|e| e.to_string())
    }

    async fn deliver(&self, row: &Claimed) -> Delivery {
        let secret = match self.read_secret(&row.secret_ref) {
            Ok(secret) => secret,
            Err(error) => {
                return Delivery::Retry {
                    status: None,
                    error: format!("signing secret unavailable: {error}"),
                    retry_after: None,
                    endpoint_fault: false,
                };
            }
        };
        let timestamp = now_micros() / 1_000_000;
        let signature = sign(&secret, &row.webhook_id, timestamp, row.body.as_bytes());
        let response = self
            .inner
            .client
            .post(&row.url)
            .header("webhook-id", &row.webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header(CONTENT_TYPE, "application/json")
            .body(row.body.clone())
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
                    error: format!("{kind}: {}", error_chain(&e)),
                    retry_after: None,
                    endpoint_fault: true,
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
        // The body only feeds the error excerpt; a broken one is no reason to retry a 2xx.
        let body = response.text().await.unwrap_or_default();
        classify(status, &body, retry_after)
    }

    /// Reschedules a row whose endpoint's breaker is open, without spending an attempt.
    async fn defer(
        &self,
        row: &Claimed,
        token: &str,
        wait: Duration,
    ) -> Result<Recorded, NotificationError> {
        let now = now_micros();
        // Spread the endpoint's rows a little so the probe after the cool-down is not followed
        // by the whole backlog in the same millisecond.
        let jitter = jitter(wait / 10);
        let result = sqlx::query(
            "UPDATE notification_outbox SET next_attempt_at = $1, claim_token = NULL,
                updated_at = $2
             WHERE webhook_id = $3 AND claim_token = $4 AND status = 'pending'",
        )
        .bind(now + micros(wait + jitter))
        .bind(now)
        .bind(row.webhook_id.clone())
        .bind(token.to_owned())
        .execute(&self.inner.pool)
        .await
        .map_err(NotificationError::db("deferring a notification"))?;
        tracing::debug!(
            webhook_id = %row.webhook_id, tenant = %row.tenant_id, endpoint = %row.endpoint_id,
            wait_ms = wait.as_millis() as u64, "delivery deferred (endpoint breaker open or tenant rate limit)"
        );
        Ok(if result.rows_affected() == 0 {
            Recorded::LeaseLost
        } else {
            Recorded::Deferred
        })
    }

    async fn record(
        &self,
        row: &Claimed,
        token: &str,
        delivery: Delivery,
        latency: Duration,
    ) -> Result<Recorded, NotificationError> {
        let inner = &self.inner;
        let now = now_micros();
        let attempt = i64::from(row.attempts) + 1;
        let spent = attempt - i64::from(row.requeued_attempts);
        let (log_status, log_error) = match &delivery {
            Delivery::Delivered { status } => (Some(i64::from(*status)), None),
            Delivery::Retry { status, error, .. } => (status.map(i64::from), Some(error.clone())),
            Delivery::Reject { status, error } => (Some(i64::from(*status)), Some(error.clone())),
        };
        let (outcome, update) = match delivery {
            Delivery::Delivered { status } => {
                tracing::info!(
                    webhook_id = %row.webhook_id, tenant = %row.tenant_id,
                    endpoint = %row.endpoint_id, status, attempt, "webhook delivered"
                );
                (
                    Recorded::Delivered,
                    sqlx::query(
                        "UPDATE notification_outbox SET status = 'delivered', attempts = $1,
                            delivered_at = $2, last_status = $3, last_error = NULL,
                            claim_token = NULL, updated_at = $2
                         WHERE webhook_id = $4 AND claim_token = $5 AND status = 'pending'",
                    )
                    .bind(attempt)
                    .bind(now)
                    .bind(i64::from(status)),
                )
            }
            Delivery::Retry {
                status,
                error,
                retry_after,
                ..
            } if spent < i64::from(inner.cfg.max_attempts) => {
                let spent = u32::try_from(spent).unwrap_or(u32::MAX);
                let delay = inner.cfg.backoff().delay_after(spent, retry_after);
                tracing::warn!(
                    webhook_id = %row.webhook_id, tenant = %row.tenant_id,
                    endpoint = %row.endpoint_id, status, attempt,
                    retry_in_ms = delay.as_millis() as u64, error = %error,
                    "webhook delivery failed; will retry"
                );
                (
                    Recorded::Retried,
                    sqlx::query(
                        "UPDATE notification_outbox SET attempts = $1, next_attempt_at = $2,
                            last_status = $3, last_error = $4, claim_token = NULL, updated_at = $5
                         WHERE webhook_id = $6 AND claim_token = $7 AND status = 'pending'",
                    )
                    .bind(attempt)
                    .bind(now + micros(delay))
                    .bind(status.map(i64::from))
                    .bind(error)
                    .bind(now),
                )
            }
            Delivery::Retry { status, error, .. } => {
                tracing::error!(
                    webhook_id = %row.webhook_id, tenant = %row.tenant_id,
                    endpoint = %row.endpoint_id, status, attempt, error = %error,
                    "webhook delivery failed {} times; parked for an operator", spent
                );
                park(attempt, status.map(i64::from), error, now)
            }
            Delivery::Reject { status, error } => {
                tracing::error!(
                    webhook_id = %row.webhook_id, tenant = %row.tenant_id,
                    endpoint = %row.endpoint_id, status, attempt, error = %error,
                    "webhook rejected by the endpoint; parked for an operator"
                );
                park(attempt, Some(i64::from(status)), error, now)
            }
        };
        let mut conn = inner
            .pool
            .acquire()
            .await
            .map_err(NotificationError::db("acquiring a connection"))?;
        let mut tx = conn
            .begin()
            .await
            .map_err(NotificationError::db("beginning a delivery record"))?;
        // The attempt happened whatever the lease says: log it first.
        sqlx::query(
            "INSERT INTO notification_deliveries (id, webhook_id, tenant_id, endpoint_id, attempt,
                status_code, error, latency_ms, attempted_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(row.webhook_id.clone())
        .bind(row.tenant_id.clone())
        .bind(row.endpoint_id.clone())
        .bind(attempt)
        .bind(log_status)
        .bind(log_error)
        .bind(i64::try_from(latency.as_millis()).unwrap_or(i64::MAX))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(NotificationError::db("logging a delivery attempt"))?;
        let result = update
            .bind(row.webhook_id.clone())
            .bind(token.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(NotificationError::db("recording a delivery outcome"))?;
        tx.commit()
            .await
            .map_err(NotificationError::db("committing a delivery record"))?;
        if result.rows_affected() == 0 {
            tracing::warn!(webhook_id = %row.webhook_id, "webhook lease was lost; outcome dropped");
            return Ok(Recorded::LeaseLost);
        }
        Ok(outcome)
    }
}

type Update = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>>;

fn park(attempt: i64, status: Option<i64>, error: String, now: i64) -> (Recorded, Update) {
    (
        Recorded::Failed,
        sqlx::query(
            "UPDATE notification_outbox SET status = 'failed', attempts = $1, last_status = $2,
                last_error = $3, claim_token = NULL, next_attempt_at = $4, updated_at = $4
             WHERE webhook_id = $5 AND claim_token = $6 AND status = 'pending'",
        )
        .bind(attempt)
        .bind(status)
        .bind(error)
        .bind(now),
    )
}

/// Maps a response to an outcome.
fn classify(status: StatusCode, body: &str, retry_after: Option<Duration>) -> Delivery {
    let code = status.as_u16();
    if status.is_success() {
        return Delivery::Delivered { status: code };
    }
    let error = format!("http {code}: {}", excerpt(body));
    if status.is_client_error()
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS
    {
        Delivery::Reject {
            status: code,
            error,
        }
    } else {
        Delivery::Retry {
            status: Some(code),
            error,
            retry_after,
            endpoint_fault: true,
        }
    }
}

/// Builds a [`Dispatcher`] and runs it until `shutdown` resolves (or until idle, see
/// [`DispatcherConfig::exit_when_idle`]).
pub async fn run_dispatcher(
    pool: AnyPool,
    backend: Backend,
    cfg: DispatcherConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NotificationError> {
    Dispatcher::new(pool, backend, cfg)?.run(shutdown).await
}

/// One round with a fresh dispatcher (tests, one-shot tools). Long-lived callers should keep
/// a [`Dispatcher`] so breakers and rate limits hold across rounds.
pub async fn dispatch_once(
    pool: AnyPool,
    backend: Backend,
    cfg: DispatcherConfig,
) -> Result<DispatchStats, NotificationError> {
    Dispatcher::new(pool, backend, cfg)?.dispatch_once().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_classified() {
        assert!(matches!(
            classify(StatusCode::NO_CONTENT, "", None),
            Delivery::Delivered { status: 204 }
        ));
        for code in [408, 429, 500, 502, 503, 504, 301, 307] {
            let d = classify(StatusCode::from_u16(code).unwrap(), "busy", None);
            assert!(
                matches!(
                    d,
                    Delivery::Retry {
                        endpoint_fault: true,
                        ..
                    }
                ),
                "{code}: {d:?}"
            );
        }
        for code in [400, 401, 403, 404, 409, 410, 413, 422] {
            let d = classify(StatusCode::from_u16(code).unwrap(), "no", None);
            assert!(matches!(d, Delivery::Reject { .. }), "{code}: {d:?}");
        }
        let Delivery::Reject { error, .. } =
            classify(StatusCode::BAD_REQUEST, &"x".repeat(5000), None)
        else {
            panic!("not rejected")
        };
        assert!(
            error.starts_with("http 400: xxx") && error.len() < 600,
            "{error}"
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_longest_backoff() {
        let cfg = DispatcherConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..DispatcherConfig::default()
        };
        let delay = cfg.backoff().delay_after(1, Some(Duration::from_secs(30)));
        assert_eq!(delay, Duration::from_secs(1));
    }

    #[test]
    fn configuration_is_validated_and_tuned_from_an_explicit_environment() {
        let bad = DispatcherConfig {
            lease: Duration::from_secs(1),
            ..DispatcherConfig::default()
        };
        assert!(bad.validate().is_err());
        assert!(DispatcherConfig::default().validate().is_ok());
        let env: BTreeMap<&str, &str> = [
            ("LEDGERFLOW_WEBHOOK_BACKOFF_BASE_MS", "20"),
            ("LEDGERFLOW_WEBHOOK_POLL_MS", "15"),
            ("LEDGERFLOW_WEBHOOK_MAX_ATTEMPTS", "3"),
            ("LEDGERFLOW_WEBHOOK_BREAKER_THRESHOLD", "2"),
            ("LEDGERFLOW_WEBHOOK_BREAKER_COOLDOWN_MS", "250"),
            ("LEDGERFLOW_WEBHOOK_TIMEOUT_MS", "nope"),
        ]
        .into_iter()
        .collect();
        let cfg =
            DispatcherConfig::default().with_env_overrides(|k| env.get(k).map(|v| (*v).to_owned()));
        assert_eq!(cfg.backoff_base, Duration::from_millis(20));
        assert_eq!(cfg.poll_interval, Duration::from_millis(15));
        assert_eq!(cfg.max_attempts, 3);
        assert_eq!(cfg.breaker.failure_threshold, 2);
        assert_eq!(cfg.breaker.cool_down, Duration::from_millis(250));
        assert_eq!(
            cfg.request_timeout,
            Duration::from_secs(10),
            "bad values are ignored"
        );
    }
}
