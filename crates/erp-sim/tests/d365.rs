//! Dynamics 365 simulator over real HTTP: Entra ID client credentials, bearer auth, no dedup of
//! plain POSTs, lookup by external reference, atomic $batch change sets, writes to a company
//! the environment does not have refused, 429 + Retry-After.

mod common;

use common::{Harness, erp, start};
use serde_json::{Value, json};

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const ENV: &str = "contoso-test";

async fn provision(h: &Harness) {
    h.provision(json!({
        "erp": "d365", "account": ENV,
        "credentials": {
            "tenant_id": TENANT,
            "resource": "https://contoso-test.sandbox.operations.dynamics.com",
            "clients": [{ "client_id": "app-1", "client_secret": "s3cret" }],
        },
    }))
    .await;
}

async fn token(h: &Harness, secret: &str) -> reqwest::Response {
    h.http
        .post(format!("{}/d365/login/{TENANT}/oauth2/v2.0/token", h.url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app-1"),
            ("client_secret", secret),
            (
                "scope",
                "https://contoso-test.sandbox.operations.dynamics.com/.default",
            ),
        ])
        .send()
        .await
        .expect("token")
}

async fn bearer(h: &Harness) -> String {
    let resp = token(h, "s3cret").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    body["access_token"].as_str().expect("token").to_owned()
}

fn data(h: &Harness, path: &str) -> String {
    format!("{}/d365/{ENV}/data/{path}", h.url)
}

#[tokio::test]
async fn entra_token_is_required_and_wrong_secrets_are_refused() {
    let h = start().await;
    provision(&h).await;
    let resp = token(&h, "wrong").await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or("")
            .starts_with("AADSTS7000215")
    );

    let resp = h
        .http
        .get(data(&h, "LedgerJournalHeaders"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");

    let t = bearer(&h).await;
    let resp = h
        .http
        .post(data(&h, "LedgerJournalHeaders"))
        .bearer_auth(&t)
        .json(&json!({ "JournalName": "GenJrn", "Description": "lf-t2-e1" }))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.expect("json");
    assert_eq!(created["dataAreaId"], "usmf");
    assert!(created["JournalBatchNumber"].as_str().is_some());

    let resp = h
        .http
        .get(data(&h, "LedgerJournalHeaders"))
        .query(&[("$filter", "Description eq 'lf-t2-e1'")])
        .bearer_auth(&t)
        .send()
        .await
        .expect("get");
    let found: Value = resp.json().await.expect("json");
    assert_eq!(found["value"].as_array().map(Vec::len), Some(1));

    let report = h.report().await;
    assert_eq!(erp(&report, "d365")["rejected_auth"], 2);
    assert_eq!(erp(&report, "d365")["documents"], 1);
}

#[tokio::test]
async fn two_posts_are_two_journals() {
    let h = start().await;
    provision(&h).await;
    let t = bearer(&h).await;
    for _ in 0..2 {
        let resp = h
            .http
            .post(data(&h, "LedgerJournalHeaders"))
            .bearer_auth(&t)
            .json(&json!({ "JournalName": "GenJrn", "Description": "lf-t2-e2" }))
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 201);
    }
    let report = h.report().await;
    assert_eq!(erp(&report, "d365")["documents"], 2);
    assert_eq!(erp(&report, "d365")["duplicates"], 1);
}

fn changeset(batch: &str, lines_for: &str) -> String {
    let header = json!({ "JournalName": "GenJrn", "Description": format!("lf-t2-{batch}"), "JournalBatchNumber": batch });
    let line = |n: u32, dr: f64, cr: f64| {
        json!({ "JournalBatchNumber": lines_for, "LineNumber": n, "AccountDisplayValue": "110110-",
                "DebitAmount": dr, "CreditAmount": cr, "CurrencyCode": "USD" })
    };
    let mut parts = String::new();
    for (id, path, body) in [
        (1, "LedgerJournalHeaders", header),
        (2, "LedgerJournalLines", line(1, 10.0, 0.0)),
        (3, "LedgerJournalLines", line(2, 0.0, 10.0)),
    ] {
        parts.push_str(&format!(
            "--changeset_c1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\
             Content-ID: {id}\r\n\r\nPOST {path}?cross-company=true HTTP/1.1\r\n\
             Content-Type: application/json\r\n\r\n{body}\r\n"
        ));
    }
    format!(
        "--batch_b1\r\nContent-Type: multipart/mixed; boundary=changeset_c1\r\n\r\n{parts}\
         --changeset_c1--\r\n--batch_b1--\r\n"
    )
}

#[tokio::test]
async fn batch_change_sets_are_all_or_nothing() {
    let h = start().await;
    provision(&h).await;
    let t = bearer(&h).await;
    let send = |body: String| {
        h.http
            .post(data(&h, "$batch"))
            .bearer_auth(&t)
            .header("Content-Type", "multipart/mixed; boundary=batch_b1")
            .body(body)
            .send()
    };
    let resp = send(changeset("LF0001", "LF0001")).await.expect("batch");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("text");
    assert_eq!(text.matches("HTTP/1.1 201 Created").count(), 3, "{text}");

    // Lines pointing at a journal that does not exist: the header of the same change set must
    // not be stored either.
    let resp = send(changeset("LF0002", "NOPE")).await.expect("batch");
    let text = resp.text().await.expect("text");
    assert!(text.contains("HTTP/1.1 400"), "{text}");
    assert!(!text.contains("201 Created"), "{text}");

    // Re-sending the first change set: the client-chosen batch number already exists.
    let resp = send(changeset("LF0001", "LF0001")).await.expect("batch");
    assert!(resp.text().await.expect("text").contains("HTTP/1.1 400"));

    let docs = h.documents("d365").await;
    assert_eq!(docs.len(), 1, "{docs:?}");
    let resp = h
        .http
        .get(data(&h, "LedgerJournalLines"))
        .query(&[("$filter", "JournalBatchNumber eq 'LF0001'")])
        .bearer_auth(&t)
        .send()
        .await
        .expect("lines");
    let lines: Value = resp.json().await.expect("json");
    assert_eq!(lines["value"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after() {
    let h = start().await;
    provision(&h).await;
    let resp = h
        .http
        .post(format!("{}/_sim/limits", h.url))
        .json(&json!({ "d365_requests_per_window": 2 }))
        .send()
        .await
        .expect("limits");
    assert_eq!(resp.status(), 200);
    let t = bearer(&h).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..3 {
        let resp = h
            .http
            .get(data(&h, "LedgerJournalHeaders"))
            .bearer_auth(&t)
            .send()
            .await
            .expect("get");
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or("").to_owned());
        }
    }
    assert_eq!(statuses, vec![200, 200, 429]);
    let secs: u64 = retry_after.expect("Retry-After").parse().expect("seconds");
    assert!((1..=300).contains(&secs));
    assert_eq!(erp(&h.report().await, "d365")["throttled"], 1);
}

#[tokio::test]
async fn a_description_longer_than_60_characters_is_refused() {
    let h = start().await;
    provision(&h).await;
    let t = bearer(&h).await;
    let post = |reference: String| {
        h.http
            .post(data(&h, "LedgerJournalHeaders"))
            .bearer_auth(&t)
            .json(&json!({ "JournalName": "GenJrn", "Description": reference }))
            .send()
    };
    let resp = post(format!("lf-{}", "t".repeat(58))).await.expect("post");
    assert_eq!(resp.status(), 400);
    let refused: Value = resp.json().await.expect("json");
    let message = refused["error"]["message"].as_str().expect("message");
    assert!(message.contains("'Description'"), "{refused:#}");
    assert_eq!(erp(&h.report().await, "d365")["documents"], 0);
    let resp = post(format!("lf-{}", "t".repeat(57))).await.expect("post");
    assert_eq!(resp.status(), 201, "60 characters fit");
}

#[tokio::test]
async fn a_company_the_environment_does_not_have_is_refused() {
    let h = start().await;
    provision(&h).await;
    let t = bearer(&h).await;
    let post = |company: &'static str, reference: &'static str| {
        h.http
            .post(data(&h, "LedgerJournalHeaders"))
            .bearer_auth(&t)
            .json(&json!({ "dataAreaId": company, "JournalName": "GenJrn",
                           "Description": reference }))
            .send()
    };
    // Without a `companies` list the environment has the Contoso demo companies.
    let resp = post("DEMF", "lf-t2-demf").await.expect("post");
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.expect("json");
    assert_eq!(created["dataAreaId"], "demf");

    let resp = post("usmx", "lf-t2-typo").await.expect("post");
    assert_eq!(resp.status(), 400);
    let refused: Value = resp.json().await.expect("json");
    let message = refused["error"]["message"].as_str().expect("message");
    assert!(message.contains("'usmx'"), "{refused:#}");
    assert!(message.contains("Legal entities"), "{refused:#}");
    assert_eq!(
        refused["error"]["innererror"]["type"],
        "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException"
    );

    // A change set writing to an unknown company stores nothing of it.
    let body = changeset("LF0009", "LF0009")
        .replace("\"JournalName\"", "\"dataAreaId\":\"zz01\",\"JournalName\"");
    let resp = h
        .http
        .post(data(&h, "$batch"))
        .bearer_auth(&t)
        .header("Content-Type", "multipart/mixed; boundary=batch_b1")
        .body(body)
        .send()
        .await
        .expect("batch");
    let text = resp.text().await.expect("text");
    assert!(text.contains("HTTP/1.1 400"), "{text}");
    assert!(text.contains("'zz01'"), "{text}");
    assert!(!text.contains("201 Created"), "{text}");

    // An environment provisioned with its companies has those (and its default company) only.
    h.provision(json!({
        "erp": "d365", "account": ENV, "default_company": "lfus", "companies": ["LFDE"],
        "credentials": {
            "tenant_id": TENANT,
            "resource": "https://contoso-test.sandbox.operations.dynamics.com",
            "clients": [{ "client_id": "app-1", "client_secret": "s3cret" }],
        },
    }))
    .await;
    let mut statuses = Vec::new();
    for (company, reference) in [
        ("LFUS", "lf-t2-a"),
        ("lfde", "lf-t2-b"),
        ("usmf", "lf-t2-c"),
    ] {
        statuses.push(
            post(company, reference)
                .await
                .expect("post")
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![201, 201, 400]);
    let docs = h.documents("d365").await;
    assert_eq!(docs.len(), 3, "{docs:?}");
    let report = h.report().await;
    assert_eq!(erp(&report, "d365")["documents"], 3);
}
