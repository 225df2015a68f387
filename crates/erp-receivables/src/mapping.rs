//! The pure half of the consumer: one event in, typed effect rows out, no I/O.
//!
//! | event | effect |
//! | --- | --- |
//! | `invoice_finalized` | AR invoice document; journal Dr receivable (total), Cr revenue per account (lines netted per `revenue_for(product_family)`), Cr tax payable (tax) |
//! | `payment_captured` | payment record; receipt journal Dr cash clearing (amount - fee), Dr payment fees (fee), Cr unapplied cash (amount). Applying it to its invoice depends on stored state and happens in [`crate::write`] |
//! | `credit_memo_issued` | credit memo document; journal Dr revenue (family), Dr tax payable (tax), Cr receivable (total) |
//! | `customer_upserted` | customer master row (newest `occurred_at` wins) |
//! | `invoice_voided` | void document; reversal journal (kind `invoice_void`): the voided invoice's journal lines with debit and credit swapped. It needs the stored invoice, so it is built when the batch is planned ([`crate::settle`]) |
//! | `payment_refunded` | refund document; journal (kind `refund`) Dr unapplied cash (amount), Cr cash clearing (amount - fee given back), Cr payment fees (fee given back). Whether the payment has that much unapplied is decided when the batch is planned |
//!
//! Corrections are new compensating documents, never updates of the original's rows.
//!
//! Every journal is checked to balance before it is returned; an unbalanced one, like any other
//! data problem, is a permanent `validation` failure that dead-letters the event. The ERP route
//! of the tenant (its `erp` table, GL accounts, legal entity, currency) is copied into the
//! effect because the writer, which renders the ERP documents, has no tenant configuration.

use std::future::Future;

use ledgerflow_core::{
    CreditMemoIssued, Currency, Envelope, Event, EventId, EventType, Failure, InvoiceFinalized,
    InvoiceVoided, PaymentCaptured, PaymentRefunded, ReasonCode,
};
use ledgerflow_store::{Backend, ConsumerLogic, Migrations, StoreError};
use ledgerflow_tenants::{AccountMapping, ErpKind, ErpTarget, TenantConfig};
use sqlx::AnyConnection;

use crate::journal::{JournalEntry, JournalKind, JournalLine, journal_id, net_credits};

/// The consumer name: part of the group id, the inbox and audit keys.
pub const CONSUMER_NAME: &str = "erp-receivables";

/// The receivables consumer. Stateless; construct it with `ErpReceivables` and hand it to the
/// runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErpReceivables;

/// Where a tenant's journals go and what their ERP documents are rendered from, copied from
/// its configuration at mapping time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErpRoute {
    /// The tenant's `erp` table: kind, account, base URL, mode, auth references, mapping,
    /// account limits and the config fingerprint (secrets are read at send time).
    pub target: ErpTarget,
    /// The tenant's legal entity (labels on documents).
    pub legal_entity: String,
    /// The tenant's book currency (Fusion's accounted amounts are only given in it).
    pub functional_currency: Currency,
    /// The tenant's GL accounts (subledger documents tell the receivable line from the rest).
    pub accounts: AccountMapping,
    /// Deliveries per second for the tenant; none = unlimited.
    pub rate_limit_per_sec: Option<u32>,
}

impl ErpRoute {
    /// The route of a tenant, or none when it keeps the subledger only.
    pub fn of(tenant: &TenantConfig) -> Option<Self> {
        tenant.erp.as_ref().map(|erp| Self {
            target: erp.clone(),
            legal_entity: tenant.legal_entity.clone(),
            functional_currency: tenant.functional_currency,
            accounts: tenant.accounts.clone(),
            rate_limit_per_sec: tenant.rate_limit_per_sec,
        })
    }

    /// The ERP kind.
    pub fn kind(&self) -> ErpKind {
        self.target.kind
    }

    /// What a posting stores of this route.
    pub fn posting_route(&self) -> crate::posting::Route {
        crate::posting::Route {
            target: self.target.clone(),
            limits: self.target.account_limits(),
            tenant_rate_per_sec: self.rate_limit_per_sec,
        }
    }
}

/// What one event becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErpEffect {
    /// Owning tenant.
    pub tenant_id: String,
    /// The event.
    pub event_id: EventId,
    /// Business time of the event (micros).
    pub occurred_at: i64,
    /// ERP route of the tenant, if it has one.
    pub route: Option<ErpRoute>,
    /// The rows.
    pub posting: Posting,
}

/// The typed rows of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posting {
    /// An AR invoice and its journal.
    Invoice(InvoicePosting),
    /// A captured payment and its receipt journal.
    Payment(PaymentPosting),
    /// A credit memo and its reversal journal.
    CreditMemo(CreditMemoPosting),
    /// Customer master data.
    Customer(CustomerRecord),
    /// A voided invoice; its reversal journal is built from the stored invoice when planned.
    Void(VoidPosting),
    /// A refund of (part of) a payment's unapplied cash, and its journal.
    Refund(RefundPosting),
}

impl Posting {
    /// The journal, for postings that have one.
    pub fn journal(&self) -> Option<&JournalEntry> {
        match self {
            Self::Invoice(p) => Some(&p.journal),
            Self::Payment(p) => Some(&p.journal),
            Self::CreditMemo(p) => Some(&p.journal),
            Self::Refund(p) => Some(&p.journal),
            Self::Customer(_) | Self::Void(_) => None,
        }
    }
}

/// An AR invoice document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicePosting {
    /// Invoice id.
    pub invoice_id: String,
    /// Document number.
    pub number: String,
    /// Customer id.
    pub customer_id: String,
    /// Currency.
    pub currency: Currency,
    /// Total (net + tax) in minor units.
    pub total_minor: i64,
    /// Issue time (micros).
    pub issued_at: i64,
    /// The receivable account debited; payments applied later credit the same account.
    pub receivable_account: String,
    /// The invoice journal.
    pub journal: JournalEntry,
}

/// A captured payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentPosting {
    /// Payment id.
    pub payment_id: String,
    /// Invoice it pays.
    pub invoice_id: String,
    /// Customer id.
    pub customer_id: String,
    /// Currency.
    pub currency: Currency,
    /// Gross amount in minor units.
    pub amount_minor: i64,
    /// Processor fee in minor units.
    pub fee_minor: i64,
    /// Capture time (micros).
    pub captured_at: i64,
    /// The unapplied cash account credited; an application later debits the same account.
    pub unapplied_account: String,
    /// The receipt journal.
    pub journal: JournalEntry,
}

/// A credit memo document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditMemoPosting {
    /// Credit memo id.
    pub credit_memo_id: String,
    /// Document number.
    pub number: String,
    /// Invoice credited.
    pub invoice_id: String,
    /// Customer id.
    pub customer_id: String,
    /// Currency.
    pub currency: Currency,
    /// Total credited (net + tax) in minor units.
    pub total_minor: i64,
    /// Issue time (micros).
    pub issued_at: i64,
    /// The receivable account credited.
    pub receivable_account: String,
    /// The reversal journal.
    pub journal: JournalEntry,
}

/// A voided invoice. The reversal journal needs the invoice's journal lines, which are stored
/// state, so it is built in the planning step; see [`crate::settle`] for when a void is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoidPosting {
    /// Invoice voided.
    pub invoice_id: String,
    /// Why.
    pub reason: String,
    /// Accounting date of the reversal (micros).
    pub voided_at: i64,
}

/// A refund of a captured payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundPosting {
    /// Refund id.
    pub refund_id: String,
    /// Payment refunded.
    pub payment_id: String,
    /// Invoice named by the event, if any (the payment's invoice is what counts).
    pub invoice_id: Option<String>,
    /// Currency (must be the payment's).
    pub currency: Currency,
    /// Amount returned to the customer in minor units.
    pub amount_minor: i64,
    /// Processor fee given back in minor units.
    pub fee_refund_minor: i64,
    /// Refund time (micros).
    pub refunded_at: i64,
    /// The unapplied cash account debited.
    pub unapplied_account: String,
    /// The refund journal.
    pub journal: JournalEntry,
}

/// Customer master data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRecord {
    /// Customer id.
    pub customer_id: String,
    /// Name.
    pub name: String,
    /// Email.
    pub email: Option<String>,
    /// Country.
    pub country: String,
    /// Billing currency.
    pub currency: String,
    /// Tax id.
    pub tax_id: Option<String>,
    /// `occurred_at` of the update; the newest wins.
    pub updated_at: i64,
}

fn invalid(detail: impl Into<String>) -> Failure {
    Failure::permanent(ReasonCode::Validation, detail)
}

fn currency(code: &str) -> Result<Currency, Failure> {
    Currency::parse(code).map_err(|e| invalid(format!("currency: {e}")))
}

fn to_i64(what: &str, value: i128) -> Result<i64, Failure> {
    i64::try_from(value).map_err(|_| invalid(format!("{what} {value} does not fit 64 bits")))
}

/// A journal skeleton; lines are added by the caller and the result is checked.
fn entry(
    env: &Envelope,
    kind: JournalKind,
    currency: Currency,
    posted_at: i64,
    document: (&'static str, &str),
    memo: String,
    lines: Vec<JournalLine>,
) -> Result<JournalEntry, Failure> {
    let journal = JournalEntry {
        id: journal_id(&env.meta.event_id, kind),
        tenant_id: env.meta.tenant_id.as_str().to_owned(),
        event_id: env.meta.event_id,
        kind,
        currency,
        posted_at,
        document_type: document.0,
        document_id: document.1.to_owned(),
        memo,
        lines: lines
            .into_iter()
            .filter(|l| l.debit_minor != 0 || l.credit_minor != 0)
            .collect(),
    };
    journal.check_balanced()?;
    Ok(journal)
}

/// Maps one event to its effect. See the module docs for the journals.
pub fn map_event(envelope: &Envelope, tenant: &TenantConfig) -> Result<ErpEffect, Failure> {
    // Business rules (totals add up, fee <= amount, known currency) are re-checked here so the
    // arithmetic below can rely on them, whatever validated the event before.
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
    let posting = match &envelope.event {
        Event::InvoiceFinalized(e) => Posting::Invoice(map_invoice(envelope, tenant, e)?),
        Event::PaymentCaptured(e) => Posting::Payment(map_payment(envelope, tenant, e)?),
        Event::CreditMemoIssued(e) => Posting::CreditMemo(map_credit_memo(envelope, tenant, e)?),
        Event::InvoiceVoided(e) => Posting::Void(map_void(e)),
        Event::PaymentRefunded(e) => Posting::Refund(map_refund(envelope, tenant, e)?),
        Event::CustomerUpserted(e) => Posting::Customer(CustomerRecord {
            customer_id: e.customer_id.clone(),
            name: e.name.clone(),
            email: e.email.clone(),
            country: e.country.clone(),
            currency: e.currency.clone(),
            tax_id: e.tax_id.clone(),
            updated_at: e.occurred_at,
        }),
        other => {
            return Err(invalid(format!(
                "{} is not handled by {CONSUMER_NAME}",
                other.event_type()
            )));
        }
    };
    Ok(ErpEffect {
        tenant_id: meta.tenant_id.as_str().to_owned(),
        event_id: meta.event_id,
        occurred_at: meta.occurred_at,
        route: ErpRoute::of(tenant),
        posting,
    })
}

fn map_invoice(
    env: &Envelope,
    tenant: &TenantConfig,
    e: &InvoiceFinalized,
) -> Result<InvoicePosting, Failure> {
    let accounts = &tenant.accounts;
    let cur = currency(&e.currency)?;
    let mut lines = vec![JournalLine::debit(&accounts.receivable, e.total_minor)];
    let revenue = net_credits(e.lines.iter().map(|l| {
        (
            accounts.revenue_for(&l.product_family).to_owned(),
            i128::from(l.amount_minor),
        )
    }));
    for (account, net) in revenue {
        let amount = to_i64("revenue", net.abs())?;
        lines.push(if net > 0 {
            JournalLine::credit(account, amount)
        } else {
            JournalLine::debit(account, amount)
        });
    }
    lines.push(JournalLine::credit(&accounts.tax_payable, e.tax_minor));
    let journal = entry(
        env,
        JournalKind::Invoice,
        cur,
        e.issued_at,
        ("invoice", &e.invoice_id),
        format!("invoice {}", e.invoice_number),
        lines,
    )?;
    Ok(InvoicePosting {
        invoice_id: e.invoice_id.clone(),
        number: e.invoice_number.clone(),
        customer_id: e.customer_id.clone(),
        currency: cur,
        total_minor: e.total_minor,
        issued_at: e.issued_at,
        receivable_account: accounts.receivable.clone(),
        journal,
    })
}

fn map_payment(
    env: &Envelope,
    tenant: &TenantConfig,
    e: &PaymentCaptured,
) -> Result<PaymentPosting, Failure> {
    let accounts = &tenant.accounts;
    let cur = currency(&e.currency)?;
    // validate() guarantees 0 <= fee <= amount, so the net cannot underflow.
    let net = e.amount_minor - e.fee_minor;
    let lines = vec![
        JournalLine::debit(&accounts.cash_clearing, net),
        JournalLine::debit(&accounts.payment_fees, e.fee_minor),
        JournalLine::credit(&accounts.unapplied_cash, e.amount_minor),
    ];
    let journal = entry(
        env,
        JournalKind::Receipt,
        cur,
        e.captured_at,
        ("payment", &e.payment_id),
        format!("payment {} for invoice {}", e.payment_id, e.invoice_id),
        lines,
    )?;
    Ok(PaymentPosting {
        payment_id: e.payment_id.clone(),
        invoice_id: e.invoice_id.clone(),
        customer_id: e.customer_id.clone(),
        currency: cur,
        amount_minor: e.amount_minor,
        fee_minor: e.fee_minor,
        captured_at: e.captured_at,
        unapplied_account: accounts.unapplied_cash.clone(),
        journal,
    })
}

fn map_credit_memo(
    env: &Envelope,
    tenant: &TenantConfig,
    e: &CreditMemoIssued,
) -> Result<CreditMemoPosting, Failure> {
    let accounts = &tenant.accounts;
    let cur = currency(&e.currency)?;
    let lines = vec![
        JournalLine::debit(accounts.revenue_for(&e.product_family), e.amount_minor),
        JournalLine::debit(&accounts.tax_payable, e.tax_minor),
        JournalLine::credit(&accounts.receivable, e.total_minor),
    ];
    let journal = entry(
        env,
        JournalKind::CreditMemo,
        cur,
        e.issued_at,
        ("credit_memo", &e.credit_memo_id),
        format!(
            "credit memo {} against invoice {}",
            e.credit_memo_number, e.invoice_id
        ),
        lines,
    )?;
    Ok(CreditMemoPosting {
        credit_memo_id: e.credit_memo_id.clone(),
        number: e.credit_memo_number.clone(),
        invoice_id: e.invoice_id.clone(),
        customer_id: e.customer_id.clone(),
        currency: cur,
        total_minor: e.total_minor,
        issued_at: e.issued_at,
        receivable_account: accounts.receivable.clone(),
        journal,
    })
}

fn map_void(e: &InvoiceVoided) -> VoidPosting {
    VoidPosting {
        invoice_id: e.invoice_id.clone(),
        reason: e.reason.clone(),
        voided_at: e.voided_at,
    }
}

fn map_refund(
    env: &Envelope,
    tenant: &TenantConfig,
    e: &PaymentRefunded,
) -> Result<RefundPosting, Failure> {
    let accounts = &tenant.accounts;
    let cur = currency(&e.currency)?;
    // validate() guarantees 0 < amount and 0 <= fee given back <= amount.
    let fee = e.fee_refund_minor.unwrap_or(0);
    let lines = vec![
        JournalLine::debit(&accounts.unapplied_cash, e.amount_minor),
        JournalLine::credit(&accounts.cash_clearing, e.amount_minor - fee),
        JournalLine::credit(&accounts.payment_fees, fee),
    ];
    let journal = entry(
        env,
        JournalKind::Refund,
        cur,
        e.refunded_at,
        ("refund", &e.refund_id),
        format!("refund {} of payment {}", e.refund_id, e.payment_id),
        lines,
    )?;
    Ok(RefundPosting {
        refund_id: e.refund_id.clone(),
        payment_id: e.payment_id.clone(),
        invoice_id: e.invoice_id.clone(),
        currency: cur,
        amount_minor: e.amount_minor,
        fee_refund_minor: fee,
        refunded_at: e.refunded_at,
        unapplied_account: accounts.unapplied_cash.clone(),
        journal,
    })
}

impl ConsumerLogic for ErpReceivables {
    type Effect = ErpEffect;

    fn name(&self) -> &'static str {
        CONSUMER_NAME
    }

    fn handles(&self, event_type: EventType) -> bool {
        matches!(
            event_type,
            EventType::InvoiceFinalized
                | EventType::PaymentCaptured
                | EventType::CreditMemoIssued
                | EventType::CustomerUpserted
                | EventType::InvoiceVoided
                | EventType::PaymentRefunded
        )
    }

    fn map(&self, envelope: &Envelope, tenant: &TenantConfig) -> Result<ErpEffect, Failure> {
        map_event(envelope, tenant)
    }

    fn schema(&self, backend: Backend) -> Migrations {
        crate::schema::migrations(backend)
    }

    fn write<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        backend: Backend,
        effects: &'a [(&'a Envelope, ErpEffect)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        crate::write::write(conn, backend, effects)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use ledgerflow_core::{
        Coordinates, CustomerUpserted, InvoiceLine, SchemaId, TaxLine, TenantId, UsageAggregated,
    };
    use ledgerflow_tenants::{
        Dynamics365Mapping, ErpAuth, ErpMode, NetsuiteMapping, OracleFusionMapping, S4hanaMapping,
        SecretRef,
    };

    use super::*;

    /// A route of `kind` with plausible keys for every ERP (journal mode).
    pub(crate) fn target(kind: ErpKind) -> ErpTarget {
        let secret = SecretRef::Env {
            env: "ERP_SECRET".into(),
        };
        let auth = match kind {
            ErpKind::Netsuite => ErpAuth::NetsuiteTba {
                consumer_key: secret.clone(),
                consumer_secret: secret.clone(),
                token_id: secret.clone(),
                token_secret: secret,
            },
            ErpKind::Dynamics365 => ErpAuth::Oauth2ClientCredentials {
                token_url: "http://127.0.0.1:9/token".into(),
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
            account: "ACCT1".into(),
            base_url: "http://127.0.0.1:9".into(),
            mode: ErpMode::Journal,
            auth,
            netsuite: (kind == ErpKind::Netsuite).then(|| NetsuiteMapping {
                subsidiary: "3".into(),
                default_item: Some("501".into()),
                items: BTreeMap::from([("4100".into(), "502".into())]),
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
                ledger: "US Primary".into(),
                business_unit: "US BU".into(),
                journal_source: "ledgerflow".into(),
                journal_category: "Sales".into(),
            }),
            limits: None,
            config_version: "cfg-test".into(),
        }
    }

    pub(crate) fn tenant(id: &str, erp: Option<ErpKind>) -> TenantConfig {
        TenantConfig {
            tenant_id: TenantId::parse(id).unwrap(),
            legal_entity: "US01".into(),
            functional_currency: Currency::parse("USD").unwrap(),
            erp: erp.map(target),
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
            rate_limit_per_sec: Some(5),
        }
    }

    pub(crate) fn envelope(event: Event) -> Envelope {
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

    pub(crate) fn line(id: &str, family: &str, qty: i64, unit: i64) -> InvoiceLine {
        InvoiceLine {
            line_id: id.into(),
            description: format!("{family} line"),
            product_family: family.into(),
            quantity_micros: qty * 1_000_000,
            unit_amount_minor: unit,
            amount_minor: qty * unit,
        }
    }

    pub(crate) fn invoice(
        event_id: &str,
        invoice_id: &str,
        lines: Vec<InvoiceLine>,
        tax: i64,
    ) -> Event {
        let subtotal: i64 = lines.iter().map(|l| l.amount_minor).sum();
        Event::InvoiceFinalized(InvoiceFinalized {
            event_id: event_id.into(),
            tenant_id: "acme".into(),
            occurred_at: 1_700_000_000_000_000,
            correlation_id: "c".into(),
            causation_id: None,
            source: "billing-api".into(),
            invoice_id: invoice_id.into(),
            invoice_number: format!("N-{invoice_id}"),
            customer_id: "cus-1".into(),
            subscription_id: None,
            currency: "USD".into(),
            issued_at: 1_700_000_000_000_000,
            due_at: 1_702_592_000_000_000,
            lines,
            tax_lines: vec![TaxLine {
                jurisdiction: "US-CA".into(),
                rate_bps: 725,
                taxable_amount_minor: subtotal,
                amount_minor: tax,
            }],
            subtotal_minor: subtotal,
            tax_minor: tax,
            total_minor: subtotal + tax,
            purchase_order: None,
        })
    }

    pub(crate) fn payment(
        event_id: &str,
        payment_id: &str,
        invoice_id: &str,
        amount: i64,
        fee: i64,
    ) -> Event {
        Event::PaymentCaptured(PaymentCaptured {
            event_id: event_id.into(),
            tenant_id: "acme".into(),
            occurred_at: 1_700_000_100_000_000,
            correlation_id: "c".into(),
            causation_id: None,
            source: "payments-service".into(),
            payment_id: payment_id.into(),
            invoice_id: invoice_id.into(),
            customer_id: "cus-1".into(),
            currency: "USD".into(),
            amount_minor: amount,
            fee_minor: fee,
            method: "card".into(),
            processor_reference: "ch_1".into(),
            captured_at: 1_700_000_100_000_000,
            settlement_currency: None,
        })
    }

    pub(crate) fn credit_memo(
        event_id: &str,
        memo_id: &str,
        invoice_id: &str,
        net: i64,
        tax: i64,
    ) -> Event {
        Event::CreditMemoIssued(CreditMemoIssued {
            event_id: event_id.into(),
            tenant_id: "acme".into(),
            occurred_at: 1_700_000_200_000_000,
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
            issued_at: 1_700_000_200_000_000,
        })
    }

    pub(crate) fn void(event_id: &str, invoice_id: &str) -> Event {
        Event::InvoiceVoided(InvoiceVoided {
            event_id: event_id.into(),
            tenant_id: "acme".into(),
            occurred_at: 1_700_000_300_000_000,
            correlation_id: "c".into(),
            causation_id: None,
            source: "billing-api".into(),
            invoice_id: invoice_id.into(),
            reason: "issued_in_error".into(),
            voided_at: 1_700_000_300_000_000,
        })
    }

    pub(crate) fn refund(
        event_id: &str,
        refund_id: &str,
        payment_id: &str,
        amount: i64,
        fee_back: Option<i64>,
    ) -> Event {
        Event::PaymentRefunded(PaymentRefunded {
            event_id: event_id.into(),
            tenant_id: "acme".into(),
            occurred_at: 1_700_000_400_000_000,
            correlation_id: "c".into(),
            causation_id: None,
            source: "payments-service".into(),
            refund_id: refund_id.into(),
            payment_id: payment_id.into(),
            invoice_id: None,
            currency: "USD".into(),
            amount_minor: amount,
            fee_refund_minor: fee_back,
            refunded_at: 1_700_000_400_000_000,
        })
    }

    #[test]
    fn refund_debits_unapplied_cash_and_credits_clearing_and_fees_exactly() {
        let effect = map_event(
            &envelope(refund(E2, "rf-1", "pay-1", 10_001, Some(29))),
            &tenant("acme", Some(ErpKind::Netsuite)),
        )
        .unwrap();
        let Posting::Refund(p) = &effect.posting else {
            panic!("{:?}", effect.posting)
        };
        assert_eq!(p.journal.kind, JournalKind::Refund);
        assert_eq!(
            lines_of(&p.journal),
            [("2400", 10_001, 0), ("1010", 0, 9_972), ("6100", 0, 29)]
        );
        assert_eq!(p.journal.total_debit(), 10_001);
        assert_eq!(p.journal.document_type, "refund");
        assert_eq!(p.journal.document_id, "rf-1");
        assert!(p.journal.memo.contains("pay-1"));
        assert_eq!(p.journal.posted_at, 1_700_000_400_000_000);
        // No fee given back: no fee line.
        let effect = map_event(
            &envelope(refund(E2, "rf-1", "pay-1", 500, None)),
            &tenant("acme", None),
        )
        .unwrap();
        assert_eq!(
            lines_of(effect.posting.journal().unwrap()),
            [("2400", 500, 0), ("1010", 0, 500)]
        );
        // A fee given back above the amount is bad data.
        let err = map_event(
            &envelope(refund(E2, "rf-1", "pay-1", 500, Some(501))),
            &tenant("acme", None),
        )
        .unwrap_err();
        assert_eq!(err.reason(), Some(ReasonCode::Validation));
    }

    #[test]
    fn void_maps_to_a_void_posting_without_a_journal_yet() {
        let effect = map_event(&envelope(void(E2, "inv-1")), &tenant("acme", None)).unwrap();
        assert_eq!(
            effect.posting,
            Posting::Void(VoidPosting {
                invoice_id: "inv-1".into(),
                reason: "issued_in_error".into(),
                voided_at: 1_700_000_300_000_000,
            })
        );
        assert!(effect.posting.journal().is_none());
    }

    const E1: &str = "00000000-0000-4000-8000-000000000001";
    const E2: &str = "00000000-0000-4000-8000-000000000002";

    fn lines_of(j: &JournalEntry) -> Vec<(&str, i64, i64)> {
        j.lines
            .iter()
            .map(|l| (l.account.as_str(), l.debit_minor, l.credit_minor))
            .collect()
    }

    #[test]
    fn invoice_debits_receivable_and_credits_revenue_per_family_and_tax() {
        let ev = envelope(invoice(
            E1,
            "inv-1",
            vec![
                line("l1", "platform", 2, 1000),
                line("l2", "support", 1, 500),
                line("l3", "platform", 1, 250),
                line("l4", "unknown-family", 3, 100),
            ],
            266,
        ));
        let effect = map_event(&ev, &tenant("acme", Some(ErpKind::Netsuite))).unwrap();
        let Posting::Invoice(p) = &effect.posting else {
            panic!("not an invoice")
        };
        // platform and unknown-family both go to the default revenue account and are summed.
        assert_eq!(
            lines_of(&p.journal),
            [
                ("1100", 3316, 0),
                ("4000", 0, 2550),
                ("4100", 0, 500),
                ("2200", 0, 266)
            ]
        );
        assert_eq!(p.journal.total_debit(), p.journal.total_credit());
        assert_eq!(p.total_minor, 3316);
        assert_eq!(p.journal.kind, JournalKind::Invoice);
        assert_eq!(p.journal.document_id, "inv-1");
        assert_eq!(effect.route.as_ref().unwrap().legal_entity, "US01");
    }

    #[test]
    fn a_discount_line_larger_than_its_family_becomes_a_debit() {
        let ev = envelope(invoice(
            E1,
            "inv-1",
            vec![
                line("l1", "platform", 1, 1000),
                line("l2", "support", 1, -200),
                line("l3", "support", 1, 50),
            ],
            0,
        ));
        let effect = map_event(&ev, &tenant("acme", None)).unwrap();
        let journal = effect.posting.journal().unwrap();
        // Zero tax leaves no tax line.
        assert_eq!(
            lines_of(journal),
            [("1100", 850, 0), ("4000", 0, 1000), ("4100", 150, 0)]
        );
        journal.check_balanced().unwrap();
        assert!(effect.route.is_none());
    }

    #[test]
    fn payment_nets_the_fee_and_credits_unapplied_cash() {
        let ev = envelope(payment(E2, "pay-1", "inv-1", 10_000, 320));
        let effect = map_event(&ev, &tenant("acme", None)).unwrap();
        let Posting::Payment(p) = &effect.posting else {
            panic!("not a payment")
        };
        assert_eq!(
            lines_of(&p.journal),
            [("1010", 9680, 0), ("6100", 320, 0), ("2400", 0, 10_000)]
        );
        assert_eq!(p.unapplied_account, "2400");
        assert_eq!(p.journal.kind, JournalKind::Receipt);

        // A fee-free payment has no fee line.
        let free = map_event(
            &envelope(payment(E2, "pay-1", "inv-1", 500, 0)),
            &tenant("acme", None),
        )
        .unwrap();
        assert_eq!(
            lines_of(free.posting.journal().unwrap()),
            [("1010", 500, 0), ("2400", 0, 500)]
        );
    }

    #[test]
    fn credit_memo_reverses_revenue_of_its_family_and_tax() {
        let ev = envelope(credit_memo(E1, "cm-1", "inv-1", 1000, 72));
        let effect = map_event(&ev, &tenant("acme", None)).unwrap();
        let journal = effect.posting.journal().unwrap();
        assert_eq!(
            lines_of(journal),
            [("4100", 1000, 0), ("2200", 72, 0), ("1100", 0, 1072)]
        );
        assert_eq!(journal.kind, JournalKind::CreditMemo);
    }

    #[test]
    fn every_journal_type_balances_and_ids_are_deterministic() {
        let t = tenant("acme", Some(ErpKind::S4hana));
        for event in [
            invoice(E1, "inv-1", vec![line("l1", "platform", 3, 333)], 71),
            payment(E1, "pay-1", "inv-1", 1070, 31),
            credit_memo(E1, "cm-1", "inv-1", 999, 1),
        ] {
            let ev = envelope(event);
            let a = map_event(&ev, &t).unwrap();
            let b = map_event(&ev, &t).unwrap();
            assert_eq!(a, b, "mapping is a pure function");
            let journal = a.posting.journal().unwrap();
            journal.check_balanced().unwrap();
            assert_eq!(journal.id, journal_id(&ev.meta.event_id, journal.kind));
        }
    }

    #[test]
    fn unbalanced_journals_are_validation_failures() {
        let ev = envelope(payment(E2, "pay-1", "inv-1", 100, 1));
        let mut journal = map_event(&ev, &tenant("acme", None))
            .unwrap()
            .posting
            .journal()
            .unwrap()
            .clone();
        journal.lines[0].debit_minor += 1;
        let err = journal.check_balanced().unwrap_err();
        assert_eq!(err.reason(), Some(ReasonCode::Validation));
        assert!(err.to_string().contains("does not balance"), "{err}");

        let lines = vec![
            JournalLine::debit("1100", 5),
            JournalLine::credit("4000", 4),
        ];
        let err = entry(
            &ev,
            JournalKind::Invoice,
            Currency::parse("USD").unwrap(),
            0,
            ("invoice", "x"),
            String::new(),
            lines,
        )
        .unwrap_err();
        assert_eq!(err.reason(), Some(ReasonCode::Validation));

        let mut both = journal.clone();
        both.lines = vec![JournalLine {
            account: "1".into(),
            debit_minor: 1,
            credit_minor: 1,
        }];
        assert!(both.check_balanced().is_err());
        let mut negative = journal;
        negative.lines = vec![JournalLine::debit("1", -1), JournalLine::credit("2", -1)];
        assert!(negative.check_balanced().is_err());
    }

    #[test]
    fn bad_data_is_a_permanent_validation_failure() {
        // Totals that do not add up.
        let mut bad = invoice(E1, "inv-1", vec![line("l1", "platform", 1, 100)], 0);
        if let Event::InvoiceFinalized(e) = &mut bad {
            e.total_minor += 1;
        }
        let err = map_event(&envelope(bad), &tenant("acme", None)).unwrap_err();
        assert_eq!(err.reason(), Some(ReasonCode::Validation));

        // Fee above the amount.
        let mut bad = payment(E2, "pay-1", "inv-1", 100, 1);
        if let Event::PaymentCaptured(e) = &mut bad {
            e.fee_minor = 101;
        }
        let err = map_event(&envelope(bad), &tenant("acme", None)).unwrap_err();
        assert_eq!(err.reason(), Some(ReasonCode::Validation));

        // Another tenant's configuration.
        let ev = envelope(payment(E2, "pay-1", "inv-1", 100, 1));
        let err = map_event(&ev, &tenant("other", None)).unwrap_err();
        assert_eq!(err.reason(), Some(ReasonCode::TenantMismatch));
    }

    #[test]
    fn handles_exactly_the_receivables_types_and_maps_customers() {
        let c = ErpReceivables;
        let handled: Vec<_> = EventType::ALL
            .into_iter()
            .filter(|t| c.handles(*t))
            .collect();
        assert_eq!(
            handled,
            [
                EventType::CustomerUpserted,
                EventType::InvoiceFinalized,
                EventType::PaymentCaptured,
                EventType::CreditMemoIssued,
                EventType::InvoiceVoided,
                EventType::PaymentRefunded
            ]
        );
        assert_eq!(ConsumerLogic::name(&c), "erp-receivables");

        let ev = envelope(Event::CustomerUpserted(CustomerUpserted {
            event_id: E1.into(),
            tenant_id: "acme".into(),
            occurred_at: 42,
            correlation_id: "c".into(),
            causation_id: None,
            source: "crm".into(),
            customer_id: "cus-1".into(),
            name: "Acme".into(),
            email: None,
            country: "US".into(),
            currency: "USD".into(),
            tax_id: None,
        }));
        let effect = c.map(&ev, &tenant("acme", None)).unwrap();
        assert!(matches!(&effect.posting, Posting::Customer(r) if r.updated_at == 42));

        let usage = envelope(Event::UsageAggregated(UsageAggregated {
            event_id: E1.into(),
            tenant_id: "acme".into(),
            occurred_at: 1,
            correlation_id: "c".into(),
            causation_id: None,
            source: "metering".into(),
            subscription_id: "s".into(),
            customer_id: "c".into(),
            meter: "api".into(),
            quantity_micros: 1,
            period_start: 0,
            period_end: 1,
        }));
        assert!(c.map(&usage, &tenant("acme", None)).is_err());
    }
}
