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

mod args;
mod blocking;
mod charts;
mod idle;
mod machine;
pub mod peers;
pub mod pin;
mod plan;
pub mod probe;
mod results;
mod server;
mod step;
mod table;

use std::cell::Cell;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use crate::error::Error;
use c10k::models::BACKENDS;
use machine::{loadavg, machine, WakeLatencyHold};
use pin::CpuMask;
use plan::{plan, Subject};
use probe::{Bound, Probe};
use step::Runner;

pub use args::{CompareArgs, Workload};
pub use results::{
    CapacityStep, CommonRate, IdleStep, Machine, Pinning, Results, Settings, Skipped, Status,
};

/// The common rate is this share of the smallest capacity: comfortably below every one.
const COMMON_SHARE: f64 = 0.5;

/// Runs the comparison; the exit code of `loadgen compare`.
pub fn main(a: &CompareArgs) -> Result<ExitCode, Error> {
    if a.workload == Workload::Blocking {
        return blocking::main(a);
    }
    let started = Instant::now();
    let p = plan(a)?;
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
    }
    // Raise the descriptor limit once: the servers inherit it.
    let limits = crate::preflight::limits();
    c10k::sys::ignore_sigpipe().map_err(|e| Error::Io(e.to_string()))?;
    // Before pinning: the machine's CPUs are what this process was given, not loadgen's share.
    let machine = machine(limits.nofile);
    // loadgen's threads and hold processes start from this thread and inherit its CPUs.
    if let Some(cpus) = &p.placement.loadgen {
        CpuMask::new(cpus)
            .apply_to_this_thread()
            .map_err(|e| Error::Io(format!("cannot pin loadgen to CPUs {cpus:?}: {e}")))?;
    }
    let (_wake_hold, cpu_wake_latency) = hold_wake_latency(a.allow_cpu_idle);
    let scheduling = apply_scheduling(a.sched_fifo)?;
    let pinning = Pinning {
        server_cpus: p.placement.server.as_deref().map(pin::format_cpus),
        loadgen_cpus: p.placement.loadgen.as_deref().map(pin::format_cpus),
        loadgen_observed: pin::observed_cpus(gettid()).map(|c| pin::format_cpus(&c)),
    };
    let mut results = Results {
        version: 2,
        command: command_line(),
        machine,
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
            cpu_wake_latency,
            scheduling,
        },
        skipped: p.skipped.clone(),
        capacity: Vec::new(),
        common_rates: Vec::new(),
        idle: Vec::new(),
        wall_s: 0.0,
        interrupted: false,
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
    let runner = Runner {
        p: &p,
        a,
        limits,
        interrupted: Cell::new(false),
    };
    eprintln!(
        "compare: CPU wake-up latency {}; scheduling {}",
        results.settings.cpu_wake_latency, results.settings.scheduling
    );
    for &conns in &p.conns {
        let mut steps: Vec<CapacityStep> = Vec::new();
        for subject in &p.subjects {
            if runner.interrupted.get() {
                break;
            }
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
                if step.status != Status::Ok || runner.interrupted.get() {
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
        if runner.interrupted.get() {
            break;
        }
    }
    if !p.idle.is_empty() && !runner.interrupted.get() {
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
                if runner.interrupted.get() {
                    break;
                }
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
    results.interrupted = runner.interrupted.get();
    let report = table::markdown(&results);
    let code = publish("compare", &report, a.out.as_deref(), started, |dir| {
        write_outputs(dir, &results)
    })?;
    if results.interrupted {
        eprintln!("compare: interrupted by a signal: the results above are partial");
        return Ok(ExitCode::from(130));
    }
    Ok(code)
}

/// `--sched-fifo PRIO`: this thread, and so every thread and process the comparison starts,
/// runs under SCHED_FIFO. Returns what the results say of the policy.
fn apply_scheduling(fifo: Option<i32>) -> Result<String, Error> {
    match fifo {
        None => Ok("SCHED_OTHER".into()),
        Some(prio) => pin::set_sched_fifo(prio)
            .map(|()| format!("SCHED_FIFO {prio}"))
            .map_err(|e| {
                Error::Config(format!(
                    "--sched-fifo {prio}: cannot use SCHED_FIFO: {e} (needs CAP_SYS_NICE, or an RLIMIT_RTPRIO of at least {prio})"
                ))
            }),
    }
}

/// Holds the CPUs' wake-up latency at 0 µs for the comparison (see [`WakeLatencyHold`]) unless
/// `--allow-cpu-idle`; returns the hold and what the results say of it.
fn hold_wake_latency(allow_idle: bool) -> (Option<WakeLatencyHold>, String) {
    if allow_idle {
        return (None, "not held (--allow-cpu-idle)".into());
    }
    match WakeLatencyHold::zero() {
        Ok(h) => (Some(h), format!("held at 0 µs ({})", machine::CPU_DMA_LATENCY)),
        Err(e) => (
            None,
            format!(
                "not held: cannot write {}: {e} (CPUs may sleep deeply; tails at low rates may be the idle states')",
                machine::CPU_DMA_LATENCY
            ),
        ),
    }
}

/// Prints a comparison's report, writes its files into `--out` if given, and says where they
/// went and how long the whole run took.
pub(crate) fn publish(
    what: &str,
    report: &str,
    out_dir: Option<&Path>,
    started: Instant,
    write: impl FnOnce(&Path) -> Result<(), Error>,
) -> Result<ExitCode, Error> {
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(report.as_bytes());
        let _ = out.flush();
    }
    if let Some(dir) = out_dir {
        write(dir)?;
    }
    eprintln!(
        "{what}: done in {:.1} s{}",
        started.elapsed().as_secs_f64(),
        out_dir
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
