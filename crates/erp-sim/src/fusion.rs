//! Oracle Fusion Cloud Financials: the `erpintegrations` REST resource with `importBulkData`
//! (an FBDI zip, base64 in JSON) that submits an ESS job, the ESS status finder, and read-back
//! of what the import created.
//!
//! Paths (under `/fusion`, optionally `/fusion/{pod}`), basic auth or an OAuth bearer token:
//! - `POST oauth2/v1/token` (client credentials, client id/secret as basic auth);
//! - `POST fscmRestApi/resources/11.13.18.05/erpintegrations` (OperationName importBulkData);
//! - `GET  fscmRestApi/resources/11.13.18.05/erpintegrations?finder=ESSJobStatusRF;requestId=N`;
//! - `GET  fscmRestApi/resources/11.13.18.05/erpintegrations?finder=ESSJobExecutionDetailsRF;requestId=N,fileType=log`;
//! - `GET  fscmRestApi/resources/11.13.18.05/journalBatches?q=...` and `receivablesInvoices?q=...`.
//!
//! The HTTP 201 only means "submitted": the job runs later (`--job-delay-ms`) and ends
//! SUCCEEDED, WARNING (some rows rejected) or ERROR. Journal import keeps GROUP_ID and the
//! REFERENCE columns and never deduplicates; AutoInvoice rejects a line whose transaction
//! flexfield (INTERFACE_LINE_CONTEXT + INTERFACE_LINE_ATTRIBUTE1..15) already exists.

use std::collections::{BTreeMap, HashSet};
use std::io::{Cursor, Read, Write};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::auth;
use crate::conn::ConnHandle;
use crate::error::SimError;
use crate::store::{Account, Erp, Job, NewDoc, now_ms};
use crate::text::{self, decode_pairs, param};
use crate::{Admission, Sim, origin};

const ERP: Erp = Erp::Fusion;
const API: [&str; 3] = ["fscmRestApi", "resources", "11.13.18.05"];
const TOKEN_TTL_SECS: u64 = 3600;

fn error(status: StatusCode, detail: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16().to_string(),
            "o:errorDetails": [{ "detail": detail }],
        })),
    )
        .into_response()
}

fn unauthorized() -> Response {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"Oracle Fusion Applications\"",
        )
        .body(Body::empty())
        .unwrap_or_default()
}

/// Entry point for everything under `/fusion/`.
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
        Some(&"fscmRestApi") | Some(&"oauth2") | None => None,
        Some(pod) => {
            let pod = (*pod).to_owned();
            segments.remove(0);
            Some(pod)
        }
    };
    let named = path_account.clone().unwrap_or_else(|| "unknown".to_owned());
    if let Some(secs) = sim.faults.down_for(ERP) {
        sim.report.down(ERP, &named);
        let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
        resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
        return resp;
    }
    let in_pod = |a: &Account| path_account.as_deref().is_none_or(|p| p == a.account);
    if segments.as_slice() == ["oauth2", "v1", "token"] && method == Method::POST {
        let form = decode_pairs(&String::from_utf8_lossy(&body));
        let client = auth::basic(&headers).or_else(|| {
            Some((
                param(&form, "client_id")?.to_owned(),
                param(&form, "client_secret")?.to_owned(),
            ))
        });
        let account = client.and_then(|(id, secret)| {
            sim.store.accounts(Some(ERP)).into_iter().find(|a| {
                in_pod(a)
                    && a.credentials
                        .clients
                        .iter()
                        .any(|c| c.client_id == id && c.client_secret == secret)
            })
        });
        let Some(account) =
            account.filter(|_| param(&form, "grant_type") == Some("client_credentials"))
        else {
            sim.report.request(ERP, &named);
            sim.report.rejected_auth(ERP, &named);
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "error": "invalid_client" })),
            )
                .into_response();
        };
        sim.report.request(ERP, &account.account);
        let token = sim.tokens.issue(ERP, &account.account, TOKEN_TTL_SECS);
        return axum::Json(json!({
            "access_token": token, "token_type": "Bearer", "expires_in": TOKEN_TTL_SECS,
        }))
        .into_response();
    }
    let account = if let Some(token) = auth::bearer(&headers) {
        sim.tokens
            .check(ERP, &token)
            .and_then(|a| sim.store.account(ERP, &a))
            .filter(|a| in_pod(a))
    } else {
        auth::basic(&headers).and_then(|(user, password)| {
            sim.store.accounts(Some(ERP)).into_iter().find(|a| {
                in_pod(a)
                    && a.credentials
                        .users
                        .iter()
                        .any(|u| u.user == user && u.password == password)
            })
        })
    };
    let Some(account) = account else {
        sim.report.request(ERP, &named);
        sim.report.rejected_auth(ERP, &named);
        return unauthorized();
    };
    sim.report.request(ERP, &account.account);
    let admitted = match sim.admit(ERP, &account.account).await {
        Admission::Go(admitted) => admitted,
        Admission::Throttled { retry_after } => {
            let mut resp = error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            resp.headers_mut()
                .insert(header::RETRY_AFTER, retry_after.unwrap_or(1).into());
            return resp;
        }
        Admission::ServerError => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
    };
    let base = match &path_account {
        Some(pod) => format!("{}/fusion/{pod}/{}", origin(&headers), API.join("/")),
        None => format!("{}/fusion/{}", origin(&headers), API.join("/")),
    };
    let response = match segments.as_slice() {
        [a, b, c, resource] if [*a, *b, *c] == API => match (*resource, &method) {
            ("erpintegrations", &Method::POST) => import_bulk_data(&sim, &account, &body),
            ("erpintegrations", &Method::GET) => finder(&sim, &account, &uri, &base),
            ("journalBatches", &Method::GET) => read_back(&sim, &account, &uri, "gl_journal"),
            ("receivablesInvoices", &Method::GET) => {
                read_back(&sim, &account, &uri, "ar_transaction")
            }
            _ => error(StatusCode::NOT_FOUND, "Resource not found"),
        },
        _ => error(StatusCode::NOT_FOUND, "Resource not found"),
    };
    admitted.finish(&conn);
    response
}

fn import_bulk_data(sim: &Sim, account: &Account, body: &[u8]) -> Response {
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "The request body must be a JSON object.",
            );
        }
    };
    let field = |f: &str| {
        request
            .get(f)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if field("OperationName") != "importBulkData" {
        return error(
            StatusCode::BAD_REQUEST,
            "OperationName must be importBulkData (the only operation the simulator supports).",
        );
    }
    let job_name = field("JobName");
    let kind = if job_name.contains("JournalImportLauncher") {
        "gl"
    } else if job_name.contains("AutoInvoiceImport") {
        "ar"
    } else {
        return error(
            StatusCode::BAD_REQUEST,
            "JobName must name the journal import (…generalLedger/programs/common,\
             JournalImportLauncher) or AutoInvoice (…receivables/transactions/autoInvoices,\
             AutoInvoiceImportEss).",
        );
    };
    let content = field("DocumentContent");
    if STANDARD.decode(content.trim()).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            "DocumentContent is not valid base64.",
        );
    }
    let seq = sim.store.next_seq();
    let now = now_ms();
    let job = Job {
        id: format!("job-{seq}"),
        seq,
        erp: ERP,
        account: account.account.clone(),
        kind: "fusion_import".into(),
        key: Some(seq.to_string()),
        created_ms: now,
        ready_ms: now + sim.job_delay_ms(),
        done: false,
        input: json!({
            "import": kind,
            "DocumentContent": content.trim(),
            "FileName": field("FileName"),
            "JobName": job_name,
            "ParameterList": field("ParameterList"),
            "DocumentAccount": field("DocumentAccount"),
        }),
        result: Value::Null,
    };
    if let Err(e) = sim.store.put_job(job) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    let mut answer = request.clone();
    answer.insert("DocumentContent".into(), Value::Null);
    answer.insert("ReqstId".into(), json!(seq.to_string()));
    answer.insert("DocumentId".into(), json!(seq.to_string()));
    (StatusCode::CREATED, axum::Json(Value::Object(answer))).into_response()
}

fn finder(sim: &Sim, account: &Account, uri: &Uri, base: &str) -> Response {
    sim.process_due_jobs();
    let query = decode_pairs(uri.query().unwrap_or(""));
    let Some(finder) = param(&query, "finder") else {
        return error(
            StatusCode::BAD_REQUEST,
            "Use finder=ESSJobStatusRF;requestId=N.",
        );
    };
    let (name, args) = finder.split_once(';').unwrap_or((finder, ""));
    let args: BTreeMap<&str, &str> = args
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let Some(request_id) = args.get("requestId") else {
        return error(StatusCode::BAD_REQUEST, "The finder needs requestId.");
    };
    let job = sim
        .store
        .find_jobs(|j| {
            j.erp == ERP && j.account == account.account && j.seq.to_string() == *request_id
        })
        .into_iter()
        .next();
    let Some(job) = job else {
        return axum::Json(json!({ "items": [], "count": 0, "hasMore": false, "limit": 25, "offset": 0, "links": [] }))
            .into_response();
    };
    let status = if job.done {
        job.result
            .get("RequestStatus")
            .and_then(Value::as_str)
            .unwrap_or("ERROR")
            .to_owned()
    } else {
        "RUNNING".to_owned()
    };
    let mut item = json!({
        "OperationName": "getESSJobStatus",
        "ReqstId": job.seq.to_string(),
        "RequestStatus": status,
        "DocumentContent": Value::Null,
        "JobName": job.input.get("JobName").cloned().unwrap_or(Value::Null),
        "links": [{ "rel": "self", "href": format!("{base}/erpintegrations/getESSJobStatus") }],
    });
    match name {
        "ESSJobStatusRF" => {}
        "ESSJobExecutionDetailsRF" => {
            let log = execution_log(&job);
            if let Value::Object(map) = &mut item {
                map.insert(
                    "OperationName".into(),
                    json!("downloadESSJobExecutionDetails"),
                );
                map.insert("DocumentContent".into(), json!(STANDARD.encode(log)));
                map.insert(
                    "FileType".into(),
                    json!(args.get("fileType").copied().unwrap_or("log")),
                );
            }
        }
        other => return error(StatusCode::BAD_REQUEST, &format!("Unknown finder {other}.")),
    }
    axum::Json(json!({
        "items": [item], "count": 1, "hasMore": false, "limit": 25, "offset": 0,
        "links": [{ "rel": "self", "href": format!("{base}/erpintegrations") }],
    }))
    .into_response()
}

/// A zip with `{requestId}.log` listing what was loaded and what was rejected.
fn execution_log(job: &Job) -> Vec<u8> {
    let mut text = format!("ESS request {}\n", job.seq);
    if job.done {
        let r = &job.result;
        text.push_str(&format!(
            "RequestStatus: {}\n",
            r.get("RequestStatus")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ));
        if let Some(e) = r.get("error").and_then(Value::as_str) {
            text.push_str(&format!("Error: {e}\n"));
        }
        for doc in r
            .get("documents")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            text.push_str(&format!("LOADED {doc}\n"));
        }
        for rej in r
            .get("rejected")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            text.push_str(&format!("REJECTED {rej}\n"));
        }
    } else {
        text.push_str("RequestStatus: RUNNING\n");
    }
    let mut cursor = Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut cursor);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        // Into memory: these cannot fail short of allocation, and a broken log would show in
        // the client's parse.
        if zip.start_file(format!("{}.log", job.seq), options).is_ok() {
            zip.write_all(text.as_bytes()).ok();
        }
        zip.finish().ok();
    }
    cursor.into_inner()
}

/// Reads the named CSV out of the FBDI zip (header row first).
fn read_csv(content_b64: &str, wanted: &str) -> Result<Vec<BTreeMap<String, String>>, String> {
    let bytes = STANDARD
        .decode(content_b64)
        .map_err(|e| format!("DocumentContent: {e}"))?;
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("not a zip file: {e}"))?;
    let names: Vec<String> = archive.file_names().map(str::to_owned).collect();
    let name = names
        .iter()
        .find(|n| {
            n.rsplit('/')
                .next()
                .is_some_and(|b| b.eq_ignore_ascii_case(wanted))
        })
        .ok_or_else(|| format!("the zip has no {wanted} (found: {})", names.join(", ")))?;
    let mut file = archive.by_name(name).map_err(|e| format!("{name}: {e}"))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("{name}: {e}"))?;
    let rows = text::parse_csv(&text).map_err(|e| format!("{name}: {e}"))?;
    let mut rows = rows.into_iter();
    let header: Vec<String> = rows
        .next()
        .ok_or_else(|| format!("{name} is empty"))?
        .into_iter()
        .map(|h| h.trim().to_ascii_uppercase())
        .collect();
    Ok(rows
        .map(|row| {
            header
                .iter()
                .cloned()
                .zip(row.into_iter().map(|v| v.trim().to_owned()))
                .collect()
        })
        .collect())
}

/// Processes a due import job.
pub(crate) fn process_job(sim: &Sim, mut job: Job) -> Result<(), SimError> {
    let input = job.input.clone();
    let content = input
        .get("DocumentContent")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let import = input
        .get("import")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let wanted = if import == "gl" {
        "GlInterface.csv"
    } else {
        "RaInterfaceLinesAll.csv"
    };
    let outcome = match read_csv(content, wanted) {
        Err(e) => json!({ "RequestStatus": "ERROR", "error": e, "documents": [], "rejected": [] }),
        Ok(rows) if rows.is_empty() => {
            json!({ "RequestStatus": "ERROR", "error": "no interface rows", "documents": [], "rejected": [] })
        }
        Ok(rows) => {
            let (documents, rejected) = if import == "gl" {
                import_journals(sim, &job, rows)?
            } else {
                import_invoices(sim, &job, rows)?
            };
            let status = match (documents.is_empty(), rejected.is_empty()) {
                (_, true) => "SUCCEEDED",
                (false, false) => "WARNING",
                (true, false) => "ERROR",
            };
            json!({ "RequestStatus": status, "documents": documents, "rejected": rejected })
        }
    };
    job.done = true;
    job.result = outcome;
    sim.store.put_job(job)
}

type Row = BTreeMap<String, String>;

fn col<'a>(row: &'a Row, name: &str) -> &'a str {
    row.get(name).map_or("", String::as_str)
}

/// `GL_INTERFACE` key columns and their lengths (the journal and batch names journal import
/// derives from them are `VARCHAR2(100)`: GL_INTERFACE_GT, Fusion tables reference).
const GL_LENGTHS: [(&str, usize); 2] = [("REFERENCE1", 100), ("REFERENCE4", 100)];

/// Transaction flexfield segments of `RA_INTERFACE_LINES_ALL` are `VARCHAR2(30)` (Fusion
/// tables reference, RA_INTERFACE_LINES_ALL: INTERFACE_LINE_ATTRIBUTE1..15), and so are the
/// link-to and reference flexfields that name another line.
const FLEXFIELD_LENGTH: usize = 30;

/// The load of an interface row refuses a value longer than its column, as SQL*Loader does
/// when FBDI loads the CSV into the interface table: the row is rejected with ORA-12899 and
/// nothing of it is imported (no truncation).
fn too_long(table: &str, row: &Row, line_no: usize, lengths: &[(String, usize)]) -> Vec<String> {
    lengths
        .iter()
        .filter_map(|(column, max)| {
            let actual = col(row, column).chars().count();
            (actual > *max).then(|| {
                format!(
                    "row {line_no}: ORA-12899: value too large for column \"FUSION\".\"{table}\".\
                     \"{column}\" (actual: {actual}, maximum: {max})"
                )
            })
        })
        .collect()
}

fn flexfield_lengths() -> Vec<(String, usize)> {
    ["INTERFACE_LINE", "LINK_TO_LINE", "REFERENCE_LINE"]
        .iter()
        .flat_map(|prefix| {
            (1..=15).map(move |n| (format!("{prefix}_ATTRIBUTE{n}"), FLEXFIELD_LENGTH))
        })
        .collect()
}

/// Journal import: rows grouped into journals by ledger, GROUP_ID, REFERENCE1 (batch),
/// REFERENCE4 (journal), currency and accounting date; a journal with an invalid row or that
/// does not balance is rejected as a whole, the others are created. Nothing is deduplicated.
fn import_journals(
    sim: &Sim,
    job: &Job,
    rows: Vec<Row>,
) -> Result<(Vec<Value>, Vec<Value>), SimError> {
    let mut groups: BTreeMap<Vec<String>, Vec<(usize, Row)>> = BTreeMap::new();
    for (n, row) in rows.into_iter().enumerate() {
        let key = [
            "LEDGER_ID",
            "GROUP_ID",
            "REFERENCE1",
            "REFERENCE4",
            "CURRENCY_CODE",
            "ACCOUNTING_DATE",
        ]
        .iter()
        .map(|c| col(&row, c).to_owned())
        .collect();
        groups.entry(key).or_default().push((n + 2, row));
    }
    let (mut documents, mut rejected) = (Vec::new(), Vec::new());
    let _guard = sim.write_lock();
    let lengths: Vec<(String, usize)> = GL_LENGTHS
        .iter()
        .map(|(c, n)| ((*c).to_owned(), *n))
        .collect();
    for (_, lines) in groups {
        let mut errors = Vec::new();
        let (mut dr, mut cr) = (0i128, 0i128);
        for (line_no, row) in &lines {
            errors.extend(too_long("GL_INTERFACE", row, *line_no, &lengths));
            if !col(row, "STATUS").eq_ignore_ascii_case("NEW") {
                errors.push(format!("row {line_no}: STATUS must be NEW"));
            }
            for required in [
                "LEDGER_ID",
                "ACCOUNTING_DATE",
                "USER_JE_SOURCE_NAME",
                "USER_JE_CATEGORY_NAME",
                "CURRENCY_CODE",
            ] {
                if col(row, required).is_empty() {
                    errors.push(format!("row {line_no}: {required} is required"));
                }
            }
            if !col(row, "ACTUAL_FLAG").eq_ignore_ascii_case("A") {
                errors.push(format!("row {line_no}: ACTUAL_FLAG must be A"));
            }
            for (c, sum) in [("ENTERED_DR", &mut dr), ("ENTERED_CR", &mut cr)] {
                let v = col(row, c);
                if v.is_empty() {
                    continue;
                }
                match text::parse_amount(v) {
                    Some(a) => *sum += a,
                    None => errors.push(format!("row {line_no}: {c} {v} is not a number")),
                }
            }
        }
        if errors.is_empty() && dr != cr {
            errors.push(format!(
                "EU02 unbalanced journal: debits {} credits {}",
                text::format_amount(dr),
                text::format_amount(cr)
            ));
        }
        let Some((_, first)) = lines.first() else {
            continue;
        };
        if !errors.is_empty() {
            rejected.push(json!({ "journal": col(first, "REFERENCE4"), "group_id": col(first, "GROUP_ID"), "errors": errors }));
            continue;
        }
        let seq = sim.store.next_seq();
        let mut body = Map::new();
        body.insert("JeHeaderId".into(), json!(seq));
        body.insert("RequestId".into(), json!(job.seq.to_string()));
        body.insert("LedgerId".into(), json!(col(first, "LEDGER_ID")));
        body.insert("GroupId".into(), json!(col(first, "GROUP_ID")));
        body.insert("BatchName".into(), json!(col(first, "REFERENCE1")));
        body.insert("JournalName".into(), json!(col(first, "REFERENCE4")));
        body.insert(
            "JournalSource".into(),
            json!(col(first, "USER_JE_SOURCE_NAME")),
        );
        body.insert(
            "JournalCategory".into(),
            json!(col(first, "USER_JE_CATEGORY_NAME")),
        );
        body.insert("CurrencyCode".into(), json!(col(first, "CURRENCY_CODE")));
        body.insert(
            "AccountingDate".into(),
            json!(col(first, "ACCOUNTING_DATE")),
        );
        for n in 1..=10 {
            body.insert(
                format!("Reference{n}"),
                json!(col(first, &format!("REFERENCE{n}"))),
            );
        }
        body.insert("RunningTotalDr".into(), json!(text::format_amount(dr)));
        body.insert("RunningTotalCr".into(), json!(text::format_amount(cr)));
        body.insert(
            "lines".into(),
            json!(lines.iter().map(|(_, r)| r).collect::<Vec<_>>()),
        );
        let reference = [col(first, "REFERENCE4"), col(first, "REFERENCE1")]
            .into_iter()
            .find(|r| !r.is_empty())
            .map(str::to_owned);
        let doc = NewDoc {
            erp: ERP,
            account: job.account.clone(),
            kind: "gl_journal".into(),
            erp_key: None,
            source_ref: reference,
            parent: None,
            body: Value::Object(body),
        }
        .build(seq, seq.to_string());
        documents.push(json!(doc.id));
        sim.store.put_docs(vec![doc])?;
    }
    Ok((documents, rejected))
}

fn flexfield(row: &Row) -> String {
    let mut parts = vec![col(row, "INTERFACE_LINE_CONTEXT").to_owned()];
    parts.extend((1..=15).map(|n| col(row, &format!("INTERFACE_LINE_ATTRIBUTE{n}")).to_owned()));
    while parts.len() > 1 && parts.last().is_some_and(String::is_empty) {
        parts.pop();
    }
    parts.join("|")
}

/// AutoInvoice: lines grouped into transactions by INTERFACE_LINE_CONTEXT +
/// INTERFACE_LINE_ATTRIBUTE1; a line whose flexfield already exists (imported before, or earlier
/// in this file) is rejected, and with it its whole transaction.
fn import_invoices(
    sim: &Sim,
    job: &Job,
    rows: Vec<Row>,
) -> Result<(Vec<Value>, Vec<Value>), SimError> {
    let _guard = sim.write_lock();
    let mut known: HashSet<String> = sim
        .store
        .find_docs(|d| d.erp == ERP && d.account == job.account && d.kind == "ar_transaction")
        .iter()
        .flat_map(|d| {
            d.body
                .get("lines")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|l| {
            l.get("TransactionFlexfield")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    let mut groups: BTreeMap<(String, String), Vec<(usize, Row)>> = BTreeMap::new();
    let mut order = Vec::new();
    for (n, row) in rows.into_iter().enumerate() {
        let key = (
            col(&row, "INTERFACE_LINE_CONTEXT").to_owned(),
            col(&row, "INTERFACE_LINE_ATTRIBUTE1").to_owned(),
        );
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push((n + 2, row));
    }
    let (mut documents, mut rejected) = (Vec::new(), Vec::new());
    let lengths = flexfield_lengths();
    for key in order {
        let Some(lines) = groups.remove(&key) else {
            continue;
        };
        let mut errors = Vec::new();
        let mut total = 0i128;
        let mut flexfields = Vec::new();
        for (line_no, row) in &lines {
            errors.extend(too_long("RA_INTERFACE_LINES_ALL", row, *line_no, &lengths));
            for required in [
                "INTERFACE_LINE_CONTEXT",
                "INTERFACE_LINE_ATTRIBUTE1",
                "BATCH_SOURCE_NAME",
                "CURRENCY_CODE",
                "AMOUNT",
            ] {
                if col(row, required).is_empty() {
                    errors.push(format!("row {line_no}: {required} is required"));
                }
            }
            match text::parse_amount(col(row, "AMOUNT")) {
                Some(a) => total += a,
                None if col(row, "AMOUNT").is_empty() => {}
                None => errors.push(format!("row {line_no}: AMOUNT is not a number")),
            }
            let ff = flexfield(row);
            if known.contains(&ff) || flexfields.contains(&ff) {
                errors.push(format!(
                    "row {line_no}: duplicate line transaction flexfield {ff}: the combination of \
                     INTERFACE_LINE_CONTEXT and INTERFACE_LINE_ATTRIBUTE1-15 already exists"
                ));
            }
            flexfields.push(ff);
        }
        if !errors.is_empty() {
            rejected.push(json!({ "transaction": key.1, "context": key.0, "errors": errors }));
            continue;
        }
        known.extend(flexfields.iter().cloned());
        let Some((_, first)) = lines.first() else {
            continue;
        };
        let seq = sim.store.next_seq();
        let number = match col(first, "TRX_NUMBER") {
            "" => format!("AR{seq}"),
            given => given.to_owned(),
        };
        let line_values: Vec<Value> = lines
            .iter()
            .zip(&flexfields)
            .map(|((_, row), ff)| {
                let mut v = json!(row);
                if let Value::Object(m) = &mut v {
                    m.insert("TransactionFlexfield".into(), json!(ff));
                }
                v
            })
            .collect();
        let body = json!({
            "CustomerTransactionId": seq,
            "TransactionNumber": number,
            "RequestId": job.seq.to_string(),
            "TransactionSource": col(first, "BATCH_SOURCE_NAME"),
            "TransactionType": col(first, "CUST_TRX_TYPE_NAME"),
            "TransactionDate": col(first, "TRX_DATE"),
            "CurrencyCode": col(first, "CURRENCY_CODE"),
            "InterfaceLineContext": key.0,
            "InterfaceLineAttribute1": key.1,
            "EnteredAmount": text::format_amount(total),
            "lines": line_values,
        });
        let doc = NewDoc {
            erp: ERP,
            account: job.account.clone(),
            kind: "ar_transaction".into(),
            erp_key: flexfields.first().cloned(),
            source_ref: Some(key.1.clone()),
            parent: None,
            body,
        }
        .build(seq, number);
        documents.push(json!(doc.id));
        sim.store.put_docs(vec![doc])?;
    }
    Ok((documents, rejected))
}

/// A stored journal's or transaction's totals as Fusion reports them: the sums of its lines
/// as they are now (`RunningTotalDr` / `RunningTotalCr` of a journal, `EnteredAmount` of a
/// transaction), so a line edited in the pod (admin `PATCH`) reads back with its new amount.
fn with_totals(mut body: Value) -> Value {
    let Some(lines) = body.get("lines").and_then(Value::as_array).cloned() else {
        return body;
    };
    let sum = |column: &str| -> Option<i128> {
        lines.iter().try_fold(0i128, |acc, line| {
            match line.get(column).and_then(Value::as_str).unwrap_or("") {
                "" => Some(acc),
                v => text::parse_amount(v).map(|a| acc + a),
            }
        })
    };
    let totals: Vec<(&str, Option<i128>)> = if body.get("JeHeaderId").is_some() {
        vec![
            ("RunningTotalDr", sum("ENTERED_DR")),
            ("RunningTotalCr", sum("ENTERED_CR")),
        ]
    } else {
        vec![("EnteredAmount", sum("AMOUNT"))]
    };
    if let Value::Object(map) = &mut body {
        for (field, total) in totals {
            if let Some(total) = total {
                map.insert(field.into(), json!(text::format_amount(total)));
            }
        }
    }
    body
}

/// `GET journalBatches?q=...` / `receivablesInvoices?q=...`: ADF `q` with `Attr=value` terms
/// joined by `;` (AND), compared as strings against the document's top-level attributes.
fn read_back(sim: &Sim, account: &Account, uri: &Uri, kind: &str) -> Response {
    let query = decode_pairs(uri.query().unwrap_or(""));
    let mut terms = Vec::new();
    if let Some(q) = param(&query, "q") {
        for term in q.split(';').filter(|t| !t.trim().is_empty()) {
            let Some((k, v)) = term.split_once('=') else {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("Unsupported q term {term}: use Attr=value."),
                );
            };
            terms.push(text::Eq {
                field: k.trim().to_owned(),
                value: v.trim().trim_matches('\'').trim_matches('"').to_owned(),
            });
        }
    }
    let items: Vec<Value> = sim
        .store
        .find_docs(|d| d.erp == ERP && d.account == account.account && d.kind == kind)
        .into_iter()
        .map(|d| with_totals(d.body))
        .filter(|b| text::matches(b, &terms))
        .collect();
    axum::Json(json!({ "items": items, "count": items.len(), "hasMore": false, "limit": 500, "offset": 0, "links": [] }))
        .into_response()
}
