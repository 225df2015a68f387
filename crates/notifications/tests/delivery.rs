//! The notifications consumer end to end inside one process, on SQLite and Postgres: batches go
//! through `Store::commit_batch` exactly as the runtime sends them, and the dispatcher delivers
//! to a real local HTTP server (axum on 127.0.0.1:0) that verifies every Standard Webhooks
//! signature, records every request and injects failures per endpoint:
//!
//! | endpoint | behaviour |
//! | --- | --- |
//! | `ok` | 200 |
//! | `flaky` | 503 on the first attempt of each webhook-id, then 200 |
//! | `reject` | 400 until the test flips `accept_rejected` |
//! | `dead` | 503 always |
//! | `hang` | holds the first attempt of each webhook-id for 5 s, then 200 |

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use ledgerflow_core::{
    Coordinates, CreditMemoIssued, CustomerUpserted, Envelope, Event, EventType, InvoiceFinalized,
    InvoiceLine, PaymentCaptured, ReasonCode, SchemaId, SubscriptionActivated, TenantId,
};
use ledgerflow_notifications::{
    BreakerConfig, BreakerState, Dispatcher, DispatcherConfig, NotificationFilter, Notifications,
    RetrySelector, WebhookSecret, list, retry, verify, webhook_id,
};
use ledgerflow_store::{
    Backend, BatchInput, BatchOutcome, ConsumerLogic, DeadLetterInput, ErasedConsumer,
    RecordOutcome, SkippedInput, Store,
};
use ledgerflow_tenants::{
    AccountMapping, NotificationTemplates, SecretRef, TenantConfig, WebhookEndpoint,
};
use ledgerflow_testkit::ScratchStore;
use sqlx::Row;
use uuid::Uuid;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_VAR: &str = "NT_TEST_WHSEC";
const TOPIC: &str = "billing.events";

macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(ledgerflow_store::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(ledgerflow_store::Backend::Postgres).await;
                }
            )*
        }
    };
}

per_backend!(
    a_throttled_tenant_waits_outside_the_lease_and_holds_back_no_one,
    every_notification_arrives_and_a_retry_keeps_its_id_and_body,
    a_replayed_batch_adds_no_outbox_row,
    a_4xx_parks_at_once_and_retry_requeues_failed_rows_only,
    the_breaker_opens_on_a_dead_endpoint_while_others_keep_flowing,
    a_crashed_dispatchers_claim_is_delivered_after_the_lease,
    the_tenant_rate_limit_spaces_requests,
    an_unrenderable_template_dead_letters_the_event,
);

// ---------------------------------------------------------------------------------------------
// The receiving server
// ---------------------------------------------------------------------------------------------

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    endpoint: String,
    id: String,
    timestamp: i64,
    body: String,
    signature_valid: bool,
    at: Instant,
}

#[derive(Debug, Default)]
struct Receiver {
    seen: Mutex<Vec<Seen>>,
    accept_rejected: AtomicBool,
}

impl Receiver {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn to(&self, endpoint: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.endpoint == endpoint)
            .collect()
    }
}

async fn handle(
    State(server): State<Arc<Receiver>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap_or(-1);
    let secret = WebhookSecret::parse(SECRET).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let signature_valid = header("content-type") == "application/json"
        && verify(
            &secret,
            &id,
            timestamp,
            body.as_bytes(),
            &header("webhook-signature"),
            Some((now, 300)),
        )
        .is_ok();
    let attempt = {
        let mut seen = server.seen.lock().unwrap();
        seen.push(Seen {
            endpoint: endpoint.clone(),
            id: id.clone(),
            timestamp,
            body,
            signature_valid,
            at: Instant::now(),
        });
        seen.iter().filter(|s| s.id == id).count()
    };
    if !signature_valid {
        return (StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    match endpoint.as_str() {
        "flaky" if attempt == 1 => (StatusCode::SERVICE_UNAVAILABLE, "warming up".into()),
        "reject" if !server.accept_rejected.load(Ordering::SeqCst) => {
            (StatusCode::BAD_REQUEST, "unknown customer".into())
        }
        "dead" => (StatusCode::SERVICE_UNAVAILABLE, "down".into()),
        "hang" if attempt == 1 => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            (StatusCode::OK, "late".into())
        }
        _ => (StatusCode::OK, "ok".into()),
    }
}

async fn serve() -> (String, Arc<Receiver>) {
    let server = Arc::new(Receiver::default());
    let app = Router::new()
        .route("/hooks/{endpoint}", post(handle))
        .with_state(Arc::clone(&server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Serves until the test's runtime ends; an accept error only ends the test server.
        axum::serve(listener, app).await.ok();
    });
    (format!("http://{addr}"), server)
}

// ---------------------------------------------------------------------------------------------
// Tenants, events, batches
// ---------------------------------------------------------------------------------------------

fn endpoint(base: &str, name: &str, events: &[EventType]) -> WebhookEndpoint {
    WebhookEndpoint {
        id: name.to_owned(),
        url: format!("{base}/hooks/{name}"),
        secret: SecretRef::Env {
            env: SECRET_VAR.to_owned(),
        },
        events: events.to_vec(),
        templates: NotificationTemplates::default(),
    }
}

fn tenant(webhooks: Vec<WebhookEndpoint>, rate_limit_per_sec: Option<u32>) -> TenantConfig {
    TenantConfig {
        tenant_id: TenantId::parse("acme").unwrap(),
        legal_entity: "Acme Corp.".to_owned(),
        functional_currency: ledgerflow_core::Currency::parse("USD").unwrap(),
        erp: None,
        accounts: AccountMapping {
            receivable: "1200".into(),
            revenue_default: "4000".into(),
            revenue_by_family: BTreeMap::new(),
            tax_payable: "2200".into(),
            cash_clearing: "1010".into(),
            payment_fees: "6150".into(),
            unapplied_cash: "2400".into(),
        },
        webhooks,
        rate_limit_per_sec,
    }
}

fn common(id: Uuid) -> (String, String, i64, String, Option<String>, String) {
    (
        id.hyphenated().to_string(),
        "acme".to_owned(),
        1_700_000_000_000_000,
        "corr".to_owned(),
        None,
        "billing".to_owned(),
    )
}

/// Event `i` of a mix: invoice, payment, welcome, credit memo, customer (not notified).
fn event(i: usize) -> Event {
    let id = Uuid::new_v4();
    let (event_id, tenant_id, occurred_at, correlation_id, causation_id, source) = common(id);
    let amount = 1000 + i as i64;
    match i % 5 {
        0 => Event::InvoiceFinalized(InvoiceFinalized {
            event_id,
            tenant_id,
            occurred_at,
            correlation_id,
            causation_id,
            source,
            invoice_id: format!("inv-{i}"),
            invoice_number: format!("INV-{i:04}"),
            customer_id: format!("cus-{i}"),
            subscription_id: None,
            currency: "USD".into(),
            issued_at: occurred_at,
            due_at: occurred_at,
            lines: vec![InvoiceLine {
                line_id: "l1".into(),
                description: "Pro".into(),
                product_family: "platform".into(),
                quantity_micros: 1_000_000,
                unit_amount_minor: amount,
                amount_minor: amount,
            }],
            tax_lines: vec![],
            subtotal_minor: amount,
            tax_minor: 0,
            total_minor: amount,
            purchase_order: None,
        }),
        1 => Event::PaymentCaptured(PaymentCaptured {
            event_id,
            tenant_id,
            occurred_at,
            correlation_id,
            causation_id,
            source,
            payment_id: format!("pay-{i}"),
            invoice_id: format!("inv-{i}"),
            customer_id: format!("cus-{i}"),
            currency: "USD".into(),
            amount_minor: amount,
            fee_minor: 10,
            method: "card".into(),
            processor_reference: "ch".into(),
            captured_at: occurred_at,
            settlement_currency: None,
        }),
        2 => Event::SubscriptionActivated(SubscriptionActivated {
            event_id,
            tenant_id,
            occurred_at,
            correlation_id,
            causation_id,
            source,
            subscription_id: format!("sub-{i}"),
            customer_id: format!("cus-{i}"),
            plan_id: "pro".into(),
            product_family: "platform".into(),
            currency: "USD".into(),
            unit_amount_minor: amount,
            billing_interval: "month".into(),
            started_at: occurred_at,
        }),
        3 => Event::CreditMemoIssued(CreditMemoIssued {
            event_id,
            tenant_id,
            occurred_at,
            correlation_id,
            causation_id,
            source,
            credit_memo_id: format!("cm-{i}"),
            credit_memo_number: format!("CM-{i}"),
            invoice_id: format!("inv-{i}"),
            customer_id: format!("cus-{i}"),
            currency: "USD".into(),
            product_family: "platform".into(),
            amount_minor: amount,
            tax_minor: 0,
            total_minor: amount,
            reason: "goodwill".into(),
            issued_at: occurred_at,
        }),
        _ => Event::CustomerUpserted(CustomerUpserted {
            event_id,
            tenant_id,
            occurred_at,
            correlation_id,
            causation_id,
            source,
            customer_id: format!("cus-{i}"),
            name: "Customer".into(),
            email: None,
            country: "US".into(),
            currency: "USD".into(),
            tax_id: None,
        }),
    }
}

fn events(n: usize) -> Vec<Event> {
    (0..n).map(event).collect()
}

fn envelope(event: Event, offset: i64) -> Envelope {
    let meta = event.validate().expect("valid test event");
    Envelope::new(
        meta,
        event,
        SchemaId(1),
        Coordinates {
            topic: TOPIC.to_owned(),
            partition: 0,
            offset,
        },
    )
}

/// The records of `events` at offsets `first..`, mapped as the runtime maps them.
fn batch(events: &[Event], tenant: &TenantConfig, first: i64) -> BatchInput {
    let records = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let offset = first + i as i64;
            let env = envelope(e.clone(), offset);
            if !ConsumerLogic::handles(&Notifications, env.meta.event_type) {
                return RecordOutcome::Skipped(SkippedInput { envelope: env });
            }
            let raw = DeadLetterInput {
                offset,
                reason: ReasonCode::Validation,
                error: String::new(),
                key: Some(b"acme".to_vec()),
                value: Some(vec![0, 0, 0, 0, 1]),
                headers: vec![],
                schema_id: Some(1),
                event_id: Some(env.meta.event_id.to_string()),
                tenant_id: Some("acme".to_owned()),
                event_type: Some(env.meta.event_type.as_str().to_owned()),
            };
            match Notifications.map_erased(&env, tenant) {
                Ok(effect) => RecordOutcome::Mapped {
                    envelope: env,
                    effect,
                    raw: Box::new(raw),
                },
                Err(failure) => RecordOutcome::DeadLetter(DeadLetterInput {
                    reason: failure.reason().expect("permanent"),
                    error: failure.to_string(),
                    ..raw
                }),
            }
        })
        .collect();
    BatchInput {
        topic: TOPIC.to_owned(),
        partition: 0,
        records,
        next_offset: first + events.len() as i64,
    }
}

async fn open(backend: Backend) -> ScratchStore {
    let scratch = ScratchStore::open(backend, "nt_test").await;
    let ddl = ConsumerLogic::schema(&Notifications, backend);
    scratch.store.apply_schema(&ddl).await.expect("schema");
    scratch
        .store
        .apply_schema(&ddl)
        .await
        .expect("schema twice");
    scratch
}

async fn commit(store: &Store, batch: BatchInput) -> BatchOutcome {
    store
        .commit_batch(&Notifications, batch)
        .await
        .expect("batch commits")
}

fn config() -> DispatcherConfig {
    DispatcherConfig {
        concurrency: 4,
        request_timeout: Duration::from_secs(2),
        lease: Duration::from_secs(5),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        poll_interval: Duration::from_millis(20),
        env: Some([(SECRET_VAR.to_owned(), SECRET.to_owned())].into()),
        ..DispatcherConfig::default()
    }
}

fn dispatcher(store: &Store, cfg: DispatcherConfig) -> Dispatcher {
    Dispatcher::new(store.pool().clone(), store.backend(), cfg).expect("dispatcher")
}

async fn scalar(store: &Store, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

async fn statuses(store: &Store) -> BTreeMap<String, String> {
    sqlx::query_as::<_, (String, String)>("SELECT webhook_id, status FROM notification_outbox")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Webhook-ids the tenant's endpoints should receive for `events`.
fn expected_ids(events: &[Event], tenant: &TenantConfig) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in events {
        let meta = e.meta().unwrap();
        if !ConsumerLogic::handles(&Notifications, meta.event_type) {
            continue;
        }
        for w in tenant
            .webhooks
            .iter()
            .filter(|w| w.subscribes_to(meta.event_type))
        {
            out.insert(webhook_id(&meta.event_id, &w.id), w.id.clone());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

async fn every_notification_arrives_and_a_retry_keeps_its_id_and_body(backend: Backend) {
    let scratch = open(backend).await;
    let store = &scratch.store;
    let (base, server) = serve().await;
    let t = tenant(
        vec![
            endpoint(&base, "ok", &[]),
            endpoint(
                &base,
                "flaky",
                &[EventType::InvoiceFinalized, EventType::PaymentCaptured],
            ),
        ],
        None,
    );
    let evs = events(25);
    let outcome = commit(store, batch(&evs, &t, 0)).await;
    assert_eq!((outcome.applied, outcome.skipped), (20, 5), "{outcome:?}");
    let expected = expected_ids(&evs, &t);
    // 20 notifications to "ok", 10 (invoices and payments) to "flaky".
    assert_eq!(expected.len(), 30);
    assert_eq!(
        scalar(store, "SELECT COUNT(*) FROM notification_outbox").await,
        30
    );

    // Every flaky first attempt fails: keep the breaker out of this scenario.
    let cfg = DispatcherConfig {
        breaker: BreakerConfig {
            failure_threshold: 1000,
            ..BreakerConfig::default()
        },
        ..config()
    };
    assert!(dispatcher(store, cfg).drain(Duration::from_secs(30)).await);
    let seen = server.seen();
    assert!(seen.iter().all(|s| s.signature_valid), "{seen:#?}");
    let received: HashSet<&str> = seen.iter().map(|s| s.id.as_str()).collect();
    let wanted: HashSet<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(received, wanted, "every notification arrived, nothing else");
    assert_eq!(
        server.to("ok").len(),
        20,
        "ok: one request per notification"
    );
    let flaky = server.to("flaky");
    assert_eq!(
        flaky.len(),
        20,
        "flaky: a failed and a successful attempt each"
    );
    let mut by_id: HashMap<&str, Vec<&Seen>> = HashMap::new();
    for s in &flaky {
        by_id.entry(&s.id).or_default().push(s);
    }
    for (id, attempts) in &by_id {
        assert_eq!(attempts.len(), 2, "{id}");
        assert_eq!(
            attempts[0].body, attempts[1].body,
            "{id}: same body on retry"
        );
        assert!(attempts[1].timestamp >= attempts[0].timestamp);
    }
    assert!(statuses(store).await.values().all(|s| s == "delivered"));

    // Delivery log: one row per attempt, numbered, with the status of each.
    let log: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT webhook_id, attempt, status_code FROM notification_deliveries \
         ORDER BY webhook_id, attempt",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(log.len(), 40);
    for (id, endpoint) in &expected {
        let rows: Vec<_> = log.iter().filter(|(w, ..)| w == id).collect();
        if endpoint == "flaky" {
            assert_eq!(rows[0].1..=rows[1].1, 1..=2, "{id}");
            assert_eq!((rows[0].2, rows[1].2), (Some(503), Some(200)), "{id}");
        } else {
            assert_eq!(rows.len(), 1, "{id}");
            assert_eq!(rows[0].2, Some(200));
        }
    }

    // The bodies are the rendered default templates with exact amounts.
    let invoice = seen
        .iter()
        .find(|s| s.endpoint == "ok" && s.body.contains("\"INV-0000\""))
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&invoice.body).unwrap();
    assert_eq!(body["data"]["amount"], "10.00");
    assert_eq!(body["data"]["invoice_number"], "INV-0000");
}

async fn a_replayed_batch_adds_no_outbox_row(backend: Backend) {
    let scratch = open(backend).await;
    let store = &scratch.store;
    let t = tenant(
        vec![
            endpoint("http://127.0.0.1:9", "a", &[]),
            endpoint("http://127.0.0.1:9", "b", &[EventType::CreditMemoIssued]),
        ],
        None,
    );
    let evs = events(20);
    let first = commit(store, batch(&evs, &t, 0)).await;
    assert_eq!(first.applied, 16);
    let rows = scalar(store, "SELECT COUNT(*) FROM notification_outbox").await;
    assert_eq!(rows, 16 + 4, "a: every notification; b: credit memos only");
    let before = statuses(store).await;

    // The same offsets again (a consumer that lost its partition): refused as stale.
    let stale = commit(store, batch(&evs, &t, 0)).await;
    assert_eq!(stale.stale, Some(20));
    // The same events at new offsets (a producer retry): duplicates, no effect.
    let replay = commit(store, batch(&evs, &t, 20)).await;
    assert_eq!((replay.applied, replay.duplicates), (0, 16), "{replay:?}");
    assert_eq!(
        scalar(store, "SELECT COUNT(*) FROM notification_outbox").await,
        rows
    );
    assert_eq!(statuses(store).await, before);
}

async fn a_4xx_parks_at_once_and_retry_requeues_failed_rows_only(backend: Backend) {
    let scratch = open(backend).await;
    let store = &scratch.store;
    let (base, server) = serve().await;
    let t = tenant(
        vec![endpoint(&base, "reject", &[]), endpoint(&base, "ok", &[])],
        None,
    );
    let evs = events(4);
    commit(store, batch(&evs, &t, 0)).await;
    let d = dispatcher(store, config());
    assert!(d.drain(Duration::from_secs(20)).await);
    assert_eq!(server.to("reject").len(), 4, "one attempt each, no retry");
    let failed = list(
        store.pool(),
        &NotificationFilter {
            status: Some("failed".into()),
            ..NotificationFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(failed.len(), 4);
    for row in &failed {
        assert_eq!(row.endpoint_id, "reject");
        assert_eq!(row.attempts, 1);
        assert_eq!(row.last_status, Some(400));
        assert_eq!(
            row.last_error.as_deref(),
            Some("http 400: unknown customer")
        );
    }
    let delivered_id = list(
        store.pool(),
        &NotificationFilter {
            status: Some("delivered".into()),
            tenant: Some("acme".into()),
            limit: Some(1),
        },
    )
    .await
    .unwrap()[0]
        .webhook_id
        .clone();

    // Re-queue one by id, then the rest of the tenant; delivered rows never move.
    let one = retry(
        store.pool(),
        &RetrySelector::Id(failed[0].webhook_id.clone()),
    )
    .await
    .unwrap();
    assert_eq!(one.requeued, 1);
    let again = retry(store.pool(), &RetrySelector::Id(delivered_id.clone()))
        .await
        .unwrap();
    assert_eq!(again.requeued, 0);
    assert_eq!(again.current_status.as_deref(), Some("delivered"));
    let missing = retry(store.pool(), &RetrySelector::Id("msg_nope".into()))
        .await
        .unwrap();
    assert_eq!((missing.requeued, missing.current_status), (0, None));
    let rest = retry(store.pool(), &RetrySelector::Tenant("acme".into()))
        .await
        .unwrap();
    assert_eq!(rest.requeued, 3);

    server.accept_rejected.store(true, Ordering::SeqCst);
    assert!(d.drain(Duration::from_secs(20)).await);
    assert!(statuses(store).await.values().all(|s| s == "delivered"));
    assert_eq!(server.to("reject").len(), 8);
    assert_eq!(server.to("ok").len(), 4, "delivered rows were not re-sent");
    let rows = list(store.pool(), &NotificationFilter::default())
        .await
        .unwrap();
    let requeued = rows
        .iter()
        .find(|r| r.webhook_id == failed[0].webhook_id)
        .unwrap();
    assert_eq!(requeued.attempts, 2, "attempt numbers keep counting");
    let idle = retry(store.pool(), &RetrySelector::AllFailed)
        .await
        .unwrap();
    assert_eq!(idle.requeued, 0, "idempotent");
}

async fn the_breaker_opens_on_a_dead_endpoint_while_others_keep_flowing(backend: Backend) {
    let scratch = open(backend).await;
    let store = &scratch.store;
    let (base, server) = serve().await;
    let t = tenant(
        vec![endpoint(&base, "dead", &[]), endpoint(&base, "ok", &[])],
        None,
    );
    let evs = events(25);
    commit(store, batch(&evs, &t, 0)).await;
    let cfg = DispatcherConfig {
        concurrency: 1,
        max_attempts: 50,
        breaker: BreakerConfig {
            failure_threshold: 3,
            cool_down: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(60),
        },
        ..config()
    };
    let d = dispatcher(store, cfg);
    // Bounded: the dead endpoint's rows stay pending, so the outbox never drains.
    assert!(!d.drain(Duration::from_secs(3)).await);

    assert_eq!(
        server.to("ok").len(),
        20,
        "the healthy endpoint got everything"
    );
    let dead = server.to("dead");
    assert_eq!(
        dead.len(),
        3,
        "the breaker opened after 3 consecutive failures"
    );
    assert!(matches!(
        d.breaker().state("acme/dead"),
        BreakerState::Open { .. }
    ));
    let rows = list(store.pool(), &NotificationFilter::default())
        .await
        .unwrap();
    for row in rows.iter().filter(|r| r.endpoint_id == "dead") {
        assert_eq!(row.status, "pending", "rescheduled, not failed: {row:?}");
        assert!(row.attempts <= 1, "{row:?}");
    }
    let pushed_out = rows
        .iter()
        .filter(|r| r.endpoint_id == "dead" && r.attempts == 0)
        .count();
    assert_eq!(pushed_out, 17, "rows never tried while the breaker is open");
    for row in rows.iter().filter(|r| r.endpoint_id == "ok") {
        assert_eq!(row.status, "delivered");
    }
}

async fn a_crashed_dispatchers_claim_is_delivered_after_the_lease(backend: Backend) {
    let scratch = open(backend).await;
    let store = &scratch.store;
    let (base, server) = serve().await;
    let t = tenant(
        vec![endpoint(&base, "hang", &[EventType::PaymentCaptured])],
        None,
    );
    let evs = events(2); // one invoice, one payment
    commit(store, batch(&evs, &t, 0)).await;
    let cfg = DispatcherConfig {
        request_timeout: Duration::from_secs(3),
        lease: Duration::from_secs(4),
        ..config()
    };
    // A dispatcher claims the row, sends, and dies before the answer.
    let doomed = dispatcher(store, cfg.clone());
    let task = tokio::spawn(async move { doomed.dispatch_once().await });
    let started = Instant::now();
    while server.to("hang").is_empty() {
        assert!(started.elapsed() < Duration::from_secs(5), "no request");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    // Aborted on purpose: the join error says so and nothing else.
    task.await.ok();
    assert_eq!(statuses(store).await.values().next().unwrap(), "pending");

    // Another dispatcher takes it over once the lease has run out.
    let survivor = dispatcher(store, cfg);
    assert!(survivor.drain(Duration::from_secs(20)).await);
    let seen = server.to("hang");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].id, seen[1].id, "same webhook-id");
    assert_eq!(seen[0].body, seen[1].body, "same body");
    assert!(
        seen[1].at.duration_since(seen[0].at) >= Duration::from_secs(3),
        "not before the lease ran out"
    );
    assert!(statuses(store).await.values().all(|s| s == "delivered"));
}

async fn the_tenant_rate_limit_spaces_requests(backend: Backend) {
    let scratch = open(backend).await;
    let store = &scratch.store;
    let (base, server) = serve().await;
    let t = tenant(vec![endpoint(&base, "ok", &[])], Some(4));
    let evs: Vec<Event> = (0..10).map(|i| event(i * 5)).collect(); // 10 invoices
    commit(store, batch(&evs, &t, 0)).await;
    assert!(
        dispatcher(store, config())
            .drain(Duration::from_secs(20))
            .await
    );
    let mut at: Vec<Instant> = server.seen().iter().map(|s| s.at).collect();
    at.sort();
    assert_eq!(at.len(), 10);
    // Burst of 4, then one every 250 ms: the 10th at >= 1.5 s after the first.
    let span = at[9].duration_since(at[0]);
    assert!(span >= Duration::from_millis(1400), "{span:?}");
}

/// The same event for another tenant.
fn for_tenant(mut event: Event, tenant: &str) -> Event {
    if let Event::InvoiceFinalized(e) = &mut event {
        e.tenant_id = tenant.to_owned();
    }
    event
}

async fn a_throttled_tenant_waits_outside_the_lease_and_holds_back_no_one(backend: Backend) {
    let scratch = open(backend).await;
    let store = &scratch.store;
    let (base, server) = serve().await;
    // acme: 2 webhooks a second; globex: no limit. Ten invoices each in one outbox.
    let acme = tenant(vec![endpoint(&base, "acme", &[])], Some(2));
    let mut globex = tenant(vec![endpoint(&base, "globex", &[])], None);
    globex.tenant_id = TenantId::parse("globex").unwrap();
    let acme_events: Vec<Event> = (0..10).map(|i| event(i * 5)).collect();
    let globex_events: Vec<Event> = (0..10)
        .map(|i| for_tenant(event(i * 5), "globex"))
        .collect();
    commit(store, batch(&acme_events, &acme, 0)).await;
    commit(store, batch(&globex_events, &globex, 10)).await;
    // Two replicas with a lease far shorter than acme's five seconds of spacing: a sleep
    // inside the lease would let the other replica claim and re-send acme's rows.
    let cfg = DispatcherConfig {
        lease: Duration::from_millis(2500),
        request_timeout: Duration::from_secs(2),
        ..config()
    };
    let (one, two) = (dispatcher(store, cfg.clone()), dispatcher(store, cfg));
    let started = Instant::now();
    let (a, b) = tokio::join!(
        one.drain(Duration::from_secs(30)),
        two.drain(Duration::from_secs(30)),
    );
    assert!(a && b, "both replicas drained");
    let seen = server.seen();
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for s in &seen {
        *per_id.entry(s.id.clone()).or_default() += 1;
    }
    assert_eq!(per_id.len(), 20, "every notification arrived");
    assert!(
        per_id.values().all(|n| *n == 1),
        "no webhook was sent twice: {per_id:?}"
    );
    let last = |endpoint: &str| {
        server
            .to(endpoint)
            .iter()
            .map(|s| s.at.duration_since(started))
            .max()
            .unwrap_or_default()
    };
    let (globex_done, acme_done) = (last("globex"), last("acme"));
    assert!(
        globex_done < Duration::from_millis(1500),
        "globex is not held back by acme's limit: its last webhook after {globex_done:?}"
    );
    // The limit is per process: two replicas give acme up to 4 a second (burst 2 each).
    assert!(
        acme_done >= Duration::from_millis(1400),
        "acme keeps its 2 per second per replica: its last webhook after {acme_done:?}"
    );
}

async fn an_unrenderable_template_dead_letters_the_event(backend: Backend) {
    let scratch = open(backend).await;
    let store = &scratch.store;
    let mut broken = endpoint("http://127.0.0.1:9", "broken", &[]);
    broken.templates.payment_receipt = Some(r#"{"amount": {{amount}}}"#.to_owned());
    let t = tenant(vec![broken], None);
    let evs = events(2); // an invoice (default template) and a payment (broken template)
    let outcome = commit(store, batch(&evs, &t, 0)).await;
    assert_eq!(outcome.applied, 1);
    assert_eq!(outcome.reasons, vec![(ReasonCode::TemplateRender, 1)]);
    assert_eq!(
        scalar(store, "SELECT COUNT(*) FROM notification_outbox").await,
        1
    );
    let reason: String = sqlx::query_scalar("SELECT reason FROM dead_letters")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(reason, "template_render");
}
