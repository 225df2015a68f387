//! ledgerflow-loadgen: a deterministic, realistic multi-tenant billing workload.
//!
//! [`Workload`] is an iterator of [`GeneratedEvent`]s built from a [`WorkloadConfig`]. It does no
//! I/O: the CLI's `ledgerflow produce` encodes each event with Avro and sends it to Kafka keyed by
//! tenant, and the benchmarks drive it directly. The same config (seed included) always yields
//! the same sequence, byte for byte, so a failed run can be reproduced exactly.
//!
//! What makes the stream realistic rather than random:
//!
//! - tenants `t001`, `t002`, ... are picked with a Zipf skew, so a few tenants dominate;
//! - every tenant bills in one functional currency (JPY has no minor digits, KWD three);
//! - each tenant follows a billing lifecycle: a customer is upserted before anything else refers
//!   to it, subscriptions are activated before usage is metered or they are canceled, invoices
//!   carry plan, usage and tax lines that add up exactly, payments and credit memos refer to an
//!   earlier invoice of the same tenant;
//! - `invoice_finalized` and `payment_captured` are written with schema v1 or v2 at random;
//! - a configurable fraction of items are exact re-sends (duplicates), and optionally a fraction
//!   of payments arrive just before the invoice they pay.
//!
//! [`Manifest`] summarises what was sent (counts and exact money totals per tenant) so that the
//! consumer's ledger can be reconciled against it.

mod billing;
mod catalog;
mod config;
mod manifest;
mod workload;

pub use billing::{BILLING_CSV_HEADER, billing_csv_row};
pub use config::{LoadgenError, WorkloadConfig};
pub use manifest::{DecimalTotal, DocumentTotals, Manifest, PaymentTotals, TenantManifest};
pub use workload::{GeneratedEvent, TenantProfile, Workload};
