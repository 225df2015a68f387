//! A schema registry ledgerflow did not write: Apicurio Registry 3.x (from Maven Central, in
//! memory, H2) through its Confluent-compatible API (`/apis/ccompat/v7`). `ledgerflow produce`
//! registers the contracts there under TopicRecordNameStrategy subjects and produces;
//! `ledgerflow tail` decodes every record back to the generated event; `ledgerflow run` applies
//! them with the erp-receivables consumer on Postgres, and reconcile and the audit chain are clean.
//!
//! Apicurio comes from `scripts/setup-apicurio.sh` (about 160 MB, into `.local/apicurio/`);
//! without it the test says so and passes without checking anything.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ledgerflow_codec::{CodecError, Encoder, RegistryClient};
use ledgerflow_core::{EventType, SchemaId};
use ledgerflow_e2e::{PgDatabase, Stack, block_on, json_lines};
use ledgerflow_loadgen::{Workload, WorkloadConfig};

const TOPIC: &str = "e2e.apicurio";
const TENANTS: u32 = 4;
const EVENTS: u64 = 300;
const DUPLICATES: f64 = 0.05;
const SEED: u64 = 11;
const CONSUMER: &str = "erp-receivables";
/// Event types the erp-receivables consumer applies (everything else is skipped).
const ERP_TYPES: [&str; 4] = [
    "invoice_finalized",
    "payment_captured",
    "credit_memo_issued",
    "customer_upserted",
];

fn apicurio_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .join(".local/apicurio")
}

/// An Apicurio Registry process, killed on drop.
#[derive(Debug)]
struct Apicurio {
    child: Child,
    log: PathBuf,
    /// `http://127.0.0.1:PORT` (the UI-less server root).
    base: String,
    _dir: tempfile::TempDir,
}

impl Apicurio {
    /// Starts Apicurio on ports it picks itself (HTTP and management, both on 127.0.0.1) and
    /// waits until it listens. `None` when `scripts/setup-apicurio.sh` has not been run.
    fn start() -> Option<Self> {
        let home = apicurio_dir();
        let jar = home.join("app/quarkus-run.jar");
        let java = std::fs::read_to_string(home.join("java")).ok()?;
        if !jar.is_file() {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("apicurio.log");
        let child = Command::new(java.trim())
            .args([
                "-Xmx512m",
                "-XX:+UseSerialGC",
                // Port 0: Quarkus binds a free port and logs it.
                "-Dquarkus.http.host=127.0.0.1",
                "-Dquarkus.http.port=0",
                // The management interface (health, metrics) is built in; it would take
                // 0.0.0.0:9000 otherwise.
                "-Dquarkus.management.host=127.0.0.1",
                "-Dquarkus.management.port=0",
                "-Dapicurio.storage.kind=sql",
                "-Dapicurio.storage.sql.kind=h2",
                "-Dapicurio.datasource.url=jdbc:h2:mem:ledgerflow",
                "-jar",
            ])
            .arg(&jar)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&log)
                    .expect("log file"),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} (Java 21+): {e}", java.trim()));
        let mut apicurio = Self {
            child,
            log,
            base: String::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            // "... started in 9.361s. Listening on: http://127.0.0.1:PORT. Management ..."
            let text = apicurio.log_text();
            if let Some(rest) = text.split("Listening on: ").nth(1) {
                let url = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches('.');
                apicurio.base = url.to_owned();
                return Some(apicurio);
            }
            if let Some(status) = apicurio.child.try_wait().expect("try_wait") {
                panic!("Apicurio exited ({status}) before listening:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "Apicurio did not listen within 180 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The Confluent-compatible API, what ledgerflow's `--registry` takes.
    fn ccompat(&self) -> String {
        format!("{}/apis/ccompat/v7", self.base)
    }
}

impl Drop for Apicurio {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// `GET url` (plain HTTP on 127.0.0.1): status and body as JSON.
fn get_json(url: &str) -> (u16, serde_json::Value) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/vnd.schemaregistry.v1+json\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response from {url}: {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status from {url}: {head}"));
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[test]
fn events_registered_in_apicurio_decode_and_apply() {
    let started = Instant::now();
    let Some(apicurio) = Apicurio::start() else {
        eprintln!(
            "apicurio_interop skipped: Apicurio Registry is not installed in {}; fetch it with \
             `scripts/setup-apicurio.sh` (about 160 MB from Maven Central, needs a Java 21+) \
             and run this test again",
            apicurio_dir().display()
        );
        return;
    };
    let registry = apicurio.ccompat();
    eprintln!("Apicurio listening in {:?}: {registry}", started.elapsed());

    // An id Apicurio never gave out is Confluent's 40403, which ledgerflow classifies as an
    // unknown schema id (a permanent failure), not as an unreachable registry.
    let client = RegistryClient::new(&registry, Duration::from_secs(10)).expect("client");
    match block_on(client.schema_by_id(SchemaId(987_654))) {
        Err(CodecError::UnknownSchemaId { id }) => assert_eq!(id, SchemaId(987_654)),
        other => panic!("an unknown id from Apicurio: {other:?}"),
    }

    let stack = Stack::with_registry(&registry);
    stack.create_topic(TOPIC, 4);
    let manifest_path = stack.path("manifest.json");
    let tenants = stack.path("tenants.toml");
    stack.ledgerflow_ok(&[
        "produce",
        "--registry",
        &registry,
        "--topic",
        TOPIC,
        "--tenants",
        &TENANTS.to_string(),
        "--events",
        &EVENTS.to_string(),
        "--duplicates",
        &DUPLICATES.to_string(),
        "--seed",
        &SEED.to_string(),
        "--manifest",
        &manifest_path,
        "--tenants-file",
        &tenants,
    ]);

    // The contracts are in Apicurio under TopicRecordNameStrategy subjects, both invoice
    // writers as versions of one subject.
    let (status, subjects) = get_json(&format!("{registry}/subjects"));
    assert_eq!(status, 200, "{subjects}");
    let subjects: HashSet<&str> = subjects
        .as_array()
        .expect("subjects")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for event_type in EventType::ALL {
        let subject = event_type.subject(TOPIC);
        assert!(
            subjects.contains(subject.as_str()),
            "{subject} in {subjects:?}"
        );
    }
    let invoice_subject = EventType::InvoiceFinalized.subject(TOPIC);
    let (status, versions) = get_json(&format!("{registry}/subjects/{invoice_subject}/versions"));
    assert_eq!(
        (status, versions),
        (200, serde_json::json!([1, 2])),
        "versions of {invoice_subject}"
    );

    // Registering the same contracts again (what every `produce` does) gives the same ids.
    let again = block_on(Encoder::register(&client, TOPIC)).expect("registering again");

    // Every record decodes to the event the generator made (same seed, regenerated here).
    let out = stack.ledgerflow_ok(&[
        "tail",
        "--registry",
        &registry,
        "--topic",
        TOPIC,
        "--from-beginning",
        "--exit-at-end",
        "--format",
        "json",
    ]);
    let records = json_lines(&out.stdout);
    assert_eq!(
        records.len() as u64,
        EVENTS,
        "every produced record comes back"
    );
    let expected: HashMap<String, serde_json::Value> = Workload::new(WorkloadConfig {
        tenants: TENANTS,
        events: EVENTS,
        duplicates: DUPLICATES,
        seed: SEED,
        ..Default::default()
    })
    .expect("workload")
    .map(|g| {
        (
            g.event.event_id_raw().to_owned(),
            serde_json::to_value(&g.event).expect("event JSON"),
        )
    })
    .collect();
    let mut seen = HashSet::new();
    let mut per_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut invoice_ids = HashSet::new();
    for r in &records {
        assert!(r.get("error").is_none(), "record failed to decode: {r}");
        let event = &r["event"];
        let id = event["event_id"].as_str().expect("event_id");
        assert_eq!(
            Some(event),
            expected.get(id),
            "decoded event differs from generated"
        );
        assert_eq!(r["event_type"], event["type"]);
        let event_type = r["event_type"].as_str().expect("event_type");
        let schema_id =
            SchemaId(u32::try_from(r["schema_id"].as_u64().expect("schema_id")).expect("a u32 id"));
        let parsed = EventType::parse(event_type).expect("a known event type");
        let writers: Vec<SchemaId> = [1, 2]
            .into_iter()
            .filter_map(|v| again.schema_id(parsed, v))
            .collect();
        assert!(
            writers.contains(&schema_id),
            "{event_type} written with id {schema_id:?}, registered again as {writers:?}"
        );
        if event_type == "invoice_finalized" {
            invoice_ids.insert(schema_id);
        }
        if seen.insert(id.to_owned()) {
            *per_type.entry(event_type.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(
        invoice_ids.len(),
        2,
        "v1 and v2 invoice writers are interleaved"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).expect("manifest"))
            .expect("manifest JSON");
    assert_eq!(
        manifest["distinct_events"].as_u64(),
        Some(seen.len() as u64)
    );
    assert!(
        seen.len() < records.len(),
        "some exact duplicates were sent"
    );
    for (t, n) in &per_type {
        assert_eq!(
            manifest["event_types"][t].as_u64(),
            Some(*n),
            "count of {t}"
        );
    }

    // One consumer applies them on Postgres, resolving every schema id through Apicurio.
    let db = PgDatabase::create("lf_apicurio");
    let out = stack.ledgerflow_ok(&[
        "run",
        "--registry",
        &registry,
        "--consumer",
        CONSUMER,
        "--database",
        &db.url,
        "--topic",
        TOPIC,
        "--tenants",
        &tenants,
        "--exit-when-idle",
        "5s",
        "--format",
        "json",
    ]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run summary");
    let erp_events: u64 = ERP_TYPES
        .iter()
        .map(|t| manifest["event_types"][*t].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(summary[0]["consumer"], CONSUMER, "{summary}");
    assert_eq!(summary[0]["dead_lettered"], 0, "{summary}");
    assert_eq!(
        summary[0]["applied"].as_u64(),
        Some(erp_events),
        "{summary}"
    );
    let (code, report) = stack.reconcile(&db.url, &["--source", &manifest_path]);
    assert_eq!(code, 0, "reconcile against the manifest:\n{report:#}");
    let (code, report) = stack.audit_verify(&db.url);
    assert_eq!(code, 0, "audit verify:\n{report:#}");
    eprintln!(
        "apicurio_interop: {} records through Apicurio ({} distinct, {erp_events} applied by \
         {CONSUMER}) in {:?}",
        records.len(),
        seen.len(),
        started.elapsed()
    );
}
