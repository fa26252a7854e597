//! `silo ctl` job, cluster, tenant and config commands, run as the real
//! binary against a real server: what an operator types and reads.
use std::process::Command;

use crate::support::*;

/// Runs `silo ctl <args>` against `server`; (exit ok, stdout, stderr).
fn ctl(server: &Server, args: &[&str]) -> (bool, String, String) {
    ctl_at(&server.addr, args)
}

/// Runs `silo ctl --server <servers> <args>`.
fn ctl_at(servers: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_silo"))
        .args(["ctl", "--server", servers])
        .args(args)
        .env_remove("SILO_AUTH_TOKEN")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("silo runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[tokio::test]
async fn job_commands_enqueue_read_change_and_explain_refusals() {
    let s = Server::start_default().await;
    let (ok, out, err) = ctl(
        &s,
        &[
            "job",
            "enqueue",
            "--id",
            "cli-1",
            "--payload",
            r#"{"to":"a@b.c"}"#,
            "-m",
            "user=7",
            "--delay-ms",
            "3600000",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(json(&out)["id"], "cli-1");

    let (ok, out, _) = ctl(&s, &["job", "get", "cli-1", "--json"]);
    assert!(ok);
    let job = json(&out);
    assert_eq!((job["status"].as_str(), job["payload"]["to"].as_str()), (Some("SCHEDULED"), Some("a@b.c")));
    assert_eq!(job["metadata"]["user"], "7");
    let (ok, text, _) = ctl(&s, &["job", "get", "cli-1"]);
    assert!(ok && text.contains("status:      SCHEDULED") && text.contains("metadata:    user = 7"), "{text}");

    // Expedite, cancel, a refused second cancel, restart, a refused delete.
    for (args, expect_ok) in [
        (vec!["job", "expedite", "cli-1"], true),
        (vec!["job", "cancel", "cli-1"], true),
        (vec!["job", "cancel", "cli-1"], false),
        (vec!["job", "restart", "cli-1"], true),
        (vec!["job", "delete", "cli-1"], false),
    ] {
        let (ok, out, err) = ctl(&s, &args);
        assert_eq!(ok, expect_ok, "{args:?}: {out} {err}");
        if !ok {
            assert!(err.contains("FailedPrecondition") || err.contains("Internal"), "{args:?}: {err}");
        }
    }

    // A worker finishes it; `result` and `await` print the outcome.
    let mut c = s.client().await;
    let tasks = lease_n(&mut c, "default", "w", 1).await;
    c.report_outcome(success_req(&tasks[0], &[0x81, 0xa2, b'o', b'k', 0xc3])).await.unwrap();
    let (ok, out, err) = ctl(&s, &["job", "await", "cli-1", "--timeout-ms", "10000"]);
    assert!(ok, "{err}");
    let result = json(&out);
    assert_eq!((result["status"].as_str(), result["result"]["ok"].as_bool()), (Some("SUCCEEDED"), Some(true)));
    let (ok, _, _) = ctl(&s, &["job", "delete", "cli-1"]);
    assert!(ok);

    // Refusals say what went wrong and what to do.
    let (ok, _, err) = ctl(&s, &["job", "get", "nope"]);
    assert!(!ok && err.contains("NotFound") && err.contains("pass --tenant"), "{err}");
    let (ok, _, err) = ctl(&s, &["job", "enqueue", "--payload", "{not json"]);
    assert!(!ok && err.contains("--payload must be JSON"), "{err}");
    let (ok, _, err) = ctl(&s, &["job", "enqueue", "-m", "novalue"]);
    assert!(!ok && err.contains("--metadata takes key=value"), "{err}");
    let (ok, _, err) = ctl(&s, &["job", "enqueue", "--priority", "100"]);
    assert!(!ok && err.contains("InvalidArgument"), "{err}");
    // Waiting on a request that can never succeed ends at once.
    let started = std::time::Instant::now();
    let (ok, _, err) = ctl(&s, &["job", "await", "nope", "--timeout-ms", "60000"]);
    assert!(!ok && err.contains("NotFound") && started.elapsed() < std::time::Duration::from_secs(30), "{err}");
}

#[tokio::test]
async fn a_server_list_works_for_every_command_and_flags_go_anywhere() {
    let s = Server::start_default().await;
    let list = format!("127.0.0.1:1,{}", s.addr);
    let run = |args: &[&str]| ctl_at(&list, args);
    for args in [
        vec!["status", "--json"],
        vec!["--json", "status"],
        vec!["query", "SELECT 1 AS one", "--json"],
        vec!["tenant", "locate", "acme", "--json"],
    ] {
        let (ok, out, err) = run(&args);
        assert!(ok, "{args:?}: {err}");
        // One JSON document (status, locate) or one per line (query).
        if serde_json::from_str::<serde_json::Value>(&out).is_err() {
            json(out.lines().next().unwrap_or_default());
        }
    }
    let (ok, out, err) = run(&["job", "enqueue", "--delay-ms", "5", "--json"]);
    assert!(ok, "{err}");
    assert!(json(&out)["id"].is_string());
    let (ok, _, err) = run(&["job", "enqueue", "--delay-ms=-5"]);
    assert!(!ok && err.contains("delay-ms"), "{err}");
}

#[tokio::test]
async fn cluster_tenant_and_config_commands() {
    let s = Server::start(Opts { num_shards: 4, ..Opts::default() }).await;
    let (ok, out, err) = ctl(&s, &["cluster", "info", "--json"]);
    assert!(ok, "{err}");
    let info = json(&out);
    assert_eq!(info["num_shards"], 4);
    assert_eq!(info["shards"].as_array().unwrap().len(), 4);

    let (ok, out, _) = ctl(&s, &["tenant", "hash", "acme"]);
    assert!(ok);
    assert_eq!(out.trim(), silo::grpc::tenant_hash("acme"));
    let (ok, out, _) = ctl(&s, &["tenant", "locate", "acme", "--json"]);
    assert!(ok);
    let located = json(&out);
    let hash = located["hash"].as_str().unwrap().to_string();
    let shard = info["shards"].as_array().unwrap().iter().find(|sh| sh["shard"] == located["shard"]).unwrap().clone();
    let (start, end) = (shard["range_start"].as_str().unwrap(), shard["range_end"].as_str().unwrap());
    assert!(
        (start.is_empty() || hash.as_str() >= start) && (end.is_empty() || hash.as_str() < end),
        "{located} in {shard}"
    );

    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "node_id = 2\n[auth]\ntoken = \"s3cret\"\n").unwrap();
    let (ok, out, err) = ctl(&s, &["validate-config", "--config", good.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("is valid") && out.contains("node_id = 2") && !out.contains("s3cret"), "{out}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "node_id = 0\nlease_ms = 5\n[webui]\nlisten = \"nowhere\"\n").unwrap();
    let (ok, _, err) = ctl(&s, &["validate-config", "--config", bad.to_str().unwrap()]);
    assert!(!ok);
    for setting in ["node_id", "lease_ms", "webui.listen"] {
        assert!(err.contains(setting), "{setting} missing from: {err}");
    }
    let (ok, _, err) = ctl(&s, &["validate-config", "--config", dir.path().join("absent.toml").to_str().unwrap()]);
    assert!(!ok && err.contains("reading"), "{err}");
}

#[tokio::test]
async fn diagnostics_dump_tasks_profile_compact_and_explain_what_does_not_apply() {
    let s = Server::start_default().await;
    let mut c = s.client().await;
    let shard = s.shard(0).await;
    for i in 0..5 {
        let mut j = enqueue_req(&shard, &format!("diag-{i}"));
        j.task_group = "diag".into();
        j.priority = 10 + i;
        c.enqueue(j).await.expect("enqueue");
    }
    let leased = lease_n(&mut c, "diag", "worker-d", 1).await;
    assert_eq!(leased.len(), 1);

    // dump-tasks: counts, the next tasks in lease order, the running lease.
    let (ok, out, err) = ctl(&s, &["dump-tasks", "--task-group", "diag", "--json"]);
    assert!(ok, "{err}");
    let dump = json(&out);
    let g = &dump["groups"][0];
    assert_eq!(
        (g["task_group"].as_str(), g["ready"].as_u64(), g["running"].as_u64()),
        (Some("diag"), Some(4), Some(1))
    );
    let next: Vec<&str> = g["next"].as_array().unwrap().iter().map(|t| t["job_id"].as_str().unwrap()).collect();
    assert_eq!(next, ["diag-1", "diag-2", "diag-3", "diag-4"], "priority order (diag-0 is running)");
    assert_eq!(g["leases"][0]["worker_id"], "worker-d");
    assert_eq!(g["leases"][0]["job_id"], "diag-0");
    let (ok, text, _) = ctl(&s, &["dump-tasks"]);
    assert!(ok && text.contains("diag") && text.contains("READY"), "{text}");
    let (ok, _, err) = ctl(&s, &["dump-tasks", "--task-group", "nope"]);
    assert!(!ok && err.contains("no task group \"nope\""), "{err}");

    // flush, compact, storage-info act on the node's store.
    let (ok, out, err) = ctl(&s, &["flush"]);
    assert!(ok && out.contains("flushed"), "{out}{err}");
    let (ok, out, err) = ctl(&s, &["storage-info", "--json"]);
    assert!(ok, "{err}");
    assert!(json(&out)["sorted_run_count"].as_u64().is_some_and(|n| n >= 1), "a flush made at least one SST: {out}");
    let (ok, out, err) = ctl(&s, &["compact"]);
    assert!(ok && out.contains("compacted"), "{out}{err}");

    // A short CPU profile in pprof format.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cpu.pb");
    let (ok, out, err) =
        ctl(&s, &["profile", "--seconds", "1", "--frequency", "199", "--out", file.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    assert_eq!(json(&out)["seconds"], 1);
    let bytes = std::fs::read(&file).expect("the profile file");
    assert!(!bytes.is_empty());
    let profile: pprof::protos::Profile = pprof::protos::Message::decode(bytes.as_slice()).expect("a pprof profile");
    assert!(!profile.string_table.is_empty(), "the profile has its string table");

    // Bad inputs and RPCs that do not apply to a Raft store.
    let g = &mut c;
    let e = g.cpu_profile(silo::pb::silo::CpuProfileRequest { duration_seconds: 301, frequency: 0 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    let e = g.compact_shard(silo::pb::silo::CompactShardRequest { shard: "not-a-shard".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    let e = g.force_release_shard(silo::pb::silo::ForceReleaseShardRequest { shard: String::new() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    assert!(e.message().contains("one Raft group holds every shard"), "{e}");
    let e = c
        .configure_shard(silo::pb::silo::ConfigureShardRequest { shard: String::new(), ..Default::default() })
        .await
        .unwrap_err();
    assert!(e.code() == tonic::Code::Unimplemented && e.message().contains("placement rings"), "{e}");
}
