//! Store conformance suite.
//!
//! Every scenario is written once, as `async fn scenario(store: &Store)`, and the
//! [`conformance!`] macro at the bottom turns each into one `#[tokio::test]` per backend: SQLite
//! (a file in a temp dir) and Postgres (a fresh `store_conf_<uuid>` database on 127.0.0.1:5432,
//! dropped `WITH (FORCE)` when the test ends, also when it panics).
//!
//! The consumer under test is deliberately tiny: its effect is one row per applied event in its
//! own table `test_effects`, with no unique constraint, so a duplicated effect shows up as an
//! extra row instead of being hidden by a constraint error.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use ledgerflow_core::{
    Coordinates, Currency, CustomerUpserted, Envelope, Event, EventType, Failure, PaymentCaptured,
    ReasonCode, SchemaId, TenantId,
};
use ledgerflow_store::{
    Backend, BatchInput, BatchOutcome, ConsumerLogic, DeadLetter, DeadLetterFilter,
    DeadLetterInput, DeadLetterStatus, Decision, ErasedConsumer, GENESIS_HASH, Migration,
    Migrations, RecordOutcome, Rows, SkippedInput, Store, StoreError, Values,
};
use ledgerflow_tenants::{AccountMapping, TenantConfig};
use ledgerflow_testkit::ScratchStore;
use sqlx::AnyConnection;
use uuid::Uuid;

const TOPIC: &str = "billing.events";
const CONSUMER: &str = "conformance";
const OTHER: &str = "conformance-other";

// ---------------------------------------------------------------------------------------------
// The test consumer
// ---------------------------------------------------------------------------------------------

/// The effect of one payment: a row in `test_effects`.
#[derive(Debug)]
struct TestEffect {
    event_id: String,
    tenant_id: String,
    amount: i64,
}

/// Applies `payment_captured` events as rows of `test_effects`. With `fail_write` it writes its
/// rows and then fails, so a missing rollback would leave them visible.
#[derive(Debug, Clone, Copy)]
struct TestConsumer {
    name: &'static str,
    fail_write: bool,
}

impl TestConsumer {
    const fn new(name: &'static str) -> Self {
        Self {
            name,
            fail_write: false,
        }
    }

    const fn failing(name: &'static str) -> Self {
        Self {
            name,
            fail_write: true,
        }
    }
}

impl ConsumerLogic for TestConsumer {
    type Effect = TestEffect;

    fn name(&self) -> &'static str {
        self.name
    }

    fn handles(&self, event_type: EventType) -> bool {
        event_type == EventType::PaymentCaptured
    }

    fn map(&self, envelope: &Envelope, _tenant: &TenantConfig) -> Result<TestEffect, Failure> {
        match &envelope.event {
            Event::PaymentCaptured(p) => Ok(TestEffect {
                event_id: envelope.meta.event_id.to_string(),
                tenant_id: envelope.meta.tenant_id.to_string(),
                amount: p.amount_minor,
            }),
            other => Err(Failure::permanent(
                ReasonCode::UnknownEventType,
                format!("test consumer does not map {}", other.event_type()),
            )),
        }
    }

    fn schema(&self, _backend: Backend) -> Migrations {
        TEST_MIGRATIONS
    }

    async fn write<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        _backend: Backend,
        effects: &'a [(&'a Envelope, TestEffect)],
    ) -> Result<(), StoreError> {
        for chunk in effects.chunks(1000) {
            let mut values = Values::new(4);
            for (_, effect) in chunk {
                values
                    .push(self.name.to_owned())
                    .push(effect.event_id.clone())
                    .push(effect.tenant_id.clone())
                    .push(effect.amount);
            }
            let (sql, args) = values.finish(
                "INSERT INTO test_effects (consumer, event_id, tenant_id, amount)",
                "",
            );
            sqlx::query_with(&sql, args)
                .execute(&mut *conn)
                .await
                .map_err(StoreError::query("writing test effects"))?;
        }
        if self.fail_write {
            return Err(StoreError::Invariant(
                "test consumer fails its write on purpose".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The test consumer's table, one migration for both backends.
const TEST_MIGRATIONS: Migrations = Migrations::new(
    "conformance",
    &[Migration::new(
        1,
        "test_effects",
        "CREATE TABLE IF NOT EXISTS test_effects (
            consumer TEXT NOT NULL,
            event_id TEXT NOT NULL,
            tenant_id TEXT NOT NULL,
            amount BIGINT NOT NULL
        )",
    )],
);

async fn install(store: &Store, consumer: &TestConsumer) {
    store
        .apply_schema(&ConsumerLogic::schema(consumer, store.backend()))
        .await
        .expect("consumer schema applies");
}

// ---------------------------------------------------------------------------------------------
// Records and batches
// ---------------------------------------------------------------------------------------------

/// A payment event the test consumer applies.
#[derive(Debug, Clone)]
struct Pay {
    id: Uuid,
    tenant: &'static str,
    amount: i64,
}

impl Pay {
    fn new(tenant: &'static str, amount: i64) -> Self {
        Self {
            id: Uuid::new_v4(),
            tenant,
            amount,
        }
    }

    /// The same event id with a different payload.
    fn altered(&self, amount: i64) -> Self {
        Self {
            amount,
            ..self.clone()
        }
    }

    fn event_id(&self) -> String {
        self.id.hyphenated().to_string()
    }

    fn event(&self) -> Event {
        Event::PaymentCaptured(PaymentCaptured {
            event_id: self.event_id(),
            tenant_id: self.tenant.to_owned(),
            occurred_at: 1_700_000_000_000_000,
            correlation_id: "corr-1".to_owned(),
            causation_id: None,
            source: "billing-api".to_owned(),
            payment_id: format!("pay-{}", self.id.simple()),
            invoice_id: "inv-1".to_owned(),
            customer_id: "cus-1".to_owned(),
            currency: "USD".to_owned(),
            amount_minor: self.amount,
            fee_minor: 0,
            method: "card".to_owned(),
            processor_reference: "ch_1".to_owned(),
            captured_at: 1_700_000_000_000_000,
            settlement_currency: None,
        })
    }
}

/// A permanent failure found before the store (bad framing, unknown tenant, ...).
#[derive(Debug, Clone)]
struct Poison {
    reason: ReasonCode,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<String>)>,
    tenant: Option<&'static str>,
}

impl Poison {
    fn new(reason: ReasonCode, tenant: Option<&'static str>) -> Self {
        Self {
            reason,
            key: tenant.map(|t| t.as_bytes().to_vec()),
            value: Some(vec![0xff, 0x00, 0x01]),
            headers: vec![("ce_type".to_owned(), Some("payment_captured".to_owned()))],
            tenant,
        }
    }
}

/// One record of a test batch.
#[derive(Debug, Clone)]
enum Item {
    /// A payment: mapped and applied unless seen before.
    Pay(Pay),
    /// A `customer_upserted` the test consumer does not act on.
    Skip { id: Uuid, tenant: &'static str },
    /// A dead letter.
    Poison(Poison),
}

fn skip(tenant: &'static str) -> Item {
    Item::Skip {
        id: Uuid::new_v4(),
        tenant,
    }
}

fn pays(n: usize, tenant: &'static str) -> Vec<Pay> {
    (0..n).map(|i| Pay::new(tenant, 100 + i as i64)).collect()
}

fn items(pays: &[Pay]) -> Vec<Item> {
    pays.iter().cloned().map(Item::Pay).collect()
}

fn tenant_config(tenant: &TenantId) -> TenantConfig {
    TenantConfig {
        tenant_id: tenant.clone(),
        legal_entity: "Test Ltd".to_owned(),
        functional_currency: Currency::parse("USD").expect("usd"),
        erp: None,
        accounts: AccountMapping {
            receivable: "1200".to_owned(),
            revenue_default: "4000".to_owned(),
            revenue_by_family: BTreeMap::new(),
            tax_payable: "2200".to_owned(),
            cash_clearing: "1010".to_owned(),
            payment_fees: "6100".to_owned(),
            unapplied_cash: "2400".to_owned(),
        },
        webhooks: Vec::new(),
        rate_limit_per_sec: None,
    }
}

fn envelope(event: Event, partition: i32, offset: i64) -> Envelope {
    let meta = event.validate().expect("test events are valid");
    Envelope::new(
        meta,
        event,
        SchemaId(1),
        Coordinates {
            topic: TOPIC.to_owned(),
            partition,
            offset,
        },
    )
}

/// The raw Kafka value of a test event: Confluent header then the JSON (stands in for Avro).
fn raw_value(event: &Event) -> Vec<u8> {
    let mut value = vec![0, 0, 0, 0, 1];
    value.extend(serde_json::to_vec(event).expect("json"));
    value
}

fn record(consumer: &TestConsumer, partition: i32, offset: i64, item: &Item) -> RecordOutcome {
    match item {
        Item::Pay(pay) => {
            let event = pay.event();
            let value = raw_value(&event);
            let env = envelope(event, partition, offset);
            let effect = consumer
                .map_erased(&env, &tenant_config(&env.meta.tenant_id))
                .expect("payments map");
            let raw = DeadLetterInput {
                offset,
                reason: ReasonCode::Validation,
                error: String::new(),
                key: Some(pay.tenant.as_bytes().to_vec()),
                value: Some(value),
                headers: vec![
                    ("ce_type".to_owned(), Some("payment_captured".to_owned())),
                    ("traceparent".to_owned(), None),
                ],
                schema_id: Some(1),
                event_id: Some(pay.event_id()),
                tenant_id: Some(pay.tenant.to_owned()),
                event_type: Some("payment_captured".to_owned()),
            };
            RecordOutcome::Mapped {
                envelope: env,
                effect,
                raw: Box::new(raw),
            }
        }
        Item::Skip { id, tenant } => {
            let event = Event::CustomerUpserted(CustomerUpserted {
                event_id: id.hyphenated().to_string(),
                tenant_id: (*tenant).to_owned(),
                occurred_at: 1_700_000_000_000_000,
                correlation_id: "corr-1".to_owned(),
                causation_id: None,
                source: "crm".to_owned(),
                customer_id: "cus-1".to_owned(),
                name: "Customer One".to_owned(),
                email: None,
                country: "DE".to_owned(),
                currency: "EUR".to_owned(),
                tax_id: None,
            });
            assert!(!ConsumerLogic::handles(consumer, event.event_type()));
            RecordOutcome::Skipped(SkippedInput {
                envelope: envelope(event, partition, offset),
            })
        }
        Item::Poison(p) => RecordOutcome::DeadLetter(DeadLetterInput {
            offset,
            reason: p.reason,
            error: format!("{}: poison record at offset {offset}", p.reason),
            key: p.key.clone(),
            value: p.value.clone(),
            headers: p.headers.clone(),
            schema_id: Some(7),
            event_id: None,
            tenant_id: p.tenant.map(str::to_owned),
            event_type: None,
        }),
    }
}

/// Consecutive offsets from `first_offset`; the next offset is the one after the last record.
fn batch(consumer: &TestConsumer, partition: i32, first_offset: i64, items: &[Item]) -> BatchInput {
    let records = items
        .iter()
        .enumerate()
        .map(|(i, item)| record(consumer, partition, first_offset + i as i64, item))
        .collect::<Vec<_>>();
    BatchInput {
        topic: TOPIC.to_owned(),
        partition,
        next_offset: first_offset + records.len() as i64,
        records,
    }
}

async fn commit(
    store: &Store,
    consumer: &TestConsumer,
    partition: i32,
    first_offset: i64,
    items: &[Item],
) -> BatchOutcome {
    store
        .commit_batch(consumer, batch(consumer, partition, first_offset, items))
        .await
        .expect("batch commits")
}

// ---------------------------------------------------------------------------------------------
// Reading the database back
// ---------------------------------------------------------------------------------------------

async fn scalar(store: &Store, sql: &str, binds: &[&str]) -> i64 {
    let mut query = sqlx::query_scalar::<_, i64>(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    query.fetch_one(store.pool()).await.expect(sql)
}

async fn effects(store: &Store, consumer: &str) -> i64 {
    scalar(
        store,
        "SELECT CAST(COUNT(*) AS BIGINT) FROM test_effects WHERE consumer = $1",
        &[consumer],
    )
    .await
}

/// Effect rows per event id of a consumer.
async fn effects_by_event(store: &Store, consumer: &str) -> HashMap<String, (i64, i64)> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT event_id, CAST(COUNT(*) AS BIGINT), CAST(SUM(amount) AS BIGINT) FROM test_effects \
         WHERE consumer = $1 GROUP BY event_id",
    )
    .bind(consumer)
    .fetch_all(store.pool())
    .await
    .expect("effects by event");
    rows.into_iter()
        .map(|(id, n, sum)| (id, (n, sum)))
        .collect()
}

async fn inbox(store: &Store, consumer: &str) -> i64 {
    scalar(
        store,
        "SELECT CAST(COUNT(*) AS BIGINT) FROM inbox WHERE consumer = $1",
        &[consumer],
    )
    .await
}

async fn in_inbox(store: &Store, consumer: &str, event_id: &str) -> bool {
    scalar(
        store,
        "SELECT CAST(COUNT(*) AS BIGINT) FROM inbox WHERE consumer = $1 AND event_id = $2",
        &[consumer, event_id],
    )
    .await
        == 1
}

async fn decisions(store: &Store, consumer: &str, partition: i32) -> Vec<Decision> {
    store
        .audit_rows(consumer, TOPIC, partition)
        .await
        .expect("audit rows")
        .into_iter()
        .map(|r| r.decision)
        .collect()
}

async fn all_dead_letters(store: &Store) -> Vec<DeadLetter> {
    store
        .dead_letters(&DeadLetterFilter::default())
        .await
        .expect("dead letters")
}

/// Everything a batch can write, for "nothing changed" assertions.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    effects: i64,
    inbox: i64,
    audit: i64,
    dead_letters: i64,
    positions: Vec<(String, i32, i64)>,
}

async fn snapshot(store: &Store) -> Snapshot {
    let count = |table: &'static str| async move {
        scalar(
            store,
            &format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"),
            &[],
        )
        .await
    };
    Snapshot {
        effects: count("test_effects").await,
        inbox: count("inbox").await,
        audit: count("audit_log").await,
        dead_letters: count("dead_letters").await,
        positions: store
            .positions(None)
            .await
            .expect("positions")
            .into_iter()
            .map(|p| (p.consumer, p.partition, p.next_offset))
            .collect(),
    }
}

async fn assert_chain_intact(store: &Store) {
    let report = store.verify_audit(None, |_| {}).await.expect("verify");
    assert!(
        report.is_intact(),
        "audit chain broken: {:?}",
        report.breaks
    );
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// 1. New events are applied exactly once and every record is audited as applied.
async fn new_events_are_applied_once(store: &Store) {
    let consumer = TestConsumer::new(CONSUMER);
    install(store, &consumer).await;
    let mut events = pays(6, "acme");
    events.extend(pays(4, "globex"));

    let outcome = commit(store, &consumer, 0, 0, &items(&events)).await;
    assert_eq!(outcome.applied, 10);
    assert_eq!(
        (outcome.duplicates, outcome.dead_lettered, outcome.skipped),
        (0, 0, 0)
    );
    assert_eq!(outcome.stale, None);
    assert_eq!(
        outcome.applied_types(),
        vec![("payment_captured".to_owned(), 10)]
    );
    assert_eq!(
        outcome.decided_types,
        vec![(Decision::Applied, "payment_captured".to_owned(), 10)]
    );

    assert_eq!(effects(store, CONSUMER).await, 10);
    let by_event = effects_by_event(store, CONSUMER).await;
    for pay in &events {
        assert_eq!(by_event.get(&pay.event_id()), Some(&(1, pay.amount)));
    }
    assert_eq!(inbox(store, CONSUMER).await, 10);

    let rows = store
        .audit_rows(CONSUMER, TOPIC, 0)
        .await
        .expect("audit rows");
    assert_eq!(rows.len(), 10);
    for (i, (row, pay)) in rows.iter().zip(&events).enumerate() {
        assert_eq!(row.decision, Decision::Applied);
        assert_eq!(row.seq, i as i64 + 1);
        assert_eq!(row.offset, i as i64);
        assert_eq!(row.event_id.as_deref(), Some(pay.event_id().as_str()));
        assert_eq!(row.tenant_id.as_deref(), Some(pay.tenant));
        assert_eq!(row.event_type.as_deref(), Some("payment_captured"));
        let env = envelope(pay.event(), 0, i as i64);
        assert_eq!(
            row.payload_hash.as_deref(),
            Some(hex::encode(env.payload_hash).as_str())
        );
        assert_eq!(row.schema_id, Some(1));
        assert_eq!(row.reason, None);
    }
    assert_eq!(rows[0].prev_hash, GENESIS_HASH);
    assert_eq!(
        store.position(CONSUMER, TOPIC, 0).await.expect("position"),
        Some(10)
    );
    assert_eq!(
        store.position(CONSUMER, TOPIC, 1).await.expect("position"),
        None
    );
    assert_chain_intact(store).await;
}

/// 2. Redelivered events (later offsets, same ids and payloads) have no effect; duplicates
///    inside one batch apply the first occurrence only.
async fn duplicates_have_no_effect(store: &Store) {
    let consumer = TestConsumer::new(CONSUMER);
    install(store, &consumer).await;
    let events = pays(5, "acme");
    commit(store, &consumer, 0, 0, &items(&events)).await;

    // The producer retried: the same events again at offsets 5..10.
    let again = commit(store, &consumer, 0, 5, &items(&events)).await;
    assert_eq!(again.applied, 0);
    assert_eq!(again.duplicates, 5);
    assert_eq!(again.dead_lettered, 0);
    assert_eq!(effects(store, CONSUMER).await, 5);
    assert_eq!(inbox(store, CONSUMER).await, 5);
    let all = decisions(store, CONSUMER, 0).await;
    assert_eq!(all[..5], [Decision::Applied; 5]);
    assert_eq!(all[5..], [Decision::Duplicate; 5]);

    // Within one batch: X, X, Y, Y.
    let x = Pay::new("acme", 7);
    let y = Pay::new("globex", 9);
    let within = [
        Item::Pay(x.clone()),
        Item::Pay(x.clone()),
        Item::Pay(y.clone()),
        Item::Pay(y.clone()),
    ];
    let outcome = commit(store, &consumer, 0, 10, &within).await;
    assert_eq!((outcome.applied, outcome.duplicates), (2, 2));
    assert_eq!(effects(store, CONSUMER).await, 7);
    let by_event = effects_by_event(store, CONSUMER).await;
    assert_eq!(by_event.get(&x.event_id()), Some(&(1, 7)));
    assert_eq!(by_event.get(&y.event_id()), Some(&(1, 9)));
    assert_eq!(
        decisions(store, CONSUMER, 0).await[10..],
        [
            Decision::Applied,
            Decision::Duplicate,
            Decision::Applied,
            Decision::Duplicate
        ]
    );

    // The same events on another partition are still duplicates: the inbox is per consumer.
    let elsewhere = commit(store, &consumer, 3, 0, &items(&events)).await;
    assert_eq!((elsewhere.applied, elsewhere.duplicates), (0, 5));
    // ... but another consumer applies them for itself.
    let other = TestConsumer::new(OTHER);
    let theirs = commit(store, &other, 0, 0, &items(&events)).await;
    assert_eq!(theirs.applied, 5);
    assert_eq!(effects(store, CONSUMER).await, 7);
    assert_eq!(effects(store, OTHER).await, 5);
    assert_eq!(
        store.position(CONSUMER, TOPIC, 0).await.expect("position"),
        Some(14)
    );
    assert_chain_intact(store).await;
}

/// 3. The same event id with a different payload is dead-lettered, never applied twice.
async fn idempotency_conflicts_are_dead_lettered(store: &Store) {
    let consumer = TestConsumer::new(CONSUMER);
    install(store, &consumer).await;
    let x = Pay::new("acme", 100);
    commit(store, &consumer, 0, 0, &[Item::Pay(x.clone())]).await;

    let changed = x.altered(999);
    let outcome = commit(store, &consumer, 0, 1, &[Item::Pay(changed.clone())]).await;
    assert_eq!(outcome.applied, 0);
    assert_eq!(outcome.duplicates, 0);
    assert_eq!(outcome.conflicts, 1);
    assert_eq!(outcome.dead_lettered, 1);
    assert_eq!(outcome.reasons, vec![(ReasonCode::IdempotencyConflict, 1)]);

    assert_eq!(
        effects_by_event(store, CONSUMER).await.get(&x.event_id()),
        Some(&(1, 100)),
        "the first payload's effect stays, no second effect"
    );
    let letters = all_dead_letters(store).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.reason, ReasonCode::IdempotencyConflict);
    assert_eq!(letter.offset, 1);
    assert_eq!(letter.event_id.as_deref(), Some(x.event_id().as_str()));
    assert_eq!(letter.tenant_id.as_deref(), Some("acme"));
    assert_eq!(
        letter.value.as_deref(),
        Some(raw_value(&changed.event()).as_slice())
    );
    assert_eq!(letter.key.as_deref(), Some(b"acme".as_slice()));
    assert!(letter.error.contains(&x.event_id()), "{}", letter.error);

    let rows = store.audit_rows(CONSUMER, TOPIC, 0).await.expect("audit");
    assert_eq!(rows[1].decision, Decision::DeadLettered);
    assert_eq!(rows[1].reason.as_deref(), Some("idempotency_conflict"));
    assert_eq!(rows[1].offset, 1);
    assert_eq!(rows[1].detail.as_deref(), Some(letter.error.as_str()));

    // Inside one batch: Y applied, then Y with another payload dead-lettered.
    let y = Pay::new("globex", 5);
    let outcome = commit(
        store,
        &consumer,
        0,
        2,
        &[Item::Pay(y.clone()), Item::Pay(y.altered(6))],
    )
    .await;
    assert_eq!((outcome.applied, outcome.conflicts), (1, 1));
    assert_eq!(
        effects_by_event(store, CONSUMER).await.get(&y.event_id()),
        Some(&(1, 5))
    );
    assert_eq!(
        decisions(store, CONSUMER, 0).await,
        [
            Decision::Applied,
            Decision::DeadLettered,
            Decision::Applied,
            Decision::DeadLettered
        ]
    );
    assert_eq!(all_dead_letters(store).await.len(), 2);
    assert_eq!(effects(store, CONSUMER).await, 2);
    assert_chain_intact(store).await;
}

/// 4. Poison records become dead letters with their raw bytes, and the batch goes on.
async fn poison_records_are_dead_lettered_byte_exact(store: &Store) {
    let consumer = TestConsumer::new(CONSUMER);
    install(store, &consumer).await;
    let a = Pay::new("acme", 1);
    let b = Pay::new("acme", 2);
    let truncated = Poison {
        reason: ReasonCode::TruncatedHeader,
        key: Some(vec![0xff, 0x00, 0xfe, b'\'', b'"', 0x80]),
        value: Some(vec![0x00]),
        headers: vec![
            ("ce_type".to_owned(), Some("payment_captured".to_owned())),
            (
                "quote\"d".to_owned(),
                Some("it's \"quoted\"\n\u{1F4B8} ünïcode".to_owned()),
            ),
            ("null-valued".to_owned(), None),
            ("empty".to_owned(), Some(String::new())),
        ],
        tenant: Some("acme"),
    };
    let undecodable = Poison {
        reason: ReasonCode::AvroDecode,
        key: None,
        value: Some((0..=255u8).collect()),
        headers: Vec::new(),
        tenant: None,
    };
    let outcome = commit(
        store,
        &consumer,
        0,
        0,
        &[
            Item::Pay(a.clone()),
            Item::Poison(truncated.clone()),
            Item::Pay(b.clone()),
            Item::Poison(undecodable.clone()),
        ],
    )
    .await;
    assert_eq!((outcome.applied, outcome.dead_lettered), (2, 2));
    assert_eq!(
        outcome.reasons,
        vec![
            (ReasonCode::TruncatedHeader, 1),
            (ReasonCode::AvroDecode, 1)
        ]
    );
    assert_eq!(effects(store, CONSUMER).await, 2);
    assert_eq!(
        store.position(CONSUMER, TOPIC, 0).await.expect("position"),
        Some(4)
    );

    let letters = all_dead_letters(store).await;
    assert_eq!(letters.len(), 2);
    for (letter, (offset, poison)) in letters.iter().zip([(1, &truncated), (3, &undecodable)]) {
        assert_eq!(letter.consumer, CONSUMER);
        assert_eq!(letter.topic, TOPIC);
        assert_eq!(letter.partition, 0);
        assert_eq!(letter.offset, offset);
        assert_eq!(letter.reason, poison.reason);
        assert_eq!(
            letter.error,
            format!("{}: poison record at offset {offset}", poison.reason)
        );
        assert_eq!(letter.key, poison.key, "key bytes preserved");
        assert_eq!(letter.value, poison.value, "value bytes preserved");
        let headers: Vec<(String, Option<String>)> =
            serde_json::from_str(&letter.headers).expect("headers are json");
        assert_eq!(headers, poison.headers, "headers preserved");
        assert_eq!(letter.schema_id, Some(7));
        assert_eq!(letter.tenant_id.as_deref(), poison.tenant);
        assert_eq!(letter.status, DeadLetterStatus::Open);
        assert_eq!(letter.attempts, 0);
    }
    let rows = store.audit_rows(CONSUMER, TOPIC, 0).await.expect("audit");
    assert_eq!(
        rows.iter()
            .map(|r| (r.decision, r.reason.clone()))
            .collect::<Vec<_>>(),
        vec![
            (Decision::Applied, None),
            (Decision::DeadLettered, Some("truncated_header".to_owned())),
            (Decision::Applied, None),
            (Decision::DeadLettered, Some("avro_decode".to_owned())),
        ]
    );
    assert_eq!(rows[1].detail.as_deref(), Some(letters[0].error.as_str()));

    // A batch with a poison record that rolls back, then is retried: one dead letter.
    let c = Pay::new("globex", 3);
    let poison = Poison::new(ReasonCode::UnknownTenant, Some("nobody"));
    let retry = [Item::Poison(poison), Item::Pay(c.clone())];
    let failed = store
        .commit_batch(
            &TestConsumer::failing(CONSUMER),
            batch(&consumer, 0, 4, &retry),
        )
        .await;
    assert!(failed.is_err(), "the failing consumer fails the batch");
    assert_eq!(all_dead_letters(store).await.len(), 2);
    let outcome = commit(store, &consumer, 0, 4, &retry).await;
    assert_eq!((outcome.applied, outcome.dead_lettered), (1, 1));
    assert_eq!(all_dead_letters(store).await.len(), 3);

    // A replay over the same offsets (operator reset the position): still one dead letter per
    // offset, and no second effect.
    sqlx::query("UPDATE positions SET next_offset = 4 WHERE consumer = $1")
        .bind(CONSUMER)
        .execute(store.pool())
        .await
        .expect("reset position");
    let replayed = commit(store, &consumer, 0, 4, &retry).await;
    assert_eq!((replayed.applied, replayed.duplicates), (0, 1));
    let letters = all_dead_letters(store).await;
    assert_eq!(letters.len(), 3);
    assert_eq!(
        letters.iter().filter(|l| l.offset == 4).count(),
        1,
        "one dead letter per offset"
    );
    assert_eq!(effects(store, CONSUMER).await, 3);
    assert_chain_intact(store).await;
}

/// 5. Records the consumer does not act on are audited as skipped and nothing else.
async fn skipped_records_are_only_audited(store: &Store) {
    let consumer = TestConsumer::new(CONSUMER);
    install(store, &consumer).await;
    let a = Pay::new("acme", 1);
    let s1 = skip("acme");
    let s2 = skip("globex");
    let outcome = commit(
        store,
        &consumer,
        0,
        0,
        &[s1.clone(), Item::Pay(a.clone()), s2.clone()],
    )
    .await;
    assert_eq!((outcome.applied, outcome.skipped), (1, 2));
    assert_eq!(inbox(store, CONSUMER).await, 1);
    assert_eq!(effects(store, CONSUMER).await, 1);
    for s in [&s1, &s2] {
        let Item::Skip { id, .. } = s else {
            unreachable!()
        };
        assert!(!in_inbox(store, CONSUMER, &id.hyphenated().to_string()).await);
    }
    let rows = store.audit_rows(CONSUMER, TOPIC, 0).await.expect("audit");
    assert_eq!(
        rows.iter().map(|r| r.decision).collect::<Vec<_>>(),
        [Decision::Skipped, Decision::Applied, Decision::Skipped]
    );
    assert_eq!(rows[0].event_type.as_deref(), Some("customer_upserted"));
    assert!(rows[0].payload_hash.is_some());
    assert_eq!(
        store.position(CONSUMER, TOPIC, 0).await.expect("position"),
        Some(3)
    );
    assert_chain_intact(store).await;
}

/// 6. A batch behind the stored position is stale: nothing is written.
async fn stale_batches_write_nothing(store: &Store) {
    let consumer = TestConsumer::new(CONSUMER);
    install(store, &consumer).await;
    commit(store, &consumer, 0, 0, &items(&pays(10, "acme"))).await;
    let before = snapshot(store).await;

    for first in [5, 9, 0] {
        let fresh = pays(10, "acme");
        let mut records = items(&fresh);
        records.push(Item::Poison(Poison::new(ReasonCode::Validation, None)));
        records.push(skip("acme"));
        let outcome = commit(store, &consumer, 0, first, &records).await;
        assert_eq!(outcome.stale, Some(10), "batch at {first} is stale");
        assert_eq!(
            (
                outcome.applied,
                outcome.duplicates,
                outcome.dead_lettered,
                outcome.skipped
            ),
            (0, 0, 0, 0)
        );
        assert_eq!(
            snapshot(store).await,
            before,
            "a stale batch writes nothing"
        );
    }

    let next = commit(store, &consumer, 0, 10, &items(&pays(5, "acme"))).await;
    assert_eq!(next.stale, None);
    assert_eq!(next.applied, 5);
    assert_eq!(
        store.position(CONSUMER, TOPIC, 0).await.expect("position"),
        Some(15)
    );
    // Positions are per partition and per consumer.
    assert_eq!(
        commit(store, &consumer, 1, 0, &items(&pays(1, "acme")))
            .await
            .stale,
        None
    );
    assert_eq!(
        commit(
            store,
            &TestConsumer::new(OTHER),
            0,
            0,
            &items(&pays(1, "acme"))
        )
        .await
        .stale,
        None
    );
    assert_chain_intact(store).await;
}

/// 7. A failing consumer write rolls back the whole batch; a retry applies it once.
async fn failed_batches_leave_nothing_behind(store: &Store) {
    let good = TestConsumer::new(CONSUMER);
    let bad = TestConsumer::failing(CONSUMER);
    install(store, &good).await;
    let earlier = pays(3, "acme");
    commit(store, &good, 0, 0, &items(&earlier)).await;
    let before = snapshot(store).await;

    let fresh = pays(2, "globex");
    let records = vec![
        Item::Pay(fresh[0].clone()),
        Item::Poison(Poison::new(ReasonCode::AvroDecode, Some("acme"))),
        skip("acme"),
        Item::Pay(fresh[1].clone()),
        Item::Pay(earlier[0].clone()),
    ];
    for _ in 0..2 {
        let err = store
            .commit_batch(&bad, batch(&good, 0, 3, &records))
            .await
            .expect_err("the write fails");
        assert!(
            matches!(err, StoreError::Invariant(_)),
            "the consumer's own error comes back: {err:?}"
        );
        assert_eq!(
            snapshot(store).await,
            before,
            "nothing of the batch is visible"
        );
    }
    // A failing first batch of a partition leaves no position behind either.
    store
        .commit_batch(&bad, batch(&good, 1, 0, &items(&pays(2, "acme"))))
        .await
        .expect_err("the write fails");
    assert_eq!(snapshot(store).await, before);
    assert_chain_intact(store).await;

    let outcome = commit(store, &good, 0, 3, &records).await;
    assert_eq!(
        (
            outcome.applied,
            outcome.dead_lettered,
            outcome.skipped,
            outcome.duplicates
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(effects(store, CONSUMER).await, 5);
    let by_event = effects_by_event(store, CONSUMER).await;
    assert!(by_event.values().all(|(n, _)| *n == 1), "{by_event:?}");
    assert_eq!(all_dead_letters(store).await.len(), 1);
    assert_eq!(
        store.position(CONSUMER, TOPIC, 0).await.expect("position"),
        Some(8)
    );
    assert_eq!(
        store
            .audit_rows(CONSUMER, TOPIC, 0)
            .await
            .expect("audit")
            .len(),
        8
    );
    assert_chain_intact(store).await;
}

/// Several batches of mixed records per partition: applied, duplicate, dead letter, skipped.
async fn fill_chains(store: &Store, consumers: &[TestConsumer], partitions: i32) -> u64 {
    let mut rows = 0;
    for consumer in consumers {
        for partition in 0..partitions {
            let mut offset = 0;
            let mut previous: Vec<Pay> = Vec::new();
            for round in 0..3 {
                let fresh = pays(4 + round, "acme");
                let mut records = items(&fresh);
                records.insert(1, Item::Poison(Poison::new(ReasonCode::Validation, None)));
                records.push(skip("globex"));
                if let Some(p) = previous.first() {
                    records.push(Item::Pay(p.clone()));
                }
                let n = records.len() as i64;
                let outcome = commit(store, consumer, partition, offset, &records).await;
                assert_eq!(outcome.applied, fresh.len() as u64);
                offset += n;
                rows += n as u64;
                previous = fresh;
            }
        }
    }
    rows
}

/// 8. The audit chain verifies, heads match, the log is append-only, and tampering by someone
///    who bypasses the triggers is found at the exact row.
async fn audit_chain_is_tamper_evident(store: &Store) {
    let consumers = [TestConsumer::new(CONSUMER), TestConsumer::new(OTHER)];
    install(store, &consumers[0]).await;
    let total = fill_chains(store, &consumers, 3).await;

    let mut progress_calls = 0;
    let report = store
        .verify_audit(None, |_| progress_calls += 1)
        .await
        .expect("verify");
    assert!(report.is_intact(), "{:?}", report.breaks);
    assert_eq!(report.chains, 6);
    assert_eq!(report.rows, total);
    assert!(progress_calls > 0);
    let mine = store
        .verify_audit(Some(CONSUMER), |_| {})
        .await
        .expect("verify");
    assert_eq!((mine.chains, mine.rows), (3, total / 2));

    let heads = store.audit_heads(None).await.expect("heads");
    assert_eq!(heads.len(), 6);
    for head in &heads {
        let rows = store
            .audit_rows(&head.consumer, &head.topic, head.partition)
            .await
            .expect("rows");
        assert_eq!(head.seq, rows.len() as i64);
        assert_eq!(head.hash, rows.last().expect("rows").hash);
        let mut prev = GENESIS_HASH.to_owned();
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row.seq, i as i64 + 1);
            assert_eq!(row.prev_hash, prev);
            assert_eq!(row.compute_hash(), row.hash);
            prev = row.hash.clone();
        }
    }
    assert_eq!(
        store.audit_heads(Some(OTHER)).await.expect("heads").len(),
        3
    );

    // Append-only: the triggers reject UPDATE and DELETE (and TRUNCATE on Postgres).
    let mut attempts = vec![
        "UPDATE audit_log SET tenant_id = 'mallory' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 2",
    ];
    if store.backend() == Backend::Postgres {
        attempts.push("TRUNCATE audit_log");
    }
    for sql in attempts {
        let err = sqlx::query(sql)
            .execute(store.pool())
            .await
            .expect_err("audit_log is append-only");
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_chain_intact(store).await;

    // Someone with enough rights bypasses the triggers.
    let bypass: &[&str] = match store.backend() {
        Backend::Postgres => &["ALTER TABLE audit_log DISABLE TRIGGER USER"],
        Backend::Sqlite => &[
            "DROP TRIGGER audit_log_no_update",
            "DROP TRIGGER audit_log_no_delete",
        ],
    };
    for sql in bypass {
        sqlx::query(sql).execute(store.pool()).await.expect(sql);
    }
    let modified = sqlx::query(
        "UPDATE audit_log SET tenant_id = 'mallory' \
         WHERE consumer = $1 AND topic = $2 AND partition = $3 AND seq = $4",
    )
    .bind(CONSUMER)
    .bind(TOPIC)
    .bind(1i32)
    .bind(3i64)
    .execute(store.pool())
    .await
    .expect("tamper");
    assert_eq!(modified.rows_affected(), 1);
    let report = store.verify_audit(None, |_| {}).await.expect("verify");
    assert_eq!(report.breaks.len(), 1, "{:?}", report.breaks);
    let found = &report.breaks[0];
    assert_eq!(
        (found.consumer.as_str(), found.partition, found.seq),
        (CONSUMER, 1, 3)
    );
    assert!(found.problem.contains("modified"), "{}", found.problem);

    // Deleting a row in the middle of another chain.
    let deleted = sqlx::query(
        "DELETE FROM audit_log WHERE consumer = $1 AND topic = $2 AND partition = $3 AND seq = $4",
    )
    .bind(OTHER)
    .bind(TOPIC)
    .bind(2i32)
    .bind(5i64)
    .execute(store.pool())
    .await
    .expect("tamper");
    assert_eq!(deleted.rows_affected(), 1);
    let report = store.verify_audit(None, |_| {}).await.expect("verify");
    assert_eq!(report.breaks.len(), 2, "{:?}", report.breaks);
    let gap = report
        .breaks
        .iter()
        .find(|b| b.consumer == OTHER)
        .expect("the deletion is found");
    assert_eq!(gap.partition, 2);
    assert_eq!(gap.seq, 6, "the first row after the gap");
    assert!(
        gap.problem.contains("seq 6 follows seq 4"),
        "{}",
        gap.problem
    );
    // Verifying one consumer reports only its own chains.
    let other_only = store
        .verify_audit(Some(OTHER), |_| {})
        .await
        .expect("verify");
    assert_eq!(other_only.breaks.len(), 1);
}

/// 9. Positions, decision counts and dead-letter filters report what was committed.
async fn positions_and_stats_add_up(store: &Store) {
    let consumer = TestConsumer::new(CONSUMER);
    let other = TestConsumer::new(OTHER);
    install(store, &consumer).await;
    let a1 = Pay::new("acme", 10);
    let a2 = Pay::new("acme", 20);
    let g1 = Pay::new("globex", 30);

    // CONSUMER p0: applied 3, validation 1 (acme), skipped 1; the broker skipped to offset 7.
    let mut p0 = batch(
        &consumer,
        0,
        0,
        &[
            Item::Pay(a1.clone()),
            Item::Pay(a2.clone()),
            Item::Poison(Poison::new(ReasonCode::Validation, Some("acme"))),
            skip("acme"),
            Item::Pay(g1.clone()),
        ],
    );
    p0.next_offset = 7;
    store.commit_batch(&consumer, p0).await.expect("commit");
    // CONSUMER p1: duplicate 1, conflict 1 (acme), unknown tenant 1 (globex).
    commit(
        store,
        &consumer,
        1,
        0,
        &[
            Item::Pay(a1.clone()),
            Item::Pay(a2.altered(21)),
            Item::Poison(Poison::new(ReasonCode::UnknownTenant, Some("globex"))),
        ],
    )
    .await;
    // OTHER p0: applied 2, validation 1 (acme), skipped 1.
    commit(
        store,
        &other,
        0,
        0,
        &[
            Item::Pay(a1.clone()),
            Item::Poison(Poison::new(ReasonCode::Validation, Some("acme"))),
            Item::Pay(Pay::new("globex", 40)),
            skip("globex"),
        ],
    )
    .await;

    let positions: Vec<_> = store
        .positions(None)
        .await
        .expect("positions")
        .into_iter()
        .map(|p| (p.consumer, p.topic, p.partition, p.next_offset))
        .collect();
    assert_eq!(
        positions,
        vec![
            (CONSUMER.to_owned(), TOPIC.to_owned(), 0, 7),
            (CONSUMER.to_owned(), TOPIC.to_owned(), 1, 3),
            (OTHER.to_owned(), TOPIC.to_owned(), 0, 4),
        ]
    );
    let theirs = store.positions(Some(OTHER)).await.expect("positions");
    assert_eq!(theirs.len(), 1);
    assert!(theirs[0].updated_at > 0);

    let counts = |consumer: Option<&'static str>| async move {
        let mut got: Vec<_> = store
            .decision_counts(consumer)
            .await
            .expect("counts")
            .into_iter()
            .map(|c| (c.consumer, c.decision, c.reason, c.count))
            .collect();
        // NULL reasons sort first on SQLite and last on Postgres.
        got.sort();
        got
    };
    let row = |c: &str, d: &str, r: Option<&str>, n: i64| {
        (c.to_owned(), d.to_owned(), r.map(str::to_owned), n)
    };
    let mine = vec![
        row(CONSUMER, "applied", None, 3),
        row(CONSUMER, "dead_lettered", Some("idempotency_conflict"), 1),
        row(CONSUMER, "dead_lettered", Some("unknown_tenant"), 1),
        row(CONSUMER, "dead_lettered", Some("validation"), 1),
        row(CONSUMER, "duplicate", None, 1),
        row(CONSUMER, "skipped", None, 1),
    ];
    assert_eq!(counts(Some(CONSUMER)).await, mine);
    let mut all = mine;
    all.extend([
        row(OTHER, "applied", None, 2),
        row(OTHER, "dead_lettered", Some("validation"), 1),
        row(OTHER, "skipped", None, 1),
    ]);
    assert_eq!(counts(None).await, all);

    let listed = |filter: DeadLetterFilter| async move {
        store
            .dead_letters(&filter)
            .await
            .expect("dead letters")
            .into_iter()
            .map(|d| (d.consumer, d.partition, d.offset, d.reason.as_str()))
            .collect::<Vec<_>>()
    };
    let dl = |c: &str, p: i32, o: i64, r: &'static str| (c.to_owned(), p, o, r);
    let text = |s: &str| Some(s.to_owned());
    assert_eq!(
        listed(DeadLetterFilter {
            consumer: text(CONSUMER),
            ..DeadLetterFilter::default()
        })
        .await,
        vec![
            dl(CONSUMER, 0, 2, "validation"),
            dl(CONSUMER, 1, 1, "idempotency_conflict"),
            dl(CONSUMER, 1, 2, "unknown_tenant"),
        ]
    );
    let mut by_reason = listed(DeadLetterFilter {
        reason: Some(ReasonCode::Validation),
        ..DeadLetterFilter::default()
    })
    .await;
    by_reason.sort();
    assert_eq!(
        by_reason,
        vec![
            dl(CONSUMER, 0, 2, "validation"),
            dl(OTHER, 0, 1, "validation")
        ]
    );
    assert_eq!(
        listed(DeadLetterFilter {
            consumer: text(OTHER),
            reason: Some(ReasonCode::Validation),
            ..DeadLetterFilter::default()
        })
        .await,
        vec![dl(OTHER, 0, 1, "validation")]
    );
    let mut acme = listed(DeadLetterFilter {
        tenant: text("acme"),
        ..DeadLetterFilter::default()
    })
    .await;
    acme.sort();
    assert_eq!(
        acme,
        vec![
            dl(CONSUMER, 0, 2, "validation"),
            dl(CONSUMER, 1, 1, "idempotency_conflict"),
            dl(OTHER, 0, 1, "validation"),
        ]
    );
    assert_eq!(
        listed(DeadLetterFilter {
            tenant: text("globex"),
            ..DeadLetterFilter::default()
        })
        .await,
        vec![dl(CONSUMER, 1, 2, "unknown_tenant")]
    );
    assert!(
        listed(DeadLetterFilter {
            consumer: text(OTHER),
            tenant: text("globex"),
            ..DeadLetterFilter::default()
        })
        .await
        .is_empty()
    );
    let count = |filter: DeadLetterFilter| async move { listed(filter).await.len() };
    assert_eq!(
        count(DeadLetterFilter {
            status: Some(DeadLetterStatus::Open),
            ..DeadLetterFilter::default()
        })
        .await,
        4
    );
    assert_eq!(
        count(DeadLetterFilter {
            status: Some(DeadLetterStatus::Resolved),
            ..DeadLetterFilter::default()
        })
        .await,
        0
    );
    assert_eq!(
        count(DeadLetterFilter {
            limit: Some(2),
            ..DeadLetterFilter::default()
        })
        .await,
        2
    );
    assert_eq!(
        count(DeadLetterFilter {
            since: Some(i64::MAX / 2),
            ..DeadLetterFilter::default()
        })
        .await,
        0
    );
}

/// 10. Two instances race on one partition with overlapping offsets: per round exactly one
///     batch wins, the other is stale; no effect is ever duplicated; the chain stays intact.
async fn concurrent_batches_have_one_winner(store: &Store) {
    let consumer = Arc::new(TestConsumer::new(CONSUMER));
    install(store, &consumer).await;
    let mut expected_effects = 0;
    for partition in 0..6 {
        let events = pays(60, "acme");
        // Round 0 races on a partition without a stored position yet; later rounds race on an
        // existing one.
        let mut position = 0i64;
        for _round in 0..3 {
            let start = usize::try_from(position).expect("offset");
            let barrier = Arc::new(tokio::sync::Barrier::new(2));
            let tasks = [(start, 10usize), (start + 5, 10usize)].map(|(from, n)| {
                let store = store.clone();
                let consumer = Arc::clone(&consumer);
                let barrier = Arc::clone(&barrier);
                let records = items(&events[from..from + n]);
                tokio::spawn(async move {
                    let input = batch(&consumer, partition, from as i64, &records);
                    barrier.wait().await;
                    store.commit_batch(&*consumer, input).await
                })
            });
            let mut winners = Vec::new();
            let mut stale = 0;
            for task in tasks {
                let outcome = task.await.expect("task").expect("no error in a race");
                match outcome.stale {
                    Some(_) => {
                        assert_eq!(
                            outcome,
                            BatchOutcome {
                                stale: outcome.stale,
                                ..BatchOutcome::default()
                            }
                        );
                        stale += 1;
                    }
                    None => winners.push(outcome),
                }
            }
            assert_eq!(
                (winners.len(), stale),
                (1, 1),
                "partition {partition}: exactly one batch wins: {winners:?}"
            );
            assert_eq!(winners[0].applied, 10);
            assert_eq!(winners[0].duplicates, 0);
            expected_effects += 10;
            let stored = store
                .position(CONSUMER, TOPIC, partition)
                .await
                .expect("position")
                .expect("a position");
            assert!(
                stored == position + 10 || stored == position + 15,
                "position {stored} after a race from {position}"
            );
            position = stored;
        }
        let rows = store
            .audit_rows(CONSUMER, TOPIC, partition)
            .await
            .expect("audit");
        assert_eq!(rows.len(), 30, "only the winners are audited");
        assert!(rows.iter().all(|r| r.decision == Decision::Applied));
        assert!(rows.windows(2).all(|w| w[0].offset < w[1].offset));
    }
    assert_eq!(effects(store, CONSUMER).await, expected_effects);
    let by_event = effects_by_event(store, CONSUMER).await;
    assert!(
        by_event.values().all(|(n, _)| *n == 1),
        "an effect was duplicated"
    );
    assert_eq!(inbox(store, CONSUMER).await, expected_effects);
    assert_chain_intact(store).await;
}

/// 11. Opening the store again (also twice at once) re-applies the schema harmlessly.
async fn reopening_is_idempotent(store: &Store, url: &str) {
    let consumer = TestConsumer::new(CONSUMER);
    install(store, &consumer).await;
    install(store, &consumer).await;
    commit(store, &consumer, 0, 0, &items(&pays(3, "acme"))).await;

    let again = Store::open(url).await.expect("second open");
    let (third, fourth) = tokio::join!(Store::open(url), Store::open(url));
    third.expect("concurrent open");
    fourth.expect("concurrent open");
    assert_eq!(
        again.position(CONSUMER, TOPIC, 0).await.expect("position"),
        Some(3)
    );
    let outcome = commit(&again, &consumer, 0, 3, &items(&pays(2, "acme"))).await;
    assert_eq!(outcome.applied, 2);
    assert_eq!(effects(store, CONSUMER).await, 5);
    assert_eq!(
        store.position(CONSUMER, TOPIC, 0).await.expect("position"),
        Some(5)
    );
    // Still append-only after the DDL ran again.
    let err = sqlx::query("DELETE FROM audit_log")
        .execute(again.pool())
        .await
        .expect_err("append-only");
    assert!(err.to_string().contains("append-only"), "{err}");
    assert_chain_intact(&again).await;
}

/// Not a benchmark: prints events/s per backend for the lead (`--nocapture`).
async fn throughput_smoke(store: &Store) {
    const BATCHES: usize = 20;
    const PER_BATCH: usize = 500;
    let consumer = TestConsumer::new(CONSUMER);
    install(store, &consumer).await;
    let batches: Vec<BatchInput> = (0..BATCHES)
        .map(|b| {
            let mut records = items(&pays(PER_BATCH, "acme"));
            records[7] = Item::Poison(Poison::new(ReasonCode::AvroDecode, None));
            batch(&consumer, 0, (b * PER_BATCH) as i64, &records)
        })
        .collect();
    let started = Instant::now();
    for input in batches {
        store.commit_batch(&consumer, input).await.expect("commit");
    }
    let elapsed = started.elapsed();
    let total = BATCHES * PER_BATCH;
    println!(
        "throughput {:?}: {total} records in {BATCHES} batches of {PER_BATCH}: {:.2?}, {:.0} records/s",
        store.backend(),
        elapsed,
        total as f64 / elapsed.as_secs_f64()
    );
    let verify_started = Instant::now();
    assert_chain_intact(store).await;
    println!(
        "throughput {:?}: verify_audit over {total} rows: {:.2?}",
        store.backend(),
        verify_started.elapsed()
    );
    assert_eq!(effects(store, CONSUMER).await, (total - BATCHES) as i64);
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// A store on its own database (a temp-dir SQLite file or a `store_conf_<uuid>` Postgres
/// database), removed when dropped.
async fn scratch(backend: Backend) -> ScratchStore {
    ScratchStore::open(backend, "store_conf").await
}

/// One `#[tokio::test]` per scenario and backend.
macro_rules! conformance {
    (store: [$($scenario:ident),* $(,)?], url: [$($with_url:ident),* $(,)?] $(,)?) => {
        conformance!(@backend sqlite, Sqlite; [$($scenario),*]; [$($with_url),*]);
        conformance!(@backend postgres, Postgres; [$($scenario),*]; [$($with_url),*]);
    };
    (@backend $module:ident, $backend:ident; [$($scenario:ident),*]; [$($with_url:ident),*]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = super::scratch(super::Backend::$backend).await;
                    super::$scenario(&db.store).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $with_url() {
                    let db = super::scratch(super::Backend::$backend).await;
                    super::$with_url(&db.store, &db.url).await;
                }
            )*
        }
    };
}

/// 12. Set-based rows survive the trip through either rendering unchanged: on Postgres the
///     values travel inside array literals, so quoting, escapes, NULLs and bytes must hold.
async fn set_based_rows_round_trip_awkward_values(store: &Store) {
    let blob = match store.backend() {
        Backend::Postgres => "BYTEA",
        Backend::Sqlite => "BLOB",
    };
    let mut conn = store.pool().acquire().await.expect("connection");
    sqlx::query(&format!(
        "CREATE TABLE rows_probe (k INTEGER NOT NULL, t TEXT, n BIGINT, b {blob})"
    ))
    .execute(&mut *conn)
    .await
    .expect("create");
    let texts: Vec<Option<String>> = vec![
        Some(String::new()),
        Some("NULL".to_owned()),
        None,
        Some(r#"quote " and backslash \ and \" both"#.to_owned()),
        Some("{braces}, commas, 'single' and spaces  ".to_owned()),
        Some("unicode: é ü 日本 🧾".to_owned()),
        Some("new\nline\ttab".to_owned()),
    ];
    let numbers = [
        Some(i64::MIN),
        Some(-1),
        None,
        Some(0),
        Some(i64::MAX),
        Some(42),
        None,
    ];
    let bytes: Vec<Option<Vec<u8>>> = vec![
        Some(vec![]),
        Some(vec![0x00, 0xff, b'\\', b'"', b',']),
        None,
        Some((0..=255).collect()),
        Some(b"plain".to_vec()),
        None,
        Some(vec![0x5c, 0x78]),
    ];
    let mut rows = Rows::new(store.backend(), &["integer", "text", "bigint", "bytea"]);
    for (k, ((t, n), b)) in texts.iter().zip(numbers).zip(&bytes).enumerate() {
        rows.push(k as i32).push(t.clone()).push(n).push(b.clone());
    }
    assert_eq!(rows.len(), texts.len());
    let inserted = rows
        .execute(
            &mut conn,
            "probing",
            "INSERT INTO rows_probe (k, t, n, b)",
            "",
        )
        .await
        .expect("insert");
    assert_eq!(inserted, texts.len() as u64);
    type Probe = (i32, Option<String>, Option<i64>, Option<Vec<u8>>);
    let back: Vec<Probe> = sqlx::query_as("SELECT k, t, n, b FROM rows_probe ORDER BY k")
        .fetch_all(&mut *conn)
        .await
        .expect("read back");
    assert_eq!(back.len(), texts.len());
    for (k, t, n, b) in back {
        let i = k as usize;
        assert_eq!(t, texts[i], "text of row {i}");
        assert_eq!(n, numbers[i], "number of row {i}");
        assert_eq!(b, bytes[i], "bytes of row {i}");
    }
}

conformance!(
    store: [
        new_events_are_applied_once,
        duplicates_have_no_effect,
        idempotency_conflicts_are_dead_lettered,
        poison_records_are_dead_lettered_byte_exact,
        skipped_records_are_only_audited,
        stale_batches_write_nothing,
        failed_batches_leave_nothing_behind,
        audit_chain_is_tamper_evident,
        positions_and_stats_add_up,
        concurrent_batches_have_one_winner,
        throughput_smoke,
        set_based_rows_round_trip_awkward_values,
    ],
    url: [reopening_is_idempotent],
);
