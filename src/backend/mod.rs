//! Readiness backends behind one small [`Poller`] trait. They know nothing of protocols or
//! drivers: this folder imports only [`crate::sys`].
//!
//! A poller only *reports* which registered descriptors are ready; the reactor does the dispatch.
//! The contract is written to the weakest backend so that one reactor is correct over all of them:
//! - Events may be spurious: a readable event does not promise that `read` will not return EAGAIN.
//! - A backend with [`Features::edge_triggered`] reports a change of state once; the reactor must
//!   then read or write until EAGAIN (or remember that the descriptor is still ready).
//! - Level-triggered backends report a descriptor for as long as it is ready for the registered
//!   interest, so the reactor removes an interest it cannot act on (a full output buffer).
//! - `poll` appends to `events`; the caller clears it.
//!
//! Semantics are data ([`Features`]), as in nginx's event flags: the reactor branches on the
//! features, never on the backend's name.

pub mod busy_poll;
pub mod epoll;
pub mod poll;
pub mod select;
pub mod sigio;

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Identifies a registration: the reactor puts a slab index and a generation in it, so that an
/// event for a descriptor that was closed and reused is recognised as stale.
pub type Token = u64;

/// Which readiness a registration asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    pub const WRITE: Interest = Interest {
        read: false,
        write: true,
    };
    pub const BOTH: Interest = Interest {
        read: true,
        write: true,
    };
    pub const NONE: Interest = Interest {
        read: false,
        write: false,
    };
}

/// One readiness report. `hangup` covers a peer's close and socket errors: the next read or
/// write will say which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub token: Token,
    pub readable: bool,
    pub writable: bool,
    pub hangup: bool,
}

/// What a backend promises, declared as data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// Reports a change of readiness once (epoll with EPOLLET): the reactor must drain to EAGAIN.
    pub edge_triggered: bool,
}

impl Features {
    /// Reports a descriptor for as long as it is ready (select, poll, level-triggered epoll).
    pub const LEVEL_TRIGGERED: Features = Features {
        edge_triggered: false,
    };
}

/// A readiness multiplexer, one per thread: `&mut self` everywhere and no locks.
pub trait Poller {
    /// The name shown to users (ready line, `/stats`, `c10k backends`).
    fn name(&self) -> &'static str;
    /// Level-triggered unless the backend says otherwise.
    fn features(&self) -> Features {
        Features::LEVEL_TRIGGERED
    }
    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()>;
    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()>;
    fn deregister(&mut self, fd: RawFd) -> io::Result<()>;
    /// Waits up to `timeout` (None: forever) and appends what is ready to `events`. An interrupted
    /// wait returns with no events.
    fn poll(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()>;
    /// Syscalls made so far waiting and (re)registering, for `/stats`.
    fn counters(&self) -> PollerCounters;
}

/// Syscalls a poller has made: the cost of the I/O model itself, apart from reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollerCounters {
    pub waits: u64,
    pub ctl: u64,
    /// Realtime signals taken (sigio).
    pub signals: u64,
    /// Full poll(2) scans after the signal queue overflowed (sigio).
    pub overflow_scans: u64,
}

/// A table indexed by descriptor number, grown on demand: select and poll map fds back to tokens.
#[derive(Debug, Default)]
pub(crate) struct FdTable<T> {
    slots: Vec<Option<T>>,
}

impl<T: Copy> FdTable<T> {
    pub fn get(&self, fd: RawFd) -> Option<T> {
        self.slots.get(fd as usize).copied().flatten()
    }

    pub fn insert(&mut self, fd: RawFd, value: T) {
        let i = fd as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, None);
        }
        self.slots[i] = Some(value);
    }

    /// EEXIST if `fd` is registered already, as epoll_ctl says it.
    pub fn check_vacant(&self, fd: RawFd) -> io::Result<()> {
        match self.get(fd) {
            Some(_) => Err(io::Error::from_raw_os_error(libc::EEXIST)),
            None => Ok(()),
        }
    }

    pub fn remove(&mut self, fd: RawFd) -> Option<T> {
        self.slots.get_mut(fd as usize).and_then(Option::take)
    }
}

/// The error a backend returns for a descriptor it was never given.
pub(crate) fn not_registered(fd: RawFd) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("fd {fd} is not registered"),
    )
}

#[cfg(test)]
mod tests;
