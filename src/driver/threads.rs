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
//! - The connection loop, its timeouts and its counters are the blocking one in `blocking.rs`;
//!   `/stats` costs one lock, whatever the number of connections: it touches no connection
//!   (`connections_current` counts a connection until its thread has left).
//! - Shutdown (RFC 9112 §9.6): the accept thread raises the flag, takes what is already in the
//!   backlog, and closes the listener; every thread then drains its session ([`Session::drain`]): a
//!   response in progress finishes and is the last, and the next request is answered with
//!   `Connection: close`, then writing is shut down and the input drained (linger), so the client
//!   reads the response, not a reset. An idle keep-alive connection gets a drain window
//!   (`--keepalive-drain`) for that next request, since closing it at once would race
//!   with a request already on its way; when the window is over, what has arrived is still served
//!   and a connection with nothing pending is closed. Threads that went idle before the signal
//!   (blocked in `read` under the idle timeout) are woken at the end of the window with
//!   `shutdown(SHUT_RD)`, which still lets them read what has arrived. Whatever is left at the end
//!   of the grace period is cut. The registry holds each descriptor open (an `Arc<OwnedFd>`) until
//!   the connection leaves it, so the accept thread never shuts down a descriptor number that was
//!   reused.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use nix::sys::signalfd::SignalFd;
use socket2::SockRef;

use super::blocking::{self, Acceptor, ConnLimits, DriverState, ServerState, ThreadEnv};
use super::kit::{self, RateLimitedLog};
use super::DriverOptions;
use crate::stats::{self, Counters};
use crate::sys;

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
struct ThreadsState {
    server: ServerState,
    /// Live connections by id, for `--max-conns` and for waking idle threads at shutdown.
    registry: Mutex<HashMap<u64, Arc<Slot>>>,
    /// Signalled when a connection leaves the registry.
    left: Condvar,
}

/// A live connection as the accept thread sees it.
struct Slot {
    /// Shared with the connection's thread: the descriptor stays open while it is registered.
    fd: Arc<OwnedFd>,
    /// The thread is (about to be) blocked reading with nothing in flight.
    idle: AtomicBool,
}

impl ThreadsState {
    fn registry(&self) -> MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl DriverState for ThreadsState {
    const BACKEND: &'static str = "threads";

    fn server(&self) -> &ServerState {
        &self.server
    }
}

/// Serves until SIGINT/SIGTERM and the end of the grace period; returns the counters.
pub fn run(
    listener: OwnedFd,
    mut signals: SignalFd,
    options: &DriverOptions,
) -> io::Result<Counters> {
    sys::set_nonblocking(listener.as_raw_fd(), true)?;
    let state = Arc::new(ThreadsState {
        server: ServerState::new(options.board.clone(), options.config.blocking_routes),
        registry: Mutex::new(HashMap::new()),
        left: Condvar::new(),
    });
    let cap = HostLimits::read().cap(options.config.thread_stack_kib);
    let max_conns = options.max_conns.min(cap.threads);
    if max_conns < options.max_conns {
        log::info!(
            "threads: at most {max_conns} connections, one thread each (bound by {})",
            cap.bound
        );
    }
    let mut acceptor = ThreadSpawner {
        env: ThreadEnv::new(Arc::clone(&state)),
        options: options.clone(),
        max_conns,
        thread_bound: (max_conns < options.max_conns).then_some(cap.bound),
        next_id: 0,
        failures: RateLimitedLog::default(),
    };
    blocking::accept_until_stopped(&mut acceptor, listener.as_raw_fd(), &mut signals)?;
    let window_and_grace = state.server.begin_shutdown(options);
    // Their threads drain at once.
    blocking::take_backlog(&mut acceptor, listener.as_raw_fd());
    drop(listener);
    acceptor.env.flush();
    finish(&state, window_and_grace);
    let counters = *state.server.totals();
    log::info!("{}", stats::summary_line(ThreadsState::BACKEND, &counters));
    Ok(counters)
}

/// Waits for the connection threads to finish (see [`blocking::finish`]). The registry holds
/// each descriptor open, so a number shut down here is still that connection's.
fn finish(state: &ThreadsState, window_and_grace: (Instant, Instant)) {
    let registry = state.registry();
    blocking::finish(
        registry,
        &state.left,
        window_and_grace,
        HashMap::len,
        |registry, how, only_idle| {
            for slot in registry.values() {
                if !only_idle || slot.idle.load(Ordering::SeqCst) {
                    let _ = SockRef::from(&*slot.fd).shutdown(how);
                }
            }
        },
    );
}

/// The accept thread: a thread for each connection.
struct ThreadSpawner {
    env: ThreadEnv<ThreadsState>,
    options: DriverOptions,
    /// `--max-conns`, or the thread cap if lower.
    max_conns: usize,
    /// What limits the thread cap, when it is lower than `--max-conns`.
    thread_bound: Option<&'static str>,
    next_id: u64,
    /// Failed accepts, thread creations, and refusals at the thread cap.
    failures: RateLimitedLog,
}

impl Acceptor for ThreadSpawner {
    type State = ThreadsState;

    fn env(&mut self) -> &mut ThreadEnv<ThreadsState> {
        &mut self.env
    }

    fn failures(&mut self) -> &mut RateLimitedLog {
        &mut self.failures
    }

    /// Gives the connection its thread, or refuses it; false when thread creation failed.
    fn admit(&mut self, fd: OwnedFd) -> bool {
        let state = Arc::clone(&self.env.state);
        let id = self.next_id;
        self.next_id += 1;
        let fd = Arc::new(fd);
        {
            let mut registry = state.registry();
            if registry.len() >= self.max_conns {
                drop(registry);
                match self.thread_bound {
                    Some(bound) => self.failures.warn(format_args!(
                        "refusing connections beyond {} threads (the cap {bound} sets)",
                        self.max_conns
                    )),
                    None => log::debug!("refused a connection: --max-conns {}", self.max_conns),
                }
                kit::refuse(fd.as_raw_fd(), self.options.config.proto, &mut self.env);
                return true;
            }
            let slot = Arc::new(Slot {
                fd: Arc::clone(&fd),
                idle: AtomicBool::new(false),
            });
            registry.insert(id, Arc::clone(&slot));
            let mut totals = state.server.totals();
            totals.connections_current += 1;
            state.server.publish(&totals);
        }
        let limits = ConnLimits::from_options(&self.options);
        let theirs = Arc::clone(&fd);
        let thread_state = Arc::clone(&state);
        let spawned = std::thread::Builder::new()
            .stack_size(self.options.config.thread_stack_kib * 1024)
            .spawn(move || connection_thread(id, theirs, limits, thread_state));
        match spawned {
            Ok(_) => true,
            Err(e) => {
                unregister(&state, id);
                self.failures.warn(format_args!(
                    "cannot create a thread for a connection: {e}; refusing it"
                ));
                kit::refuse(fd.as_raw_fd(), self.options.config.proto, &mut self.env);
                false
            }
        }
    }
}

/// Removes a connection from the registry (before its descriptor may be closed).
fn unregister(state: &ThreadsState, id: u64) {
    let mut registry = state.registry();
    registry.remove(&id);
    state.server.remove_connections(1);
    drop(registry);
    state.left.notify_all();
}

/// The whole life of one connection on its own thread.
fn connection_thread(id: u64, fd: Arc<OwnedFd>, limits: ConnLimits, state: Arc<ThreadsState>) {
    let slot = state.registry().get(&id).cloned();
    let mut env = ThreadEnv::new(Arc::clone(&state));
    if let Some(slot) = slot {
        blocking::serve(&fd, &slot.idle, limits, &mut env);
    }
    env.flush();
    // Leave the registry first: the accept thread only shuts down registered descriptors.
    unregister(&state, id);
    drop(fd);
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
