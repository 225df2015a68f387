//! Test harness for end-to-end tests: starts a real Tansu broker (SQLite storage in a temp dir,
//! a free port) and the `ledgerflow` schema registry as child processes, and runs the
//! `ledgerflow` binary against them. Everything is killed when the harness is dropped.
//!
//! Binaries: `LEDGERFLOW_BIN` (default `<target>/debug/ledgerflow`) and `TANSU_BIN` (default
//! `tansu` on PATH, then `~/.cargo/bin/tansu`). `make test` builds and installs both.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// Path of the `tansu` broker binary.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo/bin/tansu")
    })
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port} within 30s");
}

/// A child process killed on drop.
#[derive(Debug)]
pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running broker and registry in a private temp dir.
#[derive(Debug)]
pub struct Stack {
    /// `127.0.0.1:PORT` of the broker.
    pub brokers: String,
    /// `http://127.0.0.1:PORT` of the registry.
    pub registry: String,
    /// Scratch directory for the test (manifests, outputs).
    pub dir: tempfile::TempDir,
    // Field order matters: processes die before the directory is removed.
    _registry: Proc,
    _broker: Proc,
}

impl Stack {
    /// Starts Tansu (SQLite storage) and the ledgerflow registry.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("broker.log")).expect("broker log");
        let mut broker = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(dir.path())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {} (run `make setup`): {e}", tansu_bin().display())
            });
        wait_for_port(port, &mut broker, "tansu broker");
        let broker = Proc(broker);

        let db = format!("sqlite://{}", dir.path().join("registry.db").display());
        let mut registry = Command::new(ledgerflow_bin())
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
        let stdout = registry.stdout.take().expect("registry stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("registry announces its address");
        let registry_url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected registry output {line:?}"))
            .to_owned();
        Self {
            brokers: format!("127.0.0.1:{port}"),
            registry: registry_url,
            dir,
            _registry: Proc(registry),
            _broker: broker,
        }
    }

    /// Creates a topic with `tansu topic create`.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu_bin())
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://{}", self.brokers),
            ])
            .args(["--partitions", &partitions.to_string(), name])
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "topic create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `ledgerflow ARGS` with the stack's broker and registry in the environment.
    pub fn ledgerflow(&self, args: &[&str]) -> Output {
        Command::new(ledgerflow_bin())
            .args(args)
            .env("LEDGERFLOW_BROKERS", &self.brokers)
            .env("LEDGERFLOW_SCHEMA_REGISTRY_URL", &self.registry)
            .env_remove("LEDGERFLOW_DATABASE_URL")
            .output()
            .expect("run ledgerflow")
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
