//! Issuing a cluster CA and node certificates, for operators without a PKI
//! (`ringkv cert`), for `local-cluster` and for tests.
//!
//! Keys are ECDSA P-256. A CA is self-signed, with one common name
//! `ringkv CA <16 hex digits>` (random, so that the old and the new CA of a
//! rotation are told apart). A node certificate names its node id as its
//! only `*.node.ringkv` subjectAltName (see [`super::tls`]), may carry more
//! names (host names, addresses) for other tools, and serves as both server
//! and client certificate.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::der;
use super::tls::{TlsError, TlsPaths, node_dns_name};
use crate::id::NodeId;

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pem")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// A node's certificate folder inside its data directory, by default.
pub const CERTS_DIR: &str = "certs";

/// File names `ringkv cert` and `local-cluster` use in a certificate folder.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
pub const NODE_CERT_FILE: &str = "node.pem";
pub const NODE_KEY_FILE: &str = "node.key";
/// An operator's admin certificate and key (`ringkv cert admin`).
pub const ADMIN_CERT_FILE: &str = "admin.pem";
pub const ADMIN_KEY_FILE: &str = "admin.key";
/// Validity of an admin certificate by default: short, as it is powerful.
pub const ADMIN_DAYS_DEFAULT: u32 = 90;

/// Validity of a CA unless told otherwise.
pub const CA_DAYS_DEFAULT: u32 = 3650;
/// Validity of a node certificate unless told otherwise.
pub const NODE_DAYS_DEFAULT: u32 = 365;

fn invalid(e: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid(e.to_string())
}

/// Validity from an hour ago (clocks differ) to `days` from now.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(Duration::from_secs(3600));
    params.not_after = epoch + now + Duration::from_secs(u64::from(days) * 86_400);
}

fn ca_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, DnValue::Utf8String(common_name.into()));
    dn
}

/// A new cluster CA valid for `days`.
pub fn new_ca(days: u32) -> Result<Pem, TlsError> {
    let key = KeyPair::generate().map_err(invalid)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name(&format!("ringkv CA {:016x}", rand::random::<u64>()));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days);
    let cert = params.self_signed(&key).map_err(invalid)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A certificate for node `id`, signed by `ca`, valid for `days`, with
/// `extra_names` (DNS names or IP addresses) besides the node's own name.
pub fn issue_node(
    ca: &Pem,
    id: NodeId,
    days: u32,
    extra_names: &[String],
) -> Result<Pem, TlsError> {
    if id == 0 {
        return Err(invalid("0 is not a node id"));
    }
    let mut names = vec![node_dns_name(id)];
    names.extend(extra_names.iter().cloned());
    issue(
        ca,
        &names,
        &format!("ringkv node {}", crate::id::display(id)),
        days,
    )
}

/// An admin certificate signed by `ca`, valid for `days`: it names
/// [`ADMIN_NAME`](super::tls::ADMIN_NAME) and no node, and signs removal
/// grants (`ringkv remove --admin-cert`).
pub fn issue_admin(ca: &Pem, days: u32) -> Result<Pem, TlsError> {
    issue(
        ca,
        &[super::tls::ADMIN_NAME.to_string()],
        "ringkv admin",
        days,
    )
}

/// A certificate for `names` (DNS names or IP addresses), signed by `ca`.
fn issue(
    ca: &Pem,
    names: &[String],
    common_name_of_subject: &str,
    days: u32,
) -> Result<Pem, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(|e| invalid(format!("CA key: {e}")))?;
    let ca_der = cert_from_pem(ca.cert.as_bytes())?;
    let common_name = der::subject_common_name(&ca_der)
        .ok_or_else(|| invalid("the CA certificate has no readable common name"))?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = ca_name(&common_name);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().map_err(invalid)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(invalid)?;
    for name in names {
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into().map_err(invalid)?),
        };
        params.subject_alt_names.push(san);
    }
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        DnValue::Utf8String(common_name_of_subject.into()),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let cert = params.signed_by(&key, &issuer).map_err(invalid)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Writes `contents` to `path`, readable by the owner only when `secret`.
pub fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    let io = |e: std::io::Error| TlsError::File {
        path: path.display().to_string(),
        why: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = secret;
    let mut file = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut file, contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Writes a node's certificate folder: `ca.pem` (the CAs to trust),
/// `node.pem` and `node.key`; returns the paths to load.
pub fn write_node_folder(dir: &Path, trusted_cas: &str, node: &Pem) -> Result<TlsPaths, TlsError> {
    let paths = TlsPaths {
        ca: dir.join(CA_CERT_FILE),
        cert: dir.join(NODE_CERT_FILE),
        key: dir.join(NODE_KEY_FILE),
    };
    write_file(&paths.ca, trusted_cas, false)?;
    write_file(&paths.cert, &node.cert, false)?;
    write_file(&paths.key, &node.key, true)?;
    Ok(paths)
}

/// The CA kept in `dir` (`ca.pem`, `ca.key`).
pub fn load_ca(dir: &Path) -> Result<Pem, TlsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| TlsError::File {
            path: path.display().to_string(),
            why: e.to_string(),
        })
    };
    Ok(Pem {
        cert: read(CA_CERT_FILE)?,
        key: read(CA_KEY_FILE)?,
    })
}

/// The CA kept in `dir`, created (valid [`CA_DAYS_DEFAULT`] days) when the
/// folder has none.
pub fn load_or_create_ca(dir: &Path) -> Result<Pem, TlsError> {
    if dir.join(CA_CERT_FILE).exists() {
        return load_ca(dir);
    }
    let ca = new_ca(CA_DAYS_DEFAULT)?;
    write_file(&dir.join(CA_KEY_FILE), &ca.key, true)?;
    write_file(&dir.join(CA_CERT_FILE), &ca.cert, false)?;
    Ok(ca)
}

/// Gives the certificate folder `dir` a node certificate signed by `ca`
/// unless it has one already: for node `id`, or for a new random id.
/// Returns the node id the folder's certificate names.
pub fn ensure_node_folder(ca: &Pem, dir: &Path, id: Option<NodeId>) -> Result<NodeId, TlsError> {
    let paths = TlsPaths {
        ca: dir.join(CA_CERT_FILE),
        cert: dir.join(NODE_CERT_FILE),
        key: dir.join(NODE_KEY_FILE),
    };
    if paths.cert.exists() {
        let pem = std::fs::read(&paths.cert).map_err(|e| TlsError::File {
            path: paths.cert.display().to_string(),
            why: e.to_string(),
        })?;
        let der = cert_from_pem(&pem)?;
        return super::tls::cert_node_id(&der);
    }
    let id = match id {
        Some(id) => id,
        None => loop {
            let id = rand::random::<u64>();
            if id != 0 {
                break id;
            }
        },
    };
    let node = issue_node(
        ca,
        id,
        NODE_DAYS_DEFAULT,
        &["localhost".into(), "127.0.0.1".into()],
    )?;
    write_node_folder(dir, &ca.cert, &node)?;
    Ok(id)
}

/// What `ringkv cert show` prints of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub common_name: Option<String>,
    pub names: Vec<String>,
    pub not_after_unix: Option<i64>,
}

pub fn describe(cert: &[u8]) -> Described {
    Described {
        common_name: der::subject_common_name(cert),
        names: der::san_dns_names(cert).unwrap_or_default(),
        not_after_unix: der::not_after_unix(cert),
    }
}

/// The first certificate of a PEM text.
pub fn cert_from_pem(pem: &[u8]) -> Result<rustls::pki_types::CertificateDer<'static>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem)
        .map_err(|e| invalid(format!("certificate: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::{NodeTls, cert_node_id};

    #[test]
    fn an_issued_certificate_names_its_node_and_loads_under_its_ca() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = new_ca(30).expect("ca");
        let node =
            issue_node(&ca, 0xfeed, 7, &["localhost".into(), "127.0.0.1".into()]).expect("node");
        let paths = write_node_folder(dir.path(), &ca.cert, &node).expect("write");
        let tls = NodeTls::load(paths.clone()).expect("load");
        assert_eq!(tls.node_id(), 0xfeed);
        let days = (tls.not_after_unix()
            - i64::try_from(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .expect("time")
                    .as_secs(),
            )
            .expect("secs"))
            / 86_400;
        assert!((6..=7).contains(&days), "{days}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&paths.key)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // Another CA's certificate does not load under this CA.
        let other = new_ca(30).expect("ca");
        let stray = issue_node(&other, 0xfeed, 7, &[]).expect("node");
        let dir2 = tempfile::tempdir().expect("dir");
        let paths = write_node_folder(dir2.path(), &ca.cert, &stray).expect("write");
        let err = NodeTls::load(paths).expect_err("foreign certificate");
        assert!(err.to_string().contains("not valid under"), "{err}");

        // Both CAs trusted at once (a rotation): both load.
        let both = format!("{}{}", ca.cert, other.cert);
        let paths = write_node_folder(dir2.path(), &both, &stray).expect("write");
        assert_eq!(NodeTls::load(paths).expect("load").node_id(), 0xfeed);
    }

    #[test]
    fn a_certificate_must_name_exactly_one_node() {
        use rustls::pki_types::pem::PemObject;
        let ca = new_ca(30).expect("ca");
        let two = issue_node(&ca, 1, 7, &[node_dns_name(2)]).expect("node");
        let der =
            rustls::pki_types::CertificateDer::from_pem_slice(two.cert.as_bytes()).expect("pem");
        let err = cert_node_id(&der).expect_err("two ids");
        assert!(err.to_string().contains("names 2 nodes"), "{err}");
        let bad = issue_node(&ca, 1, 7, &["zz.node.ringkv".into()]).expect("node");
        let der =
            rustls::pki_types::CertificateDer::from_pem_slice(bad.cert.as_bytes()).expect("pem");
        assert!(cert_node_id(&der).is_err());
        let der =
            rustls::pki_types::CertificateDer::from_pem_slice(ca.cert.as_bytes()).expect("pem");
        let err = cert_node_id(&der).expect_err("a CA names no node");
        assert!(err.to_string().contains("names no node"), "{err}");
        assert!(issue_node(&ca, 0, 7, &[]).is_err());
    }
}
