//! Admin verbs that ask a running node over its HTTP port.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};

/// Largest admin answer read, in bytes.
const ADMIN_RESPONSE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// A minimal HTTP/1.1 GET (admin answers are small JSON documents).
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("no address for {addr}"))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}: is a node running there?"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .take(ADMIN_RESPONSE_BYTES_MAX)
        .read_to_end(&mut raw)
        .context("reading the answer")?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

fn get_json(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = http_get(addr, path)?;
    if status != 200 {
        bail!("{path} answered {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("{path} did not answer JSON"))
}

/// `ringkv status`.
pub fn status(addr: &str) -> anyhow::Result<()> {
    let v = get_json(addr, "/v1/status")?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// `ringkv ring`.
pub fn ring(addr: &str) -> anyhow::Result<()> {
    let v = get_json(addr, "/v1/status")?;
    let id = v["node_id"].as_str().unwrap_or("?");
    println!("ring: 1 node");
    println!("  {id}  owns 100.0% of tokens (single-node ring)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunk_joins_chunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
