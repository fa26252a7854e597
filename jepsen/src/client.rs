//! Clients: gRPC connections from the root namespace to each node, and the
//! recorder that writes every operation into the history as an invoke and a
//! completion.
//!
//! A client is bound to a node, like a Jepsen client. A write sent to a
//! follower is answered with a redirect (NOT_FOUND `shard not found` plus the
//! leader's id in `x-silo-shard-owner-node`); the client follows it once and
//! records the node that answered last.
//!
//! Completion types: `ok`; `fail` when the request certainly had no effect (a
//! redirect, UNAVAILABLE "no leader is known", a validation or precondition
//! error, NOT_FOUND of a job or lease, ALREADY_EXISTS); `info` otherwise
//! (timeouts, lost connections, UNAVAILABLE from a proposal in flight,
//! INTERNAL): it may have happened, now or later. Reads have no effect, so a
//! failed read is always `fail`.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use silo::pb::silo as pb;
use silo::pb::silo::silo_client::SiloClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::db::Db;
use crate::history::Op;
use crate::history::{OpType, Value, F, NEMESIS};

/// The history being written by every process of a run.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder { start: Instant::now(), ops: Mutex::new(Vec::new()) })
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    fn push(&self, process: i64, kind: OpType, f: F, node: Option<String>, value: Value, error: Option<String>) {
        let mut ops = self.ops.lock();
        let index = ops.len() as u64;
        let time_ms = self.now_ms();
        ops.push(Op { index, process, kind, f, time_ms, node, value, error });
    }

    pub fn invoke(&self, process: i64, f: F, node: u64, value: Value) {
        self.push(process, OpType::Invoke, f, Some(Db::name(node)), value, None);
    }

    pub fn complete(&self, process: i64, kind: OpType, f: F, node: u64, value: Value, error: Option<String>) {
        self.push(process, kind, f, Some(Db::name(node)), value, error);
    }

    /// A nemesis action (StartFault / StopFault).
    pub fn nemesis(&self, f: F, nemesis: &str, detail: String, leader: Option<u64>) {
        tracing::info!(?f, nemesis, %detail, "nemesis");
        let value = Value::Fault { nemesis: nemesis.to_string(), detail, leader: leader.map(Db::name) };
        self.push(NEMESIS, OpType::Info, f, None, value, None);
    }

    pub fn history(&self) -> Vec<Op> {
        self.ops.lock().clone()
    }

    /// Ops recorded so far.
    pub fn op_count(&self) -> usize {
        self.ops.lock().len()
    }
}

/// Connections to every node and the one shard's id.
#[derive(Clone)]
pub struct Conns {
    channels: BTreeMap<u64, Channel>,
    pub shard: String,
}

pub const OWNER_NODE_HEADER: &str = "x-silo-shard-owner-node";

impl Conns {
    pub async fn connect(nodes: &[u64]) -> anyhow::Result<Conns> {
        let mut channels = BTreeMap::new();
        for &id in nodes {
            let ch = Endpoint::from_shared(format!("http://{}", Db::addr(id)))?
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .connect_lazy();
            channels.insert(id, ch);
        }
        let mut conns = Conns { channels, shard: String::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for &id in nodes {
                let mut c = conns.grpc(id);
                let info =
                    tokio::time::timeout(Duration::from_secs(2), c.get_cluster_info(pb::GetClusterInfoRequest {}));
                if let Ok(Ok(info)) = info.await {
                    if let Some(s) = info.into_inner().shard_owners.first() {
                        conns.shard = s.shard_id.clone();
                        return Ok(conns);
                    }
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!("no node answered GetClusterInfo with a shard within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn nodes(&self) -> Vec<u64> {
        self.channels.keys().copied().collect()
    }

    pub fn grpc(&self, node: u64) -> SiloClient<Channel> {
        SiloClient::new(self.channels[&node].clone())
    }

    /// Runs `f` against `node` within `timeout`; follows one redirect to the
    /// leader the answer names. Returns the node that answered last.
    pub async fn call<T, Fut>(
        &self,
        node: u64,
        timeout: Duration,
        follow_redirect: bool,
        f: impl Fn(SiloClient<Channel>) -> Fut,
    ) -> (u64, Result<T, Status>)
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut at = node;
        for _ in 0..2 {
            let r = match tokio::time::timeout(timeout, f(self.grpc(at))).await {
                Ok(r) => r.map(tonic::Response::into_inner),
                Err(_) => Err(Status::deadline_exceeded(format!("no answer within {timeout:?}"))),
            };
            match r {
                Err(s) if follow_redirect && is_redirect(&s) => match owner_node(&s) {
                    Some(owner) if owner != at && self.channels.contains_key(&owner) => at = owner,
                    _ => return (at, Err(s)),
                },
                other => return (at, other),
            }
        }
        (at, Err(Status::unavailable("redirected twice")))
    }
}

pub fn is_redirect(s: &Status) -> bool {
    s.code() == Code::NotFound && s.message().contains("shard not found")
}

fn owner_node(s: &Status) -> Option<u64> {
    s.metadata().get(OWNER_NODE_HEADER)?.to_str().ok()?.parse().ok()
}

/// The completion type of a failed call (see the module docs).
pub fn classify(s: &Status, read: bool) -> OpType {
    if read {
        return OpType::Fail;
    }
    let m = s.message();
    match s.code() {
        Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists => OpType::Fail,
        Code::PermissionDenied | Code::Unauthenticated | Code::Unimplemented | Code::OutOfRange => OpType::Fail,
        Code::Unavailable if m.contains("no leader is known") => OpType::Fail,
        // The server refuses deletes of unfinished jobs with INTERNAL (DECISIONS #3).
        Code::Internal if m.contains("cannot delete") => OpType::Fail,
        // Connection refused before anything was sent.
        Code::Unavailable if m.contains("tcp connect error") || m.contains("Connection refused") => OpType::Fail,
        _ => OpType::Info,
    }
}

pub fn error_text(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// MessagePack bytes of a short string (fixstr or str8): the payload token.
pub fn msgpack_str(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() + 2);
    if b.len() < 32 {
        out.push(0xa0 | b.len() as u8);
    } else {
        out.push(0xd9);
        out.push(b.len().min(255) as u8);
    }
    out.extend_from_slice(&b[..b.len().min(255)]);
    out
}

/// The string in a payload written by [`msgpack_str`].
pub fn token_of(payload: Option<&pb::SerializedBytes>) -> String {
    let bytes = match payload.and_then(|p| p.encoding.as_ref()) {
        Some(pb::serialized_bytes::Encoding::Msgpack(b)) => b.as_slice(),
        None => return String::new(),
    };
    let body = match bytes.first() {
        Some(&t) if t & 0xe0 == 0xa0 => &bytes[1..],
        Some(0xd9) if bytes.len() >= 2 => &bytes[2..],
        _ => return String::new(),
    };
    String::from_utf8_lossy(body).into_owned()
}
