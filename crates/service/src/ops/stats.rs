//! Stats: audit decisions per consumer (dead letters by reason), positions against high
//! watermarks.

use std::time::Duration;

use ledgerflow_store::{DecisionCount, Store};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;

use crate::{KafkaClient, ServiceError};

/// A position of record and, when the broker answered, its lag.
#[derive(Debug, Serialize)]
pub struct PositionLag {
    /// Consumer.
    pub consumer: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset of record.
    pub next_offset: i64,
    /// High watermark.
    pub high_watermark: Option<i64>,
    /// high watermark - next offset.
    pub lag: Option<i64>,
}

/// The counts and positions.
#[derive(Debug, Serialize)]
pub struct StatsReport {
    /// Audit decisions per consumer and reason.
    pub decisions: Vec<DecisionCount>,
    /// Positions and lag.
    pub positions: Vec<PositionLag>,
}

/// Reads the counts and positions; with `kafka`, asks the broker for high watermarks (a
/// broker that does not answer leaves the lag unknown).
pub async fn stats(
    store: &Store,
    kafka: Option<&KafkaClient>,
    consumer: Option<&str>,
) -> Result<StatsReport, ServiceError> {
    let decisions = store
        .decision_counts(consumer)
        .await
        .map_err(ServiceError::store("counting decisions"))?;
    let positions = store
        .positions(consumer)
        .await
        .map_err(ServiceError::store("reading positions"))?;
    let watermarks: Option<BaseConsumer> = kafka.and_then(|k| {
        k.config("ledgerflow", &[("group.id", "ledgerflow-stats")])
            .create()
            .ok()
    });
    let positions = positions
        .into_iter()
        .map(|p| {
            let hi = watermarks.as_ref().and_then(|c| {
                c.fetch_watermarks(&p.topic, p.partition, Duration::from_secs(5))
                    .ok()
                    .map(|(_, hi)| hi)
            });
            PositionLag {
                lag: hi.map(|h| (h - p.next_offset).max(0)),
                high_watermark: hi,
                consumer: p.consumer,
                topic: p.topic,
                partition: p.partition,
                next_offset: p.next_offset,
            }
        })
        .collect();
    Ok(StatsReport {
        decisions,
        positions,
    })
}
