//! Operator actions on postings (`erp_outbox` rows): list them, show one, put failed ones back
//! in the dispatcher's hands, or mark them resolved after a fix made by hand in the ERP.
//!
//! These functions only read and change the outbox; who acts, the operation id and the audit
//! entry are the caller's (the service's `ops::postings`). Every change is guarded by the
//! state it expects (`WHERE status = 'failed'`), so a posting the dispatcher or another
//! operator moved meanwhile is reported, never overwritten, and every change appends an entry
//! with the operation id to the posting's `history`.
//!
//! - **Requeue**: a `failed` posting becomes `pending` again with `attempts = 0` and
//!   `next_attempt_at = now`, so the next dispatcher pass delivers it. The `indefinite` flag is
//!   kept: a posting whose last attempt may have reached the ERP is looked up by its external
//!   id before it is sent again, so a requeue never makes a second document. The job reference
//!   of a failed asynchronous job is dropped (a new attempt submits a new job).
//! - **Re-render** (with a requeue): the document is rendered again from the stored journal
//!   with the tenant's *current* configuration, through the same adapter `render` the writer
//!   uses ([`crate::adapter::ErpAdapter::render`]): the payload, route, config version and
//!   dependencies are replaced, and both config versions go into the history. The external id
//!   never changes (it depends on tenant, event and role only).
//! - **Resolve**: a `failed` posting becomes `resolved`, with who, when and why; an ERP
//!   document id can be recorded, so postings that wait for this one (a payment applied to an
//!   invoice posted by hand) can reference it.

use std::collections::BTreeMap;

use ledgerflow_core::{Currency, EventId, now_micros};
use ledgerflow_store::Backend;
use ledgerflow_tenants::TenantConfig;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::ErpError;
use crate::adapter::{InvoiceRef, RenderInput, Rendered};
use crate::adapters;
use crate::journal::{JournalEntry, JournalKind, JournalLine};
use crate::mapping::ErpRoute;
use crate::posting::{PostingState, external_id};

/// Entries kept in a posting's `history` (the dispatcher keeps the same number).
const HISTORY_LEN: usize = 20;

/// Longest excerpt of an error text in a listing.
const ERROR_EXCERPT: usize = 200;

/// Which postings to list.
#[derive(Debug, Clone, Default)]
pub struct PostingFilter {
    /// Only this state.
    pub status: Option<PostingState>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// At most this many (oldest first).
    pub limit: Option<u32>,
}

/// One posting in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PostingSummary {
    /// Outbox id (the journal id).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// State.
    pub status: PostingState,
    /// Journal role (`invoice`, `receipt`, `application`, `credit_memo`).
    pub journal_kind: Option<String>,
    /// The ERP's name of the document kind.
    pub document_kind: Option<String>,
    /// ERP kind.
    pub erp_kind: String,
    /// ERP account.
    pub erp_account: Option<String>,
    /// External id in the ERP.
    pub external_id: Option<String>,
    /// Attempts counted since the posting was written or last requeued.
    pub attempts: i64,
    /// Class of the last error.
    pub last_error_class: Option<String>,
    /// The last error, cut to 200 characters.
    pub last_error: Option<String>,
    /// The ERP's document id, once confirmed (or recorded by an operator).
    pub erp_document_id: Option<String>,
    /// Fingerprint of the tenant configuration the document was rendered with.
    pub config_version: Option<String>,
    /// Written (micros).
    pub created_at: i64,
    /// Last changed (micros).
    pub updated_at: Option<i64>,
    /// Next attempt due (micros).
    pub next_attempt_at: i64,
}

/// One posting with everything an operator needs to judge it.
#[derive(Debug, Clone, Serialize)]
pub struct PostingDetail {
    /// The listing's fields.
    #[serde(flatten)]
    pub summary: PostingSummary,
    /// The journal.
    pub journal_id: String,
    /// The whole last error.
    pub last_error_full: Option<String>,
    /// HTTP status of the last response.
    pub last_status: Option<i64>,
    /// Redacted excerpt of the last request.
    pub last_request: Option<String>,
    /// Redacted excerpt of the last response.
    pub last_response: Option<String>,
    /// The last attempts and operator actions, oldest first.
    pub history: Vec<Value>,
    /// The asynchronous job of an `accepted` posting.
    pub job_ref: Option<String>,
    /// Whether the last attempt may have reached the ERP without an answer (the next one looks
    /// the document up first).
    pub indefinite: bool,
    /// The rendered document (as stored; it holds no secret).
    pub document: Value,
    /// Base URL of the route.
    pub endpoint: String,
    /// Resolved by an operator: when (micros).
    pub resolved_at: Option<i64>,
    /// By whom.
    pub resolved_by: Option<String>,
    /// Why.
    pub resolution: Option<String>,
    /// Postings this one waits for.
    pub depends_on: Vec<Related>,
    /// Postings waiting for this one.
    pub dependents: Vec<Related>,
}

/// A posting related to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Related {
    /// Outbox id.
    pub id: String,
    /// Its state, when it has a posting.
    pub status: Option<String>,
    /// Its external id.
    pub external_id: Option<String>,
}

/// Who acts, for the postings' history (the audit entry is the caller's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acting {
    /// Operation id, shared with the audit entry.
    pub operation_id: String,
    /// Operator.
    pub operator: String,
}

/// Which postings to requeue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequeueSelection {
    /// One posting (refused unless failed).
    Id(String),
    /// Every failed posting (of one tenant).
    Failed {
        /// Only this tenant.
        tenant: Option<String>,
    },
}

/// A requeue: what, whether to re-render, whether to do it.
#[derive(Debug, Clone, Copy)]
pub struct RequeueRequest<'a> {
    /// The postings.
    pub selection: &'a RequeueSelection,
    /// Re-render with these tenants (the current tenants file, by tenant id).
    pub re_render: Option<&'a BTreeMap<String, TenantConfig>>,
    /// Who acts; none for a dry run (nothing is changed).
    pub acting: Option<&'a Acting>,
}

/// What happens (or would happen) to one posting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequeueLine {
    /// Outbox id.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// External id.
    pub external_id: Option<String>,
    /// State before.
    pub status_before: PostingState,
    /// Attempts before.
    pub attempts_before: i64,
    /// Error class before.
    pub last_error_class: Option<String>,
    /// Config version before.
    pub config_version_before: Option<String>,
    /// Config version after (the re-rendered one, else unchanged).
    pub config_version_after: Option<String>,
    /// Re-render: whether the document differs from the stored one.
    pub document_changed: Option<bool>,
    /// Whether the posting goes (or went) back to `pending`.
    pub requeued: bool,
    /// Why not, when it does not.
    pub refused: Option<String>,
}

/// What a requeue did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequeueOutcome {
    /// Whether anything was changed.
    pub executed: bool,
    /// Whether the documents were re-rendered.
    pub re_rendered: bool,
    /// Postings requeued (or that would be).
    pub requeued: usize,
    /// Postings left alone, with their reason.
    pub refused: usize,
    /// Per posting.
    pub postings: Vec<RequeueLine>,
}

/// What a resolve did (or would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolveOutcome {
    /// Whether anything was changed.
    pub executed: bool,
    /// Outbox id.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// External id.
    pub external_id: Option<String>,
    /// State before.
    pub status_before: PostingState,
    /// Error class before.
    pub last_error_class: Option<String>,
    /// The ERP document id recorded.
    pub erp_document_id: Option<String>,
    /// Whether the posting is (or would be) resolved.
    pub resolved: bool,
    /// Why not.
    pub refused: Option<String>,
}

const SUMMARY_COLUMNS: &str = "id, tenant_id, status, journal_kind, document_kind, erp_kind,
    erp_account, external_id, attempts, last_error_class, last_error, erp_document_id,
    config_version, created_at, updated_at, next_attempt_at";

fn col<T>(row: &AnyRow, index: usize, name: &str) -> Result<T, ErpError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(index)
        .map_err(|e| ErpError::Corrupt(format!("erp_outbox {name}: {e}")))
}

fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn summary(row: &AnyRow) -> Result<PostingSummary, ErpError> {
    let status: String = col(row, 2, "status")?;
    let last_error: Option<String> = col(row, 10, "last_error")?;
    Ok(PostingSummary {
        id: col(row, 0, "id")?,
        tenant_id: col(row, 1, "tenant_id")?,
        status: PostingState::parse(&status)
            .ok_or_else(|| ErpError::Corrupt(format!("erp_outbox status {status:?}")))?,
        journal_kind: col(row, 3, "journal_kind")?,
        document_kind: col(row, 4, "document_kind")?,
        erp_kind: col(row, 5, "erp_kind")?,
        erp_account: col(row, 6, "erp_account")?,
        external_id: col(row, 7, "external_id")?,
        attempts: col(row, 8, "attempts")?,
        last_error_class: col(row, 9, "last_error_class")?,
        last_error: last_error.map(|e| excerpt(&e, ERROR_EXCERPT)),
        erp_document_id: col(row, 11, "erp_document_id")?,
        config_version: col(row, 12, "config_version")?,
        created_at: col(row, 13, "created_at")?,
        updated_at: col(row, 14, "updated_at")?,
        next_attempt_at: col(row, 15, "next_attempt_at")?,
    })
}

/// Adds the outbox columns a SQLite file written before the adapters lacks.
async fn prepare(pool: &AnyPool, backend: Backend) -> Result<(), ErpError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(ErpError::db("connecting to the erp outbox"))?;
    crate::schema::upgrade_sqlite(&mut conn, backend)
        .await
        .map_err(ErpError::db("upgrading erp_outbox"))
}

/// Postings matching `filter`, oldest first.
pub async fn list_postings(
    pool: &AnyPool,
    backend: Backend,
    filter: &PostingFilter,
) -> Result<Vec<PostingSummary>, ErpError> {
    prepare(pool, backend).await?;
    let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM erp_outbox WHERE 1 = 1");
    let mut params: Vec<String> = Vec::new();
    if let Some(status) = filter.status {
        params.push(status.as_str().to_owned());
        sql.push_str(&format!(" AND status = ${}", params.len()));
    }
    if let Some(tenant) = &filter.tenant {
        params.push(tenant.clone());
        sql.push_str(&format!(" AND tenant_id = ${}", params.len()));
    }
    sql.push_str(" ORDER BY created_at, id");
    if let Some(limit) = filter.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let mut query = sqlx::query(&sql);
    for p in params {
        query = query.bind(p);
    }
    let rows = query
        .fetch_all(pool)
        .await
        .map_err(ErpError::db("listing erp postings"))?;
    rows.iter().map(summary).collect()
}

/// One posting, or none when there is no posting with that id.
pub async fn posting(
    pool: &AnyPool,
    backend: Backend,
    id: &str,
) -> Result<Option<PostingDetail>, ErpError> {
    prepare(pool, backend).await?;
    let row = sqlx::query(&format!(
        "SELECT {SUMMARY_COLUMNS}, journal_id, last_error, last_status, last_request,
                last_response, history, job_ref, indefinite, payload, endpoint, resolved_at,
                resolved_by, resolution
         FROM erp_outbox WHERE id = $1"
    ))
    .bind(id.to_owned())
    .fetch_optional(pool)
    .await
    .map_err(ErpError::db("reading an erp posting"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let history: Option<String> = col(&row, 21, "history")?;
    let payload: String = col(&row, 24, "payload")?;
    let indefinite: i64 = col(&row, 23, "indefinite")?;
    let depends_on = related(
        pool,
        "SELECT d.depends_on, o.status, o.external_id FROM erp_outbox_dependencies d
         LEFT JOIN erp_outbox o ON o.id = d.depends_on WHERE d.outbox_id = $1 ORDER BY d.depends_on",
        id,
    )
    .await?;
    let dependents = related(
        pool,
        "SELECT d.outbox_id, o.status, o.external_id FROM erp_outbox_dependencies d
         LEFT JOIN erp_outbox o ON o.id = d.outbox_id WHERE d.depends_on = $1 ORDER BY d.outbox_id",
        id,
    )
    .await?;
    Ok(Some(PostingDetail {
        summary: summary(&row)?,
        journal_id: col(&row, 16, "journal_id")?,
        last_error_full: col(&row, 17, "last_error")?,
        last_status: col(&row, 18, "last_status")?,
        last_request: col(&row, 19, "last_request")?,
        last_response: col(&row, 20, "last_response")?,
        history: parse_history(history.as_deref()),
        job_ref: col(&row, 22, "job_ref")?,
        indefinite: indefinite != 0,
        // A payload that is not JSON is shown as the text it is.
        document: serde_json::from_str(&payload).unwrap_or(Value::String(payload)),
        endpoint: col(&row, 25, "endpoint")?,
        resolved_at: col(&row, 26, "resolved_at")?,
        resolved_by: col(&row, 27, "resolved_by")?,
        resolution: col(&row, 28, "resolution")?,
        depends_on,
        dependents,
    }))
}

async fn related(pool: &AnyPool, sql: &str, id: &str) -> Result<Vec<Related>, ErpError> {
    let rows = sqlx::query(sql)
        .bind(id.to_owned())
        .fetch_all(pool)
        .await
        .map_err(ErpError::db("reading erp posting dependencies"))?;
    rows.iter()
        .map(|r| {
            Ok(Related {
                id: col(r, 0, "dependency id")?,
                status: col(r, 1, "dependency status")?,
                external_id: col(r, 2, "dependency external_id")?,
            })
        })
        .collect()
}

fn parse_history(history: Option<&str>) -> Vec<Value> {
    history
        .and_then(|h| serde_json::from_str::<Vec<Value>>(h).ok())
        .unwrap_or_default()
}

fn push_history(history: Option<&str>, entry: Value) -> String {
    let mut all = parse_history(history);
    all.push(entry);
    if all.len() > HISTORY_LEN {
        all.drain(..all.len() - HISTORY_LEN);
    }
    Value::Array(all).to_string()
}

/// The columns a requeue or resolve reads.
#[derive(Debug)]
struct Current {
    id: String,
    tenant_id: String,
    status: PostingState,
    attempts: i64,
    last_error_class: Option<String>,
    external_id: Option<String>,
    config_version: Option<String>,
    history: Option<String>,
    payload: String,
    journal_id: String,
    /// Whether the posting has a route (rows from before the adapters have none).
    routed: bool,
    document_kind: Option<String>,
}

const CURRENT_COLUMNS: &str = "id, tenant_id, status, attempts, last_error_class, external_id,
    config_version, history, payload, journal_id, route, document_kind";

fn current(row: &AnyRow) -> Result<Current, ErpError> {
    let status: String = col(row, 2, "status")?;
    Ok(Current {
        id: col(row, 0, "id")?,
        tenant_id: col(row, 1, "tenant_id")?,
        status: PostingState::parse(&status)
            .ok_or_else(|| ErpError::Corrupt(format!("erp_outbox status {status:?}")))?,
        attempts: col(row, 3, "attempts")?,
        last_error_class: col(row, 4, "last_error_class")?,
        external_id: col(row, 5, "external_id")?,
        config_version: col(row, 6, "config_version")?,
        history: col(row, 7, "history")?,
        payload: col(row, 8, "payload")?,
        journal_id: col(row, 9, "journal_id")?,
        routed: col::<Option<String>>(row, 10, "route")?.is_some(),
        document_kind: col(row, 11, "document_kind")?,
    })
}

async fn current_by_id(pool: &AnyPool, id: &str) -> Result<Option<Current>, ErpError> {
    let row = sqlx::query(&format!(
        "SELECT {CURRENT_COLUMNS} FROM erp_outbox WHERE id = $1"
    ))
    .bind(id.to_owned())
    .fetch_optional(pool)
    .await
    .map_err(ErpError::db("reading an erp posting"))?;
    row.as_ref().map(current).transpose()
}

fn not_failed(status: PostingState) -> String {
    format!("the posting is {status}, not failed; only failed postings can be changed")
}

/// A re-rendered posting: what replaces the stored columns.
#[derive(Debug)]
struct Rerendered {
    document: String,
    document_kind: String,
    erp_kind: &'static str,
    erp_account: String,
    endpoint: String,
    credential: String,
    rate: Option<i64>,
    route: String,
    config_version: String,
    depends_on: Vec<String>,
    external_id: String,
    journal_kind: &'static str,
}

/// Requeues failed postings (dry unless `request.acting` is set). See the module docs. None
/// when the selection names a posting that does not exist.
pub async fn requeue(
    pool: &AnyPool,
    backend: Backend,
    request: &RequeueRequest<'_>,
) -> Result<Option<RequeueOutcome>, ErpError> {
    prepare(pool, backend).await?;
    let targets: Vec<Current> = match request.selection {
        RequeueSelection::Id(id) => match current_by_id(pool, id).await? {
            Some(posting) => vec![posting],
            None => return Ok(None),
        },
        RequeueSelection::Failed { tenant } => {
            let mut sql =
                format!("SELECT {CURRENT_COLUMNS} FROM erp_outbox WHERE status = 'failed'");
            if tenant.is_some() {
                sql.push_str(" AND tenant_id = $1");
            }
            sql.push_str(" ORDER BY created_at, id");
            let mut query = sqlx::query(&sql);
            if let Some(t) = tenant {
                query = query.bind(t.clone());
            }
            let rows = query
                .fetch_all(pool)
                .await
                .map_err(ErpError::db("listing failed erp postings"))?;
            rows.iter().map(current).collect::<Result<_, _>>()?
        }
    };
    let mut lines = Vec::with_capacity(targets.len());
    for posting in targets {
        let mut line = RequeueLine {
            id: posting.id.clone(),
            tenant_id: posting.tenant_id.clone(),
            external_id: posting.external_id.clone(),
            status_before: posting.status,
            attempts_before: posting.attempts,
            last_error_class: posting.last_error_class.clone(),
            config_version_before: posting.config_version.clone(),
            config_version_after: posting.config_version.clone(),
            document_changed: None,
            requeued: false,
            refused: None,
        };
        if posting.status != PostingState::Failed {
            line.refused = Some(not_failed(posting.status));
            lines.push(line);
            continue;
        }
        let rerendered = match request.re_render {
            // Nothing deliverable is stored: sending it again would fail the same way, or (no
            // route) it would never be claimed.
            None if !posting.routed => {
                line.refused = Some(
                    "the posting was written before the erp adapters and has no route; \
                     requeue it with --re-render"
                        .into(),
                );
                lines.push(line);
                continue;
            }
            None if posting.document_kind.as_deref() == Some("unrendered") => {
                line.refused = Some(
                    "its document could not be rendered when it was written; fix the tenant's \
                     mapping and requeue it with --re-render"
                        .into(),
                );
                lines.push(line);
                continue;
            }
            None => None,
            Some(tenants) => match rerender(pool, &posting, tenants).await? {
                Ok(r) => {
                    line.config_version_after = Some(r.config_version.clone());
                    line.document_changed = Some(!same_json(&r.document, &posting.payload));
                    Some(r)
                }
                Err(why) => {
                    line.refused = Some(why);
                    lines.push(line);
                    continue;
                }
            },
        };
        match request.acting {
            None => line.requeued = true,
            Some(acting) => {
                let done = apply_requeue(pool, &posting, rerendered.as_ref(), acting).await?;
                if done {
                    line.requeued = true;
                } else {
                    line.refused = Some("the posting changed meanwhile; nothing done".into());
                }
            }
        }
        lines.push(line);
    }
    let requeued = lines.iter().filter(|l| l.requeued).count();
    Ok(Some(RequeueOutcome {
        executed: request.acting.is_some(),
        re_rendered: request.re_render.is_some(),
        requeued,
        refused: lines.len() - requeued,
        postings: lines,
    }))
}

fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

async fn apply_requeue(
    pool: &AnyPool,
    posting: &Current,
    rerendered: Option<&Rerendered>,
    acting: &Acting,
) -> Result<bool, ErpError> {
    let now = now_micros();
    let mut entry = json!({
        "at": now,
        "action": "requeue",
        "operation": acting.operation_id,
        "operator": acting.operator,
        "attempts_before": posting.attempts,
        "class_before": posting.last_error_class,
        "config_version": posting.config_version,
    });
    if let Some(r) = rerendered {
        entry["re_rendered"] = json!(true);
        entry["config_version_before"] = json!(posting.config_version);
        entry["config_version_after"] = json!(r.config_version);
    }
    let history = push_history(posting.history.as_deref(), entry);
    let mut tx = pool
        .begin()
        .await
        .map_err(ErpError::db("beginning an erp posting requeue"))?;
    let result = match rerendered {
        None => sqlx::query(
            "UPDATE erp_outbox SET status = 'pending', attempts = 0, next_attempt_at = $1,
                claim_token = NULL, job_ref = NULL, history = $2, updated_at = $3
             WHERE id = $4 AND status = 'failed'",
        )
        .bind(now)
        .bind(history)
        .bind(now)
        .bind(posting.id.clone())
        .execute(&mut *tx)
        .await
        .map_err(ErpError::db("requeueing an erp posting"))?,
        Some(r) => sqlx::query(
            "UPDATE erp_outbox SET status = 'pending', attempts = 0, next_attempt_at = $1,
                claim_token = NULL, job_ref = NULL, history = $2, updated_at = $3,
                payload = $4, document_kind = $5, erp_kind = $6, erp_account = $7,
                endpoint = $8, credential = $9, rate_limit_per_sec = $10, route = $11,
                config_version = $12, external_id = COALESCE(external_id, $13),
                journal_kind = COALESCE(journal_kind, $14)
             WHERE id = $15 AND status = 'failed'",
        )
        .bind(now)
        .bind(history)
        .bind(now)
        .bind(r.document.clone())
        .bind(r.document_kind.clone())
        .bind(r.erp_kind.to_owned())
        .bind(r.erp_account.clone())
        .bind(r.endpoint.clone())
        .bind(r.credential.clone())
        .bind(r.rate)
        .bind(r.route.clone())
        .bind(r.config_version.clone())
        .bind(r.external_id.clone())
        .bind(r.journal_kind.to_owned())
        .bind(posting.id.clone())
        .execute(&mut *tx)
        .await
        .map_err(ErpError::db("requeueing a re-rendered erp posting"))?,
    };
    if result.rows_affected() == 0 {
        tx.rollback()
            .await
            .map_err(ErpError::db("rolling back an erp posting requeue"))?;
        return Ok(false);
    }
    if let Some(r) = rerendered {
        sqlx::query("DELETE FROM erp_outbox_dependencies WHERE outbox_id = $1")
            .bind(posting.id.clone())
            .execute(&mut *tx)
            .await
            .map_err(ErpError::db("replacing erp posting dependencies"))?;
        for on in &r.depends_on {
            sqlx::query(
                "INSERT INTO erp_outbox_dependencies (outbox_id, depends_on) VALUES ($1, $2)
                 ON CONFLICT (outbox_id, depends_on) DO NOTHING",
            )
            .bind(posting.id.clone())
            .bind(on.clone())
            .execute(&mut *tx)
            .await
            .map_err(ErpError::db("replacing erp posting dependencies"))?;
        }
    }
    tx.commit()
        .await
        .map_err(ErpError::db("committing an erp posting requeue"))?;
    Ok(true)
}

/// Renders the posting's journal again with the tenant's current configuration. The outer
/// error is a database failure; the inner one says why this posting cannot be re-rendered.
async fn rerender(
    pool: &AnyPool,
    posting: &Current,
    tenants: &BTreeMap<String, TenantConfig>,
) -> Result<Result<Rerendered, String>, ErpError> {
    let Some(tenant) = tenants.get(&posting.tenant_id) else {
        return Ok(Err(format!(
            "tenant {} is not in the tenants file",
            posting.tenant_id
        )));
    };
    let Some(route) = ErpRoute::of(tenant) else {
        return Ok(Err(format!(
            "tenant {} has no erp route in the tenants file",
            posting.tenant_id
        )));
    };
    let Some(stored) = load_journal(pool, &posting.journal_id).await? else {
        return Ok(Err(format!("journal {} is not stored", posting.journal_id)));
    };
    let ext = external_id(
        &stored.journal.tenant_id,
        &stored.journal.event_id,
        stored.journal.kind,
    );
    if posting.external_id.as_deref().is_some_and(|e| e != ext) {
        return Ok(Err(format!(
            "the journal's external id {ext} differs from the posting's; not re-rendered"
        )));
    }
    let Some(adapter) = adapters::builtin(route.kind()) else {
        return Ok(Err(format!("no adapter for {}", route.kind())));
    };
    let rendered = adapter.render(&RenderInput {
        journal: &stored.journal,
        route: &route,
        external_id: &ext,
        customer_id: &stored.customer_id,
        invoice: stored.invoice.as_ref(),
    });
    let document = match rendered {
        Ok(Rendered::Document(d)) => d,
        Ok(Rendered::NotPosted { reason }) => {
            return Ok(Err(format!(
                "the current configuration posts nothing for this journal ({reason}); resolve it instead"
            )));
        }
        Err(e) => return Ok(Err(format!("re-rendering failed: {e}"))),
    };
    let target = &route.target;
    Ok(Ok(Rerendered {
        document: document.body.to_string(),
        document_kind: document.kind,
        erp_kind: route.kind().as_str(),
        erp_account: target.account.clone(),
        endpoint: target.base_url.clone(),
        credential: serde_json::to_string(&target.auth)
            .map_err(|e| ErpError::Mapping(format!("serializing the auth references: {e}")))?,
        rate: route.rate_limit_per_sec.map(i64::from),
        route: serde_json::to_string(&route.posting_route())
            .map_err(|e| ErpError::Mapping(format!("serializing the route: {e}")))?,
        config_version: target.config_version.clone(),
        depends_on: document.depends_on,
        journal_kind: stored.journal.kind.as_str(),
        external_id: ext,
    }))
}

/// A stored journal with what its document needs besides.
#[derive(Debug)]
struct StoredJournal {
    journal: JournalEntry,
    customer_id: String,
    invoice: Option<InvoiceRef>,
}

fn document_type(name: &str) -> Option<&'static str> {
    ["invoice", "payment", "credit_memo", "refund"]
        .into_iter()
        .find(|t| *t == name)
}

/// Reads a journal back as the writer rendered it: the entry and its lines, the customer, and
/// the invoice an application, receipt or credit memo refers to (with the event that posted
/// it, when it is posted now).
async fn load_journal(pool: &AnyPool, id: &str) -> Result<Option<StoredJournal>, ErpError> {
    let action = "reading a journal to re-render";
    let Some(row) = sqlx::query(
        "SELECT tenant_id, event_id, kind, currency, posted_at, document_type, document_id, memo
         FROM erp_journal_entries WHERE id = $1",
    )
    .bind(id.to_owned())
    .fetch_optional(pool)
    .await
    .map_err(ErpError::db(action))?
    else {
        return Ok(None);
    };
    let get = |i: usize| -> Result<String, ErpError> {
        row.try_get(i)
            .map_err(|e| ErpError::Corrupt(format!("erp_journal_entries column {i}: {e}")))
    };
    let tenant_id = get(0)?;
    let event_id = EventId::parse(&get(1)?).map_err(ErpError::Corrupt)?;
    let kind_name = get(2)?;
    let kind = JournalKind::parse(&kind_name)
        .ok_or_else(|| ErpError::Corrupt(format!("journal kind {kind_name:?}")))?;
    let currency = Currency::parse(&get(3)?).map_err(ErpError::Corrupt)?;
    let posted_at: i64 = row
        .try_get(4)
        .map_err(|e| ErpError::Corrupt(format!("erp_journal_entries posted_at: {e}")))?;
    let doc_type_name = get(5)?;
    let document_type = document_type(&doc_type_name)
        .ok_or_else(|| ErpError::Corrupt(format!("journal document type {doc_type_name:?}")))?;
    let document_id = get(6)?;
    let memo = get(7)?;
    let uuid = uuid::Uuid::parse_str(id)
        .map_err(|e| ErpError::Corrupt(format!("journal id {id:?}: {e}")))?;
    let lines = sqlx::query(
        "SELECT account, debit_minor, credit_minor FROM erp_journal_lines
         WHERE entry_id = $1 ORDER BY line_no",
    )
    .bind(id.to_owned())
    .fetch_all(pool)
    .await
    .map_err(ErpError::db(action))?
    .iter()
    .map(|l| {
        Ok(JournalLine {
            account: l
                .try_get(0)
                .map_err(|e| ErpError::Corrupt(format!("journal line account: {e}")))?,
            debit_minor: l
                .try_get(1)
                .map_err(|e| ErpError::Corrupt(format!("journal line debit: {e}")))?,
            credit_minor: l
                .try_get(2)
                .map_err(|e| ErpError::Corrupt(format!("journal line credit: {e}")))?,
        })
    })
    .collect::<Result<Vec<_>, ErpError>>()?;

    // The customer, and the invoice the document refers to.
    let (customer_id, invoice_id): (String, Option<String>) = match kind {
        JournalKind::Invoice | JournalKind::CreditMemo | JournalKind::InvoiceVoid => {
            let row = one(
                pool,
                "SELECT customer_id, applies_to FROM erp_ar_documents WHERE journal_id = $1",
                id,
            )
            .await?;
            match row {
                Some(r) => (text(&r, 0)?, opt_text(&r, 1)?),
                None => return Err(ErpError::Corrupt(format!("journal {id} has no document"))),
            }
        }
        JournalKind::Receipt => {
            match one(
                pool,
                "SELECT customer_id, invoice_id FROM erp_payments WHERE journal_id = $1",
                id,
            )
            .await?
            {
                Some(r) => (text(&r, 0)?, Some(text(&r, 1)?)),
                None => return Err(ErpError::Corrupt(format!("journal {id} has no payment"))),
            }
        }
        JournalKind::Refund => {
            match one(
                pool,
                "SELECT d.customer_id, p.invoice_id FROM erp_ar_documents d
                 LEFT JOIN erp_payments p ON p.tenant_id = d.tenant_id
                      AND p.payment_id = d.applies_to
                 WHERE d.journal_id = $1",
                id,
            )
            .await?
            {
                Some(r) => (text(&r, 0)?, opt_text(&r, 1)?),
                None => return Err(ErpError::Corrupt(format!("journal {id} has no refund"))),
            }
        }
        JournalKind::Application => {
            let Some(r) = one(
                pool,
                "SELECT a.invoice_id, d.customer_id FROM erp_applications a
                 LEFT JOIN erp_ar_documents d ON d.tenant_id = a.tenant_id
                      AND d.doc_type = 'invoice' AND d.doc_id = a.invoice_id
                 WHERE a.journal_id = $1",
                id,
            )
            .await?
            else {
                return Err(ErpError::Corrupt(format!(
                    "journal {id} has no application"
                )));
            };
            let invoice = text(&r, 0)?;
            let customer = opt_text(&r, 1)?.ok_or_else(|| {
                ErpError::Corrupt(format!(
                    "the invoice {invoice} of journal {id} is not stored"
                ))
            })?;
            (customer, Some(invoice))
        }
    };
    let invoice = match invoice_id {
        // An invoice journal refers to no other document.
        Some(_) if kind == JournalKind::Invoice => None,
        None => None,
        Some(invoice_id) => {
            let event = sqlx::query(
                "SELECT event_id FROM erp_ar_documents
                 WHERE tenant_id = $1 AND doc_type = 'invoice' AND doc_id = $2",
            )
            .bind(tenant_id.clone())
            .bind(invoice_id.clone())
            .fetch_optional(pool)
            .await
            .map_err(ErpError::db(action))?;
            let event_id = match event {
                Some(r) => EventId::parse(&text(&r, 0)?).ok(),
                None => None,
            };
            Some(InvoiceRef {
                invoice_id,
                event_id,
            })
        }
    };
    Ok(Some(StoredJournal {
        journal: JournalEntry {
            id: uuid,
            tenant_id,
            event_id,
            kind,
            currency,
            posted_at,
            document_type,
            document_id,
            memo,
            lines,
        },
        customer_id,
        invoice,
    }))
}

async fn one(pool: &AnyPool, sql: &str, id: &str) -> Result<Option<AnyRow>, ErpError> {
    sqlx::query(sql)
        .bind(id.to_owned())
        .fetch_optional(pool)
        .await
        .map_err(ErpError::db("reading a journal's document to re-render"))
}

fn text(row: &AnyRow, i: usize) -> Result<String, ErpError> {
    row.try_get(i)
        .map_err(|e| ErpError::Corrupt(format!("column {i}: {e}")))
}

fn opt_text(row: &AnyRow, i: usize) -> Result<Option<String>, ErpError> {
    row.try_get(i)
        .map_err(|e| ErpError::Corrupt(format!("column {i}: {e}")))
}

/// Marks a failed posting resolved (dry unless `acting` is set): the reason, who and when are
/// kept, and `erp_document_id`, when given, is recorded as the ERP's document. None when
/// there is no posting with that id.
pub async fn resolve(
    pool: &AnyPool,
    backend: Backend,
    id: &str,
    reason: &str,
    erp_document_id: Option<&str>,
    acting: Option<&Acting>,
) -> Result<Option<ResolveOutcome>, ErpError> {
    prepare(pool, backend).await?;
    let Some(posting) = current_by_id(pool, id).await? else {
        return Ok(None);
    };
    let mut outcome = ResolveOutcome {
        executed: acting.is_some(),
        id: posting.id.clone(),
        tenant_id: posting.tenant_id.clone(),
        external_id: posting.external_id.clone(),
        status_before: posting.status,
        last_error_class: posting.last_error_class.clone(),
        erp_document_id: erp_document_id.map(str::to_owned),
        resolved: false,
        refused: None,
    };
    if posting.status != PostingState::Failed {
        outcome.refused = Some(not_failed(posting.status));
        return Ok(Some(outcome));
    }
    let Some(acting) = acting else {
        outcome.resolved = true;
        return Ok(Some(outcome));
    };
    let now = now_micros();
    let history = push_history(
        posting.history.as_deref(),
        json!({
            "at": now,
            "action": "resolve",
            "operation": acting.operation_id,
            "operator": acting.operator,
            "reason": reason,
            "class_before": posting.last_error_class,
            "erp_document_id": erp_document_id,
        }),
    );
    let result = sqlx::query(
        "UPDATE erp_outbox SET status = 'resolved', resolved_at = $1, resolved_by = $2,
            resolution = $3, erp_document_id = COALESCE($4, erp_document_id), history = $5,
            updated_at = $6, claim_token = NULL
         WHERE id = $7 AND status = 'failed'",
    )
    .bind(now)
    .bind(acting.operator.clone())
    .bind(reason.to_owned())
    .bind(erp_document_id.map(str::to_owned))
    .bind(history)
    .bind(now)
    .bind(posting.id.clone())
    .execute(pool)
    .await
    .map_err(ErpError::db("resolving an erp posting"))?;
    if result.rows_affected() == 0 {
        outcome.refused = Some("the posting changed meanwhile; nothing done".into());
    } else {
        outcome.resolved = true;
    }
    Ok(Some(outcome))
}

/// Retention: the delivery-attempt log of final postings. `erp_outbox` is the source of truth
/// of a posting (its external id is unique, its document id is what reconcile matches), so no
/// row is ever deleted; what goes is the attempt log it carries (`history`, `last_request`,
/// `last_response`) once the posting is confirmed or resolved (neither is ever requeued) before
/// `before` (micros). Pending and failed postings keep everything.
const PRUNABLE_ATTEMPT_LOGS: &str = "SELECT id FROM erp_outbox \
     WHERE status IN ('confirmed', 'resolved') \
     AND (CASE WHEN status = 'confirmed' THEN confirmed_at ELSE resolved_at END) < $1 \
     AND (history IS NOT NULL OR last_request IS NOT NULL OR last_response IS NOT NULL)";

/// How many postings' attempt logs [`prune_attempt_logs`] would clear.
pub async fn prunable_attempt_logs(pool: &AnyPool, before: i64) -> Result<u64, ErpError> {
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM ({PRUNABLE_ATTEMPT_LOGS}) AS x"
    ))
    .bind(before)
    .fetch_one(pool)
    .await
    .map_err(ErpError::db("counting prunable attempt logs"))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Clears the attempt logs of at most `batch` final postings finished before `before`;
/// returns how many postings were cleared.
pub async fn prune_attempt_logs(pool: &AnyPool, before: i64, batch: i64) -> Result<u64, ErpError> {
    let done = sqlx::query(&format!(
        "UPDATE erp_outbox SET history = NULL, last_request = NULL, last_response = NULL \
         WHERE id IN ({PRUNABLE_ATTEMPT_LOGS} LIMIT $2)"
    ))
    .bind(before)
    .bind(batch)
    .execute(pool)
    .await
    .map_err(ErpError::db("pruning attempt logs"))?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_last_entries() {
        let mut h: Option<String> = None;
        for i in 0..25 {
            h = Some(push_history(h.as_deref(), json!({ "n": i })));
        }
        let all = parse_history(h.as_deref());
        assert_eq!(all.len(), HISTORY_LEN);
        assert_eq!(all[0]["n"], 5);
        assert_eq!(all[HISTORY_LEN - 1]["n"], 24);
        assert!(parse_history(Some("not json")).is_empty());
    }

    #[test]
    fn excerpts_cut_on_characters() {
        assert_eq!(excerpt("abc", 5), "abc");
        assert_eq!(excerpt("äöüäöü", 3), "äöü…");
    }

    #[test]
    fn documents_compare_as_json() {
        assert!(same_json(r#"{"a":1,"b":2}"#, r#"{"b":2, "a":1}"#));
        assert!(!same_json(r#"{"a":1}"#, r#"{"a":2}"#));
    }
}
