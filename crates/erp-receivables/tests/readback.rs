//! ERP read-back (`reconcile --erp-readback`) against the simulator: postings delivered to all
//! four ERPs read back clean through the adapters' own lookups, every ERP returning the amount
//! it holds; after a document is deleted in each ERP and a receipt's amount is edited in each
//! ERP (the simulator's admin API, as a user of the ERP would: a NetSuite journal line, a D365
//! journal line, an S/4HANA item, a Fusion journal line), read-back lists exactly those
//! documents as missing or mismatched, the unaltered ones stay clean, and the reconciliation is
//! unclean. Runs on SQLite and Postgres.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::sim::*;
use common::*;
use ledgerflow_core::Event;
use ledgerflow_erp_receivables::readback::{NoProgress, ReadbackDifference};
use ledgerflow_erp_receivables::{
    Dispatcher, ReadbackOptions, ReadbackProgress, ReadbackReport, ReconcileOptions,
    ReconcileSource, erp_key, read_back, reconcile,
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

/// The simulator's name of an ERP kind.
fn sim_erp(kind: ErpKind) -> &'static str {
    match kind {
        ErpKind::Netsuite => "netsuite",
        ErpKind::Dynamics365 => "d365",
        ErpKind::S4hana => "s4hana",
        ErpKind::OracleFusion => "fusion",
    }
}

/// The simulator's top-level documents carrying the key of `external_id` in `kind` (the ERP
/// stores the key, not necessarily the external id: S/4HANA and Fusion hold a compact one).
async fn sim_documents(sim: &Sim, kind: ErpKind, external_id: &str) -> Vec<Value> {
    let erp = sim_erp(kind);
    let key = erp_key(kind, external_id);
    let resp: Value = sim
        .http
        .get(format!(
            "{}/_sim/documents?erp={erp}&source_ref={key}",
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

async fn delete_in_erp(sim: &Sim, erp: ErpKind, source_ref: &str) {
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

/// Applies a JSON merge patch to a stored simulator record (`PATCH /_sim/documents/{id}`).
async fn patch_in_erp(sim: &Sim, id: &str, patch: Value) {
    let resp = sim
        .http
        .patch(format!("{}/_sim/documents/{id}", sim.url))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "patching {id}");
}

/// Edits the first debit of a receipt's document in its ERP to 999.99, the way that ERP
/// stores it: NetSuite's journal line, D365's journal line record, S/4HANA's item, the
/// Fusion journal's interface line (its totals are the sums of its lines).
async fn alter_amount_in_erp(sim: &Sim, erp: ErpKind, external_id: &str) {
    let docs = sim_documents(sim, erp, external_id).await;
    assert_eq!(docs.len(), 1, "{erp} holds {external_id} once: {docs:#?}");
    let doc = &docs[0];
    let id = doc["id"].as_str().unwrap();
    match erp {
        ErpKind::Netsuite => {
            let mut lines = doc["body"]["line"]["items"].clone();
            assert!(lines[0]["debit"].is_string(), "{doc:#}");
            lines[0]["debit"] = json!("999.99");
            patch_in_erp(sim, id, json!({ "line": { "items": lines } })).await;
        }
        ErpKind::Dynamics365 => {
            let all: Value = sim
                .http
                .get(format!(
                    "{}/_sim/documents?erp=d365&include_children=true",
                    sim.url
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let line = all["documents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["parent"] == doc["id"] && d["body"]["LineNumber"] == 1)
                .unwrap_or_else(|| panic!("line 1 of {id}"))
                .clone();
            assert_ne!(line["body"]["DebitAmount"], "0.00", "{line:#}");
            patch_in_erp(
                sim,
                line["id"].as_str().unwrap(),
                json!({ "DebitAmount": "999.99" }),
            )
            .await;
        }
        ErpKind::S4hana => {
            let mut items = doc["body"]["Items"].clone();
            assert_eq!(items[0]["DebitCreditCode"], "S", "{doc:#}");
            items[0]["AmountInTransactionCurrency"] = json!("999.99");
            patch_in_erp(sim, id, json!({ "Items": items })).await;
        }
        ErpKind::OracleFusion => {
            let mut lines = doc["body"]["lines"].clone();
            assert_ne!(lines[0]["ENTERED_DR"], "", "{doc:#}");
            lines[0]["ENTERED_DR"] = json!("999.99");
            patch_in_erp(sim, id, json!({ "lines": lines })).await;
        }
    }
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

    // Delivered: every document is in its ERP; every ERP's read returns the amount it holds,
    // which agrees with the journal.
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
        assert_eq!(k.amount_compared, k.checked, "{erp} returns amounts: {k:?}");
        assert_eq!(k.amount_not_returned, 0, "{erp}");
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

    // Each ERP loses one invoice document, and one receipt of each is edited to another
    // amount in the ERP; the other receipt and invoice of each tenant stay as delivered.
    let mut deleted = Vec::new();
    let mut altered = Vec::new();
    for (i, (tenant, erp)) in [
        ("rb_ns", ErpKind::Netsuite),
        ("rb_d365", ErpKind::Dynamics365),
        ("rb_s4", ErpKind::S4hana),
        ("rb_fa", ErpKind::OracleFusion),
    ]
    .into_iter()
    .enumerate()
    {
        let first = 100 * (i as u64 + 1);
        let (posting_id, external_id, document_id) = posting_of(&db, tenant, first, "inv").await;
        delete_in_erp(&sim, erp, &external_id).await;
        deleted.push((tenant, posting_id, external_id, document_id));
        let (receipt, receipt_ref, receipt_doc) = posting_of(&db, tenant, first + 1, "rct").await;
        alter_amount_in_erp(&sim, erp, &receipt_ref).await;
        altered.push((tenant, receipt, receipt_ref, receipt_doc));
    }

    let found = readback(&dispatcher).await;
    assert!(!found.is_clean());
    assert_eq!(found.checked as i64, confirmed);
    assert_eq!(
        (found.missing, found.mismatched, found.unanswered),
        (4, 4, 0),
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
    for (tenant, receipt, receipt_ref, receipt_doc) in &altered {
        let t = &found.tenants[*tenant];
        assert_eq!(
            listed(&t.mismatched),
            vec![receipt_ref.as_str()],
            "{tenant}"
        );
        let d = &t.mismatched[0];
        assert_eq!(&d.posting_id, receipt);
        assert_eq!(d.erp_document_id.as_ref(), Some(receipt_doc), "{tenant}");
        assert_eq!(d.currency.as_deref(), Some("USD"));
        assert_eq!(d.erp_currency.as_deref(), Some("USD"), "{tenant}: {d:?}");
        // The receipt's first debit (cash) is now 999.99, its fee debit unchanged: the ERP's
        // amount is the document's real sum, not an echo of what was sent.
        let minor = |a: &Option<String>| ledgerflow_core::parse_minor(a.as_deref().unwrap(), 2);
        let (journal, erp) = (minor(&d.amount).unwrap(), minor(&d.erp_amount).unwrap());
        assert!(erp > 99_999 && erp < 99_999 + journal, "{tenant}: {d:?}");
        // The unaltered postings (the other invoice and receipt) still agree.
        let p = &t.periods[0];
        assert_eq!(
            (p.found, p.amount_agrees, p.mismatched, p.missing),
            (p.expected - 1, p.expected - 2, 1, 1),
            "{tenant}: {p:?}"
        );
    }
    for erp in ErpKind::ALL {
        let k = &found.erps[erp.as_str()];
        assert_eq!(k.amount_compared, k.found, "{erp}: {k:?}");
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
    assert_eq!((only.missing, only.mismatched), (1, 1));

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
    assert_eq!(json["erp_readback"]["mismatched"], 4);
    for (tenant, _, receipt_ref, _) in &altered {
        assert_eq!(
            json["erp_readback"]["tenants"][*tenant]["mismatched"][0]["external_id"],
            json!(receipt_ref)
        );
    }
    db.drop_db().await;
}
