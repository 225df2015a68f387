//! Offsets: a consumer's positions of record (database) beside its group's committed offsets
//! (Kafka) and the partitions' watermarks; and moving them, both together, as a dry run unless
//! executed. The database positions are written first (they rule); the group commit mirrors
//! them.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::{Actor, new_operation_id, record};
use crate::kafka::{METADATA_TIMEOUT, offsets_for_time, topic_partitions, watermarks};
use crate::{ConsumerKind, ServiceError, Settings};

/// One partition's picture.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionView {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset of record (database); none before the first batch.
    pub position: Option<i64>,
    /// The group's committed offset (Kafka mirror); none when never committed.
    pub group_offset: Option<i64>,
    /// Low watermark.
    pub low_watermark: i64,
    /// High watermark.
    pub high_watermark: i64,
    /// high watermark - position (position: the low watermark when none).
    pub lag: i64,
}

/// Where to move the positions.
#[derive(Debug, Clone, PartialEq)]
pub enum ResetTarget {
    /// The first offset at or after this time (micros), asked of the broker.
    Time(i64),
    /// These partitions to these offsets; others are left alone.
    Offsets(Vec<(i32, i64)>),
    /// By N records (negative: rewind), clamped to the watermarks.
    Shift(i64),
    /// The earliest offset the broker holds.
    Earliest,
    /// The end of each partition.
    Latest,
}

/// A reset request.
#[derive(Debug, Clone)]
pub struct ResetRequest {
    /// The consumer.
    pub consumer: ConsumerKind,
    /// Where to.
    pub target: ResetTarget,
    /// Only this partition.
    pub partition: Option<i32>,
    /// Apply (default: a dry run).
    pub execute: bool,
    /// Proceed despite live members or forward moves.
    pub force: bool,
    /// Who and why (audited).
    pub actor: Actor,
}

/// One partition's planned move.
#[derive(Debug, Clone, Serialize)]
pub struct Move {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The position of record now.
    pub current: Option<i64>,
    /// The new position.
    pub new: i64,
    /// Records between new and current: re-read (rewind) or never processed (forward).
    pub records: i64,
    /// Of the re-read records, events the inbox already holds (dedup hits on restart).
    pub already_applied: i64,
    /// The move skips records that were never processed.
    pub forward: bool,
}

/// Why an executed reset was refused (bad usage; nothing moved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Partitions would move forward past unprocessed records.
    Forward(usize),
    /// The group has live members.
    LiveMembers {
        /// The group.
        group: String,
        /// How many.
        live: usize,
    },
    /// The broker could not say whether the group has live members.
    UnknownMembers {
        /// The group.
        group: String,
        /// The broker's answer.
        error: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Forward(n) => write!(
                f,
                "refusing: {n} partition(s) would move forward, and the records in between would never be processed; pass --force to skip them on purpose"
            ),
            Self::LiveMembers { group, live } => write!(
                f,
                "refusing: group {group} has {live} live member(s); stop the consumer first (or pass --force)"
            ),
            Self::UnknownMembers { group, error } => write!(
                f,
                "refusing: cannot tell whether group {group} has live members ({error}); stop the consumer and pass --force"
            ),
        }
    }
}

/// What a reset did or would do.
#[derive(Debug, Serialize)]
pub struct ResetReport {
    /// The consumer.
    pub consumer: ConsumerKind,
    /// Whether the moves were applied.
    pub executed: bool,
    /// The audited operation, when executed.
    pub operation_id: Option<String>,
    /// The moves.
    pub moves: Vec<Move>,
    /// What happened to the Kafka group commit.
    pub kafka_mirror: Option<String>,
    /// Set when `--execute` was refused.
    #[serde(skip)]
    pub refused: Option<Refusal>,
}

fn group_client(settings: &Settings, group: &str) -> Result<BaseConsumer, ServiceError> {
    settings
        .kafka()
        .config(
            "ledgerflow-offsets",
            &[("group.id", group), ("enable.auto.commit", "false")],
        )
        .create()
        .map_err(ServiceError::kafka("creating a Kafka client for the group"))
}

fn tool_client(settings: &Settings) -> Result<BaseConsumer, ServiceError> {
    settings.kafka().assign_only(
        "ledgerflow-tools",
        &format!("{}.tools", settings.group_prefix),
        &[],
    )
}

/// Positions, group offsets and watermarks of every partition of the consumer's topics.
pub async fn show(
    settings: &Settings,
    store: &ledgerflow_store::Store,
    consumer: ConsumerKind,
    only: Option<i32>,
) -> Result<Vec<PartitionView>, ServiceError> {
    let kafka = tool_client(settings)?;
    let mut parts = topic_partitions(&kafka, &settings.topics)?;
    if let Some(p) = only {
        parts.retain(|(_, q)| *q == p);
    }
    let positions: BTreeMap<(String, i32), i64> = store
        .positions(Some(consumer.name()))
        .await
        .map_err(ServiceError::store("reading positions"))?
        .into_iter()
        .map(|p| ((p.topic, p.partition), p.next_offset))
        .collect();
    let group = group_client(settings, &format!("{}.{consumer}", settings.group_prefix))?;
    let mut tpl = TopicPartitionList::new();
    for (t, p) in &parts {
        tpl.add_partition(t, *p);
    }
    let committed: BTreeMap<(String, i32), i64> =
        tokio::task::block_in_place(|| group.committed_offsets(tpl, METADATA_TIMEOUT))
            .map(|list| {
                list.elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the group's committed offsets");
                BTreeMap::new()
            });
    let mut out = Vec::new();
    for (topic, partition) in parts {
        let (low, high) = tokio::task::block_in_place(|| watermarks(&kafka, &topic, partition))?;
        let key = (topic.clone(), partition);
        let position = positions.get(&key).copied();
        out.push(PartitionView {
            topic,
            partition,
            position,
            group_offset: committed.get(&key).copied(),
            low_watermark: low,
            high_watermark: high,
            lag: high - position.unwrap_or(low),
        });
    }
    Ok(out)
}

/// Plans the moves and, when asked and allowed, applies them.
pub async fn reset(
    settings: &Settings,
    store: &ledgerflow_store::Store,
    req: &ResetRequest,
) -> Result<ResetReport, ServiceError> {
    let consumer = req.consumer.name();
    let views = show(settings, store, req.consumer, req.partition).await?;
    let kafka = tool_client(settings)?;
    let by_time = match req.target {
        ResetTarget::Time(t) => {
            let parts: Vec<(String, i32)> = views
                .iter()
                .map(|v| (v.topic.clone(), v.partition))
                .collect();
            Some(tokio::task::block_in_place(|| {
                offsets_for_time(&kafka, &parts, t)
            })?)
        }
        _ => None,
    };
    let mut moves = Vec::new();
    for v in &views {
        let from = v.position.unwrap_or(v.low_watermark);
        let target = match &req.target {
            ResetTarget::Time(_) => by_time
                .as_ref()
                .and_then(|times| times.get(&(v.topic.clone(), v.partition)).copied()),
            ResetTarget::Offsets(offsets) => offsets
                .iter()
                .find(|(p, _)| *p == v.partition)
                .map(|(_, o)| *o),
            ResetTarget::Shift(n) => Some(from.saturating_add(*n)),
            ResetTarget::Earliest => Some(v.low_watermark),
            ResetTarget::Latest => Some(v.high_watermark),
        };
        let Some(new) = target.map(|t| t.clamp(v.low_watermark, v.high_watermark)) else {
            continue;
        };
        // No position yet: the consumer would start at the low watermark.
        if new == from {
            continue;
        }
        let (lo, hi) = (new.min(from), new.max(from));
        let already_applied = if new < from {
            store
                .inbox_count(consumer, &v.topic, v.partition, lo, hi)
                .await
                .map_err(ServiceError::store(
                    "counting applied events in the rewound range",
                ))?
        } else {
            0
        };
        moves.push(Move {
            topic: v.topic.clone(),
            partition: v.partition,
            current: v.position,
            new,
            records: hi - lo,
            already_applied,
            forward: new > from,
        });
    }
    let mut out = ResetReport {
        consumer: req.consumer,
        executed: false,
        operation_id: None,
        moves,
        kafka_mirror: None,
        refused: None,
    };
    if !req.execute || out.moves.is_empty() {
        return Ok(out);
    }
    let forward = out.moves.iter().filter(|m| m.forward).count();
    if forward > 0 && !req.force {
        out.refused = Some(Refusal::Forward(forward));
        return Ok(out);
    }
    let group = format!("{}.{consumer}", settings.group_prefix);
    let client = group_client(settings, &group)?;
    match tokio::task::block_in_place(|| client.fetch_group_list(Some(&group), METADATA_TIMEOUT)) {
        Ok(list) => {
            let live: usize = list
                .groups()
                .iter()
                .filter(|g| g.name() == group)
                .map(|g| g.members().len())
                .sum();
            if live > 0 && !req.force {
                out.refused = Some(Refusal::LiveMembers { group, live });
                return Ok(out);
            }
        }
        Err(e) if !req.force => {
            out.refused = Some(Refusal::UnknownMembers {
                group,
                error: e.to_string(),
            });
            return Ok(out);
        }
        Err(_) => {}
    }
    let operation = new_operation_id();
    let positions: Vec<(String, i32, i64)> = out
        .moves
        .iter()
        .map(|m| (m.topic.clone(), m.partition, m.new))
        .collect();
    store
        .set_positions(consumer, &positions)
        .await
        .map_err(ServiceError::store("moving the positions of record"))?;
    let mut tpl = TopicPartitionList::new();
    for m in &out.moves {
        tpl.add_partition_offset(&m.topic, m.partition, Offset::Offset(m.new))
            .map_err(ServiceError::kafka("building the group commit"))?;
    }
    out.kafka_mirror = Some(
        match tokio::task::block_in_place(|| client.commit(&tpl, CommitMode::Sync)) {
            Ok(()) => "committed".to_owned(),
            // The database is the position of record; the runtime seeks to it. The group
            // offset is only a mirror for lag tooling.
            Err(e) => format!("not committed ({e}); the database positions rule"),
        },
    );
    let details = serde_json::json!({ "moves": out.moves, "forced": req.force });
    record(
        store,
        &operation,
        consumer,
        "offsets_reset",
        &req.actor,
        details,
    )
    .await?;
    out.executed = true;
    out.operation_id = Some(operation);
    Ok(out)
}
