//! Query and QueryArrow (issue #12): SQL over real jobs on a real server —
//! answers checked against the jobs the test made, index-backed filters
//! (status, task group, metadata exact and prefix, id), tenant scope, bind
//! parameters, both encodings, and every refusal with its status.
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use silo::pb::silo as pb;
use tonic::Code;

use crate::support::*;

fn query_req(shard: &str, sql: &str, tenant: Option<&str>, params: Vec<pb::QueryParameter>) -> pb::QueryRequest {
    pb::QueryRequest { shard: shard.into(), sql: sql.into(), tenant: tenant.map(String::from), parameters: params }
}

fn text(s: &str) -> pb::QueryParameter {
    pb::QueryParameter { value: Some(pb::query_parameter::Value::StringValue(s.into())) }
}

/// Rows of a Query reply as JSON objects (column order kept).
fn rows(reply: &pb::QueryResponse) -> Vec<serde_json::Value> {
    reply.rows.iter().map(|r| rmp_serde::from_slice(&bytes_of(&Some(r.clone()))).expect("row is MessagePack")).collect()
}

async fn sql(c: &mut Client, shard: &str, tenant: Option<&str>, statement: &str) -> Vec<serde_json::Value> {
    let reply =
        c.query(query_req(shard, statement, tenant, vec![])).await.unwrap_or_else(|s| panic!("{statement}: {s:?}"));
    let reply = reply.into_inner();
    assert_eq!(reply.row_count as usize, reply.rows.len());
    rows(&reply)
}

/// `column` of every row, as strings.
fn column(rows: &[serde_json::Value], column: &str) -> Vec<String> {
    rows.iter()
        .map(|r| match &r[column] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

struct Made {
    /// tenant → (id → (task group, status kind, metadata))
    jobs: BTreeMap<String, BTreeMap<String, (String, String, HashMap<String, String>)>>,
}

/// 24 jobs of tenant `acme` and 4 of `globex`, across two task groups, with
/// metadata; some leased (Running), some finished (Succeeded, Failed).
async fn make_jobs(c: &mut Client, shard: &str) -> Made {
    let mut made = Made { jobs: BTreeMap::new() };
    for (tenant, n) in [("acme", 24), ("globex", 4)] {
        for i in 0..n {
            let id = format!("{tenant}-{i:02}");
            let group = if i % 2 == 0 { "emails" } else { "reports" };
            let mut metadata = HashMap::new();
            if i % 3 == 0 {
                metadata.insert("env".to_string(), "production".to_string());
            }
            metadata.insert("region".to_string(), if i % 4 < 2 { format!("us-{i}") } else { format!("eu-{i}") });
            let mut r = enqueue_req(shard, &id);
            r.tenant = Some(tenant.into());
            r.task_group = group.into();
            r.metadata = metadata.clone();
            r.priority = i as u32;
            r.payload = msgpack(&rmp_serde::to_vec(&serde_json::json!({"n": i})).unwrap());
            c.enqueue(r).await.unwrap();
            made.jobs.entry(tenant.into()).or_default().insert(id, (group.into(), "Waiting".into(), metadata));
        }
    }
    // Lease 6 "reports" tasks of acme: 2 succeed, 2 fail (no retries), 2 stay running.
    let mut leased = Vec::new();
    while leased.len() < 6 {
        let mut r = lease_req("reports", "w", (6 - leased.len()) as u32);
        r.tenant = Some("acme".into());
        leased.extend(c.lease_tasks(r).await.unwrap().into_inner().tasks);
    }
    for (i, task) in leased.iter().enumerate() {
        let kind = match i {
            0 | 1 => {
                let mut r = success_req(task, &[0xc0]);
                r.shard = shard.into();
                r.tenant_id = Some("acme".into());
                c.report_outcome(r).await.unwrap();
                "Succeeded"
            }
            2 | 3 => {
                let mut r = failure_req(task, "E");
                r.shard = shard.into();
                r.tenant_id = Some("acme".into());
                c.report_outcome(r).await.unwrap();
                "Failed"
            }
            _ => "Running",
        };
        made.jobs.get_mut("acme").unwrap().get_mut(&task.job_id).unwrap().1 = kind.into();
    }
    made
}

#[tokio::test]
async fn sql_over_jobs_answers_from_indexes_with_tenant_scope_and_parameters() {
    let s = Server::start(Opts { tenancy: true, ..Opts::default() }).await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let made = make_jobs(&mut c, &shard).await;
    let acme = &made.jobs["acme"];

    // Status counts (status index) match what the test did.
    let got = sql(
        &mut c,
        &shard,
        Some("acme"),
        "SELECT status_kind, COUNT(*) AS n FROM jobs GROUP BY status_kind ORDER BY status_kind",
    )
    .await;
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (_, kind, _) in acme.values() {
        *want.entry(kind.clone()).or_default() += 1;
    }
    let got: BTreeMap<String, u64> =
        got.iter().map(|r| (r["status_kind"].as_str().unwrap().to_string(), r["n"].as_u64().unwrap())).collect();
    assert_eq!(got, want);

    // Each indexed filter returns exactly the matching jobs.
    let ids = |pred: &dyn Fn(&(String, String, HashMap<String, String>)) -> bool| -> Vec<String> {
        acme.iter().filter(|(_, j)| pred(j)).map(|(id, _)| id.clone()).collect()
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("status_kind = 'Failed'", ids(&|j| j.1 == "Failed")),
        ("status_kind IN ('Running', 'Succeeded')", ids(&|j| j.1 == "Running" || j.1 == "Succeeded")),
        ("task_group = 'emails'", ids(&|j| j.0 == "emails")),
        ("array_contains(element_at(metadata, 'env'), 'production')", ids(&|j| j.2.get("env").is_some())),
        (
            "metadata['env'] = 'production' AND task_group = 'reports'",
            ids(&|j| j.2.get("env").is_some() && j.0 == "reports"),
        ),
        (
            "starts_with(array_any_value(element_at(metadata, 'region')), 'us-')",
            ids(&|j| j.2["region"].starts_with("us-")),
        ),
        ("array_any_value(element_at(metadata, 'region')) LIKE 'eu-%'", ids(&|j| j.2["region"].starts_with("eu-"))),
        ("id = 'acme-07'", vec!["acme-07".to_string()]),
        ("id IN ('acme-01', 'acme-02', 'nope')", vec!["acme-01".to_string(), "acme-02".to_string()]),
        ("tenant = 'globex'", vec![]),
    ];
    for (pred, want) in cases {
        let got = sql(&mut c, &shard, Some("acme"), &format!("SELECT id FROM jobs WHERE {pred} ORDER BY id")).await;
        assert_eq!(column(&got, "id"), want, "WHERE {pred}");
    }

    // Tenant scope: a tenant's statement never sees another tenant's jobs; an
    // operator's (no tenant) sees the whole shard.
    let got = sql(&mut c, &shard, Some("globex"), "SELECT COUNT(*) AS n FROM jobs WHERE id = 'acme-01'").await;
    assert_eq!(got[0]["n"], 0);
    let got = sql(&mut c, &shard, None, "SELECT tenant, COUNT(*) AS n FROM jobs GROUP BY tenant ORDER BY tenant").await;
    assert_eq!(
        got,
        vec![serde_json::json!({"tenant": "acme", "n": 24}), serde_json::json!({"tenant": "globex", "n": 4})]
    );
    let got = sql(&mut c, &shard, None, "SELECT id FROM jobs WHERE id = 'globex-03'").await;
    assert_eq!(column(&got, "id"), vec!["globex-03"]);

    // A whole row: Silo's columns, payload rendered as JSON, metadata as a map.
    let reply = c
        .query(query_req(&shard, "SELECT * FROM jobs WHERE id = $1", Some("acme"), vec![text("acme-03")]))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<(&str, &str)> = reply.columns.iter().map(|c| (c.name.as_str(), c.data_type.as_str())).collect();
    assert_eq!(
        &names[..5],
        &[
            ("shard_id", "Utf8"),
            ("tenant", "Utf8"),
            ("id", "Utf8"),
            ("priority", "UInt8"),
            ("enqueue_time_ms", "Int64")
        ]
    );
    let row = &rows(&reply)[0];
    assert_eq!(row["shard_id"], shard.as_str());
    assert_eq!(row["priority"], 3);
    assert_eq!(row["payload"], r#"{"n":3}"#);
    assert_eq!(row["task_group"], "reports");
    assert_eq!(row["metadata"]["env"], "production");
    assert_eq!(row["current_attempt"].is_null(), acme["acme-03"].1 != "Waiting");

    // The per-tenant counters agree with a scan.
    let counts =
        sql(&mut c, &shard, Some("acme"), "SELECT status_kind, cnt FROM tenant_counts ORDER BY status_kind").await;
    let scheduled = acme.values().filter(|j| j.1 == "Waiting").count() as u64;
    assert!(counts.contains(&serde_json::json!({"status_kind": "Scheduled", "cnt": scheduled})), "{counts:?}");

    // Ready tasks of the group nobody leased.
    let got = sql(
        &mut c,
        &shard,
        Some("acme"),
        "SELECT variant_type, COUNT(*) AS n FROM tasks WHERE task_group = 'emails' GROUP BY variant_type",
    )
    .await;
    assert_eq!(got, vec![serde_json::json!({"variant_type": "RunAttempt", "n": 12})]);

    // QueryArrow answers the same statement with the same rows.
    let statement = "SELECT id, status_kind, priority FROM jobs ORDER BY id";
    let via_rows = sql(&mut c, &shard, Some("acme"), statement).await;
    let mut stream = c
        .query_arrow(pb::QueryArrowRequest {
            shard: shard.clone(),
            sql: statement.into(),
            tenant: Some("acme".into()),
            parameters: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let mut arrow_ids = Vec::new();
    while let Some(msg) = stream.message().await.unwrap() {
        let reader =
            datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(msg.ipc_data), None).unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let col = batch.column(0).as_any().downcast_ref::<datafusion::arrow::array::StringArray>().unwrap();
            arrow_ids.extend(col.iter().map(|v| v.unwrap().to_string()));
        }
    }
    assert_eq!(arrow_ids, column(&via_rows, "id"));
}

#[tokio::test]
async fn sql_refusals_have_clear_statuses_and_change_nothing() {
    let s = Server::start(Opts {
        extra_toml: "[query]\nmax_concurrent = 1\nstatement_timeout_ms = 4000\nmax_result_bytes = 4096\n".into(),
        ..Opts::default()
    })
    .await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    for i in 0..40 {
        let mut r = enqueue_req(&shard, &format!("job-{i:02}"));
        r.metadata = HashMap::from([("note".to_string(), "x".repeat(100))]);
        c.enqueue(r).await.unwrap();
    }
    let q = |statement: &str, params: Vec<pb::QueryParameter>| query_req(&shard, statement, None, params);

    assert_status(c.query(q("SELEC id FROM jobs", vec![])).await, Code::InvalidArgument, "SQL error: ");
    assert_status(c.query(q("SELECT nope FROM jobs", vec![])).await, Code::InvalidArgument, "No field named nope");
    assert_status(c.query(q("SELECT * FROM missing", vec![])).await, Code::InvalidArgument, "missing");
    assert_status(c.query(q("DELETE FROM jobs", vec![])).await, Code::InvalidArgument, "DML not supported");
    assert_status(c.query(q("CREATE TABLE t (a INT)", vec![])).await, Code::InvalidArgument, "DDL not supported");
    assert_status(c.query(q("  ", vec![])).await, Code::InvalidArgument, "SQL error: the statement is empty");
    assert_status(c.query(q("SELECT id FROM jobs WHERE id = $1", vec![])).await, Code::InvalidArgument, "$1");
    assert_status(
        c.query(q("SELECT id FROM jobs WHERE id = $1", vec![pb::QueryParameter { value: None }])).await,
        Code::InvalidArgument,
        "query parameter is missing a value",
    );
    assert_status(
        c.query(q("SELECT id FROM jobs WHERE id = $2", vec![text("a")])).await,
        Code::InvalidArgument,
        "SQL parameter error: ",
    );
    assert_status(
        c.query(query_req("not-a-uuid", "SELECT 1", None, vec![])).await,
        Code::InvalidArgument,
        "invalid shard ID",
    );
    assert_status(c.query(q("SELECT * FROM jobs", vec![])).await, Code::ResourceExhausted, "query.max_result_bytes");

    // A statement over the time limit is cut off; while it runs, the single
    // statement slot refuses another one.
    let slow = "SELECT COUNT(*) FROM generate_series(1, 1000000000000)";
    let mut slow_client = s.client().await;
    let slow_req = q(slow, vec![]);
    // The slow statement may find the slot taken by a probe below: it retries
    // at once (each try is a round trip; no fixed wait).
    let running = tokio::spawn(async move {
        loop {
            match slow_client.query(slow_req.clone()).await {
                Err(s) if s.code() == Code::ResourceExhausted => tokio::task::yield_now().await,
                other => return other,
            }
        }
    });

    // (A wide window: on a loaded machine each probe may take a while.)
    let busy = wait_until("a second statement refused while one runs", Duration::from_secs(30), || {
        let mut c = c.clone();
        let req = q("SELECT 1", vec![]);
        async move {
            match c.query(req).await {
                Err(s) if s.code() == Code::ResourceExhausted => Some(s),
                _ => None,
            }
        }
    })
    .await;
    assert!(busy.message().contains("query.max_concurrent = 1"), "{busy:?}");
    assert_status(running.await.unwrap(), Code::DeadlineExceeded, "query.statement_timeout_ms");

    // Nothing changed: the 40 jobs are still there and still Waiting (once
    // the aborted statement has let go of its slot).
    let got = wait_until("the statement slot to be free again", Duration::from_secs(30), || {
        let mut c = c.clone();
        let req = q("SELECT status_kind, COUNT(*) AS n FROM jobs GROUP BY status_kind", vec![]);
        async move { c.query(req).await.ok().map(|r| rows(&r.into_inner())) }
    })
    .await;
    assert_eq!(got, vec![serde_json::json!({"status_kind": "Waiting", "n": 40})]);
}
