//! The node's RocksDB database and a [`Kv`] overlay over its `sm` column family.
//!
//! One database holds the Raft log, the Raft metadata and the state machine in
//! separate column families. They share one write-ahead log, so the fsync of a
//! log append also makes every earlier state-machine write durable; state
//! machine batches are therefore written without their own fsync (they can be
//! re-applied from the log after a crash, since `last_applied` travels in the
//! same batch).
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, DB};

use super::keys;
use super::kv::Kv;

pub fn open(path: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_keep_log_file_num(4);
    opts.set_max_total_wal_size(256 * 1024 * 1024);
    opts.increase_parallelism(2);
    // Point lookups of absent keys (a new job id, a reaped lease) are common:
    // bloom filters answer them without reading data blocks.
    let cache = rocksdb::Cache::new_lru_cache(64 * 1024 * 1024)?;
    let cf_opts = || {
        let mut block = rocksdb::BlockBasedOptions::default();
        block.set_bloom_filter(10.0, false);
        block.set_block_cache(&cache);
        block.set_cache_index_and_filter_blocks(true);
        let mut o = Options::default();
        o.set_block_based_table_factory(&block);
        o.set_write_buffer_size(64 * 1024 * 1024);
        o
    };
    let cfs = [keys::CF_LOG, keys::CF_RAFT_META, keys::CF_SM, keys::CF_SM_META]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, cf_opts()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?))
}

pub fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name).unwrap_or_else(|| panic!("column family {name} is created at open"))
}

/// Every entry of column family `name` whose key starts with `prefix`.
pub fn scan(db: &DB, name: &str, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    scan_n(db, name, prefix, usize::MAX, |_| false)
}

/// The first `n` entries under `prefix` for which `skip` is false.
fn scan_n(db: &DB, name: &str, prefix: &[u8], n: usize, skip: impl Fn(&[u8]) -> bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    if n == 0 {
        return out;
    }
    for item in db.iterator_cf(cf(db, name), IteratorMode::From(prefix, Direction::Forward)) {
        let (k, v) = item.unwrap_or_else(|e| panic!("rocksdb iteration failed: {e}"));
        if !k.starts_with(prefix) {
            break;
        }
        if skip(&k) {
            continue;
        }
        out.push((k.to_vec(), v.to_vec()));
        if out.len() >= n {
            break;
        }
    }
    out
}

/// Read-only [`Kv`] over the applied state (used by reads on any node).
pub struct ReadKv<'a> {
    pub db: &'a DB,
}

impl ReadKv<'_> {
    /// Length in bytes of the value at `key` (0 when absent), read without
    /// copying it (a pinned slice of the block cache).
    pub fn value_len(&self, key: &[u8]) -> usize {
        self.db
            .get_pinned_cf(cf(self.db, keys::CF_SM), key)
            .unwrap_or_else(|e| panic!("rocksdb read failed: {e}"))
            .map_or(0, |v| v.len())
    }
}

impl Kv for ReadKv<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.db.get_cf(cf(self.db, keys::CF_SM), key).unwrap_or_else(|e| panic!("rocksdb read failed: {e}"))
    }
    fn put(&mut self, _key: Vec<u8>, _value: Vec<u8>) {
        unreachable!("ReadKv is read-only")
    }
    fn delete(&mut self, _key: &[u8]) {
        unreachable!("ReadKv is read-only")
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        scan(self.db, keys::CF_SM, prefix)
    }
    fn scan_prefix_n(&self, prefix: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        scan_n(self.db, keys::CF_SM, prefix, n, |_| false)
    }
}

/// Buffered writes over the `sm` column family: reads see earlier writes of the
/// same batch; [`Overlay::into_batch`] turns them into one `WriteBatch`.
pub struct Overlay<'a> {
    db: &'a DB,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Overlay<'a> {
    pub fn new(db: &'a DB) -> Self {
        Overlay { db, writes: BTreeMap::new() }
    }

    pub fn into_batch(self, batch: &mut WriteBatch) {
        let cf = cf(self.db, keys::CF_SM);
        for (k, v) in self.writes {
            match v {
                Some(v) => batch.put_cf(cf, k, v),
                None => batch.delete_cf(cf, k),
            }
        }
    }
}

impl Kv for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(v) => v.clone(),
            None => ReadKv { db: self.db }.get(key),
        }
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }
    fn delete(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), None);
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.scan_prefix_n(prefix, usize::MAX)
    }
    fn scan_prefix_n(&self, prefix: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        // Stored entries not shadowed by this batch, then this batch's live
        // writes, merged in key order: the first n of the union.
        let writes = || self.writes.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix));
        let stored = scan_n(self.db, keys::CF_SM, prefix, n, |k| self.writes.contains_key(k));
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for (k, v) in writes() {
            if let Some(v) = v {
                merged.insert(k.clone(), v.clone());
            }
        }
        merged.into_iter().take(n).collect()
    }
}
