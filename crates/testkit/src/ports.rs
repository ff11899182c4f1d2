//! Blocks of loopback ports for deployments whose ports are fixed before their processes
//! start (the rehearsal's units: web tier, split listener, scaler metrics, control).
//!
//! Where a test can, it binds port 0 and hands the listener over, or has the binary report
//! what it bound ([`crate::process`]). Where it cannot, picking a "free" port by binding
//! port 0 and releasing it races every later bind of port 0, because the kernel hands out
//! exactly those ports. These blocks come from *below* the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), where the kernel never picks, from a
//! process-wide counter (so tests in one process never share a port), each port checked
//! free when handed out.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU16, Ordering};

/// Lowest port handed out.
const FLOOR: u16 = 20_000;

/// The next port to try, shared by every test of this process.
static NEXT: AtomicU16 = AtomicU16::new(0);

/// `n` consecutive loopback ports nobody listens on, below the ephemeral range; returns
/// the first. Panics if none is found.
pub fn free_block(n: u16) -> u16 {
    let ceiling = ephemeral_floor().saturating_sub(n);
    assert!(ceiling > FLOOR, "no room below the ephemeral port range");
    // Start where this process's id points, so concurrent test processes start apart.
    let span = ceiling - FLOOR;
    let start = FLOOR + u16::try_from(std::process::id() % u32::from(span / 10)).unwrap_or(0) * 10;
    let _ = NEXT.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..span {
        let first = NEXT.fetch_add(n, Ordering::SeqCst);
        let first = if first >= ceiling {
            NEXT.store(FLOOR + n, Ordering::SeqCst);
            FLOOR
        } else {
            first
        };
        if (first..first + n).all(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()) {
            return first;
        }
    }
    panic!("no {n} free consecutive ports between {FLOOR} and {ceiling}");
}

/// The low end of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_floor() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_free_distinct_and_below_the_ephemeral_range() {
        let a = free_block(4);
        let b = free_block(4);
        assert!(a + 4 <= b || b + 4 <= a, "{a} and {b} overlap");
        for port in [a, b] {
            assert!((FLOOR..ephemeral_floor()).contains(&port), "{port}");
        }
    }
}
