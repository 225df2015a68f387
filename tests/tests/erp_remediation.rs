//! Remediating a tenant's ERP mapping mistake end to end, on real Kafka and against the ERP
//! simulator as its own process: the tenants file `ledgerflow produce --tenants-file --erp-url`
//! writes is broken for the Dynamics 365 tenant t003 (its company `dataAreaId` "usmx", a typo of
//! "usmf", a legal entity its environment does not have), so D365 refuses every one of its
//! journals (`400`, "…is not found in the relating table 'Legal entities'") and `ledgerflow run
//! --consumer erp-receivables --exit-when-idle` fails them, while the other five tenants'
//! postings (NetSuite, S/4HANA, Oracle Fusion) are confirmed.
//!
//! Then the operator's way out, through the binary: `postings list --status failed` shows the
//! tenant's failed postings (at least 100); `reconcile` exits 1 naming them; the tenants file is
//! fixed; `postings requeue --status failed --tenant t003 --re-render --tenants F` as a dry run
//! counts them and changes nothing; with `--execute` it re-renders them with the corrected
//! company (a new config version) and puts them back to pending; a second run to idle delivers
//! them while D365 answers a tenth of its requests with a 500 or stores the journal and then
//! drops the connection unanswered (the dispatcher looks each one up before sending it again).
//! Afterwards every posting is confirmed, the simulator holds exactly one document per
//! confirmed posting and no duplicate, each refused document is stored once, in company usmf,
//! under its posting's external id; `reconcile` exits 0 and `audit verify` exits 0 (the
//! requeue is an audited operation).
//!
//! The simulator binary is `ledgerflow-erp-sim` beside `ledgerflow` (`LEDGERFLOW_ERP_SIM_BIN` to
//! override): `cargo build -p ledgerflow-cli -p ledgerflow-erp-sim` first.
//!
//! Figures on the 2-core development machine (debug build, SQLite store, Kafka already up,
//! other builds beside it): 1,200 events over 6 tenants give 917 postings; 127 of t003 fail on
//! the first attempt (class `rejected`) while 790 are confirmed; the requeue re-renders all 127
//! (config version changed, document changed); through 14 injected 500s and 15 dropped answers
//! 7 of them are confirmed by the lookup after a lost answer; 917 ERP documents, 0 duplicates.
//! The first run drains in 15-16 s, the second in 3.5 s; the test takes 31-35 s.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ledgerflow_e2e::erp_sim::ErpSim;
use ledgerflow_e2e::{Ledger, Stack};
use serde_json::Value;

const TOPIC: &str = "e2e.erp-remediation";
const TENANTS: &str = "6";
const EVENTS: &str = "1200";
/// The D365 tenant of the generated file (t001/t002 NetSuite, t003 D365, t004 S/4HANA, t005
/// Fusion, t006 NetSuite) and its environment.
const BROKEN_TENANT: &str = "t003";
const BROKEN_ACCOUNT: &str = "lf-d365-t003";
/// Its company as generated, and the typo that breaks it.
const COMPANY: &str = "data_area_id = \"usmf\"";
const TYPO: &str = "data_area_id = \"usmx\"";
/// The fewest failed postings the test accepts: a remediation at scale, not of one posting.
const MIN_FAILED: usize = 100;
/// The longest any single run may take.
const RUN_BUDGET: Duration = Duration::from_secs(90);
const CONSUMER: &str = "erp-receivables";

/// Dispatcher pacing for tests: short backoff and polls.
const RUN_ENV: [(&str, &str); 3] = [
    ("LEDGERFLOW_ERP_BACKOFF_BASE_MS", "100"),
    ("LEDGERFLOW_ERP_POLL_MS", "50"),
    ("LEDGERFLOW_ERP_REQUEST_TIMEOUT_MS", "3000"),
];

/// Injected faults from now on (`POST /_sim/faults`).
fn set_faults(sim: &ErpSim, config: &Value) {
    sim.call("POST", "/_sim/faults", Some(config));
}

/// The top-level documents of one account.
fn account_documents(sim: &ErpSim, erp: &str, account: &str) -> Vec<Value> {
    sim.get(&format!("/_sim/documents?erp={erp}&account={account}"))["documents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The last lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn json(out: &std::process::Output, what: &str) -> Value {
    ledgerflow_e2e::output_json(out, what)
}

/// `ledgerflow run --consumer erp-receivables --exit-when-idle` to its end.
fn run_to_idle(stack: &Stack, tenants: &str, db: &str, name: &str) -> f64 {
    let args = [
        "run",
        "--consumer",
        CONSUMER,
        "--tenants",
        tenants,
        "--database",
        db,
        "--topic",
        TOPIC,
        "--format",
        "json",
        "--exit-when-idle",
        "3s",
        "--max-wait",
        "80s",
    ];
    let started = Instant::now();
    let mut run = stack.spawn_with_env(&args, name, &RUN_ENV);
    let status = run.wait_timeout(RUN_BUDGET);
    assert!(
        status.is_some_and(|s| s.success()),
        "{name} ended {status:?}:\n{}",
        tail(&run.log())
    );
    started.elapsed().as_secs_f64()
}

/// Postings by tenant and state.
fn states(ledger: &Ledger) -> BTreeMap<(String, String), i64> {
    ledger.block_on(async {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT tenant_id, status, CAST(COUNT(*) AS BIGINT) FROM erp_outbox
             GROUP BY tenant_id, status",
        )
        .fetch_all(ledger.pool())
        .await
        .expect("postings by state");
        rows.into_iter().map(|(t, s, n)| ((t, s), n)).collect()
    })
}

/// `postings list --status failed [--tenant T] --format json`.
fn failed_postings(stack: &Stack, db: &str, tenant: Option<&str>) -> Vec<Value> {
    let mut args = vec![
        "postings",
        "list",
        "--status",
        "failed",
        "--database",
        db,
        "--format",
        "json",
    ];
    if let Some(t) = tenant {
        args.extend(["--tenant", t]);
    }
    let out = stack.ledgerflow_ok(&args);
    json(&out, "postings list")
        .as_array()
        .cloned()
        .expect("list")
}

#[test]
fn a_tenant_mapping_error_fails_its_postings_and_a_re_rendered_requeue_delivers_each_once() {
    let started = Instant::now();
    let stack = Stack::start();
    stack.create_topic(TOPIC, 3);
    let sim = ErpSim::start(
        &stack.path("erp-sim"),
        &["--job-delay-ms", "300"],
        Stdio::null(),
    );
    let tenants = stack.path("tenants.toml");
    let db = format!("sqlite://{}", stack.path("ledger.db"));
    let produced = stack.ledgerflow_ok(&[
        "produce",
        "--topic",
        TOPIC,
        "--tenants",
        TENANTS,
        "--events",
        EVENTS,
        "--seed",
        "5",
        "--tenants-file",
        &tenants,
        "--erp-url",
        sim.url(),
    ]);
    let said = String::from_utf8_lossy(&produced.stderr);
    assert!(said.contains("provisioned 5 erp accounts"), "{said}");

    // The mapping mistake: the D365 tenant's company mistyped.
    let good = std::fs::read_to_string(&tenants).expect("tenants file");
    assert_eq!(good.matches(COMPANY).count(), 1, "one D365 tenant:\n{good}");
    std::fs::write(&tenants, good.replace(COMPANY, TYPO)).expect("break the tenants file");

    let first = run_to_idle(&stack, &tenants, &db, "run-broken");
    let ledger = Ledger::open(&db);
    let by_state = states(&ledger);
    let postings: i64 = by_state.values().sum();
    for ((tenant, state), n) in &by_state {
        let expected = if tenant == BROKEN_TENANT {
            "failed"
        } else {
            "confirmed"
        };
        assert_eq!(state, expected, "{n} postings of {tenant}: {by_state:?}");
    }
    let failed = failed_postings(&stack, &db, None);
    assert!(
        failed.len() >= MIN_FAILED,
        "only {} failed postings: {by_state:?}",
        failed.len()
    );
    assert!(
        failed.iter().all(|p| p["tenant_id"] == BROKEN_TENANT
            && p["erp_kind"] == "dynamics365"
            && p["last_error_class"] == "rejected"
            && p["attempts"] == 1
            && p["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("'usmx'"))),
        "{:#}",
        failed[0]
    );
    assert_eq!(
        failed_postings(&stack, &db, Some(BROKEN_TENANT)).len(),
        failed.len()
    );
    // D365 stored nothing of them; everything else reached its ERP once.
    let report = sim.report();
    assert!(
        account_documents(&sim, "d365", BROKEN_ACCOUNT).is_empty(),
        "{report:#}"
    );
    assert_eq!(report["duplicates"], 0, "{report:#}");
    let confirmed_first = postings - failed.len() as i64;
    assert_eq!(report["documents"].as_i64(), Some(confirmed_first));

    // reconcile: unclean, naming the tenant's failed postings.
    let (code, reconcile) = stack.reconcile(&db, &[]);
    assert_eq!(code, 1, "{reconcile:#}");
    assert_eq!(reconcile["clean"], false);
    let erp = &reconcile["tenants"][BROKEN_TENANT]["erp"];
    assert_eq!(erp["failed"].as_u64(), Some(failed.len() as u64), "{erp:#}");
    assert_eq!(erp["undelivered"][0]["state"], "failed", "{erp:#}");

    // Fix the tenants file, then requeue with a re-render: a dry run first.
    std::fs::write(&tenants, &good).expect("fix the tenants file");
    let requeue = |execute: bool| {
        let mut args = vec![
            "postings",
            "requeue",
            "--status",
            "failed",
            "--tenant",
            BROKEN_TENANT,
            "--re-render",
            "--tenants",
            &tenants,
            "--reason",
            "t003 dataAreaId usmx -> usmf",
            "--database",
            &db,
            "--format",
            "json",
        ];
        if execute {
            args.push("--execute");
        }
        let out = stack.ledgerflow_ok(&args);
        json(&out, "postings requeue")
    };
    let list_all = || {
        let out = stack.ledgerflow_ok(&["postings", "list", "--database", &db, "--format", "json"]);
        json(&out, "postings list")
    };
    let before = list_all();
    let dry = requeue(false);
    assert_eq!(dry["executed"], false, "{dry:#}");
    assert_eq!(dry["requeued"].as_u64(), Some(failed.len() as u64));
    assert_eq!(dry["refused"], 0);
    assert_eq!(list_all(), before, "the dry run changed postings");
    assert!(
        ledger.operations(CONSUMER).is_empty(),
        "a dry run is not audited"
    );

    let done = requeue(true);
    assert_eq!(done["executed"], true, "{dry:#}");
    assert_eq!(done["requeued"].as_u64(), Some(failed.len() as u64));
    let lines = done["postings"].as_array().expect("requeued postings");
    assert!(
        lines.iter().all(|l| l["document_changed"] == true
            && l["config_version_before"] != l["config_version_after"]),
        "{:#}",
        lines[0]
    );
    assert!(failed_postings(&stack, &db, None).is_empty());
    let ops = ledger.operations(CONSUMER);
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].event_type.as_deref(), Some("erp_requeue"));

    // The requeued journals go out while D365 answers a tenth of the requests with a 500, or
    // stores the journal and drops the connection before answering: the lookup before each
    // send keeps it to one document per posting.
    set_faults(
        &sim,
        &serde_json::json!({
            "rate": 0.1, "kinds": ["5xx", "drop"], "erp": "d365", "seed": 3
        }),
    );
    let second = run_to_idle(&stack, &tenants, &db, "run-fixed");

    // Every posting confirmed; one document each, no duplicate.
    let by_state = states(&ledger);
    assert!(
        by_state.keys().all(|(_, state)| state == "confirmed"),
        "{by_state:?}"
    );
    assert_eq!(by_state.values().sum::<i64>(), postings);
    let report = sim.report();
    assert_eq!(report["duplicates"], 0, "{report:#}");
    assert_eq!(report["documents"].as_i64(), Some(postings), "{report:#}");
    let injected = &report["erps"]["d365"]["faults"];
    assert!(
        injected["drop"].as_u64().unwrap_or(0) > 0 && injected["5xx"].as_u64().unwrap_or(0) > 0,
        "{report:#}"
    );
    // Requeued postings whose journal D365 stored before it dropped the answer: confirmed by
    // the lookup of the next attempt, not sent again.
    let found = ledger.scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_outbox
         WHERE tenant_id = $1 AND history LIKE '%\"found\"%'",
        &[BROKEN_TENANT],
    );
    assert!(found > 0, "no requeued posting was confirmed by a lookup");
    // Each refused document stored once, in the corrected company, under its external id.
    let stored = account_documents(&sim, "d365", BROKEN_ACCOUNT);
    let mut by_ref: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for doc in &stored {
        by_ref
            .entry(doc["source_ref"].as_str().unwrap_or_default())
            .or_default()
            .push(doc);
    }
    assert_eq!(stored.len(), failed.len());
    for posting in &failed {
        let external = posting["external_id"].as_str().expect("external id");
        let docs = by_ref.get(external).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(docs.len(), 1, "{external}: {docs:#?}");
        assert_eq!(docs[0]["body"]["dataAreaId"], "usmf", "{:#}", docs[0]);
    }

    let (code, reconcile) = stack.reconcile(&db, &[]);
    assert_eq!(code, 0, "{reconcile:#}");
    assert_eq!(reconcile["clean"], true);
    let (code, audit) = stack.audit_verify(&db);
    assert_eq!(code, 0, "{audit:#}");

    eprintln!(
        "{TOPIC}: {postings} postings, {} of {BROKEN_TENANT} failed on its company then requeued \
         re-rendered and confirmed through D365 faults {} ({found} found by a lookup after a \
         lost answer); {} ERP documents, 0 duplicates; runs {first:.1} s and {second:.1} s, \
         {:.1} s in all",
        failed.len(),
        injected,
        report["documents"],
        started.elapsed().as_secs_f64()
    );
}
