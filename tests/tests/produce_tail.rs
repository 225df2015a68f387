//! Produce through the real broker and registry, tail back, compare with the generator.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use ledgerflow_e2e::{Stack, json_lines};
use ledgerflow_loadgen::{Workload, WorkloadConfig};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn tail_all(stack: &Stack, topic: &str) -> Vec<serde_json::Value> {
    let out = stack.ledgerflow_ok(&[
        "tail",
        "--topic",
        topic,
        "--from-beginning",
        "--exit-at-end",
        "--format",
        "json",
    ]);
    json_lines(&out.stdout)
}

#[test]
fn produced_events_tail_back_identical_to_the_generated_stream() {
    let stack = Stack::start();
    let topic = "e2e.produce-tail";
    stack.create_topic(topic, 4);
    let manifest_path = stack.path("manifest.json");
    stack.ledgerflow_ok(&[
        "produce",
        "--topic",
        topic,
        "--tenants",
        "5",
        "--events",
        "400",
        "--duplicates",
        "0.05",
        "--seed",
        "7",
        "--manifest",
        &manifest_path,
    ]);
    let records = tail_all(&stack, topic);
    assert_eq!(records.len(), 400, "every produced record comes back");

    // The same seed regenerates the same stream in-process: the ground truth.
    let cfg = WorkloadConfig {
        tenants: 5,
        events: 400,
        duplicates: 0.05,
        seed: 7,
        ..Default::default()
    };
    let expected: HashMap<String, serde_json::Value> = Workload::new(cfg)
        .expect("workload")
        .map(|g| {
            (
                g.event.event_id_raw().to_owned(),
                serde_json::to_value(&g.event).unwrap(),
            )
        })
        .collect();

    let mut seen = HashSet::new();
    let mut partition_of_tenant: HashMap<String, i64> = HashMap::new();
    let mut invoice_schema_ids = HashSet::new();
    let mut per_type: BTreeMap<String, u64> = BTreeMap::new();
    for r in &records {
        assert!(r.get("error").is_none(), "record failed to decode: {r}");
        let event = &r["event"];
        let id = event["event_id"].as_str().expect("event_id");
        assert_eq!(
            Some(event),
            expected.get(id),
            "decoded event differs from generated"
        );
        let tenant = event["tenant_id"].as_str().unwrap();
        assert_eq!(r["key"], tenant, "records are keyed by tenant");
        assert_eq!(r["headers"]["tenant_id"], tenant);
        assert_eq!(r["headers"]["event_type"], r["event_type"]);
        let partition = r["partition"].as_i64().unwrap();
        assert_eq!(
            *partition_of_tenant
                .entry(tenant.to_owned())
                .or_insert(partition),
            partition
        );
        if r["event_type"] == "invoice_finalized" {
            invoice_schema_ids.insert(r["schema_id"].as_u64().unwrap());
        }
        if seen.insert(id.to_owned()) {
            *per_type
                .entry(r["event_type"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(
        invoice_schema_ids.len(),
        2,
        "v1 and v2 invoice writers are interleaved"
    );

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["events_sent"], 400);
    assert_eq!(
        manifest["distinct_events"].as_u64().unwrap(),
        seen.len() as u64
    );
    assert_eq!(
        manifest["duplicates_sent"].as_u64().unwrap(),
        400 - seen.len() as u64
    );
    assert!(
        manifest["duplicates_sent"].as_u64().unwrap() > 0,
        "some duplicates were sent"
    );
    for (t, n) in &per_type {
        assert_eq!(
            manifest["event_types"][t].as_u64(),
            Some(*n),
            "count of {t}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_reports_poison_records_with_their_reason_codes() {
    let stack = Stack::start();
    let topic = "e2e.poison";
    stack.create_topic(topic, 1);
    stack.ledgerflow_ok(&[
        "produce",
        "--topic",
        topic,
        "--tenants",
        "1",
        "--events",
        "3",
    ]);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .create()
        .expect("producer");
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("truncated_header", vec![0, 0, 1]),
        ("unsupported_magic", b"{\"json\":true}".to_vec()),
        ("unknown_schema_id", vec![0, 0, 0x0f, 0x42, 0x40, 2, 4, 6]),
        ("avro_decode", vec![0, 0, 0, 0, 1, 0xff]),
    ];
    for (_, bytes) in &poison {
        producer
            .send(
                FutureRecord::to(topic).key("t001").payload(bytes),
                Duration::from_secs(10),
            )
            .await
            .expect("produce poison");
    }
    stack.ledgerflow_ok(&[
        "produce",
        "--topic",
        topic,
        "--tenants",
        "1",
        "--events",
        "2",
        "--seed",
        "9",
    ]);

    let records = tokio::task::block_in_place(|| tail_all(&stack, topic));
    assert_eq!(records.len(), 9);
    let reasons: Vec<_> = records
        .iter()
        .filter_map(|r| r.get("error"))
        .map(|e| e["reason"].as_str().unwrap_or("retryable").to_owned())
        .collect();
    let want: Vec<_> = poison.iter().map(|(r, _)| (*r).to_owned()).collect();
    assert_eq!(reasons, want);
    let good = records.iter().filter(|r| r.get("event").is_some()).count();
    assert_eq!(good, 5, "good records around the poison still decode");
}
