//! Wires one node together: RocksDB, Raft, broker, leader duties and the gRPC
//! server (public API with auth, Raft traffic, health, reflection) on one
//! listener. `run` returns when `shutdown` resolves.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use crate::broker::duties::Duties;
use crate::broker::Broker;
use crate::config::Config;
use crate::grpc::admin::AdminService;
use crate::grpc::auth::Auth;
use crate::grpc::peers::Peers;
use crate::grpc::{EdgeConfig, SiloService};
use crate::limits::GRPC_MESSAGE_BYTES_MAX;
use crate::pb::raft::admin_server::AdminServer;
use crate::pb::silo::silo_server::SiloServer;
use crate::raft::{NodeInfo, RaftNode};
use tonic::service::interceptor::InterceptedService;

/// A bound, not yet serving node: lets callers learn the address first.
pub struct Bound {
    pub config: Config,
    pub listener: TcpListener,
    pub local_addr: SocketAddr,
    /// The console's listener (`webui.listen`), unless turned off.
    pub webui: Option<TcpListener>,
    /// The metrics endpoint's listener (`metrics.listen`), unless turned off.
    pub metrics: Option<TcpListener>,
}

pub async fn bind(config: Config) -> anyhow::Result<Bound> {
    config.validate().map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let local_addr = listener.local_addr()?;
    let webui = match config.webui.listen.as_str() {
        "" => None,
        addr => Some(crate::webui::bind(addr).await?),
    };
    let metrics = match config.metrics_listen() {
        "" => None,
        addr => Some(crate::telemetry::bind(addr).await?),
    };
    Ok(Bound { config, listener, local_addr, webui, metrics })
}

impl Bound {
    /// The address clients and peers should use for this node.
    pub fn advertise_addr(&self) -> String {
        self.config.advertise.clone().unwrap_or_else(|| self.local_addr.to_string())
    }

    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let advertise_addr = self.advertise_addr();
        let Bound { config, listener, webui, metrics, .. } = self;
        // The recorder is process-wide: install it before anything records,
        // and only when metrics are served.
        if metrics.is_some() {
            crate::telemetry::recorder()?;
        }
        if config.metrics_listen.is_some() {
            tracing::warn!("metrics_listen is deprecated: write [metrics] listen = \"...\" instead");
        }
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        check_storage_format(&config.data_dir)?;
        let db = crate::storage::rocks::open(&config.data_dir.join("db"), &config.storage)
            .with_context(|| format!("opening RocksDB in {}", config.data_dir.display()))?;
        let db_for_metrics = db.clone();
        let broker = Arc::new(Broker::new());
        let tls = match config.tls.enabled() {
            true => Some(crate::tls::NodeTls::load(&config.tls)?),
            false => None,
        };
        if let Some(t) = &tls {
            let host = advertise_addr.rsplit_once(':').map_or(advertise_addr.as_str(), |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if !t.names(host) {
                tracing::warn!(
                    advertise = %advertise_addr,
                    "the node certificate does not name {host}: peers and clients dialling it will refuse the certificate \
                     (issue it with --san {host})"
                );
            }
        }
        let node = Arc::new(
            RaftNode::open(
                config.node_id,
                &config.raft,
                config.auth.token.clone(),
                tls.clone(),
                db,
                broker.clone(),
                &config.data_dir,
            )
            .await?,
        );
        let peers = Arc::new(Peers::new(config.auth.token.clone(), tls.clone()));

        let (stop_tx, stop_rx) = watch::channel(false);
        let edge = EdgeConfig {
            tenancy_enabled: config.tenancy.enabled,
            dev_mode: config.dev_mode,
            max_payload_bytes: config.max_payload_bytes,
            lease_reply_bytes_max: config.lease_reply_bytes_max,
            stale_reads: config.stale_reads,
            lease_ms: config.lease_ms,
            advertise_addr: advertise_addr.clone(),
            leadership_confirmation_max_age_ms: config.raft.election_timeout_min_ms / 2,
            query: config.query.clone(),
        };
        let service = Arc::new(SiloService::new(node.clone(), broker.clone(), peers.clone(), edge));
        let silo = SiloServer::from_arc(service.clone())
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        let auth = Auth::new(config.auth.token.clone());
        let with_auth = |auth: Auth| move |r| auth.check(r);
        let silo = InterceptedService::new(silo, with_auth(auth.clone()));
        // Node-to-node and admin traffic share the listener and the token;
        // with TLS, Raft traffic must also come from a node certificate.
        let tls_on = tls.is_some();
        let raft_auth = auth.clone();
        let raft_service = InterceptedService::new(node.raft_service(), move |r: tonic::Request<()>| {
            crate::tls::require_node_certificate(tls_on, &r)?;
            raft_auth.check(r)
        });
        let admin = AdminServer::new(AdminService {
            node: node.clone(),
            peers: peers.clone(),
            advertise_addr: advertise_addr.clone(),
        });
        let admin_auth = auth;
        let admin = InterceptedService::new(admin, move |r: tonic::Request<()>| {
            crate::tls::require_client_certificate(tls_on, &r)?;
            admin_auth.check(r)
        });
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<SiloServer<SiloService>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::silo::FILE_DESCRIPTOR_SET)
            .build_v1()?;

        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .trace_fn(|req| crate::traces::rpc_span(req))
            .add_service(health)
            .add_service(reflection)
            .add_service(raft_service)
            .add_service(admin)
            .add_service(silo);
        let mut server_stop = stop_rx.clone();
        let until_stopped = async move {
            let _ = server_stop.changed().await;
        };
        let serving = match &tls {
            Some(tls) => {
                tokio::spawn(tls.clone().watch(stop_rx.clone()));
                let incoming = crate::tls::incoming(listener, tls.clone(), stop_rx.clone());
                tokio::spawn(server.serve_with_incoming_shutdown(incoming, until_stopped))
            }
            None => {
                // SIGHUP reloads certificates; without TLS it must still not
                // end the process (its default action).
                tokio::spawn(crate::tls::ignore_hangups(stop_rx.clone()));
                // serve_with_incoming does not apply the builder's TCP options: set
                // TCP_NODELAY on each accepted socket ourselves, or small replies wait
                // for the peer's delayed ACK (~40 ms).
                let incoming = TcpListenerStream::new(listener).map(|conn| {
                    if let Ok(stream) = &conn {
                        let _ = stream.set_nodelay(true);
                    }
                    conn
                });
                tokio::spawn(server.serve_with_incoming_shutdown(incoming, until_stopped))
            }
        };

        if config.cluster.join {
            tracing::info!("waiting to be added to an existing cluster");
        } else {
            let members: BTreeMap<u64, NodeInfo> = if config.cluster.initial_members.is_empty() {
                BTreeMap::from([(config.node_id, NodeInfo { grpc_addr: advertise_addr.clone() })])
            } else {
                config.cluster.initial_members.iter().map(|m| (m.id, NodeInfo { grpc_addr: m.addr.clone() })).collect()
            };
            let lowest = *members.keys().next().expect("members are non-empty");
            if lowest == config.node_id && node.initialize_if_fresh(members).await? {
                tracing::info!(node_id = config.node_id, "formed a new cluster");
            }
        }

        let duties = Duties {
            node: node.clone(),
            broker: broker.clone(),
            num_shards: config.num_shards,
            lease_ms: config.lease_ms,
            tick: Duration::from_millis(50),
            retention_ms: config.retention_ms,
        };
        let duties_task = tokio::spawn(duties.run(stop_rx.clone()));

        if let Some(listener) = webui {
            let addr = listener.local_addr()?;
            let console = crate::webui::Console {
                silo: service,
                node: node.clone(),
                broker: broker.clone(),
                peers: peers.clone(),
                token: config.auth.token.clone(),
                allowed_hosts: config.webui.allowed_hosts.clone(),
                sessions: Default::default(),
                config_toml: crate::webui::masked_config(&config),
                advertise_addr: advertise_addr.clone(),
            };
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::webui::serve(listener, console, stop).await {
                    tracing::error!(error = %e, "the web console stopped");
                }
            });
            tracing::info!(%addr, "web console serving");
            if !addr.ip().is_loopback() && config.auth.token.is_none() {
                tracing::warn!(
                    %addr,
                    "the web console listens beyond loopback without auth.token: anyone who reaches it can cancel and delete jobs"
                );
            }
            // Machine-readable, like SILO_LISTENING (tests bind port 0).
            println!("SILO_WEBUI http://{addr}");
        }

        if let Some(listener) = metrics {
            let addr = listener.local_addr()?;
            let sources = crate::telemetry::Sources { node: node.clone(), broker: broker.clone(), db: db_for_metrics };
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::telemetry::serve(listener, sources, stop).await {
                    tracing::error!(error = %e, "the metrics endpoint stopped");
                }
            });
            tracing::info!(%addr, "metrics serving");
            println!("SILO_METRICS http://{addr}/metrics");
        }

        tracing::info!(addr = %advertise_addr, node_id = config.node_id, data_dir = %config.data_dir.display(), "silo serving");
        // A machine-readable line for scripts and tests that start on port 0.
        println!("SILO_LISTENING {advertise_addr}");

        shutdown.await;
        tracing::info!("shutting down");
        // Readiness probes stop sending traffic here first.
        health_reporter.set_not_serving::<SiloServer<SiloService>>().await;
        hand_off_leadership(&node, &peers).await;
        let _ = stop_tx.send(true);
        let _ = duties_task.await;
        // Stop accepting calls first, give in-flight ones a moment, then stop Raft.
        let serving = tokio::time::timeout(Duration::from_secs(3), serving).await;
        node.shutdown().await;
        let db = node.db().clone();
        match tokio::task::spawn_blocking(move || crate::storage::rocks::flush_all(&db)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!("flushing the state at shutdown failed (a restart re-applies it from the log): {e}")
            }
            Err(e) => tracing::warn!("flushing the state at shutdown: {e}"),
        }
        match serving {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                tracing::info!("open client connections did not close within 3 s; exiting anyway");
                Ok(())
            }
        }
    }
}

/// Longest a graceful shutdown waits for proposals already batched to apply.
pub const DRAIN_MAX: Duration = Duration::from_secs(3);
/// Longest it waits for another voter to take over after asking it to campaign.
pub const HAND_OFF_MAX: Duration = Duration::from_secs(5);

/// Graceful shutdown of a leader (issue #14): stop proposing (clients get
/// UNAVAILABLE and retry), let batched proposals apply (at most
/// [`DRAIN_MAX`]), stop heartbeats, then make the most caught-up voter that
/// answers the target of a leadership transfer (a stopped voter is skipped
/// after 500 ms): it campaigns once the followers' leader lease
/// (`raft.election_timeout_min_ms`) has lapsed, and the others do not
/// compete (`raft::election`). Waits until a new leader leads (at most
/// [`HAND_OFF_MAX`]). Writes pause for about one lease instead of a random
/// election timeout after a kill -9. A follower, or a single voter, only
/// stops proposing. Never fails: what does not happen in time is logged and
/// the node stops anyway.
pub async fn hand_off_leadership(node: &RaftNode, peers: &Peers) {
    let leading = node.leader_term().is_some();
    node.begin_drain();
    if !leading {
        return;
    }
    let status = node.status();
    // Voters, most caught-up first: the first that answers is asked to campaign.
    let mut targets: Vec<(u64, Option<u64>)> = status
        .replication
        .iter()
        .filter(|(id, _)| *id != node.id() && status.voters.iter().any(|(v, _)| v == id))
        .copied()
        .collect();
    if targets.is_empty() {
        return;
    }
    targets.sort_by_key(|(_, matched)| std::cmp::Reverse(matched.unwrap_or(0)));
    let last = status.last_log_index.unwrap_or(0);
    if tokio::time::timeout(DRAIN_MAX, node.wait_applied(last)).await.is_err() {
        tracing::warn!(last, "proposals in flight did not apply within {DRAIN_MAX:?}; handing off anyway");
    }
    node.set_heartbeats(false);
    let elected = async {
        let mut asked = false;
        for (id, _) in &targets {
            let Some((_, info)) = status.voters.iter().find(|(v, _)| v == id) else { continue };
            let ask = async {
                let mut admin = peers.admin(&info.grpc_addr)?;
                let mut req = peers.request(crate::pb::raft::TriggerElectionRequest {});
                req.set_timeout(Duration::from_millis(500));
                admin.trigger_election(req).await
            };
            match ask.await {
                Ok(_) => {
                    tracing::info!(to = id, "handing leadership off before stopping");
                    asked = true;
                    break;
                }
                Err(e) => tracing::info!(node = id, "not handing leadership to an unreachable voter: {e}"),
            }
        }
        if !asked {
            return Err(tonic::Status::unavailable("no other voter answered"));
        }
        loop {
            match node.status().leader {
                Some(l) if l != node.id() => return Ok::<u64, tonic::Status>(l),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    match tokio::time::timeout(HAND_OFF_MAX, elected).await {
        Ok(Ok(leader)) => tracing::info!(leader, "leadership handed off"),
        Ok(Err(e)) => tracing::warn!("leadership hand-off failed: {e}"),
        Err(_) => tracing::warn!("no new leader within {HAND_OFF_MAX:?}; stopping anyway"),
    }
}

/// Layout version of the state machine's records in a data directory. 2 added
/// the query indexes and per-tenant counters (issue #12) and the attempt
/// number in queued tasks; a directory of version 1 lacks them.
pub const STORAGE_FORMAT: u32 = 2;
const FORMAT_FILE: &str = "FORMAT";

/// Refuses a data directory written by another storage format (its records
/// would be misread or its indexes missing); stamps a new directory.
fn check_storage_format(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let stamp = data_dir.join(FORMAT_FILE);
    match std::fs::read_to_string(&stamp) {
        Ok(text) => {
            let found: u32 = text.trim().parse().with_context(|| format!("unreadable {}", stamp.display()))?;
            anyhow::ensure!(
                found == STORAGE_FORMAT,
                "data directory {} has storage format {found}; this build reads format {STORAGE_FORMAT}: \
                 start it with an empty data directory (or the build that wrote it)",
                data_dir.display()
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::ensure!(
                !data_dir.join("db").exists(),
                "data directory {} was written by a build before storage format {STORAGE_FORMAT} \
                 (no query indexes): start it with an empty data directory",
                data_dir.display()
            );
            std::fs::write(&stamp, format!("{STORAGE_FORMAT}\n"))
                .with_context(|| format!("writing {}", stamp.display()))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", stamp.display())),
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn a_data_directory_of_another_storage_format_is_refused() {
        let fresh = tempfile::tempdir().unwrap();
        check_storage_format(fresh.path()).unwrap();
        assert_eq!(std::fs::read_to_string(fresh.path().join(FORMAT_FILE)).unwrap().trim(), "2");
        check_storage_format(fresh.path()).unwrap();

        let old = tempfile::tempdir().unwrap();
        std::fs::create_dir(old.path().join("db")).unwrap();
        let e = check_storage_format(old.path()).unwrap_err().to_string();
        assert!(e.contains("before storage format 2"), "{e}");

        std::fs::write(fresh.path().join(FORMAT_FILE), "1\n").unwrap();
        let e = check_storage_format(fresh.path()).unwrap_err().to_string();
        assert!(e.contains("has storage format 1; this build reads format 2"), "{e}");
    }
}
