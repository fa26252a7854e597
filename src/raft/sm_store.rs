//! The state-machine side of openraft: applies committed entries through the
//! pure [`crate::state_machine::apply`] over a RocksDB
//! overlay, writes each applied batch (records + last-applied + membership) as
//! one `WriteBatch`, then hands the effects to the broker.
//!
//! Snapshots are RocksDB checkpoints, sent and installed as streams
//! (`snapshot.rs` has the whole story): nothing here holds the state in
//! memory.
use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, StorageIOError};
use rocksdb::{Direction, IngestExternalFileOptions, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::snapshot::{SnapshotData, SnapshotStore};
use super::types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::broker::Broker;
use crate::state_machine::{self, ApplyResult, Output};
use crate::storage::codec;
use crate::storage::keys;
use crate::storage::rocks::{cf, Overlay};

#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<DB>,
    broker: Arc<Broker>,
    snapshots: Arc<SnapshotStore>,
    /// Index of the last applied entry, published after its batch is written
    /// (read barriers wait on it).
    applied: Arc<watch::Sender<u64>>,
    /// This node's id: the job-lifecycle metrics of an entry are counted by
    /// the node that proposed it as leader (its log id names it), so each
    /// entry is counted once across the cluster, whoever leads later.
    node_id: u64,
    /// Write applied changes to RocksDB's WAL too (`raft.state_machine_wal`).
    wal: bool,
}

/// Written (synced) before an install replaces the state and deleted in the
/// batch that completes it: found at start-up, the install is done again
/// from the same file.
#[derive(Serialize, Deserialize)]
struct InstallMarker {
    meta: SnapshotMeta,
    /// File name of the received snapshot in the snapshot directory (a name,
    /// not a path, so a data directory that moved still finds it).
    sst: Option<String>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachineStore {
    /// Opens the state machine over `db`, finishing an install that a crash
    /// interrupted, and rebuilds the broker from the applied state.
    ///
    /// Panics when the snapshot directory cannot be opened or an interrupted
    /// install cannot be completed: the node must not serve a half-replaced
    /// state.
    pub fn new(db: Arc<DB>, broker: Arc<Broker>, data_dir: &std::path::Path, node_id: u64) -> Self {
        let read_marker = || -> Option<InstallMarker> {
            let bytes = db.get_cf(cf(&db, keys::CF_SM_META), keys::SM_INSTALLING).expect("reading sm_meta")?;
            Some(codec::decode(&bytes).expect("corrupt snapshot install marker"))
        };
        let marker = read_marker();
        let keep = marker.as_ref().and_then(|m| m.sst.clone());
        let snapshots = Arc::new(
            SnapshotStore::open(data_dir, keep.as_deref())
                .unwrap_or_else(|e| panic!("opening {}: {e}", data_dir.join(super::snapshot::SNAPSHOT_DIR).display())),
        );
        let (applied, _) = watch::channel(0);
        let store = StateMachineStore { db, broker, snapshots, applied: Arc::new(applied), node_id, wal: false };
        if let Some(m) = marker {
            tracing::warn!(snapshot = %m.meta.snapshot_id, "finishing a snapshot install interrupted by a crash");
            let sst = m.sst.map(|name| store.snapshots.dir().join(name));
            store.install_blocking(&m.meta, sst, true).unwrap_or_else(|e| panic!("finishing snapshot install: {e}"));
        }
        if let Ok(Some(Some(l))) = store.meta_get::<Option<LogId>>(keys::SM_LAST_APPLIED) {
            store.applied.send_replace(l.index);
        }
        store.rebuild_broker();
        store
    }

    /// Writes applied changes to RocksDB's WAL as well (`raft.state_machine_wal`).
    pub fn with_wal(mut self, wal: bool) -> Self {
        self.wal = wal;
        self
    }

    /// Watches the index of the last applied entry.
    pub fn applied_index(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The snapshot directory (the network streams checkpoints from it and
    /// writes received files into it).
    pub fn snapshots(&self) -> Arc<SnapshotStore> {
        self.snapshots.clone()
    }

    /// Re-derives the broker from applied state (start-up, snapshot install):
    /// the lease table and the queue counts and runs (the broker pages the
    /// queues themselves from the store when it needs them).
    pub fn rebuild_broker(&self) {
        let started = std::time::Instant::now();
        self.add_paging_index();
        let leases = crate::storage::rocks::prefix_iter(&self.db, keys::CF_SM, &keys::table(keys::LEASE))
            .map(|(_, v)| codec::decode_or_die::<state_machine::Lease>("lease", &v));
        let pages = Arc::new(crate::storage::rocks::DbPages(self.db.clone()));
        self.broker.rebuild(pages, leases, crate::monotonic_ms(), crate::wall_clock_ms());
        let (tasks, leases) = self.broker.sizes();
        let resident = self.broker.resident();
        tracing::info!(
            tasks,
            leases,
            resident,
            ms = started.elapsed().as_millis() as u64,
            "broker rebuilt from the store"
        );
    }

    /// A state written before the broker's paging index (`O`) existed has
    /// queued tasks and no index: derive it from the `Q` records once, in
    /// batches (every replica derives the same keys from the same state).
    /// The marker `SM_PAGING_INDEX` goes in the last batch, so a start-up
    /// that a crash cut short clears what it wrote and derives it again.
    fn add_paging_index(&self) {
        use crate::storage::rocks::prefix_iter;
        let meta = cf(&self.db, keys::CF_SM_META);
        if self.db.get_cf(meta, keys::SM_PAGING_INDEX).expect("reading sm_meta").is_some() {
            return;
        }
        let sm = cf(&self.db, keys::CF_SM);
        let table = keys::table(keys::QUEUE_ORDER);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(sm, &table, &keys::prefix_end(&table).expect("a one-byte tag has an end"));
        let mut counts: std::collections::BTreeMap<String, state_machine::QueueCounts> = Default::default();
        let mut n = 0u64;
        for (_, v) in prefix_iter(&self.db, keys::CF_SM, &keys::table(keys::QUEUED)) {
            let task: state_machine::QueuedTask = codec::decode_or_die("queued task", &v);
            batch.put_cf(sm, keys::queue_order(&task), []);
            *counts.entry(task.task_group.clone()).or_default().of(&task.kind) += 1;
            n += 1;
            if batch.len() >= 10_000 {
                self.db.write(std::mem::take(&mut batch)).expect("writing the paging index");
            }
        }
        for (group, c) in &counts {
            batch.put_cf(sm, keys::queue_counts(group), codec::encode(c));
        }
        batch.put_cf(meta, keys::SM_PAGING_INDEX, []);
        self.db.write(batch).expect("writing the paging index");
        if n > 0 {
            tracing::warn!(
                tasks = n,
                groups = counts.len(),
                "derived the broker's paging index for a state written before it"
            );
        }
    }

    fn meta_get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.db.get_cf(cf(&self.db, keys::CF_SM_META), key).map_err(read_err)? {
            Some(b) => Ok(Some(codec::decode(&b).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    /// Replaces the whole state with the snapshot in `sst` (None: empty):
    /// marker, one range delete, ingest (a hard link, not a copy), then
    /// last-applied, membership and the marker's removal in one synced
    /// batch; finally a checkpoint of the result becomes this node's current
    /// snapshot. Blocking; memory does not depend on the snapshot's size.
    ///
    /// No snapshot is built meanwhile (the snapshot store's `replacing` lock
    /// is held throughout). `redo` (finishing an install a crash
    /// interrupted): the file is copied into the database instead of linked,
    /// because the first attempt may already have linked it, and RocksDB
    /// writes the ingest sequence number into the file it ingests.
    fn install_blocking(&self, meta: &SnapshotMeta, sst: Option<PathBuf>, redo: bool) -> std::io::Result<()> {
        let io = |e: rocksdb::Error| std::io::Error::other(e.to_string());
        let replacing = self.snapshots.replacing();
        let sm_cf = cf(&self.db, keys::CF_SM);
        let meta_cf = cf(&self.db, keys::CF_SM_META);
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        let name = sst.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
        let marker = InstallMarker { meta: meta.clone(), sst: name };
        self.db.put_cf_opt(meta_cf, keys::SM_INSTALLING, codec::encode(&marker), &synced).map_err(io)?;
        let mut wipe = WriteBatch::default();
        // Every state-machine key starts with an ASCII table tag (keys.rs).
        wipe.delete_range_cf(sm_cf, [0u8].as_slice(), [0xffu8].as_slice());
        self.db.write_opt(wipe, &synced).map_err(io)?;
        if let Some(path) = &sst {
            let mut opts = IngestExternalFileOptions::default();
            if redo {
                opts.set_move_files(false);
                self.db.ingest_external_file_cf_opts(sm_cf, &opts, vec![path.clone()]).map_err(io)?;
            } else {
                // Ingesting moves (links) the file into the database; ingest
                // a second link so the original stays for a redo until the end.
                let link = path.with_extension("ingest");
                let _ = std::fs::remove_file(&link);
                std::fs::hard_link(path, &link)?;
                opts.set_move_files(true);
                let ingested = self.db.ingest_external_file_cf_opts(sm_cf, &opts, vec![link.clone()]);
                if ingested.is_err() {
                    let _ = std::fs::remove_file(&link);
                }
                ingested.map_err(io)?;
            }
        }
        let mut done = WriteBatch::default();
        done.put_cf(meta_cf, keys::SM_LAST_APPLIED, codec::encode(&meta.last_log_id));
        done.put_cf(meta_cf, keys::SM_MEMBERSHIP, codec::encode(&meta.last_membership));
        done.delete_cf(meta_cf, keys::SM_INSTALLING);
        self.db.write_opt(done, &synced).map_err(io)?;
        self.snapshots.checkpoint_locked(&replacing, &self.db, Some(meta.snapshot_id.clone()))?;
        if let Some(path) = &sst {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    /// A checkpoint of the database (see `snapshot.rs`): flush + hard links,
    /// the same cost whatever the state's size.
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = std::time::Instant::now();
        let (db, snapshots) = (self.db.clone(), self.snapshots.clone());
        let (meta, cp) = tokio::task::spawn_blocking(move || snapshots.checkpoint(&db, None))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &std::io::Error::other(e.to_string())))?
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        metrics::histogram!("silo_snapshot_build_seconds").record(started.elapsed().as_secs_f64());
        tracing::info!(last_log_id = ?meta.last_log_id, ms = started.elapsed().as_millis() as u64, "built snapshot (checkpoint)");
        Ok(Snapshot { meta, snapshot: Box::new(SnapshotData::Checkpoint(cp)) })
    }
}

/// Keys one apply pass may hold in its overlay before it is written out
/// (one full batch entry touches about 20 keys per op).
const OVERLAY_KEYS_MAX: usize = 64 * 1024;
/// Bytes (keys and values, payloads included) one apply pass may hold in
/// its overlay before it is written out. This bounds the overlay only: the
/// entries openraft hands to one apply call, and the results it gets back,
/// are openraft's to bound.
const OVERLAY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What one part of an apply call has done and not yet written.
struct ApplyPass<'a> {
    overlay: Overlay<'a>,
    /// Effects in runs of entries proposed by this node (counted in the
    /// metrics) or by another leader (not counted), in log order.
    runs: Vec<(bool, Vec<state_machine::Effect>)>,
    last_applied: Option<LogId>,
    membership: Option<StoredMembership>,
}

impl<'a> ApplyPass<'a> {
    fn new(db: &'a DB) -> Self {
        ApplyPass { overlay: Overlay::new(db), runs: Vec::new(), last_applied: None, membership: None }
    }
}

impl StateMachineStore {
    /// Writes `pass` (its records, last-applied index and membership) as one
    /// batch, then hands its effects to the broker.
    fn write_out(&self, pass: ApplyPass<'_>) -> Result<(), StorageError> {
        let ApplyPass { overlay, runs, last_applied, membership } = pass;
        let Some(last) = last_applied else { return Ok(()) };
        let mut batch = WriteBatch::default();
        overlay.into_batch(&mut batch);
        let meta_cf = cf(&self.db, keys::CF_SM_META);
        batch.put_cf(meta_cf, keys::SM_LAST_APPLIED, codec::encode(&Some(last)));
        if let Some(m) = &membership {
            batch.put_cf(meta_cf, keys::SM_MEMBERSHIP, codec::encode(m));
        }
        // No WAL (unless `raft.state_machine_wal`): every change here is a
        // function of log entries already fsynced in the Raft log (issue
        // #11, "one WAL instead of two"). After a crash the state is that of
        // the last flush, which is atomic across column families
        // (`storage::rocks::open`), so the last-applied marker matches it,
        // and openraft re-applies the committed entries after it on start.
        // The log is never purged past a snapshot, and building one flushes
        // first, so those entries are still there.
        let mut opts = WriteOptions::default();
        opts.disable_wal(!self.wal);
        self.db.write_opt(batch, &opts).map_err(write_err)?;
        let (now, wall) = (crate::monotonic_ms(), crate::wall_clock_ms());
        for (mine, effects) in &runs {
            self.broker.apply_effects_counted(effects, now, wall, *mine);
        }
        self.applied.send_replace(last.index);
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let last_applied = self.meta_get::<Option<LogId>>(keys::SM_LAST_APPLIED)?.flatten();
        let membership = self.meta_get(keys::SM_MEMBERSHIP)?.unwrap_or_default();
        Ok((last_applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let db = self.db.clone();
        let mut pass = ApplyPass::new(&db);
        let mut results = Vec::new();
        for entry in entries {
            pass.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => results.push(Ok(Output::Done)),
                EntryPayload::Normal(command) => {
                    let op = command.op.name();
                    // Only the node that proposed an entry has a caller waiting for its result.
                    let mine = entry.log_id.leader_id.node_id == self.node_id;
                    let answer = if mine { state_machine::Answer::Full } else { state_machine::Answer::Discarded };
                    let (result, mut fx) =
                        state_machine::apply_as(&mut pass.overlay, entry.log_id.index, &command, answer);
                    metrics::counter!("silo_commands_applied_total", "op" => op, "ok" => if result.is_ok() { "true" } else { "false" }).increment(1);
                    match pass.runs.last_mut() {
                        Some((m, effects)) if *m == mine => effects.append(&mut fx),
                        _ => pass.runs.push((mine, fx)),
                    }
                    results.push(result);
                }
                EntryPayload::Membership(m) => {
                    pass.membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    results.push(Ok(Output::Done));
                }
            }
            // A long run of entries (a restart re-applying what its last
            // flush did not hold) is written out in parts, each with the
            // last-applied index it reaches, so the overlay stays bounded.
            if pass.overlay.len() >= OVERLAY_KEYS_MAX || pass.overlay.bytes() >= OVERLAY_BYTES_MAX {
                self.write_out(std::mem::replace(&mut pass, ApplyPass::new(&db)))?;
            }
        }
        self.write_out(pass)?;
        metrics::histogram!("silo_apply_seconds").record(started.elapsed().as_secs_f64());
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// Unused by our transfer (openraft's chunked one): received snapshots
    /// arrive through `network.rs` as files.
    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        Ok(Box::new(SnapshotData::Sst(None)))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<SnapshotData>) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let store = self.clone();
        let meta_owned = meta.clone();
        let signature = meta.signature();
        tokio::task::spawn_blocking(move || {
            let sst = match *snapshot {
                SnapshotData::Sst(path) => path,
                // A checkpoint handed over in-process (openraft's storage
                // tests do this): write it out as a file first.
                SnapshotData::Checkpoint(cp) => super::snapshot::export_sst(&cp.dir, store.snapshots.incoming_path())?,
            };
            store.install_blocking(&meta_owned, sst, false)?;
            // streams a million-row table: off the async workers too
            store.rebuild_broker();
            Ok::<(), std::io::Error>(())
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(signature.clone()), &std::io::Error::other(e.to_string())))?
        .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e))?;
        self.applied.send_replace(meta.last_log_id.map_or(0, |l| l.index));
        metrics::histogram!("silo_snapshot_install_seconds").record(started.elapsed().as_secs_f64());
        tracing::info!(last_log_id = ?meta.last_log_id, ms = started.elapsed().as_millis() as u64, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self
            .snapshots
            .current()
            .map(|(meta, cp)| Snapshot { meta, snapshot: Box::new(SnapshotData::Checkpoint(cp)) }))
    }
}

/// Digest of the applied state (`sm` column family), equal on replicas that
/// applied the same log. Streams the column family (one record at a time).
pub fn state_digest(db: &DB) -> u64 {
    let iter = db.iterator_cf(cf(db, keys::CF_SM), IteratorMode::From(&[], Direction::Forward));
    let mut h = crate::storage::kv::Digest::default();
    for item in iter {
        let (k, v) = item.unwrap_or_else(|e| panic!("rocksdb iteration failed: {e}"));
        h.add(&k, &v);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;
    use crate::config::StorageConfig;
    use crate::state_machine::{Command, JobKey, NewJob, Op};

    fn store(dir: &std::path::Path) -> (Arc<DB>, StateMachineStore) {
        let db = crate::storage::rocks::open(&dir.join("db"), &StorageConfig::default()).expect("open rocksdb");
        let sm = StateMachineStore::new(db.clone(), Arc::new(Broker::new()), dir, 1);
        (db, sm)
    }

    fn enqueue(index: u64, id: &str) -> Entry {
        let op = Op::Enqueue(NewJob {
            key: JobKey { shard: 0, tenant: "-".into(), id: id.into() },
            task_group: "g".into(),
            priority: 5,
            start_at_ms: 0,
            retry_policy: None,
            payload: vec![0xc0; 64],
            limits: vec![],
            metadata: BTreeMap::new(),
        });
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command { now_ms: 1_000 + index as i64, op }),
        }
    }

    /// A state written before the paging index existed (no `O` keys, no
    /// marker), and one whose derivation a crash cut short (some `O` keys,
    /// no marker), both get a whole, consistent index at start-up: the
    /// broker hands out every queued task, and the invariants hold.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_paging_index_is_derived_once_and_completely() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut sm) = store(dir.path());
        sm.apply((1..=300).map(|i| enqueue(i, &format!("job-{i}")))).await.unwrap();
        let ordered = crate::storage::rocks::scan(&db, keys::CF_SM, &keys::table(keys::QUEUE_ORDER));
        let meta = cf(&db, keys::CF_SM_META);
        for keep in [0, ordered.len() / 2] {
            // Old format (keep = 0), or a derivation cut short (half kept).
            let sm_cf = cf(&db, keys::CF_SM);
            for (k, _) in &ordered[keep..] {
                db.delete_cf(sm_cf, k).unwrap();
            }
            db.delete_cf(meta, keys::SM_PAGING_INDEX).unwrap();
            let broker = Arc::new(Broker::new());
            let _reopened = StateMachineStore::new(db.clone(), broker.clone(), dir.path(), 1);
            assert_eq!(crate::storage::rocks::scan(&db, keys::CF_SM, &keys::table(keys::QUEUE_ORDER)), ordered);
            assert!(db.get_cf(meta, keys::SM_PAGING_INDEX).unwrap().is_some());
            let errors =
                crate::state_machine::invariants::check(&crate::state_machine::View(&crate::storage::rocks::ReadKv {
                    db: &db,
                }));
            assert!(errors.is_empty(), "{errors:#?}");
            assert_eq!(broker.sizes().0, 300);
            assert_eq!(broker.pick("g", 1_000, 10_000, |_| true).task_ids.len(), 300);
        }
    }

    /// A run of entries too long for one overlay (a restart re-applying
    /// everything since its last flush) is written in parts, and ends in
    /// the state, last-applied index and broker view that short apply
    /// calls give.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_long_run_of_entries_is_written_in_parts_with_the_same_result() {
        let jobs = 12_000u64;
        let (long_dir, short_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (long_db, mut long) = store(long_dir.path());
        long.apply((1..=jobs).map(|i| enqueue(i, &format!("job-{i}")))).await.unwrap();
        let (short_db, mut short) = store(short_dir.path());
        for first in (1..=jobs).step_by(100) {
            short.apply((first..first + 100).map(|i| enqueue(i, &format!("job-{i}")))).await.unwrap();
        }
        let written = crate::storage::rocks::scan(&long_db, keys::CF_SM, &[]).len();
        assert!(written > OVERLAY_KEYS_MAX, "the run must cross the bound: {written} keys");
        assert_eq!(state_digest(&long_db), state_digest(&short_db));
        let last = long.applied_state().await.unwrap().0.expect("applied");
        assert_eq!(last.index, jobs);
        assert_eq!(long.broker.sizes().0, jobs as usize);
        assert_eq!(long.broker.sizes(), short.broker.sizes());
    }

    /// A node that died in the middle of an install (marker written, old
    /// state partly wiped or not) finishes the install from the received
    /// file when it starts again: the state equals the snapshot's.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_install_interrupted_by_a_crash_is_finished_at_start_up() {
        let leader_dir = tempfile::tempdir().unwrap();
        let (leader_db, mut leader) = store(leader_dir.path());
        leader.apply((1..=200).map(|i| enqueue(i, &format!("job-{i}")))).await.unwrap();
        let snapshot = leader.build_snapshot().await.unwrap();
        let expected = state_digest(&leader_db);
        let SnapshotData::Checkpoint(cp) = *snapshot.snapshot else { panic!("a checkpoint") };

        let follower_dir = tempfile::tempdir().unwrap();
        let received = {
            let (follower_db, mut follower) = store(follower_dir.path());
            follower.apply((1..=3).map(|i| enqueue(i, &format!("other-{i}")))).await.unwrap();
            // the file as the network would have written it
            let sst = super::super::snapshot::export_sst(&cp.dir, follower.snapshots.incoming_path()).unwrap();
            // the crash: the marker is down, the old state not yet replaced
            let name = sst.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
            let marker = InstallMarker { meta: snapshot.meta.clone(), sst: name };
            follower_db
                .put_cf(cf(&follower_db, keys::CF_SM_META), keys::SM_INSTALLING, codec::encode(&marker))
                .unwrap();
            sst.unwrap()
        };
        let (follower_db, mut follower) = store(follower_dir.path());
        assert_eq!(state_digest(&follower_db), expected, "the install was finished at start-up");
        assert!(follower_db.get_cf(cf(&follower_db, keys::CF_SM_META), keys::SM_INSTALLING).unwrap().is_none());
        assert_eq!(follower.applied_state().await.unwrap().0, snapshot.meta.last_log_id);
        let current = follower.get_current_snapshot().await.unwrap().expect("the installed snapshot is current");
        assert_eq!(current.meta, snapshot.meta);
        assert!(!received.exists(), "the received file is removed once installed");
        // the database opens again (the redo copied the file: the first
        // ingest's table keeps its own sequence number)
        drop((follower_db, follower));
        let (follower_db, _) = store(follower_dir.path());
        assert_eq!(state_digest(&follower_db), expected);
    }
}
