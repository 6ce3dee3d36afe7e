//! Blocking work a request may ask for (`GET /sleep/MS`, `GET /work/N`, with
//! `--blocking-routes`): the lesson of event loops, made measurable. A handler that sleeps or
//! burns CPU holds whatever thread runs it; on a single-threaded loop that is every connection.
//!
//! The protocol never runs the work itself: a session that meets such a request stops there and
//! shows the work ([`crate::proto::Session::blocking_work`]); the driver decides where it runs —
//! inline on its own thread (threads, pool workers, and the single-threaded loops by default, so
//! the stall is visible) or on helper threads (`--offload N`, coro's `offload`) — and gives the
//! session the [`WorkDone`] ([`crate::proto::Session::resume`]), which writes the response.

use std::time::Duration;

/// Longest `GET /sleep/MS`, in milliseconds; longer: 400.
pub const MAX_SLEEP_MS: u32 = 10_000;
/// Most iterations of `GET /work/N`; more: 400. One iteration is one round of [`mix`]: about
/// 6 ns (0.006 µs) on this project's machine (2-core AMD EPYC VM, release build, best of four
/// runs of `cargo test --release --lib iteration_cost -- --ignored --nocapture`; 6.0–13 ns
/// while other jobs shared it), so the largest request burns about 60 ms of CPU.
pub const MAX_WORK_ITERATIONS: u32 = 10_000_000;

/// Work a request asked for. Small (8 bytes): it waits in the session of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockingWork {
    /// Block the running thread this long (`GET /sleep/MS`).
    Sleep { ms: u32 },
    /// Run this many iterations of a fixed hash (`GET /work/N`).
    Hash { iterations: u32 },
}

/// What blocking work gave back: for a hash, its final value (the response body shows it, so
/// the work cannot be optimized away); for a sleep, the milliseconds slept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkDone(pub u64);

impl BlockingWork {
    /// Does the work on the calling thread, blocking it. Called by a driver, never by the
    /// protocol.
    pub fn run(self) -> WorkDone {
        match self {
            BlockingWork::Sleep { ms } => {
                std::thread::sleep(Duration::from_millis(ms.into()));
                WorkDone(ms.into())
            }
            BlockingWork::Hash { iterations } => WorkDone(hash(iterations)),
        }
    }
}

/// `iterations` rounds of [`mix`] chained from a fixed seed: each round needs the last one's
/// result, so they run one after another however the compiler and CPU try.
pub fn hash(iterations: u32) -> u64 {
    let mut x = 0x0123_4567_89ab_cdef_u64;
    for _ in 0..iterations {
        x = mix(x);
    }
    x
}

/// One round of SplitMix64 (Steele, Lea, Flood 2014): an add, three xor-shifts, two multiplies.
#[inline]
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fixed_and_depends_on_the_iterations() {
        assert_eq!(hash(0), 0x0123_4567_89ab_cdef);
        assert_eq!(hash(1), mix(0x0123_4567_89ab_cdef));
        assert_ne!(hash(1000), hash(1001));
        assert_eq!(
            BlockingWork::Hash { iterations: 3 }.run(),
            WorkDone(hash(3))
        );
        assert_eq!(BlockingWork::Sleep { ms: 0 }.run(), WorkDone(0));
    }

    #[test]
    fn a_waiting_work_is_small() {
        assert_eq!(std::mem::size_of::<BlockingWork>(), 8);
    }

    /// Prints the cost of one iteration on this machine (the figure in the docs).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn iteration_cost() {
        let n = MAX_WORK_ITERATIONS;
        let started = std::time::Instant::now();
        let value = std::hint::black_box(hash(std::hint::black_box(n)));
        let took = started.elapsed();
        eprintln!(
            "{n} iterations in {took:?}: {:.2} ns each (value {value:x})",
            took.as_nanos() as f64 / f64::from(n)
        );
    }
}
