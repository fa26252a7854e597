//! Storage tier: our RocksDB log store and state-machine store pass openraft's
//! own conformance suite, plus round trips of the key layout and codec.
use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use silo::broker::Broker;
use silo::raft::log_store::LogStore;
use silo::raft::sm_store::StateMachineStore;
use silo::raft::types::{NodeId, TypeConfig};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), openraft::StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = silo::storage::rocks::open(&dir.path().join("db"), &silo::config::StorageConfig::default())
            .expect("open rocksdb");
        let log = LogStore::new(db.clone());
        let sm = StateMachineStore::new(db, Arc::new(Broker::new()), dir.path(), 1);
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    Suite::test_all(RocksBuilder).expect("conformance suite");
}

#[test]
fn codec_refuses_unknown_versions() {
    use silo::storage::codec::{decode, encode, CodecError};
    let bytes = encode(&("a".to_string(), 7u64));
    let back: (String, u64) = decode(&bytes).unwrap();
    assert_eq!(back, ("a".to_string(), 7));
    let mut newer = bytes.clone();
    newer[0] = 99;
    assert!(matches!(decode::<(String, u64)>(&newer), Err(CodecError::Version(99))));
    assert!(matches!(decode::<(String, u64)>(&[]), Err(CodecError::Empty)));
}

mod read_path {
    //! The read path over RocksDB must not get slower as an ordered index is
    //! consumed from its front (issue #10): granted waiters and purged
    //! terminal entries are deleted keys, and a scan that started at the
    //! index's beginning would walk all of them. Counted with RocksDB's perf
    //! context (deleted keys the iterators skipped), not timed.
    use std::collections::BTreeMap;

    use rocksdb::perf::{set_perf_stats, PerfContext, PerfMetric, PerfStatsLevel};
    use rocksdb::WriteBatch;
    use silo::state_machine::{self as sm, Command, Effect, JobKey, Limit, NewJob, Op, Outcome, Output, QueueKind};
    use silo::storage::rocks::Overlay;

    struct Node {
        _dir: tempfile::TempDir,
        db: std::sync::Arc<rocksdb::DB>,
        index: u64,
        now_ms: i64,
    }

    impl Node {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = silo::storage::rocks::open(&dir.path().join("db"), &silo::config::StorageConfig::default())
                .expect("open rocksdb");
            Node { _dir: dir, db, index: 0, now_ms: 1_000 }
        }

        /// Applies `op` as the next log entry; returns its output, its
        /// effects and the deleted keys RocksDB skipped while applying it.
        fn apply(&mut self, op: Op) -> (Output, Vec<Effect>, u64) {
            self.index += 1;
            self.now_ms += 1;
            let mut ctx = PerfContext::default();
            ctx.reset();
            let mut overlay = Overlay::new(&self.db);
            let (result, effects) = sm::apply(&mut overlay, self.index, &Command { now_ms: self.now_ms, op });
            let skipped = ctx.metric(PerfMetric::InternalDeleteSkippedCount);
            let mut batch = WriteBatch::default();
            overlay.into_batch(&mut batch);
            self.db.write(batch).expect("write");
            (result.expect("applied"), effects, skipped)
        }
    }

    fn limited_job(i: usize) -> Op {
        Op::Enqueue(NewJob {
            key: JobKey { shard: 0, tenant: "-".into(), id: format!("job-{i:05}") },
            task_group: "g".into(),
            priority: 50,
            start_at_ms: 0,
            retry_policy: None,
            payload: vec![0xc0],
            limits: vec![Limit::Concurrency { key: "k".into(), max_concurrency: 1 }],
            metadata: BTreeMap::new(),
        })
    }

    fn ready_attempts(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Queued(t) if t.kind == QueueKind::Attempt => Some(t.task_id.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn consuming_waiters_and_purging_terminal_jobs_never_walks_the_deleted_front() {
        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut node = Node::new();
        const JOBS: usize = 3_000;
        let mut ready = Vec::new();
        for i in 0..JOBS {
            let (_, fx, _) = node.apply(limited_job(i));
            ready.extend(ready_attempts(&fx));
        }
        assert_eq!(ready.len(), 1, "one slot: one holder, the rest wait");
        // One job at a time takes the slot: grant, succeed, and the release
        // grants the next waiter (deleting its waiter key).
        let mut skipped_at = BTreeMap::new();
        for cycle in 0..JOBS {
            let task_id = ready.pop().expect("a granted waiter is ready");
            let grant = Op::GrantLeases { worker_id: "w".into(), task_ids: vec![task_id.clone()], lease_ms: 10_000 };
            let (_, _, _) = node.apply(grant);
            let report = Op::ReportOutcome { task_id, outcome: Outcome::Success { result: vec![0xc3] } };
            let (_, fx, skipped) = node.apply(report);
            ready.extend(ready_attempts(&fx));
            skipped_at.insert(cycle, skipped);
        }
        assert!(ready.is_empty());
        let (early, late) = (skipped_at[&50], skipped_at[&(JOBS - 10)]);
        assert!(
            late <= early + 8,
            "granting waiter {} skipped {late} deleted keys, waiter 50 skipped {early}",
            JOBS - 10
        );

        // Every job finished: purge them oldest first, ten per command.
        let mut purge_skipped = Vec::new();
        loop {
            let (out, _, skipped) = node.apply(Op::PurgeTerminal { before_ms: i64::MAX / 2, max: 10 });
            match out {
                Output::Removed { count: 0 } => break,
                Output::Removed { .. } => purge_skipped.push(skipped),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(purge_skipped.len(), JOBS / 10);
        let (early, late) = (purge_skipped[5], purge_skipped[purge_skipped.len() - 2]);
        assert!(late <= early + 8, "late purge skipped {late} deleted keys, early one {early}");
    }
}
