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

pub fn payload(p: Option<pb::SerializedBytes>, max_bytes: usize) -> Result<Vec<u8>, Status> {
    let bytes = convert::bytes(p);
    if bytes.len() > max_bytes {
        return Err(invalid(format!("payload too large: {} bytes (max {max_bytes})", bytes.len())));
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
    if p.initial_interval_ms < 0 {
        return Err(invalid("retry_policy.initial_interval_ms must be >= 0"));
    }
    if p.max_interval_ms < 0 {
        return Err(invalid("retry_policy.max_interval_ms must be >= 0"));
    }
    if !p.backoff_factor.is_finite() || p.backoff_factor < 0.0 {
        return Err(invalid("retry_policy.backoff_factor must be a finite number >= 0"));
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
                sm::Limit::Concurrency { key: c.key, max_concurrency: c.max_concurrency }
            }
            L::FloatingConcurrency(f) => {
                limit_key(i, &f.key)?;
                if f.refresh_interval_ms < 0 {
                    return Err(invalid(format!("limits[{i}].refresh_interval_ms must be >= 0")));
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
                if r.limit < 0 {
                    return Err(invalid(format!("limits[{i}].limit must be >= 0")));
                }
                if r.duration_ms <= 0 {
                    return Err(invalid(format!("limits[{i}].duration_ms must be > 0")));
                }
                if r.hits < 0 {
                    return Err(invalid(format!("limits[{i}].hits must be >= 0")));
                }
                let rp = r.retry_policy.unwrap_or(pb::RateLimitRetryPolicy {
                    initial_backoff_ms: 100,
                    max_backoff_ms: 30_000,
                    backoff_multiplier: 2.0,
                    max_retries: 0,
                });
                if rp.initial_backoff_ms < 0 || rp.max_backoff_ms < 0 {
                    return Err(invalid(format!("limits[{i}].retry_policy backoffs must be >= 0")));
                }
                if !rp.backoff_multiplier.is_finite() || rp.backoff_multiplier < 0.0 {
                    return Err(invalid(format!(
                        "limits[{i}].retry_policy.backoff_multiplier must be finite and >= 0"
                    )));
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
    if out.len() > LIMITS_PER_JOB_MAX {
        return Err(invalid(format!("too many limits (max {LIMITS_PER_JOB_MAX})")));
    }
    Ok(out)
}

fn limit_key(i: usize, key: &str) -> Result<(), Status> {
    if key.is_empty() {
        return Err(invalid(format!("limits[{i}] key is required")));
    }
    if key.len() > 256 {
        return Err(invalid(format!("limits[{i}] key too long (must be <= 256 bytes)")));
    }
    Ok(())
}

pub fn outcome(o: Option<pb::report_outcome_request::Outcome>) -> Result<sm::Outcome, Status> {
    use pb::report_outcome_request::Outcome as O;
    match o {
        None => Err(invalid("missing outcome")),
        Some(O::Success(b)) => Ok(sm::Outcome::Success { result: blob("result", Some(b))? }),
        Some(O::Failure(f)) => {
            if f.code.len() > 1024 {
                return Err(invalid("failure.code too long (must be <= 1024 bytes)"));
            }
            Ok(sm::Outcome::Failure { code: f.code, data: blob("failure.data", f.data)? })
        }
        Some(O::Cancelled(_)) => Ok(sm::Outcome::Cancelled),
    }
}
