//! Limits per ERP *account*, shared by every tenant posting to it.
//!
//! NetSuite governs concurrency per account, across every integration and credential, and
//! rejects a request over the limit instead of queueing it; D365 and the others throttle per
//! environment. So the unit of limiting is the (kind, account) pair, never the tenant:
//!
//! - **concurrency**: a semaphore of `concurrency` permits; an attempt holds one for all its
//!   requests (lookup and send);
//! - **rate**: a token bucket of `rate_per_sec` (burst = the rate) that every request draws
//!   from;
//! - **pause**: after a throttling answer the account is paused for `Retry-After`, or, when
//!   the ERP sends none (NetSuite), for a backoff that doubles with each consecutive throttle
//!   (0.5 s up to 30 s). While paused, the dispatcher claims no row of the account and hands
//!   back, unattempted, any it had claimed; other accounts are not affected.
//!
//! The dispatcher also counts the rows it has claimed per account ([`AccountLimiter::reserve`])
//! so it stops claiming for an account whose permits are all spoken for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledgerflow_outbox::RateLimiter;
use ledgerflow_tenants::{AccountLimits, ErpKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// First pause after a throttle without `Retry-After`.
const PAUSE_BASE: Duration = Duration::from_millis(500);
/// Longest pause after throttles without `Retry-After`.
const PAUSE_MAX: Duration = Duration::from_secs(30);

/// (kind, account).
pub(crate) type AccountKey = (ErpKind, String);

/// The limiter of one ERP account.
#[derive(Debug)]
pub(crate) struct AccountLimiter {
    key: AccountKey,
    limits: AccountLimits,
    permits: Arc<Semaphore>,
    reserved: Arc<AtomicUsize>,
    rate: RateLimiter,
    paused_until: Mutex<Option<Instant>>,
    throttles: AtomicU32,
}

/// A claimed row counted against its account until dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    reserved: Arc<AtomicUsize>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.reserved.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AccountLimiter {
    fn new(key: AccountKey, limits: AccountLimits) -> Self {
        let permits = usize::try_from(limits.concurrency.max(1)).unwrap_or(1);
        Self {
            key,
            limits,
            permits: Arc::new(Semaphore::new(permits)),
            reserved: Arc::new(AtomicUsize::new(0)),
            rate: RateLimiter::default(),
            paused_until: Mutex::new(None),
            throttles: AtomicU32::new(0),
        }
    }

    /// Counts a claimed row against the account.
    pub(crate) fn reserve(&self) -> Reservation {
        self.reserved.fetch_add(1, Ordering::SeqCst);
        Reservation {
            reserved: Arc::clone(&self.reserved),
        }
    }

    /// Whether every permit is spoken for by a claimed row.
    pub(crate) fn is_full(&self) -> bool {
        self.reserved.load(Ordering::SeqCst) >= self.permits_total()
    }

    fn permits_total(&self) -> usize {
        usize::try_from(self.limits.concurrency.max(1)).unwrap_or(1)
    }

    /// Waits for a concurrency permit.
    pub(crate) async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).acquire_owned().await.ok()
    }

    /// Waits for the account's rate limit (if any) to allow one more request.
    pub(crate) async fn pace(&self) {
        self.rate.acquire("account", self.limits.rate_per_sec).await;
    }

    /// How much longer the account is paused, if it is.
    pub(crate) fn paused_for(&self) -> Option<Duration> {
        let until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        until
            .and_then(|u| u.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// Pauses the account after a throttling answer; returns the pause.
    pub(crate) fn pause(&self, retry_after: Option<Duration>) -> Duration {
        let streak = self.throttles.fetch_add(1, Ordering::SeqCst);
        let pause = retry_after.unwrap_or_else(|| {
            PAUSE_BASE
                .saturating_mul(1u32 << streak.min(16))
                .min(PAUSE_MAX)
        });
        let until = Instant::now() + pause;
        let mut current = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if current.is_none_or(|c| c < until) {
            *current = Some(until);
        }
        pause
    }

    /// An answer that was not a throttle: the backoff starts over.
    pub(crate) fn clear_throttle(&self) {
        self.throttles.store(0, Ordering::SeqCst);
    }
}

/// Every account's limiter, created on first use from the limits a posting carries.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    accounts: Mutex<HashMap<AccountKey, Arc<AccountLimiter>>>,
}

impl Limits {
    /// The limiter of an account. A posting rendered with different limits (the tenants file
    /// changed) replaces the limiter; its pause carries over, permits held on the old one are
    /// released as those attempts end.
    pub(crate) fn get(
        &self,
        kind: ErpKind,
        account: &str,
        limits: AccountLimits,
    ) -> Arc<AccountLimiter> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        let key = (kind, account.to_owned());
        if let Some(existing) = accounts.get(&key)
            && existing.limits == limits
        {
            return Arc::clone(existing);
        }
        let fresh = Arc::new(AccountLimiter::new(key.clone(), limits));
        if let Some(old) = accounts.get(&key) {
            let pause = *old.paused_until.lock().unwrap_or_else(|p| p.into_inner());
            *fresh.paused_until.lock().unwrap_or_else(|p| p.into_inner()) = pause;
            // Rows claimed on the old limiter still count until their attempts end.
            fresh
                .reserved
                .fetch_add(old.reserved.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        accounts.insert(key, Arc::clone(&fresh));
        fresh
    }

    /// Accounts the dispatcher must not claim for now: paused, or all permits spoken for.
    pub(crate) fn closed(&self) -> Vec<AccountKey> {
        let accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<AccountKey> = accounts
            .values()
            .filter(|l| l.is_full() || l.paused_for().is_some())
            .map(|l| l.key.clone())
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(concurrency: u32) -> AccountLimits {
        AccountLimits {
            concurrency,
            rate_per_sec: None,
        }
    }

    #[test]
    fn tenants_of_one_account_share_one_limiter() {
        let all = Limits::default();
        let a = all.get(ErpKind::Netsuite, "ACCT", limits(2));
        let b = all.get(ErpKind::Netsuite, "ACCT", limits(2));
        assert!(Arc::ptr_eq(&a, &b));
        let other = all.get(ErpKind::Dynamics365, "ACCT", limits(2));
        assert!(!Arc::ptr_eq(&a, &other), "kinds are separate accounts");
        let r1 = a.reserve();
        assert!(all.closed().is_empty());
        let r2 = b.reserve();
        assert_eq!(all.closed(), [(ErpKind::Netsuite, "ACCT".to_owned())]);
        drop((r1, r2));
        assert!(all.closed().is_empty());
    }

    #[test]
    fn throttles_pause_only_their_account_and_back_off() {
        let all = Limits::default();
        let a = all.get(ErpKind::Netsuite, "A", limits(5));
        let b = all.get(ErpKind::Netsuite, "B", limits(5));
        assert_eq!(a.pause(None), Duration::from_millis(500));
        assert_eq!(a.pause(None), Duration::from_secs(1));
        assert_eq!(a.pause(None), Duration::from_secs(2));
        assert!(a.paused_for().is_some());
        assert!(b.paused_for().is_none());
        assert_eq!(all.closed(), [(ErpKind::Netsuite, "A".to_owned())]);
        a.clear_throttle();
        assert_eq!(
            a.pause(Some(Duration::from_millis(10))),
            Duration::from_millis(10)
        );
        // A shorter pause never shortens a longer one.
        assert!(a.paused_for().unwrap() > Duration::from_millis(500));
    }

    #[test]
    fn new_limits_replace_the_limiter_keeping_its_pause() {
        let all = Limits::default();
        let a = all.get(ErpKind::Netsuite, "A", limits(5));
        a.pause(Some(Duration::from_secs(60)));
        let _held = a.reserve();
        let b = all.get(ErpKind::Netsuite, "A", limits(1));
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(b.paused_for().is_some());
        assert!(
            b.is_full(),
            "the row claimed on the old limiter still counts"
        );
    }

    #[tokio::test]
    async fn permits_bound_concurrency() {
        let all = Limits::default();
        let a = all.get(ErpKind::Netsuite, "A", limits(2));
        let p1 = a.acquire().await.unwrap();
        let _p2 = a.acquire().await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(20), a.acquire()).await;
        assert!(waiting.is_err(), "a third permit waits");
        drop(p1);
        assert!(a.acquire().await.is_some());
    }
}
