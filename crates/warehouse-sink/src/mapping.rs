//! The pure half of the consumer: one event in, typed warehouse rows out, no I/O.
//!
//! | event | rows |
//! | --- | --- |
//! | every event | `dim_tenant` upsert from the tenant configuration seen at mapping time |
//! | `customer_upserted` | a `dim_customer` version valid from the event's `occurred_at` (the contract has no separate `updated_at`) |
//! | `subscription_activated`, `subscription_canceled` | a `fact_subscription_event` row |
//! | `usage_aggregated` | a `fact_usage` row (quantity in exact micros) |
//! | `invoice_finalized` | a `fact_invoice` row, plus `fact_invoice_line` rows: charge lines numbered 1..n in event order, then tax lines n+1.. |
//! | `payment_captured` | a `fact_payment` row (it carries `invoice_id`; no foreign key, so it lands before its invoice) |
//! | `credit_memo_issued` | a `fact_credit_memo` row |
//!
//! Every event is validated again (known currency, totals that add up) and must belong to the
//! tenant it is mapped with; anything else is a permanent failure with a reason code.

use std::future::Future;

use ledgerflow_core::{
    CreditMemoIssued, Currency, CustomerUpserted, Envelope, Event, EventType, Failure,
    InvoiceFinalized, PaymentCaptured, ReasonCode, SubscriptionActivated, SubscriptionCanceled,
    UsageAggregated,
};
use ledgerflow_store::{Backend, ConsumerLogic, StoreError};
use ledgerflow_tenants::TenantConfig;
use sqlx::AnyConnection;

use crate::effect::{
    CreditMemoFact, CustomerVersion, Fact, InvoiceFact, InvoiceLineFact, LineKind, PaymentFact,
    SubscriptionFact, TenantRow, UsageFact, WarehouseEffect,
};

/// The consumer name: part of the group id, the inbox and audit keys.
pub const CONSUMER_NAME: &str = "warehouse";

/// The warehouse consumer. Stateless; hand `Warehouse` to the runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct Warehouse;

fn invalid(detail: impl Into<String>) -> Failure {
    Failure::permanent(ReasonCode::Validation, detail)
}

fn currency(field: &str, code: &str) -> Result<Currency, Failure> {
    Currency::parse(code).map_err(|e| invalid(format!("{field}: {e}")))
}

fn count(what: &str, n: usize) -> Result<i64, Failure> {
    i64::try_from(n).map_err(|_| invalid(format!("{what} {n} does not fit 64 bits")))
}

/// Maps one event to its rows. See the module docs.
pub fn map_event(envelope: &Envelope, tenant: &TenantConfig) -> Result<WarehouseEffect, Failure> {
    // Business rules (known currencies, totals that add up, fee <= amount) are checked again
    // so the rows below can rely on them, whatever validated the event before.
    let meta = envelope.event.validate()?;
    if meta.tenant_id != tenant.tenant_id {
        return Err(Failure::permanent(
            ReasonCode::TenantMismatch,
            format!(
                "event of tenant {} mapped with the configuration of tenant {}",
                meta.tenant_id, tenant.tenant_id
            ),
        ));
    }
    let tenant_id = meta.tenant_id.as_str().to_owned();
    let event_id = meta.event_id.to_string();
    let fact = match &envelope.event {
        Event::CustomerUpserted(e) => Fact::Customer(customer(tenant_id.clone(), event_id, e)?),
        Event::SubscriptionActivated(e) => {
            Fact::Subscription(activated(tenant_id.clone(), event_id, e)?)
        }
        Event::SubscriptionCanceled(e) => {
            Fact::Subscription(canceled(tenant_id.clone(), event_id, e))
        }
        Event::UsageAggregated(e) => Fact::Usage(usage(tenant_id.clone(), event_id, e)),
        Event::InvoiceFinalized(e) => Fact::Invoice(invoice(tenant_id.clone(), event_id, e)?),
        Event::PaymentCaptured(e) => Fact::Payment(payment(tenant_id.clone(), event_id, e)?),
        Event::CreditMemoIssued(e) => {
            Fact::CreditMemo(credit_memo(tenant_id.clone(), event_id, e)?)
        }
        // Corrections have no fact table yet; `handles` says no, so the runtime audits them
        // as skipped and never maps them. Reaching this is a wiring mistake, not bad input.
        Event::InvoiceVoided(_) | Event::PaymentRefunded(_) => {
            return Err(Failure::permanent(
                ReasonCode::UnknownEventType,
                format!(
                    "{} has no warehouse fact (skipped by handles)",
                    meta.event_type
                ),
            ));
        }
    };
    Ok(WarehouseEffect {
        tenant: TenantRow {
            tenant_id,
            legal_entity: tenant.legal_entity.clone(),
            functional_currency: tenant.functional_currency,
        },
        fact,
    })
}

fn customer(
    tenant_id: String,
    event_id: String,
    e: &CustomerUpserted,
) -> Result<CustomerVersion, Failure> {
    Ok(CustomerVersion {
        tenant_id,
        customer_id: e.customer_id.clone(),
        valid_from: e.occurred_at,
        event_id,
        name: e.name.clone(),
        email: e.email.clone(),
        country: e.country.clone(),
        currency: currency("currency", &e.currency)?,
        tax_id: e.tax_id.clone(),
    })
}

fn activated(
    tenant_id: String,
    event_id: String,
    e: &SubscriptionActivated,
) -> Result<SubscriptionFact, Failure> {
    Ok(SubscriptionFact {
        tenant_id,
        event_id,
        event_type: EventType::SubscriptionActivated,
        subscription_id: e.subscription_id.clone(),
        customer_id: e.customer_id.clone(),
        effective_at: e.started_at,
        plan_id: Some(e.plan_id.clone()),
        product_family: Some(e.product_family.clone()),
        billing_interval: Some(e.billing_interval.clone()),
        currency: Some(currency("currency", &e.currency)?),
        unit_amount_minor: Some(e.unit_amount_minor),
        cancel_reason: None,
        occurred_at: e.occurred_at,
    })
}

fn canceled(tenant_id: String, event_id: String, e: &SubscriptionCanceled) -> SubscriptionFact {
    SubscriptionFact {
        tenant_id,
        event_id,
        event_type: EventType::SubscriptionCanceled,
        subscription_id: e.subscription_id.clone(),
        customer_id: e.customer_id.clone(),
        effective_at: e.effective_at,
        plan_id: None,
        product_family: None,
        billing_interval: None,
        currency: None,
        unit_amount_minor: None,
        cancel_reason: e.reason.clone(),
        occurred_at: e.occurred_at,
    }
}

fn usage(tenant_id: String, event_id: String, e: &UsageAggregated) -> UsageFact {
    UsageFact {
        tenant_id,
        event_id,
        subscription_id: e.subscription_id.clone(),
        customer_id: e.customer_id.clone(),
        meter: e.meter.clone(),
        quantity_micros: e.quantity_micros,
        period_start: e.period_start,
        period_end: e.period_end,
        occurred_at: e.occurred_at,
    }
}

fn invoice(
    tenant_id: String,
    event_id: String,
    e: &InvoiceFinalized,
) -> Result<InvoiceFact, Failure> {
    let mut lines = Vec::with_capacity(e.lines.len() + e.tax_lines.len());
    for l in &e.lines {
        lines.push(InvoiceLineFact {
            line_no: count("line number", lines.len() + 1)?,
            kind: LineKind::Charge,
            line_id: Some(l.line_id.clone()),
            description: Some(l.description.clone()),
            product_family: Some(l.product_family.clone()),
            jurisdiction: None,
            rate_bps: None,
            quantity_micros: Some(l.quantity_micros),
            unit_amount_minor: Some(l.unit_amount_minor),
            taxable_amount_minor: None,
            amount_minor: l.amount_minor,
        });
    }
    for t in &e.tax_lines {
        lines.push(InvoiceLineFact {
            line_no: count("line number", lines.len() + 1)?,
            kind: LineKind::Tax,
            line_id: None,
            description: None,
            product_family: None,
            jurisdiction: Some(t.jurisdiction.clone()),
            rate_bps: Some(i64::from(t.rate_bps)),
            quantity_micros: None,
            unit_amount_minor: None,
            taxable_amount_minor: Some(t.taxable_amount_minor),
            amount_minor: t.amount_minor,
        });
    }
    Ok(InvoiceFact {
        tenant_id,
        invoice_id: e.invoice_id.clone(),
        invoice_number: e.invoice_number.clone(),
        customer_id: e.customer_id.clone(),
        subscription_id: e.subscription_id.clone(),
        currency: currency("currency", &e.currency)?,
        issued_at: e.issued_at,
        due_at: e.due_at,
        subtotal_minor: e.subtotal_minor,
        tax_minor: e.tax_minor,
        total_minor: e.total_minor,
        line_count: count("line count", e.lines.len())?,
        purchase_order: e.purchase_order.clone(),
        event_id,
        occurred_at: e.occurred_at,
        lines,
    })
}

fn payment(
    tenant_id: String,
    event_id: String,
    e: &PaymentCaptured,
) -> Result<PaymentFact, Failure> {
    let net = e
        .amount_minor
        .checked_sub(e.fee_minor)
        .ok_or_else(|| invalid("amount_minor - fee_minor does not fit 64 bits"))?;
    Ok(PaymentFact {
        tenant_id,
        payment_id: e.payment_id.clone(),
        invoice_id: e.invoice_id.clone(),
        customer_id: e.customer_id.clone(),
        currency: currency("currency", &e.currency)?,
        amount_minor: e.amount_minor,
        fee_minor: e.fee_minor,
        net_minor: net,
        method: e.method.clone(),
        processor_reference: e.processor_reference.clone(),
        settlement_currency: e
            .settlement_currency
            .as_deref()
            .map(|c| currency("settlement_currency", c))
            .transpose()?,
        captured_at: e.captured_at,
        event_id,
        occurred_at: e.occurred_at,
    })
}

fn credit_memo(
    tenant_id: String,
    event_id: String,
    e: &CreditMemoIssued,
) -> Result<CreditMemoFact, Failure> {
    Ok(CreditMemoFact {
        tenant_id,
        credit_memo_id: e.credit_memo_id.clone(),
        credit_memo_number: e.credit_memo_number.clone(),
        invoice_id: e.invoice_id.clone(),
        customer_id: e.customer_id.clone(),
        currency: currency("currency", &e.currency)?,
        product_family: e.product_family.clone(),
        amount_minor: e.amount_minor,
        tax_minor: e.tax_minor,
        total_minor: e.total_minor,
        reason: e.reason.clone(),
        issued_at: e.issued_at,
        event_id,
        occurred_at: e.occurred_at,
    })
}

impl ConsumerLogic for Warehouse {
    type Effect = WarehouseEffect;

    fn name(&self) -> &'static str {
        CONSUMER_NAME
    }

    fn handles(&self, event_type: EventType) -> bool {
        // Every event type has a fact or a dimension row; listed so a new type is a compile
        // error here rather than a silent skip.
        match event_type {
            EventType::CustomerUpserted
            | EventType::SubscriptionActivated
            | EventType::SubscriptionCanceled
            | EventType::UsageAggregated
            | EventType::InvoiceFinalized
            | EventType::PaymentCaptured
            | EventType::CreditMemoIssued => true,
            // Corrections (a void, a refund) have no fact table yet: skipped explicitly and
            // audited as skipped, so adding one later is a decision, not an accident.
            EventType::InvoiceVoided | EventType::PaymentRefunded => false,
        }
    }

    fn map(&self, envelope: &Envelope, tenant: &TenantConfig) -> Result<WarehouseEffect, Failure> {
        map_event(envelope, tenant)
    }

    fn schema(&self, backend: Backend) -> ledgerflow_store::Migrations {
        crate::schema::migrations(backend)
    }

    fn write<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        backend: Backend,
        effects: &'a [(&'a Envelope, WarehouseEffect)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        crate::write::write(conn, backend, effects)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ledgerflow_core::{Coordinates, InvoiceLine, SchemaId, TaxLine, TenantId};
    use ledgerflow_tenants::AccountMapping;

    use super::*;
    use crate::Value;
    use crate::table::{ColumnKind, Table};

    const E1: &str = "00000000-0000-4000-8000-000000000001";

    fn tenant(id: &str) -> TenantConfig {
        TenantConfig {
            tenant_id: TenantId::parse(id).unwrap(),
            legal_entity: "Acme GmbH".into(),
            functional_currency: Currency::parse("EUR").unwrap(),
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

    fn envelope(event: Event) -> Envelope {
        let meta = event.meta().unwrap();
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

    fn invoice() -> InvoiceFinalized {
        InvoiceFinalized {
            event_id: E1.into(),
            tenant_id: "acme".into(),
            occurred_at: 1_700_000_000_000_001,
            correlation_id: "c".into(),
            causation_id: None,
            source: "billing-api".into(),
            invoice_id: "inv-1".into(),
            invoice_number: "INV-1".into(),
            customer_id: "cus-1".into(),
            subscription_id: Some("sub-1".into()),
            currency: "EUR".into(),
            issued_at: 1_700_000_000_000_000,
            due_at: 1_702_592_000_000_000,
            lines: vec![
                InvoiceLine {
                    line_id: "l1".into(),
                    description: "Pro plan".into(),
                    product_family: "platform".into(),
                    quantity_micros: 2_500_000,
                    unit_amount_minor: 1999,
                    amount_minor: 4998,
                },
                InvoiceLine {
                    line_id: "l2".into(),
                    description: "API calls".into(),
                    product_family: "usage".into(),
                    quantity_micros: 1_234_567,
                    unit_amount_minor: 100,
                    amount_minor: 123,
                },
            ],
            tax_lines: vec![TaxLine {
                jurisdiction: "DE".into(),
                rate_bps: 1900,
                taxable_amount_minor: 5121,
                amount_minor: 973,
            }],
            subtotal_minor: 5121,
            tax_minor: 973,
            total_minor: 6094,
            purchase_order: Some("PO-7".into()),
        }
    }

    fn payment() -> PaymentCaptured {
        PaymentCaptured {
            event_id: E1.into(),
            tenant_id: "acme".into(),
            occurred_at: 1_700_000_100_000_000,
            correlation_id: "c".into(),
            causation_id: None,
            source: "payments".into(),
            payment_id: "pay-1".into(),
            invoice_id: "inv-1".into(),
            customer_id: "cus-1".into(),
            currency: "EUR".into(),
            amount_minor: 6094,
            fee_minor: 94,
            method: "card".into(),
            processor_reference: "ch_1".into(),
            captured_at: 1_700_000_100_000_000,
            settlement_currency: Some("USD".into()),
        }
    }

    fn sample_events() -> Vec<Event> {
        vec![
            Event::CustomerUpserted(CustomerUpserted {
                event_id: E1.into(),
                tenant_id: "acme".into(),
                occurred_at: 5,
                correlation_id: "c".into(),
                causation_id: None,
                source: "crm".into(),
                customer_id: "cus-1".into(),
                name: "Ada".into(),
                email: None,
                country: "DE".into(),
                currency: "EUR".into(),
                tax_id: Some("DE123".into()),
            }),
            Event::SubscriptionActivated(SubscriptionActivated {
                event_id: E1.into(),
                tenant_id: "acme".into(),
                occurred_at: 6,
                correlation_id: "c".into(),
                causation_id: None,
                source: "billing".into(),
                subscription_id: "sub-1".into(),
                customer_id: "cus-1".into(),
                plan_id: "pro".into(),
                product_family: "platform".into(),
                currency: "EUR".into(),
                unit_amount_minor: 1999,
                billing_interval: "month".into(),
                started_at: 7,
            }),
            Event::SubscriptionCanceled(SubscriptionCanceled {
                event_id: E1.into(),
                tenant_id: "acme".into(),
                occurred_at: 8,
                correlation_id: "c".into(),
                causation_id: None,
                source: "billing".into(),
                subscription_id: "sub-1".into(),
                customer_id: "cus-1".into(),
                reason: None,
                effective_at: 9,
            }),
            Event::UsageAggregated(UsageAggregated {
                event_id: E1.into(),
                tenant_id: "acme".into(),
                occurred_at: 10,
                correlation_id: "c".into(),
                causation_id: None,
                source: "metering".into(),
                subscription_id: "sub-1".into(),
                customer_id: "cus-1".into(),
                meter: "api_calls".into(),
                quantity_micros: 1_234_567_890_123,
                period_start: 11,
                period_end: 12,
            }),
            Event::InvoiceFinalized(invoice()),
            Event::PaymentCaptured(payment()),
            Event::CreditMemoIssued(CreditMemoIssued {
                event_id: E1.into(),
                tenant_id: "acme".into(),
                occurred_at: 13,
                correlation_id: "c".into(),
                causation_id: None,
                source: "billing".into(),
                credit_memo_id: "cm-1".into(),
                credit_memo_number: "CM-1".into(),
                invoice_id: "inv-1".into(),
                customer_id: "cus-1".into(),
                currency: "EUR".into(),
                product_family: "platform".into(),
                amount_minor: 100,
                tax_minor: 19,
                total_minor: 119,
                reason: "goodwill".into(),
                issued_at: 14,
            }),
        ]
    }

    /// Every row matches its table's columns in count, kind and nullability.
    fn assert_fits(table: Table, row: &[Value]) {
        let columns = table.columns();
        assert_eq!(row.len(), columns.len(), "{table}: {row:?}");
        for (c, v) in columns.iter().zip(row) {
            match v {
                Value::Null => assert!(c.nullable, "{table}.{} is not nullable", c.name),
                Value::Text(_) => assert_eq!(c.kind, ColumnKind::Text, "{table}.{}", c.name),
                Value::Int(_) => assert_ne!(c.kind, ColumnKind::Text, "{table}.{}", c.name),
            }
        }
    }

    #[test]
    fn handles_every_event_type_but_the_corrections() {
        for t in EventType::ALL {
            let correction = matches!(t, EventType::InvoiceVoided | EventType::PaymentRefunded);
            assert_eq!(Warehouse.handles(t), !correction, "{t}");
        }
        assert_eq!(ConsumerLogic::name(&Warehouse), "warehouse");
    }

    #[test]
    fn every_event_maps_to_rows_that_fit_their_tables() {
        let t = tenant("acme");
        for event in sample_events() {
            let effect = Warehouse.map(&envelope(event.clone()), &t).unwrap();
            assert_eq!(
                effect.tenant.row(),
                [
                    Value::from("acme"),
                    Value::from("Acme GmbH"),
                    Value::from("EUR")
                ]
            );
            assert_fits(Table::DimTenant, &effect.tenant.row());
            match &effect.fact {
                Fact::Customer(c) => assert_fits(Table::DimCustomer, &c.row()),
                Fact::Subscription(s) => assert_fits(Table::FactSubscriptionEvent, &s.row()),
                Fact::Usage(u) => assert_fits(Table::FactUsage, &u.row()),
                Fact::Invoice(i) => {
                    assert_fits(Table::FactInvoice, &i.row());
                    for line in i.line_rows() {
                        assert_fits(Table::FactInvoiceLine, &line);
                    }
                }
                Fact::Payment(p) => assert_fits(Table::FactPayment, &p.row()),
                Fact::CreditMemo(m) => assert_fits(Table::FactCreditMemo, &m.row()),
            }
        }
    }

    #[test]
    fn invoice_lines_number_charges_then_taxes_and_add_up_exactly() {
        let effect = map_event(
            &envelope(Event::InvoiceFinalized(invoice())),
            &tenant("acme"),
        )
        .unwrap();
        let Fact::Invoice(inv) = effect.fact else {
            panic!("not an invoice: {effect:?}")
        };
        assert_eq!(inv.line_count, 2);
        assert_eq!(inv.total_minor, 6094);
        let kinds: Vec<(i64, LineKind)> = inv.lines.iter().map(|l| (l.line_no, l.kind)).collect();
        assert_eq!(
            kinds,
            [
                (1, LineKind::Charge),
                (2, LineKind::Charge),
                (3, LineKind::Tax)
            ]
        );
        let sum = |k: LineKind| -> i64 {
            inv.lines
                .iter()
                .filter(|l| l.kind == k)
                .map(|l| l.amount_minor)
                .sum()
        };
        assert_eq!(sum(LineKind::Charge), inv.subtotal_minor);
        assert_eq!(sum(LineKind::Tax), inv.tax_minor);
        assert_eq!(inv.lines[1].quantity_micros, Some(1_234_567));
        assert_eq!(inv.lines[2].rate_bps, Some(1900));
        assert_eq!(inv.lines[2].taxable_amount_minor, Some(5121));
        let row = inv.row();
        assert_eq!(row[1], Value::from("inv-1"));
        assert_eq!(row[10], Value::Int(6094));
        assert_eq!(row[12], Value::from("PO-7"));
    }

    #[test]
    fn payments_carry_their_invoice_and_net_amount() {
        let effect = map_event(
            &envelope(Event::PaymentCaptured(payment())),
            &tenant("acme"),
        )
        .unwrap();
        let Fact::Payment(p) = effect.fact else {
            panic!("not a payment")
        };
        assert_eq!(p.invoice_id, "inv-1");
        assert_eq!((p.amount_minor, p.fee_minor, p.net_minor), (6094, 94, 6000));
        assert_eq!(
            p.settlement_currency.map(|c| c.code().to_owned()),
            Some("USD".into())
        );
    }

    #[test]
    fn customers_become_versions_valid_from_their_business_time() {
        let event = sample_events().remove(0);
        let effect = map_event(&envelope(event), &tenant("acme")).unwrap();
        let Fact::Customer(c) = effect.fact else {
            panic!("not a customer")
        };
        assert_eq!(c.valid_from, 5);
        assert_eq!(c.event_id, E1);
        let row = c.row();
        // Inserted open and not current; the writer derives both from the whole timeline.
        assert_eq!(row[9], Value::Null);
        assert_eq!(row[10], Value::Int(0));
    }

    #[test]
    fn subscriptions_keep_the_event_type_and_effective_time() {
        let events = sample_events();
        let t = tenant("acme");
        let activated = map_event(&envelope(events[1].clone()), &t).unwrap();
        let canceled = map_event(&envelope(events[2].clone()), &t).unwrap();
        let (Fact::Subscription(a), Fact::Subscription(c)) = (activated.fact, canceled.fact) else {
            panic!("not subscription facts")
        };
        assert_eq!(a.event_type, EventType::SubscriptionActivated);
        assert_eq!((a.effective_at, a.unit_amount_minor), (7, Some(1999)));
        assert_eq!(c.event_type, EventType::SubscriptionCanceled);
        assert_eq!(
            (c.effective_at, c.currency, c.unit_amount_minor),
            (9, None, None)
        );
    }

    #[test]
    fn bad_data_is_a_permanent_failure_with_a_reason() {
        let t = tenant("acme");
        let mut bad_currency = payment();
        bad_currency.currency = "XXX".into();
        let err = map_event(&envelope(Event::PaymentCaptured(bad_currency)), &t).unwrap_err();
        assert_eq!(err.reason(), Some(ReasonCode::Validation));
        assert!(err.to_string().contains("XXX"), "{err}");

        let mut bad_settlement = payment();
        bad_settlement.settlement_currency = Some("usd".into());
        let err = map_event(&envelope(Event::PaymentCaptured(bad_settlement)), &t).unwrap_err();
        assert_eq!(err.reason(), Some(ReasonCode::Validation));

        let mut bad_total = invoice();
        bad_total.total_minor += 1;
        let err = map_event(&envelope(Event::InvoiceFinalized(bad_total)), &t).unwrap_err();
        assert_eq!(err.reason(), Some(ReasonCode::Validation));

        let err = map_event(
            &envelope(Event::InvoiceFinalized(invoice())),
            &tenant("other"),
        )
        .unwrap_err();
        assert_eq!(err.reason(), Some(ReasonCode::TenantMismatch));
    }
}
