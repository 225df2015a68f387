//! ledgerflow-erp-receivables: the `erp-receivables` consumer.
//!
//! Billing events become balanced double-entry journals and AR documents per tenant, payments
//! are applied to their invoices, and every journal of a tenant with an ERP is delivered once
//! to it through an outbox:
//!
//! - [`ErpReceivables`] implements [`ledgerflow_store::ConsumerLogic`]: a pure mapping
//!   ([`mapping`]) and a set-based writer that runs inside the store's batch transaction
//!   (documents, journals, payment application, outbox rows);
//! - [`payloads`] renders a journal for NetSuite, Dynamics 365, S/4HANA or Oracle Fusion;
//! - [`dispatcher`] delivers outbox rows with idempotency keys, retries and per-tenant rate
//!   limits;
//! - [`reconcile`] compares what was posted with the audit log or a produce manifest.
//!
//! Money is integer minor units everywhere; sums are `i128` in Rust and `CAST(SUM(..) AS
//! BIGINT)` in SQL. Journal ids are UUID v5 of the event id and the journal's role, so a
//! re-derivation never makes a second id and the unique keys in [`schema`] reject any second
//! posting that got past the inbox.

pub mod billing;
pub mod dispatcher;
mod error;
pub mod gauges;
mod journal;
pub mod mapping;
pub mod payloads;
pub mod reconcile;
pub mod schema;
mod settle;
mod write;

pub use billing::{BillingDocType, BillingDocument, BillingExport};
pub use dispatcher::{
    DispatchStats, Dispatcher, DispatcherConfig, ErpPaths, PendingSummary, dispatch_once,
    run_dispatcher,
};
pub use error::ErpError;
pub use journal::{JournalEntry, JournalKind, JournalLine, idempotency_key, journal_id};
pub use mapping::{
    CONSUMER_NAME, CreditMemoPosting, CustomerRecord, ErpEffect, ErpReceivables, ErpRoute,
    InvoicePosting, PaymentPosting, Posting, map_event,
};
pub use reconcile::{
    AmountSummary, DocumentReconciliation, DoublePosting, ErpReconciliation, FailedDelivery,
    Manifest, ManifestDocuments, ManifestPayments, ManifestTenant, ReconcileOptions,
    ReconcileReport, ReconcileSource, TenantReconciliation, reconcile,
};
