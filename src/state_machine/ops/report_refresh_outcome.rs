//! ReportRefreshOutcome (SEMANTICS §10.3): a worker computed a floating limit.
//!
//! The refresh lease is found by task id; missing → `LeaseNotFound`.
//! - success → the max becomes `new_max_concurrency`, `last_refreshed` = now,
//!   failures reset; raising it grants waiters in this command, lowering it
//!   lets running holders finish;
//! - failure → failures k+1, no refresh before now + min(1 s × 2^k, 60 s);
//!   when requests are waiting a new refresh task is queued for that time.
use crate::storage::kv::Kv;

use super::super::command::RefreshOutcome;
use super::super::job::{LeaseKind, Slot};
use super::super::limits::QueueRef;
use super::super::outcome::{ApplyResult, Output, Rejection};
use super::super::tx::{Tables, Tx};

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>, task_id: &str, outcome: &RefreshOutcome) -> ApplyResult {
    let lease = tx.lease(task_id).ok_or(Rejection::LeaseNotFound)?;
    let LeaseKind::Refresh { key } = &lease.kind else { return Err(Rejection::LeaseNotFound) };
    tx.delete_lease(task_id);
    let (shard, tenant) = (lease.job.shard, lease.job.tenant.clone());
    let Some(mut st) = tx.floating_state(shard, &tenant, key) else { return Ok(Output::Done) };
    if st.refresh_task.as_deref() == Some(task_id) {
        st.refresh_task = None;
    }
    let now = tx.now_ms;
    let q = QueueRef { shard, tenant: tenant.clone(), slot: Slot { floating: true, key: key.clone() } };
    match outcome {
        RefreshOutcome::Success { new_max_concurrency } => {
            st.current_max = *new_max_concurrency;
            st.last_refreshed_at_ms = now;
            st.failures = 0;
            st.retry_at_ms = 0;
            tx.grant_later(q);
        }
        RefreshOutcome::Failure { .. } => {
            let backoff_ms = 1_000i64.saturating_mul(1i64 << st.failures.min(16)).min(60_000);
            st.failures = st.failures.saturating_add(1);
            st.retry_at_ms = now.saturating_add(backoff_ms);
            if tx.queue_state(&q).waiters > 0 && st.refresh_task.is_none() {
                let at = st.retry_at_ms;
                tx.queue_refresh(shard, &tenant, key, &mut st, at);
            }
        }
    }
    tx.put_floating_state(shard, &tenant, key, &st);
    Ok(Output::Done)
}
