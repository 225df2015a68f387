//! Persistence on SQLite or Postgres through `sqlx::any`.
//!
//! The SQL is written once for both backends: `$n` placeholders (SQLite accepts them), BIGINT
//! columns for numbers and for the soft-delete flag (0/1, so no boolean mapping differs), and
//! `ON CONFLICT` clauses both understand. Three tables:
//!
//! - `registry_schemas`: global id -> schema text, unique on the text's SHA-256. Rows are never
//!   deleted, so an id keeps meaning the same schema forever and the in-memory id cache never
//!   goes stale.
//! - `registry_subject_versions`: (subject, version) -> schema id, with a soft-delete flag.
//! - `registry_config`: compatibility level per subject; the global level is the row whose
//!   subject is the empty string (no subject can be empty: the route needs a path segment).

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

use crate::RegistryError;
use crate::error::redact_url;

/// The subject key of the global configuration row.
pub(crate) const GLOBAL: &str = "";

/// Creates the tables if they are missing; safe to run on every start.
const DDL: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS registry_schemas (
        id BIGINT PRIMARY KEY,
        fingerprint TEXT NOT NULL UNIQUE,
        schema_type TEXT NOT NULL,
        schema_text TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS registry_subject_versions (
        subject TEXT NOT NULL,
        version BIGINT NOT NULL,
        schema_id BIGINT NOT NULL REFERENCES registry_schemas (id),
        deleted BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (subject, version)
    )",
    "CREATE INDEX IF NOT EXISTS registry_subject_versions_by_schema
        ON registry_subject_versions (schema_id)",
    "CREATE TABLE IF NOT EXISTS registry_config (
        subject TEXT PRIMARY KEY,
        compatibility TEXT NOT NULL
    )",
];

/// How often an insert of a new schema is retried when another registry process took the id
/// this one computed (only possible with several processes on one Postgres database).
const ID_ATTEMPTS: u32 = 5;

/// One version of a subject, joined with its schema text.
#[derive(Debug, Clone)]
pub(crate) struct VersionRow {
    pub(crate) version: i64,
    pub(crate) schema_id: i64,
    pub(crate) deleted: bool,
    pub(crate) text: String,
}

/// The database behind the registry.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    pool: AnyPool,
}

impl Store {
    /// Connects to `url` (`sqlite:` or `postgres:`) and creates the tables.
    pub(crate) async fn open(url: &str) -> Result<Self, RegistryError> {
        let is_sqlite = url.starts_with("sqlite:");
        if !is_sqlite && !url.starts_with("postgres:") && !url.starts_with("postgresql:") {
            return Err(RegistryError::UnsupportedDatabaseUrl {
                url: redact_url(url),
            });
        }
        install_default_drivers();
        // A file path without an explicit mode is created when missing, like every other
        // embedded store: `sqlite://registry.db` just works.
        let owned;
        let url = if is_sqlite && !url.contains("mode=") && !url.contains("memory") {
            let sep = if url.contains('?') { '&' } else { '?' };
            owned = format!("{url}{sep}mode=rwc");
            owned.as_str()
        } else {
            url
        };
        let mut options = AnyPoolOptions::new().max_connections(8);
        if is_sqlite && url.contains("memory") {
            // Every SQLite connection to `:memory:` is its own database: keep exactly one, for
            // ever.
            options = options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = options
            .connect(url)
            .await
            .map_err(|source| RegistryError::Connect {
                url: redact_url(url),
                source,
            })?;
        for statement in DDL {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .map_err(|source| RegistryError::Migrate { source })?;
        }
        Ok(Self { pool })
    }

    /// Every version of `subject`, soft-deleted ones included, oldest first.
    pub(crate) async fn subject_history(
        &self,
        subject: &str,
    ) -> Result<Vec<VersionRow>, RegistryError> {
        let rows = sqlx::query(
            "SELECT v.version, v.schema_id, v.deleted, s.schema_text
             FROM registry_subject_versions v
             JOIN registry_schemas s ON s.id = v.schema_id
             WHERE v.subject = $1
             ORDER BY v.version",
        )
        .bind(subject)
        .fetch_all(&self.pool)
        .await
        .map_err(RegistryError::store("reading a subject's versions"))?;
        rows.iter()
            .map(|row| {
                Ok(VersionRow {
                    version: row.try_get(0)?,
                    schema_id: row.try_get(1)?,
                    deleted: row.try_get::<i64, _>(2)? != 0,
                    text: row.try_get(3)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(RegistryError::store("decoding a subject's versions"))
    }

    /// Subject names, sorted; with `include_deleted`, also subjects whose versions are all soft
    /// deleted.
    pub(crate) async fn subjects(
        &self,
        include_deleted: bool,
    ) -> Result<Vec<String>, RegistryError> {
        let sql = if include_deleted {
            "SELECT DISTINCT subject FROM registry_subject_versions ORDER BY subject"
        } else {
            "SELECT DISTINCT subject FROM registry_subject_versions WHERE deleted = 0
             ORDER BY subject"
        };
        sqlx::query_scalar(sql)
            .fetch_all(&self.pool)
            .await
            .map_err(RegistryError::store("listing subjects"))
    }

    /// The text of schema `id`.
    pub(crate) async fn schema_text(&self, id: i64) -> Result<Option<String>, RegistryError> {
        sqlx::query_scalar("SELECT schema_text FROM registry_schemas WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(RegistryError::store("reading a schema by id"))
    }

    /// The id of the schema with this fingerprint, if it was ever registered.
    pub(crate) async fn schema_id(&self, fingerprint: &str) -> Result<Option<i64>, RegistryError> {
        sqlx::query_scalar("SELECT id FROM registry_schemas WHERE fingerprint = $1")
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await
            .map_err(RegistryError::store("looking up a schema fingerprint"))
    }

    /// (subject, version, deleted) for every version that uses schema `id`.
    pub(crate) async fn schema_usages(
        &self,
        id: i64,
    ) -> Result<Vec<(String, i64, bool)>, RegistryError> {
        let rows = sqlx::query(
            "SELECT subject, version, deleted FROM registry_subject_versions
             WHERE schema_id = $1 ORDER BY subject, version",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(RegistryError::store("listing the versions of a schema"))?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get::<i64, _>(2)? != 0,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(RegistryError::store("decoding the versions of a schema"))
    }

    /// Adds `version` to `subject` for the schema with this fingerprint, inserting the schema
    /// under the next global id if it is new. Returns the schema id.
    ///
    /// The caller serializes writes within this process. Across processes the fingerprint's
    /// unique constraint decides: an insert that loses a race does nothing and the id is read
    /// back; an insert that computed an id another process just took is retried.
    pub(crate) async fn insert_version(
        &self,
        subject: &str,
        version: i64,
        fingerprint: &str,
        text: &str,
    ) -> Result<i64, RegistryError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(RegistryError::store("starting a registration"))?;
        let mut attempts = 0;
        let id = loop {
            let existing: Option<i64> =
                sqlx::query_scalar("SELECT id FROM registry_schemas WHERE fingerprint = $1")
                    .bind(fingerprint)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(RegistryError::store("looking up a schema fingerprint"))?;
            if let Some(id) = existing {
                break id;
            }
            if attempts == ID_ATTEMPTS {
                return Err(RegistryError::IdAllocation { attempts });
            }
            attempts += 1;
            // Ids start at 1 and only grow: max + 1, computed by the database in the statement.
            sqlx::query(
                "INSERT INTO registry_schemas (id, fingerprint, schema_type, schema_text)
                 VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM registry_schemas), $1, 'AVRO', $2)
                 ON CONFLICT DO NOTHING",
            )
            .bind(fingerprint)
            .bind(text)
            .execute(&mut *tx)
            .await
            .map_err(RegistryError::store("inserting a schema"))?;
        };
        sqlx::query(
            "INSERT INTO registry_subject_versions (subject, version, schema_id, deleted)
             VALUES ($1, $2, $3, 0)",
        )
        .bind(subject)
        .bind(version)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(RegistryError::store("inserting a subject version"))?;
        tx.commit()
            .await
            .map_err(RegistryError::store("committing a registration"))?;
        Ok(id)
    }

    /// Marks versions of `subject` as soft deleted.
    pub(crate) async fn soft_delete(
        &self,
        subject: &str,
        versions: &[i64],
    ) -> Result<(), RegistryError> {
        self.for_versions(
            "UPDATE registry_subject_versions SET deleted = 1 WHERE subject = $1 AND version = $2",
            subject,
            versions,
            "soft deleting versions",
        )
        .await
    }

    /// Removes versions of `subject` for good (the schemas themselves stay).
    pub(crate) async fn hard_delete(
        &self,
        subject: &str,
        versions: &[i64],
    ) -> Result<(), RegistryError> {
        self.for_versions(
            "DELETE FROM registry_subject_versions WHERE subject = $1 AND version = $2",
            subject,
            versions,
            "permanently deleting versions",
        )
        .await
    }

    async fn for_versions(
        &self,
        sql: &'static str,
        subject: &str,
        versions: &[i64],
        action: &'static str,
    ) -> Result<(), RegistryError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(RegistryError::store(action))?;
        for version in versions {
            sqlx::query(sql)
                .bind(subject)
                .bind(*version)
                .execute(&mut *tx)
                .await
                .map_err(RegistryError::store(action))?;
        }
        tx.commit().await.map_err(RegistryError::store(action))
    }

    /// The compatibility level stored for `subject` ([`GLOBAL`] for the global one).
    pub(crate) async fn config(&self, subject: &str) -> Result<Option<String>, RegistryError> {
        sqlx::query_scalar("SELECT compatibility FROM registry_config WHERE subject = $1")
            .bind(subject)
            .fetch_optional(&self.pool)
            .await
            .map_err(RegistryError::store("reading a compatibility level"))
    }

    /// Stores the compatibility level for `subject` ([`GLOBAL`] for the global one).
    pub(crate) async fn set_config(&self, subject: &str, level: &str) -> Result<(), RegistryError> {
        sqlx::query(
            "INSERT INTO registry_config (subject, compatibility) VALUES ($1, $2)
             ON CONFLICT (subject) DO UPDATE SET compatibility = excluded.compatibility",
        )
        .bind(subject)
        .bind(level)
        .execute(&self.pool)
        .await
        .map_err(RegistryError::store("writing a compatibility level"))?;
        Ok(())
    }

    /// Forgets the compatibility level of `subject`.
    pub(crate) async fn delete_config(&self, subject: &str) -> Result<(), RegistryError> {
        sqlx::query("DELETE FROM registry_config WHERE subject = $1")
            .bind(subject)
            .execute(&self.pool)
            .await
            .map_err(RegistryError::store("deleting a compatibility level"))?;
        Ok(())
    }
}
