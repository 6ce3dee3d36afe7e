//! What an event-loop thread is told to do: its connection slots, its share of the open-loop
//! schedule, and the run's settings as the loop uses them (ns, not `Duration`).

use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::time::Instant;

use crate::interval::Feed;

/// One connection slot of this thread: 16 bytes, since a C1M run holds a million of them (its
/// source pair is worked out from `global` when it connects, [`ThreadPlan::source_of`]).
pub(crate) struct ConnPlan {
    /// Index over the whole run (all processes and threads).
    pub global: usize,
    /// When to connect, ns after the start.
    pub connect_at: u64,
}

/// The open-loop schedule: this thread's request `k` is the run's request `k * stride + offset`,
/// due at `start + (k * stride + offset) / rate`.
///
/// The loop wakes for the schedule on a grid of `tick` ns from the start, and each wakeup sends
/// every request due by then: one timer and one wakeup per tick, not one per request, which at
/// tens of thousands of requests per second per thread is most of an open loop's cost. A
/// request's latency still counts from its due time, so the batching shows in it (at most one
/// tick); 0 wakes for each request at its due time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schedule {
    /// When request 0 is due, ns after the loop's start: the run's start instant (`--start-at`).
    pub origin: u64,
    pub rate: f64,
    pub stride: u64,
    pub offset: u64,
    pub tick: u64,
}

impl Schedule {
    pub(super) fn due(&self, k: u64) -> u64 {
        self.origin + (self.global(k) as f64 * 1e9 / self.rate) as u64
    }

    /// This thread's request `k` numbered over the whole run.
    pub(super) fn global(&self, k: u64) -> u64 {
        k * self.stride + self.offset
    }

    /// When the loop wakes to send request `k`: the end of the tick it is due in.
    pub(super) fn wake_for(&self, k: u64) -> u64 {
        let due = self.due(k);
        match self.tick {
            0 => due,
            t => self.origin + (due - self.origin).div_ceil(t) * t,
        }
    }

    /// Requests due at or before `t`.
    pub(super) fn due_by(&self, t: u64) -> u64 {
        if t < self.origin {
            return 0;
        }
        let global = ((t - self.origin) as f64 * self.rate / 1e9).floor() as u64;
        if global < self.offset {
            0
        } else {
            (global - self.offset) / self.stride + 1
        }
    }
}

pub(crate) struct ThreadPlan {
    pub thread: usize,
    /// The loop's time zero: connections open from here (on their ramp).
    pub start: Instant,
    /// The run's start, ns after `start` (`--start-at`; 0 without): no request is sent before
    /// it, and the warmup, the measurement and the open-loop schedule count from it, so that
    /// runs started apart (on several hosts) send and measure on one schedule.
    pub origin: u64,
    pub target: SocketAddr,
    /// `--source` addresses (none: the kernel picks), and with `--source-ports` the ports each
    /// connection binds (see [`crate::ports::source_for`]).
    pub sources: Vec<std::net::IpAddr>,
    pub source_ports: Option<crate::ports::PortRange>,
    pub conns: Vec<ConnPlan>,
    pub pipeline: usize,
    pub timeout: u64,
    pub warmup: u64,
    pub duration: Option<u64>,
    /// This thread's share of `--requests`.
    pub requests: Option<u64>,
    pub schedule: Option<Schedule>,
    /// Reopen a connection that closed (http, echo); hold does not.
    pub reconnect: bool,
    /// Hold: no requests; the duration starts once every connect has been resolved.
    pub hold: bool,
    pub ping: Option<u64>,
    pub interval: u64,
    /// This thread's intervals, tagged with `thread` (its [`Feed::Done`] is sent by the caller).
    pub snapshots: Sender<(usize, Feed)>,
}

impl ThreadPlan {
    /// The (address, port) connection slot `idx` binds before connecting; port 0: the kernel
    /// picks it; None: no `--source`.
    pub fn source_of(&self, idx: usize) -> Option<SocketAddr> {
        crate::ports::source_for(&self.sources, self.source_ports, self.conns[idx].global)
    }
}

#[cfg(test)]
mod tests {
    use super::Schedule;

    #[test]
    fn one_global_schedule_interleaves_threads() {
        // 1000 req/s over 4 slots: slot 1 owns the run's requests 1, 5, 9, ...
        let s = Schedule {
            rate: 1000.0,
            stride: 4,
            offset: 1,
            tick: 0,
            origin: 0,
        };
        assert_eq!(s.due(0), 1_000_000);
        assert_eq!(s.due(2), 9_000_000);
        assert_eq!(s.due_by(0), 0);
        assert_eq!(s.due_by(1_000_000), 1);
        assert_eq!(s.due_by(9_000_000), 3);
    }
}
