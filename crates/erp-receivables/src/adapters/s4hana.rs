//! SAP S/4HANA (communication scenario SAP_COM_0002: the journal entry SOAP services, and the
//! OData read API of journal entry items). Basic auth with the communication user (or OAuth
//! client credentials, whatever the route says).
//!
//! **S/4HANA stores whatever is posted twice**, so the adapter looks a document up before every
//! create ([`LookupPolicy::Always`]):
//! `GET /sap/opu/odata/sap/API_JOURNALENTRYITEMBASIC_SRV/A_JournalEntryItemBasic?$filter=
//! OriginalReferenceDocument eq '<external id>' and CompanyCode eq '<company code>'` (one row per
//! item; the document is `AccountingDocument/CompanyCode/FiscalYear`).
//!
//! **Synchronous create** (the default): one `JournalEntryCreateRequestConfirmation_In` SOAP
//! message per posting, with one entry; the confirmation is read at once: a 10-digit
//! `AccountingDocument` is `confirmed`, `0000000000` with the log's severity-3 items is
//! `failed(rejected)` with SAP's `TypeID: Note` texts.
//!
//! **Asynchronous create** (`JournalEntryBulkCreationRequest_In`), for the accounts an
//! [`S4Hana::with_async_accounts`] adapter names: 202 makes the posting `accepted` with the
//! message id as its job; polling reads the confirmation SAP returns through
//! `JournalEntryBulkCreationConfirmation_Out` (the simulator exposes it at
//! `GET /sim/confirmations?messageId=...`) until it says posted or refused. Before a message is
//! sent, the confirmation of the same message id is asked for: a message that reached SAP
//! earlier (its answer lost) is adopted, not sent again.
//!
//! **Message ids are derived from the external id** (UUID v5): the bulk `MessageHeader` and the
//! entry's carry `ID` (32 hex digits) and `UUID` (the same value, hyphenated), identical on every
//! re-send, so SAP's exactly-once handling of asynchronous messages and the confirmation lookup
//! above both see one message per posting.
//!
//! | journal | mode `journal` | mode `subledger` |
//! | --- | --- | --- |
//! | invoice, credit memo | entry with an `Item` (G/L) per line | the receivable line as a `DebtorItem` on the customer, the rest `Item`s |
//! | receipt | entry with `Item`s | the unapplied cash line as a `DebtorItem` (a payment on account) |
//! | application | entry with `Item`s | nothing: S/4HANA clears the payment against the invoice on the customer account itself |
//!
//! Amounts are signed decimal strings (debits positive with `DebitCreditCode` `S`, credits
//! negative with `H`). SOAP faults: `soap-env:Client` is a refused request
//! (`failed(client)`), `Server` and 5xx are retried, 429 throttles the system's account.

use std::collections::BTreeMap;

use ledgerflow_core::{format_minor, now_micros, rfc3339_micros};
use ledgerflow_tenants::{ErpAuth, ErpKind, ErpMode, S4hanaMapping};
use quick_xml::escape::escape;
use serde_json::{Map, Value, json};
use sha1::{Digest, Sha1};
use uuid::Uuid;

use crate::ErpError;
use crate::adapter::{
    BoxFuture, Document, ErpAdapter, ErpAmount, Exchange, FailClass, Failed, HttpRequest,
    HttpResponse, Lookup, LookupPolicy, Outcome, Problem, ReadBack, RenderInput, Rendered, Retry,
    RetryClass, decimal_amount,
};
use crate::journal::{JournalEntry, JournalKind};
use crate::payloads::{SOURCE_NAME, date_of};
use crate::posting::{ErpPosting, erp_key, kind_dependencies};

/// The document kind of every S/4HANA posting.
pub const DOCUMENT_KIND: &str = "JournalEntry";

/// Postings rendered before this adapter existed carry the same `JournalEntry` shape
/// ([`crate::payloads::s4hana`], G/L items under `GLAccountLineItem`): they are sent as they are.
const LEGACY_KIND: &str = "legacy";

const SYNC_PATH: &str = "/sap/bc/srt/scs_ext/sap/journalentrycreaterequestconfi";
const ASYNC_PATH: &str = "/sap/bc/srt/scs_ext/sap/journalentrybulkcreationrequest";
/// Where the simulator exposes the confirmations SAP sends through
/// `JournalEntryBulkCreationConfirmation_Out`.
const CONFIRMATIONS_PATH: &str = "/sim/confirmations";
const ITEMS_PATH: &str = "/sap/opu/odata/sap/API_JOURNALENTRYITEMBASIC_SRV/A_JournalEntryItemBasic";

const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SFIN: &str = "http://sap.com/xi/SAPSCORE/SFIN";

/// Namespace of the message ids (UUID v5). Fixed forever: a change would give every re-sent
/// message a new id, and SAP would take it for a new message.
const MESSAGE_NAMESPACE: Uuid = Uuid::from_u128(0x7a3c_51e0_2d94_4b8f_a1c6_0e5d_9b72_f3a4);

/// Header fields of a `JournalEntry`, in the order of the service's schema.
const HEADER_FIELDS: [&str; 11] = [
    "OriginalReferenceDocumentType",
    "OriginalReferenceDocument",
    "OriginalReferenceDocumentLogicalSystem",
    "BusinessTransactionType",
    "AccountingDocumentType",
    "DocumentReferenceID",
    "DocumentHeaderText",
    "CreatedByUser",
    "CompanyCode",
    "DocumentDate",
    "PostingDate",
];

/// The S/4HANA adapter. [`Default`] (and the built-in one) posts synchronously everywhere.
#[derive(Debug, Clone, Default)]
pub struct S4Hana {
    /// Accounts (S/4 systems) whose postings go through the asynchronous bulk service; `*`
    /// means every account.
    asynchronous: Vec<String>,
}

impl S4Hana {
    /// Synchronous creates on every account (the built-in adapter).
    pub const fn new() -> Self {
        Self {
            asynchronous: Vec::new(),
        }
    }

    /// Asynchronous creates (`JournalEntryBulkCreationRequest_In`, then polling the
    /// confirmation) on the named accounts (`*`: all), synchronous on the others.
    pub fn with_async_accounts<I, S>(accounts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            asynchronous: accounts.into_iter().map(Into::into).collect(),
        }
    }

    fn is_async(&self, account: &str) -> bool {
        self.asynchronous.iter().any(|a| a == "*" || a == account)
    }
}

fn mapping<'a>(input: &'a RenderInput<'_>) -> Result<&'a S4hanaMapping, ErpError> {
    input
        .route
        .target
        .s4hana
        .as_ref()
        .ok_or_else(|| ErpError::Mapping("the route has no s4hana keys".into()))
}

fn amount(journal: &JournalEntry, minor: i128) -> Value {
    json!({
        "currencyCode": journal.currency.code(),
        "content": format_minor(minor, journal.currency.exponent()),
    })
}

/// The journal entry: header from the route, one item per line; the line on `debtor_account`
/// (subledger mode) goes to the customer as a `DebtorItem`.
fn journal_entry(
    input: &RenderInput<'_>,
    m: &S4hanaMapping,
    debtor_account: Option<&str>,
) -> Value {
    let j = input.journal;
    let date = date_of(j.posted_at);
    let created_by = match &input.route.target.auth {
        ErpAuth::Basic { user, .. } => user.clone(),
        _ => SOURCE_NAME.to_uppercase(),
    };
    let mut items = Vec::new();
    let mut debtor_items = Vec::new();
    for (i, l) in j.lines.iter().enumerate() {
        let (signed, code) = if l.debit_minor != 0 {
            (i128::from(l.debit_minor), "S")
        } else {
            (-i128::from(l.credit_minor), "H")
        };
        let mut item = Map::new();
        item.insert("ReferenceDocumentItem".into(), json!((i + 1).to_string()));
        if debtor_account == Some(l.account.as_str()) {
            item.insert("Debtor".into(), json!(input.customer_id));
        } else {
            item.insert("GLAccount".into(), json!(l.account));
        }
        item.insert("AmountInTransactionCurrency".into(), amount(j, signed));
        item.insert("DebitCreditCode".into(), json!(code));
        item.insert("DocumentItemText".into(), json!(j.memo));
        if debtor_account == Some(l.account.as_str()) {
            debtor_items.push(Value::Object(item));
        } else {
            items.push(Value::Object(item));
        }
    }
    let mut entry = Map::new();
    entry.insert("OriginalReferenceDocumentType".into(), json!("BKPFF"));
    entry.insert(
        "OriginalReferenceDocument".into(),
        json!(erp_key(ErpKind::S4hana, input.external_id)),
    );
    entry.insert(
        "OriginalReferenceDocumentLogicalSystem".into(),
        json!(SOURCE_NAME.to_uppercase()),
    );
    entry.insert("BusinessTransactionType".into(), json!("RFBU"));
    entry.insert("AccountingDocumentType".into(), json!(m.document_type));
    entry.insert("DocumentReferenceID".into(), json!(j.document_id));
    entry.insert("DocumentHeaderText".into(), json!(j.memo));
    entry.insert("CreatedByUser".into(), json!(created_by));
    entry.insert("CompanyCode".into(), json!(m.company_code));
    entry.insert("DocumentDate".into(), json!(date));
    entry.insert("PostingDate".into(), json!(date));
    entry.insert("Item".into(), Value::Array(items));
    if !debtor_items.is_empty() {
        entry.insert("DebtorItem".into(), Value::Array(debtor_items));
    }
    json!({ "JournalEntry": entry })
}

/// A UUID v5 in [`MESSAGE_NAMESPACE`].
fn message_uuid(name: &str) -> Uuid {
    let mut hasher = Sha1::new();
    hasher.update(MESSAGE_NAMESPACE.as_bytes());
    hasher.update(name.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// The message ids of a posting: (bulk message, entry), stable across re-sends.
fn message_ids(external_id: &str) -> (Uuid, Uuid) {
    (
        message_uuid(&format!("bulk/{external_id}")),
        message_uuid(external_id),
    )
}

/// `<MessageHeader>` with `ID` (32 hex digits, within SAP's 35) and `UUID`.
fn message_header(id: Uuid, now: &str) -> String {
    format!(
        "<MessageHeader><ID>{}</ID><UUID>{}</UUID><CreationDateTime>{now}</CreationDateTime>\
         </MessageHeader>",
        id.simple(),
        id.hyphenated()
    )
}

/// The debits of one accounting document's items as read back (`DebitCreditCode` `S`, or a
/// positive amount where the code is missing), in their transaction currency; `None` when the
/// items disagree on the currency or an amount is unreadable.
fn items_amount(items: &[&Value]) -> Option<ErpAmount> {
    let currency = items.first()?["TransactionCurrency"].as_str()?;
    if items
        .iter()
        .any(|i| i["TransactionCurrency"].as_str() != Some(currency))
    {
        return None;
    }
    let debits = items
        .iter()
        .filter(|i| match i["DebitCreditCode"].as_str() {
            Some("S") => true,
            Some("H") => false,
            _ => text_of(&i["AmountInTransactionCurrency"]).is_some_and(|a| !a.starts_with('-')),
        });
    // S items are positive; a sign written anyway is dropped, as SAP counts S as a debit.
    let amounts: Vec<Value> = debits
        .map(|i| {
            text_of(&i["AmountInTransactionCurrency"])
                .map(|a| json!(a.trim().trim_start_matches('-')))
                .unwrap_or(Value::Null)
        })
        .collect();
    decimal_amount(currency, &amounts)
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One item element (`Item` or `DebtorItem`) from its JSON.
fn item_xml(out: &mut String, element: &str, item: &Value) -> Result<(), Failed> {
    let bad = |what: &str| {
        Failed::new(
            FailClass::Mapping,
            format!("s4hana {element} without {what}"),
        )
    };
    out.push_str(&format!("<{element}>"));
    for field in ["ReferenceDocumentItem", "GLAccount", "Debtor"] {
        if let Some(value) = item.get(field).and_then(text_of) {
            out.push_str(&format!("<{field}>{}</{field}>", escape(&value)));
        }
    }
    let amount = &item["AmountInTransactionCurrency"];
    let currency = amount["currencyCode"]
        .as_str()
        .ok_or_else(|| bad("a currency"))?;
    let content = text_of(&amount["content"]).ok_or_else(|| bad("an amount"))?;
    out.push_str(&format!(
        "<AmountInTransactionCurrency currencyCode=\"{}\">{}</AmountInTransactionCurrency>",
        escape(currency),
        escape(&content)
    ));
    for field in ["DebitCreditCode", "DocumentItemText"] {
        if let Some(value) = item.get(field).and_then(text_of) {
            out.push_str(&format!("<{field}>{}</{field}>", escape(&value)));
        }
    }
    out.push_str(&format!("</{element}>"));
    Ok(())
}

/// The SOAP envelope of a posting: a bulk request with the posting's one entry.
fn envelope(posting: &ErpPosting, now: &str) -> Result<String, Failed> {
    if posting.document_kind != DOCUMENT_KIND && posting.document_kind != LEGACY_KIND {
        return Err(Failed::new(
            FailClass::Mapping,
            format!("unknown s4hana document kind {:?}", posting.document_kind),
        ));
    }
    let entry = posting
        .document
        .get("JournalEntry")
        .ok_or_else(|| Failed::new(FailClass::Mapping, "s4hana document without JournalEntry"))?;
    let (bulk, single) = message_ids(&posting.external_id);
    let mut out = format!(
        "<soapenv:Envelope xmlns:soapenv=\"{SOAP_ENV}\" xmlns:sfin=\"{SFIN}\"><soapenv:Header/>\
         <soapenv:Body><sfin:JournalEntryBulkCreateRequest>{}<JournalEntryCreateRequest>{}\
         <JournalEntry>",
        message_header(bulk, now),
        message_header(single, now)
    );
    for field in HEADER_FIELDS {
        // The reference key is always the posting's ERP key, also for a document rendered
        // before keys were compacted (it carried the full external id, which SAP's 20
        // characters cannot hold): what is sent is what `lookup` asks for.
        let value = if field == "OriginalReferenceDocument" {
            Some(posting.erp_key())
        } else {
            entry.get(field).and_then(text_of)
        };
        if let Some(value) = value {
            out.push_str(&format!("<{field}>{}</{field}>", escape(&value)));
        }
    }
    // `GLAccountLineItem` is the legacy shape's name of the G/L items.
    for (key, element) in [
        ("Item", "Item"),
        ("GLAccountLineItem", "Item"),
        ("DebtorItem", "DebtorItem"),
    ] {
        for item in entry[key].as_array().into_iter().flatten() {
            item_xml(&mut out, element, item)?;
        }
    }
    out.push_str(
        "</JournalEntry></JournalEntryCreateRequest></sfin:JournalEntryBulkCreateRequest>\
         </soapenv:Body></soapenv:Envelope>",
    );
    Ok(out)
}

/// A minimal XML tree (local names only: SAP's namespace prefixes vary), enough to read
/// confirmations and SOAP faults.
#[derive(Debug, Default)]
struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn parse(text: &str) -> Result<Element, String> {
        use quick_xml::events::Event;
        let mut reader = quick_xml::Reader::from_str(text);
        let mut stack: Vec<Element> = Vec::new();
        let mut root = None;
        let local = |name: &[u8]| {
            let name = String::from_utf8_lossy(name);
            name.rsplit(':').next().unwrap_or_default().to_owned()
        };
        loop {
            match reader.read_event().map_err(|e| format!("xml: {e}"))? {
                Event::Start(start) => stack.push(Element {
                    name: local(start.name().as_ref()),
                    ..Element::default()
                }),
                Event::Empty(start) => {
                    let element = Element {
                        name: local(start.name().as_ref()),
                        ..Element::default()
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None => root = Some(element),
                    }
                }
                Event::End(_) => {
                    let element = stack.pop().ok_or("xml: unbalanced end tag")?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None => root = Some(element),
                    }
                }
                Event::Text(t) => {
                    if let Some(top) = stack.last_mut() {
                        let decoded = t.decode().map_err(|e| format!("xml: {e}"))?;
                        let text = quick_xml::escape::unescape(&decoded)
                            .map_err(|e| format!("xml: {e}"))?;
                        top.text.push_str(&text);
                    }
                }
                Event::CData(c) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&String::from_utf8_lossy(&c));
                    }
                }
                Event::GeneralRef(r) => {
                    if let Some(top) = stack.last_mut() {
                        let entity = format!("&{};", String::from_utf8_lossy(&r));
                        let text = quick_xml::escape::unescape(&entity)
                            .map_err(|e| format!("xml: {e}"))?;
                        top.text.push_str(&text);
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        root.ok_or_else(|| "xml: no root element".to_owned())
    }

    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    fn text_of(&self, path: &[&str]) -> String {
        let mut at = self;
        for name in path {
            match at.child(name) {
                Some(c) => at = c,
                None => return String::new(),
            }
        }
        at.text.trim().to_owned()
    }

    /// The first element named `name` at any depth.
    fn find(&self, name: &str) -> Option<&Element> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
}

/// What SAP said about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EntryResult {
    /// The entry's message id (`MessageHeader/ReferenceID`).
    reference: String,
    accounting_document: String,
    company_code: String,
    fiscal_year: String,
    /// `MaximumLogItemSeverityCode` (1 information, 2 warning, 3 error, 4 abort).
    severity: u8,
    /// `TypeID: Note` of the log items.
    notes: Vec<String>,
}

impl EntryResult {
    /// SAP numbered a document: the entry is posted.
    fn posted(&self) -> bool {
        !self.accounting_document.is_empty()
            && self.accounting_document.bytes().any(|b| b != b'0')
            && self.severity < 3
    }

    fn document_id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.accounting_document, self.company_code, self.fiscal_year
        )
    }

    fn outcome(&self) -> Outcome {
        if self.posted() {
            return Outcome::Confirmed {
                document_id: self.document_id(),
            };
        }
        let notes = if self.notes.is_empty() {
            "no log items".to_owned()
        } else {
            self.notes.join("; ")
        };
        Outcome::Failed(Failed::new(
            FailClass::Rejected,
            format!(
                "s4hana refused the journal entry (severity {}): {notes}",
                self.severity
            ),
        ))
    }
}

/// The entries of a `JournalEntryBulkCreateConfirmation`.
fn confirmation_entries(xml: &str) -> Result<Vec<EntryResult>, String> {
    let root = Element::parse(xml)?;
    let bulk = root
        .find("JournalEntryBulkCreateConfirmation")
        .ok_or("no JournalEntryBulkCreateConfirmation in the answer")?;
    Ok(bulk
        .children_named("JournalEntryCreateConfirmation")
        .map(|c| {
            let log = c.child("Log");
            EntryResult {
                reference: c.text_of(&["MessageHeader", "ReferenceID"]),
                accounting_document: c
                    .text_of(&["JournalEntryCreateConfirmation", "AccountingDocument"]),
                company_code: c.text_of(&["JournalEntryCreateConfirmation", "CompanyCode"]),
                fiscal_year: c.text_of(&["JournalEntryCreateConfirmation", "FiscalYear"]),
                severity: log
                    .map(|l| l.text_of(&["MaximumLogItemSeverityCode"]))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                notes: log
                    .into_iter()
                    .flat_map(|l| l.children_named("Item"))
                    .map(|i| format!("{}: {}", i.text_of(&["TypeID"]), i.text_of(&["Note"])))
                    .collect(),
            }
        })
        .collect())
}

/// The posting's entry in a confirmation (by its message id; a confirmation of one entry
/// without a reference is that entry).
fn entry_outcome(cx: &Exchange, posting: &ErpPosting, xml: &str) -> Outcome {
    let entries = match confirmation_entries(xml) {
        Ok(e) => e,
        Err(e) => {
            return Outcome::Retry(Retry::new(
                RetryClass::Server,
                cx.redact(&format!(
                    "unreadable s4hana confirmation ({e}): {}",
                    ledgerflow_outbox::excerpt(xml)
                )),
            ));
        }
    };
    let (_, single) = message_ids(&posting.external_id);
    let ids = [single.simple().to_string(), single.hyphenated().to_string()];
    let mine = entries
        .iter()
        .find(|e| ids.iter().any(|id| e.reference.eq_ignore_ascii_case(id)))
        .or_else(|| (entries.len() == 1).then(|| &entries[0]));
    match mine {
        Some(entry) => entry.outcome(),
        None => Outcome::Retry(Retry::new(
            RetryClass::Server,
            format!(
                "the s4hana confirmation has no entry for message {}",
                single.simple()
            ),
        )),
    }
}

/// How SAP answered something other than success.
fn classify(cx: &Exchange, resp: &HttpResponse) -> Problem {
    if matches!(resp.status, 429 | 408)
        && let Some(p) = cx.problem_for(resp)
    {
        return p;
    }
    // A SOAP fault: `Client` is our request, anything else SAP's side.
    if let Ok(root) = Element::parse(&resp.body)
        && let Some(fault) = root.find("Fault")
    {
        let code = fault.text_of(&["faultcode"]);
        let text = cx.redact(&format!(
            "http {} soap fault {code}: {}",
            resp.status,
            fault.text_of(&["faultstring"])
        ));
        if code.ends_with("Client") {
            return Problem::Failed(Failed::new(FailClass::Client, text));
        }
        return Problem::Retry(Retry::new(RetryClass::Server, text).after(resp.retry_after()));
    }
    if let Some(p) = cx.problem_for(resp) {
        return p;
    }
    // OData errors: {"error":{"code","message":{"value"}}}.
    let message = resp
        .json()
        .and_then(|v| {
            let e = &v["error"];
            let text = e["message"]["value"]
                .as_str()
                .or_else(|| e["message"].as_str())?;
            Some(format!("{} {text}", e["code"].as_str().unwrap_or_default()))
        })
        .unwrap_or_else(|| ledgerflow_outbox::excerpt(&resp.body));
    let text = cx.redact(&format!("http {}: {message}", resp.status));
    let class = match resp.status {
        401 | 403 => FailClass::Auth,
        _ => FailClass::Client,
    };
    Problem::Failed(Failed::new(class, text))
}

/// What the confirmation endpoint knows of a message.
enum Confirmation {
    /// Not received (or not kept).
    Unknown,
    /// Received, not processed yet.
    Pending,
    /// Processed: the confirmation message.
    Done(String),
}

impl S4Hana {
    /// `GET .../A_JournalEntryItemBasic?$filter=OriginalReferenceDocument eq '<erp key>'`: the
    /// accounting document holding the posting's items, and its amount (the sum of its debit
    /// items, `DebitCreditCode` `S`, in their transaction currency), as S/4 holds them.
    async fn lookup(&self, cx: &Exchange, posting: &ErpPosting) -> ReadBack {
        let entry = &posting.document["JournalEntry"];
        // Keys are [A-Za-z0-9_-] and company codes alphanumeric: nothing to escape in the
        // OData literals.
        let mut filter = format!("OriginalReferenceDocument%20eq%20'{}'", posting.erp_key());
        if let Some(cc) = entry["CompanyCode"]
            .as_str()
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            filter.push_str(&format!("%20and%20CompanyCode%20eq%20'{cc}'"));
        }
        let url = cx.url(&format!(
            "{ITEMS_PATH}?$filter={filter}&$select=CompanyCode,FiscalYear,AccountingDocument,\
             AmountInTransactionCurrency,TransactionCurrency,DebitCreditCode&$format=json"
        ));
        let resp = match cx
            .call(HttpRequest::get(url).with_header("accept", "application/json"))
            .await
        {
            Ok(r) => r,
            Err(p) => return p.into(),
        };
        if !resp.is_success() {
            return classify(cx, &resp).into();
        }
        let Some(body) = resp.json() else {
            return ReadBack::Retry(Retry::new(
                RetryClass::Server,
                cx.redact(&format!(
                    "unreadable s4hana item list: {}",
                    ledgerflow_outbox::excerpt(&resp.body)
                )),
            ));
        };
        // Items per accounting document.
        let mut documents: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for row in body["d"]["results"].as_array().into_iter().flatten() {
            let field = |f: &str| row[f].as_str().unwrap_or_default().to_owned();
            let document = field("AccountingDocument");
            if document.is_empty() {
                continue;
            }
            let id = format!(
                "{document}/{}/{}",
                field("CompanyCode"),
                field("FiscalYear")
            );
            documents.entry(id).or_default().push(row);
        }
        if documents.len() > 1 {
            tracing::error!(
                external_id = %posting.external_id, copies = documents.len(),
                "s4hana holds this journal entry more than once"
            );
        }
        match documents.into_iter().next() {
            Some((document_id, items)) => ReadBack::Found {
                document_id,
                amount: items_amount(&items),
            },
            None => ReadBack::NotFound,
        }
    }

    /// `JournalEntryCreateRequestConfirmation_In`: posted or refused at once.
    async fn send_sync(&self, cx: &Exchange, posting: &ErpPosting) -> Outcome {
        let xml = match envelope(posting, &rfc3339_micros(now_micros())) {
            Ok(x) => x,
            Err(f) => return Outcome::Failed(f),
        };
        let req = HttpRequest::post(cx.url(SYNC_PATH))
            .with_header("soapaction", "\"#POST\"")
            .with_header("accept", "text/xml")
            .body("text/xml; charset=utf-8", xml);
        let resp = match cx.call(req).await {
            Ok(r) => r,
            Err(p) => return p.into(),
        };
        if resp.status != 200 {
            return classify(cx, &resp).into();
        }
        entry_outcome(cx, posting, &resp.body)
    }

    /// The confirmation of the posting's bulk message.
    async fn confirmation(&self, cx: &Exchange, message_id: &str) -> Result<Confirmation, Problem> {
        let url = cx.url(&format!("{CONFIRMATIONS_PATH}?messageId={message_id}"));
        let resp = cx
            .call(HttpRequest::get(url).with_header("accept", "text/xml"))
            .await?;
        match resp.status {
            200 => Ok(Confirmation::Done(resp.body)),
            202 => Ok(Confirmation::Pending),
            404 => Ok(Confirmation::Unknown),
            _ => Err(classify(cx, &resp)),
        }
    }

    /// `JournalEntryBulkCreationRequest_In`: the message is accepted and polled. A message with
    /// this posting's id that SAP already holds is adopted instead of sent again; one SAP
    /// already refused is posted again synchronously (SAP would drop a re-sent message id).
    async fn send_async(&self, cx: &Exchange, posting: &ErpPosting) -> Outcome {
        let (bulk, _) = message_ids(&posting.external_id);
        let message_id = bulk.simple().to_string();
        match self.confirmation(cx, &message_id).await {
            Ok(Confirmation::Pending) => {
                return Outcome::Accepted {
                    job_ref: message_id,
                };
            }
            Ok(Confirmation::Done(xml)) => match entry_outcome(cx, posting, &xml) {
                Outcome::Failed(f) if f.class == FailClass::Rejected => {
                    tracing::info!(
                        outbox_id = %posting.id, message_id = %message_id, reason = %f.reason,
                        "s4hana refused this message before; posting it synchronously"
                    );
                    return self.send_sync(cx, posting).await;
                }
                other => return other,
            },
            Ok(Confirmation::Unknown) => {}
            Err(p) => return p.into(),
        }
        let xml = match envelope(posting, &rfc3339_micros(now_micros())) {
            Ok(x) => x,
            Err(f) => return Outcome::Failed(f),
        };
        let req = HttpRequest::post(cx.url(ASYNC_PATH))
            .with_header("soapaction", "\"#POST\"")
            .body("text/xml; charset=utf-8", xml);
        let resp = match cx.call(req).await {
            Ok(r) => r,
            Err(p) => return p.into(),
        };
        if !resp.is_success() {
            return classify(cx, &resp).into();
        }
        Outcome::Accepted {
            job_ref: message_id,
        }
    }
}

impl ErpAdapter for S4Hana {
    fn kind(&self) -> ErpKind {
        ErpKind::S4hana
    }

    fn lookup_policy(&self) -> LookupPolicy {
        LookupPolicy::Always
    }

    fn render(&self, input: &RenderInput<'_>) -> Result<Rendered, ErpError> {
        let m = mapping(input)?;
        let accounts = &input.route.accounts;
        let debtor = match (input.route.target.mode, input.journal.kind) {
            (ErpMode::Journal, _) => None,
            (
                ErpMode::Subledger,
                JournalKind::Invoice | JournalKind::CreditMemo | JournalKind::InvoiceVoid,
            ) => Some(accounts.receivable.as_str()),
            (ErpMode::Subledger, JournalKind::Receipt | JournalKind::Refund) => {
                Some(accounts.unapplied_cash.as_str())
            }
            (ErpMode::Subledger, JournalKind::Application) => {
                return Ok(Rendered::NotPosted {
                    reason: "s4hana clears a payment against its invoice on the customer account",
                });
            }
        };
        Ok(Rendered::Document(Document {
            kind: DOCUMENT_KIND.into(),
            body: journal_entry(input, m, debtor),
            depends_on: kind_dependencies(input),
        }))
    }

    fn find<'a>(&'a self, cx: &'a Exchange, posting: &'a ErpPosting) -> BoxFuture<'a, Lookup> {
        Box::pin(async move { self.lookup(cx, posting).await.into() })
    }

    /// The items read by the reference key carry their amounts: read-back compares them.
    fn read_back<'a>(
        &'a self,
        cx: &'a Exchange,
        posting: &'a ErpPosting,
    ) -> BoxFuture<'a, ReadBack> {
        Box::pin(self.lookup(cx, posting))
    }

    fn send<'a>(&'a self, cx: &'a Exchange, posting: &'a ErpPosting) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            if self.is_async(cx.route().account()) {
                self.send_async(cx, posting).await
            } else {
                self.send_sync(cx, posting).await
            }
        })
    }

    fn poll<'a>(
        &'a self,
        cx: &'a Exchange,
        posting: &'a ErpPosting,
        job_ref: &'a str,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match self.confirmation(cx, job_ref).await {
                Ok(Confirmation::Pending) => Outcome::Accepted {
                    job_ref: job_ref.to_owned(),
                },
                Ok(Confirmation::Done(xml)) => entry_outcome(cx, posting, &xml),
                // SAP does not know the message (lost, or its confirmation expired): the entry
                // may be there anyway; if not, send it again.
                Ok(Confirmation::Unknown) => match Lookup::from(self.lookup(cx, posting).await) {
                    Lookup::Found { document_id } => Outcome::Confirmed { document_id },
                    Lookup::NotFound => self.send_async(cx, posting).await,
                    Lookup::Retry(r) => Outcome::Retry(r),
                    Lookup::Failed(f) => Outcome::Failed(f),
                },
                Err(p) => p.into(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::test_support::code_block;
    use crate::mapping::tests::{envelope as event_envelope, invoice, line, payment, tenant};
    use crate::mapping::{ErpRoute, map_event};

    fn render(event: ledgerflow_core::Event, mode: ErpMode, kind: Option<JournalKind>) -> Rendered {
        crate::adapters::test_support::render_with(
            &S4Hana::new(),
            ErpKind::S4hana,
            event,
            mode,
            kind,
        )
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

    fn doc(r: Rendered) -> Document {
        match r {
            Rendered::Document(d) => d,
            Rendered::NotPosted { reason } => panic!("{reason}"),
        }
    }

    fn posting(document: Value) -> ErpPosting {
        let route = ErpRoute::of(&tenant("acme", Some(ErpKind::S4hana)))
            .unwrap()
            .posting_route();
        ErpPosting {
            id: "p1".into(),
            tenant_id: "acme".into(),
            journal_id: "j1".into(),
            journal_kind: JournalKind::Invoice,
            document_kind: DOCUMENT_KIND.into(),
            external_id: "lf-acme-x-inv".into(),
            document,
            route,
            config_version: "c".into(),
            attempts: 0,
            job_ref: None,
            indefinite: false,
            dependencies: Vec::new(),
        }
    }

    #[test]
    fn journal_mode_is_an_entry_of_signed_gl_items() {
        let d = doc(render(inv(), ErpMode::Journal, None));
        assert_eq!(d.kind, "JournalEntry");
        let e = &d.body["JournalEntry"];
        assert_eq!(e["OriginalReferenceDocument"], "lf-acme-x-inv");
        assert_eq!(e["CompanyCode"], "1010");
        assert_eq!(e["AccountingDocumentType"], "SA");
        assert_eq!(e["CreatedByUser"], "u", "the communication user");
        assert_eq!(e["PostingDate"], "2023-11-14");
        let items = e["Item"].as_array().unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0]["GLAccount"], "1100");
        assert_eq!(items[0]["AmountInTransactionCurrency"]["content"], "28.16");
        assert_eq!(items[0]["DebitCreditCode"], "S");
        assert_eq!(items[1]["AmountInTransactionCurrency"]["content"], "-20.00");
        assert_eq!(items[1]["DebitCreditCode"], "H");
        assert!(e.get("DebtorItem").is_none());
    }

    #[test]
    fn subledger_mode_puts_the_receivable_on_the_customer() {
        let d = doc(render(inv(), ErpMode::Subledger, None));
        let e = &d.body["JournalEntry"];
        let debtor = e["DebtorItem"].as_array().unwrap();
        assert_eq!(debtor.len(), 1);
        assert_eq!(debtor[0]["Debtor"], "cus-1");
        assert!(debtor[0].get("GLAccount").is_none());
        assert_eq!(debtor[0]["AmountInTransactionCurrency"]["content"], "28.16");
        assert_eq!(e["Item"].as_array().unwrap().len(), 3);
        let pay = payment(
            "00000000-0000-4000-8000-000000000002",
            "pay-1",
            "inv-1",
            10_000,
            320,
        );
        let receipt = doc(render(pay.clone(), ErpMode::Subledger, None));
        let debtor = receipt.body["JournalEntry"]["DebtorItem"]
            .as_array()
            .unwrap();
        assert_eq!(
            debtor[0]["AmountInTransactionCurrency"]["content"],
            "-100.00"
        );
        assert_eq!(debtor[0]["DebitCreditCode"], "H");
        assert!(matches!(
            render(pay, ErpMode::Subledger, Some(JournalKind::Application)),
            Rendered::NotPosted { .. }
        ));
    }

    #[test]
    fn the_soap_message_carries_stable_ids_and_escaped_values() {
        let mut body = doc(render(inv(), ErpMode::Subledger, None)).body;
        body["JournalEntry"]["DocumentHeaderText"] = json!("A & B <x>");
        let p = posting(body);
        let xml = envelope(&p, "2025-01-01T00:00:00Z").unwrap();
        assert_eq!(xml, envelope(&p, "2025-01-01T00:00:00Z").unwrap());
        let (bulk, single) = message_ids("lf-acme-x-inv");
        assert_ne!(bulk, single);
        assert_eq!(bulk, message_ids("lf-acme-x-inv").0, "deterministic");
        assert_eq!(bulk.get_version_num(), 5);
        assert!(xml.contains(&format!("<ID>{}</ID>", bulk.simple())));
        assert!(xml.contains(&format!("<UUID>{}</UUID>", single.hyphenated())));
        assert!(xml.contains("<DocumentHeaderText>A &amp; B &lt;x&gt;</DocumentHeaderText>"));
        assert!(xml.contains(
            "<AmountInTransactionCurrency currencyCode=\"USD\">28.16</AmountInTransactionCurrency>"
        ));
        assert!(xml.contains(
            "<DebtorItem><ReferenceDocumentItem>1</ReferenceDocumentItem><Debtor>cus-1</Debtor>"
        ));
        let root = Element::parse(&xml).unwrap();
        let entry = root.find("JournalEntry").unwrap();
        assert_eq!(entry.text_of(&["DocumentHeaderText"]), "A & B <x>");
        assert_eq!(entry.children_named("Item").count(), 3);
        // Header fields in schema order, items after them.
        let names: Vec<&str> = entry.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names[0], "OriginalReferenceDocumentType");
        assert_eq!(names[10], "PostingDate");
    }

    #[test]
    fn legacy_documents_are_sent_as_they_are() {
        let t = tenant("acme", Some(ErpKind::S4hana));
        let effect = map_event(&event_envelope(inv()), &t).unwrap();
        let route = effect.route.unwrap();
        let journal = effect.posting.journal().unwrap();
        let mut p = posting(crate::payloads::s4hana(journal, &route, "lf-acme-x-inv"));
        p.document_kind = LEGACY_KIND.into();
        let xml = envelope(&p, "now").unwrap();
        assert_eq!(xml.matches("<Item>").count(), 4);
        p.document_kind = "other".into();
        assert_eq!(envelope(&p, "now").unwrap_err().class, FailClass::Mapping);
    }

    #[test]
    fn confirmations_are_read_per_entry() {
        let (_, single) = message_ids("lf-acme-x-inv");
        let ok = format!(
            "<soap-env:Envelope xmlns:soap-env=\"x\"><soap-env:Body><n0:JournalEntryBulkCreateConfirmation xmlns:n0=\"y\">\
             <MessageHeader><ID>C1</ID></MessageHeader>\
             <JournalEntryCreateConfirmation><MessageHeader><ReferenceID>{}</ReferenceID></MessageHeader>\
             <JournalEntryCreateConfirmation><AccountingDocument>0100000042</AccountingDocument>\
             <CompanyCode>1010</CompanyCode><FiscalYear>2023</FiscalYear></JournalEntryCreateConfirmation>\
             <Log><MaximumLogItemSeverityCode>1</MaximumLogItemSeverityCode><Item><TypeID>RW(609)</TypeID>\
             <SeverityCode>1</SeverityCode><Note>Document posted successfully</Note></Item></Log>\
             </JournalEntryCreateConfirmation></n0:JournalEntryBulkCreateConfirmation></soap-env:Body></soap-env:Envelope>",
            single.simple()
        );
        let entries = confirmation_entries(&ok).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].outcome(),
            Outcome::Confirmed {
                document_id: "0100000042/1010/2023".into()
            }
        );
        let refused = ok
            .replace("0100000042", "0000000000")
            .replace(
                "<MaximumLogItemSeverityCode>1",
                "<MaximumLogItemSeverityCode>3",
            )
            .replace("RW(609)", "F5(702)")
            .replace(
                "Document posted successfully",
                "Balance in transaction currency",
            );
        match confirmation_entries(&refused).unwrap()[0].outcome() {
            Outcome::Failed(f) => {
                assert_eq!(f.class, FailClass::Rejected);
                assert!(
                    f.reason
                        .contains("F5(702): Balance in transaction currency"),
                    "{}",
                    f.reason
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(confirmation_entries("<a><b/></a>").is_err());
    }

    /// ADAPTERS.md's SOAP message is the one sent for its JSON example (lines joined without
    /// their indentation).
    #[test]
    fn adapters_md_shows_the_soap_message() {
        let doc = include_str!("../../ADAPTERS.md");
        let json = code_block(doc, "#### s4hana journal: invoice", "```json");
        let mut p = posting(serde_json::from_str(&json).unwrap());
        p.external_id = "lf-acme-00000000-0000-4000-8000-000000000001-inv".into();
        let sent = envelope(&p, "2026-01-05T09:30:00.000000Z").unwrap();
        if std::env::var_os("PRINT_EXAMPLES").is_some() {
            println!("{sent}");
        }
        let shown = code_block(doc, "#### s4hana: the invoice's message", "```xml");
        let flat: String = shown.lines().map(str::trim_start).collect();
        assert_eq!(flat, sent);
    }
}
