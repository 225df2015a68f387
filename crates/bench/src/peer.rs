//! The peer the benchmark issue asks for, measured in the same run on the same broker and
//! Postgres: Kafka Connect 4.4 (standalone worker, 512 MB heap) running the Debezium JDBC sink
//! connector, which writes W1 into Postgres with `insert.mode=upsert` keyed by `event_id`
//! (at-least-once delivery + an idempotent upsert: a duplicate becomes the same row).
//!
//! Reading W1 needs a Connect converter for Confluent-framed Avro. Confluent's own
//! `AvroConverter` is not on Maven Central; Apicurio Registry's (`apicurio-registry-utils-converter`
//! 2.6.x) is, and with `apicurio.registry.as-confluent=true`, `use-id=contentId` and headers off
//! it reads the Confluent wire format (magic byte, 4-byte id, Avro body), looking the id up in an
//! Apicurio Registry (3.x, from `scripts/setup-apicurio.sh`). The harness registers W1's
//! contracts in a fresh Apicurio in the order ledgerflow's registry got them and checks that
//! every id names the same schema in both; then the peer reads the very topic ledgerflow read.
//! Should the ids ever differ, it produces a copy of W1 through Apicurio instead (same seed,
//! count, keys and duplicates) and says so.
//!
//! W1 has seven record types on one topic and the JDBC sink writes a topic to one table: the
//! table is the union of every type's fields, created before the run with every column nullable
//! (`schema.evolution=basic` cannot add a type's required fields to a table another type
//! created: "Cannot ALTER table ... is not optional but has no default value"). The sink cannot
//! write arrays of records (`lines`, `tax_lines` of invoices: "Failed to resolve column type for
//! schema: STRUCT") and Connect's `Cast` cannot turn an array into a string, so Connect's
//! `ReplaceField` transform drops those fields. Everything else of every event is written.
//!
//! Throughput is events from the connector's creation (a REST call on a worker that is already
//! up) to the moment the sink's consumer group (`connect-<name>`) has committed the high
//! watermark of every partition; the worker commits every second (`offset.flush.interval.ms`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use apache_avro::Schema as AvroSchema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as AvroValue;
use apache_avro::writer::datum::GenericDatumWriter;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use crate::probe::{self, CpuSample};
use crate::stack::{PgDatabase, Proc, Stack};

/// What the report calls the peer.
pub(crate) const PEER_NAME: &str =
    "Kafka Connect + Debezium JDBC sink connector (upsert by event_id)";
/// The table the sink writes.
const TABLE: &str = "w1_events";
/// Heap of the Connect worker.
const CONNECT_HEAP: &str = "512m";
/// The goal of the benchmark issue: ledgerflow erp-receivables at least this many times the
/// peer's events/s (the peer does less work: no journals, no audit chain, no dedup store).
pub(crate) const TARGET_B6_OVER_PEER: f64 = 3.0;
const CONNECTOR_CLASS: &str = "io.debezium.connector.jdbc.JdbcSinkConnector";
const CONVERTER_CLASS: &str = "io.apicurio.registry.utils.converter.AvroConverter";

/// Whether the harness measures the peer (`--peer` / `BENCH_PEER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerMode {
    /// When Kafka Connect, the connector and Apicurio are installed (the default).
    Auto,
    /// Always; the harness stops at once when something is missing.
    Connect,
    /// Never.
    Off,
}

impl PeerMode {
    pub(crate) fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("" | "auto") => Ok(Self::Auto),
            Some("connect") => Ok(Self::Connect),
            Some("none" | "off") => Ok(Self::Off),
            Some(other) => Err(format!(
                "unknown peer {other:?}: `connect`, `none` or `auto`"
            )),
        }
    }
}

/// How the peer runs.
#[derive(Debug, Clone)]
pub(crate) struct PeerSettings {
    pub(crate) runs: usize,
    /// `tasks.max` of the connector (W1 has 12 partitions; the machine 2 cores).
    pub(crate) tasks: u32,
    /// The sink's `batch.size` and the worker's `consumer.max.poll.records`.
    pub(crate) batch: u32,
    /// Also measure the peer at its best: the same records re-encoded under one schema.
    pub(crate) one_schema: bool,
}

/// The jars and the JVMs the peer runs with.
#[derive(Debug, Clone)]
pub(crate) struct Install {
    connect_lib: PathBuf,
    plugins: PathBuf,
    apicurio_java: PathBuf,
    apicurio_jar: PathBuf,
    /// Component -> version, from the jars' names.
    pub(crate) versions: BTreeMap<String, String>,
}

/// The workspace's `.local/` (where `scripts/setup-connect.sh` and `setup-apicurio.sh` put
/// their jars), or `BENCH_LOCAL`.
pub(crate) fn default_local_dir() -> PathBuf {
    std::env::var_os("BENCH_LOCAL").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.local"),
        PathBuf::from,
    )
}

/// `PREFIX-<version>.jar` -> `<version>` (a version starts with a digit).
fn version_from_jar_name(name: &str, prefix: &str) -> Option<String> {
    let version = name
        .strip_prefix(prefix)?
        .strip_prefix('-')?
        .strip_suffix(".jar")?;
    version
        .starts_with(|c: char| c.is_ascii_digit())
        .then(|| version.to_owned())
}

fn jar_version(dir: &Path, prefix: &str) -> Option<String> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find_map(|e| version_from_jar_name(&e.file_name().to_string_lossy(), prefix))
}

impl Install {
    /// Finds everything under `local`; `Err` says what is missing and which script brings it.
    pub(crate) fn find(local: &Path) -> Result<Self, String> {
        let connect = local.join("connect");
        let connect_lib = connect.join("lib");
        let plugins = connect.join("plugins");
        let mut versions = BTreeMap::new();
        let needed = [
            (&connect_lib, "connect-runtime", "Kafka Connect"),
            (
                &plugins.join("debezium-jdbc"),
                "debezium-connector-jdbc",
                "Debezium JDBC sink connector",
            ),
            (
                &plugins.join("apicurio-converter"),
                "apicurio-registry-utils-converter",
                "Apicurio converter",
            ),
        ];
        for (dir, prefix, what) in needed {
            let version = jar_version(dir, prefix).ok_or_else(|| {
                format!(
                    "no {what} in {} (run scripts/setup-connect.sh)",
                    dir.display()
                )
            })?;
            versions.insert(prefix.to_owned(), version);
        }
        let apicurio = local.join("apicurio");
        let apicurio_jar = apicurio.join("app/quarkus-run.jar");
        let apicurio_java = std::fs::read_to_string(apicurio.join("java"))
            .ok()
            .map(|s| PathBuf::from(s.trim()))
            .filter(|_| apicurio_jar.is_file())
            .ok_or_else(|| {
                format!(
                    "no Apicurio Registry in {} (run scripts/setup-apicurio.sh; it needs a Java 21+)",
                    apicurio.display()
                )
            })?;
        Ok(Self {
            connect_lib,
            plugins,
            apicurio_java,
            apicurio_jar,
            versions,
        })
    }
}

/// CPU seconds per 1,000 events of each process the peer's run involves.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct PeerCpu {
    /// The Kafka Connect worker's JVM (the connector's tasks, the converter, Hibernate, the
    /// JDBC driver).
    pub(crate) connect: f64,
    /// Every process of the Postgres cluster.
    pub(crate) postgres: f64,
    /// The Kafka broker's JVM.
    pub(crate) broker: f64,
    /// Apicurio Registry (schema look-ups by the converter; ledgerflow's registry is not counted
    /// for B6 either, so this is for information).
    pub(crate) registry: f64,
}

/// One measured run of the peer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PeerRun {
    pub(crate) label: String,
    pub(crate) events: u64,
    /// Connector created -> the sink group's lag is 0.
    pub(crate) seconds: f64,
    /// Worker JVM started -> the sink group's lag is 0 (JVM start, plugin scan, REST server).
    pub(crate) seconds_from_process_start: f64,
    /// Over `seconds`, per 1,000 events.
    pub(crate) cpu_per_1k: PeerCpu,
    /// CPU seconds of the worker JVM from its start to lag 0 (startup included).
    pub(crate) connect_cpu_total_s: f64,
    pub(crate) rows: u64,
    /// Transactions committed in the peer's database over the run (`pg_stat_database`).
    pub(crate) transactions: u64,
    pub(crate) peak_rss_kib: u64,
}

impl PeerRun {
    pub(crate) fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }

    pub(crate) fn transactions_per_event(&self) -> f64 {
        self.transactions as f64 / self.events.max(1) as f64
    }

    /// One line for the terminal.
    pub(crate) fn line(&self) -> String {
        let c = self.cpu_per_1k;
        format!(
            "{:.0} events/s ({} events in {:.1} s from connector creation, {:.1} s from JVM start); \
             CPU s/1k: connect {:.3}, postgres {:.3}, broker {:.3}, registry {:.3}; {} rows, \
             {:.3} transactions per event",
            self.events_per_sec(),
            self.events,
            self.seconds,
            self.seconds_from_process_start,
            c.connect,
            c.postgres,
            c.broker,
            c.registry,
            self.rows,
            self.transactions_per_event()
        )
    }
}

/// The peer at its best: the same W1 events, keys, duplicates and order, re-encoded by the
/// harness under one schema (the union of the record types, every field optional but
/// `event_id`), on a topic of its own. The JDBC sink batches only records of one schema, so this
/// is the most it does per transaction on this machine.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PeerVariant {
    pub(crate) topic: String,
    pub(crate) events_per_sec: f64,
    pub(crate) runs: Vec<f64>,
    pub(crate) cpu_per_1k: PeerCpu,
    pub(crate) rows: u64,
    pub(crate) rows_match: bool,
    pub(crate) transactions_per_event: f64,
    pub(crate) b6_erp_over_peer: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) raw: Vec<PeerRun>,
}

impl PeerVariant {
    fn from_runs(topic: &str, runs: Vec<PeerRun>, distinct: u64) -> Option<Self> {
        let median = crate::report::median_by(&runs, PeerRun::events_per_sec)?.clone();
        Some(Self {
            topic: topic.to_owned(),
            events_per_sec: median.events_per_sec(),
            runs: runs.iter().map(PeerRun::events_per_sec).collect(),
            cpu_per_1k: median.cpu_per_1k,
            rows: median.rows,
            rows_match: runs.iter().all(|r| r.rows == distinct),
            transactions_per_event: median.transactions_per_event(),
            b6_erp_over_peer: None,
            raw: runs,
        })
    }
}

/// The report's `peer` object.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PeerReport {
    pub(crate) name: String,
    /// `measured`, `skipped` or `failed`.
    pub(crate) status: String,
    /// Median over the runs.
    pub(crate) events_per_sec: Option<f64>,
    /// Every run's events/s.
    pub(crate) runs: Vec<f64>,
    /// The median run's CPU per 1,000 events by process.
    pub(crate) cpu_per_1k: Option<PeerCpu>,
    /// Rows in the sink's table after the median run (upsert: one per distinct event).
    pub(crate) rows: Option<u64>,
    pub(crate) distinct_events: u64,
    /// Every run's table held exactly the distinct events.
    pub(crate) rows_match: Option<bool>,
    pub(crate) seconds_from_process_start: Option<f64>,
    /// Postgres transactions committed per event in the median run.
    pub(crate) transactions_per_event: Option<f64>,
    pub(crate) peak_rss_mib: Option<f64>,
    /// The topic the peer read (W1 itself unless the schema ids differed).
    pub(crate) topic: String,
    pub(crate) versions: BTreeMap<String, String>,
    pub(crate) settings: BTreeMap<String, String>,
    pub(crate) notes: Vec<String>,
    /// ledgerflow B6 erp-receivables (median) over the peer (median).
    pub(crate) b6_erp_over_peer: Option<f64>,
    pub(crate) target_met: Option<bool>,
    /// The same events under one schema (see [`PeerVariant`]), when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) one_schema: Option<PeerVariant>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) raw: Vec<PeerRun>,
}

impl PeerReport {
    /// The peer was not measured, and why.
    pub(crate) fn skipped(why: &str, distinct_events: u64) -> Self {
        Self::empty("skipped", distinct_events, vec![why.to_owned()])
    }

    fn empty(status: &str, distinct_events: u64, notes: Vec<String>) -> Self {
        Self {
            name: PEER_NAME.to_owned(),
            status: status.to_owned(),
            events_per_sec: None,
            runs: Vec::new(),
            cpu_per_1k: None,
            rows: None,
            distinct_events,
            rows_match: None,
            seconds_from_process_start: None,
            transactions_per_event: None,
            peak_rss_mib: None,
            topic: String::new(),
            versions: BTreeMap::new(),
            settings: BTreeMap::new(),
            notes,
            b6_erp_over_peer: None,
            target_met: None,
            one_schema: None,
            raw: Vec::new(),
        }
    }

    /// Fills the ratio to ledgerflow's B6 erp-receivables median.
    pub(crate) fn compare_with(&mut self, b6_erp_events_per_sec: Option<f64>) {
        if let (Some(b6), Some(v)) = (b6_erp_events_per_sec, self.one_schema.as_mut())
            && v.events_per_sec > 0.0
        {
            v.b6_erp_over_peer = Some(b6 / v.events_per_sec);
        }
        if let (Some(b6), Some(peer)) = (b6_erp_events_per_sec, self.events_per_sec)
            && peer > 0.0
        {
            let ratio = b6 / peer;
            self.b6_erp_over_peer = Some(ratio);
            self.target_met = Some(ratio >= TARGET_B6_OVER_PEER);
        }
    }
}

/// What the workload was, for the peer's copy and its checks.
#[derive(Debug, Clone)]
pub(crate) struct W1<'a> {
    pub(crate) topic: &'a str,
    pub(crate) hwm: &'a BTreeMap<i32, i64>,
    pub(crate) partitions: u32,
    pub(crate) tenants: u32,
    pub(crate) events: u64,
    pub(crate) duplicates: f64,
    pub(crate) seed: u64,
    pub(crate) distinct: u64,
}

/// Measures the peer `settings.runs` times. Never fails: a failure is the report's status.
pub(crate) async fn measure(
    stack: &Stack,
    admin: &str,
    install: &Install,
    settings: &PeerSettings,
    w1: &W1<'_>,
    ticks: f64,
    say: &dyn Fn(&str),
) -> PeerReport {
    let mut report = PeerReport::empty("measured", w1.distinct, Vec::new());
    report.versions = install.versions.clone();
    report.settings = BTreeMap::from([
        ("tasks.max".to_owned(), settings.tasks.to_string()),
        ("batch.size".to_owned(), settings.batch.to_string()),
        (
            "consumer.max.poll.records".to_owned(),
            settings.batch.to_string(),
        ),
        ("insert.mode".to_owned(), "upsert".to_owned()),
        ("primary.key.mode".to_owned(), "record_value".to_owned()),
        ("primary.key.fields".to_owned(), "event_id".to_owned()),
        ("schema.evolution".to_owned(), "basic".to_owned()),
        ("offset.flush.interval.ms".to_owned(), "1000".to_owned()),
        ("heap".to_owned(), CONNECT_HEAP.to_owned()),
    ]);
    match measure_inner(stack, admin, install, settings, w1, ticks, say, &mut report).await {
        Ok(()) => {}
        Err(e) => {
            say(&format!("  peer failed: {e:#}"));
            report.status = "failed".to_owned();
            report.notes.push(format!("failed: {e:#}"));
        }
    }
    report
}

#[allow(clippy::too_many_arguments)]
async fn measure_inner(
    stack: &Stack,
    admin: &str,
    install: &Install,
    settings: &PeerSettings,
    w1: &W1<'_>,
    ticks: f64,
    say: &dyn Fn(&str),
    report: &mut PeerReport,
) -> anyhow::Result<()> {
    say("  starting Apicurio Registry for the peer's converter");
    let apicurio = Apicurio::start(install, &stack.path("peer-apicurio"))?;
    report
        .versions
        .insert("apicurio-registry".to_owned(), apicurio.version.clone());
    // The contracts, registered in Apicurio in the order `ledgerflow produce` registered them
    // in ledgerflow's registry (same code, same order): Apicurio's content ids then name the
    // same schemas as the ids in W1's records.
    let out = stack.ledgerflow(&[
        "produce",
        "--registry",
        &apicurio.ccompat(),
        "--topic",
        w1.topic,
        "--events",
        "0",
    ])?;
    anyhow::ensure!(
        out.status.success(),
        "registering the contracts in Apicurio failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = registered_schemas(&stack.registry)?;
    let theirs = registered_schemas(&apicurio.ccompat())?;
    let columns = table_columns(ours.values())?;
    let copy_topic = format!("{}.peer", w1.topic);
    let (topic, hwm) = match id_mismatch(&ours, &theirs) {
        None => {
            report.notes.push(format!(
                "Reads the W1 topic itself: its {} schema ids name the same schemas in ledgerflow's \
                 registry and in Apicurio Registry {} (checked id by id).",
                ours.len(),
                apicurio.version
            ));
            (w1.topic.to_owned(), w1.hwm.clone())
        }
        Some(why) => {
            say(&format!(
                "  schema ids differ ({why}): producing a copy of W1 through Apicurio to {copy_topic}"
            ));
            stack.create_topic(&copy_topic, w1.partitions).await?;
            let out = stack.ledgerflow(&[
                "produce",
                "--registry",
                &apicurio.ccompat(),
                "--topic",
                &copy_topic,
                "--tenants",
                &w1.tenants.to_string(),
                "--events",
                &w1.events.to_string(),
                "--duplicates",
                &w1.duplicates.to_string(),
                "--seed",
                &w1.seed.to_string(),
            ])?;
            anyhow::ensure!(
                out.status.success(),
                "producing the peer's copy failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let hwm = crate::baselines::high_watermarks(&stack.brokers, &copy_topic)?;
            report.notes.push(format!(
                "Reads {copy_topic}, a copy of W1 produced through Apicurio (same seed, count, keys \
                 and duplicates; schema ids from Apicurio): {why}."
            ));
            (copy_topic, hwm)
        }
    };
    report.topic = topic.clone();
    let excluded: Vec<String> = columns.excluded.clone();
    report.notes.push(format!(
        "One table for the topic ({TABLE}, {} columns: the union of the fields of W1's {} writer \
         schemas, created before each run, all nullable but the event_id primary key). Dropped by Connect's \
         ReplaceField transform because the sink cannot write arrays of records: {}.",
        columns.columns.len(),
        ours.len(),
        if excluded.is_empty() {
            "nothing".to_owned()
        } else {
            excluded.join(", ")
        }
    ));
    report.notes.push(
        "Does less than ledgerflow erp-receivables: one upsert per record, no journals or AR \
         documents, no audit chain, no dedup store across replays, no tenant checks or \
         validation, no positions of record in the database (offsets live in Kafka)."
            .to_owned(),
    );
    report.notes.push(
        "Events/s are from the connector's creation on a running worker to the sink group's lag \
         0 (offsets committed every second, so up to a second is included); CPU over the same \
         interval. JVM start, plugin scan and REST server come before and are left out (see \
         seconds_from_process_start)."
            .to_owned(),
    );

    let series = Series {
        stack,
        admin,
        install,
        apicurio: &apicurio,
        settings,
        columns: &columns,
        ticks,
        say,
    };
    let runs = series.run("peer", &topic, &hwm, &columns.excluded).await?;
    let rows_match = runs.iter().all(|r| r.rows == w1.distinct);
    let median = crate::report::median_by(&runs, PeerRun::events_per_sec)
        .cloned()
        .context("no peer run")?;
    report.events_per_sec = Some(median.events_per_sec());
    report.runs = runs.iter().map(PeerRun::events_per_sec).collect();
    report.cpu_per_1k = Some(median.cpu_per_1k);
    report.rows = Some(median.rows);
    report.rows_match = Some(rows_match);
    report.seconds_from_process_start = Some(median.seconds_from_process_start);
    report.peak_rss_mib = Some(median.peak_rss_kib as f64 / 1024.0);
    report.transactions_per_event = Some(median.transactions_per_event());
    report.notes.push(format!(
        "The sink committed {:.2} Postgres transactions per event: Debezium's RecordBuffer \
         flushes its batch (in a transaction of its own) whenever a record's value schema \
         differs from the previous record's, and W1 interleaves {} writer schemas on one topic, \
         so batch.size is rarely reached. On a topic of one schema it would write up to \
         batch.size rows per transaction.",
        median.transactions_per_event(),
        ours.len()
    ));
    if !rows_match {
        report.notes.push(format!(
            "ROW COUNT MISMATCH: a run's table did not hold exactly the {} distinct events (rows: {}).",
            w1.distinct,
            runs.iter()
                .map(|r| r.rows.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    report.raw = runs;

    if settings.one_schema {
        say("  the peer at its best: the same events re-encoded under one schema");
        let one = match one_schema_copy(
            stack,
            &apicurio,
            &topic,
            &hwm,
            &ours,
            &columns,
            w1.partitions,
        )
        .await
        {
            Ok((one_topic, one_hwm)) => series
                .run("peer-one-schema", &one_topic, &one_hwm, &[])
                .await
                .map(|runs| PeerVariant::from_runs(&one_topic, runs, w1.distinct)),
            Err(e) => Err(e),
        };
        match one {
            Ok(Some(v)) => {
                report.notes.push(format!(
                    "The peer at its best (one_schema): the same events, keys, duplicates and order \
                     re-encoded by the harness under one schema (the union of the record types, \
                     every field optional but event_id) on {}: {:.0} events/s, {:.3} \
                     transactions per event, {} rows.",
                    v.topic, v.events_per_sec, v.transactions_per_event, v.rows
                ));
                report.one_schema = Some(v);
            }
            Ok(None) => {}
            Err(e) => {
                say(&format!("  the one-schema run failed: {e:#}"));
                report
                    .notes
                    .push(format!("The one-schema run failed: {e:#}"));
            }
        }
    }
    Ok(())
}

/// What every run of a series shares.
struct Series<'a> {
    stack: &'a Stack,
    admin: &'a str,
    install: &'a Install,
    apicurio: &'a Apicurio,
    settings: &'a PeerSettings,
    columns: &'a Columns,
    ticks: f64,
    say: &'a dyn Fn(&str),
}

impl std::fmt::Debug for Series<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Series")
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

impl Series<'_> {
    /// `settings.runs` runs on `topic`, each with a fresh worker and database.
    async fn run(
        &self,
        prefix: &str,
        topic: &str,
        hwm: &BTreeMap<i32, i64>,
        excluded: &[String],
    ) -> anyhow::Result<Vec<PeerRun>> {
        let mut runs = Vec::new();
        let n = self.settings.runs.max(1);
        for i in 0..n {
            (self.say)(&format!(
                "  {prefix} run {}/{n}: Kafka Connect + Debezium JDBC sink on {topic}, {} task(s)",
                i + 1,
                self.settings.tasks
            ));
            let label = format!("{prefix}-{}", i + 1);
            let run = run_once(
                self.stack,
                self.admin,
                self.install,
                self.apicurio,
                self.settings,
                topic,
                hwm,
                self.columns,
                excluded,
                &label,
                self.ticks,
            )
            .await?;
            (self.say)(&format!("  {}", run.line()));
            runs.push(run);
        }
        Ok(runs)
    }
}

/// One run: a fresh database and table, a fresh worker JVM, the connector created over REST,
/// timed to the sink group's lag 0.
#[allow(clippy::too_many_arguments)]
async fn run_once(
    stack: &Stack,
    admin: &str,
    install: &Install,
    apicurio: &Apicurio,
    settings: &PeerSettings,
    topic: &str,
    hwm: &BTreeMap<i32, i64>,
    columns: &Columns,
    excluded: &[String],
    label: &str,
    ticks: f64,
) -> anyhow::Result<PeerRun> {
    let db = PgDatabase::create(admin, &label.replace('-', "_")).await?;
    let result = run_in(
        stack, install, apicurio, settings, topic, hwm, columns, excluded, label, ticks, &db,
    )
    .await;
    db.drop_now().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_in(
    stack: &Stack,
    install: &Install,
    apicurio: &Apicurio,
    settings: &PeerSettings,
    topic: &str,
    hwm: &BTreeMap<i32, i64>,
    columns: &Columns,
    excluded: &[String],
    label: &str,
    ticks: f64,
    db: &PgDatabase,
) -> anyhow::Result<PeerRun> {
    let events: i64 = hwm.values().sum();
    let mut pg = PgConnection::connect(&db.url).await?;
    sqlx::query(&columns.ddl(TABLE))
        .execute(&mut pg)
        .await
        .context("creating the peer's table")?;

    let dir = stack.path(label);
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let worker = worker_properties(
        &stack.brokers,
        &apicurio.registry_v2(),
        &install.plugins,
        &dir.join("connect.offsets"),
        port,
        settings.batch,
    );
    std::fs::write(dir.join("worker.properties"), worker)?;
    std::fs::write(
        dir.join("log4j2.properties"),
        log4j2_properties(&dir.join("connect.log")),
    )?;
    let classpath = format!("{}/*", install.connect_lib.display());
    let process_started = Instant::now();
    let child = Command::new(crate::stack::java())
        .arg(format!("-Xmx{CONNECT_HEAP}"))
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            dir.join("log4j2.properties").display()
        ))
        .args(["-cp", &classpath])
        .arg("org.apache.kafka.connect.cli.ConnectStandalone")
        .arg(dir.join("worker.properties"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("connect.out"))?)
        .stderr(std::fs::File::create(dir.join("connect.err"))?)
        .spawn()
        .context("starting the Kafka Connect worker")?;
    let mut connect = Proc(child);
    let pid = connect.pid();
    let rest = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if matches!(http("GET", &format!("{rest}/"), None), Ok((200, _))) {
            break;
        }
        if let Some(status) = connect.0.try_wait()? {
            bail!(
                "the Connect worker exited ({status}) before its REST server answered:\n{}",
                tail_of(&dir, &["connect.log", "connect.err", "connect.out"])
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the Connect worker's REST server did not answer within 240 s:\n{}",
                tail_of(&dir, &["connect.log", "connect.err"])
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let name = format!(
        "bench-{label}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let (jdbc, user, password) = jdbc_url(&db.url)?;
    let config = connector_config(topic, &jdbc, &user, &password, settings, excluded);
    let group = format!("connect-{name}");
    let offsets = group_reader(&stack.brokers, &group)?;

    let before = CpuSample::take(pid, stack.broker_pid(), ticks);
    let registry_before = probe::cpu_seconds(apicurio.pid(), ticks);
    let started = Instant::now();
    let (code, body) = http(
        "PUT",
        &format!("{rest}/connectors/{name}/config"),
        Some(&config.to_string()),
    )?;
    anyhow::ensure!(
        code == 200 || code == 201,
        "creating the connector: HTTP {code}: {body}"
    );
    let timeout = Duration::from_secs(600 + (events as u64) / 200);
    let mut last_status = Instant::now();
    loop {
        let committed = committed_offsets(&offsets, topic, hwm)?;
        if lag_is_zero(&committed, hwm) {
            break;
        }
        if last_status.elapsed() >= Duration::from_secs(1) {
            last_status = Instant::now();
            if let Ok((200, body)) = http("GET", &format!("{rest}/connectors/{name}/status"), None)
                && let Ok(json) = serde_json::from_str::<serde_json::Value>(&body)
                && let Some(trace) = failure(&json)
            {
                bail!("the connector failed:\n{trace}");
            }
        }
        if let Some(status) = connect.0.try_wait()? {
            bail!(
                "the Connect worker exited ({status}) before lag 0:\n{}",
                tail_of(&dir, &["connect.log", "connect.err"])
            );
        }
        if started.elapsed() > timeout {
            bail!("{label}: the sink group did not reach lag 0 within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let seconds_from_process_start = process_started.elapsed().as_secs_f64();
    let after = CpuSample::take(pid, stack.broker_pid(), ticks);
    let registry_cpu = (probe::cpu_seconds(apicurio.pid(), ticks) - registry_before).max(0.0);
    let connect_cpu_total_s = probe::cpu_seconds(pid, ticks);
    let peak_rss_kib = probe::peak_rss_kib(pid).unwrap_or(0);
    if let Ok((200, body)) = http("GET", &format!("{rest}/connectors/{name}/status"), None)
        && let Ok(json) = serde_json::from_str::<serde_json::Value>(&body)
        && let Some(trace) = failure(&json)
    {
        bail!("the connector failed:\n{trace}");
    }
    // Ends only the worker this run started (Proc's drop kills and reaps it by its pid).
    drop(connect);
    // Its backends flush their statistics when they exit.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let transactions: i64 = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut pg)
    .await
    .unwrap_or(0);
    let (rows, distinct): (i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*), count(DISTINCT event_id) FROM {TABLE}"
    ))
    .fetch_one(&mut pg)
    .await
    .context("counting the peer's rows")?;
    pg.close().await.ok();
    anyhow::ensure!(
        rows == distinct,
        "{TABLE} holds {rows} rows but {distinct} event ids"
    );
    let split = after.since(before);
    let k = (events.max(1)) as f64 / 1000.0;
    Ok(PeerRun {
        label: label.to_owned(),
        events: events as u64,
        seconds,
        seconds_from_process_start,
        cpu_per_1k: PeerCpu {
            connect: split.consumer / k,
            postgres: split.postgres / k,
            broker: split.broker / k,
            registry: registry_cpu / k,
        },
        connect_cpu_total_s,
        rows: rows as u64,
        transactions: transactions.max(0) as u64,
        peak_rss_kib,
    })
}

/// The last lines of the first of `files` in `dir` that has any.
fn tail_of(dir: &Path, files: &[&str]) -> String {
    for f in files {
        let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        if !text.trim().is_empty() {
            let lines: Vec<&str> = text.lines().collect();
            return lines[lines.len().saturating_sub(30)..].join("\n");
        }
    }
    String::new()
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A client that reads the committed offsets of `group` (OffsetFetch; it never joins).
fn group_reader(brokers: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the offset reader")
}

fn committed_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    hwm: &BTreeMap<i32, i64>,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut tpl = TopicPartitionList::new();
    for p in hwm.keys() {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .context("fetching the sink group's committed offsets")?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Every partition with records has its high watermark committed.
fn lag_is_zero(committed: &BTreeMap<i32, i64>, hwm: &BTreeMap<i32, i64>) -> bool {
    hwm.iter()
        .all(|(p, high)| *high == 0 || committed.get(p).is_some_and(|c| c >= high))
}

/// The trace of a FAILED connector or task in a `/connectors/<name>/status` answer.
fn failure(status: &serde_json::Value) -> Option<String> {
    let failed = |v: &serde_json::Value| v["state"].as_str() == Some("FAILED");
    let trace = |v: &serde_json::Value| {
        v["trace"]
            .as_str()
            .unwrap_or("(no trace)")
            .lines()
            .filter(|l| !l.trim_start().starts_with("at "))
            .take(12)
            .collect::<Vec<_>>()
            .join("\n")
    };
    if failed(&status["connector"]) {
        return Some(format!("connector: {}", trace(&status["connector"])));
    }
    status["tasks"]
        .as_array()?
        .iter()
        .find(|t| failed(t))
        .map(|t| format!("task {}: {}", t["id"], trace(t)))
}

/// `postgres://user[:password]@host[:port]/db[?params]` -> (JDBC URL, user, password).
fn jdbc_url(url: &str) -> anyhow::Result<(String, String, String)> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .with_context(|| format!("not a postgres:// URL: {url}"))?;
    let (auth, host_db) = rest.rsplit_once('@').unwrap_or(("", rest));
    let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
    let user = if user.is_empty() { "postgres" } else { user };
    Ok((
        format!("jdbc:postgresql://{host_db}"),
        user.to_owned(),
        password.to_owned(),
    ))
}

fn worker_properties(
    brokers: &str,
    registry_v2: &str,
    plugins: &Path,
    offsets_file: &Path,
    port: u16,
    batch: u32,
) -> String {
    format!(
        "# Kafka Connect standalone worker of the benchmark's peer (written by ledgerflow-bench).\n\
         bootstrap.servers={brokers}\n\
         listeners=http://127.0.0.1:{port}\n\
         plugin.path={plugins}\n\
         offset.storage.file.filename={offsets}\n\
         # Sink offsets are committed to the group on this interval; the clock stops at lag 0.\n\
         offset.flush.interval.ms=1000\n\
         consumer.max.poll.records={batch}\n\
         # W1's keys are tenant ids (UTF-8 strings).\n\
         key.converter=org.apache.kafka.connect.storage.StringConverter\n\
         # Confluent wire format (magic byte, 4-byte schema id, Avro body), ids looked up in\n\
         # Apicurio Registry by content id.\n\
         value.converter={CONVERTER_CLASS}\n\
         value.converter.apicurio.registry.url={registry_v2}\n\
         value.converter.apicurio.registry.as-confluent=true\n\
         value.converter.apicurio.registry.use-id=contentId\n\
         value.converter.apicurio.registry.headers.enabled=false\n",
        plugins = plugins.display(),
        offsets = offsets_file.display(),
    )
}

fn log4j2_properties(file: &Path) -> String {
    format!(
        "status = warn\n\
         appender.file.type = File\n\
         appender.file.name = file\n\
         appender.file.fileName = {}\n\
         appender.file.layout.type = PatternLayout\n\
         appender.file.layout.pattern = %d %p %c{{1}} [%t] %m%n\n\
         rootLogger.level = warn\n\
         rootLogger.appenderRef.file.ref = file\n",
        file.display()
    )
}

/// The connector's configuration (the JSON body of `PUT /connectors/<name>/config`).
fn connector_config(
    topic: &str,
    jdbc: &str,
    user: &str,
    password: &str,
    settings: &PeerSettings,
    excluded: &[String],
) -> serde_json::Value {
    let mut config = serde_json::json!({
        "connector.class": CONNECTOR_CLASS,
        "tasks.max": settings.tasks.to_string(),
        "topics": topic,
        "connection.url": jdbc,
        "connection.username": user,
        "connection.password": password,
        "insert.mode": "upsert",
        "primary.key.mode": "record_value",
        "primary.key.fields": "event_id",
        "schema.evolution": "basic",
        "collection.name.format": TABLE,
        "batch.size": settings.batch.to_string(),
    });
    if !excluded.is_empty() {
        config["transforms"] = "nested".into();
        config["transforms.nested.type"] =
            "org.apache.kafka.connect.transforms.ReplaceField$Value".into();
        config["transforms.nested.exclude"] = excluded.join(",").into();
    }
    config
}

/// The sink's table: the union of the record types' fields that the sink can write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Columns {
    /// `(name, Postgres type)`, in the order first seen.
    columns: Vec<(String, &'static str)>,
    /// Fields of a type the sink cannot write (arrays, maps, records), dropped by a transform.
    excluded: Vec<String>,
}

impl Columns {
    fn ddl(&self, table: &str) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|(name, ty)| {
                if name == "event_id" {
                    format!("{name} {ty} PRIMARY KEY")
                } else {
                    format!("{name} {ty}")
                }
            })
            .collect();
        format!("CREATE TABLE {table} ({})", cols.join(", "))
    }
}

impl Columns {
    /// The one Avro schema of the peer's best case: every column, optional but `event_id`.
    fn avro_schema(&self) -> serde_json::Value {
        let fields: Vec<serde_json::Value> = self
            .columns
            .iter()
            .map(|(name, ty)| {
                let avro = match *ty {
                    "text" => "string",
                    "bigint" => "long",
                    "integer" => "int",
                    "boolean" => "boolean",
                    "bytea" => "bytes",
                    "real" => "float",
                    _ => "double",
                };
                if name == "event_id" {
                    serde_json::json!({"name": name, "type": avro})
                } else {
                    serde_json::json!({"name": name, "type": ["null", avro], "default": null})
                }
            })
            .collect();
        serde_json::json!({
            "type": "record",
            "name": "W1Row",
            "namespace": "ledgerflow.bench",
            "doc": "Every W1 record type in one schema (the benchmark peer's best case).",
            "fields": fields,
        })
    }

    /// A decoded W1 record as a value of [`Columns::avro_schema`].
    fn unify(&self, record: AvroValue) -> anyhow::Result<AvroValue> {
        let AvroValue::Record(fields) = record else {
            bail!("not a record: {record:?}");
        };
        let mut by_name: std::collections::HashMap<String, AvroValue> =
            fields.into_iter().collect();
        let mut out = Vec::with_capacity(self.columns.len());
        for (name, _) in &self.columns {
            let value = by_name.remove(name).map_or(AvroValue::Null, plain);
            let value = if name == "event_id" {
                value
            } else if value == AvroValue::Null {
                AvroValue::Union(0, Box::new(AvroValue::Null))
            } else {
                AvroValue::Union(1, Box::new(value))
            };
            out.push((name.clone(), value));
        }
        Ok(AvroValue::Record(out))
    }
}

/// A value without its union branch and logical type (the one-schema copy declares plain
/// types, as the converter hands them to the sink anyway).
fn plain(value: AvroValue) -> AvroValue {
    match value {
        AvroValue::Union(_, inner) => plain(*inner),
        AvroValue::Uuid(u) => AvroValue::String(u.to_string()),
        AvroValue::Enum(_, symbol) => AvroValue::String(symbol),
        AvroValue::TimestampMicros(x)
        | AvroValue::TimestampMillis(x)
        | AvroValue::TimestampNanos(x)
        | AvroValue::LocalTimestampMicros(x)
        | AvroValue::LocalTimestampMillis(x)
        | AvroValue::LocalTimestampNanos(x)
        | AvroValue::TimeMicros(x) => AvroValue::Long(x),
        AvroValue::TimeMillis(x) | AvroValue::Date(x) => AvroValue::Int(x),
        other => other,
    }
}

/// Writes the peer's best case: every record of `topic` (Confluent-framed, ids of `writers`),
/// decoded and re-encoded under [`Columns::avro_schema`] (registered in Apicurio), to
/// `<topic>.one-schema` with the same key and partition, in the same order.
async fn one_schema_copy(
    stack: &Stack,
    apicurio: &Apicurio,
    topic: &str,
    hwm: &BTreeMap<i32, i64>,
    writers: &BTreeMap<i64, serde_json::Value>,
    columns: &Columns,
    partitions: u32,
) -> anyhow::Result<(String, BTreeMap<i32, i64>)> {
    let target = format!("{topic}.one-schema");
    stack.create_topic(&target, partitions).await?;
    let unified = columns.avro_schema();
    let (code, body) = http(
        "POST",
        &format!("{}/subjects/{target}-value/versions", apicurio.ccompat()),
        Some(&serde_json::json!({"schema": unified.to_string()}).to_string()),
    )?;
    anyhow::ensure!(
        code == 200,
        "registering the one-schema record: HTTP {code}: {body}"
    );
    let id = serde_json::from_str::<serde_json::Value>(&body)?["id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .with_context(|| format!("no id in {body}"))?;
    let unified = AvroSchema::parse(&unified)?;
    let writer = GenericDatumWriter::builder(&unified).build()?;
    let schemas: BTreeMap<i64, AvroSchema> = writers
        .iter()
        .map(|(id, s)| Ok((*id, AvroSchema::parse(s)?)))
        .collect::<anyhow::Result<_>>()?;
    let mut readers = BTreeMap::new();
    for (id, schema) in &schemas {
        readers.insert(*id, GenericDatumReader::builder(schema).build()?);
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set(
            "group.id",
            format!("bench-copy-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the copy's reader")?;
    let mut tpl = TopicPartitionList::new();
    for p in hwm.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .context("creating the copy's producer")?;
    let total: i64 = hwm.values().sum();
    let mut next: BTreeMap<i32, i64> = hwm.keys().map(|p| (*p, 0)).collect();
    let mut copied = 0i64;
    let deadline = Instant::now() + Duration::from_secs(600 + total as u64 / 1000);
    while copied < total {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the one-schema copy took too long"
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.context("reading W1 for the copy")?;
        let (partition, offset) = (message.partition(), message.offset());
        if next.get(&partition).is_some_and(|n| offset < *n) {
            continue;
        }
        next.insert(partition, offset + 1);
        let payload = message.payload().unwrap_or_default();
        anyhow::ensure!(
            payload.len() > 5 && payload[0] == 0,
            "{topic}/{partition}@{offset} is not Confluent-framed"
        );
        let schema_id = i64::from(u32::from_be_bytes([
            payload[1], payload[2], payload[3], payload[4],
        ]));
        let reader = readers.get(&schema_id).with_context(|| {
            format!("{topic}/{partition}@{offset}: unknown schema id {schema_id}")
        })?;
        let value = reader.read_value(&mut &payload[5..])?;
        let mut framed = vec![0u8];
        framed.extend_from_slice(&id.to_be_bytes());
        framed.extend(writer.write_value_to_vec(columns.unify(value)?)?);
        let key = message.key().map(<[u8]>::to_vec);
        let mut record = BaseRecord::to(&target)
            .partition(partition)
            .payload(&framed);
        if let Some(key) = &key {
            record = record.key(key);
        }
        let mut pending = record;
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    producer.poll(Duration::from_millis(20));
                    pending = back;
                }
                Err((e, _)) => return Err(e).context("producing the one-schema copy"),
            }
        }
        copied += 1;
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the one-schema copy")?;
    let copy_hwm = crate::baselines::high_watermarks(&stack.brokers, &target)?;
    anyhow::ensure!(
        copy_hwm == *hwm,
        "the one-schema copy's partitions hold {copy_hwm:?}, W1's {hwm:?}"
    );
    Ok((target, copy_hwm))
}

/// The Postgres column the Debezium JDBC sink writes for an Avro field type read by the
/// Apicurio converter (logical timestamps stay `bigint`, as the sink creates them); `None` for
/// what it cannot write.
fn column_type(avro: &serde_json::Value) -> Option<&'static str> {
    match avro {
        serde_json::Value::String(t) => match t.as_str() {
            "string" => Some("text"),
            "long" => Some("bigint"),
            "int" => Some("integer"),
            "boolean" => Some("boolean"),
            "bytes" => Some("bytea"),
            "float" => Some("real"),
            "double" => Some("double precision"),
            _ => None,
        },
        serde_json::Value::Array(branches) => {
            let mut non_null = branches.iter().filter(|b| b.as_str() != Some("null"));
            match (non_null.next(), non_null.next()) {
                (Some(only), None) => column_type(only),
                _ => None,
            }
        }
        serde_json::Value::Object(o) => match o.get("type") {
            Some(serde_json::Value::String(t)) if t == "enum" => Some("text"),
            Some(serde_json::Value::String(t)) if t == "fixed" => Some("bytea"),
            Some(serde_json::Value::String(t))
                if matches!(t.as_str(), "array" | "map" | "record") =>
            {
                None
            }
            Some(inner) => column_type(inner),
            None => None,
        },
        _ => None,
    }
}

/// The union of the fields of `schemas` (Avro record schemas), as the sink's table.
fn table_columns<'a>(
    schemas: impl IntoIterator<Item = &'a serde_json::Value>,
) -> anyhow::Result<Columns> {
    let mut columns: Vec<(String, &'static str)> = Vec::new();
    let mut excluded: Vec<String> = Vec::new();
    for schema in schemas {
        let fields = schema["fields"]
            .as_array()
            .with_context(|| format!("not a record schema: {schema}"))?;
        for field in fields {
            let name = field["name"].as_str().context("a field without a name")?;
            match column_type(&field["type"]) {
                Some(ty) => match columns.iter().find(|(n, _)| n == name) {
                    Some((_, seen)) if *seen != ty => {
                        bail!("field {name} is {seen} in one record type and {ty} in another")
                    }
                    Some(_) => {}
                    None => columns.push((name.to_owned(), ty)),
                },
                None => {
                    if !excluded.iter().any(|n| n == name) {
                        excluded.push(name.to_owned());
                    }
                }
            }
        }
    }
    anyhow::ensure!(
        columns.iter().any(|(n, _)| n == "event_id"),
        "the schemas have no event_id field"
    );
    Ok(Columns { columns, excluded })
}

/// Every schema of a Confluent-compatible registry by id (1, 2, ... up to the first id it does
/// not know), parsed.
fn registered_schemas(base: &str) -> anyhow::Result<BTreeMap<i64, serde_json::Value>> {
    let mut out = BTreeMap::new();
    for id in 1..=10_000i64 {
        let (code, body) = http("GET", &format!("{base}/schemas/ids/{id}"), None)?;
        if code == 404 {
            break;
        }
        anyhow::ensure!(code == 200, "{base}/schemas/ids/{id}: HTTP {code}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("{base}/schemas/ids/{id}: {body}"))?;
        let text = json["schema"]
            .as_str()
            .with_context(|| format!("{base}/schemas/ids/{id}: no schema in {body}"))?;
        out.insert(id, serde_json::from_str(text)?);
    }
    anyhow::ensure!(!out.is_empty(), "{base} has no schemas");
    Ok(out)
}

/// Why Apicurio's ids would not decode W1's records, or `None` when each id of ours names the
/// same schema there.
fn id_mismatch(
    ours: &BTreeMap<i64, serde_json::Value>,
    theirs: &BTreeMap<i64, serde_json::Value>,
) -> Option<String> {
    ours.iter().find_map(|(id, schema)| match theirs.get(id) {
        None => Some(format!("id {id} is unknown to Apicurio")),
        Some(other) if other != schema => Some(format!(
            "id {id} is {} in ledgerflow's registry and {} in Apicurio",
            schema["name"], other["name"]
        )),
        Some(_) => None,
    })
}

/// `http://host:port/path` -> (`host:port`, `/path`).
fn split_url(url: &str) -> anyhow::Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("not an http:// URL: {url}"))?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

/// Status code and body of an HTTP/1.x response.
fn parse_response(response: &str) -> Option<(u16, &str)> {
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, body))
}

/// A plain HTTP/1.0 request on 127.0.0.1 (JSON in and out): status and body.
fn http(method: &str, url: &str, body: Option<&str>) -> anyhow::Result<(u16, String)> {
    let (host, path) = split_url(url)?;
    let mut stream = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (code, body) =
        parse_response(&response).with_context(|| format!("no HTTP response from {url}"))?;
    Ok((code, body.to_owned()))
}

/// Apicurio Registry (in memory), killed on drop.
#[derive(Debug)]
struct Apicurio {
    proc: Proc,
    /// `http://127.0.0.1:PORT`.
    base: String,
    /// `3.3.3`, from its start-up line.
    version: String,
}

/// `... Listening on: http://127.0.0.1:PORT. Management ...` -> the URL.
fn listening_url(log: &str) -> Option<String> {
    let rest = log.split("Listening on: ").nth(1)?;
    let url = rest.split_whitespace().next()?.trim_end_matches(['.', ',']);
    url.starts_with("http").then(|| url.to_owned())
}

/// `apicurio-registry-app 3.3.3 on JVM (powered by Quarkus ...)` -> `3.3.3`.
fn app_version(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(" on JVM"))?;
    let before = &line[..line.find(" on JVM")?];
    let mut words = before.split_whitespace().rev();
    let version = words.next()?;
    let app = words.next()?;
    app.starts_with("apicurio").then(|| version.to_owned())
}

impl Apicurio {
    fn start(install: &Install, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join("apicurio.log");
        let child = Command::new(&install.apicurio_java)
            .args([
                "-Xmx512m",
                "-XX:+UseSerialGC",
                "-Dquarkus.http.host=127.0.0.1",
                "-Dquarkus.http.port=0",
                "-Dquarkus.management.host=127.0.0.1",
                "-Dquarkus.management.port=0",
                "-Dapicurio.storage.kind=sql",
                "-Dapicurio.storage.sql.kind=h2",
                "-Dapicurio.datasource.url=jdbc:h2:mem:bench",
                "-jar",
            ])
            .arg(&install.apicurio_jar)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::OpenOptions::new().append(true).open(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", install.apicurio_java.display()))?;
        let mut proc = Proc(child);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(base) = listening_url(&text) {
                return Ok(Self {
                    proc,
                    base,
                    version: app_version(&text).unwrap_or_else(|| "3.x".to_owned()),
                });
            }
            if let Some(status) = proc.0.try_wait()? {
                bail!("Apicurio exited ({status}) before listening:\n{text}");
            }
            if Instant::now() > deadline {
                bail!("Apicurio did not listen within 180 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The Confluent-compatible API (what ledgerflow's `--registry` takes).
    fn ccompat(&self) -> String {
        format!("{}/apis/ccompat/v7", self.base)
    }

    /// The API the 2.6 converter's client speaks.
    fn registry_v2(&self) -> String {
        format!("{}/apis/registry/v2", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_modes() {
        assert_eq!(PeerMode::parse(None), Ok(PeerMode::Auto));
        assert_eq!(PeerMode::parse(Some("")), Ok(PeerMode::Auto));
        assert_eq!(PeerMode::parse(Some("connect")), Ok(PeerMode::Connect));
        assert_eq!(PeerMode::parse(Some(" none ")), Ok(PeerMode::Off));
        assert!(PeerMode::parse(Some("debezium")).is_err());
    }

    #[test]
    fn versions_from_jar_names() {
        let v = |n: &str, p: &str| version_from_jar_name(n, p);
        assert_eq!(
            v("connect-runtime-4.4.0.jar", "connect-runtime").as_deref(),
            Some("4.4.0")
        );
        assert_eq!(
            v(
                "debezium-connector-jdbc-3.6.0.Final.jar",
                "debezium-connector-jdbc"
            )
            .as_deref(),
            Some("3.6.0.Final")
        );
        // Another artifact with the same prefix is not a version.
        assert_eq!(
            v("connect-runtime-tests-4.4.0.jar", "connect-runtime"),
            None
        );
        assert_eq!(v("connect-runtime-4.4.0.pom", "connect-runtime"), None);
    }

    #[test]
    fn jdbc_urls_from_postgres_urls() {
        assert_eq!(
            jdbc_url("postgres://postgres@127.0.0.1:5432/bench_x").unwrap(),
            (
                "jdbc:postgresql://127.0.0.1:5432/bench_x".to_owned(),
                "postgres".to_owned(),
                String::new()
            )
        );
        assert_eq!(
            jdbc_url("postgresql://u:p@db:5433/x?sslmode=require").unwrap(),
            (
                "jdbc:postgresql://db:5433/x?sslmode=require".to_owned(),
                "u".to_owned(),
                "p".to_owned()
            )
        );
        assert!(jdbc_url("mysql://x").is_err());
    }

    #[test]
    fn lag_is_zero_only_when_every_nonempty_partition_is_committed() {
        let hwm = BTreeMap::from([(0, 10), (1, 0), (2, 5)]);
        assert!(lag_is_zero(&BTreeMap::from([(0, 10), (2, 5)]), &hwm));
        assert!(!lag_is_zero(&BTreeMap::from([(0, 10), (2, 4)]), &hwm));
        assert!(!lag_is_zero(&BTreeMap::from([(0, 10)]), &hwm));
    }

    #[test]
    fn failed_tasks_are_found_in_the_status() {
        let running = serde_json::json!({
            "connector": {"state": "RUNNING"},
            "tasks": [{"id": 0, "state": "RUNNING"}, {"id": 1, "state": "RUNNING"}]
        });
        assert_eq!(failure(&running), None);
        let failed = serde_json::json!({
            "connector": {"state": "RUNNING"},
            "tasks": [{"id": 0, "state": "RUNNING"}, {"id": 1, "state": "FAILED",
                "trace": "org.apache.kafka.connect.errors.ConnectException: boom\n\tat x.y(Z.java:1)\nCaused by: it"}]
        });
        let trace = failure(&failed).unwrap();
        assert!(trace.starts_with("task 1: "), "{trace}");
        assert!(trace.contains("boom") && trace.contains("Caused by: it"));
        assert!(!trace.contains("Z.java"));
    }

    #[test]
    fn http_responses_and_urls() {
        assert_eq!(
            parse_response("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\r\n{}"),
            Some((201, "{}"))
        );
        assert_eq!(parse_response("garbage"), None);
        assert_eq!(
            split_url("http://127.0.0.1:8083/connectors/x/status").unwrap(),
            ("127.0.0.1:8083", "/connectors/x/status")
        );
        assert_eq!(split_url("http://h:1").unwrap(), ("h:1", "/"));
        assert!(split_url("https://h").is_err());
    }

    #[test]
    fn apicurio_start_up_lines() {
        let log = "2026-12-06 INFO [io.quarkus] (main) apicurio-registry-app 3.3.3 on JVM (powered by \
                   Quarkus 3.20.1) started in 10.930s. Listening on: http://127.0.0.1:28080. \
                   Management interface listening on http://127.0.0.1:43323.";
        assert_eq!(
            listening_url(log).as_deref(),
            Some("http://127.0.0.1:28080")
        );
        assert_eq!(app_version(log).as_deref(), Some("3.3.3"));
        assert_eq!(listening_url("starting"), None);
    }

    #[test]
    fn the_table_is_the_union_of_the_record_types() {
        let a = serde_json::json!({"type": "record", "name": "A", "fields": [
            {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
            {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "causation_id", "type": ["null", "string"], "default": null},
            {"name": "lines", "type": {"type": "array", "items": {"type": "record", "name": "L", "fields": []}}}
        ]});
        let b = serde_json::json!({"type": "record", "name": "B", "fields": [
            {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
            {"name": "rate_bps", "type": "int"},
            {"name": "causation_id", "type": "string"}
        ]});
        let columns = table_columns([&a, &b]).unwrap();
        assert_eq!(
            columns.ddl("t"),
            "CREATE TABLE t (event_id text PRIMARY KEY, occurred_at bigint, causation_id text, \
             rate_bps integer)"
        );
        assert_eq!(columns.excluded, vec!["lines".to_owned()]);
        let clash = serde_json::json!({"type": "record", "name": "C", "fields": [
            {"name": "event_id", "type": "string"}, {"name": "rate_bps", "type": "long"}
        ]});
        assert!(table_columns([&b, &clash]).is_err());
        let no_id = serde_json::json!({"type": "record", "name": "D", "fields": []});
        assert!(table_columns([&no_id]).is_err());
    }

    #[test]
    fn the_w1_contracts_make_one_table() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let mut schemas = Vec::new();
        for version in ["v1", "v2"] {
            for entry in std::fs::read_dir(dir.join(version)).unwrap().flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap();
                schemas.push(serde_json::from_str::<serde_json::Value>(&text).unwrap());
            }
        }
        let columns = table_columns(&schemas).unwrap();
        assert_eq!(
            columns.excluded,
            vec!["lines".to_owned(), "tax_lines".to_owned()]
        );
        assert!(
            columns
                .columns
                .contains(&("total_minor".to_owned(), "bigint"))
        );
        assert!(columns.columns.len() > 30);
    }

    #[test]
    fn a_w1_record_reencodes_under_the_one_schema() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/v1/payment_captured.avsc");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let schema = AvroSchema::parse(&json).unwrap();
        let columns = table_columns([&json]).unwrap();
        // A record of the writer schema with every field set from its type.
        let AvroSchema::Record(record) = &schema else {
            panic!("not a record")
        };
        let fields: Vec<(String, AvroValue)> = record
            .fields
            .iter()
            .map(|f| {
                let v = match &f.schema {
                    AvroSchema::Uuid(_) => AvroValue::Uuid(uuid::Uuid::nil()),
                    AvroSchema::TimestampMicros => AvroValue::TimestampMicros(7),
                    AvroSchema::Long => AvroValue::Long(42),
                    AvroSchema::Int => AvroValue::Int(3),
                    AvroSchema::Union(_) => AvroValue::Union(0, Box::new(AvroValue::Null)),
                    _ => AvroValue::String("x".to_owned()),
                };
                (f.name.clone(), v)
            })
            .collect();
        let body = GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(AvroValue::Record(fields))
            .unwrap();
        let decoded = GenericDatumReader::builder(&schema)
            .build()
            .unwrap()
            .read_value(&mut &body[..])
            .unwrap();
        let unified_json = columns.avro_schema();
        let unified = AvroSchema::parse(&unified_json).unwrap();
        let again = GenericDatumWriter::builder(&unified)
            .build()
            .unwrap()
            .write_value_to_vec(columns.unify(decoded).unwrap())
            .unwrap();
        let back = GenericDatumReader::builder(&unified)
            .build()
            .unwrap()
            .read_value(&mut &again[..])
            .unwrap();
        let AvroValue::Record(back) = back else {
            panic!("not a record")
        };
        let get = |n: &str| back.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(
            get("event_id"),
            Some(AvroValue::String(uuid::Uuid::nil().to_string()))
        );
        assert_eq!(
            get("occurred_at"),
            Some(AvroValue::Union(1, Box::new(AvroValue::Long(7))))
        );
        assert_eq!(
            get("causation_id"),
            Some(AvroValue::Union(0, Box::new(AvroValue::Null)))
        );
        assert_eq!(back.len(), columns.columns.len());
    }

    #[test]
    fn the_ratio_to_b6_and_the_target() {
        let mut report = PeerReport::empty("measured", 100, Vec::new());
        report.events_per_sec = Some(1000.0);
        report.one_schema = Some(PeerVariant {
            topic: "t.one-schema".to_owned(),
            events_per_sec: 4000.0,
            runs: vec![4000.0],
            cpu_per_1k: PeerCpu::default(),
            rows: 100,
            rows_match: true,
            transactions_per_event: 0.001,
            b6_erp_over_peer: None,
            raw: Vec::new(),
        });
        report.compare_with(Some(3500.0));
        assert_eq!(report.b6_erp_over_peer, Some(3.5));
        assert_eq!(report.target_met, Some(true));
        assert_eq!(
            report.one_schema.as_ref().unwrap().b6_erp_over_peer,
            Some(0.875)
        );
        let mut slow = PeerReport::empty("measured", 100, Vec::new());
        slow.events_per_sec = Some(2000.0);
        slow.compare_with(Some(3500.0));
        assert_eq!(slow.target_met, Some(false));
        let mut skipped = PeerReport::skipped("no jars", 100);
        skipped.compare_with(Some(3500.0));
        assert_eq!((skipped.b6_erp_over_peer, skipped.target_met), (None, None));
        let json = serde_json::to_value(&report).unwrap();
        for key in [
            "name",
            "events_per_sec",
            "cpu_per_1k",
            "rows",
            "notes",
            "one_schema",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert!(json["cpu_per_1k"].is_null());
    }

    #[test]
    fn ids_must_name_the_same_schemas() {
        let s = |name: &str| serde_json::json!({"type": "record", "name": name, "fields": []});
        let ours = BTreeMap::from([(1, s("A")), (2, s("B"))]);
        assert_eq!(id_mismatch(&ours, &ours.clone()), None);
        let swapped = BTreeMap::from([(1, s("B")), (2, s("A"))]);
        assert!(id_mismatch(&ours, &swapped).unwrap().contains("id 1"));
        let short = BTreeMap::from([(1, s("A"))]);
        assert!(id_mismatch(&ours, &short).unwrap().contains("unknown"));
    }

    #[test]
    fn the_connector_config_drops_the_nested_fields() {
        let settings = PeerSettings {
            runs: 1,
            tasks: 2,
            batch: 2000,
            one_schema: true,
        };
        let config = connector_config(
            "bench.w1",
            "jdbc:postgresql://127.0.0.1:5432/x",
            "postgres",
            "",
            &settings,
            &["lines".to_owned(), "tax_lines".to_owned()],
        );
        assert_eq!(config["insert.mode"], "upsert");
        assert_eq!(config["primary.key.fields"], "event_id");
        assert_eq!(config["tasks.max"], "2");
        assert_eq!(config["transforms.nested.exclude"], "lines,tax_lines");
        let plain = connector_config("t", "j", "u", "", &settings, &[]);
        assert!(plain.get("transforms").is_none());
    }
}
