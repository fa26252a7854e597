//! Enqueue, GetJob, GetJobResult, cancel, restart, expedite, delete.
use std::collections::HashMap;

use silo::pb::silo as pb;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn enqueue_echoes_every_field_and_starts_scheduled() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let before = now_ms();
    let mut req = enqueue_req(&shard, "job-1");
    req.priority = 7;
    req.task_group = "emails".into();
    req.metadata = HashMap::from([("k".to_string(), "v".to_string())]);
    req.retry_policy = Some(pb::RetryPolicy {
        retry_count: 3,
        initial_interval_ms: 100,
        max_interval_ms: 1000,
        randomize_interval: true,
        backoff_factor: 1.5,
    });
    req.limits = vec![
        pb::Limit {
            limit: Some(pb::limit::Limit::Concurrency(pb::ConcurrencyLimit { key: "q".into(), max_concurrency: 2 })),
        },
        pb::Limit { limit: None },
    ];
    let id = c.enqueue(req.clone()).await.unwrap().into_inner().id;
    assert_eq!(id, "job-1");

    let job = c.get_job(job_req(&shard, "job-1")).await.unwrap().into_inner();
    assert_eq!(job.id, "job-1");
    assert_eq!(job.priority, 7);
    assert_eq!(job.task_group, "emails");
    assert_eq!(job.metadata, req.metadata);
    assert_eq!(job.retry_policy, req.retry_policy);
    assert_eq!(job.limits.len(), 1, "a limit without a oneof member is dropped");
    assert_eq!(job.limits[0], req.limits[0]);
    assert_eq!(bytes_of(&job.payload), vec![0x91, 0x01]);
    assert_eq!(job.status, pb::JobStatus::Scheduled as i32);
    assert!(job.enqueue_time_ms >= before && job.enqueue_time_ms <= now_ms());
    assert!(job.next_attempt_starts_after_ms.unwrap() >= before);
    assert!(job.attempts.is_empty());
    assert!(job.result.is_none());
}

#[tokio::test]
async fn generated_ids_are_uuids_and_duplicates_are_refused() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let id = c.enqueue(enqueue_req(&shard, "")).await.unwrap().into_inner().id;
    // Version 7 (time-ordered): a new job's records land at the end of their tables (issue #11).
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);

    let mut first = enqueue_req(&shard, "dup");
    first.priority = 1;
    c.enqueue(first).await.unwrap();
    let mut second = enqueue_req(&shard, "dup");
    second.priority = 2;
    assert_status(c.enqueue(second).await, Code::AlreadyExists, "job already exists with id dup");
    let job = c.get_job(job_req(&shard, "dup")).await.unwrap().into_inner();
    assert_eq!(job.priority, 1, "the stored job is untouched");
}

#[tokio::test]
async fn missing_jobs_are_not_found_everywhere() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    assert_status(c.get_job(job_req(&shard, "nope")).await, Code::NotFound, "job not found");
    let r = c.get_job_result(pb::GetJobResultRequest { shard: shard.clone(), id: "nope".into(), tenant: None }).await;
    assert_status(r, Code::NotFound, "job not found");
    let r = c.cancel_job(pb::CancelJobRequest { shard: shard.clone(), id: "nope".into(), tenant: None }).await;
    assert_status(r, Code::NotFound, "job not found");
    let r = c.restart_job(pb::RestartJobRequest { shard: shard.clone(), id: "nope".into(), tenant: None }).await;
    assert_status(r, Code::NotFound, "job not found");
    let r = c.expedite_job(pb::ExpediteJobRequest { shard: shard.clone(), id: "nope".into(), tenant: None }).await;
    assert_status(r, Code::NotFound, "job not found");
    let r = c.delete_job(pb::DeleteJobRequest { shard: shard.clone(), id: "nope".into(), tenant: None }).await;
    assert_status(r, Code::NotFound, "job not found");
    let r = c
        .lease_task(pb::LeaseTaskRequest {
            shard: shard.clone(),
            id: "nope".into(),
            tenant: None,
            worker_id: "w".into(),
        })
        .await;
    assert_status(r, Code::NotFound, "job not found");
}

#[tokio::test]
async fn cancel_scheduled_job_is_immediate_and_final_states_refuse_cancel() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let mut future = enqueue_req(&shard, "later");
    future.start_at_ms = now_ms() + 3_600_000;
    c.enqueue(future).await.unwrap();
    c.cancel_job(pb::CancelJobRequest { shard: shard.clone(), id: "later".into(), tenant: None }).await.unwrap();
    let job = c.get_job(job_req(&shard, "later")).await.unwrap().into_inner();
    assert_eq!(job.status, pb::JobStatus::Cancelled as i32);
    assert_eq!(job.next_attempt_starts_after_ms, None, "DECISIONS #16");
    let res =
        c.get_job_result(pb::GetJobResultRequest { shard: shard.clone(), id: "later".into(), tenant: None }).await;
    let res = res.unwrap().into_inner();
    assert_eq!(res.status, pb::JobStatus::Cancelled as i32);
    assert!(matches!(res.result, Some(pb::get_job_result_response::Result::Cancelled(_))));
    let again = c.cancel_job(pb::CancelJobRequest { shard: shard.clone(), id: "later".into(), tenant: None }).await;
    assert_status(again, Code::FailedPrecondition, "job is already cancelled");
    // the cancelled job is never leased
    assert!(c.lease_tasks(lease_req("default", "w", 10)).await.unwrap().into_inner().tasks.is_empty());

    c.enqueue(enqueue_req(&shard, "done")).await.unwrap();
    let t = lease_n(&mut c, "default", "w", 1).await;
    c.report_outcome(success_req(&t[0], b"\xc3")).await.unwrap();
    let r = c.cancel_job(pb::CancelJobRequest { shard: shard.clone(), id: "done".into(), tenant: None }).await;
    assert_status(r, Code::FailedPrecondition, "job is already in terminal state");
}

#[tokio::test]
async fn restart_rules_and_numbering() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let mut req = enqueue_req(&shard, "r");
    req.retry_policy = retry_policy(1, 1, 1, 1.0);
    c.enqueue(req).await.unwrap();
    let restart = |c: &mut Client| {
        let mut c = c.clone();
        let shard = shard.clone();
        async move { c.restart_job(pb::RestartJobRequest { shard, id: "r".into(), tenant: None }).await }
    };
    assert_status(
        restart(&mut c).await,
        Code::FailedPrecondition,
        "cannot restart job r: job is still in progress (status: Scheduled)",
    );

    let t1 = lease_n(&mut c, "default", "w", 1).await.remove(0);
    assert_eq!((t1.attempt_number, t1.relative_attempt_number, t1.is_last_attempt), (1, 1, false));
    assert_status(restart(&mut c).await, Code::FailedPrecondition, "job is still in progress (status: Running)");
    c.report_outcome(failure_req(&t1, "E1")).await.unwrap();
    let t2 = lease_n(&mut c, "default", "w", 1).await.remove(0);
    assert_eq!((t2.attempt_number, t2.relative_attempt_number, t2.is_last_attempt), (2, 2, true));
    assert_ne!(t1.id, t2.id, "every attempt has a fresh task id");
    c.report_outcome(failure_req(&t2, "E2")).await.unwrap();
    let job = c.get_job(job_req(&shard, "r")).await.unwrap().into_inner();
    assert_eq!(job.status, pb::JobStatus::Failed as i32);

    restart(&mut c).await.unwrap();
    let job = c.get_job(job_req(&shard, "r")).await.unwrap().into_inner();
    assert_eq!(job.status, pb::JobStatus::Scheduled as i32);
    let t3 = lease_n(&mut c, "default", "w", 1).await.remove(0);
    assert_eq!((t3.attempt_number, t3.relative_attempt_number, t3.is_last_attempt), (3, 1, false), "fresh budget");
    c.report_outcome(success_req(&t3, b"\x01")).await.unwrap();
    assert_status(restart(&mut c).await, Code::FailedPrecondition, "job already succeeded (status: Succeeded)");
    let job = c.get_job(job_req(&shard, "r")).await.unwrap().into_inner();
    let numbers: Vec<u32> = job.attempts.iter().map(|a| a.attempt_number).collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    assert_eq!(bytes_of(&job.result), vec![0x01]);
}

#[tokio::test]
async fn restart_cancelled_job_clears_the_record() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    c.enqueue(enqueue_req(&shard, "c")).await.unwrap();
    c.cancel_job(pb::CancelJobRequest { shard: shard.clone(), id: "c".into(), tenant: None }).await.unwrap();
    c.restart_job(pb::RestartJobRequest { shard: shard.clone(), id: "c".into(), tenant: None }).await.unwrap();
    let t = lease_n(&mut c, "default", "w", 1).await.remove(0);
    assert_eq!((t.attempt_number, t.relative_attempt_number), (1, 1));
    let hb = c
        .heartbeat(pb::HeartbeatRequest {
            shard: shard.clone(),
            worker_id: "w".into(),
            task_id: t.id.clone(),
            tenant_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!hb.cancelled, "restart cleared the cancellation record");
}

#[tokio::test]
async fn expedite_rules() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let expedite = |c: &Client, id: &str| {
        let mut c = c.clone();
        let req = pb::ExpediteJobRequest { shard: shard.clone(), id: id.into(), tenant: None };
        async move { c.expedite_job(req).await }
    };
    c.enqueue(enqueue_req(&shard, "now")).await.unwrap();
    assert_status(
        expedite(&c, "now").await,
        Code::FailedPrecondition,
        "cannot expedite job now: task is already ready to run (not future-scheduled) (status: Scheduled)",
    );

    let mut later = enqueue_req(&shard, "later");
    later.start_at_ms = now_ms() + 3_600_000;
    c.enqueue(later).await.unwrap();
    assert!(c
        .lease_tasks(lease_req("default", "w", 10))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .iter()
        .all(|t| t.job_id != "later"));
    let before = now_ms();
    expedite(&c, "later").await.unwrap();
    let job = c.get_job(job_req(&shard, "later")).await.unwrap().into_inner();
    assert!(job.next_attempt_starts_after_ms.unwrap() >= before);
    let t = lease_n(&mut c, "default", "w", 1).await.remove(0);
    assert_eq!(t.job_id, "later");
    assert_status(expedite(&c, "later").await, Code::FailedPrecondition, "job is currently running (status: Running)");
    c.report_outcome(success_req(&t, b"\x01")).await.unwrap();
    assert_status(
        expedite(&c, "later").await,
        Code::FailedPrecondition,
        "job is already in terminal state (status: Succeeded)",
    );

    let mut future = enqueue_req(&shard, "cancelled");
    future.start_at_ms = now_ms() + 3_600_000;
    c.enqueue(future).await.unwrap();
    c.cancel_job(pb::CancelJobRequest { shard: shard.clone(), id: "cancelled".into(), tenant: None }).await.unwrap();
    assert_status(expedite(&c, "cancelled").await, Code::FailedPrecondition, "job is cancelled (status: Cancelled)");
}

#[tokio::test]
async fn expedite_skips_retry_backoff() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let mut req = enqueue_req(&shard, "b");
    req.retry_policy = retry_policy(2, 600_000, 3_600_000, 2.0);
    c.enqueue(req).await.unwrap();
    let t = lease_n(&mut c, "default", "w", 1).await.remove(0);
    let failed_at = now_ms();
    c.report_outcome(failure_req(&t, "BOOM")).await.unwrap();
    let job = c.get_job(job_req(&shard, "b")).await.unwrap().into_inner();
    assert_eq!(job.status, pb::JobStatus::Scheduled as i32);
    let next = job.next_attempt_starts_after_ms.unwrap();
    // first retry waits initial × factor (SEMANTICS §7)
    assert!(next >= failed_at + 1_200_000 - 1_000 && next <= now_ms() + 1_200_000, "next {next}");
    let r = c.get_job_result(pb::GetJobResultRequest { shard: shard.clone(), id: "b".into(), tenant: None }).await;
    assert_status(r, Code::FailedPrecondition, "job is not complete: status is Scheduled");
    c.expedite_job(pb::ExpediteJobRequest { shard: shard.clone(), id: "b".into(), tenant: None }).await.unwrap();
    let t2 = lease_n(&mut c, "default", "w", 1).await.remove(0);
    assert_eq!(t2.attempt_number, 2);
}

#[tokio::test]
async fn delete_rules() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let delete = |c: &Client, id: &str| {
        let mut c = c.clone();
        let req = pb::DeleteJobRequest { shard: shard.clone(), id: id.into(), tenant: None };
        async move { c.delete_job(req).await }
    };
    c.enqueue(enqueue_req(&shard, "d")).await.unwrap();
    assert_status(
        delete(&c, "d").await,
        Code::Internal,
        "cannot delete job d: job is currently running or has pending requests",
    );
    let t = lease_n(&mut c, "default", "w", 1).await.remove(0);
    assert_status(delete(&c, "d").await, Code::Internal, "job is currently running");
    c.report_outcome(success_req(&t, b"\x01")).await.unwrap();
    delete(&c, "d").await.unwrap();
    assert_status(c.get_job(job_req(&shard, "d")).await, Code::NotFound, "job not found");
    assert_status(delete(&c, "d").await, Code::NotFound, "job not found");
    // the id can be used again and starts with no history
    c.enqueue(enqueue_req(&shard, "d")).await.unwrap();
    let job = c.get_job(job_req(&shard, "d")).await.unwrap().into_inner();
    assert!(job.attempts.is_empty(), "delete removed the old attempts");
}

#[tokio::test]
async fn future_jobs_wait_and_priority_orders_due_jobs() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let mut old_low = enqueue_req(&shard, "old-low");
    old_low.priority = 50;
    old_low.start_at_ms = now_ms() - 10_000;
    c.enqueue(old_low).await.unwrap();
    let mut new_high = enqueue_req(&shard, "new-high");
    new_high.priority = 0;
    c.enqueue(new_high).await.unwrap();
    let mut soon = enqueue_req(&shard, "soon");
    soon.priority = 0;
    soon.start_at_ms = now_ms() + 1_500;
    c.enqueue(soon).await.unwrap();

    let first = c.lease_tasks(lease_req("default", "w", 1)).await.unwrap().into_inner().tasks;
    assert_eq!(first[0].job_id, "new-high", "DECISIONS #5: priority first among due jobs");
    let second = c.lease_tasks(lease_req("default", "w", 5)).await.unwrap().into_inner().tasks;
    assert_eq!(second.iter().map(|t| t.job_id.as_str()).collect::<Vec<_>>(), vec!["old-low"], "future job not yet due");
    let later = lease_n(&mut c, "default", "w", 1).await;
    assert_eq!(later[0].job_id, "soon");
}

#[tokio::test]
async fn task_groups_are_isolated() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let mut a = enqueue_req(&shard, "a");
    a.task_group = "alpha".into();
    c.enqueue(a).await.unwrap();
    assert!(c.lease_tasks(lease_req("beta", "w", 10)).await.unwrap().into_inner().tasks.is_empty());
    let t = lease_n(&mut c, "alpha", "w", 1).await;
    assert_eq!(t[0].task_group, "alpha");
}
