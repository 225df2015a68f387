//! What the consumer writes: typed warehouse rows, as the pure mapping ([`crate::mapping`])
//! produces them and the set-based writer (`write`) inserts them, with their column order.

use ledgerflow_core::{Currency, EventType};

use crate::Value;

/// What one event becomes: the tenant dimension row and the event's own rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarehouseEffect {
    /// `dim_tenant` as configured when the event was mapped.
    pub tenant: TenantRow,
    /// The event's fact or dimension rows.
    pub fact: Fact,
}

/// A `dim_tenant` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    /// Tenant id.
    pub tenant_id: String,
    /// Legal entity that owns the receivables.
    pub legal_entity: String,
    /// Functional (book) currency.
    pub functional_currency: Currency,
}

/// The rows of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// A customer version.
    Customer(CustomerVersion),
    /// A subscription activation or cancellation.
    Subscription(SubscriptionFact),
    /// Metered usage.
    Usage(UsageFact),
    /// An invoice and its lines.
    Invoice(InvoiceFact),
    /// A captured payment.
    Payment(PaymentFact),
    /// A credit memo.
    CreditMemo(CreditMemoFact),
}

/// A `dim_customer` version. `valid_to` and `is_current` are derived in the database from the
/// customer's other versions, so they are not part of the mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerVersion {
    /// Tenant id.
    pub tenant_id: String,
    /// Customer id.
    pub customer_id: String,
    /// Business time from which this version holds (micros).
    pub valid_from: i64,
    /// The event that carried it.
    pub event_id: String,
    /// Name.
    pub name: String,
    /// Email.
    pub email: Option<String>,
    /// ISO 3166-1 alpha-2 country.
    pub country: String,
    /// Billing currency.
    pub currency: Currency,
    /// Tax registration number.
    pub tax_id: Option<String>,
}

/// A `fact_subscription_event` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionFact {
    /// Tenant id.
    pub tenant_id: String,
    /// The event.
    pub event_id: String,
    /// `subscription_activated` or `subscription_canceled`.
    pub event_type: EventType,
    /// Subscription id.
    pub subscription_id: String,
    /// Customer id.
    pub customer_id: String,
    /// Start (activation) or end of service (cancellation), micros.
    pub effective_at: i64,
    /// Plan (activation only).
    pub plan_id: Option<String>,
    /// Product family (activation only).
    pub product_family: Option<String>,
    /// `month` or `year` (activation only).
    pub billing_interval: Option<String>,
    /// Currency of the price (activation only).
    pub currency: Option<Currency>,
    /// Recurring price in minor units (activation only).
    pub unit_amount_minor: Option<i64>,
    /// Why it was canceled (cancellation only, optional).
    pub cancel_reason: Option<String>,
    /// Business time of the event.
    pub occurred_at: i64,
}

/// A `fact_usage` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageFact {
    /// Tenant id.
    pub tenant_id: String,
    /// The event.
    pub event_id: String,
    /// Subscription id.
    pub subscription_id: String,
    /// Customer id.
    pub customer_id: String,
    /// Meter name.
    pub meter: String,
    /// Quantity times 1,000,000, exact.
    pub quantity_micros: i64,
    /// Period start (micros).
    pub period_start: i64,
    /// Period end (micros).
    pub period_end: i64,
    /// Business time of the event.
    pub occurred_at: i64,
}

/// A `fact_invoice` row and its `fact_invoice_line` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceFact {
    /// Tenant id.
    pub tenant_id: String,
    /// Invoice id.
    pub invoice_id: String,
    /// Document number.
    pub invoice_number: String,
    /// Customer id.
    pub customer_id: String,
    /// Subscription id, if any.
    pub subscription_id: Option<String>,
    /// Currency of every amount.
    pub currency: Currency,
    /// Issue time (micros).
    pub issued_at: i64,
    /// Due time (micros).
    pub due_at: i64,
    /// Sum of the charge lines, minor units.
    pub subtotal_minor: i64,
    /// Sum of the tax lines, minor units.
    pub tax_minor: i64,
    /// Subtotal plus tax, minor units.
    pub total_minor: i64,
    /// Number of charge lines.
    pub line_count: i64,
    /// Purchase order reference.
    pub purchase_order: Option<String>,
    /// The event.
    pub event_id: String,
    /// Business time of the event.
    pub occurred_at: i64,
    /// Charge lines then tax lines.
    pub lines: Vec<InvoiceLineFact>,
}

/// Whether an invoice line is a charge or a tax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// A charge (plan, usage, discount).
    Charge,
    /// A tax line.
    Tax,
}

impl LineKind {
    /// Stable name stored in `line_kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charge => "charge",
            Self::Tax => "tax",
        }
    }
}

/// A `fact_invoice_line` row; the invoice's currency, customer and issue time are repeated
/// so the line fact is usable without a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLineFact {
    /// 1-based position: charge lines first, then tax lines.
    pub line_no: i64,
    /// Charge or tax.
    pub kind: LineKind,
    /// Line id (charge lines).
    pub line_id: Option<String>,
    /// Description (charge lines).
    pub description: Option<String>,
    /// Product family (charge lines).
    pub product_family: Option<String>,
    /// Jurisdiction (tax lines).
    pub jurisdiction: Option<String>,
    /// Rate in basis points (tax lines).
    pub rate_bps: Option<i64>,
    /// Quantity times 1,000,000 (charge lines).
    pub quantity_micros: Option<i64>,
    /// Unit price in minor units (charge lines).
    pub unit_amount_minor: Option<i64>,
    /// Taxable base in minor units (tax lines).
    pub taxable_amount_minor: Option<i64>,
    /// Line amount in minor units.
    pub amount_minor: i64,
}

/// A `fact_payment` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFact {
    /// Tenant id.
    pub tenant_id: String,
    /// Payment id.
    pub payment_id: String,
    /// Invoice paid (no foreign key: the invoice may arrive later).
    pub invoice_id: String,
    /// Customer id.
    pub customer_id: String,
    /// Currency.
    pub currency: Currency,
    /// Gross amount, minor units.
    pub amount_minor: i64,
    /// Processor fee, minor units.
    pub fee_minor: i64,
    /// Amount minus fee, minor units.
    pub net_minor: i64,
    /// Payment method.
    pub method: String,
    /// Processor reference.
    pub processor_reference: String,
    /// Settlement currency when it differs.
    pub settlement_currency: Option<Currency>,
    /// Capture time (micros).
    pub captured_at: i64,
    /// The event.
    pub event_id: String,
    /// Business time of the event.
    pub occurred_at: i64,
}

/// A `fact_credit_memo` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditMemoFact {
    /// Tenant id.
    pub tenant_id: String,
    /// Credit memo id.
    pub credit_memo_id: String,
    /// Document number.
    pub credit_memo_number: String,
    /// Invoice credited.
    pub invoice_id: String,
    /// Customer id.
    pub customer_id: String,
    /// Currency.
    pub currency: Currency,
    /// Product family whose revenue is reversed.
    pub product_family: String,
    /// Net amount credited, minor units.
    pub amount_minor: i64,
    /// Tax credited, minor units.
    pub tax_minor: i64,
    /// Net plus tax, minor units.
    pub total_minor: i64,
    /// Why.
    pub reason: String,
    /// Issue time (micros).
    pub issued_at: i64,
    /// The event.
    pub event_id: String,
    /// Business time of the event.
    pub occurred_at: i64,
}

// Rows in catalogue column order (see `crate::table`); the unit tests pin the correspondence.

impl TenantRow {
    pub(crate) fn row(&self) -> Vec<Value> {
        vec![
            self.tenant_id.as_str().into(),
            self.legal_entity.as_str().into(),
            self.functional_currency.code().into(),
        ]
    }
}

impl CustomerVersion {
    /// Inserted as not current with an open end; the writer then recomputes both for every
    /// version of the customer.
    pub(crate) fn row(&self) -> Vec<Value> {
        vec![
            self.tenant_id.as_str().into(),
            self.customer_id.as_str().into(),
            self.valid_from.into(),
            self.event_id.as_str().into(),
            self.name.as_str().into(),
            Value::opt_text(self.email.as_deref()),
            self.country.as_str().into(),
            self.currency.code().into(),
            Value::opt_text(self.tax_id.as_deref()),
            Value::Null,
            Value::Int(0),
        ]
    }
}

impl SubscriptionFact {
    pub(crate) fn row(&self) -> Vec<Value> {
        vec![
            self.tenant_id.as_str().into(),
            self.event_id.as_str().into(),
            self.event_type.as_str().into(),
            self.subscription_id.as_str().into(),
            self.customer_id.as_str().into(),
            self.effective_at.into(),
            Value::opt_text(self.plan_id.as_deref()),
            Value::opt_text(self.product_family.as_deref()),
            Value::opt_text(self.billing_interval.as_deref()),
            Value::opt_text(self.currency.as_ref().map(Currency::code)),
            Value::opt_int(self.unit_amount_minor),
            Value::opt_text(self.cancel_reason.as_deref()),
            self.occurred_at.into(),
        ]
    }
}

impl UsageFact {
    pub(crate) fn row(&self) -> Vec<Value> {
        vec![
            self.tenant_id.as_str().into(),
            self.event_id.as_str().into(),
            self.subscription_id.as_str().into(),
            self.customer_id.as_str().into(),
            self.meter.as_str().into(),
            self.quantity_micros.into(),
            self.period_start.into(),
            self.period_end.into(),
            self.occurred_at.into(),
        ]
    }
}

impl InvoiceFact {
    pub(crate) fn row(&self) -> Vec<Value> {
        vec![
            self.tenant_id.as_str().into(),
            self.invoice_id.as_str().into(),
            self.invoice_number.as_str().into(),
            self.customer_id.as_str().into(),
            Value::opt_text(self.subscription_id.as_deref()),
            self.currency.code().into(),
            self.issued_at.into(),
            self.due_at.into(),
            self.subtotal_minor.into(),
            self.tax_minor.into(),
            self.total_minor.into(),
            self.line_count.into(),
            Value::opt_text(self.purchase_order.as_deref()),
            self.event_id.as_str().into(),
            self.occurred_at.into(),
        ]
    }

    pub(crate) fn line_rows(&self) -> impl Iterator<Item = Vec<Value>> + '_ {
        self.lines.iter().map(|l| {
            vec![
                self.tenant_id.as_str().into(),
                self.invoice_id.as_str().into(),
                l.line_no.into(),
                l.kind.as_str().into(),
                Value::opt_text(l.line_id.as_deref()),
                Value::opt_text(l.description.as_deref()),
                Value::opt_text(l.product_family.as_deref()),
                Value::opt_text(l.jurisdiction.as_deref()),
                Value::opt_int(l.rate_bps),
                Value::opt_int(l.quantity_micros),
                Value::opt_int(l.unit_amount_minor),
                Value::opt_int(l.taxable_amount_minor),
                l.amount_minor.into(),
                self.currency.code().into(),
                self.customer_id.as_str().into(),
                self.issued_at.into(),
                self.event_id.as_str().into(),
            ]
        })
    }
}

impl PaymentFact {
    pub(crate) fn row(&self) -> Vec<Value> {
        vec![
            self.tenant_id.as_str().into(),
            self.payment_id.as_str().into(),
            self.invoice_id.as_str().into(),
            self.customer_id.as_str().into(),
            self.currency.code().into(),
            self.amount_minor.into(),
            self.fee_minor.into(),
            self.net_minor.into(),
            self.method.as_str().into(),
            self.processor_reference.as_str().into(),
            Value::opt_text(self.settlement_currency.as_ref().map(Currency::code)),
            self.captured_at.into(),
            self.event_id.as_str().into(),
            self.occurred_at.into(),
        ]
    }
}

impl CreditMemoFact {
    pub(crate) fn row(&self) -> Vec<Value> {
        vec![
            self.tenant_id.as_str().into(),
            self.credit_memo_id.as_str().into(),
            self.credit_memo_number.as_str().into(),
            self.invoice_id.as_str().into(),
            self.customer_id.as_str().into(),
            self.currency.code().into(),
            self.product_family.as_str().into(),
            self.amount_minor.into(),
            self.tax_minor.into(),
            self.total_minor.into(),
            self.reason.as_str().into(),
            self.issued_at.into(),
            self.event_id.as_str().into(),
            self.occurred_at.into(),
        ]
    }
}
