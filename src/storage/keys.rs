//! The one file that knows key bytes.
//!
//! State-machine keys (column family `sm`) start with a one-byte table tag.
//! Strings inside keys are length-prefixed (u16 big-endian) so that a prefix
//! of one tenant or job can never match another; integers are big-endian so
//! byte order equals numeric order.
//!
//! | tag | key                                   | value          |
//! |-----|---------------------------------------|----------------|
//! | `J` | shard, tenant, job id                 | `Job`          |
//! | `P` | shard, tenant, job id                 | payload bytes  |
//! | `A` | shard, tenant, job id, attempt (u32)  | `Attempt`      |
//! | `L` | task id                               | `Lease`        |
//! | `Q` | task id                               | `QueuedTask`   |
//! | `O` | queue order of a `Q` entry (below)    | (empty)        |
//! | `M` | meta name                             | meta value     |
//! | `C` | shard, tenant, slot                   | `QueueState`   |
//! | `H` | shard, tenant, slot, task id          | holder marker  |
//! | `W` | shard, tenant, slot, order, task id   | `WaiterRecord` |
//! | `K` | shard, tenant, slot                   | waiter cursor: a `W` key |
//! | `F` | shard, tenant, key                    | `FloatingState`|
//! | `B` | name, unique key                      | `Bucket`       |
//! | `T` | finished time, shard, tenant, job id  | (empty)        |
//! | `S` | shard, tenant, status, status time, job id | (empty)   |
//! | `G` | shard, tenant, task group, job id     | (empty)        |
//! | `X` | shard, tenant, metadata key, value, job id | (empty)   |
//! | `N` | shard, tenant, status                 | job count (i64)|
//!
//! `S`, `G` and `X` are the query indexes (SQL pushdown) and `N` the per-tenant
//! status counters; `tx.rs` keeps all four in the same apply as the change they
//! index. Metadata keys and values in `X` are *escaped* rather than length-
//! prefixed (0x00 → 0x00 0xFF, end 0x00 0x01) so a value prefix is a key prefix.
//!
//! `O` is the broker's paging index (issue #10): every `Q` entry once more,
//! in the order the broker hands tasks out, so the leader keeps only a window
//! of each queue in memory and reads the next page from here. Its classes:
//! `O 0 group priority start seq task-id` (attempts: priority, then start
//! time, then enqueue seq; DECISIONS #5), `O 1 at task-id` (gates, by the
//! time their walk resumes), `O 2 group due task-id` (floating-limit refresh
//! tasks), and `O 3 group` → `QueueCounts` (how many of each a task group has
//! queued, so a restart knows the sizes without counting).
//!
//! A slot is `[0|1 floating][key]`; the waiter order is
//! (priority u32, start time, enqueue seq), all big-endian (DECISIONS #5).
//!
//! Raft keys (column families `log`, `raft_meta`, `sm_meta`) are defined at the
//! bottom.
use crate::state_machine::{JobKey, JobStatus, QueueKind, QueuedTask};

pub const JOB: u8 = b'J';
pub const PAYLOAD: u8 = b'P';
pub const ATTEMPT: u8 = b'A';
pub const LEASE: u8 = b'L';
pub const QUEUED: u8 = b'Q';
pub const QUEUE_ORDER: u8 = b'O';
pub const META: u8 = b'M';
pub const QUEUE: u8 = b'C';
pub const HOLDER: u8 = b'H';
pub const WAITER: u8 = b'W';
pub const WAITER_CURSOR: u8 = b'K';
pub const FLOATING: u8 = b'F';
pub const BUCKET: u8 = b'B';
pub const TERMINAL: u8 = b'T';
pub const STATUS_INDEX: u8 = b'S';
pub const GROUP_INDEX: u8 = b'G';
pub const METADATA_INDEX: u8 = b'X';
pub const TENANT_COUNT: u8 = b'N';

/// A time as 8 big-endian bytes whose byte order is the numeric order.
fn push_ms(out: &mut Vec<u8>, ms: i64) {
    out.extend_from_slice(&((ms as u64) ^ (1 << 63)).to_be_bytes());
}

fn read_ms(b: &[u8]) -> Option<(i64, &[u8])> {
    let v = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    Some(((v ^ (1 << 63)) as i64, &b[8..]))
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("key strings are validated to be shorter than 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn job_prefixed(tag: u8, job: &JobKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 4 + 4 + job.tenant.len() + job.id.len() + 4);
    out.push(tag);
    out.extend_from_slice(&job.shard.to_be_bytes());
    push_str(&mut out, &job.tenant);
    push_str(&mut out, &job.id);
    out
}

pub fn job(job: &JobKey) -> Vec<u8> {
    job_prefixed(JOB, job)
}

pub fn payload(job: &JobKey) -> Vec<u8> {
    job_prefixed(PAYLOAD, job)
}

/// Prefix of every attempt of `job`; attempts sort by attempt number.
pub fn attempts_of(job: &JobKey) -> Vec<u8> {
    job_prefixed(ATTEMPT, job)
}

pub fn attempt(job: &JobKey, attempt_number: u32) -> Vec<u8> {
    let mut out = attempts_of(job);
    out.extend_from_slice(&attempt_number.to_be_bytes());
    out
}

fn slot_prefixed(tag: u8, shard: u32, tenant: &str, floating: bool, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 4 + 2 + tenant.len() + 1 + 2 + key.len() + 32);
    out.push(tag);
    out.extend_from_slice(&shard.to_be_bytes());
    push_str(&mut out, tenant);
    out.push(u8::from(floating));
    push_str(&mut out, key);
    out
}

pub fn queue(shard: u32, tenant: &str, floating: bool, key: &str) -> Vec<u8> {
    slot_prefixed(QUEUE, shard, tenant, floating, key)
}

/// Prefix of every holder of a queue.
pub fn holders_of(shard: u32, tenant: &str, floating: bool, key: &str) -> Vec<u8> {
    slot_prefixed(HOLDER, shard, tenant, floating, key)
}

pub fn holder(shard: u32, tenant: &str, floating: bool, key: &str, task_id: &str) -> Vec<u8> {
    let mut out = holders_of(shard, tenant, floating, key);
    out.extend_from_slice(task_id.as_bytes());
    out
}

/// Prefix of every holder of every queue of a tenant.
pub fn holders_of_tenant(shard: u32, tenant: &str) -> Vec<u8> {
    let mut out = vec![HOLDER];
    out.extend_from_slice(&shard.to_be_bytes());
    push_str(&mut out, tenant);
    out
}

/// Prefix of every queue state of a tenant.
pub fn queues_of_tenant(shard: u32, tenant: &str) -> Vec<u8> {
    let mut out = vec![QUEUE];
    out.extend_from_slice(&shard.to_be_bytes());
    push_str(&mut out, tenant);
    out
}

/// (floating, key) of a queue-state key found under `queues_of_tenant(..)`.
pub fn parse_queue_slot(queue_key: &[u8], tenant_prefix: &[u8]) -> Option<(bool, String)> {
    let rest = queue_key.strip_prefix(tenant_prefix)?;
    let (&floating, rest) = rest.split_first()?;
    let len = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let key = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
    Some((floating == 1, key.to_string()))
}

fn read_str(b: &[u8]) -> Option<(String, &[u8])> {
    let len = u16::from_be_bytes([*b.first()?, *b.get(1)?]) as usize;
    let s = std::str::from_utf8(b.get(2..2 + len)?).ok()?.to_string();
    Some((s, &b[2 + len..]))
}

/// (shard, tenant, floating, key) of a queue-state key.
pub fn parse_queue_key(k: &[u8]) -> Option<(u32, String, bool, String)> {
    let rest = k.strip_prefix(&[QUEUE])?;
    let shard = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let (tenant, rest) = read_str(&rest[4..])?;
    let (&floating, rest) = rest.split_first()?;
    let (key, _) = read_str(rest)?;
    Some((shard, tenant, floating == 1, key))
}

/// A holder (`H`) or waiter (`W`) key taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitEntry {
    pub shard: u32,
    pub tenant: String,
    pub floating: bool,
    pub key: String,
    /// The holder's task id; for a waiter, the bytes after its order.
    pub task_id: String,
    /// A waiter's (priority, start time, enqueue seq); None for a holder.
    pub waiter_order: Option<(u32, i64, u64)>,
}

/// Parses an `H` or `W` key.
pub fn parse_limit_entry(k: &[u8]) -> Option<LimitEntry> {
    let (&tag, rest) = k.split_first()?;
    if tag != HOLDER && tag != WAITER {
        return None;
    }
    let shard = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let (tenant, rest) = read_str(&rest[4..])?;
    let (&floating, rest) = rest.split_first()?;
    let (key, mut rest) = read_str(rest)?;
    let mut waiter_order = None;
    if tag == WAITER {
        let priority = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        let (start, _) = read_ms(rest.get(4..)?)?;
        let seq = u64::from_be_bytes(rest.get(12..20)?.try_into().ok()?);
        waiter_order = Some((priority, start, seq));
        rest = &rest[20..];
    }
    let task_id = std::str::from_utf8(rest).ok()?.to_string();
    Some(LimitEntry { shard, tenant, floating: floating == 1, key, task_id, waiter_order })
}

/// Prefix of every waiter of a queue, in grant order.
pub fn waiters_of(shard: u32, tenant: &str, floating: bool, key: &str) -> Vec<u8> {
    slot_prefixed(WAITER, shard, tenant, floating, key)
}

pub fn waiter(shard: u32, tenant: &str, floating: bool, key: &str, order: (u32, i64, u64), task_id: &str) -> Vec<u8> {
    let mut out = waiters_of(shard, tenant, floating, key);
    out.extend_from_slice(&order.0.to_be_bytes());
    push_ms(&mut out, order.1);
    out.extend_from_slice(&order.2.to_be_bytes());
    out.extend_from_slice(task_id.as_bytes());
    out
}

/// Where a scan of a queue's waiters starts: no live waiter sorts before the
/// key stored here (limits.rs keeps it; granted waiters in front are
/// tombstones a scan would otherwise walk).
pub fn waiter_cursor(shard: u32, tenant: &str, floating: bool, key: &str) -> Vec<u8> {
    slot_prefixed(WAITER_CURSOR, shard, tenant, floating, key)
}

pub fn floating(shard: u32, tenant: &str, key: &str) -> Vec<u8> {
    let mut out = vec![FLOATING];
    out.extend_from_slice(&shard.to_be_bytes());
    push_str(&mut out, tenant);
    push_str(&mut out, key);
    out
}

/// Index of terminal jobs by the time they finished (retention purges in this order).
pub fn terminal(finished_at_ms: i64, job: &JobKey) -> Vec<u8> {
    let mut out = vec![TERMINAL];
    push_ms(&mut out, finished_at_ms);
    out.extend_from_slice(&job_prefixed(TERMINAL, job)[1..]);
    out
}

/// (finished time, job) of a terminal-index key.
pub fn parse_terminal(k: &[u8]) -> Option<(i64, JobKey)> {
    let rest = k.strip_prefix(&[TERMINAL])?;
    let (at, rest) = read_ms(rest)?;
    let shard = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let (tenant, rest) = read_str(&rest[4..])?;
    let (id, _) = read_str(rest)?;
    Some((at, JobKey { shard, tenant, id }))
}

/// `tag, shard, tenant`: the prefix of one tenant's entries in an index table.
pub fn tenant_prefixed(tag: u8, shard: u32, tenant: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 4 + 2 + tenant.len() + 48);
    out.push(tag);
    out.extend_from_slice(&shard.to_be_bytes());
    push_str(&mut out, tenant);
    out
}

/// `tag, shard`: the prefix of one shard's entries in an index table.
pub fn shard_prefixed(tag: u8, shard: u32) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&shard.to_be_bytes());
    out
}

/// Status codes inside `S` and `N` keys (stable: they are stored).
pub fn status_code(status: JobStatus) -> u8 {
    match status {
        JobStatus::Scheduled => 0,
        JobStatus::Running => 1,
        JobStatus::Succeeded => 2,
        JobStatus::Failed => 3,
        JobStatus::Cancelled => 4,
    }
}

pub fn status_from_code(code: u8) -> Option<JobStatus> {
    Some(match code {
        0 => JobStatus::Scheduled,
        1 => JobStatus::Running,
        2 => JobStatus::Succeeded,
        3 => JobStatus::Failed,
        4 => JobStatus::Cancelled,
        _ => return None,
    })
}

/// Prefix of one tenant's jobs in one status, ordered by status-change time.
pub fn status_index_prefix(shard: u32, tenant: &str, status: JobStatus) -> Vec<u8> {
    let mut out = tenant_prefixed(STATUS_INDEX, shard, tenant);
    out.push(status_code(status));
    out
}

pub fn status_index(shard: u32, tenant: &str, status: JobStatus, changed_at_ms: i64, id: &str) -> Vec<u8> {
    let mut out = status_index_prefix(shard, tenant, status);
    push_ms(&mut out, changed_at_ms);
    push_str(&mut out, id);
    out
}

/// (tenant, status, status-change time, job id) of an `S` key.
pub fn parse_status_index(k: &[u8]) -> Option<(String, JobStatus, i64, String)> {
    let rest = k.strip_prefix(&[STATUS_INDEX])?.get(4..)?;
    let (tenant, rest) = read_str(rest)?;
    let (&code, rest) = rest.split_first()?;
    let (at, rest) = read_ms(rest)?;
    let (id, _) = read_str(rest)?;
    Some((tenant, status_from_code(code)?, at, id))
}

/// Prefix of one tenant's jobs in one task group.
pub fn group_index_prefix(shard: u32, tenant: &str, task_group: &str) -> Vec<u8> {
    let mut out = tenant_prefixed(GROUP_INDEX, shard, tenant);
    push_str(&mut out, task_group);
    out
}

pub fn group_index(shard: u32, tenant: &str, task_group: &str, id: &str) -> Vec<u8> {
    let mut out = group_index_prefix(shard, tenant, task_group);
    push_str(&mut out, id);
    out
}

/// (tenant, task group, job id) of a `G` key.
pub fn parse_group_index(k: &[u8]) -> Option<(String, String, String)> {
    let rest = k.strip_prefix(&[GROUP_INDEX])?.get(4..)?;
    let (tenant, rest) = read_str(rest)?;
    let (group, rest) = read_str(rest)?;
    let (id, _) = read_str(rest)?;
    Some((tenant, group, id))
}

/// Order-preserving, prefix-preserving escape: 0x00 becomes 0x00 0xFF.
fn push_escaped(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}

const ESCAPED_END: [u8; 2] = [0x00, 0x01];

/// Reads an escaped string up to its end marker.
fn read_escaped(b: &[u8]) -> Option<(String, &[u8])> {
    let mut raw = Vec::new();
    let mut i = 0;
    loop {
        match (b.get(i)?, b.get(i + 1)) {
            (0, Some(0xFF)) => {
                raw.push(0);
                i += 2;
            }
            (0, Some(0x01)) => return Some((String::from_utf8(raw).ok()?, &b[i + 2..])),
            (0, _) => return None,
            (&c, _) => {
                raw.push(c);
                i += 1;
            }
        }
    }
}

/// Prefix of one tenant's jobs whose metadata `key` has a value equal to
/// `value` (`exact`) or starting with it.
pub fn metadata_index_prefix(shard: u32, tenant: &str, key: &str, value: &str, exact: bool) -> Vec<u8> {
    let mut out = tenant_prefixed(METADATA_INDEX, shard, tenant);
    push_escaped(&mut out, key);
    out.extend_from_slice(&ESCAPED_END);
    push_escaped(&mut out, value);
    if exact {
        out.extend_from_slice(&ESCAPED_END);
    }
    out
}

pub fn metadata_index(shard: u32, tenant: &str, key: &str, value: &str, id: &str) -> Vec<u8> {
    let mut out = metadata_index_prefix(shard, tenant, key, value, true);
    push_str(&mut out, id);
    out
}

/// (tenant, metadata key, value, job id) of an `X` key.
pub fn parse_metadata_index(k: &[u8]) -> Option<(String, String, String, String)> {
    let rest = k.strip_prefix(&[METADATA_INDEX])?.get(4..)?;
    let (tenant, rest) = read_str(rest)?;
    let (key, rest) = read_escaped(rest)?;
    let (value, rest) = read_escaped(rest)?;
    let (id, _) = read_str(rest)?;
    Some((tenant, key, value, id))
}

pub fn tenant_count(shard: u32, tenant: &str, status: JobStatus) -> Vec<u8> {
    let mut out = tenant_prefixed(TENANT_COUNT, shard, tenant);
    out.push(status_code(status));
    out
}

/// (tenant, status) of an `N` key.
pub fn parse_tenant_count(k: &[u8]) -> Option<(String, JobStatus)> {
    let rest = k.strip_prefix(&[TENANT_COUNT])?.get(4..)?;
    let (tenant, rest) = read_str(rest)?;
    Some((tenant, status_from_code(*rest.first()?)?))
}

/// Prefix of every job of one tenant (`J` table).
pub fn jobs_of_tenant(shard: u32, tenant: &str) -> Vec<u8> {
    tenant_prefixed(JOB, shard, tenant)
}

/// (tenant, id) of a `J` key.
pub fn parse_job_key(k: &[u8]) -> Option<JobKey> {
    let rest = k.strip_prefix(&[JOB])?;
    let shard = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let (tenant, rest) = read_str(&rest[4..])?;
    let (id, _) = read_str(rest)?;
    Some(JobKey { shard, tenant, id })
}

/// (shard, tenant, key) of a floating limit's state key (`F`).
pub fn parse_floating(k: &[u8]) -> Option<(u32, String, String)> {
    let rest = k.strip_prefix(&[FLOATING])?;
    let shard = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let (tenant, rest) = read_str(&rest[4..])?;
    let (key, rest) = read_str(rest)?;
    rest.is_empty().then_some((shard, tenant, key))
}

/// (name, unique key) of a rate-limit bucket key (`B`).
pub fn parse_bucket(k: &[u8]) -> Option<(String, String)> {
    let (name, rest) = read_str(k.strip_prefix(&[BUCKET])?)?;
    let (unique_key, rest) = read_str(rest)?;
    rest.is_empty().then_some((name, unique_key))
}

pub fn bucket(name: &str, unique_key: &str) -> Vec<u8> {
    let mut out = vec![BUCKET];
    push_str(&mut out, name);
    push_str(&mut out, unique_key);
    out
}

pub fn lease(task_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + task_id.len());
    out.push(LEASE);
    out.extend_from_slice(task_id.as_bytes());
    out
}

pub fn queued(task_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + task_id.len());
    out.push(QUEUED);
    out.extend_from_slice(task_id.as_bytes());
    out
}

/// The classes inside `O` (stable: they are stored).
const ORDER_ATTEMPT: u8 = 0;
const ORDER_GATE: u8 = 1;
const ORDER_REFRESH: u8 = 2;
const ORDER_COUNTS: u8 = 3;

fn order_class(class: u8) -> Vec<u8> {
    vec![QUEUE_ORDER, class]
}

/// Prefix of every attempt of every task group in the paging index.
pub fn attempt_orders() -> Vec<u8> {
    order_class(ORDER_ATTEMPT)
}

/// Prefix of one run: the attempts of `task_group` at `priority`, by
/// (start time, enqueue seq, task id).
pub fn attempt_run(task_group: &str, priority: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 2 + task_group.len() + 4 + 16 + 36);
    out.extend_from_slice(&attempt_orders());
    push_str(&mut out, task_group);
    out.extend_from_slice(&priority.to_be_bytes());
    out
}

/// Where the attempts of a run that start at or after `start_at_ms` begin.
pub fn attempt_run_from(task_group: &str, priority: u32, start_at_ms: i64) -> Vec<u8> {
    let mut out = attempt_run(task_group, priority);
    push_ms(&mut out, start_at_ms);
    out
}

/// The smallest key greater than every key starting with `prefix` (None when
/// the prefix is all 0xff bytes or empty: no upper bound).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// An attempt's key in the paging index.
pub fn attempt_order(task_group: &str, priority: u32, start_at_ms: i64, seq: u64, task_id: &str) -> Vec<u8> {
    let mut out = attempt_run_from(task_group, priority, start_at_ms);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(task_id.as_bytes());
    out
}

/// An attempt's paging-index key taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOrder {
    pub task_group: String,
    pub priority: u32,
    pub start_at_ms: i64,
    pub seq: u64,
    pub task_id: String,
}

pub fn parse_attempt_order(k: &[u8]) -> Option<AttemptOrder> {
    let rest = k.strip_prefix(attempt_orders().as_slice())?;
    let (task_group, rest) = read_str(rest)?;
    let priority = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let (start_at_ms, rest) = read_ms(&rest[4..])?;
    let seq = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let task_id = std::str::from_utf8(&rest[8..]).ok()?.to_string();
    Some(AttemptOrder { task_group, priority, start_at_ms, seq, task_id })
}

/// Prefix of every gate in the paging index, by resume time.
pub fn gate_orders() -> Vec<u8> {
    order_class(ORDER_GATE)
}

pub fn gate_order(at_ms: i64, task_id: &str) -> Vec<u8> {
    let mut out = gate_orders();
    push_ms(&mut out, at_ms);
    out.extend_from_slice(task_id.as_bytes());
    out
}

/// (resume time, task id) of a gate's paging-index key.
pub fn parse_gate_order(k: &[u8]) -> Option<(i64, String)> {
    let rest = k.strip_prefix(gate_orders().as_slice())?;
    let (at, rest) = read_ms(rest)?;
    Some((at, std::str::from_utf8(rest).ok()?.to_string()))
}

/// Prefix of every refresh task in the paging index.
pub fn refresh_orders() -> Vec<u8> {
    order_class(ORDER_REFRESH)
}

pub fn refresh_order(task_group: &str, due_ms: i64, task_id: &str) -> Vec<u8> {
    let mut out = refresh_orders();
    push_str(&mut out, task_group);
    push_ms(&mut out, due_ms);
    out.extend_from_slice(task_id.as_bytes());
    out
}

/// (task group, due time, task id) of a refresh task's paging-index key.
pub fn parse_refresh_order(k: &[u8]) -> Option<(String, i64, String)> {
    let rest = k.strip_prefix(refresh_orders().as_slice())?;
    let (group, rest) = read_str(rest)?;
    let (due, rest) = read_ms(rest)?;
    Some((group, due, std::str::from_utf8(rest).ok()?.to_string()))
}

/// A queued task's key in the paging index, by its kind.
pub fn queue_order(task: &QueuedTask) -> Vec<u8> {
    match task.kind {
        QueueKind::Attempt => attempt_order(&task.task_group, task.priority, task.start_at_ms, task.seq, &task.task_id),
        QueueKind::Gate => gate_order(task.start_at_ms, &task.task_id),
        QueueKind::Refresh { .. } => refresh_order(&task.task_group, task.start_at_ms, &task.task_id),
    }
}

/// Prefix of every task group's queue counts.
pub fn queue_counts_all() -> Vec<u8> {
    order_class(ORDER_COUNTS)
}

pub fn queue_counts(task_group: &str) -> Vec<u8> {
    let mut out = queue_counts_all();
    push_str(&mut out, task_group);
    out
}

/// The task group of a queue-counts key.
pub fn parse_queue_counts(k: &[u8]) -> Option<String> {
    let rest = k.strip_prefix(queue_counts_all().as_slice())?;
    Some(read_str(rest)?.0)
}

pub fn meta(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + name.len());
    out.push(META);
    out.extend_from_slice(name.as_bytes());
    out
}

/// Prefix covering a whole table.
pub fn table(tag: u8) -> Vec<u8> {
    vec![tag]
}

// ---- Raft storage (outside the state machine) ----
//
// Several Raft groups in one node (the planned multi-Raft scale-out) would
// each get their own `sm` and `sm_meta` column families (named after the
// group): a group's snapshot stream, its install (one range delete + one
// ingested file) and its digest already work on one column family, so they
// stay per group as they are.

/// Column family holding log entries keyed by [`log_index`].
pub const CF_LOG: &str = "log";
/// Column family holding the vote, the committed log id and the last purged log id.
pub const CF_RAFT_META: &str = "raft_meta";
/// Column family holding the state machine's records (the tables above).
pub const CF_SM: &str = "sm";
/// Column family holding last-applied log id and membership of the state machine.
pub const CF_SM_META: &str = "sm_meta";
/// Every column family, in the order the store opens them.
pub const ALL_CFS: [&str; 4] = [CF_LOG, CF_RAFT_META, CF_SM, CF_SM_META];

pub fn log_index(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn parse_log_index(key: &[u8]) -> u64 {
    u64::from_be_bytes(key.try_into().expect("log keys are 8 bytes"))
}

pub const RAFT_VOTE: &[u8] = b"vote";
pub const RAFT_COMMITTED: &[u8] = b"committed";
pub const RAFT_LAST_PURGED: &[u8] = b"last_purged";
pub const SM_LAST_APPLIED: &[u8] = b"last_applied";
pub const SM_MEMBERSHIP: &[u8] = b"membership";
/// Present while a snapshot install is replacing the state (sm_store.rs).
pub const SM_INSTALLING: &[u8] = b"installing";
/// Present once the `sm` column family's paging index (`O`) was derived from
/// its `Q` records (a state written before the index existed).
pub const SM_PAGING_INDEX: &[u8] = b"paging_index_v1";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn jk(shard: u32, tenant: &str, id: &str) -> JobKey {
        JobKey { shard, tenant: tenant.into(), id: id.into() }
    }

    proptest! {
        #[test]
        fn metadata_index_matches_exactly_or_by_value_prefix(
            key in "[a\\x00b]{0,4}", value in "[a\\x00b]{0,6}", other in "[a\\x00b]{0,6}", cut in 0usize..7,
        ) {
            let k = metadata_index(3, "t", &key, &value, "job");
            prop_assert_eq!(parse_metadata_index(&k), Some(("t".into(), key.clone(), value.clone(), "job".into())));
            prop_assert!(k.starts_with(&metadata_index_prefix(3, "t", &key, &value, true)));
            let p = &value[..cut.min(value.len())];
            prop_assert!(k.starts_with(&metadata_index_prefix(3, "t", &key, p, false)));
            let o = metadata_index(3, "t", &key, &other, "job");
            prop_assert_eq!(o.starts_with(&metadata_index_prefix(3, "t", &key, &value, true)), other == value);
            prop_assert_eq!(o.starts_with(&metadata_index_prefix(3, "t", &key, &value, false)), other.starts_with(&value));
        }
    }

    #[test]
    fn status_and_group_index_keys_parse_back_and_sort_by_time() {
        let a = status_index(1, "t", JobStatus::Failed, -5, "a");
        let b = status_index(1, "t", JobStatus::Failed, 7, "0");
        assert!(a < b && a.starts_with(&status_index_prefix(1, "t", JobStatus::Failed)));
        assert_eq!(parse_status_index(&b), Some(("t".into(), JobStatus::Failed, 7, "0".into())));
        let g = group_index(1, "t", "emails", "j");
        assert_eq!(parse_group_index(&g), Some(("t".into(), "emails".into(), "j".into())));
        assert!(!group_index(1, "t", "emails2", "j").starts_with(&group_index_prefix(1, "t", "emails")));
        assert_eq!(
            parse_tenant_count(&tenant_count(1, "t", JobStatus::Running)),
            Some(("t".into(), JobStatus::Running))
        );
        assert_eq!(parse_job_key(&job(&jk(1, "t", "j"))), Some(jk(1, "t", "j")));
        let w = parse_limit_entry(&waiter(1, "t", true, "k", (3, -4, 5), "task")).unwrap();
        assert_eq!((w.tenant.as_str(), w.floating, w.key.as_str()), ("t", true, "k"));
        assert_eq!((w.task_id.as_str(), w.waiter_order), ("task", Some((3, -4, 5))));
        let h = parse_limit_entry(&holder(1, "t", false, "k", "task")).unwrap();
        assert_eq!((h.task_id.as_str(), h.waiter_order, h.floating), ("task", None, false));
    }

    #[test]
    fn waiters_sort_by_priority_then_start_then_seq() {
        let w = |p, s, q| waiter(0, "-", false, "k", (p, s, q), "t");
        assert!(w(0, 500, 9) < w(1, 0, 0));
        assert!(w(5, -1, 9) < w(5, 0, 0), "negative start times sort first");
        assert!(w(5, 10, 1) < w(5, 10, 2));
        assert!(w(5, 10, 1).starts_with(&waiters_of(0, "-", false, "k")));
        assert!(!w(5, 10, 1).starts_with(&waiters_of(0, "-", true, "k")));
    }

    #[test]
    fn queue_keys_parse_back() {
        let prefix = queues_of_tenant(3, "acme");
        let k = queue(3, "acme", true, "my-key");
        assert_eq!(parse_queue_slot(&k, &prefix), Some((true, "my-key".to_string())));
        assert_eq!(parse_queue_slot(&queue(3, "other", false, "k"), &prefix), None);
        assert_eq!(parse_queue_key(&k), Some((3, "acme".to_string(), true, "my-key".to_string())));
        assert_eq!(parse_floating(&floating(3, "acme", "fk")), Some((3, "acme".to_string(), "fk".to_string())));
        assert_eq!(parse_bucket(&bucket("api", "u1")), Some(("api".to_string(), "u1".to_string())));
        assert_eq!(parse_bucket(&floating(3, "acme", "fk")), None);
    }

    #[test]
    fn terminal_index_sorts_by_time_and_parses_back() {
        let j = jk(2, "acme", "job-1");
        assert!(terminal(5, &j) < terminal(6, &jk(0, "-", "a")));
        assert_eq!(parse_terminal(&terminal(1_700_000_000_000, &j)), Some((1_700_000_000_000, j)));
    }

    #[test]
    fn attempts_sort_numerically() {
        let j = jk(0, "-", "a");
        assert!(attempt(&j, 2) < attempt(&j, 10));
        assert!(attempt(&j, 255) < attempt(&j, 256));
    }

    proptest! {
        #[test]
        fn job_prefix_never_matches_another_job(t1 in ".{0,8}", i1 in ".{0,8}", t2 in ".{0,8}", i2 in ".{0,8}") {
            prop_assume!((t1.clone(), i1.clone()) != (t2.clone(), i2.clone()));
            let a = attempts_of(&jk(0, &t1, &i1));
            let b = attempt(&jk(0, &t2, &i2), 1);
            prop_assert!(!b.starts_with(&a));
        }

        #[test]
        fn log_index_round_trips_and_sorts(a in any::<u64>(), b in any::<u64>()) {
            prop_assert_eq!(parse_log_index(&log_index(a)), a);
            prop_assert_eq!(a.cmp(&b), log_index(a).cmp(&log_index(b)));
        }
    }
}
