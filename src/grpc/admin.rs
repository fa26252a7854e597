//! `silo.raft.v1.Admin`: cluster status and online membership changes, plus
//! the read-index call followers use for linearizable reads. Calls that need
//! the leader fail with FAILED_PRECONDITION naming the leader when sent to a
//! follower (the `silo ctl` CLI finds the leader first).
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

use super::peers::Peers;
use crate::pb::raft as pb;
use crate::pb::raft::admin_server::Admin;
use crate::raft::{Leadership, NodeId, NodeInfo, ProposeError, RaftNode};

pub struct AdminService {
    pub node: Arc<RaftNode>,
    pub peers: Arc<Peers>,
    pub advertise_addr: String,
}

fn members(list: &[(NodeId, NodeInfo)]) -> Vec<pb::Member> {
    list.iter().map(|(id, n)| pb::Member { id: *id, addr: n.grpc_addr.clone() }).collect()
}

fn admin_error(e: ProposeError) -> Status {
    match e {
        ProposeError::NotLeader { leader: Some((id, n)) } => {
            Status::failed_precondition(format!("not the leader; the leader is node {id} at {}", n.grpc_addr))
        }
        ProposeError::NotLeader { leader: None } => Status::unavailable("no leader is known (election in progress)"),
        ProposeError::Fatal(m) => Status::unavailable(m),
        ProposeError::Unknown(m) => Status::unavailable(format!("outcome unknown: {m}")),
        ProposeError::Other(m) => Status::failed_precondition(m),
    }
}

impl AdminService {
    fn require_leader(&self) -> Result<(), Status> {
        match self.node.leadership() {
            Leadership::Leader => Ok(()),
            Leadership::Follower { leader } => Err(admin_error(ProposeError::NotLeader { leader })),
        }
    }

    fn membership_reply(&self) -> pb::MembershipReply {
        let s = self.node.status();
        pb::MembershipReply { voters: members(&s.voters), learners: members(&s.learners) }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, r: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        let skip_digest = r.into_inner().skip_digest;
        let s = self.node.status();
        let commit_index = s.commit_index();
        let state = if s.state == "Follower" && !s.voters.iter().any(|(id, _)| *id == s.id) {
            "Learner".to_string()
        } else {
            s.state.clone()
        };
        Ok(Response::new(pb::StatusReply {
            node_id: s.id,
            grpc_addr: self.advertise_addr.clone(),
            state,
            term: s.term,
            leader_id: s.leader,
            leader_addr: s.leader_addr.unwrap_or_default(),
            last_log_index: s.last_log_index,
            applied_index: s.last_applied_index,
            snapshot_index: s.snapshot_index,
            voters: members(&s.voters),
            learners: members(&s.learners),
            state_digest: (!skip_digest).then(|| self.node.state_digest()),
            purged_index: s.purged_index,
            commit_index,
        }))
    }

    async fn read_index(&self, _r: Request<pb::ReadIndexRequest>) -> Result<Response<pb::ReadIndexReply>, Status> {
        let index = self.node.read_index().await.map_err(admin_error)?;
        Ok(Response::new(pb::ReadIndexReply { index }))
    }

    async fn add_learner(&self, r: Request<pb::AddLearnerRequest>) -> Result<Response<pb::MembershipReply>, Status> {
        let r = r.into_inner();
        if r.node_id == 0 {
            return Err(Status::invalid_argument("node_id must be greater than 0"));
        }
        if r.addr.is_empty() || !r.addr.contains(':') {
            return Err(Status::invalid_argument(format!("addr must be host:port, got {:?}", r.addr)));
        }
        self.require_leader()?;
        tracing::info!(node_id = r.node_id, addr = %r.addr, "adding learner");
        self.node.add_learner(r.node_id, NodeInfo { grpc_addr: r.addr }).await.map_err(admin_error)?;
        Ok(Response::new(self.membership_reply()))
    }

    async fn change_membership(
        &self,
        r: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let r = r.into_inner();
        let add: BTreeSet<NodeId> = r.add_voters.into_iter().collect();
        let remove: BTreeSet<NodeId> = r.remove.into_iter().collect();
        if add.is_empty() && remove.is_empty() {
            return Err(Status::invalid_argument("nothing to change: give add_voters or remove"));
        }
        if let Some(id) = add.intersection(&remove).next() {
            return Err(Status::invalid_argument(format!("node {id} is both added and removed")));
        }
        self.require_leader()?;
        let known: BTreeSet<NodeId> = self.node.members().into_iter().map(|(id, _)| id).collect();
        if let Some(id) = add.iter().chain(remove.iter()).find(|id| !known.contains(id)) {
            return Err(Status::not_found(format!("node {id} is not a member (add it as a learner first)")));
        }
        let voters: BTreeSet<NodeId> = self.node.voters().into_iter().map(|(id, _)| id).collect();
        if voters.iter().all(|id| remove.contains(id)) && add.is_empty() {
            return Err(Status::failed_precondition("refusing to remove every voter"));
        }
        tracing::info!(?add, ?remove, "changing membership");
        self.node.change_membership(add, remove).await.map_err(admin_error)?;
        Ok(Response::new(self.membership_reply()))
    }

    async fn transfer_leader(
        &self,
        r: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderReply>, Status> {
        let to = r.into_inner().to;
        self.require_leader()?;
        if to == self.node.id() {
            return Ok(Response::new(pb::TransferLeaderReply { leader_id: to }));
        }
        let target = self
            .node
            .voters()
            .into_iter()
            .find(|(id, _)| *id == to)
            .ok_or_else(|| Status::not_found(format!("node {to} is not a voter")))?;
        tracing::info!(to, "transferring leadership");
        // Stop heartbeats and make the target campaign once the followers'
        // leader lease has lapsed (raft::election).
        self.node.set_heartbeats(false);
        let result = async {
            let mut admin = self.peers.admin(&target.1.grpc_addr)?;
            admin.trigger_election(self.peers.request(pb::TriggerElectionRequest {})).await?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match self.node.status().leader {
                    Some(leader) if leader == to => return Ok(leader),
                    // Another voter won the election the transfer opened
                    // (possible with five or more voters).
                    Some(leader) if leader != self.node.id() => {
                        return Err(Status::aborted(format!(
                            "node {leader} won the election instead of node {to}; leadership moved there"
                        )))
                    }
                    _ => {}
                }
                if Instant::now() > deadline {
                    return Err(Status::deadline_exceeded("leadership did not move within 10 s"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        .await;
        self.node.set_heartbeats(true);
        let leader_id = result?;
        Ok(Response::new(pb::TransferLeaderReply { leader_id }))
    }

    async fn trigger_election(
        &self,
        _r: Request<pb::TriggerElectionRequest>,
    ) -> Result<Response<pb::TriggerElectionReply>, Status> {
        self.node.begin_transfer();
        Ok(Response::new(pb::TriggerElectionReply {}))
    }

    async fn trigger_snapshot(
        &self,
        _r: Request<pb::TriggerSnapshotRequest>,
    ) -> Result<Response<pb::TriggerSnapshotReply>, Status> {
        self.node.trigger_snapshot().await.map_err(admin_error)?;
        Ok(Response::new(pb::TriggerSnapshotReply {}))
    }
}
