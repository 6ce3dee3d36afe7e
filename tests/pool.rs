//! The pool backend's queue: connections beyond the busy threads wait (FIFO) and are served as
//! soon as a thread frees up; past the queue (4 × threads) they get 503 at once; at the
//! descriptor limit accepting pauses instead of spinning; SIGTERM answers the queued ones.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Connections that may wait for a thread, per thread (`driver::pool::QUEUE_PER_THREAD`).
const QUEUE_PER_THREAD: usize = 4;

fn get(stream: &TcpStream) -> Response {
    let mut stream = stream;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    HttpReader::new(stream).read_response(false).unwrap()
}

/// Asserts that nothing arrives on `stream` within `wait`.
fn assert_silent(stream: &TcpStream, wait: Duration, what: &str) {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    match (&*stream).read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{what}: expected to wait, got {other:?}"),
    }
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
}

#[test]
fn busy_threads_queue_the_next_connection_and_refuse_past_the_queue() {
    let threads = 2;
    let server = Server::start(&[
        "--backend",
        "pool",
        "--pool-threads",
        "2",
        "--proto",
        "http",
    ]);
    // Two idle keep-alive clients occupy both threads.
    let a = server.connect();
    let b = server.connect();
    assert_eq!(get(&a).status, 200);
    assert_eq!(get(&b).status, 200);
    // A third waits in the queue: accepted, but no thread reads its request.
    let c = server.connect();
    (&c).write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_silent(&c, Duration::from_millis(300), "queued connection");
    // Fill the rest of the queue; the next connection is refused at once with a 503.
    let queued: Vec<TcpStream> = (1..QUEUE_PER_THREAD * threads)
        .map(|_| server.connect())
        .collect();
    let refused = server.connect();
    let r = get(&refused);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    // One of the first two leaves: the queued third is served at once, in order.
    let left_at = Instant::now();
    drop(a);
    let r = HttpReader::new(&c).read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        left_at.elapsed() < Duration::from_secs(2),
        "served {:?} after a thread freed up",
        left_at.elapsed()
    );
    // The refusal is counted.
    drop((b, c, queued));
    let s = stats(&server);
    assert!(s["connections_refused"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["backend"], "pool");
}

/// With more threads + queue than descriptors, the pool meets EMFILE: it pauses accepting (no
/// spin), keeps serving, and takes the waiting clients once descriptors free up.
#[test]
fn fd_exhaustion_pauses_accepting_without_spinning() {
    let server = Server::start_with_fd_limit(
        48,
        &[
            "--backend",
            "pool",
            "--pool-threads",
            "16",
            "--proto",
            "http",
            "--max-conns",
            "10000",
        ],
    );
    let keeper = server.connect();
    let ask = |path: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        (&keeper).write_all(request.as_bytes()).unwrap();
        HttpReader::new(&keeper).read_response(false).unwrap()
    };
    assert_eq!(ask("/").status, 200);
    let mut crowd: Vec<TcpStream> = (0..100).map(|_| server.connect()).collect();
    let accepts = |r: Response| -> u64 {
        let s: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        s["syscalls"]["accepts"].as_u64().unwrap()
    };
    let first = accepts(ask("/stats"));
    std::thread::sleep(Duration::from_secs(1));
    let second = accepts(ask("/stats"));
    assert!(
        second - first < 500,
        "{} accept calls in one second at the fd limit: spinning",
        second - first
    );
    assert_eq!(ask("/plaintext").body, b"Hello, World!");
    // The first 60 leave; each of the others is served in turn (and leaves, freeing its thread).
    let staying = crowd.split_off(60);
    drop(crowd);
    for (i, s) in staying.into_iter().enumerate() {
        let r = std::panic::catch_unwind(|| get(&s).status).ok();
        assert_eq!(r, Some(200), "waiting client {i} was not served");
    }
}

/// SIGTERM (RFC 9112 §9.6): the queued connection's request, already sent, is answered — by the
/// thread the idle connection frees at the end of the drain window — with `Connection: close`,
/// rather than refused or dropped; the idle one is closed cleanly; the server exits 0.
#[test]
fn sigterm_answers_queued_connections() {
    let server = Server::start(&[
        "--backend",
        "pool",
        "--pool-threads",
        "1",
        "--proto",
        "http",
    ]);
    let busy = server.connect();
    assert_eq!(get(&busy).status, 200);
    let queued = server.connect();
    (&queued)
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_silent(&queued, Duration::from_millis(200), "queued connection");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let mut queued = HttpReader::new(&queued);
    let r = queued.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        queued.at_clean_eof().unwrap(),
        "queued connection left open"
    );
    let mut reader = HttpReader::new(&busy);
    assert!(reader.at_clean_eof().unwrap(), "idle connection left open");
    let status = server.stop_after_signal();
    assert!(status.success(), "exit status {status:?}");
}
