//! The notifications consumer through the real binary, broker and registry: `ledgerflow produce
//! --tenants-file --webhook-url` writes tenants with one webhook endpoint each (and their
//! `whsec_` secrets), `scripts/webhook_receiver.py` receives the webhooks (verifying every
//! signature with Python's hmac/hashlib/base64, failing the first attempt of ~20% of the
//! webhook-ids, deduplicating by webhook-id), and `ledgerflow run --consumer notifications
//! --exit-when-idle` must deliver every expected notification before it exits.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ledgerflow_e2e::{Stack, free_port};

/// Event types with a notification.
const NOTIFIED: [&str; 4] = [
    "invoice_finalized",
    "payment_captured",
    "subscription_activated",
    "credit_memo_issued",
];

/// The receiver process, killed when the test ends (also when it fails).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Already exited, or not ours to reap: nothing to do either way.
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn every_notification_is_delivered_once_with_a_valid_signature() {
    let stack = Stack::start();
    let topic = "e2e.notify";
    stack.create_topic(topic, 3);
    let tenants = stack.path("tenants.toml");
    let manifest = stack.path("manifest.json");
    let summary_path = stack.path("receiver.json");
    let db = format!("sqlite://{}", stack.path("ledger.db"));
    let port = free_port();
    let hooks = format!("http://127.0.0.1:{port}/hooks");
    stack.ledgerflow_ok(&[
        "produce",
        "--topic",
        topic,
        "--tenants",
        "4",
        "--events",
        "600",
        "--duplicates",
        "0.05",
        "--manifest",
        &manifest,
        "--tenants-file",
        &tenants,
        "--webhook-url",
        &hooks,
    ]);

    // The receiver reads the endpoints and secret references from the tenants file.
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let mut receiver = Command::new(&python)
        .arg(repo_root().join("scripts/webhook_receiver.py"))
        .args([&port.to_string(), &tenants, &summary_path, "20"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3 scripts/webhook_receiver.py");
    let mut line = String::new();
    BufReader::new(receiver.stdout.take().expect("receiver stdout"))
        .read_line(&mut line)
        .expect("receiver announces itself");
    assert!(line.starts_with("listening on"), "{line:?}");
    let receiver_pid = receiver.id();
    let receiver = KillOnDrop(receiver);

    let run = stack
        .command(&[
            "run",
            "--consumer",
            "notifications",
            "--tenants",
            &tenants,
            "--database",
            &db,
            "--topic",
            topic,
            "--exit-when-idle",
            "3s",
            "--format",
            "json",
        ])
        .env("LEDGERFLOW_WEBHOOK_BACKOFF_BASE_MS", "50")
        .env("LEDGERFLOW_WEBHOOK_POLL_MS", "50")
        .env("LEDGERFLOW_WEBHOOK_BREAKER_COOLDOWN_MS", "300")
        .output()
        .expect("run ledgerflow");
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{log}");
    let run_summary: serde_json::Value = serde_json::from_slice(&run.stdout).expect("run json");
    assert_eq!(run_summary[0]["consumer"], "notifications", "{run_summary}");
    assert_eq!(run_summary[0]["dead_lettered"], 0, "{run_summary}");

    // Stop the receiver (SIGTERM) so it writes its summary.
    let killed = Command::new("kill")
        .args(["-TERM", &receiver_pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new(&summary_path).exists() {
        assert!(Instant::now() < deadline, "the receiver wrote no summary");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(receiver);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();

    // Expected: one notification per distinct event of a notified type (one endpoint per
    // tenant, subscribed to everything).
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let expected: u64 = NOTIFIED
        .iter()
        .map(|t| manifest["event_types"][t].as_u64().unwrap_or(0))
        .sum();
    assert!(expected > 100, "workload too small: {manifest}");
    let count = |key: &str| summary[key].as_u64().unwrap_or(u64::MAX);
    assert_eq!(
        count("accepted"),
        expected,
        "every notification arrived: {summary:#}"
    );
    assert_eq!(count("bad_signatures"), 0, "{summary:#}");
    assert_eq!(count("unknown_paths"), 0, "{summary:#}");
    assert_eq!(count("accepted_twice"), 0, "{summary:#}");
    assert_eq!(count("body_mismatches"), 0, "retries carry the same body");
    let injected = count("injected_failures");
    assert!(
        injected * 10 >= expected && injected * 10 <= expected * 3,
        "about 20% of first attempts failed: {injected} of {expected}"
    );
    assert_eq!(
        count("requests"),
        count("accepted") + injected + count("replays"),
        "{summary:#}"
    );

    // The outbox agrees: every row delivered, the failed-first ones on their second attempt.
    let out = stack.ledgerflow_ok(&[
        "notifications",
        "list",
        "--database",
        &db,
        "--format",
        "json",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("list json");
    assert_eq!(rows.len() as u64, expected);
    assert!(rows.iter().all(|r| r["status"] == "delivered"), "{rows:?}");
    let mut ids: Vec<&str> = rows
        .iter()
        .map(|r| r["webhook_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let accepted: Vec<&str> = summary["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        ids, accepted,
        "the receiver accepted exactly the outbox's webhook-ids"
    );
    let retried = rows.iter().filter(|r| r["attempts"] == 2).count() as u64;
    assert_eq!(
        retried, injected,
        "each injected failure cost one more attempt"
    );
    let retry = stack.ledgerflow_ok(&["notifications", "retry", "--all-failed", "--database", &db]);
    assert_eq!(
        String::from_utf8_lossy(&retry.stdout).trim(),
        "re-queued 0 notification(s)"
    );

    // `ledgerflow webhooks verify` agrees with the Python receiver on a captured request, and
    // rejects it once the body is altered.
    let sample = &summary["sample"];
    let secret_file = secret_file_for(&tenants, sample["path"].as_str().unwrap());
    let verify = |body: &str| {
        let mut child = stack
            .command(&[
                "webhooks",
                "verify",
                "--secret-file",
                &secret_file,
                "--id",
                sample["id"].as_str().unwrap(),
                "--timestamp",
                sample["timestamp"].as_str().unwrap(),
                "--signature",
                sample["signature"].as_str().unwrap(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("ledgerflow webhooks verify");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let body = sample["body"].as_str().unwrap();
    let ok = verify(body);
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "valid");
    let bad = verify(&body.replacen("\"amount\"", "\"amount \"", 1));
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stdout).starts_with("invalid: "));
}

/// The secret file of the endpoint whose URL path is `path`, from the tenants file.
fn secret_file_for(tenants: &str, path: &str) -> String {
    let text = std::fs::read_to_string(tenants).unwrap();
    let file: toml::Value = toml::from_str(&text).unwrap();
    for tenant in file["tenants"].as_array().unwrap() {
        for hook in tenant
            .get("webhooks")
            .and_then(|w| w.as_array())
            .into_iter()
            .flatten()
        {
            if hook["url"].as_str().unwrap().ends_with(path) {
                let relative = hook["secret"]["file"].as_str().unwrap();
                return Path::new(tenants)
                    .parent()
                    .unwrap()
                    .join(relative)
                    .display()
                    .to_string();
            }
        }
    }
    panic!("no endpoint for {path}");
}
