//! How a run ends. A run that measures for `--duration` does not stop at the window's end: it
//! drains. No new request goes out, but the loop keeps reading, for at most [`MAX_DRAIN_NS`] (or
//! `--timeout`, when shorter), so that the answers to the window's requests are recorded even
//! when they come after it. Stopping at the window's end would censor exactly the slowest
//! requests: a server that stalls near the end would look better than it is. What the drain
//! does not see answered is counted (`in_flight_at_end`) and recorded in the latency histograms
//! at the age it reached, a lower bound like a timeout's. `--requests N`, `hold` and a signal
//! end the run as before.

use super::{Clock, Engine};
use crate::client::Client;
use crate::stats::record_ns;

/// The longest drain (unless `--timeout` is shorter): long enough for any answer a server that
/// keeps up at all would give, short enough that a dead server costs a run only this much more.
pub(crate) const MAX_DRAIN_NS: u64 = 2_000_000_000;

impl<C: Client, K: Clock> Engine<C, K> {
    /// Whether the run drains after its window: a `--duration` load run, not `--requests N`
    /// (it waits for its own requests) nor a hold (its pings are not a load).
    fn drains(&self) -> bool {
        !self.plan.hold && self.plan.requests.is_none() && self.plan.duration.is_some()
    }

    /// At or after the window's end: whether the run is over. The first call starts the drain.
    pub(super) fn drain_done(&mut self, now: u64) -> bool {
        if !self.drains() {
            return true;
        }
        let bound = self.plan.timeout.min(MAX_DRAIN_NS);
        let until = *self.drain_until.get_or_insert(self.measure_end + bound);
        // No connection open: nothing can be answered or sent any more (the drain reconnects
        // nothing).
        now >= until
            || self.open == 0
            || (self.unresolved == 0 && self.backlog(self.measure_end) == 0)
    }

    /// Open loop: the requests of this thread due before `end` and not issued yet (none were
    /// free to carry them); nothing in closed loop.
    pub(super) fn backlog(&self, end: u64) -> u64 {
        match &self.plan.schedule {
            Some(s) => s.due_by(end.saturating_sub(1)).saturating_sub(self.next_k),
            None => 0,
        }
    }

    /// Closes the interval that covers the end of the window at the window's end once the drain
    /// has begun, so that the drain's answers come in an interval of their own (the last, marked
    /// `drain`). Returns where the current interval starts.
    pub(super) fn drain_began(&mut self, tick_from: u64) -> u64 {
        if self.drain_until.is_none() || tick_from >= self.measure_end {
            return tick_from;
        }
        self.snapshot(tick_from, self.measure_end - tick_from);
        self.measure_end
    }

    /// The run is over at `now`: records what the drain left unanswered and sends the last
    /// interval (the drain's, or the window's own last part).
    pub(super) fn last_snapshot(&mut self, from: u64, now: u64) {
        self.record_unanswered(now);
        let len = now.saturating_sub(from);
        if len >= self.plan.interval / 10 || self.iv.completed > 0 || !self.iv_latency.is_empty() {
            self.snapshot(from, len);
        }
    }

    /// After a drain, the window's requests still unanswered (sent, or due in open loop) go into
    /// the latency histograms at their age now: a lower bound of their latency, like a
    /// timeout's. They are not `completed` nor `timeouts`: `in_flight_at_end` counts them.
    fn record_unanswered(&mut self, now: u64) {
        if self.drain_until.is_none() {
            return;
        }
        for idx in 0..self.conns.len() {
            for i in 0..self.conns[idx].inflight.len() {
                let r = self.conns[idx].inflight[i];
                if self.in_window(r.intended) {
                    self.record_lower_bound(r.intended, r.class, now);
                }
            }
        }
        if let Some(s) = self.plan.schedule {
            let last = self.next_k + self.backlog(self.measure_end);
            for k in self.next_k..last {
                let due = s.due(k);
                if self.in_window(due) {
                    let class = self.client.class_of(s.global(k));
                    self.record_lower_bound(due, class, now);
                }
            }
        }
    }

    fn record_lower_bound(&mut self, intended: u64, class: u8, now: u64) {
        let age = now.saturating_sub(intended);
        record_ns(&mut self.iv_latency, age);
        record_ns(&mut self.stats.latency, age);
        if let Some(p) = self.stats.per_path.get_mut(class as usize) {
            record_ns(&mut p.latency, age);
        }
    }

    /// Counts what is left at the end and closes everything.
    pub(super) fn finish(&mut self, now: u64) {
        let end = now.min(self.measure_end);
        self.stats.elapsed_s = end.saturating_sub(self.measure_start) as f64 / 1e9;
        if self.plan.hold {
            let held = match self.measure_end {
                u64::MAX => 0,
                e => end.saturating_sub(e - self.plan.duration.unwrap_or(0)),
            };
            self.stats.elapsed_s = held as f64 / 1e9;
        }
        self.stats.this.interrupted_threads = u64::from(self.interrupted);
        let mut in_flight = 0;
        for c in &self.conns {
            in_flight += c.inflight.len() as u64;
        }
        if self.may_issue_at_end() {
            in_flight += self.backlog(end);
        }
        if self.drain_until.is_some() {
            // How long the window's requests took to be served after it: to the last answer
            // (dated like its latency, by the kernel's stamp in open loop), or to the end when
            // some never were.
            let last = if in_flight > 0 { now } else { self.last_answer };
            self.stats.drain_s = last.saturating_sub(self.measure_end) as f64 / 1e9;
        }
        self.stats.reqs.in_flight_at_end = in_flight;
        self.stats.conns.open_at_end = self.open;
        for c in &mut self.conns {
            c.socket = None;
        }
    }

    fn may_issue_at_end(&self) -> bool {
        match self.plan.requests {
            Some(n) => self.measured_issued < n,
            None => true,
        }
    }
}
