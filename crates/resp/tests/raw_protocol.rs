//! The protocol byte by byte: inline commands, pipelining, RESP3, and bad
//! input. Every bad request gets its error (and, where the stream cannot be
//! resynchronised, a closed connection) while a well-behaved client on
//! another connection keeps working.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{RawClient, TestServer, VALUE_BYTES_MAX, bulk, error, error_text, simple};
use ringkv_resp::frame::encode_request;
use ringkv_resp::{Frame, RespConfig};

/// Asserts that a client on another connection is served normally.
async fn assert_healthy(bystander: &mut RawClient, key: &str) {
    assert_eq!(
        bystander.cmd(&[b"SET", key.as_bytes(), b"ok"]).await,
        Frame::ok()
    );
    assert_eq!(bystander.cmd(&[b"GET", key.as_bytes()]).await, bulk("ok"));
}

/// Sends `input` on a fresh connection; expects exactly `want` and then a
/// closed connection.
async fn expect_protocol_error(server: &TestServer, input: &[u8], want: &str) {
    let mut bad = server.raw().await;
    bad.send(input).await;
    let frames = bad.read_until_closed().await;
    assert_eq!(
        frames,
        vec![error(want)],
        "input {:?}",
        String::from_utf8_lossy(&input[..input.len().min(64)])
    );
}

#[tokio::test]
async fn inline_commands_as_telnet_sends_them() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    c.send(b"PING\r\n").await;
    assert_eq!(c.read().await, simple("PONG"));
    c.send(b"set greeting \"hello world\"\r\n").await;
    assert_eq!(c.read().await, Frame::ok());
    // Bare LF, extra spaces, lower case.
    c.send(b"  get   greeting\n").await;
    assert_eq!(c.read().await, bulk("hello world"));
    // Blank lines are ignored; the next command answers.
    c.send(b"\r\n\r\nECHO 'it\\'s'\r\n").await;
    assert_eq!(c.read().await, bulk("it's"));
    c.send(b"ECHO \"unbalanced\r\n").await;
    assert_eq!(
        c.read_until_closed().await,
        vec![error("ERR Protocol error: unbalanced quotes in request")]
    );
}

#[tokio::test]
async fn exact_error_wording() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    c.send(b"*2\r\n$3\r\nfoo\r\n$1\r\na\r\n").await;
    // The trailing space after 'a' is part of Redis' wording.
    let want: &[u8] = b"-ERR unknown command 'foo', with args beginning with: 'a' \r\n";
    let (raw, _) = c.read_raw().await;
    assert_eq!(&raw[..], want);
}

#[tokio::test]
async fn a_hundred_pipelined_commands_in_one_write() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    let mut batch = BytesMut::new();
    for i in 0..50 {
        let key = format!("k{i}");
        let value = format!("v{i}");
        encode_request(&[b"SET", key.as_bytes(), value.as_bytes()], &mut batch);
        encode_request(&[b"GET", key.as_bytes()], &mut batch);
    }
    c.send(&batch).await;
    for i in 0..50 {
        assert_eq!(c.read().await, Frame::ok(), "SET {i}");
        assert_eq!(c.read().await, bulk(&format!("v{i}")), "GET {i}");
    }
    let stats = server.stats.snapshot();
    assert!(stats.total_commands_processed >= 100, "{stats:?}");
    // Inline and multibulk mixed in one write, with an error in the middle
    // that does not stop the pipeline.
    c.send(b"PING\r\n*1\r\n$4\r\nNOPE\r\nECHO x\r\n").await;
    assert_eq!(c.read().await, simple("PONG"));
    assert_eq!(
        c.read().await,
        error("ERR unknown command 'NOPE', with args beginning with: ")
    );
    assert_eq!(c.read().await, bulk("x"));
}

#[tokio::test]
async fn a_pipelined_batch_flushes_buffered_writes_once_before_its_replies() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    let mut batch = BytesMut::new();
    for i in 0..16 {
        let key = format!("p{i}");
        encode_request(&[b"SET", key.as_bytes(), b"v"], &mut batch);
    }
    encode_request(&[&b"PING"[..]], &mut batch);
    encode_request(&[&b"get"[..], b"p3"], &mut batch);
    encode_request(&[&b"MGET"[..], b"p4", b"p5"], &mut batch);
    encode_request(&[&b"MSET"[..], b"p6", b"w", b"p7", b"w"], &mut batch);
    let before = server.kv.flushes();
    c.send(&batch).await;
    for i in 0..16 {
        assert_eq!(c.read().await, Frame::ok(), "SET {i}");
    }
    assert_eq!(c.read().await, simple("PONG"));
    assert_eq!(c.read().await, bulk("v"));
    assert_eq!(c.read().await, Frame::Array(vec![bulk("v"), bulk("v")]));
    assert_eq!(c.read().await, Frame::ok());
    // The keys were handed over together before the batch ran (PING has
    // none), in order: all at once when the write arrived in one read.
    let prefetched = server.kv.prefetched();
    let mut want: Vec<Bytes> = (0..16).map(|i| Bytes::from(format!("p{i}"))).collect();
    for key in ["p3", "p4", "p5", "p6", "p7"] {
        want.push(Bytes::from_static(key.as_bytes()));
    }
    if server.kv.flushes() - before == 1 {
        assert_eq!(prefetched, vec![want]);
    }
    // One write of the 16 requests arrives in one read, almost always; a
    // split read makes it two batches.
    let flushes = server.kv.flushes() - before;
    assert!(
        (1..=2).contains(&flushes),
        "{flushes} flushes for one batch"
    );
}

#[tokio::test]
async fn when_buffered_writes_cannot_be_flushed_no_reply_is_sent() {
    let server = TestServer::start().await;
    let mut bystander = server.raw().await;
    assert_healthy(&mut bystander, "before").await;
    server.kv.set_fail_flush(true);
    let mut c = server.raw().await;
    c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n").await;
    // Not acknowledged: the connection closes without a reply.
    assert_eq!(c.read_until_closed().await, Vec::<Frame>::new());
    server.kv.set_fail_flush(false);
    assert_healthy(&mut bystander, "after").await;
}

#[tokio::test]
async fn requests_split_across_writes() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    let mut req = BytesMut::new();
    let value = vec![b'z'; 40_000];
    encode_request(&[&b"SET"[..], b"big", &value], &mut req);
    for piece in req.chunks(7_001) {
        c.send(piece).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(c.read().await, Frame::ok());
    assert_eq!(
        c.cmd(&[b"GET", b"big"]).await,
        Frame::Bulk(Bytes::from(value))
    );
    // Byte by byte.
    for byte in b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n" {
        c.send(&[*byte]).await;
    }
    assert_eq!(c.read().await, bulk("hi"));
    // Binary values survive.
    let binary = b"\x00\r\n\xff$-1\r\n";
    assert_eq!(c.cmd(&[b"SET", b"bin", binary]).await, Frame::ok());
    assert_eq!(
        c.cmd(&[b"GET", b"bin"]).await,
        Frame::Bulk(Bytes::from_static(binary))
    );
}

#[tokio::test]
async fn hello_switches_protocol() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    // RESP2 null until HELLO 3.
    assert_eq!(c.cmd(&[b"GET", b"nope"]).await, Frame::Null);
    c.send(b"HELLO 3\r\n").await;
    let (raw, hello) = c.read_raw().await;
    assert_eq!(raw[0], b'%', "HELLO 3 answers a RESP3 map");
    let Frame::Map(pairs) = hello else {
        panic!("{hello:?}")
    };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == bulk(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("server"), Some(bulk("ringkv")));
    assert_eq!(field("proto"), Some(Frame::Integer(3)));
    assert_eq!(field("mode"), Some(bulk("cluster")));
    assert_eq!(field("modules"), Some(Frame::Array(vec![])));

    // RESP3 nulls and maps on the wire.
    c.send(b"GET nope\r\n").await;
    let (raw, null) = c.read_raw().await;
    assert_eq!((&raw[..], null), (&b"_\r\n"[..], Frame::Null));
    c.send(b"RINGKV.CONSISTENCY\r\n").await;
    assert!(matches!(c.read().await, Frame::Map(_)));
    // Unsupported version: NOPROTO, and the protocol stays RESP3.
    assert_eq!(
        c.cmd(&[b"HELLO", b"4"]).await,
        error("NOPROTO unsupported protocol version")
    );
    assert_eq!(
        c.cmd(&[b"HELLO", b"x"]).await,
        error("ERR Protocol version is not an integer or out of range")
    );
    // HELLO with SETNAME; back to RESP2 where maps are flat arrays.
    let reply = c.cmd(&[b"HELLO", b"2", b"SETNAME", b"me"]).await;
    let Frame::Array(flat) = reply else {
        panic!("HELLO 2 answers a flat array: {reply:?}")
    };
    assert_eq!(flat[0], bulk("server"));
    assert_eq!(c.cmd(&[b"CLIENT", b"GETNAME"]).await, bulk("me"));
    // RESET goes back to RESP2 and clears the name.
    c.cmd(&[b"HELLO", b"3"]).await;
    assert_eq!(c.cmd(&[b"RESET"]).await, simple("RESET"));
    assert_eq!(c.cmd(&[b"CLIENT", b"GETNAME"]).await, Frame::Null);
    c.send(b"GET nope\r\n").await;
    let (raw, _) = c.read_raw().await;
    assert_eq!(&raw[..], b"$-1\r\n");
}

#[tokio::test]
async fn quit_closes_after_its_reply() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    c.send(b"QUIT\r\nPING\r\n").await;
    assert_eq!(c.read_until_closed().await, vec![Frame::ok()]);
}

#[tokio::test]
async fn malformed_frames_get_errors_and_are_closed() {
    let server = TestServer::start_with(RespConfig {
        args_max: 16,
        bulk_bytes_max: 4096,
        input_buffer_bytes_max: 32 * 1024,
        inline_bytes_max: 1024,
        ..RespConfig::default()
    })
    .await;
    let mut bystander = server.raw().await;
    assert_healthy(&mut bystander, "before").await;

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"*1\r\n:1\r\n".to_vec(),
            "ERR Protocol error: expected '$', got ':'",
        ),
        (
            b"*2\r\n*1\r\n$1\r\na\r\n".to_vec(),
            "ERR Protocol error: expected '$', got '*'",
        ),
        (
            b"*x\r\n".to_vec(),
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*-5\r\n".to_vec(),
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*1\r\n$-5\r\n".to_vec(),
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$1x\r\n".to_vec(),
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$3\r\nabcdef\r\n".to_vec(),
            "ERR Protocol error: expected CRLF after bulk data",
        ),
        (
            b"*99999999999\r\n".to_vec(),
            "ERR Protocol error: too many arguments: 99999999999, the limit is 16",
        ),
        (
            b"*1\r\n$9223372036854775807\r\n".to_vec(),
            "ERR Protocol error: bulk length 9223372036854775807 exceeds the limit of 4096 bytes",
        ),
        (
            b"*1\r\n$99999999999999999999999\r\n".to_vec(),
            "ERR Protocol error: invalid bulk length",
        ),
        (
            [b"*1\r\n$".as_slice(), &[b'9'; 100]].concat(),
            "ERR Protocol error: too big bulk count string",
        ),
    ];
    for (input, want) in &cases {
        expect_protocol_error(&server, input, want).await;
    }

    // Too many arguments, sent in full.
    let args: Vec<&[u8]> = std::iter::repeat_n(&b"x"[..], 17).collect();
    let mut req = BytesMut::new();
    encode_request(&args, &mut req);
    expect_protocol_error(
        &server,
        &req,
        "ERR Protocol error: too many arguments: 17, the limit is 16",
    )
    .await;

    // An oversized bulk, sent in full: refused from its header.
    let mut req = BytesMut::new();
    encode_request(&[&b"SET"[..], b"k", &vec![b'v'; 5000]], &mut req);
    expect_protocol_error(
        &server,
        &req,
        "ERR Protocol error: bulk length 5000 exceeds the limit of 4096 bytes",
    )
    .await;

    // An inline line with no CRLF past the limit.
    expect_protocol_error(
        &server,
        &vec![b'a'; 5000],
        "ERR Protocol error: too big inline request",
    )
    .await;

    // A request whose elements add up past the input buffer.
    let mut req = BytesMut::new();
    let chunk = vec![b'v'; 4000];
    let many: Vec<&[u8]> = std::iter::repeat_n(&chunk[..], 16).collect();
    encode_request(&many, &mut req);
    expect_protocol_error(
        &server,
        &req,
        "ERR Protocol error: request exceeds the limit of 32768 bytes",
    )
    .await;

    assert_healthy(&mut bystander, "after").await;
    assert_eq!(server.stats.snapshot().connected_clients, 1);
}

#[tokio::test]
async fn oversized_values_within_the_bulk_limit_keep_the_connection() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    let value = vec![b'v'; VALUE_BYTES_MAX + 10];
    let reply = c.cmd(&[b"SET", b"k", &value]).await;
    assert_eq!(
        error_text(&reply),
        format!(
            "ERR value is {} bytes, the limit is {VALUE_BYTES_MAX}",
            VALUE_BYTES_MAX + 10
        )
    );
    // Same connection, next request.
    assert_eq!(c.cmd(&[b"SET", b"k", b"small"]).await, Frame::ok());
    assert_eq!(c.cmd(&[b"GET", b"k"]).await, bulk("small"));
}

fn users() -> std::sync::Arc<ringkv_auth::Users> {
    let hash = |p: &[u8]| ringkv_auth::hash_password(p).expect("hash");
    let text = format!(
        "[[user]]\nname = \"default\"\npassword_hash = \"{}\"\nroles = [\"read\", \"write\", \"admin\"]\n\
         [[user]]\nname = \"app\"\npassword_hash = \"{}\"\nroles = [\"read\", \"write\"]\nkeys = [\"app:*\"]\n\
         [[user]]\nname = \"reader\"\npassword_hash = \"{}\"\nroles = [\"read\"]\n",
        hash(b"s3cret"),
        hash(b"app-pw"),
        hash(b"read-pw")
    );
    std::sync::Arc::new(ringkv_auth::Users::from_toml(&text).expect("users"))
}

#[tokio::test]
async fn authentication_when_users_are_set() {
    let server = TestServer::start_with(RespConfig {
        users: Some(users()),
        ..RespConfig::default()
    })
    .await;
    let mut c = server.raw().await;
    assert_eq!(
        c.cmd(&[b"GET", b"k"]).await,
        error("NOAUTH Authentication required.")
    );
    assert_eq!(
        c.cmd(&[b"HELLO", b"3"]).await,
        error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO AUTH <user> <pass> option can be used to authenticate the client and select \
             the RESP protocol version at the same time"
        )
    );
    assert_eq!(
        c.cmd(&[b"AUTH", b"wrong"]).await,
        error("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(
        c.cmd(&[b"AUTH", b"nobody", b"s3cret"]).await,
        error("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(c.cmd(&[b"AUTH", b"s3cret"]).await, Frame::ok());
    assert_eq!(c.cmd(&[b"ACL", b"WHOAMI"]).await, bulk("default"));
    assert_eq!(c.cmd(&[b"SET", b"k", b"v"]).await, Frame::ok());
    let Frame::Array(rules) = c.cmd(&[b"ACL", b"LIST"]).await else {
        panic!("ACL LIST")
    };
    assert_eq!(rules.len(), 3);
    assert_eq!(
        rules[0],
        bulk("user app on ~app:* resetchannels -@all +@read +@write")
    );
    // RESET forgets the authentication.
    c.cmd(&[b"RESET"]).await;
    assert_eq!(
        c.cmd(&[b"GET", b"k"]).await,
        error("NOAUTH Authentication required.")
    );
    // HELLO can authenticate and switch protocol at once.
    let reply = c
        .cmd(&[b"HELLO", b"3", b"AUTH", b"default", b"s3cret"])
        .await;
    assert!(matches!(reply, Frame::Map(_)), "{reply:?}");
    assert_eq!(c.cmd(&[b"GET", b"k"]).await, bulk("v"));

    // A user limited to keys under app: and to reads and writes.
    let mut app = server.raw().await;
    assert_eq!(app.cmd(&[b"AUTH", b"app", b"app-pw"]).await, Frame::ok());
    let no_key =
        error("NOPERM this user has no permissions to access one of the keys used as arguments");
    assert_eq!(app.cmd(&[b"SET", b"other", b"1"]).await, no_key);
    assert_eq!(app.cmd(&[b"SET", b"app:1", b"1"]).await, Frame::ok());
    assert_eq!(app.cmd(&[b"MGET", b"app:1", b"other"]).await, no_key);
    assert_eq!(
        app.cmd(&[b"MSET", b"app:2", b"x", b"k", b"y"]).await,
        no_key
    );
    assert_eq!(
        app.cmd(&[b"CONFIG", b"GET", b"maxmemory"]).await,
        error("NOPERM this user has no permissions to run the 'config|get' command")
    );
    assert_eq!(
        app.cmd(&[b"ACL", b"LIST"]).await,
        error("NOPERM this user has no permissions to run the 'acl|list' command")
    );
    assert_eq!(app.cmd(&[b"ACL", b"WHOAMI"]).await, bulk("app"));
    // Emptying the cluster needs admin, though Redis flags it `write` only.
    assert_eq!(
        app.cmd(&[b"FLUSHALL"]).await,
        error("NOPERM this user has no permissions to run the 'flushall' command")
    );
    assert_eq!(
        app.cmd(&[b"FLUSHDB", b"ASYNC"]).await,
        error("NOPERM this user has no permissions to run the 'flushdb' command")
    );
    assert_eq!(
        app.cmd(&[b"GET", b"app:1"]).await,
        bulk("1"),
        "nothing emptied"
    );
    // A read-only user.
    let mut reader = server.raw().await;
    assert_eq!(
        reader.cmd(&[b"AUTH", b"reader", b"read-pw"]).await,
        Frame::ok()
    );
    assert_eq!(reader.cmd(&[b"GET", b"app:1"]).await, bulk("1"));
    assert_eq!(
        reader.cmd(&[b"SET", b"k", b"w"]).await,
        error("NOPERM this user has no permissions to run the 'set' command")
    );
    assert_eq!(
        reader.cmd(&[b"DEL", b"k"]).await,
        error("NOPERM this user has no permissions to run the 'del' command")
    );

    // redis-rs with a user and password in the URL.
    let url = format!("redis://app:app-pw@{}/", server.addr);
    let mut conn = redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("authenticated connection");
    let v: String = redis::cmd("GET")
        .arg("app:1")
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(v, "1");

    // Without users, AUTH says so.
    let open = TestServer::start().await;
    let mut c = open.raw().await;
    let reply = c.cmd(&[b"AUTH", b"x"]).await;
    assert!(
        error_text(&reply).starts_with("ERR AUTH <password> called without any password"),
        "{reply:?}"
    );
    assert_eq!(
        c.cmd(&[b"ACL", b"LIST"]).await,
        Frame::Array(vec![bulk("user default on nopass ~* &* +@all")])
    );
}

#[tokio::test]
async fn before_authentication_requests_are_small_and_time_is_short() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(RespConfig {
        users: Some(users()),
        auth_timeout_ms: 500,
        ..RespConfig::default()
    })
    .await;
    let read_all = |mut s: tokio::net::TcpStream| async move {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    // Eleven arguments: refused and closed, as Redis does.
    let mut s = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut req = b"*11\r\n".to_vec();
    for _ in 0..11 {
        req.extend_from_slice(b"$1\r\na\r\n");
    }
    s.write_all(&req).await.expect("write");
    assert_eq!(
        read_all(s).await,
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    // A bulk over 16 KiB.
    let mut s = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    s.write_all(b"*2\r\n$3\r\nGET\r\n$20000\r\n")
        .await
        .expect("write");
    assert_eq!(
        read_all(s).await,
        "-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    // After AUTH the usual limits apply.
    let mut c = server.raw().await;
    assert_eq!(c.cmd(&[b"AUTH", b"s3cret"]).await, Frame::ok());
    let mut del: Vec<&[u8]> = vec![b"DEL"];
    del.extend(std::iter::repeat_n(&b"k"[..], 20));
    assert_eq!(c.cmd(&del).await, Frame::Integer(0));
    let big = vec![b'v'; 20_000];
    assert_eq!(c.cmd(&[b"SET", b"big", &big]).await, Frame::ok());
    // In one write: the requests behind AUTH are parsed under the limits
    // AUTH leaves, not those of before it; and after RESET (back to not
    // authenticated) under the small ones again.
    let mut c = server.raw().await;
    let mut pipeline = BytesMut::new();
    encode_request(&[&b"AUTH"[..], b"s3cret"], &mut pipeline);
    encode_request(&[&b"SET"[..], b"big", &big], &mut pipeline);
    encode_request(&[&b"GET"[..], b"big"], &mut pipeline);
    c.send(&pipeline).await;
    assert_eq!(c.read().await, Frame::ok());
    assert_eq!(c.read().await, Frame::ok());
    assert_eq!(c.read().await, Frame::Bulk(Bytes::from(big.clone())));
    let mut pipeline = BytesMut::new();
    encode_request(&[&b"RESET"[..]], &mut pipeline);
    encode_request(&[&b"GET"[..], &big], &mut pipeline);
    c.send(&pipeline).await;
    assert_eq!(
        c.read_until_closed().await,
        vec![
            simple("RESET"),
            error("ERR Protocol error: unauthenticated bulk length")
        ]
    );
    // A connection that never authenticates is closed at the deadline.
    let started = std::time::Instant::now();
    let s = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    assert_eq!(read_all(s).await, "");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "not closed in time"
    );
}

#[tokio::test]
async fn mget_replies_are_bounded() {
    let server = TestServer::start_with(RespConfig {
        reply_bytes_max: 1000,
        ..RespConfig::default()
    })
    .await;
    let mut c = server.raw().await;
    let value = vec![b'v'; 600];
    for key in [&b"a"[..], b"b", b"c"] {
        assert_eq!(c.cmd(&[b"SET", key, &value]).await, Frame::ok());
    }
    let one = c.cmd(&[b"MGET", b"a", b"missing"]).await;
    assert_eq!(
        one,
        Frame::Array(vec![Frame::Bulk(Bytes::from(value.clone())), Frame::Null])
    );
    assert_eq!(
        c.cmd(&[b"MGET", b"a", b"b", b"c"]).await,
        error("ERR MGET reply exceeds 1000 bytes (reply_bytes_max); read fewer keys at once")
    );
    // The connection carries on.
    assert_eq!(c.cmd(&[b"PING"]).await, simple("PONG"));
}

#[tokio::test]
async fn a_refused_multi_runs_none_of_its_commands() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    let mut batch = BytesMut::new();
    encode_request(&[&b"MULTI"[..]], &mut batch);
    encode_request(&[&b"SET"[..], b"t", b"1"], &mut batch);
    encode_request(&[&b"EXEC"[..]], &mut batch);
    encode_request(&[&b"GET"[..], b"t"], &mut batch);
    c.send(&batch).await;
    let multi = error_text(&c.read().await);
    assert!(
        multi.starts_with("ERR MULTI is not supported: ringkv has no transactions"),
        "{multi}"
    );
    assert!(error_text(&c.read().await).starts_with("ERR command not run"));
    assert_eq!(
        c.read().await,
        error("EXECABORT Transaction discarded because ringkv does not support MULTI.")
    );
    // Nothing of the transaction ran; after EXEC the connection is normal.
    assert_eq!(c.read().await, Frame::Null);
    c.cmd(&[b"MULTI"]).await;
    assert_eq!(c.cmd(&[b"DISCARD"]).await, Frame::ok());
    assert_eq!(c.cmd(&[b"SET", b"t", b"2"]).await, Frame::ok());
    c.cmd(&[b"MULTI"]).await;
    assert_eq!(c.cmd(&[b"RESET"]).await, simple("RESET"));
    assert_eq!(c.cmd(&[b"GET", b"t"]).await, bulk("2"));
}
