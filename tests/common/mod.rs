//! Test support: start the real `c10k` binary on 127.0.0.1:0, wait for its ready line (never a
//! sleep), and talk to it over TCP.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A running server process, stopped with SIGTERM when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub ready_line: String,
}

impl Server {
    /// Starts `c10k serve --listen 127.0.0.1:0 <args>` and waits for the ready line.
    pub fn start(args: &[&str]) -> Server {
        Server::try_start(args).unwrap_or_else(|e| panic!("server {args:?} did not start: {e}"))
    }

    pub fn try_start(args: &[&str]) -> Result<Server, String> {
        Server::try_start_with(Command::new(env!("CARGO_BIN_EXE_c10k")), args)
    }

    /// Starts the server with its descriptor limit (soft and hard) set to `nofile`.
    pub fn start_with_fd_limit(nofile: u64, args: &[&str]) -> Server {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg(env!("CARGO_BIN_EXE_c10k"));
        Server::try_start_with(command, args)
            .unwrap_or_else(|e| panic!("server {args:?} did not start: {e}"))
    }

    /// Starts the server under `prlimit` with the given limits (e.g. `--nproc=24:24`).
    pub fn start_with_prlimit(limits: &[&str], args: &[&str]) -> Server {
        let mut command = Command::new("prlimit");
        command.args(limits).arg(env!("CARGO_BIN_EXE_c10k"));
        Server::try_start_with(command, args).unwrap_or_else(|e| {
            panic!("server {args:?} under prlimit {limits:?} did not start: {e}")
        })
    }

    fn try_start_with(mut command: Command, args: &[&str]) -> Result<Server, String> {
        let mut child = command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(reader.read_line(&mut line).map(|_| line));
            // Keep draining so the server never blocks on a full stdout pipe.
            let _ = io::copy(&mut reader, &mut io::sink());
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(line)) if !line.is_empty() => line.trim_end().to_string(),
            other => {
                let _ = child.kill();
                let status = child.wait().ok();
                return Err(format!("no ready line ({other:?}), exit status {status:?}"));
            }
        };
        let addr = parse_ready_line(&line).ok_or_else(|| format!("bad ready line: {line}"))?;
        Ok(Server {
            child,
            addr,
            ready_line: line,
        })
    }

    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("kill");
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn stop(self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.stop_after_signal()
    }

    /// Waits (bounded) for the exit status after a signal was sent.
    pub fn stop_after_signal(mut self) -> ExitStatus {
        wait_with_timeout(&mut self.child, Duration::from_secs(30)).expect("server did not exit")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = self.child.wait();
        }
    }
}

pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `listening on 127.0.0.1:PORT backend=NAME proto=P ...` → the address.
pub fn parse_ready_line(line: &str) -> Option<SocketAddr> {
    line.strip_prefix("listening on ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads HTTP responses off one stream, keeping what it read past the current one.
pub struct HttpReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: Read> HttpReader<R> {
    pub fn new(inner: R) -> Self {
        HttpReader {
            inner,
            buf: Vec::new(),
        }
    }

    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 65536];
        // EINTR is not the server's doing: a read under SO_RCVTIMEO fails with it when this
        // process was stopped and continued (signal(7)). Retried, as `read_exact` does.
        let n = loop {
            match self.inner.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// Reads one response; `head_only` for responses to HEAD (no body whatever the headers say).
    pub fn read_response(&mut self, head_only: bool) -> io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF before response head",
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        self.buf.drain(..head_end);
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only {
            return Ok(response);
        }
        if response
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            response.body = self.read_chunked()?;
        } else {
            let len: usize = response
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| io::Error::other("response without Content-Length"))?;
            while self.buf.len() < len {
                if !self.fill()? {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "EOF inside body",
                    ));
                }
            }
            response.body = self.buf.drain(..len).collect();
        }
        Ok(response)
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if !self.fill()? {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "EOF in chunk size",
                    ));
                }
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::other(format!("bad chunk size {size_text:?}")))?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        self.buf.drain(..i + 2);
                        if i == 0 {
                            return Ok(body);
                        }
                    } else if !self.fill()? {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "EOF in trailers",
                        ));
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if !self.fill()? {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in chunk"));
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// True if the peer closed cleanly with nothing more to read (a reset is an error).
    pub fn at_clean_eof(&mut self) -> io::Result<bool> {
        if !self.buf.is_empty() {
            return Ok(false);
        }
        Ok(!self.fill()?)
    }

    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection, reading one response.
pub fn http_once(server: &Server, request: &[u8]) -> Response {
    let mut stream = server.connect();
    stream.write_all(request).unwrap();
    HttpReader::new(stream)
        .read_response(request.starts_with(b"HEAD"))
        .expect("response")
}

/// Writes `data` from another thread while this one reads `expect_len` bytes back: a single
/// thread writing 4 MiB before reading would deadlock against a server with bounded buffers.
pub fn echo_round_trip(stream: &TcpStream, data: Vec<u8>, half_close: bool) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    let len = data.len();
    let handle = std::thread::spawn(move || {
        writer.write_all(&data).unwrap();
        if half_close {
            writer.shutdown(Shutdown::Write).unwrap();
        }
    });
    let mut received = Vec::with_capacity(len);
    let mut reader = stream;
    if half_close {
        reader.read_to_end(&mut received).unwrap();
    } else {
        let mut chunk = vec![0u8; 65536];
        while received.len() < len {
            let n = reader.read(&mut chunk).unwrap();
            assert!(n > 0, "EOF after {} of {len} echoed bytes", received.len());
            received.extend_from_slice(&chunk[..n]);
        }
    }
    handle.join().unwrap();
    received
}

/// Deterministic, non-repeating-looking test data.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// GET /stats as JSON.
/// A counter of a `/stats` document; a missing one fails the test with the document.
pub fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("/stats has no counter {name}: {stats}"))
}

/// Starts `backend` speaking `proto`, with `extra` arguments.
pub fn start_speaking(backend: &[&str], proto: &str, extra: &[&str]) -> Server {
    let mut args = backend.to_vec();
    args.extend(["--proto", proto]);
    args.extend(extra);
    Server::start(&args)
}

pub fn stats(server: &Server) -> serde_json::Value {
    let r = http_once(
        server,
        b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).expect("stats is JSON")
}

/// Resident set size of a process, from /proc.
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// RSS of a process and its direct children (a master and its workers), from /proc.
pub fn rss_kib_with_children(pid: i32) -> u64 {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    rss_kib(pid)
        + children
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .map(rss_kib)
            .sum::<u64>()
}

/// Bytes that have reached the server's sockets on `port` and that it has not read yet, summed
/// over its established connections (the `rx_queue` column of /proc/net/tcp).
pub fn unread_by_server(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields[1].rsplit(':').next()?, 16).ok()?;
            let established = fields[3] == "01";
            let rx_queue = u64::from_str_radix(fields[4].rsplit(':').next()?, 16).ok()?;
            (local_port == port && established).then_some(rx_queue)
        })
        .sum()
}

/// Waits until the server has read everything sent to it on `port` (no sleeping: polls
/// /proc/net/tcp), or panics after `IO_TIMEOUT`.
pub fn wait_until_server_has_read(port: u16) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while unread_by_server(port) > 0 {
        assert!(
            Instant::now() < deadline,
            "the server did not read what was sent"
        );
        std::thread::yield_now();
    }
}

/// One thread of the server held in a ptrace stop: unlike SIGSTOP, which stops every thread of
/// the process, this leaves the loop running while a worker takes no job. Released on drop.
pub struct FrozenThread {
    tid: Pid,
}

impl FrozenThread {
    pub fn freeze(tid: Pid) -> FrozenThread {
        // SAFETY: PTRACE_SEIZE and PTRACE_INTERRUPT read no memory of ours (addr and data are
        // 0); the thread belongs to a child of this process.
        let seized = unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid.as_raw(), 0, 0) };
        assert_eq!(
            seized,
            0,
            "ptrace(SEIZE) the thread: {}",
            std::io::Error::last_os_error()
        );
        let frozen = FrozenThread { tid };
        // SAFETY: as above.
        let interrupted = unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid.as_raw(), 0, 0) };
        assert_eq!(interrupted, 0, "{}", std::io::Error::last_os_error());
        match waitpid(tid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(..) | WaitStatus::Stopped(..)) => frozen,
            other => panic!("the thread did not stop: {other:?}"),
        }
    }
}

impl Drop for FrozenThread {
    fn drop(&mut self) {
        // SAFETY: as in `freeze`; the thread is in the ptrace stop that PTRACE_INTERRUPT made.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.tid.as_raw(), 0, 0) };
    }
}
