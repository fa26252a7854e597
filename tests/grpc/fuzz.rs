//! Random requests through the real gRPC edge (issue #15, item 1): field
//! sizes from empty to past every limit, odd encodings and extreme numbers.
//! Every request is either accepted (and the job reads back as sent) or
//! refused with INVALID_ARGUMENT / ALREADY_EXISTS naming the problem; the
//! server stays up and keeps serving. The requests come from proptest
//! strategies with a fixed seed, so a failure reproduces.
use std::collections::HashMap;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use silo::pb::silo as pb;
use tonic::Code;

use crate::support::*;

fn sized_string(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-zA-Z0-9_-]{0,12}",
        1 => Just("ключ 🔑 \u{0}".to_string()),
        1 => (0..=max + 8).prop_map(|n| "x".repeat(n)),
        1 => (65_530usize..65_540).prop_map(|n| "y".repeat(n)),
    ]
}

/// Mostly sensible, sometimes at the edges of the type.
fn edge_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => 1i64..100_000,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => Just(-1i64),
        1 => Just(0i64),
        1 => any::<i64>(),
    ]
}

fn edge_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => Just(2.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(-1.0),
        1 => Just(0.0),
        1 => any::<f64>(),
    ]
}

fn limit() -> impl Strategy<Value = pb::Limit> {
    use pb::limit::Limit as L;
    prop_oneof![
        ("[a-z]{1,8}", any::<u32>().prop_map(|m| m % 5)).prop_map(|(key, max_concurrency)| pb::Limit {
            limit: Some(L::Concurrency(pb::ConcurrencyLimit { key, max_concurrency }))
        }),
        (
            sized_string(256),
            sized_string(256),
            edge_i64(),
            edge_i64(),
            any::<i32>(),
            (edge_i64(), edge_i64(), edge_f64(), any::<u32>())
        )
            .prop_map(|(name, unique_key, limit, duration_ms, hits, (ib, mb, mult, retries))| pb::Limit {
                limit: Some(L::RateLimit(pb::GubernatorRateLimit {
                    name,
                    unique_key,
                    limit,
                    duration_ms,
                    hits,
                    algorithm: 0,
                    behavior: 0,
                    retry_policy: Some(pb::RateLimitRetryPolicy {
                        initial_backoff_ms: ib,
                        max_backoff_ms: mb,
                        backoff_multiplier: mult,
                        max_retries: retries,
                    }),
                }))
            }),
        (sized_string(256), any::<u32>(), edge_i64()).prop_map(|(key, d, refresh_interval_ms)| pb::Limit {
            limit: Some(L::FloatingConcurrency(pb::FloatingConcurrencyLimit {
                key,
                default_max_concurrency: d % 4,
                refresh_interval_ms,
                metadata: HashMap::new(),
            }))
        }),
        Just(pb::Limit { limit: None }),
    ]
}

fn enqueue(shard: String) -> impl Strategy<Value = pb::EnqueueRequest> {
    (
        (sized_string(512), any::<u32>().prop_map(|p| if p % 3 == 0 { p } else { p % 100 }), edge_i64()),
        proptest::option::of((any::<u32>().prop_map(|c| c % 4), edge_i64(), edge_i64(), any::<bool>(), edge_f64())),
        prop_oneof![
            Just(None),
            (0usize..300).prop_map(|n| msgpack(&vec![0x90u8; n])),
            Just(Some(pb::SerializedBytes { encoding: None }))
        ],
        prop_oneof![3 => Just(vec![]), 2 => proptest::collection::vec(limit(), 1..3)],
        proptest::collection::hash_map(sized_string(64), sized_string(128), 0..4),
        prop_oneof![4 => "[a-z]{1,8}", 1 => sized_string(64)],
    )
        .prop_map(move |((id, priority, start_at_ms), retry, payload, limits, metadata, task_group)| {
            pb::EnqueueRequest {
                shard: shard.clone(),
                id,
                priority,
                start_at_ms,
                retry_policy: retry.map(
                    |(retry_count, initial_interval_ms, max_interval_ms, randomize_interval, backoff_factor)| {
                        pb::RetryPolicy {
                            retry_count,
                            initial_interval_ms,
                            max_interval_ms,
                            randomize_interval,
                            backoff_factor,
                        }
                    },
                ),
                payload,
                limits,
                tenant: None,
                metadata,
                task_group,
            }
        })
}

#[tokio::test]
async fn random_requests_are_accepted_and_read_back_or_refused_with_a_reason() {
    let s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let mut runner = TestRunner::deterministic();
    let strategy = enqueue(shard.clone());
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..400 {
        let req = strategy.new_tree(&mut runner).expect("value").current();
        match c.enqueue(req.clone()).await {
            Ok(resp) => {
                accepted += 1;
                let id = resp.into_inner().id;
                let job = c
                    .get_job(job_req(&shard, &id))
                    .await
                    .unwrap_or_else(|e| panic!("request {i}: accepted {id:?} but not readable: {e:?}"))
                    .into_inner();
                assert_eq!(job.priority, req.priority, "request {i}");
                assert_eq!(job.task_group, req.task_group, "request {i}");
                assert_eq!(job.metadata, req.metadata, "request {i}");
                let stored = bytes_of(&job.payload);
                let sent = bytes_of(&req.payload);
                if sent.is_empty() {
                    assert_eq!(stored, vec![0xc0], "request {i}: an empty payload is stored as MessagePack nil");
                } else {
                    assert_eq!(stored, sent, "request {i}");
                }
            }
            Err(e) => {
                refused += 1;
                assert!(
                    matches!(e.code(), Code::InvalidArgument | Code::AlreadyExists),
                    "request {i} refused with {e:?}"
                );
                assert!(!e.message().is_empty(), "request {i}: a refusal says why");
            }
        }
        // Random LeaseTasks / Heartbeat / ReportRefreshOutcome strings too.
        if i % 10 == 0 {
            let group = sized_string(64).new_tree(&mut runner).unwrap().current();
            let worker = sized_string(512).new_tree(&mut runner).unwrap().current();
            let r = c.lease_tasks(lease_req(&group, &worker, 2)).await;
            assert!(r.is_ok() || r.as_ref().unwrap_err().code() == Code::InvalidArgument, "lease {i}: {r:?}");
            let task_id = sized_string(600).new_tree(&mut runner).unwrap().current();
            let code = sized_string(2000).new_tree(&mut runner).unwrap().current();
            let r = c
                .report_refresh_outcome(pb::ReportRefreshOutcomeRequest {
                    shard: shard.clone(),
                    task_id,
                    outcome: Some(pb::report_refresh_outcome_request::Outcome::Failure(pb::RefreshFailure {
                        code,
                        message: String::new(),
                    })),
                    tenant_id: None,
                })
                .await;
            assert!(
                matches!(r.map_err(|e| e.code()), Err(Code::NotFound | Code::InvalidArgument)),
                "refresh outcome {i}"
            );
        }
    }
    assert!(accepted > 50 && refused > 50, "both paths exercised: {accepted} accepted, {refused} refused");
    // Still up and still writing.
    c.enqueue(enqueue_req(&shard, "after-fuzz")).await.expect("the server still takes writes");
    assert!(c.get_cluster_info(pb::GetClusterInfoRequest {}).await.is_ok());
}

/// The replicated poison pill of issue #15: a rate-limit unique_key of 65,536
/// bytes was accepted, then panicked apply on every node at every restart.
#[tokio::test]
async fn oversize_limit_strings_and_impossible_limits_are_refused_at_the_edge() {
    let mut s = Server::start_default().await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let rate = |unique_key: String, limit: i64| pb::Limit {
        limit: Some(pb::limit::Limit::RateLimit(pb::GubernatorRateLimit {
            name: "r".into(),
            unique_key,
            limit,
            duration_ms: 1000,
            hits: 1,
            algorithm: 0,
            behavior: 0,
            retry_policy: None,
        })),
    };
    for (what, l, needle) in [
        ("unique_key 65,536 bytes", rate("u".repeat(65_536), 1), "unique_key"),
        ("unique_key 257 bytes", rate("u".repeat(257), 1), "unique_key"),
        ("limit 0", rate("u".into(), 0), "limit must be > 0"),
        (
            "max_concurrency 0",
            pb::Limit {
                limit: Some(pb::limit::Limit::Concurrency(pb::ConcurrencyLimit {
                    key: "k".into(),
                    max_concurrency: 0,
                })),
            },
            "max_concurrency",
        ),
    ] {
        let mut req = enqueue_req(&shard, "poison");
        req.limits = vec![l];
        let e = c.enqueue(req).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(e.message().contains(needle), "{what}: {e:?}");
    }
    assert_eq!(c.get_job(job_req(&shard, "poison")).await.unwrap_err().code(), Code::NotFound, "nothing written");
    let mut req = enqueue_req(&shard, "fine");
    req.limits = vec![rate("u".repeat(256), 1)];
    c.enqueue(req).await.expect("256 bytes is within the limit");
    s.restart().await;
    let mut c = s.client().await;
    c.get_job(job_req(&shard, "fine")).await.expect("the node restarts on its data");
}
