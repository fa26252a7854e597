//! Checkers: each reads a whole history and returns a [`Verdict`].
//!
//! All checkers share one reading of the history (`Facts`), built once by
//! [`check_all`]. Conventions, as in Jepsen:
//!
//! - Completions are paired with invocations by [`history::pairs`]; an invoke
//!   without completion counts as `info`.
//! - `fail`: the operation certainly did not take effect.
//! - `ok`: it took effect at one instant between its invoke and completion.
//! - `info`: it may or may not take effect, at any instant after its invoke,
//!   up to the end of the history. So when a rule asks "could it have happened
//!   before X", the effective completion time of an `info` op is the end of the
//!   history (`Call::latest_ms`).
//!
//! Times are the history's milliseconds since the test started. Nemesis ops
//! are ignored here (they are not client operations).
//!
//! The checkers, in the order [`check_all`] runs them:
//! (a) [`lost`] — every acknowledged job ends terminal, nothing appears from
//!     nowhere; (b) [`duplicates`] — a job succeeds once per run, terminal
//!     states are left only by restart or delete; (c) [`leases`] — a task or an
//!     attempt is handed out once, and never after the job moved on;
//! (d) [`limits`] — concurrency limits hold; (e) [`linearizable`] — GetJob
//! reads are linearizable against a versioned per-job register.
use std::collections::HashMap;

use serde::Serialize;

use crate::history::{self, Grant, Op, OpType, Outcome, Status, Value, F};

pub mod duplicates;
pub mod leases;
pub mod limits;
pub mod linearizable;
pub mod lost;

/// What the checkers need to know about the servers under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CheckContext {
    /// The servers' lease length in milliseconds (a lease expires this long
    /// after its last accepted heartbeat). Used in explanations only: the
    /// rules here do not need it, since every interval they use is bounded by
    /// observed operations.
    pub lease_ms: i64,
}

/// At most this many error messages are kept in a [`Verdict`]; the count of
/// all errors is [`Verdict::error_count`].
pub const MAX_ERRORS: usize = 50;

/// The result of one checker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The checker's name, e.g. `lost-and-phantom`.
    pub name: String,
    /// True when no error was found.
    pub valid: bool,
    /// The number of errors found (may exceed `errors.len()`).
    pub error_count: usize,
    /// The first [`MAX_ERRORS`] errors, each starting with the name of the
    /// rule it breaks (`lost: …`) and naming the job, the op indexes and the
    /// times in ms, so it can be read without the code.
    pub errors: Vec<String>,
    /// Statistics, e.g. `checked 1234 jobs`.
    pub notes: Vec<String>,
}

impl Verdict {
    /// An empty, valid verdict named `name`.
    pub fn new(name: &str) -> Verdict {
        Verdict { name: name.to_string(), valid: true, error_count: 0, errors: Vec::new(), notes: Vec::new() }
    }

    /// Records one error: counts it, keeps the message if fewer than
    /// [`MAX_ERRORS`] are kept, and makes the verdict invalid.
    pub fn error(&mut self, message: String) {
        self.valid = false;
        self.error_count += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(message);
        }
    }

    /// Adds a note (statistics, caveats).
    pub fn note(&mut self, message: String) {
        self.notes.push(message);
    }
}

/// Runs the checkers (a) to (e) in that order on `history`.
pub fn check_all(history: &[Op], ctx: &CheckContext) -> Vec<Verdict> {
    let facts = Facts::new(history);
    vec![
        lost::check_facts(&facts, ctx),
        duplicates::check_facts(&facts, ctx),
        leases::check_facts(&facts, ctx),
        limits::check_facts(&facts, ctx),
        linearizable::check_facts(&facts, ctx),
    ]
}

/// One client operation: its invoke and, when it came, its completion.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub inv: &'a Op,
    pub comp: Option<&'a Op>,
    /// The end of the history (ms), for `info` ops.
    pub end_ms: f64,
}

impl<'a> Call<'a> {
    /// The completion type; a missing completion is `info`.
    pub fn kind(&self) -> OpType {
        self.comp.map_or(OpType::Info, |c| c.kind)
    }
    pub fn is_ok(&self) -> bool {
        self.kind() == OpType::Ok
    }
    pub fn is_fail(&self) -> bool {
        self.kind() == OpType::Fail
    }
    /// Invoke time (ms): the earliest instant the op could take effect.
    pub fn inv_ms(&self) -> f64 {
        self.inv.time_ms
    }
    /// The latest instant the op could take effect: its completion time, or
    /// the end of the history when it is `info` (or never completed).
    pub fn latest_ms(&self) -> f64 {
        match self.comp {
            Some(c) if c.kind != OpType::Info => c.time_ms,
            _ => self.end_ms,
        }
    }
    /// Completion time (ms) of a completed op, else the end of the history.
    pub fn comp_ms(&self) -> f64 {
        self.comp.map_or(self.end_ms, |c| c.time_ms)
    }
    /// `op I/J`: the invoke and completion indexes, for messages.
    pub fn ops(&self) -> String {
        match self.comp {
            Some(c) => format!("op {}/{}", self.inv.index, c.index),
            None => format!("op {}/-", self.inv.index),
        }
    }
    /// `[inv, comp] ms (type)`, for messages.
    pub fn span(&self) -> String {
        match self.comp {
            Some(c) => format!("[{:.1}, {:.1}] ms ({})", self.inv.time_ms, c.time_ms, kind_name(c.kind)),
            None => format!("[{:.1}, -] ms (no completion)", self.inv.time_ms),
        }
    }
    /// The job the op is about: from the completion's value when ok (an
    /// enqueue with a server-chosen id knows it only then), else from the
    /// invoke's. None for Lease ops and unknown enqueue ids.
    pub fn job_id(&self) -> Option<&'a str> {
        if let Some(c) = self.comp {
            if c.kind == OpType::Ok {
                if let Some(id) = value_job_id(&c.value) {
                    return Some(id);
                }
            }
        }
        value_job_id(&self.inv.value)
    }
}

/// Lower-case name of an op type, as in the history files.
pub(crate) fn kind_name(kind: OpType) -> &'static str {
    match kind {
        OpType::Invoke => "invoke",
        OpType::Ok => "ok",
        OpType::Fail => "fail",
        OpType::Info => "info",
    }
}

fn value_job_id(v: &Value) -> Option<&str> {
    match v {
        Value::Enqueue { job_id, .. } => job_id.as_deref(),
        Value::Task { job_id, .. }
        | Value::Report { job_id, .. }
        | Value::Job { job_id }
        | Value::Read { job_id, .. } => Some(job_id),
        Value::Lease { .. } | Value::Fault { .. } => None,
    }
}

/// One enqueue call, with what the checkers need from its values.
#[derive(Debug, Clone)]
pub(crate) struct Enqueue<'a> {
    pub call: Call<'a>,
    /// The job id when known: the caller's, or the server's from an ok.
    pub job_id: Option<&'a str>,
    pub token: &'a str,
    /// `(key, max)` from the invoke value.
    pub limit: Option<(&'a str, u32)>,
}

/// One task granted by an ok Lease op.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GrantAt<'a> {
    pub lease: Call<'a>,
    pub grant: &'a Grant,
    /// When the grant was delivered: the Lease op's ok completion time.
    pub delivered_ms: f64,
}

impl GrantAt<'_> {
    /// `task T attempt A (lease op I/J, delivered at X ms)`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "task {} attempt {} (lease {}, delivered at {:.1} ms)",
            self.grant.task_id,
            self.grant.attempt,
            self.lease.ops(),
            self.delivered_ms
        )
    }
}

/// One ok GetJob read (Read or FinalRead).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadAt<'a> {
    pub call: Call<'a>,
    pub f: F,
    pub job_id: &'a str,
    pub status: Status,
    pub attempts: u32,
    pub changed_at_ms: i64,
    pub stale: bool,
}

impl ReadAt<'_> {
    /// Invoke time (ms).
    pub fn inv_ms(&self) -> f64 {
        self.call.inv_ms()
    }
    /// Completion time (ms); reads here are ok, so this is a real time.
    pub fn comp_ms(&self) -> f64 {
        self.call.comp_ms()
    }
    pub fn found(&self) -> bool {
        self.status != Status::NotFound
    }
    /// `read op I/J [a, b] ms saw Succeeded attempts=2 changed_at=123`.
    pub fn describe(&self) -> String {
        let what = if self.f == F::FinalRead { "final read" } else { "read" };
        format!(
            "{what} {} {} saw {:?} attempts={} changed_at={}",
            self.call.ops(),
            self.call.span(),
            self.status,
            self.attempts,
            self.changed_at_ms
        )
    }
}

/// A heartbeat or report of one task attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskCall<'a> {
    pub call: Call<'a>,
    pub job_id: &'a str,
    pub task_id: &'a str,
    pub attempt: u32,
    /// Some for reports, None for heartbeats.
    pub outcome: Option<Outcome>,
}

impl TaskCall<'_> {
    /// `heartbeat op I/J [a, b] ms (ok) of task T attempt A`.
    pub fn describe(&self) -> String {
        let what = match self.outcome {
            None => "heartbeat".to_string(),
            Some(o) => format!("{o:?} report").to_lowercase(),
        };
        format!("{what} {} {} of task {} attempt {}", self.call.ops(), self.call.span(), self.task_id, self.attempt)
    }
}

/// Everything the checkers read from a history, indexed once.
#[derive(Debug)]
pub(crate) struct Facts<'a> {
    /// All enqueue calls, in invoke order.
    pub enqueues: Vec<Enqueue<'a>>,
    /// Token → indexes into `enqueues` (one, unless the workload reused one).
    pub by_token: HashMap<&'a str, Vec<usize>>,
    /// Job id → indexes into `enqueues` of the enqueues known to name it.
    pub enqueues_by_job: HashMap<&'a str, Vec<usize>>,
    /// Every task granted by an ok Lease op, in Lease invoke order.
    pub grants: Vec<GrantAt<'a>>,
    /// Every ok Read and FinalRead, in invoke order.
    pub reads: Vec<ReadAt<'a>>,
    /// Every heartbeat and report call (any completion), in invoke order.
    pub task_calls: Vec<TaskCall<'a>>,
    /// Job id → restart calls on it that did not fail.
    pub restarts: HashMap<&'a str, Vec<Call<'a>>>,
    /// Job id → delete calls on it that did not fail.
    pub deletes: HashMap<&'a str, Vec<Call<'a>>>,
    /// Number of client calls (paired invokes).
    pub call_count: usize,
}

impl<'a> Facts<'a> {
    /// Reads `history` once.
    pub fn new(history: &'a [Op]) -> Facts<'a> {
        let end_ms = history.iter().map(|o| o.time_ms).fold(0.0, f64::max);
        let mut facts = Facts {
            enqueues: Vec::new(),
            by_token: HashMap::new(),
            enqueues_by_job: HashMap::new(),
            grants: Vec::new(),
            reads: Vec::new(),
            task_calls: Vec::new(),
            restarts: HashMap::new(),
            deletes: HashMap::new(),
            call_count: 0,
        };
        for (inv, comp) in history::pairs(history) {
            let call = Call { inv, comp, end_ms };
            facts.call_count += 1;
            let ok_value = comp.filter(|c| c.kind == OpType::Ok).map(|c| &c.value);
            match inv.f {
                F::Enqueue => {
                    if let Value::Enqueue { token, limit, .. } = &inv.value {
                        let e = Enqueue {
                            call,
                            job_id: call.job_id(),
                            token,
                            limit: limit.as_ref().map(|(k, m)| (k.as_str(), *m)),
                        };
                        let i = facts.enqueues.len();
                        facts.by_token.entry(e.token).or_default().push(i);
                        if let Some(id) = e.job_id {
                            facts.enqueues_by_job.entry(id).or_default().push(i);
                        }
                        facts.enqueues.push(e);
                    }
                }
                F::Lease => {
                    if let (Some(Value::Lease { tasks, .. }), Some(c)) = (ok_value, comp) {
                        for grant in tasks {
                            facts.grants.push(GrantAt { lease: call, grant, delivered_ms: c.time_ms });
                        }
                    }
                }
                F::Heartbeat | F::Report => {
                    let v = ok_value.unwrap_or(&inv.value);
                    let tc = match v {
                        Value::Task { job_id, task_id, attempt, .. } => {
                            Some(TaskCall { call, job_id, task_id, attempt: *attempt, outcome: None })
                        }
                        Value::Report { job_id, task_id, attempt, outcome, .. } => {
                            Some(TaskCall { call, job_id, task_id, attempt: *attempt, outcome: Some(*outcome) })
                        }
                        _ => None,
                    };
                    facts.task_calls.extend(tc);
                }
                F::Restart | F::Delete => {
                    if let (false, Some(id)) = (call.is_fail(), call.job_id()) {
                        let map = if inv.f == F::Restart { &mut facts.restarts } else { &mut facts.deletes };
                        map.entry(id).or_default().push(call);
                    }
                }
                F::Read | F::FinalRead => {
                    if let Some(Value::Read { job_id, status, attempts, changed_at_ms, stale }) = ok_value {
                        facts.reads.push(ReadAt {
                            call,
                            f: inv.f,
                            job_id,
                            status: *status,
                            attempts: *attempts,
                            changed_at_ms: *changed_at_ms,
                            stale: *stale,
                        });
                    }
                }
                F::Cancel | F::Expedite | F::StartFault | F::StopFault => {}
            }
        }
        facts
    }

    /// The non-failed deletes of `job`.
    pub fn deletes_of(&self, job: &str) -> &[Call<'a>] {
        self.deletes.get(job).map_or(&[], |v| v.as_slice())
    }

    /// The non-failed restarts of `job`.
    pub fn restarts_of(&self, job: &str) -> &[Call<'a>] {
        self.restarts.get(job).map_or(&[], |v| v.as_slice())
    }

    /// The enqueue a grant belongs to: the non-failed enqueue carrying the
    /// grant's token, else one known to name the grant's job id.
    pub fn enqueue_of_grant(&self, g: &Grant) -> Option<&Enqueue<'a>> {
        let by_token = self.by_token.get(g.token.as_str()).into_iter().flatten();
        let by_job = self.enqueues_by_job.get(g.job_id.as_str()).into_iter().flatten();
        by_token.chain(by_job).map(|&i| &self.enqueues[i]).find(|e| !e.call.is_fail())
    }
}

/// A small builder of histories for the checkers' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashMap;

    use crate::history::{Grant, Op, OpType, Outcome, Status, Value, F, NEMESIS};

    /// History builder: `H::new().invoke(p, f, value, t).ok(p, value, t)`.
    #[derive(Default)]
    pub struct H {
        pub ops: Vec<Op>,
        open: HashMap<i64, (F, Value)>,
    }

    impl H {
        pub fn new() -> H {
            H::default()
        }
        fn push(&mut self, process: i64, kind: OpType, f: F, value: Value, t: f64, error: Option<String>) {
            let index = self.ops.len() as u64;
            self.ops.push(Op { index, process, kind, f, time_ms: t, node: Some("n1".into()), value, error });
        }
        /// Invokes `f` on process `p` at `t` ms.
        pub fn invoke(mut self, p: i64, f: F, value: Value, t: f64) -> H {
            self.open.insert(p, (f, value.clone()));
            self.push(p, OpType::Invoke, f, value, t, None);
            self
        }
        /// Completes `p`'s open op as ok with `value`.
        pub fn ok(mut self, p: i64, value: Value, t: f64) -> H {
            let (f, _) = self.open.remove(&p).expect("no open op");
            self.push(p, OpType::Ok, f, value, t, None);
            self
        }
        /// Completes `p`'s open op as ok with the invoke's value.
        pub fn ok_same(mut self, p: i64, t: f64) -> H {
            let (f, v) = self.open.remove(&p).expect("no open op");
            self.push(p, OpType::Ok, f, v, t, None);
            self
        }
        /// Completes `p`'s open op as fail.
        pub fn fail(mut self, p: i64, t: f64) -> H {
            let (f, v) = self.open.remove(&p).expect("no open op");
            self.push(p, OpType::Fail, f, v, t, Some("FAILED_PRECONDITION: test".into()));
            self
        }
        /// Completes `p`'s open op as fail with `error`.
        pub fn fail_with(mut self, p: i64, t: f64, error: &str) -> H {
            let (f, v) = self.open.remove(&p).expect("no open op");
            self.push(p, OpType::Fail, f, v, t, Some(error.into()));
            self
        }
        /// Completes `p`'s open op as info.
        pub fn info(mut self, p: i64, t: f64) -> H {
            let (f, v) = self.open.remove(&p).expect("no open op");
            self.push(p, OpType::Info, f, v, t, Some("DEADLINE_EXCEEDED: test".into()));
            self
        }
        /// An invoke and ok completion in one step, same value.
        pub fn call(self, p: i64, f: F, value: Value, t0: f64, t1: f64) -> H {
            self.invoke(p, f, value, t0).ok_same(p, t1)
        }
        /// A nemesis entry.
        pub fn nemesis(mut self, kind: OpType, f: F, value: Value, t: f64) -> H {
            self.push(NEMESIS, kind, f, value, t, None);
            self
        }
        pub fn build(self) -> Vec<Op> {
            self.ops
        }
    }

    /// Enqueue value; `id` None for a server-chosen id.
    pub fn enq(id: Option<&str>, token: &str) -> Value {
        Value::Enqueue {
            job_id: id.map(String::from),
            caller_id: id.is_some(),
            token: token.into(),
            limit: None,
            start_delay_ms: None,
            retries: 0,
        }
    }
    /// Enqueue value with a server-chosen id known (for the ok completion).
    pub fn enq_ok(id: &str, token: &str) -> Value {
        let mut v = enq(Some(id), token);
        if let Value::Enqueue { caller_id, .. } = &mut v {
            *caller_id = false;
        }
        v
    }
    /// Enqueue value with a concurrency limit.
    pub fn enq_limited(id: &str, token: &str, key: &str, max: u32) -> Value {
        let mut v = enq(Some(id), token);
        if let Value::Enqueue { limit, .. } = &mut v {
            *limit = Some((key.into(), max));
        }
        v
    }
    pub fn grant(job: &str, task: &str, attempt: u32, token: &str) -> Grant {
        Grant { job_id: job.into(), task_id: task.into(), attempt, lease_ms: 10_000, token: token.into() }
    }
    pub fn lease(tasks: Vec<Grant>) -> Value {
        Value::Lease { worker: "w".into(), tasks }
    }
    pub fn hb(job: &str, task: &str, attempt: u32) -> Value {
        Value::Task { worker: "w".into(), job_id: job.into(), task_id: task.into(), attempt, cancelled: None }
    }
    pub fn report(job: &str, task: &str, attempt: u32, outcome: Outcome) -> Value {
        Value::Report { worker: "w".into(), job_id: job.into(), task_id: task.into(), attempt, outcome }
    }
    pub fn job(id: &str) -> Value {
        Value::Job { job_id: id.into() }
    }
    pub fn read(id: &str, status: Status, attempts: u32, changed_at_ms: i64) -> Value {
        Value::Read { job_id: id.into(), status, attempts, changed_at_ms, stale: false }
    }
    pub fn fault(nemesis: &str, leader: Option<&str>) -> Value {
        Value::Fault { nemesis: nemesis.into(), detail: format!("{nemesis} on n1"), leader: leader.map(String::from) }
    }

    /// A job `id` (token `tok`) enqueued ok, leased as attempt 1 (task `t-id`)
    /// and reported successful, all by process `p` starting at `t0`, ending
    /// at `t0 + 40`.
    pub fn happy_job(h: H, p: i64, id: &str, tok: &str, t0: f64) -> H {
        let task = format!("t-{id}");
        h.call(p, F::Enqueue, enq(Some(id), tok), t0, t0 + 5.0)
            .invoke(p, F::Lease, lease(vec![]), t0 + 10.0)
            .ok(p, lease(vec![grant(id, &task, 1, tok)]), t0 + 15.0)
            .call(p, F::Heartbeat, hb(id, &task, 1), t0 + 20.0, t0 + 25.0)
            .call(p, F::Report, report(id, &task, 1, Outcome::Success), t0 + 30.0, t0 + 35.0)
    }

    /// Asserts the verdict is invalid with an error starting with `rule:`.
    pub fn assert_rule(v: &super::Verdict, rule: &str) {
        assert!(!v.valid, "{} should be invalid (rule {rule})", v.name);
        let prefix = format!("{rule}:");
        assert!(
            v.errors.iter().any(|e| e.starts_with(&prefix)),
            "{}: no error for rule {rule} in {:#?}",
            v.name,
            v.errors
        );
    }

    /// Asserts the verdict is valid, printing its errors otherwise.
    pub fn assert_valid(v: &super::Verdict) {
        assert!(v.valid, "{} should be valid: {:#?}", v.name, v.errors);
        assert_eq!(v.error_count, 0);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::testing::*;
    use super::*;

    /// A job in the simulated server.
    struct SimJob {
        status: Status,
        last_attempt: u32,
        changed_at: i64,
        token: String,
        limit: Option<(String, u32)>,
        retries_left: u32,
        running: Option<(String, u32)>,
    }

    /// A tiny deterministic random source (an LCG).
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// How a simulated op completes.
    enum Done {
        Ok(Value),
        Fail,
        Info,
    }

    /// The simulated clients: a history builder plus completions not yet
    /// written (ops overlap: each takes effect at its invoke and completes
    /// 1 to 40 ms later; completions are written in time order).
    struct Clients {
        h: H,
        pending: Vec<(f64, i64, Done)>,
        busy_until: Vec<f64>,
    }

    impl Clients {
        fn flush(&mut self, until: f64) {
            self.pending.sort_by(|a, b| a.0.total_cmp(&b.0));
            let n = self.pending.partition_point(|p| p.0 <= until);
            for (t, p, done) in self.pending.drain(..n) {
                let h = std::mem::take(&mut self.h);
                self.h = match done {
                    Done::Ok(v) => h.ok(p, v, t),
                    Done::Fail => h.fail(p, t),
                    Done::Info => h.info(p, t),
                };
            }
        }
        fn invoke(&mut self, p: i64, f: F, v: Value, t: f64) {
            self.h = std::mem::take(&mut self.h).invoke(p, f, v, t);
        }
        fn complete(&mut self, p: i64, at: f64, done: Done) {
            self.busy_until[p as usize] = at;
            self.pending.push((at, p, done));
        }
    }

    /// Simulates a correct server with concurrent clients: every op takes
    /// effect atomically at its invoke time and completes later (overlapping
    /// other processes' ops), with leases expiring, retries, restarts,
    /// deletes, limits (mixed maxes on one key) and lost answers (info), then
    /// a drain and final reads. Every checker must accept what it records.
    fn simulate(seed: u64) -> Vec<Op> {
        const PROCESSES: usize = 6;
        let mut rng = Rng(seed);
        let mut c = Clients { h: H::new(), pending: Vec::new(), busy_until: vec![0.0; PROCESSES] };
        let mut jobs: BTreeMap<String, SimJob> = BTreeMap::new();
        let mut known: Vec<String> = Vec::new();
        // Task → when its grant reached the worker (None: answer lost).
        let mut delivered: HashMap<String, Option<f64>> = HashMap::new();
        let mut t = 0.0;
        let mut next = 0;
        let running_of = |jobs: &BTreeMap<String, SimJob>, key: &str| {
            jobs.values().filter(|j| j.running.is_some() && j.limit.as_ref().is_some_and(|l| l.0 == key)).count() as u32
        };
        for step in 0..900 {
            t += 3.0 + rng.below(5) as f64;
            c.flush(t);
            let free: Vec<usize> = (0..PROCESSES).filter(|&p| c.busy_until[p] < t).collect();
            if free.is_empty() {
                continue;
            }
            let p = free[rng.below(free.len() as u64) as usize] as i64;
            let at = t + 1.0 + rng.below(40) as f64;
            let lost_answer = rng.below(10) == 0;
            let done = |v: Value, ok: bool| {
                if !ok {
                    Done::Fail
                } else if lost_answer {
                    Done::Info
                } else {
                    Done::Ok(v)
                }
            };
            let now = t as i64;
            match rng.below(9) {
                0 | 1 => {
                    next += 1;
                    let id = format!("j{next}");
                    let caller = rng.below(2) == 0;
                    let token = format!("{p}:{step}");
                    let limit = (rng.below(3) == 0).then(|| ("k".to_string(), 1 + rng.below(2) as u32));
                    let retries = rng.below(2) as u32;
                    let mk = |job_id: Option<String>, caller_id: bool| Value::Enqueue {
                        job_id,
                        caller_id,
                        token: token.clone(),
                        limit: limit.clone(),
                        start_delay_ms: None,
                        retries,
                    };
                    c.invoke(p, F::Enqueue, mk(caller.then(|| id.clone()), caller), t);
                    jobs.insert(
                        id.clone(),
                        SimJob {
                            status: Status::Scheduled,
                            last_attempt: 0,
                            changed_at: now,
                            token: token.clone(),
                            limit: limit.clone(),
                            retries_left: retries,
                            running: None,
                        },
                    );
                    if caller || !lost_answer {
                        known.push(id.clone());
                    }
                    c.complete(p, at, done(mk(Some(id), caller), true));
                }
                2 => {
                    let mut grants = Vec::new();
                    let ids: Vec<String> = jobs.keys().cloned().collect();
                    for id in ids {
                        if grants.len() == 2 {
                            break;
                        }
                        let room = {
                            let j = &jobs[&id];
                            j.status == Status::Scheduled
                                && j.limit.as_ref().is_none_or(|(k, m)| running_of(&jobs, k) < *m)
                        };
                        if room {
                            let j = jobs.get_mut(&id).unwrap();
                            j.last_attempt += 1;
                            let task = format!("t{}-{}", id, j.last_attempt);
                            j.running = Some((task.clone(), j.last_attempt));
                            j.status = Status::Running;
                            j.changed_at = now;
                            delivered.insert(task.clone(), (!lost_answer).then_some(at));
                            grants.push(grant(&id, &task, j.last_attempt, &j.token));
                        }
                    }
                    c.invoke(p, F::Lease, lease(vec![]), t);
                    c.complete(p, at, done(lease(grants), true));
                }
                3 | 4 => {
                    // Heartbeat, report or expiry of a running task whose
                    // grant has come back (or was lost: then only expiry).
                    let cands: Vec<(String, String, u32, bool)> = jobs
                        .iter()
                        .filter_map(|(id, j)| {
                            let (task, a) = j.running.as_ref()?;
                            match delivered.get(task).copied().flatten() {
                                Some(d) if d < t => Some((id.clone(), task.clone(), *a, true)),
                                None => Some((id.clone(), task.clone(), *a, false)),
                                Some(_) => None,
                            }
                        })
                        .collect();
                    if cands.is_empty() {
                        continue;
                    }
                    let (id, task, a, known_task) = cands[rng.below(cands.len() as u64) as usize].clone();
                    if !known_task || rng.below(4) == 0 {
                        // The lease expires (server side, no op).
                        let j = jobs.get_mut(&id).unwrap();
                        j.running = None;
                        j.changed_at = now;
                        j.status = if j.retries_left > 0 {
                            j.retries_left -= 1;
                            Status::Scheduled
                        } else {
                            Status::Failed
                        };
                        if !known_task {
                            continue;
                        }
                    }
                    let live = jobs[&id].running.as_ref().is_some_and(|r| r.0 == task);
                    if rng.below(2) == 0 {
                        c.invoke(p, F::Heartbeat, hb(&id, &task, a), t);
                        c.complete(p, at, done(hb(&id, &task, a), live));
                    } else {
                        let outcome = [Outcome::Success, Outcome::Failure, Outcome::Cancelled][rng.below(3) as usize];
                        if live {
                            let j = jobs.get_mut(&id).unwrap();
                            j.running = None;
                            j.changed_at = now;
                            j.status = match outcome {
                                Outcome::Success => Status::Succeeded,
                                Outcome::Cancelled => Status::Cancelled,
                                Outcome::Failure if j.retries_left > 0 => {
                                    j.retries_left -= 1;
                                    Status::Scheduled
                                }
                                Outcome::Failure => Status::Failed,
                            };
                        }
                        c.invoke(p, F::Report, report(&id, &task, a, outcome), t);
                        c.complete(p, at, done(report(&id, &task, a, outcome), live));
                    }
                }
                5 | 6 if !known.is_empty() => {
                    let id = known[rng.below(known.len() as u64) as usize].clone();
                    let f = if rng.below(2) == 0 { F::Restart } else { F::Delete };
                    let allowed = jobs.get(&id).is_some_and(|j| {
                        if f == F::Restart {
                            matches!(j.status, Status::Failed | Status::Cancelled)
                        } else {
                            j.status.is_terminal()
                        }
                    });
                    if allowed {
                        if f == F::Delete {
                            jobs.remove(&id);
                        } else {
                            let j = jobs.get_mut(&id).unwrap();
                            j.status = Status::Scheduled;
                            j.changed_at = now;
                        }
                    }
                    c.invoke(p, f, job(&id), t);
                    c.complete(p, at, done(job(&id), allowed));
                }
                _ if !known.is_empty() => {
                    let id = known[rng.below(known.len() as u64) as usize].clone();
                    let v = match jobs.get(&id) {
                        Some(j) => read(&id, j.status, j.last_attempt, j.changed_at),
                        None => read(&id, Status::NotFound, 0, 0),
                    };
                    c.invoke(p, F::Read, job(&id), t);
                    c.complete(p, at, Done::Ok(v));
                }
                _ => {}
            }
        }
        c.flush(f64::INFINITY);
        let mut h = c.h;
        // Drain: every running lease expires, every scheduled job succeeds.
        t += 20_000.0;
        let ids: Vec<String> = jobs.keys().cloned().collect();
        for id in &ids {
            let j = jobs.get_mut(id).unwrap();
            if j.status == Status::Running {
                j.running = None;
                j.status = Status::Scheduled;
            }
            if j.status == Status::Scheduled {
                j.last_attempt += 1;
                let task = format!("d{}-{}", id, j.last_attempt);
                let g = grant(id, &task, j.last_attempt, &j.token);
                h = h.invoke(9, F::Lease, lease(vec![]), t).ok(9, lease(vec![g]), t + 2.0);
                j.changed_at = t as i64 + 5;
                j.status = Status::Succeeded;
                h = h.call(9, F::Report, report(id, &task, j.last_attempt, Outcome::Success), t + 4.0, t + 6.0);
                t += 10.0;
            }
        }
        // Every job seen anywhere gets a final read.
        let mut all: Vec<String> = known.clone();
        all.extend(ids);
        all.sort();
        all.dedup();
        for id in &all {
            t += 10.0;
            let v = match jobs.get(id) {
                Some(j) => read(id, j.status, j.last_attempt, j.changed_at),
                None => read(id, Status::NotFound, 0, 0),
            };
            h = h.invoke(8, F::FinalRead, job(id), t).ok(8, v, t + 2.0);
        }
        h.build()
    }

    #[test]
    fn simulated_correct_server_passes_every_checker() {
        for seed in 1..=20 {
            let history = simulate(seed);
            let facts = Facts::new(&history);
            // The simulation exercises what the checkers look at.
            assert!(facts.grants.len() > 50 && facts.reads.len() > 50, "seed {seed}: too little happened");
            assert!(!facts.restarts.is_empty() && !facts.deletes.is_empty(), "seed {seed}: no restart or delete");
            assert!(facts.enqueues.iter().any(|e| e.call.kind() == OpType::Info));
            for v in check_all(&history, &CheckContext { lease_ms: 10_000 }) {
                assert!(v.valid, "seed {seed}: {} failed: {:#?}", v.name, v.errors);
            }
        }
    }

    #[test]
    fn verdicts_keep_at_most_max_errors() {
        let mut v = Verdict::new("x");
        for i in 0..(MAX_ERRORS + 7) {
            v.error(format!("e{i}"));
        }
        assert_eq!(v.error_count, MAX_ERRORS + 7);
        assert_eq!(v.errors.len(), MAX_ERRORS);
        assert!(!v.valid);
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.contains("\"error_count\":57"));
    }
}
