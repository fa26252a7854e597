//! LeaseJob (the LeaseTask test helper): lease one named job's pending attempt
//! now, ignoring its start time (SEMANTICS §6.2).
//!
//! Rejections, checked in order: missing → `JobNotFound`; Running → "job is
//! currently running"; Succeeded/Failed → "job is already in terminal state";
//! cancellation record → "job is cancelled"; nothing pending → "job has no
//! pending task"; parked behind a concurrency limit → "job has no pending task
//! in queue". Slots already held stay with the attempt; no new ones are taken.
use crate::storage::kv::Kv;

use super::super::job::{Gate, JobKey, JobStatus, Ms};
use super::super::outcome::{ApplyResult, Output, Rejection};
use super::super::tx::{Tables, Tx};
use super::grant_leases::start_attempt;

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>, key: &JobKey, worker_id: &str, lease_ms: Ms) -> ApplyResult {
    let job = tx.job(key).ok_or(Rejection::JobNotFound)?;
    let reason = if job.status == JobStatus::Running {
        Some("job is currently running")
    } else if matches!(job.status, JobStatus::Succeeded | JobStatus::Failed) {
        Some("job is already in terminal state")
    } else if job.cancelled_at_ms.is_some() {
        Some("job is cancelled")
    } else if job.pending.is_none() {
        Some("job has no pending task")
    } else if job.pending.as_ref().is_some_and(|p| matches!(p.gate, Gate::Waiting { .. })) {
        Some("job has no pending task in queue")
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(Rejection::CannotLease { id: key.id.clone(), reason: reason.into(), status: job.status });
    }
    let task = start_attempt(tx, job, worker_id, lease_ms);
    Ok(Output::Granted { tasks: vec![task], refresh_tasks: vec![] })
}
