//! Blocking work (`GET /sleep/MS`, `GET /work/N`, issue 12), run on every backend by the `suite!`
//! in `tests/suite.rs`: a single-threaded loop that runs it itself stalls every other connection;
//! one that hands it to helpers (`--offload N`), or a model with a thread per request (threads,
//! the pool's workers) or async offload (coro), does not. The tests assert on the order in which
//! the client sees responses, and on counters; never on how long anything took.
//!
//! How order is seen without timing: connection A's blocking request is sent and the test waits
//! until the server has read it (its socket's receive queue is empty, /proc/net/tcp); then B's
//! `/plaintext` is sent and its response read. Whether A's response is already waiting in A's
//! socket at that moment says which was answered first. Where B must come first, the thread that
//! runs A's sleep is found (blocked in nanosleep, /proc) and frozen (ptrace) before B asks, so A
//! cannot be answered first however slow the machine: B is answered only if something other
//! than that thread serves it.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::Instant;

use nix::unistd::Pid;

use crate::common::*;

/// A `/sleep` long enough that the test finds and freezes the thread running it before it ends;
/// the tests that use it never wait for its end (the server is killed).
const LONG_SLEEP_MS: u32 = 10_000;

fn start_with(backend: &[&str], extra: &[&str]) -> Server {
    start_speaking(backend, "http", extra)
}

/// A single event loop that runs blocking work on its own thread unless told to offload it.
fn runs_blocking_work_on_its_loop(backend: &[&str]) -> bool {
    !matches!(backend[1], "threads" | "pool" | "coro")
}

/// With `--workers N`, A and B may land on different processes (SO_REUSEPORT picks), so which
/// is answered first says nothing.
fn spread_over_workers(backend: &[&str]) -> bool {
    backend.contains(&"--workers")
}

/// The flags that take blocking work off the loop: `--offload 2` where it runs on the loop;
/// nothing for the models that never run it there (threads and pool refuse the flag).
fn offload(backend: &[&str]) -> &'static [&'static str] {
    if runs_blocking_work_on_its_loop(backend) || backend[1] == "coro" {
        &["--blocking-routes", "--offload", "2"]
    } else {
        &["--blocking-routes"]
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

/// Whether a response is already waiting to be read on `stream` (nothing of it read yet).
fn has_data(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let waiting = match stream.peek(&mut [0u8; 1]) {
        Ok(n) => n > 0,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("peek: {e}"),
    };
    stream.set_nonblocking(false).unwrap();
    waiting
}

/// Sends A's blocking request, waits until the server has read it, then has B's `/plaintext`
/// answered. Returns A's connection and whether A's response was already there when B's came.
fn a_blocks_then_b_asks(server: &Server, a_path: &str) -> (HttpReader<TcpStream>, bool) {
    let mut a = HttpReader::new(server.connect());
    a.inner_mut().write_all(&get(a_path)).unwrap();
    wait_until_server_has_read(server.addr.port());
    let mut b = HttpReader::new(server.connect());
    b.inner_mut().write_all(&get("/plaintext")).unwrap();
    let answer = b.read_response(false).unwrap();
    assert_eq!(
        (answer.status, &answer.body[..]),
        (200, &b"Hello, World!"[..])
    );
    let a_first = has_data(a.inner_mut());
    (a, a_first)
}

/// The server's thread (in any of its processes) blocked in a sleep: A's `/sleep`, once it has
/// begun. Polls /proc, never sleeps; panics after `IO_TIMEOUT`.
fn sleeping_thread(server: &Server) -> Pid {
    let sleeps = [libc::SYS_nanosleep, libc::SYS_clock_nanosleep];
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let pid = server.pid();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let pids =
            std::iter::once(pid).chain(children.split_whitespace().filter_map(|c| c.parse().ok()));
        for p in pids {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
                continue;
            };
            for tid in tasks.filter_map(|t| t.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
                let syscall = std::fs::read_to_string(format!("/proc/{p}/task/{tid}/syscall"))
                    .unwrap_or_default();
                let number = syscall
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<i64>().ok());
                if number.is_some_and(|n| sleeps.contains(&n)) {
                    return Pid::from_raw(tid);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no server thread sleeps: A's /sleep did not begin"
        );
        std::thread::yield_now();
    }
}

/// A's long `/sleep` is sent; once a server thread sleeps in it, that thread is frozen and B's
/// `/plaintext` must be answered anyway. Returns A's connection (and the frozen thread, released
/// on drop).
fn b_is_answered_while_a_sleeps(server: &Server) -> (TcpStream, FrozenThread) {
    let mut a = server.connect();
    a.write_all(&get(&format!("/sleep/{LONG_SLEEP_MS}")))
        .unwrap();
    let sleeper = FrozenThread::freeze(sleeping_thread(server));
    let mut b = HttpReader::new(server.connect());
    b.inner_mut().write_all(&get("/plaintext")).unwrap();
    let answer = b.read_response(false).unwrap_or_else(|e| {
        panic!("B was not answered while the thread running A's /sleep was stopped: {e}")
    });
    assert_eq!(
        (answer.status, &answer.body[..]),
        (200, &b"Hello, World!"[..])
    );
    assert!(!has_data(&a), "A answered while its /sleep could not end");
    (a, sleeper)
}

/// (a) and (b) without `--offload`: a single-threaded loop answers B only after A's sleep (the
/// stall is the lesson); threads, the pool and coro answer B while A's sleep goes on.
pub fn blocking_work_stalls_only_a_loop_that_runs_it_itself(backend: &[&str]) {
    let server = start_with(backend, &["--blocking-routes"]);
    if runs_blocking_work_on_its_loop(backend) {
        let (mut a, a_first) = a_blocks_then_b_asks(&server, "/sleep/300");
        if !spread_over_workers(backend) {
            assert!(
                a_first,
                "B was answered before A's /sleep ended: the loop did not stall"
            );
        }
        let answer = a.read_response(false).unwrap();
        assert_eq!(
            (answer.status, &answer.body[..]),
            (200, &b"slept 300 ms\n"[..])
        );
        let s = stats(&server);
        assert_eq!(counter(&s, "blocking_inline"), 1, "{s}");
        assert_eq!(counter(&s, "blocking_offloaded"), 0, "{s}");
    } else {
        b_is_answered_while_a_sleeps(&server);
    }
}

/// (b) with `--offload 2` on the single-threaded loops (and natively elsewhere): B is answered
/// while A's sleep is still running, and the hand-off is counted at once.
pub fn offloaded_blocking_work_does_not_stall_other_connections(backend: &[&str]) {
    let server = start_with(backend, offload(backend));
    let _a_and_its_sleeper = b_is_answered_while_a_sleeps(&server);
    if runs_blocking_work_on_its_loop(backend) || backend[1] == "coro" {
        let s = stats(&server);
        assert_eq!(counter(&s, "blocking_offloaded"), 1, "{s}");
        assert_eq!(counter(&s, "blocking_inline"), 0, "{s}");
        assert_eq!(counter(&s, "offload_queue_high_water"), 1, "{s}");
    }
}

/// (c) and (d): the routes are 404 without `--blocking-routes`; with it, past their limits or
/// malformed they are 400, and answered they are counted where they ran.
pub fn blocking_routes_are_off_by_default_and_bounded(backend: &[&str]) {
    let server = start_with(backend, &[]);
    for path in ["/sleep/1", "/work/1"] {
        assert_eq!(http_once(&server, &get(path)).status, 404, "{path}");
    }
    let s = stats(&server);
    assert_eq!(
        counter(&s, "blocking_inline") + counter(&s, "blocking_offloaded"),
        0
    );
    drop(server);

    let server = start_with(backend, &["--blocking-routes"]);
    for path in ["/sleep/10001", "/sleep/x", "/work/10000001", "/work/"] {
        let answer = http_once(&server, &get(path));
        assert_eq!(answer.status, 400, "{path}");
        assert_eq!(answer.header("connection"), Some("close"), "{path}");
    }
    let mut c = HttpReader::new(server.connect());
    c.inner_mut()
        .write_all(&[get("/work/1000"), get("/sleep/1")].concat())
        .unwrap();
    let hash = c.read_response(false).unwrap();
    assert_eq!(hash.status, 200);
    assert_eq!(hash.body.len(), 17, "16 hex digits and LF");
    assert_eq!(c.read_response(false).unwrap().body, b"slept 1 ms\n");
    let s = stats(&server);
    let (inline, offloaded) = if backend[1] == "coro" { (0, 2) } else { (2, 0) };
    assert_eq!(counter(&s, "blocking_inline"), inline, "{s}");
    assert_eq!(counter(&s, "blocking_offloaded"), offloaded, "{s}");

    // threads and pool run blocking work on their own threads: --offload is refused there.
    if matches!(backend[1], "threads" | "pool") {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_c10k"))
            .args(["serve", "--listen", "127.0.0.1:0", "--offload", "2"])
            .args(backend)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("--offload"), "{stderr}");
    }
}

/// Shutdown: a blocking request in flight (with a helper, or on the connection's thread) when
/// SIGTERM comes is finished and answered within the grace period, and the server exits 0.
pub fn sigterm_answers_a_blocking_request_in_flight(backend: &[&str]) {
    let server = start_with(backend, offload(backend));
    let mut a = HttpReader::new(server.connect());
    a.inner_mut().write_all(&get("/sleep/500")).unwrap();
    wait_until_server_has_read(server.addr.port());
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let answer = a.read_response(false).unwrap();
    assert_eq!(
        (answer.status, &answer.body[..]),
        (200, &b"slept 500 ms\n"[..])
    );
    assert!(server.stop_after_signal().success());
}
