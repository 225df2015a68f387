//! Operator tools against a real broker: replay, dead-letter retry and offsets reset never post
//! anything twice, and each operation is in the audit log.

use std::process::Output;

use ledgerflow_e2e::{Ledger, Stack};

const CONSUMER: &str = "erp-receivables";

fn json(out: &Output, what: &str) -> serde_json::Value {
    ledgerflow_e2e::output_json(out, what)
}

/// A topic with a produced workload, run to idle once. Returns the paths it wrote.
struct Fixture {
    stack: Stack,
    topic: String,
    db: String,
    tenants: String,
    manifest: String,
}

impl Fixture {
    fn new(name: &str, tenants: u32, events: u32) -> Self {
        let stack = Stack::start();
        let topic = format!("e2e.ops.{name}");
        stack.create_topic(&topic, 2);
        let f = Self {
            db: format!("sqlite://{}", stack.path("ledger.db")),
            tenants: stack.path("tenants.toml"),
            manifest: stack.path("manifest.json"),
            topic,
            stack,
        };
        f.stack.ledgerflow_ok(&[
            "produce",
            "--topic",
            &f.topic,
            "--tenants",
            &tenants.to_string(),
            "--events",
            &events.to_string(),
            "--duplicates",
            "0.05",
            "--manifest",
            &f.manifest,
            "--tenants-file",
            &f.tenants,
        ]);
        f
    }

    /// `ledgerflow run --consumer erp-receivables` to idle with a tenants file; the summary.
    fn run(&self, tenants: &str) -> serde_json::Value {
        let out = self.stack.ledgerflow_ok(&[
            "run",
            "--consumer",
            CONSUMER,
            "--tenants",
            tenants,
            "--database",
            &self.db,
            "--topic",
            &self.topic,
            "--exit-when-idle",
            "3s",
            "--format",
            "json",
        ]);
        json(&out, "run")[0].clone()
    }

    fn args<'a>(&'a self, head: &[&'a str]) -> Vec<&'a str> {
        let mut v = head.to_vec();
        v.extend_from_slice(&[
            "--consumer",
            CONSUMER,
            "--database",
            &self.db,
            "--topic",
            &self.topic,
            "--tenants",
            &self.tenants,
            "--format",
            "json",
        ]);
        v
    }

    fn journals(&self, ledger: &Ledger) -> i64 {
        ledger.scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_journal_entries",
            &[],
        )
    }

    fn reconcile_clean(&self) {
        let (code, report) = self
            .stack
            .reconcile(&self.db, &["--source", &self.manifest]);
        assert_eq!(code, 0, "reconcile against the manifest:\n{report:#}");
        let (code, report) = self.stack.audit_verify(&self.db);
        assert_eq!(code, 0, "audit verify:\n{report:#}");
    }

    /// Operations recorded for the consumer: (kind, detail JSON).
    fn operations(&self, ledger: &Ledger) -> Vec<(String, serde_json::Value)> {
        ledger
            .operations(CONSUMER)
            .into_iter()
            .map(|row| {
                let detail = row.detail.expect("operation detail");
                (
                    row.event_type.expect("operation kind"),
                    serde_json::from_str(&detail).expect("detail JSON"),
                )
            })
            .collect()
    }
}

#[test]
fn replaying_a_processed_range_posts_nothing_and_is_audited() {
    let f = Fixture::new("replay", 3, 800);
    let first = f.run(&f.tenants);
    let applied = first["applied"].as_u64().unwrap();
    assert!(applied > 0);
    let ledger = Ledger::open(&f.db);
    let journals = f.journals(&ledger);
    let positions = ledger.positions();
    f.reconcile_clean();

    // Plan: every mapped event is already applied, nothing would be new.
    let out = f
        .stack
        .ledgerflow_ok(&f.args(&["replay", "plan", "--from", "2000-01-01"]));
    let plan = json(&out, "replay plan");
    let read = plan["read"].as_u64().unwrap();
    assert_eq!(
        read,
        positions.iter().map(|p| p.next_offset as u64).sum::<u64>(),
        "the plan read every record: {plan:#}"
    );
    assert_eq!(plan["totals"]["applied"], 0, "{plan:#}");
    assert_eq!(plan["totals"]["conflicts"], 0, "{plan:#}");
    let already = plan["totals"]["already_applied"].as_u64().unwrap();
    assert!(already >= applied, "{plan:#}");
    assert_eq!(f.journals(&ledger), journals, "a plan writes nothing");

    // A tenant filter narrows it.
    let out = f.stack.ledgerflow_ok(&f.args(&[
        "replay",
        "plan",
        "--from",
        "2000-01-01",
        "--tenant",
        "t001",
    ]));
    let narrow = json(&out, "replay plan --tenant");
    let lines = narrow["lines"].as_array().unwrap();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l["tenant"] == "t001"),
        "{narrow:#}"
    );

    // Run: no posting changes, positions untouched, the operation is audited.
    let out = f.stack.ledgerflow_ok(&f.args(&[
        "replay",
        "run",
        "--from",
        "2000-01-01",
        "--reason",
        "verify replay is harmless",
        "--operator",
        "alice",
    ]));
    let run = json(&out, "replay run");
    assert_eq!(run["totals"]["applied"], 0, "{run:#}");
    assert_eq!(run["totals"]["already_applied"].as_u64().unwrap(), already);
    assert_eq!(f.journals(&ledger), journals, "replay posted nothing");
    assert_eq!(
        ledger.positions(),
        positions,
        "the live positions did not move"
    );
    f.reconcile_clean();
    let ops = f.operations(&ledger);
    assert_eq!(ops.len(), 2, "started and finished: {ops:?}");
    assert!(
        ops.iter()
            .all(|(kind, d)| kind == "replay_run" && d["operator"] == "alice")
    );
    assert_eq!(ops[1].1["details"]["phase"], "finished");
    assert_eq!(ops[1].1["reason"], "verify replay is harmless");

    // The coordinates the audit log recorded: the same records, none unavailable.
    let out = f
        .stack
        .ledgerflow_ok(&f.args(&["replay", "plan", "--from-audit"]));
    let audited = json(&out, "replay plan --from-audit");
    assert_eq!(audited["selected"].as_u64(), Some(read), "{audited:#}");
    assert_eq!(audited["totals"], plan["totals"], "{audited:#}");
    assert_eq!(audited["unavailable_count"], 0, "{audited:#}");

    // Offsets of one partition: reads only that range.
    let busiest = positions.iter().max_by_key(|p| p.next_offset).unwrap();
    assert!(busiest.next_offset >= 20);
    let partition = busiest.partition.to_string();
    let out = f.stack.ledgerflow_ok(&f.args(&[
        "replay",
        "plan",
        "--partition",
        &partition,
        "--from-offset",
        "10",
        "--to-offset",
        "19",
    ]));
    let ranged = json(&out, "replay plan by offsets");
    assert_eq!(ranged["read"], 10, "{ranged:#}");
}

#[test]
fn dead_letters_of_an_unknown_tenant_apply_once_after_onboarding() {
    let f = Fixture::new("dlq", 4, 800);
    // Run with t004 missing from the tenants file.
    let text = std::fs::read_to_string(&f.tenants).unwrap();
    let mut doc: toml::Table = text.parse().unwrap();
    let tenants = doc
        .get_mut("tenants")
        .and_then(toml::Value::as_array_mut)
        .unwrap();
    tenants.retain(|t| t["tenant_id"].as_str() != Some("t004"));
    assert_eq!(tenants.len(), 3);
    let partial = f.stack.path("tenants-without-t004.toml");
    std::fs::write(&partial, toml::to_string(&doc).unwrap()).unwrap();
    let first = f.run(&partial);
    let letters = first["dead_lettered"].as_u64().unwrap();
    assert!(letters > 0, "{first}");

    let out = f.stack.ledgerflow_ok(&[
        "dlq",
        "list",
        "--database",
        &f.db,
        "--reason",
        "unknown_tenant",
        "--format",
        "json",
    ]);
    let listed = json(&out, "dlq list");
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len() as u64, letters);
    assert!(listed.iter().all(|d| d["tenant_id"] == "t004"));
    let textfile = f.stack.path("reconcile.prom");
    let (code, report) = f.stack.reconcile(
        &f.db,
        &["--source", &f.manifest, "--metrics-textfile", &textfile],
    );
    assert_eq!(code, 1, "t004 is missing before the retry:\n{report:#}");
    // The alerting gauges say so too.
    let prom = std::fs::read_to_string(&textfile).expect("metrics textfile");
    let gauge = |kind: &str| -> f64 {
        let prefix =
            format!("ledgerflow_reconcile_differences{{kind=\"{kind}\",source=\"manifest\"}} ");
        prom.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {kind} gauge in\n{prom}"))
            .parse()
            .expect("gauge value")
    };
    assert!(gauge("count_or_total") > 0.0, "{prom}");
    assert_eq!(gauge("double_posted"), 0.0, "{prom}");

    // `dlq show` decodes the payload.
    let id = listed[0]["id"].as_str().unwrap();
    let out = f
        .stack
        .ledgerflow_ok(&["dlq", "show", id, "--database", &f.db, "--format", "json"]);
    let shown = json(&out, "dlq show");
    assert_eq!(shown["decoded"]["tenant_id"], "t004", "{shown:#}");

    // Onboarded (the full tenants file): every letter applies once, or is its duplicate.
    let ledger = Ledger::open(&f.db);
    let retry = |f: &Fixture| {
        let out = f.stack.ledgerflow(&f.args(&[
            "dlq",
            "retry",
            "--reason",
            "unknown_tenant",
            "--comment",
            "t004 onboarded",
        ]));
        (out.status.code(), json(&out, "dlq retry"))
    };
    let (code, first_retry) = retry(&f);
    assert_eq!(code, Some(0), "{first_retry:#}");
    assert_eq!(
        first_retry["resolved"].as_u64().unwrap(),
        letters,
        "{first_retry:#}"
    );
    let applied = first_retry["totals"]["applied"].as_u64().unwrap();
    let dups = first_retry["totals"]["already_applied"].as_u64().unwrap();
    assert!(applied > 0);
    assert_eq!(
        applied + dups + first_retry["totals"]["skipped"].as_u64().unwrap(),
        letters
    );
    f.reconcile_clean();
    let journals = f.journals(&ledger);

    let (code, second) = retry(&f);
    assert_eq!(code, Some(0), "{second:#}");
    assert_eq!(second["targeted"], 0, "nothing left to retry: {second:#}");
    assert_eq!(
        f.journals(&ledger),
        journals,
        "a second retry changes nothing"
    );
    let open = ledger.scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM dead_letters WHERE status = 'open'",
        &[],
    );
    assert_eq!(open, 0);
    let ops = f.operations(&ledger);
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0].0, "dlq_retry");
    assert_eq!(ops[0].1["reason"], "t004 onboarded");
}

#[test]
fn rewinding_a_stopped_consumer_to_the_earliest_offset_posts_nothing_new() {
    let f = Fixture::new("rewind", 3, 600);
    let first = f.run(&f.tenants);
    let ledger = Ledger::open(&f.db);
    let journals = f.journals(&ledger);
    let before = ledger.positions();

    let out = f.stack.ledgerflow_ok(&f.args(&["offsets", "show"]));
    let shown = json(&out, "offsets show");
    for p in shown.as_array().unwrap() {
        assert_eq!(p["lag"], 0, "caught up: {shown:#}");
        // An empty partition has no position yet.
        assert_eq!(
            p["position"].as_i64().unwrap_or(0),
            p["high_watermark"].as_i64().unwrap()
        );
    }

    // Dry run: shows the move, changes nothing.
    let out = f
        .stack
        .ledgerflow_ok(&f.args(&["offsets", "reset", "--to-earliest"]));
    let dry = json(&out, "offsets reset dry run");
    assert_eq!(dry["executed"], false);
    let moves = dry["moves"].as_array().unwrap();
    assert_eq!(
        moves.len(),
        before.iter().filter(|p| p.next_offset > 0).count(),
        "{dry:#}"
    );
    let already: i64 = moves
        .iter()
        .map(|m| m["already_applied"].as_i64().unwrap())
        .sum();
    assert_eq!(
        already as u64,
        first["applied"].as_u64().unwrap(),
        "{dry:#}"
    );
    assert_eq!(ledger.positions(), before, "a dry run moves nothing");

    // A live member in the group: the reset refuses (exit 2) and moves nothing.
    let mut live = f.stack.spawn(
        &[
            "run",
            "--consumer",
            CONSUMER,
            "--tenants",
            &f.tenants,
            "--database",
            &f.db,
            "--topic",
            &f.topic,
        ],
        "live-member",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while live.log_count("partitions assigned") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the live member was never assigned:\n{}",
            live.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let refused = f
        .stack
        .ledgerflow(&f.args(&["offsets", "reset", "--to-earliest", "--execute"]));
    assert_eq!(
        refused.status.code(),
        Some(2),
        "a reset under a live member must refuse: {refused:?}"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("live member"),
        "{refused:?}"
    );
    assert_eq!(ledger.positions(), before, "a refused reset moves nothing");
    let stopped = live.sigterm(std::time::Duration::from_secs(30));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "the live member stops on SIGTERM"
    );

    // The member left the group on shutdown: the reset goes ahead without --force.
    let out = f.stack.ledgerflow_ok(&f.args(&[
        "offsets",
        "reset",
        "--to-earliest",
        "--execute",
        "--reason",
        "re-verify",
    ]));
    let done = json(&out, "offsets reset --execute");
    assert_eq!(done["executed"], true, "{done:#}");
    assert!(
        ledger.positions().iter().all(|p| p.next_offset == 0),
        "{done:#}"
    );

    // Restart: every event is a dedup hit, zero new postings.
    let again = f.run(&f.tenants);
    assert_eq!(again["applied"], 0, "{again}");
    assert_eq!(
        again["duplicates"].as_u64().unwrap(),
        first["applied"].as_u64().unwrap() + first["duplicates"].as_u64().unwrap(),
        "{again}"
    );
    assert_eq!(f.journals(&ledger), journals);
    assert_eq!(ledger.positions().len(), before.len());
    for (a, b) in ledger.positions().iter().zip(&before) {
        assert_eq!(a.next_offset, b.next_offset);
    }
    f.reconcile_clean();
    let ops = f.operations(&ledger);
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].0, "offsets_reset");
    assert_eq!(
        ops[0].1["details"]["forced"], false,
        "no --force was needed: {:#}",
        ops[0].1
    );
}
