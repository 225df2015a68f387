//! The typed billing events. Field names and types mirror the Avro contracts in `schemas/`
//! (the newest version of each is the reader schema), so `serde` maps between them directly.
//! Timestamps are microseconds since the Unix epoch (Avro `timestamp-micros`); money is integer
//! minor units; quantities are fixed-point with six fractional digits (`*_micros`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Currency, EventId, Failure, ReasonCode, TenantId};

/// Avro namespace of every event record.
const NAMESPACE: &str = "com.ledgerflow.billing";

/// The kinds of event ledgerflow understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// `customer_upserted`
    CustomerUpserted,
    /// `subscription_activated`
    SubscriptionActivated,
    /// `subscription_canceled`
    SubscriptionCanceled,
    /// `usage_aggregated`
    UsageAggregated,
    /// `invoice_finalized`
    InvoiceFinalized,
    /// `payment_captured`
    PaymentCaptured,
    /// `credit_memo_issued`
    CreditMemoIssued,
    /// `invoice_voided`
    InvoiceVoided,
    /// `payment_refunded`
    PaymentRefunded,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 9] = [
        Self::CustomerUpserted,
        Self::SubscriptionActivated,
        Self::SubscriptionCanceled,
        Self::UsageAggregated,
        Self::InvoiceFinalized,
        Self::PaymentCaptured,
        Self::CreditMemoIssued,
        Self::InvoiceVoided,
        Self::PaymentRefunded,
    ];

    /// Stable snake_case name, used in headers, audit rows, metrics and schema file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CustomerUpserted => "customer_upserted",
            Self::SubscriptionActivated => "subscription_activated",
            Self::SubscriptionCanceled => "subscription_canceled",
            Self::UsageAggregated => "usage_aggregated",
            Self::InvoiceFinalized => "invoice_finalized",
            Self::PaymentCaptured => "payment_captured",
            Self::CreditMemoIssued => "credit_memo_issued",
            Self::InvoiceVoided => "invoice_voided",
            Self::PaymentRefunded => "payment_refunded",
        }
    }

    /// Avro record name without namespace.
    pub fn record_name(self) -> &'static str {
        match self {
            Self::CustomerUpserted => "CustomerUpserted",
            Self::SubscriptionActivated => "SubscriptionActivated",
            Self::SubscriptionCanceled => "SubscriptionCanceled",
            Self::UsageAggregated => "UsageAggregated",
            Self::InvoiceFinalized => "InvoiceFinalized",
            Self::PaymentCaptured => "PaymentCaptured",
            Self::CreditMemoIssued => "CreditMemoIssued",
            Self::InvoiceVoided => "InvoiceVoided",
            Self::PaymentRefunded => "PaymentRefunded",
        }
    }

    /// Avro full name, e.g. `com.ledgerflow.billing.InvoiceFinalized`.
    pub fn full_name(self) -> String {
        format!("{NAMESPACE}.{}", self.record_name())
    }

    /// Finds the type for an Avro full name.
    pub fn from_full_name(full: &str) -> Option<Self> {
        let name = full.strip_prefix(NAMESPACE)?.strip_prefix('.')?;
        Self::ALL.into_iter().find(|t| t.record_name() == name)
    }

    /// Finds the type for a snake_case name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The subject under TopicRecordNameStrategy: `<topic>-<record full name>`.
    pub fn subject(self, topic: &str) -> String {
        format!("{topic}-{}", self.full_name())
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fields every event carries, validated and typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventMeta {
    /// Idempotency key.
    pub event_id: EventId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// Event type.
    pub event_type: EventType,
    /// Business time, microseconds since the Unix epoch.
    pub occurred_at: i64,
    /// Flow id.
    pub correlation_id: String,
    /// Causing event, if any.
    pub causation_id: Option<String>,
    /// Producing service.
    pub source: String,
}

/// Declares an event struct with the common envelope fields followed by its own fields.
macro_rules! event_struct {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {
            /// Globally unique event id (UUID text).
            pub event_id: String,
            /// Owning tenant.
            pub tenant_id: String,
            /// Business time, microseconds since the Unix epoch.
            pub occurred_at: i64,
            /// Flow id.
            pub correlation_id: String,
            /// Causing event id, if any.
            pub causation_id: Option<String>,
            /// Producing service.
            pub source: String,
            $($(#[$fdoc])* pub $field: $ty,)*
        }
    };
}

event_struct!(
    /// A customer was created or its master data changed.
    CustomerUpserted {
        /// Customer id.
        customer_id: String,
        /// Legal or display name.
        name: String,
        /// Contact email.
        email: Option<String>,
        /// ISO 3166-1 alpha-2 country.
        country: String,
        /// Billing currency.
        currency: String,
        /// Tax registration number.
        tax_id: Option<String>,
    }
);

event_struct!(
    /// A subscription started.
    SubscriptionActivated {
        /// Subscription id.
        subscription_id: String,
        /// Customer id.
        customer_id: String,
        /// Plan id.
        plan_id: String,
        /// Product family (drives the revenue account).
        product_family: String,
        /// Currency.
        currency: String,
        /// Recurring price in minor units.
        unit_amount_minor: i64,
        /// `month` or `year`.
        billing_interval: String,
        /// Start time (micros).
        started_at: i64,
    }
);

event_struct!(
    /// A subscription was canceled.
    SubscriptionCanceled {
        /// Subscription id.
        subscription_id: String,
        /// Customer id.
        customer_id: String,
        /// Why.
        reason: Option<String>,
        /// When service ends (micros).
        effective_at: i64,
    }
);

event_struct!(
    /// Metered usage over a period.
    UsageAggregated {
        /// Subscription id.
        subscription_id: String,
        /// Customer id.
        customer_id: String,
        /// Meter name.
        meter: String,
        /// Quantity times 1,000,000.
        quantity_micros: i64,
        /// Period start (micros).
        period_start: i64,
        /// Period end (micros).
        period_end: i64,
    }
);

/// One invoice line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    /// Line id, unique within the invoice.
    pub line_id: String,
    /// Description.
    pub description: String,
    /// Product family (drives the revenue account).
    pub product_family: String,
    /// Quantity times 1,000,000.
    pub quantity_micros: i64,
    /// Unit price in minor units.
    pub unit_amount_minor: i64,
    /// Net line amount in minor units.
    pub amount_minor: i64,
}

/// One tax line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxLine {
    /// Jurisdiction code.
    pub jurisdiction: String,
    /// Rate in basis points.
    pub rate_bps: i32,
    /// Taxable base in minor units.
    pub taxable_amount_minor: i64,
    /// Tax in minor units.
    pub amount_minor: i64,
}

event_struct!(
    /// An invoice was finalized.
    InvoiceFinalized {
        /// Invoice id.
        invoice_id: String,
        /// Document number.
        invoice_number: String,
        /// Customer id.
        customer_id: String,
        /// Subscription id, if any.
        subscription_id: Option<String>,
        /// Currency.
        currency: String,
        /// Issue time (micros).
        issued_at: i64,
        /// Due time (micros).
        due_at: i64,
        /// Lines.
        lines: Vec<InvoiceLine>,
        /// Tax lines.
        tax_lines: Vec<TaxLine>,
        /// Sum of line amounts.
        subtotal_minor: i64,
        /// Sum of tax amounts.
        tax_minor: i64,
        /// Subtotal plus tax.
        total_minor: i64,
        /// Purchase order reference (v2).
        purchase_order: Option<String>,
    }
);

event_struct!(
    /// A payment was captured against an invoice.
    PaymentCaptured {
        /// Payment id.
        payment_id: String,
        /// Invoice paid.
        invoice_id: String,
        /// Customer id.
        customer_id: String,
        /// Currency.
        currency: String,
        /// Gross amount in minor units.
        amount_minor: i64,
        /// Processor fee in minor units.
        fee_minor: i64,
        /// Payment method.
        method: String,
        /// Processor reference.
        processor_reference: String,
        /// Capture time (micros).
        captured_at: i64,
        /// Settlement currency when it differs (v2).
        settlement_currency: Option<String>,
    }
);

event_struct!(
    /// A credit memo was issued against an invoice.
    CreditMemoIssued {
        /// Credit memo id.
        credit_memo_id: String,
        /// Document number.
        credit_memo_number: String,
        /// Invoice credited.
        invoice_id: String,
        /// Customer id.
        customer_id: String,
        /// Currency.
        currency: String,
        /// Product family whose revenue is reversed.
        product_family: String,
        /// Net amount credited.
        amount_minor: i64,
        /// Tax credited.
        tax_minor: i64,
        /// Net plus tax.
        total_minor: i64,
        /// Why.
        reason: String,
        /// Issue time (micros).
        issued_at: i64,
    }
);

event_struct!(
    /// An invoice was voided: reversed as a whole by a compensating document.
    InvoiceVoided {
        /// Invoice voided.
        invoice_id: String,
        /// Why.
        reason: String,
        /// When the void takes effect (micros); the reversal's accounting date.
        voided_at: i64,
    }
);

event_struct!(
    /// Money of a captured payment was returned to the customer.
    PaymentRefunded {
        /// Refund id.
        refund_id: String,
        /// Payment refunded.
        payment_id: String,
        /// Invoice the payment paid, when known.
        invoice_id: Option<String>,
        /// Currency (the payment's).
        currency: String,
        /// Amount returned in minor units.
        amount_minor: i64,
        /// Processor fee given back with the refund, in minor units.
        fee_refund_minor: Option<i64>,
        /// Refund time (micros).
        refunded_at: i64,
    }
);

/// A decoded billing event of any type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// `customer_upserted`
    CustomerUpserted(CustomerUpserted),
    /// `subscription_activated`
    SubscriptionActivated(SubscriptionActivated),
    /// `subscription_canceled`
    SubscriptionCanceled(SubscriptionCanceled),
    /// `usage_aggregated`
    UsageAggregated(UsageAggregated),
    /// `invoice_finalized`
    InvoiceFinalized(InvoiceFinalized),
    /// `payment_captured`
    PaymentCaptured(PaymentCaptured),
    /// `credit_memo_issued`
    CreditMemoIssued(CreditMemoIssued),
    /// `invoice_voided`
    InvoiceVoided(InvoiceVoided),
    /// `payment_refunded`
    PaymentRefunded(PaymentRefunded),
}

/// Applies `$body` to the inner struct of every variant.
macro_rules! each_variant {
    ($event:expr, $inner:ident => $body:expr) => {
        match $event {
            Event::CustomerUpserted($inner) => $body,
            Event::SubscriptionActivated($inner) => $body,
            Event::SubscriptionCanceled($inner) => $body,
            Event::UsageAggregated($inner) => $body,
            Event::InvoiceFinalized($inner) => $body,
            Event::PaymentCaptured($inner) => $body,
            Event::CreditMemoIssued($inner) => $body,
            Event::InvoiceVoided($inner) => $body,
            Event::PaymentRefunded($inner) => $body,
        }
    };
}

fn invalid(detail: impl Into<String>) -> Failure {
    Failure::permanent(ReasonCode::Validation, detail)
}

fn check_currency(field: &str, code: &str) -> Result<Currency, Failure> {
    Currency::parse(code).map_err(|e| invalid(format!("{field}: {e}")))
}

fn check_non_negative(field: &str, value: i64) -> Result<(), Failure> {
    if value < 0 {
        return Err(invalid(format!(
            "{field} must not be negative, got {value}"
        )));
    }
    Ok(())
}

fn check_non_empty(field: &str, value: &str) -> Result<(), Failure> {
    if value.trim().is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    Ok(())
}

/// Rounds `quantity_micros * unit_minor / 1e6` half away from zero, exactly.
fn line_amount(quantity_micros: i64, unit_minor: i64) -> i128 {
    let product = i128::from(quantity_micros) * i128::from(unit_minor);
    let (q, r) = (product / 1_000_000, product % 1_000_000);
    if r.abs() * 2 >= 1_000_000 {
        q + product.signum()
    } else {
        q
    }
}

impl Event {
    /// The event type.
    pub fn event_type(&self) -> EventType {
        match self {
            Self::CustomerUpserted(_) => EventType::CustomerUpserted,
            Self::SubscriptionActivated(_) => EventType::SubscriptionActivated,
            Self::SubscriptionCanceled(_) => EventType::SubscriptionCanceled,
            Self::UsageAggregated(_) => EventType::UsageAggregated,
            Self::InvoiceFinalized(_) => EventType::InvoiceFinalized,
            Self::PaymentCaptured(_) => EventType::PaymentCaptured,
            Self::CreditMemoIssued(_) => EventType::CreditMemoIssued,
            Self::InvoiceVoided(_) => EventType::InvoiceVoided,
            Self::PaymentRefunded(_) => EventType::PaymentRefunded,
        }
    }

    /// Raw event id text.
    pub fn event_id_raw(&self) -> &str {
        each_variant!(self, e => &e.event_id)
    }

    /// Raw tenant id text.
    pub fn tenant_id_raw(&self) -> &str {
        each_variant!(self, e => &e.tenant_id)
    }

    /// Validates the envelope fields and returns them typed.
    pub fn meta(&self) -> Result<EventMeta, Failure> {
        let (event_id, tenant_id, occurred_at, correlation_id, causation_id, source) = each_variant!(
            self,
            e => (&e.event_id, &e.tenant_id, e.occurred_at, &e.correlation_id, &e.causation_id, &e.source)
        );
        Ok(EventMeta {
            event_id: EventId::parse(event_id).map_err(invalid)?,
            tenant_id: TenantId::parse(tenant_id).map_err(invalid)?,
            event_type: self.event_type(),
            occurred_at,
            correlation_id: correlation_id.clone(),
            causation_id: causation_id.clone(),
            source: source.clone(),
        })
    }

    /// Checks the envelope and the business rules of the event. A failure is permanent with
    /// reason `validation`.
    pub fn validate(&self) -> Result<EventMeta, Failure> {
        let meta = self.meta()?;
        check_non_empty("source", &meta.source)?;
        match self {
            Self::CustomerUpserted(e) => {
                check_non_empty("customer_id", &e.customer_id)?;
                check_currency("currency", &e.currency)?;
                if e.country.len() != 2 || !e.country.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(invalid(format!(
                        "country {:?} is not ISO 3166-1 alpha-2",
                        e.country
                    )));
                }
            }
            Self::SubscriptionActivated(e) => {
                check_non_empty("subscription_id", &e.subscription_id)?;
                check_currency("currency", &e.currency)?;
                check_non_negative("unit_amount_minor", e.unit_amount_minor)?;
                if e.billing_interval != "month" && e.billing_interval != "year" {
                    return Err(invalid(format!(
                        "billing_interval must be month or year, got {:?}",
                        e.billing_interval
                    )));
                }
            }
            Self::SubscriptionCanceled(e) => {
                check_non_empty("subscription_id", &e.subscription_id)?
            }
            Self::UsageAggregated(e) => {
                check_non_empty("meter", &e.meter)?;
                check_non_negative("quantity_micros", e.quantity_micros)?;
                if e.period_end < e.period_start {
                    return Err(invalid("period_end is before period_start"));
                }
            }
            Self::InvoiceFinalized(e) => validate_invoice(e)?,
            Self::PaymentCaptured(e) => {
                check_non_empty("payment_id", &e.payment_id)?;
                check_non_empty("invoice_id", &e.invoice_id)?;
                check_currency("currency", &e.currency)?;
                if let Some(settlement) = &e.settlement_currency {
                    check_currency("settlement_currency", settlement)?;
                }
                if e.amount_minor <= 0 {
                    return Err(invalid(format!(
                        "amount_minor must be positive, got {}",
                        e.amount_minor
                    )));
                }
                check_non_negative("fee_minor", e.fee_minor)?;
                if e.fee_minor > e.amount_minor {
                    return Err(invalid("fee_minor exceeds amount_minor"));
                }
            }
            Self::CreditMemoIssued(e) => {
                check_non_empty("credit_memo_id", &e.credit_memo_id)?;
                check_non_empty("invoice_id", &e.invoice_id)?;
                check_currency("currency", &e.currency)?;
                check_non_negative("amount_minor", e.amount_minor)?;
                check_non_negative("tax_minor", e.tax_minor)?;
                if i128::from(e.amount_minor) + i128::from(e.tax_minor) != i128::from(e.total_minor)
                {
                    return Err(invalid("total_minor is not amount_minor + tax_minor"));
                }
                if e.total_minor <= 0 {
                    return Err(invalid("a credit memo must credit a positive total"));
                }
            }
            Self::InvoiceVoided(e) => {
                check_non_empty("invoice_id", &e.invoice_id)?;
                check_non_empty("reason", &e.reason)?;
            }
            Self::PaymentRefunded(e) => {
                check_non_empty("refund_id", &e.refund_id)?;
                check_non_empty("payment_id", &e.payment_id)?;
                if let Some(invoice) = &e.invoice_id {
                    check_non_empty("invoice_id", invoice)?;
                }
                check_currency("currency", &e.currency)?;
                if e.amount_minor <= 0 {
                    return Err(invalid(format!(
                        "amount_minor must be positive, got {}",
                        e.amount_minor
                    )));
                }
                let fee = e.fee_refund_minor.unwrap_or(0);
                check_non_negative("fee_refund_minor", fee)?;
                if fee > e.amount_minor {
                    return Err(invalid("fee_refund_minor exceeds amount_minor"));
                }
            }
        }
        Ok(meta)
    }
}

fn validate_invoice(e: &InvoiceFinalized) -> Result<(), Failure> {
    check_non_empty("invoice_id", &e.invoice_id)?;
    check_non_empty("invoice_number", &e.invoice_number)?;
    check_currency("currency", &e.currency)?;
    if e.lines.is_empty() {
        return Err(invalid("an invoice needs at least one line"));
    }
    let mut subtotal: i128 = 0;
    for line in &e.lines {
        check_non_empty("lines.product_family", &line.product_family)?;
        check_non_negative("lines.quantity_micros", line.quantity_micros)?;
        let expected = line_amount(line.quantity_micros, line.unit_amount_minor);
        if expected != i128::from(line.amount_minor) {
            return Err(invalid(format!(
                "line {}: amount_minor {} is not quantity x unit price ({expected})",
                line.line_id, line.amount_minor
            )));
        }
        subtotal += i128::from(line.amount_minor);
    }
    let mut tax: i128 = 0;
    for t in &e.tax_lines {
        check_non_negative("tax_lines.amount_minor", t.amount_minor)?;
        tax += i128::from(t.amount_minor);
    }
    if subtotal != i128::from(e.subtotal_minor) {
        return Err(invalid(format!(
            "subtotal_minor {} is not the sum of the lines ({subtotal})",
            e.subtotal_minor
        )));
    }
    if tax != i128::from(e.tax_minor) {
        return Err(invalid(format!(
            "tax_minor {} is not the sum of the tax lines ({tax})",
            e.tax_minor
        )));
    }
    if subtotal + tax != i128::from(e.total_minor) {
        return Err(invalid("total_minor is not subtotal_minor + tax_minor"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoice() -> InvoiceFinalized {
        InvoiceFinalized {
            event_id: "6f1c2d7e-8a4b-4c3d-9e2f-0a1b2c3d4e5f".into(),
            tenant_id: "acme".into(),
            occurred_at: 1_700_000_000_000_000,
            correlation_id: "c-1".into(),
            causation_id: None,
            source: "billing-api".into(),
            invoice_id: "inv-1".into(),
            invoice_number: "INV-0001".into(),
            customer_id: "cus-1".into(),
            subscription_id: None,
            currency: "USD".into(),
            issued_at: 1_700_000_000_000_000,
            due_at: 1_702_592_000_000_000,
            lines: vec![InvoiceLine {
                line_id: "l1".into(),
                description: "Pro plan".into(),
                product_family: "platform".into(),
                quantity_micros: 2_500_000,
                unit_amount_minor: 1999,
                amount_minor: 4998,
            }],
            tax_lines: vec![TaxLine {
                jurisdiction: "US-CA".into(),
                rate_bps: 725,
                taxable_amount_minor: 4998,
                amount_minor: 362,
            }],
            subtotal_minor: 4998,
            tax_minor: 362,
            total_minor: 5360,
            purchase_order: None,
        }
    }

    #[test]
    fn a_consistent_invoice_validates() {
        let meta = Event::InvoiceFinalized(invoice()).validate().unwrap();
        assert_eq!(meta.tenant_id.as_str(), "acme");
        assert_eq!(meta.event_type, EventType::InvoiceFinalized);
    }

    #[test]
    fn totals_that_do_not_add_up_are_validation_failures() {
        let mut bad = invoice();
        bad.total_minor += 1;
        let err = Event::InvoiceFinalized(bad).validate().unwrap_err();
        assert_eq!(err.reason(), Some(ReasonCode::Validation));

        let mut bad_line = invoice();
        bad_line.lines[0].amount_minor = 5000;
        assert!(Event::InvoiceFinalized(bad_line).validate().is_err());

        let mut bad_currency = invoice();
        bad_currency.currency = "usd".into();
        assert!(Event::InvoiceFinalized(bad_currency).validate().is_err());

        let mut bad_id = invoice();
        bad_id.event_id = "nope".into();
        assert!(Event::InvoiceFinalized(bad_id).validate().is_err());
    }

    fn refund() -> PaymentRefunded {
        PaymentRefunded {
            event_id: "6f1c2d7e-8a4b-4c3d-9e2f-0a1b2c3d4e60".into(),
            tenant_id: "acme".into(),
            occurred_at: 1_700_000_000_000_000,
            correlation_id: "c-1".into(),
            causation_id: None,
            source: "billing-api".into(),
            refund_id: "rf-1".into(),
            payment_id: "pay-1".into(),
            invoice_id: Some("inv-1".into()),
            currency: "USD".into(),
            amount_minor: 500,
            fee_refund_minor: Some(15),
            refunded_at: 1_700_000_000_000_000,
        }
    }

    #[test]
    fn refunds_and_voids_validate_their_amounts_and_ids() {
        assert_eq!(
            Event::PaymentRefunded(refund())
                .validate()
                .unwrap()
                .event_type,
            EventType::PaymentRefunded
        );
        for bad in [
            PaymentRefunded {
                amount_minor: 0,
                ..refund()
            },
            PaymentRefunded {
                fee_refund_minor: Some(501),
                ..refund()
            },
            PaymentRefunded {
                fee_refund_minor: Some(-1),
                ..refund()
            },
            PaymentRefunded {
                payment_id: " ".into(),
                ..refund()
            },
            PaymentRefunded {
                currency: "XXQ".into(),
                ..refund()
            },
        ] {
            let err = Event::PaymentRefunded(bad).validate().unwrap_err();
            assert_eq!(err.reason(), Some(ReasonCode::Validation));
        }
        let void = InvoiceVoided {
            event_id: "6f1c2d7e-8a4b-4c3d-9e2f-0a1b2c3d4e61".into(),
            tenant_id: "acme".into(),
            occurred_at: 1,
            correlation_id: "c-1".into(),
            causation_id: None,
            source: "billing-api".into(),
            invoice_id: "inv-1".into(),
            reason: "issued_in_error".into(),
            voided_at: 1,
        };
        assert!(Event::InvoiceVoided(void.clone()).validate().is_ok());
        let no_invoice = InvoiceVoided {
            invoice_id: String::new(),
            ..void
        };
        assert!(Event::InvoiceVoided(no_invoice).validate().is_err());
    }

    #[test]
    fn line_amounts_round_half_away_from_zero() {
        assert_eq!(line_amount(2_500_000, 1999), 4998); // 4997.5 -> 4998
        assert_eq!(line_amount(1_000_000, 1000), 1000);
        assert_eq!(line_amount(333_333, 100), 33); // 33.3333
        assert_eq!(line_amount(-2_500_000, 1999), -4998);
    }

    #[test]
    fn event_types_map_to_full_names_and_subjects() {
        for t in EventType::ALL {
            assert_eq!(EventType::from_full_name(&t.full_name()), Some(t));
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(
            EventType::InvoiceFinalized.subject("billing.events"),
            "billing.events-com.ledgerflow.billing.InvoiceFinalized"
        );
        assert_eq!(EventType::from_full_name("other.InvoiceFinalized"), None);
    }
}
