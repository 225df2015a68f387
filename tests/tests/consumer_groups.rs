//! Real consumer groups on Apache Kafka: three `ledgerflow run` processes in one group on a
//! 12-partition topic while 200,000 events flow. Each member gets a disjoint share; one is
//! SIGKILLed while it works and a fourth starts; the group rebalances and drains. Then the
//! ledger is counted: nothing lost, nothing applied twice, positions of record equal to the
//! high watermarks and to the offsets the group committed to Kafka.
//!
//! Run once with the classic protocol (cooperative-sticky assignor, `--session-timeout 6s`) and
//! once with KIP-848 (`--group-protocol consumer`; the broker's
//! `group.consumer.session.timeout.ms` is 10 s on the test cluster, see scripts/kafka).
//!
//! The instances run without `--exit-when-idle`: the test decides when the group is drained
//! (every position of record at its partition's high watermark after the producer finished)
//! and stops them with SIGTERM. `GROUPS_EVENTS` changes the event count (default 200,000).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ledgerflow_e2e::{Ledger, PgDatabase, Running, Stack};

const PARTITIONS: u32 = 12;
const CONSUMER: &str = "erp-receivables";
/// Event types the erp-receivables consumer applies (everything else is skipped).
const ERP_TYPES: [&str; 4] = [
    "invoice_finalized",
    "payment_captured",
    "credit_memo_issued",
    "customer_upserted",
];

/// Both tests start four debug binaries and a producer; on two cores they run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn events() -> u64 {
    std::env::var("GROUPS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// Polls `check` every 200 ms until it returns `Some`, panicking with `what` at the deadline.
fn wait_for<T>(deadline: Instant, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Partition numbers from the runtime's debug-formatted list, `[("topic", 0), ("topic", 3)]`.
fn parse_partitions(raw: &str) -> BTreeSet<i32> {
    raw.split(')')
        .filter_map(|chunk| chunk.rsplit_once(',').map(|(_, n)| n.trim()))
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// A member's current assignment from its JSON log: every "partitions assigned" adds, every
/// "partitions revoked" removes (incremental with cooperative-sticky and with KIP-848; a full
/// list with eager assignors, which this also reads correctly).
fn current_assignment(member: &Running) -> BTreeSet<i32> {
    let mut owned = BTreeSet::new();
    for line in member.log().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let parts = parse_partitions(v["fields"]["partitions"].as_str().unwrap_or_default());
        match v["fields"]["message"].as_str() {
            Some("partitions assigned") => owned.extend(parts),
            Some("partitions revoked") => owned.retain(|p| !parts.contains(p)),
            _ => {}
        }
    }
    owned
}

struct Group {
    stack: Stack,
    db: PgDatabase,
    topic: String,
    protocol_args: Vec<&'static str>,
}

impl Group {
    fn new(label: &str, protocol_args: Vec<&'static str>) -> Self {
        let stack = Stack::start();
        let topic = format!("e2e.groups.{label}");
        stack.create_topic(&topic, PARTITIONS);
        Self {
            stack,
            db: PgDatabase::create(&format!("lf_groups_{label}")),
            topic,
            protocol_args,
        }
    }

    fn spawn(&self, name: &str) -> Running {
        let tenants = self.stack.path("tenants.toml");
        let mut args = vec![
            "--log",
            "info",
            "--log-format",
            "json",
            "run",
            "--consumer",
            CONSUMER,
            "--database",
            &self.db.url,
            "--topic",
            &self.topic,
            "--tenants",
            &tenants,
            "--batch-max-records",
            "200",
            "--format",
            "json",
        ];
        args.extend_from_slice(&self.protocol_args);
        self.stack.spawn(&args, name)
    }

    fn positions(&self, ledger: &Ledger) -> BTreeMap<i32, i64> {
        ledger
            .positions()
            .into_iter()
            .filter(|p| p.consumer == CONSUMER && p.topic == self.topic)
            .map(|p| (p.partition, p.next_offset))
            .collect()
    }

    /// Kills one of three members mid-run, starts a fourth, drains, and counts the ledger.
    fn run(&self) {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(600);
        let events = events();
        let rate = (events / 40).max(1000).to_string();
        let manifest = self.stack.path("manifest.json");
        let tenants = self.stack.path("tenants.toml");
        let mut producer = self.stack.spawn(
            &[
                "produce",
                "--topic",
                &self.topic,
                "--tenants",
                "24",
                "--events",
                &events.to_string(),
                "--duplicates",
                "0.05",
                "--rate",
                &rate,
                "--manifest",
                &manifest,
                "--tenants-file",
                &tenants,
            ],
            "produce",
        );
        wait_for(deadline, "the tenants file", || {
            std::path::Path::new(&tenants).exists().then_some(())
        });

        let mut members: Vec<Running> = ["a", "b", "c"].iter().map(|n| self.spawn(n)).collect();
        let spawned = Instant::now();
        // Each member holds a share, the shares are disjoint and cover the topic.
        let shares = wait_for(deadline, "three disjoint shares of 12 partitions", || {
            let shares: Vec<BTreeSet<i32>> = members.iter().map(current_assignment).collect();
            let total: usize = shares.iter().map(BTreeSet::len).sum();
            let union: BTreeSet<i32> = shares.iter().flatten().copied().collect();
            (shares.iter().all(|s| !s.is_empty())
                && total == PARTITIONS as usize
                && union.len() == PARTITIONS as usize)
                .then_some(shares)
        });
        eprintln!(
            "shares after {:?}: a {:?}, b {:?}, c {:?}",
            spawned.elapsed(),
            shares[0],
            shares[1],
            shares[2]
        );

        // The victim works on its share, then dies without a word.
        let ledger = Ledger::open(&self.db.url);
        let victim_parts = shares[1].clone();
        wait_for(deadline, "the victim to commit batches", || {
            let positions = self.positions(&ledger);
            let mine: i64 = victim_parts
                .iter()
                .map(|p| positions.get(p).copied().unwrap_or(0))
                .sum();
            (mine >= 2_000).then_some(())
        });
        let at_kill = self.positions(&ledger);
        assert!(members[1].sigkill(), "the victim was running at the kill");
        let killed = Instant::now();
        members.push(self.spawn("d"));
        eprintln!("killed b after {:?}; started d", spawned.elapsed());

        // Recovery: every one of the victim's partitions commits again past where it stood.
        let recovered = wait_for(deadline, "the victim's partitions to move again", || {
            let positions = self.positions(&ledger);
            let hw = self.stack.kafka().high_watermarks(&self.topic);
            victim_parts
                .iter()
                .all(|p| {
                    let now = positions.get(p).copied().unwrap_or(0);
                    now > at_kill.get(p).copied().unwrap_or(0) || now >= hw[p]
                })
                .then(|| killed.elapsed())
        });
        eprintln!(
            "the victim's partitions {victim_parts:?} committed again {recovered:?} after the kill"
        );

        let status = producer
            .wait_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the producer finishes");
        assert!(status.success(), "produce failed: {}", producer.log());
        let produced_at = Instant::now();

        // Drained: every position of record at its high watermark.
        let hw = self.stack.kafka().high_watermarks(&self.topic);
        wait_for(deadline, "the group to drain", || {
            let positions = self.positions(&ledger);
            hw.iter()
                .all(|(p, h)| positions.get(p).copied().unwrap_or(0) == *h)
                .then_some(())
        });
        eprintln!(
            "drained {:?} after the producer finished ({} records, {:?} in all)",
            produced_at.elapsed(),
            hw.values().sum::<i64>(),
            started.elapsed()
        );

        // The survivors and the newcomer settle on disjoint shares that cover the topic (the
        // group may still be moving partitions to the newcomer when the drain completes).
        let live = [0usize, 2, 3];
        let settle = Instant::now() + Duration::from_secs(60);
        let final_shares = loop {
            let shares: Vec<BTreeSet<i32>> = live
                .iter()
                .map(|i| current_assignment(&members[*i]))
                .collect();
            let total: usize = shares.iter().map(BTreeSet::len).sum();
            let union: BTreeSet<i32> = shares.iter().flatten().copied().collect();
            if total == PARTITIONS as usize
                && union.len() == PARTITIONS as usize
                && shares.iter().all(|s| !s.is_empty())
            {
                break shares;
            }
            assert!(
                Instant::now() < settle,
                "the group did not settle on three disjoint shares: {shares:?}; newcomer's log:\n{}",
                members[3].log()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        eprintln!(
            "final shares: a {:?}, c {:?}, d {:?}",
            final_shares[0], final_shares[1], final_shares[2]
        );

        for i in live {
            let name = members[i].name().to_owned();
            let status = members[i].sigterm(Duration::from_secs(60));
            assert!(
                status.is_some_and(|s| s.success()),
                "{name} exits 0 on SIGTERM ({status:?}):\n{}",
                members[i]
                    .log()
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        self.assert_effect_once(&ledger, &hw, &manifest);
    }

    fn assert_effect_once(&self, ledger: &Ledger, hw: &BTreeMap<i32, i64>, manifest: &str) {
        let manifest_json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(manifest).expect("manifest"))
                .expect("manifest JSON");
        let sent = manifest_json["events_sent"].as_i64().expect("events_sent");
        assert_eq!(
            hw.values().sum::<i64>(),
            sent,
            "the topic holds every produced record"
        );

        // Positions of record = high watermarks = the offsets committed to Kafka.
        let positions = self.positions(ledger);
        let committed = self
            .stack
            .kafka()
            .committed(&self.stack.group(CONSUMER), &self.topic);
        // A partition no tenant hashed to has neither (0 = nothing to consume).
        for (p, h) in hw {
            let position = positions.get(p).copied().unwrap_or(0);
            assert_eq!(position, *h, "partition {p}: position vs high watermark");
            assert_eq!(
                committed.get(p).copied().unwrap_or(0),
                *h,
                "partition {p}: Kafka's committed offset mirrors the position of record \
                 (committed {committed:?})"
            );
        }

        // Every offset has exactly one decision.
        let gaps = ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM positions p \
             CROSS JOIN LATERAL generate_series(0, p.next_offset - 1) AS s(o) \
             WHERE p.consumer = $1 AND NOT EXISTS (SELECT 1 FROM audit_log a \
             WHERE a.consumer = p.consumer AND a.topic = p.topic \
             AND a.partition = p.partition AND a.\"offset\" = s.o)",
            &[CONSUMER],
        );
        let twice = ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT partition, \"offset\" FROM audit_log \
             WHERE consumer = $1 GROUP BY partition, \"offset\" HAVING COUNT(*) > 1) d",
            &[CONSUMER],
        );
        assert_eq!(
            (gaps, twice),
            (0, 0),
            "offsets without a decision, with several"
        );

        // Effect-once, counted per event: one inbox row, one applied decision, at most one
        // journal per (event, kind) and one outbox row per journal.
        let expected: i64 = ERP_TYPES
            .iter()
            .map(|t| manifest_json["event_types"][*t].as_i64().unwrap_or(0))
            .sum();
        assert!(expected > 0, "the manifest has erp events");
        let inbox = ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM inbox WHERE consumer = $1",
            &[CONSUMER],
        );
        let applied = ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_log WHERE consumer = $1 \
             AND decision = 'applied'",
            &[CONSUMER],
        );
        assert_eq!(
            (inbox, applied),
            (expected, expected),
            "inbox rows, applied decisions"
        );
        let journal_dupes = ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT tenant_id, event_id, kind \
             FROM erp_journal_entries GROUP BY 1, 2, 3 HAVING COUNT(*) > 1) d",
            &[],
        );
        let outbox_dupes = ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT journal_id FROM erp_outbox \
             GROUP BY 1 HAVING COUNT(*) > 1) d",
            &[],
        );
        let journals = ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_journal_entries",
            &[],
        );
        let outbox = ledger.scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM erp_outbox", &[]);
        assert_eq!(
            (journal_dupes, outbox_dupes),
            (0, 0),
            "duplicate journals, outbox rows"
        );
        eprintln!(
            "ledger: {sent} records, {expected} distinct erp events applied once, \
             {journals} journals, {outbox} outbox rows, 0 duplicates"
        );

        let (code, report) = self.stack.reconcile(&self.db.url, &["--source", manifest]);
        assert_eq!(code, 0, "reconcile against the manifest:\n{report:#}");
        let (code, report) = self.stack.audit_verify(&self.db.url);
        assert_eq!(code, 0, "audit verify:\n{report:#}");
    }
}

#[test]
fn three_members_share_partitions_and_survive_a_kill_classic_protocol() {
    let _serial = serial();
    Group::new("classic", vec!["--session-timeout", "6s"]).run();
}

#[test]
fn three_members_share_partitions_and_survive_a_kill_kip848_protocol() {
    let _serial = serial();
    Group::new("kip848", vec!["--group-protocol", "consumer"]).run();
}
