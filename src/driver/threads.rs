//! Thread per connection: the model of the classic texts before multiplexing, with blocking I/O.
//!
//! Invariants this driver keeps:
//! - One accept thread (the caller's) waits with poll(2) on the listener and the signalfd, so a
//!   SIGTERM is seen even when no client connects. Every accepted socket is blocking and gets its
//!   own OS thread with a small stack (`--thread-stack`); nothing else runs on that thread.
//! - Threads are capped before the host runs out: at start-up [`HostLimits`] reads threads-max,
//!   pid_max, the threads alive now, RLIMIT_NPROC, the cgroup's pids.max, and the memory
//!   available (MemAvailable and the cgroup's room) against the cost of one thread (its
//!   `--thread-stack` plus kernel stack and buffers), and takes for itself at most half of what
//!   each leaves free: other processes need threads too, and a server that exhausts the host's
//!   threads makes fork and clone fail for every process on it. `c10k backends` shows the cap
//!   and what bounds it; `--max-conns` lowers it (it cannot raise it: a smaller `--thread-stack`
//!   raises the memory bound). A connection beyond the cap is refused like one beyond
//!   `--max-conns`: HTTP 503, echo closed, counted in `connections_refused`.
//! - A thread that cannot be created all the same (EAGAIN) costs that one connection, which is
//!   refused (HTTP: 503) and logged at most once a second — never a panic.
//! - Output is bounded by the protocol's high-water mark: a thread writes what `advance` produced
//!   before it asks for more, so a client that does not read blocks only its own thread.
//! - No global mutable state: each thread counts into its own [`Counters`] and folds them into the
//!   shared totals before each blocking send and read (two uncontended locks per request), so
//!   `/stats` is server-wide and costs one lock, whatever the number of connections: it touches
//!   no connection (`connections_current` counts a connection until its thread has left).
//! - Timeouts are socket options, so the blocking calls enforce them: SO_SNDTIMEO (write stall)
//!   once per connection, SO_RCVTIMEO set before a read only when the rule changes — the idle
//!   timeout between requests, or what is left of the header timeout while a head arrives.
//! - Shutdown (RFC 9112 §9.6): the accept thread raises the flag, takes what is already in the
//!   backlog, and closes the listener; every thread then drains its session ([`Session::drain`]): a
//!   response in progress finishes and is the last, and the next request is answered with
//!   `Connection: close`, then writing is shut down and the input drained (linger), so the client
//!   reads the response, not a reset. An idle keep-alive connection gets a drain window
//!   ([`super::KEEPALIVE_DRAIN_WINDOW`]) for that next request, since closing it at once would race
//!   with a request already on its way; when the window is over, what has arrived is still served
//!   and a connection with nothing pending is closed. Threads that went idle before the signal
//!   (blocked in `read` under the idle timeout) are woken at the end of the window with
//!   `shutdown(SHUT_RD)`, which still lets them read what has arrived. Whatever is left at the end
//!   of the grace period is cut. The registry holds each descriptor open (an `Arc<OwnedFd>`) until
//!   the connection leaves it, so the accept thread never shuts down a descriptor number that was
//!   reused.

use std::collections::HashMap;
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
/// Of each limit on threads (host, user, cgroup, memory), the share this server takes: other
/// processes need threads too.
const HOST_SHARE: u64 = 2;
/// What a connection thread costs besides its stack: guard page, kernel stack (16 KiB on x86-64),
/// task struct and the rest of the kernel's bookkeeping, and the connection's first buffers.
const THREAD_OVERHEAD_KIB: u64 = 40;

/// The limits on how many threads this process may create, read from the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostLimits {
    /// /proc/sys/kernel/threads-max: threads on the host.
    pub threads_max: Option<u64>,
    /// /proc/sys/kernel/pid_max: every thread takes a pid.
    pub pid_max: Option<u64>,
    /// Threads alive on the host now (/proc/loadavg).
    pub threads_now: Option<u64>,
    /// Soft RLIMIT_NPROC (None: unlimited): threads of this user.
    pub nproc: Option<u64>,
    /// The cgroup's pids.max and pids.current.
    pub cgroup_pids: Option<(u64, u64)>,
    /// Bytes of memory available: MemAvailable, or the cgroup's room if smaller.
    pub mem_available: Option<u64>,
}

/// How many connection threads to allow, and which limit decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadCap {
    pub threads: usize,
    pub bound: &'static str,
}

impl HostLimits {
    /// Reads the limits from /proc, /sys/fs/cgroup and getrlimit; what cannot be read is `None`.
    pub fn read() -> HostLimits {
        let number =
            |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
        let threads_now = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok());
        let nproc = sys::nproc_limit();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_available = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024);
        let cgroup_pids = cgroup_file("pids", "pids.max").zip(cgroup_file("pids", "pids.current"));
        let cgroup_mem_room = cgroup_file("memory", "memory.max")
            .zip(cgroup_file("memory", "memory.current"))
            .or_else(|| {
                cgroup_file("memory", "memory.limit_in_bytes")
                    .zip(cgroup_file("memory", "memory.usage_in_bytes"))
            })
            .map(|(max, used)| max.saturating_sub(used));
        HostLimits {
            threads_max: number("/proc/sys/kernel/threads-max"),
            pid_max: number("/proc/sys/kernel/pid_max"),
            threads_now,
            nproc,
            cgroup_pids,
            mem_available: match (mem_available, cgroup_mem_room) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    /// The cap on connection threads with stacks of `stack_kib`: the smallest of each limit's
    /// share (see [`HOST_SHARE`]), at least 1.
    pub fn cap(&self, stack_kib: usize) -> ThreadCap {
        let now = self.threads_now.unwrap_or(0);
        let host = |limit: Option<u64>| limit.map(|l| l.saturating_sub(now) / HOST_SHARE);
        let per_thread = (stack_kib as u64 + THREAD_OVERHEAD_KIB) * 1024;
        let candidates = [
            (host(self.threads_max), "threads-max"),
            (host(self.pid_max), "pid_max"),
            (self.nproc.map(|n| n / HOST_SHARE), "RLIMIT_NPROC"),
            (
                self.cgroup_pids
                    .map(|(max, current)| max.saturating_sub(current) / HOST_SHARE),
                "cgroup pids.max",
            ),
            (
                self.mem_available.map(|m| m / HOST_SHARE / per_thread),
                "memory",
            ),
        ];
        let (threads, bound) = candidates
            .into_iter()
            .filter_map(|(n, why)| Some((n?, why)))
            .min_by_key(|&(n, _)| n)
            .unwrap_or((u64::MAX, "nothing readable"));
        ThreadCap {
            threads: threads.clamp(1, usize::MAX as u64) as usize,
            bound,
        }
    }

    /// One line for `c10k backends`.
    pub fn describe(&self, stack_kib: usize) -> String {
        let show = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        let cap = self.cap(stack_kib);
        format!(
            "here: at most {} connection threads at {stack_kib} KiB stacks, bound by {} \
             (threads-max {}, pid_max {}, {} threads alive, RLIMIT_NPROC {}, cgroup pids {}, \
             {} MiB available; half of each is taken); --max-conns lowers it",
            cap.threads,
            cap.bound,
            show(self.threads_max),
            show(self.pid_max),
            show(self.threads_now),
            self.nproc
                .map_or("unlimited".to_string(), |n| n.to_string()),
            self.cgroup_pids
                .map_or("unlimited".to_string(), |(max, cur)| format!("{cur}/{max}")),
            self.mem_available
                .map_or("?".to_string(), |m| (m >> 20).to_string()),
        )
    }
}

/// A number from this process's cgroup: `file` of the v2 hierarchy, or of the v1 `controller`.
/// None when the file is absent, unreadable or says "max".
fn cgroup_file(controller: &str, file: &str) -> Option<u64> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    groups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let dir = if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}")
        } else if controllers.split(',').any(|c| c == controller) {
            format!("/sys/fs/cgroup/{controller}{path}")
        } else {
            return None;
        };
        let text = std::fs::read_to_string(format!("{}/{file}", dir.trim_end_matches('/'))).ok()?;
        text.trim().parse().ok()
    })
}

/// What the accept thread and every connection thread share.
struct Shared {
    /// Counters of finished turns and finished threads; each thread adds its own in batches.
    totals: Mutex<Counters>,
    /// Live connections by id, for `--max-conns` and for waking idle threads at shutdown.
    registry: Mutex<HashMap<u64, Arc<Slot>>>,
    /// Signalled when a connection leaves the registry.
    left: Condvar,
    /// Set (after `drain_until`) when shutdown begins; every thread then drains its session.
    shutting_down: AtomicBool,
    /// When the drain window of idle keep-alive connections ends.
    drain_until: OnceLock<Instant>,
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

/// One thread's view of the server: its own date cache and the counters not yet folded in.
struct ThreadEnv {
    date: HttpDate,
    local: Counters,
    shared: Arc<Shared>,
    /// This thread's session has been drained: requests now are answered during shutdown.
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
        drain_until: OnceLock::new(),
        board: options.board.clone(),
    });
    let cap = HostLimits::read().cap(options.thread_stack_kib);
    let max_conns = options.max_conns.min(cap.threads);
    if max_conns < options.max_conns {
        log::info!(
            "threads: at most {max_conns} connections, one thread each (bound by {})",
            cap.bound
        );
    }
    let mut acceptor = Acceptor {
        env: ThreadEnv::new(Arc::clone(&shared)),
        options: options.clone(),
        max_conns,
        thread_bound: (max_conns < options.max_conns).then_some(cap.bound),
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
    let grace_end = Instant::now() + options.shutdown_grace;
    // Echo has no next request to wait for: its idle connections are woken at once.
    let window = match options.proto {
        Proto::Echo => Duration::ZERO,
        Proto::Http => super::keepalive_drain_window(options.shutdown_grace),
    };
    let window_end = Instant::now() + window;
    let _ = shared.drain_until.set(window_end);
    shared.shutting_down.store(true, Ordering::SeqCst);
    // Connections the kernel completed before the signal are clients like any other: take them
    // (their threads drain at once) rather than reset them by closing the listener on them.
    let queued = sys::accept_queue_len(listener.as_raw_fd()).unwrap_or(0);
    acceptor.accept_up_to(listener.as_raw_fd(), queued);
    drop(listener);
    acceptor.env.flush();
    finish(&shared, window_end, grace_end);
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

/// Waits for the connection threads to finish: until the drain window is over, idle ones may
/// still get a last request; then those still idle since before the signal (blocked in `read`
/// under the idle timeout) are woken; at the end of the grace period what is left is cut.
fn finish(shared: &Shared, window_end: Instant, grace_end: Instant) {
    let mut registry = shared.registry();
    let mut woken = false;
    while !registry.is_empty() {
        let now = Instant::now();
        if now >= grace_end {
            log::warn!("grace period over: closing {} connections", registry.len());
            for slot in registry.values() {
                let _ = SockRef::from(&*slot.fd).shutdown(Shutdown::Both);
            }
            return;
        }
        if !woken && now >= window_end {
            woken = true;
            for slot in registry.values() {
                // A thread stores `idle` and then loads `shutting_down`; we stored the flag and
                // now load `idle` (both SeqCst), so an idle thread either sees the flag and
                // bounds its read by the window, or is seen here. SHUT_RD lets it read what has
                // arrived, then end of file. The registry holds the descriptor open, so this
                // number is still that connection's.
                if slot.idle.load(Ordering::SeqCst) {
                    let _ = SockRef::from(&*slot.fd).shutdown(Shutdown::Read);
                }
            }
        }
        let until = if woken { grace_end } else { window_end };
        registry = shared
            .left
            .wait_timeout(registry, until.saturating_duration_since(now))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// The accept thread's state.
struct Acceptor {
    env: ThreadEnv,
    options: DriverOptions,
    /// `--max-conns`, or the thread cap if lower.
    max_conns: usize,
    /// What limits the thread cap, when it is lower than `--max-conns`.
    thread_bound: Option<&'static str>,
    next_id: u64,
    last_failure_log: Option<Instant>,
    failures: u64,
}

impl Acceptor {
    /// Accepts until EAGAIN; returns how long to pause when descriptors or threads ran out.
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
        None
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
            if registry.len() >= self.max_conns {
                drop(registry);
                match self.thread_bound {
                    Some(bound) => self.log_failure(&format!(
                        "refusing connections beyond {} threads (the cap {bound} sets)",
                        self.max_conns
                    )),
                    None => log::debug!("refused a connection: --max-conns {}", self.max_conns),
                }
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
            // Counted before the client can see it: `/stats` asked right after the 503 has it.
            self.env.flush();
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
            drained: false,
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
    /// The session has been told that the server is shutting down.
    drained: bool,
}

impl Conn {
    /// Read, advance, write, until the peer or the protocol ends the connection.
    fn serve(&mut self, env: &mut ThreadEnv) {
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
                        log::debug!("fd {}: send stalled; closing", self.fd);
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
    fn write_output(&mut self, env: &mut ThreadEnv) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.output.len() {
            env.local.syscalls.writes += 1;
            // Before the client can see this response (and before we may block), `/stats` on any
            // connection sees the request, the read and this write.
            env.flush();
            // Fails with EAGAIN once the write timeout passes without progress.
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
        // The rule that bounds this read: the header timeout, from when the head began, or the
        // idle timeout (between requests, or inside a body), from now.
        let mut timeout = match self.head_started {
            Some(start) => self.config.header_timeout.saturating_sub(start.elapsed()),
            None => self.config.idle_timeout,
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
            if SockRef::from(&*self.slot.fd)
                .set_read_timeout(Some(timeout))
                .is_err()
            {
                return false;
            }
            self.read_timeout = Some(timeout);
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
            // Under SO_RCVTIMEO a stop and continue (SIGSTOP, a debugger) ends the read with
            // EINTR: the connection is fine, read again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
        true
    }

    /// A read timed out: a request head that took too long gets its 408 (HTTP) and the usual
    /// flush-and-linger; an idle connection (or one that never sent a byte) is closed — unless
    /// the drain window just ended, when it gets one last look for a request. False: close now.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostLimits {
        HostLimits {
            threads_max: Some(192_730),
            pid_max: Some(32_768),
            threads_now: Some(768),
            nproc: None,
            cgroup_pids: None,
            mem_available: Some(24 << 30),
        }
    }

    #[test]
    fn cap_takes_half_of_what_the_tightest_limit_leaves_free() {
        // pid_max is the tightest: (32768 - 768) / 2.
        assert_eq!(
            host().cap(64),
            ThreadCap {
                threads: 16_000,
                bound: "pid_max"
            }
        );
        let user = HostLimits {
            nproc: Some(24),
            ..host()
        };
        assert_eq!(user.cap(64).threads, 12);
        assert_eq!(user.cap(64).bound, "RLIMIT_NPROC");
        let cgroup = HostLimits {
            cgroup_pids: Some((1000, 200)),
            ..host()
        };
        assert_eq!(
            (cgroup.cap(64).threads, cgroup.cap(64).bound),
            (400, "cgroup pids.max")
        );
    }

    #[test]
    fn memory_bounds_the_cap_by_stack_size() {
        // 1 GiB available, half of it taken, at (1024 + 40) KiB a thread.
        let small = HostLimits {
            mem_available: Some(1 << 30),
            ..host()
        };
        let cap = small.cap(1024);
        assert_eq!((cap.threads, cap.bound), ((512 * 1024) / 1064, "memory"));
        // Smaller stacks: more threads.
        assert!(small.cap(16).threads > cap.threads);
    }

    #[test]
    fn nothing_readable_means_no_cap_and_nothing_free_means_one() {
        assert_eq!(HostLimits::default().cap(64).threads, usize::MAX);
        let full = HostLimits {
            threads_now: Some(40_000),
            ..host()
        };
        assert_eq!(full.cap(64).threads, 1);
    }
}
