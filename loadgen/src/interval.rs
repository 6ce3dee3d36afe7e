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

/// Merges the snapshots of `sources` parts by index and hands each complete interval on, in
/// order.
pub struct Aggregator {
    sources: usize,
    pending: BTreeMap<u64, Snapshot>,
}

impl Aggregator {
    pub fn new(sources: usize) -> Aggregator {
        Aggregator {
            sources,
            pending: BTreeMap::new(),
        }
    }

    pub fn push(&mut self, s: Snapshot, emit: &mut dyn FnMut(&Snapshot)) {
        match self.pending.get_mut(&s.index) {
            Some(p) => p.add(&s),
            None => {
                self.pending.insert(s.index, s);
            }
        }
        // Emit complete intervals from the oldest.
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().parts < self.sources {
                break;
            }
            emit(&entry.remove());
        }
    }

    /// The run is over: emit what is left (parts that ended early sent fewer snapshots).
    pub fn finish(&mut self, emit: &mut dyn FnMut(&Snapshot)) {
        while let Some((_, s)) = self.pending.pop_first() {
            emit(&s);
        }
    }
}
