//! Counters of work done and syscalls made, one set per event loop (per thread), summed at the end
//! and shown in `/stats`, so that syscalls per request can be compared across I/O models.

use serde::Serialize;

/// Declares a struct of `u64` counters once, and derives from that one list its flattening for
/// the shared stats board and its merge: a new counter is one line here and nothing elsewhere.
macro_rules! counter_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$field_meta:meta])* pub $field:ident: u64,)*
            $(@nested $(#[$nested_meta:meta])* pub $nested:ident: $nested_ty:ty,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: u64,)*
            $($(#[$nested_meta])* pub $nested: $nested_ty,)?
        }

        impl $name {
            /// How many u64 words the flattened form has.
            pub const WORDS: usize =
                [$(stringify!($field)),*].len() $(+ <$nested_ty>::WORDS)?;

            fn push_words(&self, out: &mut Vec<u64>) {
                $(out.push(self.$field);)*
                $(self.$nested.push_words(out);)?
            }

            fn pop_words(words: &mut impl Iterator<Item = u64>) -> $name {
                $name {
                    $($field: words.next().unwrap_or(0),)*
                    $($nested: <$nested_ty>::pop_words(words),)?
                }
            }

            /// Adds another loop's counters into this one.
            pub fn merge(&mut self, other: &$name) {
                $(self.$field += other.$field;)*
                $(self.$nested.merge(&other.$nested);)?
            }
        }
    };
}

counter_struct! {
    /// Everything one event loop counts. Plain integers: each loop owns its own copy, and totals
    /// are made by adding copies together, never by sharing one.
    pub struct Counters {
        pub connections_current: u64,
        pub connections_total: u64,
        /// Connections closed at once because the server was full or could not take them.
        pub connections_refused: u64,
        pub requests: u64,
        pub bytes_in: u64,
        pub bytes_out: u64,
        /// Connections closed because a request head did not arrive in time (HTTP: after a 408).
        pub timeouts_header: u64,
        /// Keep-alive (or never-used) connections closed after sitting idle.
        pub timeouts_idle: u64,
        /// Connections closed because their pending output made no progress.
        pub timeouts_write: u64,
        /// Wake-ups of a loop that made no progress on anything: nothing read, written, accepted,
        /// expired or re-registered. The invariant is that this stays near zero; a loop that
        /// spins shows up here.
        pub spurious_wakeups: u64,
        /// Requests answered during shutdown (with `Connection: close`).
        pub shutdown_answered: u64,
        /// pool: requests (HTTP) or chunks (echo) handed to the workers.
        pub pool_jobs: u64,
        /// pool: jobs with the workers, waiting for one or being run (a gauge, as of the last
        /// hand-off or collection; a `/stats` request does not count itself).
        pub pool_queue_depth: u64,
        /// pool: the most jobs that were ever waiting or being run at once.
        pub pool_queue_high_water: u64,
        /// pool: requests refused because the workers had all they may hold (HTTP: 503).
        pub pool_rejected: u64,
        /// pool: times echo input waited in line for a worker because the workers had all they
        /// may hold (echo has no refusal: the connection stops reading until a worker is free).
        pub pool_parked: u64,
        /// pool: time the workers spent running jobs, summed over the workers.
        pub pool_worker_busy_ns: u64,
        /// Blocking work (`/sleep`, `/work`) run on the thread that serves the connection: the
        /// loop itself on a single-threaded backend (stalling every connection on it), the
        /// connection's thread (threads) or the worker running its job (pool).
        pub blocking_inline: u64,
        /// Blocking work handed to the `--offload` helper threads (or coro's `offload`) while the
        /// loop went on serving other connections.
        pub blocking_offloaded: u64,
        /// Blocking work with the helpers now, waiting for one or being run (a gauge).
        pub offload_queue_depth: u64,
        /// The most blocking work that was ever with the helpers at once.
        pub offload_queue_high_water: u64,
        @nested
        pub syscalls: Syscalls,
    }
}

counter_struct! {
    /// Syscalls by purpose. Each backend fills in the ones its model makes.
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
        /// io_uring completions reaped (not syscalls: they are read from shared memory).
        pub completions: u64,
        /// io_uring operations submitted (not syscalls: one `io_uring_enter` carries many).
        pub uring_ops: u64,
        /// io_uring receives re-armed after the kernel ended them (ENOBUFS, or a multishot ending).
        pub recv_rearms: u64,
        /// io_uring receives armed (a multishot one stays armed for many requests): operations
        /// among `uring_ops`, not syscalls, so that `syscalls_total` compares across models.
        pub uring_recvs: u64,
        /// io_uring sends submitted (operations, not syscalls).
        pub uring_sends: u64,
        /// Connections that io_uring accepts delivered (operations, not syscalls).
        pub uring_accepts: u64,
    }
}

impl Counters {
    /// Flattened, for the shared stats board.
    pub fn to_words(&self) -> [u64; Counters::WORDS] {
        let mut out = Vec::with_capacity(Counters::WORDS);
        self.push_words(&mut out);
        let mut words = [0u64; Counters::WORDS];
        words.copy_from_slice(&out);
        words
    }

    pub fn from_words(w: [u64; Counters::WORDS]) -> Counters {
        Counters::pop_words(&mut w.into_iter())
    }

    /// Syscalls of every kind, for "syscalls per request". io_uring operations and completions
    /// are not syscalls and are not counted here.
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

/// The one-line summary logged when a loop ends; the pool's figures only where it ran jobs.
pub fn summary_line(backend: &str, c: &Counters) -> String {
    let s = &c.syscalls;
    let pool = if c.pool_jobs > 0 {
        format!(
            " pool_jobs={} pool_rejected={} pool_parked={} pool_queue_high_water={} \
             pool_worker_busy_ms={}",
            c.pool_jobs,
            c.pool_rejected,
            c.pool_parked,
            c.pool_queue_high_water,
            c.pool_worker_busy_ns / 1_000_000
        )
    } else {
        String::new()
    };
    format!(
        "backend={backend} connections={} refused={} requests={} bytes_in={} bytes_out={} \
         waits={} ctl={} reads={} writes={} accepts={} signals={} overflow_scans={} completions={} \
         uring_ops={} spurious_wakeups={}{pool}",
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
        s.completions,
        s.uring_ops,
        c.spurious_wakeups
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_every_counter() {
        // Distinct values in every word, so a field dropped or swapped in the flattening shows.
        let words: Vec<u64> = (1..=Counters::WORDS as u64).collect();
        let c = Counters::from_words(words.clone().try_into().unwrap());
        assert_eq!(c.to_words().to_vec(), words);
        assert_eq!(c.connections_current, 1);
        assert_eq!(c.syscalls.uring_accepts, Counters::WORDS as u64);
        let mut sum = c;
        sum.merge(&c);
        assert_eq!(sum.syscalls.uring_ops, 2 * c.syscalls.uring_ops);
        assert_eq!(sum.spurious_wakeups, 2 * c.spurious_wakeups);
    }
}
