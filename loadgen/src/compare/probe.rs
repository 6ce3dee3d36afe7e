//! One open-loop probe (a fixed offered rate against a running server, measured from both sides)
//! and the capacity search built on it: double the rate until a probe fails, then bisect.
//!
//! A probe passes when the server kept up — achieved ≥ 99% of the offered rate — with p99 (from
//! each request's intended send time, so queueing counts) within the bound and no errors. When a
//! probe fails while loadgen's own event loop was saturated or lagging, the failure says nothing
//! about the server: the search then reports a lower bound set by loadgen, never a capacity.
//!
//! "Saturated" is judged over the measured window alone, from loadgen's threads' own schedstat:
//! the time they ran and, when loadgen has CPUs of its own, the time they waited to run. Over a
//! whole run, connecting 10,000 sockets costs more CPU than the requests of a short probe, and a
//! loadgen that waits for a CPU shared with other work is as late as a busy one. A probe whose
//! connections were still opening when the measured window began is not the server's either.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::server;
use crate::config::{Config, HttpOpts, Mode};
use crate::error::Error;
use crate::interval::Snapshot;

/// Share of the offered rate a probe must achieve.
pub const ACHIEVED_SHARE: f64 = 0.99;
/// A loadgen event loop busier than this during a failed probe makes the failure loadgen's.
const LOADGEN_BUSY: f64 = 0.9;
/// Retries of a probe that failed because of loadgen (with more threads where loadgen has the
/// CPUs for them, or again as it was: other work on the machine comes and goes).
pub const LOADGEN_RETRIES: usize = 1;
/// How long `/stats` may take to answer a loaded server.
const STATS_TIMEOUT: Duration = Duration::from_secs(1);

/// The server a probe drives.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// Its process, for CPU time and memory from /proc (None: not ours to measure).
    pub pid: Option<u32>,
    /// It answers `GET /stats` (c10k) even under this load.
    pub ask_stats: bool,
}

/// How every probe of a step is run.
#[derive(Clone, Debug)]
pub struct ProbeOpts {
    pub conns: u64,
    pub duration: Duration,
    pub warmup: Duration,
    /// loadgen event-loop threads.
    pub threads: usize,
    pub p99_bound: Duration,
    pub path: String,
    /// loadgen has CPUs of its own (pinned apart from the server): time its threads waited for
    /// a CPU counts against it too, as time they could not serve the schedule.
    pub loadgen_pinned: bool,
    /// The most event-loop threads a probe that failed because of loadgen is retried with (the
    /// CPUs loadgen may use).
    pub max_threads: usize,
}

/// The server's side of a probe, from /proc and `/stats` deltas over the measured window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerSide {
    pub cpu_us_per_req: f64,
    /// Percentage of one core.
    pub cpu_pct: f64,
    pub window_s: f64,
    /// Resident memory of its processes at the end of the probe.
    pub rss_kib: u64,
    /// Requests the server counted in the window (`/stats`).
    pub requests: Option<u64>,
    /// Syscalls proper (waits, ctl, reads, writes, accepts, signals, overflow scans) per request.
    pub syscalls_per_req: Option<f64>,
    /// The same by kind.
    pub syscalls_by_kind_per_req: BTreeMap<String, f64>,
    /// io_uring operations submitted per request: not syscalls (one `io_uring_enter` carries
    /// many), reported apart so that uring's syscall figure compares with the others'.
    pub uring_ops_per_req: Option<f64>,
    /// io_uring completions reaped per request (read from shared memory, no syscall).
    pub completions_per_req: Option<f64>,
    /// Descriptors registered with the server's loop at the end (connections + listener).
    pub registered: Option<u64>,
    /// Descriptors the readiness mechanism looked at per request: see [`examined`].
    pub examined_per_req: Option<f64>,
    /// Percentage of the window the server's threads, summed, were runnable but waited for a
    /// CPU: other work on a shared machine (or, for a server of many threads, its own threads
    /// on one core). A failure with a large one may be the machine's, not the I/O model's.
    #[serde(default)]
    pub waited_pct: f64,
}

/// One probe: a fixed offered rate, measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Probe {
    pub target_rate: f64,
    pub achieved_rate: f64,
    pub completed: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p99_9_us: u64,
    pub errors: u64,
    pub conns_held: u64,
    pub pass: bool,
    /// What failed: "rate", "p99", "errors".
    pub failed_on: Vec<String>,
    /// loadgen's event loops over the measured window: CPU over wall time per thread (1.0 =
    /// always busy).
    pub loadgen_busy: f64,
    /// The share of the measured window loadgen's threads waited for a CPU (runnable, not
    /// running).
    #[serde(default)]
    pub loadgen_waited: f64,
    /// loadgen saturated, waited for its CPU, woke late, or was still connecting: a failure is
    /// loadgen's, not the server's.
    pub loadgen_bound: bool,
    /// Why `loadgen_bound`.
    #[serde(default)]
    pub loadgen_limit: Option<String>,
    /// Some connection was still opening when the measured window began.
    #[serde(default)]
    pub connects_late: bool,
    /// Event-loop threads this probe ran with.
    #[serde(default)]
    pub loadgen_threads: usize,
    /// Earlier tries at this rate that failed because of loadgen, then retried.
    #[serde(default)]
    pub loadgen_retries: usize,
    /// This probe reran a rate whose first probe kept the rate but missed the p99 bound (see
    /// [`search`]); this one's verdict is the rate's.
    #[serde(default)]
    pub tail_rerun: bool,
    /// loadgen's CPU per completed request over the measured window (connecting excluded).
    pub loadgen_cpu_us_per_req: f64,
    pub server: Option<ServerSide>,
}

/// Why the search stopped where it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bound {
    /// The lowest failing rate failed because of the server: `capacity` is the server's.
    Server,
    /// The lowest failing rate failed while loadgen was saturated: `capacity` is only a lower
    /// bound on the server's, set by loadgen.
    Loadgen,
    /// Every rate up to the search's maximum passed.
    MaxRate,
    /// Even the smallest rate failed.
    BelowMin,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Search {
    /// The highest rate that passed (a capacity only when `bound` is Server).
    pub capacity: Option<f64>,
    pub bound: Bound,
    pub probes: Vec<Probe>,
}

impl Search {
    /// The server's capacity, only when the server (not loadgen or the search range) set it.
    pub fn server_capacity(&self) -> Option<f64> {
        (self.bound == Bound::Server)
            .then_some(self.capacity)
            .flatten()
    }
}

#[derive(Clone, Debug)]
pub struct SearchOpts {
    pub start_rate: f64,
    pub min_rate: f64,
    pub max_rate: f64,
    /// Stop bisecting when (fail − pass) / pass is at most this.
    pub precision: f64,
    pub max_probes: usize,
}

/// Double from `start_rate` while probes pass (halve while they fail), then bisect between the
/// highest pass and the lowest fail.
///
/// A probe that kept the rate but missed the p99 bound alone is run once more, and the rerun's
/// verdict is the rate's: one scheduling hiccup (another process, a virtual CPU's late wake-up:
/// on a shared machine a p99 of 5-15 ms at 5,000 req/s against a C epoll loop was seen, by old
/// and new loadgen alike) must not set a capacity, and a bisection never returns above a rate
/// that failed. A rate past the capacity misses the bound again (its queue grows), at the price
/// of one probe. A probe short of the rate, with errors, or loadgen-bound is believed at once.
pub fn search(
    opts: &SearchOpts,
    probe: &mut dyn FnMut(f64) -> Result<Probe, String>,
) -> Result<Search, String> {
    let mut pass: Option<f64> = None;
    let mut fail: Option<(f64, bool)> = None;
    let mut probes = Vec::new();
    let mut rate = opts.start_rate.clamp(opts.min_rate, opts.max_rate).round();
    let bound = loop {
        if probes.len() >= opts.max_probes {
            break match fail {
                Some((_, true)) => Bound::Loadgen,
                Some(_) if pass.is_some() => Bound::Server,
                Some(_) => Bound::BelowMin,
                None => Bound::MaxRate,
            };
        }
        let mut p = probe(rate)?;
        if !p.pass
            && !p.loadgen_bound
            && p.failed_on == ["p99"]
            && probes.len() + 1 < opts.max_probes
        {
            probes.push(p);
            p = probe(rate)?;
            p.tail_rerun = true;
        }
        let ok = p.pass;
        let loadgen = p.loadgen_bound;
        probes.push(p);
        if ok {
            pass = Some(pass.map_or(rate, |v: f64| v.max(rate)));
        } else if fail.is_none_or(|(f, _)| rate < f) {
            fail = Some((rate, loadgen));
        }
        match (pass, fail) {
            (Some(lo), Some((hi, _))) if (hi - lo) / lo <= opts.precision || hi <= lo => {
                break if fail.is_some_and(|(_, l)| l) {
                    Bound::Loadgen
                } else {
                    Bound::Server
                };
            }
            (Some(lo), Some((hi, _))) => rate = ((lo + hi) / 2.0).round(),
            (Some(lo), None) => {
                if lo >= opts.max_rate {
                    break Bound::MaxRate;
                }
                rate = (lo * 2.0).min(opts.max_rate);
            }
            (None, Some((hi, l))) => {
                if hi <= opts.min_rate {
                    break if l { Bound::Loadgen } else { Bound::BelowMin };
                }
                rate = (hi / 2.0).max(opts.min_rate).round();
            }
            (None, None) => unreachable!("a probe either passes or fails"),
        }
    };
    Ok(Search {
        capacity: pass,
        bound,
        probes,
    })
}

/// The capacity of the HTTP server at `addr` (`GET path`, keep-alive): [`search`] over real
/// open-loop probes of `opts.conns` connections.
pub fn capacity(
    target: Target,
    opts: &ProbeOpts,
    search_opts: &SearchOpts,
) -> Result<Search, Error> {
    search(search_opts, &mut |rate| {
        run(target, opts, rate).map_err(|e| e.to_string())
    })
    .map_err(Error::Io)
}

/// The server at one moment.
struct Sample {
    at: Instant,
    cpu_us: u64,
    stats: Option<serde_json::Value>,
    /// The server's ns waited for a CPU (its live threads).
    server_wait_ns: u64,
}

fn sample(target: Target, stats: bool) -> Sample {
    Sample {
        at: Instant::now(),
        server_wait_ns: target.pid.map_or(0, |p| {
            server::process_tree(p)
                .iter()
                .filter_map(|&p| server::sched_time(p))
                .map(|t| t.wait_ns)
                .sum()
        }),
        cpu_us: target
            .pid
            .map_or(0, |p| server::cpu_us(&server::process_tree(p))),
        stats: (stats && target.ask_stats)
            .then(|| server::fetch_stats(target.addr, STATS_TIMEOUT))
            .flatten(),
    }
}

/// New connections per second of a probe: a ramp the server's accept queue can take (all at
/// once, 10,000 SYNs overflow a 4096 backlog, and the dropped ones retry a second later, inside
/// the measured window).
pub const CONNECT_RATE: f64 = 20_000.0;

/// What loadgen did during one probe, to decide whether a failure was loadgen's.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadgenWindow {
    /// The measured window, ns.
    pub wall_ns: u64,
    pub threads: usize,
    /// ns loadgen's threads ran over the window.
    pub run_ns: u64,
    /// ns they were runnable but waited for a CPU over the window.
    pub wait_ns: u64,
    /// loadgen had CPUs of its own: waiting for one means other work took them, and it could
    /// not keep to its schedule.
    pub pinned: bool,
    /// Its event loops woke late for their timers (more than 1% of wakeups in the window).
    pub lagged: bool,
    /// When the last connection was established at the latest, ns from the start: the ramp's
    /// end plus the slowest connect.
    pub connected_by_ns: u64,
    /// When the measured window began, ns from the start.
    pub window_start_ns: u64,
}

impl LoadgenWindow {
    /// CPU over wall time per thread.
    pub fn busy(&self) -> f64 {
        self.run_ns as f64 / (self.wall_ns.max(1) as f64 * self.threads.max(1) as f64)
    }

    /// Time waited for a CPU over wall time per thread.
    pub fn waited(&self) -> f64 {
        self.wait_ns as f64 / (self.wall_ns.max(1) as f64 * self.threads.max(1) as f64)
    }

    /// Why loadgen, not the server, may have set this probe's result; None: it had room.
    pub fn limit(&self) -> Option<String> {
        let (busy, waited) = (self.busy(), self.waited());
        if busy >= LOADGEN_BUSY {
            return Some(format!("its event loops were {:.0}% busy", busy * 100.0));
        }
        if self.pinned && busy + waited >= LOADGEN_BUSY {
            return Some(format!(
                "its event loops ran {:.0}% and waited for their CPU {:.0}% of the window",
                busy * 100.0,
                waited * 100.0
            ));
        }
        if self.lagged {
            return Some("its event loops woke late for their timers".into());
        }
        if self.connected_by_ns >= self.window_start_ns {
            return Some(format!(
                "connections were still opening {:.0} ms into the measured window",
                (self.connected_by_ns - self.window_start_ns) as f64 / 1e6
            ));
        }
        None
    }
}

fn config(target: Target, opts: &ProbeOpts, rate: f64) -> Config {
    let mode = Mode::Http(HttpOpts {
        host: target.addr.to_string(),
        path: opts.path.clone(),
        method: "GET".into(),
        body_size: 0,
        keepalive: true,
        mix: Vec::new(),
    });
    let mut cfg = Config::new(mode, target.addr, opts.conns as usize);
    cfg.threads = opts.threads.max(1);
    cfg.rate = Some(rate);
    // An open loop: the engine `loadgen http --rate` gets (see `EngineKind::default_for_rate`).
    cfg.engine = crate::config::EngineKind::default_for_rate(cfg.engine, cfg.rate);
    cfg.duration = Some(opts.duration);
    // Connecting many sockets takes time that must not count as queueing: a ramp, done before
    // the warm-up's own time starts.
    cfg.connect_rate = Some(CONNECT_RATE);
    cfg.warmup = opts.warmup + ramp(opts.conns);
    // One interval for the warm-up and one for the measured window: a sample at each end.
    cfg.interval = opts.duration.max(Duration::from_millis(10));
    cfg.timeout = Duration::from_secs(5);
    cfg
}

/// How long the connect ramp of `conns` connections takes.
fn ramp(conns: u64) -> Duration {
    Duration::from_secs_f64(conns as f64 / CONNECT_RATE)
}

/// Offers `rate` requests per second to `target` for one probe, and again while it fails
/// because of loadgen (see [`retrying`]; a longer warm-up when connections were still opening):
/// a loadgen ceiling is worked around where it can be before it is reported. `threads` starts at `opts.threads` and keeps what a retry needed, so
/// that the probes after it start there.
pub fn run_retrying(
    target: Target,
    opts: &ProbeOpts,
    threads: &mut usize,
    rate: f64,
) -> Result<Probe, Error> {
    let mut warmup = opts.warmup;
    retrying(threads, opts.max_threads, &mut |t| {
        let o = ProbeOpts {
            threads: t,
            warmup,
            ..opts.clone()
        };
        let p = run(target, &o, rate)?;
        // Connects that waited out a SYN retransmit (a server or machine slower to accept than
        // the ramp): give the next try the time they took.
        if p.connects_late {
            warmup = warmup * 2 + Duration::from_secs(1);
        }
        Ok(p)
    })
}

/// The retry policy of [`run_retrying`] over any probe (`probe(threads)`): while a probe fails
/// because of loadgen, double its threads up to `max_threads` (the CPUs loadgen has), then try
/// [`LOADGEN_RETRIES`] more times as it is (other work on a shared machine comes and goes).
pub fn retrying<E>(
    threads: &mut usize,
    max_threads: usize,
    probe: &mut dyn FnMut(usize) -> Result<Probe, E>,
) -> Result<Probe, E> {
    *threads = (*threads).max(1);
    let mut p = probe(*threads)?;
    let mut retries = 0;
    let mut at_max = 0;
    while !p.pass && p.loadgen_bound {
        if *threads < max_threads {
            *threads = (*threads * 2).min(max_threads);
        } else if at_max < LOADGEN_RETRIES {
            at_max += 1;
        } else {
            break;
        }
        retries += 1;
        p = probe(*threads)?;
    }
    p.loadgen_retries = retries;
    Ok(p)
}

/// Offers `rate` requests per second to `target` for one probe.
pub fn run(target: Target, opts: &ProbeOpts, rate: f64) -> Result<Probe, Error> {
    let cfg = config(target, opts, rate);
    let start = sample(target, false);
    let mut base: Option<Sample> = None;
    let mut last: Option<Sample> = None;
    let mut on_interval = |s: &Snapshot| {
        if s.warmup {
            if base.is_none() {
                base = Some(sample(target, true));
            }
        } else {
            last = Some(sample(
                target,
                base.as_ref().is_some_and(|b| b.stats.is_some()),
            ));
        }
    };
    let report = crate::run(&cfg, &mut on_interval)?;
    // The signal was meant for the comparison, not for this probe, whose shortened window
    // measured nothing of `rate`.
    if report.loadgen.counters.interrupted_threads > 0 {
        return Err(Error::Interrupted);
    }
    let base = base.unwrap_or(start);
    let end = match last {
        Some(s) => s,
        None => sample(target, false),
    };
    let r = &report;
    let q = &r.requests;
    let errors = r.connections.failed
        + q.timeouts
        + q.aborted
        + q.protocol_errors
        + q.status_4xx
        + q.status_5xx
        + q.status_other;
    // The answers that came inside the window, over it: a server that falls behind is judged at
    // the rate it served, not credited with the backlog it answered in the drain.
    let achieved = r.rates.req_per_s;
    let bound_us = opts.p99_bound.as_micros() as u64;
    let mut failed_on = Vec::new();
    if achieved < ACHIEVED_SHARE * rate {
        failed_on.push("rate".to_string());
    }
    if r.latency_us.p99 > bound_us {
        failed_on.push("p99".to_string());
    }
    if errors > 0 {
        failed_on.push("errors".to_string());
    }
    let own = &r.loadgen.counters;
    // loadgen's threads measure their own run and wait time over the window (they may be
    // gone by the time this thread could read them).
    let window = LoadgenWindow {
        wall_ns: (r.elapsed_s * 1e9) as u64,
        threads: cfg.threads,
        run_ns: own.measured_run_us * 1000,
        wait_ns: own.measured_wait_us * 1000,
        pinned: opts.loadgen_pinned,
        lagged: own.measured_wakeups > 0 && own.measured_late_wakeups * 100 > own.measured_wakeups,
        connected_by_ns: (ramp(opts.conns).as_micros() as u64 + r.connect_latency_us.max) * 1000,
        window_start_ns: cfg.warmup.as_nanos() as u64,
    };
    let loadgen_limit = window.limit();
    let server = target.pid.map(|pid| {
        let window = end.at.duration_since(base.at).as_secs_f64().max(1e-6);
        let cpu = end.cpu_us.saturating_sub(base.cpu_us) as f64;
        let mut side = ServerSide {
            cpu_us_per_req: if q.completed > 0 {
                cpu / q.completed as f64
            } else {
                0.0
            },
            cpu_pct: cpu / (window * 1e6) * 100.0,
            waited_pct: end.server_wait_ns.saturating_sub(base.server_wait_ns) as f64
                / (window * 1e9)
                * 100.0,
            window_s: window,
            rss_kib: server::status_kib(&server::process_tree(pid), "VmRSS"),
            ..ServerSide::default()
        };
        if let (Some(b), Some(e)) = (&base.stats, &end.stats) {
            counters(&mut side, b, e);
        }
        // A server so far behind that no request both went out and came back inside the
        // window still answered some in it: its own count, over the very window of the CPU
        // samples, is then the only denominator (0 stays "unknown", never "free").
        if q.completed == 0 {
            if let Some(n) = side.requests.filter(|&n| n > 0) {
                side.cpu_us_per_req = cpu / n as f64;
            }
        }
        side
    });
    Ok(Probe {
        target_rate: rate,
        achieved_rate: achieved,
        completed: q.completed,
        p50_us: r.latency_us.p50,
        p99_us: r.latency_us.p99,
        p99_9_us: r.latency_us.p99_9,
        errors,
        conns_held: r.connections.open_at_end,
        pass: failed_on.is_empty(),
        failed_on,
        loadgen_busy: window.busy(),
        loadgen_waited: window.waited(),
        loadgen_bound: loadgen_limit.is_some(),
        loadgen_limit,
        connects_late: window.connected_by_ns >= window.window_start_ns,
        loadgen_threads: cfg.threads,
        loadgen_retries: 0,
        tail_rerun: false,
        loadgen_cpu_us_per_req: if q.completed > 0 {
            window.run_ns as f64 / 1e3 / q.completed as f64
        } else {
            0.0
        },
        server,
    })
}

/// Syscalls proper, the kinds `syscalls_total` adds up.
pub const SYSCALL_KINDS: &[&str] = &[
    "waits",
    "ctl",
    "reads",
    "writes",
    "accepts",
    "signals",
    "overflow_scans",
];

/// `/stats` deltas between two samples, per request the server counted.
fn counters(side: &mut ServerSide, b: &serde_json::Value, e: &serde_json::Value) {
    let get = |v: &serde_json::Value, k: &str| v["syscalls"][k].as_u64().unwrap_or(0);
    let delta = |k: &str| get(e, k).saturating_sub(get(b, k));
    // The closing `/stats` request counts itself.
    let reqs = e["requests"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(b["requests"].as_u64().unwrap_or(0))
        .saturating_sub(1);
    if reqs == 0 {
        return;
    }
    let per = |d: u64| d as f64 / reqs as f64;
    let total = match (e["syscalls_total"].as_u64(), b["syscalls_total"].as_u64()) {
        (Some(e), Some(b)) => e.saturating_sub(b),
        _ => SYSCALL_KINDS.iter().map(|k| delta(k)).sum(),
    };
    for k in SYSCALL_KINDS {
        side.syscalls_by_kind_per_req
            .insert(k.to_string(), per(delta(k)));
    }
    side.syscalls_per_req = Some(per(total));
    side.uring_ops_per_req = Some(per(delta("uring_ops")));
    side.completions_per_req = Some(per(delta("completions")));
    side.requests = Some(reqs);
    // The connections open (the `/stats` one included) and the listener.
    let registered = e["connections_current"].as_u64().map(|c| c + 1);
    side.registered = registered;
    let backend = e["backend"].as_str().unwrap_or("");
    side.examined_per_req = examined(backend, &|k| delta(k), registered).map(per);
}

/// Descriptors the I/O model looked at over a window, from its counters:
/// - select, poll, busy-poll hand every registered descriptor to each wait (or pass):
///   waits × registered;
/// - sigio takes one signal per ready descriptor, and scans all of them after an overflow;
/// - uring reaps one completion per finished operation;
/// - epoll and coro (epoll underneath) are told only the ready descriptors, and threads and pool
///   block on one descriptor each: counted as the reads and accepts that readiness led to.
pub fn examined(
    backend: &str,
    delta: &dyn Fn(&str) -> u64,
    registered: Option<u64>,
) -> Option<u64> {
    Some(match backend {
        "select" | "poll" | "busy-poll" => delta("waits") * registered?,
        "sigio" => delta("signals") + delta("overflow_scans") * registered?,
        "uring" => delta("completions"),
        _ => delta("reads") + delta("accepts"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake server that keeps up to `capacity` req/s, behind a loadgen that saturates at
    /// `loadgen_max`.
    fn fake(capacity: f64, loadgen_max: f64) -> impl FnMut(f64) -> Result<Probe, String> {
        move |rate| {
            let loadgen_bound = rate > loadgen_max;
            let pass = rate <= capacity && !loadgen_bound;
            Ok(Probe {
                target_rate: rate,
                pass,
                loadgen_bound,
                ..Probe::default()
            })
        }
    }

    fn opts() -> SearchOpts {
        SearchOpts {
            start_rate: 1000.0,
            min_rate: 100.0,
            max_rate: 1e6,
            precision: 0.02,
            max_probes: 30,
        }
    }

    #[test]
    fn finds_a_server_capacity() {
        let s = search(&opts(), &mut fake(12_345.0, 1e9)).unwrap();
        assert_eq!(s.bound, Bound::Server);
        let c = s.server_capacity().unwrap();
        assert!((12_345.0 * 0.98..=12_345.0).contains(&c), "{c}");
    }

    #[test]
    fn a_loadgen_ceiling_is_never_a_capacity() {
        let s = search(&opts(), &mut fake(1e9, 40_000.0)).unwrap();
        assert_eq!(s.bound, Bound::Loadgen);
        assert_eq!(s.server_capacity(), None);
        assert!(s.capacity.unwrap() >= 40_000.0 * 0.98);
    }

    #[test]
    fn searches_down_and_stops_at_the_range() {
        let s = search(&opts(), &mut fake(300.0, 1e9)).unwrap();
        assert_eq!(s.bound, Bound::Server);
        assert!(s.capacity.unwrap() <= 300.0 && s.capacity.unwrap() > 290.0);
        let s = search(&opts(), &mut fake(50.0, 1e9)).unwrap();
        assert_eq!(s.bound, Bound::BelowMin);
        assert_eq!(s.capacity, None);
        let s = search(&opts(), &mut fake(1e9, 1e9)).unwrap();
        assert_eq!(s.bound, Bound::MaxRate);
    }

    /// A server of 12,345 req/s whose probes miss the p99 bound on their first try at the
    /// rates in `hiccups` (a scheduling hiccup), and past its capacity every time, on the tail
    /// alone while the rate is still kept.
    fn jittery(hiccups: Vec<f64>) -> impl FnMut(f64) -> Result<Probe, String> {
        let mut seen = Vec::new();
        move |rate| {
            let hiccup = hiccups.contains(&rate) && !seen.contains(&rate);
            seen.push(rate);
            let pass = rate <= 12_345.0 && !hiccup;
            Ok(Probe {
                target_rate: rate,
                achieved_rate: rate,
                pass,
                failed_on: if pass { vec![] } else { vec!["p99".into()] },
                ..Probe::default()
            })
        }
    }

    #[test]
    fn a_tail_missed_once_is_rerun_and_does_not_set_the_capacity() {
        // The first probe (1,000 req/s) and a later one (8,000) hiccup: without the rerun the
        // search would halve down to 100 req/s.
        let s = search(&opts(), &mut jittery(vec![1000.0, 8000.0])).unwrap();
        assert_eq!(s.bound, Bound::Server, "{:?}", s.probes);
        let c = s.server_capacity().unwrap();
        assert!((12_345.0 * 0.98..=12_345.0).contains(&c), "{c}");
        let reruns: Vec<_> = s.probes.iter().filter(|p| p.tail_rerun).collect();
        assert!(reruns.iter().any(|p| p.target_rate == 1000.0 && p.pass));
        assert!(reruns.iter().any(|p| p.target_rate == 8000.0 && p.pass));
        // Past the capacity the rerun fails too: the failure stands.
        assert!(reruns.iter().any(|p| p.target_rate > 12_345.0 && !p.pass));
    }

    #[test]
    fn a_probe_short_of_its_rate_is_not_rerun() {
        let s = search(&opts(), &mut fake(12_345.0, 1e9)).unwrap();
        assert!(s.probes.iter().all(|p| !p.tail_rerun), "{:?}", s.probes);
    }

    /// What the full run of 2026-12-02 saw at 10,000 connections: loadgen 60% busy over the
    /// whole probe, so never "saturated", yet over the measured window it ran 55% of the time
    /// and waited for its CPU 40% (the machine was shared): it could not keep to the schedule.
    fn window_10k() -> LoadgenWindow {
        LoadgenWindow {
            wall_ns: 1_000_000_000,
            threads: 1,
            run_ns: 550_000_000,
            wait_ns: 400_000_000,
            pinned: true,
            lagged: false,
            connected_by_ns: 900_000_000,
            window_start_ns: 1_000_000_000,
        }
    }

    #[test]
    fn loadgen_waiting_for_its_cpu_is_loadgen_bound() {
        let w = window_10k();
        assert!(w.limit().unwrap().contains("waited for their CPU 40%"));
        // Unpinned, loadgen shares its CPU with the server by design: waiting is no verdict.
        let shared = LoadgenWindow { pinned: false, ..w };
        assert_eq!(shared.limit(), None);
        let idle = LoadgenWindow {
            run_ns: 300_000_000,
            wait_ns: 50_000_000,
            ..w
        };
        assert_eq!(idle.limit(), None);
        let busy = LoadgenWindow {
            run_ns: 1_900_000_000,
            threads: 2,
            ..idle
        };
        assert!(busy.limit().unwrap().contains("95% busy"));
    }

    #[test]
    fn connections_still_opening_in_the_window_are_loadgen_bound() {
        let late = LoadgenWindow {
            run_ns: 100_000_000,
            wait_ns: 0,
            connected_by_ns: 2_050_000_000,
            ..window_10k()
        };
        assert!(late.limit().unwrap().contains("still opening 1050 ms"));
    }

    /// A server of 20,000 req/s behind a loadgen thread that manages 8,000 req/s: with a second
    /// thread (a second CPU) it manages 16,000, with four 32,000.
    fn threaded_fake(threads: usize, rate: f64) -> Probe {
        let loadgen_bound = rate > 8_000.0 * threads as f64;
        Probe {
            target_rate: rate,
            pass: rate <= 20_000.0 && !loadgen_bound,
            loadgen_bound,
            loadgen_threads: threads,
            ..Probe::default()
        }
    }

    #[test]
    fn a_loadgen_limit_is_retried_with_more_threads() {
        let mut tried = Vec::new();
        let mut threads = 1;
        let s = search(&opts(), &mut |rate| {
            retrying(&mut threads, 4, &mut |t| {
                tried.push(t);
                Ok::<_, String>(threaded_fake(t, rate))
            })
        })
        .unwrap();
        // 1 thread tops out at 8,000 req/s; retried with 2, then 4 at a higher rate, the search
        // reaches the server's own limit, and the later probes start with the threads needed.
        assert_eq!(s.bound, Bound::Server, "{:?}", s.probes);
        assert_eq!(threads, 4);
        let c = s.server_capacity().unwrap();
        assert!((20_000.0 * 0.98..=20_000.0).contains(&c), "{c}");
        assert!(tried.contains(&2));
        assert!(s.probes.iter().any(|p| p.loadgen_retries >= 1 && p.pass));
    }

    #[test]
    fn a_loadgen_limit_that_retrying_cannot_lift_is_still_marked() {
        // One CPU for loadgen: the retry runs as it was, fails again, and the result is a lower
        // bound, not a capacity.
        let mut threads = 1;
        let s = search(&opts(), &mut |rate| {
            retrying(&mut threads, 1, &mut |t| {
                Ok::<_, String>(threaded_fake(t, rate))
            })
        })
        .unwrap();
        assert_eq!(s.bound, Bound::Loadgen);
        assert_eq!(s.server_capacity(), None);
        let fails: Vec<_> = s.probes.iter().filter(|p| !p.pass).collect();
        assert!(fails
            .iter()
            .all(|p| p.loadgen_retries == 1 && p.loadgen_threads == 1));
    }

    #[test]
    fn descriptors_examined_follow_the_model() {
        let d = |k: &str| match k {
            "waits" => 10,
            "reads" => 20,
            "accepts" => 1,
            _ => 0,
        };
        assert_eq!(examined("poll", &d, Some(1000)), Some(10_000));
        assert_eq!(examined("epoll", &d, Some(1000)), Some(21));
        assert_eq!(examined("select", &d, None), None);
    }
}
