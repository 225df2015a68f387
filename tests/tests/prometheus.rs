//! A real Prometheus server scrapes `ledgerflow run --metrics-listen` (every consumer): the lag
//! series (in messages and seconds, behind and caught up), the applied-events counters (equal, per
//! consumer, to what the run reports), dead-letter depth, the ERP outbox backlog and the webhook
//! deliveries arrive through its query API; the
//! exposition passes `promtool check metrics`; `/readyz` is 200 while broker, registry and
//! database answer and 503, naming the registry, when the registry does not.
//!
//! Binaries: `PROMETHEUS_BIN` / `PROMTOOL_BIN` (default `/usr/bin/prometheus`,
//! `/usr/bin/promtool`, the Debian `prometheus` package that `make setup` installs).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ledgerflow_e2e::{EventProducer, Ledger, RawRecord, Stack, free_port};

const PARTITIONS: u32 = 3;

fn bin(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// A child process killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // Already exited, or not ours to reap: nothing to do either way.
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// `GET path` over HTTP/1.0 (no chunking): status and body.
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

fn url_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server scraping one target every second, in its own temp dir.
struct Prometheus {
    addr: String,
    _proc: Guard,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: ledgerflow\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("prometheus config");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(bin("PROMETHEUS_BIN", "/usr/bin/prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir.path())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting prometheus (run `make setup`: Debian package `prometheus`)");
        let prometheus = Self {
            addr,
            _proc: Guard(child),
            _dir: dir,
        };
        wait_until("prometheus ready", Duration::from_secs(30), || {
            matches!(http_get(&prometheus.addr, "/-/ready"), Ok((200, _))).then_some(())
        });
        prometheus
    }

    /// An instant query: each series' labels and value.
    fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let Ok((200, body)) = http_get(&self.addr, &path) else {
            return Vec::new();
        };
        let json: serde_json::Value = serde_json::from_str(&body).expect("query JSON");
        assert_eq!(json["status"], "success", "{promql}: {json}");
        json["data"]["result"]
            .as_array()
            .expect("vector result")
            .iter()
            .map(|s| {
                let value = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .expect("sample value");
                (s["metric"].clone(), value)
            })
            .collect()
    }

    /// The single value of a query that returns one series (`sum`, `count`, ...), if any.
    fn scalar(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql);
        (result.len() == 1).then(|| result[0].1)
    }
}

fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Per consumer, the sum of the `decision="applied"` samples of `ledgerflow_events_total`.
fn applied_in(exposition: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in exposition
        .lines()
        .filter(|l| l.starts_with("ledgerflow_events_total{") && l.contains("decision=\"applied\""))
    {
        let consumer = line
            .split("consumer=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("consumer label");
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("sample value");
        *out.entry(consumer.to_owned()).or_insert(0.0) += value;
    }
    out
}

/// Per consumer, the value of a query aggregated `by (consumer)`.
fn by_consumer(result: Vec<(serde_json::Value, f64)>) -> BTreeMap<String, f64> {
    result
        .into_iter()
        .map(|(labels, v)| (labels["consumer"].as_str().expect("consumer").to_owned(), v))
        .collect()
}

/// Starts `ledgerflow run` with metrics on `metrics` in the background.
fn spawn_run(stack: &Stack, args: &[&str], env: &[(&str, &str)], name: &str) -> Guard {
    let mut cmd = stack.command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(std::fs::File::create(stack.path(&format!("{name}.out"))).expect("stdout"))
        .stderr(std::fs::File::create(stack.path(&format!("{name}.log"))).expect("stderr"))
        .spawn()
        .expect("starting ledgerflow run");
    Guard(child)
}

#[test]
fn prometheus_scrapes_lag_applied_events_and_backlogs() {
    let stack = Stack::start();
    let topic = "e2e.prometheus";
    stack.create_topic(topic, PARTITIONS);
    let tenants = stack.path("tenants.toml");
    let db = format!("sqlite://{}", stack.path("ledger.db"));
    // Endpoints nobody listens on: every ERP posting and webhook fails, so the outboxes fill.
    let erp = format!("http://127.0.0.1:{}/erp", free_port());
    let webhooks = format!("http://127.0.0.1:{}/hooks", free_port());
    stack.ledgerflow_ok(&[
        "produce",
        "--topic",
        topic,
        "--tenants",
        "3",
        "--events",
        "600",
        "--tenants-file",
        &tenants,
        "--erp-url",
        &erp,
        "--webhook-url",
        &webhooks,
    ]);
    let producer = EventProducer::new(&stack, topic);
    for _ in 0..2 {
        producer.send_raw(RawRecord {
            key: Some(b"t001".to_vec()),
            value: Some(b"\x07not avro".to_vec()),
            ..RawRecord::default()
        });
    }
    // Let the records age, so the lag in seconds is unmistakably above zero.
    std::thread::sleep(Duration::from_millis(1500));

    let metrics_addr = format!("127.0.0.1:{}", free_port());
    // Batches commit only after 8 s: the positions of record stay behind for that long, which
    // is the window in which the lag must be visible.
    let mut run = spawn_run(
        &stack,
        &[
            "run",
            "--tenants",
            &tenants,
            "--database",
            &db,
            "--topic",
            topic,
            "--metrics-listen",
            &metrics_addr,
            "--batch-max-records",
            "10000",
            "--batch-max-wait",
            "8s",
            "--format",
            "json",
        ],
        &[
            ("LEDGERFLOW_LAG_INTERVAL_MS", "500"),
            ("LEDGERFLOW_ERP_MAX_ATTEMPTS", "1"),
            ("LEDGERFLOW_ERP_POLL_MS", "200"),
        ],
        "run",
    );
    let prometheus = Prometheus::start(&metrics_addr);

    // Behind: lag in messages and in seconds, from the positions of record.
    let behind = wait_until(
        "lag above zero in Prometheus",
        Duration::from_secs(30),
        || {
            let seconds = prometheus.query("ledgerflow_consumer_lag_seconds > 1");
            let messages = prometheus.query("ledgerflow_consumer_lag_messages > 0");
            (!seconds.is_empty() && !messages.is_empty()).then_some((seconds, messages))
        },
    );
    for (labels, _) in behind.0.iter().chain(&behind.1) {
        assert!(labels["consumer"].is_string(), "{labels}");
        assert_eq!(labels["topic"], topic, "{labels}");
        assert_eq!(labels["job"], "ledgerflow", "{labels}");
    }
    let caught_up = |what: &str| {
        wait_until(what, Duration::from_secs(60), || {
            let series = by_consumer(
                prometheus.query("count by (consumer) (ledgerflow_consumer_lag_messages)"),
            );
            let messages = prometheus.scalar("sum(ledgerflow_consumer_lag_messages)")?;
            let seconds = prometheus.scalar("max(ledgerflow_consumer_lag_seconds)")?;
            let every_partition =
                !series.is_empty() && series.values().all(|n| *n == f64::from(PARTITIONS));
            (every_partition && messages == 0.0 && seconds == 0.0).then_some(())
        })
    };
    caught_up("lag back to zero on every partition of every consumer");

    // More events on top of stored positions: behind again, then caught up again.
    stack.ledgerflow_ok(&[
        "produce",
        "--topic",
        topic,
        "--tenants",
        "3",
        "--events",
        "200",
        "--seed",
        "7",
    ]);
    wait_until(
        "lag above zero again after more events",
        Duration::from_secs(30),
        || {
            (!prometheus
                .query("ledgerflow_consumer_lag_messages > 0")
                .is_empty())
            .then_some(())
        },
    );
    caught_up("lag back to zero after the second batch of events");

    // Ready while broker, registry and database answer.
    let (status, body) = http_get(&metrics_addr, "/readyz").expect("GET /readyz");
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("readyz JSON");
    for check in ["started", "database", "broker", "registry"] {
        assert_eq!(report["checks"][check], "ok", "{report}");
    }

    // Dead letters and the failed ERP postings, as the store counts them.
    let ledger = Ledger::open(&db);
    let consumers =
        by_consumer(prometheus.query("count by (consumer) (ledgerflow_consumer_lag_messages)"));
    wait_until("dead-letter depth", Duration::from_secs(30), || {
        let depth = by_consumer(
            prometheus.query("ledgerflow_dead_letter_depth{reason=\"unsupported_magic\"}"),
        );
        (depth.keys().eq(consumers.keys()) && depth.values().all(|n| *n == 2.0)).then_some(())
    });
    let failed = wait_until(
        "outbox backlog matches the store",
        Duration::from_secs(60),
        || {
            let in_store = ledger.scalar(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_outbox WHERE status = 'failed'",
                &[],
            ) as f64;
            let scraped = prometheus.scalar(
                "ledgerflow_outbox_backlog{consumer=\"erp-receivables\",status=\"failed\"}",
            )?;
            let postings = prometheus.scalar("sum(ledgerflow_erp_postings{status=\"failed\"})")?;
            (in_store > 0.0 && scraped == in_store && postings == in_store).then_some(in_store)
        },
    );
    assert!(failed > 0.0);
    wait_until(
        "webhook deliveries match the store",
        Duration::from_secs(60),
        || {
            let in_store = ledger.scalar(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM notification_outbox",
                &[],
            ) as f64;
            let scraped = prometheus.scalar("sum(ledgerflow_webhook_deliveries)")?;
            (in_store > 0.0 && scraped == in_store).then_some(())
        },
    );

    // The exposition passes promtool's parser and linter.
    let (status, exposition) = http_get(&metrics_addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    // Payment application lag is sampled beside the outboxes (equal to the store's count).
    let held = ledger.scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM erp_payments p WHERE NOT EXISTS \
         (SELECT 1 FROM erp_ar_documents d WHERE d.tenant_id = p.tenant_id \
          AND d.doc_type = 'invoice' AND d.doc_id = p.invoice_id)",
        &[],
    );
    assert!(
        exposition.contains(&format!(
            "ledgerflow_held_payments{{consumer=\"erp-receivables\"}} {held}\n"
        )),
        "held payments gauge = {held}:\n{exposition}"
    );
    assert!(exposition.contains("ledgerflow_held_payment_age_seconds "));
    let mut promtool = Command::new(bin("PROMTOOL_BIN", "/usr/bin/promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool (run `make setup`)");
    promtool
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(exposition.as_bytes())
        .expect("writing to promtool");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}\n{}\n{exposition}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Prometheus holds the applied counts the process exposes, which the run reports.
    let exposed = applied_in(&exposition);
    assert!(exposed.keys().eq(consumers.keys()), "{exposition}");
    assert!(exposed.values().all(|n| *n > 0.0), "{exposition}");
    wait_until(
        "Prometheus to scrape the final applied counts",
        Duration::from_secs(30),
        || {
            let scraped = by_consumer(
                prometheus
                    .query("sum by (consumer) (ledgerflow_events_total{decision=\"applied\"})"),
            );
            (scraped == exposed).then_some(())
        },
    );
    let status = Command::new("kill")
        .args(["-TERM", &run.0.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = wait_until("run to exit after SIGTERM", Duration::from_secs(30), || {
        run.0.try_wait().expect("try_wait")
    });
    let log = std::fs::read_to_string(stack.path("run.log")).unwrap_or_default();
    assert!(exit.success(), "run exited with {exit}:\n{log}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stack.path("run.out")).expect("run.out"))
            .unwrap_or_else(|e| panic!("run summary is not JSON ({e}):\n{log}"));
    let applied: BTreeMap<String, f64> = summary
        .as_array()
        .expect("one summary per consumer")
        .iter()
        .map(|s| {
            let consumer = s["consumer"].as_str().expect("consumer").to_owned();
            (consumer, s["applied"].as_u64().expect("applied") as f64)
        })
        .collect();
    assert_eq!(applied, exposed, "run summary {summary} vs scraped");
    let stats = stack.stats(&db);
    for (consumer, n) in &applied {
        assert_eq!(
            stats.count(consumer, "applied", None) as f64,
            *n,
            "audit log vs metrics for {consumer}"
        );
    }
}

#[test]
fn readyz_names_the_registry_when_it_does_not_answer() {
    let stack = Stack::start();
    let topic = "e2e.unready";
    stack.create_topic(topic, 1);
    let db = format!("sqlite://{}", stack.path("ledger.db"));
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let dead_registry = format!("http://127.0.0.1:{}", free_port());
    let _run = spawn_run(
        &stack,
        &[
            "run",
            "--database",
            &db,
            "--topic",
            topic,
            "--registry",
            &dead_registry,
            "--metrics-listen",
            &metrics_addr,
        ],
        &[],
        "unready",
    );
    let (status, body) = wait_until("/readyz to answer", Duration::from_secs(30), || {
        http_get(&metrics_addr, "/readyz")
            .ok()
            .filter(|(_, body)| body.contains("\"started\":\"ok\""))
    });
    assert_eq!(status, 503, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("readyz JSON");
    assert_eq!(report["ready"], false, "{report}");
    assert_eq!(
        report["failed"],
        serde_json::json!(["registry"]),
        "{report}"
    );
    assert_eq!(report["checks"]["database"], "ok", "{report}");
    assert_eq!(report["checks"]["broker"], "ok", "{report}");
    // Alive all the same: liveness must not restart a process whose dependency is down.
    assert_eq!(
        http_get(&metrics_addr, "/healthz").expect("GET /healthz").0,
        200
    );
}
