//! The TLS handshakes a stranger can drive, on arbitrary bytes: the
//! cluster port's server (mutual TLS 1.3, client certificates of the
//! cluster CA, ALPN `ringkv-cluster/1`), a node dialing a peer (the
//! server's answer), and client TLS (RESP and HTTPS, client certificates
//! optional). Each connection takes the input as the peer's bytes, whole
//! and then in two reads; errors only, never a panic or a loop.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ringkv_cluster::net::certs;
use ringkv_cluster::net::client_tls::{ClientAuth, ClientTls, ClientTlsPaths};
use ringkv_cluster::net::tls::NodeTls;

struct Configs {
    node: Arc<NodeTls>,
    clients: Arc<ClientTls>,
}

/// A CA and a node certificate, made once per process in a temporary
/// folder.
fn configs() -> &'static Configs {
    static CONFIGS: OnceLock<Configs> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ringkv-fuzz-tls-{}", std::process::id()));
        let ca = certs::new_ca(30).expect("CA");
        let pem = certs::issue_node(&ca, 0x42, 30, &["localhost".into()]).expect("node");
        let paths = certs::write_node_folder(&dir, &ca.cert, &pem).expect("write");
        let node = Arc::new(NodeTls::load(paths.clone()).expect("load"));
        let clients = Arc::new(
            ClientTls::load(ClientTlsPaths {
                cert: paths.cert,
                key: paths.key,
                client_ca: paths.ca,
                auth: ClientAuth::Optional,
            })
            .expect("client TLS"),
        );
        Configs { node, clients }
    })
}

/// Feeds `data` as the peer's bytes, in reads cut at `split`.
fn feed<D>(conn: &mut rustls::ConnectionCommon<D>, data: &[u8], split: usize) {
    for part in [&data[..split], &data[split..]] {
        let mut rest = part;
        while !rest.is_empty() {
            match conn.read_tls(&mut rest) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if conn.process_new_packets().is_err() {
                return;
            }
        }
        // What the connection would answer.
        let mut out = Vec::new();
        while conn.wants_write() {
            if conn.write_tls(&mut out).is_err() {
                return;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let c = configs();
    let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    for server in [
        c.node.server_config(),
        c.clients.resp_config(),
        c.clients.http_config(),
    ] {
        if let Ok(mut conn) = rustls::ServerConnection::new(server) {
            feed(&mut conn, data, split);
        }
    }
    if let Ok(mut conn) =
        rustls::ClientConnection::new(c.node.client_config(), NodeTls::dial_name())
    {
        feed(&mut conn, data, split);
    }
});
