//! The table of every I/O model c10k serves with, as data: one entry each, with its name, what
//! it is, its limits, and how it is probed and served — the shape of libevent's `eventop` table.
//! `server.rs` dispatches through it, `c10k backends` prints it, and loadgen's `compare` reads it.
//!
//! Adding a model: a variant of [`BackendKind`] and its entry in [`BACKENDS`]. A readiness model
//! gives a [`Poller`] constructor and runs on the shared reactor; any other gives its own probe
//! and serve functions (a loop in `driver/`).

use std::io;
use std::os::fd::OwnedFd;

use nix::sys::signalfd::SignalFd;

use crate::backend::{busy_poll, epoll, poll, select, sigio, Poller};
use crate::driver::reactor::Reactor;
use crate::driver::{self, DriverOptions};
use crate::stats::Counters;

/// How a model is run.
#[derive(Clone, Copy)]
pub enum Run {
    /// On the shared readiness reactor, over a poller made by this (`edge`: edge-triggered
    /// where the poller supports it).
    Reactor(fn(edge: bool) -> io::Result<Box<dyn Poller>>),
    /// By a driver of its own.
    Own {
        /// Whether this kernel supports it, and if not, why.
        probe: fn() -> Result<(), String>,
        serve: fn(OwnedFd, SignalFd, &DriverOptions) -> io::Result<Counters>,
    },
}

/// For models that every Linux supports.
fn always() -> Result<(), String> {
    Ok(())
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

/// How a backend is presented to users.
pub struct BackendInfo {
    pub kind: BackendKind,
    pub name: &'static str,
    pub run: Run,
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
        run: Run::Own {
            probe: always,
            serve: driver::threads::run,
        },
        teaching: false,
        model: "blocking I/O, one OS thread per connection",
        limits: "threads: pid_max/threads-max (32768 here, system-wide); a stack per connection (--thread-stack)",
    },
    BackendInfo {
        kind: BackendKind::BusyPoll,
        name: "busy-poll",
        run: Run::Reactor(|_| Ok(Box::new(busy_poll::BusyPoll::new()?))),
        teaching: true,
        model: "non-blocking I/O, every connection tried in turn with no multiplexing syscall",
        limits: "teaching backend: burns a whole core even when idle; O(n) reads per pass",
    },
    BackendInfo {
        kind: BackendKind::Select,
        name: "select",
        run: Run::Reactor(|_| Ok(Box::new(select::Select::new()))),
        teaching: false,
        model: "readiness, O(highest fd) per wait: bitmaps copied in and scanned each time",
        limits: "own growable bitmaps through the raw syscall: no FD_SETSIZE (1024) cap",
    },
    BackendInfo {
        kind: BackendKind::Poll,
        name: "poll",
        run: Run::Reactor(|_| Ok(Box::new(poll::Poll::new()))),
        teaching: false,
        model: "readiness, O(n) per wait: the whole pollfd array crosses into the kernel each time",
        limits: "RLIMIT_NOFILE only; cost grows with every connection, idle or not",
    },
    BackendInfo {
        kind: BackendKind::Epoll,
        name: "epoll",
        run: Run::Reactor(|edge| Ok(Box::new(epoll::Epoll::new(edge)?))),
        teaching: false,
        model: "readiness, O(ready) per wait; level-triggered, or edge-triggered with --edge",
        limits: "RLIMIT_NOFILE only",
    },
    BackendInfo {
        kind: BackendKind::Sigio,
        name: "sigio",
        run: Run::Reactor(|_| Ok(Box::new(sigio::Sigio::new()?))),
        teaching: false,
        model: "signal-driven I/O: O_ASYNC + F_SETSIG realtime signals taken with sigtimedwait",
        limits: "realtime signal queue (RLIMIT_SIGPENDING, per user): on overflow, a poll(2) scan of every connection",
    },
    BackendInfo {
        kind: BackendKind::Uring,
        name: "uring",
        run: Run::Own {
            probe: driver::uring::probe,
            serve: driver::uring::run,
        },
        teaching: false,
        model: "completion-driven io_uring: accept, recv and send submitted as operations",
        limits: "needs Linux ≥ 5.19 for multishot accept; unavailable under seccomp or io_uring_disabled",
    },
    BackendInfo {
        kind: BackendKind::Pool,
        name: "pool",
        run: Run::Own {
            probe: always,
            serve: driver::pool::run,
        },
        teaching: false,
        model: "half-sync/half-async: one epoll loop owns the sockets and reads each request; --pool-threads workers run the protocol",
        limits: "at most 256 requests per worker waiting or being served: beyond, that request gets 503 and its connection closes (echo: closed)",
    },
    BackendInfo {
        kind: BackendKind::Coro,
        name: "coro",
        run: Run::Own {
            probe: always,
            serve: driver::coro::run,
        },
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
        match self.info().run {
            Run::Reactor(new_poller) => new_poller(false).map(drop).map_err(|e| e.to_string()),
            Run::Own { probe, .. } => probe(),
        }
    }

    /// Serves with this model until SIGINT/SIGTERM and the grace period; returns the counters.
    pub fn serve(
        self,
        listener: OwnedFd,
        signals: SignalFd,
        options: &DriverOptions,
    ) -> io::Result<Counters> {
        match self.info().run {
            Run::Reactor(new_poller) => {
                let poller = new_poller(options.config.edge)?;
                Reactor::new(poller, listener, Some(signals), options.clone())?
                    .with_blocking_offload(options.config.offload)?
                    .run()
            }
            Run::Own { serve, .. } => serve(listener, signals, options),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_is_named_and_found_by_name() {
        for b in BACKENDS {
            assert_eq!(BackendKind::from_name(b.name), Some(b.kind));
            assert_eq!(b.kind.name(), b.name);
        }
        assert_eq!(BackendKind::from_name("kqueue"), None);
    }

    #[test]
    fn readiness_models_probe_by_making_their_poller() {
        for b in BACKENDS {
            if let Run::Reactor(new_poller) = b.run {
                let poller = new_poller(false).expect("a poller");
                assert_eq!(poller.name(), b.name);
            }
        }
    }
}
