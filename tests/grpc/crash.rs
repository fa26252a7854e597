//! Durability: SIGKILL after acknowledged writes, restart on the same data
//! directory, and every acknowledged change is still there.
use silo::pb::silo as pb;

use crate::support::*;

#[tokio::test]
async fn kill_nine_loses_no_acknowledged_change() {
    let mut s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let n = 200;
    let mut handles = Vec::new();
    for w in 0..4 {
        let mut c = c.clone();
        let shard = shard.clone();
        handles.push(tokio::spawn(async move {
            for i in (w..n).step_by(4) {
                c.enqueue(enqueue_req(&shard, &format!("k-{i}"))).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let leased = lease_n(&mut c, "default", "w", 60).await;
    for t in &leased[..40] {
        c.report_outcome(success_req(t, t.job_id.as_bytes())).await.unwrap();
    }
    c.cancel_job(pb::CancelJobRequest { shard: shard.clone(), id: leased[50].job_id.clone(), tenant: None })
        .await
        .unwrap();

    s.kill9();
    s.restart().await;
    let shard_after = s.shard(0).await;
    assert_eq!(shard_after, shard, "shard map survives");
    let mut c = s.client().await;
    for i in 0..n {
        let job = c.get_job(job_req(&shard, &format!("k-{i}"))).await.expect("acknowledged job survives").into_inner();
        assert!(job.status != pb::JobStatus::Failed as i32);
    }
    for t in &leased[..40] {
        let job = c.get_job(job_req(&shard, &t.job_id)).await.unwrap().into_inner();
        assert_eq!(job.status, pb::JobStatus::Succeeded as i32, "{}", t.job_id);
        assert_eq!(bytes_of(&job.result), t.job_id.as_bytes());
    }
    // still-running leases survive and keep their owner
    let running = &leased[45];
    let beat = pb::HeartbeatRequest {
        shard: shard.clone(),
        worker_id: "w".into(),
        task_id: running.id.clone(),
        tenant_id: None,
    };
    assert!(!c.heartbeat(beat).await.expect("lease survives restart").into_inner().cancelled);
    let cancelled = &leased[50];
    let beat = pb::HeartbeatRequest {
        shard: shard.clone(),
        worker_id: "w".into(),
        task_id: cancelled.id.clone(),
        tenant_id: None,
    };
    assert!(c.heartbeat(beat).await.unwrap().into_inner().cancelled, "cancellation record survives");
    // the queue is rebuilt: the 140 never-leased jobs are leasable exactly once
    let rest = lease_n(&mut c, "default", "w2", (n - 60) as usize).await;
    let mut ids: Vec<_> = rest.iter().map(|t| t.job_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), (n - 60) as usize);
    assert!(c.lease_tasks(lease_req("default", "w3", 10)).await.unwrap().into_inner().tasks.is_empty());
    // a report for a lease granted before the crash still lands
    c.report_outcome(success_req(running, b"\x01")).await.unwrap();
    // and a clean SIGTERM stop exits 0
    assert!(s.stop().success());
}
