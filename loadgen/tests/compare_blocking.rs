//! `loadgen compare --workload blocking` end to end at a small size against the real c10k server:
//! epoll as built and with `--offload`, and threads. Asserts the outputs' structure, where the
//! server says the sleeps ran (its `/stats` counters), the per-path counts, and one latency
//! bound that the stall itself guarantees (see below) — no upper bound on any latency.

mod common;

use common::{loadgen, stderr, stdout};

fn find<'a>(
    json: &'a serde_json::Value,
    backend: &str,
    offload: Option<u64>,
) -> &'a serde_json::Value {
    json["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["backend"] == backend && r["offload"].as_u64() == offload)
        .unwrap_or_else(|| panic!("no run of {backend} offload {offload:?}: {json}"))
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number: {v}"))
}

#[test]
fn blocking_comparison_shows_where_the_sleeps_ran() {
    let dir = tempfile::tempdir().unwrap();
    let out = loadgen()
        .args([
            "compare",
            "--workload",
            "blocking",
            "--backends",
            "epoll,threads",
        ])
        .args([
            "--conns",
            "10",
            "--rate",
            "200",
            "--duration",
            "1s",
            "--warmup",
            "0.2s",
        ])
        .args(["--offload", "2", "--no-pin", "--out"])
        .arg(dir.path())
        .arg("--server")
        .arg(common::c10k())
        .output()
        .expect("loadgen runs");
    assert!(out.status.success(), "compare failed: {}", stderr(&out));
    let report = stdout(&out);
    assert!(
        report.contains("### Blocking work: one /sleep/50 in every 100 requests"),
        "{report}"
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("blocking.json")).expect("blocking.json"),
    )
    .expect("blocking.json is JSON");
    assert_eq!(json["settings"]["mix"], "/plaintext=99,/sleep/50=1");
    // threads runs blocking work on its own threads and takes no --offload: one run of it.
    assert_eq!(json["runs"].as_array().unwrap().len(), 3, "{json}");
    let inline = find(&json, "epoll", None);
    let offloaded = find(&json, "epoll", Some(2));
    let threads = find(&json, "threads", None);
    for run in [inline, offloaded, threads] {
        assert_eq!(run["status"], "ok", "{run}");
        // 200 requests in the measured second, one in a hundred a sleep: the mix's share
        // (a sleep due near an edge of the window may fall either side).
        let (fast, slow) = (&run["fast"], &run["slow"]);
        assert!((1..=3).contains(&n(slow, "sent")), "{run}");
        assert!(n(fast, "sent") >= 190, "{run}");
        // Every sleep was served (a server without the routes answers 404, and the run fails).
        assert_eq!(n(slow, "status_2xx"), n(slow, "completed"), "{run}");
    }
    // The server's counters say where the sleeps ran (the warmup's included).
    assert!(n(inline, "blocking_inline") >= 1, "{inline}");
    assert_eq!(n(inline, "blocking_offloaded"), 0, "{inline}");
    assert_eq!(n(offloaded, "blocking_inline"), 0, "{offloaded}");
    assert!(n(offloaded, "blocking_offloaded") >= 1, "{offloaded}");
    assert!(n(threads, "blocking_inline") >= 1, "{threads}");
    // The stall, seen by the client: while epoll's one thread sleeps 50 ms, the ~10
    // /plaintext requests due meanwhile (200 req/s) cannot be answered; the ones due in its
    // first 30 ms wait at least 20 ms past their intended send times. A 1 s window holds at
    // least one whole stall, so at least 6 of its ~198 fast requests wait ≥ 20 ms: more than
    // 1%, so p99 ≥ 20 ms however fast the machine is.
    assert!(
        n(&inline["fast"], "p99_us") >= 20_000,
        "epoll running the sleeps on its loop: /plaintext p99 {} µs",
        inline["fast"]["p99_us"]
    );
    let md = std::fs::read_to_string(dir.path().join("blocking.md")).expect("blocking.md");
    assert!(
        md.contains("(blocking.svg)") && md.contains("Command"),
        "{md}"
    );
    let svg = std::fs::read_to_string(dir.path().join("blocking.svg")).expect("blocking.svg");
    assert!(svg.trim_end().ends_with("</svg>"));
}

#[test]
fn a_bad_blocking_comparison_is_bad_input() {
    for (args, says) in [
        (&["--sleep", "0s"][..], "--sleep"),
        (&["--sleep", "1.5ms"][..], "--sleep"),
        (&["--sleep-every", "1"][..], "--sleep-every"),
        (&["--conns", "10,20"][..], "one --conns"),
        (&["--peers"][..], "backends only"),
    ] {
        let out = loadgen()
            .args(["compare", "--workload", "blocking", "--backends", "epoll"])
            .args(args)
            .arg("--server")
            .arg(common::c10k())
            .output()
            .expect("loadgen runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}
