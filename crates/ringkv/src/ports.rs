//! Loopback ports for the processes this binary starts on one machine: the
//! autoscaler's local nodes, the benchmarks' servers and the proofs' nodes.
//!
//! Ports are taken outside the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`; below it, or above it when
//! it starts low), so that an outgoing
//! connection made by anything else on the machine between the probe and the
//! child's bind cannot take the port first. Each port is handed out once per
//! process: the cursor only moves forward.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;

/// The lowest port handed out below the ephemeral range.
const LOWEST_PORT: u32 = 20_000;
/// The narrowest block worth walking.
const SPAN_MIN: u32 = 1_000;

/// Where the next probe starts, as an offset into the range; `u32::MAX`
/// until the first call picks a starting point from the clock and the pid,
/// so two processes probing at once rarely walk the same ports.
static CURSOR: AtomicU32 = AtomicU32::new(u32::MAX);

/// A free loopback port outside the ephemeral range; it stays free by
/// convention until the process it is meant for binds it. Falls back to a
/// port the OS picks when no range outside it is wide enough or none is
/// free there. The cursor wraps after the range's width: a process that
/// asks for more ports than that may be handed one again.
pub fn free_port() -> anyhow::Result<u16> {
    if let Some((first, span)) = port_range() {
        let _ = CURSOR.compare_exchange(
            u32::MAX,
            start_offset(span),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        for _ in 0..span.min(4_000) {
            let offset = CURSOR.fetch_add(1, Ordering::SeqCst) % span;
            let Ok(port) = u16::try_from(first + offset) else {
                continue;
            };
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// The block ports are taken from: below the ephemeral range (from
/// [`LOWEST_PORT`]) when at least [`SPAN_MIN`] ports fit there, else above
/// it; `(first port, width)`.
fn port_range() -> Option<(u32, u32)> {
    let (low, high) = ephemeral_range();
    if low >= LOWEST_PORT + SPAN_MIN {
        Some((LOWEST_PORT, low - LOWEST_PORT))
    } else if high + SPAN_MIN <= u32::from(u16::MAX) {
        Some((high + 1, u32::from(u16::MAX) - high))
    } else {
        None
    }
}

/// The kernel's ephemeral range (32768-60999 when unknown).
fn ephemeral_range() -> (u32, u32) {
    let parsed = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        });
    let (low, high) = parsed.unwrap_or((32_768, 60_999));
    (low.min(65_535), high.min(65_535))
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
    fn ports_are_outside_the_ephemeral_range_and_never_repeat() {
        let (low, high) = ephemeral_range();
        let ports: Vec<u16> = (0..50).map(|_| free_port().expect("a free port")).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ports.len(),
            "a port was handed out twice: {ports:?}"
        );
        if port_range().is_some() {
            let outside = |p: &u16| u32::from(*p) < low || u32::from(*p) > high;
            assert!(ports.iter().all(outside), "{ports:?} within {low}-{high}");
        }
    }
}
