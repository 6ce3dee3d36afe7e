//! loadgen: a load generator that measures connections and latency honestly.
//!
//! - Latency in open loop (`rate`) is taken from each request's intended send time on one global
//!   schedule (corrected for coordinated omission), with the service time beside it.
//! - Requests past the timeout are counted and recorded, never dropped.
//! - Every connection asked for is accounted for: established, or failed by cause.
//! - Runs scale past one process (`procs`) and past one source address's ports (`sources`), and
//!   their results merge exactly (histograms travel as HdrHistogram V2).
//!
//! Library use: build a [`Config`] and call [`run`] (or [`run_http`], [`run_echo`], [`run_hold`]);
//! the [`Report`] is serializable. See docs/loadgen.md for the definitions of every metric.

pub mod cli;
pub mod client;
pub mod compare;
pub mod config;
mod engine;
mod error;
pub mod hdrlog;
pub mod interval;
pub mod merge;
pub mod parse;
pub mod ports;
pub mod preflight;
pub mod report;
mod run;
pub mod stats;
pub mod sys;
mod worker;

use std::io::Write as _;
use std::process::ExitCode;

use interval::WireSnapshot;
use worker::WorkerMsg;

pub use config::{Config, HoldOpts, HttpOpts, Mode, PathWeight, Share};
pub use error::Error;
pub use interval::{IntervalLine, Snapshot};
pub use report::Report;

/// Runs `cfg` to its end, calling `on_interval` with each interval snapshot (merged over threads
/// and processes), and returns the report.
pub fn run(cfg: &Config, on_interval: &mut dyn FnMut(&Snapshot)) -> Result<Report, Error> {
    cfg.validate()?;
    preflight::check(cfg, preflight::limits())?;
    c10k::sys::ignore_sigpipe().map_err(|e| Error::Io(e.to_string()))?;
    if cfg.procs > 1 && cfg.worker.is_none() {
        worker::run_procs(cfg, on_interval)
    } else {
        run::run_local(cfg, on_interval)
    }
}

fn run_mode(cfg: &Config, mode: &str) -> Result<Report, Error> {
    if cfg.mode.name() != mode {
        return Err(Error::Config(format!(
            "run_{mode} needs a {mode} configuration, not {}",
            cfg.mode.name()
        )));
    }
    run(cfg, &mut |_| {})
}

/// [`run`] for an HTTP configuration.
pub fn run_http(cfg: &Config) -> Result<Report, Error> {
    run_mode(cfg, "http")
}

/// [`run`] for an echo configuration.
pub fn run_echo(cfg: &Config) -> Result<Report, Error> {
    run_mode(cfg, "echo")
}

/// [`run`] for a hold configuration.
pub fn run_hold(cfg: &Config) -> Result<Report, Error> {
    run_mode(cfg, "hold")
}

/// `loadgen __worker`: the configuration on stdin, JSON lines on stdout.
pub fn worker_main() -> ExitCode {
    let out = |msg: &WorkerMsg| {
        let mut stdout = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut stdout, msg);
        let _ = stdout.write_all(b"\n");
        let _ = stdout.flush();
    };
    let cfg: Config = match serde_json::from_reader(std::io::stdin().lock()) {
        Ok(c) => c,
        Err(e) => {
            out(&WorkerMsg::Error(format!("bad worker configuration: {e}")));
            return ExitCode::from(2);
        }
    };
    if cfg.worker.is_none() {
        out(&WorkerMsg::Error("a worker needs its share".into()));
        return ExitCode::from(2);
    }
    match crate::run(&cfg, &mut |s| {
        out(&WorkerMsg::Interval(WireSnapshot::from(s)))
    }) {
        Ok(r) => {
            out(&WorkerMsg::Report(Box::new(r)));
            ExitCode::SUCCESS
        }
        Err(e) => {
            out(&WorkerMsg::Error(e.to_string()));
            ExitCode::from(2)
        }
    }
}
