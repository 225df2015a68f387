//! The set-based writer: a batch's effects into the `erp_` tables, inside the caller's
//! transaction.
//!
//! 1. Postgres only: a transaction-scoped advisory lock per tenant of the batch (sorted, so two
//!    writers cannot deadlock). Tenants are partition-keyed, so this is normally uncontended;
//!    it makes payment application correct even when two batches of one tenant race (a payment
//!    committed by one while the other posts its invoice). It relies on READ COMMITTED, the
//!    Postgres default, so reads after the lock see what the previous holder committed.
//! 2. Load the stored state the batch touches, a few `(tenant_id, id) IN (...)` queries.
//! 3. Plan in memory, in batch order ([`crate::settle`]).
//! 4. Render every journal of a tenant with an ERP for it (the adapter's pure `render`, see
//!    [`crate::adapter`]): the posting's document, external id, route and dependencies.
//! 5. Set-based inserts: customers (upsert, newest wins), documents, payments, journals,
//!    lines, applications, conflicts, postings (outbox rows) and their dependencies. On
//!    Postgres each is one fixed statement over `UNNEST` of one array per column ([`Rows`]),
//!    prepared once per connection.
//! 6. Recompute the open balances of touched invoices and the unapplied amounts of touched
//!    payments from the source rows (applications, credit memos) and compare them with the
//!    plan; any difference is an invariant violation and the batch rolls back.

use std::collections::{BTreeSet, HashMap, HashSet};

use ledgerflow_core::{Envelope, EventId};
use ledgerflow_store::{Backend, Rows, StoreError, lock_tenants};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::adapter::{Document, RenderInput, Rendered};
use crate::journal::JournalLine;
use crate::mapping::{CustomerRecord, ErpEffect, Posting};
use crate::posting::{PostingState, external_id};
use crate::settle::{
    self, HeldPayment, Key, Plan, PlannedJournal, Stored, StoredInvoice, StoredPayment,
};
use crate::{adapters, payloads};

/// Advisory lock class of the per-tenant write lock (`pg_advisory_xact_lock(int, int)`, a key
/// space apart from the single-`bigint` locks the store uses).
const TENANT_LOCK_CLASS: i32 = 0x4552; // "ER"

/// Wall clock for outbox bookkeeping (never ledger data); the dispatcher reads it from here.
pub(crate) use ledgerflow_core::now_micros;

/// Writes a batch's effects. See the module docs.
pub(crate) async fn write(
    conn: &mut AnyConnection,
    backend: Backend,
    effects: &[(&Envelope, ErpEffect)],
) -> Result<(), StoreError> {
    if effects.is_empty() {
        return Ok(());
    }
    let list: Vec<&ErpEffect> = effects.iter().map(|(_, e)| e).collect();
    // Sorted (a BTreeSet), one statement for all of the batch's tenants.
    let tenants: BTreeSet<&str> = list.iter().map(|e| e.tenant_id.as_str()).collect();
    lock_tenants(
        conn,
        backend,
        TENANT_LOCK_CLASS,
        tenants,
        "locking the batch's tenants' receivables",
    )
    .await?;
    let stored = load(conn, backend, &list).await?;
    let plan = settle::plan(&list, stored).map_err(|e| StoreError::Invariant(e.0))?;
    let outbox = render_postings(&plan)?;
    insert_customers(conn, backend, &plan).await?;
    insert_documents(conn, backend, &plan).await?;
    insert_payments(conn, backend, &plan).await?;
    insert_journals(conn, backend, &plan, &outbox.not_posted).await?;
    insert_applications(conn, backend, &plan).await?;
    insert_conflicts(conn, backend, &plan).await?;
    insert_outbox(conn, backend, &outbox).await?;
    verify_balances(conn, backend, &plan).await?;
    Ok(())
}

/// Runs `prefix <rows> suffix` over `rows` (see [`Rows`]); `bind` pushes one row.
#[allow(clippy::too_many_arguments)]
async fn insert_rows<T>(
    conn: &mut AnyConnection,
    backend: Backend,
    action: &'static str,
    types: &'static [&'static str],
    prefix: &str,
    suffix: &str,
    rows: &[T],
    mut bind: impl FnMut(&mut Rows, &T),
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut values = Rows::new(backend, types);
    for row in rows {
        bind(&mut values, row);
    }
    values.execute(conn, action, prefix, suffix).await?;
    Ok(())
}

/// Runs `prefix <keys> suffix` where `prefix` ends in `(tenant_id, id) IN (` and collects rows.
pub(crate) async fn fetch_by_keys(
    conn: &mut AnyConnection,
    backend: Backend,
    action: &'static str,
    prefix: &str,
    suffix: &str,
    keys: &[Key],
) -> Result<Vec<AnyRow>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut values = Rows::new(backend, &["text", "text"]);
    for (tenant, id) in keys {
        values.push(tenant.as_str()).push(id.as_str());
    }
    values.fetch_all(conn, action, prefix, suffix).await
}

fn dedup(keys: impl IntoIterator<Item = Key>) -> Vec<Key> {
    keys.into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn corrupt(action: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::Corrupt(format!("{action}: {e}"))
}

/// Loads the stored state the batch touches.
async fn load(
    conn: &mut AnyConnection,
    backend: Backend,
    effects: &[&ErpEffect],
) -> Result<Stored, StoreError> {
    let mut invoice_refs = Vec::new();
    let mut new_invoices = Vec::new();
    let mut payment_ids = Vec::new();
    let mut memo_ids = Vec::new();
    let mut void_refs = Vec::new();
    let mut refund_ids = Vec::new();
    let mut refunded_payments = Vec::new();
    for e in effects {
        let t = e.tenant_id.clone();
        match &e.posting {
            Posting::Invoice(p) => {
                invoice_refs.push((t.clone(), p.invoice_id.clone()));
                new_invoices.push((t, p.invoice_id.clone()));
            }
            Posting::Payment(p) => {
                invoice_refs.push((t.clone(), p.invoice_id.clone()));
                payment_ids.push((t, p.payment_id.clone()));
            }
            Posting::CreditMemo(p) => {
                invoice_refs.push((t.clone(), p.invoice_id.clone()));
                memo_ids.push((t, p.credit_memo_id.clone()));
            }
            Posting::Void(p) => {
                invoice_refs.push((t.clone(), p.invoice_id.clone()));
                void_refs.push((t, p.invoice_id.clone()));
            }
            Posting::Refund(p) => {
                refund_ids.push((t.clone(), p.refund_id.clone()));
                refunded_payments.push((t, p.payment_id.clone()));
            }
            Posting::Customer(_) => {}
        }
    }
    let mut stored = Stored::default();

    let action = "loading the batch's invoices";
    for row in fetch_by_keys(
        conn,
        backend,
        action,
        "SELECT tenant_id, doc_id, event_id, currency, open_minor, receivable_account, issued_at,
                customer_id, total_minor, doc_number
         FROM erp_ar_documents WHERE doc_type = 'invoice' AND (tenant_id, doc_id) IN (",
        ")",
        &dedup(invoice_refs),
    )
    .await?
    {
        let k: Key = (
            row.try_get(0).map_err(corrupt(action))?,
            row.try_get(1).map_err(corrupt(action))?,
        );
        stored.invoices.insert(
            k,
            StoredInvoice {
                event_id: row.try_get(2).map_err(corrupt(action))?,
                currency: row.try_get(3).map_err(corrupt(action))?,
                open: i128::from(row.try_get::<i64, _>(4).map_err(corrupt(action))?),
                receivable_account: row.try_get(5).map_err(corrupt(action))?,
                issued_at: row.try_get(6).map_err(corrupt(action))?,
                customer_id: row.try_get(7).map_err(corrupt(action))?,
                total: i128::from(row.try_get::<i64, _>(8).map_err(corrupt(action))?),
                number: row.try_get(9).map_err(corrupt(action))?,
            },
        );
    }
    load_corrections(
        conn,
        backend,
        &mut stored,
        dedup(void_refs),
        dedup(refund_ids),
        dedup(refunded_payments),
    )
    .await?;

    let action = "loading the batch's payments";
    for row in fetch_by_keys(
        conn,
        backend,
        action,
        "SELECT tenant_id, payment_id, event_id FROM erp_payments WHERE (tenant_id, payment_id) IN (",
        ")",
        &dedup(payment_ids),
    )
    .await?
    {
        stored.payments.insert(
            (row.try_get(0).map_err(corrupt(action))?, row.try_get(1).map_err(corrupt(action))?),
            row.try_get(2).map_err(corrupt(action))?,
        );
    }

    let action = "loading the batch's credit memos";
    for row in fetch_by_keys(
        conn,
        backend,
        action,
        "SELECT tenant_id, doc_id, event_id FROM erp_ar_documents
         WHERE doc_type = 'credit_memo' AND (tenant_id, doc_id) IN (",
        ")",
        &dedup(memo_ids),
    )
    .await?
    {
        stored.credit_memos.insert(
            (
                row.try_get(0).map_err(corrupt(action))?,
                row.try_get(1).map_err(corrupt(action))?,
            ),
            row.try_get(2).map_err(corrupt(action))?,
        );
    }

    // Only invoices that do not exist yet can have held payments or waiting credit memos.
    let arriving: Vec<Key> = dedup(new_invoices)
        .into_iter()
        .filter(|k| !stored.invoices.contains_key(k))
        .collect();
    if arriving.is_empty() {
        return Ok(stored);
    }
    let action = "loading held payments";
    for row in fetch_by_keys(
        conn,
        backend,
        action,
        "SELECT p.tenant_id, p.invoice_id, p.payment_id, p.event_id, p.currency,
                p.unapplied_minor, p.captured_at, p.unapplied_account
         FROM erp_payments p
         WHERE NOT EXISTS (SELECT 1 FROM erp_applications a
                           WHERE a.tenant_id = p.tenant_id AND a.payment_id = p.payment_id)
           AND (p.tenant_id, p.invoice_id) IN (",
        ")",
        &arriving,
    )
    .await?
    {
        let event: String = row.try_get(3).map_err(corrupt(action))?;
        let held = HeldPayment {
            payment_id: row.try_get(2).map_err(corrupt(action))?,
            event_id: EventId::parse(&event).map_err(StoreError::Corrupt)?,
            currency: row.try_get(4).map_err(corrupt(action))?,
            unapplied: i128::from(row.try_get::<i64, _>(5).map_err(corrupt(action))?),
            captured_at: row.try_get(6).map_err(corrupt(action))?,
            unapplied_account: row.try_get(7).map_err(corrupt(action))?,
        };
        stored
            .held
            .entry((
                row.try_get(0).map_err(corrupt(action))?,
                row.try_get(1).map_err(corrupt(action))?,
            ))
            .or_default()
            .push(held);
    }
    let action = "loading credit memos of arriving invoices";
    for row in fetch_by_keys(
        conn,
        backend,
        action,
        "SELECT tenant_id, applies_to, CAST(SUM(total_minor) AS BIGINT) FROM erp_ar_documents
         WHERE doc_type = 'credit_memo' AND (tenant_id, applies_to) IN (",
        ") GROUP BY tenant_id, applies_to",
        &arriving,
    )
    .await?
    {
        stored.credits.insert(
            (
                row.try_get(0).map_err(corrupt(action))?,
                row.try_get(1).map_err(corrupt(action))?,
            ),
            i128::from(row.try_get::<i64, _>(2).map_err(corrupt(action))?),
        );
    }
    Ok(stored)
}

/// The event id of every stored document of `doc_type` among `keys` ((tenant, document id)):
/// earlier voids of the batch's invoices, earlier refunds under the batch's refund ids.
async fn load_event_ids_of(
    conn: &mut AnyConnection,
    backend: Backend,
    action: &'static str,
    doc_type: &'static str,
    keys: &[Key],
) -> Result<HashMap<Key, String>, StoreError> {
    let prefix = format!(
        "SELECT tenant_id, doc_id, event_id FROM erp_ar_documents
         WHERE doc_type = '{doc_type}' AND (tenant_id, doc_id) IN ("
    );
    let mut found = HashMap::new();
    for row in fetch_by_keys(conn, backend, action, &prefix, ")", keys).await? {
        found.insert(
            (
                row.try_get(0).map_err(corrupt(action))?,
                row.try_get(1).map_err(corrupt(action))?,
            ),
            row.try_get(2).map_err(corrupt(action))?,
        );
    }
    Ok(found)
}

/// Loads what the batch's voids and refunds need: the journal lines of the stored invoices
/// voided, earlier voids of them, earlier refunds with the same ids, and the refunded payments.
async fn load_corrections(
    conn: &mut AnyConnection,
    backend: Backend,
    stored: &mut Stored,
    voided: Vec<Key>,
    refunds: Vec<Key>,
    payments: Vec<Key>,
) -> Result<(), StoreError> {
    let action = "loading the journal lines of voided invoices";
    for row in fetch_by_keys(
        conn,
        backend,
        action,
        "SELECT d.tenant_id, d.doc_id, l.account, l.debit_minor, l.credit_minor
         FROM erp_ar_documents d JOIN erp_journal_lines l ON l.entry_id = d.journal_id
         WHERE d.doc_type = 'invoice' AND (d.tenant_id, d.doc_id) IN (",
        ") ORDER BY d.tenant_id, d.doc_id, l.line_no",
        &voided,
    )
    .await?
    {
        stored
            .invoice_lines
            .entry((
                row.try_get(0).map_err(corrupt(action))?,
                row.try_get(1).map_err(corrupt(action))?,
            ))
            .or_default()
            .push(JournalLine {
                account: row.try_get(2).map_err(corrupt(action))?,
                debit_minor: row.try_get(3).map_err(corrupt(action))?,
                credit_minor: row.try_get(4).map_err(corrupt(action))?,
            });
    }
    stored.voids = load_event_ids_of(
        conn,
        backend,
        "loading earlier voids",
        "invoice_void",
        &voided,
    )
    .await?;
    stored.refunds =
        load_event_ids_of(conn, backend, "loading earlier refunds", "refund", &refunds).await?;
    let action = "loading refunded payments";
    for row in fetch_by_keys(
        conn,
        backend,
        action,
        "SELECT tenant_id, payment_id, invoice_id, customer_id, currency, unapplied_minor
         FROM erp_payments WHERE (tenant_id, payment_id) IN (",
        ")",
        &payments,
    )
    .await?
    {
        stored.refunded_payments.insert(
            (
                row.try_get(0).map_err(corrupt(action))?,
                row.try_get(1).map_err(corrupt(action))?,
            ),
            StoredPayment {
                invoice_id: row.try_get(2).map_err(corrupt(action))?,
                customer_id: row.try_get(3).map_err(corrupt(action))?,
                currency: row.try_get(4).map_err(corrupt(action))?,
                unapplied: i128::from(row.try_get::<i64, _>(5).map_err(corrupt(action))?),
            },
        );
    }
    Ok(())
}

async fn insert_customers(
    conn: &mut AnyConnection,
    backend: Backend,
    plan: &Plan<'_>,
) -> Result<(), StoreError> {
    // Newest (occurred_at, event_id) per customer; one row per key, as Postgres refuses to
    // upsert a row twice in one statement.
    let mut newest: HashMap<(&str, &str), (&CustomerRecord, EventId)> = HashMap::new();
    for e in &plan.accepted {
        if let Posting::Customer(c) = &e.posting {
            let slot = newest.entry((e.tenant_id.as_str(), c.customer_id.as_str()));
            slot.and_modify(|cur| {
                if (c.updated_at, e.event_id.to_string()) > (cur.0.updated_at, cur.1.to_string()) {
                    *cur = (c, e.event_id);
                }
            })
            .or_insert((c, e.event_id));
        }
    }
    let mut rows: Vec<_> = newest.into_iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    insert_rows(
        conn,
        backend,
        "upserting customers",
        &[
            "text", "text", "text", "text", "text", "text", "text", "bigint", "text",
        ],
        "INSERT INTO erp_customers (tenant_id, customer_id, name, email, country, currency, tax_id,
         updated_at, event_id)",
        "ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
            name = excluded.name, email = excluded.email, country = excluded.country,
            currency = excluded.currency, tax_id = excluded.tax_id,
            updated_at = excluded.updated_at, event_id = excluded.event_id
         WHERE erp_customers.updated_at < excluded.updated_at
            OR (erp_customers.updated_at = excluded.updated_at
                AND erp_customers.event_id < excluded.event_id)",
        &rows,
        |v, ((tenant, _), (c, event))| {
            v.push((*tenant).to_owned())
                .push(c.customer_id.clone())
                .push(c.name.clone())
                .push(c.email.clone())
                .push(c.country.clone())
                .push(c.currency.clone())
                .push(c.tax_id.clone())
                .push(c.updated_at)
                .push(event.to_string());
        },
    )
    .await
}

async fn insert_documents(
    conn: &mut AnyConnection,
    backend: Backend,
    plan: &Plan<'_>,
) -> Result<(), StoreError> {
    struct Doc<'a> {
        tenant: &'a str,
        doc_type: &'static str,
        id: &'a str,
        number: &'a str,
        customer: &'a str,
        currency: &'a str,
        total: i64,
        open: i64,
        applies_to: Option<&'a str>,
        receivable: &'a str,
        issued_at: i64,
        event: String,
        journal: String,
    }
    let mut docs = Vec::new();
    for e in &plan.accepted {
        match &e.posting {
            Posting::Invoice(p) => {
                let open = plan
                    .invoice_open
                    .get(&(e.tenant_id.clone(), p.invoice_id.clone()))
                    .copied()
                    .unwrap_or(i128::from(p.total_minor));
                docs.push(Doc {
                    tenant: &e.tenant_id,
                    doc_type: "invoice",
                    id: &p.invoice_id,
                    number: &p.number,
                    customer: &p.customer_id,
                    currency: p.currency.code(),
                    total: p.total_minor,
                    open: i64::try_from(open).map_err(|_| {
                        StoreError::Invariant(format!("open balance {open} does not fit 64 bits"))
                    })?,
                    applies_to: None,
                    receivable: &p.receivable_account,
                    issued_at: p.issued_at,
                    event: e.event_id.to_string(),
                    journal: p.journal.id.to_string(),
                });
            }
            Posting::CreditMemo(p) => docs.push(Doc {
                tenant: &e.tenant_id,
                doc_type: "credit_memo",
                id: &p.credit_memo_id,
                number: &p.number,
                customer: &p.customer_id,
                currency: p.currency.code(),
                total: p.total_minor,
                open: 0,
                applies_to: Some(&p.invoice_id),
                receivable: &p.receivable_account,
                issued_at: p.issued_at,
                event: e.event_id.to_string(),
                journal: p.journal.id.to_string(),
            }),
            Posting::Payment(_) | Posting::Customer(_) | Posting::Void(_) | Posting::Refund(_) => {}
        }
    }
    // Corrections: their own document types, `applies_to` naming what they correct (a void's
    // invoice, a refund's payment), `open_minor` 0.
    for v in &plan.voids {
        docs.push(Doc {
            tenant: &v.tenant_id,
            doc_type: "invoice_void",
            id: &v.invoice_id,
            number: &v.number,
            customer: &v.customer_id,
            currency: &v.currency,
            total: v.total,
            open: 0,
            applies_to: Some(&v.invoice_id),
            receivable: &v.receivable_account,
            issued_at: v.voided_at,
            event: v.event_id.clone(),
            journal: v.journal_id.clone(),
        });
    }
    for r in &plan.refunds {
        docs.push(Doc {
            tenant: &r.tenant_id,
            doc_type: "refund",
            id: &r.refund_id,
            number: &r.refund_id,
            customer: &r.customer_id,
            currency: &r.currency,
            total: r.amount,
            open: 0,
            applies_to: Some(&r.payment_id),
            receivable: &r.unapplied_account,
            issued_at: r.refunded_at,
            event: r.event_id.clone(),
            journal: r.journal_id.clone(),
        });
    }
    insert_rows(
        conn,
        backend,
        "inserting ar documents",
        &[
            "text", "text", "text", "text", "text", "text", "bigint", "bigint", "text", "text",
            "bigint", "text", "text",
        ],
        "INSERT INTO erp_ar_documents (tenant_id, doc_type, doc_id, doc_number, customer_id,
         currency, total_minor, open_minor, applies_to, receivable_account, issued_at, event_id,
         journal_id)",
        "",
        &docs,
        |v, d| {
            v.push(d.tenant.to_owned())
                .push(d.doc_type.to_owned())
                .push(d.id.to_owned())
                .push(d.number.to_owned())
                .push(d.customer.to_owned())
                .push(d.currency.to_owned())
                .push(d.total)
                .push(d.open)
                .push(d.applies_to.map(str::to_owned))
                .push(d.receivable.to_owned())
                .push(d.issued_at)
                .push(d.event.clone())
                .push(d.journal.clone());
        },
    )
    .await
}

async fn insert_payments(
    conn: &mut AnyConnection,
    backend: Backend,
    plan: &Plan<'_>,
) -> Result<(), StoreError> {
    let payments: Vec<_> = plan
        .accepted
        .iter()
        .filter_map(|e| match &e.posting {
            Posting::Payment(p) => Some((*e, p)),
            _ => None,
        })
        .collect();
    let mut unapplied = Vec::with_capacity(payments.len());
    for (e, p) in &payments {
        let left = plan
            .payment_unapplied
            .get(&(e.tenant_id.clone(), p.payment_id.clone()))
            .copied()
            .unwrap_or(i128::from(p.amount_minor));
        unapplied.push(i64::try_from(left).map_err(|_| {
            StoreError::Invariant(format!("unapplied amount {left} does not fit 64 bits"))
        })?);
    }
    let rows: Vec<_> = payments.iter().zip(unapplied).collect();
    insert_rows(
        conn,
        backend,
        "inserting payments",
        &[
            "text", "text", "text", "text", "text", "bigint", "bigint", "bigint", "text", "bigint",
            "text", "text",
        ],
        "INSERT INTO erp_payments (tenant_id, payment_id, invoice_id, customer_id, currency,
         amount_minor, fee_minor, unapplied_minor, unapplied_account, captured_at, event_id,
         journal_id)",
        "",
        &rows,
        |v, ((e, p), left)| {
            v.push(e.tenant_id.clone())
                .push(p.payment_id.clone())
                .push(p.invoice_id.clone())
                .push(p.customer_id.clone())
                .push(p.currency.code().to_owned())
                .push(p.amount_minor)
                .push(p.fee_minor)
                .push(*left)
                .push(p.unapplied_account.clone())
                .push(p.captured_at)
                .push(e.event_id.to_string())
                .push(p.journal.id.to_string());
        },
    )
    .await
}

async fn insert_journals(
    conn: &mut AnyConnection,
    backend: Backend,
    plan: &Plan<'_>,
    not_posted: &HashSet<uuid::Uuid>,
) -> Result<(), StoreError> {
    let mut totals = Vec::with_capacity(plan.journals.len());
    for PlannedJournal { journal: j, .. } in &plan.journals {
        let total = j.total_debit();
        totals.push(i64::try_from(total).map_err(|_| {
            StoreError::Invariant(format!(
                "journal {} total {total} does not fit 64 bits",
                j.id
            ))
        })?);
    }
    let rows: Vec<_> = plan.journals.iter().zip(totals).collect();
    insert_rows(
        conn,
        backend,
        "inserting journal entries",
        &[
            "text", "text", "text", "text", "text", "bigint", "text", "text", "text", "bigint",
            "bigint", "text",
        ],
        "INSERT INTO erp_journal_entries (id, tenant_id, event_id, kind, currency, posted_at,
         document_type, document_id, memo, total_minor, line_count, erp_kind)",
        "",
        &rows,
        |v, (planned, total)| {
            let j = &planned.journal;
            // `erp_kind` says the journal is an ERP posting; one the ERP has no counterpart
            // for in the tenant's mode stays in the subledger only.
            let erp_kind = planned
                .route
                .as_ref()
                .filter(|_| !not_posted.contains(&j.id))
                .map(|r| r.kind().as_str().to_owned());
            v.push(j.id.to_string())
                .push(j.tenant_id.clone())
                .push(j.event_id.to_string())
                .push(j.kind.as_str().to_owned())
                .push(j.currency.code().to_owned())
                .push(j.posted_at)
                .push(j.document_type.to_owned())
                .push(j.document_id.clone())
                .push(j.memo.clone())
                .push(*total)
                .push(j.lines.len() as i64)
                .push(erp_kind);
        },
    )
    .await?;
    let lines: Vec<_> = plan
        .journals
        .iter()
        .flat_map(|planned| {
            let j = &planned.journal;
            j.lines
                .iter()
                .enumerate()
                .map(move |(i, l)| (j.id, i + 1, l))
        })
        .collect();
    insert_rows(
        conn,
        backend,
        "inserting journal lines",
        &["text", "bigint", "text", "bigint", "bigint"],
        "INSERT INTO erp_journal_lines (entry_id, line_no, account, debit_minor, credit_minor)",
        "",
        &lines,
        |v, (id, no, l)| {
            v.push(id.to_string())
                .push(*no as i64)
                .push(l.account.clone())
                .push(l.debit_minor)
                .push(l.credit_minor);
        },
    )
    .await
}

async fn insert_applications(
    conn: &mut AnyConnection,
    backend: Backend,
    plan: &Plan<'_>,
) -> Result<(), StoreError> {
    insert_rows(
        conn,
        backend,
        "inserting payment applications",
        &["text", "text", "text", "text", "bigint", "text", "bigint"],
        "INSERT INTO erp_applications (tenant_id, payment_id, invoice_id, currency, amount_minor,
         journal_id, applied_at)",
        "",
        &plan.applications,
        |v, a| {
            v.push(a.tenant_id.clone())
                .push(a.payment_id.clone())
                .push(a.invoice_id.clone())
                .push(a.currency.clone())
                .push(a.amount)
                .push(a.journal_id.clone())
                .push(a.applied_at);
        },
    )
    .await
}

async fn insert_conflicts(
    conn: &mut AnyConnection,
    backend: Backend,
    plan: &Plan<'_>,
) -> Result<(), StoreError> {
    insert_rows(
        conn,
        backend,
        "recording document conflicts",
        &["text", "text", "text", "text", "text"],
        "INSERT INTO erp_conflicts (tenant_id, event_id, event_type, document_id,
         existing_event_id)",
        "ON CONFLICT (tenant_id, event_id) DO NOTHING",
        &plan.conflicts,
        |v, c| {
            v.push(c.tenant_id.clone())
                .push(c.event_id.clone())
                .push(c.event_type.to_owned())
                .push(c.document_id.clone())
                .push(c.existing_event_id.clone());
        },
    )
    .await
}

/// One posting to insert.
#[derive(Debug)]
struct OutboxRow {
    id: String,
    tenant_id: String,
    erp_kind: &'static str,
    base_url: String,
    auth: String,
    rate: Option<i64>,
    external_id: String,
    document: String,
    status: PostingState,
    journal_kind: &'static str,
    document_kind: String,
    erp_account: String,
    route: String,
    config_version: String,
    last_error_class: Option<&'static str>,
    last_error: Option<String>,
    depends_on: Vec<String>,
}

/// The batch's postings, and the journals that have an ERP route but no posting.
#[derive(Debug, Default)]
struct Postings {
    rows: Vec<OutboxRow>,
    not_posted: HashSet<uuid::Uuid>,
}

/// Renders every routed journal of the plan. Pure. A journal its adapter cannot render (a
/// mapping problem the tenants file validation did not catch) still gets its posting, parked
/// as `failed` with class `mapping` for an operator, so the batch commits and reconcile shows it.
fn render_postings(plan: &Plan<'_>) -> Result<Postings, StoreError> {
    let mut out = Postings::default();
    // The route is the same for every journal of a tenant and configuration in a batch.
    let mut routes: HashMap<(&str, &str), (String, String)> = HashMap::new();
    for planned in &plan.journals {
        let Some(route) = &planned.route else {
            continue;
        };
        let journal = &planned.journal;
        if journal.lines.is_empty() {
            // A zero-amount document: recorded in the subledger, nothing for the ERP.
            out.not_posted.insert(journal.id);
            continue;
        }
        let ext = external_id(&journal.tenant_id, &journal.event_id, journal.kind);
        let rendered = match adapters::builtin(route.kind()) {
            Some(adapter) => adapter.render(&RenderInput {
                journal,
                route,
                external_id: &ext,
                customer_id: &planned.customer_id,
                invoice: planned.invoice.as_ref(),
            }),
            // No adapter yet: store the kind's journal shape and wait (not claimed).
            None => Ok(Rendered::Document(Document {
                kind: "legacy".to_owned(),
                body: payloads::render(journal, route, &ext)
                    .unwrap_or_else(|| serde_json::json!({})),
                depends_on: Vec::new(),
            })),
        };
        let (status, document, error) = match rendered {
            Ok(Rendered::Document(document)) => (PostingState::Pending, document, None),
            Ok(Rendered::NotPosted { .. }) => {
                out.not_posted.insert(journal.id);
                continue;
            }
            Err(e) => (
                PostingState::Failed,
                Document {
                    kind: "unrendered".to_owned(),
                    body: serde_json::json!({}),
                    depends_on: Vec::new(),
                },
                Some(e.to_string()),
            ),
        };
        let target = &route.target;
        let cached = routes
            .entry((journal.tenant_id.as_str(), target.config_version.as_str()))
            .or_insert_with(|| {
                (
                    serde_json::to_string(&route.posting_route()).unwrap_or_default(),
                    serde_json::to_string(&target.auth).unwrap_or_default(),
                )
            });
        out.rows.push(OutboxRow {
            id: journal.id.to_string(),
            tenant_id: journal.tenant_id.clone(),
            erp_kind: route.kind().as_str(),
            base_url: target.base_url.clone(),
            auth: cached.1.clone(),
            rate: route.rate_limit_per_sec.map(i64::from),
            external_id: ext,
            document: document.body.to_string(),
            status,
            journal_kind: journal.kind.as_str(),
            document_kind: document.kind,
            erp_account: target.account.clone(),
            route: cached.0.clone(),
            config_version: target.config_version.clone(),
            last_error_class: error.as_ref().map(|_| "mapping"),
            last_error: error,
            depends_on: document.depends_on,
        });
    }
    Ok(out)
}

async fn insert_outbox(
    conn: &mut AnyConnection,
    backend: Backend,
    postings: &Postings,
) -> Result<(), StoreError> {
    let now = now_micros();
    insert_rows(
        conn,
        backend,
        "enqueueing erp postings",
        &[
            "text", "text", "text", "text", "text", "text", "bigint", "text", "text", "text",
            "bigint", "bigint", "bigint", "text", "text", "text", "text", "text", "text", "text",
            "text", "bigint", "text", "bigint",
        ],
        "INSERT INTO erp_outbox (id, tenant_id, journal_id, erp_kind, endpoint, credential,
         rate_limit_per_sec, idempotency_key, payload, status, attempts, next_attempt_at,
         created_at, external_id, journal_kind, document_kind, erp_account, route,
         config_version, last_error_class, last_error, indefinite, history, updated_at)",
        "",
        &postings.rows,
        |v, r| {
            v.push(r.id.clone())
                .push(r.tenant_id.clone())
                .push(r.id.clone())
                .push(r.erp_kind.to_owned())
                .push(r.base_url.clone())
                .push(r.auth.clone())
                .push(r.rate)
                .push(r.external_id.clone())
                .push(r.document.clone())
                .push(r.status.as_str().to_owned())
                .push(0_i64)
                .push(now)
                .push(now)
                .push(r.external_id.clone())
                .push(r.journal_kind.to_owned())
                .push(r.document_kind.clone())
                .push(r.erp_account.clone())
                .push(r.route.clone())
                .push(r.config_version.clone())
                .push(r.last_error_class.map(str::to_owned))
                .push(r.last_error.clone())
                .push(0_i64)
                .push("[]".to_owned())
                .push(now);
        },
    )
    .await?;
    let dependencies: Vec<(&str, &str)> = postings
        .rows
        .iter()
        .flat_map(|r| r.depends_on.iter().map(|d| (r.id.as_str(), d.as_str())))
        .collect();
    insert_rows(
        conn,
        backend,
        "recording erp posting dependencies",
        &["text", "text"],
        "INSERT INTO erp_outbox_dependencies (outbox_id, depends_on)",
        "ON CONFLICT (outbox_id, depends_on) DO NOTHING",
        &dependencies,
        |v, (id, on)| {
            v.push((*id).to_owned()).push((*on).to_owned());
        },
    )
    .await
}

/// Open balance of an invoice recomputed from its source rows (`d` is the invoice): total less
/// applications, credit memos and a void.
const INVOICE_OPEN: &str = "d.total_minor
    - COALESCE((SELECT CAST(SUM(a.amount_minor) AS BIGINT) FROM erp_applications a
                WHERE a.tenant_id = d.tenant_id AND a.invoice_id = d.doc_id), 0)
    - COALESCE((SELECT CAST(SUM(c.total_minor) AS BIGINT) FROM erp_ar_documents c
                WHERE c.tenant_id = d.tenant_id AND c.doc_type IN ('credit_memo', 'invoice_void')
                  AND c.applies_to = d.doc_id), 0)";

/// Unapplied amount of a payment recomputed from its applications and refunds (`d` is the
/// payment).
const PAYMENT_UNAPPLIED: &str = "d.amount_minor
    - COALESCE((SELECT CAST(SUM(a.amount_minor) AS BIGINT) FROM erp_applications a
                WHERE a.tenant_id = d.tenant_id AND a.payment_id = d.payment_id), 0)
    - COALESCE((SELECT CAST(SUM(r.total_minor) AS BIGINT) FROM erp_ar_documents r
                WHERE r.tenant_id = d.tenant_id AND r.doc_type = 'refund'
                  AND r.applies_to = d.payment_id), 0)";

/// Recomputes balances from the source rows and checks them against the plan; then stores
/// the planned balance where the stored one differs (invoices and payments that existed
/// before this batch; new rows were inserted with it).
async fn verify_balances(
    conn: &mut AnyConnection,
    backend: Backend,
    plan: &Plan<'_>,
) -> Result<(), StoreError> {
    let invoices = Balance {
        what: "invoice open balance",
        table: "erp_ar_documents",
        id: "doc_id",
        column: "open_minor",
        recomputed: INVOICE_OPEN,
        filter: "d.doc_type = 'invoice' AND ",
    };
    invoices.verify(conn, backend, &plan.invoice_open).await?;
    let payments = Balance {
        what: "unapplied payment amount",
        table: "erp_payments",
        id: "payment_id",
        column: "unapplied_minor",
        recomputed: PAYMENT_UNAPPLIED,
        filter: "",
    };
    payments
        .verify(conn, backend, &plan.payment_unapplied)
        .await
}

/// A stored balance and how to recompute it (`d` is the row).
struct Balance {
    what: &'static str,
    table: &'static str,
    id: &'static str,
    column: &'static str,
    recomputed: &'static str,
    filter: &'static str,
}

impl Balance {
    /// Checks the recomputed balance of every planned key, then stores it where it moved.
    async fn verify(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        planned: &HashMap<Key, i128>,
    ) -> Result<(), StoreError> {
        let keys: Vec<Key> = dedup(planned.keys().cloned());
        if keys.is_empty() {
            return Ok(());
        }
        let Self {
            what,
            table,
            id,
            column,
            recomputed,
            filter,
        } = self;
        let rows = fetch_by_keys(
            conn,
            backend,
            "recomputing balances",
            &format!(
                "SELECT d.tenant_id, d.{id}, {recomputed}, d.{column} FROM {table} d
                 WHERE {filter}(d.tenant_id, d.{id}) IN ("
            ),
            ")",
            &keys,
        )
        .await?;
        let stale = check(rows, planned, what, "recomputing balances")?;
        if stale.is_empty() {
            return Ok(());
        }
        let rows = fetch_by_keys(
            conn,
            backend,
            "storing balances",
            &format!(
                "UPDATE {table} AS d SET {column} = {recomputed}
                 WHERE {filter}(d.tenant_id, d.{id}) IN ("
            ),
            &format!(") RETURNING tenant_id, {id}, {column}, {column}"),
            &stale,
        )
        .await?;
        check_subset(rows, stale.len(), planned, what, "storing balances")?;
        Ok(())
    }
}

/// Checks rows of (tenant, id, recomputed, stored) against the plan: every planned key is
/// there and its recomputed balance is the planned one. Returns the keys whose stored balance
/// differs from the plan (to be updated).
fn check(
    rows: Vec<AnyRow>,
    expected: &HashMap<Key, i128>,
    what: &str,
    action: &'static str,
) -> Result<Vec<Key>, StoreError> {
    if rows.len() != expected.len() {
        return Err(StoreError::Invariant(format!(
            "{what}: {} rows found for {} planned",
            rows.len(),
            expected.len()
        )));
    }
    check_subset(rows, expected.len(), expected, what, action)
}

/// [`check`] for rows of a subset of the planned keys (`count` of them).
fn check_subset(
    rows: Vec<AnyRow>,
    count: usize,
    expected: &HashMap<Key, i128>,
    what: &str,
    action: &'static str,
) -> Result<Vec<Key>, StoreError> {
    if rows.len() != count {
        return Err(StoreError::Invariant(format!(
            "{what}: {} rows found for {count} expected",
            rows.len()
        )));
    }
    let mut stale = Vec::new();
    for row in rows {
        let k: Key = (
            row.try_get(0).map_err(corrupt(action))?,
            row.try_get(1).map_err(corrupt(action))?,
        );
        let recomputed = i128::from(row.try_get::<i64, _>(2).map_err(corrupt(action))?);
        let stored = i128::from(row.try_get::<i64, _>(3).map_err(corrupt(action))?);
        if expected.get(&k) != Some(&recomputed) {
            return Err(StoreError::Invariant(format!(
                "{what} of {}/{} is {recomputed} after recomputation, planned {:?}",
                k.0,
                k.1,
                expected.get(&k)
            )));
        }
        if stored != recomputed {
            stale.push(k);
        }
    }
    Ok(stale)
}
