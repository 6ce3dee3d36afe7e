//! Everything of io_uring that touches memory the kernel shares: the operations we submit and
//! how their `user_data` is encoded, the provided-buffer ring, and the descriptor an accept
//! completion returns. Every `unsafe` of the io_uring driver is here but one: the send in
//! `mod.rs`, whose soundness rests on that loop's rule that output is not touched while its
//! send is in flight (stated there).

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, IoUring, Probe};

use crate::driver::kit::Token;
use crate::stats::Syscalls;

/// The provided-buffer ring: up to [`buf_count`] buffers of `BUF_SIZE` bytes, shared by every
/// connection. When thousands of connections become readable in one batch each completion takes
/// a buffer before any is recycled: with 256 buffers 10,000 busy connections spent most recvs on
/// ENOBUFS and re-arming (40 syscalls per request in the comparison), and with 4,096 still 0.9
/// re-arms per request. So there are as many as connections (see [`BufRing::top_up`] for how
/// few of them are in use when few are busy); memory is touched only as far as it is used.
pub(super) const BUF_GROUP: u16 = 0;
pub(super) const BUF_SIZE: usize = 4 * 1024;
/// The most entries a provided-buffer ring may have (the kernel takes fewer than 65,536, a
/// power of two).
const BUF_COUNT_MAX: u16 = 32_768;
const BUF_COUNT_MIN: u16 = 4096;
/// Buffers kept in the ring beyond twice the recent consumption per turn.
const BUF_SPARE: usize = 128;

/// How many buffers to allocate for a loop serving up to `max_conns` connections: one each, as
/// far as one ring allows.
pub(super) fn buf_count(max_conns: usize) -> u16 {
    let wanted = max_conns.clamp(usize::from(BUF_COUNT_MIN), usize::from(BUF_COUNT_MAX));
    wanted.next_power_of_two().min(usize::from(BUF_COUNT_MAX)) as u16
}
/// What an operation was, kept in the top byte of its `user_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Accept = 1,
    Signals = 2,
    Recv = 3,
    Send = 4,
    Cancel = 5,
    // 6 is `offload::WAKE`'s.
    /// Closing a direct descriptor: nothing to do when it completes.
    Cleanup = 7,
    /// The 503 sent to a connection refused on a direct descriptor.
    Refusal = 8,
    /// Shutting down the writing side of a connection's direct descriptor. Tracked, not fire and
    /// forget: the kernel runs it on a worker thread and looks the slot up only then, so the
    /// slot must not be closed (and handed to the next accept) before it completes.
    ShutdownWrite = 9,
}

pub(super) fn user_data(op: Op, token: Token) -> u64 {
    ((op as u64) << 56) | (token & 0x00ff_ffff_ffff_ffff)
}

pub(super) fn decode(user_data: u64) -> (Option<Op>, Token) {
    let op = match user_data >> 56 {
        1 => Some(Op::Accept),
        2 => Some(Op::Signals),
        3 => Some(Op::Recv),
        4 => Some(Op::Send),
        5 => Some(Op::Cancel),
        7 => Some(Op::Cleanup),
        8 => Some(Op::Refusal),
        9 => Some(Op::ShutdownWrite),
        _ => None,
    };
    (op, user_data & 0x00ff_ffff_ffff_ffff)
}

/// One io_uring_enter: submits what is queued and waits for one completion, or until `timeout`
/// (None: without a limit). Running out of time, a signal and a full completion queue (EBUSY:
/// the caller reaps, then enters again) are not errors.
pub fn submit_and_wait(ring: &IoUring, timeout: Option<Duration>) -> io::Result<()> {
    submit_and_wait_for(ring, 1, timeout)
}

/// [`submit_and_wait`] for `want` completions. On a `DEFER_TASKRUN` ring this is also how many
/// of the completions already pending one enter produces: the kernel runs at most
/// max(20, `want`) of them per call (`IO_LOCAL_TW_DEFAULT_MAX`, Linux 6.13 and later) and keeps
/// the rest for the next, so a wait for one completion reaps about 20 even when hundreds are
/// ready, and cancelling 1,000 operations then takes 50 enters.
pub fn submit_and_wait_for(
    ring: &IoUring,
    want: usize,
    timeout: Option<Duration>,
) -> io::Result<()> {
    let result = match timeout {
        None => ring.submit_and_wait(want),
        Some(d) => {
            let ts = Timespec::from(d);
            let args = SubmitArgs::new().timespec(&ts);
            ring.submitter().submit_with_args(want, &args)
        }
    };
    match result {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ETIME | libc::EINTR | libc::EBUSY)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Whether io_uring can serve here, and if not, why: old kernel, seccomp, io_uring_disabled.
pub fn probe() -> Result<(), String> {
    if let Ok(setting) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if setting.trim() == "2" {
            return Err("io_uring is disabled (/proc/sys/kernel/io_uring_disabled = 2)".into());
        }
    }
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup failed: {e}"))?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("cannot probe io_uring opcodes: {e}"))?;
    for (code, name) in [
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::Recv::CODE, "recv"),
        (opcode::Send::CODE, "send"),
        (opcode::PollAdd::CODE, "poll_add"),
        (opcode::AsyncCancel::CODE, "async_cancel"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("io_uring has no {name} operation on this kernel"));
        }
    }
    if !ring.params().is_feature_fast_poll() {
        // Without it a recv or send that cannot complete at once is handed to an io-wq worker
        // thread that blocks on our blocking socket: a thread per idle connection.
        return Err("io_uring lacks IORING_FEAT_FAST_POLL (Linux ≥ 5.7)".into());
    }
    if !ring.params().is_feature_ext_arg() {
        return Err("io_uring lacks IORING_FEAT_EXT_ARG (timed waits; Linux ≥ 5.11)".into());
    }
    let bufs = BufRing::new(&ring, 1, 64, BUF_GROUP);
    // The ring goes first, then the memory it was given.
    drop(ring);
    bufs.map(drop)
        .map_err(|e| format!("no provided-buffer rings (Linux ≥ 5.19): {e}"))
}

/// How the driver's ring was set up: with the flags that cut per-operation overhead (Linux ≥ 6.1)
/// or, on older kernels, without them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Setup {
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`: completions are produced only
    /// inside our own `io_uring_enter` (no task-work interrupts of the loop, no locking for other
    /// issuers), which the loop calls once per turn anyway. Receives are multishot (Linux ≥ 6.0):
    /// one SQE per connection while it keeps reading, instead of one per request.
    DeferTaskrun,
    /// Default flags, single-shot receives.
    Plain,
}

/// The driver's ring: the cheaper setup if the kernel takes it, else the default one. The ring
/// must then be entered only from the thread that created it (the driver's loop does).
pub(super) fn new_ring(sq_entries: u32, cq_entries: u32) -> io::Result<(IoUring, Setup)> {
    let modern = IoUring::builder()
        .setup_cqsize(cq_entries)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(sq_entries);
    match modern {
        Ok(ring) => Ok((ring, Setup::DeferTaskrun)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            log::info!(
                "io_uring: no DEFER_TASKRUN on this kernel; default setup, single-shot recv"
            );
            let ring = IoUring::builder()
                .setup_cqsize(cq_entries)
                .build(sq_entries)?;
            Ok((ring, Setup::Plain))
        }
        Err(e) => Err(e),
    }
}

/// A connection's socket: an ordinary descriptor, or a direct one (a slot of the ring's file
/// table, in no process's descriptor table, closed by an operation of the ring).
pub(super) enum ConnFd {
    Regular(OwnedFd),
    Direct(u32),
}

impl fmt::Display for ConnFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnFd::Regular(fd) => write!(f, "fd {}", fd.as_raw_fd()),
            ConnFd::Direct(slot) => write!(f, "direct fd {slot}"),
        }
    }
}

/// Builds an operation on a connection's socket, whichever kind it is: `$target` is bound to an
/// `Fd` or a `Fixed` in `$build`.
macro_rules! on_socket {
    ($fd:expr, |$target:ident| $build:expr) => {
        match $fd {
            ConnFd::Regular(owned) => {
                let $target = Fd(owned.as_raw_fd());
                $build
            }
            ConnFd::Direct(slot) => {
                let $target = Fixed(*slot);
                $build
            }
        }
    };
}

/// Gives the ring a table of `slots` direct descriptors, all free, for accepts to fill.
pub(super) fn register_direct_table(ring: &IoUring, slots: u32) -> io::Result<()> {
    ring.submitter().register_files_sparse(slots)
}

/// `user_data` tokens of the two kinds of accept.
pub(super) const ACCEPT_REGULAR: Token = 0;
pub(super) const ACCEPT_DIRECT: Token = 1;

/// A multishot accept on the listener, into ordinary descriptors.
pub(super) fn push_accept(ring: &mut IoUring, syscalls: &mut Syscalls, listener: RawFd) {
    let entry = opcode::AcceptMulti::new(Fd(listener))
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(user_data(Op::Accept, ACCEPT_REGULAR));
    // SAFETY: a multishot accept without an address carries no pointer into our memory.
    unsafe { push(ring, syscalls, &entry) };
}

/// A one-shot poll for input on the signalfd.
pub(super) fn push_signals(ring: &mut IoUring, syscalls: &mut Syscalls, signals: RawFd) {
    let entry = opcode::PollAdd::new(Fd(signals), libc::POLLIN as u32)
        .build()
        .user_data(user_data(Op::Signals, 0));
    // SAFETY: a poll carries no pointer into our memory.
    unsafe { push(ring, syscalls, &entry) };
}

/// A one-shot accept into a free slot of the direct table. One-shot, so that the loop never has
/// more of them in flight than free slots: an accept that finds the table full has already taken
/// the connection off the backlog, and the kernel closes it (ENFILE).
pub(super) fn push_accept_direct(ring: &mut IoUring, syscalls: &mut Syscalls, listener: RawFd) {
    // (No SOCK_CLOEXEC: the kernel refuses it for a direct descriptor, which no exec inherits.)
    let entry = opcode::Accept::new(Fd(listener), std::ptr::null_mut(), std::ptr::null_mut())
        .file_index(Some(io_uring::types::DestinationSlot::auto_target()))
        .build()
        .user_data(user_data(Op::Accept, ACCEPT_DIRECT));
    // SAFETY: an accept without an address carries no pointer into our memory.
    unsafe { push(ring, syscalls, &entry) };
}

/// Cancels every operation `op` of `token` in flight (not only the first found).
pub(super) fn push_cancel_all(ring: &mut IoUring, syscalls: &mut Syscalls, op: Op, token: Token) {
    let entry = opcode::AsyncCancel2::new(
        io_uring::types::CancelBuilder::user_data(user_data(op, token)).all(),
    )
    .build()
    .user_data(user_data(Op::Cancel, token));
    // SAFETY: a cancellation carries no pointer into our memory.
    unsafe { push(ring, syscalls, &entry) };
}

/// Closes direct descriptor `slot` (no operation may be in flight on it); the slot is free
/// for accepts once this completes.
pub(super) fn push_close_direct(ring: &mut IoUring, syscalls: &mut Syscalls, slot: u32) {
    let entry = opcode::Close::new(Fixed(slot))
        .build()
        .user_data(user_data(Op::Cleanup, 0));
    // SAFETY: a close carries no pointer into our memory.
    unsafe { push(ring, syscalls, &entry) };
}

/// Shuts down the writing side of a refused connection's direct descriptor, then closes it: the
/// close is linked behind the shutdown, which the kernel runs on a worker thread and which looks
/// the slot up only then (closed first, the slot could already hold the next connection).
pub(super) fn push_shutdown_then_close(ring: &mut IoUring, syscalls: &mut Syscalls, slot: u32) {
    let shutdown = opcode::Shutdown::new(Fixed(slot), libc::SHUT_WR)
        .build()
        .flags(squeue::Flags::IO_LINK)
        .user_data(user_data(Op::Cleanup, 0));
    let close = opcode::Close::new(Fixed(slot))
        .build()
        .user_data(user_data(Op::Cleanup, 0));
    // A link must not be split over two submissions: room for both first.
    while {
        let sq = ring.submission();
        sq.capacity() - sq.len() < 2
    } {
        make_room(ring, syscalls);
    }
    // SAFETY: neither carries a pointer into our memory.
    unsafe {
        push(ring, syscalls, &shutdown);
        push(ring, syscalls, &close);
    }
}

/// Shuts down the writing side of connection `token`'s direct descriptor (an ordinary one takes
/// the syscall); its completion comes back as [`Op::ShutdownWrite`].
pub(super) fn push_shutdown_write(
    ring: &mut IoUring,
    syscalls: &mut Syscalls,
    slot: u32,
    token: Token,
) {
    let entry = opcode::Shutdown::new(Fixed(slot), libc::SHUT_WR)
        .build()
        .user_data(user_data(Op::ShutdownWrite, token));
    // SAFETY: a shutdown carries no pointer into our memory.
    unsafe { push(ring, syscalls, &entry) };
}

/// Cancels the operation `op` of connection `token`.
pub(super) fn push_cancel(ring: &mut IoUring, syscalls: &mut Syscalls, op: Op, token: Token) {
    let entry = opcode::AsyncCancel::new(user_data(op, token))
        .build()
        .user_data(user_data(Op::Cancel, token));
    // SAFETY: a cancellation carries no pointer into our memory.
    unsafe { push(ring, syscalls, &entry) };
}

/// A recv into a buffer the kernel picks from the provided-buffer ring.
pub(super) fn push_recv(ring: &mut IoUring, syscalls: &mut Syscalls, fd: &ConnFd, token: Token) {
    let entry = on_socket!(fd, |target| opcode::Recv::new(
        target,
        std::ptr::null_mut(),
        BUF_SIZE as u32
    )
    .buf_group(BUF_GROUP)
    .build())
    .flags(squeue::Flags::BUFFER_SELECT)
    .user_data(user_data(Op::Recv, token));
    // SAFETY: the recv writes into a buffer of the registered ring, which lives as long as the
    // ring (see `BufRing`); it carries no pointer into the connection.
    unsafe { push(ring, syscalls, &entry) };
}

/// A multishot recv: it stays armed, each completion flagged `more`, taking a provided buffer
/// per chunk of data, until it fails (ENOBUFS when the ring is dry), reaches EOF, or is cancelled.
pub(super) fn push_recv_multishot(
    ring: &mut IoUring,
    syscalls: &mut Syscalls,
    fd: &ConnFd,
    token: Token,
) {
    let entry = on_socket!(fd, |target| opcode::RecvMulti::new(target, BUF_GROUP)
        .build())
    .user_data(user_data(Op::Recv, token));
    // SAFETY: the recv writes into a buffer of the registered ring, which lives as long as the
    // ring (see `BufRing`); it carries no pointer into the connection.
    unsafe { push(ring, syscalls, &entry) };
}

#[cfg(test)]
fn push_recv_from(
    ring: &mut IoUring,
    syscalls: &mut Syscalls,
    fd: RawFd,
    token: Token,
    group: u16,
    size: u32,
) {
    let entry = opcode::Recv::new(Fd(fd), std::ptr::null_mut(), size)
        .buf_group(group)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT)
        .user_data(user_data(Op::Recv, token));
    // SAFETY: the recv writes into a buffer of the registered ring, which lives as long as the
    // ring (see `BufRing`); it carries no pointer into the connection.
    unsafe { push(ring, syscalls, &entry) };
}

/// A send of `data`.
///
/// # Safety
/// `data` must stay alive and unchanged until the send's completion has been reaped.
pub(super) unsafe fn push_send(
    ring: &mut IoUring,
    syscalls: &mut Syscalls,
    fd: &ConnFd,
    data: &[u8],
    op: Op,
    token: Token,
) {
    let len = data.len().min(u32::MAX as usize) as u32;
    let entry = on_socket!(fd, |target| opcode::Send::new(target, data.as_ptr(), len)
        .flags(libc::MSG_NOSIGNAL)
        .build())
    .user_data(user_data(op, token));
    // SAFETY: the caller keeps `data` alive and unchanged until the completion.
    unsafe { push(ring, syscalls, &entry) };
}

/// Queues one submission, handing the queue to the kernel first if it is full.
///
/// # Safety
/// Every pointer the entry carries must stay valid until the operation's completion is reaped.
pub(super) unsafe fn push(ring: &mut IoUring, syscalls: &mut Syscalls, entry: &squeue::Entry) {
    loop {
        // SAFETY: the caller guarantees the entry's pointers outlive the operation.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            syscalls.uring_ops += 1;
            return;
        }
        make_room(ring, syscalls);
    }
}

/// The submission queue is full (or lacks room for a link): hands what it holds to the kernel.
fn make_room(ring: &mut IoUring, syscalls: &mut Syscalls) {
    syscalls.waits += 1;
    if let Err(e) = ring.submit() {
        if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) {
            log::warn!("io_uring submit: {e}");
        }
    }
}

/// Takes ownership of a descriptor an accept completion returned.
pub(super) fn adopt_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: a non-negative accept result is a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// One entry of a provided-buffer ring: the kernel's `struct io_uring_buf`, whose layout is ABI.
/// Ours rather than `io_uring::types::BufRingEntry`, whose setters take `&mut self` (see
/// [`BufRing::recycle`]). The first entry's `resv` is the ring's tail.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<RawBuf>() == std::mem::size_of::<BufRingEntry>());
const _: () = assert!(std::mem::size_of::<RawBuf>() == 16);

/// A provided-buffer ring: `count` buffers of `size` bytes the kernel picks from when a recv
/// with buffer select has data, and that the loop hands back (`recycle`) once it has copied the
/// data out. The ring and the buffers are freed only when the `BufRing` is dropped, which the
/// driver does after the io_uring (field order) and never with a recv in flight.
///
/// Not every buffer is in the ring at once. The kernel takes buffers in ring order, so a ring
/// holding all of them would cycle every receive through all `count` buffers (16 MiB and more):
/// each lands in memory that is cold in the cache, and the first round faults every page in.
/// Instead recycled buffers wait on a stack (last in, first out) and [`BufRing::top_up`] puts
/// back, once per loop turn, only about twice what recent turns consumed: a few hundred hot
/// buffers serve 256 busy connections, and a burst that runs the ring dry (ENOBUFS, reported
/// through [`BufRing::starved`]) doubles the amount for the next turn.
pub struct BufRing {
    entries: NonNull<RawBuf>,
    entries_layout: std::alloc::Layout,
    buffers: NonNull<u8>,
    buffers_layout: std::alloc::Layout,
    count: u16,
    size: usize,
    tail: u16,
    /// Buffers neither in the ring nor holding data; the last recycled on top.
    free: Vec<u16>,
    /// Buffers published to the ring whose completion we have not yet seen.
    in_ring: usize,
    /// Buffers recycled since the last top-up, and a slowly decaying peak of that per turn.
    taken_this_turn: usize,
    peak_per_turn: usize,
    starved: bool,
}

impl BufRing {
    pub fn new(ring: &IoUring, count: u16, size: usize, group: u16) -> io::Result<BufRing> {
        assert!(
            count.is_power_of_two(),
            "buffer ring size must be a power of two"
        );
        let entries_layout = std::alloc::Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<RawBuf>(),
            4096,
        )
        .map_err(io::Error::other)?;
        // Small alignment so that the allocator can use calloc: pages stay untouched (and out of
        // the RSS) until the kernel first writes into them.
        let buffers_layout = std::alloc::Layout::from_size_align(usize::from(count) * size, 16)
            .map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size.
        let (entries, buffers) = unsafe {
            (
                std::alloc::alloc_zeroed(entries_layout),
                std::alloc::alloc_zeroed(buffers_layout),
            )
        };
        let (Some(entries), Some(buffers)) = (
            NonNull::new(entries.cast::<RawBuf>()),
            NonNull::new(buffers),
        ) else {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        };
        let mut bufs = BufRing {
            entries,
            entries_layout,
            buffers,
            buffers_layout,
            count,
            size,
            tail: 0,
            free: (0..count).rev().collect(),
            in_ring: 0,
            taken_this_turn: 0,
            peak_per_turn: 0,
            starved: false,
        };
        // SAFETY: the ring memory is page-aligned, `count` entries long, zeroed (tail 0), and lives
        // until `bufs` is dropped, after the io_uring it is registered with.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                count,
                group,
                0,
            )?
        };
        bufs.top_up(0);
        Ok(bufs)
    }

    /// Takes back buffer `bid`, which a completion handed us (each one exactly once), now that
    /// its data has been copied out. It returns to the ring at the next [`BufRing::top_up`].
    pub fn recycle(&mut self, bid: u16) {
        assert!(bid < self.count, "buffer id out of range");
        self.in_ring = self.in_ring.saturating_sub(1);
        self.taken_this_turn += 1;
        self.free.push(bid);
    }

    /// A recv found the ring empty (ENOBUFS): the next top-up puts in more.
    pub fn starved(&mut self) {
        self.starved = true;
    }

    /// Once per loop turn, before the ring is entered: keeps about twice the recent consumption
    /// per turn in the ring (plus [`BUF_SPARE`]), the most recently used buffers first, but no
    /// more than two per connection (plus the spare): a multishot recv takes buffers as long as
    /// its socket has data, so this also bounds what one connection that sends without reading
    /// can pile up in one turn, before its recv is cancelled.
    pub fn top_up(&mut self, connections: usize) {
        let decayed = self.peak_per_turn - self.peak_per_turn / 16;
        self.peak_per_turn = decayed.max(self.taken_this_turn);
        if self.starved {
            // Everything in the ring went; ask for twice as many as were there.
            self.peak_per_turn = self
                .peak_per_turn
                .max(self.taken_this_turn * 2)
                .max(BUF_SPARE);
        }
        self.taken_this_turn = 0;
        self.starved = false;
        let per_turn = self.peak_per_turn.min(connections);
        let target = (2 * per_turn + BUF_SPARE).min(usize::from(self.count));
        let mut added = false;
        while self.in_ring < target {
            let Some(bid) = self.free.pop() else {
                break;
            };
            self.write_entry(bid);
            self.in_ring += 1;
            added = true;
        }
        if added {
            self.publish_tail();
        }
    }

    /// Writes buffer `bid` into the ring's next free entry (not yet visible to the kernel).
    ///
    /// Only raw-pointer writes, never a `&mut` over ring memory: the kernel reads that memory
    /// concurrently (the entries between its head and our tail, and the tail itself, which lives
    /// in entry 0's `resv` field). A `&mut RawBuf` over entry 0 would claim exclusive access to
    /// the tail the kernel is reading — undefined behaviour even if no byte is ever torn.
    fn write_entry(&mut self, bid: u16) {
        assert!(bid < self.count, "buffer id out of range");
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: `index < count`, so the entry lies inside the ring allocation (alive until drop).
        let entry = unsafe { self.entries.as_ptr().add(index) };
        // SAFETY: `bid < count` (checked), so the buffer lies inside the buffers allocation.
        let addr = unsafe { self.buffers.as_ptr().add(usize::from(bid) * self.size) };
        // SAFETY: the entry is in bounds and aligned (page-aligned ring of 16-byte entries). The
        // kernel reads an entry only between its head and the published tail, and this one is
        // at the tail, so nothing reads these three fields while we write them; entry 0's `resv`
        // (the tail) is not written here. Field-wise writes through `addr_of_mut!` create no
        // reference to the entry.
        unsafe {
            std::ptr::addr_of_mut!((*entry).addr).write(addr as u64);
            std::ptr::addr_of_mut!((*entry).len).write(self.size as u32);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the entries written so far visible to the kernel.
    fn publish_tail(&mut self) {
        // SAFETY: the tail is the u16 `resv` field of the first entry, shared with the kernel,
        // which reads it concurrently: it is only ever accessed atomically (aligned: offset 14 of
        // a page-aligned allocation). The release store publishes the entry written above before
        // the new tail.
        unsafe {
            let tail = std::ptr::addr_of_mut!((*self.entries.as_ptr()).resv);
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// The `len` bytes the kernel received into buffer `bid`.
    pub fn data(&self, bid: u16, len: usize) -> &[u8] {
        assert!(
            bid < self.count && len <= self.size,
            "buffer id or length out of range"
        );
        // SAFETY: in range (checked); the completion that named this buffer handed it to us, and
        // the kernel does not write to it again until `recycle` gives it back.
        unsafe {
            std::slice::from_raw_parts(self.buffers.as_ptr().add(usize::from(bid) * self.size), len)
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; by the driver's field order the io_uring
        // is gone (or has no recv in flight) by now, so the kernel no longer uses this memory.
        unsafe {
            std::alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            std::alloc::dealloc(self.buffers.as_ptr(), self.buffers_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use io_uring::cqueue;

    use super::*;

    #[test]
    fn user_data_round_trips_op_and_token() {
        let ops = [
            Op::Accept,
            Op::Signals,
            Op::Recv,
            Op::Send,
            Op::Cancel,
            Op::Cleanup,
            Op::Refusal,
            Op::ShutdownWrite,
        ];
        for op in ops {
            let token: Token = (0x00ab_cdef << 32) | 0xdead_beef;
            assert_eq!(decode(user_data(op, token)), (Some(op), token));
            // The offload's wake-up has an op byte of its own.
            assert_ne!(user_data(op, 0) >> 56, super::super::offload::WAKE >> 56);
        }
        assert_eq!(decode(0).0, None);
    }

    /// Recycled buffers are the next ones handed out: a keep-alive load cycles through a few
    /// hot buffers, not through all of them.
    #[test]
    fn few_buffers_serve_a_steady_load() {
        if let Err(why) = probe() {
            eprintln!("io_uring unavailable here ({why}); skipped");
            return;
        }
        let mut ring = IoUring::new(8).unwrap();
        let mut bufs = BufRing::new(&ring, 4096, 64, 3).unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut syscalls = Syscalls::default();
        let mut used = std::collections::HashSet::new();
        for _ in 0..600 {
            std::io::Write::write_all(&mut &a, b"x").unwrap();
            push_recv_from(&mut ring, &mut syscalls, b.as_raw_fd(), 1, 3, 64);
            ring.submit_and_wait(1).unwrap();
            let cqe = ring.completion().next().expect("a completion");
            assert_eq!(cqe.result(), 1);
            let bid = cqueue::buffer_select(cqe.flags()).expect("a provided buffer");
            used.insert(bid);
            bufs.recycle(bid);
            bufs.top_up(1);
        }
        assert!(used.len() <= 2 * BUF_SPARE, "{} buffers used", used.len());
        drop(ring);
    }

    /// A turn that found the ring dry puts back more than the turn took.
    #[test]
    fn a_dry_ring_gets_more_buffers() {
        if let Err(why) = probe() {
            eprintln!("io_uring unavailable here ({why}); skipped");
            return;
        }
        let ring = IoUring::new(8).unwrap();
        let mut bufs = BufRing::new(&ring, 4096, 64, 4).unwrap();
        assert_eq!(bufs.in_ring, BUF_SPARE);
        // As if the kernel had handed out every buffer in the ring, and wanted more.
        for bid in 0..BUF_SPARE as u16 {
            bufs.recycle(bid);
        }
        bufs.starved();
        bufs.top_up(1000);
        assert!(
            bufs.in_ring >= 4 * BUF_SPARE,
            "{} in the ring",
            bufs.in_ring
        );
        drop(ring);
    }

    #[test]
    fn recv_takes_a_provided_buffer_and_it_can_be_handed_back() {
        if let Err(why) = probe() {
            eprintln!("io_uring unavailable here ({why}); skipped");
            return;
        }
        let mut ring = IoUring::new(8).unwrap();
        let mut bufs = BufRing::new(&ring, 2, 128, 7).unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut syscalls = Syscalls::default();
        for round in 0..5u8 {
            // More rounds than buffers: each must have been handed back for the next recv.
            std::io::Write::write_all(&mut &a, &[b'a' + round; 10]).unwrap();
            push_recv_from(&mut ring, &mut syscalls, b.as_raw_fd(), 1, 7, 128);
            ring.submit_and_wait(1).unwrap();
            let cqe = ring.completion().next().expect("a completion");
            assert_eq!(decode(cqe.user_data()), (Some(Op::Recv), 1));
            assert_eq!(cqe.result(), 10);
            let bid = cqueue::buffer_select(cqe.flags()).expect("a provided buffer");
            assert_eq!(bufs.data(bid, 10), &[b'a' + round; 10]);
            bufs.recycle(bid);
            bufs.top_up(1);
        }
        drop(ring);
    }
}
