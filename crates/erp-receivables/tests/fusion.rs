//! The Oracle Fusion adapter against the simulator (erpintegrations as documented: FBDI zips
//! through `importBulkData`, ESS jobs that end SUCCEEDED / WARNING / ERROR, journal import
//! without dedup, AutoInvoice refusing a duplicate transaction flexfield, read-back of journals
//! and transactions, basic and OAuth auth, faults incl. commit-then-drop). Counted on the
//! simulator's side. Runs on SQLite and Postgres.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::sim::*;
use common::*;
use ledgerflow_erp_receivables::adapters::fusion::Fusion;
use ledgerflow_erp_receivables::{DispatcherConfig, ErpAdapter};
use ledgerflow_store::Backend;
use ledgerflow_tenants::{ErpKind, ErpMode};
use serde_json::{Value, json};

per_backend!(faults_and_commit_then_drop_import_nothing_twice);

/// The adapter the tests run: zips of up to 20 postings gathered for 300 ms, and a journal
/// whose upload went unanswered is not uploaded again for 4 s (the simulator runs a job 1 s
/// after its submission).
fn adapter() -> Vec<Arc<dyn ErpAdapter>> {
    vec![Arc::new(
        Fusion::new()
            .with_batching(Duration::from_millis(300), 20)
            .with_settle(Duration::from_secs(4)),
    )]
}

/// (journals, transactions) the simulator holds for a pod, each source reference once.
async fn documents(sim: &Sim, pod: &str) -> (Vec<Value>, Vec<Value>) {
    let docs = sim.documents("fusion", Some(pod)).await;
    let refs: HashSet<&str> = docs
        .iter()
        .filter_map(|d| d["source_ref"].as_str())
        .collect();
    assert_eq!(refs.len(), docs.len(), "a document imported twice");
    docs.into_iter().partition(|d| d["kind"] == "gl_journal")
}

/// Two tenants share pod fa-fault (journal import with basic auth; AutoInvoice with OAuth,
/// receipts and applications as journals) while 10% of Fusion requests fail: 5xx, 429, slower
/// than the client's timeout, or committed and then the connection dropped.
async fn faults_and_commit_then_drop_import_nothing_twice(backend: Backend) {
    let sim = Sim::start().await;
    let mut secrets = Secrets::default();
    let (journals, journals_auth) = fusion_login(
        &sim,
        &mut secrets,
        "journals",
        "fa-fault",
        FusionAuth::Basic,
    );
    let (subledger, subledger_auth) = fusion_login(
        &sim,
        &mut secrets,
        "subledger",
        "fa-fault",
        FusionAuth::Oauth,
    );
    provision_fusion(&sim, "fa-fault", &[&journals, &subledger]).await;
    let tenants = [
        fusion_tenant(
            &sim,
            "journals",
            "fa-fault",
            journals_auth,
            ErpMode::Journal,
            16,
        ),
        fusion_tenant(
            &sim,
            "subledger",
            "fa-fault",
            subledger_auth,
            ErpMode::Subledger,
            16,
        ),
    ];
    sim.faults(
        json!({ "rate": 0.1, "kinds": ["5xx", "429", "slow", "drop"], "erp": "fusion",
        "slow_ms": 1500, "seed": 29 }),
    )
    .await;
    let pairs = 20;
    let memos = 5;
    let mut events = invoices_and_payments("journals", 1, pairs);
    events.extend(invoices_and_payments("subledger", 1_000, pairs));
    for i in 0..memos {
        // Credit memos on the first invoices (numbered 1000, 1002, ...).
        events.push(credit_memo(
            "subledger",
            2_000 + i,
            &format!("cm-{i}"),
            &format!("inv-{}", 1_000 + 2 * i),
            300,
            21,
        ));
    }
    let db = TestDb::create(backend).await;
    db.write(&events, &tenants).await.unwrap();
    let journals = 3 * pairs + 2 * pairs;
    let transactions = pairs + memos;
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM erp_outbox").await,
        (journals + transactions) as i64
    );

    let took = drain_with(
        &db,
        backend,
        async_config(&secrets),
        adapter(),
        Duration::from_secs(300),
    )
    .await;

    for (t, n) in [
        ("journals", 3 * pairs),
        ("subledger", 2 * pairs + pairs + memos),
    ] {
        assert_eq!(
            statuses(&db, t).await,
            BTreeMap::from([("confirmed".to_owned(), n as i64)]),
            "{t}: {:#?}",
            postings(&db, t).await
        );
    }
    let report = sim.report().await;
    let fusion = &report["erps"]["fusion"];
    assert_eq!(fusion["duplicates"], 0, "{report:#}");
    assert_eq!(fusion["documents"], journals + transactions, "{report:#}");
    assert!(
        fusion["faults"]["drop"].as_u64().unwrap_or(0) > 0,
        "{report:#}"
    );
    let (gl, ar) = documents(&sim, "fa-fault").await;
    assert_eq!(gl.len() as u64, journals);
    assert_eq!(ar.len() as u64, transactions);
    // Every posting is confirmed with the id of the document that carries its external id.
    let by_ref: BTreeMap<String, String> = gl
        .iter()
        .chain(&ar)
        .map(|d| {
            (
                d["source_ref"].as_str().unwrap().to_owned(),
                d["erp_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for t in ["journals", "subledger"] {
        let rows =
            sqlx::query("SELECT external_id, erp_document_id FROM erp_outbox WHERE tenant_id = $1")
                .bind(t)
                .fetch_all(&db.pool)
                .await
                .unwrap();
        for r in rows {
            use sqlx::Row;
            let ext: String = r.get(0);
            let id: Option<String> = r.get(1);
            // The pod holds the posting's key (its compact key), not the external id.
            let key = ledgerflow_erp_receivables::erp_key(ErpKind::OracleFusion, &ext);
            assert!(key.len() <= 30, "{key}");
            assert_eq!(by_ref.get(&key), id.as_ref(), "{ext}");
        }
    }
    // Credit memos are negative transactions.
    let memo_totals: Vec<&str> = ar
        .iter()
        .filter(|d| d["body"]["TransactionType"] == "Credit Memo")
        .filter_map(|d| d["body"]["EnteredAmount"].as_str())
        .collect();
    assert_eq!(memo_totals, vec!["-3.21"; memos as usize]);
    // Postings shared zips: fewer ESS jobs than postings.
    let jobs = sim.jobs("fusion", Some("fa-fault")).await;
    assert!(
        jobs.len() < (journals + transactions) as usize / 2,
        "{} jobs for {} postings",
        jobs.len(),
        journals + transactions
    );
    eprintln!(
        "fusion {backend:?}: {} postings in {took:?}; {} ess jobs; faults {}",
        journals + transactions,
        jobs.len(),
        fusion["faults"]
    );
    db.drop_db().await;
}

/// Journal import does not deduplicate, and an upload whose answer was lost may have
/// submitted a job that is still queued: 30% of Fusion requests are committed and then their
/// connection dropped, and jobs run 3 s after submission. The next attempt finds nothing yet,
/// waits (the upload is in doubt) instead of uploading again, and confirms the journal once
/// its job has imported it.
#[tokio::test]
async fn a_dropped_upload_is_waited_for_not_imported_twice() {
    let backend = Backend::Sqlite;
    let sim = Sim::start_with(|c| c.job_delay_ms = 3_000).await;
    let mut secrets = Secrets::default();
    let (login, auth) = fusion_login(&sim, &mut secrets, "gl", "fa-drop", FusionAuth::Basic);
    provision_fusion(&sim, "fa-drop", &[&login]).await;
    let tenant = fusion_tenant(&sim, "gl", "fa-drop", auth, ErpMode::Journal, 4);
    sim.faults(json!({ "rate": 0.3, "kinds": ["drop"], "erp": "fusion", "seed": 31 }))
        .await;
    let pairs = 8;
    let db = TestDb::create(backend).await;
    db.write(&invoices_and_payments("gl", 1, pairs), &[tenant])
        .await
        .unwrap();
    let cfg = DispatcherConfig {
        // Every third request fails: room for them.
        max_attempts: 40,
        ..async_config(&secrets)
    };
    // One zip per posting: many uploads for the drops to hit.
    let fusion: Arc<dyn ErpAdapter> = Arc::new(
        Fusion::new()
            .with_batching(Duration::ZERO, 1)
            .with_settle(Duration::from_secs(10)),
    );
    drain_with(&db, backend, cfg, vec![fusion], Duration::from_secs(180)).await;

    assert_eq!(
        statuses(&db, "gl").await,
        BTreeMap::from([("confirmed".to_owned(), 3 * pairs as i64)]),
        "{:#?}",
        postings(&db, "gl").await
    );
    let report = sim.report().await;
    assert_eq!(report["erps"]["fusion"]["duplicates"], 0, "{report:#}");
    assert_eq!(
        report["erps"]["fusion"]["documents"],
        3 * pairs,
        "{report:#}"
    );
    let (gl, _) = documents(&sim, "fa-drop").await;
    assert_eq!(gl.len() as u64, 3 * pairs);
    // Some upload was dropped after it was committed: its postings looked first, waited while
    // the job was queued, then found their journals.
    let histories: Vec<Value> = postings(&db, "gl")
        .await
        .into_iter()
        .map(|(_, _, _, history)| history)
        .collect();
    let entries = |action: &str, outcome: &str| {
        histories
            .iter()
            .filter(|h| {
                h.as_array().is_some_and(|h| {
                    h.iter()
                        .any(|e| e["action"] == action && e["outcome"] == outcome)
                })
            })
            .count()
    };
    let waited = entries("find", "retry");
    let found = entries("found", "confirmed");
    assert!(
        waited > 0,
        "no lookup waited for a queued job: {histories:#?}"
    );
    assert!(
        found > 0,
        "no lookup found a journal after a dropped upload"
    );
    eprintln!(
        "fusion drops: {} postings; waited {waited}, found {found}; faults {}",
        3 * pairs,
        report["erps"]["fusion"]["faults"]
    );
    db.drop_db().await;
}

/// One journal and one transaction the import rejects (an unbalanced journal, an amount that
/// is not a number) travel in zips with others (every posting is claimed at once, within the
/// zip's window): their jobs end WARNING, those two postings fail
/// with class rejected and the import's reason, every other posting of the same jobs is
/// confirmed.
#[tokio::test]
async fn a_partly_rejected_import_fails_only_the_rejected_postings() {
    let backend = Backend::Sqlite;
    let sim = Sim::start().await;
    let mut secrets = Secrets::default();
    let (journals, journals_auth) = fusion_login(
        &sim,
        &mut secrets,
        "journals",
        "fa-partial",
        FusionAuth::Basic,
    );
    let (subledger, subledger_auth) = fusion_login(
        &sim,
        &mut secrets,
        "subledger",
        "fa-partial",
        FusionAuth::Basic,
    );
    provision_fusion(&sim, "fa-partial", &[&journals, &subledger]).await;
    let tenants = [
        fusion_tenant(
            &sim,
            "journals",
            "fa-partial",
            journals_auth,
            ErpMode::Journal,
            40,
        ),
        fusion_tenant(
            &sim,
            "subledger",
            "fa-partial",
            subledger_auth,
            ErpMode::Subledger,
            40,
        ),
    ];
    let pairs = 6;
    let mut events = invoices_and_payments("journals", 1, pairs);
    events.extend(invoices_and_payments("subledger", 1_000, pairs));
    let db = TestDb::create(backend).await;
    db.write(&events, &tenants).await.unwrap();
    let gl_bad = format!("lf-journals-{}-inv", eid(3));
    let ar_bad = format!("lf-subledger-{}-inv", eid(1_002));
    tamper(&db, &gl_bad, |d| {
        d["rows"][0]["ENTERED_DR"] = json!("999.99")
    })
    .await;
    tamper(&db, &ar_bad, |d| d["rows"][1]["AMOUNT"] = json!("n/a")).await;

    // Room for every posting at once, and a window long enough for all of them to be claimed
    // (on SQLite the claims share one connection with the attempts): each tenant's journals,
    // and its transactions, share one zip.
    let cfg = DispatcherConfig {
        concurrency: 64,
        ..async_config(&secrets)
    };
    let fusion: Arc<dyn ErpAdapter> =
        Arc::new(Fusion::new().with_batching(Duration::from_secs(2), 100));
    drain_with(&db, backend, cfg, vec![fusion], Duration::from_secs(120)).await;

    let jobs = sim.jobs("fusion", Some("fa-partial")).await;
    let docs = sim.documents("fusion", Some("fa-partial")).await;
    for t in ["journals", "subledger"] {
        for (ext, (status, class, error, job)) in postings_by_ref(&db, t).await {
            if ext != gl_bad && ext != ar_bad {
                assert_eq!(status, "confirmed", "{ext}: {error:?}");
                continue;
            }
            assert_eq!(
                (status.as_str(), class.as_deref()),
                ("failed", Some("rejected")),
                "{ext}"
            );
            let error = error.unwrap();
            let expected = if ext == gl_bad {
                "EU02"
            } else {
                "AMOUNT is not a number"
            };
            assert!(error.contains(expected), "{error}");
            // Its job imported other postings: a partial success, not a failed file.
            let request = job.unwrap().split_once(':').unwrap().1.to_owned();
            let job = jobs
                .iter()
                .find(|j| j["seq"].as_u64().map(|s| s.to_string()) == Some(request.clone()))
                .unwrap();
            assert_eq!(job["result"]["RequestStatus"], "WARNING", "{job:#}");
            let imported = docs
                .iter()
                .filter(|d| d["body"]["RequestId"] == request.as_str())
                .count();
            assert!(imported > 0, "job {request} imported nothing else");
        }
    }
    let report = sim.report().await;
    assert_eq!(report["erps"]["fusion"]["duplicates"], 0);
    assert_eq!(report["erps"]["fusion"]["documents"], 6 * pairs - 2);
    db.drop_db().await;
}

/// A second ledgerflow database (restored from an old backup) sends the same AR invoices
/// again: AutoInvoice refuses them as duplicate flexfields, the postings are confirmed with the
/// transactions the first run imported, and nothing is imported twice.
#[tokio::test]
async fn a_duplicate_flexfield_is_confirmed_as_already_there() {
    let backend = Backend::Sqlite;
    let sim = Sim::start().await;
    let mut secrets = Secrets::default();
    let (login, auth) = fusion_login(&sim, &mut secrets, "ar", "fa-dup", FusionAuth::Basic);
    provision_fusion(&sim, "fa-dup", &[&login]).await;
    let tenant = fusion_tenant(&sim, "ar", "fa-dup", auth, ErpMode::Subledger, 8);
    let events: Vec<_> = (0..6)
        .map(|i| invoice("ar", i + 1, &format!("inv-{i}"), 1_000 + i as i64, 70))
        .collect();
    let mut confirmed = Vec::new();
    for _ in 0..2 {
        let db = TestDb::create(backend).await;
        db.write(&events, std::slice::from_ref(&tenant))
            .await
            .unwrap();
        drain_with(
            &db,
            backend,
            async_config(&secrets),
            adapter(),
            Duration::from_secs(60),
        )
        .await;
        let rows = postings_by_ref(&db, "ar").await;
        assert!(
            rows.values().all(|(status, ..)| status == "confirmed"),
            "{rows:#?}"
        );
        let ids = sqlx::query("SELECT external_id, erp_document_id FROM erp_outbox ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
        confirmed.push(
            ids.iter()
                .map(|r| {
                    use sqlx::Row;
                    (r.get::<String, _>(0), r.get::<Option<String>, _>(1))
                })
                .collect::<Vec<_>>(),
        );
        db.drop_db().await;
    }
    assert_eq!(confirmed[0], confirmed[1], "the same transactions");
    let report = sim.report().await;
    assert_eq!(report["erps"]["fusion"]["documents"], 6);
    assert_eq!(report["erps"]["fusion"]["duplicates"], 0);
    // The second run's import was refused line by line as duplicates.
    let jobs = sim.jobs("fusion", Some("fa-dup")).await;
    let refused = jobs
        .iter()
        .filter(|j| j["result"]["RequestStatus"] == "ERROR")
        .flat_map(|j| {
            j["result"]["rejected"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|r| {
            r.to_string()
                .contains("duplicate line transaction flexfield")
        })
        .count();
    assert_eq!(refused, 6, "{jobs:#?}");
}

/// A wrong integration-user password and a wrong OAuth client secret: failed, class auth, and
/// neither secret in any stored text.
#[tokio::test]
async fn wrong_credentials_fail_with_class_auth_and_are_not_stored() {
    let backend = Backend::Sqlite;
    let sim = Sim::start().await;
    let mut secrets = Secrets::default();
    let (basic, basic_auth) =
        fusion_login(&sim, &mut secrets, "basic", "fa-auth", FusionAuth::Basic);
    let (oauth, oauth_auth) =
        fusion_login(&sim, &mut secrets, "oauth", "fa-auth", FusionAuth::Oauth);
    provision_fusion(&sim, "fa-auth", &[&basic, &oauth]).await;
    let tenants = [
        fusion_tenant(&sim, "basic", "fa-auth", basic_auth, ErpMode::Journal, 2),
        fusion_tenant(&sim, "oauth", "fa-auth", oauth_auth, ErpMode::Subledger, 2),
    ];
    secrets.put("FUSION_basic", "not-the-password-0123456789");
    secrets.put("FUSION_oauth", "not-the-client-secret-9876543210");
    let mut events = invoices_and_payments("basic", 1, 2);
    events.extend(invoices_and_payments("oauth", 100, 2));
    let db = TestDb::create(backend).await;
    db.write(&events, &tenants).await.unwrap();
    drain_with(
        &db,
        backend,
        async_config(&secrets),
        adapter(),
        Duration::from_secs(60),
    )
    .await;

    for t in ["basic", "oauth"] {
        let rows = postings(&db, t).await;
        assert_eq!(rows.len(), 6, "{t}");
        for (status, class, error, _) in rows {
            assert_eq!(
                (status.as_str(), class.as_deref()),
                ("failed", Some("auth")),
                "{t}"
            );
            let error = error.unwrap();
            match t {
                "basic" => assert!(error.contains("401"), "{error}"),
                _ => assert!(error.contains("invalid_client"), "{error}"),
            }
        }
    }
    assert_no_secret_stored(&db, &secrets).await;
    let report = sim.report().await;
    assert_eq!(report["erps"]["fusion"]["documents"], 0);
    assert!(report["erps"]["fusion"]["rejected_auth"].as_u64().unwrap() >= 2);
    db.drop_db().await;
}
