//! One partition's batch from buffer to commit: sync with the position of record, gap check,
//! prepare every record (decode, tenant, map), one store transaction, then the advisory Kafka
//! commit. A flush runs beside the loop (at most one per partition) and hands the partition's
//! state back when it returns; a transient failure puts the records back and pauses the
//! partition, so nothing here sleeps and one partition's outage never holds up another.

use std::time::Instant;

use ledgerflow_codec::Decoder;
use ledgerflow_store::{BatchInput, BatchOutcome, ErasedConsumer, Store, StoreError};
use ledgerflow_tenants::TenantRegistry;
use rdkafka::consumer::CommitMode;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::kafka::{KafkaConsumer, low_watermark, mirror_commit, seek, set_paused};
use crate::partitions::{Key, PartitionState, Retry};
use crate::pipeline::{RawRecord, prepare_record};
use crate::worker::ConsumerSummary;
use crate::{Backoff, RuntimeConfig, RuntimeError};
use ledgerflow_telemetry as tm;

/// How a flush ended.
#[derive(Debug)]
pub(crate) enum Flush {
    /// Committed (or dropped records below the stored position); nothing left to retry.
    Done,
    /// Moved the partition's fetch position: records received since the flush started come
    /// from the old fetch position and are dropped (they are fetched again).
    Seeked,
    /// A transient failure: the records are back in the buffer, to be retried.
    Transient { stage: &'static str, error: String },
}

/// What a flush needs besides the partition itself.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) kafka: &'a KafkaConsumer,
    pub(crate) consumer: &'a dyn ErasedConsumer,
    pub(crate) store: &'a Store,
    pub(crate) decoder: &'a Decoder,
    pub(crate) tenants: &'a TenantRegistry,
    pub(crate) config: &'a RuntimeConfig,
}

/// A returned flush: the partition's state comes back to the loop with the result.
pub(crate) struct Completion {
    pub(crate) key: Key,
    pub(crate) generation: u64,
    pub(crate) state: PartitionState,
    pub(crate) result: Result<Flush, RuntimeError>,
    pub(crate) local: ConsumerSummary,
}

/// Runs [`flush_partition`] on a partition's state taken out of the loop's map.
pub(crate) async fn flush_owned(
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

/// Applies a flush's result: a success resumes a paused partition; a transient failure pauses
/// the partition (the other partitions keep flowing, the loop keeps polling so the group
/// membership stays alive) and schedules the retry with exponential backoff and jitter.
///
/// Returns whether a paused partition was resumed: its fetch starts again, so an idle timer
/// must start afresh (nothing arrived while it was paused, yet records wait behind it).
pub(crate) fn after_flush(
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
pub(crate) fn seeked(state: &mut PartitionState) -> Flush {
    state.buffer.clear();
    state.first_buffered_at = None;
    Flush::Seeked
}

/// Syncs, prepares and commits the buffered records of one partition. A transient failure puts
/// the records back into the buffer and returns [`Flush::Transient`]; the caller schedules the
/// retry. Nothing here sleeps, so one partition's outage never holds up another's batches.
pub(crate) async fn flush_partition(
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
                let before = records.len();
                let kept: Vec<RawRecord> = records
                    .into_iter()
                    .filter(|r| r.offset >= position)
                    .collect();
                summary.rereads += (before - kept.len()) as u64;
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
        // Gap check: a batch that starts past the end of the previous one is normal on Kafka
        // (transaction markers, compaction, aborted records under read_committed): those offsets
        // hold no record to decide. Counted, not treated as an error.
        if let Some(expected) = state.next
            && first > expected
        {
            debug!(
                expected,
                first, "batch starts past the expected offset (no records there)"
            );
            metrics::counter!(tm::OFFSET_GAPS_TOTAL, "consumer" => consumer.name()).increment(1);
        }
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
                record_metrics(
                    consumer.name(),
                    topic,
                    partition,
                    &outcome,
                    batch_started,
                    last + 1,
                );
                state.next = Some(last + 1);
                debug!(?outcome, "batch committed");
                ledgerflow_core::failpoint::hit("runtime.before_offset_commit");
                mirror_commit(
                    kafka,
                    &[((topic.to_owned(), partition), last + 1)],
                    CommitMode::Async,
                );
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
