//! ERP delivery end to end, counted on the ERP's side: `ledgerflow produce --tenants-file
//! --erp-url` spreads the tenants over the four ERPs of `ledgerflow-erp-sim` (t001 and t002
//! share the NetSuite account LFNS01, held to 3 requests in flight by `[[erp_accounts]]`; then
//! Dynamics 365, S/4HANA, Oracle Fusion, NetSuite) and provisions their accounts; `ledgerflow run
//! --consumer erp-receivables --exit-when-idle` posts every journal while 10% of the ERP
//! requests get an injected fault (5xx, 429, slow, and commit-then-drop: the ERP stores the
//! document, then closes the connection without answering). Then the simulator's report must
//! show no document stored twice, exactly one document per confirmed posting, no NetSuite
//! account above its concurrency limit and no concurrency refusal; the outbox must hold only
//! confirmed postings, and `ledgerflow reconcile` must be clean.
//!
//! The second test SIGKILLs `ledgerflow run` three times while it delivers (each at a point
//! drawn from a seeded schedule: after a random number of further documents reached the
//! simulator, so every kill lands mid-delivery whatever the machine's speed), then runs it to
//! idle: still no duplicate and every posting confirmed. A posting in flight at a kill was
//! marked in doubt before its request left, so the next process looks it up before sending.
//! Before the first kill it also reads `ledgerflow_erp_oldest_posting_age_seconds{status="pending"}`
//! from the process's /metrics: the oldest undelivered posting has a non-zero age.
//! `LEDGERFLOW_ERP_KILL_SEED=N` replays a schedule (the machine's timing still varies). The
//! runs shorten the dispatcher's lease (`LEDGERFLOW_ERP_LEASE_MS`, production 120 s) so a row
//! claimed by a killed process is claimed again within seconds, and the consumer's session
//! timeout to 6 s so the next member gets the partitions soon.
//!
//! The simulator runs as its own process, `ledgerflow-erp-sim` beside the `ledgerflow` binary
//! (`LEDGERFLOW_ERP_SIM_BIN` to override); `cargo test --workspace` builds both, otherwise
//! `cargo build -p ledgerflow-cli -p ledgerflow-erp-sim` first.
//!
//! `LEDGERFLOW_ERP_PROOF=full` runs both tests at the scale instead: 50,000 events over
//! 8 tenants (7 ERP accounts), with the run budget and the kill points scaled to match
//! (`make proof-erp` runs it on a release build; the figures are in the README).
//!
//! Figures on the 2-core development machine (debug build, SQLite store, the two tests in
//! parallel beside another build, Kafka already up): 1,200 events over 6 tenants (5 ERP
//! accounts) give 917 postings, all confirmed, 917 documents in the simulator, 0 duplicates,
//! ~1,300 ERP requests with ~125 injected faults (23 to 34 commit-then-drop; 18 to 26 postings
//! confirmed by a lookup after a lost answer). Each run to idle drains in 14 to 26 s; the
//! faults test takes 32 to 46 s, the kills test 36 to 45 s (kills after ~70 to ~130 further
//! documents each), the binary ~45 s in all.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ledgerflow_e2e::erp_sim::ErpSim;
use ledgerflow_e2e::{Ledger, Running, Stack, free_port};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// The scale of a run: `make test`'s, or the full proof's (`LEDGERFLOW_ERP_PROOF=full`).
#[derive(Debug, Clone, Copy)]
struct Scale {
    tenants: u32,
    events: u64,
    /// The longest any single run may take.
    run_budget: Duration,
    /// Further documents before each kill: at least, at most.
    kill_after: (u64, u64),
}

impl Scale {
    fn get() -> Self {
        match std::env::var("LEDGERFLOW_ERP_PROOF").as_deref() {
            Ok("full") => Self {
                tenants: 8,
                events: 50_000,
                run_budget: Duration::from_secs(3_600),
                kill_after: (2_000, 8_000),
            },
            _ => Self {
                tenants: 6,
                events: 1_200,
                run_budget: Duration::from_secs(150),
                kill_after: (40, 140),
            },
        }
    }

    /// Accounts in the simulator: one per tenant, but t001 and t002 share one.
    fn accounts(&self) -> u32 {
        self.tenants - 1
    }
}
/// Injected fault rate and kinds of the simulator.
const FAULT_RATE: &str = "0.1";
const FAULT_KINDS: &str = "5xx,429,slow,drop";
/// The account the first two tenants share, and its limit in the generated tenants file.
const SHARED_ACCOUNT: &str = "LFNS01";
const SHARED_LIMIT: u64 = 3;
/// NetSuite accounts without an `[[erp_accounts]]` entry (ledgerflow's default, and the
/// simulator's limit).
const NETSUITE_DEFAULT_LIMIT: u64 = 5;
/// SIGKILLs before the run to idle.
const KILLS: usize = 3;

/// Dispatcher pacing for tests: short backoff and polls, and a lease a killed process's claims
/// outlive by seconds, not minutes (it must exceed the request timeout).
const RUN_ENV: [(&str, &str); 4] = [
    ("LEDGERFLOW_ERP_BACKOFF_BASE_MS", "100"),
    ("LEDGERFLOW_ERP_POLL_MS", "50"),
    ("LEDGERFLOW_ERP_REQUEST_TIMEOUT_MS", "3000"),
    ("LEDGERFLOW_ERP_LEASE_MS", "4000"),
];

/// Starts the simulator with its state in `state` and the test's faults.
fn start_sim(state: &str, seed: u64) -> ErpSim {
    let seed = seed.to_string();
    ErpSim::start(
        state,
        &[
            "--faults",
            FAULT_RATE,
            "--fault-kinds",
            FAULT_KINDS,
            "--slow-ms",
            "300",
            "--job-delay-ms",
            "300",
            "--seed",
            &seed,
        ],
        Stdio::null(),
    )
}

/// Documents the simulator holds, all ERPs together.
fn documents(sim: &ErpSim) -> u64 {
    sim.report()["documents"].as_u64().unwrap_or(0)
}

/// A stack with its topic produced to, the simulator holding the tenants' accounts, and the
/// paths of the tenants file and the store.
struct Setup {
    stack: Stack,
    sim: ErpSim,
    topic: &'static str,
    tenants: String,
    db: String,
    scale: Scale,
}

impl Setup {
    fn new(topic: &'static str, seed: u64) -> Self {
        let stack = Stack::start();
        stack.create_topic(topic, 3);
        let sim = start_sim(&stack.path("erp-sim"), seed);
        let tenants = stack.path("tenants.toml");
        let db = format!("sqlite://{}", stack.path("ledger.db"));
        let scale = Scale::get();
        let (tenant_count, events) = (scale.tenants.to_string(), scale.events.to_string());
        let produced = stack.ledgerflow_ok(&[
            "produce",
            "--topic",
            topic,
            "--tenants",
            &tenant_count,
            "--events",
            &events,
            "--seed",
            "5",
            "--tenants-file",
            &tenants,
            "--erp-url",
            sim.url(),
        ]);
        let said = String::from_utf8_lossy(&produced.stderr);
        // t001 and t002 share one account.
        let provisioned = format!("provisioned {} erp accounts", scale.accounts());
        assert!(
            said.contains(&provisioned),
            "the simulator's accounts: {said}"
        );
        Self {
            stack,
            sim,
            topic,
            tenants,
            db,
            scale,
        }
    }

    fn run_args(&self, exit_when_idle: bool) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "--consumer",
            "erp-receivables",
            "--tenants",
            &self.tenants,
            "--database",
            &self.db,
            "--topic",
            self.topic,
            "--session-timeout",
            "6s",
            "--format",
            "json",
        ]
        .map(str::to_owned)
        .to_vec();
        if exit_when_idle {
            let max_wait = self.scale.run_budget.as_secs().saturating_sub(10);
            args.extend([
                "--exit-when-idle".to_owned(),
                "3s".to_owned(),
                "--max-wait".to_owned(),
                format!("{max_wait}s"),
            ]);
        }
        args
    }

    /// `ledgerflow run` in the background (stopped by the test), serving /metrics on
    /// `metrics` with the sampler ticking every 300 ms.
    fn spawn(&self, name: &str, metrics: &str) -> Running {
        let mut args = self.run_args(false);
        args.extend(["--metrics-listen".to_owned(), metrics.to_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut env = RUN_ENV.to_vec();
        env.push(("LEDGERFLOW_LAG_INTERVAL_MS", "300"));
        self.stack.spawn_with_env(&args, name, &env)
    }

    /// `ledgerflow run --exit-when-idle` until every posting is confirmed: a drained batch run
    /// keeps delivering for at most a minute after its consumer caught up (the service's
    /// drain deadline), so at the full scale's tens of thousands of postings the next run
    /// picks up where it stopped, as an operator's next run would. Panics past the budget.
    fn run_until_delivered(&self, name: &str) {
        let started = Instant::now();
        for round in 0.. {
            self.run_to_idle(&format!("{name}-{round}"));
            let ledger = Ledger::open(&self.db);
            let unsettled = ledger.scalar(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_outbox WHERE status IN ('pending', 'accepted')",
                &[],
            );
            if unsettled == 0 {
                return;
            }
            assert!(
                started.elapsed() < self.scale.run_budget,
                "{unsettled} postings still undelivered after {round} runs: {:?}",
                states(&ledger)
            );
            eprintln!(
                "{}: {unsettled} postings still to deliver; running again",
                self.topic
            );
        }
    }

    /// `ledgerflow run --exit-when-idle` to its end; panics unless it drained.
    fn run_to_idle(&self, name: &str) {
        let args = self.run_args(true);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut run = self.stack.spawn_with_env(&args, name, &RUN_ENV);
        let started = Instant::now();
        let status = run.wait_timeout(self.scale.run_budget);
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} ended {status:?}:\n{}",
            tail(&run.log())
        );
        eprintln!(
            "{}: {name} drained in {:.1} s",
            self.topic,
            started.elapsed().as_secs_f64()
        );
    }

    /// Everything the ERPs and the outbox say after the last run, asserted; the simulator's
    /// report and the postings confirmed after a lookup.
    fn check_delivery(&self) -> (Value, i64) {
        let ledger = Ledger::open(&self.db);
        let count = |sql: &str| ledger.scalar(sql, &[]);
        let postings = count("SELECT CAST(COUNT(*) AS BIGINT) FROM erp_outbox");
        let confirmed =
            count("SELECT CAST(COUNT(*) AS BIGINT) FROM erp_outbox WHERE status = 'confirmed'");
        // Confirmed by looking the document up: the answer to a send was lost (a dropped
        // connection, a timeout, a kill), so the next attempt asked the ERP first.
        let found = count(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_outbox WHERE history LIKE '%\"found\"%'",
        );
        let report = self.sim.report();
        assert!(postings > 0, "no postings were written");
        assert_eq!(
            confirmed,
            postings,
            "postings left unconfirmed: {:?}",
            states(&ledger)
        );
        assert_eq!(report["duplicates"], 0, "{report:#}");
        assert_eq!(
            report["documents"].as_i64(),
            Some(confirmed),
            "one ERP document per confirmed posting: {report:#}"
        );
        for erp in ["netsuite", "d365", "s4hana", "fusion"] {
            assert!(
                report["erps"][erp]["documents"].as_u64().unwrap_or(0) > 0,
                "nothing reached {erp}: {report:#}"
            );
        }
        assert_eq!(report["rejected_auth"], 0, "{report:#}");

        let accounts = report["accounts"].as_array().expect("accounts");
        let netsuite: Vec<&Value> = accounts.iter().filter(|a| a["erp"] == "netsuite").collect();
        assert!(
            netsuite.iter().any(|a| a["account"] == SHARED_ACCOUNT),
            "{report:#}"
        );
        for account in netsuite {
            let limit = if account["account"] == SHARED_ACCOUNT {
                SHARED_LIMIT
            } else {
                NETSUITE_DEFAULT_LIMIT
            };
            let seen = account["max_concurrency"]
                .as_u64()
                .expect("max_concurrency");
            assert!(seen >= 1 && seen <= limit, "{account:#}");
            // Every 429 NetSuite sent was an injected one: the account limit never refused.
            assert_eq!(
                account["throttled"], account["faults"]["429"],
                "NetSuite refused requests over its concurrency limit: {account:#}"
            );
        }

        let (code, reconcile) = self.stack.reconcile(&self.db, &[]);
        assert_eq!(code, 0, "reconcile is not clean: {reconcile:#}");
        assert_eq!(reconcile["clean"], true, "{reconcile:#}");
        eprintln!(
            "{}: {postings} postings confirmed ({found} after a lookup), ERP documents {}, \
             duplicates {}, requests {}, throttled {}, faults {}",
            self.topic,
            report["documents"],
            report["duplicates"],
            report["requests"],
            report["throttled"],
            report["faults"]
        );
        (report, found)
    }
}

/// Outbox rows by state, for failure messages.
fn states(ledger: &Ledger) -> Vec<(String, i64)> {
    ["pending", "accepted", "confirmed", "failed", "resolved"]
        .into_iter()
        .map(|s| {
            let n = ledger.scalar(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_outbox WHERE status = $1",
                &[s],
            );
            (s.to_owned(), n)
        })
        .collect()
}

/// `ledgerflow_erp_oldest_posting_age_seconds{status="pending"}` from a `/metrics` endpoint.
fn oldest_pending_age(addr: &str) -> f64 {
    const SERIES: &str = "ledgerflow_erp_oldest_posting_age_seconds{status=\"pending\"}";
    let mut stream = TcpStream::connect(addr).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request /metrics");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read /metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(SERIES))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{SERIES} not in /metrics:\n{text}"))
}

/// The last lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn every_posting_reaches_its_erp_once_through_faults() {
    let started = Instant::now();
    let setup = Setup::new("e2e.erp-delivery", 7);
    setup.run_until_delivered("run");
    let (report, found) = setup.check_delivery();
    let faults = &report["faults"];
    assert!(
        faults["drop"].as_u64().unwrap_or(0) > 0,
        "no commit-then-drop fault was drawn: {report:#}"
    );
    assert!(faults["5xx"].as_u64().unwrap_or(0) > 0, "{report:#}");
    assert!(found > 0, "no posting was confirmed after a lost answer");
    eprintln!(
        "every_posting_reaches_its_erp_once_through_faults: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn sigkilled_mid_delivery_three_times_then_run_to_idle_posts_each_document_once() {
    let started = Instant::now();
    let seed = std::env::var("LEDGERFLOW_ERP_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x05ee_de4b);
    eprintln!("erp kill schedule seed {seed} (LEDGERFLOW_ERP_KILL_SEED={seed} to replay)");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let setup = Setup::new("e2e.erp-delivery-kills", 11);

    let mut kills = Vec::new();
    for i in 0..KILLS {
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut run = setup.spawn(&format!("run-{i}"), &metrics);
        // The kill point: this many more documents stored by the ERPs since the start of this
        // run (the first run also has to consume first), plus a few milliseconds.
        let from = documents(&setup.sim);
        let (least, most) = setup.scale.kill_after;
        let more = rng.random_range(least..most);
        let extra_ms = rng.random_range(0..250u64);
        let patience = Duration::from_secs(60).max(setup.scale.run_budget / 4);
        let deadline = Instant::now() + patience;
        while documents(&setup.sim) < from + more {
            assert!(
                run.try_wait().is_none(),
                "run-{i} exited on its own:\n{}",
                tail(&run.log())
            );
            assert!(
                Instant::now() < deadline,
                "run-{i} delivered fewer than {more} documents in {patience:?}:\n{}",
                tail(&run.log())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(extra_ms));
        if i == 0 {
            // Mid-delivery, the sampler reports how long the oldest pending posting has waited.
            let age = oldest_pending_age(&metrics);
            assert!(age > 0.0, "oldest pending posting age {age}");
            eprintln!("run-{i}: oldest pending posting written {age:.1} s ago");
        }
        let before = setup.sim.report();
        assert!(run.sigkill(), "run-{i} was not running at its kill");
        let at = documents(&setup.sim);
        let in_flight: u64 = before["accounts"]
            .as_array()
            .map(|a| a.iter().filter_map(|a| a["in_flight"].as_u64()).sum())
            .unwrap_or(0);
        eprintln!(
            "run-{i}: SIGKILL after {} documents ({in_flight} ERP requests in flight just before)",
            at - from
        );
        kills.push(at);
    }
    assert_eq!(kills.len(), KILLS);
    setup.run_until_delivered("run-final");
    let (report, _) = setup.check_delivery();
    let total = report["documents"].as_u64().unwrap_or(0);
    assert!(
        kills.iter().all(|&at| at < total),
        "every kill fell before the last document: kills at {kills:?} of {total}"
    );
    eprintln!(
        "sigkilled_mid_delivery_three_times_then_run_to_idle_posts_each_document_once: {:.1} s, \
         kills at documents {kills:?} of {total}",
        started.elapsed().as_secs_f64()
    );
}
