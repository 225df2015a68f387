//! Authentication to the ERPs, per route, by credential *reference*: secrets are read when a
//! request is signed (so a rotated secret is used at once), registered with the attempt's
//! [`Redactor`], and never logged or stored.
//!
//! | method | what is sent |
//! | --- | --- |
//! | `oauth2_client_credentials` | `Authorization: Bearer` from the token endpoint (`grant_type=client_credentials`, client id + secret, scope) |
//! | `netsuite_m2m` | `Authorization: Bearer` from NetSuite's token endpoint, the client authenticated by a JWT assertion signed ES256 or PS256 ([`jwt`]) |
//! | `netsuite_tba` | `Authorization: OAuth realm=..., oauth_signature=...` (OAuth 1.0a, HMAC-SHA256) on every request ([`oauth1`]) |
//! | `basic` | `Authorization: Basic` |
//!
//! Bearer tokens are cached per (token URL, client id, certificate id) in the [`Authenticator`]
//! every dispatcher attempt shares, so all tenants using one client share one token; a token
//! is refreshed before it expires (at `expires_in` minus the smaller of 60 s and a fifth of its
//! life), one fetch at a time per client, and dropped when the ERP refuses it (the request is
//! then signed again once with a fresh token).

pub mod jwt;
pub mod oauth1;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ledgerflow_tenants::{ErpAuth, SecretRef};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::adapter::{FailClass, Failed, Problem, Retry, RetryClass};
use crate::exchange::HttpRequest;
use crate::posting::Route;

/// Secrets shorter than this are not redacted (they would mangle every text they occur in;
/// no real credential is this short).
const MIN_REDACTED_LEN: usize = 4;

/// Longest a token is cached before it is refreshed, whatever `expires_in` says.
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(24 * 3600);

/// RFC 3986 unreserved characters stay, everything else is percent-encoded (OAuth 1.0a, and
/// safe for form bodies).
pub(crate) const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a form or OAuth value.
pub(crate) fn encode(value: &str) -> String {
    utf8_percent_encode(value, ENCODE).to_string()
}

/// The secret values seen during one attempt; [`Redactor::redact`] removes them from any text.
#[derive(Debug, Default)]
pub struct Redactor {
    secrets: Mutex<Vec<String>>,
}

impl Redactor {
    /// Remembers a secret value.
    pub fn add(&self, secret: &str) {
        if secret.len() < MIN_REDACTED_LEN {
            return;
        }
        let mut secrets = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        if !secrets.iter().any(|s| s == secret) {
            secrets.push(secret.to_owned());
            // Longest first, so a secret that contains another is replaced whole.
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// `text` with every remembered secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let secrets = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = text.to_owned();
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

/// Where secrets are read from: the process environment and files, or an explicit
/// environment map (tests, embedding).
#[derive(Debug, Clone, Default)]
pub struct SecretSource {
    env: Option<Arc<BTreeMap<String, String>>>,
}

impl SecretSource {
    /// Environment variables from `env` instead of the process (files are still files).
    pub fn with_env(env: Option<BTreeMap<String, String>>) -> Self {
        Self {
            env: env.map(Arc::new),
        }
    }

    /// Reads a secret and registers it with `redactor`. An unreadable secret is a retry of
    /// class `auth` (a secret mounted late, a variable set on the next deploy) whose detail
    /// names the variable or file, never a value.
    pub fn read(&self, secret: &SecretRef, redactor: &Redactor) -> Result<String, Problem> {
        let env = self.env.as_deref();
        let value = ledgerflow_tenants::read_secret_with_env(secret, |name| match env {
            Some(map) => map.get(name).map(OsString::from),
            None => std::env::var_os(name),
        })
        .map_err(|e| {
            Problem::Retry(Retry::new(
                RetryClass::Auth,
                format!("credential unavailable: {e}"),
            ))
        })?;
        redactor.add(&value);
        Ok(value)
    }
}

/// Identifies one cached token: the token endpoint and the client (and NetSuite certificate).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    token_url: String,
    client_id: String,
    certificate_id: Option<String>,
}

#[derive(Debug, Clone)]
struct CachedToken {
    token: String,
    refresh_at: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

/// How a request was signed, so a refusal can drop the right token.
#[derive(Debug, Clone)]
pub(crate) enum Signed {
    /// A cached bearer token.
    Bearer { key: TokenKey, token: String },
    /// Signed per request (OAuth 1.0a) or with a static credential (basic): nothing to drop.
    PerRequest,
}

/// Signs requests; holds the token cache shared by every attempt of a dispatcher.
#[derive(Debug)]
pub struct Authenticator {
    client: reqwest::Client,
    slots: Mutex<HashMap<TokenKey, Slot>>,
    fetches: AtomicU64,
}

impl Authenticator {
    /// An authenticator whose token requests use `client`.
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            slots: Mutex::new(HashMap::new()),
            fetches: AtomicU64::new(0),
        }
    }

    /// Token requests made so far (all clients).
    pub fn token_requests(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Adds the route's credentials to `req`.
    pub(crate) async fn sign(
        &self,
        route: &Route,
        req: &mut HttpRequest,
        secrets: &SecretSource,
        redactor: &Redactor,
    ) -> Result<Signed, Problem> {
        match &route.target.auth {
            ErpAuth::Basic { user, password } => {
                let password = secrets.read(password, redactor)?;
                let value = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
                redactor.add(&value);
                req.set_header("authorization", value);
                Ok(Signed::PerRequest)
            }
            ErpAuth::NetsuiteTba {
                consumer_key,
                consumer_secret,
                token_id,
                token_secret,
            } => {
                let creds = oauth1::Credentials {
                    consumer_key: secrets.read(consumer_key, redactor)?,
                    consumer_secret: secrets.read(consumer_secret, redactor)?,
                    token_id: secrets.read(token_id, redactor)?,
                    token_secret: secrets.read(token_secret, redactor)?,
                };
                let header = oauth1::authorization(
                    &creds,
                    route.account(),
                    req.method.as_str(),
                    &req.url,
                    &oauth1::fresh_nonce(),
                    oauth1::now_secs(),
                )
                .map_err(|e| Problem::Failed(Failed::new(FailClass::Mapping, e)))?;
                req.set_header("authorization", header);
                Ok(Signed::PerRequest)
            }
            ErpAuth::Oauth2ClientCredentials {
                token_url,
                client_id,
                ..
            } => {
                let key = TokenKey {
                    token_url: token_url.clone(),
                    client_id: client_id.clone(),
                    certificate_id: None,
                };
                self.bearer(key, route, req, secrets, redactor).await
            }
            ErpAuth::NetsuiteM2m {
                client_id,
                certificate_id,
                token_url,
                ..
            } => {
                let url = token_url.clone().unwrap_or_else(|| {
                    format!("{}/services/rest/auth/oauth2/v1/token", route.base_url())
                });
                let key = TokenKey {
                    token_url: url,
                    client_id: client_id.clone(),
                    certificate_id: Some(certificate_id.clone()),
                };
                self.bearer(key, route, req, secrets, redactor).await
            }
        }
    }

    /// Drops `token` from the cache (the ERP refused it); a newer token stays.
    pub(crate) fn invalidate(&self, key: &TokenKey, token: &str) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        if let Some(slot) = slot
            && let Ok(mut cached) = slot.try_lock()
            && cached.as_ref().is_some_and(|c| c.token == token)
        {
            *cached = None;
        }
    }

    async fn bearer(
        &self,
        key: TokenKey,
        route: &Route,
        req: &mut HttpRequest,
        secrets: &SecretSource,
        redactor: &Redactor,
    ) -> Result<Signed, Problem> {
        let slot = Arc::clone(
            self.slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key.clone())
                .or_default(),
        );
        // One fetch at a time per client: the others wait here and take the fresh token.
        let mut cached = slot.lock().await;
        let token = match cached.as_ref() {
            Some(c) if Instant::now() < c.refresh_at => c.token.clone(),
            _ => {
                let fresh = self.fetch(&key, route, secrets, redactor).await?;
                let token = fresh.token.clone();
                *cached = Some(fresh);
                token
            }
        };
        drop(cached);
        redactor.add(&token);
        req.set_header("authorization", format!("Bearer {token}"));
        Ok(Signed::Bearer { key, token })
    }

    async fn fetch(
        &self,
        key: &TokenKey,
        route: &Route,
        secrets: &SecretSource,
        redactor: &Redactor,
    ) -> Result<CachedToken, Problem> {
        let form = match &route.target.auth {
            ErpAuth::Oauth2ClientCredentials {
                client_id,
                client_secret,
                scope,
                ..
            } => {
                let secret = secrets.read(client_secret, redactor)?;
                // An endpoint that echoes the form would echo it encoded.
                redactor.add(&encode(&secret));
                let mut form = format!(
                    "grant_type=client_credentials&client_id={}&client_secret={}",
                    encode(client_id),
                    encode(&secret)
                );
                if let Some(scope) = scope {
                    form.push_str(&format!("&scope={}", encode(scope)));
                }
                form
            }
            ErpAuth::NetsuiteM2m {
                client_id,
                certificate_id,
                private_key,
                algorithm,
                ..
            } => {
                let pem = secrets.read(private_key, redactor)?;
                let assertion = jwt::client_assertion(
                    &pem,
                    *algorithm,
                    client_id,
                    certificate_id,
                    &key.token_url,
                    oauth1::now_secs(),
                )
                .map_err(|e| Problem::Failed(Failed::new(FailClass::Auth, e)))?;
                format!(
                    "grant_type=client_credentials&client_assertion_type={}&client_assertion={}",
                    encode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    encode(&assertion)
                )
            }
            ErpAuth::NetsuiteTba { .. } | ErpAuth::Basic { .. } => {
                return Err(Problem::Failed(Failed::new(
                    FailClass::Mapping,
                    "this auth method has no token endpoint",
                )));
            }
        };
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let response = self
            .client
            .post(&key.token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(form)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return Err(Problem::Retry(Retry::new(
                    RetryClass::Auth,
                    redactor.redact(&format!(
                        "token endpoint {} unreachable: {}",
                        key.token_url,
                        ledgerflow_outbox::error_chain(&e)
                    )),
                )));
            }
        };
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        tracing::debug!(
            token_url = %key.token_url, client_id = %key.client_id, status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64, "erp token request"
        );
        if status.is_success() {
            return parse_token(&body, redactor).ok_or_else(|| {
                Problem::Retry(Retry::new(
                    RetryClass::Auth,
                    format!(
                        "token endpoint {} answered {status} without a usable access_token",
                        key.token_url
                    ),
                ))
            });
        }
        let detail = redactor.redact(&format!(
            "token endpoint {} refused client {}: http {}: {}",
            key.token_url,
            key.client_id,
            status.as_u16(),
            token_error(&body)
        ));
        if matches!(status.as_u16(), 400 | 401 | 403) {
            Err(Problem::Failed(Failed::new(FailClass::Auth, detail)))
        } else {
            Err(Problem::Retry(Retry::new(RetryClass::Auth, detail)))
        }
    }
}

/// `access_token` and `expires_in` (a number, or a string as NetSuite sends it).
fn parse_token(body: &str, redactor: &Redactor) -> Option<CachedToken> {
    let v: Value = serde_json::from_str(body).ok()?;
    let token = v.get("access_token")?.as_str()?.to_owned();
    if token.is_empty() {
        return None;
    }
    redactor.add(&token);
    let ttl = match v.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .map_or(Duration::from_secs(3600), Duration::from_secs)
    .min(MAX_TOKEN_LIFE);
    let margin = (ttl / 5).min(Duration::from_secs(60));
    Some(CachedToken {
        token,
        refresh_at: Instant::now() + ttl - margin,
    })
}

/// The OAuth error of a token response (`error`, `error_description`), or an excerpt.
fn token_error(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) if v.get("error").is_some() => {
            let error = v["error"].as_str().unwrap_or_default();
            match v.get("error_description").and_then(Value::as_str) {
                // Entra's descriptions carry trace and correlation ids on further lines.
                Some(d) => format!("{error}: {}", d.lines().next().unwrap_or_default()),
                None => error.to_owned(),
            }
        }
        _ => ledgerflow_outbox::excerpt(body),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use axum::Router;
    use axum::extract::State;
    use axum::routing::post;
    use ledgerflow_tenants::{AccountLimits, ErpKind, ErpMode, ErpTarget};

    use super::*;

    #[test]
    fn redaction_replaces_every_secret_longest_first() {
        let r = Redactor::default();
        r.add("abc");
        r.add("s3cret");
        r.add("s3cret-long");
        assert_eq!(
            r.redact("x s3cret-long y s3cret abc"),
            "x *** y *** abc",
            "too short to redact safely: abc"
        );
    }

    #[test]
    fn token_responses_parse_numbers_and_strings() {
        let r = Redactor::default();
        let t = parse_token(r#"{"access_token":"tok-1","expires_in":"3600"}"#, &r).unwrap();
        assert_eq!(t.token, "tok-1");
        let left = t.refresh_at - Instant::now();
        assert!(
            left > Duration::from_secs(3530) && left <= Duration::from_secs(3540),
            "{left:?}"
        );
        let t = parse_token(r#"{"access_token":"tok-2","expires_in":10}"#, &r).unwrap();
        assert!(t.refresh_at - Instant::now() <= Duration::from_secs(8));
        assert!(parse_token(r#"{"expires_in":10}"#, &r).is_none());
        assert_eq!(r.redact("tok-1 tok-2"), "*** ***");
        assert_eq!(
            token_error(
                r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret.\r\nTrace ID: x"}"#
            ),
            "invalid_client: AADSTS7000215: Invalid client secret.\r".trim_end()
        );
    }

    fn route(token_url: &str, client: &str, secret_env: &str) -> Route {
        Route {
            target: ErpTarget {
                kind: ErpKind::Dynamics365,
                account: "env1".into(),
                base_url: "http://127.0.0.1:9".into(),
                mode: ErpMode::Journal,
                auth: ErpAuth::Oauth2ClientCredentials {
                    token_url: token_url.into(),
                    client_id: client.into(),
                    client_secret: SecretRef::Env {
                        env: secret_env.into(),
                    },
                    scope: Some("https://env1/.default".into()),
                },
                netsuite: None,
                dynamics365: None,
                s4hana: None,
                oracle_fusion: None,
                limits: None,
                config_version: String::new(),
            },
            limits: AccountLimits::default_for(ErpKind::Dynamics365),
            tenant_rate_per_sec: None,
        }
    }

    #[derive(Default)]
    struct TokenServer {
        requests: AtomicUsize,
        ttl: u64,
    }

    async fn token(
        State(s): State<Arc<TokenServer>>,
        body: String,
    ) -> (axum::http::StatusCode, String) {
        let n = s.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if !body.contains("client_secret=right") {
            return (
                axum::http::StatusCode::UNAUTHORIZED,
                format!(
                    r#"{{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided ({body})."}}"#
                ),
            );
        }
        (
            axum::http::StatusCode::OK,
            format!(
                r#"{{"token_type":"Bearer","expires_in":{},"access_token":"token-{n}"}}"#,
                s.ttl
            ),
        )
    }

    async fn serve(ttl: u64) -> (String, Arc<TokenServer>) {
        let state = Arc::new(TokenServer {
            ttl,
            ..TokenServer::default()
        });
        let app = Router::new()
            .route("/token", post(token))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, state)
    }

    #[tokio::test]
    async fn one_token_per_client_shared_by_tenants_and_refreshed_before_expiry() {
        let (url, server) = serve(2).await;
        let auth = Authenticator::new(reqwest::Client::new());
        let secrets = SecretSource::with_env(Some(BTreeMap::from([
            ("A".to_owned(), "right".to_owned()),
            ("B".to_owned(), "right".to_owned()),
        ])));
        // Two tenants (two routes) of one client, concurrently: one token request.
        let (a, b) = (route(&url, "app-1", "A"), route(&url, "app-1", "B"));
        let sign = |r: Route| {
            let auth = &auth;
            let secrets = &secrets;
            async move {
                let mut req = HttpRequest::get("http://erp/x");
                let redactor = Redactor::default();
                auth.sign(&r, &mut req, secrets, &redactor).await.unwrap();
                req.header("authorization").unwrap().to_owned()
            }
        };
        let (ha, hb) = tokio::join!(sign(a.clone()), sign(b.clone()));
        assert_eq!(ha, "Bearer token-1");
        assert_eq!(ha, hb);
        assert_eq!(server.requests.load(Ordering::SeqCst), 1);
        // Another client id has its own token.
        assert_eq!(sign(route(&url, "app-2", "A")).await, "Bearer token-2");
        // A 2 s token is refreshed 0.4 s before it expires.
        tokio::time::sleep(Duration::from_millis(1700)).await;
        assert_eq!(sign(a.clone()).await, "Bearer token-3");
        // A refused token is dropped and fetched again.
        auth.invalidate(
            &TokenKey {
                token_url: url.clone(),
                client_id: "app-1".into(),
                certificate_id: None,
            },
            "token-3",
        );
        assert_eq!(sign(b).await, "Bearer token-4");
        assert_eq!(auth.token_requests(), 4);
    }

    #[tokio::test]
    async fn a_wrong_secret_fails_with_class_auth_and_is_redacted() {
        let (url, _server) = serve(3600).await;
        let auth = Authenticator::new(reqwest::Client::new());
        let secrets = SecretSource::with_env(Some(BTreeMap::from([(
            "A".to_owned(),
            "wrong-s3cret".to_owned(),
        )])));
        let redactor = Redactor::default();
        let mut req = HttpRequest::get("http://erp/x");
        let err = auth
            .sign(&route(&url, "app-1", "A"), &mut req, &secrets, &redactor)
            .await
            .unwrap_err();
        let Problem::Failed(f) = err else {
            panic!("{err:?}")
        };
        assert_eq!(f.class, FailClass::Auth);
        assert!(f.reason.contains("invalid_client"), "{}", f.reason);
        assert!(f.reason.contains("AADSTS7000215"), "{}", f.reason);
        assert!(!f.reason.contains("wrong-s3cret"), "{}", f.reason);
        // An unreadable secret is a retry that names the variable only.
        let err = auth
            .sign(
                &route(&url, "app-3", "MISSING"),
                &mut req,
                &secrets,
                &redactor,
            )
            .await
            .unwrap_err();
        let Problem::Retry(r) = err else {
            panic!("{err:?}")
        };
        assert_eq!(r.class, RetryClass::Auth);
        assert!(r.detail.contains("MISSING"), "{}", r.detail);
    }

    #[test]
    fn basic_auth_is_a_header_and_is_redacted() {
        let mut r = route("http://t", "c", "A");
        r.target.auth = ErpAuth::Basic {
            user: "COMM".into(),
            password: SecretRef::Env { env: "P".into() },
        };
        let secrets = SecretSource::with_env(Some(BTreeMap::from([(
            "P".to_owned(),
            "pa55word".to_owned(),
        )])));
        let redactor = Redactor::default();
        let auth = Authenticator::new(reqwest::Client::new());
        let mut req = HttpRequest::get("http://erp/x");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(auth.sign(&r, &mut req, &secrets, &redactor))
            .unwrap();
        let header = req.header("authorization").unwrap().to_owned();
        assert_eq!(
            header,
            format!("Basic {}", STANDARD.encode("COMM:pa55word"))
        );
        assert_eq!(redactor.redact(&header), "***");
    }
}
