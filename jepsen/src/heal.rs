//! Checker (f), run against the live cluster after the drain: the cluster
//! heals. One leader that every node agrees on; every node a voter again;
//! every node at the same applied index and state digest; and every node able
//! to lead and commit: leadership is transferred to each in turn and a probe
//! job is enqueued through it (then cancelled, so it ends terminal).
use std::time::Duration;

use crate::checker::Verdict;
use silo::pb::raft as rpb;
use silo::pb::silo as pb;

use crate::db::Db;
use crate::workload::Shared;

pub async fn check(db: &Db, shared: &Shared) -> Verdict {
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let ids: Vec<u64> = db.cluster.nodes.keys().copied().collect();
    match db.cluster.wait_for_leader(Duration::from_secs(60)).await {
        Ok(l) => notes.push(format!("one leader after the heal: n{l}")),
        Err(e) => errors.push(format!("no single agreed leader: {e}")),
    }
    if let Some(l) = db.leader().await {
        if let Some(s) = db.status(l).await {
            let voters: Vec<u64> = s.voters.iter().map(|m| m.id).collect();
            if voters.len() != ids.len() {
                errors.push(format!("voters after the heal are {voters:?}, expected {ids:?}"));
            }
        }
    }
    match db.cluster.wait_converged(0, Duration::from_secs(60)).await {
        Ok((index, digest)) => notes.push(format!("converged at applied index {index}, digest {digest:016x}")),
        Err(e) => errors.push(e),
    }
    for &id in &ids {
        if let Err(e) = lead_and_commit(db, shared, id).await {
            errors.push(format!("n{id} could not lead and commit: {e}"));
        } else {
            notes.push(format!("n{id} led and committed a write"));
        }
    }
    match db.cluster.wait_converged(0, Duration::from_secs(60)).await {
        Ok((index, digest)) => notes.push(format!("after the transfers: applied index {index}, digest {digest:016x}")),
        Err(e) => errors.push(e),
    }
    Verdict { name: "cluster-heals".into(), valid: errors.is_empty(), error_count: errors.len(), errors, notes }
}

/// Transfers leadership to `id`, then enqueues and cancels a probe through
/// it; retried (a spurious election on a loaded machine moves leadership
/// away) until it works or 60 s pass.
async fn lead_and_commit(db: &Db, shared: &Shared, id: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match try_lead_and_commit(db, shared, id, deadline).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "n{id} did not lead and commit yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn try_lead_and_commit(db: &Db, shared: &Shared, id: u64, deadline: tokio::time::Instant) -> anyhow::Result<()> {
    loop {
        let leader = db.leader().await;
        if leader == Some(id) {
            break;
        }
        if let Some(l) = leader {
            let mut admin = db.cluster.admin(l).await?;
            let r = tokio::time::timeout(
                Duration::from_secs(20),
                admin.transfer_leader(rpb::TransferLeaderRequest { to: id }),
            )
            .await;
            tracing::info!(to = id, ?r, "transfer leader");
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "leadership did not move to n{id} within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let probe = format!("heal-probe-n{id}-{}", shared.seed);
    let req = pb::EnqueueRequest {
        shard: shared.conns.shard.clone(),
        id: probe.clone(),
        task_group: "jepsen-heal-probe".into(),
        ..Default::default()
    };
    let (_, r) = shared
        .conns
        .call(id, Duration::from_secs(10), false, |mut c| {
            let r = req.clone();
            async move { c.enqueue(r).await }
        })
        .await;
    r.map_err(|e| anyhow::anyhow!("enqueue through n{id}: {e}"))?;
    let cancel = pb::CancelJobRequest { shard: shared.conns.shard.clone(), id: probe, tenant: None };
    let (_, r) = shared
        .conns
        .call(id, Duration::from_secs(10), false, |mut c| {
            let r = cancel.clone();
            async move { c.cancel_job(r).await }
        })
        .await;
    r.map_err(|e| anyhow::anyhow!("cancel through n{id}: {e}"))?;
    Ok(())
}
