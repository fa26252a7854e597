//! The workload: client processes and the generator that decides what each
//! does next, from a per-process RNG seeded by the run's seed (so a seed fixes
//! every choice; the interleaving with the real servers of course varies).
//!
//! Processes and their roles (process numbers are stable for a given node
//! count):
//! - enqueuers: caller- and server-chosen ids; some jobs carry a concurrency
//!   limit (`k1` max 2, `k2` max 1; a tenth of the jobs), some start in the
//!   future, some retry;
//! - workers: lease, heartbeat and report. Some hold a task past its lease and
//!   report late, some crash mid-task (never report), some heartbeat through a
//!   long task, one talks only to one node and never follows redirects;
//! - cancellers, restarters, expediters, deleters on random known jobs;
//! - readers of job status on random nodes (leader or follower).
//!
//! After the time limit the generator stops every process but the workers,
//! which drain the queue with normal behaviour once the nemesis has healed.
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::history::{Grant, OpType, Outcome, Status as JobStatus, Value, F};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use silo::pb::silo as pb;

use crate::client::{classify, error_text, msgpack_str, token_of, Conns, Recorder};

/// Phases of a run, shared by every process.
pub const PHASE_RUN: u8 = 0;
pub const PHASE_DRAIN: u8 = 1;
pub const PHASE_STOP: u8 = 2;

pub const TASK_GROUP: &str = "jepsen";
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// LeaseTasks waits long: a grant delivered late must show up in the history.
const LEASE_TIMEOUT: Duration = Duration::from_secs(12);
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What every process shares.
pub struct Shared {
    pub rec: Arc<Recorder>,
    pub conns: Conns,
    pub phase: AtomicU8,
    /// Every job id known to exist or to have been enqueued (for reads and
    /// for the other processes' targets), in order of first sight.
    pub jobs: Mutex<(Vec<String>, BTreeSet<String>)>,
    /// ms (recorder time) when a worker last got a task or a lease error.
    pub last_busy_ms: Mutex<f64>,
    pub lease_ms: i64,
    pub seed: u64,
}

impl Shared {
    pub fn phase(&self) -> u8 {
        self.phase.load(Ordering::SeqCst)
    }

    pub fn remember(&self, id: &str) {
        let mut j = self.jobs.lock();
        if j.1.insert(id.to_string()) {
            j.0.push(id.to_string());
        }
    }

    pub fn known_jobs(&self) -> Vec<String> {
        self.jobs.lock().0.clone()
    }

    fn pick_job(&self, rng: &mut SmallRng) -> Option<String> {
        let j = self.jobs.lock();
        let n = j.0.len();
        if n == 0 {
            return None;
        }
        // Half the time one of the 50 newest (they are the ones changing).
        let i = if rng.gen_bool(0.5) { n - 1 - rng.gen_range(0..n.min(50)) } else { rng.gen_range(0..n) };
        Some(j.0[i].clone())
    }

    fn busy(&self) {
        *self.last_busy_ms.lock() = self.rec.now_ms();
    }
}

/// The roles, in process-number order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Enqueuer,
    Worker(Behaviour),
    Canceller,
    Restarter,
    Expediter,
    Deleter,
    Reader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Normal,
    /// Holds some tasks past their lease without heartbeats, then reports.
    Slow,
    /// Abandons some tasks mid-way (a crashed worker process).
    Crashy,
    /// Heartbeats through tasks longer than the lease.
    LongRunning,
    /// Talks only to one node and never follows a redirect.
    Pinned,
}

pub fn roles() -> Vec<Role> {
    use Behaviour::*;
    vec![
        Role::Enqueuer,
        Role::Enqueuer,
        Role::Worker(Normal),
        Role::Worker(Normal),
        Role::Worker(Slow),
        Role::Worker(Crashy),
        Role::Worker(LongRunning),
        Role::Worker(Pinned),
        Role::Canceller,
        Role::Restarter,
        Role::Expediter,
        Role::Deleter,
        Role::Reader,
        Role::Reader,
    ]
}

/// Runs process `process` with `role` until the phase says stop.
pub async fn run_process(shared: Arc<Shared>, process: i64, role: Role) {
    let mut rng = SmallRng::seed_from_u64(shared.seed ^ (process as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let nodes = shared.conns.nodes();
    let mut node = nodes[rng.gen_range(0..nodes.len())];
    let mut counter = 0u64;
    loop {
        let phase = shared.phase();
        if phase == PHASE_STOP || (phase == PHASE_DRAIN && !matches!(role, Role::Worker(_))) {
            return;
        }
        counter += 1;
        match role {
            Role::Enqueuer => {
                enqueue(&shared, process, &mut rng, &mut node, counter).await;
                pause(&mut rng, 10, 40).await;
            }
            Role::Worker(b) => {
                let b = if phase == PHASE_DRAIN && b != Behaviour::Pinned { Behaviour::Normal } else { b };
                work(&shared, process, &mut rng, &mut node, b).await;
            }
            Role::Canceller => {
                job_op(&shared, process, &mut rng, &mut node, F::Cancel).await;
                pause(&mut rng, 150, 400).await;
            }
            Role::Restarter => {
                job_op(&shared, process, &mut rng, &mut node, F::Restart).await;
                pause(&mut rng, 150, 400).await;
            }
            Role::Expediter => {
                job_op(&shared, process, &mut rng, &mut node, F::Expedite).await;
                pause(&mut rng, 150, 400).await;
            }
            Role::Deleter => {
                job_op(&shared, process, &mut rng, &mut node, F::Delete).await;
                pause(&mut rng, 500, 1500).await;
            }
            Role::Reader => {
                let at = nodes[rng.gen_range(0..nodes.len())];
                if let Some(id) = shared.pick_job(&mut rng) {
                    read(&shared, process, at, &id, F::Read).await;
                }
                pause(&mut rng, 10, 60).await;
            }
        }
    }
}

async fn pause(rng: &mut SmallRng, lo_ms: u64, hi_ms: u64) {
    tokio::time::sleep(Duration::from_millis(rng.gen_range(lo_ms..=hi_ms))).await;
}

/// Moves a client to the next node after an error that names no leader.
fn rotate(shared: &Shared, node: &mut u64) {
    let nodes = shared.conns.nodes();
    let i = nodes.iter().position(|n| n == node).unwrap_or(0);
    *node = nodes[(i + 1) % nodes.len()];
}

async fn enqueue(shared: &Shared, process: i64, rng: &mut SmallRng, node: &mut u64, counter: u64) {
    let caller_id = rng.gen_bool(0.5);
    let job_id = caller_id.then(|| format!("j{}-{process}-{counter}", shared.seed % 100_000));
    let token = format!("{process}:{counter}");
    // Limited jobs arrive slower than one slot drains them (k2 serves ~5/s),
    // so the backlog behind a key stays bounded and the drain can finish.
    let limit =
        rng.gen_bool(0.1).then(|| if rng.gen_bool(0.5) { ("k1".to_string(), 2) } else { ("k2".to_string(), 1) });
    let start_delay_ms = rng.gen_bool(0.1).then(|| rng.gen_range(500..3000));
    let retries = if rng.gen_bool(0.3) { 2 } else { 0 };
    let value = Value::Enqueue {
        job_id: job_id.clone(),
        caller_id,
        token: token.clone(),
        limit: limit.clone(),
        start_delay_ms,
        retries,
    };
    let req = pb::EnqueueRequest {
        shard: shared.conns.shard.clone(),
        id: job_id.clone().unwrap_or_default(),
        priority: rng.gen_range(0..3) * 10,
        start_at_ms: start_delay_ms.map_or(0, |d| silo::wall_clock_ms() + d),
        retry_policy: (retries > 0).then_some(pb::RetryPolicy {
            retry_count: retries,
            initial_interval_ms: 200,
            max_interval_ms: 1000,
            randomize_interval: false,
            backoff_factor: 2.0,
        }),
        payload: Some(pb::SerializedBytes {
            encoding: Some(pb::serialized_bytes::Encoding::Msgpack(msgpack_str(&token))),
        }),
        limits: limit
            .iter()
            .map(|(key, max)| pb::Limit {
                limit: Some(pb::limit::Limit::Concurrency(pb::ConcurrencyLimit {
                    key: key.clone(),
                    max_concurrency: *max,
                })),
            })
            .collect(),
        tenant: None,
        metadata: Default::default(),
        task_group: TASK_GROUP.into(),
    };
    if let Some(id) = &job_id {
        shared.remember(id);
    }
    shared.rec.invoke(process, F::Enqueue, *node, value.clone());
    let (at, r) = shared
        .conns
        .call(*node, WRITE_TIMEOUT, true, |mut c| {
            let r = req.clone();
            async move { c.enqueue(r).await }
        })
        .await;
    match r {
        Ok(resp) => {
            shared.remember(&resp.id);
            let Value::Enqueue { caller_id, token, limit, start_delay_ms, retries, .. } = value else { unreachable!() };
            let v = Value::Enqueue { job_id: Some(resp.id), caller_id, token, limit, start_delay_ms, retries };
            shared.rec.complete(process, OpType::Ok, F::Enqueue, at, v, None);
            *node = at;
        }
        Err(s) => {
            shared.rec.complete(process, classify(&s, false), F::Enqueue, at, value, Some(error_text(&s)));
            rotate(shared, node);
        }
    }
}

fn grant_of(t: &pb::Task) -> Grant {
    Grant {
        job_id: t.job_id.clone(),
        task_id: t.id.clone(),
        attempt: t.attempt_number,
        lease_ms: t.lease_ms,
        token: token_of(t.payload.as_ref()),
    }
}

async fn work(shared: &Shared, process: i64, rng: &mut SmallRng, node: &mut u64, b: Behaviour) {
    let worker = format!("w{process}");
    let pinned = b == Behaviour::Pinned;
    if pinned {
        // A pinned worker keeps the node it drew at start.
    }
    let shard = (!pinned).then(|| shared.conns.shard.clone());
    let req = pb::LeaseTasksRequest {
        shard,
        worker_id: worker.clone(),
        max_tasks: rng.gen_range(1..=4),
        task_group: TASK_GROUP.into(),
        tenant: None,
    };
    shared.rec.invoke(process, F::Lease, *node, Value::Lease { worker: worker.clone(), tasks: vec![] });
    let (at, r) = shared
        .conns
        .call(*node, LEASE_TIMEOUT, !pinned, |mut c| {
            let r = req.clone();
            async move { c.lease_tasks(r).await }
        })
        .await;
    let tasks = match r {
        Ok(resp) => {
            let tasks = resp.tasks;
            let grants = tasks.iter().map(grant_of).collect();
            shared.rec.complete(
                process,
                OpType::Ok,
                F::Lease,
                at,
                Value::Lease { worker: worker.clone(), tasks: grants },
                None,
            );
            if !pinned {
                *node = at;
            }
            tasks
        }
        Err(s) => {
            shared.rec.complete(
                process,
                classify(&s, false),
                F::Lease,
                at,
                Value::Lease { worker: worker.clone(), tasks: vec![] },
                Some(error_text(&s)),
            );
            shared.busy();
            if !pinned {
                rotate(shared, node);
            }
            pause(rng, 50, 150).await;
            return;
        }
    };
    if tasks.is_empty() {
        pause(rng, 30, 80).await;
        return;
    }
    shared.busy();
    for t in &tasks {
        shared.remember(&t.job_id);
    }
    for t in tasks {
        handle(shared, process, rng, *node, &worker, &t, b).await;
        shared.busy();
    }
}

/// Works on one task as behaviour `b` says.
async fn handle(
    shared: &Shared,
    process: i64,
    rng: &mut SmallRng,
    node: u64,
    worker: &str,
    t: &pb::Task,
    b: Behaviour,
) {
    let lease = Duration::from_millis(shared.lease_ms.max(100) as u64);
    match b {
        Behaviour::Crashy if rng.gen_bool(0.3) => return, // never reports: the lease expires
        Behaviour::Slow if rng.gen_bool(0.3) => {
            tokio::time::sleep(lease + Duration::from_millis(rng.gen_range(100..1500))).await;
            report(shared, process, node, worker, t, Outcome::Success).await;
            return;
        }
        Behaviour::LongRunning if rng.gen_bool(0.5) => {
            let until = tokio::time::Instant::now() + lease.mul_f64(1.5);
            while tokio::time::Instant::now() < until {
                tokio::time::sleep(lease / 3).await;
                match heartbeat(shared, process, node, worker, t).await {
                    Some(false) => {}
                    Some(true) => {
                        report(shared, process, node, worker, t, Outcome::Cancelled).await;
                        return;
                    }
                    None => return, // lease lost: stop, never report
                }
            }
        }
        _ => {}
    }
    pause(rng, 0, 100).await;
    let cancelled = if rng.gen_bool(0.6) {
        match heartbeat(shared, process, node, worker, t).await {
            Some(c) => c,
            None => return,
        }
    } else {
        false
    };
    let outcome = if cancelled {
        Outcome::Cancelled
    } else if rng.gen_bool(0.85) {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    report(shared, process, node, worker, t, outcome).await;
}

/// Some(cancelled) when the heartbeat was accepted; None when refused.
async fn heartbeat(shared: &Shared, process: i64, node: u64, worker: &str, t: &pb::Task) -> Option<bool> {
    let value = |cancelled| Value::Task {
        worker: worker.into(),
        job_id: t.job_id.clone(),
        task_id: t.id.clone(),
        attempt: t.attempt_number,
        cancelled,
    };
    let req = pb::HeartbeatRequest {
        shard: t.shard.clone(),
        worker_id: worker.into(),
        task_id: t.id.clone(),
        tenant_id: t.tenant_id.clone(),
    };
    shared.rec.invoke(process, F::Heartbeat, node, value(None));
    let (at, r) = shared
        .conns
        .call(node, WRITE_TIMEOUT, true, |mut c| {
            let r = req.clone();
            async move { c.heartbeat(r).await }
        })
        .await;
    match r {
        Ok(resp) => {
            shared.rec.complete(process, OpType::Ok, F::Heartbeat, at, value(Some(resp.cancelled)), None);
            Some(resp.cancelled)
        }
        Err(s) => {
            shared.rec.complete(process, classify(&s, false), F::Heartbeat, at, value(None), Some(error_text(&s)));
            None
        }
    }
}

async fn report(shared: &Shared, process: i64, node: u64, worker: &str, t: &pb::Task, outcome: Outcome) {
    use pb::report_outcome_request::Outcome as O;
    let value = Value::Report {
        worker: worker.into(),
        job_id: t.job_id.clone(),
        task_id: t.id.clone(),
        attempt: t.attempt_number,
        outcome,
    };
    let o = match outcome {
        Outcome::Success => O::Success(pb::SerializedBytes {
            encoding: Some(pb::serialized_bytes::Encoding::Msgpack(msgpack_str("ok"))),
        }),
        Outcome::Failure => O::Failure(pb::Failure { code: "JEPSEN".into(), data: None }),
        Outcome::Cancelled => O::Cancelled(pb::Cancelled {}),
    };
    let req = pb::ReportOutcomeRequest {
        shard: t.shard.clone(),
        task_id: t.id.clone(),
        outcome: Some(o),
        tenant_id: t.tenant_id.clone(),
    };
    shared.rec.invoke(process, F::Report, node, value.clone());
    let (at, r) = shared
        .conns
        .call(node, WRITE_TIMEOUT, true, |mut c| {
            let r = req.clone();
            async move { c.report_outcome(r).await }
        })
        .await;
    match r {
        Ok(_) => shared.rec.complete(process, OpType::Ok, F::Report, at, value, None),
        Err(s) => shared.rec.complete(process, classify(&s, false), F::Report, at, value, Some(error_text(&s))),
    }
}

async fn job_op(shared: &Shared, process: i64, rng: &mut SmallRng, node: &mut u64, f: F) {
    let Some(id) = shared.pick_job(rng) else {
        pause(rng, 50, 100).await;
        return;
    };
    let shard = shared.conns.shard.clone();
    let value = Value::Job { job_id: id.clone() };
    shared.rec.invoke(process, f, *node, value.clone());
    let (at, r) = match f {
        F::Cancel => {
            let req = pb::CancelJobRequest { shard, id, tenant: None };
            let (at, r) = shared
                .conns
                .call(*node, WRITE_TIMEOUT, true, |mut c| {
                    let r = req.clone();
                    async move { c.cancel_job(r).await }
                })
                .await;
            (at, r.map(|_| ()))
        }
        F::Restart => {
            let req = pb::RestartJobRequest { shard, id, tenant: None };
            let (at, r) = shared
                .conns
                .call(*node, WRITE_TIMEOUT, true, |mut c| {
                    let r = req.clone();
                    async move { c.restart_job(r).await }
                })
                .await;
            (at, r.map(|_| ()))
        }
        F::Expedite => {
            let req = pb::ExpediteJobRequest { shard, id, tenant: None };
            let (at, r) = shared
                .conns
                .call(*node, WRITE_TIMEOUT, true, |mut c| {
                    let r = req.clone();
                    async move { c.expedite_job(r).await }
                })
                .await;
            (at, r.map(|_| ()))
        }
        F::Delete => {
            let req = pb::DeleteJobRequest { shard, id, tenant: None };
            let (at, r) = shared
                .conns
                .call(*node, WRITE_TIMEOUT, true, |mut c| {
                    let r = req.clone();
                    async move { c.delete_job(r).await }
                })
                .await;
            (at, r.map(|_| ()))
        }
        other => unreachable!("not a job op: {other:?}"),
    };
    match r {
        Ok(()) => {
            shared.rec.complete(process, OpType::Ok, f, at, value, None);
            *node = at;
        }
        Err(s) => {
            let kind = classify(&s, false);
            shared.rec.complete(process, kind, f, at, value, Some(error_text(&s)));
            if kind == OpType::Info || crate::client::is_redirect(&s) {
                rotate(shared, node);
            }
        }
    }
}

fn status_of(s: i32) -> JobStatus {
    match pb::JobStatus::try_from(s) {
        Ok(pb::JobStatus::Scheduled) => JobStatus::Scheduled,
        Ok(pb::JobStatus::Running) => JobStatus::Running,
        Ok(pb::JobStatus::Succeeded) => JobStatus::Succeeded,
        Ok(pb::JobStatus::Failed) => JobStatus::Failed,
        Ok(pb::JobStatus::Cancelled) => JobStatus::Cancelled,
        Err(_) => JobStatus::NotFound,
    }
}

/// GetJob on `node` (no redirect: every node serves linearizable reads).
/// Returns true when the read completed ok.
pub async fn read(shared: &Shared, process: i64, node: u64, id: &str, f: F) -> bool {
    let req = pb::GetJobRequest {
        shard: shared.conns.shard.clone(),
        id: id.to_string(),
        tenant: None,
        include_attempts: true,
    };
    shared.rec.invoke(process, f, node, Value::Job { job_id: id.to_string() });
    let (at, r) = shared
        .conns
        .call(node, READ_TIMEOUT, false, |mut c| {
            let r = req.clone();
            async move { c.get_job(r).await }
        })
        .await;
    let read = |status, attempts, changed_at_ms| Value::Read {
        job_id: id.to_string(),
        status,
        attempts,
        changed_at_ms,
        stale: false,
    };
    match r {
        Ok(j) => {
            let v = read(status_of(j.status), j.attempts.len() as u32, j.status_changed_at_ms);
            shared.rec.complete(process, OpType::Ok, f, at, v, None);
            true
        }
        Err(s) if s.code() == tonic::Code::NotFound && !crate::client::is_redirect(&s) => {
            shared.rec.complete(process, OpType::Ok, f, at, read(JobStatus::NotFound, 0, 0), None);
            true
        }
        Err(s) => {
            shared.rec.complete(
                process,
                OpType::Fail,
                f,
                at,
                Value::Job { job_id: id.to_string() },
                Some(error_text(&s)),
            );
            false
        }
    }
}
