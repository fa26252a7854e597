//! Whole-store invariants, checked after every apply in the property tests and
//! on demand by `silo` debugging tools. Each violation is described in words.
use std::collections::BTreeSet;

use super::job::{AttemptStatus, JobStatus};
use super::tx::Tables;
use crate::storage::codec::decode_or_die;
use crate::storage::keys;

pub fn check<T: Tables>(t: &T) -> Vec<String> {
    let mut errors = Vec::new();
    let mut queued_ids = BTreeSet::new();
    for q in t.queued_all() {
        queued_ids.insert(q.task_id.clone());
        match t.job(&q.job) {
            None => errors.push(format!("queued task {} belongs to a missing job", q.task_id)),
            Some(job) => {
                let matches = job.status == JobStatus::Scheduled
                    && job.pending.as_ref().is_some_and(|p| p.task_id == q.task_id && p.start_at_ms == q.start_at_ms);
                if !matches {
                    errors
                        .push(format!("queued task {} does not match job {:?} ({:?})", q.task_id, job.key, job.status));
                }
            }
        }
    }
    let leases = t.leases();
    let mut leased_ids = BTreeSet::new();
    for lease in &leases {
        leased_ids.insert(lease.task_id.clone());
        match t.job(&lease.job) {
            Some(job) if job.status == JobStatus::Running && job.running_task.as_deref() == Some(&lease.task_id) => {
                match t.attempt(&job.key, lease.attempt_number) {
                    Some(a) if a.status == AttemptStatus::Running && a.task_id == lease.task_id => {}
                    _ => errors.push(format!("lease {} has no running attempt", lease.task_id)),
                }
            }
            _ => errors.push(format!("lease {} is not the running attempt of its job", lease.task_id)),
        }
    }
    for (_, bytes) in t.kv_scan(&keys::table(keys::JOB)) {
        let job: super::job::Job = decode_or_die("job", &bytes);
        let id = format!("{:?}", job.key);
        match job.status {
            JobStatus::Scheduled => match &job.pending {
                Some(p) if queued_ids.contains(&p.task_id) => {}
                _ => errors.push(format!("scheduled job {id} has no queued pending attempt")),
            },
            JobStatus::Running => match &job.running_task {
                Some(task) if leased_ids.contains(task) => {}
                _ => errors.push(format!("running job {id} has no lease")),
            },
            _ => {
                if job.pending.is_some() || job.running_task.is_some() {
                    errors.push(format!("terminal job {id} still has a pending or running attempt"));
                }
            }
        }
        if job.status != JobStatus::Scheduled && job.pending.is_some() {
            errors.push(format!("non-scheduled job {id} has a pending attempt"));
        }
        let attempts = t.attempts(&job.key);
        let running = attempts.iter().filter(|a| a.status == AttemptStatus::Running).count();
        if running > usize::from(job.status == JobStatus::Running) {
            errors.push(format!("job {id} has {running} running attempts in status {:?}", job.status));
        }
        if attempts.last().map_or(0, |a| a.attempt_number) != job.last_attempt_number {
            errors.push(format!("job {id} last_attempt_number disagrees with its attempts"));
        }
        if attempts.windows(2).any(|w| w[0].attempt_number >= w[1].attempt_number) {
            errors.push(format!("job {id} attempts are not strictly ascending"));
        }
    }
    errors
}
