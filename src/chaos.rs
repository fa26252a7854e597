//! Fault-injection measurements on a local cluster of real processes.
//!
//! `failover`: a client writes continuously while the leader is stopped,
//! with SIGKILL (a crash) or SIGTERM (a graceful shutdown that hands
//! leadership off); the write-unavailability window of a trial is the longest
//! gap between consecutive acknowledged writes from just before the signal to
//! the first write acknowledged after the process exited, as the client sees
//! it (including its redirect/retry behaviour). After each trial the node
//! restarts and the cluster converges before the next one.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::client::{msgpack, Client, ClientOptions};
use crate::pb::silo as pb;
use crate::testkit::{ClusterOpts, LocalCluster};

/// How `failover` stops the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StopSignal {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: graceful shutdown (drain, hand leadership off, exit).
    Term,
}

#[derive(Debug, Serialize)]
pub struct FailoverReport {
    pub signal: StopSignal,
    pub nodes: usize,
    pub trials: usize,
    pub windows_ms: Vec<u64>,
    pub median_ms: u64,
    pub max_ms: u64,
    pub min_ms: u64,
    pub acknowledged_writes: usize,
    pub lost_writes: usize,
}

pub async fn failover(bin: &Path, nodes: usize, trials: usize, signal: StopSignal) -> anyhow::Result<FailoverReport> {
    let mut cluster = LocalCluster::start(bin, None, ClusterOpts { nodes, ..ClusterOpts::default() })?;
    cluster.wait_for_leader(Duration::from_secs(60)).await.map_err(anyhow::Error::msg)?;
    let mut opts = ClientOptions::new(cluster.addrs());
    opts.call_timeout = Duration::from_secs(2);
    opts.max_backoff = Duration::from_millis(50);
    opts.retry_budget = Duration::from_secs(60);
    let client = Client::connect(opts).await?;

    let acked: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("fo-{i}");
                i += 1;
                let req = pb::EnqueueRequest {
                    id: id.clone(),
                    priority: 50,
                    payload: msgpack(vec![0xc0]),
                    task_group: "failover".into(),
                    ..Default::default()
                };
                if client.enqueue(req).await.is_ok() {
                    acked.lock().push((Instant::now(), id));
                }
            }
        })
    };

    let mut windows_ms = Vec::new();
    for trial in 0..trials {
        let leader = cluster.wait_for_leader(Duration::from_secs(60)).await.map_err(anyhow::Error::msg)?;
        let before = acked.lock().len();
        wait_for(|| acked.lock().len() >= before + 50, Duration::from_secs(30)).await?;
        let signalled_at = Instant::now();
        match signal {
            StopSignal::Kill => cluster.kill(leader),
            StopSignal::Term => {
                let status = cluster.terminate(leader);
                anyhow::ensure!(status.is_some_and(|s| s.success()), "node {leader} exited with {status:?}");
            }
        }
        // The process is gone: no later ack can come from it.
        let exited_at = Instant::now();
        wait_for(|| acked.lock().last().is_some_and(|(t, _)| *t > exited_at), Duration::from_secs(60)).await?;
        let window = {
            let a = acked.lock();
            let first_after = a.iter().map(|(t, _)| *t).find(|t| *t > exited_at).expect("waited for it");
            let last_before = a.iter().rev().map(|(t, _)| *t).find(|t| *t <= signalled_at).unwrap_or(signalled_at);
            let mut times: Vec<Instant> =
                a.iter().map(|(t, _)| *t).filter(|t| *t >= last_before && *t <= first_after).collect();
            times.dedup();
            times.windows(2).map(|w| w[1].duration_since(w[0]).as_millis() as u64).max().unwrap_or(0)
        };
        tracing::info!(trial, leader, window_ms = window, ?signal, "leader stopped");
        eprintln!("trial {}: stopped leader {leader} ({signal:?}), longest write gap {window} ms", trial + 1);
        windows_ms.push(window);
        cluster.spawn(leader)?;
        cluster.wait_for_leader(Duration::from_secs(60)).await.map_err(anyhow::Error::msg)?;
        cluster.wait_converged(0, Duration::from_secs(60)).await.map_err(anyhow::Error::msg)?;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await?;

    let acked = acked.lock().clone();
    let mut lost = 0;
    for (_, id) in &acked {
        if client.get_job(id, None, false).await.is_err() {
            lost += 1;
        }
    }
    let mut sorted = windows_ms.clone();
    sorted.sort_unstable();
    Ok(FailoverReport {
        signal,
        nodes,
        trials,
        median_ms: sorted.get(sorted.len() / 2).copied().unwrap_or(0),
        max_ms: sorted.last().copied().unwrap_or(0),
        min_ms: sorted.first().copied().unwrap_or(0),
        windows_ms,
        acknowledged_writes: acked.len(),
        lost_writes: lost,
    })
}

async fn wait_for(mut cond: impl FnMut() -> bool, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            anyhow::bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
