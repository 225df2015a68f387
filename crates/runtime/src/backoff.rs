//! Exponential backoff with full jitter for transient failures.

use std::time::Duration;

use std::hash::{BuildHasher, RandomState};

/// Backoff state: `base * 2^attempt`, capped, with the sleep drawn uniformly from
/// `[cap/2, cap]` so many consumers do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff from `base` up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        let cap = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        let jitter = random_u64() % (half.as_millis().max(1) as u64 + 1);
        half + Duration::from_millis(jitter)
    }

    /// Attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A per-call random number: `RandomState` is seeded from the OS per instance, which is all the
/// randomness jitter needs.
fn random_u64() -> u64 {
    RandomState::new().hash_one(std::time::Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(101));
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(2001), "{d:?} over the cap");
        }
        assert!(
            b.next_delay() >= Duration::from_secs(1),
            "late delays sit near the cap"
        );
        b.reset();
        assert_eq!(b.attempts(), 0);
    }
}
