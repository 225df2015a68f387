//! The ERP adapter framework: one object-safe trait, [`ErpAdapter`], implemented once per ERP
//! in [`crate::adapters`], and the types it speaks: what it renders ([`Rendered`]), what it
//! reports ([`Outcome`], [`Lookup`]) and the per-attempt HTTP context it talks through
//! ([`Exchange`]).
//!
//! # What the framework does, so an adapter does not
//!
//! - **Rendering happens at write time**, inside the batch transaction ([`ErpAdapter::render`]
//!   is pure): the rendered document, its external id and the tenant-config fingerprint are
//!   stored in the posting, so a delivery never depends on the tenants file of the process
//!   that delivers it.
//! - **Claiming, leases, retries, backoff, `max_attempts`, states** ([`crate::posting`]) and
//!   the attempt history are the dispatcher's ([`crate::dispatcher`]).
//! - **Indefinite outcomes.** When an attempt ends in a timeout or a connection lost after the
//!   request was written ([`Retry::indefinite`]), the next attempt calls [`ErpAdapter::find`]
//!   first and only sends when the document is not there. Adapters of ERPs that have no
//!   idempotent create at all return [`LookupPolicy::Always`] and are asked before every send.
//! - **Limits.** Each request holds a slot of its ERP *account* (concurrency and rate from
//!   `[[erp_accounts]]`, shared by every tenant of the account); a [`RetryClass::Throttled`]
//!   outcome pauses that account only, for `Retry-After` or a growing backoff, while other
//!   accounts keep flowing.
//! - **Auth.** [`Exchange::call`] signs every request as the route says (OAuth 2.0 client
//!   credentials with a shared token cache, NetSuite M2M and TBA, basic; see [`crate::auth`]),
//!   refreshes a token the ERP refused once, and turns a second refusal into
//!   [`FailClass::Auth`].
//! - **Redaction, excerpts, metrics.** Every secret read for the attempt (and every token) is
//!   redacted from error texts and the request/response excerpts stored in the row; latency,
//!   response classes and in-flight requests per account are recorded.
//!
//! # Adding an adapter
//!
//! 1. Create `src/adapters/<erp>.rs` with a unit struct implementing [`ErpAdapter`]:
//!    - `render`: map the [`JournalEntry`] (and, in subledger mode, the customer and invoice in
//!      [`RenderInput`]) to the ERP's document, using only the route's organisational keys
//!      (`route.target.<erp>`: company code, ledger, ...) and the tenant's GL accounts. Put
//!      the external id ([`RenderInput::external_id`]) where the ERP lets you look a document
//!      up by it (PROTOCOLS.md names the field per ERP). Return [`Rendered::NotPosted`] for a
//!      journal the ERP has no counterpart for in this mode, and list in
//!      [`Document::depends_on`] the postings that must be confirmed first.
//!    - `find`: look the document up by its external id; [`Lookup::Found`] with the ERP's id,
//!      [`Lookup::NotFound`], or a problem.
//!    - `send`: create it. A synchronous create answers [`Outcome::Confirmed`]; an asynchronous
//!      one answers [`Outcome::Accepted`] with the job reference, and `poll` later answers
//!      `Confirmed` only when the job says the document was created (`Accepted` again while it
//!      runs, `Failed` when it was rejected).
//!    - Classify every answer: throttling (429, and whatever the ERP uses instead) is
//!      [`RetryClass::Throttled`] with its `Retry-After`; 5xx is [`RetryClass::Server`]; a
//!      refused document is [`FailClass::Rejected`] with the ERP's own message; a request the
//!      adapter cannot build from the route is [`FailClass::Mapping`].
//!    - Use [`Exchange::call`] for every request (never a client of your own): that is what
//!      puts it under the account's limits, signs it, records it and redacts it.
//! 2. Register it in [`crate::adapters::builtin`]. Postings of a kind without an adapter stay
//!    `pending` and are not claimed; registering the adapter is all it takes for them to go.
//! 3. Add the kind's auth methods to `ErpAuth::methods_for` and its keys to the tenants file
//!    validation if they differ (crates/tenants), and an integration test against the
//!    simulator like `tests/netsuite.rs`: faults incl. commit-then-drop, wrong secret,
//!    limits; count on the simulator's side.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ledgerflow_tenants::ErpKind;
use serde_json::Value;
use uuid::Uuid;

use crate::ErpError;
pub use crate::exchange::{Exchange, HttpRequest, HttpResponse};
use crate::journal::{JournalEntry, JournalKind, journal_id};
use crate::mapping::ErpRoute;
use crate::posting::{ErpPosting, external_id};

/// A boxed future, so [`ErpAdapter`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a request should be tried again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryClass {
    /// No answer in time.
    Timeout,
    /// The connection failed or was lost.
    Connection,
    /// The ERP throttled the request (429, or the ERP's own "limit exceeded").
    Throttled,
    /// A server error (5xx).
    Server,
    /// Authentication is impossible for now (token endpoint down, secret unreadable).
    Auth,
}

impl RetryClass {
    /// Stable name (`last_error_class`, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Throttled => "throttled",
            Self::Server => "server",
            Self::Auth => "auth",
        }
    }
}

/// Why a posting cannot succeed without an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailClass {
    /// The request was malformed for the ERP (4xx other than a business rejection).
    Client,
    /// The ERP refused the document (validation, business rule).
    Rejected,
    /// The tenant's mapping cannot produce the document (missing key, unknown account).
    Mapping,
    /// The ERP or its identity provider refused the credentials.
    Auth,
}

impl FailClass {
    /// Stable name (`last_error_class`, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Rejected => "rejected",
            Self::Mapping => "mapping",
            Self::Auth => "auth",
        }
    }
}

/// A transient failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// What kind.
    pub class: RetryClass,
    /// How long the ERP asked to wait.
    pub retry_after: Option<Duration>,
    /// The request may have reached the ERP and been processed: the next attempt must look
    /// the document up before sending it again.
    pub indefinite: bool,
    /// What happened (secrets redacted).
    pub detail: String,
}

impl Retry {
    /// A retry that certainly did not change the ERP.
    pub fn new(class: RetryClass, detail: impl Into<String>) -> Self {
        Self {
            class,
            retry_after: None,
            indefinite: false,
            detail: detail.into(),
        }
    }

    /// With the ERP's `Retry-After`.
    pub fn after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }
}

/// A permanent failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// What kind.
    pub class: FailClass,
    /// Why (the ERP's message where there is one; secrets redacted).
    pub reason: String,
}

impl Failed {
    /// A failure.
    pub fn new(class: FailClass, reason: impl Into<String>) -> Self {
        Self {
            class,
            reason: reason.into(),
        }
    }
}

/// What one delivery attempt achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The ERP holds the document under this id.
    Confirmed {
        /// The ERP's id of the document (internal id, journal batch number, ...).
        document_id: String,
    },
    /// An asynchronous job was submitted; poll it later.
    Accepted {
        /// The job reference to poll.
        job_ref: String,
    },
    /// Try again later.
    Retry(Retry),
    /// Give up until an operator acts.
    Failed(Failed),
}

/// What [`ErpAdapter::find`] learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The document exists.
    Found {
        /// The ERP's id of the document.
        document_id: String,
    },
    /// The ERP has no document with the external id.
    NotFound,
    /// The lookup failed transiently; nothing is known.
    Retry(Retry),
    /// The lookup failed permanently.
    Failed(Failed),
}

/// The amount an ERP holds for a document, as its lookup returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErpAmount {
    /// ISO 4217 code the ERP gave.
    pub currency: String,
    /// The document's amount (a journal's debits, a document's total), in minor units of
    /// `currency`.
    pub amount_minor: i128,
}

/// What [`ErpAdapter::read_back`] learned: a lookup by external id, with the document's amount
/// where the ERP's answer carries one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadBack {
    /// The document exists.
    Found {
        /// The ERP's id of the document.
        document_id: String,
        /// Its amount, when the lookup returns one (`None`: found, amount not compared).
        amount: Option<ErpAmount>,
    },
    /// The ERP has no document with the external id.
    NotFound,
    /// The lookup failed transiently; nothing is known.
    Retry(Retry),
    /// The lookup failed permanently.
    Failed(Failed),
}

impl From<Lookup> for ReadBack {
    fn from(lookup: Lookup) -> Self {
        match lookup {
            Lookup::Found { document_id } => Self::Found {
                document_id,
                amount: None,
            },
            Lookup::NotFound => Self::NotFound,
            Lookup::Retry(r) => Self::Retry(r),
            Lookup::Failed(f) => Self::Failed(f),
        }
    }
}

impl From<ReadBack> for Lookup {
    fn from(read: ReadBack) -> Self {
        match read {
            ReadBack::Found { document_id, .. } => Self::Found { document_id },
            ReadBack::NotFound => Self::NotFound,
            ReadBack::Retry(r) => Self::Retry(r),
            ReadBack::Failed(f) => Self::Failed(f),
        }
    }
}

/// The exact sum of decimal amounts as an ERP returned them (texts or JSON numbers), in
/// `currency`; `None` when one is neither, the currency is unknown, or the sum has more
/// decimals than the currency: read-back then says "not returned" rather than guess.
pub(crate) fn decimal_amount<'a>(
    currency: &str,
    values: impl IntoIterator<Item = &'a Value>,
) -> Option<ErpAmount> {
    const SCALE: u8 = 6;
    let mut micro = 0i128;
    for v in values {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        micro = micro.checked_add(ledgerflow_core::parse_minor(text.trim(), SCALE).ok()?)?;
    }
    let currency = ledgerflow_core::Currency::parse(currency.trim()).ok()?;
    let factor = 10i128.checked_pow(u32::from(SCALE.checked_sub(currency.exponent())?))?;
    (micro % factor == 0).then(|| ErpAmount {
        currency: currency.code().to_owned(),
        amount_minor: micro / factor,
    })
}

/// A failure on the way to an answer, for `?` inside adapters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Transient.
    Retry(Retry),
    /// Permanent.
    Failed(Failed),
}

impl From<Problem> for Outcome {
    fn from(p: Problem) -> Self {
        match p {
            Problem::Retry(r) => Self::Retry(r),
            Problem::Failed(f) => Self::Failed(f),
        }
    }
}

impl From<Problem> for Lookup {
    fn from(p: Problem) -> Self {
        match p {
            Problem::Retry(r) => Self::Retry(r),
            Problem::Failed(f) => Self::Failed(f),
        }
    }
}

impl From<Problem> for ReadBack {
    fn from(p: Problem) -> Self {
        match p {
            Problem::Retry(r) => Self::Retry(r),
            Problem::Failed(f) => Self::Failed(f),
        }
    }
}

impl From<Retry> for Problem {
    fn from(r: Retry) -> Self {
        Self::Retry(r)
    }
}

impl From<Failed> for Problem {
    fn from(f: Failed) -> Self {
        Self::Failed(f)
    }
}

/// When the dispatcher asks the ERP whether a document exists before sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupPolicy {
    /// Only after an indefinite outcome (the create is idempotent or refuses a duplicate).
    AfterIndefinite,
    /// Before every send (the ERP stores a second copy of anything sent twice).
    Always,
}

/// The invoice a payment application settles or a credit memo credits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRef {
    /// Business id of the invoice.
    pub invoice_id: String,
    /// The event that posted it, when ledgerflow has posted it.
    pub event_id: Option<ledgerflow_core::EventId>,
}

/// Everything [`ErpAdapter::render`] may use.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    /// The balanced journal.
    pub journal: &'a JournalEntry,
    /// The tenant's route, legal entity, currency and GL accounts.
    pub route: &'a ErpRoute,
    /// The posting's external id.
    pub external_id: &'a str,
    /// The customer of the document.
    pub customer_id: &'a str,
    /// The invoice of an application or a credit memo.
    pub invoice: Option<&'a InvoiceRef>,
}

impl RenderInput<'_> {
    /// Outbox id and external id of another journal of the same tenant.
    pub fn posting_of(
        &self,
        event_id: &ledgerflow_core::EventId,
        kind: JournalKind,
    ) -> (Uuid, String) {
        (
            journal_id(event_id, kind),
            external_id(&self.journal.tenant_id, event_id, kind),
        )
    }
}

/// A rendered document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The adapter's name of the document kind (`journalEntry`, `invoice`, `LedgerJournal`, ...).
    pub kind: String,
    /// The document.
    pub body: Value,
    /// Outbox ids of postings that must be confirmed (or resolved) before this one is sent.
    pub depends_on: Vec<String>,
}

/// What a journal becomes for an ERP.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered {
    /// A document to post.
    Document(Document),
    /// Nothing: the ERP has no counterpart of this journal in the tenant's mode (the journal
    /// stays in ledgerflow's subledger and is not counted as an ERP posting).
    NotPosted {
        /// Why, for the reader of the code and the logs.
        reason: &'static str,
    },
}

/// One ERP's protocol. Object-safe: the dispatcher holds `Arc<dyn ErpAdapter>` per kind. See
/// the module documentation for the contract and for how to add one.
pub trait ErpAdapter: Send + Sync + fmt::Debug + 'static {
    /// The ERP kind this adapter serves.
    fn kind(&self) -> ErpKind;

    /// When to call [`ErpAdapter::find`] before sending (default: after an indefinite outcome).
    fn lookup_policy(&self) -> LookupPolicy {
        LookupPolicy::AfterIndefinite
    }

    /// Renders a journal. Pure (runs inside the batch transaction): no I/O, no clock.
    fn render(&self, input: &RenderInput<'_>) -> Result<Rendered, ErpError>;

    /// Looks the posting's document up by its external id.
    fn find<'a>(&'a self, cx: &'a Exchange, posting: &'a ErpPosting) -> BoxFuture<'a, Lookup>;

    /// Reads a confirmed posting's document back by its external id (`ledgerflow reconcile
    /// --erp-readback`). The default is [`ErpAdapter::find`] without an amount; an adapter
    /// whose lookup answer carries the document's amount overrides it to return that too.
    fn read_back<'a>(
        &'a self,
        cx: &'a Exchange,
        posting: &'a ErpPosting,
    ) -> BoxFuture<'a, ReadBack> {
        Box::pin(async move { self.find(cx, posting).await.into() })
    }

    /// Sends the posting's document.
    fn send<'a>(&'a self, cx: &'a Exchange, posting: &'a ErpPosting) -> BoxFuture<'a, Outcome>;

    /// Polls the asynchronous job of an `accepted` posting. The default is for ERPs without
    /// asynchronous jobs: such a posting cannot exist, so it fails.
    fn poll<'a>(
        &'a self,
        cx: &'a Exchange,
        posting: &'a ErpPosting,
        job_ref: &'a str,
    ) -> BoxFuture<'a, Outcome> {
        let _ = (cx, posting);
        Box::pin(async move {
            Outcome::Failed(Failed::new(
                FailClass::Client,
                format!("{} has no asynchronous jobs (job {job_ref})", self.kind()),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_convert_to_outcomes_and_lookups() {
        let retry = Retry::new(RetryClass::Server, "503").after(Some(Duration::from_secs(2)));
        assert_eq!(
            Outcome::from(Problem::from(retry.clone())),
            Outcome::Retry(retry.clone())
        );
        assert_eq!(
            Lookup::from(Problem::Retry(retry.clone())),
            Lookup::Retry(retry)
        );
        let failed = Failed::new(FailClass::Auth, "invalid_client");
        assert_eq!(
            Outcome::from(Problem::from(failed.clone())),
            Outcome::Failed(failed)
        );
        let names: Vec<_> = [
            RetryClass::Timeout,
            RetryClass::Connection,
            RetryClass::Throttled,
            RetryClass::Server,
            RetryClass::Auth,
        ]
        .map(RetryClass::as_str)
        .to_vec();
        assert_eq!(
            names,
            ["timeout", "connection", "throttled", "server", "auth"]
        );
        let names = [
            FailClass::Client,
            FailClass::Rejected,
            FailClass::Mapping,
            FailClass::Auth,
        ]
        .map(FailClass::as_str);
        assert_eq!(names, ["client", "rejected", "mapping", "auth"]);
    }
}
