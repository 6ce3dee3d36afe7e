//! Counters of work done and syscalls made, one set per event loop (per thread), summed at the end
//! and shown in `/stats`, so that syscalls per request can be compared across I/O models.

use serde::Serialize;

/// Everything one event loop counts. Plain integers: each loop owns its own copy, and totals are
/// made by adding copies together, never by sharing one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub connections_current: u64,
    pub connections_total: u64,
    /// Connections closed at once because the server was full or could not take them.
    pub connections_refused: u64,
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub syscalls: Syscalls,
}

/// Syscalls by purpose. Each backend fills in the ones its model makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Syscalls {
    /// Readiness waits: select, poll, epoll_wait, sigtimedwait, io_uring_enter waiting.
    pub waits: u64,
    /// Changes to the interest set: epoll_ctl, fcntl for signal set-up.
    pub ctl: u64,
    pub reads: u64,
    pub writes: u64,
    pub accepts: u64,
    /// Realtime signals taken (signal-driven I/O).
    pub signals: u64,
    /// Full poll(2) scans after the realtime signal queue overflowed.
    pub overflow_scans: u64,
    /// io_uring completions reaped.
    pub completions: u64,
}

impl Counters {
    /// How many u64 words [`Counters::to_words`] gives.
    pub const WORDS: usize = 14;

    /// Flattened, for the shared stats board.
    pub fn to_words(&self) -> [u64; Counters::WORDS] {
        let s = &self.syscalls;
        [
            self.connections_current,
            self.connections_total,
            self.connections_refused,
            self.requests,
            self.bytes_in,
            self.bytes_out,
            s.waits,
            s.ctl,
            s.reads,
            s.writes,
            s.accepts,
            s.signals,
            s.overflow_scans,
            s.completions,
        ]
    }

    pub fn from_words(w: [u64; Counters::WORDS]) -> Counters {
        Counters {
            connections_current: w[0],
            connections_total: w[1],
            connections_refused: w[2],
            requests: w[3],
            bytes_in: w[4],
            bytes_out: w[5],
            syscalls: Syscalls {
                waits: w[6],
                ctl: w[7],
                reads: w[8],
                writes: w[9],
                accepts: w[10],
                signals: w[11],
                overflow_scans: w[12],
                completions: w[13],
            },
        }
    }

    /// Adds another loop's counters into this one.
    pub fn merge(&mut self, other: &Counters) {
        self.connections_current += other.connections_current;
        self.connections_total += other.connections_total;
        self.connections_refused += other.connections_refused;
        self.requests += other.requests;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        let (a, b) = (&mut self.syscalls, &other.syscalls);
        a.waits += b.waits;
        a.ctl += b.ctl;
        a.reads += b.reads;
        a.writes += b.writes;
        a.accepts += b.accepts;
        a.signals += b.signals;
        a.overflow_scans += b.overflow_scans;
        a.completions += b.completions;
    }

    /// Syscalls of every kind, for "syscalls per request".
    pub fn total_syscalls(&self) -> u64 {
        let s = &self.syscalls;
        s.waits + s.ctl + s.reads + s.writes + s.accepts + s.signals + s.overflow_scans
    }
}

/// The `/stats` document.
#[derive(Serialize)]
struct StatsDocument<'a> {
    backend: &'a str,
    /// "process" when one process serves the port; "total" when the figures are summed over
    /// every live worker of `--workers N` (from the shared stats board).
    scope: &'a str,
    workers: usize,
    /// The process that answered.
    pid: u32,
    #[serde(flatten)]
    counters: &'a Counters,
    syscalls_total: u64,
}

/// Renders `/stats`.
/// `scope` is "process" for a server that is one process, "total" for the sum over workers.
pub fn stats_json(backend: &str, scope: &str, workers: usize, counters: &Counters) -> String {
    serde_json::to_string(&StatsDocument {
        backend,
        scope,
        workers,
        pid: std::process::id(),
        counters,
        syscalls_total: counters.total_syscalls(),
    })
    .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The one-line summary logged when a loop ends.
pub fn summary_line(backend: &str, c: &Counters) -> String {
    let s = &c.syscalls;
    format!(
        "backend={backend} connections={} refused={} requests={} bytes_in={} bytes_out={} \
         waits={} ctl={} reads={} writes={} accepts={} signals={} overflow_scans={} completions={}",
        c.connections_total,
        c.connections_refused,
        c.requests,
        c.bytes_in,
        c.bytes_out,
        s.waits,
        s.ctl,
        s.reads,
        s.writes,
        s.accepts,
        s.signals,
        s.overflow_scans,
        s.completions
    )
}
