//! Versioned migrations: numbered SQL files per backend, per component (the crate that owns the
//! tables), recorded in `ledgerflow_migrations`.
//!
//! Every crate owning tables in the store's database keeps its own sequence
//! (`crates/<crate>/migrations/{postgres,sqlite}/NNNN_name.sql`, compiled in with
//! `include_str!`) and hands it over as a [`Migrations`]. [`run`] applies the pending ones of
//! one component in order, in ONE transaction, under the Postgres advisory DDL lock (several
//! processes starting together on one database: the first applies, the others wait and then
//! find nothing to do). Before it applies anything it refuses:
//!
//! - an applied migration whose recorded SHA-256 differs from the binary's text (someone
//!   edited a released migration: the database and the code no longer agree on what ran);
//! - a database whose recorded version is above the binary's highest (a rollback to an older
//!   binary must not write through a schema it does not know).
//!
//! Why not `sqlx::migrate`: in sqlx 0.8 the record table is the one `_sqlx_migrations` per
//! database with one version sequence, so several crates each owning a sequence would collide
//! (each migrator reports the others' versions as missing, and `ignore_missing` would also hide
//! a newer schema, the rollback check we need); and adopting a SQLite database of the previous
//! release needs `ADD COLUMN` only where a column is missing, which plain SQL cannot say on
//! SQLite ([`AddedColumn`]). What is left is small: one table, one lock, one loop.
//!
//! Adoption: a database created before migrations existed has the tables and no records.
//! Each component's `0001_baseline` is written with `IF NOT EXISTS` (and idempotent row
//! updates), so on such a database it completes the schema and is recorded like anywhere else.

use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, AnyPool, Connection, Executor, Row};

use ledgerflow_core::now_micros;

use crate::{Backend, StoreError};

/// Advisory lock key for DDL (arbitrary, stable; the same key the idempotent DDL of earlier
/// releases took, so an old and a new binary starting together still serialize).
const DDL_LOCK_KEY: i64 = 0x6c65_6467_6572; // "ledger"

/// The table recording applied migrations.
pub const MIGRATIONS_TABLE: &str = "ledgerflow_migrations";

/// A column a table created by an earlier release may lack. SQLite has no `ADD COLUMN IF NOT
/// EXISTS`, so before a migration's SQL runs on SQLite the migrator adds each missing one
/// (when the table exists at all; a new table gets it from its `CREATE TABLE`). The Postgres
/// file says `ADD COLUMN IF NOT EXISTS` itself.
#[derive(Debug, Clone, Copy)]
pub struct AddedColumn {
    /// The table.
    pub table: &'static str,
    /// The column.
    pub column: &'static str,
    /// Its type and constraints, as in `ALTER TABLE t ADD COLUMN c <definition>`.
    pub definition: &'static str,
}

/// One numbered migration of one component for one backend.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// 1, 2, 3, ... (the file's `NNNN`).
    pub version: i64,
    /// The file's name after the number (`baseline`).
    pub name: &'static str,
    /// The file's text; its SHA-256 is the recorded checksum.
    pub sql: &'static str,
    /// Columns to add first on SQLite when an older table lacks them (see [`AddedColumn`]).
    pub sqlite_added_columns: &'static [AddedColumn],
}

impl Migration {
    /// A migration with no SQLite column additions.
    pub const fn new(version: i64, name: &'static str, sql: &'static str) -> Self {
        Self {
            version,
            name,
            sql,
            sqlite_added_columns: &[],
        }
    }

    /// The same migration, adding `columns` on SQLite where an older table lacks them.
    pub const fn adding_on_sqlite(self, columns: &'static [AddedColumn]) -> Self {
        Self {
            sqlite_added_columns: columns,
            ..self
        }
    }

    /// Lowercase hex SHA-256 of the SQL text (what `ledgerflow_migrations.checksum` holds).
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// The migrations of one component for one backend, versions 1..=n in order.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    component: &'static str,
    migrations: &'static [Migration],
}

impl Migrations {
    /// The sequence of `component`. Panics (at compile time when used in a `const`) unless the
    /// versions are exactly 1, 2, ..., n: a gap or a duplicate is a mistake in the crate.
    pub const fn new(component: &'static str, migrations: &'static [Migration]) -> Self {
        let mut i = 0;
        while i < migrations.len() {
            assert!(
                migrations[i].version == i as i64 + 1,
                "migration versions must be 1, 2, ..., n in order"
            );
            i += 1;
        }
        Self {
            component,
            migrations,
        }
    }

    /// The owning component (`store`, `erp-receivables`, ...).
    pub fn component(&self) -> &'static str {
        self.component
    }

    /// The migrations, oldest first.
    pub fn migrations(&self) -> &'static [Migration] {
        self.migrations
    }

    /// The highest version (0 when there is none).
    pub fn latest(&self) -> i64 {
        self.migrations.last().map_or(0, |m| m.version)
    }
}

/// A migration as recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// The owning component.
    pub component: String,
    /// Its version.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// The SHA-256 of the text that ran.
    pub checksum: String,
    /// When, in microseconds since the Unix epoch.
    pub applied_at: i64,
}

/// What [`run`] did for one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The component.
    pub component: &'static str,
    /// The versions applied now (empty when the database was up to date).
    pub applied: Vec<i64>,
    /// The database's version of the component afterwards.
    pub version: i64,
}

/// `IF NOT EXISTS`: created under the lock on Postgres, so two first starts do not race on it.
fn create_table() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
            component TEXT NOT NULL,
            version BIGINT NOT NULL,
            name TEXT NOT NULL,
            checksum TEXT NOT NULL,
            applied_at BIGINT NOT NULL,
            PRIMARY KEY (component, version)
        )"
    )
}

/// Applies the pending migrations of one component, after checking the applied ones (see the
/// module docs). Everything, including the record rows, commits in one transaction.
pub async fn run(
    pool: &AnyPool,
    backend: Backend,
    migrations: &Migrations,
) -> Result<MigrationReport, StoreError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(StoreError::query("acquiring a connection for migrations"))?;
    let mut tx = conn
        .begin()
        .await
        .map_err(StoreError::query("beginning migrations"))?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(DDL_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query("taking the ddl lock"))?;
    }
    sqlx::query(&create_table())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query("creating the migrations table"))?;
    let recorded = applied_on(&mut tx, Some(migrations.component)).await?;
    let current = check(migrations, &recorded)?;
    let mut applied = Vec::new();
    for migration in &migrations.migrations[usize::try_from(current).unwrap_or(0)..] {
        let fail = |source| StoreError::Migration {
            component: migrations.component,
            version: migration.version,
            name: migration.name,
            source,
        };
        if backend == Backend::Sqlite {
            add_missing_columns(&mut tx, migration.sqlite_added_columns)
                .await
                .map_err(fail)?;
        }
        // A plain string without arguments runs as one script (the simple query protocol on
        // Postgres), so a file may hold several statements and a function body.
        (&mut *tx).execute(migration.sql).await.map_err(fail)?;
        sqlx::query(&format!(
            "INSERT INTO {MIGRATIONS_TABLE} (component, version, name, checksum, applied_at) \
             VALUES ($1, $2, $3, $4, $5)"
        ))
        .bind(migrations.component)
        .bind(migration.version)
        .bind(migration.name)
        .bind(migration.checksum())
        .bind(now_micros())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query("recording a migration"))?;
        tracing::info!(
            component = migrations.component,
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        applied.push(migration.version);
    }
    tx.commit()
        .await
        .map_err(StoreError::query("committing migrations"))?;
    Ok(MigrationReport {
        component: migrations.component,
        applied,
        version: migrations.latest().max(current),
    })
}

/// The recorded migrations (of one component, or all), by component and version.
pub async fn applied(
    pool: &AnyPool,
    component: Option<&str>,
) -> Result<Vec<AppliedMigration>, StoreError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(StoreError::query("acquiring a connection"))?;
    applied_on(&mut conn, component).await
}

async fn applied_on(
    conn: &mut AnyConnection,
    component: Option<&str>,
) -> Result<Vec<AppliedMigration>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT component, version, name, checksum, applied_at FROM {MIGRATIONS_TABLE} \
         WHERE ($1 = '' OR component = $1) ORDER BY component, version"
    ))
    .bind(component.unwrap_or_default())
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::query("reading the applied migrations"))?;
    rows.iter()
        .map(|row| {
            Ok(AppliedMigration {
                component: row.try_get(0)?,
                version: row.try_get(1)?,
                name: row.try_get(2)?,
                checksum: row.try_get(3)?,
                applied_at: row.try_get(4)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::query("reading the applied migrations"))
}

/// The database's version of the component, once the recorded migrations agree with the
/// binary's: every recorded one known and unchanged.
fn check(migrations: &Migrations, recorded: &[AppliedMigration]) -> Result<i64, StoreError> {
    let database = recorded.iter().map(|a| a.version).max().unwrap_or(0);
    if database > migrations.latest() {
        return Err(StoreError::SchemaNewer {
            component: migrations.component,
            database,
            binary: migrations.latest(),
        });
    }
    for applied in recorded {
        let Some(ours) = migrations
            .migrations
            .iter()
            .find(|m| m.version == applied.version)
        else {
            continue;
        };
        let expected = ours.checksum();
        if applied.checksum != expected {
            return Err(StoreError::MigrationChecksum {
                component: migrations.component,
                version: ours.version,
                name: ours.name,
                recorded: applied.checksum.clone(),
                expected,
            });
        }
    }
    // Versions are applied in order in one transaction, so the recorded ones are 1..=database.
    Ok(database)
}

/// SQLite: adds the listed columns its tables lack (tables that do not exist are left to the
/// migration's `CREATE TABLE`).
async fn add_missing_columns(
    conn: &mut AnyConnection,
    columns: &[AddedColumn],
) -> Result<(), sqlx::Error> {
    for added in columns {
        let present: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT name FROM pragma_table_info('{}')",
            added.table
        ))
        .fetch_all(&mut *conn)
        .await?;
        if present.is_empty() || present.iter().any(|p| p == added.column) {
            continue;
        }
        sqlx::query(&format!(
            "ALTER TABLE {} ADD COLUMN {} {}",
            added.table, added.column, added.definition
        ))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: Migrations = Migrations::new(
        "t",
        &[
            Migration::new(1, "baseline", "CREATE TABLE a (x TEXT)"),
            Migration::new(2, "more", "CREATE TABLE b (x TEXT)"),
        ],
    );

    fn recorded(version: i64, checksum: String) -> AppliedMigration {
        AppliedMigration {
            component: "t".into(),
            version,
            name: "x".into(),
            checksum,
            applied_at: 0,
        }
    }

    #[test]
    fn an_up_to_date_database_checks_clean() {
        let all: Vec<_> = TWO
            .migrations()
            .iter()
            .map(|m| recorded(m.version, m.checksum()))
            .collect();
        assert_eq!(check(&TWO, &all).unwrap(), 2);
        assert_eq!(check(&TWO, &all[..1]).unwrap(), 1);
        assert_eq!(check(&TWO, &[]).unwrap(), 0);
    }

    #[test]
    fn edited_and_newer_migrations_are_refused_with_what_to_do() {
        let err = check(&TWO, &[recorded(1, "0".repeat(64))]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(
            err,
            StoreError::MigrationChecksum { version: 1, .. }
        ));
        assert!(text.contains("t 0001_baseline"), "{text}");
        assert!(text.contains("new migration"), "{text}");
        let err = check(&TWO, &[recorded(3, String::new())]).unwrap_err();
        assert!(matches!(
            err,
            StoreError::SchemaNewer {
                database: 3,
                binary: 2,
                ..
            }
        ));
        assert!(err.to_string().contains("newer than this binary"), "{err}");
    }

    #[test]
    fn checksums_are_sha256_hex_of_the_text() {
        assert_eq!(
            Migration::new(1, "x", "").checksum(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
