//! Dynamics 365 Finance & Operations (OData v4 under `/data/`, Microsoft Entra ID client
//! credentials).
//!
//! **D365 has no idempotency key and stores whatever is posted twice**, so the adapter looks a
//! document up by ledgerflow's external reference before every create
//! ([`LookupPolicy::Always`]): `GET /data/{Headers}?$filter=Description eq '<external id>'&
//! cross-company=true` (the header `Description` holds the external id; `cross-company=true`
//! because the tenant's company need not be the integration user's default one).
//!
//! A journal is created as header and lines in **one `$batch` change set**, which D365 applies
//! atomically: either the journal with all its lines exists or nothing does, so the lookup's
//! answer is complete. One journal per change set (and per request), so a rejected journal
//! never takes another tenant's journal with it. The lines refer to the header by a
//! `JournalBatchNumber` the adapter supplies (`LF` + 8 random characters, new per attempt: if
//! it collides with an existing journal, D365 refuses the change set and the next attempt uses
//! another).
//!
//! | journal | mode `journal` | mode `subledger` |
//! | --- | --- | --- |
//! | invoice, credit memo | general journal (`LedgerJournalHeaders` + `LedgerJournalLines`), every line `Ledger` | the same, the receivable line on the customer account (`AccountType` `Cust`) |
//! | receipt | general journal | customer payment journal (`CustomerPaymentJournalHeaders` + `...Lines`), the unapplied cash line on the customer account |
//! | application | general journal | nothing: D365 settles a payment against the invoice on the customer account itself |
//!
//! Free-text invoices are not posted: the simulator has no free-text invoice entity, so AR
//! invoices reach the customer account through a general journal line of account type `Cust`.
//!
//! Amounts are sent as decimal strings with `IEEE754Compatible=true`, the OData way to carry
//! exact decimals. 429 carries `Retry-After`, which pauses the environment's account.

use ledgerflow_core::format_minor;
use ledgerflow_tenants::{Dynamics365Mapping, ErpKind, ErpMode};
use serde_json::{Value, json};

use crate::ErpError;
use crate::adapter::{
    BoxFuture, Document, ErpAdapter, ErpAmount, Exchange, FailClass, Failed, HttpRequest,
    HttpResponse, Lookup, LookupPolicy, Outcome, Problem, ReadBack, RenderInput, Rendered, Retry,
    RetryClass, decimal_amount,
};
use crate::journal::{JournalEntry, JournalKind};
use crate::payloads::date_of;
use crate::posting::{ErpPosting, erp_key, kind_dependencies};

/// Document kinds and their entity sets.
const LEDGER: (&str, &str, &str) = (
    "LedgerJournal",
    "LedgerJournalHeaders",
    "LedgerJournalLines",
);
const PAYMENT: (&str, &str, &str) = (
    "CustomerPaymentJournal",
    "CustomerPaymentJournalHeaders",
    "CustomerPaymentJournalLines",
);

/// JSON with exact decimals as strings.
const JSON: &str = "application/json;IEEE754Compatible=true";

/// The Dynamics 365 adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dynamics365;

fn sets(document_kind: &str) -> Option<(&'static str, &'static str)> {
    [LEDGER, PAYMENT]
        .into_iter()
        .find(|(kind, _, _)| *kind == document_kind)
        .map(|(_, headers, lines)| (headers, lines))
}

fn amount(journal: &JournalEntry, minor: i64) -> String {
    format_minor(i128::from(minor), journal.currency.exponent())
}

fn mapping<'a>(input: &'a RenderInput<'_>) -> Result<&'a Dynamics365Mapping, ErpError> {
    input
        .route
        .target
        .dynamics365
        .as_ref()
        .ok_or_else(|| ErpError::Mapping("the route has no dynamics365 keys".into()))
}

/// The journal as `{header, lines}`; `customer_account` is the GL account whose line goes to
/// the customer instead (subledger mode).
fn journal(
    input: &RenderInput<'_>,
    journal_name: &str,
    data_area: &str,
    customer_account: Option<&str>,
) -> Value {
    let j = input.journal;
    let date = date_of(j.posted_at);
    let lines: Vec<Value> = j
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (account_type, account) = match customer_account {
                Some(a) if a == l.account => ("Cust", input.customer_id),
                _ => ("Ledger", l.account.as_str()),
            };
            json!({
                "dataAreaId": data_area,
                "LineNumber": i + 1,
                "TransDate": date,
                "AccountType": account_type,
                "AccountDisplayValue": account,
                "DebitAmount": amount(j, l.debit_minor),
                "CreditAmount": amount(j, l.credit_minor),
                "CurrencyCode": j.currency.code(),
                "Text": j.memo,
            })
        })
        .collect();
    json!({
        "header": {
            "dataAreaId": data_area,
            "JournalName": journal_name,
            "Description": erp_key(ErpKind::Dynamics365, input.external_id),
        },
        "lines": lines,
    })
}

/// A fresh `JournalBatchNumber`: `LF` + 8 characters of base 36.
fn batch_number() -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut n = uuid::Uuid::new_v4().as_u128();
    let mut out = String::from("LF");
    for _ in 0..8 {
        out.push(char::from(DIGITS[(n % 36) as usize]));
        n /= 36;
    }
    out
}

/// The `$batch` body: one change set, the header then every line, all with `batch`.
fn batch_body(
    cx: &Exchange,
    posting: &ErpPosting,
    boundary: &str,
    batch: &str,
) -> Result<String, Failed> {
    let (headers_set, lines_set) = sets(&posting.document_kind).ok_or_else(|| {
        Failed::new(
            FailClass::Mapping,
            format!("unknown d365 document kind {:?}", posting.document_kind),
        )
    })?;
    let mut header = posting.document["header"].clone();
    header["JournalBatchNumber"] = json!(batch);
    // What `find` asks for, also for a document rendered before keys were compacted.
    header["Description"] = json!(posting.erp_key());
    let lines = posting.document["lines"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let changeset = format!("changeset_{boundary}");
    let mut parts = vec![(headers_set, header)];
    for mut line in lines {
        line["JournalBatchNumber"] = json!(batch);
        parts.push((lines_set, line));
    }
    let mut out = format!(
        "--batch_{boundary}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
    );
    for (i, (set, body)) in parts.iter().enumerate() {
        out.push_str(&format!(
            "--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\
             Content-ID: {}\r\n\r\nPOST {} HTTP/1.1\r\nContent-Type: {JSON}\r\n\
             Prefer: return=minimal\r\n\r\n{body}\r\n",
            i + 1,
            cx.url(&format!("/data/{set}")),
        ));
    }
    out.push_str(&format!("--{changeset}--\r\n--batch_{boundary}--\r\n"));
    Ok(out)
}

/// The HTTP status lines and the first JSON body of a `$batch` response.
fn batch_parts(body: &str) -> (Vec<u16>, Option<Value>) {
    let mut statuses = Vec::new();
    let mut error = None;
    for line in body.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("HTTP/1.1 ") {
            if let Some(code) = rest.split_whitespace().next().and_then(|c| c.parse().ok()) {
                statuses.push(code);
            }
        } else if error.is_none() && line.starts_with('{') {
            error = serde_json::from_str(line).ok();
        }
    }
    (statuses, error)
}

fn odata_message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .or_else(|| v["error"]["innererror"]["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn classify(cx: &Exchange, resp: &HttpResponse) -> Problem {
    if let Some(p) = cx.problem_for(resp) {
        return p;
    }
    let message = resp
        .json()
        .map(|v| odata_message(&v))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| ledgerflow_outbox::excerpt(&resp.body));
    let text = cx.redact(&format!("http {}: {message}", resp.status));
    let class = match resp.status {
        401 | 403 => FailClass::Auth,
        _ => FailClass::Client,
    };
    Problem::Failed(Failed::new(class, text))
}

/// `{dataAreaId}/{JournalBatchNumber}` of a journal header row.
fn document_id(row: &Value) -> String {
    format!(
        "{}/{}",
        row["dataAreaId"].as_str().unwrap_or_default(),
        row["JournalBatchNumber"].as_str().unwrap_or_default()
    )
}

/// The debits of a journal's lines in their currency; `None` when the lines disagree on the
/// currency, none is there, or an amount is unreadable.
fn lines_amount(lines: &[Value]) -> Option<ErpAmount> {
    let currency = lines.first()?["CurrencyCode"].as_str()?;
    if lines
        .iter()
        .any(|l| l["CurrencyCode"].as_str() != Some(currency))
    {
        return None;
    }
    decimal_amount(
        currency,
        lines
            .iter()
            .map(|l| &l["DebitAmount"])
            .filter(|v| !v.is_null()),
    )
}

impl Dynamics365 {
    /// `GET /data/{Headers}?$filter=Description eq '<erp key>'&cross-company=true`: the first
    /// journal header carrying the posting's key.
    async fn header(&self, cx: &Exchange, posting: &ErpPosting) -> Result<Option<Value>, Problem> {
        let (headers, _) = known_sets(posting)?;
        // Keys are [A-Za-z0-9_-]: nothing to escape inside the OData literal.
        let url = cx.url(&format!(
            "/data/{headers}?$filter=Description%20eq%20'{}'&cross-company=true",
            posting.erp_key()
        ));
        let rows = get_values(cx, url).await?;
        if rows.len() > 1 {
            tracing::error!(
                external_id = %posting.external_id, copies = rows.len(),
                "d365 holds this journal more than once"
            );
        }
        Ok(rows.into_iter().next())
    }

    /// `GET /data/{Lines}?$filter=JournalBatchNumber eq '..' and dataAreaId eq '..'&
    /// cross-company=true`: the lines of a journal header.
    async fn lines(
        &self,
        cx: &Exchange,
        posting: &ErpPosting,
        header: &Value,
    ) -> Result<Vec<Value>, Problem> {
        let (_, lines) = known_sets(posting)?;
        let literal = |field: &str| -> Result<String, Problem> {
            let v = header[field].as_str().unwrap_or_default();
            // Batch numbers and company ids are alphanumeric; anything else is not ours.
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(Problem::Retry(Retry::new(
                    RetryClass::Server,
                    format!("d365 journal header with an unreadable {field}: {v:?}"),
                )));
            }
            Ok(v.to_owned())
        };
        let (batch, company) = (literal("JournalBatchNumber")?, literal("dataAreaId")?);
        let url = cx.url(&format!(
            "/data/{lines}?$filter=JournalBatchNumber%20eq%20'{batch}'%20and%20dataAreaId%20eq%20\
             '{company}'&cross-company=true"
        ));
        get_values(cx, url).await
    }
}

/// The entity sets of a posting's document kind.
fn known_sets(posting: &ErpPosting) -> Result<(&'static str, &'static str), Problem> {
    sets(&posting.document_kind).ok_or_else(|| {
        Problem::Failed(Failed::new(
            FailClass::Mapping,
            format!("unknown d365 document kind {:?}", posting.document_kind),
        ))
    })
}

/// An OData collection read: its `value` rows.
async fn get_values(cx: &Exchange, url: String) -> Result<Vec<Value>, Problem> {
    let resp = cx
        .call(HttpRequest::get(url).with_header("accept", "application/json"))
        .await?;
    if !resp.is_success() {
        return Err(classify(cx, &resp));
    }
    match resp.json() {
        Some(v) => Ok(v["value"].as_array().cloned().unwrap_or_default()),
        None => Err(Problem::Retry(Retry::new(
            RetryClass::Server,
            cx.redact(&format!(
                "unreadable d365 answer: {}",
                ledgerflow_outbox::excerpt(&resp.body)
            )),
        ))),
    }
}

impl ErpAdapter for Dynamics365 {
    fn kind(&self) -> ErpKind {
        ErpKind::Dynamics365
    }

    fn lookup_policy(&self) -> LookupPolicy {
        LookupPolicy::Always
    }

    fn render(&self, input: &RenderInput<'_>) -> Result<Rendered, ErpError> {
        let m = mapping(input)?;
        let area = m.data_area_id.as_str();
        let accounts = &input.route.accounts;
        let (kind, body) = match (input.route.target.mode, input.journal.kind) {
            (ErpMode::Journal, _) => (LEDGER.0, journal(input, &m.journal_name, area, None)),
            (
                ErpMode::Subledger,
                JournalKind::Invoice | JournalKind::CreditMemo | JournalKind::InvoiceVoid,
            ) => (
                LEDGER.0,
                journal(input, &m.journal_name, area, Some(&accounts.receivable)),
            ),
            (ErpMode::Subledger, JournalKind::Receipt | JournalKind::Refund) => {
                let name = m.payment_journal_name.as_deref().ok_or_else(|| {
                    ErpError::Mapping(
                        "subledger mode needs dynamics365.payment_journal_name".into(),
                    )
                })?;
                (
                    PAYMENT.0,
                    journal(input, name, area, Some(&accounts.unapplied_cash)),
                )
            }
            (ErpMode::Subledger, JournalKind::Application) => {
                return Ok(Rendered::NotPosted {
                    reason: "d365 settles a payment against its invoice on the customer account",
                });
            }
        };
        Ok(Rendered::Document(Document {
            kind: kind.into(),
            body,
            depends_on: kind_dependencies(input),
        }))
    }

    fn find<'a>(&'a self, cx: &'a Exchange, posting: &'a ErpPosting) -> BoxFuture<'a, Lookup> {
        Box::pin(async move {
            match self.header(cx, posting).await {
                Ok(Some(row)) => Lookup::Found {
                    document_id: document_id(&row),
                },
                Ok(None) => Lookup::NotFound,
                Err(p) => p.into(),
            }
        })
    }

    /// The journal found by its `Description`, then its lines read by `JournalBatchNumber`:
    /// the amount is the sum of the lines' `DebitAmount` as D365 holds them.
    fn read_back<'a>(
        &'a self,
        cx: &'a Exchange,
        posting: &'a ErpPosting,
    ) -> BoxFuture<'a, ReadBack> {
        Box::pin(async move {
            let row = match self.header(cx, posting).await {
                Ok(Some(row)) => row,
                Ok(None) => return ReadBack::NotFound,
                Err(p) => return p.into(),
            };
            match self.lines(cx, posting, &row).await {
                Ok(lines) => ReadBack::Found {
                    document_id: document_id(&row),
                    amount: lines_amount(&lines),
                },
                Err(p) => p.into(),
            }
        })
    }

    fn send<'a>(&'a self, cx: &'a Exchange, posting: &'a ErpPosting) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let boundary = uuid::Uuid::new_v4().simple().to_string();
            let batch = batch_number();
            let body = match batch_body(cx, posting, &boundary, &batch) {
                Ok(b) => b,
                Err(f) => return Outcome::Failed(f),
            };
            let req = HttpRequest::post(cx.url("/data/$batch"))
                .with_header("accept", "multipart/mixed")
                .with_header("odata-version", "4.0")
                .body(&format!("multipart/mixed; boundary=batch_{boundary}"), body);
            let resp = match cx.call(req).await {
                Ok(r) => r,
                Err(p) => return p.into(),
            };
            if !resp.is_success() {
                return classify(cx, &resp).into();
            }
            let (statuses, error) = batch_parts(&resp.body);
            let area = posting.document["header"]["dataAreaId"]
                .as_str()
                .unwrap_or_default();
            if !statuses.is_empty() && statuses.iter().all(|s| (200..300).contains(s)) {
                return Outcome::Confirmed {
                    document_id: format!("{area}/{batch}"),
                };
            }
            let failed = statuses.iter().copied().find(|s| *s >= 300).unwrap_or(0);
            let message = error.as_ref().map(odata_message).unwrap_or_default();
            let text = cx.redact(&format!("change set refused: http {failed}: {message}"));
            match failed {
                429 => Outcome::Retry(
                    Retry::new(RetryClass::Throttled, text).after(resp.retry_after()),
                ),
                500..=599 => Outcome::Retry(Retry::new(RetryClass::Server, text)),
                // Our own batch number taken by another journal: try again with another.
                _ if message.contains("already exists") && message.contains(&batch) => {
                    Outcome::Retry(Retry::new(RetryClass::Server, text))
                }
                0 => Outcome::Retry(Retry::new(
                    RetryClass::Server,
                    cx.redact(&format!(
                        "unreadable $batch answer: {}",
                        ledgerflow_outbox::excerpt(&resp.body)
                    )),
                )),
                _ => Outcome::Failed(Failed::new(FailClass::Rejected, text)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::tests::{invoice, line, payment};

    fn render(event: ledgerflow_core::Event, mode: ErpMode, kind: Option<JournalKind>) -> Rendered {
        crate::adapters::test_support::render_with(
            &Dynamics365,
            ErpKind::Dynamics365,
            event,
            mode,
            kind,
        )
    }

    fn inv() -> ledgerflow_core::Event {
        invoice(
            "00000000-0000-4000-8000-000000000001",
            "inv-1",
            vec![
                line("l1", "platform", 2, 1000),
                line("l2", "support", 1, 550),
            ],
            266,
        )
    }

    fn doc(r: Rendered) -> Document {
        match r {
            Rendered::Document(d) => d,
            Rendered::NotPosted { reason } => panic!("{reason}"),
        }
    }

    #[test]
    fn a_general_journal_with_the_external_id_as_description() {
        let d = doc(render(inv(), ErpMode::Journal, None));
        assert_eq!(d.kind, "LedgerJournal");
        assert_eq!(d.body["header"]["Description"], "lf-acme-x-inv");
        assert_eq!(d.body["header"]["dataAreaId"], "usmf");
        assert_eq!(d.body["header"]["JournalName"], "GenJrn");
        let lines = d.body["lines"].as_array().unwrap();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["AccountType"], "Ledger");
        assert_eq!(lines[0]["DebitAmount"], "28.16");
        assert_eq!(lines[0]["CreditAmount"], "0.00");
        assert_eq!(lines[3]["LineNumber"], 4);
    }

    #[test]
    fn subledger_mode_posts_to_the_customer_account() {
        let d = doc(render(inv(), ErpMode::Subledger, None));
        let lines = d.body["lines"].as_array().unwrap();
        assert_eq!(lines[0]["AccountType"], "Cust");
        assert_eq!(lines[0]["AccountDisplayValue"], "cus-1");
        assert_eq!(lines[1]["AccountType"], "Ledger");
        let pay = payment(
            "00000000-0000-4000-8000-000000000002",
            "pay-1",
            "inv-1",
            10_000,
            320,
        );
        let d = doc(render(pay.clone(), ErpMode::Subledger, None));
        assert_eq!(d.kind, "CustomerPaymentJournal");
        assert_eq!(d.body["header"]["JournalName"], "CustPay");
        let cust: Vec<&Value> = d.body["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["AccountType"] == "Cust")
            .collect();
        assert_eq!(cust.len(), 1);
        assert_eq!(cust[0]["CreditAmount"], "100.00");
        assert!(matches!(
            render(pay, ErpMode::Subledger, Some(JournalKind::Application)),
            Rendered::NotPosted { .. }
        ));
    }

    #[test]
    fn batch_numbers_fit_d365_and_responses_parse() {
        let b = batch_number();
        assert_eq!(b.len(), 10);
        assert!(b.starts_with("LF") && b.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(b, batch_number());
        let ok = "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=cs\r\n\r\n--cs\r\n\
                  Content-Type: application/http\r\n\r\nHTTP/1.1 201 Created\r\n\r\n--cs--\r\n";
        assert_eq!(batch_parts(ok).0, [201]);
        let bad = "--batchresponse_1\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 400 Bad Request\r\n\
                   Content-Type: application/json\r\n\r\n{\"error\":{\"code\":\"\",\"message\":\"Write failed\"}}\r\n";
        let (statuses, error) = batch_parts(bad);
        assert_eq!(statuses, [400]);
        assert_eq!(odata_message(&error.unwrap()), "Write failed");
    }
}
