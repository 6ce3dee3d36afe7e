//! The small syscall wrappers that hold almost all of the crate's `unsafe`.
//!
//! Every wrapper turns `-1` into `io::Error::last_os_error()` through one macro, takes and returns
//! plain Rust types, and documents in a `// SAFETY:` comment why its one unsafe call is sound.
//! Backends and drivers call these, never `libc` directly, so the unsafe surface is reviewable in
//! one file.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Calls a libc function and maps a `-1` return to the thread's `errno`. Every call site carries
/// its own `// SAFETY:` comment for the arguments it passes.
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)* ) ) => {{
        #[allow(unused_unsafe)]
        let res = unsafe { libc::$fn($($arg, )*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// `read(2)`, retried on EINTR. `Ok(0)` is end of file.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length come from a live, exclusively borrowed slice, so the
        // kernel writes only inside memory we own for the duration of the call.
        match syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len())) {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads into the spare capacity of `buf` (reserving `want` bytes first) and extends its length by
/// what was read, retried on EINTR. `Ok(0)` is end of file.
pub fn read_append(fd: RawFd, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    buf.reserve(want);
    let spare = buf.spare_capacity_mut();
    loop {
        // SAFETY: the kernel writes at most `spare.len()` bytes into the vector's unused
        // allocation, which we own exclusively for the duration of the call.
        match syscall!(read(fd, spare.as_mut_ptr().cast(), spare.len())) {
            Ok(n) => {
                let n = n as usize;
                // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `send(2)` with MSG_NOSIGNAL, retried on EINTR: a peer that went away gives EPIPE, never SIGPIPE.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length come from a live borrowed slice that the kernel only reads.
        match syscall!(send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL)) {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `sendmsg(2)` of `head` then `tail` in one call (a gather write: the kernel copies from both
/// where they lie), with MSG_NOSIGNAL, retried on EINTR; a plain [`send`] when either is empty.
pub fn send_pair(fd: RawFd, head: &[u8], tail: &[u8]) -> io::Result<usize> {
    if head.is_empty() {
        return send(fd, tail);
    }
    if tail.is_empty() {
        return send(fd, head);
    }
    let mut iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: tail.as_ptr() as *mut libc::c_void,
            iov_len: tail.len(),
        },
    ];
    // SAFETY: msghdr is plain data (pointers and integers), for which all-zero is a valid value:
    // no name, no control data, no flags.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    loop {
        // SAFETY: `msg` points at `iov`, two entries that each describe a live borrowed slice;
        // both outlive the call, and `sendmsg` only reads through them.
        match syscall!(sendmsg(fd, &msg, libc::MSG_NOSIGNAL)) {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `accept4(2)` with SOCK_NONBLOCK (when `nonblocking`) and SOCK_CLOEXEC, retried on EINTR.
pub fn accept(listener: RawFd, nonblocking: bool) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    loop {
        // SAFETY: null address pointers are allowed by accept4 when the peer address is not wanted.
        match syscall!(accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            flags
        )) {
            // SAFETY: accept4 returned a new descriptor that nothing else owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `setsockopt(TCP_NODELAY)`: a response's last partial segment goes out at once instead of
/// waiting (Nagle) for the ACK of the data before it, which the client may delay by up to 40 ms.
/// Without it a large response written in windows stalls at its tail, and a streamed echo at
/// every message.
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the option value points at a live c_int and its size is passed with it.
    syscall!(setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        (&one as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>() as libc::socklen_t
    ))
    .map(drop)
}

/// `shutdown(fd, SHUT_WR)`: sends FIN after the pending output, keeps the read side open.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    syscall!(shutdown(fd, libc::SHUT_WR)).map(drop)
}

/// `shutdown(fd, SHUT_RD)`. On a listening socket: stop listening at once (new connects are
/// refused, the backlog is reset) and wake whoever waits in accept.
pub fn shutdown_read(fd: RawFd) -> io::Result<()> {
    syscall!(shutdown(fd, libc::SHUT_RD)).map(drop)
}

/// Connections completed by the kernel and waiting in a TCP listener's accept queue. Linux reports
/// it for a listening socket as `tcpi_unacked` (`sk_ack_backlog`) in `TCP_INFO`. At shutdown
/// this many are taken in and no more: accepting until EAGAIN would never end while clients keep
/// connecting.
pub fn accept_queue_len(listener: RawFd) -> io::Result<usize> {
    let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a zeroed `tcp_info` of `len` bytes that the kernel may fill (it writes
    // at most `len` and updates `len`); every field is a plain integer, so any bytes are valid.
    let info = unsafe {
        if libc::getsockopt(
            listener,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        info.assume_init()
    };
    Ok(info.tcpi_unacked as usize)
}

/// Sets or clears O_NONBLOCK.
pub fn set_nonblocking(fd: RawFd, nonblocking: bool) -> io::Result<()> {
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    let new = if nonblocking {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        syscall!(fcntl(fd, libc::F_SETFL, new))?;
    }
    Ok(())
}

/// Converts an optional timeout to milliseconds for poll/epoll_wait, rounding up so that a
/// sub-millisecond timeout does not become a busy loop of zero-timeout waits.
pub fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(libc::c_int::MAX as u128) as libc::c_int
        }
    }
}

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub fn epoll_create() -> io::Result<OwnedFd> {
    let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
    // SAFETY: epoll_create1 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `epoll_ctl(2)`; `event` is ignored by the kernel for EPOLL_CTL_DEL.
pub fn epoll_ctl(
    epfd: RawFd,
    op: libc::c_int,
    fd: RawFd,
    events: u32,
    data: u64,
) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: data };
    // SAFETY: `event` is a valid epoll_event on our stack for the duration of the call.
    syscall!(epoll_ctl(epfd, op, fd, &mut event)).map(drop)
}

/// `epoll_wait(2)` into the spare capacity of `events`, whose length is set to what was returned.
/// EINTR is reported as zero events, so that the caller's loop re-checks its state.
pub fn epoll_wait(
    epfd: RawFd,
    events: &mut Vec<libc::epoll_event>,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    events.clear();
    let cap = events.capacity().min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: the kernel writes at most `cap` events into the vector's allocation, which has room
    // for `capacity()` elements.
    match syscall!(epoll_wait(
        epfd,
        events.as_mut_ptr(),
        cap,
        timeout_ms(timeout)
    )) {
        Ok(n) => {
            // SAFETY: the kernel initialised the first `n` (≤ cap) elements.
            unsafe { events.set_len(n as usize) };
            Ok(n as usize)
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// `poll(2)` over the given array. EINTR is reported as zero ready descriptors.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    // SAFETY: the pointer and length describe a live, exclusively borrowed slice of pollfd.
    match syscall!(poll(
        fds.as_mut_ptr(),
        fds.len() as libc::nfds_t,
        timeout_ms(timeout)
    )) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// True when a read on `fd` would not block: data, end of file or an error is waiting
/// (a zero-timeout poll).
pub fn readable_now(fd: RawFd) -> bool {
    let mut fds = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    matches!(poll(&mut fds, Some(Duration::ZERO)), Ok(n) if n > 0)
}

/// The raw `select(2)` syscall over bitmaps of any size: glibc's FD_SET aborts for fd ≥ 1024, but
/// the kernel takes as many bits as `nfds` says. Each slice must hold at least `nfds` bits.
/// EINTR is reported as zero ready descriptors.
pub fn select(
    nfds: usize,
    read: &mut [u64],
    write: &mut [u64],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let words = nfds.div_ceil(64);
    assert!(
        read.len() >= words && write.len() >= words,
        "select bitmap smaller than nfds"
    );
    let mut tv = timeout.map(|d| libc::timeval {
        tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
        // Rounded up to whole microseconds for the same reason as `timeout_ms`.
        tv_usec: d.subsec_nanos().div_ceil(1000) as libc::suseconds_t,
    });
    let tv_ptr = tv
        .as_mut()
        .map_or(std::ptr::null_mut(), |tv| tv as *mut libc::timeval);
    // SAFETY: both bitmaps are live, exclusively borrowed and at least `nfds` bits long (checked
    // above); the kernel reads and writes only the first `nfds` bits of each. fd_set is a plain
    // array of longs, the same layout as our u64 words on 64-bit Linux.
    let res = unsafe {
        libc::syscall(
            libc::SYS_select,
            nfds as libc::c_long,
            read.as_mut_ptr(),
            write.as_mut_ptr(),
            std::ptr::null_mut::<libc::fd_set>(),
            tv_ptr,
        )
    };
    if res == -1 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(res as usize)
}

/// Ignores SIGPIPE for the whole process: writes to a closed peer return EPIPE instead.
pub fn ignore_sigpipe() -> io::Result<()> {
    // SAFETY: installing SIG_IGN has no handler code to run and no memory to share.
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(hard)
}

/// The current soft RLIMIT_NOFILE.
pub fn nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

/// The soft RLIMIT_NPROC (threads and processes of this user); None when unlimited.
pub fn nproc_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    match getrlimit(Resource::RLIMIT_NPROC) {
        Ok((soft, _)) if soft != RLIM_INFINITY => Some(soft),
        _ => None,
    }
}

/// CPU time (user, system) this process has used so far.
pub fn process_cpu_time() -> (Duration, Duration) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct we point to; RUSAGE_SELF cannot fail with a valid pointer.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

/// A descriptor held in reserve for EMFILE: closing it frees one slot, so that a blocked accept
/// can be served or refused instead of the listener staying readable forever.
pub fn open_reserve_fd() -> io::Result<OwnedFd> {
    let fd = syscall!(open(
        c"/dev/null".as_ptr(),
        libc::O_RDONLY | libc::O_CLOEXEC
    ))?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// True for the errors that mean "out of descriptors", where accept must back off.
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// A file mapped MAP_SHARED as an array of atomic words: counters that several processes read
/// and write without locks. Unmapped on drop.
pub struct SharedWords {
    ptr: std::ptr::NonNull<std::sync::atomic::AtomicU64>,
    len: usize,
}

// SAFETY: the mapping is only ever accessed through atomics, which are safe to share and send.
unsafe impl Send for SharedWords {}
// SAFETY: as above: every access is an atomic operation.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    /// Maps the first `words` × 8 bytes of `file` (which must be at least that long).
    pub fn map(file: &std::fs::File, words: usize) -> io::Result<SharedWords> {
        use std::os::fd::AsRawFd;
        let bytes = words
            .checked_mul(8)
            .filter(|&b| b > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad mapping size"))?;
        if file.metadata()?.len() < bytes as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "file shorter than the mapping",
            ));
        }
        // SAFETY: a fresh shared mapping of a file we hold open; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast()).ok_or_else(io::Error::last_os_error)?;
        Ok(SharedWords { ptr, len: words })
    }

    pub fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: the mapping is `len` words long, page-aligned (so aligned for u64), lives until
        // drop, and AtomicU64 has the same layout as u64; other processes touch it only
        // atomically too.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `map`; no reference outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len * 8) };
    }
}

/// Makes the child of `command` start with an empty signal mask and inherit descriptor `keep`
/// across exec.
///
/// Both are done in the child, between fork and exec: the parent never unblocks a signal (one
/// that arrives meanwhile stays queued for its signalfd rather than meeting its default action
/// or being discarded), and `keep` stays close-on-exec in the parent, so that no other child
/// inherits it.
pub fn prepare_child(command: &mut std::process::Command, keep: RawFd) {
    use std::os::unix::process::CommandExt;
    let empty = nix::sys::signal::SigSet::empty();
    // SAFETY: the closure runs in the forked child before exec. It only calls sigprocmask and
    // fcntl, both async-signal-safe; it allocates nothing (an `io::Error` from errno does not
    // allocate) and takes no lock, so it cannot deadlock on state copied from other threads.
    unsafe {
        command.pre_exec(move || {
            syscall!(sigprocmask(
                libc::SIG_SETMASK,
                empty.as_ref(),
                std::ptr::null_mut()
            ))?;
            let flags = syscall!(fcntl(keep, libc::F_GETFD))?;
            syscall!(fcntl(keep, libc::F_SETFD, flags & !libc::FD_CLOEXEC))?;
            Ok(())
        });
    }
}

/// Takes ownership of descriptor `fd`, which this process inherited across exec (its parent
/// passed the number on the command line), and marks it close-on-exec. Call it at most once
/// per descriptor, at start-up, before anything else could have claimed the number.
pub fn adopt_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd <= 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an inherited descriptor is never stdio",
        ));
    }
    // EBADF here if nothing was inherited under that number.
    let flags = syscall!(fcntl(fd, libc::F_GETFD))?;
    syscall!(fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC))?;
    // SAFETY: the descriptor is open (checked above), was inherited for this purpose alone, and
    // the caller adopts it once, before any other owner exists in this process.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Accepted sockets rely on it to send a large response's tail without waiting for an ACK.
    #[test]
    fn set_nodelay_turns_nagle_off() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(!accepted.nodelay().unwrap(), "Nagle is on by default");
        set_nodelay(accepted.as_raw_fd()).unwrap();
        assert!(accepted.nodelay().unwrap());
        drop(client);
    }

    /// The reactor sends a lent `/bytes` window after its buffer with it: both, in order, or
    /// either alone.
    #[test]
    fn send_pair_sends_both_in_order() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let fd = accepted.as_raw_fd();
        assert_eq!(send_pair(fd, b"head ", b"tail").unwrap(), 9);
        assert_eq!(send_pair(fd, b"", b"-t").unwrap(), 2);
        assert_eq!(send_pair(fd, b"-h", b"").unwrap(), 2);
        drop(accepted);
        let mut got = Vec::new();
        (&client).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"head tail-t-h");
    }

    /// The io_uring driver sets it once on the listener and relies on accepted sockets (direct
    /// descriptors included, which take no plain setsockopt) inheriting it.
    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_nodelay(listener.as_raw_fd()).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
        drop(client);
    }

    /// The shutdown sweep relies on this count: connections the kernel completed and nobody
    /// accepted yet, going down as they are accepted.
    #[test]
    fn accept_queue_len_counts_completed_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = listener.as_raw_fd();
        assert_eq!(accept_queue_len(fd).unwrap(), 0);
        let addr = listener.local_addr().unwrap();
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        assert_eq!(accept_queue_len(fd).unwrap(), 3);
        let _first = listener.accept().unwrap();
        assert_eq!(accept_queue_len(fd).unwrap(), 2);
        drop(clients);
    }
}

// ---- signal-driven I/O (the sigio backend) ----------------------------------------------------

// Not exported by the libc crate for x86_64/aarch64 glibc; the values are the generic ones.
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

/// `struct f_owner_ex` from <fcntl.h>.
#[repr(C)]
struct FOwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// The start of `siginfo_t` as the kernel fills it for SIGPOLL-style signals: the union after the
/// three ints is pointer-aligned, and `_sigpoll` is `{ long si_band; int si_fd; }`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SigPoll {
    pub signo: libc::c_int,
    pub errno: libc::c_int,
    pub code: libc::c_int,
    pub band: libc::c_long,
    pub fd: libc::c_int,
}

pub fn signal_set(signals: &[libc::c_int]) -> io::Result<libc::sigset_t> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set we point to; sigaddset only writes inside it.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for &signo in signals {
            if libc::sigaddset(set.as_mut_ptr(), signo) == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(set.assume_init())
    }
}

/// Blocks the set in the calling thread (and the threads it creates later).
pub fn block_signals(set: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is allowed.
    let res = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set, std::ptr::null_mut()) };
    if res != 0 {
        return Err(io::Error::from_raw_os_error(res));
    }
    Ok(())
}

pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// `fcntl(fd, cmd, arg)` for the commands that take an int.
pub fn fcntl_int(fd: RawFd, cmd: libc::c_int, arg: libc::c_int) -> io::Result<libc::c_int> {
    // SAFETY: the commands used here (F_GETFL, F_SETFL, F_SETSIG) take an int, not a pointer.
    syscall!(fcntl(fd, cmd, arg))
}

/// F_SETOWN_EX with F_OWNER_TID: the descriptor's signals go to that thread only.
pub fn set_owner_thread(fd: RawFd, tid: libc::pid_t) -> io::Result<()> {
    let owner = FOwnerEx {
        kind: F_OWNER_TID,
        pid: tid,
    };
    // SAFETY: F_SETOWN_EX reads one f_owner_ex from the pointer, which points to a live struct
    // with the kernel's layout on our stack.
    syscall!(fcntl(fd, F_SETOWN_EX, &owner as *const FOwnerEx)).map(drop)
}

/// `sigtimedwait(2)` for one signal of `set`; None when the timeout passed or a handler
/// interrupted the wait. A None timeout waits forever.
pub fn sigtimedwait(
    set: &libc::sigset_t,
    timeout: Option<Duration>,
) -> io::Result<Option<SigPoll>> {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
    // SAFETY: `set` is initialised, `info` has room for a siginfo_t, and `ts_ptr` is null or
    // points to a timespec that lives until the call returns.
    let res = unsafe { libc::sigtimedwait(set, info.as_mut_ptr(), ts_ptr) };
    if res == -1 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: the buffer was zeroed and then filled by the kernel; SigPoll (32 bytes) describes
    // a prefix of the 128-byte siginfo_t, and read_unaligned makes no alignment assumption.
    Ok(Some(unsafe {
        std::ptr::read_unaligned(info.as_ptr().cast::<SigPoll>())
    }))
}
