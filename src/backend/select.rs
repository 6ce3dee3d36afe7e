//! select(2) over bitmaps of our own, grown with the highest descriptor: glibc's FD_SET aborts the
//! process for fd ≥ FD_SETSIZE (1024), but the kernel takes as many bits as `nfds` says, so c10k
//! can show select's real cost at 10,000 connections instead of refusing them.
//!
//! Invariant: bit `fd` of `want_read`/`want_write` is set exactly when `fd` is registered with
//! that interest, `tokens` maps every registered fd to its token, and `max_fd` bounds them all.
//! Each wait copies the bitmaps (the kernel overwrites its arguments) and scans 0..=max_fd:
//! O(highest descriptor) per wait, idle or not. Level-triggered only.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{not_registered, Event, FdTable, Interest, Poller, PollerCounters, Token};
use crate::sys;

#[derive(Default)]
pub struct Select {
    want_read: Vec<u64>,
    want_write: Vec<u64>,
    ready_read: Vec<u64>,
    ready_write: Vec<u64>,
    tokens: FdTable<Token>,
    /// One past the highest registered descriptor (select's `nfds`).
    nfds: usize,
    registered: usize,
    counters: PollerCounters,
}

impl Select {
    pub fn new() -> Select {
        Select::default()
    }

    fn set_bits(&mut self, fd: RawFd, interest: Interest) {
        let (word, bit) = (fd as usize / 64, 1u64 << (fd as usize % 64));
        if word >= self.want_read.len() {
            self.want_read.resize(word + 1, 0);
            self.want_write.resize(word + 1, 0);
        }
        let set = |words: &mut Vec<u64>, on: bool| {
            if on {
                words[word] |= bit;
            } else {
                words[word] &= !bit;
            }
        };
        set(&mut self.want_read, interest.read);
        set(&mut self.want_write, interest.write);
    }
}

fn bit_is_set(words: &[u64], fd: usize) -> bool {
    words[fd / 64] & (1u64 << (fd % 64)) != 0
}

impl Poller for Select {
    fn name(&self) -> &'static str {
        "select"
    }

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        if fd < 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        self.tokens.check_vacant(fd)?;
        self.tokens.insert(fd, token);
        self.set_bits(fd, interest);
        self.nfds = self.nfds.max(fd as usize + 1);
        self.registered += 1;
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        if self.tokens.get(fd).is_none() {
            return Err(not_registered(fd));
        }
        self.tokens.insert(fd, token);
        self.set_bits(fd, interest);
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        self.tokens.remove(fd).ok_or_else(|| not_registered(fd))?;
        self.set_bits(fd, Interest::NONE);
        self.registered -= 1;
        // Shrink nfds past trailing unregistered descriptors so the scan does not keep paying for
        // a connection that has gone.
        while self.nfds > 0 && self.tokens.get(self.nfds as RawFd - 1).is_none() {
            self.nfds -= 1;
        }
        Ok(())
    }

    fn poll(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        self.counters.waits += 1;
        let words = self.nfds.div_ceil(64);
        self.ready_read.clear();
        self.ready_read.extend_from_slice(&self.want_read[..words]);
        self.ready_write.clear();
        self.ready_write
            .extend_from_slice(&self.want_write[..words]);
        let mut ready = sys::select(
            self.nfds,
            &mut self.ready_read,
            &mut self.ready_write,
            timeout,
        )?;
        for fd in 0..self.nfds {
            if ready == 0 {
                break;
            }
            let readable = bit_is_set(&self.ready_read, fd);
            let writable = bit_is_set(&self.ready_write, fd);
            if !(readable || writable) {
                continue;
            }
            // select counts a descriptor once per set it is ready in.
            ready = ready.saturating_sub(readable as usize + writable as usize);
            if let Some(token) = self.tokens.get(fd as RawFd) {
                events.push(Event {
                    token,
                    readable,
                    writable,
                    hangup: false,
                });
            }
        }
        Ok(())
    }

    fn counters(&self) -> PollerCounters {
        self.counters
    }
}
