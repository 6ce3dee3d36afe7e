//! io_uring: completion-driven. Accept, recv and send are submitted as operations and the loop
//! reacts to their completions; nothing here asks "is it ready?".
//!
//! Invariants this driver keeps:
//! - Memory the kernel may write to or read from stays alive until the operation's completion has
//!   been reaped. Receives use one provided-buffer ring shared by every connection (the kernel
//!   picks a buffer only when data arrives, so idle connections own no buffer); the data is copied
//!   out and the buffer handed back at once. A send points into the connection's output, which is
//!   neither touched nor freed while that send is in flight. A closed connection stays in the slab,
//!   its operations cancelled, until the completions of all of them have arrived.
//! - At most one recv and one send per connection are in flight. The protocol is advanced only
//!   while no send is in flight (its output must not move), and recv is armed only while the
//!   output is under the protocol's high-water mark (and, while sending, only while little input is
//!   buffered): a client that does not read stops being read from. With a DEFER_TASKRUN ring the
//!   recv is multishot: it stays armed across requests (one SQE per connection, not per request)
//!   and is cancelled when one of those conditions stops holding; what arrives before the
//!   cancellation lands is kept.
//! - Every `user_data` carries the operation's kind, the connection's slab index and the slot's
//!   generation; completions for a slot that has moved on are dropped (a buffer they carry is still
//!   handed back to the ring).
//! - Timeouts (header, idle, write stall, linger) are one lazily checked deadline per connection
//!   in a heap, computed from its state as in the reactor; the wait is bounded by the earliest.
//! - Lent output (a `/bytes` body, [`Session::static_output`]) is sent once the output buffer is
//!   flushed, straight from the static memory the session lends: no copy, no buffer. While a
//!   session lends, it counts as a full output buffer: nothing more is produced and no recv is
//!   armed.
//! - Accepted sockets stay blocking, on purpose. io_uring issues every recv and send first with
//!   MSG_DONTWAIT whatever the socket's flags, and on EAGAIN arms an internal poll and retries from
//!   the ring's own task work when the socket is ready (IORING_FEAT_FAST_POLL, required by
//!   [`probe`]): no io-wq worker thread is spent on a waiting socket either way. What O_NONBLOCK
//!   would change is the retry: `sendmsg`/`recvmsg` OR MSG_DONTWAIT into an O_NONBLOCK file's
//!   flags, so a retry that still finds the socket not ready, or one punted to io-wq, completes
//!   with -EAGAIN, and we would re-arm it ourselves: a completion and an SQE for nothing, now and
//!   then, under load (liburing issue 364, seastar PR 3479). Blocking sockets leave the waiting to
//!   the kernel. IORING_RECVSEND_POLL_FIRST is not used: a keep-alive recv usually finds no data
//!   and pays one failed attempt, but a pipelined or streaming one usually finds it at once. The
//!   few direct syscalls on these sockets (the 503 of a refusal into an empty send buffer,
//!   shutdown) never block. The listener is blocking for the same reason.
//! - Counted in `/stats`: `uring_ops` (SQEs queued; `uring_recvs`, `uring_sends` and
//!   `uring_accepts` by purpose), `completions` (CQEs reaped), `waits` (io_uring_enter calls,
//!   the syscalls that carry them: none of the operations counts as a syscall), and `recv_rearms` (recvs the kernel ended without data: ENOBUFS when
//!   the buffer ring ran dry, EAGAIN, EINTR).
//! - Signals arrive through the ring too (a poll on the signalfd), so shutdown is one more
//!   completion. Then (RFC 9112 §9.6): the listener stops listening (`shutdown(SHUT_RD)`) and
//!   the accept is cancelled, connections it still delivers are served, and the listener is
//!   closed once it has ended; every session is drained
//!   ([`Session::drain`]): the response in progress or the next one is its last, with `Connection:
//!   close`, then writing is shut down and input drained (linger) so the client reads the response,
//!   not a reset. Idle keep-alive connections keep their recv armed for the drain window
//!   (`--keepalive-drain`), since closing them at once would race with a request on
//!   its way; when it ends, those with nothing pending are closed. Whatever is left at the end of
//!   the grace period is cancelled.

mod accept;
mod conn;
mod offload;
mod ring;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::{cqueue, IoUring};
use nix::sys::signalfd::SignalFd;

use self::accept::DirectTable;
use self::conn::{give_back_buffers, produce, Phase, UringConn};
/// Shared with loadgen's io_uring engine, which receives the same way.
pub use self::ring::BufRing;
use self::ring::{decode, ConnFd, Op, Setup, ACCEPT_DIRECT, ACCEPT_REGULAR, BUF_GROUP, BUF_SIZE};
pub use self::ring::{probe, submit_and_wait, submit_and_wait_for};

use super::kit::{
    self, Deadlines, RateLimitedLog, Slab, Timed, Token, ACCEPT_PAUSE, LINGER_BYTES, LINGER_TIME,
    MAX_BUFFERED_INPUT,
};
use super::{Clock, DriverOptions, LoopEnv, Timeouts, NEVER};
use crate::proto::{Session, Status, OUTPUT_HIGH_WATER};
use crate::stats::{self, Counters};
use crate::sys;

/// Submission queue size; the completion queue is bigger so that 10,000 connections' recvs fit.
const SQ_ENTRIES: u32 = 4096;
const CQ_ENTRIES: u32 = 16384;
/// While a send is in flight the protocol cannot run; receive no more than this meanwhile.
const INPUT_WHILE_SENDING: usize = 64 * 1024;
/// One-shot accepts into direct descriptors kept in flight (while the table has that many free).
const DIRECT_ACCEPTS: u32 = 64;
/// After the grace period, how long to wait for the cancelled operations' completions.
const CANCEL_WAIT: Duration = Duration::from_secs(1);

/// Serves until SIGINT/SIGTERM and the end of the grace period; returns the counters.
pub fn run(listener: OwnedFd, signals: SignalFd, options: &DriverOptions) -> io::Result<Counters> {
    // A blocking listener: io_uring then waits for connections itself instead of completing the
    // accept with EAGAIN.
    sys::set_nonblocking(listener.as_raw_fd(), false)?;
    // Accepted sockets inherit TCP_NODELAY from the listener (see sys::set_nodelay for why it
    // is wanted): direct descriptors, which take no plain setsockopt, get it too, and no accept
    // costs a syscall for it. Not fatal, as it is not for the other backends' accepts.
    if let Err(e) = sys::set_nodelay(listener.as_raw_fd()) {
        log::warn!("TCP_NODELAY on the listener: {e}; accepted sockets keep Nagle");
    }
    let (ring, setup) = ring::new_ring(SQ_ENTRIES, CQ_ENTRIES)?;
    let multishot_recv = setup == Setup::DeferTaskrun;
    let direct = if options.config.uring_direct {
        // The kernel caps one table at RLIMIT_NOFILE; past it, accepts take ordinary descriptors.
        let slots = sys::nofile_limit().min(options.max_conns as u64).max(1) as u32;
        ring::register_direct_table(&ring, slots)?;
        log::info!("io_uring: {slots} direct descriptors");
        Some(DirectTable { slots, open: 0 })
    } else {
        None
    };
    let bufs = BufRing::new(
        &ring,
        ring::buf_count(options.max_conns),
        BUF_SIZE,
        BUF_GROUP,
    )?;
    let mut driver = Uring {
        ring,
        bufs,
        multishot_recv,
        direct,
        direct_accepts: 0,
        refusals: Slab::default(),
        conns: Slab::default(),
        env: LoopEnv::configured("uring", options),
        options: options.clone(),
        listener: Some(listener),
        signals,
        accepting: false,
        accept_paused_until: None,
        shutdown_deadline: None,
        drain_until: None,
        timers: Deadlines::default(),
        clock: Clock::new(),
        timeouts: Timeouts::from_options(options),
        starved: Vec::new(),
        spare: Vec::new(),
        completed: Vec::with_capacity(1024),
        exhaustion: RateLimitedLog::default(),
        offload: options
            .config
            .offload
            .map(|n| offload::UringOffload::start(n, options.config.thread_stack_kib))
            .transpose()?,
    };
    driver.arm_accept();
    driver.arm_signals();
    if let Some(helpers) = &driver.offload {
        helpers.arm(&mut driver.ring, &mut driver.env.counters.syscalls);
    }
    driver.run()
}

struct Uring {
    /// Declared first so that it is dropped first, before any memory it was given.
    ring: IoUring,
    bufs: BufRing,
    /// Receives are multishot (see [`Setup::DeferTaskrun`]): armed once, cancelled when the
    /// connection must stop reading.
    multishot_recv: bool,
    /// With `--uring-direct`: the ring's table of direct descriptors.
    direct: Option<DirectTable>,
    /// One-shot accepts into direct descriptors in flight.
    direct_accepts: u32,
    /// 503s in flight to connections refused on direct descriptors: (slot, response).
    refusals: Slab<(u32, Vec<u8>)>,
    conns: Slab<UringConn>,
    env: LoopEnv,
    options: DriverOptions,
    /// Closed once the accept has ended after shutdown began.
    listener: Option<OwnedFd>,
    signals: SignalFd,
    /// A multishot accept (into ordinary descriptors) is in flight.
    accepting: bool,
    accept_paused_until: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    /// While shutting down: when the drain window of idle connections ends (None once it has).
    drain_until: Option<Instant>,
    timers: Deadlines,
    clock: Clock,
    timeouts: Timeouts,
    /// Connections whose recv found the buffer ring empty (ENOBUFS): re-armed after this batch.
    starved: Vec<Token>,
    /// Input and output buffers lent to connections while they need them.
    spare: Vec<Vec<u8>>,
    completed: Vec<(u64, i32, u32)>,
    exhaustion: RateLimitedLog,
    /// `--offload N`: the helper threads that run blocking work.
    offload: Option<offload::UringOffload>,
}

impl Uring {
    fn run(mut self) -> io::Result<Counters> {
        loop {
            let timeout = self.next_timeout();
            self.wait(timeout)?;
            self.env.date.refresh();
            self.clock.tick();
            self.reap();
            for token in std::mem::take(&mut self.starved) {
                self.pump(token);
            }
            self.run_timers();
            self.end_drain_window();
            if self.shutdown_deadline.is_some() && self.finish_shutdown() {
                break;
            }
        }
        let counters = self.env.counters;
        log::info!("{}", stats::summary_line(self.env.backend, &counters));
        if !self.conns.is_empty() || !self.refusals.is_empty() {
            // Operations the kernel did not complete in time may still point into connection
            // buffers or the buffer ring: leak them rather than free memory it may still write.
            log::warn!(
                "{} connections still had operations in flight at exit",
                self.conns.len()
            );
            std::mem::forget(self);
        }
        Ok(counters)
    }

    /// One io_uring_enter: submits what is queued and waits for a completion (or the timeout).
    /// Recycled receive buffers go back into the ring first.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.bufs.top_up(self.conns.len());
        self.env.counters.syscalls.waits += 1;
        submit_and_wait(&self.ring, timeout)
    }

    fn next_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        [
            self.timers.next().map(|at| self.clock.instant(at)),
            self.accept_paused_until,
            self.shutdown_deadline,
            self.drain_until,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now))
    }

    fn reap(&mut self) {
        let mut batch = std::mem::take(&mut self.completed);
        batch.clear();
        batch.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        self.env.counters.syscalls.completions += batch.len() as u64;
        for &(data, result, flags) in &batch {
            if data == offload::WAKE {
                self.on_offload_done();
                continue;
            }
            let (op, token) = decode(data);
            match op {
                Some(Op::Accept) => self.on_accept(token, result, flags),
                Some(Op::Refusal) => self.on_refusal_sent(token, result),
                Some(Op::Signals) => self.on_signals(),
                Some(Op::Recv) => self.on_recv(token, result, flags),
                Some(Op::Send) => self.on_send(token, result),
                Some(Op::ShutdownWrite) => self.on_shutdown_write(token),
                Some(Op::Cancel | Op::Cleanup) | None => {}
            }
        }
        self.completed = batch;
    }

    // ---- submissions -------------------------------------------------------------------------

    fn arm_signals(&mut self) {
        let syscalls = &mut self.env.counters.syscalls;
        ring::push_signals(&mut self.ring, syscalls, self.signals.as_raw_fd());
    }

    fn cancel(&mut self, op: Op, token: Token) {
        ring::push_cancel(&mut self.ring, &mut self.env.counters.syscalls, op, token);
    }

    // ---- completions -------------------------------------------------------------------------

    fn on_signals(&mut self) {
        if kit::take_stop_signals(&mut self.signals, &mut self.env.counters) {
            self.begin_shutdown();
        }
        self.arm_signals();
    }

    fn on_recv(&mut self, token: Token, result: i32, flags: u32) {
        let buffer = cqueue::buffer_select(flags);
        let Some(conn) = self.conns.get_mut(token) else {
            if let Some(bid) = buffer {
                self.bufs.recycle(bid);
            }
            return;
        };
        // A multishot recv that will complete again is still armed.
        conn.recv_armed = cqueue::more(flags);
        if !conn.recv_armed {
            conn.recv_cancelled = false;
        }
        if conn.closing {
            if let Some(bid) = buffer {
                self.bufs.recycle(bid);
            }
            self.free_if_done(token);
            return;
        }
        match result {
            n if n > 0 => {
                let n = n as usize;
                self.env.counters.bytes_in += n as u64;
                conn.stamps.last_activity = self.clock.now_ms;
                let Some(bid) = buffer else {
                    log::warn!("recv completed without a provided buffer; closing");
                    return self.close(token);
                };
                match conn.phase {
                    Phase::Lingering => {
                        conn.lingered += n;
                        self.bufs.recycle(bid);
                        if conn.lingered > LINGER_BYTES {
                            return self.close(token);
                        }
                    }
                    Phase::Serving => {
                        if conn.input.capacity() == 0 {
                            conn.input = self.spare.pop().unwrap_or_default();
                        }
                        conn.input.extend_from_slice(self.bufs.data(bid, n));
                        self.bufs.recycle(bid);
                    }
                }
                self.pump(token);
            }
            0 => {
                if let Some(bid) = buffer {
                    self.bufs.recycle(bid);
                }
                conn.peer_eof = true;
                if conn.phase == Phase::Lingering {
                    return self.close(token);
                }
                self.pump(token);
            }
            e if e == -libc::ENOBUFS => {
                log::debug!("recv: the buffer ring is empty; re-arming after this batch");
                self.env.counters.syscalls.recv_rearms += 1;
                self.bufs.starved();
                self.starved.push(token)
            }
            e if e == -libc::EINTR || e == -libc::EAGAIN => {
                self.env.counters.syscalls.recv_rearms += 1;
                self.pump(token)
            }
            // Our own cancellation (the connection had to stop reading): not a re-arm.
            e if e == -libc::ECANCELED => self.pump(token),
            _ => self.close(token),
        }
    }

    fn on_send(&mut self, token: Token, result: i32) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        conn.send_armed = false;
        if conn.closing {
            return self.free_if_done(token);
        }
        if result < 0 {
            return self.close(token);
        }
        let n = result as usize;
        self.env.counters.bytes_out += n as u64;
        conn.stamps.last_activity = self.clock.now_ms;
        if conn.pending_output() == 0 {
            // The send was of lent output: the buffer was empty when it was armed, and nothing
            // is written to it while a send is in flight.
            conn.session.static_output_sent(n);
        }
        conn.sent += n.min(conn.pending_output());
        if conn.sent == conn.output.len() {
            conn.output.clear();
            conn.sent = 0;
        }
        self.pump(token);
    }

    /// Helpers finished some blocking work: re-arm the poll, give the sessions back.
    fn on_offload_done(&mut self) {
        let Some(helpers) = self.offload.as_mut() else {
            return;
        };
        let tokens = helpers.collect(&mut self.env);
        helpers.arm(&mut self.ring, &mut self.env.counters.syscalls);
        for token in tokens {
            self.pump(token);
        }
    }

    // ---- one connection ----------------------------------------------------------------------

    /// Moves a connection on after a completion: produce output, send it, linger or close, and
    /// re-arm recv when there is room; then makes sure its next deadline is in the timer heap.
    /// Idempotent: it only submits what is not already in flight.
    fn pump(&mut self, token: Token) {
        self.step(token);
        let (now, timeouts) = (self.clock.now_ms, &self.timeouts);
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.closing {
            return;
        }
        let awaiting_head = conn.session.awaiting_head();
        conn.stamps
            .track_head(awaiting_head, !conn.input.is_empty(), now);
        let deadline = conn.deadline(timeouts);
        self.timers.arm(&mut conn.stamps, deadline, token);
    }

    fn step(&mut self, token: Token) {
        let shutting_down = self.shutdown_deadline.is_some();
        let drain_over = self.drain_until.is_none();
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.closing {
            return;
        }
        if let Some(helpers) = self.offload.as_mut() {
            helpers.take_back(token, conn);
        }
        if conn.phase == Phase::Serving && !conn.send_armed && !conn.away {
            produce(conn, &mut self.env, &mut self.spare, self.offload.is_some());
            if let Some(helpers) = self.offload.as_mut() {
                if conn.session.blocking_work().is_some() {
                    helpers.hand_off(token, conn, &mut self.env);
                }
            }
        }
        if conn.phase == Phase::Serving && !conn.send_armed {
            // (With the output full, input waits for room: that is backpressure, bounded by
            // the recv's cancellation, not a protocol that cannot consume.)
            if conn.input.len() > MAX_BUFFERED_INPUT
                && conn.pending_output() < OUTPUT_HIGH_WATER
                && conn.session.static_output().is_empty()
            {
                log::warn!(
                    "{}: protocol left {} bytes unconsumed; closing",
                    conn.fd,
                    conn.input.len()
                );
                return self.close(token);
            }
            if conn.pending_output() > 0 {
                self.env.counters.syscalls.uring_sends += 1;
                // SAFETY: the send reads `output[sent..]`, which is neither changed nor freed while
                // `send_armed` is set: `produce` (and, with `--offload`, taking a job's output
                // back) runs only without a send in flight, and the connection is freed only once
                // its send has completed.
                unsafe {
                    ring::push_send(
                        &mut self.ring,
                        &mut self.env.counters.syscalls,
                        &conn.fd,
                        &conn.output[conn.sent..],
                        Op::Send,
                        token,
                    )
                };
                conn.send_armed = true;
            } else if !conn.session.static_output().is_empty() {
                // The buffer is flushed; the session lends the rest of a `/bytes` body, sent
                // from static memory with no copy, up to 256 KiB a send.
                self.env.counters.syscalls.uring_sends += 1;
                // SAFETY: lent output is `'static` and never written.
                unsafe {
                    ring::push_send(
                        &mut self.ring,
                        &mut self.env.counters.syscalls,
                        &conn.fd,
                        conn.session.static_output(),
                        Op::Send,
                        token,
                    )
                };
                conn.send_armed = true;
            } else if conn.away {
                // Nothing to do but wait for the session.
            } else if conn.session.status() == Status::CloseAfterFlush {
                return self.start_lingering(token);
            } else if conn.peer_eof && !conn.session.has_pending_output() {
                // Everything the peer sent before its half-close has been answered.
                return self.close(token);
            } else if shutting_down && drain_over && conn.is_idle() {
                // Nothing pending and the drain window is over.
                return self.close(token);
            }
        }
        let wants_input = match conn.phase {
            Phase::Lingering => true,
            Phase::Serving => {
                let input_cap = if conn.send_armed {
                    INPUT_WHILE_SENDING
                } else {
                    MAX_BUFFERED_INPUT
                };
                !conn.peer_eof
                    && conn.session.status() == Status::Open
                    && conn.pending_output() < OUTPUT_HIGH_WATER
                    && conn.session.static_output().is_empty()
                    && conn.input.len() < input_cap
            }
        };
        if wants_input && !conn.recv_armed {
            self.env.counters.syscalls.uring_recvs += 1;
            let syscalls = &mut self.env.counters.syscalls;
            if self.multishot_recv {
                ring::push_recv_multishot(&mut self.ring, syscalls, &conn.fd, token);
            } else {
                ring::push_recv(&mut self.ring, syscalls, &conn.fd, token);
            }
            conn.recv_armed = true;
        } else if !wants_input && conn.recv_armed && self.multishot_recv && !conn.recv_cancelled {
            // A multishot recv would go on reading: stop it. Data it delivers before the
            // cancellation lands is kept (bounded by one wakeup's worth), and the final
            // completion (ECANCELED, or whatever ended it first) disarms it.
            conn.recv_cancelled = true;
            ring::push_cancel(
                &mut self.ring,
                &mut self.env.counters.syscalls,
                Op::Recv,
                token,
            );
        }
        give_back_buffers(conn, &mut self.spare);
    }

    fn start_lingering(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        match &conn.fd {
            ConnFd::Regular(fd) => {
                let _ = sys::shutdown_write(fd.as_raw_fd());
            }
            ConnFd::Direct(slot) => {
                // Queued after the last send's completion, so it cannot overtake it.
                ring::push_shutdown_write(
                    &mut self.ring,
                    &mut self.env.counters.syscalls,
                    *slot,
                    token,
                );
                conn.shutdown_armed = true;
            }
        }
        conn.phase = Phase::Lingering;
        conn.input.clear();
        if conn.peer_eof {
            return self.close(token);
        }
        conn.stamps.linger_until = self.clock.now_ms + LINGER_TIME.as_millis() as u64;
        self.pump(token);
    }

    /// Stops the connection: cancels what is in flight, frees it when nothing is.
    fn close(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.closing {
            return;
        }
        conn.closing = true;
        let (recv, send) = (conn.recv_armed && !conn.recv_cancelled, conn.send_armed);
        if recv {
            self.cancel(Op::Recv, token);
        }
        if send {
            self.cancel(Op::Send, token);
        }
        self.free_if_done(token);
    }

    fn free_if_done(&mut self, token: Token) {
        let done = self
            .conns
            .get_mut(token)
            .is_some_and(|c| c.closing && !c.recv_armed && !c.send_armed && !c.shutdown_armed);
        if !done {
            return;
        }
        if let Some(helpers) = self.offload.as_mut() {
            helpers.forget(token);
        }
        if let Some(mut conn) = self.conns.remove(token) {
            self.env.counters.connections_current -= 1;
            self.env.publish();
            conn.output.clear();
            conn.sent = 0;
            conn.input.clear();
            give_back_buffers(&mut conn, &mut self.spare);
            if let ConnFd::Direct(slot) = conn.fd {
                self.close_direct(slot);
            }
            if self.accept_paused_until.is_some() {
                // A descriptor was freed: try accepting again now.
                self.resume_accepting();
            }
        }
    }

    /// The writing side of a direct descriptor is shut down: its slot may be closed now.
    fn on_shutdown_write(&mut self, token: Token) {
        if let Some(conn) = self.conns.get_mut(token) {
            conn.shutdown_armed = false;
            self.free_if_done(token);
        }
    }

    /// Acts on the connections whose deadline has passed (see [`Deadlines::next_expired`]).
    fn run_timers(&mut self) {
        let now = self.clock.now_ms;
        while let Some(token) = self
            .timers
            .next_expired(now, &mut self.conns, &self.timeouts)
        {
            self.expire(token);
        }
        if self
            .accept_paused_until
            .is_some_and(|at| at <= Instant::now())
        {
            self.resume_accepting();
        }
    }

    /// A deadline passed: a send stalled, a request head took too long (HTTP: 408), a keep-alive
    /// connection sat idle, or lingering is over.
    fn expire(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let fd = conn.fd.to_string();
        match conn.phase {
            Phase::Serving if conn.unsent() || conn.send_armed => {
                self.env.counters.timeouts_write += 1;
                log::debug!(
                    "{fd}: send stalled for {} ms; closing",
                    self.timeouts.write_ms
                );
            }
            Phase::Serving if conn.stamps.head_started != NEVER && !conn.input.is_empty() => {
                self.env.counters.timeouts_header += 1;
                log::debug!(
                    "{fd}: request head not complete within {} ms",
                    self.timeouts.header_ms
                );
                conn.stamps.head_started = NEVER;
                // No send is in flight (checked above), so the output may be written.
                if conn.output.capacity() == 0 {
                    conn.output = self.spare.pop().unwrap_or_default();
                }
                conn.session.request_timeout(&mut conn.output, &self.env);
                if conn.session.status() == Status::CloseAfterFlush {
                    // Sent like any error response: flush, shut down writing, linger, close.
                    return self.pump(token);
                }
            }
            Phase::Serving if conn.stamps.head_started != NEVER => {
                // Connected and never sent a byte of its (first or next) request head: counted
                // as the reactor and coro count it.
                self.env.counters.timeouts_header += 1;
                log::debug!(
                    "{fd}: no request within {} ms; closing",
                    self.timeouts.header_ms
                )
            }
            Phase::Serving => {
                self.env.counters.timeouts_idle += 1;
                log::debug!("{fd}: idle; closing")
            }
            Phase::Lingering => {}
        }
        self.close(token);
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let now = Instant::now();
        self.shutdown_deadline = Some(now + self.options.config.shutdown_grace);
        self.drain_until = Some(now + self.options.config.keepalive_drain_window());
        self.accept_paused_until = None;
        if let Some(listener) = &self.listener {
            // Stop listening now, before any drained connection is told `Connection: close`:
            // a client that reconnects then is refused, rather than let into a backlog that is
            // reset when the accept ends. (Closing our descriptor would not do: the accept in
            // flight holds the socket open.) The accept then ends with an error.
            let _ = sys::shutdown_read(listener.as_raw_fd());
        }
        if self.accepting || self.direct_accepts > 0 {
            self.cancel_accepts();
        } else {
            self.listener = None;
        }
        for token in self.conns.tokens() {
            if let Some(conn) = self.conns.get_mut(token) {
                if !conn.drained && !conn.closing {
                    conn.drained = true;
                    conn.session.drain();
                    self.pump(token);
                }
            }
        }
    }

    /// The drain window is over: connections with nothing pending are closed (a request that
    /// has arrived has been reaped before this, and is served).
    fn end_drain_window(&mut self) {
        if self.drain_until.is_none_or(|at| at > Instant::now()) {
            return;
        }
        self.drain_until = None;
        for token in self.conns.tokens() {
            self.pump(token);
        }
    }

    /// True when the loop may exit: no connections left, or the grace period is over (then the
    /// rest are cancelled and their completions awaited briefly).
    fn finish_shutdown(&mut self) -> bool {
        if self.conns.is_empty() {
            return true;
        }
        if self.shutdown_deadline.is_some_and(|d| Instant::now() >= d) {
            log::warn!(
                "grace period over: closing {} connections",
                self.conns.len()
            );
            for token in self.conns.tokens() {
                self.close(token);
            }
            let until = Instant::now() + CANCEL_WAIT;
            while !self.conns.is_empty() {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() || self.wait(Some(left)).is_err() {
                    break;
                }
                self.reap();
            }
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> UringConn {
        let fd = std::fs::File::open("/dev/null").unwrap().into();
        UringConn::new(
            ConnFd::Regular(fd),
            Session::new(crate::proto::Proto::Echo),
            0,
            false,
        )
    }

    #[test]
    fn a_token_of_any_generation_survives_user_data() {
        let mut slab = Slab::default();
        for _ in 0..3 {
            let token = slab.insert(conn());
            assert_eq!(decode(ring::user_data(Op::Recv, token)).1, token);
            slab.remove(token);
        }
    }
}
