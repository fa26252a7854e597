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

use crate::state_machine::{Effect, JobKey, Lease, Ms, QueueKind, QueuedTask};

type ReadyKey = (u32, Ms, u64, String);
type FutureKey = (Ms, u32, u64, String);

#[derive(Default)]
struct GroupQueue {
    ready: BTreeSet<ReadyKey>,
    future: BTreeSet<FutureKey>,
    /// Floating-limit refresh tasks, by due time.
    refresh: BTreeSet<(Ms, String)>,
}

impl GroupQueue {
    fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.future.is_empty() && self.refresh.is_empty()
    }
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

#[derive(Default)]
struct Inner {
    groups: HashMap<String, GroupQueue>,
    /// Pending attempts whose walk through their limits resumes at a time.
    gates: BTreeSet<(Ms, String)>,
    tasks: HashMap<String, QueuedTask>,
    /// Picked for a GrantLeases proposal that has not been applied yet.
    reserved: HashSet<String>,
    leases: HashMap<String, LeaseClock>,
    /// Lowest deadline a lease may have during the current leadership term.
    lease_floor_ms: Ms,
}

/// Tasks picked for one GrantLeases proposal.
pub struct Picked {
    /// Job attempts, in scheduling order.
    pub task_ids: Vec<String>,
    /// The job of each of `task_ids`, in the same order.
    pub jobs: Vec<JobKey>,
    /// Due floating-limit refresh tasks (extra to the job tasks).
    pub refresh_ids: Vec<String>,
}

/// Most refresh tasks handed out by one LeaseTasks call.
pub const REFRESH_PICK_MAX: usize = 16;

#[derive(Default)]
pub struct Broker {
    inner: Mutex<Inner>,
}

impl Broker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the effects of one applied batch, in order, at monotonic time
    /// `now_ms` (leases started by these effects run from it).
    pub fn apply_effects(&self, effects: &[Effect], now_ms: Ms) {
        if effects.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        for effect in effects {
            match effect {
                Effect::Queued(task) => inner.insert_task(task.clone()),
                Effect::Dequeued { task_id } => inner.remove_task(task_id),
                Effect::LeaseStarted { task_id, lease_ms } => {
                    let deadline_ms = now_ms.saturating_add(*lease_ms).max(inner.lease_floor_ms);
                    inner.leases.insert(task_id.clone(), LeaseClock { deadline_ms, expiring: None });
                }
                Effect::LeaseEnded { task_id } => {
                    inner.leases.remove(task_id);
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
    /// which only ever lengthens a lease.
    pub fn rebuild(&self, queued: Vec<QueuedTask>, leases: Vec<Lease>, now_ms: Ms) {
        let mut inner = self.inner.lock();
        let floor = inner.lease_floor_ms;
        *inner = Inner { lease_floor_ms: floor, ..Inner::default() };
        for task in queued {
            inner.insert_task(task);
        }
        for lease in leases {
            let deadline_ms = now_ms.saturating_add(lease.lease_ms).max(floor);
            inner.leases.insert(lease.task_id, LeaseClock { deadline_ms, expiring: None });
        }
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
    /// reserves them until [`Broker::release`]. `accept` filters by job (shard,
    /// tenant).
    pub fn pick(&self, task_group: &str, max: usize, now_ms: Ms, accept: impl Fn(&JobKey) -> bool) -> Picked {
        let mut inner = self.inner.lock();
        let Inner { groups, tasks, reserved, .. } = &mut *inner;
        let mut task_ids = Vec::new();
        let mut jobs = Vec::new();
        let mut refresh_ids = Vec::new();
        let Some(group) = groups.get_mut(task_group) else { return Picked { task_ids, jobs, refresh_ids } };
        while let Some(first) = group.future.first() {
            if first.0 > now_ms {
                break;
            }
            let (start, priority, seq, id) = group.future.pop_first().expect("first exists");
            group.ready.insert((priority, start, seq, id));
        }
        for (_, _, _, task_id) in group.ready.iter() {
            if task_ids.len() >= max {
                break;
            }
            if reserved.contains(task_id) {
                continue;
            }
            if let Some(task) = tasks.get(task_id) {
                if accept(&task.job) {
                    task_ids.push(task_id.clone());
                    jobs.push(task.job.clone());
                }
            }
        }
        for (due, task_id) in group.refresh.iter() {
            if *due > now_ms || refresh_ids.len() >= REFRESH_PICK_MAX {
                break;
            }
            if !reserved.contains(task_id) && tasks.get(task_id).is_some_and(|t| accept(&t.job)) {
                refresh_ids.push(task_id.clone());
            }
        }
        for id in task_ids.iter().chain(refresh_ids.iter()) {
            reserved.insert(id.clone());
        }
        Picked { task_ids, jobs, refresh_ids }
    }

    /// Pending attempts whose gate time passed, at most `max`, reserved until
    /// [`Broker::release`] (the leader proposes AcquireLimits for them).
    pub fn take_due_gates(&self, now_ms: Ms, max: usize) -> Vec<String> {
        let mut inner = self.inner.lock();
        let Inner { gates, reserved, .. } = &mut *inner;
        let due: Vec<String> = gates
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .filter(|(_, id)| !reserved.contains(id))
            .take(max)
            .map(|(_, id)| id.clone())
            .collect();
        for id in &due {
            reserved.insert(id.clone());
        }
        due
    }

    /// Ends the reservation of picked tasks (after their GrantLeases applied or failed).
    pub fn release(&self, task_ids: &[String]) {
        let mut inner = self.inner.lock();
        for id in task_ids {
            inner.reserved.remove(id);
        }
    }

    /// Heartbeat on the leader: the lease lives until `now + lease_ms`.
    /// Returns false, extending nothing, when the broker does not know the
    /// lease or the reaper already took it for expiry (see the module docs).
    pub fn extend_lease(&self, task_id: &str, now_ms: Ms, lease_ms: Ms) -> bool {
        let mut inner = self.inner.lock();
        match inner.leases.get_mut(task_id) {
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
        let mut out: Vec<(String, Ms)> =
            inner.leases.iter().filter(|(_, c)| due(c)).map(|(id, c)| (id.clone(), c.deadline_ms)).collect();
        out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        out.truncate(max);
        for (id, _) in &out {
            if let Some(c) = inner.leases.get_mut(id) {
                c.expiring = Some(now_ms);
            }
        }
        out
    }

    /// An ExpireLeases proposal was certainly not appended (this node did not
    /// lead): its leases are back to normal.
    pub fn expiry_failed(&self, task_ids: &[String]) {
        let mut inner = self.inner.lock();
        for id in task_ids {
            if let Some(c) = inner.leases.get_mut(id) {
                c.expiring = None;
            }
        }
    }
}

impl Inner {
    fn insert_task(&mut self, task: QueuedTask) {
        // Re-keying (expedite, a gate passed) arrives as another Queued for the same id.
        self.remove_task(&task.task_id);
        match &task.kind {
            QueueKind::Gate => {
                self.gates.insert((task.start_at_ms, task.task_id.clone()));
            }
            QueueKind::Attempt => {
                let group = self.groups.entry(task.task_group.clone()).or_default();
                group.future.insert((task.start_at_ms, task.priority, task.seq, task.task_id.clone()));
            }
            QueueKind::Refresh { .. } => {
                let group = self.groups.entry(task.task_group.clone()).or_default();
                group.refresh.insert((task.start_at_ms, task.task_id.clone()));
            }
        }
        self.tasks.insert(task.task_id.clone(), task);
    }

    fn remove_task(&mut self, task_id: &str) {
        self.reserved.remove(task_id);
        let Some(task) = self.tasks.remove(task_id) else { return };
        if task.kind == QueueKind::Gate {
            self.gates.remove(&(task.start_at_ms, task.task_id));
            return;
        }
        if let Some(group) = self.groups.get_mut(&task.task_group) {
            group.future.remove(&(task.start_at_ms, task.priority, task.seq, task.task_id.clone()));
            group.ready.remove(&(task.priority, task.start_at_ms, task.seq, task.task_id.clone()));
            group.refresh.remove(&(task.start_at_ms, task.task_id));
            if group.is_empty() {
                self.groups.remove(&task.task_group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, group: &str, priority: u32, start: Ms, seq: u64) -> QueuedTask {
        QueuedTask {
            task_id: id.into(),
            job: JobKey { shard: 0, tenant: "-".into(), id: id.into() },
            kind: QueueKind::Attempt,
            task_group: group.into(),
            priority,
            start_at_ms: start,
            seq,
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
        assert_eq!(picked, vec!["new-high", "old-low", "old-low-2"]);
        // reserved tasks are not picked twice
        assert!(b.pick("g", 10, 100, |_| true).task_ids.is_empty());
        b.release(&picked[1..]);
        assert_eq!(b.pick("g", 5, 100, |_| true).task_ids, vec!["old-low", "old-low-2"], "released tasks return");
        // once granted, a task leaves the queue for good
        b.apply_effects(&[Effect::Dequeued { task_id: "new-high".into() }], 0);
        b.release(&picked);
        assert_eq!(b.pick("g", 1, 2000, |_| true).task_ids, vec!["future-high"]);
    }

    #[test]
    fn leadership_only_extends_leases() {
        let b = Broker::new();
        b.apply_effects(&[Effect::LeaseStarted { task_id: "t".into(), lease_ms: 40_000 }], 10_000);
        b.on_leadership_gained(1_000, 10_000);
        assert!(b.take_expired(20_000, 10).is_empty(), "recorded deadline is later than the floor");
        b.on_leadership_gained(45_000, 10_000);
        assert!(b.take_expired(54_999, 10).is_empty());
        assert_eq!(b.take_expired(55_000, 10), vec![("t".to_string(), 55_000)]);
        assert!(b.take_expired(56_000, 10).is_empty(), "already expiring");
        assert_eq!(b.take_expired(57_000, 10), vec![("t".to_string(), 55_000)], "proposed again after a while");
    }

    #[test]
    fn a_heartbeat_after_the_reaper_took_the_lease_is_refused() {
        let b = Broker::new();
        b.apply_effects(
            &[
                Effect::LeaseStarted { task_id: "early".into(), lease_ms: 1_000 },
                Effect::LeaseStarted { task_id: "late".into(), lease_ms: 1_000 },
            ],
            0,
        );
        // A heartbeat before the reaper looks: extended, not reaped.
        assert!(b.extend_lease("early", 990, 2_000));
        assert_eq!(b.take_expired(1_005, 10), vec![("late".to_string(), 1_000)]);
        // After the reaper took it: refused, and the deadline stays passed.
        assert!(!b.extend_lease("late", 1_006, 2_000));
        // The expiry proposal failed: reaped again, still not extended.
        b.expiry_failed(&["late".to_string()]);
        assert_eq!(b.take_expired(1_010, 10), vec![("late".to_string(), 1_000)]);
        assert!(!b.extend_lease("unknown", 1_010, 2_000));
    }
}
