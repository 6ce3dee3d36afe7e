//! `loadgen http --mix`: the paths are sent in exactly their shares and in a fixed order, and each
//! path's latency is recorded apart (corrected for coordinated omission like the run's own). A
//! tiny server inside the test records the paths it is asked for and delays one of them; what is
//! asserted is counts, paths and lower bounds that the delay guarantees, never a measured speed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// The paths a server was asked for, by connection (in the order the connections were
/// accepted), in the order asked.
type Seen = Arc<Mutex<Vec<Vec<String>>>>;

/// An HTTP server, a thread per connection, that answers every request with 200 and records its
/// path; requests for `slow_path` are answered after `delay`.
fn recording_server(slow_path: &'static str, delay: Duration) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let conn = {
                let mut s = log.lock().unwrap();
                s.push(Vec::new());
                s.len() - 1
            };
            let log = log.clone();
            std::thread::spawn(move || serve(stream, conn, &log, slow_path, delay));
        }
    });
    (addr, seen)
}

fn serve(stream: TcpStream, conn: usize, log: &Seen, slow_path: &str, delay: Duration) {
    let _ = stream.set_nodelay(true);
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    let mut path = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => {
                log.lock().unwrap()[conn].push(path.clone());
                if path == slow_path {
                    std::thread::sleep(delay);
                }
                if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .is_err()
                {
                    return;
                }
            }
            Ok(_) if line.starts_with("GET ") => {
                path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            }
            Ok(_) => {}
        }
    }
}

fn count(seen: &Seen, path: &str) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .flatten()
        .filter(|p| *p == path)
        .count()
}

/// A path's latencies from the histogram in the JSON report (not from the rounded percentiles
/// beside it): (count, minimum, median) in µs.
fn histogram(report: &serde_json::Value, path: &str) -> (u64, u64, u64) {
    let encoded = report["per_path"][path]["histogram"]
        .as_str()
        .unwrap_or_else(|| panic!("no histogram for {path}: {report}"));
    let h = loadgen::report::decode_histogram(encoded).unwrap();
    (h.len(), h.min(), h.value_at_quantile(0.5))
}

/// Open loop over 4 connections and 2 threads: requests are numbered on the run's one schedule,
/// so 400 requests of `/a=3,/b=1` are exactly 300 and 100 whichever connection carries which,
/// on the server's side as in the report.
#[test]
fn open_loop_sends_each_path_its_exact_share() {
    for engine in engines() {
        let (addr, seen) = recording_server("", Duration::ZERO);
        let url = format!("http://{addr}");
        let (r, out) = run_json_on(
            engine,
            &[
                "http",
                &url,
                "--mix",
                "/a=3,/b=1",
                "-c",
                "4",
                "-t",
                "2",
                "-n",
                "400",
                "--rate",
                "2000",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        for (path, n) in [("/a", 300), ("/b", 100)] {
            assert_eq!(u(&r, &format!("per_path.{path}.sent")), n, "{r}");
            assert_eq!(u(&r, &format!("per_path.{path}.completed")), n, "{r}");
            assert_eq!(u(&r, &format!("per_path.{path}.status_2xx")), n, "{r}");
            assert_eq!(
                u(&r, &format!("per_path.{path}.latency_us.count")),
                n,
                "{r}"
            );
            assert_eq!(count(&seen, path), n as usize, "server side of {path}");
        }
        assert_eq!(u(&r, "latency_us.count"), 400);
        // The text report shows each path.
        let text = stdout(&out);
        assert!(
            text.contains("path /a: 300 sent, 300 completed (300 2xx), 0 timeouts"),
            "{text}"
        );
        assert!(text.contains("path /b: 100 sent"), "{text}");
    }
}

/// Closed loop on one connection: the connection's own count orders the paths, the same on
/// every run: `/a=3,/b=1` is a, a, b, a over and over (smooth weighted round robin), so that the
/// rare path comes at even spacing.
#[test]
fn closed_loop_interleaves_paths_in_a_fixed_order() {
    let (addr, seen) = recording_server("", Duration::ZERO);
    let url = format!("http://{addr}");
    let (r, out) = run_json(&["http", &url, "--mix", "/a=3,/b=1", "-c", "1", "-n", "40"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "one connection");
    let expected: Vec<&str> = ["/a", "/a", "/b", "/a"].repeat(10);
    assert_eq!(seen[0], expected);
    assert_eq!(u(&r, "per_path./b.sent"), 10);
}

/// One slow path among fast ones, over enough connections that the fast requests never wait for
/// a slow one: each path's histogram holds its own requests and only those. Every `/slow`
/// answer takes at least the server's 300 ms delay (so a fast request recorded there would show
/// as a minimum below it), and the fast median stays below that minimum.
#[test]
fn a_slow_path_is_recorded_apart_from_the_fast_one() {
    let delay = Duration::from_millis(300);
    let (addr, _) = recording_server("/slow", delay);
    let url = format!("http://{addr}");
    let (r, out) = run_json(&[
        "http",
        &url,
        "--mix",
        "/fast=19,/slow=1",
        "-c",
        "10",
        "-t",
        "1",
        "-n",
        "200",
        "--rate",
        "200",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (slow_n, slow_min, _) = histogram(&r, "/slow");
    let (fast_n, _, fast_median) = histogram(&r, "/fast");
    assert_eq!((slow_n, fast_n), (10, 190), "{r}");
    // (HdrHistogram keeps 3 significant digits: 300 ms may read a little under.)
    assert!(
        slow_min >= delay.as_micros() as u64 * 99 / 100,
        "a request recorded as /slow was answered in {slow_min} µs: {r}"
    );
    assert!(
        fast_median < slow_min,
        "fast median {fast_median} µs, slow minimum {slow_min} µs"
    );
}

/// The blocking-work picture in miniature, and the per-path latency corrected for coordinated
/// omission: one connection, open loop at 100 req/s for 3 s, every 100th request a `/slow` one
/// that the server answers after 1 s. The ~100 fast requests due during each stall wait behind
/// it on the one connection, late by up to 1 s from their intended send times: far more than 1%
/// of the fast requests, so the fast path's p99 is at least 500 ms however fast this machine is.
#[test]
fn fast_requests_behind_a_slow_one_show_the_wait_in_their_own_percentiles() {
    let (addr, seen) = recording_server("/slow", Duration::from_secs(1));
    let url = format!("http://{addr}");
    let (r, out) = run_json(&[
        "http",
        &url,
        "--mix",
        "/fast=99,/slow=1",
        "-c",
        "1",
        "-t",
        "1",
        "-d",
        "3s",
        "--rate",
        "100",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(count(&seen, "/slow") >= 2, "the server saw the slow path");
    assert!(
        u(&r, "per_path./fast.latency_us.p99") >= 500_000,
        "the fast path's corrected p99 hides the wait: {}",
        r["per_path"]
    );
    // (HdrHistogram keeps 3 significant digits: 1 s may read as 999,936 µs.)
    assert!(u(&r, "per_path./slow.latency_us.min") >= 990_000, "{r}");
}

#[test]
fn a_bad_mix_is_bad_input() {
    for (url_path, mix, says) in [
        ("/x", "/a=1", "not both"),
        ("", "/a=0", "weight 0"),
        ("", "/a=1,/a=2", "twice"),
        ("", "a=1", "must start with /"),
        ("", "/a", "PATH=WEIGHT"),
        ("", "/a=60000,/b=60000", "at most"),
    ] {
        let url = format!("http://127.0.0.1:9{url_path}");
        let out = run(&["http", &url, "--mix", mix, "-n", "1"]);
        assert_eq!(out.status.code(), Some(2), "{mix}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{mix}: {}", stderr(&out));
    }
}
