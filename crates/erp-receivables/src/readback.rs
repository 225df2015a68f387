//! ERP read-back, the third leg of reconciliation (`ledgerflow reconcile --erp-readback`):
//! billing source -> journals -> postings, and now postings -> the ERP itself.
//!
//! A `confirmed` posting says the ERP once held its document. Read-back asks the tenant's ERP
//! again, for every confirmed posting in scope (and every `resolved` one an operator recorded
//! an ERP document id for), through the **same** adapter lookup by external id the dispatcher
//! uses after an indefinite outcome ([`crate::Dispatcher::find_document`]): the same auth, the
//! same account limits (a throttled lookup pauses the account), the same HTTP client and
//! redaction. Nothing is written: not the outbox, not the ERP.
//!
//! Each posting ends as one of:
//!
//! - **found**: the ERP holds a document under the external id. When the adapter's lookup
//!   returns the document's amount ([`crate::ReadBack::Found`] with an amount), it is compared
//!   with the journal's total and currency; a difference is **mismatched**. When it returns no
//!   amount, the document is found and its amount is *not* compared (counted as
//!   `amount_not_returned`, per ERP in [`ReadbackReport::erps`]): read-back does not pretend.
//! - **missing**: the posting is confirmed but the ERP has no document with its external id
//!   (deleted or reversed in the ERP, restored from a backup, a wrong account).
//! - **unanswered**: the lookup kept failing (after `attempts` tries; throttling does not
//!   count) or failed permanently (credentials refused): nothing is known.
//!
//! Missing, mismatched and unanswered postings make the reconciliation unclean. Informational
//! only: a document found under another ERP id than the one recorded at confirmation
//! (`other_document`), and a `resolved` posting not found by its external id
//! (`resolved_not_found`: a document an operator posted by hand rarely carries ledgerflow's
//! external id).
//!
//! Counts are per tenant, currency and period (the UTC month of the journal's `posted_at`);
//! `tenant`, `from` and `to` scope postings like the rest of reconcile (business time of the
//! journal). Lookups run `concurrency` at a time (each still held to its account's own
//! concurrency and rate), a page of postings at a time, so memory does not grow with the outbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ledgerflow_core::{Currency, date_of_micros, format_minor};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use tokio::task::JoinSet;

use crate::ErpError;
use crate::adapter::{ErpAmount, ReadBack, RetryClass};
use crate::dispatcher::{Dispatcher, POSTING_COLUMNS, decode_posting};
use crate::posting::{ErpPosting, PostingState};
use crate::reconcile::{Param, Scope, fetch};

/// Postings loaded per query.
const PAGE: i64 = 500;

/// Throttled answers tolerated per posting before it is left unanswered (they pause the
/// account and do not count as attempts, but a read-back must end).
const MAX_THROTTLED: u32 = 20;

/// What to read back.
#[derive(Debug, Clone)]
pub struct ReadbackOptions {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Business time of the journal from (micros, inclusive).
    pub from: Option<i64>,
    /// Business time of the journal to (micros, exclusive).
    pub to: Option<i64>,
    /// Lookups in flight at once, all accounts together (default 8); each account is further
    /// held to its own `concurrency` from the tenants file.
    pub concurrency: usize,
    /// Tries per posting for transient failures (timeouts, 5xx), throttling not counted
    /// (default 3).
    pub attempts: u32,
    /// First wait before a retry; doubles per try, at least the ERP's `Retry-After`
    /// (default 500 ms).
    pub retry_delay: Duration,
    /// Longest list of postings per tenant and kind (counts are always complete). Default 100.
    pub max_listed: usize,
}

impl Default for ReadbackOptions {
    fn default() -> Self {
        Self {
            tenant: None,
            from: None,
            to: None,
            concurrency: 8,
            attempts: 3,
            retry_delay: Duration::from_millis(500),
            max_listed: 100,
        }
    }
}

/// Progress of a read-back: `start` once with the postings to ask about, `advance` as lookups
/// end.
pub trait ReadbackProgress: Sync {
    /// `total` postings will be asked about.
    fn start(&self, _total: u64) {}
    /// `n` more answered.
    fn advance(&self, _n: u64) {}
}

/// No progress reporting.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl ReadbackProgress for NoProgress {}

/// The read-back report (part of `reconcile --format json` as `erp_readback`, and per tenant).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReadbackReport {
    /// Postings asked about.
    pub checked: u64,
    /// Found in the ERP.
    pub found: u64,
    /// Confirmed, not in the ERP.
    pub missing: u64,
    /// Found with an amount or currency other than the journal's.
    pub mismatched: u64,
    /// The lookup did not answer.
    pub unanswered: u64,
    /// Confirmed postings that cannot be asked about: no stored route (written before the
    /// adapters).
    pub not_checked: u64,
    /// Lookups in flight at most.
    pub concurrency: usize,
    /// Per ERP kind: what was found and whether amounts were compared.
    pub erps: BTreeMap<String, ErpReadbackKind>,
    /// Per tenant.
    pub tenants: BTreeMap<String, TenantReadback>,
}

impl ReadbackReport {
    /// Nothing missing, mismatched or unanswered.
    pub fn is_clean(&self) -> bool {
        self.tenants.values().all(TenantReadback::is_clean)
    }
}

/// What one ERP kind's lookups returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErpReadbackKind {
    /// Postings asked about.
    pub checked: u64,
    /// Found.
    pub found: u64,
    /// Found with an amount, compared with the journal.
    pub amount_compared: u64,
    /// Found, but the lookup returned no amount: not compared.
    pub amount_not_returned: u64,
}

/// One tenant's read-back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TenantReadback {
    /// Counts per currency and period (`YYYY-MM`, UTC, of the journal's `posted_at`).
    pub periods: Vec<ReadbackPeriod>,
    /// Confirmed, not in the ERP.
    pub missing: Vec<ReadbackDifference>,
    /// All missing, listed or not.
    pub missing_count: u64,
    /// Found with another amount or currency.
    pub mismatched: Vec<ReadbackDifference>,
    /// All mismatched.
    pub mismatched_count: u64,
    /// The lookup did not answer (with the last error).
    pub unanswered: Vec<ReadbackDifference>,
    /// All unanswered.
    pub unanswered_count: u64,
    /// Found under another ERP document id than the one recorded (informational).
    pub other_document: Vec<ReadbackDifference>,
    /// All found under another id.
    pub other_document_count: u64,
    /// Resolved postings not found by their external id (informational: a document posted by
    /// hand rarely carries it).
    pub resolved_not_found: Vec<ReadbackDifference>,
    /// All resolved and not found.
    pub resolved_not_found_count: u64,
}

impl TenantReadback {
    /// Nothing missing, mismatched or unanswered.
    pub fn is_clean(&self) -> bool {
        self.missing_count == 0 && self.mismatched_count == 0 && self.unanswered_count == 0
    }
}

/// Counts of one tenant, currency and period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReadbackPeriod {
    /// The journals' currency (`?` when the journal row is gone).
    pub currency: String,
    /// `YYYY-MM` (UTC) of the journals' `posted_at` (`?` when the journal row is gone).
    pub period: String,
    /// Documents the ERP should hold (postings asked about).
    pub expected: u64,
    /// Exact decimal sum of their journals' totals.
    pub expected_total: String,
    /// Found in the ERP.
    pub found: u64,
    /// Found, and the ERP's amount and currency agree with the journal.
    pub amount_agrees: u64,
    /// Found, but the ERP's lookup returned no amount: not compared.
    pub amount_not_returned: u64,
    /// Not in the ERP.
    pub missing: u64,
    /// Found with another amount or currency.
    pub mismatched: u64,
    /// The lookup did not answer.
    pub unanswered: u64,
}

/// One posting read-back found wanting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadbackDifference {
    /// Posting (outbox) id, as `ledgerflow postings show` takes it.
    pub posting_id: String,
    /// External id in the ERP.
    pub external_id: String,
    /// ERP kind.
    pub erp: String,
    /// `confirmed` or `resolved`.
    pub state: String,
    /// The ERP document id recorded at confirmation (or by the operator).
    pub document_id: Option<String>,
    /// The ERP document id the lookup found, when found.
    pub erp_document_id: Option<String>,
    /// The journal's currency and total (exact decimal).
    pub currency: Option<String>,
    /// The journal's total.
    pub amount: Option<String>,
    /// The currency the ERP returned.
    pub erp_currency: Option<String>,
    /// The amount the ERP returned (exact decimal in `erp_currency`).
    pub erp_amount: Option<String>,
    /// Why it is listed (the lookup's error for an unanswered one).
    pub detail: Option<String>,
}

/// One posting to ask about, with its journal's currency, total and period.
#[derive(Debug)]
struct Expected {
    posting: Result<ErpPosting, String>,
    id: String,
    tenant: String,
    external_id: String,
    erp: String,
    state: PostingState,
    document_id: Option<String>,
    currency: Option<String>,
    total_minor: Option<i64>,
    posted_at: Option<i64>,
}

/// What came of one posting.
#[derive(Debug)]
enum Answer {
    Found {
        document_id: String,
        amount: Option<ErpAmount>,
    },
    NotFound,
    Unanswered(String),
}

/// Asks each confirmed posting's ERP for its document. See the module docs.
pub async fn read_back(
    dispatcher: &Dispatcher,
    opts: &ReadbackOptions,
    progress: &dyn ReadbackProgress,
) -> Result<ReadbackReport, ErpError> {
    let pool = dispatcher.pool();
    let scope = Scope {
        tenant: opts.tenant.as_deref(),
        from: opts.from,
        to: opts.to,
    };
    let concurrency = opts.concurrency.max(1);
    let mut report = ReadbackReport {
        concurrency,
        ..ReadbackReport::default()
    };
    if let Some(t) = &opts.tenant {
        report.tenants.entry(t.clone()).or_default();
    }

    // The postings in scope: confirmed (`acked` before the adapters), and resolved with an
    // ERP document id; dated by their journal.
    let base = "(SELECT o.*, j.currency AS j_currency, j.total_minor AS j_total,
                        j.posted_at AS j_posted_at
                 FROM erp_outbox o LEFT JOIN erp_journal_entries j ON j.id = o.journal_id
                 WHERE o.status IN ('confirmed', 'acked')
                    OR (o.status = 'resolved' AND o.erp_document_id IS NOT NULL)) AS x";
    let (clause, params) = scope.clause("x.tenant_id", Some("x.j_posted_at"));
    let sql = format!(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN x.route IS NULL THEN 1 ELSE 0 END), 0)
         FROM {base} WHERE 1 = 1{clause}"
    );
    let counted = fetch(pool, "counting postings to read back", &sql, params).await?;
    let (total, without_route) = match counted.first() {
        Some(row) => (count(row, 0)?, count(row, 1)?),
        None => (0, 0),
    };
    report.not_checked = without_route;
    progress.start(total.saturating_sub(without_route));

    let mut after = String::new();
    loop {
        let (clause, mut params) = scope.clause("x.tenant_id", Some("x.j_posted_at"));
        params.push(Param::Text(after.clone()));
        let sql = format!(
            "SELECT {POSTING_COLUMNS}, erp_document_id, j_currency, j_total, j_posted_at
             FROM {base}
             WHERE x.route IS NOT NULL AND x.id > ${}{clause}
             ORDER BY x.id LIMIT {PAGE}",
            params.len()
        );
        let rows = fetch(pool, "reading postings to read back", &sql, params).await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last
            .try_get::<String, _>(0)
            .map_err(|e| ErpError::Corrupt(format!("erp_outbox id: {e}")))?;
        let mut page: Vec<Expected> = rows.iter().map(expected).collect::<Result<_, _>>()?;
        {
            let mut decoded: Vec<&mut ErpPosting> = page
                .iter_mut()
                .filter_map(|e| e.posting.as_mut().ok())
                .collect();
            dispatcher.with_dependencies(&mut decoded).await?;
        }
        ask_all(dispatcher, opts, concurrency, page, progress, &mut report).await?;
        if rows.len() < PAGE as usize {
            break;
        }
    }
    Ok(report)
}

/// Asks about one page of postings, `concurrency` at a time, and records each answer.
async fn ask_all(
    dispatcher: &Dispatcher,
    opts: &ReadbackOptions,
    concurrency: usize,
    page: Vec<Expected>,
    progress: &dyn ReadbackProgress,
    report: &mut ReadbackReport,
) -> Result<(), ErpError> {
    let mut tasks: JoinSet<(Expected, Answer)> = JoinSet::new();
    let mut queue = page.into_iter();
    let opts = Arc::new(opts.clone());
    loop {
        while tasks.len() < concurrency {
            let Some(item) = queue.next() else { break };
            let dispatcher = dispatcher.clone();
            let opts = Arc::clone(&opts);
            tasks.spawn(async move {
                let answer = match &item.posting {
                    Ok(posting) => ask(&dispatcher, &opts, posting).await,
                    Err(e) => Answer::Unanswered(format!("unreadable posting: {e}")),
                };
                (item, answer)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (item, answer) = joined
            .map_err(|e| ErpError::Corrupt(format!("erp read-back ended abnormally: {e}")))?;
        record(report, item, answer, opts.max_listed)?;
        progress.advance(1);
    }
    Ok(())
}

/// One posting's lookup, retried on transient failures.
async fn ask(dispatcher: &Dispatcher, opts: &ReadbackOptions, posting: &ErpPosting) -> Answer {
    let mut tries = 0u32;
    let mut throttled = 0u32;
    loop {
        let retry = match dispatcher.find_document(posting).await {
            ReadBack::Found {
                document_id,
                amount,
            } => {
                return Answer::Found {
                    document_id,
                    amount,
                };
            }
            ReadBack::NotFound => return Answer::NotFound,
            ReadBack::Failed(f) => {
                return Answer::Unanswered(format!("{}: {}", f.class.as_str(), f.reason));
            }
            ReadBack::Retry(r) => r,
        };
        if retry.class == RetryClass::Throttled {
            // The account is paused; the next lookup waits the pause out.
            throttled += 1;
            if throttled <= MAX_THROTTLED {
                continue;
            }
        } else {
            tries += 1;
        }
        if tries >= opts.attempts.max(1) || throttled > MAX_THROTTLED {
            return Answer::Unanswered(format!("{}: {}", retry.class.as_str(), retry.detail));
        }
        let backoff = opts
            .retry_delay
            .saturating_mul(1u32 << tries.min(6))
            .min(Duration::from_secs(30));
        tokio::time::sleep(backoff.max(retry.retry_after.unwrap_or_default())).await;
    }
}

fn count(row: &AnyRow, i: usize) -> Result<u64, ErpError> {
    row.try_get::<Option<i64>, _>(i)
        .map(|n| u64::try_from(n.unwrap_or(0)).unwrap_or(0))
        .map_err(|e| ErpError::Corrupt(format!("read-back count: {e}")))
}

fn expected(row: &AnyRow) -> Result<Expected, ErpError> {
    let col = |i: usize| -> Result<Option<String>, ErpError> {
        row.try_get(i)
            .map_err(|e| ErpError::Corrupt(format!("read-back column {i}: {e}")))
    };
    let int = |i: usize| -> Result<Option<i64>, ErpError> {
        row.try_get(i)
            .map_err(|e| ErpError::Corrupt(format!("read-back column {i}: {e}")))
    };
    // Columns after POSTING_COLUMNS (14 of them).
    let document_id = col(14)?;
    let currency = col(15)?;
    let total_minor = int(16)?;
    let posted_at = int(17)?;
    let id = col(0)?.unwrap_or_default();
    let tenant = col(1)?.unwrap_or_default();
    let external_id = col(5)?.unwrap_or_default();
    let status = col(12)?.unwrap_or_default();
    let state = PostingState::parse(&status).unwrap_or(PostingState::Confirmed);
    // A row the dispatcher could not read is asked about by nobody: report it, do not stop.
    let posting = decode_posting(row)
        .map(|(p, _)| p)
        .map_err(|e| e.to_string());
    let erp = match &posting {
        Ok(p) => p.route.kind().as_str().to_owned(),
        Err(_) => "?".to_owned(),
    };
    Ok(Expected {
        posting,
        id,
        tenant,
        external_id,
        erp,
        state,
        document_id,
        currency,
        total_minor,
        posted_at,
    })
}

/// Exact decimal of `minor` in `currency`, or the bare number when the code is unknown.
fn decimal(minor: i128, currency: &str) -> String {
    match Currency::parse(currency) {
        Ok(c) => format_minor(minor, c.exponent()),
        Err(_) => minor.to_string(),
    }
}

fn record(
    report: &mut ReadbackReport,
    item: Expected,
    answer: Answer,
    limit: usize,
) -> Result<(), ErpError> {
    let currency = item.currency.clone().unwrap_or_else(|| "?".to_owned());
    let period = item
        .posted_at
        .map(|t| date_of_micros(t).chars().take(7).collect())
        .unwrap_or_else(|| "?".to_owned());
    report.checked += 1;
    let kind = report.erps.entry(item.erp.clone()).or_default();
    kind.checked += 1;
    let tenant = report.tenants.entry(item.tenant.clone()).or_default();
    let row = match tenant
        .periods
        .iter()
        .position(|p| p.currency == currency && p.period == period)
    {
        Some(i) => &mut tenant.periods[i],
        None => {
            tenant.periods.push(ReadbackPeriod {
                currency: currency.clone(),
                period: period.clone(),
                expected_total: "0".to_owned(),
                ..ReadbackPeriod::default()
            });
            tenant.periods.sort_by(|a, b| {
                (a.currency.as_str(), a.period.as_str()).cmp(&(b.currency.as_str(), &b.period))
            });
            let i = tenant
                .periods
                .iter()
                .position(|p| p.currency == currency && p.period == period)
                .ok_or_else(|| ErpError::Corrupt("read-back period vanished".into()))?;
            &mut tenant.periods[i]
        }
    };
    row.expected += 1;
    let exponent = Currency::parse(&currency).map(|c| c.exponent()).ok();
    if let (Some(total), Some(exp)) = (item.total_minor, exponent) {
        let sum = ledgerflow_core::parse_minor(&row.expected_total, exp).unwrap_or(0);
        row.expected_total = format_minor(sum + i128::from(total), exp);
    }
    let difference = |erp_document_id: Option<String>,
                      erp: Option<&ErpAmount>,
                      detail: Option<String>| ReadbackDifference {
        posting_id: item.id.clone(),
        external_id: item.external_id.clone(),
        erp: item.erp.clone(),
        state: item.state.as_str().to_owned(),
        document_id: item.document_id.clone(),
        erp_document_id,
        currency: item.currency.clone(),
        amount: item.total_minor.map(|t| decimal(i128::from(t), &currency)),
        erp_currency: erp.map(|a| a.currency.clone()),
        erp_amount: erp.map(|a| decimal(a.amount_minor, &a.currency)),
        detail,
    };
    match answer {
        Answer::Found {
            document_id,
            amount,
        } => {
            report.found += 1;
            kind.found += 1;
            row.found += 1;
            match &amount {
                None => {
                    kind.amount_not_returned += 1;
                    row.amount_not_returned += 1;
                }
                Some(erp_amount) => {
                    kind.amount_compared += 1;
                    let agrees = item
                        .currency
                        .as_deref()
                        .is_some_and(|c| c.eq_ignore_ascii_case(&erp_amount.currency))
                        && item.total_minor.map(i128::from) == Some(erp_amount.amount_minor);
                    if agrees {
                        row.amount_agrees += 1;
                    } else {
                        row.mismatched += 1;
                        report.mismatched += 1;
                        let d = difference(
                            Some(document_id.clone()),
                            Some(erp_amount),
                            Some("the erp's amount or currency differs from the journal's".into()),
                        );
                        listed(
                            &mut tenant.mismatched,
                            &mut tenant.mismatched_count,
                            d,
                            limit,
                        );
                    }
                }
            }
            if item
                .document_id
                .as_deref()
                .is_some_and(|recorded| recorded != document_id)
            {
                let d = difference(
                    Some(document_id),
                    amount.as_ref(),
                    Some("found under another erp document id than the one recorded".into()),
                );
                listed(
                    &mut tenant.other_document,
                    &mut tenant.other_document_count,
                    d,
                    limit,
                );
            }
        }
        Answer::NotFound if item.state == PostingState::Resolved => {
            // Counted as expected but neither found nor missing: see the module docs.
            let d = difference(
                None,
                None,
                Some("resolved by an operator; not found by its external id".into()),
            );
            listed(
                &mut tenant.resolved_not_found,
                &mut tenant.resolved_not_found_count,
                d,
                limit,
            );
        }
        Answer::NotFound => {
            report.missing += 1;
            row.missing += 1;
            let d = difference(
                None,
                None,
                Some("confirmed, but the erp has no document with its external id".into()),
            );
            listed(&mut tenant.missing, &mut tenant.missing_count, d, limit);
        }
        Answer::Unanswered(detail) => {
            report.unanswered += 1;
            row.unanswered += 1;
            let d = difference(None, None, Some(detail));
            listed(
                &mut tenant.unanswered,
                &mut tenant.unanswered_count,
                d,
                limit,
            );
        }
    }
    Ok(())
}

fn listed(
    list: &mut Vec<ReadbackDifference>,
    count: &mut u64,
    d: ReadbackDifference,
    limit: usize,
) {
    *count += 1;
    if list.len() < limit {
        list.push(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(state: PostingState, total: i64) -> Expected {
        Expected {
            posting: Err("not needed".into()),
            id: "p1".into(),
            tenant: "t1".into(),
            external_id: "lf-t1-x-inv".into(),
            erp: "netsuite".into(),
            state,
            document_id: Some("101".into()),
            currency: Some("USD".into()),
            total_minor: Some(total),
            posted_at: Some(1_700_000_000_000_000),
        }
    }

    #[test]
    fn answers_are_counted_per_currency_and_period() {
        let mut report = ReadbackReport::default();
        let usd = |minor| {
            Some(ErpAmount {
                currency: "USD".into(),
                amount_minor: minor,
            })
        };
        let found = |amount| Answer::Found {
            document_id: "101".into(),
            amount,
        };
        record(
            &mut report,
            item(PostingState::Confirmed, 2816),
            found(usd(2816)),
            10,
        )
        .unwrap();
        record(
            &mut report,
            item(PostingState::Confirmed, 2816),
            found(usd(2817)),
            10,
        )
        .unwrap();
        record(
            &mut report,
            item(PostingState::Confirmed, 100),
            found(None),
            10,
        )
        .unwrap();
        record(
            &mut report,
            item(PostingState::Confirmed, 100),
            Answer::NotFound,
            10,
        )
        .unwrap();
        record(
            &mut report,
            item(PostingState::Resolved, 100),
            Answer::NotFound,
            10,
        )
        .unwrap();
        record(
            &mut report,
            item(PostingState::Confirmed, 100),
            Answer::Unanswered("server: 503".into()),
            10,
        )
        .unwrap();
        let t = &report.tenants["t1"];
        assert_eq!(t.periods.len(), 1);
        let p = &t.periods[0];
        assert_eq!((p.currency.as_str(), p.period.as_str()), ("USD", "2023-11"));
        assert_eq!(
            (p.expected, p.found, p.amount_agrees, p.amount_not_returned),
            (6, 3, 1, 1)
        );
        assert_eq!((p.missing, p.mismatched, p.unanswered), (1, 1, 1));
        assert_eq!(p.expected_total, "60.32");
        assert_eq!(t.mismatched[0].erp_amount.as_deref(), Some("28.17"));
        assert_eq!(t.mismatched[0].amount.as_deref(), Some("28.16"));
        assert_eq!(t.resolved_not_found_count, 1);
        assert_eq!(report.erps["netsuite"].amount_compared, 2);
        assert_eq!(report.erps["netsuite"].amount_not_returned, 1);
        assert!(!report.is_clean());
    }
}
