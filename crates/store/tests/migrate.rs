//! The migrator on both backends: pending migrations apply once and are recorded, a second run
//! is a no-op, an edited applied migration and a database newer than the binary are refused
//! (and nothing is applied), a SQLite table of an earlier release gets its missing columns,
//! and on Postgres several migrators starting together apply each migration once.

use std::time::Instant;

use ledgerflow_store::migrate::{self, MIGRATIONS_TABLE};
use ledgerflow_store::{AddedColumn, Backend, Migration, Migrations, StoreError};
use ledgerflow_testkit::ScratchStore;

const V1: Migration = Migration::new(
    1,
    "baseline",
    "CREATE TABLE IF NOT EXISTS mig_items (id TEXT PRIMARY KEY, n BIGINT NOT NULL);
     CREATE INDEX IF NOT EXISTS mig_items_n ON mig_items (n);",
);
const V2: Migration = Migration::new(
    2,
    "notes",
    "CREATE TABLE mig_notes (id TEXT PRIMARY KEY, body TEXT NOT NULL);",
);

const ONE: Migrations = Migrations::new("mig-test", &[V1]);
const TWO: Migrations = Migrations::new("mig-test", &[V1, V2]);
/// Version 1 with other text than the one applied.
const EDITED: Migrations = Migrations::new(
    "mig-test",
    &[Migration::new(
        1,
        "baseline",
        "CREATE TABLE IF NOT EXISTS mig_items (id TEXT PRIMARY KEY, n BIGINT);",
    )],
);
/// Another component's sequence in the same database.
const OTHER: Migrations = Migrations::new(
    "mig-other",
    &[Migration::new(
        1,
        "baseline",
        "CREATE TABLE IF NOT EXISTS mig_other (id TEXT PRIMARY KEY);",
    )],
);

async fn count(store: &ledgerflow_store::Store, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.pool())
        .await
        .expect(sql)
}

async fn applies_checks_and_refuses(backend: Backend) {
    let scratch = ScratchStore::open(backend, "store_mig").await;
    let store = &scratch.store;
    // The store's own baseline was recorded by Store::open.
    let own = migrate::applied(store.pool(), Some("store")).await.unwrap();
    let ours = store.own_migrations();
    assert_eq!(own.len(), ours.migrations().len());
    for (recorded, migration) in own.iter().zip(ours.migrations()) {
        assert_eq!(recorded.checksum, migration.checksum());
    }

    let first = store.migrate(&ONE).await.unwrap();
    assert_eq!((first.applied.clone(), first.version), (vec![1], 1));
    let again = store.migrate(&ONE).await.unwrap();
    assert!(again.applied.is_empty() && again.version == 1, "{again:?}");
    // Two sequences side by side, each with its own version 1.
    assert_eq!(store.migrate(&OTHER).await.unwrap().applied, vec![1]);
    let upgraded = store.migrate(&TWO).await.unwrap();
    assert_eq!(upgraded.applied, vec![2]);
    let rows = migrate::applied(store.pool(), Some("mig-test"))
        .await
        .unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.version, r.name.as_str()))
            .collect::<Vec<_>>(),
        [(1, "baseline"), (2, "notes")]
    );
    assert!(
        rows.iter()
            .all(|r| r.checksum.len() == 64 && r.applied_at > 0)
    );

    // A rollback to a binary that knows only version 1 is refused, with what to do.
    let err = store.migrate(&ONE).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaNewer {
                database: 2,
                binary: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("run that release or a newer one"),
        "{err}"
    );

    // An edited, already applied migration is refused before anything runs.
    let scratch2 = ScratchStore::open(backend, "store_mig").await;
    scratch2.store.migrate(&ONE).await.unwrap();
    let err = scratch2.store.migrate(&EDITED).await.unwrap_err();
    assert!(
        matches!(err, StoreError::MigrationChecksum { version: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("mig-test 0001_baseline"), "{err}");
    assert!(err.to_string().contains("new migration"), "{err}");

    // A failing migration leaves nothing behind: neither its tables nor its record.
    const BROKEN: Migrations = Migrations::new(
        "mig-broken",
        &[Migration::new(
            1,
            "broken",
            "CREATE TABLE mig_broken (id TEXT); SELECT * FROM nowhere;",
        )],
    );
    let err = store.migrate(&BROKEN).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Migration { version: 1, .. }),
        "{err:?}"
    );
    assert!(!store.table_exists("mig_broken").await.unwrap());
    let recorded = count(
        store,
        &format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM {MIGRATIONS_TABLE} WHERE component = 'mig-broken'"
        ),
    )
    .await;
    assert_eq!(recorded, 0);
}

#[tokio::test]
async fn applies_checks_and_refuses_on_sqlite() {
    applies_checks_and_refuses(Backend::Sqlite).await;
}

#[tokio::test]
async fn applies_checks_and_refuses_on_postgres() {
    applies_checks_and_refuses(Backend::Postgres).await;
}

/// A SQLite table from an earlier release lacks a column the baseline's `CREATE TABLE IF NOT
/// EXISTS` would have: the migrator adds it before the file runs; a new database gets it from
/// the file.
#[tokio::test]
async fn sqlite_adoption_adds_missing_columns() {
    const ADDED: &[AddedColumn] = &[AddedColumn {
        table: "mig_legacy",
        column: "note",
        definition: "TEXT",
    }];
    const LEGACY: Migrations = Migrations::new(
        "mig-legacy",
        &[Migration::new(
            1,
            "baseline",
            "CREATE TABLE IF NOT EXISTS mig_legacy (id TEXT PRIMARY KEY, note TEXT);
             UPDATE mig_legacy SET note = 'adopted' WHERE note IS NULL;",
        )
        .adding_on_sqlite(ADDED)],
    );
    let scratch = ScratchStore::open(Backend::Sqlite, "unused").await;
    let store = &scratch.store;
    sqlx::raw_sql(
        "CREATE TABLE mig_legacy (id TEXT PRIMARY KEY); INSERT INTO mig_legacy VALUES ('a');",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store.migrate(&LEGACY).await.unwrap();
    let note: String = sqlx::query_scalar("SELECT note FROM mig_legacy WHERE id = 'a'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(note, "adopted");
    // A fresh file: the column comes from CREATE TABLE.
    let fresh = ScratchStore::open(Backend::Sqlite, "unused").await;
    fresh.store.migrate(&LEGACY).await.unwrap();
    assert!(fresh.store.table_exists("mig_legacy").await.unwrap());
}

/// Eight migrators on one Postgres database at once (as eight processes starting together):
/// all succeed, the migration is applied and recorded once.
#[tokio::test]
async fn concurrent_migrators_on_postgres_apply_once() {
    let scratch = ScratchStore::open(Backend::Postgres, "store_mig").await;
    let url = scratch.url.clone();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            // Each its own pool, as separate processes would have.
            let store = ledgerflow_store::Store::open(&url).await.expect("open");
            let report = store.migrate(&TWO).await.expect("migrate");
            store.pool().close().await;
            report.applied
        }));
    }
    let mut applied = Vec::new();
    for task in tasks {
        applied.extend(task.await.unwrap());
    }
    applied.sort_unstable();
    assert_eq!(
        applied,
        vec![1, 2],
        "each version applied by exactly one migrator"
    );
    let rows = migrate::applied(scratch.store.pool(), None).await.unwrap();
    let ours: Vec<_> = rows.iter().filter(|r| r.component == "mig-test").collect();
    assert_eq!(ours.len(), 2);
    assert_eq!(
        rows.iter().filter(|r| r.component == "store").count(),
        scratch.store.own_migrations().migrations().len()
    );
    eprintln!("8 concurrent migrators: {:?}", started.elapsed());
}
