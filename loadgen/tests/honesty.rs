//! loadgen's own honesty: interval output that keeps flowing when a thread or worker process
//! ends early, and hold runs that keep probing a connection after a lost ping. Tiny servers
//! inside the test, loopback only.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::Stdio;

use common::*;

/// A server that keeps the first connection it accepts open (reading and discarding) and closes
/// every later one at once; returns its address.
fn keeps_only_the_first() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut kept = None;
        for stream in listener.incoming().flatten() {
            if kept.is_none() {
                kept = Some(stream.try_clone().unwrap());
                std::thread::spawn(move || {
                    let mut s = stream;
                    let mut buf = [0u8; 4096];
                    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                });
            } // else: dropped, which closes it
        }
    });
    addr
}

/// Runs `loadgen hold` on two connections of which the server closes one at once, so that one
/// member of the run (`split`: "-t" for threads, "--procs" for worker processes) ends early
/// while the other holds its connection for 10 s. Reads three interval lines, then interrupts
/// the run (SIGINT to its process group, the workers included) and returns the lines and the
/// report.
fn hold_with_one_member_ending_early(split: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    let addr = keeps_only_the_first();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let mut args = vec!["hold", &addr, "-c", "2", "-d", "10s", "--interval", "100ms"];
    args.extend(match split {
        "-t" => ["-t", "2"],
        _ => ["--procs", "2"],
    });
    args.extend(["--json", json.to_str().unwrap()]);
    let mut child = loadgen()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut intervals = Vec::new();
    while intervals.len() < 3 {
        let line = lines.next().expect("loadgen ended").unwrap();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            intervals.push(v);
        }
    }
    // The intervals came while the run was going on: the signal interrupts it. (When the
    // aggregator waits for the member that ended, they come only at the end of the 10 s.)
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {out}");
    let r = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (intervals, r)
}

fn assert_intervals_flow(split: &str) {
    let (lines, r) = hold_with_one_member_ending_early(split);
    assert_eq!(u(&r, "connections.established"), 2, "{r}");
    assert_eq!(u(&r, "connections.closed_by_peer"), 1, "{r}");
    assert!(
        u(&r, "loadgen.counters.interrupted_threads") >= 1,
        "the interval lines came only when the run had ended: {lines:?}\n{r}"
    );
    assert!(r["elapsed_s"].as_f64().unwrap() < 10.0, "{r}");
    let t: Vec<f64> = lines.iter().map(|l| l["t"].as_f64().unwrap()).collect();
    assert!(t.windows(2).all(|w| w[0] < w[1]), "{lines:?}");
    assert_eq!(lines[2]["conns_open"].as_u64(), Some(1), "{lines:?}");
}

/// Item 8 (a), threads: one event-loop thread ends (its connection closed, hold reopens
/// nothing); the other thread's intervals keep coming.
#[test]
fn intervals_flow_when_a_thread_ends_early() {
    assert_intervals_flow("-t");
}

/// Item 8 (a), worker processes: the same with one of two `--procs` workers ending early.
#[test]
fn intervals_flow_when_a_worker_process_ends_early() {
    assert_intervals_flow("--procs");
}

/// An echo server that says nothing until it has received `withhold` bytes, then echoes all of
/// them and everything after; returns its address.
fn echo_after(withhold: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut held = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    held.extend_from_slice(&buf[..n]);
                    if held.len() >= withhold {
                        if stream.write_all(&held).is_err() {
                            return;
                        }
                        held.clear();
                    }
                }
            });
        }
    });
    addr
}

/// Item 8 (b), end to end: a held connection (one ping in flight at a time) whose server
/// answers nothing until it has received three pings. The first two pings are lost (no answer
/// within 150 ms) and counted; the connection is pinged again after each, so the server gets
/// its third ping and echoes all three: the two late answers are matched with the lost pings,
/// and the pings after them are answered in time. (When a lost ping stays in flight the
/// connection is never pinged again: one timeout, no answer, no later loss counted.)
#[test]
fn hold_keeps_probing_a_connection_after_lost_pings() {
    for engine in engines() {
        let addr = echo_after(3 * 64);
        let (r, out) = run_json_on(
            engine,
            &[
                "hold",
                &addr,
                "-c",
                "1",
                "-d",
                "2s",
                "--ping-interval",
                "100ms",
                "--ping-size",
                "64",
                "--timeout",
                "150ms",
            ],
        );
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        assert!(u(&r, "requests.timeouts") >= 2, "{r}");
        assert!(u(&r, "requests.late") >= 2, "{r}");
        assert!(u(&r, "requests.verified") >= 1, "{r}");
        assert_eq!(u(&r, "requests.corrupted"), 0, "{r}");
        assert_eq!(u(&r, "requests.reordered"), 0, "{r}");
        assert_eq!(u(&r, "requests.protocol_errors"), 0, "{r}");
        assert_eq!(u(&r, "connections.open_at_end"), 1, "{r}");
    }
}

/// An HTTP server that answers `per_connection` requests on each connection, the last with
/// `Connection: close`, then shuts down writing (as a server draining for shutdown does, RFC 9112
/// §9.6) and discards whatever else arrives; returns its address.
fn closes_after(per_connection: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                let mut answered = 0;
                while answered < per_connection {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        answered += 1;
                        let close = if answered == per_connection {
                            "Connection: close\r\n"
                        } else {
                            ""
                        };
                        let response =
                            format!("HTTP/1.1 200 OK\r\n{close}Content-Length: 2\r\n\r\nok");
                        if stream.write_all(response.as_bytes()).is_err() {
                            return;
                        }
                        if answered == per_connection {
                            break;
                        }
                    }
                }
                let _ = stream.shutdown(std::net::Shutdown::Write);
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// A server that ends a connection with `Connection: close` has answered everything it was
/// sent: loadgen sends nothing more on it, opens a new one, and counts no aborted request
/// (before, it sent the next request at once and counted it aborted at the EOF).
#[test]
fn connection_close_from_the_server_is_not_an_abort() {
    for engine in engines() {
        let addr = closes_after(3);
        let (r, out) = run_json_on(
            engine,
            &[
                "http",
                &format!("http://{addr}/"),
                "-c",
                "2",
                "-t",
                "1",
                "-n",
                "60",
            ],
        );
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        assert_eq!(u(&r, "requests.aborted"), 0, "{r}");
        assert_eq!(u(&r, "requests.status_2xx"), 60, "{r}");
        assert!(u(&r, "connections.attempts") >= 20, "{r}");
    }
}
