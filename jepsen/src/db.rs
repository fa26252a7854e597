//! The DB lifecycle: N real `silo serve` processes, node `i` inside network
//! namespace `sj-n<i>` listening on `10.213.7.<i>:7450`, each under
//! libfaketime with its own clock file (offset `+0` until the clock nemesis
//! writes another), with fresh data directories under the run's store folder.
//! Processes are started and stopped by PID through `silo::testkit`.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use silo::pb::raft as rpb;
use silo::testkit::{ClusterOpts, LocalCluster};

use crate::net::Net;

/// The port every node listens on inside its namespace.
pub const PORT: u16 = 7450;
/// libfaketime, multithreaded flavour (Debian package `libfaketime`).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Settings of the nodes under test.
#[derive(Debug, Clone)]
pub struct DbOpts {
    pub nodes: usize,
    pub lease_ms: i64,
    pub snapshot_logs_since_last: u64,
    pub max_in_snapshot_log_to_keep: u64,
}

pub struct Db {
    pub cluster: LocalCluster,
    root: PathBuf,
}

impl Db {
    /// Node name as recorded in the history.
    pub fn name(id: u64) -> String {
        format!("n{id}")
    }

    pub fn addr(id: u64) -> String {
        format!("{}:{PORT}", Net::ip(id as usize))
    }

    /// The clock file of node `id` (libfaketime's FAKETIME_TIMESTAMP_FILE).
    pub fn clock_file(root: &Path, id: u64) -> PathBuf {
        root.join(format!("node{id}")).join("faketime.rc")
    }

    /// Starts every node and waits until they listen.
    pub fn start(bin: &Path, root: &Path, opts: &DbOpts) -> anyhow::Result<Db> {
        let faketime = Path::new(LIBFAKETIME).exists();
        if !faketime {
            tracing::warn!("{LIBFAKETIME} not found (apt-get install faketime): the clock nemesis is unavailable");
        }
        for id in 1..=opts.nodes as u64 {
            let f = Self::clock_file(root, id);
            std::fs::create_dir_all(f.parent().expect("node dir"))?;
            std::fs::write(&f, "+0\n")?;
        }
        let mut env = Vec::new();
        if faketime {
            let clock = root.join("node{id}").join("faketime.rc");
            env = vec![
                ("LD_PRELOAD".to_string(), LIBFAKETIME.to_string()),
                ("FAKETIME_TIMESTAMP_FILE".to_string(), clock.display().to_string()),
                ("FAKETIME_CACHE_DURATION".to_string(), "1".to_string()),
                ("FAKETIME_DONT_FAKE_MONOTONIC".to_string(), "1".to_string()),
                ("FAKETIME_DONT_RESET".to_string(), "1".to_string()),
            ];
        }
        let cluster_opts = ClusterOpts {
            nodes: opts.nodes,
            lease_ms: opts.lease_ms,
            snapshot_logs_since_last: opts.snapshot_logs_since_last,
            max_in_snapshot_log_to_keep: opts.max_in_snapshot_log_to_keep,
            addrs: (1..=opts.nodes as u64).map(Self::addr).collect(),
            launcher: vec!["ip".into(), "netns".into(), "exec".into(), format!("{}{{id}}", "sj-n")],
            env,
            log_filter: "info,openraft=info".into(),
            ..ClusterOpts::default()
        };
        let cluster = LocalCluster::start(bin, Some(root.to_path_buf()), cluster_opts)
            .with_context(|| format!("starting {} nodes", opts.nodes))?;
        Ok(Db { cluster, root: root.to_path_buf() })
    }

    /// Sets node `id`'s wall-clock offset in seconds (libfaketime re-reads the
    /// file within a second). Monotonic clocks are never faked.
    pub fn set_clock(&self, id: u64, offset_s: i64) -> anyhow::Result<()> {
        let spec = if offset_s >= 0 { format!("+{offset_s}s\n") } else { format!("{offset_s}s\n") };
        std::fs::write(Self::clock_file(&self.root, id), spec)?;
        Ok(())
    }

    /// Node `id`'s status, or None when it does not answer within 1 s.
    pub async fn status(&self, id: u64) -> Option<rpb::StatusReply> {
        tokio::time::timeout(Duration::from_secs(1), self.cluster.status(id)).await.ok()?.ok()
    }

    /// The node that claims leadership with the highest term, if any answers.
    pub async fn leader(&self) -> Option<u64> {
        let ids: Vec<u64> = self.cluster.nodes.keys().copied().collect();
        let all = futures::future::join_all(ids.iter().map(|&id| self.status(id))).await;
        all.into_iter().flatten().filter(|s| s.state == "Leader").max_by_key(|s| s.term).map(|s| s.node_id)
    }

    /// Every node's log file, for the store folder.
    pub fn copy_logs(&self, to: &Path) -> anyhow::Result<()> {
        for (id, node) in &self.cluster.nodes {
            let _ = std::fs::copy(node.dir.join("node.log"), to.join(format!("n{id}.log")));
        }
        Ok(())
    }
}
