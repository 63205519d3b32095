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

use bytes::Bytes;
use rustls::sign::SigningKey;

use super::der;
use super::message::StateSignature;
use crate::id::NodeId;

/// Schemes a node signs its state with, by preference (its key decides).
const SIGNING_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
];

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
    /// The node's certificate (DER), sent with its signatures.
    cert: Bytes,
    /// The certificate's key, for signing the node's gossiped state.
    signing_key: Arc<dyn SigningKey>,
    /// Checks a chain against the trusted CAs.
    checker: Arc<NodeServerVerifier>,
}

/// Certificates already verified (DER -> node id, expiry), at most this
/// many; the cache starts over when full or when the CAs are reloaded.
const VERIFIED_CERTS_MAX: usize = 20_000;

/// A node's TLS identity and configurations, reloadable.
pub struct NodeTls {
    paths: TlsPaths,
    loaded: RwLock<Arc<Loaded>>,
    verified: parking_lot::Mutex<crate::det::HashMap<Bytes, (Signer, i64)>>,
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
            verified: parking_lot::Mutex::new(crate::det::HashMap::default()),
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
        // The trusted CAs may have changed.
        self.verified.lock().clear();
        Ok(())
    }

    /// Signs a node state's [`NodeState::signed_bytes`](crate::net::message::NodeState::signed_bytes)
    /// with the certificate's key.
    pub fn sign(&self, message: &[u8]) -> Result<StateSignature, TlsError> {
        let loaded = Arc::clone(&self.loaded.read());
        sign_with(&*loaded.signing_key, &loaded.cert, message)
    }

    /// Checks a signature over `message`: its certificate chains to a
    /// trusted CA, is not expired, and names a node; returns that node.
    pub fn verify(&self, signature: &StateSignature, message: &[u8]) -> Result<NodeId, TlsError> {
        match self.signer(signature)? {
            Signer::Node(id) => {
                check_signature(signature, message)?;
                Ok(id)
            }
            Signer::Admin => Err(TlsError::Invalid(
                "signed by an admin certificate, not by a node".into(),
            )),
        }
    }

    /// Who a signature's certificate speaks for: it chains to a trusted
    /// CA, is not expired, and names one node or is an admin certificate.
    /// The signature itself is checked by [`check_signature`].
    pub fn signer(&self, signature: &StateSignature) -> Result<Signer, TlsError> {
        let now = UnixTime::now();
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let cached = self.verified.lock().get(&signature.cert).copied();
        match cached {
            Some((signer, not_after)) if now_secs <= not_after => Ok(signer),
            Some(_) => Err(TlsError::Invalid("the signer's certificate expired".into())),
            None => {
                let checker = Arc::clone(&self.loaded.read().checker);
                let der = CertificateDer::from(signature.cert.to_vec());
                checker
                    .verify_server_cert(&der, &[], &Self::dial_name(), &[], now)
                    .map_err(|e| TlsError::Invalid(format!("the signer's certificate: {e}")))?;
                let signer = if is_admin_cert(&signature.cert) {
                    Signer::Admin
                } else {
                    Signer::Node(cert_node_id(&signature.cert)?)
                };
                let not_after = der::not_after_unix(&signature.cert).unwrap_or(i64::MIN);
                let mut verified = self.verified.lock();
                if verified.len() >= VERIFIED_CERTS_MAX {
                    verified.clear();
                }
                verified.insert(signature.cert.clone(), (signer, not_after));
                Ok(signer)
            }
        }
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

/// Who a verified certificate speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The node the certificate names.
    Node(NodeId),
    /// An operator (`ringkv cert admin`): may grant a dead node's removal.
    Admin,
}

/// The subjectAltName of an admin certificate (and no node name).
pub const ADMIN_NAME: &str = "admin.ringkv";

/// Whether a certificate is an admin's: it names [`ADMIN_NAME`] and no node.
pub fn is_admin_cert(cert: &[u8]) -> bool {
    der::san_dns_names(cert).is_some_and(|names| {
        names.iter().any(|n| n == ADMIN_NAME)
            && !names.iter().any(|n| n.ends_with(NODE_NAME_SUFFIX))
    })
}

/// Checks the signature itself over `message` (not who signed: see
/// [`NodeTls::signer`]).
pub fn check_signature(signature: &StateSignature, message: &[u8]) -> Result<(), TlsError> {
    let scheme = SignatureScheme::from(signature.scheme);
    let algs = provider()
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, algs)| *algs)
        .ok_or_else(|| TlsError::Invalid(format!("unsupported signature scheme {scheme:?}")))?;
    let der = CertificateDer::from(signature.cert.as_ref());
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| TlsError::Invalid(format!("the signer's certificate: {e}")))?;
    if algs
        .iter()
        .any(|alg| cert.verify_signature(*alg, message, &signature.sig).is_ok())
    {
        Ok(())
    } else {
        Err(TlsError::Invalid("bad signature".into()))
    }
}

/// Signs `message` with `key`, carrying `cert`.
fn sign_with(
    key: &dyn SigningKey,
    cert: &Bytes,
    message: &[u8],
) -> Result<StateSignature, TlsError> {
    let signer = key
        .choose_scheme(SIGNING_SCHEMES)
        .ok_or_else(|| TlsError::Invalid("the key signs with no supported scheme".into()))?;
    let sig = signer
        .sign(message)
        .map_err(|e| TlsError::Invalid(format!("signing: {e}")))?;
    Ok(StateSignature {
        cert: cert.clone(),
        scheme: u16::from(signer.scheme()),
        sig: Bytes::from(sig),
    })
}

/// An operator's admin certificate and key (`ringkv cert admin`), which
/// sign removal grants (see [`crate::net::message::RemovalGrant`]).
pub struct AdminCredential {
    cert: Bytes,
    key: Arc<dyn SigningKey>,
}

impl AdminCredential {
    /// Reads the certificate and key; refuses a certificate that is not an
    /// admin's.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = read_certs(cert)?;
        if !is_admin_cert(&chain[0]) {
            return Err(file_error(
                cert,
                format!(
                    "not an admin certificate (subjectAltName {ADMIN_NAME}); see `ringkv cert admin`"
                ),
            ));
        }
        let key_bytes = std::fs::read(key).map_err(|e| file_error(key, e))?;
        let der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| file_error(key, e))?;
        let key_signer = provider()
            .key_provider
            .load_private_key(der)
            .map_err(|e| file_error(key, e))?;
        Ok(Self {
            cert: Bytes::from(chain[0].to_vec()),
            key: key_signer,
        })
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Result<StateSignature, TlsError> {
        sign_with(&*self.key, &self.cert, message)
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

pub(super) fn file_error(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

pub(super) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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
/// Built once: every signature check reads its algorithms.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
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
    let checker = Arc::new(NodeServerVerifier {
        inner: Arc::clone(&verifier),
    });
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
        .with_custom_certificate_verifier(Arc::clone(&checker) as Arc<dyn ServerCertVerifier>)
        .with_client_auth_cert(chain.clone(), key.clone_key())
        .map_err(|e| file_error(&paths.key, e))?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| file_error(&paths.key, e))?;
    Ok(Loaded {
        server: Arc::new(server),
        client: Arc::new(client),
        node_id,
        not_after_unix,
        cert: Bytes::from(chain[0].to_vec()),
        signing_key,
        checker,
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
