//! ERP read-back (`reconcile --erp-readback`) against the simulator: postings delivered to all
//! four ERPs read back clean through the adapters' own lookups; after a document is deleted in
//! each ERP and an amount is edited in NetSuite (the simulator's admin API, as a user of the
//! ERP would), read-back lists exactly those documents as missing or mismatched and the
//! reconciliation is unclean. Runs on SQLite and Postgres.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::sim::*;
use common::*;
use ledgerflow_core::Event;
use ledgerflow_erp_receivables::readback::{NoProgress, ReadbackDifference};
use ledgerflow_erp_receivables::{
    Dispatcher, ReadbackOptions, ReadbackProgress, ReadbackReport, ReconcileOptions,
    ReconcileSource, read_back, reconcile,
};
use ledgerflow_store::Backend;
use ledgerflow_tenants::{ErpKind, ErpMode, TenantConfig};
use serde_json::{Value, json};
use sqlx::Row;

per_backend!(documents_deleted_or_edited_in_the_erp_make_reconcile_unclean);

/// Counts what the read-back reports as progress.
#[derive(Debug, Default)]
struct Counted(Mutex<(u64, u64)>);

impl ReadbackProgress for Counted {
    fn start(&self, total: u64) {
        self.0.lock().unwrap().0 = total;
    }
    fn advance(&self, n: u64) {
        self.0.lock().unwrap().1 += n;
    }
}

/// One tenant on each ERP, journal mode.
async fn tenants(sim: &Sim, secrets: &mut Secrets) -> Vec<TenantConfig> {
    let (tba, ns_auth) = netsuite_tba(secrets, "rb_ns");
    sim.provision(json!({ "erp": "netsuite", "account": "NSRB", "credentials": { "tba": [tba] } }))
        .await;
    let netsuite = netsuite_tenant(sim, "rb_ns", "NSRB", ns_auth, ErpMode::Journal, None);
    let d365 = d365_tenant(sim, secrets, "rb_d365", "env-rb", ErpMode::Journal).await;
    let (user, s4_auth) = s4_user(secrets, "rb_s4");
    provision_s4(sim, "S4RB", &[user]).await;
    let s4 = s4_tenant(sim, "rb_s4", "S4RB", s4_auth, ErpMode::Journal);
    let (login, fusion_auth) = fusion_login(sim, secrets, "rb_fa", "fa-rb", FusionAuth::Basic);
    provision_fusion(sim, "fa-rb", &[&login]).await;
    let fusion = fusion_tenant(sim, "rb_fa", "fa-rb", fusion_auth, ErpMode::Journal, 4);
    vec![netsuite, d365, s4, fusion]
}

/// The posting (id, external id, erp document id) of a tenant's journal of `kind` for event
/// `n`.
async fn posting_of(db: &TestDb, tenant: &str, n: u64, kind: &str) -> (String, String, String) {
    let external_id = format!("lf-{tenant}-{}-{kind}", eid(n));
    let row = sqlx::query(
        "SELECT id, erp_document_id FROM erp_outbox WHERE external_id = $1 AND status = 'confirmed'",
    )
    .bind(external_id.clone())
    .fetch_one(&db.pool)
    .await
    .unwrap_or_else(|e| panic!("{external_id} is confirmed: {e}"));
    (row.get(0), external_id, row.get(1))
}

/// The simulator's top-level documents carrying `source_ref`.
async fn sim_documents(sim: &Sim, erp: &str, source_ref: &str) -> Vec<Value> {
    let resp: Value = sim
        .http
        .get(format!(
            "{}/_sim/documents?erp={erp}&source_ref={source_ref}",
            sim.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["documents"].as_array().cloned().unwrap_or_default()
}

async fn delete_in_erp(sim: &Sim, erp: &str, source_ref: &str) {
    let docs = sim_documents(sim, erp, source_ref).await;
    assert_eq!(docs.len(), 1, "{erp} holds {source_ref} once: {docs:#?}");
    let id = docs[0]["id"].as_str().unwrap();
    let resp = sim
        .http
        .delete(format!("{}/_sim/documents/{id}", sim.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "deleting {id}");
    assert!(sim_documents(sim, erp, source_ref).await.is_empty());
}

fn listed(list: &[ReadbackDifference]) -> Vec<&str> {
    let mut ids: Vec<&str> = list.iter().map(|d| d.external_id.as_str()).collect();
    ids.sort_unstable();
    ids
}

async fn readback(dispatcher: &Dispatcher) -> ReadbackReport {
    read_back(dispatcher, &ReadbackOptions::default(), &NoProgress)
        .await
        .expect("read-back")
}

async fn documents_deleted_or_edited_in_the_erp_make_reconcile_unclean(backend: Backend) {
    let sim = Sim::start().await;
    let mut secrets = Secrets::default();
    let tenants = tenants(&sim, &mut secrets).await;
    let mut events: Vec<Event> = Vec::new();
    for (i, t) in tenants.iter().enumerate() {
        events.extend(invoices_and_payments(
            t.tenant_id.as_str(),
            100 * (i as u64 + 1),
            2,
        ));
    }
    let db = TestDb::create(backend).await;
    db.write(&events, &tenants).await.unwrap();
    db.audit_applied(&events).await;
    drain(
        &db,
        backend,
        async_config(&secrets),
        Duration::from_secs(180),
    )
    .await;
    let confirmed = db
        .scalar("SELECT COUNT(*) FROM erp_outbox WHERE status = 'confirmed'")
        .await;
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM erp_outbox").await,
        confirmed,
        "everything delivered"
    );
    let dispatcher = Dispatcher::new(db.pool.clone(), backend, config(&secrets)).unwrap();

    // Delivered: every document is in its ERP; NetSuite's lookup returns amounts, which agree.
    let progress = Counted::default();
    let clean = read_back(
        &dispatcher,
        &ReadbackOptions {
            concurrency: 3,
            ..ReadbackOptions::default()
        },
        &progress,
    )
    .await
    .unwrap();
    assert!(clean.is_clean(), "{clean:#?}");
    assert_eq!(clean.checked as i64, confirmed);
    assert_eq!(clean.found as i64, confirmed);
    assert_eq!(
        *progress.0.lock().unwrap(),
        (confirmed as u64, confirmed as u64)
    );
    assert_eq!(clean.tenants.len(), 4, "{clean:#?}");
    for erp in ErpKind::ALL {
        let k = &clean.erps[erp.as_str()];
        assert!(k.checked > 0 && k.found == k.checked, "{erp}: {k:?}");
        if erp == ErpKind::Netsuite {
            assert_eq!(k.amount_compared, k.checked, "netsuite returns amounts");
        } else {
            assert_eq!(k.amount_compared + k.amount_not_returned, k.found, "{erp}");
        }
    }
    for (tenant, t) in &clean.tenants {
        assert_eq!(t.periods.len(), 1, "{tenant}: one currency, one month");
        let p = &t.periods[0];
        assert_eq!((p.currency.as_str(), p.period.as_str()), ("USD", "2023-11"));
        assert_eq!(p.found, p.expected);
        assert_eq!(t.other_document_count, 0, "{tenant}: {t:#?}");
    }
    let mut report = reconcile(
        &db.pool,
        backend,
        &ReconcileOptions::new(ReconcileSource::AuditLog),
    )
    .await
    .unwrap();
    report.attach_readback(clean);
    assert!(report.clean, "{report:#?}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["erp_readback"]["missing"], 0);

    // Each ERP loses one invoice document; NetSuite's receipt is edited to another amount.
    let mut deleted = Vec::new();
    for (i, (tenant, erp)) in [
        ("rb_ns", "netsuite"),
        ("rb_d365", "d365"),
        ("rb_s4", "s4hana"),
        ("rb_fa", "fusion"),
    ]
    .into_iter()
    .enumerate()
    {
        let (posting_id, external_id, document_id) =
            posting_of(&db, tenant, 100 * (i as u64 + 1), "inv").await;
        delete_in_erp(&sim, erp, &external_id).await;
        deleted.push((tenant, posting_id, external_id, document_id));
    }
    let (receipt, receipt_ref, receipt_doc) = posting_of(&db, "rb_ns", 101, "rct").await;
    let docs = sim_documents(&sim, "netsuite", &receipt_ref).await;
    let mut lines = docs[0]["body"]["line"]["items"].clone();
    let debit = lines[0]["debit"].as_str().unwrap().to_owned();
    lines[0]["debit"] = json!("999.99");
    let resp = sim
        .http
        .patch(format!(
            "{}/_sim/documents/{}",
            sim.url,
            docs[0]["id"].as_str().unwrap()
        ))
        .json(&json!({ "line": { "items": lines } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    let found = readback(&dispatcher).await;
    assert!(!found.is_clean());
    assert_eq!(found.checked as i64, confirmed);
    assert_eq!(
        (found.missing, found.mismatched, found.unanswered),
        (4, 1, 0),
        "{found:#?}"
    );
    assert_eq!(found.found as i64, confirmed - 4);
    for (tenant, posting_id, external_id, document_id) in &deleted {
        let t = &found.tenants[*tenant];
        assert_eq!(t.missing_count, 1, "{tenant}: {t:#?}");
        let d = &t.missing[0];
        assert_eq!(&d.posting_id, posting_id);
        assert_eq!(&d.external_id, external_id);
        assert_eq!(
            d.document_id.as_ref(),
            Some(document_id),
            "the lost document is named"
        );
        assert_eq!(t.periods[0].missing, 1);
    }
    let ns = &found.tenants["rb_ns"];
    assert_eq!(listed(&ns.mismatched), vec![receipt_ref.as_str()]);
    let d = &ns.mismatched[0];
    assert_eq!(d.posting_id, receipt);
    assert_eq!(d.erp_document_id.as_deref(), Some(receipt_doc.as_str()));
    assert_eq!(d.currency.as_deref(), Some("USD"));
    assert_ne!(d.amount, d.erp_amount);
    assert!(d.erp_amount.as_deref().is_some_and(|a| a != debit), "{d:?}");
    for tenant in ["rb_d365", "rb_s4", "rb_fa"] {
        assert_eq!(found.tenants[tenant].mismatched_count, 0);
    }

    // Scoped to one tenant, only its postings are asked about.
    let only = read_back(
        &dispatcher,
        &ReadbackOptions {
            tenant: Some("rb_s4".into()),
            ..ReadbackOptions::default()
        },
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(only.tenants.keys().collect::<Vec<_>>(), vec!["rb_s4"]);
    assert_eq!(only.missing, 1);

    let mut report = reconcile(
        &db.pool,
        backend,
        &ReconcileOptions::new(ReconcileSource::AuditLog),
    )
    .await
    .unwrap();
    assert!(
        report.clean,
        "the ledger itself is still clean: {report:#?}"
    );
    report.attach_readback(found);
    assert!(!report.clean);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["clean"], false);
    assert_eq!(json["erp_readback"]["missing"], 4);
    assert_eq!(
        json["erp_readback"]["tenants"]["rb_ns"]["mismatched"][0]["external_id"],
        json!(receipt_ref)
    );
    db.drop_db().await;
}
