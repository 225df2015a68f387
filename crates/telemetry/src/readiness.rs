//! `/readyz`: ready only when the consumers have started AND every registered dependency check
//! answers (the database, the broker, the schema registry). Checks run concurrently, each under
//! a timeout, on every probe; the answer names what failed.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;

/// What a readiness check returns: `Err` carries a short, human-readable reason.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// Process readiness: a started flag (set once the consumers run) plus named dependency checks.
pub struct Readiness {
    started: AtomicBool,
    checks: RwLock<Vec<(String, CheckFn)>>,
    timeout: Duration,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::with_timeout(Duration::from_secs(3))
    }
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .checks
            .read()
            .map(|c| c.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        f.debug_struct("Readiness")
            .field("started", &self.get())
            .field("checks", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The `/readyz` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    /// Everything answered.
    pub ready: bool,
    /// Names of the failed checks (`started` when the consumers are not running yet).
    pub failed: Vec<String>,
    /// Every check: `ok` or the reason it failed.
    pub checks: BTreeMap<String, String>,
}

impl Readiness {
    /// No checks yet; each check gets `timeout` to answer.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            started: AtomicBool::new(false),
            checks: RwLock::new(Vec::new()),
            timeout,
        }
    }

    /// Marks the consumers started (or stopped).
    pub fn set(&self, ready: bool) {
        self.started.store(ready, Ordering::Relaxed);
    }

    /// Whether the consumers are marked started.
    pub fn get(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// Adds a dependency check, run on every probe.
    pub fn add_check<F>(&self, name: impl Into<String>, check: F)
    where
        F: Fn() -> CheckFuture + Send + Sync + 'static,
    {
        if let Ok(mut checks) = self.checks.write() {
            checks.push((name.into(), Arc::new(check)));
        }
    }

    /// Runs every check concurrently, each bounded by the timeout.
    pub async fn evaluate(&self) -> ReadinessReport {
        let checks: Vec<(String, CheckFn)> =
            self.checks.read().map(|c| c.clone()).unwrap_or_default();
        let timeout = self.timeout;
        let running: Vec<_> = checks
            .into_iter()
            .map(|(name, check)| {
                let task = tokio::spawn(tokio::time::timeout(timeout, check()));
                (name, task)
            })
            .collect();
        let mut results = BTreeMap::new();
        results.insert(
            "started".to_owned(),
            if self.get() {
                Ok(())
            } else {
                Err("consumers not started".to_owned())
            },
        );
        for (name, task) in running {
            let result = match task.await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(format!("no answer within {timeout:?}")),
                Err(e) => Err(format!("check panicked: {e}")),
            };
            results.insert(name, result);
        }
        let failed: Vec<String> = results
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(n, _)| n.clone())
            .collect();
        ReadinessReport {
            ready: failed.is_empty(),
            failed,
            checks: results
                .into_iter()
                .map(|(n, r)| (n, r.err().unwrap_or_else(|| "ok".to_owned())))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_failed_and_slow_checks() {
        let ready = Readiness::with_timeout(Duration::from_millis(100));
        ready.set(true);
        ready.add_check("database", || Box::pin(async { Ok(()) }));
        ready.add_check("broker", || {
            Box::pin(async { Err("no brokers".to_owned()) })
        });
        ready.add_check("registry", || {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            })
        });
        let report = ready.evaluate().await;
        assert!(!report.ready);
        assert_eq!(report.failed, ["broker", "registry"]);
        assert_eq!(report.checks["database"], "ok");
        assert_eq!(report.checks["broker"], "no brokers");
        assert!(report.checks["registry"].starts_with("no answer within"));
    }

    #[tokio::test]
    async fn not_started_is_not_ready_even_when_dependencies_answer() {
        let ready = Readiness::default();
        ready.add_check("database", || Box::pin(async { Ok(()) }));
        let report = ready.evaluate().await;
        assert_eq!(report.failed, ["started"]);
        ready.set(true);
        assert!(ready.evaluate().await.ready);
    }
}
