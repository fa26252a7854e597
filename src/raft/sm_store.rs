//! The state-machine side of openraft: applies committed entries through the
//! pure [`crate::state_machine::apply`] over a RocksDB
//! overlay, writes each applied batch (records + last-applied + membership) as
//! one `WriteBatch`, then hands the effects to the broker.
//!
//! Snapshots are the whole `sm` column family, read from a RocksDB snapshot so
//! that applying can go on while one is built; the current snapshot is kept in
//! `<data>/snapshot.bin` (written to a temporary file, fsynced, renamed).
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::broker::Broker;
use crate::state_machine::{self, ApplyResult, Output, Tables, View};
use crate::storage::codec;
use crate::storage::keys;
use crate::storage::rocks::{cf, Overlay, ReadKv};

#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<DB>,
    broker: Arc<Broker>,
    snapshot_path: PathBuf,
    /// Index of the last applied entry, published after its batch is written
    /// (read barriers wait on it).
    applied: Arc<watch::Sender<u64>>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachineStore {
    pub fn new(db: Arc<DB>, broker: Arc<Broker>, data_dir: &std::path::Path) -> Self {
        let (applied, _) = watch::channel(0);
        let store =
            StateMachineStore { db, broker, snapshot_path: data_dir.join("snapshot.bin"), applied: Arc::new(applied) };
        if let Ok(Some(Some(l))) = store.meta_get::<Option<LogId>>(keys::SM_LAST_APPLIED) {
            store.applied.send_replace(l.index);
        }
        store.rebuild_broker();
        store
    }

    /// Watches the index of the last applied entry.
    pub fn applied_index(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Re-derives the broker from applied state (start-up, snapshot install).
    pub fn rebuild_broker(&self) {
        let view = View(&ReadKv { db: &self.db });
        self.broker.rebuild(view.queued_all(), view.leases(), crate::monotonic_ms());
    }

    fn meta_get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.db.get_cf(cf(&self.db, keys::CF_SM_META), key).map_err(read_err)? {
            Some(b) => Ok(Some(codec::decode(&b).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn read_stored_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        match std::fs::read(&self.snapshot_path) {
            Ok(bytes) => Ok(Some(codec::decode(&bytes).map_err(read_err)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(read_err(e)),
        }
    }

    fn write_stored_snapshot(&self, snap: &StoredSnapshot) -> Result<(), StorageError> {
        let tmp = self.snapshot_path.with_extension("tmp");
        let bytes = codec::encode(snap);
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.snapshot_path)?;
            if let Some(dir) = self.snapshot_path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| StorageIOError::write_snapshot(Some(snap.meta.signature()), &e).into())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = std::time::Instant::now();
        let snap = self.db.snapshot();
        let meta_cf = cf(&self.db, keys::CF_SM_META);
        let get_meta =
            |key: &[u8]| -> Result<Option<Vec<u8>>, StorageError> { snap.get_cf(meta_cf, key).map_err(read_err) };
        let last_applied: Option<LogId> = match get_meta(keys::SM_LAST_APPLIED)? {
            Some(b) => codec::decode(&b).map_err(read_err)?,
            None => None,
        };
        let membership: StoredMembership = match get_meta(keys::SM_MEMBERSHIP)? {
            Some(b) => codec::decode(&b).map_err(read_err)?,
            None => StoredMembership::default(),
        };
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for item in snap.iterator_cf(cf(&self.db, keys::CF_SM), IteratorMode::Start) {
            let (k, v) = item.map_err(read_err)?;
            entries.push((k.to_vec(), v.to_vec()));
        }
        drop(snap);
        let data = codec::encode(&entries);
        let snapshot_id = match &last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, crate::wall_clock_ms()),
            None => format!("empty-{}", crate::wall_clock_ms()),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.write_stored_snapshot(&stored)?;
        metrics::histogram!("silo_snapshot_build_seconds").record(started.elapsed().as_secs_f64());
        tracing::info!(entries = entries.len(), bytes = stored.data.len(), last_log_id = ?meta.last_log_id, "built snapshot");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
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
        let db = self.db.clone();
        let mut overlay = Overlay::new(&db);
        let mut results = Vec::new();
        let mut effects = Vec::new();
        let mut last_applied = None;
        let mut membership = None;
        for entry in entries {
            last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => results.push(Ok(Output::Done)),
                EntryPayload::Normal(command) => {
                    let op = command.op.name();
                    let (result, mut fx) = state_machine::apply(&mut overlay, entry.log_id.index, &command);
                    metrics::counter!("silo_commands_applied_total", "op" => op, "ok" => if result.is_ok() { "true" } else { "false" }).increment(1);
                    effects.append(&mut fx);
                    results.push(result);
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    results.push(Ok(Output::Done));
                }
            }
        }
        let mut batch = WriteBatch::default();
        overlay.into_batch(&mut batch);
        let meta_cf = cf(&db, keys::CF_SM_META);
        if let Some(l) = last_applied {
            batch.put_cf(meta_cf, keys::SM_LAST_APPLIED, codec::encode(&Some(l)));
        }
        if let Some(m) = &membership {
            batch.put_cf(meta_cf, keys::SM_MEMBERSHIP, codec::encode(m));
        }
        db.write_opt(batch, &WriteOptions::default()).map_err(write_err)?;
        self.broker.apply_effects(&effects, crate::monotonic_ms());
        if let Some(l) = last_applied {
            self.applied.send_replace(l.index);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let entries: Vec<(Vec<u8>, Vec<u8>)> =
            codec::decode(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let sm_cf = cf(&self.db, keys::CF_SM);
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf(sm_cf, IteratorMode::Start) {
            let (k, _) = item.map_err(read_err)?;
            batch.delete_cf(sm_cf, k);
        }
        for (k, v) in &entries {
            batch.put_cf(sm_cf, k, v);
        }
        let meta_cf = cf(&self.db, keys::CF_SM_META);
        batch.put_cf(meta_cf, keys::SM_LAST_APPLIED, codec::encode(&meta.last_log_id));
        batch.put_cf(meta_cf, keys::SM_MEMBERSHIP, codec::encode(&meta.last_membership));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts).map_err(write_err)?;
        self.write_stored_snapshot(&StoredSnapshot { meta: meta.clone(), data })?;
        self.rebuild_broker();
        self.applied.send_replace(meta.last_log_id.map_or(0, |l| l.index));
        tracing::info!(entries = entries.len(), last_log_id = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.read_stored_snapshot()?.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

/// Digest of the applied state (`sm` column family), equal on replicas that
/// applied the same log.
pub fn state_digest(db: &DB) -> u64 {
    let mut entries = Vec::new();
    for item in db.iterator_cf(cf(db, keys::CF_SM), IteratorMode::From(&[], Direction::Forward)) {
        let (k, v) = item.unwrap_or_else(|e| panic!("rocksdb iteration failed: {e}"));
        entries.push((k, v));
    }
    crate::storage::kv::digest(entries.iter().map(|(k, v)| (&k[..], &v[..])))
}
