//! epoll: the kernel keeps the interest set, so a wait costs O(ready), not O(registered).
//!
//! Invariant: every registered descriptor is in the kernel's interest list under its token, and
//! nothing else is. Level-triggered by default; with `edge` each registration carries EPOLLET and
//! the reactor (told by `Features::edge_triggered`) reads a ready descriptor until a short read
//! (epoll(7): the buffer is drained) or, when the event said hang-up, until EOF.
//! EPOLLRDHUP is asked for together with EPOLLIN, never alone: a peer's half-close is a reason to
//! read (and see EOF), and a level-triggered RDHUP left armed on a connection that is only
//! writing would be reported on every wait, a loop that wakes without progress.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{Event, Features, Interest, Poller, PollerCounters, Token};
use crate::sys;

/// How many events one wait can return; more ready descriptors are reported by the next wait.
const EVENTS_PER_WAIT: usize = 1024;

pub struct Epoll {
    epfd: OwnedFd,
    edge: bool,
    events: Vec<libc::epoll_event>,
    counters: PollerCounters,
}

impl Epoll {
    pub fn new(edge: bool) -> io::Result<Epoll> {
        Ok(Epoll {
            epfd: sys::epoll_create()?,
            edge,
            events: Vec::with_capacity(EVENTS_PER_WAIT),
            counters: PollerCounters::default(),
        })
    }

    fn mask(&self, interest: Interest) -> u32 {
        let mut mask = 0;
        if interest.read {
            mask |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        }
        if interest.write {
            mask |= libc::EPOLLOUT as u32;
        }
        if self.edge {
            mask |= libc::EPOLLET as u32;
        }
        mask
    }

    fn ctl(
        &mut self,
        op: libc::c_int,
        fd: RawFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.counters.ctl += 1;
        sys::epoll_ctl(self.epfd.as_raw_fd(), op, fd, self.mask(interest), token)
    }
}

/// The epoll set itself, for a loop that waits on it from inside another (loadgen's io_uring
/// engine polls it for its connects and timers).
impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.epfd.as_raw_fd()
    }
}

impl Poller for Epoll {
    fn name(&self) -> &'static str {
        "epoll"
    }

    fn features(&self) -> Features {
        Features {
            edge_triggered: self.edge,
        }
    }

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, Interest::NONE)
    }

    fn poll(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        self.counters.waits += 1;
        sys::epoll_wait(self.epfd.as_raw_fd(), &mut self.events, timeout)?;
        let hangup = (libc::EPOLLHUP | libc::EPOLLRDHUP | libc::EPOLLERR) as u32;
        events.extend(self.events.iter().map(|e| {
            let bits = e.events;
            Event {
                token: e.u64,
                readable: bits & (libc::EPOLLIN as u32 | hangup) != 0,
                writable: bits & (libc::EPOLLOUT as u32 | libc::EPOLLERR as u32) != 0,
                hangup: bits & hangup != 0,
            }
        }));
        Ok(())
    }

    fn counters(&self) -> PollerCounters {
        self.counters
    }
}
