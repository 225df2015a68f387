//! SIGTERM drains and commits, exits 0, and a restart finishes the ledger cleanly.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ledgerflow_e2e::{Stack, ledgerflow_bin};

#[test]
fn sigterm_commits_the_buffered_batches_and_exits_zero() {
    let stack = Stack::start();
    let topic = "e2e.shutdown";
    stack.create_topic(topic, 3);
    let manifest = stack.path("manifest.json");
    let tenants = stack.path("tenants.toml");
    let db = format!("sqlite://{}", stack.path("ledger.db"));
    stack.ledgerflow_ok(&[
        "produce",
        "--topic",
        topic,
        "--tenants",
        "4",
        "--events",
        "3000",
        "--duplicates",
        "0.05",
        "--manifest",
        &manifest,
        "--tenants-file",
        &tenants,
    ]);
    let log = std::fs::File::create(stack.path("run.log")).unwrap();
    let mut child = Command::new(ledgerflow_bin())
        .args([
            "run",
            "--tenants",
            &tenants,
            "--topic",
            topic,
            "--database",
            &db,
        ])
        .args(["--batch-max-records", "100"])
        .env("LEDGERFLOW_BROKERS", &stack.brokers)
        .env("LEDGERFLOW_SCHEMA_REGISTRY_URL", &stack.registry)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start ledgerflow run");
    // Let it get going (group join and first batches), then ask it to stop.
    std::thread::sleep(Duration::from_secs(6));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "run did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(stack.path("run.log")).unwrap_or_default();
    assert!(
        exit.success(),
        "SIGTERM must end with exit 0, got {exit}:\n{log}"
    );
    assert!(
        log.contains("shutdown requested"),
        "the run noticed the signal:\n{log}"
    );

    // A restart picks up where the database says and completes the ledger exactly.
    stack.ledgerflow_ok(&[
        "run",
        "--tenants",
        &tenants,
        "--topic",
        topic,
        "--database",
        &db,
        "--exit-when-idle",
        "4s",
    ]);
    let out = stack.ledgerflow(&[
        "reconcile",
        "--database",
        &db,
        "--source",
        &manifest,
        "--format",
        "json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("reconcile json");
    assert_eq!(
        report["clean"], true,
        "reconcile after SIGTERM + restart:\n{report:#}"
    );
    assert!(out.status.success());
    let out = stack.ledgerflow(&["audit", "verify", "--database", &db]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
