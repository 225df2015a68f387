//! Authentication in front of every route: HTTP basic (users and passwords) and bearer tokens,
//! as Confluent's clients send them (`basic.auth.user.info`, `bearer.auth.token`). Off when no
//! credential is configured. A refused request gets Confluent's 401 body (`error_code` 40101)
//! and a `WWW-Authenticate` challenge; the presented secret is never logged or echoed.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::RegistryError;

/// Who may call the registry.
#[derive(Clone, Default)]
pub struct Credentials {
    basic: Vec<(String, String)>,
    bearer: Vec<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "users",
                &self.basic.iter().map(|(u, _)| u).collect::<Vec<_>>(),
            )
            .field("bearer_tokens", &self.bearer.len())
            .finish()
    }
}

impl Credentials {
    /// Nobody needs to authenticate.
    pub fn none() -> Self {
        Self::default()
    }

    /// Users (`user:password` per line) and bearer tokens (one per line) from files; blank
    /// lines and lines starting with `#` are skipped.
    pub fn from_files(basic: Option<&Path>, bearer: Option<&Path>) -> Result<Self, RegistryError> {
        let lines = |path: &Path| -> Result<Vec<String>, RegistryError> {
            let text =
                std::fs::read_to_string(path).map_err(|source| RegistryError::Credentials {
                    path: path.display().to_string(),
                    reason: source.to_string(),
                })?;
            Ok(text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect())
        };
        let mut out = Self::default();
        if let Some(path) = basic {
            for (n, line) in lines(path)?.into_iter().enumerate() {
                let (user, password) =
                    line.split_once(':')
                        .ok_or_else(|| RegistryError::Credentials {
                            path: path.display().to_string(),
                            reason: format!("line {} is not user:password", n + 1),
                        })?;
                out.basic.push((user.to_owned(), password.to_owned()));
            }
        }
        if let Some(path) = bearer {
            out.bearer = lines(path)?;
        }
        Ok(out)
    }

    /// A credential set from values (tests, embedding).
    pub fn new(basic: Vec<(String, String)>, bearer: Vec<String>) -> Self {
        Self { basic, bearer }
    }

    /// Whether anything is required.
    pub fn is_enabled(&self) -> bool {
        !self.basic.is_empty() || !self.bearer.is_empty()
    }

    /// Whether an `Authorization` header value is accepted.
    fn accepts(&self, authorization: &str) -> bool {
        let (scheme, rest) = authorization.split_once(' ').unwrap_or((authorization, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                return false;
            };
            let Some((user, password)) = std::str::from_utf8(&decoded)
                .ok()
                .and_then(|s| s.split_once(':'))
            else {
                return false;
            };
            // Every entry is compared, so the time taken does not say which user exists.
            self.basic.iter().fold(false, |ok, (u, p)| {
                ok | (constant_time_eq(u.as_bytes(), user.as_bytes())
                    & constant_time_eq(p.as_bytes(), password.as_bytes()))
            })
        } else if scheme.eq_ignore_ascii_case("bearer") {
            self.bearer.iter().fold(false, |ok, t| {
                ok | constant_time_eq(t.as_bytes(), rest.as_bytes())
            })
        } else {
            false
        }
    }
}

/// Equal in time independent of where the first difference is (lengths are not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: passes authenticated requests on, answers 401 to the rest.
pub(crate) async fn require(
    State(credentials): State<Arc<Credentials>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if presented.is_some_and(|a| credentials.accepts(a)) {
        return next.run(request).await;
    }
    tracing::debug!(
        path = request.uri().path(),
        presented = presented.is_some(),
        "registry request refused: not authenticated"
    );
    let mut response = (
        StatusCode::UNAUTHORIZED,
        [(
            header::CONTENT_TYPE,
            "application/vnd.schemaregistry.v1+json",
        )],
        r#"{"error_code":40101,"message":"Unauthorized"}"#,
    )
        .into_response();
    let challenge = if credentials.basic.is_empty() {
        "Bearer realm=\"schema-registry\""
    } else {
        "Basic realm=\"schema-registry\""
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn accepts_only_configured_users_and_tokens() {
        let c = Credentials::new(
            vec![("alice".into(), "s3cret:with:colons".into())],
            vec!["tok-1".into()],
        );
        assert!(c.accepts(&basic("alice", "s3cret:with:colons")));
        assert!(!c.accepts(&basic("alice", "wrong")));
        assert!(!c.accepts(&basic("bob", "s3cret:with:colons")));
        assert!(c.accepts("Bearer tok-1"));
        assert!(c.accepts("bearer tok-1"));
        assert!(!c.accepts("Bearer tok-2"));
        assert!(!c.accepts("Basic !!!not-base64"));
        assert!(!c.accepts("Digest x"));
        assert!(!c.accepts(""));
    }

    #[test]
    fn debug_shows_no_secret() {
        let c = Credentials::new(
            vec![("alice".into(), "pw-123".into())],
            vec!["tok-9".into()],
        );
        let text = format!("{c:?}");
        assert!(text.contains("alice"));
        assert!(
            !text.contains("pw-123") && !text.contains("tok-9"),
            "{text}"
        );
    }
}
