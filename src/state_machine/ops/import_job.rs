//! ImportJob (ImportJobs): create a job migrated from another system together
//! with its finished attempts (numbered 1..n in the given order).
//!
//! - id already present → `JobAlreadyExists`, nothing written;
//! - the status follows the last attempt: SUCCEEDED → Succeeded, CANCELLED →
//!   Cancelled, FAILED → Scheduled for attempt n+1 at `start_at_ms` while the
//!   retry policy allows another attempt, else Failed; no attempts → Scheduled.
//!   A Scheduled import walks its limits like any new attempt.
use crate::storage::kv::Kv;

use super::super::command::{ImportedAttempt, NewJob};
use super::super::job::{Attempt, AttemptStatus, JobStatus, Ms, Pending};
use super::super::outcome::{ApplyResult, Output, Rejection};
use super::super::tx::{Tables, Tx};
use super::enqueue::new_job;

pub fn apply<K: Kv>(
    tx: &mut Tx<'_, K>,
    new: &NewJob,
    enqueue_time_ms: Ms,
    attempts: &[ImportedAttempt],
) -> ApplyResult {
    if tx.job(&new.key).is_some() {
        return Err(Rejection::JobAlreadyExists { id: new.key.id.clone() });
    }
    let mut job = new_job(tx, new);
    if enqueue_time_ms > 0 {
        job.enqueue_time_ms = enqueue_time_ms;
    }
    tx.bump_counters(job.key.shard, 1, 0);
    tx.put_payload(&job.key, &new.payload);
    for (i, a) in attempts.iter().enumerate() {
        let task_id = tx.new_task_id();
        tx.put_attempt(
            &job.key,
            &Attempt {
                attempt_number: i as u32 + 1,
                task_id,
                status: a.status,
                started_at_ms: a.started_at_ms,
                finished_at_ms: Some(a.finished_at_ms),
                result: a.result.clone(),
                error_code: a.error_code.clone(),
                error_data: a.error_data.clone(),
            },
        );
    }
    let n = attempts.len() as u32;
    job.last_attempt_number = n;
    let terminal = match attempts.last().map(|a| a.status) {
        None => None,
        Some(AttemptStatus::Succeeded) => Some(JobStatus::Succeeded),
        Some(AttemptStatus::Cancelled) => Some(JobStatus::Cancelled),
        Some(_) if n >= job.attempts_per_run() => Some(JobStatus::Failed),
        Some(_) => None,
    };
    match terminal {
        Some(status) => {
            job.pending = None;
            tx.set_status(&mut job, status);
        }
        None => {
            let start = job.pending.as_ref().map_or(tx.now_ms, |p| p.start_at_ms);
            let task_id = tx.new_task_id();
            job.pending = Some(Pending::new(task_id, n + 1, start));
            tx.place_pending(&mut job);
        }
    }
    tx.put_job(&job);
    Ok(Output::Imported { status: job.status, id: job.key.id })
}
