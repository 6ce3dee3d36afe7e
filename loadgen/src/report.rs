//! The report: the same data as text (stdout) and JSON (`--json`). The JSON carries the raw
//! counters and the histograms (HdrHistogram V2, base64), so that reports merge exactly.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::{ConnCounters, PathStats, ReqCounters, SelfCounters, Stats};

/// A loadgen thread busier than this (CPU / wall) may be the bottleneck.
const BUSY: f64 = 0.9;
/// A run whose timer wakeups were late more than this often (per cent) is flagged as bounded
/// by loadgen (docs/loadgen.md quotes it).
const LATE_WAKEUPS_PCT: u64 = 1;
/// An open loop that achieved less than this share of its target rate is warned about.
const ACHIEVED_SHARE: f64 = 0.95;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    pub mode: String,
    pub target: String,
    /// What was asked: connections, threads, processes, rate...
    pub setup: Setup,
    /// Seconds measured (after the warmup; for hold, the hold time).
    pub elapsed_s: f64,
    /// Seconds the run went on after the window to collect the answers to its requests.
    #[serde(default)]
    pub drain_s: f64,
    pub connections: ConnCounters,
    pub requests: ReqCounters,
    pub rates: Rates,
    pub connect_latency_us: Percentiles,
    /// Open loop: from the intended send time (corrected for coordinated omission). Closed
    /// loop: from the send, the same as `service_time_us`. Timeouts included.
    pub latency_us: Percentiles,
    /// From the actual send to the last byte of the response. Timeouts excluded.
    pub service_time_us: Percentiles,
    pub loadgen: SelfReport,
    pub warnings: Vec<String>,
    pub histograms: Histograms,
    /// With `--mix`: each path's own counts and latency, by path. Absent without a mix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_path: BTreeMap<String, PathReport>,
}

/// One path of a mix: its requests counted and their latency measured as the run's are
/// (`latency_us` from the intended send time in open loop, timeouts included).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PathReport {
    pub sent: u64,
    pub completed: u64,
    pub status_2xx: u64,
    pub timeouts: u64,
    pub latency_us: Percentiles,
    /// HdrHistogram V2, base64, like [`Histograms`].
    pub histogram: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Setup {
    pub conns: u64,
    pub threads: u64,
    pub procs: u64,
    pub pipeline: u64,
    /// Open-loop target rate (req/s); null for closed loop.
    pub target_rate: Option<f64>,
    pub duration_s: Option<f64>,
    pub requests: Option<u64>,
    pub warmup_s: f64,
    pub timeout_s: f64,
    pub sources: Vec<String>,
    /// How many runs were merged into this report.
    pub merged_runs: u64,
    /// The event loops' I/O (`--engine`): "epoll", "uring", or "mixed" in a merge of both.
    #[serde(default)]
    pub engine: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Rates {
    pub req_per_s: f64,
    /// The open-loop target, for comparison with `req_per_s`.
    pub target_req_per_s: Option<f64>,
    pub bytes_received_per_s: f64,
    pub bytes_sent_per_s: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub p99_99: u64,
    pub max: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SelfReport {
    pub counters: SelfCounters,
    /// Event-loop CPU as a share of the event-loop threads' wall time (1.0 = every thread busy).
    pub thread_busy: f64,
    /// How late the event loop woke for its timers (µs).
    pub loop_lag_us: Percentiles,
    /// loadgen itself may have limited the numbers.
    pub bottleneck: bool,
}

/// HdrHistogram V2, base64: µs from 1 to one hour, 3 significant digits.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Histograms {
    pub latency: String,
    pub service_time: String,
    pub connect: String,
    pub loop_lag: String,
}

pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .expect("serializing into memory cannot fail");
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub fn decode_histogram(s: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("bad histogram base64: {e}"))?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("bad histogram: {e:?}"))?;
    let mut out = crate::stats::new_histogram();
    out.add(&h)
        .map_err(|e| format!("histogram out of range: {e:?}"))?;
    Ok(out)
}

pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        count: h.len(),
        min: h.min(),
        mean: (h.mean() * 10.0).round() / 10.0,
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p99_9: h.value_at_quantile(0.999),
        p99_99: h.value_at_quantile(0.9999),
        max: h.max(),
    }
}

impl Report {
    /// Builds the report of `stats` (already merged over threads and processes).
    pub fn new(mode: &str, target: &str, setup: Setup, stats: &Stats) -> Report {
        let secs = stats.elapsed_s.max(1e-9);
        let r = &stats.reqs;
        // The throughput over the window: the answers that came in it, whichever request they
        // answer. Not the window's requests completed (some in its drain): over the window that
        // would credit a server that fell behind with the backlog it answered after it, and over
        // the window and the drain, one late answer would read as a lower throughput. Reports
        // from before this count fall back on `completed`.
        let answered = match r.answered_in_window {
            0 => r.completed,
            n => n,
        };
        let this = &stats.this;
        let thread_busy = if this.thread_wall_us > 0 {
            this.thread_cpu_us as f64 / this.thread_wall_us as f64
        } else {
            0.0
        };
        let mut report = Report {
            version: 1,
            mode: mode.to_string(),
            target: target.to_string(),
            rates: Rates {
                req_per_s: answered as f64 / secs,
                target_req_per_s: setup.target_rate,
                bytes_received_per_s: r.bytes_received as f64 / secs,
                bytes_sent_per_s: r.bytes_sent as f64 / secs,
            },
            setup,
            elapsed_s: stats.elapsed_s,
            drain_s: stats.drain_s,
            connections: stats.conns.clone(),
            requests: r.clone(),
            connect_latency_us: percentiles(&stats.connect),
            latency_us: percentiles(&stats.latency),
            service_time_us: percentiles(&stats.service),
            loadgen: SelfReport {
                counters: this.clone(),
                thread_busy,
                loop_lag_us: percentiles(&stats.loop_lag),
                bottleneck: false,
            },
            warnings: Vec::new(),
            histograms: Histograms {
                latency: encode_histogram(&stats.latency),
                service_time: encode_histogram(&stats.service),
                connect: encode_histogram(&stats.connect),
                loop_lag: encode_histogram(&stats.loop_lag),
            },
            per_path: stats
                .per_path
                .iter()
                .map(|p| {
                    let report = PathReport {
                        sent: p.sent,
                        completed: p.completed,
                        status_2xx: p.status_2xx,
                        timeouts: p.timeouts,
                        latency_us: percentiles(&p.latency),
                        histogram: encode_histogram(&p.latency),
                    };
                    (p.path.clone(), report)
                })
                .collect(),
        };
        report.warn();
        report
    }

    fn warn(&mut self) {
        let this = &self.loadgen.counters;
        let mut w = Vec::new();
        if this.saturated_threads > 0 {
            w.push(format!(
                "{} of {} loadgen threads were at least {:.0}% busy: these numbers may measure \
                 loadgen rather than the server (add --threads or --procs, or use another machine)",
                this.saturated_threads,
                this.threads,
                BUSY * 100.0
            ));
        }
        if this.wakeups > 0 && this.late_wakeups * 100 > this.wakeups * LATE_WAKEUPS_PCT {
            w.push(format!(
                "the event loop woke late (>2 ms) {} times of {} ({:.1}%): loadgen lagged",
                this.late_wakeups,
                this.wakeups,
                this.late_wakeups as f64 * 100.0 / this.wakeups as f64
            ));
        }
        self.loadgen.bottleneck = !w.is_empty();
        if this.interrupted_threads > 0 {
            w.push(format!(
                "interrupted by a signal after {:.2} s measured: the run is shorter than asked",
                self.elapsed_s
            ));
        }
        if let Some(t) = self.rates.target_req_per_s {
            if self.rates.req_per_s < ACHIEVED_SHARE * t {
                w.push(format!(
                    "achieved {:.0} req/s of the {:.0} req/s asked for",
                    self.rates.req_per_s, t
                ));
            }
        }
        let c = &self.connections;
        if c.established < c.requested {
            w.push(format!(
                "only {} of {} connections were established",
                c.established, c.requested
            ));
        }
        self.warnings = w;
    }

    /// The raw data back, for merging.
    pub fn to_stats(&self) -> Result<Stats, String> {
        Ok(Stats {
            conns: self.connections.clone(),
            reqs: self.requests.clone(),
            this: self.loadgen.counters.clone(),
            latency: decode_histogram(&self.histograms.latency)?,
            service: decode_histogram(&self.histograms.service_time)?,
            connect: decode_histogram(&self.histograms.connect)?,
            loop_lag: decode_histogram(&self.histograms.loop_lag)?,
            elapsed_s: self.elapsed_s,
            drain_s: self.drain_s,
            per_path: self
                .per_path
                .iter()
                .map(|(path, p)| {
                    Ok(PathStats {
                        path: path.clone(),
                        sent: p.sent,
                        completed: p.completed,
                        status_2xx: p.status_2xx,
                        timeouts: p.timeouts,
                        latency: decode_histogram(&p.histogram)?,
                    })
                })
                .collect::<Result<_, String>>()?,
        })
    }

    /// Merges reports of runs made at the same time (processes, machines): counts add up,
    /// histograms merge, rates are over the longest of the measured windows.
    pub fn merge(reports: &[Report]) -> Result<Report, String> {
        let first = reports.first().ok_or("nothing to merge")?;
        let mut stats = Stats::default();
        let mut setup = first.setup.clone();
        setup.merged_runs = 0;
        let (mut conns, mut procs, mut rate) = (0, 0, None::<f64>);
        for r in reports {
            if r.version != 1 {
                return Err(format!("report version {} is not supported", r.version));
            }
            stats.add(&r.to_stats()?);
            conns += r.setup.conns;
            procs += r.setup.procs;
            rate = match (rate, r.setup.target_rate) {
                (None, Some(t)) if setup.merged_runs == 0 => Some(t),
                (Some(a), Some(t)) => Some(a + t),
                // A closed-loop run among them: there is no common target.
                _ => None,
            };
            setup.merged_runs += r.setup.merged_runs.max(1);
            if r.setup.engine != setup.engine {
                setup.engine = "mixed".into();
            }
        }
        setup.conns = conns;
        setup.procs = procs;
        setup.target_rate = rate;
        let modes: Vec<&str> = reports.iter().map(|r| r.mode.as_str()).collect();
        let mode = if modes.iter().all(|m| *m == modes[0]) {
            modes[0]
        } else {
            "mixed"
        };
        let mut targets: Vec<&str> = reports.iter().map(|r| r.target.as_str()).collect();
        targets.dedup();
        Ok(Report::new(mode, &targets.join(","), setup, &stats))
    }

    /// The text report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let st = &self.setup;
        let load = match st.target_rate {
            _ if self.mode == "hold" => "holding".into(),
            Some(r) => format!("open loop at {r:.0} req/s"),
            None => "closed loop".into(),
        };
        let _ = writeln!(
            s,
            "loadgen {} {}: {} connections, {} threads x {} processes ({}), pipeline {}, {}, {:.2} s measured{}",
            self.mode,
            self.target,
            st.conns,
            st.threads,
            st.procs,
            if st.engine.is_empty() { "epoll" } else { &st.engine },
            st.pipeline,
            load,
            self.elapsed_s,
            if st.merged_runs > 1 {
                format!(" ({} runs merged)", st.merged_runs)
            } else {
                String::new()
            }
        );
        let c = &self.connections;
        let _ = writeln!(
            s,
            "connections: requested {}, established {}, failed {} (ECONNREFUSED {}, ETIMEDOUT {}, \
             EADDRNOTAVAIL {}, EMFILE {}, other {}); attempts {}; ECONNRESET {}, closed by peer {}, \
             closed on error {}, closed on timeout {}; open at end {}",
            c.requested,
            c.established,
            c.failed,
            c.econnrefused,
            c.etimedout,
            c.eaddrnotavail,
            c.emfile,
            c.other_connect_error,
            c.attempts,
            c.econnreset,
            c.closed_by_peer,
            c.closed_on_error,
            c.closed_on_timeout,
            c.open_at_end
        );
        if self.mode == "hold" {
            let _ = writeln!(
                s,
                "held: {} of {} requested for {:.2} s",
                c.open_at_end, c.requested, self.elapsed_s
            );
        }
        line(&mut s, "connect latency (µs)", &self.connect_latency_us);
        let r = &self.requests;
        let _ = writeln!(
            s,
            "requests: {} completed, {:.1} req/s{}, {} received/s, {} sent/s",
            r.completed,
            self.rates.req_per_s,
            match self.rates.target_req_per_s {
                Some(t) => format!(" (target {t:.0}, {:.1}%)", self.rates.req_per_s * 100.0 / t),
                None => String::new(),
            },
            bytes(self.rates.bytes_received_per_s),
            bytes(self.rates.bytes_sent_per_s)
        );
        let _ = writeln!(
            s,
            "errors: timeouts {}, late answers {}, aborted by close {}, protocol {}; in flight at end {}",
            r.timeouts, r.late, r.aborted, r.protocol_errors, r.in_flight_at_end
        );
        if self.drain_s > 0.0 {
            let _ = writeln!(
                s,
                "drain: {} answered in the {:.3} s after the window",
                r.drained, self.drain_s
            );
        }
        if self.mode == "http" {
            let _ = writeln!(
                s,
                "http status: 1xx {}, 2xx {}, 3xx {}, 4xx {}, 5xx {}, other {}",
                r.status_1xx,
                r.status_2xx,
                r.status_3xx,
                r.status_4xx,
                r.status_5xx,
                r.status_other
            );
        } else {
            let _ = writeln!(
                s,
                "echo verification: verified {}, corrupted {}, truncated {}, reordered {}",
                r.verified, r.corrupted, r.truncated, r.reordered
            );
        }
        let lat = if st.target_rate.is_some() {
            "latency, corrected (µs)"
        } else {
            "latency (µs)"
        };
        line(&mut s, lat, &self.latency_us);
        line(&mut s, "service time (µs)", &self.service_time_us);
        for (path, p) in &self.per_path {
            let _ = writeln!(
                s,
                "path {path}: {} sent, {} completed ({} 2xx), {} timeouts",
                p.sent, p.completed, p.status_2xx, p.timeouts
            );
            line(&mut s, &format!("  {path} {lat}"), &p.latency_us);
        }
        let t = &self.loadgen.counters;
        let _ = writeln!(
            s,
            "loadgen: cpu {:.2} s user + {:.2} s sys; event loops {:.0}% busy over {} threads; \
             timer lag p99 {} µs, max {} µs",
            t.process_user_us as f64 / 1e6,
            t.process_sys_us as f64 / 1e6,
            self.loadgen.thread_busy * 100.0,
            t.threads,
            self.loadgen.loop_lag_us.p99,
            self.loadgen.loop_lag_us.max
        );
        if r.completed > 0 {
            let _ = writeln!(
                s,
                "loadgen cpu per request: {:.2} µs",
                (t.process_user_us + t.process_sys_us) as f64 / r.completed as f64
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "WARNING: {w}");
        }
        s
    }
}

fn line(s: &mut String, name: &str, p: &Percentiles) {
    let _ = writeln!(
        s,
        "{name}: p50 {} p90 {} p99 {} p99.9 {} p99.99 {} max {} (n={}, mean {:.1})",
        p.p50, p.p90, p.p99, p.p99_9, p.p99_99, p.max, p.count, p.mean
    );
}

fn bytes(b: f64) -> String {
    match b {
        b if b >= 1e9 => format!("{:.2} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.2} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.2} kB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_round_trip_and_reports_merge() {
        let mut a = Stats::default();
        a.latency.record(100).unwrap();
        a.reqs.completed = 1;
        a.elapsed_s = 1.0;
        let mut b = Stats::default();
        b.latency.record(300).unwrap();
        b.latency.record(200).unwrap();
        b.reqs.completed = 2;
        b.elapsed_s = 1.0;
        let ra = Report::new("http", "x", Setup::default(), &a);
        let rb = Report::new("http", "x", Setup::default(), &b);
        let json = serde_json::to_string(&ra).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        let m = Report::merge(&[back, rb]).unwrap();
        assert_eq!(m.requests.completed, 3);
        assert_eq!(m.latency_us.count, 3);
        assert_eq!(m.latency_us.max, 300);
        assert_eq!(m.setup.merged_runs, 2);
        assert!(m.per_path.is_empty() && !json.contains("per_path"));
    }

    /// Per-path results survive JSON and merge by path: a path both runs had adds up, a path
    /// only one had is kept.
    #[test]
    fn per_path_results_round_trip_and_merge_by_path() {
        let path = |name: &str, us: &[u64]| {
            let mut p = PathStats::new(name.into());
            for &v in us {
                p.latency.record(v).unwrap();
                p.sent += 1;
                p.completed += 1;
                p.status_2xx += 1;
            }
            p
        };
        let a = Stats {
            per_path: vec![path("/fast", &[10, 20]), path("/slow", &[900])],
            ..Stats::default()
        };
        let b = Stats {
            per_path: vec![path("/fast", &[30]), path("/other", &[5])],
            ..Stats::default()
        };
        let ra = Report::new("http", "x", Setup::default(), &a);
        let back: Report = serde_json::from_str(&serde_json::to_string(&ra).unwrap()).unwrap();
        assert_eq!(back.per_path["/slow"].latency_us.max, 900);
        let rb = Report::new("http", "x", Setup::default(), &b);
        let m = Report::merge(&[back, rb]).unwrap();
        assert_eq!(m.per_path.len(), 3);
        assert_eq!(m.per_path["/fast"].completed, 3);
        assert_eq!(m.per_path["/fast"].latency_us.max, 30);
        assert_eq!(m.per_path["/slow"].latency_us.count, 1);
        assert!(m
            .text()
            .contains("path /slow: 1 sent, 1 completed (1 2xx), 0 timeouts"));
    }
}
