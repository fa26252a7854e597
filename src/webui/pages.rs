//! The console's read-only pages: one handler and one template each
//! (`templates/<page>.html`, all extending `base.html`).
use std::collections::BTreeMap;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use tonic::Status;

use super::format::{count, duration, msgpack_json, relative, utc};
use super::{data, links, Console, Shared};
use crate::pb::silo as pb;
use crate::pb::silo::silo_server::Silo;

/// How long the cluster page waits for another node's status.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Rows a job search returns at most (its statement's LIMIT), and waiters a
/// limit key's page lists.
pub const ROWS_MAX: usize = 200;
/// Rows the SQL console shows of a result (the statement's own size cap is
/// `query.max_result_bytes`; a page is for reading, not for exports).
const SQL_ROWS_SHOWN: usize = 1_000;
/// Ready tasks and running leases listed on a queue's page.
const QUEUE_ROWS: usize = 50;

pub(crate) fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => super::error_page(StatusCode::INTERNAL_SERVER_ERROR, format!("the page failed to render: {e}")),
    }
}

/// The header every page shows: which node this is and what it knows.
pub struct Chrome {
    pub active: &'static str,
    pub node_id: u64,
    pub role: String,
    pub leader: String,
    pub term: u64,
    pub applied_index: u64,
    pub auth: bool,
}

impl Chrome {
    pub fn new(console: &Console, active: &'static str) -> Self {
        let s = console.node.status();
        let leader = match (s.leader, &s.leader_addr) {
            (Some(id), Some(addr)) => format!("node {id} ({addr})"),
            (Some(id), None) => format!("node {id}"),
            _ => "none known (election in progress)".into(),
        };
        Chrome {
            active,
            node_id: s.id,
            role: s.state,
            leader,
            term: s.term,
            applied_index: s.last_applied_index.unwrap_or(0),
            auth: console.token.is_some(),
        }
    }
}

/// The tenant a link carries: the job's with tenancy on, none with it off
/// (the API refuses a tenant then, and every job belongs to `-`).
pub fn link_tenant<'a>(console: &Console, tenant: &'a str) -> Option<&'a str> {
    console.silo.tenancy_enabled().then_some(tenant)
}

/// A result table: column names and rows of display cells.
#[derive(Default)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    /// Rows the statement returned (more than `rows` when cut short).
    pub total: usize,
}

/// One displayed value of a [`Table`].

pub struct Cell {
    pub text: String,
    pub null: bool,
    /// Where the cell links to (job ids link to their job page).
    pub link: Option<String>,
}

impl Cell {
    fn text(text: &str) -> Cell {
        Cell { text: text.to_string(), null: false, link: None }
    }

    fn of(v: &serde_json::Value) -> Cell {
        let (text, null) = match v {
            serde_json::Value::Null => ("NULL".to_string(), true),
            serde_json::Value::String(s) => (s.clone(), false),
            other => (other.to_string(), false),
        };
        Cell { text, null, link: None }
    }
}

/// A gRPC refusal as the page shows it: `INVALID_ARGUMENT: SQL error: …`.
pub fn status_text(s: &Status) -> String {
    format!("{}: {}", code_name(s.code()), s.message())
}

fn code_name(c: tonic::Code) -> String {
    // tonic's Debug names are CamelCase (`InvalidArgument`); show gRPC's.
    let mut out = String::new();
    for (i, ch) in format!("{c:?}").chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

/// Runs a statement through the same Query method clients call (read
/// barrier, tenant scope, statement limits) and decodes its first
/// `rows_max` rows (the rest are only counted, in `Table::total`).
pub async fn run_sql(
    console: &Console,
    shard: &str,
    tenant: Option<&str>,
    sql: &str,
    params: Vec<String>,
    rows_max: usize,
) -> Result<Table, Status> {
    let parameters = params
        .into_iter()
        .map(|p| pb::QueryParameter { value: Some(pb::query_parameter::Value::StringValue(p)) })
        .collect();
    let request = pb::QueryRequest {
        shard: shard.to_string(),
        sql: sql.to_string(),
        tenant: tenant.filter(|t| !t.is_empty()).map(str::to_string),
        parameters,
    };
    let reply = console.silo.query(tonic::Request::new(request)).await?.into_inner();
    let columns: Vec<String> = reply.columns.into_iter().map(|c| c.name).collect();
    let total = reply.rows.len();
    let mut rows = Vec::with_capacity(total.min(rows_max));
    for row in reply.rows.into_iter().take(rows_max) {
        let Some(pb::serialized_bytes::Encoding::Msgpack(bytes)) = row.encoding else { continue };
        let value: serde_json::Value = rmp_serde::from_slice(&bytes)
            .map_err(|e| Status::internal(format!("a result row could not be decoded: {e}")))?;
        rows.push(columns.iter().map(|c| Cell::of(value.get(c).unwrap_or(&serde_json::Value::Null))).collect());
    }
    Ok(Table { columns, rows, total })
}

// ---------------------------------------------------------------- cluster

/// The cluster page (`cluster.html`).
#[derive(Template)]
#[template(path = "cluster.html")]
pub struct ClusterPage {
    chrome: Chrome,
    nodes: Vec<NodeRow>,
    shards: Vec<ShardRow>,
    /// The leader's commit index (a majority of voters hold the log up to it).
    commit_index: Option<u64>,
    quorum_ack: Option<String>,
}

struct NodeRow {
    id: u64,
    addr: String,
    voter: bool,
    role: String,
    term: String,
    last_log: String,
    applied: String,
    snapshot: String,
    purged: String,
    lag: String,
    health: Result<(), String>,
    this: bool,
}

struct ShardRow {
    id: String,
    range: String,
    owner: String,
}

fn opt(n: Option<u64>) -> String {
    n.map_or("–".into(), |n| count(n))
}
/// `/`: members with their Raft positions and reachability, and the shards.

pub async fn cluster(State(console): State<Shared>) -> Response {
    let local = console.node.status();
    let members: Vec<(u64, String, bool)> = local
        .voters
        .iter()
        .map(|(id, n)| (*id, n.grpc_addr.clone(), true))
        .chain(local.learners.iter().map(|(id, n)| (*id, n.grpc_addr.clone(), false)))
        .collect();
    let replies = futures::future::join_all(members.iter().map(|(id, addr, _)| {
        let console = console.clone();
        let (id, addr) = (*id, addr.clone());
        async move {
            if id == console.node.id() {
                return Ok(None);
            }
            let mut admin = console.peers.admin(&addr).map_err(|e| e.message().to_string())?;
            let call = admin.status(console.peers.request(crate::pb::raft::StatusRequest { skip_digest: true }));
            match tokio::time::timeout(PEER_STATUS_TIMEOUT, call).await {
                Ok(Ok(r)) => Ok(Some(r.into_inner())),
                Ok(Err(e)) => Err(status_text(&e)),
                Err(_) => Err(format!("no answer within {} ms", PEER_STATUS_TIMEOUT.as_millis())),
            }
        }
    }))
    .await;
    // The leader's log end and commit index, from its own answer.
    let (leader_last_log, commit_index) = replies
        .iter()
        .zip(&members)
        .find_map(|(r, (id, _, _))| match r {
            Ok(Some(s)) if Some(*id) == local.leader => Some((s.last_log_index, s.commit_index)),
            Ok(None) if Some(*id) == local.leader => Some((local.last_log_index, local.commit_index())),
            _ => None,
        })
        .unwrap_or((None, None));
    let nodes = replies
        .into_iter()
        .zip(&members)
        .map(|(reply, (id, addr, voter))| {
            let (role, term, last_log, applied, snapshot, purged, health) = match reply {
                Ok(None) => (
                    local.state.clone(),
                    local.term,
                    local.last_log_index,
                    local.last_applied_index,
                    local.snapshot_index,
                    local.purged_index,
                    Ok(()),
                ),
                Ok(Some(s)) => {
                    (s.state, s.term, s.last_log_index, s.applied_index, s.snapshot_index, s.purged_index, Ok(()))
                }
                Err(e) => ("unknown".into(), 0, None, None, None, None, Err(e)),
            };
            let lag = match (leader_last_log, applied) {
                (Some(end), Some(a)) => format!("{} entries", count(end.saturating_sub(a))),
                _ => "–".into(),
            };
            NodeRow {
                id: *id,
                addr: addr.clone(),
                voter: *voter,
                role,
                term: if health.is_ok() { term.to_string() } else { "–".into() },
                last_log: opt(last_log),
                applied: opt(applied),
                snapshot: opt(snapshot),
                purged: opt(purged),
                lag,
                health,
                this: *id == local.id,
            }
        })
        .collect();
    let shards = match console.silo.get_cluster_info(tonic::Request::new(pb::GetClusterInfoRequest {})).await {
        Ok(r) => r
            .into_inner()
            .shard_owners
            .into_iter()
            .map(|s| ShardRow {
                range: format!(
                    "[{}, {})",
                    if s.range_start.is_empty() { "-∞" } else { &s.range_start },
                    if s.range_end.is_empty() { "+∞" } else { &s.range_end }
                ),
                owner: format!("node {} ({})", s.node_id, s.grpc_addr),
                id: s.shard_id,
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    render(&ClusterPage {
        chrome: Chrome::new(&console, "cluster"),
        nodes,
        shards,
        commit_index,
        quorum_ack: local.millis_since_quorum_ack.map(|ms| duration(ms as i64)),
    })
}

// ---------------------------------------------------------------- queues

/// The queues page (`queues.html`).
#[derive(Template)]
#[template(path = "queues.html")]
pub struct QueuesPage {
    chrome: Chrome,
    groups: Vec<GroupRow>,
    leases_truncated: bool,
    lease_scan_max: String,
    /// Attempts parked behind concurrency limits, all task groups together.
    parked: Result<String, String>,
}

/// One task group's row on the queues page.
pub struct GroupRow {
    name: String,
    href: String,
    ready: String,
    future: String,
    gated: String,
    /// Floating-limit refresh tasks queued in this group.
    refresh: String,
    running: String,
    oldest_ready: String,
    /// Leases granted per minute, oldest first, and each as a bar height (%).
    per_minute: Vec<(u64, u32)>,
    last_minute: String,
}

fn group_rows(console: &Console, per_group_running: &BTreeMap<String, usize>) -> Vec<GroupRow> {
    let now = crate::wall_clock_ms();
    let mut stats = console.broker.group_stats(now, crate::monotonic_ms());
    // Groups with running leases but nothing queued still get a row.
    for name in per_group_running.keys() {
        if !stats.iter().any(|s| &s.task_group == name) {
            stats.push(crate::broker::GroupStats::idle(name));
        }
    }
    stats.sort_by(|a, b| a.task_group.cmp(&b.task_group));
    stats
        .into_iter()
        .map(|s| {
            let peak = s.granted_per_minute.iter().copied().max().unwrap_or(0).max(1);
            let complete = &s.granted_per_minute[..s.granted_per_minute.len() - 1];
            GroupRow {
                running: count(per_group_running.get(&s.task_group).copied().unwrap_or(0) as u64),
                ready: count(s.ready as u64),
                future: count(s.future as u64),
                gated: count(s.gated as u64),
                refresh: count(s.refresh as u64),
                oldest_ready: s.oldest_ready_start_ms.map_or("–".into(), |t| duration(now - t)),
                last_minute: complete.last().map_or("–".into(), |n| format!("{}/min", count(*n))),
                per_minute: s.granted_per_minute.iter().map(|&n| (n, (n * 100 / peak) as u32)).collect(),
                href: links::queue(&s.task_group),
                name: s.task_group,
            }
        })
        .collect()
}
/// `/queues`: every task group's counts and throughput.

pub async fn queues(State(console): State<Shared>) -> Response {
    let leases = data::leases(console.node.db(), &console.broker, None, 0);
    let groups = group_rows(&console, &leases.per_group);
    // Parked concurrency requesters, from the per-key counters (O(keys)).
    let mut parked: Result<u64, String> = Ok(0);
    for shard in console.silo.shard_ids() {
        let sql = "SELECT coalesce(sum(requesters), 0) AS n FROM queue_counts";
        match run_sql(&console, &shard, None, sql, vec![], usize::MAX).await {
            Ok(t) => {
                let n = t.rows.first().and_then(|r| r.first()).and_then(|c| c.text.parse::<u64>().ok()).unwrap_or(0);
                parked = parked.map(|p| p + n);
            }
            Err(e) => parked = Err(status_text(&e)),
        }
    }
    render(&QueuesPage {
        chrome: Chrome::new(&console, "queues"),
        groups,
        leases_truncated: leases.truncated,
        lease_scan_max: count(data::LEASE_SCAN_MAX as u64),
        parked: parked.map(count),
    })
}

/// One task group's page (`queue.html`).
#[derive(Template)]
#[template(path = "queue.html")]
pub struct QueuePage {
    chrome: Chrome,
    group: Option<GroupRow>,
    name: String,
    tasks: Vec<TaskView>,
    leases: Vec<LeaseView>,
    leases_truncated: bool,
    lease_scan_max: String,
}

struct TaskView {
    href: String,
    task_id: String,
    job_id: String,
    tenant: String,
    priority: u32,
    attempt: u32,
    waiting: String,
    start: String,
}

struct LeaseView {
    href: String,
    task_id: String,
    job_id: String,
    tenant: String,
    attempt: u32,
    worker_id: String,
    granted: String,
    deadline: String,
    refresh_key: Option<String>,
}

/// `/queue?task_group=…` query.
#[derive(Deserialize, Default)]
pub struct QueueQuery {
    #[serde(default)]
    task_group: String,
}

/// `/queues/<group>`: the old path form, sent to the query form.
pub async fn queue_path(Path(task_group): Path<String>) -> Response {
    axum::response::Redirect::to(&links::queue(&task_group)).into_response()
}

/// A task group: its next ready tasks and its running leases.
pub async fn queue(State(console): State<Shared>, Query(q): Query<QueueQuery>) -> Response {
    let task_group = q.task_group;
    let now = crate::wall_clock_ms();
    let leases = data::leases(console.node.db(), &console.broker, Some(&task_group), QUEUE_ROWS);
    let group = group_rows(&console, &leases.per_group).into_iter().find(|g| g.name == task_group);
    let tasks = data::next_tasks(console.node.db(), &console.broker, &task_group, QUEUE_ROWS, now)
        .into_iter()
        .map(|t| TaskView {
            href: links::job(&t.job_id, link_tenant(&console, &t.tenant)),
            task_id: t.task_id,
            job_id: t.job_id,
            tenant: t.tenant,
            priority: t.priority,
            attempt: t.attempt_number,
            waiting: duration(now - t.start_at_ms),
            start: utc(t.start_at_ms),
        })
        .collect();
    let leases_view = leases
        .rows
        .into_iter()
        .map(|l| LeaseView {
            href: links::job(&l.job_id, link_tenant(&console, &l.tenant)),
            task_id: l.task_id,
            job_id: l.job_id,
            tenant: l.tenant,
            attempt: l.attempt_number,
            worker_id: l.worker_id,
            granted: relative(l.granted_at_ms, now),
            deadline: l.deadline_ms.map_or("– (not tracked here)".into(), |d| relative(d, now)),
            refresh_key: l.refresh_key,
        })
        .collect();
    render(&QueuePage {
        chrome: Chrome::new(&console, "queues"),
        group,
        name: task_group,
        tasks,
        leases: leases_view,
        leases_truncated: leases.truncated,
        lease_scan_max: count(data::LEASE_SCAN_MAX as u64),
    })
}

// ---------------------------------------------------------------- tenants

/// The tenants page (`tenants.html`).
#[derive(Template)]
#[template(path = "tenants.html")]
pub struct TenantsPage {
    chrome: Chrome,
    rows: Vec<TenantRow>,
    error: Option<String>,
}

#[derive(Default)]
struct TenantRow {
    href: String,
    tenant: String,
    shard: String,
    /// Scheduled, Running, Succeeded, Failed, Cancelled.
    counts: [u64; 5],
    total: u64,
}

impl TenantRow {
    fn counts_text(&self) -> Vec<String> {
        self.counts.iter().map(|&n| count(n)).collect()
    }

    fn total_text(&self) -> String {
        count(self.total)
    }
}

const STATUSES: [&str; 5] = ["Scheduled", "Running", "Succeeded", "Failed", "Cancelled"];
/// `/tenants`: job counts per tenant and status, from the state machine's counters.

pub async fn tenants(State(console): State<Shared>) -> Response {
    let mut rows: BTreeMap<(String, String), TenantRow> = BTreeMap::new();
    let mut error = None;
    for shard in console.silo.shard_ids() {
        let sql = "SELECT tenant, status_kind, cnt FROM tenant_counts";
        match run_sql(&console, &shard, None, sql, vec![], usize::MAX).await {
            Ok(t) => {
                for r in t.rows {
                    let [tenant, status, cnt] = [&r[0].text, &r[1].text, &r[2].text];
                    let row = rows.entry((tenant.clone(), shard.clone())).or_insert_with(|| TenantRow {
                        href: links::tenant_jobs(tenant),
                        tenant: tenant.clone(),
                        shard: shard.clone(),
                        ..TenantRow::default()
                    });
                    let n: u64 = cnt.parse().unwrap_or(0);
                    if let Some(i) = STATUSES.iter().position(|s| s == status) {
                        row.counts[i] += n;
                    }
                    row.total += n;
                }
            }
            Err(e) => error = Some(status_text(&e)),
        }
    }
    render(&TenantsPage { chrome: Chrome::new(&console, "tenants"), rows: rows.into_values().collect(), error })
}

// ---------------------------------------------------------------- job

/// A job's page (`job.html`).
#[derive(Template)]
#[template(path = "job.html")]
pub struct JobPage {
    chrome: Chrome,
    id: String,
    tenant: String,
    shard: String,
    job: Option<JobView>,
    notice: Option<String>,
    error: Option<String>,
}

struct JobView {
    status: String,
    task_group: String,
    queue_href: String,
    priority: u32,
    enqueued: String,
    enqueued_utc: String,
    status_changed: String,
    next_attempt: Option<String>,
    payload: String,
    payload_size: String,
    result: Option<String>,
    metadata: Vec<(String, String)>,
    limits: Vec<String>,
    retry: Option<String>,
    attempts: Vec<AttemptView>,
}

struct AttemptView {
    number: u32,
    status: String,
    started: String,
    took: String,
    outcome: String,
}

/// `/job?id=…&tenant=…`, plus the outcome of the action that led here.
#[derive(Deserialize, Default)]
pub struct JobQuery {
    #[serde(default)]
    id: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    notice: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

pub(crate) fn job_status_name(code: i32) -> String {
    pb::JobStatus::try_from(code)
        .map_or(format!("status {code}"), |s| s.as_str_name().trim_start_matches("JOB_STATUS_").to_ascii_lowercase())
}

fn attempt_status_name(code: i32) -> String {
    pb::AttemptStatus::try_from(code).map_or(format!("status {code}"), |s| {
        s.as_str_name().trim_start_matches("ATTEMPT_STATUS_").to_ascii_lowercase()
    })
}

fn serialized(b: &Option<pb::SerializedBytes>) -> Option<&[u8]> {
    match b.as_ref()?.encoding.as_ref()? {
        pb::serialized_bytes::Encoding::Msgpack(v) => Some(v),
    }
}

fn limit_text(l: &pb::Limit) -> String {
    match &l.limit {
        Some(pb::limit::Limit::Concurrency(c)) => format!("concurrency {:?} ≤ {}", c.key, c.max_concurrency),
        Some(pb::limit::Limit::RateLimit(r)) => {
            format!("rate {:?}/{:?}: {} per {}", r.name, r.unique_key, r.limit, duration(r.duration_ms))
        }
        Some(pb::limit::Limit::FloatingConcurrency(f)) => format!(
            "floating concurrency {:?} (default {}, refreshed every {})",
            f.key,
            f.default_max_concurrency,
            duration(f.refresh_interval_ms)
        ),
        None => "(empty limit)".into(),
    }
}

fn job_view(j: pb::GetJobResponse, now: i64) -> JobView {
    let payload = serialized(&j.payload).unwrap_or_default();
    let mut metadata: Vec<(String, String)> = j.metadata.into_iter().collect();
    metadata.sort();
    JobView {
        status: job_status_name(j.status),
        queue_href: links::queue(&j.task_group),
        task_group: j.task_group,
        priority: j.priority,
        enqueued: relative(j.enqueue_time_ms, now),
        enqueued_utc: utc(j.enqueue_time_ms),
        status_changed: relative(j.status_changed_at_ms, now),
        next_attempt: j.next_attempt_starts_after_ms.map(|t| format!("{} ({})", relative(t, now), utc(t))),
        payload_size: super::format::bytes(payload.len()),
        payload: msgpack_json(payload),
        result: serialized(&j.result).map(msgpack_json),
        metadata,
        limits: j.limits.iter().map(limit_text).collect(),
        retry: j.retry_policy.map(|r| {
            format!(
                "{} retries, backoff {} × {} (max {}){}",
                r.retry_count,
                duration(r.initial_interval_ms),
                r.backoff_factor,
                duration(r.max_interval_ms),
                if r.randomize_interval { ", randomized" } else { "" }
            )
        }),
        attempts: j
            .attempts
            .into_iter()
            .map(|a| AttemptView {
                number: a.attempt_number,
                status: attempt_status_name(a.status),
                started: format!("{} ({})", relative(a.started_at_ms, now), utc(a.started_at_ms)),
                took: a.finished_at_ms.map_or("running".into(), |f| duration(f - a.started_at_ms)),
                outcome: match (serialized(&a.result), &a.error_code, serialized(&a.error_data)) {
                    (Some(r), _, _) => msgpack_json(r),
                    (None, Some(code), data) => {
                        format!("{code}{}", data.map(|d| format!("\n{}", msgpack_json(d))).unwrap_or_default())
                    }
                    _ => String::new(),
                },
            })
            .collect(),
    }
}

/// GetJob on the tenant's shard (or, with tenancy off, each shard until one
/// has it): the job and the shard it lives on.
/// The shards a job of `tenant` may live on: the tenant's with tenancy on,
/// any of them with it off (every job then belongs to the default tenant).
pub(crate) fn job_shards(console: &Console, tenant: &str) -> Vec<String> {
    match console.silo.tenancy_enabled() {
        true => console.silo.shard_of_tenant(tenant).into_iter().collect(),
        false => console.silo.shard_ids(),
    }
}

pub(crate) async fn find_job(
    console: &Console,
    id: &str,
    tenant: &str,
) -> Result<(pb::GetJobResponse, String), Status> {
    let mut last = Status::not_found(format!("job not found: {id}"));
    for shard in job_shards(console, tenant) {
        let request = pb::GetJobRequest {
            shard: shard.clone(),
            id: id.to_string(),
            tenant: Some(tenant.to_string()).filter(|t| !t.is_empty()),
            include_attempts: true,
        };
        match console.silo.get_job(tonic::Request::new(request)).await {
            Ok(r) => return Ok((r.into_inner(), shard)),
            Err(e) if e.code() == tonic::Code::NotFound => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// `/jobs/<id>`: the path form, sent to the query form.
pub async fn job_path(State(console): State<Shared>, Path(id): Path<String>, Query(q): Query<JobQuery>) -> Response {
    let tenant = Some(q.tenant.as_str()).filter(|t| !t.is_empty());
    axum::response::Redirect::to(&links::job(&id, tenant.and_then(|t| link_tenant(&console, t)))).into_response()
}

/// A job: status, payload, metadata, attempts, and the action buttons.
pub async fn job(State(console): State<Shared>, Query(q): Query<JobQuery>) -> Response {
    let id = q.id.clone();
    let found = find_job(&console, &id, &q.tenant).await;
    let (job, shard, error) = match found {
        Ok((j, shard)) => (Some(job_view(j, crate::wall_clock_ms())), shard, q.error),
        Err(e) => (None, String::new(), Some(q.error.unwrap_or_else(|| status_text(&e)))),
    };
    render(&JobPage {
        chrome: Chrome::new(&console, "jobs"),
        id,
        tenant: q.tenant,
        shard,
        job,
        notice: q.notice,
        error,
    })
}

// ---------------------------------------------------------------- search

/// The job search (`search.html`).
#[derive(Template)]
#[template(path = "search.html")]
pub struct SearchPage {
    chrome: Chrome,
    form: SearchForm,
    /// (status, selected) for the status filter.
    statuses: Vec<(&'static str, bool)>,
    table: Option<Table>,
    error: Option<String>,
    statement: String,
    rows_max: usize,
}

/// The search's filters (query parameters); empty ones are left out.
#[derive(Deserialize, Default)]
pub struct SearchForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    task_group: String,
    #[serde(default)]
    meta_key: String,
    #[serde(default)]
    meta_value: String,
    /// A message from the action that led here (a deleted job).
    #[serde(default)]
    notice: Option<String>,
}

impl SearchForm {
    /// The statement and its parameters; every value is a bind parameter,
    /// and each filter is one the jobs table pushes down to an index.
    fn statement(&self) -> (String, Vec<String>) {
        let mut filters = Vec::new();
        let mut params = Vec::new();
        let mut bind = |column: &str, value: &str, filters: &mut Vec<String>| {
            params.push(value.trim().to_string());
            filters.push(format!("{column} = ${}", params.len()));
        };
        if !self.id.trim().is_empty() {
            bind("id", &self.id, &mut filters);
        }
        if !self.tenant.trim().is_empty() {
            bind("tenant", &self.tenant, &mut filters);
        }
        if !self.status.is_empty() {
            bind("status_kind", &self.status, &mut filters);
        }
        if !self.task_group.trim().is_empty() {
            bind("task_group", &self.task_group, &mut filters);
        }
        if !self.meta_key.trim().is_empty() {
            params.push(self.meta_key.trim().to_string());
            let k = params.len();
            params.push(self.meta_value.trim().to_string());
            filters.push(format!("metadata[${k}] = ${}", params.len()));
        }
        let mut sql = "SELECT id, tenant, status_kind, task_group, priority, enqueue_time_ms, status_changed_at_ms \
                       FROM jobs"
            .to_string();
        if !filters.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&filters.join(" AND "));
        }
        sql.push_str(&format!(" LIMIT {ROWS_MAX}"));
        (sql, params)
    }

    fn is_empty(&self) -> bool {
        [&self.id, &self.tenant, &self.status, &self.task_group, &self.meta_key].iter().all(|f| f.trim().is_empty())
    }
}
/// `/jobs`: the job search (one indexed statement with bound parameters).

pub async fn search(State(console): State<Shared>, Query(form): Query<SearchForm>) -> Response {
    let (statement, params) = form.statement();
    let mut table: Option<Table> = None;
    let mut error = None;
    if !form.is_empty() {
        let mut merged = Table::default();
        for shard in console.silo.shard_ids() {
            match run_sql(&console, &shard, None, &statement, params.clone(), ROWS_MAX).await {
                Ok(t) => {
                    merged.columns = t.columns;
                    merged.rows.extend(t.rows);
                }
                Err(e) => {
                    error = Some(status_text(&e));
                    break;
                }
            }
        }
        let now = crate::wall_clock_ms();
        for row in merged.rows.iter_mut() {
            row[0].link = Some(links::job(&row[0].text, link_tenant(&console, &row[1].text)));
            for cell in row.iter_mut().skip(5) {
                if let Ok(ms) = cell.text.parse::<i64>() {
                    cell.text = relative(ms, now);
                }
            }
        }
        merged.rows.truncate(ROWS_MAX);
        table = Some(merged);
    }
    let statuses = ["", "Scheduled", "Waiting", "Running", "Succeeded", "Failed", "Cancelled"]
        .into_iter()
        .map(|s| (s, s == form.status))
        .collect();
    let rows_max = ROWS_MAX;
    render(&SearchPage { chrome: Chrome::new(&console, "jobs"), form, statuses, table, error, statement, rows_max })
}

// ---------------------------------------------------------------- SQL

/// The SQL console (`sql.html`).
#[derive(Template)]
#[template(path = "sql.html")]
pub struct SqlPage {
    chrome: Chrome,
    form: SqlForm,
    /// (shard id, selected).
    shards: Vec<(String, bool)>,
    /// The first [`SQL_ROWS_SHOWN`] rows of the result.
    table: Option<Table>,
    /// Rows the statement returned.
    total: usize,
    error: Option<String>,
    took: Option<String>,
}

/// The statement, the tenant it runs as and the shard (query parameters).
#[derive(Deserialize, Default)]
pub struct SqlForm {
    #[serde(default)]
    sql: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    shard: String,
}
/// `/sql`: runs a statement with the node's query limits and shows its rows.

pub async fn sql(State(console): State<Shared>, Query(mut form): Query<SqlForm>) -> Response {
    let shards = console.silo.shard_ids();
    if form.shard.is_empty() {
        form.shard = shards.first().cloned().unwrap_or_default();
    }
    let (mut table, mut error, mut took, mut total) = (None, None, None, 0);
    if !form.sql.trim().is_empty() {
        let started = std::time::Instant::now();
        match run_sql(&console, &form.shard, Some(&form.tenant), &form.sql, vec![], SQL_ROWS_SHOWN).await {
            Ok(t) => {
                total = t.total;
                table = Some(t);
            }
            Err(e) => error = Some(status_text(&e)),
        }
        took = Some(duration(started.elapsed().as_millis() as i64));
    }
    let shards = shards.into_iter().map(|s| (s.clone(), s == form.shard)).collect();
    render(&SqlPage { chrome: Chrome::new(&console, "sql"), form, shards, table, total, error, took })
}

// ---------------------------------------------------------------- limits

/// The limits page (`limits.html`).
#[derive(Template)]
#[template(path = "limits.html")]
pub struct LimitsPage {
    chrome: Chrome,
    concurrency: Table,
    /// More queues exist than the table shows.
    concurrency_truncated: bool,
    concurrency_error: Option<String>,
    rows_max: String,
    key: String,
    entries: Option<Table>,
    floating: Vec<(String, String, String, String, String)>,
    floating_truncated: bool,
    buckets: Vec<(String, String, String)>,
    buckets_truncated: bool,
}

/// `/limits?tenant=…&key=…`: the key whose holders and waiters to list.
#[derive(Deserialize, Default)]
pub struct LimitsQuery {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    key: String,
}

/// Concurrency queues (counters per key), one key's holders and waiters,
/// floating limits and rate-limit buckets.
pub async fn limits(State(console): State<Shared>, Query(q): Query<LimitsQuery>) -> Response {
    let now = crate::wall_clock_ms();
    let mut concurrency = Table::default();
    let mut concurrency_error = None;
    let mut concurrency_truncated = false;
    for shard in console.silo.shard_ids() {
        let sql = format!(
            "SELECT tenant, queue_name, holders, requesters FROM queue_counts LIMIT {}",
            data::LIMIT_ROWS_MAX + 1
        );
        match run_sql(&console, &shard, None, &sql, vec![], usize::MAX).await {
            Ok(mut t) => {
                concurrency_truncated |= t.rows.len() > data::LIMIT_ROWS_MAX;
                t.rows.truncate(data::LIMIT_ROWS_MAX);
                concurrency.columns = t.columns;
                concurrency.rows.extend(t.rows);
            }
            Err(e) => concurrency_error = Some(status_text(&e)),
        }
    }
    for row in concurrency.rows.iter_mut() {
        row[1].link = Some(links::limit_key(&row[0].text, &row[1].text));
    }
    // One key's holders and waiters, read by prefix from this node's state.
    let entries = (!q.key.is_empty()).then(|| {
        let tenant = if q.tenant.is_empty() { crate::grpc::DEFAULT_TENANT } else { q.tenant.as_str() };
        // The tenant's shard; with tenancy off a job may sit on any shard.
        let ids = console.silo.shard_ids();
        let shards: Vec<usize> = match console.silo.tenancy_enabled() {
            true => console
                .silo
                .shard_of_tenant(tenant)
                .and_then(|id| ids.iter().position(|s| *s == id))
                .into_iter()
                .collect(),
            false => (0..ids.len()).collect(),
        };
        let rows: Vec<data::EntryRow> = shards
            .into_iter()
            .flat_map(|shard| data::queue_entries(console.node.db(), shard as u32, tenant, &q.key, ROWS_MAX))
            .collect();
        Table {
            total: rows.len(),
            columns: ["entry_type", "floating", "task_id", "job_id", "priority", "since"].map(String::from).to_vec(),
            rows: rows
                .into_iter()
                .map(|e| {
                    let job = e.job_id.clone().unwrap_or_default();
                    vec![
                        Cell::text(e.entry_type),
                        Cell::text(if e.floating { "yes" } else { "no" }),
                        Cell::text(&e.task_id),
                        Cell {
                            link: e.job_id.as_ref().map(|id| links::job(id, link_tenant(&console, tenant))),
                            null: e.job_id.is_none(),
                            text: if job.is_empty() { "NULL".into() } else { job },
                        },
                        e.priority.map_or(Cell { text: "NULL".into(), null: true, link: None }, |p| {
                            Cell::text(&p.to_string())
                        }),
                        Cell::text(&relative(e.at_ms, now)),
                    ]
                })
                .collect(),
        }
    });
    let (floating, floating_truncated) = data::floating_limits(console.node.db());
    let floating = floating
        .into_iter()
        .map(|f| {
            (
                f.tenant,
                f.key,
                count(f.state.current_max as u64),
                relative(f.state.last_refreshed_at_ms, now),
                if f.state.failures > 0 { format!("{} failed in a row", f.state.failures) } else { "ok".into() },
            )
        })
        .collect();
    let (buckets, buckets_truncated) = data::rate_buckets(console.node.db());
    let buckets = buckets
        .into_iter()
        .map(|b| {
            let state = match b.bucket {
                crate::state_machine::Bucket::Token { remaining, reset_at_ms } => {
                    format!(
                        "token bucket: {} left, resets {}",
                        count(remaining.max(0) as u64),
                        relative(reset_at_ms, now)
                    )
                }
                crate::state_machine::Bucket::Leaky { level, at_ms } => {
                    format!("leaky bucket: level {level} hit·ms as of {}", relative(at_ms, now))
                }
            };
            (b.name, b.unique_key, state)
        })
        .collect();
    render(&LimitsPage {
        chrome: Chrome::new(&console, "limits"),
        concurrency,
        concurrency_truncated,
        concurrency_error,
        rows_max: count(data::LIMIT_ROWS_MAX as u64),
        key: q.key,
        entries,
        floating,
        floating_truncated,
        buckets,
        buckets_truncated,
    })
}

// ---------------------------------------------------------------- config, login

/// The configuration page (`config.html`).
#[derive(Template)]
#[template(path = "config.html")]
pub struct ConfigPage {
    chrome: Chrome,
    toml: String,
    advertise_addr: String,
}
/// `/config`: the node's effective settings, secrets masked.

pub async fn config(State(console): State<Shared>) -> Response {
    render(&ConfigPage {
        chrome: Chrome::new(&console, "config"),
        toml: console.config_toml.clone(),
        advertise_addr: console.advertise_addr.clone(),
    })
}

/// A page that failed to build (the reason only; no node state).
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub message: String,
}

/// The login form (`login.html`).
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub error: Option<String>,
    /// Whether this node asks for a token at all.
    pub auth: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_binds_every_value() {
        let form = SearchForm {
            status: "Running".into(),
            meta_key: "user".into(),
            meta_value: "7' OR 1=1".into(),
            ..SearchForm::default()
        };
        let (sql, params) = form.statement();
        assert!(sql.ends_with("WHERE status_kind = $1 AND metadata[$2] = $3 LIMIT 200"), "{sql}");
        assert_eq!(params, vec!["Running", "user", "7' OR 1=1"]);
        assert!(SearchForm::default().is_empty());
    }

    #[test]
    fn links_and_codes_read_well() {
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
    }
}
