//! ExpediteJob (SEMANTICS §8.3): pull a future-dated pending attempt to now.
//!
//! Reasons, checked in order: Succeeded/Failed → "job is already in terminal
//! state"; cancellation record → "job is cancelled"; Running → "job is
//! currently running"; nothing pending → "job has no pending task to
//! expedite"; start ≤ now → "task is already ready to run (not
//! future-scheduled)". Success keeps the attempt numbers and re-keys the
//! pending attempt at now.
use crate::storage::kv::Kv;

use super::super::job::{Gate, JobKey, JobStatus, Pending};
use super::super::outcome::{ApplyResult, Output, Rejection};
use super::super::tx::{Tables, Tx};

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>, key: &JobKey) -> ApplyResult {
    let mut job = tx.job(key).ok_or(Rejection::JobNotFound)?;
    let now = tx.now_ms;
    let reason = if matches!(job.status, JobStatus::Succeeded | JobStatus::Failed) {
        Some("job is already in terminal state")
    } else if job.cancelled_at_ms.is_some() {
        Some("job is cancelled")
    } else if job.status == JobStatus::Running {
        Some("job is currently running")
    } else if job.pending.as_ref().is_none_or(|p| matches!(p.gate, Gate::Waiting { .. })) {
        Some("job has no pending task to expedite")
    } else if job.pending.as_ref().is_some_and(|p| due_ms(p) <= now) {
        Some("task is already ready to run (not future-scheduled)")
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(Rejection::CannotExpedite { id: key.id.clone(), reason: reason.into(), status: job.status });
    }
    let pending = job.pending.as_mut().expect("checked above");
    pending.start_at_ms = now;
    if let Gate::Timer { at_ms } = &mut pending.gate {
        *at_ms = now;
    }
    let task_id = pending.task_id.clone();
    tx.dequeue(&task_id);
    tx.place_pending(&mut job);
    tx.put_job(&job);
    Ok(Output::Done)
}

/// When the pending attempt next moves on its own.
fn due_ms(p: &Pending) -> i64 {
    match p.gate {
        Gate::Timer { at_ms } => at_ms.max(p.start_at_ms),
        _ => p.start_at_ms,
    }
}
