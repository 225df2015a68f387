//! The Confluent error replies.
//!
//! Every way a request can be refused, with the HTTP status, the Confluent `error_code` and the
//! message text Confluent uses (capitalised, sometimes with a trailing period, because clients
//! and people grep for them). A store failure is the only variant that is the registry's fault;
//! it is logged with its source chain and answered with 50001.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use ledgerflow_core::error_chain;

use crate::RegistryError;
use crate::reply::confluent_json;

/// A Confluent error reply.
#[derive(Debug)]
pub(crate) enum Rejection {
    SubjectNotFound(String),
    VersionNotFound(i64),
    SchemaNotFound(Option<i64>),
    SubjectSoftDeleted(String),
    SubjectNotSoftDeleted(String),
    VersionSoftDeleted {
        subject: String,
        version: i64,
    },
    VersionNotSoftDeleted {
        subject: String,
        version: i64,
    },
    SubjectLevelCompatibilityNotConfigured(String),
    /// The candidate breaks the subject's compatibility level; `details` are the checker's
    /// messages.
    Incompatible {
        subject: String,
        details: Vec<String>,
    },
    InvalidSchema(String),
    InvalidVersion(String),
    InvalidCompatibilityLevel,
    /// The body is not the JSON object the endpoint expects.
    MalformedRequest(String),
    /// No route matches (Confluent answers these with a JSON body too).
    RouteNotFound,
    MethodNotAllowed,
    Store(RegistryError),
}

impl Rejection {
    fn status(&self) -> StatusCode {
        match self {
            Self::SubjectNotFound(_)
            | Self::VersionNotFound(_)
            | Self::SchemaNotFound(_)
            | Self::SubjectSoftDeleted(_)
            | Self::SubjectNotSoftDeleted(_)
            | Self::VersionSoftDeleted { .. }
            | Self::VersionNotSoftDeleted { .. }
            | Self::SubjectLevelCompatibilityNotConfigured(_)
            | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::Incompatible { .. } => StatusCode::CONFLICT,
            Self::InvalidSchema(_) | Self::InvalidVersion(_) | Self::InvalidCompatibilityLevel => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::MalformedRequest(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Confluent's `error_code`.
    pub(crate) fn error_code(&self) -> u32 {
        match self {
            Self::SubjectNotFound(_) => 40401,
            Self::VersionNotFound(_) => 40402,
            Self::SchemaNotFound(_) => 40403,
            Self::SubjectSoftDeleted(_) => 40404,
            Self::SubjectNotSoftDeleted(_) => 40405,
            Self::VersionSoftDeleted { .. } => 40406,
            Self::VersionNotSoftDeleted { .. } => 40407,
            Self::SubjectLevelCompatibilityNotConfigured(_) => 40408,
            // Confluent registries before 7.x, and the Java client's checks, use the bare HTTP
            // status here; newer servers say 40901. Clients branch on the HTTP status.
            Self::Incompatible { .. } => 409,
            Self::InvalidSchema(_) => 42201,
            Self::InvalidVersion(_) => 42202,
            Self::InvalidCompatibilityLevel => 42203,
            Self::MalformedRequest(_) => 400,
            Self::RouteNotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Store(_) => 50001,
        }
    }

    /// Confluent's message text.
    pub(crate) fn message(&self) -> String {
        match self {
            Self::SubjectNotFound(subject) => format!("Subject '{subject}' not found."),
            Self::VersionNotFound(version) => format!("Version {version} not found."),
            Self::SchemaNotFound(None) => "Schema not found".to_owned(),
            Self::SchemaNotFound(Some(id)) => format!("Schema {id} not found"),
            Self::SubjectSoftDeleted(subject) => format!(
                "Subject '{subject}' was soft deleted.Set permanent=true to delete permanently"
            ),
            Self::SubjectNotSoftDeleted(subject) => format!(
                "Subject '{subject}' was not deleted first before being permanently deleted"
            ),
            Self::VersionSoftDeleted { subject, version } => format!(
                "Subject '{subject}' Version {version} was soft deleted.Set permanent=true to \
                 delete permanently"
            ),
            Self::VersionNotSoftDeleted { subject, version } => format!(
                "Subject '{subject}' Version {version} was not deleted first before being \
                 permanently deleted"
            ),
            Self::SubjectLevelCompatibilityNotConfigured(subject) => {
                format!("Subject '{subject}' does not have subject-level compatibility configured")
            }
            Self::Incompatible { subject, details } => format!(
                "Schema being registered is incompatible with an earlier schema for subject \
                 \"{subject}\", details: [{}]",
                details.join(", ")
            ),
            Self::InvalidSchema(reason) => format!("Invalid schema: {reason}"),
            Self::InvalidVersion(version) => format!(
                "The specified version '{version}' is not a valid version id. Allowed values are \
                 between [1, 2^31-1] and the string \"latest\""
            ),
            Self::InvalidCompatibilityLevel => "Invalid compatibility level. Valid values are \
                                                none, backward, forward, full, \
                                                backward_transitive, forward_transitive, and \
                                                full_transitive"
                .to_owned(),
            Self::MalformedRequest(reason) => format!("Unrecognized request body: {reason}"),
            Self::RouteNotFound => "HTTP 404 Not Found".to_owned(),
            Self::MethodNotAllowed => "HTTP 405 Method Not Allowed".to_owned(),
            Self::Store(_) => "Error in the backend data store".to_owned(),
        }
    }
}

impl From<RegistryError> for Rejection {
    fn from(err: RegistryError) -> Self {
        Self::Store(err)
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        if let Self::Store(err) = &self {
            tracing::error!(error = %error_chain(err), "schema registry request failed");
        }
        let body = serde_json::json!({
            "error_code": self.error_code(),
            "message": self.message(),
        });
        confluent_json(self.status(), &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_follow_confluent() {
        let cases = [
            (
                Rejection::SubjectNotFound("s".into()),
                404,
                40401,
                "Subject 's' not found.",
            ),
            (
                Rejection::VersionNotFound(3),
                404,
                40402,
                "Version 3 not found.",
            ),
            (
                Rejection::SchemaNotFound(None),
                404,
                40403,
                "Schema not found",
            ),
            (
                Rejection::SchemaNotFound(Some(9)),
                404,
                40403,
                "Schema 9 not found",
            ),
            (
                Rejection::SubjectLevelCompatibilityNotConfigured("s".into()),
                404,
                40408,
                "Subject 's' does not have subject-level compatibility configured",
            ),
        ];
        for (rejection, status, code, message) in cases {
            assert_eq!(rejection.status().as_u16(), status);
            assert_eq!(rejection.error_code(), code);
            assert_eq!(rejection.message(), message);
        }
        let incompatible = Rejection::Incompatible {
            subject: "s".into(),
            details: vec!["a".into(), "b".into()],
        };
        assert_eq!(incompatible.status(), StatusCode::CONFLICT);
        assert!(incompatible.message().ends_with("details: [a, b]"));
        assert_eq!(Rejection::InvalidCompatibilityLevel.error_code(), 42203);
    }

    #[test]
    fn the_chain_includes_every_source() {
        let err = RegistryError::Store {
            action: "x",
            source: sqlx::Error::RowNotFound,
        };
        let chain = error_chain(&err);
        assert!(
            chain.starts_with("schema store query failed while x: "),
            "{chain}"
        );
        assert!(chain.len() > "schema store query failed while x: ".len());
    }
}
