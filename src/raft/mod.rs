//! Consensus: the only module that imports openraft.
//!
//! [`RaftNode`] wraps one node of the (single) Raft group that holds every
//! shard: it opens the log and state-machine stores on the node's RocksDB,
//! bootstraps a fresh cluster once, proposes commands stamped with the leader's
//! clock, and answers "who leads?" for redirects. Everything above this module
//! talks in our own types ([`ProposeError`], [`Leadership`]).
#![allow(clippy::result_large_err)] // openraft::StorageError is large by design

pub mod batcher;
pub mod election;
pub mod log_store;
pub mod network;
pub mod sm_store;
pub mod snapshot;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use rocksdb::DB;

use crate::broker::Broker;
use crate::state_machine::{ApplyResult, Op};
pub use types::{NodeId, NodeInfo};
use types::{Raft, TypeConfig};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// This node does not lead; `leader` is the current leader when known.
    #[error("not the leader")]
    NotLeader { leader: Option<(NodeId, NodeInfo)> },
    #[error("raft is shutting down or failed: {0}")]
    Fatal(String),
    /// The proposal was appended but this node stopped waiting for it: it lost
    /// leadership, or the proposal timeout passed. It may still commit.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    Leader,
    Follower { leader: Option<(NodeId, NodeInfo)> },
}

pub struct RaftNode {
    raft: Raft,
    batcher: batcher::Batcher,
    /// When a quorum last confirmed this node's leadership (see `confirm_leadership`).
    leadership_confirmed: parking_lot::Mutex<Option<std::time::Instant>>,
    /// Set by [`RaftNode::begin_drain`] when the node is stopping: it
    /// proposes nothing more and reports no leadership.
    draining: std::sync::atomic::AtomicBool,
    id: NodeId,
    db: Arc<DB>,
    applied: tokio::sync::watch::Receiver<u64>,
    /// When a quorum last acknowledged this node as leader (check-quorum).
    quorum: Arc<QuorumContact>,
    /// A leader that has not heard from a quorum for this long does not act
    /// as leader at the edge (the followers' longest election timeout).
    quorum_max_age: Duration,
    /// Checkpoints this node sends and received files it installs.
    snapshots: Arc<snapshot::SnapshotStore>,
    /// Pre-vote elections (see [`election`]).
    elections: Arc<election::Elections>,
    log_store: log_store::LogStore,
}

/// How often a request held by [`RaftNode::settled_leadership`] looks again
/// without a metrics change.
const SETTLE_POLL: Duration = Duration::from_millis(25);

/// Check-quorum at the edge. openraft 0.9 keeps an isolated leader leading
/// until it hears a higher term, so clients that reach it would wait for
/// proposals that cannot commit (and Silo's client, told it is the owner,
/// stays with it for the whole partition). The leader's metrics carry the
/// time since a quorum last acknowledged it; a task records, per term, when
/// this node became leader and when a quorum last acked, and
/// [`RaftNode::leadership`] reports "no leader known" once that is older than
/// the election timeout: writes then get UNAVAILABLE at once and clients go
/// to the other nodes, which elect a new leader meanwhile.
#[derive(Default)]
struct QuorumContact {
    /// While this node leads: its term, when it became leader, when a quorum
    /// last acked, and whether it has peers to hear from (a single voter is
    /// its own quorum).
    state: parking_lot::Mutex<Option<Leading>>,
}

#[derive(Clone, Copy)]
struct Leading {
    term: u64,
    since: std::time::Instant,
    acked: Option<std::time::Instant>,
    has_peers: bool,
}

impl QuorumContact {
    fn watch(self: Arc<Self>, raft: Raft, id: NodeId) {
        tokio::spawn(async move {
            let mut rx = raft.metrics();
            let mut last_term = rx.borrow().current_term;
            loop {
                {
                    let m = rx.borrow_and_update();
                    if m.current_term != last_term {
                        last_term = m.current_term;
                        metrics::counter!("silo_raft_term_changes_total").increment(1);
                    }
                    let now = std::time::Instant::now();
                    let mut st = self.state.lock();
                    if m.state == ServerState::Leader && m.current_leader == Some(id) {
                        let (since, before) = match *st {
                            Some(l) if l.term == m.current_term => (l.since, l.acked),
                            _ => (now, None),
                        };
                        let acked = m.millis_since_quorum_ack.and_then(|ms| now.checked_sub(Duration::from_millis(ms)));
                        let has_peers = m.membership_config.membership().voter_ids().count() > 1;
                        *st = Some(Leading { term: m.current_term, since, acked: acked.or(before), has_peers });
                    } else {
                        *st = None;
                    }
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Check-quorum step-down. openraft 0.9 has none: a leader that hears no
    /// quorum keeps sending heartbeats, and a follower that still receives
    /// them (a one-way partition, a leader that cannot hear) refuses to
    /// elect anyone else. So once this node has led for `after` without a
    /// quorum's acknowledgement it mutes its outgoing replication (see
    /// [`network::Network::muted`]): its followers fall silent and elect a
    /// leader, whose first message deposes this one and unmutes it.
    /// Checked every `every`.
    fn step_down_when_lost(
        self: Arc<Self>,
        raft: Raft,
        id: NodeId,
        muted: Arc<std::sync::atomic::AtomicBool>,
        after: Duration,
        every: Duration,
    ) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let m = raft.metrics().borrow().clone();
                if m.state == ServerState::Shutdown {
                    return;
                }
                let leading = m.state == ServerState::Leader && m.current_leader == Some(id);
                let lost = leading && self.lost(m.current_term, after);
                if muted.swap(lost, std::sync::atomic::Ordering::Relaxed) != lost {
                    if lost {
                        tracing::warn!(
                            term = m.current_term,
                            "no quorum heard for {after:?}: stepping down (sending nothing)"
                        );
                        metrics::counter!("silo_raft_step_downs_total").increment(1);
                    } else {
                        tracing::info!(term = m.current_term, "replication unmuted");
                    }
                }
            }
        });
    }

    /// True when this node leads `term` but no quorum acknowledged it within
    /// `max_age` (counting from when it became leader if none ever did).
    fn lost(&self, term: u64, max_age: Duration) -> bool {
        match *self.state.lock() {
            Some(l) if l.term == term && l.has_peers => l.acked.unwrap_or(l.since).elapsed() > max_age,
            _ => false,
        }
    }
}

impl RaftNode {
    pub async fn open(
        id: NodeId,
        settings: &crate::config::RaftConfig,
        cluster_token: Option<String>,
        tls: Option<Arc<crate::tls::NodeTls>>,
        db: Arc<DB>,
        broker: Arc<Broker>,
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        // Elections and heartbeats are driven by `election`: openraft's
        // election timer is off, and its leader lease (`election_timeout_max`
        // in openraft) is our minimum election timeout, the silence a
        // pre-vote requires. openraft bounds every AppendEntries by its
        // `heartbeat_interval` and drops a slower one, so that is set to
        // three quarters of the lease (an append may take that long under
        // load), and our own ticker sends the heartbeats at
        // `raft.heartbeat_interval_ms`. openraft's minimum election timeout
        // only has to pass its validation.
        let append_timeout_ms = (settings.election_timeout_min_ms * 3 / 4).max(settings.heartbeat_interval_ms);
        let config = openraft::Config {
            cluster_name: "silo".into(),
            heartbeat_interval: append_timeout_ms,
            election_timeout_min: append_timeout_ms + 1,
            election_timeout_max: settings.election_timeout_min_ms,
            enable_elect: false,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: settings.max_in_snapshot_log_to_keep,
            purge_batch_size: 64,
            max_payload_entries: settings.max_payload_entries,
            ..Default::default()
        };
        let config = Arc::new(config.validate()?);
        let log_store = log_store::LogStore::new(db.clone());
        let sm_store =
            sm_store::StateMachineStore::new(db.clone(), broker, data_dir, id).with_wal(settings.state_machine_wal);
        let applied = sm_store.applied_index();
        let snapshots = sm_store.snapshots();
        let elections = election::Elections::new(
            id,
            election::Timing { min_ms: settings.election_timeout_min_ms, max_ms: settings.election_timeout_max_ms },
        );
        let muted = elections.muted();
        let network = network::Network {
            token: cluster_token,
            snapshot_chunk_bytes: settings.snapshot_chunk_kb * 1024,
            tls,
            muted: muted.clone(),
            probe_every: Duration::from_millis(2 * settings.election_timeout_max_ms),
        };
        let pre_votes = network::PreVoteClients::new(&network);
        let raft = Raft::new(id, config, network, log_store.clone(), sm_store).await?;
        elections.clone().spawn_driver(raft.clone(), log_store.clone(), pre_votes);
        elections.clone().spawn_heartbeats(raft.clone(), Duration::from_millis(settings.heartbeat_interval_ms));
        let quorum = Arc::new(QuorumContact::default());
        quorum.clone().watch(raft.clone(), id);
        let quorum_max_age = Duration::from_millis(settings.election_timeout_max_ms);
        quorum.clone().step_down_when_lost(
            raft.clone(),
            id,
            muted,
            2 * quorum_max_age,
            Duration::from_millis(settings.heartbeat_interval_ms),
        );
        let batcher = batcher::Batcher::start(
            raft.clone(),
            id,
            settings.proposals_in_flight as usize,
            Duration::from_millis(settings.proposal_timeout_ms),
            (quorum.clone(), quorum_max_age),
        );
        Ok(RaftNode {
            raft,
            batcher,
            leadership_confirmed: parking_lot::Mutex::new(None),
            draining: std::sync::atomic::AtomicBool::new(false),
            id,
            db,
            applied,
            quorum,
            quorum_max_age,
            snapshots,
            elections,
            log_store,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// Forms a new cluster of `members` unless this node already belongs to one
    /// (then it rejoins from its own data and this is a no-op).
    pub async fn initialize_if_fresh(&self, members: BTreeMap<NodeId, NodeInfo>) -> anyhow::Result<bool> {
        // A restarted node has a log: asking openraft would only log an ERROR.
        if self.raft.is_initialized().await.map_err(|e| anyhow::anyhow!("{e}"))? {
            return Ok(false);
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Proposes `op` stamped with this node's clock and waits until it is
    /// committed on a majority and applied here.
    pub async fn propose(&self, op: Op) -> Result<ApplyResult, ProposeError> {
        if self.is_draining() || self.elections.handing_off() {
            return Err(ProposeError::NotLeader { leader: None });
        }
        let name = op.name();
        let started = std::time::Instant::now();
        let span = tracing::debug_span!(target: crate::traces::RPC_TARGET, "propose", op = name);
        let result = tracing::Instrument::instrument(self.batcher.propose(op), span).await;
        metrics::histogram!("silo_propose_seconds", "op" => name).record(started.elapsed().as_secs_f64());
        result
    }

    /// Linearizable read barrier on the leader: confirms leadership with a
    /// quorum and waits until this node applied everything committed before.
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        let index = self.read_index().await?;
        self.wait_applied(index).await;
        Ok(())
    }

    /// Confirms with a quorum that this node still leads, unless that was
    /// confirmed less than `max_age` ago. Followers refuse to vote for anyone
    /// else for the leader lease (`raft.election_timeout_min_ms`) after
    /// hearing from the leader, so a recent confirmation (max_age well below
    /// the lease) still holds. Used by heartbeats, which extend leases in the leader's memory: a
    /// deposed leader that has not noticed yet must not keep a lease alive.
    pub async fn confirm_leadership(&self, max_age: Duration) -> Result<(), ProposeError> {
        if self.leadership_confirmed.lock().is_some_and(|t| t.elapsed() < max_age) {
            return Ok(());
        }
        let asked_at = std::time::Instant::now();
        self.read_index().await?;
        *self.leadership_confirmed.lock() = Some(asked_at);
        Ok(())
    }

    /// Waits until this node has applied the entry at `index`.
    pub async fn wait_applied(&self, index: u64) {
        let mut rx = self.applied.clone();
        // The sender lives as long as the state machine; if it is gone the node is stopping.
        let _ = rx.wait_for(|&applied| applied >= index).await;
    }

    /// The leader's notion of "now" for scheduling, ms: its wall clock, but
    /// never behind the time the state machine has reached. Commands stamp
    /// time with `max(last, now)`, so after a leader's clock ran ahead (a
    /// clock step, a fast-clocked node that led for a while) every new start
    /// time is ahead of the other nodes' wall clocks; due-ness compared with
    /// the wall clock alone would stall new work for the size of the step.
    pub fn leader_now_ms(&self) -> i64 {
        use crate::state_machine::{Tables, View};
        let state = View(&crate::storage::rocks::ReadKv { db: &self.db }).clock_ms();
        crate::wall_clock_ms().max(state)
    }

    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Who leads, as the edge should act on it. A leader that has not heard
    /// from a quorum for an election timeout (see [`QuorumContact`]) reports
    /// `Follower { leader: None }`: callers answer UNAVAILABLE and clients try
    /// the other nodes. A single-voter cluster is its own quorum.
    pub fn leadership(&self) -> Leadership {
        let m = self.raft.metrics().borrow().clone();
        if self.is_draining() || self.elections.handing_off() {
            return Leadership::Follower { leader: None };
        }
        if m.state == ServerState::Leader && m.current_leader == Some(self.id) {
            if self.quorum.lost(m.current_term, self.quorum_max_age) {
                return Leadership::Follower { leader: None };
            }
            return Leadership::Leader;
        }
        let leader =
            m.current_leader.and_then(|id| m.membership_config.membership().get_node(&id).map(|n| (id, n.clone())));
        Leadership::Follower { leader }
    }

    /// [`RaftNode::leadership`] for a caller about to send a client
    /// elsewhere. While this follower's leader has gone silent for the lease
    /// (`raft.election_timeout_min_ms`: it is probably gone and an election
    /// is probably under way) or no leader is known, waits up to two maximum
    /// election timeouts (at most 1.5 s) for a
    /// leader that is heard again or newly elected, so the client is
    /// redirected to the new leader at once instead of to the old one or
    /// into a retry back-off (issue #11). A leader cut off from its quorum,
    /// or a draining node, answers at once: clients must leave it.
    pub async fn settled_leadership(&self) -> Leadership {
        let max = self.elections.settle_max();
        let now = self.leadership();
        let unsettled = |l: &Leadership| match l {
            Leadership::Leader => false,
            Leadership::Follower { leader: None } => true,
            Leadership::Follower { leader: Some(_) } => self.elections.silence_ms() >= self.elections.lease_ms(),
        };
        let leads_in_openraft = self.raft.metrics().borrow().state == ServerState::Leader;
        if !unsettled(&now) || self.is_draining() || leads_in_openraft {
            return now;
        }
        // Woken by a metrics change (a vote, a new leader, an append), and
        // every 25 ms for a known leader heard again without one.
        let deadline = tokio::time::Instant::now() + max;
        let mut rx = self.raft.metrics();
        loop {
            let _ =
                tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + SETTLE_POLL), rx.changed()).await;
            let l = self.leadership();
            if !unsettled(&l) || tokio::time::Instant::now() >= deadline {
                return l;
            }
        }
    }

    /// The current term while this node leads.
    pub fn leader_term(&self) -> Option<u64> {
        let m = self.raft.metrics().borrow().clone();
        (m.state == ServerState::Leader && m.current_leader == Some(self.id)).then_some(m.current_term)
    }

    /// Adds `id` as a learner and waits until it has caught up with the log.
    pub async fn add_learner(&self, id: NodeId, info: NodeInfo) -> Result<(), ProposeError> {
        self.raft.add_learner(id, info, true).await.map(|_| ()).map_err(write_error)
    }

    /// Promotes learners to voters, then removes nodes (voters or learners).
    pub async fn change_membership(
        &self,
        add_voters: BTreeSet<NodeId>,
        remove: BTreeSet<NodeId>,
    ) -> Result<(), ProposeError> {
        if !add_voters.is_empty() {
            self.raft.change_membership(ChangeMembers::AddVoterIds(add_voters), true).await.map_err(write_error)?;
        }
        if !remove.is_empty() {
            let voters: BTreeSet<NodeId> = self.voters().into_iter().map(|(id, _)| id).collect();
            let remove_voters: BTreeSet<NodeId> = remove.intersection(&voters).copied().collect();
            if !remove_voters.is_empty() {
                self.raft
                    .change_membership(ChangeMembers::RemoveVoters(remove_voters), false)
                    .await
                    .map_err(write_error)?;
            }
            let remaining: BTreeSet<NodeId> =
                self.members().into_iter().map(|(id, _)| id).filter(|id| remove.contains(id)).collect();
            if !remaining.is_empty() {
                self.raft.change_membership(ChangeMembers::RemoveNodes(remaining), false).await.map_err(write_error)?;
            }
        }
        Ok(())
    }

    /// Voters with their addresses.
    pub fn voters(&self) -> Vec<(NodeId, NodeInfo)> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        membership.voter_ids().filter_map(|id| membership.get_node(&id).map(|n| (id, n.clone()))).collect()
    }

    /// Graceful shutdown: from now on this node proposes nothing (callers get
    /// UNAVAILABLE "no leader is known", which clients retry) and reports no
    /// leadership, so its duties stop; proposals already batched finish.
    pub fn begin_drain(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::SeqCst);
        self.elections.stop_campaigning();
    }

    /// Whether [`RaftNode::begin_drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// While a leadership transfer or a graceful hand-off keeps this leader
    /// quiet, it confirms no reads and takes no proposals: openraft would
    /// send AppendEntries for them, and each one resets the followers'
    /// silence the transfer waits for. Callers get "no leader is known" and
    /// retry; the new leader answers within about one lease.
    fn refuse_while_handing_off(&self) -> Result<(), ProposeError> {
        if self.elections.handing_off() {
            return Err(ProposeError::NotLeader { leader: None });
        }
        Ok(())
    }

    /// Leader-side heartbeats on or off (leadership transfer lets follower leases lapse).
    pub fn set_heartbeats(&self, enabled: bool) {
        self.elections.set_heartbeats(enabled);
        self.raft.runtime_config().heartbeat(enabled);
    }

    /// Makes this node the target of a leadership transfer: it campaigns as
    /// soon as the current leader (whose heartbeats the caller stopped) has
    /// been silent for the lease, and refuses other candidates meanwhile
    /// (see [`election`]). Returns at once.
    pub fn begin_transfer(&self) {
        self.elections.begin_transfer();
    }

    pub async fn trigger_snapshot(&self) -> Result<(), ProposeError> {
        self.raft.trigger().snapshot().await.map_err(|f| ProposeError::Fatal(f.to_string()))
    }

    /// The index a linearizable read must wait for, confirmed with a quorum.
    /// Leader only.
    pub async fn read_index(&self) -> Result<u64, ProposeError> {
        self.refuse_while_handing_off()?;
        match self.raft.get_read_log_id().await {
            Ok((read_log_id, _)) => Ok(read_log_id.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader { leader: f.leader_id.zip(f.leader_node) })
            }
            Err(RaftError::APIError(e)) => Err(ProposeError::Other(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(ProposeError::Fatal(f.to_string())),
        }
    }

    /// Every voter and learner with its address, by node id.
    pub fn members(&self) -> Vec<(NodeId, NodeInfo)> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config.membership().nodes().map(|(id, n)| (*id, n.clone())).collect()
    }

    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut voters = Vec::new();
        let mut learners = Vec::new();
        for (id, node) in membership.nodes() {
            if voter_ids.contains(id) {
                voters.push((*id, node.clone()));
            } else {
                learners.push((*id, node.clone()));
            }
        }
        let leader_addr = m.current_leader.and_then(|id| membership.get_node(&id)).map(|n| n.grpc_addr.clone());
        NodeStatus {
            id: self.id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader,
            leader_addr,
            last_log_index: m.last_log_index,
            last_applied_index: Some(self.applied_index()),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            voters,
            learners,
            replication: m
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, matched)| (*id, matched.map(|l| l.index))).collect())
                .unwrap_or_default(),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
        }
    }

    pub fn raft_service(&self) -> crate::pb::raft::raft_server::RaftServer<network::RaftService> {
        network::service(self.raft.clone(), self.snapshots.clone(), self.elections.clone(), self.log_store.clone())
    }

    /// Digest of the applied state (equal on replicas at the same applied index).
    pub fn state_digest(&self) -> u64 {
        sm_store::state_digest(&self.db)
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub id: NodeId,
    pub state: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub leader_addr: Option<String>,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub voters: Vec<(NodeId, NodeInfo)>,
    pub learners: Vec<(NodeId, NodeInfo)>,
    /// Leader only: the last log index each member is known to hold
    /// (None before its first successful append); empty on followers.
    pub replication: Vec<(NodeId, Option<u64>)>,
    /// Leader only: milliseconds since a quorum last acknowledged this leader.
    pub millis_since_quorum_ack: Option<u64>,
}

impl NodeStatus {
    /// On the leader, the highest log index a majority of voters hold (the
    /// commit index as replication last reported it); None on followers.
    pub fn commit_index(&self) -> Option<u64> {
        if self.replication.is_empty() {
            return None;
        }
        let matched: BTreeMap<NodeId, u64> = self.replication.iter().map(|(id, m)| (*id, m.unwrap_or(0))).collect();
        let mut held: Vec<u64> = self.voters.iter().map(|(id, _)| matched.get(id).copied().unwrap_or(0)).collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        held.get(held.len() / 2).copied()
    }
}

/// The applied result of a client write, or why it failed.
fn write_result(
    r: Result<openraft::raft::ClientWriteResponse<TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>>,
) -> Result<ApplyResult, ProposeError> {
    r.map(|resp| resp.data).map_err(write_error)
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ProposeError::NotLeader { leader: f.leader_id.zip(f.leader_node) }
        }
        RaftError::APIError(e) => ProposeError::Other(e.to_string()),
        RaftError::Fatal(f) => ProposeError::Fatal(f.to_string()),
    }
}
