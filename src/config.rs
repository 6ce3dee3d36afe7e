//! How `c10k serve` serves: one [`Config`], parsed from the command line by clap and handed to
//! the driver as it is, so that a new flag is one field here plus its use.
//!
//! `--backend` is the one flag outside it: it picks the model's entry in [`crate::models`], which
//! sits above the drivers, so it is parsed beside this struct ([`crate::server::ServeArgs`]).
//!
//! The master of `--workers N` passes its configuration on to each worker as arguments, made from
//! this struct (serialized field by field, each under its clap flag), not spelled again; a field
//! marked `#[serde(skip)]` is one the master sets per worker instead.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use clap::builder::PossibleValue;
use serde::{Serialize, Serializer};

use crate::proto::Proto;

/// Everything `c10k serve` was asked to do, but the I/O model.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Config {
    /// Protocol to serve.
    #[arg(long, value_enum, default_value_t = Proto::Http)]
    #[serde(serialize_with = "by_name")]
    pub proto: Proto,
    /// Address to listen on; port 0 picks a free port (the ready line says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    #[serde(skip)]
    pub listen: SocketAddr,
    /// Edge-triggered epoll (EPOLLET) instead of level-triggered.
    #[arg(long)]
    pub edge: bool,
    /// io_uring: accept into direct descriptors (the ring's own file table, which counts
    /// against no descriptor limit), falling back to ordinary ones while that table is full: one
    /// process then holds up to twice RLIMIT_NOFILE connections. Cheaper per operation too.
    #[arg(long)]
    pub uring_direct: bool,
    /// Connections beyond this are closed at once (HTTP: a 503 first). Default: what the
    /// descriptor limit allows.
    #[arg(long, value_name = "N")]
    pub max_conns: Option<usize>,
    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub backlog: i32,
    /// Seconds that in-flight responses get after SIGINT/SIGTERM before the server exits anyway.
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = parse_seconds)]
    #[serde(serialize_with = "seconds")]
    pub shutdown_grace: Duration,
    /// Seconds after SIGINT/SIGTERM during which an idle keep-alive connection may still bring
    /// one more request (answered with `Connection: close`) before it is shut down: closing it at
    /// once would race with a request already on its way (RFC 9112 §9.6). Never longer than
    /// `--shutdown-grace`.
    #[arg(long, default_value = "1", value_name = "SECS", value_parser = parse_seconds)]
    #[serde(serialize_with = "seconds")]
    pub keepalive_drain: Duration,
    /// Seconds a request head may take to arrive whole (then HTTP 408 and close).
    #[arg(long, default_value = "30", value_name = "SECS", value_parser = parse_seconds)]
    #[serde(serialize_with = "seconds")]
    pub header_timeout: Duration,
    /// Seconds an idle keep-alive connection is kept.
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = parse_seconds)]
    #[serde(serialize_with = "seconds")]
    pub idle_timeout: Duration,
    /// Seconds pending output may make no progress (a client that stopped reading).
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = parse_seconds)]
    #[serde(serialize_with = "seconds")]
    pub write_timeout: Duration,
    /// Stack size of each connection's thread, in KiB (threads backend).
    #[arg(long = "thread-stack", default_value_t = 64, value_name = "KIB")]
    pub thread_stack_kib: usize,
    /// Lower RLIMIT_SIGPENDING to N queued signals (sigio backend), e.g. to force queue overflow.
    #[arg(long, value_name = "N")]
    pub sigio_queue_limit: Option<u64>,
    /// Serve `GET /sleep/MS` (MS ≤ 10000) and `GET /work/N` (N ≤ 10,000,000 hash iterations):
    /// blocking work that stalls a single-threaded loop on purpose. Off: they are 404.
    #[arg(long)]
    pub blocking_routes: bool,
    /// Single-threaded loops (select, poll, epoll, sigio, busy-poll, uring, coro): run the
    /// blocking routes' work on N helper threads instead of on the loop (like asyncio's
    /// run_in_executor). threads and pool run it on their own threads and refuse this flag.
    #[arg(long, value_name = "N")]
    pub offload: Option<usize>,
    /// Threads of the pool backend (default: 2 × cores).
    #[arg(long, value_name = "N")]
    pub pool_threads: Option<usize>,
    /// Worker processes, each with its own SO_REUSEPORT listener (and descriptor limit),
    /// supervised by this process: a worker that dies is respawned.
    #[arg(long, default_value_t = 1, value_name = "N")]
    #[serde(skip)]
    pub workers: usize,
    /// Set by the master on the workers it starts.
    #[arg(long, hide = true, requires = "worker_count")]
    #[serde(skip)]
    pub worker_index: Option<usize>,
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub worker_count: Option<usize>,
    /// The stats board's descriptor, inherited from the master.
    #[arg(long, hide = true, requires = "worker_index")]
    #[serde(skip)]
    pub stats_board_fd: Option<RawFd>,
}

impl Config {
    /// How long idle keep-alive connections may bring one more request after SIGTERM: the
    /// `--keepalive-drain` window, cut to the grace period.
    pub fn keepalive_drain_window(&self) -> Duration {
        self.keepalive_drain.min(self.shutdown_grace)
    }

    /// Processes serving the port: `--workers`, or in a worker the count its master gave it.
    pub fn worker_processes(&self) -> usize {
        self.worker_count.unwrap_or(self.workers)
    }

    /// A master of workers: it serves nothing itself.
    pub fn is_master(&self) -> bool {
        self.worker_processes() > 1 && self.worker_index.is_none()
    }
}

/// `--proto`'s values are the protocols' own names; implemented here so that `proto/` stays free
/// of the CLI.
impl clap::ValueEnum for Proto {
    fn value_variants<'a>() -> &'a [Self] {
        &[Proto::Echo, Proto::Http]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

/// Seconds as a decimal number (`30`, `0.5`), finite, non-negative and at most a day.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{text} seconds is out of range (0 to 86400)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration as the seconds [`parse_seconds`] reads back.
fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn by_name<S: Serializer>(p: &Proto, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.name())
}

/// Command-line arguments that give a value of type `T`, made from its serialized fields: each
/// field under its clap flag (`--name value`; a true bool as `--name`; a `None`, a false bool
/// or a skipped field left out). `T` must be a clap `Args` whose field names are its arg ids.
pub fn to_args<T: clap::Args + Serialize>(value: &T) -> Vec<String> {
    let command = T::augment_args(clap::Command::new("c10k"));
    let serde_json::Value::Object(fields) =
        serde_json::to_value(value).expect("a struct of plain fields serializes")
    else {
        unreachable!("a struct serializes to an object");
    };
    let mut args = Vec::new();
    for (id, value) in fields {
        let flag = command
            .get_arguments()
            .find(|arg| arg.get_id() == id.as_str())
            .and_then(|arg| arg.get_long())
            .map(|long| format!("--{long}"))
            .unwrap_or_else(|| panic!("field {id} is not a long flag"));
        match value {
            serde_json::Value::Null | serde_json::Value::Bool(false) => {}
            serde_json::Value::Bool(true) => args.push(flag),
            serde_json::Value::String(s) => args.extend([flag, s]),
            serde_json::Value::Number(n) => args.extend([flag, n.to_string()]),
            other => panic!("field {id}: {other} is not one flag value"),
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Config {
        Cli::try_parse_from(std::iter::once("c10k").chain(args.iter().copied()))
            .unwrap()
            .config
    }

    #[test]
    fn the_arguments_made_from_a_config_parse_back_to_it() {
        let given = parse(&[
            "--proto",
            "echo",
            "--edge",
            "--max-conns",
            "7",
            "--backlog",
            "9",
            "--shutdown-grace",
            "0.25",
            "--keepalive-drain",
            "0.125",
            "--header-timeout",
            "1.5",
            "--idle-timeout",
            "2",
            "--write-timeout",
            "3",
            "--thread-stack",
            "128",
            "--sigio-queue-limit",
            "11",
            "--pool-threads",
            "5",
            "--blocking-routes",
            "--offload",
            "3",
        ]);
        let args = to_args(&given);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let back = parse(&args);
        assert_eq!(format!("{back:?}"), format!("{given:?}"), "{args:?}");
    }

    #[test]
    fn defaults_and_per_worker_fields_are_not_passed_on() {
        let given = parse(&["--listen", "127.0.0.1:0", "--workers", "4"]);
        let args = to_args(&given);
        for flag in [
            "--listen",
            "--workers",
            "--edge",
            "--max-conns",
            "--pool-threads",
        ] {
            assert!(!args.iter().any(|a| a == flag), "{flag} in {args:?}");
        }
        assert!(
            args.windows(2).any(|w| w == ["--proto", "http"]),
            "{args:?}"
        );
    }
}
