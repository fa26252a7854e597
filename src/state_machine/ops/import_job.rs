//! ImportJob (ImportJobs): a job migrated from another system together with
//! its finished attempts (numbered 1..n in the given order; every attempt but
//! the last is FAILED, checked at the edge).
//!
//! Every attempt an import adds but the last must be FAILED
//! (`InvalidImport`, as Silo's `validate_import_attempts`).
//!
//! A new id creates the job. The status follows the last attempt: SUCCEEDED →
//! Succeeded, CANCELLED → Cancelled, FAILED → Scheduled for attempt n+1 at
//! `start_at_ms` while the retry policy allows another attempt, else Failed;
//! no attempts → Scheduled. A Scheduled import walks its limits like any new
//! attempt.
//!
//! An id that exists is **reimported**, as Silo does (its `import.rs`): the
//! migration tool sends the job again with the attempts that happened since.
//! - Running or Succeeded → `CannotReimport`, nothing written;
//! - the given attempts must start with the stored ones, equal in status,
//!   times, result and error, and add at least one → else `CannotReimport`;
//! - the new attempts are appended, the retry policy is replaced (payload,
//!   metadata, limits, priority and task group stay), a scheduled attempt is
//!   taken out of its queue and gives back its slots, a cancellation is
//!   cleared, and the status is decided as for a new import over all attempts,
//!   counted from the job's first attempt (as Silo counts failed attempts; a
//!   budget an earlier RestartJob granted does not carry over).
use crate::storage::kv::Kv;

use super::super::command::{ImportedAttempt, NewJob};
use super::super::job::{Attempt, AttemptStatus, Job, JobStatus, Ms, Pending};
use super::super::outcome::{ApplyResult, Output, Rejection};
use super::super::tx::{Tables, Tx};
use super::enqueue::new_job;

pub fn apply<K: Kv>(
    tx: &mut Tx<'_, K>,
    new: &NewJob,
    enqueue_time_ms: Ms,
    attempts: &[ImportedAttempt],
) -> ApplyResult {
    if let Some(existing) = tx.job(&new.key) {
        return reimport(tx, existing, new, attempts);
    }
    only_last_may_differ(attempts, 0)?;
    let mut job = new_job(tx, new);
    if enqueue_time_ms > 0 {
        job.enqueue_time_ms = enqueue_time_ms;
    }
    tx.bump_counters(job.key.shard, 1, 0);
    tx.put_payload(&job.key, &new.payload);
    write_attempts(tx, &job, attempts, 0);
    let start = job.pending.as_ref().map_or(tx.now_ms, |p| p.start_at_ms);
    settle(tx, &mut job, attempts.len() as u32, attempts.last(), start);
    Ok(Output::Imported { status: job.status, id: job.key.id })
}

fn reimport<K: Kv>(tx: &mut Tx<'_, K>, mut job: Job, new: &NewJob, attempts: &[ImportedAttempt]) -> ApplyResult {
    let refuse = |job: &Job, reason: String| {
        Err(Rejection::CannotReimport { id: job.key.id.clone(), reason, status: job.status })
    };
    match job.status {
        JobStatus::Running => return refuse(&job, "job is currently running".into()),
        JobStatus::Succeeded => return refuse(&job, "job already succeeded".into()),
        _ => {}
    }
    let stored = tx.attempts(&job.key);
    if attempts.len() < stored.len() {
        let reason = format!("reimport has {} attempts but job has {} existing attempts", attempts.len(), stored.len());
        return refuse(&job, reason);
    }
    if let Some(i) = stored.iter().zip(attempts).position(|(s, a)| !same_attempt(s, a)) {
        return refuse(&job, format!("existing attempt {} does not match reimport data", i + 1));
    }
    if attempts.len() == stored.len() {
        return refuse(&job, "reimport must include at least one new attempt".into());
    }
    only_last_may_differ(&attempts[stored.len()..], stored.len())?;
    tx.withdraw_pending(&mut job);
    job.retry_policy = new.retry_policy.clone();
    job.cancelled_at_ms = None;
    job.run_base_attempt = 0;
    write_attempts(tx, &job, &attempts[stored.len()..], stored.len() as u32);
    let start = if new.start_at_ms > 0 { new.start_at_ms } else { tx.now_ms };
    settle(tx, &mut job, attempts.len() as u32, attempts.last(), start);
    Ok(Output::Imported { status: job.status, id: job.key.id })
}

/// Silo's rule for the attempts an import adds (numbered from `after + 1`):
/// every one but the last ended FAILED.
fn only_last_may_differ(added: &[ImportedAttempt], after: usize) -> Result<(), Rejection> {
    match added.iter().rev().skip(1).position(|a| a.status != AttemptStatus::Failed) {
        None => Ok(()),
        Some(i) => Err(Rejection::InvalidImport {
            reason: format!(
                "import attempt {} must be Failed (only the last attempt may be non-Failed)",
                after + added.len() - 1 - i
            ),
        }),
    }
}

/// Whether a stored attempt is the given one (status, times, outcome).
fn same_attempt(stored: &Attempt, given: &ImportedAttempt) -> bool {
    stored.status == given.status
        && stored.started_at_ms == given.started_at_ms
        && stored.finished_at_ms == Some(given.finished_at_ms)
        && stored.result == given.result
        && stored.error_code == given.error_code
        && stored.error_data == given.error_data
}

/// Stores `attempts` as numbers `after + 1`, `after + 2`, ….
fn write_attempts<K: Kv>(tx: &mut Tx<'_, K>, job: &Job, attempts: &[ImportedAttempt], after: u32) {
    for (i, a) in attempts.iter().enumerate() {
        let task_id = tx.new_task_id();
        tx.put_attempt(
            &job.key,
            &Attempt {
                attempt_number: after + i as u32 + 1,
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
}

/// Decides the status after `n` attempts ending with `last`, and schedules
/// attempt n+1 at `start` (wall-clock ms) when another attempt is due.
fn settle<K: Kv>(tx: &mut Tx<'_, K>, job: &mut Job, n: u32, last: Option<&ImportedAttempt>, start: Ms) {
    job.last_attempt_number = n;
    let terminal = match last.map(|a| a.status) {
        None => None,
        Some(AttemptStatus::Succeeded) => Some(JobStatus::Succeeded),
        Some(AttemptStatus::Cancelled) => Some(JobStatus::Cancelled),
        Some(_) if n >= job.attempts_per_run() => Some(JobStatus::Failed),
        Some(_) => None,
    };
    match terminal {
        Some(status) => {
            job.pending = None;
            tx.set_status(job, status);
        }
        None => {
            let task_id = tx.new_task_id();
            job.pending = Some(Pending::new(task_id, n + 1, start));
            if job.status != JobStatus::Scheduled {
                tx.set_status(job, JobStatus::Scheduled);
            }
            tx.place_pending(job);
        }
    }
    tx.put_job(job);
}
