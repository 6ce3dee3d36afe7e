//! One event loop per thread over epoll: connects at the planned times, sends requests (closed
//! loop, open loop on the global schedule, or hold pings), reads responses into one buffer per
//! thread, and records latencies. Nothing is shared with other threads except the channel that
//! carries interval snapshots; the thread's [`Stats`] are returned when it ends.
//!
//! Times are nanoseconds since the run's start (`ThreadPlan::start`), read from a [`Clock`] that
//! is a parameter of the loop, so that tests can say what time it is: once per wakeup, per
//! timer or connect event, after every read that returned bytes (the completion time of the
//! responses it completes; in open loop the kernel's receive timestamp of its last byte, through
//! [`Clock::received`]), and before every send (the send time of the requests whose first byte
//! it writes).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use c10k::backend::epoll::Epoll;
use c10k::backend::{Event, Interest, Poller};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use socket2::Socket;

use crate::client::{Client, Outcome};
pub(crate) use crate::config::EngineKind;
use crate::interval::{Feed, Snapshot};
use crate::stats::{new_histogram, record_ns, PathStats, Stats};
use crate::sys;
pub(crate) use plan::{ConnPlan, Schedule, ThreadPlan};

mod conn_io;
mod end;
#[cfg(test)]
mod loop_tests;
mod plan;
mod tick;
mod uring;
pub(crate) use uring::probe as probe_uring;

/// One thread's read buffer.
const READ_BUF: usize = 256 * 1024;
/// A wakeup this late for a timer counts as event-loop lag.
const LATE_WAKEUP_NS: u64 = 2_000_000;
/// The token of the timer descriptor (no connection slot has this index).
const TIMER_TOKEN: u64 = u64::MAX;
/// The token of the signal descriptor.
const SIGNAL_TOKEN: u64 = u64::MAX - 1;

/// The event loop's clock: nanoseconds since the run's start.
pub(crate) trait Clock {
    fn now(&self) -> u64;

    /// CLOCK_REALTIME now, ns since the epoch: the clock of the kernel's receive timestamps.
    fn real(&self) -> u64;

    /// When bytes the kernel stamped `stamp` (SO_TIMESTAMPNS: CLOCK_REALTIME ns) came, on this
    /// clock: their age on the real clock, back from now. Never after now.
    fn received(&self, stamp: u64) -> u64 {
        let now = self.now();
        now.saturating_sub(self.real().saturating_sub(stamp))
    }
}

/// The real clock (CLOCK_MONOTONIC through [`Instant`]).
pub(crate) struct Monotonic(pub Instant);

impl Clock for Monotonic {
    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }

    fn real(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Connecting { since: u64 },
    Open,
}

/// A request in flight (sent, or queued in the output) that has not timed out.
#[derive(Clone, Copy, Debug)]
struct Req {
    /// When it was due: on the open-loop schedule, the ping's period, or (closed loop) when
    /// the answer before it let it be queued. The corrected latency starts here.
    intended: u64,
    /// When its first byte was written to the socket ([`UNSENT`] until then). The service time
    /// starts here.
    sent: u64,
    /// Where it starts in the connection's output.
    at: usize,
    /// Its class ([`Client::class_of`]): which of `Stats::per_path` it is recorded in.
    class: u8,
}

/// [`Req::sent`] of a request none of whose bytes has been written yet.
const UNSENT: u64 = u64::MAX;

struct Conn<S> {
    socket: Option<Socket>,
    gen: u32,
    phase: Phase,
    out: Vec<u8>,
    out_pos: usize,
    want_write: bool,
    carry: Vec<u8>,
    /// The peer's last response has come (`Connection: close`): nothing more is sent on this
    /// connection, and it is closed (and replaced) once that response is complete.
    peer_closing: bool,
    /// Requests timed out whose answers, if they ever come, are the next ones on the stream
    /// (answers come in order): they are matched with these and counted late. Only a count, so
    /// that a hold against a peer that stopped answering keeps probing in bounded memory.
    stale: u64,
    /// Requests in flight, oldest first; the ones timed out have moved to `stale`, so that
    /// `--pipeline` bounds only the requests still awaited in time.
    inflight: VecDeque<Req>,
    /// The newest requests of `inflight` that are queued but not written at all yet.
    unsent: usize,
    /// Requests issued on this slot, over its reconnections: their numbering in closed loop.
    issued: u64,
    state: S,
    in_free: bool,
    ever_open: bool,
}

impl<S> Conn<S> {
    /// The output is written up to `out_pos` at `t`: the requests that start before it are sent.
    fn written(&mut self, t: u64) {
        while self.unsent > 0 {
            let first_unsent = self.inflight.len() - self.unsent;
            let r = &mut self.inflight[first_unsent];
            if r.at >= self.out_pos {
                break;
            }
            r.sent = t;
            self.unsent -= 1;
        }
    }

    /// Requests left `inflight` from the front (answered, timed out).
    fn popped(&mut self) {
        self.unsent = self.unsent.min(self.inflight.len());
    }

    /// A held connection between pings owns no heap memory: its in-flight queue and buffers,
    /// allocated for the ping just answered, are freed (about 180 bytes a connection, more than
    /// the slot itself). Only a hold does this: its pings are seconds apart, while a load run
    /// would pay an allocation per request.
    fn release_idle_buffers(&mut self) {
        if self.inflight.is_empty() && self.out_pos == self.out.len() && self.carry.is_empty() {
            self.inflight = VecDeque::new();
            self.out = Vec::new();
            self.out_pos = 0;
            self.carry = Vec::new();
        }
    }
}

/// Why a connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    /// The peer closed (EOF).
    Eof,
    /// ECONNRESET, EPIPE or another socket error.
    Reset,
    /// A response that could not be parsed, or a corrupted echo.
    Error,
    /// A request on it timed out.
    Timeout,
    /// loadgen's own choice (no keep-alive, end of the run).
    Done,
}

/// Counters for the current interval.
#[derive(Default)]
struct IntervalAcc {
    completed: u64,
    bytes_received: u64,
    errors: u64,
    timeouts: u64,
}

struct Engine<C: Client, K: Clock> {
    plan: ThreadPlan,
    client: C,
    clock: K,
    poller: Epoll,
    /// Wakes the loop at the next deadline to the nanosecond (epoll's own timeout has 1 ms
    /// granularity, which would add up to 1 ms to open-loop latencies).
    timer: TimerFd,
    /// The deadline the timer is set for (u64::MAX: none).
    armed: u64,
    /// SIGINT/SIGTERM, when the caller has blocked them (the `loadgen` command does): the run
    /// stops early and still reports. Never read, so that every thread sees the signal.
    signals: SignalFd,
    interrupted: bool,
    conns: Vec<Conn<C::State>>,
    stats: Stats,
    rbuf: Vec<u8>,
    /// Room for a read's control message: its receive timestamp (open loop).
    cmsg: Vec<u8>,
    outcomes: Vec<Outcome>,
    events: Vec<Event>,
    /// Open connections with room for another request (open loop), checked when popped.
    free: Vec<u32>,
    /// Hold pings: (due, slot, generation), in due order since every period is the same.
    pings: VecDeque<(u64, u32, u32)>,
    next_connect: usize,
    open: u64,
    connecting: u64,
    /// The run's start (`plan.origin`) has come: requests may be sent.
    started: bool,
    /// Open loop: this thread's next request index.
    next_k: u64,
    /// Requests issued after the warmup (for `--requests`).
    measured_issued: u64,
    /// Requests in flight and not yet timed out.
    unresolved: u64,
    measure_start: u64,
    measure_end: u64,
    /// Once the measured window has ended and the run drains (see `end.rs`): when the drain
    /// ends at the latest.
    drain_until: Option<u64>,
    /// When the latest answer to a request of the window came.
    last_answer: u64,
    iv: IntervalAcc,
    iv_latency: hdrhistogram::Histogram<u64>,
    iv_index: u64,
    next_check: u64,
    check_every: u64,
    /// This thread's (run, wait) ns when the measured window began (see
    /// [`sys::thread_sched_ns`]).
    window_sched: Option<(u64, u64)>,
    /// The io_uring engine's ring (`--engine uring`): connections' reads and writes go through
    /// it, and epoll keeps only connects, the timer and the signals (see [`uring`]).
    ring: Option<Box<uring::Ring>>,
}

/// Runs one thread's share of the run to its end.
pub(crate) fn run_thread<C: Client>(
    client: C,
    plan: ThreadPlan,
    kind: EngineKind,
) -> io::Result<Stats> {
    let cpu0 = sys::thread_cpu_time();
    // The open loop sleeps to its ticks (Engine::sleep_until): without this, the kernel may let
    // such a sleep run up to 50 µs over (the default timer slack), half a default tick.
    let _ = nix::sys::prctl::set_timerslack(1);
    let clock = Monotonic(plan.start);
    let mut engine = Engine::new(client, plan, clock)?;
    if kind == EngineKind::Uring {
        engine.ring = Some(Box::new(uring::Ring::new(engine.conns.len())?));
    }
    let wall0 = engine.now();
    engine.run()?;
    let end = engine.now();
    engine.finish(end);
    if let Some(ring) = engine.ring.take() {
        ring.close();
    }
    let wall = Duration::from_nanos(end - wall0);
    let cpu = sys::thread_cpu_time().saturating_sub(cpu0);
    if let Some((run0, wait0)) = engine.window_sched {
        let (run, wait) = sys::thread_sched_ns();
        engine.stats.this.measured_run_us = run.saturating_sub(run0) / 1000;
        engine.stats.this.measured_wait_us = wait.saturating_sub(wait0) / 1000;
    }
    let s = &mut engine.stats;
    s.this.threads = 1;
    s.this.thread_cpu_us = cpu.as_micros() as u64;
    s.this.thread_wall_us = wall.as_micros() as u64;
    s.this.saturated_threads = u64::from(cpu.as_secs_f64() >= 0.9 * wall.as_secs_f64());
    Ok(engine.stats)
}

impl<C: Client, K: Clock> Engine<C, K> {
    fn new(client: C, plan: ThreadPlan, clock: K) -> io::Result<Self> {
        let conns = plan
            .conns
            .iter()
            .map(|c| Conn {
                socket: None,
                gen: 0,
                phase: Phase::Idle,
                out: Vec::new(),
                out_pos: 0,
                want_write: false,
                carry: Vec::new(),
                peer_closing: false,
                stale: 0,
                inflight: VecDeque::with_capacity(plan.pipeline),
                unsent: 0,
                issued: 0,
                state: client.new_state(c.global as u32),
                in_free: false,
                ever_open: false,
            })
            .collect();
        let measure_start = if plan.hold {
            0
        } else {
            plan.origin + plan.warmup
        };
        let measure_end = match plan.duration {
            Some(d) if !plan.hold => measure_start + d,
            _ => u64::MAX,
        };
        let check_every = (plan.timeout / 10).clamp(5_000_000, 200_000_000);
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        let mut poller = Epoll::new(false)?;
        poller.register(timer.as_fd().as_raw_fd(), TIMER_TOKEN, Interest::READ)?;
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGTERM);
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        poller.register(signals.as_fd().as_raw_fd(), SIGNAL_TOKEN, Interest::READ)?;
        let mut engine = Engine {
            client,
            clock,
            poller,
            timer,
            armed: u64::MAX,
            signals,
            interrupted: false,
            conns,
            stats: Stats::default(),
            rbuf: vec![0; READ_BUF],
            cmsg: nix::cmsg_space!(TimeSpec),
            outcomes: Vec::new(),
            events: Vec::with_capacity(1024),
            free: Vec::new(),
            pings: VecDeque::new(),
            next_connect: 0,
            open: 0,
            connecting: 0,
            started: plan.origin == 0,
            next_k: 0,
            measured_issued: 0,
            unresolved: 0,
            measure_start,
            measure_end,
            drain_until: None,
            last_answer: 0,
            iv: IntervalAcc::default(),
            iv_latency: new_histogram(),
            iv_index: 0,
            next_check: check_every,
            check_every,
            window_sched: None,
            ring: None,
            plan,
        };
        engine.stats.conns.requested = engine.conns.len() as u64;
        engine.stats.per_path = engine
            .client
            .classes()
            .into_iter()
            .map(PathStats::new)
            .collect();
        Ok(engine)
    }

    fn now(&self) -> u64 {
        self.clock.now()
    }

    fn in_window(&self, t: u64) -> bool {
        t >= self.measure_start && t < self.measure_end
    }

    /// Whether a request resolved `now` goes into the current interval's latency histogram.
    /// Warmup intervals take every request; measured ones (and the last one, which takes the
    /// measured requests answered after the end) only the requests the final report counts, so
    /// that the measured intervals of `--hdr-log` add up to exactly the final histogram (`loadgen
    /// merge` relies on it). A request sent in the warmup and answered after it is in neither.
    fn in_interval_latency(&self, intended: u64, now: u64) -> bool {
        now < self.measure_start || self.in_window(intended)
    }

    fn run(&mut self) -> io::Result<()> {
        // Intervals are aligned on the end of the warmup: the first covers the warmup alone.
        let mut tick_from = 0;
        let mut next_tick = if self.measure_start > 0 {
            self.measure_start
        } else {
            self.plan.interval
        };
        loop {
            let now = self.now();
            if self.window_sched.is_none() && now >= self.measure_start {
                self.window_sched = Some(sys::thread_sched_ns());
            }
            self.connect_due(now);
            if !self.started && now >= self.plan.origin {
                self.start_requests(now);
            }
            if self.plan.schedule.is_some() {
                self.dispatch(now);
            }
            self.ping_due(now);
            if now >= self.next_check {
                self.check_timeouts(now);
                self.next_check = now + self.check_every;
            }
            // The window's intervals only: the drain after it has a line of its own.
            if now >= next_tick && next_tick <= self.measure_end {
                self.snapshot(tick_from, next_tick - tick_from);
                tick_from = next_tick;
                next_tick += self.plan.interval;
            }
            if self.finished(now) {
                self.last_snapshot(tick_from, now);
                return Ok(());
            }
            tick_from = self.drain_began(tick_from);
            let tick = if next_tick <= self.measure_end {
                next_tick
            } else {
                u64::MAX
            };
            let deadline = self.deadline(now).min(tick);
            if self.in_window(now) {
                self.stats.this.measured_wakeups += 1;
            }
            if deadline > now && self.reads_wait_for_tick(now, deadline) {
                self.sleep_until(deadline);
                self.turn(Some(Duration::ZERO))?;
                continue;
            }
            let wait = if deadline <= now {
                Some(Duration::ZERO)
            } else {
                if deadline != self.armed {
                    let t = TimeSpec::from_duration(Duration::from_nanos(deadline - now));
                    self.timer
                        .set(Expiration::OneShot(t), TimerSetTimeFlags::empty())?;
                    self.armed = deadline;
                }
                None
            };
            self.turn(wait)?;
        }
    }

    /// The run's start instant has come: a closed loop fills the connections opened before it
    /// (an open loop's schedule starts there by itself).
    fn start_requests(&mut self, now: u64) {
        self.started = true;
        if self.plan.schedule.is_none() && !self.plan.hold {
            for idx in 0..self.conns.len() {
                self.refill(idx, now);
            }
        }
    }

    /// Waits for readiness (`wait` None: until the timer fires) and handles what is ready.
    fn turn(&mut self, wait: Option<Duration>) -> io::Result<()> {
        self.stats.this.wakeups += 1;
        if self.ring.is_some() {
            return self.turn_uring(wait);
        }
        self.poll_epoll(wait)
    }

    /// One epoll_wait, and what it reported handled.
    fn poll_epoll(&mut self, wait: Option<Duration>) -> io::Result<()> {
        self.events.clear();
        self.poller.poll(&mut self.events, wait)?;
        let events = std::mem::take(&mut self.events);
        for ev in &events {
            self.handle(*ev);
        }
        self.events = events;
        Ok(())
    }

    /// The earliest timer: next connect, next due request, next ping, timeout check, end.
    fn deadline(&self, now: u64) -> u64 {
        let mut d = self.next_check;
        if !self.started {
            d = d.min(self.plan.origin);
        }
        if let Some(c) = self.plan.conns.get(self.next_connect) {
            d = d.min(c.connect_at);
        }
        if let Some(s) = &self.plan.schedule {
            if !self.free.is_empty() && self.may_issue(now) {
                d = d.min(s.wake_for(self.next_k));
            }
        }
        if let Some(&(due, _, _)) = self.pings.front() {
            d = d.min(due);
        }
        if self.plan.requests.is_none() && now < self.measure_end {
            d = d.min(self.measure_end);
        }
        if let Some(until) = self.drain_until {
            d = d.min(until);
        }
        d
    }

    fn finished(&mut self, now: u64) -> bool {
        if self.interrupted {
            return true;
        }
        if now >= self.measure_end {
            return self.drain_done(now);
        }
        let ramp_done = self.next_connect == self.conns.len() && self.connecting == 0;
        if ramp_done && self.open == 0 {
            return true; // nothing left to do: every connection failed or closed
        }
        if self.plan.hold {
            if ramp_done && self.measure_end == u64::MAX {
                self.measure_end = now + self.plan.duration.unwrap_or(0);
            }
            return false;
        }
        match self.plan.requests {
            // Every connect resolved too: a thread with no requests still reports its connections.
            Some(n) => {
                ramp_done
                    && now >= self.measure_start
                    && self.measured_issued >= n
                    && self.unresolved == 0
            }
            None => false,
        }
    }

    /// Whether a new request may be issued at `now`.
    fn may_issue(&self, now: u64) -> bool {
        if self.plan.hold || now >= self.measure_end || now < self.plan.origin {
            return false;
        }
        match self.plan.requests {
            Some(n) => now < self.measure_start || self.measured_issued < n,
            None => true,
        }
    }

    fn connect_due(&mut self, now: u64) {
        while let Some(c) = self.plan.conns.get(self.next_connect) {
            if c.connect_at > now {
                break;
            }
            let idx = self.next_connect;
            self.next_connect += 1;
            self.start_connect(idx, now);
        }
    }

    fn push_free(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        if !c.in_free && c.phase == Phase::Open && c.inflight.len() < self.plan.pipeline {
            c.in_free = true;
            self.free.push(idx as u32);
        }
    }

    /// The number of the next request on connection `idx` when nothing else numbers it (closed
    /// loop, pings): its own count, from its index over the run, so that connections do not all
    /// send a mix's rare path at once.
    fn conn_seq(&self, idx: usize) -> u64 {
        self.plan.conns[idx].global as u64 + self.conns[idx].issued
    }

    /// Appends request `seq` (which decides its class) to the connection's output (the caller
    /// flushes; the request is sent when its first byte is written).
    fn issue(&mut self, idx: usize, intended: u64, seq: u64) {
        let class = self.client.class_of(seq);
        let c = &mut self.conns[idx];
        let at = c.out.len();
        self.client.encode_class(&mut c.state, class, &mut c.out);
        c.inflight.push_back(Req {
            intended,
            sent: UNSENT,
            at,
            class,
        });
        c.unsent += 1;
        c.issued += 1;
        self.unresolved += 1;
        if intended >= self.measure_start {
            self.measured_issued += 1;
        }
        if intended >= self.measure_start && intended < self.measure_end {
            self.stats.reqs.sent += 1;
            if let Some(p) = self.stats.per_path.get_mut(class as usize) {
                p.sent += 1;
            }
        }
    }

    /// Closed loop: keep `pipeline` requests in flight.
    fn refill(&mut self, idx: usize, now: u64) {
        let mut any = false;
        while self.conns[idx].phase == Phase::Open
            && self.conns[idx].inflight.len() < self.plan.pipeline
            && self.may_issue(now)
        {
            self.issue(idx, now, self.conn_seq(idx));
            any = true;
        }
        if any {
            self.flush(idx);
        }
    }

    /// Open loop: send every request that is due on a free connection, oldest first; a request
    /// still unsent after the timeout is a timeout. Requests are numbered on the run's one
    /// schedule, so that which of them take which path of a mix is the same on every run,
    /// whichever connection carries them.
    fn dispatch(&mut self, now: u64) {
        let Some(s) = self.plan.schedule else { return };
        // The drain still sends the window's requests that were due and waited for a connection.
        while self.may_issue(now) || self.drain_until.is_some() {
            let due = s.due(self.next_k);
            if due > now || due >= self.measure_end {
                break;
            }
            if now - due >= self.plan.timeout {
                let class = self.client.class_of(s.global(self.next_k));
                self.next_k += 1;
                self.unresolved += 1; // resolved at once, as a timeout
                if due >= self.measure_start {
                    self.measured_issued += 1;
                }
                if self.in_window(due) {
                    self.stats.reqs.sent += 1;
                    if let Some(p) = self.stats.per_path.get_mut(class as usize) {
                        p.sent += 1;
                    }
                }
                self.time_out(due, class, now);
                continue;
            }
            let Some(idx) = self.pop_free() else { break };
            self.issue(idx, due, s.global(self.next_k));
            self.next_k += 1;
            self.flush(idx);
            self.push_free(idx);
        }
    }

    fn pop_free(&mut self) -> Option<usize> {
        while let Some(i) = self.free.pop() {
            let c = &mut self.conns[i as usize];
            c.in_free = false;
            if c.phase == Phase::Open && c.inflight.len() < self.plan.pipeline {
                return Some(i as usize);
            }
        }
        None
    }

    /// Counts and records a request of `class` found past its timeout.
    fn time_out(&mut self, intended: u64, class: u8, now: u64) {
        self.unresolved -= 1;
        self.iv.timeouts += 1;
        self.iv.errors += 1;
        if self.in_interval_latency(intended, now) {
            record_ns(&mut self.iv_latency, now - intended);
        }
        if self.in_window(intended) {
            self.stats.reqs.timeouts += 1;
            record_ns(&mut self.stats.latency, now - intended);
            if let Some(p) = self.stats.per_path.get_mut(class as usize) {
                p.timeouts += 1;
                record_ns(&mut p.latency, now - intended);
            }
        }
    }

    fn ping_due(&mut self, now: u64) {
        let Some(period) = self.plan.ping else { return };
        while let Some(&(due, idx, gen)) = self.pings.front() {
            if due > now {
                break;
            }
            self.pings.pop_front();
            let i = idx as usize;
            if self.conns[i].gen != gen || self.conns[i].phase != Phase::Open {
                continue;
            }
            if self.conns[i].inflight.len() < self.plan.pipeline && now < self.measure_end {
                self.issue(i, due, self.conn_seq(i));
                self.flush(i);
            }
            if self.conns[i].gen == gen {
                self.pings.push_back((due + period, idx, gen));
            }
        }
    }

    fn check_timeouts(&mut self, now: u64) {
        let timeout = self.plan.timeout;
        for idx in 0..self.conns.len() {
            match self.conns[idx].phase {
                Phase::Connecting { since } if now - since >= timeout => {
                    let e = io::Error::from_raw_os_error(libc::ETIMEDOUT);
                    self.abandon_connect(idx, &e);
                }
                Phase::Open => {
                    // Requests on a connection are due in order: the expired ones lead.
                    let mut expired = false;
                    while let Some(r) = self.conns[idx].inflight.front().copied() {
                        if now - r.intended < timeout {
                            break;
                        }
                        self.conns[idx].inflight.pop_front();
                        self.conns[idx].popped();
                        self.conns[idx].stale += 1;
                        self.time_out(r.intended, r.class, now);
                        expired = true;
                    }
                    // An answer can no longer be matched in time, and a closed loop would wait
                    // on it forever: start over on a new connection. A held connection stays
                    // (the hold is what is measured) and is probed again: the lost ping no
                    // longer counts against --pipeline.
                    if expired && !self.plan.hold {
                        self.close(idx, Close::Timeout, now);
                    }
                }
                _ => {}
            }
        }
    }

    fn snapshot(&mut self, from: u64, len: u64) {
        let iv = std::mem::take(&mut self.iv);
        let mut latency = new_histogram();
        std::mem::swap(&mut latency, &mut self.iv_latency);
        let snap = Snapshot {
            index: self.iv_index,
            start_s: from as f64 / 1e9,
            duration_s: len as f64 / 1e9,
            warmup: from < self.measure_start,
            drain: from >= self.measure_end,
            completed: iv.completed,
            errors: iv.errors,
            timeouts: iv.timeouts,
            bytes_received: iv.bytes_received,
            conns_open: self.open,
            conns_connecting: self.connecting,
            parts: 1,
            latency,
        };
        self.iv_index += 1;
        // The receiver only goes away when the run is over.
        let _ = self
            .plan
            .snapshots
            .send((self.plan.thread, Feed::Snapshot(snap)));
    }
}
