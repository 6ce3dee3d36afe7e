//! What a comparison found, as results.json holds it (and results.md and the charts show it).

use serde::{Deserialize, Serialize};

use super::probe::{Bound, Probe, Search};

/// Everything a comparison found: results.json.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub version: u32,
    /// The command line, as typed.
    pub command: String,
    pub machine: Machine,
    pub settings: Settings,
    /// Backends and peers left out, and why.
    pub skipped: Vec<Skipped>,
    pub capacity: Vec<CapacityStep>,
    /// The rate every subject was measured at, per connection count.
    pub common_rates: Vec<CommonRate>,
    pub idle: Vec<IdleStep>,
    /// Wall time of the whole comparison, seconds.
    pub wall_s: f64,
    /// A signal (SIGINT, SIGTERM) ended the comparison early: the steps after it are missing.
    #[serde(default)]
    pub interrupted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    /// CPUs the kernel has online (/sys/devices/system/cpu/online).
    #[serde(default)]
    pub cpus_online: usize,
    /// CPUs the comparison was allowed to run on when it started (its affinity mask: what a
    /// container or `taskset` left it), before it pinned the server and loadgen within them.
    #[serde(default)]
    pub cpus_allowed: usize,
    pub kernel: String,
    pub cpu: String,
    pub mem_total_kib: u64,
    /// UTC, ISO 8601, when the comparison started.
    pub date: String,
    /// /proc/loadavg at the start and at the end: the machine may be shared.
    pub loadavg_start: String,
    pub loadavg_end: String,
    /// Descriptors a process may have (hard limit).
    pub nofile: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub server: String,
    pub subjects: Vec<String>,
    pub conns: Vec<u64>,
    pub workers: Option<usize>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub loadgen_threads: usize,
    pub http_path: String,
    pub p99_bound_us: u64,
    pub achieved_share: f64,
    pub start_rate: f64,
    pub max_rate: f64,
    pub precision: f64,
    pub idle: Vec<u64>,
    pub active: u64,
    pub idle_rate: Option<f64>,
    pub quick: bool,
    pub pinning: Pinning,
    /// The CPUs' wake-up latency during the run: "held at 0 µs (/dev/cpu_dma_latency)", or why
    /// it was not (`--allow-cpu-idle`, or the file could not be written). Empty in results
    /// written before it was recorded.
    #[serde(default)]
    pub cpu_wake_latency: String,
    /// The scheduling policy of loadgen and what it started: "SCHED_FIFO 10" with
    /// `--sched-fifo 10`, else "SCHED_OTHER". Empty in results written before it was recorded.
    #[serde(default)]
    pub scheduling: String,
}

/// Where the server and loadgen ran (CPU lists as Linux writes them; null: not pinned).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pinning {
    pub server_cpus: Option<String>,
    pub loadgen_cpus: Option<String>,
    /// What /proc said of loadgen after pinning (Cpus_allowed_list).
    pub loadgen_observed: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    pub subject: String,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skipped,
    Failed,
}

/// One subject's capacity at one connection count, and its cost at the common rate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CapacityStep {
    pub subject: String,
    pub conns: u64,
    pub status: Status,
    pub reason: Option<String>,
    pub notes: Vec<String>,
    /// The highest passing rate; the server's capacity only when `bound` is "server".
    pub capacity: Option<f64>,
    pub bound: Option<Bound>,
    /// The server's CPUs as /proc saw them while it ran.
    pub server_cpus_observed: Option<String>,
    pub search: Option<Search>,
    /// The probe at the common rate.
    pub at_common: Option<Probe>,
    /// Resident memory before any connection, KiB.
    pub rss_before_kib: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommonRate {
    pub conns: u64,
    pub rate: f64,
}

/// One subject with `idle` idle connections beside the active load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdleStep {
    pub subject: String,
    pub idle: u64,
    pub active: u64,
    pub rate: f64,
    pub status: Status,
    pub reason: Option<String>,
    pub notes: Vec<String>,
    pub workers: Option<usize>,
    pub probe: Option<Probe>,
    pub rss_before_kib: u64,
    /// (RSS with every connection open − RSS before any) / connections.
    pub rss_per_conn_kib: Option<f64>,
}
