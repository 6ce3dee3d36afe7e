//! End to end against the c10k server (epoll backend) on loopback.

mod common;

use common::*;

fn url(s: &Server, path: &str) -> String {
    format!("http://{}{path}", s.addr)
}

#[test]
fn http_requests_are_all_accounted_for() {
    for engine in engines() {
        let server = c10k_server("http");
        let (r, out) = run_json_on(
            engine,
            &[
                "http",
                &url(&server, "/plaintext"),
                "-c",
                "8",
                "-t",
                "2",
                "-n",
                "600",
            ],
        );
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        assert_eq!(r["setup"]["engine"], engine, "{r}");
        assert_eq!(u(&r, "connections.requested"), 8);
        assert_eq!(u(&r, "connections.established"), 8);
        assert_eq!(u(&r, "connections.failed"), 0);
        assert_eq!(u(&r, "requests.completed"), 600);
        assert_eq!(u(&r, "requests.status_2xx"), 600);
        assert_eq!(u(&r, "requests.timeouts"), 0);
        assert_eq!(u(&r, "requests.protocol_errors"), 0);
        assert_eq!(u(&r, "requests.in_flight_at_end"), 0);
        assert_eq!(u(&r, "latency_us.count"), 600);
        assert_eq!(u(&r, "service_time_us.count"), 600);
        assert!(u(&r, "latency_us.p50") <= u(&r, "latency_us.p99"));
        assert!(u(&r, "latency_us.p99") <= u(&r, "latency_us.max"));
        assert!(u(&r, "requests.bytes_received") >= 600 * "Hello, World!".len() as u64);
        assert_eq!(u(&r, "connect_latency_us.count"), 8);
        assert!(u(&r, "loadgen.counters.threads") == 2);
        let text = stdout(&out);
        assert!(text.contains("established 8"), "{text}");
        assert!(text.contains("2xx 600"), "{text}");
    }
}

#[test]
fn http_pipelined_post_with_body() {
    for engine in engines() {
        let server = c10k_server("http");
        let (r, out) = run_json_on(
            engine,
            &[
                "http",
                &url(&server, "/echo"),
                "-c",
                "3",
                "-t",
                "1",
                "-n",
                "300",
                "--pipeline",
                "8",
                "--method",
                "POST",
                "--body-size",
                "1000",
            ],
        );
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        assert_eq!(u(&r, "requests.completed"), 300);
        assert_eq!(u(&r, "requests.status_2xx"), 300);
        assert!(u(&r, "requests.bytes_received") >= 300 * 1000);
        assert_eq!(u(&r, "setup.pipeline"), 8);
    }
}

#[test]
fn http_without_keepalive_opens_a_connection_per_request() {
    for engine in engines() {
        let server = c10k_server("http");
        let (r, out) = run_json_on(
            engine,
            &[
                "http",
                &url(&server, "/"),
                "-c",
                "2",
                "-t",
                "1",
                "-n",
                "50",
                "--no-keepalive",
            ],
        );
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        assert_eq!(u(&r, "requests.completed"), 50);
        assert_eq!(u(&r, "connections.established"), 2);
        // One connect per request, plus the replacements of the last ones.
        assert!(u(&r, "connections.attempts") >= 50, "{r}");
    }
}

#[test]
fn echo_verifies_every_byte() {
    for engine in engines() {
        let server = c10k_server("echo");
        let (r, out) = run_json_on(
            engine,
            &[
                "echo",
                &server.addr.to_string(),
                "-c",
                "4",
                "-t",
                "2",
                "-n",
                "1000",
                "--pipeline",
                "8",
                "--size",
                "300",
            ],
        );
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        assert_eq!(u(&r, "requests.completed"), 1000);
        assert_eq!(u(&r, "requests.verified"), 1000);
        assert_eq!(u(&r, "requests.corrupted"), 0);
        assert_eq!(u(&r, "requests.truncated"), 0);
        assert_eq!(u(&r, "requests.reordered"), 0);
        assert_eq!(u(&r, "requests.bytes_received"), 300_000);
    }
}

#[test]
fn hold_keeps_every_connection_and_pings_them() {
    for engine in engines() {
        let server = c10k_server("echo");
        let (r, out) = run_json_on(
            engine,
            &[
                "hold",
                &server.addr.to_string(),
                "-c",
                "300",
                "-d",
                "1s",
                "--connect-rate",
                "3000",
                "--ping-interval",
                "200ms",
                "--procs",
                "2",
            ],
        );
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        assert_eq!(u(&r, "connections.requested"), 300);
        assert_eq!(u(&r, "connections.established"), 300);
        assert_eq!(u(&r, "connections.open_at_end"), 300);
        assert_eq!(u(&r, "setup.procs"), 2);
        assert!(u(&r, "requests.verified") >= 300, "{r}");
        assert_eq!(u(&r, "requests.corrupted"), 0);
        assert!(stdout(&out).contains("held: 300 of 300"));
    }
}

#[test]
fn procs_and_sources_split_the_connections() {
    let server = c10k_server("http");
    let (r, out) = run_json(&[
        "http",
        &url(&server, "/"),
        "-c",
        "6",
        "-t",
        "1",
        "-n",
        "400",
        "--procs",
        "2",
        "--source",
        "127.0.0.2-127.0.0.4",
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(u(&r, "connections.established"), 6);
    assert_eq!(u(&r, "requests.completed"), 400);
    assert_eq!(u(&r, "latency_us.count"), 400);
    assert_eq!(u(&r, "loadgen.counters.processes"), 2);
    assert_eq!(r["setup"]["sources"].as_array().unwrap().len(), 3);
}

/// `--source-ports`: each connection arrives from its own (source address, port) pair, the
/// addresses round-robin and the ports taken in turn from the range on each address, over two
/// processes — what keeps connect() from searching for a port (docs/c1m.md).
#[test]
fn source_ports_give_each_connection_its_own_pair() {
    use std::collections::BTreeSet;
    use std::net::{SocketAddr, TcpListener};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    // Above the ephemeral range, per test process, so that parallel runs do not meet.
    let lo = 61_000 + (std::process::id() % 4_000) as u16;
    let range = format!("{lo}-{}", lo + 3);
    let accepting = std::thread::spawn(move || {
        // Kept open until all twelve are in, so that no pair is freed and reused meanwhile.
        let held: Vec<_> = (0..12).map(|_| listener.accept().unwrap()).collect();
        held.into_iter()
            .map(|(_, peer)| peer)
            .collect::<BTreeSet<SocketAddr>>()
    });
    let (r, out) = run_json(&[
        "hold",
        &target,
        "-c",
        "12",
        "-t",
        "1",
        "--procs",
        "2",
        "-d",
        "300ms",
        "--source",
        "127.0.0.2-127.0.0.4",
        "--source-ports",
        &range,
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(u(&r, "connections.established"), 12);
    let peers = accepting.join().unwrap();
    let want: BTreeSet<SocketAddr> = (2..=4)
        .flat_map(|a| (lo..=lo + 3).map(move |p| SocketAddr::from(([127, 0, 0, a], p))))
        .collect();
    assert_eq!(peers, want);
}

/// More connections than (source, port) pairs are refused before anything opens.
#[test]
fn source_ports_refuse_more_connections_than_pairs() {
    let out = run(&[
        "hold",
        "127.0.0.1:9",
        "-c",
        "9",
        "--source",
        "127.0.0.2-127.0.0.3",
        "--source-ports",
        "64000-64003",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("8 pairs"), "{}", stderr(&out));
}

#[test]
fn intervals_and_hdr_log() {
    for engine in engines() {
        let server = c10k_server("http");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("lat.hlog");
        let (r, out) = run_json_on(
            engine,
            &[
                "http",
                &url(&server, "/"),
                "-c",
                "2",
                "-t",
                "1",
                "-d",
                "1s",
                "--interval",
                "250ms",
                "--hdr-log",
                log.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        let lines: Vec<serde_json::Value> = stderr(&out)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert!(lines.len() >= 3, "interval lines: {}", stderr(&out));
        let sum: u64 = lines.iter().map(|l| l["requests"].as_u64().unwrap()).sum();
        assert_eq!(sum, u(&r, "requests.completed"));
        for l in &lines {
            assert!(l["req_per_s"].is_number() && l["p99_us"].is_number());
            assert!(l["conns_open"].as_u64().unwrap() <= 2);
        }
        assert!(lines.iter().any(|l| l["conns_open"].as_u64() == Some(2)));
        let intervals = loadgen::hdrlog::read(&std::fs::read(&log).unwrap()).unwrap();
        let samples: u64 = intervals.iter().map(|i| i.hist.len()).sum();
        assert_eq!(samples, u(&r, "requests.completed"));
    }
}

#[test]
fn refused_connections_are_counted_and_exit_2() {
    for engine in engines() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (r, out) = run_json_on(
            engine,
            &[
                "http",
                &format!("http://127.0.0.1:{port}/"),
                "-c",
                "5",
                "-d",
                "1s",
            ],
        );
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(u(&r, "connections.established"), 0);
        assert_eq!(u(&r, "connections.econnrefused"), 5);
        assert!(stderr(&out).contains("no connection"), "{}", stderr(&out));
    }
}

#[test]
fn library_api_runs_a_report() {
    let server = c10k_server("http");
    let mut cfg = loadgen::Config::new(
        loadgen::Mode::Http(loadgen::HttpOpts {
            host: server.addr.to_string(),
            path: "/".into(),
            method: "GET".into(),
            body_size: 0,
            keepalive: true,
            mix: Vec::new(),
        }),
        server.addr,
        2,
    );
    cfg.threads = 1;
    cfg.duration = None;
    cfg.requests = Some(100);
    let report = loadgen::run_http(&cfg).unwrap();
    assert_eq!(report.requests.completed, 100);
    assert!(loadgen::run_echo(&cfg).is_err());
}

#[test]
fn sigint_stops_the_run_with_a_report() {
    for engine in engines() {
        use std::io::BufRead;
        let server = c10k_server("http");
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("r.json");
        let mut child = loadgen()
            .args([
                "http",
                &url(&server, "/"),
                "-c",
                "2",
                "-t",
                "2",
                "-d",
                "20s",
                "--interval",
                "100ms",
                "--engine",
                engine,
                "--json",
                json.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The first interval line says the run is under way.
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        assert!(first.contains("req_per_s"), "{first}");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert!(u(&r, "loadgen.counters.interrupted_threads") >= 1);
        assert!(r["elapsed_s"].as_f64().unwrap() < 20.0);
        assert!(u(&r, "requests.completed") > 0);
    }
}

/// At the end of a run every operation the engine gave the kernel comes back before its memory
/// is freed. With 1,000 connections the uring engine used to wait for one cancellation at a
/// time, and a DEFER_TASKRUN ring hands over only ~20 completions per such wait: after its 20
/// waits some 580 receives were still armed, so it warned and leaked their buffers rather than
/// free memory the kernel could still write. The drain now waits for all of them at once.
#[test]
fn every_engine_gets_back_every_operation_from_a_thousand_connections() {
    for engine in engines() {
        let server = c10k_server("http");
        let (r, out) = run_json_on(
            engine,
            &[
                "http",
                &url(&server, "/plaintext"),
                "-c",
                "1000",
                "-t",
                "1",
                "-n",
                "3000",
            ],
        );
        let err = stderr(&out);
        assert!(out.status.success(), "stderr: {err}");
        assert_eq!(u(&r, "connections.established"), 1000, "{err}");
        assert_eq!(u(&r, "requests.completed"), 3000, "{err}");
        assert!(!err.contains("still in flight"), "{engine}: {err}");
    }
}
