//! The simulator as a whole: the binary's first stdout line, the report schema, injected 5xx
//! and down windows counted, reproducible faults with a seed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Harness, erp, start, start_with};
use ledgerflow_erp_sim::FaultConfig;
use serde_json::{Value, json};

async fn fusion(h: &Harness) {
    h.provision(json!({
        "erp": "fusion", "account": "pod",
        "credentials": { "users": [{ "user": "u", "password": "p" }] },
    }))
    .await;
}

fn finder(h: &Harness) -> String {
    format!(
        "{}/fusion/pod/fscmRestApi/resources/11.13.18.05/erpintegrations?finder=ESSJobStatusRF;requestId=1",
        h.url
    )
}

#[test]
fn binary_prints_its_address_first_and_serves_the_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledgerflow-erp-sim"))
        .args(["--listen", "127.0.0.1:0", "--state"])
        .arg(dir.path())
        .args([
            "--faults",
            "0",
            "--seed",
            "3",
            "--netsuite-concurrency",
            "4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    let read = child
        .stdout
        .take()
        .map(|out| BufReader::new(out).read_line(&mut line));
    let url = line.trim().strip_prefix("listening on ").map(str::to_owned);
    let report = url.as_ref().map(|url| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            reqwest::get(format!("{url}/_sim/report"))
                .await
                .expect("get")
                .json::<Value>()
                .await
                .expect("json")
        })
    });
    // Already exited or not: the assertions below are about what it answered.
    child.kill().ok();
    child.wait().ok();
    assert!(matches!(read, Some(Ok(_))), "{read:?}");
    assert!(
        url.as_deref()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
        "first line: {line}"
    );
    let report = report.expect("report");
    for key in [
        "documents",
        "duplicates",
        "rejected_auth",
        "throttled",
        "max_concurrency_per_account",
    ] {
        assert!(report[key].is_number(), "{key} missing in {report}");
    }
    for name in ["netsuite", "d365", "s4hana", "fusion"] {
        assert!(
            report["erps"][name]["documents"].is_number(),
            "{name} missing"
        );
    }
}

#[tokio::test]
async fn injected_server_errors_and_down_windows_are_counted() {
    let h = start().await;
    fusion(&h).await;
    h.set_faults(json!({ "rate": 1.0, "kinds": ["5xx"], "erp": "fusion" }))
        .await;
    let resp = h
        .http
        .get(finder(&h))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 500);
    h.set_faults(json!({ "rate": 1.0, "kinds": ["429"], "erp": "fusion" }))
        .await;
    let resp = h
        .http
        .get(finder(&h))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    h.set_faults(json!({ "rate": 0.0 })).await;

    let resp = h
        .http
        .post(format!("{}/_sim/down", h.url))
        .json(&json!({ "erp": "fusion", "seconds": 30 }))
        .send()
        .await
        .expect("down");
    assert_eq!(resp.status(), 200);
    let resp = h
        .http
        .get(finder(&h))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());

    let report = h.report().await;
    let f = erp(&report, "fusion");
    assert_eq!(f["faults"]["5xx"], 1);
    assert_eq!(f["faults"]["429"], 1);
    assert_eq!(f["faults_total"], 2);
    assert_eq!(f["down"], 1);
    assert_eq!(f["throttled"], 1);
    assert_eq!(report["accounts"][0]["account"], "pod");
}

async fn statuses(seed: u64) -> Vec<u16> {
    let h = start_with(|c| {
        c.seed = seed;
        c.faults = FaultConfig {
            rate: 0.5,
            kinds: vec![
                ledgerflow_erp_sim::FaultKind::ServerError,
                ledgerflow_erp_sim::FaultKind::Throttle,
            ],
            ..FaultConfig::default()
        };
    })
    .await;
    fusion(&h).await;
    let mut out = Vec::new();
    for _ in 0..24 {
        let resp = h
            .http
            .get(finder(&h))
            .basic_auth("u", Some("p"))
            .send()
            .await
            .expect("get");
        out.push(resp.status().as_u16());
    }
    let report = h.report().await;
    let faults = erp(&report, "fusion")["faults_total"].as_u64().unwrap_or(0);
    assert_eq!(faults as usize, out.iter().filter(|s| **s != 200).count());
    out
}

#[tokio::test]
async fn the_same_seed_injects_the_same_faults() {
    let a = statuses(42).await;
    let b = statuses(42).await;
    assert_eq!(a, b);
    assert!(a.contains(&200) && a.iter().any(|s| *s != 200), "{a:?}");
}
