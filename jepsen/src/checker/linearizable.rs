//! (e) `linearizable-reads`: GetJob reads are linearizable against a
//! versioned per-job register.
//!
//! ## The model
//!
//! Each job is a register whose state is (status, attempts, changed_at_ms),
//! or absent. Every state change is a command applied by the Raft state
//! machine, which stamps `changed_at_ms` with the leader's clock; the state
//! machine's clock never goes backwards and `attempts` never decreases, so the
//! *version* `key = (changed_at_ms, attempts)` never decreases, in the order
//! the state machine applies commands, as long as the job exists (DeleteJob
//! removes it). GetJob returns the whole state, version included.
//!
//! ## Why this check is a Wing–Gong search with one candidate
//!
//! Wing & Gong's linearizability check searches for a total order of the
//! operations that (i) respects real time — if op A completed before op B was
//! invoked, A comes first — and (ii) is a legal sequential history of the
//! model. In general that search is exponential: many orders respect (i) and
//! each must be replayed. Here every read names the version it observed, and
//! versions are totally ordered and monotone in the model, so in any legal
//! sequential history the reads of one job must appear in non-decreasing
//! version order (with the writes that created those versions in between).
//! That fixes the order of the reads up to reads of the same version, which
//! commute (they return the same state). So there is a single candidate order
//! to test, and it exists iff no real-time edge contradicts it: for reads r1
//! completed before r2 was invoked, `key(r2) >= key(r1)`. Checking all such
//! pairs is polynomial; with a prefix maximum over reads sorted by completion
//! time it is O(k log k) per job with k reads.
//!
//! Writes are not given versions by the history (their ok answers carry none),
//! so they enter the check as the constraints an acknowledged write imposes on
//! every read that starts after it completed: the write is then in the past
//! of the read, so the read's version must include it. This is exactly what a
//! Wing–Gong search would conclude for these operations, since a write that
//! completed before a read was invoked must be linearised before it.
//! Two changes can carry the same version (two status changes in one ms
//! without a new attempt, e.g. a report and a restart); the check accepts
//! equal keys with different statuses, since their order is not observable.
//!
//! ## Rules
//!
//! Only ok, non-stale reads (Read and FinalRead) count. For a job:
//!
//! - `read-went-back`: reads r1 completed before r2 was invoked, both found
//!   the job, and `key(r2) < key(r1)` (lexicographic). Excused when a
//!   non-failed delete could lie between them (the job may have been deleted
//!   and re-created under the same caller id).
//! - `read-lost-job`: r1 found the job, r2 (invoked after r1 completed) says
//!   NotFound, and no non-failed delete was invoked before r2 completed.
//! - `read-missed-enqueue`: a read invoked after an ok enqueue of the job
//!   completed says NotFound, and no non-failed delete was invoked before the
//!   read completed.
//! - `read-missed-attempt`: a read invoked after an ok Lease granting attempt
//!   `a` (or an ok heartbeat or report of attempt `a`) completed shows
//!   `attempts < a`, or NotFound with no non-failed delete invoked before the
//!   read completed.
//! - `read-missed-report`: a read invoked after an ok report (success,
//!   failure or cancelled) of attempt `a` completed shows status Running with
//!   `attempts == a` (attempt a had ended).
use std::collections::{BTreeMap, HashMap};

use crate::history::{Op, Status};

use super::{Call, CheckContext, Facts, ReadAt, Verdict};

/// The checker's name in its [`Verdict`].
pub const NAME: &str = "linearizable-reads";

/// Runs the `linearizable-reads` checker on `history`; see the module doc.
pub fn check(history: &[Op], ctx: &CheckContext) -> Verdict {
    check_facts(&Facts::new(history), ctx)
}

/// A read's version: `(changed_at_ms, attempts)`.
fn key(r: &ReadAt<'_>) -> (i64, u32) {
    (r.changed_at_ms, r.attempts)
}

/// An acknowledged event that shows attempt `attempt` existed by `at_ms`.
#[derive(Debug, Clone)]
struct Seen {
    at_ms: f64,
    attempt: u32,
    what: String,
}

pub(crate) fn check_facts(facts: &Facts<'_>, _ctx: &CheckContext) -> Verdict {
    let mut v = Verdict::new(NAME);

    let mut reads: BTreeMap<&str, Vec<&ReadAt<'_>>> = BTreeMap::new();
    let mut stale = 0;
    for r in &facts.reads {
        if r.stale {
            stale += 1;
        } else {
            reads.entry(r.job_id).or_default().push(r);
        }
    }

    // Earliest ok enqueue completion per job.
    let mut enqueued: HashMap<&str, &Call<'_>> = HashMap::new();
    for e in facts.enqueues.iter().filter(|e| e.call.is_ok()) {
        if let Some(id) = e.job_id {
            let slot = enqueued.entry(id).or_insert(&e.call);
            if e.call.comp_ms() < slot.comp_ms() {
                *slot = &e.call;
            }
        }
    }

    // Attempts known to exist, per job: ok grants, heartbeats and reports.
    let mut seen: HashMap<&str, Vec<Seen>> = HashMap::new();
    for g in &facts.grants {
        seen.entry(g.grant.job_id.as_str()).or_default().push(Seen {
            at_ms: g.delivered_ms,
            attempt: g.grant.attempt,
            what: format!("grant of {}", g.describe()),
        });
    }
    // Earliest ok report completion per (job, attempt).
    let mut reported: HashMap<(&str, u32), (f64, String)> = HashMap::new();
    for tc in facts.task_calls.iter().filter(|tc| tc.call.is_ok()) {
        seen.entry(tc.job_id).or_default().push(Seen {
            at_ms: tc.call.comp_ms(),
            attempt: tc.attempt,
            what: tc.describe(),
        });
        if tc.outcome.is_some() {
            let e = reported.entry((tc.job_id, tc.attempt)).or_insert((f64::INFINITY, String::new()));
            if tc.call.comp_ms() < e.0 {
                *e = (tc.call.comp_ms(), tc.describe());
            }
        }
    }
    // Sorted by time, with the running maximum attempt.
    for list in seen.values_mut() {
        list.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
        for i in 1..list.len() {
            if list[i].attempt < list[i - 1].attempt {
                list[i] = Seen { at_ms: list[i].at_ms, ..list[i - 1].clone() };
            }
        }
    }

    let mut read_count = 0;
    for (&job, list) in &reads {
        read_count += list.len();
        let deletes = facts.deletes_of(job);
        let deleted_before = |ms: f64| deletes.iter().any(|d| d.inv_ms() < ms);

        // Found reads by completion time, with the prefix maximum key.
        let mut found: Vec<&ReadAt<'_>> = list.iter().copied().filter(|r| r.found()).collect();
        found.sort_by(|a, b| a.comp_ms().total_cmp(&b.comp_ms()));
        let mut prefix_max: Vec<&ReadAt<'_>> = Vec::with_capacity(found.len());
        for &r in &found {
            let best = match prefix_max.last() {
                Some(&p) if key(p) >= key(r) => p,
                _ => r,
            };
            prefix_max.push(best);
        }

        for &r2 in list {
            // Found reads completed before r2 was invoked.
            let n = found.partition_point(|r| r.comp_ms() < r2.inv_ms());
            if r2.found() {
                if n > 0 && key(prefix_max[n - 1]) > key(r2) {
                    let r1 = if deletes.is_empty() {
                        Some(prefix_max[n - 1])
                    } else {
                        // Some earlier read, with a higher version, that no
                        // delete separates from r2.
                        found[..n].iter().copied().find(|r1| {
                            key(r1) > key(r2)
                                && !deletes.iter().any(|d| d.inv_ms() < r2.comp_ms() && d.latest_ms() > r1.inv_ms())
                        })
                    };
                    if let Some(r1) = r1 {
                        v.error(format!(
                            "read-went-back: job {job}: {} after {} (version (changed_at, attempts) went from {:?} to {:?})",
                            r2.describe(),
                            r1.describe(),
                            key(r1),
                            key(r2)
                        ));
                    }
                }
            } else if !deleted_before(r2.comp_ms()) {
                // NotFound, no delete: one error per read, the strongest reason.
                if let Some(e) = enqueued.get(job).filter(|e| e.comp_ms() < r2.inv_ms()) {
                    v.error(format!(
                        "read-missed-enqueue: job {job}: {} after enqueue {} {} (no delete invoked)",
                        r2.describe(),
                        e.ops(),
                        e.span()
                    ));
                } else if n > 0 {
                    v.error(format!(
                        "read-lost-job: job {job}: {} after {} (no delete invoked)",
                        r2.describe(),
                        found[0].describe()
                    ));
                } else if let Some(s) = latest_seen(&seen, job, r2.inv_ms()) {
                    v.error(format!(
                        "read-missed-attempt: job {job}: {} after {} (no delete invoked)",
                        r2.describe(),
                        s.what
                    ));
                }
                continue;
            }
            if !r2.found() {
                continue;
            }
            if let Some(s) = latest_seen(&seen, job, r2.inv_ms()) {
                if r2.attempts < s.attempt {
                    v.error(format!(
                        "read-missed-attempt: job {job}: {} after {} (attempt {} existed)",
                        r2.describe(),
                        s.what,
                        s.attempt
                    ));
                }
            }
            if r2.status == Status::Running {
                if let Some((at, what)) = reported.get(&(job, r2.attempts)) {
                    if *at < r2.inv_ms() {
                        v.error(format!(
                            "read-missed-report: job {job}: {} after {} had ended that attempt",
                            r2.describe(),
                            what
                        ));
                    }
                }
            }
        }
    }

    v.note(format!("checked {read_count} non-stale ok reads of {} jobs", reads.len()));
    if stale > 0 {
        v.note(format!("{stale} stale reads skipped"));
    }
    v
}

/// The event with the highest attempt among those of `job` completed before
/// `before_ms` (the lists hold running maxima).
fn latest_seen<'s>(seen: &'s HashMap<&str, Vec<Seen>>, job: &str, before_ms: f64) -> Option<&'s Seen> {
    let list = seen.get(job)?;
    let n = list.partition_point(|s| s.at_ms < before_ms);
    n.checked_sub(1).map(|i| &list[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testing::*;
    use crate::history::{Outcome, Value, F};

    const CTX: CheckContext = CheckContext { lease_ms: 10_000 };

    fn r(h: H, p: i64, id: &str, status: Status, attempts: u32, changed: i64, t: f64) -> H {
        h.invoke(p, F::Read, job(id), t).ok(p, read(id, status, attempts, changed), t + 2.0)
    }

    /// Job a enqueued at [0, 5], leased at [10, 15] (attempt 1), reported at [30, 35].
    fn base() -> H {
        happy_job(H::new(), 1, "a", "1:0", 0.0)
    }

    #[test]
    fn valid_history_passes() {
        let h = base();
        let h = r(h, 2, "a", Status::Scheduled, 0, 3, 1.0); // concurrent with the enqueue
        let h = r(h, 2, "a", Status::Running, 1, 12, 16.0);
        let h = r(h, 3, "a", Status::Running, 1, 12, 31.0); // concurrent with the report
        let h = r(h, 2, "a", Status::Succeeded, 1, 32, 40.0);
        let h = r(h, 3, "a", Status::Succeeded, 1, 32, 41.0);
        // A stale read may lag: not checked.
        let h = h.invoke(4, F::Read, job("a"), 50.0).ok(
            4,
            Value::Read { job_id: "a".into(), status: Status::Running, attempts: 1, changed_at_ms: 12, stale: true },
            51.0,
        );
        // Deleted, then NotFound.
        let h = h.call(5, F::Delete, job("a"), 60.0, 61.0);
        let h = h.invoke(2, F::FinalRead, job("a"), 70.0).ok(2, read("a", Status::NotFound, 0, 0), 71.0);
        let v = check(&h.build(), &CTX);
        assert_valid(&v);
        assert!(v.notes.iter().any(|n| n.contains("1 stale")));
    }

    #[test]
    fn version_going_back() {
        let h = r(base(), 2, "a", Status::Succeeded, 1, 32, 40.0);
        let h = r(h, 3, "a", Status::Running, 1, 12, 45.0);
        let v = check(&h.build(), &CTX);
        assert_rule(&v, "read-went-back");
        // Same changed_at, fewer attempts is also going back.
        let h = r(H::new(), 2, "x", Status::Scheduled, 2, 50, 40.0);
        let h = r(h, 3, "x", Status::Scheduled, 1, 50, 45.0);
        assert_rule(&check(&h.build(), &CTX), "read-went-back");
        // Equal keys, different statuses: accepted.
        let h = r(H::new(), 2, "x", Status::Failed, 1, 50, 40.0);
        let h = r(h, 3, "x", Status::Scheduled, 1, 50, 45.0);
        assert_valid(&check(&h.build(), &CTX));
    }

    #[test]
    fn found_then_not_found_without_delete() {
        let h = r(H::new(), 2, "x", Status::Scheduled, 0, 5, 40.0);
        let h = r(h, 3, "x", Status::NotFound, 0, 0, 45.0);
        assert_rule(&check(&h.build(), &CTX), "read-lost-job");
        // A failed delete does not excuse it.
        let h = r(H::new(), 2, "x", Status::Failed, 0, 5, 40.0).invoke(4, F::Delete, job("x"), 41.0).fail(4, 42.0);
        let h = r(h, 3, "x", Status::NotFound, 0, 0, 45.0);
        assert_rule(&check(&h.build(), &CTX), "read-lost-job");
    }

    #[test]
    fn not_found_after_enqueue() {
        let h = H::new().call(1, F::Enqueue, enq(Some("a"), "1:0"), 0.0, 5.0);
        let bad = r(h, 2, "a", Status::NotFound, 0, 0, 6.0);
        assert_rule(&check(&bad.build(), &CTX), "read-missed-enqueue");
        // Concurrent with the enqueue: fine.
        let h = H::new().call(1, F::Enqueue, enq(Some("a"), "1:0"), 0.0, 5.0);
        let ok = r(h, 2, "a", Status::NotFound, 0, 0, 4.0);
        assert_valid(&check(&ok.build(), &CTX));
    }

    #[test]
    fn attempts_behind_a_grant() {
        let h = r(base(), 2, "a", Status::Scheduled, 0, 3, 16.0);
        assert_rule(&check(&h.build(), &CTX), "read-missed-attempt");
        // Also behind an ok heartbeat of attempt 2 (enqueue answer lost).
        let h = H::new().invoke(1, F::Enqueue, enq(None, "1:0"), 0.0).info(1, 5.0).call(
            1,
            F::Heartbeat,
            hb("s", "t2", 2),
            10.0,
            12.0,
        );
        let bad = r(h, 2, "s", Status::Running, 1, 8, 13.0);
        assert_rule(&check(&bad.build(), &CTX), "read-missed-attempt");
    }

    #[test]
    fn running_after_report() {
        let h = r(base(), 2, "a", Status::Running, 1, 12, 36.0);
        assert_rule(&check(&h.build(), &CTX), "read-missed-report");
        let h = base().call(1, F::Restart, job("a"), 40.0, 41.0);
        let h = h.invoke(1, F::Lease, lease(vec![]), 42.0).ok(1, lease(vec![grant("a", "t2", 2, "1:0")]), 43.0);
        let h = h.call(1, F::Report, report("a", "t2", 2, Outcome::Cancelled), 44.0, 45.0);
        // Running attempt 2 after attempt 2 was reported.
        let h = r(h, 2, "a", Status::Running, 2, 43, 50.0);
        assert_rule(&check(&h.build(), &CTX), "read-missed-report");
    }
}
