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
//!   while no send is in flight (its output must not move), and recv is re-armed only while the
//!   output is under the protocol's high-water mark (and, while sending, only while little input is
//!   buffered): a client that does not read stops being read from.
//! - Every `user_data` carries the operation's kind, the connection's slab index and the slot's
//!   generation; completions for a slot that has moved on are dropped (a buffer they carry is still
//!   handed back to the ring).
//! - Timeouts (header, idle, write stall, linger) are one lazily checked deadline per connection
//!   in a heap, computed from its state as in the reactor; the wait is bounded by the earliest.
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
//! - Counted in `/stats`: `uring_ops` (SQEs queued), `completions` (CQEs reaped), `waits`
//!   (io_uring_enter calls), and `recv_rearms` (recvs the kernel ended without data: ENOBUFS when
//!   the buffer ring ran dry, EAGAIN, EINTR).
//! - Signals arrive through the ring too (a poll on the signalfd), so shutdown is one more
//!   completion. Then (RFC 9112 §9.6): the listener stops listening (`shutdown(SHUT_RD)`) and
//!   the accept is cancelled, connections it still delivers are served, and the listener is
//!   closed once it has ended; every session is drained
//!   ([`Session::drain`]): the response in progress or the next one is its last, with `Connection:
//!   close`, then writing is shut down and input drained (linger) so the client reads the response,
//!   not a reset. Idle keep-alive connections keep their recv armed for the drain window
//!   ([`super::KEEPALIVE_DRAIN_WINDOW`]), since closing them at once would race with a request on
//!   its way; when it ends, those with nothing pending are closed. Whatever is left at the end of
//!   the grace period is cancelled.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring, Probe};
use nix::sys::signalfd::SignalFd;

use super::kit::{
    self, Deadlines, RateLimitedLog, Slab, Stamps, Timed, Token, ACCEPT_PAUSE, LINGER_BYTES,
    LINGER_TIME, MAX_BUFFERED_INPUT,
};
use super::{Clock, DriverOptions, LoopEnv, Timeouts, NEVER};
use crate::proto::{Session, Status, OUTPUT_HIGH_WATER};
use crate::stats::{self, Counters, Syscalls};
use crate::sys;

/// Submission queue size; the completion queue is bigger so that 10,000 connections' recvs fit.
const SQ_ENTRIES: u32 = 4096;
const CQ_ENTRIES: u32 = 16384;
/// The provided-buffer ring: `BUF_COUNT` buffers of `BUF_SIZE` bytes, shared by every connection.
/// Many small buffers rather than a few large ones: when thousands of connections become
/// readable in one batch each completion takes a buffer before any is recycled, and with 256
/// buffers 10,000 busy connections spent most recvs on ENOBUFS and re-arming (40 syscalls per
/// request in the comparison). 16 MiB in all, touched only as far as it is used.
const BUF_GROUP: u16 = 0;
const BUF_COUNT: u16 = 4096;
const BUF_SIZE: usize = 4 * 1024;
/// While a send is in flight the protocol cannot run; receive no more than this meanwhile.
const INPUT_WHILE_SENDING: usize = 64 * 1024;
/// Lent buffers kept for reuse, and the largest one worth keeping.
const SPARE_BUFFERS: usize = 64;
const SPARE_MAX_CAPACITY: usize = 256 * 1024;
/// After the grace period, how long to wait for the cancelled operations' completions.
const CANCEL_WAIT: Duration = Duration::from_secs(1);

/// What an operation was, kept in the top byte of its `user_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Accept = 1,
    Signals = 2,
    Recv = 3,
    Send = 4,
    Cancel = 5,
}

fn user_data(op: Op, token: Token) -> u64 {
    ((op as u64) << 56) | (token & 0x00ff_ffff_ffff_ffff)
}

fn decode(user_data: u64) -> (Option<Op>, Token) {
    let op = match user_data >> 56 {
        1 => Some(Op::Accept),
        2 => Some(Op::Signals),
        3 => Some(Op::Recv),
        4 => Some(Op::Send),
        5 => Some(Op::Cancel),
        _ => None,
    };
    (op, user_data & 0x00ff_ffff_ffff_ffff)
}

/// Whether io_uring can serve here, and if not, why: old kernel, seccomp, io_uring_disabled.
pub fn probe() -> Result<(), String> {
    if let Ok(setting) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if setting.trim() == "2" {
            return Err("io_uring is disabled (/proc/sys/kernel/io_uring_disabled = 2)".into());
        }
    }
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup failed: {e}"))?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("cannot probe io_uring opcodes: {e}"))?;
    for (code, name) in [
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::Recv::CODE, "recv"),
        (opcode::Send::CODE, "send"),
        (opcode::PollAdd::CODE, "poll_add"),
        (opcode::AsyncCancel::CODE, "async_cancel"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("io_uring has no {name} operation on this kernel"));
        }
    }
    if !ring.params().is_feature_fast_poll() {
        // Without it a recv or send that cannot complete at once is handed to an io-wq worker
        // thread that blocks on our blocking socket: a thread per idle connection.
        return Err("io_uring lacks IORING_FEAT_FAST_POLL (Linux ≥ 5.7)".into());
    }
    if !ring.params().is_feature_ext_arg() {
        return Err("io_uring lacks IORING_FEAT_EXT_ARG (timed waits; Linux ≥ 5.11)".into());
    }
    let bufs = BufRing::new(&ring, 1, 64, BUF_GROUP);
    // The ring goes first, then the memory it was given.
    drop(ring);
    bufs.map(drop)
        .map_err(|e| format!("no provided-buffer rings (Linux ≥ 5.19): {e}"))
}

/// Serves until SIGINT/SIGTERM and the end of the grace period; returns the counters.
pub fn run(listener: OwnedFd, signals: SignalFd, options: &DriverOptions) -> io::Result<Counters> {
    // A blocking listener: io_uring then waits for connections itself instead of completing the
    // accept with EAGAIN.
    sys::set_nonblocking(listener.as_raw_fd(), false)?;
    let ring = IoUring::builder()
        .setup_cqsize(CQ_ENTRIES)
        .build(SQ_ENTRIES)?;
    let bufs = BufRing::new(&ring, BUF_COUNT, BUF_SIZE, BUF_GROUP)?;
    let mut driver = Uring {
        ring,
        bufs,
        conns: Slab::default(),
        env: LoopEnv {
            board: options.board.clone(),
            ..LoopEnv::new("uring")
        },
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
    };
    driver.arm_accept();
    driver.arm_signals();
    driver.run()
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Output flushed and write side shut down; input is received and discarded until EOF or
    /// the deadline.
    Lingering,
}

struct Conn {
    fd: OwnedFd,
    session: Session,
    /// Received and not yet consumed. Empty and unallocated while idle.
    input: Vec<u8>,
    /// Produced and not yet sent: `output[sent..]`. While `send_armed`, the kernel reads it.
    output: Vec<u8>,
    sent: usize,
    recv_armed: bool,
    send_armed: bool,
    peer_eof: bool,
    phase: Phase,
    /// Closed as far as the protocol is concerned; freed once no operation is in flight.
    closing: bool,
    /// The session has been told that the server is shutting down.
    drained: bool,
    lingered: usize,
    stamps: Stamps,
}

impl Timed for Conn {
    fn stamps(&mut self) -> &mut Stamps {
        &mut self.stamps
    }

    fn deadline(&self, timeouts: &Timeouts) -> u64 {
        self.stamps.deadline(timeouts, self.pending_output() > 0)
    }

    fn closing(&self) -> bool {
        self.closing
    }
}

impl Conn {
    fn pending_output(&self) -> usize {
        self.output.len() - self.sent
    }

    fn is_idle(&self) -> bool {
        self.input.is_empty()
            && self.pending_output() == 0
            && !self.send_armed
            && !self.session.has_pending_output()
    }
}

struct Uring {
    /// Declared first so that it is dropped first, before any memory it was given.
    ring: IoUring,
    bufs: BufRing,
    conns: Slab<Conn>,
    env: LoopEnv,
    options: DriverOptions,
    /// Closed once the accept has ended after shutdown began.
    listener: Option<OwnedFd>,
    signals: SignalFd,
    /// A multishot accept is in flight.
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
        if self.conns.len() > 0 {
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
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.env.counters.syscalls.waits += 1;
        let result = match timeout {
            None => self.ring.submit_and_wait(1),
            Some(d) => {
                let ts = Timespec::from(d);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
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
            let (op, token) = decode(data);
            match op {
                Some(Op::Accept) => self.on_accept(result, flags),
                Some(Op::Signals) => self.on_signals(),
                Some(Op::Recv) => self.on_recv(token, result, flags),
                Some(Op::Send) => self.on_send(token, result),
                Some(Op::Cancel) | None => {}
            }
        }
        self.completed = batch;
    }

    // ---- submissions -------------------------------------------------------------------------

    fn arm_accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        let entry = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(Op::Accept, 0));
        // SAFETY: a multishot accept without an address carries no pointer into our memory.
        unsafe { push(&mut self.ring, &mut self.env.counters.syscalls, &entry) };
        self.accepting = true;
    }

    fn arm_signals(&mut self) {
        let entry = opcode::PollAdd::new(Fd(self.signals.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(user_data(Op::Signals, 0));
        // SAFETY: a poll carries no pointer into our memory.
        unsafe { push(&mut self.ring, &mut self.env.counters.syscalls, &entry) };
    }

    fn cancel(&mut self, op: Op, token: Token) {
        let entry = opcode::AsyncCancel::new(user_data(op, token))
            .build()
            .user_data(user_data(Op::Cancel, token));
        // SAFETY: a cancellation carries no pointer into our memory.
        unsafe { push(&mut self.ring, &mut self.env.counters.syscalls, &entry) };
    }

    // ---- completions -------------------------------------------------------------------------

    fn on_accept(&mut self, result: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.accepting = false;
        }
        if result >= 0 {
            self.env.counters.syscalls.accepts += 1;
            // Also after shutdown began: the client connected before the accept was cancelled,
            // and is served (drained) rather than reset.
            self.admit(adopt_fd(result));
        } else {
            let e = io::Error::from_raw_os_error(-result);
            if sys::is_fd_exhaustion(&e) {
                self.pause_accepting(&e);
            } else if result != -libc::ECANCELED {
                log::debug!("accept: {e}");
            }
        }
        if !self.accepting && self.shutdown_deadline.is_some() {
            // The accept has ended: clients connecting from now on are refused by the kernel
            // instead of waiting in a backlog nobody will take.
            self.listener = None;
        }
        if !self.accepting && self.accept_paused_until.is_none() && self.shutdown_deadline.is_none()
        {
            self.arm_accept();
        }
    }

    fn admit(&mut self, fd: OwnedFd) {
        self.env.counters.connections_total += 1;
        if self.conns.len() >= self.options.max_conns {
            kit::refuse(fd.as_raw_fd(), self.options.proto, &mut self.env);
            log::debug!(
                "refused a connection: {} open, --max-conns {}",
                self.conns.len(),
                self.options.max_conns
            );
            return;
        }
        let mut session = Session::new(self.options.proto);
        let drained = self.shutdown_deadline.is_some();
        if drained {
            session.drain();
        }
        let now = self.clock.now_ms;
        let token = self.conns.insert(Conn {
            fd,
            stamps: Stamps::new(now, session.awaiting_head()),
            session,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            recv_armed: false,
            send_armed: false,
            peer_eof: false,
            phase: Phase::Serving,
            closing: false,
            lingered: 0,
            drained,
        });
        self.env.counters.connections_current += 1;
        self.env.publish();
        self.pump(token);
    }

    /// Out of descriptors: stop accepting until a connection closes or a short pause has passed.
    fn pause_accepting(&mut self, error: &io::Error) {
        self.exhaustion.warn(format_args!(
            "accept: {error}; pausing accepts, serving the {} open connections",
            self.conns.len()
        ));
        let now = Instant::now();
        if self.accepting {
            self.cancel(Op::Accept, 0);
        }
        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
    }

    fn resume_accepting(&mut self) {
        self.accept_paused_until = None;
        if !self.accepting && self.shutdown_deadline.is_none() {
            self.arm_accept();
        }
    }

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
        conn.recv_armed = false;
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
                self.starved.push(token)
            }
            e if e == -libc::EINTR || e == -libc::EAGAIN || e == -libc::ECANCELED => {
                self.env.counters.syscalls.recv_rearms += 1;
                self.pump(token)
            }
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
        conn.sent += n;
        if conn.sent == conn.output.len() {
            conn.output.clear();
            conn.sent = 0;
        }
        self.pump(token);
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
        if conn.phase == Phase::Serving && !conn.send_armed {
            produce(conn, &mut self.env, &mut self.spare);
            if conn.input.len() > MAX_BUFFERED_INPUT {
                log::warn!(
                    "fd {}: protocol left {} bytes unconsumed; closing",
                    conn.fd.as_raw_fd(),
                    conn.input.len()
                );
                return self.close(token);
            }
            if conn.pending_output() > 0 {
                self.env.counters.syscalls.writes += 1;
                let rest = &conn.output[conn.sent..];
                let entry = opcode::Send::new(
                    Fd(conn.fd.as_raw_fd()),
                    rest.as_ptr(),
                    rest.len().min(u32::MAX as usize) as u32,
                )
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(user_data(Op::Send, token));
                // SAFETY: the send reads `output[sent..]`, which is neither changed nor freed while
                // `send_armed` is set: `produce` runs only without a send in flight, and the
                // connection is freed only once its send has completed.
                unsafe { push(&mut self.ring, &mut self.env.counters.syscalls, &entry) };
                conn.send_armed = true;
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
                    && conn.input.len() < input_cap
            }
        };
        if wants_input && !conn.recv_armed {
            self.env.counters.syscalls.reads += 1;
            let entry = opcode::Recv::new(
                Fd(conn.fd.as_raw_fd()),
                std::ptr::null_mut(),
                BUF_SIZE as u32,
            )
            .buf_group(BUF_GROUP)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(user_data(Op::Recv, token));
            // SAFETY: the recv writes into a buffer of the registered ring, which lives as long as
            // the ring (see `BufRing`); it carries no pointer into the connection.
            unsafe { push(&mut self.ring, &mut self.env.counters.syscalls, &entry) };
            conn.recv_armed = true;
        }
        give_back_buffers(conn, &mut self.spare);
    }

    fn start_lingering(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let _ = sys::shutdown_write(conn.fd.as_raw_fd());
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
        let (recv, send) = (conn.recv_armed, conn.send_armed);
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
            .is_some_and(|c| c.closing && !c.recv_armed && !c.send_armed);
        if !done {
            return;
        }
        if let Some(mut conn) = self.conns.remove(token) {
            self.env.counters.connections_current -= 1;
            self.env.publish();
            conn.output.clear();
            conn.sent = 0;
            conn.input.clear();
            give_back_buffers(&mut conn, &mut self.spare);
            if self.accept_paused_until.is_some() {
                // A descriptor was freed: try accepting again now.
                self.resume_accepting();
            }
        }
    }

    /// Acts on the connections whose deadline has passed (see [`Deadlines::next_expired`]).
    fn run_timers(&mut self) {
        let now = self.clock.now_ms;
        while let Some(token) = self.timers.next_expired(now, &mut self.conns, &self.timeouts) {
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
        let fd = conn.fd.as_raw_fd();
        match conn.phase {
            Phase::Serving if conn.pending_output() > 0 || conn.send_armed => {
                self.env.counters.timeouts_write += 1;
                log::debug!(
                    "fd {fd}: send stalled for {} ms; closing",
                    self.timeouts.write_ms
                );
            }
            Phase::Serving if conn.stamps.head_started != NEVER && !conn.input.is_empty() => {
                self.env.counters.timeouts_header += 1;
                log::debug!(
                    "fd {fd}: request head not complete within {} ms",
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
            Phase::Serving => {
                self.env.counters.timeouts_idle += 1;
                log::debug!("fd {fd}: idle; closing")
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
        self.shutdown_deadline = Some(now + self.options.shutdown_grace);
        self.drain_until = Some(now + super::keepalive_drain_window(self.options.shutdown_grace));
        self.accept_paused_until = None;
        if let Some(listener) = &self.listener {
            // Stop listening now, before any drained connection is told `Connection: close`:
            // a client that reconnects then is refused, rather than let into a backlog that is
            // reset when the accept ends. (Closing our descriptor would not do: the accept in
            // flight holds the socket open.) The accept then ends with an error.
            let _ = sys::shutdown_read(listener.as_raw_fd());
        }
        if self.accepting {
            self.cancel(Op::Accept, 0);
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
        if self.conns.len() == 0 {
            return true;
        }
        if self.shutdown_deadline.is_some_and(|d| Instant::now() >= d) {
            log::warn!("grace period over: closing {} connections", self.conns.len());
            for token in self.conns.tokens() {
                self.close(token);
            }
            let until = Instant::now() + CANCEL_WAIT;
            while self.conns.len() > 0 {
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

/// Lets the protocol turn buffered input (or a streamed body) into output while there is room.
/// Called only while no send is in flight: `advance` may move the output buffer.
fn produce(conn: &mut Conn, env: &mut LoopEnv, spare: &mut Vec<Vec<u8>>) {
    loop {
        let room = conn.pending_output() < OUTPUT_HIGH_WATER;
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
fn give_back_buffers(conn: &mut Conn, spare: &mut Vec<Vec<u8>>) {
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

/// Queues one submission, handing the queue to the kernel first if it is full.
///
/// # Safety
/// Every pointer the entry carries must stay valid until the operation's completion is reaped.
unsafe fn push(ring: &mut IoUring, syscalls: &mut Syscalls, entry: &squeue::Entry) {
    loop {
        // SAFETY: the caller guarantees the entry's pointers outlive the operation.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            syscalls.uring_ops += 1;
            return;
        }
        syscalls.waits += 1;
        if let Err(e) = ring.submit() {
            if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) {
                log::warn!("io_uring submit: {e}");
            }
        }
    }
}

/// Takes ownership of a descriptor an accept completion returned.
fn adopt_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: a non-negative accept result is a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// One entry of a provided-buffer ring: the kernel's `struct io_uring_buf`, whose layout is ABI.
/// Ours rather than `io_uring::types::BufRingEntry`, whose setters take `&mut self` (see
/// [`BufRing::recycle`]). The first entry's `resv` is the ring's tail.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<RawBuf>() == std::mem::size_of::<BufRingEntry>());
const _: () = assert!(std::mem::size_of::<RawBuf>() == 16);

/// A provided-buffer ring: `count` buffers of `size` bytes the kernel picks from when a recv
/// with buffer select has data, and that the loop hands back (`recycle`) once it has copied the
/// data out. The ring and the buffers are freed only when the `BufRing` is dropped, which the
/// driver does after the io_uring (field order) and never with a recv in flight.
struct BufRing {
    entries: NonNull<RawBuf>,
    entries_layout: std::alloc::Layout,
    buffers: NonNull<u8>,
    buffers_layout: std::alloc::Layout,
    count: u16,
    size: usize,
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring, count: u16, size: usize, group: u16) -> io::Result<BufRing> {
        assert!(
            count.is_power_of_two(),
            "buffer ring size must be a power of two"
        );
        let entries_layout = std::alloc::Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<RawBuf>(),
            4096,
        )
        .map_err(io::Error::other)?;
        // Small alignment so that the allocator can use calloc: pages stay untouched (and out of
        // the RSS) until the kernel first writes into them.
        let buffers_layout = std::alloc::Layout::from_size_align(usize::from(count) * size, 16)
            .map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size.
        let (entries, buffers) = unsafe {
            (
                std::alloc::alloc_zeroed(entries_layout),
                std::alloc::alloc_zeroed(buffers_layout),
            )
        };
        let (Some(entries), Some(buffers)) = (
            NonNull::new(entries.cast::<RawBuf>()),
            NonNull::new(buffers),
        ) else {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        };
        let mut bufs = BufRing {
            entries,
            entries_layout,
            buffers,
            buffers_layout,
            count,
            size,
            tail: 0,
        };
        // SAFETY: the ring memory is page-aligned, `count` entries long, zeroed (tail 0), and lives
        // until `bufs` is dropped, after the io_uring it is registered with.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                count,
                group,
                0,
            )?
        };
        for bid in 0..count {
            bufs.recycle(bid);
        }
        Ok(bufs)
    }

    /// Hands buffer `bid` (back) to the kernel.
    ///
    /// Only raw-pointer writes, never a `&mut` over ring memory: the kernel reads that memory
    /// concurrently (the entries between its head and our tail, and the tail itself, which lives
    /// in entry 0's `resv` field). A `&mut RawBuf` over entry 0 would claim exclusive access to
    /// the tail the kernel is reading — undefined behaviour even if no byte is ever torn.
    fn recycle(&mut self, bid: u16) {
        assert!(bid < self.count, "buffer id out of range");
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: `index < count`, so the entry lies inside the ring allocation (alive until drop).
        let entry = unsafe { self.entries.as_ptr().add(index) };
        // SAFETY: `bid < count` (checked), so the buffer lies inside the buffers allocation.
        let addr = unsafe { self.buffers.as_ptr().add(usize::from(bid) * self.size) };
        // SAFETY: the entry is in bounds and aligned (page-aligned ring of 16-byte entries). The
        // kernel reads an entry only between its head and the published tail, and this one is
        // at the tail, so nothing reads these three fields while we write them; entry 0's `resv`
        // (the tail) is not written here. Field-wise writes through `addr_of_mut!` create no
        // reference to the entry.
        unsafe {
            std::ptr::addr_of_mut!((*entry).addr).write(addr as u64);
            std::ptr::addr_of_mut!((*entry).len).write(self.size as u32);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the u16 `resv` field of the first entry, shared with the kernel,
        // which reads it concurrently: it is only ever accessed atomically (aligned: offset 14 of
        // a page-aligned allocation). The release store publishes the entry written above before
        // the new tail.
        unsafe {
            let tail = std::ptr::addr_of_mut!((*self.entries.as_ptr()).resv);
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// The `len` bytes the kernel received into buffer `bid`.
    fn data(&self, bid: u16, len: usize) -> &[u8] {
        assert!(
            bid < self.count && len <= self.size,
            "buffer id or length out of range"
        );
        // SAFETY: in range (checked); the completion that named this buffer handed it to us, and
        // the kernel does not write to it again until `recycle` gives it back.
        unsafe {
            std::slice::from_raw_parts(self.buffers.as_ptr().add(usize::from(bid) * self.size), len)
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; by the driver's field order the io_uring
        // is gone (or has no recv in flight) by now, so the kernel no longer uses this memory.
        unsafe {
            std::alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            std::alloc::dealloc(self.buffers.as_ptr(), self.buffers_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        Conn {
            fd: std::fs::File::open("/dev/null").unwrap().into(),
            session: Session::new(crate::proto::Proto::Echo),
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            recv_armed: false,
            send_armed: false,
            peer_eof: false,
            phase: Phase::Serving,
            closing: false,
            drained: false,
            lingered: 0,
            stamps: Stamps::new(0, false),
        }
    }

    #[test]
    fn user_data_round_trips_op_and_token() {
        for op in [Op::Accept, Op::Signals, Op::Recv, Op::Send, Op::Cancel] {
            let token: Token = (0x00ab_cdef << 32) | 0xdead_beef;
            assert_eq!(decode(user_data(op, token)), (Some(op), token));
        }
        assert_eq!(decode(0).0, None);
    }

    #[test]
    fn a_token_of_any_generation_survives_user_data() {
        let mut slab = Slab::default();
        for _ in 0..3 {
            let token = slab.insert(conn());
            assert_eq!(decode(user_data(Op::Recv, token)).1, token);
            slab.remove(token);
        }
    }

    #[test]
    fn recv_takes_a_provided_buffer_and_it_can_be_handed_back() {
        if let Err(why) = probe() {
            eprintln!("io_uring unavailable here ({why}); skipped");
            return;
        }
        let mut ring = IoUring::new(8).unwrap();
        let mut bufs = BufRing::new(&ring, 2, 128, 7).unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut syscalls = Syscalls::default();
        for round in 0..5u8 {
            // More rounds than buffers: each must have been handed back for the next recv.
            std::io::Write::write_all(&mut &a, &[b'a' + round; 10]).unwrap();
            let entry = opcode::Recv::new(Fd(b.as_raw_fd()), std::ptr::null_mut(), 128)
                .buf_group(7)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
                .user_data(user_data(Op::Recv, 1));
            // SAFETY: the recv writes only into the registered buffer ring, alive until the end.
            unsafe { push(&mut ring, &mut syscalls, &entry) };
            ring.submit_and_wait(1).unwrap();
            let cqe = ring.completion().next().expect("a completion");
            assert_eq!(decode(cqe.user_data()), (Some(Op::Recv), 1));
            assert_eq!(cqe.result(), 10);
            let bid = cqueue::buffer_select(cqe.flags()).expect("a provided buffer");
            assert_eq!(bufs.data(bid, 10), &[b'a' + round; 10]);
            bufs.recycle(bid);
        }
        drop(ring);
    }
}
