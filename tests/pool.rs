//! The pool as half-sync/half-async: one loop holds every connection, `--pool-threads` workers
//! run the protocol. Hundreds of keep-alive clients on a few workers are all served; when the
//! workers are `QUEUE_PER_THREAD` × threads requests behind, the next request (not the next
//! connection) is refused with a 503 and `Connection: close`; echo, which has no refusal, waits in
//! line and stops reading instead. The requests already queued are answered once the workers
//! catch up. Counted in `/stats`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::Instant;

use common::*;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;

/// Jobs that may wait for a worker or be run, per worker (`driver::pool::QUEUE_PER_THREAD`).
const QUEUE_PER_THREAD: usize = 256;
/// Requests sent past what one frozen worker may hold.
const OVER: usize = 44;

/// The server's thread named `name` (std names its threads through prctl, shown in `comm`).
fn thread_named(server: &Server, name: &str) -> Pid {
    let pid = server.pid();
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|entry| {
            let tid = entry.ok()?.file_name().to_str()?.parse::<i32>().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            (comm.trim_end() == name).then_some(Pid::from_raw(tid))
        })
        .next()
        .unwrap_or_else(|| panic!("the server has no thread {name}"))
}

/// Waits until exactly `expected` of `streams` have something to read (and no more, since with
/// the worker frozen nothing else can be answered); returns their indices.
fn answered_while_frozen(streams: &[TcpStream], expected: usize) -> Vec<usize> {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let mut fds: Vec<PollFd> = streams
            .iter()
            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
            .collect();
        nix::poll::poll(&mut fds, PollTimeout::from(100u16)).unwrap();
        let ready: Vec<usize> = fds
            .iter()
            .enumerate()
            .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(i, _)| i)
            .collect();
        assert!(ready.len() <= expected, "{} answered", ready.len());
        if ready.len() == expected {
            return ready;
        }
        assert!(Instant::now() < deadline, "only {} answered", ready.len());
    }
}

/// Freezes the one worker, sends one request on each of capacity + OVER connections, and
/// returns the server, the connections, and which were answered while the worker was frozen
/// (the refused ones).
fn overfill(proto: &str, request: &[u8]) -> (Server, Vec<TcpStream>, Vec<usize>) {
    let server = Server::start(&["--backend", "pool", "--pool-threads", "1", "--proto", proto]);
    let streams: Vec<TcpStream> = (0..QUEUE_PER_THREAD + OVER)
        .map(|_| server.connect())
        .collect();
    let worker = FrozenThread::freeze(thread_named(&server, "pool-0"));
    for s in &streams {
        (&*s).write_all(request).unwrap();
    }
    let refused = answered_while_frozen(&streams, OVER);
    drop(worker);
    (server, streams, refused)
}

#[test]
fn a_request_past_the_queue_gets_503_and_the_queued_ones_are_answered() {
    let request = b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n";
    let (server, streams, refused) = overfill("http", request);
    for &i in &refused {
        let mut reader = HttpReader::new(&streams[i]);
        let r = reader.read_response(false).unwrap();
        assert_eq!(r.status, 503, "connection {i}");
        assert_eq!(r.header("connection"), Some("close"));
        assert!(reader.at_clean_eof().unwrap(), "connection {i} left open");
    }
    // The queued requests are answered once the worker runs again, and their connections stay
    // usable: a second request on each.
    for (i, s) in streams.iter().enumerate() {
        if refused.contains(&i) {
            continue;
        }
        let mut reader = HttpReader::new(s);
        let r = reader.read_response(false).unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"Hello, World!"[..]));
        reader.inner_mut().write_all(request).unwrap();
        assert_eq!(reader.read_response(false).unwrap().status, 200);
    }
    let s = stats(&server);
    assert_eq!(s["backend"], "pool");
    assert_eq!(counter(&s, "pool_rejected"), OVER as u64, "{s}");
    assert_eq!(
        counter(&s, "pool_queue_high_water"),
        QUEUE_PER_THREAD as u64,
        "{s}"
    );
    assert_eq!(counter(&s, "pool_jobs"), 2 * QUEUE_PER_THREAD as u64, "{s}");
    assert_eq!(
        counter(&s, "connections_refused"),
        0,
        "a request, not a connection: {s}"
    );
    assert_eq!(
        counter(&s, "requests"),
        2 * QUEUE_PER_THREAD as u64 + 1,
        "{s}"
    );
}

/// Echo has no refusal to send: input past the queue waits in line, its connection stops
/// reading, and every chunk is echoed once the workers catch up. None is closed or lost.
#[test]
fn an_echo_chunk_past_the_queue_waits_for_a_worker_and_nothing_is_lost() {
    let server = Server::start(&[
        "--backend",
        "pool",
        "--pool-threads",
        "1",
        "--proto",
        "echo",
    ]);
    let streams: Vec<TcpStream> = (0..QUEUE_PER_THREAD + OVER)
        .map(|_| server.connect())
        .collect();
    let worker = FrozenThread::freeze(thread_named(&server, "pool-0"));
    for (i, s) in streams.iter().enumerate() {
        (&*s).write_all(&(i as u32).to_le_bytes()).unwrap();
    }
    // The loop has read every chunk: the queue is full and OVER of them are parked.
    let deadline = Instant::now() + IO_TIMEOUT;
    while unread_by_server(server.addr.port()) > 0 {
        assert!(
            Instant::now() < deadline,
            "the loop did not read the chunks"
        );
        std::thread::yield_now();
    }
    // Nothing can be answered with the worker frozen, and nothing was closed (an EOF would be
    // readable).
    assert_eq!(answered_while_frozen(&streams, 0), Vec::<usize>::new());
    drop(worker);
    for (i, s) in streams.iter().enumerate() {
        let mut back = [0u8; 4];
        (&*s)
            .read_exact(&mut back)
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(u32::from_le_bytes(back), i as u32, "connection {i}");
        // Still open and served: a second chunk.
        (&*s).write_all(b"more").unwrap();
        (&*s).read_exact(&mut back).unwrap();
        assert_eq!(&back, b"more", "connection {i}");
    }
}

/// The cliff the old pool had (a connection held a thread: 20 of 300 served with 4 threads) is
/// gone: 300 keep-alive clients with a request each in flight at once, on 4 workers.
#[test]
fn three_hundred_keep_alive_clients_on_four_workers_are_all_served() {
    const CLIENTS: usize = 300;
    let server = Server::start(&[
        "--backend",
        "pool",
        "--pool-threads",
        "4",
        "--proto",
        "http",
    ]);
    let mut clients: Vec<HttpReader<TcpStream>> = (0..CLIENTS)
        .map(|_| HttpReader::new(server.connect()))
        .collect();
    for round in 0..2 {
        for (i, c) in clients.iter_mut().enumerate() {
            let request = format!("GET /bytes/{} HTTP/1.1\r\nHost: t\r\n\r\n", i + round);
            c.inner_mut().write_all(request.as_bytes()).unwrap();
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let r = c
                .read_response(false)
                .unwrap_or_else(|e| panic!("client {i}, round {round}: {e}"));
            assert_eq!((r.status, r.body.len()), (200, i + round), "client {i}");
        }
    }
    let s = stats(&server);
    assert_eq!(
        counter(&s, "connections_current"),
        CLIENTS as u64 + 1,
        "{s}"
    );
    assert_eq!(counter(&s, "connections_refused"), 0, "{s}");
    assert_eq!(counter(&s, "pool_rejected"), 0, "{s}");
    assert_eq!(counter(&s, "pool_jobs"), 2 * CLIENTS as u64, "{s}");
    assert_eq!(counter(&s, "pool_queue_depth"), 0, "{s}");
    let high_water = counter(&s, "pool_queue_high_water");
    assert!((1..=CLIENTS as u64).contains(&high_water), "{s}");
    assert!(counter(&s, "pool_worker_busy_ns") > 0, "{s}");
}
