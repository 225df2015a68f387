//! Broker failover on a 3-node KRaft cluster (replication factor 3, min.insync.replicas 2):
//! while `ledgerflow produce` (acks=all, idempotent) and `ledgerflow run` work, the leader of
//! the busiest partition is killed with SIGKILL and restarted, twice. The run completes with
//! the producer's counts, reconcile is clean and the audit chain verifies; the time from each
//! kill to the partition committing again is printed.
//!
//! `FAILOVER_EVENTS` changes the event count (default 40,000).

use std::time::{Duration, Instant};

use ledgerflow_e2e::{KafkaCluster, Ledger, PgDatabase, Stack};

const PARTITIONS: u32 = 6;
const CONSUMER: &str = "erp-receivables";
const ERP_TYPES: [&str; 4] = [
    "invoice_finalized",
    "payment_captured",
    "credit_memo_issued",
    "customer_upserted",
];

fn wait_for<T>(deadline: Instant, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn position(ledger: &Ledger, topic: &str, partition: i32) -> i64 {
    ledger
        .positions()
        .into_iter()
        .find(|p| p.consumer == CONSUMER && p.topic == topic && p.partition == partition)
        .map_or(0, |p| p.next_offset)
}

#[test]
fn the_run_completes_when_the_busiest_partitions_leader_is_killed_twice() {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let events: u64 = std::env::var("FAILOVER_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    let stack = Stack::with_cluster(KafkaCluster::start(3));
    eprintln!(
        "3-node cluster up in {:?}: {}",
        started.elapsed(),
        stack.brokers
    );
    let topic = "e2e.failover";
    stack.create_topic(topic, PARTITIONS);
    let db = PgDatabase::create("lf_failover");
    let manifest = stack.path("manifest.json");
    let tenants = stack.path("tenants.toml");
    // The producer must still be writing during both rounds: recovery is measured as the time
    // from a kill until the partition commits new records again.
    let rate = (events / 120).max(200).to_string();
    let mut producer = stack.spawn(
        &[
            "produce",
            "--topic",
            topic,
            "--tenants",
            "12",
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
    let mut run = stack.spawn(
        &[
            "run",
            "--consumer",
            CONSUMER,
            "--database",
            &db.url,
            "--topic",
            topic,
            "--tenants",
            &tenants,
            "--format",
            "json",
        ],
        "run",
    );
    let ledger = Ledger::open(&db.url);
    let kafka = stack.kafka();

    let mut recoveries = Vec::new();
    for round in 1..=2 {
        // Let the run get going on the current leaders.
        std::thread::sleep(Duration::from_secs(6));
        assert!(
            producer.try_wait().is_none(),
            "round {round}: the producer is still writing (else there is no recovery to measure)"
        );
        let hw = kafka.high_watermarks(topic);
        let (&busiest, _) = hw.iter().max_by_key(|(_, h)| **h).expect("partitions");
        let info = kafka.partitions(topic).expect("topic metadata");
        let leader = info[busiest as usize].leader;
        assert!(leader > 0, "partition {busiest} has a leader: {info:?}");
        let before = position(&ledger, topic, busiest);
        kafka.kill(leader);
        let killed = Instant::now();
        eprintln!(
            "round {round}: killed node {leader}, leader of partition {busiest} \
             (high watermark {}, position {before}) after {:?}",
            hw[&busiest],
            started.elapsed()
        );
        // A new leader is elected from the in-sync replicas.
        let (new_leader, elected) = wait_for(deadline, "a new leader", || {
            let info = kafka.partitions(topic)?;
            let l = info[busiest as usize].leader;
            (l > 0 && l != leader).then(|| (l, killed.elapsed()))
        });
        // The consumer commits on that partition again (records keep arriving).
        let moved = wait_for(deadline, "the partition to commit again", || {
            (position(&ledger, topic, busiest) > before).then(|| killed.elapsed())
        });
        eprintln!(
            "round {round}: node {new_leader} leads partition {busiest} after {elected:?}; \
             the consumer committed on it again {moved:?} after the kill"
        );
        recoveries.push(moved);
        assert!(
            run.try_wait().is_none(),
            "the run survived the kill:\n{}",
            run.log()
        );
        kafka.restart(leader);
        eprintln!(
            "round {round}: node {leader} restarted {:?} after the kill",
            killed.elapsed()
        );
    }

    let status = producer
        .wait_timeout(deadline.saturating_duration_since(Instant::now()))
        .expect("the producer finishes");
    assert!(status.success(), "produce failed:\n{}", producer.log());
    let hw = kafka.high_watermarks(topic);
    wait_for(deadline, "the run to drain", || {
        hw.iter()
            .all(|(p, h)| position(&ledger, topic, *p) == *h)
            .then_some(())
    });
    let status = run.sigterm(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "the run exits 0:\n{}",
        run.log()
    );

    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).expect("manifest"))
            .expect("manifest JSON");
    let sent = m["events_sent"].as_i64().expect("events_sent");
    assert_eq!(
        hw.values().sum::<i64>(),
        sent,
        "the topic holds exactly the produced records (an idempotent producer through two failovers)"
    );
    let expected: i64 = ERP_TYPES
        .iter()
        .map(|t| m["event_types"][*t].as_i64().unwrap_or(0))
        .sum();
    let inbox = ledger.scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM inbox WHERE consumer = $1",
        &[CONSUMER],
    );
    let decided = ledger.scalar(
        "SELECT CAST(COUNT(DISTINCT (partition, \"offset\")) AS BIGINT) FROM audit_log \
         WHERE consumer = $1",
        &[CONSUMER],
    );
    assert_eq!(
        (inbox, decided),
        (expected, sent),
        "inbox rows, records with a decision"
    );
    let (code, report) = stack.reconcile(&db.url, &["--source", &manifest]);
    assert_eq!(code, 0, "reconcile against the manifest:\n{report:#}");
    let (code, report) = stack.audit_verify(&db.url);
    assert_eq!(code, 0, "audit verify:\n{report:#}");
    eprintln!(
        "failover: {sent} records, {expected} erp events applied once, recoveries {recoveries:?}, \
         {:?} in all",
        started.elapsed()
    );
}
