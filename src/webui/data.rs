//! What the console reads besides the API: this node's applied state and
//! broker. Every read here is bounded by something other than the backlog:
//! task groups, running leases (capped at [`LEASE_SCAN_MAX`]), the next N
//! ready tasks, or a row cap on limit tables.
use std::collections::BTreeMap;

use crate::broker::Broker;
use crate::state_machine::limits::WaiterRecord;
use crate::state_machine::{Bucket, FloatingState, LeaseKind, Tables, View};
use crate::storage::rocks::{prefix_iter, ReadKv};
use crate::storage::{codec, keys};
use rocksdb::DB;

/// Most leases one page reads (a worker fleet's concurrency, not the backlog).
pub const LEASE_SCAN_MAX: usize = 10_000;
/// Most rows a limits table shows.
pub const LIMIT_ROWS_MAX: usize = 500;

/// One running attempt (or floating-limit refresh) and its worker (also a
/// lease of a DumpTasks dump, as JSON).
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LeaseRow {
    pub task_id: String,
    pub task_group: String,
    pub job_id: String,
    pub tenant: String,
    pub attempt_number: u32,
    pub worker_id: String,
    pub granted_at_ms: i64,
    /// Wall-clock deadline from this node's broker clock, if it tracks it.
    pub deadline_ms: Option<i64>,
    /// `Some(key)` for a floating-limit refresh lease.
    pub refresh_key: Option<String>,
}

/// The running leases [`leases`] read.
pub struct Leases {
    /// Rows of the requested task group (all groups when none was given).
    pub rows: Vec<LeaseRow>,
    /// Running leases per task group.
    pub per_group: BTreeMap<String, usize>,
    /// More than [`LEASE_SCAN_MAX`] leases exist; counts are lower bounds.
    pub truncated: bool,
}

/// Running leases, counted per task group; rows kept for `group` only.
pub fn leases(db: &DB, broker: &Broker, group: Option<&str>, rows_max: usize) -> Leases {
    let view = View(&ReadKv { db });
    let wall_minus_mono = crate::wall_clock_ms() - crate::monotonic_ms();
    let mut out = Leases { rows: Vec::new(), per_group: BTreeMap::new(), truncated: false };
    for (i, (_, v)) in prefix_iter(db, keys::CF_SM, &keys::table(keys::LEASE)).enumerate() {
        if i >= LEASE_SCAN_MAX {
            out.truncated = true;
            break;
        }
        let Ok(lease) = codec::decode::<crate::state_machine::Lease>(&v) else { continue };
        let (task_group, refresh_key) = match &lease.kind {
            LeaseKind::Attempt => (view.job(&lease.job).map(|j| j.task_group).unwrap_or_default(), None),
            LeaseKind::Refresh { key } => {
                let fk = keys::floating(lease.job.shard, &lease.job.tenant, key);
                let state = view.kv_get(&fk).and_then(|b| codec::decode::<FloatingState>(&b).ok());
                (state.map(|s| s.task_group).unwrap_or_default(), Some(key.clone()))
            }
        };
        *out.per_group.entry(task_group.clone()).or_default() += 1;
        if group.is_none_or(|g| g == task_group) && out.rows.len() < rows_max {
            out.rows.push(LeaseRow {
                task_group: task_group.clone(),
                deadline_ms: broker.lease_deadline(&lease.task_id).map(|d| d + wall_minus_mono),
                task_id: lease.task_id,
                job_id: lease.job.id,
                tenant: lease.job.tenant,
                attempt_number: lease.attempt_number,
                worker_id: lease.worker_id,
                granted_at_ms: lease.granted_at_ms,
                refresh_key,
            });
        }
    }
    out
}

/// One queued attempt, in the order workers will get it (also a task of a
/// DumpTasks dump, as JSON).
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskRow {
    pub task_id: String,
    pub job_id: String,
    pub tenant: String,
    pub priority: u32,
    pub start_at_ms: i64,
    pub attempt_number: u32,
}

/// The next `max` ready tasks of `task_group` at wall-clock `now_ms`.
pub fn next_tasks(db: &DB, broker: &Broker, task_group: &str, max: usize, now_ms: i64) -> Vec<TaskRow> {
    let view = View(&ReadKv { db });
    broker
        .peek_ready(task_group, max, now_ms)
        .into_iter()
        .filter_map(|task_id| view.queued(&task_id))
        .map(|q| TaskRow {
            task_id: q.task_id,
            job_id: q.job.id,
            tenant: q.job.tenant,
            priority: q.priority,
            start_at_ms: q.start_at_ms,
            attempt_number: q.attempt_number,
        })
        .collect()
}

/// The job id a task belongs to, from its queue entry or its lease.
pub fn job_of_task(db: &DB, task_id: &str) -> Option<String> {
    let view = View(&ReadKv { db });
    view.queued(task_id).map(|q| q.job.id).or_else(|| view.lease(task_id).map(|l| l.job.id)).filter(|id| !id.is_empty())
}

/// One holder or waiter of a concurrency queue.
pub struct EntryRow {
    /// "holder" or "requester" (the `queues` table's names).
    pub entry_type: &'static str,
    pub floating: bool,
    pub task_id: String,
    pub job_id: Option<String>,
    /// A waiter's priority.
    pub priority: Option<u32>,
    /// A holder's grant time or a waiter's start time (wall-clock ms).
    pub at_ms: i64,
}

/// The holders, then the waiters in grant order, of one tenant's queue `key`
/// on `shard` (fixed and floating), at most `max` of each kind: prefix
/// reads, whatever else is queued.
pub fn queue_entries(db: &DB, shard: u32, tenant: &str, key: &str, max: usize) -> Vec<EntryRow> {
    let mut out = Vec::new();
    for floating in [false, true] {
        for (k, v) in prefix_iter(db, keys::CF_SM, &keys::holders_of(shard, tenant, floating, key)).take(max) {
            let Some(entry) = keys::parse_limit_entry(&k) else { continue };
            out.push(EntryRow {
                entry_type: "holder",
                floating,
                job_id: job_of_task(db, &entry.task_id),
                task_id: entry.task_id,
                priority: None,
                // Holders written before grant times were kept hold a 1-byte marker.
                at_ms: codec::decode::<i64>(&v).unwrap_or(0),
            });
        }
    }
    for floating in [false, true] {
        for (k, v) in prefix_iter(db, keys::CF_SM, &keys::waiters_of(shard, tenant, floating, key)).take(max) {
            let (Some(entry), Ok(rec)) = (keys::parse_limit_entry(&k), codec::decode::<WaiterRecord>(&v)) else {
                continue;
            };
            let (priority, start_ms, _) = entry.waiter_order.unwrap_or_default();
            out.push(EntryRow {
                entry_type: "requester",
                floating,
                task_id: rec.task_id,
                job_id: Some(rec.job.id),
                priority: Some(priority),
                at_ms: start_ms,
            });
        }
    }
    out
}

/// A floating concurrency limit's current state.
pub struct FloatingRow {
    pub tenant: String,
    pub key: String,
    pub state: FloatingState,
}

/// The first [`LIMIT_ROWS_MAX`] entries of the table `tag` that `row`
/// makes sense of (key, value → row); true when there are more.
fn limit_table<T>(db: &DB, tag: u8, row: impl Fn(&[u8], &[u8]) -> Option<T>) -> (Vec<T>, bool) {
    let mut rows = Vec::new();
    for (k, v) in prefix_iter(db, keys::CF_SM, &keys::table(tag)) {
        if rows.len() == LIMIT_ROWS_MAX {
            return (rows, true);
        }
        rows.extend(row(&k, &v));
    }
    (rows, false)
}

/// Floating limits of every shard and tenant, at most [`LIMIT_ROWS_MAX`];
/// true when there are more.
pub fn floating_limits(db: &DB) -> (Vec<FloatingRow>, bool) {
    limit_table(db, keys::FLOATING, |k, v| {
        let (_, tenant, key) = keys::parse_floating(k)?;
        Some(FloatingRow { tenant, key, state: codec::decode::<FloatingState>(v).ok()? })
    })
}

/// A rate-limit bucket (global across tenants).
pub struct BucketRow {
    pub name: String,
    pub unique_key: String,
    pub bucket: Bucket,
}

/// Rate-limit buckets, at most [`LIMIT_ROWS_MAX`]; true when there are more.
pub fn rate_buckets(db: &DB) -> (Vec<BucketRow>, bool) {
    limit_table(db, keys::BUCKET, |k, v| {
        let (name, unique_key) = keys::parse_bucket(k)?;
        Some(BucketRow { name, unique_key, bucket: codec::decode::<Bucket>(v).ok()? })
    })
}
