//! `silo bench`: load against a running server or cluster over gRPC.
//!
//! Phases (each optional): `backlog` (enqueues `backlog_jobs` into the task
//! group `<task_group>-backlog`, which no bench worker leases, so that the
//! later phases run beside a standing backlog), `enqueue` (enqueuers only), `drain` (workers lease
//! and report success until the backlog is gone) and `steady` (enqueuers and
//! workers together for a fixed time). Reports jobs/s and HDR latency
//! percentiles for enqueue, lease→report and end-to-end (enqueue → reported
//! success), with a progress bar and a JSON result (`--json`).
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

use crate::client::{msgpack, Client, ClientOptions};
use crate::pb::silo as pb;
use crate::pb::silo::report_outcome_request::Outcome;

#[derive(Debug, Clone)]
pub struct BenchOpts {
    pub servers: Vec<String>,
    pub token: Option<String>,
    pub enqueuers: usize,
    pub workers: usize,
    pub tasks_per_poll: u32,
    pub payload_bytes: usize,
    pub tenants: usize,
    pub priorities: u32,
    /// Concurrency limit per key (0 = no limit); keys = `limit_keys`.
    pub concurrency_limit: u32,
    pub limit_keys: usize,
    /// Metadata entries per job (`m<i>` = `v<n % 100>`).
    pub metadata_keys: usize,
    pub enqueue_jobs: u64,
    /// Jobs the `backlog` phase leaves waiting in `<task_group>-backlog`.
    pub backlog_jobs: u64,
    pub steady_secs: u64,
    pub phases: Vec<String>,
    pub task_group: String,
    pub progress: bool,
    /// Paces enqueues to this many per second in total (open loop); None = as fast as possible.
    pub enqueue_rate: Option<f64>,
}

#[derive(Debug, Serialize, Default, Clone)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize, Default)]
pub struct PhaseResult {
    pub phase: String,
    pub seconds: f64,
    pub enqueued: u64,
    pub completed: u64,
    pub enqueue_jobs_per_s: f64,
    pub end_to_end_jobs_per_s: f64,
    pub enqueue_latency: Latency,
    pub lease_to_report_latency: Latency,
    pub end_to_end_latency: Latency,
    pub errors: u64,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub servers: Vec<String>,
    pub enqueuers: usize,
    pub workers: usize,
    pub tasks_per_poll: u32,
    pub payload_bytes: usize,
    pub phases: Vec<PhaseResult>,
    /// From the steady phase when it ran, else from drain.
    pub end_to_end_jobs_per_s: f64,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

fn summarize(h: &Histogram<u64>) -> Latency {
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

struct Shared {
    enqueue_us: Mutex<Histogram<u64>>,
    lease_report_us: Mutex<Histogram<u64>>,
    end_to_end_us: Mutex<Histogram<u64>>,
    enqueued: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            enqueue_us: Mutex::new(hist()),
            lease_report_us: Mutex::new(hist()),
            end_to_end_us: Mutex::new(hist()),
            enqueued: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn job_request(o: &BenchOpts, task_group: &str, n: u64) -> pb::EnqueueRequest {
    // The payload carries the enqueue time (µs) so workers measure end-to-end latency.
    let mut payload = vec![0xcf];
    payload.extend_from_slice(&now_us().to_be_bytes());
    payload.resize(o.payload_bytes.max(9), 0);
    let mut limits = vec![];
    if o.concurrency_limit > 0 {
        limits.push(pb::Limit {
            limit: Some(pb::limit::Limit::Concurrency(pb::ConcurrencyLimit {
                key: format!("k{}", n as usize % o.limit_keys.max(1)),
                max_concurrency: o.concurrency_limit,
            })),
        });
    }
    pb::EnqueueRequest {
        priority: (n % o.priorities.max(1) as u64) as u32,
        payload: msgpack(payload),
        task_group: task_group.to_string(),
        tenant: (o.tenants > 1).then(|| format!("tenant-{}", n as usize % o.tenants)),
        limits,
        metadata: (0..o.metadata_keys).map(|i| (format!("m{i}"), format!("v{}", n % 100))).collect(),
        ..Default::default()
    }
}

/// What the enqueuers of one phase enqueue: how many jobs in all, where.
struct EnqueueTarget {
    limit: u64,
    task_group: String,
}

async fn enqueuer(
    client: Client,
    o: Arc<BenchOpts>,
    s: Arc<Shared>,
    next: Arc<AtomicU64>,
    target: Arc<EnqueueTarget>,
    stop: Arc<AtomicBool>,
    phase_start: Instant,
) {
    let EnqueueTarget { limit, task_group } = &*target;
    let limit = *limit;
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= limit {
            return;
        }
        if let Some(rate) = o.enqueue_rate {
            let due = phase_start + Duration::from_secs_f64(n as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let started = Instant::now();
        match client.enqueue(job_request(&o, task_group, n)).await {
            Ok(_) => {
                s.enqueue_us.lock().record(started.elapsed().as_micros().max(1) as u64).ok();
                s.enqueued.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                s.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "enqueue");
            }
        }
    }
}

async fn worker(client: Client, o: Arc<BenchOpts>, s: Arc<Shared>, id: usize, stop: Arc<AtomicBool>) {
    let worker_id = format!("bench-worker-{id}");
    let mut idle = Duration::from_millis(1);
    while !stop.load(Ordering::Relaxed) {
        let tasks = match client.lease_tasks(&worker_id, &o.task_group, o.tasks_per_poll).await {
            Ok(t) => t,
            Err(e) => {
                s.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "lease");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if tasks.is_empty() {
            tokio::time::sleep(idle).await;
            idle = (idle * 2).min(Duration::from_millis(20));
            continue;
        }
        idle = Duration::from_millis(1);
        let leased_at = Instant::now();
        let reports = tasks.iter().map(|t| {
            let client = client.clone();
            async move {
                let r = client.report_outcome(t, Outcome::Success(msgpack(vec![0xc3]).expect("bytes"))).await;
                (t, r)
            }
        });
        for (t, r) in futures::future::join_all(reports).await {
            match r {
                Ok(()) => {
                    s.completed.fetch_add(1, Ordering::Relaxed);
                    s.lease_report_us.lock().record(leased_at.elapsed().as_micros().max(1) as u64).ok();
                    if let Some(pb::serialized_bytes::Encoding::Msgpack(p)) =
                        t.payload.as_ref().and_then(|p| p.encoding.as_ref())
                    {
                        if p.len() >= 9 {
                            let sent = u64::from_be_bytes(p[1..9].try_into().expect("8 bytes"));
                            s.end_to_end_us.lock().record(now_us().saturating_sub(sent).max(1)).ok();
                        }
                    }
                }
                Err(e) => {
                    s.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "report");
                }
            }
        }
    }
}

fn progress(enabled: bool, len: Option<u64>, label: &str) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let pb = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_prefix(label.to_string());
    pb
}

async fn run_phase(client: &Client, o: &Arc<BenchOpts>, phase: &str) -> PhaseResult {
    let s = Shared::new();
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut task_group = o.task_group.clone();
    let (enqueue_limit, enqueuers, workers) = match phase {
        "enqueue" => (o.enqueue_jobs, o.enqueuers, 0),
        "backlog" => {
            task_group = format!("{}-backlog", o.task_group);
            (o.backlog_jobs, o.enqueuers, 0)
        }
        "drain" => (0, 0, o.workers),
        _ => (u64::MAX, o.enqueuers, o.workers),
    };
    let target = Arc::new(EnqueueTarget { limit: enqueue_limit, task_group });
    let mut handles = Vec::new();
    for _ in 0..enqueuers {
        handles.push(tokio::spawn(enqueuer(
            client.clone(),
            o.clone(),
            s.clone(),
            next.clone(),
            target.clone(),
            stop.clone(),
            started,
        )));
    }
    let mut worker_handles = Vec::new();
    for id in 0..workers {
        worker_handles.push(tokio::spawn(worker(client.clone(), o.clone(), s.clone(), id, stop.clone())));
    }
    let enqueue_only = phase == "enqueue" || phase == "backlog";
    let bar = progress(o.progress, enqueue_only.then_some(enqueue_limit), phase);
    let deadline = started + Duration::from_secs(o.steady_secs);
    let mut idle_since: Option<(Instant, u64)> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (enq, done) = (s.enqueued.load(Ordering::Relaxed), s.completed.load(Ordering::Relaxed));
        bar.set_position(if enqueue_only { enq } else { done });
        bar.set_message(format!("enqueued {enq} completed {done} errors {}", s.errors.load(Ordering::Relaxed)));
        match phase {
            "enqueue" | "backlog" => {
                if handles.iter().all(|h| h.is_finished()) {
                    break;
                }
            }
            "drain" => {
                // done when nothing completed for a second
                match idle_since {
                    Some((at, n)) if n == done => {
                        if at.elapsed() > Duration::from_secs(1) {
                            break;
                        }
                    }
                    _ => idle_since = Some((Instant::now(), done)),
                }
            }
            _ => {
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles.into_iter().chain(worker_handles) {
        let _ = h.await;
    }
    bar.finish_and_clear();
    let mut seconds = started.elapsed().as_secs_f64();
    if phase == "drain" {
        seconds = (seconds - 1.0).max(0.001); // the idle second that ended it
    }
    let enqueued = s.enqueued.load(Ordering::Relaxed);
    let completed = s.completed.load(Ordering::Relaxed);
    let r = PhaseResult {
        phase: phase.to_string(),
        seconds,
        enqueued,
        completed,
        enqueue_jobs_per_s: enqueued as f64 / seconds,
        end_to_end_jobs_per_s: completed as f64 / seconds,
        enqueue_latency: summarize(&s.enqueue_us.lock()),
        lease_to_report_latency: summarize(&s.lease_report_us.lock()),
        end_to_end_latency: summarize(&s.end_to_end_us.lock()),
        errors: s.errors.load(Ordering::Relaxed),
    };
    r
}

pub async fn run(o: BenchOpts) -> anyhow::Result<BenchReport> {
    let mut copts = ClientOptions::new(o.servers.clone());
    copts.token = o.token.clone();
    let client = Client::connect(copts).await?;
    let o = Arc::new(o);
    let mut phases = Vec::new();
    for phase in &o.phases {
        let r = run_phase(&client, &o, phase).await;
        if o.progress {
            eprintln!(
                "{:>8}: {:.1} s, enqueued {} ({:.0}/s, p99 {:.2} ms), completed {} ({:.0}/s, e2e p99 {:.1} ms), errors {}",
                r.phase,
                r.seconds,
                r.enqueued,
                r.enqueue_jobs_per_s,
                r.enqueue_latency.p99_ms,
                r.completed,
                r.end_to_end_jobs_per_s,
                r.end_to_end_latency.p99_ms,
                r.errors
            );
        }
        phases.push(r);
    }
    let e2e = phases
        .iter()
        .find(|p| p.phase == "steady")
        .or_else(|| phases.iter().find(|p| p.phase == "drain"))
        .map_or(0.0, |p| p.end_to_end_jobs_per_s);
    Ok(BenchReport {
        servers: o.servers.clone(),
        enqueuers: o.enqueuers,
        workers: o.workers,
        tasks_per_poll: o.tasks_per_poll,
        payload_bytes: o.payload_bytes,
        phases,
        end_to_end_jobs_per_s: e2e,
    })
}
