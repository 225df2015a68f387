//! Mechanism shared by the outbox dispatchers (`erp_outbox`, `notification_outbox`).
//!
//! What a row is, how it is claimed and how its outcome is recorded stay with each dispatcher;
//! this crate holds what does not depend on the table or the protocol:
//!
//! - [`RateLimiter`]: per-tenant token buckets (burst = the rate), held per process;
//! - [`Backoff`] (the workspace's one, from `ledgerflow-core`): exponential backoff with jitter
//!   over the upper half, and how a server's `Retry-After` combines with it ([`RetryAfter`]);
//! - [`deliver_bounded`]: one round's deliveries with at most N in flight, first error wins;
//! - [`run_rounds`]: the round loop (poll, sleep until the next due row, exit when idle) and
//!   its shutdown grace ([`SHUTDOWN_GRACE`]);
//! - small helpers: [`check_lease`], [`rate_per_sec`], [`micros`], [`excerpt`]; and, re-exported
//!   from `ledgerflow-core` so the dispatchers need one import, [`now_micros`], [`jitter`],
//!   [`error_chain`].
//!
//! Nothing here logs: the loop reports how it stopped ([`Stopped`]) and each dispatcher logs
//! under its own target.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use ledgerflow_core::{Backoff, RetryAfter, error_chain, jitter, now_micros};
use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinSet};

/// How long in-flight deliveries may finish after shutdown is requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Longest response body excerpt kept in `last_error` (see [`excerpt`]).
pub const EXCERPT_CHARS: usize = 512;

/// Shortest sleep between two idle rounds, whatever the next due time says.
const MIN_SLEEP: Duration = Duration::from_millis(5);

/// Per-tenant token buckets (GCRA form: a theoretical arrival time per tenant).
#[derive(Debug, Default)]
pub struct RateLimiter {
    next: Mutex<HashMap<String, Instant>>,
}

impl RateLimiter {
    /// How long the caller must wait before sending for `tenant` at `rate` per second; the
    /// burst is the rate. Reserving takes the slot whether or not the caller waits.
    pub fn reserve(&self, tenant: &str, rate: u32) -> Duration {
        let rate = rate.max(1);
        let interval = Duration::from_secs(1) / rate;
        let burst = interval * (rate - 1);
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let tat = next.get(tenant).copied().unwrap_or(now).max(now);
        next.insert(tenant.to_owned(), tat + interval);
        (tat - now).saturating_sub(burst)
    }

    /// Takes a slot for `tenant` only if one is free now; otherwise leaves the bucket as it is
    /// and returns how long until one is. A dispatcher defers a row on `Err` instead of
    /// sleeping while it holds the row's claim (a sleep inside the lease stalls the round for
    /// every other tenant and lets another replica claim and re-send the row).
    pub fn try_acquire(&self, tenant: &str, rate: Option<u32>) -> Result<(), Duration> {
        let Some(rate) = rate else {
            return Ok(());
        };
        let rate = rate.max(1);
        let interval = Duration::from_secs(1) / rate;
        let burst = interval * (rate - 1);
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let tat = next.get(tenant).copied().unwrap_or(now).max(now);
        let wait = (tat - now).saturating_sub(burst);
        if wait.is_zero() {
            next.insert(tenant.to_owned(), tat + interval);
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Reserves a slot for `tenant` and sleeps until it is due; no limit when `rate` is `None`.
    pub async fn acquire(&self, tenant: &str, rate: Option<u32>) {
        if let Some(rate) = rate {
            let wait = self.reserve(tenant, rate);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Checks that a claim's lease outlives the request it covers, so that an answer cannot land
/// after the row was claimed again.
pub fn check_lease(lease: Duration, request_timeout: Duration) -> Result<(), String> {
    if lease <= request_timeout {
        return Err(format!(
            "lease ({lease:?}) must exceed request_timeout ({request_timeout:?})"
        ));
    }
    Ok(())
}

/// A stored `rate_limit_per_sec` column as a limit: `None` (no limit) when NULL, zero, negative
/// or out of range.
pub fn rate_per_sec(column: Option<i64>) -> Option<u32> {
    column
        .and_then(|r| u32::try_from(r).ok())
        .filter(|r| *r > 0)
}

/// A duration in microseconds, saturating at `i64::MAX / 2` (so adding it to a timestamp
/// cannot overflow).
pub fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2)
}

/// A response body for an operator: trimmed, at most [`EXCERPT_CHARS`] characters, `...` when
/// cut. Secrets the body may echo are the caller's to redact.
pub fn excerpt(body: &str) -> String {
    let trimmed = body.trim();
    if trimmed.chars().count() <= EXCERPT_CHARS {
        return trimmed.to_owned();
    }
    let mut out: String = trimmed.chars().take(EXCERPT_CHARS).collect();
    out.push_str("...");
    out
}

/// Runs `deliver` on every row as its own task, at most `concurrency` at once, and hands each
/// outcome to `done` as it completes. All tasks run to their end; the first error (a task's, or
/// a task that panicked, mapped by `aborted`) is returned after them. Rows whose outcome was not
/// recorded are claimed again after their lease.
pub async fn deliver_bounded<T, O, E, F, Fut>(
    rows: Vec<T>,
    concurrency: usize,
    deliver: F,
    mut done: impl FnMut(O),
    aborted: impl Fn(JoinError) -> E,
) -> Result<(), E>
where
    T: Send + 'static,
    O: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for row in rows {
        let permits = Arc::clone(&permits);
        let delivery = deliver(row);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            delivery.await
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(outcome)) => done(outcome),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(join) => {
                first_error.get_or_insert(aborted(join));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What the outbox holds, as [`run_rounds`] needs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Rows still to deliver.
    pub pending: u64,
    /// Earliest due time among them (micros since the epoch).
    pub next_due_at: Option<i64>,
}

/// Why [`run_rounds`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Nothing was pending and the loop was told to exit when idle.
    Idle,
    /// Shutdown was requested; the round in flight, if any, finished within the grace.
    Shutdown,
    /// Shutdown was requested and the round in flight did not finish within
    /// [`SHUTDOWN_GRACE`]: its unanswered rows are left to be claimed again after their lease.
    Abandoned,
}

/// Runs rounds until `shutdown` resolves or, with `exit_when_idle`, until nothing is pending.
///
/// `round` claims and delivers due rows and returns how many it claimed (0 on an error, which it
/// reports itself): while rounds claim rows the next starts at once; otherwise `backlog` is read
/// (`None` on an error, which it reports itself) and the loop sleeps `poll_interval`, or less if
/// a row falls due sooner (at least 5 ms).
///
/// A round runs to its end unless shutdown is requested meanwhile; then the requests in flight
/// get [`SHUTDOWN_GRACE`] to finish, and whatever is still unanswered is abandoned
/// ([`Stopped::Abandoned`]). A shutdown requested during a round that claimed rows wins over
/// starting the next one.
pub async fn run_rounds<R, RF, B, BF>(
    mut round: R,
    mut backlog: B,
    poll_interval: Duration,
    exit_when_idle: bool,
    shutdown: impl Future<Output = ()>,
) -> Stopped
where
    R: FnMut() -> RF,
    RF: Future<Output = u64>,
    B: FnMut() -> BF,
    BF: Future<Output = Option<Backlog>>,
{
    tokio::pin!(shutdown);
    loop {
        let current = round();
        tokio::pin!(current);
        let claimed = tokio::select! {
            claimed = &mut current => claimed,
            () = &mut shutdown => {
                return match tokio::time::timeout(SHUTDOWN_GRACE, current).await {
                    Ok(_) => Stopped::Shutdown,
                    Err(_) => Stopped::Abandoned,
                };
            }
        };
        if claimed > 0 {
            // More may be due at once; but a shutdown requested during the round wins.
            tokio::select! {
                biased;
                () = &mut shutdown => return Stopped::Shutdown,
                () = std::future::ready(()) => continue,
            }
        }
        let mut sleep = poll_interval;
        if let Some(summary) = backlog().await {
            if summary.pending == 0 && exit_when_idle {
                return Stopped::Idle;
            }
            if let Some(due) = summary.next_due_at {
                let until = u64::try_from(due - now_micros()).unwrap_or(0);
                sleep = sleep.min(Duration::from_micros(until));
            }
        }
        tokio::select! {
            () = &mut shutdown => return Stopped::Shutdown,
            () = tokio::time::sleep(sleep.max(MIN_SLEEP)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn try_acquire_takes_a_slot_only_when_one_is_free() {
        let limiter = RateLimiter::default();
        assert!(limiter.try_acquire("t", None).is_ok(), "no limit");
        assert!(limiter.try_acquire("t", Some(2)).is_ok());
        assert!(limiter.try_acquire("t", Some(2)).is_ok(), "burst of 2");
        let wait = limiter
            .try_acquire("t", Some(2))
            .expect_err("the third must wait");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        let again = limiter
            .try_acquire("t", Some(2))
            .expect_err("still waiting");
        assert!(
            again <= wait,
            "a refused try takes no slot: {again:?} vs {wait:?}"
        );
        assert!(
            limiter.try_acquire("u", Some(2)).is_ok(),
            "tenants are independent"
        );
    }

    #[test]
    fn rate_limiter_allows_a_burst_then_spaces_requests() {
        let limiter = RateLimiter::default();
        let waits: Vec<_> = (0..6).map(|_| limiter.reserve("t", 4)).collect();
        assert!(waits[..4].iter().all(Duration::is_zero), "{waits:?}");
        assert!(waits[4] > Duration::from_millis(200) && waits[4] <= Duration::from_millis(250));
        assert!(waits[5] > Duration::from_millis(450) && waits[5] <= Duration::from_millis(500));
        assert!(limiter.reserve("u", 4).is_zero(), "tenants are independent");
    }

    #[test]
    fn a_lease_must_outlive_the_request() {
        let second = Duration::from_secs(1);
        assert_eq!(
            check_lease(second, second).unwrap_err(),
            "lease (1s) must exceed request_timeout (1s)"
        );
        assert!(check_lease(second * 2, second).is_ok());
    }

    #[test]
    fn stored_rates_become_limits() {
        assert_eq!(rate_per_sec(Some(5)), Some(5));
        assert_eq!(rate_per_sec(Some(0)), None);
        assert_eq!(rate_per_sec(Some(-1)), None);
        assert_eq!(rate_per_sec(Some(i64::MAX)), None);
        assert_eq!(rate_per_sec(None), None);
    }

    #[test]
    fn helpers() {
        assert_eq!(micros(Duration::from_millis(3)), 3_000);
        assert_eq!(micros(Duration::MAX), i64::MAX / 2);
        assert_eq!(excerpt("  short \n"), "short");
        let long = excerpt(&"é".repeat(2000));
        assert_eq!(long.chars().count(), EXCERPT_CHARS + 3);
        assert!(long.ends_with("..."));
    }

    #[tokio::test]
    async fn bounded_delivery_limits_concurrency_and_returns_the_first_error() {
        let in_flight = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let mut sum = 0;
        let result = deliver_bounded(
            (1..=20u64).collect(),
            3,
            |n| {
                let (in_flight, peak) = (Arc::clone(&in_flight), Arc::clone(&peak));
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    if n % 7 == 0 { Err(n) } else { Ok(n) }
                }
            },
            |n| sum += n,
            |_| 0,
        )
        .await;
        assert!(matches!(result, Err(7 | 14)), "{result:?}");
        assert_eq!(
            sum,
            (1..=20).sum::<u64>() - 21,
            "every other row is delivered"
        );
        assert!(peak.load(Ordering::SeqCst) <= 3);
        let panicked = deliver_bounded(
            vec![true],
            1,
            |fail| async move {
                assert!(!fail, "boom");
                Ok::<(), u8>(())
            },
            |()| {},
            |_| 9u8,
        )
        .await;
        assert_eq!(panicked, Err(9));
    }

    fn due_in(ms: i64) -> Option<Backlog> {
        Some(Backlog {
            pending: 1,
            next_due_at: Some(now_micros() + ms * 1000),
        })
    }

    #[tokio::test]
    async fn rounds_continue_while_busy_and_exit_when_idle() {
        let rounds = AtomicU64::new(0);
        let stopped = run_rounds(
            || async {
                // Three busy rounds, then idle ones.
                if rounds.fetch_add(1, Ordering::SeqCst) < 3 {
                    2
                } else {
                    0
                }
            },
            || async {
                let n = rounds.load(Ordering::SeqCst);
                if n < 6 {
                    due_in(0)
                } else {
                    Some(Backlog::default())
                }
            },
            Duration::from_secs(3600),
            true,
            std::future::pending(),
        )
        .await;
        assert_eq!(stopped, Stopped::Idle);
        assert_eq!(rounds.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn without_exit_when_idle_the_loop_polls_until_shutdown() {
        let rounds = AtomicU64::new(0);
        let shutdown = async {
            while rounds.load(Ordering::SeqCst) < 3 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let stopped = run_rounds(
            || async {
                rounds.fetch_add(1, Ordering::SeqCst);
                0
            },
            || async { None },
            Duration::from_millis(10),
            false,
            shutdown,
        )
        .await;
        assert_eq!(stopped, Stopped::Shutdown);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_grants_the_round_in_flight_its_grace() {
        // A round that finishes within the grace is waited for.
        let finished = AtomicU64::new(0);
        let started = tokio::time::Instant::now();
        let stopped = run_rounds(
            || async {
                tokio::time::sleep(SHUTDOWN_GRACE / 2).await;
                finished.fetch_add(1, Ordering::SeqCst);
                1
            },
            || async { None },
            Duration::from_secs(1),
            false,
            tokio::time::sleep(Duration::from_millis(10)),
        )
        .await;
        assert_eq!(stopped, Stopped::Shutdown);
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        assert_eq!(started.elapsed(), SHUTDOWN_GRACE / 2);

        // One that does not is abandoned when the grace runs out.
        let started = tokio::time::Instant::now();
        let stopped = run_rounds(
            || async {
                tokio::time::sleep(SHUTDOWN_GRACE * 10).await;
                1
            },
            || async { None },
            Duration::from_secs(1),
            false,
            tokio::time::sleep(Duration::from_millis(10)),
        )
        .await;
        assert_eq!(stopped, Stopped::Abandoned);
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(10) + SHUTDOWN_GRACE
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_sleep_is_cut_short_by_a_due_row_and_by_shutdown() {
        let rounds = AtomicU64::new(0);
        let started = tokio::time::Instant::now();
        let stopped = run_rounds(
            || async {
                rounds.fetch_add(1, Ordering::SeqCst);
                0
            },
            || async { due_in(300) },
            Duration::from_secs(1),
            false,
            tokio::time::sleep(Duration::from_millis(2500)),
        )
        .await;
        assert_eq!(stopped, Stopped::Shutdown);
        assert_eq!(started.elapsed(), Duration::from_millis(2500));
        assert_eq!(rounds.load(Ordering::SeqCst), 9, "woken for each due row");
    }
}
