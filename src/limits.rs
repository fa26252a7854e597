//! Every limit the server enforces, as a named constant with its unit last.
//! Validation (`grpc::validate`) and the state machine read these; nothing else
//! hard-codes a bound.

/// Highest (least urgent) job priority; 0 is the most urgent.
pub const PRIORITY_MAX: u32 = 99;
/// Longest task group name, in characters.
pub const TASK_GROUP_CHARS_MAX: usize = 64;
/// Longest tenant id, in characters.
pub const TENANT_CHARS_MAX: usize = 64;
/// Most metadata entries on one job.
pub const METADATA_ENTRIES_MAX: usize = 16;
/// Metadata keys must be shorter than this many characters.
pub const METADATA_KEY_CHARS_LIMIT: usize = 64;
/// Metadata values must be shorter than this many bytes.
pub const METADATA_VALUE_BYTES_LIMIT: usize = u16::MAX as usize;
/// Longest caller-chosen job id, in bytes.
pub const JOB_ID_BYTES_MAX: usize = 512;
/// Longest worker id, in bytes.
pub const WORKER_ID_BYTES_MAX: usize = 512;
/// Default cap on one job payload (configurable with `max_payload_bytes`).
pub const PAYLOAD_BYTES_DEFAULT_MAX: usize = 16 * 1024 * 1024;
/// Cap on one result or error blob reported by a worker.
pub const RESULT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest limit key, rate-limit name or rate-limit unique key, in bytes.
pub const LIMIT_KEY_BYTES_MAX: usize = 256;
/// Longest failure code (ReportOutcome, ReportRefreshOutcome), in bytes.
pub const FAILURE_CODE_BYTES_MAX: usize = 1024;
/// Longest refresh failure message, in bytes.
pub const FAILURE_MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// Latest accepted `start_at_ms` (9999-12-31T23:59:59.999Z): later times
/// mean nothing and would overflow the schedule arithmetic.
pub const START_AT_MS_MAX: i64 = 253_402_300_799_999;
/// Longest retry interval or rate-limit backoff, and longest rate-limit
/// window, in ms (one year).
pub const INTERVAL_MS_MAX: i64 = 365 * 24 * 3600 * 1000;
/// Largest retry backoff factor or rate-limit backoff multiplier.
pub const BACKOFF_FACTOR_MAX: f64 = 1_000.0;
/// Most retries of one job, and most rate-limit re-checks of one attempt.
pub const RETRIES_MAX: u32 = 1_000_000;
/// Most concurrency slots one limit key may have.
pub const MAX_CONCURRENCY_MAX: u32 = 1_000_000;
/// Most limits on one job.
pub const LIMITS_PER_JOB_MAX: usize = 16;
/// Default byte budget of one LeaseTasks reply (configurable with
/// `lease_reply_bytes_max`): well below the 128 MiB receive limit that Silo's
/// client and ours set. Stock gRPC clients accept 4 MiB; lower the budget for
/// those. A grant never exceeds it, except that one task is always granted
/// even if it alone is larger (up to the payload limit).
pub const LEASE_REPLY_BYTES_DEFAULT_MAX: usize = 32 * 1024 * 1024;
/// Most tasks one LeaseTasks call may return.
pub const LEASE_TASKS_MAX: u32 = 1_000;
/// Largest gRPC message accepted or sent (SEMANTICS §1).
pub const GRPC_MESSAGE_BYTES_MAX: usize = 128 * 1024 * 1024;
/// Length of every lease granted to a worker (reference value).
pub const LEASE_MS: i64 = 10_000;
/// Most leases one ExpireLeases command reaps.
pub const EXPIRE_BATCH_MAX: usize = 512;
/// Most finished attempts one imported job may carry.
pub const IMPORT_ATTEMPTS_PER_JOB_MAX: usize = 10_000;
/// Most jobs in one ImportJobs call.
pub const IMPORT_JOBS_MAX: usize = 1_000;
/// Most gated attempts one AcquireLimits command resumes.
pub const GATE_BATCH_MAX: usize = 512;
/// Most terminal jobs one retention purge command deletes.
pub const PURGE_BATCH_MAX: u32 = 1_000;
