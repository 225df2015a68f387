//! Shared harness: one database per test (a temp-dir SQLite file, or an `erp_test_<uuid>`
//! database on the local Postgres, dropped at the end), tenants, events and batch writes.

#![allow(dead_code, unreachable_pub)]

pub mod sim;

use std::collections::BTreeMap;

use ledgerflow_core::{
    Coordinates, CreditMemoIssued, Currency, CustomerUpserted, Envelope, Event, InvoiceFinalized,
    InvoiceLine, PaymentCaptured, SchemaId, TaxLine, TenantId,
};
use ledgerflow_erp_receivables::ErpReceivables;
use ledgerflow_store::{Backend, ConsumerLogic, StoreError};
use ledgerflow_tenants::{
    AccountMapping, Dynamics365Mapping, ErpAuth, ErpKind, ErpMode, ErpTarget, NetsuiteMapping,
    OracleFusionMapping, S4hanaMapping, SecretRef, TenantConfig,
};
use ledgerflow_testkit::PgDatabase;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Connection, Row};

/// A database for one test.
#[derive(Debug)]
pub struct TestDb {
    pub pool: AnyPool,
    pub backend: Backend,
    /// The Postgres database, dropped `WITH (FORCE)` with the guard.
    pg: Option<PgDatabase>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn create(backend: Backend) -> Self {
        install_default_drivers();
        let (pool, pg, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("erp.db").display());
                let pool = AnyPoolOptions::new()
                    .max_connections(1)
                    .connect(&url)
                    .await
                    .expect("sqlite");
                (pool, None, Some(dir))
            }
            Backend::Postgres => {
                // `PgDatabase::create` blocks: run it off the test's runtime.
                let pg = tokio::task::spawn_blocking(|| PgDatabase::create("erp_test"))
                    .await
                    .expect("creating the test database");
                let pool = AnyPoolOptions::new()
                    .max_connections(8)
                    .connect(&pg.url)
                    .await
                    .expect("postgres");
                (pool, Some(pg), None)
            }
        };
        let db = Self {
            pool,
            backend,
            pg,
            _dir: dir,
        };
        let migrations = ErpReceivables.schema(backend);
        ledgerflow_store::migrate::run(&db.pool, backend, &migrations)
            .await
            .expect("migrations");
        // Twice: the second run finds nothing to apply.
        let again = ledgerflow_store::migrate::run(&db.pool, backend, &migrations)
            .await
            .expect("migrations again");
        assert!(again.applied.is_empty(), "{again:?}");
        // The minimal audit_log the reconcile reads (the store owns the real one).
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS audit_log (
                consumer TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
                \"offset\" BIGINT NOT NULL, seq BIGINT NOT NULL, event_id TEXT, tenant_id TEXT,
                event_type TEXT, decision TEXT NOT NULL, payload_hash TEXT, schema_id BIGINT)",
        )
        .execute(&db.pool)
        .await
        .expect("audit_log");
        db
    }

    pub async fn drop_db(self) {
        self.pool.close().await;
        // Dropping the guard drops the database.
        drop(self.pg);
    }

    /// Maps and writes one batch in its own transaction.
    pub async fn write(
        &self,
        events: &[Event],
        tenants: &[TenantConfig],
    ) -> Result<(), StoreError> {
        let envelopes: Vec<Envelope> = events.iter().cloned().map(envelope).collect();
        let effects: Vec<_> = envelopes
            .iter()
            .map(|env| {
                let tenant = tenants
                    .iter()
                    .find(|t| t.tenant_id == env.meta.tenant_id)
                    .expect("tenant configured");
                (env, ErpReceivables.map(env, tenant).expect("maps"))
            })
            .collect();
        let mut conn = self.pool.acquire().await.expect("connection");
        let mut tx = conn.begin().await.expect("begin");
        ErpReceivables
            .write(&mut tx, self.backend, &effects)
            .await?;
        tx.commit().await.expect("commit");
        Ok(())
    }

    /// Records `events` as applied in the minimal audit log.
    pub async fn audit_applied(&self, events: &[Event]) {
        for (i, e) in events.iter().enumerate() {
            sqlx::query(
                "INSERT INTO audit_log (consumer, topic, partition, \"offset\", seq, event_id,
                 tenant_id, event_type, decision, payload_hash, schema_id)
                 VALUES ('erp-receivables', 'billing.events', 0, $1, $2, $3, $4, $5, 'applied', 'h', 1)",
            )
            .bind(i as i64)
            .bind(i as i64)
            .bind(e.event_id_raw().to_owned())
            .bind(e.tenant_id_raw().to_owned())
            .bind(e.event_type().as_str().to_owned())
            .execute(&self.pool)
            .await
            .expect("audit row");
        }
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        let row = sqlx::query(sql).fetch_one(&self.pool).await.expect(sql);
        row.try_get::<Option<i64>, _>(0).expect(sql).unwrap_or(0)
    }

    pub async fn open_balance(&self, tenant: &str, invoice: &str) -> i64 {
        let row = sqlx::query(
            "SELECT open_minor FROM erp_ar_documents
             WHERE tenant_id = $1 AND doc_type = 'invoice' AND doc_id = $2",
        )
        .bind(tenant.to_owned())
        .bind(invoice.to_owned())
        .fetch_one(&self.pool)
        .await
        .expect("invoice");
        row.try_get(0).expect("open_minor")
    }

    pub async fn unapplied(&self, tenant: &str, payment: &str) -> i64 {
        let row = sqlx::query(
            "SELECT unapplied_minor FROM erp_payments WHERE tenant_id = $1 AND payment_id = $2",
        )
        .bind(tenant.to_owned())
        .bind(payment.to_owned())
        .fetch_one(&self.pool)
        .await
        .expect("payment");
        row.try_get(0).expect("unapplied_minor")
    }

    /// (payment, invoice, amount) of every application, sorted.
    pub async fn applications(&self) -> Vec<(String, String, String, i64)> {
        let rows = sqlx::query(
            "SELECT tenant_id, payment_id, invoice_id, amount_minor FROM erp_applications
             ORDER BY tenant_id, payment_id",
        )
        .fetch_all(&self.pool)
        .await
        .expect("applications");
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    /// Journals whose debits differ from their credits, by SQL over the stored lines.
    pub async fn unbalanced_journals(&self) -> i64 {
        self.scalar(
            "SELECT COUNT(*) FROM (SELECT entry_id FROM erp_journal_lines GROUP BY entry_id
             HAVING SUM(debit_minor) <> SUM(credit_minor)) AS u",
        )
        .await
    }
}

pub fn envelope(event: Event) -> Envelope {
    let meta = event.validate().expect("valid event");
    Envelope::new(
        meta,
        event,
        SchemaId(1),
        Coordinates {
            topic: "billing.events".into(),
            partition: 0,
            offset: 0,
        },
    )
}

pub fn tenant(
    id: &str,
    erp: Option<(ErpKind, String, SecretRef)>,
    rate: Option<u32>,
) -> TenantConfig {
    tenant_in(id, "USD", erp, rate)
}

pub fn tenant_in(
    id: &str,
    currency: &str,
    erp: Option<(ErpKind, String, SecretRef)>,
    rate: Option<u32>,
) -> TenantConfig {
    TenantConfig {
        tenant_id: TenantId::parse(id).unwrap(),
        legal_entity: format!("LE-{id}"),
        functional_currency: Currency::parse(currency).unwrap(),
        erp: erp.map(|(kind, base_url, secret)| target(kind, &base_url, secret)),
        accounts: AccountMapping {
            receivable: "1100".into(),
            revenue_default: "4000".into(),
            revenue_by_family: BTreeMap::from([("support".into(), "4100".into())]),
            tax_payable: "2200".into(),
            cash_clearing: "1010".into(),
            payment_fees: "6100".into(),
            unapplied_cash: "2400".into(),
        },
        webhooks: vec![],
        rate_limit_per_sec: rate,
    }
}

/// A journal-mode route of `kind` at `base_url` (account `ACCT-<kind>`) with every key its ERP
/// needs; `secret` is every secret reference of its auth.
pub fn target(kind: ErpKind, base_url: &str, secret: SecretRef) -> ErpTarget {
    let auth = match kind {
        ErpKind::Netsuite => ErpAuth::NetsuiteTba {
            consumer_key: secret.clone(),
            consumer_secret: secret.clone(),
            token_id: secret.clone(),
            token_secret: secret,
        },
        ErpKind::Dynamics365 => ErpAuth::Oauth2ClientCredentials {
            token_url: format!("{base_url}/token"),
            client_id: "app".into(),
            client_secret: secret,
            scope: None,
        },
        ErpKind::S4hana | ErpKind::OracleFusion => ErpAuth::Basic {
            user: "u".into(),
            password: secret,
        },
    };
    ErpTarget {
        kind,
        account: format!("ACCT-{kind}"),
        base_url: base_url.to_owned(),
        mode: ErpMode::Journal,
        auth,
        netsuite: (kind == ErpKind::Netsuite).then(|| NetsuiteMapping {
            subsidiary: "1".into(),
            default_item: Some("501".into()),
            items: BTreeMap::new(),
        }),
        dynamics365: (kind == ErpKind::Dynamics365).then(|| Dynamics365Mapping {
            data_area_id: "usmf".into(),
            journal_name: "GenJrn".into(),
            payment_journal_name: Some("CustPay".into()),
        }),
        s4hana: (kind == ErpKind::S4hana).then(|| S4hanaMapping {
            company_code: "1010".into(),
            document_type: "SA".into(),
        }),
        oracle_fusion: (kind == ErpKind::OracleFusion).then(|| OracleFusionMapping {
            ledger: "Primary".into(),
            business_unit: "BU".into(),
            journal_source: "ledgerflow".into(),
            journal_category: "Sales".into(),
        }),
        limits: None,
        config_version: "cfg-test".into(),
    }
}

/// A deterministic event id from a number.
pub fn eid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

pub fn invoice(tenant: &str, n: u64, invoice_id: &str, net: i64, tax: i64) -> Event {
    invoice_at(tenant, n, invoice_id, net, tax, "USD")
}

pub fn invoice_at(
    tenant: &str,
    n: u64,
    invoice_id: &str,
    net: i64,
    tax: i64,
    currency: &str,
) -> Event {
    let half = net / 2;
    let lines = vec![
        InvoiceLine {
            line_id: "l1".into(),
            description: "platform".into(),
            product_family: "platform".into(),
            quantity_micros: 1_000_000,
            unit_amount_minor: half,
            amount_minor: half,
        },
        InvoiceLine {
            line_id: "l2".into(),
            description: "support".into(),
            product_family: "support".into(),
            quantity_micros: 1_000_000,
            unit_amount_minor: net - half,
            amount_minor: net - half,
        },
    ];
    Event::InvoiceFinalized(InvoiceFinalized {
        event_id: eid(n),
        tenant_id: tenant.into(),
        occurred_at: 1_700_000_000_000_000 + n as i64,
        correlation_id: "c".into(),
        causation_id: None,
        source: "billing-api".into(),
        invoice_id: invoice_id.into(),
        invoice_number: format!("INV-{invoice_id}"),
        customer_id: "cus-1".into(),
        subscription_id: None,
        currency: currency.into(),
        issued_at: 1_700_000_000_000_000 + n as i64,
        due_at: 1_702_592_000_000_000,
        lines,
        tax_lines: vec![TaxLine {
            jurisdiction: "US-CA".into(),
            rate_bps: 725,
            taxable_amount_minor: net,
            amount_minor: tax,
        }],
        subtotal_minor: net,
        tax_minor: tax,
        total_minor: net + tax,
        purchase_order: None,
    })
}

pub fn payment(
    tenant: &str,
    n: u64,
    payment_id: &str,
    invoice_id: &str,
    amount: i64,
    fee: i64,
) -> Event {
    payment_in(tenant, n, payment_id, invoice_id, amount, fee, "USD")
}

pub fn payment_in(
    tenant: &str,
    n: u64,
    payment_id: &str,
    invoice_id: &str,
    amount: i64,
    fee: i64,
    currency: &str,
) -> Event {
    Event::PaymentCaptured(PaymentCaptured {
        event_id: eid(n),
        tenant_id: tenant.into(),
        occurred_at: 1_700_000_100_000_000 + n as i64,
        correlation_id: "c".into(),
        causation_id: None,
        source: "payments-service".into(),
        payment_id: payment_id.into(),
        invoice_id: invoice_id.into(),
        customer_id: "cus-1".into(),
        currency: currency.into(),
        amount_minor: amount,
        fee_minor: fee,
        method: "card".into(),
        processor_reference: "ch_1".into(),
        captured_at: 1_700_000_100_000_000 + n as i64,
        settlement_currency: None,
    })
}

pub fn credit_memo(
    tenant: &str,
    n: u64,
    memo_id: &str,
    invoice_id: &str,
    net: i64,
    tax: i64,
) -> Event {
    Event::CreditMemoIssued(CreditMemoIssued {
        event_id: eid(n),
        tenant_id: tenant.into(),
        occurred_at: 1_700_000_200_000_000 + n as i64,
        correlation_id: "c".into(),
        causation_id: None,
        source: "billing-api".into(),
        credit_memo_id: memo_id.into(),
        credit_memo_number: format!("CM-{memo_id}"),
        invoice_id: invoice_id.into(),
        customer_id: "cus-1".into(),
        currency: "USD".into(),
        product_family: "support".into(),
        amount_minor: net,
        tax_minor: tax,
        total_minor: net + tax,
        reason: "goodwill".into(),
        issued_at: 1_700_000_200_000_000 + n as i64,
    })
}

pub fn customer(tenant: &str, n: u64, customer_id: &str, name: &str, occurred_at: i64) -> Event {
    Event::CustomerUpserted(CustomerUpserted {
        event_id: eid(n),
        tenant_id: tenant.into(),
        occurred_at,
        correlation_id: "c".into(),
        causation_id: None,
        source: "crm".into(),
        customer_id: customer_id.into(),
        name: name.into(),
        email: None,
        country: "US".into(),
        currency: "USD".into(),
        tax_id: None,
    })
}

/// Instantiates `async fn name(backend: Backend)` scenarios once per backend.
#[macro_export]
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
