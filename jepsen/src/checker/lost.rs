//! (a) `lost-and-phantom`: acknowledged jobs are never lost and never stuck;
//! no job appears that no enqueue could have created.
//!
//! Rules (each error starts with the rule's name):
//!
//! - `lost`: a job whose enqueue returned ok, on which no delete was invoked
//!   (a delete whose completion is `fail` does not count), has no ok
//!   FinalRead, or a FinalRead says NotFound. The final reads run after the
//!   faults healed and the workers drained the queue, so every such job must
//!   still exist and have reached a terminal status.
//! - `stuck`: an ok FinalRead found a job (whatever its enqueue's result) in a
//!   non-terminal status (Scheduled or Running) after the drain.
//! - `phantom`: a job seen in a Lease grant or an ok Read/FinalRead that no
//!   enqueue could have created:
//!   - the grant's token (`"<process>:<op index>"` of the enqueue invoke, see
//!     [`crate::history::Grant::token`]) matches no enqueue invoke;
//!   - or it matches only enqueues whose completion is `fail`;
//!   - or it matches an enqueue whose job id (the caller's id, or the server's
//!     id from an ok) differs from the grant's job id;
//!   - or one token is granted under two different job ids (one enqueue
//!     created two jobs);
//!   - a read found a job whose only enqueues (those naming its id, and those
//!     whose token was granted under its id) definitely failed, or that no
//!     enqueue or grant names at all while no enqueue with a server-chosen id
//!     is still unaccounted for (the reader cannot have guessed such an id).
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::history::{Op, Status};

use super::{CheckContext, Facts, Verdict};

/// The checker's name in its [`Verdict`].
pub const NAME: &str = "lost-and-phantom";

/// Runs the `lost-and-phantom` checker on `history`; see the module doc.
pub fn check(history: &[Op], ctx: &CheckContext) -> Verdict {
    check_facts(&Facts::new(history), ctx)
}

pub(crate) fn check_facts(facts: &Facts<'_>, _ctx: &CheckContext) -> Verdict {
    let mut v = Verdict::new(NAME);

    // Final reads per job, in invoke order.
    let mut finals: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in facts.reads.iter().enumerate() {
        if r.f == crate::history::F::FinalRead {
            finals.entry(r.job_id).or_default().push(i);
        }
    }

    // stuck: any job found by a final read must be terminal (one error per
    // job, in history order).
    let mut stuck: HashSet<&str> = HashSet::new();
    for r in facts.reads.iter().filter(|r| r.f == crate::history::F::FinalRead) {
        if r.found() && !r.status.is_terminal() && stuck.insert(r.job_id) {
            v.error(format!("stuck: job {}: {} after the drain (not terminal)", r.job_id, r.describe()));
        }
    }

    // lost: acknowledged, undeleted jobs must be found by a final read.
    // In enqueue order, each job once.
    let mut acked: Vec<(&str, usize)> = Vec::new();
    let mut acked_set: HashSet<&str> = HashSet::new();
    let mut ok_without_id = 0;
    for (i, e) in facts.enqueues.iter().enumerate() {
        if e.call.is_ok() {
            match e.job_id {
                Some(id) => {
                    if acked_set.insert(id) {
                        acked.push((id, i));
                    }
                }
                None => ok_without_id += 1,
            }
        }
    }
    let mut deleted = 0;
    for &(job, ei) in &acked {
        let e = &facts.enqueues[ei];
        if !facts.deletes_of(job).is_empty() {
            deleted += 1;
            continue;
        }
        let enq = format!("enqueue {} {}", e.call.ops(), e.call.span());
        match finals.get(job) {
            None => v.error(format!("lost: job {job}: {enq} but no final read of it succeeded")),
            Some(idx) => {
                if let Some(&i) = idx.iter().find(|&&i| facts.reads[i].status == Status::NotFound) {
                    v.error(format!("lost: job {job}: {enq}, never deleted, but {}", facts.reads[i].describe()));
                }
            }
        }
    }

    // phantom grants.
    let mut jobs_of_token: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    let mut phantom_jobs: BTreeSet<&str> = BTreeSet::new();
    for g in &facts.grants {
        let (job, token) = (g.grant.job_id.as_str(), g.grant.token.as_str());
        jobs_of_token.entry(token).or_default().insert(job);
        if phantom_jobs.contains(job) {
            continue; // one error per phantom job, not per re-grant
        }
        let what = format!("phantom: job {job}: grant of {} carries token {token}", g.describe());
        let Some(cands) = facts.by_token.get(token) else {
            v.error(format!("{what}, which no enqueue invoked"));
            phantom_jobs.insert(job);
            continue;
        };
        let live: Vec<_> = cands.iter().map(|&i| &facts.enqueues[i]).filter(|e| !e.call.is_fail()).collect();
        if live.is_empty() {
            let e = &facts.enqueues[cands[0]];
            v.error(format!("{what}, whose enqueue {} {} failed", e.call.ops(), e.call.span()));
            phantom_jobs.insert(job);
        } else if !live.iter().any(|e| e.job_id.is_none_or(|id| id == job)) {
            let e = live[0];
            v.error(format!(
                "{what}, whose enqueue {} {} created job {}",
                e.call.ops(),
                e.call.span(),
                e.job_id.unwrap_or("?")
            ));
            phantom_jobs.insert(job);
        }
    }
    let mut tokens: Vec<_> = jobs_of_token.iter().filter(|(_, jobs)| jobs.len() > 1).collect();
    tokens.sort();
    for (token, jobs) in tokens {
        let list: Vec<&str> = jobs.iter().copied().collect();
        v.error(format!("phantom: token {token} (one enqueue) was granted under jobs {}", list.join(", ")));
    }

    // phantom reads: jobs found by a read that no enqueue could have created.
    let pending_server_ids = facts.enqueues.iter().filter(|e| e.job_id.is_none() && !e.call.is_fail()).count();
    let mut tokens_of_job: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for g in &facts.grants {
        tokens_of_job.entry(g.grant.job_id.as_str()).or_default().insert(g.grant.token.as_str());
    }
    let mut read_jobs: BTreeSet<&str> = BTreeSet::new();
    for r in facts.reads.iter().filter(|r| r.found()) {
        if phantom_jobs.contains(r.job_id) || !read_jobs.insert(r.job_id) {
            continue;
        }
        let mut cands: BTreeSet<usize> = facts.enqueues_by_job.get(r.job_id).into_iter().flatten().copied().collect();
        for t in tokens_of_job.get(r.job_id).into_iter().flatten() {
            cands.extend(facts.by_token.get(t).into_iter().flatten().copied());
        }
        if cands.is_empty() {
            if pending_server_ids == 0 {
                v.error(format!("phantom: job {}: {} but no enqueue or grant names this job", r.job_id, r.describe()));
            }
        } else if cands.iter().all(|&i| facts.enqueues[i].call.is_fail()) {
            let e = &facts.enqueues[*cands.iter().next().expect("non-empty")];
            v.error(format!(
                "phantom: job {}: {} but its only enqueue(s) failed, e.g. {} {}",
                r.job_id,
                r.describe(),
                e.call.ops(),
                e.call.span()
            ));
        }
    }

    v.note(format!(
        "checked {} jobs enqueued ok ({} with a delete invoked, not required to exist), {} jobs with an ok final read",
        acked.len(),
        deleted,
        finals.len()
    ));
    v.note(format!("checked {} grants and {} jobs found by reads for phantoms", facts.grants.len(), read_jobs.len()));
    if finals.is_empty() && !acked.is_empty() {
        v.note("the history has no ok final read at all: did the run reach the heal-and-drain phase?".to_string());
    }
    if ok_without_id > 0 {
        v.note(format!("{ok_without_id} ok enqueues carried no job id (harness bug?); not checked"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testing::*;
    use crate::history::{Outcome, F};

    const CTX: CheckContext = CheckContext { lease_ms: 10_000 };

    fn final_ok(h: H, p: i64, id: &str, status: Status, t: f64) -> H {
        h.invoke(p, F::FinalRead, job(id), t).ok(p, read(id, status, 1, 100), t + 1.0)
    }

    #[test]
    fn valid_history_passes() {
        let h = happy_job(H::new(), 1, "a", "1:0", 0.0);
        // A server-id enqueue whose answer was lost; its job is leased by token.
        let h = h
            .invoke(2, F::Enqueue, enq(None, "2:9"), 50.0)
            .info(2, 60.0)
            .invoke(3, F::Lease, lease(vec![]), 70.0)
            .ok(3, lease(vec![grant("srv-1", "t9", 1, "2:9")]), 75.0)
            .call(3, F::Report, report("srv-1", "t9", 1, Outcome::Failure), 80.0, 85.0)
            // A deleted job need not exist at the end.
            .invoke(4, F::Enqueue, enq(None, "4:1"), 90.0)
            .ok(4, enq_ok("d", "4:1"), 95.0)
            .invoke(4, F::Delete, job("d"), 100.0)
            .info(4, 110.0);
        let h = final_ok(h, 5, "a", Status::Succeeded, 200.0);
        let h = final_ok(h, 5, "srv-1", Status::Failed, 210.0);
        let h = final_ok(h, 5, "d", Status::NotFound, 220.0);
        assert_valid(&check(&h.build(), &CTX));
    }

    #[test]
    fn missing_final_read_is_lost() {
        let h = happy_job(H::new(), 1, "a", "1:0", 0.0);
        assert_rule(&check(&h.build(), &CTX), "lost");
    }

    #[test]
    fn not_found_is_lost_unless_deleted() {
        let h = happy_job(H::new(), 1, "a", "1:0", 0.0);
        let bad = final_ok(h, 5, "a", Status::NotFound, 200.0);
        assert_rule(&check(&bad.build(), &CTX), "lost");
        // A delete that failed does not excuse it.
        let h = happy_job(H::new(), 1, "a", "1:0", 0.0).invoke(2, F::Delete, job("a"), 100.0).fail(2, 101.0);
        let bad = final_ok(h, 5, "a", Status::NotFound, 200.0);
        assert_rule(&check(&bad.build(), &CTX), "lost");
    }

    #[test]
    fn non_terminal_final_read_is_stuck() {
        let h = happy_job(H::new(), 1, "a", "1:0", 0.0);
        let bad = final_ok(h, 5, "a", Status::Running, 200.0);
        assert_rule(&check(&bad.build(), &CTX), "stuck");
        // Even when the enqueue's answer was lost.
        let h = H::new().invoke(1, F::Enqueue, enq(Some("b"), "1:0"), 0.0).info(1, 5.0);
        let bad = final_ok(h, 5, "b", Status::Scheduled, 200.0);
        assert_rule(&check(&bad.build(), &CTX), "stuck");
    }

    #[test]
    fn grant_with_unknown_token_is_phantom() {
        let h = H::new().invoke(1, F::Lease, lease(vec![]), 0.0).ok(1, lease(vec![grant("x", "t", 1, "9:9")]), 5.0);
        assert_rule(&check(&h.build(), &CTX), "phantom");
    }

    #[test]
    fn grant_of_failed_enqueue_is_phantom() {
        let h = H::new()
            .invoke(1, F::Enqueue, enq(None, "1:0"), 0.0)
            .fail(1, 5.0)
            .invoke(2, F::Lease, lease(vec![]), 10.0)
            .ok(2, lease(vec![grant("x", "t", 1, "1:0")]), 15.0);
        assert_rule(&check(&h.build(), &CTX), "phantom");
    }

    #[test]
    fn grant_under_another_id_is_phantom() {
        let h = H::new()
            .call(1, F::Enqueue, enq(Some("a"), "1:0"), 0.0, 5.0)
            .invoke(2, F::Lease, lease(vec![]), 10.0)
            .ok(2, lease(vec![grant("b", "t", 1, "1:0")]), 15.0);
        assert_rule(&check(&h.build(), &CTX), "phantom");
    }

    #[test]
    fn one_token_two_jobs_is_phantom() {
        let h = H::new()
            .invoke(1, F::Enqueue, enq(None, "1:0"), 0.0)
            .info(1, 5.0)
            .invoke(2, F::Lease, lease(vec![]), 10.0)
            .ok(2, lease(vec![grant("x", "t1", 1, "1:0"), grant("y", "t2", 1, "1:0")]), 15.0);
        assert_rule(&check(&h.build(), &CTX), "phantom");
    }

    #[test]
    fn read_of_failed_enqueue_is_phantom() {
        let h = H::new()
            .invoke(1, F::Enqueue, enq(Some("a"), "1:0"), 0.0)
            .fail(1, 5.0)
            .invoke(2, F::Read, job("a"), 10.0)
            .ok(2, read("a", Status::Scheduled, 0, 3), 12.0);
        assert_rule(&check(&h.build(), &CTX), "phantom");
    }
}
