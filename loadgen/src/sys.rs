//! Sockets and clocks through safe APIs (socket2, nix); reads and writes use the server crate's
//! wrappers (`c10k::sys`). This module has no `unsafe`.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Whether a nonblocking connect finished at once or is under way.
pub enum Connect {
    Done(Socket),
    InProgress(Socket),
}

/// A nonblocking TCP connect to `target` from `source`. Port 0: the kernel picks the port at
/// connect time (IP_BIND_ADDRESS_NO_PORT, so that each (source, destination) pair has its own
/// ports). Another port: that exact pair (crate::ports), with SO_REUSEADDR so that a pair left in
/// TIME_WAIT by an earlier run can be taken again; a pair some other socket holds falls back to
/// the kernel's choice, so that the connection still opens.
pub fn connect(target: SocketAddr, source: Option<SocketAddr>) -> io::Result<Connect> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_nodelay(true)?;
    if let Some(addr) = source {
        let explicit = addr.port() != 0
            && match socket.set_reuse_address(true) {
                Ok(()) => socket.bind(&SockAddr::from(addr)).is_ok(),
                Err(_) => false,
            };
        if !explicit {
            if addr.is_ipv4() {
                setsockopt(&socket, sockopt::IpBindAddressNoPort, &true)
                    .map_err(io::Error::from)?;
            }
            socket.bind(&SockAddr::from(SocketAddr::new(addr.ip(), 0)))?;
        }
    }
    match socket.connect(&SockAddr::from(target)) {
        Ok(()) => Ok(Connect::Done(socket)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(Connect::InProgress(socket)),
        Err(e) => Err(e),
    }
}

/// CPU time used by the calling thread.
pub fn thread_cpu_time() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// Time the calling thread has run and has waited, runnable, for a CPU (ns), from
/// /proc/thread-self/schedstat; zeros where it is missing.
pub fn thread_sched_ns() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = text
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    (f.next().unwrap_or(0), f.next().unwrap_or(0))
}

/// The ephemeral port range (`net.ipv4.ip_local_port_range`): ports per (source, destination).
pub fn local_port_budget() -> u64 {
    read_port_range(Path::new("/proc/sys/net/ipv4/ip_local_port_range")).unwrap_or(28232)
}

fn read_port_range(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.checked_sub(lo)? + 1)
}
