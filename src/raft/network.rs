//! Raft traffic between nodes over gRPC (`proto/raft.proto`), served on each
//! node's public listener. Requests and responses are openraft's own types
//! encoded with bincode; a remote `RaftError` travels back as `Err` inside the
//! body, transport failures become `Unreachable` so openraft backs off.
//!
//! Snapshots travel as one client stream (`InstallSnapshotStream`): the
//! leader reads its checkpoint record by record on a blocking thread and
//! sends chunks of about `chunk_bytes` through a channel of
//! [`SNAPSHOT_CHUNKS_IN_FLIGHT`]; the follower writes them into an SST file
//! as they arrive, then installs it. Memory on both sides is a few chunks,
//! whatever the state's size (issue #10).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::OptionalSend;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use super::election::{Elections, PreVoteRequest, PreVoteResponse};
use super::log_store::LogStore;
use super::snapshot::{SnapshotData, SnapshotStore, SstWriter};
use super::types::{NodeId, NodeInfo, Raft, Snapshot, SnapshotMeta, TypeConfig, Vote};
use crate::pb::raft::raft_client::RaftClient;
use crate::pb::raft::raft_server::{Raft as RaftRpc, RaftServer};
use crate::pb::raft::RaftMessage;

/// A message of a snapshot stream after its header (vote, meta).
#[derive(Serialize, serde::Deserialize)]
enum SnapshotFrame {
    /// State-machine records, in key order, continuing the previous frame.
    Records(Vec<(Vec<u8>, Vec<u8>)>),
    /// The checkpoint was read to its end; `records` were sent in all. The
    /// receiver installs only a stream that ends with this frame and whose
    /// count matches.
    End { records: u64 },
}

/// Chunks of a snapshot stream buffered between the checkpoint reader and
/// the network (sender) or the network and the file writer (receiver).
pub const SNAPSHOT_CHUNKS_IN_FLIGHT: usize = 4;

/// Creates clients for peers; `token` is the cluster's bearer token, if any;
/// `snapshot_chunk_bytes` sizes the chunks of a snapshot stream; `tls`, when
/// set, makes every connection mutual TLS with the cluster CA.
#[derive(Clone)]
pub struct Network {
    pub token: Option<String>,
    pub snapshot_chunk_bytes: usize,
    pub tls: Option<Arc<crate::tls::NodeTls>>,
    /// Set while this node leads but has heard from no quorum for a while
    /// (check-quorum step-down, `raft::QuorumContact`): it then sends no
    /// AppendEntries or snapshots, so its followers stop hearing it and elect
    /// another leader even when they could still receive from it. One probe
    /// per peer still goes out every `probe_every`: a quorum that answers
    /// ends the step-down (it was only slow, or its followers restarted).
    pub muted: Arc<std::sync::atomic::AtomicBool>,
    /// See `muted`; longer than any election timeout, so followers that only
    /// hear the probes still get their chance to elect.
    pub probe_every: Duration,
}

/// A lazily connecting client for the peer at `addr`; `None` if the address
/// does not parse.
fn connect(addr: &str, tls: Option<&crate::tls::NodeTls>) -> Option<RaftClient<Channel>> {
    let endpoint = crate::tls::endpoint(addr, tls)
        .map(|e| {
            e.connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_while_idle(true)
        })
        .ok()?;
    Some(
        RaftClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX),
    )
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        let tls_generation = self.tls.as_ref().map_or(0, |t| t.generation());
        let client = connect(&node.grpc_addr, self.tls.as_deref());
        let authorization = bearer(self.token.as_deref());
        PeerClient {
            target,
            addr: node.grpc_addr.clone(),
            client,
            authorization,
            snapshot_chunk_bytes: self.snapshot_chunk_bytes,
            tls: self.tls.clone(),
            tls_generation,
            muted: self.muted.clone(),
            probe_every: self.probe_every,
            last_probe_ms: i64::MIN / 2,
        }
    }
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    client: Option<RaftClient<Channel>>,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    snapshot_chunk_bytes: usize,
    tls: Option<Arc<crate::tls::NodeTls>>,
    /// The [`crate::tls::NodeTls::generation`] `client` was built with.
    tls_generation: u64,
    /// See [`Network::muted`].
    muted: Arc<std::sync::atomic::AtomicBool>,
    probe_every: Duration,
    /// `crate::monotonic_ms()` of the last append let through while muted.
    last_probe_ms: i64,
}

/// The `authorization` header for the cluster token, if any.
fn bearer(token: Option<&str>) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    token.and_then(|t| format!("Bearer {t}").parse().ok())
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("bincode serialization into a Vec cannot fail")
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(b)
}

impl PeerClient {
    /// The client, rebuilt first if the TLS certificates were reloaded since
    /// it was made (new connections must show the new certificate).
    fn client(&mut self) -> Option<RaftClient<Channel>> {
        if let Some(tls) = &self.tls {
            if tls.generation() != self.tls_generation {
                self.tls_generation = tls.generation();
                self.client = connect(&self.addr, Some(tls));
            }
        }
        self.client.clone()
    }

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
        let Some(mut client) = self.client() else {
            let e = std::io::Error::other(format!("invalid peer address {:?}", self.addr));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let mut request = tonic::Request::new(RaftMessage { data: encode(req) });
        // openraft bounds the call by `hard_ttl` itself and treats that as a
        // timeout (retried at once). The transport's own deadline comes a
        // little later, so it never turns a slow call into `Unreachable`,
        // which openraft answers with a back-off.
        request.set_timeout(option.hard_ttl() + RPC_DEADLINE_SLACK);
        if let Some(v) = &self.authorization {
            request.metadata_mut().insert("authorization", v.clone());
        }
        let reply = match kind {
            "append" => client.append_entries(request).await,
            _ => client.vote(request).await,
        };
        let reply = reply.map_err(|status| RPCError::Unreachable(Unreachable::new(&status)))?;
        let body: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply.into_inner().data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        body.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn muted_error() -> std::io::Error {
    std::io::Error::other("this leader heard from no quorum and stepped down: it sends nothing")
}

/// How long before openraft's own bound a multi-entry AppendEntries is
/// abandoned and retried with half the entries (see `append_entries`).
const APPEND_SHRINK_MARGIN: Duration = Duration::from_millis(20);

/// How much later than openraft's own bound a Raft RPC's transport deadline
/// expires (see `PeerClient::call`).
const RPC_DEADLINE_SLACK: Duration = Duration::from_millis(100);

/// Wait before retrying a peer that was unreachable (openraft's default is
/// 500 ms, longer than the leader lease: a leader that lost one connection
/// would go silent long enough for its followers to elect another).
pub const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(100);

impl RaftNetwork<TypeConfig> for PeerClient {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        if self.muted.load(Ordering::Relaxed) {
            let now = crate::monotonic_ms();
            if now - self.last_probe_ms < self.probe_every.as_millis() as i64 {
                return Err(RPCError::Unreachable(Unreachable::new(&muted_error())));
            }
            self.last_probe_ms = now;
        }
        // openraft resends the very same request after a timeout, so a batch
        // too big to land within its bound would never land: give up a little
        // earlier and ask for half as many entries (openraft keeps the hint
        // for ten sends). A single entry is sent as it is.
        let entries = rpc.entries.len() as u64;
        let started = std::time::Instant::now();
        let reply = if entries > 1 {
            let bound = option.hard_ttl().saturating_sub(APPEND_SHRINK_MARGIN);
            match tokio::time::timeout(bound, self.call("append", &rpc, &option)).await {
                Ok(reply) => reply,
                Err(_) => {
                    metrics::counter!("silo_raft_append_shrunk_total").increment(1);
                    return Err(RPCError::PayloadTooLarge(openraft::error::PayloadTooLarge::new_entries_hint(
                        entries / 2,
                    )));
                }
            }
        } else {
            self.call("append", &rpc, &option).await
        };
        // Appends that carry entries (not heartbeats), answered or failed.
        if entries > 0 {
            metrics::histogram!("silo_raft_append_rpc_seconds").record(started.elapsed().as_secs_f64());
        }
        reply
    }

    /// Streams the checkpoint behind `snapshot` to the peer (module docs).
    /// No overall deadline: a large state takes as long as it takes, and a
    /// dead peer is noticed by HTTP/2 keep-alive or by `cancel`.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        if self.muted.load(Ordering::Relaxed) {
            return Err(StreamingError::Unreachable(Unreachable::new(&muted_error())));
        }
        let Some(mut client) = self.client() else {
            let e = std::io::Error::other(format!("invalid peer address {:?}", self.addr));
            return Err(StreamingError::Unreachable(Unreachable::new(&e)));
        };
        let SnapshotData::Checkpoint(cp) = *snapshot.snapshot else {
            let e = std::io::Error::other("only a checkpoint can be sent");
            return Err(StreamingError::Network(NetworkError::new(&e)));
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<RaftMessage>(SNAPSHOT_CHUNKS_IN_FLIGHT);
        let header = RaftMessage { data: encode(&(vote, snapshot.meta.clone())) };
        tx.send(header).await.expect("the receiver is alive");
        let chunk_bytes = self.snapshot_chunk_bytes;
        let muted = self.muted.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let mut chunk: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            let (mut size, mut records) = (0usize, 0u64);
            let mut open = true;
            let frame = |f: &SnapshotFrame| RaftMessage { data: encode(f) };
            let read = super::snapshot::for_each_record(&cp.dir, |k, v| {
                size += k.len() + v.len() + 16;
                records += 1;
                chunk.push((k.to_vec(), v.to_vec()));
                if size >= chunk_bytes {
                    // A leader that stepped down stops mid-stream too: the
                    // stream keeps its follower from electing anyone else.
                    open = !muted.load(Ordering::Relaxed)
                        && tx.blocking_send(frame(&SnapshotFrame::Records(std::mem::take(&mut chunk)))).is_ok();
                    size = 0;
                }
                open
            });
            // The end frame goes out only after the whole checkpoint was read:
            // a stream that ends without it (a read error here) is refused.
            if open && read.is_ok() {
                if !chunk.is_empty() {
                    open = tx.blocking_send(frame(&SnapshotFrame::Records(chunk))).is_ok();
                }
                if open {
                    let _ = tx.blocking_send(frame(&SnapshotFrame::End { records }));
                }
            }
            drop(cp); // the checkpoint may be deleted once no transfer reads it
            read
        });
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        if let Some(v) = &self.authorization {
            request.metadata_mut().insert("authorization", v.clone());
        }
        let reply = tokio::select! {
            reply = client.install_snapshot_stream(request) => reply,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(StreamingError::StorageError(openraft::StorageIOError::read_snapshot(None, &e).into()))
            }
            Err(e) => return Err(StreamingError::Network(NetworkError::new(&e))),
        }
        let reply = reply.map_err(|status| StreamingError::Unreachable(Unreachable::new(&status)))?;
        let body: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            decode(&reply.into_inner().data).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        body.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}

/// Clients for the `PreVote` call, which openraft's network has no method
/// for (see [`super::election`]): one lazily connecting channel per peer
/// address, rebuilt when the TLS certificates were reloaded.
#[derive(Clone)]
pub struct PreVoteClients {
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    tls: Option<Arc<crate::tls::NodeTls>>,
    cache: Arc<parking_lot::Mutex<std::collections::HashMap<String, (u64, RaftClient<Channel>)>>>,
}

impl PreVoteClients {
    pub fn new(network: &Network) -> Self {
        PreVoteClients {
            authorization: bearer(network.token.as_deref()),
            tls: network.tls.clone(),
            cache: Arc::default(),
        }
    }

    /// Asks the voter at `addr` for a pre-vote; an error when it does not
    /// answer within `timeout` (UNIMPLEMENTED from a node without PreVote).
    pub async fn pre_vote(
        &self,
        addr: &str,
        req: &PreVoteRequest,
        timeout: Duration,
    ) -> Result<PreVoteResponse, tonic::Status> {
        let generation = self.tls.as_ref().map_or(0, |t| t.generation());
        let client = {
            let mut cache = self.cache.lock();
            match cache.get(addr) {
                Some((g, c)) if *g == generation => c.clone(),
                _ => {
                    let c = connect(addr, self.tls.as_deref())
                        .ok_or_else(|| tonic::Status::invalid_argument(format!("invalid peer address {addr:?}")))?;
                    cache.insert(addr.to_string(), (generation, c.clone()));
                    c
                }
            }
        };
        let mut request = tonic::Request::new(RaftMessage { data: encode(req) });
        if let Some(v) = &self.authorization {
            request.metadata_mut().insert("authorization", v.clone());
        }
        // Bounds the connect as well as the call.
        let reply = tokio::time::timeout(timeout, client.clone().pre_vote(request))
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("no pre-vote answer in time"))??;
        decode(&reply.into_inner().data)
            .map_err(|e| tonic::Status::internal(format!("undecodable pre-vote answer: {e}")))
    }
}

/// Server side of `silo.raft.v1.Raft`: hands each request to the local Raft;
/// received snapshots are written into `snapshots`; leader contact and
/// pre-votes go to `elections`.
pub struct RaftService {
    raft: Raft,
    snapshots: Arc<SnapshotStore>,
    elections: Arc<Elections>,
    log: LogStore,
}

pub fn service(
    raft: Raft,
    snapshots: Arc<SnapshotStore>,
    elections: Arc<Elections>,
    log: LogStore,
) -> RaftServer<RaftService> {
    RaftServer::new(RaftService { raft, snapshots, elections, log })
        .max_decoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX)
}

fn bad_request(e: bincode::Error) -> tonic::Status {
    tonic::Status::invalid_argument(format!("undecodable raft message: {e}"))
}

fn reply<T: Serialize>(v: &T) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
    Ok(tonic::Response::new(RaftMessage { data: encode(v) }))
}

/// How often a follower receiving a snapshot stream tells its own Raft that
/// the sender still leads (below the shortest election timeout we allow).
const SNAPSHOT_KEEPALIVE: Duration = Duration::from_millis(50);

/// A snapshot stream with no frame for this long stops counting as leader
/// contact (the follower's election timer runs again).
const SNAPSHOT_STALL_MS: u64 = 1_000;

/// Aborts a task when dropped (also when the RPC handler is cancelled).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl RaftService {
    /// While a snapshot streams in, the leader's replication to this node is
    /// busy with it and sends no AppendEntries; without them this node's
    /// election timer would fire mid-transfer and its campaign would depose
    /// a healthy leader (Raft's InstallSnapshot chunks count as leader
    /// contact; a stream must too). So the receiver feeds its own Raft an
    /// empty AppendEntries in the sender's vote every [`SNAPSHOT_KEEPALIVE`]:
    /// no previous log id, no entries, no commit index, which changes nothing
    /// but the time this node last heard from its leader. Stops when the
    /// vote is refused (the sender was deposed), when no frame arrived for
    /// [`SNAPSHOT_STALL_MS`] before the end frame, or when the install ends.
    fn leader_keepalive(&self, vote: Vote, progress: Arc<AtomicU64>) -> AbortOnDrop {
        let raft = self.raft.clone();
        let elections = self.elections.clone();
        AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(SNAPSHOT_KEEPALIVE);
            loop {
                tick.tick().await;
                // A stream that stopped moving is no sign of a live leader.
                let last = progress.load(Ordering::Relaxed);
                if last != u64::MAX && (crate::monotonic_ms() as u64).saturating_sub(last) > SNAPSHOT_STALL_MS {
                    return;
                }
                let heartbeat = AppendEntriesRequest { vote, prev_log_id: None, entries: vec![], leader_commit: None };
                match raft.append_entries(heartbeat).await {
                    Ok(openraft::raft::AppendEntriesResponse::Success) => elections.note_contact(),
                    _ => return,
                }
            }
        }))
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let req: AppendEntriesRequest<TypeConfig> = decode(&request.into_inner().data).map_err(bad_request)?;
        // From a leader at least as recent as the one this node follows: it
        // is alive (counted now, before a slow append completes, and again
        // once accepted). An older one is refused below and counts nothing.
        let current = self.raft.metrics().borrow().vote;
        let from_leader = req.vote >= current;
        if from_leader {
            self.elections.note_contact();
        }
        let result = self.raft.append_entries(req).await;
        if from_leader
            && matches!(
                result,
                Ok(AppendEntriesResponse::Success
                    | AppendEntriesResponse::PartialSuccess(_)
                    | AppendEntriesResponse::Conflict)
            )
        {
            self.elections.note_contact();
        }
        reply(&result)
    }

    async fn vote(&self, request: tonic::Request<RaftMessage>) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let req: VoteRequest<NodeId> = decode(&request.into_inner().data).map_err(bad_request)?;
        let result = self.raft.vote(req).await;
        // Having voted, give the candidate its chance before campaigning.
        if result.as_ref().is_ok_and(|r| r.vote_granted) {
            self.elections.note_contact();
        }
        reply(&result)
    }

    /// Would this node vote for the candidate? Changes nothing (see
    /// [`super::election`]).
    async fn pre_vote(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let req: PreVoteRequest = decode(&request.into_inner().data).map_err(bad_request)?;
        reply(&self.elections.answer(&self.raft, &self.log, &req).await)
    }

    /// Receives a snapshot stream into an SST file (module docs), then asks
    /// Raft to install it (Raft checks the vote and that it is not older than
    /// what is applied). A broken stream leaves no file behind.
    async fn install_snapshot_stream(
        &self,
        request: tonic::Request<tonic::Streaming<RaftMessage>>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| tonic::Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (Vote, SnapshotMeta) = decode(&first.data).map_err(bad_request)?;
        let progress = Arc::new(AtomicU64::new(crate::monotonic_ms() as u64));
        let _keepalive = self.leader_keepalive(vote, progress.clone());
        let writer_path = self.snapshots.incoming_path();
        // `None` ends the stream; a channel closed without it (this handler
        // was dropped: the leader cancelled) or an `Err` fails the file.
        type Chunk = Option<std::io::Result<Vec<(Vec<u8>, Vec<u8>)>>>;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(SNAPSHOT_CHUNKS_IN_FLIGHT);
        let writer = tokio::task::spawn_blocking(move || {
            let mut ended = false;
            let records = rx.iter().map_while(|chunk: Chunk| match chunk {
                Some(chunk) => Some(chunk),
                None => {
                    ended = true;
                    None
                }
            });
            let records = records.flat_map(|chunk| match chunk {
                Ok(records) => records.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            });
            let written = SstWriter::new(writer_path.clone()).write_all(records);
            let written = match written {
                Ok(_) if !ended => Err(std::io::Error::other("snapshot stream ended before its last chunk")),
                other => other,
            };
            if written.is_err() {
                let _ = std::fs::remove_file(&writer_path);
            }
            written
        });
        let received = async {
            let mut received = 0u64;
            while let Some(msg) = stream.message().await? {
                progress.store(crate::monotonic_ms() as u64, Ordering::Relaxed);
                match decode::<SnapshotFrame>(&msg.data).map_err(bad_request)? {
                    SnapshotFrame::Records(records) => {
                        received += records.len() as u64;
                        tokio::task::block_in_place(|| tx.send(Some(Ok(records))))
                            .map_err(|_| tonic::Status::internal("snapshot file writer stopped"))?;
                    }
                    SnapshotFrame::End { records } if records == received => {
                        // installing: keep telling Raft the leader is alive
                        progress.store(u64::MAX, Ordering::Relaxed);
                        return Ok(());
                    }
                    SnapshotFrame::End { records } => {
                        return Err(tonic::Status::data_loss(format!(
                            "snapshot stream carried {received} records, its end says {records}"
                        )))
                    }
                }
            }
            Err(tonic::Status::aborted("snapshot stream ended before its end frame"))
        }
        .await;
        let _ = match &received {
            Ok(()) => tx.send(None),
            Err(status) => tx.send(Some(Err(std::io::Error::other(status.message().to_string())))),
        };
        drop(tx);
        let written = writer.await.map_err(|e| tonic::Status::internal(format!("snapshot writer: {e}")))?;
        // A failed receive failed the writer too, which removed its file.
        received?;
        let sst = written.map_err(|e| tonic::Status::internal(format!("writing the received snapshot: {e}")))?;
        let snapshot = Snapshot { meta, snapshot: Box::new(SnapshotData::Sst(sst)) };
        // The file is not removed here: an install in progress (which may
        // outlive this call when Raft stops) or a redo after a crash reads
        // it; the install removes it when done, start-up removes strays.
        let result = self.raft.install_full_snapshot(vote, snapshot).await;
        reply(&result)
    }
}
