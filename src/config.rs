//! Node configuration: defaults, then a TOML file, then environment variables
//! and command-line flags (flags win). [`Config::validate`] names every broken
//! rule in one message.
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::limits;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's Raft id (unique in the cluster, > 0).
    pub node_id: u64,
    /// Address the gRPC server binds (public API and Raft traffic).
    pub listen: String,
    /// Address clients and peers use to reach this node; defaults to the bound address.
    pub advertise: Option<String>,
    /// Directory holding RocksDB and snapshots.
    pub data_dir: PathBuf,
    /// Enables ResetShards (wipes all jobs). Never on in production.
    pub dev_mode: bool,
    /// Shards the tenant-hash space is split into when a cluster is first formed.
    pub num_shards: u32,
    /// Largest job payload accepted, in bytes.
    pub max_payload_bytes: usize,
    /// Byte budget of one LeaseTasks reply: tasks are granted only while their
    /// payloads and metadata fit (at least one task per reply).
    pub lease_reply_bytes_max: usize,
    /// Deprecated spelling of `metrics.listen`; when set it wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Serve GetJob/GetJobResult from local state without a read barrier.
    pub stale_reads: bool,
    /// Delete terminal jobs this long after they finished (None = keep until
    /// DeleteJob).
    pub retention_ms: Option<u64>,
    /// Length of every lease granted to a worker (the reference always uses 10 s;
    /// shorter values make expiry tests fast).
    pub lease_ms: i64,
    pub tenancy: TenancyConfig,
    pub auth: AuthConfig,
    pub raft: RaftConfig,
    pub cluster: ClusterConfig,
    pub storage: StorageConfig,
    /// SQL statement limits (`[query]`, issue #12).
    pub query: crate::query::QueryConfig,
    /// The web console (`[webui]`, issue #13).
    pub webui: WebUiConfig,
    /// TLS on the gRPC listener and mutual TLS between nodes (`[tls]`, issue #14).
    pub tls: TlsConfig,
    /// The Prometheus endpoint (`[metrics]`, issue #14).
    pub metrics: MetricsConfig,
    /// Log output (`[log]`, issue #14).
    pub log: LogConfig,
}

/// How the node writes its logs (`[log]`); the filter is `--log` /
/// `SILO_LOG`, else `RUST_LOG`, else `info,openraft=warn`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default; colours on a terminal) or `json` (one object per
    /// line with timestamp, level, target, fields and the current span).
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: "text".into() }
    }
}

/// The Prometheus endpoint every node serves (`[metrics]`; README "Observability").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address (`host:port`) of `GET /metrics`; empty disables it. Default
    /// `127.0.0.1:9464`; port 0 picks a free one, printed as
    /// `SILO_METRICS http://<addr>/metrics`.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: "127.0.0.1:9464".into() }
    }
}

impl Config {
    /// The effective metrics address (`metrics.listen`, or the deprecated
    /// top-level `metrics_listen` when set); empty = off.
    pub fn metrics_listen(&self) -> &str {
        self.metrics_listen.as_deref().unwrap_or(&self.metrics.listen)
    }
}

/// TLS for the one gRPC listener (public API, Raft, Admin) and for this
/// node's connections to its peers (`[tls]`; README "TLS"). Off unless
/// `cert_file` is set; then `key_file` and `ca_file` are required too. The
/// files are read again on SIGHUP and when their modification time changes
/// (a broken new file keeps the previous certificates and is logged).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// This node's certificate chain, PEM (leaf first). It is both the server
    /// certificate clients see and the client certificate this node shows its
    /// peers, so its SANs must name the address peers and clients dial.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file`, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The cluster CA, PEM: peers' certificates must chain to it, both when
    /// this node dials them and when they call its Raft service.
    pub ca_file: Option<PathBuf>,
    /// Which connections must show a certificate signed by `ca_file`:
    /// `peers` (default): Raft traffic only, so a machine without a node
    /// certificate can neither join nor read the log, while API clients
    /// authenticate with the token; `all`: every connection (mutual TLS for
    /// clients too).
    pub client_auth: ClientAuth,
}

/// `tls.client_auth`: see [`TlsConfig::client_auth`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Peers,
    All,
}

impl TlsConfig {
    /// Whether TLS is on (`cert_file` set).
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

/// The console every node serves (`[webui]`; README "Web console").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebUiConfig {
    /// Address (`host:port`) the console's HTTP server binds; empty disables
    /// it. Default `127.0.0.1:7460`: loopback only, since a reachable console
    /// can cancel and delete jobs (with `auth.token` set it asks for the token).
    pub listen: String,
    /// Host names (no port) the console answers to besides IP addresses and
    /// `localhost`, e.g. `["silo-1.internal"]`. Requests naming any other host
    /// are refused, so a page that rebinds its own DNS name to this address
    /// cannot use the console.
    pub allowed_hosts: Vec<String>,
}

impl Default for WebUiConfig {
    fn default() -> Self {
        WebUiConfig { listen: "127.0.0.1:7460".into(), allowed_hosts: Vec::new() }
    }
}

/// RocksDB sizing (`[storage]`). Defaults suit a 2-core, 24 GiB machine that
/// runs one node: every memory pool below is fixed, so a node's RocksDB memory
/// is at most `block_cache_mb + write_buffers_mb` (plus small per-file handles)
/// whatever the number of jobs stored (issue #10). See README "Storage".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Shared LRU cache for data blocks *and* index/filter partitions, MiB.
    pub block_cache_mb: usize,
    /// Budget for all memtables of all column families together, MiB
    /// (RocksDB's `db_write_buffer_size`); a flush starts when it is reached.
    pub write_buffers_mb: usize,
    /// One memtable's size, MiB (`write_buffer_size`, per column family).
    pub write_buffer_mb: usize,
    /// Uncompressed size of a data block, KiB. Small blocks make a point
    /// lookup (the queue's common read) decompress less.
    pub block_size_kb: usize,
    /// Bloom filter bits per key (10 ≈ 1% false positives); absent-key
    /// lookups (a new job id, a reaped lease) are answered by the filter.
    pub bloom_bits_per_key: f64,
    /// Flush and compaction threads (RocksDB's `max_background_jobs`).
    pub background_jobs: i32,
    /// Compression of levels 2 and below: `none`, `snappy`, `lz4` or `zstd`.
    /// Levels 0 and 1 hold short-lived queue records and stay uncompressed.
    pub compression: String,
    /// Compression of the bottom level (most of the data): same choices.
    pub bottommost_compression: String,
    /// RocksDB statistics (block cache hits and misses, stall time, bytes
    /// written), exported as `silo_rocksdb_*_total`; off saves their upkeep.
    pub statistics: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            block_cache_mb: 256,
            write_buffers_mb: 384,
            write_buffer_mb: 128,
            block_size_kb: 8,
            bloom_bits_per_key: 10.0,
            background_jobs: 2,
            compression: "lz4".into(),
            bottommost_compression: "zstd".into(),
            statistics: true,
        }
    }
}

/// Compression names accepted by `[storage]`.
pub const COMPRESSIONS: [&str; 4] = ["none", "snappy", "lz4", "zstd"];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenancyConfig {
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// When set, every silo.v1.Silo call needs `authorization: Bearer <token>`.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// How often the leader sends heartbeats, ms (our own ticker; openraft
    /// also heartbeats on its own every 3/4 of `election_timeout_min_ms`,
    /// which is also how long one AppendEntries may take).
    pub heartbeat_interval_ms: u64,
    /// A follower that heard from no leader for this long may seek votes
    /// (with a pre-vote first, see `raft::election`); a voter that heard
    /// from the leader more recently refuses to vote for anyone else (the
    /// leader lease). At least twice the heartbeat interval. ms.
    pub election_timeout_min_ms: u64,
    /// Each election attempt waits a random timeout between the minimum and
    /// this, so two followers rarely campaign at once; also how long a
    /// leader may go without hearing from a quorum before it stops acting as
    /// leader (check-quorum). ms.
    pub election_timeout_max_ms: u64,
    pub snapshot_logs_since_last: u64,
    /// Size of one chunk of a snapshot stream sent to a lagging follower, KiB
    /// (memory per transfer is a few chunks).
    pub snapshot_chunk_kb: usize,
    pub max_in_snapshot_log_to_keep: u64,
    /// Most entries in one AppendEntries message (each entry may be a batch of
    /// many proposals).
    pub max_payload_entries: u64,
    /// Group-commit batches in flight at once (1 = the next batch forms while
    /// the previous one commits; raise it when replication round trips are long).
    pub proposals_in_flight: u32,
    /// Longest wait for a proposal to commit and apply, ms. Past it (or as soon
    /// as this node stops leading in the term it proposed in) the caller gets
    /// UNAVAILABLE "outcome unknown" and the batch slot is freed: no proposal
    /// waits for an answer that can no longer come (ARCHITECTURE example 12).
    pub proposal_timeout_ms: u64,
    /// Also write state-machine changes to RocksDB's WAL. Off (default): each
    /// change is written once, in the Raft log (issue #11). After a crash
    /// the node re-applies, at start, the entries up to the commit index it
    /// saved, and the rest once it hears the leader (at most the memtables'
    /// worth, `storage.write_buffers_mb`); their job-lifecycle metrics are
    /// counted again. A clean shutdown flushes. On: every change is logged
    /// twice and a crash restart re-applies nothing.
    pub state_machine_wal: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 250,
            election_timeout_max_ms: 400,
            snapshot_logs_since_last: 20_000,
            snapshot_chunk_kb: 1024,
            max_in_snapshot_log_to_keep: 5_000,
            max_payload_entries: 512,
            proposals_in_flight: 1,
            proposal_timeout_ms: 10_000,
            state_machine_wal: false,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Members that form the cluster on first start: `[{id = 1, addr = "host:port"}]`.
    /// Empty = a single-node cluster of this node. Only the node with the lowest
    /// id initialises; a node with data rejoins from it and ignores this list.
    pub initial_members: Vec<Member>,
    /// Start without forming a cluster; wait to be added by an existing one.
    pub join: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: u64,
    pub addr: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            listen: "127.0.0.1:7450".into(),
            advertise: None,
            data_dir: PathBuf::from("./silo-data"),
            dev_mode: false,
            num_shards: 1,
            max_payload_bytes: limits::PAYLOAD_BYTES_DEFAULT_MAX,
            lease_reply_bytes_max: limits::LEASE_REPLY_BYTES_DEFAULT_MAX,
            metrics_listen: None,
            stale_reads: false,
            lease_ms: limits::LEASE_MS,
            retention_ms: None,
            tenancy: TenancyConfig::default(),
            auth: AuthConfig::default(),
            raft: RaftConfig::default(),
            cluster: ClusterConfig::default(),
            storage: StorageConfig::default(),
            query: crate::query::QueryConfig::default(),
            webui: WebUiConfig::default(),
            tls: TlsConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    pub fn validate(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        if self.node_id == 0 {
            errors.push("node_id must be greater than 0".to_string());
        }
        if self.listen.parse::<SocketAddr>().is_err() {
            errors.push(format!("listen must be host:port with a numeric IP, got {:?}", self.listen));
        }
        if let Some(a) = &self.advertise {
            if !a.contains(':') {
                errors.push(format!("advertise must be host:port, got {a:?}"));
            }
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            errors.push(format!("log.format must be \"text\" or \"json\", got {:?}", self.log.format));
        }
        let metrics = self.metrics_listen();
        if !metrics.is_empty() && metrics.parse::<SocketAddr>().is_err() {
            errors.push(format!("metrics.listen must be host:port or empty, got {metrics:?}"));
        }
        if self.num_shards == 0 || self.num_shards > 1024 {
            errors.push(format!("num_shards must be between 1 and 1024, got {}", self.num_shards));
        }
        if self.lease_reply_bytes_max < 1024 || self.lease_reply_bytes_max > limits::GRPC_MESSAGE_BYTES_MAX / 2 {
            errors.push(format!(
                "lease_reply_bytes_max must be between 1024 and {}, got {}",
                limits::GRPC_MESSAGE_BYTES_MAX / 2,
                self.lease_reply_bytes_max
            ));
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > limits::GRPC_MESSAGE_BYTES_MAX / 2 {
            errors.push(format!(
                "max_payload_bytes must be between 1 and {}, got {}",
                limits::GRPC_MESSAGE_BYTES_MAX / 2,
                self.max_payload_bytes
            ));
        }
        if let Some(t) = &self.auth.token {
            if t.is_empty() || !t.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                errors.push("auth.token must be non-empty visible ASCII without spaces".to_string());
            }
        }
        if !(100..=3_600_000).contains(&self.lease_ms) {
            errors.push(format!("lease_ms must be between 100 and 3600000, got {}", self.lease_ms));
        }
        if let Err(e) = self.query.validate() {
            errors.push(e);
        }
        if !self.webui.listen.is_empty() && self.webui.listen.parse::<SocketAddr>().is_err() {
            errors.push(format!("webui.listen must be host:port or empty, got {:?}", self.webui.listen));
        }
        if let Some(h) = self.webui.allowed_hosts.iter().find(|h| h.is_empty() || h.contains([':', '/', ' '])) {
            errors.push(format!("webui.allowed_hosts entries are host names without a port, got {h:?}"));
        }
        let tls = &self.tls;
        if tls.enabled() || tls.key_file.is_some() || tls.ca_file.is_some() {
            for (name, file) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file), ("ca_file", &tls.ca_file)]
            {
                match file {
                    None => errors.push(format!(
                        "tls.{name} is missing: TLS needs cert_file, key_file and ca_file together (`silo ctl cert` makes a dev set)"
                    )),
                    Some(f) if !f.is_file() => errors.push(format!("tls.{name} {} is not a readable file", f.display())),
                    Some(_) => {}
                }
            }
        }
        // One reply (or one IPC message) must fit a gRPC message with room for framing.
        let result_max = limits::GRPC_MESSAGE_BYTES_MAX - (1 << 20);
        if self.query.max_result_bytes > result_max {
            errors.push(format!(
                "query.max_result_bytes must be at most {result_max} (one gRPC message), got {}",
                self.query.max_result_bytes
            ));
        }
        if self.retention_ms == Some(0) {
            errors.push("retention_ms must be greater than 0 (omit it to keep finished jobs)".to_string());
        }
        let r = &self.raft;
        if r.heartbeat_interval_ms == 0 || r.election_timeout_min_ms < 2 * r.heartbeat_interval_ms {
            errors.push(
                "raft.election_timeout_min_ms must be at least twice raft.heartbeat_interval_ms (> 0)".to_string(),
            );
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            errors.push("raft.election_timeout_max_ms must exceed raft.election_timeout_min_ms".to_string());
        }
        if !(1..=64).contains(&r.proposals_in_flight) {
            errors.push(format!("raft.proposals_in_flight must be between 1 and 64, got {}", r.proposals_in_flight));
        }
        if r.proposal_timeout_ms < 100 {
            errors.push(format!("raft.proposal_timeout_ms must be at least 100, got {}", r.proposal_timeout_ms));
        }
        if r.max_payload_entries == 0 {
            errors.push("raft.max_payload_entries must be greater than 0".to_string());
        }
        if !(1..=65_536).contains(&r.snapshot_chunk_kb) {
            errors.push(format!("raft.snapshot_chunk_kb must be between 1 and 65536, got {}", r.snapshot_chunk_kb));
        }
        if r.snapshot_logs_since_last == 0 {
            errors.push("raft.snapshot_logs_since_last must be greater than 0".to_string());
        }
        let st = &self.storage;
        if !(8..=1 << 20).contains(&st.block_cache_mb) {
            errors.push(format!("storage.block_cache_mb must be between 8 and 1048576, got {}", st.block_cache_mb));
        }
        if !(1..=4096).contains(&st.write_buffer_mb) {
            errors.push(format!("storage.write_buffer_mb must be between 1 and 4096, got {}", st.write_buffer_mb));
        }
        if st.write_buffers_mb < 2 * st.write_buffer_mb {
            errors.push(format!(
                "storage.write_buffers_mb must be at least twice storage.write_buffer_mb ({}), got {}",
                st.write_buffer_mb, st.write_buffers_mb
            ));
        }
        if !(1..=1024).contains(&st.block_size_kb) {
            errors.push(format!("storage.block_size_kb must be between 1 and 1024, got {}", st.block_size_kb));
        }
        if !(0.0..=64.0).contains(&st.bloom_bits_per_key) {
            errors.push(format!("storage.bloom_bits_per_key must be between 0 and 64, got {}", st.bloom_bits_per_key));
        }
        if !(1..=64).contains(&st.background_jobs) {
            errors.push(format!("storage.background_jobs must be between 1 and 64, got {}", st.background_jobs));
        }
        for (name, value) in [("compression", &st.compression), ("bottommost_compression", &st.bottommost_compression)]
        {
            if !COMPRESSIONS.contains(&value.as_str()) {
                errors.push(format!("storage.{name} must be one of {}, got {value:?}", COMPRESSIONS.join(", ")));
            }
        }
        let ids: std::collections::BTreeSet<u64> = self.cluster.initial_members.iter().map(|m| m.id).collect();
        if ids.len() != self.cluster.initial_members.len() {
            errors.push("cluster.initial_members has duplicate ids".to_string());
        }
        if !self.cluster.initial_members.is_empty() && !ids.contains(&self.node_id) {
            errors.push(format!("cluster.initial_members must include this node ({})", self.node_id));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("invalid configuration:\n  - {}", errors.join("\n  - ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn every_broken_rule_is_named() {
        let mut c = Config { node_id: 0, listen: "nope".into(), num_shards: 0, ..Config::default() };
        c.raft.election_timeout_max_ms = 1;
        c.webui.listen = "localhost".into();
        let e = c.validate().unwrap_err();
        for needle in ["node_id", "listen", "num_shards", "election_timeout_max_ms", "webui.listen"] {
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn toml_round_trip_and_unknown_keys_rejected() {
        let c = Config::from_toml("node_id = 3\n[tenancy]\nenabled = true\n").unwrap();
        assert_eq!(c.node_id, 3);
        assert!(c.tenancy.enabled);
        assert!(Config::from_toml("nodeid = 3").is_err());
    }
}
