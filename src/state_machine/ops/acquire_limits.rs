//! AcquireLimits: the leader's broker saw gate times pass (a future start, a
//! rate-limit re-check) and asks to resume those attempts' walks through their
//! limits. Each named task must still be a Gate entry of a Scheduled job on
//! that very attempt, and due on the command's clock; otherwise it is skipped.
use crate::storage::kv::Kv;

use super::super::job::{Gate, JobStatus, QueueKind};
use super::super::outcome::{ApplyResult, Output};
use super::super::tx::{Tables, Tx};

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>, task_ids: &[String]) -> ApplyResult {
    for task_id in task_ids {
        let Some(queued) = tx.queued(task_id) else { continue };
        if queued.kind != QueueKind::Gate || queued.start_at_ms > tx.now_ms {
            continue;
        }
        let Some(mut job) = tx.job(&queued.job) else { continue };
        let current = job.status == JobStatus::Scheduled
            && job.pending.as_ref().is_some_and(|p| &p.task_id == task_id && matches!(p.gate, Gate::Timer { .. }));
        if !current {
            continue;
        }
        tx.dequeue(task_id);
        tx.place_pending(&mut job);
        tx.put_job(&job);
    }
    Ok(Output::Done)
}
