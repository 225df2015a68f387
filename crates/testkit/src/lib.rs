//! Dev-only test helpers shared by every crate's tests: a throwaway Postgres database
//! ([`PgDatabase`], dropped `WITH (FORCE)` with its guard), a throwaway store on either backend
//! ([`ScratchStore`]), a real Apache Kafka cluster ([`KafkaCluster`]: one shared per test binary,
//! or one of a test's own), and [`block_on`] for async setup from synchronous code and `Drop`.
//!
//! The Postgres server is `LEDGERFLOW_TEST_POSTGRES` (an administrative URL, default
//! `postgres://postgres@127.0.0.1:5432/postgres`); `make setup` makes sure it answers.

pub mod kafka;

pub use kafka::{KafkaCluster, PartitionInfo, TlsListeners};

use std::future::Future;
use std::time::Duration;

use ledgerflow_store::{Backend, Store};
use sqlx::{Connection, PgConnection};

/// Administrative Postgres URL (`LEDGERFLOW_TEST_POSTGRES` overrides), a database that always
/// exists on the server the tests use.
pub fn postgres_admin_url() -> String {
    std::env::var("LEDGERFLOW_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Runs a future to completion on a fresh current-thread runtime in a scoped thread, so it
/// works from plain tests, from inside a tokio runtime and from `Drop`.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime")
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A fresh Postgres database `<prefix>_<uuid>`, dropped `WITH (FORCE)` with the guard.
#[derive(Debug)]
pub struct PgDatabase {
    /// Database name.
    pub name: String,
    /// Its URL.
    pub url: String,
}

impl PgDatabase {
    /// Creates the database (panics with the reason when the server does not answer).
    pub fn create(prefix: &str) -> Self {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let admin = postgres_admin_url();
        block_on(async {
            let mut conn = PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("connecting to {admin} (run `make setup`): {e}"));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        });
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Self { name, url }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin = postgres_admin_url();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // A test that restarts Postgres may drop the guard while the server is coming back.
        for _ in 0..20 {
            let done = block_on(async {
                let Ok(mut conn) = PgConnection::connect(&admin).await else {
                    return false;
                };
                sqlx::query(&sql).execute(&mut conn).await.is_ok()
            });
            if done {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!("could not drop test database {}", self.name);
    }
}

/// What keeps a scratch database alive (held only for its `Drop`).
#[derive(Debug)]
#[allow(dead_code)]
enum Guard {
    Postgres(PgDatabase),
    Sqlite(tempfile::TempDir),
}

/// A store on a throwaway database of the given backend (a temp-dir SQLite file, or a fresh
/// Postgres database); everything is removed when it is dropped.
#[derive(Debug)]
pub struct ScratchStore {
    /// The opened store (its own schema applied).
    pub store: Store,
    /// The URL `ledgerflow --database` would take.
    pub url: String,
    _guard: Guard,
}

impl ScratchStore {
    /// Opens a store on a new database; `prefix` names the Postgres database.
    pub async fn open(backend: Backend, prefix: &str) -> Self {
        let (url, guard) = match backend {
            Backend::Postgres => {
                // Created from a helper thread: `PgDatabase::create` blocks.
                let db = tokio::task::spawn_blocking({
                    let prefix = prefix.to_owned();
                    move || PgDatabase::create(&prefix)
                })
                .await
                .expect("creating the database");
                (db.url.clone(), Guard::Postgres(db))
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
                (url, Guard::Sqlite(dir))
            }
        };
        let store = Store::open(&url)
            .await
            .unwrap_or_else(|e| panic!("opening the store at {url}: {e}"));
        Self {
            store,
            url,
            _guard: guard,
        }
    }
}
