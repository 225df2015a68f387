//! stub
use std::sync::Arc;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use crate::conn::ConnHandle;
use crate::Sim;

pub(crate) async fn handle(
    State(_sim): State<Arc<Sim>>,
    ConnectInfo(_conn): ConnectInfo<ConnHandle>,
    Path(_rest): Path<String>,
    _method: Method,
    _uri: Uri,
    _headers: HeaderMap,
    _body: Bytes,
) -> Response {
    axum::http::StatusCode::NOT_FOUND.into_response()
}
pub(crate) fn process_job(_sim: &Sim, _job: crate::store::Job) -> Result<(), crate::SimError> { Ok(()) }
