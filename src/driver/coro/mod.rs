//! Coroutines: each connection is an `async fn` written as straight-line code — read, let the
//! protocol answer, write the answer, loop — run by c10k's own single-threaded executor over
//! edge-triggered epoll (`executor.rs`, `io.rs`). No runtime crate: a slab of tasks, one waker per
//! task, a ready queue, and a reactor step that wakes the tasks whose descriptors became ready.
//!
//! Invariants this driver keeps (the reactor's, in straight-line form):
//! - A connection writes everything the protocol produced (at most about one high-water mark)
//!   before it reads again: a client that does not read stops being read from, and holds one
//!   output buffer, not more.
//! - Idle connections own no buffers: input and output buffers are lent from the loop's pool when
//!   the socket is readable or the protocol has output, and given back before the task waits
//!   for a client (a partial request is kept right-sized). 10,000 idle connections cost 10,000
//!   small tasks.
//! - A task reads at most `READ_BUDGET_PER_TURN` bytes before it yields, so one fast client cannot
//!   starve the others; the accept task yields after `ACCEPTS_PER_TURN` accepts.
//! - Timeouts are deadlines the waiting future checks, with a timer armed lazily (`Alarm`): the
//!   header timeout from when a request head began (HTTP: 408, then close), the idle timeout
//!   between requests, the write timeout while output makes no progress.
//! - After an error response (`CloseAfterFlush`): flush, shut down writing, read and discard for
//!   at most 2 s / 256 KiB, then close, so the client reads the response rather than a reset.
//! - `--max-conns`: beyond it a connection gets the refusal (HTTP 503) and is closed. EMFILE
//!   pauses accepting (clients wait in the backlog) until a connection closes or 100 ms pass —
//!   a timer, never a spin.
//! - SIGINT/SIGTERM (signalfd, a task like the others), RFC 9112 §9.6: take in the connections
//!   queued in the backlog, stop accepting; every session answers what it has received (or the
//!   next request, within the keep-alive drain window) with `Connection: close`; idle ones are
//!   then shut down and lingered rather than closed under a request on its way; busy ones finish
//!   within `--shutdown-grace`, then the loop exits.
//! - Blocking work (`/sleep`, `/work`, with `--blocking-routes`) is never run on the loop: the
//!   task awaits it on helper threads (`offload.rs`; `--offload N` of them, default 4), as
//!   async code uses `spawn_blocking`, and the other tasks run meanwhile.

mod executor;
mod io;
mod offload;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io as stdio;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use nix::sys::signalfd::SignalFd;

use self::executor::{yield_now, Alarm, Executor, Runtime};
use self::io::{readable, IoDriver, Registration};
use super::kit::{
    self, RateLimitedLog, ACCEPTS_AT_SHUTDOWN, ACCEPTS_PER_TURN, ACCEPT_PAUSE, LINGER_BYTES,
    LINGER_TIME, MAX_BUFFERED_INPUT, READ_CHUNK,
};
use super::{DriverOptions, LoopEnv};
use crate::proto::{Session, Status, OUTPUT_HIGH_WATER};
use crate::stats::{self, Counters};
use crate::sys;

const BACKEND: &str = "coro";
/// Bytes one connection may read before it yields to the other ready tasks.
const READ_BUDGET_PER_TURN: usize = 256 * 1024;
/// Capacity of a lent buffer: a read chunk plus a partial request, or a high-water mark of output
/// plus the protocol's last append past it.
const BUFFER_CAPACITY: usize = 2 * OUTPUT_HIGH_WATER;
/// Buffers the pool keeps when they come back; more are freed.
const POOLED_BUFFERS: usize = 32;

/// What every task of this loop shares.
struct Ctx {
    rt: Rc<Runtime>,
    env: RefCell<LoopEnv>,
    options: DriverOptions,
    buffers: RefCell<Vec<Vec<u8>>>,
    /// Open connections (their tasks are alive).
    conns: Cell<usize>,
    shutdown_deadline: Cell<Option<Instant>>,
    /// During shutdown: until when an idle keep-alive connection may bring one more request.
    keepalive_drain_until: Cell<Option<Instant>>,
    /// Set by the signal task once connections have drained or the grace period is over.
    done: Cell<bool>,
    /// The accept task's waker: woken at shutdown, or when a connection closes during a pause.
    acceptor: RefCell<Option<Waker>>,
    accept_paused: Cell<bool>,
    /// The signal task's waker while it waits for connections to drain.
    drainer: RefCell<Option<Waker>>,
    exhaustion: RefCell<RateLimitedLog>,
    /// With `--blocking-routes`: the threads that run blocking work.
    helpers: Option<offload::Helpers>,
}

impl Ctx {
    fn shutting_down(&self) -> bool {
        self.shutdown_deadline.get().is_some()
    }

    fn lend(&self) -> Vec<u8> {
        self.buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUFFER_CAPACITY))
    }

    /// Takes the buffer back (leaving an unallocated one), keeping it for the next lender if it
    /// has the usual size and the pool is not full.
    fn give_back(&self, buf: &mut Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        let mut buf = std::mem::take(buf);
        let mut pool = self.buffers.borrow_mut();
        if (BUFFER_CAPACITY..=4 * BUFFER_CAPACITY).contains(&buf.capacity())
            && pool.len() < POOLED_BUFFERS
        {
            buf.clear();
            pool.push(buf);
        }
    }

    /// The protocol's turn. The poller's own counts are copied in first, so `/stats` is current.
    fn advance(&self, session: &mut Session, input: &[u8], output: &mut Vec<u8>) -> usize {
        let mut env = self.env.borrow_mut();
        sync_poller_counters(&self.rt, &mut env);
        let consumed = session.advance(input, output, &mut *env);
        // Published before the response is sent, so /stats on another worker already counts it.
        env.publish();
        consumed
    }

    fn with_counters<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        f(&mut self.env.borrow_mut().counters)
    }
}

fn sync_poller_counters(rt: &Runtime, env: &mut LoopEnv) {
    let polled = rt.io.borrow().counters();
    env.counters.syscalls.waits = polled.waits;
    env.counters.syscalls.ctl = polled.ctl;
}

/// A connection's (or the listener's) descriptor and its registration; the registration is
/// dropped first (field order), so the descriptor leaves epoll before it is closed.
struct Socket {
    reg: Registration,
    fd: OwnedFd,
}

impl Socket {
    fn new(rt: &Rc<Runtime>, fd: OwnedFd) -> stdio::Result<Socket> {
        Ok(Socket {
            reg: Registration::new(&rt.io, fd.as_raw_fd())?,
            fd,
        })
    }
}

/// Serves until SIGINT/SIGTERM and the end of the grace period; returns the counters.
pub fn run(
    listener: OwnedFd,
    signals: SignalFd,
    options: &DriverOptions,
) -> stdio::Result<Counters> {
    sys::set_nonblocking(listener.as_raw_fd(), true)?;
    let rt = Runtime::new(IoDriver::new()?);
    let helpers = if options.config.blocking_routes {
        let threads = options.config.offload.unwrap_or(offload::DEFAULT_HELPERS);
        log::info!("coro: blocking work is awaited on {threads} helper threads");
        Some(offload::Helpers::start(
            threads,
            options.config.thread_stack_kib,
        )?)
    } else {
        None
    };
    let ctx = Rc::new(Ctx {
        helpers,
        rt: Rc::clone(&rt),
        env: RefCell::new(LoopEnv::configured(BACKEND, options)),
        options: options.clone(),
        buffers: RefCell::new(Vec::new()),
        conns: Cell::new(0),
        shutdown_deadline: Cell::new(None),
        keepalive_drain_until: Cell::new(None),
        done: Cell::new(false),
        acceptor: RefCell::new(None),
        accept_paused: Cell::new(false),
        drainer: RefCell::new(None),
        exhaustion: RefCell::default(),
    });
    let listener = Socket::new(&rt, listener)?;
    let signal_reg = Registration::new(&rt.io, signals.as_raw_fd())?;
    rt.spawn(accept_loop(Rc::clone(&ctx), listener));
    rt.spawn(signal_task(Rc::clone(&ctx), signals, signal_reg));
    if let Some(helpers) = &ctx.helpers {
        let reg = helpers.register(&rt.io)?;
        let ctx = Rc::clone(&ctx);
        rt.spawn(async move {
            if let Some(helpers) = &ctx.helpers {
                helpers.collect(reg, &ctx.env).await;
            }
        });
    }
    let mut executor = Executor::new(Rc::clone(&rt));
    executor.run(|| ctx.env.borrow_mut().date.refresh(), || ctx.done.get())?;
    log::debug!("executor stopped with {} tasks", executor.live());
    // Whatever is left (connections past the grace period) is dropped here: closed.
    drop(executor);
    let mut env = ctx.env.borrow_mut();
    sync_poller_counters(&rt, &mut env);
    env.publish();
    let counters = env.counters;
    log::info!("{}", stats::summary_line(BACKEND, &counters));
    Ok(counters)
}

/// Accepts connections and spawns a task for each, until shutdown.
async fn accept_loop(ctx: Rc<Ctx>, listener: Socket) {
    loop {
        let go = poll_fn(|cx| {
            if ctx.shutting_down() {
                // A client whose handshake the kernel completed may already have sent its
                // request: take the backlog in (those are drained like the rest) rather than
                // reset it by closing the listener.
                let queued = sys::accept_queue_len(listener.fd.as_raw_fd()).unwrap_or(0);
                for _ in 0..queued.min(ACCEPTS_AT_SHUTDOWN) {
                    ctx.with_counters(|c| c.syscalls.accepts += 1);
                    match sys::accept(listener.fd.as_raw_fd(), true) {
                        Ok(fd) => admit(&ctx, fd),
                        Err(e) if e.kind() == stdio::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == stdio::ErrorKind::ConnectionAborted => {}
                        Err(_) => break,
                    }
                }
                return Poll::Ready(false);
            }
            ctx.acceptor
                .borrow_mut()
                .get_or_insert_with(|| cx.waker().clone());
            listener.reg.poll_read_ready(cx).map(|()| true)
        })
        .await;
        if !go {
            break;
        }
        let mut budget_spent = true;
        for _ in 0..ACCEPTS_PER_TURN {
            ctx.with_counters(|c| c.syscalls.accepts += 1);
            match sys::accept(listener.fd.as_raw_fd(), true) {
                Ok(fd) => admit(&ctx, fd),
                Err(e) if e.kind() == stdio::ErrorKind::WouldBlock => {
                    listener.reg.clear_read_ready();
                    budget_spent = false;
                    break;
                }
                Err(e) if sys::is_fd_exhaustion(&e) => {
                    pause_accepting(&ctx, &e).await;
                    budget_spent = false;
                    break;
                }
                // ECONNABORTED and friends: that client is gone, the next may not be.
                Err(e) => log::debug!("accept: {e}"),
            }
        }
        if budget_spent {
            yield_now().await;
        }
    }
    log::debug!("no longer accepting");
}

fn admit(ctx: &Rc<Ctx>, fd: OwnedFd) {
    // As the reactor does: see sys::set_nodelay. Not fatal when it fails.
    let _ = sys::set_nodelay(fd.as_raw_fd());
    {
        let mut env = ctx.env.borrow_mut();
        env.counters.connections_total += 1;
        if ctx.conns.get() >= ctx.options.max_conns {
            kit::refuse(fd.as_raw_fd(), ctx.options.config.proto, &mut *env);
            log::debug!(
                "refused a connection: {} open, --max-conns {}",
                ctx.conns.get(),
                ctx.options.max_conns
            );
            return;
        }
    }
    let raw = fd.as_raw_fd();
    match Socket::new(&ctx.rt, fd) {
        Ok(socket) => {
            ctx.conns.set(ctx.conns.get() + 1);
            let mut env = ctx.env.borrow_mut();
            env.counters.connections_current += 1;
            env.publish();
            ctx.rt.spawn(serve(Rc::clone(ctx), socket));
        }
        Err(e) => log::warn!("cannot register fd {raw}: {e}; closing it"),
    }
}

/// Out of descriptors: clients wait in the backlog until a connection closes or the pause ends.
/// Logged at most once a second.
async fn pause_accepting(ctx: &Ctx, error: &stdio::Error) {
    ctx.exhaustion.borrow_mut().warn(format_args!(
        "accept: {error}; pausing accepts, serving the {} open connections",
        ctx.conns.get()
    ));
    let now = Instant::now();
    ctx.accept_paused.set(true);
    let until = now + ACCEPT_PAUSE;
    let mut timer_set = false;
    poll_fn(|cx| {
        if !ctx.accept_paused.get() || ctx.shutting_down() || Instant::now() >= until {
            return Poll::Ready(());
        }
        if !timer_set {
            ctx.rt.wake_at(until, cx.waker().clone());
            timer_set = true;
        }
        Poll::Pending
    })
    .await;
    ctx.accept_paused.set(false);
}

/// Keeps the open-connection count true however the task ends (returned, or dropped when the
/// grace period is over), and tells whoever waits for a connection to close.
struct ConnGuard(Rc<Ctx>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let ctx = &self.0;
        ctx.conns.set(ctx.conns.get() - 1);
        {
            let mut env = ctx.env.borrow_mut();
            env.counters.connections_current -= 1;
            env.publish();
        }
        if ctx.accept_paused.replace(false) {
            // A descriptor was freed: accepting resumes now rather than after the pause.
            if let Some(w) = ctx.acceptor.borrow().as_ref() {
                w.wake_by_ref();
            }
        }
        if ctx.shutting_down() {
            if let Some(w) = ctx.drainer.borrow().as_ref() {
                w.wake_by_ref();
            }
        }
    }
}

/// One connection, start to end, in the order things happen to it.
async fn serve(ctx: Rc<Ctx>, socket: Socket) {
    let _guard = ConnGuard(Rc::clone(&ctx));
    let reg = &socket.reg;
    let timeouts = (
        ctx.options.config.header_timeout,
        ctx.options.config.idle_timeout,
        ctx.options.config.write_timeout,
    );
    let mut session = Session::new(ctx.options.config.proto);
    let mut input: Vec<u8> = Vec::new();
    let mut output: Vec<u8> = Vec::new();
    let mut peer_eof = false;
    let mut budget = READ_BUDGET_PER_TURN;
    let mut alarm = Alarm::default();
    // When the request head now arriving began: the header timeout counts from here, so a client
    // dripping a byte at a time is still cut. A new HTTP connection is awaiting its first head.
    let mut head_started = session.awaiting_head().then(|| ctx.rt.now());
    let mut drained = false;
    loop {
        if ctx.shutting_down() && !drained {
            // The request in progress, or the next one, is the last (echo: what was received).
            session.drain();
            drained = true;
        }
        // 1. Let the protocol turn input (or a streamed body) into output, up to the high-water
        //    mark, and write all of it before asking for more.
        let mut progressed = false;
        if !input.is_empty() || session.has_pending_output() {
            if output.capacity() == 0 {
                output = ctx.lend();
            }
            let before = output.len();
            let consumed = ctx.advance(&mut session, &input, &mut output);
            input.drain(..consumed);
            if session.blocking_work().is_some() {
                // `/sleep`, `/work`: awaited on a helper thread, never run on the loop's.
                if let Some(helpers) = &ctx.helpers {
                    let paused =
                        std::mem::replace(&mut session, Session::new(ctx.options.config.proto));
                    session = helpers.offload(paused, &mut output, &ctx.env).await;
                } else {
                    // No helpers without --blocking-routes, and so no such work: never taken.
                    kit::run_blocking_inline(&mut session, &mut output, &mut *ctx.env.borrow_mut());
                }
            }
            if consumed > 0 {
                // A request head ended; if another has begun behind it, its clock starts now.
                head_started = None;
            }
            progressed = consumed > 0 || output.len() > before;
        }
        if !output.is_empty() {
            if input.is_empty() {
                ctx.give_back(&mut input);
            }
            if let Err(e) = send_all(&ctx, reg, &output, timeouts.2, &mut alarm).await {
                if e.kind() == stdio::ErrorKind::TimedOut {
                    ctx.with_counters(|c| c.timeouts_write += 1);
                }
                log::debug!("fd {}: {e}; closing", reg.fd());
                break;
            }
            output.clear();
            continue;
        }
        ctx.give_back(&mut output);
        if progressed {
            continue;
        }
        // 2. Close, if the protocol or the peer said so.
        if session.status() == Status::CloseAfterFlush {
            linger(&ctx, &socket, peer_eof, &mut alarm).await;
            break;
        }
        if peer_eof {
            // Everything the peer sent before its half-close has been answered.
            break;
        }
        if input.len() > MAX_BUFFERED_INPUT {
            log::warn!(
                "fd {}: protocol left {} bytes unconsumed; closing",
                reg.fd(),
                input.len()
            );
            break;
        }
        // 3. Read more: wait for the socket first, holding no buffer while waiting, until the
        //    header timeout (from when the head began) or the idle timeout (from now).
        if !session.awaiting_head() {
            head_started = None;
        } else if head_started.is_none() && !input.is_empty() {
            head_started = Some(ctx.rt.now());
        }
        let deadline = match head_started {
            Some(start) => start + timeouts.0,
            None => ctx.rt.now() + timeouts.1,
        };
        let idle = input.is_empty() && !session.has_pending_output();
        let drain_until = ctx.keepalive_drain_until.get().filter(|_| idle);
        if input.is_empty() {
            ctx.give_back(&mut input);
        } else if input.capacity() >= READ_CHUNK && !reg.read_ready() {
            let partial = input.clone();
            ctx.give_back(&mut input);
            input = partial;
        }
        let mut waited = false;
        let wait = poll_fn(|cx| {
            if reg.poll_read_ready(cx).is_ready() {
                return Poll::Ready(Wait::Ready);
            }
            if idle && ctx.shutting_down() && ctx.keepalive_drain_until.get().is_none() {
                return Poll::Ready(Wait::Shutdown); // the drain window is over
            }
            waited = true;
            if let Some(until) = drain_until.filter(|&until| until < deadline) {
                if alarm.expired(&ctx.rt, until, cx) {
                    return Poll::Ready(Wait::Shutdown);
                }
                return Poll::Pending;
            }
            if alarm.expired(&ctx.rt, deadline, cx) {
                return Poll::Ready(Wait::TimedOut);
            }
            Poll::Pending
        })
        .await;
        match wait {
            Wait::Ready => {}
            Wait::Shutdown => {
                // Nothing in flight and no next request in the drain window: shut down writing
                // and linger, so a request already on its way meets an EOF, not a reset.
                linger(&ctx, &socket, peer_eof, &mut alarm).await;
                break;
            }
            Wait::TimedOut if head_started.is_some() && !input.is_empty() => {
                ctx.with_counters(|c| c.timeouts_header += 1);
                log::debug!(
                    "fd {}: request head not complete within {:?}",
                    reg.fd(),
                    timeouts.0
                );
                head_started = None;
                output = ctx.lend();
                session.request_timeout(&mut output, &*ctx.env.borrow());
                if session.status() == Status::CloseAfterFlush {
                    continue; // sent like any error response: flush, linger, close
                }
                break;
            }
            Wait::TimedOut => {
                ctx.with_counters(|c| match head_started {
                    // Connected and never sent a byte of its (first or next) request head.
                    Some(_) => c.timeouts_header += 1,
                    None => c.timeouts_idle += 1,
                });
                log::debug!("fd {}: idle; closing", reg.fd());
                break;
            }
        }
        if waited {
            budget = READ_BUDGET_PER_TURN;
        } else if budget == 0 {
            yield_now().await;
            budget = READ_BUDGET_PER_TURN;
        }
        if input.capacity() == 0 {
            input = ctx.lend();
        }
        ctx.with_counters(|c| c.syscalls.reads += 1);
        match reg.read_append(&mut input, READ_CHUNK) {
            Ok(0) => peer_eof = true,
            Ok(n) => {
                ctx.with_counters(|c| c.bytes_in += n as u64);
                budget = budget.saturating_sub(n);
            }
            Err(e) if e.kind() == stdio::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    ctx.give_back(&mut input);
    ctx.give_back(&mut output);
}

/// How a wait for input ended.
enum Wait {
    Ready,
    Shutdown,
    TimedOut,
}

/// Waits until `poll_ready` says ready (true) or `deadline` passes (false).
async fn ready_by(
    ctx: &Ctx,
    alarm: &mut Alarm,
    deadline: Instant,
    mut poll_ready: impl FnMut(&mut Context<'_>) -> Poll<()>,
) -> bool {
    poll_fn(|cx| {
        if poll_ready(cx).is_ready() {
            Poll::Ready(true)
        } else if alarm.expired(&ctx.rt, deadline, cx) {
            Poll::Ready(false)
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Writes all of `data`, waiting for writability whenever the socket buffer is full; fails when
/// no byte could be written for `write_timeout`.
async fn send_all(
    ctx: &Ctx,
    reg: &Registration,
    data: &[u8],
    write_timeout: Duration,
    alarm: &mut Alarm,
) -> stdio::Result<()> {
    let mut sent = 0;
    let mut deadline = ctx.rt.now() + write_timeout;
    while sent < data.len() {
        if !ready_by(ctx, alarm, deadline, |cx| reg.poll_write_ready(cx)).await {
            return Err(stdio::Error::new(
                stdio::ErrorKind::TimedOut,
                format!("write stalled for {write_timeout:?}"),
            ));
        }
        let result = reg.send(&data[sent..]);
        ctx.with_counters(|c| {
            c.syscalls.writes += 1;
            if let Ok(n) = result {
                c.bytes_out += n as u64;
            }
        });
        match result {
            Ok(n) => {
                sent += n;
                deadline = ctx.rt.now() + write_timeout;
            }
            Err(e) if e.kind() == stdio::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Shuts down writing, then reads and discards until EOF, too much, or the deadline, so that the
/// client reads our response rather than a reset caused by its unread bytes.
async fn linger(ctx: &Ctx, socket: &Socket, peer_eof: bool, alarm: &mut Alarm) {
    let _ = sys::shutdown_write(socket.fd.as_raw_fd());
    if peer_eof {
        return;
    }
    let reg = &socket.reg;
    let deadline = ctx.rt.now() + LINGER_TIME;
    let mut discarded = 0;
    loop {
        if !ready_by(ctx, alarm, deadline, |cx| reg.poll_read_ready(cx)).await {
            return;
        }
        let mut scratch = ctx.lend();
        ctx.with_counters(|c| c.syscalls.reads += 1);
        let result = reg.read_append(&mut scratch, READ_CHUNK);
        ctx.give_back(&mut scratch);
        match result {
            Ok(0) => return,
            Ok(n) => {
                discarded += n;
                if discarded > LINGER_BYTES {
                    return;
                }
            }
            Err(e) if e.kind() == stdio::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Takes SIGINT/SIGTERM/SIGHUP from the signalfd; on a stop signal, shuts down: no more accepts,
/// idle connections closed, busy ones given the grace period, then the loop ends.
async fn signal_task(ctx: Rc<Ctx>, mut signals: SignalFd, reg: Registration) {
    loop {
        readable(&reg).await;
        let stop = ctx.with_counters(|c| kit::take_stop_signals(&mut signals, c));
        if stop {
            break;
        }
        // Read to EAGAIN: the next signal raises a new edge.
        reg.clear_read_ready();
    }
    drop(reg);
    let now = Instant::now();
    let deadline = now + ctx.options.config.shutdown_grace;
    let drain_until = now + ctx.options.config.keepalive_drain_window();
    ctx.shutdown_deadline.set(Some(deadline));
    ctx.keepalive_drain_until.set(Some(drain_until));
    if let Some(w) = ctx.acceptor.borrow().as_ref() {
        w.wake_by_ref();
    }
    // Idle connections are waiting to read: woken, they drain their sessions and wait for one
    // more request until the drain window ends; then they are woken again to shut down.
    ctx.rt.io.borrow().wake_all_readers();
    let mut timer_set = false;
    let mut drain_timer_set = false;
    poll_fn(|cx| {
        if ctx.conns.get() == 0 || Instant::now() >= deadline {
            return Poll::Ready(());
        }
        if ctx.keepalive_drain_until.get().is_some() {
            if Instant::now() >= drain_until {
                ctx.keepalive_drain_until.set(None);
                ctx.rt.io.borrow().wake_all_readers();
            } else if !drain_timer_set {
                ctx.rt.wake_at(drain_until, cx.waker().clone());
                drain_timer_set = true;
            }
        }
        ctx.drainer
            .borrow_mut()
            .get_or_insert_with(|| cx.waker().clone());
        if !timer_set {
            ctx.rt.wake_at(deadline, cx.waker().clone());
            timer_set = true;
        }
        Poll::Pending
    })
    .await;
    if ctx.conns.get() > 0 {
        log::warn!("grace period over: closing {} connections", ctx.conns.get());
    }
    ctx.done.set(true);
}
