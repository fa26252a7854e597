//! Request validation: every field checked before anything is proposed, with a
//! message naming the field and the rule. A request that fails validation
//! writes nothing.
use std::collections::{BTreeMap, HashMap};

use tonic::Status;

use super::convert;
use super::status::invalid;
use crate::limits::*;
use crate::pb::silo as pb;
use crate::state_machine as sm;

/// Job fields as they arrive on the wire (Enqueue, ImportJobs).
pub struct RawJob {
    pub priority: u32,
    pub metadata: HashMap<String, String>,
    pub task_group: String,
    pub start_at_ms: i64,
    pub retry_policy: Option<pb::RetryPolicy>,
    pub payload: Option<pb::SerializedBytes>,
    pub limits: Vec<pb::Limit>,
}

pub fn priority(p: u32) -> Result<u32, Status> {
    if p > PRIORITY_MAX {
        return Err(invalid(format!("priority must be between 0 and {PRIORITY_MAX}")));
    }
    Ok(p)
}

pub fn metadata(m: HashMap<String, String>) -> Result<BTreeMap<String, String>, Status> {
    if m.len() > METADATA_ENTRIES_MAX {
        return Err(invalid(format!("metadata has too many entries (max {METADATA_ENTRIES_MAX})")));
    }
    for (k, v) in &m {
        if k.chars().count() >= METADATA_KEY_CHARS_LIMIT {
            return Err(invalid(format!("metadata key too long (must be < {METADATA_KEY_CHARS_LIMIT} chars)")));
        }
        if v.len() >= METADATA_VALUE_BYTES_LIMIT {
            return Err(invalid("metadata value too long (must be < u16::MAX bytes)"));
        }
    }
    Ok(m.into_iter().collect())
}

pub fn task_group(g: &str) -> Result<(), Status> {
    if g.is_empty() {
        return Err(invalid("task_group is required"));
    }
    if g.chars().count() > TASK_GROUP_CHARS_MAX {
        return Err(invalid(format!("task_group too long (must be <= {TASK_GROUP_CHARS_MAX} chars)")));
    }
    Ok(())
}

pub fn job_id(id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(invalid("id is required"));
    }
    if id.len() > JOB_ID_BYTES_MAX {
        return Err(invalid(format!("id too long (must be <= {JOB_ID_BYTES_MAX} bytes)")));
    }
    Ok(())
}

pub fn worker_id(id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(invalid("worker_id is required"));
    }
    if id.len() > WORKER_ID_BYTES_MAX {
        return Err(invalid(format!("worker_id too long (must be <= {WORKER_ID_BYTES_MAX} bytes)")));
    }
    Ok(())
}

pub fn task_id(id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(invalid("task_id is required"));
    }
    if id.len() > JOB_ID_BYTES_MAX {
        return Err(invalid("task_id too long"));
    }
    Ok(())
}

/// MessagePack nil: what an absent or empty payload is stored as.
pub const MSGPACK_NIL: u8 = 0xc0;

/// A job payload: at most `max_bytes`. An absent or zero-byte payload is
/// stored as MessagePack nil (`0xc0`), so every worker can decode what it is
/// handed: zero bytes are not a MessagePack value, and Silo's reference worker
/// throws on them and drops the rest of its LeaseTasks batch.
pub fn payload(p: Option<pb::SerializedBytes>, max_bytes: usize) -> Result<Vec<u8>, Status> {
    let bytes = convert::bytes(p);
    if bytes.len() > max_bytes {
        return Err(invalid(format!("payload too large: {} bytes (max {max_bytes})", bytes.len())));
    }
    if bytes.is_empty() {
        return Ok(vec![MSGPACK_NIL]);
    }
    Ok(bytes)
}

pub fn blob(what: &str, b: Option<pb::SerializedBytes>) -> Result<Vec<u8>, Status> {
    let bytes = convert::bytes(b);
    if bytes.len() > RESULT_BYTES_MAX {
        return Err(invalid(format!("{what} too large: {} bytes (max {RESULT_BYTES_MAX})", bytes.len())));
    }
    Ok(bytes)
}

pub fn retry_policy(p: Option<pb::RetryPolicy>) -> Result<Option<sm::RetryPolicy>, Status> {
    let Some(p) = p else { return Ok(None) };
    for (field, v) in [("initial_interval_ms", p.initial_interval_ms), ("max_interval_ms", p.max_interval_ms)] {
        if v < 0 {
            return Err(invalid(format!("retry_policy.{field} must be >= 0")));
        }
        if v > INTERVAL_MS_MAX {
            return Err(invalid(format!("retry_policy.{field} must be <= {INTERVAL_MS_MAX} (one year), got {v}")));
        }
    }
    if !p.backoff_factor.is_finite() || !(0.0..=BACKOFF_FACTOR_MAX).contains(&p.backoff_factor) {
        return Err(invalid(format!(
            "retry_policy.backoff_factor must be a finite number between 0 and {BACKOFF_FACTOR_MAX}"
        )));
    }
    if p.retry_count > RETRIES_MAX {
        return Err(invalid(format!("retry_policy.retry_count must be <= {RETRIES_MAX}")));
    }
    Ok(Some(sm::RetryPolicy {
        retry_count: p.retry_count,
        initial_interval_ms: p.initial_interval_ms,
        max_interval_ms: p.max_interval_ms,
        randomize_interval: p.randomize_interval,
        backoff_factor: p.backoff_factor,
    }))
}

/// Limits in order; entries without a oneof member are dropped (reference
/// behaviour), unknown rate-limit algorithms mean token bucket.
pub fn limits(ls: Vec<pb::Limit>) -> Result<Vec<sm::Limit>, Status> {
    use pb::limit::Limit as L;
    let mut out = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        let Some(l) = l.limit else { continue };
        let limit = match l {
            L::Concurrency(c) => {
                limit_key(i, &c.key)?;
                if !(1..=MAX_CONCURRENCY_MAX).contains(&c.max_concurrency) {
                    return Err(invalid(format!(
                        "limits[{i}].max_concurrency must be between 1 and {MAX_CONCURRENCY_MAX} (0 would never run)"
                    )));
                }
                sm::Limit::Concurrency { key: c.key, max_concurrency: c.max_concurrency }
            }
            L::FloatingConcurrency(f) => {
                limit_key(i, &f.key)?;
                if !(0..=INTERVAL_MS_MAX).contains(&f.refresh_interval_ms) {
                    return Err(invalid(format!(
                        "limits[{i}].refresh_interval_ms must be between 0 and {INTERVAL_MS_MAX}"
                    )));
                }
                if f.default_max_concurrency > MAX_CONCURRENCY_MAX {
                    return Err(invalid(format!(
                        "limits[{i}].default_max_concurrency must be <= {MAX_CONCURRENCY_MAX}"
                    )));
                }
                sm::Limit::FloatingConcurrency {
                    key: f.key,
                    default_max_concurrency: f.default_max_concurrency,
                    refresh_interval_ms: f.refresh_interval_ms,
                    metadata: metadata(f.metadata)?,
                }
            }
            L::RateLimit(r) => {
                limit_key(i, &r.name)?;
                if r.unique_key.len() > LIMIT_KEY_BYTES_MAX {
                    return Err(invalid(format!(
                        "limits[{i}].unique_key too long: {} bytes (must be <= {LIMIT_KEY_BYTES_MAX})",
                        r.unique_key.len()
                    )));
                }
                if r.limit <= 0 {
                    return Err(invalid(format!("limits[{i}].limit must be > 0 (a limit of 0 never lets a job run)")));
                }
                if !(1..=INTERVAL_MS_MAX).contains(&r.duration_ms) {
                    return Err(invalid(format!("limits[{i}].duration_ms must be between 1 and {INTERVAL_MS_MAX}")));
                }
                if r.hits < 0 || i64::from(r.hits) > r.limit {
                    return Err(invalid(format!(
                        "limits[{i}].hits must be between 0 and the limit ({}); more could never pass",
                        r.limit
                    )));
                }
                let rp = r.retry_policy.unwrap_or(pb::RateLimitRetryPolicy {
                    initial_backoff_ms: 100,
                    max_backoff_ms: 30_000,
                    backoff_multiplier: 2.0,
                    max_retries: 0,
                });
                for (field, v) in [("initial_backoff_ms", rp.initial_backoff_ms), ("max_backoff_ms", rp.max_backoff_ms)]
                {
                    if !(0..=INTERVAL_MS_MAX).contains(&v) {
                        return Err(invalid(format!(
                            "limits[{i}].retry_policy.{field} must be between 0 and {INTERVAL_MS_MAX}, got {v}"
                        )));
                    }
                }
                if !rp.backoff_multiplier.is_finite() || !(0.0..=BACKOFF_FACTOR_MAX).contains(&rp.backoff_multiplier) {
                    return Err(invalid(format!(
                        "limits[{i}].retry_policy.backoff_multiplier must be finite and between 0 and {BACKOFF_FACTOR_MAX}"
                    )));
                }
                if rp.max_retries > RETRIES_MAX {
                    return Err(invalid(format!("limits[{i}].retry_policy.max_retries must be <= {RETRIES_MAX}")));
                }
                sm::Limit::RateLimit(sm::RateLimit {
                    name: r.name,
                    unique_key: r.unique_key,
                    limit: r.limit,
                    duration_ms: r.duration_ms,
                    hits: r.hits,
                    algorithm: if r.algorithm == 1 { 1 } else { 0 },
                    behavior: r.behavior,
                    retry_initial_backoff_ms: rp.initial_backoff_ms,
                    retry_max_backoff_ms: rp.max_backoff_ms,
                    retry_backoff_multiplier: rp.backoff_multiplier,
                    retry_max_retries: rp.max_retries,
                })
            }
        };
        out.push(limit);
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, l) in out.iter().enumerate() {
        let key = match l {
            sm::Limit::Concurrency { key, .. } => (false, key),
            sm::Limit::FloatingConcurrency { key, .. } => (true, key),
            sm::Limit::RateLimit(_) => continue,
        };
        if !seen.insert(key) {
            return Err(invalid(format!(
                "limits[{i}] repeats concurrency key {:?} (each key at most once per job)",
                key.1
            )));
        }
    }
    if out.len() > LIMITS_PER_JOB_MAX {
        return Err(invalid(format!("too many limits (max {LIMITS_PER_JOB_MAX})")));
    }
    Ok(out)
}

fn limit_key(i: usize, key: &str) -> Result<(), Status> {
    if key.is_empty() {
        return Err(invalid(format!("limits[{i}] key is required")));
    }
    if key.len() > LIMIT_KEY_BYTES_MAX {
        return Err(invalid(format!("limits[{i}] key too long (must be <= {LIMIT_KEY_BYTES_MAX} bytes)")));
    }
    Ok(())
}

pub fn outcome(o: Option<pb::report_outcome_request::Outcome>) -> Result<sm::Outcome, Status> {
    use pb::report_outcome_request::Outcome as O;
    match o {
        None => Err(invalid("missing outcome")),
        Some(O::Success(b)) => Ok(sm::Outcome::Success { result: blob("result", Some(b))? }),
        Some(O::Failure(f)) => {
            if f.code.len() > FAILURE_CODE_BYTES_MAX {
                return Err(invalid(format!("failure.code too long (must be <= {FAILURE_CODE_BYTES_MAX} bytes)")));
            }
            Ok(sm::Outcome::Failure { code: f.code, data: blob("failure.data", f.data)? })
        }
        Some(O::Cancelled(_)) => Ok(sm::Outcome::Cancelled),
    }
}

/// ReportRefreshOutcome's failure: code and message lengths.
pub fn refresh_failure(code: &str, message: &str) -> Result<(), Status> {
    if code.len() > FAILURE_CODE_BYTES_MAX {
        return Err(invalid(format!("failure.code too long (must be <= {FAILURE_CODE_BYTES_MAX} bytes)")));
    }
    if message.len() > FAILURE_MESSAGE_BYTES_MAX {
        return Err(invalid(format!("failure.message too long (must be <= {FAILURE_MESSAGE_BYTES_MAX} bytes)")));
    }
    Ok(())
}

/// `start_at_ms`: 0 (or any past time) means now; at most [`START_AT_MS_MAX`].
pub fn start_at_ms(ms: i64) -> Result<i64, Status> {
    if ms > START_AT_MS_MAX {
        return Err(invalid(format!("start_at_ms must be <= {START_AT_MS_MAX} (year 9999), got {ms}")));
    }
    Ok(ms)
}
