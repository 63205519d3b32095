//! Fault-injection routes, for proving guarantees on real processes.
//!
//! These routes exist only when the node runs with `[debug] fault_injection =
//! true`: the binary merges [`debug_router`] into the main router then, and
//! never otherwise. They change how this node talks to its peers and what its
//! clock says; they never touch data.
//!
//! # Routes
//! - `POST /v1/debug/partition` with `{"nodes": ["<node id hex>", ...]}`:
//!   from now on this node neither calls nor answers those peers (replaces
//!   any earlier set). Answers the blocked set.
//! - `POST /v1/debug/heal`: unblocks every peer and removes any clock skew.
//! - `POST /v1/debug/skew` with `{"offset_ms": -1500}`: shifts this node's
//!   wall clock (hybrid logical clocks, TTLs) by the offset from now on.
//! - `GET /v1/debug/faults`: the blocked peers and the clock offset.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

/// Most peers one partition request may name.
const PARTITION_NODES_MAX: usize = 4096;
/// Largest clock offset accepted, either way (one day).
const SKEW_MS_MAX: i64 = 24 * 3600 * 1000;

/// What the debug routes act on; the binary implements it over the
/// transport's blocked-peer set and the node's skewable clock.
pub trait FaultControl: Send + Sync + 'static {
    /// Blocks exactly `peers` (node ids), both ways.
    fn partition(&self, peers: Vec<u64>);
    /// Unblocks every peer and sets the clock offset back to zero.
    fn heal(&self);
    /// Shifts the wall clock by `offset_ms`.
    fn skew(&self, offset_ms: i64);
    /// The blocked peers and the clock offset in ms.
    fn state(&self) -> (Vec<u64>, i64);
}

#[derive(Debug, Deserialize)]
struct PartitionBody {
    nodes: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct SkewBody {
    offset_ms: i64,
}

/// The routes above, over `faults`.
pub fn debug_router(faults: Arc<dyn FaultControl>) -> Router {
    Router::new()
        .route("/v1/debug/partition", post(partition))
        .route("/v1/debug/heal", post(heal))
        .route("/v1/debug/skew", post(skew))
        .route("/v1/debug/faults", get(state))
        .with_state(faults)
}

fn bad_request(message: String) -> Response {
    let body = serde_json::json!({ "code": "invalid_argument", "message": message });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn state_json(faults: &dyn FaultControl) -> Response {
    let (blocked, offset_ms) = faults.state();
    axum::Json(serde_json::json!({
        "blocked": blocked.iter().map(|id| format!("{id:016x}")).collect::<Vec<_>>(),
        "clock_offset_ms": offset_ms,
    }))
    .into_response()
}

async fn partition(
    State(faults): State<Arc<dyn FaultControl>>,
    body: axum::body::Bytes,
) -> Response {
    let parsed: PartitionBody = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_request(format!("expected {{\"nodes\": [...]}}: {e}")),
    };
    if parsed.nodes.len() > PARTITION_NODES_MAX {
        return bad_request(format!("at most {PARTITION_NODES_MAX} nodes"));
    }
    let mut ids = Vec::with_capacity(parsed.nodes.len());
    for text in &parsed.nodes {
        match u64::from_str_radix(text, 16) {
            Ok(id) => ids.push(id),
            Err(_) => return bad_request(format!("not a node id (hex): {text:?}")),
        }
    }
    tracing::warn!(blocked = ?parsed.nodes, "fault injection: partition");
    faults.partition(ids);
    state_json(faults.as_ref())
}

async fn heal(State(faults): State<Arc<dyn FaultControl>>) -> Response {
    tracing::warn!("fault injection: heal");
    faults.heal();
    state_json(faults.as_ref())
}

async fn skew(State(faults): State<Arc<dyn FaultControl>>, body: axum::body::Bytes) -> Response {
    let parsed: SkewBody = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_request(format!("expected {{\"offset_ms\": N}}: {e}")),
    };
    if parsed.offset_ms.abs() > SKEW_MS_MAX {
        return bad_request(format!("offset_ms must be within ±{SKEW_MS_MAX}"));
    }
    tracing::warn!(offset_ms = parsed.offset_ms, "fault injection: clock skew");
    faults.skew(parsed.offset_ms);
    state_json(faults.as_ref())
}

async fn state(State(faults): State<Arc<dyn FaultControl>>) -> Response {
    state_json(faults.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use parking_lot::Mutex;
    use tower::ServiceExt;

    #[derive(Default)]
    struct Recorder(Mutex<(Vec<u64>, i64)>);

    impl FaultControl for Recorder {
        fn partition(&self, peers: Vec<u64>) {
            self.0.lock().0 = peers;
        }
        fn heal(&self) {
            *self.0.lock() = (Vec::new(), 0);
        }
        fn skew(&self, offset_ms: i64) {
            self.0.lock().1 = offset_ms;
        }
        fn state(&self) -> (Vec<u64>, i64) {
            self.0.lock().clone()
        }
    }

    async fn call(router: &Router, method: &str, path: &str, body: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body.to_string()))
            .expect("request");
        let resp = router.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn partition_skew_and_heal_reach_the_control() {
        let rec = Arc::new(Recorder::default());
        let router = debug_router(rec.clone());
        let (s, body) = call(
            &router,
            "POST",
            "/v1/debug/partition",
            r#"{"nodes":["00000000000000ff","2"]}"#,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(rec.state().0, vec![0xff, 2]);
        let (s, _) = call(&router, "POST", "/v1/debug/skew", r#"{"offset_ms":-1500}"#).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(rec.state().1, -1500);
        let (s, body) = call(&router, "GET", "/v1/debug/faults", "").await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.contains("\"clock_offset_ms\":-1500"), "{body}");
        let (s, _) = call(&router, "POST", "/v1/debug/heal", "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(rec.state(), (Vec::new(), 0));
    }

    #[tokio::test]
    async fn malformed_requests_are_refused() {
        let rec = Arc::new(Recorder::default());
        let router = debug_router(rec.clone());
        for (path, body) in [
            ("/v1/debug/partition", "{"),
            ("/v1/debug/partition", r#"{"nodes":["zz"]}"#),
            ("/v1/debug/skew", r#"{"offset_ms":"soon"}"#),
            ("/v1/debug/skew", r#"{"offset_ms":999999999999}"#),
        ] {
            let (s, _) = call(&router, "POST", path, body).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}");
        }
        assert_eq!(rec.state(), (Vec::new(), 0), "nothing changed");
    }
}
