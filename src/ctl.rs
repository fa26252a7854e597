//! `silo ctl`: cluster status and online membership changes over the Admin
//! service (commands that need the leader find it first through `--server`),
//! and, through the public API with the Rust client, job commands, cluster
//! info, tenant routing and SQL; `validate-config` reads a file only. Errors
//! are explained by [`explain`]: the gRPC code, the server's message, and what
//! to try.
use std::time::Duration;

use serde::Serialize;
use tonic::transport::{Channel, ClientTlsConfig};

use crate::pb::raft::admin_client::AdminClient;
use crate::pb::raft::{self as rpb};

pub struct Ctl {
    pub server: String,
    pub token: Option<String>,
    /// TLS towards the nodes (`--ca-cert`, `--cert`, `--key`); `None` = plaintext.
    pub tls: Option<ClientTlsConfig>,
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
        let ch = crate::tls::client_endpoint(addr, self.tls.as_ref())?
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

    /// The status of the first `--server` that answers, and its address.
    async fn first_status(&self) -> anyhow::Result<(String, rpb::StatusReply)> {
        let mut last = anyhow::anyhow!("no server given (--server a,b,c)");
        for addr in self.servers() {
            match self.node_status(&addr).await {
                Ok(s) => return Ok((addr, s)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Every member's own view, gathered through the member list of `--server`.
    pub async fn cluster(&self) -> anyhow::Result<ClusterView> {
        let (_, first) = self.first_status().await?;
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
        let (_, s) = self.first_status().await?;
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
        let (addr, _) = self.first_status().await?;
        let mut a = self.admin(&addr).await?;
        a.trigger_snapshot(self.req(rpb::TriggerSnapshotRequest {})).await?;
        Ok(())
    }
}

/// `silo ctl dump-tasks` as text: one line of counts per task group, then
/// (with `detail`, or when there is one group) its next tasks and leases.
pub fn render_dump(groups: &[crate::grpc::diagnostics::GroupDump], detail: bool) -> String {
    use std::fmt::Write;
    let mut out = format!("{:<24} {:>9} {:>9} {:>9} {:>9}\n", "TASK GROUP", "READY", "SCHEDULED", "WAITING", "RUNNING");
    for g in groups {
        let _ =
            writeln!(out, "{:<24} {:>9} {:>9} {:>9} {:>9}", g.task_group, g.ready, g.scheduled, g.waiting, g.running);
    }
    if detail || groups.len() == 1 {
        for g in groups {
            let _ = writeln!(out, "\nnext tasks of {} (in lease order):", g.task_group);
            for t in &g.next {
                let _ = writeln!(
                    out,
                    "  {}  job {} (tenant {:?}) attempt {} priority {}",
                    t.task_id, t.job_id, t.tenant, t.attempt_number, t.priority
                );
            }
            let _ = writeln!(out, "running leases of {}:", g.task_group);
            for l in &g.leases {
                let deadline = l.deadline_ms.map_or("-".to_string(), |d| format!("{d}"));
                let _ = writeln!(
                    out,
                    "  {}  job {} attempt {} worker {} deadline_ms {deadline}",
                    l.task_id, l.job_id, l.attempt_number, l.worker_id
                );
            }
        }
    }
    out
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
        let client = self.client().await?;
        let failed = |s: tonic::Status| explain(&s, &self.server);
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

/// A gRPC refusal as the CLI prints it, with what to do where that is clear.
pub fn explain(s: &tonic::Status, servers: &str) -> anyhow::Error {
    use tonic::Code;
    let hint = match s.code() {
        Code::NotFound if s.message().contains("job not found") => " (with tenancy on, pass --tenant)",
        Code::Unauthenticated => " (pass --token or set SILO_AUTH_TOKEN)",
        Code::Unavailable if s.message().contains("certificate") || format!("{s:?}").contains("certificate") => {
            " (TLS: --ca-cert must be the CA that signed the node's certificate, whose names must include the address you dial)"
        }
        Code::Unavailable if s.message().contains("dns error") || format!("{s:?}").contains("dns error") => {
            " (a name the node advertises does not resolve here: dial a node whose `advertise` address this machine can reach)"
        }
        Code::Unavailable => " (is `silo serve` running there? list more nodes with --server a,b,c)",
        Code::FailedPrecondition if s.message().contains("TLS only") => " (pass --ca-cert with the cluster's CA)",
        Code::InvalidArgument if s.message().contains("tenant") => {
            " (check --tenant against the server's tenancy setting)"
        }
        _ => "",
    };
    let code = format!("{:?}", s.code());
    anyhow::anyhow!("{code} from {servers}: {}{hint}", s.message())
}

/// What `silo ctl job get` prints (MessagePack payload and results as JSON).
#[derive(serde::Serialize)]
pub struct JobView {
    pub id: String,
    pub status: String,
    pub task_group: String,
    pub priority: u32,
    pub enqueue_time_ms: i64,
    pub status_changed_at_ms: i64,
    pub next_attempt_starts_after_ms: Option<i64>,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub payload: serde_json::Value,
    pub result: Option<serde_json::Value>,
    pub attempts: Vec<AttemptView>,
}

/// One attempt of [`JobView`].
#[derive(serde::Serialize)]
pub struct AttemptView {
    pub attempt_number: u32,
    pub status: String,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub result: Option<serde_json::Value>,
    pub error_code: Option<String>,
    pub error_data: Option<serde_json::Value>,
}

fn msgpack_value(b: &Option<crate::pb::silo::SerializedBytes>) -> Option<serde_json::Value> {
    use crate::pb::silo::serialized_bytes::Encoding;
    let Some(Encoding::Msgpack(bytes)) = b.as_ref()?.encoding.as_ref() else { return None };
    Some(rmp_serde::from_slice(bytes).unwrap_or_else(|_| serde_json::Value::String(format!("({} bytes)", bytes.len()))))
}

fn status_name(code: i32) -> String {
    crate::pb::silo::JobStatus::try_from(code)
        .map_or(format!("status {code}"), |s| s.as_str_name().trim_start_matches("JOB_STATUS_").to_string())
}

impl JobView {
    fn of(j: crate::pb::silo::GetJobResponse) -> JobView {
        JobView {
            status: status_name(j.status),
            payload: msgpack_value(&j.payload).unwrap_or(serde_json::Value::Null),
            result: msgpack_value(&j.result),
            attempts: j
                .attempts
                .iter()
                .map(|a| AttemptView {
                    attempt_number: a.attempt_number,
                    status: crate::pb::silo::AttemptStatus::try_from(a.status)
                        .map_or(format!("status {}", a.status), |s| {
                            s.as_str_name().trim_start_matches("ATTEMPT_STATUS_").to_string()
                        }),
                    started_at_ms: a.started_at_ms,
                    finished_at_ms: a.finished_at_ms,
                    result: msgpack_value(&a.result),
                    error_code: a.error_code.clone(),
                    error_data: msgpack_value(&a.error_data),
                })
                .collect(),
            id: j.id,
            task_group: j.task_group,
            priority: j.priority,
            enqueue_time_ms: j.enqueue_time_ms,
            status_changed_at_ms: j.status_changed_at_ms,
            next_attempt_starts_after_ms: j.next_attempt_starts_after_ms,
            metadata: j.metadata.into_iter().collect(),
        }
    }

    /// `key: value` lines for a terminal.
    pub fn text(&self) -> String {
        let mut out = format!(
            "id:          {}\nstatus:      {}\ntask group:  {}\npriority:    {}\nenqueued:    {} ms\nchanged:     {} ms\n",
            self.id, self.status, self.task_group, self.priority, self.enqueue_time_ms, self.status_changed_at_ms
        );
        if let Some(t) = self.next_attempt_starts_after_ms {
            out.push_str(&format!("next at:     {t} ms\n"));
        }
        for (k, v) in &self.metadata {
            out.push_str(&format!("metadata:    {k} = {v}\n"));
        }
        out.push_str(&format!("payload:     {}\n", self.payload));
        if let Some(r) = &self.result {
            out.push_str(&format!("result:      {r}\n"));
        }
        for a in &self.attempts {
            let outcome = match (&a.result, &a.error_code) {
                (Some(r), _) => r.to_string(),
                (None, Some(code)) => format!("{code} {}", a.error_data.clone().unwrap_or_default()),
                _ => String::new(),
            };
            out.push_str(&format!("attempt {}:   {} {}\n", a.attempt_number, a.status, outcome));
        }
        out
    }
}

/// A job write `silo ctl job` can send.
#[derive(Debug, Clone, Copy)]
pub enum JobWrite {
    Cancel,
    Restart,
    Expedite,
    Delete,
}

impl Ctl {
    /// The servers `--server` names (comma-separated).
    fn servers(&self) -> Vec<String> {
        self.server.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    }

    /// A client holding every `--server`, with the token.
    pub async fn client(&self) -> anyhow::Result<crate::client::Client> {
        let mut opts = crate::client::ClientOptions::new(self.servers());
        opts.token = self.token.clone();
        opts.tls = self.tls.clone();
        opts.retry_budget = Duration::from_secs(10);
        crate::client::Client::connect(opts).await.map_err(|s| explain(&s, &self.server))
    }

    /// `silo ctl job get`.
    pub async fn job_get(&self, id: &str, tenant: Option<&str>, attempts: bool) -> anyhow::Result<JobView> {
        let c = self.client().await?;
        let j = c.get_job(id, tenant, attempts).await.map_err(|s| explain(&s, &self.server))?;
        Ok(JobView::of(j))
    }

    /// `silo ctl job cancel|restart|expedite|delete`.
    pub async fn job_write(&self, what: JobWrite, id: &str, tenant: Option<&str>) -> anyhow::Result<()> {
        let c = self.client().await?;
        let r = match what {
            JobWrite::Cancel => c.cancel_job(id, tenant).await,
            JobWrite::Restart => c.restart_job(id, tenant).await,
            JobWrite::Expedite => c.expedite_job(id, tenant).await,
            JobWrite::Delete => c.delete_job(id, tenant).await,
        };
        r.map_err(|s| explain(&s, &self.server))
    }

    /// `silo ctl job result`: the outcome of a finished job, as JSON
    /// (`{"id", "status", "finished_at_ms", "result" | "error_code" and "error_data"}`).
    /// An unfinished job is an error naming its status.
    pub async fn job_result(&self, id: &str, tenant: Option<&str>) -> anyhow::Result<serde_json::Value> {
        let c = self.client().await?;
        let r = c.get_job_result(id, tenant).await.map_err(|s| explain(&s, &self.server))?;
        Ok(result_json(r))
    }

    /// `silo ctl job await`: polls GetJobResult until the job finished or
    /// `timeout` passed (then an error naming the job's status). Any other
    /// refusal (unknown job, wrong tenant) ends the wait at once.
    pub async fn job_await(
        &self,
        id: &str,
        tenant: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let c = self.client().await?;
        loop {
            match c.get_job_result(id, tenant).await {
                Ok(r) => return Ok(result_json(r)),
                Err(s)
                    if s.code() == tonic::Code::FailedPrecondition
                        && s.message().starts_with("job is not complete") =>
                {
                    if tokio::time::Instant::now() >= deadline {
                        anyhow::bail!("job {id} did not finish within {} ms ({})", timeout.as_millis(), s.message());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(s) => return Err(explain(&s, &self.server)),
            }
        }
    }

    /// `silo ctl job enqueue`: `payload` is JSON, stored as MessagePack.
    pub async fn job_enqueue(&self, mut req: crate::pb::silo::EnqueueRequest, payload: &str) -> anyhow::Result<String> {
        let value: serde_json::Value =
            serde_json::from_str(payload).map_err(|e| anyhow::anyhow!("--payload must be JSON: {e}"))?;
        req.payload = crate::client::msgpack(rmp_serde::to_vec_named(&value)?);
        let c = self.client().await?;
        c.enqueue(req).await.map_err(|s| explain(&s, &self.server))
    }

    /// The public API of the first `--server` (diagnostics act on one node's
    /// own store and process), with a `timeout` per call.
    async fn first_node(
        &self,
        timeout: Duration,
    ) -> anyhow::Result<(String, crate::pb::silo::silo_client::SiloClient<Channel>)> {
        let addr = self.servers().into_iter().next().ok_or_else(|| anyhow::anyhow!("no server given (--server)"))?;
        let ch = crate::tls::client_endpoint(&addr, self.tls.as_ref())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(timeout)
            .connect()
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot reach {addr}: {e} (is a node listening there? --server, --ca-cert)")
            })?;
        let client = crate::pb::silo::silo_client::SiloClient::new(ch)
            .max_decoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX);
        Ok((addr, client))
    }

    /// The first shard of the map (diagnostics name a shard; they act on the node's whole store).
    async fn any_shard(&self) -> anyhow::Result<String> {
        let info = self.cluster_info().await?;
        info.shard_owners
            .first()
            .map(|s| s.shard_id.clone())
            .ok_or_else(|| anyhow::anyhow!("the cluster has no shard map yet"))
    }

    /// `silo ctl dump-tasks`: the node's task groups, next tasks and leases.
    pub async fn dump_tasks(&self) -> anyhow::Result<(Vec<crate::grpc::diagnostics::GroupDump>, u32)> {
        let (addr, mut c) = self.first_node(Duration::from_secs(30)).await?;
        let r = c.dump_tasks(self.req(crate::pb::silo::DumpTasksRequest {})).await.map_err(|s| explain(&s, &addr))?;
        let r = r.into_inner();
        #[derive(serde::Deserialize)]
        struct Dump {
            groups: Vec<crate::grpc::diagnostics::GroupDump>,
        }
        let dump: Dump = serde_json::from_str(&r.dump)?;
        Ok((dump.groups, r.task_count))
    }

    /// `silo ctl profile`: a CPU profile of the first `--server`, pprof bytes.
    pub async fn profile(&self, seconds: u32, frequency: u32) -> anyhow::Result<crate::pb::silo::CpuProfileResponse> {
        // 0 asks the server for its default (30 s).
        let waits = if seconds == 0 { 30 } else { seconds as u64 };
        let (addr, mut c) = self.first_node(Duration::from_secs(waits + 30)).await?;
        let req = crate::pb::silo::CpuProfileRequest { duration_seconds: seconds, frequency };
        Ok(c.cpu_profile(self.req(req)).await.map_err(|s| explain(&s, &addr))?.into_inner())
    }

    /// `silo ctl compact` / `flush`: the status line the node answers.
    pub async fn compact(&self, flush_only: bool) -> anyhow::Result<String> {
        let shard = self.any_shard().await?;
        let (addr, mut c) = self.first_node(Duration::from_secs(3600)).await?;
        let status = if flush_only {
            let r = c.flush_shard(self.req(crate::pb::silo::FlushShardRequest { shard }));
            r.await.map_err(|s| explain(&s, &addr))?.into_inner().status
        } else {
            let r = c.compact_shard(self.req(crate::pb::silo::CompactShardRequest { shard }));
            r.await.map_err(|s| explain(&s, &addr))?.into_inner().status
        };
        Ok(format!("{addr}: {status}"))
    }

    /// `silo ctl storage-info`.
    pub async fn storage_info(&self) -> anyhow::Result<crate::pb::silo::GetShardStorageInfoResponse> {
        let shard = self.any_shard().await?;
        let (addr, mut c) = self.first_node(Duration::from_secs(30)).await?;
        let r = c.get_shard_storage_info(self.req(crate::pb::silo::GetShardStorageInfoRequest { shard }));
        Ok(r.await.map_err(|s| explain(&s, &addr))?.into_inner())
    }

    /// `silo ctl cluster info`: shards with their ranges and owners, and the members.
    pub async fn cluster_info(&self) -> anyhow::Result<crate::pb::silo::GetClusterInfoResponse> {
        let c = self.client().await?;
        c.call(None, None, |mut g, _| {
            let r = c.request(crate::pb::silo::GetClusterInfoRequest {});
            async move { g.get_cluster_info(r).await }
        })
        .await
        .map_err(|s| explain(&s, &self.server))
    }
}

/// A GetJobResult reply as `silo ctl job result` prints it.
fn result_json(r: crate::pb::silo::GetJobResultResponse) -> serde_json::Value {
    use crate::pb::silo::get_job_result_response::Result as R;
    let mut out =
        serde_json::json!({ "id": r.id, "status": status_name(r.status), "finished_at_ms": r.finished_at_ms });
    match r.result {
        Some(R::SuccessData(b)) => out["result"] = msgpack_value(&Some(b)).unwrap_or_default(),
        Some(R::Failure(f)) => {
            out["error_code"] = f.error_code.into();
            out["error_data"] = msgpack_value(&f.error_data).unwrap_or_default();
        }
        Some(R::Cancelled(_)) | None => {}
    }
    out
}

/// `silo ctl tenant hash`: XXH64 of the tenant, as the server and clients route by it.
pub fn tenant_hash(tenant: &str) -> String {
    crate::grpc::tenant_hash(tenant)
}

/// The shard of `info` whose tenant-hash range holds `tenant`.
pub fn locate<'a>(
    info: &'a crate::pb::silo::GetClusterInfoResponse,
    tenant: &str,
) -> Option<&'a crate::pb::silo::ShardOwner> {
    let h = tenant_hash(tenant);
    info.shard_owners.iter().find(|s| crate::grpc::hash_in_range(&h, &s.range_start, &s.range_end))
}

/// `silo ctl validate-config`: parses and validates a node's config file,
/// naming every broken setting; Ok with the effective settings as TOML.
pub fn validate_config(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let config = crate::config::Config::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    config.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if config.tls.enabled() {
        // The files exist (validate checked); do they parse and match?
        crate::tls::NodeTls::load(&config.tls).map_err(|e| anyhow::anyhow!("{}: tls: {e:#}", path.display()))?;
    }
    Ok(crate::webui::masked_config(&config))
}
