//! One batch of one partition, committed in one transaction.
//!
//! Order inside the transaction, and why:
//! 1. Position check: the stored next offset must not be past the batch's first offset. If it
//!    is, another instance (or an earlier run) already committed these offsets: the batch is
//!    stale and is dropped ([`BatchOutcome::stale`]) — this fences a consumer that lost its
//!    partition in a rebalance but still holds a batch.
//! 2. Inbox insert (`ON CONFLICT DO NOTHING RETURNING event_id`): exactly the new events come
//!    back. Any other event id is an earlier one: same payload hash = duplicate (no effect),
//!    different hash = `idempotency_conflict` dead letter (never a second effect).
//! 3. Effects of the new events, written by the consumer, set-based.
//! 4. Dead letters (with raw key, value and headers).
//! 5. One audit row per record, in offset order, extending the partition's hash chain.
//! 6. The new position (last offset + 1).
//!
//! COMMIT makes all of it visible at once; any failure rolls all of it back and the runtime
//! retries the same records, which the inbox then sorts out again.

use std::any::Any;
use std::collections::{HashMap, HashSet};

use ledgerflow_core::{Envelope, ReasonCode, now_micros};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::audit::{AuditRow, Decision, GENESIS_HASH};
use crate::consumer::ErasedConsumer;
use crate::dead_letter::DeadLetterStatus;
use crate::sql::Rows;
use crate::{Backend, Store, StoreError};

/// Offsets per `IN (...)` list when a redrive resolves dead letters (under the bind limits).
const CHUNK_ROWS: usize = 1000;

/// A record that failed for good before reaching the store.
#[derive(Debug, Clone)]
pub struct DeadLetterInput {
    /// Kafka offset.
    pub offset: i64,
    /// Reason code.
    pub reason: ReasonCode,
    /// Error text with its chain.
    pub error: String,
    /// Raw key.
    pub key: Option<Vec<u8>>,
    /// Raw value.
    pub value: Option<Vec<u8>>,
    /// Headers as (name, value) pairs, values lossy UTF-8.
    pub headers: Vec<(String, Option<String>)>,
    /// Schema id when the frame was readable.
    pub schema_id: Option<u32>,
    /// Event id when the payload decoded.
    pub event_id: Option<String>,
    /// Tenant when known.
    pub tenant_id: Option<String>,
    /// Event type when known.
    pub event_type: Option<String>,
}

/// A decoded event this consumer does not act on.
#[derive(Debug, Clone)]
pub struct SkippedInput {
    /// The event.
    pub envelope: Envelope,
}

/// One record of a batch, after decoding and mapping.
pub enum RecordOutcome {
    /// Decoded, validated and mapped; applied unless the inbox says it was seen.
    Mapped {
        /// The event.
        envelope: Envelope,
        /// The consumer's effect (type-erased).
        effect: Box<dyn Any + Send + Sync>,
        /// Raw record, kept in case the inbox reports an idempotency conflict.
        raw: Box<DeadLetterInput>,
    },
    /// Not for this consumer.
    Skipped(SkippedInput),
    /// Permanent failure.
    DeadLetter(DeadLetterInput),
}

impl std::fmt::Debug for RecordOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mapped { envelope, .. } => f
                .debug_struct("Mapped")
                .field("event_id", &envelope.meta.event_id)
                .finish(),
            Self::Skipped(s) => f
                .debug_tuple("Skipped")
                .field(&s.envelope.meta.event_id)
                .finish(),
            Self::DeadLetter(d) => f
                .debug_struct("DeadLetter")
                .field("offset", &d.offset)
                .field("reason", &d.reason)
                .finish(),
        }
    }
}

impl RecordOutcome {
    /// The event's metadata, when the record decoded into an event.
    pub fn meta(&self) -> Option<&ledgerflow_core::EventMeta> {
        match self {
            Self::Mapped { envelope, .. } => Some(&envelope.meta),
            Self::Skipped(s) => Some(&s.envelope.meta),
            Self::DeadLetter(_) => None,
        }
    }

    fn offset(&self) -> i64 {
        match self {
            Self::Mapped { envelope, .. } => envelope.coordinates.offset,
            Self::Skipped(s) => s.envelope.coordinates.offset,
            Self::DeadLetter(d) => d.offset,
        }
    }
}

/// A batch: consecutive records of one partition, in offset order.
#[derive(Debug)]
pub struct BatchInput {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Records in offset order.
    pub records: Vec<RecordOutcome>,
    /// Offset to store as the next one to read (last offset + 1; may be larger when the broker
    /// skipped offsets, e.g. compaction or transaction markers).
    pub next_offset: i64,
}

/// What a committed batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchOutcome {
    /// New events with effects.
    pub applied: u64,
    /// Dedup hits.
    pub duplicates: u64,
    /// Dead letters (including idempotency conflicts).
    pub dead_lettered: u64,
    /// Idempotency conflicts (also counted in dead_lettered).
    pub conflicts: u64,
    /// Not for this consumer.
    pub skipped: u64,
    /// `Some(position)` when the batch was stale and nothing was written.
    pub stale: Option<i64>,
    /// Dead letters by reason.
    pub reasons: Vec<(ReasonCode, u64)>,
    /// Open dead letters at the batch's coordinates that this (redrive) batch resolved.
    pub resolved: u64,
    /// Records per (decision, event type); `unknown` when the record did not decode.
    pub decided_types: Vec<(Decision, String, u64)>,
}

/// How a batch relates to the consumer's positions of record.
#[derive(Debug, Clone, Copy)]
enum Mode<'a> {
    /// The live loop: fenced by, and advancing, the stored position.
    Live,
    /// An operator's redrive (replay, dead-letter retry): positions are neither checked nor
    /// moved; audit rows name the operation; dead letters at the same coordinates are updated
    /// (another attempt) or resolved (the record now has an effect, is a duplicate, or is
    /// skipped).
    Redrive { operation: &'a str },
}

impl BatchOutcome {
    /// Applied events per event type (the `applied` rows of [`BatchOutcome::decided_types`]).
    pub fn applied_types(&self) -> Vec<(String, u64)> {
        self.decided_types
            .iter()
            .filter(|(d, _, _)| *d == Decision::Applied)
            .map(|(_, t, n)| (t.clone(), *n))
            .collect()
    }
}

impl Store {
    /// The stored next offset of a consumer's partition, if any.
    pub async fn position(
        &self,
        consumer: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT next_offset FROM positions WHERE consumer = $1 AND topic = $2 AND partition = $3",
        )
        .bind(consumer)
        .bind(topic)
        .bind(partition)
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::query("reading a position"))?;
        row.map(|r| r.try_get::<i64, _>(0))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("position: {e}")))
    }

    /// Commits one batch (see the module docs for the order and why).
    pub async fn commit_batch(
        &self,
        consumer: &dyn ErasedConsumer,
        batch: BatchInput,
    ) -> Result<BatchOutcome, StoreError> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(StoreError::query("beginning the batch"))?;
        let outcome = write_batch(&mut tx, self.backend(), consumer, batch, Mode::Live).await?;
        if outcome.stale.is_some() {
            tx.rollback()
                .await
                .map_err(StoreError::query("rolling back a stale batch"))?;
        } else {
            ledgerflow_core::failpoint::hit("store.before_commit");
            tx.commit()
                .await
                .map_err(StoreError::query("committing the batch"))?;
        }
        Ok(outcome)
    }

    /// Commits an operator's redrive of records of one partition (replay, dead-letter retry)
    /// in one transaction, through the same inbox, effects, dead letters and audit chain as a
    /// live batch, but without checking or moving the position (`batch.next_offset` is
    /// ignored, records need not be consecutive). The inbox makes it safe to redrive anything
    /// any number of times: an event that was applied is a duplicate. Audit rows carry
    /// `redrive <operation>` in their detail.
    pub async fn commit_redrive(
        &self,
        consumer: &dyn ErasedConsumer,
        batch: BatchInput,
        operation: &str,
    ) -> Result<BatchOutcome, StoreError> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(StoreError::query("beginning the redrive"))?;
        let outcome = write_batch(
            &mut tx,
            self.backend(),
            consumer,
            batch,
            Mode::Redrive { operation },
        )
        .await?;
        tx.commit()
            .await
            .map_err(StoreError::query("committing the redrive"))?;
        Ok(outcome)
    }

    /// The payload hashes the inbox holds for these event ids of a consumer (absent: never
    /// applied). Read-only; used to plan a replay.
    pub async fn inbox_hashes(
        &self,
        consumer: &str,
        ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut conn = self
            .pool()
            .acquire()
            .await
            .map_err(StoreError::query("acquiring a connection"))?;
        inbox_hashes_on(&mut conn, self.backend(), consumer, ids).await
    }
}

async fn inbox_hashes_on(
    conn: &mut AnyConnection,
    backend: Backend,
    consumer: &str,
    ids: &[String],
) -> Result<HashMap<String, String>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut keys = Rows::new(backend, &["text", "text"]);
    for id in ids {
        keys.push(consumer).push(id);
    }
    let mut stored_hash = HashMap::with_capacity(ids.len());
    for row in keys
        .fetch_all(
            conn,
            "reading inbox hashes",
            "SELECT event_id, payload_hash FROM inbox WHERE (consumer, event_id) IN (",
            ")",
        )
        .await?
    {
        let get = |i| {
            row.try_get::<String, _>(i)
                .map_err(|e| StoreError::Corrupt(format!("inbox: {e}")))
        };
        stored_hash.insert(get(0)?, get(1)?);
    }
    Ok(stored_hash)
}

async fn write_batch(
    conn: &mut AnyConnection,
    backend: Backend,
    consumer: &dyn ErasedConsumer,
    batch: BatchInput,
    mode: Mode<'_>,
) -> Result<BatchOutcome, StoreError> {
    let name = consumer.name();
    let mut outcome = BatchOutcome::default();
    let Some(first_offset) = batch.records.first().map(RecordOutcome::offset) else {
        return Ok(outcome);
    };
    let now = now_micros();
    if let Mode::Redrive { .. } = mode {
        // Serialize with the live loop's batches of this partition (their audit rows extend
        // the same chain); no fence, no placeholder: the position is not ours to touch.
        if backend == Backend::Postgres {
            sqlx::query(
                "SELECT next_offset FROM positions \
                 WHERE consumer = $1 AND topic = $2 AND partition = $3 FOR UPDATE",
            )
            .bind(name)
            .bind(&batch.topic)
            .bind(batch.partition)
            .fetch_optional(&mut *conn)
            .await
            .map_err(StoreError::query("locking the position"))?;
        }
    } else if let Some(position) = fence(conn, name, &batch, first_offset, now).await? {
        outcome.stale = Some(position);
        return Ok(outcome);
    }
    write_records(
        conn,
        backend,
        consumer,
        batch,
        mode,
        first_offset,
        now,
        outcome,
    )
    .await
}

/// Step 1 of a live batch: `Some(stored position)` when the batch is stale.
async fn fence(
    conn: &mut AnyConnection,
    name: &str,
    batch: &BatchInput,
    first_offset: i64,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    // 1. Position check, with the row locked on Postgres (SQLite has one writer anyway), in one
    //    statement: the row is created when missing, as a placeholder that step 6 overwrites,
    //    and otherwise "updated" to itself, which locks it and returns the stored position.
    //    With no row to lock, two instances racing on a partition's first batch would both pass
    //    the check and both commit (the loser's records audited as duplicates, the position
    //    possibly moved backwards); here the loser blocks on the winner's row until the winner
    //    commits, then reads the winner's position and is stale. On SQLite the upsert makes the
    //    transaction a writer from its first statement, so the reads below never come from an
    //    outdated snapshot.
    let stored: i64 = sqlx::query_scalar(
        "INSERT INTO positions (consumer, topic, partition, next_offset, updated_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (consumer, topic, partition) \
         DO UPDATE SET next_offset = positions.next_offset RETURNING next_offset",
    )
    .bind(name)
    .bind(&batch.topic)
    .bind(batch.partition)
    .bind(first_offset)
    .bind(now)
    .fetch_one(&mut *conn)
    .await
    .map_err(StoreError::query("locking the position"))?;
    Ok((stored > first_offset).then_some(stored))
}

#[allow(clippy::too_many_arguments)]
async fn write_records(
    conn: &mut AnyConnection,
    backend: Backend,
    consumer: &dyn ErasedConsumer,
    batch: BatchInput,
    mode: Mode<'_>,
    first_offset: i64,
    now: i64,
    mut outcome: BatchOutcome,
) -> Result<BatchOutcome, StoreError> {
    let name = consumer.name();
    // 2. Inbox.
    let mapped: Vec<&Envelope> = batch
        .records
        .iter()
        .filter_map(|r| match r {
            RecordOutcome::Mapped { envelope, .. } => Some(envelope),
            _ => None,
        })
        .collect();
    let mut inserted: HashSet<String> = HashSet::new();
    // Insert in event-id order: two batches (different partitions) carrying the same ids then
    // take their inbox row locks in the same order and cannot deadlock each other.
    let mut by_id: Vec<&Envelope> = mapped.clone();
    by_id.sort_by_key(|e| e.meta.event_id);
    let mut inbox = Rows::new(
        backend,
        &[
            "text", "text", "text", "text", "text", "text", "integer", "bigint", "bigint",
        ],
    );
    for env in &by_id {
        inbox
            .push(name)
            .push(env.meta.event_id.to_string())
            .push(hex::encode(env.payload_hash))
            .push(env.meta.tenant_id.as_str())
            .push(env.meta.event_type.as_str())
            .push(env.coordinates.topic.as_str())
            .push(env.coordinates.partition)
            .push(env.coordinates.offset)
            .push(now);
    }
    for r in inbox
        .fetch_all(
            &mut *conn,
            "inserting into the inbox",
            "INSERT INTO inbox (consumer, event_id, payload_hash, tenant_id, event_type, topic, \
             partition, \"offset\", applied_at)",
            "ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
        )
        .await?
    {
        inserted.insert(
            r.try_get(0)
                .map_err(|e| StoreError::Corrupt(format!("inbox: {e}")))?,
        );
    }
    // Hashes of the event ids the insert did not take, as the inbox holds them: the earlier
    // records they repeat (usually none, so usually no query).
    let mut ids: Vec<String> = mapped
        .iter()
        .map(|e| e.meta.event_id.to_string())
        .filter(|id| !inserted.contains(id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let stored_hash = inbox_hashes_on(conn, backend, name, &ids).await?;

    // Decide every record, in offset order.
    let mut decisions: Vec<(Decision, Option<String>)> = Vec::with_capacity(batch.records.len());
    // Payload hash of each event id's applied record in this batch (a later record of the
    // same id in the batch is its duplicate, or a conflict).
    let mut first_hash: HashMap<String, String> = HashMap::new();
    let mut apply_envs: Vec<&Envelope> = Vec::new();
    let mut apply_effects: Vec<Box<dyn Any + Send + Sync>> = Vec::new();
    let mut dead: Vec<DeadLetterInput> = Vec::new();
    let mut records = batch.records;
    // Move effects out first so envelopes can stay borrowed from `records`.
    let mut effects_by_index: HashMap<usize, Box<dyn Any + Send + Sync>> = HashMap::new();
    for (i, record) in records.iter_mut().enumerate() {
        if let RecordOutcome::Mapped { effect, .. } = record {
            let taken = std::mem::replace(effect, Box::new(()));
            effects_by_index.insert(i, taken);
        }
    }
    for (i, record) in records.iter().enumerate() {
        match record {
            RecordOutcome::Mapped { envelope, raw, .. } => {
                let id = envelope.meta.event_id.to_string();
                let hash = hex::encode(envelope.payload_hash);
                if inserted.contains(&id) && !first_hash.contains_key(&id) {
                    first_hash.insert(id.clone(), hash);
                    decisions.push((Decision::Applied, None));
                    apply_envs.push(envelope);
                    if let Some(effect) = effects_by_index.remove(&i) {
                        apply_effects.push(effect);
                    }
                    outcome.applied += 1;
                } else if stored_hash.get(&id).or_else(|| first_hash.get(&id)) == Some(&hash) {
                    decisions.push((Decision::Duplicate, None));
                    outcome.duplicates += 1;
                } else {
                    let stored = stored_hash
                        .get(&id)
                        .or_else(|| first_hash.get(&id))
                        .cloned()
                        .unwrap_or_default();
                    let mut letter = (**raw).clone();
                    letter.reason = ReasonCode::IdempotencyConflict;
                    letter.error = format!(
                        "event {id} was applied earlier with payload hash {stored}; this record has {hash}"
                    );
                    decisions.push((
                        Decision::DeadLettered,
                        Some(ReasonCode::IdempotencyConflict.as_str().to_owned()),
                    ));
                    outcome.conflicts += 1;
                    dead.push(letter);
                }
            }
            RecordOutcome::Skipped(_) => {
                decisions.push((Decision::Skipped, None));
                outcome.skipped += 1;
            }
            RecordOutcome::DeadLetter(d) => {
                decisions.push((Decision::DeadLettered, Some(d.reason.as_str().to_owned())));
                dead.push(d.clone());
            }
        }
    }

    for (record, (decision, _)) in records.iter().zip(&decisions) {
        let event_type = match record {
            RecordOutcome::Mapped { envelope: e, .. }
            | RecordOutcome::Skipped(SkippedInput { envelope: e }) => e.meta.event_type.as_str(),
            RecordOutcome::DeadLetter(d) => d.event_type.as_deref().unwrap_or("unknown"),
        };
        match outcome
            .decided_types
            .iter_mut()
            .find(|(d, t, _)| *d == *decision && t.as_str() == event_type)
        {
            Some((_, _, n)) => *n += 1,
            None => outcome
                .decided_types
                .push((*decision, event_type.to_owned(), 1)),
        }
    }

    // 3. Effects.
    if !apply_envs.is_empty() {
        consumer
            .write_erased(&mut *conn, backend, &apply_envs, apply_effects)
            .await?;
    }

    // 4. Dead letters.
    for letter in &dead {
        bump_reason(&mut outcome.reasons, letter.reason);
    }
    outcome.dead_lettered = dead.len() as u64;
    if !dead.is_empty() {
        let mut rows = Rows::new(
            backend,
            &[
                "text", "text", "text", "integer", "bigint", "text", "text", "bytea", "bytea",
                "text", "bigint", "text", "text", "text", "text", "integer", "bigint", "bigint",
            ],
        );
        for d in &dead {
            let headers = serde_json::to_string(&d.headers).unwrap_or_else(|_| "[]".to_owned());
            rows.push(uuid::Uuid::new_v4().to_string())
                .push(name)
                .push(batch.topic.as_str())
                .push(batch.partition)
                .push(d.offset)
                .push(d.reason.as_str())
                .push(d.error.as_str())
                .push(d.key.clone())
                .push(d.value.clone())
                .push(headers)
                .push(d.schema_id.map(i64::from))
                .push(d.event_id.clone())
                .push(d.tenant_id.clone())
                .push(d.event_type.clone())
                .push(DeadLetterStatus::Open.as_str())
                .push(0i32)
                .push(now)
                .push(now);
        }
        // Live: a re-read of the same offsets (after a crash) keeps the first letter. Redrive:
        // the open letter at those coordinates records another failed attempt.
        let conflict = match mode {
            Mode::Live => "ON CONFLICT (consumer, topic, partition, \"offset\") DO NOTHING",
            Mode::Redrive { .. } => {
                "ON CONFLICT (consumer, topic, partition, \"offset\") DO UPDATE SET \
                 attempts = dead_letters.attempts + 1, reason = excluded.reason, \
                 error = excluded.error, updated_at = excluded.updated_at \
                 WHERE dead_letters.status = 'open'"
            }
        };
        rows.execute(
            &mut *conn,
            "inserting dead letters",
            "INSERT INTO dead_letters (id, consumer, topic, partition, \"offset\", reason, error, \
             record_key, record_value, headers, schema_id, event_id, tenant_id, event_type, status, \
             attempts, created_at, updated_at)",
            conflict,
        )
        .await?;
    }

    // 5. Audit chain.
    let head: Option<(i64, String)> = sqlx::query_as(
        "SELECT seq, hash FROM audit_log WHERE consumer = $1 AND topic = $2 AND partition = $3 \
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(name)
    .bind(&batch.topic)
    .bind(batch.partition)
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::query("reading the audit head"))?;
    let (mut seq, mut prev) = head.unwrap_or((0, GENESIS_HASH.to_owned()));
    let mut audit_rows = Vec::with_capacity(records.len());
    let mut dead_iter = dead.iter();
    for (record, (decision, reason)) in records.iter().zip(decisions) {
        seq += 1;
        let (offset, event_id, tenant_id, event_type, payload_hash, schema_id) = match record {
            RecordOutcome::Mapped { envelope: e, .. }
            | RecordOutcome::Skipped(SkippedInput { envelope: e }) => (
                e.coordinates.offset,
                Some(e.meta.event_id.to_string()),
                Some(e.meta.tenant_id.to_string()),
                Some(e.meta.event_type.as_str().to_owned()),
                Some(hex::encode(e.payload_hash)),
                Some(i64::from(e.schema_id.0)),
            ),
            RecordOutcome::DeadLetter(d) => (
                d.offset,
                d.event_id.clone(),
                d.tenant_id.clone(),
                d.event_type.clone(),
                None,
                d.schema_id.map(i64::from),
            ),
        };
        let (correlation_id, trace_id) = context_of(record);
        let error = if decision == Decision::DeadLettered {
            dead_iter
                .next()
                .map(|d| d.error.chars().take(500).collect::<String>())
        } else {
            None
        };
        let detail = match (mode, error) {
            (Mode::Live, error) => error,
            (Mode::Redrive { operation }, None) => Some(format!("redrive {operation}")),
            (Mode::Redrive { operation }, Some(e)) => Some(format!("redrive {operation}: {e}")),
        };
        let mut row = AuditRow {
            consumer: name.to_owned(),
            topic: batch.topic.clone(),
            partition: batch.partition,
            seq,
            offset,
            event_id,
            tenant_id,
            event_type,
            decision,
            reason,
            payload_hash,
            schema_id,
            detail,
            correlation_id,
            trace_id,
            recorded_at: now,
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        row.hash = row.compute_hash();
        prev = row.hash.clone();
        audit_rows.push(row);
    }
    insert_audit_rows(&mut *conn, backend, &audit_rows).await?;

    if let Mode::Redrive { .. } = mode {
        // Records that now have a decision other than a dead letter resolve the open dead
        // letters at their coordinates.
        let done: Vec<i64> = records
            .iter()
            .zip(&audit_rows)
            .filter(|(_, row)| row.decision != Decision::DeadLettered)
            .map(|(record, _)| record.offset())
            .collect();
        for chunk in done.chunks(CHUNK_ROWS) {
            let list = crate::sql::placeholders(1, chunk.len(), 4);
            let sql = format!(
                "UPDATE dead_letters SET status = 'resolved', attempts = attempts + 1, \
                 updated_at = $1 WHERE consumer = $2 AND topic = $3 AND partition = $4 \
                 AND status = 'open' AND \"offset\" IN {list}"
            );
            let mut q = sqlx::query(&sql)
                .bind(now)
                .bind(name)
                .bind(&batch.topic)
                .bind(batch.partition);
            for offset in chunk {
                q = q.bind(*offset);
            }
            let done = q
                .execute(&mut *conn)
                .await
                .map_err(StoreError::query("resolving dead letters"))?;
            outcome.resolved += done.rows_affected();
        }
        return Ok(outcome);
    }

    // 6. Position.
    if batch.next_offset <= first_offset {
        return Err(StoreError::Invariant(format!(
            "next offset {} is not past the batch's first offset {first_offset}",
            batch.next_offset
        )));
    }
    sqlx::query(
        "INSERT INTO positions (consumer, topic, partition, next_offset, updated_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = excluded.next_offset, \
         updated_at = excluded.updated_at",
    )
    .bind(name)
    .bind(&batch.topic)
    .bind(batch.partition)
    .bind(batch.next_offset)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::query("storing the position"))?;
    Ok(outcome)
}

/// The correlation id and W3C trace id of a record: from the event when it decoded, else from
/// the record's `correlation_id` and `traceparent` headers.
fn context_of(record: &RecordOutcome) -> (Option<String>, Option<String>) {
    match record {
        RecordOutcome::Mapped { envelope: e, .. }
        | RecordOutcome::Skipped(SkippedInput { envelope: e }) => (
            Some(e.meta.correlation_id.clone()).filter(|c| !c.is_empty()),
            e.trace_id.clone(),
        ),
        RecordOutcome::DeadLetter(d) => {
            let header = |name: &str| {
                d.headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .and_then(|(_, v)| v.as_deref())
            };
            (
                header("correlation_id").map(str::to_owned),
                header("traceparent").and_then(ledgerflow_core::trace_id_of),
            )
        }
    }
}

pub(crate) async fn insert_audit_rows(
    conn: &mut AnyConnection,
    backend: Backend,
    rows: &[AuditRow],
) -> Result<(), StoreError> {
    let mut values = Rows::new(
        backend,
        &[
            "text", "text", "integer", "bigint", "bigint", "text", "text", "text", "text", "text",
            "text", "bigint", "text", "bigint", "text", "text", "text", "text",
        ],
    );
    for r in rows {
        values
            .push(r.consumer.as_str())
            .push(r.topic.as_str())
            .push(r.partition)
            .push(r.seq)
            .push(r.offset)
            .push(r.event_id.as_deref())
            .push(r.tenant_id.as_deref())
            .push(r.event_type.as_deref())
            .push(r.decision.as_str())
            .push(r.reason.as_deref())
            .push(r.payload_hash.as_deref())
            .push(r.schema_id)
            .push(r.detail.as_deref())
            .push(r.recorded_at)
            .push(r.prev_hash.as_str())
            .push(r.hash.as_str())
            .push(r.correlation_id.as_deref())
            .push(r.trace_id.as_deref());
    }
    values
        .execute(
            conn,
            "appending to the audit log",
            "INSERT INTO audit_log (consumer, topic, partition, seq, \"offset\", event_id, tenant_id, \
             event_type, decision, reason, payload_hash, schema_id, detail, recorded_at, prev_hash, hash, \
             correlation_id, trace_id)",
            "",
        )
        .await?;
    Ok(())
}

fn bump_reason(counts: &mut Vec<(ReasonCode, u64)>, key: ReasonCode) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += 1,
        None => counts.push((key, 1)),
    }
}
