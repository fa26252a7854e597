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
    /// Operate a cluster: status, membership, jobs, routing, SQL, config checks.
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
    /// Nodes of the cluster, comma-separated (any one will do; job commands
    /// use them all to find shard owners).
    #[arg(long, env = "SILO_SERVER", default_value = "127.0.0.1:7450", global = true)]
    server: String,
    /// Cluster token (when auth is on).
    #[arg(long, env = "SILO_AUTH_TOKEN", global = true)]
    token: Option<String>,
    /// Tenant of the job (with tenancy on) or of the statement.
    #[arg(long, short = 't', global = true)]
    tenant: Option<String>,
    /// Connect with TLS, trusting this CA certificate (PEM; the nodes' `tls.ca_file`).
    #[arg(long, env = "SILO_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) to show: the Admin commands (status, membership,
    /// snapshot) need one on a TLS cluster, every command with `tls.client_auth = "all"`; needs --key.
    #[arg(long, env = "SILO_CLIENT_CERT", global = true, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, env = "SILO_CLIENT_KEY", global = true, requires = "cert")]
    key: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Members, leader, and applied index per node (--json: {"leader": id,
    /// "nodes": [{"id", "addr", "role", "applied_index", ...}]}).
    Status,
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
        /// The statement, e.g. "SELECT id, status_kind FROM jobs LIMIT 10"
        /// (--tenant: the tenant whose jobs it sees, which also picks the shard).
        sql: String,
        /// Shard id to query (default: the shard of --tenant, or of the default tenant).
        #[arg(long)]
        shard: Option<String>,
        /// Bind value for $1, $2, … in order: integers, decimals, true/false and
        /// null are typed; anything else (or a value prefixed `str:`) is text.
        #[arg(long = "param", short = 'p')]
        params: Vec<String>,
    },
    /// Read and change jobs (writes go to the leader; --tenant with tenancy on).
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Shards, their tenant-hash ranges and owners, and the members.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// How a tenant is routed.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Check a node's config file without starting it: names every broken
    /// setting, or prints the effective settings.
    ValidateConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// The task groups of the first --server: counts, the next ready tasks in
    /// the order workers get them, and running leases with worker and deadline.
    DumpTasks {
        /// Show only this task group (all groups' counts otherwise, and the
        /// tasks of each).
        #[arg(long)]
        task_group: Option<String>,
    },
    /// A CPU profile of the first --server in pprof format (`go tool pprof FILE`).
    Profile {
        #[arg(long, default_value_t = 30)]
        seconds: u32,
        /// Samples per second (default 99).
        #[arg(long, default_value_t = 0)]
        frequency: u32,
        /// Where to write the profile.
        #[arg(long, default_value = "silo-cpu.pb")]
        out: PathBuf,
    },
    /// Compact the first --server's store (all shards; rewrites it, can take minutes).
    Compact,
    /// Flush the first --server's memtables to disk.
    Flush,
    /// The first --server's SST files by level.
    StorageInfo,
    /// Make a development CA and node certificates for `[tls]` (README "TLS").
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// A new self-signed CA: <dir>/ca.pem and <dir>/ca.key (refuses to overwrite).
    Ca {
        /// Directory to write into (created if missing).
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// A node certificate (or with --client a client certificate) signed by
    /// <dir>/ca.pem: <dir>/<name>.pem and <dir>/<name>.key.
    Issue {
        /// File stem and common name, e.g. node1.
        name: String,
        /// Addresses clients and peers dial, comma-separated IPs or DNS names
        /// (e.g. 127.0.0.1,localhost,silo-1.internal); required for a node.
        #[arg(long, value_delimiter = ',', required_unless_present = "client")]
        san: Vec<String>,
        /// A client certificate (operators, applications): client usage only,
        /// so it can call the API and Admin but cannot act as a node.
        #[arg(long)]
        client: bool,
        /// Directory holding ca.pem and ca.key; the new files go there too.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

#[derive(Subcommand)]
enum JobCommand {
    /// A job's status, payload, metadata and (with --attempts) its attempts.
    Get {
        id: String,
        #[arg(long)]
        attempts: bool,
    },
    /// A finished job's result or error (an unfinished job is an error).
    Result { id: String },
    /// Cancel a job (a running one stops at its next heartbeat).
    Cancel { id: String },
    /// Run a cancelled or failed job again.
    Restart { id: String },
    /// Make a future-scheduled job due now.
    Expedite { id: String },
    /// Erase a finished job.
    Delete { id: String },
    /// Enqueue a job; prints its id.
    Enqueue {
        /// The payload as JSON (stored as MessagePack), e.g. '{"to":"a@b.c"}'.
        #[arg(long, default_value = "null")]
        payload: String,
        /// Job id (default: a new UUID).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "default")]
        task_group: String,
        /// 0 (first) to 99.
        #[arg(long, default_value_t = 50)]
        priority: u32,
        /// Metadata entries, `key=value`, repeatable.
        #[arg(long = "metadata", short = 'm')]
        metadata: Vec<String>,
        /// Start this many milliseconds from now (default: now; at most a year).
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..=31_536_000_000))]
        delay_ms: Option<i64>,
    },
    /// Wait for a job to finish and print its result.
    Await {
        id: String,
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Shards with ranges and owners, and the members (GetClusterInfo).
    Info,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// The tenant's XXH64 routing hash.
    Hash {
        #[arg(value_name = "TENANT")]
        name: String,
    },
    /// The shard (and its owner) a tenant's jobs live on (with tenancy on).
    Locate {
        #[arg(value_name = "TENANT")]
        name: String,
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
        /// `kill` (SIGKILL, a crash) or `term` (SIGTERM, a graceful shutdown).
        #[arg(long, value_enum, default_value = "kill")]
        signal: silo::chaos::StopSignal,
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
    /// Log filter, e.g. `info` or `silo=debug,openraft=info` (else `RUST_LOG`,
    /// else `info,openraft=warn`).
    #[arg(long, env = "SILO_LOG")]
    log: Option<String>,
    /// Log format: `text` or `json` (one object per line); overrides `log.format`.
    #[arg(long, env = "SILO_LOG_FORMAT")]
    log_format: Option<String>,
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
        config.metrics_listen = None;
        config.metrics.listen = v.clone();
    }
    if let Some(v) = &args.webui_listen {
        config.webui.listen = v.clone();
    }
    if let Some(v) = &args.log_format {
        config.log.format = v.clone();
    }
    if let Some(v) = &args.auth_token {
        config.auth.token = Some(v.clone());
    }
    config.dev_mode |= args.dev_mode;
    config.tenancy.enabled |= args.tenancy;
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

fn or_inf<'a>(s: &'a str, inf: &'a str) -> &'a str {
    if s.is_empty() {
        inf
    } else {
        s
    }
}

async fn job_command(
    ctl: &silo::ctl::Ctl,
    command: JobCommand,
    tenant: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    use silo::ctl::JobWrite;
    let write = |what: JobWrite, id: String| async move {
        ctl.job_write(what, &id, tenant).await?;
        if json {
            println!("{}", serde_json::json!({"id": id, "done": format!("{what:?}").to_lowercase()}));
        } else {
            println!("{what:?} job {id}: done");
        }
        anyhow::Ok(())
    };
    match command {
        JobCommand::Get { id, attempts } => {
            let view = ctl.job_get(&id, tenant, attempts).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", view.text());
            }
        }
        JobCommand::Result { id } => println!("{}", ctl.job_result(&id, tenant).await?),
        JobCommand::Await { id, timeout_ms } => {
            println!("{}", ctl.job_await(&id, tenant, std::time::Duration::from_millis(timeout_ms)).await?)
        }
        JobCommand::Cancel { id } => write(JobWrite::Cancel, id).await?,
        JobCommand::Restart { id } => write(JobWrite::Restart, id).await?,
        JobCommand::Expedite { id } => write(JobWrite::Expedite, id).await?,
        JobCommand::Delete { id } => write(JobWrite::Delete, id).await?,
        JobCommand::Enqueue { payload, id, task_group, priority, metadata, delay_ms } => {
            let mut meta = std::collections::HashMap::new();
            for m in metadata {
                let (k, v) =
                    m.split_once('=').ok_or_else(|| anyhow::anyhow!("--metadata takes key=value, got {m:?}"))?;
                meta.insert(k.to_string(), v.to_string());
            }
            let req = silo::pb::silo::EnqueueRequest {
                id: id.unwrap_or_default(),
                task_group,
                priority,
                metadata: meta,
                tenant: tenant.map(String::from),
                start_at_ms: delay_ms.map_or(0, |d| silo::wall_clock_ms() + d),
                ..Default::default()
            };
            let id = ctl.job_enqueue(req, &payload).await?;
            if json {
                println!("{}", serde_json::json!({"id": id}));
            } else {
                println!("{id}");
            }
        }
    }
    Ok(())
}

/// Resolves at the first SIGTERM or Ctrl-C (graceful shutdown:
/// `Bound::serve` drains and hands leadership off); a second one exits the
/// process at once with status 1.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("second signal: exiting at once");
        std::process::exit(1);
    });
}

fn init_cli_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("SILO_LOG").unwrap_or_else(|_| "warn".into()),
        ))
        .with_writer(std::io::stderr)
        .init();
}

/// `silo ctl cert ca|issue`.
fn cert_command(command: CertCommand, json: bool) -> anyhow::Result<()> {
    use silo::tls::certs;
    let (dir, written) = match command {
        CertCommand::Ca { dir, days } => {
            anyhow::ensure!(days > 0, "--days must be positive");
            anyhow::ensure!(
                !dir.join("ca.key").exists(),
                "{} already exists: a new CA would invalidate every certificate it signed (remove it first if that is what you want)",
                dir.join("ca.key").display()
            );
            let ca = certs::new_ca("silo dev CA", days)?;
            (dir.clone(), certs::write(&ca, &dir, "ca")?)
        }
        CertCommand::Issue { name, san, client, dir, days } => {
            anyhow::ensure!(days > 0, "--days must be positive");
            anyhow::ensure!(
                !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    && name != "ca",
                "the name must be letters, digits, '-', '_' or '.' (and not \"ca\"), got {name:?}"
            );
            anyhow::ensure!(
                !dir.join(format!("{name}.key")).exists(),
                "{} already exists (remove it first to issue a new certificate under that name)",
                dir.join(format!("{name}.key")).display()
            );
            let ca = certs::read(&dir, "ca")?;
            let pem = match client {
                true => certs::issue_client(&ca, &name, days)?,
                false => certs::issue_for_days(&ca, &name, &san, days)?,
            };
            (dir.clone(), certs::write(&pem, &dir, &name)?)
        }
    };
    let (cert, key) = written;
    if json {
        println!("{}", serde_json::json!({"cert": cert.display().to_string(), "key": key.display().to_string()}));
    } else {
        println!("wrote {} and {} (in {})", cert.display(), key.display(), dir.display());
    }
    Ok(())
}

async fn run_ctl(args: CtlArgs) -> anyhow::Result<()> {
    let tls = match &args.ca_cert {
        Some(ca) => Some(silo::tls::client_files(ca, args.cert.as_deref().zip(args.key.as_deref()))?),
        None if args.cert.is_some() => {
            anyhow::bail!("--cert needs --ca-cert (the CA that signed the nodes' certificates)")
        }
        None => None,
    };
    let ctl = silo::ctl::Ctl { server: args.server, token: args.token, tls };
    let (tenant, json) = (args.tenant, args.json);
    match args.command {
        CtlCommand::Status => {
            let view = ctl.cluster().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", silo::ctl::render(&view));
            }
        }
        CtlCommand::AddLearner { id, addr } => {
            let m = ctl.add_learner(id, &addr).await?;
            print_membership(&m, json, &format!("added node {id} as a learner; "));
        }
        CtlCommand::Promote { ids: add } => {
            let m = ctl.change(add, vec![]).await?;
            print_membership(&m, json, "");
        }
        CtlCommand::Remove { ids: remove } => {
            let m = ctl.change(vec![], remove).await?;
            print_membership(&m, json, "");
        }
        CtlCommand::TransferLeader { id } => {
            let leader = ctl.transfer_leader(id).await?;
            if json {
                println!("{}", serde_json::json!({ "leader": leader }));
            } else {
                println!("leader is now node {leader}");
            }
        }
        CtlCommand::Snapshot => {
            ctl.snapshot().await?;
            if json {
                println!("{}", serde_json::json!({ "snapshot": "triggered" }));
            } else {
                println!("snapshot triggered");
            }
        }
        CtlCommand::Query { sql, shard, params } => {
            let params = params.iter().map(|p| silo::ctl::query_parameter(p)).collect();
            print!("{}", ctl.query(&sql, tenant.as_deref(), shard.as_deref(), params, json).await?);
        }
        CtlCommand::Job { command } => job_command(&ctl, command, tenant.as_deref(), json).await?,
        CtlCommand::Cluster { command: ClusterCommand::Info } => {
            let info = ctl.cluster_info().await?;
            if json {
                let shards: Vec<_> = info
                    .shard_owners
                    .iter()
                    .map(|s| serde_json::json!({"shard": s.shard_id, "range_start": s.range_start, "range_end": s.range_end, "owner_node": s.node_id, "owner_addr": s.grpc_addr}))
                    .collect();
                let members: Vec<_> =
                    info.members.iter().map(|m| serde_json::json!({"node": m.node_id, "addr": m.grpc_addr})).collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"num_shards": info.num_shards, "shards": shards, "members": members})
                    )?
                );
            } else {
                println!("{:<38} {:<35} owner", "shard", "tenant-hash range");
                for s in &info.shard_owners {
                    let range = format!("[{}, {})", or_inf(&s.range_start, "-∞"), or_inf(&s.range_end, "+∞"));
                    println!("{:<38} {:<35} node {} at {}", s.shard_id, range, s.node_id, s.grpc_addr);
                }
                for m in &info.members {
                    println!("member node {} at {}", m.node_id, m.grpc_addr);
                }
            }
        }
        CtlCommand::Tenant { command: TenantCommand::Hash { name: tenant } } => {
            let hash = silo::ctl::tenant_hash(&tenant);
            if json {
                println!("{}", serde_json::json!({"tenant": tenant, "hash": hash}));
            } else {
                println!("{hash}");
            }
        }
        CtlCommand::Tenant { command: TenantCommand::Locate { name: tenant } } => {
            let info = ctl.cluster_info().await?;
            let shard = silo::ctl::locate(&info, &tenant)
                .ok_or_else(|| anyhow::anyhow!("no shard covers tenant {tenant:?} (is the shard map formed?)"))?;
            let hash = silo::ctl::tenant_hash(&tenant);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"tenant": tenant, "hash": hash, "shard": shard.shard_id, "owner_node": shard.node_id, "owner_addr": shard.grpc_addr})
                );
            } else {
                println!(
                    "tenant {tenant:?} (hash {hash}) → shard {} owned by node {} at {}",
                    shard.shard_id, shard.node_id, shard.grpc_addr
                );
            }
        }
        CtlCommand::Cert { command } => cert_command(command, json)?,
        CtlCommand::DumpTasks { task_group } => {
            let (mut groups, task_count) = ctl.dump_tasks().await?;
            if let Some(g) = &task_group {
                groups.retain(|d| &d.task_group == g);
                anyhow::ensure!(
                    !groups.is_empty(),
                    "no task group {g:?} on this node (it has no queued or running tasks)"
                );
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"task_count": task_count, "groups": groups}))?
                );
            } else {
                print!("{}", silo::ctl::render_dump(&groups, task_group.is_some()));
            }
        }
        CtlCommand::Profile { seconds, frequency, out } => {
            eprintln!("profiling for {seconds} s ...");
            let p = ctl.profile(seconds, frequency).await?;
            std::fs::write(&out, &p.profile_data).map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"file": out.display().to_string(), "samples": p.samples, "seconds": p.duration_seconds, "bytes": p.profile_data.len()})
                );
            } else {
                println!(
                    "wrote {} ({} samples over {} s); open it with `go tool pprof -http : {}`",
                    out.display(),
                    p.samples,
                    p.duration_seconds,
                    out.display()
                );
            }
        }
        command @ (CtlCommand::Compact | CtlCommand::Flush) => {
            let status = ctl.compact(matches!(command, CtlCommand::Flush)).await?;
            if json {
                println!("{}", serde_json::json!({"status": status}));
            } else {
                println!("{status}");
            }
        }
        CtlCommand::StorageInfo => {
            let i = ctl.storage_info().await?;
            if json {
                let runs: Vec<_> = i
                    .sorted_runs
                    .iter()
                    .map(|r| serde_json::json!({"level": r.id, "sst_count": r.sst_count, "bytes": r.estimated_size}))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"l0_sst_count": i.l0_sst_count, "l0_bytes": i.total_l0_size, "sorted_run_count": i.sorted_run_count, "bytes": i.total_sorted_run_size, "levels": runs})
                );
            } else {
                println!("level 0: {} files, {} bytes", i.l0_sst_count, i.total_l0_size);
                for r in &i.sorted_runs {
                    println!("level {}: {} files, {} bytes", r.id, r.sst_count, r.estimated_size);
                }
                println!("{} sorted runs, {} bytes in all", i.sorted_run_count, i.total_sorted_run_size);
            }
        }
        CtlCommand::ValidateConfig { config } => {
            let effective = silo::ctl::validate_config(&config)?;
            if json {
                println!("{}", serde_json::json!({"valid": true, "config": config.display().to_string()}));
            } else {
                print!("{} is valid; effective settings:\n{effective}", config.display());
            }
        }
    }
    Ok(())
}

fn ids(members: &[silo::pb::raft::Member]) -> Vec<u64> {
    members.iter().map(|m| m.id).collect()
}

/// A membership after a change: `{"voters": [{"id", "addr"}], "learners": [...]}` with --json.
fn print_membership(m: &silo::pb::raft::MembershipReply, json: bool, prefix: &str) {
    if json {
        let members = |ms: &[silo::pb::raft::Member]| -> Vec<serde_json::Value> {
            ms.iter().map(|x| serde_json::json!({ "id": x.id, "addr": x.addr })).collect()
        };
        println!("{}", serde_json::json!({ "voters": members(&m.voters), "learners": members(&m.learners) }));
    } else {
        println!("{prefix}voters {:?}, learners {:?}", ids(&m.voters), ids(&m.learners));
    }
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
                    ChaosCommand::Failover { nodes, trials, signal } => {
                        let report = silo::chaos::failover(&bin, nodes, trials, signal).await?;
                        println!("{}", serde_json::to_string_pretty(&report)?);
                        Ok(())
                    }
                }
            })
        }
        Command::Serve(args) => {
            let config = load_config(&args)?;
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
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async move {
                let traces = silo::traces::init(args.log.as_deref(), &config.log.format);
                let served = async {
                    let bound = silo::server::bind(config).await?;
                    bound.serve(shutdown_signal()).await
                }
                .await;
                silo::traces::shutdown(traces);
                served
            })
        }
    }
}
