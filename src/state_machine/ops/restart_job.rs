//! RestartJob (SEMANTICS §8.2, DECISIONS #7, #25).
//!
//! Missing → `JobNotFound`; Succeeded → "job already succeeded"; Scheduled or
//! Running → "job is still in progress". Failed or Cancelled → the cancellation
//! record is cleared and a new pending attempt (`attempt_number` = highest + 1,
//! relative number 1, fresh retry budget) is placed ready now, going through
//! its limits again (DECISIONS #7).
use crate::storage::kv::Kv;

use super::super::job::{JobKey, JobStatus, Pending};
use super::super::outcome::{ApplyResult, Output, Rejection};
use super::super::tx::{Tables, Tx};

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>, key: &JobKey) -> ApplyResult {
    let mut job = tx.job(key).ok_or(Rejection::JobNotFound)?;
    let reason = match job.status {
        JobStatus::Succeeded => Some("job already succeeded"),
        JobStatus::Scheduled | JobStatus::Running => Some("job is still in progress"),
        JobStatus::Failed | JobStatus::Cancelled => None,
    };
    if let Some(reason) = reason {
        return Err(Rejection::CannotRestart { id: key.id.clone(), reason: reason.into(), status: job.status });
    }
    job.cancelled_at_ms = None;
    job.run_base_attempt = job.last_attempt_number;
    let task_id = tx.new_task_id();
    job.pending = Some(Pending::new(task_id, job.last_attempt_number + 1, tx.now_ms));
    tx.set_status(&mut job, JobStatus::Scheduled);
    tx.place_pending(&mut job);
    tx.put_job(&job);
    Ok(Output::Done)
}
