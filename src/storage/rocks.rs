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

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options, ReadOptions, WriteBatch,
    DB,
};

use super::keys;
use super::kv::Kv;
use crate::config::StorageConfig;

/// Opens (or creates) the node's database with the `[storage]` sizing.
///
/// Every memory pool is fixed by configuration, none grows with the number of
/// jobs (issue #10):
/// - one LRU block cache holds data blocks *and* index and filter blocks
///   (`cache_index_and_filter_blocks`). Indexes and filters are partitioned
///   (`TwoLevelIndexSearch` + `partition_filters`): a point lookup loads one
///   small partition, never a whole table's index, which is what thrashed the
///   cache at a few hundred thousand jobs. The top-level index of each table
///   and level-0 filters stay pinned;
/// - memtables of all column families share `write_buffers_mb`;
/// - levels 0–1 are uncompressed (queue records are short-lived and read
///   often), lower levels use `compression`, the bottom level
///   `bottommost_compression`; level sizes are dynamic so the bottom level
///   holds ~90% of the data.
pub fn open(path: &Path, st: &StorageConfig) -> Result<Arc<DB>, rocksdb::Error> {
    const MIB: usize = 1024 * 1024;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_keep_log_file_num(4);
    opts.set_max_total_wal_size(256 * MIB as u64);
    opts.set_max_background_jobs(st.background_jobs);
    opts.set_db_write_buffer_size(st.write_buffers_mb * MIB);
    opts.set_bytes_per_sync(MIB as u64);
    // State-machine writes skip the WAL (the Raft log already holds every
    // change; `raft::sm_store` apply). What they leave in memtables becomes
    // durable only by a flush, so every flush must cover every column
    // family at one point: the state and its last-applied marker never
    // land on disk apart.
    opts.set_atomic_flush(true);
    let cache = rocksdb::Cache::new_lru_cache(st.block_cache_mb * MIB)?;
    let compression = compression_type(&st.compression);
    let cf_opts = || {
        let mut block = rocksdb::BlockBasedOptions::default();
        block.set_block_size(st.block_size_kb * 1024);
        if st.bloom_bits_per_key > 0.0 {
            block.set_bloom_filter(st.bloom_bits_per_key, false);
        }
        block.set_block_cache(&cache);
        block.set_cache_index_and_filter_blocks(true);
        block.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        block.set_partition_filters(true);
        block.set_metadata_block_size(4096);
        block.set_pin_top_level_index_and_filter(true);
        block.set_pin_l0_filter_and_index_blocks_in_cache(true);
        block.set_format_version(5);
        let mut o = Options::default();
        o.set_block_based_table_factory(&block);
        o.set_write_buffer_size(st.write_buffer_mb * MIB);
        o.set_max_write_buffer_number(3);
        o.set_level_compaction_dynamic_level_bytes(true);
        o.set_compression_per_level(&[
            DBCompressionType::None,
            DBCompressionType::None,
            compression,
            compression,
            compression,
            compression,
            compression,
        ]);
        o.set_bottommost_compression_type(compression_type(&st.bottommost_compression));
        o
    };
    if st.statistics {
        opts.enable_statistics();
    }
    let cfs = keys::ALL_CFS.into_iter().map(|name| ColumnFamilyDescriptor::new(name, cf_opts()));
    remove_flush_scratch(path);
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?))
}

/// Flushes every column family's memtables to disk in one atomic flush.
/// RocksDB 7.9 flushes a single named column family alone even with
/// `atomic_flush`, and the crate exposes no multi-family flush, so this
/// takes a throwaway checkpoint: creating one flushes every family
/// atomically (then its hard links are removed). Used by FlushShard and at
/// shutdown: state-machine writes are not in the WAL, so without a flush a
/// restart re-applies them from the Raft log. Blocking.
pub fn flush_all(db: &DB) -> Result<(), rocksdb::Error> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let scratch = db.path().with_extension(format!("flush-{}-{n}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let made = rocksdb::checkpoint::Checkpoint::new(db).and_then(|c| c.create_checkpoint(&scratch));
    let _ = std::fs::remove_dir_all(&scratch);
    made
}

/// Removes checkpoints [`flush_all`] left beside the database when the
/// process died mid-flush (their hard links would keep old tables alive).
fn remove_flush_scratch(db_path: &Path) {
    let (Some(dir), Some(name)) = (db_path.parent(), db_path.file_name()) else { return };
    let prefix = format!("{}.flush-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) && n.ends_with(".tmp") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// RocksDB compression for a `[storage]` name (validated by `Config::validate`).
fn compression_type(name: &str) -> DBCompressionType {
    match name {
        "snappy" => DBCompressionType::Snappy,
        "lz4" => DBCompressionType::Lz4,
        "zstd" => DBCompressionType::Zstd,
        _ => DBCompressionType::None,
    }
}

pub fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name).unwrap_or_else(|| panic!("column family {name} is created at open"))
}

/// Iterates the entries of column family `name` under `prefix`, in key order,
/// from `from` on (`from` ≥ `prefix`), one at a time. The iterator is bounded
/// by the prefix's end so that it never walks deleted keys beyond it.
pub fn prefix_iter_from<'a>(
    db: &'a DB,
    name: &str,
    prefix: &[u8],
    from: &[u8],
) -> impl Iterator<Item = (Box<[u8]>, Box<[u8]>)> + 'a {
    bounded_iter(db, name, prefix, from, ReadOptions::default())
}

/// [`prefix_iter_from`] with the caller's read options (e.g. a snapshot).
fn bounded_iter<'a>(
    db: &'a DB,
    name: &str,
    prefix: &[u8],
    from: &[u8],
    mut ro: ReadOptions,
) -> impl Iterator<Item = (Box<[u8]>, Box<[u8]>)> + 'a {
    if let Some(end) = keys::prefix_end(prefix) {
        ro.set_iterate_upper_bound(end);
    }
    let start = if from > prefix { from } else { prefix };
    db.iterator_cf_opt(cf(db, name), ro, IteratorMode::From(start, Direction::Forward))
        .map(|item| item.unwrap_or_else(|e| panic!("rocksdb iteration failed: {e}")))
}

/// [`prefix_iter_from`] from the prefix's first key (start-up rebuilds of
/// large tables stream through it).
pub fn prefix_iter<'a>(db: &'a DB, name: &str, prefix: &[u8]) -> impl Iterator<Item = (Box<[u8]>, Box<[u8]>)> + 'a {
    prefix_iter_from(db, name, prefix, prefix)
}

/// Every entry of column family `name` whose key starts with `prefix`.
pub fn scan(db: &DB, name: &str, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    scan_n(db, name, prefix, prefix, usize::MAX, |_| false)
}

/// The first `n` entries under `prefix`, from `from` on, for which `skip`
/// is false.
fn scan_n(
    db: &DB,
    name: &str,
    prefix: &[u8],
    from: &[u8],
    n: usize,
    skip: impl Fn(&[u8]) -> bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    if n == 0 {
        return Vec::new();
    }
    prefix_iter_from(db, name, prefix, from)
        .filter(|(k, _)| !skip(k))
        .take(n)
        .map(|(k, v)| (k.into_vec(), v.into_vec()))
        .collect()
}

/// [`ReadPages`](crate::storage::kv::ReadPages) over the applied state in
/// the `sm` column family (the broker's pages).
pub struct DbPages(pub Arc<DB>);

impl crate::storage::kv::ReadPages for DbPages {
    fn page(&self, prefix: &[u8], from: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        scan_n(&self.0, keys::CF_SM, prefix, from, n, |_| false)
    }
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
    fn scan_from_n(&self, prefix: &[u8], from: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        scan_n(self.db, keys::CF_SM, prefix, from, n, |_| false)
    }
}

/// Buffered writes over the `sm` column family: reads see earlier writes of the
/// same batch; [`Overlay::into_batch`] turns them into one `WriteBatch`.
///
/// Reads that reach RocksDB are remembered for the rest of the batch (a
/// second read of the same key, e.g. a queued task checked and then taken
/// out, or the purge cursor read once per finished job, costs a map lookup,
/// not a memtable search). Both maps grow with the keys one batch touches;
/// the apply loop writes a batch out once [`Overlay::len`] or
/// [`Overlay::bytes`] passes its bound.
pub struct Overlay<'a> {
    db: &'a DB,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    reads: std::cell::RefCell<std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>>,
    /// Key and value bytes put in either map (an overwrite counts again: an
    /// upper bound).
    bytes: std::cell::Cell<usize>,
}

impl<'a> Overlay<'a> {
    pub fn new(db: &'a DB) -> Self {
        Overlay { db, writes: BTreeMap::new(), reads: Default::default(), bytes: Default::default() }
    }

    /// Keys this batch has written or read from RocksDB so far.
    pub fn len(&self) -> usize {
        self.writes.len() + self.reads.borrow().len()
    }

    /// At least the bytes this batch holds in memory (keys and values).
    pub fn bytes(&self) -> usize {
        self.bytes.get()
    }

    fn count(&self, key: &[u8], value: Option<&Vec<u8>>) {
        self.bytes.set(self.bytes.get() + key.len() + value.map_or(0, Vec::len));
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        if let Some(v) = self.writes.get(key) {
            return v.clone();
        }
        if let Some(v) = self.reads.borrow().get(key) {
            return v.clone();
        }
        let v = ReadKv { db: self.db }.get(key);
        self.count(key, v.as_ref());
        self.reads.borrow_mut().insert(key.to_vec(), v.clone());
        v
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.count(&key, Some(&value));
        self.reads.get_mut().remove(&key);
        self.writes.insert(key, Some(value));
    }
    fn delete(&mut self, key: &[u8]) {
        self.count(key, None);
        self.reads.get_mut().remove(key);
        self.writes.insert(key.to_vec(), None);
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.scan_from_n(prefix, prefix, usize::MAX)
    }
    fn scan_from_n(&self, prefix: &[u8], from: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        // Stored entries not shadowed by this batch, then this batch's live
        // writes, merged in key order: the first n of the union.
        let start = if from > prefix { from } else { prefix };
        let writes = || self.writes.range(start.to_vec()..).take_while(|(k, _)| k.starts_with(prefix));
        let stored = scan_n(self.db, keys::CF_SM, prefix, start, n, |k| self.writes.contains_key(k));
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for (k, v) in writes() {
            if let Some(v) = v {
                merged.insert(k.clone(), v.clone());
            }
        }
        merged.into_iter().take(n).collect()
    }
}

/// An owned, point-in-time read view of the state machine (`sm` column
/// family): every read through it sees the state as of its creation, however
/// many commands are applied meanwhile. One SQL statement reads through one
/// (so a row cannot show up twice while an index entry moves under the scan).
/// RocksDB keeps the versions it pins until it is dropped, so holders keep it
/// short-lived (a statement is bounded by its timeout).
pub struct OwnedSnapshot {
    // Declared before `db` so that it is released before the handle it borrows.
    snapshot: rocksdb::SnapshotWithThreadMode<'static, DB>,
    db: Arc<DB>,
}

impl OwnedSnapshot {
    pub fn new(db: Arc<DB>) -> Self {
        let snapshot = db.snapshot();
        // SAFETY: the snapshot borrows the `DB` behind the `Arc`, whose address
        // is stable; this struct owns a clone of that `Arc` and drops the
        // snapshot first (field order), so the borrow never outlives the DB.
        let snapshot = unsafe {
            std::mem::transmute::<rocksdb::SnapshotWithThreadMode<'_, DB>, rocksdb::SnapshotWithThreadMode<'static, DB>>(
                snapshot,
            )
        };
        OwnedSnapshot { snapshot, db }
    }

    fn read_options(&self) -> ReadOptions {
        let mut ro = ReadOptions::default();
        ro.set_snapshot(&self.snapshot);
        ro
    }

    /// Up to `n` entries under `prefix` from key `from` on (`from` ≥ `prefix`
    /// or empty), in key order.
    pub fn scan_from_n(&self, prefix: &[u8], from: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        bounded_iter(&self.db, keys::CF_SM, prefix, from, self.read_options())
            .take(n)
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect()
    }
}

impl Kv for OwnedSnapshot {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.db
            .get_cf_opt(cf(&self.db, keys::CF_SM), key, &self.read_options())
            .unwrap_or_else(|e| panic!("rocksdb read failed: {e}"))
    }
    fn put(&mut self, _key: Vec<u8>, _value: Vec<u8>) {
        unreachable!("OwnedSnapshot is read-only")
    }
    fn delete(&mut self, _key: &[u8]) {
        unreachable!("OwnedSnapshot is read-only")
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.scan_from_n(prefix, prefix, usize::MAX)
    }
    fn scan_from_n(&self, prefix: &[u8], from: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        OwnedSnapshot::scan_from_n(self, prefix, from, n)
    }
}
