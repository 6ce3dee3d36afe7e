//! What every driver shares: the options it serves with, and the [`LoopEnv`] that gives the
//! protocol code its clock and counters.
//!
//! A driver owns sockets and turns readiness or completions into calls to
//! [`crate::proto::Session::advance`]. The readiness backends share one driver, the
//! [`reactor`]; the models that do not fit the readiness contract have their own here.

pub mod blocking;
pub mod coro;
pub mod kit;
pub mod pool;
pub mod reactor;
pub mod threads;
pub mod uring;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::board::StatsBoard;
use crate::config::Config;
use crate::date::HttpDate;
use crate::proto::Env;
use crate::stats::{self, Counters};

/// How a driver serves, whatever its I/O model: the configuration as `c10k serve` parsed it, and
/// what start-up resolved from it.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    pub config: Config,
    /// Connections beyond this are refused at once (HTTP: 503 first): `--max-conns`, or what the
    /// descriptor limit allows.
    pub max_conns: usize,
    /// Threads of the pool backend: `--pool-threads`, or two per core.
    pub pool_threads: usize,
    /// With `--workers N`: this worker's slot on the shared stats board.
    pub board: Option<Arc<StatsBoard>>,
}

/// No deadline (loop-clock milliseconds).
pub const NEVER: u64 = u64::MAX;

/// Milliseconds since a loop started, read once per wake-up: connections store 8-byte stamps
/// instead of 16-byte `Instant`s, and a connection's turn reads no clock.
#[derive(Debug)]
pub struct Clock {
    start: Instant,
    pub now_ms: u64,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
            now_ms: 0,
        }
    }

    pub fn tick(&mut self) {
        self.now_ms = self.start.elapsed().as_millis() as u64;
    }

    pub fn instant(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// The timeouts of [`DriverOptions`], in loop-clock milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header_ms: u64,
    pub idle_ms: u64,
    pub write_ms: u64,
}

impl Timeouts {
    /// The one deadline rule of the event-driven drivers: when a connection must be acted on if
    /// nothing happens. Lingering ends at `linger_until`; pending output that makes no progress
    /// is a write stall; a request head arriving since `head_started` has the header timeout;
    /// anything else is idle. Computed on demand, so a request costs a store, not a timer update.
    pub fn deadline(
        &self,
        linger_until: Option<u64>,
        output_pending: bool,
        last_activity: u64,
        head_started: u64,
    ) -> u64 {
        match linger_until {
            Some(until) => until,
            None if output_pending => last_activity.saturating_add(self.write_ms),
            None if head_started != NEVER => head_started.saturating_add(self.header_ms),
            None => last_activity.saturating_add(self.idle_ms),
        }
    }

    pub fn from_options(options: &DriverOptions) -> Timeouts {
        Timeouts {
            header_ms: options.config.header_timeout.as_millis() as u64,
            idle_ms: options.config.idle_timeout.as_millis() as u64,
            write_ms: options.config.write_timeout.as_millis() as u64,
        }
    }
}

/// One event loop's (or one thread's) view of the server: the cached date and its own counters.
#[derive(Debug)]
pub struct LoopEnv {
    pub backend: &'static str,
    pub date: HttpDate,
    pub counters: Counters,
    /// With `--workers N`: the shared board where each worker publishes its counters, so that
    /// `/stats` gives totals.
    pub board: Option<Arc<StatsBoard>>,
    /// `--blocking-routes`: `/sleep` and `/work` are served.
    pub blocking_routes: bool,
}

impl LoopEnv {
    pub fn new(backend: &'static str) -> LoopEnv {
        LoopEnv {
            backend,
            date: HttpDate::default(),
            counters: Counters::default(),
            board: None,
            blocking_routes: false,
        }
    }

    /// A loop's environment as `options` configure it.
    pub fn configured(backend: &'static str, options: &DriverOptions) -> LoopEnv {
        LoopEnv {
            board: options.board.clone(),
            blocking_routes: options.config.blocking_routes,
            ..LoopEnv::new(backend)
        }
    }

    /// Publishes this loop's counters on the board, if there is one.
    pub fn publish(&self) {
        if let Some(board) = &self.board {
            board.publish(&self.counters);
        }
    }
}

impl Env for LoopEnv {
    fn http_date(&self) -> &[u8] {
        self.date.as_bytes()
    }

    fn stats_json(&self) -> String {
        match &self.board {
            Some(board) => {
                self.publish();
                let (totals, workers) = board.totals();
                stats::stats_json(self.backend, "total", workers, &totals)
            }
            None => stats::stats_json(self.backend, "process", 1, &self.counters),
        }
    }

    fn count_request(&mut self) {
        self.counters.requests += 1;
    }

    fn blocking_routes(&self) -> bool {
        self.blocking_routes
    }
}
