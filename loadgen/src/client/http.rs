//! HTTP/1.1 client: one pre-built request (one per path of a `--mix`), responses parsed with
//! `httparse` and bodies skipped (Content-Length, chunked, or until the peer closes) without
//! being stored.

use super::{Client, Decoded, Outcome, ProtoError};
use crate::config::HttpOpts;

/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields per response.
const MAX_HEADERS: usize = 64;

pub struct Http {
    /// The request bytes of each class: one, or one per path of the mix.
    requests: Vec<Vec<u8>>,
    /// The mix's paths, in class order (empty without a mix).
    paths: Vec<String>,
    /// None: every request is `requests[0]`, and nothing is looked up per request.
    mix: Option<Mix>,
    head_only: bool,
    keepalive: bool,
}

/// A fixed interleaving of a mix's paths, so that runs are reproducible and a rare path comes
/// at even spacing rather than in random clumps: a cycle of as many slots as the weights add
/// up to (over their greatest common divisor), each path in as many slots as its weight, spread
/// by smooth weighted round robin (nginx's upstream balancer). `/a=99,/b=1` sends `/b` once in
/// every 100 requests; `/a=2,/b=1` goes a, b, a (never a, a, b).
#[derive(Clone, Debug)]
pub struct Mix {
    cycle: Vec<u8>,
}

impl Mix {
    /// `weights` by class; at most 256 classes, each weight at least 1 (the configuration is
    /// validated before).
    pub fn new(weights: &[u32]) -> Mix {
        let gcd = weights
            .iter()
            .fold(0u64, |g, &w| gcd(g, u64::from(w)))
            .max(1);
        let weights: Vec<i64> = weights
            .iter()
            .map(|&w| (u64::from(w) / gcd) as i64)
            .collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let cycle = (0..total)
            .map(|_| {
                for (c, w) in current.iter_mut().zip(&weights) {
                    *c += w;
                }
                // The highest current weight, the first on a tie.
                let pick = (0..current.len())
                    .rev()
                    .max_by_key(|&i| current[i])
                    .expect("a mix has a path");
                current[pick] -= total;
                pick as u8
            })
            .collect();
        Mix { cycle }
    }

    /// The class of request `seq`.
    pub fn class_of(&self, seq: u64) -> u8 {
        self.cycle[(seq % self.cycle.len() as u64) as usize]
    }

    /// Slots in one cycle: over this many consecutive requests each path gets exactly its share.
    pub fn cycle_len(&self) -> usize {
        self.cycle.len()
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
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
        let build = |path: &str| {
            let mut req = format!(
                "{} {} HTTP/1.1\r\nHost: {}\r\n",
                opts.method, path, opts.host
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
            request
        };
        let (requests, paths, mix) = if opts.mix.is_empty() {
            (vec![build(&opts.path)], Vec::new(), None)
        } else {
            let weights: Vec<u32> = opts.mix.iter().map(|p| p.weight).collect();
            (
                opts.mix.iter().map(|p| build(&p.path)).collect(),
                opts.mix.iter().map(|p| p.path.clone()).collect(),
                Some(Mix::new(&weights)),
            )
        };
        Http {
            requests,
            paths,
            mix,
            head_only: opts.method == "HEAD",
            keepalive: opts.keepalive,
        }
    }

    /// The request bytes sent for every request (the first path's, with a mix).
    pub fn request(&self) -> &[u8] {
        &self.requests[0]
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
        out.extend_from_slice(&self.requests[0]);
    }

    fn classes(&self) -> Vec<String> {
        self.paths.clone()
    }

    fn class_of(&self, seq: u64) -> u8 {
        match &self.mix {
            None => 0,
            Some(m) => m.class_of(seq),
        }
    }

    fn encode_class(&mut self, _state: &mut State, class: u8, out: &mut Vec<u8>) {
        // A class past the table (a client without a mix) is the one request there is.
        let req = self
            .requests
            .get(class as usize)
            .unwrap_or(&self.requests[0]);
        out.extend_from_slice(req);
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
            mix: Vec::new(),
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

    /// The interleaving: exact shares over every cycle, the rare path evenly spaced, weights
    /// reduced by their common divisor, and no lookup without a mix.
    #[test]
    fn a_mix_interleaves_paths_in_exact_shares() {
        let m = Mix::new(&[2, 1]);
        assert_eq!(
            (0..6).map(|s| m.class_of(s)).collect::<Vec<_>>(),
            [0, 1, 0, 0, 1, 0]
        );
        let m = Mix::new(&[99, 1]);
        assert_eq!(m.cycle_len(), 100);
        let slow: Vec<u64> = (0..1000).filter(|&s| m.class_of(s) == 1).collect();
        assert_eq!(slow.len(), 10);
        assert!(slow.windows(2).all(|w| w[1] - w[0] == 100), "{slow:?}");
        assert_eq!(Mix::new(&[9900, 100]).cycle_len(), 100);
        let m = Mix::new(&[5, 3, 2]);
        let mut counts = [0; 3];
        for s in 7..7 + 10 * m.cycle_len() as u64 {
            counts[m.class_of(s) as usize] += 1;
        }
        assert_eq!(counts, [50, 30, 20]);

        let mut o = opts("GET");
        o.mix = vec![
            crate::config::PathWeight {
                path: "/a".into(),
                weight: 3,
            },
            crate::config::PathWeight {
                path: "/b".into(),
                weight: 1,
            },
        ];
        let mut c = Http::new(&o);
        assert_eq!(c.classes(), ["/a", "/b"]);
        let mut st = c.new_state(0);
        let mut out = Vec::new();
        c.encode_class(&mut st, 1, &mut out);
        assert!(out.starts_with(b"GET /b HTTP/1.1\r\n"));
        let single = Http::new(&opts("GET"));
        assert!(single.classes().is_empty());
        assert_eq!(single.class_of(12345), 0);
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
