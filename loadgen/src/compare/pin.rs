//! Pinning the server and loadgen to disjoint CPUs (sched_setaffinity), so that the server's
//! CPU time is its own and loadgen cannot steal the server's core (or the reverse).
//!
//! The server is pinned in the child between fork and exec (the mask survives exec and every
//! thread it starts inherits it); loadgen is pinned by pinning the comparison's own thread
//! before it starts loadgen's threads and `loadgen hold` processes, which inherit the mask.

use std::io;

/// A CPU list as Linux writes it: `0`, `1-3`, `0,2-3`.
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("{part:?} is not a CPU number or range (e.g. 0, 1-3, 0,2)");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if b < a {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err("an empty CPU list".into());
    }
    out.sort_unstable();
    out.dedup();
    if out.iter().any(|&c| c >= MAX_CPUS) {
        return Err(format!("CPU numbers must be below {MAX_CPUS}"));
    }
    Ok(out)
}

/// `[0, 2, 3]` → `0,2-3`.
pub fn format_cpus(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// The largest CPU number a `cpu_set_t` holds.
const MAX_CPUS: usize = 8 * std::mem::size_of::<libc::cpu_set_t>();

/// The mask for `cpus`, built before any fork so that the child only makes the syscall.
#[derive(Clone, Copy)]
pub struct CpuMask(libc::cpu_set_t);

impl CpuMask {
    pub fn new(cpus: &[usize]) -> CpuMask {
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in cpus.iter().filter(|&&c| c < MAX_CPUS) {
            // SAFETY: c < MAX_CPUS, the number of bits in the set.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        CpuMask(set)
    }

    /// Pins the calling thread (and what it starts afterwards). Async-signal-safe: one syscall
    /// on memory already built, so it may run between fork and exec.
    pub fn apply_to_this_thread(&self) -> io::Result<()> {
        // SAFETY: pid 0 is the calling thread; the set is a valid cpu_set_t of the size given.
        let rc =
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Puts the calling thread under SCHED_FIFO at `priority` (1-99); the threads and processes it
/// starts afterwards inherit it. Needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least `priority`.
pub fn set_sched_fifo(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Puts the calling thread back under the default policy (SCHED_OTHER). Async-signal-safe: one
/// syscall on a value on the stack, so it may run between fork and exec.
pub fn set_sched_other() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `f` with the calling thread under the default policy (SCHED_OTHER), then puts its own
/// policy back. Under `--sched-fifo` the comparison reaps its children this way: reaping a
/// server of a thousand threads makes the kernel walk their /proc entries inside `wait4`, and a
/// real-time thread doing that cannot be preempted by the ordinary tasks it may be waiting on
/// (twice a run sat in that walk for over 20 minutes; never at the default policy).
pub fn at_default_policy<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: pid 0 is the calling thread; no pointer is passed.
    let policy = unsafe { libc::sched_getscheduler(0) };
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is writable and of the right type.
    let known = policy >= 0 && unsafe { libc::sched_getparam(0, &mut param) } == 0;
    let lowered = known && policy != libc::SCHED_OTHER && set_sched_other().is_ok();
    let out = f();
    if lowered {
        // SAFETY: pid 0 is the calling thread; `param` is the valid sched_param read above.
        let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
        if rc != 0 {
            log::warn!(
                "cannot restore this thread's scheduling policy: {}",
                io::Error::last_os_error()
            );
        }
    }
    out
}

/// The CPUs this thread may run on (what a container or `taskset` left us).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: all zeroes is the empty set; the kernel fills at most size_of bytes.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is writable and of the size given.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (0..n).collect();
    }
    // SAFETY: every c is below MAX_CPUS, the number of bits in the set.
    (0..MAX_CPUS)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// `Cpus_allowed_list` of a process from /proc: what the kernel says it may run on.
pub fn observed_cpus(pid: u32) -> Option<Vec<usize>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpus(line.trim()).ok()
}

/// Where the server and loadgen run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// None: not pinned (one CPU, or `--no-pin`).
    pub server: Option<Vec<usize>>,
    pub loadgen: Option<Vec<usize>>,
}

/// Default: the server on the first allowed CPU, loadgen on the others. With one CPU there is
/// nothing to separate.
pub fn default_placement(allowed: &[usize]) -> Placement {
    if allowed.len() < 2 {
        return Placement {
            server: None,
            loadgen: None,
        };
    }
    Placement {
        server: Some(vec![allowed[0]]),
        loadgen: Some(allowed[1..].to_vec()),
    }
}

/// Checks that the two sets are disjoint and allowed.
pub fn check_placement(p: &Placement, allowed: &[usize]) -> Result<(), String> {
    for (who, cpus) in [("--server-cpus", &p.server), ("--loadgen-cpus", &p.loadgen)] {
        if let Some(cpus) = cpus {
            if let Some(c) = cpus.iter().find(|c| !allowed.contains(c)) {
                return Err(format!(
                    "{who}: CPU {c} is not available here (allowed: {})",
                    format_cpus(allowed)
                ));
            }
        }
    }
    if let (Some(s), Some(l)) = (&p.server, &p.loadgen) {
        if let Some(c) = s.iter().find(|c| l.contains(c)) {
            return Err(format!(
                "--server-cpus and --loadgen-cpus share CPU {c}: they must be disjoint"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_round_trip() {
        assert_eq!(parse_cpus("0,2-3").unwrap(), vec![0, 2, 3]);
        assert_eq!(format_cpus(&[0, 2, 3]), "0,2-3");
        assert_eq!(format_cpus(&[1]), "1");
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("x").is_err());
        assert!(parse_cpus("").is_err());
    }

    #[test]
    fn default_placement_is_disjoint() {
        let p = default_placement(&[0, 1]);
        assert_eq!(p.server, Some(vec![0]));
        assert_eq!(p.loadgen, Some(vec![1]));
        assert!(check_placement(&p, &[0, 1]).is_ok());
        assert_eq!(default_placement(&[0]).server, None);
        let overlap = Placement {
            server: Some(vec![0, 1]),
            loadgen: Some(vec![1]),
        };
        assert!(check_placement(&overlap, &[0, 1]).is_err());
    }

    #[test]
    fn reaping_runs_at_the_default_policy_and_the_policy_comes_back() {
        // SAFETY: pid 0 is the calling thread.
        let policy = || unsafe { libc::sched_getscheduler(0) };
        // Without CAP_SYS_NICE there is no real-time policy to leave: nothing to check.
        if set_sched_fifo(1).is_err() {
            return;
        }
        assert_eq!(policy(), libc::SCHED_FIFO);
        let inside = at_default_policy(policy);
        let after = policy();
        set_sched_other().unwrap();
        assert_eq!(inside, libc::SCHED_OTHER);
        assert_eq!(after, libc::SCHED_FIFO);
        assert_eq!(at_default_policy(policy), libc::SCHED_OTHER);
        assert_eq!(policy(), libc::SCHED_OTHER);
    }

    #[test]
    fn a_child_runs_where_it_was_pinned() {
        use std::os::unix::process::CommandExt;
        let allowed = allowed_cpus();
        let cpu = *allowed.last().unwrap();
        let mask = CpuMask::new(&[cpu]);
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("5");
        // SAFETY: the hook makes one syscall on a mask built before the fork.
        unsafe {
            cmd.pre_exec(move || mask.apply_to_this_thread());
        }
        let mut child = cmd.spawn().unwrap();
        let seen = observed_cpus(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(seen, Some(vec![cpu]));
    }
}
