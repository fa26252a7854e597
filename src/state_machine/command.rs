//! Commands: the only way state changes. Each is a Raft log entry; `now_ms` is
//! the proposing leader's wall clock, which the state machine keeps monotonic.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::job::{JobKey, Limit, Ms, ShardSpec};
use super::retry::RetryPolicy;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub now_ms: Ms,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Create the shard map once, when a fresh cluster elects its first leader.
    InitShards {
        shards: Vec<ShardSpec>,
    },
    Enqueue(NewJob),
    /// The broker's pick for one LeaseTasks call: one entry however many tasks.
    GrantLeases {
        worker_id: String,
        task_ids: Vec<String>,
        lease_ms: Ms,
    },
    /// LeaseTask test helper: lease this job's pending attempt now.
    LeaseJob {
        job: JobKey,
        worker_id: String,
        lease_ms: Ms,
    },
    ReportOutcome {
        task_id: String,
        outcome: Outcome,
    },
    /// Reap leases whose deadline passed on the leader's clock.
    ExpireLeases {
        leases: Vec<ExpiredLease>,
    },
    CancelJob {
        job: JobKey,
    },
    RestartJob {
        job: JobKey,
    },
    ExpediteJob {
        job: JobKey,
    },
    DeleteJob {
        job: JobKey,
    },
    /// ResetShards (dev mode): wipe every job, keep the shard map.
    ResetAll,
    /// Resume the walk through their limits of pending attempts whose gate
    /// time came (future start or rate-limit re-check), as seen by the leader.
    AcquireLimits {
        task_ids: Vec<String>,
    },
    /// A worker finished a floating-limit refresh task.
    ReportRefreshOutcome {
        task_id: String,
        outcome: RefreshOutcome,
    },
    /// Drop every concurrency-slot holder of a tenant so stuck queues grant again.
    DropTenantHolders {
        shard: u32,
        tenant: String,
    },
    /// ImportJobs: create a job with its history of finished attempts.
    ImportJob {
        job: NewJob,
        enqueue_time_ms: Ms,
        attempts: Vec<ImportedAttempt>,
    },
    /// Retention: delete up to `max` terminal jobs that finished before `before_ms`.
    PurgeTerminal {
        before_ms: Ms,
        max: u32,
    },
    /// Proposals that queued up together, applied in order (group commit).
    Batch(Vec<Op>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefreshOutcome {
    Success { new_max_concurrency: u32 },
    Failure { code: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    pub key: JobKey,
    pub task_group: String,
    pub priority: u32,
    /// `<= 0` means now.
    pub start_at_ms: Ms,
    pub retry_policy: Option<RetryPolicy>,
    pub payload: Vec<u8>,
    pub limits: Vec<Limit>,
    pub metadata: BTreeMap<String, String>,
}

/// A finished attempt of an imported job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedAttempt {
    pub status: super::job::AttemptStatus,
    pub started_at_ms: Ms,
    pub finished_at_ms: Ms,
    pub result: Option<Vec<u8>>,
    pub error_code: Option<String>,
    pub error_data: Option<Vec<u8>>,
}

/// What a worker reports for an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Success { result: Vec<u8> },
    Failure { code: String, data: Vec<u8> },
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredLease {
    pub task_id: String,
    /// The deadline the leader observed passing (reported in the error blob).
    pub deadline_ms: Ms,
}

impl Op {
    /// snake_case name shared by the op's file, metric label and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::InitShards { .. } => "init_shards",
            Op::Enqueue(_) => "enqueue",
            Op::GrantLeases { .. } => "grant_leases",
            Op::LeaseJob { .. } => "lease_job",
            Op::ReportOutcome { .. } => "report_outcome",
            Op::ExpireLeases { .. } => "expire_leases",
            Op::CancelJob { .. } => "cancel_job",
            Op::RestartJob { .. } => "restart_job",
            Op::ExpediteJob { .. } => "expedite_job",
            Op::DeleteJob { .. } => "delete_job",
            Op::ResetAll => "reset_all",
            Op::AcquireLimits { .. } => "acquire_limits",
            Op::ReportRefreshOutcome { .. } => "report_refresh_outcome",
            Op::DropTenantHolders { .. } => "drop_tenant_holders",
            Op::PurgeTerminal { .. } => "purge_terminal",
            Op::ImportJob { .. } => "import_job",
            Op::Batch(_) => "batch",
        }
    }
}
