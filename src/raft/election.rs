//! Elections with a pre-vote (Raft dissertation §9.6), driven by this module
//! instead of openraft's own election timer, which is switched off
//! (`enable_elect = false`).
//!
//! Why (issue #11): openraft 0.9 campaigns as soon as its timer fires and
//! raises its term even when it cannot win. A follower cut off from the
//! leader kept raising its term, and once reachable again its higher term
//! deposed a healthy leader. And openraft only campaigns after its leader
//! lease *plus* an election timeout, so a crashed leader cost 1.5–2 s.
//!
//! The rule here:
//! - A voter that has heard from no leader for its election timeout (drawn
//!   at random from `[election_timeout_min, election_timeout_max]` for each
//!   attempt) first asks every voter *would you vote for me?* (`PreVote`,
//!   which changes nothing on the receiver).
//! - A voter says yes when it is not the leader (a leader that stepped down
//!   or is handing off counts as not leading), has itself heard from no
//!   leader for `election_timeout_min`, is not the target of a leadership
//!   transfer for someone else, and the candidate's last log id (term, index)
//!   is at least its own.
//! - With a yes from a majority (in every configuration of a joint
//!   membership; the candidate counts itself) the node asks openraft to
//!   campaign, which raises the term and sends the real votes.
//!
//! So a node that cannot win never raises its term, and a node that still
//! hears its leader never helps depose it. openraft's leader lease (how long
//! a voter refuses real votes after hearing the leader) is set to
//! `election_timeout_min`, the same silence a pre-vote requires, so a granted
//! pre-vote is usually followed by a granted vote. (Not always: a leader may
//! be heard between the two, another candidate may win first, and a
//! pre-vote compares the stored log while openraft compares the accepted
//! one. Then the campaign fails and costs one term, as in plain Raft.)
//!
//! "Heard from a leader" ([`Elections::note_contact`]) is an AppendEntries
//! whose vote is at least this node's (counted when it arrives and again
//! when it is accepted), a snapshot stream in progress, or a real vote this
//! node granted.
//!
//! Leadership transfer ([`Elections::begin_transfer`]): the leader stops its
//! heartbeats and tells the target, which refuses other candidates'
//! pre-votes for a while and runs its own round as soon as it has been
//! silent for the lease (the other voters' leases lapse at the same time),
//! once per lease until it leads or the window ends. With three voters the
//! third cannot win meanwhile (the leader and the target refuse it); with
//! five or more it can, and whoever wins leads.
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::log_store::LogStore;
use super::network::PreVoteClients;
use super::types::{NodeId, NodeInfo, Raft};

type Metrics = openraft::RaftMetrics<NodeId, NodeInfo>;

/// A candidate's question to a voter. Bincode inside `RaftMessage`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    /// The term the candidate would campaign in (its current term + 1).
    /// Informational: the receiver does not refuse on it (a voter with a
    /// higher term but a shorter log must not block the only node that can
    /// win; openraft settles terms in the real vote).
    pub term: u64,
    /// The candidate's last log id as (term, index); `None` for an empty log.
    pub last_log: Option<(u64, u64)>,
}

/// A voter's answer; `reason` says why it refused (empty when granted).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteResponse {
    pub granted: bool,
    pub term: u64,
    pub reason: String,
}

/// Longest a request waits for an election to settle (see
/// [`Elections::settle_max`]); the Rust client's topology refresh allows 2 s.
pub const SETTLE_MAX: Duration = Duration::from_millis(1_500);

/// How often the driver looks at the clock and the metrics.
const TICK: Duration = Duration::from_millis(10);
/// Extra silence a transfer target waits beyond the lease before it
/// campaigns, so the other voters' leases (refreshed by the same last
/// heartbeat, a little later) have lapsed too.
const TRANSFER_MARGIN_MS: i64 = 20;

/// Election timing, ms (`raft.election_timeout_min_ms` / `_max_ms`).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub min_ms: u64,
    pub max_ms: u64,
}

/// One node's election state, shared by the Raft RPC service (which notes
/// leader contact and answers pre-votes) and the driver task.
pub struct Elections {
    id: NodeId,
    timing: Timing,
    /// `crate::monotonic_ms()` when this node last heard from a leader (or
    /// granted a vote, or started).
    contact_ms: AtomicI64,
    /// While `monotonic_ms() < transfer_until_ms` this node is the target of
    /// a leadership transfer: it campaigns and refuses other pre-votes.
    transfer_until_ms: AtomicI64,
    /// A node that is shutting down does not campaign.
    stopping: AtomicBool,
    /// Set while a leadership transfer keeps this leader quiet.
    heartbeats_off: AtomicBool,
    /// Set while this node leads without a quorum and has stopped
    /// replicating (`network::Network::muted`).
    muted: Arc<AtomicBool>,
}

impl Elections {
    /// Start-up counts as contact: a restarted node waits a full election
    /// timeout (and so usually hears the leader) before it campaigns.
    pub fn new(id: NodeId, timing: Timing) -> Arc<Self> {
        Arc::new(Elections {
            id,
            timing,
            contact_ms: AtomicI64::new(crate::monotonic_ms()),
            transfer_until_ms: AtomicI64::new(0),
            stopping: AtomicBool::new(false),
            heartbeats_off: AtomicBool::new(false),
            muted: Arc::new(AtomicBool::new(false)),
        })
    }

    /// True while heartbeats are off for a leadership transfer.
    pub fn handing_off(&self) -> bool {
        self.heartbeats_off.load(Ordering::Relaxed)
    }

    /// The flag a leader without a quorum sets to stop replicating.
    pub fn muted(&self) -> Arc<AtomicBool> {
        self.muted.clone()
    }

    /// This node heard from a leader (or granted a vote) just now.
    pub fn note_contact(&self) {
        self.contact_ms.fetch_max(crate::monotonic_ms(), Ordering::Relaxed);
    }

    /// Milliseconds since [`Elections::note_contact`].
    pub fn silence_ms(&self) -> i64 {
        crate::monotonic_ms() - self.contact_ms.load(Ordering::Relaxed)
    }

    /// The leader lease (`election_timeout_min`), ms.
    pub fn lease_ms(&self) -> i64 {
        self.timing.min_ms as i64
    }

    /// How long a caller may wait for an election to settle: two maximum
    /// election timeouts (one attempt, and one more after a split vote), at
    /// most [`SETTLE_MAX`] (below the clients' topology-refresh timeout).
    pub fn settle_max(&self) -> Duration {
        Duration::from_millis(2 * self.timing.max_ms).min(SETTLE_MAX)
    }

    /// Heartbeats on or off while this node leads (off during a leadership
    /// transfer, so the followers' leases lapse).
    pub fn set_heartbeats(&self, enabled: bool) {
        self.heartbeats_off.store(!enabled, Ordering::Relaxed);
    }

    /// Sends a heartbeat to every follower every `interval` while this node
    /// leads. openraft's own heartbeat runs at its `heartbeat_interval`,
    /// which doubles as its AppendEntries timeout and so is set longer (see
    /// `RaftNode::open`).
    pub fn spawn_heartbeats(self: Arc<Self>, raft: Raft, interval: Duration) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let state = raft.metrics().borrow().state;
                if state == ServerState::Shutdown {
                    return;
                }
                if state == ServerState::Leader && !self.heartbeats_off.load(Ordering::Relaxed) {
                    let _ = raft.trigger().heartbeat().await;
                }
            }
        });
    }

    /// This node will not campaign again (graceful shutdown).
    pub fn stop_campaigning(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Makes this node the target of a leadership transfer for about three
    /// leases: it campaigns once silent for the lease and refuses other
    /// candidates' pre-votes meanwhile (module docs).
    pub fn begin_transfer(&self) {
        let window = 3 * self.timing.min_ms as i64 + 500;
        self.transfer_until_ms.store(crate::monotonic_ms() + window, Ordering::Relaxed);
    }

    fn in_transfer(&self) -> bool {
        crate::monotonic_ms() < self.transfer_until_ms.load(Ordering::Relaxed)
    }

    /// Answers a candidate's pre-vote (module docs for the rule). Changes nothing.
    pub async fn answer(&self, raft: &Raft, log: &LogStore, req: &PreVoteRequest) -> PreVoteResponse {
        let m = raft.metrics().borrow().clone();
        let refuse = |reason: String| PreVoteResponse { granted: false, term: m.current_term, reason };
        // A leader answers like a follower once it has stepped down (muted:
        // no quorum hears it) or is handing off (heartbeats off): either way
        // it wants another leader elected.
        let leading = m.state == ServerState::Leader
            && !self.muted.load(Ordering::Relaxed)
            && !self.heartbeats_off.load(Ordering::Relaxed);
        if leading {
            return refuse("I lead".into());
        }
        let silence = self.silence_ms();
        if silence < self.timing.min_ms as i64 {
            return refuse(format!("heard from a leader {silence} ms ago"));
        }
        if req.candidate != self.id && self.in_transfer() {
            return refuse("leadership is being transferred to me".into());
        }
        let mine = match last_log(log).await {
            Ok(l) => l,
            Err(e) => return refuse(format!("cannot read my log: {e}")),
        };
        if req.last_log < mine {
            return refuse(format!("candidate's log {:?} is behind mine {:?}", req.last_log, mine));
        }
        PreVoteResponse { granted: true, term: m.current_term, reason: String::new() }
    }

    /// Runs the election driver until the process ends: every [`TICK`], a
    /// voter that does not lead and has been silent for its drawn timeout
    /// (or, as a transfer target, for the lease plus a margin) runs a
    /// pre-vote round and campaigns if it wins.
    pub fn spawn_driver(self: Arc<Self>, raft: Raft, log: LogStore, peers: PreVoteClients) {
        tokio::spawn(async move {
            let mut timeout_ms = self.draw_timeout();
            let mut last_attempt = i64::MIN / 2;
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if self.stopping.load(Ordering::Relaxed) {
                    continue;
                }
                let m = raft.metrics().borrow().clone();
                if m.state == ServerState::Leader || m.state == ServerState::Shutdown {
                    self.transfer_until_ms.store(0, Ordering::Relaxed);
                    continue;
                }
                if !m.membership_config.membership().voter_ids().any(|v| v == self.id) {
                    continue;
                }
                let now = crate::monotonic_ms();
                let silence = self.silence_ms();
                let lease = self.timing.min_ms as i64;
                let due = if self.in_transfer() {
                    // Once per lease: a round plus the vote's fsyncs must
                    // finish before the next attempt, or each would abandon
                    // the term of the one before.
                    silence >= lease + TRANSFER_MARGIN_MS && now - last_attempt >= lease
                } else {
                    silence >= timeout_ms && now - last_attempt >= timeout_ms
                };
                if !due {
                    continue;
                }
                last_attempt = now;
                timeout_ms = self.draw_timeout();
                if self.pre_vote_round(&raft, &log, &peers, &m).await {
                    tracing::info!(
                        term = m.current_term + 1,
                        silence_ms = silence,
                        transfer = self.in_transfer(),
                        "no leader heard and a majority would vote for me: campaigning"
                    );
                    self.campaign(&raft).await;
                }
            }
        });
    }

    /// Asks every voter for a pre-vote; true when a majority (of every
    /// configuration of a joint membership, counting this node) said yes
    /// and nothing overtook the round (a leader heard, a term begun).
    async fn pre_vote_round(&self, raft: &Raft, log: &LogStore, peers: &PreVoteClients, m: &Metrics) -> bool {
        let membership = m.membership_config.membership();
        let joint: Vec<BTreeSet<NodeId>> = membership.get_joint_config().clone();
        let voters: BTreeSet<NodeId> = joint.iter().flatten().copied().collect();
        if voters.len() == 1 {
            return true;
        }
        let req = match last_log(log).await {
            Ok(last_log) => PreVoteRequest { candidate: self.id, term: m.current_term + 1, last_log },
            Err(e) => {
                tracing::warn!("not campaigning: cannot read my own log: {e}");
                return false;
            }
        };
        let wait = Duration::from_millis((self.timing.min_ms / 2).max(20));
        let asks = voters.iter().filter(|&&v| v != self.id).filter_map(|&v| {
            let addr = membership.get_node(&v)?.grpc_addr.clone();
            let (peers, req) = (peers.clone(), req.clone());
            Some(async move { (v, peers.pre_vote(&addr, &req, wait).await) })
        });
        // Count answers as they come: a majority decides without waiting for
        // a voter that is down or cut off.
        let round_started = crate::monotonic_ms();
        let majority = |granted: &BTreeSet<NodeId>| joint.iter().all(|c| 2 * c.intersection(granted).count() > c.len());
        let mut granted: BTreeSet<NodeId> = BTreeSet::from([self.id]);
        let mut answers: futures::stream::FuturesUnordered<_> = asks.collect();
        while !majority(&granted) {
            let Some((voter, answer)) = futures::StreamExt::next(&mut answers).await else { break };
            match answer {
                Ok(a) if a.granted => {
                    granted.insert(voter);
                }
                Ok(a) => tracing::debug!(voter, reason = %a.reason, "pre-vote refused"),
                // A node too old to know PreVote still votes by openraft's rules.
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    granted.insert(voter);
                }
                Err(s) => tracing::debug!(voter, "pre-vote unanswered: {}", s.message()),
            }
        }
        // The round took time: if a leader was heard or a term began
        // meanwhile (another node won), the answers are stale.
        let now_m = raft.metrics().borrow().clone();
        let overtaken = self.contact_ms.load(Ordering::Relaxed) > round_started
            || now_m.current_term != m.current_term
            || now_m.state == ServerState::Leader;
        let won = majority(&granted) && !overtaken;
        metrics::counter!("silo_raft_pre_votes_total", "outcome" => if won { "won" } else { "lost" }).increment(1);
        if !won {
            tracing::debug!(?granted, overtaken, "pre-vote lost: not campaigning");
        }
        won
    }

    async fn campaign(&self, raft: &Raft) {
        metrics::counter!("silo_raft_campaigns_total").increment(1);
        if let Err(e) = raft.trigger().elect().await {
            tracing::warn!("could not start an election: {e}");
        }
    }

    fn draw_timeout(&self) -> i64 {
        fastrand::u64(self.timing.min_ms..=self.timing.max_ms) as i64
    }
}

/// This node's last log id as (term, index), the order Raft compares logs in.
async fn last_log(log: &LogStore) -> Result<Option<(u64, u64)>, super::types::StorageError> {
    let state = log.clone().get_log_state().await?;
    Ok(state.last_log_id.map(|l| (l.leader_id.term, l.index)))
}
