//! The outbox dispatcher against a real local HTTP server (axum on 127.0.0.1:0) that records
//! every request, deduplicates by `Idempotency-Key` like an ERP, and injects failures. Runs on
//! SQLite and Postgres.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::*;
use ledgerflow_erp_receivables::{Dispatcher, DispatcherConfig, dispatch_once};
use ledgerflow_store::Backend;
use ledgerflow_tenants::{ErpKind, SecretRef, TenantConfig};
use sqlx::Row;

const SECRET: &str = "tok_live_5up3r-s3cr3t";

per_backend!(
    every_journal_is_acked_exactly_once_and_failures_are_parked,
    nothing_due_is_an_idle_round,
);

/// (status, attempts, last_status, last_error, external_ref, idempotency_key).
type OutboxRow = (
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    String,
);

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    tenant: String,
    path: String,
    key: String,
    authorization: String,
    at: Instant,
}

#[derive(Debug, Default)]
struct ErpServer {
    seen: Mutex<Vec<Seen>>,
    /// Idempotency key -> (payload, external id).
    accepted: Mutex<HashMap<String, (String, String)>>,
    /// How often each key was accepted as new (must be 1).
    accepts: Mutex<HashMap<String, u32>>,
    /// Keys replayed with a different payload (must stay empty).
    conflicts: Mutex<Vec<String>>,
}

impl ErpServer {
    /// Accepts once per key, replays the same answer after.
    fn accept(&self, key: &str, body: &str) -> String {
        let mut accepted = self.accepted.lock().unwrap();
        if let Some((payload, id)) = accepted.get(key) {
            if payload != body {
                self.conflicts.lock().unwrap().push(key.to_owned());
            }
            return id.clone();
        }
        let id = format!("ext-{}", accepted.len() + 1);
        accepted.insert(key.to_owned(), (body.to_owned(), id.clone()));
        *self
            .accepts
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default() += 1;
        id
    }
}

async fn handle(
    State(server): State<Arc<ErpServer>>,
    Path((tenant, rest)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, HeaderMap, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let key = header("idempotency-key");
    let authorization = header("authorization");
    let attempt = {
        let mut seen = server.seen.lock().unwrap();
        seen.push(Seen {
            tenant: tenant.clone(),
            path: format!("/{rest}"),
            key: key.clone(),
            authorization: authorization.clone(),
            at: Instant::now(),
        });
        seen.iter().filter(|s| s.key == key).count()
    };
    let mut out_headers = HeaderMap::new();
    if authorization != format!("Bearer {SECRET}") {
        return (StatusCode::UNAUTHORIZED, out_headers, "bad token".into());
    }
    if header("content-type") != "application/json"
        || serde_json::from_str::<serde_json::Value>(&body).is_err()
    {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            out_headers,
            "json please".into(),
        );
    }
    match tenant.as_str() {
        // Two 503s per journal before it goes through.
        "flaky" if attempt <= 2 => {
            out_headers.insert("retry-after", "0".parse().unwrap());
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                out_headers,
                "maintenance".into(),
            );
        }
        "throttled" if attempt == 1 => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                out_headers,
                "slow down".into(),
            );
        }
        "down" => return (StatusCode::BAD_GATEWAY, out_headers, "upstream down".into()),
        // A validation error that echoes the credential back (some gateways do).
        "bad" => {
            return (
                StatusCode::BAD_REQUEST,
                out_headers,
                format!("{{\"error\":\"invalid account 9999\",\"received\":\"{authorization}\"}}"),
            );
        }
        // Posted, but the answer comes after the client's timeout: the retry must be
        // recognised by its idempotency key.
        "slow" if attempt == 1 => {
            server.accept(&key, &body);
            tokio::time::sleep(Duration::from_millis(1_500)).await;
        }
        _ => {}
    }
    let id = server.accept(&key, &body);
    (
        StatusCode::CREATED,
        out_headers,
        format!("{{\"id\":\"{id}\"}}"),
    )
}

async fn serve() -> (String, Arc<ErpServer>) {
    let server = Arc::new(ErpServer::default());
    let app = Router::new()
        .route("/{tenant}/{*rest}", post(handle))
        .with_state(Arc::clone(&server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), server)
}

/// Captured log output.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

fn config() -> DispatcherConfig {
    DispatcherConfig {
        batch_size: 7,
        concurrency: 4,
        request_timeout: Duration::from_millis(300),
        max_attempts: 5,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(80),
        lease: Duration::from_secs(2),
        poll_interval: Duration::from_millis(20),
        exit_when_idle: true,
        env: Some(BTreeMap::from([(
            "ERP_TOKEN".to_owned(),
            SECRET.to_owned(),
        )])),
        ..DispatcherConfig::default()
    }
}

async fn every_journal_is_acked_exactly_once_and_failures_are_parked(backend: Backend) {
    let logs = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (base, server) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{SECRET}\n")).unwrap();
    let env = SecretRef::Env {
        env: "ERP_TOKEN".into(),
    };
    let route = |tenant: &str, kind: ErpKind, credential: SecretRef| {
        Some((kind, format!("{base}/{tenant}/"), credential))
    };
    let tenants: Vec<TenantConfig> = vec![
        tenant(
            "flaky",
            route("flaky", ErpKind::Netsuite, env.clone()),
            None,
        ),
        tenant(
            "throttled",
            route("throttled", ErpKind::Dynamics365, env.clone()),
            None,
        ),
        tenant(
            "slow",
            route(
                "slow",
                ErpKind::S4hana,
                SecretRef::File { file: token_file },
            ),
            None,
        ),
        tenant(
            "limited",
            route("limited", ErpKind::OracleFusion, env.clone()),
            Some(4),
        ),
        tenant("bad", route("bad", ErpKind::Dynamics365, env.clone()), None),
        tenant("down", route("down", ErpKind::Netsuite, env.clone()), None),
        tenant(
            "nocred",
            route(
                "nocred",
                ErpKind::Netsuite,
                SecretRef::Env {
                    env: "ERP_MISSING".into(),
                },
            ),
            None,
        ),
        tenant("local", None, None),
    ];
    let mut events = Vec::new();
    let mut n = 0;
    for t in &tenants {
        let copies = if t.tenant_id.as_str() == "limited" {
            3
        } else {
            1
        };
        for i in 0..copies {
            n += 2;
            let invoice_id = format!("inv-{i}");
            events.push(invoice(t.tenant_id.as_str(), n, &invoice_id, 1_000, 70));
            events.push(payment(
                t.tenant_id.as_str(),
                n + 1,
                &format!("pay-{i}"),
                &invoice_id,
                1_070,
                30,
            ));
        }
    }
    let db = TestDb::create(backend).await;
    db.write(&events, &tenants).await.unwrap();
    // Invoice, receipt and application journal per pair; none for the subledger-only tenant.
    let journals = db
        .scalar("SELECT COUNT(*) FROM erp_journal_entries WHERE erp_kind IS NOT NULL")
        .await;
    assert_eq!(journals, 3 * 9);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM erp_outbox").await, journals);

    // Two dispatch loops share the outbox (each row is claimed by one at a time) and, being
    // clones of one dispatcher, its per-tenant rate limits.
    let first = Dispatcher::new(db.pool.clone(), backend, config()).unwrap();
    let second = first.clone();
    let (a, b) = tokio::time::timeout(
        Duration::from_secs(60),
        futures_join(
            first.run(std::future::pending()),
            second.run(std::future::pending()),
        ),
    )
    .await
    .expect("dispatchers go idle");
    a.unwrap();
    b.unwrap();

    let rows = sqlx::query(
        "SELECT tenant_id, status, attempts, last_status, last_error, external_ref, idempotency_key
         FROM erp_outbox ORDER BY tenant_id, id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut by_tenant: BTreeMap<String, Vec<OutboxRow>> = BTreeMap::new();
    for r in &rows {
        by_tenant.entry(r.get(0)).or_default().push((
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
            r.get(6),
        ));
    }
    for tenant in ["flaky", "throttled", "slow", "limited"] {
        for (status, attempts, last_status, last_error, external_ref, _) in &by_tenant[tenant] {
            assert_eq!(status, "acked", "{tenant}: {last_error:?}");
            assert_eq!(*last_status, Some(201));
            assert!(
                external_ref
                    .as_deref()
                    .is_some_and(|r| r.starts_with("ext-"))
            );
            match tenant {
                "flaky" => assert_eq!(*attempts, 3),
                "throttled" | "slow" => assert_eq!(*attempts, 2),
                _ => assert_eq!(*attempts, 1),
            }
        }
    }
    // Every delivered journal was accepted exactly once, with one payload per key.
    let acked: Vec<&String> = by_tenant
        .iter()
        .filter(|(t, _)| ["flaky", "throttled", "slow", "limited"].contains(&t.as_str()))
        .flat_map(|(_, rows)| rows.iter().map(|r| &r.5))
        .collect();
    assert_eq!(acked.len(), 18);
    let accepts = server.accepts.lock().unwrap().clone();
    for key in &acked {
        assert_eq!(accepts.get(*key), Some(&1), "{key}");
    }
    assert_eq!(accepts.len(), 18, "nothing else was accepted");
    assert!(server.conflicts.lock().unwrap().is_empty());

    // A 400 parks at once with the status and an excerpt, the echoed token redacted.
    for (status, attempts, last_status, last_error, _, _) in &by_tenant["bad"] {
        assert_eq!(status, "failed");
        assert_eq!(*attempts, 1);
        assert_eq!(*last_status, Some(400));
        let error = last_error.as_deref().unwrap();
        assert!(
            error.starts_with("http 400: {\"error\":\"invalid account 9999\""),
            "{error}"
        );
        assert!(error.contains("Bearer ***"), "{error}");
    }
    // Retryable failures give up after max_attempts.
    for (status, attempts, last_status, last_error, _, _) in &by_tenant["down"] {
        assert_eq!(
            (status.as_str(), *attempts, *last_status),
            ("failed", 5, Some(502))
        );
        assert!(last_error.as_deref().unwrap().contains("upstream down"));
    }
    for (status, attempts, last_status, last_error, _, _) in &by_tenant["nocred"] {
        assert_eq!(
            (status.as_str(), *attempts, *last_status),
            ("failed", 5, None)
        );
        let error = last_error.as_deref().unwrap();
        assert!(error.starts_with("credential unavailable"), "{error}");
        assert!(error.contains("ERP_MISSING"), "{error}");
    }

    // What the server saw: the bearer token on every request, per-kind paths, the rate limit.
    let seen = server.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|s| s.authorization == format!("Bearer {SECRET}"))
    );
    assert!(seen.iter().all(|s| !s.key.is_empty()));
    assert!(
        !seen
            .iter()
            .any(|s| s.tenant == "nocred" || s.tenant == "local")
    );
    let path_of = |tenant: &str| {
        seen.iter()
            .find(|s| s.tenant == tenant)
            .unwrap()
            .path
            .clone()
    };
    assert_eq!(path_of("flaky"), "/record/v1/journalEntry");
    assert_eq!(path_of("throttled"), "/data/LedgerJournalHeaders");
    assert_eq!(path_of("slow"), "/JournalEntry");
    assert_eq!(path_of("limited"), "/journalImport");
    let limited: Vec<Instant> = seen
        .iter()
        .filter(|s| s.tenant == "limited")
        .map(|s| s.at)
        .collect();
    assert_eq!(limited.len(), 9);
    let span = *limited.last().unwrap() - limited[0];
    // 4 per second with a burst of 4: the 9th request is at least 5 intervals after the first.
    assert!(span >= Duration::from_millis(1_150), "{span:?}");

    // The secret is in no log line, no stored column.
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("erp delivery acknowledged"),
        "logs were captured"
    );
    assert!(text.contains("parked for an operator"));
    assert!(!text.contains(SECRET), "secret leaked into logs");
    let leaked = db
        .scalar(&format!(
            "SELECT COUNT(*) FROM erp_outbox WHERE last_error LIKE '%{SECRET}%'
             OR payload LIKE '%{SECRET}%' OR credential LIKE '%{SECRET}%'"
        ))
        .await;
    assert_eq!(leaked, 0);

    // The reconcile view of the same.
    db.audit_applied(&events).await;
    let report = ledgerflow_erp_receivables::reconcile(
        &db.pool,
        backend,
        &ledgerflow_erp_receivables::ReconcileOptions::new(
            ledgerflow_erp_receivables::ReconcileSource::AuditLog,
        ),
    )
    .await
    .unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.tenants["bad"].erp.failed, 3);
    assert_eq!(
        report.tenants["bad"].erp.failed_deliveries[0].last_status,
        Some(400)
    );
    assert_eq!(report.tenants["limited"].erp.acked, 9);
    assert_eq!(report.tenants["local"].erp, Default::default());
    db.drop_db().await;
}

async fn nothing_due_is_an_idle_round(backend: Backend) {
    let db = TestDb::create(backend).await;
    let stats = dispatch_once(db.pool.clone(), backend, config())
        .await
        .unwrap();
    assert_eq!(stats.claimed, 0);
    let dispatcher = Dispatcher::new(db.pool.clone(), backend, config()).unwrap();
    assert_eq!(dispatcher.pending().await.unwrap().pending, 0);
    // With exit_when_idle the loop returns at once.
    tokio::time::timeout(
        Duration::from_secs(5),
        dispatcher.run(std::future::pending()),
    )
    .await
    .expect("returns when idle")
    .unwrap();
    // Without it, the injected shutdown stops it.
    let cfg = DispatcherConfig {
        exit_when_idle: false,
        ..config()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = ledgerflow_erp_receivables::run_dispatcher(db.pool.clone(), backend, cfg, async {
        let _ = rx.await;
    });
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = tx.send(());
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(5), futures_join(run, stopper))
        .await
        .expect("stops on shutdown");
    result.unwrap();
    db.drop_db().await;
}

/// `join` of two futures without pulling in the futures crate.
async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    tokio::join!(a, b)
}
