//! The machine a comparison ran on, from /proc: CPU, memory, kernel, load, and the date.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::pin;
use super::results::Machine;

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub(super) fn loadavg() -> String {
    read_trim("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The machine as found when called: call it before pinning anything, so that `cpus_allowed` is
/// what the comparison was given, not the CPU it later pins loadgen to.
pub(super) fn machine(nofile: u64) -> Machine {
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
        cpus_online: cpus_online(),
        cpus_allowed: pin::allowed_cpus().len(),
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        cpu,
        mem_total_kib,
        date: utc_now(),
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
        nofile,
    }
}

/// CPUs the kernel has online, whatever this process may use: a count of
/// /sys/devices/system/cpu/online (e.g. `0-1`). `available_parallelism` and `nproc` count the
/// affinity mask instead, which a container, `taskset` or the comparison's own pinning narrows.
fn cpus_online() -> usize {
    count_cpu_list(&read_trim("/sys/devices/system/cpu/online")).unwrap_or(0)
}

/// How many CPUs a kernel CPU list (`0-3,6,8-9`) names; None if it is not one.
fn count_cpu_list(list: &str) -> Option<usize> {
    pin::parse_cpus(list).ok().map(|cpus| cpus.len())
}

fn utc_now() -> String {
    utc(SystemTime::now())
}

/// `YYYY-MM-DDTHH:MM:SSZ`, written by the `humantime` crate: no calendar arithmetic here.
fn utc(time: SystemTime) -> String {
    // humantime writes the years 1970 to 9999 only (and panics outside them): a clock outside
    // that range is written as the nearest end of it.
    let last_second_of_9999 = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    let time = time.clamp(UNIX_EPOCH, last_second_of_9999);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Keeps the CPUs out of deep idle states for as long as it lives, by asking the kernel's PM QoS
/// for a wake-up latency of 0 µs through `/dev/cpu_dma_latency` (the request holds while the
/// file stays open: Documentation/power/pm_qos_interface.rst). The cpuidle governor then picks
/// only states with no exit latency, which in a VM means polling instead of halting the vCPU.
///
/// Why a comparison wants it: at low and moderate rates the server and loadgen sleep between
/// requests, and waking a halted CPU (an IPI, and in a VM a vCPU the host must reschedule) can
/// take milliseconds. Measured on the 2-core VM these docs come from, against the C epoll peer at
/// 5,000 req/s: p50 285–1,144 µs and p99 6.4–10.1 ms without it, p50 50–67 µs and p99 0.5–1.3 ms
/// with it. Such tails fail a 10 ms p99 bound at rates any server carries, so the capacities
/// would be the idle states' and not the servers'. The polling CPU time is the idle task's, not
/// charged to the server or loadgen. `cyclictest` and tuned's latency-performance profile do
/// the same.
pub(super) struct WakeLatencyHold {
    _file: std::fs::File,
}

pub(super) const CPU_DMA_LATENCY: &str = "/dev/cpu_dma_latency";

impl WakeLatencyHold {
    /// Asks for 0 µs; the error says why not (no such file, not root).
    pub(super) fn zero() -> std::io::Result<WakeLatencyHold> {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(CPU_DMA_LATENCY)?;
        // The interface takes a binary s32 in microseconds.
        file.write_all(&0i32.to_ne_bytes())?;
        Ok(WakeLatencyHold { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0-1"), Some(2));
        assert_eq!(count_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(count_cpu_list("5"), Some(1));
        assert_eq!(count_cpu_list(""), None);
    }

    /// A thread pinned to one CPU (as compare pins loadgen) still records every online CPU, and
    /// records its own affinity apart: results.json once said "nproc": 1 on a 2-CPU machine.
    #[test]
    fn pinning_narrows_the_allowed_cpus_not_the_online_ones() {
        let allowed = pin::allowed_cpus();
        if allowed.len() < 2 {
            eprintln!("skipped: one allowed CPU, nothing to narrow");
            return;
        }
        let before = machine(0);
        assert!(before.cpus_online >= allowed.len(), "{before:?}");
        assert_eq!(before.cpus_allowed, allowed.len());
        let pinned = std::thread::spawn(move || {
            pin::CpuMask::new(&allowed[..1])
                .apply_to_this_thread()
                .expect("pin a thread to one of its own CPUs");
            machine(0)
        })
        .join()
        .expect("the pinned thread");
        assert_eq!(pinned.cpus_allowed, 1);
        assert_eq!(pinned.cpus_online, before.cpus_online);
    }

    #[test]
    fn dates_are_utc_iso_8601_to_the_second() {
        let at = |secs: u64| utc(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        // A leap day of a year divisible by 400, and the last second of a year.
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_767_225_599), "2025-12-31T23:59:59Z");
        // Fractions of a second are dropped, not rounded.
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_millis(1_700_000_000_999)),
            "2023-11-14T22:13:20Z"
        );
        // A clock before 1970 is written as 1970.
        assert_eq!(
            utc(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
        // And one past 9999 as 9999's last second (humantime writes four-digit years only).
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(400_000_000_000)),
            "9999-12-31T23:59:59Z"
        );
    }
}
