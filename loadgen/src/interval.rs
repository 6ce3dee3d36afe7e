//! Interval snapshots: each event-loop thread (and each worker process) sends one per
//! `--interval`; the [`Aggregator`] merges those with the same index into one line.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::report::{decode_histogram, encode_histogram};

/// One interval of one thread, process or the whole run.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub index: u64,
    /// Seconds since the start of the run.
    pub start_s: f64,
    pub duration_s: f64,
    /// Inside the warmup (excluded from the final report).
    pub warmup: bool,
    /// After the measured window: the run's drain, whose answers (to the window's requests) the
    /// final report counts.
    pub drain: bool,
    pub completed: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub bytes_received: u64,
    pub conns_open: u64,
    pub conns_connecting: u64,
    /// How many threads or processes were merged into this one.
    pub parts: usize,
    /// Latency of the requests answered (or timed out) in this interval, µs.
    pub latency: Histogram<u64>,
}

impl Snapshot {
    pub fn add(&mut self, o: &Snapshot) {
        self.duration_s = self.duration_s.max(o.duration_s);
        self.warmup &= o.warmup;
        self.drain &= o.drain;
        self.completed += o.completed;
        self.errors += o.errors;
        self.timeouts += o.timeouts;
        self.bytes_received += o.bytes_received;
        self.conns_open += o.conns_open;
        self.conns_connecting += o.conns_connecting;
        self.parts += o.parts;
        let _ = self.latency.add(&o.latency);
    }

    /// The JSON line printed per interval (`--interval`).
    pub fn line(&self) -> IntervalLine {
        let secs = self.duration_s.max(1e-9);
        let q = |p: f64| {
            if self.latency.is_empty() {
                0
            } else {
                self.latency.value_at_quantile(p)
            }
        };
        let ms = |v: f64| (v * 1000.0).round() / 1000.0;
        let tenth = |v: f64| (v * 10.0).round() / 10.0;
        IntervalLine {
            t: ms(self.start_s + self.duration_s),
            interval_s: ms(self.duration_s),
            warmup: self.warmup,
            drain: self.drain,
            requests: self.completed,
            req_per_s: tenth(self.completed as f64 / secs),
            bytes_per_s: tenth(self.bytes_received as f64 / secs),
            conns_open: self.conns_open,
            conns_connecting: self.conns_connecting,
            errors: self.errors,
            timeouts: self.timeouts,
            p50_us: q(0.5),
            p99_us: q(0.99),
        }
    }
}

/// The per-interval JSON line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IntervalLine {
    /// End of the interval, seconds since the start of the run.
    pub t: f64,
    pub interval_s: f64,
    pub warmup: bool,
    /// The drain after the measured window (the last line).
    #[serde(default)]
    pub drain: bool,
    pub requests: u64,
    pub req_per_s: f64,
    pub bytes_per_s: f64,
    pub conns_open: u64,
    pub conns_connecting: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// A snapshot as a worker process sends it to its parent (one JSON line).
#[derive(Serialize, Deserialize)]
pub struct WireSnapshot {
    pub index: u64,
    pub start_s: f64,
    pub duration_s: f64,
    pub warmup: bool,
    #[serde(default)]
    pub drain: bool,
    pub completed: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub bytes_received: u64,
    pub conns_open: u64,
    pub conns_connecting: u64,
    pub latency: String,
}

impl From<&Snapshot> for WireSnapshot {
    fn from(s: &Snapshot) -> Self {
        WireSnapshot {
            index: s.index,
            start_s: s.start_s,
            duration_s: s.duration_s,
            warmup: s.warmup,
            drain: s.drain,
            completed: s.completed,
            errors: s.errors,
            timeouts: s.timeouts,
            bytes_received: s.bytes_received,
            conns_open: s.conns_open,
            conns_connecting: s.conns_connecting,
            latency: encode_histogram(&s.latency),
        }
    }
}

impl WireSnapshot {
    pub fn into_snapshot(self) -> Result<Snapshot, String> {
        Ok(Snapshot {
            index: self.index,
            start_s: self.start_s,
            duration_s: self.duration_s,
            warmup: self.warmup,
            drain: self.drain,
            completed: self.completed,
            errors: self.errors,
            timeouts: self.timeouts,
            bytes_received: self.bytes_received,
            conns_open: self.conns_open,
            conns_connecting: self.conns_connecting,
            parts: 1,
            latency: decode_histogram(&self.latency)?,
        })
    }
}

/// What a member (an event-loop thread, or a worker process) sends to the [`Aggregator`].
#[derive(Debug)]
pub enum Feed {
    /// Its next interval, in index order.
    Snapshot(Snapshot),
    /// It has ended: it sends nothing more, and later intervals go on without it.
    Done,
}

/// Merges the snapshots of its members by index and hands each complete interval on, in order.
///
/// An interval is complete when every member still running has sent it (each member's snapshots
/// arrive in index order); a member that ended early (its connections refused or closed, its
/// share of `--requests` done, its hold over) is no longer waited for, so intervals keep flowing
/// and only the intervals that the slowest running member has yet to send are held.
pub struct Aggregator {
    /// Per member: the index after the last snapshot it sent; None once it has ended.
    next: Vec<Option<u64>>,
    pending: BTreeMap<u64, Snapshot>,
}

impl Aggregator {
    pub fn new(members: usize) -> Aggregator {
        Aggregator {
            next: vec![Some(0); members],
            pending: BTreeMap::new(),
        }
    }

    /// Takes what `member` sent and emits the intervals that are complete now.
    pub fn feed(&mut self, member: usize, feed: Feed, emit: &mut dyn FnMut(&Snapshot)) {
        match feed {
            Feed::Snapshot(s) => {
                if let Some(Some(next)) = self.next.get_mut(member) {
                    *next = (*next).max(s.index + 1);
                }
                match self.pending.get_mut(&s.index) {
                    Some(p) => p.add(&s),
                    None => {
                        self.pending.insert(s.index, s);
                    }
                }
            }
            Feed::Done => {
                if let Some(m) = self.next.get_mut(member) {
                    *m = None;
                }
            }
        }
        // Every running member has sent the intervals below the lowest `next`.
        let complete = self
            .next
            .iter()
            .flatten()
            .min()
            .copied()
            .unwrap_or(u64::MAX);
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() >= complete {
                break;
            }
            emit(&entry.remove());
        }
    }

    /// Intervals held, waiting for a member that is still running.
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    /// The run is over: emit what is left (a member that failed may not have said it ended).
    pub fn finish(&mut self, emit: &mut dyn FnMut(&Snapshot)) {
        while let Some((_, s)) = self.pending.pop_first() {
            emit(&s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    fn snap(index: u64, completed: u64) -> Snapshot {
        Snapshot {
            index,
            start_s: index as f64,
            duration_s: 1.0,
            warmup: false,
            drain: false,
            completed,
            errors: 0,
            timeouts: 0,
            bytes_received: 0,
            conns_open: 1,
            conns_connecting: 0,
            parts: 1,
            latency: new_histogram(),
        }
    }

    /// Feeds one message and returns what was emitted: (index, completed, parts).
    fn feed(agg: &mut Aggregator, member: usize, f: Feed) -> Vec<(u64, u64, usize)> {
        let mut out = Vec::new();
        agg.feed(member, f, &mut |s| {
            out.push((s.index, s.completed, s.parts))
        });
        out
    }

    #[test]
    fn a_member_that_ends_early_is_not_waited_for() {
        let mut agg = Aggregator::new(3);
        // Member 2 sends nothing and ends at once (every connect refused); member 1 sends one
        // interval and ends.
        assert!(feed(&mut agg, 2, Feed::Done).is_empty());
        assert!(feed(&mut agg, 0, Feed::Snapshot(snap(0, 1))).is_empty());
        assert_eq!(feed(&mut agg, 1, Feed::Snapshot(snap(0, 10))), [(0, 11, 2)]);
        assert!(feed(&mut agg, 1, Feed::Done).is_empty());
        for i in 1..100 {
            // Each interval goes out as soon as the one member still running has sent it, and
            // nothing piles up.
            assert_eq!(feed(&mut agg, 0, Feed::Snapshot(snap(i, 1))), [(i, 1, 1)]);
            assert_eq!(agg.held(), 0);
        }
    }

    #[test]
    fn intervals_wait_for_every_running_member_and_keep_what_the_ended_sent() {
        let mut agg = Aggregator::new(2);
        // Member 0 runs ahead by three intervals, then ends: its snapshots are kept and merged
        // with member 1's when those arrive.
        for i in 0..3 {
            assert!(feed(&mut agg, 0, Feed::Snapshot(snap(i, 1))).is_empty());
        }
        assert!(feed(&mut agg, 0, Feed::Done).is_empty());
        assert_eq!(agg.held(), 3);
        assert_eq!(feed(&mut agg, 1, Feed::Snapshot(snap(0, 10))), [(0, 11, 2)]);
        let mut out = Vec::new();
        for i in 1..5 {
            out.extend(feed(&mut agg, 1, Feed::Snapshot(snap(i, 10))));
        }
        assert_eq!(out, [(1, 11, 2), (2, 11, 2), (3, 10, 1), (4, 10, 1)]);
        assert_eq!(agg.held(), 0);
    }
}
