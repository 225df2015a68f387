//! The store's own tables (inbox, positions, audit log with its append-only triggers, dead
//! letters), as versioned migrations in `crates/store/migrations/{postgres,sqlite}/`; see
//! [`crate::migrate`] for how they are applied and recorded.

use crate::Backend;
use crate::migrate::{AddedColumn, Migration, Migrations};

/// The component name of the store's migrations.
pub(crate) const COMPONENT: &str = "store";

/// Columns added to `audit_log` after its first release (nullable, so old rows keep their
/// hashes): the event's correlation id and the record's W3C trace id. A SQLite file from
/// before them gets them when the baseline adopts it.
const AUDIT_ADDED_COLUMNS: &[AddedColumn] = &[
    AddedColumn {
        table: "audit_log",
        column: "correlation_id",
        definition: "TEXT",
    },
    AddedColumn {
        table: "audit_log",
        column: "trace_id",
        definition: "TEXT",
    },
];

const POSTGRES: Migrations = Migrations::new(
    COMPONENT,
    &[
        Migration::new(
            1,
            "baseline",
            include_str!("../migrations/postgres/0001_baseline.sql"),
        ),
        Migration::new(
            2,
            "inbox_horizons",
            include_str!("../migrations/postgres/0002_inbox_horizons.sql"),
        ),
    ],
);

const SQLITE: Migrations = Migrations::new(
    COMPONENT,
    &[
        Migration::new(
            1,
            "baseline",
            include_str!("../migrations/sqlite/0001_baseline.sql"),
        )
        .adding_on_sqlite(AUDIT_ADDED_COLUMNS),
        Migration::new(
            2,
            "inbox_horizons",
            include_str!("../migrations/sqlite/0002_inbox_horizons.sql"),
        ),
    ],
);

/// The store's migrations for a backend.
pub(crate) fn migrations(backend: Backend) -> Migrations {
    match backend {
        Backend::Postgres => POSTGRES,
        Backend::Sqlite => SQLITE,
    }
}
