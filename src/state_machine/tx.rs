//! `Tx`: one command's view of the store while it is applied — typed table
//! access over [`Kv`], the command's clock, deterministic id generation, and the
//! effects collected for the broker.
use crate::storage::codec::{decode_or_die, encode};
use crate::storage::keys;
use crate::storage::kv::Kv;

use super::job::{
    Attempt, Gate, Job, JobKey, JobStatus, Lease, Ms, QueueCounts, QueueKind, QueuedTask, ShardCounters, ShardSpec,
};
use super::outcome::Effect;

const META_CLOCK: &str = "clock";
const META_SEQ: &str = "seq";
/// Where PurgeTerminal's scan of the terminal index starts (raw `T` key): no
/// entry sorts before it. Purged entries are deleted keys in front of it.
pub(crate) const META_TERMINAL_CURSOR: &str = "terminal_cursor";
pub(crate) const META_SHARDS: &str = "shards";

pub(crate) fn counters_meta(shard: u32) -> String {
    format!("counters/{shard:08x}")
}

/// Typed reads shared by `Tx` and the read path (`read.rs`).
pub trait Tables {
    fn kv_get(&self, key: &[u8]) -> Option<Vec<u8>>;
    fn kv_scan(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)>;

    fn job(&self, key: &JobKey) -> Option<Job> {
        self.kv_get(&keys::job(key)).map(|b| decode_or_die("job", &b))
    }
    fn payload(&self, key: &JobKey) -> Vec<u8> {
        self.kv_get(&keys::payload(key)).map(|b| decode_or_die("payload", &b)).unwrap_or_default()
    }
    fn attempt(&self, key: &JobKey, n: u32) -> Option<Attempt> {
        self.kv_get(&keys::attempt(key, n)).map(|b| decode_or_die("attempt", &b))
    }
    /// Every attempt of `key`, ascending by attempt number.
    fn attempts(&self, key: &JobKey) -> Vec<Attempt> {
        self.kv_scan(&keys::attempts_of(key)).iter().map(|(_, v)| decode_or_die("attempt", v)).collect()
    }
    fn lease(&self, task_id: &str) -> Option<Lease> {
        self.kv_get(&keys::lease(task_id)).map(|b| decode_or_die("lease", &b))
    }
    fn leases(&self) -> Vec<Lease> {
        self.kv_scan(&keys::table(keys::LEASE)).iter().map(|(_, v)| decode_or_die("lease", v)).collect()
    }
    fn queued(&self, task_id: &str) -> Option<QueuedTask> {
        self.kv_get(&keys::queued(task_id)).map(|b| decode_or_die("queued task", &b))
    }
    fn queued_all(&self) -> Vec<QueuedTask> {
        self.kv_scan(&keys::table(keys::QUEUED)).iter().map(|(_, v)| decode_or_die("queued task", v)).collect()
    }
    fn meta<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        self.kv_get(&keys::meta(name)).map(|b| decode_or_die(name, &b))
    }
    fn shards(&self) -> Vec<ShardSpec> {
        self.meta(META_SHARDS).unwrap_or_default()
    }
    fn counters(&self, shard: u32) -> ShardCounters {
        self.meta(&counters_meta(shard)).unwrap_or_default()
    }
    /// The state machine's clock: the largest `now_ms` applied so far.
    fn clock_ms(&self) -> Ms {
        self.meta(META_CLOCK).unwrap_or(0)
    }
}

/// Read-only [`Tables`] over any [`Kv`].
pub struct View<'a, K: Kv>(pub &'a K);

impl<K: Kv> Tables for View<'_, K> {
    fn kv_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key)
    }
    fn kv_scan(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.0.scan_prefix(prefix)
    }
}

pub struct Tx<'a, K: Kv> {
    kv: &'a mut K,
    /// Queues that gained capacity during this command (granted at its end).
    pub(crate) to_grant: Vec<super::limits::QueueRef>,
    /// This command's time: max(previous clock, command's `now_ms`).
    pub now_ms: Ms,
    log_index: u64,
    ids_issued: u32,
    /// Task ids issued by this command and not queued yet: no `Q` record
    /// can exist for them (ids are unique for all time), so queueing one
    /// skips the read that looks for it.
    fresh_ids: std::collections::HashSet<String>,
    pub effects: Vec<Effect>,
    /// Whether this command's result is read (reads that only feed an
    /// unread result are skipped).
    pub answer: super::Answer,
}

impl<K: Kv> Tables for Tx<'_, K> {
    fn kv_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.kv.get(key)
    }
    fn kv_scan(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.kv.scan_prefix(prefix)
    }
}

impl<'a, K: Kv> Tx<'a, K> {
    /// Starts applying the command at `log_index` stamped `command_now_ms`,
    /// whose result is read or not (`answer`).
    pub fn begin(kv: &'a mut K, log_index: u64, command_now_ms: Ms, answer: super::Answer) -> Self {
        let previous: Ms = View(&*kv).clock_ms();
        let now_ms = previous.max(command_now_ms);
        if now_ms != previous {
            kv.put(keys::meta(META_CLOCK), encode(&now_ms));
        }
        Tx {
            kv,
            to_grant: Vec::new(),
            now_ms,
            log_index,
            ids_issued: 0,
            fresh_ids: Default::default(),
            effects: Vec::new(),
            answer,
        }
    }

    /// A task id unique for all time: a bijection of (log index, ordinal within
    /// the command), formatted as a UUID. Same on every replica.
    pub fn new_task_id(&mut self) -> String {
        let ordinal = self.ids_issued;
        self.ids_issued += 1;
        let hi = self.log_index.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
        let mid = ordinal.wrapping_mul(0x85EB_CA6B);
        let lo = xxhash_rust::xxh64::xxh64(&[hi.to_be_bytes(), (mid as u64).to_be_bytes()].concat(), 7) as u32;
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi.to_be_bytes());
        bytes[8..12].copy_from_slice(&mid.to_be_bytes());
        bytes[12..].copy_from_slice(&lo.to_be_bytes());
        let id = uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string();
        self.fresh_ids.insert(id.clone());
        id
    }

    pub(crate) fn kv_put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.kv.put(key, value);
    }
    pub(crate) fn kv_delete(&mut self, key: &[u8]) {
        self.kv.delete(key);
    }
    pub(crate) fn kv_scan_n(&self, prefix: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.kv.scan_prefix_n(prefix, n)
    }
    pub(crate) fn kv_scan_from_n(&self, prefix: &[u8], from: &[u8], n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.kv.scan_from_n(prefix, from, n)
    }

    pub fn next_seq(&mut self) -> u64 {
        let seq: u64 = self.meta(META_SEQ).unwrap_or(0) + 1;
        self.put_meta(META_SEQ, &seq);
        seq
    }

    pub fn put_meta<T: serde::Serialize>(&mut self, name: &str, value: &T) {
        self.kv.put(keys::meta(name), encode(value));
    }

    pub fn put_job(&mut self, job: &Job) {
        self.kv.put(keys::job(&job.key), encode(job));
    }
    pub fn put_payload(&mut self, key: &JobKey, payload: &[u8]) {
        self.kv.put(keys::payload(key), encode(&payload));
    }
    pub fn put_attempt(&mut self, key: &JobKey, attempt: &Attempt) {
        self.kv.put(keys::attempt(key, attempt.attempt_number), encode(attempt));
    }
    pub fn put_lease(&mut self, lease: &Lease) {
        self.kv.put(keys::lease(&lease.task_id), encode(lease));
        self.effects.push(Effect::LeaseStarted {
            task_id: lease.task_id.clone(),
            lease_ms: lease.lease_ms,
            attempt_number: lease.attempt_number,
            granted_at_ms: lease.granted_at_ms,
        });
    }
    pub fn delete_lease(&mut self, task_id: &str) {
        self.kv.delete(&keys::lease(task_id));
        self.effects.push(Effect::LeaseEnded { task_id: task_id.to_string() });
    }

    /// Adds a job that is not stored yet to the query indexes (status, task
    /// group, metadata) and its tenant's status counter. Called once, at
    /// creation; `set_status` moves it from then on.
    pub fn index_new_job(&mut self, job: &Job) {
        let k = &job.key;
        self.kv.put(keys::status_index(k.shard, &k.tenant, job.status, job.status_changed_at_ms, &k.id), Vec::new());
        self.kv.put(keys::group_index(k.shard, &k.tenant, &job.task_group, &k.id), Vec::new());
        for (mk, mv) in &job.metadata {
            self.kv.put(keys::metadata_index(k.shard, &k.tenant, mk, mv, &k.id), Vec::new());
        }
        self.bump_tenant_count(k, job.status, 1);
    }

    /// Removes a job's query-index entries and its count (the job is being deleted).
    fn unindex_job(&mut self, job: &Job) {
        let k = &job.key;
        self.kv.delete(&keys::status_index(k.shard, &k.tenant, job.status, job.status_changed_at_ms, &k.id));
        self.kv.delete(&keys::group_index(k.shard, &k.tenant, &job.task_group, &k.id));
        for (mk, mv) in &job.metadata {
            self.kv.delete(&keys::metadata_index(k.shard, &k.tenant, mk, mv, &k.id));
        }
        self.bump_tenant_count(k, job.status, -1);
    }

    /// Moves a tenant's count of jobs in `status` by `delta`; a count that
    /// reaches zero is deleted (the counters are sparse).
    fn bump_tenant_count(&mut self, key: &JobKey, status: JobStatus, delta: i64) {
        let ck = keys::tenant_count(key.shard, &key.tenant, status);
        let n: i64 = self.kv.get(&ck).map_or(0, |b| decode_or_die("tenant count", &b)) + delta;
        if n == 0 {
            self.kv.delete(&ck);
        } else {
            self.kv.put(ck, encode(&n));
        }
    }

    /// Removes the job, its payload, every attempt and its index entries.
    pub fn delete_job_records(&mut self, job: &Job) {
        let key = &job.key;
        if job.status.is_terminal() {
            self.kv.delete(&keys::terminal(job.status_changed_at_ms, key));
        }
        self.unindex_job(job);
        self.kv.delete(&keys::job(key));
        self.kv.delete(&keys::payload(key));
        for (k, _) in self.kv.scan_prefix(&keys::attempts_of(key)) {
            self.kv.delete(&k);
        }
    }

    /// Puts `job`'s pending attempt into the queue index (or re-keys it) as
    /// leasable (`Attempt`, due at its start) or as a time gate (`Gate`, due
    /// when its timer fires).
    pub fn enqueue_pending(&mut self, job: &Job, kind: QueueKind) {
        let pending = job.pending.as_ref().expect("enqueue_pending needs a pending attempt");
        let due_ms = match (&kind, &pending.gate) {
            (QueueKind::Gate, Gate::Timer { at_ms }) => *at_ms,
            _ => pending.start_at_ms,
        };
        self.put_queued(QueuedTask {
            task_id: pending.task_id.clone(),
            job: job.key.clone(),
            kind,
            task_group: job.task_group.clone(),
            priority: job.priority,
            start_at_ms: due_ms,
            seq: job.seq,
            attempt_number: pending.attempt_number,
        });
    }

    /// Queues `entry`: its `Q` record, its place in the broker's paging
    /// index (`O`) and its group's count, in this command's batch. A task
    /// that is already queued (expedite, a passed gate) is taken out first,
    /// so the index never holds it twice.
    pub fn put_queued(&mut self, entry: QueuedTask) {
        if !self.fresh_ids.remove(&entry.task_id) {
            self.dequeue(&entry.task_id);
        }
        self.kv.put(keys::queued(&entry.task_id), encode(&entry));
        self.kv.put(keys::queue_order(&entry), Vec::new());
        self.bump_queue_count(&entry, 1);
        self.effects.push(Effect::Queued(entry));
    }

    /// Takes `task_id` out of the queue (its `Q` record, index entry and
    /// count); nothing when it is not queued.
    pub fn dequeue(&mut self, task_id: &str) {
        let Some(entry) = self.queued(task_id) else { return };
        self.kv.delete(&keys::queued(task_id));
        self.kv.delete(&keys::queue_order(&entry));
        self.bump_queue_count(&entry, -1);
        self.effects.push(Effect::Dequeued(entry));
    }

    fn bump_queue_count(&mut self, entry: &QueuedTask, delta: i64) {
        let key = keys::queue_counts(&entry.task_group);
        let mut counts: QueueCounts = self.kv.get(&key).map(|b| decode_or_die("queue counts", &b)).unwrap_or_default();
        let n = counts.of(&entry.kind);
        *n = n.saturating_add_signed(delta);
        if counts.is_empty() {
            self.kv.delete(&key);
        } else {
            self.kv.put(key, encode(&counts));
        }
    }

    /// [`Tx::set_status`] to a terminal `status`, telling the broker
    /// ([`Effect::Finished`]) so the proposing leader counts the completion.
    pub fn finish(&mut self, job: &mut Job, status: JobStatus) {
        debug_assert!(status.is_terminal());
        self.set_status(job, status);
        self.effects.push(Effect::Finished { status });
    }

    /// Moves `job` to `status` at the command's time, keeping the shard's
    /// completed-jobs counter, the terminal-jobs index, the status index and
    /// the tenant's status counters in step.
    pub fn set_status(&mut self, job: &mut Job, status: JobStatus) {
        let was_terminal = job.status.is_terminal();
        if was_terminal {
            self.kv.delete(&keys::terminal(job.status_changed_at_ms, &job.key));
        }
        let k = &job.key;
        self.kv.delete(&keys::status_index(k.shard, &k.tenant, job.status, job.status_changed_at_ms, &k.id));
        self.kv.put(keys::status_index(k.shard, &k.tenant, status, self.now_ms, &k.id), Vec::new());
        if job.status != status {
            self.bump_tenant_count(&job.key, job.status, -1);
            self.bump_tenant_count(&job.key, status, 1);
        }
        job.status = status;
        job.status_changed_at_ms = self.now_ms;
        if status.is_terminal() {
            let key = keys::terminal(self.now_ms, &job.key);
            // Keep the purge cursor at or before every index entry.
            if let Some(cursor) = self.kv.get(&keys::meta(META_TERMINAL_CURSOR)) {
                if key < cursor {
                    self.kv.put(keys::meta(META_TERMINAL_CURSOR), key.clone());
                }
            }
            self.kv.put(key, Vec::new());
        }
        if was_terminal != status.is_terminal() {
            let delta = if status.is_terminal() { 1 } else { -1 };
            self.bump_counters(job.key.shard, 0, delta);
        }
    }

    pub fn bump_counters(&mut self, shard: u32, total_delta: i64, completed_delta: i64) {
        let mut c = self.counters(shard);
        if c.created_at_ms == 0 {
            c.created_at_ms = self.now_ms;
        }
        c.total_jobs += total_delta;
        c.completed_jobs += completed_delta;
        self.put_meta(&counters_meta(shard), &c);
    }

    /// Removes every record except the shard map and the clock (ResetAll).
    pub fn wipe_jobs(&mut self) -> u64 {
        let mut removed = 0;
        let tables = [
            keys::JOB,
            keys::PAYLOAD,
            keys::ATTEMPT,
            keys::LEASE,
            keys::QUEUED,
            keys::QUEUE_ORDER,
            keys::QUEUE,
            keys::HOLDER,
            keys::WAITER,
            keys::WAITER_CURSOR,
            keys::FLOATING,
            keys::BUCKET,
            keys::TERMINAL,
            keys::STATUS_INDEX,
            keys::GROUP_INDEX,
            keys::METADATA_INDEX,
            keys::TENANT_COUNT,
        ];
        for tag in tables {
            for (k, _) in self.kv.scan_prefix(&keys::table(tag)) {
                self.kv.delete(&k);
                if tag == keys::JOB {
                    removed += 1;
                }
            }
        }
        for (k, _) in self.kv.scan_prefix(&keys::meta("counters/")) {
            self.kv.delete(&k);
        }
        self.kv.delete(&keys::meta(META_TERMINAL_CURSOR));
        self.effects.push(Effect::Reset);
        removed
    }
}
