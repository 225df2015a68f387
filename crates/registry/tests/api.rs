//! The registry over real HTTP, against SQLite and Postgres.
//!
//! Every scenario is written once as `async fn scenario(backend: Backend)` and instantiated per
//! backend by `scenarios!`. Each test gets its own database: a temp-dir SQLite file, or a
//! `registry_test_<uuid>` database on the local Postgres (trust auth) that is dropped when the
//! test ends, even when it fails.

use std::time::Duration;

use ledgerflow_registry::{RegistryConfig, RegistryError, connect, serve};
use ledgerflow_testkit::PgDatabase;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const V1_JSON: &str = "application/vnd.schemaregistry.v1+json";

const INVOICE_V1: &str = include_str!("../../../schemas/v1/invoice_finalized.avsc");
const INVOICE_V2: &str = include_str!("../../../schemas/v2/invoice_finalized.avsc");
const PAYMENT_V1: &str = include_str!("../../../schemas/v1/payment_captured.avsc");
const PAYMENT_V2: &str = include_str!("../../../schemas/v2/payment_captured.avsc");
const INVOICE_SUBJECT: &str = "billing.events-com.ledgerflow.billing.InvoiceFinalized";

/// A record `R` with a required string `a`.
const R_A: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;
/// `R_A` plus a required long `b`: not BACKWARD compatible with `R_A`, FORWARD compatible.
const R_A_B_REQUIRED: &str = r#"{"type":"record","name":"R","fields":[
    {"name":"a","type":"string"},{"name":"b","type":"long"}]}"#;
/// `R_A` plus an optional `b` with a default: compatible with `R_A` in both directions.
const R_A_B_OPTIONAL: &str = r#"{"type":"record","name":"R","fields":[
    {"name":"a","type":"string"},{"name":"b","type":["null","long"],"default":null}]}"#;
/// `R` without fields: BACKWARD compatible with `R_A` (the reader ignores `a`), not FORWARD.
const R_EMPTY: &str = r#"{"type":"record","name":"R","fields":[]}"#;
/// `R` with `a` defaulted.
const R_A_DEFAULT: &str =
    r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string","default":"x"}]}"#;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A database for one test; removed on drop.
#[derive(Debug)]
enum TestDb {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres(PgDatabase),
}

impl TestDb {
    async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("registry.db").display()
                );
                Self::Sqlite { _dir: dir, url }
            }
            // `PgDatabase::create` blocks: run it off the test's runtime. The guard drops the
            // database WITH (FORCE), which also closes the registry's pooled connections.
            Backend::Postgres => Self::Postgres(
                tokio::task::spawn_blocking(|| PgDatabase::create("registry_test"))
                    .await
                    .expect("creating the test database"),
            ),
        }
    }

    fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } => url,
            Self::Postgres(db) => &db.url,
        }
    }
}

/// A registry served on an ephemeral port.
#[derive(Debug)]
struct Server {
    base: String,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RegistryError>>>,
}

/// A response, decoded.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

impl Answer {
    /// Asserts a Confluent error body and returns its message.
    #[track_caller]
    fn error(&self, status: u16, code: u64) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["error_code"].as_u64(), Some(code), "{self:?}");
        assert_eq!(self.content_type, V1_JSON, "{self:?}");
        self.body["message"].as_str().expect("message").to_owned()
    }

    #[track_caller]
    fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.content_type, V1_JSON, "{self:?}");
        &self.body
    }
}

impl Server {
    async fn start(url: &str) -> Self {
        let state = connect(&RegistryConfig {
            database_url: url.to_owned(),
        })
        .await
        .expect("connect registry");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state, async {
            rx.await.ok();
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Self {
            base,
            client,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server and checks it shut down cleanly.
    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).ok();
        }
        let task = self.task.take().expect("running");
        task.await.expect("server task").expect("server result");
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("http request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("non-JSON body {:?}: {e}", String::from_utf8_lossy(&bytes)));
        Answer {
            status,
            content_type,
            body,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, None).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None, None).await
    }

    /// POST/PUT with a JSON body, as the Confluent Java client sends it.
    async fn json(&self, method: Method, path: &str, body: &Value) -> Answer {
        let bytes = serde_json::to_vec(body).expect("encode");
        self.send(method, path, Some(V1_JSON), Some(bytes)).await
    }

    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.json(Method::POST, path, body).await
    }

    async fn put(&self, path: &str, body: &Value) -> Answer {
        self.json(Method::PUT, path, body).await
    }

    async fn register_raw(&self, subject: &str, schema: &str) -> Answer {
        self.post(
            &format!("/subjects/{subject}/versions"),
            &json!({ "schema": schema }),
        )
        .await
    }

    /// Registers and returns the id, failing the test on any error.
    async fn register(&self, subject: &str, schema: &str) -> i64 {
        let answer = self.register_raw(subject, schema).await;
        answer.ok()["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no id in {answer:?}"))
    }

    async fn set_level(&self, subject: &str, level: &str) {
        let answer = self
            .put(
                &format!("/config/{subject}"),
                &json!({ "compatibility": level }),
            )
            .await;
        assert_eq!(answer.ok()["compatibility"], level);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).ok();
        }
    }
}

/// A fresh database and a server on it.
async fn start(backend: Backend) -> (TestDb, Server) {
    let db = TestDb::create(backend).await;
    let server = Server::start(db.url()).await;
    (db, server)
}

/// The same JSON, key order included, with a different layout.
fn relaid_out(schema: &str) -> String {
    let mut out = String::from("\r\n ");
    let mut in_string = false;
    let mut escaped = false;
    for c in schema.chars() {
        out.push(c);
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ',' | ':' | '{' | '[') {
            out.push_str("\n\t  ");
        }
    }
    out.push('\n');
    out
}

/// The same JSON with a different layout and (without serde_json's `preserve_order`) sorted keys.
fn reformatted(schema: &str) -> String {
    let value: Value = serde_json::from_str(schema).expect("json");
    serde_json::to_string_pretty(&value).expect("pretty")
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).expect("json")
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

async fn registration_is_idempotent(backend: Backend) {
    let (_db, reg) = start(backend).await;
    let id = reg.register("s1", R_A).await;
    assert_eq!(id, 1, "ids start at 1");
    assert_eq!(
        reg.register("s1", R_A).await,
        id,
        "same schema, same subject: same id"
    );
    let relaid = relaid_out(R_A);
    assert_ne!(relaid, R_A);
    assert_eq!(json_of(&relaid), json_of(R_A));
    assert_eq!(
        reg.register("s1", &relaid).await,
        id,
        "layout does not matter"
    );
    assert_eq!(
        reg.register("s1", &reformatted(R_A)).await,
        id,
        "nor does key order"
    );
    let normalized = reg
        .post(
            "/subjects/s1/versions?normalize=true",
            &json!({ "schema": R_A, "metadata": null }),
        )
        .await;
    assert_eq!(
        normalized.ok(),
        &json!({ "id": id }),
        "query parameters and extra fields"
    );
    assert_eq!(
        reg.get("/subjects/s1/versions").await.ok(),
        &json!([1]),
        "no new version"
    );

    assert_eq!(
        reg.register("s2", R_A).await,
        id,
        "same schema, other subject: same id"
    );
    assert_eq!(reg.get("/subjects/s2/versions").await.ok(), &json!([1]));
    assert_eq!(
        reg.get(&format!("/schemas/ids/{id}/versions")).await.ok(),
        &json!([{"subject":"s1","version":1},{"subject":"s2","version":1}])
    );
    assert_eq!(
        reg.get(&format!("/schemas/ids/{id}/subjects")).await.ok(),
        &json!(["s1", "s2"])
    );

    let other = reg.register("s1", R_A_B_OPTIONAL).await;
    assert_eq!(other, 2, "a new schema gets the next id");
    assert_eq!(reg.get("/subjects/s1/versions").await.ok(), &json!([1, 2]));
    assert_eq!(reg.get("/subjects").await.ok(), &json!(["s1", "s2"]));
}

async fn versions_lookup_and_schema_reads(backend: Backend) {
    let (_db, reg) = start(backend).await;
    let v1 = reg.register(INVOICE_SUBJECT, INVOICE_V1).await;
    let v2 = reg.register(INVOICE_SUBJECT, INVOICE_V2).await;
    assert_ne!(v1, v2);
    let path = format!("/subjects/{INVOICE_SUBJECT}/versions");
    assert_eq!(reg.get(&path).await.ok(), &json!([1, 2]));

    let answer = reg.get(&format!("{path}/1")).await;
    let first = answer.ok();
    assert_eq!(first["subject"], INVOICE_SUBJECT);
    assert_eq!(first["version"], 1);
    assert_eq!(first["id"], v1);
    assert_eq!(
        json_of(first["schema"].as_str().unwrap()),
        json_of(INVOICE_V1)
    );
    assert!(
        first.get("schemaType").is_none(),
        "AVRO is implied: {first}"
    );

    for latest in ["latest", "-1"] {
        let answer = reg.get(&format!("{path}/{latest}")).await;
        assert_eq!(answer.ok()["version"], 2, "{latest}");
        assert_eq!(answer.ok()["id"], v2, "{latest}");
    }
    let raw = reg.get(&format!("{path}/2/schema")).await;
    assert_eq!(raw.ok(), &json_of(INVOICE_V2));

    // By id: wrapped, raw, and with the ignored query parameters.
    let by_id = reg.get(&format!("/schemas/ids/{v1}")).await;
    assert_eq!(
        json_of(by_id.ok()["schema"].as_str().unwrap()),
        json_of(INVOICE_V1)
    );
    assert!(by_id.ok().get("schemaType").is_none());
    let stored_text = by_id.ok()["schema"].as_str().unwrap().to_owned();
    assert!(!stored_text.contains('\n'), "stored compactly");
    let with_params = reg
        .get(&format!(
            "/schemas/ids/{v1}?subject={INVOICE_SUBJECT}&format=resolved"
        ))
        .await;
    assert_eq!(with_params.ok()["schema"], stored_text.as_str());
    assert_eq!(
        reg.get(&format!("/schemas/ids/{v2}/schema")).await.ok(),
        &json_of(INVOICE_V2)
    );
    assert_eq!(
        reg.get(&format!("/schemas/ids/{v2}/versions")).await.ok(),
        &json!([{"subject": INVOICE_SUBJECT, "version": 2}])
    );

    // Lookup, with a different layout than registered.
    let found = reg
        .post(
            &format!("/subjects/{INVOICE_SUBJECT}"),
            &json!({ "schema": relaid_out(INVOICE_V1) }),
        )
        .await;
    let found_body = found.ok();
    assert_eq!(found_body["subject"], INVOICE_SUBJECT);
    assert_eq!(found_body["version"], 1);
    assert_eq!(found_body["id"], v1);
    assert_eq!(found_body["schema"], stored_text.as_str());
    let missing = reg
        .post(
            &format!("/subjects/{INVOICE_SUBJECT}"),
            &json!({ "schema": R_A }),
        )
        .await;
    assert_eq!(missing.error(404, 40403), "Schema not found");
    let no_subject = reg
        .post("/subjects/nope", &json!({ "schema": INVOICE_V1 }))
        .await;
    assert_eq!(no_subject.error(404, 40401), "Subject 'nope' not found.");

    // Percent-encoded subject names round-trip.
    let odd = reg.register("team%20a%2Fevents-value", R_A).await;
    assert_eq!(odd, reg.register("team%20a%2Fevents-value", R_A).await);
    let subjects = reg.get("/subjects").await;
    assert!(
        subjects
            .ok()
            .as_array()
            .unwrap()
            .contains(&json!("team a/events-value")),
        "{subjects:?}"
    );
    assert_eq!(
        reg.get("/subjects?subjectPrefix=team").await.ok(),
        &json!(["team a/events-value"])
    );
    assert_eq!(reg.get("/schemas/types").await.ok(), &json!(["AVRO"]));
    assert_eq!(reg.get("/").await.ok(), &json!({}));
}

async fn real_schemas_evolve_backward(backend: Backend) {
    let (_db, reg) = start(backend).await;
    let mut ids = Vec::new();
    for entry in
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/v1")).unwrap()
    {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let subject = format!(
            "billing.events-{}",
            path.file_stem().unwrap().to_string_lossy()
        );
        ids.push(reg.register(&subject, &text).await);
    }
    let count = ids.len();
    assert!(count >= 7, "{ids:?}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "every event schema gets its own id");

    // v1 -> v2 added optional fields with defaults: compatible under BACKWARD (the default)
    // and even FULL.
    reg.set_level("billing.events-payment_captured", "FULL")
        .await;
    let v2 = reg
        .register("billing.events-invoice_finalized", INVOICE_V2)
        .await;
    let p2 = reg
        .register("billing.events-payment_captured", PAYMENT_V2)
        .await;
    assert!(v2 > count as i64 && p2 > v2);
    // Under FULL, v1 is compatible with v2 as well: each reads the other's data.
    let back = reg
        .post(
            "/compatibility/subjects/billing.events-payment_captured/versions/latest",
            &json!({ "schema": PAYMENT_V1 }),
        )
        .await;
    assert_eq!(back.ok()["is_compatible"], true);
}

async fn backward_rejects_required_field_and_accepts_optional(backend: Backend) {
    let (_db, reg) = start(backend).await;
    reg.register("orders", R_A).await;
    let rejected = reg.register_raw("orders", R_A_B_REQUIRED).await;
    let message = rejected.error(409, 409);
    assert!(
        message.contains("incompatible with an earlier schema"),
        "{message}"
    );
    assert!(
        message.contains("READER_FIELD_MISSING_DEFAULT_VALUE"),
        "{message}"
    );
    assert!(message.contains("'b'"), "{message}");
    assert!(message.contains("BACKWARD"), "{message}");
    assert_eq!(
        reg.get("/subjects/orders/versions").await.ok(),
        &json!([1]),
        "nothing stored"
    );

    reg.register("orders", R_A_B_OPTIONAL).await;
    assert_eq!(
        reg.get("/subjects/orders/versions").await.ok(),
        &json!([1, 2])
    );
    // Removing a field is backward compatible (new readers ignore it).
    reg.register("orders", R_EMPTY).await;
    assert_eq!(
        reg.get("/subjects/orders/versions").await.ok(),
        &json!([1, 2, 3])
    );
}

async fn forward_and_full(backend: Backend) {
    let (_db, reg) = start(backend).await;
    reg.register("fwd", R_A).await;
    reg.set_level("fwd", "FORWARD").await;
    // Old readers ignore a new field: fine. Dropping `a` (no default in the old reader): not.
    let dropped = reg.register_raw("fwd", R_EMPTY).await;
    assert!(dropped.error(409, 409).contains("FORWARD"));
    reg.register("fwd", R_A_B_REQUIRED).await;
    assert_eq!(reg.get("/subjects/fwd/versions").await.ok(), &json!([1, 2]));

    reg.register("full", R_A).await;
    reg.set_level("full", "FULL").await;
    reg.register_raw("full", R_A_B_REQUIRED)
        .await
        .error(409, 409);
    reg.register_raw("full", R_EMPTY).await.error(409, 409);
    reg.register("full", R_A_B_OPTIONAL).await;
    assert_eq!(
        reg.get("/subjects/full/versions").await.ok(),
        &json!([1, 2])
    );
}

async fn none_allows_anything(backend: Backend) {
    let (_db, reg) = start(backend).await;
    reg.register("anything", R_A).await;
    reg.set_level("anything", "NONE").await;
    reg.register("anything", "\"string\"").await;
    reg.register("anything", R_A_B_REQUIRED).await;
    assert_eq!(
        reg.get("/subjects/anything/versions").await.ok(),
        &json!([1, 2, 3])
    );

    // The global level applies to subjects without their own.
    reg.register("global", R_A).await;
    let set = reg
        .put("/config", &json!({ "compatibility": "NONE" }))
        .await;
    assert_eq!(set.ok(), &json!({ "compatibility": "NONE" }));
    reg.register("global", "\"long\"").await;
}

async fn transitive_differs_from_latest_only(backend: Backend) {
    let (_db, reg) = start(backend).await;
    // v1 has no `a`; v2 adds it with a default (backward compatible).
    for subject in ["plain", "transitive"] {
        reg.register(subject, R_EMPTY).await;
        reg.register(subject, R_A_DEFAULT).await;
    }
    reg.set_level("plain", "BACKWARD").await;
    reg.set_level("transitive", "BACKWARD_TRANSITIVE").await;
    // R_A requires `a` without default: it reads v2 (has `a`) but not v1.
    reg.register("plain", R_A).await;
    let message = reg.register_raw("transitive", R_A).await.error(409, 409);
    assert!(message.contains("{oldSchemaVersion: 1}"), "{message}");
    assert!(!message.contains("{oldSchemaVersion: 2}"), "{message}");
    assert!(message.contains("BACKWARD_TRANSITIVE"), "{message}");

    // The compatibility endpoint without a version follows the level too.
    let all = reg
        .post(
            "/compatibility/subjects/transitive/versions",
            &json!({"schema": R_A}),
        )
        .await;
    assert_eq!(all.ok()["is_compatible"], false);
    let latest = reg
        .post(
            "/compatibility/subjects/transitive/versions/latest",
            &json!({"schema": R_A}),
        )
        .await;
    assert_eq!(
        latest.ok()["is_compatible"],
        true,
        "one version only, like Confluent"
    );
}

async fn error_codes(backend: Backend) {
    let (_db, reg) = start(backend).await;
    reg.register("known", R_A).await;

    let message = reg
        .get("/subjects/unknown/versions")
        .await
        .error(404, 40401);
    assert_eq!(message, "Subject 'unknown' not found.");
    reg.get("/subjects/unknown/versions/1")
        .await
        .error(404, 40401);
    assert_eq!(
        reg.get("/subjects/known/versions/9")
            .await
            .error(404, 40402),
        "Version 9 not found."
    );
    assert_eq!(
        reg.get("/schemas/ids/999").await.error(404, 40403),
        "Schema 999 not found"
    );
    reg.get("/schemas/ids/999/schema").await.error(404, 40403);
    reg.get("/schemas/ids/999/versions").await.error(404, 40403);

    let invalid = reg
        .register_raw("known", r#"{"type":"record","name":"X"}"#)
        .await;
    assert!(invalid.error(422, 42201).starts_with("Invalid schema"));
    reg.register_raw("known", "{not json")
        .await
        .error(422, 42201);
    let json_schema = reg
        .post(
            "/subjects/known/versions",
            &json!({"schema": "{}", "schemaType": "JSON"}),
        )
        .await;
    assert!(json_schema.error(422, 42201).contains("JSON"));
    reg.post("/subjects/known/versions", &json!({}))
        .await
        .error(422, 42201);

    for bad in ["abc", "0", "-2"] {
        let message = reg
            .get(&format!("/subjects/known/versions/{bad}"))
            .await
            .error(422, 42202);
        assert!(message.contains(&format!("'{bad}'")), "{message}");
    }
    let level = reg
        .put("/config", &json!({ "compatibility": "SIDEWAYS" }))
        .await;
    assert!(
        level
            .error(422, 42203)
            .starts_with("Invalid compatibility level")
    );
    reg.put("/config/known", &json!({ "compatibility": "" }))
        .await
        .error(422, 42203);
    reg.put("/config/known", &json!({})).await.error(422, 42203);
    assert_eq!(
        reg.get("/config/known").await.error(404, 40408),
        "Subject 'known' does not have subject-level compatibility configured"
    );
    reg.delete("/subjects/known?permanent=true")
        .await
        .error(404, 40405);
    reg.delete("/subjects/unknown").await.error(404, 40401);

    // Not JSON at all: a Confluent-style 400, not an axum plain-text rejection.
    let garbage = reg
        .send(
            Method::POST,
            "/subjects/known/versions",
            Some(V1_JSON),
            Some(b"<xml/>".to_vec()),
        )
        .await;
    garbage.error(400, 400);
    reg.get("/no/such/route").await.error(404, 404);
    reg.get("/schemas/ids/not-a-number").await.error(404, 404);
    reg.send(Method::PATCH, "/subjects", None, None)
        .await
        .error(405, 405);
}

async fn soft_and_permanent_delete(backend: Backend) {
    let (_db, reg) = start(backend).await;
    let id1 = reg.register("s", R_A).await;
    let id2 = reg.register("s", R_A_B_OPTIONAL).await;

    // Versions.
    assert_eq!(reg.delete("/subjects/s/versions/2").await.ok(), &json!(2));
    assert_eq!(reg.get("/subjects/s/versions").await.ok(), &json!([1]));
    assert_eq!(
        reg.get("/subjects/s/versions?deleted=true").await.ok(),
        &json!([1, 2])
    );
    reg.get("/subjects/s/versions/2").await.error(404, 40402);
    assert_eq!(
        reg.get("/subjects/s/versions/2?deleted=true").await.ok()["id"],
        id2
    );
    assert_eq!(
        reg.get("/subjects/s/versions/latest").await.ok()["version"],
        1
    );
    assert_eq!(
        reg.get(&format!("/schemas/ids/{id2}/versions")).await.ok(),
        &json!([])
    );
    assert_eq!(
        reg.get(&format!("/schemas/ids/{id2}/versions?deleted=true"))
            .await
            .ok(),
        &json!([{"subject":"s","version":2}])
    );
    let again = reg.delete("/subjects/s/versions/2").await.error(404, 40406);
    assert!(again.contains("Version 2 was soft deleted"), "{again}");
    reg.delete("/subjects/s/versions/1?permanent=true")
        .await
        .error(404, 40407);
    reg.delete("/subjects/s/versions/7").await.error(404, 40402);
    reg.post("/subjects/s", &json!({"schema": R_A_B_OPTIONAL}))
        .await
        .error(404, 40403);
    let found = reg
        .post(
            "/subjects/s?deleted=true",
            &json!({"schema": R_A_B_OPTIONAL}),
        )
        .await;
    assert_eq!(found.ok()["version"], 2);
    assert_eq!(
        reg.delete("/subjects/s/versions/2?permanent=true")
            .await
            .ok(),
        &json!(2)
    );
    assert_eq!(
        reg.get("/subjects/s/versions?deleted=true").await.ok(),
        &json!([1])
    );

    // Subjects.
    reg.delete("/subjects/s?permanent=true")
        .await
        .error(404, 40405);
    assert_eq!(reg.delete("/subjects/s").await.ok(), &json!([1]));
    reg.get("/subjects/s/versions").await.error(404, 40401);
    assert_eq!(reg.get("/subjects").await.ok(), &json!([]));
    assert_eq!(reg.get("/subjects?deleted=true").await.ok(), &json!(["s"]));
    assert!(
        reg.delete("/subjects/s")
            .await
            .error(404, 40404)
            .contains("soft deleted")
    );
    assert_eq!(
        reg.delete("/subjects/s?permanent=true").await.ok(),
        &json!([1])
    );
    assert_eq!(reg.get("/subjects?deleted=true").await.ok(), &json!([]));
    reg.delete("/subjects/s?permanent=true")
        .await
        .error(404, 40401);

    // Ids are global and permanent: readers of old records still resolve them.
    assert_eq!(
        json_of(
            reg.get(&format!("/schemas/ids/{id1}")).await.ok()["schema"]
                .as_str()
                .unwrap()
        ),
        json_of(R_A)
    );
    assert_eq!(
        reg.register("s", R_A).await,
        id1,
        "same schema, same id after a hard delete"
    );
    assert_eq!(reg.get("/subjects/s/versions").await.ok(), &json!([1]));
}

async fn soft_deleted_versions_are_ignored_by_compatibility(backend: Backend) {
    let (_db, reg) = start(backend).await;
    reg.register("s", R_A).await;
    reg.register("s", R_A_B_OPTIONAL).await;
    // A string cannot read the record v2 wrote: rejected while v2 is live.
    reg.register_raw("s", "\"string\"").await.error(409, 409);
    assert_eq!(reg.delete("/subjects/s").await.ok(), &json!([1, 2]));
    // No live versions left: anything goes, and numbering continues after the deleted ones.
    reg.register("s", "\"string\"").await;
    assert_eq!(reg.get("/subjects/s/versions").await.ok(), &json!([3]));
    // Re-registering a schema whose only version is soft deleted makes a new version.
    reg.set_level("s", "NONE").await;
    let id = reg.register("s", R_A).await;
    assert_eq!(id, 1);
    assert_eq!(reg.get("/subjects/s/versions").await.ok(), &json!([3, 4]));
}

async fn config_get_put_delete(backend: Backend) {
    let (_db, reg) = start(backend).await;
    assert_eq!(
        reg.get("/config").await.ok(),
        &json!({ "compatibilityLevel": "BACKWARD" })
    );
    assert_eq!(
        reg.put("/config", &json!({ "compatibility": "FULL" }))
            .await
            .ok(),
        &json!({ "compatibility": "FULL" })
    );
    assert_eq!(
        reg.get("/config").await.ok(),
        &json!({ "compatibilityLevel": "FULL" })
    );

    reg.get("/config/s").await.error(404, 40408);
    assert_eq!(
        reg.get("/config/s?defaultToGlobal=true").await.ok(),
        &json!({ "compatibilityLevel": "FULL" })
    );
    // Subject levels can be set before the subject exists; names are case-insensitive.
    let set = reg
        .put(
            "/config/s",
            &json!({ "compatibility": "forward_transitive" }),
        )
        .await;
    assert_eq!(set.ok(), &json!({ "compatibility": "FORWARD_TRANSITIVE" }));
    assert_eq!(
        reg.get("/config/s").await.ok(),
        &json!({ "compatibilityLevel": "FORWARD_TRANSITIVE" })
    );
    assert_eq!(
        reg.delete("/config/s").await.ok(),
        &json!({ "compatibilityLevel": "FORWARD_TRANSITIVE" })
    );
    reg.get("/config/s").await.error(404, 40408);
    reg.delete("/config/s").await.error(404, 40401);
    assert_eq!(
        reg.get("/config").await.ok(),
        &json!({ "compatibilityLevel": "FULL" })
    );
}

async fn compatibility_endpoint(backend: Backend) {
    let (_db, reg) = start(backend).await;
    // No versions yet: compatible with "latest", unknown subject for a numbered version.
    let empty = reg
        .post(
            "/compatibility/subjects/c/versions/latest",
            &json!({"schema": R_A}),
        )
        .await;
    assert_eq!(empty.ok(), &json!({ "is_compatible": true }));
    reg.post(
        "/compatibility/subjects/c/versions/1",
        &json!({"schema": R_A}),
    )
    .await
    .error(404, 40401);

    reg.register("c", R_A).await;
    let path = "/compatibility/subjects/c/versions/latest";
    let no = reg.post(path, &json!({"schema": R_A_B_REQUIRED})).await;
    assert_eq!(no.ok(), &json!({ "is_compatible": false }));
    let verbose = reg
        .post(
            &format!("{path}?verbose=true"),
            &json!({"schema": R_A_B_REQUIRED}),
        )
        .await;
    assert_eq!(verbose.ok()["is_compatible"], false);
    let messages = verbose.ok()["messages"]
        .as_array()
        .expect("messages")
        .clone();
    assert!(
        messages.iter().any(|m| m.as_str().unwrap().contains("'b'")),
        "{messages:?}"
    );
    let yes = reg
        .post(
            &format!("{path}?verbose=true"),
            &json!({"schema": R_A_B_OPTIONAL}),
        )
        .await;
    assert_eq!(yes.ok(), &json!({ "is_compatible": true, "messages": [] }));
    let numbered = reg
        .post(
            "/compatibility/subjects/c/versions/1",
            &json!({"schema": R_A_B_OPTIONAL}),
        )
        .await;
    assert_eq!(numbered.ok()["is_compatible"], true);
    reg.post(
        "/compatibility/subjects/c/versions/7",
        &json!({"schema": R_A}),
    )
    .await
    .error(404, 40402);
    reg.post(
        "/compatibility/subjects/c/versions/x",
        &json!({"schema": R_A}),
    )
    .await
    .error(422, 42202);
    reg.post(path, &json!({"schema": "{\"type\":\"bogus\"}"}))
        .await
        .error(422, 42201);

    // Nothing is registered by a test.
    assert_eq!(reg.get("/subjects/c/versions").await.ok(), &json!([1]));

    // The real invoice schemas: v2 reads v1 data.
    reg.register(INVOICE_SUBJECT, INVOICE_V1).await;
    let invoice = reg
        .post(
            &format!("/compatibility/subjects/{INVOICE_SUBJECT}/versions/latest"),
            &json!({"schema": INVOICE_V2}),
        )
        .await;
    assert_eq!(invoice.ok()["is_compatible"], true);
}

async fn content_types(backend: Backend) {
    let (_db, reg) = start(backend).await;
    let body = serde_json::to_vec(&json!({ "schema": R_A })).unwrap();
    for content_type in [
        Some(V1_JSON),
        Some("application/vnd.schemaregistry+json"),
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("application/octet-stream"),
        None,
    ] {
        let answer = reg
            .send(
                Method::POST,
                "/subjects/ct/versions",
                content_type,
                Some(body.clone()),
            )
            .await;
        assert_eq!(answer.ok(), &json!({ "id": 1 }), "{content_type:?}");
        let lookup = reg
            .send(
                Method::POST,
                "/subjects/ct",
                content_type,
                Some(body.clone()),
            )
            .await;
        assert_eq!(lookup.ok()["version"], 1, "{content_type:?}");
    }
    // Responses always carry the Confluent media type, errors and raw schemas included.
    for path in [
        "/",
        "/subjects",
        "/config",
        "/schemas/ids/1",
        "/schemas/ids/1/schema",
    ] {
        assert_eq!(reg.get(path).await.content_type, V1_JSON, "{path}");
    }
    assert_eq!(reg.get("/schemas/ids/42").await.content_type, V1_JSON);
}

async fn ids_survive_a_restart(backend: Backend) {
    let db = TestDb::create(backend).await;
    let first = Server::start(db.url()).await;
    let a = first.register("a", R_A).await;
    let b = first.register("b", INVOICE_V1).await;
    let text_a = first.get(&format!("/schemas/ids/{a}")).await.ok()["schema"].clone();
    first.set_level("a", "NONE").await;
    first.stop().await;

    // A new process: empty cache, same database.
    let second = Server::start(db.url()).await;
    assert_eq!(
        second.get(&format!("/schemas/ids/{a}")).await.ok()["schema"],
        text_a
    );
    assert_eq!(
        second.get(&format!("/schemas/ids/{b}/schema")).await.ok(),
        &json_of(INVOICE_V1)
    );
    assert_eq!(second.register("a", R_A).await, a);
    assert_eq!(second.register("c", INVOICE_V1).await, b);
    assert_eq!(
        second.register("a", "\"int\"").await,
        3,
        "ids continue after the restart"
    );
    assert_eq!(
        second.get("/config/a").await.ok(),
        &json!({ "compatibilityLevel": "NONE" })
    );
    second.stop().await;
}

async fn concurrent_registrations_share_one_id(backend: Backend) {
    let (_db, reg) = start(backend).await;
    let reg = std::sync::Arc::new(reg);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let reg = std::sync::Arc::clone(&reg);
        tasks.push(tokio::spawn(async move {
            let same = reg.register(&format!("same-{}", i % 2), INVOICE_V1).await;
            let own = reg
                .register(
                    &format!("own-{i}"),
                    &format!("{{\"type\":\"fixed\",\"name\":\"F{i}\",\"size\":4}}"),
                )
                .await;
            (same, own)
        }));
    }
    let mut own_ids = Vec::new();
    let mut same_ids = Vec::new();
    for task in tasks {
        let (same, own) = task.await.expect("task");
        same_ids.push(same);
        own_ids.push(own);
    }
    same_ids.dedup();
    assert_eq!(same_ids.len(), 1, "one id for one schema: {same_ids:?}");
    own_ids.push(same_ids[0]);
    own_ids.sort_unstable();
    assert_eq!(own_ids, (1..=9).collect::<Vec<i64>>(), "dense, unique ids");
    assert_eq!(reg.get("/subjects/same-0/versions").await.ok(), &json!([1]));
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

scenarios!(
    registration_is_idempotent,
    versions_lookup_and_schema_reads,
    real_schemas_evolve_backward,
    backward_rejects_required_field_and_accepts_optional,
    forward_and_full,
    none_allows_anything,
    transitive_differs_from_latest_only,
    error_codes,
    soft_and_permanent_delete,
    soft_deleted_versions_are_ignored_by_compatibility,
    config_get_put_delete,
    compatibility_endpoint,
    content_types,
    ids_survive_a_restart,
    concurrent_registrations_share_one_id,
);
