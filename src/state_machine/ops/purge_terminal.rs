//! PurgeTerminal (the `retention` setting): terminal jobs that finished before
//! `before_ms` are deleted oldest first, at most `max` per command, exactly as
//! DeleteJob would (job, payload, attempts, index entries). The cut-off is
//! computed by the proposing leader; the index makes each purge a range scan.
use crate::storage::keys;
use crate::storage::kv::Kv;

use super::super::job::Ms;
use super::super::outcome::{ApplyResult, Output};
use super::super::tx::{Tables, Tx};

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>, before_ms: Ms, max: u32) -> ApplyResult {
    let mut removed = 0u64;
    for (k, _) in tx.kv_scan_n(&keys::table(keys::TERMINAL), max as usize) {
        let Some((finished_at_ms, key)) = keys::parse_terminal(&k) else { continue };
        if finished_at_ms >= before_ms {
            break;
        }
        let Some(job) = tx.job(&key) else {
            tx.kv_delete(&k);
            continue;
        };
        tx.delete_job_records(&job);
        tx.bump_counters(key.shard, -1, -1);
        removed += 1;
    }
    Ok(Output::Removed { count: removed })
}
