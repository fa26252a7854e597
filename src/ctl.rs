//! `silo ctl`: cluster status and online membership changes over the Admin
//! service. Commands that need the leader find it first through `--server`.
use std::time::Duration;

use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::pb::raft::admin_client::AdminClient;
use crate::pb::raft::{self as rpb};

pub struct Ctl {
    pub server: String,
    pub token: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct NodeView {
    pub id: u64,
    pub addr: String,
    /// Leader, Follower, Candidate, Learner or Unreachable.
    pub role: String,
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// Highest log index purged behind a snapshot.
    pub purged_index: Option<u64>,
    pub term: Option<u64>,
    pub state_digest: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub leader: Option<u64>,
    pub leader_addr: Option<String>,
    pub nodes: Vec<NodeView>,
}

impl Ctl {
    async fn admin(&self, addr: &str) -> anyhow::Result<AdminClient<Channel>> {
        let ch = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(60))
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {addr}: {e}"))?;
        Ok(AdminClient::new(ch))
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            if let Ok(v) = format!("Bearer {t}").parse() {
                r.metadata_mut().insert("authorization", v);
            }
        }
        r
    }

    async fn node_status(&self, addr: &str) -> anyhow::Result<rpb::StatusReply> {
        Ok(self.admin(addr).await?.status(self.req(rpb::StatusRequest { skip_digest: false })).await?.into_inner())
    }

    /// Every member's own view, gathered through the member list of `--server`.
    pub async fn cluster(&self) -> anyhow::Result<ClusterView> {
        let first = self.node_status(&self.server).await?;
        let mut members: Vec<(u64, String)> =
            first.voters.iter().chain(first.learners.iter()).map(|m| (m.id, m.addr.clone())).collect();
        if members.is_empty() {
            members.push((first.node_id, first.grpc_addr.clone()));
        }
        members.sort();
        let mut nodes = Vec::new();
        for (id, addr) in members {
            let view = match self.node_status(&addr).await {
                Ok(s) => NodeView {
                    id,
                    addr,
                    role: s.state,
                    applied_index: s.applied_index,
                    last_log_index: s.last_log_index,
                    snapshot_index: s.snapshot_index,
                    purged_index: s.purged_index,
                    term: Some(s.term),
                    state_digest: s.state_digest.map(|d| format!("{d:016x}")),
                },
                Err(_) => NodeView {
                    id,
                    addr,
                    role: "Unreachable".into(),
                    applied_index: None,
                    last_log_index: None,
                    snapshot_index: None,
                    purged_index: None,
                    term: None,
                    state_digest: None,
                },
            };
            nodes.push(view);
        }
        let leader = nodes.iter().find(|n| n.role == "Leader").map(|n| (n.id, n.addr.clone()));
        Ok(ClusterView { leader: leader.as_ref().map(|l| l.0), leader_addr: leader.map(|l| l.1), nodes })
    }

    async fn leader_admin(&self) -> anyhow::Result<AdminClient<Channel>> {
        let s = self.node_status(&self.server).await?;
        let addr = if s.state == "Leader" {
            s.grpc_addr
        } else if !s.leader_addr.is_empty() {
            s.leader_addr
        } else {
            anyhow::bail!("no leader is known right now (election in progress?); retry");
        };
        self.admin(&addr).await
    }

    pub async fn add_learner(&self, id: u64, addr: &str) -> anyhow::Result<rpb::MembershipReply> {
        let mut a = self.leader_admin().await?;
        Ok(a.add_learner(self.req(rpb::AddLearnerRequest { node_id: id, addr: addr.into() })).await?.into_inner())
    }

    pub async fn change(&self, add_voters: Vec<u64>, remove: Vec<u64>) -> anyhow::Result<rpb::MembershipReply> {
        let mut a = self.leader_admin().await?;
        Ok(a.change_membership(self.req(rpb::ChangeMembershipRequest { add_voters, remove })).await?.into_inner())
    }

    pub async fn transfer_leader(&self, to: u64) -> anyhow::Result<u64> {
        let mut a = self.leader_admin().await?;
        Ok(a.transfer_leader(self.req(rpb::TransferLeaderRequest { to })).await?.into_inner().leader_id)
    }

    pub async fn snapshot(&self) -> anyhow::Result<()> {
        let mut a = self.admin(&self.server).await?;
        a.trigger_snapshot(self.req(rpb::TriggerSnapshotRequest {})).await?;
        Ok(())
    }
}

pub fn render(view: &ClusterView) -> String {
    let mut out = match (&view.leader, &view.leader_addr) {
        (Some(id), Some(addr)) => format!("leader: node {id} at {addr}\n"),
        _ => "leader: none (election in progress or no quorum)\n".to_string(),
    };
    out.push_str(&format!(
        "{:<4} {:<22} {:<12} {:>10} {:>10} {:>10} {:>6}  {}\n",
        "ID", "ADDR", "ROLE", "APPLIED", "LAST_LOG", "SNAPSHOT", "TERM", "DIGEST"
    ));
    let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for n in &view.nodes {
        out.push_str(&format!(
            "{:<4} {:<22} {:<12} {:>10} {:>10} {:>10} {:>6}  {}\n",
            n.id,
            n.addr,
            n.role,
            show(n.applied_index),
            show(n.last_log_index),
            show(n.snapshot_index),
            show(n.term),
            n.state_digest.clone().unwrap_or_else(|| "-".into())
        ));
    }
    out
}

/// A `--param` value as a typed bind parameter: integers, decimals,
/// `true`/`false` and `null` are typed; `str:` forces text; the rest is text.
pub fn query_parameter(raw: &str) -> crate::pb::silo::QueryParameter {
    use crate::pb::silo::query_parameter::Value as V;
    let value = if let Some(text) = raw.strip_prefix("str:") {
        V::StringValue(text.to_string())
    } else if let Ok(i) = raw.parse::<i64>() {
        V::Int64Value(i)
    } else if let Ok(f) = raw.parse::<f64>().map_err(|_| ()).and_then(|f| if f.is_finite() { Ok(f) } else { Err(()) }) {
        V::Float64Value(f)
    } else {
        match raw {
            "true" => V::BoolValue(true),
            "false" => V::BoolValue(false),
            "null" => V::NullValue(crate::pb::silo::QueryNull {}),
            _ => V::StringValue(raw.to_string()),
        }
    };
    crate::pb::silo::QueryParameter { value: Some(value) }
}

impl Ctl {
    /// `silo ctl query`: the statement's result as a table (through
    /// QueryArrow) or as JSON lines (through Query's MessagePack rows).
    pub async fn query(
        &self,
        sql: &str,
        tenant: Option<&str>,
        shard: Option<&str>,
        params: Vec<crate::pb::silo::QueryParameter>,
        json: bool,
    ) -> anyhow::Result<String> {
        let mut opts = crate::client::ClientOptions::new([self.server.clone()]);
        opts.token = self.token.clone();
        let client = crate::client::Client::connect(opts).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        let failed = |s: tonic::Status| anyhow::anyhow!("{:?}: {}", s.code(), s.message());
        if json {
            let reply = client.query(sql, tenant, shard, params).await.map_err(failed)?;
            let mut out = String::new();
            for row in reply.rows {
                let Some(crate::pb::silo::serialized_bytes::Encoding::Msgpack(bytes)) = row.encoding else { continue };
                let value: serde_json::Value = rmp_serde::from_slice(&bytes)?;
                out.push_str(&value.to_string());
                out.push('\n');
            }
            return Ok(out);
        }
        let (schema, batches) = client.query_arrow(sql, tenant, shard, params).await.map_err(failed)?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let table = if batches.is_empty() {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            names.join(" | ")
        } else {
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string()
        };
        Ok(format!("{table}\n({rows} row{})\n", if rows == 1 { "" } else { "s" }))
    }
}
