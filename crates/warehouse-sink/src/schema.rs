//! Idempotent DDL for the warehouse tables, generated from the catalogue in [`crate::table`].
//!
//! Placement (see [`crate::table_name`]): a `warehouse` schema on Postgres; `warehouse_`-prefixed
//! tables in the store's own file on SQLite. No foreign keys between facts: a payment may arrive
//! before its invoice, and each fact must land on its own. The primary key of every table is
//! its business key, the second wall (behind the inbox) against a duplicated row.

use ledgerflow_store::Backend;

use crate::table::{ColumnKind, PG_SCHEMA, Table, table_name};

/// The DDL, in order.
pub fn statements(backend: Backend) -> Vec<String> {
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
