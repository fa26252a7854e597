//! LeaseTasks, LeaseTask, Heartbeat, ReportOutcome, lease expiry.
use silo::pb::silo as pb;
use std::time::Duration;
use tonic::Code;

use crate::support::*;

/// A worker's heartbeat cadence (well inside the 1 s lease).
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);

fn hb(task: &pb::Task, worker: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        shard: task.shard.clone(),
        worker_id: worker.into(),
        task_id: task.id.clone(),
        tenant_id: None,
    }
}

#[tokio::test]
async fn worker_lifecycle_success() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let mut req = enqueue_req(&shard, "j");
    req.metadata.insert("m".into(), "1".into());
    c.enqueue(req).await.unwrap();
    assert!(c.lease_tasks(lease_req("default", "w", 0)).await.unwrap().into_inner().tasks.is_empty(), "max_tasks 0");
    let t = lease_n(&mut c, "default", "w1", 1).await.remove(0);
    assert_eq!(t.job_id, "j");
    assert_eq!(t.shard, shard);
    assert_eq!(t.tenant_id, None, "default tenant is absent on the wire");
    assert_eq!(t.lease_ms, 10_000);
    assert_eq!(bytes_of(&t.payload), vec![0x91, 0x01]);
    assert_eq!(t.metadata.get("m").map(String::as_str), Some("1"));
    assert!(t.is_last_attempt, "no retry policy: the first attempt is the last");
    let job = c.get_job(job_req(&shard, "j")).await.unwrap().into_inner();
    assert_eq!(job.status, pb::JobStatus::Running as i32);
    assert_eq!(job.attempts[0].status, pb::AttemptStatus::Running as i32);
    assert_eq!(job.next_attempt_starts_after_ms, None);
    assert!(c.lease_tasks(lease_req("default", "w2", 10)).await.unwrap().into_inner().tasks.is_empty(), "leased once");

    let beat = c.heartbeat(hb(&t, "w1")).await.unwrap().into_inner();
    assert!(!beat.cancelled);
    assert_eq!(beat.cancelled_at_ms, None);
    assert_status(c.heartbeat(hb(&t, "w2")).await, Code::FailedPrecondition, "lease owner mismatch");

    c.report_outcome(success_req(&t, b"\xa2ok")).await.unwrap();
    let res = c.get_job_result(pb::GetJobResultRequest { shard: shard.clone(), id: "j".into(), tenant: None }).await;
    let res = res.unwrap().into_inner();
    assert_eq!(res.status, pb::JobStatus::Succeeded as i32);
    match res.result {
        Some(pb::get_job_result_response::Result::SuccessData(b)) => {
            assert_eq!(bytes_of(&Some(b)), b"\xa2ok")
        }
        other => panic!("unexpected {other:?}"),
    }
    let job = c.get_job(job_req(&shard, "j")).await.unwrap().into_inner();
    assert_eq!(job.status, pb::JobStatus::Succeeded as i32);
    assert_eq!(bytes_of(&job.result), b"\xa2ok");
    assert_eq!(job.attempts[0].status, pb::AttemptStatus::Succeeded as i32);
    assert!(job.attempts[0].finished_at_ms.is_some());

    assert_status(c.report_outcome(success_req(&t, b"\x01")).await, Code::NotFound, "lease not found");
    assert_status(c.heartbeat(hb(&t, "w1")).await, Code::NotFound, "lease not found");
}

#[tokio::test]
async fn failure_without_retries_fails_the_job() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    c.enqueue(enqueue_req(&shard, "f")).await.unwrap();
    let t = lease_n(&mut c, "default", "w", 1).await.remove(0);
    let mut missing = failure_req(&t, "X");
    missing.outcome = None;
    assert_status(c.report_outcome(missing).await, Code::InvalidArgument, "missing outcome");
    c.report_outcome(failure_req(&t, "BAD_INPUT")).await.unwrap();
    let res = c.get_job_result(pb::GetJobResultRequest { shard: shard.clone(), id: "f".into(), tenant: None }).await;
    let res = res.unwrap().into_inner();
    assert_eq!(res.status, pb::JobStatus::Failed as i32);
    match res.result {
        Some(pb::get_job_result_response::Result::Failure(f)) => {
            assert_eq!(f.error_code, "BAD_INPUT");
            assert_eq!(bytes_of(&f.error_data), vec![0xc0]);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn cancelling_a_running_job_reaches_the_worker() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    c.enqueue(enqueue_req(&shard, "run")).await.unwrap();
    let t = lease_n(&mut c, "default", "w", 1).await.remove(0);
    c.cancel_job(pb::CancelJobRequest { shard: shard.clone(), id: "run".into(), tenant: None }).await.unwrap();
    let job = c.get_job(job_req(&shard, "run")).await.unwrap().into_inner();
    assert_eq!(job.status, pb::JobStatus::Running as i32, "status stays Running until the worker reports");
    let beat = c.heartbeat(hb(&t, "w")).await.unwrap().into_inner();
    assert!(beat.cancelled);
    assert!(beat.cancelled_at_ms.is_some());
    let mut report = success_req(&t, b"");
    report.outcome = Some(pb::report_outcome_request::Outcome::Cancelled(pb::Cancelled {}));
    c.report_outcome(report).await.unwrap();
    let res = c.get_job_result(pb::GetJobResultRequest { shard: shard.clone(), id: "run".into(), tenant: None }).await;
    let res = res.unwrap().into_inner();
    assert_eq!(res.status, pb::JobStatus::Cancelled as i32);
    let job = c.get_job(job_req(&shard, "run")).await.unwrap().into_inner();
    assert_eq!(job.attempts[0].status, pb::AttemptStatus::Cancelled as i32);
}

#[tokio::test]
async fn lease_task_helper_rules() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let lease = |c: &Client, id: &str, worker: &str| {
        let mut c = c.clone();
        let req = pb::LeaseTaskRequest { shard: shard.clone(), id: id.into(), tenant: None, worker_id: worker.into() };
        async move { c.lease_task(req).await }
    };
    let mut later = enqueue_req(&shard, "x");
    later.start_at_ms = now_ms() + 3_600_000;
    c.enqueue(later).await.unwrap();
    assert_status(lease(&c, "x", "").await, Code::InvalidArgument, "worker_id is required");
    let task = lease(&c, "x", "w").await.unwrap().into_inner().task.unwrap();
    assert_eq!(task.job_id, "x", "ignores the start time");
    assert_status(
        lease(&c, "x", "w").await,
        Code::FailedPrecondition,
        "cannot lease job x: job is currently running (status: Running)",
    );
    c.report_outcome(success_req(&task, b"\x01")).await.unwrap();
    assert_status(
        lease(&c, "x", "w").await,
        Code::FailedPrecondition,
        "job is already in terminal state (status: Succeeded)",
    );
}

#[tokio::test]
async fn expired_lease_fails_with_worker_crashed_and_retries() {
    let s = Server::start(Opts { lease_ms: 1_000, ..Opts::default() }).await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let mut req = enqueue_req(&shard, "crashy");
    req.retry_policy = retry_policy(1, 1, 1, 1.0);
    c.enqueue(req).await.unwrap();
    let t1 = lease_n(&mut c, "default", "lost-worker", 1).await.remove(0);
    assert_eq!(t1.lease_ms, 1_000);
    // the reaper expires the lease; the retry is leased again
    let t2 = lease_n(&mut c, "default", "w2", 1).await.remove(0);
    assert_eq!(t2.attempt_number, 2);
    let job = c.get_job(job_req(&shard, "crashy")).await.unwrap().into_inner();
    let first = &job.attempts[0];
    assert_eq!(first.status, pb::AttemptStatus::Failed as i32);
    assert_eq!(first.error_code.as_deref(), Some("WORKER_CRASHED"));
    let blob = bytes_of(&first.error_data);
    assert!(blob[0] >> 5 == 0b101 || blob[0] == 0xd9, "MessagePack string header");
    assert!(String::from_utf8_lossy(&blob).contains("worker=lost-worker"));
    assert_status(c.report_outcome(success_req(&t1, b"\x01")).await, Code::NotFound, "lease not found");

    // a heartbeating worker keeps its lease well past lease_ms
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(2_500) {
        let beat = c.heartbeat(hb(&t2, "w2")).await.expect("lease kept alive by heartbeats");
        assert!(!beat.into_inner().cancelled);
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
    c.report_outcome(success_req(&t2, b"\x01")).await.unwrap();
}

#[tokio::test]
async fn expired_lease_of_cancelled_job_cancels_it() {
    let s = Server::start(Opts { lease_ms: 1_000, ..Opts::default() }).await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    c.enqueue(enqueue_req(&shard, "cx")).await.unwrap();
    let _t = lease_n(&mut c, "default", "w", 1).await;
    c.cancel_job(pb::CancelJobRequest { shard: shard.clone(), id: "cx".into(), tenant: None }).await.unwrap();
    let mut c2 = c.clone();
    let shard2 = shard.clone();
    wait_until("lease expiry cancels the job", Duration::from_secs(20), || {
        let mut c = c2.clone();
        let shard = shard2.clone();
        async move {
            let job = c.get_job(job_req(&shard, "cx")).await.ok()?.into_inner();
            (job.status == pb::JobStatus::Cancelled as i32).then_some(job)
        }
    })
    .await;
    let job = c2.get_job(job_req(&shard, "cx")).await.unwrap().into_inner();
    assert_eq!(job.attempts[0].status, pb::AttemptStatus::Cancelled as i32);
}

#[tokio::test]
async fn one_lease_call_grants_many_tasks_each_once() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    for i in 0..50 {
        c.enqueue(enqueue_req(&shard, &format!("bulk-{i}"))).await.unwrap();
    }
    let mut handles = Vec::new();
    for w in 0..5 {
        let mut c = c.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..10 {
                mine.extend(c.lease_tasks(lease_req("default", &format!("w{w}"), 7)).await.unwrap().into_inner().tasks);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let mut ids: Vec<_> = all.iter().map(|t| t.job_id.clone()).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "no job leased twice");
    assert_eq!(ids.len(), 50, "all jobs leased");
}

/// How long the sweep's worker works between its heartbeat and its report.
const REPORT_AFTER_HEARTBEAT: Duration = Duration::from_millis(400);

/// Heartbeats swept across the lease deadline (issue #15, item 5): 200 leases
/// of 2 s, each heartbeated once between 10 ms before and 90 ms after its
/// deadline, then reported 400 ms later. The reaper and heartbeats are one
/// order: an accepted heartbeat keeps the lease (the report is accepted and the
/// job succeeds on its first attempt); a refused one means the attempt is being
/// expired (the report is refused too). Never "renewed" and then reaped.
#[tokio::test]
async fn heartbeats_across_the_deadline_either_keep_the_lease_or_are_refused() {
    let s = Server::start(Opts { lease_ms: 2_000, ..Opts::default() }).await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    for i in 0..200 {
        c.enqueue(enqueue_req(&shard, &format!("sweep{i}"))).await.unwrap();
    }
    let tasks = lease_n(&mut c, "default", "w", 200).await;
    let leased_at = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let mut c = c.clone();
        handles.push(tokio::spawn(async move {
            let offset_ms = 2_000 - 10 + (i as u64 % 100);
            tokio::time::sleep_until(leased_at + Duration::from_millis(offset_ms)).await;
            let heartbeat = c.heartbeat(hb(&t, "w")).await;
            // The worker's own pace (issue #15's recipe), not a wait for a condition.
            tokio::time::sleep(REPORT_AFTER_HEARTBEAT).await;
            let report = c.report_outcome(success_req(&t, b"done")).await;
            (t, heartbeat, report)
        }))
    }
    let (mut kept, mut refused) = (0, 0);
    for h in handles {
        let (t, heartbeat, report) = h.await.unwrap();
        let job = c.get_job(job_req(&shard, &t.job_id)).await.unwrap().into_inner();
        match heartbeat {
            Ok(_) => {
                kept += 1;
                assert!(report.is_ok(), "{}: heartbeat renewed, then the report was refused: {report:?}", t.job_id);
                assert_eq!(job.status, pb::JobStatus::Succeeded as i32, "{}: {job:?}", t.job_id);
                assert_eq!(job.attempts.len(), 1, "{}: renewed, yet attempted again: {job:?}", t.job_id);
            }
            Err(e) => {
                refused += 1;
                assert_eq!(e.code(), Code::NotFound, "{}: {e:?}", t.job_id);
                assert_eq!(report.map_err(|e| e.code()).err(), Some(Code::NotFound), "{}", t.job_id);
                assert_ne!(job.status, pb::JobStatus::Succeeded as i32, "{}: {job:?}", t.job_id);
            }
        }
    }
    assert_eq!(kept + refused, 200);
    // Which side of the deadline each landed on depends on timing; say so.
    eprintln!("heartbeats across the deadline: {kept} kept the lease, {refused} refused");
}

/// A LeaseTasks reply never exceeds its byte budget (issue #15, item 2): with
/// `lease_reply_bytes_max = 8192`, 3 KB payloads come two per reply, the rest
/// stay queued (not leased and left to expire), and a payload larger than the
/// budget still comes, alone.
#[tokio::test]
async fn lease_replies_fit_the_byte_budget() {
    let s = Server::start(Opts { extra_toml: "lease_reply_bytes_max = 8192\n".into(), ..Opts::default() }).await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    for i in 0..5 {
        let mut req = enqueue_req(&shard, &format!("b{i}"));
        req.payload = msgpack(&vec![0x90; 3000]);
        c.enqueue(req).await.unwrap();
    }
    let mut big = enqueue_req(&shard, "big");
    big.payload = msgpack(&vec![0x90; 20_000]);
    big.priority = 99;
    c.enqueue(big).await.unwrap();
    let mut sizes = Vec::new();
    let mut leased = Vec::new();
    while leased.len() < 6 {
        let tasks = c.lease_tasks(lease_req("default", "w", 10)).await.unwrap().into_inner().tasks;
        assert!(!tasks.is_empty(), "every poll grants at least one task while some are queued");
        sizes.push(tasks.len());
        leased.extend(tasks.into_iter().map(|t| t.job_id));
    }
    assert_eq!(sizes, vec![2, 2, 1, 1], "3 KB payloads two per 8 KB reply; the 20 KB one alone");
    assert_eq!(leased.last().map(String::as_str), Some("big"));
    for id in &leased[..5] {
        let job = c.get_job(job_req(&shard, id)).await.unwrap().into_inner();
        assert_eq!(job.status, pb::JobStatus::Running as i32, "{id} was leased once, by its own reply");
        assert_eq!(job.attempts.len(), 1);
    }
}
