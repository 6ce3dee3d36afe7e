//! The event loop driven one turn at a time on a fake clock, against a peer socket that the test
//! holds: which instant each latency is taken from, and what a hold does after a lost ping.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::end::MAX_DRAIN_NS;
use super::*;
use crate::client::echo::Echo;
use crate::client::http::Http;
use crate::config::HttpOpts;

const MS: u64 = 1_000_000;
/// Long enough never to matter in a test.
const HOUR: u64 = 3_600_000 * MS;

/// A clock that returns `t` and then advances it by `step` (0: it stands still until set). Its
/// real clock reads `real` (0: the kernel's receive timestamps read as now).
#[derive(Clone, Default)]
struct FakeClock {
    t: Rc<Cell<u64>>,
    step: Rc<Cell<u64>>,
    real: Rc<Cell<u64>>,
}

impl FakeClock {
    fn set(&self, t: u64) {
        self.t.set(t);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> u64 {
        let t = self.t.get();
        self.t.set(t + self.step.get());
        t
    }

    fn real(&self) -> u64 {
        self.real.get()
    }
}

/// One connection of an event loop, open, with the server's end of it.
struct Rig<C: Client> {
    engine: Engine<C, FakeClock>,
    clock: FakeClock,
    peer: TcpStream,
    _snapshots: mpsc::Receiver<(usize, Feed)>,
}

/// Connects at t = 0. `ping`: a hold with this ping period; otherwise a closed loop of
/// `requests` requests, `pipeline` deep.
fn rig<C: Client>(
    client: C,
    pipeline: usize,
    requests: Option<u64>,
    ping: Option<u64>,
    timeout: u64,
) -> Rig<C> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (tx, rx) = mpsc::channel();
    let plan = ThreadPlan {
        thread: 0,
        start: Instant::now(),
        origin: 0,
        target: listener.local_addr().unwrap(),
        sources: Vec::new(),
        source_ports: None,
        conns: vec![ConnPlan {
            global: 0,
            connect_at: 0,
        }],
        pipeline,
        timeout,
        warmup: 0,
        duration: ping.map(|_| HOUR),
        requests,
        schedule: None,
        reconnect: ping.is_none(),
        hold: ping.is_some(),
        ping,
        interval: HOUR,
        snapshots: tx,
    };
    let clock = FakeClock::default();
    let mut engine = Engine::new(client, plan, clock.clone()).unwrap();
    engine.connect_due(0);
    let (peer, _) = listener.accept().unwrap();
    pump(&mut engine, |e| e.conns[0].phase == Phase::Open);
    Rig {
        engine,
        clock,
        peer,
        _snapshots: rx,
    }
}

/// Runs loop turns (each waiting at most 100 ms for readiness) until `done`.
fn pump<C: Client>(e: &mut Engine<C, FakeClock>, done: impl Fn(&Engine<C, FakeClock>) -> bool) {
    for _ in 0..100 {
        if done(e) {
            return;
        }
        e.turn(Some(Duration::from_millis(100))).unwrap();
    }
    assert!(done(e), "the event loop did not get there");
}

fn http(method: &str, body_size: usize) -> Http {
    Http::new(&HttpOpts {
        host: "test".into(),
        path: "/".into(),
        method: method.into(),
        body_size,
        keepalive: true,
        mix: Vec::new(),
    })
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

fn us(ns: u64) -> u64 {
    ns / 1000
}

/// Item 8 (c). Two pipelined POSTs, each far larger than the socket buffers, are queued at once
/// (t = 0); the second one's first byte can only be written once the peer has read the first
/// (t = 10 ms). Both are answered at t = 30 ms. The second one's service time is from its write
/// (20 ms), its corrected latency from its queueing (30 ms).
#[test]
fn service_time_starts_when_the_first_byte_is_written() {
    let mut r = rig(http("POST", 8 << 20), 2, Some(2), None, HOUR);
    let c = &r.engine.conns[0];
    let req_len = c.out.len() / 2;
    assert_eq!(c.inflight.len(), 2);
    assert!(
        c.out_pos < req_len,
        "the first request fit in the socket buffers: the test needs a larger body"
    );
    r.clock.set(10 * MS);
    let mut peer = r.peer.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0; 1 << 20];
        let mut got = 0;
        while got < 2 * req_len {
            got += peer.read(&mut buf).unwrap();
        }
    });
    pump(&mut r.engine, |e| !e.conns[0].want_write);
    reader.join().unwrap();
    r.clock.set(30 * MS);
    r.peer.write_all(&[OK, OK].concat()).unwrap();
    pump(&mut r.engine, |e| e.stats.reqs.completed == 2);
    let s = &r.engine.stats;
    assert_eq!(s.latency.len(), 2);
    assert!(s.latency.equivalent(s.latency.min(), us(30 * MS)));
    assert!(s.latency.equivalent(s.latency.max(), us(30 * MS)));
    assert!(
        s.service.equivalent(s.service.min(), us(20 * MS)),
        "service times {} to {} µs: the second request's is from its queueing, not its write",
        s.service.min(),
        s.service.max()
    );
    assert!(s.service.equivalent(s.service.max(), us(30 * MS)));
}

/// Item 8 (d). Two responses wait in the socket and one loop turn reads them with two reads
/// (a read buffer of one response); the clock advances 1 ms at every reading. The second
/// response, read by the later read, completes later: the clock is read per read, not once
/// for the whole turn.
#[test]
fn each_read_takes_its_own_completion_time() {
    let mut r = rig(http("GET", 0), 2, Some(2), None, HOUR);
    let req = r.engine.conns[0].out.len() / 2;
    let mut buf = vec![0; 2 * req];
    r.peer.read_exact(&mut buf).unwrap();
    r.peer.write_all(&[OK, OK].concat()).unwrap();
    r.engine.rbuf = vec![0; OK.len()];
    r.clock.set(50 * MS);
    r.clock.step.set(MS);
    r.engine.turn(Some(Duration::from_secs(10))).unwrap();
    let s = &r.engine.stats;
    assert_eq!(s.reqs.completed, 2, "one turn reads both responses");
    let (first, last) = (s.latency.min(), s.latency.max());
    assert!(
        !s.latency.equivalent(first, last),
        "both responses completed at the same instant ({first} µs)"
    );
    assert!(first >= s.latency.lowest_equivalent(us(50 * MS)) && last < us(60 * MS));
}

/// Item 8 (b). A hold with one ping in flight at a time (pipeline 1): the first ping is lost
/// (no answer within the timeout), and the connection is pinged again all the same; when the
/// answers come, the late one is matched with the lost ping and the next with the new one; a
/// later loss is counted too.
#[test]
fn a_hold_keeps_probing_after_a_lost_ping() {
    let size = 64;
    let mut r = rig(Echo::new(size), 1, None, Some(100 * MS), 150 * MS);
    r.clock.set(100 * MS);
    r.engine.ping_due(100 * MS);
    assert_eq!(r.engine.stats.reqs.sent, 1);
    r.engine.check_timeouts(250 * MS);
    assert_eq!(r.engine.stats.reqs.timeouts, 1);
    r.clock.set(300 * MS);
    r.engine.ping_due(300 * MS);
    assert_eq!(
        r.engine.stats.reqs.sent, 2,
        "the connection was not pinged again after its ping was lost"
    );
    // Both answers arrive at 320 ms: the first is the lost ping's, the second the new one's.
    let mut pings = vec![0; 2 * size];
    r.peer.read_exact(&mut pings).unwrap();
    r.peer.write_all(&pings).unwrap();
    r.clock.set(320 * MS);
    pump(&mut r.engine, |e| {
        e.stats.reqs.late + e.stats.reqs.completed == 2
    });
    let q = &r.engine.stats.reqs;
    assert_eq!((q.late, q.completed, q.verified), (1, 1, 1));
    assert_eq!((q.corrupted, q.reordered, q.protocol_errors), (0, 0, 0));
    // The new ping was due at 200 ms (the one at 300 ms was skipped: a ping was in flight).
    let lat = &r.engine.stats.latency;
    assert!(lat.equivalent(lat.min(), us(120 * MS)), "{}", lat.min());
    // The next ping is lost too, counted, and the connection is still probed after it.
    r.clock.set(400 * MS);
    r.engine.ping_due(400 * MS);
    r.engine.check_timeouts(600 * MS);
    r.clock.set(600 * MS);
    r.engine.ping_due(600 * MS);
    let q = &r.engine.stats.reqs;
    assert_eq!((q.sent, q.timeouts), (4, 2));
    assert_eq!(r.engine.conns[0].phase, Phase::Open);
}

/// A held connection owns no heap memory between pings: what the ping used (its place in the
/// in-flight queue, its bytes) is freed once it is answered, and the next ping works as before.
#[test]
fn a_held_connection_frees_its_buffers_between_pings() {
    let size = 64;
    let mut r = rig(Echo::new(size), 1, None, Some(100 * MS), HOUR);
    for (round, at) in [(1, 100), (2, 200)] {
        r.clock.set(at * MS);
        r.engine.ping_due(at * MS);
        assert!(r.engine.conns[0].inflight.capacity() > 0);
        let mut ping = vec![0; size];
        r.peer.read_exact(&mut ping).unwrap();
        r.peer.write_all(&ping).unwrap();
        pump(&mut r.engine, |e| e.stats.reqs.verified == round);
        let c = &r.engine.conns[0];
        assert_eq!(
            (c.inflight.capacity(), c.out.capacity(), c.carry.capacity()),
            (0, 0, 0),
            "after ping {round}"
        );
    }
}

/// An open loop of `rate` req/s on a `tick` ns tick over one connection `pipeline` deep, open
/// (request 0, due at 0, went as it opened), with the server's end of it.
fn open_loop(
    rate: f64,
    tick: u64,
    pipeline: usize,
) -> (Engine<Http, FakeClock>, FakeClock, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // Nobody reads the intervals: the loop ignores a closed channel.
    let (tx, _) = mpsc::channel();
    let plan = ThreadPlan {
        thread: 0,
        start: Instant::now(),
        target: listener.local_addr().unwrap(),
        sources: Vec::new(),
        source_ports: None,
        conns: vec![ConnPlan {
            global: 0,
            connect_at: 0,
        }],
        pipeline,
        timeout: HOUR,
        warmup: 0,
        duration: Some(HOUR),
        requests: None,
        origin: 0,
        schedule: Some(Schedule {
            origin: 0,
            rate,
            stride: 1,
            offset: 0,
            tick,
        }),
        reconnect: true,
        hold: false,
        ping: None,
        interval: HOUR,
        snapshots: tx,
    };
    let clock = FakeClock::default();
    let mut e = Engine::new(http("GET", 0), plan, clock.clone()).unwrap();
    e.connect_due(0);
    let (peer, _) = listener.accept().unwrap();
    pump(&mut e, |e| e.conns[0].phase == Phase::Open);
    (e, clock, peer)
}

/// An open loop of 100K req/s (one due every 10 µs) on a 100 µs tick: the loop does not wake
/// for each request but at the end of the tick, and that one wakeup sends every request due
/// in it, each keeping its due time as the start of its latency; none goes before it is due.
#[test]
fn the_open_loop_wakes_once_per_tick_and_sends_what_is_due() {
    let tick = 100_000;
    let (mut e, clock, _peer) = open_loop(100_000.0, tick, 1000);
    // Request 0 was due at 0 and went as the connection opened; 1 is due at 10 µs.
    assert_eq!(e.stats.reqs.sent, 1);
    clock.set(5_000);
    e.dispatch(5_000);
    assert_eq!(e.stats.reqs.sent, 1, "request 1 (due at 10 µs) went early");
    assert_eq!(
        e.deadline(5_000),
        tick,
        "the loop would wake for the next request, not for the tick"
    );
    clock.set(tick);
    e.dispatch(tick);
    assert_eq!(
        e.stats.reqs.sent, 11,
        "requests due at 10..=100 µs go in one turn"
    );
    let due: Vec<u64> = e.conns[0].inflight.iter().map(|r| r.intended).collect();
    assert_eq!(due, (0..=10).map(|k| k * 10_000).collect::<Vec<_>>());
    assert!(e.conns[0].inflight.iter().all(|r| r.sent >= r.intended));
    assert_eq!(e.deadline(tick), 2 * tick);
}

/// Below saturation the open loop sleeps to its next tick and reads the responses that came
/// meanwhile only then, instead of waking for each; when no connection is free to send the next
/// request on, it waits for a response as before (and a closed loop always does).
#[test]
fn the_open_loop_reads_per_tick_while_a_connection_is_free() {
    let tick = 100_000;
    // 1K req/s: request 1 is due at 1 ms, ten ticks away.
    let (mut e, clock, mut peer) = open_loop(1_000.0, tick, 1);
    assert!(
        e.free.is_empty(),
        "request 0 is in flight on the only connection"
    );
    assert!(
        !e.reads_wait_for_tick(950_000, 1_000_000),
        "no connection is free: the response must wake the loop"
    );
    let mut req = vec![0; e.conns[0].out.len()];
    peer.read_exact(&mut req).unwrap();
    peer.write_all(OK).unwrap();
    clock.set(200_000);
    pump(&mut e, |e| e.stats.reqs.completed == 1);
    assert!(!e.free.is_empty());
    assert!(e.reads_wait_for_tick(950_000, 1_000_000));
    assert!(
        !e.reads_wait_for_tick(800_000, 1_000_000),
        "the next wakeup is more than a tick away: a response may not wait that long"
    );
    let mut closed = rig(http("GET", 0), 1, Some(5), None, HOUR);
    closed.engine.free.push(0);
    assert!(!closed.engine.reads_wait_for_tick(0, 1));
}

/// Waits until the kernel stamps received packets: it turns stamping on for the whole host a
/// moment after the first socket asks (from a work queue), so the first packets after that can
/// come unstamped. A socket pair asks and bounces a byte until it comes stamped; it is returned
/// to be kept open, since stamping goes off again once no socket asks.
fn kernel_stamps_packets() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut b, _) = listener.accept().unwrap();
    nix::sys::socket::setsockopt(&a, nix::sys::socket::sockopt::ReceiveTimestampns, &true).unwrap();
    let mut cmsg = nix::cmsg_space!(TimeSpec);
    let mut buf = [0; 1];
    for _ in 0..100_000 {
        b.write_all(b"x").unwrap();
        let (n, stamp) = conn_io::read_stamped(a.as_raw_fd(), &mut buf, &mut cmsg).unwrap();
        assert_eq!(n, 1);
        if stamp.is_some() {
            return (a, b);
        }
        std::thread::yield_now();
    }
    panic!("the kernel never stamped a received packet");
}

/// A response read a while after it came (the loop slept to its tick) completes when it came,
/// by the kernel's receive timestamp, not when the loop read it.
#[test]
fn a_response_read_late_completes_when_it_came() {
    let _stamping = kernel_stamps_packets();
    let (mut e, clock, mut peer) = open_loop(1_000.0, 100_000, 1);
    let mut req = vec![0; e.conns[0].out.len()];
    peer.read_exact(&mut req).unwrap();
    let real = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    };
    let before = real();
    peer.write_all(OK).unwrap();
    let after = real();
    // Read at 50 ms on the loop's clock, 30 ms after the write on the real clock: the response
    // came at 20 ms (up to the write's own duration earlier).
    clock.set(50 * MS);
    clock.real.set(after + 30 * MS);
    pump(&mut e, |e| e.stats.reqs.completed == 1);
    let lat = &e.stats.latency;
    let (lo, hi) = (us(20 * MS - (after - before)), us(20 * MS));
    assert!(
        lat.max() <= lat.highest_equivalent(hi) && lat.min() >= lat.lowest_equivalent(lo),
        "latency {} µs, not the {lo}..={hi} µs since the request was due",
        lat.max()
    );
}

/// A request sent in the warmup and answered after it counts in neither the final histogram nor
/// a measured interval's, so that the measured intervals of `--hdr-log` add up to exactly the
/// final histogram (CI once saw 401 samples in the merged log against 400 in the report).
#[test]
fn a_warmup_request_answered_after_the_warmup_is_in_no_measured_histogram() {
    let mut r = rig(http("GET", 0), 1, Some(1), None, HOUR);
    assert_eq!(r.engine.conns[0].inflight.len(), 1, "sent at t = 0");
    r.engine.measure_start = 10 * MS;
    let mut request = vec![0; r.engine.conns[0].out.len()];
    r.peer.read_exact(&mut request).unwrap();
    r.clock.set(20 * MS);
    r.peer.write_all(OK).unwrap();
    pump(&mut r.engine, |e| e.iv.completed == 1);
    assert_eq!(r.engine.stats.latency.len(), 0);
    assert_eq!(
        r.engine.iv_latency.len(),
        0,
        "the first measured interval took a warmup request"
    );
}

/// A timer wakeup 5 ms late counts as loadgen lag either way, but as lag of the measurement only
/// when it was due inside the measured window: on a busy machine the connect ramp before it
/// wakes late and says nothing about the probe (compare judges loadgen by the window's).
#[test]
fn late_wakeups_in_the_measured_window_are_counted_apart() {
    let mut r = rig(http("GET", 0), 1, Some(1), None, HOUR);
    let e = &mut r.engine;
    // The window: from 1 s to the end of the hour.
    e.measure_start = 1_000 * MS;
    e.measure_end = HOUR;
    let timer = Event {
        token: TIMER_TOKEN,
        readable: true,
        writable: false,
        hangup: false,
    };
    for armed in [500 * MS, 2_000 * MS] {
        e.armed = armed;
        r.clock.set(armed + 5 * MS);
        e.handle(timer);
    }
    assert_eq!(e.stats.this.late_wakeups, 2);
    assert_eq!(e.stats.this.measured_late_wakeups, 1);
}

/// Reads one request (a GET with no body) from the peer.
fn read_request(peer: &mut TcpStream) {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        peer.read_exact(&mut byte).unwrap();
        got.push(byte[0]);
    }
}

/// A closed loop of one connection whose measured window is [0, 10 ms), with `timeout`; its
/// first request went at t = 0.
fn closed_loop_window(timeout: u64) -> Rig<Http> {
    let mut r = rig(http("GET", 0), 1, None, None, timeout);
    r.engine.plan.duration = Some(10 * MS);
    r.engine.measure_end = 10 * MS;
    assert_eq!(r.engine.conns[0].inflight.len(), 1, "sent at t = 0");
    r
}

/// The intervals sent so far: (drain, completed, latency samples).
fn intervals(rx: &mpsc::Receiver<(usize, Feed)>) -> Vec<(bool, u64, u64)> {
    rx.try_iter()
        .filter_map(|(_, f)| match f {
            Feed::Snapshot(s) => Some((s.drain, s.completed, s.latency.len())),
            Feed::Done => None,
        })
        .collect()
}

/// Closed loop: a request sent in the window and answered 20 ms after its end is recorded (from
/// its send, 30 ms), counted as drained, in an interval of its own; nothing new is sent in the
/// drain, and the run ends as soon as nothing is in flight.
#[test]
fn an_answer_after_the_window_is_recorded_in_the_drain() {
    let mut r = closed_loop_window(HOUR);
    let e = &mut r.engine;
    assert!(!e.finished(10 * MS), "the run drains its request in flight");
    assert_eq!(e.drain_until, Some(10 * MS + MAX_DRAIN_NS));
    assert!(e.deadline(10 * MS) > 10 * MS, "the drain would spin");
    assert_eq!(
        e.drain_began(0),
        10 * MS,
        "the window's interval ends with it"
    );
    read_request(&mut r.peer);
    r.clock.set(30 * MS);
    r.peer.write_all(OK).unwrap();
    pump(e, |e| e.stats.reqs.completed == 1);
    assert!(
        e.conns[0].inflight.is_empty(),
        "a request went in the drain"
    );
    assert!(e.finished(30 * MS));
    e.last_snapshot(10 * MS, 30 * MS);
    e.finish(30 * MS);
    let s = &e.stats;
    assert_eq!((s.reqs.drained, s.reqs.in_flight_at_end), (1, 0));
    assert_eq!(s.latency.len(), 1);
    assert!(s.latency.equivalent(s.latency.max(), us(30 * MS)));
    assert_eq!(s.elapsed_s, 0.010);
    assert!((s.drain_s - 0.020).abs() < 1e-9, "{}", s.drain_s);
    assert_eq!(
        intervals(&r._snapshots),
        [(false, 0, 0), (true, 1, 1)],
        "the window's interval, then the drain's"
    );
}

/// Closed loop: a request never answered ends the run at the drain's bound (`--timeout` here,
/// shorter than the longest drain); it is counted in flight at the end and recorded at the age
/// it reached, a lower bound, in the final histogram and in the drain's interval.
#[test]
fn a_request_never_answered_ends_the_drain_at_its_bound() {
    let timeout = 500 * MS;
    let mut r = closed_loop_window(timeout);
    let e = &mut r.engine;
    assert!(!e.finished(10 * MS));
    let until = 10 * MS + timeout;
    assert_eq!(e.drain_until, Some(until));
    assert!(e.deadline(10 * MS) <= until);
    assert!(!e.finished(until - 1));
    assert!(e.finished(until));
    e.last_snapshot(10 * MS, until);
    e.finish(until);
    let s = &e.stats;
    assert_eq!((s.reqs.completed, s.reqs.drained), (0, 0));
    assert_eq!(s.reqs.in_flight_at_end, 1);
    assert_eq!(s.latency.len(), 1);
    assert!(s.latency.equivalent(s.latency.max(), us(until)));
    assert_eq!(intervals(&r._snapshots), [(true, 0, 1)]);
}

/// Open loop, one connection one deep at 1K req/s, window [0, 5 ms): request 0 is answered
/// only at 6 ms, so requests 1-4 (due in the window) wait for the connection. The drain sends
/// them one by one as it frees and records each from its due time; request 5 (due at the
/// window's end) is never sent.
#[test]
fn the_open_loop_drains_the_requests_due_in_the_window() {
    let (mut e, clock, mut peer) = open_loop(1000.0, 0, 1);
    e.plan.duration = Some(5 * MS);
    e.measure_end = 5 * MS;
    clock.set(5 * MS);
    e.dispatch(5 * MS);
    assert_eq!(e.stats.reqs.sent, 1, "the window is over: nothing goes out");
    assert!(!e.finished(5 * MS));
    assert_eq!(e.backlog(e.measure_end), 4);
    for k in 0..5u64 {
        read_request(&mut peer);
        clock.set((6 + k) * MS);
        peer.write_all(OK).unwrap();
        pump(&mut e, |e| e.stats.reqs.completed == k + 1);
    }
    assert!(e.finished(10 * MS), "nothing of the window is left");
    e.finish(10 * MS);
    let s = &e.stats;
    assert_eq!((s.reqs.sent, s.reqs.completed, s.reqs.drained), (5, 5, 5));
    assert_eq!(s.reqs.in_flight_at_end, 0);
    assert_eq!(e.next_k, 5);
    // Each answered at 6 ms + k, due at k ms: 6 ms each.
    assert!(s.latency.equivalent(s.latency.min(), us(6 * MS)));
    assert!(s.latency.equivalent(s.latency.max(), us(6 * MS)));
}

/// Open loop: nothing answered. At the drain's bound the request sent and the four due and
/// unsent are in flight at the end, each recorded at its age then.
#[test]
fn the_open_loop_records_what_the_drain_left_unanswered() {
    let (mut e, clock, _peer) = open_loop(1000.0, 0, 1);
    e.plan.duration = Some(5 * MS);
    e.measure_end = 5 * MS;
    clock.set(5 * MS);
    assert!(!e.finished(5 * MS));
    let until = 5 * MS + MAX_DRAIN_NS;
    assert!(e.finished(until));
    e.last_snapshot(5 * MS, until);
    e.finish(until);
    let s = &e.stats;
    assert_eq!((s.reqs.completed, s.reqs.in_flight_at_end), (0, 5));
    assert_eq!(s.latency.len(), 5);
    assert!(s.latency.equivalent(s.latency.max(), us(until)));
    assert!(s.latency.equivalent(s.latency.min(), us(until - 4 * MS)));
}

/// `--requests N` and a hold end at the window's end as before: no drain.
#[test]
fn requests_and_hold_runs_do_not_drain() {
    let mut r = rig(http("GET", 0), 1, Some(5), None, HOUR);
    r.engine.plan.duration = Some(10 * MS);
    r.engine.measure_end = 10 * MS;
    assert!(r.engine.finished(10 * MS));
    assert_eq!(r.engine.drain_until, None);
    let mut h = rig(Echo::new(16), 1, None, Some(HOUR), HOUR);
    h.engine.measure_end = 10 * MS;
    assert!(h.engine.finished(10 * MS));
    assert_eq!(h.engine.drain_until, None);
}
