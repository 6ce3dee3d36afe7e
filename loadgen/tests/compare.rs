//! `loadgen compare` end to end: two backends, both protocols, short steps, every output file.
//! No timing is asserted: the machine may be busy.

mod common;

use common::{loadgen, stderr, stdout};

#[test]
fn compare_two_backends_writes_table_json_and_charts() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::c10k();
    let out = loadgen()
        .args(["compare", "--backends", "epoll,poll", "--conns", "10,20"])
        .args(["--duration", "0.5s", "--warmup", "0.1s", "--out"])
        .arg(dir.path())
        .arg("--server")
        .arg(&server)
        .output()
        .expect("loadgen runs");
    assert!(out.status.success(), "compare failed: {}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("| backend | proto | conns |"), "{table}");

    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("results.json")).expect("results.json"),
    )
    .expect("results.json is JSON");
    let steps = json["steps"].as_array().expect("steps");
    for backend in ["epoll", "poll"] {
        for proto in ["http", "echo"] {
            for conns in [10, 20] {
                let step = steps
                    .iter()
                    .find(|s| s["backend"] == backend && s["proto"] == proto && s["conns"] == conns)
                    .unwrap_or_else(|| panic!("no row for {backend} {proto} {conns}: {json}"));
                assert_eq!(step["status"], "ok", "{step}");
                let m = &step["metrics"];
                let rps = m["req_per_s"].as_f64().unwrap();
                assert!(rps > 0.0, "req/s {rps} for {backend} {proto} {conns}");
                let sys = m["syscalls_per_req"].as_f64().unwrap_or(0.0);
                assert!(
                    sys > 0.0,
                    "syscalls/req {sys} for {backend} {proto} {conns}"
                );
                assert!(m["rss_peak_kib"].as_u64().unwrap() > 0, "{m}");
                assert!(m["conns_held"].as_u64().unwrap() > 0, "{m}");
            }
        }
    }
    assert!(json["machine"]["nproc"].as_u64().unwrap() >= 1);
    assert!(json["command"].as_str().unwrap().contains("compare"));

    let md = std::fs::read_to_string(dir.path().join("results.md")).expect("results.md");
    assert!(md.contains("epoll") && md.contains("poll"), "{md}");
    assert!(md.contains("Linux") && md.contains("Command"), "{md}");
    for metric in ["throughput", "p99", "memory", "syscalls"] {
        for proto in ["http", "echo"] {
            let path = dir.path().join(format!("{metric}-{proto}.svg"));
            let svg = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(svg.trim_start().starts_with("<svg"), "{}", path.display());
            assert!(
                svg.contains("<polyline") || svg.contains("<path"),
                "{} has no line",
                path.display()
            );
            assert!(svg.trim_end().ends_with("</svg>"), "{}", path.display());
            assert!(md.contains(&format!("{metric}-{proto}.svg")));
        }
    }
}

#[test]
fn unknown_backend_is_bad_input() {
    let out = loadgen()
        .args(["compare", "--backends", "epoll,kqueue", "--server"])
        .arg(common::c10k())
        .output()
        .expect("loadgen runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("kqueue") && err.contains("epoll") && err.contains("busy-poll"),
        "{err}"
    );
}

#[test]
fn missing_server_binary_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = loadgen()
        .args(["compare", "--backends", "epoll", "--server"])
        .arg(dir.path().join("no-such-c10k"))
        .output()
        .expect("loadgen runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cargo build --release"),
        "{}",
        stderr(&out)
    );
}
