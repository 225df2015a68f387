//! The simulator's own API under `/_sim/`: provisioning accounts, reading stored documents and
//! jobs, setting faults and limits, taking an ERP down, and the report. No authentication: it is
//! a test harness bound to loopback.
//!
//! `DELETE /_sim/documents/{id}` and `PATCH /_sim/documents/{id}` (a JSON merge patch of the
//! stored record) change what an ERP holds behind the client's back, the way a user of the
//! ERP could: tests of ledgerflow's ERP read-back use them. No ERP API behaves differently.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Sim;
use crate::faults::FaultConfig;
use crate::limits::LimitConfig;
use crate::store::{Account, Erp};

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": message.into() })),
    )
        .into_response()
}

pub(crate) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route(
            "/_sim/health",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/_sim/report", get(report))
        .route("/_sim/accounts", get(list_accounts).post(provision))
        .route("/_sim/documents", get(list_documents))
        .route(
            "/_sim/documents/{id}",
            get(read_document)
                .delete(delete_document)
                .patch(patch_document),
        )
        .route("/_sim/jobs", get(list_jobs))
        .route("/_sim/faults", get(get_faults).post(set_faults))
        .route("/_sim/down", post(set_down))
        .route("/_sim/limits", get(get_limits).post(set_limits))
        .route("/_sim/tokens/expire", post(expire_tokens))
}

async fn report(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(sim.report())
}

async fn provision(State(sim): State<Arc<Sim>>, body: axum::body::Bytes) -> Response {
    // One account object or an array of them.
    let accounts: Vec<Account> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => {
            match items
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(accounts) => accounts,
                Err(e) => return bad_request(format!("account: {e}")),
            }
        }
        Ok(item) => match serde_json::from_value(item) {
            Ok(account) => vec![account],
            Err(e) => return bad_request(format!("account: {e}")),
        },
        Err(e) => return bad_request(format!("body is not JSON: {e}")),
    };
    let mut done = Vec::new();
    for account in accounts {
        let name = json!({ "erp": account.erp, "account": account.account });
        if let Err(e) = sim.store.put_account(account) {
            return bad_request(e.to_string());
        }
        done.push(name);
    }
    (StatusCode::CREATED, Json(json!({ "provisioned": done }))).into_response()
}

#[derive(Debug, Deserialize)]
struct ErpFilter {
    erp: Option<String>,
    account: Option<String>,
    kind: Option<String>,
    source_ref: Option<String>,
    erp_key: Option<String>,
    #[serde(default)]
    include_children: bool,
}

fn parse_erp(name: Option<&str>) -> Result<Option<Erp>, Box<Response>> {
    match name.filter(|n| !n.is_empty()) {
        None => Ok(None),
        Some(n) => Erp::parse(n)
            .map(Some)
            .ok_or_else(|| Box::new(bad_request(format!("unknown erp {n}")))),
    }
}

async fn list_accounts(State(sim): State<Arc<Sim>>, Query(q): Query<ErpFilter>) -> Response {
    let erp = match parse_erp(q.erp.as_deref()) {
        Ok(erp) => erp,
        Err(resp) => return *resp,
    };
    // Secrets stay out of listings; the caller provisioned them and knows them.
    let accounts: Vec<Value> = sim
        .store
        .accounts(erp)
        .into_iter()
        .map(|a| {
            json!({
                "erp": a.erp,
                "account": a.account,
                "m2m_clients": a.credentials.m2m.iter().map(|c| &c.client_id).collect::<Vec<_>>(),
                "tba_tokens": a.credentials.tba.iter().map(|t| &t.token_id).collect::<Vec<_>>(),
                "tenant_id": a.credentials.tenant_id,
                "resource": (a.erp == Erp::D365).then(|| a.d365_resource()),
                "clients": a.credentials.clients.iter().map(|c| &c.client_id).collect::<Vec<_>>(),
                "users": a.credentials.users.iter().map(|u| &u.user).collect::<Vec<_>>(),
                "default_company": (a.erp == Erp::D365).then(|| a.company()),
            })
        })
        .collect();
    Json(json!({ "accounts": accounts })).into_response()
}

async fn list_documents(State(sim): State<Arc<Sim>>, Query(q): Query<ErpFilter>) -> Response {
    let erp = match parse_erp(q.erp.as_deref()) {
        Ok(erp) => erp,
        Err(resp) => return *resp,
    };
    let norm = |s: &Option<String>| s.as_deref().map(crate::store::norm_key);
    let (source_ref, erp_key) = (norm(&q.source_ref), norm(&q.erp_key));
    let docs = sim.store.find_docs(|d| {
        erp.is_none_or(|e| d.erp == e)
            && q.account.as_deref().is_none_or(|a| d.account == a)
            && q.kind.as_deref().is_none_or(|k| d.kind == k)
            && (q.include_children || d.parent.is_none())
            && source_ref.as_deref().is_none_or(|s| {
                d.source_ref
                    .as_deref()
                    .map(crate::store::norm_key)
                    .as_deref()
                    == Some(s)
            })
            && erp_key.as_deref().is_none_or(|s| {
                d.erp_key.as_deref().map(crate::store::norm_key).as_deref() == Some(s)
            })
    });
    Json(json!({ "count": docs.len(), "documents": docs })).into_response()
}

async fn read_document(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Response {
    match sim.store.doc(&id) {
        Some(doc) => Json(doc).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such document" })),
        )
            .into_response(),
    }
}

async fn delete_document(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Response {
    match sim.store.delete_doc(&id) {
        Ok(ids) if ids.is_empty() => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such document" })),
        )
            .into_response(),
        Ok(ids) => Json(json!({ "deleted": ids })).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

/// Applies an RFC 7396 JSON merge patch to the stored record (`body`) of a document: the
/// record then reads back changed through its ERP's own API, as if edited in the ERP.
async fn patch_document(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(patch @ Value::Object(_)) => patch,
        Ok(_) => return bad_request("patch: expected an object"),
        Err(e) => return bad_request(format!("patch is not JSON: {e}")),
    };
    let Some(mut doc) = sim.store.doc(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such document" })),
        )
            .into_response();
    };
    merge_patch(&mut doc.body, patch);
    doc.version += 1;
    doc.updated_ms = crate::store::now_ms();
    match sim.store.put_docs(vec![doc.clone()]) {
        Ok(()) => Json(doc).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

/// RFC 7396: objects merge member by member, `null` removes a member, anything else replaces.
fn merge_patch(target: &mut Value, patch: Value) {
    let Value::Object(members) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in members {
            if value.is_null() {
                map.remove(&key);
            } else {
                merge_patch(map.entry(key).or_insert(Value::Null), value);
            }
        }
    }
}

async fn list_jobs(State(sim): State<Arc<Sim>>, Query(q): Query<ErpFilter>) -> Response {
    let erp = match parse_erp(q.erp.as_deref()) {
        Ok(erp) => erp,
        Err(resp) => return *resp,
    };
    sim.process_due_jobs();
    let jobs = sim.store.find_jobs(|j| {
        erp.is_none_or(|e| j.erp == e) && q.account.as_deref().is_none_or(|a| j.account == a)
    });
    Json(json!({ "count": jobs.len(), "jobs": jobs })).into_response()
}

async fn get_faults(State(sim): State<Arc<Sim>>) -> Json<FaultConfig> {
    Json(sim.faults.config())
}

async fn set_faults(State(sim): State<Arc<Sim>>, body: axum::body::Bytes) -> Response {
    let config: FaultConfig = match serde_json::from_slice(&body) {
        Ok(config) => config,
        Err(e) => return bad_request(format!("faults: {e}")),
    };
    if !(0.0..=1.0).contains(&config.rate) {
        return bad_request("rate must be within [0, 1]");
    }
    sim.faults.set_config(config);
    Json(sim.faults.config()).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Down {
    erp: Erp,
    seconds: u64,
}

async fn set_down(State(sim): State<Arc<Sim>>, body: axum::body::Bytes) -> Response {
    let down: Down = match serde_json::from_slice(&body) {
        Ok(down) => down,
        Err(e) => return bad_request(format!("down: {e}")),
    };
    sim.faults.set_down(down.erp, down.seconds);
    Json(json!({ "erp": down.erp, "down_for_seconds": sim.faults.down_for(down.erp).unwrap_or(0) }))
        .into_response()
}

async fn get_limits(State(sim): State<Arc<Sim>>) -> Json<LimitConfig> {
    Json(sim.limits.config())
}

async fn set_limits(State(sim): State<Arc<Sim>>, body: axum::body::Bytes) -> Response {
    // A partial object updates only the fields it names.
    let mut current = match serde_json::to_value(sim.limits.config()) {
        Ok(v) => v,
        Err(e) => return bad_request(e.to_string()),
    };
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) => return bad_request("limits: expected an object"),
        Err(e) => return bad_request(format!("limits: {e}")),
    };
    if let (Value::Object(cur), Value::Object(patch)) = (&mut current, patch) {
        for (k, v) in patch {
            cur.insert(k, v);
        }
    }
    match serde_json::from_value::<LimitConfig>(current) {
        Ok(config) => {
            sim.limits.set_config(config);
            Json(sim.limits.config()).into_response()
        }
        Err(e) => bad_request(format!("limits: {e}")),
    }
}

async fn expire_tokens(State(sim): State<Arc<Sim>>) -> Json<Value> {
    sim.tokens.expire_all();
    Json(json!({ "expired": true }))
}
