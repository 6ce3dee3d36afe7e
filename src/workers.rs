//! Worker processes: N copies of the server, each with its own SO_REUSEPORT listener (so the
//! kernel spreads connections across them, and each has its own descriptor limit), supervised by
//! a master that respawns a worker that dies and stops them all on SIGTERM.
//!
//! Invariant: while the master runs, every worker slot holds a live child that has printed its
//! ready line, except for the moment between a worker's death and its replacement. The master
//! prints its own ready line only after every worker listens. Workers are started by re-running
//! this executable (not by `fork` alone), so that no worker inherits a half-initialised copy of
//! the master's state and no unsafe code is needed to start one.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

/// How long a worker may take to print its ready line.
const WORKER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// A worker that dies sooner than this after starting counts as a crash loop.
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(1);
/// After this many quick deaths in a row the master stops respawning and exits.
const MAX_QUICK_DEATHS: u32 = 5;

/// Where workers listen and how to start one.
pub struct WorkerPlan {
    /// The address every worker binds (with a real port: the master picked it).
    pub listen: SocketAddr,
    pub count: usize,
    /// `serve` arguments for each worker, without `--listen`, `--workers` and the worker flags.
    pub serve_args: Vec<String>,
}

struct Worker {
    child: Child,
    started: Instant,
    quick_deaths: u32,
}

/// Runs the master: starts the workers, calls `ready` once all listen, supervises until SIGTERM or
/// SIGINT, then stops them. Returns an error if a worker cannot be started at all.
pub fn supervise(plan: &WorkerPlan, ready: impl FnOnce()) -> Result<(), String> {
    let signals = master_signals().map_err(|e| format!("cannot set up signals: {e}"))?;
    let mut workers: Vec<Worker> = Vec::with_capacity(plan.count);
    for index in 0..plan.count {
        match spawn_worker(plan, index) {
            Ok(child) => workers.push(Worker {
                child,
                started: Instant::now(),
                quick_deaths: 0,
            }),
            Err(e) => {
                stop_all(&mut workers, Signal::SIGKILL);
                return Err(format!("worker {index} did not start: {e}"));
            }
        }
    }
    ready();
    log::info!(
        "master {}: {} workers on {}",
        std::process::id(),
        plan.count,
        plan.listen
    );
    loop {
        // Blocks until SIGCHLD, SIGTERM, SIGINT or SIGHUP.
        let info = match signals.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("reading signals: {e}")),
        };
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGCHLD) => respawn_dead(plan, &mut workers)?,
            Ok(Signal::SIGHUP) => log::info!("SIGHUP ignored: c10k has no configuration to reload"),
            Ok(signal) => {
                log::info!("{signal}: stopping {} workers", workers.len());
                stop_all(&mut workers, Signal::SIGTERM);
                return Ok(());
            }
            Err(_) => {}
        }
    }
}

fn master_signals() -> nix::Result<SignalFd> {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(signal);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC)
}

/// Starts worker `index` and waits for its ready line.
fn spawn_worker(plan: &WorkerPlan, index: usize) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .args(&plan.serve_args)
        .args(["--listen", &plan.listen.to_string()])
        .args([
            "--worker-index",
            &index.to_string(),
            "--worker-count",
            &plan.count.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // The master blocks these to read them from a signalfd; a worker must start with them
    // unblocked (it blocks its own), and the mask is inherited across exec.
    let mut child = with_signals_unblocked(|| command.spawn()).map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let result = BufReader::new(stdout).read_line(&mut line).map(|_| line);
        let _ = tx.send(result);
    });
    match rx.recv_timeout(WORKER_READY_TIMEOUT) {
        Ok(Ok(line)) if line.starts_with("listening on ") => {
            log::debug!("worker {index} (pid {}): {}", child.id(), line.trim_end());
            Ok(child)
        }
        other => {
            let _ = child.kill();
            let status = child.wait().ok();
            Err(format!("no ready line ({other:?}); exit status {status:?}"))
        }
    }
}

fn with_signals_unblocked<T>(f: impl FnOnce() -> T) -> T {
    let mut blocked = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        blocked.add(signal);
    }
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&blocked), None);
    let result = f();
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None);
    result
}

fn respawn_dead(plan: &WorkerPlan, workers: &mut [Worker]) -> Result<(), String> {
    for (index, worker) in workers.iter_mut().enumerate() {
        let Ok(Some(status)) = worker.child.try_wait() else {
            continue;
        };
        let old_pid = worker.child.id();
        if worker.started.elapsed() < CRASH_LOOP_WINDOW {
            worker.quick_deaths += 1;
        } else {
            worker.quick_deaths = 0;
        }
        if worker.quick_deaths >= MAX_QUICK_DEATHS {
            return Err(format!(
                "worker {index} died {MAX_QUICK_DEATHS} times within {CRASH_LOOP_WINDOW:?} of starting; giving up"
            ));
        }
        match spawn_worker(plan, index) {
            Ok(child) => {
                log::warn!(
                    "worker {index} (pid {old_pid}) {}; respawned as pid {}",
                    describe(status),
                    child.id()
                );
                worker.child = child;
                worker.started = Instant::now();
            }
            Err(e) => {
                return Err(format!(
                    "worker {index} died and could not be respawned: {e}"
                ))
            }
        }
    }
    Ok(())
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signo)) => match Signal::try_from(signo) {
            Ok(signal) => format!("was killed by {signal}"),
            Err(_) => format!("was killed by signal {signo}"),
        },
        _ => "ended".to_string(),
    }
}

/// Sends `signal` to every worker and waits for each; SIGTERM gives them their grace period
/// (they finish in-flight responses), and a worker that outlives it by far is killed.
fn stop_all(workers: &mut [Worker], signal: Signal) {
    for worker in workers.iter() {
        let _ = kill(Pid::from_raw(worker.child.id() as i32), signal);
    }
    for worker in workers.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match worker.child.try_wait() {
                Ok(Some(status)) if !status.success() && signal == Signal::SIGTERM => {
                    log::warn!("worker pid {} {}", worker.child.id(), describe(status));
                    break;
                }
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    log::warn!("worker pid {} did not stop; killing it", worker.child.id());
                    let _ = worker.child.kill();
                    let _ = worker.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

/// In a worker: ask the kernel for SIGTERM if the master dies, so that killing the master
/// (even with SIGKILL) never leaves orphaned workers holding the port.
pub fn follow_master() -> nix::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
    // The master may have died before the request above took effect.
    if nix::unistd::getppid() == Pid::from_raw(1) {
        return Err(nix::errno::Errno::ESRCH);
    }
    Ok(())
}
