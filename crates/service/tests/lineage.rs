//! `ops::lineage` on a store filled through the batch path (see support/lineage_fixture.rs):
//! the report names the right journals, postings, audit coordinates, dead letters, warehouse
//! rows and webhooks, and the trace id of the records' `traceparent` header. SQLite always;
//! Postgres at `LEDGERFLOW_TEST_POSTGRES` (default postgres://postgres@127.0.0.1:5432) when
//! psql reaches it.

#[path = "support/lineage_fixture.rs"]
mod fixture;

use std::sync::Arc;

use fixture::{TENANT, TOPIC, TRACE_ID, eid};
use ledgerflow_core::{EventId, ReasonCode};
use ledgerflow_erp_receivables::{JournalKind, journal_id};
use ledgerflow_service::ConsumerKind;
use ledgerflow_service::ops::lineage;
use ledgerflow_store::{Decision, ErasedConsumer, Store};

fn journal(event: u64, kind: JournalKind) -> String {
    journal_id(&EventId::parse(&eid(event)).expect("event id"), kind).to_string()
}

async fn scenario(url: &str) {
    let store = Store::open(url).await.expect("store");
    let dir = tempfile::tempdir().expect("temp dir");
    let tenant = fixture::tenant(dir.path());
    let consumers: Vec<Arc<dyn ErasedConsumer>> =
        ConsumerKind::ALL.iter().map(|k| k.logic()).collect();
    fixture::push(&store, &consumers, &tenant).await;

    // The invoice: every consumer's audit entry at offset 0 with the trace and correlation ids.
    let report = lineage::event(&store, None, None, &eid(1))
        .await
        .expect("lineage");
    assert_eq!(report.tenant_id.as_deref(), Some(TENANT));
    assert_eq!(report.event_type.as_deref(), Some("invoice_finalized"));
    assert_eq!(report.trace_id.as_deref(), Some(TRACE_ID));
    assert_eq!(report.correlation_id.as_deref(), Some("corr-inv-1"));
    assert_eq!(report.coordinates.len(), 1);
    assert_eq!(
        (
            report.coordinates[0].topic.as_str(),
            report.coordinates[0].partition,
            report.coordinates[0].offset
        ),
        (TOPIC, 0, 0)
    );
    let names: Vec<&str> = report
        .consumers
        .iter()
        .map(|c| c.consumer.as_str())
        .collect();
    assert_eq!(names, ["erp-receivables", "warehouse", "notifications"]);
    for c in &report.consumers {
        assert_eq!(c.audit.len(), 1, "{}: {:?}", c.consumer, c.audit);
        let a = &c.audit[0];
        assert_eq!((a.topic.as_str(), a.partition, a.offset), (TOPIC, 0, 0));
        assert_eq!(a.decision, Decision::Applied);
        assert_eq!(a.trace_id.as_deref(), Some(TRACE_ID));
        assert_eq!(a.seq, 1);
        let inbox = c.inbox.as_ref().expect("inbox row");
        assert_eq!(inbox.offset, 0);
        assert!(c.dead_letters.is_empty());
    }
    let erp = report.consumers[0].erp.as_ref().expect("erp part");
    let invoice_journal = journal(1, JournalKind::Invoice);
    assert_eq!(erp.journals.len(), 1, "{erp:?}");
    let j = &erp.journals[0];
    assert_eq!(j.id, invoice_journal);
    assert_eq!(j.kind, "invoice");
    assert!(j.balanced);
    assert_eq!(j.debit_minor, 10_725);
    assert!(
        j.lines
            .iter()
            .any(|l| l.account == "1100" && l.debit_minor == 10_725)
    );
    assert_eq!(erp.documents.len(), 1);
    assert_eq!(erp.documents[0].doc_id, "inv-1");
    assert_eq!(erp.postings.len(), 1, "{erp:?}");
    let posting = &erp.postings[0];
    assert_eq!(posting.id, invoice_journal);
    assert_eq!(posting.status.as_str(), "pending");
    assert_eq!(posting.erp_kind, "s4hana");
    assert_eq!(posting.attempts, 0);
    assert!(posting.external_id.is_some());
    assert!(posting.config_version.is_some());
    let warehouse = report.consumers[1]
        .warehouse
        .as_ref()
        .expect("warehouse part");
    assert!(
        warehouse.rows.iter().any(|r| r.table == "fact_invoice"
            && r.key.get("invoice_id").map(String::as_str) == Some("inv-1")),
        "{warehouse:?}"
    );
    let hooks = report.consumers[2]
        .notifications
        .as_ref()
        .expect("notifications part");
    assert_eq!(hooks.webhooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks.webhooks[0].endpoint_id, "billing");
    assert!(hooks.webhooks[0].webhook_id.starts_with("msg_"));
    assert_eq!(hooks.webhooks[0].status, "pending");

    // One consumer only.
    let only = lineage::event(&store, Some(ConsumerKind::ErpReceivables), None, &eid(2))
        .await
        .expect("payment lineage");
    assert_eq!(only.consumers.len(), 1);
    assert_eq!(only.coordinates[0].offset, 1);
    let erp = only.consumers[0].erp.as_ref().expect("erp part");
    assert!(erp.journals.iter().all(|j| j.balanced));
    assert!(
        erp.journals
            .iter()
            .any(|j| j.id == journal(2, JournalKind::Receipt)),
        "{erp:?}"
    );
    assert_eq!(erp.payments.len(), 1);

    // The dead-lettered event: its dead letter and the audit entry at its coordinates.
    let ghost = lineage::event(&store, None, None, &eid(4))
        .await
        .expect("dead letter lineage");
    assert_eq!(ghost.tenant_id.as_deref(), Some("ghost"));
    assert_eq!(ghost.trace_id.as_deref(), Some(TRACE_ID));
    let erp_part = &ghost.consumers[0];
    assert_eq!(erp_part.dead_letters.len(), 1);
    assert_eq!(erp_part.dead_letters[0].offset, 3);
    assert_eq!(erp_part.dead_letters[0].reason, ReasonCode::UnknownTenant);
    assert_eq!(erp_part.audit.len(), 1);
    assert_eq!(erp_part.audit[0].decision, Decision::DeadLettered);
    assert!(erp_part.inbox.is_none());

    // The invoice with the events that refer to it.
    let inv = lineage::invoice(&store, None, TENANT, "inv-1")
        .await
        .expect("invoice lineage");
    assert_eq!(inv.invoice.event_id, eid(1));
    let payments: Vec<&str> = inv.payments.iter().map(|p| p.event_id.as_str()).collect();
    assert_eq!(payments, [eid(2)]);
    let memos: Vec<&str> = inv
        .credit_memos
        .iter()
        .map(|p| p.event_id.as_str())
        .collect();
    assert_eq!(memos, [eid(3)]);
    assert!(inv.others.is_empty(), "{:?}", inv.others);
    assert_eq!(inv.applications.len(), 1, "{:?}", inv.applications);
    assert_eq!(inv.applications[0].payment_id, "pay-1");
    assert_eq!(inv.credit_memos[0].coordinates[0].offset, 2);

    // Unknown ids are errors, naming what was asked.
    let err = lineage::event(&store, None, None, &eid(99))
        .await
        .expect_err("unknown event");
    assert!(err.to_string().contains(&eid(99)), "{err}");
    let err = lineage::invoice(&store, None, TENANT, "nope")
        .await
        .expect_err("unknown invoice");
    assert!(err.to_string().contains("no invoice nope"), "{err}");
    store.pool().close().await;
}

#[tokio::test]
async fn lineage_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    scenario(&url).await;
}

/// Runs `sql` with psql against `url`; false when psql or the server is not there.
fn psql(url: &str, sql: &str) -> bool {
    std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qtAc", sql])
        .output()
        .is_ok_and(|out| out.status.success())
}

#[tokio::test]
async fn lineage_on_postgres() {
    let base = std::env::var("LEDGERFLOW_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let admin = format!("{base}/postgres");
    if !psql(&admin, "SELECT 1") {
        eprintln!("skipped: no Postgres (or no psql) at {base}");
        return;
    }
    let name = format!("lineage_test_{}", uuid::Uuid::new_v4().simple());
    assert!(
        psql(&admin, &format!("CREATE DATABASE {name}")),
        "create database"
    );
    scenario(&format!("{base}/{name}")).await;
    assert!(
        psql(&admin, &format!("DROP DATABASE {name} WITH (FORCE)")),
        "drop database"
    );
}
