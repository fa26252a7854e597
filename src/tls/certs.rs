//! A development certificate authority (`silo ctl cert`, README "TLS"):
//! a self-signed CA and certificates it issues for nodes and clients, made
//! with rcgen (ECDSA P-256). For production use your own PKI; these are for
//! trying TLS out, tests and small private clusters.
//!
//! A node certificate carries both the server and client extended key
//! usages, because a node is a server to clients and peers and a client to
//! its peers; Raft traffic requires the server usage. A client certificate
//! (operators, `tls.client_auth = "all"` applications) carries only the
//! client usage, so it can call the API and the Admin service but never
//! pose as a node.
use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "silo");
    dn
}

/// A self-signed CA valid from an hour ago (clock skew between machines) for
/// `days` days.
pub fn new_ca(common_name: &str, days: i64) -> anyhow::Result<Pem> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
}

/// A certificate for `common_name` with subject alternative names `sans`
/// (IP addresses or DNS names, e.g. `["127.0.0.1", "silo-1.internal"]`),
/// signed by `ca`, valid over `[not_before, not_after]`. Errors: a CA or key
/// that does not parse, an empty or malformed SAN.
pub fn issue(
    ca: &Pem,
    common_name: &str,
    sans: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> anyhow::Result<Pem> {
    anyhow::ensure!(!sans.is_empty(), "a certificate needs at least one --san (the address clients and peers dial)");
    sign(
        ca,
        common_name,
        sans,
        not_before,
        not_after,
        &[ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
    )
}

/// A client certificate for `common_name` (client usage only: it cannot
/// send Raft traffic), signed by `ca`, valid from an hour ago for `days` days.
pub fn issue_client(ca: &Pem, common_name: &str, days: i64) -> anyhow::Result<Pem> {
    let now = OffsetDateTime::now_utc();
    sign(
        ca,
        common_name,
        &[],
        now - Duration::hours(1),
        now + Duration::days(days),
        &[ExtendedKeyUsagePurpose::ClientAuth],
    )
}

fn sign(
    ca: &Pem,
    common_name: &str,
    sans: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    usages: &[ExtendedKeyUsagePurpose],
) -> anyhow::Result<Pem> {
    let ca_key = KeyPair::from_pem(&ca.key).context("the CA key is not a PEM private key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).context("the CA certificate is not PEM")?;
    let mut params =
        CertificateParams::new(sans.to_vec()).context("a --san is neither an IP address nor a DNS name")?;
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages.to_vec();
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
}

/// [`issue`] valid from an hour ago for `days` days.
pub fn issue_for_days(ca: &Pem, common_name: &str, sans: &[String], days: i64) -> anyhow::Result<Pem> {
    let now = OffsetDateTime::now_utc();
    issue(ca, common_name, sans, now - Duration::hours(1), now + Duration::days(days))
}

/// Writes `pem` as `<dir>/<stem>.pem` and `<dir>/<stem>.key` (the key
/// readable by its owner only) and returns both paths.
pub fn write(pem: &Pem, dir: &std::path::Path, stem: &str) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (cert, key) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    std::fs::write(&cert, &pem.cert).with_context(|| format!("writing {}", cert.display()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key)
        .with_context(|| format!("writing {}", key.display()))?;
    f.write_all(pem.key.as_bytes())?;
    Ok((cert, key))
}

/// Reads `<dir>/<stem>.pem` and `<dir>/<stem>.key`.
pub fn read(dir: &std::path::Path, stem: &str) -> anyhow::Result<Pem> {
    let read = |ext: &str| {
        let p = dir.join(format!("{stem}.{ext}"));
        std::fs::read_to_string(&p)
            .with_context(|| format!("reading {} (make a CA with `silo ctl cert ca`)", p.display()))
    };
    Ok(Pem { cert: read("pem")?, key: read("key")? })
}
