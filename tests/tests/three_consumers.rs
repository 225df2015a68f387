//! All three consumers in one `ledgerflow run` process, each with its own group and positions,
//! while every tenant's webhook endpoint stalls (accepts connections, never answers): the ERP
//! postings and the warehouse still reach the end of every partition, the notifications are
//! safely in the outbox, and SIGTERM still stops the process promptly.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ledgerflow_e2e::{Ledger, Stack};

const TOPIC: &str = "e2e.three";
const CONSUMERS: [&str; 3] = ["erp-receivables", "notifications", "warehouse"];

/// A webhook endpoint that accepts every connection and never answers.
fn stalled_endpoint() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream); // never read, never answered, never closed
        }
    });
    (port, accepted)
}

#[test]
fn a_stalled_webhook_endpoint_does_not_hold_back_postings_or_the_warehouse() {
    let stack = Stack::start();
    stack.create_topic(TOPIC, 3);
    let (port, accepted) = stalled_endpoint();
    let tenants = stack.path("tenants.toml");
    let manifest = stack.path("manifest.json");
    let db = format!("sqlite://{}", stack.path("ledger.db"));
    stack.ledgerflow_ok(&[
        "produce",
        "--topic",
        TOPIC,
        "--tenants",
        "4",
        "--events",
        "1500",
        "--duplicates",
        "0.05",
        "--manifest",
        &manifest,
        "--tenants-file",
        &tenants,
        "--webhook-url",
        &format!("http://127.0.0.1:{port}"),
    ]);
    let mut run = stack.spawn(
        &[
            "run",
            "--tenants",
            &tenants,
            "--database",
            &db,
            "--topic",
            TOPIC,
        ],
        "run",
    );
    let ledger = Ledger::open(&db);
    let started = Instant::now();
    let caught_up = |consumer: &str| {
        let positions: i64 = ledger
            .positions()
            .iter()
            .filter(|p| p.consumer == consumer)
            .map(|p| p.next_offset)
            .sum();
        positions == 1500
    };
    while !CONSUMERS.iter().all(|c| caught_up(c)) {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not every consumer reached the end of the topic:\n{}",
            run.log()
        );
        assert!(run.try_wait().is_none(), "run exited:\n{}", run.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let elapsed = started.elapsed();

    // The dispatcher was trying, and nothing was delivered.
    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the dispatcher never called the endpoint"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let delivered = ledger.scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM notification_outbox WHERE status = 'delivered'",
        &[],
    );
    assert_eq!(delivered, 0, "the endpoint never answered");
    let queued = ledger.scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM notification_outbox",
        &[],
    );
    assert!(queued > 0, "notifications are in the outbox");

    // Each consumer has its own positions: all three reached the end on their own.
    let consumers: std::collections::BTreeSet<String> =
        ledger.positions().into_iter().map(|p| p.consumer).collect();
    assert_eq!(
        consumers,
        CONSUMERS.iter().map(|c| (*c).to_owned()).collect(),
        "one set of positions per consumer"
    );
    for c in CONSUMERS {
        assert!(
            run.log().contains(&format!("group={}", stack.group(c))),
            "{c} runs in its own group"
        );
    }
    let (code, report) = stack.reconcile(&db, &["--source", &manifest]);
    assert_eq!(
        code, 0,
        "ERP postings complete while webhooks stall:\n{report:#}"
    );
    let invoices = ledger.scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM warehouse_fact_invoice",
        &[],
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(
        Some(invoices),
        m["event_types"]["invoice_finalized"].as_i64(),
        "warehouse complete while webhooks stall"
    );
    eprintln!(
        "three_consumers: all three caught up in {:.1}s with the webhook endpoint stalled \
         ({} connections held, {queued} notifications queued)",
        elapsed.as_secs_f64(),
        accepted.load(Ordering::SeqCst)
    );

    // A stalled endpoint does not hold up shutdown either.
    let stop = Instant::now();
    let exit = run
        .sigterm(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("run did not stop within 30 s of SIGTERM:\n{}", run.log()));
    assert!(exit.success(), "{exit}:\n{}", run.log());
    eprintln!(
        "three_consumers: SIGTERM to exit {:.1}s",
        stop.elapsed().as_secs_f64()
    );
}
