//! Real clients against a real node: redis-cli and Python's `redis` package
//! (which speaks RESP3 through HELLO 3 by default). When the tools are
//! missing these tests skip with a note, unless RINGKV_REQUIRE_TOOLS=1 (CI),
//! where a missing tool is a failure.

mod common;

use std::process::Command;

use common::{NodeProc, have, tools_required};

fn tool_present(tool: &str) -> bool {
    if have(tool) {
        return true;
    }
    assert!(
        !tools_required(),
        "{tool} is required (RINGKV_REQUIRE_TOOLS=1) but missing"
    );
    eprintln!("skipping: {tool} not installed");
    false
}

/// Whether python3 can import `module` (Python's redis package); a
/// failure when the tools are required.
fn python_module_present(module: &str) -> bool {
    if !tool_present("python3") {
        return false;
    }
    let present = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        assert!(
            !tools_required(),
            "Python's redis package is required but missing"
        );
        eprintln!("skipping: Python's redis package not installed");
    }
    present
}

fn redis_cli(node: &NodeProc, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &node.resp.port().to_string(), "-h", "127.0.0.1"])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    // redis-cli ends every reply with one newline (a nil is an empty line).
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

#[test]
fn redis_cli_drives_the_node() {
    if !tool_present("redis-cli") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProc::start(dir.path(), &[]);
    assert_eq!(redis_cli(&node, &["PING"]), "PONG");
    assert_eq!(
        redis_cli(&node, &["SET", "greeting", "hello", "EX", "60"]),
        "OK"
    );
    assert_eq!(redis_cli(&node, &["GET", "greeting"]), "hello");
    let ttl: i64 = redis_cli(&node, &["TTL", "greeting"]).parse().expect("ttl");
    assert!((59..=60).contains(&ttl));
    assert_eq!(redis_cli(&node, &["MSET", "a", "1", "b", "2"]), "OK");
    assert_eq!(redis_cli(&node, &["MGET", "a", "b", "nope"]), "1\n2\n");
    assert_eq!(redis_cli(&node, &["EXISTS", "a", "b", "nope"]), "2");
    assert_eq!(redis_cli(&node, &["DEL", "a", "nope"]), "1");
    // DBSIZE reads the key census, counted again every few seconds.
    common::wait_until("DBSIZE to count the two keys", 15, || {
        redis_cli(&node, &["DBSIZE"]) == "2"
    });
    // Counters, sets and hashes (b holds "2": a counter starts from it).
    assert_eq!(redis_cli(&node, &["INCR", "b"]), "3");
    assert_eq!(redis_cli(&node, &["SADD", "cli:s", "x", "y"]), "2");
    assert_eq!(redis_cli(&node, &["SMEMBERS", "cli:s"]), "x\ny");
    assert_eq!(redis_cli(&node, &["HSET", "cli:h", "f", "v"]), "1");
    assert_eq!(redis_cli(&node, &["HGETALL", "cli:h"]), "f\nv");
    let err = redis_cli(&node, &["INCR", "cli:s"]);
    assert!(err.starts_with("WRONGTYPE"), "{err}");
    let err = redis_cli(&node, &["INCRBYFLOAT", "b", "1"]);
    assert!(err.contains("ERR") && err.contains("INCRBYFLOAT"), "{err}");
    let err = redis_cli(&node, &["NOSUCHCMD", "x"]);
    assert!(err.starts_with("ERR unknown command"), "{err}");
    let info = redis_cli(&node, &["INFO", "keyspace"]);
    assert!(info.contains("db0:keys="), "{info}");
    // `--stat` reads INFO: the keys and a real memory figure (it once
    // showed `--9223372036854775808B`).
    // (stdbuf: redis-cli buffers its lines when not writing to a terminal.)
    let mut stat = Command::new("stdbuf")
        .args(["-oL", "redis-cli", "-p", &node.resp.port().to_string()])
        .args(["--stat", "-i", "0.1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli --stat");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = stat.stdout.take().expect("--stat stdout");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let row = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no --stat row: {text}"
        );
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
            text.push_str(&line);
            text.push('\n');
            if line.starts_with(|c: char| c.is_ascii_digit()) {
                break line;
            }
        }
    };
    let _ = stat.kill();
    let _ = stat.wait();
    let row: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(row.first(), Some(&"2"), "keys: {text}");
    let mem = row.get(1).copied().unwrap_or_default();
    assert!(
        mem.ends_with(['K', 'M', 'G', 'B']) && mem.starts_with(|c: char| c.is_ascii_digit()),
        "memory {mem:?} in {text}"
    );
    // The interactive mode's first requests (COMMAND DOCS) must not break it.
    let out = Command::new("redis-cli")
        .args(["-p", &node.resp.port().to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(stdin) = child.stdin.as_mut() {
                stdin.write_all(b"GET greeting\nQUIT\n")?;
            }
            child.wait_with_output()
        })
        .expect("interactive redis-cli");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hello"), "interactive output: {text}");
}

const PY_CLIENT: &str = r#"
import sys, redis
port = int(sys.argv[1])
r = redis.Redis(host="127.0.0.1", port=port, protocol=int(sys.argv[2]))
assert r.ping()
assert r.set("py:k", b"\x00\xffbin") is True
assert r.get("py:k") == b"\x00\xffbin", r.get("py:k")
assert r.set("py:k", "new", nx=True) is None
assert r.set("py:k", "v2", xx=True, get=True) == b"\x00\xffbin"
assert r.mset({"py:a": "1", "py:b": "2"}) is True
assert r.mget(["py:a", "py:b", "py:none"]) == [b"1", b"2", None]
assert r.expire("py:a", 100) is True
assert 99 <= r.ttl("py:a") <= 100
assert r.delete("py:a", "py:b", "py:none") == 2
assert r.exists("py:a") == 0
p = r.pipeline(transaction=False)
for i in range(100):
    p.set(f"py:p{i}", i)
assert all(p.execute())
assert r.get("py:p99") == b"99"
assert r.incr("py:p1") == 2
r.delete("py:c", "py:s", "py:h")
assert r.incrby("py:c", 5) == 5 and r.decr("py:c") == 4
assert r.get("py:c") == b"4"
assert r.sadd("py:s", "a", "b", "c") == 3 and r.srem("py:s", "c") == 1
assert r.smembers("py:s") == {b"a", b"b"}, r.smembers("py:s")
assert r.sismember("py:s", "a") and r.scard("py:s") == 2
assert r.smismember("py:s", ["a", "z"]) == [1, 0]
assert r.hset("py:h", mapping={"f1": "v1", "f2": "v2"}) == 2
assert r.hgetall("py:h") == {b"f1": b"v1", b"f2": b"v2"}, r.hgetall("py:h")
assert r.hincrby("py:h", "n", 3) == 3 and r.hget("py:h", "n") == b"3"
assert r.hdel("py:h", "f2") == 1 and r.hlen("py:h") == 2
assert r.type("py:s") == b"set" and r.type("py:h") == b"hash" and r.type("py:c") == b"string"
try:
    r.incr("py:s")
    raise SystemExit("INCR of a set must be refused")
except redis.ResponseError as e:
    assert str(e).startswith("WRONGTYPE"), e
info = r.info("server")
assert "redis_version" in info or "ringkv_version" in info, info
print("python ok")
"#;

#[test]
fn python_redis_client_works_in_resp2_and_resp3() {
    if !python_module_present("redis") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProc::start(dir.path(), &[]);
    for protocol in ["2", "3"] {
        let out = Command::new("python3")
            .args(["-c", PY_CLIENT, &node.resp.port().to_string(), protocol])
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "python client (RESP{protocol}) failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("python ok"));
    }
}

/// A node with a users file: redis-cli and redis-py log in as a user and
/// are held to its roles; without credentials nothing but AUTH is served.
#[test]
fn real_clients_authenticate_as_users() {
    if !tool_present("redis-cli") || !tool_present("python3") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = common::password_hash;
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[[user]]\nname = \"app\"\npassword_hash = \"{}\"\nroles = [\"read\", \"write\"]\nkeys = [\"app:*\"]\n\
             [[user]]\nname = \"default\"\npassword_hash = \"{}\"\nroles = [\"read\"]\n\
             [[user]]\nname = \"ops\"\npassword_hash = \"{}\"\nroles = [\"admin\", \"read\"]\n",
            hash("app-pw"),
            hash("ro-pw"),
            hash("ops-pw")
        ),
    )
    .expect("users file");
    let cfg = dir.path().join("ringkv.toml");
    std::fs::write(
        &cfg,
        format!("[auth]\nusers_file = \"{}\"\n", users.display()),
    )
    .expect("config");
    let node = NodeProc::start(&dir.path().join("n"), &["--config", &cfg.to_string_lossy()]);
    assert_eq!(
        redis_cli(&node, &["GET", "app:1"]).trim().to_string(),
        "NOAUTH Authentication required."
    );
    let as_app = ["--user", "app", "--pass", "app-pw", "--no-auth-warning"];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = as_app.iter().chain(extra).copied().collect();
        redis_cli(&node, &args).trim().to_string()
    };
    assert_eq!(run(&["SET", "app:1", "v"]), "OK");
    assert_eq!(run(&["GET", "app:1"]), "v");
    assert_eq!(
        run(&["SET", "other", "v"]),
        "NOPERM this user has no permissions to access one of the keys used as arguments"
    );
    assert_eq!(run(&["ACL", "WHOAMI"]), "app");
    // The default user (requirepass): `-a` alone, read only.
    let ro = ["-a", "ro-pw", "--no-auth-warning"];
    let args: Vec<&str> = ro.iter().chain(&["GET", "app:1"]).copied().collect();
    assert_eq!(redis_cli(&node, &args).trim(), "v");
    let args: Vec<&str> = ro.iter().chain(&["SET", "app:1", "w"]).copied().collect();
    assert_eq!(
        redis_cli(&node, &args).trim(),
        "NOPERM this user has no permissions to run the 'set' command"
    );
    let wrong: Vec<&str> = vec![
        "--user",
        "app",
        "--pass",
        "nope",
        "--no-auth-warning",
        "PING",
    ];
    // redis-cli reports the failed AUTH on stderr; the PING is refused.
    assert_eq!(
        redis_cli(&node, &wrong).trim(),
        "NOAUTH Authentication required."
    );

    // redis-py, RESP3 (HELLO 3 AUTH) and RESP2.
    let script = format!(
        "import redis\n\
         for proto in (3, 2):\n\
         \x20   r = redis.Redis(host='127.0.0.1', port={}, username='app', password='app-pw', protocol=proto)\n\
         \x20   assert r.get('app:1') == b'v', proto\n\
         \x20   try:\n\
         \x20       r.set('other', 'x')\n\
         \x20       raise SystemExit('write outside app:* allowed')\n\
         \x20   except redis.exceptions.NoPermissionError:\n\
         \x20       pass\n\
         try:\n\
         \x20   redis.Redis(host='127.0.0.1', port={}, username='app', password='bad').ping()\n\
         \x20   raise SystemExit('a wrong password was taken')\n\
         except redis.exceptions.AuthenticationError:\n\
         \x20   pass\n\
         print('ok')\n",
        node.resp.port(),
        node.resp.port()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{out:?}"
    );

    // HTTP: the same users, HTTP Basic.
    let http = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let (status, h, body) = common::http(node.http, method, path, headers, b"");
        (status, h, String::from_utf8_lossy(&body).into_owned())
    };
    let (app_h, app_v) = basic("app", "app-pw");
    let (ops_h, ops_v) = basic("ops", "ops-pw");
    let json = ("content-type", "application/json");
    assert_eq!(http("GET", "/healthz", &[]).0, 200);
    let (status, headers, _) = http("GET", "/v1/kv/app:1", &[]);
    assert_eq!(status, 401);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v.contains("Basic"))
    );
    assert_eq!(
        http("GET", "/v1/kv/app:1", &[(app_h, "Basic bm9wZTpub3Bl")]).0,
        401
    );
    let (status, _, body) = http("GET", "/v1/kv/app:1", &[(app_h, &app_v)]);
    assert_eq!((status, body.as_str()), (200, "v"));
    assert_eq!(http("PUT", "/v1/kv/other", &[(app_h, &app_v)]).0, 403);
    assert_eq!(http("GET", "/metrics", &[]).0, 401);
    assert_eq!(http("POST", "/v1/repair", &[(app_h, &app_v), json]).0, 403);
    assert_eq!(
        http("POST", "/v1/decommission", &[(app_h, &app_v), json]).0,
        403
    );
    assert_eq!(http("POST", "/v1/repair", &[(ops_h, &ops_v), json]).0, 202);
    // A page on another site cannot drive the admin routes, even with
    // credentials the browser holds.
    let host = node.http.to_string();
    let (status, _, body) = http(
        "POST",
        "/v1/repair",
        &[
            (ops_h, &ops_v),
            json,
            ("origin", "http://evil.example"),
            ("host", &host),
        ],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("cross_site"), "{body}");
    let (status, _, body) = http(
        "POST",
        "/v1/repair",
        &[(ops_h, &ops_v), ("content-type", "text/plain")],
    );
    assert_eq!(status, 403, "{body}");
    // The CLI passes credentials from the environment.
    let status = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["status", "--http", &node.http.to_string()])
        .env("RINGKV_HTTP_USER", "ops")
        .env("RINGKV_HTTP_PASSWORD", "ops-pw")
        .output()
        .expect("ringkv status");
    assert!(status.status.success(), "{status:?}");
}

/// The Basic header of `user:password`.
fn basic(user: &str, password: &str) -> (&'static str, String) {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    ("authorization", format!("Basic {token}"))
}

/// A users file with `app` (read, write; password `app-pw`) and `ops`
/// (admin, read; `ops-pw`), and a config naming it plus `extra`.
fn users_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let hash = common::password_hash;
    let users = dir.join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[[user]]\nname = \"app\"\npassword_hash = \"{}\"\nroles = [\"read\", \"write\"]\n\
             [[user]]\nname = \"ops\"\npassword_hash = \"{}\"\nroles = [\"admin\", \"read\"]\n",
            hash("app-pw"),
            hash("ops-pw")
        ),
    )
    .expect("users file");
    let cfg = dir.join("ringkv.toml");
    std::fs::write(
        &cfg,
        format!("[auth]\nusers_file = \"{}\"\n{extra}", users.display()),
    )
    .expect("config");
    cfg
}

/// A node with users and client TLS (`client_auth`), in a new folder;
/// the folder, the node and the CA file clients trust.
fn tls_node(client_auth: &str) -> (tempfile::TempDir, NodeProc, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = users_config(
        dir.path(),
        &format!("[tls]\nclients = true\nclient_auth = \"{client_auth}\"\n"),
    );
    let node = NodeProc::start(&dir.path().join("n"), &["--config", &cfg.to_string_lossy()]);
    let ca = dir.path().join("ca").join("ca.pem");
    (dir, node, ca)
}

/// redis-cli over TLS as `app`, with `extra` options; (success, output).
fn redis_cli_tls(node: &NodeProc, ca: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new("redis-cli")
        .args(["-p", &node.resp.port().to_string(), "-h", "127.0.0.1"])
        .args(["--tls", "--cacert", &ca.to_string_lossy()])
        .args(["--user", "app", "--pass", "app-pw", "--no-auth-warning"])
        .args(extra)
        .output()
        .expect("run redis-cli");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_string())
}

#[test]
fn real_clients_speak_tls_to_a_node_with_client_tls() {
    if !tool_present("redis-cli") || !tool_present("python3") || !tool_present("curl") {
        return;
    }
    let (dir, node, ca) = tls_node("optional");

    // redis-cli --tls --cacert: the node's certificate names 127.0.0.1.
    assert_eq!(
        redis_cli_tls(&node, &ca, &["SET", "k", "over tls"]),
        (true, "OK".to_string())
    );
    assert_eq!(
        redis_cli_tls(&node, &ca, &["GET", "k"]),
        (true, "over tls".to_string())
    );
    // A client that trusts another CA is refused in the handshake.
    let other = tempfile::tempdir().expect("tempdir");
    let foreign = ringkv_cluster::net::certs::load_or_create_ca(other.path()).expect("a CA");
    let foreign_ca = other.path().join("foreign.pem");
    std::fs::write(&foreign_ca, &foreign.cert).expect("write");
    let (ok, out) = redis_cli_tls(&node, &foreign_ca, &["GET", "k"]);
    assert!(!ok || !out.contains("over tls"), "{out}");
    assert!(out.contains("SSL") || out.contains("certificate"), "{out}");
    // A plaintext client gets nothing.
    let plain = Command::new("redis-cli")
        .args(["-p", &node.resp.port().to_string(), "-h", "127.0.0.1"])
        .args([
            "--user",
            "app",
            "--pass",
            "app-pw",
            "--no-auth-warning",
            "GET",
            "k",
        ])
        .output()
        .expect("redis-cli");
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("over tls"),
        "{plain:?}"
    );
    // Optional client certificates: one signed by the CA is taken too.
    let client_dir = dir.path().join("client");
    common::provision_certs(&client_dir);
    let certs = client_dir.join("certs");
    let (cert, key) = (certs.join("node.pem"), certs.join("node.key"));
    let with_cert = [
        "--cert",
        &*cert.to_string_lossy(),
        "--key",
        &*key.to_string_lossy(),
        "GET",
        "k",
    ]
    .map(String::from);
    let with_cert: Vec<&str> = with_cert.iter().map(String::as_str).collect();
    assert_eq!(
        redis_cli_tls(&node, &ca, &with_cert),
        (true, "over tls".to_string())
    );

    // redis-py: ssl=True with the CA, and a user.
    let script = format!(
        "import redis\n\
         for proto in (3, 2):\n\
         \x20   r = redis.Redis(host='127.0.0.1', port={port}, ssl=True, ssl_ca_certs='{ca}', \
         username='app', password='app-pw', protocol=proto)\n\
         \x20   r.set('py', 'tls %d' % proto)\n\
         \x20   assert r.get('py') == b'tls %d' % proto, proto\n\
         \x20   assert r.get('k') == b'over tls'\n\
         try:\n\
         \x20   redis.Redis(host='127.0.0.1', port={port}, username='app', password='app-pw', \
         socket_timeout=5).ping()\n\
         \x20   raise SystemExit('plaintext was answered')\n\
         except redis.exceptions.ConnectionError:\n\
         \x20   pass\n\
         print('ok')\n",
        port = node.resp.port(),
        ca = ca.display()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{out:?}"
    );

    // curl --cacert over HTTPS, with the same users.
    let url = format!("https://127.0.0.1:{}/v1/kv/k", node.http.port());
    let out = Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            &ca.to_string_lossy(),
            "-u",
            "app:app-pw",
            &url,
        ])
        .output()
        .expect("curl");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls");
    let out = Command::new("curl")
        .args(["-sS", "-u", "app:app-pw", &url])
        .output()
        .expect("curl");
    assert!(!out.status.success(), "no CA: the certificate is unknown");
    let out = Command::new("curl")
        .args(["-sS", &url.replace("https://", "http://")])
        .output()
        .expect("curl");
    assert!(!out.status.success(), "plaintext HTTP is not answered");
    // The CLI speaks HTTPS with RINGKV_HTTP_CA.
    let status = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["status", "--http", &node.http.to_string()])
        .env("RINGKV_HTTP_CA", &ca)
        .env("RINGKV_HTTP_USER", "ops")
        .env("RINGKV_HTTP_PASSWORD", "ops-pw")
        .output()
        .expect("ringkv status");
    assert!(status.status.success(), "{status:?}");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("certificate (clients) of"), "{text}");
    assert!(text.contains("certificate (cluster) of"), "{text}");
}

#[test]
fn client_certificates_can_be_required() {
    if !tool_present("redis-cli") || !tool_present("curl") {
        return;
    }
    let (dir, node, ca) = tls_node("required");
    let (ok, out) = redis_cli_tls(&node, &ca, &["PING"]);
    assert!(!ok || !out.contains("PONG"), "no client certificate: {out}");
    let client_dir = dir.path().join("client");
    common::provision_certs(&client_dir);
    let certs = client_dir.join("certs");
    let (cert, key) = (
        certs.join("node.pem").display().to_string(),
        certs.join("node.key").display().to_string(),
    );
    assert_eq!(
        redis_cli_tls(&node, &ca, &["--cert", &cert, "--key", &key, "PING"]),
        (true, "PONG".to_string())
    );
    // A certificate of another CA is refused.
    let other = tempfile::tempdir().expect("tempdir");
    common::provision_certs(&other.path().join("x"));
    let xcerts = other.path().join("x").join("certs");
    let (xcert, xkey) = (
        xcerts.join("node.pem").display().to_string(),
        xcerts.join("node.key").display().to_string(),
    );
    let (ok, out) = redis_cli_tls(&node, &ca, &["--cert", &xcert, "--key", &xkey, "PING"]);
    assert!(
        !ok || !out.contains("PONG"),
        "foreign client certificate: {out}"
    );
    // HTTPS the same.
    let url = format!("https://127.0.0.1:{}/healthz", node.http.port());
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--cacert", &ca.to_string_lossy()])
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl")
    };
    assert!(!curl(&[]).status.success(), "no client certificate");
    let out = curl(&["--cert", &cert, "--key", &key]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{out:?}");
}

/// redis-py's `RedisCluster` against three nodes: it bootstraps from
/// `CLUSTER SLOTS`, runs SET/GET/MGET, its `DBSIZE`, `SCAN` and `KEYS`
/// (sent to every primary) equal a plain connection's, and when the node it uses stops, it moves
/// to another and goes on.
const PY_CLUSTER: &str = r#"
import sys, time
from redis.cluster import RedisCluster, ClusterNode
ports = [int(p) for p in sys.argv[1:]]
rc = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in ports], socket_timeout=5)
for i in range(50):
    assert rc.set(f"ck:{i}", f"v{i}")
assert rc.get("ck:7") == b"v7"
assert rc.mget_nonatomic([f"ck:{i}" for i in range(5)]) == [f"v{i}".encode() for i in range(5)]
assert len(rc.get_nodes()) == 3, rc.get_nodes()
primaries = rc.get_primaries()
assert len(primaries) == 1, primaries
# Cluster-wide answers sent to every primary are not multiplied.
scanned = list(rc.scan_iter(match="ck:*", count=20))
assert len(scanned) == 50 and len(set(scanned)) == 50, scanned
assert sorted(rc.keys("ck:*")) == sorted(scanned)
# DBSIZE counts the cluster's keys from every node's key census (counted
# every few seconds): once counted, 50, not 50 per primary.
for attempt in range(150):
    size = rc.dbsize()
    if size == 50:
        break
    time.sleep(0.2)
print("primary", primaries[0].port, size, flush=True)
assert sys.stdin.readline().strip() == "stopped"
for i in range(50, 60):
    for attempt in range(40):
        try:
            assert rc.set(f"ck:{i}", f"v{i}")
            break
        except Exception as e:
            time.sleep(0.25)
    else:
        raise SystemExit(f"ck:{i} never written")
for i in range(60):
    assert rc.get(f"ck:{i}") == f"v{i}".encode(), i
now = rc.get_primaries()[0].port
assert now != primaries[0].port, now
print("cluster ok", now, flush=True)
"#;

#[test]
fn redis_py_cluster_client_survives_its_node_stopping() {
    use std::io::{BufRead, BufReader, Write};
    if !python_module_present("redis.cluster") {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let config = "[cluster]\ngossip_interval_ms = 100\nrequest_timeout_ms = 1000\n";
    let mut nodes = common::start_joined(root.path(), config, 3, |_| Vec::new());
    let ports: Vec<String> = nodes.iter().map(|n| n.resp.port().to_string()).collect();
    let mut py = Command::new("python3")
        .args(["-c", PY_CLUSTER])
        .args(&ports)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(py.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let mut words = first.split_whitespace().skip(1);
    let primary: u16 = words
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            let _ = py.kill();
            panic!("python said {first:?}")
        });
    let cluster_dbsize: u64 = words.next().and_then(|d| d.parse().ok()).expect("dbsize");
    let at = nodes
        .iter()
        .position(|n| n.resp.port() == primary)
        .expect("the primary is one of ours");
    let mut con = nodes[at].redis();
    let plain: u64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert_eq!(
        (cluster_dbsize, plain),
        (50, 50),
        "DBSIZE through the cluster client is not multiplied"
    );
    drop(con);
    let stopped = nodes.remove(at).terminate();
    assert!(stopped.success());
    let mut stdin = py.stdin.take().expect("stdin");
    writeln!(stdin, "stopped").expect("tell python");
    drop(stdin);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = py.wait().expect("python exits");
    assert!(
        status.success() && rest.iter().any(|l| l.starts_with("cluster ok")),
        "redis-py cluster client: {rest:?}"
    );
}
