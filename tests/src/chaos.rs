//! The chaos suite: seeded fault scenarios on a 3-broker Apache Kafka cluster that count the
//! ledger afterwards.
//!
//! Every scenario produces a workload with `ledgerflow produce` (its manifest is the oracle: every
//! tenant's documents, money and the duplicates sent by design), runs `ledgerflow` consumers
//! (erp-receivables and warehouse) while a schedule of faults drawn from the seed hits them,
//! drains with one last `--exit-when-idle` run, and checks the invariants:
//!
//! - nothing lost: every record of the topic has a decision of each consumer, every distinct
//!   event of the handled types is in the inbox once, and the dead letters are exactly the bad
//!   records sent on purpose, by reason;
//! - no duplicate effect: no offset decided twice (outside operator redrives), no document
//!   journaled or warehoused twice;
//! - money: per tenant and currency the journals and the warehouse equal the oracle to the minor
//!   unit; reconcile against the manifest is clean;
//! - the audit chain verifies; positions of record equal the group's committed offsets;
//! - the ERPs: every scenario's tenants are spread over the four ERPs of one
//!   `ledgerflow-erp-sim` (started by the suite with 10% injected faults of every kind, 5xx,
//!   429, slow and commit-then-drop, seeded from the scenario's seed), so the erp-receivables
//!   consumer's dispatcher delivers every posting to it while the faults hit. After the drain
//!   the suite waits until the ERP outbox is drained; then no document may be stored twice in
//!   an ERP (the simulator's `duplicates`), the ERPs must hold exactly one document per
//!   confirmed posting, and every posting must be confirmed (none failed or left pending);
//! - no panics in any process log.
//!
//! The schedule (what happened when) and the recovery times go into the report; a seed replays
//! the same schedule (the machine's timing still varies).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ledgerflow_codec::contracts::CONTRACTS;
use ledgerflow_codec::{HEADER_LEN, RegistryClient, encode_frame};
use ledgerflow_core::{Event, EventType, ReasonCode, SchemaId};
use ledgerflow_loadgen::{GeneratedEvent, Workload, WorkloadConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::erp_sim::ErpSim;
use crate::{
    EventProducer, KafkaCluster, Ledger, PgDatabase, RawRecord, Running, Stack, block_on, generate,
};

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A few minutes, for `make test`.
    Short,
    /// The documented run (`make chaos`): 1,000,000 events in the kill scenario.
    Full,
}

impl Profile {
    /// `short` or `full`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "short" => Some(Self::Short),
            "full" => Some(Self::Full),
            _ => None,
        }
    }

    /// Events the producer sends. Every event of the ERP types becomes a posting the ERPs must
    /// confirm before the scenario is counted (about 0.7 per event); on the 2-core development
    /// machine a debug build delivers some 35 to 70 postings a second through the faults (the
    /// shared NetSuite account of the two busiest tenants allows 3 requests in flight), so the
    /// short profile produces no faster than that.
    fn events(self, scenario: Kind) -> u64 {
        match (self, scenario) {
            (Self::Short, Kind::Kills) => 5_000,
            (Self::Short, _) => 4_000,
            (Self::Full, Kind::Kills | Kind::Combined) => 1_000_000,
            (Self::Full, _) => 200_000,
        }
    }

    /// kill -9s of the kill scenario (every other one at a failpoint, the three in turn).
    fn kills(self) -> usize {
        match self {
            Self::Short => 6,
            Self::Full => 20,
        }
    }

    /// How long the `erp` scenario keeps one ERP down.
    fn erp_down(self) -> u64 {
        match self {
            Self::Short => 20,
            Self::Full => 60,
        }
    }
}

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// kill -9 of ledgerflow at random points, including inside the commit windows
    /// (failpoints).
    Kills,
    /// Three instances, stopped and started every few seconds (classic protocol).
    RebalanceClassic,
    /// The same with KIP-848.
    RebalanceKip848,
    /// kill -9 of the leader of the busiest partition three times, and a controller restart,
    /// while the producer writes with acks=all.
    Brokers,
    /// A Postgres restart and a 20 s SIGSTOP of Postgres.
    Postgres,
    /// The registry down for 30 s while records of a schema id no consumer has cached arrive.
    Registry,
    /// Every kind of bad bytes, schema and payload mixed into the stream.
    Malformed,
    /// The ERPs: one of the four down (503 + Retry-After) for 60 s while ledgerflow is aborted
    /// at the `erp.after_send` failpoint (a request sent, its outcome not recorded) and killed
    /// -9 mid-delivery; the 10% injected ERP faults of every scenario run throughout.
    Erp,
    /// Everything above in one run.
    Combined,
}

impl Kind {
    /// Every scenario, in run order.
    pub const ALL: [Kind; 9] = [
        Kind::Malformed,
        Kind::Registry,
        Kind::Kills,
        Kind::RebalanceClassic,
        Kind::RebalanceKip848,
        Kind::Brokers,
        Kind::Postgres,
        Kind::Erp,
        Kind::Combined,
    ];

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kills => "kills",
            Kind::RebalanceClassic => "rebalance-classic",
            Kind::RebalanceKip848 => "rebalance-kip848",
            Kind::Brokers => "brokers",
            Kind::Postgres => "postgres",
            Kind::Registry => "registry",
            Kind::Malformed => "malformed",
            Kind::Erp => "erp",
            Kind::Combined => "combined",
        }
    }

    /// By name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == raw)
    }
}

/// One fault or notable moment, at a time since the scenario started.
#[derive(Debug, Clone)]
pub struct FaultEvent {
    /// Since the scenario started.
    pub at: Duration,
    /// What happened.
    pub what: String,
}

/// The invariant table of one scenario: every field a number a reader expects to be zero
/// (or equal to `events`), so a glance finds a problem.
#[derive(Debug, Clone, Default)]
pub struct Invariants {
    /// Records in the topic (oracle events sent plus bad records sent on purpose).
    pub events: i64,
    /// Records without a decision, plus distinct events of the handled types missing from the
    /// inbox, plus designed dead letters missing.
    pub lost: i64,
    /// Offsets decided twice, documents journaled or warehoused twice, and dead letters no
    /// bad record was designed to cause.
    pub duplicate_effects: i64,
    /// Documents stored twice in an ERP (the simulator's `duplicates`; `None`: no simulator
    /// in this run).
    pub duplicate_erp_documents: Option<i64>,
    /// |documents the ERPs hold - postings confirmed in the outbox|.
    pub erp_documents_mismatch: Option<i64>,
    /// Postings of the ERP outbox not confirmed once it drained (failed, or still pending).
    pub postings_not_confirmed: Option<i64>,
    /// Sum over tenants, currencies and document kinds of |ledger - oracle|, in minor units,
    /// for the journals and for the warehouse facts.
    pub money_difference: i64,
    /// Reconcile against the manifest found differences (0 or 1).
    pub reconcile_dirty: i64,
    /// Audit chains that did not verify.
    pub broken_chains: i64,
    /// Partitions whose position of record differs from the group's committed offset.
    pub position_mismatches: i64,
    /// Panics in any process log.
    pub panics: i64,
}

impl Invariants {
    /// Whether every invariant holds.
    pub fn hold(&self) -> bool {
        self.lost == 0
            && self.duplicate_effects == 0
            && self.duplicate_erp_documents.unwrap_or(0) == 0
            && self.erp_documents_mismatch.unwrap_or(0) == 0
            && self.postings_not_confirmed.unwrap_or(0) == 0
            && self.money_difference == 0
            && self.reconcile_dirty == 0
            && self.broken_chains == 0
            && self.position_mismatches == 0
            && self.panics == 0
    }
}

/// What one scenario did and found.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    /// Scenario.
    pub kind: Kind,
    /// Its seed (derived from the run's seed and the scenario).
    pub seed: u64,
    /// Wall time.
    pub duration: Duration,
    /// Faults and milestones.
    pub schedule: Vec<FaultEvent>,
    /// Time from a fault to the next committed progress.
    pub recoveries: Vec<(String, Duration)>,
    /// The counts.
    pub invariants: Invariants,
    /// Details worth a line (dead letters by reason, ...).
    pub notes: Vec<String>,
}

const CONSUMERS: [&str; 2] = ["erp-receivables", "warehouse"];
const ERP_TYPES: [&str; 4] = [
    "invoice_finalized",
    "payment_captured",
    "credit_memo_issued",
    "customer_upserted",
];
const PARTITIONS: u32 = 12;
/// Exact re-sends in the produced stream, by design.
const DUPLICATES: f64 = 0.05;
const TENANTS: u32 = 16;
/// The simulator's injected fault rate and kinds in every scenario (`drop`: the ERP stores the
/// document, then closes the connection without answering).
const ERP_FAULT_RATE: &str = "0.1";
const ERP_FAULT_KINDS: &str = "5xx,429,slow,drop";
/// The four ERPs, by their simulator names.
const ERPS: [&str; 4] = ["netsuite", "d365", "s4hana", "fusion"];
/// Dispatcher pacing for the suite's members: short backoff and polls, and a lease that a
/// killed member's claims outlive by seconds, not minutes (it must exceed the request timeout).
/// A down ERP answers 503 with `Retry-After`, which the dispatcher honours, so a 60 s window
/// costs a posting one attempt, not ten.
const ERP_ENV: [(&str, &str); 4] = [
    ("LEDGERFLOW_ERP_BACKOFF_BASE_MS", "100"),
    ("LEDGERFLOW_ERP_POLL_MS", "50"),
    ("LEDGERFLOW_ERP_REQUEST_TIMEOUT_MS", "3000"),
    ("LEDGERFLOW_ERP_LEASE_MS", "4000"),
];
/// The failpoints a kill can be armed with: inside the batch transaction, between the database
/// commit and the Kafka offset mirror, and between an ERP request and its recorded outcome.
const FAILPOINTS: [&str; 3] = [
    "store.before_commit",
    "erp.after_send",
    "runtime.before_offset_commit",
];

/// The suite's simulator: its faults drawn from the scenario's seed, its log in a file.
fn start_erp_sim(state: &str, log: &str, seed: u64) -> ErpSim {
    let log = std::fs::File::create(log).expect("simulator log");
    let seed = seed.to_string();
    ErpSim::start(
        state,
        &[
            "--faults",
            ERP_FAULT_RATE,
            "--fault-kinds",
            ERP_FAULT_KINDS,
            "--slow-ms",
            "300",
            "--job-delay-ms",
            "300",
            "--seed",
            &seed,
        ],
        log.into(),
    )
}

/// Documents one ERP of the simulator holds.
fn erp_documents(sim: &ErpSim, erp: &str) -> i64 {
    sim.report()["erps"][erp]["documents"].as_i64().unwrap_or(0)
}

/// `POST /_sim/down`: every request to `erp` answers 503 for `seconds`.
fn erp_down(sim: &ErpSim, erp: &str, seconds: u64) {
    sim.call(
        "POST",
        "/_sim/down",
        Some(&serde_json::json!({ "erp": erp, "seconds": seconds })),
    );
}

/// The scenario's seed: the run's seed mixed with the scenario's name, so every scenario has
/// its own schedule and `--scenario X --seed S` replays the one of a full run.
pub fn scenario_seed(seed: u64, kind: Kind) -> u64 {
    kind.name()
        .bytes()
        .fold(seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Runs scenarios on one 3-node cluster and returns their reports.
pub fn run(kinds: &[Kind], seed: u64, profile: Profile) -> Vec<ScenarioReport> {
    let started = Instant::now();
    let mut stack = Stack::with_cluster(KafkaCluster::start(3));
    eprintln!(
        "chaos: 3-node cluster {} up in {:?}; seed {seed}",
        stack.brokers,
        started.elapsed()
    );
    kinds
        .iter()
        .map(|kind| {
            let seed = scenario_seed(seed, *kind);
            eprintln!("chaos: scenario {} (seed {seed})", kind.name());
            let report = Scenario::new(&mut stack, *kind, seed, profile).run();
            eprintln!(
                "chaos: {} {} in {:?}",
                kind.name(),
                if report.invariants.hold() {
                    "held"
                } else {
                    "FAILED"
                },
                report.duration
            );
            report
        })
        .collect()
}

/// A designed bad record: the bytes and the reason it must be dead-lettered with.
#[derive(Debug, Clone)]
pub struct BadRecord {
    /// What it is.
    pub name: String,
    /// The reason code it must get.
    pub reason: String,
    /// Record to send.
    pub record: RawRecord,
}

struct Scenario<'a> {
    stack: &'a mut Stack,
    kind: Kind,
    seed: u64,
    profile: Profile,
    rng: ChaCha8Rng,
    started: Instant,
    topic: String,
    db: PgDatabase,
    manifest: String,
    tenants: String,
    schedule: Vec<FaultEvent>,
    recoveries: Vec<(String, Duration)>,
    /// Bad records sent, by reason.
    designed: BTreeMap<String, i64>,
    /// Logs of every process started (for the panic count).
    logs: Vec<String>,
    members: Vec<Running>,
    spawned: usize,
    notes: Vec<String>,
    protocol: &'static str,
    /// Events the producer sends.
    events: u64,
    /// The ERPs the tenants post to.
    erp: ErpSim,
}

impl<'a> Scenario<'a> {
    fn new(stack: &'a mut Stack, kind: Kind, seed: u64, profile: Profile) -> Self {
        let topic = format!("chaos.{}.{seed}", kind.name());
        // Room for a record over ledgerflow's 1 MiB limit (the too_large dead letter); the
        // broker's own default limit is about the same 1 MiB.
        stack
            .kafka()
            .create_topic_with(&topic, PARTITIONS, &[("max.message.bytes", "2097152")]);
        let manifest = stack.path(&format!("{}-manifest.json", kind.name()));
        let tenants = stack.path(&format!("{}-tenants.toml", kind.name()));
        let erp_log = stack.path(&format!("{}-erp-sim.log", kind.name()));
        let erp = start_erp_sim(
            &stack.path(&format!("{}-erp-sim", kind.name())),
            &erp_log,
            seed,
        );
        Self {
            db: PgDatabase::create(&format!("lf_chaos_{}", kind.name().replace('-', "_"))),
            stack,
            kind,
            seed,
            profile,
            rng: ChaCha8Rng::seed_from_u64(seed),
            started: Instant::now(),
            topic,
            manifest,
            tenants,
            schedule: Vec::new(),
            recoveries: Vec::new(),
            designed: BTreeMap::new(),
            logs: vec![erp_log],
            members: Vec::new(),
            spawned: 0,
            notes: Vec::new(),
            protocol: if kind == Kind::RebalanceKip848 {
                "consumer"
            } else {
                "classic"
            },
            events: profile.events(kind),
            erp,
        }
    }

    /// The first distinct items the producer sends (the workload streamed with the
    /// producer's own settings: any other count or duplicate ratio gives another stream).
    fn produced(&self, take: usize) -> Vec<GeneratedEvent> {
        Workload::new(WorkloadConfig {
            tenants: TENANTS,
            events: self.events,
            duplicates: DUPLICATES,
            seed: self.seed,
            out_of_order: 0.0,
            ..WorkloadConfig::default()
        })
        .expect("workload")
        .filter(|g| !g.duplicate)
        .take(take)
        .collect()
    }

    fn log(&mut self, what: impl Into<String>) {
        let what = what.into();
        let at = self.started.elapsed();
        eprintln!("chaos:   {:>7.1}s {what}", at.as_secs_f64());
        self.schedule.push(FaultEvent { at, what });
    }

    fn ledger(&self) -> Ledger {
        Ledger::open(&self.db.url)
    }

    /// Records decided by the erp-receivables consumer so far.
    fn committed(&self, ledger: &Ledger) -> i64 {
        ledger
            .positions()
            .iter()
            .filter(|p| p.consumer == CONSUMERS[0] && p.topic == self.topic)
            .map(|p| p.next_offset)
            .sum()
    }

    fn member_args(&self, extra: &[String]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--log-format",
            "json",
            "run",
            "--consumer",
            CONSUMERS[0],
            "--consumer",
            CONSUMERS[1],
            "--database",
            &self.db.url,
            "--topic",
            &self.topic,
            "--tenants",
            &self.tenants,
            "--batch-max-records",
            "300",
            "--format",
            "json",
            "--group-protocol",
            self.protocol,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if self.protocol == "classic" {
            args.extend(["--session-timeout".to_owned(), "8s".to_owned()]);
        }
        args.extend(extra.iter().cloned());
        args
    }

    /// Starts a member (with `env`, e.g. a failpoint, besides the ERP pacing).
    fn spawn_member(&mut self, extra: &[String], env: &[(&str, &str)]) -> usize {
        let args = self.member_args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut env_all = ERP_ENV.to_vec();
        env_all.extend_from_slice(env);
        self.spawned += 1;
        let name = format!("{}-member-{}", self.kind.name(), self.spawned);
        let member = self.stack.spawn_with_env(&args, &name, &env_all);
        self.logs.push(self.stack.path(&format!("{name}.log")));
        self.members.push(member);
        self.members.len() - 1
    }

    fn spawn_producer(&mut self, events: u64, rate: u64) -> Running {
        let seed = self.seed.to_string();
        let args = [
            "produce",
            "--topic",
            &self.topic,
            "--tenants",
            &TENANTS.to_string(),
            "--events",
            &events.to_string(),
            "--duplicates",
            &DUPLICATES.to_string(),
            "--seed",
            &seed,
            "--rate",
            &rate.to_string(),
            "--manifest",
            &self.manifest,
            "--tenants-file",
            &self.tenants,
            "--erp-url",
            self.erp.url(),
        ];
        let producer = self
            .stack
            .spawn(&args, &format!("{}-produce", self.kind.name()));
        self.logs.push(
            self.stack
                .path(&format!("{}-produce.log", self.kind.name())),
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        while !Path::new(&self.tenants).exists() {
            assert!(
                Instant::now() < deadline,
                "the producer wrote no tenants file"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        producer
    }

    /// Waits until the erp consumer commits past `beyond`; returns how long it took.
    fn wait_progress(&self, ledger: &Ledger, beyond: i64, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.committed(ledger) > beyond {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn run(mut self) -> ScenarioReport {
        let events = self.events;
        // The producer's pace spreads the workload over the scenario's faults.
        let seconds = match (self.profile, self.kind) {
            // Each kill costs a session timeout (8 s) before the next member takes over.
            (Profile::Short, Kind::Kills) => 100,
            (Profile::Short, _) => 40,
            (Profile::Full, Kind::Kills | Kind::Combined) => 400,
            (Profile::Full, _) => 120,
        };
        let rate = (events / seconds).max(20);
        let mut producer = self.spawn_producer(events, rate);
        self.log(format!("producing {events} events at {rate}/s"));
        let ledger = self.ledger();
        match self.kind {
            Kind::Kills => self.kills(&ledger, &mut producer),
            Kind::RebalanceClassic | Kind::RebalanceKip848 => {
                self.rebalance_storm(&ledger, &mut producer)
            }
            Kind::Brokers => self.broker_kills(&ledger, &mut producer),
            Kind::Postgres => self.postgres(&ledger, &mut producer),
            Kind::Registry => self.registry_outage(&ledger, &mut producer),
            Kind::Malformed => self.malformed(&ledger, &mut producer),
            Kind::Erp => self.erp_outage(&ledger, &mut producer),
            Kind::Combined => self.combined(&ledger, &mut producer),
        }
        let status = producer
            .wait_timeout(Duration::from_secs(3600))
            .expect("the producer finishes");
        assert!(status.success(), "produce failed:\n{}", producer.log());
        self.log("producer finished");
        if self.kind != Kind::Malformed {
            // Conflicts and mismatches only make sense after the originals are in the topic.
            let late = self.late_bad_records();
            self.send_bad(&late);
        }
        self.drain(&ledger);
        self.drain_erp(&ledger);
        let invariants = self.check(&ledger);
        if !invariants.hold() || std::env::var_os("CHAOS_KEEP_LOGS").is_some() {
            let dir = self.keep_logs();
            self.notes
                .push(format!("process logs kept in {}", dir.display()));
        }
        ScenarioReport {
            kind: self.kind,
            seed: self.seed,
            duration: self.started.elapsed(),
            schedule: self.schedule,
            recoveries: self.recoveries,
            invariants,
            notes: self.notes,
        }
    }

    /// Copies every process log of the scenario out of the scratch directory (which goes with
    /// the stack) to `$CHAOS_LOG_DIR` (default the system temp dir).
    fn keep_logs(&self) -> PathBuf {
        let base = std::env::var_os("CHAOS_LOG_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = base.join(format!(
            "ledgerflow-chaos-{}-{}",
            self.kind.name(),
            self.seed
        ));
        std::fs::create_dir_all(&dir).expect("log directory");
        for log in &self.logs {
            let from = Path::new(log);
            if let Some(name) = from.file_name() {
                std::fs::copy(from, dir.join(name)).ok();
            }
        }
        dir
    }

    /// kill -9 at random moments; every other one is a failpoint inside a commit window (the
    /// three of [`FAILPOINTS`] in turn): the working member hands over (SIGTERM) to one armed to
    /// abort itself at its n-th pass through the window.
    fn kills(&mut self, ledger: &Ledger, producer: &mut Running) {
        let mut current = self.spawn_member(&[], &[]);
        for i in 0..self.profile.kills() {
            if producer.try_wait().is_some() {
                self.log(format!("producer done after {i} kills; no more kills"));
                break;
            }
            let before = self.committed(ledger);
            self.wait_progress(ledger, before, Duration::from_secs(120));
            if i % 2 == 1 {
                let point = FAILPOINTS[(i / 2) % FAILPOINTS.len()];
                let nth = self.rng.random_range(2..12);
                let spec = format!("{point}=nth:{nth}");
                self.members[current].sigterm(Duration::from_secs(40));
                current = self.spawn_member(&[], &[("LEDGERFLOW_FAILPOINTS", spec.as_str())]);
                match self.members[current].wait_timeout(Duration::from_secs(90)) {
                    Some(status) => self.log(format!(
                        "kill {}: member {} aborted itself at failpoint {point} (pass {nth}; {status})",
                        i + 1,
                        current + 1
                    )),
                    None => {
                        self.members[current].sigkill();
                        self.log(format!(
                            "kill {}: failpoint {point} did not fire within 90 s; kill -9 of member {}",
                            i + 1,
                            current + 1
                        ));
                    }
                }
            } else {
                let delay = self.rng.random_range(300..2500);
                std::thread::sleep(Duration::from_millis(delay));
                self.members[current].sigkill();
                self.log(format!(
                    "kill {}: kill -9 of member {} mid-run",
                    i + 1,
                    current + 1
                ));
            }
            let killed = Instant::now();
            let at = self.committed(ledger);
            current = self.spawn_member(&[], &[]);
            if let Some(took) = self.wait_progress(ledger, at, Duration::from_secs(120)) {
                self.recoveries
                    .push((format!("kill {}", i + 1), killed.elapsed().max(took)));
            }
        }
        self.members[current].sigterm(Duration::from_secs(40));
    }

    fn rebalance_storm(&mut self, ledger: &Ledger, producer: &mut Running) {
        for _ in 0..3 {
            self.spawn_member(&[], &[]);
        }
        self.log(format!("3 members, group protocol {}", self.protocol));
        let rounds = match self.profile {
            Profile::Short => 6,
            Profile::Full => 20,
        };
        let mut live: Vec<usize> = (0..3).collect();
        for round in 0..rounds {
            if producer.try_wait().is_some() {
                break;
            }
            let pause = self.rng.random_range(2000..5000);
            std::thread::sleep(Duration::from_millis(pause));
            let pick = self.rng.random_range(0..live.len());
            let victim = live.remove(pick);
            let graceful = self.rng.random_bool(0.5);
            if graceful {
                let status = self.members[victim].sigterm(Duration::from_secs(40));
                self.log(format!(
                    "round {}: SIGTERM member {} ({})",
                    round + 1,
                    victim + 1,
                    status.map_or("timeout".to_owned(), |s| s.to_string())
                ));
            } else {
                self.members[victim].sigkill();
                self.log(format!(
                    "round {}: kill -9 member {}",
                    round + 1,
                    victim + 1
                ));
            }
            let before = self.committed(ledger);
            let stopped = Instant::now();
            live.push(self.spawn_member(&[], &[]));
            if let Some(took) = self.wait_progress(ledger, before, Duration::from_secs(90)) {
                self.recoveries
                    .push((format!("round {}", round + 1), stopped.elapsed().max(took)));
            }
        }
        for i in live {
            self.members[i].sigterm(Duration::from_secs(40));
        }
    }

    fn broker_kills(&mut self, ledger: &Ledger, producer: &mut Running) {
        self.spawn_member(&[], &[]);
        self.wait_progress(ledger, 0, Duration::from_secs(120));
        for round in 1..=3 {
            std::thread::sleep(Duration::from_secs(self.rng.random_range(3..8)));
            if producer.try_wait().is_some() {
                self.log("producer done; no more broker kills");
                break;
            }
            let kafka = self.stack.kafka();
            let hw = kafka.high_watermarks(&self.topic);
            let (&busiest, _) = hw.iter().max_by_key(|(_, h)| **h).expect("partitions");
            let leader = kafka
                .partitions(&self.topic)
                .and_then(|p| p.into_iter().find(|i| i.partition == busiest))
                .map_or(-1, |i| i.leader);
            if leader <= 0 {
                self.log(format!(
                    "round {round}: partition {busiest} has no leader; skipped"
                ));
                continue;
            }
            let before = self.committed(ledger);
            kafka.kill(leader);
            let killed = Instant::now();
            self.log(format!(
                "round {round}: kill -9 of broker {leader}, leader of partition {busiest}"
            ));
            if let Some(took) = self.wait_progress(ledger, before, Duration::from_secs(120)) {
                self.recoveries
                    .push((format!("broker kill {round}"), killed.elapsed().max(took)));
            }
            self.stack.kafka().restart(leader);
            self.log(format!("round {round}: broker {leader} restarted"));
        }
        // A controller restart: the quorum's leader, stopped gracefully and started again.
        if let Some(controller) = quorum_leader(self.stack) {
            let before = self.committed(ledger);
            self.stack.kafka().restart(controller);
            self.log(format!("controller (quorum leader) {controller} restarted"));
            let restarted = Instant::now();
            if let Some(took) = self.wait_progress(ledger, before, Duration::from_secs(120)) {
                self.recoveries.push((
                    "controller restart".to_owned(),
                    restarted.elapsed().max(took),
                ));
            }
        } else {
            self.notes
                .push("the quorum leader could not be read; no controller restart".to_owned());
        }
        self.members[0].sigterm(Duration::from_secs(40));
    }

    fn postgres(&mut self, ledger: &Ledger, producer: &mut Running) {
        self.spawn_member(&[], &[]);
        self.wait_progress(ledger, 0, Duration::from_secs(120));
        std::thread::sleep(Duration::from_secs(self.rng.random_range(2..6)));
        let before = self.committed(ledger);
        let down = Instant::now();
        crate::postgres::restart(Duration::from_secs(2));
        self.log(format!("Postgres restarted (down {:?})", down.elapsed()));
        if let Some(took) = self.wait_progress(ledger, before, Duration::from_secs(120)) {
            self.recoveries
                .push(("Postgres restart".to_owned(), down.elapsed().max(took)));
        }
        if producer.try_wait().is_none() {
            std::thread::sleep(Duration::from_secs(self.rng.random_range(2..6)));
            let before = self.committed(ledger);
            let paused = Instant::now();
            crate::postgres::pause(Duration::from_secs(20));
            self.log("Postgres paused (SIGSTOP) for 20 s");
            if let Some(took) = self.wait_progress(ledger, before, Duration::from_secs(120)) {
                self.recoveries
                    .push(("Postgres pause".to_owned(), paused.elapsed().max(took)));
            }
        }
        self.members[0].sigterm(Duration::from_secs(40));
    }

    /// The registry goes down for 30 s; meanwhile records under a schema id no consumer has
    /// resolved yet arrive: they must wait (their partitions pause), never be dead-lettered.
    fn registry_outage(&mut self, ledger: &Ledger, _producer: &mut Running) {
        self.spawn_member(&[], &[]);
        self.wait_progress(ledger, 0, Duration::from_secs(120));
        let fresh = self.fresh_schema_records();
        self.stack.stop_registry();
        self.log("registry stopped");
        let producer = EventProducer::new_without_registry(self.stack, &self.topic);
        for r in &fresh {
            producer.send_raw(r.clone());
        }
        self.log(format!(
            "{} copies of produced events sent under a new schema id during the outage",
            fresh.len()
        ));
        std::thread::sleep(Duration::from_secs(30));
        let before = self.committed(ledger);
        self.stack.start_registry();
        let back = Instant::now();
        self.log("registry started again");
        if let Some(took) = self.wait_progress(ledger, before, Duration::from_secs(120)) {
            self.recoveries
                .push(("registry back".to_owned(), back.elapsed().max(took)));
        }
        self.members[0].sigterm(Duration::from_secs(40));
    }

    fn malformed(&mut self, ledger: &Ledger, producer: &mut Running) {
        self.spawn_member(&[], &[]);
        self.wait_progress(ledger, 0, Duration::from_secs(120));
        let early = self.early_bad_records();
        let kinds = early.len();
        // Spread them over the stream.
        for chunk in early.chunks(4) {
            self.send_bad(chunk);
            if producer.try_wait().is_none() {
                std::thread::sleep(Duration::from_millis(self.rng.random_range(200..1200)));
            }
        }
        producer.wait_timeout(Duration::from_secs(600));
        let late = self.late_bad_records();
        let total = kinds + late.len();
        self.send_bad(&late);
        self.log(format!("{total} kinds of bad records sent"));
        self.notes.push(format!("{total} kinds of bad records"));
        self.members[0].sigterm(Duration::from_secs(40));
    }

    /// One ERP down (503 with `Retry-After`) for the profile's window; meanwhile a member is
    /// aborted at the `erp.after_send` failpoint (a request sent, the ERP may have stored the
    /// document, the outcome not recorded) and another killed -9 mid-delivery. The recovery is
    /// the time from the window's end to the next document that ERP stores.
    fn erp_outage(&mut self, ledger: &Ledger, producer: &mut Running) {
        let mut current = self.spawn_member(&[], &[]);
        self.wait_progress(ledger, 0, Duration::from_secs(120));
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.erp.report()["documents"].as_i64().unwrap_or(0) == 0 && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        let erp = ERPS[self.rng.random_range(0..ERPS.len())];
        let seconds = self.profile.erp_down();
        erp_down(&self.erp, erp, seconds);
        let down = Instant::now();
        self.log(format!(
            "{erp} down for {seconds} s (503 + Retry-After); {} ERP documents so far",
            self.erp.report()["documents"]
        ));
        let nth = self.rng.random_range(2..12);
        self.members[current].sigterm(Duration::from_secs(40));
        let spec = format!("erp.after_send=nth:{nth}");
        current = self.spawn_member(&[], &[("LEDGERFLOW_FAILPOINTS", spec.as_str())]);
        match self.members[current].wait_timeout(Duration::from_secs(90)) {
            Some(status) => self.log(format!(
                "member {} aborted itself at failpoint erp.after_send (pass {nth}; {status})",
                current + 1
            )),
            None => {
                self.members[current].sigkill();
                self.log(format!(
                    "failpoint erp.after_send did not fire within 90 s; kill -9 of member {}",
                    current + 1
                ));
            }
        }
        // While it is down the ERP stores nothing (the requests in flight at the start have
        // ended by now).
        let before = erp_documents(&self.erp, erp);
        let killed = Instant::now();
        let at = self.committed(ledger);
        current = self.spawn_member(&[], &[]);
        if let Some(took) = self.wait_progress(ledger, at, Duration::from_secs(120)) {
            self.recoveries.push((
                "erp.after_send abort".to_owned(),
                killed.elapsed().max(took),
            ));
        }
        if producer.try_wait().is_none() {
            std::thread::sleep(Duration::from_millis(self.rng.random_range(300..2500)));
            self.members[current].sigkill();
            self.log(format!("kill -9 of member {} mid-delivery", current + 1));
            let killed = Instant::now();
            let at = self.committed(ledger);
            current = self.spawn_member(&[], &[]);
            if let Some(took) = self.wait_progress(ledger, at, Duration::from_secs(120)) {
                self.recoveries
                    .push(("kill -9".to_owned(), killed.elapsed().max(took)));
            }
        }
        let window = Duration::from_secs(seconds);
        if let Some(left) = window.checked_sub(down.elapsed()) {
            std::thread::sleep(left);
        }
        self.log(format!(
            "{erp}'s down window over ({before} documents there)"
        ));
        let back = down + window;
        while back.elapsed() < Duration::from_secs(120) {
            if erp_documents(&self.erp, erp) > before {
                self.recoveries.push((
                    format!("{erp} up again (window end to its next document)"),
                    back.elapsed(),
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.members[current].sigterm(Duration::from_secs(40));
    }

    fn combined(&mut self, ledger: &Ledger, producer: &mut Running) {
        self.kills(ledger, producer);
        self.erp_outage(ledger, producer);
        self.broker_kills(ledger, producer);
        self.postgres(ledger, producer);
        self.registry_outage(ledger, producer);
        let early = self.early_bad_records();
        self.send_bad(&early);
    }

    fn send_bad(&mut self, records: &[BadRecord]) {
        if records.is_empty() {
            return;
        }
        let producer = EventProducer::new_without_registry(self.stack, &self.topic);
        for bad in records {
            producer.send_raw(bad.record.clone());
            *self.designed.entry(bad.reason.clone()).or_default() += 1;
        }
    }

    /// Copies of produced events re-framed under a schema id the registry issues now (the v1
    /// writer text with a doc string: same bytes, new id). Applied as duplicates.
    fn fresh_schema_records(&mut self) -> Vec<RawRecord> {
        let stream = self.produced(200);
        let client = RegistryClient::new(&self.stack.registry, Duration::from_secs(10))
            .expect("registry client");
        let producer = EventProducer::new(self.stack, &self.topic);
        let invoice_v1 = CONTRACTS
            .iter()
            .find(|c| c.event_type == EventType::InvoiceFinalized && c.version == 1)
            .expect("the invoice v1 contract");
        let text = with_doc(invoice_v1.text, &format!("chaos {}", self.seed));
        let id = block_on(client.register(&format!("{}-chaos-fresh", self.topic), &text))
            .expect("registering the fresh schema");
        stream
            .iter()
            // Written with the v1 writer like the copies, so the copies decode to the same
            // payload (a v2 original would carry a field v1 cannot: an idempotency conflict).
            .filter(|g| {
                g.event.event_type() == EventType::InvoiceFinalized && g.writer_version == 1
            })
            .take(20)
            .map(|g| {
                let framed = producer.encode(&g.event, 1);
                let body = framed[HEADER_LEN..].to_vec();
                let tenant = g.event.tenant_id_raw().to_owned();
                RawRecord {
                    key: Some(tenant.clone().into_bytes()),
                    value: Some(encode_frame(id, &body)),
                    headers: vec![("tenant_id".to_owned(), tenant)],
                    partition: None,
                }
            })
            .collect()
    }

    /// Bad bytes, schemas and payloads that do not depend on the stream's order.
    fn early_bad_records(&mut self) -> Vec<BadRecord> {
        bad_records(self.stack, &self.topic, self.seed, &mut self.rng)
    }

    /// Bad records that refer to produced events (an id reused with another payload, a key
    /// naming another tenant): sent after the originals.
    fn late_bad_records(&mut self) -> Vec<BadRecord> {
        let stream = self.produced(400);
        let producer = EventProducer::new(self.stack, &self.topic);
        let invoice = stream
            .iter()
            .find(|g| g.event.event_type() == EventType::InvoiceFinalized)
            .expect("an invoice");
        let mut conflicting = invoice.event.clone();
        if let Event::InvoiceFinalized(e) = &mut conflicting {
            e.source = format!("{}-changed", e.source);
        }
        let tenant = invoice.event.tenant_id_raw().to_owned();
        let other = stream
            .iter()
            .find(|g| g.event.tenant_id_raw() != tenant)
            .expect("another tenant's event");
        vec![
            BadRecord {
                name: "event id reused with another payload".into(),
                reason: ReasonCode::IdempotencyConflict.as_str().into(),
                record: keyed(&producer, &conflicting, 1, &tenant),
            },
            BadRecord {
                name: "record key and header name another tenant than the payload".into(),
                reason: ReasonCode::TenantMismatch.as_str().into(),
                record: keyed(&producer, &other.event, other.writer_version, &tenant),
            },
        ]
    }

    /// Stops every member, then one last run drains everything and leaves the group.
    fn drain(&mut self, ledger: &Ledger) {
        for m in &mut self.members {
            if m.try_wait().is_none() {
                m.sigterm(Duration::from_secs(40));
            }
        }
        let started = Instant::now();
        let index = self.spawn_member(
            &[
                "--exit-when-idle".to_owned(),
                "3s".to_owned(),
                "--max-wait".to_owned(),
                "30m".to_owned(),
            ],
            &[],
        );
        let status = self.members[index]
            .wait_timeout(Duration::from_secs(3600))
            .expect("the final run ends");
        assert!(
            status.success(),
            "the final run drains (exit {status}):\n{}",
            self.members[index].log()
        );
        self.log(format!(
            "drained by the final run in {:?} ({} committed)",
            started.elapsed(),
            self.committed(ledger)
        ));
    }

    /// Postings the ERP dispatcher may still deliver.
    fn open_postings(ledger: &Ledger) -> i64 {
        ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_outbox \
             WHERE status IN ('pending', 'accepted')",
            &[],
        )
    }

    /// Waits until the ERP outbox is drained. The final run delivers what is due for up to a
    /// minute after its consumers drained; while postings are left (a backoff or a job still
    /// running), further `--exit-when-idle` runs take over, as long as each makes progress
    /// (each delivers for up to a minute), for an hour at most.
    fn drain_erp(&mut self, ledger: &Ledger) {
        let started = Instant::now();
        let mut open = Self::open_postings(ledger);
        let mut runs = 0;
        while open > 0 && started.elapsed() < Duration::from_secs(3600) {
            runs += 1;
            let index = self.spawn_member(
                &[
                    "--exit-when-idle".to_owned(),
                    "3s".to_owned(),
                    "--max-wait".to_owned(),
                    "30m".to_owned(),
                ],
                &[],
            );
            let status = self.members[index]
                .wait_timeout(Duration::from_secs(3600))
                .expect("the ERP drain run ends");
            assert!(
                status.success(),
                "the ERP drain run (exit {status}):\n{}",
                self.members[index].log()
            );
            let left = Self::open_postings(ledger);
            if left >= open {
                self.notes.push(format!(
                    "{left} ERP postings still open after {runs} runs past the drain"
                ));
                break;
            }
            open = left;
        }
        self.log(format!(
            "ERP outbox drained {:.1} s after the final run ({runs} more runs, {open} open)",
            started.elapsed().as_secs_f64()
        ));
    }

    /// The ERP side: the simulator's report against the outbox.
    fn check_erp(&mut self, ledger: &Ledger, inv: &mut Invariants) {
        let count = |sql: &str| ledger.scalar(sql, &[]);
        let postings = count("SELECT CAST(COUNT(*) AS BIGINT) FROM erp_outbox");
        let confirmed =
            count("SELECT CAST(COUNT(*) AS BIGINT) FROM erp_outbox WHERE status = 'confirmed'");
        let failed =
            count("SELECT CAST(COUNT(*) AS BIGINT) FROM erp_outbox WHERE status = 'failed'");
        // Confirmed by a lookup: the answer to a send was lost (a dropped connection, a
        // timeout, a kill), so the next attempt asked the ERP first.
        let found = count(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_outbox WHERE history LIKE '%\"found\"%'",
        );
        let report = self.erp.report();
        let documents = report["documents"].as_i64().unwrap_or(-1);
        inv.duplicate_erp_documents = Some(report["duplicates"].as_i64().unwrap_or(-1));
        inv.erp_documents_mismatch = Some((documents - confirmed).abs());
        inv.postings_not_confirmed = Some(if postings == 0 {
            self.notes.push("no ERP postings were written".to_owned());
            1
        } else {
            postings - confirmed
        });
        self.notes.push(format!(
            "ERP: {postings} postings, {confirmed} confirmed ({found} by a lookup after a lost \
             answer), {failed} failed; the simulator holds {documents} documents, {} \
             duplicates; {} requests, injected faults {}, 503s while down {}",
            report["duplicates"], report["requests"], report["faults"], report["down"]
        ));
        if inv.duplicate_erp_documents != Some(0) {
            self.notes.push(format!(
                "ERP duplicate keys: {}",
                truncate(&report["duplicate_keys"].to_string(), 600)
            ));
        }
    }

    fn check(&mut self, ledger: &Ledger) -> Invariants {
        let kafka = self.stack.kafka();
        let hw = kafka.high_watermarks(&self.topic);
        let records: i64 = hw.values().sum();
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&self.manifest).expect("manifest"))
                .expect("manifest JSON");
        let sent = manifest["events_sent"].as_i64().unwrap_or(0);
        let designed: i64 = self.designed.values().sum();
        let mut inv = Invariants {
            events: records,
            ..Invariants::default()
        };
        // Copies sent under a fresh schema id count as records but not as oracle events.
        let extra = records - sent - designed;
        if extra != 0 {
            self.notes.push(format!("{extra} records beyond the oracle and the bad records (copies under a fresh schema id)"));
        }
        for consumer in CONSUMERS {
            let decided = ledger.scalar(
                "SELECT CAST(COUNT(DISTINCT partition * 1000000000000 + \"offset\") AS BIGINT) \
                 FROM audit_log WHERE consumer = $1 AND topic = $2 AND decision <> 'operation' \
                 AND COALESCE(detail, '') NOT LIKE 'redrive%'",
                &[consumer, &self.topic],
            );
            let rows = ledger.scalar(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_log WHERE consumer = $1 AND topic = $2 \
                 AND decision <> 'operation' AND COALESCE(detail, '') NOT LIKE 'redrive%'",
                &[consumer, &self.topic],
            );
            inv.lost += (records - decided).max(0);
            inv.duplicate_effects += rows - decided;
        }
        let expected: i64 = ERP_TYPES
            .iter()
            .map(|t| manifest["event_types"][*t].as_i64().unwrap_or(0))
            .sum();
        let inbox = ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM inbox WHERE consumer = $1",
            &[CONSUMERS[0]],
        );
        inv.lost += (expected - inbox).max(0);
        inv.duplicate_effects += (inbox - expected).max(0);
        let journals_twice = ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT tenant_id, kind, document_id \
             FROM erp_journal_entries WHERE kind IN ('invoice', 'credit_memo', 'receipt') \
             GROUP BY tenant_id, kind, document_id HAVING COUNT(*) > 1) d",
            &[],
        );
        inv.duplicate_effects += journals_twice;
        // Dead letters against the design, per consumer and reason.
        let mut by_reason = BTreeMap::new();
        for letter in ledger.dead_letters() {
            if letter.consumer == CONSUMERS[0] && letter.topic == self.topic {
                *by_reason.entry(letter.reason.to_string()).or_insert(0i64) += 1;
            }
        }
        for (reason, want) in &self.designed {
            let got = by_reason.get(reason).copied().unwrap_or(0);
            inv.lost += (want - got).max(0);
            inv.duplicate_effects += (got - want).max(0);
        }
        for (reason, got) in &by_reason {
            if !self.designed.contains_key(reason) {
                inv.duplicate_effects += got;
                self.notes.push(format!(
                    "{got} unexpected dead letters with reason {reason}"
                ));
            }
        }
        self.notes
            .push(format!("dead letters by reason: {by_reason:?}"));
        inv.money_difference = money_difference(ledger, &manifest);
        let (code, report) = self
            .stack
            .reconcile(&self.db.url, &["--source", &self.manifest]);
        if code != 0 {
            inv.reconcile_dirty = 1;
            self.notes
                .push(format!("reconcile: {}", truncate(&report.to_string(), 600)));
        }
        let (code, report) = self.stack.audit_verify(&self.db.url);
        if code != 0 {
            inv.broken_chains = report["chains"].as_array().map_or(1, |c| {
                c.iter().filter(|c| c["ok"] == false).count().max(1) as i64
            });
        }
        for consumer in CONSUMERS {
            let committed = kafka.committed(&self.stack.group(consumer), &self.topic);
            let positions: BTreeMap<i32, i64> = ledger
                .positions()
                .into_iter()
                .filter(|p| p.consumer == consumer && p.topic == self.topic)
                .map(|p| (p.partition, p.next_offset))
                .collect();
            for (p, h) in &hw {
                let pos = positions.get(p).copied().unwrap_or(0);
                if pos != *h {
                    inv.lost += 1;
                    self.notes.push(format!(
                        "{consumer} partition {p}: position {pos}, high watermark {h}"
                    ));
                }
                if *h > 0 && committed.get(p).copied() != Some(pos) {
                    inv.position_mismatches += 1;
                }
            }
        }
        inv.panics = self
            .logs
            .iter()
            .map(|path| {
                std::fs::read_to_string(path)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("panicked at"))
                    .count() as i64
            })
            .sum();
        self.check_erp(ledger, &mut inv);
        inv
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The quorum leader's node id, from Kafka's own metadata-quorum tool.
fn quorum_leader(stack: &Stack) -> Option<i32> {
    let lib = crate::kafka_lib_dir();
    let out = Command::new("java")
        .arg("-cp")
        .arg(format!("{}/*", lib.display()))
        .arg("-Dlog4j2.level=error")
        .arg("org.apache.kafka.tools.MetadataQuorumCommand")
        .args(["--bootstrap-server", &stack.brokers, "describe", "--status"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("LeaderId:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A schema text with a `doc` attribute added to its top-level record (same wire format, a new
/// schema for the registry).
fn with_doc(text: &str, doc: &str) -> String {
    let mut value: serde_json::Value = serde_json::from_str(text).expect("contract JSON");
    value["doc"] = serde_json::Value::String(doc.to_owned());
    value.to_string()
}

/// An event keyed and headed as `tenant` (which may differ from the payload's tenant).
fn keyed(producer: &EventProducer, event: &Event, version: u8, tenant: &str) -> RawRecord {
    RawRecord {
        key: Some(tenant.as_bytes().to_vec()),
        value: Some(producer.encode(event, version)),
        headers: vec![
            ("tenant_id".to_owned(), tenant.to_owned()),
            (
                "event_type".to_owned(),
                event.event_type().as_str().to_owned(),
            ),
            ("event_id".to_owned(), event.event_id_raw().to_owned()),
        ],
        partition: None,
    }
}

/// A fresh event id (bad records must never collide with the oracle's events).
fn fresh_id(rng: &mut ChaCha8Rng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

/// Every kind of bad record the decoder and the tenant checks know, each with its reason.
pub fn bad_records(stack: &Stack, topic: &str, seed: u64, rng: &mut ChaCha8Rng) -> Vec<BadRecord> {
    let (stream, _) = generate(TENANTS, 400, 0.0, seed ^ 0xbad);
    let producer = EventProducer::new(stack, topic);
    let client =
        RegistryClient::new(&stack.registry, Duration::from_secs(10)).expect("registry client");
    let find = |t: EventType| {
        stream
            .iter()
            .find(|g| g.event.event_type() == t)
            .unwrap_or_else(|| panic!("the sample stream has a {t:?}"))
    };
    let invoice = find(EventType::InvoiceFinalized);
    let tenant = invoice.event.tenant_id_raw().to_owned();
    let real = producer.encode(&invoice.event, invoice.writer_version);
    let id_of =
        |frame: &[u8]| SchemaId(u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]));
    let real_id = id_of(&real);
    let body = real[HEADER_LEN..].to_vec();
    let raw = |value: Option<Vec<u8>>| RawRecord {
        key: Some(tenant.clone().into_bytes()),
        value,
        headers: vec![("tenant_id".to_owned(), tenant.clone())],
        partition: None,
    };
    let tombstone_reason = if ReasonCode::ALL.iter().any(|r| r.as_str() == "tombstone") {
        "tombstone"
    } else {
        ReasonCode::TruncatedHeader.as_str()
    };
    let mut out = Vec::new();
    let mut add = |name: &str, reason: &str, record: RawRecord| {
        out.push(BadRecord {
            name: name.to_owned(),
            reason: reason.to_owned(),
            record,
        });
    };
    let th = ReasonCode::TruncatedHeader.as_str();
    add("empty value", th, raw(Some(vec![])));
    add("one byte", th, raw(Some(vec![0])));
    add("four bytes of header", th, raw(Some(vec![0, 0, 0, 1])));
    add("tombstone (no value)", tombstone_reason, raw(None));
    let um = ReasonCode::UnsupportedMagic.as_str();
    let mut wrong_magic = real.clone();
    wrong_magic[0] = 1;
    add("magic byte 1 on a real frame", um, raw(Some(wrong_magic)));
    let mut garbage: Vec<u8> = (0..rng.random_range(16..64))
        .map(|_| rng.random())
        .collect();
    garbage[0] = rng.random_range(2..=255);
    add("random bytes", um, raw(Some(garbage)));
    add(
        "JSON instead of Avro",
        um,
        raw(Some(br#"{"event_id":"x"}"#.to_vec())),
    );
    let us = ReasonCode::UnknownSchemaId.as_str();
    add(
        "schema id never issued",
        us,
        raw(Some(encode_frame(SchemaId(999_999), &body))),
    );
    add(
        "schema id 0",
        us,
        raw(Some(encode_frame(SchemaId(0), &body))),
    );
    add(
        "schema id u32::MAX",
        us,
        raw(Some(encode_frame(SchemaId(u32::MAX), &body))),
    );
    let tl = ReasonCode::TooLarge.as_str();
    let mut big = real.clone();
    big.resize(1024 * 1024 + 64, 0);
    add("value over the 1 MiB limit", tl, raw(Some(big)));
    // Schemas the registry accepts but ledgerflow cannot read as a billing event.
    let register = |subject: &str, text: &str| {
        block_on(client.register(&format!("{topic}-chaos-{subject}"), text)).expect("register")
    };
    let other_record = register(
        "other",
        r#"{"type":"record","name":"Thing","namespace":"com.example","fields":[{"name":"id","type":"string"}]}"#,
    );
    add(
        "a record type ledgerflow does not know",
        ReasonCode::UnknownEventType.as_str(),
        raw(Some(encode_frame(other_record, &[4, b'a', b'b']))),
    );
    let primitive = register("primitive", r#""string""#);
    add(
        "a primitive schema",
        ReasonCode::UnknownEventType.as_str(),
        raw(Some(encode_frame(primitive, &[4, b'a', b'b']))),
    );
    let incompatible = register(
        "incompatible",
        r#"{"type":"record","name":"InvoiceFinalized","namespace":"com.ledgerflow.billing","fields":[{"name":"event_id","type":"long"}]}"#,
    );
    add(
        "an invoice schema that cannot resolve to the reader",
        ReasonCode::SchemaResolution.as_str(),
        raw(Some(encode_frame(incompatible, &[2]))),
    );
    let ad = ReasonCode::AvroDecode.as_str();
    add(
        "body cut to one byte",
        ad,
        raw(Some(encode_frame(real_id, &body[..1]))),
    );
    add(
        "body cut in half",
        ad,
        raw(Some(encode_frame(real_id, &body[..body.len() / 2]))),
    );
    add(
        "body missing its last byte",
        ad,
        raw(Some(encode_frame(real_id, &body[..body.len() - 1]))),
    );
    add(
        "header with no body",
        ad,
        raw(Some(encode_frame(real_id, &[]))),
    );
    let mut trailing = body.clone();
    trailing.extend([0, 0, 7]);
    add(
        "trailing bytes after the record",
        ad,
        raw(Some(encode_frame(real_id, &trailing))),
    );
    add(
        "negative string length",
        ad,
        raw(Some(encode_frame(real_id, &[1, 0, 0]))),
    );
    add(
        "string length past the end",
        ad,
        raw(Some(encode_frame(
            real_id,
            &[0xfe, 0xff, 0xff, 0xff, 0x0f, b'a'],
        ))),
    );
    add(
        "varint that never ends",
        ad,
        raw(Some(encode_frame(real_id, &[0xff; 24]))),
    );
    let mut bad_utf8 = vec![4, 0xc3, 0x28];
    bad_utf8.extend_from_slice(&body);
    add(
        "invalid UTF-8 in a string",
        ad,
        raw(Some(encode_frame(real_id, &bad_utf8))),
    );
    // Payloads that decode but break a rule.
    let v = ReasonCode::Validation.as_str();
    let mut invalid = |name: &str, mutate: &dyn Fn(&mut Event)| {
        let mut event = invoice.event.clone();
        set_event_id(&mut event, &fresh_id(rng));
        mutate(&mut event);
        let record = keyed(&producer, &event, invoice.writer_version, &tenant);
        (name.to_owned(), record)
    };
    let cases: Vec<(String, RawRecord)> = vec![
        invalid("invoice total off by one", &|e| {
            if let Event::InvoiceFinalized(i) = e {
                i.total_minor += 1;
            }
        }),
        invalid("invoice subtotal not the sum of its lines", &|e| {
            if let Event::InvoiceFinalized(i) = e {
                i.subtotal_minor += 5;
                i.total_minor += 5;
            }
        }),
        invalid("invoice without lines", &|e| {
            if let Event::InvoiceFinalized(i) = e {
                i.lines.clear();
                i.subtotal_minor = 0;
                i.total_minor = i.tax_minor;
            }
        }),
        invalid("lower-case currency code", &|e| {
            if let Event::InvoiceFinalized(i) = e {
                i.currency = i.currency.to_lowercase();
            }
        }),
        invalid("empty source", &|e| {
            if let Event::InvoiceFinalized(i) = e {
                i.source.clear();
            }
        }),
        invalid("empty invoice id", &|e| {
            if let Event::InvoiceFinalized(i) = e {
                i.invoice_id.clear();
            }
        }),
    ];
    for (name, record) in cases {
        add(&name, v, record);
    }
    let customer = find(EventType::CustomerUpserted);
    let mut bad_country = customer.event.clone();
    set_event_id(&mut bad_country, &fresh_id(rng));
    if let Event::CustomerUpserted(c) = &mut bad_country {
        c.country = "Usa".to_owned();
    }
    add(
        "country not ISO 3166-1 alpha-2",
        v,
        keyed(
            &producer,
            &bad_country,
            customer.writer_version,
            customer.event.tenant_id_raw(),
        ),
    );
    let mut unknown = invoice.event.clone();
    set_event_id(&mut unknown, &fresh_id(rng));
    set_tenant(&mut unknown, "zz-not-a-tenant");
    add(
        "a tenant missing from the tenants file",
        ReasonCode::UnknownTenant.as_str(),
        keyed(
            &producer,
            &unknown,
            invoice.writer_version,
            "zz-not-a-tenant",
        ),
    );
    out
}

fn set_event_id(event: &mut Event, id: &str) {
    match event {
        Event::CustomerUpserted(e) => e.event_id = id.to_owned(),
        Event::SubscriptionActivated(e) => e.event_id = id.to_owned(),
        Event::SubscriptionCanceled(e) => e.event_id = id.to_owned(),
        Event::UsageAggregated(e) => e.event_id = id.to_owned(),
        Event::InvoiceFinalized(e) => e.event_id = id.to_owned(),
        Event::PaymentCaptured(e) => e.event_id = id.to_owned(),
        Event::CreditMemoIssued(e) => e.event_id = id.to_owned(),
        Event::InvoiceVoided(e) => e.event_id = id.to_owned(),
        Event::PaymentRefunded(e) => e.event_id = id.to_owned(),
    }
}

fn set_tenant(event: &mut Event, tenant: &str) {
    match event {
        Event::CustomerUpserted(e) => e.tenant_id = tenant.to_owned(),
        Event::SubscriptionActivated(e) => e.tenant_id = tenant.to_owned(),
        Event::SubscriptionCanceled(e) => e.tenant_id = tenant.to_owned(),
        Event::UsageAggregated(e) => e.tenant_id = tenant.to_owned(),
        Event::InvoiceFinalized(e) => e.tenant_id = tenant.to_owned(),
        Event::PaymentCaptured(e) => e.tenant_id = tenant.to_owned(),
        Event::CreditMemoIssued(e) => e.tenant_id = tenant.to_owned(),
        Event::InvoiceVoided(e) => e.tenant_id = tenant.to_owned(),
        Event::PaymentRefunded(e) => e.tenant_id = tenant.to_owned(),
    }
}

/// A decimal total of the manifest ("153533.05") in minor units.
fn minor_units(decimal: &str) -> i128 {
    decimal.replace('.', "").parse().unwrap_or(0)
}

/// |ledger - oracle| in minor units, summed over tenants and document kinds, for the journals
/// and the warehouse facts.
fn money_difference(ledger: &Ledger, manifest: &serde_json::Value) -> i64 {
    let mut diff: i128 = 0;
    let Some(tenants) = manifest["tenants"].as_object() else {
        return i64::MAX;
    };
    for (tenant, t) in tenants {
        let expected = [
            (
                "invoice",
                "invoices",
                "warehouse.fact_invoice",
                "total_minor",
            ),
            (
                "credit_memo",
                "credit_memos",
                "warehouse.fact_credit_memo",
                "total_minor",
            ),
            (
                "receipt",
                "payments",
                "warehouse.fact_payment",
                "amount_minor",
            ),
        ];
        for (kind, doc, fact, column) in expected {
            let want = minor_units(t[doc]["total"].as_str().unwrap_or("0"));
            let journals = ledger.scalar(
                "SELECT CAST(COALESCE(SUM(total_minor), 0) AS BIGINT) FROM erp_journal_entries \
                 WHERE tenant_id = $1 AND kind = $2",
                &[tenant, kind],
            );
            // A receipt journal's total is the gross amount; compare like with like.
            diff += (i128::from(journals) - want).abs();
            let facts = ledger
                .try_scalar(
                    &format!(
                        "SELECT CAST(COALESCE(SUM({column}), 0) AS BIGINT) FROM {fact} \
                         WHERE tenant_id = $1"
                    ),
                    &[tenant],
                )
                .unwrap_or(0);
            diff += (i128::from(facts) - want).abs();
        }
    }
    i64::try_from(diff).unwrap_or(i64::MAX)
}

/// The report as Markdown: seed, per-scenario schedule and recoveries, and the invariant table.
pub fn markdown(
    reports: &[ScenarioReport],
    seed: u64,
    profile: Profile,
    elapsed: Duration,
) -> String {
    let mut md = String::new();
    let _w = writeln!(md, "# Chaos run, seed {seed} ({profile:?} profile)\n");
    let _w = writeln!(
        md,
        "3-node Apache Kafka cluster (replication factor 3, min.insync.replicas 2), Postgres, the \
         ledgerflow registry, the ERP simulator (10% injected faults: 5xx, 429, slow, \
         commit-then-drop); consumers erp-receivables and warehouse. {} scenarios in {:.0} s. \
         Re-run one with `make chaos CHAOS_SEED={seed} CHAOS_SCENARIO=<name>`.\n",
        reports.len(),
        elapsed.as_secs_f64()
    );
    let _w = writeln!(md, "## Invariants\n");
    let _w = writeln!(
        md,
        "| scenario | seed | events | lost | duplicate effects | duplicate ERP documents | ERP documents != confirmed postings | postings not confirmed | money difference (minor units) | reconcile differences | broken chains | positions != Kafka | panics | verdict |"
    );
    let _w = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for r in reports {
        let i = &r.invariants;
        let _w = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.kind.name(),
            r.seed,
            i.events,
            i.lost,
            i.duplicate_effects,
            or_na(i.duplicate_erp_documents),
            or_na(i.erp_documents_mismatch),
            or_na(i.postings_not_confirmed),
            i.money_difference,
            i.reconcile_dirty,
            i.broken_chains,
            i.position_mismatches,
            i.panics,
            if i.hold() { "held" } else { "FAILED" }
        );
    }
    for r in reports {
        let _w = writeln!(
            md,
            "\n## {} (seed {}, {:.0} s)\n",
            r.kind.name(),
            r.seed,
            r.duration.as_secs_f64()
        );
        if !r.recoveries.is_empty() {
            let list: Vec<String> = r
                .recoveries
                .iter()
                .map(|(what, took)| format!("{what} {:.1} s", took.as_secs_f64()))
                .collect();
            let _w = writeln!(
                md,
                "Recovery (fault to the next committed batch): {}.\n",
                list.join(", ")
            );
        }
        let _w = writeln!(md, "| at (s) | event |\n| ---: | --- |");
        for e in &r.schedule {
            let _w = writeln!(md, "| {:.1} | {} |", e.at.as_secs_f64(), e.what);
        }
        for note in &r.notes {
            let _w = writeln!(md, "\n- {note}");
        }
    }
    md
}

/// A count, or `n/a` when the run had no ERP simulator.
fn or_na(count: Option<i64>) -> String {
    count.map_or("n/a".to_owned(), |n| n.to_string())
}

/// Writes the report to `dir/<date>.md` (`<date>-<seed>.md` when that exists) and returns the path.
pub fn write_report(dir: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("results directory");
    let date = Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "run".to_owned());
    let mut path = dir.join(format!("{date}.md"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{date}-{n}.md"));
        n += 1;
    }
    std::fs::write(&path, text).expect("writing the report");
    path
}
