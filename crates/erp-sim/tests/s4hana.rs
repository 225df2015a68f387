//! S/4HANA simulator over real HTTP: basic auth, synchronous posting with confirmation, no
//! dedup, OData read-back by OriginalReferenceDocument, asynchronous bulk with a later,
//! partially failed confirmation.

mod common;

use std::time::Duration;

use common::{Harness, erp, start};
use serde_json::{Value, json};

const SYSTEM: &str = "S4H";

async fn provision(h: &Harness) {
    h.provision(json!({
        "erp": "s4hana", "account": SYSTEM,
        "credentials": { "users": [{ "user": "COMM_USER", "password": "pw" }] },
    }))
    .await;
}

fn entry(reference: &str, debit: &str, credit: &str) -> String {
    format!(
        "<JournalEntryCreateRequest><MessageHeader><ID>SUB-{reference}</ID>\
         <CreationDateTime>2025-01-01T00:00:00Z</CreationDateTime></MessageHeader><JournalEntry>\
         <OriginalReferenceDocumentType>BKPFF</OriginalReferenceDocumentType>\
         <OriginalReferenceDocument>{reference}</OriginalReferenceDocument>\
         <OriginalReferenceDocumentLogicalSystem>LEDGERFLOW</OriginalReferenceDocumentLogicalSystem>\
         <BusinessTransactionType>RFBU</BusinessTransactionType>\
         <AccountingDocumentType>SA</AccountingDocumentType>\
         <DocumentReferenceID>{reference}</DocumentReferenceID>\
         <CreatedByUser>COMM_USER</CreatedByUser><CompanyCode>1010</CompanyCode>\
         <DocumentDate>2025-01-15</DocumentDate><PostingDate>2025-01-15</PostingDate>\
         <Item><ReferenceDocumentItem>1</ReferenceDocumentItem><GLAccount>0012100000</GLAccount>\
         <AmountInTransactionCurrency currencyCode=\"EUR\">{debit}</AmountInTransactionCurrency>\
         <DebitCreditCode>S</DebitCreditCode></Item>\
         <Item><ReferenceDocumentItem>2</ReferenceDocumentItem><GLAccount>0041000000</GLAccount>\
         <AmountInTransactionCurrency currencyCode=\"EUR\">-{credit}</AmountInTransactionCurrency>\
         <DebitCreditCode>H</DebitCreditCode></Item></JournalEntry></JournalEntryCreateRequest>"
    )
}

fn envelope(message_id: &str, entries: &[String]) -> String {
    format!(
        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:sfin=\"http://sap.com/xi/SAPSCORE/SFIN\"><soapenv:Header/><soapenv:Body>\
         <sfin:JournalEntryBulkCreateRequest><MessageHeader><ID>{message_id}</ID>\
         <CreationDateTime>2025-01-01T00:00:00Z</CreationDateTime></MessageHeader>{}\
         </sfin:JournalEntryBulkCreateRequest></soapenv:Body></soapenv:Envelope>",
        entries.join("")
    )
}

fn url(h: &Harness, path: &str) -> String {
    format!("{}/s4hana/{SYSTEM}/{path}", h.url)
}

const SYNC: &str = "sap/bc/srt/scs_ext/sap/journalentrycreaterequestconfi";
const BULK: &str = "sap/bc/srt/scs_ext/sap/journalentrybulkcreationrequest";

#[tokio::test]
async fn synchronous_posting_confirms_and_never_deduplicates() {
    let h = start().await;
    provision(&h).await;
    let resp = h
        .http
        .post(url(&h, SYNC))
        .basic_auth("COMM_USER", Some("bad"))
        .body(envelope("M1", &[entry("LF-T3-E1", "100.00", "100.00")]))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap_or("")
            .starts_with("Basic")
    );

    let mut documents = Vec::new();
    for n in 0..2 {
        let resp = h
            .http
            .post(url(&h, SYNC))
            .basic_auth("COMM_USER", Some("pw"))
            .header("Content-Type", "text/xml")
            .body(envelope(
                &format!("M{n}"),
                &[entry("LF-T3-E1", "100.00", "100.00")],
            ))
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 200);
        let xml = resp.text().await.expect("text");
        assert!(
            xml.contains("<MaximumLogItemSeverityCode>1</MaximumLogItemSeverityCode>"),
            "{xml}"
        );
        let start = xml.find("<AccountingDocument>").expect("doc") + "<AccountingDocument>".len();
        documents.push(xml[start..start + 10].to_owned());
    }
    assert_ne!(documents[0], documents[1]);
    assert_ne!(documents[0], "0000000000");

    // Unbalanced: refused in the log, nothing stored.
    let resp = h
        .http
        .post(url(&h, SYNC))
        .basic_auth("COMM_USER", Some("pw"))
        .body(envelope("M9", &[entry("LF-T3-E2", "100.00", "99.00")]))
        .send()
        .await
        .expect("post");
    let xml = resp.text().await.expect("text");
    assert!(
        xml.contains("<AccountingDocument>0000000000</AccountingDocument>"),
        "{xml}"
    );
    assert!(xml.contains("F5(702)"), "{xml}");

    let resp = h
        .http
        .get(url(
            &h,
            "sap/opu/odata/sap/API_JOURNALENTRYITEMBASIC_SRV/A_JournalEntryItemBasic",
        ))
        .query(&[
            ("$filter", "OriginalReferenceDocument eq 'LF-T3-E1'"),
            ("$format", "json"),
        ])
        .basic_auth("COMM_USER", Some("pw"))
        .send()
        .await
        .expect("read");
    let items: Value = resp.json().await.expect("json");
    assert_eq!(
        items["d"]["results"].as_array().map(Vec::len),
        Some(4),
        "two documents x two items"
    );

    let report = h.report().await;
    assert_eq!(erp(&report, "s4hana")["documents"], 2);
    assert_eq!(erp(&report, "s4hana")["duplicates"], 1);
    assert_eq!(erp(&report, "s4hana")["rejected_auth"], 1);
}

#[tokio::test]
async fn bulk_message_is_confirmed_later_with_partial_failure() {
    let h = start().await;
    provision(&h).await;
    let resp = h
        .http
        .post(url(&h, BULK))
        .basic_auth("COMM_USER", Some("pw"))
        .body(envelope(
            "BULK-1",
            &[
                entry("LF-T3-E5", "5.00", "5.00"),
                entry("LF-T3-E6", "5.00", "4.00"),
            ],
        ))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 202);
    let poll = || {
        h.http
            .get(url(&h, "sim/confirmations"))
            .query(&[("messageId", "BULK-1")])
            .basic_auth("COMM_USER", Some("pw"))
            .send()
    };
    assert_eq!(
        poll().await.expect("poll").status(),
        202,
        "not processed yet"
    );
    assert_eq!(h.documents("s4hana").await.len(), 0);
    let mut xml = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let resp = poll().await.expect("poll");
        if resp.status() == 200 {
            xml = resp.text().await.expect("text");
            break;
        }
    }
    assert_eq!(
        xml.matches("<JournalEntryCreateConfirmation><MessageHeader>")
            .count(),
        2,
        "{xml}"
    );
    assert!(
        xml.contains("<AccountingDocument>0000000000</AccountingDocument>"),
        "{xml}"
    );
    assert_eq!(
        xml.matches("<MaximumLogItemSeverityCode>1<").count(),
        1,
        "{xml}"
    );
    let docs = h.documents("s4hana").await;
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["source_ref"], "LF-T3-E5");
}

#[tokio::test]
async fn a_reference_key_longer_than_20_characters_is_refused_not_truncated() {
    let h = start().await;
    provision(&h).await;
    let long = "lf-acme-00000000-0000-4000-8000-000000000001-inv";
    let resp = h
        .http
        .post(url(&h, SYNC))
        .basic_auth("COMM_USER", Some("pw"))
        .body(envelope("M-LONG", &[entry(long, "10.00", "10.00")]))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 500);
    let text = resp.text().await.expect("body");
    assert!(text.contains("soap-env:Client"), "{text}");
    assert!(
        text.contains("Data loss occurred when converting"),
        "{text}"
    );
    assert_eq!(erp(&h.report().await, "s4hana")["documents"], 0);

    // 20 characters fit.
    let resp = h
        .http
        .post(url(&h, SYNC))
        .basic_auth("COMM_USER", Some("pw"))
        .body(envelope(
            "M-20",
            &[entry("LFSA5MQTBVRUWDCQYTPR", "10.00", "10.00")],
        ))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    assert_eq!(erp(&h.report().await, "s4hana")["documents"], 1);
}
