//! CancelJob (SEMANTICS §8.1).
//!
//! Checks in order: missing → `JobNotFound`; record present →
//! `AlreadyCancelled`; Succeeded/Failed → `AlreadyTerminal`. Then:
//! - Scheduled → record written, status Cancelled now, pending attempt removed
//!   from the queue (or its parked request from its concurrency queue), slots
//!   it held released and waiters granted;
//! - Running → record only; the worker learns on its next heartbeat, and the
//!   job becomes Cancelled when it reports (or its lease expires);
//! - Cancelled without record (worker reported `cancelled` on its own) →
//!   record only.
use crate::storage::kv::Kv;

use super::super::job::{JobKey, JobStatus};
use super::super::outcome::{ApplyResult, Output, Rejection};
use super::super::tx::{Tables, Tx};

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>, key: &JobKey) -> ApplyResult {
    let mut job = tx.job(key).ok_or(Rejection::JobNotFound)?;
    if job.cancelled_at_ms.is_some() {
        return Err(Rejection::AlreadyCancelled);
    }
    if matches!(job.status, JobStatus::Succeeded | JobStatus::Failed) {
        return Err(Rejection::AlreadyTerminal);
    }
    job.cancelled_at_ms = Some(tx.now_ms);
    if job.status == JobStatus::Scheduled {
        tx.withdraw_pending(&mut job);
        tx.finish(&mut job, JobStatus::Cancelled);
    }
    tx.put_job(&job);
    Ok(Output::Done)
}
