//! Payment application, planned in memory over the stored state of the touched documents.
//!
//! The batch's effects are replayed **in batch order** against the stored state the writer
//! loaded (invoice open balances, held payments, credit memos of invoices not yet seen). The
//! result is exactly what processing the events one by one would give, so a ledger does not
//! depend on where batch boundaries fall:
//!
//! - an invoice opens with its total less any credit memos that arrived before it, then takes
//!   the payments that were waiting for it (held), oldest capture first;
//! - a payment whose invoice is known applies `min(unapplied, open)` when the currencies match
//!   and the invoice is open; the rest stays unapplied (over-payment: a customer credit). A
//!   payment whose invoice is unknown is held; a currency mismatch is never applied;
//! - a credit memo reduces its invoice's open balance, or waits for the invoice;
//! - a void of an invoice that is known (stored or earlier in the batch) and untouched (open
//!   balance = total: nothing applied, nothing credited) posts the reversal of the invoice's
//!   journal (its lines with debit and credit swapped, kind `invoice_void`, memo naming the
//!   original journal's external id) and a void document; the open balance goes to 0. A void
//!   is **refused** (recorded in `erp_conflicts` with `existing_event_id` `refused:<reason>`,
//!   nothing posted, the event counts as handled) when the invoice is unknown
//!   (`refused:invoice_unknown`; the invoice and its void share a partition, so the invoice
//!   can only be missing if it was dead-lettered or never sent), when something was applied
//!   or credited (`refused:invoice_settled`: reverse a paid invoice with a credit memo, then
//!   refund the customer credit), or when the invoice was voided before (a conflict naming
//!   the earlier void's event). Later payments of a voided invoice stay unapplied cash;
//! - a refund draws on its payment's **unapplied** cash (over-payment, a payment whose invoice
//!   was credited before it applied, or a held payment): Dr unapplied cash, Cr cash clearing
//!   and fees, and the payment's unapplied amount goes down by the refund. It is refused when
//!   the payment is unknown (`refused:payment_unknown`), in another currency
//!   (`refused:currency_mismatch`) or has less unapplied than the refund
//!   (`refused:exceeds_unapplied`); a second refund with the same refund id is a conflict.
//!
//! A payment is applied at most once (its only chance is the first moment both it and its
//! invoice are known, and an invoice's open balance never grows), which is what lets the
//! application journal be keyed by the payment's event.

use std::collections::{HashMap, HashSet};

use ledgerflow_core::{Currency, EventId};

use crate::adapter::InvoiceRef;
use crate::journal::{JournalEntry, JournalKind, JournalLine, journal_id, reversed_lines};
use crate::mapping::{ErpEffect, ErpRoute, Posting};
use crate::posting::external_id;

/// (tenant id, business id).
pub(crate) type Key = (String, String);

fn key(tenant: &str, id: &str) -> Key {
    (tenant.to_owned(), id.to_owned())
}

/// A stored invoice, as loaded by the writer.
#[derive(Debug, Clone)]
pub(crate) struct StoredInvoice {
    pub(crate) event_id: String,
    pub(crate) customer_id: String,
    pub(crate) currency: String,
    pub(crate) open: i128,
    pub(crate) receivable_account: String,
    pub(crate) issued_at: i64,
    pub(crate) total: i128,
    pub(crate) number: String,
}

/// A stored payment a refund of the batch draws on.
#[derive(Debug, Clone)]
pub(crate) struct StoredPayment {
    pub(crate) invoice_id: String,
    pub(crate) customer_id: String,
    pub(crate) currency: String,
    pub(crate) unapplied: i128,
}

/// A payment not applied yet (stored and held, or new in this batch).
#[derive(Debug, Clone)]
pub(crate) struct HeldPayment {
    pub(crate) payment_id: String,
    pub(crate) event_id: EventId,
    pub(crate) currency: String,
    pub(crate) unapplied: i128,
    pub(crate) captured_at: i64,
    pub(crate) unapplied_account: String,
}

/// What the writer loaded before planning.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stored {
    /// Invoices referenced by the batch that exist.
    pub(crate) invoices: HashMap<Key, StoredInvoice>,
    /// Event id of payments of the batch that exist already.
    pub(crate) payments: HashMap<Key, String>,
    /// Event id of credit memos of the batch that exist already.
    pub(crate) credit_memos: HashMap<Key, String>,
    /// Held payments (no application) of invoices posted in this batch, by invoice.
    pub(crate) held: HashMap<Key, Vec<HeldPayment>>,
    /// Sum of stored credit memos of invoices posted in this batch, by invoice.
    pub(crate) credits: HashMap<Key, i128>,
    /// Journal lines of stored invoices the batch voids, by invoice.
    pub(crate) invoice_lines: HashMap<Key, Vec<JournalLine>>,
    /// Event id of stored voids, by invoice.
    pub(crate) voids: HashMap<Key, String>,
    /// Event id of stored refunds, by refund id.
    pub(crate) refunds: HashMap<Key, String>,
    /// Stored payments the batch refunds, by payment.
    pub(crate) refunded_payments: HashMap<Key, StoredPayment>,
}

/// A void document: the reversal of an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VoidDoc {
    pub(crate) tenant_id: String,
    pub(crate) invoice_id: String,
    pub(crate) number: String,
    pub(crate) customer_id: String,
    pub(crate) currency: String,
    pub(crate) total: i64,
    pub(crate) receivable_account: String,
    pub(crate) voided_at: i64,
    pub(crate) event_id: String,
    pub(crate) journal_id: String,
}

/// A refund document: money of a payment's unapplied cash returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefundDoc {
    pub(crate) tenant_id: String,
    pub(crate) refund_id: String,
    pub(crate) payment_id: String,
    pub(crate) customer_id: String,
    pub(crate) currency: String,
    pub(crate) amount: i64,
    pub(crate) unapplied_account: String,
    pub(crate) refunded_at: i64,
    pub(crate) event_id: String,
    pub(crate) journal_id: String,
}

/// One application of a payment to its invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Application {
    pub(crate) tenant_id: String,
    pub(crate) payment_id: String,
    pub(crate) invoice_id: String,
    pub(crate) currency: String,
    pub(crate) amount: i64,
    pub(crate) journal_id: String,
    pub(crate) applied_at: i64,
}

/// An event skipped because its document exists under another event id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub(crate) tenant_id: String,
    pub(crate) event_id: String,
    pub(crate) event_type: &'static str,
    pub(crate) document_id: String,
    pub(crate) existing_event_id: String,
}

/// A journal to insert, with its route and what an ERP document of it needs besides.
#[derive(Debug, Clone)]
pub(crate) struct PlannedJournal {
    pub(crate) journal: JournalEntry,
    pub(crate) route: Option<ErpRoute>,
    /// The customer of the document.
    pub(crate) customer_id: String,
    /// For an application: the invoice it settles; for a credit memo: the invoice it credits.
    pub(crate) invoice: Option<InvoiceRef>,
}

/// Everything the writer inserts and checks for one batch.
#[derive(Debug, Default)]
pub(crate) struct Plan<'a> {
    /// Effects to insert (documents, payments, customers), in batch order, conflicts removed.
    pub(crate) accepted: Vec<&'a ErpEffect>,
    /// Journals to insert: the accepted effects' and the applications', with their route.
    pub(crate) journals: Vec<PlannedJournal>,
    pub(crate) applications: Vec<Application>,
    pub(crate) conflicts: Vec<Conflict>,
    pub(crate) voids: Vec<VoidDoc>,
    pub(crate) refunds: Vec<RefundDoc>,
    /// Open balance after the batch of every invoice the batch posted or changed.
    pub(crate) invoice_open: HashMap<Key, i128>,
    /// Unapplied amount after the batch of every payment the batch posted or applied.
    pub(crate) payment_unapplied: HashMap<Key, i128>,
}

/// Something that can only be a bug or a bypassed inbox: the batch must not commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlanError(pub(crate) String);

#[derive(Debug)]
struct OpenInvoice {
    /// The event that posted it, when it parses (stored rows always do).
    event_id: Option<EventId>,
    customer_id: String,
    currency: String,
    open: i128,
    receivable_account: String,
    issued_at: i64,
    total: i128,
    number: String,
    /// The invoice journal's lines (loaded only for stored invoices the batch voids).
    lines: Vec<JournalLine>,
}

/// A payment a refund may draw on (stored, or accepted earlier in the batch).
#[derive(Debug, Clone)]
struct KnownPayment {
    invoice_id: String,
    customer_id: String,
    currency: String,
    /// Unapplied amount when loaded or accepted; later changes are in `payment_unapplied`.
    unapplied: i128,
}

/// Plans the batch. See the module docs for the rules.
pub(crate) fn plan<'a>(
    effects: &[&'a ErpEffect],
    mut stored: Stored,
) -> Result<Plan<'a>, PlanError> {
    let mut out = Plan::default();
    let mut invoices: HashMap<Key, OpenInvoice> = stored
        .invoices
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                OpenInvoice {
                    event_id: EventId::parse(&v.event_id).ok(),
                    customer_id: v.customer_id.clone(),
                    currency: v.currency.clone(),
                    open: v.open,
                    receivable_account: v.receivable_account.clone(),
                    issued_at: v.issued_at,
                    total: v.total,
                    number: v.number.clone(),
                    lines: stored.invoice_lines.remove(k).unwrap_or_default(),
                },
            )
        })
        .collect();
    let mut payments: HashMap<Key, KnownPayment> = stored
        .refunded_payments
        .iter()
        .map(|(k, p)| {
            (
                k.clone(),
                KnownPayment {
                    invoice_id: p.invoice_id.clone(),
                    customer_id: p.customer_id.clone(),
                    currency: p.currency.clone(),
                    unapplied: p.unapplied,
                },
            )
        })
        .collect();
    let mut void_events = std::mem::take(&mut stored.voids);
    let mut refund_events = std::mem::take(&mut stored.refunds);
    // Business ids seen so far (stored or earlier in the batch) -> event id.
    let mut invoice_events: HashMap<Key, String> = stored
        .invoices
        .iter()
        .map(|(k, v)| (k.clone(), v.event_id.clone()))
        .collect();
    let mut payment_events = std::mem::take(&mut stored.payments);
    let mut memo_events = std::mem::take(&mut stored.credit_memos);
    let mut seen_events: HashSet<(String, EventId)> = HashSet::new();

    for effect in effects {
        let tenant = effect.tenant_id.as_str();
        let event = effect.event_id.to_string();
        if !seen_events.insert((tenant.to_owned(), effect.event_id)) {
            return Err(PlanError(format!(
                "event {event} of tenant {tenant} appears twice in one batch"
            )));
        }
        match &effect.posting {
            Posting::Customer(_) => out.accepted.push(effect),
            Posting::Invoice(p) => {
                let k = key(tenant, &p.invoice_id);
                if let Some(existing) = invoice_events.get(&k) {
                    out.conflict(effect, "invoice_finalized", &p.invoice_id, existing)?;
                    continue;
                }
                invoice_events.insert(k.clone(), event.clone());
                out.accepted.push(effect);
                out.journals.push(PlannedJournal {
                    journal: p.journal.clone(),
                    route: effect.route.clone(),
                    customer_id: p.customer_id.clone(),
                    invoice: None,
                });
                let credited = stored.credits.remove(&k).unwrap_or(0);
                let mut invoice = OpenInvoice {
                    event_id: Some(effect.event_id),
                    customer_id: p.customer_id.clone(),
                    currency: p.currency.code().to_owned(),
                    open: i128::from(p.total_minor) - credited,
                    receivable_account: p.receivable_account.clone(),
                    issued_at: p.issued_at,
                    total: i128::from(p.total_minor),
                    number: p.number.clone(),
                    lines: p.journal.lines.clone(),
                };
                let mut held = stored.held.remove(&k).unwrap_or_default();
                held.sort_by(|a, b| {
                    (a.captured_at, &a.payment_id).cmp(&(b.captured_at, &b.payment_id))
                });
                for payment in held {
                    out.apply(tenant, &p.invoice_id, &mut invoice, &payment, &effect.route)?;
                }
                out.invoice_open.insert(k.clone(), invoice.open);
                invoices.insert(k, invoice);
            }
            Posting::Payment(p) => {
                let pk = key(tenant, &p.payment_id);
                if let Some(existing) = payment_events.get(&pk) {
                    out.conflict(effect, "payment_captured", &p.payment_id, existing)?;
                    continue;
                }
                payment_events.insert(pk.clone(), event.clone());
                out.accepted.push(effect);
                out.journals.push(PlannedJournal {
                    journal: p.journal.clone(),
                    route: effect.route.clone(),
                    customer_id: p.customer_id.clone(),
                    invoice: Some(InvoiceRef {
                        invoice_id: p.invoice_id.clone(),
                        event_id: invoices
                            .get(&key(tenant, &p.invoice_id))
                            .and_then(|i| i.event_id),
                    }),
                });
                let payment = HeldPayment {
                    payment_id: p.payment_id.clone(),
                    event_id: effect.event_id,
                    currency: p.currency.code().to_owned(),
                    unapplied: i128::from(p.amount_minor),
                    captured_at: p.captured_at,
                    unapplied_account: p.unapplied_account.clone(),
                };
                out.payment_unapplied.insert(pk.clone(), payment.unapplied);
                payments.insert(
                    pk,
                    KnownPayment {
                        invoice_id: p.invoice_id.clone(),
                        customer_id: p.customer_id.clone(),
                        currency: p.currency.code().to_owned(),
                        unapplied: payment.unapplied,
                    },
                );
                let ik = key(tenant, &p.invoice_id);
                match invoices.get_mut(&ik) {
                    Some(invoice) => {
                        out.apply(tenant, &p.invoice_id, invoice, &payment, &effect.route)?;
                        out.invoice_open.insert(ik, invoice.open);
                    }
                    None => stored.held.entry(ik).or_default().push(payment),
                }
            }
            Posting::CreditMemo(p) => {
                let mk = key(tenant, &p.credit_memo_id);
                if let Some(existing) = memo_events.get(&mk) {
                    out.conflict(effect, "credit_memo_issued", &p.credit_memo_id, existing)?;
                    continue;
                }
                memo_events.insert(mk, event.clone());
                out.accepted.push(effect);
                out.journals.push(PlannedJournal {
                    journal: p.journal.clone(),
                    route: effect.route.clone(),
                    customer_id: p.customer_id.clone(),
                    invoice: Some(InvoiceRef {
                        invoice_id: p.invoice_id.clone(),
                        event_id: invoices
                            .get(&key(tenant, &p.invoice_id))
                            .and_then(|i| i.event_id),
                    }),
                });
                let ik = key(tenant, &p.invoice_id);
                match invoices.get_mut(&ik) {
                    Some(invoice) => {
                        invoice.open -= i128::from(p.total_minor);
                        out.invoice_open.insert(ik, invoice.open);
                    }
                    None => *stored.credits.entry(ik).or_insert(0) += i128::from(p.total_minor),
                }
            }
            Posting::Void(v) => {
                let ik = key(tenant, &v.invoice_id);
                if let Some(existing) = void_events.get(&ik) {
                    out.conflict(effect, "invoice_voided", &v.invoice_id, existing)?;
                    continue;
                }
                let Some(invoice) = invoices.get_mut(&ik) else {
                    out.refuse(effect, "invoice_voided", &v.invoice_id, "invoice_unknown");
                    continue;
                };
                if invoice.open != invoice.total {
                    out.refuse(effect, "invoice_voided", &v.invoice_id, "invoice_settled");
                    continue;
                }
                let lines = reversed_lines(&invoice.lines);
                let reversed_credit: i128 = lines
                    .iter()
                    .filter(|l| l.account == invoice.receivable_account)
                    .map(|l| i128::from(l.credit_minor) - i128::from(l.debit_minor))
                    .sum();
                if reversed_credit != invoice.total {
                    return Err(PlanError(format!(
                        "invoice {} of tenant {tenant}: its journal's receivable line ({reversed_credit}) is not its total ({})",
                        v.invoice_id, invoice.total
                    )));
                }
                let currency = Currency::parse(&invoice.currency).map_err(PlanError)?;
                let original = invoice
                    .event_id
                    .map(|e| external_id(tenant, &e, JournalKind::Invoice))
                    .unwrap_or_default();
                let journal = JournalEntry {
                    id: journal_id(&effect.event_id, JournalKind::InvoiceVoid),
                    tenant_id: tenant.to_owned(),
                    event_id: effect.event_id,
                    kind: JournalKind::InvoiceVoid,
                    currency,
                    posted_at: v.voided_at,
                    document_type: "invoice",
                    document_id: v.invoice_id.clone(),
                    memo: format!(
                        "void of invoice {} (reverses {original}): {}",
                        invoice.number, v.reason
                    ),
                    lines,
                };
                journal
                    .check_balanced()
                    .map_err(|f| PlanError(f.to_string()))?;
                let total = i64::try_from(invoice.total).map_err(|_| {
                    PlanError(format!("void of {} does not fit 64 bits", invoice.total))
                })?;
                void_events.insert(ik.clone(), event.clone());
                out.accepted.push(effect);
                out.voids.push(VoidDoc {
                    tenant_id: tenant.to_owned(),
                    invoice_id: v.invoice_id.clone(),
                    number: invoice.number.clone(),
                    customer_id: invoice.customer_id.clone(),
                    currency: invoice.currency.clone(),
                    total,
                    receivable_account: invoice.receivable_account.clone(),
                    voided_at: v.voided_at,
                    event_id: event.clone(),
                    journal_id: journal.id.to_string(),
                });
                out.journals.push(PlannedJournal {
                    journal,
                    route: effect.route.clone(),
                    customer_id: invoice.customer_id.clone(),
                    invoice: Some(InvoiceRef {
                        invoice_id: v.invoice_id.clone(),
                        event_id: invoice.event_id,
                    }),
                });
                invoice.open -= invoice.total;
                out.invoice_open.insert(ik, invoice.open);
            }
            Posting::Refund(r) => {
                let rk = key(tenant, &r.refund_id);
                if let Some(existing) = refund_events.get(&rk) {
                    out.conflict(effect, "payment_refunded", &r.refund_id, existing)?;
                    continue;
                }
                let pk = key(tenant, &r.payment_id);
                let Some(payment) = payments.get(&pk) else {
                    out.refuse(effect, "payment_refunded", &r.refund_id, "payment_unknown");
                    continue;
                };
                if payment.currency != r.currency.code() {
                    out.refuse(
                        effect,
                        "payment_refunded",
                        &r.refund_id,
                        "currency_mismatch",
                    );
                    continue;
                }
                let unapplied = out
                    .payment_unapplied
                    .get(&pk)
                    .copied()
                    .unwrap_or(payment.unapplied);
                let amount = i128::from(r.amount_minor);
                if amount > unapplied {
                    out.refuse(
                        effect,
                        "payment_refunded",
                        &r.refund_id,
                        "exceeds_unapplied",
                    );
                    continue;
                }
                refund_events.insert(rk, event.clone());
                out.accepted.push(effect);
                out.payment_unapplied.insert(pk.clone(), unapplied - amount);
                // A held payment (its invoice not posted yet) applies only what is left.
                let ik = key(tenant, &payment.invoice_id);
                if let Some(held) = stored.held.get_mut(&ik) {
                    for h in held.iter_mut().filter(|h| h.payment_id == r.payment_id) {
                        h.unapplied -= amount;
                    }
                }
                out.refunds.push(RefundDoc {
                    tenant_id: tenant.to_owned(),
                    refund_id: r.refund_id.clone(),
                    payment_id: r.payment_id.clone(),
                    customer_id: payment.customer_id.clone(),
                    currency: payment.currency.clone(),
                    amount: r.amount_minor,
                    unapplied_account: r.unapplied_account.clone(),
                    refunded_at: r.refunded_at,
                    event_id: event.clone(),
                    journal_id: r.journal.id.to_string(),
                });
                out.journals.push(PlannedJournal {
                    journal: r.journal.clone(),
                    route: effect.route.clone(),
                    customer_id: payment.customer_id.clone(),
                    invoice: Some(InvoiceRef {
                        invoice_id: payment.invoice_id.clone(),
                        event_id: invoices.get(&ik).and_then(|i| i.event_id),
                    }),
                });
            }
        }
    }
    Ok(out)
}

impl Plan<'_> {
    fn conflict(
        &mut self,
        effect: &ErpEffect,
        event_type: &'static str,
        document_id: &str,
        existing_event_id: &str,
    ) -> Result<(), PlanError> {
        let event = effect.event_id.to_string();
        if existing_event_id == event {
            // The same event a second time: the inbox lets no duplicate through, so this is a
            // bypassed or broken inbox. Refuse the batch rather than post twice.
            return Err(PlanError(format!(
                "event {event} of tenant {} ({event_type} {document_id}) is already posted",
                effect.tenant_id
            )));
        }
        tracing::warn!(
            tenant = %effect.tenant_id,
            event_id = %event,
            existing_event_id,
            event_type,
            document_id,
            "document already posted by another event; nothing posted for this one"
        );
        self.conflicts.push(Conflict {
            tenant_id: effect.tenant_id.clone(),
            event_id: event,
            event_type,
            document_id: document_id.to_owned(),
            existing_event_id: existing_event_id.to_owned(),
        });
        Ok(())
    }

    /// Records an event that posts nothing because the stored state does not allow it (see
    /// the module docs): a row in `erp_conflicts` whose `existing_event_id` is
    /// `refused:<reason>`, visible to the operator and to reconcile.
    fn refuse(
        &mut self,
        effect: &ErpEffect,
        event_type: &'static str,
        document_id: &str,
        reason: &'static str,
    ) {
        let event = effect.event_id.to_string();
        tracing::warn!(
            tenant = %effect.tenant_id,
            event_id = %event,
            event_type,
            document_id,
            reason,
            "correction refused; nothing posted for it"
        );
        self.conflicts.push(Conflict {
            tenant_id: effect.tenant_id.clone(),
            event_id: event,
            event_type,
            document_id: document_id.to_owned(),
            existing_event_id: format!("refused:{reason}"),
        });
    }

    /// Applies `payment` to `invoice` as far as possible.
    fn apply(
        &mut self,
        tenant: &str,
        invoice_id: &str,
        invoice: &mut OpenInvoice,
        payment: &HeldPayment,
        route: &Option<ErpRoute>,
    ) -> Result<(), PlanError> {
        if payment.currency != invoice.currency || invoice.open <= 0 || payment.unapplied <= 0 {
            // Currency mismatch (flagged by reconcile), or nothing left to pay: the payment
            // stays unapplied cash, a customer credit.
            return Ok(());
        }
        let amount = payment.unapplied.min(invoice.open);
        let amount_i64 = i64::try_from(amount)
            .map_err(|_| PlanError(format!("application of {amount} does not fit 64 bits")))?;
        let currency = Currency::parse(&payment.currency).map_err(PlanError)?;
        let id = journal_id(&payment.event_id, JournalKind::Application);
        let applied_at = payment.captured_at.max(invoice.issued_at);
        let journal = JournalEntry {
            id,
            tenant_id: tenant.to_owned(),
            event_id: payment.event_id,
            kind: JournalKind::Application,
            currency,
            posted_at: applied_at,
            document_type: "payment",
            document_id: payment.payment_id.clone(),
            memo: format!(
                "payment {} applied to invoice {invoice_id}",
                payment.payment_id
            ),
            lines: vec![
                JournalLine::debit(&payment.unapplied_account, amount_i64),
                JournalLine::credit(&invoice.receivable_account, amount_i64),
            ],
        };
        journal
            .check_balanced()
            .map_err(|f| PlanError(f.to_string()))?;
        invoice.open -= amount;
        self.payment_unapplied
            .insert(key(tenant, &payment.payment_id), payment.unapplied - amount);
        self.applications.push(Application {
            tenant_id: tenant.to_owned(),
            payment_id: payment.payment_id.clone(),
            invoice_id: invoice_id.to_owned(),
            currency: payment.currency.clone(),
            amount: amount_i64,
            journal_id: id.to_string(),
            applied_at,
        });
        self.journals.push(PlannedJournal {
            journal,
            route: route.clone(),
            customer_id: invoice.customer_id.clone(),
            invoice: Some(InvoiceRef {
                invoice_id: invoice_id.to_owned(),
                event_id: invoice.event_id,
            }),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ledgerflow_core::Event;

    use super::*;
    use crate::mapping::map_event;
    use crate::mapping::tests::{
        credit_memo, envelope, invoice, line, payment, refund, tenant, void,
    };

    fn eid(n: u32) -> String {
        format!("00000000-0000-4000-8000-{n:012}")
    }

    fn effect(event: Event) -> ErpEffect {
        map_event(&envelope(event), &tenant("acme", None)).unwrap()
    }

    fn inv(n: u32, id: &str, total: i64) -> ErpEffect {
        effect(invoice(
            &eid(n),
            id,
            vec![line("l", "platform", 1, total)],
            0,
        ))
    }

    fn pay(n: u32, id: &str, invoice_id: &str, amount: i64) -> ErpEffect {
        effect(payment(&eid(n), id, invoice_id, amount, 0))
    }

    fn k(id: &str) -> Key {
        key("acme", id)
    }

    fn applied(plan: &Plan<'_>) -> Vec<(String, String, i64)> {
        plan.applications
            .iter()
            .map(|a| (a.payment_id.clone(), a.invoice_id.clone(), a.amount))
            .collect()
    }

    #[test]
    fn invoice_then_payment_in_one_batch_applies() {
        let effects = [inv(1, "i1", 1000), pay(2, "p1", "i1", 1000)];
        let refs: Vec<_> = effects.iter().collect();
        let plan = plan(&refs, Stored::default()).unwrap();
        assert_eq!(applied(&plan), [("p1".into(), "i1".into(), 1000)]);
        assert_eq!(plan.invoice_open[&k("i1")], 0);
        assert_eq!(plan.payment_unapplied[&k("p1")], 0);
        assert_eq!(plan.journals.len(), 3);
        let planned = &plan.journals[2];
        let app = &planned.journal;
        assert_eq!(app.kind, JournalKind::Application);
        assert_eq!(planned.customer_id, "cus-1");
        let settled = planned.invoice.as_ref().unwrap();
        assert_eq!(settled.invoice_id, "i1");
        assert_eq!(settled.event_id, Some(effects[0].event_id));
        assert_eq!(
            app.id,
            journal_id(&effects[1].event_id, JournalKind::Application)
        );
        app.check_balanced().unwrap();
    }

    #[test]
    fn payment_before_invoice_in_one_batch_is_held_then_applied() {
        let effects = [pay(2, "p1", "i1", 400), inv(1, "i1", 1000)];
        let refs: Vec<_> = effects.iter().collect();
        let plan = plan(&refs, Stored::default()).unwrap();
        assert_eq!(applied(&plan), [("p1".into(), "i1".into(), 400)]);
        assert_eq!(plan.invoice_open[&k("i1")], 600);
        assert_eq!(plan.payment_unapplied[&k("p1")], 0);
    }

    #[test]
    fn stored_held_payments_apply_oldest_first_up_to_the_open_balance() {
        let mut stored = Stored::default();
        let held = |id: &str, n: u32, amount: i128, at: i64| HeldPayment {
            payment_id: id.into(),
            event_id: EventId::parse(&eid(n)).unwrap(),
            currency: "USD".into(),
            unapplied: amount,
            captured_at: at,
            unapplied_account: "2400".into(),
        };
        stored.held.insert(
            k("i1"),
            vec![held("late", 8, 700, 20), held("early", 9, 600, 10)],
        );
        stored.credits.insert(k("i1"), 100);
        let effects = [inv(1, "i1", 1000)];
        let refs: Vec<_> = effects.iter().collect();
        let plan = plan(&refs, stored).unwrap();
        // open 1000 - 100 credited = 900: early takes 600, late 300 of its 700.
        assert_eq!(
            applied(&plan),
            [
                ("early".into(), "i1".into(), 600),
                ("late".into(), "i1".into(), 300)
            ]
        );
        assert_eq!(plan.invoice_open[&k("i1")], 0);
        assert_eq!(plan.payment_unapplied[&k("late")], 400);
    }

    #[test]
    fn partial_over_and_mismatched_payments() {
        let mut stored = Stored::default();
        stored.invoices.insert(
            k("i1"),
            StoredInvoice {
                event_id: eid(1),
                customer_id: "cus-1".into(),
                currency: "USD".into(),
                open: 1000,
                receivable_account: "1100".into(),
                issued_at: 0,
                total: 1000,
                number: "N-i1".into(),
            },
        );
        let mut eur = pay(4, "p3", "i1", 50);
        if let Posting::Payment(p) = &mut eur.posting {
            p.currency = Currency::parse("EUR").unwrap();
        }
        let effects = [
            pay(2, "p1", "i1", 300),
            pay(3, "p2", "i1", 900),
            eur,
            pay(5, "p4", "i1", 10),
        ];
        let refs: Vec<_> = effects.iter().collect();
        let plan = plan(&refs, stored).unwrap();
        assert_eq!(
            applied(&plan),
            [
                ("p1".into(), "i1".into(), 300),
                ("p2".into(), "i1".into(), 700)
            ]
        );
        assert_eq!(plan.invoice_open[&k("i1")], 0);
        assert_eq!(
            plan.payment_unapplied[&k("p2")],
            200,
            "over-payment stays unapplied"
        );
        assert_eq!(
            plan.payment_unapplied[&k("p3")],
            50,
            "currency mismatch is never applied"
        );
        assert_eq!(plan.payment_unapplied[&k("p4")], 10, "nothing left to pay");
    }

    #[test]
    fn credit_memos_reduce_the_open_balance_before_or_after_the_invoice() {
        let memo_first = effect(credit_memo(&eid(3), "cm1", "i1", 100, 0));
        let effects = [
            memo_first,
            inv(1, "i1", 1000),
            effect(credit_memo(&eid(4), "cm2", "i1", 50, 0)),
        ];
        let refs: Vec<_> = effects.iter().collect();
        let plan = plan(&refs, Stored::default()).unwrap();
        assert_eq!(plan.invoice_open[&k("i1")], 850);
        assert!(plan.applications.is_empty());
    }

    #[test]
    fn order_within_a_batch_is_respected() {
        // Paid in full, then credited: the credit leaves the invoice at -30 (customer credit on
        // the receivable); credited first, the payment over-pays by 30 instead.
        let paid_then_credited = [
            inv(1, "i1", 100),
            pay(2, "p1", "i1", 100),
            effect(credit_memo(&eid(3), "cm", "i1", 30, 0)),
        ];
        let refs: Vec<_> = paid_then_credited.iter().collect();
        let plan_a = plan(&refs, Stored::default()).unwrap();
        assert_eq!(plan_a.invoice_open[&k("i1")], -30);
        assert_eq!(plan_a.payment_unapplied[&k("p1")], 0);

        let credited_then_paid = [
            inv(1, "i1", 100),
            effect(credit_memo(&eid(3), "cm", "i1", 30, 0)),
            pay(2, "p1", "i1", 100),
        ];
        let refs: Vec<_> = credited_then_paid.iter().collect();
        let plan_b = plan(&refs, Stored::default()).unwrap();
        assert_eq!(plan_b.invoice_open[&k("i1")], 0);
        assert_eq!(plan_b.payment_unapplied[&k("p1")], 30);
    }

    #[test]
    fn a_document_under_a_new_event_id_is_a_conflict_and_the_same_event_an_error() {
        let mut stored = Stored::default();
        stored.payments.insert(k("p1"), eid(7));
        let effects = [pay(2, "p1", "i1", 10)];
        let refs: Vec<_> = effects.iter().collect();
        let plan_a = plan(&refs, stored).unwrap();
        assert!(plan_a.accepted.is_empty() && plan_a.journals.is_empty());
        assert_eq!(plan_a.conflicts[0].existing_event_id, eid(7));

        let mut stored = Stored::default();
        stored.payments.insert(k("p1"), eid(2));
        let err = plan(&refs, stored).unwrap_err();
        assert!(err.0.contains("already posted"), "{err:?}");

        let twice = [inv(1, "i1", 10), inv(1, "i1", 10)];
        let refs: Vec<_> = twice.iter().collect();
        assert!(plan(&refs, Stored::default()).is_err());

        let same_doc = [inv(1, "i1", 10), inv(2, "i1", 10)];
        let refs: Vec<_> = same_doc.iter().collect();
        let plan_c = plan(&refs, Stored::default()).unwrap();
        assert_eq!(plan_c.accepted.len(), 1);
        assert_eq!(plan_c.conflicts.len(), 1);
    }

    #[test]
    fn a_void_reverses_the_invoice_journal_exactly_and_names_the_original() {
        let invoice_effect = effect(invoice(
            &eid(1),
            "i1",
            vec![line("a", "platform", 3, 3333), line("b", "support", 1, 1)],
            725,
        ));
        let effects = [invoice_effect, effect(void(&eid(2), "i1"))];
        let refs: Vec<_> = effects.iter().collect();
        let plan_a = plan(&refs, Stored::default()).unwrap();
        assert_eq!(plan_a.invoice_open[&k("i1")], 0);
        let original = &plan_a.journals[0].journal;
        let planned = &plan_a.journals[1];
        let reversal = &planned.journal;
        assert_eq!(reversal.kind, JournalKind::InvoiceVoid);
        assert_eq!(
            reversal.id,
            journal_id(&effects[1].event_id, JournalKind::InvoiceVoid)
        );
        reversal.check_balanced().unwrap();
        assert_eq!(reversal.total_debit(), original.total_debit());
        assert_eq!(reversal.total_debit(), 9_999 + 1 + 725);
        for (o, r) in original.lines.iter().zip(&reversal.lines) {
            assert_eq!(
                (&o.account, o.debit_minor, o.credit_minor),
                (&r.account, r.credit_minor, r.debit_minor)
            );
        }
        assert_eq!(reversal.lines.len(), original.lines.len());
        assert_eq!(
            (reversal.document_type, reversal.document_id.as_str()),
            ("invoice", "i1")
        );
        assert!(
            reversal.memo.contains(&external_id(
                "acme",
                &effects[0].event_id,
                JournalKind::Invoice
            )),
            "{}",
            reversal.memo
        );
        assert_eq!(reversal.posted_at, 1_700_000_300_000_000);
        let referenced = planned.invoice.as_ref().unwrap();
        assert_eq!(referenced.event_id, Some(effects[0].event_id));
        assert_eq!(plan_a.voids.len(), 1);
        assert_eq!(plan_a.voids[0].total, 10_725);
        // A payment after the void is not applied to the voided invoice.
        let effects = [
            effects[0].clone(),
            effects[1].clone(),
            pay(3, "p1", "i1", 100),
        ];
        let refs: Vec<_> = effects.iter().collect();
        let plan_b = plan(&refs, Stored::default()).unwrap();
        assert!(plan_b.applications.is_empty());
        assert_eq!(plan_b.payment_unapplied[&k("p1")], 100);
    }

    #[test]
    fn a_void_of_a_stored_invoice_uses_its_stored_lines() {
        let mut stored = Stored::default();
        stored.invoices.insert(
            k("i1"),
            StoredInvoice {
                event_id: eid(1),
                customer_id: "cus-1".into(),
                currency: "JPY".into(),
                open: 1000,
                receivable_account: "1100".into(),
                issued_at: 0,
                total: 1000,
                number: "N-i1".into(),
            },
        );
        stored.invoice_lines.insert(
            k("i1"),
            vec![
                JournalLine::debit("1100", 1000),
                JournalLine::credit("4000", 910),
                JournalLine::credit("2200", 90),
            ],
        );
        let effects = [effect(void(&eid(2), "i1"))];
        let refs: Vec<_> = effects.iter().collect();
        let plan_a = plan(&refs, stored.clone()).unwrap();
        let j = &plan_a.journals[0].journal;
        assert_eq!(j.currency.code(), "JPY");
        assert_eq!(
            j.lines,
            [
                JournalLine::credit("1100", 1000),
                JournalLine::debit("4000", 910),
                JournalLine::debit("2200", 90),
            ]
        );
        assert_eq!(plan_a.invoice_open[&k("i1")], 0);

        // Partly paid or credited: refused, nothing planned.
        let mut settled = stored.clone();
        settled.invoices.get_mut(&k("i1")).unwrap().open = 999;
        let plan_b = plan(&refs, settled).unwrap();
        assert!(plan_b.journals.is_empty() && plan_b.accepted.is_empty());
        assert_eq!(
            plan_b.conflicts[0].existing_event_id,
            "refused:invoice_settled"
        );

        // Lines that do not carry the total: an invariant violation, never a wrong reversal.
        let mut broken = stored;
        broken.invoice_lines.remove(&k("i1"));
        assert!(plan(&refs, broken).is_err());
    }

    #[test]
    fn refunds_draw_on_unapplied_cash_only() {
        let effects = [
            inv(1, "i1", 1000),
            pay(2, "p1", "i1", 1200),
            effect(refund(&eid(3), "r1", "p1", 150, Some(5))),
            effect(refund(&eid(4), "r2", "p1", 51, None)),
            effect(refund(&eid(5), "r3", "p1", 50, None)),
        ];
        let refs: Vec<_> = effects.iter().collect();
        let p = plan(&refs, Stored::default()).unwrap();
        assert_eq!(p.payment_unapplied[&k("p1")], 0);
        assert_eq!(
            p.refunds
                .iter()
                .map(|r| (r.refund_id.as_str(), r.amount))
                .collect::<Vec<_>>(),
            [("r1", 150), ("r3", 50)]
        );
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.conflicts[0].document_id, "r2");
        assert_eq!(
            p.conflicts[0].existing_event_id,
            "refused:exceeds_unapplied"
        );
        let refund_journal = &p.journals.last().unwrap().journal;
        assert_eq!(refund_journal.kind, JournalKind::Refund);
        assert_eq!(p.journals.last().unwrap().customer_id, "cus-1");
    }
}
