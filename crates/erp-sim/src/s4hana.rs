//! SAP S/4HANA journal entry APIs of communication scenario SAP_COM_0002.
//!
//! Paths (under `/s4hana`, optionally `/s4hana/{system}`), basic auth (communication user):
//! - `POST sap/bc/srt/scs_ext/sap/journalentrycreaterequestconfi`: SOAP
//!   `JournalEntryCreateRequestConfirmation_In`, synchronous; answers
//!   `JournalEntryBulkCreateConfirmation` with AccountingDocument and a log per entry;
//! - `POST sap/bc/srt/scs_ext/sap/journalentrybulkcreationrequest`: SOAP
//!   `JournalEntryBulkCreationRequest_In`, asynchronous; answers 202 and processes the message
//!   later; entries succeed or fail one by one;
//! - `GET sim/confirmations?messageId=...`: the confirmation SAP would send back through
//!   `JournalEntryBulkCreationConfirmation_Out`, for clients to poll (202 while pending);
//! - `GET sap/opu/odata/sap/API_JOURNALENTRYITEMBASIC_SRV/A_JournalEntryItemBasic?$filter=...`:
//!   OData V2 read-back of posted items (JSON).
//!
//! Creates are never deduplicated: the same entry posted twice is two accounting documents.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth;
use crate::conn::ConnHandle;
use crate::error::SimError;
use crate::store::{Account, Erp, Job, NewDoc, now_ms};
use crate::text::{self, decode_pairs, param, xml_escape};
use crate::xml::Element;
use crate::{Admission, Sim, origin};

const ERP: Erp = Erp::S4Hana;
const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SFIN_NS: &str = "http://sap.com/xi/SAPSCORE/SFIN";
/// Length of `OriginalReferenceDocument`, the 20-character reference key (AWKEY).
const ORIGINAL_REFERENCE_LENGTH: usize = 20;

fn soap_fault(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<soap-env:Envelope xmlns:soap-env=\"{SOAP_ENV}\"><soap-env:Header/><soap-env:Body>\
         <soap-env:Fault><faultcode>soap-env:{code}</faultcode><faultstring xml:lang=\"en\">{}\
         </faultstring><detail/></soap-env:Fault></soap-env:Body></soap-env:Envelope>",
        xml_escape(message)
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/xml; charset=utf-8")
        .body(Body::from(body))
        .unwrap_or_default()
}

fn unauthorized() -> Response {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"SAP NetWeaver Application Server [S4H/100]\"",
        )
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Body::from(
            "<html><head><title>Logon Error Message</title></head><body>Logon failed</body></html>",
        ))
        .unwrap_or_default()
}

/// Entry point for everything under `/s4hana/`.
pub(crate) async fn handle(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    Path(rest): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut segments: Vec<&str> = rest.split('/').collect();
    let path_account = match segments.first() {
        Some(&"sap") | Some(&"sim") | None => None,
        Some(system) => {
            let system = (*system).to_owned();
            segments.remove(0);
            Some(system)
        }
    };
    let named = path_account.clone().unwrap_or_else(|| "unknown".to_owned());
    if let Some(secs) = sim.faults.down_for(ERP) {
        sim.report.down(ERP, &named);
        let mut resp = soap_fault(
            StatusCode::SERVICE_UNAVAILABLE,
            "Server",
            "Service unavailable",
        );
        resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
        return resp;
    }
    let account = auth::basic(&headers).and_then(|(user, password)| {
        sim.store.accounts(Some(ERP)).into_iter().find(|a| {
            path_account.as_deref().is_none_or(|p| p == a.account)
                && a.credentials
                    .users
                    .iter()
                    .any(|u| u.user == user && u.password == password)
        })
    });
    let Some(account) = account else {
        sim.report.request(ERP, &named);
        sim.report.rejected_auth(ERP, &named);
        return unauthorized();
    };
    sim.report.request(ERP, &account.account);
    let admitted = match sim.admit(ERP, &account.account).await {
        Admission::Go(admitted) => admitted,
        Admission::Throttled { retry_after } => {
            let mut resp = soap_fault(StatusCode::TOO_MANY_REQUESTS, "Server", "Too many requests");
            resp.headers_mut()
                .insert(header::RETRY_AFTER, retry_after.unwrap_or(1).into());
            return resp;
        }
        Admission::ServerError => {
            return soap_fault(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Server",
                "Internal server error",
            );
        }
    };
    let base = match &path_account {
        Some(system) => format!("{}/s4hana/{system}", origin(&headers)),
        None => format!("{}/s4hana", origin(&headers)),
    };
    let text = String::from_utf8_lossy(&body);
    let response = match (segments.as_slice(), &method) {
        (
            [
                "sap",
                "bc",
                "srt",
                "scs_ext",
                "sap",
                "journalentrycreaterequestconfi",
            ],
            &Method::POST,
        ) => sync_post(&sim, &account, &text),
        (
            [
                "sap",
                "bc",
                "srt",
                "scs_ext",
                "sap",
                "journalentrybulkcreationrequest",
            ],
            &Method::POST,
        ) => async_post(&sim, &account, &text),
        (["sim", "confirmations"], &Method::GET) => confirmations(&sim, &account, &uri),
        (
            [
                "sap",
                "opu",
                "odata",
                "sap",
                "API_JOURNALENTRYITEMBASIC_SRV",
                "A_JournalEntryItemBasic",
            ],
            &Method::GET,
        ) => read_items(&sim, &account, &uri, &base),
        _ => (StatusCode::NOT_FOUND, "Service cannot be reached").into_response(),
    };
    admitted.finish(&conn);
    response
}

/// Parses `JournalEntryBulkCreateRequest` into (bulk message id, entries as JSON).
fn parse_bulk(text: &str) -> Result<(String, Vec<Value>), String> {
    let root = Element::parse(text)?;
    let body = root.find("Body").ok_or("no SOAP Body")?;
    let request = body.children.first().ok_or("empty SOAP Body")?;
    if request.name != "JournalEntryBulkCreateRequest" {
        return Err(format!("unexpected request element {}", request.name));
    }
    let message_id = message_id(request.child("MessageHeader"));
    if message_id.is_empty() {
        return Err("MessageHeader/ID (or UUID) is required".to_owned());
    }
    let mut entries = Vec::new();
    for create in request.children_named("JournalEntryCreateRequest") {
        let sub_id = message_id_of(create.child("MessageHeader"));
        let entry = create
            .child("JournalEntry")
            .ok_or("JournalEntryCreateRequest without JournalEntry")?;
        // CHAR(20), the reference key (BKPF-AWKEY): SAP's SOAP runtime refuses a longer value
        // when it maps the message (no truncation, nothing posted).
        let reference = entry.text_of("OriginalReferenceDocument");
        if reference.chars().count() > ORIGINAL_REFERENCE_LENGTH {
            return Err(format!(
                "Data loss occurred when converting {reference}: OriginalReferenceDocument is \
                 {} characters long, at most {ORIGINAL_REFERENCE_LENGTH} are allowed",
                reference.chars().count()
            ));
        }
        let mut json_entry = serde_json::Map::new();
        json_entry.insert("MessageID".into(), json!(sub_id));
        for field in [
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
        ] {
            json_entry.insert(field.into(), json!(entry.text_of(field)));
        }
        let mut items = Vec::new();
        for item in entry.children.iter().filter(|c| {
            matches!(
                c.name.as_str(),
                "Item" | "DebtorItem" | "CreditorItem" | "ProductTaxItem"
            )
        }) {
            let amount = item.child("AmountInTransactionCurrency");
            items.push(json!({
                "ItemType": item.name,
                "ReferenceDocumentItem": item.text_of("ReferenceDocumentItem"),
                "GLAccount": item.text_of("GLAccount"),
                "Debtor": item.text_of("Debtor"),
                "Creditor": item.text_of("Creditor"),
                "AmountInTransactionCurrency": amount.map(|a| a.text.trim().to_owned()).unwrap_or_default(),
                "TransactionCurrency": amount.and_then(|a| a.attr("currencyCode")).unwrap_or_default(),
                "DebitCreditCode": item.text_of("DebitCreditCode"),
                "DocumentItemText": item.text_of("DocumentItemText"),
            }));
        }
        json_entry.insert("Items".into(), Value::Array(items));
        entries.push(Value::Object(json_entry));
    }
    if entries.is_empty() {
        return Err("no JournalEntryCreateRequest in the message".to_owned());
    }
    Ok((message_id, entries))
}

fn message_id_of(header: Option<&Element>) -> String {
    header
        .map(|h| {
            let id = h.text_of("ID");
            if id.is_empty() { h.text_of("UUID") } else { id }
        })
        .unwrap_or_default()
}

fn message_id(header: Option<&Element>) -> String {
    message_id_of(header)
}

/// One log line of a confirmation: (severity 1..4, TypeID, Note).
type LogItem = (u8, String, String);

/// Posts one entry; returns the confirmation JSON of that entry.
fn post_entry(sim: &Sim, account: &Account, entry: &Value) -> Result<Value, SimError> {
    let get = |f: &str| {
        entry
            .get(f)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut errors: Vec<LogItem> = Vec::new();
    for field in [
        "CompanyCode",
        "AccountingDocumentType",
        "DocumentDate",
        "PostingDate",
    ] {
        if get(field).is_empty() {
            errors.push((
                3,
                "FINS_API(001)".into(),
                format!("Field {field} is required"),
            ));
        }
    }
    let posting = get("PostingDate");
    let year = posting
        .get(..4)
        .filter(|y| y.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned);
    if !posting.is_empty() && (year.is_none() || posting.len() != 10) {
        errors.push((
            3,
            "FINS_API(002)".into(),
            format!("Posting date {posting} is not YYYY-MM-DD"),
        ));
    }
    let items = entry
        .get("Items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if items.len() < 2 {
        errors.push((
            3,
            "F5(150)".into(),
            "A journal entry needs at least two items".into(),
        ));
    }
    let mut balance: BTreeMap<String, i128> = BTreeMap::new();
    for (n, item) in items.iter().enumerate() {
        let text_of = |f: &str| item.get(f).and_then(Value::as_str).unwrap_or_default();
        let Some(amount) = text::parse_amount(text_of("AmountInTransactionCurrency")) else {
            errors.push((
                3,
                "FINS_API(003)".into(),
                format!("Item {}: invalid amount", n + 1),
            ));
            continue;
        };
        let currency = text_of("TransactionCurrency");
        if currency.is_empty() {
            errors.push((
                3,
                "FINS_API(004)".into(),
                format!("Item {}: currencyCode missing", n + 1),
            ));
        }
        let signed = match text_of("DebitCreditCode") {
            "S" => amount.abs(),
            "H" => -amount.abs(),
            "" => amount,
            other => {
                errors.push((
                    3,
                    "FINS_API(005)".into(),
                    format!("Item {}: DebitCreditCode {other} is not S or H", n + 1),
                ));
                amount
            }
        };
        if text_of("ItemType") == "Item" && text_of("GLAccount").is_empty() {
            errors.push((
                3,
                "FINS_API(006)".into(),
                format!("Item {}: GLAccount is required", n + 1),
            ));
        }
        *balance.entry(currency.to_owned()).or_default() += signed;
    }
    if errors.is_empty() && balance.values().any(|v| *v != 0) {
        errors.push((
            3,
            "F5(702)".into(),
            "Balance in transaction currency".into(),
        ));
    }
    let company = get("CompanyCode");
    let fiscal_year = year.unwrap_or_default();
    if !errors.is_empty() {
        return Ok(json!({
            "MessageID": get("MessageID"),
            "AccountingDocument": "0000000000",
            "CompanyCode": company,
            "FiscalYear": "0000",
            "Log": log_json(&errors),
        }));
    }
    let _guard = sim.write_lock();
    let seq = sim.store.next_seq();
    let document = format!("{:010}", 100_000_000 + seq);
    let mut body = entry.clone();
    if let Value::Object(map) = &mut body {
        map.insert("AccountingDocument".into(), json!(document));
        map.insert("FiscalYear".into(), json!(fiscal_year));
    }
    let original = get("OriginalReferenceDocument");
    let reference = if original.is_empty() {
        get("DocumentReferenceID")
    } else {
        original.clone()
    };
    let doc = NewDoc {
        erp: ERP,
        account: account.account.clone(),
        kind: "JournalEntry".into(),
        erp_key: Some(original),
        source_ref: Some(reference),
        parent: None,
        body,
    }
    .build(seq, format!("{document}/{company}/{fiscal_year}"));
    sim.store.put_docs(vec![doc])?;
    let note = format!(
        "Document posted successfully: {} {document}{company}{fiscal_year} {}",
        get("OriginalReferenceDocumentType"),
        account.account
    );
    Ok(json!({
        "MessageID": get("MessageID"),
        "AccountingDocument": document,
        "CompanyCode": company,
        "FiscalYear": fiscal_year,
        "Log": log_json(&[(1, "RW(609)".into(), note)]),
    }))
}

fn log_json(items: &[LogItem]) -> Value {
    let max = items.iter().map(|(s, _, _)| *s).max().unwrap_or(1);
    json!({
        "MaximumLogItemSeverityCode": max.to_string(),
        "Item": items.iter().map(|(s, t, n)| json!({ "TypeID": t, "SeverityCode": s.to_string(), "Note": n })).collect::<Vec<_>>(),
    })
}

fn confirmation_xml(bulk_id: &str, results: &[Value]) -> String {
    let s = |v: &Value, f: &str| xml_escape(v.get(f).and_then(Value::as_str).unwrap_or_default());
    let mut out = format!(
        "<soap-env:Envelope xmlns:soap-env=\"{SOAP_ENV}\"><soap-env:Header/><soap-env:Body>\
         <n0:JournalEntryBulkCreateConfirmation xmlns:n0=\"{SFIN_NS}\"><MessageHeader>\
         <ID>C{bulk}</ID><CreationDateTime>{now}</CreationDateTime><ReferenceID>{bulk}</ReferenceID>\
         </MessageHeader>",
        bulk = xml_escape(bulk_id),
        now = text::rfc3339(now_ms())
    );
    for r in results {
        out.push_str(&format!(
            "<JournalEntryCreateConfirmation><MessageHeader><ReferenceID>{}</ReferenceID>\
             </MessageHeader><JournalEntryCreateConfirmation><AccountingDocument>{}\
             </AccountingDocument><CompanyCode>{}</CompanyCode><FiscalYear>{}</FiscalYear>\
             </JournalEntryCreateConfirmation><Log><MaximumLogItemSeverityCode>{}\
             </MaximumLogItemSeverityCode>",
            s(r, "MessageID"),
            s(r, "AccountingDocument"),
            s(r, "CompanyCode"),
            s(r, "FiscalYear"),
            r.get("Log")
                .map(|l| s(l, "MaximumLogItemSeverityCode"))
                .unwrap_or_default(),
        ));
        let items = r
            .get("Log")
            .and_then(|l| l.get("Item"))
            .and_then(Value::as_array);
        for item in items.into_iter().flatten() {
            out.push_str(&format!(
                "<Item><TypeID>{}</TypeID><SeverityCode>{}</SeverityCode><Note>{}</Note></Item>",
                s(item, "TypeID"),
                s(item, "SeverityCode"),
                s(item, "Note")
            ));
        }
        out.push_str("</Log></JournalEntryCreateConfirmation>");
    }
    out.push_str("</n0:JournalEntryBulkCreateConfirmation></soap-env:Body></soap-env:Envelope>");
    out
}

fn xml_response(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/xml; charset=utf-8")
        .body(Body::from(body))
        .unwrap_or_default()
}

fn sync_post(sim: &Sim, account: &Account, text: &str) -> Response {
    let (bulk_id, entries) = match parse_bulk(text) {
        Ok(parsed) => parsed,
        Err(e) => return soap_fault(StatusCode::INTERNAL_SERVER_ERROR, "Client", &e),
    };
    let mut results = Vec::new();
    for entry in &entries {
        match post_entry(sim, account, entry) {
            Ok(r) => results.push(r),
            Err(e) => {
                return soap_fault(StatusCode::INTERNAL_SERVER_ERROR, "Server", &e.to_string());
            }
        }
    }
    xml_response(StatusCode::OK, confirmation_xml(&bulk_id, &results))
}

fn async_post(sim: &Sim, account: &Account, text: &str) -> Response {
    let (bulk_id, entries) = match parse_bulk(text) {
        Ok(parsed) => parsed,
        Err(e) => return soap_fault(StatusCode::INTERNAL_SERVER_ERROR, "Client", &e),
    };
    let seq = sim.store.next_seq();
    let now = now_ms();
    let job = Job {
        id: format!("job-{seq}"),
        seq,
        erp: ERP,
        account: account.account.clone(),
        kind: "s4_bulk".into(),
        key: Some(bulk_id),
        created_ms: now,
        ready_ms: now + sim.job_delay_ms(),
        done: false,
        input: json!({ "entries": entries }),
        result: Value::Null,
    };
    if let Err(e) = sim.store.put_job(job) {
        return soap_fault(StatusCode::INTERNAL_SERVER_ERROR, "Server", &e.to_string());
    }
    StatusCode::ACCEPTED.into_response()
}

/// Processes a due bulk message: each entry is posted (or refused) on its own.
pub(crate) fn process_job(sim: &Sim, mut job: Job) -> Result<(), SimError> {
    let Some(account) = sim.store.account(ERP, &job.account) else {
        job.done = true;
        job.result = json!({ "error": "account no longer provisioned" });
        return sim.store.put_job(job);
    };
    let entries = job
        .input
        .get("entries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut results = Vec::new();
    for entry in &entries {
        results.push(post_entry(sim, &account, entry)?);
    }
    job.done = true;
    job.result = json!({ "entries": results });
    sim.store.put_job(job)
}

fn confirmations(sim: &Sim, account: &Account, uri: &Uri) -> Response {
    sim.process_due_jobs();
    let query = decode_pairs(uri.query().unwrap_or(""));
    let Some(message_id) = param(&query, "messageId") else {
        let jobs: Vec<Value> = sim
            .store
            .find_jobs(|j| j.erp == ERP && j.account == account.account)
            .iter()
            .map(|j| json!({ "messageId": j.key, "done": j.done }))
            .collect();
        return axum::Json(json!({ "messages": jobs })).into_response();
    };
    let jobs = sim.store.find_jobs(|j| {
        j.erp == ERP && j.account == account.account && j.key.as_deref() == Some(message_id)
    });
    let Some(job) = jobs.first() else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": "unknown messageId" })),
        )
            .into_response();
    };
    if !job.done {
        return StatusCode::ACCEPTED.into_response();
    }
    let results = job
        .result
        .get("entries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    xml_response(StatusCode::OK, confirmation_xml(message_id, &results))
}

fn read_items(sim: &Sim, account: &Account, uri: &Uri, base: &str) -> Response {
    let query = decode_pairs(uri.query().unwrap_or(""));
    let filter = match param(&query, "$filter").map(text::parse_filter) {
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": { "code": "SY/530", "message": { "lang": "en", "value": e } } })),
            )
                .into_response();
        }
        None => Vec::new(),
    };
    let top: usize = param(&query, "$top")
        .and_then(|t| t.parse().ok())
        .unwrap_or(usize::MAX);
    let mut rows = Vec::new();
    for doc in sim
        .store
        .find_docs(|d| d.erp == ERP && d.account == account.account)
    {
        let get = |f: &str| {
            doc.body
                .get(f)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let items = doc
            .body
            .get("Items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (n, item) in items.iter().enumerate() {
            let it = |f: &str| {
                item.get(f)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let amount = text::parse_amount(&it("AmountInTransactionCurrency")).unwrap_or(0);
            let signed = if it("DebitCreditCode") == "H" {
                -amount.abs()
            } else {
                amount.abs()
            };
            let key = format!(
                "SourceLedger='0L',CompanyCode='{}',FiscalYear='{}',AccountingDocument='{}',LedgerGLLineItem='{:06}'",
                get("CompanyCode"),
                get("FiscalYear"),
                get("AccountingDocument"),
                n + 1
            );
            let row = json!({
                "__metadata": {
                    "id": format!("{base}/sap/opu/odata/sap/API_JOURNALENTRYITEMBASIC_SRV/A_JournalEntryItemBasic({key})"),
                    "type": "API_JOURNALENTRYITEMBASIC_SRV.A_JournalEntryItemBasicType",
                },
                "SourceLedger": "0L",
                "Ledger": "0L",
                "CompanyCode": get("CompanyCode"),
                "FiscalYear": get("FiscalYear"),
                "AccountingDocument": get("AccountingDocument"),
                "LedgerGLLineItem": format!("{:06}", n + 1),
                "AccountingDocumentItem": format!("{:03}", n + 1),
                "AccountingDocumentType": get("AccountingDocumentType"),
                "ReferenceDocumentType": get("OriginalReferenceDocumentType"),
                "OriginalReferenceDocument": get("OriginalReferenceDocument"),
                "DocumentReferenceID": get("DocumentReferenceID"),
                "AccountingDocumentHeaderText": get("DocumentHeaderText"),
                "PostingDate": get("PostingDate"),
                "DocumentDate": get("DocumentDate"),
                "GLAccount": it("GLAccount"),
                "Customer": it("Debtor"),
                "Supplier": it("Creditor"),
                "DebitCreditCode": if it("DebitCreditCode").is_empty() { if signed < 0 { "H".to_owned() } else { "S".to_owned() } } else { it("DebitCreditCode") },
                "AmountInTransactionCurrency": text::format_amount(signed),
                "TransactionCurrency": it("TransactionCurrency"),
                "DocumentItemText": it("DocumentItemText"),
            });
            if text::matches(&row, &filter) {
                rows.push(row);
            }
        }
    }
    rows.truncate(top);
    axum::Json(json!({ "d": { "results": rows } })).into_response()
}
