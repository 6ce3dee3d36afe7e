//! The uring driver's door: accepts (multishot into ordinary descriptors, one-shot into direct
//! ones while the ring's file table has room), admitting or refusing what they bring, pausing on
//! descriptor exhaustion, and giving direct slots back.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Instant;

use super::*;

/// The ring's file table, and how many of its slots hold connections. Accepts go there while it
/// has room, and into ordinary descriptors (a multishot accept) while it is full.
pub(super) struct DirectTable {
    pub(super) slots: u32,
    pub(super) open: u32,
}

impl Uring {
    pub(super) fn arm_accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        let listener = listener.as_raw_fd();
        let syscalls = &mut self.env.counters.syscalls;
        if let Some(table) = &self.direct {
            let free = table.slots.saturating_sub(table.open + self.direct_accepts);
            let more = free.min(DIRECT_ACCEPTS.saturating_sub(self.direct_accepts));
            for _ in 0..more {
                ring::push_accept_direct(&mut self.ring, syscalls, listener);
                self.direct_accepts += 1;
            }
        }
        if self.direct_accepts == 0 && !self.accepting {
            ring::push_accept(&mut self.ring, syscalls, listener);
            self.accepting = true;
        }
    }

    pub(super) fn cancel_accepts(&mut self) {
        let syscalls = &mut self.env.counters.syscalls;
        if self.accepting {
            ring::push_cancel(&mut self.ring, syscalls, Op::Accept, ACCEPT_REGULAR);
        }
        if self.direct_accepts > 0 {
            ring::push_cancel_all(&mut self.ring, syscalls, Op::Accept, ACCEPT_DIRECT);
        }
    }

    pub(super) fn on_accept(&mut self, token: Token, result: i32, flags: u32) {
        let direct = token == ACCEPT_DIRECT;
        if direct {
            self.direct_accepts = self.direct_accepts.saturating_sub(1);
        } else if !cqueue::more(flags) {
            self.accepting = false;
        }
        if result >= 0 {
            self.env.counters.syscalls.uring_accepts += 1;
            // Also after shutdown began: the client connected before the accept was cancelled,
            // and is served (drained) rather than reset.
            let fd = match self.direct.as_mut() {
                Some(table) if direct => {
                    table.open += 1;
                    ConnFd::Direct(result as u32)
                }
                // TCP_NODELAY comes from the listener (see `run`).
                _ => ConnFd::Regular(ring::adopt_fd(result)),
            };
            self.admit(fd);
        } else if direct && result == -libc::ENFILE {
            // Not expected: no more direct accepts are armed than free slots.
            log::warn!("accept: the direct descriptor table is full; a connection was lost");
        } else {
            let e = io::Error::from_raw_os_error(-result);
            if sys::is_fd_exhaustion(&e) {
                self.pause_accepting(&e);
            } else if result != -libc::ECANCELED {
                log::debug!("accept: {e}");
            }
        }
        let accepting = self.accepting || self.direct_accepts > 0;
        if !accepting && self.shutdown_deadline.is_some() {
            // The accept has ended: clients connecting from now on are refused by the kernel
            // instead of waiting in a backlog nobody will take.
            self.listener = None;
        }
        if self.accept_paused_until.is_none() && self.shutdown_deadline.is_none() {
            // Re-arms what has ended (only what is missing).
            self.arm_accept();
        }
    }

    pub(super) fn admit(&mut self, fd: ConnFd) {
        self.env.counters.connections_total += 1;
        if self.conns.len() >= self.options.max_conns {
            match fd {
                ConnFd::Regular(fd) => {
                    kit::refuse(fd.as_raw_fd(), self.options.config.proto, &mut self.env)
                }
                ConnFd::Direct(slot) => self.refuse_direct(slot),
            }
            log::debug!(
                "refused a connection: {} open, --max-conns {}",
                self.conns.len(),
                self.options.max_conns
            );
            return;
        }
        let mut session = Session::new(self.options.config.proto).with_lent_output();
        let drained = self.shutdown_deadline.is_some();
        if drained {
            session.drain();
        }
        let now = self.clock.now_ms;
        let token = self.conns.insert(UringConn::new(fd, session, now, drained));
        self.env.counters.connections_current += 1;
        self.env.publish();
        self.pump(token);
    }

    /// A connection over `--max-conns` on a direct descriptor: as `kit::refuse`, but the 503 is
    /// an operation of the ring, and the descriptor is closed once it has completed.
    pub(super) fn refuse_direct(&mut self, slot: u32) {
        self.env.counters.connections_refused += 1;
        let refusal = Session::refusal(self.options.config.proto, &self.env);
        if refusal.is_empty() {
            return self.close_direct(slot);
        }
        self.env.counters.syscalls.uring_sends += 1;
        self.env.publish();
        let token = self.refusals.insert((slot, refusal));
        let Some((_, data)) = self.refusals.get_mut(token) else {
            unreachable!("just inserted");
        };
        // SAFETY: the send reads the refusal's heap buffer, which stays in `refusals`, neither
        // changed nor freed, until the send's completion (`on_refusal_sent`) removes it; the
        // loop does not free `refusals` while any is left (see `run`).
        unsafe {
            ring::push_send(
                &mut self.ring,
                &mut self.env.counters.syscalls,
                &ConnFd::Direct(slot),
                data,
                Op::Refusal,
                token,
            )
        };
    }

    pub(super) fn on_refusal_sent(&mut self, token: Token, result: i32) {
        let Some((slot, _)) = self.refusals.remove(token) else {
            return;
        };
        if result > 0 {
            self.env.counters.bytes_out += result as u64;
        }
        ring::push_shutdown_then_close(&mut self.ring, &mut self.env.counters.syscalls, slot);
        self.direct_slot_freed();
    }

    /// Out of descriptors: stop accepting until a connection closes or a short pause has passed.
    pub(super) fn pause_accepting(&mut self, error: &io::Error) {
        self.exhaustion.warn(format_args!(
            "accept: {error}; pausing accepts, serving the {} open connections",
            self.conns.len()
        ));
        let now = Instant::now();
        if self.accepting {
            // Only the accept into ordinary descriptors: direct ones need none.
            self.cancel(Op::Accept, ACCEPT_REGULAR);
        }
        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
    }

    pub(super) fn resume_accepting(&mut self) {
        self.accept_paused_until = None;
        if self.shutdown_deadline.is_none() {
            self.arm_accept();
        }
    }

    /// Closes a direct descriptor whose connection has no operation in flight.
    pub(super) fn close_direct(&mut self, slot: u32) {
        ring::push_close_direct(&mut self.ring, &mut self.env.counters.syscalls, slot);
        self.direct_slot_freed();
    }

    /// A direct descriptor's close is queued: its slot counts as free again.
    pub(super) fn direct_slot_freed(&mut self) {
        if let Some(table) = self.direct.as_mut() {
            table.open = table.open.saturating_sub(1);
        }
        if self.accept_paused_until.is_none() && self.shutdown_deadline.is_none() {
            // A free slot: one more accept into it.
            self.arm_accept();
        }
    }
}
