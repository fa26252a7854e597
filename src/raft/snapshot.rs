//! Snapshots that never hold the state in memory (issue #10).
//!
//! - **Build** (leader or follower, openraft's snapshot policy): a RocksDB
//!   checkpoint of the node's database in `<data>/snapshots/snap-<id>/`. It
//!   flushes the memtables and hard-links the table files, so building costs
//!   the same at ten million jobs as at none and adds no copy on disk at the
//!   time it is taken (the links keep files alive that compaction would have
//!   deleted, until the next snapshot replaces this one). The snapshot's log
//!   id and membership are read back from the checkpoint itself, so they match
//!   its contents exactly.
//! - **Send** ([`for_each_record`]): the leader opens the checkpoint read-only
//!   and streams the `sm` column family in key order, in chunks of
//!   `raft.snapshot_chunk_kb` (network.rs); at most a few chunks are in memory.
//! - **Receive** ([`SstWriter`]): the follower writes the records as they
//!   arrive into one SST file (`snapshots/incoming-<id>.sst`).
//! - **Install** (`sm_store.rs`): the old state is dropped with one range
//!   delete and the file is ingested (hard-linked into the database, not
//!   copied); a marker in `sm_meta` makes a crash in the middle redo the
//!   install from the same file at start-up. The follower then checkpoints
//!   itself, so it can serve the snapshot if it becomes leader.
//!
//! Only one checkpoint is current (`snapshots/CURRENT` names it); a replaced
//! one is deleted once the last transfer reading it finishes.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rocksdb::{IteratorMode, Options, DB};

use super::types::{LogId, SnapshotMeta, StoredMembership};
use crate::storage::{codec, keys};

/// Name of the snapshot directory under the data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";
const CURRENT: &str = "CURRENT";
const META_FILE: &str = "silo-snapshot.meta";

/// What a snapshot's data is on this node (openraft's `SnapshotData`).
#[derive(Debug)]
pub enum SnapshotData {
    /// A checkpoint of this node's database: what this node sends.
    Checkpoint(Arc<Checkpoint>),
    /// A received SST file of the `sm` column family, ready to ingest;
    /// `None` is an empty state.
    Sst(Option<PathBuf>),
}

/// A checkpoint directory; deleted when retired and no longer read.
#[derive(Debug)]
pub struct Checkpoint {
    pub dir: PathBuf,
    retired: AtomicBool,
}

impl Drop for Checkpoint {
    fn drop(&mut self) {
        if self.retired.load(Ordering::Acquire) {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "removing a replaced snapshot");
            }
        }
    }
}

/// The node's snapshot directory and its current checkpoint.
pub struct SnapshotStore {
    dir: PathBuf,
    current: parking_lot::Mutex<Option<(SnapshotMeta, Arc<Checkpoint>)>>,
    /// Serializes building and installing (both replace the current one).
    replacing: parking_lot::Mutex<()>,
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn other(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Opens a checkpoint read-only (its own small cache; nothing written).
fn open_read_only(dir: &Path) -> std::io::Result<DB> {
    let cfs = [keys::CF_LOG, keys::CF_RAFT_META, keys::CF_SM, keys::CF_SM_META];
    DB::open_cf_for_read_only(&Options::default(), dir, cfs, false).map_err(other)
}

/// Calls `f` with every `sm` record of the checkpoint in `dir`, in key order,
/// until it returns false. Memory: one record at a time.
pub fn for_each_record(dir: &Path, mut f: impl FnMut(&[u8], &[u8]) -> bool) -> std::io::Result<()> {
    let db = open_read_only(dir)?;
    let sm = db.cf_handle(keys::CF_SM).ok_or_else(|| other("checkpoint without the sm column family"))?;
    for item in db.iterator_cf(sm, IteratorMode::Start) {
        let (k, v) = item.map_err(other)?;
        if !f(&k, &v) {
            break;
        }
    }
    Ok(())
}

/// Writes the `sm` records of the checkpoint in `dir` into an SST file at
/// `path` (None: there was no record). Reads on one thread, writes on this
/// one; memory: a bounded queue of records.
pub fn export_sst(dir: &Path, path: PathBuf) -> std::io::Result<Option<PathBuf>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
    let dir = dir.to_path_buf();
    let reader =
        std::thread::spawn(move || for_each_record(&dir, |k, v| tx.send(Ok((k.to_vec(), v.to_vec()))).is_ok()));
    let written = SstWriter::new(path).write_all(rx.into_iter());
    reader.join().map_err(|_| other("snapshot reader panicked"))??;
    written
}

impl SnapshotStore {
    /// Opens `<data_dir>/snapshots`, keeping the current checkpoint and
    /// deleting everything else (half-built checkpoints, replaced ones, old
    /// received files not named by an install marker).
    pub fn open(data_dir: &Path, keep: Option<&str>) -> std::io::Result<Self> {
        let dir = data_dir.join(SNAPSHOT_DIR);
        std::fs::create_dir_all(&dir)?;
        // The previous format kept the whole state in one file.
        let _ = std::fs::remove_file(data_dir.join("snapshot.bin"));
        let current_name = std::fs::read_to_string(dir.join(CURRENT)).ok().map(|s| s.trim().to_string());
        let mut current = None;
        if let Some(name) = &current_name {
            let cp_dir = dir.join(name);
            match std::fs::read(cp_dir.join(META_FILE)) {
                Ok(bytes) => {
                    let meta: SnapshotMeta = codec::decode(&bytes).map_err(other)?;
                    current = Some((meta, Arc::new(Checkpoint { dir: cp_dir, retired: AtomicBool::new(false) })));
                }
                Err(e) => tracing::warn!(snapshot = %name, error = %e, "current snapshot unreadable; dropped"),
            }
        }
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let is_current = current.as_ref().is_some_and(|(_, cp): &(SnapshotMeta, Arc<Checkpoint>)| cp.dir == path);
            if name == CURRENT || is_current || keep == Some(name.as_str()) {
                continue;
            }
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "removing a stale snapshot file");
            }
        }
        Ok(SnapshotStore { dir, current: parking_lot::Mutex::new(current), replacing: parking_lot::Mutex::new(()) })
    }

    /// The current snapshot's metadata and checkpoint.
    pub fn current(&self) -> Option<(SnapshotMeta, Arc<Checkpoint>)> {
        self.current.lock().clone()
    }

    /// A fresh path for a received snapshot file.
    pub fn incoming_path(&self) -> PathBuf {
        self.dir.join(format!("incoming-{}.sst", uuid::Uuid::new_v4()))
    }

    /// Checkpoints `db` and makes it the current snapshot. Its log id and
    /// membership are read from the checkpoint; `id` names it (None: from
    /// the log id and the time). Blocking (flushes memtables, links files).
    /// Waits for an install in progress ([`SnapshotStore::replacing`]).
    pub fn checkpoint(&self, db: &DB, id: Option<String>) -> std::io::Result<(SnapshotMeta, Arc<Checkpoint>)> {
        let guard = self.replacing();
        self.checkpoint_locked(&guard, db, id)
    }

    /// Held by an install from before it touches the state until its own
    /// checkpoint is current, so that no snapshot is built from a
    /// half-replaced state.
    pub fn replacing(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.replacing.lock()
    }

    /// The snapshot directory (received files are named relative to it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// [`SnapshotStore::checkpoint`] for a caller holding [`SnapshotStore::replacing`].
    pub fn checkpoint_locked(
        &self,
        _replacing: &parking_lot::MutexGuard<'_, ()>,
        db: &DB,
        id: Option<String>,
    ) -> std::io::Result<(SnapshotMeta, Arc<Checkpoint>)> {
        let tmp = self.dir.join(format!("tmp-{}", uuid::Uuid::new_v4()));
        rocksdb::checkpoint::Checkpoint::new(db).and_then(|c| c.create_checkpoint(&tmp)).map_err(other)?;
        let (last_log_id, last_membership) = {
            let cp = open_read_only(&tmp)?;
            let meta_cf = cp.cf_handle(keys::CF_SM_META).ok_or_else(|| other("checkpoint without sm_meta"))?;
            let get = |key: &[u8]| cp.get_cf(meta_cf, key).map_err(other);
            let last: Option<LogId> = match get(keys::SM_LAST_APPLIED)? {
                Some(b) => codec::decode(&b).map_err(other)?,
                None => None,
            };
            let membership: StoredMembership = match get(keys::SM_MEMBERSHIP)? {
                Some(b) => codec::decode(&b).map_err(other)?,
                None => StoredMembership::default(),
            };
            (last, membership)
        };
        let snapshot_id = id.unwrap_or_else(|| match &last_log_id {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, crate::wall_clock_ms()),
            None => format!("0-0-{}", crate::wall_clock_ms()),
        });
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
        write_synced(&tmp.join(META_FILE), &codec::encode(&meta))?;
        let name = format!("snap-{}", uuid::Uuid::new_v4());
        let final_dir = self.dir.join(&name);
        std::fs::rename(&tmp, &final_dir)?;
        fsync_dir(&self.dir)?;
        write_synced(&self.dir.join(CURRENT), name.as_bytes())?;
        let cp = Arc::new(Checkpoint { dir: final_dir, retired: AtomicBool::new(false) });
        if let Some((_, old)) = self.current.lock().replace((meta.clone(), cp.clone())) {
            old.retired.store(true, Ordering::Release);
        }
        Ok((meta, cp))
    }
}

/// Writes `sm` records (in strictly increasing key order) into one SST file
/// that the `sm` column family can ingest. Blocking; records are written as
/// they come, so memory does not depend on the number of records.
pub struct SstWriter {
    path: PathBuf,
}

impl SstWriter {
    pub fn new(path: PathBuf) -> Self {
        SstWriter { path }
    }

    /// Writes every record from `records` and finishes the file. Returns
    /// `None` (and leaves no file) when there was no record.
    pub fn write_all(
        self,
        records: impl Iterator<Item = std::io::Result<(Vec<u8>, Vec<u8>)>>,
    ) -> std::io::Result<Option<PathBuf>> {
        let path = self.path.clone();
        let written = self.write_records(records);
        if written.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        written
    }

    fn write_records(
        self,
        records: impl Iterator<Item = std::io::Result<(Vec<u8>, Vec<u8>)>>,
    ) -> std::io::Result<Option<PathBuf>> {
        let mut opts = Options::default();
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let mut writer = rocksdb::SstFileWriter::create(&opts);
        let (mut count, mut bytes) = (0u64, 0u64);
        let mut opened = false;
        let mut last: Option<Vec<u8>> = None;
        for record in records {
            let (k, v) = record?;
            if last.as_ref().is_some_and(|l| *l >= k) {
                return Err(other("snapshot records out of key order"));
            }
            if !opened {
                writer.open(&self.path).map_err(other)?;
                opened = true;
            }
            writer.put(&k, &v).map_err(other)?;
            count += 1;
            bytes += (k.len() + v.len()) as u64;
            last = Some(k);
        }
        if !opened {
            return Ok(None);
        }
        writer.finish().map_err(other)?;
        std::fs::File::open(&self.path)?.sync_all()?;
        // the install marker will name this file: its directory entry must
        // survive a power loss too
        fsync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        tracing::info!(records = count, bytes, path = %self.path.display(), "snapshot file written");
        Ok(Some(self.path))
    }
}
