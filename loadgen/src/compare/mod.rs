//! `loadgen compare`: every backend of the c10k server side by side. For each backend, protocol
//! and connection count a fresh server is started (so that its counters and memory are the
//! step's own), driven in this process by the loadgen library (closed loop), measured from the
//! outside (/proc: CPU time, resident memory) and from the inside (`/stats`, or the summary lines
//! it logs at exit: syscalls), and stopped. The results go to a Markdown table on stdout and,
//! with `--out DIR`, to `results.md`, `results.json` and SVG charts.

mod charts;
mod server;
mod table;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::cli::{parse_count, parse_duration};
use crate::config::{Config, HttpOpts, Mode};
use crate::report::{Histograms, Report};
use crate::{Error, Snapshot};
use c10k::backend::{BackendKind, BACKENDS};
use server::{Server, Spec};

/// Bytes per echo message.
pub const ECHO_SIZE: usize = 64;
const DEFAULT_CONNS: &[u64] = &[10, 100, 1000, 10000];
const QUICK_CONNS: &[u64] = &[10, 1000];
const PROTOS: &[&str] = &["http", "echo"];
/// The pool backend's queue, per thread (c10k::driver::pool::QUEUE_PER_THREAD).
const POOL_QUEUE_PER_THREAD: usize = c10k::driver::pool::QUEUE_PER_THREAD;

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// The c10k server binary [default: `c10k` next to this loadgen executable].
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// Backends to compare, comma-separated [default: every one this kernel supports].
    #[arg(long, value_delimiter = ',')]
    pub backends: Option<Vec<String>>,
    /// Worker processes of the server (`c10k serve --workers N`).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Connection counts, one step each [default: 10,100,1000,10000; --quick: 10,1000].
    #[arg(short = 'c', long, value_delimiter = ',', value_parser = parse_count)]
    pub conns: Option<Vec<u64>>,
    /// Protocols: http (GET /plaintext), echo (64-byte messages) [default: http,echo].
    #[arg(long, value_delimiter = ',')]
    pub protos: Option<Vec<String>>,
    /// Measured time per step, after the warmup [default: 5s; --quick: 0.8s].
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Time excluded at the start of each step [default: 2s; --quick: 0.25s].
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// The whole comparison in well under a minute: conns 10,1000, short steps.
    #[arg(long)]
    pub quick: bool,
    /// Write results.md, results.json and SVG charts into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// loadgen event-loop threads (the server needs the other cores).
    #[arg(short = 't', long, default_value = "1")]
    pub threads: usize,
    /// busy-poll spins over every connection: steps above this many connections are skipped.
    #[arg(long, default_value = "1000", value_parser = parse_count)]
    pub busy_poll_max: u64,
}

/// Everything a comparison found: results.json.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub version: u32,
    /// The command line, as typed.
    pub command: String,
    pub machine: Machine,
    pub settings: Settings,
    /// Backends left out, and why (not supported by this kernel).
    pub skipped_backends: Vec<SkippedBackend>,
    pub steps: Vec<Step>,
    /// Wall time of the whole comparison, seconds.
    pub wall_s: f64,
    /// The run was stopped by a signal before its end.
    pub interrupted: bool,
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
    pub backends: Vec<String>,
    pub protos: Vec<String>,
    pub conns: Vec<u64>,
    pub workers: Option<usize>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub loadgen_threads: usize,
    pub echo_size: usize,
    pub http_path: String,
    pub quick: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SkippedBackend {
    pub backend: String,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skipped,
    Failed,
}

/// One (backend, protocol, connections) step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    pub backend: String,
    pub proto: String,
    pub conns: u64,
    pub status: Status,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// What to know when reading the numbers (503s, queued connections, errors).
    pub notes: Vec<String>,
    pub metrics: Option<Metrics>,
    /// loadgen's full report of the step (histograms left out).
    pub report: Option<Report>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Metrics {
    pub req_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p99_9_us: u64,
    pub connect_p99_us: u64,
    /// Failed connects, timeouts, aborted requests, protocol errors, corrupted echoes and
    /// non-2xx responses.
    pub errors: u64,
    /// Connections open at the end of the step.
    pub conns_held: u64,
    /// Server CPU (user + system, all its processes and threads) over the measured window.
    pub server_cpu_pct: f64,
    pub server_cpu_us_per_req: f64,
    pub server_cpu_window_s: f64,
    /// CPU time of everything but the server over the same window (loadgen included), as a
    /// percentage of one core: with one loadgen thread, much more than 100 means other work
    /// shared the machine.
    pub other_cpu_pct: f64,
    /// Resident memory of the server's processes once ready, before any connection.
    pub rss_before_kib: u64,
    /// Sum of the processes' peak resident memory (VmHWM) at the end of the step.
    pub rss_peak_kib: u64,
    /// (peak - before) / connections held.
    pub rss_per_conn_kib: Option<f64>,
    /// Server syscalls (waits, ctl, reads, writes, accepts, signals, overflow scans) per request
    /// (echo: per 64-byte message).
    pub syscalls_per_req: Option<f64>,
    /// The same by kind.
    pub syscalls_by_kind_per_req: std::collections::BTreeMap<String, f64>,
    /// "stats-window": `/stats` deltas over the measured window; "exit-summary": the counters
    /// the server logged at exit, over its whole life (warmup and connection set-up included).
    pub syscalls_source: String,
    /// Requests (echo: messages) the server counted, over what syscalls_per_req divides by.
    pub server_requests: u64,
}

const SYSCALL_KINDS: &[&str] = &[
    "waits",
    "ctl",
    "reads",
    "writes",
    "accepts",
    "signals",
    "overflow_scans",
];

/// How long `/stats` may take to answer a loaded server.
const STATS_TIMEOUT: Duration = Duration::from_secs(1);

/// The server at one moment.
struct Sample {
    at: Instant,
    cpu_us: u64,
    /// CPU time of everything else on the machine: all cores' busy time minus the server's
    /// and this process's.
    busy_us: u64,
    stats: Option<serde_json::Value>,
}

struct Plan {
    exe: PathBuf,
    backends: Vec<&'static str>,
    skipped: Vec<SkippedBackend>,
    protos: Vec<String>,
    conns: Vec<u64>,
    duration: Duration,
    warmup: Duration,
}

fn plan(a: &CompareArgs) -> Result<Plan, Error> {
    let valid: Vec<&str> = BACKENDS.iter().map(|b| b.name).collect();
    let mut skipped = Vec::new();
    let backends: Vec<&'static str> = match &a.backends {
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
            if out.is_empty() {
                return Err(Error::Config(format!(
                    "--backends is empty (valid: {})",
                    valid.join(", ")
                )));
            }
            out
        }
        None => BACKENDS.iter().map(|b| b.name).collect(),
    };
    // Only what this kernel supports; the others are listed with the reason.
    let backends = backends
        .into_iter()
        .filter(|name| {
            let kind = BackendKind::from_name(name).expect("a known name");
            match kind.probe() {
                Ok(()) => true,
                Err(reason) => {
                    skipped.push(SkippedBackend {
                        backend: name.to_string(),
                        reason,
                    });
                    false
                }
            }
        })
        .collect();
    let protos = match &a.protos {
        Some(p) => {
            let mut out: Vec<String> = Vec::new();
            for p in p.iter().map(|s| s.trim().to_ascii_lowercase()) {
                if !PROTOS.contains(&p.as_str()) {
                    return Err(Error::Config(format!(
                        "unknown protocol {p:?} (valid: http, echo)"
                    )));
                }
                if !out.contains(&p) {
                    out.push(p);
                }
            }
            out
        }
        None => PROTOS.iter().map(|s| s.to_string()).collect(),
    };
    let mut conns = a
        .conns
        .clone()
        .unwrap_or_else(|| if a.quick { QUICK_CONNS } else { DEFAULT_CONNS }.to_vec());
    conns.sort_unstable();
    conns.dedup();
    if conns.is_empty() || conns[0] == 0 {
        return Err(Error::Config("--conns must be at least 1".into()));
    }
    if a.threads == 0 {
        return Err(Error::Config("--threads must be at least 1".into()));
    }
    if a.workers == Some(0) {
        return Err(Error::Config("--workers must be at least 1".into()));
    }
    let duration = a.duration.unwrap_or(if a.quick {
        Duration::from_millis(800)
    } else {
        Duration::from_secs(5)
    });
    let warmup = a.warmup.unwrap_or(if a.quick {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(2)
    });
    if duration.is_zero() {
        return Err(Error::Config("--duration must be positive".into()));
    }
    let exe = match &a.server {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| Error::Config(format!("cannot find this executable: {e}")))?
            .with_file_name("c10k"),
    };
    if !exe.is_file() {
        return Err(Error::Config(format!(
            "the c10k server binary {} is missing: build it: cargo build --release (or give --server PATH)",
            exe.display()
        )));
    }
    Ok(Plan {
        exe,
        backends,
        skipped,
        protos,
        conns,
        duration,
        warmup,
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
    let machine = machine(limits.nofile);
    let settings = Settings {
        server: p.exe.display().to_string(),
        backends: p.backends.iter().map(|s| s.to_string()).collect(),
        protos: p.protos.clone(),
        conns: p.conns.clone(),
        workers: a.workers,
        duration_s: p.duration.as_secs_f64(),
        warmup_s: p.warmup.as_secs_f64(),
        loadgen_threads: a.threads,
        echo_size: ECHO_SIZE,
        http_path: "/plaintext".into(),
        quick: a.quick,
    };
    for s in &p.skipped {
        eprintln!("compare: skipping {}: {}", s.backend, s.reason);
    }
    let total = p.backends.len() * p.protos.len() * p.conns.len();
    let mut steps = Vec::new();
    let mut interrupted = false;
    let mut n = 0;
    'sweep: for &backend in &p.backends {
        for proto in &p.protos {
            for &conns in &p.conns {
                n += 1;
                let t0 = Instant::now();
                let mut step = run_step(&p, a, limits, backend, proto, conns);
                let stop = step
                    .report
                    .as_ref()
                    .is_some_and(|r| r.loadgen.counters.interrupted_threads > 0);
                if stop {
                    step.status = Status::Failed;
                    step.reason = Some("interrupted by a signal".into());
                }
                eprintln!(
                    "[{n}/{total}] {} ({:.1} s)",
                    progress(&step),
                    t0.elapsed().as_secs_f64()
                );
                steps.push(step);
                if stop {
                    interrupted = true;
                    eprintln!("compare: interrupted; the results so far follow");
                    break 'sweep;
                }
            }
        }
    }
    let mut results = Results {
        version: 1,
        command: command_line(),
        machine,
        settings,
        skipped_backends: p.skipped,
        steps,
        wall_s: 0.0,
        interrupted,
    };
    results.machine.loadavg_end = loadavg();
    results.wall_s = started.elapsed().as_secs_f64();
    let table = table::markdown(&results);
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(table.as_bytes());
        let _ = out.flush();
    }
    if let Some(dir) = &a.out {
        write_outputs(dir, &mut results)?;
    }
    let wall = started.elapsed().as_secs_f64();
    eprintln!(
        "compare: {} steps in {:.1} s{}",
        results.steps.len(),
        wall,
        a.out
            .as_ref()
            .map(|d| format!("; results in {}", d.display()))
            .unwrap_or_default()
    );
    Ok(if interrupted {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn write_outputs(dir: &Path, results: &mut Results) -> Result<(), Error> {
    let file_err = |p: &Path, e: String| Error::Io(format!("cannot write {}: {e}", p.display()));
    let charts = charts::write_all(results, dir)?;
    results.wall_s = results.wall_s.max(0.0);
    let md = dir.join("results.md");
    std::fs::write(&md, table::document(results, &charts))
        .map_err(|e| file_err(&md, e.to_string()))?;
    let json = dir.join("results.json");
    let text = serde_json::to_string_pretty(results).map_err(|e| file_err(&json, e.to_string()))?;
    std::fs::write(&json, text + "\n").map_err(|e| file_err(&json, e.to_string()))?;
    Ok(())
}

fn progress(s: &Step) -> String {
    let head = format!("{} {} {} conns", s.backend, s.proto, s.conns);
    match (s.status, &s.metrics) {
        (Status::Ok, Some(m)) => format!(
            "{head}: {:.0} req/s, p99 {} µs, server CPU {:.0}%, {} syscalls/req{}",
            m.req_per_s,
            m.p99_us,
            m.server_cpu_pct,
            m.syscalls_per_req
                .map_or("?".to_string(), |v| format!("{v:.2}")),
            if s.notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.notes.join("; "))
            }
        ),
        (Status::Skipped, _) => format!("{head}: skipped: {}", s.reason.as_deref().unwrap_or("")),
        _ => format!("{head}: FAILED: {}", s.reason.as_deref().unwrap_or("")),
    }
}

fn empty_step(backend: &str, proto: &str, conns: u64) -> Step {
    Step {
        backend: backend.to_string(),
        proto: proto.to_string(),
        conns,
        status: Status::Ok,
        reason: None,
        notes: Vec::new(),
        metrics: None,
        report: None,
    }
}

fn pool_threads(workers: Option<usize>) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    2 * cores * workers.unwrap_or(1)
}

fn loadgen_config(proto: &str, target: SocketAddr, conns: u64, p: &Plan, threads: usize) -> Config {
    let mode = if proto == "http" {
        Mode::Http(HttpOpts {
            host: target.to_string(),
            path: "/plaintext".into(),
            method: "GET".into(),
            body_size: 0,
            keepalive: true,
        })
    } else {
        Mode::Echo { size: ECHO_SIZE }
    };
    let mut cfg = Config::new(mode, target, conns as usize);
    cfg.threads = threads;
    cfg.duration = Some(p.duration);
    cfg.warmup = p.warmup;
    cfg
}

fn run_step(
    p: &Plan,
    a: &CompareArgs,
    limits: crate::preflight::Limits,
    backend: &str,
    proto: &str,
    conns: u64,
) -> Step {
    let mut step = empty_step(backend, proto, conns);
    let skip = |mut step: Step, why: String| {
        step.status = Status::Skipped;
        step.reason = Some(why);
        step
    };
    // What a backend cannot do, by design.
    if backend == "busy-poll" && conns > a.busy_poll_max {
        return skip(
            step,
            format!(
                "busy-poll is a teaching backend that tries every connection in turn: skipped above {} conns",
                a.busy_poll_max
            ),
        );
    }
    let pool_threads = pool_threads(a.workers);
    let pool_capacity = pool_threads * (1 + POOL_QUEUE_PER_THREAD);
    if backend == "pool" && conns as usize > pool_capacity {
        return skip(
            step,
            format!(
                "pool: {conns} conns > {pool_threads} threads + {} queued (the rest get 503 by design)",
                pool_threads * POOL_QUEUE_PER_THREAD
            ),
        );
    }
    // What this machine cannot give: the same check `loadgen http` makes.
    let probe = loadgen_config(
        proto,
        SocketAddr::from(([127, 0, 0, 1], 9)),
        conns,
        p,
        a.threads,
    );
    if let Err(e) = probe.validate() {
        return skip(step, e.to_string());
    }
    if let Err(e) = crate::preflight::check(&probe, limits) {
        return skip(step, e.to_string());
    }
    let idle = (p.warmup + p.duration).as_secs() + 60;
    let spec = Spec {
        exe: &p.exe,
        backend,
        proto,
        workers: a.workers,
        idle_timeout_s: idle,
    };
    let fail = |mut step: Step, why: String| {
        step.status = Status::Failed;
        step.reason = Some(why);
        step
    };
    let mut srv = match Server::start(&spec) {
        Ok(s) => s,
        Err(e) => return fail(step, e),
    };
    let http = proto == "http";
    let rss_before = server::status_kib(&server::process_tree(srv.pid), "VmRSS");
    let cfg = loadgen_config(proto, srv.addr, conns, p, a.threads);
    // Samples of the server at the end of the warmup and at the end of the measured window (the
    // last interval snapshot: one interval per step): CPU time and (HTTP) its counters. A
    // server that cannot answer `/stats` while loaded (the pool with every thread held) is
    // measured by the counters it logs at exit instead.
    let cfg = {
        let mut cfg = cfg;
        cfg.interval = p.duration.max(Duration::from_millis(10));
        cfg
    };
    let ask_stats = http && !(backend == "pool" && conns as usize >= pool_threads);
    // Without a warmup there is no warmup snapshot: the window starts here.
    let start = Sample {
        at: Instant::now(),
        cpu_us: server::cpu_us(&server::process_tree(srv.pid)),
        busy_us: server::machine_busy_us(),
        stats: (ask_stats && p.warmup.is_zero())
            .then(|| server::fetch_stats(srv.addr, STATS_TIMEOUT))
            .flatten(),
    };
    let mut base: Option<Sample> = None;
    let mut last: Option<Sample> = None;
    let pid = srv.pid;
    let addr = srv.addr;
    let mut on_interval = |s: &Snapshot| {
        let cpu_us = server::cpu_us(&server::process_tree(pid));
        let busy_us = server::machine_busy_us();
        let at = Instant::now();
        let want = ask_stats
            && (s.warmup
                || base
                    .as_ref()
                    .map_or(start.stats.is_some(), |b| b.stats.is_some()));
        let stats = want
            .then(|| server::fetch_stats(addr, STATS_TIMEOUT))
            .flatten();
        let sample = Sample {
            at,
            cpu_us,
            busy_us,
            stats,
        };
        if s.warmup {
            base.get_or_insert(sample);
        } else {
            last = Some(sample);
        }
    };
    let result = crate::run(&cfg, &mut on_interval);
    let tree = server::process_tree(pid);
    let rss_peak = server::status_kib(&tree, "VmHWM");
    let alive = srv.check_alive();
    let end = match last {
        Some(s) => s,
        None => Sample {
            at: Instant::now(),
            cpu_us: server::cpu_us(&tree),
            busy_us: server::machine_busy_us(),
            stats: None,
        },
    };
    let stats_end = match end.stats {
        Some(s) => Some(s),
        None if ask_stats && alive.is_ok() => server::fetch_stats(addr, STATS_TIMEOUT),
        None => None,
    };
    let stopped = srv.stop();
    let mut report = match result {
        Ok(r) => r,
        Err(e) => return fail(step, format!("loadgen: {e}")),
    };
    if let Err(e) = alive {
        step.report = Some(strip(report));
        return fail(step, e);
    }
    if stopped.status.is_some_and(|s| !s.success()) || stopped.status.is_none() {
        step.notes.push(format!(
            "server exit: {}{}",
            server::describe(stopped.status),
            stopped
                .tail
                .last()
                .map(|l| format!(" ({})", l.trim()))
                .unwrap_or_default()
        ));
    }
    if report.connections.established == 0 {
        let c = &report.connections;
        let why = format!(
            "no connection established ({} failed: ECONNREFUSED {}, ETIMEDOUT {}, EMFILE {}, other {})",
            c.failed, c.econnrefused, c.etimedout, c.emfile, c.other_connect_error
        );
        step.report = Some(strip(report));
        return fail(step, why);
    }
    let base = base.unwrap_or(start);
    let window = end.at.duration_since(base.at).as_secs_f64().max(1e-6);
    let cpu = end.cpu_us.saturating_sub(base.cpu_us);
    let other = end.busy_us.saturating_sub(base.busy_us).saturating_sub(cpu);
    let r = &report;
    let q = &r.requests;
    let errors = r.connections.failed
        + q.timeouts
        + q.aborted
        + q.protocol_errors
        + q.corrupted
        + q.status_4xx
        + q.status_5xx
        + q.status_other;
    let held = r.connections.open_at_end;
    let mut m = Metrics {
        req_per_s: r.rates.req_per_s,
        p50_us: r.latency_us.p50,
        p99_us: r.latency_us.p99,
        p99_9_us: r.latency_us.p99_9,
        connect_p99_us: r.connect_latency_us.p99,
        errors,
        conns_held: held,
        server_cpu_pct: cpu as f64 / (window * 1e6) * 100.0,
        server_cpu_us_per_req: if q.completed > 0 {
            cpu as f64 / q.completed as f64
        } else {
            0.0
        },
        server_cpu_window_s: window,
        other_cpu_pct: other as f64 / (window * 1e6) * 100.0,
        rss_before_kib: rss_before,
        rss_peak_kib: rss_peak,
        rss_per_conn_kib: (held > 0)
            .then(|| rss_peak.saturating_sub(rss_before) as f64 / held as f64),
        ..Metrics::default()
    };
    syscalls(
        &mut m,
        http,
        base.stats.as_ref(),
        stats_end.as_ref(),
        &stopped.summaries,
    );
    // Notes: what makes a number mean something else than it seems.
    if q.status_5xx > 0 {
        step.notes.push(format!("{} × 5xx", q.status_5xx));
    }
    let refused = server::sum_summaries(&stopped.summaries)
        .get("refused")
        .copied()
        .unwrap_or(0);
    if refused > 0 {
        step.notes.push(format!("server refused {refused} conns"));
    }
    if backend == "pool" {
        let threads = stopped
            .info
            .iter()
            .find_map(|l| {
                let rest = &l[l.find("pool: ")? + 6..];
                rest.split_whitespace().next()?.parse::<usize>().ok()
            })
            .map(|t| t * a.workers.unwrap_or(1))
            .unwrap_or(pool_threads);
        if conns as usize > threads {
            step.notes.push(format!(
                "{} of {conns} conns queued behind {threads} threads",
                conns as usize - threads
            ));
        }
    }
    if q.timeouts > 0 {
        step.notes.push(format!("{} timeouts", q.timeouts));
    }
    if r.connections.failed > 0 {
        step.notes
            .push(format!("{} connects failed", r.connections.failed));
    }
    if held < conns {
        step.notes.push(format!("{held} of {conns} conns held"));
    }
    let loadgen_cpu_pct = (r.loadgen.counters.process_user_us + r.loadgen.counters.process_sys_us)
        as f64
        / (r.elapsed_s + p.warmup.as_secs_f64()).max(1e-6)
        / 1e4;
    let foreign = m.other_cpu_pct - loadgen_cpu_pct;
    if foreign > 25.0 {
        step.notes.push(format!(
            "other work on the machine: {foreign:.0}% of a core"
        ));
    }
    if r.loadgen.bottleneck {
        step.notes.push("loadgen saturated".into());
    }
    step.metrics = Some(m);
    report = strip(report);
    step.report = Some(report);
    step
}

/// Syscalls per request: `/stats` deltas over the measured window when both ends answered
/// (HTTP), else the summary lines logged at exit (the whole life of the server).
fn syscalls(
    m: &mut Metrics,
    http: bool,
    base: Option<&serde_json::Value>,
    end: Option<&serde_json::Value>,
    summaries: &[String],
) {
    if let (true, Some(b), Some(e)) = (http, base, end) {
        let get = |v: &serde_json::Value, k: &str| v["syscalls"][k].as_u64().unwrap_or(0);
        // The closing `/stats` request counts itself.
        let reqs = e["requests"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(b["requests"].as_u64().unwrap_or(0))
            .saturating_sub(1);
        if reqs > 0 {
            let mut total = 0;
            for k in SYSCALL_KINDS {
                let d = get(e, k).saturating_sub(get(b, k));
                total += d;
                m.syscalls_by_kind_per_req
                    .insert(k.to_string(), d as f64 / reqs as f64);
            }
            let c = get(e, "completions").saturating_sub(get(b, "completions"));
            m.syscalls_by_kind_per_req
                .insert("completions".into(), c as f64 / reqs as f64);
            m.syscalls_per_req = Some(total as f64 / reqs as f64);
            m.syscalls_source = "stats-window".into();
            m.server_requests = reqs;
            return;
        }
    }
    let sum = server::sum_summaries(summaries);
    let reqs = if http {
        sum.get("requests").copied().unwrap_or(0)
    } else {
        sum.get("bytes_in").copied().unwrap_or(0) / ECHO_SIZE as u64
    };
    if reqs == 0 || summaries.is_empty() {
        return;
    }
    let mut total = 0;
    for k in SYSCALL_KINDS {
        let d = sum.get(*k).copied().unwrap_or(0);
        total += d;
        m.syscalls_by_kind_per_req
            .insert(k.to_string(), d as f64 / reqs as f64);
    }
    let c = sum.get("completions").copied().unwrap_or(0);
    m.syscalls_by_kind_per_req
        .insert("completions".into(), c as f64 / reqs as f64);
    m.syscalls_per_req = Some(total as f64 / reqs as f64);
    m.syscalls_source = "exit-summary".into();
    m.server_requests = reqs;
}

/// The report without its histograms (they are large and the percentiles are kept).
fn strip(mut r: Report) -> Report {
    r.histograms = Histograms::default();
    r
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
