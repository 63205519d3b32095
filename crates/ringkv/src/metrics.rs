//! The process's Prometheus metrics: the recorder, the HELP text of every
//! family, the figures copied in from the node every few seconds, and the
//! `process_*` and `ringkv_build_info` families rendered at each scrape.
//!
//! Conventions (checked by `promtool check metrics` in the tests): every
//! family has HELP and TYPE; counters end in `_total`; units are base units
//! (`_seconds`, `_bytes`, plain ratios); a gauge that can fall is set on
//! every reading, so a drained queue reads 0 rather than its last value.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ringkv_cluster::store::{EngineStore, FigureKind};
use ringkv_cluster::{Kv, Node};

/// The process-wide Prometheus recorder, installed and described once.
pub(crate) fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 0.5, 1.0,
                ])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may already be installed (tests in one
            // process); the handle still renders this recorder's view.
            if metrics::set_global_recorder(recorder).is_ok() {
                describe();
            }
            handle
        })
        .clone()
}

/// The whole text of a scrape: the recorder's families, then the node's
/// storage figures, the process's and the build's, read now.
pub(crate) fn render(handle: &PrometheusHandle, node: Option<&Node<EngineStore>>) -> String {
    let mut text = handle.render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if let Some(node) = node {
        storage_text(&node.info().storage, &mut text);
    }
    process_text(&mut text);
    text
}

/// The store's figures as `ringkv_storage_*` families: counters get
/// `_total`.
fn storage_text(figures: &[ringkv_cluster::store::StoreFigure], out: &mut String) {
    for f in figures {
        let (name, kind) = match f.kind {
            FigureKind::Counter => (format!("ringkv_storage_{}_total", f.name), "counter"),
            FigureKind::Gauge => (format!("ringkv_storage_{}", f.name), "gauge"),
        };
        let _ = write!(
            out,
            "# HELP {name} {}\n# TYPE {name} {kind}\n{name} {}\n\n",
            f.help,
            f.display()
        );
    }
}

/// HELP for every family of every crate.
fn describe() {
    use metrics::describe_gauge;
    ringkv_cluster::metrics::describe();
    ringkv_resp::stats::describe_metrics();
    ringkv_http::describe_metrics();
    ringkv_auth::describe_metrics();
    describe_gauge!(
        "ringkv_keys",
        "Live keys held by this node (its replicas of every range), exact as of the last key census"
    );
    describe_gauge!(
        "ringkv_keys_expiring",
        "Live keys held by this node that have an expiry, as of the last key census"
    );
    describe_gauge!(
        "ringkv_keys_census_age_seconds",
        "Seconds since the last key census finished"
    );
    describe_gauge!(
        "ringkv_hints_pending",
        "Hints held here for a down replica, by target node (0 once delivered)"
    );
    describe_gauge!(
        "ringkv_hints_pending_bytes",
        "Bytes of hints held here for a down replica, by target node (0 once delivered)"
    );
    describe_gauge!("ringkv_cluster_nodes", "Nodes this node knows of");
    describe_gauge!(
        "ringkv_cluster_nodes_down",
        "Known nodes this node sees as down"
    );
    describe_gauge!(
        "ringkv_ring_ownership",
        "Share of the ring this node owns as primary, 0 to 1"
    );
    describe_gauge!(
        "ringkv_movement_running",
        "1 while this node runs a join, decommission or removal"
    );
    describe_gauge!(
        "ringkv_movement_ranges_remaining",
        "Ranges the running movement has still to copy (0 when none runs)"
    );
    describe_gauge!(
        "ringkv_stream_rate_bytes_per_second",
        "The running movement's stream rate (0 when none runs)"
    );
    describe_gauge!(
        "ringkv_repair_running",
        "1 while an on-demand repair pass runs here"
    );
    describe_gauge!(
        "ringkv_repair_ranges_remaining",
        "Ranges the running repair pass has still to sync (0 when none runs)"
    );
    describe_gauge!(
        "ringkv_tls_certificate_expiry_seconds",
        "Seconds until this node's certificate expires, by purpose"
    );
}

/// How often the node's figures are copied into the metrics.
pub(crate) const GAUGES_INTERVAL: Duration = Duration::from_secs(5);

/// Copies the key census, hints, liveness, movements and repairs into the metrics every [`GAUGES_INTERVAL`] until `shutdown`
/// resolves.
pub(crate) async fn export_gauges(
    node: Arc<Node<EngineStore>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(GAUGES_INTERVAL);
    let mut hint_targets = BTreeSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        copy_figures(&node, &mut hint_targets);
    }
}

/// One reading; `hint_targets` remembers which targets had hints, so a
/// drained one is set to 0.
fn copy_figures(node: &Node<EngineStore>, hint_targets: &mut BTreeSet<String>) {
    let info = node.info();
    if let Some(keys) = info.keys {
        metrics::gauge!("ringkv_keys").set(keys.live as f64);
        metrics::gauge!("ringkv_keys_expiring").set(keys.expiring as f64);
        let age_ms = node.now_ms().saturating_sub(keys.counted_at_ms);
        metrics::gauge!("ringkv_keys_census_age_seconds").set(age_ms as f64 / 1000.0);
    }
    let mut now_pending = BTreeSet::new();
    for h in node.hints().pending() {
        let t = ringkv_cluster::id::display(h.target);
        metrics::gauge!("ringkv_hints_pending", "target" => t.clone()).set(h.count as f64);
        metrics::gauge!("ringkv_hints_pending_bytes", "target" => t.clone()).set(h.bytes as f64);
        now_pending.insert(t);
    }
    for drained in hint_targets.difference(&now_pending) {
        metrics::gauge!("ringkv_hints_pending", "target" => drained.clone()).set(0.0);
        metrics::gauge!("ringkv_hints_pending_bytes", "target" => drained.clone()).set(0.0);
    }
    hint_targets.extend(now_pending);
    let view = node.cluster();
    // A node that left the cluster is neither a member nor down.
    let members: Vec<_> = view
        .nodes
        .iter()
        .filter(|n| n.status != ringkv_cluster::api::NodeStatus::Left)
        .collect();
    let down = members.iter().filter(|n| !n.alive).count();
    metrics::gauge!("ringkv_cluster_nodes").set(members.len() as f64);
    metrics::gauge!("ringkv_cluster_nodes_down").set(down as f64);
    if let Some(me) = view.nodes.iter().find(|n| n.id == view.self_id) {
        metrics::gauge!("ringkv_ring_ownership").set(me.ownership);
    }
    let movement = node.movement();
    let running = movement.as_ref().is_some_and(|m| !m.phase.is_final());
    let (remaining, rate) = match movement.as_ref().filter(|_| running) {
        Some(m) => (
            m.ranges_total.saturating_sub(m.ranges_done),
            m.rate_bytes_per_sec,
        ),
        None => (0, 0),
    };
    metrics::gauge!("ringkv_movement_running").set(f64::from(u8::from(running)));
    metrics::gauge!("ringkv_movement_ranges_remaining").set(remaining as f64);
    metrics::gauge!("ringkv_stream_rate_bytes_per_second").set(rate as f64);
    let repair = node.repair_status().unwrap_or_default();
    let remaining = if repair.running {
        repair.ranges_total.saturating_sub(repair.ranges_done)
    } else {
        0
    };
    metrics::gauge!("ringkv_repair_running").set(f64::from(u8::from(repair.running)));
    metrics::gauge!("ringkv_repair_ranges_remaining").set(remaining as f64);
}

/// Appends the `process_*` families (Prometheus's standard names) and
/// `ringkv_build_info`, read now.
fn process_text(out: &mut String) {
    let p = ringkv_env::process::figures();
    let mut family = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n\n"
            );
        }
    };
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.resident_bytes.map(|v| v as f64),
    );
    family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        p.virtual_bytes.map(|v| v as f64),
    );
    family(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        p.open_fds.map(|v| v as f64),
    );
    family(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        p.max_fds.map(|v| v as f64),
    );
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds.map(f64::round),
    );
    family(
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        p.threads.map(|v| v as f64),
    );
    let _ = write!(
        out,
        "# HELP ringkv_build_info The version of this build (value 1).\n\
         # TYPE ringkv_build_info gauge\n\
         ringkv_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `ringkv_*` family recorded anywhere in the workspace's
    /// sources (`counter!("...")`, `gauge!`, `histogram!`), with the macro
    /// that records it.
    fn source_families() -> BTreeSet<(&'static str, String)> {
        let mut names = BTreeSet::new();
        for text in source_texts() {
            // Names recorded in place, and names kept in constants (the
            // autoscaler's): a constant counts as a gauge here.
            for macro_name in ["counter!(", "gauge!(", "histogram!(", "&str = "] {
                for (at, _) in text.match_indices(macro_name) {
                    let rest = text[at + macro_name.len()..].trim_start();
                    let Some(rest) = rest.strip_prefix("\"ringkv_") else {
                        continue;
                    };
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let kind = match macro_name {
                        "&str = " if name.ends_with("_total") => "counter!(",
                        "&str = " => "gauge!(",
                        other => other,
                    };
                    names.insert((kind, format!("ringkv_{name}")));
                }
            }
        }
        assert!(names.len() > 30, "found the families: {names:?}");
        names
    }

    /// The text of every Rust source of the workspace's crates, tests
    /// excepted.
    fn source_texts() -> Vec<String> {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut texts = Vec::new();
        let mut dirs = vec![crates];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("read sources").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if !path.ends_with("tests") && !path.ends_with("target") {
                        dirs.push(path);
                    }
                } else if path.extension().is_some_and(|e| e == "rs") {
                    texts.push(std::fs::read_to_string(&path).expect("read source"));
                }
            }
        }
        texts
    }

    /// Every family recorded in the sources gets HELP: a new family
    /// without a description fails here, not in an operator's `promtool`.
    #[test]
    fn every_family_in_the_sources_is_described() {
        // The autoscaler's families live in its own process and recorder
        // (described in autoscale.rs).
        let names: BTreeSet<_> = source_families()
            .into_iter()
            .filter(|(_, n)| !n.starts_with("ringkv_autoscaler_"))
            .collect();
        let handle = handle();
        for (macro_name, name) in &names {
            match *macro_name {
                "counter!(" => metrics::counter!(name.clone()).increment(0),
                "gauge!(" => metrics::gauge!(name.clone()).increment(0.0),
                _ => metrics::histogram!(name.clone()).record(0.0),
            }
        }
        let text = render(&handle, None);
        let undescribed: Vec<&String> = names
            .iter()
            .map(|(_, n)| n)
            .filter(|n| !text.contains(&format!("# HELP {n} ")))
            .collect();
        assert!(
            undescribed.is_empty(),
            "families without HELP: {undescribed:?}"
        );
    }

    /// docs/METRICS.md lists exactly the families ringkv exports: the
    /// sources' families (the autoscaler's among them), the store's and
    /// the record cache's figures, and the process's. A family
    /// added, renamed or dropped without the document fails here (a rename
    /// also belongs in its "Renamed" table).
    #[test]
    fn the_metrics_document_lists_every_family_and_no_other() {
        let doc_path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/METRICS.md");
        let doc = std::fs::read_to_string(&doc_path).expect("read docs/METRICS.md");
        let table = doc.split("\n## ").next().expect("the families table");
        let documented: BTreeSet<String> = table
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_string)
            .collect();

        let mut exported: BTreeSet<String> =
            source_families().into_iter().map(|(_, n)| n).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = ringkv_storage::Engine::open(dir.path(), ringkv_storage::Options::default())
            .expect("open a store");
        let store = EngineStore::new(engine, ringkv_env::SystemClock::shared(), 1000, false);
        let mut text = String::new();
        let mut figures = ringkv_cluster::store::LocalStore::stats(&store);
        figures.extend(ringkv_cluster::node::record_cache_figures(
            &ringkv_cluster::record_cache::RecordCacheStats::default(),
        ));
        storage_text(&figures, &mut text);
        process_text(&mut text);
        drop(store);
        exported.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .filter_map(|l| l.split(' ').next())
                .map(str::to_string),
        );

        let undocumented: Vec<_> = exported.difference(&documented).collect();
        let gone: Vec<_> = documented.difference(&exported).collect();
        assert!(
            undocumented.is_empty() && gone.is_empty(),
            "docs/METRICS.md misses {undocumented:?} and lists families no longer exported: {gone:?}"
        );
    }

    #[test]
    fn process_families_have_help_type_and_values() {
        let mut text = String::new();
        process_text(&mut text);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "ringkv_build_info",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}: {text}");
        }
        assert!(text.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))));
    }
}
