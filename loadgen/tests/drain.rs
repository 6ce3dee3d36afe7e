//! The drain after the measured window, end to end: a tiny HTTP server in the test answers every
//! request at once except the 20th on its connection, which it answers a second late or never.
//! The window's slowest request must be recorded (or, unanswered, counted and recorded as a lower
//! bound), and the run must end by itself within the drain's bound. Loopback only.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
/// The request (counted from 1 on each connection) that the server answers late or never.
const SLOW: usize = 20;

/// A server whose answer to the [`SLOW`]th request of each connection comes `delay` late
/// (None: never, the connection stays open and read); returns its address.
fn slow_at_20th(delay: Option<Duration>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut seen = 0;
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        seen += 1;
                        if seen == SLOW {
                            match delay {
                                // The slowness under test, not a wait for readiness.
                                Some(d) => std::thread::sleep(d),
                                None => {
                                    while matches!(stream.read(&mut chunk), Ok(n) if n > 0) {}
                                    return;
                                }
                            }
                        }
                        if stream.write_all(OK).is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// Runs loadgen over one connection for a 300 ms window with 100 ms intervals (`extra`: more
/// arguments), on `engine`; returns the report, how long the run took and its last interval line.
fn run_300ms(
    addr: &str,
    engine: &str,
    extra: &[&str],
) -> (serde_json::Value, Duration, serde_json::Value) {
    let url = format!("http://{addr}/");
    let mut args = vec!["http", &url, "-c", "1", "-t", "1", "-d", "300ms"];
    args.extend(["--engine", engine]);
    args.extend(["--interval", "100ms"]);
    args.extend(extra);
    let t0 = Instant::now();
    let (r, out) = run_json(&args);
    let took = t0.elapsed();
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let last = stderr(&out)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .expect("interval lines");
    (r, took, last)
}

fn f(r: &serde_json::Value, key: &str) -> f64 {
    r[key].as_f64().unwrap()
}

/// Closed loop: the 20th request, sent in the window, is answered a second later, after the
/// window's end: it is recorded (at least the second it waited), counted as drained, and
/// nothing is left in flight.
#[test]
fn closed_loop_records_an_answer_that_comes_after_the_window() {
    for engine in engines() {
        let (r, took, last) = run_300ms(&slow_at_20th(Some(Duration::from_secs(1))), engine, &[]);
        assert_eq!(u(&r, "requests.completed"), SLOW as u64, "{r}");
        assert_eq!(u(&r, "requests.drained"), 1, "{r}");
        assert_eq!(u(&r, "requests.in_flight_at_end"), 0, "{r}");
        assert_eq!(u(&r, "latency_us.count"), SLOW as u64, "{r}");
        assert!(u(&r, "latency_us.max") >= 1_000_000, "{r}");
        // The drain lasted until the answer (sent at most 0.3 s after the window began, answered a
        // second later), within its bound (2 s).
        assert!((0.6..4.5).contains(&f(&r, "drain_s")), "{r}");
        assert!(took < Duration::from_secs(30), "{took:?}");
        // The drain's answer is in an interval line of its own, the last.
        assert_eq!(last["drain"], true, "{last}");
        assert_eq!(last["requests"], 1, "{last}");
    }
}

/// Closed loop: the 20th request is never answered. The run ends at the drain's bound (2 s,
/// under the 5 s timeout) with it in flight, recorded at the age it reached (over 2 s).
#[test]
fn closed_loop_ends_at_the_drain_bound_when_an_answer_never_comes() {
    for engine in engines() {
        let (r, took, last) = run_300ms(&slow_at_20th(None), engine, &[]);
        assert_eq!(u(&r, "requests.completed"), SLOW as u64 - 1, "{r}");
        assert_eq!(u(&r, "requests.in_flight_at_end"), 1, "{r}");
        assert_eq!(u(&r, "requests.timeouts"), 0, "{r}");
        assert_eq!(u(&r, "latency_us.count"), SLOW as u64, "{r}");
        assert!(u(&r, "latency_us.max") >= 2_000_000, "{r}");
        // At the 2 s bound, not at the 5 s timeout (the slack is for a loaded machine).
        assert!((2.0..4.5).contains(&f(&r, "drain_s")), "{r}");
        assert!(took < Duration::from_secs(30), "{took:?}");
        assert_eq!(last["drain"], true, "{last}");
        assert!(last["p99_us"].as_u64().unwrap() >= 2_000_000, "{last}");
    }
}

/// Open loop at 200 req/s over one connection, one request deep: behind the 20th request
/// (answered a second late) the rest of the window's 60 requests wait for the connection. The
/// drain sends them once it is free: every request of the window is sent and answered, the
/// ones behind the slow one recorded from their due times.
#[test]
fn open_loop_drains_the_requests_due_in_the_window() {
    for engine in engines() {
        let (r, _, _) = run_300ms(
            &slow_at_20th(Some(Duration::from_secs(1))),
            engine,
            &["--rate", "200"],
        );
        let sent = u(&r, "requests.sent");
        assert!(sent > SLOW as u64, "{r}");
        assert_eq!(u(&r, "requests.completed"), sent, "{r}");
        assert_eq!(u(&r, "requests.in_flight_at_end"), 0, "{r}");
        assert!(u(&r, "requests.drained") >= 1, "{r}");
        assert!(u(&r, "latency_us.max") >= 1_000_000, "{r}");
        // The achieved rate is the throughput over the window: the answers that came in it, which
        // the drain's are not.
        let in_window = u(&r, "requests.answered_in_window");
        assert!(in_window < sent, "{r}");
        let rate = r["rates"]["req_per_s"].as_f64().unwrap();
        assert!(
            (rate - in_window as f64 / f(&r, "elapsed_s")).abs() < 1e-6,
            "{r}"
        );
    }
}

/// Open loop, never answered: the 20th request and every later one due in the window are in
/// flight at the end of the drain, each recorded at its age.
#[test]
fn open_loop_counts_what_the_drain_left_unanswered() {
    for engine in engines() {
        let (r, _, _) = run_300ms(&slow_at_20th(None), engine, &["--rate", "200"]);
        let unanswered = u(&r, "requests.in_flight_at_end");
        assert!(unanswered >= 1, "{r}");
        assert_eq!(u(&r, "requests.completed"), SLOW as u64 - 1, "{r}");
        assert_eq!(
            u(&r, "latency_us.count"),
            SLOW as u64 - 1 + unanswered,
            "{r}"
        );
        assert!(u(&r, "latency_us.max") >= 2_000_000, "{r}");
    }
}
