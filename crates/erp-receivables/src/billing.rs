//! The billing platform's document export, as a reconciliation source
//! (`ledgerflow reconcile --source billing.csv`).
//!
//! A CSV file with a header row naming at least `tenant_id`, `document_type` (`invoice`,
//! `payment`, `credit_memo`), `document_id`, `currency` and `amount` (exact decimal: the
//! document total, or a payment's gross amount), and optionally `fee` (a payment's processor
//! fee) and `issued_at` (issue or capture time, RFC 3339 or unix micros; rows without it are in
//! every time window). Columns may come in any order; extra columns are ignored; fields may be
//! quoted as RFC 4180 says. `ledgerflow produce --billing-csv FILE` writes this format.
//!
//! Unlike the manifest (counts and totals only), the export names every document, so
//! reconcile lists each one that is missing from the ledger, posted but not in the export
//! (extra), or posted with a different currency, amount or fee (mismatched).

use std::collections::BTreeMap;

use ledgerflow_core::{Currency, parse_minor};

use crate::ErpError;

/// A document type of the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BillingDocType {
    /// `invoice`.
    Invoice,
    /// `payment`.
    Payment,
    /// `credit_memo`.
    CreditMemo,
}

impl BillingDocType {
    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "invoice" => Some(Self::Invoice),
            "payment" => Some(Self::Payment),
            "credit_memo" => Some(Self::CreditMemo),
            _ => None,
        }
    }

    /// The export's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invoice => "invoice",
            Self::Payment => "payment",
            Self::CreditMemo => "credit_memo",
        }
    }
}

/// One document of the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingDocument {
    /// Tenant.
    pub tenant_id: String,
    /// Type.
    pub doc_type: BillingDocType,
    /// The billing platform's id (invoice_id, payment_id, credit_memo_id).
    pub document_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Total or gross amount, minor units.
    pub amount_minor: i128,
    /// Processor fee, minor units (0 when absent).
    pub fee_minor: i128,
    /// Business time, unix micros, when the export has it.
    pub issued_at: Option<i64>,
}

/// A parsed export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BillingExport {
    /// Documents in file order.
    pub documents: Vec<BillingDocument>,
}

impl BillingExport {
    /// Parses the CSV text; errors name the line and the column.
    pub fn from_csv(text: &str) -> Result<Self, ErpError> {
        // RFC 4180 through the csv crate: quoted fields may hold commas, quotes and line
        // breaks; rows may be short (a missing optional column); blank lines are skipped.
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        let line =
            |p: Option<&csv::Position>| p.map_or(0, |p| usize::try_from(p.line()).unwrap_or(0));
        let mut records = reader.records().map(|r| {
            let record = r.map_err(|e| source_error(line(e.position()), &e.to_string()))?;
            Ok::<_, ErpError>((line(record.position()), record))
        });
        let Some(first) = records.next() else {
            return Err(source_error(
                1,
                "the file is empty (a header row is required)",
            ));
        };
        let (_, header) = first?;
        let column = |name: &str| header.iter().position(|h| h.trim() == name);
        let required = |name: &str| {
            column(name)
                .ok_or_else(|| source_error(1, &format!("no {name:?} column in the header")))
        };
        let (tenant, kind, id, currency, amount) = (
            required("tenant_id")?,
            required("document_type")?,
            required("document_id")?,
            required("currency")?,
            required("amount")?,
        );
        let (fee, issued) = (column("fee"), column("issued_at"));
        let mut documents = Vec::new();
        let mut seen = BTreeMap::new();
        for record in records {
            let (line, fields) = record?;
            let get = |i: usize| fields.get(i).map_or("", |s| s.trim());
            let field = |i: usize, name: &str| {
                let v = get(i);
                if v.is_empty() {
                    Err(source_error(line, &format!("{name} is empty")))
                } else {
                    Ok(v)
                }
            };
            let doc_type =
                BillingDocType::parse(field(kind, "document_type")?).ok_or_else(|| {
                    source_error(
                        line,
                        &format!(
                            "document_type {:?} is not invoice, payment or credit_memo",
                            get(kind)
                        ),
                    )
                })?;
            let code = field(currency, "currency")?;
            let exponent = Currency::parse(code)
                .map_err(|e| source_error(line, &e))?
                .exponent();
            let amount_minor = parse_minor(field(amount, "amount")?, exponent)
                .map_err(|e| source_error(line, &e.to_string()))?;
            let fee_minor = match fee.map(get).filter(|v| !v.is_empty()) {
                Some(v) => parse_minor(v, exponent)
                    .map_err(|e| source_error(line, &format!("fee: {e}")))?,
                None => 0,
            };
            let issued_at = match issued.map(get).filter(|v| !v.is_empty()) {
                Some(v) => Some(parse_time(v).map_err(|e| source_error(line, &e))?),
                None => None,
            };
            let doc = BillingDocument {
                tenant_id: field(tenant, "tenant_id")?.to_owned(),
                doc_type,
                document_id: field(id, "document_id")?.to_owned(),
                currency: code.to_owned(),
                amount_minor,
                fee_minor,
                issued_at,
            };
            let key = (doc.tenant_id.clone(), doc_type, doc.document_id.clone());
            if let Some(first) = seen.insert(key, line) {
                return Err(source_error(
                    line,
                    &format!(
                        "{} {} of tenant {} is already listed on line {first}",
                        doc_type.as_str(),
                        doc.document_id,
                        doc.tenant_id
                    ),
                ));
            }
            documents.push(doc);
        }
        Ok(Self { documents })
    }
}

fn source_error(line: usize, what: &str) -> ErpError {
    ErpError::Source(format!("billing export line {line}: {what}"))
}

/// RFC 3339 or integer unix micros.
fn parse_time(raw: &str) -> Result<i64, String> {
    if let Ok(micros) = raw.parse::<i64>() {
        return Ok(micros);
    }
    let t = time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("issued_at {raw:?} is neither RFC 3339 nor unix micros: {e}"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "tenant_id,document_type,document_id,currency,amount,fee,issued_at\n";

    #[test]
    fn parses_every_document_type_exactly() {
        let csv = format!(
            "{HEADER}t001,invoice,inv_1,USD,1234.56,,2026-11-02T10:00:00Z\n\
             t001,payment,pay_1,USD,1000.00,23.10,2026-11-03T08:30:00.5Z\r\n\
             t002,credit_memo,\"cm,1\",JPY,1200,,1762000000000000\n"
        );
        let export = BillingExport::from_csv(&csv).expect("valid export");
        let d = &export.documents;
        assert_eq!(d.len(), 3);
        assert_eq!(
            (d[0].doc_type, d[0].amount_minor, d[0].fee_minor),
            (BillingDocType::Invoice, 123_456, 0)
        );
        assert_eq!(d[1].fee_minor, 2_310);
        assert_eq!(d[1].issued_at, Some(1_793_694_600_500_000));
        assert_eq!(d[2].document_id, "cm,1");
        assert_eq!(d[2].amount_minor, 1_200, "JPY has no minor digits");
        assert_eq!(d[2].issued_at, Some(1_762_000_000_000_000));
    }

    #[test]
    fn columns_may_come_in_any_order_and_optional_ones_may_be_missing() {
        let csv = "amount,currency,document_id,document_type,tenant_id,note\n\
                   5.00,EUR,inv_9,invoice,t003,\"free, text\"\n";
        let export = BillingExport::from_csv(csv).expect("valid export");
        assert_eq!(export.documents[0].amount_minor, 500);
        assert_eq!(export.documents[0].issued_at, None);
    }

    #[test]
    fn bad_rows_are_refused_with_their_line() {
        for (body, needle) in [
            ("t001,invoice,inv_1,USD,12.345,,\n", "line 2"),
            (
                "t001,order,o_1,USD,1.00,,\n",
                "is not invoice, payment or credit_memo",
            ),
            ("t001,invoice,inv_1,XXX,1.00,,\n", "line 2"),
            ("t001,invoice,,USD,1.00,,\n", "document_id is empty"),
            ("t001,invoice,inv_1,USD,1.00,,yesterday\n", "issued_at"),
            (
                "t001,invoice,inv_1,USD,1.00,,\nt001,invoice,inv_1,USD,1.00,,\n",
                "already listed on line 2",
            ),
            // An unclosed quote runs to the end of the file: the row is short of columns.
            (
                "t001,invoice,\"inv_1,USD,1.00,,\n",
                "line 2: currency is empty",
            ),
        ] {
            let err = BillingExport::from_csv(&format!("{HEADER}{body}"))
                .expect_err(body)
                .to_string();
            assert!(err.contains(needle), "{body:?}: {err}");
        }
        let err = BillingExport::from_csv("tenant_id,document_id\n").expect_err("header");
        assert!(err.to_string().contains("document_type"), "{err}");
        assert!(BillingExport::from_csv("").is_err());
    }
}
