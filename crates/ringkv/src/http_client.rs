//! The node's admin API over HTTP, as the admin verbs (`status`, `repair`,
//! ...), the autoscaler and the proof harness ask it: one blocking exchange
//! at a time, bounded in time and in answer size.

use std::fmt::Display;
use std::sync::OnceLock;

use rustls::pki_types::pem::PemObject;
use std::time::Duration;

use anyhow::{Context, bail};
use ureq::http::Method;

/// Connect timeout, and the longest wait for any one read or write.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read, in bytes.
const HTTP_BODY_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// The process-wide client, and the scheme it speaks. Every status is an
/// answer (a 4xx or 5xx carries the node's JSON error), redirects are not
/// followed, proxies are not used (the nodes are reached directly), and no
/// connection is kept idle: a node that was killed and restarted on the
/// same port is never asked over a connection of its previous life.
///
/// Nodes with client TLS are asked over HTTPS when `RINGKV_HTTP_CA` names
/// the PEM file of the CAs to trust (the cluster's `ca.pem`);
/// `RINGKV_HTTP_CERT` and `RINGKV_HTTP_KEY` add a client certificate.
fn agent() -> anyhow::Result<&'static (ureq::Agent, &'static str)> {
    static AGENT: OnceLock<Result<(ureq::Agent, &'static str), String>> = OnceLock::new();
    AGENT
        .get_or_init(|| build_agent().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn build_agent() -> anyhow::Result<(ureq::Agent, &'static str)> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .timeout_resolve(Some(HTTP_TIMEOUT))
        .timeout_connect(Some(HTTP_TIMEOUT))
        .timeout_per_read(Some(HTTP_TIMEOUT))
        .timeout_per_write(Some(HTTP_TIMEOUT));
    let Some(ca) = std::env::var_os("RINGKV_HTTP_CA") else {
        return Ok((config.build().new_agent(), "http"));
    };
    let read = |path: &std::ffi::OsStr| {
        std::fs::read(path).with_context(|| format!("reading {}", path.to_string_lossy()))
    };
    let pem = read(&ca)?;
    let roots = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|der| Certificate::from_der(&der).to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("RINGKV_HTTP_CA {}: not PEM", ca.to_string_lossy()))?;
    if roots.is_empty() {
        bail!(
            "RINGKV_HTTP_CA {}: no certificate in it",
            ca.to_string_lossy()
        );
    }
    let mut tls = TlsConfig::builder()
        .unversioned_rustls_crypto_provider(ringkv_cluster::net::tls::provider())
        .root_certs(RootCerts::new_with_certs(&roots));
    if let (Some(cert), Some(key)) = (
        std::env::var_os("RINGKV_HTTP_CERT"),
        std::env::var_os("RINGKV_HTTP_KEY"),
    ) {
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(&read(&cert)?)
            .map(|c| c.map(|der| Certificate::from_der(&der).to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("RINGKV_HTTP_CERT {}: not PEM", cert.to_string_lossy()))?;
        let key = PrivateKey::from_pem(&read(&key)?)
            .with_context(|| format!("RINGKV_HTTP_KEY {}: not a PEM key", key.to_string_lossy()))?;
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    config = config.tls_config(tls.build());
    Ok((config.build().new_agent(), "https"))
}

/// One exchange with the node at `addr` (`host:port`): its status and body,
/// whatever the status. A body, if any, is sent as JSON.
pub fn request(
    addr: impl Display,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    request_with_header(addr, method, path, body, "").map(|(status, _, body)| (status, body))
}

/// [`request`] for an answer that takes long to come (a snapshot being
/// copied): each read waits up to `wait`.
pub fn request_slow(
    addr: impl Display,
    method: &str,
    path: &str,
    body: &[u8],
    wait: Duration,
) -> anyhow::Result<(u16, Vec<u8>)> {
    exchange(addr, method, path, body, "", wait).map(|(status, _, body)| (status, body))
}

/// [`request`], and the value of the answer's header `header` (if any).
pub fn request_with_header(
    addr: impl Display,
    method: &str,
    path: &str,
    body: &[u8],
    header: &str,
) -> anyhow::Result<(u16, Option<String>, Vec<u8>)> {
    exchange(addr, method, path, body, header, HTTP_TIMEOUT)
}

fn exchange(
    addr: impl Display,
    method: &str,
    path: &str,
    body: &[u8],
    header: &str,
    read_wait: Duration,
) -> anyhow::Result<(u16, Option<String>, Vec<u8>)> {
    let method = Method::from_bytes(method.as_bytes())
        .with_context(|| format!("{method:?} is not an HTTP method"))?;
    let (agent, scheme) = agent()?;
    let uri = format!("{scheme}://{addr}{path}");
    let mut builder = ureq::http::Request::builder()
        .method(method.clone())
        .uri(&uri)
        .header("content-type", "application/json");
    // A node with users wants credentials: RINGKV_HTTP_USER and
    // RINGKV_HTTP_PASSWORD (never flags).
    if let (Ok(user), Ok(password)) = (
        std::env::var("RINGKV_HTTP_USER"),
        std::env::var("RINGKV_HTTP_PASSWORD"),
    ) {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        builder = builder.header("authorization", format!("Basic {token}"));
    }
    let req = builder
        .body(body)
        .with_context(|| format!("{method} {uri}: not a valid request"))?;
    let req = agent
        .configure_request(req)
        .timeout_per_read(Some(read_wait))
        .build();
    let mut answer = agent
        .run(req)
        .with_context(|| format!("asking {addr} ({method} {path}): is a node running there?"))?;
    let status = answer.status().as_u16();
    let value = (!header.is_empty())
        .then(|| answer.headers().get(header))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = answer
        .body_mut()
        .with_config()
        .limit(HTTP_BODY_BYTES_MAX)
        .read_to_vec()
        .with_context(|| format!("reading the answer of {addr} to {method} {path}"))?;
    Ok((status, value, body))
}

/// GET `path` as JSON; any status but 200 is an error that carries the
/// node's answer.
pub fn get_json(addr: impl Display, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = request(&addr, "GET", path, b"")?;
    if status != 200 {
        bail!(
            "GET {path} on {addr} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).with_context(|| format!("GET {path} on {addr}: not JSON"))
}

/// POST a JSON body; any status but 200 is an error that carries the node's
/// answer.
pub fn post_json(addr: impl Display, path: &str, body: &serde_json::Value) -> anyhow::Result<()> {
    let (status, answer) = request(&addr, "POST", path, body.to_string().as_bytes())?;
    if status != 200 {
        bail!(
            "POST {path} on {addr} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// Serves one connection with `answer` after reading the request head
    /// and the body its Content-Length announces; returns the request.
    fn serve_once(
        answer: &'static [u8],
    ) -> anyhow::Result<(String, std::thread::JoinHandle<String>)> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let served = std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return String::new();
            };
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = reader.get_mut().write_all(answer);
            head + &String::from_utf8_lossy(&body)
        });
        Ok((addr, served))
    }

    #[test]
    fn an_error_status_is_an_answer_and_a_chunked_body_is_joined() -> anyhow::Result<()> {
        let (addr, served) = serve_once(
            b"HTTP/1.1 409 Conflict\r\ntransfer-encoding: chunked\r\n\r\n\
              3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )?;
        let (status, body) = request(&addr, "POST", "/v1/repair", b"{}")?;
        assert_eq!((status, body.as_slice()), (409, b"abcde".as_slice()));
        let head = served
            .join()
            .map_err(|_| anyhow::anyhow!("server panicked"))?;
        assert!(head.starts_with("POST /v1/repair HTTP/1.1\r\n"), "{head}");
        assert!(head.ends_with("{}"), "{head}");
        Ok(())
    }

    #[test]
    fn a_malformed_chunk_is_an_error_not_the_end_of_the_body() -> anyhow::Result<()> {
        let (addr, _served) = serve_once(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              3\r\nabc\r\nzz\r\nde\r\n0\r\n\r\n",
        )?;
        assert!(request(&addr, "GET", "/v1/cluster", b"").is_err());
        Ok(())
    }

    #[test]
    fn get_json_reports_the_status_and_the_nodes_answer() -> anyhow::Result<()> {
        let (addr, _served) = serve_once(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 14\r\n\r\n{\"code\":\"no\"}\n",
        )?;
        let err = get_json(&addr, "/v1/repair")
            .err()
            .context("503 is an error")?;
        assert!(
            err.to_string().contains("answered 503: {\"code\":\"no\"}"),
            "{err}"
        );
        Ok(())
    }
}
