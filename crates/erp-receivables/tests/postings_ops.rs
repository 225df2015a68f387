//! Operator actions on postings against the simulator: failed postings are listed, a dry run
//! changes nothing, a requeue is delivered exactly once (counted on the simulator's side), a
//! resolve is kept with its reason, a re-render uses the current tenant configuration and
//! records both config versions, and reconcile is unclean while a posting is failed or stuck.
//! Runs on SQLite and Postgres.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::sim::*;
use common::*;
use ledgerflow_erp_receivables::ops::{
    Acting, PostingFilter, RequeueRequest, RequeueSelection, list_postings, posting, requeue,
    resolve,
};
use ledgerflow_erp_receivables::{
    Manifest, PostingState, ReconcileOptions, ReconcileReport, ReconcileSource, reconcile,
};
use ledgerflow_store::Backend;
use ledgerflow_tenants::{ErpAuth, ErpMode, TenantConfig};
use serde_json::{Value, json};
use sqlx::Row;

per_backend!(
    failed_postings_are_requeued_once_or_resolved_and_reconcile_follows,
    a_requeue_re_renders_with_the_current_configuration,
);

/// A NetSuite tenant whose TBA token secret is wrong until `fix` is called: the simulator's
/// account knows the good credentials; the dispatcher reads the secrets from `good` or `bad`.
struct Setup {
    sim: Sim,
    good: Secrets,
    bad: Secrets,
    tenant: TenantConfig,
}

async fn setup(id: &str, account: &str) -> Setup {
    let sim = Sim::start().await;
    let mut good = Secrets::default();
    let (tba, auth) = netsuite_tba(&mut good, id);
    sim.provision(json!({ "erp": "netsuite", "account": account,
        "credentials": { "tba": [tba] } }))
        .await;
    let ErpAuth::NetsuiteTba { token_secret, .. } = &auth else {
        unreachable!("netsuite_tba returns TBA auth");
    };
    let ledgerflow_tenants::SecretRef::Env { env } = token_secret else {
        unreachable!("test secrets are environment references");
    };
    let mut bad = good.clone();
    bad.0.insert(env.clone(), "not-the-token-secret".to_owned());
    let tenant = netsuite_tenant(&sim, id, account, auth, ErpMode::Journal, None);
    Setup {
        sim,
        good,
        bad,
        tenant,
    }
}

fn manifest(tenant: &str, count: u64, total: &str) -> ReconcileSource {
    ReconcileSource::Manifest(
        Manifest::from_json(json!({ "tenants": { tenant: {
            "currency": "USD",
            "invoices": { "count": count, "total": total },
            "payments": { "count": 0, "total": "0.00", "fees": "0.00" },
            "credit_memos": { "count": 0, "total": "0.00" }
        }}}))
        .unwrap(),
    )
}

async fn reconciled(
    db: &TestDb,
    source: &ReconcileSource,
    stuck_after: Duration,
) -> ReconcileReport {
    let mut options = ReconcileOptions::new(source.clone());
    options.stuck_after = stuck_after;
    reconcile(&db.pool, db.backend, &options).await.unwrap()
}

/// Everything an operator action may change, per posting, for "nothing changed" checks.
async fn snapshot(db: &TestDb) -> Vec<Vec<Option<String>>> {
    let rows = sqlx::query(
        "SELECT id, status, CAST(attempts AS TEXT), CAST(next_attempt_at AS TEXT), history,
                CAST(updated_at AS TEXT), payload, config_version, resolution, erp_document_id
         FROM erp_outbox ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.iter()
        .map(|r| (0..10).map(|i| r.get::<Option<String>, _>(i)).collect())
        .collect()
}

async fn status_of(db: &TestDb, id: &str) -> String {
    sqlx::query("SELECT status FROM erp_outbox WHERE id = $1")
        .bind(id.to_owned())
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get(0)
}

fn acting(op: &str) -> Acting {
    Acting {
        operation_id: op.to_owned(),
        operator: "alice".to_owned(),
    }
}

async fn failed_postings_are_requeued_once_or_resolved_and_reconcile_follows(backend: Backend) {
    let s = setup("ops", "NSOPS").await;
    let db = TestDb::create(backend).await;
    db.write(
        &[
            invoice("ops", 1, "inv-1", 1_000, 70),
            invoice("ops", 2, "inv-2", 2_000, 140),
        ],
        std::slice::from_ref(&s.tenant),
    )
    .await
    .unwrap();
    let source = manifest("ops", 2, "32.10");
    // Before delivery: pending and young, so not stuck; stuck once the threshold is zero.
    let report = reconciled(&db, &source, Duration::from_secs(3600)).await;
    assert!(report.is_clean(), "{report:#?}");
    let report = reconciled(&db, &source, Duration::ZERO).await;
    assert!(!report.is_clean());
    let erp = &report.tenants["ops"].erp;
    assert_eq!((erp.stuck, erp.undelivered_count), (2, 2), "{erp:#?}");
    assert!(erp.undelivered.iter().all(|p| p.state == "pending"));

    // The wrong token secret: NetSuite refuses twice, both postings fail with class auth.
    drain(&db, backend, config(&s.bad), Duration::from_secs(60)).await;
    let failed = list_postings(
        &db.pool,
        backend,
        &PostingFilter {
            status: Some(PostingState::Failed),
            tenant: Some("ops".into()),
            limit: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(failed.len(), 2, "{failed:#?}");
    assert!(
        failed
            .iter()
            .all(|p| p.last_error_class.as_deref() == Some("auth") && p.attempts >= 1),
        "{failed:#?}"
    );
    let (a, b) = (failed[0].id.clone(), failed[1].id.clone());
    assert!(
        list_postings(&db.pool, backend, &PostingFilter::default())
            .await
            .unwrap()
            .iter()
            .all(|p| p.status == PostingState::Failed)
    );
    let shown = posting(&db.pool, backend, &a).await.unwrap().unwrap();
    assert!(
        shown.last_request.is_some() && shown.last_response.is_some(),
        "{shown:#?}"
    );
    assert!(!shown.history.is_empty());
    assert_eq!(shown.summary.config_version.as_deref(), Some("cfg-sim"));
    assert!(
        posting(&db.pool, backend, "no-such-id")
            .await
            .unwrap()
            .is_none()
    );

    // Failed postings make reconcile unclean, listed by id with their state.
    let report = reconciled(&db, &source, Duration::from_secs(3600)).await;
    assert!(!report.is_clean());
    let erp = &report.tenants["ops"].erp;
    assert_eq!((erp.failed, erp.stuck, erp.undelivered_count), (2, 0, 2));
    let mut listed: Vec<(&str, &str)> = erp
        .undelivered
        .iter()
        .map(|p| (p.id.as_str(), p.state.as_str()))
        .collect();
    listed.sort_unstable();
    let mut expected = vec![(a.as_str(), "failed"), (b.as_str(), "failed")];
    expected.sort_unstable();
    assert_eq!(listed, expected);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["clean"], false);
    assert_eq!(
        json["tenants"]["ops"]["erp"]["undelivered"][0]["state"],
        "failed"
    );

    // Dry runs change nothing.
    let before = snapshot(&db).await;
    let all_failed = RequeueSelection::Failed {
        tenant: Some("ops".into()),
    };
    let dry = requeue(
        &db.pool,
        backend,
        &RequeueRequest {
            selection: &all_failed,
            re_render: None,
            acting: None,
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!dry.executed);
    assert_eq!((dry.requeued, dry.refused), (2, 0), "{dry:#?}");
    let dry = resolve(&db.pool, backend, &b, "posted by hand", None, None)
        .await
        .unwrap()
        .unwrap();
    assert!(dry.resolved && !dry.executed);
    assert_eq!(snapshot(&db).await, before, "a dry run changed the outbox");
    let nobody = RequeueSelection::Id("no-such-id".into());
    let unknown = RequeueRequest {
        selection: &nobody,
        re_render: None,
        acting: None,
    };
    assert!(
        requeue(&db.pool, backend, &unknown)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        resolve(&db.pool, backend, "no-such-id", "x", None, None)
            .await
            .unwrap()
            .is_none()
    );

    // Requeue one (executed): pending, attempts reset, due now, the operation in its history.
    let only_a = RequeueSelection::Id(a.clone());
    let op = acting("op_requeue_1");
    let done = requeue(
        &db.pool,
        backend,
        &RequeueRequest {
            selection: &only_a,
            re_render: None,
            acting: Some(&op),
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert!(done.executed);
    assert_eq!((done.requeued, done.refused), (1, 0), "{done:#?}");
    let shown = posting(&db.pool, backend, &a).await.unwrap().unwrap();
    assert_eq!(shown.summary.status, PostingState::Pending);
    assert_eq!(shown.summary.attempts, 0);
    let last = shown.history.last().unwrap();
    assert_eq!(last["action"], "requeue", "{last}");
    assert_eq!(last["operation"], "op_requeue_1");
    assert_eq!(last["operator"], "alice");
    // A second requeue is refused: the posting is no longer failed.
    let again = requeue(
        &db.pool,
        backend,
        &RequeueRequest {
            selection: &only_a,
            re_render: None,
            acting: Some(&op),
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((again.requeued, again.refused), (0, 1));
    assert!(
        again.postings[0]
            .refused
            .as_deref()
            .unwrap()
            .contains("pending")
    );

    // Resolve the other one by hand.
    let resolved = resolve(
        &db.pool,
        backend,
        &b,
        "posted by hand as JE-77",
        Some("JE-77"),
        Some(&acting("op_resolve_1")),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(resolved.resolved && resolved.executed && resolved.refused.is_none());
    let shown = posting(&db.pool, backend, &b).await.unwrap().unwrap();
    assert_eq!(shown.summary.status, PostingState::Resolved);
    assert_eq!(shown.resolution.as_deref(), Some("posted by hand as JE-77"));
    assert_eq!(shown.resolved_by.as_deref(), Some("alice"));
    assert_eq!(shown.summary.erp_document_id.as_deref(), Some("JE-77"));
    assert_eq!(shown.history.last().unwrap()["action"], "resolve");
    let twice = resolve(&db.pool, backend, &b, "again", None, Some(&acting("op_x")))
        .await
        .unwrap()
        .unwrap();
    assert!(!twice.resolved && twice.refused.is_some());

    // A young pending posting and a resolved one: clean; the pending one is stuck at zero.
    assert!(
        reconciled(&db, &source, Duration::from_secs(3600))
            .await
            .is_clean()
    );
    let report = reconciled(&db, &source, Duration::ZERO).await;
    let erp = &report.tenants["ops"].erp;
    assert_eq!(erp.undelivered.len(), 1);
    assert_eq!(
        (
            erp.undelivered[0].id.as_str(),
            erp.undelivered[0].state.as_str()
        ),
        (a.as_str(), "pending")
    );

    // Delivered once, with the right secret; the resolved one is never sent.
    drain(&db, backend, config(&s.good), Duration::from_secs(60)).await;
    drain(&db, backend, config(&s.good), Duration::from_secs(60)).await;
    assert_eq!(status_of(&db, &a).await, "confirmed");
    assert_eq!(status_of(&db, &b).await, "resolved");
    let docs = s.sim.documents("netsuite", Some("NSOPS")).await;
    assert_eq!(docs.len(), 1, "{docs:#?}");
    let shown = posting(&db.pool, backend, &a).await.unwrap().unwrap();
    assert_eq!(
        docs[0]["erp_key"].as_str(),
        shown.summary.external_id.as_deref()
    );
    assert!(shown.summary.erp_document_id.is_some());
    let report = s.sim.report().await;
    assert_eq!(report["erps"]["netsuite"]["duplicates"], 0, "{report:#}");

    let report = reconciled(&db, &source, Duration::ZERO).await;
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.tenants["ops"].erp.undelivered_count, 0);
    db.drop_db().await;
}

async fn a_requeue_re_renders_with_the_current_configuration(backend: Backend) {
    let s = setup("rr", "NSRR").await;
    let db = TestDb::create(backend).await;
    db.write(
        &[invoice("rr", 11, "inv-11", 1_000, 70)],
        std::slice::from_ref(&s.tenant),
    )
    .await
    .unwrap();
    drain(&db, backend, config(&s.bad), Duration::from_secs(60)).await;
    let failed = list_postings(
        &db.pool,
        backend,
        &PostingFilter {
            status: Some(PostingState::Failed),
            ..PostingFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let id = failed[0].id.clone();
    let stored: Value = posting(&db.pool, backend, &id)
        .await
        .unwrap()
        .unwrap()
        .document;
    assert_eq!(stored["subsidiary"]["id"], "1", "{stored:#}");

    // The tenants file changed since: another subsidiary, so another config version.
    let mut current = s.tenant.clone();
    if let Some(erp) = &mut current.erp {
        if let Some(ns) = &mut erp.netsuite {
            ns.subsidiary = "7".into();
        }
        erp.config_version = "cfg-new".into();
    }
    let selection = RequeueSelection::Id(id.clone());
    // A tenants file without the tenant: refused, nothing changed.
    let before = snapshot(&db).await;
    let empty = BTreeMap::new();
    let refused = requeue(
        &db.pool,
        backend,
        &RequeueRequest {
            selection: &selection,
            re_render: Some(&empty),
            acting: Some(&acting("op_rr_0")),
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((refused.requeued, refused.refused), (0, 1));
    assert!(
        refused.postings[0]
            .refused
            .as_deref()
            .unwrap()
            .contains("not in the tenants file")
    );
    assert_eq!(snapshot(&db).await, before);

    let tenants = BTreeMap::from([("rr".to_owned(), current)]);
    // Dry: says what would change, changes nothing.
    let dry = requeue(
        &db.pool,
        backend,
        &RequeueRequest {
            selection: &selection,
            re_render: Some(&tenants),
            acting: None,
        },
    )
    .await
    .unwrap()
    .unwrap();
    let line = &dry.postings[0];
    assert!(line.requeued && dry.re_rendered && !dry.executed);
    assert_eq!(line.config_version_before.as_deref(), Some("cfg-sim"));
    assert_eq!(line.config_version_after.as_deref(), Some("cfg-new"));
    assert_eq!(line.document_changed, Some(true));
    assert_eq!(snapshot(&db).await, before);

    let done = requeue(
        &db.pool,
        backend,
        &RequeueRequest {
            selection: &selection,
            re_render: Some(&tenants),
            acting: Some(&acting("op_rr_1")),
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((done.requeued, done.refused), (1, 0), "{done:#?}");
    let shown = posting(&db.pool, backend, &id).await.unwrap().unwrap();
    assert_eq!(shown.summary.status, PostingState::Pending);
    assert_eq!(shown.summary.config_version.as_deref(), Some("cfg-new"));
    assert_eq!(
        shown.document["subsidiary"]["id"], "7",
        "{:#}",
        shown.document
    );
    // Only the subsidiary changed; the external id stays.
    assert_eq!(shown.document["memo"], stored["memo"]);
    assert_eq!(shown.document["line"], stored["line"]);
    let last = shown.history.last().unwrap();
    assert_eq!(last["action"], "requeue");
    assert_eq!(last["config_version_before"], "cfg-sim");
    assert_eq!(last["config_version_after"], "cfg-new");

    drain(&db, backend, config(&s.good), Duration::from_secs(60)).await;
    assert_eq!(status_of(&db, &id).await, "confirmed");
    let docs = s.sim.documents("netsuite", Some("NSRR")).await;
    assert_eq!(docs.len(), 1, "{docs:#?}");
    assert_eq!(docs[0]["body"]["subsidiary"]["id"], "7", "{:#}", docs[0]);
    let report = reconciled(&db, &manifest("rr", 1, "10.70"), Duration::ZERO).await;
    assert!(report.is_clean(), "{report:#?}");
    db.drop_db().await;
}
