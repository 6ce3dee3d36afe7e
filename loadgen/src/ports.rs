//! Explicit source (address, port) pairs (`--source-ports LO-HI`): each connection of the run
//! gets its own pair, bound before connect(), so that connect() never searches for a port.
//!
//! Why: with IP_BIND_ADDRESS_NO_PORT the kernel picks the port inside connect()
//! (`__inet_hash_connect`), walking the ports of one parity from a per-destination offset and
//! checking each against the connections already open. Once a (source, destination) pair holds
//! half the ephemeral range (14,116 of 28,232 ports here), every connect walks all of that parity
//! before trying the other: measured 19 µs → 2.5–8.6 ms per connect() (docs/c1m.md,
//! scripts/connect_cost.py). An explicit pair costs one hash lookup at any occupancy.
//!
//! The ports should lie outside net.ipv4.ip_local_port_range: the kernel's own search skips every
//! port that some socket bound explicitly, on any address, so pairs taken inside the range would
//! starve every other program's connect() on the machine.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// An inclusive range of source ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// `LO-HI`, inclusive, both at least 1.
    pub fn parse(s: &str) -> Result<PortRange, String> {
        let (lo, hi) = s
            .split_once('-')
            .ok_or_else(|| format!("--source-ports {s:?}: expected LO-HI, e.g. 61000-65535"))?;
        let port = |v: &str| {
            v.trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("--source-ports {s:?}: {v:?} is not a port (1-65535)"))
        };
        let (lo, hi) = (port(lo)?, port(hi)?);
        if hi < lo {
            return Err(format!(
                "--source-ports {s:?}: the range ends before it starts"
            ));
        }
        Ok(PortRange { lo, hi })
    }

    pub fn len(&self) -> u64 {
        u64::from(self.hi - self.lo) + 1
    }

    pub fn is_empty(&self) -> bool {
        false // lo <= hi always: parse refuses the rest
    }

    /// Whether the range shares a port with `[lo, hi]` (the ephemeral range).
    pub fn overlaps(&self, lo: u64, hi: u64) -> bool {
        u64::from(self.lo) <= hi && lo <= u64::from(self.hi)
    }
}

/// Distinct connections the pairs allow: every address with every port.
pub fn capacity(sources: &[IpAddr], ports: PortRange) -> u64 {
    sources.len() as u64 * ports.len()
}

/// What the run's connection `global` binds before connecting. Addresses go round-robin (as
/// without explicit ports); the port is the connection's turn on its address. Distinct for every
/// `global` below [`capacity`], whichever process or thread opens it, since `global` counts over
/// the whole run. Without `ports`, the port is 0: the kernel picks it at connect time.
pub fn source_for(
    sources: &[IpAddr],
    ports: Option<PortRange>,
    global: usize,
) -> Option<SocketAddr> {
    let ip = *sources.get(global % sources.len().max(1))?;
    let port = match ports {
        Some(p) => {
            let turn = (global / sources.len()) as u64 % p.len();
            p.lo + turn as u16
        }
        None => 0,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn addrs(n: u8) -> Vec<IpAddr> {
        (0..n).map(|i| IpAddr::from([127, 0, 1, i + 1])).collect()
    }

    /// Every connection below the capacity gets its own pair, inside the range, and the addresses
    /// share the connections evenly.
    #[test]
    fn pairs_are_distinct_up_to_the_capacity() {
        let sources = addrs(3);
        let ports = PortRange::parse("64000-64009").unwrap();
        assert_eq!(capacity(&sources, ports), 30);
        let pairs: Vec<SocketAddr> = (0..30)
            .map(|g| source_for(&sources, Some(ports), g).unwrap())
            .collect();
        assert_eq!(pairs.iter().collect::<HashSet<_>>().len(), 30);
        assert!(pairs.iter().all(|a| (64000..=64009).contains(&a.port())));
        for s in &sources {
            assert_eq!(pairs.iter().filter(|a| a.ip() == *s).count(), 10);
        }
    }

    #[test]
    fn without_ports_the_kernel_picks_and_without_sources_nothing_is_bound() {
        let sources = addrs(2);
        assert_eq!(source_for(&sources, None, 3).unwrap().port(), 0);
        assert_eq!(source_for(&sources, None, 3).unwrap().ip(), sources[1]);
        assert_eq!(source_for(&[], None, 3), None);
    }

    #[test]
    fn parse_refuses_what_is_not_a_range() {
        assert_eq!(
            PortRange::parse("61000-65535").unwrap(),
            PortRange {
                lo: 61000,
                hi: 65535
            }
        );
        for bad in ["61000", "0-10", "9-8", "1-65536", "a-b"] {
            assert!(PortRange::parse(bad).is_err(), "{bad}");
        }
        let r = PortRange::parse("61000-65535").unwrap();
        assert!(!r.overlaps(32768, 60999) && r.overlaps(32768, 61000));
    }
}
