//! Read-side views (GetJob, GetJobResult, heartbeat checks) over applied state.
//! Pure functions of the store; the gRPC layer turns them into messages.
use super::job::{Attempt, AttemptStatus, Job, JobKey, JobStatus, Ms};
use super::outcome::Rejection;
use super::tx::Tables;

pub struct JobView {
    pub job: Job,
    pub payload: Vec<u8>,
    /// Empty unless asked for.
    pub attempts: Vec<Attempt>,
    /// Result of the latest succeeded attempt, only when Succeeded.
    pub result: Option<Vec<u8>>,
    /// When the pending attempt becomes eligible; only while Scheduled.
    pub next_attempt_starts_after_ms: Option<Ms>,
}

pub fn get_job<T: Tables>(t: &T, key: &JobKey, include_attempts: bool) -> Result<JobView, Rejection> {
    let job = t.job(key).ok_or(Rejection::JobNotFound)?;
    let result = if job.status == JobStatus::Succeeded {
        t.attempt(key, job.last_attempt_number).and_then(|a| a.result)
    } else {
        None
    };
    let next_attempt_starts_after_ms = match (&job.status, &job.pending) {
        (JobStatus::Scheduled, Some(p)) => Some(p.start_at_ms),
        _ => None,
    };
    Ok(JobView {
        payload: t.payload(key),
        attempts: if include_attempts { t.attempts(key) } else { Vec::new() },
        result,
        next_attempt_starts_after_ms,
        job,
    })
}

pub enum JobResult {
    Succeeded { finished_at_ms: Ms, result: Vec<u8> },
    Failed { finished_at_ms: Ms, error_code: String, error_data: Vec<u8> },
    Cancelled { finished_at_ms: Ms, cancelled_at_ms: Ms },
}

/// Error for a job that has not finished: FAILED_PRECONDITION in the gRPC map.
#[derive(Debug, PartialEq, Eq)]
pub struct NotComplete(pub JobStatus);

pub fn get_job_result<T: Tables>(t: &T, key: &JobKey) -> Result<Result<JobResult, NotComplete>, Rejection> {
    let job = t.job(key).ok_or(Rejection::JobNotFound)?;
    let latest = t.attempt(key, job.last_attempt_number);
    let changed = job.status_changed_at_ms;
    Ok(match job.status {
        JobStatus::Scheduled | JobStatus::Running => Err(NotComplete(job.status)),
        JobStatus::Succeeded => {
            let a = latest.filter(|a| a.status == AttemptStatus::Succeeded);
            Ok(JobResult::Succeeded {
                finished_at_ms: a.as_ref().and_then(|a| a.finished_at_ms).unwrap_or(changed),
                result: a.and_then(|a| a.result).unwrap_or_default(),
            })
        }
        JobStatus::Failed => {
            let a = latest.filter(|a| a.status == AttemptStatus::Failed);
            Ok(JobResult::Failed {
                finished_at_ms: a.as_ref().and_then(|a| a.finished_at_ms).unwrap_or(changed),
                error_code: a.as_ref().and_then(|a| a.error_code.clone()).unwrap_or_default(),
                error_data: a.and_then(|a| a.error_data).unwrap_or_default(),
            })
        }
        // DECISIONS #11: the job's status decides, whatever the latest attempt says.
        JobStatus::Cancelled => {
            let cancelled_at_ms = match latest {
                Some(a) if a.status == AttemptStatus::Cancelled => a.finished_at_ms.unwrap_or(changed),
                _ => changed,
            };
            Ok(JobResult::Cancelled { finished_at_ms: changed, cancelled_at_ms })
        }
    })
}

/// What a heartbeat needs to know about a lease.
pub struct LeaseCheck {
    pub cancelled_at_ms: Option<Ms>,
}

pub enum HeartbeatError {
    LeaseNotFound,
    OwnerMismatch,
}

pub fn check_lease<T: Tables>(t: &T, task_id: &str, worker_id: &str) -> Result<LeaseCheck, HeartbeatError> {
    let lease = t.lease(task_id).ok_or(HeartbeatError::LeaseNotFound)?;
    if lease.worker_id != worker_id {
        return Err(HeartbeatError::OwnerMismatch);
    }
    let cancelled_at_ms = t.job(&lease.job).and_then(|j| j.cancelled_at_ms);
    Ok(LeaseCheck { cancelled_at_ms })
}
