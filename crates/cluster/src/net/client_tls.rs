//! TLS for clients: what RESP (`redis-cli --tls`, redis-py `ssl=True`) and
//! HTTPS speak when `[tls] clients = true`.
//!
//! The server certificate is the node's own by default: `ringkv cert node`
//! and `local-cluster` give it `localhost` and `127.0.0.1` besides the node
//! name, and `--name` adds the host names clients use, so a client that
//! trusts the cluster CA (`--cacert ca.pem`) verifies it. A certificate
//! from another PKI can be set apart (`[tls] client_cert`/`client_key`).
//!
//! Client certificates are optional: `client_auth = "required"` refuses,
//! in the handshake, every client without a certificate signed by
//! `client_ca` (the cluster CA by default); `"optional"` verifies one when
//! presented. A certificate only admits the connection: users still
//! authenticate with their password.
//!
//! TLS 1.2 and 1.3 (clients' libraries vary); the files are read again by
//! [`ClientTls::reload`] without a restart.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::RootCertStore;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ServerConfig, WebPkiClientVerifier};

use super::tls::{TlsError, file_error, provider, read_certs};

/// Whether clients must show a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// Not asked for.
    #[default]
    None,
    /// Verified when presented; a client without one is admitted.
    Optional,
    /// Refused in the handshake without a valid one.
    Required,
}

/// The files of client TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsPaths {
    /// PEM: the certificate clients see, then any intermediates.
    pub cert: PathBuf,
    /// PEM: its private key.
    pub key: PathBuf,
    /// PEM: the CAs client certificates must chain to (read only when
    /// `auth` is not [`ClientAuth::None`]).
    pub client_ca: PathBuf,
    pub auth: ClientAuth,
}

/// The ALPN name HTTPS offers (RESP offers none: Redis clients send none).
const HTTP_ALPN: &[u8] = b"http/1.1";

struct Loaded {
    resp: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
    not_after_unix: i64,
}

/// The server side of client TLS, reloadable.
pub struct ClientTls {
    paths: ClientTlsPaths,
    loaded: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("paths", &self.paths)
            .finish()
    }
}

impl ClientTls {
    pub fn load(paths: ClientTlsPaths) -> Result<Self, TlsError> {
        let loaded = load(&paths)?;
        Ok(Self {
            paths,
            loaded: RwLock::new(Arc::new(loaded)),
        })
    }

    /// Reads the files again, for new connections.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.paths)?;
        *self.loaded.write() = Arc::new(fresh);
        Ok(())
    }

    pub fn paths(&self) -> &ClientTlsPaths {
        &self.paths
    }

    /// The configuration for a RESP connection.
    pub fn resp_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.loaded.read().resp)
    }

    /// The configuration for an HTTPS connection (ALPN `http/1.1`).
    pub fn http_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.loaded.read().http)
    }

    /// When the certificate clients see expires, in seconds since the epoch.
    pub fn not_after_unix(&self) -> i64 {
        self.loaded.read().not_after_unix
    }
}

fn load(paths: &ClientTlsPaths) -> Result<Loaded, TlsError> {
    let chain = read_certs(&paths.cert)?;
    let key_bytes = std::fs::read(&paths.key).map_err(|e| file_error(&paths.key, e))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| file_error(&paths.key, e))?;
    let not_after_unix = super::der::not_after_unix(&chain[0])
        .ok_or_else(|| file_error(&paths.cert, "unreadable validity"))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let builder = match paths.auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs(&paths.client_ca)? {
                roots
                    .add(ca)
                    .map_err(|e| file_error(&paths.client_ca, format!("not a usable CA: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::Invalid(e.to_string()))?,
            )
        }
    };
    let resp = builder
        .with_single_cert(chain, key)
        .map_err(|e| file_error(&paths.key, e))?;
    let mut http = resp.clone();
    http.alpn_protocols = vec![HTTP_ALPN.to_vec()];
    Ok(Loaded {
        resp: Arc::new(resp),
        http: Arc::new(http),
        not_after_unix,
    })
}
