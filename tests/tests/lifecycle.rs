//! The consumer lifecycle on Apache Kafka, as an operator of a consumer fleet meets it:
//!
//! 1. After a kill -9, ONE run with `--exit-when-idle 5s` drains everything: it waits while the
//!    dead member's session holds the partitions, says why, and ends only at lag 0.
//! 2. A static member (`--instance-id`) restarted after a kill -9 commits again within seconds;
//!    a dynamic one waits for the dead member's session to expire.
//! 3. SIGTERM mid-run exits 0 within the deadline, and the restart re-reads no record the first
//!    run had committed.
//! 4. A rolling restart of three static members while 200,000 events flow leaves no partition
//!    unconsumed for more than 10 s, loses nothing and applies nothing twice.
//!
//! Each test prints its figures. `LIFECYCLE_EVENTS` scales the rolling restart (default 200,000).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ledgerflow_e2e::{Ledger, PgDatabase, Running, Stack};

const CONSUMER: &str = "erp-receivables";
const ERP_TYPES: [&str; 4] = [
    "invoice_finalized",
    "payment_captured",
    "credit_memo_issued",
    "customer_upserted",
];

/// Every test here runs several debug binaries and a producer; on two cores one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn wait_for<T>(deadline: Instant, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A topic with a produced workload and a fresh Postgres ledger.
struct Fixture {
    stack: Stack,
    db: PgDatabase,
    topic: String,
    manifest: String,
    tenants: String,
}

impl Fixture {
    fn new(label: &str, partitions: u32) -> Self {
        let stack = Stack::start();
        let topic = format!("e2e.lifecycle.{label}");
        stack.create_topic(&topic, partitions);
        let manifest = stack.path("manifest.json");
        let tenants = stack.path("tenants.toml");
        Self {
            db: PgDatabase::create(&format!("lf_life_{label}")),
            stack,
            topic,
            manifest,
            tenants,
        }
    }

    /// `ledgerflow produce` of `events` (at `rate` per second, or as fast as it goes).
    fn produce_args(&self, events: u64, rate: Option<u64>) -> Vec<String> {
        let mut args: Vec<String> = [
            "produce",
            "--topic",
            &self.topic,
            "--tenants",
            "16",
            "--events",
            &events.to_string(),
            "--duplicates",
            "0.05",
            "--manifest",
            &self.manifest,
            "--tenants-file",
            &self.tenants,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some(rate) = rate {
            args.extend(["--rate".to_owned(), rate.to_string()]);
        }
        args
    }

    fn produce(&self, events: u64) {
        let args = self.produce_args(events, None);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.stack.ledgerflow_ok(&args);
    }

    fn spawn_producer(&self, events: u64, rate: u64) -> Running {
        let args = self.produce_args(events, Some(rate));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let producer = self.stack.spawn(&args, "produce");
        let deadline = Instant::now() + Duration::from_secs(60);
        wait_for(deadline, "the tenants file", || {
            std::path::Path::new(&self.tenants).exists().then_some(())
        });
        producer
    }

    fn spawn_run(&self, name: &str, extra: &[&str]) -> Running {
        let mut args = vec![
            "run",
            "--consumer",
            CONSUMER,
            "--database",
            &self.db.url,
            "--topic",
            &self.topic,
            "--tenants",
            &self.tenants,
            "--batch-max-records",
            "200",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
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

    fn committed(&self, ledger: &Ledger) -> i64 {
        self.positions(ledger).values().sum()
    }

    /// Lag 0 everywhere, every expected event applied once, reconcile and audit clean.
    fn assert_complete(&self, ledger: &Ledger) {
        let hw = self.stack.kafka().high_watermarks(&self.topic);
        let positions = self.positions(ledger);
        for (p, h) in &hw {
            assert_eq!(
                positions.get(p).copied().unwrap_or(0),
                *h,
                "partition {p}: position of record at the high watermark"
            );
        }
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&self.manifest).expect("manifest"))
                .expect("manifest JSON");
        let expected: i64 = ERP_TYPES
            .iter()
            .map(|t| m["event_types"][*t].as_i64().unwrap_or(0))
            .sum();
        let inbox = ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM inbox WHERE consumer = $1",
            &[CONSUMER],
        );
        assert_eq!(inbox, expected, "every erp event applied exactly once");
        // One journal per document and role: an invoice or credit memo posted twice (under any
        // event id) would show here before reconcile even runs.
        let doubled = ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT tenant_id, kind, document_id \
             FROM erp_journal_entries WHERE kind IN ('invoice', 'credit_memo') \
             GROUP BY tenant_id, kind, document_id HAVING COUNT(*) > 1) d",
            &[],
        );
        assert_eq!(doubled, 0, "no document posted twice");
        let (code, report) = self
            .stack
            .reconcile(&self.db.url, &["--source", &self.manifest]);
        assert_eq!(code, 0, "reconcile against the manifest:\n{report:#}");
        let (code, report) = self.stack.audit_verify(&self.db.url);
        assert_eq!(code, 0, "audit verify:\n{report:#}");
    }
}

/// The run summary a `--format json` run prints on exit.
fn summary(run: &Running) -> serde_json::Value {
    let out = run.stdout();
    let v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("run summary JSON ({e}):\n{out}\n{}", run.log()));
    v.as_array()
        .and_then(|a| a.iter().find(|s| s["consumer"] == CONSUMER))
        .cloned()
        .unwrap_or_else(|| panic!("no {CONSUMER} summary in {v:#}"))
}

#[test]
fn one_run_after_a_kill_drains_everything() {
    let _serial = serial();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    let f = Fixture::new("kill", 6);
    f.produce(20_000);
    let ledger = Ledger::open(&f.db.url);
    let mut first = f.spawn_run("first", &["--exit-when-idle", "5s"]);
    wait_for(deadline, "the first run to commit", || {
        (f.committed(&ledger) > 0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        first.sigkill(),
        "the first run was still working at the kill"
    );
    let at_kill = f.committed(&ledger);
    let hw_total: i64 = f.stack.kafka().high_watermarks(&f.topic).values().sum();
    assert!(
        at_kill < hw_total,
        "the kill left work: {at_kill} of {hw_total}"
    );

    // The same command again, once. The dead member holds the partitions for its session
    // (45 s by default); the run must wait that out instead of calling an empty poll idle.
    let restarted = Instant::now();
    let mut second = f.spawn_run("second", &["--exit-when-idle", "5s"]);
    let status = second
        .wait_timeout(deadline.saturating_duration_since(Instant::now()))
        .expect("the second run ends on its own");
    assert!(
        status.success(),
        "the second run exits 0:\n{}",
        second.log()
    );
    let s = summary(&second);
    assert_eq!(s["exit"], "drained", "{s:#}");
    assert!(
        second.log().contains("idle but not drained yet"),
        "the run said why it waited:\n{}",
        second.log()
    );
    f.assert_complete(&ledger);
    eprintln!(
        "kill -9 after {at_kill} of {hw_total} records; the next run drained the rest ({} applied) \
         in {:?} and exited by itself",
        s["applied"],
        restarted.elapsed()
    );
}

#[test]
fn max_wait_ends_a_run_that_cannot_drain_with_the_reason() {
    let _serial = serial();
    let f = Fixture::new("maxwait", 2);
    f.produce(2_000);
    let ledger = Ledger::open(&f.db.url);
    // A member that holds the partitions and never commits: killed -9, its session keeps them
    // for 45 s, longer than the new run's ceiling.
    let mut holder = f.spawn_run("holder", &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    wait_for(deadline, "the holder to commit", || {
        (f.committed(&ledger) > 0).then_some(())
    });
    assert!(holder.sigkill());
    f.produce(500);
    let mut run = f.spawn_run("bounded", &["--exit-when-idle", "2s", "--max-wait", "12s"]);
    let status = run
        .wait_timeout(Duration::from_secs(60))
        .expect("the bounded run ends");
    assert_eq!(
        status.code(),
        Some(3),
        "exit 3 = not drained:\n{}",
        run.log()
    );
    let s = summary(&run);
    assert_eq!(s["exit"], "not_drained");
    let reason = s["not_drained"].as_str().unwrap_or_default();
    assert!(
        reason.contains("holds") || reason.contains("joining") || reason.contains("rebalancing"),
        "the reason names what it waited for: {reason}"
    );
    eprintln!("not drained within 12 s: {reason}");
}

/// Time from the restart of a killed member to the first batch it commits.
fn restart_to_first_commit(label: &str, extra: &[&str]) -> Duration {
    let f = Fixture::new(label, 4);
    let ledger = Ledger::open(&f.db.url);
    let mut producer = f.spawn_producer(60_000, 1_000);
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut first = f.spawn_run("first", extra);
    wait_for(deadline, "the first run to commit", || {
        (f.committed(&ledger) > 500).then_some(())
    });
    assert!(first.sigkill());
    let before = f.positions(&ledger);
    let restarted = Instant::now();
    let mut second = f.spawn_run("second", extra);
    let elapsed = wait_for(deadline, "the restarted member to commit", || {
        let now = f.positions(&ledger);
        now.iter()
            .any(|(p, o)| *o > before.get(p).copied().unwrap_or(0))
            .then(|| restarted.elapsed())
    });
    assert!(
        producer.try_wait().is_none(),
        "the producer was still writing: the measure is of the restart, not of an empty topic"
    );
    assert!(second.sigterm(Duration::from_secs(60)).is_some());
    producer.sigkill();
    elapsed
}

#[test]
fn a_static_member_restarted_after_a_kill_commits_within_seconds() {
    let _serial = serial();
    let session = Duration::from_secs(20);
    let dynamic = restart_to_first_commit("dynamic", &["--session-timeout", "20s"]);
    let fixed = restart_to_first_commit(
        "static",
        &["--session-timeout", "20s", "--instance-id", "pod-0"],
    );
    eprintln!(
        "restart to first committed batch after kill -9: static member {fixed:?}, dynamic \
         member {dynamic:?} (session timeout {session:?})"
    );
    assert!(
        fixed < Duration::from_secs(5),
        "a static member gets its partitions back at once: {fixed:?}"
    );
    assert!(
        dynamic < session + Duration::from_secs(15),
        "a dynamic member waits at most for the dead member's session: {dynamic:?}"
    );
    assert!(
        dynamic > fixed,
        "the dynamic member waited for the session ({dynamic:?} vs {fixed:?})"
    );
}

#[test]
fn sigterm_then_restart_rereads_nothing_and_applies_nothing_twice() {
    let _serial = serial();
    let f = Fixture::new("term", 6);
    // Still producing at the SIGTERM, so the stop leaves work for the restart.
    let mut producer = f.spawn_producer(40_000, 2_000);
    let ledger = Ledger::open(&f.db.url);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut first = f.spawn_run("first", &["--shutdown-timeout", "30s"]);
    wait_for(deadline, "the first run to commit", || {
        (f.committed(&ledger) > 2_000).then_some(())
    });
    let signalled = Instant::now();
    let status = first
        .sigterm(Duration::from_secs(40))
        .expect("the run stops after SIGTERM");
    let took = signalled.elapsed();
    assert!(status.success(), "exit 0 after SIGTERM:\n{}", first.log());
    assert!(
        took < Duration::from_secs(30),
        "within the deadline: {took:?}"
    );
    let s1 = summary(&first);
    assert_eq!(s1["exit"], "signal");
    let at_stop = f.committed(&ledger);
    let committed = f
        .stack
        .kafka()
        .committed(&f.stack.group(CONSUMER), &f.topic);
    assert_eq!(
        committed,
        f.positions(&ledger),
        "the group's committed offsets equal the positions of record after a graceful stop"
    );
    let status = producer
        .wait_timeout(deadline.saturating_duration_since(Instant::now()))
        .expect("the producer finishes");
    assert!(status.success(), "{}", producer.log());
    let hw_total: i64 = f.stack.kafka().high_watermarks(&f.topic).values().sum();
    assert!(at_stop < hw_total, "the stop left work to do");

    let mut second = f.spawn_run("second", &["--exit-when-idle", "3s"]);
    let status = second
        .wait_timeout(Duration::from_secs(240))
        .expect("the restart drains");
    assert!(status.success(), "{}", second.log());
    let s2 = summary(&second);
    assert_eq!(
        s2["rereads"], 0,
        "no record committed by the first run is read again: {s2:#}"
    );
    assert_eq!(
        s2["records"].as_i64().unwrap_or(-1),
        hw_total - at_stop,
        "the restart read exactly the records left: {s2:#}"
    );
    f.assert_complete(&ledger);
    eprintln!(
        "SIGTERM: exit 0 in {took:?} ({} records committed, {} left uncommitted); the restart \
         read {} records, re-read {}",
        s1["records"], s1["left_uncommitted"], s2["records"], s2["rereads"]
    );
}

#[test]
fn a_rolling_restart_of_three_static_members_stalls_no_partition() {
    let _serial = serial();
    let events: u64 = std::env::var("LIFECYCLE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let f = Fixture::new("rolling", 12);
    let ledger = Ledger::open(&f.db.url);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(900);
    let rate = (events / 90).max(500);
    let mut producer = f.spawn_producer(events, rate);
    let ids = ["pod-0", "pod-1", "pod-2"];
    let args = |id: &'static str| {
        vec![
            "--instance-id",
            id,
            "--session-timeout",
            "30s",
            "--shutdown-timeout",
            "30s",
        ]
    };
    let mut members: Vec<Running> = ids.iter().map(|id| f.spawn_run(id, &args(id))).collect();
    wait_for(deadline, "the group to commit", || {
        (f.committed(&ledger) > 5_000).then_some(())
    });

    // Watch every partition's progress while the members restart one at a time: a partition
    // with records waiting must not go more than 10 s without a commit.
    let mut last_move: BTreeMap<i32, (i64, Instant)> = BTreeMap::new();
    let mut worst: BTreeMap<i32, Duration> = BTreeMap::new();
    let mut observe = |ledger: &Ledger| {
        let now = Instant::now();
        let hw = f.stack.kafka().high_watermarks(&f.topic);
        let positions = f.positions(ledger);
        for (p, h) in &hw {
            let pos = positions.get(p).copied().unwrap_or(0);
            let entry = last_move.entry(*p).or_insert((pos, now));
            if pos != entry.0 || pos >= *h {
                *entry = (pos, now);
            } else {
                let gap = now.duration_since(entry.1);
                let w = worst.entry(*p).or_default();
                *w = (*w).max(gap);
            }
        }
    };
    let mut restarts = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(4) {
            observe(&ledger);
            std::thread::sleep(Duration::from_millis(200));
        }
        let stopping = Instant::now();
        let status = members[i].sigterm(Duration::from_secs(40));
        assert!(
            status.is_some_and(|s| s.success()),
            "{id} exits 0 on SIGTERM:\n{}",
            members[i].log()
        );
        let stopped = stopping.elapsed();
        members[i] = f.spawn_run(id, &args(id));
        restarts.push((id, stopped));
        observe(&ledger);
    }
    while producer.try_wait().is_none() {
        assert!(Instant::now() < deadline, "the producer finishes");
        observe(&ledger);
        std::thread::sleep(Duration::from_millis(200));
    }
    let hw = f.stack.kafka().high_watermarks(&f.topic);
    wait_for(deadline, "the group to drain", || {
        observe(&ledger);
        let positions = f.positions(&ledger);
        hw.iter()
            .all(|(p, h)| positions.get(p).copied().unwrap_or(0) == *h)
            .then_some(())
    });
    for m in &mut members {
        assert!(
            m.sigterm(Duration::from_secs(40))
                .is_some_and(|s| s.success())
        );
    }
    f.assert_complete(&ledger);
    let longest = worst.values().max().copied().unwrap_or_default();
    eprintln!(
        "rolling restart of 3 static members over {} records in {:?}: shutdowns {restarts:?}; \
         longest gap in committed progress of a partition with records waiting {longest:?} \
         (per partition {worst:?})",
        hw.values().sum::<i64>(),
        started.elapsed()
    );
    assert!(
        longest <= Duration::from_secs(10),
        "no partition left unconsumed for more than 10 s: {worst:?}"
    );
}
