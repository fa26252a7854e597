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
//! first), then start time, then enqueue sequence. Within one priority the
//! attempts not yet due sort after the due ones (they start later), so a pick
//! takes the due front of each priority's run in turn.
//!
//! ## Paging (issue #10)
//! The broker does not hold every queued task. The state machine keeps each
//! queued task once more in the paging index (`O` in `storage::keys`), in the
//! order the broker hands tasks out, and the broker holds a *window* of each
//! ordered queue: a run (one task group at one priority, by start time then
//! enqueue seq) or the gates (by resume time). A window holds every queued
//! entry up to its `end`, the last key read from the store; entries applied
//! beyond it stay in the store until a pick reaches the end and reads the
//! next page of [`Broker::page`] entries after it. So a read never walks the
//! consumed (deleted) keys in front of the queue, and memory is bounded by
//! `2 × page` entries per non-empty run (at most 100 priorities per task
//! group) plus the gates' window, whatever the backlog. The store is written
//! before the effects reach the broker, so a page may show an entry whose
//! effect is still on its way; windows are sets, and the effect then changes
//! nothing.
//!
//! Sizes come from the stored per-group counts (`O 3`), so a restart reads
//! those, finds the runs with one seek each and loads windows only when a
//! pick or the console first needs them. The one scan a restart makes is of
//! attempts scheduled in the future, whose start times it counts (the
//! console's "scheduled" column, one counter per distinct future start
//! time): O(future-dated attempts) keys, never the due backlog.
pub mod duties;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::state_machine::{Effect, Lease, Ms, QueueCounts, QueueKind, QueuedTask};
use crate::storage::codec::decode_or_die;
use crate::storage::keys;
use crate::storage::kv::{NoPages, ReadPages};

/// A task id in memory: the 128 bits of the UUID the state machine issues
/// (`Tx::new_task_id`), 16 bytes instead of a 36-character string. Its order
/// is the order of the hyphenated lowercase string the store keys hold.
type Tid = u128;

fn tid(task_id: &str) -> Option<Tid> {
    uuid::Uuid::try_parse(task_id).ok().map(|u| u.as_u128())
}

fn tid_string(t: Tid) -> String {
    uuid::Uuid::from_u128(t).hyphenated().to_string()
}

/// An attempt's place in its run: (start time, enqueue seq, task id).
type AttemptPos = (Ms, u64, Tid);
/// A gate's place: (resume time, task id).
type GatePos = (Ms, Tid);

/// Entries read from the store per page; a window keeps at most twice this.
pub const PAGE_DEFAULT: usize = 512;

/// Memory per windowed entry, in bytes: a 32-byte position in B-tree nodes
/// about two-thirds full. A run's window holds at most `2 × page` of them
/// (64 KiB at the default page), whatever the backlog.
pub const BYTES_PER_WINDOWED_TASK: usize = 48;

/// One ordered queue's in-memory front (see "Paging" in the module docs).
struct Window<P> {
    entries: BTreeSet<P>,
    /// The last position read from the store: every queued entry at or
    /// before it is in `entries`. None: nothing read yet.
    end: Option<P>,
    /// Every queued entry is in `entries` (the store had nothing after `end`).
    complete: bool,
}

impl<P: Ord + Copy> Window<P> {
    /// A queue the broker has seen from its first entry (created by an effect,
    /// or wiped): nothing of it lives only in the store.
    fn complete() -> Self {
        Window { entries: BTreeSet::new(), end: None, complete: true }
    }

    /// A queue found in the store whose entries have not been read yet.
    fn unloaded() -> Self {
        Window { entries: BTreeSet::new(), end: None, complete: false }
    }

    fn covers(&self, p: &P) -> bool {
        self.complete || self.end.is_some_and(|e| *p <= e)
    }

    /// An entry was queued: kept when it falls inside the window, else it
    /// waits in the store for its page.
    fn insert(&mut self, p: P, max: usize) {
        if self.covers(&p) {
            self.entries.insert(p);
            self.trim(max);
        }
    }

    /// Adds a page read after `end`: `read` keys came back for `asked`
    /// (the positions are those that parsed).
    fn extend(&mut self, page: Vec<P>, read: usize, asked: usize) {
        if let Some(&last) = page.last() {
            self.end = Some(self.end.map_or(last, |e| e.max(last)));
        }
        self.complete = read < asked;
        self.entries.extend(page);
    }

    /// Keeps the first `max` entries; the rest live only in the store again.
    fn trim(&mut self, max: usize) {
        if self.entries.len() <= max {
            return;
        }
        while self.entries.len() > max {
            self.entries.pop_last();
        }
        self.end = self.entries.last().copied();
        self.complete = false;
    }

    /// Nothing queued at all (the run can be forgotten).
    fn is_empty(&self) -> bool {
        self.complete && self.entries.is_empty()
    }

    /// Entries after `after` (all when None), in order.
    fn after(&self, after: Option<P>) -> impl Iterator<Item = &P> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.entries.range((lower, Bound::Unbounded))
    }
}

struct GroupQueue {
    name: String,
    /// Attempt runs by priority (0 first).
    runs: BTreeMap<u32, Window<AttemptPos>>,
    /// Queued tasks of this group by kind, as the store counts them.
    counts: QueueCounts,
    /// Attempts counted as scheduled in the future, by start time (ms); the
    /// times that passed are dropped by [`Inner::promote`]. One entry per
    /// distinct future start time: due attempts cost nothing here.
    future: BTreeMap<Ms, u64>,
    future_total: u64,
    /// Floating-limit refresh tasks, by due time (one per floating limit).
    refresh: BTreeSet<(Ms, Tid)>,
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

struct Inner {
    /// Where pages are read from (the applied state).
    pages: Arc<dyn ReadPages>,
    /// Entries per page.
    page: usize,
    /// Task groups by name. Group ids are never reused while the process
    /// runs (one entry per task group seen).
    group_ids: HashMap<String, u32>,
    groups: Vec<GroupQueue>,
    /// Pending attempts whose walk through their limits resumes at a time.
    gates: Window<GatePos>,
    /// Picked for a GrantLeases proposal that has not been applied yet.
    reserved: HashSet<Tid>,
    leases: HashMap<Tid, LeaseClock>,
    /// Lowest deadline a lease may have during the current leadership term.
    lease_floor_ms: Ms,
    /// Wall-clock time up to which future counts were dropped as due (the
    /// latest time seen; it only grows, so an attempt counted as future at
    /// insertion is found there until it is due).
    future_through_ms: Ms,
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

pub struct Broker {
    inner: Mutex<Inner>,
}

impl Default for Broker {
    fn default() -> Self {
        Broker { inner: Mutex::new(Inner::empty(Arc::new(NoPages), PAGE_DEFAULT, 0, Ms::MIN)) }
    }
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

    /// A broker reading `page` entries per page (tests use small pages to
    /// cross many page boundaries).
    pub fn with_page(page: usize) -> Self {
        let b = Broker::default();
        b.inner.lock().page = page.max(1);
        b
    }

    /// Applies the effects of one applied batch, in order, at monotonic time
    /// `now_ms` (leases started by these effects run from it) and wall-clock
    /// `wall_ms` (future counts of start times that passed are dropped).
    pub fn apply_effects(&self, effects: &[Effect], now_ms: Ms, wall_ms: Ms) {
        self.apply_effects_counted(effects, now_ms, wall_ms, false)
    }

    /// [`Broker::apply_effects`], counting the job-lifecycle metrics when
    /// `count` (the entries were proposed by this node as leader; every node
    /// applies the same effects, so exactly one counts each).
    pub fn apply_effects_counted(&self, effects: &[Effect], now_ms: Ms, wall_ms: Ms, count: bool) {
        if effects.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        inner.promote(wall_ms);
        // A grant dequeues a task and then starts its lease: the dequeued
        // entry names the group the grant counts for.
        let mut last_dequeued: Option<(Tid, u32, Ms)> = None;
        let leading = count;
        for effect in effects {
            match effect {
                Effect::Queued(task) => inner.insert_task(task),
                Effect::Dequeued(task) => {
                    last_dequeued = inner.remove_task(task);
                }
                Effect::LeaseStarted { task_id, lease_ms, attempt_number, granted_at_ms } => {
                    let deadline_ms = now_ms.saturating_add(*lease_ms).max(inner.lease_floor_ms);
                    if let Some(t) = tid(task_id) {
                        inner.leases.insert(t, LeaseClock { deadline_ms, expiring: None });
                        if let Some((_, g, ready_at_ms)) = last_dequeued.filter(|(d, _, _)| *d == t) {
                            let group = &mut inner.groups[g as usize];
                            group.count_grant(now_ms);
                            if leading && *attempt_number > 0 {
                                lifecycle::leased(
                                    &group.name,
                                    *attempt_number,
                                    granted_at_ms.saturating_sub(ready_at_ms),
                                );
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
                    let Inner { pages, page, lease_floor_ms, future_through_ms, .. } = &*inner;
                    *inner = Inner::empty(pages.clone(), *page, *lease_floor_ms, *future_through_ms);
                }
            }
        }
    }

    /// Replaces everything with the applied state `pages` reads (start-up,
    /// snapshot install) at monotonic `now_ms` and wall-clock `wall_ms`:
    /// every lease's clock restarts at `now_ms`, which only ever lengthens a
    /// lease. Reads the queue counts, one key per run, the refresh tasks and
    /// the keys of future-dated attempts; windows load when first used.
    pub fn rebuild(&self, pages: Arc<dyn ReadPages>, leases: impl Iterator<Item = Lease>, now_ms: Ms, wall_ms: Ms) {
        let mut inner = self.inner.lock();
        let floor = inner.lease_floor_ms;
        let page = inner.page;
        *inner = Inner::empty(pages.clone(), page, floor, wall_ms);
        // Gates live in the store until their first page is read.
        inner.gates = Window::unloaded();
        let all = |prefix: Vec<u8>| PageIter::new(pages.as_ref(), prefix, 4_096);
        for (k, v) in all(keys::queue_counts_all()) {
            if let Some(name) = keys::parse_queue_counts(&k) {
                let g = inner.group_id(&name);
                inner.groups[g as usize].counts = decode_or_die("queue counts", &v);
            }
        }
        inner.find_runs();
        for (k, _) in all(keys::refresh_orders()) {
            if let Some((name, due, t)) = keys::parse_refresh_order(&k).and_then(|(n, d, t)| Some((n, d, tid(&t)?))) {
                let g = inner.group_id(&name);
                inner.groups[g as usize].refresh.insert((due, t));
            }
        }
        for lease in leases {
            let deadline_ms = now_ms.saturating_add(lease.lease_ms).max(floor);
            if let Some(t) = tid(&lease.task_id) {
                inner.leases.insert(t, LeaseClock { deadline_ms, expiring: None });
            }
        }
    }

    /// Number of queued tasks (ready, future, gates and refreshes, as the
    /// store counts them) and of running leases the broker tracks.
    pub fn sizes(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        let queued: u64 = inner.groups.iter().map(|g| g.counts.attempts + g.counts.gates + g.counts.refresh).sum();
        (queued as usize, inner.leases.len())
    }

    /// Entries the broker holds in memory: windowed attempts and gates,
    /// refresh tasks and future start-time counters: at most `2 × page` per
    /// run plus one per distinct future start time, whatever the due backlog.
    pub fn resident(&self) -> usize {
        let inner = self.inner.lock();
        let groups: usize = inner
            .groups
            .iter()
            .map(|g| g.runs.values().map(|r| r.entries.len()).sum::<usize>() + g.refresh.len() + g.future.len())
            .sum();
        groups + inner.gates.entries.len()
    }

    /// Every task group this node knows, by name, at wall-clock `now_ms`
    /// (due future attempts are counted as ready) and monotonic `mono_ms`
    /// (for the throughput ring). Costs O(groups × distinct priorities), and
    /// one page read for a run whose window was never loaded.
    pub fn group_stats(&self, now_ms: Ms, mono_ms: Ms) -> Vec<GroupStats> {
        let mut inner = self.inner.lock();
        inner.promote(now_ms);
        let mut out = Vec::with_capacity(inner.groups.len());
        for g in 0..inner.groups.len() {
            let oldest = inner.oldest_ready_start(g as u32, now_ms);
            let group = &inner.groups[g];
            let future = group.future_total.min(group.counts.attempts);
            out.push(GroupStats {
                task_group: group.name.clone(),
                ready: (group.counts.attempts - future) as usize,
                future: future as usize,
                gated: group.counts.gates as usize,
                refresh: group.refresh.len(),
                oldest_ready_start_ms: oldest,
                granted_per_minute: group.grants_per_minute(mono_ms),
            });
        }
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
        let Some(&g) = inner.group_ids.get(task_group) else { return Vec::new() };
        let mut out = Vec::new();
        inner.walk_due(g, now_ms, |t| {
            out.push(tid_string(t));
            out.len() < max
        });
        out
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
    /// shard or tenant). Reads pages while the windows run out before `max`
    /// tasks are found: a filter that rejects most tasks reads as far as it
    /// must (O(depth) reads under the broker's lock, in bounded memory).
    pub fn pick(&self, task_group: &str, max: usize, now_ms: Ms, mut accept: impl FnMut(&str) -> bool) -> Picked {
        let mut inner = self.inner.lock();
        let mut task_ids = Vec::new();
        let mut refresh_ids = Vec::new();
        let Some(&g) = inner.group_ids.get(task_group) else {
            return Picked { task_ids, refresh_ids };
        };
        let mut chosen: Vec<Tid> = Vec::new();
        if max > 0 {
            let reserved = std::mem::take(&mut inner.reserved);
            // A task the store re-keyed before its effects arrived can sit at
            // two places of a window for a moment: list it once.
            let mut seen = HashSet::new();
            inner.walk_due(g, now_ms, |t| {
                if !reserved.contains(&t) && seen.insert(t) {
                    let id = tid_string(t);
                    if accept(&id) {
                        task_ids.push(id);
                        chosen.push(t);
                    }
                }
                task_ids.len() < max
            });
            inner.reserved = reserved;
        }
        let Inner { groups, reserved, .. } = &mut *inner;
        let due_refresh = groups[g as usize].refresh.iter().take_while(|(due, _)| *due <= now_ms);
        for &(_, t) in due_refresh {
            if refresh_ids.len() >= REFRESH_PICK_MAX {
                break;
            }
            if reserved.contains(&t) {
                continue;
            }
            let id = tid_string(t);
            if accept(&id) {
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
        let mut due: Vec<Tid> = Vec::new();
        let mut cursor: Option<GatePos> = None;
        while due.len() < max {
            let Inner { gates, reserved, .. } = &mut *inner;
            let mut reached_future = false;
            for &(at, t) in gates.after(cursor) {
                cursor = Some((at, t));
                if at > now_ms {
                    reached_future = true;
                    break;
                }
                if !reserved.contains(&t) && !due.contains(&t) {
                    due.push(t);
                    if due.len() >= max {
                        break;
                    }
                }
            }
            if reached_future || due.len() >= max || gates.complete || inner.load_gates() == 0 {
                break;
            }
        }
        let max_window = 2 * inner.page;
        inner.gates.trim(max_window.max(due.len()));
        inner.reserved.extend(due.iter().copied());
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

/// Every entry under a prefix, read a page at a time (start-up scans).
struct PageIter<'a> {
    pages: &'a dyn ReadPages,
    prefix: Vec<u8>,
    from: Vec<u8>,
    n: usize,
    buffer: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    done: bool,
}

impl<'a> PageIter<'a> {
    fn new(pages: &'a dyn ReadPages, prefix: Vec<u8>, n: usize) -> Self {
        PageIter { pages, from: prefix.clone(), prefix, n, buffer: Vec::new().into_iter(), done: false }
    }

    fn starting_at(mut self, from: Vec<u8>) -> Self {
        self.from = from;
        self
    }
}

impl Iterator for PageIter<'_> {
    type Item = (Vec<u8>, Vec<u8>);
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(item) = self.buffer.next() {
            return Some(item);
        }
        if self.done {
            return None;
        }
        let page = self.pages.page(&self.prefix, &self.from, self.n);
        self.done = page.len() < self.n;
        if let Some((last, _)) = page.last() {
            self.from = successor(last);
        }
        self.buffer = page.into_iter();
        self.buffer.next()
    }
}

/// The smallest key after `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.extend_from_slice(key);
    out.push(0);
    out
}

impl GroupQueue {
    fn new(name: &str) -> Self {
        GroupQueue {
            name: name.to_string(),
            runs: BTreeMap::new(),
            counts: QueueCounts::default(),
            future: BTreeMap::new(),
            future_total: 0,
            refresh: BTreeSet::new(),
            granted: [(0, 0); THROUGHPUT_MINUTES],
        }
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
    fn empty(pages: Arc<dyn ReadPages>, page: usize, lease_floor_ms: Ms, future_through_ms: Ms) -> Self {
        Inner {
            pages,
            page,
            group_ids: HashMap::new(),
            groups: Vec::new(),
            gates: Window::complete(),
            reserved: HashSet::new(),
            leases: HashMap::new(),
            lease_floor_ms,
            future_through_ms,
        }
    }

    fn group_id(&mut self, name: &str) -> u32 {
        if let Some(g) = self.group_ids.get(name) {
            return *g;
        }
        let g = self.groups.len() as u32;
        self.groups.push(GroupQueue::new(name));
        self.group_ids.insert(name.to_string(), g);
        g
    }

    /// Drops the future counts of start times that passed by wall-clock `now_ms`.
    fn promote(&mut self, now_ms: Ms) {
        let through = now_ms;
        if through <= self.future_through_ms {
            return;
        }
        self.future_through_ms = through;
        for group in &mut self.groups {
            while let Some((&start, &n)) = group.future.first_key_value() {
                if start > through {
                    break;
                }
                group.future.pop_first();
                group.future_total = group.future_total.saturating_sub(n);
            }
        }
    }

    /// Start-up: one entry per run (a seek past each run's keys), and the
    /// keys of each run's attempts scheduled in the future.
    fn find_runs(&mut self) {
        let prefix = keys::attempt_orders();
        let pages = self.pages.clone();
        let mut from = prefix.clone();
        loop {
            let first = pages.page(&prefix, &from, 1);
            let Some((k, _)) = first.first() else { break };
            let Some(o) = keys::parse_attempt_order(k) else {
                tracing::error!(key = ?k, "unreadable paging-index key; skipped");
                from = successor(k);
                continue;
            };
            let g = self.group_id(&o.task_group);
            self.groups[g as usize].runs.insert(o.priority, Window::unloaded());
            let run = keys::attempt_run(&o.task_group, o.priority);
            let later = keys::attempt_run_from(&o.task_group, o.priority, self.future_through_ms.saturating_add(1));
            for (k, _) in PageIter::new(pages.as_ref(), run.clone(), 4_096).starting_at(later) {
                if let Some(o) = keys::parse_attempt_order(&k) {
                    let group = &mut self.groups[g as usize];
                    *group.future.entry(o.start_at_ms).or_default() += 1;
                    group.future_total += 1;
                }
            }
            match keys::prefix_end(&run) {
                Some(end) => from = end,
                None => break,
            }
        }
    }

    /// Reads the next page of run (`g`, `priority`) into its window; returns
    /// how many entries it read.
    fn load_run(&mut self, g: u32, priority: u32) -> usize {
        self.load_run_n(g, priority, self.page)
    }

    /// [`Inner::load_run`] reading `page` entries.
    fn load_run_n(&mut self, g: u32, priority: u32, page: usize) -> usize {
        let Some(end) = self.groups[g as usize].runs.get(&priority).map(|r| r.end) else { return 0 };
        let (positions, n) = self.read_run(g, priority, end, page);
        if let Some(run) = self.groups[g as usize].runs.get_mut(&priority) {
            run.extend(positions, n, page);
        }
        n
    }

    /// Up to `n` positions of run (`g`, `priority`) after `after` (from its
    /// start when None), read from the store, and how many keys were read.
    fn read_run(&self, g: u32, priority: u32, after: Option<AttemptPos>, n: usize) -> (Vec<AttemptPos>, usize) {
        let name = &self.groups[g as usize].name;
        let prefix = keys::attempt_run(name, priority);
        let from = match after {
            Some((start, seq, t)) => successor(&keys::attempt_order(name, priority, start, seq, &tid_string(t))),
            None => prefix.clone(),
        };
        let read = self.pages.page(&prefix, &from, n);
        let positions = read
            .iter()
            .filter_map(|(k, _)| keys::parse_attempt_order(k))
            .filter_map(|o| Some((o.start_at_ms, o.seq, tid(&o.task_id)?)))
            .collect();
        (positions, read.len())
    }

    /// Visits the due attempts of run (`g`, `priority`) beyond its window's
    /// end, a page at a time, without keeping them: a filtered pick whose
    /// filter rejected a whole window reads on in bounded memory. Returns
    /// false when `visit` asked to stop.
    fn visit_beyond(&self, g: u32, priority: u32, now_ms: Ms, visit: &mut impl FnMut(Tid) -> bool) -> bool {
        let Some(mut after) = self.groups[g as usize].runs.get(&priority).and_then(|r| r.end) else { return true };
        loop {
            let (page, read) = self.read_run(g, priority, Some(after), self.page);
            for &pos in &page {
                if pos.0 > now_ms {
                    return true;
                }
                if !visit(pos.2) {
                    return false;
                }
            }
            match page.last() {
                Some(&last) if read == self.page => after = last,
                _ => return true,
            }
        }
    }

    /// Reads the next page of gates into their window; returns how many.
    fn load_gates(&mut self) -> usize {
        let prefix = keys::gate_orders();
        let from = match self.gates.end {
            Some((at, t)) => successor(&keys::gate_order(at, &tid_string(t))),
            None => prefix.clone(),
        };
        let read = self.pages.page(&prefix, &from, self.page);
        let n = read.len();
        let positions = read
            .iter()
            .filter_map(|(k, _)| keys::parse_gate_order(k))
            .filter_map(|(at, t)| Some((at, tid(&t)?)))
            .collect();
        self.gates.extend(positions, n, self.page);
        n
    }

    /// Visits the due attempts of group `g` in scheduling order (priority,
    /// then start, then seq) until `visit` returns false, reading pages as
    /// windows run out; trims the windows it grew. A window grows to at
    /// most `2 × page` (+ one page) here; deeper entries are visited
    /// straight from the store ([`Inner::visit_beyond`]).
    fn walk_due(&mut self, g: u32, now_ms: Ms, mut visit: impl FnMut(Tid) -> bool) {
        let priorities: Vec<u32> = self.groups[g as usize].runs.keys().copied().collect();
        let max_window = 2 * self.page;
        let mut more = true;
        for priority in priorities {
            let mut cursor: Option<AttemptPos> = None;
            while more {
                let Some(run) = self.groups[g as usize].runs.get(&priority) else { break };
                let mut reached_future = false;
                for &pos in run.after(cursor) {
                    cursor = Some(pos);
                    if pos.0 > now_ms {
                        reached_future = true;
                        break;
                    }
                    more = visit(pos.2);
                    if !more {
                        break;
                    }
                }
                if reached_future || !more || run.complete {
                    break;
                }
                if run.entries.len() >= max_window {
                    // A full window and the walk must go deeper (a filter
                    // rejected what it holds): read on without keeping it.
                    more = self.visit_beyond(g, priority, now_ms, &mut visit);
                    break;
                }
                if self.load_run(g, priority) == 0 {
                    break;
                }
            }
            let runs = &mut self.groups[g as usize].runs;
            if let Some(run) = runs.get_mut(&priority) {
                run.trim(max_window);
                if run.is_empty() {
                    runs.remove(&priority);
                }
            }
            if !more {
                break;
            }
        }
    }

    /// The smallest start time among group `g`'s due attempts: the first
    /// entry of each run (reading one entry of a window that was never read).
    fn oldest_ready_start(&mut self, g: u32, now_ms: Ms) -> Option<Ms> {
        let priorities: Vec<u32> = self.groups[g as usize].runs.keys().copied().collect();
        let mut oldest: Option<Ms> = None;
        for priority in priorities {
            let needs_page =
                self.groups[g as usize].runs.get(&priority).is_some_and(|r| r.entries.is_empty() && !r.complete);
            if needs_page {
                self.load_run_n(g, priority, 1);
            }
            let first = self.groups[g as usize].runs.get(&priority).and_then(|r| r.entries.first().copied());
            if let Some((start, _, _)) = first.filter(|p| p.0 <= now_ms) {
                oldest = Some(oldest.map_or(start, |o| o.min(start)));
            }
        }
        oldest
    }

    fn insert_task(&mut self, task: &QueuedTask) {
        let Some(t) = tid(&task.task_id) else {
            // Task ids are UUIDs issued by the state machine; anything else
            // is a bug, and the task stays in the store for a rebuild.
            debug_assert!(false, "task id {:?} is not a UUID", task.task_id);
            tracing::error!(task_id = %task.task_id, "queued task id is not a UUID; not scheduled");
            return;
        };
        let max_window = 2 * self.page;
        let g = self.group_id(&task.task_group);
        let through = self.future_through_ms;
        let group = &mut self.groups[g as usize];
        *group.counts.of(&task.kind) += 1;
        match task.kind {
            QueueKind::Gate => self.gates.insert((task.start_at_ms, t), max_window),
            QueueKind::Attempt => {
                let run = group.runs.entry(task.priority).or_insert_with(Window::complete);
                run.insert((task.start_at_ms, task.seq, t), max_window);
                if task.start_at_ms > through {
                    *group.future.entry(task.start_at_ms).or_default() += 1;
                    group.future_total += 1;
                }
            }
            QueueKind::Refresh { .. } => {
                group.refresh.insert((task.start_at_ms, t));
            }
        }
    }

    /// Forgets a queued task; returns (task, group, start time) when its id
    /// is a task id.
    fn remove_task(&mut self, task: &QueuedTask) -> Option<(Tid, u32, Ms)> {
        let t = tid(&task.task_id)?;
        self.reserved.remove(&t);
        let g = *self.group_ids.get(&task.task_group)?;
        let through = self.future_through_ms;
        let group = &mut self.groups[g as usize];
        let n = group.counts.of(&task.kind);
        *n = n.saturating_sub(1);
        match task.kind {
            QueueKind::Gate => {
                self.gates.entries.remove(&(task.start_at_ms, t));
            }
            QueueKind::Attempt => {
                if let Some(run) = group.runs.get_mut(&task.priority) {
                    run.entries.remove(&(task.start_at_ms, task.seq, t));
                    if run.is_empty() {
                        group.runs.remove(&task.priority);
                    }
                }
                if task.start_at_ms > through {
                    if let Some(n) = group.future.get_mut(&task.start_at_ms) {
                        *n -= 1;
                        group.future_total = group.future_total.saturating_sub(1);
                        if *n == 0 {
                            group.future.remove(&task.start_at_ms);
                        }
                    }
                }
            }
            QueueKind::Refresh { .. } => {
                group.refresh.remove(&(task.start_at_ms, t));
            }
        }
        Some((t, g, task.start_at_ms))
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
            0,
        );
        let picked = b.pick("g", 10, 100, |_| true).task_ids;
        assert_eq!(picked, ids(&["new-high", "old-low", "old-low-2"]));
        // reserved tasks are not picked twice
        assert!(b.pick("g", 10, 100, |_| true).task_ids.is_empty());
        b.release(&picked[1..]);
        assert_eq!(b.pick("g", 5, 100, |_| true).task_ids, ids(&["old-low", "old-low-2"]), "released tasks return");
        // once granted, a task leaves the queue for good
        b.apply_effects(&[Effect::Dequeued(task("new-high", "g", 0, 20, 2))], 0, 0);
        b.release(&picked);
        assert_eq!(b.pick("g", 1, 2000, |_| true).task_ids, ids(&["future-high"]));
    }

    #[test]
    fn group_stats_count_each_set_and_grants_per_minute() {
        let b = Broker::new();
        let gated = || {
            let mut t = task("gated", "g", 0, 500_000, 5);
            t.kind = QueueKind::Gate;
            t
        };
        b.apply_effects(
            &[
                Effect::Queued(task("low-old", "g", 50, 10_000, 1)),
                Effect::Queued(task("high-new", "g", 0, 40_000, 2)),
                Effect::Queued(task("future", "g", 0, 1_000_000, 3)),
                Effect::Queued(task("granted", "g", 0, 5_000, 4)),
                Effect::Queued(gated()),
                Effect::Queued(task("other", "h", 0, 90_000, 6)),
            ],
            0,
            0,
        );
        // One grant in minute 0 of the monotonic clock, one in minute 2.
        b.apply_effects(
            &[
                Effect::Dequeued(task("granted", "g", 0, 5_000, 4)),
                Effect::LeaseStarted { task_id: id("granted"), lease_ms: 1, attempt_number: 1, granted_at_ms: 0 },
            ],
            59_999,
            0,
        );
        b.apply_effects(
            &[
                Effect::Dequeued(task("other", "h", 0, 90_000, 6)),
                Effect::LeaseStarted { task_id: id("other"), lease_ms: 1, attempt_number: 1, granted_at_ms: 0 },
            ],
            150_000,
            0,
        );
        let stats = b.group_stats(100_000, 150_000);
        assert_eq!(stats.len(), 2);
        let g = &stats[0];
        assert_eq!((g.task_group.as_str(), g.ready, g.future, g.gated, g.refresh), ("g", 2, 1, 1, 0));
        assert_eq!(g.oldest_ready_start_ms, Some(10_000), "the oldest start across priorities");
        let mut expected = vec![0; THROUGHPUT_MINUTES];
        expected[THROUGHPUT_MINUTES - 3] = 1;
        assert_eq!(g.granted_per_minute, expected);
        assert_eq!(stats[1].granted_per_minute[THROUGHPUT_MINUTES - 1], 1);
        assert_eq!(stats[1].oldest_ready_start_ms, None);
        // Ten minutes later the ring has forgotten both grants.
        assert!(b.group_stats(100_000, 800_000).iter().all(|s| s.granted_per_minute.iter().all(|&n| n == 0)));
        assert_eq!(b.peek_ready("g", 5, 100_000), ids(&["high-new", "low-old"]));
        assert_eq!(
            b.peek_ready("g", 5, 2_000_000),
            ids(&["high-new", "future", "low-old"]),
            "due at 2,000 s: priority, then start"
        );
        let later = b.group_stats(2_000_000, 0);
        assert_eq!((later[0].ready, later[0].future), (3, 0), "the future attempt became ready");
        b.apply_effects(&[Effect::Dequeued(gated())], 0, 0);
        assert_eq!(b.group_stats(100_000, 0)[0].gated, 0);
    }

    #[test]
    fn leadership_only_extends_leases() {
        let b = Broker::new();
        b.apply_effects(
            &[Effect::LeaseStarted { task_id: id("t"), lease_ms: 40_000, attempt_number: 1, granted_at_ms: 0 }],
            10_000,
            0,
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
        b.apply_effects(&[Effect::Queued(task("a", "g", 0, 0, 1)), Effect::Queued(task("b", "g", 0, 0, 2))], 0, 0);
        let only_b = id("b");
        assert_eq!(b.pick("g", 10, 0, |t| t == only_b).task_ids, ids(&["b"]));
        assert_eq!(b.pick("g", 10, 0, |_| true).task_ids, ids(&["a"]), "b is reserved");
        assert!(!b.extend_lease("not-a-uuid", 0, 1_000));
        assert_eq!(b.sizes(), (2, 0));
    }
}
