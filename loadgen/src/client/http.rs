//! HTTP/1.1 client: one pre-built request, responses parsed with `httparse` and bodies skipped
//! (Content-Length, chunked, or until the peer closes) without being stored.

use super::{Client, Decoded, Outcome, ProtoError};
use crate::config::HttpOpts;

/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields per response.
const MAX_HEADERS: usize = 64;

pub struct Http {
    request: Vec<u8>,
    head_only: bool,
    keepalive: bool,
}

#[derive(Debug)]
pub enum State {
    Head,
    /// `last`: the response said it is the last on the connection (RFC 9112 §9.6).
    Body {
        remaining: u64,
        status: u16,
        last: bool,
    },
    Chunked {
        skip: ChunkSkip,
        status: u16,
        last: bool,
    },
    UntilClose {
        status: u16,
    },
}

impl Http {
    pub fn new(opts: &HttpOpts) -> Http {
        let mut req = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\n",
            opts.method, opts.path, opts.host
        );
        if opts.body_size > 0 || matches!(opts.method.as_str(), "POST" | "PUT" | "PATCH") {
            req.push_str(&format!("Content-Length: {}\r\n", opts.body_size));
        }
        if !opts.keepalive {
            req.push_str("Connection: close\r\n");
        }
        req.push_str("\r\n");
        let mut request = req.into_bytes();
        request.extend((0..opts.body_size).map(|i| b'a' + (i % 26) as u8));
        Http {
            request,
            head_only: opts.method == "HEAD",
            keepalive: opts.keepalive,
        }
    }

    /// The request bytes sent for every request.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    fn head(&self, input: &[u8]) -> Result<Option<(usize, State, bool)>, ProtoError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(input) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
                return Err(ProtoError(format!("response head over {MAX_HEAD} bytes")))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(ProtoError(format!("bad response head: {e}"))),
        };
        let status = resp.code.unwrap_or(0);
        let (mut length, mut chunked) = (None, false);
        // RFC 9112 §9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only with `keep-alive`.
        let (mut close, mut keep_alive) = (false, false);
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok());
                length = Some(v.ok_or_else(|| ProtoError("bad Content-Length".into()))?);
            } else if h.name.eq_ignore_ascii_case("connection") {
                for option in h.value.split(|&b| b == b',') {
                    close |= option.trim_ascii().eq_ignore_ascii_case(b"close");
                    keep_alive |= option.trim_ascii().eq_ignore_ascii_case(b"keep-alive");
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
        }
        let last = close || (resp.version == Some(0) && !keep_alive);
        // 1xx is an interim response: the real one follows.
        if (100..200).contains(&status) {
            return Ok(Some((len, State::Head, false)));
        }
        let state = if self.head_only || status == 204 || status == 304 {
            State::Body {
                remaining: 0,
                status,
                last,
            }
        } else if chunked {
            State::Chunked {
                skip: ChunkSkip::default(),
                status,
                last,
            }
        } else if let Some(n) = length {
            State::Body {
                remaining: n,
                status,
                last,
            }
        } else {
            State::UntilClose { status }
        };
        Ok(Some((len, state, true)))
    }
}

impl Client for Http {
    type State = State;

    fn new_state(&self, _conn_id: u32) -> State {
        State::Head
    }

    fn reset(&self, state: &mut State) {
        *state = State::Head;
    }

    fn encode(&mut self, _state: &mut State, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.request);
    }

    fn decode(&mut self, state: &mut State, input: &[u8]) -> Result<Decoded, ProtoError> {
        let done = |consumed, status, last| Decoded {
            consumed,
            outcome: Some(Outcome::Status(status)),
            last,
        };
        match state {
            State::Head => match self.head(input)? {
                None => Ok(Decoded {
                    consumed: 0,
                    outcome: None,
                    last: false,
                }),
                Some((len, next, _)) => {
                    if let State::Body {
                        remaining: 0,
                        status,
                        last,
                    } = next
                    {
                        return Ok(done(len, status, last));
                    }
                    *state = next;
                    Ok(Decoded {
                        consumed: len,
                        outcome: None,
                        last: false,
                    })
                }
            },
            State::Body {
                remaining,
                status,
                last,
            } => {
                let take = (*remaining).min(input.len() as u64);
                *remaining -= take;
                if *remaining == 0 {
                    let (status, last) = (*status, *last);
                    *state = State::Head;
                    return Ok(done(take as usize, status, last));
                }
                Ok(Decoded {
                    consumed: take as usize,
                    outcome: None,
                    last: false,
                })
            }
            State::Chunked { skip, status, last } => {
                let used = skip.feed(input)?;
                if skip.is_done() {
                    let (status, last) = (*status, *last);
                    *state = State::Head;
                    return Ok(done(used, status, last));
                }
                Ok(Decoded {
                    consumed: used,
                    outcome: None,
                    last: false,
                })
            }
            State::UntilClose { .. } => Ok(Decoded {
                consumed: input.len(),
                outcome: None,
                last: false,
            }),
        }
    }

    fn on_eof(&mut self, state: &mut State) -> Option<Outcome> {
        match *state {
            State::UntilClose { status } => {
                *state = State::Head;
                Some(Outcome::Status(status))
            }
            _ => None,
        }
    }

    fn mid_response(&self, state: &State) -> bool {
        !matches!(state, State::Head)
    }

    fn close_after_response(&self) -> bool {
        !self.keepalive
    }
}

/// Skips a chunked body (RFC 9112 §7.1) byte by byte across reads: sizes, extensions, data,
/// trailers.
#[derive(Debug, Default)]
pub struct ChunkSkip {
    phase: Phase,
    size: u64,
    digits: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Size,
    /// Extensions and the line end after a size.
    Ext,
    Data,
    /// The CRLF after chunk data.
    DataEnd,
    TrailerStart,
    TrailerLine,
    FinalLf,
    Done,
}

impl ChunkSkip {
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Consumes up to the end of the body; returns the bytes used.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, ProtoError> {
        let bad = || ProtoError("bad chunked body".into());
        let mut i = 0;
        while i < input.len() && self.phase != Phase::Done {
            let b = input[i];
            match self.phase {
                Phase::Size => match (b as char).to_digit(16) {
                    Some(d) if self.digits < 16 => {
                        self.size = self.size * 16 + u64::from(d);
                        self.digits += 1;
                    }
                    Some(_) => return Err(bad()),
                    None if self.digits == 0 => return Err(bad()),
                    None if b == b'\n' => self.end_size_line(),
                    None => self.phase = Phase::Ext,
                },
                Phase::Ext => {
                    if b == b'\n' {
                        self.end_size_line();
                    }
                }
                Phase::Data => {
                    let take = self.size.min((input.len() - i) as u64);
                    self.size -= take;
                    i += take as usize;
                    if self.size == 0 {
                        self.phase = Phase::DataEnd;
                    }
                    continue;
                }
                Phase::DataEnd => match b {
                    b'\r' => {}
                    b'\n' => self.phase = Phase::Size,
                    _ => return Err(bad()),
                },
                Phase::TrailerStart => {
                    self.phase = match b {
                        b'\r' => Phase::FinalLf,
                        b'\n' => Phase::Done,
                        _ => Phase::TrailerLine,
                    }
                }
                Phase::TrailerLine => {
                    if b == b'\n' {
                        self.phase = Phase::TrailerStart;
                    }
                }
                Phase::FinalLf => {
                    if b != b'\n' {
                        return Err(bad());
                    }
                    self.phase = Phase::Done;
                }
                Phase::Done => unreachable!("loop stops at Done"),
            }
            i += 1;
        }
        Ok(i)
    }

    fn end_size_line(&mut self) {
        self.phase = if self.size == 0 {
            Phase::TrailerStart
        } else {
            Phase::Data
        };
        self.digits = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(method: &str) -> HttpOpts {
        HttpOpts {
            host: "h".into(),
            path: "/".into(),
            method: method.into(),
            body_size: 0,
            keepalive: true,
        }
    }

    /// Feeds `input` in pieces of `step` bytes and returns the statuses decoded.
    fn decode_all(input: &[u8], step: usize) -> Vec<u16> {
        let mut c = Http::new(&opts("GET"));
        let mut st = c.new_state(0);
        let (mut buf, mut out) = (Vec::new(), Vec::new());
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            let mut pos = 0;
            loop {
                let d = c.decode(&mut st, &buf[pos..]).unwrap();
                pos += d.consumed;
                if let Some(Outcome::Status(s)) = d.outcome {
                    out.push(s);
                } else if d.consumed == 0 {
                    break;
                }
            }
            buf.drain(..pos);
        }
        out
    }

    #[test]
    fn content_length_chunked_and_pipelined_in_any_split() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 No\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 X\r\nContent-Length: 0\r\n\r\n";
        for step in [1, 2, 3, 7, input.len()] {
            assert_eq!(decode_all(input, step), vec![200, 404, 503], "step {step}");
        }
    }

    /// RFC 9112 §9.6 / §9.3: `Connection: close` (any case, in a list) makes a response the
    /// last on its connection, and so does HTTP/1.0 without `keep-alive`.
    #[test]
    fn a_response_that_closes_the_connection_is_marked_last() {
        let cases: [(&[u8], bool); 5] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
            (b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 2\r\n\r\nok", true),
            (b"HTTP/1.1 200 OK\r\nConnection: x, close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", true),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", true),
            (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", false),
        ];
        for (input, last) in cases {
            let mut c = Http::new(&opts("GET"));
            let mut st = c.new_state(0);
            let mut pos = 0;
            let d = loop {
                let d = c.decode(&mut st, &input[pos..]).unwrap();
                pos += d.consumed;
                if d.outcome.is_some() {
                    break d;
                }
            };
            assert_eq!(pos, input.len());
            assert_eq!(d.last, last, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let mut c = Http::new(&opts("GET"));
        let mut st = c.new_state(0);
        assert!(c.decode(&mut st, b"NOT HTTP\r\n\r\n").is_err());
        let mut skip = ChunkSkip::default();
        assert!(skip.feed(b"zz\r\n").is_err());
    }

    #[test]
    fn request_has_length_for_post_and_close_without_keepalive() {
        let mut o = opts("POST");
        o.body_size = 3;
        o.keepalive = false;
        let r = String::from_utf8(Http::new(&o).request().to_vec()).unwrap();
        assert!(r.starts_with("POST / HTTP/1.1\r\n"));
        assert!(r.contains("Content-Length: 3\r\n") && r.contains("Connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\nabc"));
    }
}
