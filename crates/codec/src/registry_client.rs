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

/// Registry client. Cheap to clone (the HTTP pool is shared).
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: Url,
    http: reqwest::Client,
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
        Ok(Self { base, http })
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
        let (status, body) = send(self.http.get(url.clone()), &url).await?;
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
            .http
            .post(url.clone())
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
