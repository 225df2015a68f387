//! The processes a benchmark run needs, started and owned by the harness: a single-node Apache
//! Kafka cluster (KRaft, started by `scripts/kafka` in the scratch directory), the ledgerflow
//! schema registry, fresh Postgres databases, and `ledgerflow` commands.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sqlx::{Connection, PgConnection};

/// Heap of the broker's JVM.
pub(crate) const KAFKA_HEAP: &str = "512m";

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub(crate) struct Proc(pub(crate) Child);

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Already exited, or not ours to reap: nothing to do either way.
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// The launcher script: `LEDGERFLOW_KAFKA_SCRIPT`, else this workspace's `scripts/kafka`.
pub(crate) fn default_kafka_script() -> PathBuf {
    let in_workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka");
    if in_workspace.is_file() {
        in_workspace
    } else {
        PathBuf::from("scripts/kafka")
    }
}

/// The first port of `len` consecutive free ports, below Linux's ephemeral range (32768+) so
/// that outgoing connections do not take them between this check and the broker's bind.
fn free_port_block(len: u16) -> anyhow::Result<u16> {
    let seed = u32::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..4]
            .try_into()
            .context("4 bytes")?,
    );
    for attempt in 0..200u32 {
        let base = 20_000 + (seed.wrapping_add(attempt.wrapping_mul(7919)) % 12_000) as u16;
        if (0..len).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
    }
    bail!("no block of {len} free ports between 20000 and 32000")
}

/// What the report says about the broker.
#[derive(Debug, Clone)]
pub(crate) struct BrokerInfo {
    /// `Apache Kafka 4.4.0`, from the broker jar's name.
    pub(crate) kafka: String,
    /// The first line of `java -version` of the JVM the launcher runs.
    pub(crate) java: String,
    /// `-Xmx` of the broker.
    pub(crate) heap: String,
}

/// A single-node KRaft cluster (one JVM, broker and controller), stopped on drop. The launcher
/// also stops it (and removes its directory) when the harness exits without dropping it.
#[derive(Debug)]
struct Kafka {
    script: PathBuf,
    dir: PathBuf,
    bootstrap: String,
    pid: u32,
}

impl Kafka {
    fn start(script: &Path, dir: &Path) -> anyhow::Result<Self> {
        let base = free_port_block(2)?;
        let out = Command::new(script)
            .arg("start")
            .arg("--dir")
            .arg(dir)
            .args(["--nodes", "1"])
            .args(["--port", &base.to_string()])
            .args(["--heap", KAFKA_HEAP])
            .args(["--owner-pid", &std::process::id().to_string()])
            .arg("--remove-on-exit")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} start", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "{} start failed ({}; `make setup` puts the Kafka jars in .local/kafka/lib):\n{}{}",
                script.display(),
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let bootstrap = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("BOOTSTRAP="))
            .with_context(|| format!("scripts/kafka start printed no BOOTSTRAP line:\n{stdout}"))?
            .trim()
            .to_owned();
        // The launcher writes the node's pid: the JVM itself (it execs java), so its CPU and
        // memory in /proc are the broker's.
        let pid_file = dir.join("node-1/pid");
        let pid = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?
            .trim()
            .parse::<u32>()
            .with_context(|| format!("parsing {}", pid_file.display()))?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "java" {
            eprintln!(
                "warning: the broker's pid {pid} is {:?}, not java: its CPU figures may be wrong",
                comm.trim()
            );
        }
        Ok(Self {
            script: script.to_owned(),
            dir: dir.to_owned(),
            bootstrap,
            pid,
        })
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        // kill -9: the cluster's data is thrown away with the scratch directory.
        let _stopped = Command::new(&self.script)
            .arg("stop")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--kill")
            .stdin(Stdio::null())
            .output();
    }
}

/// The broker's version from the jar the launcher runs (`kafka_2.13-4.4.0.jar`), or `kafka.Kafka
/// --version` when no jar name says it.
fn kafka_version(script: &Path) -> String {
    let lib = std::env::var_os("KAFKA_LIB").map_or_else(
        || {
            script
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join("../.local/kafka/lib")
        },
        PathBuf::from,
    );
    let from_jar = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("kafka_")?.strip_suffix(".jar")?;
            let (_scala, version) = version.split_once('-')?;
            (!version.contains('-')).then(|| version.to_owned())
        })
    });
    let version = from_jar.or_else(|| {
        let classpath = format!("{}/*", lib.display());
        let out = Command::new(java())
            .args(["-cp", &classpath, "kafka.Kafka", "--version"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().next().map(str::to_owned)
    });
    version.map_or_else(
        || "Apache Kafka (version unknown)".to_owned(),
        |v| format!("Apache Kafka {v}"),
    )
}

/// The JVM the launcher runs (`JAVA`, else `java` on PATH); the peer's Connect worker too.
pub(crate) fn java() -> std::ffi::OsString {
    std::env::var_os("JAVA").unwrap_or_else(|| "java".into())
}

/// First line of `java -version` (printed on stderr).
fn java_version() -> String {
    Command::new(java())
        .arg("-version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "java (version unknown)".to_owned())
}

/// The broker, the registry and a scratch directory.
#[derive(Debug)]
pub(crate) struct Stack {
    /// `127.0.0.1:PORT` of the broker.
    pub(crate) brokers: String,
    /// `http://127.0.0.1:PORT` of the registry.
    pub(crate) registry: String,
    /// The `ledgerflow` binary.
    pub(crate) ledgerflow: PathBuf,
    /// Versions and settings of the broker, for the report.
    pub(crate) broker_info: BrokerInfo,
    // Field order: processes stop before the directory is removed.
    registry_proc: Proc,
    kafka: Kafka,
    /// Scratch directory (the cluster in `kafka/`, manifests, logs).
    pub(crate) dir: tempfile::TempDir,
}

impl Stack {
    pub(crate) fn start(ledgerflow: PathBuf, kafka_script: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ledgerflow-bench.")
            .tempdir()
            .context("creating the scratch directory")?;
        let kafka = Kafka::start(kafka_script, &dir.path().join("kafka"))?;
        let broker_info = BrokerInfo {
            kafka: kafka_version(kafka_script),
            java: java_version(),
            heap: KAFKA_HEAP.to_owned(),
        };

        let db = format!("sqlite://{}", dir.path().join("registry.db").display());
        let mut registry = Command::new(&ledgerflow)
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
            .with_context(|| format!("starting {}", ledgerflow.display()))?;
        let stdout = registry.stdout.take().context("registry stdout")?;
        let registry = Proc(registry);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the registry's address")?;
        let registry_url = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected registry output {line:?}"))?
            .to_owned();
        Ok(Self {
            brokers: kafka.bootstrap.clone(),
            registry: registry_url,
            ledgerflow,
            broker_info,
            registry_proc: registry,
            kafka,
            dir,
        })
    }

    /// Pid of the broker (the JVM of the cluster's only node).
    pub(crate) fn broker_pid(&self) -> u32 {
        self.kafka.pid
    }

    /// Pid of the registry.
    pub(crate) fn registry_pid(&self) -> u32 {
        self.registry_proc.pid()
    }

    /// A path in the scratch directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates a topic (replication factor 1) with the admin API and waits until every
    /// partition has a leader.
    pub(crate) async fn create_topic(&self, name: &str, partitions: u32) -> anyhow::Result<()> {
        let count = i32::try_from(partitions).context("partition count")?;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .context("creating an admin client")?;
        let results = admin
            .create_topics(
                &[NewTopic::new(name, count, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .with_context(|| format!("creating topic {name}"))?;
        for result in results {
            if let Err((topic, code)) = result {
                bail!("creating topic {topic}: {code}");
            }
        }
        let metadata: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .context("creating a metadata client")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let led = metadata
                .fetch_metadata(Some(name), Duration::from_secs(5))
                .ok()
                .and_then(|m| {
                    let t = m.topics().iter().find(|t| t.name() == name)?;
                    (t.error().is_none()).then(|| {
                        t.partitions().len() == count as usize
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
                .unwrap_or(false);
            if led {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("topic {name} has no leader for every partition after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `ledgerflow ARGS` with this stack's broker and registry, and no other `LEDGERFLOW_*`
    /// setting from the caller's environment.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.ledgerflow);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LEDGERFLOW_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(args)
            .env("LEDGERFLOW_BROKERS", &self.brokers)
            .env("LEDGERFLOW_SCHEMA_REGISTRY_URL", &self.registry)
            .env("NO_COLOR", "1");
        cmd
    }

    /// Runs `ledgerflow ARGS` to completion.
    pub(crate) fn ledgerflow(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command(args)
            .output()
            .with_context(|| format!("running ledgerflow {args:?}"))
    }

    /// Starts `ledgerflow ARGS` with stdout and stderr in `<name>.out` / `<name>.log`.
    pub(crate) fn spawn(&self, args: &[&str], name: &str) -> anyhow::Result<Proc> {
        let out = std::fs::File::create(self.path(&format!("{name}.out")))?;
        let log = std::fs::File::create(self.path(&format!("{name}.log")))?;
        let mut command = self.command(args);
        // `BENCH_RUN_ARGS`: extra arguments for every `ledgerflow run` (experiments with
        // settings, e.g. `--batch-max-wait 50ms`); a report made with them says so.
        if args.first() == Some(&"run") {
            command.args(run_args());
        }
        let child = command
            .stdout(out)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting ledgerflow {args:?}"))?;
        Ok(Proc(child))
    }
}

/// A fresh Postgres database, dropped `WITH (FORCE)` by [`PgDatabase::drop_now`] (or, as a
/// fallback, when the guard is dropped).
#[derive(Debug)]
pub(crate) struct PgDatabase {
    admin: String,
    pub(crate) name: String,
    pub(crate) url: String,
    dropped: bool,
}

impl PgDatabase {
    pub(crate) async fn create(admin: &str, label: &str) -> anyhow::Result<Self> {
        let name = format!(
            "ledgerflow_bench_{label}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut conn = PgConnection::connect(admin)
            .await
            .with_context(|| format!("connecting to {admin} (run `make setup`)"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        Ok(Self {
            admin: admin.to_owned(),
            url: format!("{base}/{name}"),
            name,
            dropped: false,
        })
    }

    pub(crate) async fn drop_now(mut self) {
        self.dropped = true;
        drop_database(&self.admin, &self.name).await;
    }
}

async fn drop_database(admin: &str, name: &str) {
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    for _ in 0..20 {
        if let Ok(mut conn) = PgConnection::connect(admin).await
            && sqlx::query(&sql).execute(&mut conn).await.is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("warning: could not drop database {name}");
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // On an early error: drop it on a scratch runtime so no database is left behind.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // A panic in the scratch runtime leaves a database behind: nothing more to do in drop.
        std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_database(&admin, &name));
            }
        })
        .join()
        .ok();
    }
}

/// The extra `ledgerflow run` arguments from `BENCH_RUN_ARGS` (whitespace-separated).
pub(crate) fn run_args() -> Vec<String> {
    std::env::var("BENCH_RUN_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}
