//! One io_uring connection: its state, and what it does between completions that needs no ring.

use super::ring::ConnFd;
use crate::driver::kit::{self, Stamps, Timed};
use crate::driver::{LoopEnv, Timeouts, NEVER};
use crate::proto::{Session, OUTPUT_HIGH_WATER};

/// Lent buffers kept for reuse, and the largest one worth keeping.
const SPARE_BUFFERS: usize = 64;
const SPARE_MAX_CAPACITY: usize = 256 * 1024;
/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Serving,
    /// Output flushed and write side shut down; input is received and discarded until EOF or
    /// the deadline.
    Lingering,
}

pub(super) struct UringConn {
    pub(super) fd: ConnFd,
    pub(super) session: Session,
    /// Received and not yet consumed. Empty and unallocated while idle.
    pub(super) input: Vec<u8>,
    /// Produced and not yet sent: `output[sent..]`. While `send_armed`, the kernel reads it.
    pub(super) output: Vec<u8>,
    pub(super) sent: usize,
    pub(super) recv_armed: bool,
    pub(super) send_armed: bool,
    /// A shutdown of the writing side of its direct descriptor is in flight.
    pub(super) shutdown_armed: bool,
    /// The (multishot) recv in flight has been asked to stop; cleared by its last completion.
    pub(super) recv_cancelled: bool,
    pub(super) peer_eof: bool,
    pub(super) phase: Phase,
    /// Closed as far as the protocol is concerned; freed once no operation is in flight.
    pub(super) closing: bool,
    /// The session has been told that the server is shutting down.
    pub(super) drained: bool,
    /// `--offload`: the session is with a helper (blocking work); this one is a placeholder.
    pub(super) away: bool,
    pub(super) lingered: usize,
    pub(super) stamps: Stamps,
}

impl Timed for UringConn {
    fn stamps(&mut self) -> &mut Stamps {
        &mut self.stamps
    }

    fn deadline(&self, timeouts: &Timeouts) -> u64 {
        if self.away {
            return NEVER; // being answered; set again when the session is back
        }
        self.stamps.deadline(timeouts, self.unsent())
    }

    fn closing(&self) -> bool {
        self.closing
    }
}

impl UringConn {
    /// Accepted at `now` (loop-clock ms); `drained`: during shutdown, its session already knows.
    pub(super) fn new(fd: ConnFd, session: Session, now: u64, drained: bool) -> UringConn {
        UringConn {
            fd,
            stamps: Stamps::new(now, session.awaiting_head()),
            session,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            recv_armed: false,
            send_armed: false,
            shutdown_armed: false,
            recv_cancelled: false,
            peer_eof: false,
            phase: Phase::Serving,
            closing: false,
            lingered: 0,
            drained,
            away: false,
        }
    }

    pub(super) fn pending_output(&self) -> usize {
        self.output.len() - self.sent
    }

    /// Output waits to be sent: in the buffer, or lent by the session (a `/bytes` body sent
    /// from static memory, see [`Session::static_output`]).
    pub(super) fn unsent(&self) -> bool {
        self.pending_output() > 0 || !self.session.static_output().is_empty()
    }

    pub(super) fn is_idle(&self) -> bool {
        !self.away
            && self.input.is_empty()
            && self.pending_output() == 0
            && !self.send_armed
            && !self.session.has_pending_output()
    }
}

/// Lets the protocol turn buffered input (or a streamed body) into output while there is room.
/// Called only while no send is in flight: `advance` may move the output buffer. Blocking work
/// runs here, stalling the ring, unless `offloading` (then it stops there, for the caller to
/// hand off).
pub(super) fn produce(
    conn: &mut UringConn,
    env: &mut LoopEnv,
    spare: &mut Vec<Vec<u8>>,
    offloading: bool,
) {
    loop {
        // A lent window is a full buffer: it is sent, not copied, before anything else is made.
        let room =
            conn.pending_output() < OUTPUT_HIGH_WATER && conn.session.static_output().is_empty();
        if !room || (conn.input.is_empty() && !conn.session.has_pending_output()) {
            return;
        }
        if conn.output.capacity() == 0 {
            conn.output = spare.pop().unwrap_or_default();
        } else if conn.sent > 0 {
            // The protocol measures `output.len()` against the high-water mark.
            conn.output.drain(..conn.sent);
            conn.sent = 0;
        }
        let before = conn.output.len();
        let requests_before = env.counters.requests;
        let consumed = conn.session.advance(&conn.input, &mut conn.output, env);
        conn.input.drain(..consumed);
        if conn.session.blocking_work().is_some() {
            if offloading {
                env.publish();
                return;
            }
            kit::run_blocking_inline(&mut conn.session, &mut conn.output, env);
        }
        if conn.drained {
            env.counters.shutdown_answered += env.counters.requests - requests_before;
        }
        if consumed > 0 {
            // A request head ended; if another has begun behind it, its clock starts now.
            conn.stamps.head_started = NEVER;
        }
        // Published before the response is sent, so that `/stats` on another worker already
        // counts a request whose response the client has seen.
        env.publish();
        if consumed == 0 && conn.output.len() == before {
            return;
        }
    }
}

/// Returns lent buffers to the pool when the connection no longer needs them.
pub(super) fn give_back_buffers(conn: &mut UringConn, spare: &mut Vec<Vec<u8>>) {
    let output_free = conn.pending_output() == 0 && !conn.send_armed;
    let input_free = conn.input.is_empty();
    for (buf, free) in [
        (&mut conn.input, input_free),
        (&mut conn.output, output_free),
    ] {
        if free && buf.capacity() > 0 {
            let mut taken = std::mem::take(buf);
            if spare.len() < SPARE_BUFFERS && taken.capacity() <= SPARE_MAX_CAPACITY {
                taken.clear();
                spare.push(taken);
            }
        }
    }
    if output_free {
        conn.sent = 0;
    }
}
