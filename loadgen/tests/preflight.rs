//! Bad input and preflight refusals: one clear line on stderr, exit code 2, nothing opened.

mod common;

use common::*;

/// The hard RLIMIT_NOFILE of this test process (as loadgen will raise to it).
fn hard_nofile() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let hard = line.split_whitespace().nth(4).unwrap();
    hard.parse().unwrap_or(1 << 20)
}

fn port_budget() -> u64 {
    let r = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let v: Vec<u64> = r.split_whitespace().map(|x| x.parse().unwrap()).collect();
    v[1] - v[0] + 1
}

fn refused(args: &[&str], expect: &[&str]) {
    let out = run(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    for e in expect {
        assert!(err.contains(e), "{args:?}: {err:?} lacks {e:?}");
    }
    assert!(out.stdout.is_empty(), "nothing ran");
}

#[test]
fn too_many_connections_for_one_process() {
    let conns = (hard_nofile() + 100).to_string();
    refused(
        &["http", "http://127.0.0.1:9/", "-c", &conns, "-d", "1s"],
        &["descriptors", "--procs 2", "preflight"],
    );
}

#[test]
fn too_many_connections_for_one_source_address() {
    let conns = port_budget() + 1000;
    let procs = conns.div_ceil(hard_nofile() - 64).max(2);
    refused(
        &[
            "hold",
            "127.0.0.1:9",
            "-c",
            &conns.to_string(),
            "--procs",
            &procs.to_string(),
            "-d",
            "1s",
        ],
        &["local ports", "--source", "ip_local_port_range"],
    );
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    refused(&["http", "https://127.0.0.1/"], &["http://"]);
    refused(
        &["http", "http://127.0.0.1:9/", "-d", "5 parsecs"],
        &["duration"],
    );
    refused(&["echo", "127.0.0.1:9", "--size", "8"], &["--size"]);
    refused(
        &["echo", "127.0.0.1:9", "-c", "2", "--procs", "3"],
        &["--procs"],
    );
    refused(&["echo", "nowhere"], &["host:port"]);
    refused(
        &[
            "http",
            "http://127.0.0.1:9/",
            "--source",
            "127.0.0.9-127.0.0.2",
        ],
        &["--source"],
    );
    refused(
        &[
            "http",
            "http://127.0.0.1:9/",
            "--no-keepalive",
            "--pipeline",
            "2",
        ],
        &["pipeline"],
    );
    refused(&["hold", "127.0.0.1:9", "--rate", "10"], &["--rate"]);
    refused(&["merge", "/nonexistent/report.json"], &["cannot read"]);
}

#[test]
fn merge_refuses_a_file_that_is_neither_report_nor_log() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("junk.json");
    std::fs::write(&f, "{\"not\": \"a report\"}").unwrap();
    refused(&["merge", f.to_str().unwrap()], &["not a loadgen report"]);
}
