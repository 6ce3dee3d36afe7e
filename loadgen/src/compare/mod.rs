//! `loadgen compare`: every backend of the c10k server (and, with `--peers`, reference servers)
//! under the same load, measured so that the numbers are the server's and not loadgen's:
//!
//! 1. **Pinned cores.** The server runs on `--server-cpus`, loadgen on `--loadgen-cpus`
//!    (default: the first CPU for the server, the others for loadgen), set with sched_setaffinity.
//! 2. **Capacity.** Per backend and connection count, open-loop probes (double the rate, then
//!    bisect) find the highest rate the server keeps up with — achieved ≥ 99% of offered, p99
//!    from the intended send time within `--p99-bound`. A rate that fails while loadgen is
//!    saturated is loadgen's ceiling, reported as such and never as the server's capacity.
//! 3. **Cost at a common rate.** Every backend again at one rate below every capacity: server
//!    CPU µs per request, syscalls (apart from io_uring operations and completions) and latency.
//! 4. **Idle connections.** A fixed number of active connections at a fixed rate, plus 0, 1K,
//!    10K, 50K idle ones held by `loadgen hold`: what each idle connection costs the I/O model,
//!    with the descriptors it examined per request.
//!
//! A fresh server per step: its counters and memory are the step's own. The results go to a
//! Markdown report on stdout and, with `--out DIR`, to `results.md`, `results.json` and charts.

mod charts;
mod idle;
pub mod peers;
pub mod pin;
pub mod probe;
mod server;
mod table;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::parse::{parse_count, parse_duration, parse_rate};
use crate::Error;
use c10k::models::{BackendKind, BACKENDS};
use pin::{CpuMask, Placement};
use probe::{Bound, Probe, ProbeOpts, Search, SearchOpts, Target};
use server::{Server, Spec};

const DEFAULT_CONNS: &[u64] = &[100, 1000, 10000];
const QUICK_CONNS: &[u64] = &[100];
const DEFAULT_IDLE: &[u64] = &[0, 1000, 10000, 50000];
const QUICK_IDLE: &[u64] = &[0, 1000];
/// Descriptors a process keeps for itself (listener, stdio, epoll, /proc reads).
const SPARE_FDS: u64 = 64;
/// How long idle connections may take to open.
const HOLD_CONNECT_TIME: Duration = Duration::from_secs(60);
/// The common rate is this share of the smallest capacity: comfortably below every one.
const COMMON_SHARE: f64 = 0.5;

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// The c10k server binary [default: `c10k` next to this loadgen executable].
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// Backends to compare, comma-separated [default: every one this kernel supports].
    #[arg(long, value_delimiter = ',')]
    pub backends: Option<Vec<String>>,
    /// Worker processes of the server (`c10k serve --workers N`) [default: 1, or what the
    /// descriptor limit needs for the idle sweep].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Connection counts of the capacity search [default: 100,1000,10000; --quick: 100].
    #[arg(short = 'c', long, value_delimiter = ',', value_parser = parse_count)]
    pub conns: Option<Vec<u64>>,
    /// Measured time per probe, after the warmup [default: 1s; --quick: 0.3s].
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Time excluded at the start of each probe (plus 50 µs per connection, for connecting)
    /// [default: 0.5s; --quick: 0.1s].
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// The main question in under a minute: capacity and CPU per request at 100 connections,
    /// one idle-connection point.
    #[arg(long)]
    pub quick: bool,
    /// Write results.md, results.json and SVG charts into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// loadgen event-loop threads [default: one per loadgen CPU].
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// busy-poll spins over every connection: steps above this many connections are skipped.
    #[arg(long, default_value = "1000", value_parser = parse_count)]
    pub busy_poll_max: u64,
    /// CPUs of the server, e.g. `0` or `0-1` [default: the first CPU allowed].
    #[arg(long)]
    pub server_cpus: Option<String>,
    /// CPUs of loadgen [default: the other CPUs allowed].
    #[arg(long)]
    pub loadgen_cpus: Option<String>,
    /// Do not pin (the server and loadgen share every CPU).
    #[arg(long, conflicts_with_all = ["server_cpus", "loadgen_cpus"])]
    pub no_pin: bool,
    /// Latency bound of the capacity: p99 from the intended send time.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub p99_bound: Duration,
    /// First rate the search offers.
    #[arg(long, default_value = "2000", value_parser = parse_rate)]
    pub start_rate: f64,
    /// Highest rate the search offers.
    #[arg(long, default_value = "1M", value_parser = parse_rate)]
    pub max_rate: f64,
    /// Idle connections of the idle sweep [default: 0,1000,10000,50000; --quick: 0,1000]; 0
    /// alone, or an empty list, skips the sweep.
    #[arg(long, value_delimiter = ',', value_parser = parse_count)]
    pub idle: Option<Vec<u64>>,
    /// Active connections of the idle sweep.
    #[arg(long, default_value = "100", value_parser = parse_count)]
    pub active: u64,
    /// Offered rate of the idle sweep [default: the common rate at --active connections, else
    /// 5000].
    #[arg(long, value_parser = parse_rate)]
    pub idle_rate: Option<f64>,
    /// Also run the reference servers of benches/peers (those built, and nginx if installed).
    #[arg(long)]
    pub peers: bool,
    /// Where the peers are [default: benches/peers under the current directory or above this
    /// executable].
    #[arg(long)]
    pub peers_dir: Option<PathBuf>,
}

/// Everything a comparison found: results.json.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub version: u32,
    /// The command line, as typed.
    pub command: String,
    pub machine: Machine,
    pub settings: Settings,
    /// Backends and peers left out, and why.
    pub skipped: Vec<Skipped>,
    pub capacity: Vec<CapacityStep>,
    /// The rate every subject was measured at, per connection count.
    pub common_rates: Vec<CommonRate>,
    pub idle: Vec<IdleStep>,
    /// Wall time of the whole comparison, seconds.
    pub wall_s: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu: String,
    pub mem_total_kib: u64,
    /// UTC, ISO 8601, when the comparison started.
    pub date: String,
    /// /proc/loadavg at the start and at the end: the machine may be shared.
    pub loadavg_start: String,
    pub loadavg_end: String,
    /// Descriptors a process may have (hard limit).
    pub nofile: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub server: String,
    pub subjects: Vec<String>,
    pub conns: Vec<u64>,
    pub workers: Option<usize>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub loadgen_threads: usize,
    pub http_path: String,
    pub p99_bound_us: u64,
    pub achieved_share: f64,
    pub start_rate: f64,
    pub max_rate: f64,
    pub precision: f64,
    pub idle: Vec<u64>,
    pub active: u64,
    pub idle_rate: Option<f64>,
    pub quick: bool,
    pub pinning: Pinning,
}

/// Where the server and loadgen ran (CPU lists as Linux writes them; null: not pinned).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pinning {
    pub server_cpus: Option<String>,
    pub loadgen_cpus: Option<String>,
    /// What /proc said of loadgen after pinning (Cpus_allowed_list).
    pub loadgen_observed: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    pub subject: String,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skipped,
    Failed,
}

/// One subject's capacity at one connection count, and its cost at the common rate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CapacityStep {
    pub subject: String,
    pub conns: u64,
    pub status: Status,
    pub reason: Option<String>,
    pub notes: Vec<String>,
    /// The highest passing rate; the server's capacity only when `bound` is "server".
    pub capacity: Option<f64>,
    pub bound: Option<Bound>,
    /// The server's CPUs as /proc saw them while it ran.
    pub server_cpus_observed: Option<String>,
    pub search: Option<Search>,
    /// The probe at the common rate.
    pub at_common: Option<Probe>,
    /// Resident memory before any connection, KiB.
    pub rss_before_kib: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommonRate {
    pub conns: u64,
    pub rate: f64,
}

/// One subject with `idle` idle connections beside the active load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdleStep {
    pub subject: String,
    pub idle: u64,
    pub active: u64,
    pub rate: f64,
    pub status: Status,
    pub reason: Option<String>,
    pub notes: Vec<String>,
    pub workers: Option<usize>,
    pub probe: Option<Probe>,
    pub rss_before_kib: u64,
    /// (RSS with every connection open − RSS before any) / connections.
    pub rss_per_conn_kib: Option<f64>,
}

/// What runs as the server of a step: a c10k backend or a peer.
#[derive(Clone, Debug)]
enum Subject {
    Backend(&'static str),
    Peer(peers::Peer),
}

impl Subject {
    fn name(&self) -> String {
        match self {
            Subject::Backend(b) => b.to_string(),
            Subject::Peer(p) => format!("peer:{}", p.name),
        }
    }
}

struct Plan {
    exe: PathBuf,
    subjects: Vec<Subject>,
    skipped: Vec<Skipped>,
    conns: Vec<u64>,
    idle: Vec<u64>,
    probe: ProbeOpts,
    search: SearchOpts,
    placement: Placement,
    threads: usize,
}

fn backends(a: &CompareArgs, skipped: &mut Vec<Skipped>) -> Result<Vec<&'static str>, Error> {
    let valid: Vec<&str> = BACKENDS.iter().map(|b| b.name).collect();
    let names: Vec<&'static str> = match &a.backends {
        Some(list) => {
            let mut out = Vec::new();
            for name in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
                let kind = BackendKind::from_name(name).ok_or_else(|| {
                    Error::Config(format!(
                        "unknown backend {name:?} (valid: {})",
                        valid.join(", ")
                    ))
                })?;
                if !out.contains(&kind.name()) {
                    out.push(kind.name());
                }
            }
            out
        }
        None => valid,
    };
    // Only what this kernel supports; the others are listed with the reason.
    Ok(names
        .into_iter()
        .filter(|name| {
            let kind = BackendKind::from_name(name).expect("a known name");
            match kind.probe() {
                Ok(()) => true,
                Err(reason) => {
                    skipped.push(Skipped {
                        subject: name.to_string(),
                        reason,
                    });
                    false
                }
            }
        })
        .collect())
}

fn placement(a: &CompareArgs) -> Result<Placement, Error> {
    let allowed = pin::allowed_cpus();
    if a.no_pin {
        return Ok(Placement {
            server: None,
            loadgen: None,
        });
    }
    let parse = |s: &Option<String>, who: &str| -> Result<Option<Vec<usize>>, Error> {
        s.as_deref()
            .map(pin::parse_cpus)
            .transpose()
            .map_err(|e| Error::Config(format!("{who}: {e}")))
    };
    let mut p = pin::default_placement(&allowed);
    let server = parse(&a.server_cpus, "--server-cpus")?;
    let loadgen = parse(&a.loadgen_cpus, "--loadgen-cpus")?;
    match (server, loadgen) {
        (Some(s), Some(l)) => {
            p = Placement {
                server: Some(s),
                loadgen: Some(l),
            }
        }
        (Some(s), None) => {
            let rest: Vec<usize> = allowed.iter().copied().filter(|c| !s.contains(c)).collect();
            p = Placement {
                loadgen: (!rest.is_empty()).then_some(rest),
                server: Some(s),
            };
        }
        (None, Some(l)) => {
            let rest: Vec<usize> = allowed.iter().copied().filter(|c| !l.contains(c)).collect();
            p = Placement {
                server: (!rest.is_empty()).then_some(rest),
                loadgen: Some(l),
            };
        }
        (None, None) => {}
    }
    pin::check_placement(&p, &allowed).map_err(Error::Config)?;
    Ok(p)
}

fn plan(a: &CompareArgs) -> Result<Plan, Error> {
    let mut skipped = Vec::new();
    let mut subjects: Vec<Subject> = backends(a, &mut skipped)?
        .into_iter()
        .map(Subject::Backend)
        .collect();
    if a.peers {
        let (found, missing) = peers::discover(a.peers_dir.as_deref());
        subjects.extend(found.into_iter().map(Subject::Peer));
        skipped.extend(
            missing
                .into_iter()
                .map(|(subject, reason)| Skipped { subject, reason }),
        );
    }
    if subjects.is_empty() {
        return Err(Error::Config(format!(
            "nothing to compare (valid backends: {})",
            BACKENDS
                .iter()
                .map(|b| b.name)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut conns = a
        .conns
        .clone()
        .unwrap_or_else(|| if a.quick { QUICK_CONNS } else { DEFAULT_CONNS }.to_vec());
    conns.sort_unstable();
    conns.dedup();
    if conns.first() == Some(&0) {
        return Err(Error::Config("--conns must be at least 1".into()));
    }
    let mut idle = a
        .idle
        .clone()
        .unwrap_or_else(|| if a.quick { QUICK_IDLE } else { DEFAULT_IDLE }.to_vec());
    idle.sort_unstable();
    idle.dedup();
    if idle == [0] {
        idle.clear();
    }
    if a.active == 0 {
        return Err(Error::Config("--active must be at least 1".into()));
    }
    if a.workers == Some(0) {
        return Err(Error::Config("--workers must be at least 1".into()));
    }
    let duration = a.duration.unwrap_or(if a.quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(1)
    });
    let warmup = a.warmup.unwrap_or(if a.quick {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(500)
    });
    if duration < Duration::from_millis(10) {
        return Err(Error::Config("--duration must be at least 10ms".into()));
    }
    if a.max_rate < a.start_rate {
        return Err(Error::Config("--max-rate is below --start-rate".into()));
    }
    let placement = placement(a)?;
    let threads = match a.threads {
        Some(0) => return Err(Error::Config("--threads must be at least 1".into())),
        Some(t) => t,
        None => placement
            .loadgen
            .as_ref()
            .map_or(1, |l| l.len().clamp(1, 16)),
    };
    let exe = match &a.server {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| Error::Config(format!("cannot find this executable: {e}")))?
            .with_file_name("c10k"),
    };
    if !exe.is_file() && subjects.iter().any(|s| matches!(s, Subject::Backend(_))) {
        return Err(Error::Config(format!(
            "the c10k server binary {} is missing: build it: cargo build --release (or give --server PATH)",
            exe.display()
        )));
    }
    Ok(Plan {
        exe,
        subjects,
        skipped,
        conns,
        idle,
        probe: ProbeOpts {
            conns: 0,
            duration,
            warmup,
            threads,
            p99_bound: a.p99_bound,
            path: "/plaintext".into(),
        },
        search: SearchOpts {
            start_rate: a.start_rate,
            min_rate: 100.0_f64.min(a.start_rate),
            max_rate: a.max_rate,
            precision: if a.quick { 0.15 } else { 0.05 },
            max_probes: if a.quick { 8 } else { 14 },
        },
        placement,
        threads,
    })
}

/// Runs the comparison; the exit code of `loadgen compare`.
pub fn main(a: &CompareArgs) -> Result<ExitCode, Error> {
    let started = Instant::now();
    let p = plan(a)?;
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
    }
    // Raise the descriptor limit once: the servers inherit it.
    let limits = crate::preflight::limits();
    c10k::sys::ignore_sigpipe().map_err(|e| Error::Io(e.to_string()))?;
    // loadgen's threads and hold processes start from this thread and inherit its CPUs.
    if let Some(cpus) = &p.placement.loadgen {
        CpuMask::new(cpus)
            .apply_to_this_thread()
            .map_err(|e| Error::Io(format!("cannot pin loadgen to CPUs {cpus:?}: {e}")))?;
    }
    let pinning = Pinning {
        server_cpus: p.placement.server.as_deref().map(pin::format_cpus),
        loadgen_cpus: p.placement.loadgen.as_deref().map(pin::format_cpus),
        loadgen_observed: pin::observed_cpus(gettid()).map(|c| pin::format_cpus(&c)),
    };
    let mut results = Results {
        version: 2,
        command: command_line(),
        machine: machine(limits.nofile),
        settings: Settings {
            server: p.exe.display().to_string(),
            subjects: p.subjects.iter().map(Subject::name).collect(),
            conns: p.conns.clone(),
            workers: a.workers,
            duration_s: p.probe.duration.as_secs_f64(),
            warmup_s: p.probe.warmup.as_secs_f64(),
            loadgen_threads: p.threads,
            http_path: p.probe.path.clone(),
            p99_bound_us: p.probe.p99_bound.as_micros() as u64,
            achieved_share: probe::ACHIEVED_SHARE,
            start_rate: p.search.start_rate,
            max_rate: p.search.max_rate,
            precision: p.search.precision,
            idle: p.idle.clone(),
            active: a.active,
            idle_rate: a.idle_rate,
            quick: a.quick,
            pinning,
        },
        skipped: p.skipped.clone(),
        capacity: Vec::new(),
        common_rates: Vec::new(),
        idle: Vec::new(),
        wall_s: 0.0,
    };
    for s in &p.skipped {
        eprintln!("compare: skipping {}: {}", s.subject, s.reason);
    }
    eprintln!(
        "compare: server on CPUs {}, loadgen on CPUs {} ({} thread{})",
        results
            .settings
            .pinning
            .server_cpus
            .as_deref()
            .unwrap_or("any"),
        results
            .settings
            .pinning
            .loadgen_cpus
            .as_deref()
            .unwrap_or("any"),
        p.threads,
        if p.threads == 1 { "" } else { "s" }
    );
    let runner = Runner { p: &p, a, limits };
    for &conns in &p.conns {
        let mut steps: Vec<CapacityStep> = Vec::new();
        for subject in &p.subjects {
            let t0 = Instant::now();
            let step = runner.capacity(subject, conns);
            eprintln!(
                "capacity {} {conns} conns: {} ({:.1} s)",
                step.subject,
                describe_capacity(&step),
                t0.elapsed().as_secs_f64()
            );
            steps.push(step);
        }
        if let Some(rate) = common_rate(&steps) {
            results.common_rates.push(CommonRate { conns, rate });
            for (step, subject) in steps.iter_mut().zip(&p.subjects) {
                if step.status != Status::Ok {
                    continue;
                }
                match runner.at_rate(subject, conns, rate) {
                    Ok(probe) => {
                        eprintln!(
                            "  at {rate:.0} req/s: {} {}",
                            step.subject,
                            describe_probe(&probe)
                        );
                        step.at_common = Some(probe);
                    }
                    Err(e) => step.notes.push(format!("at the common rate: {e}")),
                }
            }
        }
        results.capacity.extend(steps);
    }
    if !p.idle.is_empty() {
        let rate = a
            .idle_rate
            .or_else(|| {
                results
                    .common_rates
                    .iter()
                    .find(|c| c.conns == a.active)
                    .map(|c| c.rate)
            })
            .unwrap_or(5000.0);
        results.settings.idle_rate = Some(rate);
        for subject in &p.subjects {
            for &idle in &p.idle {
                let t0 = Instant::now();
                let step = runner.idle(subject, idle, a.active, rate);
                eprintln!(
                    "idle {} {idle} idle + {} active at {rate:.0} req/s: {} ({:.1} s)",
                    step.subject,
                    a.active,
                    match (&step.probe, step.status) {
                        (Some(pr), _) => describe_probe(pr),
                        (None, _) => format!(
                            "{:?}: {}",
                            step.status,
                            step.reason.as_deref().unwrap_or("")
                        ),
                    },
                    t0.elapsed().as_secs_f64()
                );
                results.idle.push(step);
            }
        }
    }
    results.machine.loadavg_end = loadavg();
    results.wall_s = started.elapsed().as_secs_f64();
    let report = table::markdown(&results);
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(report.as_bytes());
        let _ = out.flush();
    }
    if let Some(dir) = &a.out {
        write_outputs(dir, &results)?;
    }
    eprintln!(
        "compare: done in {:.1} s{}",
        started.elapsed().as_secs_f64(),
        a.out
            .as_ref()
            .map(|d| format!("; results in {}", d.display()))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

fn gettid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}

/// Half the smallest capacity (or loadgen-set lower bound), to two significant digits.
/// Teaching backends (busy-poll burns its core by design) are measured at that rate but do not
/// set it.
fn common_rate(steps: &[CapacityStep]) -> Option<f64> {
    let teaching = |name: &str| BACKENDS.iter().any(|b| b.name == name && b.teaching);
    let min = steps
        .iter()
        .filter(|s| s.status == Status::Ok && !teaching(&s.subject))
        .filter_map(|s| s.capacity)
        .fold(f64::INFINITY, f64::min);
    if !min.is_finite() {
        return None;
    }
    Some(two_digits(min * COMMON_SHARE).max(1.0))
}

/// 12,345 → 12,000: round down to two significant digits.
fn two_digits(v: f64) -> f64 {
    if v < 100.0 {
        return v.floor();
    }
    let scale = 10f64.powi(v.log10().floor() as i32 - 1);
    (v / scale).floor() * scale
}

fn describe_capacity(s: &CapacityStep) -> String {
    match (s.status, s.bound, s.capacity) {
        (Status::Ok, Some(Bound::Server), Some(c)) => format!("capacity {c:.0} req/s"),
        (Status::Ok, Some(Bound::Loadgen), Some(c)) => {
            format!("≥ {c:.0} req/s: loadgen's CPU is the limit, not the server")
        }
        (Status::Ok, Some(Bound::MaxRate), Some(c)) => {
            format!("≥ {c:.0} req/s (the search's maximum)")
        }
        (Status::Ok, _, _) => "no rate passed".into(),
        (st, _, _) => format!("{st:?}: {}", s.reason.as_deref().unwrap_or("")),
    }
}

fn describe_probe(p: &Probe) -> String {
    let server = p.server.as_ref();
    format!(
        "{:.0}/{:.0} req/s, p99 {} µs, server {} µs CPU/req, {} syscalls/req, {} examined/req{}",
        p.achieved_rate,
        p.target_rate,
        p.p99_us,
        server.map_or("?".into(), |s| format!("{:.1}", s.cpu_us_per_req)),
        server
            .and_then(|s| s.syscalls_per_req)
            .map_or("?".into(), |v| format!("{v:.2}")),
        server
            .and_then(|s| s.examined_per_req)
            .map_or("?".into(), |v| format!("{v:.1}")),
        if p.loadgen_bound {
            " (loadgen-bound)"
        } else {
            ""
        }
    )
}

struct Runner<'a> {
    p: &'a Plan,
    a: &'a CompareArgs,
    limits: crate::preflight::Limits,
}

/// A started subject, and what is known about it.
struct Started {
    server: Server,
    target: Target,
    rss_before: u64,
    cpus_observed: Option<String>,
}

impl Runner<'_> {
    /// Why `subject` cannot serve `conns` connections, by design or on this machine.
    fn cannot(&self, subject: &Subject, conns: u64, workers: Option<usize>) -> Option<String> {
        if let Subject::Backend(backend) = subject {
            if *backend == "busy-poll" && conns > self.a.busy_poll_max {
                return Some(format!(
                    "busy-poll is a teaching backend that tries every connection in turn: skipped above {} conns",
                    self.a.busy_poll_max
                ));
            }
        }
        let per_process = conns / workers.unwrap_or(1) as u64 + SPARE_FDS;
        if per_process > self.limits.nofile {
            return Some(format!(
                "needs {per_process} descriptors per server process; the limit is {} (give --workers)",
                self.limits.nofile
            ));
        }
        None
    }

    fn start(
        &self,
        subject: &Subject,
        workers: Option<usize>,
        life: Duration,
    ) -> Result<Started, String> {
        let cpus = self.p.placement.server.as_deref().map(CpuMask::new);
        let server = match subject {
            Subject::Backend(backend) => Server::start(&Spec {
                exe: &self.p.exe,
                backend,
                proto: "http",
                workers,
                idle_timeout_s: life.as_secs() + 60,
                cpus,
            })?,
            Subject::Peer(peer) => Server::start_command(peer.command(), cpus)?,
        };
        // Every backend's loop answers `/stats` (the pool's too: its event loop owns the
        // sockets, its workers only run requests).
        let ask_stats = matches!(subject, Subject::Backend(_));
        let pid = server.pid;
        Ok(Started {
            target: Target {
                addr: server.addr,
                pid: Some(pid),
                ask_stats,
            },
            rss_before: server::status_kib(&server::process_tree(pid), "VmRSS"),
            cpus_observed: pin::observed_cpus(pid).map(|c| pin::format_cpus(&c)),
            server,
        })
    }

    fn probe_opts(&self, conns: u64) -> ProbeOpts {
        ProbeOpts {
            conns,
            ..self.p.probe.clone()
        }
    }

    fn capacity(&self, subject: &Subject, conns: u64) -> CapacityStep {
        let mut step = CapacityStep {
            subject: subject.name(),
            conns,
            status: Status::Ok,
            reason: None,
            notes: Vec::new(),
            capacity: None,
            bound: None,
            server_cpus_observed: None,
            search: None,
            at_common: None,
            rss_before_kib: 0,
        };
        if let Some(why) = self.cannot(subject, conns, self.a.workers) {
            step.status = Status::Skipped;
            step.reason = Some(why);
            return step;
        }
        let opts = self.probe_opts(conns);
        let per_probe = opts.duration + opts.warmup + Duration::from_secs(6);
        let life = per_probe * self.p.search.max_probes as u32;
        let mut started = match self.start(subject, self.a.workers, life) {
            Ok(s) => s,
            Err(e) => {
                step.status = Status::Failed;
                step.reason = Some(e);
                return step;
            }
        };
        step.rss_before_kib = started.rss_before;
        step.server_cpus_observed = started.cpus_observed.clone();
        let target = started.target;
        let result = probe::search(&self.p.search, &mut |rate| {
            let p = probe::run(target, &opts, rate).map_err(|e| e.to_string())?;
            // A server that died fails every later probe: stop here.
            started.server.check_alive()?;
            Ok(p)
        });
        let stopped = started.server.stop();
        if let Some(note) = server_exit_note(&stopped) {
            step.notes.push(note);
        }
        match result {
            Ok(search) => {
                step.capacity = search.capacity;
                step.bound = Some(search.bound);
                if search.bound == Bound::Loadgen {
                    step.notes.push(format!(
                        "loadgen-bound: its event loop{} saturated at the lowest failing rate; give it more CPUs (--loadgen-cpus) or another host",
                        if self.p.threads > 1 { "s were" } else { " was" }
                    ));
                }
                step.search = Some(search);
            }
            Err(e) => {
                step.status = Status::Failed;
                step.reason = Some(e);
            }
        }
        step
    }

    /// One probe of `subject` at `rate` on a fresh server (twice the search's probe length).
    fn at_rate(&self, subject: &Subject, conns: u64, rate: f64) -> Result<Probe, String> {
        let mut opts = self.probe_opts(conns);
        opts.duration *= 2;
        let life = opts.duration + opts.warmup + Duration::from_secs(10);
        let mut started = self.start(subject, self.a.workers, life)?;
        let result = probe::run(started.target, &opts, rate).map_err(|e| e.to_string());
        let alive = started.server.check_alive();
        started.server.stop();
        alive?;
        result
    }

    fn idle(&self, subject: &Subject, idle: u64, active: u64, rate: f64) -> IdleStep {
        let mut step = IdleStep {
            subject: subject.name(),
            idle,
            active,
            rate,
            status: Status::Ok,
            reason: None,
            notes: Vec::new(),
            workers: self.a.workers,
            probe: None,
            rss_before_kib: 0,
            rss_per_conn_kib: None,
        };
        let total = idle + active;
        // Beyond one process's descriptors, c10k backends spread over --workers.
        let fit = self.limits.nofile.saturating_sub(SPARE_FDS).max(1);
        if step.workers.is_none() && total > fit && matches!(subject, Subject::Backend(_)) {
            step.workers = Some(total.div_ceil(fit) as usize);
        }
        if let Some(why) = self.cannot(subject, total, step.workers) {
            step.status = Status::Skipped;
            step.reason = Some(why);
            return step;
        }
        let opts = self.probe_opts(active);
        let life = HOLD_CONNECT_TIME + opts.duration * 2 + opts.warmup + Duration::from_secs(10);
        let mut started = match self.start(subject, step.workers, life) {
            Ok(s) => s,
            Err(e) => {
                step.status = Status::Failed;
                step.reason = Some(e);
                return step;
            }
        };
        step.rss_before_kib = started.rss_before;
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("loadgen"));
        let hold = if idle > 0 {
            let procs = idle.div_ceil(fit) as usize;
            match idle::Hold::start(
                &exe,
                started.target.addr,
                idle,
                procs,
                life,
                HOLD_CONNECT_TIME,
            ) {
                Ok(h) => Some(h),
                Err(e) => {
                    started.server.stop();
                    step.status = Status::Failed;
                    step.reason = Some(e);
                    return step;
                }
            }
        } else {
            None
        };
        let mut opts = opts;
        opts.duration *= 2;
        let result = probe::run(started.target, &opts, rate);
        let alive = started.server.check_alive();
        if let Some(h) = hold {
            h.stop();
        }
        let stopped = started.server.stop();
        if let Some(note) = server_exit_note(&stopped) {
            step.notes.push(note);
        }
        match (result, alive) {
            (Ok(probe), Ok(())) => {
                if let Some(s) = &probe.server {
                    step.rss_per_conn_kib =
                        Some(s.rss_kib.saturating_sub(step.rss_before_kib) as f64 / total as f64);
                }
                if probe.loadgen_bound {
                    step.notes
                        .push("loadgen-bound: this row may measure loadgen".into());
                }
                step.probe = Some(probe);
            }
            (Err(e), _) => {
                step.status = Status::Failed;
                step.reason = Some(format!("loadgen: {e}"));
            }
            (_, Err(e)) => {
                step.status = Status::Failed;
                step.reason = Some(e);
            }
        }
        step
    }
}

fn server_exit_note(s: &server::Stopped) -> Option<String> {
    use std::os::unix::process::ExitStatusExt as _;
    // A clean exit, or the default action of the SIGTERM that stopped it (the peers).
    if s.status
        .is_some_and(|s| s.success() || s.signal() == Some(libc::SIGTERM))
    {
        return None;
    }
    Some(format!(
        "server exit: {}{}",
        server::describe(s.status),
        s.tail
            .last()
            .map(|l| format!(" ({})", l.trim()))
            .unwrap_or_default()
    ))
}

fn write_outputs(dir: &Path, results: &Results) -> Result<(), Error> {
    let file_err = |p: &Path, e: String| Error::Io(format!("cannot write {}: {e}", p.display()));
    let charts = charts::write_all(results, dir)?;
    let md = dir.join("results.md");
    std::fs::write(&md, table::document(results, &charts))
        .map_err(|e| file_err(&md, e.to_string()))?;
    let json = dir.join("results.json");
    let text = serde_json::to_string_pretty(results).map_err(|e| file_err(&json, e.to_string()))?;
    std::fs::write(&json, text + "\n").map_err(|e| file_err(&json, e.to_string()))?;
    Ok(())
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn loadavg() -> String {
    read_trim("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine(nofile: u64) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let mem_total_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    Machine {
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        cpu,
        mem_total_kib,
        date: utc_now(),
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
        nofile,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The command line as typed, quoted where needed.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_rate_is_below_every_capacity() {
        assert_eq!(two_digits(12_345.0), 12_000.0);
        assert_eq!(two_digits(987.0), 980.0);
        let step = |c: f64| CapacityStep {
            subject: "x".into(),
            conns: 100,
            status: Status::Ok,
            reason: None,
            notes: Vec::new(),
            capacity: Some(c),
            bound: Some(Bound::Server),
            server_cpus_observed: None,
            search: None,
            at_common: None,
            rss_before_kib: 0,
        };
        assert_eq!(common_rate(&[step(30_000.0), step(9_100.0)]), Some(4_500.0));
        assert_eq!(common_rate(&[]), None);
    }
}
