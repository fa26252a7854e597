//! The Prometheus endpoint of real nodes (issue #14, README "Observability"):
//! Silo's metric names with the values a known workload implies, Raft and
//! queue gauges on the leader and followers, and no job id in any label.
use std::io::{Read, Write};

use super::*;

/// `GET <url>` over HTTP/1.0; the body.
fn scrape(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut s = std::net::TcpStream::connect(host).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").expect("request");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of the sample whose name and labels are exactly `series`
/// (labels in the order the exporter prints them), if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn metrics_of(c: &LocalCluster, id: u64) -> String {
    scrape(&c.nodes[&id].metrics_url().expect("the node printed SILO_METRICS"))
}

#[tokio::test]
async fn metrics_name_what_happened_with_silo_names_and_bounded_labels() {
    let c = start(ClusterOpts::default());
    let leader = c.wait_for_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let cl = client(&c).await;
    let n = 12;
    let mut ids = Vec::new();
    for i in 0..n {
        let mut j = job(&format!("metrics-job-{i}"));
        j.task_group = "metered".into();
        ids.push(cl.enqueue(j).await.expect("enqueue"));
    }
    // Lease 5: succeed 3, fail 2 (no retry policy: the jobs fail); 7 stay ready.
    let mut leased = Vec::new();
    while leased.len() < 5 {
        leased.extend(cl.lease_tasks("w1", "metered", 5 - leased.len() as u32).await.expect("lease"));
    }
    for t in &leased[..3] {
        cl.report_outcome(t, Outcome::Success(msgpack(vec![0xc3]).unwrap())).await.expect("report success");
    }
    for t in &leased[3..] {
        let failure = pb::Failure { code: "E_TEST".into(), data: None };
        cl.report_outcome(t, Outcome::Failure(failure)).await.expect("report failure");
    }
    // One more lease stays running.
    let running = loop {
        if let Some(t) = cl.lease_tasks("w2", "metered", 1).await.expect("lease").pop() {
            break t;
        }
    };

    let body = metrics_of(&c, leader);
    // gRPC, as Silo names it.
    let enqueues = sample(&body, r#"silo_grpc_requests_total{method="Enqueue",status="OK"}"#);
    assert!(enqueues.is_some_and(|v| v >= n as f64), "Enqueue OK count {enqueues:?}\n{body}");
    assert!(body.contains(r#"silo_grpc_request_duration_seconds_bucket{method="LeaseTasks",le="#), "{body}");
    // The job lifecycle, counted once by the leader.
    assert_eq!(sample(&body, "silo_jobs_enqueued_total"), Some(n as f64), "{body}");
    assert_eq!(sample(&body, r#"silo_jobs_dequeued_total{task_group="metered"}"#), Some(6.0), "{body}");
    assert_eq!(sample(&body, r#"silo_job_attempts_total{task_group="metered",is_retry="false"}"#), Some(6.0));
    assert_eq!(sample(&body, r#"silo_jobs_completed_total{status="succeeded"}"#), Some(3.0), "{body}");
    assert_eq!(sample(&body, r#"silo_jobs_completed_total{status="failed"}"#), Some(2.0), "{body}");
    assert!(body.contains(r#"silo_job_wait_time_seconds_bucket{task_group="metered",le="#), "{body}");
    // Queue gauges: 6 of 12 still ready, 1 running.
    assert_eq!(sample(&body, r#"silo_broker_buffer_size{task_group="metered"}"#), Some(6.0), "{body}");
    assert_eq!(sample(&body, r#"silo_task_leases_active{task_group="metered"}"#), Some(1.0), "{body}");
    // Raft: this node leads and reports its followers' lag.
    assert_eq!(sample(&body, "silo_raft_is_leader"), Some(1.0));
    assert_eq!(sample(&body, "silo_raft_leader_id"), Some(leader as f64));
    let followers: Vec<u64> = c.nodes.keys().copied().filter(|&id| id != leader).collect();
    for f in &followers {
        assert!(body.contains(&format!("silo_raft_replication_lag_entries{{follower=\"{f}\"}}")), "{body}");
    }
    assert!(sample(&body, "silo_raft_commit_index").is_some_and(|v| v > 0.0), "{body}");
    assert!(sample(&body, "silo_raft_term_changes_total").is_some_and(|v| v >= 1.0), "the first election: {body}");
    // RocksDB and the runtime.
    assert!(sample(&body, "silo_rocksdb_block_cache_hits_total").is_some(), "{body}");
    assert!(sample(&body, "silo_rocksdb_compaction_pending_bytes").is_some(), "{body}");
    assert!(sample(&body, "silo_tokio_alive_tasks").is_some_and(|v| v > 0.0), "{body}");
    assert!(sample(&body, "silo_process_resident_memory_bytes").is_some_and(|v| v > 0.0), "{body}");
    // Help text and units are there; no job or task id is a label.
    assert!(body.contains("# HELP silo_jobs_enqueued_total"), "{body}");
    for id in ids.iter().chain([&running.id, &running.job_id]) {
        assert!(!body.contains(id.as_str()), "an id ({id}) appears in the metrics");
    }

    // A follower: not leading, knows the leader, counts no job lifecycle.
    let body = metrics_of(&c, followers[0]);
    assert_eq!(sample(&body, "silo_raft_is_leader"), Some(0.0));
    assert_eq!(sample(&body, "silo_raft_leader_id"), Some(leader as f64));
    assert_eq!(sample(&body, r#"silo_jobs_completed_total{status="succeeded"}"#), None, "{body}");
    assert!(sample(&body, "silo_raft_applied_index").is_some_and(|v| v > 0.0), "{body}");
}
