//! One file per command. Each file's doc says what happens from every starting
//! status; checks come first and a rejection writes nothing.
pub mod acquire_limits;
pub mod cancel_job;
pub mod delete_job;
pub mod drop_tenant_holders;
pub mod enqueue;
pub mod expedite_job;
pub mod expire_leases;
pub mod grant_leases;
pub mod import_job;
pub mod init_shards;
pub mod lease_job;
pub mod purge_terminal;
pub mod report_outcome;
pub mod report_refresh_outcome;
pub mod reset_all;
pub mod restart_job;
