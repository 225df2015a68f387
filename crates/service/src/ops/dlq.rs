//! Dead letters: list and show them, re-drive them through the pipeline after a fix (a tenant
//! onboarded, a schema registered), or discard them with a reason. Retry and discard are
//! audited and idempotent.

use std::collections::BTreeMap;

use ledgerflow_core::{ReasonCode, error_chain};
use ledgerflow_runtime::{
    RawRecord, RedriveContext, RedriveCounts, RedriveFilter, RedriveReport, run_chunk,
};
use ledgerflow_store::{DeadLetter, DeadLetterFilter, DeadLetterStatus, Store};
use serde::Serialize;

use super::{Actor, CHUNK, new_operation_id, record};
use crate::{ConsumerKind, Pipeline, ServiceError};

/// Dead letters matching `filter`, oldest first.
pub async fn list(
    store: &Store,
    filter: &DeadLetterFilter,
) -> Result<Vec<DeadLetter>, ServiceError> {
    store
        .dead_letters(filter)
        .await
        .map_err(ServiceError::store("listing dead letters"))
}

async fn letter(store: &Store, id: &str) -> Result<DeadLetter, ServiceError> {
    store
        .dead_letter(id)
        .await
        .map_err(ServiceError::store("reading a dead letter"))?
        .ok_or_else(|| ServiceError::Request(format!("no dead letter with id {id}")))
}

/// One dead letter, its payload decoded when it decodes now.
#[derive(Debug, Serialize)]
pub struct Shown {
    /// The letter.
    #[serde(flatten)]
    pub letter: DeadLetter,
    /// Raw key, base64.
    pub key_base64: Option<String>,
    /// Raw value, base64.
    pub value_base64: Option<String>,
    /// Value size.
    pub value_bytes: usize,
    /// The event as JSON when the value decodes now.
    pub decoded: Option<serde_json::Value>,
    /// Else why not.
    pub decode_error: Option<String>,
}

/// Reads a dead letter and decodes its value with the current registry.
pub async fn show(pipeline: &Pipeline, id: &str) -> Result<Shown, ServiceError> {
    let letter = letter(&pipeline.store, id).await?;
    let (decoded, decode_error) = match letter.value.as_deref() {
        None => (None, Some("no value (tombstone)".to_owned())),
        Some(bytes) => match pipeline.decoder.decode(bytes).await {
            Ok(d) => (serde_json::to_value(&d.event).ok(), None),
            Err(e) => (None, Some(error_chain(&e))),
        },
    };
    Ok(Shown {
        key_base64: letter.key.as_deref().map(base64),
        value_base64: letter.value.as_deref().map(base64),
        value_bytes: letter.value.as_ref().map_or(0, Vec::len),
        decoded,
        decode_error,
        letter,
    })
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Which dead letters to retry.
#[derive(Debug, Clone)]
pub enum RetrySelection {
    /// These ids (only the open ones are retried; the others are reported).
    Ids(Vec<String>),
    /// Every open dead letter matching the filter.
    Matching(DeadLetterFilter),
}

/// Where a retried dead letter stands afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetriedStatus {
    /// Still failing.
    Open,
    /// Now another decision.
    Resolved,
    /// Discarded meanwhile.
    Discarded,
    /// Gone from the store.
    Missing,
}

/// What happened to one retried dead letter.
#[derive(Debug, Serialize)]
pub struct RetryLine {
    /// Id.
    pub id: String,
    /// Consumer.
    pub consumer: String,
    /// `topic/partition@offset`.
    pub coordinates: String,
    /// The reason before the retry.
    pub reason_before: ReasonCode,
    /// Where it stands now.
    pub status: RetriedStatus,
    /// The reason now, when still open.
    pub reason_now: Option<ReasonCode>,
}

/// What a retry did.
#[derive(Debug, Serialize)]
pub struct RetryReport {
    /// The audited operation (none when nothing was retried).
    pub operation_id: Option<String>,
    /// Dead letters retried.
    pub targeted: usize,
    /// Of them, resolved.
    pub resolved: usize,
    /// Of them, still open.
    pub still_open: usize,
    /// Named ids that were not open (`id (status)`), left alone.
    pub already_closed: Vec<String>,
    /// Decisions of the redrive.
    pub totals: RedriveCounts,
    /// Per dead letter.
    pub letters: Vec<RetryLine>,
}

fn raw_record(d: &DeadLetter) -> Result<RawRecord, ServiceError> {
    let headers: Vec<(String, Option<String>)> = serde_json::from_str(&d.headers).map_err(|e| {
        ServiceError::Request(format!("dead letter {}: unreadable headers: {e}", d.id))
    })?;
    Ok(RawRecord {
        topic: d.topic.clone(),
        partition: d.partition,
        offset: d.offset,
        key: d.key.clone(),
        value: d.value.clone(),
        headers,
    })
}

/// Re-runs open dead letters through the pipeline; each one that now gets another decision is
/// resolved.
pub async fn retry(
    pipeline: &Pipeline,
    selection: &RetrySelection,
    actor: &Actor,
) -> Result<RetryReport, ServiceError> {
    let store = &pipeline.store;
    let mut already_closed = Vec::new();
    let letters: Vec<DeadLetter> = match selection {
        RetrySelection::Matching(filter) => {
            let mut filter = filter.clone();
            filter.status = Some(DeadLetterStatus::Open);
            list(store, &filter).await?
        }
        RetrySelection::Ids(ids) => {
            let mut out = Vec::new();
            for id in ids {
                let d = letter(store, id).await?;
                if d.status == DeadLetterStatus::Open {
                    out.push(d);
                } else {
                    already_closed.push(format!("{} ({})", d.id, d.status));
                }
            }
            out
        }
    };
    if letters.is_empty() {
        return Ok(RetryReport {
            operation_id: None,
            targeted: 0,
            resolved: 0,
            still_open: 0,
            already_closed,
            totals: RedriveCounts::default(),
            letters: Vec::new(),
        });
    }
    let operation = new_operation_id();
    // By consumer, then partition, in offset order: each group is one redrive transaction.
    let mut groups: BTreeMap<(String, String, i32), Vec<&DeadLetter>> = BTreeMap::new();
    for d in &letters {
        groups
            .entry((d.consumer.clone(), d.topic.clone(), d.partition))
            .or_default()
            .push(d);
    }
    let mut report = RedriveReport::default();
    for ((consumer_name, _, _), mut group) in groups {
        group.sort_by_key(|d| d.offset);
        let kind = ConsumerKind::parse(&consumer_name).map_err(ServiceError::Request)?;
        let consumer = pipeline.consumer(kind).await?;
        let ctx = RedriveContext {
            consumer: consumer.as_ref(),
            store,
            decoder: &pipeline.decoder,
            tenants: &pipeline.tenants,
        };
        let records = group
            .iter()
            .map(|d| raw_record(d))
            .collect::<Result<Vec<_>, _>>()?;
        for chunk in records.chunks(CHUNK) {
            let done = run_chunk(&ctx, chunk.to_vec(), &RedriveFilter::default(), &operation)
                .await
                .map_err(|source| ServiceError::Redrive {
                    context: "re-driving dead letters".to_owned(),
                    source,
                })?;
            report.merge(done);
        }
    }
    let mut lines = Vec::new();
    for d in &letters {
        let now = store
            .dead_letter(&d.id)
            .await
            .map_err(ServiceError::store("reading a dead letter"))?;
        let (status, reason_now) = match now {
            Some(n) => match n.status {
                DeadLetterStatus::Open => (RetriedStatus::Open, Some(n.reason)),
                DeadLetterStatus::Resolved => (RetriedStatus::Resolved, None),
                DeadLetterStatus::Discarded => (RetriedStatus::Discarded, None),
            },
            None => (RetriedStatus::Missing, None),
        };
        lines.push(RetryLine {
            id: d.id.clone(),
            consumer: d.consumer.clone(),
            coordinates: format!("{}/{}@{}", d.topic, d.partition, d.offset),
            reason_before: d.reason,
            status,
            reason_now,
        });
    }
    let count = |consumer: Option<&str>, status: RetriedStatus| {
        lines
            .iter()
            .filter(|l| consumer.is_none_or(|c| l.consumer == c) && l.status == status)
            .count()
    };
    let mut consumers_touched: Vec<&str> = letters.iter().map(|d| d.consumer.as_str()).collect();
    consumers_touched.sort_unstable();
    consumers_touched.dedup();
    for consumer in consumers_touched {
        let ids: Vec<&str> = letters
            .iter()
            .filter(|d| d.consumer == consumer)
            .map(|d| d.id.as_str())
            .collect();
        let details = serde_json::json!({
            "dead_letters": ids,
            "resolved": count(Some(consumer), RetriedStatus::Resolved),
            "still_open": count(Some(consumer), RetriedStatus::Open),
            "totals": report.totals,
        });
        record(store, &operation, consumer, "dlq_retry", actor, details).await?;
    }
    Ok(RetryReport {
        operation_id: Some(operation),
        targeted: letters.len(),
        resolved: count(None, RetriedStatus::Resolved),
        still_open: count(None, RetriedStatus::Open),
        already_closed,
        totals: report.totals,
        letters: lines,
    })
}

/// What a discard did.
#[derive(Debug)]
pub enum Discarded {
    /// Discarded, audited as this operation.
    Done {
        /// The letter as it was.
        letter: DeadLetter,
        /// The operation id.
        operation_id: String,
    },
    /// It was not open: nothing changed.
    NotOpen(DeadLetter),
}

/// Marks an open dead letter discarded.
pub async fn discard(store: &Store, id: &str, actor: &Actor) -> Result<Discarded, ServiceError> {
    let letter = letter(store, id).await?;
    let changed = store
        .discard_dead_letter(id)
        .await
        .map_err(ServiceError::store("discarding a dead letter"))?;
    if !changed {
        return Ok(Discarded::NotOpen(letter));
    }
    let operation_id = new_operation_id();
    let details = serde_json::json!({
        "dead_letter": letter.id,
        "coordinates": format!("{}/{}@{}", letter.topic, letter.partition, letter.offset),
        "reason_code": letter.reason,
        "event_id": letter.event_id,
    });
    record(
        store,
        &operation_id,
        &letter.consumer,
        "dlq_discard",
        actor,
        details,
    )
    .await?;
    Ok(Discarded::Done {
        letter,
        operation_id,
    })
}
