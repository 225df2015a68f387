//! A Confluent client library that is not ours (confluent-kafka for Python, with its
//! AvroSerializer and TopicRecordNameStrategy) registers the contract with ledgerflow's registry
//! and produces; `ledgerflow tail` decodes what it wrote.

use std::process::Command;

use ledgerflow_e2e::{Stack, json_lines};

#[test]
fn confluent_python_serializer_output_is_decoded_by_tail() {
    let stack = Stack::start();
    let topic = "e2e.confluent-interop";
    stack.create_topic(topic, 2);
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/v2/payment_captured.avsc"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/confluent_produce.py");
    let sent = stack.path("sent.json");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = Command::new(&python)
        .args([
            script,
            &stack.brokers,
            &stack.registry,
            topic,
            schema,
            "12",
            &sent,
        ])
        .output()
        .expect("run python3 (make setup installs confluent-kafka)");
    assert!(
        out.status.success(),
        "confluent-kafka producer failed (run `make setup`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&sent).unwrap()).unwrap();
    assert_eq!(sent.len(), 12);

    let out = stack.ledgerflow_ok(&[
        "tail",
        "--topic",
        topic,
        "--from-beginning",
        "--exit-at-end",
        "--format",
        "json",
    ]);
    let records = json_lines(&out.stdout);
    assert_eq!(records.len(), 12);
    for r in &records {
        assert!(
            r.get("error").is_none(),
            "confluent-framed record failed to decode: {r}"
        );
        let event = &r["event"];
        let original = sent
            .iter()
            .find(|s| s["event_id"] == event["event_id"])
            .unwrap_or_else(|| panic!("decoded an event that was not sent: {event}"));
        for (field, value) in original.as_object().unwrap() {
            assert_eq!(&event[field], value, "field {field}");
        }
        assert_eq!(r["event_type"], "payment_captured");
    }
}
