//! ledgerflow-notifications: the `notifications` consumer.
//!
//! Billing events become signed webhooks to each tenant's endpoints, delivered through a
//! transactional outbox:
//!
//! - [`Notifications`] implements [`ledgerflow_store::ConsumerLogic`]: `invoice_finalized` ->
//!   "invoice ready", `payment_captured` -> "payment receipt", `subscription_activated` ->
//!   "welcome", `credit_memo_issued` -> "credit issued"; every other type is skipped. The
//!   mapping renders the endpoint's JSON template ([`render`]) and is pure; the writer inserts
//!   one outbox row per (notification, subscribed endpoint) inside the batch transaction, keyed
//!   by a webhook-id derived from the event id and the endpoint id ([`webhook_id`]), so a
//!   replay never makes a second row.
//! - [`signature`] signs and verifies Standard Webhooks signatures (`v1,` HMAC-SHA256 over
//!   `{id}.{timestamp}.{body}` with the endpoint's `whsec_` secret).
//! - [`dispatcher`] delivers outbox rows: leased claims, exponential backoff with jitter, a
//!   maximum number of attempts, a circuit breaker per endpoint ([`breaker`]), a token bucket
//!   per tenant, and one delivery-log row per attempt.
//! - [`admin`] lists outbox rows and re-queues failed ones for the CLI.

pub mod admin;
pub mod breaker;
pub mod dispatcher;
mod error;
pub mod lineage;
pub mod mapping;
pub mod render;
pub mod schema;
pub mod signature;

pub use admin::{
    NotificationFilter, NotificationRow, OUTBOX_TABLE, RetryOutcome, RetrySelector, list,
    outbox_by_tenant_and_status, retry,
};
pub use breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker};
pub use dispatcher::{
    DispatchStats, Dispatcher, DispatcherConfig, PendingSummary, dispatch_once, run_dispatcher,
};
pub use error::NotificationError;
pub use mapping::{CONSUMER_NAME, NotificationEffect, Notifications, OutboxMessage, webhook_id};
pub use render::render;
pub use signature::{VerifyError, WebhookSecret, sign, verify};
