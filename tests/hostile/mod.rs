//! Hostile clients, run on every backend by the `suite!` in `tests/suite.rs`: each case is one way
//! for a single client to hurt the others (issue 11). They assert on what the client sees and on
//! the server's counters, never on wall time or CPU percentages.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::common::*;

/// Everything the server did that a spinning loop would inflate: syscalls, and io_uring
/// operations and completions (which are not syscalls).
fn work_done(stats: &serde_json::Value) -> u64 {
    let s = &stats["syscalls"];
    counter(stats, "syscalls_total")
        + s["uring_ops"].as_u64().unwrap_or(0)
        + s["completions"].as_u64().unwrap_or(0)
}

/// Reads until the server closes. True for a clean EOF; a reset also counts as closed (some
/// backends close with unread bytes), false only if the connection is still open at the timeout.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Polls `/stats` (bounded) until `done` holds; returns the last document.
fn wait_for_stats(
    server: &Server,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let s = stats(server);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server process and, with `--workers`, its workers: everything that must be frozen for a
/// burst to arrive while the server is busy.
fn server_pids(server: &Server) -> Vec<nix::unistd::Pid> {
    let pid = server.pid();
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid)
        .chain(children.split_whitespace().filter_map(|c| c.parse().ok()))
        .map(nix::unistd::Pid::from_raw)
        .collect()
}

fn signal_all(pids: &[nix::unistd::Pid], signal: Signal) {
    for &pid in pids {
        nix::sys::signal::kill(pid, signal).expect("signal a server process");
    }
}

/// Item 1: a client that connects and sends nothing is closed at its deadline on every backend,
/// HTTP (header timeout) and echo (idle timeout) alike, and counted as a timeout.
pub fn silent_connection_is_closed_at_its_deadline(backend: &[&str]) {
    for proto in ["http", "echo"] {
        let server = start_speaking(
            backend,
            proto,
            &["--header-timeout", "0.5", "--idle-timeout", "0.5"],
        );
        let mut silent: Vec<TcpStream> = (0..3).map(|_| server.connect()).collect();
        for s in &mut silent {
            assert!(
                closed_by_server(s, IO_TIMEOUT),
                "{proto}: a silent connection was never closed"
            );
        }
        if proto == "http" {
            // Only the /stats connection itself is left, and each silent one was a timeout.
            let s = wait_for_stats(&server, "silent connections still held", |s| {
                counter(s, "connections_current") == 1
            });
            let timeouts = counter(&s, "timeouts_header") + counter(&s, "timeouts_idle");
            assert!(
                timeouts >= 3,
                "3 silent connections, {timeouts} timeouts: {s}"
            );
        }
    }
}

/// Item 1, slow drip: a client that sends one byte of its request head every half header timeout
/// is still cut at the header deadline (the deadline runs from the head's first byte, not from
/// its last), gets a 408 and is closed.
pub fn slow_drip_header_is_cut_at_its_deadline(backend: &[&str]) {
    let server = start_speaking(backend, "http", &["--header-timeout", "0.4"]);
    let mut stream = server.connect();
    let head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut sent = 0;
    for &byte in head.iter() {
        if stream.write_all(&[byte]).is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(200));
        if sent >= 3 {
            // Is the answer there already?
            stream.set_nonblocking(true).unwrap();
            let mut peek = [0u8; 1];
            let answered = stream.peek(&mut peek).is_ok();
            stream.set_nonblocking(false).unwrap();
            if answered {
                break;
            }
        }
    }
    assert!(
        sent < head.len(),
        "the whole head was dripped in, one byte per half timeout, without a 408"
    );
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    assert!(
        reply.starts_with(b"HTTP/1.1 408"),
        "after {sent} dripped bytes: {:?}",
        String::from_utf8_lossy(&reply)
    );
    let s = stats(&server);
    assert_eq!(counter(&s, "timeouts_header"), 1, "{s}");
}

/// Item 1, slow drip on the write side: a client that reads one byte every half write timeout of
/// a large response does not keep the connection: the kernel's buffers stay full, our output makes
/// no progress, and the write timeout cuts it. (The client still has megabytes buffered to read,
/// so it learns of the close only when it reads them: asked through `/stats` meanwhile.)
pub fn slow_reader_is_cut_by_the_write_timeout(backend: &[&str]) {
    let server = start_speaking(backend, "http", &["--write-timeout", "0.4"]);
    let mut stream = server.connect();
    stream
        .write_all(b"GET /bytes/1073741824 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let dripping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let drip = {
        let dripping = dripping.clone();
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            while dripping.load(std::sync::atomic::Ordering::Relaxed) {
                if !matches!(stream.read(&mut byte), Ok(1)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    // First the response is under way (with --workers, another worker may answer /stats before
    // this connection is even accepted), then the connection is gone.
    wait_for_stats(&server, "the response never started", |s| {
        counter(s, "bytes_out") > 1 << 20
    });
    let s = wait_for_stats(&server, "a slow reader is still held", |s| {
        counter(s, "connections_current") == 1
    });
    dripping.store(false, std::sync::atomic::Ordering::Relaxed);
    drip.join().unwrap();
    assert_eq!(counter(&s, "timeouts_write"), 1, "{s}");
    // What was sent before the cut is there to read, then the end: not 1 GiB.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.len() < 1 << 30);
}

/// Item 2: a client that asks for 1 GiB, half-closes and reads nothing makes the server do almost
/// nothing while it waits for the write timeout: no loop woken again and again by the half-close.
pub fn half_closed_client_that_reads_nothing_does_not_spin(backend: &[&str]) {
    if backend[1] == "busy-poll" {
        eprintln!("busy-poll: spinning is its model (it polls every connection without waiting)");
        return;
    }
    let server = start_speaking(backend, "http", &[]);
    let stream = server.connect();
    (&stream)
        .write_all(b"GET /bytes/1073741824 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    // The response fills both sockets' buffers; from then on the server can only wait.
    let filled = wait_for_stats(&server, "response never started", |s| {
        counter(s, "bytes_out") > 1 << 20
    });
    // The scenario is 2 s of a client reading nothing; the baseline is what the server does
    // idle in 2 s (sigio checks its signalfd 20 times a second), measured right after.
    let before = stats(&server);
    std::thread::sleep(Duration::from_secs(2));
    let after = stats(&server);
    let hostile = work_done(&after) - work_done(&before);
    let spurious = counter(&after, "spurious_wakeups") - counter(&before, "spurious_wakeups");
    drop(stream);
    wait_for_stats(
        &server,
        "the half-closed client's connection outlived it",
        |s| counter(s, "connections_current") == 1,
    );
    let idle_before = stats(&server);
    std::thread::sleep(Duration::from_secs(2));
    let idle = work_done(&stats(&server)) - work_done(&idle_before);
    // A /stats request costs about ten syscalls; a spinning loop makes 100,000s.
    assert!(
        hostile < idle + 50,
        "{hostile} syscalls in 2 s with one half-closed client reading nothing, {idle} idle \
         ({filled} / {after})"
    );
    assert!(spurious < 10, "{spurious} wake-ups without progress");
}

/// Item 3: connections that arrive in one burst while the server is busy are all accepted and
/// served, though they are more than one turn's accept budget and bring a single readiness edge.
pub fn burst_of_connections_is_all_served(backend: &[&str]) {
    let server = start_speaking(backend, "echo", &[]);
    let pids = server_pids(&server);
    // Frozen, the server cannot accept: 600 connections complete in the kernel's backlog and
    // the listener becomes readable once, with all of them queued.
    signal_all(&pids, Signal::SIGSTOP);
    let streams: Vec<TcpStream> = (0..600).map(|_| server.connect()).collect();
    for (i, s) in streams.iter().enumerate() {
        (&*s).write_all(&(i as u32).to_be_bytes()).unwrap();
    }
    signal_all(&pids, Signal::SIGCONT);
    for (i, s) in streams.iter().enumerate() {
        let mut back = [0u8; 4];
        (&*s)
            .read_exact(&mut back)
            .unwrap_or_else(|e| panic!("connection {i} of the burst never served: {e}"));
        assert_eq!(u32::from_be_bytes(back), i as u32);
    }
}

/// Item 9: SIGTERM while requests have arrived and are not yet answered. Each is answered, then
/// the client reads a clean EOF: no reset and no lost request. Idle keep-alive connections may
/// bring one more request in the drain window: it is answered with `Connection: close`. The
/// window is long here, so that a late request is late only if the server ends the window early,
/// not because a loaded machine kept this test off a CPU.
pub fn sigterm_answers_requests_already_received(backend: &[&str]) {
    let server = start_speaking(backend, "http", &["--keepalive-drain", "10"]);
    let pids = server_pids(&server);
    let keep_alive = |n: usize| -> Vec<HttpReader<TcpStream>> {
        (0..n)
            .map(|_| {
                // Served once, so that the server holds it as an idle keep-alive connection.
                let mut r = HttpReader::new(server.connect());
                r.inner_mut()
                    .write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                assert_eq!(r.read_response(false).unwrap().status, 200);
                r
            })
            .collect()
    };
    let mut buffered = keep_alive(20);
    let mut late = keep_alive(5);
    // Frozen, the server receives the next requests into its sockets' buffers without reading
    // them; the signal is then pending alongside them.
    signal_all(&pids, Signal::SIGSTOP);
    for (i, r) in buffered.iter_mut().enumerate() {
        r.inner_mut()
            .write_all(format!("GET /bytes/{} HTTP/1.1\r\nHost: t\r\n\r\n", 1000 + i).as_bytes())
            .unwrap();
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), Signal::SIGTERM).unwrap();
    signal_all(&pids, Signal::SIGCONT);
    // Once the server no longer accepts, it has begun its shutdown: a request on a keep-alive
    // connection now (within the drain window) is answered, and is the last.
    let deadline = Instant::now() + IO_TIMEOUT;
    while TcpStream::connect(server.addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
    }
    for r in &mut late {
        r.inner_mut()
            .write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
    }
    for (i, r) in buffered.iter_mut().enumerate() {
        let response = r
            .read_response(false)
            .unwrap_or_else(|e| panic!("request {i}, received before SIGTERM, was lost: {e}"));
        assert_eq!((response.status, response.body.len()), (200, 1000 + i));
        assert!(
            r.at_clean_eof().expect("a clean EOF, not a reset"),
            "connection {i} not closed after its last response"
        );
    }
    for (i, r) in late.iter_mut().enumerate() {
        let response = r
            .read_response(false)
            .unwrap_or_else(|e| panic!("late request {i}, in the drain window, was lost: {e}"));
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("connection"),
            Some("close"),
            "a response during shutdown must say it is the last"
        );
        assert!(r.at_clean_eof().expect("a clean EOF, not a reset"));
    }
    let status = server.stop_after_signal();
    assert!(status.success(), "exit status {status:?}");
}

/// Item 9, idle: a keep-alive connection that brings nothing more is shut down cleanly once the
/// drain window is over, and the server exits well within its grace period.
pub fn sigterm_shuts_idle_keep_alive_connections_cleanly(backend: &[&str]) {
    let server = start_speaking(backend, "http", &[]);
    let mut idle = HttpReader::new(server.connect());
    idle.inner_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(idle.read_response(false).unwrap().status, 200);
    let never_used = server.connect();
    server.signal(Signal::SIGTERM);
    assert!(idle.at_clean_eof().expect("idle: a clean EOF, not a reset"));
    let mut never_used = never_used;
    let mut buf = [0u8; 1];
    assert_eq!(
        never_used.read(&mut buf).expect("a clean EOF, not a reset"),
        0
    );
    let status = server.stop_after_signal();
    assert!(status.success(), "exit status {status:?}");
}
