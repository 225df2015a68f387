//! ledgerflow-erp-receivables: the `erp-receivables` consumer.
//!
//! Billing events become balanced double-entry journals and AR documents per tenant, payments
//! are applied to their invoices, and every journal of a tenant with an ERP is delivered once
//! to it through an outbox:
//!
//! - [`ErpReceivables`] implements [`ledgerflow_store::ConsumerLogic`]: a pure mapping
//!   ([`mapping`]) and a set-based writer that runs inside the store's batch transaction
//!   (documents, journals, payment application, outbox rows);
//! - [`adapter`] is the ERP adapter framework (one object-safe trait per ERP, outcomes,
//!   per-attempt HTTP context) and [`adapters`] the built-in adapters; a journal is rendered
//!   for its tenant's ERP when it is written, as a posting ([`posting`]);
//! - [`dispatcher`] delivers postings the way each ERP defines it: its own idempotency (upsert
//!   by external id, or look up before create), auth ([`auth`]), limits per ERP account,
//!   asynchronous jobs, and a lookup by external id after any outcome that left it in doubt;
//! - [`ops`] lists, shows, requeues (optionally re-rendered) and resolves postings for an
//!   operator;
//! - [`reconcile`] compares what was posted with the audit log or a produce manifest, and
//!   [`readback`] asks each tenant's ERP for every confirmed posting's document.
//!
//! Money is integer minor units everywhere; sums are `i128` in Rust and `CAST(SUM(..) AS
//! BIGINT)` in SQL. Journal ids are UUID v5 of the event id and the journal's role, and a
//! journal's external id in the ERP is derived from tenant, event and role the same way, so a
//! re-derivation never makes a second id and the unique keys in [`schema`] reject any second
//! posting that got past the inbox.

pub mod adapter;
pub mod adapters;
pub mod auth;
pub mod billing;
pub mod dispatcher;
mod error;
mod exchange;
pub mod gauges;
mod journal;
mod limits;
pub mod lineage;
pub mod mapping;
pub mod ops;
pub mod payloads;
pub mod posting;
pub mod readback;
pub mod reconcile;
pub mod schema;
mod settle;
mod write;

pub use adapter::{
    BoxFuture, Document, ErpAdapter, ErpAmount, Exchange, FailClass, Failed, HttpRequest,
    HttpResponse, InvoiceRef, Lookup, LookupPolicy, Outcome, Problem, ReadBack, RenderInput,
    Rendered, Retry, RetryClass,
};
pub use billing::{BillingDocType, BillingDocument, BillingExport};
pub use dispatcher::{
    DispatchStats, Dispatcher, DispatcherConfig, PendingSummary, dispatch_once, run_dispatcher,
};
pub use error::ErpError;
pub use journal::{JournalEntry, JournalKind, JournalLine, journal_id};
pub use mapping::{
    CONSUMER_NAME, CreditMemoPosting, CustomerRecord, ErpEffect, ErpReceivables, ErpRoute,
    InvoicePosting, PaymentPosting, Posting, RefundPosting, VoidPosting, map_event,
};
pub use posting::{
    COMPACT_KEY_LEN, Dependency, ErpPosting, KeyField, PostingState, Route, compact_key, erp_key,
    external_id, key_field,
};
pub use readback::{ReadbackOptions, ReadbackProgress, ReadbackReport, read_back};
pub use reconcile::{
    AmountSummary, DocumentReconciliation, DoublePosting, ErpReconciliation, FailedDelivery,
    Manifest, ManifestDocuments, ManifestPayments, ManifestTenant, ReconcileOptions,
    ReconcileReport, ReconcileSource, RefusedCorrection, TenantReconciliation, reconcile,
};
