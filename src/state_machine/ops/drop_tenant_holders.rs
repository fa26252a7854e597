//! DropTenantHolders: every concurrency-slot holder of one tenant on one shard
//! is forgotten, so queues stuck behind lost holders grant again (in this
//! command). Attempts that held those slots keep running; their later release
//! finds no holder record and frees nothing twice.
use crate::storage::codec::decode_or_die;
use crate::storage::keys;
use crate::storage::kv::Kv;

use super::super::job::{QueueState, Slot};
use super::super::limits::QueueRef;
use super::super::outcome::{ApplyResult, Output};
use super::super::tx::Tx;

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>, shard: u32, tenant: &str) -> ApplyResult {
    let holders = tx.kv_scan_n(&keys::holders_of_tenant(shard, tenant), usize::MAX);
    for (k, _) in &holders {
        tx.kv_delete(k);
    }
    let prefix = keys::queues_of_tenant(shard, tenant);
    for (k, v) in tx.kv_scan_n(&prefix, usize::MAX) {
        let Some((floating, key)) = keys::parse_queue_slot(&k, &prefix) else { continue };
        let mut st: QueueState = decode_or_die("queue", &v);
        st.holders = 0;
        let q = QueueRef { shard, tenant: tenant.to_string(), slot: Slot { floating, key } };
        tx.put_queue_state(&q, &st); // removes the queue (and its cursor) when no one waits
        tx.grant_later(q);
    }
    Ok(Output::Removed { count: holders.len() as u64 })
}
