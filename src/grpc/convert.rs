//! Conversions between wire messages and state-machine types. No rules here:
//! validation lives in `validate.rs`.
use std::collections::{BTreeMap, HashMap};

use crate::pb::silo as pb;
use crate::state_machine::{self as sm, read::JobView, Attempt, AttemptStatus, JobStatus, RefreshView, TaskView};

pub fn bytes(b: Option<pb::SerializedBytes>) -> Vec<u8> {
    match b.and_then(|b| b.encoding) {
        Some(pb::serialized_bytes::Encoding::Msgpack(v)) => v,
        None => Vec::new(),
    }
}

pub fn serialized(v: Vec<u8>) -> pb::SerializedBytes {
    pb::SerializedBytes { encoding: Some(pb::serialized_bytes::Encoding::Msgpack(v)) }
}

pub fn job_status(s: JobStatus) -> pb::JobStatus {
    match s {
        JobStatus::Scheduled => pb::JobStatus::Scheduled,
        JobStatus::Running => pb::JobStatus::Running,
        JobStatus::Succeeded => pb::JobStatus::Succeeded,
        JobStatus::Failed => pb::JobStatus::Failed,
        JobStatus::Cancelled => pb::JobStatus::Cancelled,
    }
}

fn attempt_status(s: AttemptStatus) -> pb::AttemptStatus {
    match s {
        AttemptStatus::Running => pb::AttemptStatus::Running,
        AttemptStatus::Succeeded => pb::AttemptStatus::Succeeded,
        AttemptStatus::Failed => pb::AttemptStatus::Failed,
        AttemptStatus::Cancelled => pb::AttemptStatus::Cancelled,
    }
}

pub fn retry_policy_to_pb(p: &sm::RetryPolicy) -> pb::RetryPolicy {
    pb::RetryPolicy {
        retry_count: p.retry_count,
        initial_interval_ms: p.initial_interval_ms,
        max_interval_ms: p.max_interval_ms,
        randomize_interval: p.randomize_interval,
        backoff_factor: p.backoff_factor,
    }
}

pub fn metadata_to_pb(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub fn limit_to_pb(l: &sm::Limit) -> pb::Limit {
    use pb::limit::Limit as L;
    let inner = match l {
        sm::Limit::Concurrency { key, max_concurrency } => {
            L::Concurrency(pb::ConcurrencyLimit { key: key.clone(), max_concurrency: *max_concurrency })
        }
        sm::Limit::FloatingConcurrency { key, default_max_concurrency, refresh_interval_ms, metadata } => {
            L::FloatingConcurrency(pb::FloatingConcurrencyLimit {
                key: key.clone(),
                default_max_concurrency: *default_max_concurrency,
                refresh_interval_ms: *refresh_interval_ms,
                metadata: metadata_to_pb(metadata),
            })
        }
        sm::Limit::RateLimit(r) => L::RateLimit(pb::GubernatorRateLimit {
            name: r.name.clone(),
            unique_key: r.unique_key.clone(),
            limit: r.limit,
            duration_ms: r.duration_ms,
            hits: r.hits,
            algorithm: r.algorithm,
            behavior: r.behavior,
            retry_policy: Some(pb::RateLimitRetryPolicy {
                initial_backoff_ms: r.retry_initial_backoff_ms,
                max_backoff_ms: r.retry_max_backoff_ms,
                backoff_multiplier: r.retry_backoff_multiplier,
                max_retries: r.retry_max_retries,
            }),
        }),
    };
    pb::Limit { limit: Some(inner) }
}

fn attempt_to_pb(job_id: &str, a: Attempt) -> pb::JobAttempt {
    pb::JobAttempt {
        job_id: job_id.to_string(),
        attempt_number: a.attempt_number,
        task_id: a.task_id,
        status: attempt_status(a.status) as i32,
        started_at_ms: a.started_at_ms,
        finished_at_ms: a.finished_at_ms,
        result: a.result.map(serialized),
        error_code: a.error_code,
        error_data: a.error_data.map(serialized),
    }
}

pub fn job_to_pb(v: JobView) -> pb::GetJobResponse {
    let job = v.job;
    pb::GetJobResponse {
        priority: job.priority,
        enqueue_time_ms: job.enqueue_time_ms,
        payload: Some(serialized(v.payload)),
        retry_policy: job.retry_policy.as_ref().map(retry_policy_to_pb),
        limits: job.limits.iter().map(limit_to_pb).collect(),
        metadata: metadata_to_pb(&job.metadata),
        status: job_status(job.status) as i32,
        status_changed_at_ms: job.status_changed_at_ms,
        attempts: v.attempts.into_iter().map(|a| attempt_to_pb(&job.key.id, a)).collect(),
        next_attempt_starts_after_ms: v.next_attempt_starts_after_ms,
        task_group: job.task_group,
        result: v.result.map(serialized),
        id: job.key.id,
    }
}

/// Tenant as sent to workers: absent for the default tenant `-`.
pub fn wire_tenant(tenant: &str) -> Option<String> {
    (tenant != super::DEFAULT_TENANT).then(|| tenant.to_string())
}

pub fn task_to_pb(t: TaskView, shard_id: String) -> pb::Task {
    pb::Task {
        id: t.task_id,
        job_id: t.job.id,
        tenant_id: wire_tenant(&t.job.tenant),
        attempt_number: t.attempt_number,
        relative_attempt_number: t.relative_attempt_number,
        is_last_attempt: t.is_last_attempt,
        metadata: metadata_to_pb(&t.metadata),
        limits: t.limits.iter().map(limit_to_pb).collect(),
        payload: Some(serialized(t.payload)),
        priority: t.priority,
        shard: shard_id,
        task_group: t.task_group,
        lease_ms: t.lease_ms,
    }
}

pub fn refresh_task_to_pb(t: RefreshView, shard_id: String) -> pb::RefreshFloatingLimitTask {
    pb::RefreshFloatingLimitTask {
        id: t.task_id,
        queue_key: t.queue_key,
        current_max_concurrency: t.current_max_concurrency,
        last_refreshed_at_ms: t.last_refreshed_at_ms,
        metadata: metadata_to_pb(&t.metadata),
        lease_ms: t.lease_ms,
        shard: shard_id,
        task_group: t.task_group,
        tenant_id: wire_tenant(&t.owner.tenant),
    }
}

/// A bind parameter as DataFusion's value (PROTOCOL §5.1 QueryParameter);
/// a parameter without a value is INVALID_ARGUMENT (SEMANTICS §14).
pub fn query_parameter(p: pb::QueryParameter) -> Result<datafusion::common::ScalarValue, tonic::Status> {
    use datafusion::common::ScalarValue as S;
    use pb::query_parameter::Value as V;
    Ok(match p.value {
        None => return Err(tonic::Status::invalid_argument("query parameter is missing a value")),
        Some(V::BoolValue(b)) => S::Boolean(Some(b)),
        Some(V::Int64Value(i)) => S::Int64(Some(i)),
        Some(V::Uint64Value(u)) => S::UInt64(Some(u)),
        Some(V::Float64Value(f)) => S::Float64(Some(f)),
        Some(V::StringValue(s)) => S::Utf8(Some(s)),
        Some(V::BytesValue(b)) => S::Binary(Some(b)),
        Some(V::NullValue(_)) => S::Null,
    })
}
