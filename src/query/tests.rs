//! The engine over an in-memory state built by the state machine itself,
//! with a store that counts what a statement reads: an index-backed filter
//! must read about as many entries as it returns, whatever the number of
//! other jobs (issue #12: common questions stay fast at millions of jobs).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::tables::Source;
use super::{QueryConfig, QueryEngine};
use crate::state_machine::{self as sm, Command, JobKey, NewJob, Op};
use crate::storage::kv::{Kv, MemKv};

/// A read-only view of a [`MemKv`] counting entries returned by reads.
struct Counting {
    kv: MemKv,
    read: AtomicUsize,
}

impl Kv for Counting {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.read.fetch_add(1, Ordering::Relaxed);
        self.kv.get(key)
    }
    fn put(&mut self, _: Vec<u8>, _: Vec<u8>) {
        unreachable!()
    }
    fn delete(&mut self, _: &[u8]) {
        unreachable!()
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.scan_from_n(prefix, prefix, usize::MAX)
    }
    fn scan_from_n(&self, prefix: &[u8], from: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let page = self.kv.scan_from_n(prefix, from, n);
        self.read.fetch_add(page.len(), Ordering::Relaxed);
        page
    }
}

/// `jobs` jobs of tenant "t" (plus one of tenant "u"): job i is in group
/// g{i%4}, has metadata `n = i` and `bucket = b{i%10}`.
fn state(jobs: usize) -> Arc<Counting> {
    let mut kv = MemKv::default();
    let mut index = 1;
    let mut apply = |kv: &mut MemKv, op: Op| {
        let (result, _) = sm::apply(kv, index, &Command { now_ms: 1_000 + index as i64, op });
        result.expect("applies");
        index += 1;
    };
    for i in 0..=jobs {
        let tenant = if i == jobs { "u" } else { "t" };
        apply(
            &mut kv,
            Op::Enqueue(NewJob {
                key: JobKey { shard: 0, tenant: tenant.into(), id: format!("job-{i:06}") },
                task_group: format!("g{}", i % 4),
                priority: 1,
                start_at_ms: 0,
                retry_policy: None,
                payload: vec![0x90],
                limits: vec![],
                metadata: BTreeMap::from([("n".into(), i.to_string()), ("bucket".into(), format!("b{}", i % 10))]),
            }),
        );
    }
    Arc::new(Counting { kv, read: AtomicUsize::new(0) })
}

async fn run(engine: &QueryEngine, kv: &Arc<Counting>, tenant: Option<&str>, sql: &str) -> (usize, usize) {
    kv.read.store(0, Ordering::Relaxed);
    let source = Source { kv: kv.clone(), shard: 0, shard_id: "s".into(), tenant: tenant.map(String::from), now_ms: 0 };
    let out = engine.run(source, sql, vec![], super::Format::Rows).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    (out.row_count, kv.read.load(Ordering::Relaxed))
}

#[tokio::test]
async fn indexed_filters_read_what_they_return_not_the_table() {
    let engine = QueryEngine::new(QueryConfig::default());
    let kv = state(4_000);
    let cases = [
        // (statement, rows expected, most entries it may read)
        ("SELECT id FROM jobs WHERE id = 'job-000123'", 1, 4),
        ("SELECT id FROM jobs WHERE metadata['n'] = '77'", 1, 4),
        ("SELECT id FROM jobs WHERE array_contains(element_at(metadata, 'bucket'), 'b3')", 400, 900),
        ("SELECT id FROM jobs WHERE starts_with(array_any_value(element_at(metadata, 'n')), '399')", 11, 30),
        ("SELECT id FROM jobs WHERE task_group = 'g1' AND tenant = 't'", 1_000, 2_100),
        ("SELECT id FROM jobs WHERE status_kind = 'Running'", 0, 5),
        ("SELECT COUNT(*) FROM tenant_counts WHERE tenant = 'u'", 1, 2),
    ];
    for (sql, rows, max_read) in cases {
        let (got, read) = run(&engine, &kv, None, sql).await;
        assert_eq!(got, rows, "{sql}");
        assert!(read <= max_read, "{sql}: read {read} entries for {rows} rows (at most {max_read})");
    }
    // A short IN list (which DataFusion turns into ORs) still uses the index.
    let (got, read) = run(&engine, &kv, None, "SELECT id FROM jobs WHERE status_kind IN ('Running', 'Failed')").await;
    assert_eq!((got, read), (0, 2), "tenants enumerated, two empty status ranges");
    // Repeated values are read once.
    let (got, _) = run(&engine, &kv, None, "SELECT id FROM jobs WHERE task_group IN ('g1', 'g1', 'g2', 'g3')").await;
    assert_eq!(got, 3_000);
    // More missing ids than one batch holds do not end the scan before a real one.
    let missing: Vec<String> = (0..1_500).map(|i| format!("'a-{i:05}'")).collect();
    let sql = format!("SELECT id FROM jobs WHERE id IN ({}, 'zzz', 'job-003999')", missing.join(", "));
    let (got, _) = run(&engine, &kv, Some("t"), &sql).await;
    assert_eq!(got, 1);
    // Without an indexed filter the whole table is read (the control).
    let (got, read) = run(&engine, &kv, None, "SELECT id FROM jobs WHERE priority = 1 AND id LIKE '%7'").await;
    assert_eq!(got, 400);
    assert!(read > 4_000, "a full scan reads every job ({read})");
    // A tenant's statement reads only that tenant's range.
    let (got, read) = run(&engine, &kv, Some("u"), "SELECT id FROM jobs").await;
    assert_eq!((got, read), (1, 1));
}
