//! What [`crate::serve`] with a metrics address watches besides the consumers' own counters: a sampler
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
//!   deliveries also by bounded tenant label), skipping an outbox table that does not exist yet;
//!   the age of the oldest ERP posting still pending, accepted or failed; per-tenant delivery
//!   lag for the most lagging tenants ([`crate::tenant_lag`]);
//!   which of these a consumer has is its [`ConsumerKind::spec`]'s `gauges`.
//!
//! The broker calls block, so they run on the blocking pool; a tick never overlaps the next.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerflow_core::now_micros;
use ledgerflow_store::{PositionRow, Store, TenantStatusCount};
use ledgerflow_telemetry::{self as tm, Readiness, TenantLabels};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::companion::{CompanionStop, Dispatcher};
use crate::config::{Environment, Settings, vars};
use crate::consumer::{ConsumerKind, Gauge};
use crate::{KafkaClient, ServiceError};

const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Budget of one broker request (metadata, watermarks).
const BROKER_TIMEOUT: Duration = Duration::from_millis(2500);
/// Budget for reading the records at the lagging positions, per tick.
const READ_BUDGET: Duration = Duration::from_secs(3);

/// The sampling period from the environment value, if any.
fn interval_from(value: Option<&str>) -> Result<Duration, ServiceError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_INTERVAL),
        Some(v) => {
            let ms: u64 = v.parse().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                ServiceError::Config(format!(
                    "{}={v:?} is not a positive integer",
                    vars::LAG_INTERVAL_MS
                ))
            })?;
            Ok(Duration::from_millis(ms))
        }
    }
}

/// Registers the `/readyz` checks (database, broker, registry) and starts the sampler; it
/// stops when `stop` turns true.
pub(crate) fn start(
    ready: &Readiness,
    settings: &Settings,
    store: &Store,
    consumers: &[ConsumerKind],
    env: &Environment,
    stop: watch::Receiver<CompanionStop>,
) -> Result<(), ServiceError> {
    let interval = interval_from(env.get(vars::LAG_INTERVAL_MS))?;
    let tenants =
        TenantLabels::from_setting(env.get(vars::METRICS_TENANTS)).map_err(ServiceError::Config)?;
    let lag_tenants = match env.get(vars::METRICS_LAG_TENANTS) {
        None => crate::tenant_lag::DEFAULT_LAG_TENANTS,
        Some(raw) => raw.trim().parse().map_err(|_| {
            ServiceError::Config(format!(
                "{}={raw:?} is not a number of tenants",
                vars::METRICS_LAG_TENANTS
            ))
        })?,
    };
    let named: Vec<String> = settings
        .topics
        .iter()
        .filter(|t| !t.starts_with('^'))
        .cloned()
        .collect();
    let broker = Arc::new(Broker::connect(&settings.kafka())?);
    add_checks(
        ready,
        store.clone(),
        Arc::clone(&broker),
        named.first().cloned(),
        &settings.registry,
    )?;
    let sampler = Sampler {
        store: store.clone(),
        broker,
        consumers: consumers.to_vec(),
        named,
        tenants,
        lag_tenants,
        dead_letter_series: BTreeSet::new(),
        tenant_series: BTreeSet::new(),
        lag_series: BTreeSet::new(),
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
) -> Result<(), ServiceError> {
    ready.add_check("database", move || {
        let store = store.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
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
        .map_err(ServiceError::component(
            "building the registry probe client",
        ))?;
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
    fn connect(kafka: &KafkaClient) -> Result<Self, ServiceError> {
        Ok(Self {
            meta: kafka.assign_only("ledgerflow-lag-metadata", "ledgerflow-lag-metadata", &[])?,
            // One record per partition is all the reader wants: keep prefetching to a minimum.
            reader: kafka.assign_only(
                "ledgerflow-lag-reader",
                "ledgerflow-lag-reader",
                &[
                    ("queued.min.messages", "1"),
                    ("queued.max.messages.kbytes", "1024"),
                    ("max.partition.fetch.bytes", "65536"),
                    ("fetch.wait.max.ms", "100"),
                ],
            )?,
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
        let now_ms = now_micros() / 1000;
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
        // The next round assigns anew; a failed unassign only leaves fetches that are dropped.
        if let Err(e) = self.reader.unassign() {
            tracing::debug!(error = %e, "lag reader could not unassign");
        }
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
    consumers: Vec<ConsumerKind>,
    named: Vec<String>,
    tenants: TenantLabels,
    /// Label sets set before, so a series that disappears from the query is set to 0 instead
    /// of freezing at its last value.
    dead_letter_series: BTreeSet<(String, String)>,
    /// (gauge, tenant label, status).
    tenant_series: BTreeSet<(&'static str, String, String)>,
    /// How many tenants get their own delivery lag series ([`crate::tenant_lag`]).
    lag_tenants: usize,
    /// (consumer, tenant) delivery lag series set before, zeroed when a tenant leaves the top.
    lag_series: BTreeSet<(&'static str, String)>,
    /// Sources failing right now (logged once per outage, counted every time).
    failing: BTreeSet<&'static str>,
}

impl Sampler {
    async fn run(mut self, interval: Duration, mut stop: watch::Receiver<CompanionStop>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s != CompanionStop::Running) => return,
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
                let consumers: Vec<String> =
                    self.consumers.iter().map(|c| c.name().to_owned()).collect();
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
        let mut by_tenant = BTreeMap::new();
        let gauges: Vec<Gauge> = self
            .consumers
            .iter()
            .flat_map(|c| c.spec().gauges.iter().copied())
            .collect();
        for gauge in gauges {
            match gauge {
                Gauge::HeldPayments => self.sample_held_payments().await?,
                Gauge::Outbox(dispatcher) => {
                    self.sample_outbox(dispatcher, &mut by_tenant).await?;
                    if dispatcher == Dispatcher::Erp {
                        self.sample_erp_posting_ages().await?;
                    }
                }
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
        let held = ledgerflow_erp_receivables::gauges::held_payments(&self.store)
            .await
            .map_err(|e| format!("counting held payments: {e}"))?;
        let Some(held) = held else {
            return Ok(());
        };
        let age = held
            .oldest_captured_at
            .map_or(0.0, |t| (now_micros() - t).max(0) as f64 / 1e6);
        let consumer = ledgerflow_erp_receivables::CONSUMER_NAME;
        metrics::gauge!(tm::HELD_PAYMENTS, "consumer" => consumer).set(held.count as f64);
        metrics::gauge!(tm::HELD_PAYMENT_AGE_SECONDS, "consumer" => consumer).set(age);
        Ok(())
    }

    /// How long the oldest pending, accepted and failed ERP postings have waited since they
    /// were written (0 for a state no posting is in, so a cleared alert resolves).
    async fn sample_erp_posting_ages(&self) -> Result<(), String> {
        let oldest = ledgerflow_erp_receivables::gauges::oldest_postings(&self.store)
            .await
            .map_err(|e| format!("reading the oldest erp postings: {e}"))?;
        let now = now_micros();
        for posting in oldest.into_iter().flatten() {
            metrics::gauge!(tm::ERP_OLDEST_POSTING_AGE_SECONDS, "status" => posting.status.as_str())
                .set(posting.age_seconds(now));
        }
        Ok(())
    }

    async fn sample_dead_letters(&mut self) -> Result<(), String> {
        let counts = self
            .store
            .open_dead_letter_counts()
            .await
            .map_err(|e| format!("counting dead letters: {e}"))?;
        let mut now = BTreeMap::new();
        for c in counts {
            if self.consumers.iter().any(|k| k.name() == c.consumer) {
                now.insert((c.consumer, c.reason.as_str().to_owned()), c.count);
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
        &mut self,
        dispatcher: Dispatcher,
        by_tenant: &mut BTreeMap<(&'static str, String, String), i64>,
    ) -> Result<(), String> {
        let Some(rows) = dispatcher
            .outbox(&self.store)
            .await
            .map_err(|e| ledgerflow_core::error_chain(&e))?
        else {
            return Ok(());
        };
        self.sample_tenant_lag(dispatcher, &rows);
        let mut backlog: BTreeMap<&str, i64> = [("pending", 0), ("failed", 0)].into();
        for row in rows {
            if let Some(total) = backlog.get_mut(row.status.as_str()) {
                *total += row.count;
            }
            *by_tenant
                .entry((
                    dispatcher.by_tenant_gauge(),
                    self.tenants.label(&row.tenant_id),
                    row.status,
                ))
                .or_insert(0) += row.count;
        }
        for (status, n) in backlog {
            metrics::gauge!(tm::OUTBOX_BACKLOG, "consumer" => dispatcher.consumer(), "status" => status)
                .set(n as f64);
        }
        Ok(())
    }

    /// The per-tenant delivery lag of one outbox: the most lagging tenants, the rest as
    /// `other`, and the median ([`crate::tenant_lag`]).
    fn sample_tenant_lag(&mut self, dispatcher: Dispatcher, rows: &[TenantStatusCount]) {
        let consumer = dispatcher.consumer();
        let sample = crate::tenant_lag::sample(
            rows,
            |status| dispatcher.unfinished(status),
            self.lag_tenants,
            now_micros(),
        );
        let mut now = BTreeSet::new();
        for lag in sample.top.iter().chain(std::iter::once(&sample.other)) {
            metrics::gauge!(tm::TENANT_DELIVERY_LAG_SECONDS, "consumer" => consumer, "tenant" => lag.tenant.clone())
                .set(lag.seconds);
            metrics::gauge!(tm::TENANT_DELIVERY_LAG_EVENTS, "consumer" => consumer, "tenant" => lag.tenant.clone())
                .set(lag.events as f64);
            now.insert((consumer, lag.tenant.clone()));
        }
        let before: Vec<_> = self
            .lag_series
            .iter()
            .filter(|(c, _)| *c == consumer)
            .cloned()
            .collect();
        for key in before {
            if !now.contains(&key) {
                metrics::gauge!(tm::TENANT_DELIVERY_LAG_SECONDS, "consumer" => consumer, "tenant" => key.1.clone())
                    .set(0.0);
                metrics::gauge!(tm::TENANT_DELIVERY_LAG_EVENTS, "consumer" => consumer, "tenant" => key.1.clone())
                    .set(0.0);
                self.lag_series.remove(&key);
            }
        }
        self.lag_series.extend(now);
        metrics::gauge!(tm::TENANT_DELIVERY_LAG_MEDIAN_SECONDS, "consumer" => consumer)
            .set(sample.median_seconds);
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
}
