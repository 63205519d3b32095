//! Loopback ports for the processes this binary starts on one machine: the
//! autoscaler's local nodes, the benchmarks' servers and the proofs' nodes.

use std::net::TcpListener;

use anyhow::Context;

/// A free loopback port: the OS picks it, and it stays free by convention
/// until the process it is meant for binds it.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}
