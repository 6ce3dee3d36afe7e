//! Helpers shared by the integration tests: the loadgen binary, the c10k server binary (built
//! once if missing), and servers' ready lines read from their stdout.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::Once;

pub fn loadgen() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    c.env("RUST_LOG", "warn");
    c
}

/// Runs loadgen with `args`; stdout and stderr captured.
pub fn run(args: &[&str]) -> Output {
    loadgen().args(args).output().expect("loadgen runs")
}

/// Every `--engine`: the tests of behaviour that does not depend on how the event loop does
/// its I/O run once per engine, so a new engine is tested by adding it here.
pub const ENGINES: &[&str] = &["epoll", "uring"];

/// The engines of [`ENGINES`] this machine can run (io_uring may be missing or disabled; the
/// tests then say so and run the others).
pub fn engines() -> Vec<&'static str> {
    ENGINES
        .iter()
        .copied()
        .filter(|&e| match (e, c10k::driver::uring::probe()) {
            ("uring", Err(why)) => {
                eprintln!("io_uring unavailable here ({why}); --engine uring skipped");
                false
            }
            _ => true,
        })
        .collect()
}

/// [`run_json`] with `--engine engine`.
pub fn run_json_on(engine: &str, args: &[&str]) -> (serde_json::Value, Output) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--engine", engine]);
    run_json(&all)
}

/// Runs loadgen with `args` plus `--json FILE` and returns the parsed report with the output.
pub fn run_json(args: &[&str]) -> (serde_json::Value, Output) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--json", path.to_str().unwrap()]);
    let out = run(&all);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        serde_json::from_str(&text).expect("the report is JSON"),
        out,
    )
}

fn c10k_path() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_loadgen"))
        .parent()
        .expect("the binary is in a target directory")
        .join("c10k")
}

/// The c10k server binary: the workspace's `target/debug/c10k` (built by `cargo build` or any
/// workspace test run), or, when that is missing, built once into a directory of its own —
/// cargo holds the workspace target directory's lock while tests run, so a nested build there
/// would wait forever.
pub fn c10k() -> PathBuf {
    static BUILD: Once = Once::new();
    let path = c10k_path();
    if path.exists() {
        return path;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let own_dir = workspace.join("target").join("loadgen-tests");
    BUILD.call_once(|| {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", "c10k", "--bin", "c10k"])
            .env("CARGO_TARGET_DIR", &own_dir)
            .current_dir(&workspace)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the c10k server failed");
    });
    own_dir.join("debug").join("c10k")
}

/// A server process, killed (by its own handle) when dropped.
pub struct Server {
    child: Child,
    /// Kept open so that the server never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `c10k serve` with the epoll backend and `proto` (http or echo) on a free loopback
/// port, and waits for its ready line.
pub fn c10k_server(proto: &str) -> Server {
    let mut child = Command::new(c10k())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "epoll",
            "--proto",
            proto,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("c10k starts");
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).expect("ready line");
    // "listening on <ip:port> backend=<name> proto=<echo|http>"
    let addr = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
    Server {
        child,
        _stdout: stdout,
        addr,
    }
}

pub fn u(v: &serde_json::Value, path: &str) -> u64 {
    let mut cur = v;
    for key in path.split('.') {
        cur = &cur[key];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("{path} is not a number in the report: {cur}"))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
