//! A circuit breaker per webhook endpoint.
//!
//! ```text
//!            N consecutive failures                cool-down passed
//!   Closed ---------------------------> Open -------------------------> HalfOpen (one probe)
//!     ^                                  ^                                 |      |
//!     |          probe fails             +---------------------------------+      |
//!     +---------------------------------------------------------------------------+
//!                                     probe (or any request) succeeds
//! ```
//!
//! While the breaker is open the dispatcher does not call the endpoint: it reschedules the
//! endpoint's rows for when the cool-down ends, without spending an attempt, so an outage of
//! one endpoint neither parks its rows as failed nor slows the other endpoints. Half-open lets
//! exactly one probe through; if the probe's outcome never arrives (its dispatcher died), a new
//! probe is allowed after `probe_timeout`.
//!
//! State is per process (one dispatcher's view), keyed by `tenant/endpoint`. Time is passed
//! in, so the state machine is tested without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (default 5).
    pub failure_threshold: u32,
    /// How long it stays open before a probe (default 30 s).
    pub cool_down: Duration,
    /// How long a probe may stay unanswered before another is allowed (default 60 s).
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(60),
        }
    }
}

/// The observable state of one endpoint's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; `failures` consecutive failures so far.
    Closed {
        /// Consecutive failures.
        failures: u32,
    },
    /// No requests until `until`.
    Open {
        /// End of the cool-down.
        until: Instant,
    },
    /// One probe is in flight since `since`.
    HalfOpen {
        /// When the probe was let through.
        since: Instant,
    },
}

/// Whether a request may go to the endpoint now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send (breaker closed).
    Send,
    /// Send as the half-open probe; its outcome closes or re-opens the breaker.
    Probe,
    /// Do not send; try again after this long.
    Wait(Duration),
}

/// Breakers of every endpoint one dispatcher has talked to.
#[derive(Debug, Default)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    states: Mutex<HashMap<String, BreakerState>>,
}

impl CircuitBreaker {
    /// Breakers with these settings.
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            states: Mutex::new(HashMap::new()),
        }
    }

    fn with_state<T>(&self, key: &str, f: impl FnOnce(&mut BreakerState) -> T) -> T {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let state = states
            .entry(key.to_owned())
            .or_insert(BreakerState::Closed { failures: 0 });
        f(state)
    }

    /// The state of an endpoint's breaker.
    pub fn state(&self, key: &str) -> BreakerState {
        self.with_state(key, |s| *s)
    }

    /// Decides whether a request to `key` may be sent at `now`.
    pub fn admit(&self, key: &str, now: Instant) -> Admission {
        let cfg = self.cfg;
        self.with_state(key, |state| match *state {
            BreakerState::Closed { .. } => Admission::Send,
            BreakerState::Open { until } if now >= until => {
                *state = BreakerState::HalfOpen { since: now };
                Admission::Probe
            }
            BreakerState::Open { until } => Admission::Wait(until - now),
            BreakerState::HalfOpen { since } if now >= since + cfg.probe_timeout => {
                *state = BreakerState::HalfOpen { since: now };
                Admission::Probe
            }
            // The probe is out: look again soon rather than after a whole cool-down, so a
            // recovered endpoint gets its backlog quickly.
            BreakerState::HalfOpen { .. } => {
                Admission::Wait(cfg.cool_down.min(Duration::from_secs(1)))
            }
        })
    }

    /// Records a response that shows the endpoint is up (2xx, or a 4xx it answered
    /// deliberately): the breaker closes.
    pub fn record_success(&self, key: &str) {
        self.with_state(key, |state| *state = BreakerState::Closed { failures: 0 });
    }

    /// Records a failure of the endpoint (timeout, connection error, 5xx, 408, 429).
    pub fn record_failure(&self, key: &str, now: Instant) {
        let cfg = self.cfg;
        self.with_state(key, |state| {
            *state = match *state {
                BreakerState::Closed { failures } if failures + 1 >= cfg.failure_threshold => {
                    BreakerState::Open {
                        until: now + cfg.cool_down,
                    }
                }
                BreakerState::Closed { failures } => BreakerState::Closed {
                    failures: failures + 1,
                },
                BreakerState::HalfOpen { .. } => BreakerState::Open {
                    until: now + cfg.cool_down,
                },
                // A request sent before the breaker opened failed late: keep the cool-down.
                open @ BreakerState::Open { .. } => open,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            cool_down: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(20),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker();
        let t0 = Instant::now();
        b.record_failure("a", t0);
        b.record_failure("a", t0);
        b.record_success("a");
        b.record_failure("a", t0);
        b.record_failure("a", t0);
        assert_eq!(b.state("a"), BreakerState::Closed { failures: 2 });
        assert_eq!(b.admit("a", t0), Admission::Send);
        b.record_failure("a", t0);
        assert_eq!(
            b.state("a"),
            BreakerState::Open {
                until: t0 + Duration::from_secs(10)
            }
        );
        assert_eq!(
            b.admit("a", t0 + Duration::from_secs(4)),
            Admission::Wait(Duration::from_secs(6))
        );
        // Other endpoints are not affected.
        assert_eq!(b.admit("b", t0), Admission::Send);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_outcome_decides() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record_failure("a", t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.admit("a", t1), Admission::Probe);
        assert_eq!(b.state("a"), BreakerState::HalfOpen { since: t1 });
        assert_eq!(b.admit("a", t1), Admission::Wait(Duration::from_secs(1)));
        // The probe fails: open again for a full cool-down.
        b.record_failure("a", t1);
        assert_eq!(
            b.state("a"),
            BreakerState::Open {
                until: t1 + Duration::from_secs(10)
            }
        );
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.admit("a", t2), Admission::Probe);
        b.record_success("a");
        assert_eq!(b.state("a"), BreakerState::Closed { failures: 0 });
        assert_eq!(b.admit("a", t2), Admission::Send);
    }

    #[test]
    fn a_lost_probe_is_replaced_after_the_probe_timeout() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record_failure("a", t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.admit("a", t1), Admission::Probe);
        assert!(matches!(
            b.admit("a", t1 + Duration::from_secs(19)),
            Admission::Wait(_)
        ));
        assert_eq!(b.admit("a", t1 + Duration::from_secs(20)), Admission::Probe);
    }

    #[test]
    fn a_late_failure_does_not_extend_an_open_breaker() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record_failure("a", t0);
        }
        b.record_failure("a", t0 + Duration::from_secs(5));
        assert_eq!(
            b.state("a"),
            BreakerState::Open {
                until: t0 + Duration::from_secs(10)
            }
        );
    }
}
