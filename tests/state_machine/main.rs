//! State-machine tier: the pure state machine over the in-memory store.
//!
//! Property tests feed random command sequences (built from abstract actions
//! resolved against the current state, so leases and task ids are real most of
//! the time and stale some of the time) and check after every apply that the
//! invariants hold, that a rejection changed nothing, that no attempt is ever
//! granted twice, and that replaying the log on a fresh store gives the same
//! digest, byte for byte.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::RwLock;

use proptest::prelude::*;
use silo::broker::Broker;
use silo::state_machine::{
    self as sm, invariants, read, AttemptStatus, Command, Effect, ExpiredLease, ImportedAttempt, JobKey, JobStatus,
    LeaseKind, Limit, NewJob, Op, Outcome, Output, QueueKind, RateLimit, RefreshOutcome, RetryPolicy, Tables, View,
};
use silo::storage::kv::MemKv;

#[derive(Debug, Clone)]
enum Action {
    Enqueue {
        job: u8,
        tenant: u8,
        group: u8,
        priority: u32,
        delay_ms: i64,
        retries: Option<u32>,
        limits: u8,
    },
    AcquireLimits,
    ReportRefresh {
        lease: usize,
        new_max: Option<u32>,
    },
    DropHolders {
        tenant: u8,
    },
    Purge {
        age_ms: i64,
        max: u32,
    },
    /// `extend`: the history follows the job's stored attempts (a reimport
    /// that may succeed); otherwise it is the whole history.
    Import {
        job: u8,
        tenant: u8,
        history: Vec<u8>,
        retries: Option<u32>,
        limits: u8,
        extend: bool,
    },
    Grant {
        group: u8,
        max: usize,
        stale: bool,
    },
    LeaseJob {
        job: u8,
        tenant: u8,
    },
    Report {
        lease: usize,
        outcome: u8,
    },
    Expire {
        lease: usize,
    },
    Cancel {
        job: u8,
        tenant: u8,
    },
    Restart {
        job: u8,
        tenant: u8,
    },
    Expedite {
        job: u8,
        tenant: u8,
    },
    Delete {
        job: u8,
        tenant: u8,
    },
    Reset,
}

fn action() -> impl Strategy<Value = Action> {
    let job = 0u8..6;
    let tenant = 0u8..2;
    prop_oneof![
        4 => (job.clone(), tenant.clone(), 0u8..2, 0u32..100, -50i64..200, proptest::option::of(0u32..3), any::<u8>())
            .prop_map(|(job, tenant, group, priority, delay_ms, retries, limits)| Action::Enqueue { job, tenant, group, priority, delay_ms, retries, limits }),
        3 => Just(Action::AcquireLimits),
        2 => (0usize..8, proptest::option::of(0u32..4)).prop_map(|(lease, new_max)| Action::ReportRefresh { lease, new_max }),
        1 => (0u8..2).prop_map(|tenant| Action::DropHolders { tenant }),
        1 => (0i64..500, 1u32..4).prop_map(|(age_ms, max)| Action::Purge { age_ms, max }),
        2 => (job.clone(), tenant.clone(), proptest::collection::vec(0u8..3, 0..3), proptest::option::of(0u32..3), any::<u8>(), any::<bool>())
            .prop_map(|(job, tenant, history, retries, limits, extend)| Action::Import { job, tenant, history, retries, limits, extend }),
        4 => (0u8..2, 0usize..4, any::<bool>()).prop_map(|(group, max, stale)| Action::Grant { group, max, stale }),
        1 => (job.clone(), tenant.clone()).prop_map(|(job, tenant)| Action::LeaseJob { job, tenant }),
        4 => (0usize..8, 0u8..3).prop_map(|(lease, outcome)| Action::Report { lease, outcome }),
        2 => (0usize..8).prop_map(|lease| Action::Expire { lease }),
        2 => (job.clone(), tenant.clone()).prop_map(|(job, tenant)| Action::Cancel { job, tenant }),
        2 => (job.clone(), tenant.clone()).prop_map(|(job, tenant)| Action::Restart { job, tenant }),
        1 => (job.clone(), tenant.clone()).prop_map(|(job, tenant)| Action::Expedite { job, tenant }),
        1 => (job.clone(), tenant.clone()).prop_map(|(job, tenant)| Action::Delete { job, tenant }),
        1 => Just(Action::Reset),
    ]
}

/// A subset (by bit) of a fixed menu of limits, in menu order.
fn limit_set(bits: u8) -> Vec<Limit> {
    let menu = [
        Limit::Concurrency { key: "c1".into(), max_concurrency: 1 },
        Limit::RateLimit(RateLimit {
            name: "r".into(),
            unique_key: "u".into(),
            limit: 1,
            duration_ms: 400,
            hits: 1,
            algorithm: i32::from(bits & 0x80 != 0),
            behavior: 0,
            retry_initial_backoff_ms: 10,
            retry_max_backoff_ms: 50,
            retry_backoff_multiplier: 2.0,
            retry_max_retries: u32::from(bits & 0x40 != 0) * 2,
        }),
        Limit::Concurrency { key: "c2".into(), max_concurrency: 2 },
        Limit::FloatingConcurrency {
            key: "f".into(),
            default_max_concurrency: 1,
            refresh_interval_ms: 50,
            metadata: BTreeMap::from([("m".to_string(), "1".to_string())]),
        },
    ];
    menu.into_iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, l)| l).collect()
}

/// Fixed-limit keys of the menu and their max.
const FIXED: [(&str, u32); 2] = [("c1", 1), ("c2", 2)];

fn key(job: u8, tenant: u8) -> JobKey {
    JobKey { shard: 0, tenant: if tenant == 0 { "-".into() } else { "acme".into() }, id: format!("job-{job}") }
}

fn group(g: u8) -> String {
    format!("group-{g}")
}

/// Turns an abstract action into a concrete operation against the current store.
fn resolve(kv: &MemKv, a: &Action, now: i64) -> Op {
    let v = View(kv);
    match a.clone() {
        Action::Enqueue { job, tenant, group: g, priority, delay_ms, retries, limits } => Op::Enqueue(NewJob {
            key: key(job, tenant),
            task_group: group(g),
            priority,
            start_at_ms: if delay_ms < 0 { 0 } else { now + delay_ms },
            retry_policy: retries.map(|retry_count| RetryPolicy {
                retry_count,
                initial_interval_ms: 10,
                max_interval_ms: 100,
                randomize_interval: job % 2 == 0,
                backoff_factor: 2.0,
            }),
            payload: vec![job],
            limits: limit_set(limits),
            // Some jobs carry metadata so the metadata index is exercised.
            metadata: (0..job % 3).map(|i| (format!("k{i}"), format!("v{}", job % 2))).collect(),
        }),
        Action::AcquireLimits => Op::AcquireLimits {
            task_ids: v
                .queued_all()
                .into_iter()
                .filter(|q| q.kind == QueueKind::Gate && q.start_at_ms <= now)
                .map(|q| q.task_id)
                .collect(),
        },
        Action::ReportRefresh { lease, new_max } => {
            let leases: Vec<_> = v.leases().into_iter().filter(|l| l.kind != LeaseKind::Attempt).collect();
            let task_id = if leases.is_empty() { "stale".into() } else { leases[lease % leases.len()].task_id.clone() };
            let outcome = match new_max {
                Some(m) => RefreshOutcome::Success { new_max_concurrency: m },
                None => RefreshOutcome::Failure { code: "E".into(), message: "m".into() },
            };
            Op::ReportRefreshOutcome { task_id, outcome }
        }
        Action::DropHolders { tenant } => Op::DropTenantHolders { shard: 0, tenant: key(0, tenant).tenant },
        Action::Purge { age_ms, max } => Op::PurgeTerminal { before_ms: now - age_ms, max },
        Action::Import { job, tenant, history, retries, limits, extend } => Op::ImportJob {
            job: NewJob {
                key: key(job, tenant),
                task_group: group(job % 2),
                priority: 5,
                start_at_ms: 0,
                retry_policy: retries.map(|retry_count| RetryPolicy {
                    retry_count,
                    initial_interval_ms: 10,
                    max_interval_ms: 100,
                    randomize_interval: false,
                    backoff_factor: 2.0,
                }),
                payload: vec![job],
                limits: limit_set(limits),
                metadata: BTreeMap::new(),
            },
            enqueue_time_ms: 0,
            attempts: extend
                .then(|| v.attempts(&key(job, tenant)))
                .unwrap_or_default()
                .into_iter()
                .filter_map(|a| {
                    Some(ImportedAttempt {
                        status: a.status,
                        started_at_ms: a.started_at_ms,
                        finished_at_ms: a.finished_at_ms?,
                        result: a.result,
                        error_code: a.error_code,
                        error_data: a.error_data,
                    })
                })
                .chain(history.iter().map(|h| ImportedAttempt {
                    status: [AttemptStatus::Succeeded, AttemptStatus::Failed, AttemptStatus::Cancelled][*h as usize],
                    started_at_ms: 1,
                    finished_at_ms: 2,
                    result: None,
                    error_code: None,
                    error_data: None,
                }))
                .collect(),
        },
        Action::Grant { group: g, max, stale } => {
            let mut ids: Vec<String> = v
                .queued_all()
                .into_iter()
                .filter(|q| q.task_group == group(g) && q.kind != QueueKind::Gate)
                .map(|q| q.task_id)
                .take(max + 1)
                .collect();
            if stale {
                ids.push("no-such-task".into());
                if let Some(l) = v.leases().first() {
                    ids.push(l.task_id.clone());
                }
            }
            Op::GrantLeases { worker_id: format!("w{g}"), task_ids: ids, lease_ms: 1_000 }
        }
        Action::LeaseJob { job, tenant } => {
            Op::LeaseJob { job: key(job, tenant), worker_id: "helper".into(), lease_ms: 1_000 }
        }
        Action::Report { lease, outcome } => {
            let leases: Vec<_> = v.leases().into_iter().filter(|l| l.kind == LeaseKind::Attempt).collect();
            let task_id = if leases.is_empty() || lease > leases.len() {
                "stale-task".to_string()
            } else {
                leases[lease % leases.len()].task_id.clone()
            };
            let outcome = match outcome {
                0 => Outcome::Success { result: vec![1, 2] },
                1 => Outcome::Failure { code: "E".into(), data: vec![3] },
                _ => Outcome::Cancelled,
            };
            Op::ReportOutcome { task_id, outcome }
        }
        Action::Expire { lease } => {
            let leases = v.leases();
            let task_id = if leases.is_empty() { "stale".into() } else { leases[lease % leases.len()].task_id.clone() };
            Op::ExpireLeases { leases: vec![ExpiredLease { task_id, deadline_ms: now }] }
        }
        Action::Cancel { job, tenant } => Op::CancelJob { job: key(job, tenant) },
        Action::Restart { job, tenant } => Op::RestartJob { job: key(job, tenant) },
        Action::Expedite { job, tenant } => Op::ExpediteJob { job: key(job, tenant) },
        Action::Delete { job, tenant } => Op::DeleteJob { job: key(job, tenant) },
        Action::Reset => Op::ResetAll,
    }
}

/// Entries per page of the brokers under test: tiny, so that picks cross
/// page boundaries all the time.
const TEST_PAGE: usize = 2;

/// The broker's view must be the store's: for every task group, the due
/// attempts in scheduling order (priority, start, seq, task id), a pick that
/// takes the first of them, and the counts. `live` was fed every effect;
/// `rebuilt` is a fresh broker rebuilt from the store (a restart).
///
/// The console's ready/future split is taken at the latest time the broker
/// has seen (`latest`): a clock that steps back does not make an attempt
/// scheduled again.
fn check_broker(store: &Arc<RwLock<MemKv>>, live: &Broker, now: i64, latest: i64, step: &Op) {
    let mut due: BTreeMap<String, Vec<(u32, i64, u64, String)>> = BTreeMap::new();
    let mut split: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut gates: Vec<(i64, String)> = Vec::new();
    let mut queued = 0;
    {
        let kv = store.read();
        for q in View(&*kv).queued_all() {
            queued += 1;
            if q.kind == QueueKind::Attempt {
                let counts = split.entry(q.task_group.clone()).or_default();
                if q.start_at_ms <= latest {
                    counts.0 += 1;
                } else {
                    counts.1 += 1;
                }
            }
            match q.kind {
                QueueKind::Attempt if q.start_at_ms <= now => {
                    due.entry(q.task_group.clone()).or_default().push((q.priority, q.start_at_ms, q.seq, q.task_id))
                }
                QueueKind::Gate if q.start_at_ms <= now => gates.push((q.start_at_ms, q.task_id)),
                _ => {}
            }
        }
    }
    gates.sort();
    let due_gates: Vec<String> = gates.into_iter().map(|g| g.1).collect();
    let rebuilt = Broker::with_page(TEST_PAGE);
    rebuilt.rebuild(store.clone(), std::iter::empty(), 0, latest);
    for broker in [live, &rebuilt] {
        assert_eq!(broker.sizes().0, queued, "queued count after {step:?}");
        for (g, mut tasks) in due.clone() {
            tasks.sort();
            let expected: Vec<String> = tasks.into_iter().map(|t| t.3).collect();
            assert_eq!(broker.peek_ready(&g, 1_000, now), expected, "due order of {g} after {step:?}");
            let picked = broker.pick(&g, 3, now, |_| true).task_ids;
            broker.release(&picked);
            assert_eq!(picked, expected[..expected.len().min(3)], "pick of {g} after {step:?}");
            // A filter that rejects about half (as a tenant filter would)
            // makes the pick read past full windows.
            let odd = |id: &str| id.ends_with(['1', '3', '5', '7', '9', 'b', 'd', 'f']);
            let picked = broker.pick(&g, 3, now, odd).task_ids;
            broker.release(&picked);
            let expected_odd: Vec<String> = expected.iter().filter(|id| odd(id)).take(3).cloned().collect();
            assert_eq!(picked, expected_odd, "filtered pick of {g} after {step:?}");
        }
        let taken = broker.take_due_gates(now, 1_000);
        broker.release(&taken);
        assert_eq!(taken, due_gates, "due gates after {step:?}");
        for stats in broker.group_stats(now, 0) {
            let expected = split.get(&stats.task_group).copied().unwrap_or_default();
            assert_eq!((stats.ready, stats.future), expected, "{} ready/future after {step:?}", stats.task_group);
        }
        assert!(broker.resident() <= 64, "resident entries {} after {step:?}", broker.resident());
    }
}

/// Runs the actions, checking everything after each apply; returns the log.
fn run(actions: &[(Action, i64)]) -> (Vec<Command>, MemKv) {
    let store = Arc::new(RwLock::new(MemKv::default()));
    let broker = Broker::with_page(TEST_PAGE);
    broker.rebuild(store.clone(), std::iter::empty(), 0, 0);
    let mut kv = MemKv::default();
    sm::apply(&mut kv, 1, &Command { now_ms: 1_000, op: Op::InitShards { shards: vec![] } }).0.unwrap();
    let mut log = Vec::new();
    let mut now = 1_000i64;
    let mut latest = 0i64;
    let mut granted_ever = BTreeSet::new();
    for (i, (action, dt)) in actions.iter().enumerate() {
        now += dt; // may go backwards: the state machine must keep time monotonic
        let op = resolve(&kv, action, now);
        let command = Command { now_ms: now, op };
        let before = kv.clone();
        let clock_before = View(&kv).clock_ms();
        let (result, effects) = sm::apply(&mut kv, i as u64 + 2, &command);
        match &result {
            Err(rejection) => {
                let mut expected = before.clone();
                // the clock may move even when the command is rejected
                expected.map.retain(|k, _| !k.starts_with(b"Mclock"));
                let mut got = kv.clone();
                got.map.retain(|k, _| !k.starts_with(b"Mclock"));
                assert_eq!(expected, got, "rejection {rejection:?} changed state");
                assert!(effects.is_empty());
            }
            Ok(Output::Granted { tasks, .. }) => {
                for t in tasks {
                    assert!(granted_ever.insert(t.task_id.clone()), "task {} granted twice", t.task_id);
                    assert!(t.relative_attempt_number >= 1 && t.relative_attempt_number <= t.attempt_number);
                }
            }
            Ok(_) => {}
        }
        assert!(View(&kv).clock_ms() >= clock_before, "clock went backwards");
        for t in ["-", "acme"] {
            for (k, max) in FIXED {
                let holders =
                    silo::storage::kv::Kv::scan_prefix(&kv, &silo::storage::keys::holders_of(0, t, false, k)).len();
                assert!(holders as u32 <= max, "{t}/{k} has {holders} holders > max {max} after {:?}", command.op);
            }
        }
        let errors = invariants::check(&View(&kv));
        assert!(errors.is_empty(), "after {command:?}: {errors:#?}");
        // The store is written before the broker sees the effects, as in the node.
        *store.write() = kv.clone();
        latest = latest.max(now);
        broker.apply_effects(&effects, 0, now);
        check_broker(&store, &broker, now, latest, &command.op);
        log.push(command);
    }
    (log, kv)
}

/// Replays `log` from an empty store as a replica whose results are read
/// (`Full`, the proposer) or dropped (`Discarded`, every other replica);
/// returns the store, every command's result and its effects.
fn replay(log: &[Command], answer: sm::Answer) -> (MemKv, Vec<sm::ApplyResult>, Vec<Vec<Effect>>) {
    let mut kv = MemKv::default();
    sm::apply(&mut kv, 1, &Command { now_ms: 1_000, op: Op::InitShards { shards: vec![] } }).0.unwrap();
    let (mut results, mut effects) = (Vec::new(), Vec::new());
    for (i, c) in log.iter().enumerate() {
        let (result, fx) = sm::apply_as(&mut kv, i as u64 + 2, c, answer);
        results.push(result);
        effects.push(fx);
    }
    (kv, results, effects)
}

/// `result` with every leased task's payload emptied (what `Discarded` skips).
fn without_payloads(result: &sm::ApplyResult) -> sm::ApplyResult {
    fn strip(output: &Output) -> Output {
        match output {
            Output::Granted { tasks, refresh_tasks } => Output::Granted {
                tasks: tasks.iter().map(|t| sm::TaskView { payload: Vec::new(), ..t.clone() }).collect(),
                refresh_tasks: refresh_tasks.clone(),
            },
            Output::Batch(results) => Output::Batch(results.iter().map(without_payloads).collect()),
            other => other.clone(),
        }
    }
    result.as_ref().map(strip).map_err(Clone::clone)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Also: a replica that drops results (skipping the reads that only feed
    /// them) writes the same bytes, emits the same effects, and its results
    /// differ from the proposer's only in the payloads it did not read.
    #[test]
    fn invariants_hold_and_replay_is_identical(actions in proptest::collection::vec((action(), -20i64..300), 1..120)) {
        let (log, kv) = run(&actions);
        let (replayed, results, effects) = replay(&log, sm::Answer::Full);
        prop_assert_eq!(kv.digest(), replayed.digest());
        prop_assert_eq!(&kv, &replayed);
        let (follower, follower_results, follower_effects) = replay(&log, sm::Answer::Discarded);
        prop_assert_eq!(kv.digest(), follower.digest());
        prop_assert_eq!(&kv, &follower);
        prop_assert_eq!(effects, follower_effects);
        let stripped: Vec<_> = results.iter().map(without_payloads).collect();
        prop_assert_eq!(stripped, follower_results);
    }
}

/// One step of the paging test: deep queues in few runs.
#[derive(Debug, Clone)]
enum PagingStep {
    Enqueue {
        job: u8,
        group: u8,
        priority: u32,
        delay_ms: i64,
        limits: u8,
    },
    /// Resume the gates the live broker finds due (as the leader does).
    OpenGates,
    /// Lease what the live broker picks (as the leader does).
    Pick {
        group: u8,
        max: usize,
    },
    Cancel {
        job: u8,
    },
    Expedite {
        job: u8,
    },
    Restart {
        job: u8,
    },
    Succeed {
        lease: usize,
    },
    Reset,
}

fn paging_step() -> impl Strategy<Value = PagingStep> {
    prop_oneof![
        8 => (0u8..60, 0u8..2, 0u32..3, -50i64..200, prop_oneof![3 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(0x42u8)])
            .prop_map(|(job, group, priority, delay_ms, limits)| PagingStep::Enqueue { job, group, priority, delay_ms, limits }),
        4 => (0u8..2, 1usize..6).prop_map(|(group, max)| PagingStep::Pick { group, max }),
        2 => Just(PagingStep::OpenGates),
        2 => (0u8..60).prop_map(|job| PagingStep::Cancel { job }),
        2 => (0u8..60).prop_map(|job| PagingStep::Expedite { job }),
        1 => (0u8..60).prop_map(|job| PagingStep::Restart { job }),
        2 => (0usize..8).prop_map(|lease| PagingStep::Succeed { lease }),
        1 => Just(PagingStep::Reset),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The broker pages its queues from the store (issue #10): with two
    /// entries per page, whatever is enqueued, leased, cancelled, expedited
    /// or restarted, its picks and counts are the store's, and so are those
    /// of a broker rebuilt from the store at any step.
    #[test]
    fn the_paged_broker_hands_out_what_the_store_holds(steps in proptest::collection::vec((paging_step(), 0i64..40), 1..150)) {
        let store = Arc::new(RwLock::new(MemKv::default()));
        let broker = Broker::with_page(TEST_PAGE);
        broker.rebuild(store.clone(), std::iter::empty(), 0, 0);
        let mut kv = MemKv::default();
        sm::apply(&mut kv, 1, &Command { now_ms: 1_000, op: Op::InitShards { shards: vec![] } }).0.unwrap();
        let mut now = 1_000i64;
        for (i, (step, dt)) in steps.iter().enumerate() {
            now += dt;
            let job = |j: u8| key(j, 0);
            let op = match step.clone() {
                PagingStep::Enqueue { job: j, group: g, priority, delay_ms, limits } => Op::Enqueue(NewJob {
                    key: job(j),
                    task_group: group(g),
                    priority,
                    start_at_ms: if delay_ms < 0 { 0 } else { now + delay_ms },
                    retry_policy: None,
                    payload: vec![j],
                    limits: limit_set(limits),
                    metadata: Default::default(),
                }),
                PagingStep::OpenGates => {
                    let task_ids = broker.take_due_gates(now, 3);
                    broker.release(&task_ids);
                    Op::AcquireLimits { task_ids }
                }
                PagingStep::Pick { group: g, max } => {
                    let picked = broker.pick(&group(g), max, now, |_| true);
                    broker.release(&picked.task_ids);
                    Op::GrantLeases { worker_id: "w".into(), task_ids: picked.task_ids, lease_ms: 1_000 }
                }
                PagingStep::Cancel { job: j } => Op::CancelJob { job: job(j) },
                PagingStep::Expedite { job: j } => Op::ExpediteJob { job: job(j) },
                PagingStep::Restart { job: j } => Op::RestartJob { job: job(j) },
                PagingStep::Succeed { lease } => {
                    let leases = View(&kv).leases();
                    let task_id = leases.get(lease % leases.len().max(1)).map_or("none".into(), |l| l.task_id.clone());
                    Op::ReportOutcome { task_id, outcome: Outcome::Success { result: vec![] } }
                }
                PagingStep::Reset => Op::ResetAll,
            };
            let (_, effects) = sm::apply(&mut kv, i as u64 + 2, &Command { now_ms: now, op: op.clone() });
            *store.write() = kv.clone();
            broker.apply_effects(&effects, 0, now);
            let errors = invariants::check(&View(&kv));
            prop_assert!(errors.is_empty(), "after {:?}: {:#?}", op, errors);
            check_broker(&store, &broker, now, now, &op);
        }
    }
}

// ---- targeted unit tests of single transitions ----

fn apply(kv: &mut MemKv, index: u64, now_ms: i64, op: Op) -> sm::ApplyResult {
    sm::apply(kv, index, &Command { now_ms, op }).0
}

fn enqueue(kv: &mut MemKv, id: &str, retries: Option<u32>) {
    let op = Op::Enqueue(NewJob {
        key: JobKey { shard: 0, tenant: "-".into(), id: id.into() },
        task_group: "g".into(),
        priority: 50,
        start_at_ms: 0,
        retry_policy: retries.map(|retry_count| RetryPolicy {
            retry_count,
            initial_interval_ms: 1_000,
            max_interval_ms: 30_000,
            randomize_interval: false,
            backoff_factor: 2.0,
        }),
        payload: vec![0xc0],
        limits: vec![],
        metadata: BTreeMap::new(),
    });
    apply(kv, 1, 1_000, op).unwrap();
}

fn grant_all(kv: &mut MemKv, index: u64, now: i64) -> Vec<sm::TaskView> {
    let ids = View(&*kv).queued_all().into_iter().map(|q| q.task_id).collect();
    match apply(kv, index, now, Op::GrantLeases { worker_id: "w".into(), task_ids: ids, lease_ms: 10_000 }).unwrap() {
        Output::Granted { tasks, .. } => tasks,
        other => panic!("{other:?}"),
    }
}

#[test]
fn retry_schedule_follows_the_formula() {
    let mut kv = MemKv::default();
    enqueue(&mut kv, "r", Some(3));
    let key = JobKey { shard: 0, tenant: "-".into(), id: "r".into() };
    let mut now = 2_000;
    for (n, expected_delay) in [(1u32, 2_000i64), (2, 4_000), (3, 8_000)] {
        let t = grant_all(&mut kv, 10 + n as u64, now);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].relative_attempt_number, n);
        let failure = Outcome::Failure { code: "E".into(), data: vec![] };
        apply(&mut kv, 20 + n as u64, now, Op::ReportOutcome { task_id: t[0].task_id.clone(), outcome: failure })
            .unwrap();
        let job = View(&kv).job(&key).unwrap();
        assert_eq!(job.status, JobStatus::Scheduled);
        assert_eq!(job.pending.as_ref().unwrap().start_at_ms, now + expected_delay);
        assert!(grant_all(&mut kv, 30 + n as u64, now + expected_delay - 1).is_empty(), "not due before backoff");
        now += expected_delay;
    }
    let t = grant_all(&mut kv, 40, now);
    assert!(t[0].is_last_attempt);
    apply(
        &mut kv,
        41,
        now,
        Op::ReportOutcome {
            task_id: t[0].task_id.clone(),
            outcome: Outcome::Failure { code: "E".into(), data: vec![] },
        },
    )
    .unwrap();
    assert_eq!(View(&kv).job(&key).unwrap().status, JobStatus::Failed);
    match read::get_job_result(&View(&kv), &key).unwrap() {
        Ok(read::JobResult::Failed { error_code, .. }) => assert_eq!(error_code, "E"),
        _ => panic!("expected a failed result"),
    }
}

#[test]
fn time_never_runs_backwards() {
    let mut kv = MemKv::default();
    enqueue(&mut kv, "t", None);
    apply(&mut kv, 2, 50_000, Op::CancelJob { job: JobKey { shard: 0, tenant: "-".into(), id: "t".into() } }).unwrap();
    // a command stamped by a leader whose clock is behind
    enqueue(&mut kv, "u", None);
    let job = View(&kv).job(&JobKey { shard: 0, tenant: "-".into(), id: "u".into() }).unwrap();
    assert_eq!(job.enqueue_time_ms, 50_000);
}

#[test]
fn task_ids_are_unique_per_index_and_ordinal() {
    let mut seen = BTreeSet::new();
    let mut kv = MemKv::default();
    for index in 0..200u64 {
        let key = JobKey { shard: 0, tenant: "-".into(), id: format!("j{index}") };
        let op = Op::Enqueue(NewJob {
            key,
            task_group: "g".into(),
            priority: 0,
            start_at_ms: 0,
            retry_policy: None,
            payload: vec![],
            limits: vec![],
            metadata: BTreeMap::new(),
        });
        apply(&mut kv, index, 1, op).unwrap();
    }
    for q in View(&kv).queued_all() {
        assert!(seen.insert(q.task_id.clone()));
        uuid::Uuid::parse_str(&q.task_id).unwrap();
    }
    assert_eq!(seen.len(), 200);
}

#[test]
fn failure_of_a_cancelled_running_job_does_not_retry() {
    let mut kv = MemKv::default();
    enqueue(&mut kv, "c", Some(5));
    let key = JobKey { shard: 0, tenant: "-".into(), id: "c".into() };
    let t = grant_all(&mut kv, 2, 2_000);
    apply(&mut kv, 3, 2_000, Op::CancelJob { job: key.clone() }).unwrap();
    apply(
        &mut kv,
        4,
        2_000,
        Op::ReportOutcome {
            task_id: t[0].task_id.clone(),
            outcome: Outcome::Failure { code: "E".into(), data: vec![] },
        },
    )
    .unwrap();
    assert_eq!(View(&kv).job(&key).unwrap().status, JobStatus::Cancelled);
    assert!(View(&kv).queued_all().is_empty());
}

// ---- extreme values (issue #15: nothing accepted may make apply panic) ----

/// Numbers at and around the edges of their types.
fn edge_i64() -> impl Strategy<Value = i64> {
    prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(-1), Just(0), Just(1), any::<i64>(), -10_000i64..10_000]
}

fn edge_u32() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(1), Just(u32::MAX), any::<u32>()]
}

fn edge_f64() -> impl Strategy<Value = f64> {
    prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-1.0), Just(0.0), Just(1e300), any::<f64>()]
}

/// Strings from empty to longer than a storage key can hold.
fn edge_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{0,8}",
        1 => (65_530usize..65_540).prop_map(|n| "k".repeat(n)),
        1 => Just("ключ-🔑".to_string()),
    ]
}

fn edge_limit() -> impl Strategy<Value = Limit> {
    prop_oneof![
        (edge_string(), edge_u32()).prop_map(|(key, max_concurrency)| Limit::Concurrency { key, max_concurrency }),
        (edge_string(), edge_u32(), edge_i64()).prop_map(|(key, default_max_concurrency, refresh_interval_ms)| {
            Limit::FloatingConcurrency { key, default_max_concurrency, refresh_interval_ms, metadata: BTreeMap::new() }
        }),
        (
            (edge_string(), edge_string(), edge_i64(), edge_i64(), any::<i32>(), 0i32..3),
            (edge_i64(), edge_i64(), edge_f64(), edge_u32())
        )
            .prop_map(|((name, unique_key, limit, duration_ms, hits, algorithm), (ib, mb, mult, retries))| {
                Limit::RateLimit(RateLimit {
                    name,
                    unique_key,
                    limit,
                    duration_ms,
                    hits,
                    algorithm,
                    behavior: 0,
                    retry_initial_backoff_ms: ib,
                    retry_max_backoff_ms: mb,
                    retry_backoff_multiplier: mult,
                    retry_max_retries: retries,
                })
            }),
    ]
}

fn edge_job() -> impl Strategy<Value = NewJob> {
    (
        (edge_string(), edge_string(), edge_string(), edge_u32(), edge_i64()),
        proptest::option::of((edge_u32(), edge_i64(), edge_i64(), any::<bool>(), edge_f64())),
        proptest::collection::vec(edge_limit(), 0..3),
    )
        .prop_map(|((id, tenant, task_group, priority, start_at_ms), retry, limits)| NewJob {
            key: JobKey { shard: 0, tenant, id },
            task_group,
            priority,
            start_at_ms,
            retry_policy: retry.map(
                |(retry_count, initial_interval_ms, max_interval_ms, randomize_interval, backoff_factor)| RetryPolicy {
                    retry_count,
                    initial_interval_ms,
                    max_interval_ms,
                    randomize_interval,
                    backoff_factor,
                },
            ),
            payload: vec![0xc0],
            limits,
            metadata: BTreeMap::new(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Jobs with extreme fields go through their whole life (enqueue, gates,
    /// grants, failures with retries, expiries, restarts) at extreme times:
    /// apply never panics, a job whose strings a key cannot hold is rejected
    /// and changes nothing, and the invariants hold after every step.
    #[test]
    fn extreme_values_never_panic_apply(jobs in proptest::collection::vec(edge_job(), 1..4), times in proptest::collection::vec(edge_i64(), 1..12)) {
        let mut kv = MemKv::default();
        sm::apply(&mut kv, 1, &Command { now_ms: 1_000, op: Op::InitShards { shards: vec![] } }).0.unwrap();
        let mut index = 2u64;
        let mut step = |kv: &mut MemKv, now_ms: i64, op: Op| {
            let before = kv.clone();
            let (result, _) = sm::apply(kv, index, &Command { now_ms, op: op.clone() });
            index += 1;
            if let Err(sm::Rejection::Unstorable { .. }) = &result {
                let strip = |kv: &MemKv| { let mut m = kv.map.clone(); m.retain(|k, _| !k.starts_with(b"Mclock")); m };
                assert_eq!(strip(&before), strip(kv), "an unstorable op changed state");
            }
            let errors = invariants::check(&View(&*kv));
            let short = |e: &String| e.chars().take(300).collect::<String>();
            assert!(errors.is_empty(), "after {}: {:#?}", op.name(), errors.iter().map(short).collect::<Vec<_>>());
            result
        };
        for job in &jobs {
            let long = job.key.id.len() > 65_535 || job.key.tenant.len() > 65_535 || job.task_group.len() > 65_535;
            let r = step(&mut kv, times[0], Op::Enqueue(job.clone()));
            if long {
                prop_assert!(matches!(r, Err(sm::Rejection::Unstorable { .. })), "{r:?}");
            }
        }
        for &now in &times {
            let due: Vec<String> = View(&kv).queued_all().into_iter().map(|q| q.task_id).collect();
            step(&mut kv, now, Op::AcquireLimits { task_ids: due.clone() }).ok();
            let granted = match step(&mut kv, now, Op::GrantLeases { worker_id: "w".into(), task_ids: due, lease_ms: 10_000 }) {
                Ok(Output::Granted { tasks, .. }) => tasks,
                _ => vec![],
            };
            for (i, t) in granted.iter().enumerate() {
                let outcome = if i % 2 == 0 {
                    Outcome::Failure { code: "E".into(), data: vec![] }
                } else {
                    Outcome::Success { result: vec![] }
                };
                if i % 3 == 2 {
                    step(&mut kv, now, Op::ExpireLeases { leases: vec![ExpiredLease { task_id: t.task_id.clone(), deadline_ms: now }] }).ok();
                } else {
                    step(&mut kv, now, Op::ReportOutcome { task_id: t.task_id.clone(), outcome }).ok();
                }
            }
            for job in &jobs {
                step(&mut kv, now, Op::RestartJob { job: job.key.clone() }).ok();
                step(&mut kv, now, Op::ExpediteJob { job: job.key.clone() }).ok();
            }
            step(&mut kv, now, Op::PurgeTerminal { before_ms: now, max: 10 }).ok();
        }
    }
}
