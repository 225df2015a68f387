//! What the loop knows about the partitions it holds: each one's buffer, position and retry
//! schedule, which of them have a flush in flight, and the assignment changes that librdkafka's
//! rebalance callbacks report. No I/O: every rule here is unit-tested without a broker.
//!
//! Assignment is incremental (cooperative-sticky, and KIP-848): an `assign` adds partitions and
//! a `revoke` removes some, and the partitions not named keep their state, buffers and flushes.
//! A revoked partition's buffered records are discarded, not flushed: its new owner reads them
//! again from the position of record, and flushing here would only race that owner (the position
//! fence would refuse whichever batch came second). Every assignment change bumps the
//! partition's generation, so a flush that was in flight across the change returns into a newer
//! generation and its state is dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::pipeline::RawRecord;
use crate::{Backoff, RuntimeConfig};

/// A topic partition.
pub(crate) type Key = (String, i32);

/// Per-partition state.
#[derive(Debug, Default)]
pub(crate) struct PartitionState {
    /// The stored position has been checked since assignment.
    pub(crate) synced: bool,
    /// Next offset we expect (records below it are already committed and dropped).
    pub(crate) next: Option<i64>,
    pub(crate) buffer: Vec<RawRecord>,
    pub(crate) first_buffered_at: Option<Instant>,
    /// Set while the partition is paused after a transient failure: its buffered batch is
    /// retried at `Retry::at`, the other partitions carry on.
    pub(crate) retry: Option<Retry>,
}

/// A paused partition's retry schedule.
#[derive(Debug)]
pub(crate) struct Retry {
    pub(crate) backoff: Backoff,
    pub(crate) at: Instant,
}

/// What happened to a received record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// Buffered for the next batch.
    Buffered,
    /// Below the position of record (committed before, re-delivered): dropped, and counted as a
    /// re-read.
    Reread,
    /// Not past the last buffered record (a seek race): dropped.
    Dropped,
}

impl PartitionState {
    /// Buffers a received record, unless it is below the known position or not past the last
    /// buffered one (committed earlier, or re-delivered by a seek race).
    pub(crate) fn accept(&mut self, record: RawRecord) -> Accepted {
        if self.next.is_some_and(|n| record.offset < n) {
            return Accepted::Reread;
        }
        if self
            .buffer
            .last()
            .is_some_and(|r| record.offset <= r.offset)
        {
            return Accepted::Dropped;
        }
        self.buffer.push(record);
        self.first_buffered_at.get_or_insert_with(Instant::now);
        Accepted::Buffered
    }

    /// Whether the buffered batch should be flushed now.
    pub(crate) fn due(&self, config: &RuntimeConfig, now: Instant) -> bool {
        if self.buffer.is_empty() {
            return false;
        }
        match &self.retry {
            Some(retry) => now >= retry.at,
            None => {
                self.buffer.len() >= config.batch_max_records
                    || self
                        .first_buffered_at
                        .is_some_and(|t| now.duration_since(t) >= config.batch_max_wait)
            }
        }
    }
}

/// Records received for a partition while its flush is in flight.
#[derive(Debug)]
struct Arrivals {
    /// When the first of them arrived (their batch wait runs from here).
    since: Instant,
    records: Vec<RawRecord>,
}

/// A partition's state taken out for a flush, with the generation it belongs to.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) key: Key,
    pub(crate) generation: u64,
    pub(crate) state: PartitionState,
}

/// The partitions of one consumer loop.
#[derive(Debug, Default)]
pub(crate) struct Partitions {
    /// Partitions not in flight.
    parts: BTreeMap<Key, PartitionState>,
    /// Partitions with a flush in flight (their state is out, in the flush).
    busy: HashSet<Key>,
    /// Records that arrived for a partition in flight.
    arrivals: HashMap<Key, Arrivals>,
    /// Bumped on every assignment change of a partition.
    generations: HashMap<Key, u64>,
    /// The current assignment, as the rebalance callbacks reported it.
    assigned: BTreeSet<Key>,
    /// When this member last had an assignment change: set at start (joining) and by a revoke,
    /// cleared by an assign. While set the member is joining or rebalancing.
    unsettled_since: Option<Instant>,
    /// Whether any assignment arrived since the start.
    ever_assigned: bool,
}

impl Partitions {
    /// A member that has just subscribed: joining, nothing assigned.
    pub(crate) fn joining(now: Instant) -> Self {
        Self {
            unsettled_since: Some(now),
            ..Self::default()
        }
    }

    /// Partitions added to this member. Each starts unsynced (its position of record is read
    /// before its first batch); partitions not in `list` are untouched.
    pub(crate) fn assign(&mut self, list: &[Key]) {
        for key in list {
            *self.generations.entry(key.clone()).or_default() += 1;
            self.arrivals.remove(key);
            self.parts.insert(key.clone(), PartitionState::default());
            self.assigned.insert(key.clone());
        }
        self.ever_assigned = true;
        self.unsettled_since = None;
    }

    /// Partitions taken from this member: their buffers are discarded (the new owner re-reads
    /// them from the position of record) and a flush in flight will be dropped on return.
    /// Returns the number of buffered records discarded.
    pub(crate) fn revoke(&mut self, list: &[Key], now: Instant) -> usize {
        let mut discarded = 0;
        for key in list {
            *self.generations.entry(key.clone()).or_default() += 1;
            discarded += self.arrivals.remove(key).map_or(0, |a| a.records.len());
            discarded += self.parts.remove(key).map_or(0, |s| s.buffer.len());
            self.assigned.remove(key);
        }
        self.unsettled_since.get_or_insert(now);
        discarded
    }

    /// A record from the broker.
    pub(crate) fn receive(&mut self, record: RawRecord) -> Accepted {
        let key = (record.topic.clone(), record.partition);
        if self.busy.contains(&key) && !self.parts.contains_key(&key) {
            let waiting = self.arrivals.entry(key).or_insert_with(|| Arrivals {
                since: Instant::now(),
                records: Vec::new(),
            });
            waiting.records.push(record);
            return Accepted::Buffered;
        }
        self.parts.entry(key).or_default().accept(record)
    }

    /// Takes out the partitions whose batch is due and marks them in flight.
    pub(crate) fn take_due(&mut self, config: &RuntimeConfig, now: Instant) -> Vec<Lease> {
        let due: Vec<Key> = self
            .parts
            .iter()
            .filter(|(k, s)| !self.busy.contains(*k) && s.due(config, now))
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .filter_map(|key| {
                let state = self.parts.remove(&key)?;
                self.busy.insert(key.clone());
                let generation = self.generations.get(&key).copied().unwrap_or_default();
                Some(Lease {
                    key,
                    generation,
                    state,
                })
            })
            .collect()
    }

    /// Whether a flush of `generation` still belongs to the partition's current assignment;
    /// clears the in-flight mark either way.
    pub(crate) fn settle(&mut self, key: &Key, generation: u64) -> bool {
        self.busy.remove(key);
        self.generations.get(key).copied().unwrap_or_default() == generation
    }

    /// Puts a returned partition back, with the records that arrived during its flush (unless
    /// the flush moved the fetch position: then they are fetched again).
    pub(crate) fn restore(&mut self, key: Key, mut state: PartitionState, seeked: bool) {
        if let Some(waiting) = self.arrivals.remove(&key)
            && !seeked
        {
            for record in waiting.records {
                state.accept(record);
            }
            // They have waited since they arrived, not since the flush returned.
            if let Some(at) = state.first_buffered_at.as_mut() {
                *at = (*at).min(waiting.since);
            }
        }
        self.parts.insert(key, state);
    }

    /// Whether anything is buffered, retrying or in flight.
    pub(crate) fn pending(&self) -> bool {
        !self.busy.is_empty()
            || self
                .parts
                .values()
                .any(|s| !s.buffer.is_empty() || s.retry.is_some())
    }

    /// Buffered records (not counting flushes in flight).
    pub(crate) fn buffered(&self) -> usize {
        self.parts.values().map(|s| s.buffer.len()).sum::<usize>()
            + self
                .arrivals
                .values()
                .map(|a| a.records.len())
                .sum::<usize>()
    }

    /// This member's current assignment.
    pub(crate) fn assigned(&self) -> &BTreeSet<Key> {
        &self.assigned
    }

    /// Whether any assignment arrived since the start.
    pub(crate) fn ever_assigned(&self) -> bool {
        self.ever_assigned
    }

    /// How long this member has been joining or rebalancing, if it is.
    pub(crate) fn unsettled_for(&self, now: Instant) -> Option<Duration> {
        self.unsettled_since.map(|t| now.duration_since(t))
    }

    /// The partitions not in flight, for the shutdown flush.
    pub(crate) fn idle_states(&mut self) -> impl Iterator<Item = (&Key, &mut PartitionState)> {
        self.parts.iter_mut()
    }

    /// The next offset of every held partition whose position is known (for the final offset
    /// commit at shutdown).
    pub(crate) fn known_positions(&self) -> Vec<(Key, i64)> {
        self.parts
            .iter()
            .filter(|(k, _)| self.assigned.contains(*k))
            .filter_map(|(k, s)| s.next.map(|n| (k.clone(), n)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GroupProtocol, TopicSelector};

    fn config(max: usize, wait_ms: u64) -> RuntimeConfig {
        RuntimeConfig {
            brokers: String::new(),
            group_prefix: "g".into(),
            topics: vec![TopicSelector::Name("t".into())],
            batch_max_records: max,
            batch_max_wait: Duration::from_millis(wait_ms),
            exit_when_idle: None,
            max_wait: None,
            shutdown_timeout: Duration::from_secs(30),
            kafka_properties: vec![],
            group_protocol: GroupProtocol::Classic,
            instance_id: None,
            session_timeout: Duration::from_secs(45),
            retry_base: Duration::from_millis(10),
            retry_max: Duration::from_millis(100),
            status: None,
        }
    }

    fn key(p: i32) -> Key {
        ("t".to_owned(), p)
    }

    fn record(p: i32, offset: i64) -> RawRecord {
        RawRecord {
            topic: "t".into(),
            partition: p,
            offset,
            key: None,
            value: Some(vec![0]),
            headers: vec![],
        }
    }

    #[test]
    fn incremental_assign_keeps_the_partitions_it_does_not_name() {
        let mut t = Partitions::joining(Instant::now());
        t.assign(&[key(0), key(1)]);
        assert_eq!(t.receive(record(0, 0)), Accepted::Buffered);
        assert_eq!(t.receive(record(1, 0)), Accepted::Buffered);
        // A cooperative rebalance hands this member partition 2 as well.
        t.assign(&[key(2)]);
        assert_eq!(t.buffered(), 2, "partitions 0 and 1 keep their buffers");
        assert_eq!(t.assigned().len(), 3);
    }

    #[test]
    fn revoke_discards_only_the_revoked_partitions_buffers() {
        let now = Instant::now();
        let mut t = Partitions::joining(now);
        t.assign(&[key(0), key(1), key(2)]);
        for offset in 0..3 {
            t.receive(record(0, offset));
            t.receive(record(1, offset));
        }
        assert_eq!(t.revoke(&[key(1)], now), 3);
        assert_eq!(t.buffered(), 3, "partition 0 keeps its three records");
        assert_eq!(
            t.assigned().iter().cloned().collect::<Vec<_>>(),
            vec![key(0), key(2)]
        );
        assert!(
            t.unsettled_for(now).is_some(),
            "a revoke starts a rebalance"
        );
        t.assign(&[]);
        assert!(
            t.unsettled_for(now).is_none(),
            "the assign that follows ends it"
        );
    }

    #[test]
    fn a_flush_across_a_revoke_and_reassign_is_dropped_on_return() {
        let now = Instant::now();
        let mut t = Partitions::joining(now);
        t.assign(&[key(0)]);
        t.receive(record(0, 0));
        let mut leases = t.take_due(&config(1, 1000), now);
        assert_eq!(leases.len(), 1);
        let lease = leases.remove(0);
        // While it commits, the partition goes away and comes back (a new generation).
        t.revoke(&[key(0)], now);
        t.assign(&[key(0)]);
        assert!(!t.settle(&lease.key, lease.generation), "stale generation");
        // The fresh state is unsynced: it re-reads its position of record.
        t.receive(record(0, 1));
        let fresh = t.take_due(&config(1, 1000), now);
        assert_eq!(fresh.len(), 1);
        assert!(!fresh[0].state.synced);
        assert!(t.settle(&fresh[0].key, fresh[0].generation));
    }

    #[test]
    fn records_arriving_during_a_flush_join_the_buffer_unless_it_seeked() {
        let now = Instant::now();
        let mut t = Partitions::joining(now);
        t.assign(&[key(0)]);
        t.receive(record(0, 0));
        let mut lease = t.take_due(&config(1, 1000), now).remove(0);
        // The flush took the batch (and committed it).
        lease.state.buffer.clear();
        lease.state.next = Some(1);
        assert_eq!(t.receive(record(0, 1)), Accepted::Buffered);
        assert!(t.pending(), "in flight");
        assert!(t.settle(&lease.key, lease.generation));
        t.restore(lease.key.clone(), lease.state, false);
        assert_eq!(t.buffered(), 1);

        let mut lease = t.take_due(&config(1, 1000), now).remove(0);
        lease.state.buffer.clear();
        t.receive(record(0, 2));
        assert!(t.settle(&lease.key, lease.generation));
        t.restore(lease.key, lease.state, true);
        assert_eq!(t.buffered(), 0, "a seek re-fetches them");
    }

    #[test]
    fn records_below_the_position_are_counted_as_rereads() {
        let mut s = PartitionState {
            next: Some(10),
            ..PartitionState::default()
        };
        assert_eq!(s.accept(record(0, 9)), Accepted::Reread);
        assert_eq!(s.accept(record(0, 10)), Accepted::Buffered);
        assert_eq!(s.accept(record(0, 10)), Accepted::Dropped);
        assert_eq!(s.buffer.len(), 1);
    }

    #[test]
    fn a_batch_is_due_when_full_or_old_or_its_retry_is_due() {
        let now = Instant::now();
        let cfg = config(2, 50);
        let mut s = PartitionState::default();
        assert!(!s.due(&cfg, now), "empty");
        s.accept(record(0, 0));
        assert!(!s.due(&cfg, now));
        assert!(s.due(&cfg, now + Duration::from_millis(60)), "old enough");
        s.accept(record(0, 1));
        assert!(s.due(&cfg, now), "full");
        s.retry = Some(Retry {
            backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
            at: now + Duration::from_secs(1),
        });
        assert!(!s.due(&cfg, now), "paused until its retry");
        assert!(s.due(&cfg, now + Duration::from_secs(2)));
    }

    #[test]
    fn known_positions_cover_only_held_partitions() {
        let now = Instant::now();
        let mut t = Partitions::joining(now);
        t.assign(&[key(0), key(1)]);
        for (_, s) in t.idle_states() {
            s.next = Some(7);
        }
        t.revoke(&[key(1)], now);
        assert_eq!(t.known_positions(), vec![(key(0), 7)]);
    }
}
