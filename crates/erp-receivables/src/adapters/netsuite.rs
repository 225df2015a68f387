//! NetSuite (SuiteTalk REST web services).
//!
//! **Idempotency is the upsert.** Every document is written with
//! `PUT /services/rest/record/v1/{type}/eid:{externalId}` (204 + `Location`): NetSuite keeps one
//! record per external id across all transaction types, so a re-send after a timeout updates
//! the record it created instead of adding one. After an indefinite outcome the dispatcher
//! still asks first (`GET .../{type}/eid:{externalId}`), so a document that landed is confirmed
//! without being written again.
//!
//! | journal | mode `journal` | mode `subledger` |
//! | --- | --- | --- |
//! | invoice | `journalEntry` | `invoice`: customer, AR account, an item line per revenue and tax line |
//! | receipt | `journalEntry` | `customerPayment`: customer, gross amount into the cash clearing account |
//! | application | `journalEntry` | the receipt's `customerPayment` with an `apply` line on the invoice (waits for both) |
//! | credit memo | `journalEntry` | `creditMemo`: customer, an item line per revenue and tax line |
//!
//! The external id is in `externalId` (the URL) and in the header `memo`, where ledgerflow's
//! source reference belongs; line memos carry the human text (`invoice INV-1`). Amounts are
//! exact decimal strings.
//!
//! Errors are `{"type","title","status","o:errorDetails":[{"detail","o:errorCode"}]}`: 429, or
//! a 400 whose code ends in `_LIMIT_EXCEEDED` (RESTlets, `SSS_REQUEST_LIMIT_EXCEEDED`) or is
//! `WS_REQUEST_BLOCKED`, is throttling (no Retry-After: the account backs off); 5xx is a server
//! error; `DUP_RCRD` or "already exists" means the record is there, so it is looked up; any
//! other 4xx is a rejection with NetSuite's code and detail.

use ledgerflow_core::format_minor;
use ledgerflow_tenants::{ErpKind, ErpMode, NetsuiteMapping};
use serde_json::{Map, Value, json};

use crate::ErpError;
use crate::adapter::{
    BoxFuture, Document, ErpAdapter, ErpAmount, Exchange, FailClass, Failed, HttpRequest,
    HttpResponse, Lookup, Outcome, Problem, ReadBack, RenderInput, Rendered, Retry, RetryClass,
    decimal_amount,
};
use crate::journal::{JournalEntry, JournalKind};
use crate::payloads::date_of;
use crate::posting::{ErpPosting, kind_dependencies};

/// Record type of a payment application: the receipt's customer payment, updated.
const APPLICATION: &str = "customerPayment";

/// The NetSuite adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetSuite;

fn amount(journal: &JournalEntry, minor: i128) -> String {
    format_minor(minor, journal.currency.exponent())
}

fn mapping<'a>(input: &'a RenderInput<'_>) -> Result<&'a NetsuiteMapping, ErpError> {
    input
        .route
        .target
        .netsuite
        .as_ref()
        .ok_or_else(|| ErpError::Mapping("the route has no netsuite keys".into()))
}

fn header(input: &RenderInput<'_>, m: &NetsuiteMapping) -> Map<String, Value> {
    let j = input.journal;
    let mut body = Map::new();
    body.insert("subsidiary".into(), json!({ "id": m.subsidiary }));
    body.insert("currency".into(), json!({ "refName": j.currency.code() }));
    body.insert("tranDate".into(), json!(date_of(j.posted_at)));
    body.insert("memo".into(), json!(input.external_id));
    body
}

fn journal_entry(input: &RenderInput<'_>, m: &NetsuiteMapping) -> Value {
    let j = input.journal;
    let items: Vec<Value> = j
        .lines
        .iter()
        .map(|l| {
            let mut item = Map::new();
            item.insert("account".into(), json!({ "id": l.account }));
            if l.debit_minor != 0 {
                item.insert("debit".into(), json!(amount(j, i128::from(l.debit_minor))));
            } else {
                item.insert(
                    "credit".into(),
                    json!(amount(j, i128::from(l.credit_minor))),
                );
            }
            item.insert("memo".into(), json!(j.memo));
            Value::Object(item)
        })
        .collect();
    let mut body = header(input, m);
    body.insert("line".into(), json!({ "items": items }));
    Value::Object(body)
}

/// Item lines of an invoice (credits positive) or a credit memo (debits positive): every line
/// but the receivable one, each on its account's item.
fn item_lines(
    input: &RenderInput<'_>,
    m: &NetsuiteMapping,
    sign: i128,
) -> Result<Vec<Value>, ErpError> {
    let j = input.journal;
    let receivable = &input.route.accounts.receivable;
    let default = m.default_item.as_deref();
    let mut items = Vec::new();
    for l in j.lines.iter().filter(|l| &l.account != receivable) {
        let item = m
            .items
            .get(&l.account)
            .map(String::as_str)
            .or(default)
            .ok_or_else(|| {
                ErpError::Mapping(format!(
                    "no netsuite item for account {} (set netsuite.default_item or netsuite.items)",
                    l.account
                ))
            })?;
        let net = sign * (i128::from(l.credit_minor) - i128::from(l.debit_minor));
        items.push(json!({
            "item": { "id": item },
            "amount": amount(j, net),
            "description": j.memo,
        }));
    }
    Ok(items)
}

/// The amount on the line of `account`, whichever side.
fn line_amount(journal: &JournalEntry, account: &str) -> Option<i128> {
    journal
        .lines
        .iter()
        .find(|l| l.account == account)
        .map(|l| i128::from(l.debit_minor) + i128::from(l.credit_minor))
}

fn subledger(input: &RenderInput<'_>, m: &NetsuiteMapping) -> Result<Document, ErpError> {
    let j = input.journal;
    let customer = json!({ "externalId": input.customer_id });
    let accounts = &input.route.accounts;
    match j.kind {
        JournalKind::Invoice | JournalKind::CreditMemo => {
            let (kind, sign) = if j.kind == JournalKind::Invoice {
                ("invoice", 1)
            } else {
                ("creditMemo", -1)
            };
            let mut body = header(input, m);
            body.insert("entity".into(), customer);
            body.insert("account".into(), json!({ "id": accounts.receivable }));
            body.insert(
                "item".into(),
                json!({ "items": item_lines(input, m, sign)? }),
            );
            Ok(Document {
                kind: kind.into(),
                body: Value::Object(body),
                depends_on: Vec::new(),
            })
        }
        JournalKind::Receipt => {
            // The gross amount: what the customer paid (the processor fee is not part of a
            // NetSuite customer payment).
            let gross = line_amount(j, &accounts.unapplied_cash).ok_or_else(|| {
                ErpError::Mapping(format!(
                    "receipt {} has no line on unapplied cash {}",
                    j.id, accounts.unapplied_cash
                ))
            })?;
            let mut body = header(input, m);
            body.insert("customer".into(), customer);
            body.insert("payment".into(), json!(amount(j, gross)));
            body.insert("undepFunds".into(), json!(false));
            body.insert("account".into(), json!({ "id": accounts.cash_clearing }));
            Ok(Document {
                kind: "customerPayment".into(),
                body: Value::Object(body),
                depends_on: Vec::new(),
            })
        }
        // Corrections are journal entries in subledger mode too: a void reverses the invoice's
        // lines on the same accounts, a refund moves unapplied cash back to clearing.
        JournalKind::InvoiceVoid | JournalKind::Refund => Ok(Document {
            kind: "journalEntry".into(),
            body: journal_entry(input, m),
            depends_on: kind_dependencies(input),
        }),
        JournalKind::Application => {
            let invoice = input.invoice.and_then(|i| i.event_id).ok_or_else(|| {
                ErpError::Mapping(format!("application {} without its invoice", j.id))
            })?;
            let (receipt_id, receipt_ext) = input.posting_of(&j.event_id, JournalKind::Receipt);
            let (invoice_id, invoice_ext) = input.posting_of(&invoice, JournalKind::Invoice);
            Ok(Document {
                kind: APPLICATION.into(),
                body: json!({
                    "customerPayment": receipt_ext,
                    "invoice": invoice_ext,
                    "amount": amount(j, j.total_debit()),
                }),
                depends_on: vec![receipt_id.to_string(), invoice_id.to_string()],
            })
        }
    }
}

/// NetSuite's error code and detail.
fn error_of(resp: &HttpResponse) -> (String, String) {
    let v = resp.json().unwrap_or(Value::Null);
    let first = &v["o:errorDetails"][0];
    let code = first["o:errorCode"].as_str().unwrap_or_default().to_owned();
    let detail = first["detail"]
        .as_str()
        .or_else(|| v["title"].as_str())
        .map_or_else(|| ledgerflow_outbox::excerpt(&resp.body), str::to_owned);
    (code, detail)
}

/// Whether NetSuite refused for load (its concurrency governance and request limits).
fn is_throttle(status: u16, code: &str) -> bool {
    status == 429 || code.ends_with("_LIMIT_EXCEEDED") || code == "WS_REQUEST_BLOCKED"
}

/// Whether NetSuite says the record already exists.
fn is_duplicate(code: &str, detail: &str) -> bool {
    code == "DUP_RCRD" || detail.to_ascii_lowercase().contains("already exists")
}

fn classify(cx: &Exchange, resp: &HttpResponse) -> Problem {
    let (code, detail) = error_of(resp);
    let text = cx.redact(&format!("http {} {code}: {detail}", resp.status));
    if is_throttle(resp.status, &code) {
        return Problem::Retry(Retry::new(RetryClass::Throttled, text).after(resp.retry_after()));
    }
    if let Some(p) = cx.problem_for(resp) {
        return p;
    }
    let class = match resp.status {
        401 | 403 => FailClass::Auth,
        400 | 409 | 422 => FailClass::Rejected,
        _ => FailClass::Client,
    };
    Problem::Failed(Failed::new(class, text))
}

/// The internal id at the end of a `Location` header.
fn id_from_location(resp: &HttpResponse) -> Option<String> {
    let location = resp.header("location")?;
    let id = location.trim_end_matches('/').rsplit('/').next()?;
    (!id.is_empty()).then(|| id.to_owned())
}

fn record_url(cx: &Exchange, kind: &str, external_id: &str) -> String {
    cx.url(&format!(
        "/services/rest/record/v1/{kind}/eid:{external_id}"
    ))
}

impl NetSuite {
    /// `GET .../{kind}/eid:{ext}`: the record's internal id, or none.
    /// Looks the posting's record up by external id (an application: the payment's `apply`
    /// line on the invoice), with the amount the record carries.
    async fn lookup(&self, cx: &Exchange, posting: &ErpPosting) -> ReadBack {
        if posting.journal_kind == JournalKind::Application && posting.document_kind == APPLICATION
        {
            let (payment_ext, invoice_id, _) = match application(posting) {
                Ok(a) => a,
                Err(f) => return ReadBack::Failed(f),
            };
            return match self.read(cx, APPLICATION, &payment_ext).await {
                Ok(Some(payment)) => {
                    let line = payment["apply"]["items"].as_array().and_then(|items| {
                        items.iter().find(|i| {
                            record_id(&i["doc"]).as_deref() == Some(invoice_id.as_str())
                                && i["apply"].as_bool() == Some(true)
                        })
                    });
                    match (line, record_id(&payment)) {
                        (Some(line), Some(id)) => ReadBack::Found {
                            document_id: id,
                            amount: in_currency(&payment, std::iter::once(&line["amount"])),
                        },
                        _ => ReadBack::NotFound,
                    }
                }
                Ok(None) => ReadBack::NotFound,
                Err(p) => p.into(),
            };
        }
        match self
            .read(cx, &posting.document_kind, &posting.external_id)
            .await
        {
            Ok(Some(record)) => match record_id(&record) {
                Some(id) => ReadBack::Found {
                    document_id: id,
                    amount: record_amount(&posting.document_kind, &record),
                },
                None => ReadBack::NotFound,
            },
            Ok(None) => ReadBack::NotFound,
            Err(p) => p.into(),
        }
    }

    async fn read(
        &self,
        cx: &Exchange,
        kind: &str,
        external_id: &str,
    ) -> Result<Option<Value>, Problem> {
        let resp = cx
            .call(
                HttpRequest::get(record_url(cx, kind, external_id))
                    .with_header("accept", "application/json"),
            )
            .await?;
        match resp.status {
            200 => Ok(resp.json()),
            404 => Ok(None),
            _ => Err(classify(cx, &resp)),
        }
    }

    /// Upserts `body` as `kind` under `external_id`.
    async fn upsert(
        &self,
        cx: &Exchange,
        kind: &str,
        external_id: &str,
        body: &Value,
        query: &str,
    ) -> Outcome {
        let url = format!("{}{query}", record_url(cx, kind, external_id));
        let resp = match cx.call(HttpRequest::put(url).json(body)).await {
            Ok(r) => r,
            Err(p) => return p.into(),
        };
        if resp.is_success() {
            if let Some(id) = id_from_location(&resp) {
                return Outcome::Confirmed { document_id: id };
            }
            // Written, but no Location: read the id back.
            return match self.read(cx, kind, external_id).await {
                Ok(Some(v)) => confirmed(&v, external_id),
                Ok(None) => Outcome::Retry(Retry::new(
                    RetryClass::Server,
                    format!(
                        "netsuite answered {} but {kind} eid:{external_id} is not readable",
                        resp.status
                    ),
                )),
                Err(p) => p.into(),
            };
        }
        let (code, detail) = error_of(&resp);
        if is_duplicate(&code, &detail) {
            // Stored before (by this posting, or the id is taken by another type).
            return match self.read(cx, kind, external_id).await {
                Ok(Some(v)) => confirmed(&v, external_id),
                Ok(None) => Outcome::Failed(Failed::new(
                    FailClass::Rejected,
                    cx.redact(&format!(
                        "http {} {code}: {detail} (the external id is held by another record type)",
                        resp.status
                    )),
                )),
                Err(p) => p.into(),
            };
        }
        classify(cx, &resp).into()
    }

    async fn apply(&self, cx: &Exchange, posting: &ErpPosting) -> Outcome {
        let (payment_ext, invoice_id, amount) = match application(posting) {
            Ok(a) => a,
            Err(f) => return Outcome::Failed(f),
        };
        let body = json!({
            "apply": { "items": [{ "doc": { "id": invoice_id }, "apply": true, "amount": amount }] }
        });
        // The apply sublist is replaced, not merged: re-sending the same application is a no-op.
        self.upsert(cx, APPLICATION, &payment_ext, &body, "?replace=apply")
            .await
    }
}

fn confirmed(record: &Value, external_id: &str) -> Outcome {
    match record_id(record) {
        Some(id) => Outcome::Confirmed { document_id: id },
        None => Outcome::Retry(Retry::new(
            RetryClass::Server,
            format!("netsuite record eid:{external_id} has no id"),
        )),
    }
}

fn record_id(record: &Value) -> Option<String> {
    match record.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The amount of a record as read back: a journal entry's debits, an invoice's or credit
/// memo's item amounts, a payment's gross amount; `None` for another record type or a record
/// whose amounts cannot be read exactly.
fn record_amount(kind: &str, record: &Value) -> Option<ErpAmount> {
    let fields = |list: &str, field: &'static str| {
        record[list]["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(move |line| &line[field])
    };
    match kind {
        "journalEntry" => in_currency(record, fields("line", "debit").filter(|v| !v.is_null())),
        "invoice" | "creditMemo" => in_currency(record, fields("item", "amount")),
        "customerPayment" => in_currency(record, std::iter::once(&record["payment"])),
        _ => None,
    }
}

/// The amounts of `values` in the record's currency (`currency.refName`), exactly; `None`
/// when one is unreadable or the currency unknown. NetSuite answers numbers; ledgerflow sends
/// strings: both are read.
fn in_currency<'a>(record: &Value, values: impl Iterator<Item = &'a Value>) -> Option<ErpAmount> {
    decimal_amount(record["currency"]["refName"].as_str()?, values)
}

/// (payment external id, invoice internal id, amount) of an application posting.
fn application(posting: &ErpPosting) -> Result<(String, String, String), Failed> {
    let doc = &posting.document;
    let field = |name: &str| {
        doc[name].as_str().map(str::to_owned).ok_or_else(|| {
            Failed::new(
                FailClass::Mapping,
                format!("application document lacks {name}"),
            )
        })
    };
    let payment = field("customerPayment")?;
    let amount = field("amount")?;
    let invoice = posting
        .dependency(JournalKind::Invoice)
        .and_then(|d| d.erp_document_id.clone())
        .ok_or_else(|| {
            Failed::new(
                FailClass::Mapping,
                "the invoice this payment applies to has no netsuite document (not posted through ledgerflow)",
            )
        })?;
    Ok((payment, invoice, amount))
}

impl ErpAdapter for NetSuite {
    fn kind(&self) -> ErpKind {
        ErpKind::Netsuite
    }

    fn render(&self, input: &RenderInput<'_>) -> Result<Rendered, ErpError> {
        let m = mapping(input)?;
        let document = match input.route.target.mode {
            ErpMode::Journal => Document {
                kind: "journalEntry".into(),
                body: journal_entry(input, m),
                depends_on: kind_dependencies(input),
            },
            ErpMode::Subledger => subledger(input, m)?,
        };
        Ok(Rendered::Document(document))
    }

    fn find<'a>(&'a self, cx: &'a Exchange, posting: &'a ErpPosting) -> BoxFuture<'a, Lookup> {
        Box::pin(async move { self.lookup(cx, posting).await.into() })
    }

    /// The record read by external id carries its amounts: read-back compares them.
    fn read_back<'a>(
        &'a self,
        cx: &'a Exchange,
        posting: &'a ErpPosting,
    ) -> BoxFuture<'a, ReadBack> {
        Box::pin(self.lookup(cx, posting))
    }

    fn send<'a>(&'a self, cx: &'a Exchange, posting: &'a ErpPosting) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            if posting.journal_kind == JournalKind::Application
                && posting.document_kind == APPLICATION
            {
                return self.apply(cx, posting).await;
            }
            self.upsert(
                cx,
                &posting.document_kind,
                &posting.external_id,
                &posting.document,
                "",
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use ledgerflow_tenants::ErpMode;

    use super::*;
    use crate::adapter::InvoiceRef;
    use crate::mapping::tests::{credit_memo, envelope, invoice, line, payment, refund, tenant};
    use crate::mapping::{ErpRoute, map_event};

    fn rendered(kind: JournalKind, mode: ErpMode) -> Document {
        let mut t = tenant("acme", Some(ErpKind::Netsuite));
        if let Some(erp) = &mut t.erp {
            erp.mode = mode;
        }
        let event = match kind {
            JournalKind::Receipt | JournalKind::Application => payment(
                "00000000-0000-4000-8000-000000000002",
                "pay-1",
                "inv-1",
                10_000,
                320,
            ),
            JournalKind::CreditMemo => credit_memo(
                "00000000-0000-4000-8000-000000000003",
                "cm-1",
                "inv-1",
                1000,
                72,
            ),
            JournalKind::Refund => refund(
                "00000000-0000-4000-8000-000000000004",
                "rf-1",
                "pay-1",
                2_000,
                Some(20),
            ),
            JournalKind::Invoice | JournalKind::InvoiceVoid => invoice(
                "00000000-0000-4000-8000-000000000001",
                "inv-1",
                vec![
                    line("l1", "platform", 2, 1000),
                    line("l2", "support", 1, 550),
                ],
                266,
            ),
        };
        let effect = map_event(&envelope(event), &t).unwrap();
        let route: ErpRoute = effect.route.unwrap();
        let mut journal = effect.posting.journal().unwrap().clone();
        if kind == JournalKind::Application {
            // The application of that payment: unapplied cash to receivable.
            journal.kind = kind;
            journal.lines = vec![
                crate::journal::JournalLine::debit("2400", 10_000),
                crate::journal::JournalLine::credit("1100", 10_000),
            ];
        }
        if kind == JournalKind::InvoiceVoid {
            // The void of that invoice, by event 5: its lines reversed.
            journal.event_id =
                ledgerflow_core::EventId::parse("00000000-0000-4000-8000-000000000005").unwrap();
            journal.kind = kind;
            journal.lines = crate::journal::reversed_lines(&journal.lines);
        }
        let invoice_ref = InvoiceRef {
            invoice_id: "inv-1".into(),
            event_id: Some(
                ledgerflow_core::EventId::parse("00000000-0000-4000-8000-000000000001").unwrap(),
            ),
        };
        let ext = crate::posting::external_id("acme", &journal.event_id, journal.kind);
        let input = RenderInput {
            journal: &journal,
            route: &route,
            external_id: &ext,
            customer_id: "cus-1",
            invoice: Some(&invoice_ref),
        };
        match NetSuite.render(&input).unwrap() {
            Rendered::Document(d) => d,
            Rendered::NotPosted { reason } => panic!("not posted: {reason}"),
        }
    }

    #[test]
    fn journal_mode_is_a_balanced_journal_entry_with_the_external_id_as_memo() {
        let d = rendered(JournalKind::Invoice, ErpMode::Journal);
        assert_eq!(d.kind, "journalEntry");
        let v = &d.body;
        assert_eq!(
            v["memo"],
            "lf-acme-00000000-0000-4000-8000-000000000001-inv"
        );
        assert_eq!(v["subsidiary"]["id"], "3");
        assert_eq!(v["tranDate"], "2023-11-14");
        let items = v["line"]["items"].as_array().unwrap();
        assert_eq!(items[0]["account"]["id"], "1100");
        assert_eq!(items[0]["debit"], "28.16");
        assert_eq!(items[0]["memo"], "invoice N-inv-1");
        assert!(items[0].get("credit").is_none());
        assert!(
            v.get("externalId").is_none(),
            "the external id is in the URL"
        );
    }

    #[test]
    fn subledger_mode_renders_ar_documents() {
        let inv = rendered(JournalKind::Invoice, ErpMode::Subledger);
        assert_eq!(inv.kind, "invoice");
        assert_eq!(inv.body["entity"]["externalId"], "cus-1");
        assert_eq!(inv.body["account"]["id"], "1100");
        let items = inv.body["item"]["items"].as_array().unwrap();
        // platform 20.00 on the default item, support 5.50 on its own, tax 2.66 on the default.
        let lines: Vec<(String, String)> = items
            .iter()
            .map(|i| {
                (
                    i["item"]["id"].as_str().unwrap().to_owned(),
                    i["amount"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                ("501".to_owned(), "20.00".to_owned()),
                ("502".to_owned(), "5.50".to_owned()),
                ("501".to_owned(), "2.66".to_owned())
            ]
        );
        let cm = rendered(JournalKind::CreditMemo, ErpMode::Subledger);
        assert_eq!(cm.kind, "creditMemo");
        let items = cm.body["item"]["items"].as_array().unwrap();
        assert_eq!(
            (items[0]["item"]["id"].as_str(), items[0]["amount"].as_str()),
            (Some("502"), Some("10.00"))
        );
        assert_eq!(
            (items[1]["item"]["id"].as_str(), items[1]["amount"].as_str()),
            (Some("501"), Some("0.72"))
        );

        let receipt = rendered(JournalKind::Receipt, ErpMode::Subledger);
        assert_eq!(receipt.kind, "customerPayment");
        assert_eq!(receipt.body["payment"], "100.00", "gross");
        assert_eq!(receipt.body["account"]["id"], "1010");
        assert_eq!(receipt.body["customer"]["externalId"], "cus-1");

        let app = rendered(JournalKind::Application, ErpMode::Subledger);
        assert_eq!(app.kind, "customerPayment");
        assert_eq!(
            app.body["customerPayment"],
            "lf-acme-00000000-0000-4000-8000-000000000002-rct"
        );
        assert_eq!(
            app.body["invoice"],
            "lf-acme-00000000-0000-4000-8000-000000000001-inv"
        );
        assert_eq!(app.body["amount"], "100.00");
        assert_eq!(app.depends_on.len(), 2, "the receipt and the invoice");
    }

    #[test]
    fn throttles_and_duplicates_are_recognised() {
        assert!(is_throttle(429, "CONCURRENCY_LIMIT_EXCEEDED"));
        assert!(is_throttle(400, "SSS_REQUEST_LIMIT_EXCEEDED"));
        assert!(is_throttle(400, "WS_REQUEST_BLOCKED"));
        assert!(!is_throttle(400, "USER_ERROR"));
        assert!(is_duplicate("DUP_RCRD", ""));
        assert!(is_duplicate("", "Error: This record already exists."));
        assert!(!is_duplicate("USER_ERROR", "out of balance"));
    }

    #[test]
    fn corrections_are_journal_entries_and_a_void_waits_for_its_invoice() {
        for mode in [ErpMode::Journal, ErpMode::Subledger] {
            let void = rendered(JournalKind::InvoiceVoid, mode);
            assert_eq!(void.kind, "journalEntry");
            let invoice =
                ledgerflow_core::EventId::parse("00000000-0000-4000-8000-000000000001").unwrap();
            assert_eq!(
                void.depends_on,
                [crate::journal::journal_id(&invoice, JournalKind::Invoice).to_string()]
            );
            let lines = &void.body["line"]["items"];
            assert_eq!(lines[0]["account"]["id"], "1100");
            assert_eq!(lines[0]["credit"], "28.16");
            let refund = rendered(JournalKind::Refund, mode);
            assert_eq!(refund.kind, "journalEntry");
            assert!(refund.depends_on.is_empty());
            assert_eq!(refund.body["line"]["items"][0]["debit"], "20.00");
            assert_eq!(refund.body["line"]["items"][2]["credit"], "0.20");
        }
    }
}
