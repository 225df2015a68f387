//! Oracle Fusion Cloud Financials: FBDI files imported through the `erpintegrations` REST
//! resource (`importBulkData`), confirmed by the ESS job that imports them. Basic auth (the
//! integration user) or OAuth client credentials, whatever the route says.
//!
//! | journal | mode `journal` | mode `subledger` |
//! | --- | --- | --- |
//! | invoice | journal import (`GlInterface.csv`, GL_INTERFACE rows) | AutoInvoice (`RaInterfaceLinesAll.csv`): a `LINE` per revenue line, a `TAX` line linked to the first one |
//! | credit memo | journal import | AutoInvoice, negative amounts, referring to its invoice's first line (and waiting for it) |
//! | receipt, application | journal import | journal import: FBDI AutoInvoice has no receipts, so they stay journals |
//!
//! **The posting's key** ([`crate::posting::erp_key`]: the 20-character compact key of its
//! external id, which at 44 characters and more fits neither the flexfield's 30 characters nor
//! what journal import keeps of a name) is the journal name (`REFERENCE4`, also the batch name
//! `REFERENCE1`) of a GL journal, and the transaction flexfield of an AutoInvoice transaction
//! (`INTERFACE_LINE_CONTEXT` `LEDGERFLOW`, `INTERFACE_LINE_ATTRIBUTE1` the key,
//! `INTERFACE_LINE_ATTRIBUTE2` the line number). Uploads, lookups and read-back all use it.
//!
//! **One attempt:** the posting's rows go into an FBDI zip, shared with the other postings of
//! the same account, credentials, import and ledger/source that are sent within
//! [`Fusion::with_batching`]'s window (the framework hands an adapter one posting per attempt;
//! the attempts of one account that run at the same time, up to its `[[erp_accounts]]`
//! concurrency, meet here and one of them uploads the zip for all). `importBulkData` answers
//! 201 with the ESS request id: every posting of the zip becomes `accepted` with
//! `gl:<id>` / `ar:<id>` as its job. **201 only means submitted.**
//!
//! **Polling** (`ESSJobStatusRF`) keeps the posting `accepted` while the job runs. When it has
//! ended, each posting decides for itself, so a zip of many postings still has exact outcomes:
//! its document among those the job created (`journalBatches` / `receivablesInvoices` read back
//! by `RequestId`) or found by its external id is `confirmed` with the document's id
//! (`JeHeaderId`, `TransactionNumber`); otherwise, after `WARNING` or `ERROR`, the job's log
//! (`ESSJobExecutionDetailsRF`) says why it was rejected and the posting `failed(rejected)`
//! with that text, except an AutoInvoice rejection for a **duplicate transaction flexfield**,
//! which means the transaction is already there (or still in the interface): it is looked up
//! again later and confirmed when found.
//!
//! **Nothing is imported twice.** After an indefinite upload (a timeout, a connection lost after
//! the request was written) the dispatcher asks [`ErpAdapter::find`] first: journals by
//! `JournalName`, transactions by flexfield. Journal import does not deduplicate, and a job
//! submitted by the lost request may still be queued when the lookup runs, so for
//! [`Fusion::with_settle`] after such an upload (remembered by this process) "not found" is
//! "not yet": the posting waits instead of uploading again. AutoInvoice refuses a second copy
//! by its flexfield, so a re-sent transaction cannot be imported twice.
//!
//! **CSV:** RFC 4180, values always text, dates `YYYY/MM/DD`. The simulator wants a header row
//! of interface column names ([`FbdiCsv::HeaderRow`], the default); real FBDI files are
//! positional, without one ([`FbdiCsv::Positional`]: the columns in the template's order, empty
//! where ledgerflow has nothing, trailing ones left out).

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ledgerflow_core::format_minor;
use ledgerflow_tenants::{ErpKind, ErpMode, OracleFusionMapping};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};

use crate::ErpError;
use crate::adapter::{
    BoxFuture, Document, ErpAdapter, ErpAmount, Exchange, FailClass, Failed, HttpRequest,
    HttpResponse, Lookup, Outcome, Problem, ReadBack, RenderInput, Rendered, Retry, RetryClass,
    decimal_amount,
};
use crate::auth::encode;
use crate::journal::{JournalEntry, JournalKind};
use crate::posting::{ErpPosting, erp_key, kind_dependencies};

/// Document kind of a journal import posting.
pub const GL_KIND: &str = "GlJournal";
/// Document kind of an AutoInvoice posting.
pub const AR_KIND: &str = "ArTransaction";
/// `INTERFACE_LINE_CONTEXT` of ledgerflow's transactions (a Line Transactions flexfield
/// context the pod must define, with ATTRIBUTE1 and ATTRIBUTE2 enabled).
pub const LINE_CONTEXT: &str = "LEDGERFLOW";

const API: &str = "/fscmRestApi/resources/11.13.18.05";

/// ESS statuses of a job that has not ended.
const RUNNING: [&str; 9] = [
    "RUNNING",
    "WAIT",
    "WAITING",
    "READY",
    "BLOCKED",
    "PAUSED",
    "PENDING",
    "SCHEDULED",
    "HOLD",
];

/// How long the status of a running job is reused by the other postings of its zip.
const RUNNING_CACHE: Duration = Duration::from_millis(500);
/// How long what an ended job did is kept for the postings of its zip.
const ENDED_CACHE: Duration = Duration::from_secs(600);
/// Read-back pages followed at most (of 500 items).
const MAX_PAGES: usize = 50;

/// Whether an FBDI CSV starts with a header row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FbdiCsv {
    /// A header row of interface column names, then only the columns used (the simulator).
    #[default]
    HeaderRow,
    /// No header: every column of the template's layout up to the last one used, in order
    /// (real FBDI, whose control files read columns by position).
    Positional,
}

/// The two imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Import {
    Gl,
    Ar,
}

impl Import {
    fn of(document_kind: &str) -> Option<Self> {
        match document_kind {
            GL_KIND => Some(Self::Gl),
            AR_KIND => Some(Self::Ar),
            _ => None,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Gl => "gl",
            Self::Ar => "ar",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Self::Gl => "GlInterface.csv",
            Self::Ar => "RaInterfaceLinesAll.csv",
        }
    }

    fn job_name(self) -> &'static str {
        match self {
            Self::Gl => {
                "/oracle/apps/ess/financials/generalLedger/programs/common,JournalImportLauncher"
            }
            Self::Ar => {
                "/oracle/apps/ess/financials/receivables/transactions/autoInvoices,AutoInvoiceImportEss"
            }
        }
    }

    fn document_account(self) -> &'static str {
        match self {
            Self::Gl => "fin$/generalLedger$/import$",
            Self::Ar => "fin$/receivables$/import$",
        }
    }

    /// The read-back resource, the attribute holding the key, the document's id.
    fn read_back(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Gl => ("journalBatches", "JournalName", "JeHeaderId"),
            Self::Ar => (
                "receivablesInvoices",
                "InterfaceLineAttribute1",
                "TransactionNumber",
            ),
        }
    }

    /// The column layout of the interface file, in the FBDI template's order.
    fn layout(self) -> Vec<String> {
        match self {
            Self::Gl => gl_layout(),
            Self::Ar => ar_layout(),
        }
    }
}

/// GL_INTERFACE columns in the order of the journal import template (`GlInterface.csv`), as
/// far as ledgerflow fills them.
fn gl_layout() -> Vec<String> {
    let mut c: Vec<String> = [
        "STATUS",
        "LEDGER_ID",
        "ACCOUNTING_DATE",
        "USER_JE_SOURCE_NAME",
        "USER_JE_CATEGORY_NAME",
        "CURRENCY_CODE",
        "DATE_CREATED",
        "ACTUAL_FLAG",
    ]
    .map(str::to_owned)
    .to_vec();
    c.extend((1..=30).map(|n| format!("SEGMENT{n}")));
    c.extend(["ENTERED_DR", "ENTERED_CR", "ACCOUNTED_DR", "ACCOUNTED_CR"].map(str::to_owned));
    c.extend((1..=10).map(|n| format!("REFERENCE{n}")));
    c.extend((21..=30).map(|n| format!("REFERENCE{n}")));
    c.extend(
        [
            "STAT_AMOUNT",
            "USER_CURRENCY_CONVERSION_TYPE",
            "CURRENCY_CONVERSION_DATE",
            "CURRENCY_CONVERSION_RATE",
            "GROUP_ID",
        ]
        .map(str::to_owned),
    );
    c
}

/// RA_INTERFACE_LINES_ALL columns ledgerflow fills, in the order they have in the AutoInvoice
/// template. The template has many more columns between them: positional AutoInvoice files
/// need this list replaced by the release's full layout (see PAYLOADS.md).
fn ar_layout() -> Vec<String> {
    let mut c: Vec<String> = [
        "BU_NAME",
        "BATCH_SOURCE_NAME",
        "CUST_TRX_TYPE_NAME",
        "TRX_DATE",
        "GL_DATE",
        "TRX_NUMBER",
        "ORIG_SYSTEM_BILL_CUSTOMER_REF",
        "LINE_TYPE",
        "DESCRIPTION",
        "CURRENCY_CODE",
        "CONVERSION_TYPE",
        "CONVERSION_DATE",
        "CONVERSION_RATE",
        "AMOUNT",
        "INTERFACE_LINE_CONTEXT",
    ]
    .map(str::to_owned)
    .to_vec();
    c.extend((1..=15).map(|n| format!("INTERFACE_LINE_ATTRIBUTE{n}")));
    c.push("REFERENCE_LINE_CONTEXT".into());
    c.extend((1..=15).map(|n| format!("REFERENCE_LINE_ATTRIBUTE{n}")));
    c.push("LINK_TO_LINE_CONTEXT".into());
    c.extend((1..=15).map(|n| format!("LINK_TO_LINE_ATTRIBUTE{n}")));
    c
}

/// One posting waiting in a zip.
#[derive(Debug, Clone)]
struct Member {
    external_id: String,
    rows: Vec<Map<String, Value>>,
}

/// The shared result of an upload: the ESS request id, or why there is none.
type UploadResult = Option<Result<String, Problem>>;

/// A zip being filled: the first posting of a key uploads it (the leader) after the window.
#[derive(Debug)]
struct OpenBatch {
    members: Mutex<Vec<Member>>,
    full: Notify,
    result: watch::Receiver<UploadResult>,
}

/// What an ESS job did, as far as a posting of its zip needs to know.
#[derive(Debug)]
struct JobView {
    /// `RequestStatus`; none when the pod does not know the request.
    status: Option<String>,
    ended: bool,
    /// External id -> document id of what the job created.
    created: BTreeMap<String, String>,
    /// The job's log (after WARNING or ERROR).
    log: String,
}

impl JobView {
    /// The log's lines about `external_id`, or its error lines.
    fn reason_for(&self, external_id: &str) -> Option<String> {
        let lines: Vec<&str> = self
            .log
            .lines()
            .map(str::trim)
            .filter(|l| l.contains(external_id))
            .collect();
        let lines = if lines.is_empty() {
            self.log
                .lines()
                .map(str::trim)
                .filter(|l| l.to_ascii_lowercase().starts_with("error"))
                .collect()
        } else {
            lines
        };
        (!lines.is_empty()).then(|| ledgerflow_outbox::excerpt(&lines.join("; ")))
    }
}

/// Whether a rejection says the transaction flexfield exists already.
fn is_duplicate(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    reason.contains("duplicate") || reason.contains("already exists")
}

/// The Oracle Fusion adapter. The built-in one writes header rows, batches for 250 ms (at most
/// 100 postings per zip) and waits 5 minutes for a job an unanswered upload may have submitted.
#[derive(Debug)]
pub struct Fusion {
    csv: FbdiCsv,
    window: Duration,
    max_batch: usize,
    settle: Duration,
    /// Zips being filled, by key (account, credentials, import, ledger/source).
    batches: Mutex<BTreeMap<String, Arc<OpenBatch>>>,
    /// Journals whose upload ended without an answer: (base URL, external id) -> when.
    in_doubt: Mutex<BTreeMap<(String, String), Instant>>,
    /// Jobs polled lately: `base URL|import|request id` -> (when, what).
    jobs: Mutex<BTreeMap<String, (Instant, Arc<JobView>)>>,
}

impl Default for Fusion {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Fusion {
    /// The built-in settings (see the type's documentation).
    pub const fn new() -> Self {
        Self {
            csv: FbdiCsv::HeaderRow,
            window: Duration::from_millis(250),
            max_batch: 100,
            settle: Duration::from_secs(300),
            batches: Mutex::new(BTreeMap::new()),
            in_doubt: Mutex::new(BTreeMap::new()),
            jobs: Mutex::new(BTreeMap::new()),
        }
    }

    /// Header row (the simulator) or positional (real FBDI) CSV files.
    pub fn with_csv(mut self, csv: FbdiCsv) -> Self {
        self.csv = csv;
        self
    }

    /// Postings of one account sent within `window` of the first go into one zip, at most
    /// `max_postings` (1: one zip per posting).
    pub fn with_batching(mut self, window: Duration, max_postings: usize) -> Self {
        self.window = window;
        self.max_batch = max_postings.max(1);
        self
    }

    /// How long after an unanswered upload a journal that cannot be found is taken for a job
    /// still queued rather than for a lost request (and is therefore not uploaded again).
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn mapping<'a>(input: &'a RenderInput<'_>) -> Result<&'a OracleFusionMapping, ErpError> {
    input
        .route
        .target
        .oracle_fusion
        .as_ref()
        .ok_or_else(|| ErpError::Mapping("the route has no oracle_fusion keys".into()))
}

/// `YYYY/MM/DD`, the FBDI date format.
fn fbdi_date(micros: i64) -> String {
    crate::payloads::date_of(micros).replace('-', "/")
}

fn money(journal: &JournalEntry, minor: i128) -> Value {
    json!(format_minor(minor, journal.currency.exponent()))
}

/// One GL_INTERFACE row per journal line.
fn gl_rows(input: &RenderInput<'_>, m: &OracleFusionMapping) -> Vec<Value> {
    let j = input.journal;
    let key = erp_key(ErpKind::OracleFusion, input.external_id);
    let date = fbdi_date(j.posted_at);
    let same_currency = j.currency == input.route.functional_currency;
    j.lines
        .iter()
        .map(|l| {
            let mut row = Map::new();
            row.insert("STATUS".into(), json!("NEW"));
            row.insert("LEDGER_ID".into(), json!(m.ledger));
            row.insert("ACCOUNTING_DATE".into(), json!(date));
            row.insert("USER_JE_SOURCE_NAME".into(), json!(m.journal_source));
            row.insert("USER_JE_CATEGORY_NAME".into(), json!(m.journal_category));
            row.insert("CURRENCY_CODE".into(), json!(j.currency.code()));
            row.insert("DATE_CREATED".into(), json!(date));
            row.insert("ACTUAL_FLAG".into(), json!("A"));
            for (i, segment) in l.account.split(['-', '.']).take(30).enumerate() {
                row.insert(format!("SEGMENT{}", i + 1), json!(segment));
            }
            let (side, minor) = if l.debit_minor != 0 {
                ("DR", l.debit_minor)
            } else {
                ("CR", l.credit_minor)
            };
            row.insert(format!("ENTERED_{side}"), money(j, i128::from(minor)));
            if same_currency {
                row.insert(format!("ACCOUNTED_{side}"), money(j, i128::from(minor)));
            } else {
                row.insert("USER_CURRENCY_CONVERSION_TYPE".into(), json!("Corporate"));
                row.insert("CURRENCY_CONVERSION_DATE".into(), json!(date));
            }
            row.insert("REFERENCE1".into(), json!(key));
            row.insert("REFERENCE2".into(), json!(j.memo));
            row.insert("REFERENCE4".into(), json!(key));
            row.insert("REFERENCE5".into(), json!(j.memo));
            row.insert("REFERENCE10".into(), json!(j.memo));
            Value::Object(row)
        })
        .collect()
}

/// RA_INTERFACE_LINES_ALL rows of an invoice or credit memo: every line but the receivable.
fn ar_rows(
    input: &RenderInput<'_>,
    m: &OracleFusionMapping,
    reference: Option<&str>,
) -> Vec<Value> {
    let j = input.journal;
    let key = erp_key(ErpKind::OracleFusion, input.external_id);
    let date = fbdi_date(j.posted_at);
    let accounts = &input.route.accounts;
    let lines: Vec<_> = j
        .lines
        .iter()
        .filter(|l| l.account != accounts.receivable)
        .collect();
    let has_revenue = lines.iter().any(|l| l.account != accounts.tax_payable);
    let trx_type = if j.kind == JournalKind::CreditMemo {
        "Credit Memo"
    } else {
        "Invoice"
    };
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let tax = has_revenue && l.account == accounts.tax_payable;
            let mut row = Map::new();
            row.insert("BU_NAME".into(), json!(m.business_unit));
            row.insert("BATCH_SOURCE_NAME".into(), json!(m.journal_source));
            row.insert("CUST_TRX_TYPE_NAME".into(), json!(trx_type));
            row.insert("TRX_DATE".into(), json!(date));
            row.insert("GL_DATE".into(), json!(date));
            row.insert(
                "ORIG_SYSTEM_BILL_CUSTOMER_REF".into(),
                json!(input.customer_id),
            );
            row.insert("LINE_TYPE".into(), json!(if tax { "TAX" } else { "LINE" }));
            row.insert("DESCRIPTION".into(), json!(j.memo));
            row.insert("CURRENCY_CODE".into(), json!(j.currency.code()));
            if j.currency != input.route.functional_currency {
                row.insert("CONVERSION_TYPE".into(), json!("Corporate"));
                row.insert("CONVERSION_DATE".into(), json!(date));
            }
            // Credits are the invoice's amounts; a credit memo's debits come out negative.
            let net = i128::from(l.credit_minor) - i128::from(l.debit_minor);
            row.insert("AMOUNT".into(), money(j, net));
            row.insert("INTERFACE_LINE_CONTEXT".into(), json!(LINE_CONTEXT));
            row.insert("INTERFACE_LINE_ATTRIBUTE1".into(), json!(key));
            row.insert(
                "INTERFACE_LINE_ATTRIBUTE2".into(),
                json!((i + 1).to_string()),
            );
            if tax {
                // Tax belongs to a line of the same transaction: the first one.
                row.insert("LINK_TO_LINE_CONTEXT".into(), json!(LINE_CONTEXT));
                row.insert("LINK_TO_LINE_ATTRIBUTE1".into(), json!(key));
                row.insert("LINK_TO_LINE_ATTRIBUTE2".into(), json!("1"));
            }
            if let Some(invoice) = reference {
                row.insert("REFERENCE_LINE_CONTEXT".into(), json!(LINE_CONTEXT));
                row.insert(
                    "REFERENCE_LINE_ATTRIBUTE1".into(),
                    json!(erp_key(ErpKind::OracleFusion, invoice)),
                );
                row.insert("REFERENCE_LINE_ATTRIBUTE2".into(), json!("1"));
            }
            Value::Object(row)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Files

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Interface columns that hold a posting's key (its own, or the invoice's a credit memo refers
/// to).
const KEY_COLUMNS: [&str; 5] = [
    "REFERENCE1",
    "REFERENCE4",
    "INTERFACE_LINE_ATTRIBUTE1",
    "LINK_TO_LINE_ATTRIBUTE1",
    "REFERENCE_LINE_ATTRIBUTE1",
];

/// The rows of a posting's document. A document rendered before keys were compacted carries
/// full external ids in its key columns, which the pod cannot hold: they become their keys
/// here, so what is uploaded is what the lookups ask for.
fn rows_of(posting: &ErpPosting) -> Result<Vec<Map<String, Value>>, Failed> {
    posting.document["rows"]
        .as_array()
        .filter(|rows| !rows.is_empty())
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r.as_object().cloned())
                .map(|mut row| {
                    for column in KEY_COLUMNS {
                        if let Some(Value::String(v)) = row.get_mut(column) {
                            *v = erp_key(ErpKind::OracleFusion, v);
                        }
                    }
                    row
                })
                .collect()
        })
        .ok_or_else(|| {
            Failed::new(
                FailClass::Mapping,
                format!("fusion document of {} has no rows", posting.external_id),
            )
        })
}

/// The interface file: CSV with or without its header row.
fn csv_file(csv: FbdiCsv, import: Import, rows: &[Map<String, Value>]) -> Result<Vec<u8>, Failed> {
    let layout = import.layout();
    let position = |name: &str| layout.iter().position(|c| c == name);
    let mut used: Vec<String> = Vec::new();
    for row in rows {
        for name in row.keys() {
            if !used.contains(name) {
                used.push(name.clone());
            }
        }
    }
    let columns: Vec<String> = match csv {
        FbdiCsv::HeaderRow => {
            // Layout order first, then anything else by name.
            used.sort_by_key(|c| (position(c).unwrap_or(usize::MAX), c.clone()));
            used
        }
        FbdiCsv::Positional => {
            let mut last = 0;
            for name in &used {
                let at = position(name).ok_or_else(|| {
                    Failed::new(
                        FailClass::Mapping,
                        format!(
                            "column {name} has no position in the {} layout",
                            import.file()
                        ),
                    )
                })?;
                last = last.max(at);
            }
            layout[..=last].to_vec()
        }
    };
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let failed = |e: csv::Error| Failed::new(FailClass::Mapping, format!("writing csv: {e}"));
    if csv == FbdiCsv::HeaderRow {
        out.write_record(&columns).map_err(failed)?;
    }
    for row in rows {
        let record: Vec<String> = columns
            .iter()
            .map(|c| row.get(c).and_then(text_of).unwrap_or_default())
            .collect();
        out.write_record(&record).map_err(failed)?;
    }
    out.into_inner()
        .map_err(|e| Failed::new(FailClass::Mapping, format!("writing csv: {e}")))
}

/// A zip holding one file.
fn zip_file(name: &str, content: &[u8]) -> Result<Vec<u8>, Failed> {
    let failed = |e: &dyn std::fmt::Display| {
        Failed::new(FailClass::Mapping, format!("writing the fbdi zip: {e}"))
    };
    let mut cursor = Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut cursor);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(name, options).map_err(|e| failed(&e))?;
        zip.write_all(content).map_err(|e| failed(&e))?;
        zip.finish().map_err(|e| failed(&e))?;
    }
    Ok(cursor.into_inner())
}

/// The text of every file in a zip (an ESS log bundle).
fn unzip_text(bytes: &[u8]) -> Result<String, String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let mut text = String::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        text.push_str(&String::from_utf8_lossy(&raw));
        text.push('\n');
    }
    Ok(text)
}

/// The `GROUP_ID` of a zip: a number derived from its postings, the same for the same zip.
fn group_id(members: &[Member]) -> u64 {
    let mut ids: Vec<&str> = members.iter().map(|m| m.external_id.as_str()).collect();
    ids.sort_unstable();
    let digest = Sha256::digest(ids.join(",").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    // GROUP_ID is a NUMBER(18); stay well inside it, and above zero.
    u64::from_be_bytes(bytes) % 999_999_999_999_999 + 1
}

fn parse_job_ref(job_ref: &str) -> Option<(Import, &str)> {
    let (prefix, id) = job_ref.split_once(':')?;
    let import = match prefix {
        "gl" => Import::Gl,
        "ar" => Import::Ar,
        _ => return None,
    };
    (!id.is_empty()).then_some((import, id))
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn classify(cx: &Exchange, resp: &HttpResponse) -> Problem {
    if let Some(p) = cx.problem_for(resp) {
        return p;
    }
    let detail = resp
        .json()
        .and_then(|v| {
            v["o:errorDetails"][0]["detail"]
                .as_str()
                .or_else(|| v["detail"].as_str())
                .or_else(|| v["title"].as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| ledgerflow_outbox::excerpt(&resp.body));
    let text = cx.redact(&format!("http {}: {detail}", resp.status));
    let class = match resp.status {
        401 | 403 => FailClass::Auth,
        _ => FailClass::Client,
    };
    Problem::Failed(Failed::new(class, text))
}

async fn get_json(cx: &Exchange, path_and_query: &str) -> Result<Value, Problem> {
    let resp = cx
        .call(HttpRequest::get(cx.url(path_and_query)).with_header("accept", "application/json"))
        .await?;
    if !resp.is_success() {
        return Err(classify(cx, &resp));
    }
    resp.json().ok_or_else(|| {
        Problem::Retry(Retry::new(
            RetryClass::Server,
            cx.redact(&format!(
                "unreadable fusion answer: {}",
                ledgerflow_outbox::excerpt(&resp.body)
            )),
        ))
    })
}

/// The amount a read-back item carries, in its `CurrencyCode`.
fn item_amount(import: Import, item: &Value) -> Option<ErpAmount> {
    let field = match import {
        Import::Gl => "RunningTotalDr",
        Import::Ar => "EnteredAmount",
    };
    let amount = decimal_amount(item["CurrencyCode"].as_str()?, [&item[field]])?;
    Some(ErpAmount {
        amount_minor: amount.amount_minor.abs(),
        ..amount
    })
}

/// (key, document id) of read-back items.
fn documents(import: Import, items: &[Value]) -> Vec<(String, String)> {
    let (_, reference, id) = import.read_back();
    items
        .iter()
        .filter_map(|item| {
            Some((
                item[reference].as_str()?.to_owned(),
                text_of(&item[id]).filter(|s| !s.is_empty())?,
            ))
        })
        .collect()
}

impl Fusion {
    /// Looks a posting's document up by its key (`JournalName` / the transaction flexfield),
    /// with the amount the pod holds for it: a journal batch's `RunningTotalDr`, a
    /// transaction's `EnteredAmount` (a credit memo's is negative: its size is compared).
    async fn lookup(&self, cx: &Exchange, import: Import, key: &str) -> ReadBack {
        let (resource, reference, _) = import.read_back();
        let q = match import {
            Import::Gl => format!("JournalName='{key}'"),
            Import::Ar => {
                format!("InterfaceLineContext='{LINE_CONTEXT}';InterfaceLineAttribute1='{key}'")
            }
        };
        let body = match get_json(cx, &format!("{API}/{resource}?q={}&limit=25", encode(&q))).await
        {
            Ok(v) => v,
            Err(p) => return p.into(),
        };
        let items: Vec<Value> = body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|item| item[reference].as_str() == Some(key))
            .cloned()
            .collect();
        // (document id, item) of every document holding the key.
        let found: Vec<(String, &Value)> = items
            .iter()
            .filter_map(|item| {
                let (_, document_id) = documents(import, std::slice::from_ref(item)).pop()?;
                Some((document_id, item))
            })
            .collect();
        if found.len() > 1 {
            tracing::error!(
                key,
                copies = found.len(),
                "fusion holds this document more than once"
            );
        }
        match found.into_iter().next() {
            Some((document_id, item)) => ReadBack::Found {
                document_id,
                amount: item_amount(import, item),
            },
            None => ReadBack::NotFound,
        }
    }

    /// What the job `request_id` did: from the cache, or asked of the pod.
    async fn job(
        &self,
        cx: &Exchange,
        import: Import,
        request_id: &str,
    ) -> Result<Arc<JobView>, Problem> {
        let key = format!("{}|{}|{request_id}", cx.route().base_url(), import.prefix());
        if let Some((at, view)) = lock(&self.jobs).get(&key)
            && (view.ended || at.elapsed() < RUNNING_CACHE)
        {
            return Ok(Arc::clone(view));
        }
        let status = get_json(
            cx,
            &format!("{API}/erpintegrations?finder=ESSJobStatusRF;requestId={request_id}"),
        )
        .await?;
        let status = status["items"][0]["RequestStatus"]
            .as_str()
            .map(|s| s.trim().to_ascii_uppercase());
        let view = match status {
            Some(s) if RUNNING.contains(&s.as_str()) => JobView {
                status: Some(s),
                ended: false,
                created: BTreeMap::new(),
                log: String::new(),
            },
            // Unknown to the pod: nothing to cache.
            None => {
                return Ok(Arc::new(JobView {
                    status: None,
                    ended: true,
                    created: BTreeMap::new(),
                    log: String::new(),
                }));
            }
            Some(s) => {
                let created = self.created_by(cx, import, request_id).await?;
                let log = if s == "SUCCEEDED" {
                    String::new()
                } else {
                    self.job_log(cx, request_id).await?
                };
                JobView {
                    status: Some(s),
                    ended: true,
                    created,
                    log,
                }
            }
        };
        let view = Arc::new(view);
        let mut jobs = lock(&self.jobs);
        jobs.retain(|_, (at, _)| at.elapsed() < ENDED_CACHE);
        jobs.insert(key, (Instant::now(), Arc::clone(&view)));
        Ok(view)
    }

    /// The documents the job created (read back by `RequestId`, every page).
    async fn created_by(
        &self,
        cx: &Exchange,
        import: Import,
        request_id: &str,
    ) -> Result<BTreeMap<String, String>, Problem> {
        let (resource, _, _) = import.read_back();
        let q = encode(&format!("RequestId={request_id}"));
        let mut created = BTreeMap::new();
        let mut offset = 0;
        for _ in 0..MAX_PAGES {
            let page = get_json(
                cx,
                &format!("{API}/{resource}?q={q}&limit=500&offset={offset}"),
            )
            .await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            created.extend(documents(import, &items));
            offset += items.len();
            if items.is_empty() || page["hasMore"].as_bool() != Some(true) {
                break;
            }
        }
        Ok(created)
    }

    /// The job's log (`ESSJobExecutionDetailsRF`, a zip).
    async fn job_log(&self, cx: &Exchange, request_id: &str) -> Result<String, Problem> {
        let body = get_json(
            cx,
            &format!(
                "{API}/erpintegrations?finder=ESSJobExecutionDetailsRF;requestId={request_id},fileType=log"
            ),
        )
        .await?;
        let content = body["items"][0]["DocumentContent"]
            .as_str()
            .unwrap_or_default();
        if content.is_empty() {
            return Ok(String::new());
        }
        let text = STANDARD
            .decode(content.trim())
            .map_err(|e| e.to_string())
            .and_then(|bytes| unzip_text(&bytes));
        Ok(text.unwrap_or_else(|e| format!("error: unreadable ess log: {e}")))
    }

    /// Joins the open zip of `key`, or opens one (then this posting uploads it).
    fn join(
        &self,
        key: &str,
        member: Member,
    ) -> (Arc<OpenBatch>, Option<watch::Sender<UploadResult>>) {
        let mut open = lock(&self.batches);
        if let Some(batch) = open.get(key).cloned() {
            let mut members = lock(&batch.members);
            members.push(member);
            if members.len() >= self.max_batch {
                // Sealed: the next posting opens a new zip.
                open.remove(key);
                batch.full.notify_one();
            }
            drop(members);
            return (batch, None);
        }
        let (tx, rx) = watch::channel(None);
        let batch = Arc::new(OpenBatch {
            members: Mutex::new(vec![member]),
            full: Notify::new(),
            result: rx,
        });
        if self.max_batch > 1 {
            open.insert(key.to_owned(), Arc::clone(&batch));
        }
        (batch, Some(tx))
    }

    /// Takes the zip off the list (if it is still there); no posting joins it afterwards.
    fn seal(&self, key: &str, batch: &Arc<OpenBatch>) -> Vec<Member> {
        let mut open = lock(&self.batches);
        if open.get(key).is_some_and(|b| Arc::ptr_eq(b, batch)) {
            open.remove(key);
        }
        drop(open);
        std::mem::take(&mut *lock(&batch.members))
    }

    /// Uploads the zip of `members`; the ESS request id.
    async fn upload(
        &self,
        cx: &Exchange,
        import: Import,
        members: &[Member],
    ) -> Result<String, Problem> {
        let group = group_id(members);
        let mut rows: Vec<Map<String, Value>> = Vec::new();
        for m in members {
            for row in &m.rows {
                let mut row = row.clone();
                if import == Import::Gl {
                    row.insert("GROUP_ID".into(), json!(group.to_string()));
                }
                rows.push(row);
            }
        }
        let first = rows.first().cloned().unwrap_or_default();
        let field = |name: &str| first.get(name).and_then(text_of).unwrap_or_default();
        let parameters = match import {
            // Data access set, source, ledger, group, post errors to suspense, create
            // summary journals, import descriptive flexfields.
            Import::Gl => format!(
                "#NULL,{},{},{group},N,N,N",
                field("USER_JE_SOURCE_NAME"),
                field("LEDGER_ID")
            ),
            // Business unit, transaction source, default date.
            Import::Ar => format!(
                "{},{},{}",
                field("BU_NAME"),
                field("BATCH_SOURCE_NAME"),
                field("TRX_DATE")
            ),
        };
        let csv = csv_file(self.csv, import, &rows)?;
        let zip = zip_file(import.file(), &csv)?;
        let body = json!({
            "OperationName": "importBulkData",
            "DocumentContent": STANDARD.encode(zip),
            "ContentType": "zip",
            "FileName": format!("lf{}{group}.zip", import.prefix()),
            "DocumentAccount": import.document_account(),
            "JobName": import.job_name(),
            "ParameterList": parameters,
            "CallbackURL": "#NULL",
            "NotificationCode": "10",
        });
        let resp = cx
            .call(
                HttpRequest::post(cx.url(&format!("{API}/erpintegrations")))
                    .with_header("accept", "application/json")
                    .json(&body),
            )
            .await?;
        if !resp.is_success() {
            return Err(classify(cx, &resp));
        }
        resp.json()
            .and_then(|v| text_of(&v["ReqstId"]))
            .filter(|id| !id.is_empty() && id != "-1")
            .ok_or_else(|| {
                // Submitted or not, nobody can tell: look before sending again.
                Problem::Retry(Retry {
                    class: RetryClass::Server,
                    retry_after: None,
                    indefinite: true,
                    detail: cx.redact(&format!(
                        "importBulkData answered {} without a request id: {}",
                        resp.status,
                        ledgerflow_outbox::excerpt(&resp.body)
                    )),
                })
            })
    }

    /// Sends a posting: joins (or opens and uploads) a zip; `accepted` with its job.
    async fn submit(&self, cx: &Exchange, posting: &ErpPosting) -> Outcome {
        let Some(import) = Import::of(&posting.document_kind) else {
            return Outcome::Failed(Failed::new(
                FailClass::Mapping,
                format!(
                    "fusion cannot send a {:?} document (rendered before the adapter existed: \
                     replay its event to render it again)",
                    posting.document_kind
                ),
            ));
        };
        let rows = match rows_of(posting) {
            Ok(r) => r,
            Err(f) => return Outcome::Failed(f),
        };
        let route = cx.route();
        let first = rows.first().cloned().unwrap_or_default();
        let scope: Vec<String> = [
            "LEDGER_ID",
            "USER_JE_SOURCE_NAME",
            "BU_NAME",
            "BATCH_SOURCE_NAME",
        ]
        .iter()
        .map(|c| first.get(*c).and_then(text_of).unwrap_or_default())
        .collect();
        let key = format!(
            "{}|{}|{}|{}|{}",
            route.base_url(),
            route.account(),
            serde_json::to_string(&route.target.auth).unwrap_or_default(),
            import.prefix(),
            scope.join("|")
        );
        let member = Member {
            external_id: posting.external_id.clone(),
            rows,
        };
        let (batch, leader) = self.join(&key, member);
        let result = match leader {
            Some(tx) => {
                if self.max_batch > 1 && !self.window.is_zero() {
                    tokio::select! {
                        () = tokio::time::sleep(self.window) => {}
                        () = batch.full.notified() => {}
                    }
                }
                let members = self.seal(&key, &batch);
                let result = self.upload(cx, import, &members).await;
                if let Err(Problem::Retry(r)) = &result
                    && r.indefinite
                    && import == Import::Gl
                {
                    let mut in_doubt = lock(&self.in_doubt);
                    in_doubt.retain(|_, at| at.elapsed() < self.settle);
                    for m in &members {
                        in_doubt.insert(
                            (route.base_url().to_owned(), m.external_id.clone()),
                            Instant::now(),
                        );
                    }
                }
                tracing::debug!(
                    erp = "oracle_fusion",
                    account = route.account(),
                    postings = members.len(),
                    ok = result.is_ok(),
                    "fbdi zip uploaded"
                );
                tx.send_replace(Some(result.clone()));
                result
            }
            None => {
                let mut rx = batch.result.clone();
                match rx.wait_for(Option::is_some).await {
                    Ok(r) => r.clone().unwrap_or_else(|| Err(abandoned())),
                    // The uploading attempt was dropped (shutdown): it may have sent the zip.
                    Err(_) => Err(abandoned()),
                }
            }
        };
        match result {
            Ok(request_id) => Outcome::Accepted {
                job_ref: format!("{}:{request_id}", import.prefix()),
            },
            Err(p) => p.into(),
        }
    }

    /// Whether an unanswered upload of this journal is recent enough that its job may still
    /// be queued.
    fn in_doubt(&self, cx: &Exchange, external_id: &str) -> bool {
        let key = (cx.route().base_url().to_owned(), external_id.to_owned());
        let mut in_doubt = lock(&self.in_doubt);
        match in_doubt.get(&key) {
            Some(at) if at.elapsed() < self.settle => true,
            Some(_) => {
                in_doubt.remove(&key);
                false
            }
            None => false,
        }
    }

    fn resolved(&self, cx: &Exchange, external_id: &str) {
        lock(&self.in_doubt).remove(&(cx.route().base_url().to_owned(), external_id.to_owned()));
    }

    async fn check(&self, cx: &Exchange, posting: &ErpPosting, job_ref: &str) -> Outcome {
        let Some((import, request_id)) = parse_job_ref(job_ref) else {
            return Outcome::Failed(Failed::new(
                FailClass::Client,
                format!("not a fusion job reference: {job_ref:?}"),
            ));
        };
        let view = match self.job(cx, import, request_id).await {
            Ok(v) => v,
            Err(p) => return p.into(),
        };
        if !view.ended {
            return Outcome::Accepted {
                job_ref: job_ref.to_owned(),
            };
        }
        let key = posting.erp_key();
        if let Some(document_id) = view.created.get(&key) {
            return Outcome::Confirmed {
                document_id: document_id.clone(),
            };
        }
        // Not among what this job created: imported by an earlier job, or rejected.
        match self.lookup(cx, import, &key).await {
            ReadBack::Found { document_id, .. } => return Outcome::Confirmed { document_id },
            ReadBack::NotFound => {}
            ReadBack::Retry(r) => return Outcome::Retry(r),
            ReadBack::Failed(f) => return Outcome::Failed(f),
        }
        let Some(status) = view.status.as_deref() else {
            // The pod does not know the job and the document is not there: upload again.
            tracing::warn!(
                outbox_id = %posting.id, request_id, "fusion does not know the ess job; sending again"
            );
            return self.submit(cx, posting).await;
        };
        let reason = view.reason_for(&key);
        if status == "SUCCEEDED" {
            return Outcome::Retry(Retry::new(
                RetryClass::Server,
                format!(
                    "ess job {request_id} succeeded but {} cannot be read back yet",
                    posting.external_id
                ),
            ));
        }
        match reason {
            Some(r) if import == Import::Ar && is_duplicate(&r) => Outcome::Retry(Retry {
                class: RetryClass::Server,
                retry_after: None,
                indefinite: true,
                detail: cx.redact(&format!(
                    "ess job {request_id} ({status}) refused the transaction as a duplicate \
                     flexfield, so it exists or is still in the interface; looking again: {r}"
                )),
            }),
            Some(r) => Outcome::Failed(Failed::new(
                FailClass::Rejected,
                cx.redact(&format!("ess job {request_id} ended {status}: {r}")),
            )),
            None => Outcome::Failed(Failed::new(
                FailClass::Rejected,
                format!(
                    "ess job {request_id} ended {status} without importing {}",
                    posting.external_id
                ),
            )),
        }
    }
}

fn abandoned() -> Problem {
    Problem::Retry(Retry {
        class: RetryClass::Connection,
        retry_after: None,
        indefinite: true,
        detail: "the fbdi upload this posting joined was abandoned".into(),
    })
}

impl ErpAdapter for Fusion {
    fn kind(&self) -> ErpKind {
        ErpKind::OracleFusion
    }

    fn render(&self, input: &RenderInput<'_>) -> Result<Rendered, ErpError> {
        let m = mapping(input)?;
        let j = input.journal;
        let document = match (input.route.target.mode, j.kind) {
            (ErpMode::Subledger, JournalKind::Invoice | JournalKind::CreditMemo) => {
                let mut depends_on = Vec::new();
                let mut reference = None;
                if j.kind == JournalKind::CreditMemo
                    && let Some(event) = input.invoice.and_then(|i| i.event_id)
                {
                    let (id, external) = input.posting_of(&event, JournalKind::Invoice);
                    depends_on.push(id.to_string());
                    reference = Some(external);
                }
                Document {
                    kind: AR_KIND.into(),
                    body: json!({ "rows": ar_rows(input, m, reference.as_deref()) }),
                    depends_on,
                }
            }
            // Receipts, applications and corrections (a void's reversal, a refund) are GL
            // journals in both modes.
            _ => Document {
                kind: GL_KIND.into(),
                body: json!({ "rows": gl_rows(input, m) }),
                depends_on: kind_dependencies(input),
            },
        };
        Ok(Rendered::Document(document))
    }

    fn find<'a>(&'a self, cx: &'a Exchange, posting: &'a ErpPosting) -> BoxFuture<'a, Lookup> {
        Box::pin(async move {
            let Some(import) = Import::of(&posting.document_kind) else {
                return Lookup::NotFound;
            };
            match Lookup::from(self.lookup(cx, import, &posting.erp_key()).await) {
                Lookup::NotFound
                    if import == Import::Gl && self.in_doubt(cx, &posting.external_id) =>
                {
                    Lookup::Retry(Retry {
                        class: RetryClass::Timeout,
                        retry_after: None,
                        indefinite: true,
                        detail: format!(
                            "an upload of {} ended without an answer less than {:?} ago and \
                             its journal import may still be queued; not uploading it again yet",
                            posting.external_id, self.settle
                        ),
                    })
                }
                found @ Lookup::Found { .. } => {
                    self.resolved(cx, &posting.external_id);
                    found
                }
                other => other,
            }
        })
    }

    /// The journal batch or transaction read by its key carries its amount: read-back
    /// compares it.
    fn read_back<'a>(
        &'a self,
        cx: &'a Exchange,
        posting: &'a ErpPosting,
    ) -> BoxFuture<'a, ReadBack> {
        Box::pin(async move {
            match Import::of(&posting.document_kind) {
                Some(import) => self.lookup(cx, import, &posting.erp_key()).await,
                None => ReadBack::NotFound,
            }
        })
    }

    fn send<'a>(&'a self, cx: &'a Exchange, posting: &'a ErpPosting) -> BoxFuture<'a, Outcome> {
        Box::pin(self.submit(cx, posting))
    }

    fn poll<'a>(
        &'a self,
        cx: &'a Exchange,
        posting: &'a ErpPosting,
        job_ref: &'a str,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(self.check(cx, posting, job_ref))
    }
}

#[cfg(test)]
mod tests {
    use ledgerflow_core::Currency;

    use super::*;
    use crate::adapter::InvoiceRef;
    use crate::adapters::test_support::code_block;
    use crate::mapping::tests::{credit_memo, envelope, invoice, line, payment, tenant};
    use crate::mapping::{ErpRoute, map_event};

    fn render(event: ledgerflow_core::Event, mode: ErpMode, currency: Option<&str>) -> Document {
        let mut t = tenant("acme", Some(ErpKind::OracleFusion));
        if let Some(erp) = &mut t.erp {
            erp.mode = mode;
        }
        if let Some(c) = currency {
            t.functional_currency = Currency::parse(c).unwrap();
        }
        let effect = map_event(&envelope(event), &t).unwrap();
        let route: ErpRoute = effect.route.unwrap();
        let journal = effect.posting.journal().unwrap().clone();
        let invoice_ref = InvoiceRef {
            invoice_id: "inv-1".into(),
            event_id: Some(
                ledgerflow_core::EventId::parse("00000000-0000-4000-8000-000000000001").unwrap(),
            ),
        };
        let ext = crate::posting::external_id("acme", &journal.event_id, journal.kind);
        let input = RenderInput {
            journal: &journal,
            route: &route,
            external_id: &ext,
            customer_id: "cus-1",
            invoice: Some(&invoice_ref),
        };
        match Fusion::new().render(&input).unwrap() {
            Rendered::Document(d) => d,
            Rendered::NotPosted { reason } => panic!("{reason}"),
        }
    }

    fn inv() -> ledgerflow_core::Event {
        invoice(
            "00000000-0000-4000-8000-000000000001",
            "inv-1",
            vec![
                line("l1", "platform", 2, 1000),
                line("l2", "support", 1, 550),
            ],
            266,
        )
    }

    fn rows(d: &Document) -> Vec<Map<String, Value>> {
        d.body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_object().unwrap().clone())
            .collect()
    }

    const INV_EXT: &str = "lf-acme-00000000-0000-4000-8000-000000000001-inv";
    /// Its key in Fusion ([`crate::posting::compact_key`], pinned there).
    const INV_KEY: &str = "LFSA5MQTBVRUWDCQYTPR";

    #[test]
    fn the_key_is_the_compact_key_and_old_documents_are_re_keyed_when_sent() {
        assert_eq!(erp_key(ErpKind::OracleFusion, INV_EXT), INV_KEY);
        let d = render(inv(), ErpMode::Subledger, None);
        // A document rendered before keys were compacted: full external ids in its rows.
        let mut old = d.body.clone();
        for row in old["rows"].as_array_mut().unwrap() {
            for column in KEY_COLUMNS {
                if row.get(column).is_some() {
                    row[column] = json!(INV_EXT);
                }
            }
        }
        let posting = ErpPosting {
            id: "p".into(),
            tenant_id: "acme".into(),
            journal_id: "j".into(),
            journal_kind: JournalKind::Invoice,
            document_kind: AR_KIND.into(),
            external_id: INV_EXT.into(),
            document: old,
            route: crate::mapping::ErpRoute::of(&crate::mapping::tests::tenant(
                "acme",
                Some(ErpKind::OracleFusion),
            ))
            .unwrap()
            .posting_route(),
            config_version: "v".into(),
            attempts: 0,
            job_ref: None,
            indefinite: false,
            dependencies: Vec::new(),
        };
        let sent = rows_of(&posting).unwrap();
        assert_eq!(sent, rows(&d), "re-keyed exactly as rendered now");
        assert_eq!(posting.erp_key(), INV_KEY);
    }

    #[test]
    fn journals_are_gl_interface_rows_named_by_the_external_id() {
        let d = render(inv(), ErpMode::Journal, None);
        assert_eq!(d.kind, GL_KIND);
        let r = rows(&d);
        assert_eq!(r.len(), 4);
        assert_eq!(r[0]["STATUS"], "NEW");
        assert_eq!(r[0]["LEDGER_ID"], "US Primary");
        assert_eq!(r[0]["ACCOUNTING_DATE"], "2023/11/14");
        assert_eq!(r[0]["REFERENCE4"], INV_KEY);
        assert_eq!(r[0]["REFERENCE1"], INV_KEY);
        assert_eq!(r[0]["SEGMENT1"], "1100");
        assert_eq!(r[0]["ENTERED_DR"], "28.16");
        assert_eq!(r[0]["ACCOUNTED_DR"], "28.16");
        assert!(r[0].get("ENTERED_CR").is_none());
        assert_eq!(r[1]["ENTERED_CR"], "20.00");
        // In another currency than the ledger's, Fusion converts.
        let foreign = rows(&render(inv(), ErpMode::Journal, Some("EUR")));
        assert!(foreign[0].get("ACCOUNTED_DR").is_none());
        assert_eq!(foreign[0]["USER_CURRENCY_CONVERSION_TYPE"], "Corporate");
        // Receipts stay journals in subledger mode.
        let pay = payment(
            "00000000-0000-4000-8000-000000000002",
            "pay-1",
            "inv-1",
            10_000,
            320,
        );
        assert_eq!(render(pay, ErpMode::Subledger, None).kind, GL_KIND);
    }

    #[test]
    fn subledger_invoices_and_credit_memos_are_autoinvoice_lines() {
        let d = render(inv(), ErpMode::Subledger, None);
        assert_eq!(d.kind, AR_KIND);
        assert!(d.depends_on.is_empty());
        let r = rows(&d);
        let lines: Vec<(&str, &str, &str)> = r
            .iter()
            .map(|row| {
                (
                    row["LINE_TYPE"].as_str().unwrap(),
                    row["AMOUNT"].as_str().unwrap(),
                    row["INTERFACE_LINE_ATTRIBUTE2"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                ("LINE", "20.00", "1"),
                ("LINE", "5.50", "2"),
                ("TAX", "2.66", "3")
            ]
        );
        assert!(
            r.iter()
                .all(|row| row["INTERFACE_LINE_ATTRIBUTE1"] == INV_KEY)
        );
        assert!(
            r.iter()
                .all(|row| row["INTERFACE_LINE_CONTEXT"] == LINE_CONTEXT)
        );
        assert_eq!(r[0]["CUST_TRX_TYPE_NAME"], "Invoice");
        assert_eq!(r[0]["BU_NAME"], "US BU");
        assert_eq!(r[0]["ORIG_SYSTEM_BILL_CUSTOMER_REF"], "cus-1");
        assert_eq!(r[2]["LINK_TO_LINE_ATTRIBUTE2"], "1");

        let cm = render(
            credit_memo(
                "00000000-0000-4000-8000-000000000003",
                "cm-1",
                "inv-1",
                1000,
                72,
            ),
            ErpMode::Subledger,
            None,
        );
        assert_eq!(cm.kind, AR_KIND);
        assert_eq!(cm.depends_on.len(), 1, "waits for its invoice");
        let r = rows(&cm);
        assert_eq!(r[0]["CUST_TRX_TYPE_NAME"], "Credit Memo");
        assert_eq!(r[0]["AMOUNT"], "-10.00");
        assert_eq!(r[1]["AMOUNT"], "-0.72");
        assert_eq!(r[0]["REFERENCE_LINE_ATTRIBUTE1"], INV_KEY);
    }

    #[test]
    fn csv_with_header_or_positional() {
        let r = rows(&render(inv(), ErpMode::Journal, None));
        let header =
            String::from_utf8(csv_file(FbdiCsv::HeaderRow, Import::Gl, &r).unwrap()).unwrap();
        let lines: Vec<&str> = header.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(
            lines[0].starts_with(
                "STATUS,LEDGER_ID,ACCOUNTING_DATE,USER_JE_SOURCE_NAME,USER_JE_CATEGORY_NAME,CURRENCY_CODE"
            ),
            "{}",
            lines[0]
        );
        assert!(header.ends_with("\r\n"));
        let positional =
            String::from_utf8(csv_file(FbdiCsv::Positional, Import::Gl, &r).unwrap()).unwrap();
        let first: Vec<&str> = positional.lines().next().unwrap().split(',').collect();
        let layout = gl_layout();
        assert_eq!(first[0], "NEW");
        assert_eq!(first[1], "US Primary");
        let at = |c: &str| layout.iter().position(|l| l == c).unwrap();
        assert_eq!(first[at("SEGMENT1")], "1100");
        assert_eq!(first[at("SEGMENT2")], "");
        assert_eq!(first[at("ENTERED_DR")], "28.16");
        assert_eq!(first[at("REFERENCE4")], INV_KEY);
        assert_eq!(
            first.len(),
            at("REFERENCE10") + 1,
            "trailing columns left out"
        );
        // A column the positional layout does not know cannot be placed.
        let mut odd = r.clone();
        odd[0].insert("NOT_A_COLUMN".into(), json!("x"));
        assert_eq!(
            csv_file(FbdiCsv::Positional, Import::Gl, &odd)
                .unwrap_err()
                .class,
            FailClass::Mapping
        );
        // Quoting per RFC 4180.
        odd[0].insert("REFERENCE5".into(), json!("a, \"b\""));
        let text =
            String::from_utf8(csv_file(FbdiCsv::HeaderRow, Import::Gl, &odd).unwrap()).unwrap();
        assert!(text.contains("\"a, \"\"b\"\"\""), "{text}");
    }

    #[test]
    fn zips_round_trip_and_group_ids_are_stable() {
        let zip = zip_file("GlInterface.csv", b"a,b\r\n1,2\r\n").unwrap();
        assert_eq!(unzip_text(&zip).unwrap(), "a,b\r\n1,2\r\n\n");
        let member = |id: &str| Member {
            external_id: id.into(),
            rows: Vec::new(),
        };
        let a = group_id(&[member("x"), member("y")]);
        assert_eq!(a, group_id(&[member("y"), member("x")]));
        assert_ne!(a, group_id(&[member("x")]));
        assert!(a > 0 && a < 1_000_000_000_000_000);
        assert_eq!(parse_job_ref("gl:42"), Some((Import::Gl, "42")));
        assert_eq!(parse_job_ref("ar:7"), Some((Import::Ar, "7")));
        assert_eq!(parse_job_ref("xx:7"), None);
        assert_eq!(parse_job_ref("gl:"), None);
    }

    #[test]
    fn log_lines_name_the_rejected_postings() {
        let view = JobView {
            status: Some("WARNING".into()),
            ended: true,
            created: BTreeMap::new(),
            log: "ESS request 9\nRequestStatus: WARNING\nLOADED \"fusion-1\"\n\
                  REJECTED {\"transaction\":\"lf-a-1-inv\",\"errors\":[\"row 2: duplicate line transaction flexfield\"]}\n\
                  REJECTED {\"journal\":\"lf-a-2-inv\",\"errors\":[\"EU02 unbalanced journal\"]}\n"
                .into(),
        };
        let dup = view.reason_for("lf-a-1-inv").unwrap();
        assert!(is_duplicate(&dup), "{dup}");
        let unbalanced = view.reason_for("lf-a-2-inv").unwrap();
        assert!(unbalanced.contains("EU02"));
        assert!(!is_duplicate(&unbalanced));
        assert_eq!(view.reason_for("lf-a-3-inv"), None);
        let failed = JobView {
            log: "Error: not a zip file".into(),
            ..view
        };
        assert_eq!(
            failed.reason_for("lf-a-3-inv").as_deref(),
            Some("Error: not a zip file")
        );
    }

    #[tokio::test]
    async fn postings_of_one_key_share_a_zip_until_it_is_full_or_sealed() {
        let fusion = Fusion::new().with_batching(Duration::from_millis(50), 3);
        let member = |id: &str| Member {
            external_id: id.into(),
            rows: Vec::new(),
        };
        let (first, leader) = fusion.join("k", member("a"));
        assert!(leader.is_some());
        let (second, follower) = fusion.join("k", member("b"));
        assert!(follower.is_none());
        assert!(Arc::ptr_eq(&first, &second));
        let (other, other_leader) = fusion.join("other", member("z"));
        assert!(other_leader.is_some() && !Arc::ptr_eq(&first, &other));
        let (third, _) = fusion.join("k", member("c"));
        assert!(Arc::ptr_eq(&first, &third));
        // Full: sealed, the leader is woken, the next posting opens a new zip.
        tokio::time::timeout(Duration::from_secs(1), first.full.notified())
            .await
            .unwrap();
        let (fourth, new_leader) = fusion.join("k", member("d"));
        assert!(new_leader.is_some() && !Arc::ptr_eq(&first, &fourth));
        let members: Vec<String> = fusion
            .seal("k", &first)
            .into_iter()
            .map(|m| m.external_id)
            .collect();
        assert_eq!(members, ["a", "b", "c"]);
        // Sealing the old zip leaves the new one open.
        let (fifth, _) = fusion.join("k", member("e"));
        assert!(Arc::ptr_eq(&fourth, &fifth));
        // Without batching every posting uploads its own zip.
        let single = Fusion::new().with_batching(Duration::ZERO, 1);
        assert!(single.join("k", member("a")).1.is_some());
        assert!(single.join("k", member("b")).1.is_some());
    }

    /// ADAPTERS.md's `GlInterface.csv` is the file uploaded for its journal example alone.
    #[test]
    fn adapters_md_shows_the_interface_file() {
        let doc = include_str!("../../ADAPTERS.md");
        let json: Value = serde_json::from_str(&code_block(
            doc,
            "#### oracle_fusion journal: receipt",
            "```json",
        ))
        .unwrap();
        let member = Member {
            external_id: "lf-acme-00000000-0000-4000-8000-000000000002-rct".into(),
            rows: json["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_object().unwrap().clone())
                .collect(),
        };
        let group = group_id(std::slice::from_ref(&member));
        let rows: Vec<Map<String, Value>> = member
            .rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.insert("GROUP_ID".into(), json!(group.to_string()));
                r
            })
            .collect();
        for (csv, heading) in [
            (
                FbdiCsv::HeaderRow,
                "#### oracle_fusion: GlInterface.csv with a header row",
            ),
            (
                FbdiCsv::Positional,
                "#### oracle_fusion: GlInterface.csv, positional",
            ),
        ] {
            let file = String::from_utf8(csv_file(csv, Import::Gl, &rows).unwrap()).unwrap();
            if std::env::var_os("PRINT_EXAMPLES").is_some() {
                println!("{file}");
            }
            assert_eq!(
                code_block(doc, heading, "```csv"),
                file.replace("\r\n", "\n").trim()
            );
        }
    }
}
