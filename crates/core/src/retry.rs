//! Retry timing shared by every loop that waits out a transient failure: the consumer loop's
//! paused partitions and the outbox dispatchers' deliveries.

use std::time::Duration;

/// How a server's `Retry-After` combines with the computed backoff: the delay is the larger of
/// the two, with the server's value taken as given or first capped at [`Backoff::max`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// Honoured in full, even beyond `max`.
    Uncapped,
    /// Honoured up to `max`.
    CappedAtMax,
}

/// Exponential backoff with jitter: `base * 2^(attempt-1)`, capped at `max`, then full jitter
/// over its upper half so a burst of failures does not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First retry delay; doubles per attempt.
    pub base: Duration,
    /// Longest retry delay.
    pub max: Duration,
    /// How `Retry-After` combines with the computed delay.
    pub retry_after: RetryAfter,
}

impl Backoff {
    /// A backoff from `base` up to `max` that honours a `Retry-After` only up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            retry_after: RetryAfter::CappedAtMax,
        }
    }

    /// Delay after failed attempt number `attempt` (1-based), in `[raw / 2, raw]` where `raw` is
    /// `base * 2^(attempt-1)` capped at `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max);
        let half = raw / 2;
        half + jitter(raw - half)
    }

    /// [`delay`](Self::delay), but at least the server's `retry_after` (see [`RetryAfter`]).
    pub fn delay_after(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let floor = retry_after.unwrap_or_default();
        let floor = match self.retry_after {
            RetryAfter::Uncapped => floor,
            RetryAfter::CappedAtMax => floor.min(self.max),
        };
        self.delay(attempt).max(floor)
    }

    /// A counter of failed attempts over this schedule, for a loop that keeps its own state.
    pub fn attempts(self) -> Attempts {
        Attempts {
            backoff: self,
            failed: 0,
        }
    }
}

/// A [`Backoff`] schedule and the number of attempts that failed so far.
#[derive(Debug, Clone)]
pub struct Attempts {
    backoff: Backoff,
    failed: u32,
}

impl Attempts {
    /// A schedule from `base` up to `max`, no attempt failed yet.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff::new(base, max).attempts()
    }

    /// Counts a failed attempt and returns how long to wait before the next one.
    pub fn next_delay(&mut self) -> Duration {
        self.failed = self.failed.saturating_add(1);
        self.backoff.delay(self.failed)
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.failed
    }

    /// Back to the first delay after a success.
    pub fn reset(&mut self) {
        self.failed = 0;
    }
}

/// A uniformly random duration in `[0, range)` (microsecond steps; zero for an empty range).
pub fn jitter(range: Duration) -> Duration {
    let range = u64::try_from(range.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros((uuid::Uuid::new_v4().as_u128() as u64) % range.max(1))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn backoff(retry_after: RetryAfter) -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            retry_after,
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_bounds() {
        let b = backoff(RetryAfter::Uncapped);
        let mut distinct = HashSet::new();
        for _ in 0..200 {
            let first = b.delay(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = b.delay(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = b.delay(40);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_secs(1));
            distinct.insert(third);
        }
        assert!(
            distinct.len() > 50,
            "jitter spreads retries: {}",
            distinct.len()
        );
        assert!(
            b.delay(0) <= Duration::from_millis(100),
            "attempt 0 is the first"
        );
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        assert!(jitter(Duration::from_millis(1)) < Duration::from_millis(1));
    }

    #[test]
    fn retry_after_is_a_floor_capped_or_not() {
        let long = Some(Duration::from_secs(30));
        assert_eq!(
            backoff(RetryAfter::Uncapped).delay_after(1, long),
            Duration::from_secs(30)
        );
        assert_eq!(
            backoff(RetryAfter::CappedAtMax).delay_after(1, long),
            Duration::from_secs(1)
        );
        for policy in [RetryAfter::Uncapped, RetryAfter::CappedAtMax] {
            let short = backoff(policy).delay_after(3, Some(Duration::from_millis(1)));
            assert!(short >= Duration::from_millis(200) && short <= Duration::from_millis(400));
            let none = backoff(policy).delay_after(1, None);
            assert!(none >= Duration::from_millis(50) && none <= Duration::from_millis(100));
        }
    }

    #[test]
    fn attempts_walk_the_schedule_and_reset() {
        let mut a = Attempts::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = a.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            assert!(a.next_delay() <= Duration::from_secs(2), "over the cap");
        }
        assert!(
            a.next_delay() >= Duration::from_secs(1),
            "late delays sit near the cap"
        );
        assert_eq!(a.attempts(), 12);
        a.reset();
        assert_eq!(a.attempts(), 0);
    }
}
