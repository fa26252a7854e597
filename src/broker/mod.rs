//! The broker: in-memory ready queues and lease clocks, acted on by the leader.
//!
//! It is a *hint*; the log is the arbiter. Every node keeps the broker in step
//! with its applied state (it consumes the [`Effect`]s of each applied entry and
//! is rebuilt from the store at start-up and after a snapshot install), but only
//! the leader acts on it: it picks tasks for GrantLeases proposals, extends
//! lease deadlines on heartbeats, and proposes ExpireLeases when a deadline
//! passes. Apply re-checks everything the broker proposes.
//!
//! ## Lease clocks
//! Lease deadlines are kept in monotonic milliseconds of this process
//! ([`crate::monotonic_ms`]; every `now_ms` of a lease method is on that
//! clock): a lease lasts `lease_ms` from when this node applied its grant,
//! whatever the wall clock does (a leader whose wall clock jumped forward
//! used to expire every lease at once; the Jepsen clock nemesis found it).
//! Heartbeats extend a lease's deadline in the leader's memory only (a logged
//! heartbeat would cost a replicated fsync every 5 s per running task). The
//! rule that keeps this safe across failover: when a node becomes leader, every
//! existing lease's deadline becomes `max(recorded, takeover + lease_ms)`, and
//! leases applied later during that term get at least the same floor. A lease
//! is therefore only ever extended by a leader change, never cut short: a worker
//! that heartbeats every 5 s against a 10 s lease keeps it through a failover
//! as long as it reaches the new leader within the lease. A heartbeat is only
//! answered after a quorum confirmed (within half an election timeout) that this
//! node still leads, so a deposed leader that has not noticed yet cannot keep a
//! lease alive behind the new leader's back.
//!
//! ## One order between the reaper, heartbeats and reports
//! The reaper's decision is [`Broker::take_expired`], taken under the broker's
//! lock; a heartbeat's is [`Broker::extend_lease`], under the same lock. A
//! heartbeat that comes first pushes the deadline out and the reaper skips the
//! lease; a heartbeat that comes after the reaper marked the lease as expiring
//! is refused (NOT_FOUND "lease not found") even if the ExpireLeases entry has
//! not committed yet. So a worker is never told "renewed" about an attempt
//! that is being expired. The decision stands until the lease ends: if the
//! ExpireLeases proposal's outcome is unknown (it may still commit, even in a
//! later term), heartbeats stay refused and the expiry is proposed again after
//! [`EXPIRY_RETRY_MS`]; only a proposal that was certainly never appended
//! (this node did not lead) puts the lease back to normal. Reports go
//! through the log like expiries: whichever applies first ends the attempt and
//! the other finds no lease.
//!
//! ## Ordering (DECISIONS #5)
//! Among due tasks (`start_at_ms ≤ now`) of one task group: priority (0
//! first), then start time, then enqueue sequence. Future tasks wait in a
//! time-ordered set and move to the ready set when due.
pub mod duties;

use std::collections::{BTreeSet, HashMap, HashSet};

use parking_lot::Mutex;

use crate::state_machine::{Effect, Lease, Ms, QueueKind, QueuedTask};

/// A task id in memory: the 128 bits of the UUID the state machine issues
/// (`Tx::new_task_id`), 16 bytes instead of a 36-character string.
type Tid = u128;

fn tid(task_id: &str) -> Option<Tid> {
    uuid::Uuid::try_parse(task_id).ok().map(|u| u.as_u128())
}

fn tid_string(t: Tid) -> String {
    uuid::Uuid::from_u128(t).hyphenated().to_string()
}

type ReadyKey = (u32, Ms, u64, Tid);
type FutureKey = (Ms, u32, u64, Tid);

#[derive(Default)]
struct GroupQueue {
    ready: BTreeSet<ReadyKey>,
    future: BTreeSet<FutureKey>,
    /// Floating-limit refresh tasks, by due time.
    refresh: BTreeSet<(Ms, Tid)>,
    /// Pending attempts of this group waiting for a time before walking
    /// their limits (their entries live in [`Inner::gates`]).
    gated: usize,
    /// Leases granted per minute of this process's monotonic clock, as
    /// (minute, count) in a ring indexed by minute (the console's throughput).
    granted: [(i64, u64); THROUGHPUT_MINUTES],
}

/// Minutes of lease-grant counts kept per task group (a fixed ring: 160 bytes
/// a group, whatever the load).
pub const THROUGHPUT_MINUTES: usize = 10;

/// One task group as the console shows it ([`Broker::group_stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStats {
    pub task_group: String,
    /// Attempts due now, waiting for a worker.
    pub ready: usize,
    /// Attempts whose start time is in the future.
    pub future: usize,
    /// Attempts waiting for a time before walking their concurrency or rate
    /// limits (a rate limit's retry, SEMANTICS limits).
    pub gated: usize,
    /// Floating-limit refresh tasks queued.
    pub refresh: usize,
    /// Start time (wall-clock ms) of the longest-waiting ready attempt.
    pub oldest_ready_start_ms: Option<Ms>,
    /// Leases granted in each of the last [`THROUGHPUT_MINUTES`] minutes,
    /// oldest first; the last entry is the current, partial minute.
    pub granted_per_minute: Vec<u64>,
}

impl GroupStats {
    /// A group with nothing queued and no grants counted (one that has only
    /// running leases since this node rebuilt its broker).
    pub fn idle(task_group: &str) -> GroupStats {
        GroupStats {
            task_group: task_group.to_string(),
            ready: 0,
            future: 0,
            gated: 0,
            refresh: 0,
            oldest_ready_start_ms: None,
            granted_per_minute: vec![0; THROUGHPUT_MINUTES],
        }
    }
}

/// What the broker keeps per queued task: enough to find and remove its
/// ordering entry. The job it belongs to is read from the store when the
/// task is picked (the `Q` record), not kept here.
#[derive(Clone, Copy)]
struct TaskEntry {
    group: u32,
    kind: EntryKind,
    priority: u32,
    start_at_ms: Ms,
    seq: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Attempt,
    Gate,
    Refresh,
}

struct LeaseClock {
    deadline_ms: Ms,
    /// When the reaper took it for expiry (monotonic ms): from then on
    /// heartbeats are refused, and the expiry is proposed again if it has
    /// not applied after [`EXPIRY_RETRY_MS`].
    expiring: Option<Ms>,
}

/// How long an expiry whose proposal had an unknown outcome waits before it
/// is proposed again.
pub const EXPIRY_RETRY_MS: Ms = 2_000;

/// Memory per queued task, in bytes, as laid out below (for docs and the
/// backlog benchmark): the `tasks` map entry (16-byte id + 32-byte entry,
/// at hashbrown's load factor) plus one ordering-set entry (48 bytes in
/// B-tree nodes about two-thirds full). Measured RSS per queued job is in
/// docs/BENCHMARKS.md.
pub const BYTES_PER_QUEUED_TASK: usize = 64 + 72;

#[derive(Default)]
struct Inner {
    /// Task groups by name, and the name of each group id. Group ids are
    /// never reused while the process runs (one entry per task group seen).
    group_ids: HashMap<String, u32>,
    /// Group names by id (the inverse of `group_ids`).
    group_names: Vec<String>,
    groups: Vec<GroupQueue>,
    /// Pending attempts whose walk through their limits resumes at a time.
    gates: BTreeSet<(Ms, Tid)>,
    tasks: HashMap<Tid, TaskEntry>,
    /// Picked for a GrantLeases proposal that has not been applied yet.
    reserved: HashSet<Tid>,
    leases: HashMap<Tid, LeaseClock>,
    /// Lowest deadline a lease may have during the current leadership term.
    lease_floor_ms: Ms,
}

/// Tasks picked for one GrantLeases proposal.
pub struct Picked {
    /// Job attempts, in scheduling order.
    pub task_ids: Vec<String>,
    /// Due floating-limit refresh tasks (extra to the job tasks).
    pub refresh_ids: Vec<String>,
}

/// Most refresh tasks handed out by one LeaseTasks call.
pub const REFRESH_PICK_MAX: usize = 16;

#[derive(Default)]
pub struct Broker {
    inner: Mutex<Inner>,
}

/// The job-lifecycle metrics the leader records as it applies effects
/// (Silo's names; README "Observability").
mod lifecycle {
    use crate::state_machine::JobStatus;

    /// An attempt was leased: `wait_ms` from when it became due to its grant.
    pub fn leased(task_group: &str, attempt_number: u32, wait_ms: i64) {
        let group = crate::telemetry::group_label(task_group);
        metrics::counter!("silo_jobs_dequeued_total", "task_group" => group.clone()).increment(1);
        let is_retry = if attempt_number > 1 { "true" } else { "false" };
        metrics::counter!("silo_job_attempts_total", "task_group" => group.clone(), "is_retry" => is_retry)
            .increment(1);
        metrics::histogram!("silo_job_wait_time_seconds", "task_group" => group).record(wait_ms.max(0) as f64 / 1000.0);
    }

    /// A job reached a terminal status.
    pub fn finished(status: JobStatus) {
        let status = match status {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            _ => "cancelled",
        };
        metrics::counter!("silo_jobs_completed_total", "status" => status).increment(1);
    }
}

impl Broker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the effects of one applied batch, in order, at monotonic time
    /// `now_ms` (leases started by these effects run from it).
    pub fn apply_effects(&self, effects: &[Effect], now_ms: Ms) {
        self.apply_effects_counted(effects, now_ms, false)
    }

    /// [`Broker::apply_effects`], counting the job-lifecycle metrics when
    /// `count` (the entries were proposed by this node as leader; every node
    /// applies the same effects, so exactly one counts each).
    pub fn apply_effects_counted(&self, effects: &[Effect], now_ms: Ms, count: bool) {
        if effects.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        // A grant dequeues a task and then starts its lease: the dequeued
        // entry names the group the grant counts for.
        let mut last_dequeued: Option<(Tid, u32, Ms)> = None;
        let leading = count;
        for effect in effects {
            match effect {
                Effect::Queued(task) => inner.insert_task(task),
                Effect::Dequeued { task_id } => {
                    if let Some(t) = tid(task_id) {
                        last_dequeued = inner.remove_task(t).map(|e| (t, e.group, e.start_at_ms));
                    }
                }
                Effect::LeaseStarted { task_id, lease_ms, attempt_number, granted_at_ms } => {
                    let deadline_ms = now_ms.saturating_add(*lease_ms).max(inner.lease_floor_ms);
                    if let Some(t) = tid(task_id) {
                        inner.leases.insert(t, LeaseClock { deadline_ms, expiring: None });
                        if let Some((_, g, ready_at_ms)) = last_dequeued.filter(|(d, _, _)| *d == t) {
                            inner.groups[g as usize].count_grant(now_ms);
                            if leading && *attempt_number > 0 {
                                let group = inner.group_name(g);
                                lifecycle::leased(group, *attempt_number, granted_at_ms.saturating_sub(ready_at_ms));
                            }
                        }
                    }
                }
                Effect::Finished { status } => {
                    if leading {
                        lifecycle::finished(*status);
                    }
                }
                Effect::LeaseEnded { task_id } => {
                    if let Some(t) = tid(task_id) {
                        inner.leases.remove(&t);
                    }
                }
                Effect::Reset => {
                    let floor = inner.lease_floor_ms;
                    *inner = Inner { lease_floor_ms: floor, ..Inner::default() };
                }
            }
        }
    }

    /// Replaces everything with the given applied state (start-up, snapshot
    /// install) at monotonic time `now_ms`: every lease's clock restarts then,
    /// which only ever lengthens a lease. Takes iterators so that a large
    /// queue is streamed from the store, not collected first.
    pub fn rebuild(&self, queued: impl Iterator<Item = QueuedTask>, leases: impl Iterator<Item = Lease>, now_ms: Ms) {
        let mut inner = self.inner.lock();
        let floor = inner.lease_floor_ms;
        *inner = Inner { lease_floor_ms: floor, ..Inner::default() };
        for task in queued {
            inner.insert_task(&task);
        }
        for lease in leases {
            let deadline_ms = now_ms.saturating_add(lease.lease_ms).max(floor);
            if let Some(t) = tid(&lease.task_id) {
                inner.leases.insert(t, LeaseClock { deadline_ms, expiring: None });
            }
        }
    }

    /// Number of queued tasks (ready, future, gates and refreshes) and of
    /// running leases the broker tracks.
    pub fn sizes(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.tasks.len(), inner.leases.len())
    }

    /// Every task group this node has seen, by name, at wall-clock `now_ms`
    /// (due future attempts are counted as ready) and monotonic `mono_ms`
    /// (for the throughput ring). Costs O(groups × distinct priorities), not
    /// O(queued tasks).
    pub fn group_stats(&self, now_ms: Ms, mono_ms: Ms) -> Vec<GroupStats> {
        let mut inner = self.inner.lock();
        let Inner { group_ids, groups, .. } = &mut *inner;
        let mut out: Vec<GroupStats> = group_ids
            .iter()
            .map(|(name, &g)| {
                let group = &mut groups[g as usize];
                group.promote_due(now_ms);
                GroupStats {
                    task_group: name.clone(),
                    ready: group.ready.len(),
                    future: group.future.len(),
                    gated: group.gated,
                    refresh: group.refresh.len(),
                    oldest_ready_start_ms: group.oldest_ready_start(),
                    granted_per_minute: group.grants_per_minute(mono_ms),
                }
            })
            .collect();
        out.sort_by(|a, b| a.task_group.cmp(&b.task_group));
        out
    }

    /// The in-memory deadline (monotonic ms) of a running lease, if this
    /// node's broker tracks it (the leader's is the one that counts).
    pub fn lease_deadline(&self, task_id: &str) -> Option<Ms> {
        let t = tid(task_id)?;
        self.inner.lock().leases.get(&t).map(|c| c.deadline_ms)
    }

    /// The next up-to-`max` ready attempts of `task_group` in the order
    /// workers get them (task ids), without reserving them.
    pub fn peek_ready(&self, task_group: &str, max: usize, now_ms: Ms) -> Vec<String> {
        let mut inner = self.inner.lock();
        let Inner { group_ids, groups, .. } = &mut *inner;
        let Some(group) = group_ids.get(task_group).and_then(|g| groups.get_mut(*g as usize)) else {
            return Vec::new();
        };
        group.promote_due(now_ms);
        group.ready.iter().take(max).map(|&(_, _, _, t)| tid_string(t)).collect()
    }

    /// This node just became leader at `now_ms`: restart every lease clock so no
    /// lease is cut short by the change (see the module docs).
    pub fn on_leadership_gained(&self, now_ms: Ms, lease_ms: Ms) {
        let mut inner = self.inner.lock();
        let floor = now_ms.saturating_add(lease_ms);
        inner.lease_floor_ms = floor;
        inner.reserved.clear();
        // Leases already taken for expiry stay taken: this node's earlier
        // ExpireLeases may still commit in the new term, so heartbeats for
        // them must stay refused; the reaper proposes them again.
        for clock in inner.leases.values_mut() {
            clock.deadline_ms = clock.deadline_ms.max(floor);
        }
    }

    /// Picks up to `max` due tasks of `task_group` in scheduling order and
    /// reserves them until [`Broker::release`]. `accept` filters by task id
    /// (the caller reads the task's job from the store when it filters by
    /// shard or tenant).
    pub fn pick(&self, task_group: &str, max: usize, now_ms: Ms, mut accept: impl FnMut(&str) -> bool) -> Picked {
        let mut inner = self.inner.lock();
        let Inner { group_ids, groups, reserved, .. } = &mut *inner;
        let mut task_ids = Vec::new();
        let mut refresh_ids = Vec::new();
        let mut chosen: Vec<Tid> = Vec::new();
        let Some(group) = group_ids.get(task_group).and_then(|g| groups.get_mut(*g as usize)) else {
            return Picked { task_ids, refresh_ids };
        };
        group.promote_due(now_ms);
        // An unreserved task the filter accepts, as its id string.
        let mut take = |t: Tid| (!reserved.contains(&t)).then(|| tid_string(t)).filter(|id| accept(id));
        for &(_, _, _, t) in group.ready.iter() {
            if task_ids.len() >= max {
                break;
            }
            if let Some(id) = take(t) {
                task_ids.push(id);
                chosen.push(t);
            }
        }
        let due_refresh = group.refresh.iter().take_while(|(due, _)| *due <= now_ms);
        for &(_, t) in due_refresh {
            if refresh_ids.len() >= REFRESH_PICK_MAX {
                break;
            }
            if let Some(id) = take(t) {
                refresh_ids.push(id);
                chosen.push(t);
            }
        }
        reserved.extend(chosen);
        Picked { task_ids, refresh_ids }
    }

    /// Pending attempts whose gate time passed, at most `max`, reserved until
    /// [`Broker::release`] (the leader proposes AcquireLimits for them).
    pub fn take_due_gates(&self, now_ms: Ms, max: usize) -> Vec<String> {
        let mut inner = self.inner.lock();
        let Inner { gates, reserved, .. } = &mut *inner;
        let due: Vec<Tid> = gates
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .filter(|(_, t)| !reserved.contains(t))
            .take(max)
            .map(|(_, t)| *t)
            .collect();
        reserved.extend(due.iter().copied());
        due.into_iter().map(tid_string).collect()
    }

    /// Ends the reservation of picked tasks (after their GrantLeases applied or failed).
    pub fn release(&self, task_ids: &[String]) {
        let mut inner = self.inner.lock();
        for t in task_ids.iter().filter_map(|id| tid(id)) {
            inner.reserved.remove(&t);
        }
    }

    /// Heartbeat on the leader: the lease lives until `now + lease_ms`.
    /// Returns false, extending nothing, when the broker does not know the
    /// lease or the reaper already took it for expiry (see the module docs).
    pub fn extend_lease(&self, task_id: &str, now_ms: Ms, lease_ms: Ms) -> bool {
        let Some(t) = tid(task_id) else { return false };
        let mut inner = self.inner.lock();
        match inner.leases.get_mut(&t) {
            Some(clock) if clock.expiring.is_some() => false,
            Some(clock) => {
                clock.deadline_ms = clock.deadline_ms.max(now_ms.saturating_add(lease_ms));
                true
            }
            None => false,
        }
    }

    /// Leases whose deadline is ≤ `now_ms` and not already being expired, or
    /// taken for expiry over [`EXPIRY_RETRY_MS`] ago without ending, at most
    /// `max`; they stay marked as expiring until [`Broker::expiry_failed`] or
    /// their end.
    pub fn take_expired(&self, now_ms: Ms, max: usize) -> Vec<(String, Ms)> {
        let mut inner = self.inner.lock();
        let due = |c: &LeaseClock| match c.expiring {
            None => c.deadline_ms <= now_ms,
            Some(at) => now_ms.saturating_sub(at) >= EXPIRY_RETRY_MS,
        };
        let mut out: Vec<(Tid, Ms)> =
            inner.leases.iter().filter(|(_, c)| due(c)).map(|(t, c)| (*t, c.deadline_ms)).collect();
        // (deadline, id): u128 order is the order of the ids' hex strings
        out.sort_by_key(|&(t, at)| (at, t));
        out.truncate(max);
        for (t, _) in &out {
            if let Some(c) = inner.leases.get_mut(t) {
                c.expiring = Some(now_ms);
            }
        }
        out.into_iter().map(|(t, at)| (tid_string(t), at)).collect()
    }

    /// An ExpireLeases proposal was certainly not appended (this node did not
    /// lead): its leases are back to normal.
    pub fn expiry_failed(&self, task_ids: &[String]) {
        let mut inner = self.inner.lock();
        for t in task_ids.iter().filter_map(|id| tid(id)) {
            if let Some(c) = inner.leases.get_mut(&t) {
                c.expiring = None;
            }
        }
    }
}

impl GroupQueue {
    /// Moves attempts whose start time is ≤ `now_ms` to the ready set (each
    /// task moves once, so this is amortised O(1) per task).
    fn promote_due(&mut self, now_ms: Ms) {
        while let Some(first) = self.future.first() {
            if first.0 > now_ms {
                break;
            }
            let (start, priority, seq, id) = self.future.pop_first().expect("first exists");
            self.ready.insert((priority, start, seq, id));
        }
    }

    /// The smallest start time among ready attempts: the first entry of each
    /// priority present (at most 100 seeks, whatever the backlog).
    fn oldest_ready_start(&self) -> Option<Ms> {
        let mut oldest: Option<Ms> = None;
        let mut cursor = self.ready.first().copied();
        while let Some((priority, start, _, _)) = cursor {
            oldest = Some(oldest.map_or(start, |o| o.min(start)));
            cursor = match priority.checked_add(1) {
                Some(next) => self.ready.range((next, Ms::MIN, 0, 0)..).next().copied(),
                None => None,
            };
        }
        oldest
    }

    fn count_grant(&mut self, mono_ms: Ms) {
        let minute = mono_ms.div_euclid(60_000);
        let slot = &mut self.granted[minute.rem_euclid(THROUGHPUT_MINUTES as i64) as usize];
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        slot.1 += 1;
    }

    fn grants_per_minute(&self, mono_ms: Ms) -> Vec<u64> {
        let now = mono_ms.div_euclid(60_000);
        (0..THROUGHPUT_MINUTES as i64)
            .rev()
            .map(|ago| {
                let minute = now - ago;
                let slot = self.granted[minute.rem_euclid(THROUGHPUT_MINUTES as i64) as usize];
                if slot.0 == minute {
                    slot.1
                } else {
                    0
                }
            })
            .collect()
    }
}

impl Inner {
    /// The name of group `g` (ids are handed out by [`Inner::group_id`] and never reused).
    fn group_name(&self, g: u32) -> &str {
        self.group_names.get(g as usize).map_or("", String::as_str)
    }

    fn group_id(&mut self, name: &str) -> u32 {
        if let Some(g) = self.group_ids.get(name) {
            return *g;
        }
        let g = self.groups.len() as u32;
        self.groups.push(GroupQueue::default());
        self.group_names.push(name.to_string());
        self.group_ids.insert(name.to_string(), g);
        g
    }

    fn insert_task(&mut self, task: &QueuedTask) {
        let Some(t) = tid(&task.task_id) else {
            // Task ids are UUIDs issued by the state machine; anything else
            // is a bug, and the task stays in the store for a rebuild.
            debug_assert!(false, "task id {:?} is not a UUID", task.task_id);
            tracing::error!(task_id = %task.task_id, "queued task id is not a UUID; not scheduled");
            return;
        };
        // Re-keying (expedite, a gate passed) arrives as another Queued for the same id.
        self.remove_task(t);
        let kind = match task.kind {
            QueueKind::Gate => EntryKind::Gate,
            QueueKind::Attempt => EntryKind::Attempt,
            QueueKind::Refresh { .. } => EntryKind::Refresh,
        };
        let group = self.group_id(&task.task_group);
        let entry = TaskEntry { group, kind, priority: task.priority, start_at_ms: task.start_at_ms, seq: task.seq };
        match kind {
            EntryKind::Gate => {
                self.gates.insert((entry.start_at_ms, t));
                self.groups[group as usize].gated += 1;
            }
            EntryKind::Attempt => {
                self.groups[group as usize].future.insert((entry.start_at_ms, entry.priority, entry.seq, t));
            }
            EntryKind::Refresh => {
                self.groups[group as usize].refresh.insert((entry.start_at_ms, t));
            }
        }
        self.tasks.insert(t, entry);
    }

    /// Forgets a queued task; returns its entry if it was known.
    fn remove_task(&mut self, t: Tid) -> Option<TaskEntry> {
        self.reserved.remove(&t);
        let e = self.tasks.remove(&t)?;
        match e.kind {
            EntryKind::Gate => {
                self.gates.remove(&(e.start_at_ms, t));
                let group = &mut self.groups[e.group as usize];
                group.gated = group.gated.saturating_sub(1);
            }
            EntryKind::Attempt => {
                let group = &mut self.groups[e.group as usize];
                if !group.future.remove(&(e.start_at_ms, e.priority, e.seq, t)) {
                    group.ready.remove(&(e.priority, e.start_at_ms, e.seq, t));
                }
            }
            EntryKind::Refresh => {
                self.groups[e.group as usize].refresh.remove(&(e.start_at_ms, t));
            }
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UUID-shaped task id for a readable name.
    fn id(name: &str) -> String {
        let mut b = [0u8; 16];
        for (i, c) in name.bytes().take(16).enumerate() {
            b[i] = c;
        }
        uuid::Uuid::from_bytes(b).to_string()
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| id(n)).collect()
    }

    fn task(name: &str, group: &str, priority: u32, start: Ms, seq: u64) -> QueuedTask {
        QueuedTask {
            task_id: id(name),
            job: crate::state_machine::JobKey { shard: 0, tenant: "-".into(), id: name.into() },
            kind: QueueKind::Attempt,
            task_group: group.into(),
            priority,
            start_at_ms: start,
            seq,
            attempt_number: 1,
        }
    }

    #[test]
    fn due_tasks_order_by_priority_then_start_then_seq() {
        let b = Broker::new();
        b.apply_effects(
            &[
                Effect::Queued(task("old-low", "g", 50, 10, 1)),
                Effect::Queued(task("new-high", "g", 0, 20, 2)),
                Effect::Queued(task("future-high", "g", 0, 1000, 3)),
                Effect::Queued(task("old-low-2", "g", 50, 10, 4)),
            ],
            0,
        );
        let picked = b.pick("g", 10, 100, |_| true).task_ids;
        assert_eq!(picked, ids(&["new-high", "old-low", "old-low-2"]));
        // reserved tasks are not picked twice
        assert!(b.pick("g", 10, 100, |_| true).task_ids.is_empty());
        b.release(&picked[1..]);
        assert_eq!(b.pick("g", 5, 100, |_| true).task_ids, ids(&["old-low", "old-low-2"]), "released tasks return");
        // once granted, a task leaves the queue for good
        b.apply_effects(&[Effect::Dequeued { task_id: id("new-high") }], 0);
        b.release(&picked);
        assert_eq!(b.pick("g", 1, 2000, |_| true).task_ids, ids(&["future-high"]));
    }

    #[test]
    fn group_stats_count_each_set_and_grants_per_minute() {
        let b = Broker::new();
        let mut gated = task("gated", "g", 0, 500, 5);
        gated.kind = QueueKind::Gate;
        b.apply_effects(
            &[
                Effect::Queued(task("low-old", "g", 50, 10, 1)),
                Effect::Queued(task("high-new", "g", 0, 40, 2)),
                Effect::Queued(task("future", "g", 0, 1000, 3)),
                Effect::Queued(task("granted", "g", 0, 5, 4)),
                Effect::Queued(gated),
                Effect::Queued(task("other", "h", 0, 90, 6)),
            ],
            0,
        );
        // One grant in minute 0 of the monotonic clock, one in minute 2.
        b.apply_effects(
            &[
                Effect::Dequeued { task_id: id("granted") },
                Effect::LeaseStarted { task_id: id("granted"), lease_ms: 1, attempt_number: 1, granted_at_ms: 0 },
            ],
            59_999,
        );
        b.apply_effects(
            &[
                Effect::Dequeued { task_id: id("other") },
                Effect::LeaseStarted { task_id: id("other"), lease_ms: 1, attempt_number: 1, granted_at_ms: 0 },
            ],
            150_000,
        );
        let stats = b.group_stats(100, 150_000);
        assert_eq!(stats.len(), 2);
        let g = &stats[0];
        assert_eq!((g.task_group.as_str(), g.ready, g.future, g.gated, g.refresh), ("g", 2, 1, 1, 0));
        assert_eq!(g.oldest_ready_start_ms, Some(10), "the oldest start across priorities");
        let mut expected = vec![0; THROUGHPUT_MINUTES];
        expected[THROUGHPUT_MINUTES - 3] = 1;
        assert_eq!(g.granted_per_minute, expected);
        assert_eq!(stats[1].granted_per_minute[THROUGHPUT_MINUTES - 1], 1);
        assert_eq!(stats[1].oldest_ready_start_ms, None);
        // Ten minutes later the ring has forgotten both grants.
        assert!(b.group_stats(100, 800_000).iter().all(|s| s.granted_per_minute.iter().all(|&n| n == 0)));
        assert_eq!(b.peek_ready("g", 5, 100), ids(&["high-new", "low-old"]));
        assert_eq!(
            b.peek_ready("g", 5, 2000),
            ids(&["high-new", "future", "low-old"]),
            "due at 2000: priority, then start"
        );
        b.apply_effects(&[Effect::Dequeued { task_id: id("gated") }], 0);
        assert_eq!(b.group_stats(100, 0)[0].gated, 0);
    }

    #[test]
    fn leadership_only_extends_leases() {
        let b = Broker::new();
        b.apply_effects(
            &[Effect::LeaseStarted { task_id: id("t"), lease_ms: 40_000, attempt_number: 1, granted_at_ms: 0 }],
            10_000,
        );
        b.on_leadership_gained(1_000, 10_000);
        assert!(b.take_expired(20_000, 10).is_empty(), "recorded deadline is later than the floor");
        b.on_leadership_gained(45_000, 10_000);
        assert!(b.take_expired(54_999, 10).is_empty());
        assert_eq!(b.take_expired(55_000, 10), vec![(id("t"), 55_000)]);
        assert!(b.take_expired(56_000, 10).is_empty(), "already expiring");
        assert_eq!(b.take_expired(57_000, 10), vec![(id("t"), 55_000)], "proposed again after a while");
    }

    #[test]
    fn a_heartbeat_after_the_reaper_took_the_lease_is_refused() {
        let b = Broker::new();
        b.apply_effects(
            &[
                Effect::LeaseStarted { task_id: id("early"), lease_ms: 1_000, attempt_number: 1, granted_at_ms: 0 },
                Effect::LeaseStarted { task_id: id("late"), lease_ms: 1_000, attempt_number: 1, granted_at_ms: 0 },
            ],
            0,
        );
        // A heartbeat before the reaper looks: extended, not reaped.
        assert!(b.extend_lease(&id("early"), 990, 2_000));
        assert_eq!(b.take_expired(1_005, 10), vec![(id("late"), 1_000)]);
        // After the reaper took it: refused, and the deadline stays passed.
        assert!(!b.extend_lease(&id("late"), 1_006, 2_000));
        // The expiry proposal failed: reaped again, still not extended.
        b.expiry_failed(&[id("late")]);
        assert_eq!(b.take_expired(1_010, 10), vec![(id("late"), 1_000)]);
        assert!(!b.extend_lease(&id("unknown"), 1_010, 2_000));
    }

    #[test]
    fn a_filter_skips_tasks_and_a_non_uuid_id_is_unknown() {
        let b = Broker::new();
        b.apply_effects(&[Effect::Queued(task("a", "g", 0, 0, 1)), Effect::Queued(task("b", "g", 0, 0, 2))], 0);
        let only_b = id("b");
        assert_eq!(b.pick("g", 10, 0, |t| t == only_b).task_ids, ids(&["b"]));
        assert_eq!(b.pick("g", 10, 0, |_| true).task_ids, ids(&["a"]), "b is reserved");
        assert!(!b.extend_lease("not-a-uuid", 0, 1_000));
        assert_eq!(b.sizes(), (2, 0));
    }
}
