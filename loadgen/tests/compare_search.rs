//! The capacity search against a server whose capacity is known: a tiny HTTP server in this test
//! that answers at most N requests per second (a token bucket shared by its connections; beyond
//! N the answers queue). The search, over real open-loop loadgen probes, must find N.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loadgen::compare::probe::{capacity, Bound, ProbeOpts, SearchOpts, Target};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!";

/// Serves one connection: each request waits for its slot, one every `1/rate` seconds over all
/// connections.
fn serve(mut s: TcpStream, next_slot: Arc<Mutex<Instant>>, interval: Duration) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let slot = {
                let mut next = next_slot.lock().unwrap();
                let slot = (*next).max(Instant::now());
                *next = slot + interval;
                slot
            };
            // The rate limit itself: this request's turn in the server's one queue.
            std::thread::sleep(slot.saturating_duration_since(Instant::now()));
            if s.write_all(RESPONSE).is_err() {
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A server of capacity `rate` req/s on a free loopback port.
fn limited_server(rate: f64) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let next_slot = Arc::new(Mutex::new(Instant::now()));
    let interval = Duration::from_secs_f64(1.0 / rate);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let _ = conn.set_nodelay(true);
            let next_slot = Arc::clone(&next_slot);
            std::thread::spawn(move || serve(conn, next_slot, interval));
        }
    });
    addr
}

#[test]
fn the_search_finds_a_known_capacity() {
    const CAPACITY: f64 = 1500.0;
    let addr = limited_server(CAPACITY);
    let target = Target {
        addr,
        pid: None,
        ask_stats: false,
    };
    let opts = ProbeOpts {
        conns: 8,
        // A second: the requests still in flight when the window closes (a few at these
        // rates) are not completed in it, and must stay well under the 1% shortfall allowed.
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        threads: 1,
        // Loose: the machine may be shared (a scheduling hiccup must not fail a probe below the
        // capacity); past the capacity the queue grows without bound and the achieved rate falls
        // short of 99% anyway: 2% over it, 30 of 1,530 requests are still queued at the end.
        p99_bound: Duration::from_millis(200),
        path: "/".into(),
        loadgen_pinned: false,
        max_threads: 1,
    };
    let search_opts = SearchOpts {
        start_rate: 200.0,
        min_rate: 50.0,
        max_rate: 100_000.0,
        precision: 0.03,
        max_probes: 16,
    };
    let s = capacity(target, &opts, &search_opts).expect("the search runs");
    let rates: Vec<String> = s
        .probes
        .iter()
        .map(|p| {
            format!(
                "{:.0}→{:.0} p99 {} {}",
                p.target_rate,
                p.achieved_rate,
                p.p99_us,
                if p.pass { "pass" } else { "fail" }
            )
        })
        .collect();
    assert_eq!(s.bound, Bound::Server, "probes: {rates:?}");
    let found = s.server_capacity().expect("a capacity");
    assert!(
        (0.85 * CAPACITY..=1.02 * CAPACITY).contains(&found),
        "found {found:.0} req/s for a server of {CAPACITY} req/s; probes: {rates:?}"
    );
    // Doubled up from the start, then bisected: a failing probe above the capacity was seen.
    assert!(s.probes.iter().any(|p| !p.pass && p.target_rate > CAPACITY));
}
