//! `loadgen merge`: two real runs' JSON reports merge into their combined counts.

mod common;

use common::*;

#[test]
fn merged_reports_add_up() {
    let server = c10k_server("http");
    let url = format!("http://{}/", server.addr);
    let (a, out_a) = run_json(&["http", &url, "-c", "2", "-t", "1", "-n", "100"]);
    let (b, out_b) = run_json(&["http", &url, "-c", "3", "-t", "1", "-n", "250"]);
    assert!(out_a.status.success() && out_b.status.success());
    let dir = tempfile::tempdir().unwrap();
    let (fa, fb, fm) = (
        dir.path().join("a.json"),
        dir.path().join("b.json"),
        dir.path().join("m.json"),
    );
    std::fs::write(&fa, a.to_string()).unwrap();
    std::fs::write(&fb, b.to_string()).unwrap();
    let out = run(&[
        "merge",
        fa.to_str().unwrap(),
        fb.to_str().unwrap(),
        "--json",
        fm.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fm).unwrap()).unwrap();
    for key in [
        "requests.completed",
        "requests.status_2xx",
        "requests.bytes_received",
        "connections.established",
        "connections.requested",
        "latency_us.count",
        "connect_latency_us.count",
    ] {
        assert_eq!(u(&m, key), u(&a, key) + u(&b, key), "{key}");
    }
    assert_eq!(u(&m, "requests.completed"), 350);
    assert_eq!(
        u(&m, "latency_us.max"),
        u(&a, "latency_us.max").max(u(&b, "latency_us.max"))
    );
    assert_eq!(u(&m, "setup.merged_runs"), 2);
    assert!(stdout(&out).contains("2 runs merged"));
}
