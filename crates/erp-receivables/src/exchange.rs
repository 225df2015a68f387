//! The HTTP context of one delivery attempt: every request an adapter makes goes through
//! [`Exchange::call`], which signs it for the route, paces it by the account's rate, counts it
//! in flight on the account, times it, classifies transport failures (and says whether the
//! request may have reached the ERP), and keeps a redacted excerpt of the last request and
//! response for the posting's row.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledgerflow_outbox::{error_chain, excerpt};
use ledgerflow_telemetry as tm;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::adapter::{FailClass, Failed, Problem, Retry, RetryClass};
use crate::auth::{Authenticator, Redactor, SecretSource, Signed};
use crate::limits::AccountLimiter;
use crate::posting::Route;

/// One request an adapter wants sent. `Debug` prints the method and URL only: headers carry
/// credentials once signed.
#[derive(Clone)]
pub struct HttpRequest {
    /// Method.
    pub method: Method,
    /// Absolute URL.
    pub url: String,
    /// Headers (lowercase names).
    pub headers: Vec<(String, String)>,
    /// Body, if any.
    pub body: Option<String>,
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.url)
    }
}

impl HttpRequest {
    /// A request without headers or body.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// `GET url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::GET, url)
    }

    /// `POST url`.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::POST, url)
    }

    /// `PUT url`.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new(Method::PUT, url)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set_header(name, value);
        self
    }

    /// Sets a header, replacing one of the same name.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let name = name.to_ascii_lowercase();
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A JSON body.
    pub fn json(self, body: &Value) -> Self {
        self.body("application/json", body.to_string())
    }

    /// A body with its content type.
    pub fn body(mut self, content_type: &str, body: String) -> Self {
        self.set_header("content-type", content_type);
        self.body = Some(body);
        self
    }
}

/// An ERP's answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body as text.
    pub body: String,
}

impl HttpResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// `Retry-After` in seconds (the HTTP-date form is not used by the ERPs here).
    pub fn retry_after(&self) -> Option<Duration> {
        self.header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The last request and response of an attempt, redacted, for the posting's row.
#[derive(Debug, Clone, Default)]
pub(crate) struct Trail {
    /// `METHOD url body-excerpt`.
    pub(crate) request: Option<String>,
    /// `http STATUS: body-excerpt`, or the transport error.
    pub(crate) response: Option<String>,
    /// The last HTTP status.
    pub(crate) status: Option<u16>,
}

/// The HTTP context of one attempt. See the module docs.
#[derive(Debug)]
pub struct Exchange {
    client: reqwest::Client,
    auth: Arc<Authenticator>,
    route: Route,
    limiter: Arc<AccountLimiter>,
    secrets: SecretSource,
    redactor: Redactor,
    trail: Mutex<Trail>,
}

impl Exchange {
    pub(crate) fn new(
        client: reqwest::Client,
        auth: Arc<Authenticator>,
        route: Route,
        limiter: Arc<AccountLimiter>,
        secrets: SecretSource,
    ) -> Self {
        Self {
            client,
            auth,
            route,
            limiter,
            secrets,
            redactor: Redactor::default(),
            trail: Mutex::new(Trail::default()),
        }
    }

    /// The posting's route.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// `base_url + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.route.base_url())
    }

    /// `text` without any secret or token this attempt has used.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    pub(crate) fn trail(&self) -> Trail {
        self.trail.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Signs and sends `req`. Every answer but 401 is returned for the adapter to classify; a
    /// 401 drops the token (or re-signs) and tries once more, a second 401 is
    /// [`FailClass::Auth`]. Transport failures are [`Problem::Retry`], indefinite when the
    /// request may have been written (a timeout, or a connection lost after connecting) and
    /// it was not a GET.
    pub async fn call(&self, req: HttpRequest) -> Result<HttpResponse, Problem> {
        let mut refused = None;
        for _ in 0..2 {
            let mut signed_req = req.clone();
            let signed = self
                .auth
                .sign(&self.route, &mut signed_req, &self.secrets, &self.redactor)
                .await?;
            let resp = self.transport(&signed_req).await?;
            if resp.status != 401 {
                return Ok(resp);
            }
            if let Signed::Bearer { key, token } = &signed {
                self.auth.invalidate(key, token);
            }
            refused = Some(resp);
        }
        let body = refused.map(|r| excerpt(&r.body)).unwrap_or_default();
        Err(Problem::Failed(Failed::new(
            FailClass::Auth,
            self.redact(&format!(
                "{} account {} refused the credentials: http 401: {body}",
                self.route.kind(),
                self.route.account()
            )),
        )))
    }

    /// The generic reading of a status: 429 throttled (with `Retry-After`), 408 timeout, 5xx
    /// server; `None` for the adapter to decide.
    pub fn problem_for(&self, resp: &HttpResponse) -> Option<Problem> {
        let detail = || self.redact(&format!("http {}: {}", resp.status, excerpt(&resp.body)));
        match resp.status {
            429 => Some(Problem::Retry(
                Retry::new(RetryClass::Throttled, detail()).after(resp.retry_after()),
            )),
            408 => Some(Problem::Retry(Retry::new(RetryClass::Timeout, detail()))),
            500..=599 => Some(Problem::Retry(
                Retry::new(RetryClass::Server, detail()).after(resp.retry_after()),
            )),
            _ => None,
        }
    }

    async fn transport(&self, req: &HttpRequest) -> Result<HttpResponse, Problem> {
        self.limiter.pace().await;
        let erp = self.route.kind().as_str();
        let account = self.route.account().to_owned();
        let in_flight = metrics::gauge!(tm::ERP_IN_FLIGHT, "erp" => erp, "account" => account);
        in_flight.increment(1.0);
        let started = Instant::now();
        let result = self.exchange(req).await;
        in_flight.decrement(1.0);
        metrics::histogram!(tm::ERP_REQUEST_SECONDS, "erp" => erp)
            .record(started.elapsed().as_secs_f64());
        let class = match &result {
            Ok(resp) => match resp.status {
                200..=299 => "2xx",
                429 => "429",
                400..=499 => "4xx",
                500..=599 => "5xx",
                _ => "other",
            },
            Err(Problem::Retry(r)) if r.class == RetryClass::Timeout => "timeout",
            Err(_) => "connection",
        };
        metrics::counter!(tm::ERP_RESPONSES_TOTAL, "erp" => erp, "class" => class).increment(1);
        result
    }

    async fn exchange(&self, req: &HttpRequest) -> Result<HttpResponse, Problem> {
        let body_excerpt = req.body.as_deref().map(excerpt).unwrap_or_default();
        self.note(|t| {
            t.request =
                Some(self.redact(format!("{} {} {body_excerpt}", req.method, req.url).trim_end()));
            t.response = None;
            t.status = None;
        });
        let mut builder = self.client.request(req.method.clone(), &req.url);
        for (name, value) in &req.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let may_have_landed = req.method != Method::GET;
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => return Err(self.transport_error(&e, may_have_landed)),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = match response.text().await {
            Ok(body) => body,
            // The status line arrived: the ERP processed the request; the body is lost.
            Err(e) => {
                let mut retry = self.transport_error(&e, may_have_landed);
                if let Problem::Retry(r) = &mut retry {
                    r.indefinite = may_have_landed;
                }
                return Err(retry);
            }
        };
        self.note(|t| {
            t.response = Some(self.redact(&format!("http {status}: {}", excerpt(&body))));
            t.status = Some(status);
        });
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    fn transport_error(&self, e: &reqwest::Error, may_have_landed: bool) -> Problem {
        let (class, indefinite) = if e.is_timeout() {
            (RetryClass::Timeout, may_have_landed)
        } else if e.is_connect() {
            // Refused or unreachable: nothing was written.
            (RetryClass::Connection, false)
        } else {
            // Reset or closed after the request was (possibly) written.
            (RetryClass::Connection, may_have_landed)
        };
        let detail = self.redact(&format!("{}: {}", class.as_str(), error_chain(e)));
        self.note(|t| t.response = Some(detail.clone()));
        Problem::Retry(Retry {
            class,
            retry_after: None,
            indefinite,
            detail,
        })
    }

    fn note(&self, f: impl FnOnce(&mut Trail)) {
        f(&mut self.trail.lock().unwrap_or_else(|p| p.into_inner()));
    }
}
