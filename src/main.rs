//! The `c10k` command: `serve` with a chosen I/O model, or list the `backends`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use c10k::models::{BackendKind, BACKENDS};
use c10k::proto::Proto;
use c10k::server::{ServeConfig, Server};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "c10k",
    version,
    about = "One server, many I/O models, chosen at run time"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve echo or HTTP/1.1 with the chosen I/O model. Prints one ready line on stdout.
    Serve(Box<ServeArgs>),
    /// List every backend, whether this kernel supports it, and its limits.
    Backends,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// I/O model: threads, busy-poll, select, poll, epoll, sigio, uring, pool or coro
    /// (`c10k backends` says which this kernel supports).
    #[arg(long, default_value = "epoll", value_parser = parse_backend)]
    backend: BackendKind,
    /// Protocol to serve.
    #[arg(long, value_enum, default_value_t = ProtoArg::Http)]
    proto: ProtoArg,
    /// Address to listen on; port 0 picks a free port (the ready line says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Edge-triggered epoll (EPOLLET) instead of level-triggered.
    #[arg(long)]
    edge: bool,
    /// Connections beyond this are closed at once (HTTP: a 503 first). Default: what the
    /// descriptor limit allows.
    #[arg(long, value_name = "N")]
    max_conns: Option<usize>,
    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = 4096, value_name = "N")]
    backlog: i32,
    /// Seconds that in-flight responses get after SIGINT/SIGTERM before the server exits anyway.
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = parse_seconds)]
    shutdown_grace: Duration,
    /// Seconds a request head may take to arrive whole (then HTTP 408 and close).
    #[arg(long, default_value = "30", value_name = "SECS", value_parser = parse_seconds)]
    header_timeout: Duration,
    /// Seconds an idle keep-alive connection is kept.
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = parse_seconds)]
    idle_timeout: Duration,
    /// Seconds pending output may make no progress (a client that stopped reading).
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = parse_seconds)]
    write_timeout: Duration,
    /// Stack size of each connection's thread, in KiB (threads backend).
    #[arg(long = "thread-stack", default_value_t = 64, value_name = "KIB")]
    thread_stack_kib: usize,
    /// Lower RLIMIT_SIGPENDING to N queued signals (sigio backend), e.g. to force queue overflow.
    #[arg(long, value_name = "N")]
    sigio_queue_limit: Option<u64>,
    /// Threads of the pool backend (default: 2 × cores).
    #[arg(long, value_name = "N")]
    pool_threads: Option<usize>,
    /// Worker processes, each with its own SO_REUSEPORT listener (and descriptor limit),
    /// supervised by this process: a worker that dies is respawned.
    #[arg(long, default_value_t = 1, value_name = "N")]
    workers: usize,
    /// Set by the master on the workers it starts.
    #[arg(long, hide = true, requires = "worker_count")]
    worker_index: Option<usize>,
    #[arg(long, hide = true)]
    worker_count: Option<usize>,
    /// The stats board's descriptor, inherited from the master.
    #[arg(long, hide = true, requires = "worker_index")]
    stats_board_fd: Option<i32>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtoArg {
    Echo,
    Http,
}

fn parse_backend(name: &str) -> Result<BackendKind, String> {
    BackendKind::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = BACKENDS.iter().map(|b| b.name).collect();
        format!("unknown backend '{name}' (one of: {})", names.join(", "))
    })
}

/// Seconds as a decimal number (`30`, `0.5`), finite, non-negative and at most a day.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{text} seconds is out of range (0 to 86400)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(&e.to_string()),
    };
    match cli.command {
        Command::Backends => {
            list_backends();
            ExitCode::SUCCESS
        }
        Command::Serve(args) => serve(*args),
    }
}

/// One line on stderr and exit code 2: clap's multi-line message cut to its first line.
fn usage_error(message: &str) -> ExitCode {
    let first = message.lines().next().unwrap_or(message);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("c10k: {first} (see c10k --help)");
    ExitCode::from(2)
}

fn list_backends() {
    println!(
        "{:<10} {:<12} {:<}",
        "BACKEND", "AVAILABLE", "MODEL / LIMITS"
    );
    for b in BACKENDS {
        let available = match b.kind.probe() {
            Ok(()) => "yes".to_string(),
            Err(reason) => format!("no: {reason}"),
        };
        let teaching = if b.teaching {
            " [teaching backend]"
        } else {
            ""
        };
        println!("{:<10} {:<12} {}{teaching}", b.name, available, b.model);
        println!("{:<10} {:<12} limits: {}", "", "", b.limits);
        if b.kind == BackendKind::Threads {
            // Serve's default --thread-stack.
            let line = c10k::driver::threads::HostLimits::read().describe(64);
            println!("{:<10} {:<12} {line}", "", "");
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = ServeConfig {
        backend: args.backend,
        proto: match args.proto {
            ProtoArg::Echo => Proto::Echo,
            ProtoArg::Http => Proto::Http,
        },
        listen: args.listen,
        edge: args.edge,
        max_conns: args.max_conns,
        backlog: args.backlog,
        shutdown_grace: args.shutdown_grace,
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        write_timeout: args.write_timeout,
        thread_stack_kib: args.thread_stack_kib,
        sigio_queue_limit: args.sigio_queue_limit,
        pool_threads: args.pool_threads,
        workers: args.worker_count.unwrap_or(args.workers),
        worker_index: args.worker_index,
        stats_board_fd: args.stats_board_fd,
    };
    if config.worker_index.is_some() {
        if let Err(e) = c10k::workers::follow_master() {
            eprintln!("c10k: worker cannot follow its master: {e}");
            return ExitCode::from(1);
        }
    }
    let server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("c10k: {e}");
            return ExitCode::from(2);
        }
    };
    let ready_line = server.ready_line();
    let announce = move || {
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{ready_line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            log::warn!("stdout is closed; the ready line could not be printed");
        }
    };
    if server.is_master() {
        return match server.supervise_workers(announce) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log::error!("{e}");
                ExitCode::from(1)
            }
        };
    }
    announce();
    match server.run() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("server stopped: {e}");
            ExitCode::from(1)
        }
    }
}
