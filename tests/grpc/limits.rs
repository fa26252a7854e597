//! Limits through gRPC: concurrency, floating concurrency with refresh tasks,
//! rate limits, DropTenantHolders.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use silo::pb::silo as pb;

use crate::support::*;

fn concurrency(key: &str, max: u32) -> pb::Limit {
    pb::Limit {
        limit: Some(pb::limit::Limit::Concurrency(pb::ConcurrencyLimit { key: key.into(), max_concurrency: max })),
    }
}

fn floating(key: &str, default_max: u32, interval_ms: i64) -> pb::Limit {
    pb::Limit {
        limit: Some(pb::limit::Limit::FloatingConcurrency(pb::FloatingConcurrencyLimit {
            key: key.into(),
            default_max_concurrency: default_max,
            refresh_interval_ms: interval_ms,
            metadata: HashMap::from([("source".to_string(), "test".to_string())]),
        })),
    }
}

fn rate(name: &str, limit: i64, duration_ms: i64, algorithm: i32, max_retries: u32) -> pb::Limit {
    pb::Limit {
        limit: Some(pb::limit::Limit::RateLimit(pb::GubernatorRateLimit {
            name: name.into(),
            unique_key: "k".into(),
            limit,
            duration_ms,
            hits: 1,
            algorithm,
            behavior: 0,
            retry_policy: Some(pb::RateLimitRetryPolicy {
                initial_backoff_ms: 20,
                max_backoff_ms: 200,
                backoff_multiplier: 2.0,
                max_retries,
            }),
        })),
    }
}

async fn enqueue_limited(c: &mut Client, shard: &str, id: &str, limits: Vec<pb::Limit>) {
    let mut r = enqueue_req(shard, id);
    r.limits = limits;
    c.enqueue(r).await.unwrap();
}

async fn lease_now(c: &mut Client, max: u32) -> pb::LeaseTasksResponse {
    c.lease_tasks(lease_req("default", "w", max)).await.unwrap().into_inner()
}

#[tokio::test]
async fn concurrency_limit_grants_in_order_and_releases_on_report_and_expiry() {
    let s = Server::start(Opts { lease_ms: 1_000, ..Opts::default() }).await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    for id in ["a", "b", "c"] {
        enqueue_limited(&mut c, &shard, id, vec![concurrency("q", 1)]).await;
    }
    let first = lease_now(&mut c, 10).await.tasks;
    assert_eq!(first.iter().map(|t| t.job_id.as_str()).collect::<Vec<_>>(), vec!["a"], "one slot");
    let job_b = c.get_job(job_req(&shard, "b")).await.unwrap().into_inner();
    assert_eq!(job_b.status, pb::JobStatus::Scheduled as i32);
    assert!(lease_now(&mut c, 10).await.tasks.is_empty());
    // a report frees the slot and grants the next waiter in the same command
    c.report_outcome(success_req(&first[0], b"\x01")).await.unwrap();
    let second = lease_now(&mut c, 10).await.tasks;
    assert_eq!(second.iter().map(|t| t.job_id.as_str()).collect::<Vec<_>>(), vec!["b"]);
    // b's worker vanishes: lease expiry frees the slot for c
    let third = lease_n(&mut c, "default", "w", 1).await;
    assert_eq!(third[0].job_id, "c");
    let b = c.get_job(job_req(&shard, "b")).await.unwrap().into_inner();
    assert_eq!(b.status, pb::JobStatus::Failed as i32);
    assert_eq!(b.attempts[0].error_code.as_deref(), Some("WORKER_CRASHED"));
    // a limit with a different key is independent
    enqueue_limited(&mut c, &shard, "other", vec![concurrency("other-q", 1)]).await;
    assert_eq!(lease_now(&mut c, 10).await.tasks[0].job_id, "other");
    // cancelling a waiting job removes its request
    enqueue_limited(&mut c, &shard, "w1", vec![concurrency("q", 1)]).await;
    enqueue_limited(&mut c, &shard, "w2", vec![concurrency("q", 1)]).await;
    c.cancel_job(pb::CancelJobRequest { shard: shard.clone(), id: "w1".into(), tenant: None }).await.unwrap();
    c.report_outcome(success_req(&third[0], b"\x01")).await.unwrap();
    assert_eq!(lease_now(&mut c, 10).await.tasks[0].job_id, "w2");
}

#[tokio::test]
async fn future_jobs_take_no_slot_before_their_time() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let mut later = enqueue_req(&shard, "later");
    later.limits = vec![concurrency("q", 1)];
    later.start_at_ms = now_ms() + 3_600_000;
    c.enqueue(later).await.unwrap();
    enqueue_limited(&mut c, &shard, "now", vec![concurrency("q", 1)]).await;
    assert_eq!(lease_now(&mut c, 10).await.tasks[0].job_id, "now", "the future job holds no slot");
    // expediting the future job walks its limits now: the slot is taken, so it waits
    c.expedite_job(pb::ExpediteJobRequest { shard: shard.clone(), id: "later".into(), tenant: None }).await.unwrap();
    assert!(lease_now(&mut c, 10).await.tasks.is_empty());
    let r = c.expedite_job(pb::ExpediteJobRequest { shard: shard.clone(), id: "later".into(), tenant: None }).await;
    assert_status(r, tonic::Code::FailedPrecondition, "job has no pending task to expedite");
    let r = c
        .lease_task(pb::LeaseTaskRequest {
            shard: shard.clone(),
            id: "later".into(),
            tenant: None,
            worker_id: "w".into(),
        })
        .await;
    assert_status(r, tonic::Code::FailedPrecondition, "job has no pending task in queue");
}

#[tokio::test]
async fn floating_limit_refresh_raises_and_lowers_the_max() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    for i in 0..4 {
        enqueue_limited(&mut c, &shard, &format!("f{i}"), vec![floating("fl", 1, 60_000)]).await;
    }
    let got = lease_now(&mut c, 10).await;
    assert_eq!(got.tasks.len(), 1, "default max 1");
    assert_eq!(got.refresh_tasks.len(), 1, "waiters trigger a refresh task");
    let refresh = &got.refresh_tasks[0];
    assert_eq!(refresh.queue_key, "fl");
    assert_eq!(refresh.current_max_concurrency, 1);
    assert_eq!(refresh.last_refreshed_at_ms, 0);
    assert_eq!(refresh.metadata.get("source").map(String::as_str), Some("test"));
    assert_eq!(refresh.task_group, "default");
    assert_eq!(refresh.shard, shard);
    // refresh leases heartbeat like task leases
    let beat = pb::HeartbeatRequest {
        shard: shard.clone(),
        worker_id: "w".into(),
        task_id: refresh.id.clone(),
        tenant_id: None,
    };
    assert!(!c.heartbeat(beat).await.unwrap().into_inner().cancelled);
    // the wrong report call does not find it
    let wrong = c
        .report_outcome(success_req(
            &pb::Task { id: refresh.id.clone(), shard: shard.clone(), ..Default::default() },
            b"\x01",
        ))
        .await;
    assert_status(wrong, tonic::Code::NotFound, "lease not found");
    let missing = pb::ReportRefreshOutcomeRequest {
        shard: shard.clone(),
        task_id: refresh.id.clone(),
        outcome: None,
        tenant_id: None,
    };
    assert_status(c.report_refresh_outcome(missing).await, tonic::Code::InvalidArgument, "missing outcome");
    // raise to 3: two more waiters are granted at once
    let raise = pb::ReportRefreshOutcomeRequest {
        shard: shard.clone(),
        task_id: refresh.id.clone(),
        outcome: Some(pb::report_refresh_outcome_request::Outcome::Success(pb::RefreshSuccess {
            new_max_concurrency: 3,
        })),
        tenant_id: None,
    };
    c.report_refresh_outcome(raise.clone()).await.unwrap();
    assert_status(c.report_refresh_outcome(raise).await, tonic::Code::NotFound, "lease not found");
    let more = lease_now(&mut c, 10).await;
    assert_eq!(more.tasks.len(), 2, "raised max grants waiters");
    assert!(more.refresh_tasks.is_empty(), "refresh interval not passed");
    let job = c.get_job(job_req(&shard, "f3")).await.unwrap().into_inner();
    assert_eq!(job.status, pb::JobStatus::Scheduled as i32, "the fourth still waits");
}

#[tokio::test]
async fn floating_limit_lowered_lets_running_jobs_finish_and_failures_back_off() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    for i in 0..4 {
        enqueue_limited(&mut c, &shard, &format!("g{i}"), vec![floating("fl", 2, 0)]).await;
    }
    let got = lease_now(&mut c, 10).await;
    assert_eq!(got.tasks.len(), 2);
    let refresh = got.refresh_tasks.first().expect("refresh task").clone();
    // failure: backs off, and with waiters a new refresh task is queued for later
    let fail = pb::ReportRefreshOutcomeRequest {
        shard: shard.clone(),
        task_id: refresh.id.clone(),
        outcome: Some(pb::report_refresh_outcome_request::Outcome::Failure(pb::RefreshFailure {
            code: "REFRESH_HANDLER_ERROR".into(),
            message: "boom".into(),
        })),
        tenant_id: None,
    };
    c.report_refresh_outcome(fail).await.unwrap();
    assert!(lease_now(&mut c, 10).await.refresh_tasks.is_empty(), "not before the 1 s backoff");
    let started = Instant::now();
    let retry = loop {
        let r = lease_now(&mut c, 10).await;
        assert!(r.tasks.is_empty(), "both slots are held");
        if let Some(t) = r.refresh_tasks.into_iter().next() {
            break t;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "refresh retried after backoff");
        tokio::time::sleep(POLL_EVERY).await;
    };
    assert!(started.elapsed() >= Duration::from_millis(800), "backoff ~1 s, got {:?}", started.elapsed());
    // lower to 1: the two running jobs keep running; finishing one grants nothing (2-1 ≥ 1)
    let lower = pb::ReportRefreshOutcomeRequest {
        shard: shard.clone(),
        task_id: retry.id.clone(),
        outcome: Some(pb::report_refresh_outcome_request::Outcome::Success(pb::RefreshSuccess {
            new_max_concurrency: 1,
        })),
        tenant_id: None,
    };
    c.report_refresh_outcome(lower).await.unwrap();
    c.report_outcome(success_req(&got.tasks[0], b"\x01")).await.unwrap();
    assert!(lease_now(&mut c, 10).await.tasks.is_empty(), "one holder left, max 1");
    c.report_outcome(success_req(&got.tasks[1], b"\x01")).await.unwrap();
    assert_eq!(lease_now(&mut c, 10).await.tasks.len(), 1, "then one at a time");
}

#[tokio::test]
async fn drop_tenant_holders_unsticks_a_queue() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    enqueue_limited(&mut c, &shard, "holder", vec![concurrency("q", 1)]).await;
    enqueue_limited(&mut c, &shard, "waiter", vec![concurrency("q", 1)]).await;
    let held = lease_now(&mut c, 10).await.tasks;
    assert_eq!(held.len(), 1);
    let dropped =
        c.drop_tenant_holders(pb::DropTenantHoldersRequest { shard: shard.clone(), tenant: None }).await.unwrap();
    assert_eq!(dropped.into_inner().holders_dropped, 1);
    assert_eq!(lease_now(&mut c, 10).await.tasks[0].job_id, "waiter");
    // the old holder finishing frees nothing twice
    c.report_outcome(success_req(&held[0], b"\x01")).await.unwrap();
}

#[tokio::test]
async fn rate_limit_exhausted_fails_with_rate_limited() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    enqueue_limited(&mut c, &shard, "first", vec![rate("rl", 1, 60_000, 0, 2)]).await;
    enqueue_limited(&mut c, &shard, "second", vec![rate("rl", 1, 60_000, 0, 2)]).await;
    assert_eq!(lease_now(&mut c, 10).await.tasks[0].job_id, "first");
    let c2 = c.clone();
    let shard2 = shard.clone();
    let job = wait_until("second job gives up on the rate limit", Duration::from_secs(20), || {
        let mut c = c2.clone();
        let shard = shard2.clone();
        async move {
            let j = c.get_job(job_req(&shard, "second")).await.ok()?.into_inner();
            (j.status == pb::JobStatus::Failed as i32).then_some(j)
        }
    })
    .await;
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(job.attempts[0].error_code.as_deref(), Some("RATE_LIMITED"));
}

/// Grant rate against the configured rate, measured over a few seconds.
#[tokio::test]
async fn rate_limit_grant_rate_matches_configuration() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    for (name, algorithm) in [("token", 0), ("leaky", 1)] {
        for i in 0..120 {
            let mut r = enqueue_req(&shard, &format!("{name}-{i}"));
            r.task_group = name.into();
            r.limits = vec![rate(name, 10, 1_000, algorithm, 0)];
            c.enqueue(r).await.unwrap();
        }
        let started = Instant::now();
        let mut granted = 0usize;
        while started.elapsed() < Duration::from_secs(3) {
            let got = c.lease_tasks(lease_req(name, "w", 50)).await.unwrap().into_inner().tasks;
            granted += got.len();
            tokio::time::sleep(POLL_EVERY).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let rate = granted as f64 / secs;
        eprintln!("{name} bucket: {granted} grants in {secs:.2} s = {rate:.1}/s (configured 10/s, burst 10)");
        // 10/s with a burst of 10: between ~20 and ~45 grants in 3 s
        assert!((15..=50).contains(&granted), "{name}: {granted} grants in {secs:.2}s");
    }
}
