//! Pushing records that are not at the live position through the pipeline again: replays of
//! offset or time ranges and dead-letter retries.
//!
//! A redrive judges every record exactly as the live loop does ([`prepare_record`]: decode,
//! tenant checks, mapping) and commits through [`Store::commit_redrive`]: the same inbox,
//! effects, dead letters and audit chain, in one transaction per chunk, but without checking
//! or moving the consumer's positions. The inbox is what makes this safe: an event applied
//! before is a duplicate, an event id with another payload is an `idempotency_conflict`, so
//! nothing is ever posted twice however often an operator redrives it.
//!
//! [`plan`] classifies the same records without writing anything.

use std::collections::{BTreeMap, HashMap, HashSet};

use ledgerflow_codec::Decoder;
use ledgerflow_store::{BatchInput, ErasedConsumer, RecordOutcome, Store, StoreError};
use ledgerflow_tenants::TenantRegistry;
use serde::Serialize;

use crate::pipeline::{RawRecord, prepare_record};

/// Which records a redrive takes (others are read but left alone and not counted).
#[derive(Debug, Clone, Default)]
pub struct RedriveFilter {
    /// Only these tenants (empty: all). Records whose tenant is unknown (undecodable) are
    /// excluded when this is set.
    pub tenants: Vec<String>,
    /// Only these event types (empty: all).
    pub event_types: Vec<String>,
}

impl RedriveFilter {
    fn admits(&self, tenant: Option<&str>, event_type: Option<&str>) -> bool {
        let ok = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
        };
        ok(&self.tenants, tenant) && ok(&self.event_types, event_type)
    }
}

/// What a redrive would do (plan) or did (run), per tenant and event type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedriveCounts {
    /// New events: effects would be / were written.
    pub applied: u64,
    /// Already applied with the same payload: dedup hits, no effect.
    pub already_applied: u64,
    /// Same event id, different payload: dead-lettered as idempotency_conflict, no effect.
    pub conflicts: u64,
    /// Permanent failures (decode, tenant, mapping), by reason.
    pub dead_lettered: BTreeMap<String, u64>,
    /// Types this consumer does not act on.
    pub skipped: u64,
}

impl RedriveCounts {
    fn add(&mut self, other: &Self) {
        self.applied += other.applied;
        self.already_applied += other.already_applied;
        self.conflicts += other.conflicts;
        self.skipped += other.skipped;
        for (reason, n) in &other.dead_lettered {
            *self.dead_lettered.entry(reason.clone()).or_default() += n;
        }
    }

    /// Records counted.
    pub fn total(&self) -> u64 {
        self.applied
            + self.already_applied
            + self.conflicts
            + self.skipped
            + self.dead_lettered.values().sum::<u64>()
    }
}

/// Counts of one tenant and event type (`-` when the record did not decode that far).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedriveLine {
    /// Tenant.
    pub tenant: String,
    /// Event type.
    pub event_type: String,
    /// Counts.
    #[serde(flatten)]
    pub counts: RedriveCounts,
}

/// The result of a plan or a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    /// Records read from the source (before filters).
    pub read: u64,
    /// Records the filters admitted.
    pub selected: u64,
    /// Totals over the lines.
    pub totals: RedriveCounts,
    /// Per tenant and event type, sorted.
    pub lines: Vec<RedriveLine>,
    /// Open dead letters at the redriven coordinates that are now resolved (run only).
    pub resolved: u64,
}

impl RedriveReport {
    fn line_mut(&mut self, tenant: &str, event_type: &str) -> &mut RedriveCounts {
        let i = match self
            .lines
            .iter()
            .position(|l| l.tenant == tenant && l.event_type == event_type)
        {
            Some(i) => i,
            None => {
                self.lines.push(RedriveLine {
                    tenant: tenant.to_owned(),
                    event_type: event_type.to_owned(),
                    counts: RedriveCounts::default(),
                });
                self.lines.len() - 1
            }
        };
        &mut self.lines[i].counts
    }

    /// Counts one record on its line and in the totals.
    fn count(
        &mut self,
        tenant: Option<&str>,
        event_type: Option<&str>,
        f: impl FnOnce(&mut RedriveCounts),
    ) {
        let mut one = RedriveCounts::default();
        f(&mut one);
        self.line_mut(tenant.unwrap_or("-"), event_type.unwrap_or("-"))
            .add(&one);
        self.totals.add(&one);
    }

    fn finish(&mut self) {
        self.lines
            .sort_by(|a, b| (&a.tenant, &a.event_type).cmp(&(&b.tenant, &b.event_type)));
    }

    /// Adds another report (of a later chunk) to this one.
    pub fn merge(&mut self, other: RedriveReport) {
        self.read += other.read;
        self.selected += other.selected;
        self.resolved += other.resolved;
        self.totals.add(&other.totals);
        for line in other.lines {
            self.line_mut(&line.tenant, &line.event_type)
                .add(&line.counts);
        }
        self.finish();
    }
}

/// Why a redrive stopped.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    /// The registry (or another dependency) is unreachable: nothing of the chunk was written;
    /// run the command again when it is back.
    #[error("transient failure, nothing of this chunk was written: {0}")]
    Transient(String),
    /// The store failed.
    #[error("store error")]
    Store(#[from] StoreError),
}

/// The pipeline pieces a redrive needs.
#[derive(Clone, Copy)]
pub struct RedriveContext<'a> {
    /// The consumer whose pipeline judges the records.
    pub consumer: &'a dyn ErasedConsumer,
    /// Its store.
    pub store: &'a Store,
    /// Decoder (registry client and cache).
    pub decoder: &'a Decoder,
    /// Tenants as they are now.
    pub tenants: &'a TenantRegistry,
}

impl std::fmt::Debug for RedriveContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedriveContext")
            .field("consumer", &self.consumer.name())
            .finish_non_exhaustive()
    }
}

/// Judges records (all of one partition, in offset order) and keeps those the filter admits.
async fn prepare(
    ctx: &RedriveContext<'_>,
    records: Vec<RawRecord>,
    filter: &RedriveFilter,
) -> Result<(u64, Vec<RecordOutcome>), RedriveError> {
    let read = records.len() as u64;
    let mut kept = Vec::with_capacity(records.len());
    for raw in records {
        let outcome = prepare_record(ctx.decoder, ctx.tenants, ctx.consumer, raw)
            .await
            .map_err(|f| RedriveError::Transient(f.to_string()))?;
        let (tenant, event_type) = identity(&outcome);
        if filter.admits(tenant.as_deref(), event_type.as_deref()) {
            kept.push(outcome);
        }
    }
    Ok((read, kept))
}

fn identity(outcome: &RecordOutcome) -> (Option<String>, Option<String>) {
    match outcome {
        RecordOutcome::Mapped { envelope, .. } => (
            Some(envelope.meta.tenant_id.to_string()),
            Some(envelope.meta.event_type.as_str().to_owned()),
        ),
        RecordOutcome::Skipped(s) => (
            Some(s.envelope.meta.tenant_id.to_string()),
            Some(s.envelope.meta.event_type.as_str().to_owned()),
        ),
        RecordOutcome::DeadLetter(d) => (d.tenant_id.clone(), d.event_type.clone()),
    }
}

/// Classifies prepared records against the inbox as it is now; `seen` carries event ids
/// already counted as new earlier in the same plan (a later copy is a dedup hit).
async fn classify(
    ctx: &RedriveContext<'_>,
    outcomes: &[RecordOutcome],
    seen: &mut HashSet<String>,
    report: &mut RedriveReport,
) -> Result<(), RedriveError> {
    let ids: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            RecordOutcome::Mapped { envelope, .. } => Some(envelope.meta.event_id.to_string()),
            _ => None,
        })
        .collect();
    let stored: HashMap<String, String> = ctx.store.inbox_hashes(ctx.consumer.name(), &ids).await?;
    let mut planned: HashMap<String, String> = HashMap::new();
    for outcome in outcomes {
        let (tenant, event_type) = identity(outcome);
        let (tenant, event_type) = (tenant.as_deref(), event_type.as_deref());
        match outcome {
            RecordOutcome::Mapped { envelope, .. } => {
                let id = envelope.meta.event_id.to_string();
                let hash = hex_of(&envelope.payload_hash);
                let known = stored.get(&id).or_else(|| planned.get(&id));
                match known {
                    Some(h) if *h == hash => {
                        report.count(tenant, event_type, |c| c.already_applied += 1)
                    }
                    Some(_) => report.count(tenant, event_type, |c| c.conflicts += 1),
                    None if seen.contains(&id) => {
                        report.count(tenant, event_type, |c| c.already_applied += 1);
                    }
                    None => {
                        seen.insert(id.clone());
                        planned.insert(id, hash);
                        report.count(tenant, event_type, |c| c.applied += 1);
                    }
                }
            }
            RecordOutcome::Skipped(_) => report.count(tenant, event_type, |c| c.skipped += 1),
            RecordOutcome::DeadLetter(d) => report.count(tenant, event_type, |c| {
                *c.dead_lettered
                    .entry(d.reason.as_str().to_owned())
                    .or_default() += 1;
            }),
        }
    }
    Ok(())
}

fn hex_of(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            // Writing into a String cannot fail.
            write!(s, "{b:02x}").ok();
            s
        })
}

/// Classifies one partition's records without writing anything. Call it chunk by chunk with
/// the same `seen` set for a whole range.
pub async fn plan_chunk(
    ctx: &RedriveContext<'_>,
    records: Vec<RawRecord>,
    filter: &RedriveFilter,
    seen: &mut HashSet<String>,
) -> Result<RedriveReport, RedriveError> {
    let (read, outcomes) = prepare(ctx, records, filter).await?;
    let mut report = RedriveReport {
        read,
        selected: outcomes.len() as u64,
        ..Default::default()
    };
    classify(ctx, &outcomes, seen, &mut report).await?;
    report.finish();
    Ok(report)
}

/// Pushes one partition's records (offset order) through the pipeline and commits them as a
/// redrive of `operation`. The report's lines classify the records as the inbox stood just
/// before the commit; its totals are the commit's own counts.
pub async fn run_chunk(
    ctx: &RedriveContext<'_>,
    records: Vec<RawRecord>,
    filter: &RedriveFilter,
    operation: &str,
) -> Result<RedriveReport, RedriveError> {
    let Some((topic, partition)) = records.first().map(|r| (r.topic.clone(), r.partition)) else {
        return Ok(RedriveReport::default());
    };
    let next_offset = records.last().map_or(0, |r| r.offset + 1);
    let (read, outcomes) = prepare(ctx, records, filter).await?;
    let mut report = RedriveReport {
        read,
        selected: outcomes.len() as u64,
        ..Default::default()
    };
    if outcomes.is_empty() {
        return Ok(report);
    }
    let mut seen = HashSet::new();
    classify(ctx, &outcomes, &mut seen, &mut report).await?;
    let outcome = ctx
        .store
        .commit_redrive(
            ctx.consumer,
            BatchInput {
                topic,
                partition,
                records: outcomes,
                next_offset,
            },
            operation,
        )
        .await?;
    report.resolved = outcome.resolved;
    // The commit is the truth for the totals (a concurrent live batch may have applied an
    // event between the classification and the commit).
    report.totals.applied = outcome.applied;
    report.totals.already_applied = outcome.duplicates;
    report.totals.conflicts = outcome.conflicts;
    report.totals.skipped = outcome.skipped;
    report.finish();
    Ok(report)
}
