//! ExpediteJob (SEMANTICS §8.3): pull a future-dated pending attempt to now.
//!
//! Reasons, checked in order: Succeeded/Failed → "job is already in terminal
//! state"; cancellation record → "job is cancelled"; Running → "job is
//! currently running"; nothing pending → "job has no pending task to
//! expedite"; start ≤ now → "task is already ready to run (not
//! future-scheduled)". Success keeps the attempt numbers and re-keys the
//! pending attempt at now.
use crate::storage::kv::Kv;

use super::super::job::{JobKey, JobStatus};
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
    } else if job.pending.is_none() {
        Some("job has no pending task to expedite")
    } else if job.pending.as_ref().is_some_and(|p| p.start_at_ms <= now) {
        Some("task is already ready to run (not future-scheduled)")
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(Rejection::CannotExpedite { id: key.id.clone(), reason: reason.into(), status: job.status });
    }
    if let Some(pending) = job.pending.as_mut() {
        pending.start_at_ms = now;
    }
    tx.enqueue_pending(&job);
    tx.put_job(&job);
    Ok(Output::Done)
}
