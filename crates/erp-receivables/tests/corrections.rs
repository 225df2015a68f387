//! Corrections through the real batch path (map, plan, write, verify) on SQLite and Postgres:
//! voids post the reversal of the invoice's journal, refunds draw on a payment's unapplied cash,
//! and what the stored state does not allow is refused deterministically and recorded.

mod common;

use common::*;
use ledgerflow_core::{Event, InvoiceVoided, PaymentRefunded};
use ledgerflow_erp_receivables::{
    JournalKind, ReconcileOptions, ReconcileReport, ReconcileSource, RefusedCorrection,
    external_id, journal_id, reconcile,
};
use ledgerflow_store::Backend;
use ledgerflow_tenants::{ErpKind, SecretRef};
use sqlx::Row;

per_backend!(
    invoice_payment_refund_void_balance_and_post,
    refusals_are_recorded_and_post_nothing,
    a_void_in_the_batch_of_its_invoice_and_a_refund_of_a_held_payment,
    reconcile_counts_voids_and_refunds_and_lists_refusals,
);

fn void(n: u64, invoice_id: &str) -> Event {
    Event::InvoiceVoided(InvoiceVoided {
        event_id: eid(n),
        tenant_id: "acme".into(),
        occurred_at: 1_700_000_300_000_000 + n as i64,
        correlation_id: "c".into(),
        causation_id: None,
        source: "billing-api".into(),
        invoice_id: invoice_id.into(),
        reason: "issued_in_error".into(),
        voided_at: 1_700_000_300_000_000 + n as i64,
    })
}

fn refund(n: u64, refund_id: &str, payment_id: &str, amount: i64, fee_back: Option<i64>) -> Event {
    Event::PaymentRefunded(PaymentRefunded {
        event_id: eid(n),
        tenant_id: "acme".into(),
        occurred_at: 1_700_000_400_000_000 + n as i64,
        correlation_id: "c".into(),
        causation_id: None,
        source: "payments-service".into(),
        refund_id: refund_id.into(),
        payment_id: payment_id.into(),
        invoice_id: None,
        currency: "USD".into(),
        amount_minor: amount,
        fee_refund_minor: fee_back,
        refunded_at: 1_700_000_400_000_000 + n as i64,
    })
}

fn netsuite_tenant() -> ledgerflow_tenants::TenantConfig {
    tenant(
        "acme",
        Some((
            ErpKind::Netsuite,
            "http://127.0.0.1:9".into(),
            SecretRef::Env { env: "S".into() },
        )),
        None,
    )
}

async fn account_balance(db: &TestDb, account: &str) -> i64 {
    db.scalar(&format!(
        "SELECT CAST(SUM(debit_minor - credit_minor) AS BIGINT) FROM erp_journal_lines
         WHERE account = '{account}'"
    ))
    .await
}

/// (account, debit, credit) of a journal, in line order.
async fn lines(db: &TestDb, journal: &str) -> Vec<(String, i64, i64)> {
    sqlx::query(
        "SELECT account, debit_minor, credit_minor FROM erp_journal_lines WHERE entry_id = $1
         ORDER BY line_no",
    )
    .bind(journal.to_owned())
    .fetch_all(&db.pool)
    .await
    .expect("lines")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn id(n: u64, kind: JournalKind) -> String {
    journal_id(&ledgerflow_core::EventId::parse(&eid(n)).unwrap(), kind).to_string()
}

/// (event_type, document_id, existing_event_id) of every conflict row, sorted.
async fn conflicts(db: &TestDb) -> Vec<(String, String, String)> {
    sqlx::query(
        "SELECT event_type, document_id, existing_event_id FROM erp_conflicts
         ORDER BY event_type, document_id, existing_event_id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("conflicts")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

async fn invoice_payment_refund_void_balance_and_post(backend: Backend) {
    let db = TestDb::create(backend).await;
    let t = [netsuite_tenant()];
    // inv-1 10,725 paid by pay-1 120.00 (fee 3.00): 1,275 over-paid, unapplied cash.
    db.write(
        &[
            invoice("acme", 1, "inv-1", 10_000, 725),
            payment("acme", 2, "pay-1", "inv-1", 12_000, 300),
            invoice("acme", 3, "inv-2", 2_000, 145),
        ],
        &t,
    )
    .await
    .unwrap();
    assert_eq!(db.unapplied("acme", "pay-1").await, 1_275);
    assert_eq!(db.open_balance("acme", "inv-2").await, 2_145);

    // A refund of 10.00 of the customer credit (0.30 of the fee back), and a void of inv-2.
    db.write(
        &[
            refund(4, "rf-1", "pay-1", 1_000, Some(30)),
            void(5, "inv-2"),
        ],
        &t,
    )
    .await
    .unwrap();

    // Open balances and unapplied cash, recomputed by the writer and stored.
    assert_eq!(db.open_balance("acme", "inv-1").await, 0);
    assert_eq!(db.open_balance("acme", "inv-2").await, 0);
    assert_eq!(db.unapplied("acme", "pay-1").await, 275);

    // Every journal balances; the void is the invoice's journal with the sides swapped.
    assert_eq!(db.unbalanced_journals().await, 0);
    let original = lines(&db, &id(3, JournalKind::Invoice)).await;
    let reversal = lines(&db, &id(5, JournalKind::InvoiceVoid)).await;
    assert_eq!(original.len(), reversal.len());
    for (o, r) in original.iter().zip(&reversal) {
        assert_eq!((&o.0, o.1, o.2), (&r.0, r.2, r.1));
    }
    assert_eq!(reversal[0], ("1100".into(), 0, 2_145));
    assert_eq!(
        lines(&db, &id(4, JournalKind::Refund)).await,
        [
            ("2400".into(), 1_000, 0),
            ("1010".into(), 0, 970),
            ("6100".into(), 0, 30)
        ]
    );
    // The void references the original: document, memo and the posting it waits for.
    let row = sqlx::query(
        "SELECT kind, document_type, document_id, memo, posted_at FROM erp_journal_entries
         WHERE id = $1",
    )
    .bind(id(5, JournalKind::InvoiceVoid))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let invoice_event = ledgerflow_core::EventId::parse(&eid(3)).unwrap();
    assert_eq!(row.get::<String, _>(0), "invoice_void");
    assert_eq!(row.get::<String, _>(1), "invoice");
    assert_eq!(row.get::<String, _>(2), "inv-2");
    assert!(
        row.get::<String, _>(3).contains(&external_id(
            "acme",
            &invoice_event,
            JournalKind::Invoice
        )),
        "{}",
        row.get::<String, _>(3)
    );
    assert_eq!(row.get::<i64, _>(4), 1_700_000_300_000_005);

    // The ledger: receivable = open balances (0), unapplied cash = the customer credit left.
    assert_eq!(account_balance(&db, "1100").await, 0);
    assert_eq!(account_balance(&db, "2400").await, -275);
    assert_eq!(account_balance(&db, "1010").await, 11_700 - 970);
    assert_eq!(account_balance(&db, "6100").await, 300 - 30);
    assert_eq!(account_balance(&db, "2200").await, -725);
    assert_eq!(
        account_balance(&db, "4000").await + account_balance(&db, "4100").await,
        -10_000
    );

    // Documents: a void and a refund, each pointing at what it corrects.
    let docs: Vec<(String, String, i64, i64, Option<String>)> = sqlx::query(
        "SELECT doc_type, doc_id, total_minor, open_minor, applies_to FROM erp_ar_documents
         WHERE doc_type IN ('invoice_void', 'refund') ORDER BY doc_type",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect();
    assert_eq!(
        docs,
        [
            (
                "invoice_void".into(),
                "inv-2".into(),
                2_145,
                0,
                Some("inv-2".into())
            ),
            (
                "refund".into(),
                "rf-1".into(),
                1_000,
                0,
                Some("pay-1".into())
            ),
        ]
    );

    // Postings with the new kinds and their stable external ids; the void waits for the
    // invoice's posting.
    let postings: Vec<(String, String, String)> = sqlx::query(
        "SELECT journal_kind, external_id, document_kind FROM erp_outbox
         WHERE journal_kind IN ('invoice_void', 'refund') ORDER BY journal_kind",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    assert_eq!(
        postings,
        [
            (
                "invoice_void".into(),
                format!("lf-acme-{}-void", eid(5)),
                "journalEntry".into()
            ),
            (
                "refund".into(),
                format!("lf-acme-{}-rfd", eid(4)),
                "journalEntry".into()
            ),
        ]
    );
    let waits: Vec<String> =
        sqlx::query("SELECT depends_on FROM erp_outbox_dependencies WHERE outbox_id = $1")
            .bind(id(5, JournalKind::InvoiceVoid))
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(waits, [id(3, JournalKind::Invoice)]);
    assert!(conflicts(&db).await.is_empty());
    db.drop_db().await;
}

async fn refusals_are_recorded_and_post_nothing(backend: Backend) {
    let db = TestDb::create(backend).await;
    let t = [netsuite_tenant()];
    db.write(
        &[
            invoice("acme", 1, "inv-1", 10_000, 725),
            payment("acme", 2, "pay-1", "inv-1", 11_000, 0),
            invoice("acme", 3, "inv-2", 2_000, 145),
            void(4, "inv-2"),
            refund(5, "rf-1", "pay-1", 200, None),
        ],
        &t,
    )
    .await
    .unwrap();
    assert_eq!(db.unapplied("acme", "pay-1").await, 75);
    let journals = db.scalar("SELECT COUNT(*) FROM erp_journal_entries").await;
    let postings = db.scalar("SELECT COUNT(*) FROM erp_outbox").await;

    db.write(
        &[
            // Paid invoice: a void would leave the payment applied to nothing.
            void(6, "inv-1"),
            // Never posted.
            void(7, "inv-9"),
            // Voided already (another event).
            void(8, "inv-2"),
            // More than the 0.75 left unapplied.
            refund(9, "rf-2", "pay-1", 76, None),
            // Unknown payment.
            refund(10, "rf-3", "pay-9", 1, None),
            // The same refund id under a new event.
            refund(11, "rf-1", "pay-1", 1, None),
        ],
        &t,
    )
    .await
    .unwrap();
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM erp_journal_entries").await,
        journals
    );
    assert_eq!(db.scalar("SELECT COUNT(*) FROM erp_outbox").await, postings);
    assert_eq!(db.open_balance("acme", "inv-1").await, 0);
    assert_eq!(db.open_balance("acme", "inv-2").await, 0);
    assert_eq!(db.unapplied("acme", "pay-1").await, 75);
    assert_eq!(
        conflicts(&db).await,
        [
            (
                "invoice_voided".into(),
                "inv-1".into(),
                "refused:invoice_settled".into()
            ),
            ("invoice_voided".into(), "inv-2".into(), eid(4)),
            (
                "invoice_voided".into(),
                "inv-9".into(),
                "refused:invoice_unknown".into()
            ),
            ("payment_refunded".into(), "rf-1".into(), eid(5)),
            (
                "payment_refunded".into(),
                "rf-2".into(),
                "refused:exceeds_unapplied".into()
            ),
            (
                "payment_refunded".into(),
                "rf-3".into(),
                "refused:payment_unknown".into()
            ),
        ]
    );
    // The refund within what is left goes through afterwards.
    db.write(&[refund(12, "rf-4", "pay-1", 75, None)], &t)
        .await
        .unwrap();
    assert_eq!(db.unapplied("acme", "pay-1").await, 0);
    assert_eq!(account_balance(&db, "2400").await, 0);
    assert_eq!(db.unbalanced_journals().await, 0);
    db.drop_db().await;
}

async fn a_void_in_the_batch_of_its_invoice_and_a_refund_of_a_held_payment(backend: Backend) {
    let db = TestDb::create(backend).await;
    let t = [netsuite_tenant()];
    // pay-3 arrives before its invoice (held), 3.00 of it is refunded, then inv-4 arrives in a
    // later batch and takes only the 5.00 left.
    db.write(
        &[
            invoice("acme", 1, "inv-3", 3_000, 0),
            void(2, "inv-3"),
            payment("acme", 3, "pay-3", "inv-4", 800, 0),
            refund(4, "rf-3", "pay-3", 300, None),
        ],
        &t,
    )
    .await
    .unwrap();
    assert_eq!(db.open_balance("acme", "inv-3").await, 0);
    assert_eq!(db.unapplied("acme", "pay-3").await, 500);
    db.write(&[invoice("acme", 5, "inv-4", 1_000, 0)], &t)
        .await
        .unwrap();
    assert_eq!(db.open_balance("acme", "inv-4").await, 500);
    assert_eq!(db.unapplied("acme", "pay-3").await, 0);
    assert_eq!(
        db.applications().await,
        [("acme".into(), "pay-3".into(), "inv-4".into(), 500)]
    );
    assert_eq!(db.unbalanced_journals().await, 0);
    assert_eq!(account_balance(&db, "1100").await, 500);
    assert_eq!(account_balance(&db, "2400").await, 0);
    assert_eq!(account_balance(&db, "1010").await, 500);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM erp_journal_entries WHERE kind = 'invoice_void'")
            .await,
        1
    );
    db.drop_db().await;
}

async fn audit_report(db: &TestDb) -> ReconcileReport {
    reconcile(
        &db.pool,
        db.backend,
        &ReconcileOptions::new(ReconcileSource::AuditLog),
    )
    .await
    .expect("reconcile")
}

/// Reconcile against the audit log knows the corrections: a void takes the invoice's open
/// balance to 0, a refund the payment's unapplied cash down, both must have their journal, and
/// a refused correction is listed as refused (not as a double posting, not as missing) without
/// making the report unclean. Tampering with a correction's rows is found.
async fn reconcile_counts_voids_and_refunds_and_lists_refusals(backend: Backend) {
    let db = TestDb::create(backend).await;
    let t = [netsuite_tenant()];
    let events = [
        // inv-1 10,725 over-paid by pay-1 120.00: 1,275 unapplied.
        invoice("acme", 1, "inv-1", 10_000, 725),
        payment("acme", 2, "pay-1", "inv-1", 12_000, 300),
        invoice("acme", 3, "inv-2", 2_000, 145),
        // 10.00 of the customer credit refunded, inv-2 voided.
        refund(4, "rf-1", "pay-1", 1_000, Some(30)),
        void(5, "inv-2"),
        // inv-1 is paid: its void is refused.
        void(6, "inv-1"),
        // Beyond the 2.75 left: refused.
        refund(7, "rf-2", "pay-1", 276, None),
    ];
    db.write(&events[..3], &t).await.unwrap();
    db.write(&events[3..], &t).await.unwrap();
    db.audit_applied(&events).await;
    assert_eq!(db.open_balance("acme", "inv-2").await, 0);
    assert_eq!(db.unapplied("acme", "pay-1").await, 275);

    let report = audit_report(&db).await;
    assert!(report.is_clean(), "{report:#?}");
    assert!(report.clean);
    let acme = &report.tenants["acme"];
    for d in [&acme.invoices, &acme.payments, &acme.credit_memos] {
        assert_eq!(
            (d.missing_count, d.extra_count, d.mismatched_count),
            (0, 0, 0),
            "{acme:#?}"
        );
    }
    assert!(acme.double_postings.is_empty(), "{acme:#?}");
    assert_eq!(
        acme.refused,
        [
            RefusedCorrection {
                event_type: "invoice_voided".into(),
                event_id: eid(6),
                document_id: "inv-1".into(),
                reason: "invoice_settled".into(),
            },
            RefusedCorrection {
                event_type: "payment_refunded".into(),
                event_id: eid(7),
                document_id: "rf-2".into(),
                reason: "exceeds_unapplied".into(),
            },
        ]
    );
    assert_eq!(acme.refused_count, 2);
    // Counts and totals are of the originals: the void and the refund are not invoices or
    // payments of their own.
    assert_eq!(acme.invoices.expected_count, Some(2));
    assert_eq!(acme.invoices.posted_count, 2);
    assert_eq!(acme.invoices.posted_total["USD"], "128.70");
    assert_eq!(acme.payments.expected_count, Some(1));
    assert_eq!(acme.payments.posted_count, 1);
    assert_eq!(acme.unapplied_cash["USD"], "2.75");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["tenants"]["acme"]["refused"][0]["reason"],
        "invoice_settled"
    );

    // The void's journal disappears: the void event misses its journal and the void document
    // points at nothing.
    let void_journal = id(5, JournalKind::InvoiceVoid);
    for sql in [
        "DELETE FROM erp_journal_lines WHERE entry_id = $1",
        "DELETE FROM erp_journal_entries WHERE id = $1",
    ] {
        sqlx::query(sql)
            .bind(void_journal.clone())
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let report = audit_report(&db).await;
    assert!(!report.is_clean());
    let acme = &report.tenants["acme"];
    assert_eq!(acme.invoices.missing, [eid(5)], "{acme:#?}");
    assert_eq!(acme.invoices.mismatched, ["inv-2"], "{acme:#?}");
    assert_eq!(acme.payments.mismatched_count, 0, "{acme:#?}");
    assert_eq!(acme.refused_count, 2);

    // The refund's document disappears: pay-1's unapplied cash no longer follows.
    sqlx::query("DELETE FROM erp_ar_documents WHERE doc_type = 'refund' AND doc_id = 'rf-1'")
        .execute(&db.pool)
        .await
        .unwrap();
    // The refund's event disappears from the audit log: its journal is extra.
    sqlx::query("DELETE FROM audit_log WHERE event_id = $1")
        .bind(eid(4))
        .execute(&db.pool)
        .await
        .unwrap();
    // A journal appears for the refused void of inv-1: posted although refused.
    sqlx::query(
        "INSERT INTO erp_journal_entries (id, tenant_id, event_id, kind, currency, posted_at,
             document_type, document_id, memo, total_minor, line_count)
         SELECT 'forged', tenant_id, $1, 'invoice_void', currency, posted_at, document_type,
                document_id, memo, 0, 0
         FROM erp_journal_entries WHERE id = $2",
    )
    .bind(eid(6))
    .bind(id(1, JournalKind::Invoice))
    .execute(&db.pool)
    .await
    .unwrap();
    let report = audit_report(&db).await;
    let acme = &report.tenants["acme"];
    assert_eq!(acme.payments.mismatched, ["pay-1"], "{acme:#?}");
    assert_eq!(acme.payments.extra, [eid(4)], "{acme:#?}");
    assert_eq!(acme.invoices.extra, [eid(6)], "{acme:#?}");
    assert!(!report.is_clean());
    db.drop_db().await;
}
