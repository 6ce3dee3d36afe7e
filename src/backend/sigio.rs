//! (not yet implemented)

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{Event, Features, Interest, Poller, PollerCounters, Token};

pub struct Sigio;

impl Sigio {
    pub fn new() -> io::Result<Sigio> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "not built yet"))
    }
}

impl Poller for Sigio {
    fn name(&self) -> &'static str {
        "sigio"
    }
    fn features(&self) -> Features {
        Features {
            edge_triggered: false,
            reregister_is_syscall: false,
            max_fd: None,
        }
    }
    fn register(&mut self, _fd: RawFd, _token: Token, _interest: Interest) -> io::Result<()> {
        unimplemented!()
    }
    fn reregister(&mut self, _fd: RawFd, _token: Token, _interest: Interest) -> io::Result<()> {
        unimplemented!()
    }
    fn deregister(&mut self, _fd: RawFd) -> io::Result<()> {
        unimplemented!()
    }
    fn poll(&mut self, _events: &mut Vec<Event>, _timeout: Option<Duration>) -> io::Result<()> {
        unimplemented!()
    }
    fn counters(&self) -> PollerCounters {
        PollerCounters::default()
    }
}

/// Lowers RLIMIT_SIGPENDING for this process (to force queue overflow in tests).
pub fn limit_signal_queue(_max_pending: u64) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "not built yet"))
}
