//! Thread per connection: the model of the classic texts before multiplexing, with blocking I/O.
//!
//! Invariants this driver keeps:
//! - One accept thread (the caller's) waits with poll(2) on the listener and the signalfd, so a
//!   SIGTERM is seen even when no client connects. Every accepted socket is blocking and gets its
//!   own OS thread with a small stack (`--thread-stack`); nothing else runs on that thread.
//! - A thread that cannot be created (EAGAIN: threads-max, pid_max, memory) costs that one
//!   connection, which is refused (HTTP: 503) and logged at most once a second — never a panic.
//! - Output is bounded by the protocol's high-water mark: a thread writes what `advance` produced
//!   before it asks for more, so a client that does not read blocks only its own thread.
//! - No global mutable state: each thread counts into its own [`Counters`] and folds them into the
//!   shared totals before each blocking send and read (two uncontended locks per request), so
//!   `/stats` is server-wide.
//! - Timeouts are socket options, so the blocking calls enforce them: SO_SNDTIMEO (write stall)
//!   once per connection, SO_RCVTIMEO set before a read only when the rule changes — the idle
//!   timeout between requests, or what is left of the header timeout while a head arrives.
//! - Shutdown: the registry of live connections lets the accept thread wake threads that are idle
//!   in `read` (`shutdown(SHUT_RD)`), while busy ones finish their response and then see the flag.
//!   The registry holds each descriptor open (an `Arc<OwnedFd>`) until the connection leaves it,
//!   so the accept thread never shuts down a descriptor number that was reused.

use std::collections::HashMap;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use socket2::SockRef;

use super::DriverOptions;
use crate::board::StatsBoard;
use crate::date::HttpDate;
use crate::proto::{Env, Proto, Session, Status};
use crate::stats::{self, Counters};
use crate::sys;

const BACKEND: &str = "threads";
/// First read of a request: small, because an idle connection keeps this buffer while it waits.
const FIRST_READ: usize = 4096;
/// Reads once a request turned out to be bigger than the first read.
const READ_CHUNK: usize = 64 * 1024;
/// Buffers grown past this are freed when the connection goes idle.
const KEEP_WHEN_IDLE: usize = 16 * 1024;
/// See the reactor: a protocol that neither consumes nor rejects this much input has a bug.
const MAX_BUFFERED_INPUT: usize = 2 * 1024 * 1024 + 64 * 1024;
/// After an error response: how long and how much is read and discarded before closing.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;
/// After EMFILE/ENFILE (or a failed thread creation), how long accepting pauses.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// What the accept thread and every connection thread share.
struct Shared {
    /// Counters of finished turns and finished threads; each thread adds its own in batches.
    totals: Mutex<Counters>,
    /// Live connections by id, for `--max-conns` and for waking idle threads at shutdown.
    registry: Mutex<HashMap<u64, Arc<Slot>>>,
    /// Signalled when a connection leaves the registry.
    left: Condvar,
    shutting_down: AtomicBool,
    /// With `--workers N`: where this process publishes its totals for the other workers.
    board: Option<Arc<StatsBoard>>,
}

/// A live connection as the accept thread sees it.
struct Slot {
    /// Shared with the connection's thread: the descriptor stays open while it is registered.
    fd: Arc<OwnedFd>,
    /// The thread is (about to be) blocked reading with nothing in flight.
    idle: AtomicBool,
}

impl Shared {
    fn totals(&self) -> MutexGuard<'_, Counters> {
        self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn registry(&self) -> MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// With `--workers N`: makes this process's totals visible to `/stats` on other workers.
    fn publish(&self, totals: &Counters) {
        if let Some(board) = &self.board {
            board.publish(totals);
        }
    }
}

/// Connections whose threads are about to notice that they are over: reset by the peer, or idle
/// with the peer gone. `/stats` does not count them as open, as a single-threaded loop would have
/// seen their hang-up before a later request. One zero-timeout poll(2) over the registry.
fn connections_ending(shared: &Shared) -> u64 {
    let slots: Vec<Arc<Slot>> = shared.registry().values().cloned().collect();
    // The Arcs keep every descriptor open while we poll it.
    let mut fds: Vec<libc::pollfd> = slots
        .iter()
        .map(|slot| libc::pollfd {
            fd: slot.fd.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        })
        .collect();
    if fds.is_empty() || sys::poll(&mut fds, Some(Duration::ZERO)).is_err() {
        return 0;
    }
    let reset = libc::POLLHUP | libc::POLLERR;
    slots
        .iter()
        .zip(&fds)
        .filter(|(slot, p)| {
            p.revents & reset != 0
                || (p.revents & libc::POLLRDHUP != 0 && slot.idle.load(Ordering::SeqCst))
        })
        .count() as u64
}

/// One thread's view of the server: its own date cache and the counters not yet folded in.
struct ThreadEnv {
    date: HttpDate,
    local: Counters,
    shared: Arc<Shared>,
}

impl ThreadEnv {
    fn new(shared: Arc<Shared>) -> ThreadEnv {
        ThreadEnv {
            date: HttpDate::default(),
            local: Counters::default(),
            shared,
        }
    }

    /// Folds this thread's counts into the totals.
    fn flush(&mut self) {
        if self.local != Counters::default() {
            let mut totals = self.shared.totals();
            totals.merge(&self.local);
            self.shared.publish(&totals);
            self.local = Counters::default();
        }
    }
}

impl Env for ThreadEnv {
    fn http_date(&self) -> &[u8] {
        self.date.as_bytes()
    }

    fn stats_json(&self) -> String {
        let mut counters = *self.shared.totals();
        counters.merge(&self.local);
        counters.connections_current = counters
            .connections_current
            .saturating_sub(connections_ending(&self.shared));
        match &self.shared.board {
            Some(board) => {
                board.publish(&counters);
                let (totals, workers) = board.totals();
                stats::stats_json(BACKEND, "total", workers, &totals)
            }
            None => stats::stats_json(BACKEND, "process", 1, &counters),
        }
    }

    fn count_request(&mut self) {
        self.local.requests += 1;
    }
}

/// Serves until SIGINT/SIGTERM and the end of the grace period; returns the counters.
pub fn run(
    listener: OwnedFd,
    mut signals: SignalFd,
    options: &DriverOptions,
) -> io::Result<Counters> {
    sys::set_nonblocking(listener.as_raw_fd(), true)?;
    let shared = Arc::new(Shared {
        totals: Mutex::new(Counters::default()),
        registry: Mutex::new(HashMap::new()),
        left: Condvar::new(),
        shutting_down: AtomicBool::new(false),
        board: options.board.clone(),
    });
    let mut acceptor = Acceptor {
        env: ThreadEnv::new(Arc::clone(&shared)),
        options: options.clone(),
        next_id: 0,
        last_failure_log: None,
        failures: 0,
    };
    let mut paused_until: Option<Instant> = None;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: listener.as_raw_fd(),
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
        acceptor.env.local.syscalls.waits += 1;
        sys::poll(&mut fds[..watched], timeout)?;
        if fds[0].revents != 0 && take_signals(&mut signals, &mut acceptor.env) {
            break;
        }
        if paused_until.is_some_and(|at| at <= Instant::now()) {
            paused_until = None;
        }
        if watched == 2 && fds[1].revents != 0 {
            paused_until = acceptor.accept_all(listener.as_raw_fd());
        }
        acceptor.env.flush();
    }
    drop(listener);
    acceptor.env.flush();
    finish(&shared, options.shutdown_grace);
    let counters = *shared.totals();
    log::info!("{}", stats::summary_line(BACKEND, &counters));
    Ok(counters)
}

/// Reads the signalfd; true when the server should stop.
fn take_signals(signals: &mut SignalFd, env: &mut ThreadEnv) -> bool {
    let mut stop = false;
    while let Ok(Some(info)) = signals.read_signal() {
        env.local.syscalls.signals += 1;
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGHUP) => log::info!("SIGHUP ignored: c10k has no configuration to reload"),
            Ok(signal) => {
                log::info!("{signal}: no longer accepting; finishing in-flight responses");
                stop = true;
            }
            Err(_) => {}
        }
    }
    stop
}

/// Stops the connection threads: idle ones at once, busy ones after their response, all of them
/// when the grace period is over.
fn finish(shared: &Shared, grace: Duration) {
    let deadline = Instant::now() + grace;
    shared.shutting_down.store(true, Ordering::SeqCst);
    let mut registry = shared.registry();
    for slot in registry.values() {
        // A thread stores `idle` and then loads `shutting_down`; we store the flag and then load
        // `idle` (both SeqCst), so at least one of us sees the other and no idle thread is missed.
        if slot.idle.load(Ordering::SeqCst) {
            // The registry holds the descriptor open, so this number is still that connection's.
            let _ = SockRef::from(&*slot.fd).shutdown(Shutdown::Read);
        }
    }
    while !registry.is_empty() {
        let now = Instant::now();
        if now >= deadline {
            log::warn!("grace period over: closing {} connections", registry.len());
            for slot in registry.values() {
                let _ = SockRef::from(&*slot.fd).shutdown(Shutdown::Both);
            }
            return;
        }
        registry = shared
            .left
            .wait_timeout(registry, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// The accept thread's state.
struct Acceptor {
    env: ThreadEnv,
    options: DriverOptions,
    next_id: u64,
    last_failure_log: Option<Instant>,
    failures: u64,
}

impl Acceptor {
    /// Accepts until EAGAIN; returns how long to pause when descriptors or threads ran out.
    fn accept_all(&mut self, listener: RawFd) -> Option<Instant> {
        loop {
            self.env.local.syscalls.accepts += 1;
            let fd = match sys::accept(listener, false) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if sys::is_fd_exhaustion(&e) => {
                    self.log_failure(&format!("accept: {e}; pausing accepts"));
                    return Some(Instant::now() + ACCEPT_PAUSE);
                }
                Err(e) => {
                    log::debug!("accept: {e}");
                    continue;
                }
            };
            if !self.admit(fd) {
                return Some(Instant::now() + ACCEPT_PAUSE);
            }
        }
    }

    /// Gives the connection its thread, or refuses it; false when thread creation failed.
    fn admit(&mut self, fd: OwnedFd) -> bool {
        self.env.local.connections_total += 1;
        let shared = Arc::clone(&self.env.shared);
        let id = self.next_id;
        self.next_id += 1;
        let fd = Arc::new(fd);
        {
            let mut registry = shared.registry();
            if registry.len() >= self.options.max_conns {
                drop(registry);
                log::debug!(
                    "refused a connection: --max-conns {}",
                    self.options.max_conns
                );
                self.refuse(&fd);
                return true;
            }
            let slot = Arc::new(Slot {
                fd: Arc::clone(&fd),
                idle: AtomicBool::new(false),
            });
            registry.insert(id, Arc::clone(&slot));
            let mut totals = shared.totals();
            totals.connections_current += 1;
            shared.publish(&totals);
        }
        let config = ConnConfig {
            proto: self.options.proto,
            header_timeout: self.options.header_timeout,
            idle_timeout: self.options.idle_timeout,
            write_timeout: self.options.write_timeout,
        };
        let theirs = Arc::clone(&fd);
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .stack_size(self.options.thread_stack_kib * 1024)
            .spawn(move || connection_thread(id, theirs, config, thread_shared));
        match spawned {
            Ok(_) => true,
            Err(e) => {
                unregister(&shared, id);
                self.log_failure(&format!(
                    "cannot create a thread for a connection: {e}; refusing it"
                ));
                self.refuse(&fd);
                false
            }
        }
    }

    /// Answers 503 (HTTP) and closes: the server is full or cannot take the connection.
    fn refuse(&mut self, fd: &OwnedFd) {
        self.env.local.connections_refused += 1;
        let refusal = Session::refusal(self.options.proto, &self.env);
        if !refusal.is_empty() {
            self.env.local.syscalls.writes += 1;
            // A fresh socket's send buffer takes ~150 bytes without blocking.
            if let Ok(n) = sys::send(fd.as_raw_fd(), &refusal) {
                self.env.local.bytes_out += n as u64;
            }
            let _ = sys::shutdown_write(fd.as_raw_fd());
        }
    }

    fn log_failure(&mut self, what: &str) {
        self.failures += 1;
        let now = Instant::now();
        if self
            .last_failure_log
            .is_none_or(|at| now - at >= Duration::from_secs(1))
        {
            log::warn!("{what} ({} times so far)", self.failures);
            self.last_failure_log = Some(now);
        }
    }
}

/// Removes a connection from the registry (before its descriptor may be closed).
fn unregister(shared: &Shared, id: u64) {
    let mut registry = shared.registry();
    registry.remove(&id);
    let mut totals = shared.totals();
    totals.connections_current -= 1;
    shared.publish(&totals);
    drop(totals);
    shared.left.notify_all();
}

/// The whole life of one connection on its own thread.
fn connection_thread(id: u64, fd: Arc<OwnedFd>, config: ConnConfig, shared: Arc<Shared>) {
    let slot = shared.registry().get(&id).cloned();
    let mut env = ThreadEnv::new(Arc::clone(&shared));
    if let Some(slot) = slot {
        let session = Session::new(config.proto);
        let mut conn = Conn {
            fd: fd.as_raw_fd(),
            head_started: session.awaiting_head().then(Instant::now),
            session,
            input: Vec::new(),
            output: Vec::new(),
            peer_eof: false,
            slot,
            config,
            read_timeout: None,
            bulk: false,
        };
        // A send that makes no progress for the write timeout fails with EAGAIN.
        env.local.syscalls.ctl += 1;
        let socket = SockRef::from(&*fd);
        if socket
            .set_write_timeout(Some(at_least_1ms(config.write_timeout)))
            .is_ok()
        {
            conn.serve(&mut env);
        }
    }
    env.flush();
    // Leave the registry first: the accept thread only shuts down registered descriptors.
    unregister(&shared, id);
    drop(fd);
}

/// What a connection's thread is given besides its socket.
#[derive(Clone, Copy)]
struct ConnConfig {
    proto: Proto,
    header_timeout: Duration,
    idle_timeout: Duration,
    write_timeout: Duration,
}

/// A zero timeout means "none" to SO_RCVTIMEO/SO_SNDTIMEO; ours always mean a bound.
fn at_least_1ms(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

struct Conn {
    fd: RawFd,
    session: Session,
    /// When the request head now arriving began (None: none is arriving): the header timeout
    /// counts from here, so a client dripping a byte at a time is still cut.
    head_started: Option<Instant>,
    config: ConnConfig,
    /// The SO_RCVTIMEO now set, to skip setting it again.
    read_timeout: Option<Duration>,
    /// The last read filled its buffer: more is probably waiting, so read in big chunks.
    bulk: bool,
    /// Received and not yet consumed.
    input: Vec<u8>,
    /// Produced and not yet sent (at most about one high-water mark).
    output: Vec<u8>,
    peer_eof: bool,
    slot: Arc<Slot>,
}

impl Conn {
    /// Read, advance, write, until the peer or the protocol ends the connection.
    fn serve(&mut self, env: &mut ThreadEnv) {
        loop {
            // Let the protocol turn input (or a streamed body) into output, up to the high-water
            // mark; then write all of it before asking for more.
            let mut progressed = false;
            if !self.input.is_empty() || self.session.has_pending_output() {
                env.date.refresh();
                let before = self.output.len();
                let consumed = self.session.advance(&self.input, &mut self.output, env);
                self.input.drain(..consumed);
                if consumed > 0 {
                    // A request head ended; if another has begun behind it, its clock starts now.
                    self.head_started = None;
                }
                progressed = consumed > 0 || self.output.len() > before;
            }
            if !self.output.is_empty() {
                if self.write_output(env).is_err() {
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
    fn write_output(&mut self, env: &mut ThreadEnv) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.output.len() {
            env.local.syscalls.writes += 1;
            // Before the client can see this response (and before we may block), `/stats` on any
            // connection sees the request, the read and this write.
            env.flush();
            // Fails with EAGAIN once the write timeout passes without progress.
            let n = sys::send(self.fd, &self.output[sent..])?;
            env.local.bytes_out += n as u64;
            sent += n;
        }
        self.output.clear();
        Ok(())
    }

    /// One blocking read; false when the connection should close (error, or shutdown while idle).
    fn wait_for_input(&mut self, env: &mut ThreadEnv) -> bool {
        if !self.session.awaiting_head() {
            self.head_started = None;
        } else if self.head_started.is_none() && !self.input.is_empty() {
            self.head_started = Some(Instant::now());
        }
        // The rule that bounds this read: the header timeout, from when the head began, or the
        // idle timeout (between requests, or inside a body), from now.
        let timeout = match self.head_started {
            Some(start) => self.config.header_timeout.saturating_sub(start.elapsed()),
            None => self.config.idle_timeout,
        };
        if timeout.is_zero() {
            return self.timed_out(env);
        }
        let timeout = at_least_1ms(timeout);
        if self.read_timeout != Some(timeout) {
            env.local.syscalls.ctl += 1;
            if SockRef::from(&*self.slot.fd)
                .set_read_timeout(Some(timeout))
                .is_err()
            {
                return false;
            }
            self.read_timeout = Some(timeout);
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
            self.slot.idle.store(true, Ordering::SeqCst);
            if env.shared.shutting_down.load(Ordering::SeqCst) {
                return false;
            }
        }
        // Small while requests are small; big once a read has filled what it was given.
        let want = if self.bulk { READ_CHUNK } else { FIRST_READ };
        env.local.syscalls.reads += 1;
        let result = sys::read_append(self.fd, &mut self.input, want);
        self.slot.idle.store(false, Ordering::SeqCst);
        match result {
            Ok(0) => self.peer_eof = true,
            Ok(n) => {
                env.local.bytes_in += n as u64;
                self.bulk = n == want;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return self.timed_out(env),
            Err(_) => return false,
        }
        true
    }

    /// A read timed out: a request head that took too long gets its 408 (HTTP) and the usual
    /// flush-and-linger; an idle connection (or one that never sent a byte) is closed. False:
    /// close now.
    fn timed_out(&mut self, env: &mut ThreadEnv) -> bool {
        if self.head_started.is_none() || self.input.is_empty() {
            log::debug!("fd {}: idle; closing", self.fd);
            return false;
        }
        log::debug!(
            "fd {}: request head not complete within {:?}",
            self.fd,
            self.config.header_timeout
        );
        self.head_started = None;
        self.session.request_timeout(&mut self.output, env);
        self.session.status() == Status::CloseAfterFlush
    }

    /// Shuts down writing, then reads and discards until EOF, too much, or the deadline, so that
    /// the client reads our response rather than a reset caused by its unread bytes.
    fn linger(&mut self, env: &mut ThreadEnv) {
        let _ = sys::shutdown_write(self.fd);
        if self.peer_eof {
            return;
        }
        let deadline = Instant::now() + LINGER_TIME;
        let mut discarded = 0;
        let mut buf = [0u8; 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let socket = SockRef::from(&*self.slot.fd);
            if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
                return;
            }
            env.local.syscalls.reads += 1;
            match sys::read(self.fd, &mut buf) {
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
