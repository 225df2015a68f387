//! What `ledgerflow run --metrics-listen` watches besides the consumers' own counters: a sampler
//! that turns state held elsewhere (positions of record, broker high watermarks, dead letters,
//! outboxes) into gauges, and the readiness checks of `/readyz`. Both share one metadata-only
//! broker client, which never joins a group.
//!
//! Lag is measured from the positions of record in the database, not from the group's Kafka
//! commits: the database is what says what has been applied, and the Kafka commit only mirrors
//! it (asynchronously). Every instance of a consumer reads the same positions, so every replica
//! reports the lag of every partition: aggregate with `max`, never `sum`, across instances.
//!
//! Per tick (every `LEDGERFLOW_LAG_INTERVAL_MS`, default 10 s):
//! - positions of the running consumers, plus the partitions of every named (non-regex) topic
//!   that has no position yet (those start at the low watermark: `auto.offset.reset=earliest`);
//! - high watermarks -> `ledgerflow_consumer_lag_messages`;
//! - for each lagging partition, the record AT the position, read by an assign-mode consumer
//!   that commits nothing -> `ledgerflow_consumer_lag_seconds` = now - its timestamp (0 when
//!   caught up);
//! - open dead letters by consumer and reason; outbox rows by status (ERP postings and webhook
//!   deliveries also by bounded tenant label), skipping an outbox table that does not exist yet.
//!
//! The broker calls block, so they run on the blocking pool; a tick never overlaps the next.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ledgerflow_store::{Backend, PositionRow, Store};
use ledgerflow_telemetry::{self as tm, Readiness, TenantLabels};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::Row;
use tokio::sync::watch;

use crate::run::Pipeline;

/// Sampling period in milliseconds.
pub(crate) const LAG_INTERVAL_ENV: &str = "LEDGERFLOW_LAG_INTERVAL_MS";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Budget of one broker request (metadata, watermarks).
const BROKER_TIMEOUT: Duration = Duration::from_millis(2500);
/// Budget for reading the records at the lagging positions, per tick.
const READ_BUDGET: Duration = Duration::from_secs(3);

/// An outbox table (with `tenant_id` and a `status` of `pending`, `failed` or delivered) of
/// the consumer that writes it.
struct Outbox {
    consumer: &'static str,
    table: &'static str,
    /// The gauge of its rows by (bounded) tenant and status.
    by_tenant: &'static str,
}

/// Outboxes sampled for `ledgerflow_outbox_backlog` and their per-tenant business gauges.
const OUTBOXES: &[Outbox] = &[
    Outbox {
        consumer: ledgerflow_erp_receivables::CONSUMER_NAME,
        table: "erp_outbox",
        by_tenant: tm::ERP_POSTINGS,
    },
    Outbox {
        consumer: ledgerflow_notifications::CONSUMER_NAME,
        table: "notification_outbox",
        by_tenant: tm::WEBHOOK_DELIVERIES,
    },
];

/// The sampling period from the environment value, if any.
fn interval_from(value: Option<&str>) -> anyhow::Result<Duration> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_INTERVAL),
        Some(v) => {
            let ms: u64 =
                v.parse().ok().filter(|ms| *ms > 0).with_context(|| {
                    format!("{LAG_INTERVAL_ENV}={v:?} is not a positive integer")
                })?;
            Ok(Duration::from_millis(ms))
        }
    }
}

/// Registers the `/readyz` checks (database, broker, registry) and starts the sampler; it
/// stops when `stop` turns true.
pub(crate) fn start(
    ready: &Readiness,
    pipeline: &Pipeline,
    consumers: &[String],
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let interval = interval_from(std::env::var(LAG_INTERVAL_ENV).ok().as_deref())?;
    let tenants = TenantLabels::from_env().map_err(anyhow::Error::msg)?;
    let settings = &pipeline.settings;
    let named: Vec<String> = settings
        .topics
        .iter()
        .filter(|t| !t.starts_with('^'))
        .cloned()
        .collect();
    let broker = Arc::new(Broker::connect(
        &settings.brokers,
        &settings.kafka_properties,
    )?);
    add_checks(
        ready,
        pipeline.store.clone(),
        Arc::clone(&broker),
        named.first().cloned(),
        &settings.registry,
    )?;
    let sampler = Sampler {
        store: pipeline.store.clone(),
        broker,
        consumers: consumers.to_vec(),
        named,
        tenants,
        dead_letter_series: BTreeSet::new(),
        tenant_series: BTreeSet::new(),
        failing: BTreeSet::new(),
    };
    tokio::spawn(sampler.run(interval, stop));
    Ok(())
}

fn add_checks(
    ready: &Readiness,
    store: Store,
    broker: Arc<Broker>,
    probe_topic: Option<String>,
    registry: &str,
) -> anyhow::Result<()> {
    ready.add_check("database", move || {
        let store = store.clone();
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(store.pool())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    });
    ready.add_check("broker", move || {
        let broker = Arc::clone(&broker);
        let topic = probe_topic.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || broker.answers_metadata(topic.as_deref()))
                .await
                .map_err(|e| e.to_string())?
        })
    });
    let url = format!("{}/subjects", registry.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .timeout(BROKER_TIMEOUT)
        .build()
        .context("building the registry probe client")?;
    ready.add_check("registry", move || {
        let request = http.get(&url);
        Box::pin(async move {
            let response = request.send().await.map_err(|e| e.to_string())?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("GET /subjects answered {}", response.status()))
            }
        })
    });
    Ok(())
}

/// The sampler's two broker clients: one for metadata and watermarks, one that reads single
/// records in assign mode. Neither subscribes, joins a group or commits.
struct Broker {
    meta: BaseConsumer,
    reader: BaseConsumer,
}

impl Broker {
    fn connect(brokers: &str, properties: &[(String, String)]) -> anyhow::Result<Self> {
        let config = |role: &str| {
            let mut cfg = ClientConfig::new();
            cfg.set("bootstrap.servers", brokers)
                .set("client.id", format!("ledgerflow-{role}"))
                // librdkafka wants a group id on a consumer; assign mode never joins it.
                .set("group.id", format!("ledgerflow-{role}"))
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest");
            cfg
        };
        let mut meta = config("lag-metadata");
        let mut reader = config("lag-reader");
        // One record per partition is all the reader wants: keep prefetching to a minimum.
        reader
            .set("queued.min.messages", "1")
            .set("queued.max.messages.kbytes", "1024")
            .set("max.partition.fetch.bytes", "65536")
            .set("fetch.wait.max.ms", "100");
        for (k, v) in properties {
            meta.set(k, v);
            reader.set(k, v);
        }
        Ok(Self {
            meta: meta.create().context("creating the lag metadata client")?,
            reader: reader.create().context("creating the lag reader")?,
        })
    }

    fn answers_metadata(&self, topic: Option<&str>) -> Result<(), String> {
        let metadata = self
            .meta
            .fetch_metadata(topic, BROKER_TIMEOUT)
            .map_err(|e| e.to_string())?;
        if metadata.brokers().is_empty() {
            return Err("metadata lists no brokers".to_owned());
        }
        Ok(())
    }

    /// Lag of every (consumer, topic, partition) to report. Blocking.
    fn lags(
        &self,
        consumers: &[String],
        named: &[String],
        positions: Vec<PositionRow>,
    ) -> Result<Vec<PartitionLag>, String> {
        // (consumer, topic, partition) -> stored position (None: nothing committed yet).
        let mut wanted: BTreeMap<(String, String, i32), Option<i64>> = positions
            .into_iter()
            .filter(|p| consumers.contains(&p.consumer))
            .map(|p| ((p.consumer, p.topic, p.partition), Some(p.next_offset)))
            .collect();
        for topic in named {
            // A topic that does not exist (yet) has no lag to report.
            let Ok(ids) = crate::kafka::partitions(&self.meta, topic, BROKER_TIMEOUT) else {
                continue;
            };
            for consumer in consumers {
                for id in &ids {
                    wanted
                        .entry((consumer.clone(), topic.clone(), *id))
                        .or_insert(None);
                }
            }
        }
        let mut marks: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
        let mut lags = Vec::with_capacity(wanted.len());
        for ((consumer, topic, partition), stored) in wanted {
            let key = (topic.clone(), partition);
            let (low, high) = match marks.get(&key) {
                Some(m) => *m,
                None => {
                    let m = self
                        .meta
                        .fetch_watermarks(&topic, partition, BROKER_TIMEOUT)
                        .map_err(|e| format!("watermarks of {topic}/{partition}: {e}"))?;
                    marks.insert(key, m);
                    m
                }
            };
            let position = stored.unwrap_or(low);
            lags.push(PartitionLag {
                consumer,
                topic,
                partition,
                position,
                messages: (high - position).max(0),
                seconds: None,
            });
        }
        self.read_ages(&mut lags);
        Ok(lags)
    }

    /// Fills `seconds`: 0 when caught up, else the age of the record at the position. A
    /// partition appears once per assignment, so consumers at different positions of the same
    /// partition are read in successive rounds.
    fn read_ages(&self, lags: &mut [PartitionLag]) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut pending: BTreeSet<(String, i32, i64)> = BTreeSet::new();
        for lag in lags.iter_mut() {
            if lag.messages == 0 {
                lag.seconds = Some(0.0);
            } else {
                pending.insert((lag.topic.clone(), lag.partition, lag.position));
            }
        }
        let mut found: BTreeMap<(String, i32, i64), i64> = BTreeMap::new();
        let deadline = Instant::now() + READ_BUDGET;
        while !pending.is_empty() && Instant::now() < deadline {
            let mut round: BTreeMap<(String, i32), i64> = BTreeMap::new();
            for (topic, partition, position) in &pending {
                round
                    .entry((topic.clone(), *partition))
                    .or_insert(*position);
            }
            for ((topic, partition), position) in &round {
                pending.remove(&(topic.clone(), *partition, *position));
            }
            found.extend(self.read_first(&round, deadline));
        }
        for lag in lags.iter_mut().filter(|l| l.seconds.is_none()) {
            if let Some(ts) = found.get(&(lag.topic.clone(), lag.partition, lag.position)) {
                lag.seconds = Some((now_ms - ts).max(0) as f64 / 1000.0);
            }
        }
    }

    /// Timestamps (ms) of the first record at or after each position.
    fn read_first(
        &self,
        round: &BTreeMap<(String, i32), i64>,
        deadline: Instant,
    ) -> BTreeMap<(String, i32, i64), i64> {
        let mut out = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), position) in round {
            if tpl
                .add_partition_offset(topic, *partition, Offset::Offset(*position))
                .is_err()
            {
                return out;
            }
        }
        if let Err(e) = self.reader.assign(&tpl) {
            tracing::debug!(error = %e, "lag reader could not assign");
            return out;
        }
        while out.len() < round.len() && Instant::now() < deadline {
            let Some(Ok(msg)) = self.reader.poll(Duration::from_millis(100)) else {
                continue;
            };
            let key = (msg.topic().to_owned(), msg.partition());
            let Some(position) = round.get(&key) else {
                continue;
            };
            // Below the position: left over from an earlier assignment. At or past it: the
            // oldest record still to commit (past it when retention or compaction removed it).
            if msg.offset() < *position {
                continue;
            }
            if let Some(ts) = msg.timestamp().to_millis() {
                out.entry((key.0, key.1, *position)).or_insert(ts);
            }
        }
        let _ = self.reader.unassign();
        out
    }
}

#[derive(Debug)]
struct PartitionLag {
    consumer: String,
    topic: String,
    partition: i32,
    position: i64,
    messages: i64,
    seconds: Option<f64>,
}

struct Sampler {
    store: Store,
    broker: Arc<Broker>,
    consumers: Vec<String>,
    named: Vec<String>,
    tenants: TenantLabels,
    /// Label sets set before, so a series that disappears from the query is set to 0 instead
    /// of freezing at its last value.
    dead_letter_series: BTreeSet<(String, String)>,
    /// (gauge, tenant label, status).
    tenant_series: BTreeSet<(&'static str, String, String)>,
    /// Sources failing right now (logged once per outage, counted every time).
    failing: BTreeSet<&'static str>,
}

impl Sampler {
    async fn run(mut self, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|v| *v) => return,
                _ = ticker.tick() => {}
            }
            self.tick().await;
        }
    }

    async fn tick(&mut self) {
        let positions = self.store.positions(None).await;
        let database_ok = match positions {
            Ok(positions) => {
                let broker = Arc::clone(&self.broker);
                let consumers = self.consumers.clone();
                let named = self.named.clone();
                let lags =
                    tokio::task::spawn_blocking(move || broker.lags(&consumers, &named, positions))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                self.outcome("broker", lags.as_ref().err());
                if let Ok(lags) = lags {
                    publish_lags(&lags);
                }
                true
            }
            Err(e) => {
                self.outcome("database", Some(&e.to_string()));
                false
            }
        };
        if database_ok {
            let result = self.sample_store().await;
            self.outcome("database", result.as_ref().err());
        }
    }

    async fn sample_store(&mut self) -> Result<(), String> {
        self.sample_dead_letters().await?;
        if self
            .consumers
            .iter()
            .any(|c| c == ledgerflow_erp_receivables::CONSUMER_NAME)
        {
            self.sample_held_payments().await?;
        }
        let mut by_tenant = BTreeMap::new();
        for outbox in OUTBOXES {
            if self.consumers.iter().any(|c| c == outbox.consumer) {
                self.sample_outbox(outbox, &mut by_tenant).await?;
            }
        }
        for key in &self.tenant_series {
            by_tenant.entry(key.clone()).or_insert(0);
        }
        for ((metric, tenant, status), n) in &by_tenant {
            metrics::gauge!(*metric, "tenant" => tenant.clone(), "status" => status.clone())
                .set(*n as f64);
        }
        self.tenant_series = by_tenant.into_keys().collect();
        Ok(())
    }

    /// Payment application lag: payments whose invoice has not been posted yet.
    async fn sample_held_payments(&self) -> Result<(), String> {
        if !table_exists(&self.store, "erp_payments").await? {
            return Ok(());
        }
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT), MIN(p.captured_at) FROM erp_payments p \
             WHERE NOT EXISTS (SELECT 1 FROM erp_ar_documents d WHERE d.tenant_id = p.tenant_id \
             AND d.doc_type = 'invoice' AND d.doc_id = p.invoice_id)",
        )
        .fetch_one(self.store.pool())
        .await
        .map_err(|e| format!("counting held payments: {e}"))?;
        let held: i64 = row.try_get(0).map_err(|e| e.to_string())?;
        let oldest: Option<i64> = row.try_get(1).map_err(|e| e.to_string())?;
        let now_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let age = oldest.map_or(0.0, |t| (now_micros - t).max(0) as f64 / 1e6);
        let consumer = ledgerflow_erp_receivables::CONSUMER_NAME;
        metrics::gauge!(tm::HELD_PAYMENTS, "consumer" => consumer).set(held as f64);
        metrics::gauge!(tm::HELD_PAYMENT_AGE_SECONDS, "consumer" => consumer).set(age);
        Ok(())
    }

    async fn sample_dead_letters(&mut self) -> Result<(), String> {
        let rows = sqlx::query(
            "SELECT consumer, reason, CAST(COUNT(*) AS BIGINT) AS n FROM dead_letters \
             WHERE status = 'open' GROUP BY consumer, reason",
        )
        .fetch_all(self.store.pool())
        .await
        .map_err(|e| format!("counting dead letters: {e}"))?;
        let mut now = BTreeMap::new();
        for row in &rows {
            let consumer: String = row.try_get("consumer").map_err(|e| e.to_string())?;
            if self.consumers.contains(&consumer) {
                let reason: String = row.try_get("reason").map_err(|e| e.to_string())?;
                let n: i64 = row.try_get("n").map_err(|e| e.to_string())?;
                now.insert((consumer, reason), n);
            }
        }
        for key in &self.dead_letter_series {
            now.entry(key.clone()).or_insert(0);
        }
        for ((consumer, reason), n) in &now {
            metrics::gauge!(tm::DEAD_LETTER_DEPTH, "consumer" => consumer.clone(), "reason" => reason.clone())
                .set(*n as f64);
        }
        self.dead_letter_series = now.into_keys().collect();
        Ok(())
    }

    /// Sets the backlog gauges of one outbox and adds its rows by tenant to `by_tenant`.
    async fn sample_outbox(
        &self,
        outbox: &Outbox,
        by_tenant: &mut BTreeMap<(&'static str, String, String), i64>,
    ) -> Result<(), String> {
        let table = outbox.table;
        if !table_exists(&self.store, table).await? {
            return Ok(());
        }
        let rows = sqlx::query(&format!(
            "SELECT tenant_id, status, CAST(COUNT(*) AS BIGINT) AS n FROM {table} \
             GROUP BY tenant_id, status ORDER BY tenant_id, status"
        ))
        .fetch_all(self.store.pool())
        .await
        .map_err(|e| format!("counting {table}: {e}"))?;
        let mut backlog: BTreeMap<&str, i64> = [("pending", 0), ("failed", 0)].into();
        for row in &rows {
            let tenant: String = row.try_get("tenant_id").map_err(|e| e.to_string())?;
            let status: String = row.try_get("status").map_err(|e| e.to_string())?;
            let n: i64 = row.try_get("n").map_err(|e| e.to_string())?;
            if let Some(total) = backlog.get_mut(status.as_str()) {
                *total += n;
            }
            *by_tenant
                .entry((outbox.by_tenant, self.tenants.label(&tenant), status))
                .or_insert(0) += n;
        }
        for (status, n) in backlog {
            metrics::gauge!(tm::OUTBOX_BACKLOG, "consumer" => outbox.consumer, "status" => status)
                .set(n as f64);
        }
        Ok(())
    }

    fn outcome(&mut self, source: &'static str, error: Option<&String>) {
        match error {
            Some(e) => {
                metrics::counter!(tm::SAMPLER_ERRORS_TOTAL, "source" => source).increment(1);
                if self.failing.insert(source) {
                    tracing::warn!(source, error = %e, "metrics sampler cannot read");
                } else {
                    tracing::debug!(source, error = %e, "metrics sampler still cannot read");
                }
            }
            None => {
                if self.failing.remove(source) {
                    tracing::info!(source, "metrics sampler reads again");
                }
            }
        }
    }
}

fn publish_lags(lags: &[PartitionLag]) {
    for lag in lags {
        let labels = [
            ("consumer", lag.consumer.clone()),
            ("topic", lag.topic.clone()),
            ("partition", lag.partition.to_string()),
        ];
        metrics::gauge!(tm::CONSUMER_LAG_MESSAGES, &labels).set(lag.messages as f64);
        // Unknown age (the record could not be read within the budget): keep the last value.
        if let Some(seconds) = lag.seconds {
            metrics::gauge!(tm::CONSUMER_LAG_SECONDS, &labels).set(seconds);
        }
    }
}

async fn table_exists(store: &Store, table: &str) -> Result<bool, String> {
    let sql = match store.backend() {
        Backend::Sqlite => {
            "SELECT CAST(COUNT(*) AS BIGINT) FROM sqlite_master WHERE type = 'table' AND name = $1"
        }
        Backend::Postgres => {
            "SELECT CAST(COUNT(*) AS BIGINT) FROM information_schema.tables \
             WHERE table_name = $1 AND table_schema = ANY(current_schemas(false))"
        }
    };
    let n: i64 = sqlx::query_scalar(sql)
        .bind(table)
        .fetch_one(store.pool())
        .await
        .map_err(|e| format!("looking up table {table}: {e}"))?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_defaults_and_validates() {
        assert_eq!(interval_from(None).unwrap(), DEFAULT_INTERVAL);
        assert_eq!(interval_from(Some(" ")).unwrap(), DEFAULT_INTERVAL);
        assert_eq!(
            interval_from(Some("500")).unwrap(),
            Duration::from_millis(500)
        );
        assert!(interval_from(Some("0")).is_err());
        assert!(interval_from(Some("10s")).is_err());
    }

    #[tokio::test]
    async fn outbox_tables_are_skipped_until_they_exist() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        assert!(table_exists(&store, "dead_letters").await.unwrap());
        for outbox in OUTBOXES {
            assert!(!table_exists(&store, outbox.table).await.unwrap());
        }
    }
}
