//! HTTP/1.1 server side, sans-I/O.
//!
//! Why it is shaped this way:
//! - **Memory per idle connection.** An [`HttpSession`] lives in every connection, so it is a few
//!   words with no heap allocation while idle: the request head is parsed in place in the driver's
//!   input buffer (httparse into a stack array of headers), nothing is copied out of it, and the
//!   only per-request allocation is the body buffer of a chunked `POST /echo`, freed when its
//!   response has been written.
//! - **Cost per request.** The keep-alive `GET /plaintext` path is one pass over the head
//!   (`head::simple_head`, eight bytes a step; httparse only for heads outside its common form),
//!   the header names compared by length then case-insensitively, and the response copied whole
//!   from two static pieces around the cached date (see `response.rs`); no `format!`, no `String`.
//! - **Back-pressure.** Output is produced only while the output buffer is under
//!   [`OUTPUT_HIGH_WATER`]: bodies that may be large (`/bytes/N` up to 1 GiB, echoed bodies) are
//!   streamed through that window and input that cannot be answered yet is left unconsumed, so a
//!   client that does not read its responses stops being read from.
//! - **Every split of the input gives the same output.** The head limits (request line, header
//!   section) are decided on a prefix of fixed length, and the chunked decoder is incremental,
//!   so a request delivered one byte per read is answered exactly as one delivered whole.
//!   Re-parsing a partial head only happens when a new line has arrived (or a limit is reached),
//!   which keeps a slow-drip client linear rather than quadratic in its head size.
//! - **Failing closed.** When the framing of the stream is in doubt (malformed head, conflicting
//!   lengths, an unsupported transfer coding, limits exceeded) the only safe continuation is to
//!   answer, close and ignore everything else: such responses carry `Connection: close` and the
//!   session swallows further input so the driver's drain finishes quickly.
//!
//! Decisions on the points the RFCs leave open:
//! - Routing answers (404, 405) keep the connection when it can be kept; a request body on such
//!   a route is skipped if it has a Content-Length; a chunked body, or a body held back behind
//!   `Expect: 100-continue`, gets the answer with `Connection: close` instead.
//! - `GET /bytes/N`: `N` decimal digits only (else 404); `N > 1 GiB` is 400 (and closes). Byte `i`
//!   of the body is [`bytes_pattern`]`(i)`: `b'a' + i % 26`, i.e. `abc…xyzabc…`.
//! - `Env::count_request` is called once per request answered with a final response, errors
//!   included: once per parsed request head, and once per head rejected before it parsed.
//! - `GET /sleep/MS` and `GET /work/N` (only with `--blocking-routes`, else 404): `MS` at most
//!   [`MAX_SLEEP_MS`], `N` at most [`MAX_WORK_ITERATIONS`], decimal digits only; anything else
//!   after the slash is 400 (and closes). The session pauses on the work (see
//!   [`super::blocking`]) and answers when the driver resumes it: `200`, `text/plain`, the body
//!   `slept MS ms` or the hash's value in 16 hex digits, each with a final LF.
//! - The query string is ignored for routing; an absolute-form target is routed by its path.
//! - A chunked `POST /echo` is answered with Content-Length once the body is complete; with
//!   `Expect: 100-continue` a `100 Continue` goes first. A Content-Length `POST /echo` is answered
//!   at once and its body streamed back as it arrives.
//! - Framing is strict (RFC 9112 to the letter, and strict where it leaves a choice), because a
//!   server that reads a request differently from a proxy in front of it can be smuggled
//!   requests: no bare LF or bare CR in the head, a case-sensitive `HTTP/x.y`, Host required on
//!   HTTP/1.1, no Transfer-Encoding on HTTP/1.0 (the head's grammar: `head.rs`), strict chunked
//!   framing (`chunked.rs`). Each rule, its RFC section, its test and how nginx, hyper, h11 and
//!   llhttp differ are listed in `docs/robustness.md`, "HTTP/1.1 framing rules".

mod bytes;
mod chunked;
mod head;
mod response;
mod routes;
#[cfg(test)]
mod tests;

use std::mem::MaybeUninit;

use super::blocking::{BlockingWork, WorkDone, MAX_SLEEP_MS, MAX_WORK_ITERATIONS};
use super::{Env, Status, OUTPUT_HIGH_WATER};
use chunked::{ChunkError, Decoder};
use head::{
    bare_lf, find_byte, leading_empty_lines, parse_length, request_line, simple_head, target_path,
    Fields, SimpleHead,
};
use response::{Canned, ConnectionHeader};

pub use chunked::{MAX_CHUNK_LINE, MAX_TRAILER};

/// Longest request line (method, target, version), not counting its CRLF; longer: 414.
pub const MAX_REQUEST_LINE: usize = 8192;
/// Largest header section (every field line, not counting the final empty line); larger: 431.
pub const MAX_HEADER_SECTION: usize = 8192;
/// Most header fields in a request; more: 431.
pub const MAX_HEADERS: usize = 100;
/// Largest request body; larger: 413.
pub const MAX_BODY: usize = 1 << 20;
/// Largest `N` in `GET /bytes/N`; larger: 400.
pub const MAX_BYTES: u64 = 1 << 30;

/// The body of `GET /` and `GET /plaintext`.
pub const HELLO: &[u8] = b"Hello, World!";

/// Byte `i` of every `/bytes/N` body: `b'a' + i % 26`.
#[inline]
pub const fn bytes_pattern(i: u64) -> u8 {
    b'a' + (i % 26) as u8
}

/// The LF ending the request line must lie before this offset.
const LINE_CAP: usize = MAX_REQUEST_LINE + 2;
/// Room after the request line for the header section and its final empty line.
const FIELDS_CAP: usize = MAX_HEADER_SECTION + 2;

/// A complete `503 Service Unavailable` response with `Connection: close`, written to a
/// connection the server is refusing.
pub fn service_unavailable(env: &dyn Env) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    response::canned(
        &mut out,
        env,
        response::SERVICE_UNAVAILABLE,
        ConnectionHeader::Close,
        None,
        false,
    );
    out
}

/// One HTTP connection's protocol state.
#[derive(Debug)]
pub struct HttpSession {
    state: State,
    /// While a head is incomplete: how many of its bytes the last parse saw (0: none).
    scanned: u16,
    /// While a head is incomplete: the buffered length at which a limit is exceeded.
    cap: u16,
    /// The `Connection` header of the response being produced; `Close` ends the session after it.
    conn: ConnectionHeader,
    /// The last `advance` stopped at the high-water mark with input left unconsumed.
    stalled: bool,
    /// The server is shutting down: the response in progress, or the next one, is the last.
    draining: bool,
    /// The driver sends lent output itself (`bytes.rs`): a `/bytes` body is lent, not copied.
    lend: bool,
}

#[derive(Debug)]
enum State {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Reading a Content-Length body: echoed straight back, or skipped.
    Body { remaining: u32, echo: bool },
    /// Decoding the chunked body of a `POST /echo`.
    Chunked(Box<EchoBody>),
    /// Writing out the body of a chunked `POST /echo` once decoded.
    Replay(Box<EchoBody>),
    /// Generating the body of `GET /bytes/N`.
    Bytes { remaining: u32, phase: u8 },
    /// Paused on blocking work until the driver resumes it; then `discard` body bytes are
    /// skipped.
    Blocked {
        work: BlockingWork,
        discard: u32,
        head_only: bool,
    },
    /// Answered and closing: everything further is ignored.
    Closing,
}

#[derive(Debug, Default)]
struct EchoBody {
    dec: Decoder,
    body: Vec<u8>,
    sent: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Post,
    Options,
    /// Known, but served by no route here.
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Hello,
    Stats,
    Echo,
    Bytes(u64),
    /// `/sleep/MS` and `/work/N`; `None`: not a number.
    Sleep(Option<u64>),
    Work(Option<u64>),
    /// The asterisk-form target of `OPTIONS *` (RFC 9112 §3.2.4).
    Server,
    NotFound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyLen {
    Length(u32),
    Chunked,
}

impl Default for HttpSession {
    fn default() -> Self {
        HttpSession::new()
    }
}

impl HttpSession {
    pub const fn new() -> HttpSession {
        HttpSession {
            state: State::Head,
            scanned: 0,
            cap: 0,
            conn: ConnectionHeader::Default,
            stalled: false,
            draining: false,
            lend: false,
        }
    }

    /// The server is shutting down (RFC 9112 §9.6): the response in progress is the last one,
    /// and if none is, the next request received is answered with `Connection: close`. Either way
    /// the session then turns to `CloseAfterFlush`.
    pub fn drain(&mut self) {
        self.draining = true;
        if !matches!(self.state, State::Head) {
            self.conn = ConnectionHeader::Close;
        }
    }

    pub fn status(&self) -> Status {
        match self.state {
            State::Closing => Status::CloseAfterFlush,
            _ => Status::Open,
        }
    }

    /// True while a response body is being generated (`/bytes/N`, a decoded chunked echo), or
    /// when the last call stopped at the high-water mark with input it could still answer.
    pub fn has_pending_output(&self) -> bool {
        self.stalled || matches!(self.state, State::Bytes { .. } | State::Replay(_))
    }

    /// The blocking work this session is paused on, if any.
    pub fn blocking_work(&self) -> Option<BlockingWork> {
        match self.state {
            State::Blocked { work, .. } => Some(work),
            _ => None,
        }
    }

    /// The driver has run the blocking work: answer it, and go on with the request's body (if
    /// one is to be skipped) or the next request.
    pub fn resume(&mut self, done: WorkDone, out: &mut Vec<u8>, env: &mut dyn Env) {
        let State::Blocked {
            work,
            discard,
            head_only,
        } = self.state
        else {
            return;
        };
        let mut digits = [0u8; 20];
        let mut hex = [0u8; 17];
        let pieces: [&[u8]; 3] = match work {
            BlockingWork::Sleep { .. } => {
                [b"slept ", response::decimal(done.0, &mut digits), b" ms\n"]
            }
            BlockingWork::Hash { .. } => {
                for (i, b) in hex[..16].iter_mut().enumerate() {
                    *b = b"0123456789abcdef"[(done.0 >> (60 - 4 * i) & 0xf) as usize];
                }
                hex[16] = b'\n';
                [b"", &hex, b""]
            }
        };
        let len = pieces.iter().map(|p| p.len()).sum::<usize>();
        response::head(
            out,
            env,
            b"200 OK",
            response::TEXT,
            len as u64,
            self.conn,
            None,
        );
        if !head_only {
            for piece in pieces {
                out.extend_from_slice(piece);
            }
        }
        self.after_response(discard);
    }

    /// True while waiting for a request head: between requests, or with part of one received.
    pub fn awaiting_head(&self) -> bool {
        matches!(self.state, State::Head)
    }

    /// The client took too long to send its request head: answer 408 and close.
    pub fn request_timeout(&mut self, out: &mut Vec<u8>, env: &dyn Env) {
        self.reject(out, env, response::REQUEST_TIMEOUT, false);
    }

    /// See [`crate::proto::Session::advance`].
    pub fn advance(&mut self, input: &[u8], out: &mut Vec<u8>, env: &mut dyn Env) -> usize {
        let mut pos = 0;
        loop {
            if let State::Closing = self.state {
                pos = input.len();
                break;
            }
            if out.len() >= OUTPUT_HIGH_WATER {
                break;
            }
            let avail = &input[pos..];
            // Each step either makes progress (consumes, produces or changes state) or returns
            // None: it needs more input.
            let step = match self.state {
                State::Head => self.on_head(avail, out, env),
                State::Body { .. } => self.on_body(avail, out),
                State::Chunked(_) => self.on_chunked(avail, out, env),
                State::Replay(_) => self.on_replay(out),
                State::Bytes { .. } => self.on_bytes(out),
                State::Blocked { .. } | State::Closing => None,
            };
            match step {
                Some(n) => pos += n,
                None => break,
            }
        }
        self.stalled = pos < input.len() && out.len() >= OUTPUT_HIGH_WATER;
        pos
    }

    /// The response in progress is complete.
    fn finish(&mut self) {
        self.state = if self.conn == ConnectionHeader::Close {
            State::Closing
        } else {
            State::Head
        };
    }

    /// Answer with an error, `Connection: close`, and stop reading.
    fn reject(&mut self, out: &mut Vec<u8>, env: &dyn Env, c: Canned, head_only: bool) {
        self.conn = ConnectionHeader::Close;
        response::canned(out, env, c, ConnectionHeader::Close, None, head_only);
        self.state = State::Closing;
    }

    fn on_head(&mut self, avail: &[u8], out: &mut Vec<u8>, env: &mut dyn Env) -> Option<usize> {
        if avail.is_empty() {
            return None;
        }
        if self.scanned != 0 {
            // The last parse found this head incomplete: until a line ends or a limit is
            // reached, parsing again could only say so again (errors surface at line ends, and
            // a bare CR as soon as the byte after it arrives).
            let s = usize::from(self.scanned);
            if s <= avail.len()
                && avail.len() < usize::from(self.cap)
                && !avail[s - 1..].iter().any(|&b| b == b'\n' || b == b'\r')
            {
                self.scanned = avail.len() as u16;
                return None;
            }
        }
        if let Some(n) = self.on_valid_head(avail, out, env) {
            return Some(n);
        }
        // Limits are judged on a prefix of fixed length, so the outcome does not depend on how
        // the head was split across reads. Empty lines before the request line (RFC 9112 §2.2)
        // count against the request line's limit, so that a stream of CRLFs is bounded too.
        let lim = avail.len().min(LINE_CAP);
        let lead = leading_empty_lines(&avail[..lim]);
        // httparse is lenient where a request line may be strict; this check runs first, so its
        // verdict (the first thing wrong in the stream) wins. It sees only the request line's
        // allowance: a line that does not end within it is 414.
        let line = match &avail[lead..lim] {
            // Perhaps the start of one more empty line.
            b"\r" => Ok(None),
            rest => request_line(rest),
        };
        let line = match line {
            Ok(line) => line,
            Err(c) => return Some(self.refuse(out, env, c)),
        };
        let Some(line) = line else {
            return if avail.len() >= LINE_CAP {
                Some(self.refuse(out, env, response::URI_TOO_LONG))
            } else {
                self.wait(avail.len(), LINE_CAP)
            };
        };
        // The field lines have their own allowance, counted from the end of the request line.
        let (cap, limit) = (lead + line.len + FIELDS_CAP, response::FIELDS_TOO_LARGE);
        let view = &avail[..avail.len().min(cap)];
        // httparse knows only HTTP/1.0 and 1.1; a later 1.x is read as 1.1 (RFC 9110 §2.5), so
        // it gets a copy that says so. Rare: only such requests pay for it.
        let patched: Vec<u8>;
        let src = if line.minor > 1 {
            let mut v = view.to_vec();
            v[lead + line.minor_at] = b'1';
            patched = v;
            &patched[..]
        } else {
            view
        };
        let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(src, &mut headers) {
            Ok(httparse::Status::Complete(n)) => {
                if bare_lf(&src[..n]) {
                    return Some(self.refuse(out, env, response::BAD_REQUEST));
                }
                self.scanned = 0;
                self.on_request(&req, line.minor.min(1), out, env);
                Some(n)
            }
            Ok(httparse::Status::Partial) => {
                if bare_lf(src.strip_suffix(b"\r").unwrap_or(src)) {
                    Some(self.refuse(out, env, response::BAD_REQUEST))
                } else if avail.len() >= cap {
                    Some(self.refuse(out, env, limit))
                } else {
                    self.wait(avail.len(), cap)
                }
            }
            Err(e) => {
                let c = match e {
                    // Unless a bare LF came first: the field lines httparse counted end at the
                    // (MAX_HEADERS + 1)th LF after the request line.
                    httparse::Error::TooManyHeaders => {
                        let fields = lead + line.len;
                        let end = src[fields..]
                            .iter()
                            .enumerate()
                            .filter(|&(_, &b)| b == b'\n')
                            .nth(MAX_HEADERS)
                            .map_or(src.len(), |(i, _)| fields + i + 1);
                        if bare_lf(&src[..end]) {
                            response::BAD_REQUEST
                        } else {
                            response::FIELDS_TOO_LARGE
                        }
                    }
                    _ => response::BAD_REQUEST,
                };
                Some(self.refuse(out, env, c))
            }
        }
    }

    /// The common case, cheaply: a head that has arrived whole and breaks no rule. The most
    /// common form of it is read by [`simple_head`] without httparse; otherwise httparse
    /// parses it in one pass and the strict request-line rules are checked on the slices it
    /// returns (a token method, a visible-ASCII target, 1.0 or 1.1), within both limits and with
    /// no bare LF. `None` for anything else, which [`Self::on_head`] then takes the careful way,
    /// finding the first fault in the stream; a head accepted here is one it would accept too.
    #[inline]
    fn on_valid_head(
        &mut self,
        avail: &[u8],
        out: &mut Vec<u8>,
        env: &mut dyn Env,
    ) -> Option<usize> {
        if let Some(head) = simple_head(avail) {
            let n = head.len;
            self.scanned = 0;
            if head.is_plain_hello() && !self.draining {
                // What `answer` does for it, without its general routing.
                env.count_request();
                self.conn = ConnectionHeader::Default;
                response::hello(out, env);
                return Some(n);
            }
            self.answer(head, out, env);
            return Some(n);
        }
        let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let Ok(httparse::Status::Complete(n)) = req.parse_with_uninit_headers(avail, &mut headers)
        else {
            return None;
        };
        let (method, target, minor) = (req.method?, req.path?, req.version?);
        // Where the field lines start: the request line (and any empty lines before it) ends
        // there.
        let fields = req.headers.first().map_or(n - 2, |h| {
            h.name.as_ptr() as usize - avail.as_ptr() as usize
        });
        let valid = fields <= LINE_CAP
            && n <= fields + FIELDS_CAP
            && method.bytes().all(chunked::tchar)
            && target
                .bytes()
                .fold(true, |ok, b| ok & (b.wrapping_sub(0x21) < 0x5e))
            && lines_end_in_crlf(avail, n, fields, req.headers);
        if !valid {
            return None;
        }
        self.scanned = 0;
        self.on_request(&req, minor, out, env);
        Some(n)
    }

    /// The head is incomplete: remember how much was seen and where its limit lies.
    fn wait(&mut self, len: usize, cap: usize) -> Option<usize> {
        // Both fit: len < cap <= LINE_CAP + FIELDS_CAP < u16::MAX.
        self.scanned = len as u16;
        self.cap = cap as u16;
        None
    }

    /// A head rejected before it parsed: count it as a request, answer, close.
    fn refuse(&mut self, out: &mut Vec<u8>, env: &mut dyn Env, c: Canned) -> usize {
        self.scanned = 0;
        env.count_request();
        self.reject(out, env, c, false);
        0
    }

    /// A response is complete: skip the request's body (`discard` bytes), or go on to the next
    /// request (or close).
    fn after_response(&mut self, discard: u32) {
        if discard > 0 && self.conn != ConnectionHeader::Close {
            self.state = State::Body {
                remaining: discard,
                echo: false,
            };
        } else {
            self.finish();
        }
    }

    /// Pause on blocking work: the driver runs it and calls [`Self::resume`].
    fn block(&mut self, work: BlockingWork, discard: u32, head_only: bool) {
        self.state = State::Blocked {
            work,
            discard,
            head_only,
        };
    }

    fn on_body(&mut self, avail: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        let State::Body { remaining, echo } = &mut self.state else {
            return None;
        };
        if avail.is_empty() {
            return None;
        }
        let mut n = avail.len().min(*remaining as usize);
        if *echo {
            n = n.min(OUTPUT_HIGH_WATER.saturating_sub(out.len()));
            out.extend_from_slice(&avail[..n]);
        }
        *remaining -= n as u32;
        if *remaining == 0 {
            self.finish();
        }
        Some(n)
    }

    fn on_chunked(&mut self, avail: &[u8], out: &mut Vec<u8>, env: &mut dyn Env) -> Option<usize> {
        let State::Chunked(c) = &mut self.state else {
            return None;
        };
        if avail.is_empty() {
            return None;
        }
        match c.dec.feed(avail, &mut c.body, MAX_BODY) {
            Ok(n) => {
                if c.dec.is_done() {
                    let len = c.body.len() as u64;
                    response::head(out, env, b"200 OK", response::OCTETS, len, self.conn, None);
                    if let State::Chunked(c) = std::mem::replace(&mut self.state, State::Head) {
                        self.state = State::Replay(c);
                    }
                }
                Some(n)
            }
            Err(e) => {
                let c = match e {
                    ChunkError::Malformed => response::BAD_REQUEST,
                    ChunkError::TooLarge => response::CONTENT_TOO_LARGE,
                    ChunkError::TrailersTooLarge => response::FIELDS_TOO_LARGE,
                };
                self.reject(out, env, c, false);
                Some(0)
            }
        }
    }

    fn on_replay(&mut self, out: &mut Vec<u8>) -> Option<usize> {
        let State::Replay(c) = &mut self.state else {
            return None;
        };
        let rest = c.body.get(c.sent..).unwrap_or_default();
        let n = rest.len().min(OUTPUT_HIGH_WATER.saturating_sub(out.len()));
        out.extend_from_slice(&rest[..n]);
        c.sent += n;
        if c.sent >= c.body.len() {
            self.finish();
        }
        Some(0)
    }
}

/// No bare LF in a head httparse accepted whole (RFC 9112 §2.2), checked at its line ends only:
/// httparse admits no CR that is not followed by LF, and ends a line at its first LF, so the
/// head is CRLF-only exactly when the byte before each line's LF is a CR. Those are the request
/// line's end (just before `fields`, where the field lines start), each field line's end (after
/// its value and the trailing SP/HTAB that httparse trims off it) and the final empty line. A
/// head that starts with an empty line is left to [`head::bare_lf`] (the caller falls back).
#[inline]
fn lines_end_in_crlf(
    avail: &[u8],
    n: usize,
    fields: usize,
    headers: &[httparse::Header<'_>],
) -> bool {
    if fields < 2 || n < 2 || matches!(avail[0], b'\r' | b'\n') {
        return false;
    }
    if avail[fields - 2] != b'\r' || avail[n - 2] != b'\r' {
        return false;
    }
    let base = avail.as_ptr() as usize;
    headers.iter().all(|h| {
        let mut end = h.value.as_ptr() as usize - base + h.value.len();
        while matches!(avail.get(end), Some(b' ' | b'\t')) {
            end += 1;
        }
        avail.get(end) == Some(&b'\r')
    })
}
