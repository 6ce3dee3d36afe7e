//! Item 9 of issue 14: two loadgen processes, as two hosts would be, started apart but given
//! one `--start-at` and one open-loop schedule split with `--part`; their JSON reports and
//! HdrHistogram logs merged with `loadgen merge`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;

/// The one open-loop schedule both parts share, over a measured second (docs/multi-host.md quotes
/// it).
const RATE: u64 = 400;

/// A tiny HTTP server, a thread per connection, answering every request with an empty 200 and
/// noting when it saw the first request of all.
fn tiny_server() -> (SocketAddr, Arc<Mutex<Option<SystemTime>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let first = Arc::new(Mutex::new(None));
    let seen = first.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0; 16 << 10];
                let mut pending = Vec::new();
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    seen.lock().unwrap().get_or_insert_with(SystemTime::now);
                    pending.extend_from_slice(&buf[..n]);
                    let mut answers = Vec::new();
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        answers.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                    }
                    if stream.write_all(&answers).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, first)
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn two_parts_on_one_schedule_merge_exactly() {
    let (addr, first_request) = tiny_server();
    let url = format!("http://{addr}/");
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    // Far enough ahead for both processes to start and connect before it.
    let start_at = unix(SystemTime::now()) + 1.5;
    let start = format!("{start_at:.6}");
    let rate = RATE.to_string();
    let children: Vec<_> = ["0/2", "1/2"]
        .iter()
        .enumerate()
        .map(|(i, part)| {
            loadgen()
                .args(["http", &url, "-c", "4", "-t", "1", "--rate", &rate])
                .args(["-d", "1s", "--warmup", "200ms", "--interval", "500ms"])
                .args(["--part", part, "--start-at", &start])
                .args(["--json", &file(&format!("{i}.json"))])
                .args(["--hdr-log", &file(&format!("{i}.hlog"))])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("loadgen starts")
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("loadgen ends"))
        .collect();
    for out in &outputs {
        assert!(out.status.success(), "stderr: {}", stderr(out));
    }
    let first = unix(first_request.lock().unwrap().expect("requests came"));
    assert!(
        first >= start_at - 0.005,
        "a request came {:.3} s before the start instant",
        start_at - first
    );
    let report = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(file(name)).unwrap()).unwrap()
    };
    let (a, b) = (report("0.json"), report("1.json"));
    // One schedule of RATE req/s over the measured second: RATE requests due, every other one
    // each part's.
    assert_eq!(u(&a, "requests.sent"), RATE / 2);
    assert_eq!(u(&b, "requests.sent"), RATE / 2);
    assert_eq!(a["setup"]["target_rate"].as_f64(), Some(RATE as f64 / 2.0));
    assert_eq!(u(&a, "connections.requested"), 2);
    let out = run(&[
        "merge",
        &file("0.json"),
        &file("1.json"),
        "--json",
        &file("m.json"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = report("m.json");
    for key in [
        "requests.sent",
        "requests.completed",
        "requests.timeouts",
        "latency_us.count",
        "connections.requested",
        "connections.established",
    ] {
        assert_eq!(u(&m, key), u(&a, key) + u(&b, key), "{key}");
    }
    assert_eq!(u(&m, "requests.sent"), RATE);
    assert_eq!(m["setup"]["target_rate"].as_f64(), Some(RATE as f64));
    assert_eq!(u(&m, "setup.merged_runs"), 2);

    // The logs: each part's measured intervals start at the start instant plus the warmup, so
    // they fall on the same instants and merge interval by interval.
    let log = |name: &str| loadgen::hdrlog::read(&std::fs::read(file(name)).unwrap()).unwrap();
    let (la, lb) = (log("0.hlog"), log("1.hlog"));
    assert_eq!(la.len(), 2, "two measured intervals of 500 ms");
    assert_eq!(lb.len(), 2);
    let measured_from = start_at + 0.2;
    for (x, y) in la.iter().zip(&lb) {
        let (sx, sy) = (x.start.as_secs_f64(), y.start.as_secs_f64());
        assert!(
            (sx - sy).abs() < 0.05,
            "the parts' intervals start {:.3} s apart",
            (sx - sy).abs()
        );
        assert!((sx - measured_from).abs() < 0.05 + x.len.as_secs_f64() * 2.0);
    }
    assert!((la[0].start.as_secs_f64() - measured_from).abs() < 0.05);
    let out = run(&[
        "merge",
        &file("0.hlog"),
        &file("1.hlog"),
        "--hdr-log",
        &file("m.hlog"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lm = log("m.hlog");
    assert_eq!(
        lm.len(),
        2,
        "the parts' windows coincide: no interval of one alone"
    );
    let samples = |l: &[loadgen::hdrlog::LogInterval]| l.iter().map(|i| i.hist.len()).sum::<u64>();
    assert_eq!(samples(&lm), samples(&la) + samples(&lb));
    assert_eq!(samples(&lm), u(&m, "latency_us.count"));
}

/// A closed loop with `--start-in`: its connections open at once, its first request waits for
/// the start instant, and then every connection is kept busy (each of the 3 answers requests).
#[test]
fn a_closed_loop_waits_for_the_start_and_then_runs() {
    let (addr, first_request) = tiny_server();
    let launched = SystemTime::now();
    let (r, out) = run_json(&[
        "http",
        &format!("http://{addr}/"),
        "-c",
        "3",
        "-t",
        "1",
        "-d",
        "300ms",
        "--start-in",
        "700ms",
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let first = first_request.lock().unwrap().expect("requests came");
    let waited = first.duration_since(launched).unwrap_or_default();
    assert!(
        waited.as_secs_f64() >= 0.7,
        "the first request came {:.3} s after the launch, before the start",
        waited.as_secs_f64()
    );
    assert!(
        u(&r, "requests.completed") >= 3,
        "the closed loop never started"
    );
    assert_eq!(u(&r, "connections.established"), 3);
    assert_eq!(u(&r, "requests.timeouts"), 0);
}

/// A part started after the instant the others started at would be off their schedule: it
/// refuses (exit 2) and says why.
#[test]
fn a_start_instant_in_the_past_is_refused() {
    let (addr, first_request) = tiny_server();
    let out = run(&[
        "http",
        &format!("http://{addr}/"),
        "-d",
        "1s",
        "--start-at",
        &format!("{:.3}", unix(SystemTime::now()) - 5.0),
    ]);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("in the past"), "{}", stderr(&out));
    assert!(first_request.lock().unwrap().is_none());
}
