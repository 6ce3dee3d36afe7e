//! The executor's reactor: epoll (edge-triggered) and, per registered descriptor, the readiness
//! we believe in and the wakers of the task waiting for it.
//!
//! Invariants:
//! - Each descriptor is registered once, for both directions, with EPOLLET: changing what a task
//!   waits for costs no epoll_ctl. Readiness is remembered here until a syscall says EAGAIN.
//! - A read shorter than asked, with no hang-up seen, also clears read readiness: any byte or FIN
//!   that arrives later raises a new edge, so the EAGAIN read is saved (as the level-triggered
//!   reactor saves it). A hang-up keeps the descriptor readable until the read that returns 0.
//! - A source's token carries its slot's generation, so an event for a descriptor that was
//!   closed (and whose number was reused) in the same batch wakes nobody.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::backend::epoll::Epoll;
use crate::backend::{Event, Interest, Poller, PollerCounters};
use crate::driver::kit::{Slab, Token};
use crate::sys;

#[derive(Default)]
struct Source {
    readable: bool,
    writable: bool,
    hangup: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

pub struct IoDriver {
    poller: Epoll,
    sources: Slab<Source>,
    events: Vec<Event>,
}

/// The I/O driver as tasks and the executor share it.
pub type SharedIo = Rc<RefCell<IoDriver>>;

impl IoDriver {
    pub fn new() -> io::Result<IoDriver> {
        Ok(IoDriver {
            poller: Epoll::new(true)?,
            sources: Slab::default(),
            events: Vec::with_capacity(1024),
        })
    }

    pub fn counters(&self) -> PollerCounters {
        self.poller.counters()
    }

    /// One epoll_wait; wakes the tasks waiting on what became ready.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let result = self.poller.poll(&mut events, timeout);
        for event in &events {
            let Some(source) = self.sources.get_mut(event.token) else {
                continue; // stale: closed since
            };
            source.hangup |= event.hangup;
            if event.readable || event.hangup {
                source.readable = true;
                if let Some(w) = &source.reader {
                    w.wake_by_ref();
                }
            }
            if event.writable || event.hangup {
                source.writable = true;
                if let Some(w) = &source.writer {
                    w.wake_by_ref();
                }
            }
        }
        self.events = events;
        result
    }

    /// Wakes every task waiting to read (at shutdown: idle connections then see the flag).
    pub fn wake_all_readers(&self) {
        for waker in self.sources.values().filter_map(|s| s.reader.as_ref()) {
            waker.wake_by_ref();
        }
    }
}

/// A descriptor registered with the executor's epoll; deregistered on drop. It does not own the
/// descriptor: its owner must drop it first (declare it after the descriptor).
pub struct Registration {
    fd: RawFd,
    token: Token,
    io: SharedIo,
}

impl Registration {
    /// Registers `fd` for both directions, edge-triggered. It starts out readable and writable
    /// (optimistic): a new connection's request may already be there, and EAGAIN corrects us.
    pub fn new(shared: &SharedIo, fd: RawFd) -> io::Result<Registration> {
        let mut io = shared.borrow_mut();
        let token = io.sources.insert(Source {
            readable: true,
            writable: true,
            ..Source::default()
        });
        if let Err(e) = io.poller.register(fd, token, Interest::BOTH) {
            io.sources.remove(token);
            return Err(e);
        }
        Ok(Registration {
            fd,
            token,
            io: Rc::clone(shared),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    fn with<R>(&self, f: impl FnOnce(&mut Source) -> R) -> R {
        let mut io = self.io.borrow_mut();
        let source = io
            .sources
            .get_mut(self.token)
            .expect("a live registration has its source");
        f(source)
    }

    pub fn read_ready(&self) -> bool {
        self.with(|s| s.readable)
    }

    /// Ready to read, or Pending with the task's waker kept for the next edge.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.with(|s| {
            if s.readable {
                return Poll::Ready(());
            }
            keep_waker(&mut s.reader, cx);
            Poll::Pending
        })
    }

    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.with(|s| {
            if s.writable {
                return Poll::Ready(());
            }
            keep_waker(&mut s.writer, cx);
            Poll::Pending
        })
    }

    /// Says EAGAIN was seen on reading: wait for the next edge.
    pub fn clear_read_ready(&self) {
        self.with(|s| s.readable = false);
    }

    /// `read_append` that keeps the readiness flag true to what the kernel said.
    pub fn read_append(&self, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
        let result = sys::read_append(self.fd, buf, want);
        match &result {
            Ok(n) if *n > 0 && *n < want => self.with(|s| {
                if !s.hangup {
                    s.readable = false;
                }
            }),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.clear_read_ready(),
            _ => {}
        }
        result
    }

    pub fn send(&self, data: &[u8]) -> io::Result<usize> {
        let result = sys::send(self.fd, data);
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.with(|s| s.writable = false);
        }
        result
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut io = self.io.borrow_mut();
        if let Err(e) = io.poller.deregister(self.fd) {
            log::debug!("deregister fd {}: {e}", self.fd);
        }
        io.sources.remove(self.token);
    }
}

/// Keeps the waker of the task that waits, cloning it only when it is another one.
fn keep_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Waits until the registration is readable.
pub async fn readable(reg: &Registration) {
    std::future::poll_fn(|cx| reg.poll_read_ready(cx)).await
}
