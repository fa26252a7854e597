//! ReportOutcome: a worker finishes its attempt (SEMANTICS §6.5, §3.1).
//!
//! The lease is found by task id alone; missing → `LeaseNotFound`. Then, in one
//! step: the lease is removed, the attempt finalised, and the job moves on:
//! - success → Succeeded (even with a cancellation record: the work is done);
//! - cancelled → Cancelled;
//! - failure → if the job has a cancellation record it becomes Cancelled (we do
//!   not retry work the user asked to stop); otherwise the retry policy decides
//!   between a new pending attempt at the backoff time (Scheduled) and Failed.
//!
//! Every concurrency slot the attempt held is released (and waiters granted)
//! in the same command; a retry walks its limits again from the first.
use crate::storage::kv::Kv;

use super::super::command::Outcome;
use super::super::job::{AttemptStatus, JobStatus, Lease, LeaseKind, Pending};
use super::super::outcome::{ApplyResult, Output, Rejection};
use super::super::retry::retry_delay_ms;
use super::super::tx::{Tables, Tx};

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>, task_id: &str, outcome: &Outcome) -> ApplyResult {
    let lease = tx.lease(task_id).ok_or(Rejection::LeaseNotFound)?;
    if lease.kind != LeaseKind::Attempt {
        return Err(Rejection::LeaseNotFound);
    }
    finish_attempt(tx, &lease, outcome)?;
    Ok(Output::Done)
}

/// Ends the attempt held by `lease` with `outcome`. Shared with ExpireLeases.
pub fn finish_attempt<K: Kv>(tx: &mut Tx<'_, K>, lease: &Lease, outcome: &Outcome) -> Result<(), Rejection> {
    tx.delete_lease(&lease.task_id);
    let Some(mut job) = tx.job(&lease.job) else { return Err(Rejection::JobNotFound) };
    let now = tx.now_ms;
    if let Some(mut attempt) = tx.attempt(&job.key, lease.attempt_number) {
        attempt.finished_at_ms = Some(now);
        match outcome {
            Outcome::Success { result } => {
                attempt.status = AttemptStatus::Succeeded;
                attempt.result = Some(result.clone());
            }
            Outcome::Failure { code, data } => {
                attempt.status = AttemptStatus::Failed;
                attempt.error_code = Some(code.clone());
                attempt.error_data = Some(data.clone());
            }
            Outcome::Cancelled => attempt.status = AttemptStatus::Cancelled,
        }
        tx.put_attempt(&job.key, &attempt);
    }
    // Only the attempt the job is running moves the job; a stale lease (which
    // the invariants rule out) finalises its attempt and nothing else.
    if job.running_task.as_deref() != Some(lease.task_id.as_str()) {
        return Ok(());
    }
    job.running_task = None;
    tx.release_slots(&mut job, &lease.task_id);
    let next = match outcome {
        Outcome::Success { .. } => JobStatus::Succeeded,
        Outcome::Cancelled => JobStatus::Cancelled,
        Outcome::Failure { .. } if job.cancelled_at_ms.is_some() => JobStatus::Cancelled,
        Outcome::Failure { .. } => {
            let relative = job.relative(lease.attempt_number);
            match job.retry_policy.as_ref().and_then(|p| retry_delay_ms(p, relative, now)) {
                Some(delay_ms) => {
                    let task_id = tx.new_task_id();
                    job.pending = Some(Pending::new(task_id, lease.attempt_number + 1, now.saturating_add(delay_ms)));
                    JobStatus::Scheduled
                }
                None => JobStatus::Failed,
            }
        }
    };
    if next.is_terminal() {
        tx.finish(&mut job, next);
    } else {
        tx.set_status(&mut job, next);
    }
    if job.pending.is_some() {
        tx.place_pending(&mut job);
    }
    tx.put_job(&job);
    Ok(())
}
