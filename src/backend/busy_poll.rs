//! busy-poll: the "non-blocking I/O" model of the classic texts. Every socket is non-blocking and
//! the loop simply tries each connection in turn — read, and see if it says EAGAIN — with no
//! multiplexing syscall at all. A teaching backend: it burns a whole core by design, idle or not,
//! and each pass costs one syscall per registered descriptor.
//!
//! Invariant: `poll` reports every registered descriptor with a non-empty interest, as ready for
//! exactly that interest, on every pass (the contract allows spurious events: the reactor's read
//! or accept gets EAGAIN). It never blocks while such a descriptor exists, ignoring the timeout;
//! only when none is registered does it sleep, up to the timeout (and returns with no events). No
//! `sched_yield` between passes either: spinning is the model being shown.
//!
//! `fds[i]` and `regs[i]` describe one registration and `index` maps a descriptor to `i`, so that
//! deregistering is a swap_remove, as in the poll backend.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{not_registered, Event, FdTable, Interest, Poller, PollerCounters, Token};

/// How long a pass with nothing registered and no timeout sleeps: there is no readiness to wait
/// for, and returning with no events is always allowed.
const IDLE_SLEEP: Duration = Duration::from_millis(10);

#[derive(Default)]
pub struct BusyPoll {
    fds: Vec<RawFd>,
    regs: Vec<(Token, Interest)>,
    index: FdTable<usize>,
    counters: PollerCounters,
}

impl BusyPoll {
    pub fn new() -> io::Result<BusyPoll> {
        Ok(BusyPoll::default())
    }
}

impl Poller for BusyPoll {
    fn name(&self) -> &'static str {
        "busy-poll"
    }

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        self.index.check_vacant(fd)?;
        self.index.insert(fd, self.fds.len());
        self.fds.push(fd);
        self.regs.push((token, interest));
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let i = self.index.get(fd).ok_or_else(|| not_registered(fd))?;
        self.regs[i] = (token, interest);
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let i = self.index.remove(fd).ok_or_else(|| not_registered(fd))?;
        self.fds.swap_remove(i);
        self.regs.swap_remove(i);
        if let Some(&moved) = self.fds.get(i) {
            self.index.insert(moved, i);
        }
        Ok(())
    }

    /// One pass: everything is "ready"; the reactor's non-blocking calls find out what really is.
    fn poll(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        self.counters.waits += 1;
        let before = events.len();
        events.extend(
            self.regs
                .iter()
                .filter(|(_, interest)| *interest != Interest::NONE)
                .map(|&(token, interest)| Event {
                    token,
                    readable: interest.read,
                    writable: interest.write,
                    hangup: false,
                }),
        );
        if events.len() == before {
            std::thread::sleep(timeout.unwrap_or(IDLE_SLEEP));
        }
        Ok(())
    }

    fn counters(&self) -> PollerCounters {
        self.counters
    }
}
