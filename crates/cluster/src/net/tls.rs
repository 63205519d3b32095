//! Mutual TLS between nodes, and node identity.
//!
//! A cluster has a CA; each node has one certificate signed by it, whose
//! subjectAltName holds exactly one name of the form
//! `<node id as 16 hex digits>.node.ringkv`. That name is the node's
//! identity: a node with a certificate takes its id from it, and the
//! transport accepts a peer's hello only when the id it claims is the one
//! its certificate names, so a peer can speak only as itself.
//!
//! Both sides of a connection present their certificate and verify the
//! other's chain against the trusted CAs (TLS 1.3 only, the `ring`
//! provider). The CA file may hold several certificates: during a rotation
//! the old and the new CA are trusted at once. Certificates, key and CAs
//! are read again by [`NodeTls::reload`] without a restart; the node id of
//! the new certificate must be the same.
//!
//! The client side does not check the server's name in the TLS handshake
//! (it dials seeds it knows only by address); the hello that follows binds
//! the id instead, on both sides.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::der;
use crate::id::NodeId;

/// The DNS-name suffix of a node's identity in its certificate.
pub const NODE_NAME_SUFFIX: &str = ".node.ringkv";

/// The name a client asks for in its handshake (not checked; see the
/// module documentation).
const DIAL_NAME: &str = "node.ringkv";

/// Protocol name offered in ALPN, so that a ringkv node never completes a
/// handshake with a server of another protocol.
pub const ALPN: &[u8] = b"ringkv-cluster/1";

/// The subjectAltName that makes a certificate node `id`'s.
pub fn node_dns_name(id: NodeId) -> String {
    format!("{id:016x}{NODE_NAME_SUFFIX}")
}

/// Why certificates could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("{0}")]
    Invalid(String),
}

/// Where a node's certificate, key and trusted CAs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// PEM: one or more CA certificates (several during a rotation).
    pub ca: PathBuf,
    /// PEM: the node's certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the node's private key.
    pub key: PathBuf,
}

/// What one load of the files gives.
struct Loaded {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    node_id: NodeId,
    not_after_unix: i64,
}

/// A node's TLS identity and configurations, reloadable.
pub struct NodeTls {
    paths: TlsPaths,
    loaded: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("paths", &self.paths)
            .field("node_id", &self.node_id())
            .finish()
    }
}

impl NodeTls {
    /// Reads the files; refuses a certificate that does not name exactly
    /// one node id.
    pub fn load(paths: TlsPaths) -> Result<Self, TlsError> {
        let loaded = load(&paths)?;
        Ok(Self {
            paths,
            loaded: RwLock::new(Arc::new(loaded)),
        })
    }

    /// Reads the files again and uses them for new connections (open ones
    /// keep their session). The new certificate must name the same node.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.paths)?;
        let id = self.node_id();
        if fresh.node_id != id {
            return Err(TlsError::Invalid(format!(
                "the new certificate names node {}, this node is {id}",
                fresh.node_id
            )));
        }
        *self.loaded.write() = Arc::new(fresh);
        Ok(())
    }

    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    /// The node id the certificate names.
    pub fn node_id(&self) -> NodeId {
        self.loaded.read().node_id
    }

    /// When the node's certificate expires, in seconds since the epoch.
    pub fn not_after_unix(&self) -> i64 {
        self.loaded.read().not_after_unix
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.loaded.read().server)
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.loaded.read().client)
    }

    /// The name passed to the client handshake.
    pub fn dial_name() -> ServerName<'static> {
        ServerName::DnsName(
            rustls::pki_types::DnsName::try_from(DIAL_NAME)
                .expect("a valid DNS name")
                .to_owned(),
        )
    }
}

/// The node id a (verified) certificate names: its only subjectAltName
/// ending in [`NODE_NAME_SUFFIX`].
pub fn cert_node_id(cert: &[u8]) -> Result<NodeId, TlsError> {
    let names = der::san_dns_names(cert)
        .ok_or_else(|| TlsError::Invalid("unreadable certificate".into()))?;
    let ids: Vec<NodeId> = names
        .iter()
        .filter_map(|name| name.strip_suffix(NODE_NAME_SUFFIX))
        .map(|hex| {
            u64::from_str_radix(hex, 16)
                .ok()
                .filter(|id| hex.len() == 16 && *id != 0)
                .ok_or_else(|| TlsError::Invalid(format!("{hex}{NODE_NAME_SUFFIX}: not a node id")))
        })
        .collect::<Result<_, _>>()?;
    match ids.as_slice() {
        [id] => Ok(*id),
        [] => Err(TlsError::Invalid(format!(
            "the certificate names no node (a subjectAltName <16 hex digits>{NODE_NAME_SUFFIX})"
        ))),
        _ => Err(TlsError::Invalid(format!(
            "the certificate names {} nodes; a node certificate names exactly one",
            ids.len()
        ))),
    }
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The `ring` provider (the crate-wide choice: one crypto library in the
/// build). rustls marks it deprecated for lacking post-quantum key exchange,
/// which only its aws-lc provider offers.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(paths: &TlsPaths) -> Result<Loaded, TlsError> {
    let cas = read_certs(&paths.ca)?;
    let chain = read_certs(&paths.cert)?;
    let key_bytes = std::fs::read(&paths.key).map_err(|e| file_error(&paths.key, e))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| file_error(&paths.key, e))?;
    let node_id = cert_node_id(&chain[0]).map_err(|e| file_error(&paths.cert, e))?;
    let not_after_unix = der::not_after_unix(&chain[0])
        .ok_or_else(|| file_error(&paths.cert, "unreadable validity"))?;

    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| file_error(&paths.ca, format!("not a usable CA: {e}")))?;
    }
    let roots = Arc::new(roots);
    // The node's own certificate must chain to a trusted CA: a node that
    // would be refused by every peer had better not start.
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), provider())
        .build()
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let (end, intermediates) = chain
        .split_first()
        .ok_or_else(|| file_error(&paths.cert, "empty"))?;
    let checker = NodeServerVerifier {
        inner: Arc::clone(&verifier),
    };
    checker
        .verify_server_cert(
            end,
            intermediates,
            &NodeTls::dial_name(),
            &[],
            UnixTime::now(),
        )
        .map_err(|e| {
            file_error(
                &paths.cert,
                format!("not valid under {}: {e}", paths.ca.display()),
            )
        })?;

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider())
            .build()
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| file_error(&paths.key, e))?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(checker))
        .with_client_auth_cert(chain, key)
        .map_err(|e| file_error(&paths.key, e))?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Loaded {
        server: Arc::new(server),
        client: Arc::new(client),
        node_id,
        not_after_unix,
    })
}

/// Verifies a server's chain against the cluster's CAs, but not its name:
/// the hello binds the id (see the module documentation).
#[derive(Debug)]
struct NodeServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name: a name error means the
        // chain is good.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
