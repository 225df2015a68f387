//! What erp-receivables made of one event, for `ledgerflow lineage`: its journals with their
//! lines and balance, the AR document, payment and applications, the ERP postings with their
//! state, and a conflict when the event's document already existed under another event id.
//! And, for an invoice, the events that refer to it (payments, applications, credit memos).
//!
//! Reads only; the tables must exist (the caller applies the schema, as every command does).
//! With the tenant every lookup is by an index; without it the journal and document lookups
//! scan their tables.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::ErpError;
use crate::ops::PostingSummary;

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageLine {
    /// Line number.
    pub line_no: i64,
    /// Account.
    pub account: String,
    /// Debit (minor units).
    pub debit_minor: i64,
    /// Credit (minor units).
    pub credit_minor: i64,
}

/// One journal with its lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageJournal {
    /// Journal id (also the id of its ERP posting).
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Role: `invoice`, `receipt`, `application`, `credit_memo`.
    pub kind: String,
    /// Currency.
    pub currency: String,
    /// Posting time (micros).
    pub posted_at: i64,
    /// Business document type.
    pub document_type: String,
    /// Business document id.
    pub document_id: String,
    /// Memo.
    pub memo: String,
    /// Total (minor units).
    pub total_minor: i64,
    /// The ERP it is posted to; none when it stays in the subledger.
    pub erp_kind: Option<String>,
    /// Lines by number.
    pub lines: Vec<LineageLine>,
    /// Sum of the debits.
    pub debit_minor: i64,
    /// Sum of the credits.
    pub credit_minor: i64,
    /// Whether debits equal credits.
    pub balanced: bool,
}

/// An AR document (invoice or credit memo).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageDocument {
    /// `invoice` or `credit_memo`.
    pub doc_type: String,
    /// Document id.
    pub doc_id: String,
    /// Document number.
    pub doc_number: String,
    /// Customer.
    pub customer_id: String,
    /// Currency.
    pub currency: String,
    /// Total (minor units).
    pub total_minor: i64,
    /// Still open (minor units).
    pub open_minor: i64,
    /// The credited invoice of a credit memo.
    pub applies_to: Option<String>,
    /// Its journal.
    pub journal_id: String,
}

/// A captured payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineagePayment {
    /// Payment id.
    pub payment_id: String,
    /// The invoice it pays.
    pub invoice_id: String,
    /// Currency.
    pub currency: String,
    /// Amount (minor units).
    pub amount_minor: i64,
    /// Processor fee (minor units).
    pub fee_minor: i64,
    /// Not yet applied (minor units).
    pub unapplied_minor: i64,
    /// Its receipt journal.
    pub journal_id: String,
}

/// A payment applied to an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageApplication {
    /// Payment id.
    pub payment_id: String,
    /// Invoice id.
    pub invoice_id: String,
    /// Currency.
    pub currency: String,
    /// Applied (minor units).
    pub amount_minor: i64,
    /// Its journal.
    pub journal_id: String,
    /// The event whose processing wrote the application journal.
    pub event_id: Option<String>,
}

/// The event's document already existed under another event id: nothing was posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageConflict {
    /// The business document.
    pub document_id: String,
    /// The event that made it first.
    pub existing_event_id: String,
}

/// erp-receivables' part of an event's lineage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErpLineage {
    /// Journals written for the event.
    pub journals: Vec<LineageJournal>,
    /// The AR document it made (invoice or credit memo).
    pub documents: Vec<LineageDocument>,
    /// The payment it captured.
    pub payments: Vec<LineagePayment>,
    /// Applications whose journal the event wrote.
    pub applications: Vec<LineageApplication>,
    /// ERP postings of the journals (a journal that stays in the subledger has none).
    pub postings: Vec<PostingSummary>,
    /// A conflict recorded instead of effects.
    pub conflict: Option<LineageConflict>,
}

impl ErpLineage {
    /// Whether erp-receivables has nothing of the event.
    pub fn is_empty(&self) -> bool {
        self.journals.is_empty()
            && self.documents.is_empty()
            && self.payments.is_empty()
            && self.conflict.is_none()
    }
}

/// The events that refer to an invoice, by what they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InvoiceRefs {
    /// The `invoice_finalized` event of the invoice, when it was posted.
    pub invoice_event_id: Option<String>,
    /// `payment_captured` events of payments of the invoice.
    pub payment_event_ids: Vec<String>,
    /// Applications to the invoice.
    pub applications: Vec<LineageApplication>,
    /// `credit_memo_issued` events of credit memos of the invoice.
    pub credit_memo_event_ids: Vec<String>,
    /// Any other event with a journal whose document is the invoice (a void, say).
    pub other_event_ids: Vec<String>,
}

fn corrupt(what: &'static str) -> impl Fn(sqlx::Error) -> ErpError {
    move |e| ErpError::Corrupt(format!("{what}: {e}"))
}

fn application_from(r: &AnyRow) -> Result<LineageApplication, ErpError> {
    let get = corrupt("application");
    Ok(LineageApplication {
        payment_id: r.try_get("payment_id").map_err(&get)?,
        invoice_id: r.try_get("invoice_id").map_err(&get)?,
        currency: r.try_get("currency").map_err(&get)?,
        amount_minor: r.try_get("amount_minor").map_err(&get)?,
        journal_id: r.try_get("journal_id").map_err(&get)?,
        event_id: r.try_get("event_id").map_err(&get)?,
    })
}

const APPLICATION_COLUMNS: &str = "a.payment_id, a.invoice_id, a.currency, a.amount_minor, \
    a.journal_id, j.event_id";

/// Everything erp-receivables wrote for `event_id` (of `tenant`, when known).
pub async fn for_event(
    pool: &AnyPool,
    backend: ledgerflow_store::Backend,
    tenant: Option<&str>,
    event_id: &str,
) -> Result<ErpLineage, ErpError> {
    let tenant = tenant.unwrap_or("");
    let mut out = ErpLineage::default();
    let rows = sqlx::query(
        "SELECT id, tenant_id, kind, currency, posted_at, document_type, document_id, memo, \
         total_minor, erp_kind FROM erp_journal_entries \
         WHERE ($1 = '' OR tenant_id = $1) AND event_id = $2 ORDER BY posted_at, kind, id",
    )
    .bind(tenant)
    .bind(event_id)
    .fetch_all(pool)
    .await
    .map_err(ErpError::db("reading an event's journals"))?;
    for r in &rows {
        let get = corrupt("journal");
        let id: String = r.try_get("id").map_err(&get)?;
        let lines = sqlx::query(
            "SELECT line_no, account, debit_minor, credit_minor FROM erp_journal_lines \
             WHERE entry_id = $1 ORDER BY line_no",
        )
        .bind(id.as_str())
        .fetch_all(pool)
        .await
        .map_err(ErpError::db("reading journal lines"))?
        .iter()
        .map(|l| {
            let get = corrupt("journal line");
            Ok(LineageLine {
                line_no: l.try_get("line_no").map_err(&get)?,
                account: l.try_get("account").map_err(&get)?,
                debit_minor: l.try_get("debit_minor").map_err(&get)?,
                credit_minor: l.try_get("credit_minor").map_err(&get)?,
            })
        })
        .collect::<Result<Vec<_>, ErpError>>()?;
        let debit_minor = lines
            .iter()
            .map(|l| l.debit_minor)
            .fold(0i64, i64::saturating_add);
        let credit_minor = lines
            .iter()
            .map(|l| l.credit_minor)
            .fold(0i64, i64::saturating_add);
        out.journals.push(LineageJournal {
            id,
            tenant_id: r.try_get("tenant_id").map_err(&get)?,
            kind: r.try_get("kind").map_err(&get)?,
            currency: r.try_get("currency").map_err(&get)?,
            posted_at: r.try_get("posted_at").map_err(&get)?,
            document_type: r.try_get("document_type").map_err(&get)?,
            document_id: r.try_get("document_id").map_err(&get)?,
            memo: r.try_get("memo").map_err(&get)?,
            total_minor: r.try_get("total_minor").map_err(&get)?,
            erp_kind: r.try_get("erp_kind").map_err(&get)?,
            lines,
            debit_minor,
            credit_minor,
            balanced: debit_minor == credit_minor,
        });
    }
    let rows = sqlx::query(
        "SELECT doc_type, doc_id, doc_number, customer_id, currency, total_minor, open_minor, \
         applies_to, journal_id FROM erp_ar_documents \
         WHERE ($1 = '' OR tenant_id = $1) AND event_id = $2 ORDER BY doc_type, doc_id",
    )
    .bind(tenant)
    .bind(event_id)
    .fetch_all(pool)
    .await
    .map_err(ErpError::db("reading an event's AR document"))?;
    for r in &rows {
        let get = corrupt("AR document");
        out.documents.push(LineageDocument {
            doc_type: r.try_get("doc_type").map_err(&get)?,
            doc_id: r.try_get("doc_id").map_err(&get)?,
            doc_number: r.try_get("doc_number").map_err(&get)?,
            customer_id: r.try_get("customer_id").map_err(&get)?,
            currency: r.try_get("currency").map_err(&get)?,
            total_minor: r.try_get("total_minor").map_err(&get)?,
            open_minor: r.try_get("open_minor").map_err(&get)?,
            applies_to: r.try_get("applies_to").map_err(&get)?,
            journal_id: r.try_get("journal_id").map_err(&get)?,
        });
    }
    let rows = sqlx::query(
        "SELECT payment_id, invoice_id, currency, amount_minor, fee_minor, unapplied_minor, \
         journal_id FROM erp_payments \
         WHERE ($1 = '' OR tenant_id = $1) AND event_id = $2 ORDER BY payment_id",
    )
    .bind(tenant)
    .bind(event_id)
    .fetch_all(pool)
    .await
    .map_err(ErpError::db("reading an event's payment"))?;
    for r in &rows {
        let get = corrupt("payment");
        out.payments.push(LineagePayment {
            payment_id: r.try_get("payment_id").map_err(&get)?,
            invoice_id: r.try_get("invoice_id").map_err(&get)?,
            currency: r.try_get("currency").map_err(&get)?,
            amount_minor: r.try_get("amount_minor").map_err(&get)?,
            fee_minor: r.try_get("fee_minor").map_err(&get)?,
            unapplied_minor: r.try_get("unapplied_minor").map_err(&get)?,
            journal_id: r.try_get("journal_id").map_err(&get)?,
        });
    }
    for j in out.journals.iter().filter(|j| j.kind == "application") {
        let rows = sqlx::query(&format!(
            "SELECT {APPLICATION_COLUMNS} FROM erp_applications a \
             LEFT JOIN erp_journal_entries j ON j.id = a.journal_id WHERE a.journal_id = $1"
        ))
        .bind(j.id.as_str())
        .fetch_all(pool)
        .await
        .map_err(ErpError::db("reading an event's applications"))?;
        for r in &rows {
            out.applications.push(application_from(r)?);
        }
    }
    for j in &out.journals {
        if let Some(p) = crate::ops::posting(pool, backend, &j.id).await? {
            out.postings.push(p.summary);
        }
    }
    let row = sqlx::query(
        "SELECT document_id, existing_event_id FROM erp_conflicts \
         WHERE ($1 = '' OR tenant_id = $1) AND event_id = $2",
    )
    .bind(tenant)
    .bind(event_id)
    .fetch_optional(pool)
    .await
    .map_err(ErpError::db("reading an event's conflict"))?;
    if let Some(r) = row {
        let get = corrupt("conflict");
        out.conflict = Some(LineageConflict {
            document_id: r.try_get("document_id").map_err(&get)?,
            existing_event_id: r.try_get("existing_event_id").map_err(&get)?,
        });
    }
    Ok(out)
}

/// The events that refer to invoice `invoice_id` of `tenant` (all by index).
pub async fn invoice_refs(
    pool: &AnyPool,
    tenant: &str,
    invoice_id: &str,
) -> Result<InvoiceRefs, ErpError> {
    let mut out = InvoiceRefs {
        invoice_event_id: sqlx::query_scalar(
            "SELECT event_id FROM erp_ar_documents \
             WHERE tenant_id = $1 AND doc_type = 'invoice' AND doc_id = $2",
        )
        .bind(tenant)
        .bind(invoice_id)
        .fetch_optional(pool)
        .await
        .map_err(ErpError::db("finding an invoice"))?,
        ..InvoiceRefs::default()
    };
    out.payment_event_ids = sqlx::query_scalar(
        "SELECT event_id FROM erp_payments WHERE tenant_id = $1 AND invoice_id = $2 \
         ORDER BY captured_at, payment_id",
    )
    .bind(tenant)
    .bind(invoice_id)
    .fetch_all(pool)
    .await
    .map_err(ErpError::db("finding an invoice's payments"))?;
    out.credit_memo_event_ids = sqlx::query_scalar(
        "SELECT event_id FROM erp_ar_documents \
         WHERE tenant_id = $1 AND applies_to = $2 AND doc_type = 'credit_memo' \
         ORDER BY issued_at, doc_id",
    )
    .bind(tenant)
    .bind(invoice_id)
    .fetch_all(pool)
    .await
    .map_err(ErpError::db("finding an invoice's credit memos"))?;
    let rows = sqlx::query(&format!(
        "SELECT {APPLICATION_COLUMNS} FROM erp_applications a \
         LEFT JOIN erp_journal_entries j ON j.id = a.journal_id \
         WHERE a.tenant_id = $1 AND a.invoice_id = $2 ORDER BY a.applied_at, a.payment_id"
    ))
    .bind(tenant)
    .bind(invoice_id)
    .fetch_all(pool)
    .await
    .map_err(ErpError::db("finding an invoice's applications"))?;
    for r in &rows {
        out.applications.push(application_from(r)?);
    }
    // Journals of any kind naming the invoice as their document, by the document index.
    for kind in crate::JournalKind::ALL {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT event_id FROM erp_journal_entries \
             WHERE tenant_id = $1 AND kind = $2 AND document_id = $3 ORDER BY posted_at, id",
        )
        .bind(tenant)
        .bind(kind.as_str())
        .bind(invoice_id)
        .fetch_all(pool)
        .await
        .map_err(ErpError::db("finding journals of an invoice"))?;
        for id in ids {
            let known = out.invoice_event_id.as_deref() == Some(id.as_str())
                || out.payment_event_ids.contains(&id)
                || out.credit_memo_event_ids.contains(&id)
                || out
                    .applications
                    .iter()
                    .any(|a| a.event_id.as_deref() == Some(&id))
                || out.other_event_ids.contains(&id);
            if !known {
                out.other_event_ids.push(id);
            }
        }
    }
    Ok(out)
}
