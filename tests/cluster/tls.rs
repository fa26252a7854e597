//! Mutual TLS between nodes and TLS for clients (issue #14, README "TLS"):
//! a TLS cluster replicates; Raft traffic without a node certificate, with
//! one from another CA, or with an expired one is refused; a node whose
//! certificate the cluster does not trust never receives the log; the bearer
//! token is still enforced under TLS.
use silo::pb::raft::raft_client::RaftClient;
use silo::pb::raft::{self as rpb, RaftMessage};
use silo::tls::certs;
use tonic::transport::ClientTlsConfig;

use super::*;

fn tls_cluster(nodes: usize, extra_toml: &str) -> LocalCluster {
    start(ClusterOpts { nodes, tls: true, extra_toml: extra_toml.into(), ..Default::default() })
}

async fn tls_client(c: &LocalCluster, token: Option<&str>) -> Result<Client, tonic::Status> {
    let mut o = ClientOptions::new(c.addrs());
    o.tls = c.client_tls();
    o.token = token.map(Into::into);
    o.retry_budget = Duration::from_secs(20);
    Client::connect(o).await
}

/// TLS showing `pem` (written under the cluster's root as `stem`) and trusting the cluster CA.
fn identity(c: &LocalCluster, pem: &certs::Pem, stem: &str) -> ClientTlsConfig {
    let dir = c.root().join("strangers");
    let (cert, key) = certs::write(pem, &dir, stem).expect("write");
    silo::tls::client_files(&c.certs_dir().join("ca.pem"), Some((&cert, &key))).expect("client tls")
}

/// One Raft RPC (a vote request that never reaches openraft when refused) to `addr` over `tls`.
async fn raft_call(addr: &str, tls: Option<ClientTlsConfig>) -> Result<(), tonic::Status> {
    let endpoint = silo::tls::client_endpoint(addr, tls.as_ref()).expect("endpoint").timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
    RaftClient::new(channel).vote(RaftMessage { data: vec![0xff] }).await.map(|_| ())
}

#[tokio::test]
async fn tls_cluster_replicates_and_refuses_strangers() {
    let mut c = tls_cluster(3, "");
    let leader = c.wait_for_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let cl = tls_client(&c, None).await.expect("TLS client");
    for i in 0..20 {
        cl.enqueue(job(&format!("tls-{i}"))).await.expect("enqueue over TLS");
    }
    // Every node applied the same state: the log travelled over mutual TLS.
    let (index, _) = c.wait_converged(20, WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert!(index >= 20);

    let addr = c.addr(leader);
    let ca_file = c.certs_dir().join("ca.pem");
    // A client trusting the CA but showing no certificate: API yes, Raft and Admin no.
    let anonymous = silo::tls::client_files(&ca_file, None).expect("tls");
    let e = raft_call(&addr, Some(anonymous.clone())).await.expect_err("Raft without a certificate");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    assert!(e.message().contains("node certificate"), "{e}");
    let channel = silo::tls::client_endpoint(&addr, Some(&anonymous)).unwrap().connect().await.expect("connect");
    let e = silo::pb::raft::admin_client::AdminClient::new(channel)
        .status(rpb::StatusRequest { skip_digest: true })
        .await
        .expect_err("Admin without a certificate");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    // An operator's client certificate from the cluster CA: Admin yes, Raft no.
    c.status(leader).await.expect("Admin with a client certificate");
    let e = raft_call(&addr, c.client_tls()).await.expect_err("Raft with a client certificate");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    assert!(e.message().contains("client certificate"), "{e}");

    // A certificate from another CA fails the handshake.
    let other_ca = certs::new_ca("another CA", 30).expect("ca");
    let stranger = certs::issue_for_days(&other_ca, "stranger", &["127.0.0.1".into()], 30).expect("issue");
    let e = raft_call(&addr, Some(identity(&c, &stranger, "stranger"))).await.expect_err("foreign certificate");
    assert_handshake_refused(&e);

    // So does an expired certificate from the cluster's own CA.
    let now = time::OffsetDateTime::now_utc();
    let ca = c.ca().expect("ca");
    let expired = certs::issue(
        &ca,
        "expired",
        &["127.0.0.1".into()],
        now - time::Duration::days(10),
        now - time::Duration::days(1),
    )
    .expect("issue");
    let e = raft_call(&addr, Some(identity(&c, &expired, "expired"))).await.expect_err("expired certificate");
    assert_handshake_refused(&e);

    // Plaintext gets the node's explanation rather than a reset connection.
    let e = raft_call(&addr, None).await.expect_err("plaintext");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("TLS only"), "{e}");

    // A node with a proper certificate joins and catches up.
    let good = c.add_node().await.unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let applied = c.status(leader).await.expect("leader status").applied_index.unwrap_or(0);
    silo_wait(|| async { c.status(good).await.is_ok_and(|s| s.applied_index.unwrap_or(0) >= applied) }).await;

    // A node whose certificate another CA signed is added as a learner, but
    // the leader refuses its certificate: it never receives the log.
    let next = c.nodes.keys().max().copied().unwrap_or(0) + 1;
    let foreign = certs::issue_for_days(&other_ca, "foreign", &["127.0.0.1".into()], 30).expect("issue");
    certs::write(&foreign, &c.certs_dir(), &format!("node{next}")).expect("write");
    // Its own CA: the machine belongs to another PKI.
    std::fs::write(c.certs_dir().join(format!("node{next}-ca.pem")), &other_ca.cert).expect("write");
    let foreign_id = c.spawn_joining().expect("spawn the foreign node");
    assert_eq!(foreign_id, next);
    let mut admin = c.admin(leader).await.expect("admin");
    let add = rpb::AddLearnerRequest { node_id: foreign_id, addr: c.addr(foreign_id) };
    let mut add = tonic::Request::new(add);
    add.set_timeout(Duration::from_secs(10));
    // Whether this returns or times out, the membership names the node as a learner.
    let _ = admin.add_learner(add).await;
    cl.enqueue(job("after-the-foreign-node")).await.expect("enqueue");
    // The leader tried to replicate to it and refused its certificate ...
    silo_wait(|| async { c.nodes[&leader].log().contains("UnknownIssuer") }).await;
    // ... and the node has no log (read trusting the CA that signed it).
    let other_ca_file = certs::write(&other_ca, &c.root().join("strangers"), "other-ca").expect("write").0;
    let their_operator = certs::issue_client(&other_ca, "their-operator", 30).expect("issue");
    let (op_cert, op_key) =
        certs::write(&their_operator, &c.root().join("strangers"), "their-operator").expect("write");
    let trust_other = silo::tls::client_files(&other_ca_file, Some((&op_cert, &op_key))).expect("tls");
    let channel = silo::tls::client_endpoint(&c.addr(foreign_id), Some(&trust_other)).expect("endpoint");
    let mut foreign_admin = silo::pb::raft::admin_client::AdminClient::new(channel.connect().await.expect("connect"));
    let status = foreign_admin.status(rpb::StatusRequest { skip_digest: true }).await.expect("status").into_inner();
    assert_eq!(status.last_log_index.unwrap_or(0), 0, "the foreign node received log entries: {status:?}");
}

#[tokio::test]
async fn token_is_still_enforced_under_tls() {
    let c = tls_cluster(1, "[auth]\ntoken = \"s3cret\"\n");
    let cl = tls_client(&c, Some("s3cret")).await.unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    cl.enqueue(job("with-token")).await.expect("enqueue with the token over TLS");

    let mut o = ClientOptions::new(c.addrs());
    o.tls = c.client_tls();
    o.retry_budget = Duration::from_secs(2);
    let e = match Client::connect(o).await {
        Err(e) => e,
        Ok(anonymous) => anonymous.enqueue(job("no-token")).await.expect_err("enqueue without the token"),
    };
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
}

/// The server refused the client's certificate. With TLS 1.3 the client
/// learns it on its first request (the server checks the certificate after
/// the client's side of the handshake is done), as a transport error rather
/// than a gRPC status from the service.
fn assert_handshake_refused(e: &tonic::Status) {
    assert!(matches!(e.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled), "{e}");
    assert!(format!("{e:?}").contains("transport error") || format!("{e:?}").contains("Transport"), "{e:?}");
}

#[tokio::test]
async fn certificates_reload_on_sighup_and_a_broken_file_keeps_the_old_ones() {
    let c = tls_cluster(1, "");
    c.wait_for_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let hangup = || {
        let pid = c.nodes[&1].pid().expect("running") as i32;
        // SAFETY: kill(2) on a child process the cluster owns.
        unsafe { libc::kill(pid, libc::SIGHUP) };
    };
    let ca = c.ca().expect("ca");
    let write = |pem: &certs::Pem| certs::write(pem, &c.certs_dir(), "node1").expect("write");

    // A file that does not parse: logged, the previous certificate stays.
    std::fs::write(c.certs_dir().join("node1.pem"), "not a certificate").expect("write");
    hangup();
    silo_wait(|| async { c.nodes[&1].log().contains("TLS reload failed") }).await;
    c.status(1).await.expect("the previous certificate still serves");

    // An expired certificate: refused at reload, the previous one stays.
    let now = time::OffsetDateTime::now_utc();
    let expired =
        certs::issue(&ca, "node1", &["127.0.0.1".into()], now - time::Duration::days(9), now - time::Duration::days(1));
    write(&expired.expect("issue"));
    hangup();
    silo_wait(|| async { c.nodes[&1].log().contains("is not valid now") }).await;
    c.status(1).await.expect("the previous certificate still serves");

    // A certificate for another name: once reloaded, dialling 127.0.0.1 fails verification.
    write(&certs::issue_for_days(&ca, "node1", &["elsewhere.example".into()], 30).expect("issue"));
    hangup();
    silo_wait(|| async { c.status(1).await.is_err() }).await;

    // The right certificate again: connections succeed.
    write(&certs::issue_for_days(&ca, "node1", &["127.0.0.1".into()], 30).expect("issue"));
    hangup();
    silo_wait(|| async { c.status(1).await.is_ok() }).await;
}
