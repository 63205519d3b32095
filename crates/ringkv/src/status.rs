//! Admin verbs that ask a running node over its HTTP port.

use anyhow::bail;

use crate::http_client::{get_json, request};

/// Prints a line to stdout, ignoring a closed pipe (`ringkv status | head`).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// A request without a body to the node at `addr` (host:port): the status
/// and the answer as text.
fn ask(addr: &str, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let (status, body) = request(addr, method, path, b"")?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `ringkv status`: every node as the asked node sees it.
pub fn status(addr: &str) -> anyhow::Result<()> {
    let v = get_json(addr, "/v1/cluster")?;
    let me = v["self"].as_str().unwrap_or("?");
    let replication = v["replication"].to_string();
    let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
    say!("cluster seen by {me}; replication {replication}");
    say!(
        "{:<17} {:<8} {:<5} {:>7} {:>6} {:<6} {:<8} {:<21} {:<21} {:>9} {:>8} {:>10}",
        "node",
        "status",
        "alive",
        "owns",
        "phi",
        "dc",
        "rack",
        "resp",
        "http",
        "ops/s",
        "p99 us",
        "keys"
    );
    for n in &nodes {
        let phi = n["phi"]
            .as_f64()
            .map_or("-".to_string(), |p| format!("{p:.1}"));
        say!(
            "{:<17} {:<8} {:<5} {:>6.1}% {:>6} {:<6} {:<8} {:<21} {:<21} {:>9} {:>8} {:>10}",
            n["id"].as_str().unwrap_or("?"),
            n["status"].as_str().unwrap_or("?"),
            if n["alive"].as_bool().unwrap_or(false) {
                "up"
            } else {
                "DOWN"
            },
            n["ownership"].as_f64().unwrap_or(0.0) * 100.0,
            phi,
            n["dc"].as_str().unwrap_or("?"),
            n["rack"].as_str().unwrap_or("?"),
            n["resp_addr"].as_str().unwrap_or("?"),
            n["http_addr"].as_str().unwrap_or("?"),
            n["load"]["ops_per_sec"].as_u64().unwrap_or(0),
            n["load"]["p99_us"].as_u64().unwrap_or(0),
            n["load"]["keys"].as_u64().unwrap_or(0),
        );
    }
    // Certificates of the asked node, with a warning near expiry.
    if let Ok(node) = get_json(addr, "/v1/status") {
        for c in node["certificates"].as_array().into_iter().flatten() {
            let days = c["expires_in_days"].as_i64().unwrap_or(0);
            let warn = if days < crate::server::CERT_EXPIRY_WARN_DAYS {
                "  WARNING: renew it (see SECURITY.md)"
            } else {
                ""
            };
            say!(
                "certificate ({}) of {me}: expires in {days} days{warn}",
                c["purpose"].as_str().unwrap_or("?")
            );
        }
    }
    let hints = v["hints"]["pending"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if hints.is_empty() {
        say!("hints held by {me}: none");
    } else {
        say!("hints held by {me}:");
        for h in hints {
            say!(
                "  for {}  {} hints  {} bytes",
                h["target"].as_str().unwrap_or("?"),
                h["count"].as_u64().unwrap_or(0),
                h["bytes"].as_u64().unwrap_or(0)
            );
        }
    }
    if let Ok(r) = get_json(addr, "/v1/repair") {
        say!(
            "anti-entropy on {me}: {} of {} ranges in sync with every replica; oldest unsynced {:.0}s ago; {} passes; {} keys repaired",
            r["ranges_in_sync"].as_u64().unwrap_or(0),
            r["ranges_replicated"].as_u64().unwrap_or(0),
            r["oldest_unsynced_range_age_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            r["passes_completed"].as_u64().unwrap_or(0),
            r["keys_repaired"].as_u64().unwrap_or(0),
        );
    }
    if let Ok(m) = get_json(addr, "/v1/movement")
        && m["kind"].is_string()
    {
        say!("movement driven by {me}: {}", movement_line(&m));
    }
    if let Ok((200, body)) = request(
        addr,
        "GET",
        &format!("/v1/kv/{}", crate::autoscale::STATE_KEY),
        b"",
    ) && let Ok(state) = serde_json::from_slice::<crate::autoscale::State>(&body)
    {
        say!(
            "autoscaler: {} node(s) added and serving; last decisions:",
            state.added.len()
        );
        for d in state.decisions.iter().rev().take(5) {
            say!(
                "  {} {} ({} nodes before) {}: {}",
                d.at_ms,
                d.action,
                d.nodes_before,
                d.node,
                d.reason
            );
        }
    }
    say!(
        "hints dropped by {me}: {} (budget full), {} (expired)",
        v["hints"]["dropped_full"].as_u64().unwrap_or(0),
        v["hints"]["dropped_expired"].as_u64().unwrap_or(0)
    );
    Ok(())
}

/// `ringkv repair`: starts an on-demand anti-entropy pass on a node and
/// follows its progress until it ends.
pub fn repair(addr: &str, wait: bool) -> anyhow::Result<()> {
    let (code, body) = ask(addr, "POST", "/v1/repair")?;
    match code {
        202 => say!("repair started on {addr}"),
        409 => say!("a repair pass is already running on {addr}; following it"),
        other => bail!("/v1/repair answered {other}: {body}"),
    }
    if !wait {
        return Ok(());
    }
    let started = std::time::Instant::now();
    loop {
        let v = get_json(addr, "/v1/repair")?;
        let done = v["ranges_done"].as_u64().unwrap_or(0);
        let total = v["ranges_total"].as_u64().unwrap_or(0);
        say!(
            "  {done}/{total} ranges  {} keys repaired  {} B sent  {} B received  {} failures  ({:.0}s)",
            v["keys_repaired"].as_u64().unwrap_or(0),
            v["bytes_sent"].as_u64().unwrap_or(0),
            v["bytes_received"].as_u64().unwrap_or(0),
            v["sync_failures"].as_u64().unwrap_or(0),
            started.elapsed().as_secs_f64()
        );
        if v["running"] != true {
            say!(
                "repair finished: {} of {} ranges in sync with every replica",
                v["ranges_in_sync"].as_u64().unwrap_or(0),
                v["ranges_replicated"].as_u64().unwrap_or(0)
            );
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn movement_line(m: &serde_json::Value) -> String {
    let mut line = format!(
        "{} of {}: {}  {}/{} ranges  {} keys  {} B",
        m["kind"].as_str().unwrap_or("?"),
        m["node"].as_str().unwrap_or("?"),
        m["phase"].as_str().unwrap_or("?"),
        m["ranges_done"].as_u64().unwrap_or(0),
        m["ranges_total"].as_u64().unwrap_or(0),
        m["keys"].as_u64().unwrap_or(0),
        m["bytes"].as_u64().unwrap_or(0),
    );
    if m["phase"] == "streaming"
        && let Some(rate) = m["rate_bytes_per_sec"].as_u64()
    {
        line.push_str(&format!("  at {:.1} MB/s", rate as f64 / 1_048_576.0));
    }
    if let Some(e) = m["last_error"].as_str() {
        line.push_str(&format!("  (last error: {e})"));
    }
    line
}

/// `ringkv remove`: the removal of a dead node, granted by an admin
/// certificate when one is given (needed under mutual TLS): one signed
/// grant per status the removal takes the node through, for its current
/// life (generation).
pub fn remove(args: &crate::cli::RemoveArgs) -> anyhow::Result<()> {
    use base64::Engine as _;
    use ringkv_cluster::net::message::{REMOVAL_STATUSES, RemovalGrant, removal_grant_bytes};
    let addr = &args.movement.admin.http;
    let path = format!("/v1/remove/{}", args.node);
    let body = match (&args.admin_cert, &args.admin_key) {
        (None, None) => serde_json::json!({}),
        (Some(cert), Some(key)) => {
            let admin = ringkv_cluster::net::tls::AdminCredential::load(cert, key)?;
            let id = u64::from_str_radix(&args.node, 16)
                .ok()
                .filter(|id| *id != 0)
                .ok_or_else(|| {
                    anyhow::anyhow!("{:?} is not a node id (16 hex digits)", args.node)
                })?;
            let cluster = get_json(addr, "/v1/cluster")?;
            let generation = cluster["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["id"].as_str() == Some(args.node.as_str()))
                .and_then(|n| n["generation"].as_u64())
                .ok_or_else(|| anyhow::anyhow!("{addr} knows no node {}", args.node))?;
            let b64 = base64::engine::general_purpose::STANDARD;
            let grants = REMOVAL_STATUSES
                .into_iter()
                .map(|status| {
                    let sig = admin.sign(&removal_grant_bytes(id, generation, status))?;
                    Ok(serde_json::json!({
                        "status": RemovalGrant::status_name(status),
                        "cert": b64.encode(&sig.cert),
                        "scheme": sig.scheme,
                        "sig": b64.encode(&sig.sig),
                    }))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            serde_json::json!({ "grants": grants })
        }
        _ => bail!("--admin-cert and --admin-key go together"),
    };
    movement_with(
        addr,
        &path,
        body.to_string().as_bytes(),
        !args.movement.no_wait,
    )
}

/// `ringkv decommission`, `ringkv remove`, `ringkv cancel`: asks the node
/// at `addr` to start (or cancel) a movement, then follows it until it
/// ends. A decommissioned node stops at the end: its going away ends the
/// wait.
pub fn movement(addr: &str, path: &str, wait: bool) -> anyhow::Result<()> {
    movement_with(addr, path, b"", wait)
}

fn movement_with(addr: &str, path: &str, body: &[u8], wait: bool) -> anyhow::Result<()> {
    let (code, body) = request(addr, "POST", path, body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    if code != 202 {
        let why = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        bail!("{addr} refused: {why}");
    }
    let started: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    say!("{addr}: {}", movement_line(&started));
    if !wait {
        return Ok(());
    }
    let begun = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let m = match get_json(addr, "/v1/movement") {
            Ok(m) => m,
            // A decommissioned node, and one whose join was cancelled,
            // leave the ring and stop.
            Err(_) if started["kind"] == "decommission" => {
                say!("{addr} has stopped: decommissioned");
                return Ok(());
            }
            Err(_) if started["kind"] == "join" && path.ends_with("/cancel") => {
                say!("{addr} has stopped: join cancelled");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        say!(
            "  {}  ({:.0}s)",
            movement_line(&m),
            begun.elapsed().as_secs_f64()
        );
        match m["phase"].as_str() {
            Some("done" | "cancelled") => return Ok(()),
            Some("failed") => bail!("the movement failed: {}", m["last_error"]),
            _ => {}
        }
    }
}

/// `ringkv status --ranges`: the anti-entropy state of every range.
pub fn ranges(addr: &str) -> anyhow::Result<()> {
    let v = get_json(addr, "/v1/repair/ranges")?;
    let ranges = v["ranges"].as_array().cloned().unwrap_or_default();
    say!(
        "{:>20} {:>20}  {:<12}  replicas",
        "range start",
        "range end",
        "synced"
    );
    for r in &ranges {
        let synced = r["age_ms"].as_u64().map_or("never".to_string(), |a| {
            format!("{:.1}s ago", a as f64 / 1000.0)
        });
        let replicas: Vec<&str> = r["replicas"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        say!(
            "{:>20} {:>20}  {:<12}  {}",
            r["start"].as_str().unwrap_or("?"),
            r["end"].as_str().unwrap_or("?"),
            synced,
            replicas.join(" ")
        );
    }
    Ok(())
}

/// `ringkv ring`: token ownership.
pub fn ring(addr: &str) -> anyhow::Result<()> {
    let v = get_json(addr, "/v1/cluster")?;
    let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
    let tokens = v["tokens"].as_array().cloned().unwrap_or_default();
    say!("ring: {} nodes, {} tokens", nodes.len(), tokens.len());
    for n in &nodes {
        say!(
            "  {}  {:>6.2}%  {:>4} tokens  weight {}  {}",
            n["id"].as_str().unwrap_or("?"),
            n["ownership"].as_f64().unwrap_or(0.0) * 100.0,
            n["tokens"].as_u64().unwrap_or(0),
            n["weight"].as_u64().unwrap_or(1),
            n["status"].as_str().unwrap_or("?"),
        );
    }
    say!("token ranges (end token -> owner):");
    for t in tokens.iter().take(TOKENS_SHOWN_MAX) {
        say!(
            "  {:>20}  {}",
            t[0].as_str().unwrap_or("?"),
            t[1].as_str().unwrap_or("?")
        );
    }
    if tokens.len() > TOKENS_SHOWN_MAX {
        say!(
            "  ... {} more (GET /v1/cluster lists all)",
            tokens.len() - TOKENS_SHOWN_MAX
        );
    }
    Ok(())
}

/// Token lines `ringkv ring` prints at most.
const TOKENS_SHOWN_MAX: usize = 64;

/// `ringkv explain KEY`: where a key lives and each replica's version.
pub fn explain(addr: &str, key: &str) -> anyhow::Result<()> {
    let encoded: String = key
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let v = get_json(addr, &format!("/v1/explain/{encoded}"))?;
    say!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
