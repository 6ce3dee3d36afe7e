//! Forced overflow of the sigio backend's realtime signal queue: the server runs with
//! `--sigio-queue-limit 64` (its RLIMIT_SIGPENDING lowered to 64), hundreds of connections send
//! at once, and every byte must still come back exactly. When the kernel cannot queue a realtime
//! signal it drops it and raises SIGIO; the backend must then find the lost readiness with a
//! poll(2) scan of every connection. The HTTP test also reads `/stats` and fails unless an
//! overflow scan really happened, so a limit that no longer forces overflow cannot pass silently.
//!
//! RLIMIT_SIGPENDING counts the pending signals of the whole *user*: other processes' pending
//! signals only make overflow come sooner, so the tests hold whatever else runs beside them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;

use common::*;

const CONNECTIONS: usize = 400;
const CLIENT_THREADS: usize = 4;
const ROUNDS: usize = 6;
const QUEUE_LIMIT: &str = "64";

/// Opens `CONNECTIONS` connections and gives each client thread its share, with global indices.
fn connect_all(server: &Server) -> Vec<Vec<(usize, TcpStream)>> {
    let mut shares: Vec<Vec<(usize, TcpStream)>> =
        (0..CLIENT_THREADS).map(|_| Vec::new()).collect();
    for i in 0..CONNECTIONS {
        shares[i % CLIENT_THREADS].push((i, server.connect()));
    }
    shares
}

fn echo_chunk(conn: usize, round: usize) -> Vec<u8> {
    // Sizes vary so that reads and signals do not line up with writes.
    pattern(
        300 + (conn * 7 + round * 131) % 1500,
        (conn * 1000 + round) as u64,
    )
}

#[test]
fn echo_is_byte_exact_when_the_signal_queue_overflows() {
    let server = Server::start(&[
        "--backend",
        "sigio",
        "--proto",
        "echo",
        "--sigio-queue-limit",
        QUEUE_LIMIT,
    ]);
    let handles: Vec<_> = connect_all(&server)
        .into_iter()
        .map(|share| {
            thread::spawn(move || {
                // Every round is written to every connection before anything is read back, so
                // that hundreds of signals are raised while the server is busy.
                for round in 0..ROUNDS {
                    for (i, stream) in &share {
                        (&*stream).write_all(&echo_chunk(*i, round)).unwrap();
                    }
                }
                for (i, stream) in &share {
                    let expected: Vec<u8> = (0..ROUNDS).flat_map(|r| echo_chunk(*i, r)).collect();
                    let mut back = vec![0u8; expected.len()];
                    (&*stream)
                        .read_exact(&mut back)
                        .unwrap_or_else(|e| panic!("connection {i}: {e}"));
                    assert!(back == expected, "connection {i}: echo differs");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
    let status = server.stop();
    assert!(status.success(), "exit status {status:?}");
}

fn echo_request(conn: usize, n: usize) -> (Vec<u8>, Vec<u8>) {
    let body = pattern(50 + (conn * 13 + n * 17) % 400, (conn * 10_000 + n) as u64);
    let mut request = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    (request, body)
}

#[test]
fn http_pipelined_is_exact_when_the_signal_queue_overflows_and_stats_count_it() {
    const PIPELINED: usize = 4;
    let server = Server::start(&[
        "--backend",
        "sigio",
        "--proto",
        "http",
        "--sigio-queue-limit",
        QUEUE_LIMIT,
    ]);
    let shares = connect_all(&server);
    // Connecting alone may overflow the queue (one signal per connection on the listener): count
    // only the scans made while requests were flowing.
    let scans_before = stats(&server)["syscalls"]["overflow_scans"]
        .as_u64()
        .unwrap_or(0);
    let handles: Vec<_> = shares
        .into_iter()
        .map(|share| {
            thread::spawn(move || {
                for round in 0..ROUNDS {
                    for (i, stream) in &share {
                        let batch: Vec<u8> = (0..PIPELINED)
                            .flat_map(|k| echo_request(*i, round * PIPELINED + k).0)
                            .collect();
                        (&*stream).write_all(&batch).unwrap();
                    }
                }
                for (i, stream) in share {
                    let mut reader = HttpReader::new(stream);
                    for n in 0..ROUNDS * PIPELINED {
                        let response = reader
                            .read_response(false)
                            .unwrap_or_else(|e| panic!("connection {i}, response {n}: {e}"));
                        assert_eq!(response.status, 200, "connection {i}, response {n}");
                        assert!(
                            response.body == echo_request(i, n).1,
                            "connection {i}, response {n}: body differs"
                        );
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
    let s = stats(&server);
    assert_eq!(s["backend"], "sigio");
    let scans = s["syscalls"]["overflow_scans"].as_u64().unwrap_or(0);
    eprintln!("overflow scans: {scans_before} while connecting, {scans} in all");
    assert!(
        scans > scans_before,
        "no overflow scan while requests flowed ({scans_before} before, {scans} after): \
         --sigio-queue-limit {QUEUE_LIMIT} did not force overflow: {s}"
    );
    assert!(s["syscalls"]["signals"].as_u64().unwrap_or(0) > 0, "{s}");
    let expected = (CONNECTIONS * ROUNDS * PIPELINED) as u64;
    assert!(s["requests"].as_u64().unwrap() >= expected, "{s}");
    let status = server.stop();
    assert!(status.success(), "exit status {status:?}");
}
