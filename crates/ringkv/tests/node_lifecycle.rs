//! A real node process: durability across graceful restart and kill -9,
//! TTLs, limits, and the HTTP API.

mod common;

use common::{NodeProc, http};
use redis::Commands;

#[test]
fn acknowledged_writes_survive_graceful_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProc::start(dir.path(), &[]);
    let mut con = node.redis();
    for i in 0..500 {
        let _: () = con.set(format!("k{i}"), format!("v{i}")).expect("set");
    }
    let _: () = con.del("k7").expect("del");
    drop(con);
    let status = node.terminate();
    assert!(status.success(), "SIGTERM exit: {status:?}");

    let node = NodeProc::start(dir.path(), &[]);
    let mut con = node.redis();
    for i in 0..500 {
        let got: Option<String> = con.get(format!("k{i}")).expect("get");
        if i == 7 {
            assert_eq!(got, None, "deleted key came back");
        } else {
            assert_eq!(got.as_deref(), Some(format!("v{i}").as_str()), "key k{i}");
        }
    }
    let n: u64 = redis::cmd("DBSIZE").query(&mut con).expect("dbsize");
    assert_eq!(n, 499);
}

#[test]
fn acknowledged_writes_survive_kill_9_in_default_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProc::start(dir.path(), &[]);
    let mut con = node.redis();
    let value = "x".repeat(200);
    for i in 0..2_000 {
        let _: () = con.set(format!("key:{i}"), &value).expect("set");
    }
    // No graceful anything: the process dies right after the last reply.
    node.kill9();

    let node = NodeProc::start(dir.path(), &[]);
    let mut con = node.redis();
    for i in 0..2_000 {
        let got: Option<String> = con.get(format!("key:{i}")).expect("get");
        assert_eq!(
            got.as_deref(),
            Some(value.as_str()),
            "key:{i} lost after kill -9"
        );
    }
}

#[test]
fn ttl_expires_keys_as_redis_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProc::start(dir.path(), &[]);
    let mut con = node.redis();
    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(300)
        .query(&mut con)
        .expect("set px");
    let _: () = con.set("forever", "v").expect("set");
    let pttl: i64 = con.pttl("short").expect("pttl");
    assert!(pttl > 0 && pttl <= 300, "pttl {pttl}");
    let ttl: i64 = con.ttl("forever").expect("ttl");
    assert_eq!(ttl, -1);
    let ttl: i64 = con.ttl("missing").expect("ttl");
    assert_eq!(ttl, -2);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let got: Option<String> = con.get("short").expect("get");
    assert_eq!(got, None, "expired key still served");
    let ttl: i64 = con.ttl("short").expect("ttl");
    assert_eq!(ttl, -2);
    let set: bool = con.expire("forever", 100).expect("expire");
    assert!(set);
    let ttl: i64 = con.ttl("forever").expect("ttl");
    assert!((99..=100).contains(&ttl), "ttl {ttl}");
    let persisted: bool = con.persist("forever").expect("persist");
    assert!(persisted);
    let ttl: i64 = con.ttl("forever").expect("ttl");
    assert_eq!(ttl, -1);
}

#[test]
fn oversized_values_are_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProc::start(dir.path(), &[]);
    let mut con = node.redis();
    let _: () = con.set("keep", "me").expect("set");
    let big = vec![b'x'; 1024 * 1024 + 1];
    let err = con.set::<_, _, ()>("big", big).expect_err("too large");
    assert!(
        err.to_string().contains("limit"),
        "error names the limit: {err}"
    );
    let long_key = "k".repeat(1025);
    let err = con
        .set::<_, _, ()>(long_key, "v")
        .expect_err("key too large");
    assert!(err.to_string().contains("1024"), "{err}");
    // The node and this connection still work; nothing was lost.
    let got: Option<String> = con.get("keep").expect("get");
    assert_eq!(got.as_deref(), Some("me"));
    let ok: Option<String> = con.get("big").expect("get");
    assert_eq!(ok, None);
}

#[test]
fn http_api_roundtrip_binary_keys_ttl_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProc::start(dir.path(), &[]);
    let value: Vec<u8> = (0..=255u8).collect();
    let (s, _, _) = http(
        node.http,
        "PUT",
        "/v1/kv/bin%00key%2F1?ttl=100",
        &[],
        &value,
    );
    assert_eq!(s, 204);
    let (s, headers, body) = http(node.http, "GET", "/v1/kv/bin%00key%2F1", &[], b"");
    assert_eq!(s, 200);
    assert_eq!(body, value);
    assert!(headers.iter().any(|(k, _)| k == "x-ringkv-context"));
    assert!(headers.iter().any(|(k, _)| k == "x-ringkv-expires-at-ms"));
    // The same key through RESP.
    let mut con = node.redis();
    let got: Vec<u8> = con.get(b"bin\0key/1".as_slice()).expect("get");
    assert_eq!(got, value);

    let (s, _, _) = http(node.http, "DELETE", "/v1/kv/bin%00key%2F1", &[], b"");
    assert_eq!(s, 204);
    let (s, _, body) = http(node.http, "GET", "/v1/kv/bin%00key%2F1", &[], b"");
    assert_eq!(s, 404);
    let err: serde_json::Value = serde_json::from_slice(&body).expect("json error");
    assert_eq!(err["code"], "not_found");

    let (s, _, body) = http(node.http, "GET", "/v1/kv/a?r=SOME", &[], b"");
    assert_eq!(s, 400);
    let err: serde_json::Value = serde_json::from_slice(&body).expect("json error");
    assert_eq!(err["code"], "invalid_argument");
    let (s, _, body) = http(
        node.http,
        "PUT",
        "/v1/kv/a",
        &[("x-ringkv-context", "!!")],
        b"v",
    );
    assert_eq!(s, 400);
    let err: serde_json::Value = serde_json::from_slice(&body).expect("json error");
    assert_eq!(err["code"], "bad_context");

    let (s, _, body) = http(node.http, "GET", "/v1/status", &[], b"");
    assert_eq!(s, 200);
    let status: serde_json::Value = serde_json::from_slice(&body).expect("status json");
    assert!(status["node_id"].is_string());
    let (s, _, body) = http(node.http, "GET", "/healthz", &[], b"");
    assert_eq!((s, body.as_slice()), (200, b"ok\n".as_slice()));
    let (s, _, body) = http(node.http, "GET", "/metrics", &[], b"");
    assert_eq!(s, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("ringkv_resp_commands_total"),
        "metrics: {text}"
    );
}

#[test]
fn http_siblings_answer_multiple_choices_and_context_resolves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProc::start(dir.path(), &[]);
    let (s, _, _) = http(node.http, "PUT", "/v1/kv/cart", &[], b"base");
    assert_eq!(s, 204);
    let (_, headers, _) = http(node.http, "GET", "/v1/kv/cart", &[], b"");
    let ctx = headers
        .iter()
        .find(|(k, _)| k == "x-ringkv-context")
        .map(|(_, v)| v.clone())
        .expect("context");
    // Two writers with the same stale context: both survive as siblings.
    for v in [b"apple".as_slice(), b"pear".as_slice()] {
        let (s, _, _) = http(
            node.http,
            "PUT",
            "/v1/kv/cart",
            &[("x-ringkv-context", &ctx)],
            v,
        );
        assert_eq!(s, 204);
    }
    let (s, headers, body) = http(node.http, "GET", "/v1/kv/cart", &[], b"");
    assert_eq!(s, 300);
    let ctype = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(ctype.starts_with("multipart/mixed; boundary="), "{ctype}");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("apple") && text.contains("pear"), "{text}");
    assert!(!text.contains("base"), "superseded value returned: {text}");
    let merged = headers
        .iter()
        .find(|(k, _)| k == "x-ringkv-context")
        .map(|(_, v)| v.clone())
        .expect("context");
    let (s, _, _) = http(
        node.http,
        "PUT",
        "/v1/kv/cart",
        &[("x-ringkv-context", &merged)],
        b"apple+pear",
    );
    assert_eq!(s, 204);
    let (s, _, body) = http(node.http, "GET", "/v1/kv/cart", &[], b"");
    assert_eq!((s, body.as_slice()), (200, b"apple+pear".as_slice()));
}
