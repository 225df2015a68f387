//! `ledgerflow lineage` through the binary on a SQLite store (no broker needed), filled through
//! the batch path by erp-receivables and the warehouse (see
//! crates/service/tests/support/lineage_fixture.rs): the JSON shape, the text rendering, the
//! invoice form, and the exit codes of an unknown id (1) and of bad usage (2). What the report
//! holds is checked on both backends in crates/service/tests/lineage.rs.

#[path = "../../crates/service/tests/support/lineage_fixture.rs"]
mod fixture;

use std::process::Output;
use std::sync::Arc;

use fixture::{TENANT, TOPIC, TRACE_ID, eid};
use ledgerflow_e2e::ledgerflow_bin;
use ledgerflow_store::{ErasedConsumer, Store};

fn ledgerflow(args: &[&str]) -> Output {
    ledgerflow_e2e::bare_command(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", ledgerflow_bin().display()))
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn json(out: &Output, what: &str) -> serde_json::Value {
    ledgerflow_e2e::output_json(out, what)
}

#[test]
fn lineage_command_json_text_and_exit_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = Store::open(&db).await.expect("store");
        let tenant = fixture::tenant(dir.path());
        let consumers: Vec<Arc<dyn ErasedConsumer>> = vec![
            Arc::new(ledgerflow_erp_receivables::ErpReceivables),
            Arc::new(ledgerflow_warehouse_sink::Warehouse),
        ];
        fixture::push(&store, &consumers, &tenant).await;
        store.pool().close().await;
    });

    let invoice_event = eid(1);
    let out = ledgerflow(&[
        "lineage",
        &invoice_event,
        "--database",
        &db,
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let report = json(&out, "lineage");
    assert_eq!(report["event_id"], invoice_event.as_str());
    assert_eq!(report["tenant_id"], TENANT);
    assert_eq!(report["event_type"], "invoice_finalized");
    assert_eq!(report["trace_id"], TRACE_ID);
    assert_eq!(report["correlation_id"], "corr-inv-1");
    assert_eq!(report["coordinates"][0]["topic"], TOPIC);
    assert_eq!(report["coordinates"][0]["offset"], 0);
    let erp = &report["consumers"][0];
    assert_eq!(erp["consumer"], "erp-receivables");
    let audit = &erp["audit"][0];
    for field in [
        "topic",
        "partition",
        "offset",
        "decision",
        "reason",
        "recorded_at",
        "correlation_id",
        "trace_id",
        "hash",
    ] {
        assert!(
            audit.get(field).is_some(),
            "audit entry has no {field}: {audit}"
        );
    }
    assert_eq!(audit["decision"], "applied");
    assert_eq!(audit["trace_id"], TRACE_ID);
    assert_eq!(erp["inbox"]["offset"], 0);
    assert_eq!(erp["dead_letters"], serde_json::json!([]));
    let journal = &erp["erp"]["journals"][0];
    assert_eq!(journal["kind"], "invoice");
    assert_eq!(journal["balanced"], true);
    assert!(journal["lines"].as_array().is_some_and(|l| !l.is_empty()));
    let posting = &erp["erp"]["postings"][0];
    assert_eq!(posting["id"], journal["id"]);
    for field in [
        "status",
        "external_id",
        "attempts",
        "erp_document_id",
        "config_version",
    ] {
        assert!(
            posting.get(field).is_some(),
            "posting has no {field}: {posting}"
        );
    }
    assert_eq!(erp["erp"]["documents"][0]["doc_id"], "inv-1");
    let warehouse = &report["consumers"][1];
    assert_eq!(warehouse["consumer"], "warehouse");
    assert!(
        warehouse["warehouse"]["rows"]
            .as_array()
            .is_some_and(|rows| rows
                .iter()
                .any(|r| r["table"] == "fact_invoice" && r["key"]["invoice_id"] == "inv-1")),
        "{warehouse}"
    );
    // notifications never ran on this store: nothing, and no error.
    assert_eq!(report["consumers"][2]["consumer"], "notifications");
    assert_eq!(
        report["consumers"][2]["notifications"]["webhooks"],
        serde_json::json!([])
    );

    // Text: ids at the top, the journal and its posting.
    let out = ledgerflow(&[
        "lineage",
        &invoice_event,
        "--database",
        &db,
        "--format",
        "table",
    ]);
    assert_eq!(code(&out), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("trace id        {TRACE_ID}")),
        "{text}"
    );
    assert!(text.contains("correlation id  corr-inv-1"), "{text}");
    assert!(
        text.contains(journal["id"].as_str().unwrap_or("?")),
        "{text}"
    );
    assert!(text.contains("posting"), "{text}");

    // One consumer.
    let out = ledgerflow(&[
        "lineage",
        &eid(2),
        "--consumer",
        "warehouse",
        "--database",
        &db,
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let only = json(&out, "lineage --consumer");
    assert_eq!(only["consumers"].as_array().map(Vec::len), Some(1));
    assert_eq!(only["consumers"][0]["consumer"], "warehouse");

    // The invoice form.
    let out = ledgerflow(&[
        "lineage",
        "--invoice",
        "inv-1",
        "--tenant",
        TENANT,
        "--database",
        &db,
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let inv = json(&out, "lineage --invoice");
    assert_eq!(inv["invoice"]["event_id"], invoice_event.as_str());
    assert_eq!(inv["payments"][0]["event_id"], eid(2).as_str());
    assert_eq!(inv["credit_memos"][0]["event_id"], eid(3).as_str());
    assert_eq!(inv["applications"][0]["payment_id"], "pay-1");
    assert_eq!(inv["others"], serde_json::json!([]));

    // The dead-lettered event of an unknown tenant.
    let out = ledgerflow(&["lineage", &eid(4), "--database", &db, "--format", "json"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let ghost = json(&out, "lineage of a dead letter");
    assert_eq!(
        ghost["consumers"][0]["dead_letters"][0]["reason"],
        "unknown_tenant"
    );
    assert_eq!(
        ghost["consumers"][0]["audit"][0]["decision"],
        "dead_lettered"
    );

    // Unknown ids: exit 1 with a message naming them.
    let out = ledgerflow(&["lineage", &eid(99), "--database", &db]);
    assert_eq!(code(&out), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("no event {}", eid(99))),
        "{stderr}"
    );
    let out = ledgerflow(&[
        "lineage",
        "--invoice",
        "nope",
        "--tenant",
        TENANT,
        "--database",
        &db,
    ]);
    assert_eq!(code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no invoice nope"));

    // Usage errors: exit 2.
    for args in [
        vec!["lineage", "--database", &db],
        vec!["lineage", "--invoice", "inv-1", "--database", &db],
        vec![
            "lineage",
            &invoice_event,
            "--invoice",
            "inv-1",
            "--tenant",
            TENANT,
        ],
        vec![
            "lineage",
            &invoice_event,
            "--consumer",
            "ledger",
            "--database",
            &db,
        ],
        vec![
            "lineage",
            &invoice_event,
            "--format",
            "xml",
            "--database",
            &db,
        ],
    ] {
        let out = ledgerflow(&args);
        assert_eq!(
            code(&out),
            2,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
