//! The admin API's document edits (`DELETE` and `PATCH /_sim/documents/{id}`): what NetSuite's
//! own API reads afterwards, and that both survive a restart.

mod common;

use common::*;
use serde_json::{Value, json};

const ACCOUNT: &str = "TSTADM1";

fn record_url(h: &Harness, eid: &str) -> String {
    format!(
        "{}/netsuite/{ACCOUNT}/services/rest/record/v1/journalEntry/eid:{eid}",
        h.url
    )
}

async fn netsuite_get(h: &Harness, t: &Tba, eid: &str, nonce: &str) -> (u16, Value) {
    let url = record_url(h, eid);
    let resp = h
        .http
        .get(&url)
        .header("Authorization", tba_header(t, "GET", &url, &[], nonce))
        .send()
        .await
        .expect("get");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn sim_id(h: &Harness, eid: &str) -> String {
    let docs = h.documents("netsuite").await;
    docs.iter()
        .find(|d| d["erp_key"] == eid)
        .and_then(|d| d["id"].as_str())
        .expect("stored")
        .to_owned()
}

#[tokio::test]
async fn deleted_and_edited_documents_read_back_so_through_the_erp_api_after_a_restart() {
    let mut h = start().await;
    let t = tba(ACCOUNT, 1);
    h.provision(json!({ "erp": "netsuite", "account": ACCOUNT,
        "credentials": { "tba": [tba_json(&t)] } }))
        .await;
    for (n, eid) in ["lf-a-1", "lf-a-2"].iter().enumerate() {
        let url = record_url(&h, eid);
        let resp = h
            .http
            .put(&url)
            .header(
                "Authorization",
                tba_header(&t, "PUT", &url, &[], &format!("put-{n}")),
            )
            .json(&json!({ "memo": eid, "line": { "items": [
                { "account": { "id": "1" }, "debit": "10.00" },
                { "account": { "id": "2" }, "credit": "10.00" } ] } }))
            .send()
            .await
            .expect("put");
        assert_eq!(resp.status(), 204);
    }

    let gone = sim_id(&h, "lf-a-1").await;
    let edited = sim_id(&h, "lf-a-2").await;
    let resp = h
        .http
        .delete(format!("{}/_sim/documents/{gone}", h.url))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 200);
    let again = h
        .http
        .delete(format!("{}/_sim/documents/{gone}", h.url))
        .send()
        .await
        .expect("delete again");
    assert_eq!(again.status(), 404);
    let resp = h
        .http
        .patch(format!("{}/_sim/documents/{edited}", h.url))
        .json(&json!({ "memo": "edited", "line": { "items": [
            { "account": { "id": "1" }, "debit": "12.00" } ] } }))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), 200);
    let bad = h
        .http
        .patch(format!("{}/_sim/documents/{edited}", h.url))
        .body("[1]")
        .send()
        .await
        .expect("patch");
    assert_eq!(bad.status(), 400);

    for round in 0..2 {
        let (status, _) = netsuite_get(&h, &t, "lf-a-1", &format!("g1-{round}")).await;
        assert_eq!(status, 404, "deleted (round {round})");
        let (status, body) = netsuite_get(&h, &t, "lf-a-2", &format!("g2-{round}")).await;
        assert_eq!(status, 200);
        assert_eq!(body["memo"], "edited");
        assert_eq!(body["line"]["items"][0]["debit"], "12.00");
        assert_eq!(h.report().await["documents"], 1);
        h.restart().await;
    }
}
