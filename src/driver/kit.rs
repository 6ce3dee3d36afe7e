//! What the loops share, written once: the limits they serve under, the slab that names a
//! connection by a generational token, the deadline heap of the event-driven loops, the
//! stop-signal reader, the refusal, and the warning that is logged at most once a second.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Display;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use super::{LoopEnv, Timeouts, NEVER};
use crate::proto::{Env, Proto, Session};
use crate::stats::Counters;
use crate::sys;

/// Bytes asked of one read once a request is under way.
pub const READ_CHUNK: usize = 64 * 1024;
/// A protocol that neither consumes nor rejects this much buffered input has a bug; the
/// connection is closed rather than allowed to grow without bound.
pub const MAX_BUFFERED_INPUT: usize = 2 * 1024 * 1024 + 64 * 1024;
/// Accepts per listener event, so that a connection storm cannot starve established clients.
pub const ACCEPTS_PER_TURN: usize = 256;
/// At shutdown, the connections queued in the listener's backlog at that moment are accepted
/// (and drained) rather than reset by its close; this bounds that last sweep.
pub const ACCEPTS_AT_SHUTDOWN: usize = 65_536;
/// After EMFILE/ENFILE (or a failed thread creation), how long accepting pauses unless a
/// connection closes first.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// After an error response: how long and how much is read and discarded before closing, so that
/// the client reads our response instead of a reset caused by its unread request bytes.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
pub const LINGER_BYTES: usize = 256 * 1024;

/// Names a slab entry: the slot's index (low 32 bits) and its generation (the next 24 bits).
/// The top byte is left free for io_uring, which keeps an operation's kind there.
pub type Token = u64;

const GENERATION_MASK: u32 = 0x00ff_ffff;

/// Values indexed by [`Token`]. A slot's generation changes each time it is freed, so a token
/// kept past its value's removal (an event for a descriptor closed in the same batch, a late
/// completion, a finished task's wake-up) finds nothing rather than the slot's next tenant.
#[derive(Debug)]
pub struct Slab<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    fn token(index: u32, generation: u32) -> Token {
        (u64::from(generation & GENERATION_MASK) << 32) | u64::from(index)
    }

    fn split(token: Token) -> (usize, u32) {
        ((token & 0xffff_ffff) as usize, (token >> 32) as u32)
    }

    pub fn insert(&mut self, value: T) -> Token {
        self.insert_with(|_| value)
    }

    /// Inserts the value `make` builds from the token it will have (a task's waker names it).
    pub fn insert_with(&mut self, make: impl FnOnce(Token) -> T) -> Token {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push((0, None));
            (self.slots.len() - 1) as u32
        });
        let slot = &mut self.slots[index as usize];
        let token = Slab::<T>::token(index, slot.0);
        slot.1 = Some(make(token));
        self.len += 1;
        token
    }

    pub fn get(&self, token: Token) -> Option<&T> {
        let (index, generation) = Slab::<T>::split(token);
        match self.slots.get(index) {
            Some((g, Some(value))) if *g == generation => Some(value),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let (index, generation) = Slab::<T>::split(token);
        match self.slots.get_mut(index) {
            Some((g, Some(value))) if *g == generation => Some(value),
            _ => None,
        }
    }

    pub fn remove(&mut self, token: Token) -> Option<T> {
        let (index, generation) = Slab::<T>::split(token);
        match self.slots.get_mut(index) {
            Some((g, value @ Some(_))) if *g == generation => {
                *g = g.wrapping_add(1) & GENERATION_MASK;
                self.len -= 1;
                self.free.push(index as u32);
                value.take()
            }
            _ => None,
        }
    }

    /// The tokens of every value, for a pass that may remove some of them.
    pub fn tokens(&self) -> Vec<Token> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, (_, v))| v.is_some())
            .map(|(i, (g, _))| Slab::<T>::token(i as u32, *g))
            .collect()
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|(_, v)| v.as_ref())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A connection's loop-clock stamps (milliseconds, see [`super::Clock`]), from which its one
/// deadline is computed on demand: a request costs a store, not a timer update.
#[derive(Clone, Copy, Debug)]
pub struct Stamps {
    /// The last byte read or written.
    pub last_activity: u64,
    /// When the request head now arriving began ([`NEVER`]: none is arriving).
    pub head_started: u64,
    /// When lingering gives up ([`NEVER`]: not lingering).
    pub linger_until: u64,
    /// The deadline this connection has in the [`Deadlines`] heap ([`NEVER`]: none).
    pub timer: u64,
}

impl Stamps {
    /// A connection accepted at `now`; a new HTTP connection is awaiting its first head.
    pub fn new(now: u64, awaiting_head: bool) -> Stamps {
        Stamps {
            last_activity: now,
            head_started: if awaiting_head { now } else { NEVER },
            linger_until: NEVER,
            timer: NEVER,
        }
    }

    /// See [`Timeouts::deadline`].
    pub fn deadline(&self, timeouts: &Timeouts, output_pending: bool) -> u64 {
        timeouts.deadline(
            (self.linger_until != NEVER).then_some(self.linger_until),
            output_pending,
            self.last_activity,
            self.head_started,
        )
    }

    /// After a turn: the header timeout runs only while a head is arriving, from its first byte.
    pub fn track_head(&mut self, awaiting_head: bool, input_buffered: bool, now: u64) {
        if !awaiting_head {
            self.head_started = NEVER;
        } else if self.head_started == NEVER && input_buffered {
            self.head_started = now;
        }
    }
}

/// A connection as the deadline heap sees it.
pub trait Timed {
    fn stamps(&mut self) -> &mut Stamps;
    /// Its deadline now ([`Stamps::deadline`] with its own state).
    fn deadline(&self, timeouts: &Timeouts) -> u64;
    /// On its way out already: its deadline no longer matters.
    fn closing(&self) -> bool {
        false
    }
}

/// Connection deadlines (loop-clock ms), lazily deleted: an entry is only a reminder, checked
/// against the connection's state when it comes due. A connection keeps the deadline it has here
/// in [`Stamps::timer`], so that moving its deadline later costs nothing and moving it earlier
/// adds one entry (the older one is then found stale and skipped).
#[derive(Debug, Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(u64, Token)>>,
}

impl Deadlines {
    /// Makes sure the connection is looked at by `deadline`.
    pub fn arm(&mut self, stamps: &mut Stamps, deadline: u64, token: Token) {
        if deadline < stamps.timer {
            stamps.timer = deadline;
            self.heap.push(Reverse((deadline, token)));
        }
    }

    /// The earliest entry.
    pub fn next(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The next connection whose deadline has passed by `now`. Entries that are stale (superseded,
    /// or for a connection gone or closing) are dropped, and a connection whose deadline has
    /// moved on since its entry was made is re-armed.
    pub fn next_expired<T: Timed>(
        &mut self,
        now: u64,
        conns: &mut Slab<T>,
        timeouts: &Timeouts,
    ) -> Option<Token> {
        while let Some(&Reverse((at, token))) = self.heap.peek() {
            if at > now {
                return None;
            }
            self.heap.pop();
            let Some(conn) = conns.get_mut(token) else {
                continue;
            };
            if conn.stamps().timer != at || conn.closing() {
                continue;
            }
            conn.stamps().timer = NEVER;
            let deadline = conn.deadline(timeouts);
            if deadline > now {
                self.arm(conn.stamps(), deadline, token);
                continue;
            }
            return Some(token);
        }
        None
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and the threads it creates later) and returns
/// a signalfd that reports them, so that shutdown is an ordinary event in every loop.
pub fn shutdown_signals() -> io::Result<SignalFd> {
    use nix::sys::signal::{SigSet, SigmaskHow};
    use nix::sys::signalfd::SfdFlags;
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(SignalFd::with_flags(
        &set,
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )?)
}

/// Reads every signal pending on the (non-blocking) signalfd and counts each. SIGHUP is logged
/// and ignored; true when SIGINT or SIGTERM came, and the server should stop.
pub fn take_stop_signals(signals: &mut SignalFd, counters: &mut Counters) -> bool {
    let mut stop = false;
    loop {
        let info = match signals.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) => return stop,
            Err(e) => {
                log::warn!("signalfd: {e}");
                return stop;
            }
        };
        counters.syscalls.signals += 1;
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGHUP) => log::info!("SIGHUP ignored: c10k has no configuration to reload"),
            Ok(signal) => {
                log::info!("{signal}: no longer accepting; finishing in-flight responses");
                stop = true;
            }
            Err(_) => {}
        }
    }
}

/// A protocol environment that counts, as a driver gives it to the protocol.
pub trait CountingEnv: Env {
    /// The counters not yet published.
    fn counters(&mut self) -> &mut Counters;
    /// Makes what is counted so far visible to `/stats`, on any connection or worker.
    fn publish_now(&mut self);
    /// Brings the cached `Date` up to now (after blocking work, which may take seconds).
    fn refresh_date(&mut self);
}

impl CountingEnv for LoopEnv {
    fn counters(&mut self) -> &mut Counters {
        &mut self.counters
    }

    fn publish_now(&mut self) {
        self.publish();
    }

    fn refresh_date(&mut self) {
        self.date.refresh();
    }
}

/// Runs the blocking work the session is paused on (`/sleep`, `/work`), here, on the calling
/// thread, and resumes the session with it, which appends the response to `out`. On a
/// single-threaded loop this is the stall the blocking routes exist to show: no other connection
/// is served meanwhile. Returns whether there was work.
pub fn run_blocking_inline(
    session: &mut Session,
    out: &mut Vec<u8>,
    env: &mut impl CountingEnv,
) -> bool {
    let Some(work) = session.blocking_work() else {
        return false;
    };
    env.counters().blocking_inline += 1;
    let done = work.run();
    env.refresh_date();
    session.resume(done, out, env);
    true
}

/// Answers a connection the server will not serve (HTTP: 503; echo: nothing) and shuts down
/// writing; the caller then closes it. Counted, and published before the client can see the
/// answer, so that `/stats` asked right after a 503 has it.
pub fn refuse(fd: RawFd, proto: Proto, env: &mut impl CountingEnv) {
    env.counters().connections_refused += 1;
    let refusal = Session::refusal(proto, env);
    if refusal.is_empty() {
        return;
    }
    env.counters().syscalls.writes += 1;
    env.publish_now();
    // A fresh socket's send buffer takes ~150 bytes without blocking.
    if let Ok(n) = sys::send(fd, &refusal) {
        env.counters().bytes_out += n as u64;
    }
    let _ = sys::shutdown_write(fd);
}

/// A warning that comes in storms (EMFILE, refusals): counted every time, logged at most once a
/// second with the count so far.
#[derive(Debug, Default)]
pub struct RateLimitedLog {
    last: Option<Instant>,
    times: u64,
}

impl RateLimitedLog {
    pub fn warn(&mut self, what: impl Display) {
        self.times += 1;
        let now = Instant::now();
        if self
            .last
            .is_none_or(|at| now - at >= Duration::from_secs(1))
        {
            log::warn!("{what} ({} times so far)", self.times);
            self.last = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_does_not_answer_to_its_old_token() {
        let mut slab = Slab::default();
        let old = slab.insert('a');
        assert_eq!(slab.remove(old), Some('a'));
        let new = slab.insert('b');
        assert_ne!(old, new, "same slot, new generation");
        assert_eq!(slab.get_mut(old), None, "a late event must be dropped");
        assert_eq!(slab.remove(old), None);
        assert_eq!(slab.get(new), Some(&'b'));
        assert_eq!(slab.len(), 1);
        assert_eq!(slab.tokens(), vec![new]);
    }

    #[test]
    fn generation_wraps_within_24_bits_and_leaves_the_top_byte_free() {
        let mut slab = Slab::default();
        let first = slab.insert(0);
        slab.remove(first);
        slab.slots[0].0 = GENERATION_MASK;
        let last = slab.insert(1);
        assert_eq!(last >> 32, u64::from(GENERATION_MASK));
        slab.remove(last);
        let wrapped = slab.insert(2);
        assert_eq!(wrapped >> 32, 0, "wrapped to generation 0");
        assert_eq!(slab.get(last), None);
        assert_eq!(slab.get(wrapped), Some(&2));
    }

    #[test]
    fn insert_with_sees_the_token_the_value_gets() {
        let mut slab = Slab::default();
        let first = slab.insert(0u64);
        slab.remove(first);
        let token = slab.insert_with(|t| t);
        assert_eq!(slab.get(token), Some(&token));
    }

    struct Conn(Stamps, u64);

    impl Timed for Conn {
        fn stamps(&mut self) -> &mut Stamps {
            &mut self.0
        }
        fn deadline(&self, _: &Timeouts) -> u64 {
            self.1
        }
    }

    #[test]
    fn deadlines_skip_stale_entries_and_rearm_moved_ones() {
        let timeouts = Timeouts {
            header_ms: 0,
            idle_ms: 0,
            write_ms: 0,
        };
        let mut conns = Slab::default();
        let mut heap = Deadlines::default();
        let a = conns.insert(Conn(Stamps::new(0, false), 10));
        let b = conns.insert(Conn(Stamps::new(0, false), 20));
        for token in [a, b] {
            let conn = conns.get_mut(token).unwrap();
            let at = conn.1;
            heap.arm(&mut conn.0, at, token);
        }
        // An earlier deadline adds an entry; the later one becomes stale.
        let conn = conns.get_mut(b).unwrap();
        conn.1 = 5;
        heap.arm(&mut conn.0, 5, b);
        assert_eq!(heap.next(), Some(5));
        assert_eq!(heap.next_expired(5, &mut conns, &timeouts), Some(b));
        // a's deadline moved on to 30: re-armed rather than expired at 10.
        conns.get_mut(a).unwrap().1 = 30;
        assert_eq!(heap.next_expired(25, &mut conns, &timeouts), None);
        assert_eq!(heap.next(), Some(30));
        conns.remove(b);
        assert_eq!(heap.next_expired(30, &mut conns, &timeouts), Some(a));
        assert_eq!(heap.next_expired(100, &mut conns, &timeouts), None);
    }
}
