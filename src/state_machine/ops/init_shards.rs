//! InitShards: the first leader of a fresh cluster writes the shard map once.
//! A second attempt (a racing or restarted leader) is rejected and changes
//! nothing, so the map never moves under clients.
use crate::storage::kv::Kv;

use super::super::job::ShardSpec;
use super::super::outcome::{ApplyResult, Output, Rejection};
use super::super::tx::{Tables, Tx, META_SHARDS};

pub fn apply<K: Kv>(tx: &mut Tx<'_, K>, shards: &[ShardSpec]) -> ApplyResult {
    if !tx.shards().is_empty() {
        return Err(Rejection::ShardsAlreadyInitialised);
    }
    tx.put_meta(META_SHARDS, &shards.to_vec());
    Ok(Output::Done)
}
