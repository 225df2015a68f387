//! Journal shapes of the ERP kinds that have no adapter yet (S/4HANA and Oracle Fusion): the
//! writer stores them with the posting so nothing is lost, but the dispatcher claims no posting
//! of a kind without an adapter (see [`crate::adapters::builtin`]), so they wait. When an
//! adapter for the kind is registered, its `render` replaces these; postings rendered here
//! before that are re-rendered by a replay of their events.
//!
//! Amounts are exact decimal strings with the currency's exponent (`"33.16"`, `"1500"` for JPY,
//! `"1.250"` for KWD), never JSON numbers, so no float ever touches them. Dates are the UTC
//! calendar date of the entry's `posted_at` (`YYYY-MM-DD`).
//!
//! | kind | shape |
//! | --- | --- |
//! | `s4hana` | `JournalEntry` (journal entry create request) with `GLAccountLineItem[]`, signed `AmountInTransactionCurrency`, `DebitCreditCode` S/H, `CompanyCode` and `AccountingDocumentType` from the mapping |
//! | `oracle_fusion` | journal import: `GL_INTERFACE` rows with the mapping's ledger, source and category, `ENTERED_DR/CR`, `ACCOUNTED_DR/CR` |

use ledgerflow_core::format_minor;
use ledgerflow_tenants::ErpKind;
use serde_json::{Map, Value, json};

use crate::journal::JournalEntry;
use crate::mapping::ErpRoute;

/// Journal source name in Oracle Fusion and the logical system in S/4HANA.
pub const SOURCE_NAME: &str = "ledgerflow";

/// Renders `journal` in the legacy shape of `route`'s kind; `None` for kinds with an adapter.
pub fn render(journal: &JournalEntry, route: &ErpRoute, external_id: &str) -> Option<Value> {
    match route.kind() {
        ErpKind::S4hana => Some(s4hana(journal, route, external_id)),
        ErpKind::OracleFusion => Some(oracle_fusion(journal, route, external_id)),
        ErpKind::Netsuite | ErpKind::Dynamics365 => None,
    }
}

fn amount(journal: &JournalEntry, minor: i64) -> String {
    format_minor(i128::from(minor), journal.currency.exponent())
}

/// `YYYY-MM-DD` (UTC) of a microsecond timestamp.
pub(crate) fn date_of(micros: i64) -> String {
    ledgerflow_core::date_of_micros(micros)
}

/// SAP S/4HANA journal entry create request (`JournalEntryCreateRequest` as JSON).
///
/// ```json
/// {"JournalEntry": {"OriginalReferenceDocumentType": "BKPFF",
///   "OriginalReferenceDocument": "<external id>", "OriginalReferenceDocumentLogicalSystem": "LEDGERFLOW",
///   "BusinessTransactionType": "RFBU", "AccountingDocumentType": "SA", "CompanyCode": "1010",
///   "DocumentReferenceID": "inv-1", "DocumentHeaderText": "invoice INV-1",
///   "DocumentDate": "2023-11-14", "PostingDate": "2023-11-14", "CreatedByUser": "LEDGERFLOW",
///   "GLAccountLineItem": [{"ReferenceDocumentItem": "1", "GLAccount": "1100",
///     "AmountInTransactionCurrency": {"currencyCode": "USD", "content": "33.16"},
///     "DebitCreditCode": "S", "DocumentItemText": "invoice INV-1"},
///    {"ReferenceDocumentItem": "2", "GLAccount": "4000",
///     "AmountInTransactionCurrency": {"currencyCode": "USD", "content": "-25.50"},
///     "DebitCreditCode": "H", ...}]}}
/// ```
/// Debits are positive with `S` (Soll), credits negative with `H` (Haben); the amounts of an
/// entry sum to zero. Company code and document type come from the tenant's `s4hana` keys.
pub fn s4hana(journal: &JournalEntry, route: &ErpRoute, external_id: &str) -> Value {
    let (company_code, document_type) = route
        .target
        .s4hana
        .as_ref()
        .map_or((route.legal_entity.as_str(), "SA"), |m| {
            (m.company_code.as_str(), m.document_type.as_str())
        });
    let date = date_of(journal.posted_at);
    let items: Vec<Value> = journal
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (signed, code) = if l.debit_minor != 0 {
                (i128::from(l.debit_minor), "S")
            } else {
                (-i128::from(l.credit_minor), "H")
            };
            json!({
                "ReferenceDocumentItem": (i + 1).to_string(),
                "GLAccount": l.account,
                "AmountInTransactionCurrency": {
                    "currencyCode": journal.currency.code(),
                    "content": format_minor(signed, journal.currency.exponent()),
                },
                "DebitCreditCode": code,
                "DocumentItemText": journal.memo,
            })
        })
        .collect();
    json!({
        "JournalEntry": {
            "OriginalReferenceDocumentType": "BKPFF",
            "OriginalReferenceDocument": external_id,
            "OriginalReferenceDocumentLogicalSystem": SOURCE_NAME.to_uppercase(),
            "BusinessTransactionType": "RFBU",
            "AccountingDocumentType": document_type,
            "CompanyCode": company_code,
            "DocumentReferenceID": journal.document_id,
            "DocumentHeaderText": journal.memo,
            "DocumentDate": date,
            "PostingDate": date,
            "CreatedByUser": SOURCE_NAME.to_uppercase(),
            "GLAccountLineItem": items,
        }
    })
}

/// Oracle Fusion Cloud General Ledger journal import: one `GL_INTERFACE` row per line.
///
/// ```json
/// {"GL_INTERFACE": [{"STATUS": "NEW", "LEDGER_NAME": "US Primary", "ACCOUNTING_DATE": "2023-11-14",
///   "USER_JE_SOURCE_NAME": "ledgerflow", "USER_JE_CATEGORY_NAME": "Sales",
///   "ACTUAL_FLAG": "A", "CURRENCY_CODE": "USD", "SEGMENT1": "1100",
///   "ENTERED_DR": "33.16", "ENTERED_CR": null, "ACCOUNTED_DR": "33.16", "ACCOUNTED_CR": null,
///   "REFERENCE1": "<external id>", "REFERENCE4": "invoice INV-1",
///   "REFERENCE10": "invoice INV-1", "ATTRIBUTE1": "<journal id>"}, ...]}
/// ```
/// The account is split on `-` and `.` into `SEGMENT1`..`SEGMENTn`. Accounted amounts are
/// only given when the entry is in the ledger's (tenant's functional) currency; otherwise
/// `CURRENCY_CONVERSION_TYPE` `Corporate` lets Fusion convert at its daily rate.
pub fn oracle_fusion(journal: &JournalEntry, route: &ErpRoute, external_id: &str) -> Value {
    let date = date_of(journal.posted_at);
    let same_currency = journal.currency == route.functional_currency;
    let (ledger, source, category) = route.target.oracle_fusion.as_ref().map_or(
        (route.legal_entity.as_str(), SOURCE_NAME, "Sales"),
        |m| {
            (
                m.ledger.as_str(),
                m.journal_source.as_str(),
                m.journal_category.as_str(),
            )
        },
    );
    let side = |minor: i64| {
        if minor == 0 {
            Value::Null
        } else {
            json!(amount(journal, minor))
        }
    };
    let rows: Vec<Value> = journal
        .lines
        .iter()
        .map(|l| {
            let mut row = Map::new();
            row.insert("STATUS".into(), json!("NEW"));
            row.insert("LEDGER_NAME".into(), json!(ledger));
            row.insert("ACCOUNTING_DATE".into(), json!(date));
            row.insert("USER_JE_SOURCE_NAME".into(), json!(source));
            row.insert("USER_JE_CATEGORY_NAME".into(), json!(category));
            row.insert("ACTUAL_FLAG".into(), json!("A"));
            row.insert("CURRENCY_CODE".into(), json!(journal.currency.code()));
            for (i, segment) in l.account.split(['-', '.']).take(30).enumerate() {
                row.insert(format!("SEGMENT{}", i + 1), json!(segment));
            }
            row.insert("ENTERED_DR".into(), side(l.debit_minor));
            row.insert("ENTERED_CR".into(), side(l.credit_minor));
            if same_currency {
                row.insert("ACCOUNTED_DR".into(), side(l.debit_minor));
                row.insert("ACCOUNTED_CR".into(), side(l.credit_minor));
            } else {
                row.insert("CURRENCY_CONVERSION_TYPE".into(), json!("Corporate"));
                row.insert("CURRENCY_CONVERSION_DATE".into(), json!(date));
            }
            row.insert("REFERENCE1".into(), json!(external_id));
            row.insert("REFERENCE4".into(), json!(journal.memo));
            row.insert("REFERENCE10".into(), json!(journal.memo));
            row.insert("ATTRIBUTE1".into(), json!(journal.id.to_string()));
            Value::Object(row)
        })
        .collect();
    json!({ "GL_INTERFACE": rows })
}

#[cfg(test)]
mod tests {
    use ledgerflow_core::Currency;

    use super::*;
    use crate::mapping::map_event;
    use crate::mapping::tests::{envelope, invoice, line, payment, tenant};

    /// Parses a rendered decimal string back to minor units with the given exponent.
    fn minor(text: &str, exponent: usize) -> i128 {
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        assert_eq!(frac.len(), exponent, "{text} has the currency's exponent");
        format!("{whole}{frac}").parse().unwrap()
    }

    fn invoice_journal(kind: ErpKind) -> (JournalEntry, ErpRoute) {
        let ev = envelope(invoice(
            "00000000-0000-4000-8000-000000000001",
            "inv-1",
            vec![
                line("l1", "platform", 2, 1000),
                line("l2", "support", 1, 550),
            ],
            266,
        ));
        let effect = map_event(&ev, &tenant("acme", Some(kind))).unwrap();
        (
            effect.posting.journal().unwrap().clone(),
            effect.route.unwrap(),
        )
    }

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(1_700_000_000_000_000), "2023-11-14");
        assert_eq!(date_of(951_782_400_000_000), "2000-02-29");
        assert_eq!(date_of(-1), "1969-12-31");
    }

    #[test]
    fn s4hana_journal_entry_amounts_are_signed_and_sum_to_zero() {
        let (j, route) = invoice_journal(ErpKind::S4hana);
        let v = render(&j, &route, "lf-acme-x-inv").unwrap();
        let entry = &v["JournalEntry"];
        assert_eq!(entry["CompanyCode"], "1010");
        assert_eq!(entry["AccountingDocumentType"], "SA");
        assert_eq!(entry["OriginalReferenceDocument"], "lf-acme-x-inv");
        assert_eq!(entry["PostingDate"], "2023-11-14");
        let items = entry["GLAccountLineItem"].as_array().unwrap();
        assert_eq!(items[0]["DebitCreditCode"], "S");
        assert_eq!(items[0]["AmountInTransactionCurrency"]["content"], "28.16");
        assert_eq!(items[1]["DebitCreditCode"], "H");
        assert_eq!(items[1]["AmountInTransactionCurrency"]["content"], "-20.00");
        let total: i128 = items
            .iter()
            .map(|i| {
                minor(
                    i["AmountInTransactionCurrency"]["content"]
                        .as_str()
                        .unwrap(),
                    2,
                )
            })
            .sum();
        assert_eq!(total, 0);
    }

    #[test]
    fn oracle_fusion_gl_interface_rows() {
        let ev = envelope(payment(
            "00000000-0000-4000-8000-000000000002",
            "pay-1",
            "inv-1",
            10_000,
            320,
        ));
        let mut t = tenant("acme", Some(ErpKind::OracleFusion));
        t.accounts.cash_clearing = "01-000-1010".into();
        let effect = map_event(&ev, &t).unwrap();
        let (j, route) = (effect.posting.journal().unwrap(), effect.route.unwrap());
        let v = render(j, &route, "lf-acme-y-rct").unwrap();
        let rows = v["GL_INTERFACE"].as_array().unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0]["LEDGER_NAME"], "US Primary");
        assert_eq!(rows[0]["USER_JE_SOURCE_NAME"], "ledgerflow");
        assert_eq!(rows[0]["USER_JE_CATEGORY_NAME"], "Sales");
        assert_eq!(rows[0]["REFERENCE1"], "lf-acme-y-rct");
        assert_eq!(rows[0]["SEGMENT1"], "01");
        assert_eq!(rows[0]["SEGMENT3"], "1010");
        assert_eq!(rows[0]["ACCOUNTED_DR"], "96.80");
        assert!(rows[0]["ACCOUNTED_CR"].is_null());
        assert_eq!(rows[2]["ACCOUNTED_CR"], "100.00");
        let sum = |side: &str| -> i128 {
            rows.iter()
                .filter_map(|r| r[side].as_str())
                .map(|s| minor(s, 2))
                .sum()
        };
        assert_eq!(sum("ACCOUNTED_DR"), sum("ACCOUNTED_CR"));
        assert_eq!(sum("ENTERED_DR"), sum("ENTERED_CR"));

        // In a foreign currency only entered amounts are given, and Fusion converts.
        let mut foreign = route.clone();
        foreign.functional_currency = Currency::parse("EUR").unwrap();
        let v = render(j, &foreign, "lf-acme-y-rct").unwrap();
        let row = &v["GL_INTERFACE"][0];
        assert!(row.get("ACCOUNTED_DR").is_none());
        assert_eq!(row["CURRENCY_CONVERSION_TYPE"], "Corporate");
    }

    #[test]
    fn kinds_with_an_adapter_have_no_legacy_shape() {
        for kind in [ErpKind::Netsuite, ErpKind::Dynamics365] {
            let (j, route) = invoice_journal(kind);
            assert!(render(&j, &route, "x").is_none());
        }
    }

    #[test]
    fn amounts_use_the_currency_exponent() {
        let (mut j, route) = invoice_journal(ErpKind::OracleFusion);
        j.currency = Currency::parse("KWD").unwrap();
        let v = oracle_fusion(&j, &route, "x");
        assert_eq!(v["GL_INTERFACE"][0]["ENTERED_DR"], "2.816");
        j.currency = Currency::parse("JPY").unwrap();
        let v = oracle_fusion(&j, &route, "x");
        assert_eq!(v["GL_INTERFACE"][0]["ENTERED_DR"], "2816");
    }
}
