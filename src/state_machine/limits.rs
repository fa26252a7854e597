//! Limits (SEMANTICS §10, DECISIONS #13, #14, #22): concurrency queues, floating
//! concurrency with worker refreshes, and native rate limits, all inside the
//! replicated state machine.
//!
//! A pending attempt walks its job's limits in order (`Pending::limit_stage`).
//! A concurrency limit either grants a slot at once (holders < max) or parks
//! the attempt as a waiter; a rate limit either passes or re-checks later (a
//! Gate entry in the queue index, resumed by an AcquireLimits command); once
//! every limit passed the attempt is queued as leasable. Future-dated attempts
//! take no slot before their time: they sit behind a Gate at their start time.
//!
//! Releasing a slot (outcome, expiry, cancel, retry, DropTenantHolders) grants
//! waiters in the same command, in order (priority, start time, enqueue seq),
//! each using the max its own job carries (DECISIONS #22; floating queues use
//! the shared current max). Queue state exists only while a queue has holders
//! or waiters, so idle keys cost nothing.
use crate::storage::codec::{decode_or_die, encode};
use crate::storage::keys;
use crate::storage::kv::Kv;

use super::job::{
    Attempt, AttemptStatus, Bucket, FloatingState, Gate, Job, JobKey, JobStatus, Limit, Ms, Pending, QueueKind,
    QueueState, QueuedTask, RateLimit, Slot,
};
use super::retry::retry_delay_ms;
use super::tx::{Tables, Tx};

/// Error code of an attempt that gave up waiting for a rate limit.
pub const RATE_LIMITED: &str = "RATE_LIMITED";

/// Waiters read per page while granting.
const WAITER_PAGE: usize = 64;

/// A queue of one tenant on one shard.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueueRef {
    pub shard: u32,
    pub tenant: String,
    pub slot: Slot,
}

impl QueueRef {
    pub fn of(job: &JobKey, slot: &Slot) -> Self {
        QueueRef { shard: job.shard, tenant: job.tenant.clone(), slot: slot.clone() }
    }
    fn state_key(&self) -> Vec<u8> {
        keys::queue(self.shard, &self.tenant, self.slot.floating, &self.slot.key)
    }
    fn holder_key(&self, task_id: &str) -> Vec<u8> {
        keys::holder(self.shard, &self.tenant, self.slot.floating, &self.slot.key, task_id)
    }
    fn waiters_prefix(&self) -> Vec<u8> {
        keys::waiters_of(self.shard, &self.tenant, self.slot.floating, &self.slot.key)
    }
    fn cursor_key(&self) -> Vec<u8> {
        keys::waiter_cursor(self.shard, &self.tenant, self.slot.floating, &self.slot.key)
    }
}

/// A waiting request as stored under its `W` key.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WaiterRecord {
    pub job: JobKey,
    pub task_id: String,
    /// The max this request carries (fixed queues).
    pub max: u32,
}

impl<K: Kv> Tx<'_, K> {
    pub fn queue_state(&self, q: &QueueRef) -> QueueState {
        self.kv_get(&q.state_key()).map(|b| decode_or_die("queue", &b)).unwrap_or_default()
    }

    /// Stores `st`, or removes the queue and its waiter cursor when it has
    /// neither holders nor waiters.
    pub(crate) fn put_queue_state(&mut self, q: &QueueRef, st: &QueueState) {
        if st.holders == 0 && st.waiters == 0 {
            self.kv_delete(&q.state_key());
            self.kv_delete(&q.cursor_key());
        } else {
            self.kv_put(q.state_key(), encode(st));
        }
    }

    pub fn floating_state(&self, shard: u32, tenant: &str, key: &str) -> Option<FloatingState> {
        self.kv_get(&keys::floating(shard, tenant, key)).map(|b| decode_or_die("floating limit", &b))
    }

    pub fn put_floating_state(&mut self, shard: u32, tenant: &str, key: &str, st: &FloatingState) {
        self.kv_put(keys::floating(shard, tenant, key), encode(st));
    }

    /// Capacity of a queue for a request carrying `own_max`.
    fn capacity(&self, q: &QueueRef, own_max: u32) -> u32 {
        if q.slot.floating {
            self.floating_state(q.shard, &q.tenant, &q.slot.key).map_or(own_max, |f| f.current_max)
        } else {
            own_max
        }
    }

    /// Takes a slot for `task_id` when holders < max.
    fn try_acquire(&mut self, q: &QueueRef, max: u32, task_id: &str) -> bool {
        let mut st = self.queue_state(q);
        if st.holders >= max {
            return false;
        }
        st.holders += 1;
        // The value is the grant time (the `queues` table's timestamp_ms).
        self.kv_put(q.holder_key(task_id), encode(&self.now_ms));
        self.put_queue_state(q, &st);
        true
    }

    fn park(&mut self, q: &QueueRef, job: &Job, max: u32) {
        let p = job.pending.as_ref().expect("parking needs a pending attempt");
        let key = keys::waiter(
            q.shard,
            &q.tenant,
            q.slot.floating,
            &q.slot.key,
            (job.priority, p.start_at_ms, job.seq),
            &p.task_id,
        );
        let rec = WaiterRecord { job: job.key.clone(), task_id: p.task_id.clone(), max };
        // Keep the cursor at or before every live waiter.
        if let Some(cursor) = self.kv_get(&q.cursor_key()) {
            if key < cursor {
                self.kv_put(q.cursor_key(), key.clone());
            }
        }
        self.kv_put(key, encode(&rec));
        let mut st = self.queue_state(q);
        st.waiters += 1;
        *st.waiting_max.entry(max).or_default() += 1;
        self.put_queue_state(q, &st);
    }

    fn forget_waiter(&mut self, q: &QueueRef, waiter_key: &[u8], max: u32) {
        self.kv_delete(waiter_key);
        let mut st = self.queue_state(q);
        st.waiters = st.waiters.saturating_sub(1);
        if let Some(n) = st.waiting_max.get_mut(&max) {
            *n -= 1;
            if *n == 0 {
                st.waiting_max.remove(&max);
            }
        }
        self.put_queue_state(q, &st);
    }

    /// Removes `job`'s parked request (cancel of a waiting job).
    pub fn unpark(&mut self, job: &Job) {
        let Some(p) = &job.pending else { return };
        let Gate::Waiting { slot } = &p.gate else { return };
        let q = QueueRef::of(&job.key, slot);
        let key = keys::waiter(
            q.shard,
            &q.tenant,
            slot.floating,
            &slot.key,
            (job.priority, p.start_at_ms, job.seq),
            &p.task_id,
        );
        if let Some(b) = self.kv_get(&key) {
            let rec: WaiterRecord = decode_or_die("waiter", &b);
            self.forget_waiter(&q, &key, rec.max);
        }
    }

    /// Takes a Scheduled job's pending attempt out of the queue index (or off
    /// the concurrency queue it waits on) and gives back the slots it holds;
    /// `job.pending` is None afterwards (cancel, reimport).
    pub fn withdraw_pending(&mut self, job: &mut Job) {
        let Some(pending) = job.pending.clone() else { return };
        match pending.gate {
            Gate::Waiting { .. } => self.unpark(job),
            _ => self.dequeue(&pending.task_id),
        }
        self.release_slots(job, &pending.task_id);
        job.pending = None;
    }

    /// Gives back every slot `job` holds and queues grants for the freed queues.
    pub fn release_slots(&mut self, job: &mut Job, task_id: &str) {
        for slot in std::mem::take(&mut job.held_slots) {
            let q = QueueRef::of(&job.key, &slot);
            let hk = q.holder_key(task_id);
            if self.kv_get(&hk).is_some() {
                self.kv_delete(&hk);
                let mut st = self.queue_state(&q);
                st.holders = st.holders.saturating_sub(1);
                self.put_queue_state(&q, &st);
            }
            self.grant_later(q);
        }
    }

    /// Places a job's pending attempt: queued as leasable, behind a time gate,
    /// or walking its limits now. May fail the attempt (rate limit given up),
    /// in which case the job moves on per its retry policy.
    pub fn place_pending(&mut self, job: &mut Job) {
        loop {
            let now = self.now_ms;
            let p = job.pending.as_mut().expect("place_pending needs a pending attempt");
            if p.limit_stage as usize >= job.limits.len() {
                p.gate = Gate::Ready;
                self.enqueue_pending(job, QueueKind::Attempt);
                return;
            }
            let resume_at = match p.gate {
                Gate::Timer { at_ms } => at_ms.max(p.start_at_ms),
                _ => p.start_at_ms,
            };
            if resume_at > now {
                p.gate = Gate::Timer { at_ms: resume_at };
                self.enqueue_pending(job, QueueKind::Gate);
                return;
            }
            match self.walk(job) {
                Walked::Done => continue,
                Walked::Stopped => return,
                Walked::RateLimited => {
                    if !self.fail_before_start(job) {
                        return;
                    }
                }
            }
        }
    }

    /// Passes limits from `limit_stage` until one blocks.
    fn walk(&mut self, job: &mut Job) -> Walked {
        let now = self.now_ms;
        while let Some(limit) = job.limits.get(job.pending.as_ref().expect("pending").limit_stage as usize).cloned() {
            let task_id = job.pending.as_ref().expect("pending").task_id.clone();
            match limit {
                Limit::Concurrency { key, max_concurrency } => {
                    let slot = Slot { floating: false, key };
                    let q = QueueRef::of(&job.key, &slot);
                    if self.try_acquire(&q, max_concurrency, &task_id) {
                        job.held_slots.push(slot);
                    } else {
                        self.park(&q, job, max_concurrency);
                        job.pending.as_mut().expect("pending").gate = Gate::Waiting { slot };
                        return Walked::Stopped;
                    }
                }
                Limit::FloatingConcurrency { key, default_max_concurrency, refresh_interval_ms, metadata } => {
                    let mut st = self.floating_state(job.key.shard, &job.key.tenant, &key).unwrap_or(FloatingState {
                        current_max: default_max_concurrency,
                        last_refreshed_at_ms: 0,
                        refresh_interval_ms,
                        metadata,
                        refresh_task: None,
                        failures: 0,
                        retry_at_ms: 0,
                        task_group: job.task_group.clone(),
                    });
                    let slot = Slot { floating: true, key: key.clone() };
                    let q = QueueRef::of(&job.key, &slot);
                    if self.try_acquire(&q, st.current_max, &task_id) {
                        self.put_floating_state(job.key.shard, &job.key.tenant, &key, &st);
                        job.held_slots.push(slot);
                    } else {
                        self.park(&q, job, st.current_max);
                        self.maybe_schedule_refresh(job.key.shard, &job.key.tenant, &key, &mut st);
                        self.put_floating_state(job.key.shard, &job.key.tenant, &key, &st);
                        job.pending.as_mut().expect("pending").gate = Gate::Waiting { slot };
                        return Walked::Stopped;
                    }
                }
                Limit::RateLimit(r) => match self.check_rate(&r) {
                    Ok(()) => job.pending.as_mut().expect("pending").rate_checks = 0,
                    Err(reset_at_ms) => {
                        let p = job.pending.as_mut().expect("pending");
                        if r.retry_max_retries > 0 && p.rate_checks >= r.retry_max_retries {
                            return Walked::RateLimited;
                        }
                        let backoff = rate_backoff_ms(&r, p.rate_checks);
                        let at_ms = if reset_at_ms > now && reset_at_ms <= now.saturating_add(r.retry_max_backoff_ms) {
                            reset_at_ms
                        } else {
                            now.saturating_add(backoff)
                        };
                        p.rate_checks = p.rate_checks.saturating_add(1);
                        p.gate = Gate::Timer { at_ms: at_ms.max(now.saturating_add(1)) };
                        self.enqueue_pending(job, QueueKind::Gate);
                        return Walked::Stopped;
                    }
                },
            }
            job.pending.as_mut().expect("pending").limit_stage += 1;
        }
        Walked::Done
    }

    /// The attempt gave up on a rate limit before it started (DECISIONS #14):
    /// it is recorded FAILED with `RATE_LIMITED`, its slots are released and
    /// the retry policy decides. Returns true when a new pending attempt must
    /// be placed.
    fn fail_before_start(&mut self, job: &mut Job) -> bool {
        let p = job.pending.take().expect("pending");
        let now = self.now_ms;
        self.put_attempt(
            &job.key,
            &Attempt {
                attempt_number: p.attempt_number,
                task_id: p.task_id.clone(),
                status: AttemptStatus::Failed,
                started_at_ms: now,
                finished_at_ms: Some(now),
                result: None,
                error_code: Some(RATE_LIMITED.into()),
                error_data: Some(super::ops::expire_leases::msgpack_str("rate limit retries exhausted")),
            },
        );
        job.last_attempt_number = p.attempt_number;
        self.release_slots(job, &p.task_id);
        let relative = job.relative(p.attempt_number);
        match job.retry_policy.as_ref().and_then(|rp| retry_delay_ms(rp, relative, now)) {
            Some(delay_ms) => {
                job.pending =
                    Some(Pending::new(self.new_task_id(), p.attempt_number + 1, now.saturating_add(delay_ms)));
                true
            }
            None => {
                self.finish(job, JobStatus::Failed);
                false
            }
        }
    }

    /// SEMANTICS §10.3: a refresh is due when none is scheduled, the interval
    /// passed and no failure backoff is running (the caller has a waiter).
    fn maybe_schedule_refresh(&mut self, shard: u32, tenant: &str, key: &str, st: &mut FloatingState) {
        let now = self.now_ms;
        if st.refresh_task.is_some()
            || now < st.last_refreshed_at_ms.saturating_add(st.refresh_interval_ms)
            || now < st.retry_at_ms
        {
            return;
        }
        self.queue_refresh(shard, tenant, key, st, now);
    }

    pub fn queue_refresh(&mut self, shard: u32, tenant: &str, key: &str, st: &mut FloatingState, at_ms: Ms) {
        let task_id = self.new_task_id();
        st.refresh_task = Some(task_id.clone());
        let entry = QueuedTask {
            task_id,
            job: JobKey { shard, tenant: tenant.to_string(), id: String::new() },
            kind: QueueKind::Refresh { key: key.to_string() },
            task_group: st.task_group.clone(),
            priority: 0,
            start_at_ms: at_ms,
            seq: 0,
            attempt_number: 0,
        };
        self.put_queued(entry);
    }

    /// Checks and consumes a rate limit; `Err(reset_at_ms)` when over.
    fn check_rate(&mut self, r: &RateLimit) -> Result<(), Ms> {
        let now = self.now_ms;
        let key = keys::bucket(&r.name, &r.unique_key);
        let bucket: Option<Bucket> = self.kv_get(&key).map(|b| decode_or_die("rate bucket", &b));
        let (bucket, result) = rate_check(bucket, r, now);
        self.kv_put(key, encode(&bucket));
        result
    }

    /// Remembers that `q` has free capacity to hand out before the command ends.
    pub fn grant_later(&mut self, q: QueueRef) {
        if !self.to_grant.contains(&q) {
            self.to_grant.push(q);
        }
    }

    /// Grants waiters of every queue that had capacity freed during this
    /// command, until none can be granted. Runs at the end of each command.
    pub fn grant_pending_queues(&mut self) {
        while let Some(q) = self.to_grant.pop() {
            self.grant_waiters(&q);
        }
    }

    fn grant_waiters(&mut self, q: &QueueRef) {
        loop {
            let st = self.queue_state(q);
            if st.waiters == 0 {
                return;
            }
            let ceiling = if q.slot.floating {
                self.capacity(q, 0)
            } else {
                st.waiting_max.keys().next_back().copied().unwrap_or(0)
            };
            if st.holders >= ceiling {
                return;
            }
            // Start at the cursor: the waiters granted before are deleted
            // keys, and walking them would make every grant cost more the
            // longer the queue has been busy (issue #10).
            let prefix = q.waiters_prefix();
            let from = self.kv_get(&q.cursor_key()).unwrap_or_else(|| prefix.clone());
            let page = self.kv_scan_from_n(&prefix, &from, WAITER_PAGE);
            let mut granted_any = false;
            // Last key of the run of removed waiters at the page's front.
            let mut removed_front: Option<&Vec<u8>> = None;
            let mut front_intact = true;
            for (wkey, bytes) in page.iter() {
                let rec: WaiterRecord = decode_or_die("waiter", bytes);
                let holders = self.queue_state(q).holders;
                if holders >= self.capacity(q, rec.max) {
                    front_intact = false;
                    continue;
                }
                self.forget_waiter(q, wkey, rec.max);
                if front_intact {
                    removed_front = Some(wkey);
                }
                let Some(mut job) = self.job(&rec.job) else { continue };
                let current = job
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.task_id == rec.task_id && p.gate == Gate::Waiting { slot: q.slot.clone() });
                if job.status != JobStatus::Scheduled || !current {
                    continue; // stale request: discarded without granting
                }
                let taken = self.try_acquire(q, u32::MAX, &rec.task_id);
                debug_assert!(taken);
                job.held_slots.push(q.slot.clone());
                let p = job.pending.as_mut().expect("checked");
                p.limit_stage += 1;
                p.gate = Gate::Ready;
                self.place_pending(&mut job);
                self.put_job(&job);
                granted_any = true;
            }
            if let Some(k) = removed_front {
                // The queue may be gone (no holders, no waiters left): then
                // its cursor went with it. A waiter parked in this queue
                // meanwhile may have lowered the cursor below where this scan
                // started: then it stays there.
                let lowered = self.kv_get(&q.cursor_key()).is_some_and(|c| c < from);
                if self.kv_get(&q.state_key()).is_some() && !lowered {
                    self.kv_put(q.cursor_key(), k.clone());
                }
            }
            if !granted_any {
                return;
            }
        }
    }
}

enum Walked {
    /// Every limit passed.
    Done,
    /// Parked or behind a time gate.
    Stopped,
    /// Gave up on a rate limit.
    RateLimited,
}

impl Pending {
    pub fn new(task_id: String, attempt_number: u32, start_at_ms: Ms) -> Self {
        Pending { task_id, attempt_number, start_at_ms, limit_stage: 0, rate_checks: 0, gate: Gate::Ready }
    }
}

/// Wait before the next check after `r` over-limit checks:
/// min(round(initial × multiplier^r), max_backoff), by repeated multiplication.
fn rate_backoff_ms(rl: &RateLimit, checks: u32) -> Ms {
    let mut d = rl.retry_initial_backoff_ms as f64;
    for _ in 0..checks {
        d *= rl.retry_backoff_multiplier;
        if !d.is_finite() || d >= rl.retry_max_backoff_ms as f64 {
            return rl.retry_max_backoff_ms.max(1);
        }
    }
    (d.round() as Ms).min(rl.retry_max_backoff_ms).max(1)
}

/// One rate-limit check at `now` against `bucket` (integer arithmetic only).
/// Token bucket: a window of `duration_ms` starting at its first hit allows
/// `limit` hits. Leaky bucket: capacity `limit`, draining continuously at
/// `limit / duration_ms`, in hit·ms units so nothing is rounded.
pub fn rate_check(bucket: Option<Bucket>, r: &RateLimit, now: Ms) -> (Bucket, Result<(), Ms>) {
    let hits = r.hits.max(0) as i64;
    let duration = r.duration_ms.max(1);
    if r.algorithm == 1 {
        // Saturating i128 arithmetic: any i64 inputs stay in range.
        let limit = r.limit.max(0) as i128;
        let capacity = limit.saturating_mul(duration as i128);
        let cost = (hits as i128).saturating_mul(duration as i128);
        let level = match bucket {
            Some(Bucket::Leaky { level, at_ms }) => {
                let leaked = (now as i128 - at_ms as i128).max(0).saturating_mul(limit);
                level.saturating_sub(leaked).max(0)
            }
            _ => 0,
        };
        if level.saturating_add(cost) <= capacity {
            (Bucket::Leaky { level: level.saturating_add(cost), at_ms: now }, Ok(()))
        } else {
            let excess = level.saturating_add(cost) - capacity;
            let wait = if r.limit > 0 { (excess + r.limit as i128 - 1) / r.limit as i128 } else { duration as i128 };
            (Bucket::Leaky { level, at_ms: now }, Err(now.saturating_add(wait.min(i64::MAX as i128) as i64)))
        }
    } else {
        let (mut remaining, reset_at_ms) = match bucket {
            Some(Bucket::Token { remaining, reset_at_ms }) if now < reset_at_ms => (remaining, reset_at_ms),
            _ => (r.limit, now.saturating_add(duration)),
        };
        if remaining >= hits {
            remaining -= hits;
            (Bucket::Token { remaining, reset_at_ms }, Ok(()))
        } else {
            (Bucket::Token { remaining, reset_at_ms }, Err(reset_at_ms))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rl(algorithm: i32, limit: i64, duration_ms: i64) -> RateLimit {
        RateLimit {
            name: "n".into(),
            unique_key: "k".into(),
            limit,
            duration_ms,
            hits: 1,
            algorithm,
            behavior: 0,
            retry_initial_backoff_ms: 100,
            retry_max_backoff_ms: 30_000,
            retry_backoff_multiplier: 2.0,
            retry_max_retries: 0,
        }
    }

    #[test]
    fn token_bucket_is_a_window_from_the_first_hit() {
        let r = rl(0, 2, 1000);
        let (b, ok) = rate_check(None, &r, 10);
        assert!(ok.is_ok());
        let (b, ok) = rate_check(Some(b), &r, 20);
        assert!(ok.is_ok());
        let (b, over) = rate_check(Some(b), &r, 30);
        assert_eq!(over, Err(1010));
        let (_, ok) = rate_check(Some(b), &r, 1010);
        assert!(ok.is_ok(), "a new window starts");
    }

    #[test]
    fn leaky_bucket_drains_continuously() {
        let r = rl(1, 2, 1000); // 2 per second, burst 2
        let (b, _) = rate_check(None, &r, 0);
        let (b, _) = rate_check(Some(b), &r, 0);
        let (b, over) = rate_check(Some(b), &r, 0);
        assert_eq!(over, Err(500), "one hit drains in 500 ms");
        let (b, ok) = rate_check(Some(b), &r, 500);
        assert!(ok.is_ok());
        let (_, over) = rate_check(Some(b), &r, 600);
        assert_eq!(over, Err(1000));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let mut r = rl(0, 1, 1000);
        r.retry_max_backoff_ms = 1000;
        let v: Vec<Ms> = (0..6).map(|c| rate_backoff_ms(&r, c)).collect();
        assert_eq!(v, vec![100, 200, 400, 800, 1000, 1000]);
    }
}
