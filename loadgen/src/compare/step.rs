//! One step of a comparison: start a fresh server for a subject, probe it (a capacity search, one
//! probe at the common rate, or one probe beside idle connections), stop it, and say what happened.

use std::path::PathBuf;
use std::time::Duration;

use super::args::CompareArgs;
use super::idle;
use super::pin::{self, CpuMask};
use super::plan::{Plan, Subject};
use super::probe::{self, Bound, Probe, ProbeOpts, Target};
use super::results::{CapacityStep, IdleStep, Status};
use super::server::{self, Server, Spec};

/// Descriptors a process keeps for itself (listener, stdio, epoll, /proc reads).
const SPARE_FDS: u64 = 64;
/// The threads backend's default stack per connection thread, KiB (`c10k serve --thread-stack`).
const THREAD_STACK_KIB: usize = 64;
/// A server that waited for its CPU this share of a failing probe (%) gets a note.
const SERVER_WAITED_PCT: f64 = 20.0;
/// How long idle connections may take to open.
const HOLD_CONNECT_TIME: Duration = Duration::from_secs(60);

/// Runs the steps of a [`Plan`], each on a fresh server.
pub(super) struct Runner<'a> {
    pub(super) p: &'a Plan,
    pub(super) a: &'a CompareArgs,
    pub(super) limits: crate::preflight::Limits,
    /// A probe was ended by a signal: the comparison stops after the step it was in.
    pub(super) interrupted: std::cell::Cell<bool>,
}

impl Runner<'_> {
    /// A probe's error as the step records it; notes an interruption for the caller.
    fn probe_error(&self, e: crate::error::Error) -> String {
        if matches!(e, crate::error::Error::Interrupted) {
            self.interrupted.set(true);
        }
        e.to_string()
    }
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
        if let Subject::Backend("threads") = subject {
            // A thread per connection, and pid_max and threads-max are the host's, whatever
            // the --workers.
            let cap = c10k::driver::threads::HostLimits::read().cap(THREAD_STACK_KIB);
            if conns > cap.threads as u64 {
                return Some(format!(
                    "n/a: the threads backend needs a thread per connection, and this host allows at most {} (bound by {})",
                    cap.threads, cap.bound
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

    pub(super) fn capacity(&self, subject: &Subject, conns: u64) -> CapacityStep {
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
        let mut threads = opts.threads;
        let result = probe::search(&self.p.search, &mut |rate| {
            let p = probe::run_retrying(target, &opts, &mut threads, rate)
                .map_err(|e| self.probe_error(e))?;
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
                // The server's own limit, or the machine's: say which when other work took
                // the server's CPU during the probe that set the bound.
                let lowest_fail = search
                    .probes
                    .iter()
                    .filter(|p| !p.pass)
                    .min_by(|a, b| a.target_rate.total_cmp(&b.target_rate));
                if let Some(w) = lowest_fail
                    .and_then(|p| p.server.as_ref())
                    .map(|s| s.waited_pct)
                    .filter(|&w| w >= SERVER_WAITED_PCT)
                {
                    step.notes.push(format!(
                        "contended: at the lowest failing rate the server waited for its CPU {w:.0}% of the window (other work on the machine, or its own threads): a low figure"
                    ));
                }
                if search.bound == Bound::Loadgen {
                    let lowest_fail = search
                        .probes
                        .iter()
                        .filter(|p| !p.pass)
                        .min_by(|a, b| a.target_rate.total_cmp(&b.target_rate));
                    step.notes.push(format!(
                        "loadgen-bound at {} req/s ({}; tried {} time{} with up to {} thread{}): give it more CPUs (--loadgen-cpus) or another host",
                        lowest_fail.map_or(0.0, |p| p.target_rate),
                        lowest_fail
                            .and_then(|p| p.loadgen_limit.as_deref())
                            .unwrap_or("its event loops were the limit"),
                        lowest_fail.map_or(1, |p| p.loadgen_retries + 1),
                        if lowest_fail.is_some_and(|p| p.loadgen_retries > 0) { "s" } else { "" },
                        lowest_fail.map_or(self.p.threads, |p| p.loadgen_threads),
                        if lowest_fail.map_or(self.p.threads, |p| p.loadgen_threads) > 1 { "s" } else { "" },
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
    pub(super) fn at_rate(
        &self,
        subject: &Subject,
        conns: u64,
        rate: f64,
    ) -> Result<Probe, String> {
        let mut opts = self.probe_opts(conns);
        opts.duration *= 2;
        let life = opts.duration + opts.warmup + Duration::from_secs(10);
        let mut started = self.start(subject, self.a.workers, life)?;
        let mut threads = opts.threads;
        let result = probe::run_retrying(started.target, &opts, &mut threads, rate)
            .map_err(|e| self.probe_error(e));
        let alive = started.server.check_alive();
        started.server.stop();
        alive?;
        result
    }

    pub(super) fn idle(&self, subject: &Subject, idle: u64, active: u64, rate: f64) -> IdleStep {
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
        let mut threads = opts.threads;
        let result = probe::run_retrying(started.target, &opts, &mut threads, rate)
            .map_err(|e| self.probe_error(e));
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
                if let Some(why) = probe.loadgen_limit.as_deref().filter(|_| !probe.pass) {
                    step.notes.push(format!(
                        "loadgen-bound ({why}): this row may measure loadgen"
                    ));
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
