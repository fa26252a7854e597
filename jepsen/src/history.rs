//! The operation history: every client operation recorded twice, once when it
//! is invoked and once when it completes, as Jepsen records them.
//!
//! Completion types follow Jepsen: `ok` (it happened), `fail` (it certainly did
//! not happen: a redirect, a validation error, a definite refusal) and `info`
//! (indeterminate: a timeout or a lost connection after the request was sent;
//! it may or may not have taken effect, now or later). Nemesis actions are
//! recorded too, with `process = NEMESIS`, so checkers and plots see the
//! fault windows.
//!
//! Times are milliseconds since the test started, from a monotonic clock
//! (`time_ms`), so they order events on this one machine. Every op names the
//! node (`n1`, `n2`, …) its request went to; for a redirected call, the node
//! that answered last.
//!
//! The history is written as JSON lines (`history.jsonl`, one [`Op`] a line)
//! and exported as EDN (`history.edn`, see `edn.rs`).
use serde::{Deserialize, Serialize};

/// The process number of the nemesis.
pub const NEMESIS: i64 = -1;

/// Jepsen's completion types, plus `invoke`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

impl OpType {
    /// Jepsen's keyword name: `invoke`, `ok`, `fail`, `info`.
    pub fn name(self) -> &'static str {
        match self {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        }
    }
}

/// What an operation does (Jepsen's `:f`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum F {
    /// Enqueue one job. Invoke value: [`Value::Enqueue`]; ok: the same with the
    /// job id the server answered (a server-chosen id is known only then).
    Enqueue,
    /// LeaseTasks. Invoke: [`Value::Lease`] with no tasks; ok: the tasks granted.
    Lease,
    /// Heartbeat of one task. Invoke/ok: [`Value::Task`]; ok carries `cancelled`.
    Heartbeat,
    /// ReportOutcome of one task. [`Value::Report`].
    Report,
    /// CancelJob / RestartJob / ExpediteJob / DeleteJob: [`Value::Job`].
    Cancel,
    Restart,
    Expedite,
    Delete,
    /// GetJob (linearizable read). Invoke: [`Value::Job`]; ok: [`Value::Read`].
    Read,
    /// The reads after the heal and drain (same shape as `Read`).
    FinalRead,
    /// A nemesis action starting a fault. [`Value::Fault`].
    StartFault,
    /// A nemesis action undoing a fault. [`Value::Fault`].
    StopFault,
}

/// One task as granted by LeaseTasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub job_id: String,
    pub task_id: String,
    /// `Task.attempt_number` (counts across restarts).
    pub attempt: u32,
    pub lease_ms: i64,
    /// The token carried in the job's payload: `"<process>:<op index>"` of the
    /// enqueue invoke that created it (see [`Value::Enqueue::token`]).
    pub token: String,
}

/// The outcome a worker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Cancelled,
}

/// Job status as read, or `NotFound`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Status {
    Scheduled,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    NotFound,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }
}

/// The value of an op; which variant goes with which [`F`] is said there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Value {
    Enqueue {
        /// The id: chosen by the caller (known at invoke), or by the server
        /// (None at invoke, filled in on ok).
        job_id: Option<String>,
        caller_id: bool,
        /// Unique token stored in the payload, so a job whose enqueue answer
        /// was lost can still be attributed to the op that created it.
        token: String,
        /// Concurrency limit (key, max) when the job has one.
        limit: Option<(String, u32)>,
        /// Milliseconds in the future the job was scheduled to start.
        start_delay_ms: Option<i64>,
        /// Retry policy: number of retries (0 = none).
        retries: u32,
    },
    Lease {
        worker: String,
        tasks: Vec<Grant>,
    },
    Task {
        worker: String,
        job_id: String,
        task_id: String,
        attempt: u32,
        /// Heartbeat ok: the server says the job was cancelled.
        cancelled: Option<bool>,
    },
    Report {
        worker: String,
        job_id: String,
        task_id: String,
        attempt: u32,
        outcome: Outcome,
    },
    Job {
        job_id: String,
    },
    Read {
        job_id: String,
        status: Status,
        /// Number of attempts the job has (0 if none or not found).
        attempts: u32,
        /// `status_changed_at_ms` (leader-stamped, never decreasing per job).
        changed_at_ms: i64,
        /// Whether the read was served without the linearizable barrier.
        stale: bool,
    },
    Fault {
        /// Nemesis name, e.g. `partition-majority`, `kill`, `pause`, `clock`.
        nemesis: String,
        /// Human-readable detail: the nodes and what was done.
        detail: String,
        /// For leader faults, the node that led when the fault began.
        leader: Option<String>,
    },
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history, from 0.
    pub index: u64,
    /// Client process number, or [`NEMESIS`].
    pub process: i64,
    #[serde(rename = "type")]
    pub kind: OpType,
    pub f: F,
    /// Milliseconds since the test started (monotonic clock).
    pub time_ms: f64,
    /// The node the request went to (`n1`…), when there is one.
    pub node: Option<String>,
    pub value: Value,
    /// The error of a `fail` or `info` completion (gRPC code and message).
    pub error: Option<String>,
}

/// Pairs each completion with its invocation: for every op with
/// `kind != Invoke` and `process != NEMESIS`, the index of the invoke of the
/// same process that precedes it (a process has at most one op outstanding).
/// Returns `(invoke, Some(completion))` pairs in invoke order; an invoke
/// without completion (the test ended first) pairs with None and counts as
/// `info`.
pub fn pairs(history: &[Op]) -> Vec<(&Op, Option<&Op>)> {
    use std::collections::HashMap;
    let mut open: HashMap<i64, usize> = HashMap::new();
    let mut out: Vec<(&Op, Option<&Op>)> = Vec::new();
    for op in history {
        if op.process == NEMESIS {
            continue;
        }
        match op.kind {
            OpType::Invoke => {
                open.insert(op.process, out.len());
                out.push((op, None));
            }
            _ => {
                if let Some(i) = open.remove(&op.process) {
                    out[i].1 = Some(op);
                }
            }
        }
    }
    out
}

/// Reads a `history.jsonl` file.
pub fn read_jsonl(text: &str) -> Result<Vec<Op>, serde_json::Error> {
    text.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect()
}
