//! B6: `ledgerflow run` as an operator starts it (release build, default batch settings, a
//! fresh Postgres database), timed from process start to zero lag, then reconciled. Also the
//! open-loop latency run and the profiled run.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use crate::probe::{self, CpuSample, CpuSplit};
use crate::stack::{PgDatabase, Proc, Stack};

/// How one `ledgerflow run` is started.
#[derive(Debug)]
pub(crate) struct RunSpec<'a> {
    pub(crate) label: String,
    pub(crate) consumers: &'a [&'a str],
    pub(crate) topic: &'a str,
    pub(crate) hwm: &'a BTreeMap<i32, i64>,
    pub(crate) tenants_file: &'a Path,
    pub(crate) manifest: &'a Path,
    /// Serve /metrics on a free port and scrape the batch histograms at zero lag.
    pub(crate) metrics: bool,
    /// `perf record` every CPU for at most this long, from start (the profiled run).
    pub(crate) perf: Option<(Duration, std::path::PathBuf)>,
    /// Stop (SIGTERM) after this long instead of at zero lag; events are then those committed
    /// by that time, and there is no reconcile (the profiled run).
    pub(crate) stop_after: Option<Duration>,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunResult {
    pub(crate) label: String,
    pub(crate) consumers: Vec<String>,
    pub(crate) events: u64,
    /// Process start to zero lag on every consumer.
    pub(crate) seconds: f64,
    /// Process start to the first committed batch (startup, store open, group join).
    pub(crate) seconds_to_first_commit: f64,
    pub(crate) cpu: CpuSplit,
    pub(crate) wal_bytes: i64,
    pub(crate) peak_rss_kib: u64,
    /// The `--format json` summary `ledgerflow run` printed on exit.
    pub(crate) summary: serde_json::Value,
    pub(crate) reconcile_clean: bool,
    pub(crate) reconcile_exit: i32,
    /// From /metrics at zero lag, when scraped: `(sum, count)` per histogram.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) metrics: BTreeMap<String, (f64, f64)>,
    /// Pid of the `ledgerflow` process (for the profile).
    #[serde(skip)]
    pub(crate) pid: u32,
}

impl RunResult {
    pub(crate) fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }

    /// CPU per 1,000 events, WAL per event and the batch histograms' means, on one line.
    pub(crate) fn quick_line(&self) -> String {
        let cpu = self.cpu.per_thousand(self.events);
        let mut line = format!(
            "CPU s/1k: ledgerflow {:.3}, postgres {:.3}, broker {:.3}; WAL {} B/event; first commit {:.2}s",
            cpu.consumer,
            cpu.postgres,
            cpu.broker,
            self.wal_bytes / self.events.max(1) as i64,
            self.seconds_to_first_commit
        );
        for (name, (sum, count)) in &self.metrics {
            if *count > 0.0 {
                line.push_str(&format!("; {name} mean {:.4} (n {count})", sum / count));
            }
        }
        line
    }
}

/// Runs `ledgerflow run` on a fresh database until every consumer's positions reach the high
/// watermarks, then lets it exit on idle and reconciles against the manifest. Returns the
/// database too, so the caller can reuse its rows (B3) before dropping it.
pub(crate) async fn run_to_zero_lag(
    stack: &Stack,
    admin: &str,
    spec: &RunSpec<'_>,
    ticks: f64,
) -> anyhow::Result<(RunResult, PgDatabase)> {
    let db = PgDatabase::create(admin, &spec.label.replace(['-', '.'], "_")).await?;
    let events: i64 = spec.hwm.values().sum();
    let mut pg = PgConnection::connect(&db.url).await?;
    let wal_before = probe::wal_lsn(&mut pg).await?;
    let metrics_port = spec.metrics.then(free_port).transpose()?;
    let group = format!(
        "bench-{}-{}",
        spec.label,
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let tenants = spec.tenants_file.display().to_string();
    let mut args: Vec<String> = [
        "run",
        "--database",
        &db.url,
        "--topic",
        spec.topic,
        "--tenants",
        &tenants,
        "--group-prefix",
        &group,
        // The clock stops at zero lag, not at exit: a long idle window only makes sure a
        // consumer whose fetches stall for a few seconds on a busy machine does not exit early.
        "--exit-when-idle",
        "10s",
        "--format",
        "json",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // `BENCH_LOG` (a log filter, e.g. `warn,sqlx=debug`) for a closer look; logging costs time.
    args.push("--log".to_owned());
    args.push(std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()));
    for c in spec.consumers {
        args.push("--consumer".to_owned());
        args.push((*c).to_owned());
    }
    if let Some(port) = metrics_port {
        args.push("--metrics-listen".to_owned());
        args.push(format!("127.0.0.1:{port}"));
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();

    let before = CpuSample::take(0, stack.broker_pid(), ticks).without_consumer();
    let started = Instant::now();
    let mut child = stack.spawn(&arg_refs, &spec.label)?;
    let pid = child.pid();
    let perf = match &spec.perf {
        Some((duration, path)) => Some(start_perf(duration, path)?),
        None => None,
    };
    let timeout = Duration::from_secs(600 + (events as u64) / 200);
    let mut first_commit: Option<f64> = None;
    let mut committed: i64 = 0;
    loop {
        if spec.stop_after.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if started.elapsed() > timeout {
            bail!("{}: no zero lag within {timeout:?}", spec.label);
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            let log = std::fs::read_to_string(stack.path(&format!("{}.log", spec.label)))
                .unwrap_or_default();
            bail!(
                "{}: ledgerflow exited ({status}) before zero lag:\n{}",
                spec.label,
                tail(&log, 30)
            );
        }
        let rows: Vec<(String, i32, i64)> = sqlx::query_as(
            "SELECT consumer, partition, next_offset FROM positions WHERE topic = $1",
        )
        .bind(spec.topic)
        .fetch_all(&mut pg)
        .await
        .unwrap_or_default();
        if first_commit.is_none() && !rows.is_empty() {
            first_commit = Some(started.elapsed().as_secs_f64());
        }
        committed =
            rows.iter().map(|(_, _, next)| next).sum::<i64>() / spec.consumers.len().max(1) as i64;
        if zero_lag(&rows, spec.consumers, spec.hwm) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = CpuSample::take(pid, stack.broker_pid(), ticks);
    let peak_rss_kib = probe::peak_rss_kib(pid).unwrap_or(0);
    let wal_after = probe::wal_lsn(&mut pg).await?;
    let wal_bytes = probe::wal_bytes(&mut pg, &wal_before, &wal_after).await?;
    let metrics = match metrics_port {
        Some(port) => scrape_histograms(port).unwrap_or_default(),
        None => BTreeMap::new(),
    };
    pg.close().await.ok();
    if let Some(perf) = perf {
        stop_perf(perf);
    }
    let (summary, reconcile_exit) = if spec.stop_after.is_some() {
        // Ends only the process this run started, by its pid; if kill fails, the wait below
        // reports the process that did not stop.
        if let Err(e) = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
        {
            eprintln!("kill -TERM {pid}: {e}");
        }
        (wait_for_exit(stack, &mut child, &spec.label)?, -1)
    } else {
        let summary = wait_for_exit(stack, &mut child, &spec.label)?;
        (summary, reconcile(stack, &db.url, spec.manifest)?.0)
    };
    let events = if spec.stop_after.is_some() {
        committed
    } else {
        events
    };
    Ok((
        RunResult {
            label: spec.label.clone(),
            consumers: spec.consumers.iter().map(|s| (*s).to_owned()).collect(),
            events: events as u64,
            seconds,
            seconds_to_first_commit: first_commit.unwrap_or(seconds),
            cpu: after.since(before),
            wal_bytes,
            peak_rss_kib,
            summary,
            reconcile_clean: reconcile_exit == 0,
            reconcile_exit,
            metrics,
            pid,
        },
        db,
    ))
}

fn zero_lag(rows: &[(String, i32, i64)], consumers: &[&str], hwm: &BTreeMap<i32, i64>) -> bool {
    let positions: HashMap<(&str, i32), i64> = rows
        .iter()
        .map(|(c, p, n)| ((c.as_str(), *p), *n))
        .collect();
    consumers.iter().all(|c| {
        hwm.iter().all(|(p, high)| {
            *high == 0 || positions.get(&(*c, *p)).is_some_and(|next| next >= high)
        })
    })
}

/// Waits for `--exit-when-idle` and returns the printed summary.
fn wait_for_exit(
    stack: &Stack,
    child: &mut Proc,
    label: &str,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(status) = child.0.try_wait()? {
            if !status.success() {
                let log = std::fs::read_to_string(stack.path(&format!("{label}.log")))
                    .unwrap_or_default();
                bail!(
                    "{label}: ledgerflow run failed ({status}):\n{}",
                    tail(&log, 30)
                );
            }
            break;
        }
        if Instant::now() > deadline {
            bail!("{label}: ledgerflow run did not exit on idle within 180s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = std::fs::read_to_string(stack.path(&format!("{label}.out")))?;
    Ok(serde_json::from_str(&out).unwrap_or(serde_json::Value::String(out)))
}

/// `ledgerflow reconcile --source MANIFEST --format json`: exit code and report.
pub(crate) fn reconcile(
    stack: &Stack,
    database: &str,
    manifest: &Path,
) -> anyhow::Result<(i32, serde_json::Value)> {
    let manifest = manifest.display().to_string();
    let out = stack.ledgerflow(&[
        "reconcile",
        "--database",
        database,
        "--source",
        &manifest,
        "--format",
        "json",
    ])?;
    let code = out.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    if code != 0 {
        eprintln!(
            "reconcile exit {code}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&String::from_utf8_lossy(&out.stdout), 40)
        );
    }
    Ok((code, report))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `_sum` and `_count` of every histogram on /metrics (a plain HTTP/1.0 GET).
fn scrape_histograms(port: u16) -> anyhow::Result<BTreeMap<String, (f64, f64)>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = name_labels
            .split_once('{')
            .map_or((name_labels, ""), |(n, l)| (n, l.trim_end_matches('}')));
        let key = |base: &str| format!("{base}{{{labels}}}");
        if let Some(base) = name.strip_suffix("_sum") {
            out.entry(key(base)).or_default().0 += value;
        } else if let Some(base) = name.strip_suffix("_count") {
            out.entry(key(base)).or_default().1 += value;
        }
    }
    Ok(out)
}

/// A running `perf record -a`.
#[derive(Debug)]
pub(crate) struct Perf(Proc);

fn start_perf(duration: &Duration, path: &Path) -> anyhow::Result<Perf> {
    let child = Command::new("perf")
        .args(["record", "-a", "-F", "299", "-o"])
        .arg(path)
        .args(["--", "sleep", &duration.as_secs().max(1).to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting perf record (apt-get install linux-perf)")?;
    Ok(Perf(Proc(child)))
}

fn stop_perf(mut perf: Perf) {
    // `perf record -- sleep N` stops by itself; SIGINT would also flush, SIGKILL would not, so
    // wait for it rather than dropping the guard early.
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = perf.0.0.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The open-loop latency run's measurement.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LatencyResult {
    pub(crate) target_rate: f64,
    pub(crate) events: u64,
    pub(crate) produce_seconds: f64,
    pub(crate) achieved_rate: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// Records measured (sent after the warm-up).
    pub(crate) samples: u64,
    /// Seconds after the first send whose records are left out of the percentiles.
    pub(crate) warmup_secs: f64,
    /// p99 over every record, warm-up included.
    pub(crate) p99_all_ms: f64,
    /// The transport alone at the same rate, measured before (see [`transport_run`]).
    pub(crate) transport_p50_ms: f64,
    pub(crate) transport_p99_ms: f64,
    pub(crate) transport_samples: u64,
    pub(crate) reconcile_clean: bool,
    /// Latency by window of send time ([`TIMELINE_WINDOW_SECS`] s each), warm-up included:
    /// one long stall and a steady fall-behind give the same p99 and different timelines.
    pub(crate) timeline: Vec<LatencyWindow>,
    /// The slowest window's records by partition: one partition behind (its batches, its
    /// rebalance) or all of them (the database, the CPU).
    pub(crate) worst_window_partitions: Vec<PartitionLatency>,
    /// Lines of the consumer's log that say partitions were assigned or revoked (1 for the
    /// first assignment: more means a rebalance during the run).
    pub(crate) assignment_changes: u64,
}

/// Seconds of send time per [`LatencyWindow`].
pub(crate) const TIMELINE_WINDOW_SECS: i64 = 5;

/// Records sent in one window of the latency run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LatencyWindow {
    /// Seconds from the first send to the window's start.
    pub(crate) start_secs: i64,
    pub(crate) events: u64,
    pub(crate) p50_ms: f64,
    pub(crate) max_ms: f64,
}

/// One partition's records in the slowest window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PartitionLatency {
    pub(crate) partition: i32,
    pub(crate) events: u64,
    pub(crate) max_ms: f64,
}

/// Windows of send time and the slowest window by partition, from `(partition, record
/// timestamp ms, latency ms)`.
fn timeline(
    samples: &[(i32, i64, f64)],
    first_sent: i64,
) -> (Vec<LatencyWindow>, Vec<PartitionLatency>) {
    let window_ms = TIMELINE_WINDOW_SECS * 1000;
    let mut windows: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for (_, ts, ms) in samples {
        windows
            .entry((ts - first_sent).max(0) / window_ms)
            .or_default()
            .push(*ms);
    }
    let mut out = Vec::with_capacity(windows.len());
    let mut worst: Option<(i64, f64)> = None;
    for (index, mut values) in windows {
        values.sort_by(f64::total_cmp);
        let max = values.last().copied().unwrap_or(0.0);
        if worst.is_none_or(|(_, m)| max > m) {
            worst = Some((index, max));
        }
        out.push(LatencyWindow {
            start_secs: index * TIMELINE_WINDOW_SECS,
            events: values.len() as u64,
            p50_ms: percentile(&values, 0.5),
            max_ms: max,
        });
    }
    let mut by_partition: BTreeMap<i32, (u64, f64)> = BTreeMap::new();
    if let Some((index, _)) = worst {
        for (p, ts, ms) in samples {
            if (ts - first_sent).max(0) / window_ms == index {
                let entry = by_partition.entry(*p).or_insert((0, 0.0));
                entry.0 += 1;
                entry.1 = entry.1.max(*ms);
            }
        }
    }
    let partitions = by_partition
        .into_iter()
        .map(|(partition, (events, max_ms))| PartitionLatency {
            partition,
            events,
            max_ms,
        })
        .collect();
    (out, partitions)
}

/// Open loop at `rate` events/s: the consumer runs first (assigned and idle), then
/// `ledgerflow produce --rate` sends at a fixed schedule whatever the consumer does.
/// Latency per record = the audit row's `recorded_at` (taken inside the batch transaction,
/// just before COMMIT) minus the Kafka record timestamp (set by the producer when it sends).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn latency_run(
    stack: &Stack,
    admin: &str,
    topic: &str,
    partitions: u32,
    tenants: u32,
    duplicates: f64,
    tenants_file: &Path,
    rate: f64,
    events: u64,
    warmup_secs: f64,
) -> anyhow::Result<LatencyResult> {
    stack.create_topic(topic, partitions).await?;
    let db = PgDatabase::create(admin, "latency").await?;
    let manifest = stack.path("latency-manifest.json");
    let tenants_arg = tenants_file.display().to_string();
    let consumer = stack.spawn(
        &[
            "run",
            "--database",
            &db.url,
            "--topic",
            topic,
            "--tenants",
            &tenants_arg,
            "--group-prefix",
            "bench-latency",
            "--consumer",
            ledgerflow_erp_receivables::CONSUMER_NAME,
            "--exit-when-idle",
            "5s",
            "--log",
            "info",
            "--format",
            "json",
        ],
        "latency-run",
    )?;
    // Start sending only once the consumer holds its partitions.
    let log_path = stack.path("latency-run.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("partitions assigned") {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "latency run: the consumer was not assigned within 60s:\n{}",
                tail(&log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let produce_seconds = produce_open_loop(
        stack,
        topic,
        tenants,
        events,
        duplicates,
        rate,
        Some(manifest.as_path()),
    )?;
    let hwm = crate::baselines::high_watermarks(&stack.brokers, topic)?;
    let mut pg = PgConnection::connect(&db.url).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let rows: Vec<(String, i32, i64)> = sqlx::query_as(
            "SELECT consumer, partition, next_offset FROM positions WHERE topic = $1",
        )
        .bind(topic)
        .fetch_all(&mut pg)
        .await
        .unwrap_or_default();
        if zero_lag(&rows, &[ledgerflow_erp_receivables::CONSUMER_NAME], &hwm) {
            break;
        }
        if Instant::now() > deadline {
            bail!("latency run: no zero lag 600s after producing");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut consumer = consumer;
    wait_for_exit(stack, &mut consumer, "latency-run")?;
    let (code, _) = reconcile(stack, &db.url, &manifest)?;
    let recorded: Vec<(i32, i64, i64)> = sqlx::query_as(
        "SELECT partition, \"offset\", recorded_at FROM audit_log WHERE consumer = $1 AND topic = $2",
    )
    .bind(ledgerflow_erp_receivables::CONSUMER_NAME)
    .bind(topic)
    .fetch_all(&mut pg)
    .await?;
    pg.close().await.ok();
    let stamps = crate::baselines::record_timestamps(&stack.brokers, topic, &hwm)?;
    let first_sent = stamps.values().min().copied().unwrap_or(0);
    let warm_from = first_sent + (warmup_secs * 1000.0) as i64;
    let mut all: Vec<f64> = Vec::with_capacity(recorded.len());
    let mut latencies: Vec<f64> = Vec::with_capacity(recorded.len());
    let mut samples: Vec<(i32, i64, f64)> = Vec::with_capacity(recorded.len());
    for (p, o, at) in &recorded {
        let Some(ts) = stamps.get(&(*p, *o)) else {
            continue;
        };
        let ms = (*at as f64 / 1000.0 - *ts as f64).max(0.0);
        samples.push((*p, *ts, ms));
        all.push(ms);
        if *ts >= warm_from {
            latencies.push(ms);
        }
    }
    all.sort_by(f64::total_cmp);
    latencies.sort_by(f64::total_cmp);
    let (timeline, worst_window_partitions) = timeline(&samples, first_sent);
    let assignment_changes = std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("partitions assigned") || l.contains("partitions revoked"))
        .count() as u64;
    db.drop_now().await;
    let q = |f: f64| percentile(&latencies, f);
    Ok(LatencyResult {
        target_rate: rate,
        events,
        produce_seconds,
        achieved_rate: events as f64 / produce_seconds.max(1e-9),
        p50_ms: q(0.50),
        p90_ms: q(0.90),
        p99_ms: q(0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        samples: latencies.len() as u64,
        warmup_secs,
        p99_all_ms: percentile(&all, 0.99),
        transport_p50_ms: 0.0,
        transport_p99_ms: 0.0,
        transport_samples: 0,
        reconcile_clean: code == 0,
        timeline,
        worst_window_partitions,
        assignment_changes,
    })
}

/// `ledgerflow produce --rate` of the latency workload (seed 7) to `topic`; returns the seconds
/// it took.
fn produce_open_loop(
    stack: &Stack,
    topic: &str,
    tenants: u32,
    events: u64,
    duplicates: f64,
    rate: f64,
    manifest: Option<&Path>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let (tenants, events, duplicates, rate) = (
        tenants.to_string(),
        events.to_string(),
        duplicates.to_string(),
        format!("{rate:.0}"),
    );
    let mut args = vec![
        "produce",
        "--topic",
        topic,
        "--tenants",
        &tenants,
        "--events",
        &events,
        "--duplicates",
        &duplicates,
        "--seed",
        "7",
        "--rate",
        &rate,
    ];
    let manifest = manifest.map(|m| m.display().to_string());
    if let Some(m) = &manifest {
        args.extend(["--manifest", m.as_str()]);
    }
    let out = stack.ledgerflow(&args)?;
    if !out.status.success() {
        bail!(
            "open-loop produce to {topic} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The transport alone at `rate`: the same open-loop `ledgerflow produce` to a fresh topic,
/// read by a raw consumer (no decoding, no database, the `fetch.wait.max.ms` of `ledgerflow
/// run`), no ledgerflow consumer running. Fills the `transport_*` fields of `latency`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn transport_run(
    stack: &Stack,
    topic: &str,
    partitions: u32,
    tenants: u32,
    duplicates: f64,
    rate: f64,
    events: u64,
    warmup_secs: f64,
    latency: &mut LatencyResult,
) -> anyhow::Result<()> {
    stack.create_topic(topic, partitions).await?;
    let reader = crate::baselines::transport_latency(
        stack.brokers.clone(),
        topic.to_owned(),
        i32::try_from(partitions).unwrap_or(i32::MAX),
        events,
        Duration::from_secs_f64(events as f64 / rate.max(1.0) + 120.0),
    );
    produce_open_loop(stack, topic, tenants, events, duplicates, rate, None)?;
    let samples = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the transport reader panicked"))??;
    let first = samples.iter().map(|(ts, _)| *ts).min().unwrap_or(0);
    let warm_from = first + (warmup_secs * 1000.0) as i64;
    let mut ms: Vec<f64> = samples
        .into_iter()
        .filter(|(ts, _)| *ts >= warm_from)
        .map(|(_, ms)| ms)
        .collect();
    ms.sort_by(f64::total_cmp);
    latency.transport_p50_ms = percentile(&ms, 0.50);
    latency.transport_p99_ms = percentile(&ms, 0.99);
    latency.transport_samples = ms.len() as u64;
    Ok(())
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn zero_lag_needs_every_consumer_on_every_nonempty_partition() {
        let hwm = BTreeMap::from([(0, 10), (1, 0), (2, 5)]);
        let rows = vec![("a".to_owned(), 0, 10), ("a".to_owned(), 2, 5)];
        assert!(zero_lag(&rows, &["a"], &hwm));
        assert!(!zero_lag(&rows, &["a", "b"], &hwm));
        let behind = vec![("a".to_owned(), 0, 9), ("a".to_owned(), 2, 5)];
        assert!(!zero_lag(&behind, &["a"], &hwm));
    }

    #[test]
    fn the_timeline_shows_the_stalled_window_and_its_partition() {
        // Sent at 0-4 s and 5-9 s from the first send; partition 3 stalls in the second window.
        let first = 1_000_000;
        let mut samples = Vec::new();
        for i in 0..10 {
            samples.push((0, first + i * 1_000, 20.0));
            samples.push((3, first + i * 1_000, if i >= 5 { 9_000.0 } else { 30.0 }));
        }
        let (windows, worst) = timeline(&samples, first);
        assert_eq!(windows.len(), 2);
        assert_eq!((windows[0].start_secs, windows[0].events), (0, 10));
        assert_eq!(windows[0].max_ms, 30.0);
        assert_eq!((windows[1].start_secs, windows[1].max_ms), (5, 9_000.0));
        assert_eq!(worst.len(), 2);
        assert_eq!((worst[1].partition, worst[1].max_ms), (3, 9_000.0));
        assert_eq!((worst[0].partition, worst[0].max_ms), (0, 20.0));
    }
}
