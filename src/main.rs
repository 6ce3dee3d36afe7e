//! The `c10k` command: `serve` with a chosen I/O model, or list the `backends`.

use std::io::Write;
use std::process::ExitCode;

use c10k::models::{BackendKind, BACKENDS};
use c10k::server::{ServeArgs, Server};
use clap::{Parser, Subcommand};

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
    if args.config.worker_index.is_some() {
        if let Err(e) = c10k::workers::follow_master() {
            eprintln!("c10k: worker cannot follow its master: {e}");
            return ExitCode::from(1);
        }
    }
    let server = match Server::bind(args) {
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
