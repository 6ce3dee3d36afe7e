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
//! - The connection loop, its timeouts and its counters are the blocking one in `blocking.rs`.
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
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signalfd::SignalFd;
use socket2::SockRef;

use super::blocking::{self, Acceptor, ConnLimits, DriverState, ServerState, ThreadEnv};
use super::kit::{self, RateLimitedLog};
use super::DriverOptions;
use crate::stats::{self, Counters};
use crate::sys;

/// Connections that may wait for a thread, per thread of the pool.
pub const QUEUE_PER_THREAD: usize = 4;

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

struct PoolState {
    server: ServerState,
    queue: Mutex<Queue>,
    /// Signalled when a connection is queued, and at shutdown.
    work: Condvar,
    /// Signalled when a thread finishes a connection.
    left: Condvar,
    slots: Vec<WorkerSlot>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DriverState for PoolState {
    const BACKEND: &'static str = "pool";

    fn server(&self) -> &ServerState {
        &self.server
    }

    fn connections_ending(&self) -> u64 {
        connections_ending(self)
    }
}

/// Connections whose threads are about to notice that they are over (reset, or idle with the
/// peer gone): `/stats` does not count them as open, as a single event loop would already have
/// seen their hang-up. One zero-timeout poll(2) over the busy threads' descriptors.
fn connections_ending(shared: &PoolState) -> u64 {
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

/// Serves until SIGINT/SIGTERM and the end of the grace period; returns the counters.
pub fn run(
    listener: OwnedFd,
    mut signals: SignalFd,
    options: &DriverOptions,
) -> io::Result<Counters> {
    sys::set_nonblocking(listener.as_raw_fd(), true)?;
    let threads = options.pool_threads.max(1);
    let capacity = QUEUE_PER_THREAD * threads;
    let state = Arc::new(PoolState {
        server: ServerState::new(options.board.clone()),
        queue: Mutex::new(Queue {
            waiting: VecDeque::with_capacity(capacity),
            busy: 0,
            closed: false,
        }),
        work: Condvar::new(),
        left: Condvar::new(),
        slots: (0..threads).map(|_| WorkerSlot::default()).collect(),
    });
    let limits = ConnLimits::from_options(options);
    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads {
        let state = Arc::clone(&state);
        let handle = std::thread::Builder::new()
            .name(format!("pool-{index}"))
            .stack_size(options.config.thread_stack_kib * 1024)
            .spawn(move || worker(index, &state, limits))?;
        handles.push(handle);
    }
    log::info!("pool: {threads} threads, a queue of {capacity} connections");
    let mut acceptor = Enqueuer {
        env: ThreadEnv::new(Arc::clone(&state)),
        options: options.clone(),
        capacity,
        refusals: RateLimitedLog::default(),
        exhaustions: RateLimitedLog::default(),
    };
    blocking::accept_until_stopped(&mut acceptor, listener.as_raw_fd(), &mut signals)?;
    let window_and_grace = state.server.begin_shutdown(options);
    // They are queued, and served drained.
    blocking::take_backlog(&mut acceptor, listener.as_raw_fd());
    drop(listener);
    lock(&state.queue).closed = true;
    state.work.notify_all();
    acceptor.env.flush();
    let done = finish(&state, window_and_grace);
    if !done {
        acceptor.refuse_queued();
    }
    acceptor.env.flush();
    if done {
        for handle in handles {
            let _ = handle.join();
        }
    }
    let counters = *state.server.totals();
    log::info!("{}", stats::summary_line(PoolState::BACKEND, &counters));
    Ok(counters)
}

/// Waits until every queued and served connection is done (see [`blocking::finish`]); at the
/// end of the grace period the connections being served are cut. True when every connection
/// has finished.
fn finish(state: &PoolState, window_and_grace: (Instant, Instant)) -> bool {
    let queue = lock(&state.queue);
    blocking::finish(
        queue,
        &state.left,
        window_and_grace,
        |queue| queue.busy + queue.waiting.len(),
        |_, how, only_idle| {
            for slot in &state.slots {
                if !only_idle || slot.idle.load(Ordering::SeqCst) {
                    // The slot holds the descriptor open: still that connection's number.
                    if let Some(fd) = lock(&slot.current).as_ref() {
                        let _ = SockRef::from(&**fd).shutdown(how);
                    }
                }
            }
        },
    )
}

/// The accept thread: connections queued for the pool.
struct Enqueuer {
    env: ThreadEnv<PoolState>,
    options: DriverOptions,
    capacity: usize,
    /// Connections refused because the queue was full.
    refusals: RateLimitedLog,
    exhaustions: RateLimitedLog,
}

impl Acceptor for Enqueuer {
    type State = PoolState;

    fn env(&mut self) -> &mut ThreadEnv<PoolState> {
        &mut self.env
    }

    fn failures(&mut self) -> &mut RateLimitedLog {
        &mut self.exhaustions
    }

    /// Queues the connection for the next free thread, or refuses it.
    fn admit(&mut self, fd: OwnedFd) -> bool {
        let state = Arc::clone(&self.env.state);
        let mut queue = lock(&state.queue);
        let (busy, queued) = (queue.busy, queue.waiting.len());
        if busy + queued < self.options.max_conns && queued < self.capacity {
            // Counted before a thread can take it (and count it out).
            {
                let mut totals = state.server.totals();
                totals.connections_current += 1;
                state.server.publish(&totals);
            }
            queue.waiting.push_back(fd);
            drop(queue);
            state.work.notify_one();
            return true;
        }
        drop(queue);
        if busy + queued >= self.options.max_conns {
            // As in the other backends: the operator asked for this limit.
            log::debug!(
                "refused a connection: --max-conns {}",
                self.options.max_conns
            );
        } else {
            self.refusals.warn(format_args!(
                "refusing a connection: all {} pool threads busy and the queue of {} full",
                state.slots.len(),
                self.capacity,
            ));
        }
        kit::refuse(fd.as_raw_fd(), self.options.config.proto, &mut self.env);
        true
    }
}

impl Enqueuer {
    /// At the end of the grace period: connections still waiting for a thread get the refusal
    /// and are closed.
    fn refuse_queued(&mut self) {
        let state = Arc::clone(&self.env.state);
        let waiting: Vec<OwnedFd> = lock(&state.queue).waiting.drain(..).collect();
        if !waiting.is_empty() {
            log::info!("closing {} queued connections", waiting.len());
        }
        for fd in &waiting {
            kit::refuse(fd.as_raw_fd(), self.options.config.proto, &mut self.env);
        }
        state.server.remove_connections(waiting.len() as u64);
    }
}

/// A pool thread: takes the oldest queued connection, serves it to its end, takes the next.
fn worker(index: usize, state: &Arc<PoolState>, limits: ConnLimits) {
    let slot = &state.slots[index];
    let mut env = ThreadEnv::new(Arc::clone(state));
    loop {
        let fd = {
            let mut queue = lock(&state.queue);
            loop {
                if let Some(fd) = queue.waiting.pop_front() {
                    queue.busy += 1;
                    break Arc::new(fd);
                }
                if queue.closed {
                    return;
                }
                queue = state.work.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        *lock(&slot.current) = Some(Arc::clone(&fd));
        blocking::serve(&fd, &slot.idle, limits, &mut env);
        env.draining = false;
        env.flush();
        // Leave the slot first: the accept thread only shuts down descriptors that slots hold.
        *lock(&slot.current) = None;
        state.server.remove_connections(1);
        drop(fd);
        lock(&state.queue).busy -= 1;
        state.left.notify_all();
    }
}
