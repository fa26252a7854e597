//! (c) `no-double-lease`: a task, and an attempt of a job, is handed to one
//! worker once, and never after the job has moved on to a later attempt.
//!
//! The server's rules behind this (SEMANTICS §6 in the silo repo): LeaseTasks
//! turns a job's pending attempt into a running one with a fresh task id; a
//! job has at most one running attempt; a new attempt (retry or restart)
//! always gets a higher attempt number; once a later attempt exists, the
//! earlier attempt's lease is gone and its heartbeats and reports are refused.
//!
//! Rules (times in ms; "delivered" = the Lease op's ok completion time):
//!
//! - `task-granted-twice`: no task id appears in two grants (in any ok Lease
//!   ops, or twice in one).
//! - `attempt-granted-twice`: no (job id, attempt) appears in two grants.
//! - `stale-grant`: per job, a grant of attempt a is not delivered after a
//!   grant of a later attempt b > a of the same job was delivered (the lease
//!   was dead on arrival; the worker would run the job a second time).
//! - `stale-attempt-accepted`: no heartbeat or report of attempt a is ok if it
//!   was invoked after a Lease op that granted a later attempt b > a of the
//!   same job had completed (the job had been handed to another worker).
//! - `lease-dead-on-arrival`: a heartbeat or report of a task invoked within a
//!   quarter of the lease length after its grant was delivered is not refused
//!   with "lease not found". Nothing but the worker's own report or the
//!   lease's expiry ends a lease, and a lease handed out has most of its
//!   length left (its clock starts when the grant applies on the leader,
//!   before delivery, and a new leader only ever extends leases), so such a refusal
//!   means the lease was delivered dead, or expired early (e.g. on a leader
//!   whose wall clock jumped). Unless the refusal came a whole lease length
//!   or more after delivery: a call held up that long (by a frozen or cut-off
//!   node) reached the cluster after the lease had rightly expired.
use std::collections::{BTreeMap, HashMap};

use crate::history::Op;

use super::{CheckContext, Facts, GrantAt, Verdict};

/// The checker's name in its [`Verdict`].
pub const NAME: &str = "no-double-lease";

/// Runs the `no-double-lease` checker on `history`; see the module doc.
pub fn check(history: &[Op], ctx: &CheckContext) -> Verdict {
    check_facts(&Facts::new(history), ctx)
}

pub(crate) fn check_facts(facts: &Facts<'_>, ctx: &CheckContext) -> Verdict {
    let mut v = Verdict::new(NAME);

    // (1) task ids, (2) (job, attempt).
    let mut by_task: HashMap<&str, &GrantAt<'_>> = HashMap::new();
    let mut by_attempt: HashMap<(&str, u32), &GrantAt<'_>> = HashMap::new();
    for g in &facts.grants {
        let job = g.grant.job_id.as_str();
        if let Some(first) = by_task.insert(g.grant.task_id.as_str(), g) {
            v.error(format!(
                "task-granted-twice: task {}: granted for job {} {} and for job {job} {}",
                g.grant.task_id,
                first.grant.job_id,
                first.describe(),
                g.describe()
            ));
        }
        if let Some(first) = by_attempt.insert((job, g.grant.attempt), g) {
            v.error(format!(
                "attempt-granted-twice: job {job} attempt {}: {} and {}",
                g.grant.attempt,
                first.describe(),
                g.describe()
            ));
        }
    }

    // Grants per job, in delivery order.
    let mut per_job: BTreeMap<&str, Vec<&GrantAt<'_>>> = BTreeMap::new();
    for g in &facts.grants {
        per_job.entry(g.grant.job_id.as_str()).or_default().push(g);
    }
    for list in per_job.values_mut() {
        list.sort_by(|a, b| a.delivered_ms.total_cmp(&b.delivered_ms));
    }

    // (3) a grant of attempt a delivered after a grant of b > a. Sweep in
    // delivery order with the highest attempt delivered strictly earlier.
    for (&job, list) in &per_job {
        let mut best: Option<&GrantAt<'_>> = None; // highest attempt delivered before the current time
        let mut i = 0;
        while i < list.len() {
            let t = list[i].delivered_ms;
            let mut j = i;
            while j < list.len() && list[j].delivered_ms == t {
                if let Some(b) = best.filter(|b| b.grant.attempt > list[j].grant.attempt) {
                    let g = list[j];
                    let how = if g.lease.inv_ms() > b.delivered_ms { "granted" } else { "delivered" };
                    v.error(format!(
                        "stale-grant: job {job}: {} {how} after the later attempt's {} (the lease was dead on arrival; lease length {} ms)",
                        g.describe(),
                        b.describe(),
                        ctx.lease_ms
                    ));
                }
                j += 1;
            }
            for g in &list[i..j] {
                if best.is_none_or(|b| g.grant.attempt > b.grant.attempt) {
                    best = Some(g);
                }
            }
            i = j;
        }
    }

    // (4) heartbeats and reports of an attempt after a later one was granted.
    // Prefix maxima of the attempt over each job's grants in delivery order.
    let prefix: BTreeMap<&str, Vec<&GrantAt<'_>>> = per_job
        .iter()
        .map(|(&job, list)| {
            let mut out: Vec<&GrantAt<'_>> = Vec::with_capacity(list.len());
            for &g in list {
                let keep = match out.last() {
                    Some(prev) if prev.grant.attempt >= g.grant.attempt => *prev,
                    _ => g,
                };
                out.push(keep);
            }
            (job, out)
        })
        .collect();
    let mut accepted = 0;
    for tc in facts.task_calls.iter().filter(|tc| tc.call.is_ok()) {
        accepted += 1;
        let (Some(list), Some(pre)) = (per_job.get(tc.job_id), prefix.get(tc.job_id)) else { continue };
        // Grants delivered strictly before the call was invoked.
        let n = list.partition_point(|g| g.delivered_ms < tc.call.inv_ms());
        if n == 0 {
            continue;
        }
        let b = pre[n - 1];
        if b.grant.attempt > tc.attempt {
            v.error(format!(
                "stale-attempt-accepted: job {}: {} was accepted, but it was invoked after {} had handed the job on",
                tc.job_id,
                tc.describe(),
                b.describe()
            ));
        }
    }

    // (5) refused as "lease not found" right after delivery.
    let delivered: HashMap<&str, &GrantAt<'_>> = facts.grants.iter().map(|g| (g.grant.task_id.as_str(), g)).collect();
    let early_ms = ctx.lease_ms as f64 / 4.0;
    for tc in facts.task_calls.iter().filter(|tc| tc.call.is_fail()) {
        let refused = tc.call.comp.and_then(|c| c.error.as_deref()).is_some_and(|e| e.contains("lease not found"));
        let Some(g) = delivered.get(tc.task_id) else { continue };
        let after_ms = tc.call.inv_ms() - g.delivered_ms;
        // A call still in flight a whole lease after delivery (its node was
        // frozen or cut off) may rightly find the lease expired: a lease
        // lives by heartbeats that arrive.
        let answered_within_lease = tc.call.comp.is_some_and(|c| c.time_ms - g.delivered_ms < ctx.lease_ms as f64);
        if refused && answered_within_lease && (0.0..early_ms).contains(&after_ms) {
            v.error(format!(
                "lease-dead-on-arrival: job {}: {} was refused \"lease not found\" {after_ms:.0} ms after {} (lease length {} ms)",
                tc.job_id,
                tc.describe(),
                g.describe(),
                ctx.lease_ms
            ));
        }
    }

    v.note(format!(
        "checked {} grants of {} jobs and {accepted} accepted heartbeats/reports",
        facts.grants.len(),
        per_job.len()
    ));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testing::*;
    use crate::history::{Outcome, F};

    const CTX: CheckContext = CheckContext { lease_ms: 10_000 };

    /// Job a granted as attempt 1 to process 1, which crashes; the lease
    /// expires and attempt 2 goes to process 2.
    fn retried() -> H {
        H::new()
            .call(9, F::Enqueue, enq(Some("a"), "9:0"), 0.0, 5.0)
            .invoke(1, F::Lease, lease(vec![]), 10.0)
            .ok(1, lease(vec![grant("a", "t1", 1, "9:0")]), 15.0)
            .call(1, F::Heartbeat, hb("a", "t1", 1), 20.0, 25.0)
            .invoke(2, F::Lease, lease(vec![]), 20_000.0)
            .ok(2, lease(vec![grant("a", "t2", 2, "9:0")]), 20_005.0)
    }

    /// Job a leased to process 1 at 15 ms; its heartbeat, invoked at
    /// `invoked` ms, is refused ("lease not found") at `answered` ms.
    fn heartbeat_refused(invoked: f64, answered: f64) -> H {
        H::new()
            .call(9, F::Enqueue, enq(Some("a"), "9:0"), 0.0, 5.0)
            .invoke(1, F::Lease, lease(vec![]), 10.0)
            .ok(1, lease(vec![grant("a", "t1", 1, "9:0")]), 15.0)
            .invoke(1, F::Heartbeat, hb("a", "t1", 1), invoked)
            .fail_with(1, answered, "NotFound: lease not found")
    }

    #[test]
    fn a_lease_refused_right_after_delivery_was_dead_on_arrival() {
        assert_rule(&check(&heartbeat_refused(40.0, 45.0).build(), &CTX), "lease-dead-on-arrival");
        // Refused after most of the lease has gone: an expiry, not a fault.
        assert_valid(&check(&heartbeat_refused(12_000.0, 12_005.0).build(), &CTX));
        // Invoked right away but answered only after the lease length (the
        // node it went to was frozen meanwhile): an expiry, not a fault.
        assert_valid(&check(&heartbeat_refused(40.0, 10_100.0).build(), &CTX));
    }

    #[test]
    fn valid_history_passes() {
        let h = retried()
            .call(2, F::Heartbeat, hb("a", "t2", 2), 20_010.0, 20_015.0)
            // The crashed worker comes back late: refused.
            .invoke(1, F::Report, report("a", "t1", 1, Outcome::Success), 20_012.0)
            .fail(1, 20_014.0)
            // Concurrent with the second grant: could have been accepted first.
            .call(3, F::Heartbeat, hb("a", "t1", 1), 20_001.0, 20_020.0)
            .call(2, F::Report, report("a", "t2", 2, Outcome::Success), 20_030.0, 20_035.0);
        assert_valid(&check(&h.build(), &CTX));
    }

    #[test]
    fn task_granted_twice() {
        let h = H::new()
            .call(9, F::Enqueue, enq(Some("a"), "9:0"), 0.0, 5.0)
            .invoke(1, F::Lease, lease(vec![]), 10.0)
            .ok(1, lease(vec![grant("a", "t1", 1, "9:0")]), 15.0)
            .invoke(2, F::Lease, lease(vec![]), 10.0)
            .ok(2, lease(vec![grant("a", "t1", 2, "9:0")]), 16.0);
        assert_rule(&check(&h.build(), &CTX), "task-granted-twice");
        // Twice in one Lease op.
        let h = H::new()
            .call(9, F::Enqueue, enq(Some("a"), "9:0"), 0.0, 5.0)
            .invoke(1, F::Lease, lease(vec![]), 10.0)
            .ok(1, lease(vec![grant("a", "t1", 1, "9:0"), grant("a", "t1", 1, "9:0")]), 15.0);
        assert_rule(&check(&h.build(), &CTX), "task-granted-twice");
    }

    #[test]
    fn attempt_granted_twice() {
        let h = H::new()
            .call(9, F::Enqueue, enq(Some("a"), "9:0"), 0.0, 5.0)
            .invoke(1, F::Lease, lease(vec![]), 10.0)
            .ok(1, lease(vec![grant("a", "t1", 1, "9:0")]), 15.0)
            .invoke(2, F::Lease, lease(vec![]), 12.0)
            .ok(2, lease(vec![grant("a", "t2", 1, "9:0")]), 16.0);
        let v = check(&h.build(), &CTX);
        assert_rule(&v, "attempt-granted-twice");
        assert!(!v.errors.iter().any(|e| e.starts_with("task-granted-twice")));
    }

    #[test]
    fn stale_grant_delivered_after_later_attempt() {
        let h = retried().invoke(3, F::Lease, lease(vec![]), 20_001.0).ok(
            3,
            lease(vec![grant("a", "t1b", 1, "9:0")]),
            20_010.0,
        );
        let v = check(&h.build(), &CTX);
        assert_rule(&v, "stale-grant");
        // Attempt 1 granted twice as well.
        assert_rule(&v, "attempt-granted-twice");
    }

    #[test]
    fn heartbeat_accepted_after_later_attempt_granted() {
        let h = retried().call(1, F::Heartbeat, hb("a", "t1", 1), 20_010.0, 20_015.0);
        assert_rule(&check(&h.build(), &CTX), "stale-attempt-accepted");
        let h = retried().call(1, F::Report, report("a", "t1", 1, Outcome::Failure), 20_010.0, 20_015.0);
        assert_rule(&check(&h.build(), &CTX), "stale-attempt-accepted");
    }
}
