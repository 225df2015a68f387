//! Dynamics 365 Finance & Operations: OData v4 under `data/` plus the Microsoft Entra ID token
//! endpoint of the client-credentials flow.
//!
//! Paths (under `/d365`):
//! - `POST login/{tenant}/oauth2/v2.0/token` (Entra ID; form `grant_type=client_credentials`,
//!   `client_id`, `client_secret`, `scope={resource}/.default`);
//! - `[{environment}/]data/{EntitySet}` GET (`$filter` with `eq`/`and`, `$top`,
//!   `cross-company=true`) and POST;
//! - `[{environment}/]data/{EntitySet}(dataAreaId='usmf',JournalBatchNumber='...')` GET;
//! - `[{environment}/]data/$batch` POST, multipart/mixed with change sets that are atomic.
//!
//! Entity sets: LedgerJournalHeaders/LedgerJournalLines and
//! CustomerPaymentJournalHeaders/CustomerPaymentJournalLines. POST never deduplicates: two POSTs
//! of the same journal are two journals. Clients look a document up by its `Description`
//! (ledgerflow's external reference) before creating it. A write to a company (`dataAreaId`)
//! that is not a legal entity of the environment is refused (`400`, nothing stored).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::auth;
use crate::conn::ConnHandle;
use crate::store::{Account, Document, Erp, NewDoc};
use crate::text::{self, decode_pairs, param};
use crate::{Admission, Sim, origin};

const ERP: Erp = Erp::D365;
/// Entra ID access tokens of the client-credentials flow live about an hour.
const TOKEN_TTL_SECS: u64 = 3599;
/// Length of a journal header's `Description` (LedgerJournalTable.Name, EDT `Description`,
/// string size 60).
const DESCRIPTION_LENGTH: usize = 60;

/// (entity set, header set for line sets).
const ENTITY_SETS: [(&str, Option<&str>); 4] = [
    ("LedgerJournalHeaders", None),
    ("LedgerJournalLines", Some("LedgerJournalHeaders")),
    ("CustomerPaymentJournalHeaders", None),
    (
        "CustomerPaymentJournalLines",
        Some("CustomerPaymentJournalHeaders"),
    ),
];

/// An OData error.
#[derive(Debug, Clone)]
struct ODataError {
    status: StatusCode,
    message: String,
}

impl ODataError {
    fn new(status: StatusCode, message: impl Into<String>) -> ODataError {
        ODataError {
            status,
            message: message.into(),
        }
    }

    fn body(&self) -> Value {
        json!({
            "error": {
                "code": "",
                "message": self.message,
                "innererror": {
                    "message": self.message,
                    "type": "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException",
                    "stacktrace": "",
                },
            }
        })
    }
}

impl IntoResponse for ODataError {
    fn into_response(self) -> Response {
        let body = self.body();
        (self.status, axum::Json(body)).into_response()
    }
}

fn unauthorized() -> Response {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::WWW_AUTHENTICATE, "Bearer")
        .body(Body::empty())
        .unwrap_or_default()
}

/// Entry point for everything under `/d365/`.
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
        Some(&"login") => {
            return match segments.as_slice() {
                ["login", tenant, "oauth2", "v2.0", "token"] if method == Method::POST => {
                    token(&sim, tenant, &body)
                }
                _ => StatusCode::NOT_FOUND.into_response(),
            };
        }
        Some(&"data") => None,
        Some(env) => {
            let env = (*env).to_owned();
            segments.remove(0);
            Some(env)
        }
        None => None,
    };
    let named = path_account.clone().unwrap_or_else(|| "unknown".to_owned());
    if let Some(secs) = sim.faults.down_for(ERP) {
        sim.report.down(ERP, &named);
        let mut resp =
            ODataError::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response();
        resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
        return resp;
    }
    let account = auth::bearer(&headers)
        .and_then(|t| sim.tokens.check(ERP, &t))
        .filter(|a| path_account.as_deref().is_none_or(|p| p == a))
        .and_then(|a| sim.store.account(ERP, &a));
    let Some(account) = account else {
        sim.report.request(ERP, &named);
        sim.report.rejected_auth(ERP, &named);
        return unauthorized();
    };
    sim.report.request(ERP, &account.account);
    let admitted = match sim.admit(ERP, &account.account).await {
        Admission::Go(admitted) => admitted,
        Admission::Throttled { retry_after } => {
            let mut resp = ODataError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests. The request was throttled by service protection API limits.",
            )
            .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, retry_after.unwrap_or(1).into());
            return resp;
        }
        Admission::ServerError => {
            return ODataError::new(StatusCode::INTERNAL_SERVER_ERROR, "An error has occurred.")
                .into_response();
        }
    };
    let prefix = match &path_account {
        Some(env) => format!("/d365/{env}"),
        None => "/d365".to_owned(),
    };
    let ctx = Ctx {
        sim: &sim,
        account: &account,
        root: format!("{}{prefix}/data", origin(&headers)),
    };
    let response = match segments.as_slice() {
        ["data", "$batch"] if method == Method::POST => batch(&ctx, &headers, &body),
        ["data", resource] => {
            let query = uri.query().unwrap_or("");
            let prefer = headers
                .get("prefer")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            match execute_single(&ctx, &method, resource, query, prefer, &body) {
                Ok(part) => part.into_response(),
                Err(e) => e.into_response(),
            }
        }
        _ => ODataError::new(StatusCode::NOT_FOUND, "No HTTP resource was found.").into_response(),
    };
    admitted.finish(&conn);
    response
}

/// `POST login/{tenant}/oauth2/v2.0/token`.
fn token(sim: &Sim, tenant: &str, body: &[u8]) -> Response {
    let form = decode_pairs(&String::from_utf8_lossy(body));
    let entra_error = |status: StatusCode, error: &str, code: u32, description: String| {
        (
            status,
            axum::Json(json!({
                "error": error,
                "error_description": format!("AADSTS{code}: {description}"),
                "error_codes": [code],
                "timestamp": text::rfc3339(crate::store::now_ms()),
                "trace_id": "00000000-0000-0000-0000-000000000000",
                "correlation_id": "00000000-0000-0000-0000-000000000000",
            })),
        )
            .into_response()
    };
    let accounts: Vec<Account> = sim
        .store
        .accounts(Some(ERP))
        .into_iter()
        .filter(|a| a.credentials.tenant_id.as_deref() == Some(tenant))
        .collect();
    let charged = accounts
        .first()
        .map_or_else(|| "unknown".to_owned(), |a| a.account.clone());
    let reject = |status, error, code, description: String| {
        sim.report.request(ERP, &charged);
        sim.report.rejected_auth(ERP, &charged);
        entra_error(status, error, code, description)
    };
    if accounts.is_empty() {
        return reject(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!("Tenant '{tenant}' not found."),
        );
    }
    if param(&form, "grant_type") != Some("client_credentials") {
        return reject(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.".to_owned(),
        );
    }
    let client_id = param(&form, "client_id").unwrap_or_default();
    let secret = param(&form, "client_secret").unwrap_or_default();
    let with_client: Vec<&Account> = accounts
        .iter()
        .filter(|a| {
            a.credentials
                .clients
                .iter()
                .any(|c| c.client_id == client_id)
        })
        .collect();
    if with_client.is_empty() {
        return reject(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{tenant}'."
            ),
        );
    }
    let secret_ok = with_client.iter().any(|a| {
        a.credentials
            .clients
            .iter()
            .any(|c| c.client_id == client_id && c.client_secret == secret)
    });
    if !secret_ok {
        return reject(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the \
             client secret value, not the client secret ID."
                .to_owned(),
        );
    }
    let scope = param(&form, "scope").unwrap_or_default();
    let Some(resource) = scope.strip_suffix("/.default") else {
        return reject(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows \
                 must have a scope value with /.default suffixed to the resource identifier \
                 (application ID URI)."
            ),
        );
    };
    let target = with_client
        .iter()
        .find(|a| a.d365_resource().trim_end_matches('/') == resource.trim_end_matches('/'));
    let Some(target) = target else {
        return reject(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            format!("The resource principal named {resource} was not found in the tenant."),
        );
    };
    sim.report.request(ERP, &target.account);
    let token = sim.tokens.issue(ERP, &target.account, TOKEN_TTL_SECS);
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": TOKEN_TTL_SECS,
        "ext_expires_in": TOKEN_TTL_SECS,
        "access_token": token,
    }))
    .into_response()
}

struct Ctx<'a> {
    sim: &'a Sim,
    account: &'a Account,
    root: String,
}

/// The outcome of one OData request (alone or inside a batch).
#[derive(Debug)]
struct Part {
    status: StatusCode,
    location: Option<String>,
    body: Option<Value>,
}

impl IntoResponse for Part {
    fn into_response(self) -> Response {
        let mut builder = Response::builder()
            .status(self.status)
            .header("OData-Version", "4.0");
        if let Some(location) = &self.location {
            builder = builder
                .header(header::LOCATION, location)
                .header("OData-EntityId", location);
        }
        match self.body {
            Some(body) => builder
                .header(
                    header::CONTENT_TYPE,
                    "application/json; odata.metadata=minimal",
                )
                .body(Body::from(body.to_string()))
                .unwrap_or_default(),
            None => builder.body(Body::empty()).unwrap_or_default(),
        }
    }
}

fn entity_set(name: &str) -> Result<(&'static str, Option<&'static str>), ODataError> {
    ENTITY_SETS
        .into_iter()
        .find(|(set, _)| *set == name)
        .ok_or_else(|| {
            ODataError::new(
                StatusCode::NOT_FOUND,
                format!("Resource not found for the segment '{name}'."),
            )
        })
}

/// Splits `Set(k='v',n=1)` into the set name and its key values.
/// Key values of an entity key segment, `(name, value)`.
type KeyValues = Vec<(String, String)>;

fn split_key(resource: &str) -> Result<(&str, Option<KeyValues>), ODataError> {
    let Some(open) = resource.find('(') else {
        return Ok((resource, None));
    };
    let inner = resource[open + 1..].strip_suffix(')').ok_or_else(|| {
        ODataError::new(
            StatusCode::BAD_REQUEST,
            format!("Bad key segment: {resource}"),
        )
    })?;
    let mut keys = Vec::new();
    for pair in inner.split(',') {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            ODataError::new(
                StatusCode::BAD_REQUEST,
                format!("Bad key segment: {resource}"),
            )
        })?;
        let v = text::decode_component(v.trim());
        let v = v.trim_matches('\'').to_owned();
        keys.push((k.trim().to_owned(), v));
    }
    Ok((&resource[..open], Some(keys)))
}

fn entity_json(ctx: &Ctx<'_>, doc: &Document) -> Value {
    let mut body = doc.body.clone();
    if let Value::Object(map) = &mut body {
        map.insert(
            "@odata.etag".into(),
            json!(format!("W/\"{}\"", doc.version)),
        );
    }
    let _ = ctx;
    body
}

fn key_url(ctx: &Ctx<'_>, set: &str, body: &Map<String, Value>) -> String {
    let company = body
        .get("dataAreaId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let batch = body
        .get("JournalBatchNumber")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match body.get("LineNumber") {
        Some(line) => format!(
            "{}/{set}(dataAreaId='{company}',JournalBatchNumber='{batch}',LineNumber={line})",
            ctx.root
        ),
        None => format!(
            "{}/{set}(dataAreaId='{company}',JournalBatchNumber='{batch}')",
            ctx.root
        ),
    }
}

fn execute_single(
    ctx: &Ctx<'_>,
    method: &Method,
    resource: &str,
    query: &str,
    prefer: &str,
    body: &[u8],
) -> Result<Part, ODataError> {
    match *method {
        Method::GET => read(ctx, resource, query),
        Method::POST => {
            let (set, keys) = split_key(resource)?;
            if keys.is_some() {
                return Err(ODataError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "POST is allowed on an entity set only.",
                ));
            }
            let object = parse_object(body)?;
            let _guard = ctx.sim.write_lock();
            let doc = plan_insert(ctx, set, object, &[])?;
            ctx.sim
                .store
                .put_docs(vec![doc.clone()])
                .map_err(|e| ODataError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            Ok(created(ctx, &doc, prefer))
        }
        _ => Err(ODataError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("{method} is not supported by the simulator."),
        )),
    }
}

fn created(ctx: &Ctx<'_>, doc: &Document, prefer: &str) -> Part {
    let location = match &doc.body {
        Value::Object(map) => key_url(ctx, &doc.kind, map),
        _ => String::new(),
    };
    if prefer.contains("return=minimal") {
        return Part {
            status: StatusCode::NO_CONTENT,
            location: Some(location),
            body: None,
        };
    }
    let mut body = entity_json(ctx, doc);
    if let Value::Object(map) = &mut body {
        map.insert(
            "@odata.context".into(),
            json!(format!("{}/$metadata#{}/$entity", ctx.root, doc.kind)),
        );
    }
    Part {
        status: StatusCode::CREATED,
        location: Some(location),
        body: Some(body),
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ODataError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ODataError::new(
            StatusCode::BAD_REQUEST,
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(ODataError::new(
            StatusCode::BAD_REQUEST,
            format!("The request body is not valid JSON: {e}"),
        )),
    }
}

fn str_field<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    map.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

fn same_record(doc: &Document, account: &str, set: &str, company: &str, batch: &str) -> bool {
    doc.erp == ERP
        && doc.account == account
        && doc.kind == set
        && doc.body.get("dataAreaId").and_then(Value::as_str) == Some(company)
        && doc.body.get("JournalBatchNumber").and_then(Value::as_str) == Some(batch)
}

/// Validates an insert and builds the document; `pending` holds the earlier writes of the same
/// change set, which later writes may refer to (a line to its header).
fn plan_insert(
    ctx: &Ctx<'_>,
    set: &str,
    mut body: Map<String, Value>,
    pending: &[Document],
) -> Result<Document, ODataError> {
    let (set, header_set) = entity_set(set)?;
    let account = ctx.account.account.as_str();
    let company = str_field(&body, "dataAreaId")
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| ctx.account.company());
    body.insert("dataAreaId".into(), json!(company));
    let entity = set.trim_end_matches('s');
    let write_failed = |message: String| {
        ODataError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Write failed for table row of type '{entity}Entity'. Infolog: Error: {message}"
            ),
        )
    };
    if !ctx.account.has_company(&company) {
        // The company is a foreign key to the legal entities; D365 validates it like any
        // other relation of the table.
        return Err(write_failed(format!(
            "The value '{company}' in field 'Company' (dataAreaId) is not found in the \
             relating table 'Legal entities'."
        )));
    }
    let existing = |kind: &str, batch: &str| -> Option<Document> {
        pending
            .iter()
            .find(|d| same_record(d, account, kind, &company, batch))
            .cloned()
            .or_else(|| {
                ctx.sim
                    .store
                    .find_docs(|d| {
                        d.parent.is_none() && same_record(d, account, kind, &company, batch)
                    })
                    .into_iter()
                    .next()
            })
    };
    let seq = ctx.sim.store.next_seq();
    match header_set {
        None => {
            if str_field(&body, "JournalName").is_none() {
                return Err(write_failed(
                    "Field 'Name' (JournalName) must be filled in.".into(),
                ));
            }
            let batch = match str_field(&body, "JournalBatchNumber") {
                Some(given) => {
                    let given = given.to_owned();
                    if existing(set, &given).is_some() {
                        return Err(write_failed(format!(
                            "Cannot create a record in Journal table (LedgerJournalTable). \
                             Journal batch number: {given}. The record already exists."
                        )));
                    }
                    given
                }
                None => format!("JB{seq:08}"),
            };
            if let Some(description) = str_field(&body, "Description")
                && description.chars().count() > DESCRIPTION_LENGTH
            {
                return Err(write_failed(format!(
                    "The value in field 'Description' (Name) is {} characters long; the field \
                     holds {DESCRIPTION_LENGTH}.",
                    description.chars().count()
                )));
            }
            body.insert("JournalBatchNumber".into(), json!(batch));
            let source_ref = str_field(&body, "Description").map(str::to_owned);
            Ok(NewDoc {
                erp: ERP,
                account: account.to_owned(),
                kind: set.to_owned(),
                erp_key: None,
                source_ref,
                parent: None,
                body: Value::Object(body),
            }
            .build(seq, format!("{company}/{batch}")))
        }
        Some(header_set) => {
            let batch = str_field(&body, "JournalBatchNumber")
                .ok_or_else(|| {
                    write_failed("Field 'Journal batch number' must be filled in.".into())
                })?
                .to_owned();
            let header = existing(header_set, &batch).ok_or_else(|| {
                write_failed(format!(
                    "Journal batch number {batch} does not exist in company {company}."
                ))
            })?;
            let lines_of =
                |d: &Document| d.parent.as_deref() == Some(header.id.as_str()) && d.kind == set;
            let mut used: Vec<i128> = pending
                .iter()
                .filter(|d| lines_of(d))
                .cloned()
                .chain(ctx.sim.store.find_docs(|d| lines_of(d)))
                .filter_map(|d| d.body.get("LineNumber").and_then(text::json_amount))
                .collect();
            used.sort_unstable();
            let line = match body.get("LineNumber").filter(|v| !v.is_null()) {
                Some(v) => {
                    let n = text::json_amount(v)
                        .ok_or_else(|| write_failed(format!("Invalid LineNumber {v}.")))?;
                    if used.contains(&n) {
                        return Err(write_failed(format!(
                            "Line {v} of journal {batch} already exists."
                        )));
                    }
                    n
                }
                None => used.last().copied().unwrap_or(0) + text::AMOUNT_SCALE,
            };
            let whole = line / text::AMOUNT_SCALE;
            body.insert("LineNumber".into(), json!(whole));
            for field in ["DebitAmount", "CreditAmount"] {
                if let Some(v) = body.get(field).filter(|v| !v.is_null())
                    && text::json_amount(v).is_none()
                {
                    return Err(write_failed(format!("Invalid {field} {v}.")));
                }
            }
            Ok(NewDoc {
                erp: ERP,
                account: account.to_owned(),
                kind: set.to_owned(),
                erp_key: None,
                source_ref: None,
                parent: Some(header.id.clone()),
                body: Value::Object(body),
            }
            .build(seq, format!("{company}/{batch}/{whole}")))
        }
    }
}

fn read(ctx: &Ctx<'_>, resource: &str, query: &str) -> Result<Part, ODataError> {
    let (set, keys) = split_key(resource)?;
    let (set, _) = entity_set(set)?;
    let account = ctx.account.account.as_str();
    let all = ctx
        .sim
        .store
        .find_docs(|d| d.erp == ERP && d.account == account && d.kind == set);
    if let Some(keys) = keys {
        let found = all.iter().find(|d| {
            keys.iter().all(|(k, v)| match d.body.get(k) {
                Some(Value::String(s)) => s.eq_ignore_ascii_case(v),
                Some(Value::Number(n)) => n.to_string() == *v,
                _ => false,
            })
        });
        let doc = found.ok_or_else(|| {
            ODataError::new(
                StatusCode::NOT_FOUND,
                format!("No {set} record matches the key."),
            )
        })?;
        let mut body = entity_json(ctx, doc);
        if let Value::Object(map) = &mut body {
            map.insert(
                "@odata.context".into(),
                json!(format!("{}/$metadata#{set}/$entity", ctx.root)),
            );
        }
        return Ok(Part {
            status: StatusCode::OK,
            location: None,
            body: Some(body),
        });
    }
    let params = decode_pairs(query);
    let filter = match param(&params, "$filter") {
        Some(f) => {
            text::parse_filter(f).map_err(|e| ODataError::new(StatusCode::BAD_REQUEST, e))?
        }
        None => Vec::new(),
    };
    let cross_company =
        param(&params, "cross-company").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let top: usize = match param(&params, "$top") {
        Some(t) => t
            .parse()
            .map_err(|_| ODataError::new(StatusCode::BAD_REQUEST, "Bad $top."))?,
        None => usize::MAX,
    };
    let company = ctx.account.company();
    // Without cross-company=true, D365 OData returns only the caller's default company.
    let value: Vec<Value> = all
        .iter()
        .filter(|d| {
            cross_company
                || d.body.get("dataAreaId").and_then(Value::as_str) == Some(company.as_str())
        })
        .filter(|d| text::matches(&d.body, &filter))
        .take(top)
        .map(|d| entity_json(ctx, d))
        .collect();
    Ok(Part {
        status: StatusCode::OK,
        location: None,
        body: Some(
            json!({ "@odata.context": format!("{}/$metadata#{set}", ctx.root), "value": value }),
        ),
    })
}

/// One request inside a batch.
#[derive(Debug)]
struct InnerRequest {
    content_id: Option<String>,
    method: Method,
    resource: String,
    query: String,
    prefer: String,
    body: String,
}

fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Splits a multipart body into its parts (each still with its headers).
fn split_parts(body: &str, boundary: &str) -> Result<Vec<String>, String> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    let mut closed = false;
    for line in body.split('\n') {
        let trimmed = line.trim_end();
        if trimmed == format!("{delimiter}--") {
            if let Some(lines) = current.take() {
                parts.push(lines.join("\n"));
            }
            closed = true;
            break;
        }
        if trimmed == delimiter {
            if let Some(lines) = current.take() {
                parts.push(lines.join("\n"));
            }
            current = Some(Vec::new());
            continue;
        }
        if let Some(lines) = current.as_mut() {
            lines.push(line);
        }
    }
    if !closed {
        return Err(format!("multipart body does not end with --{boundary}--"));
    }
    Ok(parts)
}

/// Splits headers from content at the first blank line.
fn split_headers(part: &str) -> (Vec<(String, String)>, &str) {
    let (head, content) = match part.find("\n\n") {
        Some(i) => (&part[..i], &part[i + 2..]),
        None => (part, ""),
    };
    let headers = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (headers, content)
}

fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn parse_inner(part_headers: &[(String, String)], content: &str) -> Result<InnerRequest, String> {
    let content_id = header_value(part_headers, "content-id").map(str::to_owned);
    let content = content.trim_start_matches('\n');
    let (request_line, rest) = content.split_once('\n').unwrap_or((content, ""));
    let mut words = request_line.split_whitespace();
    let method: Method = words
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("bad request line: {request_line}"))?;
    let target = words
        .next()
        .ok_or_else(|| format!("bad request line: {request_line}"))?;
    // Absolute URL, absolute path or a path relative to the service root.
    let relative = match target.find("/data/") {
        Some(i) => &target[i + "/data/".len()..],
        None => target.trim_start_matches('/'),
    };
    let (resource, query) = relative.split_once('?').unwrap_or((relative, ""));
    let (headers, body) = split_headers(rest);
    let prefer = header_value(&headers, "prefer").unwrap_or("").to_owned();
    Ok(InnerRequest {
        content_id,
        method,
        resource: resource.to_owned(),
        query: query.to_owned(),
        prefer,
        body: body.trim().to_owned(),
    })
}

fn render_part(out: &mut String, content_id: Option<&str>, part: &Part) {
    out.push_str("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n");
    if let Some(id) = content_id {
        out.push_str(&format!("Content-ID: {id}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&format!(
        "HTTP/1.1 {} {}\r\n",
        part.status.as_u16(),
        part.status.canonical_reason().unwrap_or("")
    ));
    if let Some(location) = &part.location {
        out.push_str(&format!(
            "Location: {location}\r\nOData-EntityId: {location}\r\n"
        ));
    }
    out.push_str("OData-Version: 4.0\r\n");
    match &part.body {
        Some(body) => {
            out.push_str("Content-Type: application/json; odata.metadata=minimal\r\n\r\n");
            out.push_str(&body.to_string());
            out.push_str("\r\n");
        }
        None => out.push_str("\r\n"),
    }
}

fn error_part(e: &ODataError) -> Part {
    Part {
        status: e.status,
        location: None,
        body: Some(e.body()),
    }
}

/// `POST data/$batch`. Each change set is all or nothing: its writes are validated against the
/// store plus the change set's earlier writes, then committed in one log entry, or not at all.
/// Processing stops at the first failed part (OData's default without continue-on-error).
fn batch(ctx: &Ctx<'_>, headers: &HeaderMap, body: &[u8]) -> Response {
    let bad = |m: String| ODataError::new(StatusCode::BAD_REQUEST, m).into_response();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/mixed")
    {
        return bad("A $batch request must be multipart/mixed.".into());
    }
    let Some(boundary) = boundary_of(content_type) else {
        return bad("The multipart/mixed content type has no boundary.".into());
    };
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let parts = match split_parts(&text, &boundary) {
        Ok(parts) => parts,
        Err(e) => return bad(e),
    };
    let seq = ctx.sim.store.next_seq();
    let response_boundary = format!("batchresponse_{seq}");
    let mut out = String::new();
    for (index, part) in parts.iter().enumerate() {
        let (part_headers, content) = split_headers(part);
        let part_type = header_value(&part_headers, "content-type").unwrap_or("");
        out.push_str(&format!("--{response_boundary}\r\n"));
        if part_type
            .to_ascii_lowercase()
            .starts_with("multipart/mixed")
        {
            let Some(cs_boundary) = boundary_of(part_type) else {
                return bad(format!("Change set {index} has no boundary."));
            };
            let inner_parts = match split_parts(content, &cs_boundary) {
                Ok(p) => p,
                Err(e) => return bad(e),
            };
            let mut requests = Vec::new();
            for inner in &inner_parts {
                let (h, c) = split_headers(inner);
                match parse_inner(&h, c) {
                    Ok(r) => requests.push(r),
                    Err(e) => return bad(e),
                }
            }
            match run_changeset(ctx, &requests) {
                Ok(results) => {
                    let cs = format!("changesetresponse_{seq}_{index}");
                    out.push_str(&format!(
                        "Content-Type: multipart/mixed; boundary={cs}\r\n\r\n"
                    ));
                    for (content_id, part) in results {
                        out.push_str(&format!("--{cs}\r\n"));
                        render_part(&mut out, content_id.as_deref(), &part);
                    }
                    out.push_str(&format!("--{cs}--\r\n"));
                }
                Err((content_id, e)) => {
                    // A failed change set answers with one response: the error.
                    render_part(&mut out, content_id.as_deref(), &error_part(&e));
                    break;
                }
            }
        } else {
            let request = match parse_inner(&part_headers, content) {
                Ok(r) => r,
                Err(e) => return bad(e),
            };
            let result = execute_single(
                ctx,
                &request.method,
                &request.resource,
                &request.query,
                &request.prefer,
                request.body.as_bytes(),
            );
            let failed = result.is_err();
            let part = result.unwrap_or_else(|e| error_part(&e));
            render_part(&mut out, request.content_id.as_deref(), &part);
            if failed {
                break;
            }
        }
    }
    out.push_str(&format!("--{response_boundary}--\r\n"));
    Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/mixed; boundary={response_boundary}"),
        )
        .header("OData-Version", "4.0")
        .body(Body::from(out))
        .unwrap_or_default()
}

type ChangesetResult = Result<Vec<(Option<String>, Part)>, (Option<String>, ODataError)>;

fn run_changeset(ctx: &Ctx<'_>, requests: &[InnerRequest]) -> ChangesetResult {
    let _guard = ctx.sim.write_lock();
    let mut pending: Vec<Document> = Vec::new();
    let mut results = Vec::new();
    for request in requests {
        let fail = |e: ODataError| (request.content_id.clone(), e);
        if request.method != Method::POST {
            return Err(fail(ODataError::new(
                StatusCode::NOT_IMPLEMENTED,
                "Only POST (create) is supported inside a change set by the simulator.",
            )));
        }
        let (set, keys) = split_key(&request.resource).map_err(fail)?;
        if keys.is_some() {
            return Err(fail(ODataError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST is allowed on an entity set only.",
            )));
        }
        let object = parse_object(request.body.as_bytes()).map_err(fail)?;
        let doc = plan_insert(ctx, set, object, &pending).map_err(fail)?;
        results.push((
            request.content_id.clone(),
            created(ctx, &doc, &request.prefer),
        ));
        pending.push(doc);
    }
    ctx.sim.store.put_docs(pending).map_err(|e| {
        (
            None,
            ODataError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        )
    })?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_split() {
        let body = "--b\nContent-Type: application/http\n\nGET X HTTP/1.1\n\n--b--\n";
        let parts = split_parts(body, "b").unwrap_or_default();
        assert_eq!(parts.len(), 1);
        assert!(split_parts("--b\nx\n", "b").is_err());
    }

    #[test]
    fn key_segments() {
        let (set, keys) =
            split_key("LedgerJournalHeaders(dataAreaId='usmf',JournalBatchNumber='J1')")
                .unwrap_or(("", None));
        assert_eq!(set, "LedgerJournalHeaders");
        assert_eq!(keys.unwrap_or_default().len(), 2);
    }
}
