//! Records stored by the state machine. Plain data: no behaviour beyond small
//! derived views, so the ops files read as the whole story of each transition.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::retry::RetryPolicy;

/// Milliseconds since the Unix epoch (leader-stamped) or a duration in ms.
pub type Ms = i64;

/// Identity of a job: the shard it was addressed to, its tenant and its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobKey {
    pub shard: u32,
    pub tenant: String,
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    Scheduled,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Scheduled => "Scheduled",
            JobStatus::Running => "Running",
            JobStatus::Succeeded => "Succeeded",
            JobStatus::Failed => "Failed",
            JobStatus::Cancelled => "Cancelled",
        }
    }
    /// Succeeded, Failed or Cancelled: no attempt is pending or running.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// Limits are stored exactly as enqueued and echoed back; enforcement comes with
/// the limits issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Limit {
    Concurrency {
        key: String,
        max_concurrency: u32,
    },
    RateLimit(RateLimit),
    FloatingConcurrency {
        key: String,
        default_max_concurrency: u32,
        refresh_interval_ms: Ms,
        metadata: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub name: String,
    pub unique_key: String,
    pub limit: i64,
    pub duration_ms: Ms,
    pub hits: i32,
    /// 0 = token bucket, 1 = leaky bucket.
    pub algorithm: i32,
    pub behavior: i32,
    pub retry_initial_backoff_ms: Ms,
    pub retry_max_backoff_ms: Ms,
    pub retry_backoff_multiplier: f64,
    pub retry_max_retries: u32,
}

/// The attempt a Scheduled job is waiting to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub task_id: String,
    pub attempt_number: u32,
    /// Scheduling order key (and the earliest time the walk through the
    /// limits may begin). Granting a slot later never moves it.
    pub start_at_ms: Ms,
    /// Index of the next limit to pass; `limits.len()` once all passed.
    pub limit_stage: u32,
    /// Over-limit checks of the current rate limit so far.
    pub rate_checks: u32,
    pub gate: Gate,
}

/// Where a pending attempt stands with respect to its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gate {
    /// Every limit passed (or none): leasable once `start_at_ms ≤ now`.
    Ready,
    /// Waiting for a time before walking on from `limit_stage` (a future start
    /// or a rate-limit re-check): the broker proposes AcquireLimits then.
    Timer { at_ms: Ms },
    /// Parked as a requester on a concurrency queue.
    Waiting { slot: Slot },
}

/// A concurrency queue of the job's tenant: fixed or floating, by key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Slot {
    pub floating: bool,
    pub key: String,
}

/// A job without its payload (stored under its own key, written once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub key: JobKey,
    pub task_group: String,
    pub priority: u32,
    pub enqueue_time_ms: Ms,
    pub retry_policy: Option<RetryPolicy>,
    pub limits: Vec<Limit>,
    pub metadata: BTreeMap<String, String>,
    pub status: JobStatus,
    pub status_changed_at_ms: Ms,
    /// The cancellation record: set by CancelJob, cleared by RestartJob.
    pub cancelled_at_ms: Option<Ms>,
    /// Highest attempt number ever started (0 = none yet).
    pub last_attempt_number: u32,
    /// Attempt numbers above this belong to the current run (restart moves it).
    pub run_base_attempt: u32,
    /// Set exactly while the job is Scheduled.
    pub pending: Option<Pending>,
    /// Task id of the leased attempt; set exactly while the job is Running.
    pub running_task: Option<String>,
    /// Concurrency slots held by the current (pending or running) attempt.
    pub held_slots: Vec<Slot>,
    /// Enqueue order within the cluster; the last tie-breaker of scheduling.
    pub seq: u64,
}

impl Job {
    pub fn relative(&self, attempt_number: u32) -> u32 {
        attempt_number.saturating_sub(self.run_base_attempt)
    }
    /// Attempts allowed per run: retry_count + 1, or 1 without a policy.
    pub fn attempts_per_run(&self) -> u32 {
        self.retry_policy.as_ref().map_or(1, |p| p.retry_count.saturating_add(1))
    }
    pub fn is_last_attempt(&self, attempt_number: u32) -> bool {
        self.relative(attempt_number) >= self.attempts_per_run()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt_number: u32,
    pub task_id: String,
    pub status: AttemptStatus,
    pub started_at_ms: Ms,
    pub finished_at_ms: Option<Ms>,
    pub result: Option<Vec<u8>>,
    pub error_code: Option<String>,
    pub error_data: Option<Vec<u8>>,
}

/// A worker's hold on one running attempt. The authoritative deadline lives in
/// the leader's broker (heartbeats extend it in memory); `granted_at_ms` and
/// `lease_ms` seed it when a leader rebuilds its broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub task_id: String,
    /// The job (for refresh leases: shard and tenant of the floating limit, empty id).
    pub job: JobKey,
    pub kind: LeaseKind,
    pub attempt_number: u32,
    pub worker_id: String,
    pub granted_at_ms: Ms,
    pub lease_ms: Ms,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseKind {
    Attempt,
    /// A floating-limit refresh task for this key.
    Refresh {
        key: String,
    },
}

/// What a queue-index entry stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueKind {
    /// A pending attempt with every limit passed: leasable when due.
    Attempt,
    /// A pending attempt whose walk through its limits resumes when due
    /// (never handed to a worker).
    Gate,
    /// A floating-limit refresh task: leasable, returned in `refresh_tasks`.
    Refresh { key: String },
}

/// Index entry of a pending attempt, everything the broker needs to order it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedTask {
    pub task_id: String,
    pub job: JobKey,
    pub kind: QueueKind,
    pub task_group: String,
    pub priority: u32,
    /// When it becomes due (for Gate entries: when the walk resumes).
    pub start_at_ms: Ms,
    pub seq: u64,
    /// The pending attempt's number (0 for refresh tasks).
    pub attempt_number: u32,
}

/// How many tasks of one task group are queued, by kind (the `O 3` record:
/// the broker's sizes after a restart, without counting the queue).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    pub attempts: u64,
    pub gates: u64,
    pub refresh: u64,
}

impl QueueCounts {
    /// The counter of `kind`.
    pub fn of(&mut self, kind: &QueueKind) -> &mut u64 {
        match kind {
            QueueKind::Attempt => &mut self.attempts,
            QueueKind::Gate => &mut self.gates,
            QueueKind::Refresh { .. } => &mut self.refresh,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == QueueCounts::default()
    }
}

/// One shard of the tenant-hash space (SEMANTICS §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    pub id: String,
    /// Inclusive lower bound, 16 lowercase hex digits; empty = unbounded.
    pub range_start: String,
    /// Exclusive upper bound; empty = unbounded.
    pub range_end: String,
}

/// Per-shard counters reported by GetNodeInfo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCounters {
    pub total_jobs: i64,
    pub completed_jobs: i64,
    pub created_at_ms: Ms,
}

/// State of one concurrency queue (tenant, slot) while it has holders or
/// waiters; removed when both drop to zero, so idle keys cost nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    pub holders: u32,
    /// Multiset of the `max_concurrency` values carried by waiting requests
    /// (fixed queues): lets a release stop scanning once no waiter could fit.
    pub waiting_max: BTreeMap<u32, u32>,
    pub waiters: u32,
}

/// Shared state of a floating concurrency limit (tenant, key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingState {
    pub current_max: u32,
    pub last_refreshed_at_ms: Ms,
    pub refresh_interval_ms: Ms,
    pub metadata: BTreeMap<String, String>,
    /// Task id of the scheduled or leased refresh task.
    pub refresh_task: Option<String>,
    /// Consecutive refresh failures.
    pub failures: u32,
    /// No refresh before this time (failure backoff).
    pub retry_at_ms: Ms,
    /// Task group refresh tasks go to (that of the job that created the state).
    pub task_group: String,
}

/// A rate-limit bucket (name, unique key), global across tenants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bucket {
    /// Fixed window: `remaining` hits until `reset_at_ms`.
    Token { remaining: i64, reset_at_ms: Ms },
    /// Continuous leak: `level` in hit·ms units, as of `at_ms`.
    Leaky { level: i128, at_ms: Ms },
}
