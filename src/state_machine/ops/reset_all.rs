//! ResetAll (ResetShards in dev mode): every job, attempt, lease and queue
//! entry is removed; the shard map and the clock stay.
use crate::storage::kv::Kv;

use super::super::outcome::{ApplyResult, Output};
use super::super::tx::Tx;

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>) -> ApplyResult {
    let count = tx.wipe_jobs();
    Ok(Output::Removed { count })
}
