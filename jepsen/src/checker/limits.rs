//! (d) `concurrency-limits`: no more than `max` attempts of jobs sharing a
//! concurrency-limit key run at once.
//!
//! The server's rule (SEMANTICS, concurrency limits, in the silo repo): a job
//! with limit `(key, max)` is granted only while fewer than `max` attempts of
//! the key's jobs hold a slot; the slot is held from the grant until the
//! attempt ends (report, or lease expiry).
//!
//! What the history proves: a granted attempt *certainly* held its slot during
//! `[start, end]` with `start` = the Lease op's ok completion time (the slot
//! was taken at or before it) and `end` = max(start, the latest invoke time
//! among that task's ok heartbeats and its ok report) (each of those was
//! accepted at or after its invoke, while the slot was still held). The job's
//! `(key, max)` comes from its enqueue's invoke value, found by the grant's
//! token (or, failing that, by the job id).
//!
//! Rule `limit-exceeded`: two intervals overlap when each starts strictly
//! before the other ends. At the start `t` of each interval of job J, take S,
//! the intervals of J's key that started at or before `t` and end strictly
//! after it, J's own included: they all held a slot at `t`, so each was
//! admitted while every member of S admitted before it was still held. When
//! all jobs of the key carry the same max M, this is simply: |S| must not
//! exceed M. (Any set of pairwise overlapping intervals all contain the latest
//! start among them, so checking at every start finds every overlap larger
//! than allowed.)
//!
//! When jobs of one key carry different max values, the count a job sees at
//! its admission must not exceed its own max. The admission order inside S
//! is not observed (a grant takes effect somewhere inside its Lease op), so
//! the rule is broken only if *no* admission order works: member y is
//! certainly admitted before x when y's grant was delivered before x's Lease
//! op was invoked; each member x then needs a rank (its admission position in
//! S) of at most its max. That is unit-time scheduling with deadlines (the
//! maxes) and precedences, decided exactly by tightening each deadline to one
//! less than the deadline of anything certainly admitted after it and then
//! checking the tightened deadlines in ascending order (earliest deadline
//! first): the k-th smallest must be at least k. With a single max per key
//! this reduces to |S| <= M. Counting only S (not slots released before `t`)
//! keeps every reported error certain.
//!
//! The sweep is O(n log n) per key plus O(|S|²) per interval start.
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use crate::history::Op;

use super::{CheckContext, Facts, Verdict};

/// The checker's name in its [`Verdict`].
pub const NAME: &str = "concurrency-limits";

/// Runs the `concurrency-limits` checker on `history`; see the module doc.
pub fn check(history: &[Op], ctx: &CheckContext) -> Verdict {
    check_facts(&Facts::new(history), ctx)
}

/// One attempt's certain hold of a slot.
#[derive(Debug, Clone)]
struct Hold<'a> {
    job: &'a str,
    task: &'a str,
    attempt: u32,
    max: u32,
    /// The Lease op's invoke (ms): the earliest the slot could be taken.
    lease_inv_ms: f64,
    start_ms: f64,
    end_ms: f64,
}

/// A float that orders totally (for the heap).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ms(f64);
impl Eq for Ms {}
impl PartialOrd for Ms {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ms {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Whether the holds `members` (indexes into `holds`), all holding a slot at
/// one instant, could have been admitted in some order in which each saw at
/// most its own max (itself included); see the module doc.
fn admissible(holds: &[Hold<'_>], members: &[usize]) -> bool {
    let mut order: Vec<usize> = members.to_vec();
    // Whatever is certainly admitted after x was delivered after x, so
    // processing by descending delivery tightens successors first.
    order.sort_by(|&a, &b| holds[b].start_ms.total_cmp(&holds[a].start_ms));
    let mut deadline: HashMap<usize, i64> = HashMap::new();
    for &x in &order {
        let mut d = holds[x].max as i64;
        for &y in members {
            // y certainly admitted after x: x delivered before y's Lease invoke.
            if y != x && holds[x].start_ms < holds[y].lease_inv_ms {
                if let Some(&dy) = deadline.get(&y) {
                    d = d.min(dy - 1);
                }
            }
        }
        deadline.insert(x, d);
    }
    let mut ds: Vec<i64> = deadline.into_values().collect();
    ds.sort();
    ds.iter().enumerate().all(|(k, &d)| d > k as i64)
}

pub(crate) fn check_facts(facts: &Facts<'_>, _ctx: &CheckContext) -> Verdict {
    let mut v = Verdict::new(NAME);

    // Latest invoke of an ok heartbeat/report per (task, attempt).
    let mut last_seen: HashMap<(&str, u32), f64> = HashMap::new();
    for tc in facts.task_calls.iter().filter(|tc| tc.call.is_ok()) {
        let e = last_seen.entry((tc.task_id, tc.attempt)).or_insert(f64::NEG_INFINITY);
        *e = e.max(tc.call.inv_ms());
    }

    let mut by_key: BTreeMap<&str, Vec<Hold<'_>>> = BTreeMap::new();
    let mut unattributed = 0;
    for g in &facts.grants {
        let Some(e) = facts.enqueue_of_grant(g.grant) else {
            unattributed += 1;
            continue;
        };
        let Some((key, max)) = e.limit else { continue };
        let start = g.delivered_ms;
        let seen = last_seen.get(&(g.grant.task_id.as_str(), g.grant.attempt)).copied();
        let end = seen.map_or(start, |s| s.max(start));
        by_key.entry(key).or_default().push(Hold {
            job: &g.grant.job_id,
            task: &g.grant.task_id,
            attempt: g.grant.attempt,
            max,
            lease_inv_ms: g.lease.inv_ms(),
            start_ms: start,
            end_ms: end,
        });
    }

    let mut holds_total = 0;
    for (key, holds) in by_key.iter_mut() {
        holds_total += holds.len();
        holds.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        // Min-heap of (end, index) of the holds started so far.
        let mut open: BinaryHeap<Reverse<(Ms, usize)>> = BinaryHeap::new();
        let mut reported_until = f64::NEG_INFINITY;
        let mut i = 0;
        while i < holds.len() {
            let t = holds[i].start_ms;
            let mut j = i;
            while j < holds.len() && holds[j].start_ms == t {
                open.push(Reverse((Ms(holds[j].end_ms), j)));
                j += 1;
            }
            // Drop holds that ended at or before t (strict overlap), but keep
            // the zero-length holds starting at t itself: they count at t.
            while let Some(Reverse((Ms(end), k))) = open.peek().copied() {
                if end <= t && holds[k].start_ms < t {
                    open.pop();
                } else {
                    break;
                }
            }
            for k in i..j {
                // The holds containing t, from hold k's point of view: those
                // ending after t, plus k itself.
                let members: Vec<usize> =
                    open.iter().filter(|Reverse((Ms(end), m))| *m == k || *end > t).map(|Reverse((_, m))| *m).collect();
                let h = &holds[k];
                if t >= reported_until && !admissible(holds, &members) {
                    let mut jobs: Vec<String> = members
                        .iter()
                        .map(|&m| {
                            let o = &holds[m];
                            format!(
                                "{} (task {} attempt {}, [{:.1}, {:.1}] ms)",
                                o.job, o.task, o.attempt, o.start_ms, o.end_ms
                            )
                        })
                        .collect();
                    jobs.sort();
                    let shown = jobs.len().min(10);
                    let more =
                        if jobs.len() > shown { format!(" and {} more", jobs.len() - shown) } else { String::new() };
                    let mut maxes: Vec<u32> = members.iter().map(|&m| holds[m].max).collect();
                    maxes.sort();
                    maxes.dedup();
                    let allowed = if maxes.len() == 1 {
                        format!("the limit is {}", maxes[0])
                    } else {
                        format!(
                            "no order of their grants keeps each within its job's max (job {} allows {})",
                            h.job, h.max
                        )
                    };
                    v.error(format!(
                        "limit-exceeded: key {key}: {} attempts held slots at {t:.1} ms, but {allowed}: {}{more}",
                        members.len(),
                        jobs[..shown].join(", "),
                    ));
                    // One error per overload episode: skip until these end.
                    reported_until = members.iter().map(|&m| holds[m].end_ms).fold(t, f64::max);
                    break;
                }
            }
            i = j;
        }
    }

    v.note(format!("checked {holds_total} granted attempts under {} limit keys", by_key.len()));
    if unattributed > 0 {
        v.note(format!("{unattributed} grants matched no enqueue (see lost-and-phantom); their limits are unknown"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testing::*;
    use crate::history::{Outcome, F};

    const CTX: CheckContext = CheckContext { lease_ms: 10_000 };

    fn two_jobs(max: u32) -> H {
        H::new().call(9, F::Enqueue, enq_limited("a", "9:0", "k", max), 0.0, 5.0).call(
            9,
            F::Enqueue,
            enq_limited("b", "9:1", "k", max),
            6.0,
            10.0,
        )
    }

    fn run(h: H, p: i64, job: &str, task: &str, tok: &str, t0: f64, t1: f64) -> H {
        h.invoke(p, F::Lease, lease(vec![]), t0 - 5.0)
            .ok(p, lease(vec![grant(job, task, 1, tok)]), t0)
            .call(p, F::Heartbeat, hb(job, task, 1), (t0 + t1) / 2.0, (t0 + t1) / 2.0 + 1.0)
            .call(p, F::Report, report(job, task, 1, Outcome::Success), t1, t1 + 1.0)
    }

    #[test]
    fn valid_history_passes() {
        // max 1: b is granted right when a's report was invoked (touching, not overlapping).
        let h = run(two_jobs(1), 1, "a", "ta", "9:0", 20.0, 50.0);
        let h = run(h, 2, "b", "tb", "9:1", 50.0, 80.0);
        assert_valid(&check(&h.build(), &CTX));
        // max 2: overlapping is fine.
        let h = run(two_jobs(2), 1, "a", "ta", "9:0", 20.0, 50.0);
        let h = run(h, 2, "b", "tb", "9:1", 30.0, 80.0);
        assert_valid(&check(&h.build(), &CTX));
    }

    #[test]
    fn overlapping_holds_exceed_the_limit() {
        let h = run(two_jobs(1), 1, "a", "ta", "9:0", 20.0, 50.0);
        let h = run(h, 2, "b", "tb", "9:1", 30.0, 80.0);
        let v = check(&h.build(), &CTX);
        assert_rule(&v, "limit-exceeded");
        assert!(v.errors[0].contains("key k") && v.errors[0].contains("30.0 ms"), "{:?}", v.errors);
    }

    #[test]
    fn zero_length_hold_inside_another_counts() {
        // b's task is granted and never heard from again (worker crashed):
        // it held the slot at its grant, inside a's interval.
        let h = run(two_jobs(1), 1, "a", "ta", "9:0", 20.0, 50.0).invoke(2, F::Lease, lease(vec![]), 25.0).ok(
            2,
            lease(vec![grant("b", "tb", 1, "9:1")]),
            30.0,
        );
        assert_rule(&check(&h.build(), &CTX), "limit-exceeded");
    }

    #[test]
    fn each_job_uses_its_own_max() {
        // a allows 2, b allows 1: b's grant while a runs breaks b's limit.
        let h = H::new().call(9, F::Enqueue, enq_limited("a", "9:0", "k", 2), 0.0, 5.0).call(
            9,
            F::Enqueue,
            enq_limited("b", "9:1", "k", 1),
            6.0,
            10.0,
        );
        let h = run(h, 1, "a", "ta", "9:0", 20.0, 50.0);
        let h2 = run(h, 2, "b", "tb", "9:1", 30.0, 80.0);
        assert_rule(&check(&h2.build(), &CTX), "limit-exceeded");
        // The other way round (b first, a granted while b runs) is fine for a.
        let h = H::new().call(9, F::Enqueue, enq_limited("a", "9:0", "k", 2), 0.0, 5.0).call(
            9,
            F::Enqueue,
            enq_limited("b", "9:1", "k", 1),
            6.0,
            10.0,
        );
        let h = run(h, 2, "b", "tb", "9:1", 20.0, 50.0);
        let h = run(h, 1, "a", "ta", "9:0", 30.0, 80.0);
        assert_valid(&check(&h.build(), &CTX));
    }

    #[test]
    fn mixed_maxes_with_overlapping_lease_ops_may_be_fine() {
        // b (max 1) is leased by an op that started before a's (max 2) was
        // delivered: the server may have admitted b first (count 1) and a
        // second (count 2), so nothing is certainly wrong.
        let h = H::new()
            .call(9, F::Enqueue, enq_limited("a", "9:0", "k", 2), 0.0, 5.0)
            .call(9, F::Enqueue, enq_limited("b", "9:1", "k", 1), 6.0, 8.0)
            .invoke(2, F::Lease, lease(vec![]), 10.0)
            .invoke(1, F::Lease, lease(vec![]), 12.0)
            .ok(1, lease(vec![grant("a", "ta", 1, "9:0")]), 20.0)
            .ok(2, lease(vec![grant("b", "tb", 1, "9:1")]), 30.0)
            .call(1, F::Report, report("a", "ta", 1, Outcome::Success), 60.0, 61.0)
            .call(2, F::Report, report("b", "tb", 1, Outcome::Success), 60.0, 61.0);
        assert_valid(&check(&h.build(), &CTX));
        // Three jobs of max 2 at once are wrong whatever the order.
        let h = H::new()
            .call(9, F::Enqueue, enq_limited("a", "9:0", "k", 2), 0.0, 1.0)
            .call(9, F::Enqueue, enq_limited("b", "9:1", "k", 2), 1.0, 2.0)
            .call(9, F::Enqueue, enq_limited("c", "9:2", "k", 2), 2.0, 3.0)
            .invoke(1, F::Lease, lease(vec![]), 10.0)
            .ok(
                1,
                lease(vec![grant("a", "ta", 1, "9:0"), grant("b", "tb", 1, "9:1"), grant("c", "tc", 1, "9:2")]),
                20.0,
            )
            .call(1, F::Heartbeat, hb("a", "ta", 1), 30.0, 31.0)
            .call(1, F::Heartbeat, hb("b", "tb", 1), 32.0, 33.0)
            .call(1, F::Heartbeat, hb("c", "tc", 1), 34.0, 35.0);
        let v = check(&h.build(), &CTX);
        assert_rule(&v, "limit-exceeded");
        assert!(v.errors[0].contains("the limit is 2"), "{:?}", v.errors);
    }
}
