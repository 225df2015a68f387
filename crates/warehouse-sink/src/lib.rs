//! ledgerflow-warehouse-sink: the `warehouse` consumer.
//!
//! Billing events become a star schema for analysts, one row per business fact, never
//! duplicated:
//!
//! | table | grain | business key |
//! | --- | --- | --- |
//! | `dim_tenant` | tenant (configuration seen at mapping time) | `tenant_id` |
//! | `dim_customer` | customer version (SCD type 2) | `tenant_id, customer_id, valid_from, event_id` |
//! | `fact_subscription_event` | activation or cancellation | `tenant_id, event_id` |
//! | `fact_usage` | usage aggregate (quantity in exact micros) | `tenant_id, event_id` |
//! | `fact_invoice` | invoice | `tenant_id, invoice_id` |
//! | `fact_invoice_line` | charge or tax line | `tenant_id, invoice_id, line_no` |
//! | `fact_payment` | payment (carries `invoice_id`) | `tenant_id, payment_id` |
//! | `fact_credit_memo` | credit memo | `tenant_id, credit_memo_id` |
//!
//! Money is integer minor units plus a currency column; quantities are integer micros;
//! timestamps are microseconds since the Unix epoch (UTC). Nothing is a float.
//!
//! # Placement
//!
//! The tables live in the store's database, because the batch transaction that inserts into
//! the inbox must also insert the facts (effect-once). [`table_name`] is the one place that
//! names a table:
//!
//! - Postgres: schema `warehouse` (`CREATE SCHEMA IF NOT EXISTS warehouse`), tables
//!   `warehouse.fact_invoice`, ... Analysts get their own namespace and grants.
//! - SQLite: tables `warehouse_fact_invoice`, ... in the SAME database file as the store. An
//!   ATTACHed `warehouse.db` would look like the Postgres layout, but a transaction spanning
//!   ATTACHed files is not atomic in WAL mode (a crash can commit one file and not the other),
//!   which would break exactly-once between the inbox and the facts.
//!
//! # Exactly once, twice over
//!
//! The store's inbox hands [`Warehouse`] only events it has never applied. Behind it, every
//! insert is `ON CONFLICT (business key) DO NOTHING`, so a replayed event, or an invoice re-sent
//! under a new event id, still cannot add a row. There are no foreign keys between facts: a
//! payment that arrives before its invoice lands at once and joins on `invoice_id` later.
//!
//! # Customer history
//!
//! Each `customer_upserted` is a version valid from its business time (`occurred_at`). After
//! inserting, the writer recomputes `valid_to` and `is_current` of every version of each
//! touched customer from the stored versions, so an update older than the stored one becomes a
//! closed historical version instead of overwriting the current one.
//!
//! # Modules
//!
//! - [`mapping`]: the pure event -> rows mapping and the [`ledgerflow_store::ConsumerLogic`]
//!   implementation, over the row types of `effect` (which the writer, `write`, shares);
//! - [`schema`]: idempotent DDL for both backends;
//! - [`export`]: one table to CSV or Parquet for analysts (`ledgerflow warehouse export`).

mod effect;
mod error;
pub mod export;
pub mod lineage;
pub mod mapping;
pub mod schema;
mod table;
mod value;
mod write;

pub use effect::{
    CreditMemoFact, CustomerVersion, Fact, InvoiceFact, InvoiceLineFact, LineKind, PaymentFact,
    SubscriptionFact, TenantRow, UsageFact, WarehouseEffect,
};
pub use error::WarehouseError;
pub use export::{
    DEFAULT_PAGE_ROWS, ExportFormat, ExportOptions, ExportSummary, count_rows, export_table,
    parquet_schema, read_rows,
};
pub use mapping::{CONSUMER_NAME, Warehouse, map_event};
pub use table::{Column, ColumnKind, PG_SCHEMA, Table, table_name};
pub use value::Value;
