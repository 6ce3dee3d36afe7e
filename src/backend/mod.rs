//! Readiness backends behind one small [`Poller`] trait, and the table of every I/O model.
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
    /// Changing a registration costs a syscall (epoll_ctl), so the reactor avoids needless ones.
    pub reregister_is_syscall: bool,
    /// Largest descriptor number it can watch, if bounded.
    pub max_fd: Option<usize>,
}

/// A readiness multiplexer, one per thread: `&mut self` everywhere and no locks.
pub trait Poller {
    /// The name shown to users (ready line, `/stats`, `c10k backends`).
    fn name(&self) -> &'static str;
    fn features(&self) -> Features;
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

/// Every I/O model c10k serves with. The readiness ones run on the reactor; the others have their
/// own drivers over the same protocol code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Threads,
    BusyPoll,
    Select,
    Poll,
    Epoll,
    Sigio,
    Uring,
    Pool,
    Coro,
}

/// Which loop runs a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// The shared readiness reactor over this backend's [`Poller`].
    Reactor,
    /// Blocking accept and one OS thread per connection.
    Threads,
    /// Completion-driven io_uring loop.
    Uring,
    /// A fixed pool of blocking threads fed by an accept loop through a bounded queue.
    Pool,
    /// Straight-line `async fn` per connection on c10k's own executor over epoll.
    Coro,
}

/// How a backend is presented to users.
pub struct BackendInfo {
    pub kind: BackendKind,
    pub name: &'static str,
    pub driver: Driver,
    /// Shown to learn from, not to deploy (busy polling burns a core by design).
    pub teaching: bool,
    pub model: &'static str,
    pub limits: &'static str,
}

/// In the order the classic texts teach them.
pub const BACKENDS: &[BackendInfo] = &[
    BackendInfo {
        kind: BackendKind::Threads,
        name: "threads",
        driver: Driver::Threads,
        teaching: false,
        model: "blocking I/O, one OS thread per connection",
        limits: "threads: pid_max/threads-max (32768 here, system-wide); a stack per connection (--thread-stack)",
    },
    BackendInfo {
        kind: BackendKind::BusyPoll,
        name: "busy-poll",
        driver: Driver::Reactor,
        teaching: true,
        model: "non-blocking I/O, every connection tried in turn with no multiplexing syscall",
        limits: "teaching backend: burns a whole core even when idle; O(n) reads per pass",
    },
    BackendInfo {
        kind: BackendKind::Select,
        name: "select",
        driver: Driver::Reactor,
        teaching: false,
        model: "readiness, O(highest fd) per wait: bitmaps copied in and scanned each time",
        limits: "own growable bitmaps through the raw syscall: no FD_SETSIZE (1024) cap",
    },
    BackendInfo {
        kind: BackendKind::Poll,
        name: "poll",
        driver: Driver::Reactor,
        teaching: false,
        model: "readiness, O(n) per wait: the whole pollfd array crosses into the kernel each time",
        limits: "RLIMIT_NOFILE only; cost grows with every connection, idle or not",
    },
    BackendInfo {
        kind: BackendKind::Epoll,
        name: "epoll",
        driver: Driver::Reactor,
        teaching: false,
        model: "readiness, O(ready) per wait; level-triggered, or edge-triggered with --edge",
        limits: "RLIMIT_NOFILE only",
    },
    BackendInfo {
        kind: BackendKind::Sigio,
        name: "sigio",
        driver: Driver::Reactor,
        teaching: false,
        model: "signal-driven I/O: O_ASYNC + F_SETSIG realtime signals taken with sigtimedwait",
        limits: "realtime signal queue (RLIMIT_SIGPENDING, per user): on overflow, a poll(2) scan of every connection",
    },
    BackendInfo {
        kind: BackendKind::Uring,
        name: "uring",
        driver: Driver::Uring,
        teaching: false,
        model: "completion-driven io_uring: accept, recv and send submitted as operations",
        limits: "needs Linux ≥ 5.19 for multishot accept; unavailable under seccomp or io_uring_disabled",
    },
    BackendInfo {
        kind: BackendKind::Pool,
        name: "pool",
        driver: Driver::Pool,
        teaching: false,
        model: "blocking I/O on a fixed pool of threads (--pool-threads), excess connections queued",
        limits: "a connection holds a thread for its whole keep-alive life: beyond the pool, clients wait in a bounded queue, then get 503",
    },
    BackendInfo {
        kind: BackendKind::Coro,
        name: "coro",
        driver: Driver::Coro,
        teaching: false,
        model: "coroutines: an async fn per connection on c10k's own executor over epoll (no runtime crate)",
        limits: "RLIMIT_NOFILE only; the executor adds a task and a waker per connection over plain epoll",
    },
];

impl BackendKind {
    pub fn info(self) -> &'static BackendInfo {
        BACKENDS
            .iter()
            .find(|b| b.kind == self)
            .expect("every kind is in BACKENDS")
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn from_name(name: &str) -> Option<BackendKind> {
        BACKENDS.iter().find(|b| b.name == name).map(|b| b.kind)
    }

    /// Whether this kernel supports it, and if not, why.
    pub fn probe(self) -> Result<(), String> {
        match self.info().driver {
            Driver::Reactor => self
                .create_poller(false)
                .map(drop)
                .map_err(|e| e.to_string()),
            Driver::Threads => Ok(()),
            Driver::Uring => crate::driver::uring::probe(),
            Driver::Pool | Driver::Coro => Ok(()),
        }
    }

    /// A poller for a backend the reactor drives; `edge` asks for edge-triggered where supported.
    pub fn create_poller(self, edge: bool) -> io::Result<Box<dyn Poller>> {
        Ok(match self {
            BackendKind::Select => Box::new(select::Select::new()),
            BackendKind::Poll => Box::new(poll::Poll::new()),
            BackendKind::Epoll => Box::new(epoll::Epoll::new(edge)?),
            BackendKind::BusyPoll => Box::new(busy_poll::BusyPoll::new()?),
            BackendKind::Sigio => Box::new(sigio::Sigio::new()?),
            BackendKind::Threads | BackendKind::Uring | BackendKind::Pool | BackendKind::Coro => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("{} is not a readiness backend", self.name()),
                ))
            }
        })
    }
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
