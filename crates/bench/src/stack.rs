//! The processes a benchmark run needs, started and owned by the harness: a Tansu broker
//! (SQLite storage in a temp dir, with the header index the end-to-end tests add), the
//! ledgerflow schema registry, fresh Postgres databases, and `ledgerflow` commands.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection, SqliteConnection};

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
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(listener.local_addr()?.port())
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{what} exited before listening: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on port {port} within 30s")
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
    tansu: PathBuf,
    // Field order: processes die before the directory is removed.
    registry_proc: Proc,
    broker: Proc,
    /// Scratch directory (broker storage, manifests, logs).
    pub(crate) dir: tempfile::TempDir,
}

impl Stack {
    pub(crate) async fn start(ledgerflow: PathBuf, tansu: PathBuf) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ledgerflow-bench.")
            .tempdir()
            .context("creating the scratch directory")?;
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("broker.log"))?;
        let mut broker = Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            // SQLite, not memory: the memory engine of Tansu 0.6.0 reports wrong high
            // watermarks, and zero lag is what the clock stops on.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(dir.path())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} (run `make setup`)", tansu.display()))?;
        wait_for_port(port, &mut broker, "tansu broker")?;
        let broker = Proc(broker);
        index_tansu_headers(&dir.path().join("tansu.db")).await;

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
            brokers: format!("127.0.0.1:{port}"),
            registry: registry_url,
            ledgerflow,
            tansu,
            registry_proc: registry,
            broker,
            dir,
        })
    }

    /// Pid of the broker.
    pub(crate) fn broker_pid(&self) -> u32 {
        self.broker.pid()
    }

    /// Pid of the registry.
    pub(crate) fn registry_pid(&self) -> u32 {
        self.registry_proc.pid()
    }

    /// A path in the scratch directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `tansu topic create`.
    pub(crate) fn create_topic(&self, name: &str, partitions: u32) -> anyhow::Result<()> {
        let out = Command::new(&self.tansu)
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://{}", self.brokers),
            ])
            .args(["--partitions", &partitions.to_string(), name])
            .output()
            .context("tansu topic create")?;
        if !out.status.success() {
            bail!(
                "tansu topic create {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
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

/// Tansu 0.6.0's SQLite schema has no index on `header (topition, offset_id)`, which every
/// fetch looks records' headers up by; without it fetching slows down with every record the
/// broker holds (see `tests/src/lib.rs`). The index changes query plans only, never results.
async fn index_tansu_headers(db: &Path) {
    let url = format!("sqlite://{}", db.display());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = async {
            let mut conn = SqliteConnection::connect(&url).await?;
            sqlx::query(
                "CREATE INDEX IF NOT EXISTS bench_header_topition_offset \
                 ON header (topition, offset_id)",
            )
            .execute(&mut conn)
            .await
            .map(|_| ())
        };
        match attempt.await {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => {
                eprintln!(
                    "warning: could not index tansu's header table ({e}); fetches will be slow"
                );
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
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
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_database(&admin, &name));
            }
        })
        .join();
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
