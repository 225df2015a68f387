//! The warehouse tables as versioned migrations in
//! `crates/warehouse-sink/migrations/{postgres,sqlite}/` (component `warehouse`; see
//! `ledgerflow_store::migrate`). The tables are described by the catalogue in [`crate::table`]
//! (the writer and the exports read it); a unit test pins the baseline to what the catalogue
//! generates, so the two cannot drift apart unnoticed. A later change to a table is a new
//! migration plus the catalogue change, and that test then compares the catalogue with the
//! schema after every migration.
//!
//! Placement (see [`crate::table_name`]): a `warehouse` schema on Postgres; `warehouse_`-prefixed
//! tables in the store's own file on SQLite. No foreign keys between facts: a payment may arrive
//! before its invoice, and each fact must land on its own. The primary key of every table is
//! its business key, the second wall (behind the inbox) against a duplicated row.

use ledgerflow_store::{Backend, Migration, Migrations};

/// The component name of these migrations.
pub const COMPONENT: &str = "warehouse";

const POSTGRES: Migrations = Migrations::new(
    COMPONENT,
    &[Migration::new(
        1,
        "baseline",
        include_str!("../migrations/postgres/0001_baseline.sql"),
    )],
);

const SQLITE: Migrations = Migrations::new(
    COMPONENT,
    &[Migration::new(
        1,
        "baseline",
        include_str!("../migrations/sqlite/0001_baseline.sql"),
    )],
);

/// The warehouse's migrations for a backend.
pub fn migrations(backend: Backend) -> Migrations {
    match backend {
        Backend::Postgres => POSTGRES,
        Backend::Sqlite => SQLITE,
    }
}

/// The DDL the catalogue describes, in order (what the baseline was generated from).
#[cfg(test)]
fn statements(backend: Backend) -> Vec<String> {
    use crate::table::{ColumnKind, PG_SCHEMA, Table, table_name};

    let mut out = Vec::new();
    if backend == Backend::Postgres {
        out.push(format!("CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}"));
    }
    for table in Table::ALL {
        let name = table_name(backend, table);
        let mut defs: Vec<String> = table
            .columns()
            .iter()
            .map(|c| {
                let ty = match c.kind {
                    ColumnKind::Text => "TEXT",
                    ColumnKind::Int | ColumnKind::Timestamp | ColumnKind::Flag => "BIGINT",
                };
                let null = if c.nullable { "" } else { " NOT NULL" };
                format!("{} {ty}{null}", c.name)
            })
            .collect();
        defs.push(format!("PRIMARY KEY ({})", table.key().join(", ")));
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {name} (\n    {}\n)",
            defs.join(",\n    ")
        ));
        for (suffix, columns) in table.indexes() {
            // Index names live in the table's schema on Postgres; the flat name works for both.
            let index = format!("{PG_SCHEMA}_{}_{suffix}", table.as_str());
            out.push(format!(
                "CREATE INDEX IF NOT EXISTS {index} ON {name} ({columns})"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQL without comments, whitespace runs collapsed, statements split.
    fn normalized(sql: &str) -> Vec<String> {
        let text: Vec<&str> = sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect();
        text.join("\n")
            .split(';')
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|s| !s.is_empty())
            .collect()
    }

    #[test]
    fn the_baseline_is_what_the_catalogue_describes() {
        for backend in [Backend::Postgres, Backend::Sqlite] {
            let generated: Vec<String> = statements(backend)
                .iter()
                .flat_map(|s| normalized(s))
                .collect();
            let file = normalized(migrations(backend).migrations()[0].sql);
            assert_eq!(file, generated, "{backend:?}");
        }
    }

    #[test]
    fn ddl_is_idempotent_and_places_tables_per_backend() {
        let pg = statements(Backend::Postgres);
        assert_eq!(pg[0], "CREATE SCHEMA IF NOT EXISTS warehouse");
        assert!(
            pg.iter()
                .any(|s| s.starts_with("CREATE TABLE IF NOT EXISTS warehouse.fact_invoice ("))
        );
        let sqlite = statements(Backend::Sqlite);
        assert!(sqlite.iter().all(|s| !s.contains("SCHEMA")));
        assert!(
            sqlite
                .iter()
                .any(|s| s.starts_with("CREATE TABLE IF NOT EXISTS warehouse_fact_invoice ("))
        );
        for s in pg.iter().chain(&sqlite) {
            assert!(s.contains("IF NOT EXISTS"), "{s}");
            for banned in ["REFERENCES", "REAL", "DOUBLE", "FLOAT", "NUMERIC"] {
                assert!(!s.contains(banned), "{banned} in {s}");
            }
        }
        let payments = sqlite
            .iter()
            .find(|s| s.contains("TABLE IF NOT EXISTS warehouse_fact_payment ("))
            .unwrap();
        assert!(payments.contains("PRIMARY KEY (tenant_id, payment_id)"));
        assert!(payments.contains("amount_minor BIGINT NOT NULL"));
        assert!(payments.contains("settlement_currency TEXT,"));
    }
}
