//! The test network: every node in its own network namespace, joined by veth
//! pairs to one bridge in the root namespace, on a private /24 that exists only
//! inside what this module creates. Clients stay in the root namespace (the
//! bridge holds `.254`), so a client talking to a cut-off node is a client on
//! the minority side.
//!
//! Faults are iptables DROP rules in a node's own namespace, on its INPUT
//! chain, matching a peer's source address: `cut(from, to)` makes `to` deaf to
//! `from`. A two-way partition is two cuts; a "deaf" node is cuts from every
//! peer into it. The root namespace's rules are never touched, except one
//! FORWARD accept for the bridge (needed when `br_netfilter` sends bridged
//! frames through the host's FORWARD chain, whose policy Docker sets to DROP),
//! removed at teardown by its exact spec.
//!
//! Everything is torn down by [`Net::teardown`] (also on drop), and leftovers of
//! a run that was killed are removed before a new run starts.
use std::process::Command;

use anyhow::{bail, Context};

/// Interface and namespace names (at most 15 bytes for interfaces).
const BRIDGE: &str = "sjbr0";
const NS_PREFIX: &str = "sj-n";
const VETH_PREFIX: &str = "sjv";
/// The test /24: nodes are `.1`…`.N`, the bridge (clients) `.254`.
pub const SUBNET: &str = "10.213.7";

fn run(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

/// The namespaces, links and rules of one test run.
pub struct Net {
    nodes: usize,
    up: bool,
    /// Held while the network exists: the names are fixed, so two runs (or
    /// two tests) on one machine take turns.
    _lock: std::fs::File,
}

/// Blocks until no other run holds the test network.
fn lock() -> anyhow::Result<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("silo-jepsen-net.lock"))?;
    // SAFETY: flock(2) on a descriptor we own; released when the file closes.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!("flock: {}", std::io::Error::last_os_error());
    }
    Ok(f)
}

const FORWARD_RULE: [&str; 7] = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"];

impl Net {
    /// Namespace of node `i` (1-based).
    pub fn ns(i: usize) -> String {
        format!("{NS_PREFIX}{i}")
    }

    /// Address of node `i`.
    pub fn ip(i: usize) -> String {
        format!("{SUBNET}.{i}")
    }

    /// Creates the bridge and one namespace per node. Removes leftovers of an
    /// earlier run first. Needs root, `ip` (iproute2) and `iptables`.
    pub fn setup(nodes: usize) -> anyhow::Result<Net> {
        for tool in ["ip", "iptables"] {
            if Command::new("which").arg(tool).output().map(|o| !o.status.success()).unwrap_or(true) {
                bail!("`{tool}` is not installed (apt-get install iproute2 iptables)");
            }
        }
        let lock = lock()?;
        cleanup_leftovers();
        let net = Net { nodes, up: true, _lock: lock };
        run(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
        run(&["ip", "addr", "add", &format!("{SUBNET}.254/24"), "dev", BRIDGE])?;
        run(&["ip", "link", "set", BRIDGE, "up"])?;
        let mut fwd = vec!["iptables", "-I"];
        fwd.extend_from_slice(&FORWARD_RULE);
        run(&fwd)?;
        for i in 1..=nodes {
            let ns = Self::ns(i);
            let veth = format!("{VETH_PREFIX}{i}");
            let peer = format!("{VETH_PREFIX}{i}p");
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
            run(&["ip", "link", "set", &peer, "netns", &ns])?;
            run(&["ip", "link", "set", &veth, "master", BRIDGE])?;
            run(&["ip", "link", "set", &veth, "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", &peer, "name", "eth0"])?;
            run(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", Self::ip(i)), "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    /// Node `to` drops every packet from node `from` (one direction).
    pub fn cut(&self, from: usize, to: usize) -> anyhow::Result<()> {
        run(&["ip", "netns", "exec", &Self::ns(to), "iptables", "-A", "INPUT", "-s", &Self::ip(from), "-j", "DROP"])?;
        Ok(())
    }

    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn partition(&self, a: &[usize], b: &[usize]) -> anyhow::Result<()> {
        for &x in a {
            for &y in b {
                self.cut(x, y)?;
                self.cut(y, x)?;
            }
        }
        Ok(())
    }

    /// Removes every drop rule (the INPUT chains of our namespaces hold only
    /// ours), in every namespace even if one fails; returns the first error.
    pub fn heal(&self) -> anyhow::Result<()> {
        let mut first = None;
        for i in 1..=self.nodes {
            if let Err(e) = run(&["ip", "netns", "exec", &Self::ns(i), "iptables", "-F", "INPUT"]) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Deletes the namespaces, the bridge and the forward rule.
    pub fn teardown(&mut self) {
        if !self.up {
            return;
        }
        self.up = false;
        for i in 1..=self.nodes {
            run_quiet(&["ip", "netns", "del", &Self::ns(i)]);
            run_quiet(&["ip", "link", "del", &format!("{VETH_PREFIX}{i}")]);
        }
        run_quiet(&["ip", "link", "del", BRIDGE]);
        let mut fwd = vec!["iptables", "-D"];
        fwd.extend_from_slice(&FORWARD_RULE);
        run_quiet(&fwd);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Removes namespaces, links and the forward rule left by a run that died.
fn cleanup_leftovers() {
    if let Ok(list) = run(&["ip", "netns", "list"]) {
        for line in list.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with(NS_PREFIX) {
                // Nodes a killed run left behind still run inside it.
                if let Ok(pids) = run(&["ip", "netns", "pids", name]) {
                    for pid in pids.split_whitespace() {
                        run_quiet(&["kill", "-9", pid]);
                    }
                }
                run_quiet(&["ip", "netns", "del", name]);
            }
        }
    }
    if let Ok(links) = run(&["ip", "-o", "link", "show"]) {
        for line in links.lines() {
            let name = line.split(':').nth(1).unwrap_or("").trim().split('@').next().unwrap_or("");
            if name.starts_with(VETH_PREFIX) || name == BRIDGE {
                run_quiet(&["ip", "link", "del", name]);
            }
        }
    }
    let mut fwd = vec!["iptables", "-D"];
    fwd.extend_from_slice(&FORWARD_RULE);
    // Delete every copy a killed run may have left.
    for _ in 0..8 {
        if Command::new(fwd[0]).args(&fwd[1..]).output().map(|o| !o.status.success()).unwrap_or(true) {
            break;
        }
    }
}
