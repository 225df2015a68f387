//! Property: however a workload is delivered — exact duplicates anywhere after the original,
//! neighbours swapped (a payment before its invoice, a credit memo before it, a customer update
//! before an older one), operator replays of any range — the ledger ends the same as with the
//! ordered input: the same document journals (invoice, receipt, credit memo: ids, totals, lines),
//! the same money applied to each invoice, and the same warehouse rows in every table.
//!
//! Records go through the real pipeline (Confluent framing, the ledgerflow registry, decoding,
//! tenant checks, mapping) and the real batch transaction on SQLite stores; only Kafka is
//! left out (the order is what is under test).
//!
//! Payment application follows processing order, as cash application does in an AR system: a
//! payment is applied up to the invoice's open balance when it is processed. Two payments
//! racing for one balance may split it differently, so applications are compared per invoice;
//! and a credit memo processed before a payment captured earlier lowers the balance that
//! payment finds (the rest stays customer credit), so invoices with a credit memo are left out
//! of the application comparison. The customer's net position (invoices - credit memos -
//! payments) is in the document journals, which are compared exactly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ledgerflow_codec::{Decoder, DecoderConfig, Encoder, RegistryClient};
use ledgerflow_e2e::{generate, start_registry};
use ledgerflow_loadgen::GeneratedEvent;
use ledgerflow_runtime::{RawRecord, prepare_record};
use ledgerflow_store::{BatchInput, ErasedConsumer, Store};
use ledgerflow_tenants::{TenantRegistry, TenantsFile};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sqlx::Row;

const TOPIC: &str = "interleavings";
const TENANTS: u32 = 4;

/// Tenants of the generated workload, subledger only.
fn tenants(stream_tenants: &[(String, String)]) -> TenantRegistry {
    let mut text = String::new();
    for (id, currency) in stream_tenants {
        text.push_str(&format!(
            "[[tenants]]\ntenant_id = \"{id}\"\nlegal_entity = \"{id} Inc.\"\n\
             functional_currency = \"{currency}\"\n[tenants.accounts]\nreceivable = \"1200\"\n\
             revenue_default = \"4000\"\ntax_payable = \"2200\"\ncash_clearing = \"1010\"\n\
             payment_fees = \"6150\"\nunapplied_cash = \"2400\"\n"
        ));
    }
    let file: TenantsFile = toml::from_str(&text).expect("tenants TOML");
    TenantRegistry::from_config(file).expect("tenants")
}

/// What is delivered, in order: indexes into the distinct events, and whether a record is an
/// operator replay of earlier ones (committed with `commit_redrive`).
#[derive(Debug, Clone)]
enum Delivery {
    Live(Vec<usize>),
    Replay(Vec<usize>),
}

/// A delivery plan from a seed: the ordered events with duplicates after their original,
/// neighbour swaps within a window, and replays of random ranges.
fn plan(n: usize, seed: u64, duplicates: f64, window: usize, replays: usize) -> Vec<Delivery> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    // Out of order: shuffle inside consecutive windows.
    for chunk in order.chunks_mut(window.max(1)) {
        chunk.shuffle(&mut rng);
    }
    // Exact duplicates: a copy placed anywhere after its original.
    let mut keyed: Vec<(f64, usize)> = order
        .iter()
        .enumerate()
        .map(|(i, e)| (i as f64, *e))
        .collect();
    for (i, e) in order.iter().enumerate() {
        if rng.random_bool(duplicates) {
            keyed.push((rng.random_range(i as f64..n as f64) + 0.5, *e));
        }
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let live: Vec<usize> = keyed.into_iter().map(|(_, e)| e).collect();
    let mut out = Vec::new();
    let cut = live.len() / (replays + 1);
    for r in 0..=replays {
        let part = live[r * cut..if r == replays {
            live.len()
        } else {
            (r + 1) * cut
        }]
            .to_vec();
        out.push(Delivery::Live(part));
        if r < replays {
            let end = (r + 1) * cut;
            let start = rng.random_range(0..end.max(1));
            out.push(Delivery::Replay(live[start..end].to_vec()));
        }
    }
    out
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    _registry: ledgerflow_e2e::Proc,
    _dir: tempfile::TempDir,
    encoder: Encoder,
    decoder: Arc<Decoder>,
    tenants: TenantRegistry,
    events: Vec<GeneratedEvent>,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (registry, url) = start_registry(dir.path());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let client = RegistryClient::new(&url, Duration::from_secs(10)).expect("client");
        let encoder = runtime
            .block_on(Encoder::register(&client, TOPIC))
            .expect("register");
        let decoder = Arc::new(Decoder::new(client, DecoderConfig::default()));
        let (stream, manifest) = generate(TENANTS, 240, 0.0, 20261206);
        let tenants = tenants(
            &manifest
                .tenants
                .iter()
                .map(|(id, t)| (id.as_str().to_owned(), t.currency.to_string()))
                .collect::<Vec<_>>(),
        );
        Self {
            runtime,
            _registry: registry,
            _dir: dir,
            encoder,
            decoder,
            tenants,
            events: stream,
        }
    }

    fn raw(&self, index: usize, offset: i64) -> RawRecord {
        let g = &self.events[index];
        let tenant = g.event.tenant_id_raw().to_owned();
        RawRecord {
            topic: TOPIC.to_owned(),
            partition: 0,
            offset,
            key: Some(tenant.clone().into_bytes()),
            value: Some(
                self.encoder
                    .encode(&g.event, g.writer_version)
                    .expect("encode"),
            ),
            headers: vec![("tenant_id".to_owned(), Some(tenant))],
        }
    }

    /// Delivers a plan to a fresh store of both consumers and returns its snapshot.
    fn deliver(&self, plan: &[Delivery]) -> Snapshot {
        self.runtime.block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
            let store = Store::open(&url).await.expect("store");
            let consumers: Vec<Arc<dyn ErasedConsumer>> = vec![
                Arc::new(ledgerflow_erp_receivables::ErpReceivables),
                Arc::new(ledgerflow_warehouse_sink::Warehouse),
            ];
            for c in &consumers {
                store
                    .apply_schema(&c.schema(store.backend()))
                    .await
                    .expect("schema");
            }
            let mut offset = 0i64;
            for (n, delivery) in plan.iter().enumerate() {
                let (indexes, replay) = match delivery {
                    Delivery::Live(i) => (i, false),
                    Delivery::Replay(i) => (i, true),
                };
                // Batches of 7: a batch boundary anywhere.
                for chunk in indexes.chunks(7) {
                    let first = offset;
                    for consumer in &consumers {
                        let mut records = Vec::new();
                        for (k, index) in chunk.iter().enumerate() {
                            let raw = self.raw(*index, first + k as i64);
                            let outcome = prepare_record(
                                &self.decoder,
                                &self.tenants,
                                consumer.as_ref(),
                                raw,
                            )
                            .await
                            .expect("no transient failure");
                            records.push(outcome);
                        }
                        let batch = BatchInput {
                            topic: TOPIC.to_owned(),
                            partition: 0,
                            records,
                            next_offset: first + chunk.len() as i64,
                        };
                        if replay {
                            store
                                .commit_redrive(consumer.as_ref(), batch, &format!("replay-{n}"))
                                .await
                                .expect("redrive");
                        } else {
                            let outcome = store
                                .commit_batch(consumer.as_ref(), batch)
                                .await
                                .expect("batch");
                            assert!(outcome.stale.is_none(), "no stale batch");
                        }
                    }
                    if !replay {
                        offset += chunk.len() as i64;
                    }
                }
            }
            let snapshot = snapshot(&store).await;
            store.pool().close().await;
            snapshot
        })
    }
}

/// Everything compared.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    journals: Vec<String>,
    lines: Vec<String>,
    applied_per_invoice: BTreeMap<String, i64>,
    warehouse: BTreeMap<String, Vec<String>>,
}

async fn rows(store: &Store, sql: &str) -> Vec<String> {
    let rows = sqlx::query(sql)
        .fetch_all(store.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.try_get::<Option<String>, _>(i)
                        .map(|v| v.unwrap_or_else(|| "NULL".to_owned()))
                        .or_else(|_| r.try_get::<Option<i64>, _>(i).map(|v| format!("{v:?}")))
                        .unwrap_or_else(|e| format!("?{e}"))
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    out.sort();
    out
}

async fn snapshot(store: &Store) -> Snapshot {
    let journals = rows(
        store,
        "SELECT id, tenant_id, kind, document_type, document_id, currency, \
         CAST(total_minor AS TEXT), CAST(line_count AS TEXT), CAST(posted_at AS TEXT) \
         FROM erp_journal_entries WHERE kind <> 'application'",
    )
    .await;
    let lines = rows(
        store,
        "SELECT l.entry_id, CAST(l.line_no AS TEXT), l.account, CAST(l.debit_minor AS TEXT), \
         CAST(l.credit_minor AS TEXT) FROM erp_journal_lines l JOIN erp_journal_entries j ON j.id = l.entry_id \
         WHERE j.kind <> 'application'",
    )
    .await;
    let applied = rows(
        store,
        "SELECT a.tenant_id || '/' || a.invoice_id, CAST(SUM(a.amount_minor) AS TEXT) \
         FROM erp_applications a WHERE NOT EXISTS (SELECT 1 FROM warehouse_fact_credit_memo c \
         WHERE c.tenant_id = a.tenant_id AND c.invoice_id = a.invoice_id) \
         GROUP BY a.tenant_id, a.invoice_id",
    )
    .await;
    let applied_per_invoice = applied
        .iter()
        .filter_map(|r| r.split_once('|'))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or(i64::MIN)))
        .collect();
    let mut warehouse = BTreeMap::new();
    for table in ledgerflow_warehouse_sink::Table::ALL {
        let name = ledgerflow_warehouse_sink::table_name(store.backend(), table);
        let columns: Vec<String> = table
            .columns()
            .iter()
            .map(|c| format!("CAST({} AS TEXT)", c.name))
            .collect();
        warehouse.insert(
            table.as_str().to_owned(),
            rows(store, &format!("SELECT {} FROM {name}", columns.join(", "))).await,
        );
    }
    Snapshot {
        journals,
        lines,
        applied_per_invoice,
        warehouse,
    }
}

fn harness() -> &'static Harness {
    static HARNESS: std::sync::OnceLock<Harness> = std::sync::OnceLock::new();
    HARNESS.get_or_init(Harness::new)
}

fn ordered() -> &'static Snapshot {
    static ORDERED: std::sync::OnceLock<Snapshot> = std::sync::OnceLock::new();
    ORDERED.get_or_init(|| {
        let h = harness();
        let snapshot = h.deliver(&[Delivery::Live((0..h.events.len()).collect())]);
        assert!(!snapshot.journals.is_empty(), "the workload posts journals");
        assert!(
            snapshot.warehouse.values().any(|rows| !rows.is_empty()),
            "the workload fills the warehouse"
        );
        snapshot
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_gives_the_ordered_ledger(
        seed in any::<u64>(),
        duplicates in 0.0f64..0.3,
        window in 1usize..12,
        replays in 0usize..3,
    ) {
        let h = harness();
        let plan = plan(h.events.len(), seed, duplicates, window, replays);
        let got = h.deliver(&plan);
        let want = ordered();
        prop_assert_eq!(&got.journals, &want.journals);
        prop_assert_eq!(&got.lines, &want.lines);
        prop_assert_eq!(&got.applied_per_invoice, &want.applied_per_invoice);
        prop_assert_eq!(&got.warehouse, &want.warehouse);
    }
}

#[test]
fn the_comparison_sees_a_missing_event() {
    // The property can fail: dropping one invoice changes the snapshot.
    let h = harness();
    let invoice = h
        .events
        .iter()
        .position(|g| g.event.event_type() == ledgerflow_core::EventType::InvoiceFinalized)
        .expect("an invoice");
    let without: Vec<usize> = (0..h.events.len()).filter(|i| *i != invoice).collect();
    let got = h.deliver(&[Delivery::Live(without)]);
    assert_ne!(&got, ordered());
}
