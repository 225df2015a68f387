//! The warehouse rows one event made, for `ledgerflow lineage`: per table, the business key of
//! every row whose `event_id` is the event's. Reads only; the tables must exist (the caller
//! applies the schema). With the tenant the lookup uses the primary key's tenant prefix.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{AnyPool, Row};

use crate::table::{Table, table_name};
use crate::{ColumnKind, WarehouseError};

/// One warehouse row: its table and business key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WarehouseRowRef {
    /// Logical table name (`fact_invoice`).
    pub table: String,
    /// The business key, column to value (as text).
    pub key: BTreeMap<String, String>,
}

/// warehouse-sink's part of an event's lineage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WarehouseLineage {
    /// Rows by table (catalogue order), then key.
    pub rows: Vec<WarehouseRowRef>,
}

/// The rows the event `event_id` (of `tenant`, when known) made in the warehouse tables.
pub async fn for_event(
    pool: &AnyPool,
    backend: ledgerflow_store::Backend,
    tenant: Option<&str>,
    event_id: &str,
) -> Result<WarehouseLineage, WarehouseError> {
    let mut out = WarehouseLineage::default();
    for table in Table::ALL {
        if !table.columns().iter().any(|c| c.name == "event_id") {
            continue;
        }
        let key = table.key();
        let select: Vec<String> = key
            .iter()
            .map(|k| {
                let text = table
                    .columns()
                    .iter()
                    .any(|c| c.name == *k && c.kind == ColumnKind::Text);
                if text {
                    (*k).to_owned()
                } else {
                    format!("CAST({k} AS TEXT) AS {k}")
                }
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE ($1 = '' OR tenant_id = $1) AND event_id = $2 ORDER BY {}",
            select.join(", "),
            table_name(backend, table),
            key.join(", ")
        );
        let rows = sqlx::query(&sql)
            .bind(tenant.unwrap_or(""))
            .bind(event_id)
            .fetch_all(pool)
            .await
            .map_err(WarehouseError::db("reading an event's warehouse rows"))?;
        for r in &rows {
            let mut pairs = BTreeMap::new();
            for (i, k) in key.iter().enumerate() {
                let value: Option<String> = r
                    .try_get(i)
                    .map_err(|e| WarehouseError::Corrupt(format!("{table} key {k}: {e}")))?;
                pairs.insert((*k).to_owned(), value.unwrap_or_default());
            }
            out.rows.push(WarehouseRowRef {
                table: table.as_str().to_owned(),
                key: pairs,
            });
        }
    }
    Ok(out)
}
