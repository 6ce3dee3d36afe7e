//! Connection I/O of the event loop: connecting, reading and decoding responses, matching them
//! with the requests in flight, writing, closing.

use std::io;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use c10k::backend::{Event, Interest, Poller};
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use socket2::Socket;

use super::{Clock, Close, Engine, Phase, SIGNAL_TOKEN, TIMER_TOKEN, UNSENT};
use crate::client::{Client, Outcome};
use crate::stats::record_ns;
use crate::sys;

impl<C: Client, K: Clock> Engine<C, K> {
    pub(super) fn token(&self, idx: usize) -> u64 {
        (u64::from(self.conns[idx].gen) << 32) | idx as u64
    }

    pub(super) fn start_connect(&mut self, idx: usize, now: u64) {
        self.stats.conns.attempts += 1;
        // Worked out now, not kept per connection: 32 bytes less for each.
        let source = self.plan.source_of(idx);
        let connected = sys::connect(self.plan.target, source);
        if self.plan.schedule.is_some() {
            if let Ok(sys::Connect::Done(s) | sys::Connect::InProgress(s)) = &connected {
                // The open loop reads responses up to a tick after they came
                // (Engine::reads_wait_for_tick) and dates them by the kernel's receive timestamp.
                // Without one a read is dated when it returns.
                let _ = setsockopt(s, sockopt::ReceiveTimestampns, &true);
            }
        }
        match connected {
            Ok(sys::Connect::Done(s)) => {
                let token = self.token(idx);
                if let Err(e) = self.poller.register(s.as_raw_fd(), token, Interest::READ) {
                    return self.connect_failed(&e);
                }
                let c = &mut self.conns[idx];
                c.socket = Some(s);
                c.phase = Phase::Connecting { since: now };
                self.connecting += 1;
                self.established(idx, now);
            }
            Ok(sys::Connect::InProgress(s)) => {
                let token = self.token(idx);
                if let Err(e) = self.poller.register(s.as_raw_fd(), token, Interest::WRITE) {
                    return self.connect_failed(&e);
                }
                let c = &mut self.conns[idx];
                c.socket = Some(s);
                c.phase = Phase::Connecting { since: now };
                self.connecting += 1;
            }
            Err(e) => self.connect_failed(&e),
        }
    }

    pub(super) fn connect_failed(&mut self, e: &io::Error) {
        let c = &mut self.stats.conns;
        c.failed += 1;
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => c.econnrefused += 1,
            Some(libc::ETIMEDOUT) => c.etimedout += 1,
            Some(libc::EADDRNOTAVAIL) => c.eaddrnotavail += 1,
            Some(libc::EMFILE) | Some(libc::ENFILE) => c.emfile += 1,
            _ => c.other_connect_error += 1,
        }
        self.iv.errors += 1;
        log::debug!("connect failed: {e}");
    }

    /// A connecting slot gives up (error or timeout): closed, not retried.
    pub(super) fn abandon_connect(&mut self, idx: usize, e: &io::Error) {
        let c = &mut self.conns[idx];
        c.socket = None;
        c.phase = Phase::Idle;
        c.gen = c.gen.wrapping_add(1);
        self.connecting -= 1;
        self.connect_failed(e);
    }

    pub(super) fn established(&mut self, idx: usize, now: u64) {
        let c = &mut self.conns[idx];
        let Phase::Connecting { since } = c.phase else {
            return;
        };
        c.phase = Phase::Open;
        self.client.reset(&mut c.state);
        if !c.ever_open {
            c.ever_open = true;
            self.stats.conns.established += 1;
        }
        self.connecting -= 1;
        self.open += 1;
        record_ns(&mut self.stats.connect, now - since);
        if self.ring.is_some() {
            self.uring_opened(idx);
        }
        if self.plan.hold {
            if let Some(p) = self.plan.ping {
                let gen = self.conns[idx].gen;
                self.pings.push_back((now + p, idx as u32, gen));
            }
        } else if self.plan.schedule.is_some() {
            self.push_free(idx);
            self.dispatch(now);
        } else {
            self.refill(idx, now);
        }
    }

    pub(super) fn handle(&mut self, ev: Event) {
        if ev.token == SIGNAL_TOKEN {
            self.interrupted = true;
            let _ = self.poller.deregister(self.signals.as_fd().as_raw_fd());
            return;
        }
        if ev.token == TIMER_TOKEN {
            let _ = self.timer.wait(); // clears the expiry; EAGAIN if already cleared
            self.count_lag(self.armed);
            self.armed = u64::MAX;
            return;
        }
        let idx = (ev.token & 0xffff_ffff) as usize;
        let gen = (ev.token >> 32) as u32;
        if self.conns.get(idx).is_none_or(|c| c.gen != gen) {
            return; // stale: the slot was closed since
        }
        // An open connection's reads and writes read the clock themselves, when they happen.
        match self.conns[idx].phase {
            Phase::Idle => {}
            Phase::Connecting { .. } => {
                let now = self.now();
                if !(ev.writable || ev.hangup || ev.readable) {
                    return;
                }
                let err = match self.conns[idx].socket.as_ref().map(Socket::take_error) {
                    Some(Ok(None)) => None,
                    Some(Ok(Some(e))) | Some(Err(e)) => Some(e),
                    None => return,
                };
                if let Some(e) = err {
                    return self.abandon_connect(idx, &e);
                }
                let fd = self.conns[idx].socket.as_ref().map(AsRawFd::as_raw_fd);
                let token = self.token(idx);
                if let Some(fd) = fd {
                    if let Err(e) = self.poller.reregister(fd, token, Interest::READ) {
                        return self.abandon_connect(idx, &e);
                    }
                }
                self.established(idx, now);
            }
            Phase::Open => {
                if ev.readable {
                    self.on_readable(idx);
                }
                if ev.writable && self.conns[idx].gen == gen && self.conns[idx].want_write {
                    self.flush(idx);
                }
            }
        }
    }

    /// Reads until the socket is drained. The clock is read after every read that returned
    /// something: the responses it completes (and the requests that follow them in closed
    /// loop) take that instant, since a read returns all its bytes at once; a turn that reads
    /// several times does not give them all the turn's first instant.
    pub(super) fn on_readable(&mut self, idx: usize) {
        loop {
            let Some(fd) = self.conns[idx].socket.as_ref().map(AsRawFd::as_raw_fd) else {
                return;
            };
            let (read, stamp) = if self.plan.schedule.is_some() {
                match read_stamped(fd, &mut self.rbuf, &mut self.cmsg) {
                    Ok((n, stamp)) => (Ok(n), stamp),
                    Err(e) => (Err(e), None),
                }
            } else {
                (c10k::sys::read(fd, &mut self.rbuf), None)
            };
            if matches!(&read, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                return;
            }
            let filled = matches!(read, Ok(n) if n == self.rbuf.len());
            let now = self.now();
            // When the last byte read came (not after now): the completion time of the responses
            // it completes.
            let came = stamp.map_or(now, |s| self.clock.received(s).min(now));
            if !self.received(idx, read, now, came) || !filled {
                return;
            }
        }
    }

    /// Handles what one read of connection `idx` returned at `now`: bytes in `rbuf[..n]`, EOF
    /// or an error; the responses they complete completed at `came` (at or before `now`).
    /// Returns whether the connection is still the same one, open.
    pub(super) fn received(
        &mut self,
        idx: usize,
        read: io::Result<usize>,
        now: u64,
        came: u64,
    ) -> bool {
        let gen = self.conns[idx].gen;
        let n = match read {
            Ok(0) => {
                let c = &mut self.conns[idx];
                if let Some(o) = self.client.on_eof(&mut c.state) {
                    self.outcomes.push(o);
                    self.complete_all(idx, now);
                }
                self.close(idx, Close::Eof, now);
                return false;
            }
            Ok(n) => n,
            Err(_) => {
                self.close(idx, Close::Reset, now);
                return false;
            }
        };
        self.iv.bytes_received += n as u64;
        if self.in_window(now) {
            self.stats.reqs.bytes_received += n as u64;
        }
        if let Err(e) = self.decode(idx, n) {
            log::debug!("protocol error: {}", e.0);
            self.stats.reqs.protocol_errors += 1;
            self.iv.errors += 1;
            self.complete_all(idx, now);
            self.close(idx, Close::Error, now);
            return false;
        }
        let responses = self.outcomes.len();
        let closing = self.complete_all(idx, came);
        if self.conns[idx].gen != gen {
            return false;
        }
        if closing {
            self.close(idx, Close::Error, now);
            return false;
        }
        if responses > 0 {
            if self.client.close_after_response() || self.conns[idx].peer_closing {
                self.close(idx, Close::Done, now);
                return false;
            }
            if self.plan.schedule.is_some() {
                self.push_free(idx);
                self.dispatch(now);
            } else if !self.plan.hold {
                self.refill(idx, now);
            }
        }
        self.conns[idx].gen == gen
    }

    /// Decodes `rbuf[..n]` (after any carried bytes) into `self.outcomes`.
    pub(super) fn decode(&mut self, idx: usize, n: usize) -> Result<(), crate::client::ProtoError> {
        let c = &mut self.conns[idx];
        let from_carry = !c.carry.is_empty();
        if from_carry {
            c.carry.extend_from_slice(&self.rbuf[..n]);
        }
        let data: &[u8] = if from_carry {
            &c.carry
        } else {
            &self.rbuf[..n]
        };
        let mut pos = 0;
        let result = loop {
            match self.client.decode(&mut c.state, &data[pos..]) {
                Ok(d) => {
                    pos += d.consumed;
                    if d.last {
                        // Whatever follows the last response is not an answer to anything.
                        if let Some(o) = d.outcome {
                            self.outcomes.push(o);
                        }
                        c.peer_closing = true;
                        break Ok(());
                    }
                    match d.outcome {
                        Some(o) => self.outcomes.push(o),
                        None if d.consumed == 0 || pos == data.len() => break Ok(()),
                        None => {}
                    }
                }
                Err(e) => break Err(e),
            }
        };
        if from_carry {
            c.carry.drain(..pos);
        } else {
            c.carry.extend_from_slice(&self.rbuf[pos..n]);
        }
        result
    }

    /// Matches the decoded outcomes with the oldest requests in flight. Returns true when the
    /// connection must close (a corrupted echo, or a response nobody asked for).
    pub(super) fn complete_all(&mut self, idx: usize, now: u64) -> bool {
        let mut close = false;
        let outcomes = std::mem::take(&mut self.outcomes);
        for &o in &outcomes {
            let c = &mut self.conns[idx];
            // The oldest request asked is a timed-out one (its answer is late) or the oldest in
            // flight.
            let req = if c.stale > 0 {
                c.stale -= 1;
                None
            } else if let Some(r) = c.inflight.pop_front() {
                c.popped();
                Some(r)
            } else {
                self.stats.reqs.protocol_errors += 1;
                self.iv.errors += 1;
                close = true;
                break;
            };
            match o {
                Outcome::Corrupted => {
                    self.stats.reqs.corrupted += 1;
                    self.iv.errors += 1;
                    close = true;
                }
                Outcome::Reordered => {
                    self.stats.reqs.reordered += 1;
                    self.iv.errors += 1;
                }
                _ => {}
            }
            let Some(req) = req else {
                self.stats.reqs.late += 1;
                continue;
            };
            // A receive timestamp read back through the real clock can land a little before the
            // send (the two clocks are read apart): an answer never comes before its request.
            let at = if req.sent == UNSENT {
                now
            } else {
                now.max(req.sent)
            };
            self.unresolved -= 1;
            self.iv.completed += 1;
            if self.in_interval_latency(req.intended, at) {
                record_ns(&mut self.iv_latency, at.saturating_sub(req.intended));
            }
            self.stats.reqs.answered_in_window += u64::from(self.in_window(at));
            if !self.in_window(req.intended) {
                continue;
            }
            let r = &mut self.stats.reqs;
            r.completed += 1;
            // Answered after the window's end, in its drain.
            r.drained += u64::from(at >= self.measure_end);
            self.last_answer = self.last_answer.max(at);
            match o {
                Outcome::Status(s) => match s {
                    100..=199 => r.status_1xx += 1,
                    200..=299 => r.status_2xx += 1,
                    300..=399 => r.status_3xx += 1,
                    400..=499 => r.status_4xx += 1,
                    500..=599 => r.status_5xx += 1,
                    _ => r.status_other += 1,
                },
                Outcome::Verified => r.verified += 1,
                Outcome::Corrupted | Outcome::Reordered => {}
            }
            record_ns(&mut self.stats.latency, at.saturating_sub(req.intended));
            if let Some(p) = self.stats.per_path.get_mut(req.class as usize) {
                p.completed += 1;
                p.status_2xx += u64::from(matches!(o, Outcome::Status(200..=299)));
                record_ns(&mut p.latency, at.saturating_sub(req.intended));
            }
            // Answered before any of it was written (a peer that answers unasked): no wait.
            let sent = if req.sent == UNSENT { at } else { req.sent };
            record_ns(&mut self.stats.service, at.saturating_sub(sent));
        }
        self.outcomes = outcomes;
        self.outcomes.clear();
        if self.plan.hold {
            self.conns[idx].release_idle_buffers();
        }
        close
    }

    /// Writes the connection's output until it is empty or the socket is full. The clock is read
    /// before every send.
    pub(super) fn flush(&mut self, idx: usize) {
        if self.ring.is_some() {
            return self.uring_flush(idx);
        }
        let c = &mut self.conns[idx];
        let Some(fd) = c.socket.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        while c.out_pos < c.out.len() {
            // The instant the bytes are handed to the kernel: a request whose first byte goes
            // now is sent now, however long it waited in the output behind a full socket.
            let t = self.clock.now();
            match c10k::sys::send(fd, &c.out[c.out_pos..]) {
                Ok(n) => {
                    c.out_pos += n;
                    c.written(t);
                    if t >= self.measure_start && t < self.measure_end {
                        self.stats.reqs.bytes_sent += n as u64;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !c.want_write {
                        c.want_write = true;
                        let token = (u64::from(c.gen) << 32) | idx as u64;
                        if self.poller.reregister(fd, token, Interest::BOTH).is_err() {
                            return self.close(idx, Close::Reset, t);
                        }
                    }
                    return;
                }
                Err(_) => return self.close(idx, Close::Reset, t),
            }
        }
        c.out.clear();
        c.out_pos = 0;
        if c.want_write {
            c.want_write = false;
            let token = (u64::from(c.gen) << 32) | idx as u64;
            if self.poller.reregister(fd, token, Interest::READ).is_err() {
                let now = self.now();
                self.close(idx, Close::Reset, now);
            }
        }
    }

    pub(super) fn close(&mut self, idx: usize, why: Close, now: u64) {
        let c = &mut self.conns[idx];
        if c.phase != Phase::Open {
            return;
        }
        if self.ring.is_some() {
            self.uring_closed(idx);
        }
        let c = &mut self.conns[idx];
        if !c.carry.is_empty() || self.client.mid_response(&c.state) {
            self.stats.reqs.truncated += 1;
        }
        let mut aborted = 0;
        let mut aborted_in_window = 0;
        for r in c.inflight.drain(..) {
            aborted += 1;
            if r.intended >= self.measure_start && r.intended < self.measure_end {
                aborted_in_window += 1;
            }
        }
        c.stale = 0;
        c.unsent = 0;
        c.socket = None; // closing the descriptor also removes it from epoll
        c.phase = Phase::Idle;
        c.gen = c.gen.wrapping_add(1);
        c.out.clear();
        c.out_pos = 0;
        c.want_write = false;
        c.carry.clear();
        c.peer_closing = false;
        self.open -= 1;
        self.unresolved -= aborted;
        self.stats.reqs.aborted += aborted_in_window;
        let counters = &mut self.stats.conns;
        match why {
            Close::Eof => counters.closed_by_peer += 1,
            Close::Reset => counters.econnreset += 1,
            Close::Error => counters.closed_on_error += 1,
            Close::Timeout => counters.closed_on_timeout += 1,
            Close::Done => {}
        }
        if matches!(why, Close::Eof | Close::Reset | Close::Error) {
            self.iv.errors += 1;
        }
        // Before the run's start nothing may be sent yet, and the slot is reopened all the same.
        if self.plan.reconnect && (now < self.plan.origin || self.may_issue(now)) {
            self.start_connect(idx, now);
        }
    }
}

/// Reads into `buf` and returns, with the byte count, the kernel's receive timestamp of the last
/// byte read (SO_TIMESTAMPNS, CLOCK_REALTIME ns) when it gave one.
pub(super) fn read_stamped(
    fd: RawFd,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
) -> io::Result<(usize, Option<u64>)> {
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<()>(fd, &mut iov, Some(&mut *cmsg), MsgFlags::empty()) {
            Ok(m) => m,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut stamp = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmTimestampns(ts) = c {
                    stamp = Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64);
                }
            }
        }
        return Ok((msg.bytes, stamp));
    }
}
