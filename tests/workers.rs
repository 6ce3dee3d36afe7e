//! Worker processes: a worker killed with SIGKILL is respawned by the master, and clients of the
//! other workers do not notice; a slot whose workers keep dying backs off without taking the
//! master (or the healthy workers) down; signals during a respawn never reach the master's
//! default action; SIGTERM stops every worker before the master exits 0; and nothing is left in
//! /dev/shm, even when the master is killed.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
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

/// The stats file that masters before the memfd board left in /dev/shm.
fn shm_board(master: i32) -> PathBuf {
    PathBuf::from(format!("/dev/shm/c10k-stats-{master}"))
}

/// Whether `pid` has exited (a zombie has exited too: it only waits for its parent).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Polls `condition` until it holds, failing with `what` after `timeout`: a bounded wait on a
/// condition, not a sleep standing in for one.
fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_master_alive(server: &mut Server) {
    if let Ok(Some(status)) = server.child.try_wait() {
        panic!("the master exited: {status:?}");
    }
}

/// The master's log (its stderr, and its workers'), captured in a file.
struct Log(PathBuf);

impl Log {
    fn text(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Like `Server::start`, with stderr captured at RUST_LOG=warn.
fn start_logged(name: &str, args: &[&str]) -> (Server, Log) {
    let log = Log(std::env::temp_dir().join(format!(
        "c10k-workers-test-{}-{name}.log",
        std::process::id()
    )));
    let mut child = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log.0).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = tx.send(reader.read_line(&mut line).map(|_| line));
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = match rx.recv_timeout(READY_TIMEOUT) {
        Ok(Ok(line)) if !line.is_empty() => line.trim_end().to_string(),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no ready line: {other:?}; log: {}", log.text());
        }
    };
    let addr = parse_ready_line(&line).unwrap();
    let server = Server {
        child,
        addr,
        ready_line: line,
    };
    (server, log)
}

/// Item 5b: one slot whose workers are killed as soon as they appear, six times in a row. The
/// master backs off on that slot (and says so), stays up, and the other worker serves every
/// request throughout, on its open connection and on new ones.
#[test]
fn a_slot_that_keeps_dying_backs_off_while_the_other_worker_serves() {
    let (mut server, log) = start_logged("backoff", &["--backend", "epoll", "--workers", "2"]);
    let master = server.pid();
    let first = children(master);
    assert_eq!(first.len(), 2, "{first:?}");
    let mut client = HttpReader::new(server.connect());
    let survivor = serving_pid(&mut client);
    let mut victim = *first.iter().find(|&&p| p != survivor).unwrap();
    let mut known: HashSet<i32> = first.into_iter().collect();
    let mut served = 0;
    for round in 0..6 {
        kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
        // Reaped: its listener is closed, so new connections go to live workers only.
        wait_until(Duration::from_secs(20), "the victim reaped", || {
            !children(master).contains(&victim)
        });
        if round == 5 {
            // The sixth quick death in a row waits 3.2 s: meanwhile /stats counts one worker
            // (the master cleared the dead one's slot) and the log says why.
            wait_until(Duration::from_secs(3), "/stats counts one worker", || {
                let s: serde_json::Value =
                    serde_json::from_slice(&get(&mut client, "/stats").body).unwrap();
                s["workers"] == 1
            });
            wait_until(Duration::from_secs(3), "the log says 3.2s", || {
                log.text().contains("backing off, next start in 3.2s")
            });
        }
        // The replacement appears after the back-off; until then, and after, the survivor
        // answers on its connection and new connections are served.
        let replacement = loop {
            assert_master_alive(&mut server);
            assert_eq!(
                get(&mut client, "/plaintext").body,
                b"Hello, World!",
                "round {round}"
            );
            assert_eq!(
                http_once(&server, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").status,
                200
            );
            served += 2;
            let now = children(master);
            if let Some(&new) = now.iter().find(|p| !known.contains(p)) {
                break new;
            }
        };
        known.insert(replacement);
        victim = replacement;
    }
    assert!(served >= 12);
    assert_eq!(serving_pid(&mut client), survivor);
    let text = log.text();
    assert!(
        text.matches("backing off").count() >= 6,
        "every quick death is logged with its back-off: {text}"
    );
    // The last replacement is left alone: it serves, and the master stops cleanly.
    wait_until(Duration::from_secs(20), "two workers report", || {
        stats(&server)["workers"] == 2
    });
    assert_master_alive(&mut server);
    let status = server.stop();
    assert!(status.success(), "master exit status {status:?}");
}

/// Item 5a: SIGHUP sent to the master nonstop while it respawns workers. The master reads its
/// signals from a signalfd and never unblocks them, so SIGHUP is only logged; a master that
/// unblocked them around spawning would meet SIGHUP's default action there and die (as it would
/// with SIGTERM, leaving its workers behind, or lose a SIGCHLD).
#[test]
fn signals_that_arrive_while_respawning_never_kill_the_master() {
    let mut server = Server::start(&["--backend", "epoll", "--workers", "2"]);
    let master = server.pid();
    let mut known: HashSet<i32> = children(master).into_iter().collect();
    assert_eq!(known.len(), 2);
    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if kill(Pid::from_raw(master), Signal::SIGHUP).is_err() {
                    break;
                }
                sent += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            sent
        })
    };
    for round in 0..4 {
        let victim = *children(master).first().expect("a worker");
        kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
        // Every death is noticed (no SIGCHLD lost) and the slot refilled.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert_master_alive(&mut server);
            let now = children(master);
            if now.len() == 2 && now.iter().all(|p| *p != victim) {
                known.extend(now);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no replacement: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = storm.join().unwrap();
    assert!(sent > 0);
    assert_master_alive(&mut server);
    assert_eq!(
        http_once(&server, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").status,
        200
    );
    let status = server.stop();
    assert!(status.success(), "master exit status {status:?}");
}

/// Item 10: the stats board is a memfd, in no file system, shared by the workers; a master killed
/// with SIGKILL leaves nothing in /dev/shm, and its workers follow it (PDEATHSIG).
#[test]
fn a_killed_master_leaves_no_shared_memory_and_no_workers() {
    let server = Server::start(&["--backend", "epoll", "--workers", "2"]);
    let master = server.pid();
    let workers = children(master);
    assert_eq!(workers.len(), 2);
    assert!(!shm_board(master).exists(), "a named board in /dev/shm");
    for pid in &workers {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        assert!(
            maps.contains("/memfd:c10k-stats"),
            "worker {pid} does not map the board"
        );
    }
    // The board works: totals over both workers.
    assert_eq!(stats(&server)["workers"], 2);
    server.signal(Signal::SIGKILL);
    let status = server.stop_after_signal();
    assert!(!status.success());
    wait_until(Duration::from_secs(20), "workers exit", || {
        workers.iter().all(|&p| gone(p))
    });
    assert!(!shm_board(master).exists(), "the board outlived the master");
}

/// Item 9 (--workers): SIGTERM to the master is forwarded to every worker, whose drain finishes
/// the response in flight; the master exits 0 only after every worker has exited.
#[test]
fn sigterm_drains_every_worker_then_the_master_exits_zero() {
    let server = Server::start(&["--backend", "epoll", "--workers", "3"]);
    let master = server.pid();
    let workers = children(master);
    assert_eq!(workers.len(), 3);
    assert!(!shm_board(master).exists(), "a named board in /dev/shm");
    // A download in flight when the signal comes: more than the socket buffers hold.
    const LEN: usize = 16 << 20;
    let mut download = server.connect();
    write!(download, "GET /bytes/{LEN} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut received = vec![0u8; 4096];
    let mut got = download.read(&mut received).unwrap();
    assert!(got > 0);
    server.signal(Signal::SIGTERM);
    let mut chunk = vec![0u8; 1 << 16];
    let head_end = loop {
        if let Some(i) = find(&received[..got], b"\r\n\r\n") {
            break i + 4;
        }
        let n = download.read(&mut chunk).unwrap();
        assert!(n > 0, "EOF in the response head");
        received.truncate(got);
        received.extend_from_slice(&chunk[..n]);
        got = received.len();
    };
    let mut body = got - head_end;
    while body < LEN {
        let n = download.read(&mut chunk).unwrap();
        assert!(n > 0, "the download was cut at {body} of {LEN} bytes");
        body += n;
    }
    let status = server.stop_after_signal();
    assert!(status.success(), "master exit status {status:?}");
    // The master reaped each worker before it exited.
    for pid in &workers {
        assert!(gone(*pid), "worker {pid} outlived the master");
    }
    assert!(!shm_board(master).exists());
}

/// Item 9 (--workers): a worker that does not stop (here: SIGSTOP) holds the master only for
/// its shutdown grace plus a margin; then the master kills it and exits 0.
#[test]
fn a_worker_that_will_not_stop_is_killed_after_its_grace() {
    let server = Server::start(&[
        "--backend",
        "epoll",
        "--workers",
        "2",
        "--shutdown-grace",
        "1",
    ]);
    let master = server.pid();
    let workers = children(master);
    assert_eq!(workers.len(), 2);
    kill(Pid::from_raw(workers[0]), Signal::SIGSTOP).unwrap();
    // The harness waits at most 30 s for the exit.
    let status = server.stop();
    assert!(status.success(), "master exit status {status:?}");
    for pid in &workers {
        assert!(gone(*pid), "worker {pid} outlived the master");
    }
}
