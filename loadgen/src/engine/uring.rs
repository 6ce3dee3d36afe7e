//! `--engine uring`: the event loop of [`super`] with its connections' reads and writes moved
//! onto an io_uring. Everything else is the epoll engine's own code: connects, the open-loop
//! schedule, pings, timeouts, statistics and snapshots.
//!
//! What changes is where bytes cross into the kernel:
//! - Receives: one multishot recv per connection, armed when it is established, taking buffers
//!   from a provided-buffer ring (the server's [`BufRing`]). Each completion's bytes are copied
//!   into the loop's read buffer and handled by [`Engine::received`], as after a read(2).
//! - Sends: [`Engine::flush`] only notes the connection; at the start of the next turn its whole
//!   output becomes one send operation (its requests are sent then). The output is swapped into
//!   the connection's [`Slot`], which nothing touches until the send completes; what the loop
//!   queues meanwhile waits for that completion.
//! - Waiting: one io_uring_enter per turn submits every send and re-arm and waits for
//!   completions. epoll keeps the connects in progress, the timer and the signals; the ring
//!   polls the epoll descriptor and a completion of that poll runs one epoll turn without
//!   waiting. An established connection leaves epoll.
//!
//! Sockets are made blocking once established, as the server's uring driver keeps them: with
//! IORING_FEAT_FAST_POLL the kernel polls a socket that is not ready instead of failing with
//! EAGAIN.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use c10k::backend::Poller;
use c10k::driver::uring::BufRing;
use io_uring::types::{CancelBuilder, Fd, Fixed};
use io_uring::{cqueue, opcode, squeue, IoUring};

use super::{Clock, Close, Engine, Phase};
use crate::client::Client;

/// The provided-buffer group of the receives.
const BUF_GROUP: u16 = 0;
/// One receive buffer: a few HTTP responses, or a quarter of a 64 KiB echo message.
const BUF_SIZE: usize = 16 * 1024;
/// Submission queue entries: a turn that queues more submits what it has and goes on.
const SQ_ENTRIES: u32 = 1024;
/// How long the last turn waits for the kernel to hand back what was cancelled.
const DRAIN_WAIT: Duration = Duration::from_millis(100);
const DRAIN_TURNS: usize = 20;

/// What an operation is, in the top 4 bits of its `user_data`; then 28 bits of the
/// connection's generation and 32 of its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Recv = 1,
    Send = 2,
    /// The poll of the epoll descriptor.
    Epoll = 3,
    Cancel = 4,
}

const GEN_MASK: u32 = (1 << 28) - 1;

fn user_data(op: Op, idx: usize, gen: u32) -> u64 {
    ((op as u64) << 60) | (u64::from(gen & GEN_MASK) << 32) | (idx as u64 & 0xffff_ffff)
}

fn decode(ud: u64) -> (Option<Op>, usize, u32) {
    let op = match ud >> 60 {
        1 => Some(Op::Recv),
        2 => Some(Op::Send),
        3 => Some(Op::Epoll),
        4 => Some(Op::Cancel),
        _ => None,
    };
    (
        op,
        (ud & 0xffff_ffff) as usize,
        ((ud >> 32) as u32) & GEN_MASK,
    )
}

/// The ring's side of one connection slot.
#[derive(Default)]
struct Slot {
    /// The output being sent (taken from the connection), from `sent` on.
    sending: Vec<u8>,
    sent: usize,
    /// A send is in flight (of this generation): `sending` must not be touched.
    send_gen: Option<u32>,
    /// The generation whose multishot recv is armed.
    recv_gen: Option<u32>,
    /// In [`Ring::to_flush`].
    queued: bool,
}

/// The io_uring of one event-loop thread, and what it needs between turns.
pub(crate) struct Ring {
    /// Declared before `bufs` and `slots`: dropped first, with nothing in flight (see
    /// [`Ring::close`]), before the memory it was given.
    ring: IoUring,
    bufs: BufRing,
    slots: Vec<Slot>,
    /// Connections with output to send at the start of the next turn.
    to_flush: Vec<u32>,
    /// Connections whose receive ended (ENOBUFS, ...) and is armed again next turn.
    to_arm: Vec<u32>,
    cqes: Vec<(u64, i32, u32)>,
    epoll_armed: bool,
    /// Operations whose last completion has not been reaped.
    in_flight: usize,
}

/// Whether this engine can run here, and if not, why: what the server's uring driver needs
/// (`c10k::driver::uring::probe`), and the ring setup below (Linux ≥ 6.1).
pub(crate) fn probe() -> Result<(), String> {
    c10k::driver::uring::probe()?;
    new_ring(8)
        .map(drop)
        .map_err(|e| format!("no io_uring with SINGLE_ISSUER | DEFER_TASKRUN (Linux ≥ 6.1): {e}"))
}

/// Completions are produced only inside our own io_uring_enter (no task-work interrupts of the
/// loop, no locking for other issuers); the loop enters once per turn anyway.
fn new_ring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_cqsize(entries * 8)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(entries)
}

impl Ring {
    pub(super) fn new(conns: usize) -> io::Result<Ring> {
        let ring = new_ring(SQ_ENTRIES)?;
        // Slot `idx` of the ring's file table is connection `idx`'s socket while it is open: an
        // operation on a registered file skips the descriptor lookup and its reference count.
        ring.submitter().register_files_sparse(conns as u32)?;
        let count = (conns * 2).clamp(256, 32_768).next_power_of_two() as u16;
        let bufs = BufRing::new(&ring, count, BUF_SIZE, BUF_GROUP)?;
        Ok(Ring {
            ring,
            bufs,
            slots: (0..conns).map(|_| Slot::default()).collect(),
            to_flush: Vec::new(),
            to_arm: Vec::new(),
            cqes: Vec::with_capacity(1024),
            epoll_armed: false,
            in_flight: 0,
        })
    }

    /// Queues one submission, handing the queue to the kernel first if it is full.
    ///
    /// # Safety
    /// Every pointer the entry carries must stay valid until the operation's completion is reaped.
    unsafe fn push(&mut self, entry: &squeue::Entry) {
        self.in_flight += 1;
        loop {
            // SAFETY: the caller guarantees the entry's pointers outlive the operation.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                log::warn!("io_uring submit: {e}");
            }
        }
    }

    fn push_recv(&mut self, idx: usize, gen: u32) {
        let entry = opcode::RecvMulti::new(Fixed(idx as u32), BUF_GROUP)
            .build()
            .user_data(user_data(Op::Recv, idx, gen));
        // SAFETY: the recv writes only into buffers of the registered ring, which outlives it
        // (field order, and `close`).
        unsafe { self.push(&entry) };
        self.slots[idx].recv_gen = Some(gen);
    }

    /// Sends the rest of slot `idx`'s `sending`.
    fn push_send(&mut self, idx: usize, gen: u32) {
        let slot = &self.slots[idx];
        let data = &slot.sending[slot.sent..];
        let len = data.len().min(u32::MAX as usize) as u32;
        let entry = opcode::Send::new(Fixed(idx as u32), data.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(Op::Send, idx, gen));
        // SAFETY: `sending` is neither touched nor freed while `send_gen` is set (until this
        // send's completion), and outlives the ring (field order, and `close`).
        unsafe { self.push(&entry) };
        self.slots[idx].send_gen = Some(gen);
    }

    fn push_cancel_recv(&mut self, idx: usize, gen: u32) {
        let entry = opcode::AsyncCancel::new(user_data(Op::Recv, idx, gen))
            .build()
            .user_data(user_data(Op::Cancel, idx, gen));
        // SAFETY: a cancellation carries no pointer into our memory.
        unsafe { self.push(&entry) };
    }

    fn push_poll(&mut self, fd: RawFd) {
        let entry = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(user_data(Op::Epoll, 0, 0));
        // SAFETY: a poll carries no pointer into our memory.
        unsafe { self.push(&entry) };
        self.epoll_armed = true;
    }

    /// One io_uring_enter: submits what is queued and waits for a completion (`wait` None:
    /// without a limit; the timer's poll completes in time), then takes the completions.
    fn enter(&mut self, wait: Option<Duration>) -> io::Result<()> {
        self.enter_for(1, wait)
    }

    /// [`Ring::enter`] waiting for `want` completions, which is also about how many of those
    /// already pending the kernel hands over in this one call (see `submit_and_wait_for`).
    fn enter_for(&mut self, want: usize, wait: Option<Duration>) -> io::Result<()> {
        c10k::driver::uring::submit_and_wait_for(&self.ring, want, wait)?;
        self.cqes.clear();
        for cqe in self.ring.completion() {
            self.cqes.push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
        for &(ud, _, flags) in &self.cqes {
            // A multishot recv that will complete again is still in flight.
            if !(decode(ud).0 == Some(Op::Recv) && cqueue::more(flags)) {
                self.in_flight -= 1;
            }
        }
        Ok(())
    }

    /// The end of the run, its sockets closed: cancels what is in flight and waits (a little)
    /// for the kernel to let go of the memory it was given; if it does not, leaks it rather
    /// than free memory the kernel may still write.
    pub(super) fn close(mut self: Box<Self>) {
        let entry = opcode::AsyncCancel2::new(CancelBuilder::any().all())
            .build()
            .user_data(user_data(Op::Cancel, 0, 0));
        // SAFETY: a cancellation carries no pointer into our memory.
        unsafe { self.push(&entry) };
        for _ in 0..DRAIN_TURNS {
            // Waiting for all of them: a wait for one would reap ~20 cancellations a turn.
            let want = self.in_flight;
            if want == 0 || self.enter_for(want, Some(DRAIN_WAIT)).is_err() {
                break;
            }
            for &(_, _, flags) in &self.cqes {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    self.bufs.recycle(bid);
                }
            }
        }
        if self.in_flight > 0 {
            log::warn!(
                "io_uring: {} operations still in flight at the end",
                self.in_flight
            );
            std::mem::forget(self);
        }
    }
}

impl<C: Client, K: Clock> Engine<C, K> {
    fn ring(&mut self) -> &mut Ring {
        self.ring
            .as_deref_mut()
            .expect("the uring engine has a ring")
    }

    /// Connection `idx` is established: it leaves epoll, turns blocking and starts receiving.
    pub(super) fn uring_opened(&mut self, idx: usize) {
        let gen = self.conns[idx].gen;
        let Some(s) = self.conns[idx].socket.as_ref() else {
            return;
        };
        let fd = s.as_raw_fd();
        let r = self
            .ring
            .as_deref_mut()
            .expect("the uring engine has a ring");
        let ready = self
            .poller
            .deregister(fd)
            .and_then(|()| s.set_nonblocking(false))
            .and_then(|()| r.ring.submitter().register_files_update(idx as u32, &[fd]));
        if ready.is_err() {
            let now = self.now();
            return self.close(idx, Close::Reset, now);
        }
        self.ring().push_recv(idx, gen & GEN_MASK);
    }

    /// Connection `idx` closes: its receive is cancelled (the socket is released when that
    /// completes). A send in flight ends by itself.
    pub(super) fn uring_closed(&mut self, idx: usize) {
        let gen = self.conns[idx].gen & GEN_MASK;
        let r = self.ring();
        if r.slots[idx].recv_gen == Some(gen) {
            r.slots[idx].recv_gen = None;
            r.push_cancel_recv(idx, gen);
        }
        // The table lets go of the socket (operations in flight hold their own reference); an
        // empty slot stays empty.
        let _ = r.ring.submitter().register_files_update(idx as u32, &[-1]);
    }

    /// Connection `idx` has output: it is sent at the start of the next turn.
    pub(super) fn uring_flush(&mut self, idx: usize) {
        let r = self.ring();
        if !r.slots[idx].queued {
            r.slots[idx].queued = true;
            r.to_flush.push(idx as u32);
        }
    }

    /// Turns every queued output into a send, its requests sent at `now`.
    fn send_queued(&mut self, now: u64) {
        let Some(r) = self.ring.as_deref_mut() else {
            return;
        };
        let mut queued = std::mem::take(&mut r.to_flush);
        for &i in &queued {
            let idx = i as usize;
            let slot = &mut r.slots[idx];
            slot.queued = false;
            let c = &mut self.conns[idx];
            // Behind a send in flight: its completion queues this again.
            if slot.send_gen.is_some()
                || c.phase != Phase::Open
                || c.socket.is_none()
                || c.out.is_empty()
            {
                continue;
            }
            c.out_pos = c.out.len();
            c.written(now);
            slot.sending.clear();
            std::mem::swap(&mut slot.sending, &mut c.out);
            slot.sent = 0;
            c.out_pos = 0;
            r.push_send(idx, c.gen & GEN_MASK);
        }
        queued.clear();
        r.to_flush = queued;
    }

    /// One turn of the uring engine: submit the sends and re-arms, wait, handle completions.
    pub(super) fn turn_uring(&mut self, wait: Option<Duration>) -> io::Result<()> {
        let now = self.now();
        self.send_queued(now);
        let open = self.open as usize;
        let epoll_fd = self.poller.as_raw_fd();
        let Some(r) = self.ring.as_deref_mut() else {
            return Ok(());
        };
        for i in std::mem::take(&mut r.to_arm) {
            let idx = i as usize;
            let c = &self.conns[idx];
            let gen = c.gen & GEN_MASK;
            if c.phase == Phase::Open && c.socket.is_some() && r.slots[idx].recv_gen != Some(gen) {
                r.push_recv(idx, gen);
            }
        }
        if !r.epoll_armed {
            r.push_poll(epoll_fd);
        }
        r.bufs.top_up(open);
        r.enter(wait)?;
        // Every completion reaped together had happened by now: they take this one instant, as
        // a read's responses take the instant after the read.
        let cqes = std::mem::take(&mut r.cqes);
        let now = self.now();
        for &(ud, res, flags) in &cqes {
            match decode(ud) {
                (Some(Op::Recv), idx, gen) => self.on_recv(idx, gen, res, flags, now),
                (Some(Op::Send), idx, gen) => self.on_send(idx, gen, res, now),
                (Some(Op::Epoll), _, _) => {
                    self.ring().epoll_armed = false;
                    self.poll_epoll(Some(Duration::ZERO))?;
                }
                _ => {}
            }
        }
        self.ring().cqes = cqes;
        Ok(())
    }

    /// Whether slot `idx` holds generation `gen` (of a completion), open.
    fn is_current(&self, idx: usize, gen: u32) -> bool {
        self.conns
            .get(idx)
            .is_some_and(|c| c.phase == Phase::Open && c.gen & GEN_MASK == gen)
    }

    fn on_recv(&mut self, idx: usize, gen: u32, res: i32, flags: u32, now: u64) {
        let current = self.is_current(idx, gen);
        let r = self.ring();
        let armed = cqueue::more(flags);
        if !armed && r.slots.get(idx).is_some_and(|s| s.recv_gen == Some(gen)) {
            r.slots[idx].recv_gen = None;
        }
        let bid = cqueue::buffer_select(flags);
        if !current {
            if let Some(bid) = bid {
                r.bufs.recycle(bid);
            }
            return;
        }
        let read = match res {
            n if n > 0 => {
                let n = n as usize;
                let Some(bid) = bid else {
                    log::warn!("recv completed without a provided buffer; closing");
                    return self.close(idx, Close::Reset, now);
                };
                let r = self
                    .ring
                    .as_deref_mut()
                    .expect("the uring engine has a ring");
                self.rbuf[..n].copy_from_slice(r.bufs.data(bid, n));
                r.bufs.recycle(bid);
                Ok(n)
            }
            0 => Ok(0),
            e if e == -libc::ENOBUFS || e == -libc::EAGAIN || e == -libc::EINTR => {
                let r = self.ring();
                if e == -libc::ENOBUFS {
                    r.bufs.starved();
                }
                r.to_arm.push(idx as u32);
                return;
            }
            e if e == -libc::ECANCELED => return,
            e => Err(io::Error::from_raw_os_error(-e)),
        };
        let eof_or_error = !matches!(read, Ok(n) if n > 0);
        if self.received(idx, read, now, now) && !armed && !eof_or_error {
            self.ring().to_arm.push(idx as u32);
        }
    }

    fn on_send(&mut self, idx: usize, gen: u32, res: i32, now: u64) {
        let current = self.is_current(idx, gen);
        let hold = self.plan.hold;
        let in_window = self.in_window(now);
        let r = self.ring();
        let Some(slot) = r.slots.get_mut(idx) else {
            return;
        };
        slot.send_gen = None;
        if res < 0 {
            slot.sending.clear();
            if current {
                self.close(idx, Close::Reset, now);
            }
            return;
        }
        slot.sent += res as usize;
        if in_window {
            self.stats.reqs.bytes_sent += res as u64;
        }
        let r = self
            .ring
            .as_deref_mut()
            .expect("the uring engine has a ring");
        let slot = &mut r.slots[idx];
        if current && slot.sent < slot.sending.len() {
            return r.push_send(idx, gen);
        }
        slot.sending.clear();
        slot.sent = 0;
        if hold {
            // A held connection between pings owns no buffers (see `release_idle_buffers`).
            slot.sending = Vec::new();
        }
        // Output queued behind this send (on this connection, or on the slot's next one).
        let c = &self.conns[idx];
        if c.phase == Phase::Open && !c.out.is_empty() {
            self.uring_flush(idx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for op in [Op::Recv, Op::Send, Op::Epoll, Op::Cancel] {
            let ud = user_data(op, 0xdead_beef, 0x0abc_def1);
            assert_eq!(decode(ud), (Some(op), 0xdead_beef, 0x0abc_def1));
        }
        assert_eq!(decode(0).0, None);
    }
}
