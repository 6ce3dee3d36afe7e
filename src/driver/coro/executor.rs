//! The executor: a slab of tasks, one waker per task, a ready queue, timers, and the loop that
//! runs ready tasks and then waits on epoll for more.
//!
//! Invariants:
//! - A task is polled only when it is on the ready queue, and it is put there at most once until
//!   it is polled (its `queued` flag): a burst of wake-ups costs one poll.
//! - A task id carries its slot's generation, so a wake-up for a task that has finished (and whose
//!   slot was reused) is recognised and dropped.
//! - Nothing is borrowed from the [`Runtime`] while a task is polled or dropped: tasks borrow it
//!   themselves (to register descriptors, spawn, set timers).
//! - Every wake-up is possibly spurious: futures re-check their condition when polled.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use super::io::{IoDriver, SharedIo};
use crate::driver::kit::Slab;

type BoxFuture = Pin<Box<dyn Future<Output = ()>>>;

/// What tasks share with the executor: the I/O driver, timers, and tasks waiting to be spawned.
pub struct Runtime {
    pub io: SharedIo,
    timers: RefCell<BinaryHeap<Timer>>,
    timer_seq: Cell<u64>,
    spawned: RefCell<Vec<BoxFuture>>,
    /// The loop's clock: read once after each wait, so that a deadline and the timer that
    /// enforces it are compared against the same instant.
    now: Cell<Instant>,
}

impl Runtime {
    pub fn new(io: IoDriver) -> Rc<Runtime> {
        Rc::new(Runtime {
            io: Rc::new(RefCell::new(io)),
            timers: RefCell::new(BinaryHeap::new()),
            timer_seq: Cell::new(0),
            spawned: RefCell::new(Vec::new()),
            now: Cell::new(Instant::now()),
        })
    }

    /// Starts a task; it is first polled on the executor's next pass.
    pub fn spawn(&self, future: impl Future<Output = ()> + 'static) {
        self.spawned.borrow_mut().push(Box::pin(future));
    }

    /// The loop's clock (as of the last wake-up).
    pub fn now(&self) -> Instant {
        self.now.get()
    }

    /// Wakes `waker` once `at` has passed. Entries are never cancelled: a future that no longer
    /// cares simply gets one spurious poll.
    pub fn wake_at(&self, at: Instant, waker: Waker) {
        let seq = self.timer_seq.get();
        self.timer_seq.set(seq + 1);
        self.timers.borrow_mut().push(Timer { at, seq, waker });
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.borrow().peek().map(|t| t.at)
    }

    fn fire_timers(&self, now: Instant) {
        loop {
            let timer = {
                let mut timers = self.timers.borrow_mut();
                match timers.peek() {
                    Some(t) if t.at <= now => timers.pop(),
                    _ => None,
                }
            };
            match timer {
                Some(t) => t.waker.wake(),
                None => return,
            }
        }
    }
}

/// A timer entry, ordered so that the `BinaryHeap` (a max-heap) pops the earliest first.
struct Timer {
    at: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Task ids made ready since the executor last looked. A mutex because `std::task::Wake`
/// requires Send + Sync; on this single thread it is never contended (one atomic to lock).
type ReadyQueue = Mutex<Vec<u64>>;

/// A task's waker: its id, and whether it already sits on the ready queue.
struct TaskWaker {
    id: u64,
    queued: AtomicBool,
    ready: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.id);
        }
    }
}

struct Task {
    future: BoxFuture,
    /// The same waker for every poll, so I/O futures can keep theirs (`will_wake`) without
    /// cloning it again.
    waker: Waker,
    state: Arc<TaskWaker>,
}

pub struct Executor {
    rt: Rc<Runtime>,
    /// Tasks by id; a finished task's id does not name the slot's next task.
    tasks: Slab<Task>,
    ready: Arc<ReadyQueue>,
    batch: Vec<u64>,
}

impl Executor {
    pub fn new(rt: Rc<Runtime>) -> Executor {
        Executor {
            rt,
            tasks: Slab::default(),
            ready: Arc::new(Mutex::new(Vec::new())),
            batch: Vec::new(),
        }
    }

    /// Tasks that have not finished.
    pub fn live(&self) -> usize {
        self.tasks.len()
    }

    /// Runs until `done()` says so: ready tasks, then one wait on epoll (bounded by the next
    /// timer), then `after_wait` (the caller's per-wake-up bookkeeping), then expired timers.
    pub fn run(&mut self, mut after_wait: impl FnMut(), done: impl Fn() -> bool) -> io::Result<()> {
        loop {
            self.admit_spawned();
            // One batch per pass: a task that keeps waking itself cannot starve the poller.
            std::mem::swap(
                &mut self.batch,
                &mut *self.ready.lock().unwrap_or_else(|e| e.into_inner()),
            );
            let mut batch = std::mem::take(&mut self.batch);
            for id in batch.drain(..) {
                self.poll_task(id);
                self.admit_spawned();
            }
            self.batch = batch;
            if done() {
                return Ok(());
            }
            let more_ready = !self
                .ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty();
            let timeout = if more_ready {
                Some(Duration::ZERO)
            } else {
                self.rt
                    .next_deadline()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            };
            self.rt.io.borrow_mut().wait(timeout)?;
            self.rt.now.set(Instant::now());
            after_wait();
            self.rt.fire_timers(self.rt.now());
        }
    }

    /// Gives each newly spawned task a slot and queues it, in the order they were spawned.
    fn admit_spawned(&mut self) {
        if self.rt.spawned.borrow().is_empty() {
            return;
        }
        let spawned = std::mem::take(&mut *self.rt.spawned.borrow_mut());
        for future in spawned {
            let ready = &self.ready;
            self.tasks.insert_with(|id| {
                let state = Arc::new(TaskWaker {
                    id,
                    queued: AtomicBool::new(false),
                    ready: Arc::clone(ready),
                });
                let waker = Waker::from(Arc::clone(&state));
                waker.wake_by_ref();
                Task {
                    future,
                    waker,
                    state,
                }
            });
        }
    }

    fn poll_task(&mut self, id: u64) {
        let Some(task) = self.tasks.get_mut(id) else {
            return; // a finished task's late wake-up
        };
        // Cleared before the poll, so a wake-up during the poll queues it again.
        task.state.queued.store(false, Ordering::Release);
        let mut cx = Context::from_waker(&task.waker);
        if task.future.as_mut().poll(&mut cx).is_ready() {
            let finished = self.tasks.remove(id);
            // Dropped with no borrow of ours held: its destructors deregister descriptors.
            drop(finished);
        }
    }
}

/// Returns Pending once, after asking to be polled again: lets other ready tasks run.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// A deadline a task waits against, with its timer armed lazily: a new entry only when none is
/// pending at or before the deadline. A keep-alive connection whose idle deadline moves with
/// every request gets one timer entry per idle period, not one per request; the early entry
/// wakes it once, and it re-arms for the deadline that now applies.
#[derive(Debug, Default)]
pub struct Alarm {
    armed: Option<Instant>,
}

impl Alarm {
    /// True once `deadline` has passed (by the loop's clock); otherwise makes sure the task is
    /// woken by then.
    pub fn expired(&mut self, rt: &Runtime, deadline: Instant, cx: &Context<'_>) -> bool {
        let now = rt.now();
        if now >= deadline {
            return true;
        }
        if self.armed.is_none_or(|t| t <= now || t > deadline) {
            rt.wake_at(deadline, cx.waker().clone());
            self.armed = Some(deadline);
        }
        false
    }
}
