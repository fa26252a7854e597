//! Topology, node info, ResetShards, auth, health, reflection-adjacent and
//! unimplemented calls.
use silo::pb::silo as pb;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn cluster_info_covers_the_hash_space() {
    let s = Server::start(Opts { num_shards: 4, ..Opts::default() }).await;
    let mut c = s.client().await;
    let info = c.get_cluster_info(pb::GetClusterInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.num_shards, 4);
    assert_eq!(info.this_node_id, "1");
    assert_eq!(info.this_grpc_addr, s.addr);
    assert_eq!(info.members.len(), 1);
    assert_eq!(info.members[0].grpc_addr, s.addr);
    let owners = &info.shard_owners;
    assert_eq!(owners.first().unwrap().range_start, "");
    assert_eq!(owners.last().unwrap().range_end, "");
    for w in owners.windows(2) {
        assert_eq!(w[0].range_end, w[1].range_start);
    }
    assert_eq!(owners[1].range_start, "4000000000000000");
    for o in owners {
        assert_eq!(o.grpc_addr, s.addr);
        assert_eq!(o.node_id, "1");
        uuid::Uuid::parse_str(&o.shard_id).unwrap();
    }
}

#[tokio::test]
async fn node_info_counts_jobs() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    c.enqueue(enqueue_req(&shard, "a")).await.unwrap();
    c.enqueue(enqueue_req(&shard, "b")).await.unwrap();
    let t = lease_n(&mut c, "default", "w", 1).await.remove(0);
    c.report_outcome(success_req(&t, b"\x01")).await.unwrap();
    let info = c.get_node_info(pb::GetNodeInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.node_id, "1");
    assert_eq!(info.owned_shards.len(), 1);
    assert_eq!(info.owned_shards[0].shard_id, shard);
    assert_eq!(info.owned_shards[0].total_jobs, 2);
    assert_eq!(info.owned_shards[0].completed_jobs, 1);
    assert!(info.owned_shards[0].created_at_ms > 0);
}

#[tokio::test]
async fn reset_shards_only_in_dev_mode() {
    let prod = Server::start(Opts { dev_mode: false, ..Opts::default() }).await;
    let mut c = prod.client().await;
    let r = c.reset_shards(pb::ResetShardsRequest {}).await;
    assert_status(r, Code::PermissionDenied, "ResetShards is only available in dev mode");

    let dev = Server::start_default().await;
    let shard = dev.shard(0).await;
    let mut c = dev.client().await;
    c.enqueue(enqueue_req(&shard, "gone")).await.unwrap();
    let _leased = lease_n(&mut c, "default", "w", 1).await;
    c.enqueue(enqueue_req(&shard, "gone-too")).await.unwrap();
    let reset = c.reset_shards(pb::ResetShardsRequest {}).await.unwrap().into_inner();
    assert_eq!(reset.shards_reset, 1);
    assert_status(c.get_job(job_req(&shard, "gone")).await, Code::NotFound, "job not found");
    assert!(c.lease_tasks(lease_req("default", "w", 10)).await.unwrap().into_inner().tasks.is_empty());
    assert_eq!(dev.shard(0).await, shard, "the shard map survives a reset");
    c.enqueue(enqueue_req(&shard, "gone")).await.unwrap();
}

#[tokio::test]
async fn bearer_token_auth() {
    let s = Server::start(Opts { auth_token: Some("s3cret".into()), ..Opts::default() }).await;
    let mut c = s.client().await;
    let r = c.get_cluster_info(pb::GetClusterInfoRequest {}).await;
    assert_status(r, Code::Unauthenticated, "missing authorization header");
    let mut req = tonic::Request::new(pb::GetClusterInfoRequest {});
    req.metadata_mut().insert("authorization", "Bearer wrong".parse().unwrap());
    assert_status(c.get_cluster_info(req).await, Code::Unauthenticated, "invalid auth token");
    let mut req = tonic::Request::new(pb::GetClusterInfoRequest {});
    req.metadata_mut().insert("authorization", "s3cret".parse().unwrap());
    assert_status(c.get_cluster_info(req).await, Code::Unauthenticated, "invalid auth token");
    let mut req = tonic::Request::new(pb::GetClusterInfoRequest {});
    req.metadata_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
    c.get_cluster_info(req).await.unwrap();

    // health is outside auth and reports the service as serving
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", s.addr)).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest { service: "silo.v1.Silo".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

#[tokio::test]
async fn unsupported_admin_calls_are_unimplemented() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let r = c.cpu_profile(pb::CpuProfileRequest { duration_seconds: 1, frequency: 1 }).await;
    assert_eq!(r.unwrap_err().code(), Code::Unimplemented);
    let r = c.request_split(pb::RequestSplitRequest { shard_id: shard.clone(), split_point: "8".into() }).await;
    assert_eq!(r.unwrap_err().code(), Code::Unimplemented);
    let dropped = c.drop_tenant_holders(pb::DropTenantHoldersRequest { shard: shard.clone(), tenant: None }).await;
    assert_eq!(dropped.unwrap().into_inner().holders_dropped, 0);
}

#[tokio::test]
async fn retention_deletes_finished_jobs_only() {
    let s = Server::start(Opts { extra_toml: "retention_ms = 300\n".into(), ..Opts::default() }).await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    c.enqueue(enqueue_req(&shard, "done")).await.unwrap();
    let t = lease_n(&mut c, "default", "w", 1).await.remove(0);
    c.report_outcome(success_req(&t, b"\x01")).await.unwrap();
    let mut later = enqueue_req(&shard, "waiting");
    later.start_at_ms = now_ms() + 3_600_000;
    c.enqueue(later).await.unwrap();
    let c2 = c.clone();
    let shard2 = shard.clone();
    wait_until("the finished job is purged", std::time::Duration::from_secs(20), || {
        let mut c = c2.clone();
        let shard = shard2.clone();
        async move { c.get_job(job_req(&shard, "done")).await.err().filter(|e| e.code() == Code::NotFound) }
    })
    .await;
    let job = c.get_job(job_req(&shard, "waiting")).await.unwrap().into_inner();
    assert_eq!(job.status, pb::JobStatus::Scheduled as i32, "unfinished jobs are kept");
    let info = c.get_node_info(pb::GetNodeInfoRequest {}).await.unwrap().into_inner();
    assert_eq!((info.owned_shards[0].total_jobs, info.owned_shards[0].completed_jobs), (1, 0));
}

fn imported(shard: &str, id: &str, attempts: Vec<pb::ImportAttempt>) -> pb::ImportJobRequest {
    pb::ImportJobRequest {
        shard: shard.into(),
        id: id.into(),
        priority: 10,
        enqueue_time_ms: 1_600_000_000_000,
        start_at_ms: 0,
        retry_policy: None,
        payload: msgpack(&[0x01]),
        limits: vec![],
        tenant: None,
        metadata: Default::default(),
        task_group: "imported".into(),
        attempts,
    }
}

fn attempt(status: pb::AttemptStatus) -> pb::ImportAttempt {
    pb::ImportAttempt {
        status: status as i32,
        started_at_ms: 1_600_000_000_000,
        finished_at_ms: 1_600_000_001_000,
        result: (status == pb::AttemptStatus::Succeeded).then(|| msgpack(&[0xc3]).unwrap()),
        error_code: (status == pb::AttemptStatus::Failed).then(|| "OLD_ERROR".to_string()),
        error_data: None,
    }
}

#[tokio::test]
async fn import_jobs_with_history() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let mut retrying = imported(&shard, "retrying", vec![attempt(pb::AttemptStatus::Failed)]);
    retrying.retry_policy = retry_policy(2, 1, 1, 1.0);
    let mut missing_id = imported(&shard, "", vec![]);
    missing_id.id = String::new();
    let req = pb::ImportJobsRequest {
        jobs: vec![
            imported(&shard, "fresh", vec![]),
            imported(&shard, "done", vec![attempt(pb::AttemptStatus::Failed), attempt(pb::AttemptStatus::Succeeded)]),
            imported(&shard, "failed", vec![attempt(pb::AttemptStatus::Failed)]),
            retrying,
            imported(&shard, "running", vec![attempt(pb::AttemptStatus::Running)]),
            imported(&shard, "fresh", vec![]),
            missing_id,
        ],
    };
    let results = c.import_jobs(req).await.unwrap().into_inner().results;
    let summary: Vec<(String, bool, i32)> = results.iter().map(|r| (r.id.clone(), r.success, r.status)).collect();
    use pb::JobStatus as S;
    assert_eq!(
        summary,
        vec![
            ("fresh".into(), true, S::Scheduled as i32),
            ("done".into(), true, S::Succeeded as i32),
            ("failed".into(), true, S::Failed as i32),
            ("retrying".into(), true, S::Scheduled as i32),
            ("running".into(), false, S::Failed as i32),
            ("fresh".into(), false, S::Failed as i32),
            ("".into(), false, S::Failed as i32),
        ]
    );
    assert!(results[4].error.as_deref().unwrap().contains("must be finished"));
    assert!(results[5].error.as_deref().unwrap().contains("already exists"));
    assert!(results[6].error.as_deref().unwrap().contains("id is required"));

    let done = c.get_job(job_req(&shard, "done")).await.unwrap().into_inner();
    assert_eq!(done.enqueue_time_ms, 1_600_000_000_000);
    assert_eq!(done.attempts.iter().map(|a| a.attempt_number).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(bytes_of(&done.result), vec![0xc3]);
    let tasks = lease_n(&mut c, "imported", "w", 2).await;
    let mut ids: Vec<_> = tasks.iter().map(|t| (t.job_id.clone(), t.attempt_number)).collect();
    ids.sort();
    assert_eq!(ids, vec![("fresh".to_string(), 1), ("retrying".to_string(), 2)]);
}
