//! "Drained" for `--exit-when-idle`: the run may end only when nothing is left to do, not merely
//! when no record has arrived for a while.
//!
//! A quiet poll proves little on a real group. After a crash the dead member keeps its
//! partitions until its session expires (45 s by default); a member that is joining or waiting
//! out a rebalance holds nothing yet; a peer may still be working through a backlog. So once the
//! loop has been idle for the configured window it asks, about once a second:
//!
//! 1. every partition of the subscribed topics (regex subscriptions matched against the
//!    cluster's topics) and its high watermark, from the broker;
//! 2. the consumer's positions of record, from the database (every member of the group writes
//!    them, so this member sees its peers' progress too);
//! 3. when some partition still has records without a decision, who holds it, from the group's
//!    description (classic member assignments are decoded; for a KIP-848 group the broker
//!    describes members the same way).
//!
//! The run is drained when every partition's position of record has reached its high watermark
//! (an empty partition, or one whose records all expired, needs no position). Otherwise the
//! reason is reported as a [`WaitReason`], so an operator sees *why* a run has not ended:
//! joining, rebalancing, a member (possibly dead, until its session expires) holding partitions
//! with lag, or partitions nobody holds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A topic partition.
pub(crate) type Key = (String, i32);

/// One partition as the drain check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionProgress {
    /// Earliest offset the broker still holds.
    pub(crate) low: i64,
    /// High watermark: the offset the next record will get.
    pub(crate) high: i64,
    /// Position of record (next offset to process), if the consumer has one.
    pub(crate) position: Option<i64>,
}

impl PartitionProgress {
    /// Records at or after the position (or the low watermark) without a decision.
    pub(crate) fn lag(&self) -> i64 {
        let from = self.position.unwrap_or(self.low).max(self.low);
        (self.high - from).max(0)
    }
}

/// A group member, as the group's description names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberView {
    /// The coordinator's member id.
    pub(crate) id: String,
    /// `client.id` and host, for people.
    pub(crate) client: String,
    /// Partitions assigned to it (decoded from the classic assignment bytes; empty when they
    /// could not be decoded).
    pub(crate) partitions: BTreeSet<Key>,
}

/// The group, as the coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct GroupView {
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty`, `Dead`, ...
    pub(crate) state: String,
    /// Its members.
    pub(crate) members: Vec<MemberView>,
}

/// Why a run is not drained yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WaitReason {
    /// This member has never been assigned a partition and the group is not stable.
    Joining,
    /// The coordinator is moving partitions.
    Rebalancing {
        /// Group state.
        state: String,
    },
    /// This member holds partitions whose records are not all decided yet.
    Consuming {
        /// How many partitions.
        partitions: usize,
        /// Records left.
        lag: i64,
    },
    /// Another member holds partitions with lag: it is working, or it is dead and its session
    /// has not expired yet.
    HeldBy {
        /// `client.id@host` of the member.
        member: String,
        /// How many partitions.
        partitions: usize,
        /// Records left.
        lag: i64,
    },
    /// Partitions with lag that no member holds (or whose holder is unknown).
    Unassigned {
        /// Up to a few of them.
        partitions: Vec<Key>,
        /// Records left.
        lag: i64,
    },
    /// The broker or the database did not answer the drain check.
    Unknown {
        /// What failed.
        error: String,
    },
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Joining => write!(f, "joining the group (no partitions assigned yet)"),
            Self::Rebalancing { state } => write!(f, "the group is rebalancing (state {state})"),
            Self::Consuming { partitions, lag } => {
                write!(
                    f,
                    "{lag} records left on {partitions} partitions of this member"
                )
            }
            Self::HeldBy {
                member,
                partitions,
                lag,
            } => write!(
                f,
                "member {member} holds {partitions} partitions with {lag} records left \
                 (waiting for its progress, or for its session to expire if it is gone)"
            ),
            Self::Unassigned { partitions, lag } => {
                let names: Vec<String> =
                    partitions.iter().map(|(t, p)| format!("{t}/{p}")).collect();
                write!(
                    f,
                    "{lag} records left on partitions no member holds ({})",
                    names.join(", ")
                )
            }
            Self::Unknown { error } => write!(f, "cannot tell whether drained: {error}"),
        }
    }
}

/// The verdict of one drain check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DrainStatus {
    /// Every partition's records have a decision.
    Drained,
    /// Not yet, and why.
    Waiting(WaitReason),
}

/// Judges the progress of every subscribed partition. `mine` is this member's assignment,
/// `ever_assigned` whether it has had one since it started, `group` the coordinator's
/// description when it could be read.
pub(crate) fn judge(
    progress: &BTreeMap<Key, PartitionProgress>,
    mine: &BTreeSet<Key>,
    ever_assigned: bool,
    group: Option<&GroupView>,
) -> DrainStatus {
    let lagging: BTreeMap<&Key, i64> = progress
        .iter()
        .map(|(k, p)| (k, p.lag()))
        .filter(|(_, lag)| *lag > 0)
        .collect();
    if lagging.is_empty() {
        return DrainStatus::Drained;
    }
    let state = group.map_or("", |g| g.state.as_str());
    let rebalancing = matches!(
        state,
        "PreparingRebalance" | "CompletingRebalance" | "Assigning" | "Reconciling"
    );
    if !ever_assigned && mine.is_empty() && state != "Stable" {
        return DrainStatus::Waiting(WaitReason::Joining);
    }
    if rebalancing {
        return DrainStatus::Waiting(WaitReason::Rebalancing {
            state: state.to_owned(),
        });
    }
    // Our own lagging partitions first: they are the ones this member can act on.
    let own: Vec<i64> = lagging
        .iter()
        .filter(|(k, _)| mine.contains(**k))
        .map(|(_, lag)| *lag)
        .collect();
    if !own.is_empty() {
        return DrainStatus::Waiting(WaitReason::Consuming {
            partitions: own.len(),
            lag: own.iter().sum(),
        });
    }
    // Then the member holding the most records left.
    let mut held: BTreeMap<&str, (usize, i64)> = BTreeMap::new();
    let mut nobody: Vec<(&Key, i64)> = Vec::new();
    for (key, lag) in &lagging {
        let holder = group.and_then(|g| g.members.iter().find(|m| m.partitions.contains(*key)));
        match holder {
            Some(m) => {
                let e = held.entry(m.client.as_str()).or_default();
                e.0 += 1;
                e.1 += lag;
            }
            None => nobody.push((key, *lag)),
        }
    }
    if let Some((member, (partitions, lag))) = held.into_iter().max_by_key(|(_, (_, lag))| *lag) {
        return DrainStatus::Waiting(WaitReason::HeldBy {
            member: member.to_owned(),
            partitions,
            lag,
        });
    }
    DrainStatus::Waiting(WaitReason::Unassigned {
        lag: nobody.iter().map(|(_, l)| l).sum(),
        partitions: nobody.into_iter().take(5).map(|(k, _)| k.clone()).collect(),
    })
}

/// Decodes the partitions of a classic consumer-protocol assignment
/// (`version: int16, [topic: string, [partition: int32]], user_data: bytes`; versions 0-3 share
/// this prefix). `None` on anything malformed: the caller then treats the holder as unknown.
pub(crate) fn decode_assignment(bytes: &[u8]) -> Option<BTreeSet<Key>> {
    let mut r = Reader(bytes);
    let _version = r.i16()?;
    let topics = r.i32()?;
    let mut out = BTreeSet::new();
    for _ in 0..topics.max(0) {
        let len = usize::try_from(r.i16()?).ok()?;
        let topic = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
        let n = r.i32()?;
        for _ in 0..n.max(0) {
            out.insert((topic.clone(), r.i32()?));
        }
    }
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> Key {
        ("t".to_owned(), p)
    }

    fn progress(entries: &[(i32, i64, i64, Option<i64>)]) -> BTreeMap<Key, PartitionProgress> {
        entries
            .iter()
            .map(|&(p, low, high, position)| {
                (
                    key(p),
                    PartitionProgress {
                        low,
                        high,
                        position,
                    },
                )
            })
            .collect()
    }

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = 1i16.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (t, ps) in topics {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
            b.extend((ps.len() as i32).to_be_bytes());
            for p in *ps {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes());
        b
    }

    fn member(client: &str, ps: &[i32]) -> MemberView {
        MemberView {
            id: format!("{client}-id"),
            client: client.to_owned(),
            partitions: ps.iter().map(|p| key(*p)).collect(),
        }
    }

    #[test]
    fn drained_only_when_every_partition_reached_its_high_watermark() {
        let mine = BTreeSet::from([key(0), key(1)]);
        let all_done = progress(&[(0, 0, 10, Some(10)), (1, 0, 0, None), (2, 5, 5, None)]);
        assert_eq!(judge(&all_done, &mine, true, None), DrainStatus::Drained);
        let one_left = progress(&[(0, 0, 10, Some(9)), (1, 0, 0, None)]);
        assert_eq!(
            judge(&one_left, &mine, true, None),
            DrainStatus::Waiting(WaitReason::Consuming {
                partitions: 1,
                lag: 1
            })
        );
    }

    #[test]
    fn a_partition_without_a_position_counts_from_the_low_watermark() {
        let p = PartitionProgress {
            low: 40,
            high: 50,
            position: None,
        };
        assert_eq!(p.lag(), 10);
        let behind_retention = PartitionProgress {
            low: 40,
            high: 50,
            position: Some(10),
        };
        assert_eq!(behind_retention.lag(), 10);
    }

    #[test]
    fn a_restarted_member_waits_for_the_dead_members_partitions() {
        // The scenario of a kill -9 and a restart: nothing assigned to the new member yet, the
        // dead member still listed with every partition until its session expires.
        let p = progress(&[(0, 0, 100, Some(20)), (1, 0, 100, None)]);
        let dead = GroupView {
            state: "Stable".into(),
            members: vec![member("ledgerflow-erp@/127.0.0.1", &[0, 1])],
        };
        let none = BTreeSet::new();
        assert_eq!(
            judge(&p, &none, false, Some(&dead)),
            DrainStatus::Waiting(WaitReason::HeldBy {
                member: "ledgerflow-erp@/127.0.0.1".into(),
                partitions: 2,
                lag: 180
            })
        );
        let joining = GroupView {
            state: "PreparingRebalance".into(),
            members: vec![],
        };
        assert_eq!(
            judge(&p, &none, false, Some(&joining)),
            DrainStatus::Waiting(WaitReason::Joining)
        );
        assert_eq!(
            judge(&p, &BTreeSet::from([key(2)]), true, Some(&joining)),
            DrainStatus::Waiting(WaitReason::Rebalancing {
                state: "PreparingRebalance".into()
            })
        );
        let empty = GroupView {
            state: "Stable".into(),
            members: vec![member("me", &[])],
        };
        let status = judge(&p, &none, true, Some(&empty));
        assert!(
            matches!(
                status,
                DrainStatus::Waiting(WaitReason::Unassigned { lag: 180, .. })
            ),
            "{status:?}"
        );
    }

    #[test]
    fn reasons_read_as_sentences() {
        let r = WaitReason::HeldBy {
            member: "c@h".into(),
            partitions: 3,
            lag: 7,
        };
        assert!(
            r.to_string()
                .contains("member c@h holds 3 partitions with 7 records left")
        );
        let u = WaitReason::Unassigned {
            partitions: vec![key(1), key(4)],
            lag: 9,
        };
        assert!(u.to_string().ends_with("(t/1, t/4)"), "{u}");
    }

    #[test]
    fn decodes_classic_assignments_and_refuses_garbage() {
        let bytes = assignment(&[("a", &[0, 2]), ("b", &[1])]);
        assert_eq!(
            decode_assignment(&bytes),
            Some(BTreeSet::from([
                ("a".to_owned(), 0),
                ("a".to_owned(), 2),
                ("b".to_owned(), 1)
            ]))
        );
        assert_eq!(decode_assignment(&bytes[..bytes.len() - 9]), None);
        assert_eq!(decode_assignment(&[0]), None);
        assert_eq!(decode_assignment(&[0, 1, 0, 0, 0, 1, 0x7f, 0x7f]), None);
    }
}
