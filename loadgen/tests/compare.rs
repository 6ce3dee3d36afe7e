//! `loadgen compare` end to end at a small size: two backends, a capacity search over a narrow
//! rate range, the common-rate probe, and an idle sweep of 0 and 200 idle connections. Asserts
//! the structure of every output, the pinning as /proc saw it, and what the idle sweep is for:
//! poll's descriptors examined per request grow with idle connections, epoll's do not.
//! No timing is asserted: the machine may be busy.

mod common;

use common::{loadgen, stderr, stdout};

fn examined(json: &serde_json::Value, subject: &str, idle: u64) -> f64 {
    let step = json["idle"]
        .as_array()
        .expect("idle steps")
        .iter()
        .find(|s| s["subject"] == subject && s["idle"] == idle)
        .unwrap_or_else(|| panic!("no idle step for {subject} {idle}: {json}"));
    assert_eq!(step["status"], "ok", "{step}");
    step["probe"]["server"]["examined_per_req"]
        .as_f64()
        .unwrap_or_else(|| panic!("no examined_per_req: {step}"))
}

#[test]
fn compare_finds_capacity_and_the_cost_of_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cmd = loadgen();
    cmd.args(["compare", "--backends", "epoll,poll", "--conns", "20"])
        .args(["--start-rate", "250", "--max-rate", "1000"])
        .args(["--duration", "0.3s", "--warmup", "0.1s"])
        .args(["--idle", "0,200", "--active", "10", "--idle-rate", "300"])
        .arg("--out")
        .arg(dir.path())
        .arg("--server")
        .arg(common::c10k());
    if nproc >= 2 {
        cmd.args(["--server-cpus", "0", "--loadgen-cpus", "1"]);
    }
    let out = cmd.output().expect("loadgen runs");
    assert!(out.status.success(), "compare failed: {}", stderr(&out));
    let report = stdout(&out);
    assert!(
        report.contains("### Capacity at 20 connections"),
        "{report}"
    );
    assert!(report.contains("### Idle connections"), "{report}");

    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("results.json")).expect("results.json"),
    )
    .expect("results.json is JSON");
    // Pinning: asked, recorded, and what /proc says the processes were allowed.
    let pinning = &json["settings"]["pinning"];
    if nproc >= 2 {
        assert_eq!(pinning["server_cpus"], "0", "{pinning}");
        assert_eq!(pinning["loadgen_cpus"], "1", "{pinning}");
        assert_eq!(pinning["loadgen_observed"], "1", "{pinning}");
    }
    for backend in ["epoll", "poll"] {
        let step = json["capacity"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subject"] == backend && s["conns"] == 20)
            .unwrap_or_else(|| panic!("no capacity step for {backend}: {json}"));
        assert_eq!(step["status"], "ok", "{step}");
        if nproc >= 2 {
            assert_eq!(step["server_cpus_observed"], "0", "{step}");
        }
        let probes = step["search"]["probes"].as_array().expect("probes");
        assert!(!probes.is_empty(), "{step}");
        assert_eq!(probes[0]["target_rate"], 250.0, "{step}");
        // The bound says who set the figure; a number is there whenever a probe passed.
        let bound = step["bound"].as_str().expect("a bound");
        assert!(
            ["server", "loadgen", "max-rate", "below-min"].contains(&bound),
            "{step}"
        );
        // The figure is the highest rate that passed.
        let highest_pass = probes
            .iter()
            .filter(|p| p["pass"] == true)
            .filter_map(|p| p["target_rate"].as_f64())
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
        assert_eq!(step["capacity"].as_f64(), highest_pass, "{step}");
        let server = &step["at_common"]["server"];
        assert!(server["cpu_us_per_req"].as_f64().unwrap() > 0.0, "{step}");
        assert!(server["syscalls_per_req"].as_f64().unwrap() > 0.0, "{step}");
        // io_uring operations are counted apart from syscalls (zero for readiness backends).
        assert_eq!(server["uring_ops_per_req"].as_f64(), Some(0.0), "{step}");
    }
    let common = json["common_rates"][0]["rate"]
        .as_f64()
        .expect("a common rate");
    assert!(common > 0.0 && common <= 500.0, "{json}");

    // poll hands every registered descriptor to each wait; epoll only the ready ones.
    let (poll0, poll200) = (examined(&json, "poll", 0), examined(&json, "poll", 200));
    let (epoll0, epoll200) = (examined(&json, "epoll", 0), examined(&json, "epoll", 200));
    assert!(
        poll200 > 3.0 * poll0,
        "poll examined/req: {poll0:.1} with 0 idle, {poll200:.1} with 200"
    );
    assert!(
        epoll200 < 1.5 * epoll0,
        "epoll examined/req: {epoll0:.1} with 0 idle, {epoll200:.1} with 200"
    );
    // Memory per connection is measured with the idle connections open.
    let with_idle = json["idle"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subject"] == "epoll" && s["idle"] == 200)
        .unwrap();
    assert!(
        with_idle["rss_per_conn_kib"].as_f64().is_some(),
        "{with_idle}"
    );

    let md = std::fs::read_to_string(dir.path().join("results.md")).expect("results.md");
    assert!(
        md.contains("Linux") && md.contains("Command") && md.contains("Pinning"),
        "{md}"
    );
    // The idle sweep's chart comes first.
    let first_chart = md.find("![").expect("a chart");
    assert!(
        md[first_chart..].starts_with("![Server CPU per request"),
        "{md}"
    );
    for chart in [
        "idle-cpu",
        "idle-examined",
        "idle-p99",
        "memory",
        "p99-load-20",
    ] {
        let path = dir.path().join(format!("{chart}.svg"));
        let svg =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(svg.trim_start().starts_with("<svg"), "{}", path.display());
        assert!(svg.trim_end().ends_with("</svg>"), "{}", path.display());
        assert!(
            md.contains(&format!("({chart}.svg)")),
            "{chart} not in results.md"
        );
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
fn overlapping_cpus_are_bad_input() {
    let out = loadgen()
        .args(["compare", "--backends", "epoll", "--server-cpus", "0"])
        .args(["--loadgen-cpus", "0", "--server"])
        .arg(common::c10k())
        .output()
        .expect("loadgen runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("disjoint"), "{}", stderr(&out));
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

/// Ctrl-C during a comparison ends it, not just the probe that was running: a full run takes
/// half an hour, and a signal that only skipped to the next step would leave the user to kill
/// it (and the servers it started) by hand. The results so far are still written, marked
/// partial, and the exit status is 130.
#[test]
fn a_signal_stops_the_whole_comparison_with_partial_results() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = loadgen()
        .args([
            "compare",
            "--backends",
            "epoll,poll,select",
            "--conns",
            "20",
        ])
        .args(["--start-rate", "250", "--max-rate", "1000"])
        // Long probes: the signal lands in the first subject's search.
        .args(["--duration", "20s", "--warmup", "0.1s", "--idle", "0"])
        .arg("--out")
        .arg(dir.path())
        .arg("--server")
        .arg(common::c10k())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("loadgen runs");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    // The line printed once the run is set up, before the first server starts.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let ready = line.contains("CPU wake-up latency");
        seen.push(line);
        if ready {
            break;
        }
    }
    assert!(
        seen.last()
            .is_some_and(|l| l.contains("CPU wake-up latency")),
        "{seen:?}"
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    seen.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}: {seen:#?}");
    assert!(
        seen.iter().any(|l| l.contains("results above are partial")),
        "{seen:#?}"
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("results.json")).expect("results.json"),
    )
    .expect("results.json is JSON");
    assert_eq!(json["interrupted"], true, "{json}");
    let wake = json["settings"]["cpu_wake_latency"].as_str().unwrap();
    assert!(
        wake.starts_with("held at 0") || wake.starts_with("not held"),
        "{wake}"
    );
    // The first subject's search was cut short; the others never ran.
    let steps = json["capacity"].as_array().unwrap();
    assert!(steps.len() <= 1, "{steps:?}");
    if let Some(first) = steps.first() {
        assert_eq!(first["subject"], "epoll", "{first}");
        assert_eq!(first["status"], "failed", "{first}");
        assert_eq!(first["reason"], "interrupted by a signal", "{first}");
    }
    assert!(json["idle"].as_array().unwrap().is_empty(), "{json}");
}

/// `--sched-fifo N` puts loadgen and every process it starts under SCHED_FIFO, and the results
/// say so; where the policy is not allowed, the run stops at once with a one-line reason.
#[test]
fn sched_fifo_is_applied_and_recorded_or_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = loadgen()
        .args(["compare", "--backends", "epoll", "--conns", "10"])
        .args(["--start-rate", "200", "--max-rate", "400"])
        .args(["--duration", "0.2s", "--warmup", "0.1s", "--idle", "0"])
        .args(["--sched-fifo", "1"])
        .arg("--out")
        .arg(dir.path())
        .arg("--server")
        .arg(common::c10k())
        .output()
        .expect("loadgen runs");
    let err = stderr(&out);
    if out.status.code() == Some(2) {
        // No CAP_SYS_NICE here: refused before anything ran.
        assert!(err.contains("cannot use SCHED_FIFO"), "{err}");
        return;
    }
    assert!(out.status.success(), "{err}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("results.json")).expect("results.json"),
    )
    .unwrap();
    assert_eq!(json["settings"]["scheduling"], "SCHED_FIFO 1", "{json}");
    let md = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
    assert!(md.contains("**Scheduling**"), "{md}");
    assert!(md.contains("SCHED_FIFO 1"), "{md}");
}
