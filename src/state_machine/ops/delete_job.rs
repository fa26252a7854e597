//! DeleteJob (SEMANTICS §8.4, DECISIONS #2–#4).
//!
//! Missing → `JobNotFound`; Scheduled or Running → `DeleteInProgress` (INTERNAL,
//! cancel first); terminal → the job, its payload and every attempt are removed.
use crate::storage::kv::Kv;

use super::super::job::JobKey;
use super::super::outcome::{ApplyResult, Output, Rejection};
use super::super::tx::{Tables, Tx};

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>, key: &JobKey) -> ApplyResult {
    let job = tx.job(key).ok_or(Rejection::JobNotFound)?;
    if !job.status.is_terminal() {
        return Err(Rejection::DeleteInProgress { id: key.id.clone() });
    }
    tx.delete_job_records(&job);
    tx.bump_counters(key.shard, -1, -1);
    Ok(Output::Done)
}
