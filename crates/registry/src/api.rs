//! The Confluent REST surface: routes, request parsing, response encoding.
//!
//! Request bodies are read as bytes and decoded with serde_json whatever the content type:
//! Confluent clients send `application/vnd.schemaregistry.v1+json`,
//! `application/vnd.schemaregistry+json`, `application/json`, `application/octet-stream` or
//! nothing, and axum's `Json` extractor would refuse most of those. Every response, errors
//! included, is `application/vnd.schemaregistry.v1+json`.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::registry::{RegistryState, SchemaRequest, VersionSpec};
use crate::rejection::Rejection;
use crate::reply::{confluent_json, raw_json};

type Reply = Result<Response, Rejection>;
type Params = Query<HashMap<String, String>>;

/// Every route of the registry.
pub(crate) fn router(state: RegistryState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(schema_versions))
        .route("/schemas/ids/{id}/subjects", get(schema_subjects))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version_schema),
        )
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(test_against_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(test_against_version),
        )
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

fn ok<T: Serialize + ?Sized>(body: &T) -> Reply {
    Ok(confluent_json(StatusCode::OK, body))
}

/// Decodes a request body whatever its content type.
fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, Rejection> {
    serde_json::from_slice(body).map_err(|err| Rejection::MalformedRequest(err.to_string()))
}

/// A boolean query parameter, read the way JAX-RS does: `true` in any case, anything else false.
fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

/// Schema ids are integers; anything else is not a route (Confluent answers 404 too).
fn schema_id(text: &str) -> Result<i64, Rejection> {
    text.parse().map_err(|_| Rejection::RouteNotFound)
}

async fn root() -> Reply {
    ok(&json!({}))
}

async fn schema_types() -> Reply {
    ok(&["AVRO"])
}

async fn schema_by_id(State(state): State<RegistryState>, Path(id): Path<String>) -> Reply {
    // `subject` and `format` query parameters are accepted and ignored: ids are global and
    // Avro has one format.
    let text = state.schema_by_id(schema_id(&id)?).await?;
    ok(&json!({ "schema": &*text }))
}

async fn raw_schema_by_id(State(state): State<RegistryState>, Path(id): Path<String>) -> Reply {
    let text = state.schema_by_id(schema_id(&id)?).await?;
    Ok(raw_json(StatusCode::OK, text.to_string()))
}

#[derive(Debug, Serialize)]
struct SubjectAndVersion {
    subject: String,
    version: i64,
}

async fn schema_versions(
    State(state): State<RegistryState>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Reply {
    let usages = state
        .schema_usages(schema_id(&id)?, flag(&params, "deleted"))
        .await?;
    let body: Vec<SubjectAndVersion> = usages
        .into_iter()
        .map(|(subject, version)| SubjectAndVersion { subject, version })
        .collect();
    ok(&body)
}

async fn schema_subjects(
    State(state): State<RegistryState>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Reply {
    let usages = state
        .schema_usages(schema_id(&id)?, flag(&params, "deleted"))
        .await?;
    let mut subjects: Vec<String> = usages.into_iter().map(|(subject, _)| subject).collect();
    subjects.dedup();
    ok(&subjects)
}

async fn list_subjects(State(state): State<RegistryState>, Query(params): Params) -> Reply {
    let mut subjects = state.subjects(flag(&params, "deleted")).await?;
    // ":*:" is Confluent's "every context" default; contexts are not supported, so it and an
    // empty prefix mean no filter.
    if let Some(prefix) = params
        .get("subjectPrefix")
        .filter(|p| !p.is_empty() && *p != ":*:")
    {
        subjects.retain(|subject| subject.starts_with(prefix.as_str()));
    }
    ok(&subjects)
}

async fn register(
    State(state): State<RegistryState>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Reply {
    // `normalize` is accepted and ignored: every schema is stored in its compact form anyway.
    let request: SchemaRequest = decode(&body)?;
    let id = state.register(&subject, &request).await?;
    ok(&json!({ "id": id }))
}

async fn lookup(
    State(state): State<RegistryState>,
    Path(subject): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Reply {
    let request: SchemaRequest = decode(&body)?;
    let found = state
        .lookup(&subject, &request, flag(&params, "deleted"))
        .await?;
    ok(&found)
}

async fn list_versions(
    State(state): State<RegistryState>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Reply {
    ok(&state.versions(&subject, flag(&params, "deleted")).await?)
}

async fn get_version(
    State(state): State<RegistryState>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Reply {
    let spec = VersionSpec::parse(&version)?;
    ok(&state
        .version(&subject, spec, flag(&params, "deleted"))
        .await?)
}

async fn raw_version_schema(
    State(state): State<RegistryState>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Reply {
    let spec = VersionSpec::parse(&version)?;
    let found = state
        .version(&subject, spec, flag(&params, "deleted"))
        .await?;
    Ok(raw_json(StatusCode::OK, found.schema))
}

async fn delete_subject(
    State(state): State<RegistryState>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Reply {
    ok(&state
        .delete_subject(&subject, flag(&params, "permanent"))
        .await?)
}

async fn delete_version(
    State(state): State<RegistryState>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Reply {
    let spec = VersionSpec::parse(&version)?;
    ok(&state
        .delete_version(&subject, spec, flag(&params, "permanent"))
        .await?)
}

/// PUT /config bodies; Confluent reads `compatibility`, some tools send `compatibilityLevel`.
#[derive(Debug, serde::Deserialize)]
struct ConfigUpdate {
    #[serde(default, alias = "compatibilityLevel")]
    compatibility: Option<String>,
}

async fn get_global_config(State(state): State<RegistryState>) -> Reply {
    let level = state.global_level().await?;
    ok(&json!({ "compatibilityLevel": level.as_str() }))
}

async fn put_global_config(State(state): State<RegistryState>, body: Bytes) -> Reply {
    let update: ConfigUpdate = decode(&body)?;
    let level = state
        .set_level(None, update.compatibility.as_deref())
        .await?;
    ok(&json!({ "compatibility": level.as_str() }))
}

async fn get_subject_config(
    State(state): State<RegistryState>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Reply {
    let level = state
        .subject_level(&subject, flag(&params, "defaultToGlobal"))
        .await?;
    ok(&json!({ "compatibilityLevel": level.as_str() }))
}

async fn put_subject_config(
    State(state): State<RegistryState>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Reply {
    let update: ConfigUpdate = decode(&body)?;
    let level = state
        .set_level(Some(&subject), update.compatibility.as_deref())
        .await?;
    ok(&json!({ "compatibility": level.as_str() }))
}

async fn delete_subject_config(
    State(state): State<RegistryState>,
    Path(subject): Path<String>,
) -> Reply {
    let previous = state.delete_subject_level(&subject).await?;
    ok(&json!({ "compatibilityLevel": previous.as_str() }))
}

async fn test_against_version(
    State(state): State<RegistryState>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
    body: Bytes,
) -> Reply {
    let spec = VersionSpec::parse(&version)?;
    compatibility_reply(&state, &subject, Some(spec), &params, &body).await
}

async fn test_against_all(
    State(state): State<RegistryState>,
    Path(subject): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Reply {
    compatibility_reply(&state, &subject, None, &params, &body).await
}

async fn compatibility_reply(
    state: &RegistryState,
    subject: &str,
    spec: Option<VersionSpec>,
    params: &HashMap<String, String>,
    body: &Bytes,
) -> Reply {
    let request: SchemaRequest = decode(body)?;
    let verdict = state.test_compatibility(subject, spec, &request).await?;
    if flag(params, "verbose") {
        ok(&json!({ "is_compatible": verdict.is_compatible, "messages": verdict.messages }))
    } else {
        ok(&json!({ "is_compatible": verdict.is_compatible }))
    }
}

async fn route_not_found() -> Rejection {
    Rejection::RouteNotFound
}

async fn method_not_allowed() -> Rejection {
    Rejection::MethodNotAllowed
}
