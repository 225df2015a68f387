//! `ledgerflow-bench`: the reproducible benchmark behind `make bench`.
//!
//! One run on one machine, every number measured in the same run against the same preloaded
//! topic (workload W1: tenant-keyed partitions, ~300-byte Avro events, v1 and v2 writers
//! interleaved, Zipf-skewed tenants, exact duplicates):
//!
//! | id | what | where |
//! | --- | --- | --- |
//! | B0 | transport ceiling: a raw rdkafka consumer reads the topic, no decoding | this process |
//! | B2 | decode: B0 plus ledgerflow's `prepare_record` (frame, Avro, tenant checks, erp mapping), null sink | this process |
//! | B3 | database ceiling: the exact rows a B6 run wrote, `COPY`-loaded into a fresh database with the same DDL | this process + Postgres |
//! | B4 | naive floor: one transaction and one synchronous Kafka offset commit per event | this process + Postgres |
//! | B6 | `ledgerflow run` (release build, default settings): erp-receivables alone, and all consumers | child process + Postgres |
//! | peer | Kafka Connect 4.4 + the Debezium JDBC sink connector, upsert by event id ([`peer`]) | Connect JVM + Postgres |
//!
//! Throughput is events from process start to zero lag (every consumer's positions of record
//! at the high watermarks), median of `--runs`. A B6 run counts only if
//! `ledgerflow reconcile --source manifest.json` is clean afterwards. Results go to
//! `<out>/<date>.md` and `<out>/<date>.json`.

mod baselines;
mod peer;
mod pipeline_run;
mod probe;
mod report;
mod stack;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ledgerflow_codec::{Decoder, DecoderConfig, RegistryClient};
use ledgerflow_tenants::TenantRegistry;

use crate::baselines::Sink;
use crate::pipeline_run::{RunResult, RunSpec};
use crate::report::{Config, Report, Workload};
use crate::stack::Stack;

/// Runs the W1 benchmark against a private broker, registry and fresh Postgres databases.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Events in the preloaded topic (duplicates included).
    #[arg(long, env = "BENCH_EVENTS", default_value_t = 1_000_000)]
    events: u64,
    /// Tenants (Zipf-skewed, exponent 1.1).
    #[arg(long, env = "BENCH_TENANTS", default_value_t = 100)]
    tenants: u32,
    /// Partitions of the topic.
    #[arg(long, env = "BENCH_PARTITIONS", default_value_t = 12)]
    partitions: u32,
    /// Fraction of exact duplicates.
    #[arg(long, env = "BENCH_DUPLICATES", default_value_t = 0.05)]
    duplicates: f64,
    /// Workload seed.
    #[arg(long, env = "BENCH_SEED", default_value_t = 42)]
    seed: u64,
    /// Repetitions of each throughput measurement (the median is reported).
    #[arg(long, env = "BENCH_RUNS", default_value_t = 3)]
    runs: usize,
    /// Repetitions of B6 with all consumers (the most expensive measurement).
    #[arg(long, env = "BENCH_RUNS_ALL", default_value_t = 1)]
    runs_all: usize,
    /// Events at most for B4 (the naive floor).
    #[arg(long, env = "BENCH_NAIVE_CAP", default_value_t = 50_000)]
    naive_cap: u64,
    /// Seconds at most for B4.
    #[arg(long, env = "BENCH_NAIVE_SECS", default_value_t = 120)]
    naive_secs: u64,
    /// Seconds of open-loop production for the latency run.
    #[arg(long, env = "BENCH_LATENCY_SECS", default_value_t = 60)]
    latency_secs: u64,
    /// Seconds at the start of the latency run left out of the percentiles (consumer warm-up:
    /// the first batch of every partition syncs with its stored position).
    #[arg(long, env = "BENCH_LATENCY_WARMUP_SECS", default_value_t = 15)]
    latency_warmup_secs: u64,
    /// Seconds of `perf record` during an extra profiled erp-receivables run (0: no profile).
    #[arg(long, env = "BENCH_PROFILE_SECS", default_value_t = 20)]
    profile_secs: u64,
    /// Output directory for `<date>.md` and `<date>.json`.
    #[arg(long, env = "BENCH_OUT", default_value = DEFAULT_OUT)]
    out: PathBuf,
    /// Development loop: preload, then only B6 runs of these consumers (comma-separated,
    /// e.g. `erp-receivables` or `erp-receivables,warehouse,notifications`), `--runs` times;
    /// prints each run's rate and writes no report. `latency`: only the latency runs; `peer`:
    /// only the peer (`--peer-runs` times).
    #[arg(long, env = "BENCH_QUICK")]
    quick: Option<String>,
    /// Administrative Postgres URL; fresh databases are created and dropped on this server.
    #[arg(
        long,
        env = "BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
    /// The `ledgerflow` binary (default: next to this one, i.e. the same build profile).
    #[arg(long, env = "LEDGERFLOW_BIN")]
    ledgerflow: Option<PathBuf>,
    /// The Kafka launcher (default: this workspace's `scripts/kafka`); it starts a single-node
    /// KRaft cluster from the jars `make setup` put in `.local/kafka/lib/`.
    #[arg(long, env = "LEDGERFLOW_KAFKA_SCRIPT")]
    kafka_script: Option<PathBuf>,
    /// An earlier report's JSON whose B0/B2/B3/B4/B6 figures the new report prints beside its
    /// own (default: the newest older report in `bench/results`; `none`: no comparison).
    #[arg(long, env = "BENCH_COMPARE")]
    compare: Option<PathBuf>,
    /// The peer measured after B6: `connect` (Kafka Connect + the Debezium JDBC sink connector,
    /// upsert by event id), `none`, or unset: measured when `scripts/setup-connect.sh` and
    /// `scripts/setup-apicurio.sh` have put it in `.local/` (`BENCH_LOCAL`), else skipped with
    /// a note. `--quick peer` runs only the peer.
    #[arg(long, env = "BENCH_PEER")]
    peer: Option<String>,
    /// Runs of the peer (median reported). One by default: on W1 the sink commits about one
    /// transaction per event, so a run of the full W1 takes tens of minutes on two cores.
    #[arg(long, env = "BENCH_PEER_RUNS", default_value_t = 1)]
    peer_runs: usize,
    /// `tasks.max` of the peer's connector.
    #[arg(long, env = "BENCH_PEER_TASKS", default_value_t = 2)]
    peer_tasks: u32,
    /// The peer's `batch.size` (and its worker's `consumer.max.poll.records`).
    #[arg(long, env = "BENCH_PEER_BATCH", default_value_t = 2000)]
    peer_batch: u32,
    /// Also measure the peer at its best: the same events re-encoded by the harness under one
    /// schema on a topic of their own (the JDBC sink batches only runs of one schema).
    #[arg(long, env = "BENCH_PEER_ONE_SCHEMA", default_value_t = true, action = clap::ArgAction::Set)]
    peer_one_schema: bool,
}

/// Where reports go, and where the default comparison is looked for.
const DEFAULT_OUT: &str = "bench/results";
const TOPIC: &str = "bench.w1";
const LATENCY_TOPIC: &str = "bench.latency";
const TRANSPORT_TOPIC: &str = "bench.transport";
const ERP: &str = ledgerflow_erp_receivables::CONSUMER_NAME;
const ALL_CONSUMERS: &[&str] = &[ERP, "warehouse", "notifications"];

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ledgerflow-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ledgerflow-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn default_ledgerflow() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("ledgerflow")))
        .unwrap_or_else(|| PathBuf::from("target/release/ledgerflow"))
}

fn say(started: Instant, what: &str) {
    eprintln!("[{:>7.1}s] {what}", started.elapsed().as_secs_f64());
}

/// Everything, in order. Returns whether every measured run counts (reconcile clean).
async fn run(args: Args) -> anyhow::Result<bool> {
    let t0 = Instant::now();
    let ticks = probe::clock_ticks();
    let ledgerflow = args.ledgerflow.clone().unwrap_or_else(default_ledgerflow);
    let kafka_script = args
        .kafka_script
        .clone()
        .unwrap_or_else(stack::default_kafka_script);
    anyhow::ensure!(
        ledgerflow.is_file(),
        "{} not found: build it with `cargo build --release -p ledgerflow-cli`",
        ledgerflow.display()
    );
    let date = report::now_stamp();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // Read before the run, so a wrong `--compare` fails in a second, not after the benchmark.
    let compare = match &args.compare {
        Some(path) if path.as_os_str() == "none" => None,
        Some(path) => Some(path.clone()),
        None if args.quick.is_some() => None,
        None => report::newest_older_report(Path::new(DEFAULT_OUT), &date, args.events),
    };
    let previous = compare.as_deref().map(report::load_previous).transpose()?;
    // Also before the run: `--peer connect` without the jars fails at once.
    let peer_install =
        match peer::PeerMode::parse(args.peer.as_deref()).map_err(anyhow::Error::msg)? {
            peer::PeerMode::Off => None,
            peer::PeerMode::Auto => Some(peer::Install::find(&peer::default_local_dir())),
            peer::PeerMode::Connect => Some(Ok(peer::Install::find(&peer::default_local_dir())
                .map_err(|why| anyhow::anyhow!("--peer connect: {why}"))?)),
        };
    let peer_settings = peer::PeerSettings {
        runs: args.peer_runs,
        tasks: args.peer_tasks,
        batch: args.peer_batch,
        one_schema: args.peer_one_schema,
    };
    if let Some(p) = &previous {
        say(
            t0,
            &format!(
                "the report compares with {} ({}, {} broker)",
                p.file, p.date, p.broker
            ),
        );
    }

    say(
        t0,
        "starting Apache Kafka (one KRaft node) and the schema registry",
    );
    let stack = Stack::start(ledgerflow, &kafka_script)?;
    say(
        t0,
        &format!(
            "{} on {} ({}, heap {})",
            stack.broker_info.kafka, stack.brokers, stack.broker_info.java, stack.broker_info.heap
        ),
    );
    stack.create_topic(TOPIC, args.partitions).await?;

    say(
        t0,
        &format!(
            "preloading {TOPIC}: {} events, {} tenants, {} partitions, {}% duplicates",
            args.events,
            args.tenants,
            args.partitions,
            args.duplicates * 100.0
        ),
    );
    let manifest = stack.path("manifest.json");
    let tenants_file = stack.path("tenants.toml");
    let produce_started = Instant::now();
    let out = stack.ledgerflow(&[
        "produce",
        "--topic",
        TOPIC,
        "--tenants",
        &args.tenants.to_string(),
        "--events",
        &args.events.to_string(),
        "--duplicates",
        &args.duplicates.to_string(),
        "--seed",
        &args.seed.to_string(),
        "--manifest",
        &manifest.display().to_string(),
        "--tenants-file",
        &tenants_file.display().to_string(),
    ])?;
    anyhow::ensure!(
        out.status.success(),
        "ledgerflow produce failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let produce_seconds = produce_started.elapsed().as_secs_f64();
    let manifest_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest)?)?;
    let hwm = baselines::high_watermarks(&stack.brokers, TOPIC)?;
    let total: i64 = hwm.values().sum();
    anyhow::ensure!(
        total as u64 == args.events,
        "the topic holds {total} records, expected {}",
        args.events
    );

    let client = RegistryClient::new(&stack.registry, Duration::from_secs(10))
        .map_err(anyhow::Error::msg)?;
    let decoder = Decoder::new(client, DecoderConfig::default());
    let tenants = TenantRegistry::load(&tenants_file).context("loading the tenants file")?;

    if let Some(list) = &args.quick
        && list.split(',').any(|x| x.trim() == "latency")
    {
        let rate: f64 = std::env::var("BENCH_LATENCY_RATE")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(6000.0);
        let secs = (args.latency_secs + args.latency_warmup_secs) as f64;
        let latency =
            measure_latency(&stack, &args, &tenants_file, rate, (rate * secs) as u64, t0).await?;
        say(
            t0,
            &format!(
                "latency at {:.0}/s: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms, reconcile {}; transport alone p50 {:.0} ms, p99 {:.0} ms",
                latency.achieved_rate,
                latency.p50_ms,
                latency.p90_ms,
                latency.p99_ms,
                latency.max_ms,
                latency.reconcile_clean,
                latency.transport_p50_ms,
                latency.transport_p99_ms
            ),
        );
        return Ok(latency.reconcile_clean);
    }
    let w1 = peer::W1 {
        topic: TOPIC,
        hwm: &hwm,
        partitions: args.partitions,
        tenants: args.tenants,
        events: args.events,
        duplicates: args.duplicates,
        seed: args.seed,
        distinct: manifest_json["distinct_events"].as_u64().unwrap_or(0),
    };
    if let Some(list) = &args.quick
        && list.split(',').any(|x| x.trim() == "peer")
    {
        let install = match &peer_install {
            Some(Ok(install)) => install,
            Some(Err(why)) => anyhow::bail!("--quick peer: {why}"),
            None => anyhow::bail!("--quick peer with --peer none"),
        };
        let report = peer::measure(
            &stack,
            &args.postgres,
            install,
            &peer_settings,
            &w1,
            ticks,
            &|m: &str| say(t0, m),
        )
        .await;
        say(t0, &report::peer_summary(&report));
        for note in &report.notes {
            say(t0, &format!("  note: {note}"));
        }
        return Ok(report.status == "measured" && report.rows_match == Some(true));
    }
    if let Some(list) = &args.quick {
        let consumers: Vec<&'static str> = ALL_CONSUMERS
            .iter()
            .copied()
            .filter(|c| list.split(',').any(|x| x.trim() == *c))
            .collect();
        anyhow::ensure!(
            !consumers.is_empty(),
            "--quick names none of {ALL_CONSUMERS:?}"
        );
        let mut clean = true;
        for i in 0..args.runs {
            let spec = b6_spec(
                format!("quick-{}", i + 1),
                &consumers,
                &hwm,
                &tenants_file,
                &manifest,
            );
            let (result, db) =
                pipeline_run::run_to_zero_lag(&stack, &args.postgres, &spec, ticks).await?;
            say(
                t0,
                &format!(
                    "B6 {consumers:?} run {}: {:.0} events/s, reconcile {}; {}",
                    i + 1,
                    result.events_per_sec(),
                    if result.reconcile_clean {
                        "clean"
                    } else {
                        "NOT CLEAN"
                    },
                    result.quick_line(),
                ),
            );
            clean &= result.reconcile_clean;
            db.drop_now().await;
            // The run's log survives the scratch directory.
            let log = format!("quick-{}.log", i + 1);
            if let Err(e) = std::fs::copy(stack.path(&log), args.out.join(&log)) {
                eprintln!("keeping {log}: {e}");
            }
        }
        return Ok(clean);
    }

    let mut b0 = Vec::new();
    for i in 0..args.runs {
        say(
            t0,
            &format!("B0 transport ceiling, run {}/{}", i + 1, args.runs),
        );
        b0.push(baselines::read_pass(&stack, TOPIC, &hwm, Sink::Nothing, ticks).await?);
    }
    let mut b2 = Vec::new();
    for i in 0..args.runs {
        say(
            t0,
            &format!("B2 decode + map, null sink, run {}/{}", i + 1, args.runs),
        );
        let sink = Sink::Prepare {
            decoder: &decoder,
            tenants: &tenants,
        };
        b2.push(baselines::read_pass(&stack, TOPIC, &hwm, sink, ticks).await?);
    }

    let mut b6_erp: Vec<RunResult> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut ceiling_source = None;
    for i in 0..args.runs {
        say(
            t0,
            &format!(
                "B6 ledgerflow run, erp-receivables alone, run {}/{}",
                i + 1,
                args.runs
            ),
        );
        let spec = b6_spec(
            format!("b6-erp-{}", i + 1),
            &[ERP],
            &hwm,
            &tenants_file,
            &manifest,
        );
        // One retry: a shared machine's Postgres may restart under a run (the crash tests do).
        let (result, db) =
            match pipeline_run::run_to_zero_lag(&stack, &args.postgres, &spec, ticks).await {
                Ok(done) => done,
                Err(e) => {
                    say(t0, &format!("  failed, retrying once: {e:#}"));
                    let spec = RunSpec {
                        label: format!("{}-retry", spec.label),
                        ..spec
                    };
                    pipeline_run::run_to_zero_lag(&stack, &args.postgres, &spec, ticks).await?
                }
            };
        say(
            t0,
            &format!(
                "  {:.0} events/s, reconcile {}",
                result.events_per_sec(),
                if result.reconcile_clean {
                    "clean"
                } else {
                    "NOT CLEAN"
                }
            ),
        );
        b6_erp.push(result);
        // Keep the last clean run's database: B3 loads exactly its rows.
        if let Some(old) = ceiling_source.replace(db) {
            old.drop_now().await;
        }
    }

    say(
        t0,
        "B3 database ceiling: the same rows, COPY-loaded into a fresh database",
    );
    let b3 = match ceiling_source {
        Some(source) => {
            let target = stack::PgDatabase::create(&args.postgres, "ceiling").await?;
            let result =
                baselines::database_ceiling(&stack, &source.url, &target, args.events, ticks).await;
            target.drop_now().await;
            source.drop_now().await;
            Some(result?)
        }
        None => None,
    };

    let naive_cap = args.naive_cap.min(args.events);
    say(
        t0,
        &format!(
            "B4 naive floor: one transaction and one synchronous offset commit per event (cap {naive_cap} events or {}s)",
            args.naive_secs
        ),
    );
    let b4 = {
        let db = stack::PgDatabase::create(&args.postgres, "naive").await?;
        let result = baselines::naive_floor(
            &stack,
            TOPIC,
            &db,
            &decoder,
            &tenants,
            naive_cap,
            Duration::from_secs(args.naive_secs),
            ticks,
        )
        .await;
        db.drop_now().await;
        result?
    };

    let mut b6_all: Vec<RunResult> = Vec::new();
    for i in 0..args.runs_all {
        say(
            t0,
            &format!(
                "B6 ledgerflow run, all consumers together, run {}/{}",
                i + 1,
                args.runs_all
            ),
        );
        let spec = b6_spec(
            format!("b6-all-{}", i + 1),
            ALL_CONSUMERS,
            &hwm,
            &tenants_file,
            &manifest,
        );
        match pipeline_run::run_to_zero_lag(&stack, &args.postgres, &spec, ticks).await {
            Ok((result, db)) => {
                say(
                    t0,
                    &format!(
                        "  {:.0} events/s, reconcile {}",
                        result.events_per_sec(),
                        if result.reconcile_clean {
                            "clean"
                        } else {
                            "NOT CLEAN"
                        }
                    ),
                );
                b6_all.push(result);
                db.drop_now().await;
            }
            Err(e) => {
                say(t0, &format!("  failed: {e:#}"));
                failures.push(format!("B6 all, run {}: {e:#}", i + 1));
            }
        }
    }

    let peer_report = match &peer_install {
        None => None,
        Some(Err(why)) => {
            say(t0, &format!("peer: skipped, {why}"));
            Some(peer::PeerReport::skipped(why, w1.distinct))
        }
        Some(Ok(install)) => {
            say(
                t0,
                "peer: Kafka Connect + Debezium JDBC sink, upsert by event id, same broker and Postgres",
            );
            Some(
                peer::measure(
                    &stack,
                    &args.postgres,
                    install,
                    &peer_settings,
                    &w1,
                    ticks,
                    &|m: &str| say(t0, m),
                )
                .await,
            )
        }
    };

    let erp_rate = report::median_by(&b6_erp, RunResult::events_per_sec)
        .map_or(0.0, RunResult::events_per_sec);
    let latency_rate = (erp_rate * 0.5).max(100.0);
    let latency_secs = (args.latency_secs + args.latency_warmup_secs) as f64;
    let latency_events = ((latency_rate * latency_secs) as u64).max(1_000);
    say(
        t0,
        &format!(
            "open-loop latency: {latency_events} events at {latency_rate:.0}/s (50% of the B6 erp median)"
        ),
    );
    let latency = measure_latency(
        &stack,
        &args,
        &tenants_file,
        latency_rate,
        latency_events,
        t0,
    )
    .await?;

    let profile = if args.profile_secs > 0 {
        say(
            t0,
            &format!(
                "profile: perf record -a for the first {}s of an extra erp-receivables run",
                args.profile_secs
            ),
        );
        match report::perf_available() {
            false => None,
            true => {
                let perf_data = stack.path("perf.data");
                let spec = RunSpec {
                    label: "profile".to_owned(),
                    consumers: &[ERP],
                    topic: TOPIC,
                    hwm: &hwm,
                    tenants_file: &tenants_file,
                    manifest: &manifest,
                    metrics: true,
                    perf: Some((Duration::from_secs(args.profile_secs), perf_data.clone())),
                    stop_after: Some(Duration::from_secs(args.profile_secs)),
                };
                match pipeline_run::run_to_zero_lag(&stack, &args.postgres, &spec, ticks).await {
                    Ok((result, db)) => {
                        db.drop_now().await;
                        Some(report::profile(&perf_data, &result, stack.broker_pid()))
                    }
                    Err(e) => {
                        failures.push(format!("profile run: {e:#}"));
                        None
                    }
                }
            }
        }
    } else {
        None
    };

    let config = Config {
        events: args.events,
        tenants: args.tenants,
        partitions: args.partitions,
        duplicates: args.duplicates,
        seed: args.seed,
        runs: args.runs,
        runs_all: args.runs_all,
        naive_cap,
        latency_secs: args.latency_secs,
    };
    let workload = Workload {
        events: args.events,
        distinct: manifest_json["distinct_events"].as_u64().unwrap_or(0),
        duplicates: manifest_json["duplicates_sent"].as_u64().unwrap_or(0),
        mean_value_bytes: b0.first().map_or(0.0, |p| p.mean_value_bytes),
        produce_seconds,
    };
    let registry_rss = probe::peak_rss_kib(stack.registry_pid());
    let broker_rss = probe::peak_rss_kib(stack.broker_pid());
    let report = Report::build(
        date,
        config,
        workload,
        b0,
        b2,
        b3,
        b4,
        b6_erp,
        b6_all,
        latency,
        profile,
        failures,
        broker_rss,
        registry_rss,
        &stack.broker_info,
        t0.elapsed().as_secs_f64(),
    )
    .with_previous(previous)
    .with_peer(peer_report);
    let (md, json) = report.write(&args.out)?;
    say(
        t0,
        &format!("wrote {} and {}", md.display(), json.display()),
    );
    println!("{}", report.summary_lines());
    drop(stack);
    Ok(report.valid)
}

/// A B6 run of `consumers` over the preloaded topic to zero lag, metrics scraped.
fn b6_spec<'a>(
    label: String,
    consumers: &'a [&'a str],
    hwm: &'a BTreeMap<i32, i64>,
    tenants_file: &'a Path,
    manifest: &'a Path,
) -> RunSpec<'a> {
    RunSpec {
        label,
        consumers,
        topic: TOPIC,
        hwm,
        tenants_file,
        manifest,
        metrics: true,
        perf: None,
        stop_after: None,
    }
}

/// The open-loop latency run of erp-receivables at `rate`, then the transport alone at the
/// same rate (its figures go into the same result).
async fn measure_latency(
    stack: &Stack,
    args: &Args,
    tenants_file: &Path,
    rate: f64,
    events: u64,
    t0: Instant,
) -> anyhow::Result<pipeline_run::LatencyResult> {
    let mut latency = pipeline_run::latency_run(
        stack,
        &args.postgres,
        LATENCY_TOPIC,
        args.partitions,
        args.tenants,
        args.duplicates,
        tenants_file,
        rate,
        events,
        args.latency_warmup_secs as f64,
    )
    .await?;
    say(
        t0,
        &format!("transport alone: the same {events} events at {rate:.0}/s, a raw consumer"),
    );
    pipeline_run::transport_run(
        stack,
        TRANSPORT_TOPIC,
        args.partitions,
        args.tenants,
        args.duplicates,
        rate,
        events,
        args.latency_warmup_secs as f64,
        &mut latency,
    )
    .await?;
    Ok(latency)
}

/// Version of an external tool, for the report's header.
pub(crate) fn tool_version(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
