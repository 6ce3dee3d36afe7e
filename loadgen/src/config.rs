//! What a run asks for, independent of how it was asked (CLI or library), and its validation.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ports::PortRange;

/// The default `--schedule-tick`, µs: short beside the latencies an open-loop sweep bounds
/// (milliseconds), long enough to send several requests per wakeup at tens of thousands of
/// requests per second per thread.
pub const DEFAULT_SCHEDULE_TICK_US: u64 = 100;
/// Largest `--pipeline` depth.
pub const MAX_PIPELINE: usize = 1024;
/// Largest `--procs`.
pub const MAX_PROCS: usize = 256;
/// Smallest echo message: the 16-byte header (sequence number, connection id, checksum).
pub const ECHO_HEADER: usize = 16;
/// Largest echo message or HTTP request body.
pub const MAX_MESSAGE: usize = 64 << 20;
/// Most paths in a `--mix` (a request's path is one byte in the engine).
pub const MAX_MIX_PATHS: usize = 64;
/// Largest sum of a `--mix`'s weights: the length of its interleaving cycle.
pub const MAX_MIX_CYCLE: u64 = 100_000;

/// One run: the target, the load and the protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub mode: Mode,
    pub target: SocketAddr,
    /// Connections in total, over all processes and threads.
    pub conns: usize,
    /// Event-loop threads per process.
    pub threads: usize,
    /// Worker processes; 1 runs in this process.
    pub procs: usize,
    /// How long to measure (after `warmup`); exclusive with `requests`.
    pub duration: Option<Duration>,
    /// How many requests to measure (after `warmup`); exclusive with `duration`.
    pub requests: Option<u64>,
    /// New connections per second over the whole run (None: all at once).
    pub connect_rate: Option<f64>,
    /// Time excluded from the results at the start.
    pub warmup: Duration,
    /// Open loop: requests per second, one global schedule. None: closed loop.
    pub rate: Option<f64>,
    /// Open loop: requests due within one tick are sent together at its end (one wakeup per
    /// tick, not per request); zero sends each at its due time.
    #[serde(default = "default_schedule_tick")]
    pub schedule_tick: Duration,
    /// A connect or request older than this is a timeout.
    pub timeout: Duration,
    /// Source addresses, used round-robin by connection; empty: the kernel chooses.
    pub sources: Vec<IpAddr>,
    /// `--source-ports`: each connection binds its own (source address, port) pair from these
    /// ports (crate::ports); None: the kernel picks the port at connect time.
    #[serde(default)]
    pub source_ports: Option<PortRange>,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Period of the interval snapshots (JSON lines, hdr log, progress).
    pub interval: Duration,
    /// This run is one part of a run over several hosts (`--part I/N`): it takes every N-th
    /// connection and every N-th request of the one global schedule, from the I-th.
    #[serde(default)]
    pub part: Option<Share>,
    /// The run's start in Unix time, seconds (`--start-at`, `--start-in`): connections open
    /// before it, requests, the warmup and the measurement start at it.
    #[serde(default)]
    pub start_at: Option<f64>,
    /// Set in a worker process: its share of the run (of every part's processes).
    #[serde(default)]
    pub worker: Option<Share>,
    /// The loadgen executable started for `procs > 1` (default: this executable).
    #[serde(skip)]
    pub worker_exe: Option<PathBuf>,
    /// How each event-loop thread does its connections' I/O (`--engine`).
    #[serde(default)]
    pub engine: EngineKind,
}

/// An event loop's I/O (`--engine`). Both run the same loop (`crate::engine`): epoll reads and
/// writes each ready connection with its own syscalls; uring submits the sends and receives of
/// many connections in one io_uring_enter per turn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    #[default]
    Epoll,
    Uring,
}

impl EngineKind {
    /// The engine a run of `mode` gets unless told: uring where io_uring works, since it costs
    /// less CPU per request (docs/loadgen.md, "loadgen vs wrk"); epoll for a hold, whose figure
    /// is memory per connection, mostly idle ones that batching does not help, and for which
    /// uring keeps more per connection (its slot, and an armed receive in the kernel).
    pub fn default_for(mode: &Mode) -> EngineKind {
        match mode {
            Mode::Hold(_) => EngineKind::Epoll,
            _ if crate::engine::probe_uring().is_ok() => EngineKind::Uring,
            _ => EngineKind::Epoll,
        }
    }

    /// An open loop (`--rate`) runs on epoll unless told otherwise. Below saturation epoll
    /// sleeps to the schedule's tick and dates each response by the kernel's receive timestamp
    /// (engine/tick.rs); uring wakes per completion and dates them when reaped. Against cepoll
    /// at 25,000 req/s over 100 connections (3 interleaved rounds of 5 s): epoll 21.1–22.5 µs of
    /// loadgen CPU per request and p50 85–101 µs, uring 25.6–27.8 µs and p50 133–152 µs.
    /// `for_closed` is the engine a closed loop of the same mode gets.
    pub fn default_for_rate(for_closed: EngineKind, rate: Option<f64>) -> EngineKind {
        match rate {
            Some(_) => EngineKind::Epoll,
            None => for_closed,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Epoll => "epoll",
            EngineKind::Uring => "uring",
        }
    }
}

/// Process `index` of `of`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Share {
    pub of: usize,
    pub index: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Mode {
    Http(HttpOpts),
    Echo { size: usize },
    Hold(HoldOpts),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HttpOpts {
    /// The Host header.
    pub host: String,
    /// Path and query.
    pub path: String,
    pub method: String,
    pub body_size: usize,
    /// false: `Connection: close` and a new connection per request.
    pub keepalive: bool,
    /// Several paths, each with a weight (`--mix /plaintext=99,/sleep/50=1`), in place of
    /// `path`: every request takes one of them in a fixed interleaving (see
    /// [`crate::client::http::Mix`]), and each path's latency is recorded apart as well.
    /// Empty: every request is for `path`.
    #[serde(default)]
    pub mix: Vec<PathWeight>,
}

/// One path of a `--mix` and its share of the requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathWeight {
    pub path: String,
    pub weight: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HoldOpts {
    /// Send a small verified echo message on each connection this often.
    pub ping_interval: Option<Duration>,
    pub ping_size: usize,
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Http(_) => "http",
            Mode::Echo { .. } => "echo",
            Mode::Hold(_) => "hold",
        }
    }
}

impl Config {
    /// A closed-loop run of 10 s over `conns` connections, one thread per core.
    pub fn new(mode: Mode, target: SocketAddr, conns: usize) -> Config {
        let engine = EngineKind::default_for(&mode);
        Config {
            mode,
            target,
            conns,
            threads: default_threads(),
            procs: 1,
            duration: Some(Duration::from_secs(10)),
            requests: None,
            connect_rate: None,
            warmup: Duration::ZERO,
            rate: None,
            schedule_tick: default_schedule_tick(),
            timeout: Duration::from_secs(5),
            sources: Vec::new(),
            source_ports: None,
            pipeline: 1,
            interval: Duration::from_secs(1),
            part: None,
            start_at: None,
            worker: None,
            worker_exe: None,
            engine,
        }
    }

    /// Checks what no run could satisfy; limits of this machine are the preflight's job.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(m));
        if self.conns == 0 {
            return bad("--conns must be at least 1".into());
        }
        if self.threads == 0 {
            return bad("--threads must be at least 1".into());
        }
        if self.procs == 0 || self.procs > MAX_PROCS {
            return bad(format!("--procs must be between 1 and {MAX_PROCS}"));
        }
        if let Some(p) = self.part {
            if p.of == 0 || p.index >= p.of {
                return bad(format!(
                    "--part {}/{}: give I/N with I below N (the first part is 0)",
                    p.index, p.of
                ));
            }
        }
        if self.procs * self.parts() > self.conns {
            return bad(format!(
                "--procs {} over {} parts is more than --conns {}: each process needs a connection",
                self.procs,
                self.parts(),
                self.conns
            ));
        }
        if self.start_at.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
            return bad("--start-at must be a Unix time in seconds".into());
        }
        if self.pipeline == 0 || self.pipeline > MAX_PIPELINE {
            return bad(format!("--pipeline must be between 1 and {MAX_PIPELINE}"));
        }
        match (self.duration, self.requests) {
            (Some(_), Some(_)) => return bad("give --duration or --requests, not both".into()),
            (None, None) => return bad("give --duration or --requests".into()),
            (Some(d), None) if d.is_zero() => return bad("--duration must be positive".into()),
            (None, Some(0)) => return bad("--requests must be at least 1".into()),
            _ => {}
        }
        for (name, r) in [("--rate", self.rate), ("--connect-rate", self.connect_rate)] {
            if let Some(r) = r {
                if !(r.is_finite() && r > 0.0) {
                    return bad(format!("{name} must be a positive number"));
                }
            }
        }
        if self.schedule_tick > Duration::from_secs(1) {
            return bad("--schedule-tick must be at most 1s".into());
        }
        if self.timeout.is_zero() {
            return bad("--timeout must be positive".into());
        }
        if self.interval < Duration::from_millis(10) {
            return bad("--interval must be at least 10ms".into());
        }
        if self
            .sources
            .iter()
            .any(|s| s.is_ipv4() != self.target.is_ipv4())
        {
            return bad("--source addresses must be of the target's address family".into());
        }
        if self.source_ports.is_some() && self.sources.is_empty() {
            return bad(
                "--source-ports needs --source (the addresses the ports are taken on)".into(),
            );
        }
        match &self.mode {
            Mode::Http(h) => {
                if h.body_size > MAX_MESSAGE {
                    return bad(format!("--body-size must be at most {MAX_MESSAGE}"));
                }
                if !h.keepalive && self.pipeline > 1 {
                    return bad(
                        "--no-keepalive sends one request per connection: drop --pipeline".into(),
                    );
                }
                if h.method.is_empty() || !h.method.bytes().all(|b| b.is_ascii_uppercase()) {
                    return bad(format!("--method {:?} is not an HTTP method", h.method));
                }
                check_mix(&h.mix).map_err(Error::Config)?;
            }
            Mode::Echo { size } => {
                if *size < ECHO_HEADER || *size > MAX_MESSAGE {
                    return bad(format!(
                        "--size must be between {ECHO_HEADER} and {MAX_MESSAGE} bytes"
                    ));
                }
            }
            Mode::Hold(h) => {
                if self.requests.is_some() {
                    return bad("hold runs for a --duration, not a number of --requests".into());
                }
                if self.rate.is_some() {
                    return bad("hold sends no requests: use --ping-interval, not --rate".into());
                }
                if h.ping_interval
                    .is_some_and(|p| p < Duration::from_millis(1))
                {
                    return bad("--ping-interval must be at least 1ms".into());
                }
            }
        }
        Ok(())
    }

    /// This process's share of the run, over every part's processes.
    pub(crate) fn share(&self) -> Share {
        self.worker
            .or(self.part)
            .unwrap_or(Share { of: 1, index: 0 })
    }

    /// Hosts (parts) the run is split over.
    pub fn parts(&self) -> usize {
        self.part.map_or(1, |p| p.of)
    }

    /// Connections this process opens.
    pub fn conns_in_process(&self, index: usize) -> usize {
        split(self.conns as u64, self.procs, index) as usize
    }

    /// Threads per process actually used: never more than a process's connections.
    pub fn effective_threads(&self) -> usize {
        self.threads
            .min((self.conns / (self.procs * self.parts())).max(1))
    }
}

/// What no mix may be: too many paths, a cycle too long, a weight of 0, a path twice, a path
/// that is not an origin-form request target.
fn check_mix(mix: &[PathWeight]) -> Result<(), String> {
    if mix.len() > MAX_MIX_PATHS {
        return Err(format!("--mix has more than {MAX_MIX_PATHS} paths"));
    }
    for (i, p) in mix.iter().enumerate() {
        if !p.path.starts_with('/') || p.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "--mix path {:?} must start with / and have no spaces or control characters",
                p.path
            ));
        }
        if p.weight == 0 {
            return Err(format!("--mix path {:?} has weight 0", p.path));
        }
        if mix[..i].iter().any(|q| q.path == p.path) {
            return Err(format!("--mix names {:?} twice", p.path));
        }
    }
    let total: u64 = mix.iter().map(|p| u64::from(p.weight)).sum();
    if total > MAX_MIX_CYCLE {
        return Err(format!(
            "--mix weights add up to {total}: at most {MAX_MIX_CYCLE} (weights are shares, \
             so 99,1 says what 9900,100 does)"
        ));
    }
    Ok(())
}

/// Item `index` of `total` split into `n` near-equal parts.
pub(crate) fn split(total: u64, n: usize, index: usize) -> u64 {
    let n = n as u64;
    total / n + u64::from((index as u64) < total % n)
}

/// The open-loop schedule's tick: see [`Config::schedule_tick`] and docs/loadgen.md.
pub fn default_schedule_tick() -> Duration {
    Duration::from_micros(DEFAULT_SCHEDULE_TICK_US)
}

/// One thread per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
