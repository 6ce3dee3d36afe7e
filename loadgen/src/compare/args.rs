//! The options of `loadgen compare`, as clap reads them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::parse::{parse_count, parse_duration, parse_rate};

/// What a comparison measures.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `GET /plaintext`: capacity, cost at a common rate, idle connections.
    Plaintext,
    /// `/plaintext` with one `GET /sleep/MS` in every `--sleep-every` requests, at one rate:
    /// what one blocking handler does to the other requests, per backend, with and without
    /// `--offload` (compare/blocking.rs).
    Blocking,
}

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value = "plaintext")]
    pub workload: Workload,
    /// --workload blocking: the offered rate, requests per second (open loop) [default: 400].
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// --workload blocking: how long each slow request blocks the thread that handles it.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub sleep: Duration,
    /// --workload blocking: one request in this many is the slow one.
    #[arg(long, default_value = "100")]
    pub sleep_every: u32,
    /// --workload blocking: helper threads of the single-threaded loops' second run
    /// (`c10k serve --offload N`).
    #[arg(long, default_value = "4")]
    pub offload: usize,
    /// The c10k server binary [default: `c10k` next to this loadgen executable].
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// Backends to compare, comma-separated [default: every one this kernel supports].
    #[arg(long, value_delimiter = ',')]
    pub backends: Option<Vec<String>>,
    /// Worker processes of the server (`c10k serve --workers N`) [default: 1, or what the
    /// descriptor limit needs for the idle sweep].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Connection counts of the capacity search [default: 100,1000,10000; --quick: 100].
    #[arg(short = 'c', long, value_delimiter = ',', value_parser = parse_count)]
    pub conns: Option<Vec<u64>>,
    /// Measured time per probe, after the warmup [default: 1s; --quick: 0.3s].
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Time excluded at the start of each probe (plus 50 µs per connection, for connecting)
    /// [default: 0.5s; --quick: 0.1s].
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// The main question in under a minute: capacity and CPU per request at 100 connections,
    /// one idle-connection point.
    #[arg(long)]
    pub quick: bool,
    /// Write results.md, results.json and SVG charts into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// loadgen event-loop threads [default: one per loadgen CPU].
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// busy-poll spins over every connection: steps above this many connections are skipped.
    #[arg(long, default_value = "1000", value_parser = parse_count)]
    pub busy_poll_max: u64,
    /// CPUs of the server, e.g. `0` or `0-1` [default: the first CPU allowed].
    #[arg(long)]
    pub server_cpus: Option<String>,
    /// CPUs of loadgen [default: the other CPUs allowed].
    #[arg(long)]
    pub loadgen_cpus: Option<String>,
    /// Do not pin (the server and loadgen share every CPU).
    #[arg(long, conflicts_with_all = ["server_cpus", "loadgen_cpus"])]
    pub no_pin: bool,
    /// Let the CPUs enter deep idle states during the run. By default the comparison holds
    /// /dev/cpu_dma_latency at 0 µs (where it may) so that waking a sleeping CPU does not set
    /// the p99; the results say whether it did.
    #[arg(long)]
    pub allow_cpu_idle: bool,
    /// Run loadgen, the servers, the peers and the idle holds under SCHED_FIFO at this priority
    /// (1-99; needs CAP_SYS_NICE), so that other work on the machine cannot delay their
    /// wake-ups: a CPU-bound neighbour at the default policy keeps a waking server off its CPU for
    /// up to a scheduler slice (milliseconds), which fails the p99 bound at any rate. The kernel
    /// still leaves others 5% of each CPU (sched_rt_runtime_us).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=99))]
    pub sched_fifo: Option<i32>,
    /// Latency bound of the capacity: p99 from the intended send time.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub p99_bound: Duration,
    /// First rate the search offers.
    #[arg(long, default_value = "2000", value_parser = parse_rate)]
    pub start_rate: f64,
    /// Highest rate the search offers.
    #[arg(long, default_value = "1M", value_parser = parse_rate)]
    pub max_rate: f64,
    /// Idle connections of the idle sweep [default: 0,1000,10000,50000; --quick: 0,1000]; 0
    /// alone, or an empty list, skips the sweep.
    #[arg(long, value_delimiter = ',', value_parser = parse_count)]
    pub idle: Option<Vec<u64>>,
    /// Active connections of the idle sweep.
    #[arg(long, default_value = "100", value_parser = parse_count)]
    pub active: u64,
    /// Offered rate of the idle sweep [default: the common rate at --active connections, else
    /// 5000].
    #[arg(long, value_parser = parse_rate)]
    pub idle_rate: Option<f64>,
    /// Also run the reference servers of benches/peers (those built, and nginx if installed).
    #[arg(long)]
    pub peers: bool,
    /// Where the peers are [default: benches/peers under the current directory or above this
    /// executable].
    #[arg(long)]
    pub peers_dir: Option<PathBuf>,
}
