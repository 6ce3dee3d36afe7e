//! The one event loop shared by every readiness backend (select, poll, epoll, and the others that
//! fit the [`Poller`] contract).
//!
//! Invariants the loop keeps:
//! - Every connection lives in the slab under a token that carries a generation, so an event for
//!   a descriptor that was closed (and maybe reused) in the same batch is recognised and dropped.
//! - Every event is treated as possibly spurious: readiness is a hint, EAGAIN is the truth.
//! - A connection is read from only while its pending output is below the protocol's high-water
//!   mark and its session lends none: a client that does not read stops being read from, and
//!   cannot grow our memory. Lent output (a `/bytes` body, [`Session::static_output`]) is sent
//!   from static memory after the buffer, in one `sendmsg`, and never copied.
//! - Idle connections own no buffers: input and output are the loop's scratch buffers, lent to a
//!   connection only while it has partial input or unsent output.
//! - On an edge-triggered backend a connection is driven until EAGAIN or until its turn's budget
//!   is spent; then it goes on the pending list and is driven again without waiting for an event.
//!   The listener too: a burst larger than one turn's accepts is finished on the next turn, since
//!   no new edge will come for the connections already queued.
//! - Every connection has a deadline in the timer heap from the moment it is accepted: a client
//!   that never sends a byte is cut by the header (HTTP) or idle (echo) timeout like any other.
//! - Every wake-up makes progress or changes the interest set. An interest the connection cannot
//!   act on (reading while the output is full, or after the peer's half-close) is not registered,
//!   so a level-triggered backend has nothing to report; a wake-up that still moves nothing is
//!   counted in `spurious_wakeups`.
//! - Shutdown (RFC 9112 §9.6) answers every request already received with `Connection: close`,
//!   gives idle keep-alive connections a short window to bring one more, and then shuts down
//!   writing and lingers, so that no client reads a reset instead of its response.
//! - With workers ([`Reactor::with_offload`], the pool): the loop still owns every socket, reads,
//!   writes and times; only the protocol runs on the workers, one job per connection at a time
//!   (see [`offload`]).

pub mod offload;
mod turn;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::signalfd::SignalFd;

use self::offload::{Done, Hook, Offload};
use self::turn::{
    give_back_buffers, start_lingering, turn, update_interest, Phase, Progress, ReadyConn,
    TurnContext, Verdict,
};
use super::kit::{
    self, Deadlines, RateLimitedLog, Slab, Stamps, Timed, ACCEPTS_AT_SHUTDOWN, ACCEPTS_PER_TURN,
    ACCEPT_PAUSE, READ_CHUNK,
};
use super::{Clock, DriverOptions, LoopEnv, Timeouts, NEVER};
use crate::backend::{Event, Features, Interest, Poller, Token};
use crate::proto::{Proto, Session, Status, OUTPUT_HIGH_WATER};
use crate::stats::{self, Counters};
use crate::sys;

const LISTENER: Token = u64::MAX;
const SIGNALS: Token = u64::MAX - 1;
/// The workers' wake descriptor: finished jobs are waiting.
const WAKE: Token = u64::MAX - 2;

pub struct Reactor {
    poller: Box<dyn Poller>,
    features: Features,
    listener: Option<OwnedFd>,
    signals: Option<SignalFd>,
    conns: Slab<ReadyConn>,
    shared: TurnContext,
    options: DriverOptions,
    pending: Vec<Token>,
    timers: Deadlines,
    timeouts: Timeouts,
    accept_paused_until: Option<Instant>,
    /// The last accept turn stopped at its budget with connections still queued.
    accept_pending: bool,
    /// During shutdown: until when idle keep-alive connections may bring one more request.
    keepalive_drain_until: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    exhaustion: RateLimitedLog,
    /// The poller's `signals` already added to the counters (the signalfd's are counted apart).
    poller_signals: u64,
    /// Finished jobs being taken back (kept for its allocation).
    done: Vec<Done>,
}

impl Reactor {
    /// Takes a non-blocking listener and, optionally, a signalfd for SIGINT/SIGTERM/SIGHUP.
    pub fn new(
        mut poller: Box<dyn Poller>,
        listener: OwnedFd,
        signals: Option<SignalFd>,
        options: DriverOptions,
    ) -> io::Result<Reactor> {
        sys::set_nonblocking(listener.as_raw_fd(), true)?;
        poller.register(listener.as_raw_fd(), LISTENER, Interest::READ)?;
        if let Some(sfd) = &signals {
            poller.register(sfd.as_raw_fd(), SIGNALS, Interest::READ)?;
        }
        let timeouts = Timeouts::from_options(&options);
        Ok(Reactor {
            features: poller.features(),
            shared: TurnContext {
                env: LoopEnv::configured(poller.name(), &options),
                clock: Clock::new(),
                edge_triggered: poller.features().edge_triggered,
                scratch_in: Vec::with_capacity(READ_CHUNK),
                scratch_out: Vec::with_capacity(OUTPUT_HIGH_WATER * 2),
                offload: None,
            },
            poller,
            listener: Some(listener),
            signals,
            conns: Slab::default(),
            options,
            pending: Vec::new(),
            timers: Deadlines::default(),
            timeouts,
            accept_paused_until: None,
            accept_pending: false,
            keepalive_drain_until: None,
            shutdown_deadline: None,
            exhaustion: RateLimitedLog::default(),
            poller_signals: 0,
            done: Vec::new(),
        })
    }

    /// Runs the protocol on `workers` instead of on the loop (half-sync/half-async): the loop
    /// hands a connection's new input to them and writes what they give back.
    /// `backend` names the model in `/stats` and the summary line.
    pub fn with_offload(
        mut self,
        workers: Box<dyn Offload>,
        backend: &'static str,
        proto: Proto,
    ) -> io::Result<Reactor> {
        self.shared.env.backend = backend;
        self.poller
            .register(workers.wake_fd(), WAKE, Interest::READ)?;
        self.shared.offload = Some(Hook {
            every_request: true,
            workers,
            proto,
            rejections: RateLimitedLog::default(),
            parked: VecDeque::new(),
        });
        Ok(self)
    }

    /// `--offload N`: blocking work (`/sleep`, `/work`) goes to N helper threads, the pool's
    /// workers, while the loop goes on serving every other connection; the rest of the protocol
    /// stays on the loop. Without it (`None`), the loop runs that work itself and stalls.
    pub fn with_blocking_offload(mut self, helpers: Option<usize>) -> io::Result<Reactor> {
        let Some(helpers) = helpers else {
            return Ok(self);
        };
        let workers = super::pool::Workers::start(helpers, self.options.config.thread_stack_kib)?;
        log::info!(
            "{}: blocking work goes to {helpers} helper threads",
            self.shared.env.backend
        );
        self.poller
            .register(workers.wake_fd(), WAKE, Interest::READ)?;
        self.shared.offload = Some(Hook {
            every_request: false,
            workers: Box::new(workers),
            proto: self.options.config.proto,
            rejections: RateLimitedLog::default(),
            parked: VecDeque::new(),
        });
        Ok(self)
    }

    /// Runs until SIGINT/SIGTERM and the end of the grace period; returns the counters.
    pub fn run(mut self) -> io::Result<Counters> {
        let mut events: Vec<Event> = Vec::with_capacity(1024);
        loop {
            let timeout = self.next_timeout();
            events.clear();
            self.poller.poll(&mut events, timeout)?;
            // Once per wake-up rather than per connection: /stats may lag by the registration
            // changes of the current batch, and a turn costs no virtual call for it.
            self.sync_poller_counters();
            self.shared.env.date.refresh();
            self.shared.clock.tick();
            // A shutdown applies to the whole batch: requests that arrived with the signal are
            // answered as the last ones (`Connection: close`), not as if nothing had happened.
            if events.iter().any(|e| e.token == SIGNALS) {
                self.take_signals();
            }
            for event in &events {
                match event.token {
                    LISTENER => self.accept_connections(ACCEPTS_PER_TURN),
                    SIGNALS => {}
                    WAKE => self.take_back_jobs(),
                    token => self.on_event(token, event),
                }
            }
            self.run_pending();
            self.run_timers();
            if self.shutdown_deadline.is_some() {
                self.end_keepalive_drain();
                if self.finish_shutdown() {
                    break;
                }
            }
        }
        self.sync_poller_counters();
        let counters = self.shared.env.counters;
        log::info!(
            "{}",
            stats::summary_line(self.shared.env.backend, &counters)
        );
        Ok(counters)
    }

    fn next_timeout(&self) -> Option<Duration> {
        if !self.pending.is_empty() || self.accept_pending {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        [
            self.timers.next().map(|at| self.shared.clock.instant(at)),
            self.accept_paused_until,
            self.keepalive_drain_until,
            self.shutdown_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now))
    }

    fn on_event(&mut self, token: Token, event: &Event) {
        let Some(conn) = self.conns.get_mut(token) else {
            return; // stale: closed earlier in this batch
        };
        conn.read_ready |= event.readable || event.hangup;
        conn.write_ready |= event.writable || event.hangup;
        conn.hangup_seen |= event.hangup;
        let before = Progress::of(conn, &self.shared.env.counters);
        self.drive(token);
        let after = self
            .conns
            .get_mut(token)
            .map(|c| Progress::of(c, &self.shared.env.counters));
        if after == Some(before) {
            self.shared.env.counters.spurious_wakeups += 1;
        }
    }

    /// One turn for one connection, then whatever it decided.
    fn drive(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let answered_before = self.shared.env.counters.requests;
        let verdict = turn(conn, token, &mut self.shared);
        if self.shutdown_deadline.is_some() {
            let counters = &mut self.shared.env.counters;
            counters.shutdown_answered += counters.requests - answered_before;
        }
        self.settle(token, verdict);
    }

    /// Acts on a turn's verdict: close, or re-arm the deadline and the interest set.
    fn settle(&mut self, token: Token, verdict: Verdict) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if verdict == Verdict::Close {
            self.close(token);
            return;
        }
        if verdict == Verdict::KeepPending {
            self.pending.push(token);
        }
        let deadline = conn.deadline(&self.timeouts);
        self.timers.arm(&mut conn.stamps, deadline, token);
        let offloading = self
            .shared
            .offload
            .as_ref()
            .is_some_and(|h| h.every_request);
        if let Err(e) = update_interest(&mut *self.poller, self.features, offloading, conn, token) {
            log::warn!("cannot update interest for fd {}: {e}", conn.fd.as_raw_fd());
            self.close(token);
        }
    }

    /// The workers finished some jobs: each connection gets its session back, and its output is
    /// sent at once.
    fn take_back_jobs(&mut self) {
        let Some(hook) = self.shared.offload.as_mut() else {
            return;
        };
        let mut done = std::mem::take(&mut self.done);
        match hook.workers.collect(&mut done) {
            Ok(wakes) => {
                let syscalls = &mut self.shared.env.counters.syscalls;
                syscalls.reads += 1;
                syscalls.writes += wakes;
            }
            Err(e) => log::warn!("reading the workers' wake descriptor: {e}"),
        }
        let depth = hook.workers.outstanding() as u64;
        if hook.every_request {
            self.shared.env.counters.pool_queue_depth = depth;
        } else {
            self.shared.env.counters.offload_queue_depth = depth;
        }
        for job in done.drain(..) {
            self.take_back(job);
        }
        self.done = done;
        self.offer_to_free_workers();
    }

    /// Parked echo connections, oldest first, get the workers freed since they parked.
    fn offer_to_free_workers(&mut self) {
        loop {
            let Some(hook) = self.shared.offload.as_mut() else {
                return;
            };
            if hook.workers.outstanding() >= hook.workers.capacity() {
                return;
            }
            let Some(token) = hook.parked.pop_front() else {
                return;
            };
            let Some(conn) = self.conns.get_mut(token).filter(|c| c.parked) else {
                continue;
            };
            conn.parked = false;
            self.drive(token);
        }
    }

    fn take_back(&mut self, job: Done) {
        let shutting_down = self.shutdown_deadline.is_some();
        let every_request = self
            .shared
            .offload
            .as_ref()
            .is_some_and(|h| h.every_request);
        let counters = &mut self.shared.env.counters;
        if every_request {
            counters.pool_worker_busy_ns += job.busy_ns;
            // On the worker that serves the request: the pool's own way, not an offload.
            counters.blocking_inline += job.blocking;
        } else {
            // The work the job was sent with was counted at the hand-off; any more it met in
            // requests pipelined behind it ran on the helper too.
            counters.blocking_offloaded += job.blocking.saturating_sub(1);
        }
        counters.requests += job.requests;
        if shutting_down {
            counters.shutdown_answered += job.requests;
        }
        let Some(conn) = self.conns.get_mut(job.token) else {
            return; // closed at the end of the grace period
        };
        conn.away = false;
        conn.session = job.session;
        if shutting_down {
            // The signal came while the session was away (a no-op if it left drained).
            conn.session.drain();
        }
        if job.consumed > 0 {
            // A request head ended; if another has begun behind it, its clock starts now.
            conn.stamps.head_started = NEVER;
        }
        // Stopped at the high-water mark, or at a body it lends, with input left: offered again
        // once the output drains.
        let full =
            job.output.len() >= OUTPUT_HIGH_WATER || !conn.session.static_output().is_empty();
        conn.fresh_input = full && !job.input.is_empty();
        conn.input = job.input;
        if conn.pending_output() == 0 {
            conn.output = job.output;
            conn.sent = 0;
        } else {
            // `--offload`: responses to requests before the blocking one may still be going
            // out; the job's come after them.
            debug_assert!(!every_request, "the pool hands off with the output flushed");
            conn.output.extend_from_slice(&job.output);
        }
        self.drive(job.token);
    }

    /// The poller counts its own waits and registrations; `/stats` shows them with the rest.
    fn sync_poller_counters(&mut self) {
        let polled = self.poller.counters();
        let syscalls = &mut self.shared.env.counters.syscalls;
        syscalls.waits = polled.waits;
        syscalls.ctl = polled.ctl;
        syscalls.overflow_scans = polled.overflow_scans;
        syscalls.signals +=
            polled.signals - std::mem::replace(&mut self.poller_signals, polled.signals);
    }

    fn run_pending(&mut self) {
        if std::mem::take(&mut self.accept_pending) {
            self.accept_connections(ACCEPTS_PER_TURN);
        }
        for token in std::mem::take(&mut self.pending) {
            self.drive(token);
        }
    }

    /// Acts on the connections whose deadline has passed (see [`Deadlines::next_expired`]).
    fn run_timers(&mut self) {
        let now = self.shared.clock.now_ms;
        while let Some(token) = self
            .timers
            .next_expired(now, &mut self.conns, &self.timeouts)
        {
            self.expire(token);
        }
        if self
            .accept_paused_until
            .is_some_and(|at| at <= Instant::now())
        {
            self.resume_accepting();
        }
    }

    /// A deadline passed: a write stalled, a request head took too long (HTTP: 408), a
    /// keep-alive connection sat idle, or lingering is over.
    fn expire(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let fd = conn.fd.as_raw_fd();
        match conn.phase {
            Phase::Serving if conn.unsent() => {
                self.shared.env.counters.timeouts_write += 1;
                log::debug!(
                    "fd {fd}: write stalled for {} ms; closing",
                    self.timeouts.write_ms
                );
            }
            Phase::Serving if conn.stamps.head_started != NEVER && !conn.input.is_empty() => {
                self.shared.env.counters.timeouts_header += 1;
                log::debug!(
                    "fd {fd}: request head not complete within {} ms",
                    self.timeouts.header_ms
                );
                conn.stamps.head_started = NEVER;
                if conn.output.capacity() == 0 {
                    std::mem::swap(&mut conn.output, &mut self.shared.scratch_out);
                }
                conn.session
                    .request_timeout(&mut conn.output, &self.shared.env);
                if conn.session.status() == Status::CloseAfterFlush {
                    // Sent like any error response: flush, shut down writing, linger, close.
                    return self.drive(token);
                }
            }
            Phase::Serving if conn.stamps.head_started != NEVER => {
                // Connected and never sent a byte of its (first or next) request head.
                self.shared.env.counters.timeouts_header += 1;
                log::debug!(
                    "fd {fd}: no request within {} ms; closing",
                    self.timeouts.header_ms
                );
            }
            Phase::Serving => {
                self.shared.env.counters.timeouts_idle += 1;
                log::debug!("fd {fd}: idle; closing");
            }
            Phase::Lingering => {}
        }
        self.close(token);
    }

    fn close(&mut self, token: Token) {
        if let Some(conn) = self.conns.remove(token) {
            if let Err(e) = self.poller.deregister(conn.fd.as_raw_fd()) {
                log::debug!("deregister fd {}: {e}", conn.fd.as_raw_fd());
            }
            self.shared.env.counters.connections_current -= 1;
            self.shared.env.publish();
            give_back_buffers(conn, &mut self.shared);
            // A descriptor was freed: if accepting was paused for EMFILE, try again now.
            if self.accept_paused_until.is_some() {
                self.resume_accepting();
            }
        }
    }

    fn accept_connections(&mut self, limit: usize) {
        let Some(listener) = self.listener.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        for _ in 0..limit {
            if self.listener.is_none() {
                return; // shutdown began while admitting
            }
            self.shared.env.counters.syscalls.accepts += 1;
            let fd = match sys::accept(listener, true) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if sys::is_fd_exhaustion(&e) => return self.pause_accepting(&e),
                Err(e) => {
                    // ECONNABORTED and friends: that client is gone, the next may not be.
                    log::debug!("accept: {e}");
                    continue;
                }
            };
            self.admit(fd);
        }
        // The budget is spent and more may be queued: come back next turn without waiting for
        // an event, which an edge-triggered backend would never send for these.
        self.accept_pending = true;
    }

    fn admit(&mut self, fd: OwnedFd) {
        let counters = &mut self.shared.env.counters;
        counters.connections_total += 1;
        if self.conns.len() >= self.options.max_conns {
            kit::refuse(
                fd.as_raw_fd(),
                self.options.config.proto,
                &mut self.shared.env,
            );
            log::debug!(
                "refused a connection: {} open, --max-conns {}",
                self.conns.len(),
                self.options.max_conns
            );
            return;
        }
        let raw = fd.as_raw_fd();
        // Not fatal: a socket without it is only slower at the tail of large responses.
        let _ = sys::set_nodelay(raw);
        let session = Session::new(self.options.config.proto).with_lent_output();
        let now = self.shared.clock.now_ms;
        let conn = ReadyConn {
            fd,
            stamps: Stamps::new(now, session.awaiting_head()),
            session,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            registered: Interest::NONE,
            read_ready: false,
            hangup_seen: false,
            write_ready: true,
            peer_eof: false,
            phase: Phase::Serving,
            away: false,
            fresh_input: false,
            refused: false,
            parked: false,
            lingered_bytes: 0,
        };
        let token = self.conns.insert(conn);
        let interest = if self.features.edge_triggered {
            Interest::BOTH
        } else {
            Interest::READ
        };
        match self.poller.register(raw, token, interest) {
            Ok(()) => {
                self.shared.env.counters.connections_current += 1;
                if let Some(conn) = self.conns.get_mut(token) {
                    conn.registered = interest;
                    // From the first moment: a client that never sends a byte must not hold
                    // the connection forever, and no event may ever come to arm it later.
                    let deadline = conn.deadline(&self.timeouts);
                    self.timers.arm(&mut conn.stamps, deadline, token);
                }
            }
            Err(e) => {
                log::warn!("cannot register fd {raw}: {e}; closing it");
                self.conns.remove(token);
            }
        }
    }

    /// Out of descriptors: stop accepting (clients wait in the backlog rather than being dropped)
    /// until a connection closes or a short pause has passed. Logged at most once a second.
    fn pause_accepting(&mut self, error: &io::Error) {
        self.exhaustion.warn(format_args!(
            "accept: {error}; pausing accepts, serving the {} open connections",
            self.conns.len()
        ));
        let now = Instant::now();
        if let Some(listener) = &self.listener {
            let _ = self
                .poller
                .reregister(listener.as_raw_fd(), LISTENER, Interest::NONE);
        }
        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
    }

    fn resume_accepting(&mut self) {
        self.accept_paused_until = None;
        if let Some(listener) = &self.listener {
            let _ = self
                .poller
                .reregister(listener.as_raw_fd(), LISTENER, Interest::READ);
        }
    }

    fn take_signals(&mut self) {
        let counters = &mut self.shared.env.counters;
        if let Some(sfd) = self.signals.as_mut() {
            if kit::take_stop_signals(sfd, counters) {
                self.begin_shutdown();
            }
        }
    }

    /// RFC 9112 §9.6: stop accepting; every session answers what it has received (or the next
    /// request of a keep-alive connection, within the drain window) with `Connection: close`,
    /// then the connection flushes, shuts down writing and lingers as after any final response.
    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let now = Instant::now();
        self.shutdown_deadline = Some(now + self.options.config.shutdown_grace);
        self.keepalive_drain_until = Some(now + self.options.config.keepalive_drain_window());
        // A client whose handshake the kernel completed may already have sent its request:
        // closing the listener would reset it. Take the backlog in, and drain it with the rest.
        if let Some(listener) = self.listener.as_ref().map(AsRawFd::as_raw_fd) {
            let queued = sys::accept_queue_len(listener).unwrap_or(0);
            self.accept_connections(queued.min(ACCEPTS_AT_SHUTDOWN));
        }
        if let Some(listener) = self.listener.take() {
            let _ = self.poller.deregister(listener.as_raw_fd());
        }
        self.accept_paused_until = None;
        self.accept_pending = false;
        for token in self.conns.tokens() {
            if let Some(conn) = self.conns.get_mut(token) {
                conn.session.drain();
                // With workers: what is buffered goes to one again, now that the session drains.
                conn.fresh_input = !conn.input.is_empty();
                // Echo turns to CloseAfterFlush at once; an HTTP request already buffered is
                // answered now rather than at the next event.
                conn.read_ready = true;
                self.drive(token);
            }
        }
    }

    /// The drain window is over: connections still waiting for a next request get none. They
    /// shut down writing and linger (the client reads a clean EOF), rather than being closed
    /// under a request that may be on its way.
    fn end_keepalive_drain(&mut self) {
        if self
            .keepalive_drain_until
            .is_none_or(|until| Instant::now() < until)
        {
            return;
        }
        self.keepalive_drain_until = None;
        for token in self.conns.tokens() {
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            if conn.phase == Phase::Serving && conn.is_idle() {
                let verdict = start_lingering(conn, &mut self.shared);
                self.settle(token, verdict);
            }
        }
    }

    /// True when the loop may exit: no connections left, or the grace period is over.
    fn finish_shutdown(&mut self) -> bool {
        if self.conns.is_empty() {
            return true;
        }
        if self.shutdown_deadline.is_some_and(|d| Instant::now() >= d) {
            log::warn!(
                "grace period over: closing {} connections",
                self.conns.len()
            );
            for token in self.conns.tokens() {
                self.close(token);
            }
            return true;
        }
        false
    }
}
