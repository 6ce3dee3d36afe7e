//! Worker processes: a worker killed with SIGKILL is respawned by the master, and clients of the
//! other workers do not notice.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn get(reader: &mut HttpReader<std::net::TcpStream>, path: &str) -> Response {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    reader.inner_mut().write_all(request.as_bytes()).unwrap();
    reader.read_response(false).unwrap()
}

fn serving_pid(reader: &mut HttpReader<std::net::TcpStream>) -> i32 {
    let stats: serde_json::Value = serde_json::from_slice(&get(reader, "/stats").body).unwrap();
    stats["pid"].as_i64().unwrap() as i32
}

#[test]
fn killed_worker_is_respawned_and_other_clients_are_unaffected() {
    let server = Server::start(&["--backend", "epoll", "--workers", "2"]);
    assert!(
        server.ready_line.ends_with(" workers=2"),
        "{}",
        server.ready_line
    );
    let workers = children(server.pid());
    assert_eq!(
        workers.len(),
        2,
        "master should have 2 workers: {workers:?}"
    );

    let mut survivor_client = HttpReader::new(server.connect());
    let survivor = serving_pid(&mut survivor_client);
    assert!(workers.contains(&survivor));
    let victim = *workers.iter().find(|&&p| p != survivor).unwrap();
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();

    // The client of the other worker goes on as if nothing happened.
    for _ in 0..20 {
        assert_eq!(
            get(&mut survivor_client, "/plaintext").body,
            b"Hello, World!"
        );
    }
    assert_eq!(serving_pid(&mut survivor_client), survivor);

    // The master notices and starts a replacement (bounded wait on a condition, not a sleep).
    let deadline = Instant::now() + Duration::from_secs(20);
    let replacement = loop {
        let now = children(server.pid());
        if let Some(&new) = now.iter().find(|p| !workers.contains(p)) {
            if now.len() == 2 {
                break new;
            }
        }
        assert!(Instant::now() < deadline, "no replacement worker: {now:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // New connections are served, by either worker; the replacement gets some of them.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let mut client = HttpReader::new(server.connect());
        seen.insert(serving_pid(&mut client));
        if seen.contains(&replacement) && seen.contains(&survivor) {
            break;
        }
    }
    assert!(
        seen.contains(&replacement),
        "the replacement {replacement} served nothing: {seen:?}"
    );
    assert!(!seen.contains(&victim));

    let status = server.stop();
    assert!(status.success(), "master exit status {status:?}");
}

#[test]
fn stats_are_totals_over_workers() {
    let server = Server::start(&["--backend", "epoll", "--workers", "2"]);
    let before = stats(&server)["requests"].as_u64().unwrap();
    for _ in 0..40 {
        http_once(&server, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    let s = stats(&server);
    assert_eq!(s["scope"], "total");
    assert_eq!(s["workers"], 2);
    // 40 requests plus this /stats itself, whichever worker served them.
    assert_eq!(s["requests"].as_u64().unwrap(), before + 41, "{s}");
}
