//! ledgerflow-core: the vocabulary every other crate speaks.
//!
//! Typed billing events and their envelope, tenant and event identifiers, exact money, and the
//! classification of failures into retryable and permanent (with a reason code). Nothing here
//! does I/O, so handlers built on it are unit-tested without Kafka or a database.

mod calendar;
mod clock;
mod envelope;
mod event;
pub mod failpoint;
mod failure;
mod ids;
mod money;
mod retry;
pub mod secret;

pub use calendar::{date_of_micros, rfc3339_micros};
pub use clock::{error_chain, now_micros};
pub use envelope::{Coordinates, Envelope, payload_hash, trace_id_of};
pub use event::{
    CreditMemoIssued, CustomerUpserted, Event, EventMeta, EventType, InvoiceFinalized, InvoiceLine,
    InvoiceVoided, PaymentCaptured, PaymentRefunded, SubscriptionActivated, SubscriptionCanceled,
    TaxLine, UsageAggregated,
};
pub use failure::{Failure, ReasonCode};
pub use ids::{EventId, SchemaId, TenantId};
pub use money::{Currency, Money, format_minor, parse_minor};
pub use retry::{Attempts, Backoff, RetryAfter, jitter};
