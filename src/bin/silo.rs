//! The `silo` binary: parse flags, set up logging, call the library.
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use silo::config::Config;

#[derive(Parser)]
#[command(name = "silo", version, about = "A Silo-compatible job queue replicated with Raft")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node (a single-node cluster unless configured otherwise).
    Serve(ServeArgs),
    /// Cluster status and membership changes.
    Ctl(CtlArgs),
    /// Fault-injection measurements on a local cluster of real processes.
    Chaos(ChaosArgs),
    /// Load a running server or cluster and report throughput and latency.
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Servers (comma-separated host:port list).
    #[arg(long, default_value = "127.0.0.1:7450", value_delimiter = ',')]
    servers: Vec<String>,
    #[arg(long, env = "SILO_AUTH_TOKEN")]
    token: Option<String>,
    /// Concurrent enqueue loops.
    #[arg(long, default_value_t = 64)]
    enqueuers: usize,
    /// Concurrent worker loops.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    #[arg(long, default_value_t = 64)]
    tasks_per_poll: u32,
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Distinct tenants (needs tenancy on the server when > 1).
    #[arg(long, default_value_t = 1)]
    tenants: usize,
    /// Distinct priorities cycled through.
    #[arg(long, default_value_t = 1)]
    priorities: u32,
    /// Concurrency limit per key (0 = none).
    #[arg(long, default_value_t = 0)]
    concurrency_limit: u32,
    #[arg(long, default_value_t = 100)]
    limit_keys: usize,
    /// Metadata entries per job (`m0` = `v<job % 100>`, `m1` = …), so the
    /// metadata index is part of the measured cost.
    #[arg(long, default_value_t = 0)]
    metadata_keys: usize,
    /// Jobs enqueued by the enqueue phase.
    #[arg(long, default_value_t = 50_000)]
    jobs: u64,
    /// Length of the steady phase.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Jobs the backlog phase leaves waiting in `<task-group>-backlog` (no worker leases that group).
    #[arg(long, default_value_t = 0)]
    backlog: u64,
    /// Phases to run, in order: backlog, enqueue, drain, steady.
    #[arg(long, default_value = "enqueue,drain,steady", value_delimiter = ',')]
    phases: Vec<String>,
    #[arg(long, default_value = "bench")]
    task_group: String,
    /// Pace enqueues to this many jobs/s in total (latency at a given load).
    #[arg(long)]
    rate: Option<f64>,
    /// Print the result as JSON (includes end_to_end_jobs_per_s).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CtlArgs {
    /// Any node of the cluster.
    #[arg(long, env = "SILO_SERVER", default_value = "127.0.0.1:7450")]
    server: String,
    /// Cluster token (when auth is on).
    #[arg(long, env = "SILO_AUTH_TOKEN")]
    token: Option<String>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Members, leader, and applied index per node.
    Status {
        /// Print JSON: {"leader": id, "nodes": [{"id", "addr", "role", "applied_index", ...}]}.
        #[arg(long)]
        json: bool,
    },
    /// Add a node (started with `cluster.join = true`) as a learner; waits until it caught up.
    AddLearner { id: u64, addr: String },
    /// Promote learners to voters.
    Promote { ids: Vec<u64> },
    /// Remove nodes from the cluster.
    Remove { ids: Vec<u64> },
    /// Move leadership to another voter.
    TransferLeader { id: u64 },
    /// Build a snapshot on --server now (the log behind it can then be purged).
    Snapshot,
    /// Run read-only SQL over one shard's jobs (tables jobs, tasks, queues,
    /// tenant_counts, queue_counts; see README "Querying jobs with SQL").
    Query {
        /// The statement, e.g. "SELECT id, status_kind FROM jobs LIMIT 10".
        sql: String,
        /// Tenant whose jobs the statement sees (routes to its shard).
        #[arg(long, short = 't')]
        tenant: Option<String>,
        /// Shard id to query (default: the shard of --tenant, or of the default tenant).
        #[arg(long)]
        shard: Option<String>,
        /// Bind value for $1, $2, … in order: integers, decimals, true/false and
        /// null are typed; anything else (or a value prefixed `str:`) is text.
        #[arg(long = "param", short = 'p')]
        params: Vec<String>,
        /// Print one JSON object per row instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct ChaosArgs {
    #[command(subcommand)]
    command: ChaosCommand,
}

#[derive(Subcommand)]
enum ChaosCommand {
    /// Kill the leader of a local cluster repeatedly while a client writes; report
    /// the write-unavailability window per trial (median, max) as JSON.
    Failover {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 10)]
        trials: usize,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "SILO_CONFIG")]
    config: Option<PathBuf>,
    /// Address to bind, host:port (default 127.0.0.1:7450; port 0 picks a free port).
    #[arg(long, env = "SILO_LISTEN")]
    listen: Option<String>,
    /// Address clients and peers use to reach this node (default: the bound address).
    #[arg(long, env = "SILO_ADVERTISE")]
    advertise: Option<String>,
    /// Data directory (default ./silo-data).
    #[arg(long, env = "SILO_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Raft node id (default 1).
    #[arg(long, env = "SILO_NODE_ID")]
    node_id: Option<u64>,
    /// Enable dev mode (ResetShards).
    #[arg(long, env = "SILO_DEV_MODE")]
    dev_mode: bool,
    /// Require a tenant on every job call.
    #[arg(long, env = "SILO_TENANCY")]
    tenancy: bool,
    /// Require `authorization: Bearer <token>` on every API call.
    #[arg(long, env = "SILO_AUTH_TOKEN")]
    auth_token: Option<String>,
    /// Prometheus endpoint host:port (empty disables).
    #[arg(long, env = "SILO_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Web console host:port (empty disables; default 127.0.0.1:7460).
    #[arg(long, env = "SILO_WEBUI_LISTEN")]
    webui_listen: Option<String>,
    /// Log filter, e.g. `info` or `silo=debug,openraft=info`.
    #[arg(long, env = "SILO_LOG", default_value = "info,openraft=warn")]
    log: String,
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_toml(
            &std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?,
        )
        .map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))?,
        None => Config::default(),
    };
    if let Some(v) = &args.listen {
        config.listen = v.clone();
    }
    if let Some(v) = &args.advertise {
        config.advertise = Some(v.clone());
    }
    if let Some(v) = &args.data_dir {
        config.data_dir = v.clone();
    }
    if let Some(v) = args.node_id {
        config.node_id = v;
    }
    if let Some(v) = &args.metrics_listen {
        config.metrics_listen = v.clone();
    }
    if let Some(v) = &args.webui_listen {
        config.webui.listen = v.clone();
    }
    if let Some(v) = &args.auth_token {
        config.auth.token = Some(v.clone());
    }
    config.dev_mode |= args.dev_mode;
    config.tenancy.enabled |= args.tenancy;
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

fn init_cli_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("SILO_LOG").unwrap_or_else(|_| "warn".into()),
        ))
        .with_writer(std::io::stderr)
        .init();
}

async fn run_ctl(args: CtlArgs) -> anyhow::Result<()> {
    let ctl = silo::ctl::Ctl { server: args.server, token: args.token };
    match args.command {
        CtlCommand::Status { json } => {
            let view = ctl.cluster().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", silo::ctl::render(&view));
            }
        }
        CtlCommand::AddLearner { id, addr } => {
            let m = ctl.add_learner(id, &addr).await?;
            println!("added node {id} as a learner; voters {:?}, learners {:?}", ids(&m.voters), ids(&m.learners));
        }
        CtlCommand::Promote { ids: add } => {
            let m = ctl.change(add, vec![]).await?;
            println!("voters {:?}, learners {:?}", ids(&m.voters), ids(&m.learners));
        }
        CtlCommand::Remove { ids: remove } => {
            let m = ctl.change(vec![], remove).await?;
            println!("voters {:?}, learners {:?}", ids(&m.voters), ids(&m.learners));
        }
        CtlCommand::TransferLeader { id } => {
            let leader = ctl.transfer_leader(id).await?;
            println!("leader is now node {leader}");
        }
        CtlCommand::Snapshot => {
            ctl.snapshot().await?;
            println!("snapshot triggered");
        }
        CtlCommand::Query { sql, tenant, shard, params, json } => {
            let params = params.iter().map(|p| silo::ctl::query_parameter(p)).collect();
            print!("{}", ctl.query(&sql, tenant.as_deref(), shard.as_deref(), params, json).await?);
        }
    }
    Ok(())
}

fn ids(members: &[silo::pb::raft::Member]) -> Vec<u64> {
    members.iter().map(|m| m.id).collect()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Ctl(args) => {
            init_cli_logging();
            tokio::runtime::Runtime::new()?.block_on(run_ctl(args))
        }
        Command::Bench(a) => {
            init_cli_logging();
            for p in &a.phases {
                if !["backlog", "enqueue", "drain", "steady"].contains(&p.as_str()) {
                    anyhow::bail!("unknown phase {p:?}: use backlog, enqueue, drain, steady");
                }
            }
            let opts = silo::bench::BenchOpts {
                servers: a.servers,
                token: a.token,
                enqueuers: a.enqueuers.max(1),
                workers: a.workers.max(1),
                tasks_per_poll: a.tasks_per_poll.max(1),
                payload_bytes: a.payload_bytes,
                tenants: a.tenants,
                priorities: a.priorities,
                concurrency_limit: a.concurrency_limit,
                limit_keys: a.limit_keys,
                metadata_keys: a.metadata_keys,
                enqueue_jobs: a.jobs,
                backlog_jobs: a.backlog,
                steady_secs: a.seconds,
                phases: a.phases,
                task_group: a.task_group,
                progress: !a.json || std::io::IsTerminal::is_terminal(&std::io::stderr()),
                enqueue_rate: a.rate.filter(|r| *r > 0.0),
            };
            let report = tokio::runtime::Runtime::new()?.block_on(silo::bench::run(opts))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("end-to-end: {:.0} jobs/s", report.end_to_end_jobs_per_s);
            }
            Ok(())
        }
        Command::Chaos(args) => {
            init_cli_logging();
            let bin = std::env::current_exe()?;
            tokio::runtime::Runtime::new()?.block_on(async move {
                match args.command {
                    ChaosCommand::Failover { nodes, trials } => {
                        let report = silo::chaos::failover(&bin, nodes, trials).await?;
                        println!("{}", serde_json::to_string_pretty(&report)?);
                        Ok(())
                    }
                }
            })
        }
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            // A panic anywhere (a corrupt record, a broken invariant) stops the
            // node: crashing beats diverging from the other replicas. SQL
            // statements are the exception: they only read, run on the query
            // runtime's threads, and a panic there fails that statement alone
            // (INTERNAL), never the node.
            let default_hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                default_hook(info);
                if !silo::query::on_query_thread() {
                    std::process::abort();
                }
            }));
            let config = load_config(&args)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async move {
                if !config.metrics_listen.is_empty() {
                    silo::server::install_metrics(&config.metrics_listen)?;
                }
                let bound = silo::server::bind(config).await?;
                bound.serve(shutdown_signal()).await
            })
        }
    }
}
