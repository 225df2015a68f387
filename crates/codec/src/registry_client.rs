//! A small client for the Confluent Schema Registry REST API: the two calls a consumer and a
//! producer need. Works against ledgerflow's own registry and against Confluent, Apicurio
//! (ccompat) and Karapace.

use std::time::Duration;

use ledgerflow_core::SchemaId;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::CodecError;

/// Content type the registry protocol defines.
const REGISTRY_CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A schema as the registry returns it by id.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisteredSchema {
    /// Schema text.
    pub schema: String,
    /// `AVRO` when absent, as Confluent omits it for Avro.
    #[serde(rename = "schemaType")]
    pub schema_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RegisterResponse {
    id: u32,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error_code: i64,
}

/// How the client authenticates to the registry (Confluent's `basic.auth.user.info` and
/// `bearer.auth.token`). The secret never appears in `Debug` output or errors.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// A bearer token (OAuth access token or API key).
    Bearer {
        /// The token.
        token: String,
    },
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Self::Bearer { .. } => f
                .debug_struct("Bearer")
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

/// Environment variables that carry registry credentials, by value or by file.
pub mod auth_vars {
    /// `user:password` for basic authentication.
    pub const USER_INFO: &str = "LEDGERFLOW_SCHEMA_REGISTRY_USER_INFO";
    /// A file holding `user:password`.
    pub const USER_INFO_FILE: &str = "LEDGERFLOW_SCHEMA_REGISTRY_USER_INFO_FILE";
    /// A bearer token.
    pub const BEARER_TOKEN: &str = "LEDGERFLOW_SCHEMA_REGISTRY_BEARER_TOKEN";
    /// A file holding a bearer token.
    pub const BEARER_TOKEN_FILE: &str = "LEDGERFLOW_SCHEMA_REGISTRY_BEARER_TOKEN_FILE";
}

impl RegistryAuth {
    /// The credentials named by the environment (looked up through `get`, so callers pass the
    /// process environment or an explicit map): basic from `..._USER_INFO` or
    /// `..._USER_INFO_FILE`, bearer from `..._BEARER_TOKEN` or `..._BEARER_TOKEN_FILE`; files
    /// are read now, trailing newline trimmed. `None` when none is set; an error when both
    /// kinds are, or a value is malformed (the message never contains the secret).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let read = |value: &str, file: &str| -> Result<Option<String>, String> {
            match (get(value), get(file)) {
                (Some(_), Some(_)) => Err(format!("set {value} or {file}, not both")),
                (Some(v), None) => Ok(Some(v)),
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_owned()))
                    .map_err(|e| format!("{file}: reading {path}: {e}")),
                (None, None) => Ok(None),
            }
        };
        let basic = read(auth_vars::USER_INFO, auth_vars::USER_INFO_FILE)?;
        let bearer = read(auth_vars::BEARER_TOKEN, auth_vars::BEARER_TOKEN_FILE)?;
        match (basic, bearer) {
            (Some(_), Some(_)) => Err("registry credentials: basic and bearer are both set".into()),
            (Some(info), None) => {
                let (username, password) = info
                    .split_once(':')
                    .ok_or_else(|| format!("{} must be user:password", auth_vars::USER_INFO))?;
                Ok(Some(Self::Basic {
                    username: username.to_owned(),
                    password: password.to_owned(),
                }))
            }
            (None, Some(token)) if token.trim().is_empty() => {
                Err("registry bearer token is empty".into())
            }
            (None, Some(token)) => Ok(Some(Self::Bearer { token })),
            (None, None) => Ok(None),
        }
    }

    fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::Basic { username, password } => request.basic_auth(username, Some(password)),
            Self::Bearer { token } => request.bearer_auth(token),
        }
    }
}

/// Registry client. Cheap to clone (the HTTP pool is shared).
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: Url,
    http: reqwest::Client,
    auth: Option<RegistryAuth>,
}

impl RegistryClient {
    /// A client for the registry at `base_url` (e.g. `http://127.0.0.1:8081`).
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, String> {
        let mut base =
            Url::parse(base_url).map_err(|e| format!("registry url {base_url:?}: {e}"))?;
        if base.cannot_be_a_base() {
            return Err(format!("registry url {base_url:?} cannot be a base url"));
        }
        // Keep a trailing slash off so joined paths do not get a double one.
        let trimmed = base.path().trim_end_matches('/').to_owned();
        base.set_path(&trimmed);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Self {
            base,
            http,
            auth: None,
        })
    }

    /// The same client, authenticating every request with `auth` (`None`: anonymous).
    pub fn with_auth(mut self, auth: Option<RegistryAuth>) -> Self {
        self.auth = auth;
        self
    }

    fn request(&self, method: reqwest::Method, url: &Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url.clone());
        match &self.auth {
            Some(auth) => auth.apply(request),
            None => request,
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    /// `GET /schemas/ids/{id}`. A 404 (40403) is [`CodecError::UnknownSchemaId`]; transport
    /// failures and 5xx are retryable errors.
    pub async fn schema_by_id(&self, id: SchemaId) -> Result<RegisteredSchema, CodecError> {
        let url = self.url(&["schemas", "ids", &id.0.to_string()]);
        let (status, body) = send(self.request(reqwest::Method::GET, &url), &url).await?;
        if status == StatusCode::NOT_FOUND {
            let code = serde_json::from_str::<ErrorBody>(&body)
                .map(|b| b.error_code)
                .ok();
            // 40403 is "schema not found"; a bare 404 without a Confluent body is most likely a
            // wrong base URL, which must not dead-letter every record.
            if code == Some(40403) {
                return Err(CodecError::UnknownSchemaId { id });
            }
        }
        if !status.is_success() {
            return Err(CodecError::RegistryStatus {
                status: status.as_u16(),
                url: url.to_string(),
                body: truncate(&body),
            });
        }
        serde_json::from_str(&body).map_err(|e| CodecError::RegistryStatus {
            status: status.as_u16(),
            url: url.to_string(),
            body: format!("unreadable response ({e}): {}", truncate(&body)),
        })
    }

    /// `POST /subjects/{subject}/versions`: registers (or finds) a schema and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<SchemaId, CodecError> {
        let url = self.url(&["subjects", subject, "versions"]);
        let request = self
            .request(reqwest::Method::POST, &url)
            .header(reqwest::header::CONTENT_TYPE, REGISTRY_CONTENT_TYPE)
            .body(serde_json::json!({ "schema": schema }).to_string());
        let (status, body) = send(request, &url).await?;
        if !status.is_success() {
            return Err(CodecError::RegistryStatus {
                status: status.as_u16(),
                url: url.to_string(),
                body: truncate(&body),
            });
        }
        let parsed: RegisterResponse =
            serde_json::from_str(&body).map_err(|e| CodecError::RegistryStatus {
                status: status.as_u16(),
                url: url.to_string(),
                body: format!("unreadable response ({e}): {}", truncate(&body)),
            })?;
        Ok(SchemaId(parsed.id))
    }
}

/// Sends a request and reads the whole body; transport failures are retryable.
async fn send(
    request: reqwest::RequestBuilder,
    url: &Url,
) -> Result<(StatusCode, String), CodecError> {
    let unavailable = |source| CodecError::RegistryUnavailable {
        url: url.to_string(),
        source,
    };
    let response = request
        .header(reqwest::header::ACCEPT, REGISTRY_CONTENT_TYPE)
        .send()
        .await
        .map_err(unavailable)?;
    let status = response.status();
    let body = response.text().await.map_err(unavailable)?;
    Ok((status, body))
}

fn truncate(body: &str) -> String {
    const MAX: usize = 512;
    if body.len() <= MAX {
        return body.to_owned();
    }
    let mut end = MAX;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &body[..end])
}
