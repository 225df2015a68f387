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

use ledgerflow_core::{Currency, Event, format_minor};

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

/// Unix micros as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (proleptic Gregorian, UTC).
pub fn rfc3339_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Workload, WorkloadConfig};

    #[test]
    fn timestamps_render_as_rfc3339() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29T23:59:59.123456Z, a leap day.
        assert_eq!(
            rfc3339_micros(1_709_251_199_123_456),
            "2024-02-29T23:59:59.123456Z"
        );
        assert_eq!(rfc3339_micros(-1), "1969-12-31T23:59:59.999999Z");
    }

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
