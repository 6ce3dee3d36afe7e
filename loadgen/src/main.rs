//! The `loadgen` command. Exit codes: 0 done; 2 bad input (options, files, a target that accepts
//! no connection) or a preflight refusal; 1 anything else.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Parser;
use loadgen::cli::{Cli, Command, Outputs};
use loadgen::hdrlog::HdrLog;
use loadgen::merge::{self, Merged};
use loadgen::{Config, Error, Report, Snapshot};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            {
                e.exit();
            }
            // One line, like every other error.
            let text = e.to_string();
            let message: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("loadgen: {}", message.join(" "));
            return ExitCode::from(2);
        }
    };
    // SIGINT/SIGTERM stop the run early with a report: blocked here (and so in every thread and
    // worker process started after), seen by each event loop through its signalfd.
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGINT);
    signals.add(nix::sys::signal::Signal::SIGTERM);
    if !matches!(cli.command, Command::Merge(_)) {
        if let Err(e) = signals.thread_block() {
            log::warn!("cannot block SIGINT/SIGTERM: {e}");
        }
    }
    let result = match cli.command {
        Command::Worker => return loadgen::worker_main(),
        Command::Http(a) => a.config().and_then(|(c, o)| run(&c, &o)),
        Command::Echo(a) => a.config().and_then(|(c, o)| run(&c, &o)),
        Command::Hold(a) => a.config().and_then(|(c, o)| run(&c, &o)),
        Command::Merge(a) => merge_cmd(&a),
        Command::Compare(a) => loadgen::compare::main(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: error: {e}");
            ExitCode::from(match e {
                Error::Config(_) | Error::Preflight(_) => 2,
                Error::Interrupted => 130,
                Error::Io(_) => 1,
            })
        }
    }
}

fn run(cfg: &Config, out: &Outputs) -> Result<ExitCode, Error> {
    let file_err = |p: &std::path::Path, e: std::io::Error| {
        Error::Config(format!("cannot write {}: {e}", p.display()))
    };
    // Open the outputs first, so that a bad path fails before the run.
    let mut hdr = match &out.hdr_log {
        Some(p) => Some(HdrLog::create(p, SystemTime::now()).map_err(|e| file_err(p, e))?),
        None => None,
    };
    let mut json = match &out.json {
        Some(p) => Some(std::fs::File::create(p).map_err(|e| file_err(p, e))?),
        None => None,
    };
    let progress = std::io::stderr().is_terminal().then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_message(format!("{} {}: connecting", cfg.mode.name(), cfg.target));
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        pb
    });
    let mut hdr_error = None;
    let mut on_interval = |s: &Snapshot| {
        let line = s.line();
        if out.interval {
            let text = serde_json::to_string(&line).unwrap_or_default();
            match &progress {
                Some(pb) => pb.println(text),
                None => eprintln!("{text}"),
            }
        }
        if let Some(pb) = &progress {
            pb.set_message(format!(
                "t={:.0}s {:.0} req/s p50 {} µs p99 {} µs open {} connecting {} errors {}",
                line.t,
                line.req_per_s,
                line.p50_us,
                line.p99_us,
                line.conns_open,
                line.conns_connecting,
                line.errors
            ));
        }
        // The log holds the measurement only; the warmup's interval shows in the JSON lines.
        if let (Some(h), false) = (&mut hdr, s.warmup) {
            let start = std::time::Duration::from_secs_f64(s.start_s);
            let len = std::time::Duration::from_secs_f64(s.duration_s);
            if let Err(e) = h.write(&s.latency, start, len) {
                hdr_error.get_or_insert(e);
            }
        }
    };
    let result = loadgen::run(cfg, &mut on_interval);
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let report = result?;
    if let Some(e) = hdr_error {
        log::warn!("the hdr log is incomplete: {e}");
    }
    print_report(&report, json.as_mut())?;
    if report.connections.established == 0 {
        let c = &report.connections;
        return Err(Error::Config(format!(
            "no connection to {} could be established ({} failed: ECONNREFUSED {}, ETIMEDOUT {}, EADDRNOTAVAIL {}, EMFILE {}, other {})",
            report.target, c.failed, c.econnrefused, c.etimedout, c.eaddrnotavail, c.emfile, c.other_connect_error
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(report: &Report, json: Option<&mut std::fs::File>) -> Result<(), Error> {
    if let Some(f) = json {
        serde_json::to_writer_pretty(&mut *f, report)
            .map_err(|e| Error::Io(format!("cannot write the JSON report: {e}")))?;
        let _ = f.write_all(b"\n");
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(report.text().as_bytes());
    Ok(())
}

fn merge_cmd(a: &loadgen::cli::MergeArgs) -> Result<ExitCode, Error> {
    match merge::merge_files(&a.files)? {
        Merged::Reports(r) => {
            let mut json = match &a.json {
                Some(p) => Some(
                    std::fs::File::create(p)
                        .map_err(|e| Error::Config(format!("cannot write {}: {e}", p.display())))?,
                ),
                None => None,
            };
            print_report(&r, json.as_mut())?;
        }
        Merged::Logs(intervals) => {
            print!("{}", merge::logs_text(&intervals));
            if let Some(p) = &a.hdr_log {
                loadgen::hdrlog::write_merged(p, &intervals)
                    .map_err(|e| Error::Config(format!("cannot write {}: {e}", p.display())))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
