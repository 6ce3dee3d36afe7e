//! sigio: signal-driven I/O, as nginx's rtsig module did until 2015. Each registered socket has
//! O_ASYNC, F_SETSIG (a realtime signal) and F_SETOWN_EX (the loop's thread), so the kernel queues
//! one signal per change of state, carrying `si_fd` and `si_band`. The signals are blocked in the
//! loop's thread and taken with `sigtimedwait`: a blocking one, then zero-timeout ones until the
//! queue is empty or a batch is full.
//!
//! A signal reports a *change*, never a state, so the backend keeps one more invariant on top of
//! the queue: every registered descriptor whose readiness the queue may not have reported is a
//! *suspect*, and each wait checks the suspects with a zero-timeout poll(2), reports the ready
//! ones and keeps them suspect while they stay ready (level-triggered for them). A descriptor
//! becomes suspect when it is registered (it may be readable already: a new connection starts out
//! ready), when an interest is added (data that came while the interest was off raised a signal
//! we dropped), when several reports for it are merged into one event (the reactor may act on
//! part of them, e.g. accept 256 of 300 connections), and — all of them — when the queue
//! overflowed. Once a suspect is found not ready, any later change raises a signal again, so
//! nothing is lost.
//!
//! Overflow: when RLIMIT_SIGPENDING (per *user*: every process of the user shares it) leaves no
//! room for a realtime signal, the kernel drops it and raises a plain SIGIO, which is blocked and
//! waited for too. On SIGIO the backend drains the realtime queue (the signals in it are stale:
//! what follows supersedes them), scans every registered descriptor with poll(2), and stays in
//! overflow mode until the suspects that scan found have all gone quiet; overflow and recovery are
//! logged (at most once a second each) and counted in `overflow_scans`.
//!
//! Descriptors that cannot raise SIGIO — anything but a socket or a FIFO; the reactor's signalfd
//! for SIGINT/SIGTERM/SIGHUP is one, since signalfd has no fasync and accepts O_ASYNC silently —
//! are *polled*: checked with poll(2) at most every [`POLLED_INTERVAL`], and `sigtimedwait` never
//! blocks longer than that while any is registered. We do not add SIGTERM to the waited set
//! instead: taking it there would steal it from the signalfd that the reactor reads. So shutdown
//! is noticed within 50 ms, and an idle server wakes 20 times a second.
//!
//! The signals stay blocked in the loop's thread after the poller is dropped: the queue is drained
//! on drop, but one could still arrive before an unblock, and its default action kills.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::{not_registered, Event, FdTable, Interest, Poller, PollerCounters, Token};
use crate::sys;

// Not exported by the libc crate for x86_64/aarch64 glibc; the values are the generic ones.
const F_SETSIG: libc::c_int = 10;
/// The si_code range of the signals fasync sends (POLL_IN ..= POLL_HUP in <signal.h>).
const POLL_IN: libc::c_int = 1;
const POLL_HUP: libc::c_int = 6;

/// Signals taken per wait before the reactor gets to run; the rest wait for the next wait.
const SIGNALS_PER_WAIT: usize = 1024;
/// Bound on the signals discarded while draining the queue after an overflow.
const DRAIN_LIMIT: usize = 1 << 20;
/// How often descriptors that cannot raise SIGIO (the signalfd) are checked with poll(2).
pub const POLLED_INTERVAL: Duration = Duration::from_millis(50);
/// Overflow and recovery are each logged at most this often.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// How a registered descriptor reports readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// O_ASYNC is set; `flags` are the file status flags to restore on deregister.
    Signal { flags: libc::c_int },
    /// No fasync support: checked with poll(2) every [`POLLED_INTERVAL`].
    Polled,
}

#[derive(Clone, Copy, Debug)]
struct Registration {
    token: Token,
    interest: Interest,
    mode: Mode,
    /// Position in `Sigio::fds`.
    index: usize,
    /// In `Sigio::suspects`.
    suspect: bool,
    /// The wait that last reported it, and where its event is in that wait's output: a second
    /// report in the same wait is merged into the first.
    stamp: u64,
    slot: usize,
}

/// Logs an overflow (warn) and a recovery (info), each at most once per [`LOG_INTERVAL`].
#[derive(Default)]
struct OverflowLog {
    /// Overflow mode began then; None when signals are trusted again.
    since: Option<Instant>,
    scans_in_episode: u64,
    last_warn: Option<Instant>,
    unlogged_overflows: u64,
    last_info: Option<Instant>,
    unlogged_recoveries: u64,
}

pub struct Sigio {
    signo: libc::c_int,
    /// The realtime signal and SIGIO: blocked in the loop's thread, the set `sigtimedwait` takes.
    set: libc::sigset_t,
    /// The loop's thread: the owner of every registered descriptor's signals.
    tid: libc::pid_t,
    table: FdTable<Registration>,
    fds: Vec<RawFd>,
    polled: Vec<RawFd>,
    polled_due: Instant,
    suspects: Vec<RawFd>,
    pollfds: Vec<libc::pollfd>,
    /// Counts waits, for `Registration::stamp`.
    stamp: u64,
    overflow: OverflowLog,
    counters: PollerCounters,
}

impl Sigio {
    /// Blocks the signals in the calling thread, which must be the one that runs the loop.
    pub fn new() -> io::Result<Sigio> {
        let signo = libc::SIGRTMIN() + 1;
        if signo > libc::SIGRTMAX() {
            return Err(io::Error::other("no realtime signal available"));
        }
        let set = sys::signal_set(&[signo, libc::SIGIO])?;
        sys::block_signals(&set)?;
        Ok(Sigio {
            signo,
            set,
            tid: sys::gettid(),
            table: FdTable { slots: Vec::new() },
            fds: Vec::new(),
            polled: Vec::new(),
            polled_due: Instant::now(),
            suspects: Vec::new(),
            pollfds: Vec::new(),
            stamp: 0,
            overflow: OverflowLog::default(),
            counters: PollerCounters {
                ctl: 1,
                ..PollerCounters::default()
            },
        })
    }

    /// Sets a descriptor up to raise our signal in our thread, if it can.
    fn arm(&mut self, fd: RawFd) -> io::Result<Mode> {
        self.counters.ctl += 1;
        let kind = nix::sys::stat::fstat(fd)?.st_mode & libc::S_IFMT;
        let flags = match kind {
            // A socket carries no other status flag that F_SETFL changes: skip the F_GETFL.
            libc::S_IFSOCK => libc::O_NONBLOCK,
            libc::S_IFIFO => {
                self.counters.ctl += 1;
                sys::fcntl_int(fd, libc::F_GETFL, 0)? | libc::O_NONBLOCK
            }
            _ => return Ok(Mode::Polled),
        };
        // Signal and owner first, so that the first signal O_ASYNC raises is already ours.
        self.counters.ctl += 3;
        sys::fcntl_int(fd, F_SETSIG, self.signo)?;
        sys::set_owner_thread(fd, self.tid)?;
        sys::fcntl_int(fd, libc::F_SETFL, flags | libc::O_ASYNC)?;
        Ok(Mode::Signal { flags })
    }

    fn make_suspect(&mut self, fd: RawFd) {
        if let Some(mut reg) = self.table.get(fd) {
            if !reg.suspect {
                reg.suspect = true;
                self.table.insert(fd, reg);
                self.suspects.push(fd);
            }
        }
    }

    /// Appends an event for `fd`, or merges it into the one this wait already reported (and then
    /// keeps the descriptor suspect: one event may stand for more than the reactor takes at once).
    fn report(&mut self, fd: RawFd, bits: libc::c_long, events: &mut Vec<Event>, base: usize) {
        let Some(mut reg) = self.table.get(fd) else {
            return; // stale: deregistered since the signal was queued
        };
        let Some(event) = to_event(reg.token, reg.interest, bits) else {
            return;
        };
        if reg.stamp == self.stamp {
            let e = &mut events[base + reg.slot];
            e.readable |= event.readable;
            e.writable |= event.writable;
            e.hangup |= event.hangup;
            self.make_suspect(fd);
            return;
        }
        reg.stamp = self.stamp;
        reg.slot = events.len() - base;
        self.table.insert(fd, reg);
        events.push(event);
    }

    /// Checks descriptors with a zero-timeout poll(2): the suspects (and the polled ones when
    /// due), or every registered one after an overflow. The ready ones stay suspect.
    fn scan(&mut self, all: bool, with_polled: bool, events: &mut Vec<Event>, base: usize) {
        self.pollfds.clear();
        let candidates = if all {
            self.fds.clone()
        } else {
            let mut c = std::mem::take(&mut self.suspects);
            if with_polled {
                c.extend_from_slice(&self.polled);
            }
            c
        };
        self.suspects.clear();
        for &fd in &candidates {
            if let Some(mut reg) = self.table.get(fd) {
                if reg.suspect {
                    reg.suspect = false;
                    self.table.insert(fd, reg);
                }
                if reg.interest != Interest::NONE {
                    self.pollfds.push(libc::pollfd {
                        fd,
                        events: super::poll::mask(reg.interest),
                        revents: 0,
                    });
                }
            }
        }
        if with_polled || all {
            self.polled_due = Instant::now() + POLLED_INTERVAL;
        }
        if self.pollfds.is_empty() {
            return;
        }
        if all {
            self.counters.overflow_scans += 1;
        } else {
            self.counters.waits += 1;
        }
        let ready = match sys::poll(&mut self.pollfds, Some(Duration::ZERO)) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("sigio: poll(2) scan failed: {e}");
                0
            }
        };
        if ready == 0 {
            return;
        }
        let pollfds = std::mem::take(&mut self.pollfds);
        for pfd in pollfds.iter().filter(|p| p.revents != 0) {
            self.report(pfd.fd, libc::c_long::from(pfd.revents), events, base);
            self.make_suspect(pfd.fd);
        }
        self.pollfds = pollfds;
    }

    /// The queue overflowed: drain it, scan everything, and distrust signals until caught up.
    fn on_overflow(&mut self, events: &mut Vec<Event>, base: usize) {
        let now = Instant::now();
        self.overflow.unlogged_overflows += 1;
        if self.overflow.since.is_none() {
            self.overflow.since = Some(now);
            self.overflow.scans_in_episode = 0;
        }
        if self
            .overflow
            .last_warn
            .is_none_or(|at| now - at >= LOG_INTERVAL)
        {
            log::warn!(
                "sigio: realtime signal queue overflowed ({} overflows since the last report; \
                 RLIMIT_SIGPENDING is per user); scanning all {} descriptors with poll(2)",
                self.overflow.unlogged_overflows,
                self.fds.len()
            );
            self.overflow.last_warn = Some(now);
            self.overflow.unlogged_overflows = 0;
        }
        for _ in 0..DRAIN_LIMIT {
            match sys::sigtimedwait(&self.set, Some(Duration::ZERO)) {
                Ok(Some(_)) => self.counters.signals += 1,
                Ok(None) => {
                    self.counters.waits += 1;
                    break;
                }
                Err(e) => {
                    log::warn!("sigio: sigtimedwait: {e}");
                    break;
                }
            }
        }
        self.overflow.scans_in_episode += 1;
        self.scan(true, true, events, base);
    }

    /// Leaves overflow mode once the suspects the overflow scan found have all gone quiet.
    fn check_recovery(&mut self) {
        let Some(since) = self.overflow.since else {
            return;
        };
        if !self.suspects.is_empty() {
            return;
        }
        self.overflow.since = None;
        self.overflow.unlogged_recoveries += 1;
        let now = Instant::now();
        if self
            .overflow
            .last_info
            .is_none_or(|at| now - at >= LOG_INTERVAL)
        {
            log::info!(
                "sigio: signal queue overflow recovered after {:?} and {} full scans \
                 ({} recoveries since the last report)",
                now - since,
                self.overflow.scans_in_episode,
                self.overflow.unlogged_recoveries
            );
            self.overflow.last_info = Some(now);
            self.overflow.unlogged_recoveries = 0;
        }
    }
}

impl Poller for Sigio {
    fn name(&self) -> &'static str {
        "sigio"
    }

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        self.table.check_vacant(fd)?;
        let mode = self.arm(fd)?;
        self.table.insert(
            fd,
            Registration {
                token,
                interest,
                mode,
                index: self.fds.len(),
                suspect: false,
                stamp: 0,
                slot: 0,
            },
        );
        self.fds.push(fd);
        if mode == Mode::Polled {
            self.polled.push(fd);
        }
        // It may be ready already, and no signal reports a state it was in before O_ASYNC.
        self.make_suspect(fd);
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let mut reg = self.table.get(fd).ok_or_else(|| not_registered(fd))?;
        let added =
            (interest.read && !reg.interest.read) || (interest.write && !reg.interest.write);
        reg.token = token;
        reg.interest = interest;
        self.table.insert(fd, reg);
        if added {
            // Signals that came while the interest was off were dropped.
            self.make_suspect(fd);
        }
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let reg = self.table.remove(fd).ok_or_else(|| not_registered(fd))?;
        self.fds.swap_remove(reg.index);
        if let Some(&moved) = self.fds.get(reg.index) {
            if let Some(mut m) = self.table.get(moved) {
                m.index = reg.index;
                self.table.insert(moved, m);
            }
        }
        match reg.mode {
            Mode::Polled => self.polled.retain(|&p| p != fd),
            Mode::Signal { flags } => {
                // Signals already queued for it are dropped as stale when taken.
                self.counters.ctl += 1;
                sys::fcntl_int(fd, libc::F_SETFL, flags)?;
            }
        }
        Ok(())
    }

    fn poll(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        self.stamp += 1;
        let base = events.len();
        let polled_due = !self.polled.is_empty() && Instant::now() >= self.polled_due;
        if !self.suspects.is_empty() || polled_due {
            self.scan(false, polled_due, events, base);
        }
        // Block only when there is nothing to report, and not past the next check of the
        // descriptors that cannot raise signals.
        let mut wait = if events.len() > base {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        if !self.polled.is_empty() {
            let until_due = self.polled_due.saturating_duration_since(Instant::now());
            wait = Some(wait.map_or(until_due, |w| w.min(until_due)));
        }
        for _ in 0..SIGNALS_PER_WAIT {
            let info = match sys::sigtimedwait(&self.set, wait) {
                Ok(Some(info)) => info,
                Ok(None) => {
                    self.counters.waits += 1;
                    break;
                }
                Err(e) => {
                    self.counters.waits += 1;
                    return Err(e);
                }
            };
            self.counters.signals += 1;
            wait = Some(Duration::ZERO);
            if info.signo == libc::SIGIO {
                self.on_overflow(events, base);
                break;
            }
            // Only what the kernel's fasync sends (si_code POLL_IN..POLL_HUP) names a descriptor.
            if info.signo == self.signo && (POLL_IN..=POLL_HUP).contains(&info.code) {
                self.report(info.fd, info.band, events, base);
            }
        }
        // A wait cut short for the polled descriptors gives them their check now.
        if events.len() == base && !self.polled.is_empty() && Instant::now() >= self.polled_due {
            self.scan(false, true, events, base);
        }
        self.check_recovery();
        Ok(())
    }

    fn counters(&self) -> PollerCounters {
        self.counters
    }
}

impl Drop for Sigio {
    /// Stops the descriptors still registered from signalling, and empties the queue.
    fn drop(&mut self) {
        for &fd in &self.fds {
            if let Some(Registration {
                mode: Mode::Signal { flags },
                ..
            }) = self.table.get(fd)
            {
                let _ = sys::fcntl_int(fd, libc::F_SETFL, flags);
            }
        }
        for _ in 0..DRAIN_LIMIT {
            if !matches!(
                sys::sigtimedwait(&self.set, Some(Duration::ZERO)),
                Ok(Some(_))
            ) {
                break;
            }
        }
    }
}

/// Maps poll bits (poll(2)'s revents or a signal's si_band) to an event, keeping only what the
/// registration asked for; hang-ups and errors go to any registration with an interest, but a
/// peer's half-close (POLLRDHUP) only to one that reads: a connection that is only writing would
/// otherwise stay a ready suspect, reported on every wait without anything to do.
fn to_event(token: Token, interest: Interest, bits: libc::c_long) -> Option<Event> {
    let has = |mask: libc::c_short| bits & libc::c_long::from(mask) != 0;
    let mut hangup_bits = libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
    if interest.read {
        hangup_bits |= libc::POLLRDHUP;
    }
    let hangup = has(hangup_bits) && interest != Interest::NONE;
    let event = Event {
        token,
        readable: interest.read
            && has(libc::POLLIN | libc::POLLRDNORM | libc::POLLPRI | hangup_bits),
        writable: interest.write && has(libc::POLLOUT | libc::POLLWRNORM | libc::POLLERR),
        hangup,
    };
    (event.readable || event.writable || event.hangup).then_some(event)
}

/// Lowers this process's soft RLIMIT_SIGPENDING (to force queue overflow in tests). The count it
/// limits is per user: every process of the user shares it, so other processes' pending signals
/// make overflow come sooner, never later.
pub fn limit_signal_queue(max_pending: u64) -> io::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_SIGPENDING)?;
    setrlimit(Resource::RLIMIT_SIGPENDING, max_pending.min(hard), hard)?;
    Ok(())
}

/// The current soft RLIMIT_SIGPENDING: how many signals the user may have queued.
pub fn signal_queue_limit() -> u64 {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_SIGPENDING).map_or(0, |(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().expect("socketpair");
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn wait(poller: &mut Sigio, timeout: Option<Duration>) -> Vec<Event> {
        let mut events = Vec::new();
        poller.poll(&mut events, timeout).expect("poll");
        events
    }

    fn tokens(events: &[Event]) -> Vec<Token> {
        let mut t: Vec<Token> = events.iter().map(|e| e.token).collect();
        t.sort();
        t
    }

    /// Lost signals, simulated: the realtime signals are taken away behind the poller's back and
    /// a SIGIO is raised, as the kernel does when its queue is full. The full scan must find
    /// every ready descriptor, keep reporting them while they stay ready, and then recover.
    #[test]
    fn overflow_finds_lost_readiness_with_a_full_scan_and_recovers() {
        let mut poller = Sigio::new().unwrap();
        let pairs: Vec<_> = (0..8).map(|_| pair()).collect();
        for (i, (a, _)) in pairs.iter().enumerate() {
            poller
                .register(a.as_raw_fd(), i as Token, Interest::READ)
                .unwrap();
        }
        assert!(wait(&mut poller, Some(Duration::ZERO)).is_empty());
        for i in [1usize, 4, 6] {
            (&pairs[i].1).write_all(b"lost").unwrap();
        }
        let mut dropped = 0;
        while let Ok(Some(_)) = sys::sigtimedwait(&poller.set, Some(Duration::ZERO)) {
            dropped += 1;
        }
        assert_eq!(dropped, 3, "one realtime signal per write");
        // raise(3) signals the calling thread, as the kernel's fallback SIGIO would.
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGIO).unwrap();
        let events = wait(&mut poller, Some(Duration::from_millis(200)));
        assert_eq!(tokens(&events), [1, 4, 6], "{events:?}");
        assert!(events.iter().all(|e| e.readable && !e.writable));
        assert_eq!(poller.counters().overflow_scans, 1);
        assert!(
            poller.overflow.since.is_some(),
            "recovered while still ready"
        );
        // Still ready and not read: reported again (the reactor may not have taken it all).
        assert_eq!(tokens(&wait(&mut poller, Some(Duration::ZERO))), [1, 4, 6]);
        for i in [1usize, 4, 6] {
            let mut buf = [0u8; 16];
            assert_eq!((&pairs[i].0).read(&mut buf).unwrap(), 4);
        }
        assert!(wait(&mut poller, Some(Duration::ZERO)).is_empty());
        assert!(poller.overflow.since.is_none(), "did not recover");
        // Back on signals.
        (&pairs[2].1).write_all(b"x").unwrap();
        assert_eq!(
            tokens(&wait(&mut poller, Some(Duration::from_millis(200)))),
            [2]
        );
        assert_eq!(poller.counters().overflow_scans, 1);
    }

    /// A burst of signals for one descriptor becomes one event, and the descriptor is checked
    /// again until it is drained: the reactor may take only part of what the burst stood for.
    #[test]
    fn a_burst_is_one_event_and_rechecked_until_drained() {
        let mut poller = Sigio::new().unwrap();
        let (a, b) = pair();
        poller.register(a.as_raw_fd(), 5, Interest::READ).unwrap();
        assert!(wait(&mut poller, Some(Duration::ZERO)).is_empty());
        for _ in 0..3 {
            (&b).write_all(b"abc").unwrap();
        }
        let events = wait(&mut poller, Some(Duration::from_millis(200)));
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(poller.counters().signals >= 3);
        assert_eq!(tokens(&wait(&mut poller, Some(Duration::ZERO))), [5]);
        let mut buf = [0u8; 64];
        assert_eq!((&a).read(&mut buf).unwrap(), 9);
        assert!(wait(&mut poller, Some(Duration::ZERO)).is_empty());
    }

    /// Descriptors without fasync (eventfd, signalfd) are polled, and a wait without a timeout
    /// still comes back for them within the polling interval.
    #[test]
    fn descriptors_without_sigio_are_polled() {
        let mut poller = Sigio::new().unwrap();
        let efd = nix::sys::eventfd::EventFd::from_value_and_flags(
            0,
            nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .unwrap();
        poller
            .register(efd.as_raw_fd(), 11, Interest::READ)
            .unwrap();
        assert!(wait(&mut poller, Some(Duration::ZERO)).is_empty());
        efd.write(1).unwrap();
        let start = Instant::now();
        let mut events = Vec::new();
        while events.is_empty() && start.elapsed() < Duration::from_secs(2) {
            events = wait(&mut poller, None);
        }
        assert_eq!(tokens(&events), [11]);
        assert!(
            start.elapsed() < POLLED_INTERVAL * 4,
            "{:?}",
            start.elapsed()
        );
        poller.deregister(efd.as_raw_fd()).unwrap();
    }
}
