//! Replay: re-read a range of a consumer's topics outside its group and judge it (plan) or
//! push it through the same pipeline again (run), without moving the live group's positions.
//! The inbox guarantees that nothing is posted twice.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use ledgerflow_runtime::{
    RawRecord, RedriveContext, RedriveFilter, RedriveReport, plan_chunk, run_chunk,
};
use serde::Serialize;
use tokio::sync::mpsc;

use super::range::{Span, read_spans};
use super::{Actor, Progress, new_operation_id, record};
use crate::kafka::{offsets_for_time, topic_partitions, watermarks};
use crate::{ConsumerKind, Pipeline, ServiceError};

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// Whose pipeline judges the records.
    pub consumer: ConsumerKind,
    /// Only these tenants (none: all).
    pub tenants: Vec<String>,
    /// Only these event types (none: all).
    pub event_types: Vec<String>,
    /// Range start by record time (micros, inclusive); with `from_audit`, audit time.
    pub from: Option<i64>,
    /// Range end by record time (exclusive; default: the end of each partition).
    pub to: Option<i64>,
    /// Offset range instead: this partition of the one configured topic.
    pub partition: Option<i32>,
    /// First offset (inclusive), with `partition`.
    pub from_offset: Option<i64>,
    /// Last offset (inclusive), with `partition`.
    pub to_offset: Option<i64>,
    /// Exactly the coordinates the audit log recorded.
    pub from_audit: bool,
    /// Push the records through (None: only plan).
    pub run: Option<ReplayRun>,
}

/// A replay that writes.
#[derive(Debug, Clone)]
pub struct ReplayRun {
    /// Who and why (audited).
    pub actor: Actor,
    /// Stop after this many selected events.
    pub max_events: Option<u64>,
    /// Selected events per second at most.
    pub rate: Option<f64>,
}

/// Coordinates the audit log recorded but the broker did not deliver.
#[derive(Debug, Clone, Serialize)]
pub struct Unavailable {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Event id, when the audit log has it.
    pub event_id: Option<String>,
}

/// What a replay did or would do.
#[derive(Debug, Serialize)]
pub struct ReplayReport {
    /// `plan` or `run`.
    pub mode: &'static str,
    /// The consumer.
    pub consumer: ConsumerKind,
    /// The audited operation (runs only).
    pub operation_id: Option<String>,
    /// What was read.
    pub spans: Vec<Span>,
    /// Counts per tenant and event type.
    #[serde(flatten)]
    pub report: RedriveReport,
    /// Audit-recorded records the broker no longer has.
    pub unavailable_count: usize,
    /// The first 100 of them.
    pub unavailable: Vec<Unavailable>,
}

/// Per partition, the audit-recorded offsets still wanted, with their event ids.
type Wanted = BTreeMap<(String, i32), BTreeMap<i64, Option<String>>>;

/// Plans or runs a replay.
pub async fn replay(
    pipeline: &Pipeline,
    req: &ReplayRequest,
    progress: &dyn Progress,
) -> Result<ReplayReport, ServiceError> {
    let consumer = pipeline.consumer(req.consumer).await?;
    let settings = &pipeline.settings;
    let kafka = settings.kafka().assign_only(
        "ledgerflow-tools",
        &format!("{}.tools", settings.group_prefix),
        &[],
    )?;
    let (spans, mut wanted) = spans(req, pipeline, &kafka).await?;
    // Records whose dedup rows retention pruned would be applied a second time.
    let horizons = pipeline
        .store
        .inbox_horizons(Some(req.consumer.name()))
        .await
        .map_err(ServiceError::store("reading the retention horizons"))?;
    super::retention::refuse_below_horizon(req.consumer.name(), &horizons, &spans)?;
    progress.start(spans.iter().map(Span::len).sum());
    let filter = RedriveFilter {
        tenants: req.tenants.clone(),
        event_types: req.event_types.clone(),
    };
    let ctx = RedriveContext {
        consumer: consumer.as_ref(),
        store: &pipeline.store,
        decoder: &pipeline.decoder,
        tenants: &pipeline.tenants,
    };
    let operation = req.run.as_ref().map(|_| new_operation_id());
    let filters = serde_json::json!({
        "tenants": req.tenants,
        "event_types": req.event_types,
        "from": req.from,
        "to": req.to,
        "from_audit": req.from_audit,
        "spans": spans,
    });
    let name = req.consumer.name();
    if let (Some(run), Some(id)) = (&req.run, &operation) {
        let details = serde_json::json!({"phase": "started", "filters": filters});
        record(&pipeline.store, id, name, "replay_run", &run.actor, details).await?;
    }

    let redrive = |source| ServiceError::Redrive {
        context: "replaying records".to_owned(),
        source,
    };
    let (tx, mut rx) = mpsc::channel::<Vec<RawRecord>>(4);
    let reader = read_spans(kafka, spans.clone(), tx);
    let mut report = RedriveReport::default();
    let mut seen = HashSet::new();
    let started = Instant::now();
    let mut stopped_early = false;
    'chunks: while let Some(mut chunk) = rx.recv().await {
        progress.advance(chunk.len() as u64);
        if let Some(w) = wanted.as_mut() {
            chunk.retain(|r| {
                w.get_mut(&(r.topic.clone(), r.partition))
                    .is_some_and(|offsets| offsets.remove(&r.offset).is_some())
            });
        }
        let Some(opts) = &req.run else {
            report.merge(
                plan_chunk(&ctx, chunk, &filter, &mut seen)
                    .await
                    .map_err(redrive)?,
            );
            continue;
        };
        let id = operation.as_deref().unwrap_or_default();
        while !chunk.is_empty() {
            let room = opts.max_events.map_or(usize::MAX, |m| {
                usize::try_from(m.saturating_sub(report.selected)).unwrap_or(usize::MAX)
            });
            if room == 0 {
                stopped_early = true;
                break 'chunks;
            }
            let rest = chunk.split_off(chunk.len().min(room));
            let piece = std::mem::replace(&mut chunk, rest);
            report.merge(run_chunk(&ctx, piece, &filter, id).await.map_err(redrive)?);
            if let Some(rate) = opts.rate {
                let due = Duration::from_secs_f64(report.selected as f64 / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    drop(rx);
    reader
        .await
        .map_err(|e| ServiceError::Request(format!("the Kafka reader stopped: {e}")))??;

    let unavailable: Vec<Unavailable> = if stopped_early {
        Vec::new()
    } else {
        wanted
            .unwrap_or_default()
            .into_iter()
            .flat_map(|((topic, partition), offsets)| {
                offsets
                    .into_iter()
                    .map(move |(offset, event_id)| Unavailable {
                        topic: topic.clone(),
                        partition,
                        offset,
                        event_id,
                    })
            })
            .collect()
    };
    if let (Some(run), Some(id)) = (&req.run, &operation) {
        let details = serde_json::json!({
            "phase": "finished",
            "filters": filters,
            "read": report.read,
            "selected": report.selected,
            "totals": report.totals,
            "resolved_dead_letters": report.resolved,
            "unavailable": unavailable.len(),
            "stopped_at_max_events": stopped_early,
        });
        record(&pipeline.store, id, name, "replay_run", &run.actor, details).await?;
    }
    Ok(ReplayReport {
        mode: if req.run.is_some() { "run" } else { "plan" },
        consumer: req.consumer,
        operation_id: operation,
        spans,
        report,
        unavailable_count: unavailable.len(),
        unavailable: unavailable.into_iter().take(100).collect(),
    })
}

/// The partitions and offsets to read, and (with `from_audit`) the exact offsets wanted.
async fn spans(
    req: &ReplayRequest,
    pipeline: &Pipeline,
    kafka: &rdkafka::consumer::BaseConsumer,
) -> Result<(Vec<Span>, Option<Wanted>), ServiceError> {
    let topics = &pipeline.settings.topics;
    if let Some(partition) = req.partition {
        let [topic] = topics.as_slice() else {
            return Err(ServiceError::Request(format!(
                "--partition needs exactly one --topic (got {topics:?})"
            )));
        };
        if topic.starts_with('^') {
            return Err(ServiceError::Request(format!(
                "--partition needs a topic name, not the pattern {topic}"
            )));
        }
        let (low, high) = watermarks(kafka, topic, partition)?;
        let start = req.from_offset.unwrap_or(low).max(low);
        let end = req
            .to_offset
            .map_or(high, |o| o.saturating_add(1))
            .min(high);
        let span = Span {
            topic: topic.clone(),
            partition,
            start,
            end: end.max(start),
        };
        return Ok((vec![span], None));
    }
    if req.from_audit {
        let wanted = audit_coordinates(req, pipeline).await?;
        let spans = wanted
            .iter()
            .filter_map(|((topic, partition), offsets)| {
                let (first, last) = (offsets.keys().next()?, offsets.keys().next_back()?);
                Some(Span {
                    topic: topic.clone(),
                    partition: *partition,
                    start: *first,
                    end: last + 1,
                })
            })
            .collect();
        return Ok((spans, Some(wanted)));
    }
    let Some(from) = req.from else {
        return Err(ServiceError::Request(
            "give a range: --from TIME [--to TIME], or --partition P --from-offset O [--to-offset O] with one --topic, or --from-audit".to_owned(),
        ));
    };
    let parts = topic_partitions(kafka, topics)?;
    let starts = offsets_for_time(kafka, &parts, from)?;
    let ends = match req.to {
        Some(to) => Some(offsets_for_time(kafka, &parts, to)?),
        None => None,
    };
    let mut spans = Vec::new();
    for (topic, partition) in parts {
        let key = (topic.clone(), partition);
        let start = starts.get(&key).copied().unwrap_or(0);
        let end = match ends.as_ref().and_then(|e| e.get(&key)) {
            Some(end) => *end,
            None => watermarks(kafka, &topic, partition)?.1,
        };
        spans.push(Span {
            topic,
            partition,
            start,
            end: end.max(start),
        });
    }
    Ok((spans, None))
}

/// The coordinates the audit log holds for the consumer (one per offset, whatever the number of
/// decisions recorded there), filtered by tenant, type and audit time.
async fn audit_coordinates(
    req: &ReplayRequest,
    pipeline: &Pipeline,
) -> Result<Wanted, ServiceError> {
    let rows = pipeline
        .store
        .audit_coordinates(req.consumer.name(), req.from, req.to)
        .await
        .map_err(ServiceError::store(
            "reading coordinates from the audit log",
        ))?;
    let tenants: BTreeSet<&str> = req.tenants.iter().map(String::as_str).collect();
    let types: BTreeSet<&str> = req.event_types.iter().map(String::as_str).collect();
    let admit = |set: &BTreeSet<&str>, v: &Option<String>| {
        set.is_empty() || v.as_deref().is_some_and(|v| set.contains(v))
    };
    let mut wanted: Wanted = BTreeMap::new();
    for row in rows {
        if !admit(&tenants, &row.tenant_id) || !admit(&types, &row.event_type) {
            continue;
        }
        wanted
            .entry((row.topic, row.partition))
            .or_default()
            .entry(row.offset)
            .or_insert(row.event_id);
    }
    Ok(wanted)
}
