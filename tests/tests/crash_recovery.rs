//! Crash recovery on Postgres: `ledgerflow run` is SIGKILLed at random points while it works
//! through ~20,000 events with poison records between them, Postgres itself is restarted under
//! a running consumer once, and afterwards the ledger is counted: every event posted exactly
//! once, every poison record dead-lettered exactly once with its reason, every offset decided
//! exactly once, every journal balanced, the audit chain intact.
//!
//! This test restarts the machine's shared Postgres server (`pg_ctlcluster ... stop`, 2 s
//! down, `start`), which is why it is alone in its test binary: `cargo test` runs test binaries
//! one after the other, so no other test of this workspace is using Postgres meanwhile.
//! `LEDGERFLOW_TEST_PG_CLUSTER=VERSION/NAME` names the cluster (default: the only version under
//! `/etc/postgresql`, cluster `main`).
//!
//! Kill points are random; the seed is printed and `LEDGERFLOW_CRASH_SEED=N` replays it (the
//! timing of the machine still varies). Each consumer is killed a random 300-1500 ms after it
//! has committed its first batch (waiting for that first keeps every kill inside processing:
//! after a SIGKILL the next instance first waits for the broker to expire the dead member's
//! session, which the instances shorten to 6 s).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ledgerflow_codec::{HEADER_LEN, encode_frame};
use ledgerflow_core::{EventType, SchemaId};
use ledgerflow_e2e::{
    Delivered, EventProducer, Ledger, PgDatabase, RawRecord, Running, Stack, generate,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOPIC: &str = "e2e.crash-recovery";
const CONSUMER: &str = "erp-receivables";
const EVENTS: u64 = 20_000;
const TENANTS: u32 = 8;
const PARTITIONS: u32 = 6;
/// SIGKILLs before the final run.
const KILLS: usize = 5;
/// The run (0-based) under which Postgres is restarted.
const POSTGRES_RESTART_RUN: usize = 1;
/// Event types the erp-receivables consumer applies (everything else is skipped).
const ERP_TYPES: [&str; 4] = [
    "invoice_finalized",
    "payment_captured",
    "credit_memo_issued",
    "customer_upserted",
];
/// Log line of a transient failure being retried (runtime `after_flush`).
const RETRY_LINE: &str = "transient failure; partition paused";
/// Every consumer `ledgerflow run` starts by default; all of them run under the kills.
const CONSUMERS: [&str; 3] = ["erp-receivables", "warehouse", "notifications"];

/// One kind of bad record and the reason code it must be dead-lettered with.
struct Poison {
    reason: &'static str,
    value: Option<Vec<u8>>,
}

/// Garbage bytes, a wrong magic byte on a real frame, a frame too short for its header, a
/// tombstone, a real body under a schema id the registry never issued, a real frame cut in the
/// middle of its Avro body.
fn poison_kinds(producer: &EventProducer, rng: &mut ChaCha8Rng, seed: u64) -> Vec<Poison> {
    let (sample_stream, _) = generate(TENANTS, 50, 0.0, seed ^ 0x5eed);
    let sample = sample_stream
        .iter()
        .find(|g| g.event.event_type() == EventType::InvoiceFinalized)
        .expect("the sample stream has an invoice");
    let real = producer.encode(&sample.event, sample.writer_version);
    let body = &real[HEADER_LEN..];
    let mut garbage: Vec<u8> = (0..rng.random_range(8..64)).map(|_| rng.random()).collect();
    garbage[0] = rng.random_range(1..=255);
    let mut wrong_magic = real.clone();
    wrong_magic[0] = 1;
    vec![
        Poison {
            reason: "unsupported_magic",
            value: Some(garbage),
        },
        Poison {
            reason: "unsupported_magic",
            value: Some(wrong_magic),
        },
        Poison {
            reason: "truncated_header",
            value: Some(vec![0, 0, 1]),
        },
        Poison {
            reason: "tombstone",
            value: None,
        },
        Poison {
            reason: "unknown_schema_id",
            value: Some(encode_frame(SchemaId(999_999), body)),
        },
        Poison {
            reason: "avro_decode",
            value: Some(real[..HEADER_LEN + body.len() / 2].to_vec()),
        },
    ]
}

/// `(version, cluster)` of the local Postgres cluster.
fn pg_cluster() -> (String, String) {
    if let Ok(spec) = std::env::var("LEDGERFLOW_TEST_PG_CLUSTER") {
        let (version, name) = spec
            .split_once('/')
            .expect("LEDGERFLOW_TEST_PG_CLUSTER is VERSION/NAME");
        return (version.to_owned(), name.to_owned());
    }
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql (set LEDGERFLOW_TEST_PG_CLUSTER)")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .expect("a Postgres version under /etc/postgresql");
    (version, "main".to_owned())
}

fn pg_ctl(action: &str) {
    let (version, cluster) = pg_cluster();
    let out = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, &cluster, action])
        .output()
        .expect("run pg_ctlcluster");
    assert!(
        out.status.success(),
        "pg_ctlcluster {version} {cluster} {action} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn postgres_ready() -> bool {
    Command::new("pg_isready")
        .args(["-q", "-h", "127.0.0.1", "-p", "5432"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Lines of the cluster's server log (Debian layout) about `database` containing `needle`;
/// `None` when the log cannot be read. For the report only.
fn server_log_count(database: &str, needle: &str) -> Option<usize> {
    let (version, cluster) = pg_cluster();
    let path = format!("/var/log/postgresql/postgresql-{version}-{cluster}.log");
    let log = std::fs::read_to_string(path).ok()?;
    Some(
        log.lines()
            .filter(|l| l.contains(database) && l.contains(needle))
            .count(),
    )
}

/// Starts Postgres again if a panic left it stopped (other tests and sessions share it).
struct StartPostgresOnDrop;

impl Drop for StartPostgresOnDrop {
    fn drop(&mut self) {
        if !postgres_ready() {
            let (version, cluster) = pg_cluster();
            // Best effort in Drop: the next test's setup reports a database that is still down.
            Command::new("pg_ctlcluster")
                .args(["--skip-systemctl-redirect", &version, &cluster, "start"])
                .status()
                .ok();
        }
    }
}

/// Stops Postgres, keeps it down for 2 s, starts it and waits until it accepts connections.
/// Returns how long it was unavailable.
fn restart_postgres() -> Duration {
    let down = Instant::now();
    let _restart_guard = StartPostgresOnDrop;
    pg_ctl("stop");
    std::thread::sleep(Duration::from_secs(2));
    pg_ctl("start");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !postgres_ready() {
        assert!(
            Instant::now() < deadline,
            "Postgres not ready 60 s after start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    down.elapsed()
}

/// Polls `done` every 100 ms until it holds or `timeout` passes.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sum of the consumer's stored positions: records decided so far (offsets start at 0).
fn progress(ledger: &Ledger) -> Option<i64> {
    ledger
        .try_scalar(
            "SELECT CAST(COALESCE(SUM(next_offset), 0) AS BIGINT) FROM positions \
             WHERE consumer = $1",
            &[CONSUMER],
        )
        .ok()
}

/// What one killed run did, for the report.
struct KillReport {
    run: String,
    delay_ms: u64,
    decided_before: i64,
    decided_at_kill: i64,
    retries: usize,
    stale: usize,
    seeks: usize,
}

fn tail(run: &Running) -> String {
    let log = run.log();
    let start = log.len().saturating_sub(4000);
    let start = (start..log.len())
        .find(|i| log.is_char_boundary(*i))
        .unwrap_or(0);
    log[start..].to_owned()
}

#[test]
fn sigkill_and_postgres_restart_leave_a_clean_ledger() {
    let started = Instant::now();
    let seed = std::env::var("LEDGERFLOW_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("crash_recovery: seed {seed} (LEDGERFLOW_CRASH_SEED={seed} replays it)");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    let stack = Stack::start();
    let db = PgDatabase::create("lf_crash");
    stack.create_topic(TOPIC, PARTITIONS);
    // Registers the contracts before `produce` does, so both use the same ids.
    let producer = EventProducer::new(&stack, TOPIC);
    let kinds = poison_kinds(&producer, &mut rng, seed);
    let manifest_path = stack.path("manifest.json");
    let tenants_path = stack.path("tenants.toml");

    // 1. The workload, with poison sent while `produce` runs so it lands between good records
    //    of the same tenant (same key, same partition).
    let seed_arg = seed.to_string();
    let mut produce = stack.spawn(
        &[
            "produce",
            "--topic",
            TOPIC,
            "--tenants",
            &TENANTS.to_string(),
            "--events",
            &EVENTS.to_string(),
            "--duplicates",
            "0.05",
            // Paced, so the producer sends small batches the poison can land between.
            "--rate",
            "8000",
            "--seed",
            &seed_arg,
            "--manifest",
            &manifest_path,
            "--tenants-file",
            &tenants_path,
        ],
        "produce",
    );
    let mut injected: Vec<(Delivered, &'static str)> = Vec::new();
    let mut inject = |rng: &mut ChaCha8Rng| {
        let kind = &kinds[injected.len() % kinds.len()];
        let tenant = format!("t{:03}", rng.random_range(1..=TENANTS));
        let delivered = producer.send_raw(RawRecord {
            key: Some(tenant.into_bytes()),
            value: kind.value.clone(),
            ..RawRecord::default()
        });
        injected.push((delivered, kind.reason));
    };
    let status = loop {
        if let Some(status) = produce.try_wait() {
            break status;
        }
        inject(&mut rng);
        std::thread::sleep(Duration::from_millis(rng.random_range(20..80)));
    };
    assert!(status.success(), "produce failed:\n{}", produce.log());
    for _ in 0..kinds.len() {
        inject(&mut rng);
    }
    let total_records = EVENTS as i64 + injected.len() as i64;
    let mut expected_reasons: BTreeMap<String, i64> = BTreeMap::new();
    for (_, reason) in &injected {
        *expected_reasons.entry((*reason).to_owned()).or_default() += 1;
    }
    eprintln!(
        "crash_recovery: produced {EVENTS} events + {} poison records {expected_reasons:?} in {:.1}s",
        injected.len(),
        started.elapsed().as_secs_f64()
    );

    // 2. Runs killed with SIGKILL mid-work; Postgres restarted under one of them.
    let db_url = db.url.clone();
    let run_args = [
        "run",
        "--tenants",
        &tenants_path,
        "--topic",
        TOPIC,
        "--database",
        &db_url,
        "--batch-max-records",
        "25",
        "--exit-when-idle",
        "8s",
        "--kafka-property",
        "session.timeout.ms=6000",
        "--format",
        "json",
    ];
    let ledger = Ledger::open(&db.url);
    let mut kills: Vec<KillReport> = Vec::new();
    let mut postgres_down = None;
    let mut retries_under_restart = 0;
    for n in 0..KILLS {
        let before = progress(&ledger).expect("reading positions");
        assert!(
            before < total_records,
            "all {total_records} records were decided after only {n} kills: make the runs shorter"
        );
        let mut run = stack.spawn(&run_args, &format!("run-{n}"));
        let moved = wait_until(Duration::from_secs(90), || {
            progress(&ledger).is_some_and(|p| p > before) || run.try_wait().is_some()
        });
        assert!(
            moved && run.try_wait().is_none(),
            "{} made no progress or exited:\n{}",
            run.name(),
            tail(&run)
        );
        if n == POSTGRES_RESTART_RUN {
            let down = restart_postgres();
            let at_restart = loop {
                if let Some(p) = progress(&ledger) {
                    break p;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            let resumed = wait_until(Duration::from_secs(90), || {
                progress(&ledger).is_some_and(|p| p > at_restart) || run.try_wait().is_some()
            });
            assert!(
                resumed && run.try_wait().is_none(),
                "{} did not ride out the Postgres restart:\n{}",
                run.name(),
                tail(&run)
            );
            retries_under_restart = run.log_count(RETRY_LINE);
            assert!(
                retries_under_restart > 0,
                "{} never saw the Postgres restart (no retry logged):\n{}",
                run.name(),
                tail(&run)
            );
            postgres_down = Some(down);
        }
        let delay_ms = rng.random_range(300..=1500);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let decided_at_kill = progress(&ledger).expect("reading positions");
        assert!(
            run.sigkill(),
            "{} exited before its SIGKILL:\n{}",
            run.name(),
            tail(&run)
        );
        assert!(
            decided_at_kill < total_records,
            "{} had finished all work before its SIGKILL: make the runs shorter",
            run.name()
        );
        kills.push(KillReport {
            run: run.name().to_owned(),
            delay_ms,
            decided_before: before,
            decided_at_kill,
            retries: run.log_count(RETRY_LINE),
            stale: run.log_count("stale batch rejected"),
            seeks: run.log_count("seeking"),
        });
    }

    // 3. A last run to idle.
    let mut last = stack.spawn(&run_args, "run-final");
    let status = last
        .wait_timeout(Duration::from_secs(180))
        .unwrap_or_else(|| panic!("the final run did not go idle:\n{}", tail(&last)));
    assert!(status.success(), "final run failed:\n{}", tail(&last));
    let summary: serde_json::Value =
        serde_json::from_str(&last.stdout()).expect("final run summary JSON");
    let summary = &summary[0];
    let processing_done = started.elapsed();

    eprintln!("crash_recovery: {} SIGKILLs:", kills.len());
    for k in &kills {
        eprintln!(
            "  {}: killed {} ms after its first commit; decided {} -> {} of {total_records}; \
             {} retries, {} stale batches, {} seeks logged",
            k.run, k.delay_ms, k.decided_before, k.decided_at_kill, k.retries, k.stale, k.seeks
        );
    }
    eprintln!(
        "crash_recovery: Postgres restarted under run-{POSTGRES_RESTART_RUN}: unavailable {:.1}s, \
         {retries_under_restart} transient retries logged, consumer resumed without restart",
        postgres_down.expect("postgres was restarted").as_secs_f64()
    );
    if let (Some(open), Some(terminated)) = (
        server_log_count(
            &db.name,
            "unexpected EOF on client connection with an open transaction",
        ),
        server_log_count(
            &db.name,
            "terminating connection due to administrator command",
        ),
    ) {
        eprintln!(
            "crash_recovery: Postgres server log: {open} connections lost with an open \
             transaction (SIGKILL inside a batch), {terminated} terminated by the restart"
        );
    }
    eprintln!(
        "crash_recovery: final run summary {summary}; {} retries, {} stale, {} seeks logged",
        last.log_count(RETRY_LINE),
        last.log_count("stale batch rejected"),
        last.log_count("seeking")
    );

    // 4. Count the ledger.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).expect("manifest"))
            .expect("manifest JSON");
    let handled: i64 = ERP_TYPES
        .iter()
        .map(|t| manifest["event_types"][*t].as_i64().expect("type count"))
        .sum();
    let documents: i64 = [
        "invoice_finalized",
        "payment_captured",
        "credit_memo_issued",
    ]
    .iter()
    .map(|t| manifest["event_types"][*t].as_i64().expect("type count"))
    .sum();
    assert_eq!(manifest["events_sent"].as_i64(), Some(EVENTS as i64));

    let (code, report) = stack.reconcile(&db.url, &["--source", &manifest_path]);
    let tenants = report["tenants"].as_object().expect("tenants");
    assert_eq!(tenants.len(), TENANTS as usize, "every tenant reconciled");
    for (tenant, t) in tenants {
        for doc in ["invoices", "payments", "credit_memos"] {
            let d = &t[doc];
            assert_eq!(d["missing_count"], 0, "{tenant} {doc} missing: {d}");
            assert_eq!(d["extra_count"], 0, "{tenant} {doc} extra: {d}");
            assert_eq!(d["mismatched_count"], 0, "{tenant} {doc} mismatched: {d}");
            assert_eq!(d["count_matches"], true, "{tenant} {doc} count: {d}");
            assert_eq!(d["total_matches"], true, "{tenant} {doc} total: {d}");
        }
        assert_eq!(
            t["double_postings"],
            serde_json::json!([]),
            "{tenant} double postings"
        );
        assert_eq!(
            t["unbalanced_journals"],
            serde_json::json!([]),
            "{tenant} unbalanced journals"
        );
    }
    assert_eq!(
        (code, &report["clean"]),
        (0, &serde_json::json!(true)),
        "reconcile against the manifest: {report}"
    );
    let (code, report) = stack.reconcile(&db.url, &[]);
    assert_eq!(
        (code, &report["clean"]),
        (0, &serde_json::json!(true)),
        "reconcile against the audit log: {report}"
    );
    let (code, audit) = stack.audit_verify(&db.url);
    assert_eq!(code, 0, "audit verify: {audit}");
    assert_eq!(audit["intact"], true, "{audit}");
    assert_eq!(
        audit["rows"].as_i64(),
        Some(total_records * CONSUMERS.len() as i64),
        "one audit row per record and consumer"
    );

    let stats = stack.stats(&db.url);
    let applied = stats.count(CONSUMER, "applied", None);
    let duplicates = stats.count(CONSUMER, "duplicate", None);
    let skipped = stats.count(CONSUMER, "skipped", None);
    let dead = stats.count(CONSUMER, "dead_lettered", None);
    assert_eq!(
        applied, handled,
        "applied = distinct events of the types erp-receivables handles"
    );
    assert_eq!(
        applied + duplicates + skipped,
        EVENTS as i64,
        "every good record decided once"
    );
    assert_eq!(
        stats.dead_letter_reasons(CONSUMER),
        expected_reasons,
        "dead letters are exactly the poison"
    );
    for p in stats.0["positions"].as_array().expect("positions") {
        assert_eq!(p["lag"], 0, "position at the high watermark: {p}");
    }

    let inbox = ledger.scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM inbox WHERE consumer = $1",
        &[CONSUMER],
    );
    assert_eq!(inbox, handled, "one inbox row per applied event");
    let journals = ledger.scalar(
        "SELECT CAST(COUNT(DISTINCT event_id) AS BIGINT) FROM erp_journal_entries \
         WHERE kind IN ('invoice', 'receipt', 'credit_memo')",
        &[],
    );
    assert_eq!(
        journals, documents,
        "one document journal per document event"
    );
    let document_journals = ledger.scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_journal_entries \
         WHERE kind IN ('invoice', 'receipt', 'credit_memo')",
        &[],
    );
    assert_eq!(document_journals, documents, "and no second one");
    let application_journals = ledger.scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_journal_entries WHERE kind = 'application'",
        &[],
    );
    let applications = ledger.scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM erp_applications", &[]);
    assert_eq!(
        application_journals, applications,
        "one application journal per applied payment"
    );
    let unbalanced = ledger.scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT entry_id FROM erp_journal_lines \
         GROUP BY entry_id HAVING SUM(debit_minor) <> SUM(credit_minor)) AS u",
        &[],
    );
    assert_eq!(unbalanced, 0, "every journal balances");

    let poison: BTreeMap<(i32, i64), String> = injected
        .iter()
        .map(|(d, r)| ((d.partition, d.offset), (*r).to_owned()))
        .collect();
    let all_letters = ledger.dead_letters();
    for consumer in CONSUMERS {
        let letters: BTreeMap<(i32, i64), String> = all_letters
            .iter()
            .filter(|d| d.consumer == consumer)
            .map(|d| ((d.partition, d.offset), d.reason.to_string()))
            .collect();
        assert_eq!(
            letters, poison,
            "{consumer}: dead letters are exactly the injected records, with their reasons"
        );
    }

    // The warehouse, killed and restarted with the others: one fact per distinct event, and
    // invoice totals equal to the manifest's exactly, per tenant.
    let count_of = |t: &str| manifest["event_types"][t].as_i64().expect("type count");
    for (table, types) in [
        ("fact_invoice", &["invoice_finalized"][..]),
        ("fact_payment", &["payment_captured"][..]),
        ("fact_credit_memo", &["credit_memo_issued"][..]),
        ("fact_usage", &["usage_aggregated"][..]),
        (
            "fact_subscription_event",
            &["subscription_activated", "subscription_canceled"][..],
        ),
        ("dim_customer", &["customer_upserted"][..]),
    ] {
        let facts = ledger.scalar(
            &format!("SELECT CAST(COUNT(*) AS BIGINT) FROM warehouse.{table}"),
            &[],
        );
        let expected: i64 = types.iter().map(|t| count_of(t)).sum();
        assert_eq!(
            facts, expected,
            "warehouse.{table} rows = distinct {types:?} events"
        );
    }
    for (tenant, t) in manifest["tenants"].as_object().expect("manifest tenants") {
        // The manifest's decimal has exactly the currency's digits: without the point it is the
        // total in minor units.
        let expected: i64 = t["invoices"]["total"]
            .as_str()
            .expect("invoice total")
            .replace('.', "")
            .parse()
            .expect("decimal total");
        let stored = ledger
            .try_scalar(
                "SELECT CAST(COALESCE(SUM(total_minor), 0) AS BIGINT) FROM warehouse.fact_invoice \
                 WHERE tenant_id = $1",
                &[tenant],
            )
            .expect("fact_invoice total");
        assert_eq!(
            stored, expected,
            "{tenant}: fact_invoice total = manifest total"
        );
    }

    // Every offset of every partition decided exactly once, none skipped.
    let rows = ledger.audit_rows(CONSUMER, TOPIC);
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (partition, offset, _) in &rows {
        per_partition.entry(*partition).or_default().push(*offset);
    }
    let positions: BTreeMap<i32, i64> = ledger
        .positions()
        .into_iter()
        .filter(|p| p.consumer == CONSUMER)
        .map(|p| (p.partition, p.next_offset))
        .collect();
    for (partition, offsets) in &per_partition {
        let expected: Vec<i64> = (0..positions[partition]).collect();
        assert!(
            *offsets == expected,
            "partition {partition}: audit offsets are not exactly 0..{}",
            positions[partition]
        );
    }
    let between = injected
        .iter()
        .filter(|(d, _)| {
            let good = |o: i64| {
                rows.iter()
                    .any(|(p, off, dec)| *p == d.partition && *off == o && dec != "dead_lettered")
            };
            (0..d.offset).any(good) && (d.offset + 1..positions[&d.partition]).any(good)
        })
        .count();
    assert!(between > 0, "some poison sits between good records");
    eprintln!(
        "crash_recovery: ledger counted: {applied} applied (= manifest), {duplicates} duplicates, \
         {skipped} skipped, {dead} dead letters (= {} injected, {between} of them between good \
         records), {journals} document and {application_journals} application journals, all balanced, {} audit rows over {} partitions, no gaps",
        injected.len(),
        rows.len(),
        per_partition.len()
    );
    eprintln!(
        "crash_recovery: processing {:.1}s, total {:.1}s",
        processing_done.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
