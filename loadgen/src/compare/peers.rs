//! Reference servers run beside the backends (`compare --peers`), from benches/peers: each
//! answers any HTTP/1.1 keep-alive request with 200 "Hello, World!", takes `--port 0`, and prints
//! `listening on 127.0.0.1:PORT peer=NAME` when ready — the contract of c10k's ready line, so the
//! same code starts, pins, measures and stops them. benches/peers/README.md says how to build
//! each; those not built (or not installed) are listed as skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Debug)]
pub struct Peer {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Peer {
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).args(["--port", "0"]);
        cmd
    }
}

/// benches/peers: given, or under the current directory, or above this executable
/// (target/release/loadgen → the workspace).
fn peers_dir(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = given {
        return Some(d.to_path_buf());
    }
    let cwd = Path::new("benches/peers");
    if cwd.is_dir() {
        return Some(cwd.to_path_buf());
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .map(|a| a.join("benches/peers"))
        .find(|d| d.is_dir())
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The peers ready to run, and the others with what to do about them.
pub fn discover(given: Option<&Path>) -> (Vec<Peer>, Vec<(String, String)>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let Some(dir) = peers_dir(given) else {
        missing.push((
            "peers".into(),
            "benches/peers not found: run from the repository or give --peers-dir".into(),
        ));
        return (found, missing);
    };
    let readme = dir.join("README.md");
    let build = |what: &str| format!("not built: see {} ({what})", readme.display());
    let cepoll = dir.join("cepoll/cepoll");
    if cepoll.is_file() {
        found.push(Peer {
            name: "cepoll",
            program: cepoll,
            args: Vec::new(),
        });
    } else {
        missing.push(("peer:cepoll".into(), build("cc -O2")));
    }
    let tokio = dir.join("tokio/target/release/tokio-peer");
    if tokio.is_file() {
        found.push(Peer {
            name: "tokio",
            program: tokio,
            args: vec!["--threads".into(), "1".into()],
        });
    } else {
        missing.push(("peer:tokio".into(), build("cargo build --release")));
    }
    match on_path("python3") {
        Some(python) => found.push(Peer {
            name: "asyncio",
            program: python,
            args: vec![dir.join("asyncio/asyncio_peer.py").display().to_string()],
        }),
        None => missing.push(("peer:asyncio".into(), "python3 is not installed".into())),
    }
    match on_path("nginx") {
        Some(_) => found.push(Peer {
            name: "nginx",
            program: dir.join("nginx/run-nginx.sh"),
            args: Vec::new(),
        }),
        None => missing.push(("peer:nginx".into(), "nginx is not installed".into())),
    }
    (found, missing)
}
