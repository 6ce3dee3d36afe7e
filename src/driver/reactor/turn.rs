//! One connection of the reactor and its turn: flush, let the protocol produce, read, until
//! nothing more can be done now; and lingering after the last response.
//!
//! With workers ([`super::offload`]), "let the protocol produce" is handing the session and the
//! new input to a worker instead; the connection is then away until the job is back, and is
//! neither read nor timed meanwhile. It reads again only once its output is flushed, so a
//! connection has one job, and at most one window of output, at a time.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::super::kit::{
    self, Stamps, Timed, LINGER_BYTES, LINGER_TIME, MAX_BUFFERED_INPUT, READ_CHUNK,
};
use super::super::{Clock, LoopEnv, Timeouts, NEVER};
use super::offload::{Hook, Job};
use crate::backend::{Features, Interest, Poller, Token};
use crate::proto::{Proto, Session, Status, OUTPUT_HIGH_WATER};
use crate::stats::Counters;
use crate::sys;

/// Bytes one connection may read in one turn before others get theirs.
const READ_BUDGET_PER_TURN: usize = 256 * 1024;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Serving,
    /// Output flushed and write side shut down; input is read and discarded until EOF or timeout.
    Lingering,
}

pub(super) struct ReadyConn {
    pub(super) fd: OwnedFd,
    pub(super) session: Session,
    /// Received and not yet consumed by the protocol. Empty and unallocated while idle.
    pub(super) input: Vec<u8>,
    /// Produced and not yet sent: `output[sent..]`. Empty and unallocated while idle.
    pub(super) output: Vec<u8>,
    pub(super) sent: usize,
    pub(super) registered: Interest,
    /// Readiness we believe in until EAGAIN says otherwise.
    pub(super) read_ready: bool,
    pub(super) write_ready: bool,
    pub(super) peer_eof: bool,
    /// A wait has reported a hangup (RDHUP, HUP, ERR): from then on read until EOF or error.
    pub(super) hangup_seen: bool,
    pub(super) phase: Phase,
    /// With workers: the session is with a worker (this one holds a placeholder).
    pub(super) away: bool,
    /// With workers: input has arrived (or output has drained) that no worker has seen yet.
    pub(super) fresh_input: bool,
    /// With workers: a request was refused (queue full); close once the refusal is sent.
    pub(super) refused: bool,
    /// With workers: echo input is waiting for a worker (the queue was full). Echo has no
    /// refusal to send, so the connection stops reading instead: the kernel's buffers and TCP's
    /// window hold the client back until a worker is free.
    pub(super) parked: bool,
    pub(super) lingered_bytes: usize,
    pub(super) stamps: Stamps,
}

impl Timed for ReadyConn {
    fn stamps(&mut self) -> &mut Stamps {
        &mut self.stamps
    }

    fn deadline(&self, timeouts: &Timeouts) -> u64 {
        if self.away || self.parked {
            // The request is being answered (or waits for us, not for the peer); its deadline
            // is set again when the job is back.
            return NEVER;
        }
        self.stamps.deadline(timeouts, self.unsent())
    }
}

impl ReadyConn {
    pub(super) fn pending_output(&self) -> usize {
        self.output.len() - self.sent
    }

    /// Output waits to be sent: in the buffer, or lent by the session (a `/bytes` body sent
    /// from static memory, see [`Session::static_output`]).
    pub(super) fn unsent(&self) -> bool {
        self.pending_output() > 0 || !self.session.static_output().is_empty()
    }

    pub(super) fn is_idle(&self) -> bool {
        !self.away
            && self.input.is_empty()
            && self.pending_output() == 0
            && !self.session.has_pending_output()
    }

    /// Whether the protocol may produce (and so input be read) now: never while the session is
    /// with a worker. With workers for every request, only once the output is flushed: the
    /// job's output becomes the connection's whole output.
    /// A lent window counts as a full buffer: the body goes out first, and nothing is read
    /// meanwhile, as when it was copied into the buffer up to the mark.
    fn has_room(&self, offloading: bool) -> bool {
        if self.away || !self.session.static_output().is_empty() {
            false
        } else if offloading {
            self.pending_output() == 0 && !self.parked
        } else {
            self.pending_output() < OUTPUT_HIGH_WATER
        }
    }

    /// The connection is to flush, shut down writing and linger.
    fn closing(&self) -> bool {
        self.refused || self.session.status() == Status::CloseAfterFlush
    }
}

/// The loop's shared scratch buffers and its protocol environment: everything a connection's
/// turn needs besides the connection itself.
pub(super) struct TurnContext {
    pub(super) env: LoopEnv,
    pub(super) clock: Clock,
    pub(super) edge_triggered: bool,
    pub(super) scratch_in: Vec<u8>,
    pub(super) scratch_out: Vec<u8>,
    /// The workers that run the protocol, if this loop hands it off (the pool).
    pub(super) offload: Option<Hook>,
}

/// What a connection's turn decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Keep,
    /// More work is ready than the turn's budget allowed.
    KeepPending,
    Close,
}

/// What a wake-up must change for it to count as progress: bytes moved either way, the peer's
/// EOF seen, the phase or the interest set changed. (A closed connection has progressed too.)
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Progress {
    bytes_in: u64,
    bytes_out: u64,
    requests: u64,
    lingered_bytes: usize,
    peer_eof: bool,
    phase: Phase,
    registered: Interest,
}

impl Progress {
    pub(super) fn of(conn: &ReadyConn, counters: &Counters) -> Progress {
        Progress {
            bytes_in: counters.bytes_in,
            bytes_out: counters.bytes_out,
            requests: counters.requests,
            lingered_bytes: conn.lingered_bytes,
            peer_eof: conn.peer_eof,
            phase: conn.phase,
            registered: conn.registered,
        }
    }
}

/// One connection's turn: flush, produce, read, until nothing more can be done now or the turn's
/// budget is spent.
pub(super) fn turn(conn: &mut ReadyConn, token: Token, shared: &mut TurnContext) -> Verdict {
    let mut budget = READ_BUDGET_PER_TURN;
    let fd = conn.fd.as_raw_fd();
    if conn.phase == Phase::Lingering {
        return linger(conn, shared);
    }
    if conn.away && conn.pending_output() == 0 {
        return Verdict::Keep; // nothing to do until its job is back
    }
    // The pool: every request goes to the workers. (With `--offload`, only blocking work does.)
    let offloading = shared.offload.as_ref().is_some_and(|h| h.every_request);
    loop {
        // 1. Send what is pending: the buffer, then what the session lends (a `/bytes` body,
        // sent from static memory in windows of up to 256 KiB with no copy), in one call.
        let lent = conn.session.static_output();
        if (conn.pending_output() > 0 || !lent.is_empty()) && conn.write_ready {
            shared.env.counters.syscalls.writes += 1;
            // With --workers: published before anything is sent, so that /stats answered by
            // another worker already counts every request (and write) whose response a client
            // has seen. Without a board this is one branch.
            shared.env.publish();
            match sys::send_pair(fd, &conn.output[conn.sent..], lent) {
                Ok(n) => {
                    shared.env.counters.bytes_out += n as u64;
                    conn.stamps.last_activity = shared.clock.now_ms;
                    let buffered = n.min(conn.pending_output());
                    conn.session.static_output_sent(n - buffered);
                    conn.sent += buffered;
                    if conn.sent == conn.output.len() {
                        conn.output.clear();
                        conn.sent = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.write_ready = false,
                Err(_) => return Verdict::Close,
            }
            continue;
        }
        // 2. Let the protocol turn buffered input (or a streamed body) into output: here, or
        // (with workers) on a worker, when something new has come since the last job.
        let room = conn.has_room(offloading);
        if offloading {
            if room && (conn.fresh_input || conn.session.has_pending_output()) {
                match hand_off(conn, token, shared) {
                    HandOff::Taken | HandOff::Parked => {
                        return finish_turn(conn, shared, Verdict::Keep)
                    }
                    HandOff::Refused => continue, // send the refusal
                }
            }
        } else if room && (!conn.input.is_empty() || conn.session.has_pending_output()) {
            if conn.output.capacity() == 0 {
                std::mem::swap(&mut conn.output, &mut shared.scratch_out);
            } else if conn.sent > 0 {
                // The protocol measures `output.len()` against the high-water mark, so it must
                // see only what is still pending.
                conn.output.drain(..conn.sent);
                conn.sent = 0;
            }
            let produced_before = conn.output.len();
            let consumed = conn
                .session
                .advance(&conn.input, &mut conn.output, &mut shared.env);
            conn.input.drain(..consumed);
            if consumed > 0 {
                // A request head ended; if another has begun behind it, its clock starts now.
                conn.stamps.head_started = NEVER;
            }
            // Blocking work (`/sleep`, `/work`): run here, stalling every connection of the
            // loop, unless helpers take it (`--offload`).
            if conn.session.blocking_work().is_some() {
                if shared.offload.is_some() {
                    match hand_off(conn, token, shared) {
                        HandOff::Taken | HandOff::Parked => {
                            return finish_turn(conn, shared, Verdict::Keep)
                        }
                        HandOff::Refused => continue, // send the refusal
                    }
                }
                kit::run_blocking_inline(&mut conn.session, &mut conn.output, &mut shared.env);
                // The loop stood still meanwhile: what it stamps next is stamped now.
                shared.clock.tick();
            }
            if consumed > 0 || conn.output.len() > produced_before {
                continue;
            }
        }
        if conn.closing() {
            if conn.pending_output() > 0 {
                break; // wait for writability
            }
            return start_lingering(conn, shared);
        }
        // 3. Read more.
        if room && conn.read_ready && !conn.peer_eof {
            if budget == 0 {
                return finish_turn(conn, shared, Verdict::KeepPending);
            }
            if conn.input.capacity() == 0 {
                std::mem::swap(&mut conn.input, &mut shared.scratch_in);
            }
            if conn.input.len() > MAX_BUFFERED_INPUT {
                log::warn!(
                    "fd {fd}: protocol left {} bytes unconsumed; closing",
                    conn.input.len()
                );
                return Verdict::Close;
            }
            shared.env.counters.syscalls.reads += 1;
            let want = READ_CHUNK.min(budget);
            match sys::read_append(fd, &mut conn.input, want) {
                Ok(0) => conn.peer_eof = true,
                Ok(n) => {
                    shared.env.counters.bytes_in += n as u64;
                    conn.stamps.last_activity = shared.clock.now_ms;
                    conn.fresh_input = true;
                    budget = budget.saturating_sub(n);
                    // A short read emptied the socket buffer (epoll(7)), so skip the read that
                    // would only say EAGAIN. Level-triggered: if more (or a FIN) is there, the
                    // next wait reports it again. Edge-triggered: whatever arrives after this
                    // read is a new edge; only a FIN already reported (hangup) has had its one
                    // edge, so then we read on to EOF.
                    if n < want && !(shared.edge_triggered && conn.hangup_seen) {
                        conn.read_ready = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.read_ready = false,
                Err(_) => return Verdict::Close,
            }
            continue;
        }
        break;
    }
    if conn.peer_eof
        && !conn.away
        && conn.pending_output() == 0
        && !conn.session.has_pending_output()
        && !conn.parked
    {
        // Everything the peer sent before its half-close has been answered.
        return Verdict::Close;
    }
    finish_turn(conn, shared, Verdict::Keep)
}

/// What became of a connection's new input at the hand-off.
#[derive(Debug, PartialEq, Eq)]
enum HandOff {
    /// A worker has it.
    Taken,
    /// The workers were full: a refusal is in the output.
    Refused,
    /// The workers were full and there is no refusal to send (echo): it waits for a worker.
    Parked,
}

/// Hands the connection's session and input to a worker (with `--offload`: a session paused on
/// blocking work, and the input behind it). When the workers already have as many
/// jobs as they may, an HTTP request is refused instead (a 503 with `Connection: close`, and the
/// connection closes after it, since the loop does not know where the refused request ends);
/// echo input waits in line for a worker ([`Hook::parked`]), every byte kept.
fn hand_off(conn: &mut ReadyConn, token: Token, shared: &mut TurnContext) -> HandOff {
    let Some(hook) = shared.offload.as_mut() else {
        unreachable!("hand_off is called only with workers");
    };
    let outstanding = hook.workers.outstanding() as u64;
    if outstanding >= hook.workers.capacity() as u64 && hook.proto == Proto::Echo {
        conn.parked = true;
        hook.parked.push_back(token);
        shared.env.counters.pool_parked += 1;
        return HandOff::Parked;
    }
    conn.fresh_input = false;
    if outstanding >= hook.workers.capacity() as u64 {
        shared.env.counters.pool_rejected += 1;
        hook.rejections.warn(format_args!(
            "refusing a request: the workers are {outstanding} requests behind"
        ));
        conn.input.clear();
        conn.refused = true;
        if conn.output.capacity() == 0 {
            std::mem::swap(&mut conn.output, &mut shared.scratch_out);
        }
        conn.output
            .extend_from_slice(&Session::refusal(hook.proto, &shared.env));
        return HandOff::Refused;
    }
    // The job gets the input at its size; a big read buffer stays with the loop.
    let input = if conn.input.capacity() >= READ_CHUNK && shared.scratch_in.capacity() == 0 {
        let exact = conn.input.clone();
        conn.input.clear();
        std::mem::swap(&mut conn.input, &mut shared.scratch_in);
        exact
    } else {
        std::mem::take(&mut conn.input)
    };
    // The copy of the counters is taken before this job is counted: a `/stats` it answers
    // shows what was with the workers besides itself.
    let env = LoopEnv {
        backend: shared.env.backend,
        date: shared.env.date.clone(),
        counters: shared.env.counters,
        board: shared.env.board.clone(),
        blocking_routes: shared.env.blocking_routes,
    };
    let counters = &mut shared.env.counters;
    if hook.every_request {
        counters.pool_jobs += 1;
        counters.pool_queue_depth = outstanding + 1;
        counters.pool_queue_high_water = counters.pool_queue_high_water.max(outstanding + 1);
    } else {
        counters.blocking_offloaded += 1;
        counters.offload_queue_depth = outstanding + 1;
        counters.offload_queue_high_water = counters.offload_queue_high_water.max(outstanding + 1);
        // With --workers: the hand-off shows in `/stats` on the other workers now, not when
        // this connection next sends something.
        shared.env.publish();
    }
    let session = std::mem::replace(&mut conn.session, Session::new(hook.proto));
    hook.workers.submit(Job {
        token,
        session,
        input,
        env,
    });
    conn.away = true;
    HandOff::Taken
}

/// Gives lent buffers back to the loop when the connection no longer needs them.
pub(super) fn finish_turn(
    conn: &mut ReadyConn,
    shared: &mut TurnContext,
    verdict: Verdict,
) -> Verdict {
    let awaiting_head = conn.session.awaiting_head();
    conn.stamps
        .track_head(awaiting_head, !conn.input.is_empty(), shared.clock.now_ms);
    if conn.pending_output() == 0 && conn.output.capacity() > 0 {
        conn.output.clear();
        conn.sent = 0;
        if shared.scratch_out.capacity() == 0 {
            std::mem::swap(&mut conn.output, &mut shared.scratch_out);
        } else {
            conn.output = Vec::new();
        }
    }
    if conn.input.is_empty() {
        if conn.input.capacity() > 0 && shared.scratch_in.capacity() == 0 {
            std::mem::swap(&mut conn.input, &mut shared.scratch_in);
        }
        conn.input = Vec::new();
    } else if conn.input.capacity() >= READ_CHUNK && shared.scratch_in.capacity() == 0 {
        // Keep only the partial request, right-sized; the big buffer goes back to the loop.
        let partial = conn.input.clone();
        conn.input.clear();
        std::mem::swap(&mut conn.input, &mut shared.scratch_in);
        conn.input = partial;
    }
    verdict
}

pub(super) fn start_lingering(conn: &mut ReadyConn, shared: &mut TurnContext) -> Verdict {
    let _ = sys::shutdown_write(conn.fd.as_raw_fd());
    conn.phase = Phase::Lingering;
    conn.stamps.linger_until = shared.clock.now_ms + LINGER_TIME.as_millis() as u64;
    conn.input.clear();
    if conn.peer_eof {
        return Verdict::Close;
    }
    linger(conn, shared)
}

/// Reads and discards until the peer closes, too much arrives, or the deadline passes.
pub(super) fn linger(conn: &mut ReadyConn, shared: &mut TurnContext) -> Verdict {
    let mut discard = [0u8; 4096];
    while conn.read_ready {
        shared.env.counters.syscalls.reads += 1;
        match sys::read(conn.fd.as_raw_fd(), &mut discard) {
            Ok(0) => return Verdict::Close,
            Ok(n) => {
                conn.lingered_bytes += n;
                if conn.lingered_bytes > LINGER_BYTES {
                    return Verdict::Close;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.read_ready = false,
            Err(_) => return Verdict::Close,
        }
    }
    finish_turn(conn, shared, Verdict::Keep)
}

/// Level-triggered backends are told exactly what the connection can act on now (asking for
/// readability while the output is full would spin); edge-triggered ones keep both interests.
/// With workers, a connection whose job is out keeps its read interest until the peer sends
/// more (usually it waits for the response): one `epoll_ctl` per request saved, and one paid only
/// by a client that pipelines.
pub(super) fn update_interest(
    poller: &mut dyn Poller,
    features: Features,
    offloading: bool,
    conn: &mut ReadyConn,
    token: Token,
) -> io::Result<()> {
    if features.edge_triggered {
        return Ok(());
    }
    let can_read = match conn.phase {
        Phase::Lingering => true,
        Phase::Serving => {
            !conn.away && !conn.peer_eof && !conn.closing() && conn.has_room(offloading)
        }
    };
    let read = if conn.away && !conn.read_ready {
        conn.registered.read
    } else {
        can_read && !conn.read_ready
    };
    let wanted = Interest {
        read,
        write: conn.unsent(),
    };
    if wanted != conn.registered {
        poller.reregister(conn.fd.as_raw_fd(), token, wanted)?;
        conn.registered = wanted;
    }
    Ok(())
}

pub(super) fn give_back_buffers(mut conn: ReadyConn, shared: &mut TurnContext) {
    for (mine, scratch) in [
        (&mut conn.input, &mut shared.scratch_in),
        (&mut conn.output, &mut shared.scratch_out),
    ] {
        if scratch.capacity() == 0 && mine.capacity() > 0 {
            mine.clear();
            std::mem::swap(mine, scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection is its slab entry and nothing else: keep it small (the budget for the
    /// event backends is 256 bytes of user-space memory per idle connection).
    #[test]
    fn idle_connection_entry_is_small() {
        let entry = std::mem::size_of::<(u32, Option<ReadyConn>)>();
        eprintln!("slab entry: {entry} bytes");
        assert!(entry <= 160, "slab entry grew to {entry} bytes");
    }
}
