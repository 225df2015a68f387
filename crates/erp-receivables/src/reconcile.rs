//! Reconciliation: is every event posted exactly once, does every journal balance, did every
//! journal reach the ERP?
//!
//! Expected documents come from one of two sources:
//!
//! - [`ReconcileSource::AuditLog`]: the store's `audit_log`. Every event of type
//!   `invoice_finalized`, `payment_captured`, `credit_memo_issued`, `invoice_voided` or
//!   `payment_refunded` with decision `applied` for consumer `erp-receivables` must have exactly
//!   one journal of its kind (`invoice`, `receipt`, `credit_memo`, `invoice_void`, `refund`)
//!   unless it was refused (a row in `erp_conflicts`), and no such journal may exist without
//!   that event or for an event that was refused. Lists are event ids; voids are listed with
//!   the invoices and refunds with the payments (their `expected_count` counts only the
//!   invoices, payments and credit memos themselves).
//! - [`ReconcileSource::Manifest`]: the JSON manifest a `produce` run wrote: counts and exact
//!   totals per tenant and document type are compared (the manifest has no ids).
//! - [`ReconcileSource::Billing`]: the billing platform's document export
//!   ([`crate::billing`]): every document by id; lists are document ids (missing from the
//!   ledger, posted but not exported, posted with another currency, amount or fee).
//!
//! The manifest and the billing export know nothing of corrections: void and refund documents
//! are not in any `posted_count` or `posted_total`.
//!
//! Whatever the source, the ledger is also checked on its own terms: documents (voids and
//! refunds included) whose journal is missing or disagrees with them, open balances that differ
//! from total - applications - credit memos - void, unapplied amounts that differ from amount -
//! applications - refunds (**mismatched**), more than one journal per (event, kind) or per
//! document, and documents re-sent under a new event id (**double**), journals whose debits
//! differ from their credits (**unbalanced**). Payments not applied because their currency
//! differs from the invoice's, payments still waiting for their invoice and journals of ERP
//! tenants without an outbox row are reported but do not make the report unclean.
//!
//! Corrections the stored state does not allow (a void of an unknown, paid or credited
//! invoice; a refund of an unknown payment, in another currency or beyond its unapplied cash)
//! are refused by the writer: a row in `erp_conflicts` whose `existing_event_id` is
//! `refused:<reason>`, nothing posted. That is the designed answer, not a ledger defect, so
//! such rows are listed under **refused** (event, document, reason) and do not make the
//! report unclean; the refused event is not missing its journal. Whether the correction
//! should be re-issued (a credit memo instead of a void, a smaller refund) is for the billing
//! side to decide.
//!
//! A journal is not done until its ERP has it: a posting that is `failed`, or still `pending`
//! or `accepted` longer than [`ReconcileOptions::stuck_after`] after it was written
//! (**undelivered**), makes the report unclean, listed by posting id with its state. A
//! `resolved` posting (settled by an operator) and a `confirmed` one are delivered.
//!
//! With `--erp-readback` ([`crate::readback`], attached by [`ReconcileReport::attach_readback`])
//! the ERP itself is the third leg: every confirmed posting's document is looked up in the
//! tenant's ERP by its external id; a document missing there, one whose amount differs, or a
//! lookup that got no answer makes the report unclean.
//!
//! `from`/`to` (micros, inclusive/exclusive) filter by business time: documents by issue or
//! capture time, journals by `posted_at`. Audit events that have no journal at all are always
//! counted (they cannot be dated from the ledger). The outbox is not time-filtered.

use std::collections::BTreeMap;
use std::time::Duration;

use ledgerflow_core::{Currency, format_minor, now_micros, parse_minor};
use ledgerflow_store::Backend;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::ErpError;
use crate::billing::{BillingDocType, BillingExport};
use crate::mapping::CONSUMER_NAME;
use crate::readback::ReadbackReport;

/// Where the expected documents come from.
#[derive(Debug, Clone)]
pub enum ReconcileSource {
    /// The store's audit log (exact, by event id).
    AuditLog,
    /// A produce manifest (counts and totals only).
    Manifest(Manifest),
    /// The billing platform's document export (every document by id, with its amounts).
    Billing(BillingExport),
}

/// The parts of the loadgen manifest JSON reconcile reads; other fields are ignored.
///
/// ```json
/// {"tenants": {"t001": {"currency": "USD",
///   "invoices": {"count": 10, "total": "1234.56"},
///   "payments": {"count": 8, "total": "1000.00", "fees": "23.10"},
///   "credit_memos": {"count": 1, "total": "12.34"}}}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Per tenant.
    pub tenants: BTreeMap<String, ManifestTenant>,
}

/// One tenant of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTenant {
    /// Currency of every total.
    pub currency: String,
    /// `invoice_finalized`: count and sum of totals.
    pub invoices: ManifestDocuments,
    /// `payment_captured`: count, sum of gross amounts and of fees.
    pub payments: ManifestPayments,
    /// `credit_memo_issued`: count and sum of totals.
    pub credit_memos: ManifestDocuments,
}

/// Count and total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDocuments {
    /// Documents.
    pub count: u64,
    /// Exact decimal total.
    pub total: String,
}

/// Count, total and fees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPayments {
    /// Payments.
    pub count: u64,
    /// Exact decimal sum of gross amounts.
    pub total: String,
    /// Exact decimal sum of fees.
    pub fees: String,
}

impl Manifest {
    /// Reads the manifest from its JSON.
    pub fn from_json(value: serde_json::Value) -> Result<Self, ErpError> {
        serde_json::from_value(value).map_err(|e| ErpError::Manifest(e.to_string()))
    }
}

/// What to reconcile.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Business time from (micros, inclusive).
    pub from: Option<i64>,
    /// Business time to (micros, exclusive).
    pub to: Option<i64>,
    /// Expected documents.
    pub source: ReconcileSource,
    /// Longest id list in the report (counts are always complete). Default 100.
    pub max_listed: usize,
    /// A posting still `pending` or `accepted` this long after it was written is undelivered
    /// and makes the report unclean. Default [`DEFAULT_STUCK_AFTER`] (1 h).
    pub stuck_after: Duration,
}

/// How long a posting may stay `pending` or `accepted` before reconcile calls it stuck.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(3600);

impl ReconcileOptions {
    /// All tenants, all time, up to 100 ids per list, stuck after 1 h.
    pub fn new(source: ReconcileSource) -> Self {
        Self {
            tenant: None,
            from: None,
            to: None,
            source,
            max_listed: 100,
            stuck_after: DEFAULT_STUCK_AFTER,
        }
    }
}

/// The report (`--format json` serializes it as is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// `audit_log` or `manifest`.
    pub source: &'static str,
    /// Tenant filter.
    pub tenant: Option<String>,
    /// Time filter.
    pub from: Option<i64>,
    /// Time filter.
    pub to: Option<i64>,
    /// Postings `pending` or `accepted` longer than this many seconds are undelivered.
    pub stuck_after_secs: u64,
    /// [`ReconcileReport::is_clean`], for scripts.
    pub clean: bool,
    /// Per tenant.
    pub tenants: BTreeMap<String, TenantReconciliation>,
    /// The ERP read-back, when asked for (`--erp-readback`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erp_readback: Option<ReadbackReport>,
}

impl ReconcileReport {
    /// True iff nothing is missing, extra, mismatched, double, unbalanced or undelivered, in
    /// any tenant, and (with a read-back) no confirmed document is missing in its ERP,
    /// disagrees with its journal or went unanswered. Refused corrections do not count.
    pub fn is_clean(&self) -> bool {
        self.tenants.values().all(TenantReconciliation::is_clean)
            && self
                .erp_readback
                .as_ref()
                .is_none_or(ReadbackReport::is_clean)
    }

    /// Adds the ERP read-back ([`crate::readback::read_back`]) and updates `clean`.
    pub fn attach_readback(&mut self, readback: ReadbackReport) {
        self.erp_readback = Some(readback);
        self.clean = self.is_clean();
    }
}

/// One tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TenantReconciliation {
    /// Invoices (journal kind `invoice`).
    pub invoices: DocumentReconciliation,
    /// Payments (journal kind `receipt`; application mismatches are listed here too).
    pub payments: DocumentReconciliation,
    /// Credit memos (journal kind `credit_memo`).
    pub credit_memos: DocumentReconciliation,
    /// Applications of payments to invoices.
    pub applications: AmountSummary,
    /// Cash received and not applied (over-payments, held, currency mismatches), per currency.
    pub unapplied_cash: BTreeMap<String, String>,
    /// Payments waiting for an invoice that has not arrived.
    pub held_payments: Vec<String>,
    /// Number of held payments.
    pub held_payments_count: u64,
    /// Payments not applied because their currency differs from their invoice's.
    pub currency_mismatch_payments: Vec<String>,
    /// More than one journal per (event, kind) or per document, or a document re-sent under
    /// another event id.
    pub double_postings: Vec<DoublePosting>,
    /// Corrections (voids, refunds) the writer refused because the stored state did not allow
    /// them; nothing was posted for them. Informational: they do not make the report unclean.
    pub refused: Vec<RefusedCorrection>,
    /// All refused, listed or not.
    pub refused_count: u64,
    /// Journals whose debits differ from their credits (or from their recorded total).
    pub unbalanced_journals: Vec<String>,
    /// Posted vs ERP.
    pub erp: ErpReconciliation,
}

impl TenantReconciliation {
    /// See [`ReconcileReport::is_clean`].
    pub fn is_clean(&self) -> bool {
        [&self.invoices, &self.payments, &self.credit_memos]
            .iter()
            .all(|d| d.is_clean())
            && self.double_postings.is_empty()
            && self.unbalanced_journals.is_empty()
            && self.erp.is_clean()
    }
}

/// Expected vs posted for one document type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DocumentReconciliation {
    /// Expected documents (audit events or manifest count).
    pub expected_count: Option<u64>,
    /// Posted documents.
    pub posted_count: u64,
    /// Expected total (manifest only), exact decimal.
    pub expected_total: Option<String>,
    /// Posted total per currency, exact decimals.
    pub posted_total: BTreeMap<String, String>,
    /// Expected fees (payments, manifest only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_fees: Option<String>,
    /// Posted fees per currency (payments only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posted_fees: Option<BTreeMap<String, String>>,
    /// Manifest: whether the counts agree.
    pub count_matches: Option<bool>,
    /// Manifest: whether the totals (and fees) agree.
    pub total_matches: Option<bool>,
    /// Expected but not posted (event ids, audit source; with the invoices, also voids; with
    /// the payments, also refunds).
    pub missing: Vec<String>,
    /// All missing, listed or not.
    pub missing_count: u64,
    /// Posted without an expected event, or for an event that was refused (event ids).
    pub extra: Vec<String>,
    /// All extra.
    pub extra_count: u64,
    /// Posted but inconsistent: journal missing or disagreeing with the document (a void's
    /// or refund's included), balances that do not follow from applications, credit memos,
    /// voids and refunds (document ids; a void's is its invoice's).
    pub mismatched: Vec<String>,
    /// All mismatched.
    pub mismatched_count: u64,
}

impl DocumentReconciliation {
    fn is_clean(&self) -> bool {
        self.missing_count == 0
            && self.extra_count == 0
            && self.mismatched_count == 0
            && self.count_matches != Some(false)
            && self.total_matches != Some(false)
    }
}

/// Count and totals per currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AmountSummary {
    /// Rows.
    pub count: u64,
    /// Exact decimal totals per currency.
    pub total: BTreeMap<String, String>,
}

/// One double posting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoublePosting {
    /// Journal kind, or the event type of a re-sent document.
    pub kind: String,
    /// The event, when the double is per event.
    pub event_id: Option<String>,
    /// The document, when the double is per document.
    pub document_id: Option<String>,
    /// Journals found (1 for a re-sent document that was refused).
    pub journals: u64,
    /// What kind of double.
    pub detail: String,
}

/// A correction the writer refused (`erp_conflicts.existing_event_id` = `refused:<reason>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedCorrection {
    /// Event type (`invoice_voided`, `payment_refunded`).
    pub event_type: String,
    /// The refused event.
    pub event_id: String,
    /// The document it named: the invoice voided, or the refund id.
    pub document_id: String,
    /// Why (`invoice_unknown`, `invoice_settled`, `payment_unknown`, `currency_mismatch`,
    /// `exceeds_unapplied`).
    pub reason: String,
}

/// Posted vs ERP for one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErpReconciliation {
    /// Journals of the tenant posted while it had an ERP, that have no outbox row.
    pub journals_without_outbox: Vec<String>,
    /// Postings still pending.
    pub pending: u64,
    /// Postings whose asynchronous job is still running.
    pub accepted: u64,
    /// Postings confirmed by the ERP (the document exists there).
    pub acked: u64,
    /// Postings parked as failed.
    pub failed: u64,
    /// Failed postings an operator resolved.
    pub resolved: u64,
    /// Failed rows: journal id, last status, last error.
    pub failed_deliveries: Vec<FailedDelivery>,
    /// Postings `pending` or `accepted` longer than `stuck_after`.
    pub stuck: u64,
    /// Failed and stuck postings (what makes the delivery unclean), oldest first.
    pub undelivered: Vec<UndeliveredPosting>,
    /// All undelivered, listed or not (= failed + stuck).
    pub undelivered_count: u64,
}

impl ErpReconciliation {
    /// No posting failed, none stuck.
    pub fn is_clean(&self) -> bool {
        self.undelivered_count == 0
    }
}

/// A posting that has not reached its ERP: failed, or pending/accepted for too long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UndeliveredPosting {
    /// Posting (outbox) id, as `ledgerflow postings show` takes it.
    pub id: String,
    /// `failed`, `pending` or `accepted`.
    pub state: String,
    /// External id in the ERP.
    pub external_id: Option<String>,
    /// Seconds since the posting was written.
    pub age_secs: u64,
    /// Attempts made.
    pub attempts: i64,
    /// Last error class.
    pub last_error_class: Option<String>,
}

/// One failed outbox row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedDelivery {
    /// Journal id.
    pub journal_id: String,
    /// Last HTTP status, when there was a response.
    pub last_status: Option<i64>,
    /// Last error class (`timeout`, `throttled`, `rejected`, `auth`, ...).
    pub last_error_class: Option<String>,
    /// Last error (status and body excerpt, secrets redacted).
    pub last_error: Option<String>,
    /// Attempts made.
    pub attempts: i64,
}

/// Tenant and time filter, rendered as SQL conditions with numbered parameters.
pub(crate) struct Scope<'a> {
    pub(crate) tenant: Option<&'a str>,
    pub(crate) from: Option<i64>,
    pub(crate) to: Option<i64>,
}

#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

impl Scope<'_> {
    /// ` AND tenant_col = $1 AND time_col >= $2 ...` and its parameters.
    pub(crate) fn clause(&self, tenant_col: &str, time_col: Option<&str>) -> (String, Vec<Param>) {
        let mut sql = String::new();
        let mut params = Vec::new();
        if let Some(t) = self.tenant {
            params.push(Param::Text(t.to_owned()));
            sql.push_str(&format!(" AND {tenant_col} = ${}", params.len()));
        }
        if let Some(col) = time_col {
            if let Some(from) = self.from {
                params.push(Param::Int(from));
                sql.push_str(&format!(" AND {col} >= ${}", params.len()));
            }
            if let Some(to) = self.to {
                params.push(Param::Int(to));
                sql.push_str(&format!(" AND {col} < ${}", params.len()));
            }
        }
        (sql, params)
    }
}

pub(crate) async fn fetch(
    pool: &AnyPool,
    action: &'static str,
    sql: &str,
    params: Vec<Param>,
) -> Result<Vec<AnyRow>, ErpError> {
    let mut query = sqlx::query(sql);
    for p in params {
        query = match p {
            Param::Text(s) => query.bind(s),
            Param::Int(i) => query.bind(i),
        };
    }
    query.fetch_all(pool).await.map_err(ErpError::db(action))
}

fn text(row: &AnyRow, i: usize) -> Result<String, ErpError> {
    row.try_get(i)
        .map_err(|e| ErpError::Corrupt(format!("reconcile column {i}: {e}")))
}

fn int(row: &AnyRow, i: usize) -> Result<i64, ErpError> {
    row.try_get::<Option<i64>, _>(i)
        .map(Option::unwrap_or_default)
        .map_err(|e| ErpError::Corrupt(format!("reconcile column {i}: {e}")))
}

fn decimal(minor: i128, currency: &str) -> Result<String, ErpError> {
    let c = Currency::parse(currency).map_err(ErpError::Corrupt)?;
    Ok(format_minor(minor, c.exponent()))
}

/// Which document type a journal kind or event type belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DocType {
    Invoice,
    Payment,
    CreditMemo,
}

impl DocType {
    /// The document type of an original document, its journal kind or its event type.
    fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "invoice" | "invoice_finalized" => Some(Self::Invoice),
            "receipt" | "application" | "payment" | "payment_captured" => Some(Self::Payment),
            "credit_memo" | "credit_memo_issued" => Some(Self::CreditMemo),
            _ => None,
        }
    }

    /// Like [`DocType::from_kind`], and a correction (document type, journal kind or event
    /// type) is listed with what it corrects: a void with the invoices, a refund with the
    /// payments. Not for counts and totals, which are of the originals only.
    fn listed_with(kind: &str) -> Option<Self> {
        Self::from_kind(kind).or(match kind {
            "invoice_void" | "invoice_voided" => Some(Self::Invoice),
            "refund" | "payment_refunded" => Some(Self::Payment),
            _ => None,
        })
    }

    fn of(self, t: &mut TenantReconciliation) -> &mut DocumentReconciliation {
        match self {
            Self::Invoice => &mut t.invoices,
            Self::Payment => &mut t.payments,
            Self::CreditMemo => &mut t.credit_memos,
        }
    }
}

/// `erp_conflicts.existing_event_id` of a refused correction starts with this; the reason
/// follows.
const REFUSED_PREFIX: &str = "refused:";

/// Maps an audit event type to the journal kind it must produce, in SQL.
const KIND_OF_EVENT_TYPE: &str = "CASE a.event_type WHEN 'invoice_finalized' THEN 'invoice'
    WHEN 'payment_captured' THEN 'receipt' WHEN 'credit_memo_issued' THEN 'credit_memo'
    WHEN 'invoice_voided' THEN 'invoice_void' WHEN 'payment_refunded' THEN 'refund' END";

/// Compares the ledger with the expected documents. See the module docs.
pub async fn reconcile(
    pool: &AnyPool,
    backend: Backend,
    opts: &ReconcileOptions,
) -> Result<ReconcileReport, ErpError> {
    // The same SQL runs on both backends; a SQLite file last written before the adapters
    // lacks the newer outbox columns this report reads.
    let mut conn = pool
        .acquire()
        .await
        .map_err(ErpError::db("connecting to reconcile"))?;
    crate::schema::upgrade_sqlite(&mut conn, backend)
        .await
        .map_err(ErpError::db("upgrading erp_outbox"))?;
    drop(conn);
    let scope = Scope {
        tenant: opts.tenant.as_deref(),
        from: opts.from,
        to: opts.to,
    };
    let limit = opts.max_listed;
    let mut tenants: BTreeMap<String, TenantReconciliation> = BTreeMap::new();
    if let Some(t) = &opts.tenant {
        tenants.entry(t.clone()).or_default();
    }

    posted_totals(pool, &scope, &mut tenants).await?;
    mismatches(pool, &scope, limit, &mut tenants).await?;
    doubles(pool, &scope, limit, &mut tenants).await?;
    unbalanced(pool, &scope, limit, &mut tenants).await?;
    payment_status(pool, &scope, limit, &mut tenants).await?;
    erp_status(pool, &scope, limit, &mut tenants).await?;
    undelivered(pool, &scope, limit, opts.stuck_after, &mut tenants).await?;

    let source = match &opts.source {
        ReconcileSource::AuditLog => {
            against_audit(pool, &scope, limit, &mut tenants).await?;
            "audit_log"
        }
        ReconcileSource::Manifest(manifest) => {
            against_manifest(manifest, opts.tenant.as_deref(), &mut tenants)?;
            "manifest"
        }
        ReconcileSource::Billing(export) => {
            against_billing(pool, export, &scope, limit, &mut tenants).await?;
            "billing_export"
        }
    };
    let mut report = ReconcileReport {
        source,
        tenant: opts.tenant.clone(),
        from: opts.from,
        to: opts.to,
        stuck_after_secs: opts.stuck_after.as_secs(),
        clean: false,
        tenants,
        erp_readback: None,
    };
    report.clean = report.is_clean();
    Ok(report)
}

async fn posted_totals(
    pool: &AnyPool,
    scope: &Scope<'_>,
    tenants: &mut BTreeMap<String, TenantReconciliation>,
) -> Result<(), ErpError> {
    let (clause, params) = scope.clause("tenant_id", Some("issued_at"));
    let sql = format!(
        "SELECT tenant_id, doc_type, currency, COUNT(*), CAST(SUM(total_minor) AS BIGINT)
         FROM erp_ar_documents WHERE 1 = 1{clause} GROUP BY tenant_id, doc_type, currency"
    );
    for row in fetch(pool, "summing posted documents", &sql, params).await? {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        let Some(doc) = DocType::from_kind(&text(&row, 1)?) else {
            continue;
        };
        let currency = text(&row, 2)?;
        let d = doc.of(tenant);
        d.posted_count += u64::try_from(int(&row, 3)?).unwrap_or(0);
        d.posted_total.insert(
            currency.clone(),
            decimal(i128::from(int(&row, 4)?), &currency)?,
        );
    }

    let (clause, params) = scope.clause("tenant_id", Some("captured_at"));
    let sql = format!(
        "SELECT tenant_id, currency, COUNT(*), CAST(SUM(amount_minor) AS BIGINT),
                CAST(SUM(fee_minor) AS BIGINT), CAST(SUM(unapplied_minor) AS BIGINT)
         FROM erp_payments WHERE 1 = 1{clause} GROUP BY tenant_id, currency"
    );
    for row in fetch(pool, "summing posted payments", &sql, params).await? {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        let currency = text(&row, 1)?;
        tenant.payments.posted_count += u64::try_from(int(&row, 2)?).unwrap_or(0);
        tenant.payments.posted_total.insert(
            currency.clone(),
            decimal(i128::from(int(&row, 3)?), &currency)?,
        );
        tenant
            .payments
            .posted_fees
            .get_or_insert_with(BTreeMap::new)
            .insert(
                currency.clone(),
                decimal(i128::from(int(&row, 4)?), &currency)?,
            );
        tenant.unapplied_cash.insert(
            currency.clone(),
            decimal(i128::from(int(&row, 5)?), &currency)?,
        );
    }

    let (clause, params) = scope.clause("tenant_id", Some("applied_at"));
    let sql = format!(
        "SELECT tenant_id, currency, COUNT(*), CAST(SUM(amount_minor) AS BIGINT)
         FROM erp_applications WHERE 1 = 1{clause} GROUP BY tenant_id, currency"
    );
    for row in fetch(pool, "summing applications", &sql, params).await? {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        let currency = text(&row, 1)?;
        tenant.applications.count += u64::try_from(int(&row, 2)?).unwrap_or(0);
        tenant.applications.total.insert(
            currency.clone(),
            decimal(i128::from(int(&row, 3)?), &currency)?,
        );
    }
    Ok(())
}

/// Adds `id` to a capped list and counts it.
fn listed(list: &mut Vec<String>, count: &mut u64, id: String, limit: usize) {
    *count += 1;
    if list.len() < limit {
        list.push(id);
    }
}

async fn mismatches(
    pool: &AnyPool,
    scope: &Scope<'_>,
    limit: usize,
    tenants: &mut BTreeMap<String, TenantReconciliation>,
) -> Result<(), ErpError> {
    // Documents: the journal exists, is in the document's currency, its receivable line
    // carries the document total (an invoice and a refund debit it: the receivable, unapplied
    // cash; a credit memo and a void credit it), an invoice's open balance is total - applied
    // - credited - voided, and a void or refund applies to a stored invoice or payment.
    let (clause, params) = scope.clause("d.tenant_id", Some("d.issued_at"));
    let sql = format!(
        "SELECT d.tenant_id, d.doc_type, d.doc_id FROM erp_ar_documents d
         LEFT JOIN erp_journal_entries j ON j.id = d.journal_id
         WHERE (j.id IS NULL OR j.currency <> d.currency OR j.tenant_id <> d.tenant_id
            OR d.total_minor <> COALESCE((
                SELECT CAST(SUM(CASE WHEN d.doc_type IN ('invoice', 'refund') THEN l.debit_minor
                                     ELSE l.credit_minor END) AS BIGINT)
                FROM erp_journal_lines l
                WHERE l.entry_id = d.journal_id AND l.account = d.receivable_account), 0)
            OR (d.doc_type = 'invoice' AND d.open_minor <> d.total_minor
                - COALESCE((SELECT CAST(SUM(a.amount_minor) AS BIGINT) FROM erp_applications a
                            WHERE a.tenant_id = d.tenant_id AND a.invoice_id = d.doc_id), 0)
                - COALESCE((SELECT CAST(SUM(c.total_minor) AS BIGINT) FROM erp_ar_documents c
                            WHERE c.tenant_id = d.tenant_id
                              AND c.doc_type IN ('credit_memo', 'invoice_void')
                              AND c.applies_to = d.doc_id), 0))
            OR (d.doc_type = 'invoice_void' AND NOT EXISTS (
                SELECT 1 FROM erp_ar_documents i
                WHERE i.tenant_id = d.tenant_id AND i.doc_type = 'invoice'
                  AND i.doc_id = d.applies_to))
            OR (d.doc_type = 'refund' AND NOT EXISTS (
                SELECT 1 FROM erp_payments p
                WHERE p.tenant_id = d.tenant_id AND p.payment_id = d.applies_to))){clause}
         ORDER BY d.tenant_id, d.doc_type, d.doc_id"
    );
    for row in fetch(pool, "checking documents against journals", &sql, params).await? {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        let Some(doc) = DocType::listed_with(&text(&row, 1)?) else {
            continue;
        };
        let d = doc.of(tenant);
        listed(
            &mut d.mismatched,
            &mut d.mismatched_count,
            text(&row, 2)?,
            limit,
        );
    }

    // Payments: the receipt journal credits the amount to unapplied cash, unapplied = amount -
    // applied - refunded, never negative; an application's journal carries its amount.
    let (clause, params) = scope.clause("p.tenant_id", Some("p.captured_at"));
    let sql = format!(
        "SELECT p.tenant_id, p.payment_id FROM erp_payments p
         LEFT JOIN erp_journal_entries j ON j.id = p.journal_id
         WHERE (j.id IS NULL OR j.currency <> p.currency
            OR p.amount_minor <> COALESCE((SELECT CAST(SUM(l.credit_minor) AS BIGINT)
                FROM erp_journal_lines l
                WHERE l.entry_id = p.journal_id AND l.account = p.unapplied_account), 0)
            OR p.unapplied_minor < 0
            OR p.unapplied_minor <> p.amount_minor
                - COALESCE((SELECT CAST(SUM(a.amount_minor) AS BIGINT) FROM erp_applications a
                            WHERE a.tenant_id = p.tenant_id AND a.payment_id = p.payment_id), 0)
                - COALESCE((SELECT CAST(SUM(r.total_minor) AS BIGINT) FROM erp_ar_documents r
                            WHERE r.tenant_id = p.tenant_id AND r.doc_type = 'refund'
                              AND r.applies_to = p.payment_id), 0)
            OR EXISTS (SELECT 1 FROM erp_applications a
                       LEFT JOIN erp_journal_entries aj ON aj.id = a.journal_id
                       WHERE a.tenant_id = p.tenant_id AND a.payment_id = p.payment_id
                         AND (aj.id IS NULL OR aj.total_minor <> a.amount_minor
                              OR aj.kind <> 'application'))){clause}
         ORDER BY p.tenant_id, p.payment_id"
    );
    for row in fetch(pool, "checking payments against journals", &sql, params).await? {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        let d = &mut tenant.payments;
        listed(
            &mut d.mismatched,
            &mut d.mismatched_count,
            text(&row, 1)?,
            limit,
        );
    }
    Ok(())
}

async fn doubles(
    pool: &AnyPool,
    scope: &Scope<'_>,
    limit: usize,
    tenants: &mut BTreeMap<String, TenantReconciliation>,
) -> Result<(), ErpError> {
    let (clause, params) = scope.clause("tenant_id", Some("posted_at"));
    let sql = format!(
        "SELECT tenant_id, event_id, kind, COUNT(*) FROM erp_journal_entries WHERE 1 = 1{clause}
         GROUP BY tenant_id, event_id, kind HAVING COUNT(*) > 1 ORDER BY tenant_id, event_id"
    );
    for row in fetch(
        pool,
        "finding journals posted twice per event",
        &sql,
        params,
    )
    .await?
    {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        if tenant.double_postings.len() < limit {
            tenant.double_postings.push(DoublePosting {
                kind: text(&row, 2)?,
                event_id: Some(text(&row, 1)?),
                document_id: None,
                journals: u64::try_from(int(&row, 3)?).unwrap_or(0),
                detail: "more than one journal for one event and kind".into(),
            });
        }
    }
    let (clause, params) = scope.clause("tenant_id", Some("posted_at"));
    let sql = format!(
        "SELECT tenant_id, kind, document_id, COUNT(*) FROM erp_journal_entries WHERE 1 = 1{clause}
         GROUP BY tenant_id, kind, document_id HAVING COUNT(*) > 1
         ORDER BY tenant_id, kind, document_id"
    );
    for row in fetch(pool, "finding documents posted twice", &sql, params).await? {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        if tenant.double_postings.len() < limit {
            tenant.double_postings.push(DoublePosting {
                kind: text(&row, 1)?,
                event_id: None,
                document_id: Some(text(&row, 2)?),
                journals: u64::try_from(int(&row, 3)?).unwrap_or(0),
                detail: "more than one journal for one document".into(),
            });
        }
    }
    let (clause, params) = scope.clause("tenant_id", None);
    let sql = format!(
        "SELECT tenant_id, event_type, event_id, document_id, existing_event_id
         FROM erp_conflicts WHERE 1 = 1{clause} ORDER BY tenant_id, event_id"
    );
    for row in fetch(pool, "listing conflicts and refusals", &sql, params).await? {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        let existing = text(&row, 4)?;
        // A refused correction: the designed answer, not a second posting.
        if let Some(reason) = existing.strip_prefix(REFUSED_PREFIX) {
            tenant.refused_count += 1;
            if tenant.refused.len() < limit {
                tenant.refused.push(RefusedCorrection {
                    event_type: text(&row, 1)?,
                    event_id: text(&row, 2)?,
                    document_id: text(&row, 3)?,
                    reason: reason.to_owned(),
                });
            }
            continue;
        }
        if tenant.double_postings.len() < limit {
            tenant.double_postings.push(DoublePosting {
                kind: text(&row, 1)?,
                event_id: Some(text(&row, 2)?),
                document_id: Some(text(&row, 3)?),
                journals: 1,
                detail: format!(
                    "document already posted by event {existing}; this event was not posted"
                ),
            });
        }
    }
    Ok(())
}

async fn unbalanced(
    pool: &AnyPool,
    scope: &Scope<'_>,
    limit: usize,
    tenants: &mut BTreeMap<String, TenantReconciliation>,
) -> Result<(), ErpError> {
    let (clause, params) = scope.clause("j.tenant_id", Some("j.posted_at"));
    let sql = format!(
        "SELECT j.tenant_id, j.id FROM erp_journal_entries j
         LEFT JOIN (SELECT entry_id, SUM(debit_minor) AS dr, SUM(credit_minor) AS cr,
                           COUNT(*) AS n, MIN(debit_minor) AS min_dr, MIN(credit_minor) AS min_cr
                    FROM erp_journal_lines GROUP BY entry_id) s ON s.entry_id = j.id
         WHERE ((s.entry_id IS NULL AND j.line_count > 0)
             OR (s.entry_id IS NOT NULL AND (s.dr <> s.cr OR s.dr <> j.total_minor
                 OR s.n <> j.line_count OR s.min_dr < 0 OR s.min_cr < 0))){clause}
         ORDER BY j.tenant_id, j.id"
    );
    for row in fetch(pool, "finding unbalanced journals", &sql, params).await? {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        if tenant.unbalanced_journals.len() < limit {
            tenant.unbalanced_journals.push(text(&row, 1)?);
        }
    }
    Ok(())
}

async fn payment_status(
    pool: &AnyPool,
    scope: &Scope<'_>,
    limit: usize,
    tenants: &mut BTreeMap<String, TenantReconciliation>,
) -> Result<(), ErpError> {
    let (clause, params) = scope.clause("p.tenant_id", Some("p.captured_at"));
    let sql = format!(
        "SELECT p.tenant_id, p.payment_id, d.doc_id FROM erp_payments p
         LEFT JOIN erp_ar_documents d ON d.tenant_id = p.tenant_id AND d.doc_type = 'invoice'
              AND d.doc_id = p.invoice_id
         WHERE (d.doc_id IS NULL OR d.currency <> p.currency){clause}
         ORDER BY p.tenant_id, p.payment_id"
    );
    for row in fetch(pool, "finding unapplicable payments", &sql, params).await? {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        let payment = text(&row, 1)?;
        let invoice: Option<String> = row
            .try_get(2)
            .map_err(|e| ErpError::Corrupt(format!("reconcile column 2: {e}")))?;
        if invoice.is_none() {
            tenant.held_payments_count += 1;
            if tenant.held_payments.len() < limit {
                tenant.held_payments.push(payment);
            }
        } else if tenant.currency_mismatch_payments.len() < limit {
            tenant.currency_mismatch_payments.push(payment);
        }
    }
    Ok(())
}

async fn erp_status(
    pool: &AnyPool,
    scope: &Scope<'_>,
    limit: usize,
    tenants: &mut BTreeMap<String, TenantReconciliation>,
) -> Result<(), ErpError> {
    let (clause, params) = scope.clause("j.tenant_id", Some("j.posted_at"));
    let sql = format!(
        "SELECT j.tenant_id, j.id FROM erp_journal_entries j
         WHERE j.erp_kind IS NOT NULL AND j.line_count > 0
           AND NOT EXISTS (SELECT 1 FROM erp_outbox o WHERE o.journal_id = j.id){clause}
         ORDER BY j.tenant_id, j.id"
    );
    for row in fetch(pool, "finding journals never enqueued", &sql, params).await? {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        if tenant.erp.journals_without_outbox.len() < limit {
            tenant.erp.journals_without_outbox.push(text(&row, 1)?);
        }
    }
    let (clause, params) = scope.clause("tenant_id", None);
    let sql = format!(
        "SELECT tenant_id, status, COUNT(*) FROM erp_outbox WHERE 1 = 1{clause}
         GROUP BY tenant_id, status"
    );
    for row in fetch(pool, "counting erp deliveries", &sql, params).await? {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        let n = u64::try_from(int(&row, 2)?).unwrap_or(0);
        match text(&row, 1)?.as_str() {
            "pending" => tenant.erp.pending += n,
            "accepted" => tenant.erp.accepted += n,
            // `acked` is the name rows had before adapters.
            "confirmed" | "acked" => tenant.erp.acked += n,
            "failed" => tenant.erp.failed += n,
            "resolved" => tenant.erp.resolved += n,
            other => return Err(ErpError::Corrupt(format!("outbox status {other:?}"))),
        }
    }
    let (clause, params) = scope.clause("tenant_id", None);
    let sql = format!(
        "SELECT tenant_id, journal_id, last_status, last_error, attempts, last_error_class
         FROM erp_outbox WHERE status = 'failed'{clause} ORDER BY tenant_id, journal_id"
    );
    for row in fetch(pool, "listing failed erp deliveries", &sql, params).await? {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        if tenant.erp.failed_deliveries.len() < limit {
            tenant.erp.failed_deliveries.push(FailedDelivery {
                journal_id: text(&row, 1)?,
                last_status: row
                    .try_get(2)
                    .map_err(|e| ErpError::Corrupt(format!("outbox last_status: {e}")))?,
                last_error: row
                    .try_get(3)
                    .map_err(|e| ErpError::Corrupt(format!("outbox last_error: {e}")))?,
                attempts: int(&row, 4)?,
                last_error_class: row
                    .try_get(5)
                    .map_err(|e| ErpError::Corrupt(format!("outbox last_error_class: {e}")))?,
            });
        }
    }
    Ok(())
}

/// Failed postings, and pending or accepted ones written longer than `stuck_after` ago.
async fn undelivered(
    pool: &AnyPool,
    scope: &Scope<'_>,
    limit: usize,
    stuck_after: Duration,
    tenants: &mut BTreeMap<String, TenantReconciliation>,
) -> Result<(), ErpError> {
    let now = now_micros();
    let stuck_micros = i64::try_from(stuck_after.as_micros()).unwrap_or(i64::MAX);
    let written_before = now.saturating_sub(stuck_micros);
    let (clause, mut params) = scope.clause("tenant_id", None);
    params.push(Param::Int(written_before));
    let sql = format!(
        "SELECT tenant_id, id, status, external_id, created_at, attempts, last_error_class
         FROM erp_outbox
         WHERE (status = 'failed' OR (status IN ('pending', 'accepted') AND created_at <= ${}))
           {clause}
         ORDER BY tenant_id, created_at, id",
        params.len()
    );
    for row in fetch(pool, "listing undelivered erp postings", &sql, params).await? {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        let state = text(&row, 2)?;
        if state != "failed" {
            tenant.erp.stuck += 1;
        }
        tenant.erp.undelivered_count += 1;
        if tenant.erp.undelivered.len() < limit {
            let created_at = int(&row, 4)?;
            tenant.erp.undelivered.push(UndeliveredPosting {
                id: text(&row, 1)?,
                state,
                external_id: row
                    .try_get(3)
                    .map_err(|e| ErpError::Corrupt(format!("outbox external_id: {e}")))?,
                age_secs: u64::try_from((now - created_at) / 1_000_000).unwrap_or(0),
                attempts: int(&row, 5)?,
                last_error_class: row
                    .try_get(6)
                    .map_err(|e| ErpError::Corrupt(format!("outbox last_error_class: {e}")))?,
            });
        }
    }
    Ok(())
}

async fn against_audit(
    pool: &AnyPool,
    scope: &Scope<'_>,
    limit: usize,
    tenants: &mut BTreeMap<String, TenantReconciliation>,
) -> Result<(), ErpError> {
    let applied = format!(
        "(SELECT DISTINCT tenant_id, event_type, event_id FROM audit_log
          WHERE consumer = '{CONSUMER_NAME}' AND decision = 'applied'
            AND event_type IN ('invoice_finalized', 'payment_captured', 'credit_memo_issued',
                               'invoice_voided', 'payment_refunded'))"
    );
    // Expected: applied events whose journal is in the window, or that have none.
    let (clause, params) = scope.clause("a.tenant_id", None);
    let window = time_window(scope, "j.posted_at", params.len());
    let mut all = params;
    all.extend(window.1);
    let sql = format!(
        "SELECT a.tenant_id, a.event_type, COUNT(*) FROM {applied} a
         LEFT JOIN erp_journal_entries j ON j.tenant_id = a.tenant_id AND j.event_id = a.event_id
              AND j.kind = {KIND_OF_EVENT_TYPE}
         WHERE (j.id IS NULL{window_sql}){clause}
         GROUP BY a.tenant_id, a.event_type",
        window_sql = window.0
    );
    for row in fetch(pool, "counting applied events in the audit log", &sql, all).await? {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        let Some(doc) = DocType::from_kind(&text(&row, 1)?) else {
            continue;
        };
        let d = doc.of(tenant);
        *d.expected_count.get_or_insert(0) += u64::try_from(int(&row, 2)?).unwrap_or(0);
    }
    for t in tenants.values_mut() {
        for d in [&mut t.invoices, &mut t.payments, &mut t.credit_memos] {
            d.expected_count.get_or_insert(0);
        }
    }

    // Missing: applied, no journal of the kind, and not refused (a re-sent document, or a
    // correction the stored state did not allow: posting nothing was the answer).
    let (clause, params) = scope.clause("a.tenant_id", None);
    let sql = format!(
        "SELECT a.tenant_id, a.event_type, a.event_id FROM {applied} a
         WHERE NOT EXISTS (SELECT 1 FROM erp_journal_entries j
                           WHERE j.tenant_id = a.tenant_id AND j.event_id = a.event_id
                             AND j.kind = {KIND_OF_EVENT_TYPE})
           AND NOT EXISTS (SELECT 1 FROM erp_conflicts c
                           WHERE c.tenant_id = a.tenant_id AND c.event_id = a.event_id){clause}
         ORDER BY a.tenant_id, a.event_id"
    );
    for row in fetch(
        pool,
        "finding applied events without a journal",
        &sql,
        params,
    )
    .await?
    {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        let Some(doc) = DocType::listed_with(&text(&row, 1)?) else {
            continue;
        };
        let d = doc.of(tenant);
        listed(&mut d.missing, &mut d.missing_count, text(&row, 2)?, limit);
    }

    // Extra: a document journal without its applied event or for an event that was refused;
    // an application journal without its application row or its payment's receipt journal.
    let (clause, params) = scope.clause("j.tenant_id", Some("j.posted_at"));
    let sql = format!(
        "SELECT j.tenant_id, j.kind, j.event_id FROM erp_journal_entries j
         WHERE ((j.kind IN ('invoice', 'receipt', 'credit_memo', 'invoice_void', 'refund')
                 AND (NOT EXISTS (SELECT 1 FROM {applied} a
                                  WHERE a.tenant_id = j.tenant_id AND a.event_id = j.event_id
                                    AND {KIND_OF_EVENT_TYPE} = j.kind)
                      OR EXISTS (SELECT 1 FROM erp_conflicts c
                                 WHERE c.tenant_id = j.tenant_id AND c.event_id = j.event_id)))
             OR (j.kind = 'application'
                 AND (NOT EXISTS (SELECT 1 FROM erp_applications x WHERE x.journal_id = j.id)
                      OR NOT EXISTS (SELECT 1 FROM erp_journal_entries r
                                     WHERE r.tenant_id = j.tenant_id AND r.event_id = j.event_id
                                       AND r.kind = 'receipt')))){clause}
         ORDER BY j.tenant_id, j.event_id"
    );
    for row in fetch(
        pool,
        "finding journals without an applied event",
        &sql,
        params,
    )
    .await?
    {
        let tenant = tenants.entry(text(&row, 0)?).or_default();
        let Some(doc) = DocType::listed_with(&text(&row, 1)?) else {
            continue;
        };
        let d = doc.of(tenant);
        listed(&mut d.extra, &mut d.extra_count, text(&row, 2)?, limit);
    }
    Ok(())
}

/// ` OR (col >= $n AND col < $m)` for the window, numbered after `offset` parameters.
fn time_window(scope: &Scope<'_>, col: &str, offset: usize) -> (String, Vec<Param>) {
    let mut conds = Vec::new();
    let mut params = Vec::new();
    if let Some(from) = scope.from {
        params.push(Param::Int(from));
        conds.push(format!("{col} >= ${}", offset + params.len()));
    }
    if let Some(to) = scope.to {
        params.push(Param::Int(to));
        conds.push(format!("{col} < ${}", offset + params.len()));
    }
    if conds.is_empty() {
        return (" OR j.id IS NOT NULL".into(), params);
    }
    (format!(" OR ({})", conds.join(" AND ")), params)
}

/// One document's comparable values: currency, amount, fee.
type DocValues = (String, i128, i128);

async fn against_billing(
    pool: &AnyPool,
    export: &BillingExport,
    scope: &Scope<'_>,
    limit: usize,
    tenants: &mut BTreeMap<String, TenantReconciliation>,
) -> Result<(), ErpError> {
    // Posted documents in scope, by (tenant, type, id).
    let mut posted: BTreeMap<(String, BillingDocType, String), DocValues> = BTreeMap::new();
    let (clause, params) = scope.clause("tenant_id", Some("issued_at"));
    let sql = format!(
        "SELECT tenant_id, doc_type, doc_id, currency, total_minor FROM erp_ar_documents
         WHERE doc_type IN ('invoice', 'credit_memo'){clause}"
    );
    for row in fetch(pool, "reading posted documents", &sql, params).await? {
        let doc_type = match text(&row, 1)?.as_str() {
            "invoice" => BillingDocType::Invoice,
            _ => BillingDocType::CreditMemo,
        };
        posted.insert(
            (text(&row, 0)?, doc_type, text(&row, 2)?),
            (text(&row, 3)?, i128::from(int(&row, 4)?), 0),
        );
    }
    let (clause, params) = scope.clause("tenant_id", Some("captured_at"));
    let sql = format!(
        "SELECT tenant_id, payment_id, currency, amount_minor, fee_minor FROM erp_payments
         WHERE 1 = 1{clause}"
    );
    for row in fetch(pool, "reading posted payments", &sql, params).await? {
        posted.insert(
            (text(&row, 0)?, BillingDocType::Payment, text(&row, 1)?),
            (
                text(&row, 2)?,
                i128::from(int(&row, 3)?),
                i128::from(int(&row, 4)?),
            ),
        );
    }

    let in_window = |at: Option<i64>| {
        at.is_none_or(|t| scope.from.is_none_or(|f| t >= f) && scope.to.is_none_or(|e| t < e))
    };
    // Expected totals per (tenant, type): amount and fee per currency.
    type Totals = BTreeMap<String, (i128, i128)>;
    let mut expected: BTreeMap<(String, BillingDocType), (u64, Totals)> = BTreeMap::new();
    for doc in &export.documents {
        if scope.tenant.is_some_and(|t| t != doc.tenant_id) || !in_window(doc.issued_at) {
            continue;
        }
        let key = (doc.tenant_id.clone(), doc.doc_type, doc.document_id.clone());
        let entry = expected
            .entry((doc.tenant_id.clone(), doc.doc_type))
            .or_default();
        entry.0 += 1;
        let t = entry.1.entry(doc.currency.clone()).or_default();
        t.0 += doc.amount_minor;
        t.1 += doc.fee_minor;
        let tenant = tenants.entry(doc.tenant_id.clone()).or_default();
        let d = billing_doc(doc.doc_type, tenant);
        match posted.remove(&key) {
            None => listed(
                &mut d.missing,
                &mut d.missing_count,
                doc.document_id.clone(),
                limit,
            ),
            Some((currency, amount, fee)) => {
                if currency != doc.currency
                    || amount != doc.amount_minor
                    || (doc.doc_type == BillingDocType::Payment && fee != doc.fee_minor)
                {
                    listed(
                        &mut d.mismatched,
                        &mut d.mismatched_count,
                        doc.document_id.clone(),
                        limit,
                    );
                }
            }
        }
    }
    // What is left was posted but is not in the export.
    for ((tenant, doc_type, id), _) in posted {
        let t = tenants.entry(tenant).or_default();
        let d = billing_doc(doc_type, t);
        listed(&mut d.extra, &mut d.extra_count, id, limit);
    }
    for (tenant_id, tenant) in tenants.iter_mut() {
        for doc_type in [
            BillingDocType::Invoice,
            BillingDocType::Payment,
            BillingDocType::CreditMemo,
        ] {
            let (count, totals) = expected
                .remove(&(tenant_id.clone(), doc_type))
                .unwrap_or_default();
            let d = billing_doc(doc_type, tenant);
            d.expected_count = Some(count);
            let mut amounts = BTreeMap::new();
            let mut fees = BTreeMap::new();
            for (currency, (amount, fee)) in &totals {
                amounts.insert(currency.clone(), decimal(*amount, currency)?);
                fees.insert(currency.clone(), decimal(*fee, currency)?);
            }
            d.expected_total = Some(render_totals(&amounts));
            d.count_matches = Some(d.posted_count == count);
            let mut totals_agree = amounts == d.posted_total;
            if doc_type == BillingDocType::Payment {
                d.expected_fees = Some(render_totals(&fees));
                let posted_fees = d.posted_fees.clone().unwrap_or_default();
                totals_agree &= fees == posted_fees;
            }
            d.total_matches = Some(totals_agree);
        }
    }
    Ok(())
}

fn billing_doc(
    doc_type: BillingDocType,
    t: &mut TenantReconciliation,
) -> &mut DocumentReconciliation {
    match doc_type {
        BillingDocType::Invoice => &mut t.invoices,
        BillingDocType::Payment => &mut t.payments,
        BillingDocType::CreditMemo => &mut t.credit_memos,
    }
}

/// `"12.00"` for one currency, `"12.00 EUR + 3.00 USD"` for several, `"0"` for none.
fn render_totals(totals: &BTreeMap<String, String>) -> String {
    match totals.len() {
        0 => "0".to_owned(),
        1 => totals.values().next().cloned().unwrap_or_default(),
        _ => totals
            .iter()
            .map(|(c, v)| format!("{v} {c}"))
            .collect::<Vec<_>>()
            .join(" + "),
    }
}

fn against_manifest(
    manifest: &Manifest,
    only: Option<&str>,
    tenants: &mut BTreeMap<String, TenantReconciliation>,
) -> Result<(), ErpError> {
    for id in manifest.tenants.keys() {
        if only.is_some_and(|t| t != id) {
            continue;
        }
        tenants.entry(id.clone()).or_default();
    }
    for (id, tenant) in tenants.iter_mut() {
        let Some(expected) = manifest.tenants.get(id) else {
            // Posted for a tenant the manifest never sent to: everything is unexpected.
            for d in [
                &mut tenant.invoices,
                &mut tenant.payments,
                &mut tenant.credit_memos,
            ] {
                d.expected_count = Some(0);
                d.count_matches = Some(d.posted_count == 0);
                d.total_matches = Some(d.posted_count == 0);
            }
            continue;
        };
        let currency = Currency::parse(&expected.currency)
            .map_err(|e| ErpError::Manifest(format!("tenant {id}: {e}")))?;
        let exp = currency.exponent();
        let matches = |posted: &BTreeMap<String, String>, total: i128| -> bool {
            let expected_text = format_minor(total, exp);
            match posted.len() {
                0 => total == 0,
                1 => posted.get(currency.code()) == Some(&expected_text),
                _ => false,
            }
        };
        for (d, e) in [
            (&mut tenant.invoices, &expected.invoices),
            (&mut tenant.credit_memos, &expected.credit_memos),
        ] {
            let total = parse_minor(&e.total, exp).map_err(ErpError::Manifest)?;
            d.expected_count = Some(e.count);
            d.expected_total = Some(format_minor(total, exp));
            d.count_matches = Some(d.posted_count == e.count);
            d.total_matches = Some(matches(&d.posted_total, total));
        }
        let p = &mut tenant.payments;
        let total = parse_minor(&expected.payments.total, exp).map_err(ErpError::Manifest)?;
        let fees = parse_minor(&expected.payments.fees, exp).map_err(ErpError::Manifest)?;
        p.expected_count = Some(expected.payments.count);
        p.expected_total = Some(format_minor(total, exp));
        p.expected_fees = Some(format_minor(fees, exp));
        p.count_matches = Some(p.posted_count == expected.payments.count);
        let posted_fees = p.posted_fees.clone().unwrap_or_default();
        p.total_matches = Some(matches(&p.posted_total, total) && matches(&posted_fees, fees));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_numbers_parameters_in_order() {
        let scope = Scope {
            tenant: Some("t1"),
            from: Some(5),
            to: None,
        };
        let (sql, params) = scope.clause("d.tenant_id", Some("d.issued_at"));
        assert_eq!(sql, " AND d.tenant_id = $1 AND d.issued_at >= $2");
        assert_eq!(params.len(), 2);
        let (sql, _) = time_window(&scope, "j.posted_at", 1);
        assert_eq!(sql, " OR (j.posted_at >= $2)");
    }

    #[test]
    fn manifest_totals_are_compared_exactly() {
        let manifest = Manifest::from_json(serde_json::json!({
            "seed": 1,
            "tenants": {"t1": {
                "currency": "USD",
                "events": {},
                "invoices": {"count": 2, "total": "10.00"},
                "payments": {"count": 1, "total": "5.00", "fees": "0.10"},
                "credit_memos": {"count": 0, "total": "0.00"}
            }}
        }))
        .unwrap();
        let mut tenants = BTreeMap::new();
        let mut t = TenantReconciliation::default();
        t.invoices.posted_count = 2;
        t.invoices.posted_total.insert("USD".into(), "10.00".into());
        t.payments.posted_count = 1;
        t.payments.posted_total.insert("USD".into(), "5.00".into());
        t.payments.posted_fees = Some(BTreeMap::from([("USD".into(), "0.11".into())]));
        tenants.insert("t1".to_owned(), t);
        against_manifest(&manifest, None, &mut tenants).unwrap();
        let t = &tenants["t1"];
        assert_eq!(t.invoices.count_matches, Some(true));
        assert_eq!(t.invoices.total_matches, Some(true));
        assert_eq!(t.credit_memos.total_matches, Some(true));
        assert_eq!(t.payments.count_matches, Some(true));
        assert_eq!(
            t.payments.total_matches,
            Some(false),
            "fees differ by one cent"
        );
        assert!(!t.is_clean());
    }
}
