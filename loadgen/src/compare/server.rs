//! One c10k server process per step: started on a free loopback port, its ready line read, its
//! last stderr lines kept (to explain a failure), `/stats` asked over HTTP, its process tree sampled
//! in /proc (CPU time, resident memory), stopped with SIGTERM.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

use super::pin::CpuMask;
use c10k::models::{BackendKind, BACKENDS};

/// How long a server may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of stderr kept (besides the summary lines) to explain a failure.
const TAIL_LINES: usize = 20;
/// /proc/PID/stat counts CPU time in USER_HZ ticks, 100 per second on Linux.
const TICK_US: u64 = 10_000;

/// What a server was asked to be.
pub struct Spec<'a> {
    pub exe: &'a Path,
    pub backend: &'a str,
    pub proto: &'a str,
    pub workers: Option<usize>,
    pub idle_timeout_s: u64,
    /// Pin the server (and every thread and worker it starts) to these CPUs.
    pub cpus: Option<CpuMask>,
}

#[derive(Default)]
struct Captured {
    tail: VecDeque<String>,
}

/// A running server; killed (its whole process group) if dropped before [`Server::stop`].
pub struct Server {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    captured: Arc<Mutex<Captured>>,
    readers: Vec<JoinHandle<()>>,
    stopped: bool,
}

/// What a stopped server left.
pub struct Stopped {
    pub status: Option<ExitStatus>,
    pub tail: Vec<String>,
}

impl Server {
    pub fn start(spec: &Spec) -> Result<Server, String> {
        let mut cmd = Command::new(spec.exe);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            spec.backend,
        ])
        .args(["--proto", spec.proto])
        .args(["--idle-timeout", &spec.idle_timeout_s.to_string()])
        // Idle connections of the sweep never send a byte: they must not time out as slow
        // request heads either.
        .args(["--header-timeout", &spec.idle_timeout_s.to_string()])
        .args(["--shutdown-grace", "2"]);
        if let Some(w) = spec.workers {
            cmd.args(["--workers", &w.to_string()]);
        }
        // A server that spins never sleeps, so it has no wake-up for SCHED_FIFO (`--sched-fifo`)
        // to speed up, and under it the kernel's real-time throttling would stop it for 50 ms of
        // every second: it keeps the default policy.
        let spins = BACKENDS
            .iter()
            .any(|b| b.name == spec.backend && b.kind == BackendKind::BusyPoll);
        Server::launch(cmd, spec.cpus, spins)
    }

    /// Starts any server that prints `listening on <ip:port> ...` on stdout when ready (c10k,
    /// or a peer from benches/peers).
    pub fn start_command(cmd: Command, cpus: Option<CpuMask>) -> Result<Server, String> {
        Server::launch(cmd, cpus, false)
    }

    /// [`Server::start_command`]; `default_policy`: the server runs under SCHED_OTHER whatever
    /// loadgen's own policy.
    fn launch(
        mut cmd: Command,
        cpus: Option<CpuMask>,
        default_policy: bool,
    ) -> Result<Server, String> {
        let exe = cmd.get_program().to_string_lossy().into_owned();
        // loadgen blocks SIGINT and SIGTERM in its threads (its event loops take them through a
        // signalfd), and a blocked mask survives exec: unblock them, or SIGTERM would not stop
        // a server that does not unblock them itself (the peers).
        let mut unblock = SigSet::empty();
        unblock.add(Signal::SIGINT);
        unblock.add(Signal::SIGTERM);
        // SAFETY: the hook runs between fork and exec and makes up to three syscalls on values
        // built before the fork: nothing allocates or takes a lock.
        unsafe {
            cmd.pre_exec(move || {
                pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&unblock), None)?;
                if let Some(mask) = cpus {
                    mask.apply_to_this_thread()?;
                }
                if default_policy {
                    super::pin::set_sched_other()?;
                }
                Ok(())
            });
        }
        // Its own process group: a Ctrl-C in the terminal reaches loadgen, which stops it.
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {exe}: {e}"))?;
        let pid = child.id();
        let captured = Arc::new(Mutex::new(Captured::default()));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        let out_reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) > 0 {
                let _ = tx.send(line);
            }
            drop(tx);
            // Keep the pipe drained so that the server never blocks on it.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        });
        let cap = Arc::clone(&captured);
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut c = cap.lock().unwrap_or_else(|e| e.into_inner());
                if c.tail.len() == TAIL_LINES {
                    c.tail.pop_front();
                }
                c.tail.push_back(line);
            }
        });
        let mut server = Server {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            captured,
            readers: vec![out_reader, err_reader],
            stopped: false,
        };
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "no ready line within {} s",
                    READY_TIMEOUT.as_secs()
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = server.wait_exit(Duration::from_secs(2));
                return Err(format!(
                    "the server exited before its ready line ({}){}",
                    describe(status),
                    server.last_words()
                ));
            }
        };
        // "listening on <ip:port> backend=<name> proto=<echo|http>[ workers=N]"
        server.addr = line
            .strip_prefix("listening on ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("unexpected ready line {:?}", line.trim_end()))?;
        Ok(server)
    }

    /// Err when the server has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(s)) => {
                self.stopped = true;
                Err(format!(
                    "the server exited during the step ({}){}",
                    describe(Some(s)),
                    self.last_words()
                ))
            }
            Err(e) => Err(format!("cannot wait for the server: {e}")),
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL to the group after a timeout).
    pub fn stop(mut self) -> Stopped {
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let status = super::pin::at_default_policy(|| {
            let status = self.wait_exit(STOP_TIMEOUT);
            if status.is_none() {
                let _ = kill(Pid::from_raw(-(self.pid as i32)), Signal::SIGKILL);
            }
            status.or_else(|| self.child.wait().ok())
        });
        self.stopped = true;
        // The pipes close when every process of the server has exited.
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        let c = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        Stopped {
            status,
            tail: c.tail.iter().cloned().collect(),
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return None,
            }
        }
    }

    /// The last stderr lines, for an error message.
    fn last_words(&self) -> String {
        // Give the reader a moment to collect what the process wrote before it died.
        std::thread::sleep(Duration::from_millis(50));
        let c = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        match c.tail.back() {
            Some(l) => format!(": {}", l.trim()),
            None => String::new(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = kill(Pid::from_raw(-(self.pid as i32)), Signal::SIGKILL);
            let _ = self.child.kill();
            super::pin::at_default_policy(|| self.child.wait().ok());
        }
    }
}

pub fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => s.to_string(),
        None => "still running".into(),
    }
}

/// `GET /stats` on a connection of its own: the parsed JSON document.
pub fn fetch_stats(addr: SocketAddr, timeout: Duration) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: compare\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(body.trim()).ok()
}

/// A process and its descendants, from the parent links in /proc.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(f) = stat_fields(pid) {
                if let Some(ppid) = f.get(1).and_then(|p| p.parse::<u32>().ok()) {
                    children.entry(ppid).or_default().push(pid);
                }
            }
        }
    }
    let mut out = vec![root];
    let mut seen: HashSet<u32> = out.iter().copied().collect();
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            for &p in c {
                if seen.insert(p) {
                    out.push(p);
                }
            }
        }
        i += 1;
    }
    out
}

/// The fields of /proc/PID/stat after the command name: [0] state, [1] ppid, ... [11] utime,
/// [12] stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// CPU time of these processes, µs: the run time of their live threads from
/// /proc/PID/task/TID/schedstat (nanoseconds, so that a short probe at a low rate is resolved),
/// plus the time of the threads that have exited: the process's user + system time in
/// /proc/PID/stat (which keeps what reaped threads used) less that of its live threads (10 ms
/// ticks). The threads backend's threads live as long as their connection: without the second
/// part, a window in which they exit would lose their time, and even go backwards.
pub fn cpu_us(pids: &[u32]) -> u64 {
    cpu_us_in(Path::new("/proc"), pids)
}

fn cpu_us_in(proc: &Path, pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| {
            let dir = proc.join(p.to_string());
            let total_ticks = stat_ticks(&dir.join("stat"));
            let live = if many_threads(&dir) {
                None
            } else {
                tasks_sched_time(&dir)
            };
            let Some(live) = live else {
                return total_ticks.map(|t| t * TICK_US);
            };
            let exited_ticks = total_ticks.unwrap_or(0).saturating_sub(live.stat_ticks);
            Some(live.run_ns / 1000 + exited_ticks * TICK_US)
        })
        .sum()
}

/// Time the threads of a process ran and waited for a CPU, ns (schedstat's first two fields).
#[derive(Clone, Copy, Debug, Default)]
pub struct SchedTime {
    pub run_ns: u64,
    pub wait_ns: u64,
}

/// Above this many threads a process's CPU time is read from /proc/PID/stat alone (10 ms
/// ticks), not thread by thread. Every /proc/PID/task/TID file read leaves dentries behind, and
/// the kernel walks them all again each time one of the threads exits
/// (`proc_invalidate_siblings_dcache`): sampling the threads backend at 10,000 connections
/// thread by thread left its exit, and the comparison's `wait4` for it, spinning in `d_walk`
/// for over 20 minutes. A probe of a second at 10 ms ticks still resolves 1%.
const PER_THREAD_MAX: u64 = 64;

/// Whether the process at `dir` has more than [`PER_THREAD_MAX`] threads.
fn many_threads(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .is_some_and(|n| n > PER_THREAD_MAX)
}

/// The [`SchedTime`] of a process's live threads (None for a process of more than
/// [`PER_THREAD_MAX`] threads, whose waits are then not known).
pub fn sched_time(pid: u32) -> Option<SchedTime> {
    if many_threads(&Path::new("/proc").join(pid.to_string())) {
        return None;
    }
    let tasks = std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("task")).ok()?;
    let mut out = SchedTime::default();
    for t in tasks.flatten() {
        let text = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        let mut fields = text.split_whitespace().map(|v| v.parse::<u64>().ok());
        out.run_ns += fields.next().flatten().unwrap_or(0);
        out.wait_ns += fields.next().flatten().unwrap_or(0);
    }
    Some(out)
}

struct LiveTasks {
    run_ns: u64,
    wait_ns: u64,
    /// Their user + system time from their own stat files, ticks.
    stat_ticks: u64,
}

fn tasks_sched_time(process_dir: &Path) -> Option<LiveTasks> {
    let tasks = std::fs::read_dir(process_dir.join("task")).ok()?;
    let mut live = LiveTasks {
        run_ns: 0,
        wait_ns: 0,
        stat_ticks: 0,
    };
    let mut any = false;
    for t in tasks.flatten() {
        let text = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        let mut fields = text.split_whitespace().map(|v| v.parse::<u64>().ok());
        if let Some(Some(run)) = fields.next() {
            live.run_ns += run;
            live.wait_ns += fields.next().flatten().unwrap_or(0);
            live.stat_ticks += stat_ticks(&t.path().join("stat")).unwrap_or(0);
            any = true;
        }
    }
    any.then_some(live)
}

/// utime + stime of a /proc stat file, ticks.
fn stat_ticks(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let f: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let u: u64 = f.get(11)?.parse().ok()?;
    let s: u64 = f.get(12)?.parse().ok()?;
    Some(u + s)
}

/// A /proc/PID/status memory field (`VmRSS`, `VmHWM`) summed over these processes, KiB.
pub fn status_kib(pids: &[u32], field: &str) -> u64 {
    pids.iter()
        .filter_map(|&p| {
            let text = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let line = text
                .lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A /proc entry with `ticks` of user + system time for the whole process, and live threads
    /// given as (schedstat run ns, their own ticks).
    fn fake_process(root: &Path, pid: u32, ticks: (u64, u64), live: &[(u64, u64)]) {
        let stat = |u: u64, s: u64| {
            format!("{pid} (c10k) S 1 1 1 0 -1 0 0 0 0 0 {u} {s} 0 0 20 0 1 0 0 0 0\n")
        };
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(dir.join("task")).unwrap();
        std::fs::write(dir.join("stat"), stat(ticks.0, ticks.1)).unwrap();
        for (i, &(run_ns, t)) in live.iter().enumerate() {
            let task = dir.join("task").join((pid + i as u32).to_string());
            std::fs::create_dir_all(&task).unwrap();
            std::fs::write(task.join("schedstat"), format!("{run_ns} 5000 7\n")).unwrap();
            std::fs::write(task.join("stat"), stat(t, 0)).unwrap();
        }
    }

    #[test]
    fn cpu_time_keeps_what_exited_threads_used() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Two live threads (100 ms and 20 ms, 10 and 2 ticks); the process has used 40 ticks
        // in all: 28 ticks (280 ms) were used by threads that have exited (a closed
        // connection's thread, on the threads backend).
        fake_process(root, 4242, (30, 10), &[(100_000_000, 10), (20_000_000, 2)]);
        let us = cpu_us_in(root, &[4242]);
        assert_eq!(us, 120_000 + 280_000);
    }

    #[test]
    fn a_process_of_many_threads_is_read_from_its_stat_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Its threads' schedstat says 100 ms, its stat 40 ticks (400 ms): with more than
        // PER_THREAD_MAX threads only the stat is read.
        fake_process(root, 4243, (30, 10), &[(100_000_000, 10)]);
        let status = |n: u64| format!("Name:\tc10k\nThreads:\t{n}\n");
        std::fs::write(root.join("4243/status"), status(PER_THREAD_MAX + 1)).unwrap();
        assert_eq!(cpu_us_in(root, &[4243]), 400_000);
        std::fs::write(root.join("4243/status"), status(PER_THREAD_MAX)).unwrap();
        assert_eq!(cpu_us_in(root, &[4243]), 100_000 + 300_000);
    }
}
