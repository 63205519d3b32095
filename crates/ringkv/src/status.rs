//! Admin verbs that ask a running node over its HTTP port.

use anyhow::bail;

use crate::http_client::{get_json, request};

/// A request without a body to the node at `addr` (host:port): the status
/// and the answer as text.
fn ask(addr: &str, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let (status, body) = request(addr, method, path, b"")?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Prints `v` as one line of JSON.
fn say_json(v: &serde_json::Value) {
    say!("{v}");
}

/// `ringkv status`: every node as the asked node sees it.
pub fn status(admin: &crate::cli::AdminArgs) -> anyhow::Result<()> {
    let addr = admin.http.as_str();
    let v = get_json(addr, "/v1/cluster")?;
    if admin.json {
        say_json(&v);
        return Ok(());
    }
    let me = v["self"].as_str().unwrap_or("?");
    let replication = v["replication"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(dc, n)| format!("{dc}: {n} copies"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
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
        let ck = &node["cluster_keys"];
        if let Some(keys) = ck["keys"].as_u64() {
            // The same figure as DBSIZE and INFO's keyspace line.
            let how = if ck["exact"].as_bool().unwrap_or(false) {
                "exact".to_string()
            } else {
                format!(
                    "estimate: the {} nodes' key counts over {} copies of each key",
                    ck["nodes"].as_u64().unwrap_or(0),
                    ck["replicas"].as_u64().unwrap_or(0)
                )
            };
            say!("keys in the cluster: {keys} ({how})");
        }
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
pub fn repair(admin: &crate::cli::AdminArgs, wait: bool) -> anyhow::Result<()> {
    let addr = admin.http.as_str();
    let (code, body) = ask(addr, "POST", "/v1/repair")?;
    match code {
        _ if admin.json && (code == 202 || code == 409) => {}
        202 => say!("repair started on {addr}"),
        409 if wait => say!("a repair pass is already running on {addr}; following it"),
        409 => say!("a repair pass is already running on {addr}"),
        other => bail!("/v1/repair answered {other}: {body}"),
    }
    if !wait {
        return Ok(());
    }
    let started = std::time::Instant::now();
    loop {
        let v = get_json(addr, "/v1/repair")?;
        if admin.json {
            say_json(&v);
            if v["running"] != true {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
            continue;
        }
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
        &args.movement.admin,
        &path,
        body.to_string().as_bytes(),
        !args.movement.no_wait,
    )
}

/// `ringkv decommission`, `ringkv remove`, `ringkv cancel`: asks the node
/// at `addr` to start (or cancel) a movement, then follows it until it
/// ends. A decommissioned node stops at the end: its going away ends the
/// wait.
pub fn movement(admin: &crate::cli::AdminArgs, path: &str, wait: bool) -> anyhow::Result<()> {
    movement_with(admin, path, b"", wait)
}

fn movement_with(
    admin: &crate::cli::AdminArgs,
    path: &str,
    body: &[u8],
    wait: bool,
) -> anyhow::Result<()> {
    let addr = admin.http.as_str();
    let json = admin.json;
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
    if json {
        say_json(&started);
    } else {
        say!("{addr}: {}", movement_line(&started));
    }
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
                if json {
                    say_json(&serde_json::json!({ "kind": "decommission", "phase": "stopped" }));
                } else {
                    say!("{addr} has stopped: decommissioned");
                }
                return Ok(());
            }
            Err(_) if started["kind"] == "join" && path.ends_with("/cancel") => {
                if json {
                    say_json(&serde_json::json!({ "kind": "join", "phase": "stopped" }));
                } else {
                    say!("{addr} has stopped: join cancelled");
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if json {
            say_json(&m);
        } else {
            say!(
                "  {}  ({:.0}s)",
                movement_line(&m),
                begun.elapsed().as_secs_f64()
            );
        }
        match m["phase"].as_str() {
            Some("done" | "cancelled") => return Ok(()),
            Some("failed") => bail!("the movement failed: {}", m["last_error"]),
            _ => {}
        }
    }
}

/// `ringkv status --ranges`: the anti-entropy state of every range.
pub fn ranges(admin: &crate::cli::AdminArgs) -> anyhow::Result<()> {
    let v = get_json(&admin.http, "/v1/repair/ranges")?;
    if admin.json {
        say_json(&v);
        return Ok(());
    }
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
pub fn ring(admin: &crate::cli::AdminArgs) -> anyhow::Result<()> {
    let v = get_json(&admin.http, "/v1/cluster")?;
    if admin.json {
        say_json(&serde_json::json!({ "nodes": v["nodes"], "tokens": v["tokens"] }));
        return Ok(());
    }
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

/// `ringkv explain KEY`: where a key lives and each replica's version, as
/// text (times in UTC, time to live, whether the replicas agree) or JSON.
pub fn explain(admin: &crate::cli::AdminArgs, key: &str) -> anyhow::Result<()> {
    if key.is_empty() {
        bail!("the key is empty");
    }
    let encoded = ringkv_http::percent_encode(key.as_bytes());
    let v = get_json(&admin.http, &format!("/v1/explain/{encoded}"))?;
    if admin.json {
        say_json(&v);
        return Ok(());
    }
    for line in explain_text(key, &v) {
        say!("{line}");
    }
    Ok(())
}

/// The text of `ringkv explain` for the node's answer `v`.
fn explain_text(key: &str, v: &serde_json::Value) -> Vec<String> {
    let now = v["now_ms"].as_u64().unwrap_or(0);
    let token: u64 = v["token"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let prefs: Vec<&str> = v["preference_list"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let replicas = v["replicas"].as_array().cloned().unwrap_or_default();
    let mut out = vec![
        format!("key {key:?}  token {token} ({token:#018x})"),
        format!("replicas (preference order): {}", prefs.join(", ")),
    ];
    // Agreement: every replica that answered holds the same version.
    let answered: Vec<&serde_json::Value> = replicas
        .iter()
        .filter(|r| r["version"].is_array())
        .collect();
    let versions: Vec<String> = answered.iter().map(|r| r["version"].to_string()).collect();
    let verdict = if answered.len() < replicas.len() {
        format!(
            "unknown: {} of {} replicas answered",
            answered.len(),
            replicas.len()
        )
    } else if versions.windows(2).all(|w| w[0] == w[1]) {
        "yes: every replica holds the same version".to_string()
    } else {
        "no: versions differ (read repair or anti-entropy will merge them)".to_string()
    };
    out.push(format!("replicas agree: {verdict}"));
    for r in &replicas {
        let node = r["node"].as_str().unwrap_or("?");
        let up = if r["alive"] == true { "up" } else { "DOWN" };
        let mut line = format!("  {node}  {up:<4}  ");
        if let Some(why) = r["version"]["error"].as_str() {
            line.push_str(&format!("not read: {why}"));
            out.push(line);
            continue;
        }
        let siblings = r["siblings"].as_array().cloned().unwrap_or_default();
        let tombstones = r["tombstones"].as_u64().unwrap_or(0);
        let expired = r["expired"].as_u64().unwrap_or(0);
        line.push_str(&match (siblings.len(), tombstones, expired) {
            (0, 0, 0) if r["version"].as_array().is_some_and(Vec::is_empty) => {
                "no record".to_string()
            }
            (0, _, e) if e > 0 => format!("expired ({e} value(s) past their expiry)"),
            (0, t, _) if t > 0 => format!("deleted ({t} tombstone(s))"),
            (0, _, _) => "no live value".to_string(),
            (1, _, _) => "1 value".to_string(),
            (n, _, _) => format!("{n} siblings (concurrent values)"),
        });
        let version: Vec<String> = r["version"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| {
                        let actor = d[0].as_str().unwrap_or("?");
                        format!(
                            "{}:{}",
                            &actor[..actor.len().min(6)],
                            d[1].as_u64().unwrap_or(0) & COUNTER_MASK
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !version.is_empty() {
            line.push_str(&format!("  version {{{}}}", version.join(", ")));
        }
        out.push(line);
        for s in &siblings {
            let hlc = s["hlc"].as_u64().unwrap_or(0);
            let written = utc(hlc >> 16);
            let actor = s["dot"][0].as_str().unwrap_or("?");
            let mut sib = format!(
                "      {} bytes, written {written} by {actor}",
                s["value_bytes"].as_u64().unwrap_or(0)
            );
            match s["expires_at_ms"].as_u64() {
                Some(at) => sib.push_str(&format!(
                    ", expires {} (in {})",
                    utc(at),
                    human_duration(at.saturating_sub(now))
                )),
                None => sib.push_str(", no expiry"),
            }
            out.push(sib);
        }
    }
    out
}

/// A dot's counter without its epoch (the epoch sits in the high bits).
const COUNTER_MASK: u64 = (1 << ringkv_cluster::causality::EPOCH_SHIFT) - 1;

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm UTC`.
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// A duration for people: `45s`, `12m 5s`, `3h 20m`, `2d 4h`.
fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000 UTC");
        assert_eq!(utc(1_796_526_411_913), "2026-12-06 03:06:51.913 UTC");
        assert_eq!(human_duration(45_000), "45s");
        assert_eq!(human_duration(725_000), "12m 5s");
        assert_eq!(human_duration(12_000_000), "3h 20m");
        assert_eq!(human_duration(187_200_000), "2d 4h");
    }

    #[test]
    fn explain_reads_as_text_with_a_verdict() {
        let v = serde_json::json!({
            "token": "255",
            "now_ms": 1_796_526_400_000u64,
            "preference_list": ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"],
            "replicas": [
                {"node": "aaaaaaaaaaaaaaaa", "alive": true, "version": [["aaaaaaaaaaaaaaaa", 1_099_511_627_777u64]],
                 "siblings": [{"dot": ["aaaaaaaaaaaaaaaa", 1_099_511_627_777u64], "hlc": 1_796_526_390_000u64 << 16,
                               "value_bytes": 5, "expires_at_ms": 1_796_526_460_000u64}],
                 "tombstones": 0, "expired": 0},
                {"node": "bbbbbbbbbbbbbbbb", "alive": false, "version": {"error": "timed out"},
                 "siblings": [], "tombstones": 0, "expired": 0},
            ],
        });
        let text = explain_text("greeting", &v).join("\n");
        assert!(text.contains("token 255 (0x00000000000000ff)"), "{text}");
        assert!(
            text.contains("replicas agree: unknown: 1 of 2 replicas answered"),
            "{text}"
        );
        assert!(text.contains("1 value  version {aaaaaa:1}"), "{text}");
        assert!(
            text.contains("written 2026-12-06 03:06:30.000 UTC"),
            "{text}"
        );
        assert!(
            text.contains("expires 2026-12-06 03:07:40.000 UTC (in 1m 0s)"),
            "{text}"
        );
        assert!(
            text.contains("bbbbbbbbbbbbbbbb  DOWN  not read: timed out"),
            "{text}"
        );
    }
}
