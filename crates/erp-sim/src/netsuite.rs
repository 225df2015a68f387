//! NetSuite SuiteTalk REST web services.
//!
//! Paths (under `/netsuite`, optionally `/netsuite/{account}`):
//! - `POST services/rest/auth/oauth2/v1/token`: OAuth 2.0 client credentials (M2M) with a JWT
//!   client assertion (ES256 or PS256), access tokens valid 60 minutes;
//! - `POST|GET|PUT|PATCH services/rest/record/v1/{type}[/{id}|/eid:{externalId}]`;
//! - `POST services/rest/query/v1/suiteql` (`Prefer: transient`);
//! - `GET services/rest/async/v1/job/{id}[/task[/{id}[/result]]]`.
//!
//! Every other request needs a bearer token from the token endpoint or token-based
//! authentication (OAuth 1.0a HMAC-SHA256, realm = account). One concurrency limit covers the
//! whole account; over it the request is refused at once with 429 CONCURRENCY_LIMIT_EXCEEDED.
//! A POST is never deduplicated; an `externalId` already used by any transaction of the account
//! (case-insensitive) is refused; `PUT .../eid:{id}` upserts.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::auth::{self, JwtError};
use crate::conn::ConnHandle;
use crate::store::{Document, Erp, Job, NewDoc, norm_key, now_ms};
use crate::text::{decode_pairs, json_amount, param};
use crate::{Admission, Sim, origin};

const ERP: Erp = Erp::NetSuite;
/// Record types the simulator stores; all are transactions and share one external id namespace.
const RECORD_TYPES: [&str; 4] = ["journalEntry", "invoice", "customerPayment", "creditMemo"];
const TOKEN_TTL_SECS: u64 = 3600;

/// An error in NetSuite's REST shape.
#[derive(Debug, Clone)]
pub(crate) struct NsError {
    status: StatusCode,
    code: &'static str,
    detail: String,
}

impl NsError {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> NsError {
        NsError {
            status,
            code,
            detail: detail.into(),
        }
    }

    fn body(&self) -> Value {
        let anchor = match self.status.as_u16() {
            400 => "#sec10.4.1",
            401 => "#sec10.4.2",
            404 => "#sec10.4.5",
            405 => "#sec10.4.6",
            500 => "#sec10.5.1",
            503 => "#sec10.5.4",
            _ => "",
        };
        let kind = if self.status == StatusCode::TOO_MANY_REQUESTS {
            "https://tools.ietf.org/html/rfc6585#section-4".to_owned()
        } else {
            format!("https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html{anchor}")
        };
        json!({
            "type": kind,
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "o:errorDetails": [{ "detail": self.detail, "o:errorCode": self.code }],
        })
    }
}

impl IntoResponse for NsError {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        Response::builder()
            .status(self.status)
            .header(
                header::CONTENT_TYPE,
                "application/vnd.oracle.resource+json; type=error",
            )
            .body(Body::from(body))
            .unwrap_or_default()
    }
}

fn invalid_login() -> NsError {
    NsError::new(
        StatusCode::UNAUTHORIZED,
        "INVALID_LOGIN",
        "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at \
         Setup > Users/Roles > User Management > View Login Audit Trail.",
    )
}

fn not_found(detail: impl Into<String>) -> NsError {
    NsError::new(StatusCode::NOT_FOUND, "NONEXISTENT_ID", detail)
}

fn invalid_content(detail: impl Into<String>) -> NsError {
    NsError::new(StatusCode::BAD_REQUEST, "INVALID_CONTENT", detail)
}

/// The request as routed: optional account segment, then the NetSuite path.
struct Route {
    account: Option<String>,
    prefix: String,
    segments: Vec<String>,
}

fn route(rest: &str) -> Route {
    let mut segments: Vec<String> = rest.split('/').map(str::to_owned).collect();
    if segments.first().is_some_and(|s| s != "services") {
        let account = segments.remove(0);
        Route {
            prefix: format!("/netsuite/{account}"),
            account: Some(account),
            segments,
        }
    } else {
        Route {
            account: None,
            prefix: "/netsuite".to_owned(),
            segments,
        }
    }
}

/// Entry point for everything under `/netsuite/`.
pub(crate) async fn handle(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    Path(rest): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = route(&rest);
    let known = route
        .account
        .clone()
        .unwrap_or_else(|| "unknown".to_owned());
    if let Some(secs) = sim.faults.down_for(ERP) {
        sim.report.down(ERP, &known);
        let mut resp = NsError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "Service unavailable.",
        )
        .into_response();
        resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
        return resp;
    }
    let segs: Vec<&str> = route.segments.iter().map(String::as_str).collect();
    if segs == ["services", "rest", "auth", "oauth2", "v1", "token"] {
        if method != Method::POST {
            return NsError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "INVALID_REQUEST",
                "Use POST.",
            )
            .into_response();
        }
        return token(&sim, &route, uri.path(), &body);
    }
    let account = match authenticate(&sim, &route, &method, &uri, &headers) {
        Ok(account) => account,
        Err(named) => {
            sim.report.request(ERP, &named);
            sim.report.rejected_auth(ERP, &named);
            return invalid_login().into_response();
        }
    };
    sim.report.request(ERP, &account);
    let admitted = match sim.admit(ERP, &account).await {
        Admission::Go(admitted) => admitted,
        Admission::Throttled { .. } => {
            // NetSuite documents no Retry-After for concurrency governance rejections.
            return NsError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "CONCURRENCY_LIMIT_EXCEEDED",
                "Concurrent request limit exceeded. Request blocked.",
            )
            .into_response();
        }
        Admission::ServerError => {
            return NsError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNEXPECTED_ERROR",
                "An unexpected error occurred. Error ID: sim-injected",
            )
            .into_response();
        }
    };
    let ctx = Ctx {
        sim: &sim,
        account: &account,
        origin: origin(&headers),
        prefix: &route.prefix,
    };
    let response = match dispatch(&ctx, &method, &uri, &headers, &segs, &body) {
        Ok(resp) => resp,
        Err(err) => err.into_response(),
    };
    admitted.finish(&conn);
    response
}

struct Ctx<'a> {
    sim: &'a Sim,
    account: &'a str,
    origin: String,
    prefix: &'a str,
}

impl Ctx<'_> {
    fn record_url(&self, rtype: &str, id: &str) -> String {
        format!(
            "{}{}/services/rest/record/v1/{rtype}/{id}",
            self.origin, self.prefix
        )
    }

    fn job_url(&self, id: u64) -> String {
        format!(
            "{}{}/services/rest/async/v1/job/{id}",
            self.origin, self.prefix
        )
    }
}

/// Authenticates a REST call; on failure returns the account name to charge the rejection to.
fn authenticate(
    sim: &Sim,
    route: &Route,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<String, String> {
    let named = route
        .account
        .clone()
        .unwrap_or_else(|| "unknown".to_owned());
    if let Some(token) = auth::bearer(headers) {
        let account = sim.tokens.check(ERP, &token).ok_or_else(|| named.clone())?;
        if route
            .account
            .as_deref()
            .is_some_and(|a| !a.eq_ignore_ascii_case(&account))
        {
            return Err(named);
        }
        return Ok(account);
    }
    let Some(oauth) = auth::parse_oauth1(headers) else {
        return Err(named);
    };
    let realm = oauth.get("realm").cloned().unwrap_or_default();
    let wanted = route.account.clone().unwrap_or_else(|| realm.clone());
    let Some(account) = sim
        .store
        .accounts(Some(ERP))
        .into_iter()
        .find(|a| a.account.eq_ignore_ascii_case(&wanted))
    else {
        return Err(if realm.is_empty() { named } else { realm });
    };
    let base_url = format!("{}{}", origin(headers), uri.path());
    let query = decode_pairs(uri.query().unwrap_or(""));
    match auth::verify_tba(
        &sim.nonces,
        &oauth,
        &account.account,
        &account.credentials.tba,
        method.as_str(),
        &base_url,
        &query,
    ) {
        Ok(()) => Ok(account.account),
        Err(reason) => {
            tracing::info!(account = %account.account, %reason, "netsuite TBA rejected");
            Err(account.account)
        }
    }
}

/// `POST .../auth/oauth2/v1/token`: the client credentials (M2M) grant.
fn token(sim: &Sim, route: &Route, path: &str, body: &[u8]) -> Response {
    let form = decode_pairs(&String::from_utf8_lossy(body));
    let fail = |status: StatusCode, error: &str, account: &str| {
        sim.report.request(ERP, account);
        sim.report.rejected_auth(ERP, account);
        (status, axum::Json(json!({ "error": error }))).into_response()
    };
    let named = route
        .account
        .clone()
        .unwrap_or_else(|| "unknown".to_owned());
    if param(&form, "grant_type") != Some("client_credentials")
        || param(&form, "client_assertion_type")
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return fail(StatusCode::BAD_REQUEST, "invalid_request", &named);
    }
    let Some(assertion) = param(&form, "client_assertion") else {
        return fail(StatusCode::BAD_REQUEST, "invalid_request", &named);
    };
    let candidates: Vec<_> = sim
        .store
        .accounts(Some(ERP))
        .into_iter()
        .filter(|a| {
            route
                .account
                .as_deref()
                .is_none_or(|r| a.account.eq_ignore_ascii_case(r))
        })
        .collect();
    let mut last = JwtError::UnknownClient;
    for account in &candidates {
        match auth::verify_assertion(assertion, &account.credentials.m2m, path) {
            Ok(_) => {
                sim.report.request(ERP, &account.account);
                let token = sim.tokens.issue(ERP, &account.account, TOKEN_TTL_SECS);
                // NetSuite sends expires_in as a string.
                return axum::Json(json!({
                    "access_token": token,
                    "token_type": "bearer",
                    "expires_in": TOKEN_TTL_SECS.to_string(),
                }))
                .into_response();
            }
            Err(JwtError::UnknownClient) => {}
            Err(e) => {
                last = e;
                tracing::info!(account = %account.account, reason = %last, "netsuite M2M rejected");
                return fail(StatusCode::BAD_REQUEST, "invalid_grant", &account.account);
            }
        }
    }
    tracing::info!(reason = %last, "netsuite M2M rejected");
    let charged = candidates.first().map_or(named, |a| a.account.clone());
    fail(StatusCode::UNAUTHORIZED, "invalid_client", &charged)
}

fn dispatch(
    ctx: &Ctx<'_>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    segs: &[&str],
    body: &[u8],
) -> Result<Response, NsError> {
    let prefer = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    match segs {
        ["services", "rest", "record", "v1", rtype] => {
            let rtype = record_type(rtype)?;
            if *method != Method::POST {
                return Err(NsError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "INVALID_REQUEST",
                    "Only POST is supported on a record collection by the simulator.",
                ));
            }
            let body = json_object(body)?;
            if prefer.contains("respond-async") {
                return submit_async(ctx, headers, Op::Create { rtype, body });
            }
            op_response(ctx, run_op(ctx, Op::Create { rtype, body }))
        }
        ["services", "rest", "record", "v1", rtype, id] => {
            let rtype = record_type(rtype)?;
            match *method {
                Method::GET => read(ctx, rtype, id),
                Method::PUT => {
                    let eid = id.strip_prefix("eid:").ok_or_else(|| {
                        NsError::new(
                            StatusCode::BAD_REQUEST,
                            "INVALID_REQUEST",
                            "Upsert (PUT) requires an external ID in the URL: eid:{externalId}.",
                        )
                    })?;
                    let op = Op::Upsert {
                        rtype,
                        eid: eid.to_owned(),
                        body: json_object(body)?,
                    };
                    if prefer.contains("respond-async") {
                        return submit_async(ctx, headers, op);
                    }
                    op_response(ctx, run_op(ctx, op))
                }
                Method::PATCH => {
                    let op = Op::Update {
                        rtype,
                        id: (*id).to_owned(),
                        body: json_object(body)?,
                    };
                    op_response(ctx, run_op(ctx, op))
                }
                _ => Err(NsError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "INVALID_REQUEST",
                    "Method not supported by the simulator on a record instance.",
                )),
            }
        }
        ["services", "rest", "query", "v1", "suiteql"] if *method == Method::POST => {
            if !prefer.contains("transient") {
                return Err(NsError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_HEADER",
                    "SuiteQL requests require the header Prefer: transient.",
                ));
            }
            suiteql(ctx, uri, body)
        }
        ["services", "rest", "async", "v1", "job", rest @ ..] if *method == Method::GET => {
            async_job(ctx, rest)
        }
        _ => Err(not_found(format!(
            "Resource {} does not exist.",
            segs.join("/")
        ))),
    }
}

fn record_type(name: &str) -> Result<&'static str, NsError> {
    RECORD_TYPES
        .into_iter()
        .find(|t| t.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            not_found(format!(
                "Record type '{name}' is not supported by the simulator (journalEntry, invoice, \
             customerPayment, creditMemo)."
            ))
        })
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, NsError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid_content("The request body must be a JSON object.")),
        Err(e) => Err(invalid_content(format!(
            "Invalid JSON in the request body: {e}"
        ))),
    }
}

/// External ids may contain letters, numbers, underscore and hyphen (SuiteTalk REST docs).
fn check_external_id(eid: &str) -> Result<(), NsError> {
    if eid.is_empty()
        || !eid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(invalid_content(format!(
            "Invalid external ID '{eid}': use letters, numbers, underscore (_) and hyphen (-)."
        )));
    }
    Ok(())
}

fn body_external_id(body: &Map<String, Value>) -> Option<String> {
    ["externalId", "externalid"]
        .iter()
        .find_map(|k| body.get(*k))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn source_ref(body: &Map<String, Value>, eid: Option<&str>) -> Option<String> {
    body.get("memo")
        .and_then(Value::as_str)
        .filter(|m| !m.trim().is_empty())
        .map(str::to_owned)
        .or_else(|| eid.map(str::to_owned))
}

/// A journal entry must balance: sum of `line.items[].debit` equals sum of `credit`.
fn check_balance(rtype: &str, body: &Map<String, Value>) -> Result<(), NsError> {
    if rtype != "journalEntry" {
        return Ok(());
    }
    let Some(items) = body
        .get("line")
        .and_then(|l| l.get("items"))
        .and_then(Value::as_array)
    else {
        return Ok(());
    };
    let (mut debit, mut credit) = (0i128, 0i128);
    for item in items {
        for (field, sum) in [("debit", &mut debit), ("credit", &mut credit)] {
            if let Some(v) = item.get(field).filter(|v| !v.is_null()) {
                *sum += json_amount(v).ok_or_else(|| {
                    invalid_content(format!("Invalid amount in line.items[].{field}: {v}"))
                })?;
            }
        }
    }
    if debit != credit {
        return Err(NsError::new(
            StatusCode::BAD_REQUEST,
            "USER_ERROR",
            format!(
                "Error while accessing a resource. The transaction is out of balance: debits {} \
                 credits {}.",
                crate::text::format_amount(debit),
                crate::text::format_amount(credit)
            ),
        ));
    }
    Ok(())
}

fn duplicate(eid: &str, existing: &Document) -> NsError {
    NsError::new(
        StatusCode::BAD_REQUEST,
        "DUP_RCRD",
        format!(
            "Error while accessing a resource. This record already exists: a transaction with \
             external ID '{eid}' exists ({} {}).",
            existing.kind, existing.erp_id
        ),
    )
}

/// The transaction holding an external id (case-insensitive, across all transaction types).
fn by_external_id(sim: &Sim, account: &str, eid: &str) -> Option<Document> {
    let key = norm_key(eid);
    sim.store
        .find_docs(|d| {
            d.erp == ERP
                && d.account == account
                && d.parent.is_none()
                && d.erp_key.as_deref().map(norm_key).as_deref() == Some(key.as_str())
        })
        .into_iter()
        .next()
}

fn by_id(sim: &Sim, account: &str, rtype: &str, id: &str) -> Option<Document> {
    if let Some(eid) = id.strip_prefix("eid:") {
        return by_external_id(sim, account, eid).filter(|d| d.kind == rtype);
    }
    sim.store
        .find_docs(|d| d.erp == ERP && d.account == account && d.kind == rtype && d.erp_id == id)
        .into_iter()
        .next()
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        rtype: &'static str,
        body: Map<String, Value>,
    },
    Upsert {
        rtype: &'static str,
        eid: String,
        body: Map<String, Value>,
    },
    Update {
        rtype: &'static str,
        id: String,
        body: Map<String, Value>,
    },
}

/// What a successful write answers: 204 + Location of the record.
#[derive(Debug, Clone)]
struct Written {
    rtype: String,
    id: String,
}

fn run_op(ctx: &Ctx<'_>, op: Op) -> Result<Written, NsError> {
    let sim = ctx.sim;
    let _guard = sim.write_lock();
    let store_err = |e: crate::SimError| {
        NsError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNEXPECTED_ERROR",
            e.to_string(),
        )
    };
    match op {
        Op::Create { rtype, mut body } => {
            check_balance(rtype, &body)?;
            let eid = body_external_id(&body);
            if let Some(eid) = &eid {
                check_external_id(eid)?;
                if let Some(existing) = by_external_id(sim, ctx.account, eid) {
                    return Err(duplicate(eid, &existing));
                }
            }
            let seq = sim.store.next_seq();
            body.insert("id".into(), json!(seq.to_string()));
            let doc = NewDoc {
                erp: ERP,
                account: ctx.account.to_owned(),
                kind: rtype.to_owned(),
                erp_key: eid.clone(),
                source_ref: source_ref(&body, eid.as_deref()),
                parent: None,
                body: Value::Object(body),
            }
            .build(seq, seq.to_string());
            sim.store.put_docs(vec![doc]).map_err(store_err)?;
            Ok(Written {
                rtype: rtype.to_owned(),
                id: seq.to_string(),
            })
        }
        Op::Upsert {
            rtype,
            eid,
            mut body,
        } => {
            check_external_id(&eid)?;
            check_balance(rtype, &body)?;
            body.remove("externalid");
            body.insert("externalId".into(), json!(eid));
            match by_external_id(sim, ctx.account, &eid) {
                Some(existing) if existing.kind != rtype => Err(duplicate(&eid, &existing)),
                Some(mut existing) => {
                    if let Value::Object(stored) = &mut existing.body {
                        for (k, v) in body {
                            if k != "id" {
                                stored.insert(k, v);
                            }
                        }
                    }
                    if let Value::Object(stored) = &existing.body {
                        existing.source_ref = source_ref(stored, Some(&eid));
                    }
                    existing.version += 1;
                    existing.updated_ms = now_ms();
                    let id = existing.erp_id.clone();
                    sim.store.put_docs(vec![existing]).map_err(store_err)?;
                    Ok(Written {
                        rtype: rtype.to_owned(),
                        id,
                    })
                }
                None => {
                    let seq = sim.store.next_seq();
                    body.insert("id".into(), json!(seq.to_string()));
                    let doc = NewDoc {
                        erp: ERP,
                        account: ctx.account.to_owned(),
                        kind: rtype.to_owned(),
                        erp_key: Some(eid.clone()),
                        source_ref: source_ref(&body, Some(&eid)),
                        parent: None,
                        body: Value::Object(body),
                    }
                    .build(seq, seq.to_string());
                    sim.store.put_docs(vec![doc]).map_err(store_err)?;
                    Ok(Written {
                        rtype: rtype.to_owned(),
                        id: seq.to_string(),
                    })
                }
            }
        }
        Op::Update { rtype, id, body } => {
            let mut existing = by_id(sim, ctx.account, rtype, &id).ok_or_else(|| {
                not_found("The record instance does not exist. Provide a valid record instance ID.")
            })?;
            if let Some(eid) = body_external_id(&body) {
                check_external_id(&eid)?;
                if let Some(other) = by_external_id(sim, ctx.account, &eid)
                    && other.id != existing.id
                {
                    return Err(duplicate(&eid, &other));
                }
                existing.erp_key = Some(eid);
            }
            if let Value::Object(stored) = &mut existing.body {
                for (k, v) in body {
                    if k != "id" {
                        stored.insert(k, v);
                    }
                }
                check_balance(rtype, stored)?;
            }
            if let Value::Object(stored) = &existing.body {
                existing.source_ref = source_ref(stored, existing.erp_key.as_deref());
            }
            existing.version += 1;
            existing.updated_ms = now_ms();
            let id = existing.erp_id.clone();
            sim.store.put_docs(vec![existing]).map_err(store_err)?;
            Ok(Written {
                rtype: rtype.to_owned(),
                id,
            })
        }
    }
}

fn op_response(ctx: &Ctx<'_>, result: Result<Written, NsError>) -> Result<Response, NsError> {
    let written = result?;
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(
            header::LOCATION,
            ctx.record_url(&written.rtype, &written.id),
        )
        .body(Body::empty())
        .unwrap_or_default())
}

fn read(ctx: &Ctx<'_>, rtype: &str, id: &str) -> Result<Response, NsError> {
    let doc = by_id(ctx.sim, ctx.account, rtype, id).ok_or_else(|| {
        not_found("The record instance does not exist. Provide a valid record instance ID.")
    })?;
    let mut body = doc.body.clone();
    if let Value::Object(map) = &mut body {
        map.insert(
            "links".into(),
            json!([{ "rel": "self", "href": ctx.record_url(rtype, &doc.erp_id) }]),
        );
    }
    Ok(axum::Json(body).into_response())
}

/// `Prefer: respond-async`: the operation becomes a job; `X-NetSuite-Idempotency-Key` makes a
/// repeated submission fail with IDEMPOTENCY_ERROR pointing at the first job.
fn submit_async(ctx: &Ctx<'_>, headers: &HeaderMap, op: Op) -> Result<Response, NsError> {
    let key = headers
        .get("x-netsuite-idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let sim = ctx.sim;
    if let Some(key) = &key {
        let first = sim
            .store
            .find_jobs(|j| {
                j.erp == ERP && j.account == ctx.account && j.key.as_deref() == Some(key)
            })
            .into_iter()
            .next();
        if let Some(first) = first {
            let err = NsError::new(
                StatusCode::BAD_REQUEST,
                "IDEMPOTENCY_ERROR",
                "A request with the same idempotency key is already submitted. See the \
                 \"Location\" header for a link to the previously submitted job",
            );
            let mut resp = err.into_response();
            if let Ok(v) = ctx.job_url(first.seq).parse() {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return Ok(resp);
        }
    }
    let outcome = run_op(ctx, op);
    let result = match &outcome {
        Ok(w) => json!({ "status": 204, "location": ctx.record_url(&w.rtype, &w.id) }),
        Err(e) => json!({ "status": e.status.as_u16(), "error": e.body() }),
    };
    let seq = sim.store.next_seq();
    let now = now_ms();
    let job = Job {
        id: format!("job-{seq}"),
        seq,
        erp: ERP,
        account: ctx.account.to_owned(),
        kind: "netsuite_async".into(),
        key,
        created_ms: now,
        ready_ms: now,
        done: true,
        input: Value::Null,
        result,
    };
    sim.store.put_job(job).map_err(|e| {
        NsError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNEXPECTED_ERROR",
            e.to_string(),
        )
    })?;
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::LOCATION, ctx.job_url(seq))
        .header("Preference-Applied", "respond-async")
        .body(Body::empty())
        .unwrap_or_default())
}

fn async_job(ctx: &Ctx<'_>, rest: &[&str]) -> Result<Response, NsError> {
    let missing = || not_found("The job does not exist.");
    let id = rest.first().ok_or_else(missing)?;
    let job = ctx
        .sim
        .store
        .find_jobs(|j| j.erp == ERP && j.account == ctx.account && j.seq.to_string() == *id)
        .into_iter()
        .next()
        .ok_or_else(missing)?;
    let base = ctx.job_url(job.seq);
    let status = job
        .result
        .get("status")
        .and_then(Value::as_u64)
        .unwrap_or(500);
    let progress = if status < 300 { "succeeded" } else { "failed" };
    let body = match rest {
        [_] => json!({
            "links": [{ "rel": "self", "href": base }],
            "completed": true,
            "id": job.seq.to_string(),
            "progress": progress,
            "task": { "links": [{ "rel": "self", "href": format!("{base}/task") }] },
        }),
        [_, "task"] => json!({
            "links": [{ "rel": "self", "href": format!("{base}/task") }],
            "count": 1, "hasMore": false, "offset": 0, "totalResults": 1,
            "items": [{ "links": [{ "rel": "self", "href": format!("{base}/task/{}", job.seq) }] }],
        }),
        [_, "task", t] if *t == job.seq.to_string() => json!({
            "links": [
                { "rel": "related", "href": format!("{base}/task/{t}/result") },
                { "rel": "self", "href": format!("{base}/task/{t}") },
            ],
            "completed": true,
            "id": t,
            "progress": progress,
        }),
        [_, "task", t, "result"] if *t == job.seq.to_string() => {
            if let Some(location) = job.result.get("location").and_then(Value::as_str) {
                return Ok(Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .header(header::LOCATION, location)
                    .body(Body::empty())
                    .unwrap_or_default());
            }
            let code = StatusCode::from_u16(u16::try_from(status).unwrap_or(500))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let error = job.result.get("error").cloned().unwrap_or(Value::Null);
            return Ok((code, axum::Json(error)).into_response());
        }
        _ => return Err(missing()),
    };
    Ok(axum::Json(body).into_response())
}

/// SuiteQL transaction type codes of the supported record types.
fn suiteql_type(rtype: &str) -> &'static str {
    match rtype {
        "journalEntry" => "Journal",
        "invoice" => "CustInvc",
        "customerPayment" => "CustPymt",
        "creditMemo" => "CustCred",
        _ => "",
    }
}

fn suiteql_row(doc: &Document) -> Map<String, Value> {
    let mut row = Map::new();
    row.insert("links".into(), json!([]));
    row.insert("id".into(), json!(doc.erp_id));
    if let Some(eid) = &doc.erp_key {
        row.insert("externalid".into(), json!(eid));
    }
    row.insert("type".into(), json!(suiteql_type(&doc.kind)));
    row.insert("recordtype".into(), json!(doc.kind.to_ascii_lowercase()));
    for (col, field) in [
        ("memo", "memo"),
        ("tranid", "tranId"),
        ("trandate", "tranDate"),
    ] {
        if let Some(v) = doc.body.get(field).filter(|v| !v.is_null()) {
            row.insert(col.into(), v.clone());
        }
    }
    row
}

/// The supported SuiteQL subset:
/// `SELECT <* | col, ...> FROM transaction [WHERE col = 'v' [AND col = 'v' ...]]`
/// with columns id, externalid, type, recordtype, memo, tranid, trandate.
fn suiteql(ctx: &Ctx<'_>, uri: &Uri, body: &[u8]) -> Result<Response, NsError> {
    let invalid =
        |detail: String| NsError::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER", detail);
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("Invalid JSON in the request body: {e}")))?;
    let q = body.get("q").and_then(Value::as_str).ok_or_else(|| {
        invalid("The request body must contain the query in the field q.".to_owned())
    })?;
    let (columns, filters) = parse_suiteql(q).map_err(|e| {
        invalid(format!(
            "Invalid search query. Detailed unprocessed description follows. {e}"
        ))
    })?;
    let rows: Vec<Value> = ctx
        .sim
        .store
        .find_docs(|d| d.erp == ERP && d.account == ctx.account && d.parent.is_none())
        .iter()
        .map(suiteql_row)
        .filter(|row| {
            filters.iter().all(|(col, value)| match row.get(col) {
                Some(Value::String(s)) => s == value,
                Some(Value::Number(n)) => n.to_string() == *value,
                _ => false,
            })
        })
        .map(|mut row| {
            if let Some(cols) = &columns {
                row.retain(|k, _| k == "links" || cols.iter().any(|c| c == k));
            }
            Value::Object(row)
        })
        .collect();
    let query = decode_pairs(uri.query().unwrap_or(""));
    let limit: usize = param(&query, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(1000);
    let offset: usize = param(&query, "offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let total = rows.len();
    let page: Vec<Value> = rows.into_iter().skip(offset).take(limit).collect();
    Ok(axum::Json(json!({
        "links": [],
        "count": page.len(),
        "hasMore": offset + page.len() < total,
        "items": page,
        "offset": offset,
        "totalResults": total,
    }))
    .into_response())
}

const SUITEQL_COLUMNS: [&str; 7] = [
    "id",
    "externalid",
    "type",
    "recordtype",
    "memo",
    "tranid",
    "trandate",
];

type Filters = Vec<(String, String)>;

fn parse_suiteql(q: &str) -> Result<(Option<Vec<String>>, Filters), String> {
    let q = q.trim().trim_end_matches(';');
    let lower = q.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("select ")
        .ok_or("only SELECT is supported")?;
    let from = rest.find(" from ").ok_or("missing FROM")?;
    let cols_text = rest[..from].trim();
    let columns = if cols_text == "*" {
        None
    } else {
        let cols: Vec<String> = cols_text.split(',').map(|c| c.trim().to_owned()).collect();
        if let Some(bad) = cols.iter().find(|c| !SUITEQL_COLUMNS.contains(&c.as_str())) {
            return Err(format!("unsupported column {bad}"));
        }
        Some(cols)
    };
    // Offsets into the lowercased text are valid in the original (ASCII lowercasing keeps
    // byte positions), so literals keep their case.
    let after_from_at = "select ".len() + from + " from ".len();
    let after_from = q[after_from_at..].trim_start();
    let table_end = after_from
        .find(char::is_whitespace)
        .unwrap_or(after_from.len());
    if !after_from[..table_end].eq_ignore_ascii_case("transaction") {
        return Err("only the transaction table is supported".to_owned());
    }
    let tail = after_from[table_end..].trim();
    if tail.is_empty() {
        return Ok((columns, Vec::new()));
    }
    let cond = tail
        .get(..6)
        .filter(|w| w.eq_ignore_ascii_case("where "))
        .map(|_| &tail[6..])
        .ok_or("only WHERE may follow the table")?;
    let mut filters = Vec::new();
    let mut rest = cond.trim();
    loop {
        let eq = rest
            .find('=')
            .ok_or("only col = 'value' conditions are supported")?;
        let col = rest[..eq].trim().to_ascii_lowercase();
        if !SUITEQL_COLUMNS.contains(&col.as_str()) {
            return Err(format!("unsupported column {col}"));
        }
        let value_text = rest[eq + 1..].trim_start();
        let (value, remaining) = if let Some(quoted) = value_text.strip_prefix('\'') {
            let end = quoted.find('\'').ok_or("unterminated string literal")?;
            (quoted[..end].to_owned(), &quoted[end + 1..])
        } else {
            let end = value_text
                .find(char::is_whitespace)
                .unwrap_or(value_text.len());
            let number = &value_text[..end];
            if !number.chars().all(|c| c.is_ascii_digit()) || number.is_empty() {
                return Err("values must be quoted strings or integers".to_owned());
            }
            (number.to_owned(), &value_text[end..])
        };
        filters.push((col, value));
        let remaining = remaining.trim();
        if remaining.is_empty() {
            return Ok((columns, filters));
        }
        rest = remaining
            .get(..4)
            .filter(|w| w.eq_ignore_ascii_case("and "))
            .map(|_| &remaining[4..])
            .ok_or("only AND may join conditions")?
            .trim_start();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suiteql_subset() {
        let (cols, filters) =
            parse_suiteql("SELECT id, externalid FROM transaction WHERE externalid = 'Ab-1'")
                .unwrap_or_default();
        assert_eq!(cols, Some(vec!["id".to_owned(), "externalid".to_owned()]));
        assert_eq!(filters, vec![("externalid".to_owned(), "Ab-1".to_owned())]);
        assert!(parse_suiteql("SELECT * FROM customer").is_err());
        assert!(parse_suiteql("SELECT * FROM transaction WHERE id > 3").is_err());
        assert!(parse_suiteql("DELETE FROM transaction").is_err());
        let (cols, filters) =
            parse_suiteql("select * from transaction where id = 1001 and memo = 'x'")
                .unwrap_or_default();
        assert!(cols.is_none());
        assert_eq!(filters.len(), 2);
    }
}
