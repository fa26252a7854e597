//! Nemeses: the faults, one at a time, on a seeded schedule.
//!
//! | name | fault | undone by |
//! |---|---|---|
//! | `kill` | kill -9 a random node | restart it on its data |
//! | `kill-leader` | kill -9 the leader | restart it |
//! | `pause` | SIGSTOP a random node | SIGCONT |
//! | `pause-leader` | SIGSTOP the leader | SIGCONT |
//! | `partition-leader` | isolate the leader from every peer, both ways | heal |
//! | `partition-halves` | a random minority cut from the majority | heal |
//! | `partition-bridge` | two halves cut from each other, one node sees both | heal |
//! | `deaf-leader` | the leader hears no peer (its packets still go out) | heal |
//! | `membership` | remove a random voter, under load | add it back as learner, then promote |
//! | `clock` | one node's wall clock jumps ±2–10 s, then the other way | offset back to 0 |
//!
//! Groups: `partition` (the four partitions), `all` (everything), `none`.
//! A slow disk is not offered: without a FUSE layer or a device mapper table
//! (neither available here) there is no way to slow one node's fsync alone.
//!
//! Every fault is recorded as a StartFault and a StopFault op in the history;
//! [`Nemesis::heal_all`] undoes whatever is active, whatever the schedule did.
use std::collections::BTreeSet;
use std::time::Duration;

use crate::history::F;
use anyhow::bail;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use silo::pb::raft as rpb;
use std::sync::Arc;

use crate::client::Recorder;
use crate::db::Db;
use crate::net::Net;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Kill,
    KillLeader,
    Pause,
    PauseLeader,
    PartitionLeader,
    PartitionHalves,
    PartitionBridge,
    DeafLeader,
    Membership,
    Clock,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Kill,
        Kind::KillLeader,
        Kind::Pause,
        Kind::PauseLeader,
        Kind::PartitionLeader,
        Kind::PartitionHalves,
        Kind::PartitionBridge,
        Kind::DeafLeader,
        Kind::Membership,
        Kind::Clock,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::KillLeader => "kill-leader",
            Kind::Pause => "pause",
            Kind::PauseLeader => "pause-leader",
            Kind::PartitionLeader => "partition-leader",
            Kind::PartitionHalves => "partition-halves",
            Kind::PartitionBridge => "partition-bridge",
            Kind::DeafLeader => "deaf-leader",
            Kind::Membership => "membership",
            Kind::Clock => "clock",
        }
    }
}

/// Parses `--nemesis`: a comma list of names and groups.
pub fn parse(list: &str) -> anyhow::Result<Vec<Kind>> {
    let mut out = BTreeSet::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "all" => out.extend(Kind::ALL),
            "none" => {}
            "partition" => {
                out.extend([Kind::PartitionLeader, Kind::PartitionHalves, Kind::PartitionBridge, Kind::DeafLeader])
            }
            w => match Kind::ALL.iter().find(|k| k.name() == w) {
                Some(k) => {
                    out.insert(*k);
                }
                None => {
                    let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                    bail!(
                        "unknown nemesis {w:?}; expected a comma list of {} or the groups partition, all, none",
                        names.join(", ")
                    )
                }
            },
        }
    }
    Ok(out.into_iter().collect())
}

/// What is broken right now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Active {
    Killed(u64),
    Paused(u64),
    Partitioned,
    Removed(u64),
    /// Node and the offset of its first jump (s).
    Clock(u64, i64),
}

pub struct Nemesis {
    pub db: Db,
    pub net: Net,
    rec: Arc<Recorder>,
    rng: SmallRng,
    kinds: Vec<Kind>,
    active: Option<(Kind, Active)>,
    /// Seconds of calm between faults, and of each fault (min, max).
    pub interval_s: (u64, u64),
    pub hold_s: (u64, u64),
}

impl Nemesis {
    pub fn new(db: Db, net: Net, rec: Arc<Recorder>, seed: u64, kinds: Vec<Kind>) -> Nemesis {
        Nemesis {
            db,
            net,
            rec,
            rng: SmallRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973),
            kinds,
            active: None,
            interval_s: (2, 5),
            hold_s: (3, 8),
        }
    }

    fn ids(&self) -> Vec<u64> {
        self.db.cluster.nodes.keys().copied().collect()
    }

    /// Runs faults until `until` (recorder ms) or `stop` says so, then heals.
    pub async fn run(&mut self, until_ms: f64, stop: &std::sync::atomic::AtomicBool) {
        use std::sync::atomic::Ordering;
        if self.kinds.is_empty() {
            return;
        }
        while self.rec.now_ms() < until_ms && !stop.load(Ordering::SeqCst) {
            let calm = self.rng.gen_range(self.interval_s.0..=self.interval_s.1);
            self.sleep_until(calm * 1000, until_ms, stop).await;
            if self.rec.now_ms() >= until_ms || stop.load(Ordering::SeqCst) {
                break;
            }
            let kind = *self.kinds.choose(&mut self.rng).expect("kinds");
            if let Err(e) = self.start(kind).await {
                tracing::warn!(nemesis = kind.name(), error = %e, "fault not applied");
                self.rec.nemesis(F::StopFault, kind.name(), format!("not applied: {e}"), None);
                continue;
            }
            let hold = self.rng.gen_range(self.hold_s.0..=self.hold_s.1) * 1000;
            if kind == Kind::Clock {
                // Jump the other way half-way through.
                self.sleep_until(hold / 2, f64::MAX, stop).await;
                if let Some((_, Active::Clock(id, first))) = self.active.clone() {
                    // The other way from the first jump.
                    let offset = -first.signum() * self.rng.gen_range(2..=10);
                    if self.db.set_clock(id, offset).is_ok() {
                        self.rec.nemesis(F::StartFault, "clock", format!("n{id} clock jumps to {offset:+} s"), None);
                    }
                }
                self.sleep_until(hold / 2, f64::MAX, stop).await;
            } else {
                self.sleep_until(hold, f64::MAX, stop).await;
            }
            self.stop_active().await;
        }
        self.heal_all().await;
    }

    async fn sleep_until(&self, ms: u64, until_ms: f64, stop: &std::sync::atomic::AtomicBool) {
        let end = self.rec.now_ms() + ms as f64;
        while self.rec.now_ms() < end.min(until_ms) && !stop.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn start(&mut self, kind: Kind) -> anyhow::Result<()> {
        let leader = self.db.leader().await;
        let ids = self.ids();
        let random = *ids.choose(&mut self.rng).expect("nodes");
        let need_leader = || leader.ok_or_else(|| anyhow::anyhow!("no leader to target"));
        let (active, detail, target) = match kind {
            Kind::Kill | Kind::KillLeader => {
                let id = if kind == Kind::Kill { random } else { need_leader()? };
                self.db.cluster.kill(id);
                (Active::Killed(id), format!("kill -9 n{id}"), Some(id))
            }
            Kind::Pause | Kind::PauseLeader => {
                let id = if kind == Kind::Pause { random } else { need_leader()? };
                self.db.cluster.pause(id);
                (Active::Paused(id), format!("SIGSTOP n{id}"), Some(id))
            }
            Kind::PartitionLeader => {
                let l = need_leader()?;
                let others: Vec<usize> = ids.iter().filter(|&&i| i != l).map(|&i| i as usize).collect();
                self.net.partition(&[l as usize], &others)?;
                (Active::Partitioned, format!("n{l} isolated from {}", names(&others)), Some(l))
            }
            Kind::PartitionHalves => {
                let mut shuffled: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
                shuffled.shuffle(&mut self.rng);
                let minority = (shuffled.len() - 1) / 2;
                let (a, b) = shuffled.split_at(minority.max(1));
                self.net.partition(a, b)?;
                let hit = leader.filter(|l| a.contains(&(*l as usize)));
                (Active::Partitioned, format!("{} | {}", names(a), names(b)), hit)
            }
            Kind::PartitionBridge => {
                let mut shuffled: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
                shuffled.shuffle(&mut self.rng);
                let bridge = shuffled[0];
                let rest = &shuffled[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                self.net.partition(a, b)?;
                (Active::Partitioned, format!("{} | {} bridged by n{bridge}", names(a), names(b)), None)
            }
            Kind::DeafLeader => {
                let l = need_leader()?;
                for &p in ids.iter().filter(|&&i| i != l) {
                    self.net.cut(p as usize, l as usize)?;
                }
                (Active::Partitioned, format!("n{l} hears no peer (one-way)"), Some(l))
            }
            Kind::Membership => {
                let l = need_leader()?;
                let mut admin = self.db.cluster.admin(l).await?;
                let req = rpb::ChangeMembershipRequest { add_voters: vec![], remove: vec![random] };
                tokio::time::timeout(Duration::from_secs(10), admin.change_membership(req)).await??;
                (Active::Removed(random), format!("voter n{random} removed"), (random == l).then_some(l))
            }
            Kind::Clock => {
                let offset = self.rng.gen_range(2..=10) * if self.rng.gen_bool(0.5) { 1 } else { -1 };
                self.db.set_clock(random, offset)?;
                (Active::Clock(random, offset), format!("n{random} clock {offset:+} s"), None)
            }
        };
        let leader_hit = target.filter(|t| Some(*t) == leader);
        self.rec.nemesis(F::StartFault, kind.name(), detail, leader_hit);
        self.active = Some((kind, active));
        Ok(())
    }

    /// Undoes the active fault, if any.
    pub async fn stop_active(&mut self) {
        let Some((kind, active)) = self.active.take() else { return };
        let detail = match self.undo(&active).await {
            Ok(d) => d,
            Err(e) => format!("undo failed: {e} (heal_all retries)"),
        };
        if detail.starts_with("undo failed") {
            self.active = Some((kind, active));
        }
        self.rec.nemesis(F::StopFault, kind.name(), detail, None);
    }

    async fn undo(&mut self, active: &Active) -> anyhow::Result<String> {
        Ok(match *active {
            Active::Killed(id) => {
                self.db.cluster.spawn(id)?;
                format!("n{id} restarted")
            }
            Active::Paused(id) => {
                self.db.cluster.resume(id);
                format!("SIGCONT n{id}")
            }
            Active::Partitioned => {
                self.net.heal()?;
                "network healed".to_string()
            }
            Active::Clock(id, _) => {
                self.db.set_clock(id, 0)?;
                format!("n{id} clock reset")
            }
            Active::Removed(id) => {
                self.readd(id).await?;
                format!("n{id} added back as learner and promoted to voter")
            }
        })
    }

    async fn readd(&self, id: u64) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let r: anyhow::Result<()> = async {
                let l = self.db.leader().await.ok_or_else(|| anyhow::anyhow!("no leader"))?;
                let mut admin = self.db.cluster.admin(l).await?;
                let add = rpb::AddLearnerRequest { node_id: id, addr: Db::addr(id) };
                tokio::time::timeout(Duration::from_secs(20), admin.add_learner(add)).await??;
                let promote = rpb::ChangeMembershipRequest { add_voters: vec![id], remove: vec![] };
                tokio::time::timeout(Duration::from_secs(20), admin.change_membership(promote)).await??;
                Ok(())
            }
            .await;
            match r {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "re-adding n{id}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Undoes everything: the active fault, then (idempotently) the network,
    /// paused and killed nodes and clocks, whatever state the run left.
    pub async fn heal_all(&mut self) {
        self.stop_active().await;
        if let Some((kind, active)) = self.active.take() {
            if let Err(e) = self.undo(&active).await {
                tracing::error!(nemesis = kind.name(), error = %e, "could not undo fault");
            }
        }
        let _ = self.net.heal();
        for id in self.ids() {
            let _ = self.db.set_clock(id, 0);
            self.db.cluster.resume(id);
            if !self.db.cluster.nodes[&id].is_running() {
                if let Err(e) = self.db.cluster.spawn(id) {
                    tracing::error!(error = %e, "could not restart n{id}");
                }
            }
        }
        // A membership change whose answer was lost may have removed a voter
        // the schedule never recorded as removed: add back every node missing.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let voters = loop {
            let leader = self.db.leader().await;
            if let Some(s) = match leader {
                Some(l) => self.db.status(l).await,
                None => None,
            } {
                break Some(s.voters.iter().map(|m| m.id).collect::<Vec<u64>>());
            }
            if tokio::time::Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        for id in self.ids() {
            if voters.as_ref().is_some_and(|v| !v.contains(&id)) {
                tracing::warn!("n{id} is not a voter after the schedule; adding it back");
                if let Err(e) = self.readd(id).await {
                    tracing::error!(error = %e, "could not add n{id} back");
                }
            }
        }
    }
}

fn names(ids: &[usize]) -> String {
    ids.iter().map(|i| format!("n{i}")).collect::<Vec<_>>().join(",")
}
