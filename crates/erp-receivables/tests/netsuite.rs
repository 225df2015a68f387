//! The NetSuite adapter against the simulator (SuiteTalk REST as documented: M2M and TBA auth,
//! no dedup of plain POSTs, upsert by external id, account-wide concurrency governance, faults
//! incl. commit-then-drop). Counted on the simulator's side. Runs on SQLite and Postgres.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::sim::*;
use common::*;
use ledgerflow_store::Backend;
use ledgerflow_tenants::ErpMode;
use serde_json::{Value, json};

per_backend!(faults_and_commit_then_drop_leave_no_duplicate);

/// Two tenants share account NSFAULT (one signs in by M2M, one by TBA; one posts journals, one
/// AR documents) while 35% of NetSuite requests fail: 5xx, 429, slower than the client's
/// timeout, or committed and then the connection dropped.
async fn faults_and_commit_then_drop_leave_no_duplicate(backend: Backend) {
    let sim = Sim::start().await;
    let mut secrets = Secrets::default();
    let (m2m, m2m_auth) = netsuite_m2m(&mut secrets, "a");
    let (tba, tba_auth) = netsuite_tba(&mut secrets, "b");
    sim.provision(json!({ "erp": "netsuite", "account": "NSFAULT",
        "credentials": { "m2m": [m2m], "tba": [tba] } }))
        .await;
    sim.faults(
        json!({ "rate": 0.35, "kinds": ["5xx", "429", "slow", "drop"], "erp": "netsuite",
        "slow_ms": 1500, "seed": 11 }),
    )
    .await;
    let tenants = [
        netsuite_tenant(
            &sim,
            "journals",
            "NSFAULT",
            m2m_auth,
            ErpMode::Journal,
            None,
        ),
        netsuite_tenant(
            &sim,
            "subledger",
            "NSFAULT",
            tba_auth,
            ErpMode::Subledger,
            None,
        ),
    ];
    let pairs = 20;
    let mut events = invoices_and_payments("journals", 1, pairs);
    events.extend(invoices_and_payments("subledger", 1_000, pairs));
    let db = TestDb::create(backend).await;
    db.write(&events, &tenants).await.unwrap();
    // Invoice, receipt and application per pair and tenant.
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM erp_outbox").await,
        6 * pairs as i64
    );

    let took = drain(&db, backend, config(&secrets), Duration::from_secs(180)).await;

    for t in ["journals", "subledger"] {
        assert_eq!(
            statuses(&db, t).await,
            BTreeMap::from([("confirmed".to_owned(), 3 * pairs as i64)]),
            "{t}: {:#?}",
            postings(&db, t).await
        );
    }
    let report = sim.report().await;
    let ns = &report["erps"]["netsuite"];
    assert_eq!(ns["duplicates"], 0, "{report:#}");
    // Journals: one journalEntry per journal. AR: an invoice and a customer payment per pair;
    // the application updates the payment.
    assert_eq!(ns["documents"], 3 * pairs + 2 * pairs, "{report:#}");
    assert!(ns["faults"]["drop"].as_u64().unwrap_or(0) > 0, "{report:#}");
    assert!(ns["faults"]["slow"].as_u64().unwrap_or(0) > 0, "{report:#}");

    // Every posting's document is in NetSuite under its external id, exactly once.
    let docs = sim.documents("netsuite", Some("NSFAULT")).await;
    let keys: Vec<String> = docs
        .iter()
        .filter_map(|d| d["erp_key"].as_str().map(str::to_owned))
        .collect();
    let unique: HashSet<&String> = keys.iter().collect();
    assert_eq!(keys.len(), unique.len());
    assert_eq!(keys.len(), 5 * pairs as usize);
    // Every payment is applied to its invoice, for its whole amount.
    let invoices: BTreeMap<String, String> = docs
        .iter()
        .filter(|d| d["kind"] == "invoice")
        .map(|d| {
            (
                d["erp_id"].as_str().unwrap().to_owned(),
                d["erp_key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let payments: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "customerPayment")
        .collect();
    assert_eq!(payments.len(), pairs as usize);
    for p in payments {
        let apply = &p["body"]["apply"]["items"][0];
        assert_eq!(apply["apply"], true, "{p:#}");
        let invoice = apply["doc"]["id"].as_str().unwrap();
        assert!(invoices.contains_key(invoice), "{p:#}");
        assert_eq!(apply["amount"], p["body"]["payment"], "{p:#}");
    }
    // At least one attempt after a dropped connection found its document instead of re-sending.
    let found = postings(&db, "journals")
        .await
        .into_iter()
        .chain(postings(&db, "subledger").await)
        .filter(|(_, _, _, history)| {
            history
                .as_array()
                .is_some_and(|h| h.iter().any(|e| e["action"] == "found"))
        })
        .count();
    assert!(
        found > 0,
        "no lookup after an indefinite outcome was exercised"
    );
    eprintln!(
        "netsuite {backend:?}: {} postings in {took:?}; faults {}, found after indefinite: {found}",
        6 * pairs,
        ns["faults"]
    );
    db.drop_db().await;
}

/// A wrong TBA token secret and an M2M key NetSuite does not know: failed, class auth, and the
/// secret in no stored text.
#[tokio::test]
async fn a_wrong_secret_fails_with_class_auth_and_is_not_stored() {
    let backend = Backend::Sqlite;
    let sim = Sim::start().await;
    let mut secrets = Secrets::default();
    let (tba, _) = netsuite_tba(&mut secrets, "good");
    let (m2m, _) = netsuite_m2m(&mut secrets, "good");
    sim.provision(json!({ "erp": "netsuite", "account": "NSAUTH",
        "credentials": { "m2m": [m2m], "tba": [tba] } }))
        .await;
    // Valid-looking credentials the account does not have.
    let (_, wrong_tba) = netsuite_tba(&mut secrets, "wrong");
    let (_, wrong_m2m) = netsuite_m2m(&mut secrets, "wrong");
    let tenants = [
        netsuite_tenant(&sim, "tba", "NSAUTH", wrong_tba, ErpMode::Journal, None),
        netsuite_tenant(&sim, "m2m", "NSAUTH", wrong_m2m, ErpMode::Journal, None),
    ];
    let mut events = invoices_and_payments("tba", 1, 2);
    events.extend(invoices_and_payments("m2m", 100, 2));
    let db = TestDb::create(backend).await;
    db.write(&events, &tenants).await.unwrap();
    drain(&db, backend, config(&secrets), Duration::from_secs(60)).await;

    for t in ["tba", "m2m"] {
        for (status, class, error, _) in postings(&db, t).await {
            assert_eq!(
                (status.as_str(), class.as_deref()),
                ("failed", Some("auth")),
                "{t}"
            );
            let error = error.unwrap();
            for secret in secrets.0.values() {
                assert!(!error.contains(secret.trim()), "{t}: secret in {error}");
            }
            match t {
                "tba" => assert!(error.contains("INVALID_LOGIN"), "{error}"),
                _ => assert!(error.contains("invalid_client"), "{error}"),
            }
        }
    }
    let leaked = sqlx::query(
        "SELECT last_error, last_request, last_response, route, credential FROM erp_outbox",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for row in leaked {
        use sqlx::Row;
        for i in 0..5 {
            let text: Option<String> = row.get(i);
            let text = text.unwrap_or_default();
            for secret in secrets.0.values() {
                assert!(
                    !text.contains(secret.trim()),
                    "secret stored in column {i}: {text}"
                );
            }
        }
    }
    let report = sim.report().await;
    assert!(
        report["erps"]["netsuite"]["rejected_auth"]
            .as_u64()
            .unwrap()
            >= 2,
        "{report:#}"
    );
    assert_eq!(report["erps"]["netsuite"]["documents"], 0);
    db.drop_db().await;
}
