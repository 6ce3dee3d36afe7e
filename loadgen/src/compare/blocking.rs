//! `loadgen compare --workload blocking`: what one blocking handler does to every other request,
//! per backend. Each backend serves `--blocking-routes` while loadgen offers one fixed rate, open
//! loop, of `GET /plaintext` with one `GET /sleep/MS` in every `--sleep-every` requests (a
//! `--mix`, so the slow ones come at even spacing and each path's latency is measured apart).
//! The single-threaded loops run a second time with `--offload N`.
//!
//! What is reported is the `/plaintext` requests' latency from their intended send times: on a
//! single-threaded loop that runs the sleep itself, every request that arrives during a sleep
//! waits for it, so their p99 climbs to about the sleep time; threads, pool and offloaded loops
//! keep serving meanwhile. The slow requests' own p99, and where the server says the sleeps ran
//! (`/stats`: on the loop, or handed to helpers), stand beside it.
//!
//! Outputs: a Markdown table on stdout; with `--out DIR`, `blocking.md`, `blocking.json` and
//! `blocking.svg` (named apart from the plaintext comparison's files, so both can share a
//! directory).

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::args::CompareArgs;
use super::machine::{loadavg, machine};
use super::pin::{self, CpuMask};
use super::plan::{plan, Subject};
use super::results::{Machine, Pinning, Skipped, Status};
use super::server::{self, Server};
use super::table::thousands;
use crate::config::{Config, HttpOpts, Mode, PathWeight};
use crate::error::Error;
use crate::report::{PathReport, Report};

mod report;
pub use report::markdown;
use report::write_outputs;

/// The fast path every backend serves.
const FAST_PATH: &str = "/plaintext";
const DEFAULT_RATE: f64 = 400.0;
const DEFAULT_CONNS: u64 = 50;
/// Long enough for a p99.9 of the fast path over a few thousand requests.
const DEFAULT_DURATION: Duration = Duration::from_secs(5);
const DEFAULT_WARMUP: Duration = Duration::from_secs(1);
const QUICK_DURATION: Duration = Duration::from_millis(500);
const QUICK_WARMUP: Duration = Duration::from_millis(200);
/// A request older than this is a timeout (far above any sleep `/sleep` allows).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest sleep the server serves (`GET /sleep/MS`, MS ≤ 10,000).
const MAX_SLEEP: Duration = Duration::from_secs(10);
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// Backends that run blocking work on a thread of their own already (the connection's, or a
/// worker's) and refuse `--offload`: the others are single-threaded loops, run twice.
fn has_own_threads(backend: &str) -> bool {
    matches!(backend, "threads" | "pool")
}

/// blocking.json.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockingResults {
    pub version: u32,
    pub command: String,
    pub machine: Machine,
    pub settings: BlockingSettings,
    pub skipped: Vec<Skipped>,
    pub runs: Vec<BlockingRun>,
    pub wall_s: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockingSettings {
    pub server: String,
    pub backends: Vec<String>,
    pub conns: u64,
    /// Offered requests per second, both paths together (open loop).
    pub rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// loadgen's `--mix`, as typed: `/plaintext=99,/sleep/50=1`.
    pub mix: String,
    pub sleep_path: String,
    pub sleep_ms: u64,
    pub sleep_every: u32,
    /// `--offload N` of the single-threaded loops' second run.
    pub offload: usize,
    pub workers: Option<usize>,
    pub loadgen_threads: usize,
    pub quick: bool,
    pub pinning: Pinning,
    /// As in the plaintext comparison's settings: whether the CPUs' wake-up latency was held.
    #[serde(default)]
    pub cpu_wake_latency: String,
    #[serde(default)]
    pub scheduling: String,
}

/// One backend, one way of running blocking work.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockingRun {
    pub backend: String,
    /// `--offload N` given; None: the backend's own way (inline on a single-threaded loop,
    /// except coro, which always awaits blocking work on helpers).
    pub offload: Option<usize>,
    pub status: Status,
    pub reason: Option<String>,
    pub notes: Vec<String>,
    pub target_rate: f64,
    pub achieved_rate: f64,
    /// The fast requests (`/plaintext`).
    pub fast: Option<PathLatency>,
    /// The slow requests (`/sleep/MS`).
    pub slow: Option<PathLatency>,
    /// `/stats` at the end: blocking work run on the thread that serves the connection (the
    /// loop itself on a single-threaded backend) ...
    pub blocking_inline: Option<u64>,
    /// ... and handed to helper threads.
    pub blocking_offloaded: Option<u64>,
    /// loadgen saturated or woke late: the latencies may be loadgen's.
    pub loadgen_bound: bool,
}

/// One path's requests in a run (latency from the intended send time, µs).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PathLatency {
    pub sent: u64,
    pub completed: u64,
    pub status_2xx: u64,
    pub timeouts: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p99_9_us: u64,
    pub max_us: u64,
}

impl From<&PathReport> for PathLatency {
    fn from(p: &PathReport) -> Self {
        PathLatency {
            sent: p.sent,
            completed: p.completed,
            status_2xx: p.status_2xx,
            timeouts: p.timeouts,
            p50_us: p.latency_us.p50,
            p99_us: p.latency_us.p99,
            p99_9_us: p.latency_us.p99_9,
            max_us: p.latency_us.max,
        }
    }
}

/// What runs, from the options.
struct BlockingPlan {
    exe: std::path::PathBuf,
    backends: Vec<&'static str>,
    skipped: Vec<Skipped>,
    server_cpus: Option<Vec<usize>>,
    loadgen_cpus: Option<Vec<usize>>,
    settings: BlockingSettings,
}

fn blocking_plan(a: &CompareArgs) -> Result<BlockingPlan, Error> {
    let bad = |m: &str| Err(Error::Config(m.into()));
    if a.peers {
        return bad("--workload blocking runs c10k's backends only (the peers have no /sleep)");
    }
    if a.sleep.is_zero() || a.sleep > MAX_SLEEP || !a.sleep.subsec_nanos().is_multiple_of(1_000_000)
    {
        return bad("--sleep must be whole milliseconds, from 1ms to 10s (the server's limit)");
    }
    if a.sleep_every < 2 {
        return bad("--sleep-every must be at least 2 (one slow request in that many)");
    }
    if a.offload == 0 {
        return bad("--offload must be at least 1");
    }
    let conns = match a.conns.as_deref() {
        None => DEFAULT_CONNS,
        Some([c]) if *c > 0 => *c,
        Some(_) => return bad("--workload blocking takes one --conns count, at least 1"),
    };
    let rate = a.rate.unwrap_or(DEFAULT_RATE);
    if !(rate.is_finite() && rate > 0.0) {
        return bad("--rate must be a positive number");
    }
    let (duration, warmup) = match a.quick {
        true => (QUICK_DURATION, QUICK_WARMUP),
        false => (DEFAULT_DURATION, DEFAULT_WARMUP),
    };
    let duration = a.duration.unwrap_or(duration);
    let warmup = a.warmup.unwrap_or(warmup);
    // The subjects, the server binary, the CPU placement and loadgen's threads are the
    // plaintext comparison's.
    let p = plan(a)?;
    let backends: Vec<&'static str> = p
        .subjects
        .iter()
        .filter_map(|s| match s {
            Subject::Backend(b) => Some(*b),
            Subject::Peer(_) => None,
        })
        .collect();
    let sleep_ms = a.sleep.as_millis() as u64;
    let sleep_path = format!("/sleep/{sleep_ms}");
    let settings = BlockingSettings {
        server: p.exe.display().to_string(),
        backends: backends.iter().map(|b| b.to_string()).collect(),
        conns,
        rate,
        duration_s: duration.as_secs_f64(),
        warmup_s: warmup.as_secs_f64(),
        mix: format!("{FAST_PATH}={},{sleep_path}=1", a.sleep_every - 1),
        sleep_path,
        sleep_ms,
        sleep_every: a.sleep_every,
        offload: a.offload,
        workers: a.workers,
        loadgen_threads: p.threads,
        quick: a.quick,
        pinning: Pinning {
            server_cpus: p.placement.server.as_deref().map(pin::format_cpus),
            loadgen_cpus: p.placement.loadgen.as_deref().map(pin::format_cpus),
            loadgen_observed: None,
        },
        cpu_wake_latency: String::new(),
        scheduling: String::new(),
    };
    Ok(BlockingPlan {
        exe: p.exe,
        backends,
        skipped: p.skipped,
        server_cpus: p.placement.server,
        loadgen_cpus: p.placement.loadgen,
        settings,
    })
}

/// Runs the blocking comparison; the exit code of `loadgen compare --workload blocking`.
pub(super) fn main(a: &CompareArgs) -> Result<ExitCode, Error> {
    let started = Instant::now();
    let mut bp = blocking_plan(a)?;
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
    }
    let limits = crate::preflight::limits();
    // Taken now: its load average is the one at the start.
    let mut machine = machine(limits.nofile);
    c10k::sys::ignore_sigpipe().map_err(|e| Error::Io(e.to_string()))?;
    // loadgen's threads start from this thread and inherit its CPUs.
    if let Some(cpus) = &bp.loadgen_cpus {
        CpuMask::new(cpus)
            .apply_to_this_thread()
            .map_err(|e| Error::Io(format!("cannot pin loadgen to CPUs {cpus:?}: {e}")))?;
    }
    bp.settings.pinning.loadgen_observed =
        pin::observed_cpus(super::gettid()).map(|c| pin::format_cpus(&c));
    let (_wake_hold, cpu_wake_latency) = super::hold_wake_latency(a.allow_cpu_idle);
    bp.settings.cpu_wake_latency = cpu_wake_latency;
    bp.settings.scheduling = super::apply_scheduling(a.sched_fifo)?;
    for s in &bp.skipped {
        eprintln!("compare: skipping {}: {}", s.subject, s.reason);
    }
    let st = &bp.settings;
    eprintln!(
        "compare blocking: {} conns, {:.0} req/s open loop, --mix {}, {:.1} s each (+{:.1} s warmup)",
        st.conns, st.rate, st.mix, st.duration_s, st.warmup_s
    );
    let mut runs = Vec::new();
    let interrupted = Error::Interrupted.to_string();
    'backends: for &backend in &bp.backends {
        let offloads: &[Option<usize>] = if has_own_threads(backend) {
            &[None]
        } else {
            &[None, Some(st.offload)]
        };
        for &offload in offloads {
            let t0 = Instant::now();
            let run = run_one(&bp, backend, offload);
            eprintln!(
                "blocking {backend}{}: {} ({:.1} s)",
                offload.map_or(String::new(), |n| format!(" --offload {n}")),
                describe(&run, st),
                t0.elapsed().as_secs_f64()
            );
            let stop = run.reason.as_deref() == Some(interrupted.as_str());
            runs.push(run);
            if stop {
                break 'backends;
            }
        }
    }
    machine.loadavg_end = loadavg();
    let results = BlockingResults {
        version: 1,
        command: super::command_line(),
        machine,
        settings: bp.settings.clone(),
        skipped: bp.skipped.clone(),
        runs,
        wall_s: started.elapsed().as_secs_f64(),
    };
    let report = markdown(&results);
    let code = super::publish(
        "compare blocking",
        &report,
        a.out.as_deref(),
        started,
        |dir| write_outputs(dir, &results),
    )?;
    if results.runs.last().and_then(|r| r.reason.as_deref()) == Some(interrupted.as_str()) {
        eprintln!("compare: interrupted by a signal: the results above are partial");
        return Ok(ExitCode::from(130));
    }
    Ok(code)
}

fn describe(r: &BlockingRun, st: &BlockingSettings) -> String {
    match (&r.fast, &r.slow) {
        (Some(f), Some(s)) if r.status == Status::Ok => format!(
            "{FAST_PATH} p50 {} p99 {} p99.9 {} µs; {} p99 {} µs; sleeps inline {} offloaded {}",
            f.p50_us,
            f.p99_us,
            f.p99_9_us,
            st.sleep_path,
            s.p99_us,
            opt_count(r.blocking_inline),
            opt_count(r.blocking_offloaded)
        ),
        _ => format!("{:?}: {}", r.status, r.reason.as_deref().unwrap_or("")),
    }
}

fn opt_count(v: Option<u64>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}

/// One backend on a fresh server, one way of running blocking work.
fn run_one(bp: &BlockingPlan, backend: &str, offload: Option<usize>) -> BlockingRun {
    let st = &bp.settings;
    let mut run = BlockingRun {
        backend: backend.to_string(),
        offload,
        status: Status::Ok,
        reason: None,
        notes: Vec::new(),
        target_rate: st.rate,
        achieved_rate: 0.0,
        fast: None,
        slow: None,
        blocking_inline: None,
        blocking_offloaded: None,
        loadgen_bound: false,
    };
    let fail = |run: &mut BlockingRun, why: String| {
        run.status = Status::Failed;
        run.reason = Some(why);
    };
    let life = Duration::from_secs_f64(st.duration_s + st.warmup_s) + REQUEST_TIMEOUT;
    let mut cmd = Command::new(&bp.exe);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--backend", backend])
        .args(["--proto", "http", "--blocking-routes"])
        .args(["--idle-timeout", &(life.as_secs() + 60).to_string()])
        .args(["--shutdown-grace", "2"]);
    if let Some(n) = offload {
        cmd.args(["--offload", &n.to_string()]);
    }
    if let Some(w) = st.workers {
        cmd.args(["--workers", &w.to_string()]);
    }
    let cpus = bp.server_cpus.as_deref().map(CpuMask::new);
    let mut server = match Server::start_command(cmd, cpus) {
        Ok(s) => s,
        Err(e) => {
            fail(&mut run, e);
            return run;
        }
    };
    let result = crate::run(&load(st, server.addr), &mut |_| {});
    let stats = server::fetch_stats(server.addr, STATS_TIMEOUT);
    let alive = server.check_alive();
    server.stop();
    let report = match (result, alive) {
        (Ok(r), Ok(())) if r.loadgen.counters.interrupted_threads > 0 => {
            fail(&mut run, Error::Interrupted.to_string());
            return run;
        }
        (Ok(r), Ok(())) => r,
        (Err(e), _) => {
            fail(&mut run, format!("loadgen: {e}"));
            return run;
        }
        (_, Err(e)) => {
            fail(&mut run, e);
            return run;
        }
    };
    if let Some(s) = &stats {
        run.blocking_inline = s["blocking_inline"].as_u64();
        run.blocking_offloaded = s["blocking_offloaded"].as_u64();
    }
    fill(&mut run, &report, st);
    if offload.is_some()
        && run.blocking_offloaded == Some(0)
        && run.blocking_inline.is_some_and(|n| n > 0)
    {
        run.notes
            .push("the server ran the sleeps on its loop in spite of --offload".into());
    }
    if let Some(why) = check(&run, st) {
        fail(&mut run, why);
    }
    run
}

/// The load of every run: open loop at the rate, the mix, keep-alive.
fn load(st: &BlockingSettings, addr: std::net::SocketAddr) -> Config {
    let mode = Mode::Http(HttpOpts {
        host: addr.to_string(),
        path: FAST_PATH.into(),
        method: "GET".into(),
        body_size: 0,
        keepalive: true,
        mix: vec![
            PathWeight {
                path: FAST_PATH.into(),
                weight: st.sleep_every - 1,
            },
            PathWeight {
                path: st.sleep_path.clone(),
                weight: 1,
            },
        ],
    });
    let mut cfg = Config::new(mode, addr, st.conns as usize);
    cfg.threads = st.loadgen_threads.max(1);
    cfg.rate = Some(st.rate);
    cfg.duration = Some(Duration::from_secs_f64(st.duration_s));
    // Connecting must not count as queueing.
    cfg.warmup = Duration::from_secs_f64(st.warmup_s) + Duration::from_micros(50 * st.conns);
    cfg.interval = cfg
        .duration
        .unwrap_or_default()
        .max(Duration::from_millis(10));
    cfg.timeout = REQUEST_TIMEOUT;
    cfg
}

fn fill(run: &mut BlockingRun, r: &Report, st: &BlockingSettings) {
    run.achieved_rate = r.rates.req_per_s;
    run.loadgen_bound = r.loadgen.bottleneck;
    run.fast = r.per_path.get(FAST_PATH).map(PathLatency::from);
    run.slow = r.per_path.get(&st.sleep_path).map(PathLatency::from);
    if run.loadgen_bound {
        run.notes.push(format!(
            "loadgen-bound: {}",
            r.warnings.first().map_or("", String::as_str)
        ));
    }
    let q = &r.requests;
    let lost = q.aborted + q.protocol_errors + r.connections.failed;
    if lost > 0 {
        run.notes.push(format!(
            "{lost} requests or connections lost (aborted {}, protocol errors {}, failed connects {})",
            q.aborted, q.protocol_errors, r.connections.failed
        ));
    }
}

/// Why a run's numbers do not answer the question, if they do not.
fn check(run: &BlockingRun, st: &BlockingSettings) -> Option<String> {
    let (Some(fast), Some(slow)) = (&run.fast, &run.slow) else {
        return Some("loadgen recorded no per-path results".into());
    };
    if slow.sent == 0 {
        return Some(format!(
            "no {} request fell in the measured window: give a longer --duration",
            st.sleep_path
        ));
    }
    if slow.status_2xx < slow.completed {
        return Some(format!(
            "{} of {} {} requests were not answered 2xx: does this server have --blocking-routes?",
            slow.completed - slow.status_2xx,
            slow.completed,
            st.sleep_path
        ));
    }
    if fast.status_2xx < fast.completed {
        return Some(format!(
            "{} of {} {FAST_PATH} requests were not answered 2xx",
            fast.completed - fast.status_2xx,
            fast.completed
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(backend: &str, offload: Option<usize>, fast_p99: u64) -> BlockingRun {
        BlockingRun {
            backend: backend.into(),
            offload,
            status: Status::Ok,
            reason: None,
            notes: Vec::new(),
            target_rate: 400.0,
            achieved_rate: 400.0,
            fast: Some(PathLatency {
                sent: 990,
                completed: 990,
                status_2xx: 990,
                p99_us: fast_p99,
                ..PathLatency::default()
            }),
            slow: Some(PathLatency {
                sent: 10,
                completed: 10,
                status_2xx: 10,
                p99_us: 50_000,
                ..PathLatency::default()
            }),
            blocking_inline: Some(10),
            blocking_offloaded: Some(0),
            loadgen_bound: false,
        }
    }

    fn settings() -> BlockingSettings {
        BlockingSettings {
            server: "c10k".into(),
            backends: vec!["epoll".into(), "threads".into()],
            conns: 50,
            rate: 400.0,
            duration_s: 5.0,
            warmup_s: 1.0,
            mix: "/plaintext=99,/sleep/50=1".into(),
            sleep_path: "/sleep/50".into(),
            sleep_ms: 50,
            sleep_every: 100,
            offload: 4,
            workers: None,
            loadgen_threads: 1,
            quick: false,
            pinning: Pinning {
                server_cpus: None,
                loadgen_cpus: None,
                loadgen_observed: None,
            },
            cpu_wake_latency: String::new(),
            scheduling: String::new(),
        }
    }

    /// A slow path answered 404 (a server without the routes) fails the run with the reason;
    /// one with no slow request in the window too.
    #[test]
    fn runs_that_do_not_answer_the_question_say_why() {
        let st = settings();
        let ok = run("epoll", None, 48_000);
        assert_eq!(check(&ok, &st), None);
        let mut not_found = ok.clone();
        not_found.slow.as_mut().unwrap().status_2xx = 0;
        assert!(check(&not_found, &st)
            .unwrap()
            .contains("--blocking-routes"));
        let mut none = ok.clone();
        none.slow.as_mut().unwrap().sent = 0;
        assert!(check(&none, &st).unwrap().contains("--duration"));
    }

    #[test]
    fn the_table_has_a_row_per_run_and_the_chart_draws() {
        let r = BlockingResults {
            version: 1,
            command: "loadgen compare --workload blocking".into(),
            machine: machine(1024),
            settings: settings(),
            skipped: Vec::new(),
            runs: vec![
                run("epoll", None, 48_000),
                run("epoll", Some(4), 300),
                run("threads", None, 250),
            ],
            wall_s: 1.0,
        };
        let md = markdown(&r);
        assert!(md.contains("| epoll | as built | 0 | 48,000 |"), "{md}");
        assert!(md.contains("| epoll | --offload 4 | 0 | 300 |"), "{md}");
        assert!(md.contains("| threads | its own threads |"), "{md}");
        let dir = tempfile::tempdir().unwrap();
        write_outputs(dir.path(), &r).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("blocking.svg")).unwrap();
        assert!(svg.trim_end().ends_with("</svg>") && svg.contains("epoll"));
        let back: BlockingResults = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("blocking.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(back.runs.len(), 3);
    }
}
