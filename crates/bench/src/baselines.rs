//! The baselines the harness runs in its own process: B0 (transport ceiling), B2 (decode with
//! a null sink), B3 (database ceiling) and B4 (naive floor). B6, ledgerflow itself, is in
//! [`crate::pipeline_run`].

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use ledgerflow_codec::Decoder;
use ledgerflow_erp_receivables::ErpReceivables;
use ledgerflow_runtime::{RawRecord, prepare_record};
use ledgerflow_store::{BatchInput, ErasedConsumer, RecordOutcome, Store};
use ledgerflow_tenants::TenantRegistry;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use crate::probe::{self, CpuSample};
use crate::stack::{PgDatabase, Stack};

/// High watermark (next offset) of every partition of a topic.
pub(crate) fn high_watermarks(brokers: &str, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating a metadata client")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("fetching topic metadata")?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        bail!("topic {topic} has no partitions");
    }
    let mut out = BTreeMap::new();
    for p in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        out.insert(p, high);
    }
    Ok(out)
}

/// A consumer assigned to every partition of `topic` from the beginning, without a group.
fn reader(brokers: &str, topic: &str, hwm: &BTreeMap<i32, i64>) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("bench-reader-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .context("creating the reader")?;
    let mut tpl = TopicPartitionList::new();
    for p in hwm.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl).context("assigning partitions")?;
    Ok(consumer)
}

/// Tracks how far each partition has been read.
struct Progress {
    hwm: BTreeMap<i32, i64>,
    next: HashMap<i32, i64>,
    remaining: usize,
}

impl Progress {
    fn new(hwm: &BTreeMap<i32, i64>) -> Self {
        let remaining = hwm.values().filter(|h| **h > 0).count();
        Self {
            hwm: hwm.clone(),
            next: HashMap::new(),
            remaining,
        }
    }

    /// Records a read; true when every partition has reached its high watermark.
    fn read(&mut self, partition: i32, offset: i64) -> bool {
        let high = self.hwm.get(&partition).copied().unwrap_or(0);
        let next = self.next.entry(partition).or_insert(0);
        let before = *next >= high;
        *next = (*next).max(offset + 1);
        if !before && *next >= high {
            self.remaining -= 1;
        }
        self.remaining == 0
    }

    fn done(&self) -> bool {
        self.remaining == 0
    }
}

/// One measured pass over the topic.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Pass {
    pub(crate) events: u64,
    pub(crate) seconds: f64,
    pub(crate) cpu: probe::CpuSplit,
    /// Mean record value size in bytes.
    pub(crate) mean_value_bytes: f64,
    /// Outcomes by kind (B2 only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) outcomes: BTreeMap<String, u64>,
}

/// What a pass does with each record.
pub(crate) enum Sink<'a> {
    /// B0: nothing (the bytes are touched only to sum their length).
    Nothing,
    /// B2: copy, decode, tenant checks and map for erp-receivables, then drop.
    Prepare {
        decoder: &'a Decoder,
        tenants: &'a TenantRegistry,
    },
}

/// B0 and B2: read the whole topic once, from consumer creation to the high watermarks.
pub(crate) async fn read_pass(
    stack: &Stack,
    topic: &str,
    hwm: &BTreeMap<i32, i64>,
    sink: Sink<'_>,
    ticks: f64,
) -> anyhow::Result<Pass> {
    let me = std::process::id();
    let before = CpuSample::take(me, stack.broker_pid(), ticks);
    let started = Instant::now();
    let consumer = reader(&stack.brokers, topic, hwm)?;
    let mut progress = Progress::new(hwm);
    let (mut events, mut value_bytes) = (0u64, 0u64);
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let deadline = started + Duration::from_secs(3600);
    while !progress.done() {
        if Instant::now() > deadline {
            bail!("reading {topic} did not reach the high watermarks within an hour");
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = result.context("consuming")?;
        events += 1;
        value_bytes += msg.payload().map_or(0, |p| p.len() as u64);
        if let Sink::Prepare { decoder, tenants } = &sink {
            let raw = RawRecord::from_message(&msg);
            let outcome = prepare_record(decoder, tenants, &ErpReceivables, raw)
                .await
                .map_err(|f| anyhow::anyhow!("prepare: {f}"))?;
            let kind = match &outcome {
                RecordOutcome::Mapped { .. } => "mapped".to_owned(),
                RecordOutcome::Skipped(_) => "skipped".to_owned(),
                RecordOutcome::DeadLetter(d) => format!("dead_letter:{}", d.reason.as_str()),
            };
            *outcomes.entry(kind).or_default() += 1;
            drop(outcome);
        }
        progress.read(msg.partition(), msg.offset());
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuSample::take(me, stack.broker_pid(), ticks).since(before);
    Ok(Pass {
        events,
        seconds,
        cpu,
        mean_value_bytes: value_bytes as f64 / events.max(1) as f64,
        outcomes,
    })
}

/// `(partition, offset) -> record timestamp (ms)` of every record of a topic.
pub(crate) fn record_timestamps(
    brokers: &str,
    topic: &str,
    hwm: &BTreeMap<i32, i64>,
) -> anyhow::Result<HashMap<(i32, i64), i64>> {
    let consumer = reader(brokers, topic, hwm)?;
    let mut progress = Progress::new(hwm);
    let mut out = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(1800);
    while !progress.done() {
        if Instant::now() > deadline {
            bail!("reading the timestamps of {topic} took more than 30 minutes");
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = result.context("consuming")?;
        if let Some(ts) = msg.timestamp().to_millis() {
            out.insert((msg.partition(), msg.offset()), ts);
        }
        progress.read(msg.partition(), msg.offset());
    }
    Ok(out)
}

/// B4: the naive floor. A consumer group member that, for every record, prepares it, commits
/// it alone in its own database transaction (the same `commit_batch` ledgerflow uses, so the
/// same rows), then commits the offset to Kafka synchronously. Stops after `cap` records or
/// `max_time`, whichever comes first.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn naive_floor(
    stack: &Stack,
    topic: &str,
    db: &PgDatabase,
    decoder: &Decoder,
    tenants: &TenantRegistry,
    cap: u64,
    max_time: Duration,
    ticks: f64,
) -> anyhow::Result<NaiveResult> {
    let store = Store::open(&db.url).await.context("opening the B4 store")?;
    let consumer_logic = ErpReceivables;
    store
        .apply_schema(&consumer_logic.schema(store.backend()))
        .await
        .context("B4 schema")?;
    let mut pg = PgConnection::connect(&db.url).await?;
    let wal_before = probe::wal_lsn(&mut pg).await?;
    let me = std::process::id();
    let before = CpuSample::take(me, stack.broker_pid(), ticks);
    let started = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set(
            "group.id",
            format!("bench-naive-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the naive consumer")?;
    consumer.subscribe(&[topic]).context("subscribing")?;
    let mut events = 0u64;
    let mut applied = 0u64;
    while events < cap && started.elapsed() < max_time {
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = result.context("consuming")?;
        let raw = RawRecord::from_message(&msg);
        let outcome = prepare_record(decoder, tenants, &consumer_logic, raw)
            .await
            .map_err(|f| anyhow::anyhow!("prepare: {f}"))?;
        let batch = BatchInput {
            topic: topic.to_owned(),
            partition: msg.partition(),
            records: vec![outcome],
            next_offset: msg.offset() + 1,
        };
        let done = store
            .commit_batch(&consumer_logic, batch)
            .await
            .context("committing one record")?;
        applied += done.applied;
        consumer
            .commit_message(&msg, CommitMode::Sync)
            .context("synchronous offset commit")?;
        events += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuSample::take(me, stack.broker_pid(), ticks).since(before);
    let wal_after = probe::wal_lsn(&mut pg).await?;
    let wal = probe::wal_bytes(&mut pg, &wal_before, &wal_after).await?;
    pg.close().await.ok();
    store.pool().close().await;
    Ok(NaiveResult {
        events,
        applied,
        seconds,
        cpu,
        wal_bytes: wal,
        stopped_by_time: events < cap,
    })
}

/// B4's measurement.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NaiveResult {
    pub(crate) events: u64,
    pub(crate) applied: u64,
    pub(crate) seconds: f64,
    pub(crate) cpu: probe::CpuSplit,
    pub(crate) wal_bytes: i64,
    pub(crate) stopped_by_time: bool,
}

/// B3's measurement.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CeilingResult {
    pub(crate) events: u64,
    pub(crate) rows: u64,
    pub(crate) tables: BTreeMap<String, u64>,
    pub(crate) transactions: u64,
    pub(crate) seconds: f64,
    pub(crate) cpu: probe::CpuSplit,
    pub(crate) wal_bytes: i64,
}

/// Rows per `COPY` (and so per transaction) in B3.
pub(crate) const CEILING_CHUNK_ROWS: usize = 10_000;

/// B3: the database ceiling. Every row a ledgerflow run wrote (inbox, effects, audit chain,
/// positions: the exact rows, read back from that run's database beforehand, untimed) is
/// loaded into a fresh database with the same DDL (so the same indexes, constraints and
/// triggers) and the server's durability settings, set-based: `COPY ... FROM STDIN` in
/// transactions of [`CEILING_CHUNK_ROWS`] rows. No Kafka, no decoding, no mapping, no hashing.
pub(crate) async fn database_ceiling(
    stack: &Stack,
    source_url: &str,
    target: &PgDatabase,
    events: u64,
    ticks: f64,
) -> anyhow::Result<CeilingResult> {
    // The same DDL ledgerflow applies: the store's tables plus erp-receivables'.
    let store = Store::open(&target.url)
        .await
        .context("opening the B3 store")?;
    store
        .apply_schema(&ErpReceivables.schema(store.backend()))
        .await
        .context("B3 schema")?;
    store.pool().close().await;

    // Untimed: read every non-empty table of the source as COPY text.
    let mut source = PgConnection::connect(source_url).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    .fetch_all(&mut source)
    .await?;
    let mut data: Vec<(String, Vec<u8>)> = Vec::new();
    for table in tables {
        let mut bytes = Vec::new();
        {
            let mut stream = source
                .copy_out_raw(&format!("COPY \"{table}\" TO STDOUT"))
                .await
                .with_context(|| format!("COPY {table} TO STDOUT"))?;
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk?);
            }
        }
        if !bytes.is_empty() {
            data.push((table, bytes));
        }
    }
    source.close().await.ok();

    let mut target_conn = PgConnection::connect(&target.url).await?;
    let wal_before = probe::wal_lsn(&mut target_conn).await?;
    let me = std::process::id();
    let before = CpuSample::take(me, stack.broker_pid(), ticks);
    let started = Instant::now();
    let (mut rows, mut transactions) = (0u64, 0u64);
    let mut tables = BTreeMap::new();
    for (table, bytes) in &data {
        let mut table_rows = 0u64;
        // COPY text: one row per line; newlines inside values are escaped as `\n`.
        let mut rest: &[u8] = bytes;
        while !rest.is_empty() {
            let mut end = 0;
            let mut n = 0;
            while n < CEILING_CHUNK_ROWS && end < rest.len() {
                end += rest[end..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(rest.len() - end, |i| i + 1);
                n += 1;
            }
            let mut copy = target_conn
                .copy_in_raw(&format!("COPY \"{table}\" FROM STDIN"))
                .await
                .with_context(|| format!("COPY {table} FROM STDIN"))?;
            copy.send(&rest[..end]).await?;
            table_rows += copy
                .finish()
                .await
                .with_context(|| format!("loading {table}"))?;
            transactions += 1;
            rest = &rest[end..];
        }
        rows += table_rows;
        tables.insert(table.clone(), table_rows);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuSample::take(me, stack.broker_pid(), ticks).since(before);
    let wal_after = probe::wal_lsn(&mut target_conn).await?;
    let wal = probe::wal_bytes(&mut target_conn, &wal_before, &wal_after).await?;
    target_conn.close().await.ok();
    Ok(CeilingResult {
        events,
        rows,
        tables,
        transactions,
        seconds,
        cpu,
        wal_bytes: wal,
    })
}

/// The transport's own latency under the open-loop run: a raw consumer (no decoding, no
/// database; the same `fetch.wait.max.ms` as `ledgerflow run`) reads the topic from the start
/// while it is produced, and takes receive time minus record timestamp for `expect` records (or
/// until `within` passes). Runs on its own thread; join it after producing. Returns
/// `(record timestamp ms, latency ms)` per record.
pub(crate) fn transport_latency(
    brokers: String,
    topic: String,
    partitions: i32,
    expect: u64,
    within: Duration,
) -> std::thread::JoinHandle<anyhow::Result<Vec<(i64, f64)>>> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set(
                "group.id",
                format!("bench-transport-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "50")
            .create()
            .context("creating the transport reader")?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl).context("assigning partitions")?;
        let deadline = Instant::now() + within;
        let mut out = Vec::with_capacity(expect as usize);
        while (out.len() as u64) < expect && Instant::now() < deadline {
            let Some(result) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let msg = result.context("consuming")?;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            if let Some(ts) = msg.timestamp().to_millis() {
                out.push((ts, (now_ms - ts as f64).max(0.0)));
            }
        }
        Ok(out)
    })
}
