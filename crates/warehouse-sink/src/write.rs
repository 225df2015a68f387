//! The set-based writer: a batch's rows into the warehouse tables, inside the caller's (the
//! store's batch) transaction. A handful of statements per batch, whatever its size:
//!
//! 1. `dim_tenant`: one multi-row upsert, one row per tenant of the batch (the last mapping of
//!    the batch wins; a row is only rewritten when a value changed).
//! 2. Postgres only: a transaction-scoped advisory lock per tenant with customer versions in the
//!    batch (sorted), so two transactions never recompute one customer's timeline at once.
//! 3. Facts and customer versions: one multi-row `INSERT ... ON CONFLICT (business key) DO
//!    NOTHING` per table. The invoice insert returns the invoices it created; only their lines
//!    are inserted, so an invoice re-sent under a new event id can never add lines to the
//!    stored one.
//! 4. `dim_customer` timeline: one `UPDATE` recomputes `valid_to` and `is_current` of every
//!    version of the customers the batch touched, ordered by business time (`valid_from`, then
//!    `event_id` for ties). An update older than the stored one therefore becomes a closed
//!    historical version, wherever it arrives.
//!
//! Rows go through [`ledgerflow_store::Rows`]: on Postgres one fixed statement per table over
//! `UNNEST` of one array per column, on SQLite `VALUES` lists chunked under its bind limit.
//! Rows are sorted by key first so concurrent writers take key locks in the same order.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use ledgerflow_core::Envelope;
use ledgerflow_store::{Backend, PushCell, Rows as SetRows, StoreError, lock_tenants};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::Value;
use crate::effect::{Fact, TenantRow, WarehouseEffect};
use crate::table::{ColumnKind, Table, table_name};

/// Advisory lock class of the per-tenant customer-timeline lock (`pg_advisory_xact_lock(int,
/// int)`), apart from the store's single-`bigint` locks and the receivables' class.
const TENANT_LOCK_CLASS: i32 = 0x5748; // "WH"

/// Rows of one batch, per table, in batch order.
#[derive(Debug, Default)]
struct Rows {
    tenants: BTreeMap<String, Vec<Value>>,
    customers: Vec<Vec<Value>>,
    subscriptions: Vec<Vec<Value>>,
    usage: Vec<Vec<Value>>,
    invoices: Vec<Vec<Value>>,
    /// Lines keyed by (tenant, invoice, event) of their invoice.
    lines: Vec<((String, String, String), Vec<Value>)>,
    payments: Vec<Vec<Value>>,
    credit_memos: Vec<Vec<Value>>,
}

impl Rows {
    fn collect(effects: &[(&Envelope, WarehouseEffect)]) -> Self {
        let mut rows = Self::default();
        for (_, effect) in effects {
            let TenantRow { tenant_id, .. } = &effect.tenant;
            rows.tenants.insert(tenant_id.clone(), effect.tenant.row());
            match &effect.fact {
                Fact::Customer(c) => rows.customers.push(c.row()),
                Fact::Subscription(s) => rows.subscriptions.push(s.row()),
                Fact::Usage(u) => rows.usage.push(u.row()),
                Fact::Invoice(i) => {
                    rows.invoices.push(i.row());
                    let key = (
                        i.tenant_id.clone(),
                        i.invoice_id.clone(),
                        i.event_id.clone(),
                    );
                    rows.lines
                        .extend(i.line_rows().map(|line| (key.clone(), line)));
                }
                Fact::Payment(p) => rows.payments.push(p.row()),
                Fact::CreditMemo(m) => rows.credit_memos.push(m.row()),
            }
        }
        rows
    }
}

/// Writes a batch's effects. See the module docs.
pub(crate) async fn write(
    conn: &mut AnyConnection,
    backend: Backend,
    effects: &[(&Envelope, WarehouseEffect)],
) -> Result<(), StoreError> {
    if effects.is_empty() {
        return Ok(());
    }
    let rows = Rows::collect(effects);

    let tenants: Vec<Vec<Value>> = rows.tenants.into_values().collect();
    let name = table_name(backend, Table::DimTenant);
    insert(
        conn,
        backend,
        Table::DimTenant,
        tenants,
        &format!(
            "ON CONFLICT (tenant_id) DO UPDATE SET legal_entity = excluded.legal_entity, \
             functional_currency = excluded.functional_currency \
             WHERE {name}.legal_entity <> excluded.legal_entity \
             OR {name}.functional_currency <> excluded.functional_currency"
        ),
        "upserting dim_tenant",
    )
    .await?;

    // Customers whose timeline must be recomputed, sorted.
    let touched: BTreeSet<(String, String)> = rows
        .customers
        .iter()
        .filter_map(|r| Some((r[0].as_text()?.to_owned(), r[1].as_text()?.to_owned())))
        .collect();
    let tenants: BTreeSet<&str> = touched.iter().map(|(t, _)| t.as_str()).collect();
    lock_tenants(
        conn,
        backend,
        TENANT_LOCK_CLASS,
        tenants,
        "locking the batch's tenants' customer timelines",
    )
    .await?;

    let nothing = "ON CONFLICT DO NOTHING";
    insert(
        conn,
        backend,
        Table::DimCustomer,
        rows.customers,
        nothing,
        "inserting dim_customer versions",
    )
    .await?;
    insert(
        conn,
        backend,
        Table::FactSubscriptionEvent,
        rows.subscriptions,
        nothing,
        "inserting fact_subscription_event",
    )
    .await?;
    insert(
        conn,
        backend,
        Table::FactUsage,
        rows.usage,
        nothing,
        "inserting fact_usage",
    )
    .await?;
    let created = insert(
        conn,
        backend,
        Table::FactInvoice,
        rows.invoices,
        "ON CONFLICT DO NOTHING RETURNING tenant_id, invoice_id, event_id",
        "inserting fact_invoice",
    )
    .await?;
    let mut created_invoices: HashSet<(String, String, String)> = HashSet::new();
    for row in created {
        let get = |i: usize| {
            row.try_get::<String, _>(i)
                .map_err(|e| StoreError::Corrupt(format!("fact_invoice returning: {e}")))
        };
        created_invoices.insert((get(0)?, get(1)?, get(2)?));
    }
    let lines: Vec<Vec<Value>> = rows
        .lines
        .into_iter()
        .filter(|(key, _)| created_invoices.contains(key))
        .map(|(_, line)| line)
        .collect();
    insert(
        conn,
        backend,
        Table::FactInvoiceLine,
        lines,
        nothing,
        "inserting fact_invoice_line",
    )
    .await?;
    insert(
        conn,
        backend,
        Table::FactPayment,
        rows.payments,
        nothing,
        "inserting fact_payment",
    )
    .await?;
    insert(
        conn,
        backend,
        Table::FactCreditMemo,
        rows.credit_memos,
        nothing,
        "inserting fact_credit_memo",
    )
    .await?;

    recompute_timelines(conn, backend, &touched).await?;
    tracing::debug!(
        events = effects.len(),
        customers = touched.len(),
        "warehouse rows written"
    );
    Ok(())
}

/// Pushes one value as the column's SQL type (typed NULLs included, which Postgres needs).
pub(crate) fn bind<V: PushCell>(
    values: &mut V,
    kind: ColumnKind,
    value: &Value,
) -> Result<(), String> {
    match (kind, value) {
        (ColumnKind::Text, Value::Text(v)) => values.push_cell(Some(v.as_str())),
        (ColumnKind::Text, Value::Null) => values.push_cell(None::<String>),
        (_, Value::Int(v)) if kind != ColumnKind::Text => values.push_cell(Some(*v)),
        (_, Value::Null) => values.push_cell(None::<i64>),
        (kind, value) => return Err(format!("{value:?} does not fit a {kind:?} column")),
    };
    Ok(())
}

/// `INSERT INTO table (columns) VALUES ... suffix` in chunks, rows stably sorted by key.
/// Returns what a `RETURNING` suffix returned.
async fn insert(
    conn: &mut AnyConnection,
    backend: Backend,
    table: Table,
    mut rows: Vec<Vec<Value>>,
    suffix: &str,
    action: &'static str,
) -> Result<Vec<AnyRow>, StoreError> {
    let mut returned = Vec::new();
    if rows.is_empty() {
        return Ok(returned);
    }
    let columns = table.columns();
    let key_len = table.key().len();
    // Stable: among rows with the same key the batch order is kept, so the first one wins.
    rows.sort_by(|a, b| a[..key_len].cmp(&b[..key_len]));
    let prefix = format!(
        "INSERT INTO {} ({})",
        table_name(backend, table),
        columns
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let types: Vec<&'static str> = columns
        .iter()
        .map(|c| match c.kind {
            ColumnKind::Text => "text",
            ColumnKind::Int | ColumnKind::Timestamp | ColumnKind::Flag => "bigint",
        })
        .collect();
    let mut values = SetRows::new(backend, &types);
    for row in &rows {
        if row.len() != columns.len() {
            return Err(StoreError::Invariant(format!(
                "{table} row has {} values for {} columns",
                row.len(),
                columns.len()
            )));
        }
        for (column, value) in columns.iter().zip(row) {
            bind(&mut values, column.kind, value)
                .map_err(|e| StoreError::Invariant(format!("{table}.{}: {e}", column.name)))?;
        }
    }
    if suffix.contains("RETURNING") {
        returned = values.fetch_all(conn, action, &prefix, suffix).await?;
    } else {
        values.execute(conn, action, &prefix, suffix).await?;
    }
    Ok(returned)
}

/// Recomputes `valid_to` and `is_current` for every version of the given customers.
///
/// A version's successor is the version with the next (`valid_from`, `event_id`); its
/// `valid_to` is the successor's `valid_from` (NULL when there is none), and exactly the
/// version without a successor is current. Recomputing from all stored versions, instead of
/// patching the newest one, is what makes an out-of-order update land in the right place.
async fn recompute_timelines(
    conn: &mut AnyConnection,
    backend: Backend,
    customers: &BTreeSet<(String, String)>,
) -> Result<(), StoreError> {
    if customers.is_empty() {
        return Ok(());
    }
    let name = table_name(backend, Table::DimCustomer);
    let later = format!(
        "FROM {name} AS n WHERE n.tenant_id = {name}.tenant_id \
         AND n.customer_id = {name}.customer_id \
         AND (n.valid_from, n.event_id) > ({name}.valid_from, {name}.event_id)"
    );
    let prefix = format!(
        "UPDATE {name} SET valid_to = (SELECT MIN(n.valid_from) {later}), \
         is_current = CASE WHEN EXISTS (SELECT 1 {later}) THEN 0 ELSE 1 END \
         WHERE (tenant_id, customer_id) IN ("
    );
    let mut keys = SetRows::new(backend, &["text", "text"]);
    for (tenant, customer) in customers {
        keys.push(tenant).push(customer);
    }
    keys.execute(conn, "recomputing customer timelines", &prefix, ")")
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_refuse_values_of_the_wrong_kind() {
        let mut values = ledgerflow_store::Values::new(1);
        assert!(bind(&mut values, ColumnKind::Text, &Value::Int(1)).is_err());
        assert!(bind(&mut values, ColumnKind::Int, &Value::from("x")).is_err());
        assert!(bind(&mut values, ColumnKind::Timestamp, &Value::Null).is_ok());
        assert!(bind(&mut values, ColumnKind::Flag, &Value::Int(1)).is_ok());
        assert_eq!(values.rows(), 2);
    }
}
