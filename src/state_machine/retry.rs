//! Retry delays (SEMANTICS §7, DECISIONS #6).
//!
//! `d = round(initial × factor^n)` where `n` is the relative number of the
//! attempt that just failed (so the first retry waits `initial × factor`),
//! optionally stretched by a deterministic jitter in [1, 2] derived from
//! (failure time, n), then capped at `max_interval_ms`. The power is computed by
//! repeated IEEE multiplication rather than `powf`, whose result may differ
//! between libm builds: every replica must compute the same millisecond.
use serde::{Deserialize, Serialize};

use super::job::Ms;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub retry_count: u32,
    pub initial_interval_ms: Ms,
    pub max_interval_ms: Ms,
    pub randomize_interval: bool,
    pub backoff_factor: f64,
}

/// The retry delay after relative attempt `n` (1-based) failed at `failed_at_ms`,
/// or `None` when the policy allows no further attempt.
pub fn retry_delay_ms(policy: &RetryPolicy, n: u32, failed_at_ms: Ms) -> Option<Ms> {
    if n > policy.retry_count {
        return None;
    }
    let mut d = round_half_away(policy.initial_interval_ms as f64 * power(policy.backoff_factor, n));
    if policy.randomize_interval {
        d = round_half_away(d as f64 * (1.0 + jitter_fraction(failed_at_ms, n)));
    }
    Some(d.min(policy.max_interval_ms).max(0))
}

/// `base^n` by repeated multiplication; stops early once the value is infinite.
fn power(base: f64, n: u32) -> f64 {
    let mut acc = 1.0f64;
    for _ in 0..n {
        acc *= base;
        if !acc.is_finite() {
            break;
        }
    }
    acc
}

/// f64 → i64 rounding half away from zero, saturating (NaN → 0).
fn round_half_away(x: f64) -> i64 {
    if x.is_nan() {
        0
    } else {
        x.round() as i64
    }
}

/// The reference's LCG step over (time, attempt): f ∈ [0, 1].
pub fn jitter_fraction(failed_at_ms: Ms, n: u32) -> f64 {
    let mut s = (failed_at_ms as u64) ^ ((n as u64) << 32);
    s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
    (s >> 32) as f64 / 4294967295.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retry_count: u32, randomize: bool) -> RetryPolicy {
        RetryPolicy {
            retry_count,
            initial_interval_ms: 1000,
            max_interval_ms: 30_000,
            randomize_interval: randomize,
            backoff_factor: 2.0,
        }
    }

    #[test]
    fn documented_example_schedule() {
        let p = policy(10, false);
        let delays: Vec<_> = (1..=6).map(|n| retry_delay_ms(&p, n, 0).unwrap()).collect();
        assert_eq!(delays, vec![2000, 4000, 8000, 16000, 30000, 30000]);
    }

    #[test]
    fn no_retry_after_budget() {
        let p = policy(2, false);
        assert!(retry_delay_ms(&p, 2, 0).is_some());
        assert!(retry_delay_ms(&p, 3, 0).is_none());
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let p = policy(5, true);
        for t in [0i64, 1, 1_700_000_000_000, i64::MAX] {
            for n in 1..=5 {
                let a = retry_delay_ms(&p, n, t).unwrap();
                assert_eq!(a, retry_delay_ms(&p, n, t).unwrap());
                let base = retry_delay_ms(&policy(5, false), n, t).unwrap();
                assert!(a >= base.min(30_000) && a <= (2 * base).min(30_000), "{a} vs {base}");
            }
        }
        let f = jitter_fraction(12345, 1);
        assert!((0.0..=1.0).contains(&f));
    }

    #[test]
    fn huge_factor_saturates_at_cap() {
        let mut p = policy(100, false);
        p.backoff_factor = 1e300;
        assert_eq!(retry_delay_ms(&p, 50, 0), Some(30_000));
    }
}
