//! A local multi-node cluster of real `silo serve` processes on 127.0.0.1, for
//! the cluster tests and the chaos/failover tools: free ports, one data
//! directory and log file per node, kill -9 / SIGTERM / SIGSTOP, membership
//! changes through the Admin service, and waits with deadlines.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::pb::raft::admin_client::AdminClient;
use crate::pb::raft::{self as rpb};

#[derive(Debug, Clone)]
pub struct ClusterOpts {
    pub nodes: usize,
    pub lease_ms: i64,
    pub snapshot_logs_since_last: u64,
    pub max_in_snapshot_log_to_keep: u64,
    pub max_payload_entries: u64,
    /// `raft.snapshot_chunk_kb`.
    pub snapshot_chunk_kb: usize,
    /// Raft timing (heartbeat, election min, election max) in ms.
    pub raft_timing_ms: (u64, u64, u64),
    /// `raft.proposal_timeout_ms`.
    pub proposal_timeout_ms: u64,
    /// Appended to every node's TOML config.
    pub extra_toml: String,
    pub log_filter: String,
    /// Fixed addresses for nodes 1..=N (empty: free ports on 127.0.0.1). The
    /// Jepsen harness gives each node an address in its own network namespace.
    pub addrs: Vec<String>,
    /// Command words put before the `silo` binary, with `{id}` replaced by the
    /// node id (e.g. `ip netns exec sj-n{id}`); empty: run it directly.
    pub launcher: Vec<String>,
    /// Extra environment for every node, `{id}` replaced in values (e.g.
    /// `LD_PRELOAD` of libfaketime with a per-node clock file).
    pub env: Vec<(String, String)>,
    /// Run every node with `[tls]`: a dev CA in `<root>/certs/ca.pem` and a
    /// certificate `<root>/certs/node<id>.pem` for 127.0.0.1, each made on
    /// first use (a test may place its own `node<id>.pem`/`.key` first).
    pub tls: bool,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            nodes: 3,
            lease_ms: 10_000,
            snapshot_logs_since_last: 20_000,
            max_in_snapshot_log_to_keep: 5_000,
            max_payload_entries: 512,
            snapshot_chunk_kb: crate::config::RaftConfig::default().snapshot_chunk_kb,
            raft_timing_ms: {
                let r = crate::config::RaftConfig::default();
                (r.heartbeat_interval_ms, r.election_timeout_min_ms, r.election_timeout_max_ms)
            },
            proposal_timeout_ms: crate::config::RaftConfig::default().proposal_timeout_ms,
            extra_toml: String::new(),
            log_filter: "info,openraft=warn".into(),
            addrs: Vec::new(),
            launcher: Vec::new(),
            env: Vec::new(),
            tls: false,
        }
    }
}

pub struct LocalNode {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    child: Option<Child>,
    joined: bool,
    /// `http://<addr>/metrics` of the running process (printed as
    /// `SILO_METRICS`; each start binds a free port).
    metrics_url: Arc<parking_lot::Mutex<Option<String>>>,
}

impl LocalNode {
    /// The node's metrics endpoint, once it printed it.
    pub fn metrics_url(&self) -> Option<String> {
        self.metrics_url.lock().clone()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }
}

pub struct LocalCluster {
    bin: PathBuf,
    root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub nodes: BTreeMap<u64, LocalNode>,
    opts: ClusterOpts,
    initial: Vec<(u64, String)>,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn send_signal(child: &Child, signal: i32) {
    // SAFETY: plain kill(2) on a child we own.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

impl LocalCluster {
    /// Starts `opts.nodes` nodes forming one cluster; data under `root` (a
    /// temporary directory when None). Returns once every node listens.
    pub fn start(bin: &Path, root: Option<PathBuf>, opts: ClusterOpts) -> std::io::Result<LocalCluster> {
        let (root, tmp) = match root {
            Some(r) => {
                std::fs::create_dir_all(&r)?;
                (r, None)
            }
            None => {
                let t = tempfile::tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut cluster =
            LocalCluster { bin: bin.to_path_buf(), root, _tmp: tmp, nodes: BTreeMap::new(), opts, initial: Vec::new() };
        // A port found free can be taken by another process before the node
        // binds it; then start again on fresh ports and empty directories.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match cluster.start_nodes() {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    tracing::warn!(error = %e, attempt, "local cluster did not start; retrying on fresh ports");
                    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
                    for id in ids {
                        cluster.kill(id);
                    }
                    for n in cluster.nodes.values() {
                        let _ = std::fs::remove_dir_all(&n.dir);
                    }
                    cluster.nodes.clear();
                }
                Err(e) => return Err(e),
            }
        }
        Ok(cluster)
    }

    fn start_nodes(&mut self) -> std::io::Result<()> {
        self.initial = (1..=self.opts.nodes as u64)
            .map(|id| {
                let addr = match self.opts.addrs.get(id as usize - 1) {
                    Some(a) => a.clone(),
                    None => format!("127.0.0.1:{}", free_port()),
                };
                (id, addr)
            })
            .collect();
        for (id, addr) in self.initial.clone() {
            let dir = self.root.join(format!("node{id}"));
            std::fs::create_dir_all(&dir)?;
            self.nodes
                .insert(id, LocalNode { id, addr, dir, child: None, joined: false, metrics_url: Default::default() });
        }
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.spawn(id)?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].addr.clone()
    }

    /// Where the TLS material lives (`ClusterOpts::tls`).
    pub fn certs_dir(&self) -> PathBuf {
        self.root.join("certs")
    }

    /// The dev CA of a TLS cluster, made on first use.
    pub fn ca(&self) -> std::io::Result<crate::tls::certs::Pem> {
        let dir = self.certs_dir();
        if !dir.join("ca.pem").exists() {
            let ca = crate::tls::certs::new_ca("silo test CA", 30).map_err(std::io::Error::other)?;
            crate::tls::certs::write(&ca, &dir, "ca").map_err(std::io::Error::other)?;
        }
        crate::tls::certs::read(&dir, "ca").map_err(std::io::Error::other)
    }

    /// Client-side TLS trusting the cluster's CA and showing an operator's
    /// client certificate (`operator.pem`, made on first use; the Admin
    /// service requires one); `None` for a plaintext cluster.
    pub fn client_tls(&self) -> Option<tonic::transport::ClientTlsConfig> {
        if !self.opts.tls {
            return None;
        }
        let dir = self.certs_dir();
        if !dir.join("operator.pem").exists() {
            let ca = self.ca().expect("the test CA");
            let pem = crate::tls::certs::issue_client(&ca, "operator", 30).expect("issue");
            crate::tls::certs::write(&pem, &dir, "operator").expect("write");
        }
        let identity = (dir.join("operator.pem"), dir.join("operator.key"));
        Some(crate::tls::client_files(&dir.join("ca.pem"), Some((&identity.0, &identity.1))).expect("the test CA"))
    }

    /// The `[tls]` section for node `id`, issuing its certificate if missing.
    /// A test can give a node its own CA by placing `node<id>-ca.pem` (a
    /// machine from another PKI).
    fn tls_toml(&self, id: u64) -> std::io::Result<String> {
        let ca = self.ca()?;
        let dir = self.certs_dir();
        let stem = format!("node{id}");
        if !dir.join(format!("{stem}.pem")).exists() {
            let pem = crate::tls::certs::issue_for_days(&ca, &stem, &["127.0.0.1".into(), "localhost".into()], 30)
                .map_err(std::io::Error::other)?;
            crate::tls::certs::write(&pem, &dir, &stem).map_err(std::io::Error::other)?;
        }
        let own_ca = dir.join(format!("{stem}-ca.pem"));
        let ca_file = if own_ca.exists() { own_ca } else { dir.join("ca.pem") };
        Ok(format!(
            "[tls]\ncert_file = \"{0}/{stem}.pem\"\nkey_file = \"{0}/{stem}.key\"\nca_file = \"{1}\"\n",
            dir.display(),
            ca_file.display()
        ))
    }

    fn write_config(&self, node: &LocalNode) -> std::io::Result<PathBuf> {
        let o = &self.opts;
        let mut toml = format!(
            "node_id = {}\nlisten = \"{}\"\ndata_dir = \"{}\"\ndev_mode = true\nlease_ms = {}\nwebui.listen = \"\"\nmetrics.listen = \"127.0.0.1:0\"\n{}\n",
            node.id,
            node.addr,
            node.dir.join("data").display(),
            o.lease_ms,
            o.extra_toml
        );
        toml.push_str(&format!(
            "[raft]\nsnapshot_logs_since_last = {}\nmax_in_snapshot_log_to_keep = {}\nmax_payload_entries = {}\n\
             heartbeat_interval_ms = {}\nelection_timeout_min_ms = {}\nelection_timeout_max_ms = {}\n\
             proposal_timeout_ms = {}\nsnapshot_chunk_kb = {}\n",
            o.snapshot_logs_since_last,
            o.max_in_snapshot_log_to_keep,
            o.max_payload_entries,
            o.raft_timing_ms.0,
            o.raft_timing_ms.1,
            o.raft_timing_ms.2,
            o.proposal_timeout_ms,
            o.snapshot_chunk_kb
        ));
        if o.tls {
            toml.push_str(&self.tls_toml(node.id)?);
        }
        toml.push_str(&format!("[cluster]\njoin = {}\n", node.joined));
        if !node.joined {
            for (id, addr) in &self.initial {
                toml.push_str(&format!("[[cluster.initial_members]]\nid = {id}\naddr = \"{addr}\"\n"));
            }
        }
        let path = node.dir.join("silo.toml");
        std::fs::write(&path, toml)?;
        Ok(path)
    }

    /// (Re)starts node `id` on its data directory and waits until it listens.
    pub fn spawn(&mut self, id: u64) -> std::io::Result<()> {
        let node = &self.nodes[&id];
        assert!(node.child.is_none(), "node {id} is already running");
        let config = self.write_config(node)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node.dir.join("node.log"))?;
        let with_id = |s: &str| s.replace("{id}", &id.to_string());
        let mut command = match self.opts.launcher.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(with_id(program));
                c.args(args.iter().map(|a| with_id(a))).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        for (k, v) in &self.opts.env {
            command.env(k, with_id(v));
        }
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("SILO_LOG", &self.opts.log_filter)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let metrics_url = node.metrics_url.clone();
        *metrics_url.lock() = None;
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("SILO_METRICS ") {
                    *metrics_url.lock() = Some(url.to_string());
                }
                if line.starts_with("SILO_LISTENING ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            return Err(std::io::Error::other(format!("node {id} did not start; log:\n{}", node.log())));
        }
        self.nodes.get_mut(&id).expect("node").child = Some(child);
        Ok(())
    }

    /// SIGKILL node `id` (no shutdown path runs).
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM node `id` and wait for it to exit.
    pub fn stop(&mut self, id: u64) {
        self.terminate(id);
    }

    /// SIGTERM node `id` (graceful shutdown) and wait for it to exit; its
    /// exit status, or None if it was not running.
    pub fn terminate(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let mut c = self.nodes.get_mut(&id).and_then(|n| n.child.take())?;
        send_signal(&c, libc::SIGTERM);
        c.wait().ok()
    }

    /// SIGSTOP / SIGCONT: a node that is alive but unresponsive.
    pub fn pause(&self, id: u64) {
        if let Some(c) = &self.nodes[&id].child {
            send_signal(c, libc::SIGSTOP);
        }
    }
    pub fn resume(&self, id: u64) {
        if let Some(c) = &self.nodes[&id].child {
            send_signal(c, libc::SIGCONT);
        }
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.is_running()).map(|n| n.id).collect()
    }

    pub async fn admin(&self, id: u64) -> Result<AdminClient<Channel>, tonic::Status> {
        let ch = crate::tls::client_endpoint(&self.addr(id), self.client_tls().as_ref())
            .map_err(|e| tonic::Status::internal(e.to_string()))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Ok(AdminClient::new(ch))
    }

    pub async fn status(&self, id: u64) -> Result<rpb::StatusReply, tonic::Status> {
        let mut a = self.admin(id).await?;
        Ok(a.status(rpb::StatusRequest { skip_digest: false }).await?.into_inner())
    }

    /// Waits until every running voter agrees on one leader that is running
    /// and reports itself Leader; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            let mut leaders = Vec::new();
            let mut ok = true;
            for id in self.running() {
                match self.status(id).await {
                    Ok(s) => {
                        if s.state == "Leader" {
                            leaders.push(id);
                        }
                        if s.state != "Learner" {
                            match s.leader_id {
                                Some(l) if self.nodes.get(&l).is_some_and(|n| n.is_running()) => {}
                                _ => ok = false,
                            }
                        }
                        last = format!("node {id}: {} leader {:?} term {}", s.state, s.leader_id, s.term);
                    }
                    Err(e) => {
                        ok = false;
                        last = format!("node {id}: {e}");
                    }
                }
            }
            if ok && leaders.len() == 1 {
                let leader = leaders[0];
                let agreed = futures::future::join_all(self.running().into_iter().map(|id| self.status(id))).await;
                if agreed.iter().all(|s| s.as_ref().is_ok_and(|s| s.state == "Learner" || s.leader_id == Some(leader)))
                {
                    return Ok(leader);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no agreed leader within {timeout:?}; last: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node applied the same index with the same
    /// state digest, at or beyond `min_index`. Returns (index, digest).
    pub async fn wait_converged(&self, min_index: u64, timeout: Duration) -> Result<(u64, u64), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = futures::future::join_all(self.running().into_iter().map(|id| self.status(id))).await;
            let views: Vec<(u64, u64)> = statuses
                .iter()
                .filter_map(|s| s.as_ref().ok())
                .filter_map(|s| Some((s.applied_index.unwrap_or(0), s.state_digest?)))
                .collect();
            if views.len() == statuses.len() && !views.is_empty() {
                let first = views[0];
                if first.0 >= min_index && views.iter().all(|v| *v == first) {
                    return Ok(first);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("replicas did not converge within {timeout:?}: (applied, digest) = {views:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a new node in join mode, adds it as a learner through the leader
    /// and promotes it to voter. Returns its id.
    pub async fn add_node(&mut self) -> Result<u64, String> {
        let id = self.spawn_joining().map_err(|e| e.to_string())?;
        let addr = self.addr(id);
        let leader = self.wait_for_leader(Duration::from_secs(30)).await?;
        let mut admin = self.admin(leader).await.map_err(|e| e.to_string())?;
        admin.add_learner(rpb::AddLearnerRequest { node_id: id, addr }).await.map_err(|e| e.to_string())?;
        admin
            .change_membership(rpb::ChangeMembershipRequest { add_voters: vec![id], remove: vec![] })
            .await
            .map_err(|e| e.to_string())?;
        Ok(id)
    }

    /// Starts a new node in join mode (not yet a member); returns its id.
    pub fn spawn_joining(&mut self) -> std::io::Result<u64> {
        let id = self.nodes.keys().max().copied().unwrap_or(0) + 1;
        let addr = format!("127.0.0.1:{}", free_port());
        let dir = self.root.join(format!("node{id}"));
        std::fs::create_dir_all(&dir)?;
        self.nodes.insert(id, LocalNode { id, addr, dir, child: None, joined: true, metrics_url: Default::default() });
        self.spawn(id)?;
        Ok(id)
    }

    /// Removes node `id` from the membership (through the leader), then stops it.
    pub async fn remove_node(&mut self, id: u64) -> Result<(), String> {
        let leader = self.wait_for_leader(Duration::from_secs(30)).await?;
        let mut admin = self.admin(leader).await.map_err(|e| e.to_string())?;
        admin
            .change_membership(rpb::ChangeMembershipRequest { add_voters: vec![], remove: vec![id] })
            .await
            .map_err(|e| e.to_string())?;
        self.stop(id);
        Ok(())
    }

    /// Every node's log, for failure reports.
    pub fn logs(&self) -> String {
        self.nodes.values().map(|n| format!("---- node {} ({}) ----\n{}", n.id, n.addr, n.log())).collect()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.resume(id);
            self.kill(id);
        }
    }
}
