//! The Dynamics 365 adapter against the simulator (OData v4 and Entra ID as documented: no
//! dedup, atomic `$batch` change sets, lookup by `Description` across companies, 429 with
//! Retry-After, faults incl. commit-then-drop). Counted on the simulator's side. Runs on
//! SQLite and Postgres.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::sim::*;
use common::*;
use ledgerflow_store::Backend;
use ledgerflow_tenants::ErpMode;
use serde_json::json;

per_backend!(faults_and_commit_then_drop_leave_no_duplicate);

/// Two tenants on two environments (general journals; AR on the customer account and customer
/// payment journals) while 35% of D365 requests fail: 5xx, 429 + Retry-After, slower than the
/// client's timeout, or committed and then the connection dropped.
async fn faults_and_commit_then_drop_leave_no_duplicate(backend: Backend) {
    let sim = Sim::start().await;
    let mut secrets = Secrets::default();
    let tenants = [
        d365_tenant(&sim, &mut secrets, "journals", "env-j", ErpMode::Journal).await,
        d365_tenant(&sim, &mut secrets, "subledger", "env-s", ErpMode::Subledger).await,
    ];
    sim.faults(
        json!({ "rate": 0.35, "kinds": ["5xx", "429", "slow", "drop"], "erp": "d365",
        "slow_ms": 1500, "seed": 5 }),
    )
    .await;
    let pairs = 20;
    let mut events = invoices_and_payments("journals", 1, pairs);
    events.extend(invoices_and_payments("subledger", 1_000, pairs));
    let db = TestDb::create(backend).await;
    db.write(&events, &tenants).await.unwrap();
    // Journal mode: invoice, receipt, application; subledger: the application is D365's own
    // settlement, so no posting.
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM erp_outbox").await,
        5 * pairs as i64
    );
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM erp_journal_entries WHERE tenant_id = 'subledger'
             AND kind = 'application' AND erp_kind IS NULL"
        )
        .await,
        pairs as i64
    );

    let took = drain(&db, backend, config(&secrets), Duration::from_secs(180)).await;

    assert_eq!(
        statuses(&db, "journals").await,
        BTreeMap::from([("confirmed".to_owned(), 3 * pairs as i64)]),
        "{:#?}",
        postings(&db, "journals").await
    );
    assert_eq!(
        statuses(&db, "subledger").await,
        BTreeMap::from([("confirmed".to_owned(), 2 * pairs as i64)]),
        "{:#?}",
        postings(&db, "subledger").await
    );
    let report = sim.report().await;
    let d365 = &report["erps"]["d365"];
    assert_eq!(d365["duplicates"], 0, "{report:#}");
    assert_eq!(
        d365["documents"],
        5 * pairs,
        "one header per posting: {report:#}"
    );
    assert!(
        d365["faults"]["drop"].as_u64().unwrap_or(0) > 0,
        "{report:#}"
    );

    // Every header has all its lines (change sets are atomic) and carries its external id.
    let headers = sim.documents("d365", None).await;
    let refs: HashSet<&str> = headers
        .iter()
        .filter_map(|h| h["source_ref"].as_str())
        .collect();
    assert_eq!(refs.len(), headers.len());
    let lines = sim
        .http
        .get(format!(
            "{}/_sim/documents?erp=d365&include_children=true",
            sim.url
        ))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let children = lines["documents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| !d["parent"].is_null())
        .count();
    // Journal mode: invoice 4 lines (AR, two revenue accounts, tax), receipt 3, application 2;
    // subledger: invoice 4, payment journal 3.
    assert_eq!(children, pairs as usize * (4 + 3 + 2 + 4 + 3));
    let customer_lines = lines["documents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["body"]["AccountType"] == "Cust")
        .count();
    assert_eq!(customer_lines, 2 * pairs as usize);
    eprintln!(
        "d365 {backend:?}: {} postings in {took:?}; faults {}",
        5 * pairs,
        d365["faults"]
    );
    db.drop_db().await;
}

/// A wrong client secret: Entra refuses the token, the posting fails with class auth, and the
/// secret is in no stored text.
#[tokio::test]
async fn a_wrong_client_secret_fails_with_class_auth() {
    let backend = Backend::Sqlite;
    let sim = Sim::start().await;
    let mut secrets = Secrets::default();
    let tenant = d365_tenant(&sim, &mut secrets, "wrong", "env-w", ErpMode::Journal).await;
    let real = secrets.put("D365_wrong", "not-the-secret-0123456789");
    let mut tenant = tenant;
    if let Some(erp) = &mut tenant.erp
        && let ledgerflow_tenants::ErpAuth::Oauth2ClientCredentials { client_secret, .. } =
            &mut erp.auth
    {
        *client_secret = real;
    }
    let db = TestDb::create(backend).await;
    db.write(&invoices_and_payments("wrong", 1, 1), &[tenant])
        .await
        .unwrap();
    drain(&db, backend, config(&secrets), Duration::from_secs(60)).await;
    for (status, class, error, _) in postings(&db, "wrong").await {
        assert_eq!(
            (status.as_str(), class.as_deref()),
            ("failed", Some("auth"))
        );
        let error = error.unwrap();
        assert!(error.contains("AADSTS7000215"), "{error}");
        assert!(!error.contains("not-the-secret-0123456789"), "{error}");
    }
    assert_eq!(sim.report().await["erps"]["d365"]["documents"], 0);
    db.drop_db().await;
}
