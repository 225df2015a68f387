//! `ledgerflow run` over bad input, through a real broker, registry and store (SQLite): every
//! bad record is dead-lettered with its reason code, the records around it are applied, the
//! process exits 0 when idle, and nothing is posted for a record it rejected.
//!
//! Records are written in-process with the codec's [`ledgerflow_e2e::EventProducer`] (keyed and
//! with the headers `ledgerflow produce` sets) so good and bad records can be placed at exact
//! offsets; the stream comes from the same deterministic generator as `ledgerflow produce`, so
//! its manifest reconciles.

use std::collections::BTreeMap;

use ledgerflow_codec::{HEADER_LEN, encode_frame};
use ledgerflow_core::{Event, EventType, SchemaId};
use ledgerflow_e2e::{
    Delivered, EventProducer, Ledger, RawRecord, Stack, generate, write_manifest,
};
use ledgerflow_loadgen::GeneratedEvent;

const CONSUMER: &str = "erp-receivables";
/// Event types the erp-receivables consumer applies (everything else is skipped).
const ERP_TYPES: [EventType; 4] = [
    EventType::InvoiceFinalized,
    EventType::PaymentCaptured,
    EventType::CreditMemoIssued,
    EventType::CustomerUpserted,
];

/// A stack, a topic, a tenants file and a SQLite store in the scratch directory.
struct Setup {
    stack: Stack,
    topic: &'static str,
    tenants: String,
    database: String,
}

impl Setup {
    /// A new stack and topic, with a tenants file for `tenants` generated tenants.
    fn new(topic: &'static str, partitions: u32, tenants: u32) -> Self {
        let stack = Stack::start();
        stack.create_topic(topic, partitions);
        let tenants_path = stack.path("tenants.toml");
        stack.write_tenants_file(tenants, &tenants_path);
        Self::with(stack, topic, tenants_path)
    }

    /// A stack whose topic and tenants file already exist.
    fn with(stack: Stack, topic: &'static str, tenants: String) -> Self {
        let database = format!("sqlite://{}", stack.path("ledger.db"));
        Self {
            stack,
            topic,
            tenants,
            database,
        }
    }

    /// `ledgerflow run` to idle; asserts exit 0 and returns the erp-receivables summary.
    fn run(&self, extra: &[&str]) -> serde_json::Value {
        // The erp-receivables pipeline alone: these tests count its decisions and tables.
        let mut args = vec![
            "run",
            "--consumer",
            CONSUMER,
            "--tenants",
            &self.tenants,
            "--topic",
            self.topic,
            "--database",
            &self.database,
            "--exit-when-idle",
            "3s",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = self.stack.ledgerflow_ok(&args);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains("drained: every subscribed partition"),
            "the run ended without draining:\n{log}"
        );
        let summaries: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("run summary JSON");
        assert_eq!(summaries[0]["consumer"], CONSUMER, "{summaries}");
        assert_eq!(summaries[0]["exit"], "drained", "{summaries}");
        summaries[0].clone()
    }

    fn ledger(&self) -> Ledger {
        Ledger::open(&self.database)
    }

    /// Reconciles against a manifest file; asserts a clean report.
    fn assert_reconciles(&self, manifest: &str) {
        let (code, report) = self
            .stack
            .reconcile(&self.database, &["--source", manifest]);
        assert_eq!(code, 0, "reconcile against the manifest: {report}");
        assert_eq!(report["clean"], true, "{report}");
        let (code, report) = self.stack.reconcile(&self.database, &[]);
        assert_eq!(code, 0, "reconcile against the audit log: {report}");
        let (code, audit) = self.stack.audit_verify(&self.database);
        assert_eq!(code, 0, "audit verify: {audit}");
    }
}

/// Distinct events of the types erp-receivables applies.
fn handled(items: &[GeneratedEvent]) -> usize {
    items
        .iter()
        .filter(|g| !g.duplicate && ERP_TYPES.contains(&g.event.event_type()))
        .count()
}

/// `(partition, offset) -> reason` of every dead letter.
fn dead_letters(ledger: &Ledger) -> BTreeMap<(i32, i64), String> {
    ledger
        .dead_letters()
        .into_iter()
        .map(|d| ((d.partition, d.offset), d.reason.to_string()))
        .collect()
}

fn journals_of(ledger: &Ledger, event_id: &str, kind: &str) -> i64 {
    ledger.scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_journal_entries WHERE event_id = $1 AND kind = $2",
        &[event_id, kind],
    )
}

#[test]
fn poison_between_good_events_is_dead_lettered_with_its_reason_and_the_rest_applied() {
    let setup = Setup::new("e2e.run-poison", 1, 1);
    let producer = EventProducer::new(&setup.stack, setup.topic);
    let (items, manifest) = generate(1, 60, 0.0, 11);
    let manifest_path = setup.stack.path("manifest.json");
    write_manifest(&manifest, &manifest_path);

    let (before, after) = items.split_at(30);
    let good_before: Vec<Delivered> = before.iter().map(|g| producer.send_generated(g)).collect();
    let invoice = items
        .iter()
        .find(|g| g.event.event_type() == EventType::InvoiceFinalized)
        .expect("an invoice in the stream");
    let real = producer.encode(&invoice.event, invoice.writer_version);
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("truncated_header", vec![0, 0, 1]),
        ("unsupported_magic", b"{\"json\":true}".to_vec()),
        (
            "unknown_schema_id",
            encode_frame(SchemaId(999_999), &real[HEADER_LEN..]),
        ),
        ("avro_decode", real[..real.len() - 7].to_vec()),
    ];
    let mut expected = BTreeMap::new();
    for (reason, value) in &poison {
        let d = producer.send_raw(RawRecord {
            key: Some(b"t001".to_vec()),
            value: Some(value.clone()),
            ..RawRecord::default()
        });
        expected.insert((d.partition, d.offset), (*reason).to_owned());
    }
    let good_after: Vec<Delivered> = after.iter().map(|g| producer.send_generated(g)).collect();

    let summary = setup.run(&[]);
    let ledger = setup.ledger();
    assert_eq!(
        dead_letters(&ledger),
        expected,
        "each poison record dead-lettered with its reason"
    );
    assert_eq!(summary["dead_lettered"], 4, "{summary}");
    assert_eq!(summary["applied"], handled(&items), "{summary}");

    // Every good record, before and after the poison, has a decision other than dead-lettered.
    let decisions: BTreeMap<i64, String> = ledger
        .audit_rows(CONSUMER, setup.topic)
        .into_iter()
        .map(|(_, offset, decision)| (offset, decision))
        .collect();
    assert_eq!(
        decisions.len(),
        items.len() + poison.len(),
        "one decision per record"
    );
    for d in good_before.iter().chain(&good_after) {
        let decision = &decisions[&d.offset];
        assert!(
            decision == "applied" || decision == "skipped",
            "good record at offset {} was {decision}",
            d.offset
        );
    }
    let first_after = good_after[0].offset;
    assert!(
        expected.keys().all(|(_, o)| *o < first_after),
        "the poison sits before the second half"
    );
    setup.assert_reconciles(&manifest_path);
    let stats = setup.stack.stats(&setup.database);
    for (reason, _) in &poison {
        assert_eq!(
            stats.count(CONSUMER, "dead_lettered", Some(reason)),
            1,
            "stats counts {reason}"
        );
    }
}

#[test]
fn events_of_a_tenant_missing_from_the_tenants_file_are_dead_lettered_as_unknown_tenant() {
    let stack = Stack::start();
    let topic = "e2e.run-unknown-tenant";
    stack.create_topic(topic, 3);
    let manifest_path = stack.path("manifest.json");
    let tenants_path = stack.path("tenants.toml");
    stack.ledgerflow_ok(&[
        "produce",
        "--topic",
        topic,
        "--tenants",
        "3",
        "--events",
        "300",
        "--seed",
        "5",
        "--manifest",
        &manifest_path,
        "--tenants-file",
        &tenants_path,
    ]);
    // t003 leaves the tenants file (its events stay in the topic).
    let mut file: toml::Table = std::fs::read_to_string(&tenants_path)
        .expect("tenants file")
        .parse()
        .expect("tenants TOML");
    let list = file
        .get_mut("tenants")
        .and_then(|t| t.as_array_mut())
        .expect("[[tenants]]");
    list.retain(|t| t.get("tenant_id").and_then(|v| v.as_str()) != Some("t003"));
    assert_eq!(list.len(), 2);
    std::fs::write(&tenants_path, toml::to_string(&file).expect("TOML")).expect("write");

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).expect("manifest"))
            .expect("manifest JSON");
    let t003: i64 = manifest["tenants"]["t003"]["events"]
        .as_object()
        .expect("t003 events")
        .values()
        .map(|n| n.as_i64().expect("count"))
        .sum();
    assert!(t003 > 0, "t003 has events");

    let setup = Setup::with(stack, topic, tenants_path);
    let summary = setup.run(&[]);
    assert_eq!(summary["dead_lettered"], t003, "{summary}");

    let ledger = setup.ledger();
    let letters = ledger.dead_letters();
    assert_eq!(
        letters.len() as i64,
        t003,
        "every t003 record, whatever its type"
    );
    for d in &letters {
        assert_eq!(d.reason.as_str(), "unknown_tenant", "{d:?}");
        assert_eq!(d.tenant_id.as_deref(), Some("t003"), "{d:?}");
    }
    assert_eq!(
        ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_journal_entries WHERE tenant_id = $1",
            &["t003"],
        ),
        0,
        "nothing posted for the unknown tenant"
    );
    assert_eq!(
        ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM inbox WHERE tenant_id = $1",
            &["t003"],
        ),
        0
    );
    for tenant in ["t001", "t002"] {
        let (code, report) = setup.stack.reconcile(
            &setup.database,
            &["--source", &manifest_path, "--tenant", tenant],
        );
        assert_eq!(
            (code, &report["clean"]),
            (0, &serde_json::json!(true)),
            "{report}"
        );
    }
    // Against the manifest, t003's documents are missing: reconcile says so and exits 1.
    let (code, report) = setup.stack.reconcile(
        &setup.database,
        &["--source", &manifest_path, "--tenant", "t003"],
    );
    assert_eq!(code, 1, "{report}");
    let invoices = &report["tenants"]["t003"]["invoices"];
    assert_eq!(invoices["posted_count"], 0, "{report}");
    assert_eq!(
        invoices["expected_count"], manifest["tenants"]["t003"]["invoices"]["count"],
        "{report}"
    );
    let stats = setup.stack.stats(&setup.database);
    assert_eq!(
        stats.dead_letter_reasons(CONSUMER),
        BTreeMap::from([("unknown_tenant".to_owned(), t003)])
    );
}

#[test]
fn a_record_naming_another_tenant_than_its_payload_is_a_tenant_mismatch() {
    let setup = Setup::new("e2e.run-tenant-mismatch", 1, 2);
    let producer = EventProducer::new(&setup.stack, setup.topic);
    let (items, manifest) = generate(2, 60, 0.0, 21);
    let manifest_path = setup.stack.path("manifest.json");
    write_manifest(&manifest, &manifest_path);
    for g in &items {
        producer.send_generated(g);
    }
    let invoice = items
        .iter()
        .find(|g| {
            g.event.event_type() == EventType::InvoiceFinalized && g.event.tenant_id_raw() == "t001"
        })
        .expect("a t001 invoice");
    let id = invoice.event.event_id_raw();
    let value = producer.encode(&invoice.event, invoice.writer_version);
    let headers = |tenant: &str| {
        vec![
            ("tenant_id".to_owned(), tenant.to_owned()),
            ("event_type".to_owned(), "invoice_finalized".to_owned()),
            ("event_id".to_owned(), id.to_owned()),
        ]
    };
    // The real t001 value under key t002, then under key t001 with a t002 header. Both come
    // after the original was applied: the tenant check runs before the inbox.
    let by_key = producer.send_raw(RawRecord {
        key: Some(b"t002".to_vec()),
        value: Some(value.clone()),
        headers: headers("t001"),
        partition: Some(0),
    });
    let by_header = producer.send_raw(RawRecord {
        key: Some(b"t001".to_vec()),
        value: Some(value),
        headers: headers("t002"),
        partition: Some(0),
    });

    let summary = setup.run(&[]);
    assert_eq!(summary["applied"], handled(&items), "{summary}");
    let ledger = setup.ledger();
    assert_eq!(
        dead_letters(&ledger),
        BTreeMap::from([
            ((0, by_key.offset), "tenant_mismatch".to_owned()),
            ((0, by_header.offset), "tenant_mismatch".to_owned()),
        ])
    );
    for d in ledger.dead_letters() {
        assert_eq!(d.event_id.as_deref(), Some(id), "{d:?}");
        assert!(
            d.error.contains("t002"),
            "the error names the tenants: {d:?}"
        );
    }
    assert_eq!(
        journals_of(&ledger, id, "invoice"),
        1,
        "posted once, for t001"
    );
    assert_eq!(
        ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_journal_entries WHERE event_id = $1 \
             AND tenant_id <> $2",
            &[id, "t001"],
        ),
        0
    );
    setup.assert_reconciles(&manifest_path);
}

#[test]
fn an_event_id_reused_with_a_different_payload_is_an_idempotency_conflict() {
    let setup = Setup::new("e2e.run-idempotency-conflict", 1, 1);
    let producer = EventProducer::new(&setup.stack, setup.topic);
    let (items, manifest) = generate(1, 60, 0.0, 31);
    let manifest_path = setup.stack.path("manifest.json");
    write_manifest(&manifest, &manifest_path);
    for g in &items {
        producer.send_generated(g);
    }
    let payment = items
        .iter()
        .find(|g| g.event.event_type() == EventType::PaymentCaptured)
        .expect("a payment in the stream");
    let Event::PaymentCaptured(original) = &payment.event else {
        unreachable!("filtered on the type")
    };
    // The same bytes again: a duplicate. The same event id with another amount: a conflict.
    let resent = producer.send_generated(payment);
    let mut changed = original.clone();
    changed.amount_minor += 100;
    let conflict = producer.send_event(&Event::PaymentCaptured(changed), payment.writer_version);

    let summary = setup.run(&[]);
    assert_eq!(summary["applied"], handled(&items), "{summary}");
    assert_eq!(summary["duplicates"], 1, "{summary}");
    let ledger = setup.ledger();
    assert_eq!(
        dead_letters(&ledger),
        BTreeMap::from([((0, conflict.offset), "idempotency_conflict".to_owned())])
    );
    let letter = &ledger.dead_letters()[0];
    assert_eq!(letter.event_id.as_deref(), Some(original.event_id.as_str()));
    let decisions: BTreeMap<i64, String> = ledger
        .audit_rows(CONSUMER, setup.topic)
        .into_iter()
        .map(|(_, offset, decision)| (offset, decision))
        .collect();
    assert_eq!(decisions[&resent.offset], "duplicate");
    assert_eq!(decisions[&conflict.offset], "dead_lettered");
    assert_eq!(
        journals_of(&ledger, &original.event_id, "receipt"),
        1,
        "no second receipt"
    );
    assert_eq!(
        ledger.scalar(
            "SELECT amount_minor FROM erp_payments WHERE event_id = $1",
            &[&original.event_id],
        ),
        original.amount_minor,
        "the first payload stands"
    );
    // The manifest's payment totals only add up if the changed amount was never posted.
    setup.assert_reconciles(&manifest_path);
}

#[test]
fn positions_of_record_hold_across_reruns_and_consumer_groups() {
    let setup = Setup::new("e2e.run-rerun", 3, 4);
    let producer = EventProducer::new(&setup.stack, setup.topic);
    let (items, manifest) = generate(4, 400, 0.05, 8);
    let manifest_path = setup.stack.path("manifest.json");
    write_manifest(&manifest, &manifest_path);
    let (head, rest) = items.split_at(250);
    for g in head {
        producer.send_generated(g);
    }
    let first = setup.run(&[]);
    assert_eq!(first["applied"], handled(head), "{first}");
    let ledger = setup.ledger();
    let count = |table: &str| {
        ledger.scalar(
            &format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"),
            &[],
        )
    };
    let (audit, journals, inbox) = (
        count("audit_log"),
        count("erp_journal_entries"),
        count("inbox"),
    );
    assert_eq!(audit, head.len() as i64, "one decision per record");
    let positions = ledger.positions();

    // Nothing new: the same group (Kafka's committed offsets say "done") and a new group
    // (Kafka delivers from the beginning; the positions of record drop every record).
    for (name, extra) in [
        ("same group", &[][..]),
        ("new group", &["--group-prefix", "e2e-second"][..]),
    ] {
        let again = setup.run(extra);
        for field in [
            "applied",
            "duplicates",
            "dead_lettered",
            "skipped",
            "batches",
        ] {
            assert_eq!(again[field], 0, "{name}: {again}");
        }
        assert_eq!(count("audit_log"), audit, "{name}: no new audit rows");
        assert_eq!(
            count("erp_journal_entries"),
            journals,
            "{name}: no new journals"
        );
        assert_eq!(count("inbox"), inbox, "{name}");
        assert_eq!(ledger.positions(), positions, "{name}: positions hold");
    }

    // The rest of the stream, read by yet another group from offset 0: exactly the new records
    // are decided, none of the first ones again.
    for g in rest {
        producer.send_generated(g);
    }
    let third = setup.run(&["--group-prefix", "e2e-third"]);
    assert_eq!(third["applied"], handled(rest), "{third}");
    let decided = third["applied"].as_i64().unwrap_or_default()
        + third["duplicates"].as_i64().unwrap_or_default()
        + third["skipped"].as_i64().unwrap_or_default();
    assert_eq!(decided, rest.len() as i64, "{third}");
    assert_eq!(
        count("audit_log"),
        items.len() as i64,
        "one decision per record"
    );
    assert_eq!(count("inbox"), handled(&items) as i64);
    setup.assert_reconciles(&manifest_path);
}
