//! What one event-loop thread counts and records; summed over threads, processes and machines.
//!
//! Everything here is additive (counters and histograms), so that merging runs is exact.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Histograms hold microseconds from 1 µs to one hour, to 3 significant digits.
pub const HIST_MAX_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant bounds are valid")
}

macro_rules! summable {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident: $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        pub struct $name { $($(#[$fm])* #[serde(default)] pub $f: $t,)* }
        impl $name {
            pub fn add(&mut self, o: &$name) { $(self.$f += o.$f;)* }
        }
    };
}

summable! {
    /// Connection outcomes. Connect failures are by errno; after establishment a connection ends
    /// by reset (ECONNRESET/EPIPE) or by the peer's close (EOF).
    pub struct ConnCounters {
        pub requested: u64,
        /// Connection slots that connected at least once.
        pub established: u64,
        /// Connect attempts, reconnects included.
        pub attempts: u64,
        /// Connect attempts that failed, by cause below.
        pub failed: u64,
        pub econnrefused: u64,
        pub etimedout: u64,
        pub eaddrnotavail: u64,
        pub emfile: u64,
        pub other_connect_error: u64,
        /// Established connections reset by the peer (ECONNRESET, EPIPE).
        pub econnreset: u64,
        /// Established connections the peer closed (EOF).
        pub closed_by_peer: u64,
        /// Established connections closed by loadgen for a protocol error or failed verification.
        pub closed_on_error: u64,
        /// Established connections closed by loadgen after a request on them timed out.
        pub closed_on_timeout: u64,
        /// Open when the run ended (for hold: the connections held).
        pub open_at_end: u64,
    }
}

summable! {
    /// Requests (HTTP requests, echo messages, hold pings).
    pub struct ReqCounters {
        /// Sent in the measured window.
        pub sent: u64,
        /// Answered within the timeout, in the measured window: the latency samples.
        pub completed: u64,
        /// Past --timeout: recorded in the latency histogram at the age they had when found.
        pub timeouts: u64,
        /// Answers to requests that had already timed out (not recorded twice).
        pub late: u64,
        /// Lost when their connection closed.
        pub aborted: u64,
        /// Malformed responses.
        pub protocol_errors: u64,
        /// Of the completed, answered after the window's end, while the run drained.
        pub drained: u64,
        /// Answers that came inside the window, to any request (the warmup's too): the
        /// throughput over the window, `rates.req_per_s`.
        pub answered_in_window: u64,
        /// Sent (or due) in the window and still unanswered when the run ended (after its drain).
        pub in_flight_at_end: u64,
        pub bytes_sent: u64,
        pub bytes_received: u64,
        pub status_1xx: u64,
        pub status_2xx: u64,
        pub status_3xx: u64,
        pub status_4xx: u64,
        pub status_5xx: u64,
        pub status_other: u64,
        /// Echo messages whose every byte matched.
        pub verified: u64,
        pub corrupted: u64,
        /// Partly received when the connection ended.
        pub truncated: u64,
        /// Intact but out of order.
        pub reordered: u64,
    }
}

summable! {
    /// loadgen's own cost.
    pub struct SelfCounters {
        pub threads: u64,
        pub processes: u64,
        /// CPU time of the event-loop threads, in microseconds.
        pub thread_cpu_us: u64,
        /// Wall time of the event-loop threads, summed, in microseconds.
        pub thread_wall_us: u64,
        /// Threads that were busy ≥ 90% of their wall time.
        pub saturated_threads: u64,
        /// Process CPU (user and system), microseconds, threads and start-up included.
        pub process_user_us: u64,
        pub process_sys_us: u64,
        /// Event-loop wakeups and the ones that came more than 2 ms after the timer asked.
        pub wakeups: u64,
        pub late_wakeups: u64,
        /// The same within the measured window (the connect ramp before it wakes late on a
        /// busy machine without saying anything about the measurement).
        pub measured_wakeups: u64,
        pub measured_late_wakeups: u64,
        /// What the event-loop threads ran, and waited for a CPU, over the measured window
        /// (connecting before it excluded), microseconds, summed over threads.
        pub measured_run_us: u64,
        pub measured_wait_us: u64,
        /// Threads stopped early by SIGINT/SIGTERM.
        pub interrupted_threads: u64,
    }
}

/// Everything one thread (or process, or run) measured.
#[derive(Clone, Debug)]
pub struct Stats {
    pub conns: ConnCounters,
    pub reqs: ReqCounters,
    pub this: SelfCounters,
    /// From the intended send time (open loop) or the send (closed loop) to the full response.
    pub latency: Histogram<u64>,
    /// From the actual send to the full response.
    pub service: Histogram<u64>,
    pub connect: Histogram<u64>,
    /// How late the event loop woke up for its timers.
    pub loop_lag: Histogram<u64>,
    /// Length of the measured window, seconds (the longest over merged parts).
    pub elapsed_s: f64,
    /// How long the run drained after the window, seconds (the longest over merged parts).
    pub drain_s: f64,
    /// Each path of a `--mix` on its own, in the mix's order; empty without a mix.
    pub per_path: Vec<PathStats>,
}

/// The requests of one path of a mix: counted and recorded like the run's own (`latency` from
/// the intended send time, timeouts included), so that a slow path's latencies do not hide in,
/// or spill into, the others'.
#[derive(Clone, Debug)]
pub struct PathStats {
    pub path: String,
    /// Sent in the measured window.
    pub sent: u64,
    /// Answered within the timeout, in the measured window.
    pub completed: u64,
    /// Of the completed, answered with a 2xx status.
    pub status_2xx: u64,
    pub timeouts: u64,
    pub latency: Histogram<u64>,
}

impl PathStats {
    pub fn new(path: String) -> PathStats {
        PathStats {
            path,
            sent: 0,
            completed: 0,
            status_2xx: 0,
            timeouts: 0,
            latency: new_histogram(),
        }
    }

    fn add(&mut self, o: &PathStats) {
        self.sent += o.sent;
        self.completed += o.completed;
        self.status_2xx += o.status_2xx;
        self.timeouts += o.timeouts;
        let _ = self.latency.add(&o.latency);
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            conns: ConnCounters::default(),
            reqs: ReqCounters::default(),
            this: SelfCounters::default(),
            latency: new_histogram(),
            service: new_histogram(),
            connect: new_histogram(),
            loop_lag: new_histogram(),
            elapsed_s: 0.0,
            drain_s: 0.0,
            per_path: Vec::new(),
        }
    }
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.conns.add(&o.conns);
        self.reqs.add(&o.reqs);
        self.this.add(&o.this);
        // Same bounds everywhere, so adding cannot fail; a value beyond them would be clamped.
        let _ = self.latency.add(&o.latency);
        let _ = self.service.add(&o.service);
        let _ = self.connect.add(&o.connect);
        let _ = self.loop_lag.add(&o.loop_lag);
        self.elapsed_s = self.elapsed_s.max(o.elapsed_s);
        self.drain_s = self.drain_s.max(o.drain_s);
        // By path, not by position: merged reports may come from runs with different mixes.
        for p in &o.per_path {
            match self.per_path.iter_mut().find(|q| q.path == p.path) {
                Some(q) => q.add(p),
                None => self.per_path.push(p.clone()),
            }
        }
    }
}

/// Records `ns` nanoseconds as microseconds (at least 1).
#[inline]
pub fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record((ns / 1000).max(1));
}
