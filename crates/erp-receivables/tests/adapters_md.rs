//! `ADAPTERS.md` shows exactly what the adapters render for the example events: run with
//! `PRINT_EXAMPLES=1 cargo test -p ledgerflow-erp-receivables --test adapters_md -- --nocapture`
//! to print them.

mod common;

use common::*;
use ledgerflow_erp_receivables::{
    ErpRoute, InvoiceRef, JournalKind, RenderInput, Rendered, adapters, external_id, map_event,
};
use ledgerflow_tenants::{ErpKind, ErpMode, SecretRef};

/// (title, kind, mode, journal): the example invoice (event 1), its payment (event 2, applied
/// in full), a credit memo (event 3), a void of the invoice (event 4: its journal reversed) and
/// a refund of 5.00 of the payment with 0.15 of the fee given back (event 5).
const EXAMPLES: &[(&str, ErpKind, ErpMode, JournalKind)] = &[
    (
        "netsuite journal: invoice",
        ErpKind::Netsuite,
        ErpMode::Journal,
        JournalKind::Invoice,
    ),
    (
        "netsuite subledger: invoice",
        ErpKind::Netsuite,
        ErpMode::Subledger,
        JournalKind::Invoice,
    ),
    (
        "netsuite subledger: receipt",
        ErpKind::Netsuite,
        ErpMode::Subledger,
        JournalKind::Receipt,
    ),
    (
        "netsuite subledger: application",
        ErpKind::Netsuite,
        ErpMode::Subledger,
        JournalKind::Application,
    ),
    (
        "netsuite subledger: credit memo",
        ErpKind::Netsuite,
        ErpMode::Subledger,
        JournalKind::CreditMemo,
    ),
    (
        "dynamics365 journal: invoice",
        ErpKind::Dynamics365,
        ErpMode::Journal,
        JournalKind::Invoice,
    ),
    (
        "dynamics365 subledger: receipt",
        ErpKind::Dynamics365,
        ErpMode::Subledger,
        JournalKind::Receipt,
    ),
    (
        "s4hana journal: invoice",
        ErpKind::S4hana,
        ErpMode::Journal,
        JournalKind::Invoice,
    ),
    (
        "s4hana subledger: receipt",
        ErpKind::S4hana,
        ErpMode::Subledger,
        JournalKind::Receipt,
    ),
    (
        "s4hana subledger: application",
        ErpKind::S4hana,
        ErpMode::Subledger,
        JournalKind::Application,
    ),
    (
        "oracle_fusion journal: receipt",
        ErpKind::OracleFusion,
        ErpMode::Journal,
        JournalKind::Receipt,
    ),
    (
        "oracle_fusion subledger: invoice",
        ErpKind::OracleFusion,
        ErpMode::Subledger,
        JournalKind::Invoice,
    ),
    (
        "oracle_fusion subledger: credit memo",
        ErpKind::OracleFusion,
        ErpMode::Subledger,
        JournalKind::CreditMemo,
    ),
    (
        "netsuite journal: invoice void",
        ErpKind::Netsuite,
        ErpMode::Journal,
        JournalKind::InvoiceVoid,
    ),
    (
        "netsuite subledger: refund",
        ErpKind::Netsuite,
        ErpMode::Subledger,
        JournalKind::Refund,
    ),
    (
        "dynamics365 subledger: invoice void",
        ErpKind::Dynamics365,
        ErpMode::Subledger,
        JournalKind::InvoiceVoid,
    ),
    (
        "s4hana journal: refund",
        ErpKind::S4hana,
        ErpMode::Journal,
        JournalKind::Refund,
    ),
    (
        "oracle_fusion subledger: invoice void",
        ErpKind::OracleFusion,
        ErpMode::Subledger,
        JournalKind::InvoiceVoid,
    ),
];

/// The refund of the example: 5.00 of payment pay-1, 0.15 of the fee given back.
fn refund() -> ledgerflow_core::Event {
    ledgerflow_core::Event::PaymentRefunded(ledgerflow_core::PaymentRefunded {
        event_id: eid(5),
        tenant_id: "acme".into(),
        occurred_at: 1_700_000_500_000_000,
        correlation_id: "c".into(),
        causation_id: None,
        source: "payments-service".into(),
        refund_id: "rf-1".into(),
        payment_id: "pay-1".into(),
        invoice_id: Some("inv-1".into()),
        currency: "USD".into(),
        amount_minor: 500,
        fee_refund_minor: Some(15),
        refunded_at: 1_700_000_500_000_000,
    })
}

fn render(kind: ErpKind, mode: ErpMode, journal_kind: JournalKind) -> String {
    let mut t = tenant(
        "acme",
        Some((
            kind,
            "https://erp.example".into(),
            SecretRef::Env { env: "S".into() },
        )),
        None,
    );
    if let Some(erp) = &mut t.erp {
        erp.mode = mode;
        if let Some(ns) = &mut erp.netsuite {
            ns.items.insert("2200".into(), "590".into());
        }
    }
    let event = match journal_kind {
        JournalKind::Invoice | JournalKind::InvoiceVoid => invoice("acme", 1, "inv-1", 2_550, 266),
        JournalKind::Refund => refund(),
        JournalKind::Receipt | JournalKind::Application => {
            payment("acme", 2, "pay-1", "inv-1", 2_816, 82)
        }
        JournalKind::CreditMemo => credit_memo("acme", 3, "cm-1", "inv-1", 500, 36),
    };
    let effect = map_event(&envelope(event), &t).unwrap();
    let route: ErpRoute = effect.route.unwrap();
    let mut journal = effect.posting.journal().unwrap().clone();
    if journal_kind == JournalKind::Application {
        journal.kind = JournalKind::Application;
        journal.id = ledgerflow_erp_receivables::journal_id(&journal.event_id, journal.kind);
        journal.memo = "payment pay-1 applied to invoice inv-1".into();
        journal.lines = vec![
            ledgerflow_erp_receivables::JournalLine::debit("2400", 2_816),
            ledgerflow_erp_receivables::JournalLine::credit("1100", 2_816),
        ];
    }
    if journal_kind == JournalKind::InvoiceVoid {
        // What the writer plans for the void (event 4) of the stored invoice: its lines with
        // debit and credit swapped, dated at the void, naming the original's external id.
        let original = external_id("acme", &journal.event_id, JournalKind::Invoice);
        journal.kind = JournalKind::InvoiceVoid;
        journal.event_id = ledgerflow_core::EventId::parse(&eid(4)).unwrap();
        journal.id = ledgerflow_erp_receivables::journal_id(&journal.event_id, journal.kind);
        journal.posted_at = 1_700_000_400_000_000;
        journal.memo = format!("void of invoice INV-inv-1 (reverses {original}): issued_in_error");
        journal.lines = journal
            .lines
            .iter()
            .map(|l| ledgerflow_erp_receivables::JournalLine {
                account: l.account.clone(),
                debit_minor: l.credit_minor,
                credit_minor: l.debit_minor,
            })
            .collect();
    }
    let invoice_ref = InvoiceRef {
        invoice_id: "inv-1".into(),
        event_id: Some(ledgerflow_core::EventId::parse(&eid(1)).unwrap()),
    };
    let ext = external_id("acme", &journal.event_id, journal.kind);
    let input = RenderInput {
        journal: &journal,
        route: &route,
        external_id: &ext,
        customer_id: "cus-1",
        invoice: Some(&invoice_ref),
    };
    match adapters::builtin(kind).unwrap().render(&input).unwrap() {
        Rendered::Document(d) => format!(
            "document kind `{}`{}\n\n```json\n{}\n```",
            d.kind,
            if d.depends_on.is_empty() {
                String::new()
            } else {
                format!(", waits for {} postings", d.depends_on.len())
            },
            serde_json::to_string_pretty(&d.body).unwrap()
        ),
        Rendered::NotPosted { reason } => format!("not posted: {reason}"),
    }
}

#[test]
fn adapters_md_shows_the_rendered_examples() {
    let doc = include_str!("../ADAPTERS.md");
    let mut missing = Vec::new();
    for (title, kind, mode, journal) in EXAMPLES {
        let text = render(*kind, *mode, *journal);
        if std::env::var_os("PRINT_EXAMPLES").is_some() {
            println!("#### {title}\n\n{text}\n");
        }
        if !doc.contains(&text) {
            missing.push(*title);
        }
    }
    assert!(
        missing.is_empty(),
        "ADAPTERS.md lacks the examples {missing:?}"
    );
}
