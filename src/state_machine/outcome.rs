//! What applying a command returns: a business result or a rejection value,
//! plus the effects the leader's broker needs to keep its in-memory queues in
//! step with the applied state. A rejection changes nothing.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::job::{JobKey, JobStatus, Limit, Ms, QueuedTask};

pub type ApplyResult = Result<Output, Rejection>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Output {
    Done,
    Enqueued {
        id: String,
    },
    /// ImportJob: the stored job's status.
    Imported {
        id: String,
        status: JobStatus,
    },
    Granted {
        tasks: Vec<TaskView>,
        refresh_tasks: Vec<RefreshView>,
    },
    /// One result per op of a Batch, in order.
    Batch(Vec<ApplyResult>),
    /// Number of records removed (ResetAll).
    Removed {
        count: u64,
    },
}

/// A leased attempt as delivered to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub task_id: String,
    pub job: JobKey,
    pub attempt_number: u32,
    pub relative_attempt_number: u32,
    pub is_last_attempt: bool,
    pub metadata: BTreeMap<String, String>,
    pub limits: Vec<Limit>,
    pub payload: Vec<u8>,
    pub priority: u32,
    pub task_group: String,
    pub lease_ms: Ms,
}

/// A floating-limit refresh task as delivered to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshView {
    pub task_id: String,
    /// Shard and tenant of the floating limit (empty id).
    pub owner: JobKey,
    pub queue_key: String,
    pub current_max_concurrency: u32,
    pub last_refreshed_at_ms: Ms,
    pub metadata: BTreeMap<String, String>,
    pub task_group: String,
    pub lease_ms: Ms,
}

/// Business rejections, each mapped to one gRPC status in `grpc::status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("job not found")]
    JobNotFound,
    #[error("job already exists with id {id}")]
    JobAlreadyExists { id: String },
    #[error("lease not found")]
    LeaseNotFound,
    #[error("job is already cancelled")]
    AlreadyCancelled,
    #[error("job is already in terminal state")]
    AlreadyTerminal,
    #[error("cannot restart job {id}: {reason} (status: {})", status.name())]
    CannotRestart { id: String, reason: String, status: JobStatus },
    #[error("cannot expedite job {id}: {reason} (status: {})", status.name())]
    CannotExpedite { id: String, reason: String, status: JobStatus },
    #[error("cannot lease job {id}: {reason} (status: {})", status.name())]
    CannotLease { id: String, reason: String, status: JobStatus },
    /// An import's attempts break Silo's rule (INVALID_ARGUMENT).
    #[error("{reason}")]
    InvalidImport { reason: String },
    #[error("cannot reimport job {id}: {reason} (status: {})", status.name())]
    CannotReimport { id: String, reason: String, status: JobStatus },
    #[error("cannot delete job {id}: job is currently running or has pending requests")]
    DeleteInProgress { id: String },
    #[error("shard map is already initialised")]
    ShardsAlreadyInitialised,
    #[error("a batch cannot contain a batch")]
    NestedBatch,
    /// The op carries a value the store cannot hold (see `bounds`).
    #[error("{field} cannot be stored: {reason}")]
    Unstorable { field: String, reason: String },
}

/// Changes to the schedulable set, in apply order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A pending attempt entered the queue (or was re-keyed: same task id).
    Queued(QueuedTask),
    /// A queued task left the queue (leased, cancelled, deleted, re-keyed):
    /// the entry as it was queued, so the broker finds its place without
    /// keeping a map of every task.
    Dequeued(QueuedTask),
    /// A lease began; the broker starts its clock.
    /// `lease_ms` is its length: the broker runs the clock on its own
    /// monotonic time (the stamped time only orders the log).
    /// `attempt_number` (0 for a floating-limit refresh) and `granted_at_ms`
    /// (the command's stamped time) feed the leader's metrics.
    LeaseStarted { task_id: String, lease_ms: Ms, attempt_number: u32, granted_at_ms: Ms },
    /// A lease ended (reported, expired).
    LeaseEnded { task_id: String },
    /// A job reached a terminal status (Succeeded, Failed or Cancelled) by a
    /// report, an expiry, a cancellation or a limit; imports do not emit it.
    Finished { status: JobStatus },
    /// Every job was wiped.
    Reset,
}
