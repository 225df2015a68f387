//! The S/4HANA adapter against the simulator (SAP_COM_0002 as documented: basic auth of a
//! communication user, no dedup of journal entries, read-back by OriginalReferenceDocument,
//! synchronous and asynchronous SOAP with confirmations, faults incl. commit-then-drop).
//! Counted on the simulator's side. Runs on SQLite and Postgres.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::sim::*;
use common::*;
use ledgerflow_erp_receivables::ErpAdapter;
use ledgerflow_erp_receivables::adapters::s4hana::S4Hana;
use ledgerflow_store::Backend;
use ledgerflow_tenants::{ErpKind, ErpMode};
use serde_json::{Value, json};

per_backend!(
    synchronous_posts_through_faults_leave_no_duplicate,
    asynchronous_bulk_posts_through_faults_leave_no_duplicate
);

fn faults(seed: u64) -> Value {
    json!({ "rate": 0.1, "kinds": ["5xx", "429", "slow", "drop"], "erp": "s4hana",
            "slow_ms": 1500, "seed": seed })
}

/// The simulator's documents of one system: their source references, checked unique.
async fn references(sim: &Sim, system: &str) -> HashSet<String> {
    let docs = sim.documents("s4hana", Some(system)).await;
    let refs: HashSet<String> = docs
        .iter()
        .filter_map(|d| d["source_ref"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(refs.len(), docs.len(), "a reference posted twice");
    refs
}

/// Tenant "bulk" on system S4BULK and tenant "sync" on S4SYNC, journal mode.
async fn bulk_and_sync(sim: &Sim, secrets: &mut Secrets) -> [ledgerflow_tenants::TenantConfig; 2] {
    let (bulk, bulk_auth) = s4_user(secrets, "bulk");
    let (sync, sync_auth) = s4_user(secrets, "sync");
    provision_s4(sim, "S4BULK", &[bulk]).await;
    provision_s4(sim, "S4SYNC", &[sync]).await;
    [
        s4_tenant(sim, "bulk", "S4BULK", bulk_auth, ErpMode::Journal),
        s4_tenant(sim, "sync", "S4SYNC", sync_auth, ErpMode::Journal),
    ]
}

/// Postings confirmed after a lookup that found their document (a send that landed without
/// its answer).
async fn found_after_doubt(db: &TestDb, tenant: &str) -> usize {
    postings(db, tenant)
        .await
        .into_iter()
        .filter(|(_, _, _, history)| {
            history
                .as_array()
                .is_some_and(|h| h.iter().any(|e| e["action"] == "found"))
        })
        .count()
}

/// Two tenants (journals; AR with the customer on debtor items) share system S4FAULT through
/// the synchronous service while 10% of S/4 requests fail: 5xx, 429, slower than the client's
/// timeout, or committed and then the connection dropped.
async fn synchronous_posts_through_faults_leave_no_duplicate(backend: Backend) {
    let sim = Sim::start().await;
    let mut secrets = Secrets::default();
    let (journals, journals_auth) = s4_user(&mut secrets, "journals");
    let (subledger, subledger_auth) = s4_user(&mut secrets, "subledger");
    provision_s4(&sim, "S4FAULT", &[journals, subledger]).await;
    let tenants = [
        s4_tenant(&sim, "journals", "S4FAULT", journals_auth, ErpMode::Journal),
        s4_tenant(
            &sim,
            "subledger",
            "S4FAULT",
            subledger_auth,
            ErpMode::Subledger,
        ),
    ];
    sim.faults(faults(17)).await;
    let pairs = 25;
    let mut events = invoices_and_payments("journals", 1, pairs);
    events.extend(invoices_and_payments("subledger", 1_000, pairs));
    let db = TestDb::create(backend).await;
    db.write(&events, &tenants).await.unwrap();
    // Journal mode: invoice, receipt, application; subledger: S/4 clears the payment itself.
    let expected = 3 * pairs + 2 * pairs;
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM erp_outbox").await,
        expected as i64
    );

    let took = drain(&db, backend, config(&secrets), Duration::from_secs(240)).await;

    for (t, n) in [("journals", 3 * pairs), ("subledger", 2 * pairs)] {
        assert_eq!(
            statuses(&db, t).await,
            BTreeMap::from([("confirmed".to_owned(), n as i64)]),
            "{t}: {:#?}",
            postings(&db, t).await
        );
    }
    let report = sim.report().await;
    let s4 = &report["erps"]["s4hana"];
    assert_eq!(s4["duplicates"], 0, "{report:#}");
    assert_eq!(s4["documents"], expected, "{report:#}");
    assert!(s4["faults"]["drop"].as_u64().unwrap_or(0) > 0, "{report:#}");
    assert!(s4["faults"]["slow"].as_u64().unwrap_or(0) > 0, "{report:#}");

    // Every posting's entry is in S/4 under its key (the compact key of its external id, within
    // the reference key's 20 characters), exactly once.
    let refs = references(&sim, "S4FAULT").await;
    let keys: HashSet<String> = postings_by_ref(&db, "journals")
        .await
        .into_keys()
        .chain(postings_by_ref(&db, "subledger").await.into_keys())
        .map(|ext| ledgerflow_erp_receivables::erp_key(ErpKind::S4hana, &ext))
        .collect();
    assert!(keys.iter().all(|k| k.len() <= 20), "{keys:?}");
    assert_eq!(refs, keys);
    // Subledger entries carry the customer on one debtor item.
    let docs = sim.documents("s4hana", Some("S4FAULT")).await;
    let debtor_items = docs
        .iter()
        .flat_map(|d| d["body"]["Items"].as_array().cloned().unwrap_or_default())
        .filter(|i| i["ItemType"] == "DebtorItem")
        .count();
    assert_eq!(debtor_items, 2 * pairs as usize);
    let found =
        found_after_doubt(&db, "journals").await + found_after_doubt(&db, "subledger").await;
    assert!(
        found > 0,
        "no lookup after an indefinite outcome found its entry"
    );
    eprintln!(
        "s4hana sync {backend:?}: {expected} postings in {took:?}; faults {}; found after doubt {found}",
        s4["faults"]
    );
    db.drop_db().await;
}

/// One adapter, two systems: S4BULK posts through `JournalEntryBulkCreationRequest_In` (202,
/// then the confirmation is polled), S4SYNC synchronously, while 10% of S/4 requests fail.
/// Every bulk posting is one message: a message whose answer was lost is adopted, not re-sent.
async fn asynchronous_bulk_posts_through_faults_leave_no_duplicate(backend: Backend) {
    let sim = Sim::start().await;
    let mut secrets = Secrets::default();
    let tenants = bulk_and_sync(&sim, &mut secrets).await;
    sim.faults(faults(23)).await;
    let pairs = 20;
    let mut events = invoices_and_payments("bulk", 1, pairs);
    events.extend(invoices_and_payments("sync", 1_000, pairs));
    let db = TestDb::create(backend).await;
    db.write(&events, &tenants).await.unwrap();

    let adapter: Arc<dyn ErpAdapter> = Arc::new(S4Hana::with_async_accounts(["S4BULK"]));
    let took = drain_with(
        &db,
        backend,
        async_config(&secrets),
        vec![adapter],
        Duration::from_secs(240),
    )
    .await;

    for t in ["bulk", "sync"] {
        assert_eq!(
            statuses(&db, t).await,
            BTreeMap::from([("confirmed".to_owned(), 3 * pairs as i64)]),
            "{t}: {:#?}",
            postings(&db, t).await
        );
    }
    let report = sim.report().await;
    let s4 = &report["erps"]["s4hana"];
    assert_eq!(s4["duplicates"], 0, "{report:#}");
    assert_eq!(s4["documents"], 6 * pairs, "{report:#}");
    assert!(s4["faults_total"].as_u64().unwrap_or(0) > 0, "{report:#}");

    // One bulk message per posting of S4BULK, each processed into its entry; none for S4SYNC.
    let jobs = sim.jobs("s4hana", Some("S4BULK")).await;
    let keys: HashSet<&str> = jobs.iter().filter_map(|j| j["key"].as_str()).collect();
    assert_eq!(
        jobs.len(),
        3 * pairs as usize,
        "a message sent twice: {jobs:#?}"
    );
    assert_eq!(keys.len(), jobs.len());
    assert!(jobs.iter().all(|j| j["done"] == true));
    assert!(sim.jobs("s4hana", Some("S4SYNC")).await.is_empty());
    // Bulk postings went through `accepted` and were confirmed by a poll.
    let polled = postings(&db, "bulk")
        .await
        .into_iter()
        .filter(|(_, _, _, history)| {
            history.as_array().is_some_and(|h| {
                h.iter().any(|e| e["outcome"] == "accepted")
                    && h.iter()
                        .any(|e| e["action"] == "poll" && e["outcome"] == "confirmed")
            })
        })
        .count();
    assert!(polled > 0, "no bulk posting was confirmed by polling");
    assert_eq!(
        references(&sim, "S4BULK").await.len() + references(&sim, "S4SYNC").await.len(),
        6 * pairs as usize
    );
    eprintln!(
        "s4hana bulk {backend:?}: {} postings in {took:?}; {} messages; faults {}",
        6 * pairs,
        jobs.len(),
        s4["faults"]
    );
    db.drop_db().await;
}

/// A bulk message committed and then its connection dropped (30% of S/4 requests), while
/// messages are processed 3 s after they arrive: the next attempt finds no entry yet, asks
/// for the message's confirmation by its id, and adopts the message SAP holds instead of
/// sending it again. One message per posting, no duplicate.
#[tokio::test]
async fn a_dropped_bulk_message_is_adopted_not_sent_again() {
    let backend = Backend::Sqlite;
    let sim = Sim::start_with(|c| c.job_delay_ms = 3_000).await;
    let mut secrets = Secrets::default();
    let [bulk, _] = bulk_and_sync(&sim, &mut secrets).await;
    sim.faults(json!({ "rate": 0.3, "kinds": ["drop"], "erp": "s4hana", "seed": 37 }))
        .await;
    let pairs = 10;
    let db = TestDb::create(backend).await;
    db.write(&invoices_and_payments("bulk", 1, pairs), &[bulk])
        .await
        .unwrap();
    let cfg = ledgerflow_erp_receivables::DispatcherConfig {
        // Every third request fails: room for them.
        max_attempts: 40,
        ..async_config(&secrets)
    };
    let adapter: Arc<dyn ErpAdapter> = Arc::new(S4Hana::with_async_accounts(["S4BULK"]));
    drain_with(&db, backend, cfg, vec![adapter], Duration::from_secs(120)).await;

    assert_eq!(
        statuses(&db, "bulk").await,
        BTreeMap::from([("confirmed".to_owned(), 3 * pairs as i64)]),
        "{:#?}",
        postings(&db, "bulk").await
    );
    let report = sim.report().await;
    assert_eq!(report["erps"]["s4hana"]["duplicates"], 0, "{report:#}");
    assert_eq!(report["erps"]["s4hana"]["documents"], 3 * pairs);
    let jobs = sim.jobs("s4hana", Some("S4BULK")).await;
    assert_eq!(jobs.len(), 3 * pairs as usize, "a message sent twice");
    // Some message was committed without an answer.
    let dropped = postings(&db, "bulk")
        .await
        .into_iter()
        .filter(|(_, _, _, history)| {
            history.as_array().is_some_and(|h| {
                h.iter().any(|e| {
                    e["action"] == "send" && e["outcome"] == "retry" && e["indefinite"] == true
                })
            })
        })
        .count();
    assert!(
        dropped > 0,
        "no bulk message was dropped after it was committed"
    );
    eprintln!(
        "s4hana dropped bulk messages: {} postings, {dropped} in doubt; faults {}",
        3 * pairs,
        report["erps"]["s4hana"]["faults"]
    );
    db.drop_db().await;
}

/// An entry S/4 refuses (it does not balance) fails with class rejected and SAP's log text,
/// synchronously and through the bulk service; the entries beside it are posted.
#[tokio::test]
async fn a_refused_entry_fails_with_class_rejected() {
    let backend = Backend::Sqlite;
    let sim = Sim::start().await;
    let mut secrets = Secrets::default();
    let tenants = bulk_and_sync(&sim, &mut secrets).await;
    let mut events = invoices_and_payments("bulk", 1, 3);
    events.extend(invoices_and_payments("sync", 1_000, 3));
    let db = TestDb::create(backend).await;
    db.write(&events, &tenants).await.unwrap();
    let mut refused = Vec::new();
    for t in ["bulk", "sync"] {
        let ext = postings_by_ref(&db, t)
            .await
            .into_keys()
            .find(|e| e.ends_with("-inv"))
            .unwrap();
        tamper(&db, &ext, |d| {
            d["JournalEntry"]["Item"][0]["AmountInTransactionCurrency"]["content"] = json!("1.00");
        })
        .await;
        refused.push(ext);
    }
    let adapter: Arc<dyn ErpAdapter> = Arc::new(S4Hana::with_async_accounts(["S4BULK"]));
    drain_with(
        &db,
        backend,
        async_config(&secrets),
        vec![adapter],
        Duration::from_secs(60),
    )
    .await;

    for t in ["bulk", "sync"] {
        for (ext, (status, class, error, _)) in postings_by_ref(&db, t).await {
            if refused.contains(&ext) {
                assert_eq!(
                    (status.as_str(), class.as_deref()),
                    ("failed", Some("rejected"))
                );
                let error = error.unwrap();
                assert!(error.contains("F5(702)"), "{error}");
            } else {
                assert_eq!(status, "confirmed", "{ext}");
            }
        }
    }
    let report = sim.report().await;
    assert_eq!(report["erps"]["s4hana"]["documents"], 2 * (9 - 1));
    assert_eq!(report["erps"]["s4hana"]["duplicates"], 0);
    db.drop_db().await;
}

/// A wrong communication-user password: failed, class auth, and the password in no stored text.
#[tokio::test]
async fn a_wrong_password_fails_with_class_auth_and_is_not_stored() {
    let backend = Backend::Sqlite;
    let sim = Sim::start().await;
    let mut secrets = Secrets::default();
    let (user, auth) = s4_user(&mut secrets, "wrong");
    provision_s4(&sim, "S4AUTH", &[user]).await;
    let tenant = s4_tenant(&sim, "wrong", "S4AUTH", auth, ErpMode::Journal);
    // The reference now reads a password S/4 does not know.
    secrets.put("S4_wrong", "not-the-password-0123456789");
    let db = TestDb::create(backend).await;
    db.write(&invoices_and_payments("wrong", 1, 2), &[tenant])
        .await
        .unwrap();
    drain(&db, backend, config(&secrets), Duration::from_secs(60)).await;

    let rows = postings(&db, "wrong").await;
    assert_eq!(rows.len(), 6);
    for (status, class, error, _) in rows {
        assert_eq!(
            (status.as_str(), class.as_deref()),
            ("failed", Some("auth"))
        );
        let error = error.unwrap();
        assert!(error.contains("401"), "{error}");
    }
    assert_no_secret_stored(&db, &secrets).await;
    let report = sim.report().await;
    assert!(
        report["erps"]["s4hana"]["rejected_auth"].as_u64().unwrap() >= 6,
        "{report:#}"
    );
    assert_eq!(report["erps"]["s4hana"]["documents"], 0);
    db.drop_db().await;
}
