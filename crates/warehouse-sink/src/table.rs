//! The star schema as data: every table, its columns, business key and business-time column.
//!
//! The DDL ([`crate::schema`]), the writer ([`crate::write`]) and the export
//! ([`crate::export`]) are all driven by this catalogue, so a column added here is created,
//! written and exported in the same order everywhere.
//!
//! Only TEXT and BIGINT columns are stored (amounts in integer minor units, quantities in
//! micros, timestamps in microseconds since the Unix epoch, flags as 0/1), so one column type
//! serves both backends. The export gives timestamps and flags their logical types.

use std::fmt;
use std::str::FromStr;

use ledgerflow_store::Backend;

use crate::WarehouseError;

/// Postgres schema that holds the warehouse tables.
pub const PG_SCHEMA: &str = "warehouse";

/// How a column is stored and exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// UTF-8 text (`TEXT`; Parquet `BYTE_ARRAY (UTF8)`).
    Text,
    /// Exact integer: minor units, quantity micros, counts (`BIGINT`; Parquet `INT64`).
    Int,
    /// Microseconds since the Unix epoch, UTC (`BIGINT`; Parquet `INT64
    /// (TIMESTAMP(MICROS,true))`; CSV RFC 3339 with microseconds).
    Timestamp,
    /// A yes/no flag stored as 0/1 (`BIGINT`; Parquet `BOOLEAN`; CSV `true`/`false`).
    Flag,
}

/// One column of a warehouse table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: &'static str,
    /// Storage and export type.
    pub kind: ColumnKind,
    /// Whether the column may be NULL.
    pub nullable: bool,
}

const fn text(name: &'static str) -> Column {
    Column {
        name,
        kind: ColumnKind::Text,
        nullable: false,
    }
}

const fn text_opt(name: &'static str) -> Column {
    Column {
        name,
        kind: ColumnKind::Text,
        nullable: true,
    }
}

const fn int(name: &'static str) -> Column {
    Column {
        name,
        kind: ColumnKind::Int,
        nullable: false,
    }
}

const fn int_opt(name: &'static str) -> Column {
    Column {
        name,
        kind: ColumnKind::Int,
        nullable: true,
    }
}

const fn ts(name: &'static str) -> Column {
    Column {
        name,
        kind: ColumnKind::Timestamp,
        nullable: false,
    }
}

const fn ts_opt(name: &'static str) -> Column {
    Column {
        name,
        kind: ColumnKind::Timestamp,
        nullable: true,
    }
}

const fn flag(name: &'static str) -> Column {
    Column {
        name,
        kind: ColumnKind::Flag,
        nullable: false,
    }
}

/// A warehouse table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One row per tenant, from the tenant configuration seen at mapping time.
    DimTenant,
    /// Customer versions (slowly changing dimension, type 2) from `customer_upserted`.
    DimCustomer,
    /// `subscription_activated` and `subscription_canceled`, one row per event.
    FactSubscriptionEvent,
    /// `usage_aggregated`, one row per event.
    FactUsage,
    /// `invoice_finalized`, one row per invoice.
    FactInvoice,
    /// Charge and tax lines of an invoice.
    FactInvoiceLine,
    /// `payment_captured`, one row per payment.
    FactPayment,
    /// `credit_memo_issued`, one row per credit memo.
    FactCreditMemo,
}

const DIM_TENANT: &[Column] = &[
    text("tenant_id"),
    text("legal_entity"),
    text("functional_currency"),
];

const DIM_CUSTOMER: &[Column] = &[
    text("tenant_id"),
    text("customer_id"),
    ts("valid_from"),
    text("event_id"),
    text("name"),
    text_opt("email"),
    text("country"),
    text("currency"),
    text_opt("tax_id"),
    ts_opt("valid_to"),
    flag("is_current"),
];

const FACT_SUBSCRIPTION_EVENT: &[Column] = &[
    text("tenant_id"),
    text("event_id"),
    text("event_type"),
    text("subscription_id"),
    text("customer_id"),
    ts("effective_at"),
    text_opt("plan_id"),
    text_opt("product_family"),
    text_opt("billing_interval"),
    text_opt("currency"),
    int_opt("unit_amount_minor"),
    text_opt("cancel_reason"),
    ts("occurred_at"),
];

const FACT_USAGE: &[Column] = &[
    text("tenant_id"),
    text("event_id"),
    text("subscription_id"),
    text("customer_id"),
    text("meter"),
    int("quantity_micros"),
    ts("period_start"),
    ts("period_end"),
    ts("occurred_at"),
];

const FACT_INVOICE: &[Column] = &[
    text("tenant_id"),
    text("invoice_id"),
    text("invoice_number"),
    text("customer_id"),
    text_opt("subscription_id"),
    text("currency"),
    ts("issued_at"),
    ts("due_at"),
    int("subtotal_minor"),
    int("tax_minor"),
    int("total_minor"),
    int("line_count"),
    text_opt("purchase_order"),
    text("event_id"),
    ts("occurred_at"),
];

const FACT_INVOICE_LINE: &[Column] = &[
    text("tenant_id"),
    text("invoice_id"),
    int("line_no"),
    text("line_kind"),
    text_opt("line_id"),
    text_opt("description"),
    text_opt("product_family"),
    text_opt("jurisdiction"),
    int_opt("rate_bps"),
    int_opt("quantity_micros"),
    int_opt("unit_amount_minor"),
    int_opt("taxable_amount_minor"),
    int("amount_minor"),
    text("currency"),
    text("customer_id"),
    ts("issued_at"),
    text("event_id"),
];

const FACT_PAYMENT: &[Column] = &[
    text("tenant_id"),
    text("payment_id"),
    text("invoice_id"),
    text("customer_id"),
    text("currency"),
    int("amount_minor"),
    int("fee_minor"),
    int("net_minor"),
    text("method"),
    text("processor_reference"),
    text_opt("settlement_currency"),
    ts("captured_at"),
    text("event_id"),
    ts("occurred_at"),
];

const FACT_CREDIT_MEMO: &[Column] = &[
    text("tenant_id"),
    text("credit_memo_id"),
    text("credit_memo_number"),
    text("invoice_id"),
    text("customer_id"),
    text("currency"),
    text("product_family"),
    int("amount_minor"),
    int("tax_minor"),
    int("total_minor"),
    text("reason"),
    ts("issued_at"),
    text("event_id"),
    ts("occurred_at"),
];

impl Table {
    /// Every table, dimensions first.
    pub const ALL: [Table; 8] = [
        Self::DimTenant,
        Self::DimCustomer,
        Self::FactSubscriptionEvent,
        Self::FactUsage,
        Self::FactInvoice,
        Self::FactInvoiceLine,
        Self::FactPayment,
        Self::FactCreditMemo,
    ];

    /// The logical name (`fact_invoice`), the same on every backend; see [`table_name`] for
    /// the name in SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DimTenant => "dim_tenant",
            Self::DimCustomer => "dim_customer",
            Self::FactSubscriptionEvent => "fact_subscription_event",
            Self::FactUsage => "fact_usage",
            Self::FactInvoice => "fact_invoice",
            Self::FactInvoiceLine => "fact_invoice_line",
            Self::FactPayment => "fact_payment",
            Self::FactCreditMemo => "fact_credit_memo",
        }
    }

    /// Finds a table by its logical name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Columns in storage and export order; the business key comes first.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Self::DimTenant => DIM_TENANT,
            Self::DimCustomer => DIM_CUSTOMER,
            Self::FactSubscriptionEvent => FACT_SUBSCRIPTION_EVENT,
            Self::FactUsage => FACT_USAGE,
            Self::FactInvoice => FACT_INVOICE,
            Self::FactInvoiceLine => FACT_INVOICE_LINE,
            Self::FactPayment => FACT_PAYMENT,
            Self::FactCreditMemo => FACT_CREDIT_MEMO,
        }
    }

    /// The business key (primary key). A second row with the same key is never written:
    /// inserts are `ON CONFLICT DO NOTHING`.
    pub fn key(self) -> &'static [&'static str] {
        match self {
            Self::DimTenant => &["tenant_id"],
            Self::DimCustomer => &["tenant_id", "customer_id", "valid_from", "event_id"],
            Self::FactSubscriptionEvent | Self::FactUsage => &["tenant_id", "event_id"],
            Self::FactInvoice => &["tenant_id", "invoice_id"],
            Self::FactInvoiceLine => &["tenant_id", "invoice_id", "line_no"],
            Self::FactPayment => &["tenant_id", "payment_id"],
            Self::FactCreditMemo => &["tenant_id", "credit_memo_id"],
        }
    }

    /// The business-time column an export's `from`/`to` filters on; none for `dim_tenant`.
    pub fn time_column(self) -> Option<&'static str> {
        match self {
            Self::DimTenant => None,
            Self::DimCustomer => Some("valid_from"),
            Self::FactSubscriptionEvent => Some("effective_at"),
            Self::FactUsage => Some("period_start"),
            Self::FactInvoice | Self::FactInvoiceLine | Self::FactCreditMemo => Some("issued_at"),
            Self::FactPayment => Some("captured_at"),
        }
    }

    /// Secondary indexes as (suffix, columns); the migrations create them (pinned by a test).
    #[cfg(test)]
    pub(crate) fn indexes(self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if let Some(time) = self.time_column() {
            out.push(("by_time", time));
        }
        match self {
            Self::FactPayment | Self::FactCreditMemo => {
                out.push(("by_invoice", "tenant_id, invoice_id"));
            }
            Self::FactInvoice => out.push(("by_customer", "tenant_id, customer_id")),
            _ => {}
        }
        out
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Table {
    type Err = WarehouseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| WarehouseError::UnknownTable(s.to_owned()))
    }
}

/// The logical names of every table, comma-separated (for messages).
pub(crate) fn known_tables() -> String {
    Table::ALL.map(Table::as_str).join(", ")
}

/// The SQL name of a warehouse table on a backend.
///
/// Postgres: `warehouse.fact_invoice` (schema `warehouse`). SQLite: `warehouse_fact_invoice`
/// in the store's own database file, never an ATTACHed one: a transaction that spans ATTACHed
/// files is not atomic in WAL mode, and the batch transaction must cover the inbox and the
/// facts together.
pub fn table_name(backend: Backend, table: Table) -> String {
    match backend {
        Backend::Postgres => format!("{PG_SCHEMA}.{}", table.as_str()),
        Backend::Sqlite => format!("{PG_SCHEMA}_{}", table.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_depend_on_the_backend() {
        assert_eq!(
            table_name(Backend::Postgres, Table::FactInvoice),
            "warehouse.fact_invoice"
        );
        assert_eq!(
            table_name(Backend::Sqlite, Table::FactInvoice),
            "warehouse_fact_invoice"
        );
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for t in Table::ALL {
            assert_eq!(Table::parse(t.as_str()), Some(t));
            assert_eq!(t.as_str().parse::<Table>().unwrap(), t);
        }
        let err = "fact_nope".parse::<Table>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown warehouse table \"fact_nope\"; known: dim_tenant, dim_customer, \
             fact_subscription_event, fact_usage, fact_invoice, fact_invoice_line, fact_payment, \
             fact_credit_memo"
        );
    }

    #[test]
    fn keys_lead_the_columns_and_are_never_nullable() {
        for t in Table::ALL {
            let cols = t.columns();
            let names: HashSet<&str> = cols.iter().map(|c| c.name).collect();
            assert_eq!(names.len(), cols.len(), "duplicate column in {t}");
            for (i, k) in t.key().iter().enumerate() {
                assert_eq!(
                    cols[i].name, *k,
                    "{t}: key column {k} is not at position {i}"
                );
                assert!(!cols[i].nullable, "{t}.{k}");
            }
            if let Some(time) = t.time_column() {
                let col = cols.iter().find(|c| c.name == time).expect("time column");
                assert_eq!(col.kind, ColumnKind::Timestamp, "{t}.{time}");
            }
        }
    }
}
