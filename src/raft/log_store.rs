//! The Raft log in RocksDB (column families `log` and `raft_meta`).
//!
//! Entries are keyed by big-endian index. An `append` of many entries is one
//! `WriteBatch` with one fsync, so concurrent proposals that openraft batches
//! together share a single disk flush (group commit). The vote is fsynced too;
//! `committed` and `last_purged` are written with the same durability.
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::storage::keys;
use crate::storage::rocks::cf;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

fn sync_opts() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    crate::storage::codec::encode(v)
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, StorageError> {
    crate::storage::codec::decode(b).map_err(|e| StorageIOError::read(&e).into())
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> Self {
        LogStore { db }
    }

    fn meta_get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.db.get_cf(cf(&self.db, keys::CF_RAFT_META), key) {
            Ok(Some(b)) => Ok(Some(decode(&b)?)),
            Ok(None) => Ok(None),
            Err(e) => Err(StorageIOError::read(&e).into()),
        }
    }

    fn meta_put<T: serde::Serialize>(&self, key: &[u8], v: &T) -> Result<(), StorageError> {
        self.db
            .put_cf_opt(cf(&self.db, keys::CF_RAFT_META), key, encode(v), &sync_opts())
            .map_err(|e| StorageIOError::write(&e).into())
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut it = self.db.iterator_cf(cf(&self.db, keys::CF_LOG), IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(Ok((_, v))) => Ok(Some(decode::<Entry>(&v)?.log_id)),
            Some(Err(e)) => Err(StorageIOError::read_logs(&e).into()),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let start_key = keys::log_index(start);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf(&self.db, keys::CF_LOG), IteratorMode::From(&start_key, Direction::Forward))
        {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = keys::parse_log_index(&k);
            if !range.contains(&index) {
                break;
            }
            out.push(decode(&v)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.meta_get(keys::RAFT_LAST_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.meta_put(keys::RAFT_VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.meta_get(keys::RAFT_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Derived state (a restarted node can relearn it), so no fsync of its
        // own: it becomes durable with the next synced log append.
        self.db
            .put_cf(cf(&self.db, keys::CF_RAFT_META), keys::RAFT_COMMITTED, encode(&committed))
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.meta_get::<Option<LogId>>(keys::RAFT_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let log_cf = cf(&self.db, keys::CF_LOG);
        let mut batch = WriteBatch::default();
        let mut count = 0u64;
        for entry in entries {
            batch.put_cf(log_cf, keys::log_index(entry.log_id.index), encode(&entry));
            count += 1;
        }
        let started = std::time::Instant::now();
        let result = self.db.write_opt(batch, &sync_opts());
        metrics::histogram!("silo_raft_log_append_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("silo_raft_log_append_entries").record(count as f64);
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncate log from");
        let from = keys::log_index(log_id.index);
        let to = keys::log_index(u64::MAX);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(&self.db, keys::CF_LOG), from, to);
        batch.delete_cf(cf(&self.db, keys::CF_LOG), to);
        self.db.write_opt(batch, &sync_opts()).map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purge log up to");
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, keys::CF_RAFT_META), keys::RAFT_LAST_PURGED, encode(&log_id));
        batch.delete_range_cf(cf(&self.db, keys::CF_LOG), keys::log_index(0), keys::log_index(log_id.index + 1));
        self.db.write_opt(batch, &sync_opts()).map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
