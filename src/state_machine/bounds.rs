//! The last line of defence against a poison pill: before an op is applied,
//! every string that ends up inside a storage key is checked against what a
//! key can hold (`storage::keys` length-prefixes key strings with a u16).
//! An op that breaks a bound is rejected as a value, identically on every
//! replica, and changes nothing; a panic in apply stays reserved for a broken
//! disk. The gRPC edge (`grpc::validate`) enforces much tighter, documented
//! limits first, so in practice only a bug there, or a log written by an
//! older build, can reach this check.
use super::command::{Op, Outcome, RefreshOutcome};
use super::job::{JobKey, Limit};
use super::outcome::Rejection;

/// Longest string a storage key can hold, in bytes.
pub const KEY_STRING_BYTES_MAX: usize = u16::MAX as usize;

fn key_str(field: &str, s: &str) -> Result<(), Rejection> {
    if s.len() > KEY_STRING_BYTES_MAX {
        return Err(Rejection::Unstorable {
            field: field.to_string(),
            reason: format!("{} bytes, over the {KEY_STRING_BYTES_MAX} a storage key can hold", s.len()),
        });
    }
    Ok(())
}

fn job_key(k: &JobKey) -> Result<(), Rejection> {
    key_str("tenant", &k.tenant)?;
    key_str("id", &k.id)
}

/// Key strings fit in a storage key, and no concurrency key (nor floating
/// key) appears twice in one job: an attempt holds one slot per key, so a
/// repeated key would make its holder records disagree with its count.
fn limits(ls: &[Limit]) -> Result<(), Rejection> {
    let mut seen = std::collections::BTreeSet::new();
    for l in ls {
        match l {
            Limit::Concurrency { key, .. } | Limit::FloatingConcurrency { key, .. } => {
                key_str("limits.key", key)?;
                let floating = matches!(l, Limit::FloatingConcurrency { .. });
                if !seen.insert((floating, key.as_str())) {
                    return Err(Rejection::Unstorable {
                        field: "limits.key".into(),
                        reason: format!("{key:?} appears twice in one job"),
                    });
                }
            }
            Limit::RateLimit(r) => {
                key_str("limits.name", &r.name)?;
                key_str("limits.unique_key", &r.unique_key)?;
            }
        }
    }
    Ok(())
}

/// Checks `op` (and every op of a batch) before it is applied.
pub fn check(op: &Op) -> Result<(), Rejection> {
    match op {
        Op::Enqueue(job) | Op::ImportJob { job, .. } => {
            job_key(&job.key)?;
            key_str("task_group", &job.task_group)?;
            limits(&job.limits)
        }
        Op::GrantLeases { worker_id, task_ids, .. } => {
            key_str("worker_id", worker_id)?;
            task_ids.iter().try_for_each(|t| key_str("task_id", t))
        }
        Op::LeaseJob { job, worker_id, .. } => {
            job_key(job)?;
            key_str("worker_id", worker_id)
        }
        Op::ReportOutcome { task_id, outcome } => {
            key_str("task_id", task_id)?;
            match outcome {
                Outcome::Failure { code, .. } => key_str("failure.code", code),
                Outcome::Success { .. } | Outcome::Cancelled => Ok(()),
            }
        }
        Op::ReportRefreshOutcome { task_id, outcome } => {
            key_str("task_id", task_id)?;
            match outcome {
                RefreshOutcome::Failure { code, .. } => key_str("failure.code", code),
                RefreshOutcome::Success { .. } => Ok(()),
            }
        }
        Op::ExpireLeases { leases } => leases.iter().try_for_each(|l| key_str("task_id", &l.task_id)),
        Op::AcquireLimits { task_ids } => task_ids.iter().try_for_each(|t| key_str("task_id", t)),
        Op::CancelJob { job } | Op::RestartJob { job } | Op::ExpediteJob { job } | Op::DeleteJob { job } => {
            job_key(job)
        }
        Op::DropTenantHolders { tenant, .. } => key_str("tenant", tenant),
        Op::InitShards { shards } => shards.iter().try_for_each(|s| key_str("shard id", &s.id)),
        Op::Batch(ops) => ops.iter().try_for_each(check),
        Op::ResetAll | Op::PurgeTerminal { .. } => Ok(()),
    }
}
