//! A transient failure pauses only the partitions it affects: while the schema registry is
//! down, a partition whose writer schema is already cached keeps committing, the partition
//! that needs an uncached schema waits (paused, retried with backoff, never dead-lettered), and
//! it catches up once the registry is back.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ledgerflow_core::{Event, EventType};
use ledgerflow_e2e::{
    EventProducer, Ledger, RawRecord, Stack, free_port, generate, ledgerflow_bin,
};

const TOPIC: &str = "e2e.pause";
const CONSUMER: &str = "erp-receivables";

/// A second registry process on the stack's registry database, at a port the test controls,
/// so it can be stopped and started again without touching the stack's own.
fn start_registry(stack: &Stack, port: u16) -> Child {
    let db = format!("sqlite://{}", stack.path("registry.db"));
    let child = Command::new(ledgerflow_bin())
        .args([
            "registry",
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--database", &db])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting a registry");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "registry on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn send_to(producer: &EventProducer, event: &Event, version: u8, partition: i32) {
    let tenant = event.tenant_id_raw().to_owned();
    producer.send_raw(RawRecord {
        key: Some(tenant.clone().into_bytes()),
        value: Some(producer.encode(event, version)),
        headers: vec![
            ("tenant_id".to_owned(), tenant),
            (
                "event_type".to_owned(),
                event.event_type().as_str().to_owned(),
            ),
            ("event_id".to_owned(), event.event_id_raw().to_owned()),
        ],
        partition: Some(partition),
    });
}

fn position(ledger: &Ledger, partition: i32) -> i64 {
    ledger
        .positions()
        .iter()
        .find(|p| p.consumer == CONSUMER && p.topic == TOPIC && p.partition == partition)
        .map_or(0, |p| p.next_offset)
}

fn wait_for(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; consumer log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_registry_outage_pauses_only_the_partitions_that_need_it() {
    let stack = Stack::start();
    stack.create_topic(TOPIC, 2);
    let tenants = stack.path("tenants.toml");
    stack.write_tenants_file(3, &tenants);
    let db = format!("sqlite://{}", stack.path("ledger.db"));
    // Registers both contract versions through the stack's registry (same database).
    let producer = EventProducer::new(&stack, TOPIC);

    let (items, _) = generate(3, 3_000, 0.0, 17);
    let of_type = |t: EventType| -> Vec<&Event> {
        items
            .iter()
            .map(|g| &g.event)
            .filter(|e| e.event_type() == t)
            .collect()
    };
    // Partition 0 carries only version-1 customer records: one writer schema, cached by the
    // consumer before the outage. Partition 1 carries version-2 invoices, a schema id the
    // consumer first meets during the outage.
    let customers = of_type(EventType::CustomerUpserted);
    let invoices = of_type(EventType::InvoiceFinalized);
    assert!(
        customers.len() >= 80 && invoices.len() >= 30,
        "workload too small"
    );
    let (before, during) = customers.split_at(40);
    let during = &during[..40];
    let v2 = &invoices[..30];

    let port = free_port();
    let registry_url = format!("http://127.0.0.1:{port}");
    let mut registry = start_registry(&stack, port);
    for event in before {
        send_to(&producer, event, 1, 0);
    }
    let mut run = stack.spawn(
        &[
            "run",
            "--consumer",
            CONSUMER,
            "--registry",
            &registry_url,
            "--tenants",
            &tenants,
            "--database",
            &db,
            "--topic",
            TOPIC,
            "--batch-max-wait",
            "100ms",
        ],
        "run",
    );
    let ledger = Ledger::open(&db);
    wait_for(
        "partition 0 to commit the first records",
        Duration::from_secs(60),
        || position(&ledger, 0) == 40,
        || run.log(),
    );

    // Outage: the registry goes away; partition 1 receives records with an uncached schema id,
    // partition 0 more records with the cached one.
    registry.kill().expect("stopping the registry");
    registry.wait().expect("registry exit");
    for event in v2 {
        send_to(&producer, event, 2, 1);
    }
    for event in during {
        send_to(&producer, event, 1, 0);
    }
    wait_for(
        "partition 0 to keep committing during the outage",
        Duration::from_secs(60),
        || position(&ledger, 0) == 80,
        || run.log(),
    );
    wait_for(
        "partition 1 to be paused",
        Duration::from_secs(30),
        || run.log_count("partition paused until the retry") >= 2,
        || run.log(),
    );
    assert_eq!(position(&ledger, 1), 0, "nothing of partition 1 committed");
    assert!(
        ledger.dead_letters().is_empty(),
        "an outage never dead-letters"
    );
    assert!(run.try_wait().is_none(), "the consumer stays up");

    // The registry comes back: partition 1 resumes and catches up.
    let mut registry = start_registry(&stack, port);
    wait_for(
        "partition 1 to catch up after the outage",
        Duration::from_secs(60),
        || position(&ledger, 1) == 30,
        || run.log(),
    );
    assert!(run.log_count("partition resumed") >= 1, "{}", run.log());
    let exit = run.sigterm(Duration::from_secs(30)).expect("run exits");
    assert!(exit.success(), "{exit}:\n{}", run.log());
    // The registry may have exited already: nothing to check either way.
    registry.kill().ok();
    registry.wait().ok();

    assert!(ledger.dead_letters().is_empty());
    let stats = stack.stats(&db);
    assert_eq!(stats.count(CONSUMER, "dead_lettered", None), 0);
    assert_eq!(
        stats.count(CONSUMER, "applied", None),
        110,
        "every record applied exactly once"
    );
    let (code, report) = stack.audit_verify(&db);
    assert_eq!(code, 0, "{report:#}");
}
