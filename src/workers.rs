//! Worker processes: N copies of the server, each with its own SO_REUSEPORT listener (so the
//! kernel spreads connections across them, and each has its own descriptor limit), supervised by
//! a master that respawns a worker that dies and stops them all on SIGTERM.
//!
//! Invariants:
//! - The master never unblocks SIGCHLD, SIGTERM, SIGINT or SIGHUP: it reads them from a signalfd
//!   and nowhere else, so none meets its default action (killing the master and orphaning the
//!   workers) and no SIGCHLD is discarded (leaving a dead worker unreaped and unreplaced). A
//!   worker's mask is reset in the worker, between fork and exec.
//! - Every slot holds a live child or the time at which it gets one. A slot whose workers keep
//!   dying soon after they start waits longer each time (exponential, capped, logged), while the
//!   other slots go on serving: the master never exits because one slot fails.
//! - The master prints its own ready line only after every worker listens; after that, it exits
//!   only when told to, once every worker has exited (each drains on SIGTERM; one that outlives
//!   its grace period is killed).
//!
//! Workers are started by re-running this executable (not by `fork` alone), so that no worker
//! inherits a half-initialised copy of the master's state. They share the stats board, a memfd
//! whose descriptor they inherit, and die with the master (PDEATHSIG).

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use crate::board::Board;
use crate::sys;

/// How long a worker may take to print its ready line.
const WORKER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// A worker that dies sooner than this after it became ready (or before) counts as a quick death:
/// the slot backs off. One that served longer is replaced at once.
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(1);
/// The wait after the first quick death in a row; it doubles with each further one.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between attempts: a slot that keeps failing is retried this often.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long after their shutdown grace the master still waits for stopping workers before it
/// kills them (process exit and the last writes take a moment beyond the grace).
const STOP_MARGIN: Duration = Duration::from_secs(5);
/// A ready line is one short line; anything longer is not one.
const READY_LINE_MAX: usize = 4096;

/// Where workers listen and how to start one.
pub struct WorkerPlan {
    /// The address every worker binds (with a real port: the master picked it).
    pub listen: SocketAddr,
    pub count: usize,
    /// `serve` arguments for each worker, without `--listen`, `--workers` and the worker flags.
    pub serve_args: Vec<String>,
    /// The workers' `--shutdown-grace`: how long each may drain after SIGTERM.
    pub stop_grace: Duration,
}

enum SlotState {
    /// Started; its ready line is being read from `stdout`.
    Starting {
        child: Child,
        stdout: ChildStdout,
        line: Vec<u8>,
        spawned: Instant,
    },
    /// Printed its ready line at `since`; serving.
    Serving { child: Child, since: Instant },
    /// No process: the next one starts at `at`.
    Waiting { at: Instant },
}

struct Slot {
    state: SlotState,
    /// Quick deaths (or failed starts) in a row; the back-off grows with it.
    quick_deaths: u32,
}

impl Slot {
    fn child(&mut self) -> Option<&mut Child> {
        match &mut self.state {
            SlotState::Starting { child, .. } | SlotState::Serving { child, .. } => Some(child),
            SlotState::Waiting { .. } => None,
        }
    }
}

/// The wait before the next start after `quick_deaths` quick deaths in a row.
fn backoff(quick_deaths: u32) -> Duration {
    match quick_deaths {
        0 => Duration::ZERO,
        n => BACKOFF_FIRST
            .saturating_mul(1 << (n - 1).min(16))
            .min(BACKOFF_MAX),
    }
}

struct Master<'a> {
    plan: &'a WorkerPlan,
    board: Board,
    slots: Vec<Slot>,
    /// Whether the ready line was printed: before it, any failure to start is fatal (a
    /// configuration the workers reject), after it, a slot that fails backs off.
    announced: bool,
    /// The first failure before the ready line.
    startup_error: Option<String>,
}

/// Runs the master: starts the workers, calls `ready` once all listen, supervises until SIGTERM or
/// SIGINT, then stops them. Returns an error if a worker cannot be started at all.
pub fn supervise(plan: &WorkerPlan, ready: impl FnOnce()) -> Result<(), String> {
    let signals = master_signals().map_err(|e| format!("cannot set up signals: {e}"))?;
    let board =
        Board::create(plan.count).map_err(|e| format!("cannot create the stats board: {e}"))?;
    let now = Instant::now();
    let mut master = Master {
        plan,
        board,
        slots: (0..plan.count)
            .map(|_| Slot {
                state: SlotState::Waiting { at: now },
                quick_deaths: 0,
            })
            .collect(),
        announced: false,
        startup_error: None,
    };
    let mut ready = Some(ready);
    loop {
        master.start_due();
        if let Some(e) = master.startup_error.take() {
            master.stop(&signals);
            return Err(e);
        }
        if !master.announced && master.all_serving() {
            master.announced = true;
            if let Some(ready) = ready.take() {
                ready();
            }
            log::info!(
                "master {}: {} workers on {}",
                std::process::id(),
                plan.count,
                plan.listen
            );
        }
        master.wait(&signals);
        master.read_ready_lines();
        // Drained whole each turn: the signalfd is non-blocking.
        loop {
            let info = match signals.read_signal() {
                Ok(Some(info)) => info,
                Ok(None) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    master.stop(&signals);
                    return Err(format!("reading signals: {e}"));
                }
            };
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => master.reap(),
                Ok(Signal::SIGHUP) => {
                    log::info!("SIGHUP ignored: c10k has no configuration to reload")
                }
                Ok(signal @ (Signal::SIGTERM | Signal::SIGINT)) => {
                    log::info!("{signal}: stopping the workers");
                    master.stop(&signals);
                    return Ok(());
                }
                _ => {}
            }
        }
        master.expire_starts();
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
    // Blocked for good: see the module's first invariant.
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
}

impl Master<'_> {
    fn all_serving(&self) -> bool {
        self.slots
            .iter()
            .all(|s| matches!(s.state, SlotState::Serving { .. }))
    }

    /// Starts every waiting slot whose time has come.
    fn start_due(&mut self) {
        let now = Instant::now();
        for index in 0..self.slots.len() {
            let SlotState::Waiting { at } = self.slots[index].state else {
                continue;
            };
            if at > now {
                continue;
            }
            match self.spawn(index) {
                Ok((child, stdout)) => {
                    log::debug!("worker {index}: started pid {}", child.id());
                    self.slots[index].state = SlotState::Starting {
                        child,
                        stdout,
                        line: Vec::new(),
                        spawned: now,
                    };
                }
                Err(e) => self.failed(index, &format!("could not be started: {e}")),
            }
        }
    }

    /// Starts worker `index`; its ready line is read later, from the returned pipe.
    fn spawn(&self, index: usize) -> std::io::Result<(Child, ChildStdout)> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .args(&self.plan.serve_args)
            .args(["--listen", &self.plan.listen.to_string()])
            .args([
                "--worker-index",
                &index.to_string(),
                "--worker-count",
                &self.plan.count.to_string(),
                "--stats-board-fd",
                &self.board.raw_fd().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // The worker starts with no signal blocked (it blocks its own) and with the board.
        sys::prepare_child(&mut command, self.board.raw_fd());
        let mut child = command.spawn()?;
        let stdout = child.stdout.take();
        let piped = stdout.ok_or_else(|| std::io::Error::other("no stdout pipe"));
        match piped.and_then(|out| sys::set_nonblocking(out.as_raw_fd(), true).map(|()| out)) {
            Ok(stdout) => Ok((child, stdout)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Sleeps until a signal, a starting worker's output, or the next deadline (a slot's start,
    /// a ready line's timeout).
    fn wait(&self, signals: &SignalFd) {
        let mut fds = vec![libc::pollfd {
            fd: signals.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let mut next: Option<Instant> = None;
        for slot in &self.slots {
            let deadline = match &slot.state {
                SlotState::Starting {
                    stdout, spawned, ..
                } => {
                    fds.push(libc::pollfd {
                        fd: stdout.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    *spawned + WORKER_READY_TIMEOUT
                }
                SlotState::Waiting { at } => *at,
                SlotState::Serving { .. } => continue,
            };
            next = Some(next.map_or(deadline, |n| n.min(deadline)));
        }
        let timeout = next.map(|n| n.saturating_duration_since(Instant::now()));
        if let Err(e) = sys::poll(&mut fds, timeout) {
            // Not expected (the set is tiny and valid); the loop re-checks everything anyway.
            log::warn!("master poll: {e}");
        }
    }

    /// Reads what starting workers wrote; a complete ready line makes a worker serving.
    fn read_ready_lines(&mut self) {
        for index in 0..self.slots.len() {
            let SlotState::Starting { stdout, line, .. } = &mut self.slots[index].state else {
                continue;
            };
            let mut chunk = [0u8; 512];
            let outcome = match stdout.read(&mut chunk) {
                Ok(0) => Err("closed its stdout without a ready line".to_string()),
                Ok(n) => {
                    line.extend_from_slice(&chunk[..n]);
                    match line.iter().position(|&b| b == b'\n') {
                        Some(end) if line.starts_with(b"listening on ") => {
                            Ok(Some(String::from_utf8_lossy(&line[..end]).into_owned()))
                        }
                        Some(_) => Err(format!(
                            "printed {:?} instead of its ready line",
                            String::from_utf8_lossy(line)
                        )),
                        None if line.len() > READY_LINE_MAX => {
                            Err("printed too long a ready line".to_string())
                        }
                        None => Ok(None),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(None),
                Err(e) => Err(format!("stdout unreadable: {e}")),
            };
            match outcome {
                Ok(None) => {}
                Ok(Some(ready_line)) => {
                    let state = std::mem::replace(
                        &mut self.slots[index].state,
                        SlotState::Waiting { at: Instant::now() },
                    );
                    if let SlotState::Starting { child, .. } = state {
                        // The pipe closes here: a worker prints nothing more on stdout.
                        log::debug!("worker {index} (pid {}): {ready_line}", child.id());
                        self.slots[index].state = SlotState::Serving {
                            child,
                            since: Instant::now(),
                        };
                    }
                }
                Err(reason) => self.kill_starting(index, &reason),
            }
        }
    }

    /// Gives up on workers that did not print their ready line in time.
    fn expire_starts(&mut self) {
        let now = Instant::now();
        for index in 0..self.slots.len() {
            if let SlotState::Starting { spawned, .. } = self.slots[index].state {
                if now >= spawned + WORKER_READY_TIMEOUT {
                    let reason = format!("printed no ready line in {WORKER_READY_TIMEOUT:?}");
                    self.kill_starting(index, &reason);
                }
            }
        }
    }

    /// Kills and reaps the starting worker in slot `index`, and counts a failure.
    fn kill_starting(&mut self, index: usize, reason: &str) {
        if let Some(child) = self.slots[index].child() {
            let _ = child.kill();
            let status = child.wait();
            let reason = match status {
                Ok(status) => format!("{reason} and {}", describe(status)),
                Err(_) => reason.to_string(),
            };
            self.board.clear(index);
            self.failed(index, &reason);
        }
    }

    /// Reaps every worker that has ended (one SIGCHLD may stand for several) and schedules its
    /// replacement.
    fn reap(&mut self) {
        let now = Instant::now();
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            let Some(child) = slot.child() else {
                continue;
            };
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            let pid = child.id();
            let served = match slot.state {
                SlotState::Serving { since, .. } => Some(now - since),
                _ => None,
            };
            self.board.clear(index);
            match served {
                Some(served) if served >= CRASH_LOOP_WINDOW => {
                    let slot = &mut self.slots[index];
                    slot.quick_deaths = 0;
                    slot.state = SlotState::Waiting { at: now };
                    log::warn!(
                        "worker {index} (pid {pid}) {} after serving {served:.1?}; replacing it",
                        describe(status),
                    );
                }
                Some(served) => {
                    let reason = format!(
                        "(pid {pid}) {} {served:.1?} after it started serving",
                        describe(status)
                    );
                    self.failed(index, &reason);
                }
                None => {
                    let reason = format!("(pid {pid}) {} before it was ready", describe(status));
                    self.failed(index, &reason);
                }
            }
        }
    }

    /// Counts a quick death or failed start in slot `index` (whose process, if any, is reaped)
    /// and schedules the next attempt after the back-off.
    fn failed(&mut self, index: usize, reason: &str) {
        if !self.announced {
            self.startup_error
                .get_or_insert_with(|| format!("worker {index} did not start: {reason}"));
            self.slots[index].state = SlotState::Waiting {
                at: Instant::now() + BACKOFF_MAX,
            };
            return;
        }
        let slot = &mut self.slots[index];
        slot.quick_deaths = slot.quick_deaths.saturating_add(1);
        let delay = backoff(slot.quick_deaths);
        slot.state = SlotState::Waiting {
            at: Instant::now() + delay,
        };
        log::warn!(
            "worker {index} {reason}; quick deaths in a row: {}; backing off, next start in {delay:?} \
             (the other workers go on serving)",
            slot.quick_deaths
        );
    }

    /// Sends SIGTERM to every worker and waits for all to exit: each gets its shutdown grace
    /// (plus a margin) to drain, after which it is killed.
    fn stop(&mut self, signals: &SignalFd) {
        for slot in &mut self.slots {
            if let Some(child) = slot.child() {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + self.plan.stop_grace + STOP_MARGIN;
        loop {
            for slot in &mut self.slots {
                let Some(child) = slot.child() else { continue };
                match child.try_wait() {
                    Ok(None) => continue,
                    Ok(Some(status)) if !status.success() => {
                        log::warn!("worker pid {} {}", child.id(), describe(status));
                    }
                    Ok(Some(_)) | Err(_) => {}
                }
                slot.state = SlotState::Waiting { at: deadline };
            }
            if self.slots.iter_mut().all(|s| s.child().is_none()) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let mut fds = [libc::pollfd {
                fd: signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let _ = sys::poll(&mut fds, Some(deadline - now));
            // Only a wake-up: SIGCHLD is what the loop waits for, and a second SIGTERM or
            // SIGINT changes nothing (the deadline already bounds the wait).
            while let Ok(Some(_)) = signals.read_signal() {}
        }
        for slot in &mut self.slots {
            if let Some(child) = slot.child() {
                log::warn!(
                    "worker pid {} did not stop within {:?}; killing it",
                    child.id(),
                    self.plan.stop_grace + STOP_MARGIN
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_quick_death_and_is_capped() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), BACKOFF_FIRST);
        assert_eq!(backoff(2), 2 * BACKOFF_FIRST);
        assert_eq!(backoff(4), 8 * BACKOFF_FIRST);
        assert_eq!(backoff(8), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
