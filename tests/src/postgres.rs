//! The machine's local Postgres cluster, restarted or paused by crash and chaos tests.
//!
//! `LEDGERFLOW_TEST_PG_CLUSTER=VERSION/NAME` names the cluster (default: the newest version
//! under `/etc/postgresql`, cluster `main`). These calls affect every database of the server:
//! tests that use them run alone (their own test binary, or `make chaos`).

use std::process::Command;
use std::time::{Duration, Instant};

/// `(version, cluster)` of the local Postgres cluster.
pub fn cluster() -> (String, String) {
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
    let (version, cluster) = cluster();
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

/// Whether the server accepts connections on 127.0.0.1:5432.
pub fn ready() -> bool {
    Command::new("pg_isready")
        .args(["-q", "-h", "127.0.0.1", "-p", "5432"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts Postgres again if a panic left it stopped (other tests share it).
#[derive(Debug)]
pub struct StartOnDrop;

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        if !ready() {
            let (version, cluster) = cluster();
            let _started = Command::new("pg_ctlcluster")
                .args(["--skip-systemctl-redirect", &version, &cluster, "start"])
                .status();
        }
    }
}

/// Stops Postgres, keeps it down for `down`, starts it and waits until it accepts connections.
/// Returns how long it was unavailable.
pub fn restart(down: Duration) -> Duration {
    let started = Instant::now();
    let _guard = StartOnDrop;
    pg_ctl("stop");
    std::thread::sleep(down);
    pg_ctl("start");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "Postgres not ready 60 s after start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// Freezes every Postgres process (SIGSTOP) for `pause`, then lets them go on (SIGCONT): the
/// server neither answers nor drops connections meanwhile, as in a long stall or a VM pause.
pub fn pause(pause: Duration) {
    let signal = |sig: &str| {
        let status = Command::new("pkill")
            .args([sig, "-u", "postgres", "-x", "postgres"])
            .status()
            .expect("pkill");
        assert!(status.success(), "pkill {sig} of the postgres processes");
    };
    struct Continue;
    impl Drop for Continue {
        fn drop(&mut self) {
            let _resumed = Command::new("pkill")
                .args(["-CONT", "-u", "postgres", "-x", "postgres"])
                .status();
        }
    }
    let _resume = Continue;
    signal("-STOP");
    std::thread::sleep(pause);
    signal("-CONT");
}
