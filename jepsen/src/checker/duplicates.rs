//! (b) `no-double-success`: a job succeeds at most once, and a terminal
//! status is left only through RestartJob or DeleteJob.
//!
//! The server's rules behind this (SEMANTICS §6.5, §8.2; `ops/restart_job.rs`):
//! a success report moves the job to Succeeded, which is final: RestartJob
//! refuses a Succeeded job ("job already succeeded") and only moves Failed or
//! Cancelled jobs back to Scheduled; DeleteJob removes a terminal job. So:
//!
//! - `double-success`: per job, at most one success report is accepted (ok),
//!   whatever restarts were tried (the workload never reuses a job id).
//! - `terminal-changed`: for two non-stale ok reads r1, r2 of the same job
//!   (Read or FinalRead) with r1 completed before r2 was invoked, if r1 saw a
//!   terminal status and r2 a different one (NotFound included), a non-failed
//!   delete (or, when r1 saw Failed or Cancelled, a restart) of that job must
//!   have been invoked before r2 completed and completed (end of history when
//!   `info`) after r1 was invoked. Stale reads are skipped: they are not
//!   linearizable by design.
use std::collections::BTreeMap;

use crate::history::{Op, Outcome, Status};

use super::{Call, CheckContext, Facts, TaskCall, Verdict};

/// The checker's name in its [`Verdict`].
pub const NAME: &str = "no-double-success";

/// Runs the `no-double-success` checker on `history`; see the module doc.
pub fn check(history: &[Op], ctx: &CheckContext) -> Verdict {
    check_facts(&Facts::new(history), ctx)
}

/// True when `c` could have taken effect after `after_ms` and before
/// `before_ms`: invoked before `before_ms`, done (or still possible) after
/// `after_ms`.
fn between(c: &Call<'_>, after_ms: f64, before_ms: f64) -> bool {
    c.inv_ms() < before_ms && c.latest_ms() > after_ms
}

pub(crate) fn check_facts(facts: &Facts<'_>, _ctx: &CheckContext) -> Verdict {
    let mut v = Verdict::new(NAME);

    // Successes per job.
    let mut successes: BTreeMap<&str, Vec<&TaskCall<'_>>> = BTreeMap::new();
    for tc in &facts.task_calls {
        if tc.outcome == Some(Outcome::Success) && tc.call.is_ok() {
            successes.entry(tc.job_id).or_default().push(tc);
        }
    }
    let mut total = 0;
    for (&job, list) in successes.iter_mut() {
        total += list.len();
        if list.len() > 1 {
            list.sort_by(|a, b| a.call.comp_ms().total_cmp(&b.call.comp_ms()));
            let all: Vec<String> = list.iter().map(|tc| tc.describe()).collect();
            v.error(format!(
                "double-success: job {job}: {} accepted success reports (Succeeded is final): {}",
                list.len(),
                all.join("; ")
            ));
        }
    }

    // Terminal statuses change only through restart or delete.
    let mut reads: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in facts.reads.iter().enumerate() {
        if !r.stale {
            reads.entry(r.job_id).or_default().push(i);
        }
    }
    let mut pairs_checked = 0usize;
    for (&job, idx) in &reads {
        let deletes: Vec<&Call<'_>> = facts.deletes_of(job).iter().collect();
        let movers: Vec<&Call<'_>> = facts.restarts_of(job).iter().chain(facts.deletes_of(job)).collect();
        for &i1 in idx {
            let r1 = &facts.reads[i1];
            if !r1.status.is_terminal() {
                continue;
            }
            // Only a delete moves a job away from Succeeded.
            let movers = if r1.status == Status::Succeeded { &deletes } else { &movers };
            // Report at most one violation per r1: the first r2 in invoke order.
            for &i2 in idx {
                let r2 = &facts.reads[i2];
                if r2.inv_ms() <= r1.comp_ms() || r2.status == r1.status {
                    continue;
                }
                pairs_checked += 1;
                if !movers.iter().any(|c| between(c, r1.inv_ms(), r2.comp_ms())) {
                    v.error(format!(
                        "terminal-changed: job {job}: {} then {} with no delete (or restart of a failed or cancelled job) invoked between them",
                        r1.describe(),
                        r2.describe()
                    ));
                    break;
                }
            }
        }
    }

    v.note(format!("checked {total} accepted success reports of {} jobs", successes.len()));
    v.note(format!(
        "checked {} jobs' non-stale reads for terminal changes ({pairs_checked} read pairs with a change)",
        reads.len()
    ));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testing::*;
    use crate::history::F;

    const CTX: CheckContext = CheckContext { lease_ms: 10_000 };

    /// Job a: attempt 1 fails for good; a read sees Failed.
    fn failed() -> H {
        H::new()
            .call(1, F::Enqueue, enq(Some("a"), "1:0"), 0.0, 5.0)
            .invoke(1, F::Lease, lease(vec![]), 10.0)
            .ok(1, lease(vec![grant("a", "t1", 1, "1:0")]), 15.0)
            .call(1, F::Report, report("a", "t1", 1, Outcome::Failure), 20.0, 25.0)
            .invoke(2, F::Read, job("a"), 30.0)
            .ok(2, read("a", Status::Failed, 1, 22), 31.0)
    }

    /// Job a: attempt 1 succeeds; a read sees Succeeded.
    fn succeeded() -> H {
        H::new()
            .call(1, F::Enqueue, enq(Some("a"), "1:0"), 0.0, 5.0)
            .invoke(1, F::Lease, lease(vec![]), 10.0)
            .ok(1, lease(vec![grant("a", "t1", 1, "1:0")]), 15.0)
            .call(1, F::Report, report("a", "t1", 1, Outcome::Success), 20.0, 25.0)
            .invoke(2, F::Read, job("a"), 30.0)
            .ok(2, read("a", Status::Succeeded, 1, 22), 31.0)
    }

    #[test]
    fn valid_history_passes() {
        // Failed, restarted (answer lost), attempt 2 succeeds.
        let h = failed()
            .invoke(3, F::Restart, job("a"), 40.0)
            .info(3, 50.0)
            .invoke(2, F::Read, job("a"), 60.0)
            .ok(2, read("a", Status::Scheduled, 1, 45), 61.0)
            .invoke(1, F::Lease, lease(vec![]), 70.0)
            .ok(1, lease(vec![grant("a", "t2", 2, "1:0")]), 75.0)
            .call(1, F::Report, report("a", "t2", 2, Outcome::Success), 80.0, 85.0)
            .invoke(2, F::FinalRead, job("a"), 90.0)
            .ok(2, read("a", Status::Succeeded, 2, 82), 91.0)
            // Same status read again: no change, nothing needed.
            .invoke(2, F::FinalRead, job("a"), 92.0)
            .ok(2, read("a", Status::Succeeded, 2, 82), 93.0);
        assert_valid(&check(&h.build(), &CTX));
    }

    #[test]
    fn a_second_success_is_invalid_even_after_a_restart() {
        let h = succeeded()
            .call(3, F::Restart, job("a"), 40.0, 41.0)
            .invoke(1, F::Lease, lease(vec![]), 70.0)
            .ok(1, lease(vec![grant("a", "t2", 2, "1:0")]), 75.0)
            .call(1, F::Report, report("a", "t2", 2, Outcome::Success), 80.0, 85.0);
        assert_rule(&check(&h.build(), &CTX), "double-success");
    }

    #[test]
    fn terminal_status_changed_without_restart() {
        let h = failed().invoke(2, F::Read, job("a"), 60.0).ok(2, read("a", Status::Scheduled, 1, 45), 61.0);
        assert_rule(&check(&h.build(), &CTX), "terminal-changed");
        // A Succeeded job never goes back, restart or not.
        let h = succeeded().call(3, F::Restart, job("a"), 40.0, 41.0).invoke(2, F::Read, job("a"), 60.0).ok(
            2,
            read("a", Status::Scheduled, 1, 45),
            61.0,
        );
        assert_rule(&check(&h.build(), &CTX), "terminal-changed");
        // NotFound without a delete too; a failed delete does not count.
        let h = failed().invoke(3, F::Delete, job("a"), 40.0).fail(3, 41.0).invoke(2, F::FinalRead, job("a"), 60.0).ok(
            2,
            read("a", Status::NotFound, 0, 0),
            61.0,
        );
        assert_rule(&check(&h.build(), &CTX), "terminal-changed");
        // With an ok delete in between it is fine.
        let h = succeeded().call(3, F::Delete, job("a"), 40.0, 41.0).invoke(2, F::FinalRead, job("a"), 60.0).ok(
            2,
            read("a", Status::NotFound, 0, 0),
            61.0,
        );
        assert_valid(&check(&h.build(), &CTX));
    }
}
