//! The replicated state machine: pure and deterministic.
//!
//! It owns every job, attempt, lease and queue-index record and is the only
//! code that changes them. It does no IO, reads no clock, draws no random
//! numbers and never iterates a hash map: time comes in the command
//! (`Command::now_ms`, kept monotonic), ids are derived from the log index,
//! retry jitter is a hash of (time, attempt). Applying the same log to the same
//! store gives the same bytes on every replica; `tests/state_machine` proves it
//! with random command sequences.
//!
//! Who moves a job between statuses:
//! - `Scheduled` ← enqueue, a retryable failure or expiry, restart;
//! - `Running` ← grant_leases / lease_job (only from Scheduled);
//! - `Succeeded` / `Failed` / `Cancelled` ← report_outcome, expire_leases;
//!   `Cancelled` also ← cancel_job on a Scheduled job.
//!
//! Business rejections are values ([`Rejection`]) and change nothing; a broken
//! store panics inside the [`Kv`] implementation (crash rather than diverge).
pub mod bounds;
pub mod command;
pub mod invariants;
pub mod job;
pub mod limits;
pub mod ops;
pub mod outcome;
pub mod read;
pub mod retry;
pub mod tx;

pub use command::{Command, ExpiredLease, ImportedAttempt, NewJob, Op, Outcome, RefreshOutcome};
pub use job::{
    Attempt, AttemptStatus, Bucket, FloatingState, Gate, Job, JobKey, JobStatus, Lease, LeaseKind, Limit, Ms, Pending,
    QueueCounts, QueueKind, QueuedTask, RateLimit, ShardSpec, Slot,
};
pub use outcome::{ApplyResult, Effect, Output, RefreshView, Rejection, TaskView};
pub use retry::RetryPolicy;
pub use tx::{Tables, View};

use crate::storage::kv::Kv;
use tx::Tx;

/// Applies `command`, the entry at `log_index`, to `kv`. Returns the result for
/// the proposer and the effects for the broker.
pub fn apply<K: Kv>(kv: &mut K, log_index: u64, command: &Command) -> (ApplyResult, Vec<Effect>) {
    apply_as(kv, log_index, command, Answer::Full)
}

/// Whether anyone reads the [`ApplyResult`] of a command being applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The proposer's replica: a caller waits for this result.
    Full,
    /// Any other replica: the result is dropped, so reads that
    /// only feed it are skipped. Today that is a leased task's payload
    /// (`TaskView::payload` is left empty). The state written and the
    /// effects are the same as with `Full`; `tests/state_machine` checks it.
    Discarded,
}

/// [`apply`], saying whether the result is read (see [`Answer`]).
pub fn apply_as<K: Kv>(kv: &mut K, log_index: u64, command: &Command, answer: Answer) -> (ApplyResult, Vec<Effect>) {
    let mut tx = Tx::begin(kv, log_index, command.now_ms, answer);
    let result = match &command.op {
        // Group commit: every proposal that queued up together is one log entry;
        // each is applied exactly as if it had its own entry, in order.
        Op::Batch(ops) => Ok(Output::Batch(ops.iter().map(|op| apply_op(&mut tx, op)).collect())),
        op => apply_op(&mut tx, op),
    };
    (result, tx.effects)
}

fn apply_op<K: Kv>(tx: &mut Tx<'_, K>, op: &Op) -> ApplyResult {
    bounds::check(op)?;
    let effects_before = tx.effects.len();
    let result = match op {
        Op::InitShards { shards } => ops::init_shards::apply(tx, shards),
        Op::Enqueue(new) => ops::enqueue::apply(tx, new),
        Op::GrantLeases { worker_id, task_ids, lease_ms } => {
            ops::grant_leases::apply(tx, worker_id, task_ids, *lease_ms)
        }
        Op::LeaseJob { job, worker_id, lease_ms } => ops::lease_job::apply(tx, job, worker_id, *lease_ms),
        Op::ReportOutcome { task_id, outcome } => ops::report_outcome::apply(tx, task_id, outcome),
        Op::ExpireLeases { leases } => ops::expire_leases::apply(tx, leases),
        Op::CancelJob { job } => ops::cancel_job::apply(tx, job),
        Op::RestartJob { job } => ops::restart_job::apply(tx, job),
        Op::ExpediteJob { job } => ops::expedite_job::apply(tx, job),
        Op::DeleteJob { job } => ops::delete_job::apply(tx, job),
        Op::ResetAll => ops::reset_all::apply(tx),
        Op::AcquireLimits { task_ids } => ops::acquire_limits::apply(tx, task_ids),
        Op::ReportRefreshOutcome { task_id, outcome } => ops::report_refresh_outcome::apply(tx, task_id, outcome),
        Op::DropTenantHolders { shard, tenant } => ops::drop_tenant_holders::apply(tx, *shard, tenant),
        Op::ImportJob { job, enqueue_time_ms, attempts } => ops::import_job::apply(tx, job, *enqueue_time_ms, attempts),
        Op::PurgeTerminal { before_ms, max } => ops::purge_terminal::apply(tx, *before_ms, *max),
        Op::Batch(_) => Err(Rejection::NestedBatch),
    };
    if result.is_ok() {
        tx.grant_pending_queues();
    }
    debug_assert!(
        result.is_ok() || tx.effects.len() == effects_before || matches!(result, Err(Rejection::JobNotFound)),
        "a rejection must change nothing"
    );
    result
}
