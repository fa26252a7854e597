//! `jepsen`: runs one Jepsen-style test of silo and prints `valid` or
//! `invalid` as its last line. Needs root (network namespaces, iptables).
//! See jepsen/README.md for the options, the nemeses and the checkers.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use parking_lot::Mutex;

use silo_jepsen::checker::{check_all, CheckContext, Verdict};
use silo_jepsen::history::F;
use silo_jepsen::{edn, report};

use silo_jepsen::client::{Conns, Recorder};
use silo_jepsen::db::{Db, DbOpts};
use silo_jepsen::heal;
use silo_jepsen::nemesis::{self, Nemesis};
use silo_jepsen::net::Net;
use silo_jepsen::workload::{self, Shared, PHASE_DRAIN, PHASE_STOP};

/// Runs a Jepsen-style fault-injection test against real silo nodes.
#[derive(Parser, Debug, Clone, serde::Serialize)]
#[command(name = "jepsen", version)]
struct Args {
    /// Number of nodes (3 or 5 are typical).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seconds of workload under faults (the heal, drain and checks come after).
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Comma list of nemeses: kill, kill-leader, pause, pause-leader,
    /// partition-leader, partition-halves, partition-bridge, deaf-leader,
    /// membership, clock; groups: partition, all, none.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Seed of every random choice (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Lease length the nodes grant, ms (short, so expiries happen).
    #[arg(long, default_value_t = 3000)]
    lease_ms: i64,
    /// Snapshot every N log entries; 0 keeps no log behind it, so lagging
    /// nodes catch up by snapshot install.
    #[arg(long, default_value_t = 300)]
    snapshot_every: u64,
    #[arg(long, default_value_t = 0)]
    snapshot_keep: u64,
    /// Seconds between faults (min,max) and of each fault (min,max).
    #[arg(long, default_value = "2,5")]
    interval: String,
    #[arg(long, default_value = "3,8")]
    hold: String,
    /// Longest drain after the heal, seconds (the drain ends earlier, once no
    /// task was leased for lease + 5 s).
    #[arg(long, default_value_t = 300)]
    drain_timeout: u64,
    /// The silo binary (default: next to this one).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Results go to <store>/<test name>/<time>/.
    #[arg(long, default_value = "jepsen/store")]
    store: PathBuf,
    /// Test name (default: silo-<nemesis>-n<nodes>).
    #[arg(long)]
    name: Option<String>,
    /// Keep the nodes' data directories after the run.
    #[arg(long)]
    keep_data: bool,
    /// Run no test: check a stored history (`<store>/<name>/<time>/history.jsonl`)
    /// again with this build's checkers (not `cluster-heals`, which needs the
    /// live nodes) and print their verdicts. Pass the `--lease-ms` of the run.
    #[arg(long, value_name = "HISTORY_JSONL")]
    recheck: Option<PathBuf>,
}

/// `--recheck`: the checkers over a stored history; true when all pass.
fn recheck(path: &std::path::Path, lease_ms: i64) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let history = silo_jepsen::history::read_jsonl(&text).with_context(|| format!("parsing {}", path.display()))?;
    let verdicts = check_all(&history, &CheckContext { lease_ms });
    for v in &verdicts {
        eprintln!(
            "  {:<22} {}",
            v.name,
            if v.valid { "valid".to_string() } else { format!("INVALID, {} errors", v.error_count) }
        );
        for e in &v.errors {
            eprintln!("      - {e}");
        }
    }
    Ok(verdicts.iter().all(|v| v.valid))
}

fn pair(s: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = s.split_once(',').context("expected MIN,MAX")?;
    let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
    anyhow::ensure!(a <= b, "MIN must not exceed MAX in {s:?}");
    Ok((a, b))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JEPSEN_LOG").unwrap_or_else(|_| "info,silo=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(path) = &args.recheck {
        match recheck(path, args.lease_ms) {
            Ok(true) => println!("valid"),
            Ok(false) => {
                println!("invalid");
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(2);
            }
        }
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(true) => {
            println!("valid");
        }
        Ok(false) => {
            println!("invalid");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            println!("invalid");
            std::process::exit(2);
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!((1..=9).contains(&args.nodes), "--nodes must be between 1 and 9");
    anyhow::ensure!(unsafe { libc::geteuid() } == 0, "the harness needs root (network namespaces and iptables)");
    let kinds = nemesis::parse(&args.nemesis)?;
    let interval = pair(&args.interval).context("--interval")?;
    let hold = pair(&args.hold).context("--hold")?;
    let seed = args.seed.unwrap_or_else(|| silo::wall_clock_ms() as u64);
    let name = args.name.clone().unwrap_or_else(|| format!("silo-{}-n{}", args.nemesis.replace(',', "+"), args.nodes));
    let stamp = chrono_stamp();
    let dir = args.store.join(&name).join(&stamp);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("silo"),
    };
    anyhow::ensure!(bin.exists(), "silo binary not found at {} (build it, or pass --bin)", bin.display());
    eprintln!("jepsen: test {name}, seed {seed}, {} nodes, {} s, nemesis {}", args.nodes, args.time, args.nemesis);
    eprintln!("jepsen: results in {}", dir.display());
    let mut config = serde_json::to_value(&args)?;
    config["seed"] = seed.into();
    config["name"] = name.clone().into();
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config)?)?;

    let abort = Arc::new(AtomicBool::new(false));
    {
        let abort = abort.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("jepsen: interrupted; healing and tearing down");
            abort.store(true, Ordering::SeqCst);
        });
    }

    // DB lifecycle: network, nodes.
    let net = Net::setup(args.nodes)?;
    let db_opts = DbOpts {
        nodes: args.nodes,
        lease_ms: args.lease_ms,
        snapshot_logs_since_last: args.snapshot_every,
        max_in_snapshot_log_to_keep: args.snapshot_keep,
    };
    let data = dir.join("nodes");
    let db = Db::start(&bin, &data, &db_opts)?;
    let rec = Recorder::new();
    let mut nemesis = Nemesis::new(db, net, rec.clone(), seed, kinds);
    nemesis.interval_s = interval;
    nemesis.hold_s = hold;
    let outcome = test(&args, seed, &rec, &mut nemesis, &abort).await;

    // Stop every process we started (by PID), keep the logs, drop the network.
    nemesis.heal_all().await;
    let ids: Vec<u64> = nemesis.db.cluster.nodes.keys().copied().collect();
    for id in ids {
        nemesis.db.cluster.kill(id);
    }
    nemesis.db.copy_logs(&dir)?;
    nemesis.net.teardown();
    if !args.keep_data {
        let _ = std::fs::remove_dir_all(&data);
    }
    let heal_verdict = outcome?;

    // Check and report.
    let history = rec.history();
    let mut verdicts: Vec<Verdict> = check_all(&history, &CheckContext { lease_ms: args.lease_ms });
    verdicts.push(heal_verdict);
    let mut jsonl = String::new();
    for op in &history {
        jsonl.push_str(&serde_json::to_string(op)?);
        jsonl.push('\n');
    }
    std::fs::write(dir.join("history.jsonl"), jsonl)?;
    std::fs::write(dir.join("history.edn"), edn::write_edn(&history))?;
    let command =
        format!("jepsen/run --nodes {} --time {} --nemesis {} --seed {seed}", args.nodes, args.time, args.nemesis);
    let run = report::RunInfo {
        test_name: name.clone(),
        seed,
        nodes: (1..=args.nodes as u64).map(Db::name).collect(),
        time_limit_s: args.time,
        nemeses: args.nemesis.split(',').map(|s| s.trim().to_string()).collect(),
        command,
    };
    let summary = report::Summary::new(run, &history, verdicts);
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&summary)?)?;
    let text = report::summary_text(&summary);
    std::fs::write(dir.join("summary.txt"), &text)?;
    std::fs::write(dir.join("index.html"), report::html(&history, &summary))?;
    eprintln!("{text}");
    eprintln!("jepsen: results in {}", dir.display());
    Ok(summary.valid)
}

/// The run proper: workload under faults, heal, drain, final reads, heal check.
async fn test(
    args: &Args,
    seed: u64,
    rec: &Arc<Recorder>,
    nemesis: &mut Nemesis,
    abort: &Arc<AtomicBool>,
) -> anyhow::Result<Verdict> {
    let ids: Vec<u64> = nemesis.db.cluster.nodes.keys().copied().collect();
    nemesis.db.cluster.wait_for_leader(Duration::from_secs(60)).await.map_err(anyhow::Error::msg)?;
    let conns = Conns::connect(&ids).await?;
    let shared = Arc::new(Shared {
        rec: rec.clone(),
        conns,
        phase: AtomicU8::new(0),
        jobs: Mutex::new(Default::default()),
        last_busy_ms: Mutex::new(0.0),
        lease_ms: args.lease_ms,
        seed,
    });
    let mut processes = Vec::new();
    for (p, role) in workload::roles().into_iter().enumerate() {
        processes.push(tokio::spawn(workload::run_process(shared.clone(), p as i64, role)));
    }
    let until = rec.now_ms() + args.time as f64 * 1000.0;
    nemesis.run(until, abort).await;
    while rec.now_ms() < until && !abort.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Heal (done by run) and drain.
    eprintln!("jepsen: healed at {:.1} s; draining ({} ops so far)", rec.now_ms() / 1000.0, rec.op_count());
    shared.phase.store(PHASE_DRAIN, Ordering::SeqCst);
    *shared.last_busy_ms.lock() = rec.now_ms();
    let quiet_ms = args.lease_ms as f64 + 5000.0;
    let drain_end = rec.now_ms() + args.drain_timeout as f64 * 1000.0;
    while rec.now_ms() < drain_end && !abort.load(Ordering::SeqCst) {
        if rec.now_ms() - *shared.last_busy_ms.lock() > quiet_ms {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shared.phase.store(PHASE_STOP, Ordering::SeqCst);
    for p in processes {
        if tokio::time::timeout(Duration::from_secs(30), p).await.is_err() {
            tracing::warn!("a process did not stop within 30 s");
        }
    }
    anyhow::ensure!(!abort.load(Ordering::SeqCst), "interrupted");

    // Final reads of every job anyone saw.
    eprintln!("jepsen: drained at {:.1} s; final reads", rec.now_ms() / 1000.0);
    let jobs = shared.known_jobs();
    let reader = 1000i64;
    let chunks: Vec<Vec<String>> = jobs.chunks(jobs.len().div_ceil(8).max(1)).map(|c| c.to_vec()).collect();
    let mut tasks = Vec::new();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let shared = shared.clone();
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            for id in chunk {
                for attempt in 0..10usize {
                    let node = ids[(i + attempt) % ids.len()];
                    if workload::read(&shared, reader + i as i64, node, &id, F::FinalRead).await {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }

    // (f) the cluster heals.
    Ok(heal::check(&nemesis.db, &shared).await)
}

/// `YYYYMMDDTHHMMSS` in UTC, for the results folder.
fn chrono_stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%S").to_string()
}
