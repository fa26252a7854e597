//! Bad input: INVALID_ARGUMENT (or the documented code) with a clear message,
//! and nothing written.
use std::collections::HashMap;

use silo::pb::silo as pb;
use tonic::Code;

use crate::support::*;

type Mutation = Box<dyn Fn(&mut pb::EnqueueRequest)>;

async fn total_jobs(c: &mut Client) -> i64 {
    let info = c.get_node_info(pb::GetNodeInfoRequest {}).await.unwrap().into_inner();
    info.owned_shards.iter().map(|s| s.total_jobs).sum()
}

#[tokio::test]
async fn enqueue_validation_rows() {
    let s = Server::start(Opts { max_payload_bytes: Some(1024), ..Opts::default() }).await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let cases: Vec<(Mutation, Code, &str)> = vec![
        (Box::new(|r| r.shard = "not-a-uuid".into()), Code::InvalidArgument, "invalid shard ID: not-a-uuid"),
        (Box::new(|r| r.shard = uuid::Uuid::new_v4().to_string()), Code::NotFound, "shard not found"),
        (
            Box::new(|r| r.tenant = Some("acme".into())),
            Code::FailedPrecondition,
            "tenant must not be provided when tenancy is disabled on the server",
        ),
        (Box::new(|r| r.priority = 100), Code::InvalidArgument, "priority must be between 0 and 99"),
        (
            Box::new(|r| r.metadata = (0..17).map(|i| (format!("k{i}"), "v".to_string())).collect()),
            Code::InvalidArgument,
            "metadata has too many entries (max 16)",
        ),
        (
            Box::new(|r| r.metadata = HashMap::from([("k".repeat(64), "v".into())])),
            Code::InvalidArgument,
            "metadata key too long (must be < 64 chars)",
        ),
        (
            Box::new(|r| r.metadata = HashMap::from([("k".into(), "v".repeat(65_535))])),
            Code::InvalidArgument,
            "metadata value too long (must be < u16::MAX bytes)",
        ),
        (Box::new(|r| r.task_group = String::new()), Code::InvalidArgument, "task_group is required"),
        (
            Box::new(|r| r.task_group = "g".repeat(65)),
            Code::InvalidArgument,
            "task_group too long (must be <= 64 chars)",
        ),
        (
            Box::new(|r| r.payload = msgpack(&[0u8; 1025])),
            Code::InvalidArgument,
            "payload too large: 1025 bytes (max 1024)",
        ),
        (Box::new(|r| r.id = "i".repeat(513)), Code::InvalidArgument, "id too long"),
        (
            Box::new(|r| {
                r.retry_policy = Some(pb::RetryPolicy { initial_interval_ms: -1, ..Default::default() });
            }),
            Code::InvalidArgument,
            "retry_policy.initial_interval_ms must be >= 0",
        ),
        (
            Box::new(|r| {
                r.retry_policy = Some(pb::RetryPolicy { backoff_factor: f64::NAN, ..Default::default() });
            }),
            Code::InvalidArgument,
            "retry_policy.backoff_factor",
        ),
        (
            Box::new(|r| {
                r.limits = vec![pb::Limit {
                    limit: Some(pb::limit::Limit::Concurrency(pb::ConcurrencyLimit {
                        key: String::new(),
                        max_concurrency: 1,
                    })),
                }]
            }),
            Code::InvalidArgument,
            "limits[0] key is required",
        ),
    ];
    for (mutate, code, message) in cases {
        let mut req = enqueue_req(&shard, "v");
        mutate(&mut req);
        assert_status(c.enqueue(req).await, code, message);
    }
    assert_eq!(total_jobs(&mut c).await, 0, "no rejected enqueue wrote anything");
    assert_status(c.get_job(job_req(&shard, "v")).await, Code::NotFound, "job not found");
    // 16 entries and a 63-char key are fine
    let mut ok = enqueue_req(&shard, "v");
    ok.metadata = (0..16).map(|i| (format!("{i}{}", "k".repeat(60)), "v".to_string())).collect();
    ok.priority = 99;
    c.enqueue(ok).await.unwrap();
    assert_eq!(total_jobs(&mut c).await, 1);
}

#[tokio::test]
async fn lease_tasks_requires_a_task_group() {
    let s = Server::start_default().await;
    let mut c = s.client().await;
    let r = c.lease_tasks(lease_req("", "w", 1)).await;
    assert_status(r, Code::InvalidArgument, "task_group is required");
    let r = c.lease_tasks(lease_req("g", &"w".repeat(513), 1)).await;
    assert_status(r, Code::InvalidArgument, "worker_id too long");
    let mut bad = lease_req("g", "w", 1);
    bad.shard = Some("zzz".into());
    assert_status(c.lease_tasks(bad).await, Code::InvalidArgument, "invalid shard ID: zzz");
}

#[tokio::test]
async fn tenancy_rules() {
    let s = Server::start(Opts { tenancy: true, num_shards: 2, ..Opts::default() }).await;
    let shards = [s.shard(0).await, s.shard(1).await];
    let mut c = s.client().await;
    let hash = silo::grpc::tenant_hash("acme");
    let (home, away) = if hash.as_str() < "8000000000000000" { (0, 1) } else { (1, 0) };

    let mut req = enqueue_req(&shards[home], "t1");
    assert_status(c.enqueue(req.clone()).await, Code::InvalidArgument, "tenant id required");
    req.tenant = Some("t".repeat(65));
    assert_status(c.enqueue(req.clone()).await, Code::InvalidArgument, "invalid tenant id");
    req.tenant = Some("acme".into());
    req.shard = shards[away].clone();
    let msg = format!("tenant 'acme' is not within shard {} range", shards[away]);
    let st = assert_status(c.enqueue(req.clone()).await, Code::FailedPrecondition, &msg);
    assert!(st.message().ends_with("refresh topology and retry"), "{}", st.message());
    req.shard = shards[home].clone();
    c.enqueue(req).await.unwrap();

    // same id in another tenant is a different job
    let mut other = enqueue_req(&shards[home], "t1");
    let other_tenant = (0..1000).map(|i| format!("tenant-{i}")).find(|t| {
        let h = silo::grpc::tenant_hash(t);
        (h.as_str() < "8000000000000000") == (home == 0)
    });
    other.tenant = other_tenant.clone();
    c.enqueue(other).await.unwrap();

    let mut get = job_req(&shards[home], "t1");
    assert_status(c.get_job(get.clone()).await, Code::InvalidArgument, "tenant id required");
    get.tenant = Some("acme".into());
    assert_eq!(c.get_job(get).await.unwrap().into_inner().id, "t1");

    let t = lease_n(&mut c, "default", "w", 2).await;
    let acme = t.iter().find(|t| t.tenant_id.as_deref() == Some("acme")).expect("acme task").clone();
    let mut beat = pb::HeartbeatRequest {
        shard: acme.shard.clone(),
        worker_id: "w".into(),
        task_id: acme.id.clone(),
        tenant_id: None,
    };
    assert_status(
        c.heartbeat(beat.clone()).await,
        Code::InvalidArgument,
        "tenant_id is required for worker operations when tenancy is enabled",
    );
    beat.tenant_id = Some("acme".into());
    c.heartbeat(beat).await.unwrap();
    let mut report = success_req(&acme, b"\x01");
    report.tenant_id = None;
    assert_status(c.report_outcome(report.clone()).await, Code::InvalidArgument, "tenant_id is required");
    report.tenant_id = Some("acme".into());
    c.report_outcome(report).await.unwrap();

    // DECISIONS #10: a worker may restrict itself to one tenant
    let mut more = enqueue_req(&shards[home], "t2");
    more.tenant = other_tenant.clone();
    c.enqueue(more).await.unwrap();
    let mut only_acme = lease_req("default", "w", 10);
    only_acme.tenant = Some("acme".into());
    assert!(c.lease_tasks(only_acme).await.unwrap().into_inner().tasks.is_empty());
    let mut only_other = lease_req("default", "w", 10);
    only_other.tenant = other_tenant;
    assert_eq!(c.lease_tasks(only_other).await.unwrap().into_inner().tasks.len(), 1);
}

#[tokio::test]
async fn worker_calls_ignore_tenant_when_tenancy_is_off() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    c.enqueue(enqueue_req(&shard, "w")).await.unwrap();
    let t = lease_n(&mut c, "default", "w", 1).await.remove(0);
    let beat = pb::HeartbeatRequest {
        shard: shard.clone(),
        worker_id: "w".into(),
        task_id: t.id.clone(),
        tenant_id: Some("x".into()),
    };
    c.heartbeat(beat).await.unwrap();
}
