//! Idle connections for the idle-connection sweep: a `loadgen hold` process (this executable)
//! that opens them, says through its interval lines when they are all open, holds them silent
//! while the active load runs, and is stopped with SIGTERM. A process of its own, so that its
//! descriptors do not count against the comparison's, and `--procs` and `--source` spread them
//! when one process or one source address's ports are not enough.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The share of the ephemeral ports we use per source address. connect() looks for a free port
/// by trying them in turn (the even ones first): with most of the range in use, every connect
/// scans thousands of ports, and 50,000 connects over two addresses took 31 s of system time and
/// timed out. At a fifth of the range they take about 2 s.
const PORT_SHARE: u64 = 5;

/// Source addresses for `conns` connections to `addr`: 127.0.0.2, 127.0.0.3, ... on loopback
/// when one address's share of `port_budget` ephemeral ports is not enough, else none (the
/// kernel's choice).
pub fn sources_for(addr: SocketAddr, conns: u64, port_budget: u64) -> Option<String> {
    let per_source = (port_budget / PORT_SHARE).max(1);
    let sources = conns.div_ceil(per_source);
    (sources > 1 && addr.ip().is_loopback())
        .then(|| format!("127.0.0.2-127.0.0.{}", (sources + 1).min(254)))
}

/// A running `loadgen hold`; killed if dropped.
pub struct Hold {
    child: Child,
    pub open: u64,
}

impl Hold {
    /// Opens `conns` idle connections to `addr` and waits until they are open (or `within`
    /// passes, or the hold process gives up). `procs` processes share them.
    pub fn start(
        exe: &Path,
        addr: SocketAddr,
        conns: u64,
        procs: usize,
        hold_for: Duration,
        within: Duration,
    ) -> Result<Hold, String> {
        let mut cmd = Command::new(exe);
        cmd.args(["hold", &addr.to_string()])
            .args(["--conns", &conns.to_string()])
            .args(["--duration", &format!("{}ms", hold_for.as_millis())])
            .args(["--interval", "100ms", "--threads", "1"])
            .args(["--procs", &procs.max(1).to_string()])
            // A ramp the server's accept queue takes, and connects that may wait out a SYN
            // retransmit or two (a server that accepts slowly is still being measured).
            .args(["--connect-rate", &super::probe::CONNECT_RATE.to_string()])
            .args(["--timeout", &format!("{}ms", within.as_millis() / 2)]);
        if let Some(sources) = sources_for(addr, conns, crate::sys::local_port_budget()) {
            cmd.args(["--source", &sources]);
        }
        // A process group of its own: SIGTERM reaches its --procs workers too.
        cmd.env("RUST_LOG", "warn")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start loadgen hold: {e}"))?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        // Reads the interval lines for as long as the process lives (so that it never blocks on
        // a full pipe) and passes on how many connections are open.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v: Option<serde_json::Value> = serde_json::from_str(&line).ok();
                let open = v.as_ref().and_then(|v| v["conns_open"].as_u64());
                let connecting = v.as_ref().and_then(|v| v["conns_connecting"].as_u64());
                if let (Some(open), Some(connecting)) = (open, connecting) {
                    if tx.send((open, connecting)).is_err() {
                        // Nobody listens any more: keep draining.
                        continue;
                    }
                }
            }
        });
        let mut hold = Hold { child, open: 0 };
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok((open, connecting)) => {
                    hold.open = open;
                    if open >= conns || (connecting == 0 && open > 0 && open + 16 >= conns) {
                        return Ok(hold);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "only {} of {conns} idle connections open after {} s",
                        hold.open,
                        within.as_secs()
                    ))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = hold.child.wait().ok();
                    return Err(format!(
                        "loadgen hold exited ({}) with {} of {conns} connections open",
                        status.map_or("?".into(), |s| s.to_string()),
                        hold.open
                    ));
                }
            }
        }
    }

    /// SIGTERM (it reports and exits), then waits.
    pub fn stop(mut self) {
        let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGTERM);
        super::pin::at_default_policy(|| {
            for _ in 0..200 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
            let _ = self.child.wait();
        });
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
            super::pin::at_default_policy(|| self.child.wait().ok());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifty_thousand_idle_connections_spread_over_sources() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        // 28,232 ports (32768-60999): 5,646 per address.
        assert_eq!(sources_for(lo, 5_000, 28_232), None);
        assert_eq!(
            sources_for(lo, 50_000, 28_232).as_deref(),
            Some("127.0.0.2-127.0.0.10")
        );
        let remote: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        assert_eq!(sources_for(remote, 50_000, 28_232), None);
    }
}
