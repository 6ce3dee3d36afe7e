//! Start-up shared by every I/O model: the listener, the limits checked where they are configured,
//! and the choice of driver for the chosen backend.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::board::StatsBoard;
use crate::driver::kit;
use crate::driver::DriverOptions;
use crate::models::BackendKind;
use crate::proto::Proto;
use crate::stats::Counters;
use crate::sys;
use crate::workers::{self, WorkerPlan};
use nix::sys::signalfd::SignalFd;

/// Everything `c10k serve` was asked to do.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub backend: BackendKind,
    pub proto: Proto,
    pub listen: SocketAddr,
    pub edge: bool,
    /// None: as many as the descriptor limit allows.
    pub max_conns: Option<usize>,
    pub backlog: i32,
    pub shutdown_grace: Duration,
    /// Stack of each connection thread (threads backend).
    pub thread_stack_kib: usize,
    /// Lowers RLIMIT_SIGPENDING to this many queued signals (sigio backend), to force overflow.
    pub sigio_queue_limit: Option<u64>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    /// Threads of the pool backend (None: 2 × cores).
    pub pool_threads: Option<usize>,
    /// Processes serving the port, each with its own SO_REUSEPORT listener.
    pub workers: usize,
    /// Set in a worker process: its index among `workers`.
    pub worker_index: Option<usize>,
    /// Set in a worker process: the descriptor (inherited from the master) of the stats board,
    /// where it publishes its counters.
    pub stats_board_fd: Option<RawFd>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            backend: BackendKind::Epoll,
            proto: Proto::Http,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            edge: false,
            max_conns: None,
            backlog: 4096,
            shutdown_grace: Duration::from_secs(10),
            thread_stack_kib: 64,
            sigio_queue_limit: None,
            pool_threads: None,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            workers: 1,
            worker_index: None,
            stats_board_fd: None,
        }
    }
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
    config: ServeConfig,
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
    pub fn bind(config: ServeConfig) -> Result<Server, StartError> {
        if config.edge && !matches!(config.backend, BackendKind::Epoll) {
            return Err(StartError(format!(
                "--edge applies to epoll only; backend {} is level-triggered",
                config.backend.name()
            )));
        }
        if config.sigio_queue_limit.is_some() && config.backend != BackendKind::Sigio {
            return Err(StartError(
                "--sigio-queue-limit applies to the sigio backend only".into(),
            ));
        }
        if config.pool_threads == Some(0) {
            return Err(StartError("--pool-threads must be at least 1".into()));
        }
        if config.pool_threads.is_some() && config.backend != BackendKind::Pool {
            return Err(StartError(
                "--pool-threads applies to the pool backend only".into(),
            ));
        }
        if config.thread_stack_kib < 16 {
            return Err(StartError("--thread-stack must be at least 16 KiB".into()));
        }
        if config.workers == 0 {
            return Err(StartError("--workers must be at least 1".into()));
        }
        if config.backlog < 1 {
            return Err(StartError("--backlog must be at least 1".into()));
        }
        if let Err(reason) = config.backend.probe() {
            return Err(StartError(format!(
                "backend {} is not available on this kernel: {reason}",
                config.backend.name()
            )));
        }
        sys::ignore_sigpipe().map_err(|e| StartError(format!("cannot ignore SIGPIPE: {e}")))?;
        let nofile = sys::raise_nofile_limit().unwrap_or_else(|_| sys::nofile_limit());
        let fd_budget = nofile.saturating_sub(RESERVED_FDS).max(1) as usize;
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
        let board = open_board(&config)
            .map_err(|e| StartError(format!("cannot open the workers' stats board: {e}")))?;
        let reuse_port = config.workers > 1;
        let (listener, local_addr) = bind_listener(config.listen, config.backlog, reuse_port)
            .map_err(|e| StartError(format!("cannot listen on {}: {e}", config.listen)))?;
        // Blocked before anyone can read the ready line, so that a SIGTERM sent right after
        // it is an orderly shutdown rather than the default action. (A master blocks its own.)
        let is_master = config.workers > 1 && config.worker_index.is_none();
        let signals = if is_master {
            None
        } else {
            Some(
                kit::shutdown_signals()
                    .map_err(|e| StartError(format!("cannot set up signal handling: {e}")))?,
            )
        };
        Ok(Server {
            config,
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
        let mut line = format!(
            "listening on {} backend={} proto={}",
            self.local_addr,
            self.config.backend.name(),
            self.config.proto.name()
        );
        if self.config.edge {
            line.push_str(" trigger=edge");
        }
        if self.config.workers > 1 {
            line.push_str(&format!(" workers={}", self.config.workers));
        }
        line
    }

    /// Whether this process is the master of worker processes rather than a server itself.
    pub fn is_master(&self) -> bool {
        self.config.workers > 1 && self.config.worker_index.is_none()
    }

    /// Master of `--workers N`: starts N workers on this server's port (each binds its own
    /// SO_REUSEPORT listener), calls `ready` once all listen, supervises until SIGTERM/SIGINT.
    pub fn supervise_workers(self, ready: impl FnOnce()) -> Result<(), String> {
        let c = &self.config;
        let mut serve_args: Vec<String> = vec![
            "--backend".into(),
            c.backend.name().into(),
            "--proto".into(),
            c.proto.name().into(),
            "--backlog".into(),
            c.backlog.to_string(),
            "--shutdown-grace".into(),
            c.shutdown_grace.as_secs_f64().to_string(),
            "--thread-stack".into(),
            c.thread_stack_kib.to_string(),
            "--header-timeout".into(),
            c.header_timeout.as_secs_f64().to_string(),
            "--idle-timeout".into(),
            c.idle_timeout.as_secs_f64().to_string(),
            "--write-timeout".into(),
            c.write_timeout.as_secs_f64().to_string(),
        ];
        if c.edge {
            serve_args.push("--edge".into());
        }
        if let Some(n) = c.max_conns {
            serve_args.extend(["--max-conns".into(), n.to_string()]);
        }
        if let Some(n) = c.pool_threads {
            serve_args.extend(["--pool-threads".into(), n.to_string()]);
        }
        if let Some(n) = c.sigio_queue_limit {
            serve_args.extend(["--sigio-queue-limit".into(), n.to_string()]);
        }
        let plan = WorkerPlan {
            listen: self.local_addr,
            count: c.workers,
            serve_args,
            stop_grace: c.shutdown_grace,
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
            proto: self.config.proto,
            edge: self.config.edge,
            max_conns: self.max_conns,
            shutdown_grace: self.config.shutdown_grace,
            thread_stack_kib: self.config.thread_stack_kib,
            pool_threads: self
                .config
                .pool_threads
                .unwrap_or_else(default_pool_threads),
            header_timeout: self.config.header_timeout,
            idle_timeout: self.config.idle_timeout,
            write_timeout: self.config.write_timeout,
            board: self.board.take().map(Arc::new),
        };
        self.config.backend.serve(self.listener, signals, &options)
    }
}

/// In a worker of `--workers N`: maps the board whose descriptor the master passed.
fn open_board(config: &ServeConfig) -> io::Result<Option<StatsBoard>> {
    match (config.stats_board_fd, config.worker_index) {
        (Some(fd), Some(index)) => {
            let file = std::fs::File::from(sys::adopt_inherited_fd(fd)?);
            StatsBoard::open(file, config.workers, index).map(Some)
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
