//! The leader's background duties, run on every node and acting only while it
//! leads:
//! - on gaining leadership: restart lease clocks (see the module docs of
//!   [`crate::broker`]) and, on a fresh cluster, write the shard map;
//! - every tick: propose ExpireLeases for leases whose deadline passed.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Broker;
use crate::limits::EXPIRE_BATCH_MAX;
use crate::raft::RaftNode;
use crate::state_machine::{ExpiredLease, Ms, Op, ShardSpec, Tables, View};
use crate::storage::rocks::ReadKv;

pub struct Duties {
    pub node: Arc<RaftNode>,
    pub broker: Arc<Broker>,
    pub num_shards: u32,
    pub lease_ms: Ms,
    pub tick: Duration,
    /// Delete terminal jobs this long after they finished.
    pub retention_ms: Option<u64>,
}

impl Duties {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut led_term: Option<u64> = None;
        let mut last_purge = std::time::Instant::now();
        let mut shards_known = false;
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            // Acts only while this node leads *and* hears from a quorum
            // (check-quorum, `RaftNode::leadership`). When a quorum comes back
            // in the same term, lease clocks restart as after a takeover: the
            // workers' heartbeats were refused meanwhile.
            let term = match self.node.leadership() {
                crate::raft::Leadership::Leader => self.node.leader_term(),
                crate::raft::Leadership::Follower { .. } => None,
            };
            if term.is_none() {
                led_term = None;
                continue;
            }
            if term != led_term {
                led_term = term;
                tracing::info!(term = ?term, node = self.node.id(), "became leader");
                metrics::counter!("silo_leadership_gained_total").increment(1);
                self.broker.on_leadership_gained(crate::monotonic_ms(), self.lease_ms);
            }
            // Until the shard map exists (a fresh cluster, or a first attempt that failed).
            if !shards_known {
                shards_known = self.init_shards_if_fresh().await;
            }
            self.expire_leases().await;
            self.open_gates().await;
            if last_purge.elapsed() >= Duration::from_secs(1) {
                last_purge = std::time::Instant::now();
                self.purge_finished().await;
            }
        }
    }

    /// Retention: deletes terminal jobs older than `retention_ms`, a bounded
    /// batch per entry, until none is due.
    async fn purge_finished(&self) {
        let Some(retention_ms) = self.retention_ms else { return };
        let before_ms = self.node.leader_now_ms().saturating_sub(retention_ms as i64);
        loop {
            let op = Op::PurgeTerminal { before_ms, max: crate::limits::PURGE_BATCH_MAX };
            match self.node.propose(op).await {
                Ok(Ok(crate::state_machine::Output::Removed { count })) if count > 0 => {
                    metrics::counter!("silo_jobs_purged_total").increment(count);
                    if count < crate::limits::PURGE_BATCH_MAX as u64 {
                        return;
                    }
                }
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "retention purge");
                    return;
                }
            }
        }
    }

    /// Proposes AcquireLimits for pending attempts whose gate time passed.
    async fn open_gates(&self) {
        let due = self.broker.take_due_gates(self.node.leader_now_ms(), crate::limits::GATE_BATCH_MAX);
        if due.is_empty() {
            return;
        }
        let result = self.node.propose(Op::AcquireLimits { task_ids: due.clone() }).await;
        self.broker.release(&due);
        if let Err(e) = result {
            tracing::warn!(error = %e, "acquire limits");
        }
    }

    /// Proposes the shard map when none is applied yet; true once one exists.
    async fn init_shards_if_fresh(&self) -> bool {
        if !View(&ReadKv { db: self.node.db() }).shards().is_empty() {
            return true;
        }
        let shards = initial_shard_map(self.num_shards);
        match self.node.propose(Op::InitShards { shards }).await {
            Ok(Ok(_)) => {
                tracing::info!(num_shards = self.num_shards, "initialised shard map");
                true
            }
            Ok(Err(_)) => true, // an earlier leader already did
            Err(e) => {
                tracing::warn!(error = %e, "could not initialise the shard map yet; retrying");
                false
            }
        }
    }

    /// One lease-reaper pass: expires every lease past its deadline, in
    /// batches of [`EXPIRE_BATCH_MAX`]. A pass that found any is timed
    /// (`silo_lease_reaper_duration_seconds`) and counted.
    async fn expire_leases(&self) {
        let started = std::time::Instant::now();
        let found = self.expire_due_leases().await;
        if found {
            metrics::counter!("silo_lease_reaper_scans_total").increment(1);
            metrics::histogram!("silo_lease_reaper_duration_seconds").record(started.elapsed().as_secs_f64());
        }
    }

    /// Returns whether any lease was due.
    async fn expire_due_leases(&self) -> bool {
        let mut found = false;
        loop {
            let now = crate::monotonic_ms();
            let expired = self.broker.take_expired(now, EXPIRE_BATCH_MAX);
            if expired.is_empty() {
                return found;
            }
            found = true;
            let ids: Vec<String> = expired.iter().map(|(id, _)| id.clone()).collect();
            // The deadline on the wall clock, for the attempt's error message.
            let wall = crate::wall_clock_ms();
            let leases = expired
                .into_iter()
                .map(|(task_id, deadline)| ExpiredLease { task_id, deadline_ms: wall - (now - deadline) })
                .collect();
            match self.node.propose(Op::ExpireLeases { leases }).await {
                Ok(_) => metrics::counter!("silo_leases_expired_total").increment(ids.len() as u64),
                // Not proposed at all: the leases may be reaped again later.
                Err(e @ crate::raft::ProposeError::NotLeader { .. }) => {
                    self.broker.expiry_failed(&ids);
                    tracing::warn!(error = %e, "expire leases");
                    return found;
                }
                // The entry may still commit: the decision stands (heartbeats
                // stay refused); the reaper proposes it again after a while,
                // which is harmless (ExpireLeases skips leases already gone).
                Err(e) => {
                    tracing::warn!(error = %e, "expire leases: outcome unknown; will propose again");
                    return found;
                }
            }
        }
    }
}

/// `n` shards splitting the 64-bit tenant-hash space evenly (SEMANTICS §2.2):
/// boundary_i = floor(i·2^64 / n) as 16 lowercase hex digits.
pub fn initial_shard_map(n: u32) -> Vec<ShardSpec> {
    let n = n.max(1);
    let boundary = |i: u32| -> String {
        let b = ((i as u128) << 64) / n as u128;
        format!("{:016x}", b as u64)
    };
    (0..n)
        .map(|i| ShardSpec {
            id: uuid::Uuid::new_v4().to_string(),
            range_start: if i == 0 { String::new() } else { boundary(i) },
            range_end: if i + 1 == n { String::new() } else { boundary(i + 1) },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::initial_shard_map;

    #[test]
    fn shard_map_partitions_the_space() {
        let one = initial_shard_map(1);
        assert_eq!((one[0].range_start.as_str(), one[0].range_end.as_str()), ("", ""));
        let m = initial_shard_map(8);
        assert_eq!(m[0].range_start, "");
        assert_eq!(m[0].range_end, "2000000000000000");
        assert_eq!(m[7].range_end, "");
        for w in m.windows(2) {
            assert_eq!(w[0].range_end, w[1].range_start);
        }
    }
}
