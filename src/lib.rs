//! A Silo-compatible background-job queue replicated with Raft.
//!
//! The path of a request (see ARCHITECTURE.md):
//!
//! ```text
//! grpc (validate, map errors) ─► raft (openraft: replicate, fsync) ─► state_machine (pure apply)
//!                                                                        │ effects
//!                                                                        ▼
//!                                                      broker (leader-only queues and lease clocks)
//! ```
//!
//! - [`state_machine`]: pure, deterministic job lifecycle; knows nothing of IO.
//! - [`storage`]: key layout, value codec, RocksDB.
//! - [`raft`]: the only module that imports openraft.
//! - [`broker`]: the leader's ready queues and lease deadlines.
//! - [`grpc`]: request validation, the one error→status map, service impls.
//! - [`query`]: SQL (DataFusion) over indexes the state machine keeps.
//! - [`webui`]: the console each node serves (askama pages; writes through
//!   the same gRPC methods).
//! - [`server`]: wires a node together: `bind(config)` then `serve(shutdown)`.
//! - [`client`]: a Rust client holding a server list (routing, redirects, retries).
//! - [`ctl`], [`mod@bench`], [`chaos`]: the `silo ctl`, `silo bench` and
//!   `silo chaos` subcommands; [`testkit`]: local clusters of real processes.
pub mod bench;
pub mod broker;
pub mod chaos;
pub mod client;
pub mod config;
pub mod ctl;
pub mod grpc;
pub mod limits;
pub mod query;
pub mod raft;
pub mod server;
pub mod state_machine;
pub mod storage;
pub mod telemetry;
pub mod testkit;
pub mod tls;
pub mod traces;
pub mod webui;

/// Code generated from `proto/`.
pub mod pb {
    pub mod silo {
        #![allow(clippy::all)]
        tonic::include_proto!("silo.v1");
        /// Encoded file descriptors for gRPC reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("silo_descriptor");
    }
    pub mod raft {
        #![allow(clippy::all)]
        tonic::include_proto!("silo.raft.v1");
    }
}

/// A new job id for an Enqueue that names none (the server's edge and our
/// Rust client): a time-ordered UUID, version 7, hyphenated. Ids in time
/// order put a tenant's new jobs next to its newest records in every
/// table, which costs RocksDB less per job than random ids (issue #11,
/// docs/BENCHMARKS.md "Ordered job ids"; DECISIONS #26).
pub fn new_job_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Wall-clock milliseconds since the Unix epoch. Only the leader's edge reads
/// it, to stamp commands; the state machine never does.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Monotonic milliseconds since this process first asked. Lease clocks run
/// on it: a wall clock that jumps forward must not expire leases early, nor
/// one that jumps back keep them for ever.
pub fn monotonic_ms() -> i64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as i64
}
