//! The loop of one consumer: its own group, its own positions, its own batches.
//!
//! The loop polls Kafka, applies assignment changes ([`Partitions`]), buffers records per
//! partition and starts a flush ([`crate::flush`]) when a partition's batch is due; flushes run
//! beside the loop, so polling, decoding and the partitions' transactions overlap. It ends on
//! the shutdown signal, or with `exit_when_idle` once the consumer is drained ([`crate::drain`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use ledgerflow_codec::Decoder;
use ledgerflow_store::{BatchOutcome, ErasedConsumer, Store};
use ledgerflow_tenants::TenantRegistry;
use rdkafka::consumer::{CommitMode, Consumer};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::drain::{DrainStatus, WaitReason, judge};
use crate::flush::{Completion, Ctx, Flush, after_flush, flush_owned, flush_partition};
use crate::kafka::{
    KafkaConsumer, LoopContext, Membership as Change, consumer_client_config, describe_group,
    mirror_commit, set_paused, subscribed_progress,
};
use crate::partitions::{Accepted, Key, Partitions};
use crate::status::Membership;
use crate::{RuntimeConfig, RuntimeError};

/// How a consumer run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunExit {
    /// SIGINT/SIGTERM (or the caller's shutdown signal).
    #[default]
    Signal,
    /// `exit_when_idle`: every partition's records have a decision.
    Drained,
    /// `max_wait` passed before the consumer drained.
    NotDrained,
}

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
    /// Records delivered again below the position of record (committed before; dropped
    /// without a second decision).
    pub rereads: u64,
    /// How the run ended.
    pub exit: RunExit,
    /// Why the run had not drained when `max_wait` ended it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_drained: Option<String>,
    /// Buffered records a shutdown left uncommitted (re-read from the position of record on
    /// the next start).
    pub left_uncommitted: u64,
}

impl ConsumerSummary {
    pub(crate) fn merge(&mut self, other: &Self) {
        self.batches += other.batches;
        self.records += other.records;
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.dead_lettered += other.dead_lettered;
        self.skipped += other.skipped;
        self.stale_batches += other.stale_batches;
        self.retries += other.retries;
        self.rereads += other.rereads;
    }

    pub(crate) fn add(&mut self, o: &BatchOutcome) {
        self.batches += 1;
        self.applied += o.applied;
        self.duplicates += o.duplicates;
        self.dead_lettered += o.dead_lettered;
        self.skipped += o.skipped;
    }
}

type InFlight<'a> = Pin<Box<dyn Future<Output = Completion> + Send + 'a>>;

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

/// How often an idle consumer asks whether it is drained.
const DRAIN_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often a consumer waiting to drain says why.
const DRAIN_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Runs one consumer until shutdown (or, with `exit_when_idle`, until it is drained).
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
    let kafka: KafkaConsumer = cfg
        .create_with_context(LoopContext { tx })
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

    let started = Instant::now();
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
    let mut table = Partitions::joining(started);
    report_status(&config, name, &table);
    // Flushes in flight, at most one per partition. Kafka is polled and records are decoded
    // while they commit: the loop never waits for the database.
    let mut inflight: FuturesUnordered<InFlight<'_>> = FuturesUnordered::new();
    let mut last_activity = started;
    let mut drain = DrainWatch::new(started);
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
        // in the channel. Applied after the record instead, a fresh assignment would overwrite
        // the record buffered just before it (and a revoke would drop it): that record,
        // typically offset 0 of a partition with no stored position, would be skipped without a
        // decision, and the next batch would start past it.
        let mut changed = false;
        while let Ok(change) = membership.try_recv() {
            changed = true;
            match change {
                Change::Assigned(list) => {
                    info!(consumer = name, partitions = ?list, "partitions assigned");
                    // A partition paused here before it was revoked starts afresh.
                    set_paused(&kafka, &list, false);
                    table.assign(&list);
                }
                Change::Revoked(list) => {
                    let discarded = table.revoke(&list, Instant::now());
                    info!(consumer = name, partitions = ?list, discarded, "partitions revoked");
                }
            }
            last_activity = Instant::now();
        }
        if changed {
            report_status(&config, name, &table);
        }
        match event {
            Polled::Record(Ok(Ok(msg))) => {
                last_activity = Instant::now();
                let record = crate::pipeline::RawRecord::from_message(&msg);
                if table.receive(record) == Accepted::Reread {
                    summary.rereads += 1;
                }
            }
            Polled::Record(Ok(Err(e))) => {
                warn!(consumer = name, error = %e, "kafka consumer error");
            }
            Polled::Record(Err(_)) => {}
            Polled::Flushed(done) => {
                if returned(&ctx, *done, &mut table, &mut summary)? {
                    last_activity = Instant::now();
                }
            }
        }
        // Start flushes of partitions whose batch is full or old enough, or whose retry is
        // due. They commit concurrently, each in its own transaction on its own connection:
        // partitions share nothing in the store but the inbox, whose rows every batch inserts
        // in event-id order, and a deadlock the database still detects is a transient failure
        // of one partition, retried after its pause.
        for lease in table.take_due(&config, Instant::now()) {
            inflight.push(Box::pin(flush_owned(
                ctx,
                lease.key,
                lease.generation,
                lease.state,
            )));
        }
        if let Some(idle) = config.exit_when_idle {
            let quiet = !table.pending() && last_activity.elapsed() >= idle;
            if let Some(exit) = drain.step(&ctx, &group, &table, quiet).await {
                summary.exit = exit;
                summary.not_drained = drain.reason_if_not_drained(exit);
                break;
            }
        }
    }
    shut_down(&ctx, inflight, &mut table, &mut summary).await?;
    // Closing leaves the group (a static member stays until its session expires, so that its
    // restart gets the same partitions back without a rebalance). It blocks on the broker.
    tokio::task::block_in_place(move || drop(kafka));
    info!(consumer = name, ?summary, "consumer stopped");
    Ok(summary)
}

fn report_status(config: &RuntimeConfig, name: &str, table: &Partitions) {
    if let Some(status) = &config.status {
        let now = Instant::now();
        status.report(
            name,
            Membership {
                partitions: table.assigned().len(),
                unsettled_since: table.unsettled_for(now).map(|d| now - d),
                ever_assigned: table.ever_assigned(),
            },
        );
    }
}

/// The `exit_when_idle` bookkeeping: when to ask whether the consumer is drained, what it
/// waits for, and when to say so.
struct DrainWatch {
    started: Instant,
    next_check: Instant,
    last_said: Option<Instant>,
    reason: Option<WaitReason>,
}

impl DrainWatch {
    fn new(started: Instant) -> Self {
        Self {
            started,
            next_check: started,
            last_said: None,
            reason: None,
        }
    }

    /// One loop turn: `Some(exit)` when the run should end.
    async fn step(
        &mut self,
        ctx: &Ctx<'_>,
        group: &str,
        table: &Partitions,
        quiet: bool,
    ) -> Option<RunExit> {
        let now = Instant::now();
        if quiet && now >= self.next_check {
            self.next_check = now + DRAIN_CHECK_EVERY;
            match drain_status(ctx, group, table).await {
                DrainStatus::Drained => {
                    info!(
                        consumer = ctx.consumer.name(),
                        "drained: every subscribed partition's position of record is at its high watermark"
                    );
                    return Some(RunExit::Drained);
                }
                DrainStatus::Waiting(reason) => {
                    let kind_changed = self.reason.as_ref().is_none_or(|r| {
                        std::mem::discriminant(r) != std::mem::discriminant(&reason)
                    });
                    if kind_changed
                        || self
                            .last_said
                            .is_none_or(|t| now.duration_since(t) >= DRAIN_PROGRESS_EVERY)
                    {
                        info!(consumer = ctx.consumer.name(), %reason, "idle but not drained yet");
                        self.last_said = Some(now);
                    }
                    self.reason = Some(reason);
                }
            }
        }
        if let Some(max) = ctx.config.max_wait
            && now.duration_since(self.started) >= max
        {
            warn!(
                consumer = ctx.consumer.name(),
                waited = ?max,
                reason = self.reason.as_ref().map(ToString::to_string),
                "not drained within the maximum wait"
            );
            return Some(RunExit::NotDrained);
        }
        None
    }

    fn reason_if_not_drained(&self, exit: RunExit) -> Option<String> {
        (exit == RunExit::NotDrained).then(|| {
            self.reason.as_ref().map_or_else(
                || "records kept arriving until the maximum wait".to_owned(),
                ToString::to_string,
            )
        })
    }
}

/// Asks the database and the broker whether every subscribed partition is drained.
async fn drain_status(ctx: &Ctx<'_>, group: &str, table: &Partitions) -> DrainStatus {
    let name = ctx.consumer.name();
    let positions: BTreeMap<Key, i64> = match ctx.store.positions(Some(name)).await {
        Ok(rows) => rows
            .into_iter()
            .map(|r| ((r.topic, r.partition), r.next_offset))
            .collect(),
        Err(e) => {
            return DrainStatus::Waiting(WaitReason::Unknown {
                error: ledgerflow_codec::error_chain(&e),
            });
        }
    };
    let progress = match subscribed_progress(ctx.kafka, &ctx.config.topics, &positions) {
        Ok(p) => p,
        Err(error) => return DrainStatus::Waiting(WaitReason::Unknown { error }),
    };
    if progress.values().all(|p| p.lag() == 0) {
        return DrainStatus::Drained;
    }
    let view = describe_group(ctx.kafka, group);
    judge(
        &progress,
        table.assigned(),
        table.ever_assigned(),
        view.as_ref(),
    )
}

/// Graceful shutdown: flushes in flight finish, buffered batches commit (retried through a
/// transient failure while the budget lasts), and the positions of record are committed to the
/// group synchronously so a restarted member does not re-read what this one committed.
///
/// The budget is two thirds of `shutdown_timeout`; the rest is for leaving the group and for the
/// dispatchers. What is left uncommitted is re-read from the position of record on the next
/// start: nothing is lost either way.
async fn shut_down(
    ctx: &Ctx<'_>,
    mut inflight: FuturesUnordered<InFlight<'_>>,
    table: &mut Partitions,
    summary: &mut ConsumerSummary,
) -> Result<(), RuntimeError> {
    let name = ctx.consumer.name();
    let deadline = Instant::now() + ctx.config.shutdown_timeout * 2 / 3;
    let committed_before = summary.records;
    // Flushes in flight finish first (their records are in their transactions already).
    while !inflight.is_empty() {
        match tokio::time::timeout_at(deadline.into(), inflight.next()).await {
            Ok(Some(done)) => {
                returned(ctx, done, table, summary)?;
            }
            Ok(None) => break,
            Err(_) => {
                // Dropping a flush rolls its transaction back (or it committed already, and
                // the position says so): either way the next start is exact.
                warn!(
                    consumer = name,
                    flushes = inflight.len(),
                    "shutdown deadline reached with flushes in flight; they are abandoned"
                );
                break;
            }
        }
    }
    drop(inflight);
    for (key, state) in table.idle_states() {
        while !state.buffer.is_empty() {
            if Instant::now() >= deadline {
                break;
            }
            let flush = flush_partition(ctx, key, state, summary).await?;
            let transient = matches!(flush, Flush::Transient { .. });
            after_flush(ctx, key, state, flush, summary);
            if !transient {
                continue;
            }
            let wait = state.retry.as_ref().map_or(Duration::ZERO, |r| {
                r.at.saturating_duration_since(Instant::now())
            });
            if Instant::now() + wait >= deadline {
                break;
            }
            tokio::time::sleep(wait).await;
        }
    }
    let left = table.buffered();
    summary.left_uncommitted = left as u64;
    let positions = table.known_positions();
    mirror_commit(ctx.kafka, &positions, CommitMode::Sync);
    info!(
        consumer = name,
        flushed = summary.records - committed_before,
        left_uncommitted = left,
        positions_committed = positions.len(),
        "shutdown: buffered batches flushed, positions committed to the group"
    );
    Ok(())
}

/// Takes a returned flush back into the loop's state: its partition's state goes back into the
/// table (with the records that arrived meanwhile, unless the flush moved the fetch position),
/// or is dropped when the partition's assignment changed since. Returns whether a paused
/// partition was resumed (see [`after_flush`]); a fatal error ends the consumer.
fn returned(
    ctx: &Ctx<'_>,
    done: Completion,
    table: &mut Partitions,
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
    let current = table.settle(&key, generation);
    let flush = result?;
    if !current {
        return Ok(false);
    }
    let seeked = matches!(flush, Flush::Seeked);
    let resumed = after_flush(ctx, &key, &mut state, flush, summary);
    table.restore(key, state, seeked);
    Ok(resumed)
}
