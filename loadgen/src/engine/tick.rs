//! The open loop's ticks: below saturation the loop sleeps to its next tick instead of waking
//! for each response, and how late any wakeup came is counted.

use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::time::{clock_nanosleep, ClockId, ClockNanosleepFlags};

use super::{Clock, Engine, LATE_WAKEUP_NS};
use crate::client::Client;
use crate::stats::record_ns;

impl<C: Client, K: Clock> Engine<C, K> {
    /// Open loop below saturation: whether the loop sleeps to `deadline` and only then reads what
    /// came meanwhile, instead of waking for each response. Below saturation every response
    /// arrives alone, and a wakeup per response (a sleep, a switch back) cost more than all the
    /// rest of a request. So the loop wakes once per tick, when the next request is due within
    /// one, while a connection is free to send it on (when none is, a response is what it waits
    /// for). A response read up to a tick after it came still completes when it came: see
    /// [`Clock::received`]. Not the uring engine's: its sends go out only when it enters the
    /// ring, which a sleep would put off, and its receives carry no kernel stamps.
    pub(super) fn reads_wait_for_tick(&self, now: u64, deadline: u64) -> bool {
        let Some(s) = &self.plan.schedule else {
            return false;
        };
        self.ring.is_none()
            && s.tick > 0
            && self.started
            && self.connecting == 0
            && !self.free.is_empty()
            && deadline - now <= s.tick
    }

    /// Sleeps to `deadline` (no descriptor can wake the loop) and counts a late wakeup like the
    /// timer's.
    pub(super) fn sleep_until(&mut self, deadline: u64) {
        let now = self.now();
        if deadline > now {
            let t = TimeSpec::from_duration(Duration::from_nanos(deadline - now));
            // EINTR (a signal the caller did not block) only ends the sleep early.
            let _ = clock_nanosleep(ClockId::CLOCK_MONOTONIC, ClockNanosleepFlags::empty(), &t);
        }
        self.count_lag(deadline);
    }

    /// Records how late the loop woke for `deadline`.
    pub(super) fn count_lag(&mut self, deadline: u64) {
        let late = self.now().saturating_sub(deadline);
        record_ns(&mut self.stats.loop_lag, late);
        if late > LATE_WAKEUP_NS {
            self.stats.this.late_wakeups += 1;
            if self.in_window(deadline) {
                self.stats.this.measured_late_wakeups += 1;
            }
        }
    }
}
