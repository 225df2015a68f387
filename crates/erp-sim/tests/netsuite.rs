//! NetSuite simulator over real HTTP: TBA and M2M auth, no dedup of plain POSTs, external id
//! refusal, PUT eid upsert, SuiteQL read-back, account-wide concurrency limit, commit-then-drop,
//! restart persistence, async idempotency key.

mod common;

use common::{
    Harness, Tba, erp, es256_jwt, es256_key, start, start_with, tba, tba_header, tba_json,
};
use serde_json::{Value, json};

const ACCOUNT: &str = "TSTDRV1";

async fn netsuite(h: &Harness, tokens: &[&Tba]) {
    let tba: Vec<Value> = tokens.iter().map(|t| tba_json(t)).collect();
    h.provision(json!({ "erp": "netsuite", "account": ACCOUNT, "credentials": { "tba": tba } }))
        .await;
}

fn records_url(h: &Harness, rtype: &str) -> String {
    format!(
        "{}/netsuite/{ACCOUNT}/services/rest/record/v1/{rtype}",
        h.url
    )
}

async fn post(h: &Harness, t: &Tba, nonce: &str, rtype: &str, body: &Value) -> reqwest::Response {
    let url = records_url(h, rtype);
    h.http
        .post(&url)
        .header("Authorization", tba_header(t, "POST", &url, &[], nonce))
        .json(body)
        .send()
        .await
        .expect("post")
}

fn journal(memo: &str, external_id: Option<&str>) -> Value {
    let mut body = json!({
        "memo": memo,
        "subsidiary": { "id": "1" },
        "line": { "items": [
            { "account": { "id": "1" }, "debit": 100.25 },
            { "account": { "id": "2" }, "credit": 100.25 },
        ] },
    });
    if let Some(eid) = external_id {
        body["externalId"] = json!(eid);
    }
    body
}

#[tokio::test]
async fn tba_signature_is_checked_and_nonces_are_single_use() {
    let h = start().await;
    let good = tba(ACCOUNT, 1);
    netsuite(&h, &[&good]).await;

    let resp = post(
        &h,
        &good,
        "nonce-0001",
        "journalEntry",
        &journal("lf-t1-e1", None),
    )
    .await;
    assert_eq!(resp.status(), 204);
    let location = resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        location.contains("/services/rest/record/v1/journalEntry/"),
        "{location}"
    );

    // The same nonce again: replay refused with NetSuite's INVALID_LOGIN.
    let resp = post(
        &h,
        &good,
        "nonce-0001",
        "journalEntry",
        &journal("lf-t1-e2", None),
    )
    .await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["o:errorDetails"][0]["o:errorCode"], "INVALID_LOGIN");

    // A wrong token secret.
    let mut forged = tba(ACCOUNT, 1);
    forged.token_secret = "wrong".into();
    let resp = post(
        &h,
        &forged,
        "nonce-0002",
        "journalEntry",
        &journal("x", None),
    )
    .await;
    assert_eq!(resp.status(), 401);

    // No credentials at all.
    let resp = h
        .http
        .post(records_url(&h, "journalEntry"))
        .json(&journal("y", None))
        .send()
        .await;
    assert_eq!(resp.expect("send").status(), 401);

    let report = h.report().await;
    assert_eq!(erp(&report, "netsuite")["rejected_auth"], 3);
    assert_eq!(report["rejected_auth"], 3);
    assert_eq!(erp(&report, "netsuite")["documents"], 1);
}

#[tokio::test]
async fn m2m_client_assertion_gets_a_bearer_token() {
    let h = start().await;
    let (key, pem) = es256_key();
    h.provision(json!({
        "erp": "netsuite", "account": ACCOUNT,
        "credentials": { "m2m": [{ "client_id": "cid", "certificate_id": "cert1", "public_key_pem": pem }] },
    }))
    .await;
    let token_url = format!(
        "{}/netsuite/{ACCOUNT}/services/rest/auth/oauth2/v1/token",
        h.url
    );
    let now = common::now_secs();
    let claims = |aud: &str| json!({ "iss": "cid", "scope": "restlets,rest_webservices", "aud": aud, "iat": now, "exp": now + 3000 });
    let ask = |jwt: String| {
        h.http.post(&token_url).form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", jwt.as_str()),
        ])
    };
    let resp = ask(es256_jwt(&key, "cert1", &claims(&token_url)))
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["expires_in"], "3600");
    let token = body["access_token"].as_str().expect("token").to_owned();

    let resp = h
        .http
        .post(records_url(&h, "invoice"))
        .bearer_auth(&token)
        .json(&json!({ "memo": "lf-t1-inv1", "externalId": "lf-t1-inv1" }))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 204);

    // Wrong audience, wrong kid, and a token signed by another key are all refused.
    let resp = ask(es256_jwt(&key, "cert1", &claims("https://elsewhere/token")))
        .send()
        .await;
    assert_eq!(resp.expect("send").status(), 400);
    let resp = ask(es256_jwt(&key, "other-cert", &claims(&token_url)))
        .send()
        .await;
    assert_eq!(resp.expect("send").status(), 401);
    let (other, _) = es256_key();
    let resp = ask(es256_jwt(&other, "cert1", &claims(&token_url)))
        .send()
        .await;
    assert_eq!(resp.expect("send").status(), 400);
    let resp = h
        .http
        .get(records_url(&h, "invoice") + "/eid:lf-t1-inv1")
        .bearer_auth("nope")
        .send()
        .await;
    assert_eq!(resp.expect("send").status(), 401);

    let report = h.report().await;
    assert_eq!(erp(&report, "netsuite")["rejected_auth"], 4);
    assert_eq!(erp(&report, "netsuite")["documents"], 1);
}

#[tokio::test]
async fn plain_posts_are_not_deduplicated_and_are_counted_as_duplicates() {
    let h = start().await;
    let t = tba(ACCOUNT, 1);
    netsuite(&h, &[&t]).await;
    let a = post(&h, &t, "n-1", "journalEntry", &journal("lf-t1-evt-7", None)).await;
    let b = post(&h, &t, "n-2", "journalEntry", &journal("lf-t1-evt-7", None)).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (204, 204));
    assert_ne!(
        a.headers()["location"],
        b.headers()["location"],
        "two records, two ids"
    );
    let report = h.report().await;
    assert_eq!(report["documents"], 2);
    assert_eq!(report["duplicates"], 1);
    assert_eq!(report["duplicate_keys"][0]["key"], "lf-t1-evt-7");
}

#[tokio::test]
async fn second_post_with_the_same_external_id_is_refused_across_transaction_types() {
    let h = start().await;
    let t = tba(ACCOUNT, 1);
    netsuite(&h, &[&t]).await;
    let resp = post(
        &h,
        &t,
        "n-1",
        "journalEntry",
        &journal("m", Some("LF-T1-E9")),
    )
    .await;
    assert_eq!(resp.status(), 204);
    // Same id in another case and on another transaction type: one namespace, case-insensitive.
    let resp = post(
        &h,
        &t,
        "n-2",
        "invoice",
        &json!({ "externalId": "lf-t1-e9" }),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["o:errorDetails"][0]["o:errorCode"], "DUP_RCRD");
    // Characters outside letters, digits, _ and - are refused.
    let resp = post(
        &h,
        &t,
        "n-3",
        "invoice",
        &json!({ "externalId": "lf:t1:e9" }),
    )
    .await;
    assert_eq!(resp.status(), 400);
    // An unbalanced journal is refused.
    let mut bad = journal("u", Some("lf-t1-e10"));
    bad["line"]["items"][1]["credit"] = json!(100.24);
    assert_eq!(
        post(&h, &t, "n-4", "journalEntry", &bad).await.status(),
        400
    );
    let report = h.report().await;
    assert_eq!(report["documents"], 1);
    assert_eq!(report["duplicates"], 0);
}

#[tokio::test]
async fn put_eid_upserts_and_reads_back_by_external_id() {
    let h = start().await;
    let t = tba(ACCOUNT, 1);
    netsuite(&h, &[&t]).await;
    let url = records_url(&h, "journalEntry") + "/eid:lf-t1-e20";
    let mut locations = Vec::new();
    for (n, memo) in ["first", "second"].iter().enumerate() {
        let resp = h
            .http
            .put(&url)
            .header(
                "Authorization",
                tba_header(&t, "PUT", &url, &[], &format!("put-{n}")),
            )
            .json(&journal(memo, None))
            .send()
            .await
            .expect("put");
        assert_eq!(resp.status(), 204);
        locations.push(resp.headers()["location"].to_str().expect("loc").to_owned());
    }
    assert_eq!(
        locations[0], locations[1],
        "an upsert re-send updates the same record"
    );

    let resp = h
        .http
        .get(&url)
        .header("Authorization", tba_header(&t, "GET", &url, &[], "get-1"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    let record: Value = resp.json().await.expect("json");
    assert_eq!(record["memo"], "second");
    assert_eq!(record["externalId"], "lf-t1-e20");

    let q_url = format!(
        "{}/netsuite/{ACCOUNT}/services/rest/query/v1/suiteql",
        h.url
    );
    let query =
        json!({ "q": "SELECT id, externalid FROM transaction WHERE externalid = 'lf-t1-e20'" });
    let resp = h
        .http
        .post(&q_url)
        .header("Authorization", tba_header(&t, "POST", &q_url, &[], "q-1"))
        .header("Prefer", "transient")
        .json(&query)
        .send()
        .await
        .expect("suiteql");
    assert_eq!(resp.status(), 200);
    let rows: Value = resp.json().await.expect("json");
    assert_eq!(rows["count"], 1);
    assert_eq!(rows["items"][0]["externalid"], "lf-t1-e20");
    // Unsupported SQL is an error, not a guess.
    let resp = h
        .http
        .post(&q_url)
        .header("Authorization", tba_header(&t, "POST", &q_url, &[], "q-2"))
        .header("Prefer", "transient")
        .json(&json!({ "q": "SELECT * FROM transaction WHERE externalid LIKE 'lf%'" }))
        .send()
        .await
        .expect("suiteql");
    assert_eq!(resp.status(), 400);

    let report = h.report().await;
    assert_eq!(report["documents"], 1);
    assert_eq!(report["duplicates"], 0);
}

#[tokio::test]
async fn account_concurrency_limit_is_shared_by_credentials_and_never_exceeded() {
    let h = start_with(|c| c.limits.netsuite_concurrency = 2).await;
    let t1 = tba(ACCOUNT, 1);
    let t2 = tba(ACCOUNT, 2);
    netsuite(&h, &[&t1, &t2]).await;
    // Every admitted request is held 300 ms, so parallel requests overlap.
    h.set_faults(json!({ "rate": 1.0, "kinds": ["slow"], "slow_ms": 300 }))
        .await;
    let mut tasks = Vec::new();
    for n in 0..8 {
        let t = if n % 2 == 0 { &t1 } else { &t2 };
        let url = records_url(&h, "invoice");
        let auth = tba_header(t, "POST", &url, &[], &format!("par-{n}"));
        let http = h.http.clone();
        tasks.push(tokio::spawn(async move {
            http.post(&url)
                .header("Authorization", auth)
                .json(&json!({ "memo": format!("m{n}") }))
                .send()
                .await
        }));
    }
    let mut statuses = Vec::new();
    let mut codes = Vec::new();
    for task in tasks {
        let resp = task.await.expect("join").expect("send");
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            assert!(resp.headers().get("retry-after").is_none());
            let body: Value = resp.json().await.expect("json");
            codes.push(
                body["o:errorDetails"][0]["o:errorCode"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            );
        }
    }
    let ok = statuses.iter().filter(|s| **s == 204).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert!(ok >= 2 && throttled >= 1, "statuses {statuses:?}");
    assert!(codes.iter().all(|c| c == "CONCURRENCY_LIMIT_EXCEEDED"));
    let report = h.report().await;
    assert_eq!(report["max_concurrency_per_account"], 2);
    assert_eq!(report["throttled"], throttled);
    assert_eq!(report["documents"], ok);
}

#[tokio::test]
async fn commit_then_drop_stores_the_record_and_the_client_sees_a_connection_error() {
    let h = start().await;
    let t = tba(ACCOUNT, 1);
    netsuite(&h, &[&t]).await;
    h.set_faults(json!({ "rate": 1.0, "kinds": ["drop"], "erp": "netsuite" }))
        .await;
    let url = records_url(&h, "journalEntry");
    let result = h
        .http
        .post(&url)
        .header("Authorization", tba_header(&t, "POST", &url, &[], "drop-1"))
        .json(&journal("lf-t1-e30", Some("lf-t1-e30")))
        .send()
        .await;
    assert!(
        result.is_err(),
        "expected a connection error, got {result:?}"
    );
    h.set_faults(json!({ "rate": 0.0 })).await;
    let docs = h.documents("netsuite").await;
    assert_eq!(docs.len(), 1, "the write happened");
    assert_eq!(docs[0]["erp_key"], "lf-t1-e30");
    // The client's retry with the same externalId is refused, the upsert is safe.
    let resp = post(
        &h,
        &t,
        "drop-2",
        "journalEntry",
        &journal("lf-t1-e30", Some("lf-t1-e30")),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let report = h.report().await;
    assert_eq!(erp(&report, "netsuite")["faults"]["drop"], 1);
    assert_eq!(report["documents"], 1);
}

#[tokio::test]
async fn documents_and_accounts_survive_a_restart() {
    let mut h = start().await;
    let t = tba(ACCOUNT, 1);
    netsuite(&h, &[&t]).await;
    assert_eq!(
        post(
            &h,
            &t,
            "r-1",
            "invoice",
            &json!({ "externalId": "lf-t1-r1" })
        )
        .await
        .status(),
        204
    );
    h.restart().await;
    let url = records_url(&h, "invoice") + "/eid:lf-t1-r1";
    let resp = h
        .http
        .get(&url)
        .header("Authorization", tba_header(&t, "GET", &url, &[], "r-2"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    assert_eq!(h.report().await["documents"], 1);
}

#[tokio::test]
async fn async_idempotency_key_points_a_repeat_at_the_first_job() {
    let h = start().await;
    let t = tba(ACCOUNT, 1);
    netsuite(&h, &[&t]).await;
    let url = records_url(&h, "invoice");
    let send = |nonce: &'static str| {
        h.http
            .post(&url)
            .header("Authorization", tba_header(&t, "POST", &url, &[], nonce))
            .header("Prefer", "respond-async")
            .header(
                "X-NetSuite-Idempotency-Key",
                "5b2b0a3e-0c59-4a6e-9d7e-3f1d7b0a1c11",
            )
            .json(&json!({ "memo": "lf-t1-a1" }))
            .send()
    };
    let first = send("a-1").await.expect("send");
    assert_eq!(first.status(), 202);
    let job = first.headers()["location"]
        .to_str()
        .expect("loc")
        .to_owned();
    let again = send("a-2").await.expect("send");
    assert_eq!(again.status(), 400);
    assert_eq!(again.headers()["location"].to_str().expect("loc"), job);
    let body: Value = again.json().await.expect("json");
    assert_eq!(
        body["o:errorDetails"][0]["o:errorCode"],
        "IDEMPOTENCY_ERROR"
    );
    let resp = h
        .http
        .get(&job)
        .header("Authorization", tba_header(&t, "GET", &job, &[], "a-3"))
        .send()
        .await
        .expect("job");
    let status: Value = resp.json().await.expect("json");
    assert_eq!(status["progress"], "succeeded");
    assert_eq!(h.report().await["documents"], 1);
}
