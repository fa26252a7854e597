//! The state machine's apply path alone, over a real RocksDB: CPU per job
//! lifecycle (enqueue → grant → report success) without gRPC, Raft, fsync or
//! a load generator on the same cores, so that changes to the apply path can
//! be compared in a few seconds with little noise (issue #11, "fewer RocksDB
//! keys per job").
//!
//! `cargo bench --bench apply -- [BATCHES] [JOBS_PER_BATCH] [BACKLOG]`
//! (defaults 3000, 30, 0). Each batch is one `Op::Batch` log entry holding
//! JOBS_PER_BATCH enqueues, one GrantLeases of the tasks the previous batch
//! enqueued, and a ReportOutcome for each task the previous batch granted, the
//! shape of the steady phase of `silo bench`. It is applied as
//! `raft::sm_store` applies a committed entry: through an [`Overlay`], then
//! one `WriteBatch` without the WAL. BACKLOG jobs are enqueued first (in
//! another task group) and never leased. `JOB_IDS=random` gives the jobs
//! scattered ids instead of ids in enqueue order (docs/BENCHMARKS.md,
//! "Ordered job ids").
//!
//! Prints µs per job for the whole pass, the part spent in the state machine
//! (its reads included) and the part spent writing the batch, and the
//! reads, writes and deletes that reached the overlay per job.
use std::cell::Cell;
use std::time::{Duration, Instant};

use rocksdb::{WriteBatch, WriteOptions};
use silo::config::StorageConfig;
use silo::state_machine::{self, Command, Effect, JobKey, NewJob, Op, Outcome, Output};
use silo::storage::kv::Kv;
use silo::storage::rocks::{self, Overlay};

/// Counts what a command asks of its store, by table (a key's first byte,
/// `storage::keys`).
struct Counting<'a, K: Kv> {
    inner: &'a mut K,
    gets: Cell<[u64; 256]>,
    puts: [u64; 256],
    deletes: [u64; 256],
}

impl<K: Kv> Kv for Counting<'_, K> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut gets = self.gets.get();
        gets[key[0] as usize] += 1;
        self.gets.set(gets);
        self.inner.get(key)
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.puts[key[0] as usize] += 1;
        self.inner.put(key, value)
    }
    fn delete(&mut self, key: &[u8]) {
        self.deletes[key[0] as usize] += 1;
        self.inner.delete(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.inner.scan_prefix(prefix)
    }
    fn scan_from_n(&self, prefix: &[u8], from: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.inner.scan_from_n(prefix, from, n)
    }
}

/// Job `n`'s id, a 36-character UUID either way: in enqueue order (the
/// default, like the time-ordered ids our clients generate) or scattered
/// (`JOB_IDS=random`, like random caller-chosen ids; a hash of `n`, so
/// runs repeat).
fn job_id(n: u64, random: bool) -> String {
    let hash = |seed| xxhash_rust::xxh64::xxh64(&n.to_be_bytes(), seed);
    uuid::Uuid::from_u64_pair(if random { hash(1) } else { n }, hash(2)).to_string()
}

fn new_job(n: u64, task_group: &str) -> Op {
    static RANDOM_IDS: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| std::env::var("JOB_IDS").as_deref() == Ok("random"));
    Op::Enqueue(NewJob {
        key: JobKey { shard: 0, tenant: "-".into(), id: job_id(n, *RANDOM_IDS) },
        task_group: task_group.into(),
        priority: 50,
        start_at_ms: 0,
        retry_policy: None,
        payload: vec![7u8; 64],
        limits: Vec::new(),
        metadata: Default::default(),
    })
}

fn arg(i: usize, default: u64) -> u64 {
    std::env::args().filter(|a| !a.starts_with('-')).nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() {
    let (batches, per_batch, backlog) = (arg(1, 3000), arg(2, 30), arg(3, 0));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut storage = StorageConfig::default();
    if let Some(mb) = std::env::var("WRITE_BUFFER_MB").ok().and_then(|v| v.parse().ok()) {
        storage.write_buffer_mb = mb;
        storage.write_buffers_mb = storage.write_buffers_mb.max(3 * mb);
    }
    let db = rocks::open(dir.path(), &storage).expect("open rocksdb");
    let mut no_wal = WriteOptions::default();
    no_wal.disable_wal(true);
    let mut index = 0u64;
    let mut now_ms = 1_700_000_000_000i64;
    let mut apply = |ops: Vec<Op>, now_ms: i64, totals: &mut Totals| -> (Vec<Effect>, Output) {
        index += 1;
        let started = Instant::now();
        let mut overlay = Overlay::new(&db);
        let mut counting =
            Counting { inner: &mut overlay, gets: Cell::new([0; 256]), puts: [0; 256], deletes: [0; 256] };
        let (result, effects) = state_machine::apply(&mut counting, index, &Command { now_ms, op: Op::Batch(ops) });
        let (gets, puts, deletes) = (counting.gets.get(), counting.puts, counting.deletes);
        let applied = Instant::now();
        let mut batch = WriteBatch::default();
        overlay.into_batch(&mut batch);
        db.write_opt(batch, &no_wal).expect("write");
        totals.sm += applied - started;
        totals.write += applied.elapsed();
        for t in 0..256 {
            totals.gets[t] += gets[t];
            totals.puts[t] += puts[t];
            totals.deletes[t] += deletes[t];
        }
        (effects, result.expect("a batch applies"))
    };

    let mut warmup = Totals::default();
    let mut n = 0u64;
    for chunk in 0..backlog.div_ceil(500) {
        let ops = (0..500.min(backlog - chunk * 500)).map(|_| {
            n += 1;
            new_job(n, "backlog")
        });
        apply(ops.collect(), now_ms, &mut warmup);
    }

    let mut totals = Totals::default();
    let (mut to_grant, mut to_report): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let mut jobs_done = 0u64;
    for _ in 0..batches {
        now_ms += 5;
        let mut ops: Vec<Op> = (0..per_batch)
            .map(|_| {
                n += 1;
                new_job(n, "steady")
            })
            .collect();
        if !to_grant.is_empty() {
            ops.push(Op::GrantLeases {
                worker_id: "w".into(),
                task_ids: std::mem::take(&mut to_grant),
                lease_ms: 30_000,
            });
        }
        let reported = to_report.len() as u64;
        ops.extend(
            std::mem::take(&mut to_report)
                .into_iter()
                .map(|task_id| Op::ReportOutcome { task_id, outcome: Outcome::Success { result: b"ok".to_vec() } }),
        );
        let (effects, output) = apply(ops, now_ms, &mut totals);
        for e in effects {
            if let Effect::Queued(q) = e {
                to_grant.push(q.task_id);
            }
        }
        let Output::Batch(results) = output else { panic!("a batch answers with a batch") };
        for r in results {
            match r {
                Ok(Output::Granted { tasks, .. }) => to_report.extend(tasks.into_iter().map(|t| t.task_id)),
                Ok(_) => {}
                Err(e) => panic!("rejected: {e:?}"),
            }
        }
        jobs_done += reported;
    }
    let per_job = |d: Duration| d.as_secs_f64() * 1e6 / jobs_done as f64;
    let count = |c: &[u64; 256]| c.iter().sum::<u64>() as f64 / jobs_done as f64;
    println!(
        "{jobs_done} job lifecycles in {batches} batches of {per_batch} jobs, backlog {backlog}: \
         {:.1} µs/job ({:.1} state machine, {:.1} batch write); per job {:.1} reads, {:.1} writes, {:.1} deletes",
        per_job(totals.sm + totals.write),
        per_job(totals.sm),
        per_job(totals.write),
        count(&totals.gets),
        count(&totals.puts),
        count(&totals.deletes),
    );
    println!("per job, by table (reads/writes/deletes):");
    for t in 0..256 {
        let (g, p, d) = (totals.gets[t], totals.puts[t], totals.deletes[t]);
        if g + p + d > 0 {
            let f = |c: u64| c as f64 / jobs_done as f64;
            println!("  {} {:.2} / {:.2} / {:.2}", t as u8 as char, f(g), f(p), f(d));
        }
    }
}

struct Totals {
    sm: Duration,
    write: Duration,
    gets: [u64; 256],
    puts: [u64; 256],
    deletes: [u64; 256],
}

impl Default for Totals {
    fn default() -> Self {
        Totals { sm: Duration::ZERO, write: Duration::ZERO, gets: [0; 256], puts: [0; 256], deletes: [0; 256] }
    }
}
