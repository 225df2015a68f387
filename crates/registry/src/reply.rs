//! Responses in the Confluent media type, shared by the routes and the error replies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The media type of every response.
pub(crate) const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A JSON response with the Confluent media type.
pub(crate) fn confluent_json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => raw_json(status, bytes),
        Err(err) => {
            // Only possible for a non-string map key, which no response here has.
            tracing::error!(error = %err, "cannot encode a schema registry response");
            raw_json(
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"error_code":50001,"message":"Error in the backend data store"}"#.to_vec(),
            )
        }
    }
}

pub(crate) fn raw_json(status: StatusCode, bytes: impl Into<axum::body::Body>) -> Response {
    let mut response = (status, bytes.into()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}
