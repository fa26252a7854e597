//! `silo.v1.Silo` handlers. Each one: route (shard, leadership), tenant rules,
//! field validation, then one proposal or one read. RPCs this server does not
//! offer answer UNIMPLEMENTED with a reason (generated default stubs cover the
//! profiling and split administration calls).
use std::future::Future;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::convert::{self, serialized};
use super::diagnostics;
use super::status;
use super::validate;
use super::SiloService;
use crate::pb::silo as pb;
use crate::pb::silo::silo_server::Silo;
use crate::query::Format;
use crate::raft::Leadership;
use crate::state_machine::read::{self, HeartbeatError, JobResult, NotComplete};
use crate::state_machine::{
    AttemptStatus, ImportedAttempt, Job, JobKey, JobStatus, NewJob, Op, Output, RefreshOutcome, Rejection, Tables, View,
};
use crate::storage::rocks::ReadKv;

/// Records count and latency per RPC and status code as Silo names them
/// (`silo_grpc_requests_total{method,status}` with method `Enqueue` and
/// status `OK`, `NOT_FOUND`, ...; `silo_grpc_request_duration_seconds{method}`),
/// and wraps the reply. `rpc` is the snake_case method name.
async fn observed<T>(rpc: &'static str, fut: impl Future<Output = Result<T, Status>>) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = fut.await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    let method = status::method_name(rpc);
    metrics::counter!("silo_grpc_requests_total", "method" => method.clone(), "status" => status::code_name(code))
        .increment(1);
    metrics::histogram!("silo_grpc_request_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    if let Err(s) = &result {
        tracing::debug!(rpc, code = ?s.code(), message = s.message(), "rpc rejected");
    }
    result.map(Response::new)
}

fn unexpected(output: Output) -> Status {
    Status::internal(format!("unexpected state machine output: {output:?}"))
}

impl SiloService {
    /// One ImportJobs entry: validated like Enqueue (id and task group
    /// required, attempts must be finished), then proposed. Failures are
    /// reported per job.
    async fn import_one(&self, j: pb::ImportJobRequest) -> pb::ImportJobResult {
        let id = j.id.clone();
        let result: Result<Output, Status> = async {
            let s = self.route_write(&j.shard).await?;
            let tenant = self.job_tenant(j.tenant.as_deref(), s)?;
            validate::job_id(&j.id)?;
            let job = self.validated_job(
                JobKey { shard: s.index, tenant, id: j.id },
                validate::RawJob {
                    priority: j.priority,
                    metadata: j.metadata,
                    task_group: j.task_group,
                    start_at_ms: j.start_at_ms,
                    retry_policy: j.retry_policy,
                    payload: j.payload,
                    limits: j.limits,
                },
            )?;
            if j.attempts.len() > crate::limits::IMPORT_ATTEMPTS_PER_JOB_MAX {
                return Err(status::invalid(format!(
                    "attempts: too many ({}, max {})",
                    j.attempts.len(),
                    crate::limits::IMPORT_ATTEMPTS_PER_JOB_MAX
                )));
            }
            let mut attempts = Vec::with_capacity(j.attempts.len());
            for (i, a) in j.attempts.into_iter().enumerate() {
                if a.error_code.as_ref().is_some_and(|c| c.len() > crate::limits::FAILURE_CODE_BYTES_MAX) {
                    return Err(status::invalid(format!(
                        "attempts[{i}].error_code too long (must be <= {} bytes)",
                        crate::limits::FAILURE_CODE_BYTES_MAX
                    )));
                }
                let status = match pb::AttemptStatus::try_from(a.status) {
                    Ok(pb::AttemptStatus::Succeeded) => AttemptStatus::Succeeded,
                    Ok(pb::AttemptStatus::Failed) => AttemptStatus::Failed,
                    Ok(pb::AttemptStatus::Cancelled) => AttemptStatus::Cancelled,
                    _ => {
                        return Err(status::invalid(format!(
                            "attempts[{i}] must be finished (SUCCEEDED, FAILED or CANCELLED)"
                        )))
                    }
                };
                attempts.push(ImportedAttempt {
                    status,
                    started_at_ms: a.started_at_ms,
                    finished_at_ms: a.finished_at_ms,
                    result: a.result.map(|b| convert::bytes(Some(b))),
                    error_code: a.error_code,
                    error_data: a.error_data.map(|b| convert::bytes(Some(b))),
                });
            }
            self.write(Op::ImportJob { job, enqueue_time_ms: j.enqueue_time_ms, attempts }).await
        }
        .await;
        match result {
            Ok(Output::Imported { id, status }) => {
                pb::ImportJobResult { id, success: true, error: None, status: convert::job_status(status) as i32 }
            }
            Ok(other) => pb::ImportJobResult {
                id,
                success: false,
                error: Some(format!("unexpected state machine output: {other:?}")),
                status: pb::JobStatus::Failed as i32,
            },
            Err(e) => pb::ImportJobResult {
                id,
                success: false,
                error: Some(e.message().to_string()),
                status: pb::JobStatus::Failed as i32,
            },
        }
    }

    /// Whether a committed lease grant proposed while leading term
    /// `proposed_in` may be handed out: this node still leads that term and a
    /// quorum confirmed it no earlier than `max_age` before now (see
    /// LeaseTasks). A confirmation round that times out (one slow follower)
    /// is tried again for up to a minimum election timeout, since withholding
    /// costs the attempt; losing the term, or no quorum within that time,
    /// withholds: UNAVAILABLE, and the grant's leases run out on the real
    /// leader. `silo_grants_withheld_total{why}` counts each case.
    async fn grant_still_ours(&self, proposed_in: Option<u64>) -> Result<(), Status> {
        let max_age = std::time::Duration::from_millis(self.edge.leadership_confirmation_max_age_ms);
        let deadline = std::time::Instant::now() + 2 * max_age;
        let why = loop {
            if proposed_in.is_none() || self.node.leader_term() != proposed_in {
                break "deposed";
            }
            match self.node.confirm_leadership(max_age).await {
                Ok(()) if self.node.leader_term() == proposed_in => return Ok(()),
                Ok(()) | Err(crate::raft::ProposeError::NotLeader { .. }) => break "deposed",
                Err(_) if std::time::Instant::now() >= deadline => break "unconfirmed",
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        };
        metrics::counter!("silo_grants_withheld_total", "why" => why).increment(1);
        Err(Status::unavailable(match why {
            "deposed" => "this node lost leadership while the lease grant was committing; poll the current leader",
            _ => "this node could not confirm with a quorum that it still leads after the lease grant committed; poll again",
        }))
    }

    /// The job an import names, read from this node's applied state, when its
    /// shard and tenant resolve (a request that does not resolve gets its
    /// error from the import itself).
    fn existing_job(&self, shard: &str, tenant: Option<&str>, id: &str) -> Option<Job> {
        let s = self.locate(shard).ok()?;
        let tenant = self.job_tenant(tenant, s).ok()?;
        View(&ReadKv { db: self.node.db() }).job(&JobKey { shard: s.index, tenant, id: id.to_string() })
    }

    /// The job fields Enqueue and ImportJobs share, validated in the order of
    /// SEMANTICS §4 (priority, metadata, task group), then the rest.
    fn validated_job(&self, key: JobKey, raw: validate::RawJob) -> Result<NewJob, Status> {
        let priority = validate::priority(raw.priority)?;
        let metadata = validate::metadata(raw.metadata)?;
        validate::task_group(&raw.task_group)?;
        Ok(NewJob {
            key,
            task_group: raw.task_group,
            priority,
            start_at_ms: validate::start_at_ms(raw.start_at_ms)?,
            retry_policy: validate::retry_policy(raw.retry_policy)?,
            payload: validate::payload(raw.payload, self.edge.max_payload_bytes)?,
            limits: validate::limits(raw.limits)?,
            metadata,
        })
    }

    /// Trims `picked` to the tasks whose stored job record and payload fit in
    /// the LeaseTasks reply budget, in scheduling order, keeping at least one
    /// (a single task is at most the payload limit plus bounded metadata).
    /// The others go back to the queue at once. Sizes are read from this
    /// node's store: the stored bytes are within a few percent of the
    /// protobuf a task encodes to. Refresh tasks are small and not counted.
    fn fit_reply_budget(&self, picked: &mut crate::broker::Picked) {
        let view = self.view();
        let tables = View(&view);
        let mut used = 0usize;
        let mut keep = 0;
        for task_id in &picked.task_ids {
            // A task dequeued since the pick costs nothing: the grant skips it.
            let bytes = tables.queued(task_id).map_or(0, |q| {
                view.value_len(&crate::storage::keys::job(&q.job))
                    + view.value_len(&crate::storage::keys::payload(&q.job))
            }) + 256;
            if keep > 0 && used + bytes > self.edge.lease_reply_bytes_max {
                break;
            }
            used += bytes;
            keep += 1;
        }
        if keep < picked.task_ids.len() {
            metrics::counter!("silo_lease_reply_trimmed_total").increment(1);
            let rest = picked.task_ids.split_off(keep);
            self.broker.release(&rest);
        }
    }

    /// Proposes `op`; a rejection becomes its status.
    async fn write(&self, op: Op) -> Result<Output, Status> {
        match self.node.propose(op).await.map_err(status::propose)? {
            Ok(output) => Ok(output),
            Err(rejection) => Err(status::rejection(&rejection)),
        }
    }

    async fn job_write(
        &self,
        shard: &str,
        tenant: Option<&str>,
        id: String,
        op: impl FnOnce(JobKey) -> Op,
    ) -> Result<(), Status> {
        let s = self.route_write(shard).await?;
        let tenant = self.job_tenant(tenant, s)?;
        self.write(op(JobKey { shard: s.index, tenant, id })).await.map(|_| ())
    }

    fn view(&self) -> ReadKv<'_> {
        ReadKv { db: self.node.db() }
    }

    fn shard_id(&self, index: u32) -> String {
        self.shard_spec(index).id
    }
}

#[tonic::async_trait]
impl Silo for SiloService {
    async fn get_cluster_info(
        &self,
        _request: Request<pb::GetClusterInfoRequest>,
    ) -> Result<Response<pb::GetClusterInfoResponse>, Status> {
        observed("get_cluster_info", async {
            let Some(map) = self.shards() else {
                return Err(Status::unavailable("GetClusterInfo unavailable: the cluster has not formed yet"));
            };
            let me = self.node.id();
            let addr_of = |id: u64, stored: &str| -> String {
                if id == me {
                    self.edge.advertise_addr.clone()
                } else {
                    stored.to_string()
                }
            };
            let owner = match self.node.settled_leadership().await {
                Leadership::Leader => Some((me, self.edge.advertise_addr.clone())),
                Leadership::Follower { leader } => leader.map(|(id, info)| (id, addr_of(id, &info.grpc_addr))),
            };
            // During an election no leader is known: answer with the last known
            // owner (a client that tries it is redirected or fails over), or
            // UNAVAILABLE before any was known. Never an empty owner, which
            // Silo's client takes as "drop every shard" (SEMANTICS §2.3).
            let owner = match owner {
                Some(o) => {
                    *self.last_owner.lock() = Some(o.clone());
                    o
                }
                // Not this node itself: a leader cut off from its quorum must
                // send clients elsewhere, not back to itself.
                None => self.last_owner.lock().clone().filter(|(id, _)| *id != me).ok_or_else(|| {
                    Status::unavailable("GetClusterInfo unavailable: no leader is known yet (election in progress)")
                })?,
            };
            let (owner_id, owner_addr) = (owner.0.to_string(), owner.1);
            Ok(pb::GetClusterInfoResponse {
                num_shards: map.len() as u32,
                shard_owners: map
                    .iter()
                    .map(|s| pb::ShardOwner {
                        shard_id: s.id.clone(),
                        grpc_addr: owner_addr.clone(),
                        node_id: owner_id.clone(),
                        range_start: s.range_start.clone(),
                        range_end: s.range_end.clone(),
                        placement_ring: None,
                    })
                    .collect(),
                this_node_id: me.to_string(),
                this_grpc_addr: self.edge.advertise_addr.clone(),
                members: self
                    .node
                    .members()
                    .into_iter()
                    .map(|(id, info)| pb::ClusterMember {
                        node_id: id.to_string(),
                        grpc_addr: addr_of(id, &info.grpc_addr),
                        placement_rings: vec![],
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn get_node_info(
        &self,
        _request: Request<pb::GetNodeInfoRequest>,
    ) -> Result<Response<pb::GetNodeInfoResponse>, Status> {
        observed("get_node_info", async {
            let leads = self.node.leadership() == Leadership::Leader;
            let view = self.view();
            let t = View(&view);
            let owned_shards = match (leads, self.shards()) {
                (true, Some(map)) => map
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let c = t.counters(i as u32);
                        pb::OwnedShardInfo {
                            shard_id: s.id.clone(),
                            total_jobs: c.total_jobs,
                            completed_jobs: c.completed_jobs,
                            cleanup_status: "CompactionDone".into(),
                            created_at_ms: c.created_at_ms,
                            cleanup_completed_at_ms: 0,
                        }
                    })
                    .collect(),
                _ => vec![],
            };
            Ok(pb::GetNodeInfoResponse { node_id: self.node.id().to_string(), owned_shards, placement_rings: vec![] })
        })
        .await
    }

    async fn enqueue(&self, request: Request<pb::EnqueueRequest>) -> Result<Response<pb::EnqueueResponse>, Status> {
        observed("enqueue", async {
            let r = request.into_inner();
            let s = self.route_write(&r.shard).await?;
            let tenant = self.job_tenant(r.tenant.as_deref(), s)?;
            let id = if r.id.is_empty() {
                crate::new_job_id()
            } else {
                validate::job_id(&r.id)?;
                r.id
            };
            let new = self.validated_job(
                JobKey { shard: s.index, tenant, id },
                validate::RawJob {
                    priority: r.priority,
                    metadata: r.metadata,
                    task_group: r.task_group,
                    start_at_ms: r.start_at_ms,
                    retry_policy: r.retry_policy,
                    payload: r.payload,
                    limits: r.limits,
                },
            )?;
            match self.write(Op::Enqueue(new)).await? {
                Output::Enqueued { id } => {
                    metrics::counter!("silo_jobs_enqueued_total").increment(1);
                    crate::traces::record_job(&id);
                    Ok(pb::EnqueueResponse { id })
                }
                other => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<Response<pb::GetJobResponse>, Status> {
        observed("get_job", async {
            let r = request.into_inner();
            crate::traces::record_job(&r.id);
            let s = self.route_read(&r.shard).await?;
            let tenant = self.job_tenant(r.tenant.as_deref(), s)?;
            let key = JobKey { shard: s.index, tenant, id: r.id };
            let view =
                read::get_job(&View(&self.view()), &key, r.include_attempts).map_err(|e| status::rejection(&e))?;
            Ok(convert::job_to_pb(view))
        })
        .await
    }

    async fn get_job_result(
        &self,
        request: Request<pb::GetJobResultRequest>,
    ) -> Result<Response<pb::GetJobResultResponse>, Status> {
        observed("get_job_result", async {
            let r = request.into_inner();
            crate::traces::record_job(&r.id);
            let s = self.route_read(&r.shard).await?;
            let tenant = self.job_tenant(r.tenant.as_deref(), s)?;
            let key = JobKey { shard: s.index, tenant, id: r.id.clone() };
            let result = read::get_job_result(&View(&self.view()), &key).map_err(|e| status::rejection(&e))?;
            use pb::get_job_result_response::Result as R;
            let (status, finished_at_ms, result) = match result {
                Err(NotComplete(st)) => {
                    return Err(Status::failed_precondition(format!("job is not complete: status is {}", st.name())))
                }
                Ok(JobResult::Succeeded { finished_at_ms, result }) => {
                    (pb::JobStatus::Succeeded, finished_at_ms, R::SuccessData(serialized(result)))
                }
                Ok(JobResult::Failed { finished_at_ms, error_code, error_data }) => (
                    pb::JobStatus::Failed,
                    finished_at_ms,
                    R::Failure(pb::JobFailure { error_code, error_data: Some(serialized(error_data)) }),
                ),
                Ok(JobResult::Cancelled { finished_at_ms, cancelled_at_ms }) => {
                    (pb::JobStatus::Cancelled, finished_at_ms, R::Cancelled(pb::JobCancelled { cancelled_at_ms }))
                }
            };
            Ok(pb::GetJobResultResponse { id: r.id, status: status as i32, finished_at_ms, result: Some(result) })
        })
        .await
    }

    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        observed("delete_job", async {
            let r = request.into_inner();
            crate::traces::record_job(&r.id);
            self.job_write(&r.shard, r.tenant.as_deref(), r.id, |job| Op::DeleteJob { job }).await?;
            Ok(pb::DeleteJobResponse {})
        })
        .await
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        observed("cancel_job", async {
            let r = request.into_inner();
            crate::traces::record_job(&r.id);
            self.job_write(&r.shard, r.tenant.as_deref(), r.id, |job| Op::CancelJob { job }).await?;
            Ok(pb::CancelJobResponse {})
        })
        .await
    }

    async fn restart_job(
        &self,
        request: Request<pb::RestartJobRequest>,
    ) -> Result<Response<pb::RestartJobResponse>, Status> {
        observed("restart_job", async {
            let r = request.into_inner();
            crate::traces::record_job(&r.id);
            self.job_write(&r.shard, r.tenant.as_deref(), r.id, |job| Op::RestartJob { job }).await?;
            Ok(pb::RestartJobResponse {})
        })
        .await
    }

    async fn expedite_job(
        &self,
        request: Request<pb::ExpediteJobRequest>,
    ) -> Result<Response<pb::ExpediteJobResponse>, Status> {
        observed("expedite_job", async {
            let r = request.into_inner();
            crate::traces::record_job(&r.id);
            self.job_write(&r.shard, r.tenant.as_deref(), r.id, |job| Op::ExpediteJob { job }).await?;
            Ok(pb::ExpediteJobResponse {})
        })
        .await
    }

    async fn lease_task(
        &self,
        request: Request<pb::LeaseTaskRequest>,
    ) -> Result<Response<pb::LeaseTaskResponse>, Status> {
        observed("lease_task", async {
            let r = request.into_inner();
            let s = self.route_write(&r.shard).await?;
            let tenant = self.job_tenant(r.tenant.as_deref(), s)?;
            validate::worker_id(&r.worker_id)?;
            let op = Op::LeaseJob {
                job: JobKey { shard: s.index, tenant, id: r.id },
                worker_id: r.worker_id,
                lease_ms: self.edge.lease_ms,
            };
            let proposed_in = self.node.leader_term();
            let result = self.write(op).await?;
            self.grant_still_ours(proposed_in).await?;
            match result {
                Output::Granted { mut tasks, .. } if tasks.len() == 1 => {
                    let task = tasks.pop().expect("one task");
                    let shard = self.shard_id(task.job.shard);
                    Ok(pb::LeaseTaskResponse { task: Some(convert::task_to_pb(task, shard)) })
                }
                other => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn lease_tasks(
        &self,
        request: Request<pb::LeaseTasksRequest>,
    ) -> Result<Response<pb::LeaseTasksResponse>, Status> {
        observed("lease_tasks", async {
            let r = request.into_inner();
            validate::task_group(&r.task_group)?;
            if r.worker_id.len() > crate::limits::WORKER_ID_BYTES_MAX {
                return Err(status::invalid(format!(
                    "worker_id too long (must be <= {} bytes)",
                    crate::limits::WORKER_ID_BYTES_MAX
                )));
            }
            let empty = pb::LeaseTasksResponse { tasks: vec![], refresh_tasks: vec![] };
            let shard_filter = match r.shard.as_deref().filter(|s| !s.is_empty()) {
                Some(shard) => Some(self.route_write(shard).await?.index),
                None => None,
            };
            if r.max_tasks == 0 || (shard_filter.is_none() && self.node.leadership() != Leadership::Leader) {
                return Ok(empty);
            }
            let tenant_filter = match r.tenant.as_deref().filter(|t| !t.is_empty()) {
                Some(t) if self.edge.tenancy_enabled => Some(t.to_string()),
                _ => None,
            };
            let max = r.max_tasks.min(crate::limits::LEASE_TASKS_MAX) as usize;
            let view = self.view();
            let mut picked = self.broker.pick(&r.task_group, max, self.node.leader_now_ms(), |task_id| {
                if shard_filter.is_none() && tenant_filter.is_none() {
                    return true;
                }
                View(&view).queued(task_id).is_some_and(|q| {
                    shard_filter.is_none_or(|s| s == q.job.shard)
                        && tenant_filter.as_deref().is_none_or(|t| t == q.job.tenant)
                })
            });
            self.fit_reply_budget(&mut picked);
            if picked.task_ids.is_empty() && picked.refresh_ids.is_empty() {
                return Ok(empty);
            }
            let all: Vec<String> = picked.task_ids.iter().chain(picked.refresh_ids.iter()).cloned().collect();
            let op = Op::GrantLeases { worker_id: r.worker_id, task_ids: all.clone(), lease_ms: self.edge.lease_ms };
            let proposed_in = self.node.leader_term();
            let result = self.write(op).await;
            self.broker.release(&all);
            let result = result?;
            // A committed grant is handed out only by the leader of the term
            // that proposed it. A node deposed while its grant was in flight
            // (a deaf or isolated leader whose entry a later leader committed)
            // would otherwise deliver leases that the current leader already
            // expired and handed to someone else. Within its term, a lease's
            // clock starts when the grant applies here, before delivery, so a
            // delivered lease has its whole length. A withheld grant stays
            // committed: its leases run out on the current leader and the
            // attempts count as crashed (the retry policy applies).
            // Still leading the same term is not enough: a leader frozen (SIGSTOP,
            // a long GC-like stall) while its grant was replicated wakes up
            // still believing it leads, learns the commit from acks that
            // waited in its sockets, and would deliver leases whose clocks the
            // next leader started seconds ago (Jepsen: lease-dead-on-arrival).
            // A quorum confirmation no older than half an election timeout at
            // the time of the check (followers refuse other candidates for an
            // election timeout after hearing from the leader) rules that out:
            // the frozen node's last confirmation is as old as its stall. A
            // freeze after this check, before the reply leaves, can still
            // deliver late; the window is now the send itself.
            self.grant_still_ours(proposed_in).await?;
            match result {
                Output::Granted { tasks, refresh_tasks } => {
                    let tasks = tasks
                        .into_iter()
                        .map(|t| {
                            let shard = self.shard_id(t.job.shard);
                            convert::task_to_pb(t, shard)
                        })
                        .collect();
                    let refresh_tasks = refresh_tasks
                        .into_iter()
                        .map(|t| {
                            let shard = self.shard_id(t.owner.shard);
                            convert::refresh_task_to_pb(t, shard)
                        })
                        .collect();
                    Ok(pb::LeaseTasksResponse { tasks, refresh_tasks })
                }
                other => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn report_outcome(
        &self,
        request: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        observed("report_outcome", async {
            let r = request.into_inner();
            crate::traces::record_task(&r.task_id);
            let s = self.route_write(&r.shard).await?;
            self.worker_tenant(r.tenant_id.as_deref(), s)?;
            let outcome = validate::outcome(r.outcome)?;
            validate::task_id(&r.task_id).map_err(|_| Status::not_found("lease not found"))?;
            self.write(Op::ReportOutcome { task_id: r.task_id, outcome }).await?;
            Ok(pb::ReportOutcomeResponse {})
        })
        .await
    }

    async fn report_refresh_outcome(
        &self,
        request: Request<pb::ReportRefreshOutcomeRequest>,
    ) -> Result<Response<pb::ReportRefreshOutcomeResponse>, Status> {
        observed("report_refresh_outcome", async {
            let r = request.into_inner();
            crate::traces::record_task(&r.task_id);
            let s = self.route_write(&r.shard).await?;
            self.worker_tenant(r.tenant_id.as_deref(), s)?;
            validate::task_id(&r.task_id).map_err(|_| Status::not_found("lease not found"))?;
            use pb::report_refresh_outcome_request::Outcome as O;
            let outcome = match r.outcome {
                None => return Err(status::invalid("missing outcome")),
                Some(O::Success(ok)) => RefreshOutcome::Success { new_max_concurrency: ok.new_max_concurrency },
                Some(O::Failure(f)) => {
                    validate::refresh_failure(&f.code, &f.message)?;
                    RefreshOutcome::Failure { code: f.code, message: f.message }
                }
            };
            self.write(Op::ReportRefreshOutcome { task_id: r.task_id, outcome }).await?;
            Ok(pb::ReportRefreshOutcomeResponse {})
        })
        .await
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        observed("heartbeat", async {
            let r = request.into_inner();
            crate::traces::record_task(&r.task_id);
            let s = self.route_write(&r.shard).await?;
            self.worker_tenant(r.tenant_id.as_deref(), s)?;
            // No lease has an id this long (as ReportOutcome answers).
            validate::task_id(&r.task_id).map_err(|_| Status::not_found("lease not found"))?;
            let max_age = std::time::Duration::from_millis(self.edge.leadership_confirmation_max_age_ms);
            self.node.confirm_leadership(max_age).await.map_err(status::propose)?;
            let check = read::check_lease(&View(&self.view()), &r.task_id, &r.worker_id).map_err(status::heartbeat)?;
            // The broker orders this against the reaper: refused once the
            // lease is being expired (src/broker/mod.rs, "One order").
            if !self.broker.extend_lease(&r.task_id, crate::monotonic_ms(), self.edge.lease_ms) {
                return Err(status::heartbeat(HeartbeatError::LeaseNotFound));
            }
            Ok(pb::HeartbeatResponse {
                cancelled: check.cancelled_at_ms.is_some(),
                cancelled_at_ms: check.cancelled_at_ms,
            })
        })
        .await
    }

    async fn query(&self, request: Request<pb::QueryRequest>) -> Result<Response<pb::QueryResponse>, Status> {
        observed("query", async {
            let r = request.into_inner();
            let out = self.run_query(&r.shard, r.tenant.as_deref(), &r.sql, r.parameters, Format::Rows).await?;
            Ok(pb::QueryResponse {
                columns: out.columns.into_iter().map(|(name, data_type)| pb::ColumnInfo { name, data_type }).collect(),
                row_count: out.parts.len() as i32,
                rows: out.parts.into_iter().map(serialized).collect(),
            })
        })
        .await
    }

    async fn query_arrow(
        &self,
        request: Request<pb::QueryArrowRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::ArrowIpcMessage>>, Status> {
        observed("query_arrow", async {
            let r = request.into_inner();
            let out = self.run_query(&r.shard, r.tenant.as_deref(), &r.sql, r.parameters, Format::ArrowIpc).await?;
            let messages = out.parts.into_iter().map(|ipc_data| Ok(pb::ArrowIpcMessage { ipc_data }));
            let stream: tonic::codegen::BoxStream<pb::ArrowIpcMessage> =
                Box::pin(futures::stream::iter(messages.collect::<Vec<_>>()));
            Ok(stream)
        })
        .await
    }

    async fn drop_tenant_holders(
        &self,
        request: Request<pb::DropTenantHoldersRequest>,
    ) -> Result<Response<pb::DropTenantHoldersResponse>, Status> {
        observed("drop_tenant_holders", async {
            let r = request.into_inner();
            let s = self.route_write(&r.shard).await?;
            let tenant = self.job_tenant(r.tenant.as_deref(), s)?;
            match self.write(Op::DropTenantHolders { shard: s.index, tenant }).await? {
                Output::Removed { count } => Ok(pb::DropTenantHoldersResponse { holders_dropped: count }),
                other => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn reset_shards(
        &self,
        _request: Request<pb::ResetShardsRequest>,
    ) -> Result<Response<pb::ResetShardsResponse>, Status> {
        observed("reset_shards", async {
            if !self.edge.dev_mode {
                return Err(Status::permission_denied("ResetShards is only available in dev mode"));
            }
            if self.node.leadership() != Leadership::Leader {
                return Ok(pb::ResetShardsResponse { shards_reset: 0 });
            }
            self.write(Op::ResetAll).await?;
            Ok(pb::ResetShardsResponse { shards_reset: self.shards().map_or(0, |m| m.len() as u32) })
        })
        .await
    }

    async fn import_jobs(
        &self,
        request: Request<pb::ImportJobsRequest>,
    ) -> Result<Response<pb::ImportJobsResponse>, Status> {
        observed("import_jobs", async {
            let r = request.into_inner();
            if r.jobs.len() > crate::limits::IMPORT_JOBS_MAX {
                return Err(status::invalid(format!("too many jobs (max {})", crate::limits::IMPORT_JOBS_MAX)));
            }
            // A call that reached a follower is redirected as a whole.
            if let Some(first) = r.jobs.first() {
                self.route_write(&first.shard).await?;
            }
            // As Silo does, a batch naming a running job is refused as a whole
            // (each job's apply checks again: this read is only the early answer).
            for j in &r.jobs {
                if let Some(job) = self.existing_job(&j.shard, j.tenant.as_deref(), &j.id) {
                    if job.status == JobStatus::Running {
                        return Err(status::rejection(&Rejection::CannotReimport {
                            id: j.id.clone(),
                            reason: "job is currently running".into(),
                            status: job.status,
                        }));
                    }
                }
            }
            let results = futures::future::join_all(r.jobs.into_iter().map(|j| self.import_one(j))).await;
            Ok(pb::ImportJobsResponse { results })
        })
        .await
    }

    async fn cpu_profile(
        &self,
        request: Request<pb::CpuProfileRequest>,
    ) -> Result<Response<pb::CpuProfileResponse>, Status> {
        observed("cpu_profile", diagnostics::cpu_profile(request.into_inner())).await
    }

    async fn flush_shard(
        &self,
        request: Request<pb::FlushShardRequest>,
    ) -> Result<Response<pb::FlushShardResponse>, Status> {
        observed("flush_shard", async {
            self.locate(&request.into_inner().shard)?;
            diagnostics::flush(self.node.db().clone()).await
        })
        .await
    }

    async fn compact_shard(
        &self,
        request: Request<pb::CompactShardRequest>,
    ) -> Result<Response<pb::CompactShardResponse>, Status> {
        observed("compact_shard", async {
            self.locate(&request.into_inner().shard)?;
            diagnostics::compact(self.node.db().clone()).await
        })
        .await
    }

    async fn get_shard_storage_info(
        &self,
        request: Request<pb::GetShardStorageInfoRequest>,
    ) -> Result<Response<pb::GetShardStorageInfoResponse>, Status> {
        observed("get_shard_storage_info", async {
            self.locate(&request.into_inner().shard)?;
            diagnostics::storage_info(self.node.db())
        })
        .await
    }

    async fn dump_tasks(&self, _: Request<pb::DumpTasksRequest>) -> Result<Response<pb::DumpTasksResponse>, Status> {
        let (db, broker) = (self.node.db().clone(), self.broker.clone());
        let dump = tokio::task::spawn_blocking(move || diagnostics::dump_tasks(&db, &broker));
        observed("dump_tasks", async { dump.await.map_err(|e| Status::internal(format!("dump task: {e}")))? }).await
    }

    async fn force_release_shard(
        &self,
        _: Request<pb::ForceReleaseShardRequest>,
    ) -> Result<Response<pb::ForceReleaseShardResponse>, Status> {
        observed("force_release_shard", async { Err(diagnostics::force_release_shard()) }).await
    }

    async fn configure_shard(
        &self,
        _: Request<pb::ConfigureShardRequest>,
    ) -> Result<Response<pb::ConfigureShardResponse>, Status> {
        observed("configure_shard", async { Err(diagnostics::configure_shard()) }).await
    }

    async fn request_split(
        &self,
        _: Request<pb::RequestSplitRequest>,
    ) -> Result<Response<pb::RequestSplitResponse>, Status> {
        observed("request_split", async { Err(diagnostics::split("RequestSplit")) }).await
    }

    async fn get_split_status(
        &self,
        _: Request<pb::GetSplitStatusRequest>,
    ) -> Result<Response<pb::GetSplitStatusResponse>, Status> {
        observed("get_split_status", async { Err(diagnostics::split("GetSplitStatus")) }).await
    }

    async fn heap_profile(
        &self,
        _: Request<pb::HeapProfileRequest>,
    ) -> Result<Response<pb::HeapProfileResponse>, Status> {
        observed("heap_profile", async { Err(diagnostics::heap_profile()) }).await
    }
}
