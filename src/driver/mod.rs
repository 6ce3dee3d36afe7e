//! What every driver shares: the options it serves with, and the [`LoopEnv`] that gives the
//! protocol code its clock and counters.
//!
//! A driver owns sockets and turns readiness or completions into calls to
//! [`crate::proto::Session::advance`]. The readiness backends share one driver, the
//! [`crate::reactor`]; the models that do not fit the readiness contract have their own here.

pub mod threads;
pub mod uring;

use std::time::Duration;

use crate::date::HttpDate;
use crate::proto::{Env, Proto};
use crate::stats::{self, Counters};

/// How a driver serves, whatever its I/O model.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    pub proto: Proto,
    /// Connections beyond this are refused at once (HTTP: 503 first).
    pub max_conns: usize,
    /// After SIGINT/SIGTERM, how long in-flight responses may take before the driver exits anyway.
    pub shutdown_grace: Duration,
    /// Stack size of each connection's thread (threads backend).
    pub thread_stack_kib: usize,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            proto: Proto::Http,
            max_conns: usize::MAX,
            shutdown_grace: Duration::from_secs(10),
            thread_stack_kib: 64,
        }
    }
}

/// One event loop's (or one thread's) view of the server: the cached date and its own counters.
#[derive(Debug)]
pub struct LoopEnv {
    pub backend: &'static str,
    pub date: HttpDate,
    pub counters: Counters,
}

impl LoopEnv {
    pub fn new(backend: &'static str) -> LoopEnv {
        LoopEnv {
            backend,
            date: HttpDate::default(),
            counters: Counters::default(),
        }
    }
}

impl Env for LoopEnv {
    fn http_date(&self) -> &[u8] {
        self.date.as_bytes()
    }

    fn stats_json(&self) -> String {
        stats::stats_json(self.backend, "worker", 1, &self.counters)
    }

    fn count_request(&mut self) {
        self.counters.requests += 1;
    }
}
