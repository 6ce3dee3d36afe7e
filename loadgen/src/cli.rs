//! The command line: subcommands and options, and their translation into a [`Config`].
//! Values accept units: durations `500ms`, `10s`, `2m`, `1h` (bare numbers are seconds); counts
//! and rates `10k`, `1.5M` (the parsers are in `parse.rs`, shared with `compare`).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    default_threads, Config, EngineKind, HoldOpts, HttpOpts, Mode, PathWeight, Share,
};
use crate::error::Error;
use crate::parse::{parse_count, parse_duration, parse_rate};
use crate::ports::PortRange;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for connections and latency, corrected for coordinated omission"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// HTTP/1.1 requests to URL (http://host:port/path).
    Http(HttpArgs),
    /// Verified echo messages to ADDR (host:port).
    Echo(EchoArgs),
    /// Open and hold many connections to ADDR (host:port): the C10K test.
    Hold(HoldArgs),
    /// Merge JSON reports (--json) or HdrHistogram interval logs (--hdr-log) of several runs.
    Merge(MergeArgs),
    /// Compare the c10k server's backends: a fresh server per step, a Markdown table, charts.
    Compare(crate::compare::CompareArgs),
    /// Internal: a worker process of --procs (configuration on stdin).
    #[command(name = "__worker", hide = true)]
    Worker,
}

#[derive(Args, Debug)]
pub struct Common {
    /// Connections in total (over all threads and processes).
    #[arg(short = 'c', long, default_value = "10", value_parser = parse_count)]
    pub conns: u64,
    /// Measured time, after the warmup [default: 10s].
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Measured requests (instead of --duration).
    #[arg(short = 'n', long, value_parser = parse_count, conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// New connections per second (a ramp); default: all at once.
    #[arg(long, value_parser = parse_rate)]
    pub connect_rate: Option<f64>,
    /// Time excluded from the results at the start.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Open loop: requests per second on one global schedule; latency from the intended time.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Open loop: requests due within one tick are sent together at its end, one wakeup per
    /// tick; latency still counts from each request's due time. 0: a wakeup per request.
    #[arg(long, value_parser = parse_duration, default_value = "100us")]
    pub schedule_tick: Duration,
    /// A connect or request older than this is a timeout (counted and recorded).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,
    /// Source addresses used round-robin: 127.0.0.2-127.0.0.9, or a comma-separated list.
    #[arg(long)]
    pub source: Option<String>,
    /// Bind each connection to its own (source address, port) pair from this range, e.g.
    /// 61000-65535 (outside net.ipv4.ip_local_port_range), so that connect() never searches for
    /// a free port: its cost stays flat as the connections grow. Needs --source.
    #[arg(long, value_parser = PortRange::parse)]
    pub source_ports: Option<PortRange>,
    /// Worker processes, each with its share of the connections.
    #[arg(long, default_value = "1")]
    pub procs: usize,
    /// This host's part of a run over several hosts: I/N (from 0/N), each with the same
    /// --conns, --rate and --requests (the totals), which the parts share.
    #[arg(long, value_parser = parse_part)]
    pub part: Option<Share>,
    /// Start the run at this Unix time (seconds, e.g. `date +%s` + 10): connections open
    /// before it; requests, warmup and measurement start at it, on every host given it.
    #[arg(long, value_parser = parse_unix_time)]
    pub start_at: Option<f64>,
    /// Start the run this long from now (--start-at, relative).
    #[arg(long, value_parser = parse_duration, conflicts_with = "start_at")]
    pub start_in: Option<Duration>,
    /// How the event loops do their I/O: epoll (a syscall per read and write) or uring (the
    /// sends and receives of many connections in one io_uring_enter) [default: uring where
    /// io_uring works, else epoll; epoll for hold].
    #[arg(long, value_enum)]
    pub engine: Option<crate::config::EngineKind>,
    /// Event-loop threads per process [default: number of cores].
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Print a JSON line per interval on stderr.
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Write an HdrHistogram interval log of the latency.
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct HttpArgs {
    pub url: String,
    #[command(flatten)]
    pub common: Common,
    /// Requests in flight per connection.
    #[arg(long, default_value = "1")]
    pub pipeline: usize,
    /// A new connection per request (Connection: close).
    #[arg(long)]
    pub no_keepalive: bool,
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,
    /// Request body bytes.
    #[arg(long, default_value = "0", value_parser = parse_count)]
    pub body_size: u64,
    /// Several paths by weight, in place of the URL's path: `/plaintext=99,/sleep/50=1`.
    /// Requests take them in a fixed interleaving (here every 100th is /sleep/50), and each
    /// path's latency is reported apart too.
    #[arg(long, value_delimiter = ',', value_parser = parse_path_weight)]
    pub mix: Option<Vec<PathWeight>>,
}

#[derive(Args, Debug)]
pub struct EchoArgs {
    pub addr: String,
    #[command(flatten)]
    pub common: Common,
    /// Messages in flight per connection.
    #[arg(long, default_value = "1")]
    pub pipeline: usize,
    /// Bytes per message (at least 16: sequence number, connection id, checksum).
    #[arg(short = 's', long, default_value = "64", value_parser = parse_count)]
    pub size: u64,
}

#[derive(Args, Debug)]
pub struct HoldArgs {
    pub addr: String,
    #[command(flatten)]
    pub common: Common,
    /// Send a small verified echo message on each connection this often (the server must echo).
    #[arg(long, value_parser = parse_duration)]
    pub ping_interval: Option<Duration>,
    /// Bytes per ping (at least 16).
    #[arg(long, default_value = "16", value_parser = parse_count)]
    pub ping_size: u64,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// JSON reports, or HdrHistogram interval logs (not both).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write the merged JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the merged interval log here.
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
}

/// Where a run's outputs go.
#[derive(Debug, Default)]
pub struct Outputs {
    pub json: Option<PathBuf>,
    pub interval: bool,
    pub hdr_log: Option<PathBuf>,
}

impl HttpArgs {
    pub fn config(&self) -> Result<(Config, Outputs), Error> {
        let (host, port, mut path) = parse_url(&self.url)?;
        let mix = self.mix.clone().unwrap_or_default();
        if let Some(first) = mix.first() {
            if path != "/" {
                return Err(Error::Config(format!(
                    "give the path in the URL ({path}) or in --mix, not both"
                )));
            }
            path = first.path.clone();
        }
        let target = resolve(&host, port)?;
        let host_header = if port == 80 {
            host
        } else {
            format!("{host}:{port}")
        };
        let mode = Mode::Http(HttpOpts {
            host: host_header,
            path,
            method: self.method.clone(),
            body_size: usize::try_from(self.body_size).unwrap_or(usize::MAX),
            keepalive: !self.no_keepalive,
            mix,
        });
        self.common.config(mode, target, self.pipeline)
    }
}

impl EchoArgs {
    pub fn config(&self) -> Result<(Config, Outputs), Error> {
        let target = parse_addr(&self.addr)?;
        let size = usize::try_from(self.size).unwrap_or(usize::MAX);
        self.common
            .config(Mode::Echo { size }, target, self.pipeline)
    }
}

impl HoldArgs {
    pub fn config(&self) -> Result<(Config, Outputs), Error> {
        let target = parse_addr(&self.addr)?;
        let ping_size = usize::try_from(self.ping_size).unwrap_or(usize::MAX);
        if !(crate::config::ECHO_HEADER..=65536).contains(&ping_size) {
            return Err(Error::Config(
                "--ping-size must be between 16 and 65536".into(),
            ));
        }
        let mode = Mode::Hold(HoldOpts {
            ping_interval: self.ping_interval,
            ping_size,
        });
        self.common.config(mode, target, 1)
    }
}

impl Common {
    fn config(
        &self,
        mode: Mode,
        target: SocketAddr,
        pipeline: usize,
    ) -> Result<(Config, Outputs), Error> {
        let conns = usize::try_from(self.conns)
            .map_err(|_| Error::Config("--conns is too large".into()))?;
        let mut cfg = Config::new(mode, target, conns);
        cfg.threads = self.threads.unwrap_or_else(default_threads);
        cfg.procs = self.procs;
        cfg.engine = match self.engine {
            Some(e) => e,
            None => EngineKind::default_for_rate(cfg.engine, self.rate),
        };
        cfg.requests = self.requests;
        cfg.duration = match self.requests {
            Some(_) => None,
            None => Some(self.duration.unwrap_or(Duration::from_secs(10))),
        };
        cfg.connect_rate = self.connect_rate;
        cfg.warmup = self.warmup;
        cfg.rate = self.rate;
        cfg.schedule_tick = self.schedule_tick;
        cfg.part = self.part;
        cfg.start_at = match self.start_in {
            Some(d) => Some(unix_now() + d.as_secs_f64()),
            None => self.start_at,
        };
        cfg.timeout = self.timeout;
        cfg.pipeline = pipeline;
        if let Some(s) = &self.source {
            cfg.sources = parse_sources(s)?;
        }
        cfg.source_ports = self.source_ports;
        if let Some(i) = self.interval {
            cfg.interval = i;
        }
        cfg.validate()?;
        let outputs = Outputs {
            json: self.json.clone(),
            interval: self.interval.is_some(),
            hdr_log: self.hdr_log.clone(),
        };
        Ok((cfg, outputs))
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `PATH=WEIGHT`: one path of a mix (checked further by the configuration).
pub fn parse_path_weight(s: &str) -> Result<PathWeight, String> {
    let item = s.trim();
    let (path, weight) = item
        .rsplit_once('=')
        .ok_or_else(|| format!("{item:?}: give PATH=WEIGHT, e.g. /plaintext=99"))?;
    let weight = weight
        .trim()
        .parse()
        .map_err(|_| format!("{item:?}: the weight is not a whole number"))?;
    Ok(PathWeight {
        path: path.trim().to_string(),
        weight,
    })
}

/// `I/N`: part I (from 0) of N.
pub fn parse_part(s: &str) -> Result<Share, String> {
    let bad = || format!("{s:?} is not a part: give I/N, e.g. 0/2 and 1/2");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let index: usize = i.trim().parse().map_err(|_| bad())?;
    let of: usize = n.trim().parse().map_err(|_| bad())?;
    if of == 0 || index >= of {
        return Err(bad());
    }
    Ok(Share { of, index })
}

/// Unix time in seconds, fractions allowed: `1767225600`, `1767225600.5`.
pub fn parse_unix_time(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a Unix time in seconds"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s:?} is not a Unix time in seconds"));
    }
    Ok(v)
}

/// `127.0.0.2-127.0.0.9` (an inclusive range) or `a,b,c`; at most 65536 addresses.
pub fn parse_sources(s: &str) -> Result<Vec<IpAddr>, Error> {
    let bad = |m: String| Error::Config(format!("--source {s:?}: {m}"));
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if let Some((a, b)) = part.split_once('-') {
            let a: std::net::Ipv4Addr = a.trim().parse().map_err(|e| bad(format!("{e}")))?;
            let b: std::net::Ipv4Addr = b.trim().parse().map_err(|e| bad(format!("{e}")))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a {
                return Err(bad("the range ends before it starts".into()));
            }
            if b - a >= 65536 {
                return Err(bad("more than 65536 addresses".into()));
            }
            out.extend((a..=b).map(|v| IpAddr::from(std::net::Ipv4Addr::from(v))));
        } else {
            out.push(part.parse().map_err(|e| bad(format!("{e}")))?);
        }
    }
    if out.is_empty() {
        return Err(bad("no address".into()));
    }
    Ok(out)
}

/// `http://host[:port][/path]` → (host, port, path).
pub fn parse_url(url: &str) -> Result<(String, u16, String), Error> {
    let bad = |m: &str| Error::Config(format!("URL {url:?}: {m}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad("the path has spaces or control characters"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h, p.parse().map_err(|_| bad("bad port"))?)
        }
        _ => (authority, 80),
    };
    Ok((host.to_string(), port, path.to_string()))
}

/// `host:port` → an address.
pub fn parse_addr(addr: &str) -> Result<SocketAddr, Error> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| Error::Config(format!("address {addr:?}: expected host:port")))?;
    let port = port
        .parse()
        .map_err(|_| Error::Config(format!("address {addr:?}: bad port")))?;
    resolve(host.trim_start_matches('[').trim_end_matches(']'), port)
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, Error> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Config(format!("cannot resolve {host:?}: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| Error::Config(format!("{host:?} has no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_engine(args: &[&str]) -> EngineKind {
        let mut all = vec!["loadgen", "http", "http://127.0.0.1:1/"];
        all.extend(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Http(a) => a.config().unwrap().0.engine,
            _ => unreachable!(),
        }
    }

    #[test]
    fn an_open_loop_defaults_to_epoll_and_an_engine_asked_for_is_kept() {
        assert_eq!(http_engine(&["--rate", "1000"]), EngineKind::Epoll);
        assert_eq!(
            http_engine(&["--rate", "1000", "--engine", "uring"]),
            EngineKind::Uring
        );
        assert_eq!(http_engine(&["--engine", "epoll"]), EngineKind::Epoll);
        let closed = match crate::engine::probe_uring() {
            Ok(()) => EngineKind::Uring,
            Err(_) => EngineKind::Epoll,
        };
        assert_eq!(http_engine(&[]), closed);
    }

    #[test]
    fn sources_and_urls() {
        let s = parse_sources("127.0.0.2-127.0.0.4,10.0.0.1").unwrap();
        assert_eq!(s.len(), 4);
        assert!(parse_sources("127.0.0.9-127.0.0.2").is_err());
        assert_eq!(
            parse_url("http://127.0.0.1:8080/a?b").unwrap(),
            ("127.0.0.1".into(), 8080, "/a?b".into())
        );
        assert_eq!(parse_url("http://h").unwrap(), ("h".into(), 80, "/".into()));
        assert!(parse_url("https://h/").is_err());
    }
}
