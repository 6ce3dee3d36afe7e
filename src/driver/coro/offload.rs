//! coro's `offload(...).await` (tokio's `spawn_blocking`, asyncio's `run_in_executor`): a task
//! whose session is paused on blocking work (`/sleep`, `/work`) hands the session to helper
//! threads — the pool's workers ([`crate::driver::pool::Workers`]), the same machinery the
//! reactor's `--offload` uses — and awaits it; the executor goes on running every other task.
//!
//! Invariants:
//! - A finished job wakes the executor through the helpers' eventfd, registered with its epoll
//!   like any socket; one collector task reads it and wakes the task each job belongs to. The
//!   collector clears its readiness before it collects, so a job finished after the collection
//!   raises a new edge.
//! - A job carries the session alone (no input): the requests pipelined behind the blocking one
//!   stay with the task and are answered, in order, once the session is back.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::task::{Poll, Waker};

use super::io::{readable, Registration, SharedIo};
use crate::driver::kit::Token;
use crate::driver::pool::Workers;
use crate::driver::reactor::offload::{Done, Job, Offload};
use crate::driver::LoopEnv;
use crate::proto::Session;

/// Helpers when `--offload` does not say how many.
pub const DEFAULT_HELPERS: usize = 4;

/// The helper threads as the loop holds them, and the jobs out with them.
pub struct Helpers {
    workers: RefCell<Workers>,
    next_token: Cell<Token>,
    /// Tasks waiting for their job, by the job's token.
    waiting: RefCell<HashMap<Token, Waker>>,
    /// Jobs back and not yet taken by their task.
    finished: RefCell<HashMap<Token, Done>>,
}

impl Helpers {
    pub fn start(threads: usize, stack_kib: usize) -> io::Result<Helpers> {
        Ok(Helpers {
            workers: RefCell::new(Workers::start(threads, stack_kib)?),
            next_token: Cell::new(0),
            waiting: RefCell::default(),
            finished: RefCell::default(),
        })
    }

    /// The descriptor the collector registers.
    pub fn register(&self, io: &SharedIo) -> io::Result<Registration> {
        Registration::new(io, self.workers.borrow().wake_fd())
    }

    /// Runs `session`'s blocking work on a helper and gives the session back with the
    /// response (appended to `output`). `env` is the loop's, to count in and copy from.
    pub async fn offload(
        &self,
        session: Session,
        output: &mut Vec<u8>,
        env: &RefCell<LoopEnv>,
    ) -> Session {
        let token = self.next_token.get();
        self.next_token.set(token.wrapping_add(1));
        let job_env = {
            let mut env = env.borrow_mut();
            let outstanding = self.workers.borrow().outstanding() as u64;
            let counters = &mut env.counters;
            counters.blocking_offloaded += 1;
            counters.offload_queue_depth = outstanding + 1;
            counters.offload_queue_high_water =
                counters.offload_queue_high_water.max(outstanding + 1);
            env.publish();
            LoopEnv {
                backend: env.backend,
                date: env.date.clone(),
                counters: env.counters,
                board: env.board.clone(),
                blocking_routes: env.blocking_routes,
            }
        };
        self.workers.borrow_mut().submit(Job {
            token,
            session,
            input: Vec::new(),
            env: job_env,
        });
        let done = poll_fn(|cx| match self.finished.borrow_mut().remove(&token) {
            Some(done) => Poll::Ready(done),
            None => {
                self.waiting.borrow_mut().insert(token, cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        output.extend_from_slice(&done.output);
        done.session
    }

    /// The collector task: takes finished jobs back and wakes their tasks, for the loop's life.
    pub async fn collect(&self, reg: Registration, env: &RefCell<LoopEnv>) {
        let mut done = Vec::new();
        loop {
            readable(&reg).await;
            reg.clear_read_ready();
            let collected = self.workers.borrow_mut().collect(&mut done);
            {
                let mut env = env.borrow_mut();
                match collected {
                    Ok(wakes) => {
                        env.counters.syscalls.reads += 1;
                        env.counters.syscalls.writes += wakes;
                    }
                    Err(e) => log::warn!("reading the helpers' wake descriptor: {e}"),
                }
                env.counters.offload_queue_depth = self.workers.borrow().outstanding() as u64;
            }
            for job in done.drain(..) {
                let token = job.token;
                self.finished.borrow_mut().insert(token, job);
                if let Some(waker) = self.waiting.borrow_mut().remove(&token) {
                    waker.wake();
                }
            }
        }
    }
}
