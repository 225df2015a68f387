//! The warehouse consumer against real databases, through `Store::commit_batch` exactly as the
//! runtime calls it (inbox, effects, audit, position in one transaction). Every scenario runs
//! on SQLite and on Postgres (a throwaway database on 127.0.0.1:5432).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use ledgerflow_core::{
    Coordinates, Currency, CustomerUpserted, Envelope, Event, InvoiceFinalized, InvoiceLine,
    PaymentCaptured, ReasonCode, SchemaId, TaxLine, TenantId,
};
use ledgerflow_loadgen::{Workload, WorkloadConfig};
use ledgerflow_store::{
    Backend, BatchInput, BatchOutcome, ConsumerLogic, DeadLetterInput, ErasedConsumer,
    RecordOutcome, Store,
};
use ledgerflow_tenants::{AccountMapping, TenantConfig};
use ledgerflow_testkit::ScratchStore;
use ledgerflow_warehouse_sink::{
    ColumnKind, ExportFormat, ExportOptions, Table, Value, Warehouse, WarehouseError, count_rows,
    export_table, read_rows, table_name,
};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use sqlx::Connection;

const TOPIC: &str = "billing.events";

/// Instantiates `async fn name(backend: Backend)` scenarios once per backend.
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(ledgerflow_store::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(ledgerflow_store::Backend::Postgres).await;
                }
            )*
        }
    };
}

per_backend!(
    loadgen_counts_equal_distinct_events_and_a_replay_adds_nothing,
    business_keys_stop_a_second_write_that_bypasses_the_inbox,
    payment_before_its_invoice_lands_and_joins_later,
    older_customer_update_lands_in_the_right_place_of_the_timeline,
    export_csv_and_parquet_equal_the_table,
    big_batches_are_chunked_under_the_bind_limit,
);

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

struct Harness {
    scratch: ScratchStore,
    tenants: HashMap<TenantId, TenantConfig>,
    next_offset: i64,
}

impl Harness {
    async fn open(backend: Backend) -> Self {
        let scratch = ScratchStore::open(backend, "wh_test").await;
        // Twice: the DDL is idempotent.
        for _ in 0..2 {
            scratch
                .store
                .apply_schema(&ConsumerLogic::schema(&Warehouse, backend))
                .await
                .expect("warehouse ddl");
        }
        Self {
            scratch,
            tenants: HashMap::new(),
            next_offset: 0,
        }
    }

    fn store(&self) -> &Store {
        &self.scratch.store
    }

    fn backend(&self) -> Backend {
        self.store().backend()
    }

    fn add_tenant(&mut self, id: &str, legal_entity: &str, currency: &str) {
        let config = tenant_config(id, legal_entity, currency);
        self.tenants.insert(config.tenant_id.clone(), config);
    }

    /// Maps `events` and commits them as one batch at the next offsets, as the runtime does.
    async fn commit(&mut self, events: &[Event]) -> BatchOutcome {
        let first = self.next_offset;
        let mut records = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let offset = first + i as i64;
            let env = envelope(event.clone(), offset);
            let tenant = &self.tenants[&env.meta.tenant_id];
            let raw = Box::new(DeadLetterInput {
                offset,
                reason: ReasonCode::Validation,
                error: String::new(),
                key: Some(env.meta.tenant_id.as_str().as_bytes().to_vec()),
                value: Some(serde_json::to_vec(event).expect("json")),
                headers: vec![],
                schema_id: Some(1),
                event_id: Some(env.meta.event_id.to_string()),
                tenant_id: Some(env.meta.tenant_id.to_string()),
                event_type: Some(env.meta.event_type.as_str().to_owned()),
            });
            records.push(match Warehouse.map_erased(&env, tenant) {
                Ok(effect) => RecordOutcome::Mapped {
                    envelope: env,
                    effect,
                    raw,
                },
                Err(failure) => panic!("test events map: {failure}"),
            });
        }
        self.next_offset = first + events.len() as i64;
        self.store()
            .commit_batch(
                &Warehouse,
                BatchInput {
                    topic: TOPIC.to_owned(),
                    partition: 0,
                    records,
                    next_offset: self.next_offset,
                },
            )
            .await
            .expect("batch commits")
    }

    async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, Option<i64>>(sql)
            .fetch_one(self.store().pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or(0)
    }

    fn t(&self, table: Table) -> String {
        table_name(self.backend(), table)
    }

    async fn count(&self, table: Table) -> i64 {
        self.scalar(&format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM {}",
            self.t(table)
        ))
        .await
    }

    async fn counts(&self) -> BTreeMap<Table, i64> {
        let mut out = BTreeMap::new();
        for table in Table::ALL {
            out.insert(table, self.count(table).await);
        }
        out
    }

    async fn rows(&self, table: Table) -> Vec<Vec<Value>> {
        read_rows(
            self.store().pool(),
            self.backend(),
            &ExportOptions::new(table, ExportFormat::Csv),
        )
        .await
        .expect("rows")
    }
}

fn tenant_config(id: &str, legal_entity: &str, currency: &str) -> TenantConfig {
    TenantConfig {
        tenant_id: TenantId::parse(id).unwrap(),
        legal_entity: legal_entity.to_owned(),
        functional_currency: Currency::parse(currency).unwrap(),
        erp: None,
        accounts: AccountMapping {
            receivable: "1100".into(),
            revenue_default: "4000".into(),
            revenue_by_family: BTreeMap::new(),
            tax_payable: "2200".into(),
            cash_clearing: "1010".into(),
            payment_fees: "6100".into(),
            unapplied_cash: "2400".into(),
        },
        webhooks: vec![],
        rate_limit_per_sec: None,
    }
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

/// A deterministic event id from a number.
fn eid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

const T0: i64 = 1_700_000_000_000_000;

fn customer(n: u64, customer_id: &str, name: &str, occurred_at: i64) -> Event {
    Event::CustomerUpserted(CustomerUpserted {
        event_id: eid(n),
        tenant_id: "acme".into(),
        occurred_at,
        correlation_id: "c".into(),
        causation_id: None,
        source: "crm".into(),
        customer_id: customer_id.into(),
        name: name.into(),
        email: Some(format!("{name}@example.com")),
        country: "DE".into(),
        currency: "EUR".into(),
        tax_id: None,
    })
}

fn invoice(n: u64, invoice_id: &str, net: i64, tax: i64) -> Event {
    let half = net / 2;
    let line = |id: &str, amount: i64| InvoiceLine {
        line_id: id.into(),
        description: format!("line {id}"),
        product_family: "platform".into(),
        quantity_micros: 1_000_000,
        unit_amount_minor: amount,
        amount_minor: amount,
    };
    Event::InvoiceFinalized(InvoiceFinalized {
        event_id: eid(n),
        tenant_id: "acme".into(),
        occurred_at: T0 + n as i64,
        correlation_id: "c".into(),
        causation_id: None,
        source: "billing-api".into(),
        invoice_id: invoice_id.into(),
        invoice_number: format!("INV-{invoice_id}"),
        customer_id: "cus-1".into(),
        subscription_id: None,
        currency: "EUR".into(),
        issued_at: T0 + n as i64,
        due_at: T0 + 30 * 86_400_000_000,
        lines: vec![line("l1", half), line("l2", net - half)],
        tax_lines: vec![TaxLine {
            jurisdiction: "DE".into(),
            rate_bps: 1900,
            taxable_amount_minor: net,
            amount_minor: tax,
        }],
        subtotal_minor: net,
        tax_minor: tax,
        total_minor: net + tax,
        purchase_order: None,
    })
}

fn payment(n: u64, payment_id: &str, invoice_id: &str, amount: i64) -> Event {
    Event::PaymentCaptured(PaymentCaptured {
        event_id: eid(n),
        tenant_id: "acme".into(),
        occurred_at: T0 + n as i64,
        correlation_id: "c".into(),
        causation_id: None,
        source: "payments".into(),
        payment_id: payment_id.into(),
        invoice_id: invoice_id.into(),
        customer_id: "cus-1".into(),
        currency: "EUR".into(),
        amount_minor: amount,
        fee_minor: 30,
        method: "card".into(),
        processor_reference: format!("ch_{payment_id}"),
        captured_at: T0 + n as i64,
        settlement_currency: None,
    })
}

/// A realistic stream (duplicates, payments before invoices) and its tenants.
fn workload(events: u64, seed: u64) -> (Vec<Event>, Vec<TenantConfig>) {
    let cfg = WorkloadConfig {
        tenants: 4,
        events,
        duplicates: 0.05,
        out_of_order: 0.2,
        seed,
        ..WorkloadConfig::default()
    };
    let workload = Workload::new(cfg).unwrap();
    let tenants = workload
        .tenants()
        .iter()
        .map(|p| tenant_config(p.tenant_id.as_str(), &p.legal_entity, p.currency.code()))
        .collect();
    (workload.map(|g| g.event).collect(), tenants)
}

fn distinct(events: &[Event]) -> Vec<&Event> {
    let mut seen = HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e.event_id_raw().to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

async fn loadgen_counts_equal_distinct_events_and_a_replay_adds_nothing(backend: Backend) {
    let mut h = Harness::open(backend).await;
    let (events, tenants) = workload(900, 7);
    for t in &tenants {
        h.add_tenant(
            t.tenant_id.as_str(),
            &t.legal_entity,
            t.functional_currency.code(),
        );
    }
    let mut applied = 0;
    for chunk in events.chunks(128) {
        applied += h.commit(chunk).await.applied;
    }
    let unique = distinct(&events);
    assert!(unique.len() < events.len(), "the workload has duplicates");
    assert_eq!(applied, unique.len() as u64);

    // Expected rows per table, from the distinct events.
    let mut expected: BTreeMap<Table, i64> = Table::ALL.into_iter().map(|t| (t, 0)).collect();
    let mut totals: BTreeMap<(String, String), i128> = BTreeMap::new();
    let mut tenants_seen = HashSet::new();
    let mut customers = HashSet::new();
    for e in &unique {
        tenants_seen.insert(e.tenant_id_raw().to_owned());
        let table = match e {
            Event::CustomerUpserted(c) => {
                customers.insert((c.tenant_id.clone(), c.customer_id.clone()));
                Table::DimCustomer
            }
            Event::SubscriptionActivated(_) | Event::SubscriptionCanceled(_) => {
                Table::FactSubscriptionEvent
            }
            Event::UsageAggregated(_) => Table::FactUsage,
            Event::InvoiceFinalized(i) => {
                *expected.entry(Table::FactInvoiceLine).or_default() +=
                    (i.lines.len() + i.tax_lines.len()) as i64;
                *totals
                    .entry((i.tenant_id.clone(), i.currency.clone()))
                    .or_default() += i128::from(i.total_minor);
                Table::FactInvoice
            }
            Event::PaymentCaptured(_) => Table::FactPayment,
            Event::CreditMemoIssued(_) => Table::FactCreditMemo,
            Event::InvoiceVoided(_) | Event::PaymentRefunded(_) => continue,
        };
        *expected.entry(table).or_default() += 1;
    }
    expected.insert(Table::DimTenant, tenants_seen.len() as i64);
    for t in [
        Table::DimCustomer,
        Table::FactUsage,
        Table::FactInvoice,
        Table::FactPayment,
    ] {
        assert!(expected[&t] > 0, "the workload has {t} rows");
    }
    let before = h.counts().await;
    assert_eq!(before, expected);

    // fact_invoice totals equal the events' totals exactly, per tenant and currency.
    let stored: Vec<(String, String, i64)> = sqlx::query_as(&format!(
        "SELECT tenant_id, currency, CAST(SUM(total_minor) AS BIGINT) FROM {} \
         GROUP BY tenant_id, currency ORDER BY tenant_id, currency",
        h.t(Table::FactInvoice)
    ))
    .fetch_all(h.store().pool())
    .await
    .unwrap();
    let stored: BTreeMap<(String, String), i128> = stored
        .into_iter()
        .map(|(t, c, sum)| ((t, c), i128::from(sum)))
        .collect();
    assert_eq!(stored, totals);
    // Lines add up to their invoice: charges to the subtotal, taxes to the tax.
    let mismatched = h
        .scalar(&format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM {inv} AS i WHERE \
             i.subtotal_minor <> (SELECT SUM(l.amount_minor) FROM {line} AS l WHERE \
               l.tenant_id = i.tenant_id AND l.invoice_id = i.invoice_id AND l.line_kind = 'charge') \
             OR i.tax_minor <> (SELECT COALESCE(SUM(l.amount_minor), 0) FROM {line} AS l WHERE \
               l.tenant_id = i.tenant_id AND l.invoice_id = i.invoice_id AND l.line_kind = 'tax')",
            inv = h.t(Table::FactInvoice),
            line = h.t(Table::FactInvoiceLine)
        ))
        .await;
    assert_eq!(mismatched, 0);
    // Exactly one current version per customer.
    let current = h
        .scalar(&format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM {} WHERE is_current = 1",
            h.t(Table::DimCustomer)
        ))
        .await;
    assert_eq!(current, customers.len() as i64);
    // dim_tenant carries the configuration seen at mapping time.
    let tenant_rows = h.rows(Table::DimTenant).await;
    for row in &tenant_rows {
        let config = tenants
            .iter()
            .find(|t| Some(t.tenant_id.as_str()) == row[0].as_text())
            .expect("a configured tenant");
        assert_eq!(row[1].as_text(), Some(config.legal_entity.as_str()));
        assert_eq!(row[2].as_text(), Some(config.functional_currency.code()));
    }

    // Replay: the same events at new offsets, in other batch sizes. Nothing is applied again.
    let mut replayed = BatchOutcome::default();
    for chunk in events.chunks(301) {
        let outcome = h.commit(chunk).await;
        replayed.applied += outcome.applied;
        replayed.duplicates += outcome.duplicates;
    }
    assert_eq!(replayed.applied, 0);
    assert_eq!(replayed.duplicates, events.len() as u64);
    assert_eq!(h.counts().await, before);
}

async fn business_keys_stop_a_second_write_that_bypasses_the_inbox(backend: Backend) {
    let mut h = Harness::open(backend).await;
    h.add_tenant("acme", "Acme GmbH", "EUR");
    let events = vec![
        customer(1, "cus-1", "ada", T0),
        invoice(2, "inv-1", 10_000, 1_900),
        payment(3, "pay-1", "inv-1", 11_900),
    ];
    h.commit(&events).await;
    let before = h.counts().await;
    assert_eq!(before[&Table::FactInvoiceLine], 3);

    // Write the same effects again straight through the consumer, without the inbox.
    let tenant = tenant_config("acme", "Acme GmbH", "EUR");
    let envelopes: Vec<Envelope> = events
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, e)| envelope(e, i as i64))
        .collect();
    let effects: Vec<_> = envelopes
        .iter()
        .map(|env| (env, Warehouse.map(env, &tenant).unwrap()))
        .collect();
    let mut conn = h.store().pool().acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    Warehouse
        .write(&mut tx, backend, &effects)
        .await
        .expect("a second write is a no-op, not an error");
    tx.commit().await.unwrap();
    drop(conn);
    assert_eq!(h.counts().await, before);

    // An invoice re-sent under a new event id with more lines adds nothing either: not the
    // invoice (same key), and not a fourth line to the stored one.
    let Event::InvoiceFinalized(mut resent) = invoice(4, "inv-1", 99_999, 0) else {
        unreachable!()
    };
    let mut extra = resent.lines[0].clone();
    extra.line_id = "l3".into();
    resent.subtotal_minor += extra.amount_minor;
    resent.total_minor += extra.amount_minor;
    resent.lines.push(extra);
    let resent = Event::InvoiceFinalized(resent);
    let outcome = h.commit(&[resent]).await;
    assert_eq!(outcome.applied, 1, "a new event id passes the inbox");
    assert_eq!(h.counts().await, before);
    let totals = h
        .scalar(&format!(
            "SELECT total_minor FROM {} WHERE invoice_id = 'inv-1'",
            h.t(Table::FactInvoice)
        ))
        .await;
    assert_eq!(totals, 11_900);

    // dim_tenant follows the tenant configuration seen at mapping time.
    h.add_tenant("acme", "Acme SE", "USD");
    h.commit(&[payment(5, "pay-2", "inv-1", 100)]).await;
    assert_eq!(
        h.rows(Table::DimTenant).await,
        [vec![
            Value::from("acme"),
            Value::from("Acme SE"),
            Value::from("USD")
        ]]
    );
}

async fn payment_before_its_invoice_lands_and_joins_later(backend: Backend) {
    let mut h = Harness::open(backend).await;
    h.add_tenant("acme", "Acme GmbH", "EUR");
    // Its own batch, before the invoice exists.
    h.commit(&[payment(1, "pay-early", "inv-9", 5_000)]).await;
    assert_eq!(h.count(Table::FactPayment).await, 1);
    assert_eq!(h.count(Table::FactInvoice).await, 0);
    // And within one batch, the payment ahead of its invoice.
    h.commit(&[
        payment(2, "pay-same", "inv-10", 1_190),
        invoice(3, "inv-10", 1_000, 190),
    ])
    .await;
    h.commit(&[invoice(4, "inv-9", 5_000, 0)]).await;

    let joined: Vec<(String, String, i64, i64)> = sqlx::query_as(&format!(
        "SELECT p.payment_id, i.invoice_id, p.amount_minor, i.total_minor FROM {p} AS p \
         JOIN {i} AS i ON i.tenant_id = p.tenant_id AND i.invoice_id = p.invoice_id \
         ORDER BY p.payment_id",
        p = h.t(Table::FactPayment),
        i = h.t(Table::FactInvoice)
    ))
    .fetch_all(h.store().pool())
    .await
    .unwrap();
    assert_eq!(
        joined,
        [
            ("pay-early".into(), "inv-9".into(), 5_000, 5_000),
            ("pay-same".into(), "inv-10".into(), 1_190, 1_190)
        ]
    );
}

/// (valid_from, name, valid_to, is_current) of a customer's versions, oldest first.
async fn timeline(h: &Harness, customer_id: &str) -> Vec<(i64, String, Option<i64>, i64)> {
    sqlx::query_as(&format!(
        "SELECT valid_from, name, valid_to, is_current FROM {} \
         WHERE tenant_id = 'acme' AND customer_id = $1 ORDER BY valid_from, event_id",
        h.t(Table::DimCustomer)
    ))
    .bind(customer_id.to_owned())
    .fetch_all(h.store().pool())
    .await
    .unwrap()
}

async fn older_customer_update_lands_in_the_right_place_of_the_timeline(backend: Backend) {
    let mut h = Harness::open(backend).await;
    h.add_tenant("acme", "Acme GmbH", "EUR");
    h.commit(&[
        customer(1, "cus-1", "v100", T0 + 100),
        customer(2, "cus-2", "other", T0 + 10),
    ])
    .await;
    assert_eq!(
        timeline(&h, "cus-1").await,
        [(T0 + 100, "v100".into(), None, 1)]
    );

    // An update older than the stored one arrives later: it becomes history, not current.
    h.commit(&[customer(3, "cus-1", "v50", T0 + 50)]).await;
    assert_eq!(
        timeline(&h, "cus-1").await,
        [
            (T0 + 50, "v50".into(), Some(T0 + 100), 0),
            (T0 + 100, "v100".into(), None, 1)
        ]
    );

    // Newest and in-between versions in one batch, newest first.
    h.commit(&[
        customer(4, "cus-1", "v200", T0 + 200),
        customer(5, "cus-1", "v150", T0 + 150),
    ])
    .await;
    let expected = vec![
        (T0 + 50, "v50".to_owned(), Some(T0 + 100), 0),
        (T0 + 100, "v100".to_owned(), Some(T0 + 150), 0),
        (T0 + 150, "v150".to_owned(), Some(T0 + 200), 0),
        (T0 + 200, "v200".to_owned(), None, 1),
    ];
    assert_eq!(timeline(&h, "cus-1").await, expected);
    // The other customer is untouched.
    assert_eq!(
        timeline(&h, "cus-2").await,
        [(T0 + 10, "other".into(), None, 1)]
    );

    // A replay of the whole history changes nothing.
    h.commit(&[
        customer(3, "cus-1", "v50", T0 + 50),
        customer(1, "cus-1", "v100", T0 + 100),
        customer(5, "cus-1", "v150", T0 + 150),
        customer(4, "cus-1", "v200", T0 + 200),
    ])
    .await;
    assert_eq!(timeline(&h, "cus-1").await, expected);
}

/// A Parquet field back as a stored value.
fn field_value(kind: ColumnKind, field: &Field) -> Value {
    match (kind, field) {
        (_, Field::Null) => Value::Null,
        (ColumnKind::Text, Field::Str(s)) => Value::Text(s.clone()),
        (ColumnKind::Int, Field::Long(v)) => Value::Int(*v),
        (ColumnKind::Timestamp, Field::TimestampMicros(v)) => Value::Int(*v),
        (ColumnKind::Flag, Field::Bool(b)) => Value::Int(i64::from(*b)),
        (kind, field) => panic!("{field:?} in a {kind:?} column"),
    }
}

fn read_parquet(path: &Path, table: Table) -> (Vec<Vec<Value>>, usize) {
    let reader = SerializedFileReader::try_from(path).expect("parquet file");
    let groups = reader.metadata().num_row_groups();
    let columns = table.columns();
    let rows = reader
        .get_row_iter(None)
        .expect("row iterator")
        .map(|row| {
            let row = row.expect("row");
            let fields: Vec<(&String, &Field)> = row.get_column_iter().collect();
            assert_eq!(fields.len(), columns.len());
            columns
                .iter()
                .zip(fields)
                .map(|(c, (name, field))| {
                    assert_eq!(name, c.name);
                    field_value(c.kind, field)
                })
                .collect()
        })
        .collect();
    (rows, groups)
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path).expect("csv file");
    let header = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.expect("record").iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

/// The CSV rendering of stored values, written out independently of the export code.
fn expected_csv(kind: ColumnKind, value: &Value) -> String {
    match (kind, value) {
        (_, Value::Null) => String::new(),
        (ColumnKind::Flag, Value::Int(v)) => (*v == 1).to_string(),
        (ColumnKind::Timestamp, Value::Int(v)) => {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(*v) * 1000).unwrap();
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.microsecond()
            )
        }
        (_, Value::Int(v)) => v.to_string(),
        (_, Value::Text(s)) => s.clone(),
    }
}

async fn export_csv_and_parquet_equal_the_table(backend: Backend) {
    let mut h = Harness::open(backend).await;
    let (events, tenants) = workload(400, 3);
    for t in &tenants {
        h.add_tenant(
            t.tenant_id.as_str(),
            &t.legal_entity,
            t.functional_currency.code(),
        );
    }
    h.add_tenant("acme", "Acme, \"Quoted\" GmbH", "EUR");
    for chunk in events.chunks(200) {
        h.commit(chunk).await;
    }
    // Text that needs CSV quoting, and customer history with a closed version.
    h.commit(&[
        customer(1, "cus-1", "Müller, \"der\" Ältere\nzweite Zeile", T0 + 100),
        customer(2, "cus-1", "older", T0 + 50),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pool = h.store().pool();
    for table in Table::ALL {
        let stored = h.rows(table).await;
        assert!(!stored.is_empty(), "{table} has rows to export");
        assert_eq!(stored.len() as i64, h.count(table).await);
        for format in [ExportFormat::Csv, ExportFormat::Parquet] {
            let path = dir.path().join(format!("{table}.{}", format.as_str()));
            let mut options = ExportOptions::new(table, format);
            // Small pages: several keyset pages and Parquet row groups.
            options.page_rows = 37;
            let mut calls = Vec::new();
            let summary = export_table(pool, backend, &options, &path, &mut |n| calls.push(n))
                .await
                .expect("export");
            assert_eq!(summary.rows, stored.len() as u64);
            assert_eq!(calls.last().copied(), Some(summary.rows));
            assert!(calls.windows(2).all(|w| w[0] < w[1]), "{calls:?}");
            match format {
                ExportFormat::Csv => {
                    let (header, rows) = read_csv(&path);
                    let names: Vec<&str> = table.columns().iter().map(|c| c.name).collect();
                    assert_eq!(header, names);
                    let expected: Vec<Vec<String>> = stored
                        .iter()
                        .map(|r| {
                            table
                                .columns()
                                .iter()
                                .zip(r)
                                .map(|(c, v)| expected_csv(c.kind, v))
                                .collect()
                        })
                        .collect();
                    assert_eq!(rows, expected, "{table} csv");
                }
                ExportFormat::Parquet => {
                    let (rows, groups) = read_parquet(&path, table);
                    assert_eq!(rows, stored, "{table} parquet");
                    assert_eq!(groups, stored.len().div_ceil(37), "{table} row groups");
                }
            }
        }
    }

    // Spot checks with literal values.
    let (_, customers) = read_csv(&dir.path().join("dim_customer.csv"));
    let acme: Vec<&Vec<String>> = customers.iter().filter(|r| r[0] == "acme").collect();
    assert_eq!(acme.len(), 2);
    assert_eq!(acme[0][2], "2023-11-14T22:13:20.000050Z");
    assert_eq!(acme[0][4], "older");
    assert_eq!(acme[0][9], "2023-11-14T22:13:20.000100Z");
    assert_eq!(acme[0][10], "false");
    assert_eq!(acme[1][4], "Müller, \"der\" Ältere\nzweite Zeile");
    assert_eq!(acme[1][9], "", "the current version has no end");
    assert_eq!(acme[1][10], "true");

    // A business-time window: the rows of the file are exactly the rows in the window.
    let all = h.rows(Table::FactInvoice).await;
    let mut times: Vec<i64> = all.iter().map(|r| r[6].as_int().unwrap()).collect();
    times.sort_unstable();
    let (from, to) = (times[times.len() / 4], times[times.len() * 3 / 4]);
    let mut options = ExportOptions::new(Table::FactInvoice, ExportFormat::Parquet);
    options.from = Some(from);
    options.to = Some(to);
    let in_window: Vec<Vec<Value>> = all
        .into_iter()
        .filter(|r| (from..to).contains(&r[6].as_int().unwrap()))
        .collect();
    assert!(!in_window.is_empty());
    assert_eq!(
        count_rows(pool, backend, &options).await.unwrap(),
        in_window.len() as u64
    );
    let path = dir.path().join("window.parquet");
    export_table(pool, backend, &options, &path, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(read_parquet(&path, Table::FactInvoice).0, in_window);

    // dim_tenant has no business time: a window is refused and no file is left behind.
    let mut options = ExportOptions::new(Table::DimTenant, ExportFormat::Csv);
    options.from = Some(from);
    let path = dir.path().join("tenants.csv");
    let err = export_table(pool, backend, &options, &path, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, WarehouseError::NoBusinessTime(Table::DimTenant)),
        "{err}"
    );
    assert!(!path.exists());
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial"))
            .count(),
        0
    );
}

async fn big_batches_are_chunked_under_the_bind_limit(backend: Backend) {
    let mut h = Harness::open(backend).await;
    h.add_tenant("acme", "Acme GmbH", "EUR");
    // 1,200 invoices of 3 lines: 3,600 line rows x 17 columns = 61,200 binds, beyond SQLite's
    // 32,766 per statement, in one batch.
    let events: Vec<Event> = (0..1_200u64)
        .map(|n| invoice(n + 1, &format!("inv-{n:05}"), 1_000 + n as i64, 190))
        .collect();
    let outcome = h.commit(&events).await;
    assert_eq!(outcome.applied, 1_200);
    assert_eq!(h.count(Table::FactInvoice).await, 1_200);
    assert_eq!(h.count(Table::FactInvoiceLine).await, 3_600);
    let expected: i64 = (0..1_200).map(|n| 1_000 + n + 190).sum();
    let total = h
        .scalar(&format!(
            "SELECT CAST(SUM(total_minor) AS BIGINT) FROM {}",
            h.t(Table::FactInvoice)
        ))
        .await;
    assert_eq!(total, expected);
}
