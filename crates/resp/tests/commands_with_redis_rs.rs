//! Every command through a real client (redis-rs, tokio), in RESP2 and
//! RESP3, against a server over an in-memory `Kv`.

// A failed query fails the test; `unwrap` keeps the many one-line assertions short.
#![allow(clippy::unwrap_used)]

mod common;

use common::{KEY_BYTES_MAX, TestServer, VALUE_BYTES_MAX};
use redis::{AsyncCommands, RedisResult, Value, cmd};

type Conn = redis::aio::MultiplexedConnection;

async fn query<T: redis::FromRedisValue>(conn: &mut Conn, args: &[&str]) -> RedisResult<T> {
    let mut c = cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn).await
}

fn err_text(e: redis::RedisError) -> String {
    // redis-rs splits the code from the message; join them as on the wire.
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}

#[tokio::test]
async fn connection_commands() {
    let server = TestServer::start().await;
    let mut c = server.redis().await;
    assert_eq!(query::<String>(&mut c, &["PING"]).await.unwrap(), "PONG");
    assert_eq!(
        query::<String>(&mut c, &["PING", "hi"]).await.unwrap(),
        "hi"
    );
    assert_eq!(
        query::<String>(&mut c, &["ECHO", "a b"]).await.unwrap(),
        "a b"
    );
    assert_eq!(
        query::<String>(&mut c, &["SELECT", "0"]).await.unwrap(),
        "OK"
    );
    let e = query::<String>(&mut c, &["SELECT", "1"]).await.unwrap_err();
    assert_eq!(err_text(e), "ERR DB index is out of range");
    let e = query::<String>(&mut c, &["ECHO"]).await.unwrap_err();
    assert_eq!(
        err_text(e),
        "ERR wrong number of arguments for 'echo' command"
    );
    // redis-rs sent CLIENT SETINFO on connect; the server kept it.
    let info: String = query(&mut c, &["CLIENT", "INFO"]).await.unwrap();
    assert!(info.contains("lib-name=redis-rs"), "{info}");
    assert!(info.contains("resp=2"), "{info}");
}

#[tokio::test]
async fn get_set_and_options() {
    let server = TestServer::start().await;
    let mut c = server.redis().await;
    let _: () = c.set("k", "v1").await.unwrap();
    assert_eq!(c.get::<_, String>("k").await.unwrap(), "v1");
    assert_eq!(c.get::<_, Option<String>>("missing").await.unwrap(), None);

    // NX on an existing key: null, value unchanged.
    let r: Value = query(&mut c, &["SET", "k", "v2", "NX"]).await.unwrap();
    assert_eq!(r, Value::Nil);
    assert_eq!(c.get::<_, String>("k").await.unwrap(), "v1");
    // XX on an existing key writes; on a missing one it does not.
    let r: String = query(&mut c, &["SET", "k", "v2", "XX"]).await.unwrap();
    assert_eq!(r, "OK");
    let r: Value = query(&mut c, &["SET", "nokey", "v", "XX"]).await.unwrap();
    assert_eq!(r, Value::Nil);
    assert_eq!(c.exists::<_, i64>("nokey").await.unwrap(), 0);
    // GET returns what was replaced.
    let r: Option<String> = query(&mut c, &["SET", "k", "v3", "GET"]).await.unwrap();
    assert_eq!(r.as_deref(), Some("v2"));
    let r: Option<String> = query(&mut c, &["SET", "fresh", "x", "NX", "GET"])
        .await
        .unwrap();
    assert_eq!(r, None);
    assert_eq!(c.get::<_, String>("fresh").await.unwrap(), "x");

    // Expiry options.
    let _: String = query(&mut c, &["SET", "e", "v", "EX", "100"])
        .await
        .unwrap();
    assert_eq!(c.ttl::<_, i64>("e").await.unwrap(), 100);
    let _: String = query(&mut c, &["SET", "e", "v", "PX", "1500"])
        .await
        .unwrap();
    assert_eq!(c.pttl::<_, i64>("e").await.unwrap(), 1500);
    assert_eq!(c.ttl::<_, i64>("e").await.unwrap(), 2, "1.5 s rounds to 2");
    let at = (common::START_MS / 1000 + 50).to_string();
    let _: String = query(&mut c, &["SET", "e", "v", "EXAT", &at])
        .await
        .unwrap();
    assert_eq!(c.ttl::<_, i64>("e").await.unwrap(), 50);
    let at_ms = (common::START_MS + 7000).to_string();
    let _: String = query(&mut c, &["SET", "e", "v2", "PXAT", &at_ms])
        .await
        .unwrap();
    let _: String = query(&mut c, &["SET", "e", "v3", "KEEPTTL"]).await.unwrap();
    assert_eq!(c.pttl::<_, i64>("e").await.unwrap(), 7000);
    assert_eq!(c.get::<_, String>("e").await.unwrap(), "v3");
    let _: () = c.set("e", "v4").await.unwrap();
    assert_eq!(
        c.ttl::<_, i64>("e").await.unwrap(),
        -1,
        "plain SET clears the TTL"
    );

    // Grammar errors.
    for (args, want) in [
        (&["SET", "k", "v", "NX", "XX"][..], "ERR syntax error"),
        (
            &["SET", "k", "v", "EX", "0"],
            "ERR invalid expire time in 'set' command",
        ),
        (
            &["SET", "k", "v", "EX", "ten"],
            "ERR value is not an integer or out of range",
        ),
        (
            &["SET", "k"],
            "ERR wrong number of arguments for 'set' command",
        ),
    ] {
        let e = query::<Value>(&mut c, args).await.unwrap_err();
        assert_eq!(err_text(e), want, "{args:?}");
    }
}

#[tokio::test]
async fn older_set_forms_and_strlen() {
    let server = TestServer::start().await;
    let mut c = server.redis().await;
    assert_eq!(query::<i64>(&mut c, &["SETNX", "n", "1"]).await.unwrap(), 1);
    assert_eq!(query::<i64>(&mut c, &["SETNX", "n", "2"]).await.unwrap(), 0);
    assert_eq!(c.get::<_, String>("n").await.unwrap(), "1");
    let _: String = query(&mut c, &["SETEX", "s", "10", "v"]).await.unwrap();
    assert_eq!(c.ttl::<_, i64>("s").await.unwrap(), 10);
    let _: String = query(&mut c, &["PSETEX", "p", "2500", "v"]).await.unwrap();
    assert_eq!(c.pttl::<_, i64>("p").await.unwrap(), 2500);
    let e = query::<String>(&mut c, &["SETEX", "s", "-1", "v"])
        .await
        .unwrap_err();
    assert_eq!(err_text(e), "ERR invalid expire time in 'setex' command");
    let old: Option<String> = query(&mut c, &["GETSET", "n", "3"]).await.unwrap();
    assert_eq!(old.as_deref(), Some("1"));
    assert_eq!(query::<i64>(&mut c, &["STRLEN", "n"]).await.unwrap(), 1);
    assert_eq!(query::<i64>(&mut c, &["STRLEN", "none"]).await.unwrap(), 0);
    let old: Option<String> = query(&mut c, &["GETDEL", "n"]).await.unwrap();
    assert_eq!(old.as_deref(), Some("3"));
    let old: Option<String> = query(&mut c, &["GETDEL", "n"]).await.unwrap();
    assert_eq!(old, None);
    assert_eq!(
        query::<String>(&mut c, &["TYPE", "s"]).await.unwrap(),
        "string"
    );
    assert_eq!(
        query::<String>(&mut c, &["TYPE", "n"]).await.unwrap(),
        "none"
    );
}

#[tokio::test]
async fn multi_key_commands() {
    let server = TestServer::start().await;
    let mut c = server.redis().await;
    let _: String = query(&mut c, &["MSET", "a", "1", "b", "2", "c", "3"])
        .await
        .unwrap();
    let got: Vec<Option<String>> = query(&mut c, &["MGET", "a", "x", "c", "b"]).await.unwrap();
    assert_eq!(
        got,
        vec![Some("1".into()), None, Some("3".into()), Some("2".into())]
    );
    assert_eq!(
        query::<i64>(&mut c, &["EXISTS", "a", "a", "x"])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        query::<i64>(&mut c, &["DEL", "a", "x", "b"]).await.unwrap(),
        2
    );
    assert_eq!(
        query::<i64>(&mut c, &["UNLINK", "c", "a"]).await.unwrap(),
        1
    );
    assert_eq!(
        query::<i64>(&mut c, &["EXISTS", "a", "b", "c"])
            .await
            .unwrap(),
        0
    );
    let e = query::<String>(&mut c, &["MSET", "a", "1", "b"])
        .await
        .unwrap_err();
    assert_eq!(
        err_text(e),
        "ERR wrong number of arguments for 'mset' command"
    );

    // Many keys: more than the fan-out bound, in order.
    let keys: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();
    let mut mset = vec!["MSET".to_string()];
    for k in &keys {
        mset.push(k.clone());
        mset.push(format!("v{k}"));
    }
    let refs: Vec<&str> = mset.iter().map(String::as_str).collect();
    let _: String = query(&mut c, &refs).await.unwrap();
    let got: Vec<String> = c.mget(&keys).await.unwrap();
    assert_eq!(
        got,
        keys.iter().map(|k| format!("v{k}")).collect::<Vec<_>>()
    );
    assert_eq!(query::<i64>(&mut c, &["DBSIZE"]).await.unwrap(), 300);
}

#[tokio::test]
async fn ttl_family_answers_as_redis() {
    let server = TestServer::start().await;
    let mut c = server.redis().await;
    assert_eq!(c.ttl::<_, i64>("none").await.unwrap(), -2);
    assert_eq!(c.pttl::<_, i64>("none").await.unwrap(), -2);
    let _: () = c.set("k", "v").await.unwrap();
    assert_eq!(c.ttl::<_, i64>("k").await.unwrap(), -1);
    assert_eq!(
        query::<i64>(&mut c, &["EXPIRETIME", "k"]).await.unwrap(),
        -1
    );
    assert_eq!(
        query::<i64>(&mut c, &["EXPIRE", "k", "100"]).await.unwrap(),
        1
    );
    assert_eq!(c.ttl::<_, i64>("k").await.unwrap(), 100);
    assert_eq!(
        query::<i64>(&mut c, &["EXPIRETIME", "k"]).await.unwrap(),
        (common::START_MS / 1000 + 100) as i64
    );
    assert_eq!(
        query::<i64>(&mut c, &["PEXPIRETIME", "k"]).await.unwrap(),
        (common::START_MS + 100_000) as i64
    );
    assert_eq!(
        query::<i64>(&mut c, &["PEXPIRE", "k", "5000"])
            .await
            .unwrap(),
        1
    );
    assert_eq!(c.pttl::<_, i64>("k").await.unwrap(), 5000);
    // Conditions.
    assert_eq!(
        query::<i64>(&mut c, &["EXPIRE", "k", "100", "NX"])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        query::<i64>(&mut c, &["EXPIRE", "k", "1", "GT"])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        query::<i64>(&mut c, &["EXPIRE", "k", "100", "GT"])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        query::<i64>(&mut c, &["EXPIRE", "k", "200", "LT"])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        query::<i64>(&mut c, &["EXPIRE", "k", "50", "XX", "LT"])
            .await
            .unwrap(),
        1
    );
    assert_eq!(c.ttl::<_, i64>("k").await.unwrap(), 50);
    assert_eq!(
        query::<i64>(&mut c, &["EXPIRE", "none", "50"])
            .await
            .unwrap(),
        0
    );
    let e = query::<i64>(&mut c, &["EXPIRE", "k", "5", "NX", "GT"])
        .await
        .unwrap_err();
    assert_eq!(
        err_text(e),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    // PERSIST.
    assert_eq!(query::<i64>(&mut c, &["PERSIST", "k"]).await.unwrap(), 1);
    assert_eq!(query::<i64>(&mut c, &["PERSIST", "k"]).await.unwrap(), 0);
    assert_eq!(c.ttl::<_, i64>("k").await.unwrap(), -1);
    assert_eq!(query::<i64>(&mut c, &["PERSIST", "none"]).await.unwrap(), 0);
    // Absolute times.
    let at = (common::START_MS / 1000 + 30).to_string();
    assert_eq!(
        query::<i64>(&mut c, &["EXPIREAT", "k", &at]).await.unwrap(),
        1
    );
    assert_eq!(c.ttl::<_, i64>("k").await.unwrap(), 30);
    let at_ms = (common::START_MS + 1234).to_string();
    assert_eq!(
        query::<i64>(&mut c, &["PEXPIREAT", "k", &at_ms])
            .await
            .unwrap(),
        1
    );
    assert_eq!(c.pttl::<_, i64>("k").await.unwrap(), 1234);
    // Time passes: the key expires.
    server.kv.advance(1234);
    assert_eq!(c.ttl::<_, i64>("k").await.unwrap(), -2);
    assert_eq!(c.get::<_, Option<String>>("k").await.unwrap(), None);
    // An expiry in the past deletes.
    let _: () = c.set("gone", "v").await.unwrap();
    assert_eq!(
        query::<i64>(&mut c, &["EXPIRE", "gone", "-1"])
            .await
            .unwrap(),
        1
    );
    assert_eq!(c.exists::<_, i64>("gone").await.unwrap(), 0);
}

#[tokio::test]
async fn server_commands() {
    let server = TestServer::start().await;
    let mut c = server.redis().await;
    let _: () = c.set("k", "v").await.unwrap();
    assert_eq!(query::<i64>(&mut c, &["DBSIZE"]).await.unwrap(), 1);
    let info: String = query(&mut c, &["INFO"]).await.unwrap();
    for needle in [
        "# Server\r\n",
        "redis_version:7.2.0\r\n",
        "ringkv_version:0.1.0-test\r\n",
        "# Clients\r\n",
        "connected_clients:1\r\n",
        "# Stats\r\n",
        "total_connections_received:1\r\n",
        "# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n",
        "node_id:0000000000abcdef\r\n",
        "storage_memtable_bytes:42\r\n",
        &format!("tcp_port:{}\r\n", server.addr.port()),
    ] {
        assert!(info.contains(needle), "INFO lacks {needle:?}:\n{info}");
    }
    let clients: String = query(&mut c, &["INFO", "clients"]).await.unwrap();
    assert!(clients.starts_with("# Clients\r\n"), "{clients}");
    assert!(!clients.contains("# Server"), "{clients}");
    let stats: String = query(&mut c, &["INFO", "STATS"]).await.unwrap();
    let processed: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .expect("field")
        .parse()
        .expect("number");
    // CLIENT SETINFO x2, SET, DBSIZE, INFO, INFO: counted per batch, so
    // at least the batches before this one.
    assert!(processed >= 4, "{stats}");

    // CONFIG GET: a map, flattened in RESP2.
    let cfg: Vec<String> = query(&mut c, &["CONFIG", "GET", "maxclients"])
        .await
        .unwrap();
    assert_eq!(cfg, vec!["maxclients".to_string(), "10000".to_string()]);
    let cfg: Vec<String> = query(&mut c, &["CONFIG", "GET", "save", "appendonly"])
        .await
        .unwrap();
    assert_eq!(cfg.len(), 4);
    let cfg: Vec<String> = query(&mut c, &["CONFIG", "GET", "nothing-like-this"])
        .await
        .unwrap();
    assert!(cfg.is_empty());
    let e = query::<String>(&mut c, &["CONFIG", "SET", "maxclients", "1"])
        .await
        .unwrap_err();
    assert!(err_text(e).starts_with("ERR CONFIG SET is not supported"));
    let time: Vec<String> = query(&mut c, &["TIME"]).await.unwrap();
    assert_eq!(time[0], (common::START_MS / 1000).to_string());

    // COMMAND family.
    let count: i64 = query(&mut c, &["COMMAND", "COUNT"]).await.unwrap();
    let all: Vec<Value> = query(&mut c, &["COMMAND"]).await.unwrap();
    assert_eq!(all.len() as i64, count);
    assert!(count >= 35);
    let info: Vec<Value> = query(&mut c, &["COMMAND", "INFO", "get", "nope"])
        .await
        .unwrap();
    assert_eq!(info.len(), 2);
    assert_eq!(info[1], Value::Nil);
    let Value::Array(get) = &info[0] else {
        panic!("entry {:?}", info[0])
    };
    assert_eq!(get[0], Value::BulkString(b"get".to_vec()));
    assert_eq!(get[1], Value::Int(2));
    assert_eq!(get.len(), 10);
    let docs: Value = query(&mut c, &["COMMAND", "DOCS", "set"]).await.unwrap();
    let Value::Array(docs) = docs else {
        panic!("docs {docs:?}")
    };
    assert_eq!(docs[0], Value::BulkString(b"set".to_vec()));
    let list: Vec<String> = query(&mut c, &["COMMAND", "LIST"]).await.unwrap();
    assert!(list.contains(&"ringkv.getall".to_string()));
}

#[tokio::test]
async fn client_commands() {
    let server = TestServer::start().await;
    let mut c = server.redis().await;
    let id: i64 = query(&mut c, &["CLIENT", "ID"]).await.unwrap();
    assert!(id >= 1);
    assert_eq!(
        query::<Option<String>>(&mut c, &["CLIENT", "GETNAME"])
            .await
            .unwrap(),
        None
    );
    let _: String = query(&mut c, &["CLIENT", "SETNAME", "worker-1"])
        .await
        .unwrap();
    assert_eq!(
        query::<Option<String>>(&mut c, &["CLIENT", "GETNAME"])
            .await
            .unwrap()
            .as_deref(),
        Some("worker-1")
    );
    let e = query::<String>(&mut c, &["CLIENT", "SETNAME", "has space"])
        .await
        .unwrap_err();
    assert_eq!(
        err_text(e),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    let _: String = query(&mut c, &["CLIENT", "SETINFO", "LIB-VER", "9.9"])
        .await
        .unwrap();
    let e = query::<String>(&mut c, &["CLIENT", "SETINFO", "COLOR", "x"])
        .await
        .unwrap_err();
    assert_eq!(err_text(e), "ERR Unrecognized option 'COLOR'");
    let info: String = query(&mut c, &["CLIENT", "INFO"]).await.unwrap();
    assert!(info.starts_with(&format!("id={id} ")), "{info}");
    assert!(info.contains("name=worker-1 "), "{info}");
    assert!(info.contains("lib-ver=9.9 "), "{info}");
    let e = query::<String>(&mut c, &["CLIENT", "KILL", "x"])
        .await
        .unwrap_err();
    assert_eq!(
        err_text(e),
        "ERR unknown subcommand 'KILL'. Try CLIENT HELP."
    );
    let e = query::<String>(&mut c, &["CLIENT", "ID", "extra"])
        .await
        .unwrap_err();
    assert_eq!(
        err_text(e),
        "ERR wrong number of arguments for 'client|id' command"
    );
}

#[tokio::test]
async fn unknown_and_refused_commands() {
    let server = TestServer::start().await;
    let mut c = server.redis().await;
    let e = query::<String>(&mut c, &["FOO", "a", "b"])
        .await
        .unwrap_err();
    assert_eq!(
        err_text(e).trim_end(),
        "ERR unknown command 'FOO', with args beginning with: 'a' 'b'"
    );
    let e = query::<String>(&mut c, &["APPEND", "k", "v"])
        .await
        .unwrap_err();
    let text = err_text(e);
    assert!(
        text.starts_with("ERR APPEND is not supported: ringkv is leaderless and cannot do an atomic read-modify-write"),
        "{text}"
    );
    // A store without data types (this test's) says so.
    let e = query::<i64>(&mut c, &["INCR", "counter"])
        .await
        .unwrap_err();
    assert_eq!(err_text(e).trim_end(), "ERR data types are not served here");
    for name in ["APPEND", "LPUSH", "INCRBYFLOAT", "WATCH", "EVAL", "MSETNX"] {
        let e = query::<Value>(&mut c, &[name, "k", "v"]).await.unwrap_err();
        assert!(
            err_text(e).starts_with(&format!("ERR {name} is not supported: ")),
            "{name}"
        );
    }
    // The connection is still fine.
    let _: () = c.set("k", "v").await.unwrap();
}

#[tokio::test]
async fn flushall_and_flushdb_empty_the_store_with_redis_syntax() {
    let server = TestServer::start().await;
    let mut c = server.redis().await;
    for args in [
        &["FLUSHALL", "k", "v"][..],
        &["FLUSHALL", "now"],
        &["FLUSHDB", "ASYNC", "SYNC"],
    ] {
        let e = query::<Value>(&mut c, args).await.unwrap_err();
        assert_eq!(err_text(e), "ERR syntax error", "{args:?}");
    }
    let _: () = c.set("k", "v").await.unwrap();
    for args in [
        &["FLUSHALL"][..],
        &["FLUSHALL", "async"],
        &["FLUSHDB", "SYNC"],
    ] {
        let _: () = c.set("k", "v").await.unwrap();
        let ok: String = query(&mut c, args).await.unwrap();
        assert_eq!(ok, "OK", "{args:?}");
        let n: i64 = query(&mut c, &["EXISTS", "k"]).await.unwrap();
        assert_eq!(n, 0, "{args:?}");
    }
}

#[tokio::test]
async fn cluster_errors_map_to_redis_codes() {
    let server = TestServer::start().await;
    let mut c = server.redis().await;
    let big = "x".repeat(VALUE_BYTES_MAX + 1);
    let e = c.set::<_, _, ()>("k", &big).await.unwrap_err();
    assert_eq!(
        err_text(e),
        format!(
            "ERR value is {} bytes, the limit is {VALUE_BYTES_MAX}",
            VALUE_BYTES_MAX + 1
        )
    );
    let long_key = "k".repeat(KEY_BYTES_MAX + 1);
    let e = c.get::<_, Option<String>>(&long_key).await.unwrap_err();
    assert_eq!(
        err_text(e),
        format!(
            "ERR key is {} bytes, the limit is {KEY_BYTES_MAX}",
            KEY_BYTES_MAX + 1
        )
    );
    server.kv.set_read_only(Some("commit log fsync failed"));
    let e = c.set::<_, _, ()>("k", "v").await.unwrap_err();
    assert_eq!(
        err_text(e),
        "READONLY store is read-only: commit log fsync failed"
    );
    server.kv.set_read_only(None);
    let _: () = c.set("k", "v").await.unwrap();
}

#[tokio::test]
async fn consistency_per_connection() {
    let server = TestServer::start().await;
    let mut c = server.redis().await;
    let mut other = server.redis().await;
    let levels: Vec<String> = query(&mut c, &["RINGKV.CONSISTENCY"]).await.unwrap();
    assert_eq!(levels, vec!["read", "QUORUM", "write", "QUORUM"]);
    let _: String = query(&mut c, &["RINGKV.CONSISTENCY", "one"]).await.unwrap();
    let levels: Vec<String> = query(&mut c, &["RINGKV.CONSISTENCY"]).await.unwrap();
    assert_eq!(levels, vec!["read", "ONE", "write", "ONE"]);
    // A count the one-replica store cannot meet reaches the Kv and fails.
    let _: String = query(&mut c, &["RINGKV.CONSISTENCY", "READ", "2"])
        .await
        .unwrap();
    let e = c.get::<_, Option<String>>("k").await.unwrap_err();
    assert_eq!(
        err_text(e),
        "UNAVAILABLE 2 required, 1 answered: 2 needs 2 replicas; 1 exists"
    );
    let _: () = c.set("k", "v").await.unwrap();
    // Other connections keep their own levels.
    assert_eq!(other.get::<_, String>("k").await.unwrap(), "v");
    let _: String = query(&mut c, &["RINGKV.CONSISTENCY", "DEFAULT"])
        .await
        .unwrap();
    assert_eq!(c.get::<_, String>("k").await.unwrap(), "v");
    let e = query::<String>(&mut c, &["RINGKV.CONSISTENCY", "MOST"])
        .await
        .unwrap_err();
    assert!(err_text(e).starts_with("ERR invalid consistency level 'MOST'"));
}

#[tokio::test]
async fn sibling_aware_commands() {
    let server = TestServer::start().await;
    let mut c = server.redis().await;
    // Missing key: no values, and a context that still decodes.
    let (ctx0, values): (Vec<u8>, Vec<Vec<u8>>) =
        query(&mut c, &["RINGKV.GETALL", "cart"]).await.unwrap();
    assert!(values.is_empty());
    assert!(!ctx0.is_empty());

    let _: () = c.set("cart", "apple").await.unwrap();
    // A replica that missed that write takes a concurrent one.
    server.kv.put_concurrent(b"cart", b"pear", 99);
    let (ctx, mut values): (Vec<u8>, Vec<String>) =
        query(&mut c, &["RINGKV.GETALL", "cart"]).await.unwrap();
    values.sort();
    assert_eq!(values, vec!["apple", "pear"]);
    // Plain GET shows the resolver's pick (the later write).
    assert_eq!(c.get::<_, String>("cart").await.unwrap(), "pear");

    // Writing with the context supersedes both siblings.
    let r: String = cmd("RINGKV.PUT")
        .arg("cart")
        .arg("apple,pear")
        .arg("CONTEXT")
        .arg(&ctx)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(r, "OK");
    let (ctx2, values): (Vec<u8>, Vec<String>) =
        query(&mut c, &["RINGKV.GETALL", "cart"]).await.unwrap();
    assert_eq!(values, vec!["apple,pear"]);

    // A write with a stale context does not supersede what it did not see.
    let _: String = cmd("RINGKV.PUT")
        .arg("cart")
        .arg("stale")
        .arg("CONTEXT")
        .arg(&ctx)
        .query_async(&mut c)
        .await
        .unwrap();
    let (_, mut values): (Vec<u8>, Vec<String>) =
        query(&mut c, &["RINGKV.GETALL", "cart"]).await.unwrap();
    values.sort();
    assert_eq!(values, vec!["apple,pear", "stale"]);

    // Expiry on RINGKV.PUT.
    let _: String = query(&mut c, &["RINGKV.PUT", "t", "v", "PX", "900"])
        .await
        .unwrap();
    assert_eq!(c.pttl::<_, i64>("t").await.unwrap(), 900);

    // Bad context: a clear error, nothing written.
    let e = query::<String>(&mut c, &["RINGKV.PUT", "cart", "x", "CONTEXT", "garbage"])
        .await
        .unwrap_err();
    assert_eq!(err_text(e), "ERR invalid causal context: bad magic byte");
    let e = query::<i64>(&mut c, &["RINGKV.DEL", "cart", "CONTEXT", ""])
        .await
        .unwrap_err();
    assert_eq!(err_text(e), "ERR invalid causal context: truncated");

    // Delete with the latest context removes every sibling.
    let (ctx3, _): (Vec<u8>, Vec<String>) =
        query(&mut c, &["RINGKV.GETALL", "cart"]).await.unwrap();
    assert_ne!(ctx2, ctx3);
    let n: i64 = cmd("RINGKV.DEL")
        .arg("cart")
        .arg("CONTEXT")
        .arg(&ctx3)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(c.exists::<_, i64>("cart").await.unwrap(), 0);
    assert_eq!(
        query::<i64>(&mut c, &["RINGKV.DEL", "cart"]).await.unwrap(),
        0
    );
    let e = query::<i64>(&mut c, &["RINGKV.DEL", "cart", "NOPE", "x"])
        .await
        .unwrap_err();
    assert_eq!(err_text(e), "ERR syntax error");
}

#[tokio::test]
async fn resp3_through_hello() {
    let server = TestServer::start().await;
    let mut c = server.redis_resp3().await;
    let _: () = c.set("k", "v").await.unwrap();
    // Nulls are RESP3 nulls; redis-rs reads them as Nil either way.
    let v: Value = query(&mut c, &["GET", "missing"]).await.unwrap();
    assert_eq!(v, Value::Nil);
    // CONFIG GET and RINGKV.GETALL are maps in RESP3.
    let v: Value = query(&mut c, &["CONFIG", "GET", "maxclients"])
        .await
        .unwrap();
    assert_eq!(
        v,
        Value::Map(vec![(
            Value::BulkString(b"maxclients".to_vec()),
            Value::BulkString(b"10000".to_vec())
        )])
    );
    let v: Value = query(&mut c, &["RINGKV.GETALL", "k"]).await.unwrap();
    let Value::Map(pairs) = v else {
        panic!("GETALL in RESP3 is a map: {v:?}")
    };
    assert_eq!(pairs[0].0, Value::BulkString(b"context".to_vec()));
    assert_eq!(pairs[1].0, Value::BulkString(b"values".to_vec()));
    assert_eq!(
        pairs[1].1,
        Value::Array(vec![Value::BulkString(b"v".to_vec())])
    );
    let info: String = query(&mut c, &["CLIENT", "INFO"]).await.unwrap();
    assert!(info.contains("resp=3"), "{info}");
}

#[tokio::test]
async fn slowlog_and_latency_in_redis_shapes() {
    let server = TestServer::start().await;
    let mut c = server.redis().await;
    let _: () = query(&mut c, &["CLIENT", "SETNAME", "bob"]).await.unwrap();
    let _: () = query(&mut c, &["SET", "fast", "v"]).await.unwrap();
    assert_eq!(query::<i64>(&mut c, &["SLOWLOG", "LEN"]).await.unwrap(), 0);
    // Writes to `slow*` take 300 ms: over 50 ms (logged) and 100 ms (a spike).
    let _: () = query(&mut c, &["SET", "slowkey", "value"]).await.unwrap();
    assert_eq!(query::<i64>(&mut c, &["SLOWLOG", "LEN"]).await.unwrap(), 1);
    let entries: Value = query(&mut c, &["SLOWLOG", "GET"]).await.unwrap();
    let Value::Array(entries) = entries else {
        panic!("an array: {entries:?}");
    };
    let Value::Array(entry) = &entries[0] else {
        panic!("an entry: {entries:?}");
    };
    assert_eq!(entry.len(), 6, "id, time, duration, args, client, name");
    assert!(matches!(entry[0], Value::Int(0)));
    assert!(
        matches!(entry[2], Value::Int(us) if us >= 300_000),
        "{entry:?}"
    );
    let args: Vec<String> = redis::from_redis_value(entry[3].clone()).unwrap();
    assert_eq!(
        args,
        ["SET", "slowkey", "value"].map(String::from),
        "as sent"
    );
    let client: String = redis::from_redis_value(entry[4].clone()).unwrap();
    assert!(client.starts_with("127.0.0.1:"), "{client}");
    let name: String = redis::from_redis_value(entry[5].clone()).unwrap();
    assert_eq!(name, "bob");
    let none: Vec<Value> = query(&mut c, &["SLOWLOG", "GET", "0"]).await.unwrap();
    assert!(none.is_empty());

    let latest: Vec<(String, i64, i64, i64)> = query(&mut c, &["LATENCY", "LATEST"]).await.unwrap();
    assert_eq!(latest.len(), 1, "{latest:?}");
    assert_eq!(latest[0].0, "command");
    assert!(
        latest[0].2 >= 300 && latest[0].3 >= latest[0].2,
        "{latest:?}"
    );
    let history: Vec<(i64, i64)> = query(&mut c, &["LATENCY", "HISTORY", "command"])
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        query::<i64>(&mut c, &["LATENCY", "RESET"]).await.unwrap(),
        1
    );
    let latest: Vec<Value> = query(&mut c, &["LATENCY", "LATEST"]).await.unwrap();
    assert!(latest.is_empty());

    let _: () = query(&mut c, &["SLOWLOG", "RESET"]).await.unwrap();
    assert_eq!(query::<i64>(&mut c, &["SLOWLOG", "LEN"]).await.unwrap(), 0);
    // Redis's errors, checked side by side with redis-server 7.0.
    for (args, text) in [
        (
            &["SLOWLOG", "GET", "-2"][..],
            "ERR count should be greater than or equal to -1",
        ),
        (
            &["SLOWLOG", "GET", "x"][..],
            "ERR count should be greater than or equal to -1",
        ),
        (
            &["SLOWLOG", "GET", "1", "2"][..],
            "ERR unknown subcommand or wrong number of arguments for 'GET'. Try SLOWLOG HELP.",
        ),
        (
            &["SLOWLOG", "LEN", "x"][..],
            "ERR wrong number of arguments for 'slowlog|len' command",
        ),
        (
            &["SLOWLOG", "FOO"][..],
            "ERR unknown subcommand 'FOO'. Try SLOWLOG HELP.",
        ),
        (
            &["SLOWLOG"][..],
            "ERR wrong number of arguments for 'slowlog' command",
        ),
        (
            &["LATENCY", "HISTORY"][..],
            "ERR wrong number of arguments for 'latency|history' command",
        ),
        (
            &["LATENCY", "FOO"][..],
            "ERR unknown subcommand 'FOO'. Try LATENCY HELP.",
        ),
    ] {
        let e = query::<Value>(&mut c, args).await.unwrap_err();
        assert_eq!(err_text(e), text, "{args:?}");
    }
    let slower: Vec<String> = query(&mut c, &["CONFIG", "GET", "slowlog-log-slower-than"])
        .await
        .unwrap();
    assert_eq!(
        slower,
        ["slowlog-log-slower-than", "50000"].map(String::from)
    );
}

#[tokio::test]
async fn cluster_commands_describe_this_node_as_the_primary_of_every_slot() {
    let server = TestServer::start().await;
    let mut c = server.redis().await;
    let me = format!("{:040x}", 0xabcdef);
    let peer = format!("{:040x}", 2);
    let down = format!("{:040x}", 3);
    // SLOTS: one range, this node (at the address the client reached),
    // then the live peer (a wildcard address named by its cluster host).
    type Node = (String, i64, String);
    let slots: Vec<(i64, i64, Node, Node)> = query(&mut c, &["CLUSTER", "SLOTS"]).await.unwrap();
    assert_eq!(slots.len(), 1);
    let (start, end, primary, replica) = &slots[0];
    assert_eq!((*start, *end), (0, 16383));
    assert_eq!(primary.0, "127.0.0.1");
    assert_eq!(primary.2, me);
    assert_eq!(replica, &("10.0.0.2".to_string(), 7389, peer.clone()));
    // NODES: the down peer flagged, the departed node absent.
    let nodes: String = query(&mut c, &["CLUSTER", "NODES"]).await.unwrap();
    let lines: Vec<&str> = nodes.lines().collect();
    assert_eq!(lines.len(), 3, "{nodes}");
    assert!(
        lines[0].starts_with(&me)
            && lines[0].contains(" myself,master - ")
            && lines[0].ends_with(" connected 0-16383")
    );
    assert!(lines[1].starts_with(&peer) && lines[1].contains(&format!(" slave {me} ")));
    assert!(
        lines[2].starts_with(&down)
            && lines[2].contains(" slave,fail ")
            && lines[2].ends_with(" disconnected")
    );
    // SHARDS: one shard, every node with its health.
    let shards: Value = query(&mut c, &["CLUSTER", "SHARDS"]).await.unwrap();
    let text = format!("{shards:?}");
    for word in [
        "slots",
        "nodes",
        "master",
        "replica",
        "online",
        "failed",
        me.as_str(),
        down.as_str(),
    ] {
        assert!(text.contains(word), "{word} in {text}");
    }
    let info: String = query(&mut c, &["CLUSTER", "INFO"]).await.unwrap();
    assert!(
        info.starts_with("cluster_state:ok\r\ncluster_slots_assigned:16384\r\n"),
        "{info}"
    );
    assert!(info.contains("cluster_known_nodes:3\r\n"));
    assert_eq!(
        query::<String>(&mut c, &["CLUSTER", "MYID"]).await.unwrap(),
        me
    );
    assert_eq!(
        query::<i64>(&mut c, &["CLUSTER", "KEYSLOT", "foo"])
            .await
            .unwrap(),
        12182
    );
    for cmd in ["READONLY", "READWRITE", "ASKING"] {
        assert_eq!(query::<String>(&mut c, &[cmd]).await.unwrap(), "OK");
    }
    // Redis's errors (side by side with redis-server 7.0), and refusals.
    let e = query::<Value>(&mut c, &["CLUSTER", "foo"])
        .await
        .unwrap_err();
    assert_eq!(
        err_text(e),
        "ERR unknown subcommand 'foo'. Try CLUSTER HELP."
    );
    let e = query::<Value>(&mut c, &["CLUSTER", "SLOTS", "x"])
        .await
        .unwrap_err();
    assert_eq!(
        err_text(e),
        "ERR wrong number of arguments for 'cluster|slots' command"
    );
    let e = query::<Value>(&mut c, &["CLUSTER", "ADDSLOTS", "1"])
        .await
        .unwrap_err();
    assert!(err_text(e).starts_with("ERR CLUSTER ADDSLOTS is not supported: "));
}

#[tokio::test]
async fn scan_keys_and_randomkey_answer_as_redis() {
    let server = TestServer::start().await;
    let mut c = server.redis().await;
    // An empty keyspace.
    let (cursor, keys): (String, Vec<String>) = query(&mut c, &["SCAN", "0"]).await.unwrap();
    assert_eq!((cursor.as_str(), keys.len()), ("0", 0));
    assert_eq!(
        query::<Value>(&mut c, &["RANDOMKEY"]).await.unwrap(),
        Value::Nil
    );
    for i in 0..25 {
        let _: () = c.set(format!("user:{i}"), "v").await.unwrap();
        let _: () = c.set(format!("item:{i}"), "v").await.unwrap();
    }
    // Page by page with COUNT: every key once, pages no larger than asked.
    let mut seen = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, keys): (String, Vec<String>) = query(&mut c, &["SCAN", &cursor, "COUNT", "7"])
            .await
            .unwrap();
        assert!(keys.len() <= 7);
        seen.extend(keys);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    seen.sort();
    assert_eq!(seen.len(), 50);
    seen.dedup();
    assert_eq!(seen.len(), 50, "no key twice");
    // MATCH filters, TYPE string keeps all, another type none.
    let (_, users): (String, Vec<String>) = query(
        &mut c,
        &["SCAN", "0", "MATCH", "user:[12]*", "COUNT", "100"],
    )
    .await
    .unwrap();
    let mut users = users;
    users.sort();
    let mut want: Vec<String> = (0..25)
        .map(|i| format!("user:{i}"))
        .filter(|k| k.starts_with("user:1") || k.starts_with("user:2"))
        .collect();
    want.sort();
    assert_eq!(users, want);
    let (_, all): (String, Vec<String>) =
        query(&mut c, &["scan", "0", "type", "STRING", "count", "100"])
            .await
            .unwrap();
    assert_eq!(all.len(), 50);
    let (_, none): (String, Vec<String>) =
        query(&mut c, &["SCAN", "0", "TYPE", "hash", "COUNT", "100"])
            .await
            .unwrap();
    assert!(none.is_empty());
    // KEYS and RANDOMKEY.
    let mut items: Vec<String> = query(&mut c, &["KEYS", "item:?"]).await.unwrap();
    items.sort();
    assert_eq!(
        items,
        (0..10).map(|i| format!("item:{i}")).collect::<Vec<_>>()
    );
    let random: String = query(&mut c, &["RANDOMKEY"]).await.unwrap();
    assert!(seen.contains(&random), "{random}");
    // Errors, as Redis words them.
    for (args, want) in [
        (&["SCAN", "abc"][..], "ERR invalid cursor"),
        (&["SCAN", "18446744073709551616"], "ERR invalid cursor"),
        (&["SCAN", "0", "COUNT", "0"], "ERR syntax error"),
        (
            &["SCAN", "0", "COUNT", "x"],
            "ERR value is not an integer or out of range",
        ),
        (&["SCAN", "0", "MATCH"], "ERR syntax error"),
        (&["SCAN", "0", "NOVALUES"], "ERR syntax error"),
        (
            &["SCAN"],
            "ERR wrong number of arguments for 'scan' command",
        ),
        (
            &["KEYS"],
            "ERR wrong number of arguments for 'keys' command",
        ),
        (
            &["RANDOMKEY", "x"],
            "ERR wrong number of arguments for 'randomkey' command",
        ),
    ] {
        let e = query::<Value>(&mut c, args).await.unwrap_err();
        assert_eq!(err_text(e), want, "{args:?}");
    }
}
