//! Start-up shared by every I/O model: the listener, the limits checked where they are configured,
//! and the choice of driver for the chosen backend.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::board::StatsBoard;
use crate::config::{self, Config};
use crate::driver::kit;
use crate::driver::DriverOptions;
use crate::models::{BackendKind, BACKENDS};
use crate::stats::Counters;
use crate::sys;
use crate::workers::{self, WorkerPlan};
use nix::sys::signalfd::SignalFd;

/// Everything `c10k serve` was asked to do: the I/O model, and the [`Config`] its driver
/// serves with.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct ServeArgs {
    /// I/O model: threads, busy-poll, select, poll, epoll, sigio, uring, pool or coro
    /// (`c10k backends` says which this kernel supports).
    #[arg(long, default_value = "epoll", value_parser = parse_backend)]
    #[serde(serialize_with = "backend_name")]
    pub backend: BackendKind,
    #[command(flatten)]
    #[serde(flatten)]
    pub config: Config,
}

fn parse_backend(name: &str) -> Result<BackendKind, String> {
    BackendKind::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = BACKENDS.iter().map(|b| b.name).collect();
        format!("unknown backend '{name}' (one of: {})", names.join(", "))
    })
}

fn backend_name<S: serde::Serializer>(b: &BackendKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(b.name())
}

/// A start-up failure, said in one line; the CLI exits 2 with it.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Descriptors kept for the process itself (listener, poller, signalfd, stdio, log) when the
/// connection limit is derived from RLIMIT_NOFILE.
const RESERVED_FDS: u64 = 32;

/// A server that is bound and ready to run.
pub struct Server {
    args: ServeArgs,
    listener: OwnedFd,
    local_addr: SocketAddr,
    max_conns: usize,
    /// SIGINT/SIGTERM/SIGHUP, blocked and readable here (None in a master of workers).
    signals: Option<SignalFd>,
    /// In a worker: its slot on the master's stats board.
    board: Option<StatsBoard>,
}

impl Server {
    /// Checks the configuration, raises the descriptor limit and binds the listener.
    pub fn bind(args: ServeArgs) -> Result<Server, StartError> {
        let (backend, config) = (args.backend, &args.config);
        if config.edge && !matches!(backend, BackendKind::Epoll) {
            return Err(StartError(format!(
                "--edge applies to epoll only; backend {} is level-triggered",
                backend.name()
            )));
        }
        if config.uring_direct && backend != BackendKind::Uring {
            return Err(StartError(
                "--uring-direct applies to the uring backend only".into(),
            ));
        }
        if config.sigio_queue_limit.is_some() && backend != BackendKind::Sigio {
            return Err(StartError(
                "--sigio-queue-limit applies to the sigio backend only".into(),
            ));
        }
        if config.pool_threads == Some(0) {
            return Err(StartError("--pool-threads must be at least 1".into()));
        }
        if config.pool_threads.is_some() && backend != BackendKind::Pool {
            return Err(StartError(
                "--pool-threads applies to the pool backend only".into(),
            ));
        }
        if config.offload == Some(0) {
            return Err(StartError(
                "--offload must be at least 1 helper thread".into(),
            ));
        }
        if config.offload.is_some() && matches!(backend, BackendKind::Threads | BackendKind::Pool) {
            return Err(StartError(format!(
                "--offload applies to the single-threaded loops; {} already runs blocking work \
                 off the loop, on the thread that serves the request",
                backend.name()
            )));
        }
        if config.offload.is_some() && !config.blocking_routes {
            log::warn!("--offload: no work to hand off without --blocking-routes");
        }
        if config.thread_stack_kib < 16 {
            return Err(StartError("--thread-stack must be at least 16 KiB".into()));
        }
        if config.worker_processes() == 0 {
            return Err(StartError("--workers must be at least 1".into()));
        }
        if config.backlog < 1 {
            return Err(StartError("--backlog must be at least 1".into()));
        }
        if let Err(reason) = backend.probe() {
            return Err(StartError(format!(
                "backend {} is not available on this kernel: {reason}",
                backend.name()
            )));
        }
        sys::ignore_sigpipe().map_err(|e| StartError(format!("cannot ignore SIGPIPE: {e}")))?;
        let nofile = sys::raise_nofile_limit().unwrap_or_else(|_| sys::nofile_limit());
        let mut fd_budget = nofile.saturating_sub(RESERVED_FDS).max(1) as usize;
        if config.uring_direct {
            // The ring's table of direct descriptors is as large as the limit allows, besides.
            fd_budget += nofile as usize;
        }
        let max_conns = match config.max_conns {
            Some(0) => return Err(StartError("--max-conns must be at least 1".into())),
            Some(n) if n > fd_budget => {
                log::warn!(
                    "--max-conns {n} exceeds what RLIMIT_NOFILE ({nofile}) allows; \
                     connections beyond ~{fd_budget} will meet EMFILE (use --workers to go further)"
                );
                n
            }
            Some(n) => n,
            None => fd_budget,
        };
        if let Some(limit) = config.sigio_queue_limit {
            crate::backend::sigio::limit_signal_queue(limit)
                .map_err(|e| StartError(format!("cannot set RLIMIT_SIGPENDING to {limit}: {e}")))?;
        }
        // Before the ready line, so that a worker that cannot use its board never claims to serve.
        let board = open_board(config)
            .map_err(|e| StartError(format!("cannot open the workers' stats board: {e}")))?;
        let reuse_port = config.worker_processes() > 1;
        let (listener, local_addr) = bind_listener(config.listen, config.backlog, reuse_port)
            .map_err(|e| StartError(format!("cannot listen on {}: {e}", config.listen)))?;
        // Blocked before anyone can read the ready line, so that a SIGTERM sent right after
        // it is an orderly shutdown rather than the default action. (A master blocks its own.)
        let signals = if config.is_master() {
            None
        } else {
            Some(
                kit::shutdown_signals()
                    .map_err(|e| StartError(format!("cannot set up signal handling: {e}")))?,
            )
        };
        Ok(Server {
            args,
            listener,
            local_addr,
            max_conns,
            signals,
            board,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The line printed on stdout once the server accepts connections.
    pub fn ready_line(&self) -> String {
        let config = &self.args.config;
        let mut line = format!(
            "listening on {} backend={} proto={}",
            self.local_addr,
            self.args.backend.name(),
            config.proto.name()
        );
        if config.edge {
            line.push_str(" trigger=edge");
        }
        if config.worker_processes() > 1 {
            line.push_str(&format!(" workers={}", config.worker_processes()));
        }
        line
    }

    /// Whether this process is the master of worker processes rather than a server itself.
    pub fn is_master(&self) -> bool {
        self.args.config.is_master()
    }

    /// Master of `--workers N`: starts N workers on this server's port (each binds its own
    /// SO_REUSEPORT listener), calls `ready` once all listen, supervises until SIGTERM/SIGINT.
    pub fn supervise_workers(self, ready: impl FnOnce()) -> Result<(), String> {
        let plan = WorkerPlan {
            listen: self.local_addr,
            count: self.args.config.worker_processes(),
            // This process's own arguments, made from what it parsed.
            serve_args: config::to_args(&self.args),
            stop_grace: self.args.config.shutdown_grace,
        };
        // The master's own listener only reserved the port; workers bind theirs beside it.
        // It is closed once they listen, before anyone is told the server is ready.
        let Server { listener, .. } = self;
        let mut listener = Some(listener);
        workers::supervise(&plan, || {
            drop(listener.take());
            ready();
        })
    }

    /// Serves until SIGINT/SIGTERM; returns the final counters.
    pub fn run(mut self) -> io::Result<Counters> {
        let signals = match self.signals.take() {
            Some(signals) => signals,
            None => {
                return Err(io::Error::other(
                    "a master of workers does not serve itself",
                ))
            }
        };
        let options = DriverOptions {
            pool_threads: self
                .args
                .config
                .pool_threads
                .unwrap_or_else(default_pool_threads),
            config: self.args.config,
            max_conns: self.max_conns,
            board: self.board.take().map(Arc::new),
        };
        self.args.backend.serve(self.listener, signals, &options)
    }
}

/// In a worker of `--workers N`: maps the board whose descriptor the master passed.
fn open_board(config: &Config) -> io::Result<Option<StatsBoard>> {
    match (config.stats_board_fd, config.worker_index) {
        (Some(fd), Some(index)) => {
            let file = std::fs::File::from(sys::adopt_inherited_fd(fd)?);
            StatsBoard::open(file, config.worker_processes(), index).map(Some)
        }
        _ => Ok(None),
    }
}

/// The pool backend's default: two threads per core.
fn default_pool_threads() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A TCP listener with SO_REUSEADDR (and SO_REUSEPORT for worker processes) and an explicit
/// backlog: Rust std's default of 128 makes 10,000 simultaneous connects take ~50 s here.
pub fn bind_listener(
    addr: SocketAddr,
    backlog: i32,
    reuse_port: bool,
) -> io::Result<(OwnedFd, SocketAddr)> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("listener has no IP address"))?;
    Ok((socket.into(), local))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn a_worker_is_given_the_masters_backend_and_configuration() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("c10k").chain(args.iter().copied()))
                .unwrap()
                .serve
        };
        let master = parse(&["--backend", "poll", "--workers", "3", "--idle-timeout", "7"]);
        let args = config::to_args(&master);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(
            args.windows(2).any(|w| w == ["--backend", "poll"]),
            "{args:?}"
        );
        let worker = parse(&args);
        assert_eq!(worker.backend, BackendKind::Poll);
        assert_eq!(worker.config.idle_timeout, master.config.idle_timeout);
        assert_eq!(
            worker.config.workers, 1,
            "the master passes --worker-count instead"
        );
    }
}
