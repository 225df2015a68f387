//! Adopting a database of the previous release (tests/fixtures/previous-release-*.sql: its exact
//! DDL and a small ledger's rows, no migrations table) on SQLite and Postgres: the migrations of
//! every component apply cleanly, the rows are intact (audit chains verify), each component's
//! baseline is recorded once, a second run applies nothing, the audit log is still append-only,
//! and the store reads and appends through its normal API.

use std::time::{Duration, Instant};

use ledgerflow_service::ConsumerKind;
use ledgerflow_store::{Backend, DeadLetterFilter, OperationInput, Store, migrate};
use ledgerflow_testkit::PgDatabase;
use sqlx::Executor;

/// Tables of the fixture with rows, and how many (Postgres names; SQLite prefixes `warehouse_`).
const ROWS: &[(&str, i64)] = &[
    ("inbox", 9),
    ("positions", 3),
    ("audit_log", 12),
    ("dead_letters", 3),
    ("erp_journal_entries", 4),
    ("erp_journal_lines", 10),
    ("erp_outbox", 4),
    ("erp_payments", 1),
    ("notification_outbox", 3),
    ("warehouse.fact_invoice", 1),
];

fn table(backend: Backend, name: &str) -> String {
    match backend {
        Backend::Postgres => name.to_owned(),
        Backend::Sqlite => name.replace("warehouse.", "warehouse_"),
    }
}

async fn rows(store: &Store, backend: Backend) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for (name, _) in ROWS {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM {}",
            table(backend, name)
        ))
        .fetch_one(store.pool())
        .await
        .expect(name);
        out.push((*name, n));
    }
    out
}

/// The versions a new database gets from the consumers' migrations, in start order (a later
/// migration added to a crate extends this without touching the test).
fn every_consumer_version(backend: Backend) -> Vec<i64> {
    ConsumerKind::ALL
        .iter()
        .flat_map(|k| k.schema(backend).migrations().iter().map(|m| m.version))
        .collect()
}

/// Opens the store and applies every consumer's migrations, as `ledgerflow run` does.
async fn migrate_all(url: &str) -> (Store, Vec<i64>, Duration) {
    let started = Instant::now();
    let store = Store::open(url).await.expect("store opens and migrates");
    let mut applied = Vec::new();
    for kind in ConsumerKind::ALL {
        let report = store
            .migrate(&kind.schema(store.backend()))
            .await
            .expect("consumer migrations");
        applied.extend(report.applied);
    }
    (store, applied, started.elapsed())
}

async fn load_fixture(url: &str, backend: Backend) {
    let fixture = match backend {
        Backend::Postgres => include_str!("fixtures/previous-release-postgres.sql"),
        Backend::Sqlite => include_str!("fixtures/previous-release-sqlite.sql"),
    };
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("connect");
    pool.execute(fixture).await.expect("the fixture loads");
    pool.close().await;
}

async fn adopts_the_previous_release(backend: Backend, url: &str, fresh_url: &str) {
    // A new, empty database, for the timing comparison.
    let (fresh, applied, fresh_time) = migrate_all(fresh_url).await;
    assert_eq!(applied, every_consumer_version(backend));
    fresh.pool().close().await;

    load_fixture(url, backend).await;
    let (store, applied, time) = migrate_all(url).await;
    eprintln!(
        "{backend:?}: migrations on an empty database {fresh_time:?}, on the fixture {time:?}"
    );
    assert_eq!(
        applied,
        every_consumer_version(backend),
        "every consumer migration"
    );
    let expected: Vec<(&str, i64)> = ROWS.to_vec();
    assert_eq!(rows(&store, backend).await, expected, "rows intact");
    let report = store.verify_audit(None, |_| {}).await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows, 12);

    let recorded = migrate::applied(store.pool(), None)
        .await
        .expect("recorded");
    let mut components: Vec<(&str, i64)> = recorded
        .iter()
        .map(|r| (r.component.as_str(), r.version))
        .collect();
    components.sort_unstable();
    let mut known: Vec<(&str, i64)> = ConsumerKind::ALL
        .iter()
        .map(|k| k.schema(backend))
        .chain([store.own_migrations()])
        .flat_map(|m| {
            m.migrations()
                .iter()
                .map(move |v| (m.component(), v.version))
        })
        .collect();
    known.sort_unstable();
    assert_eq!(components, known, "every migration recorded once");
    assert!(known.contains(&("store", 1)) && known.contains(&("warehouse", 1)));

    // Again: nothing to apply, nothing changed.
    let (again, applied, _) = migrate_all(url).await;
    assert!(applied.is_empty(), "{applied:?}");
    assert_eq!(rows(&again, backend).await, expected);
    again.pool().close().await;

    // Still append-only.
    assert!(
        sqlx::query("DELETE FROM audit_log")
            .execute(store.pool())
            .await
            .is_err()
    );

    // The store works through the normal API: reads of the adopted rows, and a new audit row
    // appended to a new chain; every chain still verifies.
    let letters = store
        .dead_letters(&DeadLetterFilter::default())
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), 3);
    assert_eq!(store.positions(None).await.expect("positions").len(), 3);
    store
        .record_operation(&OperationInput {
            id: "op_adopted".into(),
            consumer: "erp-receivables".into(),
            kind: "test".into(),
            operator: "test".into(),
            reason: "adoption".into(),
            details: serde_json::json!({}),
        })
        .await
        .expect("an operation is recorded");
    let report = store.verify_audit(None, |_| {}).await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows, 13);
    assert_eq!(rows(&store, backend).await[0], ("inbox", 9));
    store.pool().close().await;
}

#[tokio::test]
async fn adopts_a_previous_release_database_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let fresh = format!("sqlite://{}", dir.path().join("new.db").display());
    adopts_the_previous_release(Backend::Sqlite, &url, &fresh).await;
}

#[tokio::test]
async fn adopts_a_previous_release_database_on_postgres() {
    let (old, new) = tokio::task::spawn_blocking(|| {
        (PgDatabase::create("svc_mig"), PgDatabase::create("svc_mig"))
    })
    .await
    .expect("databases");
    adopts_the_previous_release(Backend::Postgres, &old.url, &new.url).await;
}
