//! A `^regex` topic subscription consumes every matching topic and nothing else.

use std::time::Duration;

use ledgerflow_e2e::Stack;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regex_subscription_reads_matching_topics_only() {
    let stack = Stack::start();
    let matching = "e2e.rx.billing";
    let other = "e2e.other";
    stack.create_topic(matching, 2);
    stack.create_topic(other, 1);
    let manifest = stack.path("manifest.json");
    let tenants = stack.path("tenants.toml");
    let db = format!("sqlite://{}", stack.path("ledger.db"));
    stack.ledgerflow_ok(&[
        "produce",
        "--topic",
        matching,
        "--tenants",
        "3",
        "--events",
        "600",
        "--manifest",
        &manifest,
        "--tenants-file",
        &tenants,
    ]);
    // Garbage on a topic the pattern does not match: reading it would dead-letter every record.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .create()
        .expect("producer");
    for i in 0..5u8 {
        producer
            .send(
                FutureRecord::to(other).key("t001").payload(&[9, i, 9]),
                Duration::from_secs(10),
            )
            .await
            .expect("produce to the other topic");
    }
    let run = tokio::task::block_in_place(|| {
        stack.ledgerflow(&[
            "run",
            "--tenants",
            &tenants,
            "--database",
            &db,
            "--topic",
            r"^e2e\.rx\..+",
            "--exit-when-idle",
            "5s",
            "--format",
            "json",
        ])
    });
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).expect("summary json");
    assert_eq!(
        summary[0]["dead_lettered"], 0,
        "the non-matching topic was not read: {summary}"
    );
    assert!(summary[0]["applied"].as_u64().unwrap() > 0, "{summary}");

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
    assert_eq!(report["clean"], true, "{report:#}");

    let out = stack.ledgerflow(&["stats", "--database", &db, "--no-lag", "--format", "json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats json");
    let topics: Vec<&str> = stats["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["topic"].as_str().unwrap())
        .collect();
    assert!(
        !topics.is_empty() && topics.iter().all(|t| *t == matching),
        "positions: {topics:?}"
    );
}
