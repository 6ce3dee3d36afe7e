//! Blocking I/O, as the threads driver does it: one connection on one thread from its first read
//! to its close, the accept thread that feeds them, and the counters they share. What is
//! particular to a thread per connection (the thread registry, its cap) stays in `threads.rs`.
//! (The pool no longer blocks on sockets: it is half-sync/half-async on the reactor, `pool.rs`.)
//!
//! Invariants the connection loop keeps:
//! - Output is bounded by the protocol's high-water mark: a thread writes what `advance` produced
//!   before it asks for more, so a client that does not read blocks only its own thread.
//! - Timeouts are socket options, so the blocking calls enforce them: SO_SNDTIMEO (write stall)
//!   once per connection, SO_RCVTIMEO set before a read only when the rule changes — the idle
//!   timeout between requests, or what is left of the header timeout while a head arrives (HTTP:
//!   408, then flush and linger).
//! - A blocking call under SO_RCVTIMEO/SO_SNDTIMEO that fails with EINTR (the process was stopped
//!   and continued) is retried: not the client's doing.
//! - Counters: each thread counts into its own [`Counters`] and folds them into the shared
//!   totals before each blocking send and each idle read, so `/stats` is server-wide and touches
//!   no connection.
//! - Shutdown (RFC 9112 §9.6): from the first turn after the flag is raised, the session is
//!   drained ([`Session::drain`]); an idle keep-alive connection waits for one more request only
//!   until the drain window ends, then what has arrived is still served and a connection with
//!   nothing pending is closed. A thread marks itself idle (`idle`) before it reads with nothing
//!   in flight, so that the accept thread can wake it with `shutdown(SHUT_RD)`.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signalfd::SignalFd;
use socket2::SockRef;

use super::kit::{
    self, CountingEnv, RateLimitedLog, ACCEPT_PAUSE, LINGER_BYTES, LINGER_TIME, MAX_BUFFERED_INPUT,
    READ_CHUNK,
};
use super::DriverOptions;
use crate::board::StatsBoard;
use crate::date::HttpDate;
use crate::proto::{Env, Proto, Session, Status};
use crate::stats::{self, Counters};
use crate::sys;

/// First read of a request: small, because an idle connection keeps this buffer while it waits.
const FIRST_READ: usize = 4096;
/// Buffers grown past this are freed when the connection goes idle.
const KEEP_WHEN_IDLE: usize = 16 * 1024;

/// What every thread of a blocking driver shares, whatever the driver.
#[derive(Debug)]
pub struct ServerState {
    /// Counters of finished turns and finished threads; each thread adds its own in batches.
    totals: Mutex<Counters>,
    /// Set (after `drain_until`) when shutdown begins; every thread then drains its session.
    shutting_down: AtomicBool,
    /// When the drain window of idle keep-alive connections ends.
    drain_until: OnceLock<Instant>,
    /// With `--workers N`: where this process publishes its totals for the other workers.
    board: Option<Arc<StatsBoard>>,
    /// `--blocking-routes`: `/sleep` and `/work` are served.
    blocking_routes: bool,
}

impl ServerState {
    pub fn new(board: Option<Arc<StatsBoard>>, blocking_routes: bool) -> ServerState {
        ServerState {
            blocking_routes,
            totals: Mutex::new(Counters::default()),
            shutting_down: AtomicBool::new(false),
            drain_until: OnceLock::new(),
            board,
        }
    }

    pub fn totals(&self) -> MutexGuard<'_, Counters> {
        self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// With `--workers N`: makes this process's totals visible to `/stats` on other workers.
    pub fn publish(&self, totals: &Counters) {
        if let Some(board) = &self.board {
            board.publish(totals);
        }
    }

    /// Folds a thread's counts into the totals.
    pub fn add(&self, counters: &Counters) {
        let mut totals = self.totals();
        totals.merge(counters);
        self.publish(&totals);
    }

    /// Counts connections that have ended (or were never served).
    pub fn remove_connections(&self, n: u64) {
        let mut totals = self.totals();
        totals.connections_current -= n;
        self.publish(&totals);
    }

    /// Raises the shutdown flag; returns when the drain window and the grace period end. Echo
    /// has no next request to wait for: its idle connections get no drain window.
    pub fn begin_shutdown(&self, options: &DriverOptions) -> (Instant, Instant) {
        let grace_end = Instant::now() + options.config.shutdown_grace;
        let window = match options.config.proto {
            Proto::Echo => Duration::ZERO,
            Proto::Http => options.config.keepalive_drain_window(),
        };
        let window_end = Instant::now() + window;
        let _ = self.drain_until.set(window_end);
        self.shutting_down.store(true, Ordering::SeqCst);
        (window_end, grace_end)
    }

    fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// A blocking driver's shared state, as its threads see it.
pub trait DriverState: Send + Sync + 'static {
    /// The name `/stats` and the summary line show.
    const BACKEND: &'static str;
    fn server(&self) -> &ServerState;
    /// Open connections whose threads are about to notice that they are over: `/stats` does
    /// not count them as open.
    fn connections_ending(&self) -> u64 {
        0
    }
}

/// One thread's view of the server: its own date cache and the counters not yet folded in.
pub struct ThreadEnv<S: DriverState> {
    pub date: HttpDate,
    pub local: Counters,
    pub state: Arc<S>,
    /// The session now served has been drained: requests now are answered during shutdown.
    pub draining: bool,
}

impl<S: DriverState> ThreadEnv<S> {
    pub fn new(state: Arc<S>) -> ThreadEnv<S> {
        ThreadEnv {
            date: HttpDate::default(),
            local: Counters::default(),
            state,
            draining: false,
        }
    }

    /// Folds this thread's counts into the totals.
    pub fn flush(&mut self) {
        if self.local != Counters::default() {
            self.state.server().add(&self.local);
            self.local = Counters::default();
        }
    }
}

impl<S: DriverState> Env for ThreadEnv<S> {
    fn http_date(&self) -> &[u8] {
        self.date.as_bytes()
    }

    fn stats_json(&self) -> String {
        let server = self.state.server();
        let mut counters = *server.totals();
        counters.merge(&self.local);
        counters.connections_current = counters
            .connections_current
            .saturating_sub(self.state.connections_ending());
        match &server.board {
            Some(board) => {
                board.publish(&counters);
                let (totals, workers) = board.totals();
                stats::stats_json(S::BACKEND, "total", workers, &totals)
            }
            None => stats::stats_json(S::BACKEND, "process", 1, &counters),
        }
    }

    fn count_request(&mut self) {
        self.local.requests += 1;
        if self.draining {
            self.local.shutdown_answered += 1;
        }
    }

    fn blocking_routes(&self) -> bool {
        self.state.server().blocking_routes
    }
}

impl<S: DriverState> CountingEnv for ThreadEnv<S> {
    fn counters(&mut self) -> &mut Counters {
        &mut self.local
    }

    fn publish_now(&mut self) {
        self.flush();
    }

    fn refresh_date(&mut self) {
        self.date.refresh();
    }
}

/// The accept thread of a blocking driver.
pub trait Acceptor {
    type State: DriverState;
    fn env(&mut self) -> &mut ThreadEnv<Self::State>;
    /// Gives the connection to a thread, or refuses it; false when accepting must pause (no
    /// thread could be created).
    fn admit(&mut self, fd: OwnedFd) -> bool;
    /// Where failures to accept are logged, at most once a second.
    fn failures(&mut self) -> &mut RateLimitedLog;
}

/// The accept thread until SIGINT/SIGTERM: it waits with poll(2) on the signalfd and the
/// listener, so a stop signal is seen even when no client connects. Out of descriptors (or
/// threads), the listener is left out of the wait for [`ACCEPT_PAUSE`] instead of spinning.
pub fn accept_until_stopped(
    acceptor: &mut impl Acceptor,
    listener: RawFd,
    signals: &mut SignalFd,
) -> io::Result<()> {
    let mut paused_until: Option<Instant> = None;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: listener,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let now = Instant::now();
        let watched = match paused_until {
            Some(at) if at > now => 1,
            _ => 2,
        };
        let timeout = paused_until.map(|at| at.saturating_duration_since(now));
        acceptor.env().local.syscalls.waits += 1;
        sys::poll(&mut fds[..watched], timeout)?;
        if fds[0].revents != 0 && kit::take_stop_signals(signals, &mut acceptor.env().local) {
            return Ok(());
        }
        if paused_until.is_some_and(|at| at <= Instant::now()) {
            paused_until = None;
        }
        if watched == 2 && fds[1].revents != 0 {
            paused_until = accept_up_to(acceptor, listener, usize::MAX);
        }
        acceptor.env().flush();
    }
}

/// At shutdown: connections the kernel completed before the signal are clients like any other,
/// taken in (and drained) rather than reset by closing the listener on them. Only those queued
/// now: clients that keep connecting would otherwise keep this going.
pub fn take_backlog(acceptor: &mut impl Acceptor, listener: RawFd) {
    let queued = sys::accept_queue_len(listener).unwrap_or(0);
    accept_up_to(acceptor, listener, queued);
}

/// Accepts until EAGAIN or `limit`; returns until when to pause when descriptors or threads ran
/// out.
fn accept_up_to(acceptor: &mut impl Acceptor, listener: RawFd, limit: usize) -> Option<Instant> {
    for _ in 0..limit {
        acceptor.env().local.syscalls.accepts += 1;
        let fd = match sys::accept(listener, false) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if sys::is_fd_exhaustion(&e) => {
                acceptor
                    .failures()
                    .warn(format_args!("accept: {e}; pausing accepts"));
                return Some(Instant::now() + ACCEPT_PAUSE);
            }
            Err(e) => {
                // ECONNABORTED and friends: that client is gone, the next may not be.
                log::debug!("accept: {e}");
                continue;
            }
        };
        acceptor.env().local.connections_total += 1;
        // As the reactor does: see sys::set_nodelay. Not fatal when it fails.
        let _ = sys::set_nodelay(fd.as_raw_fd());
        // Counted before the connection has a thread that could answer `/stats`: a client
        // that asks on it must see itself among `connections_total`.
        acceptor.env().flush();
        if !acceptor.admit(fd) {
            return Some(Instant::now() + ACCEPT_PAUSE);
        }
    }
    None
}

/// The end of a blocking driver's shutdown: waits (on `left`, signalled under `guard`'s lock
/// when a connection ends) until `open` says none is left. Until the drain window is over, idle
/// connections may still get a last request; then those still idle since before the signal
/// (blocked in `read` under the idle timeout) are woken with `shutdown(SHUT_RD)`, which lets
/// them read what has arrived, then end of file. At the end of the grace period what is left is
/// cut. `shut_down(state, how, only_idle)` applies a shutdown to the driver's connections (only
/// to the idle ones if asked). True when every connection finished in time.
///
/// A thread stores its `idle` flag and then loads the shutdown flag; the shutdown flag was
/// stored before `shut_down` loads `idle` (both SeqCst), so an idle thread either sees the
/// flag and bounds its read by the window, or is seen idle here.
pub fn finish<T>(
    mut guard: MutexGuard<'_, T>,
    left: &Condvar,
    (window_end, grace_end): (Instant, Instant),
    open: impl Fn(&T) -> usize,
    shut_down: impl Fn(&T, Shutdown, bool),
) -> bool {
    let mut woken = false;
    while open(&guard) > 0 {
        let now = Instant::now();
        if now >= grace_end {
            log::warn!("grace period over: closing {} connections", open(&guard));
            shut_down(&guard, Shutdown::Both, false);
            return false;
        }
        if !woken && now >= window_end {
            woken = true;
            shut_down(&guard, Shutdown::Read, true);
        }
        let until = if woken { grace_end } else { window_end };
        guard = left
            .wait_timeout(guard, until.saturating_duration_since(now))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    true
}

/// What a connection's thread is given besides its socket.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub proto: Proto,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
}

impl ConnLimits {
    pub fn from_options(options: &DriverOptions) -> ConnLimits {
        ConnLimits {
            proto: options.config.proto,
            header_timeout: options.config.header_timeout,
            idle_timeout: options.config.idle_timeout,
            write_timeout: options.config.write_timeout,
        }
    }
}

/// Serves one connection on this thread until the peer or the protocol ends it. `idle` is set
/// while the thread is (about to be) blocked reading with nothing in flight.
pub fn serve<S: DriverState>(
    fd: &OwnedFd,
    idle: &AtomicBool,
    limits: ConnLimits,
    env: &mut ThreadEnv<S>,
) {
    let session = Session::new(limits.proto);
    let mut conn = BlockingConn {
        fd: fd.as_raw_fd(),
        socket: SockRef::from(fd),
        head_started: session.awaiting_head().then(Instant::now),
        session,
        input: Vec::new(),
        output: Vec::new(),
        peer_eof: false,
        idle,
        limits,
        read_timeout: None,
        bulk: false,
        drained: false,
    };
    // A send that makes no progress for the write timeout fails with EAGAIN.
    env.local.syscalls.ctl += 1;
    if conn
        .socket
        .set_write_timeout(Some(at_least_1ms(limits.write_timeout)))
        .is_ok()
    {
        conn.serve(env);
    }
    idle.store(false, Ordering::SeqCst);
}

/// A zero timeout means "none" to SO_RCVTIMEO/SO_SNDTIMEO; ours always mean a bound.
fn at_least_1ms(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

/// A connection served with blocking I/O.
struct BlockingConn<'a> {
    fd: RawFd,
    socket: SockRef<'a>,
    session: Session,
    /// When the request head now arriving began (None: none is arriving): the header timeout
    /// counts from here, so a client dripping a byte at a time is still cut.
    head_started: Option<Instant>,
    limits: ConnLimits,
    /// The SO_RCVTIMEO now set, to skip setting it again.
    read_timeout: Option<Duration>,
    /// The last read filled its buffer: more is probably waiting, so read in big chunks.
    bulk: bool,
    /// Received and not yet consumed.
    input: Vec<u8>,
    /// Produced and not yet sent (at most about one high-water mark).
    output: Vec<u8>,
    peer_eof: bool,
    idle: &'a AtomicBool,
    /// The session has been told that the server is shutting down.
    drained: bool,
}

impl BlockingConn<'_> {
    /// Read, advance, write, until the peer or the protocol ends the connection.
    fn serve<S: DriverState>(&mut self, env: &mut ThreadEnv<S>) {
        loop {
            self.drain_if_shutting_down(env);
            // Let the protocol turn input (or a streamed body) into output, up to the high-water
            // mark; then write all of it before asking for more.
            let mut progressed = false;
            if !self.input.is_empty() || self.session.has_pending_output() {
                env.date.refresh();
                let before = self.output.len();
                let consumed = self.session.advance(&self.input, &mut self.output, env);
                self.input.drain(..consumed);
                progressed = kit::run_blocking_inline(&mut self.session, &mut self.output, env);
                if consumed > 0 {
                    // A request head ended; if another has begun behind it, its clock starts now.
                    self.head_started = None;
                }
                progressed |= consumed > 0 || self.output.len() > before;
            }
            if !self.output.is_empty() {
                if let Err(e) = self.write_output(env) {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        env.local.timeouts_write += 1;
                        log::debug!("fd {}: send stalled; closing", self.fd);
                    } else {
                        log::debug!("fd {}: {e}; closing", self.fd);
                    }
                    return;
                }
                continue;
            }
            if progressed {
                continue;
            }
            if self.session.status() == Status::CloseAfterFlush {
                return self.linger(env);
            }
            if self.peer_eof {
                // Everything the peer sent before its half-close has been answered.
                return;
            }
            if self.input.len() > MAX_BUFFERED_INPUT {
                log::warn!(
                    "fd {}: protocol left {} bytes unconsumed; closing",
                    self.fd,
                    self.input.len()
                );
                return;
            }
            if !self.wait_for_input(env) {
                return;
            }
        }
    }

    /// Writes the whole output, blocking: a client that does not read stalls only this thread.
    /// Fails (EAGAIN) once the write timeout passes without progress.
    fn write_output<S: DriverState>(&mut self, env: &mut ThreadEnv<S>) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.output.len() {
            env.local.syscalls.writes += 1;
            // Before the client can see this response (and before we may block), `/stats` on any
            // connection sees the request, the read and this write.
            env.flush();
            let n = match sys::send(self.fd, &self.output[sent..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => result?,
            };
            env.local.bytes_out += n as u64;
            sent += n;
        }
        self.output.clear();
        Ok(())
    }

    /// From the first turn after the shutdown flag is raised, the session knows (RFC 9112 §9.6):
    /// the response in progress or the next one is its last, with `Connection: close`.
    fn drain_if_shutting_down<S: DriverState>(&mut self, env: &mut ThreadEnv<S>) {
        if !self.drained && env.state.server().is_shutting_down() {
            self.drained = true;
            env.draining = true;
            self.session.drain();
        }
    }

    /// One blocking read; false when the connection should close (error, timeout, or nothing
    /// pending once the drain window is over).
    fn wait_for_input<S: DriverState>(&mut self, env: &mut ThreadEnv<S>) -> bool {
        if !self.session.awaiting_head() {
            self.head_started = None;
        } else if self.head_started.is_none() && !self.input.is_empty() {
            self.head_started = Some(Instant::now());
        }
        // The rule that bounds this read: the header timeout, from when the head began, or the
        // idle timeout (between requests, or inside a body), from now.
        let mut timeout = match self.head_started {
            Some(start) => self.limits.header_timeout.saturating_sub(start.elapsed()),
            None => self.limits.idle_timeout,
        };
        if timeout.is_zero() {
            return self.timed_out(env);
        }
        let idle = self.input.is_empty() && !self.session.has_pending_output();
        if idle {
            // Idle: give back what a big request grew, and let shutdown find us.
            for buf in [&mut self.input, &mut self.output] {
                if buf.capacity() > KEEP_WHEN_IDLE {
                    *buf = Vec::new();
                }
            }
            self.bulk = false;
            env.flush();
            // Stored before the flag is loaded, both SeqCst: either this thread sees the flag
            // and bounds its read by the drain window, or the accept thread sees it idle.
            self.idle.store(true, Ordering::SeqCst);
            let server = env.state.server();
            if server.is_shutting_down() {
                let drain_until = server.drain_until.get().copied();
                self.drain_if_shutting_down(env);
                if self.session.status() == Status::CloseAfterFlush {
                    // Echo: nothing more to wait for.
                    self.idle.store(false, Ordering::SeqCst);
                    return true;
                }
                let left = drain_until.map_or(Duration::ZERO, |end| {
                    end.saturating_duration_since(Instant::now())
                });
                if left.is_zero() {
                    // The window is over: serve a request that has already arrived; a connection
                    // with nothing pending is closed.
                    if !sys::readable_now(self.fd) {
                        return false;
                    }
                } else {
                    timeout = timeout.min(left);
                }
            }
        }
        let timeout = at_least_1ms(timeout);
        if self.read_timeout != Some(timeout) {
            env.local.syscalls.ctl += 1;
            if self.socket.set_read_timeout(Some(timeout)).is_err() {
                return false;
            }
            self.read_timeout = Some(timeout);
        }
        // Small while requests are small; big once a read has filled what it was given.
        let want = if self.bulk { READ_CHUNK } else { FIRST_READ };
        env.local.syscalls.reads += 1;
        let result = sys::read_append(self.fd, &mut self.input, want);
        self.idle.store(false, Ordering::SeqCst);
        match result {
            Ok(0) => self.peer_eof = true,
            Ok(n) => {
                env.local.bytes_in += n as u64;
                self.bulk = n == want;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return self.timed_out(env),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
        true
    }

    /// A read timed out: a request head that took too long gets its 408 (HTTP) and the usual
    /// flush-and-linger; an idle connection (or one that never sent a byte) is closed — unless
    /// the drain window just ended, when it gets one last look for a request. False: close now.
    fn timed_out<S: DriverState>(&mut self, env: &mut ThreadEnv<S>) -> bool {
        if self.head_started.is_none() || self.input.is_empty() {
            if self.drained && self.input.is_empty() && !self.session.has_pending_output() {
                return true;
            }
            env.local.timeouts_idle += 1;
            log::debug!("fd {}: idle; closing", self.fd);
            return false;
        }
        env.local.timeouts_header += 1;
        log::debug!(
            "fd {}: request head not complete within {:?}",
            self.fd,
            self.limits.header_timeout
        );
        self.head_started = None;
        self.session.request_timeout(&mut self.output, env);
        self.session.status() == Status::CloseAfterFlush
    }

    /// Shuts down writing, then reads and discards until EOF, too much, or the deadline, so that
    /// the client reads our response rather than a reset caused by its unread bytes.
    fn linger<S: DriverState>(&mut self, env: &mut ThreadEnv<S>) {
        let _ = sys::shutdown_write(self.fd);
        if self.peer_eof {
            return;
        }
        let deadline = Instant::now() + LINGER_TIME;
        let mut discarded = 0;
        let mut buf = [0u8; 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.socket.set_read_timeout(Some(left)).is_err() {
                return;
            }
            env.local.syscalls.reads += 1;
            match sys::read(self.fd, &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    discarded += n;
                    if discarded > LINGER_BYTES {
                        return;
                    }
                }
            }
        }
    }
}
