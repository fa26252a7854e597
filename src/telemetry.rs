//! Prometheus metrics (issue #14; README "Observability"): the recorder, the
//! `/metrics` endpoint on `metrics.listen`, every metric's description, and
//! the gauges read at each scrape.
//!
//! Counters and histograms are recorded where things happen (the gRPC edge,
//! the Raft log, the broker) through the `metrics` facade. Gauges that
//! describe state (Raft indexes, queue depths, RocksDB, the runtime) are
//! computed when Prometheus scrapes, from the node's own structures, so they
//! are never stale and cost nothing between scrapes. Each scrape costs
//! O(task groups + members), not O(jobs).
//!
//! Names follow Silo's documentation where the concept exists
//! (`silo_grpc_requests_total`, `silo_jobs_enqueued_total`, ...); labels are
//! bounded: gRPC method and status, task group (at most
//! [`MAX_GROUP_LABELS`] groups exported per scrape), follower node id. No
//! job, task or tenant id is ever a label.
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::raft::RaftNode;

/// Task groups exported per scrape (the deepest first); the rest are summed
/// into `task_group="(other)"`, so a workload with many groups cannot blow
/// up the series count.
pub const MAX_GROUP_LABELS: usize = 100;

/// Histogram buckets for latencies, seconds: 0.5 ms to 30 s.
const SECONDS_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0];
/// Buckets for counts per batch (entries per append, ops per batch).
const COUNT_BUCKETS: [f64; 12] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Gauges not set for this long disappear from the output: every scrape sets
/// the current ones just before rendering, so what vanishes is state that
/// ended (a task group that left the top [`MAX_GROUP_LABELS`], a follower's
/// lag on a node that no longer leads).
pub const GAUGE_IDLE: Duration = Duration::from_secs(10);

/// The `task_group` label of a counter or histogram: the group's name for
/// the first [`MAX_GROUP_LABELS`] groups this process labelled, `(other)`
/// for any later one, so series stay bounded whatever groups clients invent.
pub fn group_label(task_group: &str) -> String {
    static LABELLED: OnceLock<parking_lot::Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    let mut seen = LABELLED.get_or_init(Default::default).lock();
    if seen.contains(task_group) {
        return task_group.to_string();
    }
    if seen.len() < MAX_GROUP_LABELS {
        seen.insert(task_group.to_string());
        return task_group.to_string();
    }
    "(other)".to_string()
}

/// Installs the process-wide recorder (once; later calls return the same
/// handle), describes every metric and starts the upkeep that drains
/// histograms every 5 s, so their memory stays bounded whether or not anyone
/// scrapes. Call it inside the runtime, and only when metrics are served:
/// without a recorder the `metrics` macros record nothing and cost nothing.
pub fn recorder() -> anyhow::Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_entries".into()), &COUNT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_ops".into()), &COUNT_BUCKETS)?
        .idle_timeout(metrics_util::MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .install_recorder()?;
    describe();
    // Histograms keep their samples until upkeep drains them.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// What the scrape-time gauges read.
#[derive(Clone)]
pub struct Sources {
    pub node: Arc<RaftNode>,
    pub broker: Arc<Broker>,
    pub db: Arc<rocksdb::DB>,
}

/// Binds the metrics endpoint (`metrics.listen`). Errors name the setting.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    let parsed: SocketAddr = addr.parse().map_err(|e| anyhow::anyhow!("metrics.listen {addr:?}: {e}"))?;
    TcpListener::bind(parsed).await.map_err(|e| {
        anyhow::anyhow!(
            "metrics.listen {addr}: {e} (another node on this machine? give each its own port, or \"\" to turn metrics off)"
        )
    })
}

/// Serves `GET /metrics` (Prometheus text format) until `stop` turns true;
/// every scrape refreshes the gauges first.
pub async fn serve(listener: TcpListener, sources: Sources, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let handle = recorder()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (sources, handle) = (sources.clone(), handle.clone());
            async move {
                refresh(&sources);
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await?;
    Ok(())
}

/// Sets every scrape-time gauge from the node's current state.
pub fn refresh(s: &Sources) {
    raft_gauges(&s.node);
    queue_gauges(&s.broker, &s.db);
    rocksdb_gauges(&s.db);
    runtime_gauges();
}

fn raft_gauges(node: &RaftNode) {
    let st = node.status();
    gauge!("silo_raft_term").set(st.term as f64);
    gauge!("silo_raft_leader_id").set(st.leader.unwrap_or(0) as f64);
    gauge!("silo_raft_is_leader").set(if st.leader == Some(st.id) { 1.0 } else { 0.0 });
    let last = st.last_log_index.unwrap_or(0);
    gauge!("silo_raft_last_log_index").set(last as f64);
    gauge!("silo_raft_applied_index").set(st.last_applied_index.unwrap_or(0) as f64);
    gauge!("silo_raft_snapshot_index").set(st.snapshot_index.unwrap_or(0) as f64);
    gauge!("silo_raft_purged_index").set(st.purged_index.unwrap_or(0) as f64);
    gauge!("silo_raft_log_entries").set(last.saturating_sub(st.purged_index.unwrap_or(0)) as f64);
    gauge!("silo_raft_voters").set(st.voters.len() as f64);
    gauge!("silo_raft_learners").set(st.learners.len() as f64);
    if let Some(commit) = st.commit_index() {
        gauge!("silo_raft_commit_index").set(commit as f64);
    }
    for (id, matched) in &st.replication {
        if *id != st.id {
            let lag = last.saturating_sub(matched.unwrap_or(0));
            gauge!("silo_raft_replication_lag_entries", "follower" => id.to_string()).set(lag as f64);
        }
    }
    if let Some(ms) = st.millis_since_quorum_ack {
        gauge!("silo_raft_quorum_ack_age_seconds").set(ms as f64 / 1000.0);
    }
}

/// Per task group; running leases are counted from the lease table (at most
/// [`crate::webui::data::LEASE_SCAN_MAX`] read: a fleet's concurrency, not the backlog).
fn queue_gauges(broker: &Broker, db: &rocksdb::DB) {
    let now = crate::wall_clock_ms();
    let mut stats = broker.group_stats(now, crate::monotonic_ms());
    let leases = crate::webui::data::leases(db, broker, None, 0).per_group;
    stats.sort_by(|a, b| b.ready.cmp(&a.ready).then_with(|| a.task_group.cmp(&b.task_group)));
    // Groups with running leases but nothing queued get their gauges too.
    for name in leases.keys() {
        if !stats.iter().any(|g| &g.task_group == name) {
            stats.push(crate::broker::GroupStats::idle(name));
        }
    }
    let mut other = (0usize, 0usize, 0usize, 0usize);
    for (i, g) in stats.iter().enumerate() {
        let active = leases.get(&g.task_group).copied().unwrap_or(0);
        if i >= MAX_GROUP_LABELS {
            other = (other.0 + g.ready, other.1 + g.future, other.2 + g.gated, other.3 + active);
            continue;
        }
        let group = g.task_group.clone();
        gauge!("silo_broker_buffer_size", "task_group" => group.clone()).set(g.ready as f64);
        gauge!("silo_queue_scheduled_tasks", "task_group" => group.clone()).set(g.future as f64);
        gauge!("silo_queue_waiting_tasks", "task_group" => group.clone()).set(g.gated as f64);
        gauge!("silo_task_leases_active", "task_group" => group.clone()).set(active as f64);
        let age = g.oldest_ready_start_ms.map_or(0, |t| now.saturating_sub(t).max(0));
        gauge!("silo_queue_oldest_ready_age_seconds", "task_group" => group).set(age as f64 / 1000.0);
    }
    if stats.len() > MAX_GROUP_LABELS {
        let group = "(other)";
        gauge!("silo_broker_buffer_size", "task_group" => group).set(other.0 as f64);
        gauge!("silo_queue_scheduled_tasks", "task_group" => group).set(other.1 as f64);
        gauge!("silo_queue_waiting_tasks", "task_group" => group).set(other.2 as f64);
        gauge!("silo_task_leases_active", "task_group" => group).set(other.3 as f64);
    }
}

/// RocksDB properties summed over the column families, and statistics
/// tickers when `storage.statistics` is on.
fn rocksdb_gauges(db: &rocksdb::DB) {
    let sum = |name: &str| -> u64 {
        crate::storage::keys::ALL_CFS
            .iter()
            .filter_map(|cf| db.cf_handle(cf))
            .filter_map(|h| db.property_int_value_cf(&h, name).ok().flatten())
            .sum()
    };
    let one = |name: &str| db.property_int_value(name).ok().flatten().unwrap_or(0);
    gauge!("silo_rocksdb_block_cache_usage_bytes").set(one("rocksdb.block-cache-usage") as f64);
    gauge!("silo_rocksdb_memtable_bytes").set(sum("rocksdb.cur-size-all-mem-tables") as f64);
    gauge!("silo_rocksdb_sst_files_bytes").set(sum("rocksdb.total-sst-files-size") as f64);
    gauge!("silo_rocksdb_live_data_bytes").set(sum("rocksdb.estimate-live-data-size") as f64);
    gauge!("silo_rocksdb_compaction_pending_bytes").set(sum("rocksdb.estimate-pending-compaction-bytes") as f64);
    gauge!("silo_rocksdb_running_compactions").set(one("rocksdb.num-running-compactions") as f64);
    gauge!("silo_rocksdb_running_flushes").set(one("rocksdb.num-running-flushes") as f64);
    gauge!("silo_rocksdb_write_stopped").set(one("rocksdb.is-write-stopped") as f64);
    gauge!("silo_rocksdb_delayed_write_rate_bytes").set(one("rocksdb.actual-delayed-write-rate") as f64);
    if let Ok(Some(text)) = db.property_value("rocksdb.options-statistics") {
        for (ticker, metric) in [
            ("rocksdb.block.cache.hit", "silo_rocksdb_block_cache_hits_total"),
            ("rocksdb.block.cache.miss", "silo_rocksdb_block_cache_misses_total"),
            ("rocksdb.stall.micros", "silo_rocksdb_write_stall_microseconds_total"),
            ("rocksdb.bytes.written", "silo_rocksdb_written_bytes_total"),
            ("rocksdb.compact.write.bytes", "silo_rocksdb_compaction_written_bytes_total"),
        ] {
            if let Some(v) = ticker_value(&text, ticker) {
                metrics::counter!(metric).absolute(v);
            }
        }
    }
}

/// A ticker's count from RocksDB's statistics dump (`name COUNT : n`).
pub fn ticker_value(dump: &str, name: &str) -> Option<u64> {
    dump.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(" COUNT : ")?;
        rest.trim().parse().ok()
    })
}

fn runtime_gauges() {
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        let m = h.metrics();
        gauge!("silo_tokio_workers").set(m.num_workers() as f64);
        gauge!("silo_tokio_alive_tasks").set(m.num_alive_tasks() as f64);
        gauge!("silo_tokio_global_queue_depth").set(m.global_queue_depth() as f64);
    }
    // Resident set size: the second field of /proc/self/statm, in pages.
    if let Some(pages) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
    {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        gauge!("silo_process_resident_memory_bytes").set((pages * page) as f64);
    }
}

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric this crate records: kind, name, unit and help text (the
/// `# HELP` line). README "Observability" lists them for operators.
pub const METRICS: &[(Kind, &str, Unit, &str)] = &[
    (Kind::Counter, "silo_grpc_requests_total", Unit::Count, "gRPC requests by method and status code"),
    (Kind::Histogram, "silo_grpc_request_duration_seconds", Unit::Seconds, "gRPC request latency by method"),
    (Kind::Counter, "silo_jobs_enqueued_total", Unit::Count, "Jobs accepted by Enqueue"),
    (Kind::Counter, "silo_jobs_dequeued_total", Unit::Count, "Attempts leased to workers, by task group"),
    (
        Kind::Counter,
        "silo_jobs_completed_total",
        Unit::Count,
        "Jobs that reached a terminal status (succeeded, failed, cancelled)",
    ),
    (Kind::Counter, "silo_job_attempts_total", Unit::Count, "Attempts started, by task group and is_retry"),
    (
        Kind::Histogram,
        "silo_job_wait_time_seconds",
        Unit::Seconds,
        "Time from an attempt's start time (when it became due) to its lease, by task group",
    ),
    (Kind::Gauge, "silo_task_leases_active", Unit::Count, "Running leases, by task group (leader)"),
    (Kind::Gauge, "silo_broker_buffer_size", Unit::Count, "Attempts ready for a worker now, by task group (leader)"),
    (
        Kind::Gauge,
        "silo_queue_scheduled_tasks",
        Unit::Count,
        "Attempts whose start time is in the future, by task group",
    ),
    (
        Kind::Gauge,
        "silo_queue_waiting_tasks",
        Unit::Count,
        "Attempts waiting for a time to retry their limits, by task group",
    ),
    (
        Kind::Gauge,
        "silo_queue_oldest_ready_age_seconds",
        Unit::Seconds,
        "Age of the longest-waiting ready attempt, by task group",
    ),
    (Kind::Counter, "silo_leases_expired_total", Unit::Count, "Leases the reaper expired (worker crashed or lost)"),
    (
        Kind::Histogram,
        "silo_lease_reaper_duration_seconds",
        Unit::Seconds,
        "Duration of one lease-reaper pass (leader)",
    ),
    (Kind::Counter, "silo_lease_reaper_scans_total", Unit::Count, "Lease-reaper passes that found expired leases"),
    (Kind::Counter, "silo_jobs_purged_total", Unit::Count, "Finished jobs deleted by retention"),
    (
        Kind::Counter,
        "silo_grants_withheld_total",
        Unit::Count,
        "Committed lease grants not handed out (deposed, unconfirmed)",
    ),
    (Kind::Counter, "silo_lease_reply_trimmed_total", Unit::Count, "LeaseTasks replies cut short by the byte budget"),
    (Kind::Gauge, "silo_raft_term", Unit::Count, "Current Raft term"),
    (Kind::Gauge, "silo_raft_leader_id", Unit::Count, "The leader this node knows (0: none)"),
    (Kind::Gauge, "silo_raft_is_leader", Unit::Count, "1 on the leader"),
    (Kind::Gauge, "silo_raft_last_log_index", Unit::Count, "Index of the last log entry"),
    (Kind::Gauge, "silo_raft_applied_index", Unit::Count, "Index of the last applied entry"),
    (Kind::Gauge, "silo_raft_commit_index", Unit::Count, "Highest index held by a majority of voters (leader)"),
    (Kind::Gauge, "silo_raft_snapshot_index", Unit::Count, "Last index in the latest snapshot"),
    (Kind::Gauge, "silo_raft_purged_index", Unit::Count, "Highest log index purged behind a snapshot"),
    (Kind::Gauge, "silo_raft_log_entries", Unit::Count, "Entries held in the log (last minus purged)"),
    (
        Kind::Gauge,
        "silo_raft_replication_lag_entries",
        Unit::Count,
        "Entries a follower lacks (leader; label follower)",
    ),
    (
        Kind::Gauge,
        "silo_raft_quorum_ack_age_seconds",
        Unit::Seconds,
        "Time since a quorum last acknowledged this leader",
    ),
    (Kind::Gauge, "silo_raft_voters", Unit::Count, "Voters in the membership"),
    (Kind::Gauge, "silo_raft_learners", Unit::Count, "Learners in the membership"),
    (Kind::Counter, "silo_raft_term_changes_total", Unit::Count, "Terms this node saw begin (elections)"),
    (Kind::Counter, "silo_leadership_gained_total", Unit::Count, "Times this node became leader"),
    (Kind::Counter, "silo_raft_pre_votes_total", Unit::Count, "Pre-vote rounds this node ran, by outcome (won, lost)"),
    (
        Kind::Counter,
        "silo_raft_campaigns_total",
        Unit::Count,
        "Elections this node started (after a won pre-vote or as a transfer target)",
    ),
    (
        Kind::Counter,
        "silo_raft_append_shrunk_total",
        Unit::Count,
        "AppendEntries abandoned near openraft's time bound and retried with half the entries",
    ),
    (
        Kind::Counter,
        "silo_raft_step_downs_total",
        Unit::Count,
        "Times this leader heard no quorum for two election timeouts and muted its replication (check-quorum)",
    ),
    (Kind::Histogram, "silo_raft_log_append_seconds", Unit::Seconds, "Log append including its fsync"),
    (Kind::Histogram, "silo_raft_log_append_entries", Unit::Count, "Entries per log append (group-commit factor)"),
    (
        Kind::Histogram,
        "silo_raft_append_rpc_seconds",
        Unit::Seconds,
        "Leader side: AppendEntries with entries, sent until answered (the follower's decode, append and fsync included)",
    ),
    (Kind::Histogram, "silo_apply_seconds", Unit::Seconds, "One state-machine apply pass (a run of committed entries)"),
    (Kind::Histogram, "silo_batch_ops", Unit::Count, "Proposals per group-commit batch"),
    (Kind::Histogram, "silo_propose_seconds", Unit::Seconds, "Proposal to applied result, by op"),
    (Kind::Counter, "silo_proposals_abandoned_total", Unit::Count, "Proposals given up (deposed, timeout)"),
    (Kind::Counter, "silo_commands_applied_total", Unit::Count, "Commands applied by this node, by op and ok"),
    (Kind::Histogram, "silo_snapshot_build_seconds", Unit::Seconds, "Snapshot builds (count = snapshots built)"),
    (Kind::Histogram, "silo_snapshot_install_seconds", Unit::Seconds, "Snapshot installs on a lagging follower"),
    (Kind::Counter, "silo_tls_reloads_total", Unit::Count, "Certificate reloads by result"),
    (Kind::Counter, "silo_tls_handshake_failures_total", Unit::Count, "TLS handshakes that failed"),
    (Kind::Counter, "silo_tls_plaintext_refused_total", Unit::Count, "Plaintext connections to a TLS node"),
    (
        Kind::Counter,
        "silo_tls_connections_shed_total",
        Unit::Count,
        "Connections closed because every TLS handshake slot was busy",
    ),
    (Kind::Gauge, "silo_rocksdb_block_cache_usage_bytes", Unit::Bytes, "Bytes in the block cache"),
    (Kind::Gauge, "silo_rocksdb_memtable_bytes", Unit::Bytes, "Bytes in memtables (all column families)"),
    (Kind::Gauge, "silo_rocksdb_sst_files_bytes", Unit::Bytes, "Bytes of SST files"),
    (Kind::Gauge, "silo_rocksdb_live_data_bytes", Unit::Bytes, "Estimated live data"),
    (Kind::Gauge, "silo_rocksdb_compaction_pending_bytes", Unit::Bytes, "Bytes compaction estimates it must rewrite"),
    (Kind::Gauge, "silo_rocksdb_running_compactions", Unit::Count, "Compactions running"),
    (Kind::Gauge, "silo_rocksdb_running_flushes", Unit::Count, "Flushes running"),
    (Kind::Gauge, "silo_rocksdb_write_stopped", Unit::Count, "1 while writes are stopped (stall)"),
    (
        Kind::Gauge,
        "silo_rocksdb_delayed_write_rate_bytes",
        Unit::Bytes,
        "Write rate limit while delayed (0: not delayed)",
    ),
    (Kind::Counter, "silo_rocksdb_block_cache_hits_total", Unit::Count, "Block cache hits"),
    (Kind::Counter, "silo_rocksdb_block_cache_misses_total", Unit::Count, "Block cache misses"),
    (Kind::Counter, "silo_rocksdb_write_stall_microseconds_total", Unit::Count, "Microseconds writes were stalled"),
    (Kind::Counter, "silo_rocksdb_written_bytes_total", Unit::Bytes, "Bytes written by the application"),
    (Kind::Counter, "silo_rocksdb_compaction_written_bytes_total", Unit::Bytes, "Bytes written by compaction"),
    (Kind::Gauge, "silo_tokio_workers", Unit::Count, "Runtime worker threads"),
    (Kind::Gauge, "silo_tokio_alive_tasks", Unit::Count, "Tasks alive in the runtime"),
    (Kind::Gauge, "silo_tokio_global_queue_depth", Unit::Count, "Tasks in the runtime's global queue"),
    (Kind::Gauge, "silo_process_resident_memory_bytes", Unit::Bytes, "Resident set size"),
];

/// Registers the help text and unit of every metric in [`METRICS`].
fn describe() {
    for &(kind, name, unit, help) in METRICS {
        match kind {
            Kind::Counter => describe_counter!(name, unit, help),
            Kind::Gauge => describe_gauge!(name, unit, help),
            Kind::Histogram => describe_histogram!(name, unit, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticker_values_parse_from_the_statistics_dump() {
        let dump = "rocksdb.block.cache.miss COUNT : 12\nrocksdb.block.cache.hit COUNT : 345\n\
                    rocksdb.db.get.micros P50 : 1.0 P95 : 2.0 COUNT : 7 SUM : 9\n";
        assert_eq!(ticker_value(dump, "rocksdb.block.cache.hit"), Some(345));
        assert_eq!(ticker_value(dump, "rocksdb.block.cache.miss"), Some(12));
        assert_eq!(ticker_value(dump, "rocksdb.stall.micros"), None);
        assert_eq!(ticker_value(dump, "rocksdb.db.get.micros"), None);
    }

    /// Every `silo_*` series the Grafana dashboard queries is one this crate
    /// records (histograms through their `_bucket`, `_sum`, `_count` series).
    #[test]
    fn the_grafana_dashboard_names_only_recorded_metrics() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../docs/grafana-dashboard.json")).expect("dashboard JSON");
        let mut exprs = Vec::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                exprs.push(target["expr"].as_str().expect("expr").to_string());
            }
        }
        assert!(exprs.len() > 20, "the dashboard has its queries");
        let known = |name: &str| {
            METRICS.iter().any(|&(kind, m, _, _)| {
                m == name
                    || (kind == Kind::Histogram
                        && ["_bucket", "_sum", "_count"].iter().any(|s| name.strip_suffix(s) == Some(m)))
            })
        };
        for expr in &exprs {
            let mut rest = expr.as_str();
            while let Some(at) = rest.find("silo_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                assert!(known(&name), "the dashboard queries {name}, which nothing records (in {expr})");
                rest = &rest[at + name.len()..];
            }
        }
    }

    #[test]
    fn metric_names_follow_prometheus_conventions() {
        for &(kind, name, unit, help) in METRICS {
            assert!(name.starts_with("silo_") && !help.is_empty(), "{name}");
            assert_eq!(
                kind == Kind::Counter,
                name.ends_with("_total"),
                "{name}: counters and only counters end in _total"
            );
            if unit == Unit::Seconds {
                assert!(name.ends_with("_seconds"), "{name} is in seconds");
            }
        }
    }
}
