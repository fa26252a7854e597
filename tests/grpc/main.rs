//! gRPC tier: every RPC and every error row of SEMANTICS §12 / DECISIONS,
//! against a real `silo` process with a real RocksDB directory.
#[path = "../support/mod.rs"]
mod support;

mod admin;
mod crash;
mod ctl;
mod deploy;
mod fuzz;
mod jobs;
mod limits;
mod observability;
mod query;
mod validation;
mod workers;
