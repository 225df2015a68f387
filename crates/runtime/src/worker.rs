//! The loop of one consumer: its own group, its own positions, its own batches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ledgerflow_codec::Decoder;
use ledgerflow_core::Failure;
use ledgerflow_store::{BatchInput, BatchOutcome, ErasedConsumer, Store, StoreError};
use ledgerflow_tenants::TenantRegistry;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::pipeline::{RawRecord, prepare_record};
use crate::{Backoff, RuntimeConfig, RuntimeError};
use ledgerflow_telemetry as tm;

/// Totals of one consumer run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConsumerSummary {
    /// Consumer name.
    pub consumer: String,
    /// Batches committed.
    pub batches: u64,
    /// Records read (including re-reads after a retry).
    pub records: u64,
    /// Applied.
    pub applied: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// Dead letters.
    pub dead_lettered: u64,
    /// Skipped.
    pub skipped: u64,
    /// Stale batches rejected by the position fence.
    pub stale_batches: u64,
    /// Transient failures retried.
    pub retries: u64,
}

impl ConsumerSummary {
    fn add(&mut self, o: &BatchOutcome) {
        self.batches += 1;
        self.applied += o.applied;
        self.duplicates += o.duplicates;
        self.dead_lettered += o.dead_lettered;
        self.skipped += o.skipped;
    }
}

/// Assignment changes, sent from librdkafka's rebalance callback to the loop.
#[derive(Debug)]
enum Membership {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

struct LoopContext {
    tx: mpsc::Sender<Membership>,
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for LoopContext {}

impl ConsumerContext for LoopContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // The loop drops buffered records of revoked partitions; a batch already in its
            // transaction is fenced by the position check if the new owner gets there first.
            let _ = self.tx.send(Membership::Revoked(partitions_of(tpl)));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let _ = self.tx.send(Membership::Assigned(partitions_of(tpl)));
        }
    }
}

/// Per-partition state.
#[derive(Debug, Default)]
struct PartitionState {
    /// The stored position has been checked since assignment.
    synced: bool,
    /// Next offset we expect (records below it are already committed and dropped).
    next: Option<i64>,
    buffer: Vec<RawRecord>,
    first_buffered_at: Option<Instant>,
    /// Re-seeks spent on the current gap (see `MAX_GAP_RESEEKS`).
    gap_reseeks: u32,
}

/// How often a delivery that starts past the expected offset is re-fetched before the gap is
/// accepted. Real gaps exist (transaction markers, compaction) and must not stall a partition;
/// a broker that merely delivered from the wrong place is corrected by the re-seek.
const MAX_GAP_RESEEKS: u32 = 3;

type Key = (String, i32);

/// Runs one consumer until shutdown (or idle, with `exit_when_idle`).
pub async fn run_consumer(
    consumer: Arc<dyn ErasedConsumer>,
    store: Store,
    decoder: Arc<Decoder>,
    tenants: TenantRegistry,
    config: RuntimeConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<ConsumerSummary, RuntimeError> {
    let name = consumer.name();
    let group = config.group_id(name);
    let (tx, membership) = mpsc::channel();
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &config.brokers)
        .set("group.id", &group)
        .set("client.id", format!("ledgerflow-{name}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("topic.metadata.refresh.interval.ms", "10000");
    for (k, v) in &config.kafka_properties {
        cfg.set(k, v);
    }
    let kafka: StreamConsumer<LoopContext> =
        cfg.create_with_context(LoopContext { tx })
            .map_err(|source| RuntimeError::Kafka {
                context: format!("creating consumer {group}"),
                source,
            })?;
    let subscriptions: Vec<&str> = config.topics.iter().map(|t| t.as_subscription()).collect();
    kafka
        .subscribe(&subscriptions)
        .map_err(|source| RuntimeError::Kafka {
            context: format!("subscribing {subscriptions:?}"),
            source,
        })?;
    info!(consumer = name, %group, topics = ?subscriptions, "consumer started");

    let mut summary = ConsumerSummary {
        consumer: name.to_owned(),
        ..Default::default()
    };
    let mut parts: BTreeMap<Key, PartitionState> = BTreeMap::new();
    let mut last_activity = Instant::now();
    // Between a revoke and the assignment that follows it the group is rebalancing: this member
    // holds no partitions only because the coordinator has not handed them out yet (after a
    // peer died, they include the dead peer's). Never idle out in that gap.
    let mut rebalancing = false;
    let tick = config
        .batch_max_wait
        .min(Duration::from_millis(200))
        .max(Duration::from_millis(5));
    loop {
        if *shutdown.borrow() {
            break;
        }
        let received = tokio::select! {
            _ = shutdown.changed() => break,
            r = tokio::time::timeout(tick, kafka.recv()) => r,
        };
        // Assignment changes before the record: librdkafka runs the rebalance callbacks inside
        // the poll that then returns the first record of the new assignment, so by now they are
        // in the channel. Applied after the record instead, a fresh `Assigned` state would
        // overwrite the record buffered just before it (and a `Revoked` would drop it): that
        // record, typically offset 0 of a partition with no stored position, would be skipped
        // without a decision, and the next batch would start past it.
        while let Ok(change) = membership.try_recv() {
            match change {
                Membership::Assigned(list) => {
                    info!(consumer = name, partitions = ?list, "partitions assigned");
                    for key in list {
                        parts.insert(key, PartitionState::default());
                    }
                    rebalancing = false;
                    last_activity = Instant::now();
                }
                Membership::Revoked(list) => {
                    info!(consumer = name, partitions = ?list, "partitions revoked");
                    for key in list {
                        parts.remove(&key);
                    }
                    rebalancing = true;
                    last_activity = Instant::now();
                }
            }
        }
        match received {
            Ok(Ok(msg)) => {
                last_activity = Instant::now();
                let key = (msg.topic().to_owned(), msg.partition());
                let state = parts.entry(key).or_default();
                if state.next.is_some_and(|n| msg.offset() < n)
                    || state
                        .buffer
                        .last()
                        .is_some_and(|r| msg.offset() <= r.offset)
                {
                    // Below the known position: committed earlier, re-delivered by a seek race.
                    continue;
                }
                let headers = msg
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_owned(),
                                    x.value.map(|v| String::from_utf8_lossy(v).into_owned()),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                state.buffer.push(RawRecord {
                    topic: msg.topic().to_owned(),
                    partition: msg.partition(),
                    offset: msg.offset(),
                    key: msg.key().map(<[u8]>::to_vec),
                    value: msg.payload().map(<[u8]>::to_vec),
                    headers,
                });
                state.first_buffered_at.get_or_insert_with(Instant::now);
            }
            Ok(Err(e)) => {
                warn!(consumer = name, error = %e, "kafka consumer error");
            }
            Err(_) => {}
        }
        // Flush partitions whose batch is full or old enough.
        let due: Vec<Key> = parts
            .iter()
            .filter(|(_, s)| {
                !s.buffer.is_empty()
                    && (s.buffer.len() >= config.batch_max_records
                        || s.first_buffered_at
                            .is_some_and(|t| t.elapsed() >= config.batch_max_wait))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(state) = parts.get_mut(&key) else {
                continue;
            };
            flush_partition(
                &key,
                state,
                &kafka,
                consumer.as_ref(),
                &store,
                &decoder,
                &tenants,
                &config,
                &mut summary,
                &mut shutdown,
            )
            .await?;
        }
        if let Some(idle) = config.exit_when_idle {
            let pending = parts.values().any(|s| !s.buffer.is_empty());
            if !pending && !rebalancing && last_activity.elapsed() >= idle {
                info!(consumer = name, "idle, exiting");
                break;
            }
        }
    }
    // Graceful shutdown: commit what is buffered (a SIGTERM must not waste work, and must not
    // leave anything half-done — the transaction guarantees the latter either way).
    let keys: Vec<Key> = parts.keys().cloned().collect();
    let (_never, mut no_shutdown) = watch::channel(false);
    for key in keys {
        if let Some(state) = parts.get_mut(&key)
            && !state.buffer.is_empty()
        {
            flush_partition(
                &key,
                state,
                &kafka,
                consumer.as_ref(),
                &store,
                &decoder,
                &tenants,
                &config,
                &mut summary,
                &mut no_shutdown,
            )
            .await?;
        }
    }
    info!(consumer = name, ?summary, "consumer stopped");
    Ok(summary)
}

/// Syncs, prepares and commits the buffered records of one partition, retrying transient
/// failures until they succeed (or shutdown is requested, which abandons the batch: its
/// records are re-read from the stored position next time).
#[allow(clippy::too_many_arguments)]
async fn flush_partition(
    key: &Key,
    state: &mut PartitionState,
    kafka: &StreamConsumer<LoopContext>,
    consumer: &dyn ErasedConsumer,
    store: &Store,
    decoder: &Decoder,
    tenants: &TenantRegistry,
    config: &RuntimeConfig,
    summary: &mut ConsumerSummary,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), RuntimeError> {
    let (topic, partition) = (key.0.as_str(), key.1);
    let mut backoff = Backoff::new(config.retry_base, config.retry_max);
    let records = std::mem::take(&mut state.buffer);
    state.first_buffered_at = None;
    let Some(first) = records.first().map(|r| r.offset) else {
        return Ok(());
    };
    let last = records.last().map_or(first, |r| r.offset);
    let span = info_span!(
        "batch",
        consumer = consumer.name(),
        topic,
        partition,
        first,
        last,
        n = records.len()
    );
    async {
        // 1. Sync with the stored position once per assignment.
        if !state.synced {
            let stored = loop {
                match store.position(consumer.name(), topic, partition).await {
                    Ok(p) => break p,
                    Err(e) if e.is_retryable() => {
                        summary.retries += 1;
                        if !sleep_or_shutdown(&mut backoff, &e.to_string(), shutdown).await {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(RuntimeError::Store(e)),
                }
            };
            state.synced = true;
            if let Some(position) = stored
                && position != first
            {
                state.next = Some(position);
                if position < first {
                    // The broker delivered from past our position of record (its committed
                    // offset is ahead, e.g. after a restore): go back, nothing may be skipped.
                    info!(position, first, "seeking back to the stored position");
                    seek(kafka, topic, partition, position);
                    return Ok(());
                }
                // Behind the position: these records were committed earlier; drop them.
                let kept: Vec<RawRecord> = records
                    .into_iter()
                    .filter(|r| r.offset >= position)
                    .collect();
                if !kept.is_empty() {
                    state.buffer = kept;
                    state.first_buffered_at = Some(Instant::now());
                }
                return Ok(());
            }
            if stored.is_none()
                && let Some(low) = low_watermark(kafka, topic, partition)
                && first > low
            {
                // No position of record yet, and the broker started past the earliest record
                // it still holds: never start a partition's history with a gap.
                info!(
                    low,
                    first, "no stored position; seeking to the earliest offset"
                );
                state.next = Some(low);
                seek(kafka, topic, partition, low);
                return Ok(());
            }
            state.next = Some(first);
        }
        // Gap check: the batch must start where the previous one ended.
        if let Some(expected) = state.next
            && first > expected
        {
            if state.gap_reseeks < MAX_GAP_RESEEKS {
                state.gap_reseeks += 1;
                warn!(expected, first, attempt = state.gap_reseeks, "delivery starts past the expected offset; re-fetching");
                seek(kafka, topic, partition, expected);
                return Ok(());
            }
            tracing::error!(
                expected,
                first,
                "offsets {expected}..{first} do not exist on the broker (compaction or transaction markers); continuing after {MAX_GAP_RESEEKS} re-fetches"
            );
            metrics::counter!(tm::OFFSET_GAPS_TOTAL, "consumer" => consumer.name()).increment(1);
        }
        state.gap_reseeks = 0;
        // 2. Prepare every record (decode, tenant, map); a transient failure retries all.
        let batch_started = Instant::now();
        let mut attempt_records = records;
        loop {
            let mut outcomes = Vec::with_capacity(attempt_records.len());
            let mut transient: Option<Failure> = None;
            for raw in &attempt_records {
                match prepare_record(decoder, tenants, consumer, raw.clone()).await {
                    Ok(o) => outcomes.push(o),
                    Err(f) => {
                        transient = Some(f);
                        break;
                    }
                }
            }
            summary.records += attempt_records.len() as u64;
            if let Some(f) = transient {
                summary.retries += 1;
                metrics::counter!(tm::RETRIES_TOTAL, "consumer" => consumer.name(), "stage" => "prepare").increment(1);
                if !sleep_or_shutdown(&mut backoff, &f.to_string(), shutdown).await {
                    return Ok(());
                }
                continue;
            }
            // 3. Commit.
            let input = BatchInput {
                topic: topic.to_owned(),
                partition,
                records: outcomes,
                next_offset: last + 1,
            };
            match store.commit_batch(consumer, input).await {
                Ok(outcome) => {
                    if let Some(position) = outcome.stale {
                        summary.stale_batches += 1;
                        metrics::counter!(tm::STALE_BATCHES_TOTAL, "consumer" => consumer.name()).increment(1);
                        warn!(
                            position,
                            "stale batch rejected by the position fence; seeking"
                        );
                        state.next = Some(position);
                        seek(kafka, topic, partition, position);
                        return Ok(());
                    }
                    summary.add(&outcome);
                    record_metrics(consumer.name(), topic, partition, &outcome, batch_started, last + 1);
                    state.next = Some(last + 1);
                    debug!(?outcome, "batch committed");
                    mirror_commit(kafka, topic, partition, last + 1);
                    return Ok(());
                }
                Err(e) if e.is_retryable() => {
                    summary.retries += 1;
                    metrics::counter!(tm::RETRIES_TOTAL, "consumer" => consumer.name(), "stage" => "commit").increment(1);
                    if !sleep_or_shutdown(&mut backoff, &error_text(&e), shutdown).await {
                        return Ok(());
                    }
                    attempt_records = std::mem::take(&mut attempt_records);
                }
                Err(e) => return Err(RuntimeError::Store(e)),
            }
        }
    }
    .instrument(span)
    .await
}

fn record_metrics(
    consumer: &'static str,
    topic: &str,
    partition: i32,
    outcome: &BatchOutcome,
    started: Instant,
    next: i64,
) {
    let total = outcome.applied + outcome.duplicates + outcome.dead_lettered + outcome.skipped;
    metrics::histogram!(tm::BATCH_RECORDS, "consumer" => consumer).record(total as f64);
    metrics::histogram!(tm::BATCH_COMMIT_SECONDS, "consumer" => consumer)
        .record(started.elapsed().as_secs_f64());
    for (event_type, n) in &outcome.applied_types {
        metrics::counter!(tm::EVENTS_TOTAL, "consumer" => consumer, "event_type" => event_type.clone(), "decision" => "applied").increment(*n);
    }
    for (decision, n) in [
        ("duplicate", outcome.duplicates),
        ("dead_lettered", outcome.dead_lettered),
        ("skipped", outcome.skipped),
    ] {
        if n > 0 {
            metrics::counter!(tm::EVENTS_TOTAL, "consumer" => consumer, "event_type" => "any", "decision" => decision).increment(n);
        }
    }
    for (reason, n) in &outcome.reasons {
        metrics::counter!(tm::DEAD_LETTERS_TOTAL, "consumer" => consumer, "reason" => reason.as_str()).increment(*n);
    }
    metrics::gauge!(tm::POSITION, "consumer" => consumer, "topic" => topic.to_owned(), "partition" => partition.to_string())
        .set(next as f64);
}

fn error_text(e: &StoreError) -> String {
    ledgerflow_codec::error_chain(e)
}

/// Sleeps the next backoff delay; false when shutdown was requested meanwhile.
async fn sleep_or_shutdown(
    backoff: &mut Backoff,
    why: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let delay = backoff.next_delay();
    warn!(
        error = why,
        attempt = backoff.attempts(),
        ?delay,
        "transient failure, retrying"
    );
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        _ = shutdown.changed() => false,
    }
}

/// The partition's earliest available offset, or None when the broker does not answer.
fn low_watermark(kafka: &StreamConsumer<LoopContext>, topic: &str, partition: i32) -> Option<i64> {
    // A metadata round trip, once per partition per assignment; block_in_place keeps the
    // runtime's other tasks moving meanwhile.
    tokio::task::block_in_place(|| kafka.fetch_watermarks(topic, partition, Duration::from_secs(5)))
        .map(|(low, _)| low)
        .map_err(|e| warn!(topic, partition, error = %e, "cannot read the low watermark"))
        .ok()
}

fn seek(kafka: &StreamConsumer<LoopContext>, topic: &str, partition: i32, offset: i64) {
    if let Err(e) = kafka.seek(
        topic,
        partition,
        Offset::Offset(offset),
        Duration::from_secs(5),
    ) {
        // A failed seek leaves the fetch position where it was; the next batch is then stale
        // or unsynced and is corrected again. Nothing is committed from a wrong position.
        warn!(topic, partition, offset, error = %e, "seek failed");
    }
}

fn mirror_commit(kafka: &StreamConsumer<LoopContext>, topic: &str, partition: i32, next: i64) {
    let mut tpl = TopicPartitionList::new();
    if tpl
        .add_partition_offset(topic, partition, Offset::Offset(next))
        .is_ok()
        && let Err(e) = kafka.commit(&tpl, CommitMode::Async)
    {
        debug!(topic, partition, error = %e, "kafka offset mirror commit failed (advisory)");
    }
}
