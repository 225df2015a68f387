//! Several `ledgerflow run` instances in one consumer group, killed with SIGKILL while they
//! work: the survivors take the partitions over and nothing is posted twice or lost.
//!
//! Tansu 0.6.0 assigns every partition to every member of a group, so these tests run against
//! librdkafka's mock cluster ([`MockCluster`]), started inside the test process: it speaks the
//! Kafka protocol over TCP and implements classic consumer groups (join, sync, heartbeats,
//! session timeouts), which is all a rebalance needs. The store is a fresh Postgres database per
//! test, shared by the instances as in production; the schema registry is the `ledgerflow`
//! registry on SQLite.
//!
//! Rebalance timing on the mock cluster, which the waits below are sized for: a SIGKILLed
//! member is dropped once `session.timeout.ms` has passed without a heartbeat (checked every
//! second), the survivors hear of it on their next heartbeat (every second) and revoke, and the
//! coordinator then waits `session.timeout.ms - 1 s` for them to rejoin before it assigns.
//!
//! `REBALANCE_KEEP_LOGS=DIR` copies every instance's log and summary, the manifest and the
//! tenants file to DIR before the final checks.
//!
//! The instances run with `session.timeout.ms=6000` (the runtime's default is 10 s) and
//! `--exit-when-idle 10s`: a survivor only learns that a peer died when the peer's session
//! expires, so its idle window must be longer than the session timeout plus a heartbeat, or it
//! could idle out just before the revoke that announces the takeover (the runtime does not idle
//! out between a revoke and the following assignment). With 10 s and 10 s that is a race.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ledgerflow_e2e::{PgDatabase, block_on, ledgerflow_bin};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use sqlx::{Connection, PgConnection, Row};

const PARTITIONS: i32 = 6;
/// Shorter than the idle window of the instances, see the module docs.
const SESSION_TIMEOUT: &str = "session.timeout.ms=6000";
const CONSUMER: &str = "erp-receivables";
/// Event types the erp-receivables consumer applies (everything else is skipped).
const ERP_TYPES: [&str; 4] = [
    "invoice_finalized",
    "payment_captured",
    "credit_memo_issued",
    "customer_upserted",
];

/// The tests start several debug binaries each and rely on wall-clock rebalance timing; on two
/// cores they run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `ledgerflow` with no `LEDGERFLOW_*` variable inherited from the developer's shell.
fn ledgerflow() -> Command {
    let mut cmd = Command::new(ledgerflow_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LEDGERFLOW_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Runs `ledgerflow ARGS` to completion; panics with its output unless it exits 0.
fn ledgerflow_ok(args: &[&str]) -> std::process::Output {
    let out = ledgerflow()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {}: {e}", ledgerflow_bin().display()));
    assert!(
        out.status.success(),
        "ledgerflow {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The store's Postgres database (a fresh `lf_rebalance_<uuid>`, dropped with the guard) and
/// the reads the checks make of it.
struct StoreDb(PgDatabase);

impl StoreDb {
    fn create() -> Self {
        Self(PgDatabase::create("lf_rebalance"))
    }

    fn url(&self) -> &str {
        &self.0.url
    }

    /// Rows of a query returning `(i64, i64)` pairs, or nothing while the tables do not exist.
    fn pairs(&self, sql: &str) -> Vec<(i64, i64)> {
        block_on(async {
            let Ok(mut conn) = PgConnection::connect(self.url()).await else {
                return Vec::new();
            };
            sqlx::query(sql)
                .fetch_all(&mut conn)
                .await
                .map(|rows| {
                    rows.iter()
                        .map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1)))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    fn count(&self, sql: &str) -> i64 {
        block_on(async {
            let mut conn = PgConnection::connect(self.url())
                .await
                .expect("connect to the test database");
            sqlx::query(sql)
                .fetch_one(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get::<i64, _>(0)
        })
    }

    /// Audit decisions by event type, for failure messages.
    fn decisions(&self) -> Vec<(String, String, Option<String>, i64)> {
        block_on(async {
            let mut conn = PgConnection::connect(self.url())
                .await
                .expect("connect to the test database");
            sqlx::query(
                "SELECT coalesce(event_type, '-'), decision, reason, count(*) FROM audit_log \
                 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            )
            .fetch_all(&mut conn)
            .await
            .expect("decisions")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
        })
    }

    /// Next offset of record per partition of the consumer.
    fn positions(&self) -> BTreeMap<i32, i64> {
        self.pairs(&format!(
            "SELECT partition::BIGINT, next_offset FROM positions WHERE consumer = '{CONSUMER}'"
        ))
        .into_iter()
        .map(|(p, n)| (i32::try_from(p).expect("partition"), n))
        .collect()
    }
}

/// `ledgerflow registry serve` on a free port, killed on drop.
struct Registry {
    url: String,
    child: Child,
    // Kept open so the registry never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Registry {
    fn start(dir: &Path) -> Self {
        let db = format!("sqlite://{}", dir.join("reg.db").display());
        let mut child = ledgerflow()
            .args([
                "registry",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database",
                &db,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", ledgerflow_bin().display()));
        let mut stdout = BufReader::new(child.stdout.take().expect("registry stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("registry announces its address");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected registry output {line:?}"))
            .to_owned();
        Self {
            url,
            child,
            _stdout: stdout,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything one test shares: mock cluster, topic, registry, database, workload files.
///
/// Field order is drop order: the database is dropped first, then the registry, the scratch
/// directory and the mock cluster. Instances are separate guards declared after it, so they
/// die before any of this.
struct Env {
    db: StoreDb,
    registry: Registry,
    dir: tempfile::TempDir,
    topic: String,
    group_prefix: String,
    bootstrap: String,
    _mock: MockCluster<'static, DefaultProducerContext>,
}

impl Env {
    fn start(label: &str) -> Self {
        let mock = MockCluster::new(3).expect("start the mock cluster");
        let bootstrap = mock.bootstrap_servers();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let topic = format!("billing.{label}.{}", &id[..8]);
        mock.create_topic(&topic, PARTITIONS, 3)
            .expect("create the topic on the mock cluster");
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::start(dir.path());
        let db = StoreDb::create();
        Self {
            db,
            registry,
            dir,
            topic,
            group_prefix: format!("lf-{label}-{}", &id[..8]),
            bootstrap,
            _mock: mock,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn produce_args(&self, events: u64, rate: Option<u32>) -> Vec<String> {
        let mut args: Vec<String> = [
            "produce",
            "--brokers",
            &self.bootstrap,
            "--registry",
            &self.registry.url,
            "--topic",
            &self.topic,
            "--tenants",
            "12",
            "--events",
            &events.to_string(),
            "--duplicates",
            "0.05",
            "--manifest",
            &self.path("m.json").display().to_string(),
            "--tenants-file",
            &self.path("tenants.toml").display().to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        if let Some(rate) = rate {
            args.extend(["--rate".to_owned(), rate.to_string()]);
        }
        args
    }

    /// Produces the workload and waits for it.
    fn produce(&self, events: u64) {
        let args = self.produce_args(events, None);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ledgerflow_ok(&args);
    }

    /// Starts `ledgerflow run` for the erp-receivables consumer.
    fn spawn(&self, name: &str, batch: usize, idle: &str) -> Instance {
        let log = self.path(&format!("{name}.log"));
        let out = self.path(&format!("{name}.out"));
        let child = ledgerflow()
            .args(["--log", "info", "--log-format", "json", "run"])
            .args(["--brokers", &self.bootstrap])
            .args(["--registry", &self.registry.url])
            .args(["--database", self.db.url()])
            .args(["--topic", &self.topic])
            .args([
                "--tenants",
                &self.path("tenants.toml").display().to_string(),
            ])
            .args(["--group-prefix", &self.group_prefix])
            .args(["--consumer", CONSUMER])
            .args(["--batch-max-records", &batch.to_string()])
            .args(["--exit-when-idle", idle])
            .args(["--kafka-property", SESSION_TIMEOUT])
            .args(["--format", "json"])
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", ledgerflow_bin().display()));
        Instance {
            name: name.to_owned(),
            child: Some(child),
            log,
            out,
        }
    }

    /// High watermark of every partition, from the mock cluster.
    fn high_watermarks(&self) -> BTreeMap<i32, i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", format!("{}.watermarks", self.group_prefix))
            .create()
            .expect("watermark client");
        (0..PARTITIONS)
            .map(|p| {
                let (_, hi) = consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                    .expect("fetch watermarks");
                (p, hi)
            })
            .collect()
    }

    fn manifest(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path("m.json")).expect("read the manifest");
        serde_json::from_str(&text).expect("manifest is JSON")
    }

    /// Reconcile, audit, inbox and positions: the effect-once invariants after the run.
    fn assert_effect_once(&self) {
        let manifest = self.manifest();
        let sent = manifest["events_sent"].as_u64().expect("events_sent");

        // Nothing left behind: every partition's position of record is its high watermark.
        let positions = self.db.positions();
        let watermarks = self.high_watermarks();
        assert_eq!(
            watermarks.values().sum::<i64>(),
            i64::try_from(sent).expect("sent"),
            "the mock cluster holds every produced record"
        );
        for (p, hi) in &watermarks {
            assert_eq!(
                positions.get(p).copied().unwrap_or(0),
                *hi,
                "partition {p}: position of record vs high watermark (positions {positions:?})"
            );
        }

        // Nothing skipped: every offset below a position of record has exactly one decision.
        let gaps = self.db.pairs(&format!(
            "SELECT p.partition::BIGINT, s.o FROM positions p \
             CROSS JOIN LATERAL generate_series(0, p.next_offset - 1) AS s(o) \
             WHERE p.consumer = '{CONSUMER}' AND NOT EXISTS (SELECT 1 FROM audit_log a \
             WHERE a.consumer = p.consumer AND a.topic = p.topic \
             AND a.partition = p.partition AND a.\"offset\" = s.o) ORDER BY 1, 2"
        ));
        let twice = self.db.pairs(&format!(
            "SELECT partition::BIGINT, \"offset\" FROM audit_log WHERE consumer = '{CONSUMER}' \
             GROUP BY partition, \"offset\" HAVING count(*) > 1 ORDER BY 1, 2"
        ));
        if let Some(keep) = std::env::var_os("REBALANCE_KEEP_LOGS") {
            let keep = PathBuf::from(keep);
            let _ = std::fs::create_dir_all(&keep);
            for entry in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::copy(entry.path(), keep.join(entry.file_name()));
            }
        }
        assert!(
            gaps.is_empty() && twice.is_empty(),
            "(partition, offset) without a decision: {gaps:?}; with several: {twice:?}"
        );

        let db = self.db.url();
        let manifest_path = self.path("m.json").display().to_string();
        let out = ledgerflow()
            .args(["reconcile", "--database", db, "--source", &manifest_path])
            .args(["--format", "json"])
            .output()
            .expect("run reconcile");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "reconcile printed no JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let tenants = report["tenants"].as_object().expect("tenants");
        assert!(!tenants.is_empty(), "reconcile saw no tenant: {report}");
        for (tenant, detail) in tenants {
            assert_eq!(
                detail["double_postings"],
                serde_json::json!([]),
                "tenant {tenant} has double postings"
            );
            for doc in ["invoices", "payments", "credit_memos"] {
                assert_eq!(
                    detail[doc]["missing_count"], 0,
                    "tenant {tenant}: missing {doc}: {}",
                    detail[doc]
                );
                assert_eq!(
                    detail[doc]["extra_count"], 0,
                    "tenant {tenant}: extra {doc}: {}",
                    detail[doc]
                );
            }
        }
        assert!(
            out.status.success() && report["clean"] == true,
            "reconcile is not clean ({}): {report:#}",
            out.status
        );

        ledgerflow_ok(&["audit", "verify", "--database", db]);

        // Effect-once, counted: one inbox row and one `applied` audit row per distinct event of
        // the handled types, however often it was read.
        let expected: u64 = ERP_TYPES
            .iter()
            .map(|t| manifest["event_types"][*t].as_u64().unwrap_or(0))
            .sum();
        assert!(expected > 0, "the manifest has no erp events: {manifest}");
        let expected = i64::try_from(expected).expect("count");
        let inbox = self.db.count(&format!(
            "SELECT count(*) FROM inbox WHERE consumer = '{CONSUMER}'"
        ));
        assert_eq!(
            inbox,
            expected,
            "inbox rows vs distinct erp events; manifest {}; decisions {:?}",
            manifest["event_types"],
            self.db.decisions()
        );
        let applied = self.db.count(&format!(
            "SELECT count(*) FROM audit_log WHERE consumer = '{CONSUMER}' AND decision = 'applied'"
        ));
        assert_eq!(
            applied, expected,
            "applied audit rows vs distinct erp events"
        );
        let audited = self.db.count(&format!(
            "SELECT count(DISTINCT (partition, \"offset\")) FROM audit_log \
             WHERE consumer = '{CONSUMER}'"
        ));
        assert_eq!(
            audited,
            i64::try_from(sent).expect("sent"),
            "every record has a decision"
        );
    }
}

/// One `ledgerflow run` process; SIGKILLed on drop if still running.
struct Instance {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    out: PathBuf,
}

impl Instance {
    /// SIGKILL, as a crash or an OOM kill would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn try_exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("try_wait")
    }

    /// Waits for the process to exit on its own; panics at the deadline.
    fn wait_exit(&mut self, deadline: Instant) -> ExitStatus {
        loop {
            if let Some(status) = self.try_exited() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit in time; log tail:\n{}",
                self.name,
                self.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Each "partitions assigned" log line's partition list, in order.
    fn assignments(&self) -> Vec<BTreeSet<i32>> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "partitions assigned")
            .map(|v| parse_partitions(v["fields"]["partitions"].as_str().unwrap_or_default()))
            .collect()
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The JSON summaries printed on exit.
    fn summary(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "{}: summary is not JSON ({e}): {text:?}\n{}",
                self.name,
                self.log_tail(20)
            )
        })
    }

    fn stale_batches(&self) -> u64 {
        self.summary()
            .as_array()
            .and_then(|a| a.iter().find(|s| s["consumer"] == CONSUMER))
            .and_then(|s| s["stale_batches"].as_u64())
            .expect("stale_batches in the summary")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Partition numbers from the runtime's debug-formatted list, `[("topic", 0), ("topic", 3)]`.
fn parse_partitions(raw: &str) -> BTreeSet<i32> {
    raw.split(')')
        .filter_map(|chunk| chunk.rsplit_once(',').map(|(_, n)| n.trim()))
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Batches an instance's position fence rejected as stale, from its log (also the killed ones).
fn stale_rejections(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("stale batch rejected by the position fence"))
        .count()
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

#[test]
fn survivor_takes_over_a_killed_instances_partitions_without_double_postings() {
    let _serial = serial();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let env = Env::start("rebalance");
    env.produce(6000);
    eprintln!("produced 6000 records in {:?}", started.elapsed());

    let mut victim = env.spawn("a", 50, "10s");
    let mut survivor = env.spawn("b", 50, "10s");
    let spawned = Instant::now();

    // Both are members with a share of the partitions (the latest assignment of each).
    let (victim_parts, survivor_parts) = wait_for(deadline, "both instances assigned", || {
        let a = victim.assignments().pop()?;
        let b = survivor.assignments().pop()?;
        (!a.is_empty()
            && !b.is_empty()
            && a.is_disjoint(&b)
            && a.len() + b.len() == PARTITIONS as usize)
            .then_some((a, b))
    });
    eprintln!(
        "assigned after {:?}: a {victim_parts:?}, b {survivor_parts:?}",
        spawned.elapsed()
    );
    // Progress on the victim's side: it has committed at least one batch of its own.
    wait_for(deadline, "the victim to commit a batch", || {
        let positions = env.db.positions();
        victim_parts
            .iter()
            .any(|p| positions.get(p).is_some_and(|n| *n > 0))
            .then_some(())
    });
    assert!(
        victim.try_exited().is_none() && survivor.try_exited().is_none(),
        "an instance exited before the kill"
    );
    let assignments_before_kill = survivor.assignments().len();
    let positions_at_kill = env.db.positions();
    victim.kill();
    let killed = Instant::now();
    eprintln!(
        "killed a after {:?} of work; positions then {positions_at_kill:?}",
        spawned.elapsed()
    );

    // The survivor is assigned the victim's partitions (in one or more rebalances).
    let takeover = wait_for(deadline, "the survivor to take over", || {
        let after: BTreeSet<i32> = survivor.assignments()[assignments_before_kill..]
            .iter()
            .flatten()
            .copied()
            .collect();
        if victim_parts.is_subset(&after) {
            return Some(killed.elapsed());
        }
        if let Some(status) = survivor.try_exited() {
            panic!(
                "the survivor exited ({status}) without taking over {victim_parts:?} \
                 (assigned after the kill: {after:?}); log tail:\n{}",
                survivor.log_tail(30)
            );
        }
        None
    });
    eprintln!("survivor took over {victim_parts:?} {takeover:?} after the kill");
    let status = survivor.wait_exit(deadline);
    eprintln!(
        "survivor exited {status} {:?} after the kill",
        killed.elapsed()
    );
    assert!(
        status.success(),
        "survivor failed: {status}\n{}",
        survivor.log_tail(30)
    );
    let stale = survivor.stale_batches();
    eprintln!(
        "survivor summary: {}; stale batches rejected by the position fence: {stale} \
         (the killed instance's log shows {})",
        survivor.summary(),
        stale_rejections(&victim.log)
    );

    env.assert_effect_once();
    eprintln!("rebalance test passed in {:?}", started.elapsed());
}

#[test]
fn rebalance_never_double_applies_under_churn() {
    let _serial = serial();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let env = Env::start("churn");
    // Records keep arriving while the instances come and go.
    let produce_args = env.produce_args(3000, Some(100));
    let mut producer = Instance {
        name: "produce".to_owned(),
        child: Some(
            ledgerflow()
                .args(&produce_args)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(env.path("produce.log")).expect("produce log"))
                .spawn()
                .expect("start produce"),
        ),
        log: env.path("produce.log"),
        out: env.path("produce.out"),
    };
    // The tenants file is written before the first record is sent.
    wait_for(deadline, "the tenants file", || {
        env.path("tenants.toml").exists().then_some(())
    });

    // Churners never exit on their own: they are killed, and a last instance drains.
    let mut instances: Vec<Instance> = (0..3)
        .map(|i| env.spawn(&format!("c{i}-r0"), 20, "600s"))
        .collect();
    let mut logs: Vec<PathBuf> = instances.iter().map(|i| i.log.clone()).collect();
    // The member whose assignment shows that the group has settled after the last change.
    let mut newest = 2;
    for round in 1..=4 {
        wait_for(
            deadline,
            "the newest member to be assigned partitions",
            || {
                instances[newest]
                    .assignments()
                    .last()
                    .is_some_and(|a| !a.is_empty())
                    .then_some(())
            },
        );
        // Work a little under this assignment, then crash one member and start a replacement.
        std::thread::sleep(Duration::from_millis(1500));
        let slot = round % 3;
        instances[slot].kill();
        eprintln!(
            "round {round}: killed {} after {:?}; positions {:?}",
            instances[slot].name,
            started.elapsed(),
            env.db.positions()
        );
        instances[slot] = env.spawn(&format!("c{slot}-r{round}"), 20, "600s");
        logs.push(instances[slot].log.clone());
        newest = slot;
    }
    std::thread::sleep(Duration::from_millis(1500));
    for instance in &mut instances {
        instance.kill();
    }
    let status = producer.wait_exit(deadline);
    assert!(status.success(), "produce failed: {status}");

    // Let the killed members' sessions expire (6 s, checked every second), so the last instance
    // joins an empty group and gets every partition in one assignment.
    std::thread::sleep(Duration::from_secs(8));
    let mut last = env.spawn("drain", 50, "10s");
    logs.push(last.log.clone());
    let status = last.wait_exit(deadline);
    assert!(
        status.success(),
        "the draining instance failed: {status}\n{}",
        last.log_tail(30)
    );
    let fenced: usize = logs.iter().map(|l| stale_rejections(l)).sum();
    eprintln!(
        "churn: drained after {:?}; stale batches rejected by the position fence: {} in the \
         draining instance's summary, {fenced} in all {} instances' logs",
        started.elapsed(),
        last.stale_batches(),
        logs.len()
    );
    env.assert_effect_once();
    eprintln!("churn test passed in {:?}", started.elapsed());
}
