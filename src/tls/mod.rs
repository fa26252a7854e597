//! TLS for the node's one gRPC listener and for its outgoing connections
//! (issue #14; config `[tls]`, README "TLS").
//!
//! What this module owns:
//! - [`NodeTls`]: the node's certificate, key and cluster CA, read from the
//!   PEM files of [`TlsConfig`] and read again on SIGHUP or when a file's
//!   modification time changes ([`NodeTls::watch`]). A file that no longer
//!   parses keeps the previous set in force and is logged; the swap is atomic,
//!   so a handshake sees either the old set or the new one.
//! - [`incoming`]: the accept loop. Each connection's TLS handshake runs in its
//!   own task (at most [`HANDSHAKES_IN_FLIGHT`] at once, each bounded by
//!   [`HANDSHAKE_TIMEOUT`]), so a slow or silent client cannot stall accepts.
//!   A client that speaks plaintext HTTP/2 to a TLS node gets one clear gRPC
//!   error ([`PLAINTEXT_REFUSED`]) instead of a reset connection.
//! - [`endpoint`]: the `https://` endpoint with the CA and this node's
//!   identity that every node-to-node connection uses (Raft, Admin, the
//!   console's forwarded writes).
//! - [`require_node_certificate`] and [`require_client_certificate`]: Raft
//!   traffic shows a node certificate signed by the cluster CA (mutual TLS
//!   between nodes), the Admin service any certificate the CA signed.
//! - [`certs`]: a development CA for `silo ctl cert`.
//!
//! Client certificates are verified by rustls against `ca_file` during the
//! handshake: with `client_auth = "peers"` a client may show none (API
//! clients authenticate with the bearer token), but one it shows must chain to
//! the CA and be within its validity period, or the handshake fails. tonic
//! then exposes the verified chain as `Request::peer_certs`, which is how the
//! Raft service tells a node from an API client.
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use parking_lot::{Mutex, RwLock};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::config::{ClientAuth, TlsConfig};

pub mod certs;

/// Longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes running at once; a connection arriving while all are busy is
/// closed at once (counted in `silo_tls_connections_shed_total`), so the
/// accept loop never waits and a flood of slow clients cannot keep peers out
/// for longer than their own connections take.
pub const HANDSHAKES_IN_FLIGHT: usize = 256;
/// Longest wait for a new connection's first byte.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a plaintext client is kept to receive its explanation.
pub const PLAINTEXT_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How often [`NodeTls::watch`] compares the files' modification times.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);
/// The gRPC message a plaintext client gets from a TLS node (status
/// FAILED_PRECONDITION: retrying the same way cannot succeed).
pub const PLAINTEXT_REFUSED: &str = "this node serves gRPC over TLS only: connect with TLS (https://, trusting the \
     cluster CA: silo ctl --ca-cert; the TypeScript client: useTls: true or tls: { ca }), not plaintext";

/// The parsed files of one load.
struct Material {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
    server: Arc<rustls::ServerConfig>,
}

/// The node's TLS material, reloadable (see the module docs).
pub struct NodeTls {
    config: TlsConfig,
    current: RwLock<Arc<Material>>,
    /// Modification times of (cert, key, ca) at the last load.
    stamps: Mutex<[Option<SystemTime>; 3]>,
    /// Bumped by every successful reload; holders of cached connections
    /// compare it to rebuild them with the new identity.
    generation: AtomicU64,
}

fn files(config: &TlsConfig) -> anyhow::Result<[PathBuf; 3]> {
    let get = |name: &str, f: &Option<PathBuf>| f.clone().with_context(|| format!("tls.{name} is not set"));
    Ok([get("cert_file", &config.cert_file)?, get("key_file", &config.key_file)?, get("ca_file", &config.ca_file)?])
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

/// Parses PEM certificates; an empty list is an error naming `path`.
pub fn certificates(pem: &[u8], path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not PEM certificates", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no CERTIFICATE block", path.display());
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(config: &TlsConfig) -> anyhow::Result<Material> {
    let [cert_path, key_path, ca_path] = files(config)?;
    let (cert_pem, key_pem, ca_pem) =
        (read(&cert_path, "certificate")?, read(&key_path, "private key")?, read(&ca_path, "CA certificate")?);
    let chain = certificates(&cert_pem, &cert_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("{} holds no PEM private key", key_path.display()))?;
    let cas = certificates(&ca_pem, &ca_path)?;
    check_own_certificate(&chain, &cas, &cert_path)?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca).with_context(|| format!("{} is not a usable CA certificate", ca_path.display()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let verifier = match config.client_auth {
        ClientAuth::Peers => verifier.allow_unauthenticated(),
        ClientAuth::All => verifier,
    }
    .build()
    .context("building the client-certificate verifier")?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .with_context(|| format!("{} does not match {}", key_path.display(), cert_path.display()))?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Material { cert_pem, key_pem, ca_pem, server: Arc::new(server) })
}

fn stamps(config: &TlsConfig) -> [Option<SystemTime>; 3] {
    let stamp = |f: &Option<PathBuf>| f.as_ref().and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    [stamp(&config.cert_file), stamp(&config.key_file), stamp(&config.ca_file)]
}

impl NodeTls {
    /// Reads the files of `config` (which must be [`TlsConfig::enabled`]).
    /// Errors name the file and what is wrong with it.
    pub fn load(config: &TlsConfig) -> anyhow::Result<Arc<NodeTls>> {
        let material = load(config)?;
        Ok(Arc::new(NodeTls {
            config: config.clone(),
            current: RwLock::new(Arc::new(material)),
            stamps: Mutex::new(stamps(config)),
            generation: AtomicU64::new(0),
        }))
    }

    /// Reads the files again. On error the previous material stays in force.
    pub fn reload(&self) -> anyhow::Result<()> {
        let stamped = stamps(&self.config);
        let material = load(&self.config)?;
        *self.current.write() = Arc::new(material);
        *self.stamps.lock() = stamped;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Whether this node's certificate names `host` ([`names_host`]): peers
    /// and clients dialling `host` can verify it.
    pub fn names(&self, host: &str) -> bool {
        let m = self.current.read().clone();
        certificates(&m.cert_pem, std::path::Path::new("cert_file")).is_ok_and(|c| names_host(&c[0], host))
    }

    /// Counts successful reloads (0 after [`NodeTls::load`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether every connection must show a certificate (`client_auth = "all"`).
    pub fn clients_need_certificates(&self) -> bool {
        self.config.client_auth == ClientAuth::All
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.current.read().server.clone()
    }

    /// The client side of mutual TLS: trust only the cluster CA, show this
    /// node's certificate.
    pub fn client_config(&self) -> ClientTlsConfig {
        let m = self.current.read().clone();
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&m.ca_pem))
            .identity(Identity::from_pem(&m.cert_pem, &m.key_pem))
    }

    /// Reloads on SIGHUP and when a file's modification time changes, until
    /// `stop` turns true. Each outcome is logged and counted in
    /// `silo_tls_reloads_total{result="ok"|"error"}`.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = stop.changed() => return,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => "SIGHUP",
                _ = tick.tick() => {
                    if stamps(&self.config) == *self.stamps.lock() { continue; }
                    "a changed file"
                }
            };
            match self.reload() {
                Ok(()) => {
                    metrics::counter!("silo_tls_reloads_total", "result" => "ok").increment(1);
                    tracing::info!(trigger = why, generation = self.generation(), "reloaded the TLS certificates")
                }
                Err(e) => {
                    // Remember the stamps anyway, or a broken file is retried every tick.
                    *self.stamps.lock() = stamps(&self.config);
                    metrics::counter!("silo_tls_reloads_total", "result" => "error").increment(1);
                    tracing::error!(trigger = why, "TLS reload failed, the previous certificates stay in force: {e:#}")
                }
            }
        }
    }
}

/// Client-side TLS for tools and the Rust client (`silo ctl --ca-cert`):
/// trust `ca` (PEM) only, and show the certificate and key in `identity`
/// (PEM files) when given, as the Admin service and `tls.client_auth = "all"`
/// require. Errors name the unreadable or unparsable file.
pub fn client_files(
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> anyhow::Result<ClientTlsConfig> {
    let ca_pem = read(&ca.to_path_buf(), "CA certificate")?;
    certificates(&ca_pem, ca)?;
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        let cert_pem = read(&cert.to_path_buf(), "client certificate")?;
        certificates(&cert_pem, cert)?;
        let key_pem = read(&key.to_path_buf(), "client key")?;
        PrivateKeyDer::from_pem_slice(&key_pem)
            .with_context(|| format!("{} holds no PEM private key", key.display()))?;
        config = config.identity(Identity::from_pem(cert_pem, key_pem));
    }
    Ok(config)
}

/// An endpoint for `addr` (`host:port`): `https://` with `tls`, else `http://`.
pub fn client_endpoint(addr: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, tonic::transport::Error> {
    match tls {
        None => Endpoint::from_shared(format!("http://{addr}")),
        Some(t) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(t.clone()),
    }
}

/// Logs SIGHUPs on a node without TLS (nothing to reload) until `stop`, so
/// that an operator's habitual `kill -HUP` does not end the process.
pub async fn ignore_hangups(mut stop: watch::Receiver<bool>) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = hangup.recv() => tracing::info!("SIGHUP: nothing to reload (no [tls] configured)"),
        }
    }
}

/// The endpoint for a node-to-node connection to `addr` (`host:port`):
/// `https://` with the cluster CA and this node's identity when `tls` is
/// set, plain `http://` otherwise.
pub fn endpoint(addr: &str, tls: Option<&NodeTls>) -> Result<Endpoint, tonic::transport::Error> {
    client_endpoint(addr, tls.map(|t| t.client_config()).as_ref())
}

/// Whether the certificate `der` names `host` (an IP address or DNS name,
/// compared case-insensitively; `*.example.com` covers one label) among its
/// subject alternative names.
pub fn names_host(der: &[u8], host: &str) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return false };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return false };
    let ip: Option<std::net::IpAddr> = host.parse().ok();
    san.value.general_names.iter().any(|n| match n {
        GeneralName::DNSName(d) => {
            let (d, h) = (d.to_ascii_lowercase(), host.to_ascii_lowercase());
            d == h || d.strip_prefix("*.").is_some_and(|rest| h.split_once('.').is_some_and(|(_, tail)| tail == rest))
        }
        GeneralName::IPAddress(bytes) => match (ip, bytes.len()) {
            (Some(std::net::IpAddr::V4(v4)), 4) => v4.octets() == **bytes,
            (Some(std::net::IpAddr::V6(v6)), 16) => v6.octets() == **bytes,
            _ => false,
        },
        _ => false,
    })
}

/// Whether `der` is a node certificate: its extended key usage allows
/// serving TLS (`serverAuth`), as `silo ctl cert issue` makes for nodes and
/// not for clients (`--client`: `clientAuth` only).
pub fn is_node_certificate(der: &[u8]) -> bool {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.server_auth),
        Err(_) => false,
    }
}

/// Raft traffic needs a *node* certificate when TLS is on: one the handshake
/// verified against the cluster CA (so its presence proves the CA signed it)
/// that is also a node certificate ([`is_node_certificate`]), so a client's
/// certificate from the same CA cannot send log entries or votes. Errors:
/// UNAUTHENTICATED.
pub fn require_node_certificate<T>(tls_on: bool, request: &tonic::Request<T>) -> Result<(), tonic::Status> {
    if !tls_on {
        return Ok(());
    }
    match request.peer_certs().as_deref().and_then(|c| c.first()) {
        Some(leaf) if is_node_certificate(leaf) => Ok(()),
        Some(_) => Err(tonic::Status::unauthenticated(
            "Raft traffic needs a node certificate (serverAuth usage); this connection showed a client certificate",
        )),
        None => Err(tonic::Status::unauthenticated(
            "Raft traffic needs a node certificate signed by the cluster CA (mutual TLS); this connection showed none",
        )),
    }
}

/// The Admin service (membership, elections, status) needs a certificate
/// signed by the cluster CA when TLS is on, a node's or an operator's
/// (`silo ctl --cert`), besides the token. Errors: UNAUTHENTICATED.
pub fn require_client_certificate<T>(tls_on: bool, request: &tonic::Request<T>) -> Result<(), tonic::Status> {
    if tls_on && request.peer_certs().is_none_or(|c| c.is_empty()) {
        return Err(tonic::Status::unauthenticated(
            "the Admin service needs a certificate signed by the cluster CA (silo ctl --cert/--key; \
             `silo ctl cert issue NAME --client` makes one); this connection showed none",
        ));
    }
    Ok(())
}

/// Refuses a node certificate that peers would refuse: outside its validity
/// period, not signed by `ca_file` (or by the next certificate of its own
/// chain), or not a node certificate.
fn check_own_certificate(
    chain: &[CertificateDer<'_>],
    cas: &[CertificateDer<'_>],
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|e| anyhow::anyhow!("{}: not an X.509 certificate: {e}", path.display()))?;
    anyhow::ensure!(
        leaf.validity().is_valid(),
        "{} is not valid now (valid from {} to {})",
        path.display(),
        leaf.validity().not_before,
        leaf.validity().not_after
    );
    anyhow::ensure!(
        is_node_certificate(&chain[0]),
        "{} is not a node certificate (its extended key usage lacks serverAuth; issue it without --client)",
        path.display()
    );
    let signed = chain[1..].iter().chain(cas).any(|issuer| {
        x509_parser::parse_x509_certificate(issuer)
            .is_ok_and(|(_, issuer)| leaf.verify_signature(Some(issuer.public_key())).is_ok())
    });
    anyhow::ensure!(signed, "{} is not signed by the CA in tls.ca_file (or by its own chain)", path.display());
    Ok(())
}

/// TLS connections accepted on `listener`, handshakes done; ends when `stop`
/// turns true. Plaintext HTTP/2 connections are answered with
/// [`PLAINTEXT_REFUSED`] and closed; failed handshakes are logged at debug.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<NodeTls>,
    mut stop: watch::Receiver<bool>,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(HANDSHAKES_IN_FLIGHT);
    let slots = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT));
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.changed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                metrics::counter!("silo_tls_connections_shed_total").increment(1);
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (tx, config) = (tx.clone(), tls.server_config());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, config)).await {
                    Ok(Ok(Some(tls_stream))) => {
                        let _ = tx.send(Ok(tls_stream)).await;
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        metrics::counter!("silo_tls_handshake_failures_total").increment(1);
                        tracing::debug!("TLS handshake failed: {e}");
                    }
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A TLS handshake, or `None` after answering a plaintext client.
async fn handshake(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    let n = tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no first byte"))??;
    if n == 0 {
        // Connected and closed without a byte (a TCP health probe).
        return Ok(None);
    }
    // 0x16 opens every TLS record of a ClientHello.
    if first[0] != 0x16 {
        metrics::counter!("silo_tls_plaintext_refused_total").increment(1);
        let _ = tokio::time::timeout(PLAINTEXT_ANSWER_TIMEOUT, refuse_plaintext(stream)).await;
        return Ok(None);
    }
    tokio_rustls::TlsAcceptor::from(config).accept(stream).await.map(Some)
}

/// Answers every request on a plaintext connection with a trailers-only gRPC
/// response: FAILED_PRECONDITION and [`PLAINTEXT_REFUSED`] (HTTP/1 requests
/// get a 400 with the same text).
async fn refuse_plaintext(stream: TcpStream) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
        let grpc = req.version() == hyper::Version::HTTP_2;
        let response = if grpc {
            hyper::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", (tonic::Code::FailedPrecondition as i32).to_string())
                .header("grpc-message", PLAINTEXT_REFUSED)
                .body(Full::new(Bytes::new()))
        } else {
            hyper::Response::builder().status(400).body(Full::new(Bytes::from(format!("{PLAINTEXT_REFUSED}\n"))))
        };
        Ok::<_, std::convert::Infallible>(response.expect("static response parts"))
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(sans: &[&str]) -> Vec<u8> {
        let ca = certs::new_ca("test CA", 1).unwrap();
        let pem = certs::issue_for_days(&ca, "n", &sans.iter().map(|s| s.to_string()).collect::<Vec<_>>(), 1).unwrap();
        certificates(pem.cert.as_bytes(), std::path::Path::new("t")).unwrap().remove(0).to_vec()
    }

    #[test]
    fn names_host_matches_ips_dns_names_and_one_wildcard_label() {
        let der = leaf(&["127.0.0.1", "Silo-1.internal", "*.silo.svc"]);
        assert!(names_host(&der, "127.0.0.1"));
        assert!(!names_host(&der, "127.0.0.2"));
        assert!(names_host(&der, "silo-1.INTERNAL"));
        assert!(names_host(&der, "silo-0.silo.svc"));
        assert!(!names_host(&der, "a.b.silo.svc"));
        assert!(!names_host(&der, "silo-2.internal"));
    }

    #[test]
    fn node_and_client_certificates_are_told_apart() {
        let ca = certs::new_ca("test CA", 1).unwrap();
        let node = certs::issue_for_days(&ca, "n", &["127.0.0.1".into()], 1).unwrap();
        let client = certs::issue_client(&ca, "c", 1).unwrap();
        let der = |p: &certs::Pem| certificates(p.cert.as_bytes(), std::path::Path::new("t")).unwrap().remove(0);
        assert!(is_node_certificate(&der(&node)));
        assert!(!is_node_certificate(&der(&client)));
    }
}
