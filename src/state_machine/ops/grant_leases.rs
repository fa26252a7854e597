//! GrantLeases: the broker's pick for one LeaseTasks call, applied as one entry.
//!
//! Each named task is re-checked: it must still be queued as leasable, its job
//! Scheduled on that very attempt with every limit passed, due
//! (`start_at_ms ≤ now`) and without a cancellation record. Refresh tasks of
//! floating limits are granted alongside (returned separately). Tasks failing the check are skipped (the broker's view was stale);
//! the others become Running attempts leased to `worker_id`. A task is handed
//! to the worker only after this entry is committed and applied, so a leader
//! change can never give one attempt to two workers.
use crate::storage::kv::Kv;

use super::super::job::{Attempt, AttemptStatus, Gate, Job, JobStatus, Lease, LeaseKind, Ms, QueueKind};
use super::super::outcome::{ApplyResult, Output, RefreshView, TaskView};
use super::super::tx::{Tables, Tx};
use super::super::Answer;

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>, worker_id: &str, task_ids: &[String], lease_ms: Ms) -> ApplyResult {
    let mut tasks = Vec::with_capacity(task_ids.len());
    let mut refresh_tasks = Vec::new();
    for task_id in task_ids {
        let Some(queued) = tx.queued(task_id) else { continue };
        match &queued.kind {
            QueueKind::Attempt => {}
            QueueKind::Gate => continue,
            QueueKind::Refresh { key } => {
                if queued.start_at_ms <= tx.now_ms {
                    if let Some(view) = start_refresh(tx, &queued.job, key, task_id, worker_id, lease_ms) {
                        refresh_tasks.push(view);
                    }
                }
                continue;
            }
        }
        let Some(job) = tx.job(&queued.job) else { continue };
        let grantable = job.status == JobStatus::Scheduled
            && job.cancelled_at_ms.is_none()
            && job
                .pending
                .as_ref()
                .is_some_and(|p| &p.task_id == task_id && p.gate == Gate::Ready && p.start_at_ms <= tx.now_ms);
        if grantable {
            tasks.push(start_attempt(tx, job, worker_id, lease_ms));
        }
    }
    Ok(Output::Granted { tasks, refresh_tasks })
}

/// Leases a floating limit's scheduled refresh task to `worker_id`.
fn start_refresh<K: Kv>(
    tx: &mut Tx<'_, K>,
    owner: &super::super::job::JobKey,
    key: &str,
    task_id: &str,
    worker_id: &str,
    lease_ms: Ms,
) -> Option<RefreshView> {
    let st = tx.floating_state(owner.shard, &owner.tenant, key)?;
    if st.refresh_task.as_deref() != Some(task_id) {
        return None;
    }
    tx.dequeue(task_id);
    tx.put_lease(&Lease {
        task_id: task_id.to_string(),
        job: owner.clone(),
        kind: LeaseKind::Refresh { key: key.to_string() },
        attempt_number: 0,
        worker_id: worker_id.to_string(),
        granted_at_ms: tx.now_ms,
        lease_ms,
    });
    Some(RefreshView {
        task_id: task_id.to_string(),
        owner: owner.clone(),
        queue_key: key.to_string(),
        current_max_concurrency: st.current_max,
        last_refreshed_at_ms: st.last_refreshed_at_ms,
        metadata: st.metadata,
        task_group: st.task_group,
        lease_ms,
    })
}

/// Turns `job`'s pending attempt into a running attempt leased to `worker_id`.
/// Shared with LeaseJob.
pub fn start_attempt<K: Kv>(tx: &mut Tx<'_, K>, mut job: Job, worker_id: &str, lease_ms: Ms) -> TaskView {
    let pending = job.pending.take().expect("start_attempt needs a pending attempt");
    let now = tx.now_ms;
    tx.dequeue(&pending.task_id);
    tx.put_attempt(
        &job.key,
        &Attempt {
            attempt_number: pending.attempt_number,
            task_id: pending.task_id.clone(),
            status: AttemptStatus::Running,
            started_at_ms: now,
            finished_at_ms: None,
            result: None,
            error_code: None,
            error_data: None,
        },
    );
    tx.put_lease(&Lease {
        task_id: pending.task_id.clone(),
        job: job.key.clone(),
        kind: LeaseKind::Attempt,
        attempt_number: pending.attempt_number,
        worker_id: worker_id.to_string(),
        granted_at_ms: now,
        lease_ms,
    });
    job.last_attempt_number = pending.attempt_number;
    job.running_task = Some(pending.task_id.clone());
    tx.set_status(&mut job, JobStatus::Running);
    tx.put_job(&job);
    TaskView {
        task_id: pending.task_id,
        attempt_number: pending.attempt_number,
        relative_attempt_number: job.relative(pending.attempt_number),
        is_last_attempt: job.is_last_attempt(pending.attempt_number),
        // Only the proposer's caller reads it (`Answer`).
        payload: match tx.answer {
            Answer::Full => tx.payload(&job.key),
            Answer::Discarded => Vec::new(),
        },
        metadata: job.metadata,
        limits: job.limits,
        priority: job.priority,
        task_group: job.task_group,
        job: job.key,
        lease_ms,
    }
}
