//! The loop of one consumer: its own group, its own positions, its own batches.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use ledgerflow_codec::Decoder;
use ledgerflow_store::{BatchInput, BatchOutcome, ErasedConsumer, Store, StoreError};
use ledgerflow_tenants::TenantRegistry;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::pipeline::{RawRecord, prepare_record};
use crate::{Backoff, GroupProtocol, RuntimeConfig, RuntimeError};
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
    fn merge(&mut self, other: &Self) {
        self.batches += other.batches;
        self.records += other.records;
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.dead_lettered += other.dead_lettered;
        self.skipped += other.skipped;
        self.stale_batches += other.stale_batches;
        self.retries += other.retries;
    }

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
    /// Set while the partition is paused after a transient failure: its buffered batch is
    /// retried at `Retry::at`, the other partitions carry on.
    retry: Option<Retry>,
}

/// A paused partition's retry schedule.
#[derive(Debug)]
struct Retry {
    backoff: Backoff,
    at: Instant,
}

impl PartitionState {
    /// Buffers a received record, unless it is below the known position or not past the last
    /// buffered one (committed earlier, or re-delivered by a seek race).
    fn accept(&mut self, record: RawRecord) {
        if self.next.is_some_and(|n| record.offset < n)
            || self
                .buffer
                .last()
                .is_some_and(|r| record.offset <= r.offset)
        {
            return;
        }
        self.buffer.push(record);
        self.first_buffered_at.get_or_insert_with(Instant::now);
    }

    /// Whether the buffered batch should be flushed now.
    fn due(&self, config: &RuntimeConfig, now: Instant) -> bool {
        if self.buffer.is_empty() {
            return false;
        }
        match &self.retry {
            Some(retry) => now >= retry.at,
            None => {
                self.buffer.len() >= config.batch_max_records
                    || self
                        .first_buffered_at
                        .is_some_and(|t| now.duration_since(t) >= config.batch_max_wait)
            }
        }
    }
}

/// How a flush ended.
#[derive(Debug)]
enum Flush {
    /// Committed (or dropped records below the stored position); nothing left to retry.
    Done,
    /// Moved the partition's fetch position: records received since the flush started come
    /// from the old fetch position and are dropped (they are fetched again).
    Seeked,
    /// A transient failure: the records are back in the buffer, to be retried.
    Transient { stage: &'static str, error: String },
}

/// How long a graceful shutdown keeps retrying a buffered batch through a transient failure
/// before it gives the batch up (it is re-read from the stored position on the next start).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// What a flush needs besides the partition itself.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    kafka: &'a StreamConsumer<LoopContext>,
    consumer: &'a dyn ErasedConsumer,
    store: &'a Store,
    decoder: &'a Decoder,
    tenants: &'a TenantRegistry,
    config: &'a RuntimeConfig,
}

/// Records received for a partition while its flush is in flight.
struct Arrivals {
    /// When the first of them arrived (their batch wait runs from here).
    since: Instant,
    records: Vec<RawRecord>,
}

/// What one turn of the loop woke up for.
enum Polled<'a> {
    /// A record, a consumer error, or the poll timed out.
    Record(
        Result<
            Result<rdkafka::message::BorrowedMessage<'a>, rdkafka::error::KafkaError>,
            tokio::time::error::Elapsed,
        >,
    ),
    /// A flush returned.
    Flushed(Box<Completion>),
}

/// A returned flush: the partition's state comes back to the loop with the result.
struct Completion {
    key: Key,
    generation: u64,
    state: PartitionState,
    result: Result<Flush, RuntimeError>,
    local: ConsumerSummary,
}

type InFlight<'a> = Pin<Box<dyn Future<Output = Completion> + Send + 'a>>;

/// Runs [`flush_partition`] on a partition's state taken out of the loop's map.
async fn flush_owned(
    ctx: Ctx<'_>,
    key: Key,
    generation: u64,
    mut state: PartitionState,
) -> Completion {
    let mut local = ConsumerSummary::default();
    let result = flush_partition(&ctx, &key, &mut state, &mut local).await;
    Completion {
        key,
        generation,
        state,
        result,
        local,
    }
}

/// How often a delivery that starts past the expected offset is re-fetched before the gap is
/// accepted. Real gaps exist (transaction markers, compaction) and must not stall a partition;
/// a broker that merely delivered from the wrong place is corrected by the re-seek.
const MAX_GAP_RESEEKS: u32 = 3;

type Key = (String, i32);

/// The librdkafka configuration of a consumer's group member.
fn consumer_client_config(config: &RuntimeConfig, name: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &config.brokers)
        .set("group.id", config.group_id(name))
        .set("client.id", format!("ledgerflow-{name}"))
        .set("group.protocol", config.group_protocol.as_str())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "10000")
        // A fetch the broker holds open waits at most this long for records (librdkafka's
        // default is 500 ms, which would be added to the latency of a record that arrives
        // while a fetch is parked); an idle consumer pays 20 fetches a second per broker.
        // Overridable with `--kafka-property fetch.wait.max.ms=...`.
        .set("fetch.wait.max.ms", "50");
    if config.group_protocol == GroupProtocol::Classic {
        // Incremental rebalances: members keep the partitions they are not giving up, so a
        // joining or leaving peer stalls only the partitions that move. With KIP-848 the broker
        // assigns, and session and heartbeat timing are broker settings (librdkafka refuses
        // these three there).
        cfg.set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout.as_millis() / 10)
                    .clamp(100, 3000)
                    .to_string(),
            );
    }
    if let Some(instance) = config.group_instance_id(name) {
        cfg.set("group.instance.id", instance);
    }
    for (k, v) in &config.kafka_properties {
        cfg.set(k, v);
    }
    cfg
}

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
    let cfg = consumer_client_config(&config, name);
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
    let ctx = Ctx {
        kafka: &kafka,
        consumer: consumer.as_ref(),
        store: &store,
        decoder: &decoder,
        tenants: &tenants,
        config: &config,
    };
    let mut parts: BTreeMap<Key, PartitionState> = BTreeMap::new();
    // Flushes in flight, at most one per partition. Kafka is polled and records are decoded
    // while they commit: the loop never waits for the database, so fetching, decoding and the
    // partitions' transactions overlap. A partition in flight is out of `parts`; records that
    // arrive for it meanwhile wait in `arrivals` and join its buffer when the flush returns.
    let mut inflight: FuturesUnordered<InFlight<'_>> = FuturesUnordered::new();
    let mut busy: HashSet<Key> = HashSet::new();
    let mut arrivals: HashMap<Key, Arrivals> = HashMap::new();
    // Bumped on every assignment change of a partition: a flush that returns into a newer
    // generation belongs to an assignment that is gone, and its state is dropped.
    let mut generations: HashMap<Key, u64> = HashMap::new();
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
        let event = tokio::select! {
            _ = shutdown.changed() => break,
            r = tokio::time::timeout(tick, kafka.recv()) => Polled::Record(r),
            Some(done) = inflight.next(), if !inflight.is_empty() => Polled::Flushed(Box::new(done)),
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
                    // A partition paused here before it was revoked starts afresh.
                    set_paused(&kafka, &list, false);
                    for key in list {
                        *generations.entry(key.clone()).or_default() += 1;
                        arrivals.remove(&key);
                        parts.insert(key, PartitionState::default());
                    }
                    rebalancing = false;
                    last_activity = Instant::now();
                }
                Membership::Revoked(list) => {
                    info!(consumer = name, partitions = ?list, "partitions revoked");
                    for key in list {
                        *generations.entry(key.clone()).or_default() += 1;
                        arrivals.remove(&key);
                        parts.remove(&key);
                    }
                    rebalancing = true;
                    last_activity = Instant::now();
                }
            }
        }
        match event {
            Polled::Record(Ok(Ok(msg))) => {
                last_activity = Instant::now();
                let key = (msg.topic().to_owned(), msg.partition());
                let record = RawRecord::from_message(&msg);
                if busy.contains(&key) && !parts.contains_key(&key) {
                    let waiting = arrivals.entry(key).or_insert_with(|| Arrivals {
                        since: Instant::now(),
                        records: Vec::new(),
                    });
                    waiting.records.push(record);
                } else {
                    parts.entry(key).or_default().accept(record);
                }
            }
            Polled::Record(Ok(Err(e))) => {
                warn!(consumer = name, error = %e, "kafka consumer error");
            }
            Polled::Record(Err(_)) => {}
            Polled::Flushed(done) => {
                busy.remove(&done.key);
                if returned(
                    &ctx,
                    *done,
                    &generations,
                    &mut arrivals,
                    &mut parts,
                    &mut summary,
                )? {
                    last_activity = Instant::now();
                }
            }
        }
        // Start flushes of partitions whose batch is full or old enough, or whose retry is
        // due. They commit concurrently, each in its own transaction on its own connection:
        // partitions share nothing in the store but the inbox, whose rows every batch inserts
        // in event-id order, and a deadlock the database still detects is a transient failure
        // of one partition, retried after its pause.
        let now = Instant::now();
        let due: Vec<Key> = parts
            .iter()
            .filter(|(k, s)| !busy.contains(*k) && s.due(&config, now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(state) = parts.remove(&key) else {
                continue;
            };
            busy.insert(key.clone());
            let generation = generations.get(&key).copied().unwrap_or_default();
            inflight.push(Box::pin(flush_owned(ctx, key, generation, state)));
        }
        if let Some(idle) = config.exit_when_idle {
            let pending = !inflight.is_empty()
                || parts
                    .values()
                    .any(|s| !s.buffer.is_empty() || s.retry.is_some());
            if !pending && !rebalancing && last_activity.elapsed() >= idle {
                info!(consumer = name, "idle, exiting");
                break;
            }
        }
    }
    // Flushes in flight finish first (their records are in their transactions already).
    while let Some(done) = inflight.next().await {
        returned(
            &ctx,
            done,
            &generations,
            &mut arrivals,
            &mut parts,
            &mut summary,
        )?;
    }
    // Graceful shutdown: commit what is buffered (a SIGTERM must not waste work, and must not
    // leave anything half-done — the transaction guarantees the latter either way). Through a
    // transient failure the batch is retried for `SHUTDOWN_GRACE`, then given up: its records
    // are re-read from the stored position on the next start, so nothing is lost.
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    let keys: Vec<Key> = parts.keys().cloned().collect();
    for key in keys {
        let Some(state) = parts.get_mut(&key) else {
            continue;
        };
        while !state.buffer.is_empty() {
            let flush = flush_partition(&ctx, &key, state, &mut summary).await?;
            let transient = matches!(flush, Flush::Transient { .. });
            let _ = after_flush(&ctx, &key, state, flush, &mut summary);
            if !transient {
                continue;
            }
            let wait = state.retry.as_ref().map_or(Duration::ZERO, |r| {
                r.at.saturating_duration_since(Instant::now())
            });
            if Instant::now() + wait >= deadline {
                warn!(
                    consumer = name,
                    topic = key.0,
                    partition = key.1,
                    records = state.buffer.len(),
                    "shutting down through a transient failure: the buffered batch is not committed and will be re-read from the stored position"
                );
                break;
            }
            tokio::time::sleep(wait).await;
        }
    }
    info!(consumer = name, ?summary, "consumer stopped");
    Ok(summary)
}

/// Applies a flush's result: a success resumes a paused partition; a transient failure pauses
/// the partition (the other partitions keep flowing, the loop keeps polling so the group
/// membership stays alive) and schedules the retry with exponential backoff and jitter.
///
/// Returns whether a paused partition was resumed: its fetch starts again, so an idle timer
/// must start afresh (nothing arrived while it was paused, yet records wait behind it).
fn after_flush(
    ctx: &Ctx<'_>,
    key: &Key,
    state: &mut PartitionState,
    flush: Flush,
    summary: &mut ConsumerSummary,
) -> bool {
    let name = ctx.consumer.name();
    match flush {
        Flush::Done | Flush::Seeked => {
            let Some(retry) = state.retry.take() else {
                return false;
            };
            set_paused(ctx.kafka, std::slice::from_ref(key), false);
            info!(
                consumer = name,
                topic = key.0,
                partition = key.1,
                retries = retry.backoff.attempts(),
                "transient failure over; partition resumed"
            );
            true
        }
        Flush::Transient { stage, error } => {
            summary.retries += 1;
            metrics::counter!(tm::RETRIES_TOTAL, "consumer" => name, "stage" => stage).increment(1);
            let retry = state.retry.get_or_insert_with(|| {
                set_paused(ctx.kafka, std::slice::from_ref(key), true);
                Retry {
                    backoff: Backoff::new(ctx.config.retry_base, ctx.config.retry_max),
                    at: Instant::now(),
                }
            });
            let delay = retry.backoff.next_delay();
            retry.at = Instant::now() + delay;
            warn!(
                consumer = name,
                topic = key.0,
                partition = key.1,
                stage,
                error,
                attempt = retry.backoff.attempts(),
                ?delay,
                "transient failure; partition paused until the retry"
            );
            false
        }
    }
}

/// After a seek: what is still buffered came from the old fetch position and is fetched again.
fn seeked(state: &mut PartitionState) -> Flush {
    state.buffer.clear();
    state.first_buffered_at = None;
    Flush::Seeked
}

/// Syncs, prepares and commits the buffered records of one partition. A transient failure puts
/// the records back into the buffer and returns [`Flush::Transient`]; the caller schedules the
/// retry. Nothing here sleeps, so one partition's outage never holds up another's batches.
async fn flush_partition(
    ctx: &Ctx<'_>,
    key: &Key,
    state: &mut PartitionState,
    summary: &mut ConsumerSummary,
) -> Result<Flush, RuntimeError> {
    let Ctx {
        kafka,
        consumer,
        store,
        decoder,
        tenants,
        ..
    } = *ctx;
    let (topic, partition) = (key.0.as_str(), key.1);
    // At most `batch_max_records` per transaction; the rest stays buffered (and is due at once).
    let mut records = std::mem::take(&mut state.buffer);
    if records.len() > ctx.config.batch_max_records {
        state.buffer = records.split_off(ctx.config.batch_max_records);
    }
    let buffered_at = if state.buffer.is_empty() {
        state.first_buffered_at.take()
    } else {
        state.first_buffered_at
    };
    let Some(first) = records.first().map(|r| r.offset) else {
        return Ok(Flush::Done);
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
        // Records go back to the front of the buffer on a transient failure; anything that
        // arrived meanwhile stays behind them, in offset order.
        let restore = |state: &mut PartitionState, mut records: Vec<RawRecord>, stage, error| {
            records.append(&mut state.buffer);
            state.buffer = records;
            state.first_buffered_at = buffered_at.or_else(|| Some(Instant::now()));
            Ok(Flush::Transient { stage, error })
        };
        // 1. Sync with the stored position once per assignment.
        if !state.synced {
            let stored = match store.position(consumer.name(), topic, partition).await {
                Ok(p) => p,
                Err(e) if e.is_retryable() => {
                    return restore(state, records, "position", error_text(&e));
                }
                Err(e) => return Err(RuntimeError::Store(e)),
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
                    return Ok(seeked(state));
                }
                // Behind the position: these records were committed earlier; drop them.
                let kept: Vec<RawRecord> = records
                    .into_iter()
                    .filter(|r| r.offset >= position)
                    .collect();
                if !kept.is_empty() || !state.buffer.is_empty() {
                    let mut kept = kept;
                    kept.append(&mut state.buffer);
                    state.buffer = kept;
                    state.first_buffered_at = Some(Instant::now());
                }
                return Ok(Flush::Done);
            }
            // A delivery that starts at offset 0 cannot have skipped anything (and asking the
            // broker would queue behind the consumer's long-poll fetch).
            if stored.is_none()
                && first > 0
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
                return Ok(seeked(state));
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
                return Ok(seeked(state));
            }
            tracing::error!(
                expected,
                first,
                "offsets {expected}..{first} do not exist on the broker (compaction or transaction markers); continuing after {MAX_GAP_RESEEKS} re-fetches"
            );
            metrics::counter!(tm::OFFSET_GAPS_TOTAL, "consumer" => consumer.name()).increment(1);
        }
        state.gap_reseeks = 0;
        // 2. Prepare every record (decode, tenant, map). The raw record is cloned per attempt
        // so that a transient failure can hand the batch back for a retry.
        let batch_started = Instant::now();
        let mut outcomes = Vec::with_capacity(records.len());
        summary.records += records.len() as u64;
        for raw in &records {
            // One span per event: a child of the producer's trace when the record carries a
            // W3C `traceparent` header; tenant and correlation id once decoded.
            let event_span = info_span!(
                "event",
                offset = raw.offset,
                tenant = tracing::field::Empty,
                event_type = tracing::field::Empty,
                event_id = tracing::field::Empty,
                correlation_id = tracing::field::Empty,
            );
            if let Some(traceparent) = raw.header("traceparent") {
                tm::continue_trace(&event_span, traceparent);
            }
            let prepared = prepare_record(decoder, tenants, consumer, raw.clone())
                .instrument(event_span.clone())
                .await;
            match prepared {
                Ok(o) => {
                    if let Some(meta) = o.meta() {
                        event_span.record("tenant", meta.tenant_id.as_str());
                        event_span.record("event_type", meta.event_type.as_str());
                        event_span.record("event_id", tracing::field::display(&meta.event_id));
                        event_span.record("correlation_id", meta.correlation_id.as_str());
                    }
                    outcomes.push(o);
                }
                Err(f) => return restore(state, records, "prepare", f.to_string()),
            }
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
                    metrics::counter!(tm::STALE_BATCHES_TOTAL, "consumer" => consumer.name())
                        .increment(1);
                    warn!(
                        position,
                        "stale batch rejected by the position fence; seeking"
                    );
                    state.next = Some(position);
                    seek(kafka, topic, partition, position);
                    return Ok(seeked(state));
                }
                summary.add(&outcome);
                record_metrics(consumer.name(), topic, partition, &outcome, batch_started, last + 1);
                state.next = Some(last + 1);
                debug!(?outcome, "batch committed");
                mirror_commit(kafka, topic, partition, last + 1);
                Ok(Flush::Done)
            }
            Err(e) if e.is_retryable() => restore(state, records, "commit", error_text(&e)),
            Err(e) => Err(RuntimeError::Store(e)),
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
    for (decision, event_type, n) in &outcome.decided_types {
        metrics::counter!(tm::EVENTS_TOTAL, "consumer" => consumer, "event_type" => event_type.clone(), "decision" => decision.as_str()).increment(*n);
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

/// Pauses or resumes fetching of partitions (failures are logged: a pause that did not take
/// only means records keep arriving into the buffer, which the retry then includes).
fn set_paused(kafka: &StreamConsumer<LoopContext>, keys: &[Key], paused: bool) {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in keys {
        tpl.add_partition(topic, *partition);
    }
    let result = if paused {
        kafka.pause(&tpl)
    } else {
        kafka.resume(&tpl)
    };
    if let Err(e) = result {
        warn!(partitions = ?keys, paused, error = %e, "pause/resume failed");
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

/// Takes a returned flush back into the loop's state: its partition's state goes back into
/// `parts` (with the records that arrived meanwhile, unless the flush moved the fetch position),
/// or is dropped when the partition's assignment changed since. Returns whether a paused
/// partition was resumed (see [`after_flush`]); a fatal error ends the consumer.
fn returned(
    ctx: &Ctx<'_>,
    done: Completion,
    generations: &HashMap<Key, u64>,
    arrivals: &mut HashMap<Key, Arrivals>,
    parts: &mut BTreeMap<Key, PartitionState>,
    summary: &mut ConsumerSummary,
) -> Result<bool, RuntimeError> {
    let Completion {
        key,
        generation,
        mut state,
        result,
        local,
    } = done;
    summary.merge(&local);
    let flush = result?;
    if generations.get(&key).copied().unwrap_or_default() != generation {
        return Ok(false);
    }
    let seeked = matches!(flush, Flush::Seeked);
    let resumed = after_flush(ctx, &key, &mut state, flush, summary);
    if let Some(waiting) = arrivals.remove(&key)
        && !seeked
    {
        for record in waiting.records {
            state.accept(record);
        }
        // They have waited since they arrived, not since the flush returned.
        if let Some(at) = state.first_buffered_at.as_mut() {
            *at = (*at).min(waiting.since);
        }
    }
    parts.insert(key, state);
    Ok(resumed)
}
