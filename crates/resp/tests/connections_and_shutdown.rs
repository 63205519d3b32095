//! Connection-level limits and lifecycle: `connections_max` at accept, the
//! idle timeout (including a client that drips bytes), and graceful
//! shutdown that finishes in-flight requests.

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, TestServer, bulk, error};
use ringkv_resp::{Frame, RespConfig};
use tokio::io::AsyncWriteExt;

/// Waits until `check` holds, polling; fails after `within`.
async fn eventually(within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < within,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_thousand_connections_against_connections_max() {
    let server = TestServer::start_with(RespConfig {
        connections_max: 100,
        ..RespConfig::default()
    })
    .await;
    let mut bystander = server.raw().await;
    assert_eq!(
        bystander.cmd(&[b"PING"]).await,
        Frame::simple_static("PONG")
    );

    let mut clients = Vec::with_capacity(1000);
    for _ in 0..1000 {
        clients.push(RawClient::connect(server.addr).await);
    }
    // 99 more fit next to the bystander; the other 901 are refused with
    // Redis' error and closed.
    let mut accepted = Vec::new();
    let mut refused = 0;
    for mut c in clients {
        // The send fails when the refusal has already closed the socket.
        let _ = c.try_send(b"PING\r\n").await;
        match c.try_read().await {
            Ok(Some(f)) if f == Frame::simple_static("PONG") => accepted.push(c),
            Ok(Some(f)) => {
                assert_eq!(f, error("ERR max number of clients reached"));
                assert!(c.is_closed().await);
                refused += 1;
            }
            // The refusal raced with our PING and the socket was reset.
            Ok(None) | Err(_) => refused += 1,
        }
    }
    assert_eq!(accepted.len(), 99);
    assert_eq!(refused, 901);
    let stats = server.stats.snapshot();
    assert_eq!(stats.rejected_connections, 901);
    assert_eq!(stats.connected_clients, 100);

    // The node is unaffected: the first client still works.
    assert_eq!(bystander.cmd(&[b"SET", b"k", b"v"]).await, Frame::ok());
    // Closing connections frees their slots.
    accepted.truncate(49);
    let stats = server.stats.clone();
    eventually(Duration::from_secs(5), || {
        stats.snapshot().connected_clients == 50
    })
    .await;
    let mut late = server.raw().await;
    assert_eq!(late.cmd(&[b"GET", b"k"]).await, bulk("v"));
}

#[tokio::test]
async fn idle_connections_are_closed_and_busy_ones_are_not() {
    let server = TestServer::start_with(RespConfig {
        idle_timeout_ms: 300,
        ..RespConfig::default()
    })
    .await;
    let mut busy = server.raw().await;
    let mut idle = Vec::with_capacity(1000);
    for _ in 0..1000 {
        idle.push(RawClient::connect(server.addr).await);
    }
    // A slowloris: announces a 100-byte argument and drips it.
    let mut drip = server.raw().await;
    drip.send(b"*2\r\n$4\r\nECHO\r\n$100\r\n").await;
    let stats = server.stats.clone();
    eventually(Duration::from_secs(5), || {
        stats.snapshot().connected_clients == 1002
    })
    .await;

    let started = Instant::now();
    let mut dripped = 0;
    while started.elapsed() < Duration::from_millis(900) {
        assert_eq!(busy.cmd(&[b"PING"]).await, Frame::simple_static("PONG"));
        if drip.stream.write_all(b"a").await.is_ok() {
            dripped += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dripped > 3);
    // Everyone but the busy client is gone.
    eventually(Duration::from_secs(5), || {
        stats.snapshot().connected_clients == 1
    })
    .await;
    for c in idle.iter_mut().take(20) {
        assert!(c.is_closed().await, "an idle connection was closed");
    }
    assert!(drip.is_closed().await, "the slowloris was closed");
    assert_eq!(busy.cmd(&[b"SET", b"k", b"v"]).await, Frame::ok());
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let mut server = TestServer::start().await;
    let mut idle = server.raw().await;
    let mut working = server.raw().await;
    assert_eq!(idle.cmd(&[b"PING"]).await, Frame::simple_static("PONG"));
    // The write to `slow...` takes 300 ms in the test Kv; the GET behind it
    // is already in the server's buffer.
    working
        .send(b"*3\r\n$3\r\nSET\r\n$6\r\nslow:1\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$6\r\nslow:1\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = Instant::now();
    server.stop().await.expect("clean shutdown");
    assert!(
        stopped.elapsed() >= Duration::from_millis(150),
        "shutdown waited for the in-flight write"
    );
    assert_eq!(
        working.read_until_closed().await,
        vec![Frame::ok(), bulk("v")]
    );
    assert!(idle.is_closed().await);
    // No longer accepting.
    let refused = tokio::net::TcpStream::connect(server.addr).await;
    assert!(refused.is_err(), "the listener is closed");
}
