//! Counters, sets and hashes against a real `redis-server`, side by side:
//! the same commands sent to a ringkv node and to Redis, over RESP2 and
//! RESP3, answer with the same bytes (the members of a set and the fields
//! of a hash compared as collections: Redis keeps them in insertion order,
//! ringkv in byte order).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::NodeProc;

/// A `redis-server` on a free loopback port, killed when dropped.
struct Redis {
    child: Child,
    addr: SocketAddr,
}

impl Redis {
    fn start() -> Option<Redis> {
        if !common::have("redis-server") {
            assert!(!common::tools_required(), "redis-server is needed");
            eprintln!("skipping: no redis-server");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Redis { child, addr })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw RESP connection: commands out, whole replies back as bytes.
struct Raw {
    out: TcpStream,
    input: BufReader<TcpStream>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let out = TcpStream::connect(addr).expect("connect");
        out.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let input = BufReader::new(out.try_clone().expect("clone"));
        Raw { out, input }
    }

    fn send(&mut self, args: &[&str]) -> Reply {
        let mut cmd = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            cmd.extend(format!("${}\r\n", a.len()).bytes());
            cmd.extend(a.bytes());
            cmd.extend(b"\r\n");
        }
        self.out.write_all(&cmd).expect("send");
        self.reply()
    }

    fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.input.read_until(b'\n', &mut line).expect("read");
        line
    }

    /// One whole reply.
    fn reply(&mut self) -> Reply {
        let line = self.line();
        let n = || -> i64 {
            std::str::from_utf8(&line[1..line.len() - 2])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(-1)
        };
        match line.first() {
            Some(b'$' | b'=' | b'!') if n() >= 0 => {
                let mut body = vec![0; n() as usize + 2];
                self.input.read_exact(&mut body).expect("bulk");
                Reply::Line([line, body].concat())
            }
            Some(kind @ (b'*' | b'~' | b'%')) if n() >= 0 => {
                let count = n() as usize * if *kind == b'%' { 2 } else { 1 };
                let items = (0..count).map(|_| self.reply()).collect();
                Reply::Many(line, items)
            }
            _ => Reply::Line(line),
        }
    }
}

/// A reply: one line (with a bulk's body), or an aggregate's header and
/// its items.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Reply {
    Line(Vec<u8>),
    Many(Vec<u8>, Vec<Reply>),
}

impl Reply {
    /// The same reply with an aggregate's items in order (pairs of a map
    /// or of a flat `HGETALL` kept together).
    fn sorted(self, pairs: bool) -> Reply {
        match self {
            Reply::Many(header, items) if pairs => {
                let mut chunks: Vec<Vec<Reply>> = items.chunks(2).map(<[Reply]>::to_vec).collect();
                chunks.sort();
                Reply::Many(header, chunks.concat())
            }
            Reply::Many(header, mut items) => {
                items.sort();
                Reply::Many(header, items)
            }
            line => line,
        }
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Line(l) => write!(f, "{}", String::from_utf8_lossy(l).escape_debug()),
            Reply::Many(h, items) => {
                write!(f, "{}", String::from_utf8_lossy(h).escape_debug())?;
                items.iter().try_for_each(|i| write!(f, "{i}"))
            }
        }
    }
}

/// The commands, in order; `Some(pairs)` marks a reply compared as a
/// collection.
const SCRIPT: &[(&str, Option<bool>)] = &[
    ("INCR c", None),
    ("INCRBY c 10", None),
    ("DECR c", None),
    ("DECRBY c 3", None),
    ("GET c", None),
    ("INCRBY c abc", None),
    ("INCRBY c", None),
    ("DECRBY c -9223372036854775808", None),
    ("SET s abc", None),
    ("INCR s", None),
    ("SET n 41", None),
    ("INCR n", None),
    ("GET n", None),
    ("INCRBY big 9223372036854775807", None),
    ("INCR big", None),
    ("DECRBY neg 9223372036854775807", None),
    ("DECRBY neg 2", None),
    ("TYPE c", None),
    ("EXISTS c nokey c", None),
    ("SADD st a b c", None),
    ("SADD st a", None),
    ("SADD st", None),
    ("SREM st a zz", None),
    ("SREM nokey a", None),
    ("SCARD st", None),
    ("SISMEMBER st b", None),
    ("SISMEMBER st zz", None),
    ("SMISMEMBER st b zz c", None),
    ("SMEMBERS st", Some(false)),
    ("SRANDMEMBER nokey", None),
    ("SRANDMEMBER nokey 3", None),
    ("SRANDMEMBER st 0", None),
    ("SRANDMEMBER st x", None),
    ("TYPE st", None),
    ("INCR st", None),
    ("GET st", None),
    ("MGET st c", None),
    ("TTL st", None),
    ("STRLEN st", None),
    ("GETDEL st", None),
    ("SET st x GET", None),
    ("SCARD nokey", None),
    ("SMEMBERS nokey", None),
    ("SREM st b c", None),
    ("EXISTS st", None),
    ("HSET h f1 v1 f2 v2", None),
    ("HSET h f1 v9", None),
    ("HSET h f", None),
    ("HSET h f 1 g", None),
    ("HMSET h f3 v3", None),
    ("HSETNX h f1 x", None),
    ("HSETNX h f4 7", None),
    ("HGET h f1", None),
    ("HGET h zz", None),
    ("HMGET h f1 zz f4", None),
    ("HLEN h", None),
    ("HEXISTS h f2", None),
    ("HEXISTS h zz", None),
    ("HSTRLEN h f1", None),
    ("HINCRBY h f4 5", None),
    ("HINCRBY h f1 1", None),
    ("HINCRBY h f4 x", None),
    ("HINCRBY h new -3", None),
    ("HSET h n 9223372036854775807", None),
    ("HINCRBY h n 1", None),
    ("HDEL h f2 zz", None),
    ("HDEL h", None),
    ("HGETALL h", Some(true)),
    ("HKEYS h", Some(false)),
    ("HVALS h", Some(false)),
    ("TYPE h", None),
    ("HGET c f", None),
    ("SADD h m", None),
    ("HGETALL nokey", None),
    ("HLEN nokey", None),
    ("DEL h c n", None),
    ("EXISTS h c", None),
    ("HGETALL h", None),
    ("GET c", None),
];

fn run(addr: SocketAddr, resp3: bool) -> Vec<Reply> {
    let mut con = Raw::connect(addr);
    if resp3 {
        con.send(&["HELLO", "3"]);
    }
    con.send(&["FLUSHALL"]);
    SCRIPT
        .iter()
        .map(|(cmd, sorted)| {
            let args: Vec<&str> = cmd.split(' ').collect();
            let reply = con.send(&args);
            match sorted {
                Some(pairs) => reply.sorted(*pairs),
                None => reply,
            }
        })
        .collect()
}

#[test]
fn counters_sets_and_hashes_answer_as_redis_does() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProc::start(&dir.path().join("n1"), &[]);
    for resp3 in [false, true] {
        let theirs = run(redis.addr, resp3);
        let ours = run(node.resp, resp3);
        let mut differ = Vec::new();
        for (((cmd, _), ours), theirs) in SCRIPT.iter().zip(&ours).zip(&theirs) {
            if ours != theirs {
                differ.push(format!("{cmd}: ringkv {ours} redis {theirs}"));
            }
        }
        assert!(
            differ.is_empty(),
            "RESP{}: {} replies differ:\n{}",
            if resp3 { 3 } else { 2 },
            differ.len(),
            differ.join("\n")
        );
    }
    // The HTTP views of each kind.
    let mut con = Raw::connect(node.resp);
    for cmd in [
        "SADD web:s b a",
        "HSET web:h f v",
        "HINCRBY web:h n 2",
        "INCRBY web:c 6",
        "SET web:str hi",
    ] {
        let args: Vec<&str> = cmd.split(' ').collect();
        con.send(&args);
    }
    let view = |path: &str| common::json(&node, path);
    assert_eq!(
        view("/v1/kv/web:s"),
        serde_json::json!({"type": "set", "members": ["a", "b"]})
    );
    assert_eq!(
        view("/v1/kv/web:h"),
        serde_json::json!({"type": "hash", "fields": {"f": "v", "n": 2}})
    );
    assert_eq!(
        view("/v1/kv/web:c?view=type"),
        serde_json::json!({"type": "counter", "value": 6})
    );
    assert_eq!(
        view("/v1/kv/web:str?view=type"),
        serde_json::json!({"type": "string", "value": "hi"})
    );
    // SCAN by type.
    let Reply::Many(_, page) = con.send(&["SCAN", "0", "COUNT", "1000", "TYPE", "set"]) else {
        panic!("a scan page");
    };
    assert_eq!(
        page.get(1),
        Some(&Reply::Many(
            b"*1\r\n".to_vec(),
            vec![Reply::Line(b"$5\r\nweb:s\r\n".to_vec())]
        ))
    );
    // A reply of repeated random members is bounded by reply_bytes_max
    // (64 MiB): 100,000 copies of a 1 KiB member are refused.
    let big = "m".repeat(1024);
    con.send(&["SADD", "web:big", &big]);
    let Reply::Line(line) = con.send(&["SRANDMEMBER", "web:big", "-100000"]) else {
        panic!("an error line");
    };
    assert!(
        line.starts_with(b"-ERR SRANDMEMBER reply exceeds"),
        "{}",
        String::from_utf8_lossy(&line)
    );
    // What ringkv refuses, and says why.
    for cmd in ["INCRBYFLOAT c 1.5", "SPOP st"] {
        let args: Vec<&str> = cmd.split(' ').collect();
        let Reply::Line(line) = con.send(&args) else {
            panic!("{cmd}: an error line");
        };
        assert!(
            line.starts_with(b"-ERR "),
            "{cmd}: {}",
            String::from_utf8_lossy(&line)
        );
    }
}
