//! A fixed pool of blocking threads fed by an accept loop through a bounded queue — the middle
//! road of the classic texts between a thread per connection and an event loop.
//!
//! Invariants this driver keeps:
//! - Exactly `--pool-threads` connection threads, started once; no thread is ever created per
//!   connection. A connection holds its thread for its whole keep-alive life (blocking I/O):
//!   that is the model, and the reason a pool cannot hold C10K.
//! - Connections beyond the busy threads wait in a FIFO queue of `QUEUE_PER_THREAD` × threads.
//!   When the queue is full (or `--max-conns` is reached, counting busy and queued), the next
//!   connection is refused at once — HTTP 503, echo: closed — counted in `connections_refused`,
//!   and logged at most once a second. A client is served, queued, or told: never left hanging.
//! - The accept thread (the caller's) waits with poll(2) on the listener and the signalfd, so a
//!   SIGTERM is seen even when no client connects; EMFILE pauses accepting for 100 ms instead of
//!   spinning.
//! - Timeouts are socket options, so the blocking calls enforce them: SO_SNDTIMEO (write stall)
//!   once per connection, SO_RCVTIMEO before a read when the rule changes — the idle timeout
//!   between requests, or what is left of the header timeout (HTTP: 408) while a head arrives.
//! - Output is bounded by the protocol's high-water mark: a thread writes what `advance`
//!   produced before it reads again, so a client that does not read blocks only its own thread.
//! - Counters: each thread counts into its own [`Counters`] and folds them into the shared totals
//!   before each blocking call, so `/stats` is server-wide.
//! - Shutdown (RFC 9112 §9.6), as in the threads backend: take what is already in the backlog,
//!   close the listener, and raise the flag; every session is then drained ([`Session::drain`]):
//!   the response in progress or the next one is the last, with `Connection: close`, followed by
//!   shutdown of writing and a linger, so the client reads the response and not a reset. Queued
//!   connections are still served (their request may already be here), each for that one last
//!   request. Idle keep-alive connections get the drain window ([`super::KEEPALIVE_DRAIN_WINDOW`])
//!   for a last request; when it is over, what has arrived is still served and a connection with
//!   nothing pending is closed; threads idle since before the signal are woken then with
//!   `shutdown(SHUT_RD)` on a descriptor their slot holds open. At the end of the grace period what
//!   is still queued gets the refusal and what is still served is cut.

use std::collections::VecDeque;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
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

const BACKEND: &str = "pool";
/// Connections that may wait for a thread, per thread of the pool.
pub const QUEUE_PER_THREAD: usize = 4;
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
/// After EMFILE/ENFILE, how long accepting pauses.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Connections waiting for a thread, and how many threads hold one.
struct Queue {
    waiting: VecDeque<OwnedFd>,
    busy: usize,
    /// Nothing more will be queued (shutdown): threads exit once the queue is empty.
    closed: bool,
}

/// One pool thread as the accept thread sees it.
#[derive(Default)]
struct WorkerSlot {
    /// The connection it serves; the Arc keeps the descriptor open while the slot holds it.
    current: Mutex<Option<Arc<OwnedFd>>>,
    /// The thread is (about to be) blocked reading with nothing in flight.
    idle: AtomicBool,
}

struct Shared {
    totals: Mutex<Counters>,
    queue: Mutex<Queue>,
    /// Signalled when a connection is queued, and at shutdown.
    work: Condvar,
    /// Signalled when a thread finishes a connection.
    left: Condvar,
    slots: Vec<WorkerSlot>,
    /// Set (after `drain_until`) when shutdown begins; every session is then drained.
    shutting_down: AtomicBool,
    /// When the drain window of idle keep-alive connections ends.
    drain_until: OnceLock<Instant>,
    board: Option<Arc<StatsBoard>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn publish(&self, totals: &Counters) {
        if let Some(board) = &self.board {
            board.publish(totals);
        }
    }

    fn remove_connections(&self, n: u64) {
        let mut totals = lock(&self.totals);
        totals.connections_current -= n;
        self.publish(&totals);
    }

    fn add(&self, counters: &Counters) {
        let mut totals = lock(&self.totals);
        totals.merge(counters);
        self.publish(&totals);
    }
}

/// Connections whose threads are about to notice that they are over (reset, or idle with the
/// peer gone): `/stats` does not count them as open, as a single event loop would already have
/// seen their hang-up. One zero-timeout poll(2) over the busy threads' descriptors.
fn connections_ending(shared: &Shared) -> u64 {
    let held: Vec<(Arc<OwnedFd>, bool)> = shared
        .slots
        .iter()
        .filter_map(|slot| {
            let fd = lock(&slot.current).clone()?;
            Some((fd, slot.idle.load(Ordering::SeqCst)))
        })
        .collect();
    let mut fds: Vec<libc::pollfd> = held
        .iter()
        .map(|(fd, _)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        })
        .collect();
    if fds.is_empty() || sys::poll(&mut fds, Some(Duration::ZERO)).is_err() {
        return 0;
    }
    let reset = libc::POLLHUP | libc::POLLERR;
    held.iter()
        .zip(&fds)
        .filter(|((_, idle), p)| {
            p.revents & reset != 0 || (p.revents & libc::POLLRDHUP != 0 && *idle)
        })
        .count() as u64
}

/// One thread's view of the server: its own date cache and the counters not yet folded in.
struct ThreadEnv {
    date: HttpDate,
    local: Counters,
    shared: Arc<Shared>,
    /// The session now served has been drained: requests now are answered during shutdown.
    draining: bool,
}

impl ThreadEnv {
    fn new(shared: Arc<Shared>) -> ThreadEnv {
        ThreadEnv {
            date: HttpDate::default(),
            local: Counters::default(),
            shared,
            draining: false,
        }
    }

    fn flush(&mut self) {
        if self.local != Counters::default() {
            self.shared.add(&self.local);
            self.local = Counters::default();
        }
    }
}

impl Env for ThreadEnv {
    fn http_date(&self) -> &[u8] {
        self.date.as_bytes()
    }

    fn stats_json(&self) -> String {
        let mut counters = *lock(&self.shared.totals);
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
        if self.draining {
            self.local.shutdown_answered += 1;
        }
    }
}

/// What a pool thread needs besides its socket.
#[derive(Clone, Copy)]
struct ConnConfig {
    proto: Proto,
    header_timeout: Duration,
    idle_timeout: Duration,
    write_timeout: Duration,
}

/// Serves until SIGINT/SIGTERM and the end of the grace period; returns the counters.
pub fn run(
    listener: OwnedFd,
    mut signals: SignalFd,
    options: &DriverOptions,
) -> io::Result<Counters> {
    sys::set_nonblocking(listener.as_raw_fd(), true)?;
    let threads = options.pool_threads.max(1);
    let capacity = QUEUE_PER_THREAD * threads;
    let shared = Arc::new(Shared {
        totals: Mutex::new(Counters::default()),
        queue: Mutex::new(Queue {
            waiting: VecDeque::with_capacity(capacity),
            busy: 0,
            closed: false,
        }),
        work: Condvar::new(),
        left: Condvar::new(),
        slots: (0..threads).map(|_| WorkerSlot::default()).collect(),
        shutting_down: AtomicBool::new(false),
        drain_until: OnceLock::new(),
        board: options.board.clone(),
    });
    let config = ConnConfig {
        proto: options.proto,
        header_timeout: options.header_timeout,
        idle_timeout: options.idle_timeout,
        write_timeout: options.write_timeout,
    };
    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads {
        let shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name(format!("pool-{index}"))
            .stack_size(options.thread_stack_kib * 1024)
            .spawn(move || worker(index, &shared, config))?;
        handles.push(handle);
    }
    log::info!("pool: {threads} threads, a queue of {capacity} connections");
    let mut acceptor = Acceptor {
        env: ThreadEnv::new(Arc::clone(&shared)),
        options: options.clone(),
        capacity,
        last_log: None,
        refusals: 0,
        exhaustions: 0,
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
    let grace_end = Instant::now() + options.shutdown_grace;
    // Echo has no next request to wait for: its idle connections are woken at once.
    let window = match options.proto {
        Proto::Echo => Duration::ZERO,
        Proto::Http => super::keepalive_drain_window(options.shutdown_grace),
    };
    let window_end = Instant::now() + window;
    let _ = shared.drain_until.set(window_end);
    shared.shutting_down.store(true, Ordering::SeqCst);
    // Connections the kernel completed before the signal are clients like any other: queue them
    // (they are served drained) rather than reset them by closing the listener on them.
    let queued = sys::accept_queue_len(listener.as_raw_fd()).unwrap_or(0);
    acceptor.accept_up_to(listener.as_raw_fd(), queued);
    drop(listener);
    lock(&shared.queue).closed = true;
    shared.work.notify_all();
    acceptor.env.flush();
    let done = finish(&shared, window_end, grace_end);
    if !done {
        acceptor.refuse_queued();
    }
    acceptor.env.flush();
    if done {
        for handle in handles {
            let _ = handle.join();
        }
    }
    let counters = *lock(&shared.totals);
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

/// Waits until every queued and served connection is done: until the drain window is over,
/// idle ones may still get a last request; then threads still idle since before the signal are
/// woken; at the end of the grace period the connections being served are cut. True when every
/// connection has finished.
fn finish(shared: &Shared, window_end: Instant, grace_end: Instant) -> bool {
    let mut woken = false;
    let mut queue = lock(&shared.queue);
    while queue.busy > 0 || !queue.waiting.is_empty() {
        let now = Instant::now();
        if now >= grace_end {
            log::warn!(
                "grace period over: closing {} connections ({} still queued)",
                queue.busy,
                queue.waiting.len()
            );
            for slot in &shared.slots {
                if let Some(fd) = lock(&slot.current).as_ref() {
                    let _ = SockRef::from(&**fd).shutdown(Shutdown::Both);
                }
            }
            return false;
        }
        if !woken && now >= window_end {
            woken = true;
            for slot in &shared.slots {
                // A thread stores `idle` and then loads `shutting_down`; the flag was stored
                // before this load of `idle` (both SeqCst), so an idle thread either sees the
                // flag and bounds its read by the window, or is seen here. SHUT_RD lets it read
                // what has arrived, then end of file.
                if slot.idle.load(Ordering::SeqCst) {
                    if let Some(fd) = lock(&slot.current).as_ref() {
                        // The slot holds the descriptor open: still that connection's number.
                        let _ = SockRef::from(&**fd).shutdown(Shutdown::Read);
                    }
                }
            }
        }
        let until = if woken { grace_end } else { window_end };
        queue = shared
            .left
            .wait_timeout(queue, until.saturating_duration_since(now))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    true
}

/// The accept thread's state.
struct Acceptor {
    env: ThreadEnv,
    options: DriverOptions,
    capacity: usize,
    last_log: Option<Instant>,
    /// Connections refused because the queue was full.
    refusals: u64,
    exhaustions: u64,
}

impl Acceptor {
    /// Accepts until EAGAIN; returns how long to pause when descriptors ran out.
    fn accept_all(&mut self, listener: RawFd) -> Option<Instant> {
        self.accept_up_to(listener, usize::MAX)
    }

    /// Accepts at most `limit` connections (at shutdown: those queued when it began, since
    /// clients that keep connecting would otherwise keep this loop going).
    fn accept_up_to(&mut self, listener: RawFd, limit: usize) -> Option<Instant> {
        for _ in 0..limit {
            self.env.local.syscalls.accepts += 1;
            let fd = match sys::accept(listener, false) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if sys::is_fd_exhaustion(&e) => {
                    self.exhaustions += 1;
                    if self.log_due() {
                        log::warn!(
                            "accept: {e} ({} times so far); pausing accepts",
                            self.exhaustions
                        );
                    }
                    return Some(Instant::now() + ACCEPT_PAUSE);
                }
                Err(e) => {
                    log::debug!("accept: {e}");
                    continue;
                }
            };
            self.admit(fd);
        }
        None
    }

    /// Queues the connection for the next free thread, or refuses it.
    fn admit(&mut self, fd: OwnedFd) {
        self.env.local.connections_total += 1;
        let shared = Arc::clone(&self.env.shared);
        let mut queue = lock(&shared.queue);
        let (busy, queued) = (queue.busy, queue.waiting.len());
        if busy + queued < self.options.max_conns && queued < self.capacity {
            // Counted before a thread can take it (and count it out).
            {
                let mut totals = lock(&shared.totals);
                totals.connections_current += 1;
                shared.publish(&totals);
            }
            queue.waiting.push_back(fd);
            drop(queue);
            shared.work.notify_one();
            return;
        }
        drop(queue);
        if busy + queued >= self.options.max_conns {
            // As in the other backends: the operator asked for this limit.
            log::debug!(
                "refused a connection: --max-conns {}",
                self.options.max_conns
            );
        } else {
            self.refusals += 1;
            if self.log_due() {
                log::warn!(
                    "refusing a connection: all {} pool threads busy and the queue of {} full \
                     ({} refused so far)",
                    shared.slots.len(),
                    self.capacity,
                    self.refusals
                );
            }
        }
        self.refuse(&fd);
    }

    /// Answers 503 (HTTP) and closes.
    fn refuse(&mut self, fd: &OwnedFd) {
        self.env.local.connections_refused += 1;
        let refusal = Session::refusal(self.options.proto, &self.env);
        if !refusal.is_empty() {
            self.env.local.syscalls.writes += 1;
            // Counted before the client can see it: `/stats` asked right after the 503 has it.
            self.env.flush();
            // A fresh socket's send buffer takes ~150 bytes without blocking.
            if let Ok(n) = sys::send(fd.as_raw_fd(), &refusal) {
                self.env.local.bytes_out += n as u64;
            }
            let _ = sys::shutdown_write(fd.as_raw_fd());
        }
    }

    /// At the end of the grace period: connections still waiting for a thread get the refusal
    /// and are closed.
    fn refuse_queued(&mut self) {
        let shared = Arc::clone(&self.env.shared);
        let waiting: Vec<OwnedFd> = lock(&shared.queue).waiting.drain(..).collect();
        if !waiting.is_empty() {
            log::info!("closing {} queued connections", waiting.len());
        }
        for fd in &waiting {
            self.refuse(fd);
        }
        shared.remove_connections(waiting.len() as u64);
    }

    /// True at most once a second: warnings about refusals and EMFILE come in storms.
    fn log_due(&mut self) -> bool {
        let now = Instant::now();
        let due = self
            .last_log
            .is_none_or(|at| now - at >= Duration::from_secs(1));
        if due {
            self.last_log = Some(now);
        }
        due
    }
}

/// A pool thread: takes the oldest queued connection, serves it to its end, takes the next.
fn worker(index: usize, shared: &Arc<Shared>, config: ConnConfig) {
    let slot = &shared.slots[index];
    let mut env = ThreadEnv::new(Arc::clone(shared));
    loop {
        let fd = {
            let mut queue = lock(&shared.queue);
            loop {
                if let Some(fd) = queue.waiting.pop_front() {
                    queue.busy += 1;
                    break Arc::new(fd);
                }
                if queue.closed {
                    return;
                }
                queue = shared.work.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        *lock(&slot.current) = Some(Arc::clone(&fd));
        serve(&fd, slot, config, &mut env);
        env.draining = false;
        env.flush();
        slot.idle.store(false, Ordering::SeqCst);
        // Leave the slot first: the accept thread only shuts down descriptors that slots hold.
        *lock(&slot.current) = None;
        shared.remove_connections(1);
        drop(fd);
        lock(&shared.queue).busy -= 1;
        shared.left.notify_all();
    }
}

/// One connection, on this thread, until it ends.
fn serve(fd: &Arc<OwnedFd>, slot: &WorkerSlot, config: ConnConfig, env: &mut ThreadEnv) {
    let session = Session::new(config.proto);
    let mut conn = Conn {
        fd: fd.as_raw_fd(),
        socket: SockRef::from(&**fd),
        head_started: session.awaiting_head().then(Instant::now),
        session,
        input: Vec::new(),
        output: Vec::new(),
        peer_eof: false,
        slot,
        config,
        read_timeout: None,
        drained: false,
    };
    // A send that makes no progress for the write timeout fails with EAGAIN.
    env.local.syscalls.ctl += 1;
    if conn
        .socket
        .set_write_timeout(Some(at_least_1ms(config.write_timeout)))
        .is_ok()
    {
        conn.serve(env);
    }
}

/// A zero timeout means "none" to SO_RCVTIMEO/SO_SNDTIMEO; ours always mean a bound.
fn at_least_1ms(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

struct Conn<'a> {
    fd: RawFd,
    socket: SockRef<'a>,
    session: Session,
    /// When the request head now arriving began (None: none is arriving).
    head_started: Option<Instant>,
    config: ConnConfig,
    /// The SO_RCVTIMEO now set, to skip setting it again.
    read_timeout: Option<Duration>,
    /// Received and not yet consumed.
    input: Vec<u8>,
    /// Produced and not yet sent (at most about one high-water mark).
    output: Vec<u8>,
    peer_eof: bool,
    slot: &'a WorkerSlot,
    /// The session has been told that the server is shutting down.
    drained: bool,
}

impl Conn<'_> {
    /// Read, advance, write, until the peer or the protocol ends the connection.
    fn serve(&mut self, env: &mut ThreadEnv) {
        loop {
            self.drain_if_shutting_down(env);
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
                if let Err(e) = self.write_output(env) {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        env.local.timeouts_write += 1;
                    }
                    log::debug!("fd {}: {e}; closing", self.fd);
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

    /// Writes the whole output, blocking; fails (EAGAIN) once the write timeout passes without
    /// progress.
    fn write_output(&mut self, env: &mut ThreadEnv) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.output.len() {
            env.local.syscalls.writes += 1;
            // Before the client can see this response (and before we may block), `/stats` on any
            // connection sees the request, the read and this write.
            env.flush();
            let n = match sys::send(self.fd, &self.output[sent..]) {
                // A blocking call under SO_SNDTIMEO fails with EINTR when the process is
                // stopped and continued (SIGSTOP, a debugger): not the client's doing.
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
    fn drain_if_shutting_down(&mut self, env: &mut ThreadEnv) {
        if !self.drained && env.shared.shutting_down.load(Ordering::SeqCst) {
            self.drained = true;
            env.draining = true;
            self.session.drain();
        }
    }

    /// One blocking read; false when the connection should close (error, timeout, or nothing
    /// pending once the drain window is over).
    fn wait_for_input(&mut self, env: &mut ThreadEnv) -> bool {
        if !self.session.awaiting_head() {
            self.head_started = None;
        } else if self.head_started.is_none() && !self.input.is_empty() {
            self.head_started = Some(Instant::now());
        }
        let mut timeout = match self.head_started {
            Some(start) => self.config.header_timeout.saturating_sub(start.elapsed()),
            None => self.config.idle_timeout,
        };
        if timeout.is_zero() {
            return self.timed_out(env);
        }
        let idle = self.input.is_empty() && !self.session.has_pending_output();
        if idle {
            for buf in [&mut self.input, &mut self.output] {
                if buf.capacity() > KEEP_WHEN_IDLE {
                    *buf = Vec::new();
                }
            }
            env.flush();
            self.slot.idle.store(true, Ordering::SeqCst);
            if env.shared.shutting_down.load(Ordering::SeqCst) {
                self.drain_if_shutting_down(env);
                if self.session.status() == Status::CloseAfterFlush {
                    // Echo: nothing more to wait for.
                    self.slot.idle.store(false, Ordering::SeqCst);
                    return true;
                }
                let left = env.shared.drain_until.get().map_or(Duration::ZERO, |end| {
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
        let want = if self.input.capacity() < READ_CHUNK && self.input.is_empty() {
            FIRST_READ
        } else {
            READ_CHUNK
        };
        env.local.syscalls.reads += 1;
        let result = sys::read_append(self.fd, &mut self.input, want);
        self.slot.idle.store(false, Ordering::SeqCst);
        match result {
            Ok(0) => self.peer_eof = true,
            Ok(n) => env.local.bytes_in += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return self.timed_out(env),
            // Under SO_RCVTIMEO a stop and continue (SIGSTOP, a debugger) ends the read with
            // EINTR: the connection is fine, read again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
        true
    }

    /// A read timed out: a request head that took too long gets its 408 (HTTP) and the usual
    /// flush-and-linger; an idle connection is closed — unless the drain window just ended, when
    /// it gets one last look for a request. False: close now.
    fn timed_out(&mut self, env: &mut ThreadEnv) -> bool {
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
            self.config.header_timeout
        );
        self.head_started = None;
        self.session.request_timeout(&mut self.output, env);
        self.session.status() == Status::CloseAfterFlush
    }

    /// Shuts down writing, then reads and discards until EOF, too much, or the deadline.
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
