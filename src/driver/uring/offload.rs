//! `--offload N` on io_uring: a connection whose session is paused on blocking work (`/sleep`,
//! `/work`) hands the session to N helper threads, the pool's workers
//! ([`crate::driver::pool::Workers`]), and the ring goes on serving the others.
//!
//! Invariants:
//! - The helpers' eventfd is watched by a one-shot poll on the ring, under a `user_data` of its
//!   own ([`WAKE`], an op byte `ring.rs` does not use), re-armed after each completion; collecting
//!   reads the eventfd before it takes the finished jobs, so none is left unannounced.
//! - While its session is away the connection still sends what it had produced and still
//!   receives (up to the usual caps), but the protocol does not run and no deadline fires.
//! - A finished job is taken back only while no send is in flight on its connection: its output
//!   is appended to the connection's, which the kernel may be reading until the send completes.
//!   Until then it waits here; the send's completion takes it back.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;

use io_uring::types::Fd;
use io_uring::{opcode, IoUring};

use super::conn::UringConn;
use crate::driver::kit::Token;
use crate::driver::pool::Workers;
use crate::driver::reactor::offload::{Done, Job, Offload};
use crate::driver::LoopEnv;
use crate::proto::Session;
use crate::stats::Syscalls;

/// The `user_data` of the poll on the helpers' eventfd.
pub(super) const WAKE: u64 = 6 << 56;

pub(super) struct UringOffload {
    workers: Workers,
    /// Finished jobs whose connection has a send in flight.
    back: HashMap<Token, Done>,
    done: Vec<Done>,
}

impl UringOffload {
    pub(super) fn start(threads: usize, stack_kib: usize) -> io::Result<UringOffload> {
        Ok(UringOffload {
            workers: Workers::start(threads, stack_kib)?,
            back: HashMap::new(),
            done: Vec::new(),
        })
    }

    /// Queues the poll on the helpers' eventfd.
    pub(super) fn arm(&self, ring: &mut IoUring, syscalls: &mut Syscalls) {
        let fd: RawFd = self.workers.wake_fd();
        let entry = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(WAKE);
        // SAFETY: a poll carries no pointer into our memory.
        unsafe { super::ring::push(ring, syscalls, &entry) };
    }

    /// Hands `conn`'s paused session to a helper; the connection is away until it is back.
    pub(super) fn hand_off(&mut self, token: Token, conn: &mut UringConn, env: &mut LoopEnv) {
        let outstanding = self.workers.outstanding() as u64;
        let counters = &mut env.counters;
        counters.blocking_offloaded += 1;
        counters.offload_queue_depth = outstanding + 1;
        counters.offload_queue_high_water = counters.offload_queue_high_water.max(outstanding + 1);
        env.publish();
        let job_env = LoopEnv {
            backend: env.backend,
            date: env.date.clone(),
            counters: env.counters,
            board: env.board.clone(),
            blocking_routes: env.blocking_routes,
        };
        let placeholder = Session::new(crate::proto::Proto::Http);
        let session = std::mem::replace(&mut conn.session, placeholder);
        self.workers.submit(Job {
            token,
            session,
            input: Vec::new(),
            env: job_env,
        });
        conn.away = true;
    }

    /// The eventfd's poll completed: takes the finished jobs in; returns their connections.
    pub(super) fn collect(&mut self, env: &mut LoopEnv) -> Vec<Token> {
        match self.workers.collect(&mut self.done) {
            Ok(wakes) => {
                env.counters.syscalls.reads += 1;
                env.counters.syscalls.writes += wakes;
            }
            Err(e) => log::warn!("reading the helpers' wake descriptor: {e}"),
        }
        env.counters.offload_queue_depth = self.workers.outstanding() as u64;
        let tokens = self.done.iter().map(|d| d.token).collect();
        for job in self.done.drain(..) {
            self.back.insert(job.token, job);
        }
        tokens
    }

    /// Gives `conn` its session back, with the job's response after what it has produced, if
    /// its job is done and no send is in flight.
    pub(super) fn take_back(&mut self, token: Token, conn: &mut UringConn) {
        if !conn.away || conn.send_armed {
            return;
        }
        let Some(done) = self.back.remove(&token) else {
            return;
        };
        conn.away = false;
        conn.session = done.session;
        if conn.drained {
            // Shutdown began while the session was away.
            conn.session.drain();
        }
        if conn.sent > 0 {
            conn.output.drain(..conn.sent);
            conn.sent = 0;
        }
        conn.output.extend_from_slice(&done.output);
    }

    /// A connection is gone: its job, if back, is dropped.
    pub(super) fn forget(&mut self, token: Token) {
        self.back.remove(&token);
    }
}
