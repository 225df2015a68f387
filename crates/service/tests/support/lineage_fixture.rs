//! A small ledger for lineage tests, filled through the batch path every consumer uses
//! (`Store::commit_batch` with each consumer's own mapping and writer, as the runtime calls
//! them once a record is decoded): an invoice, its payment and credit memo, and an event of an
//! unknown tenant, dead-lettered. Every record carries a W3C `traceparent` header, turned into
//! the envelope's trace id by the function the pipeline uses. Shared by
//! crates/service/tests/lineage.rs and tests/tests/lineage_cli.rs.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::sync::Arc;

use ledgerflow_core::{
    Coordinates, CreditMemoIssued, Envelope, Event, InvoiceFinalized, InvoiceLine, PaymentCaptured,
    ReasonCode, SchemaId, TaxLine, TenantId, trace_id_of,
};
use ledgerflow_store::{
    BatchInput, DeadLetterInput, ErasedConsumer, RecordOutcome, SkippedInput, Store,
};
use ledgerflow_tenants::{TenantConfig, TenantRegistry};

pub const TOPIC: &str = "billing.events";
pub const TENANT: &str = "acme";
pub const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

pub const TENANTS: &str = r#"
[[tenants]]
tenant_id = "acme"
legal_entity = "Acme Corp."
functional_currency = "USD"
erp = { kind = "s4hana", account = "S4H", base_url = "http://127.0.0.1:9/s4", auth = { method = "basic", user = "COMM_USER", password = { env = "LINEAGE_TEST_S4_PASSWORD" } }, s4hana = { company_code = "1010", document_type = "SA" } }
accounts = { receivable = "1100", revenue_default = "4000", tax_payable = "2200", cash_clearing = "1010", payment_fees = "6100", unapplied_cash = "2400" }

[[tenants.webhooks]]
id = "billing"
url = "http://127.0.0.1:9/hooks"
secret = { env = "LINEAGE_TEST_WHSEC" }
"#;

pub fn eid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

pub fn traceparent(n: u64) -> String {
    format!("00-{TRACE_ID}-{n:016x}-01")
}

pub fn invoice(n: u64, tenant: &str, invoice_id: &str) -> Event {
    Event::InvoiceFinalized(InvoiceFinalized {
        event_id: eid(n),
        tenant_id: tenant.into(),
        occurred_at: 1_700_000_000_000_000,
        correlation_id: format!("corr-{invoice_id}"),
        causation_id: None,
        source: "billing-api".into(),
        invoice_id: invoice_id.into(),
        invoice_number: format!("INV-{invoice_id}"),
        customer_id: "cus-1".into(),
        subscription_id: None,
        currency: "USD".into(),
        issued_at: 1_700_000_000_000_000,
        due_at: 1_702_592_000_000_000,
        lines: vec![InvoiceLine {
            line_id: "l1".into(),
            description: "platform".into(),
            product_family: "platform".into(),
            quantity_micros: 1_000_000,
            unit_amount_minor: 10_000,
            amount_minor: 10_000,
        }],
        tax_lines: vec![TaxLine {
            jurisdiction: "US-CA".into(),
            rate_bps: 725,
            taxable_amount_minor: 10_000,
            amount_minor: 725,
        }],
        subtotal_minor: 10_000,
        tax_minor: 725,
        total_minor: 10_725,
        purchase_order: None,
    })
}

pub fn payment(n: u64, invoice_id: &str) -> Event {
    Event::PaymentCaptured(PaymentCaptured {
        event_id: eid(n),
        tenant_id: TENANT.into(),
        occurred_at: 1_700_000_100_000_000,
        correlation_id: format!("corr-{invoice_id}"),
        causation_id: None,
        source: "payments-service".into(),
        payment_id: "pay-1".into(),
        invoice_id: invoice_id.into(),
        customer_id: "cus-1".into(),
        currency: "USD".into(),
        amount_minor: 5_000,
        fee_minor: 150,
        method: "card".into(),
        processor_reference: "ch_1".into(),
        captured_at: 1_700_000_100_000_000,
        settlement_currency: None,
    })
}

pub fn credit_memo(n: u64, invoice_id: &str) -> Event {
    Event::CreditMemoIssued(CreditMemoIssued {
        event_id: eid(n),
        tenant_id: TENANT.into(),
        occurred_at: 1_700_000_200_000_000,
        correlation_id: format!("corr-{invoice_id}"),
        causation_id: None,
        source: "billing-api".into(),
        credit_memo_id: "cm-1".into(),
        credit_memo_number: "CM-1".into(),
        invoice_id: invoice_id.into(),
        customer_id: "cus-1".into(),
        currency: "USD".into(),
        product_family: "platform".into(),
        amount_minor: 1_000,
        tax_minor: 0,
        total_minor: 1_000,
        reason: "goodwill".into(),
        issued_at: 1_700_000_200_000_000,
    })
}

/// The records: offset = index; the last one names a tenant the registry does not know.
pub fn records() -> Vec<Event> {
    vec![
        invoice(1, TENANT, "inv-1"),
        payment(2, "inv-1"),
        credit_memo(3, "inv-1"),
        invoice(4, "ghost", "inv-9"),
    ]
}

/// Judges and commits every record for every consumer in one batch each, as the runtime does
/// after decoding (same trace id extraction, same mapping, same `commit_batch`).
pub async fn push(store: &Store, consumers: &[Arc<dyn ErasedConsumer>], tenant: &TenantConfig) {
    for logic in consumers {
        store
            .apply_schema(&logic.schema(store.backend()))
            .await
            .expect("schema");
        let mut outcomes = Vec::new();
        for (offset, event) in records().into_iter().enumerate() {
            let offset = i64::try_from(offset).expect("offset");
            let n = u64::try_from(offset).expect("n") + 1;
            let meta = event.validate().expect("valid event");
            let headers = vec![
                ("traceparent".to_owned(), Some(traceparent(n))),
                ("event_id".to_owned(), Some(meta.event_id.to_string())),
            ];
            if meta.tenant_id.as_str() != TENANT {
                outcomes.push(RecordOutcome::DeadLetter(DeadLetterInput {
                    offset,
                    reason: ReasonCode::UnknownTenant,
                    error: format!("tenant {} is not in the tenant registry", meta.tenant_id),
                    key: Some(meta.tenant_id.as_str().as_bytes().to_vec()),
                    value: Some(vec![0, 0, 0, 0, 1]),
                    headers,
                    schema_id: Some(1),
                    event_id: Some(meta.event_id.to_string()),
                    tenant_id: Some(meta.tenant_id.to_string()),
                    event_type: Some(meta.event_type.as_str().to_owned()),
                }));
                continue;
            }
            let mut envelope = Envelope::new(
                meta.clone(),
                event,
                SchemaId(1),
                Coordinates {
                    topic: TOPIC.into(),
                    partition: 0,
                    offset,
                },
            );
            envelope.trace_id = trace_id_of(&traceparent(n));
            if !logic.handles(meta.event_type) {
                outcomes.push(RecordOutcome::Skipped(SkippedInput { envelope }));
                continue;
            }
            let effect = logic.map_erased(&envelope, tenant).expect("maps");
            let raw = Box::new(DeadLetterInput {
                offset,
                reason: ReasonCode::IdempotencyConflict,
                error: String::new(),
                key: None,
                value: None,
                headers,
                schema_id: Some(1),
                event_id: Some(meta.event_id.to_string()),
                tenant_id: Some(meta.tenant_id.to_string()),
                event_type: Some(meta.event_type.as_str().to_owned()),
            });
            outcomes.push(RecordOutcome::Mapped {
                envelope,
                effect,
                raw,
            });
        }
        let next_offset = i64::try_from(outcomes.len()).expect("len");
        store
            .commit_batch(
                logic.as_ref(),
                BatchInput {
                    topic: TOPIC.into(),
                    partition: 0,
                    records: outcomes,
                    next_offset,
                },
            )
            .await
            .expect("commit");
    }
}

/// Tenant `acme` of [`TENANTS`], loaded from a file in `dir` as `ledgerflow run` loads it.
pub fn tenant(dir: &Path) -> Arc<TenantConfig> {
    let path = dir.join("tenants.toml");
    std::fs::write(&path, TENANTS).expect("tenants file");
    let registry = TenantRegistry::load(&path).expect("tenants");
    registry
        .get(&TenantId::parse(TENANT).expect("tenant"))
        .expect("acme")
}
