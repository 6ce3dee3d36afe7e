//! poll(2): the whole interest set crosses into the kernel on every wait, and the result is
//! scanned in full, so each wait costs O(registered) — the cost the c10k problem is about.
//!
//! Invariant: `fds[i]` and `tokens[i]` describe the same registration, and `index` maps each
//! registered descriptor to its position, so deregistering is a swap_remove in O(1). Level-
//! triggered only.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{not_registered, Event, FdTable, Interest, Poller, PollerCounters, Token};
use crate::sys;

#[derive(Default)]
pub struct Poll {
    fds: Vec<libc::pollfd>,
    tokens: Vec<Token>,
    index: FdTable<usize>,
    counters: PollerCounters,
}

impl Poll {
    pub fn new() -> Poll {
        Poll::default()
    }
}

/// POLLRDHUP only with POLLIN: after a peer's half-close, a connection that is only writing must
/// not be reported ready on every call (POLLHUP and POLLERR are reported whatever we ask).
pub(crate) fn mask(interest: Interest) -> libc::c_short {
    let mut mask = 0;
    if interest.read {
        mask |= libc::POLLIN | libc::POLLRDHUP;
    }
    if interest.write {
        mask |= libc::POLLOUT;
    }
    mask
}

impl Poller for Poll {
    fn name(&self) -> &'static str {
        "poll"
    }

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        self.index.check_vacant(fd)?;
        self.index.insert(fd, self.fds.len());
        self.fds.push(libc::pollfd {
            fd,
            events: mask(interest),
            revents: 0,
        });
        self.tokens.push(token);
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let i = self.index.get(fd).ok_or_else(|| not_registered(fd))?;
        self.fds[i].events = mask(interest);
        self.tokens[i] = token;
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let i = self.index.remove(fd).ok_or_else(|| not_registered(fd))?;
        self.fds.swap_remove(i);
        self.tokens.swap_remove(i);
        if let Some(moved) = self.fds.get(i) {
            self.index.insert(moved.fd, i);
        }
        Ok(())
    }

    fn poll(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        self.counters.waits += 1;
        let mut ready = sys::poll(&mut self.fds, timeout)?;
        let hangup = libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR | libc::POLLNVAL;
        for (pfd, &token) in self.fds.iter().zip(&self.tokens) {
            if ready == 0 {
                break;
            }
            let bits = pfd.revents;
            if bits == 0 {
                continue;
            }
            ready -= 1;
            events.push(Event {
                token,
                readable: bits & (libc::POLLIN | hangup) != 0,
                writable: bits & (libc::POLLOUT | libc::POLLERR) != 0,
                hangup: bits & hangup != 0,
            });
        }
        Ok(())
    }

    fn counters(&self) -> PollerCounters {
        self.counters
    }
}
