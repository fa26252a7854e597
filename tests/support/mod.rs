//! Test harness: real `silo` server processes with real RocksDB directories.
//! Every wait has a deadline; nothing sleeps a fixed time and hopes.
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use silo::pb::silo as pb;
use silo::pb::silo::silo_client::SiloClient;
use tonic::transport::Channel;

pub type Client = SiloClient<Channel>;

/// Cadence of polling loops that wait for a condition (each has a deadline).
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// Options rendered into the node's TOML config file.
#[derive(Clone, Debug)]
pub struct Opts {
    pub dev_mode: bool,
    pub tenancy: bool,
    pub auth_token: Option<String>,
    pub num_shards: u32,
    pub lease_ms: i64,
    pub max_payload_bytes: Option<usize>,
    pub extra_toml: String,
    /// Extra environment for the server process.
    pub env: Vec<(String, String)>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            dev_mode: true,
            tenancy: false,
            auth_token: None,
            num_shards: 1,
            lease_ms: 10_000,
            max_payload_bytes: None,
            extra_toml: String::new(),
            env: Vec::new(),
        }
    }
}

pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    opts: Opts,
    listen: String,
}

pub async fn wait_until<F, Fut, T>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

impl Server {
    pub async fn start(opts: Opts) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s =
            Server { child: None, addr: String::new(), dir, _tmp: Some(tmp), opts, listen: "127.0.0.1:0".into() };
        s.spawn();
        s.wait_ready().await;
        s
    }

    pub async fn start_default() -> Server {
        Server::start(Opts::default()).await
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("silo.toml")
    }

    fn write_config(&self) {
        let o = &self.opts;
        let mut toml = format!(
            "node_id = 1\nlisten = \"{}\"\ndata_dir = \"{}\"\ndev_mode = {}\nnum_shards = {}\nlease_ms = {}\nwebui.listen = \"\"\nmetrics.listen = \"\"\n",
            self.listen,
            self.dir.join("data").display(),
            o.dev_mode,
            o.num_shards,
            o.lease_ms
        );
        if let Some(m) = o.max_payload_bytes {
            toml.push_str(&format!("max_payload_bytes = {m}\n"));
        }
        toml.push_str(&o.extra_toml);
        toml.push_str(&format!("[tenancy]\nenabled = {}\n", o.tenancy));
        if let Some(t) = &o.auth_token {
            toml.push_str(&format!("[auth]\ntoken = \"{t}\"\n"));
        }
        std::fs::write(self.config_path(), toml).expect("write config");
    }

    fn spawn(&mut self) {
        self.write_config();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("server.log")).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_silo"))
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .env("SILO_LOG", "info,openraft=warn")
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn silo");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("SILO_LISTENING ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
            }
        });
        self.addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("server did not report its address; log:\n{}", self.log()));
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Waits until the node leads and its shard map is visible.
    pub async fn wait_ready(&self) {
        let addr = self.addr.clone();
        let token = self.opts.auth_token.clone();
        wait_until("server ready (leader with a shard map)", Duration::from_secs(30), || {
            let addr = addr.clone();
            let token = token.clone();
            async move {
                let mut c = connect(&addr).await.ok()?;
                let mut req = tonic::Request::new(pb::GetClusterInfoRequest {});
                if let Some(t) = token {
                    req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().ok()?);
                }
                let info = c.get_cluster_info(req).await.ok()?.into_inner();
                info.shard_owners.iter().all(|o| !o.grpc_addr.is_empty()).then_some(())
            }
        })
        .await;
    }

    pub async fn client(&self) -> Client {
        connect(&self.addr).await.expect("connect")
    }

    /// The UUID of shard `i`.
    pub async fn shard(&self, i: usize) -> String {
        let mut c = self.client().await;
        let mut req = tonic::Request::new(pb::GetClusterInfoRequest {});
        if let Some(t) = &self.opts.auth_token {
            req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let info = c.get_cluster_info(req).await.expect("cluster info").into_inner();
        info.shard_owners[i].shard_id.clone()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        c.wait().expect("wait")
    }

    /// Starts again on the same data directory (new port).
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_ready().await;
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::env::var_os("SILO_TEST_KEEP").is_some() {
            if let Some(tmp) = self._tmp.take() {
                eprintln!("kept server dir {}", tmp.keep().display());
            }
        }
        if std::thread::panicking() {
            eprintln!("---- server log ({}) ----\n{}", self.addr, self.log());
        }
    }
}

pub async fn connect(addr: &str) -> Result<Client, tonic::transport::Error> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await?;
    Ok(SiloClient::new(ch).max_decoding_message_size(256 << 20).max_encoding_message_size(256 << 20))
}

pub fn msgpack(v: &[u8]) -> Option<pb::SerializedBytes> {
    Some(pb::SerializedBytes { encoding: Some(pb::serialized_bytes::Encoding::Msgpack(v.to_vec())) })
}

pub fn bytes_of(b: &Option<pb::SerializedBytes>) -> Vec<u8> {
    match b.as_ref().and_then(|b| b.encoding.clone()) {
        Some(pb::serialized_bytes::Encoding::Msgpack(v)) => v,
        None => vec![],
    }
}

/// An EnqueueRequest with sensible defaults (priority 50, start now, "default" group).
pub fn enqueue_req(shard: &str, id: &str) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        shard: shard.into(),
        id: id.into(),
        priority: 50,
        start_at_ms: 0,
        retry_policy: None,
        payload: msgpack(&[0x91, 0x01]),
        limits: vec![],
        tenant: None,
        metadata: Default::default(),
        task_group: "default".into(),
    }
}

/// A retry policy without jitter.
pub fn retry_policy(
    retry_count: u32,
    initial_interval_ms: i64,
    max_interval_ms: i64,
    backoff_factor: f64,
) -> Option<pb::RetryPolicy> {
    Some(pb::RetryPolicy {
        retry_count,
        initial_interval_ms,
        max_interval_ms,
        randomize_interval: false,
        backoff_factor,
    })
}

pub fn lease_req(group: &str, worker: &str, max: u32) -> pb::LeaseTasksRequest {
    pb::LeaseTasksRequest {
        shard: None,
        worker_id: worker.into(),
        max_tasks: max,
        task_group: group.into(),
        tenant: None,
    }
}

pub fn success_req(task: &pb::Task, result: &[u8]) -> pb::ReportOutcomeRequest {
    pb::ReportOutcomeRequest {
        shard: task.shard.clone(),
        task_id: task.id.clone(),
        outcome: Some(pb::report_outcome_request::Outcome::Success(msgpack(result).unwrap())),
        tenant_id: task.tenant_id.clone(),
    }
}

pub fn failure_req(task: &pb::Task, code: &str) -> pb::ReportOutcomeRequest {
    pb::ReportOutcomeRequest {
        shard: task.shard.clone(),
        task_id: task.id.clone(),
        outcome: Some(pb::report_outcome_request::Outcome::Failure(pb::Failure {
            code: code.into(),
            data: msgpack(&[0xc0]),
        })),
        tenant_id: task.tenant_id.clone(),
    }
}

pub fn job_req(shard: &str, id: &str) -> pb::GetJobRequest {
    pb::GetJobRequest { shard: shard.into(), id: id.into(), tenant: None, include_attempts: true }
}

pub fn now_ms() -> i64 {
    silo::wall_clock_ms()
}

/// Leases tasks of `group` until `n` are collected or the deadline passes.
pub async fn lease_n(c: &mut Client, group: &str, worker: &str, n: usize) -> Vec<pb::Task> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let poll = Duration::from_millis(20);
    let mut got: Vec<pb::Task> = Vec::new();
    while got.len() < n {
        assert!(Instant::now() < deadline, "timed out leasing {n} tasks of {group}; got {}", got.len());
        let batch = c.lease_tasks(lease_req(group, worker, (n - got.len()) as u32)).await.expect("lease_tasks");
        let tasks = batch.into_inner().tasks;
        if tasks.is_empty() {
            tokio::time::sleep(poll).await;
        }
        got.extend(tasks);
    }
    got
}

#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    r: Result<T, tonic::Status>,
    code: tonic::Code,
    message: &str,
) -> tonic::Status {
    let s = r.expect_err("expected an error status");
    assert_eq!(s.code(), code, "status {s:?}");
    assert!(s.message().contains(message), "message {:?} should contain {:?}", s.message(), message);
    s
}
