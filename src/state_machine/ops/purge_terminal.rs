//! PurgeTerminal (the `retention` setting): terminal jobs that finished before
//! `before_ms` are deleted oldest first, at most `max` per command, exactly as
//! DeleteJob would (job, payload, attempts, index entries). The cut-off is
//! computed by the proposing leader; the index makes each purge a range scan,
//! started at a cursor past the entries purged before (their deleted keys
//! would otherwise be walked by every later purge).
use crate::storage::keys;
use crate::storage::kv::Kv;

use super::super::job::Ms;
use super::super::outcome::{ApplyResult, Output};
use super::super::tx::{Tables, Tx, META_TERMINAL_CURSOR};

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>, before_ms: Ms, max: u32) -> ApplyResult {
    let mut removed = 0u64;
    let prefix = keys::table(keys::TERMINAL);
    let cursor_key = keys::meta(META_TERMINAL_CURSOR);
    let from = tx.kv_get(&cursor_key).unwrap_or_else(|| prefix.clone());
    let mut last_purged = None;
    for (k, _) in tx.kv_scan_from_n(&prefix, &from, max as usize) {
        let Some((finished_at_ms, key)) = keys::parse_terminal(&k) else { continue };
        if finished_at_ms >= before_ms {
            break;
        }
        if let Some(job) = tx.job(&key) {
            tx.delete_job_records(&job);
            tx.bump_counters(key.shard, -1, -1);
            removed += 1;
        } else {
            tx.kv_delete(&k);
        }
        last_purged = Some(k);
    }
    if let Some(k) = last_purged {
        tx.kv_put(cursor_key, k);
    }
    Ok(Output::Removed { count: removed })
}
