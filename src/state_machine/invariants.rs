//! Whole-store invariants, checked after every apply in the property tests and
//! on demand by `silo` debugging tools. Each violation is described in words.
use std::collections::{BTreeMap, BTreeSet};

use super::job::{AttemptStatus, FloatingState, Gate, Job, JobStatus, QueueCounts, QueueKind, QueueState, Slot};
use super::limits::WaiterRecord;
use super::tx::Tables;
use crate::storage::codec::decode_or_die;
use crate::storage::keys;

pub fn check<T: Tables>(t: &T) -> Vec<String> {
    let mut errors = Vec::new();
    let mut queued_ids = BTreeSet::new();
    // The paging index and the counts hold each queued task exactly once.
    let mut orders = BTreeSet::new();
    let mut counts: BTreeMap<String, QueueCounts> = BTreeMap::new();
    for q in t.queued_all() {
        queued_ids.insert(q.task_id.clone());
        orders.insert(keys::queue_order(&q));
        *counts.entry(q.task_group.clone()).or_default().of(&q.kind) += 1;
        if t.kv_get(&keys::queue_order(&q)).is_none() {
            errors.push(format!("queued task {} has no paging-index entry", q.task_id));
        }
        if let QueueKind::Refresh { key } = &q.kind {
            let fk = keys::floating(q.job.shard, &q.job.tenant, key);
            let st: Option<FloatingState> = t.kv_get(&fk).map(|b| decode_or_die("floating", &b));
            if st.and_then(|s| s.refresh_task) != Some(q.task_id.clone()) {
                errors.push(format!("refresh task {} is not its limit's scheduled refresh", q.task_id));
            }
            continue;
        }
        match t.job(&q.job) {
            None => errors.push(format!("queued task {} belongs to a missing job", q.task_id)),
            Some(job) => {
                let matches = job.status == JobStatus::Scheduled
                    && job.pending.as_ref().is_some_and(|p| {
                        let due = match p.gate {
                            Gate::Timer { at_ms } => at_ms,
                            _ => p.start_at_ms,
                        };
                        p.task_id == q.task_id && due == q.start_at_ms
                    });
                if !matches {
                    errors
                        .push(format!("queued task {} does not match job {:?} ({:?})", q.task_id, job.key, job.status));
                }
            }
        }
    }
    let stray = t.kv_scan(&keys::table(keys::QUEUE_ORDER));
    for (k, v) in &stray {
        if let Some(group) = keys::parse_queue_counts(k) {
            let stored: QueueCounts = decode_or_die("queue counts", v);
            if counts.remove(&group) != Some(stored) {
                errors.push(format!("queue counts of {group:?} are {stored:?}, not what is queued"));
            }
        } else if !orders.contains(k) {
            errors.push(format!("paging-index entry {k:?} names no queued task"));
        }
    }
    for (group, c) in counts {
        errors.push(format!("task group {group:?} has {c:?} queued and no stored counts"));
    }
    let leases = t.leases();
    let mut leased_ids = BTreeSet::new();
    for lease in &leases {
        leased_ids.insert(lease.task_id.clone());
        if lease.kind != super::job::LeaseKind::Attempt {
            continue;
        }
        match t.job(&lease.job) {
            Some(job) if job.status == JobStatus::Running && job.running_task.as_deref() == Some(&lease.task_id) => {
                match t.attempt(&job.key, lease.attempt_number) {
                    Some(a) if a.status == AttemptStatus::Running && a.task_id == lease.task_id => {}
                    _ => errors.push(format!("lease {} has no running attempt", lease.task_id)),
                }
            }
            _ => errors.push(format!("lease {} is not the running attempt of its job", lease.task_id)),
        }
    }
    let mut index_entries = 0usize;
    let mut metadata_entries = 0usize;
    let mut counts: std::collections::BTreeMap<Vec<u8>, i64> = Default::default();
    for (_, bytes) in t.kv_scan(&keys::table(keys::JOB)) {
        let job: super::job::Job = decode_or_die("job", &bytes);
        let id = format!("{:?}", job.key);
        let k = &job.key;
        index_entries += 1;
        metadata_entries += job.metadata.len();
        *counts.entry(keys::tenant_count(k.shard, &k.tenant, job.status)).or_default() += 1;
        if t.kv_get(&keys::status_index(k.shard, &k.tenant, job.status, job.status_changed_at_ms, &k.id)).is_none() {
            errors.push(format!("job {id} is missing from the status index"));
        }
        if t.kv_get(&keys::group_index(k.shard, &k.tenant, &job.task_group, &k.id)).is_none() {
            errors.push(format!("job {id} is missing from the task-group index"));
        }
        for (mk, mv) in &job.metadata {
            if t.kv_get(&keys::metadata_index(k.shard, &k.tenant, mk, mv, &k.id)).is_none() {
                errors.push(format!("job {id} metadata {mk}={mv} is missing from the metadata index"));
            }
        }
        match job.status {
            JobStatus::Scheduled => match &job.pending {
                Some(p) => match &p.gate {
                    Gate::Waiting { slot } => {
                        let wk = keys::waiter(
                            job.key.shard,
                            &job.key.tenant,
                            slot.floating,
                            &slot.key,
                            (job.priority, p.start_at_ms, job.seq),
                            &p.task_id,
                        );
                        if t.kv_get(&wk).is_none() {
                            errors.push(format!("job {id} waits on {slot:?} without a waiter record"));
                        }
                        if queued_ids.contains(&p.task_id) {
                            errors.push(format!("waiting job {id} is also queued"));
                        }
                    }
                    gate => {
                        let want = if *gate == Gate::Ready { QueueKind::Attempt } else { QueueKind::Gate };
                        match t.queued(&p.task_id) {
                            Some(q) if q.kind == want => {}
                            other => errors.push(format!("scheduled job {id} ({gate:?}) queued as {other:?}")),
                        }
                        if *gate == Gate::Ready && (p.limit_stage as usize) < job.limits.len() {
                            errors.push(format!("job {id} is ready with limits left to pass"));
                        }
                    }
                },
                None => errors.push(format!("scheduled job {id} has no pending attempt")),
            },
            JobStatus::Running => match &job.running_task {
                Some(task) if leased_ids.contains(task) => {}
                _ => errors.push(format!("running job {id} has no lease")),
            },
            _ => {
                if job.pending.is_some() || job.running_task.is_some() {
                    errors.push(format!("terminal job {id} still has a pending or running attempt"));
                }
            }
        }
        let indexed = t.kv_get(&keys::terminal(job.status_changed_at_ms, &job.key)).is_some();
        if indexed != job.status.is_terminal() {
            errors.push(format!("job {id} ({:?}) terminal index entry present: {indexed}", job.status));
        }
        if job.status != JobStatus::Scheduled && job.pending.is_some() {
            errors.push(format!("non-scheduled job {id} has a pending attempt"));
        }
        let attempts = t.attempts(&job.key);
        let running = attempts.iter().filter(|a| a.status == AttemptStatus::Running).count();
        if running > usize::from(job.status == JobStatus::Running) {
            errors.push(format!("job {id} has {running} running attempts in status {:?}", job.status));
        }
        if attempts.last().map_or(0, |a| a.attempt_number) != job.last_attempt_number {
            errors.push(format!("job {id} last_attempt_number disagrees with its attempts"));
        }
        if attempts.windows(2).any(|w| w[0].attempt_number >= w[1].attempt_number) {
            errors.push(format!("job {id} attempts are not strictly ascending"));
        }
    }
    for (tag, want) in [
        (keys::STATUS_INDEX, index_entries),
        (keys::GROUP_INDEX, index_entries),
        (keys::METADATA_INDEX, metadata_entries),
    ] {
        let have = t.kv_scan(&keys::table(tag)).len();
        if have != want {
            errors.push(format!("index table {} holds {have} entries for {want} indexed values", tag as char));
        }
    }
    let stored: std::collections::BTreeMap<Vec<u8>, i64> = t
        .kv_scan(&keys::table(keys::TENANT_COUNT))
        .into_iter()
        .map(|(k, v)| (k, decode_or_die::<i64>("tenant count", &v)))
        .collect();
    if stored != counts {
        errors.push(format!("tenant status counters {stored:?} disagree with the jobs {counts:?}"));
    }
    for (k, _) in t.kv_scan(&keys::table(keys::TERMINAL)) {
        match keys::parse_terminal(&k) {
            Some((at, key)) => match t.job(&key) {
                Some(j) if j.status.is_terminal() && j.status_changed_at_ms == at => {}
                _ => errors.push(format!("terminal index entry for {key:?} at {at} matches no finished job")),
            },
            None => errors.push(format!("unparsable terminal index key {k:?}")),
        }
    }
    if let Some(cursor) = t.kv_get(&keys::meta(super::tx::META_TERMINAL_CURSOR)) {
        if t.kv_scan(&keys::table(keys::TERMINAL)).first().is_some_and(|(k, _)| *k < cursor) {
            errors.push("a terminal index entry sorts before the purge cursor".to_string());
        }
    }
    for (k, _) in t.kv_scan(&keys::table(keys::WAITER_CURSOR)) {
        let queue_key = [&[keys::QUEUE][..], &k[1..]].concat();
        if t.kv_get(&queue_key).is_none() {
            errors.push(format!("waiter cursor {k:?} outlives its queue"));
        }
    }
    check_queues(t, &mut errors);
    errors
}

/// Concurrency queues: counts match the holder and waiter records, every
/// holder is the current attempt of a live job that lists the slot, and no
/// waiter could be granted (no starvation while slots are free).
fn check_queues<T: Tables>(t: &T, errors: &mut Vec<String>) {
    for (k, v) in t.kv_scan(&keys::table(keys::QUEUE)) {
        let Some((shard, tenant, floating, key)) = keys::parse_queue_key(&k) else {
            errors.push(format!("unparsable queue key {k:?}"));
            continue;
        };
        let st: QueueState = decode_or_die("queue", &v);
        let holders = t.kv_scan(&keys::holders_of(shard, &tenant, floating, &key));
        if holders.len() as u32 != st.holders {
            errors.push(format!("queue {tenant}/{key}: {} holder records, state says {}", holders.len(), st.holders));
        }
        let waiters = t.kv_scan(&keys::waiters_of(shard, &tenant, floating, &key));
        if waiters.len() as u32 != st.waiters {
            errors.push(format!("queue {tenant}/{key}: {} waiter records, state says {}", waiters.len(), st.waiters));
        }
        if let Some(cursor) = t.kv_get(&keys::waiter_cursor(shard, &tenant, floating, &key)) {
            if waiters.first().is_some_and(|(w, _)| *w < cursor) {
                errors.push(format!("queue {tenant}/{key}: a waiter sorts before the waiter cursor"));
            }
        }
        let cap_floating = floating.then(|| {
            let fk = keys::floating(shard, &tenant, &key);
            t.kv_get(&fk).map(|b| decode_or_die::<FloatingState>("floating", &b).current_max).unwrap_or(0)
        });
        let slot = Slot { floating, key: key.clone() };
        for (_, w) in &waiters {
            let rec: WaiterRecord = decode_or_die("waiter", w);
            let cap = cap_floating.unwrap_or(rec.max);
            if st.holders < cap {
                errors.push(format!(
                    "queue {tenant}/{key}: waiter {} starved ({} holders < {cap})",
                    rec.task_id, st.holders
                ));
            }
        }
        let prefix_len = keys::holders_of(shard, &tenant, floating, &key).len();
        for (hk, _) in &holders {
            let task_id = String::from_utf8_lossy(&hk[prefix_len..]).into_owned();
            let holder_job =
                t.kv_scan(&keys::table(keys::JOB)).into_iter().map(|(_, b)| decode_or_die::<Job>("job", &b)).find(
                    |j| {
                        j.key.shard == shard
                            && j.key.tenant == tenant
                            && (j.running_task.as_deref() == Some(task_id.as_str())
                                || j.pending.as_ref().is_some_and(|p| p.task_id == task_id))
                    },
                );
            match holder_job {
                Some(j) if j.held_slots.contains(&slot) => {}
                _ => errors.push(format!("queue {tenant}/{key}: holder {task_id} is not a live attempt holding it")),
            }
        }
    }
}
