//! The outbox dispatcher: delivers each posting (`erp_outbox` row, see [`crate::posting`])
//! through its ERP's adapter ([`crate::adapter`]).
//!
//! # The loop
//!
//! The dispatcher keeps up to `concurrency` attempts in flight and claims more as attempts end,
//! without waiting for a "round" to finish, so a slow account never holds back another:
//!
//! - a claim pass takes at most one due row **per ERP account**, skipping accounts that are
//!   paused (throttled) or whose concurrency permits are all spoken for, kinds without an
//!   adapter, and rows whose dependencies are not confirmed yet; passes repeat while they claim
//!   something, and otherwise the loop sleeps until an attempt ends, the next row falls due, or
//!   `poll_interval` passes;
//! - claiming is a lease, not a held transaction: the claim pushes `next_attempt_at` to
//!   `now + lease` and stamps a claim token; outcomes only land with the same token. On
//!   Postgres the claim uses `FOR UPDATE SKIP LOCKED`, so several dispatchers share the outbox.
//!
//! # One attempt
//!
//! 1. If the row's account was paused meanwhile, the row is handed back unattempted (its
//!    `next_attempt_at` moved to the end of the pause): an attempt never sleeps on another
//!    account's behalf, and never holds a claim while the account waits out a throttle.
//! 2. Take an account permit and the tenant's rate slot, then extend the lease and mark the
//!    row **in doubt** (`indefinite = 1`) in one statement: whatever happens to this process
//!    from here on (crash, kill, abandoned at shutdown), the next attempt asks the ERP first.
//! 3. `accepted` rows are polled; otherwise, when the previous attempt was indefinite (or the
//!    adapter asks before every send), the adapter's `find` looks the document up by its
//!    external id and the posting is confirmed if it is there; else `send`.
//! 4. Record: `confirmed` (ERP document id), `accepted` (job reference; polled every
//!    `job_poll_interval`), a retry (backoff with jitter, at least `Retry-After`, and at least
//!    `request_timeout` after a timeout that may have reached the ERP, so a request the ERP is
//!    still processing has finished before the next attempt looks for its document; the
//!    `indefinite` flag as the outcome says; `failed` after `max_attempts`), or `failed` with
//!    its class. Throttled attempts pause the account and do not count against
//!    `max_attempts`. The row keeps the last error class, redacted excerpts of the last request
//!    and response, and a history of its last 20 attempts.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerflow_outbox::{Backoff, RateLimiter, RetryAfter, SHUTDOWN_GRACE, micros};
use ledgerflow_store::Backend;
use ledgerflow_telemetry as tm;
use ledgerflow_tenants::ErpKind;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::ErpError;
use crate::adapter::{
    ErpAdapter, FailClass, Failed, Lookup, LookupPolicy, Outcome, ReadBack, Retry, RetryClass,
};
use crate::adapters;
use crate::auth::{Authenticator, SecretSource};
use crate::exchange::{Exchange, Trail};
use crate::journal::JournalKind;
use crate::limits::{AccountLimiter, Limits, Reservation};
use crate::posting::{Dependency, ErpPosting, PostingState, Route};
use crate::write::now_micros;

/// Attempts kept in a row's `history`.
const HISTORY_LEN: usize = 20;

/// Shortest sleep when nothing was claimable.
const MIN_IDLE: Duration = Duration::from_millis(5);

/// Dispatcher settings. [`Default`] gives production values.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Rows claimed per pass at most (default 100); a pass takes one row per ERP account.
    pub batch_size: u32,
    /// Attempts in flight at once, all accounts together (default 32); each account is further
    /// held to its own `concurrency` from the tenants file.
    pub concurrency: usize,
    /// Per-request timeout, connect included (default 30 s).
    pub request_timeout: Duration,
    /// Attempts (throttles not counted) before a retryable failure becomes `failed` (default 10).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt (default 1 s).
    pub backoff_base: Duration,
    /// Longest retry delay (default 5 min).
    pub backoff_max: Duration,
    /// How long a claim is exclusive; must exceed `request_timeout` (default 120 s). An attempt
    /// makes a few requests (token, lookup, send), each within `request_timeout`.
    pub lease: Duration,
    /// Sleep when nothing is due (default 1 s).
    pub poll_interval: Duration,
    /// How often an `accepted` posting's job is polled (default 5 s).
    pub job_poll_interval: Duration,
    /// [`Dispatcher::run`] returns once nothing deliverable is pending (`--exit-when-idle`).
    pub exit_when_idle: bool,
    /// When set, secrets named by environment variable are looked up here instead of the
    /// process environment (tests, or a caller holding an explicit environment map).
    pub env: Option<BTreeMap<String, String>>,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            concurrency: 32,
            request_timeout: Duration::from_secs(30),
            max_attempts: 10,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            lease: Duration::from_secs(120),
            poll_interval: Duration::from_secs(1),
            job_poll_interval: Duration::from_secs(5),
            exit_when_idle: false,
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

/// What a dispatcher did (one [`Dispatcher::dispatch_once`], or a whole run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DispatchStats {
    /// Rows claimed.
    pub claimed: u64,
    /// Postings confirmed.
    pub confirmed: u64,
    /// Postings whose job was submitted (or is still running).
    pub accepted: u64,
    /// Scheduled for another attempt.
    pub retried: u64,
    /// Parked as failed.
    pub failed: u64,
    /// Handed back unattempted because their account was paused.
    pub deferred: u64,
    /// Outcomes dropped because the lease had passed to another dispatcher.
    pub lease_lost: u64,
}

impl DispatchStats {
    fn add(&mut self, outcome: Recorded) {
        match outcome {
            Recorded::Confirmed => self.confirmed += 1,
            Recorded::Accepted => self.accepted += 1,
            Recorded::Retried => self.retried += 1,
            Recorded::Failed => self.failed += 1,
            Recorded::Deferred => self.deferred += 1,
            Recorded::LeaseLost => self.lease_lost += 1,
        }
    }
}

/// Postings still to deliver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PendingSummary {
    /// Postings `pending` or `accepted` that can still go (their kind has an adapter and no
    /// dependency of theirs failed).
    pub pending: u64,
    /// Earliest `next_attempt_at` among the claimable ones (micros).
    pub next_due_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    Confirmed,
    Accepted,
    Retried,
    Failed,
    Deferred,
    LeaseLost,
}

/// What an attempt did, for the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Send,
    Find,
    Found,
    Poll,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Find => "find",
            Self::Found => "found",
            Self::Poll => "poll",
        }
    }
}

/// One claimed row.
#[derive(Debug)]
struct Claimed {
    posting: ErpPosting,
    state: PostingState,
    history: Vec<Value>,
}

#[derive(Debug)]
struct Inner {
    pool: AnyPool,
    backend: Backend,
    cfg: DispatcherConfig,
    client: reqwest::Client,
    auth: Arc<Authenticator>,
    limits: Limits,
    tenant_rate: RateLimiter,
    adapters: HashMap<ErpKind, Arc<dyn ErpAdapter>>,
    secrets: SecretSource,
}

/// Row -> claim token of every attempt a loop started and has not recorded.
type Claims = Arc<std::sync::Mutex<HashMap<String, String>>>;

fn lock(claims: &Claims) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
    claims.lock().unwrap_or_else(|p| p.into_inner())
}

/// A dispatcher: the HTTP client, the token cache, the account limiters and the pool. Cheap to
/// clone; clones share all of it.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

/// Attempts in flight of one loop.
type Tasks = JoinSet<Result<Recorded, ErpError>>;

impl Dispatcher {
    /// A dispatcher with the built-in adapters ([`adapters::builtin`]).
    pub fn new(pool: AnyPool, backend: Backend, cfg: DispatcherConfig) -> Result<Self, ErpError> {
        let builtin = ErpKind::ALL
            .into_iter()
            .filter_map(adapters::builtin)
            .map(|a| Arc::new(Builtin(a)) as Arc<dyn ErpAdapter>)
            .collect();
        Self::with_adapters(pool, backend, cfg, builtin)
    }

    /// A dispatcher with exactly these adapters (tests, or an adapter built outside this
    /// crate). One per kind; a later one replaces an earlier one.
    pub fn with_adapters(
        pool: AnyPool,
        backend: Backend,
        cfg: DispatcherConfig,
        adapters: Vec<Arc<dyn ErpAdapter>>,
    ) -> Result<Self, ErpError> {
        cfg.validate()?;
        let client = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ledgerflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ErpError::HttpClient)?;
        let secrets = SecretSource::with_env(cfg.env.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                backend,
                auth: Arc::new(Authenticator::new(client.clone())),
                client,
                limits: Limits::default(),
                tenant_rate: RateLimiter::default(),
                adapters: adapters.into_iter().map(|a| (a.kind(), a)).collect(),
                secrets,
                cfg,
            }),
        })
    }

    /// Reads a posting's document back from its ERP by external id
    /// ([`ErpAdapter::read_back`]; `ledgerflow reconcile --erp-readback`), with the same HTTP
    /// client, auth and account limits as deliveries: it waits out a pause of the account,
    /// holds one of the account's permits and the tenant's rate slot for the lookup, and a
    /// throttling answer pauses the account. Read only: the posting's row is not touched, and
    /// the answer's texts are redacted.
    pub async fn find_document(&self, posting: &ErpPosting) -> ReadBack {
        let route = &posting.route;
        let Some(adapter) = self.inner.adapters.get(&route.kind()).cloned() else {
            return ReadBack::Failed(Failed::new(
                FailClass::Mapping,
                format!("no adapter for erp kind {}", route.kind()),
            ));
        };
        let limiter = self
            .inner
            .limits
            .get(route.kind(), route.account(), route.limits);
        if let Some(wait) = limiter.paused_for() {
            tokio::time::sleep(wait).await;
        }
        let Some(_permit) = limiter.acquire().await else {
            return ReadBack::Retry(Retry::new(
                RetryClass::Throttled,
                "the account's limiter is closed",
            ));
        };
        // Throttled by another lookup while this one waited for its permit.
        if let Some(wait) = limiter.paused_for() {
            tokio::time::sleep(wait).await;
        }
        self.inner
            .tenant_rate
            .acquire(&posting.tenant_id, route.tenant_rate_per_sec)
            .await;
        let exchange = Exchange::new(
            self.inner.client.clone(),
            Arc::clone(&self.inner.auth),
            route.clone(),
            Arc::clone(&limiter),
            self.inner.secrets.clone(),
        );
        match adapter.read_back(&exchange, posting).await {
            ReadBack::Retry(mut r) => {
                if r.class == RetryClass::Throttled {
                    limiter.pause(r.retry_after);
                }
                r.detail = exchange.redact(&r.detail);
                ReadBack::Retry(r)
            }
            ReadBack::Failed(mut f) => {
                limiter.clear_throttle();
                f.reason = exchange.redact(&f.reason);
                ReadBack::Failed(f)
            }
            found => {
                limiter.clear_throttle();
                found
            }
        }
    }

    /// The dispatcher's pool.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    /// Token requests made so far (every client of every tenant together).
    pub fn token_requests(&self) -> u64 {
        self.inner.auth.token_requests()
    }

    /// Delivers everything claimable now (not what falls due later) and returns what happened.
    pub async fn dispatch_once(&self) -> Result<DispatchStats, ErpError> {
        let mut stats = DispatchStats::default();
        let mut tasks = Tasks::new();
        let claims = Claims::default();
        let mut first_error = None;
        loop {
            let claimed = self.fill(&mut tasks, &claims).await?;
            stats.claimed += claimed;
            if claimed > 0 {
                continue;
            }
            match tasks.join_next().await {
                Some(joined) => collect(joined, &mut stats, &mut first_error),
                None => break,
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    /// Postings still to deliver and the earliest due time among the claimable ones.
    pub async fn pending(&self) -> Result<PendingSummary, ErpError> {
        let kinds = self.kinds_clause("o");
        let count = sqlx::query(&format!(
            "SELECT COUNT(*) FROM erp_outbox o
             WHERE o.status IN ('pending', 'accepted') AND o.route IS NOT NULL AND {kinds}
               AND NOT EXISTS (SELECT 1 FROM erp_outbox_dependencies d
                               JOIN erp_outbox p ON p.id = d.depends_on
                               WHERE d.outbox_id = o.id AND p.status = 'failed')"
        ))
        .fetch_one(&self.inner.pool)
        .await
        .map_err(ErpError::db("counting pending erp postings"))?;
        let pending: i64 = row_get(&count, 0)?;
        Ok(PendingSummary {
            pending: u64::try_from(pending).unwrap_or(0),
            next_due_at: self.next_due().await?,
        })
    }

    /// Delivers until `shutdown` resolves (or, with `exit_when_idle`, until nothing
    /// deliverable is pending). On shutdown, attempts in flight get [`SHUTDOWN_GRACE`] to
    /// finish; the others are abandoned in doubt, handed back and retried, lookup first.
    /// Database errors are logged and retried after `poll_interval`.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ErpError> {
        tokio::pin!(shutdown);
        let cfg = &self.inner.cfg;
        let mut stats = DispatchStats::default();
        let mut tasks = Tasks::new();
        let claims = Claims::default();
        let mut first_error = None;
        loop {
            while let Some(joined) = tasks.try_join_next() {
                collect(joined, &mut stats, &mut first_error);
                if let Some(e) = first_error.take() {
                    tracing::warn!(error = %e, "erp delivery could not be recorded; it is retried after its lease");
                }
            }
            let claimed = match self.fill(&mut tasks, &claims).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming erp postings failed; retrying");
                    0
                }
            };
            if claimed > 0 {
                // More may be claimable at once (one row per account per pass); a shutdown
                // requested meanwhile wins.
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = std::future::ready(()) => continue,
                }
            }
            let mut sleep = cfg.poll_interval;
            if tasks.is_empty() {
                match self.pending().await {
                    Ok(summary) => {
                        if summary.pending == 0 && cfg.exit_when_idle {
                            tracing::debug!(?stats, "erp outbox drained");
                            return Ok(());
                        }
                        if let Some(due) = summary.next_due_at {
                            let until = u64::try_from(due - now_micros()).unwrap_or(0);
                            sleep = sleep.min(Duration::from_micros(until));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the erp outbox"),
                }
            } else if let Ok(Some(due)) = self.next_due().await {
                let until = u64::try_from(due - now_micros()).unwrap_or(0);
                sleep = sleep.min(Duration::from_micros(until));
            }
            tokio::select! {
                () = &mut shutdown => break,
                joined = tasks.join_next(), if !tasks.is_empty() => {
                    if let Some(joined) = joined {
                        collect(joined, &mut stats, &mut first_error);
                    }
                }
                () = tokio::time::sleep(sleep.max(MIN_IDLE)) => {}
            }
        }
        // Shutdown: let attempts in flight finish within the grace, abandon the rest (they are
        // marked in doubt and retried, lookup first, after their lease).
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(joined) = tasks.join_next().await {
                collect(joined, &mut stats, &mut first_error);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                grace = ?SHUTDOWN_GRACE,
                in_flight = tasks.len(),
                "erp attempts still in flight at shutdown are abandoned; they are retried, lookup first"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            // Hand the abandoned rows back now rather than after their lease: an attempt that
            // had started marked its row in doubt, so the next one looks the document up
            // first, and waits a request's time in case the ERP is still processing it.
            let abandoned: Vec<(String, String)> = lock(&claims)
                .iter()
                .map(|(id, token)| (id.clone(), token.clone()))
                .collect();
            if let Err(e) = self.release(&abandoned).await {
                tracing::warn!(error = %e, "abandoned erp postings stay claimed until their lease ends");
            }
        }
        Ok(())
    }

    /// Releases claims this dispatcher holds, due after a request's time.
    async fn release(&self, claims: &[(String, String)]) -> Result<(), ErpError> {
        let due = now_micros() + micros(self.inner.cfg.request_timeout);
        for (id, token) in claims {
            sqlx::query(
                "UPDATE erp_outbox SET claim_token = NULL, next_attempt_at = $1
                 WHERE id = $2 AND claim_token = $3",
            )
            .bind(due)
            .bind(id.clone())
            .bind(token.clone())
            .execute(&self.inner.pool)
            .await
            .map_err(ErpError::db("releasing abandoned erp postings"))?;
        }
        Ok(())
    }

    /// `alias.erp_kind IN (kinds with an adapter)`; static names, no user input.
    fn kinds_clause(&self, alias: &str) -> String {
        let mut kinds: Vec<&str> = self.inner.adapters.keys().map(|k| k.as_str()).collect();
        if kinds.is_empty() {
            return "1 = 0".to_owned();
        }
        kinds.sort_unstable();
        let list = kinds
            .iter()
            .map(|k| format!("'{k}'"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("{alias}.erp_kind IN ({list})")
    }

    /// One row per open account: for every account with rows still to deliver (a kind with an
    /// adapter, a route, not closed), `o.{column}` of its earliest row (by `next_attempt_at`,
    /// then id) that is due by `due` (a parameter, or none) and has no unconfirmed dependency;
    /// NULL for an account with none. Closed accounts are bound from parameter `$first` on.
    ///
    /// Per account, not over the whole outbox: the partial index `erp_outbox_claim` (kind,
    /// account, next_attempt_at, id; migration 0002) hands each account's earliest rows in
    /// order, so a claim reads a few index entries per account whatever the backlog. A scan of
    /// every due row, sorted, made each claim cost a read of the whole backlog (about 0.2 s at
    /// 35,000 postings on SQLite), and delivery crawled at a few postings a second.
    fn per_account(&self, column: &str, due: Option<&str>, first: usize) -> (String, Vec<String>) {
        let closed: Vec<String> = self
            .inner
            .limits
            .closed()
            .into_iter()
            .map(|(kind, account)| format!("{kind}/{account}"))
            .collect();
        let mut accounts = format!(
            "SELECT DISTINCT a.erp_kind, a.erp_account FROM erp_outbox a
             WHERE a.status IN ('pending', 'accepted') AND a.route IS NOT NULL
               AND a.erp_account IS NOT NULL AND {}",
            self.kinds_clause("a")
        );
        if !closed.is_empty() {
            let params: Vec<String> = (0..closed.len())
                .map(|i| format!("${}", first + i))
                .collect();
            accounts.push_str(&format!(
                " AND (a.erp_kind || '/' || a.erp_account) NOT IN ({})",
                params.join(", ")
            ));
        }
        let due = due
            .map(|d| format!(" AND o.next_attempt_at <= {d}"))
            .unwrap_or_default();
        let sql = format!(
            "SELECT (SELECT o.{column} FROM erp_outbox o
                     WHERE o.erp_kind = acct.erp_kind AND o.erp_account = acct.erp_account
                       AND o.status IN ('pending', 'accepted') AND o.route IS NOT NULL{due}
                       AND NOT EXISTS (SELECT 1 FROM erp_outbox_dependencies d
                                       JOIN erp_outbox p ON p.id = d.depends_on
                                       WHERE d.outbox_id = o.id
                                         AND p.status NOT IN ('confirmed', 'resolved'))
                     ORDER BY o.next_attempt_at, o.id LIMIT 1) AS pick
             FROM ({accounts}) AS acct"
        );
        (sql, closed)
    }

    async fn next_due(&self) -> Result<Option<i64>, ErpError> {
        let (earliest, closed) = self.per_account("next_attempt_at", None, 1);
        let sql = format!("SELECT MIN(pick) FROM ({earliest}) AS picks");
        let mut query = sqlx::query_scalar::<_, Option<i64>>(&sql);
        for c in closed {
            query = query.bind(c);
        }
        query
            .fetch_one(&self.inner.pool)
            .await
            .map_err(ErpError::db("reading the next due erp posting"))
    }

    /// Claims what the accounts have room for and starts an attempt for each; returns how many.
    async fn fill(&self, tasks: &mut Tasks, claims: &Claims) -> Result<u64, ErpError> {
        let room = self.inner.cfg.concurrency.saturating_sub(tasks.len());
        if room == 0 {
            return Ok(0);
        }
        let limit = room.min(self.inner.cfg.batch_size as usize);
        let token = Uuid::new_v4().to_string();
        let claimed = self.claim(&token, limit).await?;
        let n = claimed.len() as u64;
        for row in claimed {
            let route = &row.posting.route;
            let limiter = self
                .inner
                .limits
                .get(route.kind(), route.account(), route.limits);
            let reservation = limiter.reserve();
            let this = self.clone();
            let token = token.clone();
            let id = row.posting.id.clone();
            lock(claims).insert(id.clone(), token.clone());
            let claims = Arc::clone(claims);
            tasks.spawn(async move {
                let recorded = this.deliver(row, token, limiter, reservation).await;
                lock(&claims).remove(&id);
                recorded
            });
        }
        Ok(n)
    }

    async fn claim(&self, token: &str, limit: usize) -> Result<Vec<Claimed>, ErpError> {
        let inner = &self.inner;
        let now = now_micros();
        let lease_until = now + micros(inner.cfg.lease);
        let lock = match inner.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let (earliest, closed) = self.per_account("id", Some("$3"), 5);
        // The earliest due row of each open account, then the earliest of those up to the
        // room, then (Postgres) the ones no other dispatcher holds.
        let sql = format!(
            "UPDATE erp_outbox SET next_attempt_at = $1, claim_token = $2
             WHERE id IN (
               SELECT id FROM erp_outbox
               WHERE id IN (SELECT pick FROM ({earliest}) AS picks WHERE pick IS NOT NULL)
                 AND next_attempt_at <= $3 AND status IN ('pending', 'accepted')
               ORDER BY next_attempt_at, id LIMIT $4 {lock})
             RETURNING id, tenant_id, journal_id, journal_kind, document_kind, external_id,
                       payload, route, config_version, attempts, job_ref, indefinite, status,
                       history"
        );
        let mut query = sqlx::query(&sql)
            .bind(lease_until)
            .bind(token.to_owned())
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        for c in closed {
            query = query.bind(c);
        }
        let rows = query
            .fetch_all(&inner.pool)
            .await
            .map_err(ErpError::db("claiming erp postings"))?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            match decode_claimed(&row) {
                Ok(c) => claimed.push(c),
                Err(e) => {
                    // A row that cannot be read is parked, not retried forever.
                    let id: String = row.try_get(0).unwrap_or_default();
                    tracing::error!(outbox_id = %id, error = %e, "unreadable erp posting parked");
                    self.park_unreadable(&id, token, &e.to_string()).await?;
                }
            }
        }
        self.load_dependencies(&mut claimed).await?;
        Ok(claimed)
    }

    async fn park_unreadable(&self, id: &str, token: &str, error: &str) -> Result<(), ErpError> {
        sqlx::query(
            "UPDATE erp_outbox SET status = 'failed', last_error_class = 'mapping',
                last_error = $1, claim_token = NULL, updated_at = $2
             WHERE id = $3 AND claim_token = $4",
        )
        .bind(error.to_owned())
        .bind(now_micros())
        .bind(id.to_owned())
        .bind(token.to_owned())
        .execute(&self.inner.pool)
        .await
        .map_err(ErpError::db("parking an unreadable erp posting"))?;
        Ok(())
    }

    async fn load_dependencies(&self, claimed: &mut [Claimed]) -> Result<(), ErpError> {
        let mut postings: Vec<&mut ErpPosting> =
            claimed.iter_mut().map(|c| &mut c.posting).collect();
        self.with_dependencies(&mut postings).await
    }

    /// Fills in the postings' dependencies (what an adapter reads of the postings they wait
    /// for).
    pub(crate) async fn with_dependencies(
        &self,
        claimed: &mut [&mut ErpPosting],
    ) -> Result<(), ErpError> {
        if claimed.is_empty() {
            return Ok(());
        }
        let params: Vec<String> = (1..=claimed.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT d.outbox_id, p.id, p.journal_kind, p.document_kind, p.external_id,
                    p.erp_document_id
             FROM erp_outbox_dependencies d JOIN erp_outbox p ON p.id = d.depends_on
             WHERE d.outbox_id IN ({})",
            params.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for c in claimed.iter() {
            query = query.bind(c.id.clone());
        }
        let rows = query
            .fetch_all(&self.inner.pool)
            .await
            .map_err(ErpError::db("loading erp posting dependencies"))?;
        for row in rows {
            let owner: String = row_get(&row, 0)?;
            let kind: Option<String> = row_get(&row, 2)?;
            let dependency = Dependency {
                id: row_get(&row, 1)?,
                journal_kind: kind
                    .as_deref()
                    .and_then(JournalKind::parse)
                    .unwrap_or(JournalKind::Invoice),
                document_kind: row_get::<Option<String>>(&row, 3)?.unwrap_or_default(),
                external_id: row_get::<Option<String>>(&row, 4)?.unwrap_or_default(),
                erp_document_id: row_get(&row, 5)?,
            };
            if let Some(c) = claimed.iter_mut().find(|c| c.id == owner) {
                c.dependencies.push(dependency);
            }
        }
        Ok(())
    }

    async fn deliver(
        &self,
        row: Claimed,
        token: String,
        limiter: Arc<AccountLimiter>,
        reservation: Reservation,
    ) -> Result<Recorded, ErpError> {
        let _reservation = reservation;
        if let Some(wait) = limiter.paused_for() {
            return self.defer(&row, &token, wait).await;
        }
        let Some(_permit) = limiter.acquire().await else {
            return self.defer(&row, &token, Duration::ZERO).await;
        };
        // The account may have been throttled while this attempt waited for its permit.
        if let Some(wait) = limiter.paused_for() {
            return self.defer(&row, &token, wait).await;
        }
        let posting = &row.posting;
        self.inner
            .tenant_rate
            .acquire(&posting.tenant_id, posting.route.tenant_rate_per_sec)
            .await;
        if !self.begin(posting, &token).await? {
            return Ok(Recorded::LeaseLost);
        }
        let Some(adapter) = self.inner.adapters.get(&posting.route.kind()).cloned() else {
            // Claims only take kinds with an adapter; a route that changed kind is a bug.
            return Err(ErpError::Corrupt(format!(
                "claimed erp posting {} of kind {} has no adapter",
                posting.id,
                posting.route.kind()
            )));
        };
        let exchange = Exchange::new(
            self.inner.client.clone(),
            Arc::clone(&self.inner.auth),
            posting.route.clone(),
            Arc::clone(&limiter),
            self.inner.secrets.clone(),
        );
        let started = Instant::now();
        let (outcome, action) = attempt(adapter.as_ref(), &exchange, &row).await;
        let elapsed = started.elapsed();
        if action == Action::Send {
            // The request went out and the ERP may have stored the document; the outcome is
            // not recorded yet (the row stays in doubt, so the next attempt looks it up).
            ledgerflow_core::failpoint::hit("erp.after_send");
        }
        match &outcome {
            Outcome::Retry(r) if r.class == RetryClass::Throttled => {
                let pause = limiter.pause(r.retry_after);
                tracing::info!(
                    erp = posting.route.kind().as_str(),
                    account = posting.route.account(),
                    pause_ms = pause.as_millis() as u64,
                    "erp account throttled; pausing it (other accounts continue)"
                );
            }
            Outcome::Retry(_) => {}
            _ => limiter.clear_throttle(),
        }
        self.record(&row, &token, outcome, action, &exchange, elapsed)
            .await
    }

    /// Extends the lease and marks the posting in doubt before any request is made.
    async fn begin(&self, posting: &ErpPosting, token: &str) -> Result<bool, ErpError> {
        let now = now_micros();
        let result = sqlx::query(
            "UPDATE erp_outbox SET next_attempt_at = $1, indefinite = 1, updated_at = $2
             WHERE id = $3 AND claim_token = $4",
        )
        .bind(now + micros(self.inner.cfg.lease))
        .bind(now)
        .bind(posting.id.clone())
        .bind(token.to_owned())
        .execute(&self.inner.pool)
        .await
        .map_err(ErpError::db("starting an erp attempt"))?;
        Ok(result.rows_affected() > 0)
    }

    /// Hands a row back unattempted (its account is paused).
    async fn defer(
        &self,
        row: &Claimed,
        token: &str,
        wait: Duration,
    ) -> Result<Recorded, ErpError> {
        let now = now_micros();
        let result = sqlx::query(
            "UPDATE erp_outbox SET next_attempt_at = $1, claim_token = NULL, updated_at = $2
             WHERE id = $3 AND claim_token = $4",
        )
        .bind(now + micros(wait))
        .bind(now)
        .bind(row.posting.id.clone())
        .bind(token.to_owned())
        .execute(&self.inner.pool)
        .await
        .map_err(ErpError::db("deferring an erp posting"))?;
        metrics::counter!(tm::ERP_OUTCOMES_TOTAL, "erp" => row.posting.route.kind().as_str(), "outcome" => "deferred")
            .increment(1);
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
        outcome: Outcome,
        action: Action,
        exchange: &Exchange,
        elapsed: Duration,
    ) -> Result<Recorded, ErpError> {
        let inner = &self.inner;
        let posting = &row.posting;
        let now = now_micros();
        let trail: Trail = exchange.trail();
        let erp = posting.route.kind().as_str();
        // Attempts measure failures to get an answer: a throttled request was not tried, and a
        // poll that finds the ERP's job still running is progress, not a failed attempt (a slow
        // import polled for minutes must not exhaust `max_attempts` before one real error).
        let still_running = action == Action::Poll && matches!(&outcome, Outcome::Accepted { .. });
        let counted = !still_running
            && !matches!(&outcome, Outcome::Retry(r) if r.class == RetryClass::Throttled);
        let attempts = i64::from(posting.attempts) + i64::from(counted);
        let mut entry = json!({
            "at": now,
            "attempt": attempts,
            "action": action.as_str(),
            "status": trail.status,
            "ms": elapsed.as_millis() as u64,
        });
        let mut update = Update {
            status: row.state,
            attempts,
            next_attempt_at: now,
            indefinite: false,
            error_class: None,
            error: None,
            document_id: None,
            job_ref: posting.job_ref.clone(),
            confirmed_at: None,
        };
        let recorded = match outcome {
            Outcome::Confirmed { document_id } => {
                tracing::info!(
                    outbox_id = %posting.id, tenant = %posting.tenant_id, erp, action = action.as_str(),
                    external_id = %posting.external_id, document_id = %document_id, attempts,
                    "erp posting confirmed"
                );
                entry["outcome"] = json!("confirmed");
                update.status = PostingState::Confirmed;
                update.document_id = Some(document_id);
                update.confirmed_at = Some(now);
                Recorded::Confirmed
            }
            Outcome::Accepted { job_ref } => {
                if still_running {
                    tracing::debug!(
                        outbox_id = %posting.id, tenant = %posting.tenant_id, erp, job_ref = %job_ref,
                        "erp job still running"
                    );
                } else {
                    tracing::info!(
                        outbox_id = %posting.id, tenant = %posting.tenant_id, erp, job_ref = %job_ref,
                        "erp posting accepted; its job is polled"
                    );
                }
                entry["outcome"] = json!("accepted");
                update.status = PostingState::Accepted;
                update.next_attempt_at = now + micros(inner.cfg.job_poll_interval);
                update.job_ref = Some(job_ref);
                Recorded::Accepted
            }
            Outcome::Retry(retry) => {
                let detail = exchange.redact(&retry.detail);
                entry["outcome"] = json!("retry");
                entry["class"] = json!(retry.class.as_str());
                entry["indefinite"] = json!(retry.indefinite);
                update.indefinite = retry.indefinite;
                update.error_class = Some(retry.class.as_str());
                update.error = Some(detail.clone());
                let exhausted = counted && attempts >= i64::from(inner.cfg.max_attempts);
                if exhausted {
                    tracing::error!(
                        outbox_id = %posting.id, tenant = %posting.tenant_id, erp, attempts,
                        class = retry.class.as_str(), error = %detail,
                        "erp posting failed after its last attempt; parked for an operator"
                    );
                    update.status = PostingState::Failed;
                    Recorded::Failed
                } else {
                    let mut delay = match retry.class {
                        // The account is paused; the row comes back when the pause ends.
                        RetryClass::Throttled => retry.retry_after.unwrap_or(Duration::ZERO),
                        _ => inner.cfg.backoff().delay_after(
                            u32::try_from(attempts).unwrap_or(u32::MAX),
                            retry.retry_after,
                        ),
                    };
                    if retry.indefinite && retry.class == RetryClass::Timeout {
                        // The request may still be running in the ERP: give it the time a
                        // request is allowed before the next attempt looks the document up. (A
                        // connection the ERP closed means it is done with the request.)
                        delay = delay.max(inner.cfg.request_timeout);
                    }
                    tracing::warn!(
                        outbox_id = %posting.id, tenant = %posting.tenant_id, erp, attempts,
                        class = retry.class.as_str(), indefinite = retry.indefinite,
                        retry_in_ms = delay.as_millis() as u64, error = %detail,
                        "erp attempt failed; will retry"
                    );
                    update.next_attempt_at = now + micros(delay);
                    Recorded::Retried
                }
            }
            Outcome::Failed(failed) => {
                let reason = exchange.redact(&failed.reason);
                tracing::error!(
                    outbox_id = %posting.id, tenant = %posting.tenant_id, erp, attempts,
                    class = failed.class.as_str(), error = %reason,
                    "erp posting failed; parked for an operator"
                );
                entry["outcome"] = json!("failed");
                entry["class"] = json!(failed.class.as_str());
                update.status = PostingState::Failed;
                update.error_class = Some(failed.class.as_str());
                update.error = Some(reason);
                Recorded::Failed
            }
        };
        let outcome_label = match recorded {
            Recorded::Confirmed => "confirmed",
            Recorded::Accepted => "accepted",
            Recorded::Retried => "retry",
            Recorded::Failed => "failed",
            Recorded::Deferred => "deferred",
            Recorded::LeaseLost => "lease_lost",
        };
        metrics::counter!(tm::ERP_OUTCOMES_TOTAL, "erp" => erp, "outcome" => outcome_label)
            .increment(1);
        let mut history = row.history.clone();
        history.push(entry);
        if history.len() > HISTORY_LEN {
            history.drain(..history.len() - HISTORY_LEN);
        }
        let result = sqlx::query(
            "UPDATE erp_outbox SET status = $1, attempts = $2, next_attempt_at = $3,
                indefinite = $4, last_error_class = $5, last_error = $6,
                erp_document_id = COALESCE($7, erp_document_id), job_ref = $8,
                confirmed_at = COALESCE($9, confirmed_at), last_status = $10,
                last_request = $11, last_response = $12, history = $13, updated_at = $14,
                claim_token = NULL
             WHERE id = $15 AND claim_token = $16",
        )
        .bind(update.status.as_str().to_owned())
        .bind(update.attempts)
        .bind(update.next_attempt_at)
        .bind(i64::from(update.indefinite))
        .bind(update.error_class.map(str::to_owned))
        .bind(update.error)
        .bind(update.document_id)
        .bind(update.job_ref)
        .bind(update.confirmed_at)
        .bind(trail.status.map(i64::from))
        .bind(trail.request.map(|r| exchange.redact(&r)))
        .bind(trail.response.map(|r| exchange.redact(&r)))
        .bind(Value::Array(history).to_string())
        .bind(now)
        .bind(posting.id.clone())
        .bind(token.to_owned())
        .execute(&inner.pool)
        .await
        .map_err(ErpError::db("recording an erp attempt"))?;
        if result.rows_affected() == 0 {
            tracing::warn!(outbox_id = %posting.id, "erp posting lease was lost; outcome dropped");
            return Ok(Recorded::LeaseLost);
        }
        Ok(recorded)
    }
}

/// The new values of a row after an attempt.
struct Update {
    status: PostingState,
    attempts: i64,
    next_attempt_at: i64,
    indefinite: bool,
    error_class: Option<&'static str>,
    error: Option<String>,
    document_id: Option<String>,
    job_ref: Option<String>,
    confirmed_at: Option<i64>,
}

/// Poll, or find (when in doubt) and send.
async fn attempt(adapter: &dyn ErpAdapter, cx: &Exchange, row: &Claimed) -> (Outcome, Action) {
    let posting = &row.posting;
    if row.state == PostingState::Accepted
        && let Some(job) = &posting.job_ref
    {
        return (adapter.poll(cx, posting, job).await, Action::Poll);
    }
    if posting.indefinite || adapter.lookup_policy() == LookupPolicy::Always {
        match adapter.find(cx, posting).await {
            Lookup::Found { document_id } => {
                return (Outcome::Confirmed { document_id }, Action::Found);
            }
            Lookup::NotFound => {}
            // Nothing learned: the doubt stays.
            Lookup::Retry(r) => {
                return (
                    Outcome::Retry(Retry {
                        indefinite: posting.indefinite,
                        ..r
                    }),
                    Action::Find,
                );
            }
            Lookup::Failed(f) => return (Outcome::Failed(f), Action::Find),
        }
    }
    (adapter.send(cx, posting).await, Action::Send)
}

fn collect(
    joined: Result<Result<Recorded, ErpError>, tokio::task::JoinError>,
    stats: &mut DispatchStats,
    first_error: &mut Option<ErpError>,
) {
    match joined {
        Ok(Ok(recorded)) => stats.add(recorded),
        Ok(Err(e)) => {
            first_error.get_or_insert(e);
        }
        Err(join) => {
            first_error.get_or_insert(ErpError::Corrupt(format!(
                "erp attempt ended abnormally: {join}"
            )));
        }
    }
}

fn row_get<T>(row: &AnyRow, index: usize) -> Result<T, ErpError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(index)
        .map_err(|e| ErpError::Corrupt(format!("erp_outbox column {index}: {e}")))
}

/// The columns [`decode_posting`] reads, in its order (after them a query may add its own).
pub(crate) const POSTING_COLUMNS: &str = "id, tenant_id, journal_id, journal_kind, \
    document_kind, external_id, payload, route, config_version, attempts, job_ref, indefinite, \
    status, history";

/// A posting and its state from a row selecting [`POSTING_COLUMNS`] (without dependencies).
pub(crate) fn decode_posting(row: &AnyRow) -> Result<(ErpPosting, PostingState), ErpError> {
    decode_claimed(row).map(|c| (c.posting, c.state))
}

fn decode_claimed(row: &AnyRow) -> Result<Claimed, ErpError> {
    let route_json: String = row_get(row, 7)?;
    let route: Route = serde_json::from_str(&route_json)
        .map_err(|e| ErpError::Corrupt(format!("erp_outbox route: {e}")))?;
    let payload: String = row_get(row, 6)?;
    let document: Value = serde_json::from_str(&payload)
        .map_err(|e| ErpError::Corrupt(format!("erp_outbox payload: {e}")))?;
    let kind: Option<String> = row_get(row, 3)?;
    let journal_kind = kind
        .as_deref()
        .and_then(JournalKind::parse)
        .ok_or_else(|| ErpError::Corrupt(format!("erp_outbox journal_kind {kind:?}")))?;
    let status: String = row_get(row, 12)?;
    let state = PostingState::parse(&status)
        .ok_or_else(|| ErpError::Corrupt(format!("erp_outbox status {status:?}")))?;
    let history: Option<String> = row_get(row, 13)?;
    let history = history
        .and_then(|h| serde_json::from_str::<Vec<Value>>(&h).ok())
        .unwrap_or_default();
    let attempts: i64 = row_get(row, 9)?;
    let indefinite: i64 = row_get(row, 11)?;
    Ok(Claimed {
        posting: ErpPosting {
            id: row_get(row, 0)?,
            tenant_id: row_get(row, 1)?,
            journal_id: row_get(row, 2)?,
            journal_kind,
            document_kind: row_get::<Option<String>>(row, 4)?.unwrap_or_default(),
            external_id: row_get::<Option<String>>(row, 5)?.unwrap_or_default(),
            document,
            route,
            config_version: row_get::<Option<String>>(row, 8)?.unwrap_or_default(),
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            job_ref: row_get(row, 10)?,
            indefinite: indefinite != 0,
            dependencies: Vec::new(),
        },
        state,
        history,
    })
}

/// A `&'static` built-in adapter behind the `Arc` the dispatcher holds.
#[derive(Debug)]
struct Builtin(&'static dyn ErpAdapter);

impl ErpAdapter for Builtin {
    fn kind(&self) -> ErpKind {
        self.0.kind()
    }

    fn lookup_policy(&self) -> LookupPolicy {
        self.0.lookup_policy()
    }

    fn render(
        &self,
        input: &crate::adapter::RenderInput<'_>,
    ) -> Result<crate::adapter::Rendered, ErpError> {
        self.0.render(input)
    }

    fn find<'a>(
        &'a self,
        cx: &'a Exchange,
        posting: &'a ErpPosting,
    ) -> crate::adapter::BoxFuture<'a, Lookup> {
        self.0.find(cx, posting)
    }

    fn read_back<'a>(
        &'a self,
        cx: &'a Exchange,
        posting: &'a ErpPosting,
    ) -> crate::adapter::BoxFuture<'a, ReadBack> {
        self.0.read_back(cx, posting)
    }

    fn send<'a>(
        &'a self,
        cx: &'a Exchange,
        posting: &'a ErpPosting,
    ) -> crate::adapter::BoxFuture<'a, Outcome> {
        self.0.send(cx, posting)
    }

    fn poll<'a>(
        &'a self,
        cx: &'a Exchange,
        posting: &'a ErpPosting,
        job_ref: &'a str,
    ) -> crate::adapter::BoxFuture<'a, Outcome> {
        self.0.poll(cx, posting, job_ref)
    }
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

/// One [`Dispatcher::dispatch_once`] with a fresh dispatcher (tests, one-shot tools).
/// Long-lived callers should keep a [`Dispatcher`], so tokens and account pauses carry over.
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
        let zero = DispatcherConfig {
            concurrency: 0,
            ..DispatcherConfig::default()
        };
        assert!(zero.validate().is_err());
    }
}
