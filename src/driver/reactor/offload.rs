//! The reactor's hook for running the protocol off the loop (the half-sync/half-async pool): the
//! loop owns the sockets and reads; a connection's session and the input it has not consumed go to
//! a worker as a [`Job`], and come back as [`Done`] with the output to write.
//!
//! The same hook serves `--offload N` on the single-threaded loops: there the loop runs the
//! protocol, and a connection goes to a helper only when its session is paused on blocking work
//! (`/sleep`, `/work`), as asyncio's `run_in_executor` does; the loop serves the others meanwhile.
//!
//! Invariants:
//! - A connection has at most one job out at a time, and the loop neither reads from it nor lets
//!   its deadline fire until the job is back: its requests are answered in order, and only one
//!   thread touches its session at a time (the session moves with the job).
//! - A job runs the protocol exactly as the loop's own turn does: [`Session::advance`] until it
//!   consumes and produces nothing more, or the output reaches [`OUTPUT_HIGH_WATER`].
//! - The worker counts requests in a copy of the loop's counters taken at hand-off, so that a
//!   `/stats` answered on a worker shows the loop's figures as of that moment plus the requests
//!   answered in this job; the loop adds the job's requests to its own counters when it takes the
//!   job back, before any of its output is sent.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use crate::backend::Token;
use crate::driver::kit::{self, RateLimitedLog};
use crate::driver::LoopEnv;
use crate::proto::{Proto, Session, OUTPUT_HIGH_WATER};

/// A connection's protocol work, handed to a worker.
#[derive(Debug)]
pub struct Job {
    pub token: Token,
    pub session: Session,
    /// Everything received and not yet consumed.
    pub input: Vec<u8>,
    /// The loop's environment as of the hand-off (date, counters, stats board).
    pub env: LoopEnv,
}

/// A job done: the session back, what it left of the input, and what to send.
#[derive(Debug)]
pub struct Done {
    pub token: Token,
    pub session: Session,
    /// The part of the job's input the protocol did not consume (a partial request).
    pub input: Vec<u8>,
    pub consumed: usize,
    pub output: Vec<u8>,
    /// Complete requests answered in this job.
    pub requests: u64,
    /// Time the worker spent on it.
    pub busy_ns: u64,
    /// Blocking work (`/sleep`, `/work`) run in this job.
    pub blocking: u64,
}

impl Job {
    /// Runs the protocol on the job's input; called on a worker thread.
    pub fn run(self) -> Done {
        let started = Instant::now();
        let Job {
            token,
            mut session,
            mut input,
            mut env,
        } = self;
        let requests_before = env.counters.requests;
        let blocking_before = env.counters.blocking_inline;
        let mut output = Vec::new();
        let mut consumed = 0;
        loop {
            // Blocking work runs here, on the worker (it may be what the job was sent for).
            kit::run_blocking_inline(&mut session, &mut output, &mut env);
            if output.len() >= OUTPUT_HIGH_WATER
                || (consumed == input.len() && !session.has_pending_output())
            {
                break;
            }
            let produced_before = output.len();
            let n = session.advance(&input[consumed..], &mut output, &mut env);
            consumed += n;
            if n == 0 && output.len() == produced_before && session.blocking_work().is_none() {
                break; // a partial request: the loop brings more input
            }
        }
        input.drain(..consumed);
        Done {
            token,
            session,
            input,
            consumed,
            output,
            requests: env.counters.requests - requests_before,
            busy_ns: started.elapsed().as_nanos() as u64,
            blocking: env.counters.blocking_inline - blocking_before,
        }
    }
}

/// Workers that run jobs for the loop and wake it when some are done.
pub trait Offload {
    /// Jobs that may wait for a worker or be run at once: past it, a request is refused.
    fn capacity(&self) -> usize;
    /// Jobs submitted and not yet run to the end (finished ones waiting for the loop to collect
    /// them are not counted: they take no worker's time).
    fn outstanding(&self) -> usize;
    /// Queues a job for the next free worker.
    fn submit(&mut self, job: Job);
    /// A descriptor that is readable while finished jobs wait to be collected.
    fn wake_fd(&self) -> RawFd;
    /// Reads the wake descriptor (one read) and moves the finished jobs into `done`. Returns
    /// how many writes the workers made to the wake descriptor since the last call, so that the
    /// loop's syscall counters include what handing work back costs.
    fn collect(&mut self, done: &mut Vec<Done>) -> io::Result<u64>;
}

/// The workers as the loop holds them.
pub(super) struct Hook {
    pub(super) workers: Box<dyn Offload>,
    /// The pool: every request goes to the workers. Otherwise (`--offload N` on a
    /// single-threaded loop) the loop runs the protocol itself and hands a connection to the
    /// helpers only when its session is paused on blocking work; the job runs that work, then
    /// answers whatever complete requests were pipelined behind it.
    pub(super) every_request: bool,
    /// For the placeholder session a connection holds while its own is with a worker, and for
    /// the refusal.
    pub(super) proto: Proto,
    pub(super) rejections: RateLimitedLog,
    /// Echo connections waiting for a worker, oldest first; each is offered again, in order, as
    /// jobs come back. (A token may be stale, its connection closed meanwhile or its slot reused:
    /// only a connection still marked parked is taken.)
    pub(super) parked: VecDeque<Token>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(proto: Proto, input: &[u8]) -> Job {
        Job {
            token: 7,
            session: Session::new(proto),
            input: input.to_vec(),
            env: LoopEnv::new("pool"),
        }
    }

    #[test]
    fn a_job_answers_every_complete_request_and_keeps_the_partial_one() {
        let done = job(
            Proto::Http,
            b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: t\r\n\r\nGET /pa",
        )
        .run();
        assert_eq!(done.token, 7);
        assert_eq!(done.requests, 2);
        assert_eq!(done.input, b"GET /pa");
        assert_eq!(done.consumed, 27 + 36);
        let text = String::from_utf8_lossy(&done.output);
        assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
        assert!(done.session.awaiting_head());
    }

    #[test]
    fn a_job_stops_at_the_high_water_mark_and_resumes_with_the_session() {
        let mut done = job(
            Proto::Http,
            b"GET /bytes/200000 HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .run();
        let mut body = done.output.len();
        assert!((OUTPUT_HIGH_WATER..2 * OUTPUT_HIGH_WATER).contains(&body));
        assert!(done.session.has_pending_output());
        // The session comes back with the stream in progress; the next job goes on with it.
        while done.session.has_pending_output() {
            done = Job {
                token: done.token,
                session: done.session,
                input: done.input,
                env: LoopEnv::new("pool"),
            }
            .run();
            body += done.output.len();
        }
        assert!(
            body > 200_000 && body < 200_000 + 300,
            "{body} bytes in all"
        );
    }

    #[test]
    fn a_job_runs_the_blocking_work_it_was_sent_with_then_the_requests_behind_it() {
        let mut session = Session::new(Proto::Http);
        let mut env = LoopEnv {
            blocking_routes: true,
            ..LoopEnv::new("epoll")
        };
        let mut out = Vec::new();
        let first = b"GET /work/3 HTTP/1.1\r\nHost: t\r\n\r\n";
        let rest = b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\nGET /w";
        let mut input = first.to_vec();
        input.extend_from_slice(rest);
        // The loop's turn stops at the blocking request; the job takes it from there.
        let n = session.advance(&input, &mut out, &mut env);
        assert_eq!((n, out.len()), (first.len(), 0));
        assert!(session.blocking_work().is_some());
        let done = Job {
            token: 1,
            session,
            input: rest.to_vec(),
            env,
        }
        .run();
        let text = String::from_utf8_lossy(&done.output);
        let hash = text.find(&format!("{:016x}", crate::proto::blocking::hash(3)));
        let hello = text.find("Hello, World!");
        assert!(hash.is_some() && hash < hello, "{text}");
        assert_eq!((done.blocking, done.requests), (1, 1));
        assert_eq!(done.input, b"GET /w");
        assert!(done.session.blocking_work().is_none());
    }

    #[test]
    fn an_echo_job_echoes_its_chunk() {
        let done = job(Proto::Echo, b"hello").run();
        assert_eq!(done.output, b"hello");
        assert_eq!((done.consumed, done.requests), (5, 0));
        assert!(done.input.is_empty());
    }
}
