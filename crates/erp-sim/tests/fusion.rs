//! Fusion simulator over real HTTP: basic auth, importBulkData returns an ESS request id, the
//! job finishes later and can partially fail, AutoInvoice refuses a repeated flexfield, journal
//! import keeps GROUP_ID and references, read-back by reference.

mod common;

use std::time::Duration;

use common::{Harness, erp, start, zip_one};
use serde_json::{Value, json};

const POD: &str = "fa-test";

async fn provision(h: &Harness) {
    h.provision(json!({
        "erp": "fusion", "account": POD,
        "credentials": { "users": [{ "user": "integration.user", "password": "pw" }] },
    }))
    .await;
}

fn api(h: &Harness, resource: &str) -> String {
    format!(
        "{}/fusion/{POD}/fscmRestApi/resources/11.13.18.05/{resource}",
        h.url
    )
}

async fn import(h: &Harness, job: &str, file: &str, csv: &str) -> String {
    let resp = h
        .http
        .post(api(h, "erpintegrations"))
        .basic_auth("integration.user", Some("pw"))
        .json(&json!({
            "OperationName": "importBulkData",
            "DocumentContent": zip_one(file, csv),
            "ContentType": "zip",
            "FileName": "import.zip",
            "DocumentAccount": "fin$/generalLedger$/import$",
            "JobName": job,
            "ParameterList": "#NULL",
            "CallbackURL": "#NULL",
            "NotificationCode": "10",
        }))
        .send()
        .await
        .expect("import");
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.expect("json");
    body["ReqstId"].as_str().expect("ReqstId").to_owned()
}

async fn status(h: &Harness, id: &str) -> String {
    let resp = h
        .http
        .get(format!(
            "{}?finder=ESSJobStatusRF;requestId={id}",
            api(h, "erpintegrations")
        ))
        .basic_auth("integration.user", Some("pw"))
        .send()
        .await
        .expect("status");
    let body: Value = resp.json().await.expect("json");
    body["items"][0]["RequestStatus"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

async fn wait(h: &Harness, id: &str) -> String {
    for _ in 0..50 {
        let s = status(h, id).await;
        if s != "RUNNING" {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    "TIMEOUT".to_owned()
}

const GL_JOB: &str =
    "/oracle/apps/ess/financials/generalLedger/programs/common,JournalImportLauncher";
const AR_JOB: &str =
    "/oracle/apps/ess/financials/receivables/transactions/autoInvoices,AutoInvoiceImportEss";

#[tokio::test]
async fn journal_import_finishes_later_and_partially_fails() {
    let h = start().await;
    provision(&h).await;
    let resp = h
        .http
        .post(api(&h, "erpintegrations"))
        .basic_auth("integration.user", Some("wrong"))
        .json(&json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 401);

    let header = "STATUS,LEDGER_ID,ACCOUNTING_DATE,USER_JE_SOURCE_NAME,USER_JE_CATEGORY_NAME,\
                  CURRENCY_CODE,DATE_CREATED,ACTUAL_FLAG,SEGMENT1,SEGMENT2,ENTERED_DR,ENTERED_CR,\
                  REFERENCE1,REFERENCE4,GROUP_ID";
    let csv = format!(
        "{header}\nNEW,300,2025/01/31,Ledgerflow,Sales,USD,2025/01/31,A,101,1100,50.00,,B1,lf-t4-e1,777\n\
         NEW,300,2025/01/31,Ledgerflow,Sales,USD,2025/01/31,A,101,4000,,50.00,B1,lf-t4-e1,777\n\
         NEW,300,2025/01/31,Ledgerflow,Sales,USD,2025/01/31,A,101,1100,10.00,,B1,lf-t4-e2,777\n\
         NEW,300,2025/01/31,Ledgerflow,Sales,USD,2025/01/31,A,101,4000,,9.00,B1,lf-t4-e2,777\n"
    );
    let id = import(&h, GL_JOB, "GlInterface.csv", &csv).await;
    assert_eq!(
        status(&h, &id).await,
        "RUNNING",
        "success means the job finished, not the 201"
    );
    assert_eq!(wait(&h, &id).await, "WARNING");

    let resp = h
        .http
        .get(api(&h, "journalBatches"))
        .query(&[("q", "JournalName=lf-t4-e1")])
        .basic_auth("integration.user", Some("pw"))
        .send()
        .await
        .expect("read");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["count"], 1);
    assert_eq!(body["items"][0]["GroupId"], "777");
    assert_eq!(body["items"][0]["BatchName"], "B1");

    // The execution details carry the rejected journal.
    let resp = h
        .http
        .get(format!(
            "{}?finder=ESSJobExecutionDetailsRF;requestId={id},fileType=log",
            api(&h, "erpintegrations")
        ))
        .basic_auth("integration.user", Some("pw"))
        .send()
        .await
        .expect("details");
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["items"][0]["DocumentContent"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );

    let report = h.report().await;
    assert_eq!(erp(&report, "fusion")["documents"], 1);
    assert_eq!(erp(&report, "fusion")["rejected_auth"], 1);
}

#[tokio::test]
async fn autoinvoice_rejects_a_repeated_transaction_flexfield() {
    let h = start().await;
    provision(&h).await;
    let header = "BUSINESS_UNIT_NAME,BATCH_SOURCE_NAME,CUST_TRX_TYPE_NAME,TRX_DATE,CURRENCY_CODE,\
                  LINE_TYPE,AMOUNT,INTERFACE_LINE_CONTEXT,INTERFACE_LINE_ATTRIBUTE1,INTERFACE_LINE_ATTRIBUTE2";
    let csv = |attr2: &str| {
        format!(
            "{header}\nUS1,LEDGERFLOW,Invoice,2025/01/31,USD,LINE,80.00,LEDGERFLOW,lf-t4-inv1,{attr2}\n\
             US1,LEDGERFLOW,Invoice,2025/01/31,USD,LINE,20.00,LEDGERFLOW,lf-t4-inv1,{attr2}b\n"
        )
    };
    let first = import(&h, AR_JOB, "RaInterfaceLinesAll.csv", &csv("1")).await;
    assert_eq!(wait(&h, &first).await, "SUCCEEDED");
    let again = import(&h, AR_JOB, "RaInterfaceLinesAll.csv", &csv("1")).await;
    assert_eq!(
        wait(&h, &again).await,
        "ERROR",
        "same flexfields: every line rejected"
    );
    let report = h.report().await;
    assert_eq!(erp(&report, "fusion")["documents"], 1);
    assert_eq!(erp(&report, "fusion")["duplicates"], 0);

    // Different flexfields for the same source event: AutoInvoice accepts, the report counts it.
    let third = import(&h, AR_JOB, "RaInterfaceLinesAll.csv", &csv("2")).await;
    assert_eq!(wait(&h, &third).await, "SUCCEEDED");
    let report = h.report().await;
    assert_eq!(erp(&report, "fusion")["documents"], 2);
    assert_eq!(erp(&report, "fusion")["duplicates"], 1);

    let resp = h
        .http
        .get(api(&h, "receivablesInvoices"))
        .query(&[("q", "InterfaceLineAttribute1='lf-t4-inv1'")])
        .basic_auth("integration.user", Some("pw"))
        .send()
        .await
        .expect("read");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["count"], 2);
    assert_eq!(body["items"][0]["EnteredAmount"], "100.00");
}

#[tokio::test]
async fn a_flexfield_segment_longer_than_30_characters_rejects_its_transaction() {
    let h = start().await;
    provision(&h).await;
    let header = "BUSINESS_UNIT_NAME,BATCH_SOURCE_NAME,CUST_TRX_TYPE_NAME,TRX_DATE,CURRENCY_CODE,\
                  LINE_TYPE,AMOUNT,INTERFACE_LINE_CONTEXT,INTERFACE_LINE_ATTRIBUTE1,INTERFACE_LINE_ATTRIBUTE2";
    let long = "lf-acme-00000000-0000-4000-8000-000000000001-inv";
    let csv = format!(
        "{header}\nUS1,LEDGERFLOW,Invoice,2025/01/31,USD,LINE,80.00,LEDGERFLOW,{long},1\n\
         US1,LEDGERFLOW,Invoice,2025/01/31,USD,LINE,20.00,LEDGERFLOW,LFSA5MQTBVRUWDCQYTPR,1\n"
    );
    let job = import(&h, AR_JOB, "RaInterfaceLinesAll.csv", &csv).await;
    assert_eq!(
        wait(&h, &job).await,
        "WARNING",
        "one of two transactions loads"
    );
    let report = h.report().await;
    assert_eq!(erp(&report, "fusion")["documents"], 1);
    let resp = h
        .http
        .get(api(&h, "erpintegrations"))
        .query(&[(
            "finder",
            format!("ESSJobExecutionDetailsRF;requestId={job},fileType=log"),
        )])
        .basic_auth("integration.user", Some("pw"))
        .send()
        .await
        .expect("log");
    let body: Value = resp.json().await.expect("json");
    let log = unzip_log(body["items"][0]["DocumentContent"].as_str().expect("log"));
    assert!(log.contains("ORA-12899"), "{log}");
    assert!(log.contains("INTERFACE_LINE_ATTRIBUTE1"), "{log}");
    assert!(log.contains("(actual: 48, maximum: 30)"), "{log}");
}

fn unzip_log(b64: &str) -> String {
    use base64::Engine as _;
    use std::io::Read as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("zip");
    let mut text = String::new();
    zip.by_index(0)
        .expect("entry")
        .read_to_string(&mut text)
        .expect("text");
    text
}
