//! Test harness for end-to-end tests: a real Apache Kafka cluster (one single-node KRaft
//! cluster per test binary, started through `scripts/kafka` by [`KafkaCluster::shared`], or a
//! test's own 3-node cluster), the `ledgerflow` schema registry as a child process, and the
//! `ledgerflow` binary run against them. Each [`Stack`] has its own registry, scratch directory
//! and consumer-group prefix; topics are created per test and must have names of their own.
//!
//! Binary: `LEDGERFLOW_BIN` (default `<target>/debug/ledgerflow`); Kafka's jars come from
//! `make setup` (`.local/kafka/lib/`).
//!
//! Besides the stack: [`Running`] (a `ledgerflow` child that can be SIGKILLed), [`PgDatabase`]
//! (a fresh Postgres database, dropped with the guard), [`Ledger`] (SQL reads of a store),
//! [`EventProducer`] (encoded events and raw poison records through rdkafka) and [`generate`]
//! (an in-process workload with its manifest).
//!
//! The blocking helpers ([`Ledger`], [`EventProducer`]) drive their own tokio runtime: call
//! them from plain `#[test]` functions, not from inside a tokio runtime.

pub mod chaos;
pub mod erp_sim;
pub mod postgres;

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ledgerflow_codec::{Encoder, RegistryClient};
use ledgerflow_core::Event;
use ledgerflow_loadgen::{GeneratedEvent, Manifest, Workload, WorkloadConfig};
use ledgerflow_store::{DeadLetter, DeadLetterFilter, PositionRow, Store};
pub use ledgerflow_testkit::{KafkaCluster, PgDatabase, block_on, postgres_admin_url};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::AnyPool;

/// Path of the `ledgerflow` binary under test.
pub fn ledgerflow_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LEDGERFLOW_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/ledgerflow")
}

/// Where `make setup` put the Kafka jars (`.local/kafka/lib`).
pub fn kafka_lib_dir() -> PathBuf {
    std::env::var_os("KAFKA_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/kafka/lib"))
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A `ledgerflow registry serve` of its own (SQLite in `dir`, an ephemeral port): the process
/// (stopped on drop) and its URL.
pub fn start_registry(dir: &Path) -> (Proc, String) {
    spawn_registry(dir, "127.0.0.1:0")
}

/// Starts `ledgerflow registry serve` on `listen` with its SQLite database in `dir`; returns
/// the process and the URL it announced.
fn spawn_registry(dir: &Path, listen: &str) -> (Proc, String) {
    try_spawn_registry(dir, listen).unwrap_or_else(|e| panic!("{e}"))
}

fn try_spawn_registry(dir: &Path, listen: &str) -> Result<(Proc, String), String> {
    let db = format!("sqlite://{}", dir.join("registry.db").display());
    let mut registry = Command::new(ledgerflow_bin())
        .args(["registry", "serve", "--listen", listen, "--database", &db])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", ledgerflow_bin().display()))?;
    let stdout = registry.stdout.take().ok_or("registry stdout")?;
    watch_owner(registry.id());
    let registry = Proc(registry);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading the registry's address: {e}"))?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("the registry did not start on {listen}: {line:?}"))?
        .to_owned();
    Ok((registry, url))
}

/// Stops the registry `pid` once this test process has ended: a registry held in a `static`
/// (one per test binary) is never dropped, so without the watch it would outlive the binary.
/// The check of its command line keeps a reused pid safe.
fn watch_owner(pid: u32) {
    let owner = std::process::id();
    let script = format!(
        "while kill -0 {owner} 2>/dev/null; do sleep 1; done; \
         grep -q registry /proc/{pid}/cmdline 2>/dev/null && kill {pid}"
    );
    // Without a shell the registry may outlive the binary; nothing else depends on the watch.
    let _watcher = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// A child process killed on drop.
#[derive(Debug)]
pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _killed = self.0.kill();
        let _reaped = self.0.wait();
    }
}

/// The cluster a stack runs on.
#[derive(Debug)]
enum Cluster {
    Shared(&'static KafkaCluster),
    Own(KafkaCluster),
}

/// A registry and a scratch directory on a Kafka cluster, with a group prefix of its own.
#[derive(Debug)]
pub struct Stack {
    /// `host:port,...` of the brokers.
    pub brokers: String,
    /// `http://127.0.0.1:PORT` of the registry.
    pub registry: String,
    /// Consumer-group prefix every `ledgerflow` command of this stack gets
    /// (`LEDGERFLOW_GROUP_PREFIX`; a `--group-prefix` flag still wins).
    pub group_prefix: String,
    /// Scratch directory for the test (manifests, outputs).
    pub dir: tempfile::TempDir,
    // Field order matters: the registry dies before the directory is removed.
    _registry: Option<Proc>,
    cluster: Cluster,
}

impl Stack {
    /// The ledgerflow registry on the test binary's shared single-node Kafka cluster.
    pub fn start() -> Self {
        Self::on(Cluster::Shared(KafkaCluster::shared()))
    }

    /// The ledgerflow registry on a cluster of the test's own (stopped with the stack).
    pub fn with_cluster(cluster: KafkaCluster) -> Self {
        Self::on(Cluster::Own(cluster))
    }

    /// A schema registry the test runs itself (`registry_url`, e.g. another product's
    /// Confluent-compatible API) on the shared single-node Kafka cluster; the stack starts no
    /// registry and stops none.
    pub fn with_registry(registry_url: &str) -> Self {
        let cluster = KafkaCluster::shared();
        Self {
            brokers: cluster.bootstrap.clone(),
            registry: registry_url.to_owned(),
            group_prefix: format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            dir: tempfile::tempdir().expect("temp dir"),
            _registry: None,
            cluster: Cluster::Shared(cluster),
        }
    }

    fn on(cluster: Cluster) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (registry, registry_url) = spawn_registry(dir.path(), "127.0.0.1:0");
        let brokers = match &cluster {
            Cluster::Shared(c) => c.bootstrap.clone(),
            Cluster::Own(c) => c.bootstrap.clone(),
        };
        Self {
            brokers,
            registry: registry_url,
            group_prefix: format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            dir,
            _registry: Some(registry),
            cluster,
        }
    }

    /// Stops the stack's registry (a registry outage); [`Stack::start_registry`] brings it back
    /// on the same address with the same schemas.
    pub fn stop_registry(&mut self) {
        self._registry = None;
    }

    /// Starts the registry again on its former address (after [`Stack::stop_registry`]).
    pub fn start_registry(&mut self) {
        let listen = self
            .registry
            .strip_prefix("http://")
            .unwrap_or(&self.registry)
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The port was ours a moment ago; retry while the old socket lingers.
            match try_spawn_registry(self.dir.path(), &listen) {
                Ok((proc, _)) => {
                    self._registry = Some(proc);
                    return;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "restarting the registry: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// The Kafka cluster under this stack.
    pub fn kafka(&self) -> &KafkaCluster {
        match &self.cluster {
            Cluster::Shared(c) => c,
            Cluster::Own(c) => c,
        }
    }

    /// Creates a topic (replication factor = the cluster's nodes) and waits for its leaders.
    /// Topic names must be unique within a test binary (the cluster is shared).
    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.kafka().create_topic(name, partitions);
    }

    /// The consumer group of `consumer` under this stack's prefix.
    pub fn group(&self, consumer: &str) -> String {
        format!("{}.{consumer}", self.group_prefix)
    }

    /// `ledgerflow ARGS` with the stack's broker, registry and group prefix in the environment
    /// (and no other `LEDGERFLOW_*` variable from the developer's shell), not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = bare_command(args);
        cmd.env("LEDGERFLOW_BROKERS", &self.brokers)
            .env("LEDGERFLOW_SCHEMA_REGISTRY_URL", &self.registry)
            .env("LEDGERFLOW_GROUP_PREFIX", &self.group_prefix);
        cmd
    }
    /// Runs `ledgerflow ARGS` with the stack's broker and registry in the environment.
    pub fn ledgerflow(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run ledgerflow")
    }

    /// Starts `ledgerflow ARGS` in the background; stdout goes to `<name>.out` and stderr to
    /// `<name>.log` in the scratch directory.
    pub fn spawn(&self, args: &[&str], name: &str) -> Running {
        let out = self.dir.path().join(format!("{name}.out"));
        let log = self.dir.path().join(format!("{name}.log"));
        let child = self
            .command(args)
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", ledgerflow_bin().display()));
        Running {
            child,
            out,
            log,
            name: name.to_owned(),
        }
    }

    /// Like [`Stack::spawn`] with extra environment variables (failpoints, pacing).
    pub fn spawn_with_env(&self, args: &[&str], name: &str, env: &[(&str, &str)]) -> Running {
        let out = self.dir.path().join(format!("{name}.out"));
        let log = self.dir.path().join(format!("{name}.log"));
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", ledgerflow_bin().display()));
        Running {
            child,
            out,
            log,
            name: name.to_owned(),
        }
    }

    /// Writes a tenants file for `tenants` generated tenants (`t001`, ...; names and currencies
    /// depend on the tenant's number only, not on a seed) with `ledgerflow produce
    /// --tenants-file`, producing its one record to a scratch topic nobody reads.
    pub fn write_tenants_file(&self, tenants: u32, path: &str) {
        static SCRATCH: AtomicU32 = AtomicU32::new(0);
        let topic = format!(
            "e2e.tenants-scratch-{}",
            SCRATCH.fetch_add(1, Ordering::Relaxed)
        );
        self.create_topic(&topic, 1);
        self.ledgerflow_ok(&[
            "produce",
            "--topic",
            &topic,
            "--tenants",
            &tenants.to_string(),
            "--events",
            "1",
            "--tenants-file",
            path,
        ]);
    }

    /// `ledgerflow stats --format json` of a store.
    pub fn stats(&self, database: &str) -> Stats {
        let out = self.ledgerflow_ok(&["stats", "--database", database, "--format", "json"]);
        Stats(serde_json::from_slice(&out.stdout).expect("stats JSON"))
    }

    /// `ledgerflow reconcile --format json [EXTRA]`: exit code and report.
    pub fn reconcile(&self, database: &str, extra: &[&str]) -> (i32, serde_json::Value) {
        let mut args = vec!["reconcile", "--database", database, "--format", "json"];
        args.extend_from_slice(extra);
        json_command(self.ledgerflow(&args), &args)
    }

    /// `ledgerflow audit verify --format json`: exit code and report.
    pub fn audit_verify(&self, database: &str) -> (i32, serde_json::Value) {
        let args = [
            "audit",
            "verify",
            "--database",
            database,
            "--format",
            "json",
        ];
        json_command(self.ledgerflow(&args), &args)
    }

    /// Like [`Stack::ledgerflow`] but panics with stderr unless the exit code is 0.
    pub fn ledgerflow_ok(&self, args: &[&str]) -> Output {
        let out = self.ledgerflow(args);
        assert!(
            out.status.success(),
            "ledgerflow {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A path inside the scratch directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// Parses JSON-lines output.
pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn json_command(out: Output, args: &[&str]) -> (i32, serde_json::Value) {
    let code = out.status.code().unwrap_or(-1);
    (code, output_json(&out, &format!("ledgerflow {args:?}")))
}

/// `ledgerflow ARGS` with no `LEDGERFLOW_*` variable of the developer's shell and no colour, not
/// yet started: the base of every command a test runs.
pub fn bare_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(ledgerflow_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LEDGERFLOW_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args).env("NO_COLOR", "1");
    cmd
}

/// The JSON a command (`what`) printed on stdout; panics with its exit status, stdout and
/// stderr when there is none.
pub fn output_json(out: &Output, what: &str) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what} printed no JSON ({e}), {}:\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A `ledgerflow` child process (see [`Stack::spawn`]), SIGKILLed on drop if still running.
#[derive(Debug)]
pub struct Running {
    child: Child,
    out: PathBuf,
    log: PathBuf,
    name: String,
}

impl Running {
    /// Process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix): no shutdown hook, no flush, no drain.
    /// Returns whether the process was still running when the signal was sent.
    pub fn sigkill(&mut self) -> bool {
        let running = self.try_wait().is_none();
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
        running
    }

    /// SIGTERM (a graceful shutdown), then waits up to `timeout` for the exit status.
    pub fn sigterm(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "could not send SIGTERM to {}", self.name);
        self.wait_timeout(timeout)
    }

    /// Everything it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Everything it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Lines of its log containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// The name given to [`Stack::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// `ledgerflow stats --format json`.
#[derive(Debug, Clone)]
pub struct Stats(pub serde_json::Value);

impl Stats {
    /// Audit rows of `consumer` with this decision (and reason, for dead letters; `None` sums
    /// every reason).
    pub fn count(&self, consumer: &str, decision: &str, reason: Option<&str>) -> i64 {
        self.0["decisions"]
            .as_array()
            .expect("decisions")
            .iter()
            .filter(|d| d["consumer"] == consumer && d["decision"] == decision)
            .filter(|d| reason.is_none_or(|r| d["reason"] == r))
            .map(|d| d["count"].as_i64().expect("count"))
            .sum()
    }

    /// Dead-letter audit rows of `consumer` by reason.
    pub fn dead_letter_reasons(&self, consumer: &str) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for d in self.0["decisions"].as_array().expect("decisions") {
            if d["consumer"] == consumer && d["decision"] == "dead_lettered" {
                let reason = d["reason"].as_str().unwrap_or("?").to_owned();
                *out.entry(reason).or_insert(0) += d["count"].as_i64().expect("count");
            }
        }
        out
    }
}

/// Reads a store (SQLite or Postgres) with its own runtime and pool; the connection is
/// re-established on demand, so it survives a database restart.
#[derive(Debug)]
pub struct Ledger {
    runtime: tokio::runtime::Runtime,
    store: Store,
}

impl Ledger {
    /// Opens the store (applies the store's own idempotent DDL, like any `ledgerflow` command).
    pub fn open(url: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let store = runtime
            .block_on(Store::open(url))
            .unwrap_or_else(|e| panic!("opening the store {url}: {e}"));
        Self { runtime, store }
    }

    /// The pool (for ad-hoc reads).
    pub fn pool(&self) -> &AnyPool {
        self.store.pool()
    }

    /// Runs a future on the ledger's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// One `BIGINT` from a query with text binds (cast aggregates: `CAST(COUNT(*) AS BIGINT)`).
    pub fn try_scalar(&self, sql: &str, binds: &[&str]) -> Result<i64, sqlx::Error> {
        self.runtime.block_on(async {
            let mut query = sqlx::query_scalar::<_, i64>(sql);
            for b in binds {
                query = query.bind(b.to_string());
            }
            query.fetch_one(self.store.pool()).await
        })
    }

    /// Like [`Ledger::try_scalar`], panicking on errors.
    pub fn scalar(&self, sql: &str, binds: &[&str]) -> i64 {
        self.try_scalar(sql, binds)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The operator actions recorded for a consumer, oldest first.
    pub fn operations(&self, consumer: &str) -> Vec<ledgerflow_store::AuditRow> {
        self.runtime
            .block_on(self.store.operations(Some(consumer)))
            .expect("operations")
    }

    /// Every dead letter, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.runtime
            .block_on(self.store.dead_letters(&DeadLetterFilter::default()))
            .expect("dead letters")
    }

    /// Stored positions.
    pub fn positions(&self) -> Vec<PositionRow> {
        self.runtime
            .block_on(self.store.positions(None))
            .expect("positions")
    }

    /// `(partition, offset, decision)` of every audit row of a consumer and topic, by
    /// partition and offset.
    pub fn audit_rows(&self, consumer: &str, topic: &str) -> Vec<(i32, i64, String)> {
        self.runtime
            .block_on(
                sqlx::query_as::<_, (i32, i64, String)>(
                    "SELECT partition, \"offset\", decision FROM audit_log \
                     WHERE consumer = $1 AND topic = $2 ORDER BY partition, \"offset\", seq",
                )
                .bind(consumer)
                .bind(topic)
                .fetch_all(self.store.pool()),
            )
            .expect("audit rows")
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A record as bytes, for poison and hand-made records.
#[derive(Debug, Clone, Default)]
pub struct RawRecord {
    /// Key (`None`: no key).
    pub key: Option<Vec<u8>>,
    /// Value (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Explicit partition (default: murmur2 of the key, as `ledgerflow produce` does).
    pub partition: Option<i32>,
}

/// Produces encoded events (with the contracts registered for the topic, keyed and with the
/// headers `ledgerflow produce` sets) and raw records, one acknowledged send at a time.
pub struct EventProducer {
    runtime: tokio::runtime::Runtime,
    producer: FutureProducer,
    /// `None` for a producer of raw records only (no registry needed).
    encoder: Option<Encoder>,
    topic: String,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl EventProducer {
    /// Registers every shipped contract version for `topic` (idempotent: `ledgerflow produce`
    /// gets the same ids) and connects a producer.
    pub fn new(stack: &Stack, topic: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let client =
            RegistryClient::new(&stack.registry, Duration::from_secs(10)).expect("registry client");
        let encoder = runtime
            .block_on(Encoder::register(&client, topic))
            .expect("registering the contracts");
        Self::with(runtime, stack, topic, Some(encoder))
    }

    /// A producer of raw records only ([`EventProducer::send_raw`]); it never asks the
    /// registry (which may be down).
    pub fn new_without_registry(stack: &Stack, topic: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        Self::with(runtime, stack, topic, None)
    }

    fn with(
        runtime: tokio::runtime::Runtime,
        stack: &Stack,
        topic: &str,
        encoder: Option<Encoder>,
    ) -> Self {
        // murmur2 like `ledgerflow produce`, so a key lands on its tenant's partition.
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &stack.brokers)
            .set("partitioner", "murmur2_random")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.max.bytes", "2097152")
            .create()
            .expect("producer");
        Self {
            runtime,
            producer,
            encoder,
            topic: topic.to_owned(),
        }
    }

    /// The Confluent-framed value of an event.
    pub fn encode(&self, event: &Event, writer_version: u8) -> Vec<u8> {
        self.encoder
            .as_ref()
            .expect("a producer made with EventProducer::new encodes events")
            .encode(event, writer_version)
            .expect("encoding an event")
    }

    /// Sends an event as `ledgerflow produce` would: key and `tenant_id` header = its tenant,
    /// `event_type` and `event_id` headers.
    pub fn send_event(&self, event: &Event, writer_version: u8) -> Delivered {
        let tenant = event.tenant_id_raw().to_owned();
        self.send_raw(RawRecord {
            key: Some(tenant.clone().into_bytes()),
            value: Some(self.encode(event, writer_version)),
            headers: vec![
                ("tenant_id".to_owned(), tenant),
                (
                    "event_type".to_owned(),
                    event.event_type().as_str().to_owned(),
                ),
                ("event_id".to_owned(), event.event_id_raw().to_owned()),
            ],
            partition: None,
        })
    }

    /// Sends a generated item (original or duplicate) like `ledgerflow produce`.
    pub fn send_generated(&self, generated: &GeneratedEvent) -> Delivered {
        self.send_event(&generated.event, generated.writer_version)
    }

    /// Sends a record as given and waits for the broker's acknowledgement.
    pub fn send_raw(&self, record: RawRecord) -> Delivered {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &record.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut future = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(key) = record.key.as_deref() {
            future = future.key(key);
        }
        if let Some(value) = record.value.as_deref() {
            future = future.payload(value);
        }
        if let Some(partition) = record.partition {
            future = future.partition(partition);
        }
        let delivery = self
            .runtime
            .block_on(self.producer.send(future, Duration::from_secs(30)))
            .unwrap_or_else(|(e, _)| panic!("producing to {}: {e}", self.topic));
        Delivered {
            partition: delivery.partition,
            offset: delivery.offset,
        }
    }
}

/// The deterministic workload `ledgerflow produce` would send for these settings, with the
/// manifest it would write.
pub fn generate(
    tenants: u32,
    events: u64,
    duplicates: f64,
    seed: u64,
) -> (Vec<GeneratedEvent>, Manifest) {
    let workload = Workload::new(WorkloadConfig {
        tenants,
        events,
        duplicates,
        seed,
        ..WorkloadConfig::default()
    })
    .expect("workload");
    let mut manifest = Manifest::new(workload.tenants(), seed);
    let items: Vec<GeneratedEvent> = workload.collect();
    for item in &items {
        manifest.record(item);
    }
    (items, manifest)
}

/// Writes a manifest as `ledgerflow produce --manifest` does.
pub fn write_manifest(manifest: &Manifest, path: &str) {
    let json = serde_json::to_string_pretty(manifest).expect("manifest JSON");
    std::fs::write(path, json + "\n").expect("writing the manifest");
}
