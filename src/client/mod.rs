//! A Rust client for `silo.v1.Silo` that holds a list of servers: it discovers
//! the topology with GetClusterInfo, routes each tenant to its shard's owner
//! (XXH64, SEMANTICS §2.2), follows `x-silo-shard-owner-addr` redirects, and
//! on UNAVAILABLE / transport failures refreshes the topology and retries at
//! once when it names another owner (followers answer once an election has
//! settled), with a back-off only when it does not. Used by `silo ctl`, the
//! benchmark, the chaos tools and the tests.
//!
//! Enqueue always sends an id (a fresh time-ordered UUID v7 when the caller gave none), so a
//! retry after an ambiguous failure (the leader died after committing) can be
//! recognised: ALREADY_EXISTS on a retried enqueue means the first try landed.
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::grpc::status::OWNER_ADDR_HEADER;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;

use crate::pb::silo as pb;
use crate::pb::silo::silo_client::SiloClient as Grpc;

/// Longest one GetClusterInfo of a topology refresh may take (a follower
/// holds it while an election settles, at most 1.5 s:
/// `raft::election::SETTLE_MAX`).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub servers: Vec<String>,
    pub token: Option<String>,
    /// Per-call deadline.
    pub call_timeout: Duration,
    /// How long one logical call keeps retrying through redirects and outages.
    pub retry_budget: Duration,
    /// Cap on the wait between retries.
    pub max_backoff: Duration,
    /// TLS for every connection (`https://`), e.g. from
    /// [`crate::tls::client_files`]; `None` = plaintext.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl ClientOptions {
    pub fn new(servers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ClientOptions {
            servers: servers.into_iter().map(Into::into).collect(),
            token: None,
            call_timeout: Duration::from_secs(10),
            retry_budget: Duration::from_secs(30),
            max_backoff: Duration::from_secs(1),
            tls: None,
        }
    }
}

#[derive(Debug, Clone)]
struct ShardRoute {
    id: String,
    range_start: String,
    range_end: String,
    addr: String,
}

#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    opts: ClientOptions,
    shards: Mutex<Vec<ShardRoute>>,
    /// Addresses learned from the cluster, tried after the seeds.
    known: Mutex<Vec<String>>,
    channels: Mutex<HashMap<String, Channel>>,
}

/// `msg` as a request carrying `authorization: Bearer <token>` when given.
fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(v) = token.and_then(|t| format!("Bearer {t}").parse().ok()) {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

/// The (shard, id, tenant) a job write names, turned into its request with
/// the client's token.
pub struct JobRef {
    shard: String,
    id: String,
    tenant: Option<String>,
    token: Option<String>,
}

impl JobRef {
    fn wrap<T>(&self, msg: T) -> Request<T> {
        with_token(msg, self.token.as_deref())
    }
    fn cancel(self) -> Request<pb::CancelJobRequest> {
        self.wrap(pb::CancelJobRequest { shard: self.shard.clone(), id: self.id.clone(), tenant: self.tenant.clone() })
    }
    fn restart(self) -> Request<pb::RestartJobRequest> {
        self.wrap(pb::RestartJobRequest { shard: self.shard.clone(), id: self.id.clone(), tenant: self.tenant.clone() })
    }
    fn expedite(self) -> Request<pb::ExpediteJobRequest> {
        self.wrap(pb::ExpediteJobRequest {
            shard: self.shard.clone(),
            id: self.id.clone(),
            tenant: self.tenant.clone(),
        })
    }
    fn delete(self) -> Request<pb::DeleteJobRequest> {
        self.wrap(pb::DeleteJobRequest { shard: self.shard.clone(), id: self.id.clone(), tenant: self.tenant.clone() })
    }
}

/// True for errors after which the same call may succeed elsewhere or later.
fn retryable(s: &Status) -> bool {
    match s.code() {
        // A statement over the server's SQL time limit would only time out again.
        Code::DeadlineExceeded => !s.message().contains("statement_timeout_ms"),
        Code::Unavailable | Code::Unknown => true,
        Code::NotFound => s.message().contains("shard not found"),
        Code::Internal => s.message().contains("RST_STREAM") || s.message().contains("transport"),
        Code::Cancelled => true,
        _ => false,
    }
}

impl Client {
    pub async fn connect(opts: ClientOptions) -> Result<Client, Status> {
        if opts.servers.is_empty() {
            return Err(Status::invalid_argument("at least one server address is required"));
        }
        let client = Client {
            inner: Arc::new(Inner {
                opts,
                shards: Mutex::new(Vec::new()),
                known: Mutex::new(Vec::new()),
                channels: Mutex::new(HashMap::new()),
            }),
        };
        let deadline = tokio::time::Instant::now() + client.inner.opts.retry_budget;
        let mut delay = Duration::from_millis(50);
        loop {
            match client.refresh().await {
                Ok(()) => return Ok(client),
                Err(e) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::debug!(error = %e, "topology not available yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut channels = self.inner.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = crate::tls::client_endpoint(addr, self.inner.opts.tls.as_ref())
            .map_err(|e| Status::invalid_argument(format!("bad server address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(self.inner.opts.call_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// A raw generated client for `addr`.
    pub fn grpc(&self, addr: &str) -> Result<Grpc<Channel>, Status> {
        Ok(Grpc::new(self.channel(addr)?)
            .max_decoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(crate::limits::GRPC_MESSAGE_BYTES_MAX))
    }

    /// Wraps `msg` in a request carrying the token, if any.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        with_token(msg, self.inner.opts.token.as_deref())
    }

    /// Re-reads the topology from the first server that answers (seeds first,
    /// then every address learned so far).
    pub async fn refresh(&self) -> Result<(), Status> {
        let mut candidates = self.inner.opts.servers.clone();
        for a in self.inner.known.lock().iter() {
            if !candidates.contains(a) {
                candidates.push(a.clone());
            }
        }
        let mut last = Status::unavailable("no server answered GetClusterInfo");
        for addr in candidates {
            let mut c = match self.grpc(&addr) {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let mut request = self.request(pb::GetClusterInfoRequest {});
            request.set_timeout(self.inner.opts.call_timeout.min(REFRESH_TIMEOUT));
            match c.get_cluster_info(request).await {
                Ok(info) => {
                    let info = info.into_inner();
                    let mut shards: Vec<ShardRoute> = info
                        .shard_owners
                        .iter()
                        .map(|o| ShardRoute {
                            id: o.shard_id.clone(),
                            range_start: o.range_start.clone(),
                            range_end: o.range_end.clone(),
                            addr: o.grpc_addr.clone(),
                        })
                        .collect();
                    shards.sort_by(|a, b| a.range_start.cmp(&b.range_start));
                    if shards.iter().any(|s| s.addr.is_empty()) {
                        last = Status::unavailable("some shards have no owner yet (election in progress)");
                        continue;
                    }
                    let mut known = self.inner.known.lock();
                    for m in info.members {
                        if !known.contains(&m.grpc_addr) {
                            known.push(m.grpc_addr);
                        }
                    }
                    *self.inner.shards.lock() = shards;
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// (shard id, owner address) for `tenant` (`-` when absent).
    pub fn route(&self, tenant: Option<&str>) -> Result<(String, String), Status> {
        let hash = crate::grpc::tenant_hash(tenant.unwrap_or(crate::grpc::DEFAULT_TENANT));
        let shards = self.inner.shards.lock();
        shards
            .iter()
            .rev()
            .find(|s| s.range_start.is_empty() || s.range_start.as_str() <= hash.as_str())
            .filter(|s| s.range_end.is_empty() || hash.as_str() < s.range_end.as_str())
            .map(|s| (s.id.clone(), s.addr.clone()))
            .ok_or_else(|| Status::failed_precondition(format!("no shard found for tenant hash {hash}")))
    }

    fn route_shard(&self, shard: &str) -> Option<String> {
        self.inner.shards.lock().iter().find(|s| s.id == shard).map(|s| s.addr.clone())
    }

    fn pin(&self, shard: &str, addr: &str) {
        for s in self.inner.shards.lock().iter_mut() {
            if s.id == shard {
                s.addr = addr.to_string();
            }
        }
    }

    /// Every distinct owner address (workers poll each).
    pub fn owners(&self) -> Vec<String> {
        let mut out: Vec<String> = self.inner.shards.lock().iter().map(|s| s.addr.clone()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Runs `f(client, shard)` against the owner of `shard` (or of `tenant`'s
    /// shard when `shard` is None), following redirects and retrying outages
    /// within the retry budget. Returns the last error otherwise.
    pub async fn call<T, F, Fut>(&self, tenant: Option<&str>, shard: Option<&str>, mut f: F) -> Result<T, Status>
    where
        F: FnMut(Grpc<Channel>, String) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.inner.opts.retry_budget;
        let mut delay = Duration::from_millis(25);
        let mut attempt = 0u32;
        loop {
            let (shard_id, addr) = match shard {
                Some(s) => (s.to_string(), self.route_shard(s).unwrap_or_else(|| self.any_known())),
                None => self.route(tenant)?,
            };
            let result = match self.grpc(&addr) {
                Ok(c) => f(c, shard_id.clone()).await.map(Response::into_inner),
                Err(e) => Err(e),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(s) if retryable(&s) && tokio::time::Instant::now() + delay < deadline => {
                    attempt += 1;
                    let redirect = s.metadata().get(OWNER_ADDR_HEADER).and_then(|v| v.to_str().ok()).map(String::from);
                    match redirect {
                        Some(owner) if owner != addr => self.pin(&shard_id, &owner),
                        _ => {
                            // Ask the cluster who leads now: a follower answers
                            // once an election has settled, so a new owner is
                            // tried at once; the same one only after a back-off.
                            if let Err(e) = self.refresh().await {
                                tracing::debug!(error = %e, attempt, "topology refresh failed");
                            }
                            let owner_now = match shard {
                                Some(s) => self.route_shard(s),
                                None => self.route(tenant).ok().map(|(_, a)| a),
                            };
                            let moved = owner_now.is_some_and(|o| o != addr);
                            if !moved {
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(self.inner.opts.max_backoff);
                            }
                        }
                    }
                }
                Err(s) => return Err(s),
            }
        }
    }

    fn any_known(&self) -> String {
        self.inner.shards.lock().first().map(|s| s.addr.clone()).unwrap_or_else(|| self.inner.opts.servers[0].clone())
    }

    /// Enqueues `req` (shard filled in from the tenant). Idempotent across
    /// retries: an id is generated here when absent ([`crate::new_job_id`],
    /// time-ordered, which the server stores more cheaply than a random id).
    pub async fn enqueue(&self, mut req: pb::EnqueueRequest) -> Result<String, Status> {
        if req.id.is_empty() {
            req.id = crate::new_job_id();
        }
        let tenant = req.tenant.clone();
        let mut tries = 0u32;
        let result = self
            .call(tenant.as_deref(), None, |mut c, shard| {
                tries += 1;
                let mut r = req.clone();
                r.shard = shard;
                let r = self.request(r);
                async move { c.enqueue(r).await }
            })
            .await;
        match result {
            Ok(resp) => Ok(resp.id),
            Err(s) if s.code() == Code::AlreadyExists && tries > 1 => Ok(req.id),
            Err(s) => Err(s),
        }
    }

    pub async fn get_job(
        &self,
        id: &str,
        tenant: Option<&str>,
        include_attempts: bool,
    ) -> Result<pb::GetJobResponse, Status> {
        self.call(tenant, None, |mut c, shard| {
            let r = self.request(pb::GetJobRequest {
                shard,
                id: id.to_string(),
                tenant: tenant.map(String::from),
                include_attempts,
            });
            async move { c.get_job(r).await }
        })
        .await
    }

    pub async fn get_job_result(&self, id: &str, tenant: Option<&str>) -> Result<pb::GetJobResultResponse, Status> {
        self.call(tenant, None, |mut c, shard| {
            let r =
                self.request(pb::GetJobResultRequest { shard, id: id.to_string(), tenant: tenant.map(String::from) });
            async move { c.get_job_result(r).await }
        })
        .await
    }

    /// CancelJob (SEMANTICS: a running job learns of it on its next heartbeat).
    pub async fn cancel_job(&self, id: &str, tenant: Option<&str>) -> Result<(), Status> {
        self.job_call(id, tenant, |mut c, r| async move { c.cancel_job(r.cancel()).await.map(drop) }).await
    }

    /// RestartJob: a cancelled or failed job runs again with a fresh retry count.
    pub async fn restart_job(&self, id: &str, tenant: Option<&str>) -> Result<(), Status> {
        self.job_call(id, tenant, |mut c, r| async move { c.restart_job(r.restart()).await.map(drop) }).await
    }

    /// ExpediteJob: a future-scheduled attempt becomes due now.
    pub async fn expedite_job(&self, id: &str, tenant: Option<&str>) -> Result<(), Status> {
        self.job_call(id, tenant, |mut c, r| async move { c.expedite_job(r.expedite()).await.map(drop) }).await
    }

    /// DeleteJob: erases a finished job (a scheduled or running one is refused).
    pub async fn delete_job(&self, id: &str, tenant: Option<&str>) -> Result<(), Status> {
        self.job_call(id, tenant, |mut c, r| async move { c.delete_job(r.delete()).await.map(drop) }).await
    }

    /// One of the four job writes that take (shard, id, tenant).
    async fn job_call<F, Fut>(&self, id: &str, tenant: Option<&str>, mut f: F) -> Result<(), Status>
    where
        F: FnMut(Grpc<Channel>, JobRef) -> Fut,
        Fut: Future<Output = Result<(), Status>>,
    {
        self.call(tenant, None, |c, shard| {
            let r = JobRef {
                shard,
                id: id.to_string(),
                tenant: tenant.map(String::from),
                token: self.inner.opts.token.clone(),
            };
            let fut = f(c, r);
            async move { fut.await.map(Response::new) }
        })
        .await
    }

    /// Polls every owner once for up to `max_tasks` tasks of `task_group`.
    pub async fn lease_tasks(
        &self,
        worker_id: &str,
        task_group: &str,
        max_tasks: u32,
    ) -> Result<Vec<pb::Task>, Status> {
        let mut out = Vec::new();
        let mut last_err = None;
        for addr in self.owners() {
            let want = max_tasks.saturating_sub(out.len() as u32);
            if want == 0 {
                break;
            }
            let mut c = self.grpc(&addr)?;
            let r = self.request(pb::LeaseTasksRequest {
                shard: None,
                worker_id: worker_id.into(),
                max_tasks: want,
                task_group: task_group.into(),
                tenant: None,
            });
            match c.lease_tasks(r).await {
                Ok(resp) => out.extend(resp.into_inner().tasks),
                Err(e) => last_err = Some(e),
            }
        }
        if out.is_empty() {
            if let Some(e) = last_err {
                if retryable(&e) {
                    let _ = self.refresh().await;
                }
                return Err(e);
            }
        }
        Ok(out)
    }

    pub async fn heartbeat(&self, task: &pb::Task, worker_id: &str) -> Result<pb::HeartbeatResponse, Status> {
        self.call(None, Some(&task.shard), |mut c, shard| {
            let r = self.request(pb::HeartbeatRequest {
                shard,
                worker_id: worker_id.into(),
                task_id: task.id.clone(),
                tenant_id: task.tenant_id.clone(),
            });
            async move { c.heartbeat(r).await }
        })
        .await
    }

    /// Reports an outcome for `task`, routed by the task's shard.
    pub async fn report_outcome(
        &self,
        task: &pb::Task,
        outcome: pb::report_outcome_request::Outcome,
    ) -> Result<(), Status> {
        self.call(None, Some(&task.shard), |mut c, shard| {
            let r = self.request(pb::ReportOutcomeRequest {
                shard,
                task_id: task.id.clone(),
                outcome: Some(outcome.clone()),
                tenant_id: task.tenant_id.clone(),
            });
            async move { c.report_outcome(r).await }
        })
        .await
        .map(|_| ())
    }
}

impl Client {
    /// Runs read-only SQL (Query) on `shard`, or on the shard of `tenant`
    /// when `shard` is None. Rows come back as MessagePack maps.
    pub async fn query(
        &self,
        sql: &str,
        tenant: Option<&str>,
        shard: Option<&str>,
        parameters: Vec<pb::QueryParameter>,
    ) -> Result<pb::QueryResponse, Status> {
        self.call(tenant, shard, |mut c, shard| {
            let r = self.request(pb::QueryRequest {
                shard,
                sql: sql.to_string(),
                tenant: tenant.map(String::from),
                parameters: parameters.clone(),
            });
            async move { c.query(r).await }
        })
        .await
    }

    /// The same statement through QueryArrow: the schema and every record
    /// batch, decoded from the Arrow IPC messages.
    pub async fn query_arrow(
        &self,
        sql: &str,
        tenant: Option<&str>,
        shard: Option<&str>,
        parameters: Vec<pb::QueryParameter>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), Status> {
        let mut stream = self
            .call(tenant, shard, |mut c, shard| {
                let r = self.request(pb::QueryArrowRequest {
                    shard,
                    sql: sql.to_string(),
                    tenant: tenant.map(String::from),
                    parameters: parameters.clone(),
                });
                async move { c.query_arrow(r).await }
            })
            .await?;
        let mut schema = None;
        let mut batches = Vec::new();
        while let Some(msg) = stream.message().await? {
            let reader = StreamReader::try_new(std::io::Cursor::new(msg.ipc_data), None)
                .map_err(|e| Status::internal(format!("bad Arrow IPC from the server: {e}")))?;
            schema.get_or_insert_with(|| reader.schema());
            for b in reader {
                batches.push(b.map_err(|e| Status::internal(format!("bad Arrow IPC from the server: {e}")))?);
            }
        }
        let schema = schema.ok_or_else(|| Status::internal("QueryArrow returned no message"))?;
        Ok((schema, batches))
    }
}

/// `SerializedBytes` holding `v` as MessagePack bytes.
pub fn msgpack(v: Vec<u8>) -> Option<pb::SerializedBytes> {
    Some(pb::SerializedBytes { encoding: Some(pb::serialized_bytes::Encoding::Msgpack(v)) })
}
