//! The billing platform's document export: one CSV row per distinct invoice, payment and credit
//! memo, as a billing system would hand finance for reconciliation
//! (`ledgerflow reconcile --source billing.csv`). Duplicates (re-sent events) are not
//! documents and produce no row.
//!
//! ```text
//! tenant_id,document_type,document_id,currency,amount,fee,issued_at
//! t001,invoice,inv_...,USD,1234.56,,2026-11-02T10:00:00.000000Z
//! t001,payment,pay_...,USD,1000.00,23.10,2026-11-03T08:30:00.000000Z
//! t001,credit_memo,cm_...,USD,12.34,,2026-11-04T12:00:00.000000Z
//! ```
//!
//! `amount` is the document total (invoice and credit memo) or the gross captured amount
//! (payment), an exact decimal with the currency's exponent; `fee` is the payment's processor
//! fee (empty otherwise); `issued_at` is the issue or capture time, RFC 3339 UTC.

use ledgerflow_core::{Currency, Event, format_minor, rfc3339_micros};

use crate::GeneratedEvent;

/// The header line.
pub const BILLING_CSV_HEADER: &str =
    "tenant_id,document_type,document_id,currency,amount,fee,issued_at";

/// The export row of a generated item, or `None` for duplicates and non-document events.
pub fn billing_csv_row(generated: &GeneratedEvent) -> Option<String> {
    if generated.duplicate {
        return None;
    }
    let (doc_type, id, currency, amount, fee, at) = match &generated.event {
        Event::InvoiceFinalized(e) => (
            "invoice",
            &e.invoice_id,
            &e.currency,
            e.total_minor,
            None,
            e.issued_at,
        ),
        Event::PaymentCaptured(e) => (
            "payment",
            &e.payment_id,
            &e.currency,
            e.amount_minor,
            Some(e.fee_minor),
            e.captured_at,
        ),
        Event::CreditMemoIssued(e) => (
            "credit_memo",
            &e.credit_memo_id,
            &e.currency,
            e.total_minor,
            None,
            e.issued_at,
        ),
        _ => return None,
    };
    let exponent = Currency::parse(currency).ok()?.exponent();
    let fee = fee.map_or(String::new(), |f| format_minor(i128::from(f), exponent));
    Some(format!(
        "{},{doc_type},{},{currency},{},{fee},{}",
        csv_field(generated.tenant_id.as_str()),
        csv_field(id),
        format_minor(i128::from(amount), exponent),
        rfc3339_micros(at)
    ))
}

/// Quotes a field when it holds a comma, quote or line break (RFC 4180).
fn csv_field(raw: &str) -> String {
    if raw.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", raw.replace('"', "\"\""))
    } else {
        raw.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Workload, WorkloadConfig};

    #[test]
    fn quoting_follows_rfc4180() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn one_row_per_distinct_document_with_the_manifest_totals() {
        let workload = Workload::new(WorkloadConfig {
            tenants: 3,
            events: 2_000,
            duplicates: 0.1,
            seed: 7,
            ..WorkloadConfig::default()
        })
        .expect("workload");
        let mut manifest = crate::Manifest::new(workload.tenants(), 7);
        let mut rows = Vec::new();
        for item in workload {
            manifest.record(&item);
            rows.extend(billing_csv_row(&item));
        }
        let documents: u64 = manifest
            .tenants
            .values()
            .map(|t| t.invoices.count + t.payments.count + t.credit_memos.count)
            .sum();
        assert_eq!(rows.len() as u64, documents);
        assert!(rows.iter().all(|r| r.split(',').count() == 7), "{rows:?}");
        let ids: std::collections::BTreeSet<&str> =
            rows.iter().map(|r| r.split(',').nth(2).unwrap()).collect();
        assert_eq!(ids.len(), rows.len(), "document ids are unique");
    }
}
