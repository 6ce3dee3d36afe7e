//! Tiny misbehaving servers inside the test: one that stalls, ones that corrupt, drop or cut
//! echoed bytes. Loopback only; every run bounded by --requests or --duration and --timeout.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Serves each accepted connection on its own thread with `serve`; returns the address.
fn spawn_server(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let serve = serve.clone();
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// HTTP server that answers every GET with 200, but before every `every`-th response (counted
/// over all connections) sleeps for `stall`.
fn stalling_http(every: u64, stall: Duration) -> String {
    let count = Arc::new(AtomicU64::new(0));
    spawn_server(move |stream| {
        let _ = stream.set_nodelay(true);
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => {
                    if count.fetch_add(1, Ordering::Relaxed) % every == every - 1 {
                        std::thread::sleep(stall);
                    }
                    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if w.write_all(resp).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
            }
        }
    })
}

/// The coordinated-omission test. One connection, 100 req/s open loop for 3 s; the server stalls
/// 1 s before every 100th response. The ~100 requests due during each stall wait behind it: from
/// their intended send times they are late by up to 1 s (about half of them by more than 0.5 s),
/// far more than 1% of all requests, so the corrected p99 must be at least 500 ms however fast or
/// slow this machine is. Measured from the actual send, almost every request is quick, so the
/// service-time median stays far below that.
#[test]
fn corrected_latency_shows_a_stall_that_service_time_hides() {
    for engine in engines() {
        let addr = stalling_http(100, Duration::from_secs(1));
        let (r, out) = run_json_on(
            engine,
            &[
                "http",
                &format!("http://{addr}/"),
                "-c",
                "1",
                "--rate",
                "100",
                "-d",
                "3s",
                "--timeout",
                "10s",
            ],
        );
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        assert_eq!(u(&r, "requests.timeouts"), 0);
        let corrected_p99 = u(&r, "latency_us.p99");
        let service_p50 = u(&r, "service_time_us.p50");
        assert!(
            corrected_p99 >= 500_000,
            "corrected p99 {corrected_p99} µs: {r}"
        );
        assert!(service_p50 < 250_000, "service p50 {service_p50} µs");
        assert!(u(&r, "latency_us.p50") >= service_p50);
        assert!(r["rates"]["target_req_per_s"].as_f64() == Some(100.0));
    }
}

/// The same stall in closed loop with a timeout shorter than the stall: the stalled requests are
/// counted as timeouts and recorded (at their age when found), not dropped.
#[test]
fn timeouts_are_recorded_not_dropped() {
    for engine in engines() {
        let addr = stalling_http(20, Duration::from_millis(1500));
        let (r, out) = run_json_on(
            engine,
            &[
                "http",
                &format!("http://{addr}/"),
                "-c",
                "1",
                "-n",
                "30",
                "--timeout",
                "300ms",
            ],
        );
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        let timeouts = u(&r, "requests.timeouts");
        assert!(timeouts >= 1, "{r}");
        assert_eq!(
            u(&r, "latency_us.count"),
            u(&r, "requests.completed") + timeouts
        );
        assert!(u(&r, "latency_us.max") >= 300_000);
        // The connection of a timed-out request is replaced, so the run goes on to its end.
        assert!(u(&r, "connections.closed_on_timeout") >= 1);
        assert_eq!(u(&r, "requests.completed") + timeouts, 30);
    }
}

/// Echo server that passes every byte through `f(position, byte)`: None drops it. After
/// `cut_after` bytes (if any) it closes the connection.
fn faulty_echo(f: fn(u64, u8) -> Option<u8>, cut_after: Option<u64>) -> String {
    spawn_server(move |mut stream| {
        let mut buf = [0u8; 4096];
        let mut pos = 0u64;
        let mut out = Vec::new();
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            out.clear();
            for &b in &buf[..n] {
                if cut_after.is_some_and(|c| pos >= c) {
                    let _ = stream.write_all(&out);
                    return; // dropping the stream closes the connection
                }
                if let Some(b) = f(pos, b) {
                    out.push(b);
                }
                pos += 1;
            }
            if stream.write_all(&out).is_err() {
                return;
            }
        }
    })
}

fn echo_run(engine: &str, addr: &str) -> serde_json::Value {
    let (r, out) = run_json_on(
        engine,
        &[
            "echo",
            addr,
            "-c",
            "1",
            "-n",
            "6",
            "--size",
            "64",
            "--timeout",
            "500ms",
        ],
    );
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    r
}

#[test]
fn echo_catches_a_flipped_byte() {
    for engine in engines() {
        let addr = faulty_echo(|pos, b| Some(if pos == 100 { b ^ 0x20 } else { b }), None);
        let r = echo_run(engine, &addr);
        assert!(u(&r, "requests.corrupted") >= 1, "{r}");
        assert!(u(&r, "connections.closed_on_error") >= 1);
        assert!(u(&r, "requests.verified") >= 1);
    }
}

#[test]
fn echo_catches_a_dropped_byte() {
    for engine in engines() {
        let addr = faulty_echo(|pos, b| (pos != 100).then_some(b), None);
        let r = echo_run(engine, &addr);
        assert!(
            u(&r, "requests.corrupted") + u(&r, "requests.truncated") >= 1,
            "{r}"
        );
    }
}

#[test]
fn echo_catches_a_truncated_message() {
    for engine in engines() {
        let addr = faulty_echo(|_, b| Some(b), Some(100));
        let r = echo_run(engine, &addr);
        assert!(u(&r, "requests.truncated") >= 1, "{r}");
        assert!(u(&r, "connections.closed_by_peer") >= 1);
    }
}
