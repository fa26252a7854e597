//! Raft traffic between nodes over gRPC (`proto/raft.proto`), served on each
//! node's public listener. Requests and responses are openraft's own types
//! encoded with bincode; a remote `RaftError` travels back as `Err` inside the
//! body, transport failures become `Unreachable` so openraft backs off.
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::types::{NodeId, NodeInfo, Raft, TypeConfig};
use crate::pb::raft::raft_client::RaftClient;
use crate::pb::raft::raft_server::{Raft as RaftRpc, RaftServer};
use crate::pb::raft::RaftMessage;

/// Creates clients for peers; `token` is the cluster's bearer token, if any.
#[derive(Clone, Default)]
pub struct Network {
    pub token: Option<String>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        let endpoint = Endpoint::from_shared(format!("http://{}", node.grpc_addr))
            .map(|e| {
                e.connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_while_idle(true)
            })
            .ok();
        let client = endpoint.map(|e| {
            RaftClient::new(e.connect_lazy())
                .max_decoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX)
        });
        let authorization = self.token.as_ref().and_then(|t| format!("Bearer {t}").parse().ok());
        PeerClient { target, addr: node.grpc_addr.clone(), client, authorization }
    }
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    client: Option<RaftClient<Channel>>,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("bincode serialization into a Vec cannot fail")
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(b)
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            let e = std::io::Error::other(format!("invalid peer address {:?}", self.addr));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let mut request = tonic::Request::new(RaftMessage { data: encode(req) });
        request.set_timeout(option.hard_ttl());
        if let Some(v) = &self.authorization {
            request.metadata_mut().insert("authorization", v.clone());
        }
        let reply = match kind {
            "append" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| RPCError::Unreachable(Unreachable::new(&status)))?;
        let body: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply.into_inner().data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        body.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}

/// Server side of `silo.raft.v1.Raft`: hands each request to the local Raft.
pub struct RaftService {
    raft: Raft,
}

pub fn service(raft: Raft) -> RaftServer<RaftService> {
    RaftServer::new(RaftService { raft })
        .max_decoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX)
}

fn bad_request(e: bincode::Error) -> tonic::Status {
    tonic::Status::invalid_argument(format!("undecodable raft message: {e}"))
}

fn reply<T: Serialize>(v: &T) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
    Ok(tonic::Response::new(RaftMessage { data: encode(v) }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let req: AppendEntriesRequest<TypeConfig> = decode(&request.into_inner().data).map_err(bad_request)?;
        reply(&self.raft.append_entries(req).await)
    }

    async fn vote(&self, request: tonic::Request<RaftMessage>) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let req: VoteRequest<NodeId> = decode(&request.into_inner().data).map_err(bad_request)?;
        reply(&self.raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let req: InstallSnapshotRequest<TypeConfig> = decode(&request.into_inner().data).map_err(bad_request)?;
        reply(&self.raft.install_snapshot(req).await)
    }
}
