//! The dispatcher's mechanics, with a scripted in-process adapter standing in for an ERP (the
//! real adapters are tested against the simulator in `netsuite.rs` and `d365.rs`): states,
//! the lookup after an indefinite outcome, asynchronous jobs, throttling that pauses one
//! account only, retries exhausted, permanent failures. Counted on the fake ERP's side. Runs on
//! SQLite and Postgres.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ledgerflow_erp_receivables::{
    BoxFuture, Dispatcher, DispatcherConfig, Document, ErpAdapter, ErpError, ErpPosting, Exchange,
    FailClass, Failed, Lookup, Outcome, RenderInput, Rendered, Retry, RetryClass,
};
use ledgerflow_store::Backend;
use ledgerflow_tenants::{ErpKind, SecretRef, TenantConfig};
use serde_json::{Value, json};
use sqlx::Row;

per_backend!(
    the_dispatcher_drives_every_outcome_to_its_state,
    an_attempt_abandoned_at_shutdown_is_handed_back_in_doubt,
);

/// What the fake ERP holds and saw.
#[derive(Debug, Default)]
struct FakeErp {
    /// External id -> document id.
    stored: Mutex<HashMap<String, String>>,
    /// External id -> how many times a document was stored under it (must end at 1).
    stores: Mutex<HashMap<String, u32>>,
    /// External id -> sends.
    sends: Mutex<HashMap<String, u32>>,
    /// Job -> polls.
    polls: Mutex<HashMap<String, u32>>,
    /// (tenant, when) of every send.
    log: Mutex<Vec<(String, Instant)>>,
    /// While set, a send by tenant "hang" stores its document and never answers.
    hang: std::sync::atomic::AtomicBool,
}

impl FakeErp {
    fn store(&self, ext: &str) -> String {
        *self
            .stores
            .lock()
            .unwrap()
            .entry(ext.to_owned())
            .or_default() += 1;
        let id = format!("doc-{ext}");
        self.stored
            .lock()
            .unwrap()
            .insert(ext.to_owned(), id.clone());
        id
    }
}

#[derive(Debug)]
struct Fake(Arc<FakeErp>);

impl ErpAdapter for Fake {
    fn kind(&self) -> ErpKind {
        ErpKind::OracleFusion
    }

    fn render(&self, input: &RenderInput<'_>) -> Result<Rendered, ErpError> {
        Ok(Rendered::Document(Document {
            kind: "fake".into(),
            body: json!({ "ref": input.external_id }),
            depends_on: Vec::new(),
        }))
    }

    fn find<'a>(&'a self, _cx: &'a Exchange, p: &'a ErpPosting) -> BoxFuture<'a, Lookup> {
        Box::pin(async move {
            match self.0.stored.lock().unwrap().get(&p.external_id) {
                Some(id) => Lookup::Found {
                    document_id: id.clone(),
                },
                None => Lookup::NotFound,
            }
        })
    }

    fn send<'a>(&'a self, _cx: &'a Exchange, p: &'a ErpPosting) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let erp = &self.0;
            erp.log
                .lock()
                .unwrap()
                .push((p.tenant_id.clone(), Instant::now()));
            let n = {
                let mut sends = erp.sends.lock().unwrap();
                let n = sends.entry(p.external_id.clone()).or_default();
                *n += 1;
                *n
            };
            let ext = &p.external_id;
            match p.tenant_id.as_str() {
                // Committed, then the connection dropped: the client cannot know.
                "drop" if n == 1 => {
                    erp.store(ext);
                    Outcome::Retry(Retry {
                        class: RetryClass::Connection,
                        retry_after: None,
                        indefinite: true,
                        detail: "connection closed before message completed".into(),
                    })
                }
                "async" => {
                    erp.store(ext);
                    Outcome::Accepted {
                        job_ref: format!("job-{ext}"),
                    }
                }
                "reject" => Outcome::Failed(Failed::new(
                    FailClass::Rejected,
                    "USER_ERROR: the transaction is out of balance",
                )),
                "throttle" if n == 1 => Outcome::Retry(
                    Retry::new(RetryClass::Throttled, "http 429")
                        .after(Some(Duration::from_millis(1500))),
                ),
                "down" => Outcome::Retry(Retry::new(RetryClass::Server, "http 503")),
                "hang" if erp.hang.load(std::sync::atomic::Ordering::SeqCst) => {
                    erp.store(ext);
                    std::future::pending::<()>().await;
                    unreachable!("never answers")
                }
                _ => Outcome::Confirmed {
                    document_id: erp.store(ext),
                },
            }
        })
    }

    fn poll<'a>(
        &'a self,
        _cx: &'a Exchange,
        p: &'a ErpPosting,
        job_ref: &'a str,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let n = {
                let mut polls = self.0.polls.lock().unwrap();
                let n = polls.entry(job_ref.to_owned()).or_default();
                *n += 1;
                *n
            };
            // A slow job: still running for more polls than `max_attempts`, then one server
            // error, then done. Polls of a running job are progress, not attempts.
            if n < 6 {
                return Outcome::Accepted {
                    job_ref: job_ref.to_owned(),
                };
            }
            if n == 6 {
                return Outcome::Retry(Retry::new(RetryClass::Server, "http 503"));
            }
            Outcome::Confirmed {
                document_id: format!("doc-{}", p.external_id),
            }
        })
    }
}

fn config() -> DispatcherConfig {
    DispatcherConfig {
        concurrency: 8,
        request_timeout: Duration::from_millis(500),
        max_attempts: 4,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(40),
        lease: Duration::from_secs(5),
        poll_interval: Duration::from_millis(20),
        job_poll_interval: Duration::from_millis(30),
        exit_when_idle: true,
        ..DispatcherConfig::default()
    }
}

/// (status, attempts, class, erp document id, indefinite, history).
type Outbox = (String, i64, Option<String>, Option<String>, i64, Vec<Value>);

async fn the_dispatcher_drives_every_outcome_to_its_state(backend: Backend) {
    let secret = SecretRef::Env { env: "S".into() };
    // One account per behaviour, "ok" and "other" on accounts of their own.
    let tenants: Vec<TenantConfig> = ["ok", "drop", "async", "reject", "throttle", "down", "other"]
        .iter()
        .map(|id| {
            let mut t = tenant(
                id,
                Some((
                    ErpKind::OracleFusion,
                    "http://127.0.0.1:9".into(),
                    secret.clone(),
                )),
                None,
            );
            if let Some(erp) = &mut t.erp {
                erp.account = format!("acct-{id}");
            }
            t
        })
        .collect();
    let mut events = Vec::new();
    let mut n = 0;
    for t in &tenants {
        let copies = if t.tenant_id.as_str() == "other" {
            4
        } else {
            1
        };
        for i in 0..copies {
            n += 1;
            events.push(invoice(
                t.tenant_id.as_str(),
                n,
                &format!("inv-{i}"),
                1_000,
                70,
            ));
        }
    }
    let db = TestDb::create(backend).await;
    db.write(&events, &tenants).await.unwrap();
    assert_eq!(db.scalar("SELECT COUNT(*) FROM erp_outbox").await, 10);

    let erp = Arc::new(FakeErp::default());
    let dispatcher = Dispatcher::with_adapters(
        db.pool.clone(),
        backend,
        config(),
        vec![Arc::new(Fake(Arc::clone(&erp)))],
    )
    .unwrap();
    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(30),
        dispatcher.run(std::future::pending()),
    )
    .await
    .expect("the dispatcher goes idle")
    .unwrap();

    let rows = sqlx::query(
        "SELECT tenant_id, status, attempts, last_error_class, erp_document_id, indefinite,
                history, external_id, config_version, route
         FROM erp_outbox ORDER BY tenant_id, id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut by_tenant: HashMap<String, Vec<Outbox>> = HashMap::new();
    for r in &rows {
        let history: Option<String> = r.get(6);
        let ext: String = r.get(7);
        assert!(
            ext.starts_with(&format!("lf-{}-", r.get::<String, _>(0))),
            "{ext}"
        );
        assert_eq!(r.get::<String, _>(8), "cfg-test");
        let route: Value = serde_json::from_str(&r.get::<String, _>(9)).unwrap();
        assert_eq!(route["target"]["kind"], "oracle_fusion");
        by_tenant.entry(r.get(0)).or_default().push((
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
            serde_json::from_str(&history.unwrap_or_default()).unwrap_or_default(),
        ));
    }
    let one = |t: &str| by_tenant[t][0].clone();
    let actions = |h: &[Value]| -> Vec<String> {
        h.iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["action"].as_str().unwrap(),
                    e["outcome"].as_str().unwrap()
                )
            })
            .collect()
    };

    let (status, attempts, class, doc, indefinite, _) = one("ok");
    assert_eq!(
        (status.as_str(), attempts, class, indefinite),
        ("confirmed", 1, None, 0)
    );
    assert!(doc.unwrap().starts_with("doc-lf-ok-"));

    // Committed, then dropped: the next attempt looked it up and found it; not sent again.
    let (status, attempts, _, doc, indefinite, history) = one("drop");
    assert_eq!((status.as_str(), attempts, indefinite), ("confirmed", 2, 0));
    assert!(doc.is_some());
    assert_eq!(actions(&history), ["send:retry", "found:confirmed"]);
    assert_eq!(history[0]["class"], "connection");
    assert_eq!(history[0]["indefinite"], true);

    // Accepted, polled while the job runs (longer than max_attempts), through one server
    // error, confirmed only when the job said so: the running polls counted no attempt.
    let (status, attempts, _, _, _, history) = one("async");
    assert_eq!((status.as_str(), attempts), ("confirmed", 3));
    assert_eq!(
        actions(&history),
        [
            "send:accepted",
            "poll:accepted",
            "poll:accepted",
            "poll:accepted",
            "poll:accepted",
            "poll:accepted",
            "poll:retry",
            "poll:confirmed"
        ]
    );

    let (status, attempts, class, doc, _, _) = one("reject");
    assert_eq!(
        (status.as_str(), attempts, class.as_deref(), doc),
        ("failed", 1, Some("rejected"), None)
    );

    // Retries exhausted.
    let (status, attempts, class, _, _, history) = one("down");
    assert_eq!(
        (status.as_str(), attempts, class.as_deref()),
        ("failed", 4, Some("server"))
    );
    assert_eq!(history.len(), 4);

    // A throttle does not count as an attempt and pauses only its own account.
    let (status, attempts, _, _, _, history) = one("throttle");
    assert_eq!((status.as_str(), attempts), ("confirmed", 1));
    assert_eq!(actions(&history), ["send:retry", "send:confirmed"]);
    assert_eq!(history[0]["class"], "throttled");
    let log = erp.log.lock().unwrap().clone();
    let sends_of = |t: &str| -> Vec<Instant> {
        log.iter()
            .filter(|(x, _)| x == t)
            .map(|(_, at)| *at)
            .collect()
    };
    let throttled = sends_of("throttle");
    assert_eq!(throttled.len(), 2);
    let pause = throttled[1] - throttled[0];
    assert!(
        pause >= Duration::from_millis(1490),
        "the account waited out Retry-After: {pause:?}"
    );
    let other = sends_of("other");
    assert_eq!(other.len(), 4);
    let last_other = *other.iter().max().unwrap();
    assert!(
        last_other < throttled[1],
        "another account's postings went on during the pause: the last {:?} after the throttle, \
         the throttled account resumed {pause:?} after it",
        last_other.saturating_duration_since(throttled[0])
    );
    for (status, ..) in &by_tenant["other"] {
        assert_eq!(status, "confirmed");
    }

    // On the ERP's side: every document stored exactly once.
    let stores = erp.stores.lock().unwrap().clone();
    assert_eq!(
        stores.len(),
        8,
        "ok, drop, async, throttle, 4 x other: {stores:?}"
    );
    assert!(stores.values().all(|n| *n == 1), "{stores:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    db.drop_db().await;
}

/// The process stops while the ERP holds a request it has committed: the row is handed back at
/// once (not after its lease), marked in doubt, and the next attempt finds the document
/// instead of sending it again.
async fn an_attempt_abandoned_at_shutdown_is_handed_back_in_doubt(backend: Backend) {
    let secret = SecretRef::Env { env: "S".into() };
    let mut t = tenant(
        "hang",
        Some((ErpKind::OracleFusion, "http://127.0.0.1:9".into(), secret)),
        None,
    );
    if let Some(erp) = &mut t.erp {
        erp.account = "acct-hang".into();
    }
    let db = TestDb::create(backend).await;
    db.write(&[invoice("hang", 1, "inv-1", 1_000, 70)], &[t])
        .await
        .unwrap();
    let erp = Arc::new(FakeErp::default());
    erp.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let cfg = DispatcherConfig {
        exit_when_idle: false,
        lease: Duration::from_secs(600),
        ..config()
    };
    let dispatcher = Dispatcher::with_adapters(
        db.pool.clone(),
        backend,
        cfg.clone(),
        vec![Arc::new(Fake(Arc::clone(&erp)))],
    )
    .unwrap();
    let stop = tokio::time::sleep(Duration::from_millis(300));
    dispatcher.run(stop).await.unwrap();
    let row =
        sqlx::query("SELECT status, claim_token, indefinite, next_attempt_at FROM erp_outbox")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let (status, token, indefinite, due): (String, Option<String>, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!((status.as_str(), token, indefinite), ("pending", None, 1));
    let wait = due - ledgerflow_outbox::now_micros();
    assert!(
        wait <= 500_000,
        "due after a request's time, not the 600 s lease: {wait} us"
    );

    erp.hang.store(false, std::sync::atomic::Ordering::SeqCst);
    let dispatcher = Dispatcher::with_adapters(
        db.pool.clone(),
        backend,
        DispatcherConfig {
            exit_when_idle: true,
            ..cfg
        },
        vec![Arc::new(Fake(Arc::clone(&erp)))],
    )
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        dispatcher.run(std::future::pending()),
    )
    .await
    .expect("idle")
    .unwrap();
    let row = sqlx::query("SELECT status, history FROM erp_outbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "confirmed");
    let history: Vec<Value> = serde_json::from_str(&row.get::<String, _>(1)).unwrap();
    assert_eq!(history.last().unwrap()["action"], "found");
    assert!(erp.stores.lock().unwrap().values().all(|n| *n == 1));
    db.drop_db().await;
}
