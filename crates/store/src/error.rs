/// Store failures. Database errors are retryable unless they say the data itself is wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not a `sqlite:` or `postgres:` URL.
    #[error("unsupported database url {url}: use sqlite://FILE or postgres://...")]
    UnsupportedUrl {
        /// Redacted URL.
        url: String,
    },
    /// Could not connect.
    #[error("cannot connect to {url}")]
    Connect {
        /// Redacted URL.
        url: String,
        /// Driver error.
        #[source]
        source: sqlx::Error,
    },
    /// A statement failed.
    #[error("database error while {action}")]
    Query {
        /// What we were doing.
        action: &'static str,
        /// Driver error.
        #[source]
        source: sqlx::Error,
    },
    /// An erased effect did not have the consumer's effect type (a wiring bug).
    #[error("effect handed to consumer {consumer} has the wrong type")]
    EffectType {
        /// Consumer name.
        consumer: &'static str,
    },
    /// A consistency check inside the transaction failed; the batch is rolled back.
    #[error("invariant violated: {0}")]
    Invariant(String),
    /// An applied migration's text differs from the one this binary carries.
    #[error(
        "migration {component} {version:04}_{name} was applied to this database with checksum \
         {recorded}, but this binary's copy has {expected}: a released migration was edited; \
         restore the released file and put the change in a new migration (never edit an applied one)"
    )]
    MigrationChecksum {
        /// The component (crate) owning the migration.
        component: &'static str,
        /// Its version.
        version: i64,
        /// Its name.
        name: &'static str,
        /// SHA-256 recorded when it was applied.
        recorded: String,
        /// SHA-256 of the binary's text.
        expected: String,
    },
    /// The database was migrated by a newer binary than this one.
    #[error(
        "the database's {component} schema is at version {database}, newer than this binary \
         knows ({binary}): a newer ledgerflow migrated it; run that release or a newer one, or \
         restore the backup taken before the upgrade to go back"
    )]
    SchemaNewer {
        /// The component (crate) owning the tables.
        component: &'static str,
        /// The highest version recorded in the database.
        database: i64,
        /// The highest version this binary has.
        binary: i64,
    },
    /// A migration's SQL failed; its transaction is rolled back, nothing of it remains.
    #[error("applying migration {component} {version:04}_{name}")]
    Migration {
        /// The component (crate) owning the migration.
        component: &'static str,
        /// Its version.
        version: i64,
        /// Its name.
        name: &'static str,
        /// Driver error.
        #[source]
        source: sqlx::Error,
    },
    /// Stored data could not be read back (corrupt row, unknown decision).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Adapter for `map_err`: `.map_err(StoreError::query("inserting the inbox"))`.
    pub fn query(action: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Query { action, source }
    }

    /// Whether retrying the same batch later can succeed (connection lost, database restarting,
    /// serialization failure). Invariant violations and corrupt data are not retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Query { .. })
    }
}
