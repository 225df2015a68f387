//! ERP postings (`erp_outbox` rows of erp-receivables): list and show them, requeue failed ones
//! (optionally re-rendered with the current tenants file) so the dispatcher delivers them, or
//! mark one resolved after it was fixed by hand in the ERP
//! ([`ledgerflow_erp_receivables::ops`]).
//!
//! Requeue and resolve are dry runs unless executed; an executed one that changed something
//! appends an operation (`erp_requeue`, `erp_resolve`) to erp-receivables' operations chain
//! in the audit log, with the same operation id as the history entry it wrote on each posting.

use std::collections::BTreeMap;
use std::path::Path;

use ledgerflow_erp_receivables::CONSUMER_NAME;
use ledgerflow_erp_receivables::ops::{
    self as erp_ops, Acting, PostingDetail, PostingFilter, PostingSummary, RequeueOutcome,
    RequeueRequest, RequeueSelection, ResolveOutcome,
};
use ledgerflow_store::Store;
use ledgerflow_tenants::{TenantConfig, TenantRegistry};
use serde::Serialize;

use super::{Actor, new_operation_id, record};
use crate::{ConsumerKind, ServiceError};

/// Makes sure the outbox exists (a store where erp-receivables never ran has no postings).
async fn prepare(store: &Store) -> Result<(), ServiceError> {
    store
        .apply_schema(&ConsumerKind::ErpReceivables.schema(store.backend()))
        .await
        .map_err(ServiceError::store("applying the erp-receivables schema"))
}

/// Postings matching `filter`, oldest first.
pub async fn list(
    store: &Store,
    filter: &PostingFilter,
) -> Result<Vec<PostingSummary>, ServiceError> {
    prepare(store).await?;
    erp_ops::list_postings(store.pool(), store.backend(), filter)
        .await
        .map_err(ServiceError::component("listing erp postings"))
}

/// One posting; an unknown id is an error.
pub async fn show(store: &Store, id: &str) -> Result<PostingDetail, ServiceError> {
    prepare(store).await?;
    erp_ops::posting(store.pool(), store.backend(), id)
        .await
        .map_err(ServiceError::component("reading an erp posting"))?
        .ok_or_else(|| ServiceError::Request(format!("no erp posting with id {id}")))
}

/// The tenants of a tenants file, validated as `run` validates them, by tenant id.
pub async fn load_tenants(path: &Path) -> Result<BTreeMap<String, TenantConfig>, ServiceError> {
    let owned = path.to_owned();
    let registry = tokio::task::spawn_blocking(move || TenantRegistry::load(&owned))
        .await
        .map_err(|e| ServiceError::Request(format!("loading the tenants file: {e}")))?
        .map_err(|source| ServiceError::Tenants {
            path: path.to_owned(),
            source,
        })?;
    Ok(registry
        .tenant_ids()
        .into_iter()
        .filter_map(|id| {
            registry
                .get(&id)
                .map(|t| (id.as_str().to_owned(), (*t).clone()))
        })
        .collect())
}

/// What a requeue did (or, dry, would do).
#[derive(Debug, Serialize)]
pub struct RequeueReport {
    /// The audited operation (none for a dry run, or when nothing changed).
    pub operation_id: Option<String>,
    /// Per posting.
    #[serde(flatten)]
    pub outcome: RequeueOutcome,
}

/// Puts failed postings back to `pending` (see [`erp_ops::requeue`]); `re_render` is the
/// current tenants file's tenants. Dry unless `execute`. A named posting that does not exist
/// is an error; one that is not failed is reported as refused.
pub async fn requeue(
    store: &Store,
    selection: &RequeueSelection,
    re_render: Option<&BTreeMap<String, TenantConfig>>,
    execute: bool,
    actor: &Actor,
) -> Result<RequeueReport, ServiceError> {
    prepare(store).await?;
    let acting = execute.then(|| Acting {
        operation_id: new_operation_id(),
        operator: actor.operator.clone(),
    });
    let request = RequeueRequest {
        selection,
        re_render,
        acting: acting.as_ref(),
    };
    let outcome = erp_ops::requeue(store.pool(), store.backend(), &request)
        .await
        .map_err(ServiceError::component("requeueing erp postings"))?
        .ok_or_else(|| match selection {
            RequeueSelection::Id(id) => {
                ServiceError::Request(format!("no erp posting with id {id}"))
            }
            RequeueSelection::Failed { .. } => ServiceError::Request("no erp posting".into()),
        })?;
    let operation_id = match &acting {
        Some(acting) if outcome.requeued > 0 => {
            let postings: Vec<serde_json::Value> = outcome
                .postings
                .iter()
                .filter(|l| l.requeued)
                .map(|l| {
                    serde_json::json!({
                        "id": l.id,
                        "tenant": l.tenant_id,
                        "external_id": l.external_id,
                        "attempts_before": l.attempts_before,
                        "class_before": l.last_error_class,
                        "config_version_before": l.config_version_before,
                        "config_version_after": l.config_version_after,
                    })
                })
                .collect();
            let details = serde_json::json!({
                "selection": selection_json(selection),
                "re_rendered": outcome.re_rendered,
                "requeued": outcome.requeued,
                "refused": outcome.refused,
                "postings": postings,
            });
            record(
                store,
                &acting.operation_id,
                CONSUMER_NAME,
                "erp_requeue",
                actor,
                details,
            )
            .await?;
            Some(acting.operation_id.clone())
        }
        _ => None,
    };
    Ok(RequeueReport {
        operation_id,
        outcome,
    })
}

fn selection_json(selection: &RequeueSelection) -> serde_json::Value {
    match selection {
        RequeueSelection::Id(id) => serde_json::json!({ "id": id }),
        RequeueSelection::Failed { tenant } => {
            serde_json::json!({ "status": "failed", "tenant": tenant })
        }
    }
}

/// What a resolve did (or would do).
#[derive(Debug, Serialize)]
pub struct ResolveReport {
    /// The audited operation (none for a dry run, or when nothing changed).
    pub operation_id: Option<String>,
    /// The posting.
    #[serde(flatten)]
    pub outcome: ResolveOutcome,
}

/// Marks a failed posting resolved, with `actor.reason` as the resolution (see
/// [`erp_ops::resolve`]). Dry unless `execute`. An unknown id is an error; a posting that is
/// not failed is reported as refused.
pub async fn resolve(
    store: &Store,
    id: &str,
    erp_document_id: Option<&str>,
    execute: bool,
    actor: &Actor,
) -> Result<ResolveReport, ServiceError> {
    prepare(store).await?;
    let acting = execute.then(|| Acting {
        operation_id: new_operation_id(),
        operator: actor.operator.clone(),
    });
    let outcome = erp_ops::resolve(
        store.pool(),
        store.backend(),
        id,
        &actor.reason,
        erp_document_id,
        acting.as_ref(),
    )
    .await
    .map_err(ServiceError::component("resolving an erp posting"))?
    .ok_or_else(|| ServiceError::Request(format!("no erp posting with id {id}")))?;
    let operation_id = match &acting {
        Some(acting) if outcome.resolved => {
            let details = serde_json::json!({
                "posting": outcome.id,
                "tenant": outcome.tenant_id,
                "external_id": outcome.external_id,
                "class_before": outcome.last_error_class,
                "erp_document_id": outcome.erp_document_id,
            });
            record(
                store,
                &acting.operation_id,
                CONSUMER_NAME,
                "erp_resolve",
                actor,
                details,
            )
            .await?;
            Some(acting.operation_id.clone())
        }
        _ => None,
    };
    Ok(ResolveReport {
        operation_id,
        outcome,
    })
}
