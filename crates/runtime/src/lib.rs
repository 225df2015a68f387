//! ledgerflow-runtime: the consumer loop.
//!
//! # Commit discipline
//!
//! Kafka gives at-least-once delivery; the database makes it effect-once. For each consumer:
//!
//! 1. **Positions of record live in the database.** On assignment a partition is "unsynced";
//!    before its first batch is processed the runtime reads the stored next offset and, if the
//!    broker delivered from somewhere else, seeks there and discards what it had buffered. Kafka's
//!    committed offsets are never trusted for correctness.
//! 2. **One transaction per partition batch** ([`ledgerflow_store::Store::commit_batch`]): inbox,
//!    effects of new events only, dead letters, one audit row per record and the new position
//!    commit together. A crash before COMMIT loses the whole batch, which is then re-read from the
//!    stored position; a crash after COMMIT loses nothing.
//! 3. **Nothing is skipped silently.** Every record of a batch gets a decision (applied, duplicate,
//!    dead-lettered, skipped) in the audit log, and the position only moves past records that have
//!    one. A transient failure (database down, registry unreachable) never produces a dead letter:
//!    the batch goes back into its partition's buffer, the partition is paused in Kafka, and the
//!    batch is retried with exponential backoff and jitter. The loop keeps polling meanwhile, so
//!    other partitions keep committing, rebalances and shutdown are handled, and the member
//!    stays in its group. A shutdown during an outage retries for a grace period, then leaves
//!    the batch uncommitted; it is re-read from the stored position on the next start.
//! 4. **Fencing.** The batch transaction locks the position row and refuses a batch that starts
//!    before the stored position (it is stale: another instance, or this one before a rebalance,
//!    already committed it). The runtime then seeks to the stored position. This makes a
//!    revoked partition's in-flight batch harmless whether it commits before or after the new
//!    owner's: it is either first (and the new owner resumes after it) or rejected.
//! 5. **Kafka commit mirrors the database** after each batch (async) so lag tooling works, and
//!    once more synchronously at shutdown, so a restarted member fetches from the position of
//!    record instead of re-reading committed records (it would drop them, but it wastes time).
//! 6. **Drained means lag 0.** `exit_when_idle` ends a run only when every subscribed
//!    partition's position of record has reached its high watermark, whoever holds it; a quiet
//!    poll while a dead member's session runs out proves nothing.
//!
//! The loop is split by job: [`partitions`] (assignment changes and per-partition buffers, no
//! I/O), `flush` (one partition's batch to its commit), `kafka` (the client, its rebalance
//! callbacks and broker requests), `drain` (the drained verdict) and `worker` (the loop and the
//! graceful shutdown).
//!
//! These rules are pinned by the store conformance suite and the crash tests in `tests/`.

mod backoff;
mod config;
mod drain;
mod error;
mod flush;
mod kafka;
mod partitions;
mod pipeline;
mod redrive;
mod status;
mod worker;

pub use backoff::Backoff;
pub use config::{GroupProtocol, RuntimeConfig, TopicSelector};
pub use error::RuntimeError;
pub use pipeline::{RawRecord, prepare_record};
pub use redrive::{
    RedriveContext, RedriveCounts, RedriveError, RedriveFilter, RedriveLine, RedriveReport,
    plan_chunk, run_chunk,
};
pub use status::{MemberStatus, Membership};
pub use worker::{ConsumerSummary, RunExit, run_consumer};
