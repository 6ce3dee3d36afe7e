//! The pool: half-sync/half-async (Schmidt), as Tomcat's NIO connector, Jetty and Apache's event
//! MPM do it. One event loop (the shared [`Reactor`] over epoll) owns every socket: it accepts,
//! holds idle keep-alive connections at the cost of an event-loop connection, reads, writes and
//! enforces the timeouts. Only the protocol runs on the `--pool-threads` workers: whenever a
//! connection has new input, its session and that input go to a bounded queue as a job; a worker
//! runs [`crate::proto::Session::advance`] on it and hands the output back, and the loop sends it.
//!
//! Invariants this driver keeps:
//! - Exactly `--pool-threads` workers, started once; a worker never touches a socket, and a
//!   socket never holds a worker: 10,000 idle connections cost the loop what they cost epoll.
//! - A connection has at most one job out, and is not read again until it is back and its output
//!   is flushed: requests on one connection are answered in order (see [`super::reactor::offload`]).
//! - At most `QUEUE_PER_THREAD` × threads jobs wait for a worker or are being run. An HTTP
//!   request that finds the workers that far behind is refused on its own: `503` with
//!   `Connection: close`, and that connection closes after it (the loop does not parse HTTP, so
//!   it cannot tell where the refused request ends and the next begins). Other connections are
//!   untouched. Counted in `pool_rejected`, logged at most once a second. Echo has no refusal to
//!   send, and a burst of chunks is no reason to drop bytes: its input waits in line (oldest
//!   first, counted in `pool_parked`) and the connection stops reading, so TCP's window holds the
//!   client back until a worker is free.
//! - Finished jobs wake the loop through an eventfd, written only when the finished list goes
//!   from empty to not empty; the loop reads it before it takes the list, so no job is left
//!   behind unannounced.
//! - `/stats` shows `pool_queue_depth`, `pool_queue_high_water`, `pool_rejected`, `pool_jobs` and
//!   `pool_worker_busy_ns`; the eventfd's reads and writes are counted with the other syscalls.
//! - Accepting, EMFILE, deadlines, shutdown (RFC 9112 §9.6) are the reactor's, unchanged; a job
//!   out when SIGTERM comes is drained when it is back.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signalfd::SignalFd;

use super::reactor::offload::{Done, Job, Offload};
use super::reactor::Reactor;
use super::DriverOptions;
use crate::backend::epoll::Epoll;
use crate::stats::Counters;

/// Jobs that may be out at once, per worker: past this the workers are far behind, and a
/// request is better refused at once than answered after everything queued before it.
pub const QUEUE_PER_THREAD: usize = 256;

struct Queue {
    jobs: VecDeque<Job>,
    /// Workers waiting for a job: only then is one woken.
    idle: usize,
    /// The loop is gone: workers exit once the queue is empty.
    closed: bool,
}

#[derive(Default)]
struct Finished {
    jobs: Vec<Done>,
    /// Writes to the eventfd since the loop last collected.
    wakes: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a job is queued while a worker is idle, and at the end.
    work: Condvar,
    finished: Mutex<Finished>,
    /// Jobs run to the end, ever: with the loop's count of jobs submitted, how far behind the
    /// workers are, without taking the queue's lock.
    jobs_run: AtomicU64,
    /// Readable while finished jobs wait for the loop.
    wake: EventFd,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The workers as the loop holds them; dropping it lets them finish what is queued and joins
/// them.
pub struct Workers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    capacity: usize,
    submitted: u64,
}

impl Workers {
    pub fn start(threads: usize, stack_kib: usize) -> io::Result<Workers> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                idle: 0,
                closed: false,
            }),
            work: Condvar::new(),
            finished: Mutex::new(Finished::default()),
            jobs_run: AtomicU64::new(0),
            wake: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
        });
        let mut workers = Workers {
            shared,
            threads: Vec::with_capacity(threads),
            capacity: QUEUE_PER_THREAD * threads,
            submitted: 0,
        };
        for index in 0..threads {
            let shared = Arc::clone(&workers.shared);
            // On failure, the workers already started are joined by the drop.
            let handle = std::thread::Builder::new()
                .name(format!("pool-{index}"))
                .stack_size(stack_kib * 1024)
                .spawn(move || work(&shared))?;
            workers.threads.push(handle);
        }
        Ok(workers)
    }
}

impl Offload for Workers {
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn outstanding(&self) -> usize {
        (self.submitted - self.shared.jobs_run.load(Ordering::Acquire)) as usize
    }

    fn submit(&mut self, job: Job) {
        self.submitted += 1;
        let mut queue = lock(&self.shared.queue);
        queue.jobs.push_back(job);
        let someone_waits = queue.idle > 0;
        drop(queue);
        if someone_waits {
            self.shared.work.notify_one();
        }
    }

    fn wake_fd(&self) -> RawFd {
        self.shared.wake.as_raw_fd()
    }

    fn collect(&mut self, done: &mut Vec<Done>) -> io::Result<u64> {
        // Before taking the list: a job finished after this read announces itself again.
        match self.shared.wake.read() {
            Ok(_) | Err(Errno::EAGAIN) => {}
            Err(e) => return Err(e.into()),
        }
        let mut finished = lock(&self.shared.finished);
        done.append(&mut finished.jobs);
        Ok(std::mem::take(&mut finished.wakes))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.work.notify_all();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

/// A worker: takes the oldest job, runs it, hands it back, waking the loop if it was not yet
/// told of other finished jobs.
fn work(shared: &Shared) {
    loop {
        let job = {
            let mut queue = lock(&shared.queue);
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.closed {
                    return;
                }
                queue.idle += 1;
                queue = shared.work.wait(queue).unwrap_or_else(|e| e.into_inner());
                queue.idle -= 1;
            }
        };
        let done = job.run();
        shared.jobs_run.fetch_add(1, Ordering::Release);
        let mut finished = lock(&shared.finished);
        let first = finished.jobs.is_empty();
        finished.jobs.push(done);
        if first {
            finished.wakes += 1;
        }
        drop(finished);
        if first {
            if let Err(e) = shared.wake.write(1) {
                log::warn!("pool: cannot wake the loop: {e}");
            }
        }
    }
}

/// Serves until SIGINT/SIGTERM and the end of the grace period; returns the counters.
pub fn run(listener: OwnedFd, signals: SignalFd, options: &DriverOptions) -> io::Result<Counters> {
    let threads = options.pool_threads.max(1);
    let workers = Workers::start(threads, options.config.thread_stack_kib)?;
    log::info!(
        "pool: {threads} workers behind one epoll loop; at most {} requests with them at once",
        workers.capacity
    );
    Reactor::new(
        Box::new(Epoll::new(false)?),
        listener,
        Some(signals),
        options.clone(),
    )?
    .with_offload(Box::new(workers), "pool", options.config.proto)?
    .run()
}
