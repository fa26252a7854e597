//! The gRPC edge: validation, routing (is this node the shard's owner?),
//! tenancy rules and the error map. No business rules live here: requests
//! become state-machine commands, rejections come back as values.
pub mod admin;
pub mod auth;
pub mod convert;
pub mod diagnostics;
pub mod peers;
pub mod service;
pub mod status;
pub mod validate;

use std::sync::{Arc, OnceLock};

use tonic::Status;

use crate::broker::Broker;
use crate::raft::{Leadership, RaftNode};
use crate::state_machine::{ShardSpec, Tables, View};
use crate::storage::rocks::ReadKv;

/// How long a follower waits to apply up to the leader's read index.
const FOLLOWER_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// The tenant every job belongs to while tenancy is off.
pub const DEFAULT_TENANT: &str = "-";

/// Node-local settings the edge needs.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub tenancy_enabled: bool,
    pub dev_mode: bool,
    pub max_payload_bytes: usize,
    /// Byte budget of one LeaseTasks reply (config `lease_reply_bytes_max`).
    pub lease_reply_bytes_max: usize,
    pub stale_reads: bool,
    pub lease_ms: i64,
    /// This node's client-facing address.
    pub advertise_addr: String,
    /// How stale a quorum confirmation of leadership a heartbeat may rely on
    /// (half the minimum election timeout).
    pub leadership_confirmation_max_age_ms: u64,
    /// SQL statement limits (`[query]`).
    pub query: crate::query::QueryConfig,
}

pub struct SiloService {
    node: Arc<RaftNode>,
    broker: Arc<Broker>,
    peers: Arc<peers::Peers>,
    edge: EdgeConfig,
    shard_map: OnceLock<Arc<Vec<ShardSpec>>>,
    /// The last leader (id, address) this node knew, for GetClusterInfo
    /// during an election (SEMANTICS §2.3: the last known good map).
    last_owner: parking_lot::Mutex<Option<(u64, String)>>,
    /// Runs Query/QueryArrow statements under the node's limits.
    query: crate::query::QueryEngine,
}

/// A request's resolved shard.
#[derive(Debug, Clone, Copy)]
pub struct ShardRef {
    pub index: u32,
}

impl SiloService {
    pub fn new(node: Arc<RaftNode>, broker: Arc<Broker>, peers: Arc<peers::Peers>, edge: EdgeConfig) -> Self {
        let query = crate::query::QueryEngine::new(edge.query.clone());
        SiloService { node, broker, peers, edge, shard_map: OnceLock::new(), last_owner: Default::default(), query }
    }

    /// The shard map; never changes once written, so it is cached on first sight.
    fn shards(&self) -> Option<Arc<Vec<ShardSpec>>> {
        if let Some(m) = self.shard_map.get() {
            return Some(m.clone());
        }
        let map = View(&ReadKv { db: self.node.db() }).shards();
        if map.is_empty() {
            return None;
        }
        Some(self.shard_map.get_or_init(|| Arc::new(map)).clone())
    }

    /// Every shard's id, in map order (empty before the cluster formed).
    pub fn shard_ids(&self) -> Vec<String> {
        self.shards().map(|m| m.iter().map(|s| s.id.clone()).collect()).unwrap_or_default()
    }

    /// The shard whose tenant-hash range holds `tenant` (SEMANTICS §2.2).
    pub fn shard_of_tenant(&self, tenant: &str) -> Option<String> {
        let h = tenant_hash(tenant);
        self.shards()?.iter().find(|s| hash_in_range(&h, &s.range_start, &s.range_end)).map(|s| s.id.clone())
    }

    /// Whether job calls carry a tenant (`[tenancy] enabled`).
    pub fn tenancy_enabled(&self) -> bool {
        self.edge.tenancy_enabled
    }

    fn shard_spec(&self, index: u32) -> ShardSpec {
        self.shards().and_then(|m| m.get(index as usize).cloned()).expect("resolved shards exist")
    }

    /// SEMANTICS §2.4: parse the shard id and find it in the map.
    fn locate(&self, shard: &str) -> Result<ShardRef, Status> {
        let parsed = uuid::Uuid::parse_str(shard).map_err(|_| status::invalid(format!("invalid shard ID: {shard}")))?;
        let Some(map) = self.shards() else {
            return Err(Status::unavailable("shard not ready: acquisition in progress"));
        };
        let wanted = parsed.hyphenated().to_string();
        match map.iter().position(|s| s.id == wanted) {
            Some(i) => Ok(ShardRef { index: i as u32 }),
            None => Err(status::shard_not_found(None)),
        }
    }

    /// Locate the shard and require that this node leads it (writes, worker
    /// calls). During an election the answer waits for its outcome, so the
    /// redirect names the new leader (`RaftNode::settled_leadership`).
    async fn route_write(&self, shard: &str) -> Result<ShardRef, Status> {
        let s = self.locate(shard)?;
        match self.node.settled_leadership().await {
            Leadership::Leader => Ok(s),
            Leadership::Follower { leader } => Err(status::not_leader(leader)),
        }
    }

    /// Locate the shard for a read served by any node; linearizable unless the
    /// node runs with `stale_reads`.
    async fn route_read(&self, shard: &str) -> Result<ShardRef, Status> {
        let s = self.locate(shard)?;
        if !self.edge.stale_reads {
            match self.node.settled_leadership().await {
                Leadership::Leader => self.node.read_barrier().await.map_err(status::propose)?,
                Leadership::Follower { leader: None } => return Err(status::not_leader(None)),
                Leadership::Follower { leader: Some((_, info)) } => self.follower_read_barrier(&info.grpc_addr).await?,
            }
        }
        Ok(s)
    }

    /// Read index through the leader: it confirms its leadership with a quorum
    /// and names the index this replica must apply before answering.
    async fn follower_read_barrier(&self, leader_addr: &str) -> Result<(), Status> {
        let mut admin = self.peers.admin(leader_addr)?;
        let index = admin
            .read_index(self.peers.request(crate::pb::raft::ReadIndexRequest {}))
            .await
            .map_err(|e| Status::unavailable(format!("could not get a read index from the leader: {}", e.message())))?
            .into_inner()
            .index;
        tokio::time::timeout(FOLLOWER_CATCH_UP, self.node.wait_applied(index))
            .await
            .map_err(|_| Status::unavailable("this replica is behind the leader; retry or read from the leader"))
    }

    /// SEMANTICS §2.1 for job-scoped calls.
    fn job_tenant(&self, given: Option<&str>, shard: ShardRef) -> Result<String, Status> {
        let given = given.filter(|t| !t.is_empty());
        if !self.edge.tenancy_enabled {
            return match given {
                None => Ok(DEFAULT_TENANT.to_string()),
                Some(_) => Err(Status::failed_precondition(
                    "tenant must not be provided when tenancy is disabled on the server",
                )),
            };
        }
        let Some(t) = given else { return Err(status::invalid("tenant id required")) };
        if t.chars().count() > crate::limits::TENANT_CHARS_MAX {
            return Err(status::invalid("invalid tenant id"));
        }
        self.range_check(t, shard)?;
        Ok(t.to_string())
    }

    /// Which tenant's rows a statement sees: with tenancy on, the given
    /// tenant (a tenant's query sees only its jobs) or every tenant when none
    /// is given (an operator's query); with tenancy off every job belongs to
    /// the default tenant and a given tenant is a routing hint only
    /// (SEMANTICS §15: not enforced by the reference).
    fn query_tenant(&self, given: Option<&str>) -> Result<Option<String>, Status> {
        let given = given.filter(|t| !t.is_empty());
        if !self.edge.tenancy_enabled {
            return Ok(None);
        }
        match given {
            Some(t) if t.chars().count() > crate::limits::TENANT_CHARS_MAX => Err(status::invalid("invalid tenant id")),
            other => Ok(other.map(str::to_string)),
        }
    }

    /// Route, read barrier, tenant scope, parameters, then the statement over
    /// a snapshot of the applied state.
    async fn run_query(
        &self,
        shard: &str,
        tenant: Option<&str>,
        sql: &str,
        params: Vec<crate::pb::silo::QueryParameter>,
        format: crate::query::Format,
    ) -> Result<crate::query::QueryOutput, Status> {
        let s = self.route_read(shard).await?;
        let tenant = self.query_tenant(tenant)?;
        if sql.trim().is_empty() {
            return Err(status::invalid("SQL error: the statement is empty"));
        }
        let params = params.into_iter().map(convert::query_parameter).collect::<Result<Vec<_>, Status>>()?;
        let source = crate::query::tables::Source {
            kv: Arc::new(crate::storage::rocks::OwnedSnapshot::new(self.node.db().clone())),
            shard: s.index,
            shard_id: self.shard_spec(s.index).id,
            tenant,
            now_ms: crate::wall_clock_ms(),
        };
        self.query.run(source, sql, params, format).await.map_err(|e| status::query(&e))
    }

    /// SEMANTICS §2.1 for worker calls: required and range-checked with tenancy
    /// on, ignored with it off.
    fn worker_tenant(&self, given: Option<&str>, shard: ShardRef) -> Result<(), Status> {
        if !self.edge.tenancy_enabled {
            return Ok(());
        }
        match given.filter(|t| !t.is_empty()) {
            None => Err(status::invalid("tenant_id is required for worker operations when tenancy is enabled")),
            Some(t) => self.range_check(t, shard),
        }
    }

    fn range_check(&self, tenant: &str, shard: ShardRef) -> Result<(), Status> {
        let spec = self.shard_spec(shard.index);
        if self.shard_of_tenant(tenant).as_deref() == Some(spec.id.as_str()) {
            return Ok(());
        }
        let start = if spec.range_start.is_empty() { "-∞" } else { &spec.range_start };
        let end = if spec.range_end.is_empty() { "+∞" } else { &spec.range_end };
        Err(Status::failed_precondition(format!(
            "tenant '{tenant}' is not within shard {} range [{start}, {end}); refresh topology and retry",
            spec.id
        )))
    }
}

/// Whether a tenant hash lies in a shard's range `[start, end)`; an empty
/// bound is unbounded (SEMANTICS §2.2).
pub fn hash_in_range(hash: &str, start: &str, end: &str) -> bool {
    (start.is_empty() || hash >= start) && (end.is_empty() || hash < end)
}

/// XXH64 (seed 0) of the tenant as 16 lowercase hex digits (SEMANTICS §2.2).
pub fn tenant_hash(tenant: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh64::xxh64(tenant.as_bytes(), 0))
}
