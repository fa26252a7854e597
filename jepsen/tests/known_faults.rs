//! Regression tests for faults the harness found (jepsen issue #9), replayed
//! as exact recipes on real nodes in network namespaces. They need root (like
//! the harness) and skip with a message without it. `SILO_BIN` picks another
//! server binary (to show a recipe fails on a build without the fix).
use std::path::PathBuf;
use std::time::{Duration, Instant};

use silo::pb::raft as rpb;
use silo::pb::silo as pb;
use silo_jepsen::client::Conns;
use silo_jepsen::db::{Db, DbOpts};
use silo_jepsen::net::Net;

const WAIT: Duration = Duration::from_secs(60);

fn bin() -> PathBuf {
    if let Ok(b) = std::env::var("SILO_BIN") {
        return b.into();
    }
    // target/<profile>/deps/known_faults-… → target/<profile>/silo
    let exe = std::env::current_exe().expect("test exe");
    exe.parent().and_then(|d| d.parent()).expect("target dir").join("silo")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED: needs root for network namespaces and iptables");
    }
    root
}

struct Setup {
    db: Db,
    net: Net,
    conns: Conns,
    _dir: Option<tempfile::TempDir>,
}

async fn setup(opts: DbOpts) -> Setup {
    let net = Net::setup(opts.nodes).expect("network");
    let dir = tempfile::tempdir().unwrap();
    let db = Db::start(&bin(), dir.path(), &opts).expect("nodes");
    db.cluster.wait_for_leader(WAIT).await.expect("leader");
    let ids: Vec<u64> = db.cluster.nodes.keys().copied().collect();
    let conns = Conns::connect(&ids).await.expect("connections");
    // SILO_KEEP_TEST_DIRS=1 keeps the nodes' data and logs for a post-mortem.
    let dir = if std::env::var_os("SILO_KEEP_TEST_DIRS").is_some() {
        eprintln!("keeping {}", dir.keep().display());
        None
    } else {
        Some(dir)
    };
    Setup { db, net, conns, _dir: dir }
}

/// 3 nodes, 3 s leases, snapshots rare enough not to matter.
fn steady_opts() -> DbOpts {
    DbOpts { nodes: 3, lease_ms: 3000, snapshot_logs_since_last: 20_000, max_in_snapshot_log_to_keep: 1000 }
}

/// LeaseTasks for one task of group `g` by `worker`, routed by shard.
fn lease_req(shard: &str, worker: &str) -> pb::LeaseTasksRequest {
    pb::LeaseTasksRequest {
        shard: Some(shard.to_string()),
        worker_id: worker.into(),
        max_tasks: 1,
        task_group: "g".into(),
        tenant: None,
    }
}

fn job(id: &str, shard: &str, retries: u32) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        shard: shard.into(),
        id: id.into(),
        task_group: "g".into(),
        retry_policy: (retries > 0).then_some(pb::RetryPolicy {
            retry_count: retries,
            initial_interval_ms: 100,
            max_interval_ms: 100,
            randomize_interval: false,
            backoff_factor: 1.0,
        }),
        ..Default::default()
    }
}

async fn enqueue(s: &Setup, node: u64, id: &str, follow: bool) -> Result<(), tonic::Status> {
    let req = job(id, &s.conns.shard, 0);
    let (_, r) = s
        .conns
        .call(node, Duration::from_secs(10), follow, |mut c| {
            let r = req.clone();
            async move { c.enqueue(r).await }
        })
        .await;
    r.map(|_| ())
}

/// The leader with the highest term other than `not`.
async fn leader_other_than(db: &Db, not: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(l) = db.leader().await.filter(|l| *l != not) {
            return l;
        }
        assert!(Instant::now() < deadline, "no leader other than n{not}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// "A rejoined leader that can never commit": isolate leader n1 both ways and
/// send it one Enqueue; write 200 jobs through the new leader (it snapshots
/// and purges); heal (n1 catches up by snapshot install, which replaces the
/// stranded entry without openraft answering it); transfer leadership back to
/// n1: every write through it used to hang, because the stranded proposal
/// held the only group-commit slot for ever.
#[tokio::test]
async fn rejoined_leader_commits_after_snapshot_install_replaced_its_stranded_proposal() {
    if !is_root() {
        return;
    }
    let s =
        setup(DbOpts { nodes: 3, lease_ms: 3000, snapshot_logs_since_last: 50, max_in_snapshot_log_to_keep: 0 }).await;
    let old = s.db.leader().await.expect("leader");
    let others: Vec<usize> = s.db.cluster.nodes.keys().filter(|&&i| i != old).map(|&i| i as usize).collect();
    enqueue(&s, old, "before", false).await.expect("write before the partition");
    s.net.partition(&[old as usize], &others).unwrap();
    let stranded = enqueue(&s, old, "stranded", false);
    let stranded = tokio::time::timeout(Duration::from_secs(3), stranded).await;
    assert!(!matches!(stranded, Ok(Ok(()))), "an isolated leader cannot commit");
    let new = leader_other_than(&s.db, old).await;
    for i in 0..200 {
        enqueue(&s, new, &format!("w{i}"), true).await.expect("write through the majority");
    }
    let mut admin = s.db.cluster.admin(new).await.unwrap();
    admin.trigger_snapshot(rpb::TriggerSnapshotRequest {}).await.unwrap();
    s.net.heal().unwrap();
    s.db.cluster.wait_converged(200, WAIT).await.expect("the old leader catches up");
    let n1 = s.db.status(old).await.unwrap();
    assert!(n1.snapshot_index.unwrap_or(0) >= 50, "caught up by snapshot install: {n1:?}");
    let leader = s.db.leader().await.expect("leader");
    let mut admin = s.db.cluster.admin(leader).await.unwrap();
    admin.transfer_leader(rpb::TransferLeaderRequest { to: old }).await.expect("transfer");
    for i in 0..3 {
        let r = tokio::time::timeout(Duration::from_secs(10), enqueue(&s, old, &format!("after{i}"), false)).await;
        assert!(matches!(r, Ok(Ok(()))), "write {i} through the re-elected n{old}: {r:?}");
    }
}

/// "A lease delivered after it expired": leader n1 turns deaf (it sends, hears
/// nothing) while a worker's LeaseTasks for job J is in flight on it; the
/// others elect a leader that commits n1's grant, lets its 3 s lease expire and
/// hands attempt 2 to another worker, which succeeds. After the heal the first
/// worker's call used to return J attempt 1, dead on arrival, and a worker that
/// trusted it ran J a second time.
#[tokio::test]
async fn deaf_leader_never_delivers_a_grant_after_it_was_deposed() {
    if !is_root() {
        return;
    }
    let s = setup(steady_opts()).await;
    let old = s.db.leader().await.expect("leader");
    let req = job("J", &s.conns.shard, 3);
    let mut c = s.conns.grpc(old);
    c.enqueue(req).await.expect("enqueue J");
    for p in s.db.cluster.nodes.keys().filter(|&&i| i != old) {
        s.net.cut(*p as usize, old as usize).unwrap();
    }
    let lease = |worker: &str| lease_req(&s.conns.shard, worker);
    let mut first = s.conns.grpc(old);
    let first_req = lease("first");
    let first = tokio::spawn(async move { first.lease_tasks(first_req).await });
    let new = leader_other_than(&s.db, old).await;
    // The second worker polls the new leader until J's next attempt is its.
    let deadline = Instant::now() + WAIT;
    let task = loop {
        let (_, r) = s
            .conns
            .call(new, Duration::from_secs(5), true, |mut c| {
                let r = lease("second");
                async move { c.lease_tasks(r).await }
            })
            .await;
        if let Some(t) = r.ok().and_then(|r| r.tasks.into_iter().find(|t| t.job_id == "J")) {
            break t;
        }
        assert!(Instant::now() < deadline, "J was never leased to the second worker");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let report = pb::ReportOutcomeRequest {
        shard: task.shard.clone(),
        task_id: task.id.clone(),
        outcome: Some(pb::report_outcome_request::Outcome::Success(pb::SerializedBytes::default())),
        tenant_id: None,
    };
    s.conns.grpc(new).report_outcome(report).await.expect("second worker reports J");
    s.net.heal().unwrap();
    let r = tokio::time::timeout(WAIT, first).await.expect("the first worker's call returns").unwrap();
    if let Ok(resp) = r {
        let stale: Vec<_> = resp.into_inner().tasks.into_iter().filter(|t| t.job_id == "J").collect();
        assert!(
            stale.is_empty(),
            "n{old} delivered J attempt {:?} after attempt {} went to another worker",
            stale.iter().map(|t| t.attempt_number).collect::<Vec<_>>(),
            task.attempt_number
        );
    }
}

/// Check-quorum at the edge (issue #11): a leader cut off from both peers
/// stops acting as leader within about an election timeout. Writes sent to
/// it are refused at once with UNAVAILABLE instead of waiting for a commit
/// that cannot come, and GetClusterInfo from it never names itself, so
/// clients move to the majority, which elects a leader and takes writes.
#[tokio::test]
async fn isolated_leader_sends_clients_away_within_an_election_timeout() {
    if !is_root() {
        return;
    }
    let s = setup(steady_opts()).await;
    let old = s.db.leader().await.expect("leader");
    let others: Vec<usize> = s.db.cluster.nodes.keys().filter(|&&i| i != old).map(|&i| i as usize).collect();
    enqueue(&s, old, "before", false).await.expect("write before the partition");
    s.net.partition(&[old as usize], &others).unwrap();
    let cut_at = Instant::now();
    let mut i = 0;
    let refused_after = loop {
        i += 1;
        let asked = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(3), enqueue(&s, old, &format!("probe{i}"), false)).await;
        if let Ok(Err(e)) = &r {
            if e.code() == tonic::Code::Unavailable && asked.elapsed() < Duration::from_millis(500) {
                break cut_at.elapsed();
            }
        }
        assert!(cut_at.elapsed() < Duration::from_secs(20), "n{old} still takes writes it cannot commit: {r:?}");
    };
    let info = s.conns.grpc(old).get_cluster_info(pb::GetClusterInfoRequest {}).await;
    if let Ok(info) = info {
        let owner = &info.into_inner().shard_owners[0];
        assert_ne!(owner.node_id, old.to_string(), "an isolated node names itself the owner");
    }
    let new = leader_other_than(&s.db, old).await;
    enqueue(&s, new, "majority", true).await.expect("the majority takes writes");
    s.net.heal().unwrap();
    s.db.cluster.wait_converged(0, WAIT).await.expect("converged after the heal");
    eprintln!("n{old} refused writes {refused_after:?} after the cut");
}

/// "Leases expired early after a clock jump" (found by the clock nemesis,
/// `lease-dead-on-arrival`): the leader's wall clock jumps 30 s forward while
/// a worker holds a 3 s lease and heartbeats every 300 ms. Lease clocks run on
/// monotonic time, so every heartbeat keeps the lease, the report is
/// accepted, and the job succeeds on its first attempt.
#[tokio::test]
async fn a_wall_clock_jump_on_the_leader_does_not_expire_leases() {
    if !is_root() {
        return;
    }
    if !std::path::Path::new(silo_jepsen::db::LIBFAKETIME).exists() {
        eprintln!("SKIPPED: libfaketime is not installed (apt-get install faketime)");
        return;
    }
    let s = setup(steady_opts()).await;
    let leader = s.db.leader().await.expect("leader");
    let mut c = s.conns.grpc(leader);
    c.enqueue(job("J", &s.conns.shard, 0)).await.expect("enqueue J");
    let task = c.lease_tasks(lease_req(&s.conns.shard, "w")).await.expect("lease").into_inner().tasks.remove(0);
    s.db.set_clock(leader, 30).unwrap();
    let beats_until = Instant::now() + Duration::from_millis(4_500);
    let mut beats = 0;
    while Instant::now() < beats_until {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let hb = pb::HeartbeatRequest {
            shard: task.shard.clone(),
            worker_id: "w".into(),
            task_id: task.id.clone(),
            tenant_id: None,
        };
        c.heartbeat(hb).await.unwrap_or_else(|e| panic!("heartbeat {beats} refused after the clock jump: {e:?}"));
        beats += 1;
    }
    let report = pb::ReportOutcomeRequest {
        shard: task.shard.clone(),
        task_id: task.id.clone(),
        outcome: Some(pb::report_outcome_request::Outcome::Success(pb::SerializedBytes::default())),
        tenant_id: None,
    };
    c.report_outcome(report).await.expect("the report of a kept lease is accepted");
    let get = pb::GetJobRequest { shard: s.conns.shard.clone(), id: "J".into(), tenant: None, include_attempts: true };
    let j = c.get_job(get).await.unwrap().into_inner();
    assert_eq!(j.status, pb::JobStatus::Succeeded as i32);
    assert_eq!(j.attempts.len(), 1, "never expired and retried");
    s.db.set_clock(leader, 0).unwrap();
}

/// Pre-vote (issue #11): a follower cut off from both peers used to raise
/// its term at every election timeout (about twice a second) and, once the
/// partition healed, its higher term deposed the healthy leader. Now it asks
/// for pre-votes, gets none, and never raises its term: over ten maximum
/// election timeouts of isolation its term stays the leader's, and after the
/// heal the same leader leads in the same term and takes writes.
#[tokio::test]
async fn an_isolated_follower_does_not_depose_the_leader_when_it_returns() {
    if !is_root() {
        return;
    }
    let s = setup(steady_opts()).await;
    let leader = s.db.leader().await.expect("leader");
    let term = s.db.status(leader).await.expect("leader status").term;
    let follower = *s.db.cluster.nodes.keys().find(|&&i| i != leader).expect("a follower");
    let others: Vec<usize> = s.db.cluster.nodes.keys().filter(|&&i| i != follower).map(|&i| i as usize).collect();
    s.net.partition(&[follower as usize], &others).unwrap();
    // Watch the isolated node for ten maximum election timeouts (4 s with the
    // defaults): without pre-vote its term rose about every 0.5 s.
    let window = Duration::from_millis(10 * silo::config::RaftConfig::default().election_timeout_max_ms);
    let cut_at = Instant::now();
    let mut seen = 0;
    while cut_at.elapsed() < window {
        if let Some(st) = s.db.status(follower).await {
            assert_eq!(st.term, term, "the isolated n{follower} raised its term");
            seen += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen > 0, "n{follower} never answered Status during the partition");
    enqueue(&s, leader, "during", false).await.expect("the majority takes writes");
    s.net.heal().unwrap();
    s.db.cluster.wait_converged(0, WAIT).await.expect("converged after the heal");
    enqueue(&s, leader, "after", false).await.expect("the leader still takes writes after the heal");
    let st = s.db.status(leader).await.expect("leader status");
    assert_eq!((st.state.as_str(), st.term), ("Leader", term), "the rejoined follower disturbed the leader");
}
