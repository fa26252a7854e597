//! Enqueue: create a Scheduled job with pending attempt #1.
//!
//! - id already present (same shard and tenant) → `JobAlreadyExists`; the
//!   stored job is untouched (DECISIONS #1).
//! - otherwise the job is stored, its payload under its own key, and the
//!   pending attempt enters the queue at `start_at_ms` (≤ 0 means now).
//!   `enqueue_time_ms` is the leader-stamped receipt time (DECISIONS #15).
//!   A job with limits walks them now when due (taking slots, parking as a
//!   waiter, or waiting for a rate limit), or behind a time gate at its start
//!   time when future-dated (no slot is taken early).
use crate::storage::kv::Kv;

use super::super::command::NewJob;
use super::super::job::{Job, JobStatus, Pending};
use super::super::outcome::{ApplyResult, Output, Rejection};
use super::super::tx::{Tables, Tx};

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>, new: &NewJob) -> ApplyResult {
    if tx.job(&new.key).is_some() {
        return Err(Rejection::JobAlreadyExists { id: new.key.id.clone() });
    }
    let mut job = new_job(tx, new);
    tx.bump_counters(job.key.shard, 1, 0);
    tx.put_payload(&job.key, &new.payload);
    tx.place_pending(&mut job);
    tx.put_job(&job);
    Ok(Output::Enqueued { id: job.key.id })
}

/// A Scheduled job with pending attempt #1, entered in the query indexes (the
/// caller stores the record). Shared with ImportJob.
pub fn new_job<K: Kv>(tx: &mut Tx<'_, K>, new: &NewJob) -> Job {
    let now = tx.now_ms;
    let start_at_ms = if new.start_at_ms <= 0 { now } else { new.start_at_ms };
    let seq = tx.next_seq();
    let task_id = tx.new_task_id();
    let job = Job {
        key: new.key.clone(),
        task_group: new.task_group.clone(),
        priority: new.priority,
        enqueue_time_ms: now,
        retry_policy: new.retry_policy.clone(),
        limits: new.limits.clone(),
        metadata: new.metadata.clone(),
        status: JobStatus::Scheduled,
        status_changed_at_ms: now,
        cancelled_at_ms: None,
        last_attempt_number: 0,
        run_base_attempt: 0,
        pending: Some(Pending::new(task_id, 1, start_at_ms)),
        running_task: None,
        held_slots: Vec::new(),
        seq,
    };
    tx.index_new_job(&job);
    job
}
