//! Loopback ports for the processes this binary starts on one machine: the
//! autoscaler's local nodes, the benchmarks' servers and the proofs' nodes.
//!
//! Ports are taken below the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), so that an outgoing
//! connection made by anything else on the machine between the probe and the
//! child's bind cannot take the port first. Each port is handed out once per
//! process: the cursor only moves forward.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;

/// The lowest port handed out.
const LOWEST_PORT: u32 = 20_000;

/// Where the next probe starts, as an offset into the range; `u32::MAX`
/// until the first call picks a starting point from the clock and the pid,
/// so two processes probing at once rarely walk the same ports.
static CURSOR: AtomicU32 = AtomicU32::new(u32::MAX);

/// A free loopback port below the ephemeral range; it stays free by
/// convention until the process it is meant for binds it. Falls back to a
/// port the OS picks when none is free below the range.
pub fn free_port() -> anyhow::Result<u16> {
    let top = ephemeral_low().max(LOWEST_PORT + 1_000);
    let span = top - LOWEST_PORT;
    let _ = CURSOR.compare_exchange(
        u32::MAX,
        start_offset(span),
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span.min(4_000) {
        let offset = CURSOR.fetch_add(1, Ordering::SeqCst) % span;
        let Ok(port) = u16::try_from(LOWEST_PORT + offset) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// The first port of the kernel's ephemeral range (32768 when unknown).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768)
        .min(u32::from(u16::MAX))
}

fn start_offset(span: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_repeat() {
        let low = ephemeral_low();
        let ports: Vec<u16> = (0..50).map(|_| free_port().expect("a free port")).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ports.len(),
            "a port was handed out twice: {ports:?}"
        );
        if low > LOWEST_PORT + 1_000 {
            assert!(
                ports
                    .iter()
                    .all(|&p| u32::from(p) >= LOWEST_PORT && u32::from(p) < low),
                "{ports:?}"
            );
        }
    }
}
