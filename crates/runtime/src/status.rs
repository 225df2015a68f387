//! What a consumer loop tells the rest of the process about its group membership: how many
//! partitions it holds and since when it has been joining or rebalancing. `/readyz` reads it,
//! so a member stuck without an assignment during a rebalance is reported not ready, with the
//! reason, while `/healthz` stays up.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One consumer's membership, as last reported by its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// Partitions held.
    pub partitions: usize,
    /// Since when the member has been joining or rebalancing (no assignment since a revoke or
    /// since the start), if it is.
    pub unsettled_since: Option<Instant>,
    /// Whether it ever had an assignment.
    pub ever_assigned: bool,
}

/// The membership of every consumer loop of the process, shared with the readiness checks.
#[derive(Debug, Default)]
pub struct MemberStatus {
    consumers: Mutex<BTreeMap<String, Membership>>,
}

impl MemberStatus {
    /// Records a consumer's membership.
    pub fn report(&self, consumer: &str, membership: Membership) {
        if let Ok(mut map) = self.consumers.lock() {
            map.insert(consumer.to_owned(), membership);
        }
    }

    /// A consumer's last reported membership.
    pub fn get(&self, consumer: &str) -> Option<Membership> {
        self.consumers.lock().ok()?.get(consumer).copied()
    }

    /// `Err(reason)` when some consumer has been joining or rebalancing without an assignment
    /// for longer than `threshold`. A member that holds no partitions in a stable group (more
    /// instances than partitions) is ready: it is a standby, not a stuck member.
    pub fn check(&self, threshold: Duration, now: Instant) -> Result<(), String> {
        let Ok(map) = self.consumers.lock() else {
            return Err("membership status unavailable".to_owned());
        };
        let stuck: Vec<String> = map
            .iter()
            .filter_map(|(name, m)| {
                let since = m.unsettled_since?;
                let waited = now.saturating_duration_since(since);
                (m.partitions == 0 && waited > threshold).then(|| {
                    let what = if m.ever_assigned {
                        "rebalancing"
                    } else {
                        "joining its group"
                    };
                    format!(
                        "{name}: {what} with no partitions for {} s",
                        waited.as_secs()
                    )
                })
            })
            .collect();
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(stuck.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_without_partitions_for_too_long_during_a_rebalance_is_not_ready() {
        let status = MemberStatus::default();
        let start = Instant::now();
        status.report(
            "erp",
            Membership {
                partitions: 0,
                unsettled_since: Some(start),
                ever_assigned: true,
            },
        );
        let threshold = Duration::from_secs(30);
        assert!(
            status
                .check(threshold, start + Duration::from_secs(10))
                .is_ok()
        );
        let err = status
            .check(threshold, start + Duration::from_secs(31))
            .expect_err("stuck");
        assert_eq!(err, "erp: rebalancing with no partitions for 31 s");
    }

    #[test]
    fn a_standby_member_in_a_stable_group_is_ready() {
        let status = MemberStatus::default();
        let start = Instant::now();
        status.report(
            "erp",
            Membership {
                partitions: 0,
                unsettled_since: None,
                ever_assigned: true,
            },
        );
        status.report(
            "warehouse",
            Membership {
                partitions: 3,
                unsettled_since: Some(start),
                ever_assigned: true,
            },
        );
        assert!(
            status
                .check(Duration::ZERO, start + Duration::from_secs(60))
                .is_ok()
        );
        status.report(
            "notifications",
            Membership {
                partitions: 0,
                unsettled_since: Some(start),
                ever_assigned: false,
            },
        );
        let err = status
            .check(Duration::from_secs(5), start + Duration::from_secs(6))
            .expect_err("joining too long");
        assert!(err.contains("notifications: joining its group"), "{err}");
    }
}
