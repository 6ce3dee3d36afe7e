//! Behaviour of [`HttpSession`] driven the way a real driver drives it.

use super::*;
use crate::proto::{Env, Session, Status, OUTPUT_HIGH_WATER};
use proptest::prelude::*;

const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

struct TestEnv {
    requests: u64,
}

impl TestEnv {
    fn new() -> TestEnv {
        TestEnv { requests: 0 }
    }
}

impl Env for TestEnv {
    fn http_date(&self) -> &[u8] {
        DATE
    }
    fn stats_json(&self) -> String {
        format!("{{\"requests\":{}}}", self.requests)
    }
    fn count_request(&mut self) {
        self.requests += 1;
    }
}

/// What a driver observed.
struct Run {
    out: Vec<u8>,
    status: Status,
    /// Input bytes left unconsumed at the end.
    left: usize,
    requests: u64,
    /// Largest output buffer seen after an `advance`.
    peak: usize,
}

/// Emulate a driver: feed `pieces` one read at a time; after each read call `advance` until it
/// makes no progress, draining at most `drain` output bytes between calls (as a socket would).
fn drive_with(pieces: &[&[u8]], drain: usize) -> Run {
    assert!(drain > 0);
    let mut s = HttpSession::new();
    let mut env = TestEnv::new();
    let (mut input, mut out, mut all) = (Vec::new(), Vec::new(), Vec::new());
    let mut peak = 0;
    let mut next = pieces.iter();
    loop {
        let before = out.len();
        let n = s.advance(&input, &mut out, &mut env);
        assert!(n <= input.len());
        peak = peak.max(out.len());
        input.drain(..n);
        let produced = out.len() != before;
        let k = out.len().min(drain);
        all.extend(out.drain(..k));
        if n > 0 || produced || k > 0 {
            continue;
        }
        // No progress possible without more input.
        assert!(!s.has_pending_output(), "pending output but no progress");
        match next.next() {
            Some(p) => input.extend_from_slice(p),
            None => break,
        }
    }
    Run {
        out: all,
        status: s.status(),
        left: input.len(),
        requests: env.requests,
        peak,
    }
}

fn drive(pieces: &[&[u8]]) -> Run {
    drive_with(pieces, usize::MAX)
}

fn one(input: &[u8]) -> Run {
    drive(&[input])
}

/// A parsed response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Split `out` into responses; `head_only[i]` says response `i` answers a HEAD (no body).
/// Interim 100 responses are skipped.
fn responses(mut out: &[u8], head_only: &[bool]) -> Vec<Resp> {
    let mut v = Vec::new();
    while !out.is_empty() {
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut hs);
        let n = match r.parse(out).expect("response parses") {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => {
                panic!("partial response: {:?}", String::from_utf8_lossy(out))
            }
        };
        let status = r.code.unwrap();
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect();
        out = &out[n..];
        if status == 100 {
            continue;
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .expect("content-length");
        let body_len = if head_only.get(v.len()).copied().unwrap_or(false) {
            0
        } else {
            len
        };
        assert!(out.len() >= body_len, "short body");
        v.push(Resp {
            status,
            headers,
            body: out[..body_len].to_vec(),
        });
        out = &out[body_len..];
    }
    v
}

fn single(input: &[u8]) -> (Resp, Run) {
    let run = one(input);
    let head = input.starts_with(b"HEAD ");
    let mut rs = responses(&run.out, &[head]);
    assert_eq!(rs.len(), 1, "{:?}", String::from_utf8_lossy(&run.out));
    (rs.remove(0), run)
}

/// Assert `input` is answered with `code`, `Connection: close`, and the session closing having
/// consumed everything (including whatever follows).
fn assert_rejected(input: &[u8], code: u16) {
    let mut with_tail = input.to_vec();
    with_tail.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    for data in [input, &with_tail[..]] {
        let (r, run) = single(data);
        assert_eq!(
            r.status,
            code,
            "{:?}",
            String::from_utf8_lossy(&data[..data.len().min(200)])
        );
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(run.status, Status::CloseAfterFlush);
        assert_eq!(run.left, 0);
        assert!(!r.body.is_empty());
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n as u64).map(bytes_pattern).collect()
}

#[test]
fn session_is_small() {
    println!(
        "HttpSession {} bytes, Session {} bytes",
        std::mem::size_of::<HttpSession>(),
        std::mem::size_of::<Session>()
    );
    assert!(
        std::mem::size_of::<HttpSession>() <= 24,
        "{}",
        std::mem::size_of::<HttpSession>()
    );
    assert!(std::mem::size_of::<Session>() <= 32);
}

#[test]
fn plaintext_exact_bytes() {
    let run = one(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
    let expected = b"HTTP/1.1 200 OK\r\nServer: c10k\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
    assert_eq!(
        String::from_utf8_lossy(&run.out),
        String::from_utf8_lossy(expected)
    );
    assert_eq!(run.status, Status::Open);
    assert_eq!(run.requests, 1);
    assert_eq!(run.left, 0);
}

#[test]
fn root_and_query_string() {
    for req in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET /plaintext?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let (r, run) = single(req);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, HELLO);
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.header("server"), Some("c10k"));
        assert_eq!(r.header("date").map(str::as_bytes), Some(DATE));
        assert_eq!(r.header("connection"), None);
        assert_eq!(run.status, Status::Open);
    }
}

#[test]
fn head_has_get_headers_and_no_body() {
    for path in ["/", "/plaintext", "/stats", "/bytes/12345", "/nope"] {
        let get = one(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let head = one(format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let g = &responses(&get.out, &[false])[0];
        let h = responses(&head.out, &[true]);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].status, g.status);
        assert_eq!(h[0].headers, g.headers, "{path}");
        assert!(h[0].body.is_empty());
        // Nothing beyond the head.
        assert!(head.out.ends_with(b"\r\n\r\n"));
        assert_eq!(head.status, Status::Open);
    }
    let (h, _) = single(b"HEAD /bytes/1073741824 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.header("content-length"), Some("1073741824"));
}

#[test]
fn stats() {
    let (r, _) = single(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Counted before it is answered.
    assert_eq!(r.body, b"{\"requests\":1}");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["requests"], 1);
}

#[test]
fn bytes_small() {
    for n in [0usize, 1, 25, 26, 27, 1000] {
        let (r, run) = single(format!("GET /bytes/{n} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(r.header("content-length"), Some(n.to_string().as_str()));
        assert_eq!(r.body, pattern(n));
        assert_eq!(run.status, Status::Open);
    }
    assert_eq!(&pattern(28)[..], b"abcdefghijklmnopqrstuvwxyzab");
}

#[test]
fn bytes_streams_through_the_window() {
    let n = 3 * 1024 * 1024 + 7;
    let req =
        format!("GET /bytes/{n} HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut s = HttpSession::new();
    let mut env = TestEnv::new();
    let mut input = req.into_bytes();
    let (mut out, mut all) = (Vec::new(), Vec::new());
    let mut calls = 0;
    loop {
        let c = s.advance(&input, &mut out, &mut env);
        input.drain(..c);
        // Never more than the mark plus one small response.
        assert!(out.len() <= OUTPUT_HIGH_WATER + 200, "{}", out.len());
        calls += 1;
        if out.is_empty() && c == 0 {
            break;
        }
        if out.len() >= OUTPUT_HIGH_WATER {
            assert!(s.has_pending_output());
        }
        // A slow reader: drain part of it.
        let k = out.len().min(50_000);
        all.extend(out.drain(..k));
    }
    assert!(calls > 60, "{calls}");
    assert!(!s.has_pending_output());
    let rs = responses(&all, &[false, false]);
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[0].body.len(), n);
    assert!(rs[0].body == pattern(n));
    assert_eq!(rs[1].body, HELLO);
    assert_eq!(s.status(), Status::Open);
}

#[test]
fn bytes_limits() {
    let (r, _) = single(b"GET /bytes/abc HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 404);
    let (r, _) = single(b"GET /bytes/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 404);
    let (r, _) = single(b"GET /bytes/-1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 404);
    assert_rejected(b"GET /bytes/1073741825 HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    assert_rejected(
        b"GET /bytes/99999999999999999999999 HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    );
    let (r, _) = single(b"POST /bytes/5 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[test]
fn not_found_and_method_not_allowed_keep_alive() {
    let (r, run) = single(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, &r.body[..]), (404, &b"Not Found\n"[..]));
    assert_eq!(run.status, Status::Open);
    let (r, run) = single(b"POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(r.header("connection"), None);
    assert_eq!(run.status, Status::Open);
    assert_eq!(run.left, 0);
    let (r, _) = single(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let (r, _) = single(b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 405);
}

#[test]
fn skipped_body_keeps_the_stream_in_sync() {
    // The body of a 404 POST looks like a request; it must not be answered as one.
    let body = b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut input = format!(
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    input.extend_from_slice(body);
    input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    for step in [1, 2, 7, input.len()] {
        let pieces: Vec<&[u8]> = input.chunks(step).collect();
        let run = drive(&pieces);
        let rs = responses(&run.out, &[false, false]);
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].status, 404);
        assert_eq!(rs[1].body, HELLO);
        assert_eq!(run.status, Status::Open);
    }
}

#[test]
fn body_on_route_without_one_closes_when_it_cannot_be_skipped() {
    let (r, run) = single(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(run.status, Status::CloseAfterFlush);
    let (r, run) =
        single(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(run.status, Status::CloseAfterFlush);
    let run = one(b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nxyGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let rs = responses(&run.out, &[false]);
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].body, b"abc");
    assert_eq!(rs[0].header("connection"), Some("close"));
    assert_eq!(run.status, Status::CloseAfterFlush);
}

#[test]
fn keep_alive_rules() {
    // 1.1 default: keep.
    let (r, run) = single(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.header("connection"), None);
    assert_eq!(run.status, Status::Open);
    // 1.1 close, in any case and in a list; what follows is ignored.
    for req in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nconnection: Upgrade, CLOSE\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let run = one(req);
        let rs = responses(&run.out, &[false]);
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].status, 200);
        assert_eq!(rs[0].header("connection"), Some("close"));
        assert_eq!(run.status, Status::CloseAfterFlush);
        assert_eq!(run.left, 0);
    }
    // 1.0 default: close.
    let (r, run) = single(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(run.status, Status::CloseAfterFlush);
    // 1.0 keep-alive.
    let run =
        one(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /plaintext HTTP/1.0\r\n\r\n");
    let rs = responses(&run.out, &[false, false]);
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[0].header("connection"), Some("keep-alive"));
    assert_eq!(rs[1].header("connection"), Some("close"));
    assert_eq!(run.status, Status::CloseAfterFlush);
}

#[test]
fn close_waits_for_the_streamed_body() {
    let mut s = HttpSession::new();
    let mut env = TestEnv::new();
    let mut out = Vec::new();
    let req = b"GET /bytes/200000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(s.advance(req, &mut out, &mut env), req.len());
    assert_eq!(s.status(), Status::Open);
    assert!(s.has_pending_output());
    let mut total = out.len();
    while s.has_pending_output() {
        out.clear();
        assert_eq!(s.advance(b"", &mut out, &mut env), 0);
        total += out.len();
    }
    assert_eq!(s.status(), Status::CloseAfterFlush);
    assert!(total > 200_000);
}

#[test]
fn pipelined_in_order() {
    let input = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n\
HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/5 HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nping\
GET /stats HTTP/1.1\r\nHost: x\r\n\r\n";
    let run = one(input);
    let rs = responses(&run.out, &[false, false, true, false, false, false]);
    let got: Vec<(u16, &[u8])> = rs.iter().map(|r| (r.status, &r.body[..])).collect();
    assert_eq!(
        got,
        vec![
            (200, HELLO),
            (404, &b"Not Found\n"[..]),
            (200, &b""[..]),
            (200, &b"abcde"[..]),
            (200, &b"ping"[..]),
            (200, &b"{\"requests\":6}"[..]),
        ]
    );
    assert_eq!(run.requests, 6);
    assert_eq!(run.status, Status::Open);
}

/// Pipelined heads, equal to one another or not, get the same answers whole, split anywhere, or
/// one request per call.
#[test]
fn repeated_heads_are_answered_like_the_first() {
    let hello = &b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"[..];
    let mut heads: Vec<&[u8]> = vec![hello; 5];
    heads.extend([
        &b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n\r\n"[..],
        b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n\r\n",
        hello,
        b"HEAD /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
        hello,
        b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n",
        hello,
    ]);
    let input = heads.concat();
    let whole = one(&input);
    let one_by_one = drive(&heads);
    assert_eq!(whole.out, one_by_one.out);
    assert_eq!(whole.requests, 11);
    assert_eq!(one_by_one.requests, 11);
    assert_eq!(whole.status, Status::CloseAfterFlush);
    let mut heads = vec![false; 11];
    heads[8] = true;
    let rs = responses(&whole.out, &heads);
    assert_eq!(rs.len(), 11);
    assert!(rs.iter().all(|r| r.status == 200));
    assert_eq!(rs[10].header("connection"), Some("close"));
    for at in 1..input.len() {
        let run = drive(&[&input[..at], &input[at..]]);
        assert_eq!(run.out, whole.out, "split at {at}");
        assert_eq!(run.requests, whole.requests);
    }
}

/// The plain-hello shortcut ([`head::SimpleHead::is_plain_hello`]) answers exactly as the
/// general routing ([`HttpSession::answer`]) does, and leaves the session in the same state.
#[test]
fn plain_hello_shortcut_answers_like_answer() {
    for input in [
        &b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n\r\n",
        b"GET /plaintext HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\n\r\n",
    ] {
        let head = head::simple_head(input).expect("simple");
        assert!(head.is_plain_hello(), "{input:?}");
        let (mut general, mut env) = (HttpSession::new(), TestEnv::new());
        let mut want = Vec::new();
        general.answer(head, &mut want, &mut env);
        let (mut short, mut env2) = (HttpSession::new(), TestEnv::new());
        let mut got = Vec::new();
        assert_eq!(short.advance(input, &mut got, &mut env2), input.len());
        assert_eq!(got, want);
        assert_eq!(env2.requests, env.requests);
        assert_eq!(format!("{short:?}"), format!("{general:?}"));
    }
    // Not plain hellos: each goes the general way.
    for input in [
        &b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET /plaintext?x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let head = head::simple_head(input).expect("simple");
        assert!(!head.is_plain_hello(), "{input:?}");
    }
}

/// Field names are matched in any case, and only whole: a name one letter off, or longer, is
/// some other field.
#[test]
fn field_names_match_in_any_case() {
    let fields = |head: &[u8]| head::simple_head(head).expect("simple").fields;
    let f = fields(b"POST /echo HTTP/1.1\r\nhOsT: a\r\nCONTENT-length: 5\r\nConnection: CLOSE\r\nEXPECT: 100-Continue\r\n\r\n")
        .expect("valid");
    assert_eq!(f.content_length, Some(5));
    assert!(f.close && f.expect_continue);
    let f = fields(b"POST /echo HTTP/1.1\r\nHost: a\r\nTRANSFER-ENCODING: chunked\r\n\r\n")
        .expect("valid");
    assert!(f.chunked);
    // Not Host (so Host is missing: 400), not Content-Length.
    assert!(fields(b"GET / HTTP/1.1\r\nHosu: a\r\n\r\n").is_err());
    let f = fields(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Lengtx: 5\r\nXContent-Length: 5\r\n\r\n")
        .expect("valid");
    assert_eq!(f.content_length, None);
}

#[test]
fn output_high_water_leaves_input_unconsumed() {
    let mut s = HttpSession::new();
    let mut env = TestEnv::new();
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let input: Vec<u8> = req.iter().copied().cycle().take(req.len() * 2000).collect();
    let mut out = vec![0u8; OUTPUT_HIGH_WATER - 10];
    let n = s.advance(&input, &mut out, &mut env);
    // One response goes past the mark, then it stops.
    assert_eq!(n, req.len());
    assert!(s.has_pending_output());
    assert_eq!(s.status(), Status::Open);
    // Full: nothing at all.
    assert_eq!(s.advance(&input[n..], &mut out, &mut env), 0);
    out.clear();
    let m = s.advance(&input[n..], &mut out, &mut env);
    assert!(m > 0 && m < input.len() - n);
    assert_eq!(m % req.len(), 0);
    assert!(out.len() >= OUTPUT_HIGH_WATER && out.len() < OUTPUT_HIGH_WATER + 200);
    // Draining everything answers all 2000, in order.
    let run = drive_with(&[&input], 10_000);
    assert_eq!(responses(&run.out, &[]).len(), 2000);
    assert!(run.peak < OUTPUT_HIGH_WATER + 200);
}

#[test]
fn echo_content_length() {
    let (r, run) =
        single(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.body, b"hello world");
    assert_eq!(run.status, Status::Open);
    let (r, _) = single(b"POST /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.body.len()), (200, 0));
    let (r, _) = single(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!((r.status, r.body.len()), (200, 0));
    // Repeated identical lengths are one length.
    let (r, _) = single(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!(r.body, b"hi");
}

#[test]
fn echo_large_body_with_full_output() {
    let body: Vec<u8> = (0..MAX_BODY).map(|i| (i * 31 % 251) as u8).collect();
    let mut input = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    input.extend_from_slice(&body);
    input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    for drain in [1000, 70_000] {
        let pieces: Vec<&[u8]> = input.chunks(100_000).collect();
        let run = drive_with(&pieces, drain);
        let rs = responses(&run.out, &[false, false]);
        assert_eq!(rs.len(), 2);
        assert!(rs[0].body == body);
        assert_eq!(rs[1].body, HELLO);
        assert!(run.peak <= OUTPUT_HIGH_WATER + 200, "{}", run.peak);
        assert_eq!(run.requests, 2);
    }
}

#[test]
fn echo_chunked() {
    let input = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
5;name=value\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    for step in 1..input.len() {
        let pieces: Vec<&[u8]> = input.chunks(step).collect();
        let run = drive(&pieces);
        let rs = responses(&run.out, &[false, false]);
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].body, b"hello, world");
        assert_eq!(rs[0].header("content-length"), Some("12"));
        assert_eq!(rs[1].body, HELLO);
        assert_eq!(run.status, Status::Open);
        assert_eq!(run.requests, 2);
    }
}

#[test]
fn echo_chunked_large_and_empty() {
    let body: Vec<u8> = (0..MAX_BODY).map(|i| (i % 253) as u8).collect();
    let mut input =
        b"POST /echo HTTP/1.1\r\nHost: x\r\ntransfer-encoding: Chunked\r\n\r\n".to_vec();
    for c in body.chunks(70_000) {
        input.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        input.extend_from_slice(c);
        input.extend_from_slice(b"\r\n");
    }
    input.extend_from_slice(b"0\r\n\r\n");
    let pieces: Vec<&[u8]> = input.chunks(9_999).collect();
    let run = drive_with(&pieces, 30_000);
    let rs = responses(&run.out, &[false]);
    assert!(rs[0].body == body);
    assert!(run.peak <= OUTPUT_HIGH_WATER + 200);

    let (r, _) =
        single(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!((r.status, r.body.len()), (200, 0));
}

#[test]
fn expect_continue() {
    let run =
        one(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(run.out, b"HTTP/1.1 100 Continue\r\n\r\n");
    let run = one(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
    let rs = responses(&run.out, &[false]);
    assert_eq!(rs[0].body, b"ok");
    // A Content-Length echo is answered at once, which is the go-ahead.
    let run =
        one(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    assert!(run.out.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

#[test]
fn limits_request_line() {
    // Complete head with an over-long line.
    let mut long = b"GET /".to_vec();
    long.resize(MAX_REQUEST_LINE + 1, b'a');
    let mut req = long.clone();
    req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_rejected(&req, 414);
    // No line end yet: answered without waiting for one.
    long.push(b'a');
    let run = one(&long);
    assert!(run.out.starts_with(b"HTTP/1.1 414 URI Too Long\r\n"));
    assert_eq!(run.status, Status::CloseAfterFlush);
    // Longest allowed line is fine.
    let mut ok = b"GET /".to_vec();
    ok.resize(MAX_REQUEST_LINE - 9, b'a');
    ok.extend_from_slice(b" HTTP/1.1");
    assert_eq!(ok.len(), MAX_REQUEST_LINE);
    ok.extend_from_slice(b"\r\nHost: x\r\n\r\n");
    let (r, run) = single(&ok);
    assert_eq!(r.status, 404);
    assert_eq!(run.status, Status::Open);
}

#[test]
fn limits_header_section() {
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    while req.len() < MAX_HEADER_SECTION + 100 {
        req.extend_from_slice(
            b"X-Filler: 0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    let mut complete = req.clone();
    complete.extend_from_slice(b"\r\n");
    assert_rejected(&complete, 431);
    // Incomplete: answered without waiting for the end.
    let run = one(&req);
    assert!(run.out.starts_with(b"HTTP/1.1 431 "));
    assert_eq!(run.status, Status::CloseAfterFlush);
    // One long field.
    let mut one_field = b"GET / HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
    one_field.resize(16 + MAX_HEADER_SECTION + 2, b'v');
    let run = one(&one_field);
    assert!(run.out.starts_with(b"HTTP/1.1 431 "));
    // Exactly the maximum section (plus its final CRLF) is fine.
    let mut at_max = b"GET / HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
    at_max.resize(16 + MAX_HEADER_SECTION - 2, b'v');
    at_max.extend_from_slice(b"\r\n\r\n");
    for step in [1, 1000, at_max.len()] {
        let pieces: Vec<&[u8]> = at_max.chunks(step).collect();
        let run = drive(&pieces);
        assert_eq!(responses(&run.out, &[false])[0].status, 200);
    }
    at_max.insert(30, b'v');
    assert_rejected(&at_max, 431);
    // Too many fields, each short.
    let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_rejected(&many, 431);
    // Exactly the maximum (Host included) is fine.
    let mut max = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 1..MAX_HEADERS {
        max.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    max.extend_from_slice(b"\r\n");
    assert_eq!(single(&max).0.status, 200);
}

#[test]
fn limits_body() {
    assert_rejected(
        format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        )
        .as_bytes(),
        413,
    );
    assert_rejected(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        413,
    );
    assert_rejected(
        b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n",
        413,
    );
    let mut chunked =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    chunked.extend_from_slice(format!("{:x}\r\n", MAX_BODY / 2).as_bytes());
    chunked.extend_from_slice(&vec![b'x'; MAX_BODY / 2]);
    chunked.extend_from_slice(format!("\r\n{:x}\r\n", MAX_BODY / 2 + 1).as_bytes());
    assert_rejected(&chunked, 413);
}

#[test]
fn malformed_and_unsupported() {
    assert_rejected(b"GET / HTTP/2.0\r\n\r\n", 505);
    assert_rejected(b"GET / HTTP/3.0\r\n\r\n", 505);
    assert_rejected(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505);
    assert_rejected(b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    assert_rejected(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400);
    assert_rejected(b"GET  HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    assert_rejected(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400);
    assert_rejected(b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", 501);
    assert_rejected(b"get / HTTP/1.1\r\nHost: x\r\n\r\n", 501);
}

#[test]
fn framing_conflicts() {
    assert_rejected(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
    assert_rejected(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        400,
    );
    assert_rejected(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello",
        400,
    );
    assert_rejected(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        400,
    );
    assert_rejected(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\n",
        400,
    );
    assert_rejected(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n",
        400,
    );
    assert_rejected(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501,
    );
    assert_rejected(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
    );
    assert_rejected(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        400,
    );
    assert_rejected(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    );
    assert_rejected(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n",
        400,
    );
    // HEAD errors keep Content-Length but send no body.
    let run = one(b"HEAD / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    assert!(run.out.starts_with(b"HTTP/1.1 400 "));
    assert!(run.out.ends_with(b"\r\n\r\n"));
    assert_eq!(run.status, Status::CloseAfterFlush);
}

#[test]
fn bad_chunks() {
    let pre = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (body, code) in [
        (&b"10000000000000000\r\n"[..], 400),
        (b"zz\r\n", 400),
        (b"5\r\nhelloXX", 400),
        (b"\r\n", 400),
    ] {
        let mut input = pre.to_vec();
        input.extend_from_slice(body);
        assert_rejected(&input, code);
    }
}

#[test]
fn counts_requests() {
    let run = one(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nBAD\r\n\r\n");
    assert_eq!(run.requests, 4);
    // An incomplete head is not a request.
    assert_eq!(one(b"GET / HTTP/1.1\r\nHost").requests, 0);
}

#[test]
fn service_unavailable_response() {
    let env = TestEnv::new();
    let out = service_unavailable(&env);
    let rs = responses(&out, &[false]);
    assert_eq!(rs[0].status, 503);
    assert_eq!(rs[0].header("connection"), Some("close"));
    assert_eq!(rs[0].body, b"Service Unavailable\n");
    assert_eq!(Session::refusal(crate::proto::Proto::Http, &env), out);
}

#[test]
fn through_the_session_enum() {
    let mut s = Session::new(crate::proto::Proto::Http);
    let mut env = TestEnv::new();
    let mut out = Vec::new();
    let req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(s.advance(req, &mut out, &mut env), req.len());
    assert!(out.ends_with(HELLO));
    assert_eq!(s.status(), Status::CloseAfterFlush);
    assert!(!s.has_pending_output());
}

#[test]
fn slow_drip_head() {
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for _ in 0..50 {
        req.extend_from_slice(b"X-Some-Header: some value here\r\n");
    }
    req.extend_from_slice(b"\r\n");
    let pieces: Vec<&[u8]> = req.chunks(1).collect();
    let run = drive(&pieces);
    assert_eq!(responses(&run.out, &[false])[0].body, HELLO);
    // An error mid-line is reported when its line ends.
    let pieces: Vec<&[u8]> = b"GET / HTTP/1.1\r\nHost: x\r\nX\x01y: 1\r\n"
        .chunks(1)
        .collect();
    let run = drive(&pieces);
    assert!(run.out.starts_with(b"HTTP/1.1 400 "));
}

/// The reference stream for the split tests: every kind of request, pipelined.
fn mixed_stream() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(b"GET /plaintext HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\n\r\n");
    v.extend_from_slice(b"HEAD /bytes/40 HTTP/1.1\r\nHost: x\r\n\r\n");
    v.extend_from_slice(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\n");
    v.extend_from_slice(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\npayload");
    v.extend_from_slice(b"GET /bytes/30 HTTP/1.1\r\nHost: x\r\n\r\n");
    v.extend_from_slice(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nGET ");
    v.extend_from_slice(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    v.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    v.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    v
}

#[test]
fn every_split_gives_the_same_output() {
    let input = mixed_stream();
    let whole = one(&input);
    let rs = responses(&whole.out, &[false, true]);
    assert_eq!(rs.len(), 8);
    assert_eq!(rs[2].body, b"abc0123456789");
    assert_eq!(rs[3].body, b"payload");
    assert_eq!(rs[4].body, pattern(30));
    assert_eq!(rs[5].status, 404);
    assert_eq!(whole.status, Status::CloseAfterFlush);
    assert_eq!(whole.requests, 8);
    for at in 1..input.len() {
        let run = drive(&[&input[..at], &input[at..]]);
        assert_eq!(run.out, whole.out, "split at {at}");
        assert_eq!(run.status, whole.status);
        assert_eq!(run.requests, whole.requests);
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let run = drive(&bytes);
    assert_eq!(run.out, whole.out);
    // And with a tiny output window drained a byte at a time.
    let run = drive_with(&bytes, 1);
    assert_eq!(run.out, whole.out);
}

fn split_points(len: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..=len, 0..20).prop_map(|mut v| {
        v.sort_unstable();
        v
    })
}

fn pieces_at<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut prev = 0;
    for &c in cuts {
        pieces.push(&input[prev..c]);
        prev = c;
    }
    pieces.push(&input[prev..]);
    pieces
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn prop_arbitrary_splits(cuts in split_points(mixed_stream().len()), drain in 1usize..100_000) {
        let input = mixed_stream();
        let whole = one(&input);
        let run = drive_with(&pieces_at(&input, &cuts), drain);
        prop_assert_eq!(run.out, whole.out);
        prop_assert_eq!(run.status, whole.status);
    }

    #[test]
    fn prop_random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..3000), cuts in split_points(3000)) {
        let cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
        let run = drive(&pieces_at(&data, &cuts));
        if !run.out.is_empty() {
            prop_assert!(run.out.starts_with(b"HTTP/1.1 "));
        }
    }

    #[test]
    fn prop_mutated_requests_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        cuts in split_points(400),
    ) {
        let mut data = mixed_stream();
        for (at, b, op) in edits {
            let i = at.index(data.len());
            match op {
                0 => data[i] = b,
                1 => data.insert(i, b),
                _ => { data.remove(i); }
            }
        }
        let cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
        let run = drive(&pieces_at(&data, &cuts));
        if !run.out.is_empty() {
            prop_assert!(run.out.starts_with(b"HTTP/1.1 "));
        }
        // Either still reading a request, or answered and closing with nothing left over.
        if run.status == Status::CloseAfterFlush {
            prop_assert_eq!(run.left, 0);
        }
    }

    /// No blank line means no head can complete: by 20 KiB a limit must have answered.
    #[test]
    fn prop_garbage_is_answered_and_closed(
        data in prop::collection::vec(any::<u8>(), 20 * 1024..21 * 1024),
        step in 1usize..5000,
        valid_prefix in any::<bool>(),
    ) {
        let mut data = data;
        if valid_prefix {
            data[..16].copy_from_slice(b"GET / HTTP/1.1\r\n");
        }
        for b in &mut data[16..] {
            if *b == b'\n' {
                *b = b' ';
            }
        }
        let pieces: Vec<&[u8]> = data.chunks(step).collect();
        let run = drive(&pieces);
        prop_assert_eq!(run.status, Status::CloseAfterFlush);
        prop_assert_eq!(run.left, 0);
        let rs = responses(&run.out, &[false]);
        prop_assert_eq!(rs.len(), 1);
        prop_assert!([400u16, 414, 431, 501, 505].contains(&rs[0].status), "{}", rs[0].status);
    }
}

/// `cargo test --release --lib perf_plaintext -- --ignored --nocapture`: CPU per keep-alive
/// `GET /plaintext`, parse plus response, no syscalls.
#[test]
#[ignore]
fn perf_plaintext() {
    let req = b"GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: loadgen\r\nAccept: */*\r\n\r\n";
    let mut s = HttpSession::new();
    let mut env = TestEnv::new();
    let mut out = Vec::with_capacity(OUTPUT_HIGH_WATER * 2);
    let iters = 2_000_000u32;
    // One request per call (the non-pipelined case) and 16 per call (pipelined).
    let t = std::time::Instant::now();
    for _ in 0..iters {
        out.clear();
        let n = s.advance(std::hint::black_box(req), &mut out, &mut env);
        assert_eq!(n, req.len());
    }
    let single = t.elapsed().as_nanos() as f64 / f64::from(iters);
    let batch: Vec<u8> = req.iter().copied().cycle().take(req.len() * 16).collect();
    let t = std::time::Instant::now();
    for _ in 0..iters / 16 {
        out.clear();
        let n = s.advance(std::hint::black_box(&batch), &mut out, &mut env);
        assert_eq!(n, batch.len());
    }
    let piped = t.elapsed().as_nanos() as f64 / f64::from(iters / 16 * 16);
    println!("plaintext: {single:.0} ns/request alone, {piped:.0} ns/request pipelined x16");
}

#[test]
fn request_timeout_answers_408_and_closes() {
    let mut env = TestEnv::new();
    let mut s = HttpSession::new();
    let mut out = Vec::new();
    assert!(s.awaiting_head());
    let partial = b"GET / HTTP/1.1\r\nHost: x";
    assert_eq!(s.advance(partial, &mut out, &mut env), 0);
    assert!(out.is_empty() && s.awaiting_head());
    s.request_timeout(&mut out, &env);
    assert!(
        out.starts_with(b"HTTP/1.1 408 Request Timeout\r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(out.windows(19).any(|w| w == b"Connection: close\r\n"));
    assert_eq!(s.status(), Status::CloseAfterFlush);
    assert!(!s.awaiting_head());
}

/// RFC 9112 §9.6: on shutdown, a request that arrives in the drain window is answered, and that
/// answer says `Connection: close` and is the last.
#[test]
fn drain_answers_the_next_request_with_connection_close() {
    let mut s = HttpSession::new();
    let mut env = TestEnv::new();
    let mut out = Vec::new();
    s.drain();
    assert_eq!(s.status(), Status::Open, "idle: waits for the next request");
    let input = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    s.advance(input, &mut out, &mut env);
    let r = responses(&out, &[false]);
    assert_eq!(r.len(), 1, "only the first request is answered");
    assert_eq!(r[0].status, 200);
    assert_eq!(r[0].header("connection"), Some("close"));
    assert_eq!(s.status(), Status::CloseAfterFlush);
}

/// A response already in progress when shutdown begins finishes, and is the last.
#[test]
fn drain_during_a_streamed_body_finishes_it_then_closes() {
    let mut s = HttpSession::new();
    let mut env = TestEnv::new();
    let mut out = Vec::new();
    let input = b"GET /bytes/200000 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut pos = s.advance(input, &mut out, &mut env);
    assert!(s.has_pending_output());
    s.drain();
    let mut all = std::mem::take(&mut out);
    while s.has_pending_output() {
        pos += s.advance(&input[pos..], &mut out, &mut env);
        all.append(&mut out);
    }
    let r = responses(&all, &[false]);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].body.len(), 200_000);
    assert_eq!(s.status(), Status::CloseAfterFlush);
}

// ---- Strict HTTP/1.1 framing (RFC 9112, RFC 9110), one rule per test, named by section. ----

/// `assert_rejected`, and the same answer whatever the split: the input delivered one byte per
/// read, and in two reads at every point, gives exactly the output of one read.
fn assert_refused(input: &[u8], code: u16) {
    assert_rejected(input, code);
    let whole = one(input);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        drive(&bytes).out,
        whole.out,
        "{:?}",
        String::from_utf8_lossy(input)
    );
    for at in 1..input.len() {
        let run = drive(&[&input[..at], &input[at..]]);
        assert_eq!(run.out, whole.out, "split at {at}");
    }
}

/// A POST /echo with a chunked body: `body` is everything after the head.
fn chunked_echo(body: &[u8]) -> Vec<u8> {
    let mut v = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    v.extend_from_slice(body);
    v
}

/// RFC 9112 §7.1: chunked framing is CRLF only; §7.1.1 extension grammar; §7.1.2 trailers are
/// field lines. Through the session: each fault is 400 and closes, so nothing after it is read
/// as a request (the smuggling this prevents).
#[test]
fn rfc9112_7_1_chunked_framing_is_strict() {
    for body in [
        &b"5\nhello\r\n0\r\n\r\n"[..],     // bare LF ends the chunk-size line
        b"5\r\nhello\n0\r\n\r\n",          // bare LF after chunk data
        b"5\r\nhello\r\r\n0\r\n\r\n",      // CR CR LF after chunk data
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",   // bare CR in an extension
        b"5;a=\x00\r\nhello\r\n0\r\n\r\n", // NUL in an extension
        b"5;a=\"\x00\"\r\nhello\r\n0\r\n\r\n", // NUL in a quoted extension value
        b"5;a=b\x0b\r\nhello\r\n0\r\n\r\n", // a CTL in an extension
        b"5;a b\r\nhello\r\n0\r\n\r\n",    // not the grammar
        b"5 \r\nhello\r\n0\r\n\r\n",       // BWS with no extension after it
        b"5\r\nhello\r\n0\r\nX : 1\r\n\r\n", // trailer: whitespace before the colon
        b"5\r\nhello\r\n0\r\nX: 1\r\n folded\r\n\r\n", // trailer: obs-fold
        b"5\r\nhello\r\n0\r\nX: a\x00b\r\n\r\n", // trailer: NUL
        b"5\r\nhello\r\n0\r\nno colon\r\n\r\n", // trailer: not a field line
        b"5\r\nhello\r\n0\r\nX: 1\n\r\n",  // trailer: bare LF
        b"5\r\nhello\r\n0\r\n\n",          // bare LF as the final line
        b"00000000000000005\r\nhello\r\n0\r\n\r\n", // 17 hex digits: overflow
    ] {
        assert_refused(&chunked_echo(body), 400);
    }
    // The same body, well formed, with extensions and a trailer: echoed, connection kept.
    let run = one(&chunked_echo(
        b"5 ; a = \"q\\\"\" ;b\r\nhello\r\n0;c=d\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ));
    let rs = responses(&run.out, &[false, false]);
    assert_eq!((rs[0].status, &rs[0].body[..]), (200, &b"hello"[..]));
    assert_eq!(rs[1].body, HELLO);
    assert_eq!(run.status, Status::Open);
}

/// Extensions and trailers are never stored, and are capped so that a client cannot make the
/// server read unbounded framing: the extension total over a body (400), the trailer section
/// (431).
#[test]
fn rfc9112_7_1_extension_and_trailer_bounds() {
    let mut body = Vec::new();
    for _ in 0..=chunked::MAX_CHUNK_EXT / 1000 {
        body.extend_from_slice(format!("1;{}\r\nx\r\n", "e".repeat(1000)).as_bytes());
    }
    body.extend_from_slice(b"0\r\n\r\n");
    assert_rejected(&chunked_echo(&body), 400);
    let mut body = b"0\r\n".to_vec();
    while body.len() <= MAX_TRAILER + 100 {
        body.extend_from_slice(b"X-Trailer: 0123456789\r\n");
    }
    body.extend_from_slice(b"\r\n");
    assert_rejected(&chunked_echo(&body), 431);
}

/// RFC 9112 §6.1: "A server or client that receives an HTTP/1.0 message containing a
/// Transfer-Encoding header field MUST treat the message as if the framing is faulty, even if a
/// Content-Length is present, and close the connection after processing the message."
#[test]
fn rfc9112_6_1_transfer_encoding_in_http10_is_400_and_closes() {
    assert_refused(
        b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
    );
    assert_refused(
        b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello",
        400,
    );
    assert_refused(b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    // Even a coding it would refuse anyway: the framing is faulty first.
    assert_refused(
        b"POST /echo HTTP/1.0\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        400,
    );
}

/// RFC 9112 §6.1, §6.3 items 3-5, §7: which Transfer-Encoding and Content-Length combinations are
/// refused, and with what. Every one closes: the body's length is in doubt.
#[test]
fn rfc9112_6_transfer_encoding_and_content_length() {
    let post = |fields: &str| format!("POST /echo HTTP/1.1\r\nHost: x\r\n{fields}\r\n\r\n");
    for (fields, code) in [
        // §6.1: TE and CL together: MAY reject, MUST close. Rejected.
        ("Content-Length: 5\r\nTransfer-Encoding: chunked", 400),
        ("Transfer-Encoding: chunked\r\nContent-Length: 0", 400),
        // §6.3 item 4: chunked not the final coding.
        ("Transfer-Encoding: gzip", 400),
        ("Transfer-Encoding: chunked, gzip", 400),
        ("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip", 400),
        // chunked takes no parameters: "chunked;x=1" is not chunked, so not final.
        ("Transfer-Encoding: chunked;x=1", 400),
        // §7: chunked at most once.
        ("Transfer-Encoding: chunked, chunked", 400),
        // §6.1: a coding name is a token.
        ("Transfer-Encoding: x y, chunked", 400),
        ("Transfer-Encoding: \"gzip\", chunked", 400),
        ("Transfer-Encoding: ;, chunked", 400),
        // A field with no coding at all: its list syntax allows it, but what it frames is
        // anyone's guess.
        ("Transfer-Encoding: ,", 400),
        ("Transfer-Encoding:", 400),
        // §6.1: a coding it does not understand (chunked final): 501.
        ("Transfer-Encoding: gzip, chunked", 501),
        ("Transfer-Encoding: identity, chunked", 501),
        (
            "Transfer-Encoding: x;q=1\r\nTransfer-Encoding: chunked",
            501,
        ),
        // §6.3 item 5: an invalid or differing Content-Length.
        ("Content-Length: 5\r\nContent-Length: 6", 400),
        ("Content-Length: 5, 6", 400),
        ("Content-Length: 5,", 400),
        ("Content-Length: +5", 400),
        ("Content-Length: 5 5", 400),
    ] {
        assert_refused(post(fields).as_bytes(), code);
    }
    // Empty list elements are allowed (RFC 9110 §5.6.1), any case of "chunked" is chunked, and
    // identical Content-Length values are one (RFC 9110 §8.6).
    for fields in [
        "Transfer-Encoding: , CHUNKED ,",
        "Transfer-Encoding: ,chunked",
    ] {
        let mut req = post(fields).into_bytes();
        req.extend_from_slice(b"2\r\nok\r\n0\r\n\r\n");
        let (r, run) = single(&req);
        assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]), "{fields}");
        assert_eq!(run.status, Status::Open);
    }
}

/// RFC 9112 §2.3, §3: `HTTP-version = "HTTP" "/" DIGIT "." DIGIT`, case-sensitive. Malformed:
/// 400; well formed with a major version other than 1: 505 (RFC 9110 §15.6.6); a later 1.x minor
/// version is served as HTTP/1.1 (RFC 9110 §2.5).
#[test]
fn rfc9112_2_3_http_version() {
    for line in [
        &b"GET / http/1.1"[..],
        b"GET / Http/1.1",
        b"GET / HTTP/1.10",
        b"GET / HTTP/11",
        b"GET / HTTP/1",
        b"GET / HTTP/1.",
        b"GET / HTTP/1.x",
        b"GET / HTTP/a.1",
        b"GET / HTTP /1.1",
        b"GET / HTTP/1.1 ",
        b"GET / HTTP/1.1\t",
        b"GET / HTTP/2",
        b"GET /", // an HTTP/0.9 simple request: no version at all
        b"GET / ",
    ] {
        let mut req = line.to_vec();
        req.extend_from_slice(b"\r\nHost: x\r\n\r\n");
        assert_refused(&req, 400);
    }
    for version in ["HTTP/0.9", "HTTP/0.0", "HTTP/2.0", "HTTP/3.0", "HTTP/9.9"] {
        assert_refused(
            format!("GET / {version}\r\nHost: x\r\n\r\n").as_bytes(),
            505,
        );
    }
    for version in ["HTTP/1.2", "HTTP/1.9"] {
        let run = one(format!(
            "GET /plaintext {version}\r\nHost: x\r\n\r\nGET / {version}\r\nHost: x\r\n\r\n"
        )
        .as_bytes());
        let rs = responses(&run.out, &[false, false]);
        assert_eq!(rs.len(), 2, "{version} is served as 1.1, kept alive");
        assert_eq!((rs[0].status, &rs[0].body[..]), (200, HELLO));
        assert!(run.out.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert_eq!(run.status, Status::Open);
        // And as 1.1 it needs Host.
        assert_refused(format!("GET / {version}\r\n\r\n").as_bytes(), 400);
    }
}

/// RFC 9112 §3: `method SP request-target SP HTTP-version`; §3.2: the request-target is a URI
/// form, so whitespace, CTLs and raw non-ASCII bytes inside it are 400 (never 505 because the
/// text after a space was taken for the version).
#[test]
fn rfc9112_3_2_request_target_characters() {
    for target in [
        &b"/a b"[..],
        b"/a\tb",
        b"/a\x0bb",
        b"/a\x00b",
        b"/a\x7fb",
        b"/\xc3\xa9",
        b"/a\rb",
    ] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_refused(&req, 400);
    }
    // Multiple spaces as delimiters (RFC 9112 §3 allows a recipient to accept them; not here).
    assert_refused(b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    assert_refused(b"GET /  HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    assert_refused(b" GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400);
}

/// RFC 9112 §3.2: a request-target must be in one of the four forms, and asterisk-form is for
/// OPTIONS only (§3.2.4), answered for the server as a whole.
#[test]
fn rfc9112_3_2_4_asterisk_form_only_for_options() {
    for method in ["GET", "POST", "DELETE"] {
        assert_refused(
            format!("{method} * HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            400,
        );
    }
    // No form at all (authority-form is for CONNECT).
    for target in ["plaintext", "example.com:80", "?x", "%2F"] {
        assert_refused(
            format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            400,
        );
    }
    let (r, run) = single(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
    assert_eq!(r.header("content-length"), Some("0"));
    assert_eq!(run.status, Status::Open);
    // OPTIONS on a resource: that resource's methods.
    let (r, _) = single(b"OPTIONS /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
}

/// RFC 9110 §9.3.6: CONNECT asks for a tunnel; this server is no proxy, so no resource supports
/// it: 501 (RFC 9110 §15.6.2), and close, because what follows the head may already be tunnel
/// data (here a TLS ClientHello), which must not be read as a request.
#[test]
fn rfc9110_9_3_6_connect_is_501_and_closes() {
    assert_refused(
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01\x02\x00",
        501,
    );
    assert_refused(b"CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n", 501);
}

/// RFC 9112 §3.2.2: "A server MUST accept the absolute-form in requests"; it is routed by its
/// path, and the Host field is ignored in favour of its authority (§3.2.2: "MUST ignore the
/// received Host header field"). An http(s) URI with an empty host or userinfo is invalid
/// (RFC 9110 §4.2.1, §4.2.4), as is any other scheme here: 400.
#[test]
fn rfc9112_3_2_2_absolute_form() {
    for (target, body) in [
        ("http://example.com/plaintext", HELLO),
        ("http://example.com", HELLO),
        ("http://example.com?q=1", HELLO),
        ("HTTPS://EXAMPLE.COM:8443/bytes/3?x=1", &b"abc"[..]),
        ("http://[::1]:80/", HELLO),
        ("http://127.0.0.1/", HELLO),
    ] {
        let (r, run) = single(format!("GET {target} HTTP/1.1\r\nHost: other\r\n\r\n").as_bytes());
        assert_eq!((r.status, &r.body[..]), (200, body), "{target}");
        assert_eq!(run.status, Status::Open);
    }
    let (r, _) = single(b"GET http://example.com/nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 404);
    for target in [
        "http:///plaintext",
        "http://",
        "http://:80/",
        "http://user@example.com/",
        "http://exa mple.com/",
        "http://[::1/",
        "http://example.com:x/",
        "http:/plaintext",
        "http:plaintext",
        "ftp://example.com/",
        "example.com/",
    ] {
        assert_refused(
            format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            400,
        );
    }
}

/// RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
/// request message that lacks a Host header field and to any request message that contains
/// more than one Host header field line or a Host header field with an invalid field value."
/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2).
#[test]
fn rfc9112_3_2_host() {
    assert_refused(b"GET / HTTP/1.1\r\n\r\n", 400);
    assert_refused(b"GET / HTTP/1.1\r\nX-Host: x\r\n\r\n", 400);
    assert_refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
    assert_refused(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400);
    assert_refused(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    for host in [
        "a b",
        "a/b",
        "a@b",
        "a?b",
        "a#b",
        "x:y",
        "x:80:90",
        "x: 80",
        "[::1",
        "[::1]x",
        "[::1]:x",
        "[zz::1]",
        "[]",
        "[v.x]",
        "[v1.]",
        "[fe80::1%25eth0]",
        "%zz",
        "a%2",
        "a\"b",
        "\u{e9}",
        "a, b",
    ] {
        assert_refused(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
            400,
        );
        assert_refused(
            format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes(),
            400,
        );
    }
    for host in [
        "",
        "example.com",
        "example.com:8080",
        "x:",
        "127.0.0.1:80",
        "[::1]",
        "[::1]:8080",
        "[::ffff:1.2.3.4]",
        "[v1.x:y]",
        "a%20b",
        "sub-delims!$&'()*+,;=",
        "  padded  ",
    ] {
        let (r, run) = single(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "{host:?}");
        assert_eq!(run.status, Status::Open);
    }
    // HTTP/1.0 predates Host.
    let (r, _) = single(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
}

/// RFC 9112 §2.2: "a recipient MAY recognize a single LF as a line terminator" in the start line
/// and fields. Here it does not (as llhttp in strict mode, unlike nginx, h11 and httparse): a
/// bare LF is 400, as is a bare CR anywhere (which §2.2 lets a recipient treat as an error or
/// as SP; replacing it would change what a proxy saw).
#[test]
fn rfc9112_2_2_bare_lf_and_bare_cr_in_the_head() {
    for req in [
        &b"GET / HTTP/1.1\nHost: x\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\n",
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: 1\nTransfer-Encoding: chunked\r\n\r\n",
        b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\rHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\rX: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\rX",
        b"\rGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /\r HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_refused(req, 400);
    }
    // A bare LF in a body is data, not framing.
    let (r, _) = single(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\na\nb");
    assert_eq!(r.body, b"a\nb");
}

/// The first fault in the stream decides the answer, however the head was split: a bare LF
/// before the 101st field line is 400, one after it loses to 431 (too many fields).
#[test]
fn rfc9112_2_2_first_fault_wins() {
    let head = |bare_at: usize| {
        let mut v = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..150 {
            let end: &[u8] = if i == bare_at { b"\n" } else { b"\r\n" };
            v.extend_from_slice(format!("X-{i}: v").as_bytes());
            v.extend_from_slice(end);
        }
        v.extend_from_slice(b"\r\n");
        v
    };
    assert_refused(&head(50), 400);
    assert_refused(&head(120), 431);
    // A bad version on the request line wins over anything after it.
    assert_refused(b"GET / HTTP/2.0\r\nHost: x\nX: 1\r\n\r\n", 505);
    assert_refused(b"GET / HTTP/1.1 \r\nHost: x\nX: 1\r\n\r\n", 400);
}

/// RFC 9112 §2.2: "a server that is expecting to receive and parse a request-line SHOULD ignore
/// at least one empty line (CRLF) received prior to the request-line". Any number is ignored,
/// counted against the request line's limit so that a stream of them is bounded (414).
#[test]
fn rfc9112_2_2_empty_lines_before_the_request_line() {
    let input = b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n\r\n";
    let whole = one(input);
    let rs = responses(&whole.out, &[false, false]);
    assert_eq!(rs.len(), 2);
    assert!(rs.iter().all(|r| r.body == HELLO));
    assert_eq!((whole.status, whole.left), (Status::Open, 2));
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(drive(&bytes).out, whole.out);
    let flood = b"\r\n".repeat(MAX_REQUEST_LINE);
    let run = one(&flood);
    assert!(
        run.out.starts_with(b"HTTP/1.1 414 "),
        "{:?}",
        String::from_utf8_lossy(&run.out)
    );
    assert_eq!(run.status, Status::CloseAfterFlush);
}

/// RFC 9112 §5.1: "No whitespace is allowed between the field name and colon ... A server MUST
/// reject, with a response status code of 400 (Bad Request), any received request message that
/// contains whitespace between a header field name and colon." §5.2: obs-fold — a server MUST
/// reject the message with 400 or replace each obs-fold with SP; rejected here. §2.2:
/// whitespace before the first field line — reject (400), as it could be read as obs-fold.
/// RFC 9110 §5.5: CR, LF and NUL in a field value are invalid (other CTLs too, here).
#[test]
fn rfc9112_5_field_line_syntax() {
    for fields in [
        &b"Host : x\r\n"[..],
        b"Host\t: x\r\n",
        b"Host: x\r\nX-A : 1\r\n",
        b"Host: x\r\nX-A: 1\r\n 2\r\n",
        b"Host: x\r\nX-A: 1\r\n\t2\r\n",
        b" Host: x\r\n",
        b"\tHost: x\r\n",
        b"Host: x\r\nX-A: 1\x002\r\n",
        b"Host: x\r\nX-A: 1\x012\r\n",
        b"Host: x\r\nX-A: 1\x7f2\r\n",
        b"Host: x\r\n: 1\r\n",
        b"Host: x\r\nX(A): 1\r\n",
        b"Host: x\r\nno-colon\r\n",
    ] {
        let mut req = b"GET / HTTP/1.1\r\n".to_vec();
        req.extend_from_slice(fields);
        req.extend_from_slice(b"\r\n");
        assert_refused(&req, 400);
    }
    // Tabs and obs-text inside a value are allowed.
    let (r, _) = single(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\tb \xe9\r\n\r\n");
    assert_eq!(r.status, 200);
}

/// `GET /sleep/MS` and `GET /work/N`: the session pauses on the work, and the test plays the
/// driver that runs it (without sleeping: the protocol only sees the result).
mod blocking_work {
    use super::*;
    use crate::proto::blocking::{hash, BlockingWork, WorkDone};

    struct RoutesOn(TestEnv);

    impl Env for RoutesOn {
        fn http_date(&self) -> &[u8] {
            DATE
        }
        fn stats_json(&self) -> String {
            self.0.stats_json()
        }
        fn count_request(&mut self) {
            self.0.count_request();
        }
        fn blocking_routes(&self) -> bool {
            true
        }
    }

    /// Drives like a driver that runs blocking work inline: returns everything written, the
    /// work met in order, and the session.
    fn serve(input: &[u8]) -> (Vec<u8>, Vec<BlockingWork>, HttpSession) {
        let mut s = HttpSession::new();
        let mut env = RoutesOn(TestEnv::new());
        let (mut out, mut works, mut pos) = (Vec::new(), Vec::new(), 0);
        loop {
            let before = out.len();
            let n = s.advance(&input[pos..], &mut out, &mut env);
            pos += n;
            if let Some(work) = s.blocking_work() {
                works.push(work);
                let done = match work {
                    BlockingWork::Sleep { ms } => WorkDone(ms.into()),
                    BlockingWork::Hash { iterations } => WorkDone(hash(iterations)),
                };
                s.resume(done, &mut out, &mut env);
                continue;
            }
            if n == 0 && out.len() == before {
                break;
            }
        }
        (out, works, s)
    }

    fn statuses(out: &[u8], head_only: &[bool]) -> Vec<u16> {
        responses(out, head_only).iter().map(|r| r.status).collect()
    }

    #[test]
    fn without_the_flag_the_routes_are_not_found() {
        let run =
            one(b"GET /sleep/5 HTTP/1.1\r\nHost: t\r\n\r\nGET /work/5 HTTP/1.1\r\nHost: t\r\n\r\n");
        let rs = responses(&run.out, &[]);
        assert_eq!(rs.iter().map(|r| r.status).collect::<Vec<_>>(), [404, 404]);
        assert_eq!(run.status, Status::Open);
    }

    #[test]
    fn the_session_pauses_on_the_work_and_the_requests_behind_it_wait() {
        let first = b"GET /sleep/25 HTTP/1.1\r\nHost: t\r\n\r\n";
        let mut input = first.to_vec();
        input.extend_from_slice(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n");
        let mut s = HttpSession::new();
        let mut env = RoutesOn(TestEnv::new());
        let mut out = Vec::new();
        assert_eq!(s.advance(&input, &mut out, &mut env), first.len());
        assert!(out.is_empty());
        assert_eq!(s.blocking_work(), Some(BlockingWork::Sleep { ms: 25 }));
        // Paused: neither the pipelined request nor a timeout-style call moves it on.
        assert_eq!(s.advance(&input[first.len()..], &mut out, &mut env), 0);
        assert!(out.is_empty());
        assert!(!s.awaiting_head() && !s.has_pending_output());
        assert_eq!(s.status(), Status::Open);
        s.resume(WorkDone(25), &mut out, &mut env);
        assert!(s.blocking_work().is_none() && s.awaiting_head());
        let n = s.advance(&input[first.len()..], &mut out, &mut env);
        assert_eq!(first.len() + n, input.len());
        let rs = responses(&out, &[]);
        assert_eq!(rs.len(), 2);
        assert_eq!(
            (rs[0].status, &rs[0].body[..]),
            (200, &b"slept 25 ms\n"[..])
        );
        assert_eq!(rs[1].body, HELLO);
        assert_eq!(env.0.requests, 2);
        // Resuming a session that waits for nothing does nothing.
        s.resume(WorkDone(1), &mut out, &mut env);
        assert_eq!(responses(&out, &[]).len(), 2);
    }

    #[test]
    fn pipelined_blocking_requests_are_answered_in_order() {
        let (out, works, s) = serve(
            b"GET /work/3 HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n\
              HEAD /sleep/7 HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /sleep/0 HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        assert_eq!(
            works,
            [
                BlockingWork::Hash { iterations: 3 },
                BlockingWork::Sleep { ms: 7 },
                BlockingWork::Sleep { ms: 0 }
            ]
        );
        let rs = responses(&out, &[false, false, true, false]);
        let bodies: Vec<&[u8]> = rs.iter().map(|r| &r.body[..]).collect();
        let digest = format!("{:016x}\n", hash(3));
        assert_eq!(
            bodies,
            [digest.as_bytes(), HELLO, b"", b"slept 0 ms\n"],
            "{}",
            String::from_utf8_lossy(&out)
        );
        // HEAD: the GET's headers, no body.
        assert_eq!(rs[2].header("content-length"), Some("11"));
        assert_eq!(rs[2].header("content-type"), Some("text/plain"));
        assert!(rs.iter().all(|r| r.header("connection").is_none()));
        assert!(s.awaiting_head());
    }

    #[test]
    fn keep_alive_is_kept_and_a_body_is_skipped() {
        let (out, works, s) = serve(
            b"GET /sleep/1 HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\nabcd\
              GET / HTTP/1.0\r\n\r\n",
        );
        assert_eq!(works, [BlockingWork::Sleep { ms: 1 }]);
        let rs = responses(&out, &[]);
        assert_eq!(rs.len(), 2, "{}", String::from_utf8_lossy(&out));
        assert_eq!(rs[0].header("connection"), Some("keep-alive"));
        assert_eq!(rs[1].body, HELLO);
        assert_eq!(rs[1].header("connection"), Some("close"));
        assert_eq!(s.status(), Status::CloseAfterFlush);
    }

    #[test]
    fn limits_and_malformed_numbers_are_bad_requests() {
        for target in [
            "/sleep/10001",
            "/sleep/",
            "/sleep/5ms",
            "/sleep/-1",
            "/sleep/99999999999999999999999",
            "/work/10000001",
            "/work/",
            "/work/0x10",
            "/work/1/2",
        ] {
            let request = format!(
                "GET {target} HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n"
            );
            let (out, works, s) = serve(request.as_bytes());
            assert!(works.is_empty(), "{target}");
            assert_eq!(statuses(&out, &[]), [400], "{target}");
            assert_eq!(s.status(), Status::CloseAfterFlush, "{target}");
        }
        let (_, works, _) = serve(b"GET /sleep/10000 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(works, [BlockingWork::Sleep { ms: 10_000 }]);
        let (_, works, _) = serve(b"GET /work/10000000?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(
            works,
            [BlockingWork::Hash {
                iterations: 10_000_000
            }]
        );
        // Not under the routes' prefix: not found, and the connection stays.
        let (out, works, s) = serve(
            b"GET /sleep HTTP/1.1\r\nHost: t\r\n\r\nPOST /work/5 HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        assert!(works.is_empty());
        assert_eq!(statuses(&out, &[]), [404, 405]);
        assert!(s.awaiting_head());
    }

    #[test]
    fn a_drain_while_paused_makes_that_response_the_last() {
        let first = b"GET /work/1 HTTP/1.1\r\nHost: t\r\n\r\n";
        let mut input = first.to_vec();
        input.extend_from_slice(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n");
        let mut s = HttpSession::new();
        let mut env = RoutesOn(TestEnv::new());
        let mut out = Vec::new();
        assert_eq!(s.advance(&input, &mut out, &mut env), first.len());
        s.drain();
        assert!(
            s.blocking_work().is_some(),
            "the work is still to be done and answered"
        );
        s.resume(WorkDone(hash(1)), &mut out, &mut env);
        assert_eq!(s.status(), Status::CloseAfterFlush);
        // What follows is not answered.
        s.advance(&input[first.len()..], &mut out, &mut env);
        let rs = responses(&out, &[]);
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].status, 200);
        assert_eq!(rs[0].header("connection"), Some("close"));
    }

    proptest! {
        /// However the stream is split, the same works are met and the same bytes come out.
        #[test]
        fn every_split_gives_the_same_answers(cut in 0usize..200) {
            let input: &[u8] = b"GET /work/2 HTTP/1.1\r\nHost: t\r\n\r\nGET /sleep/3 HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n";
            let cut = cut.min(input.len());
            let (whole, works, _) = serve(input);
            // Split: the first part alone, then everything it left plus the rest.
            let mut s = HttpSession::new();
            let mut env = RoutesOn(TestEnv::new());
            let (mut out, mut met, mut buf) = (Vec::new(), Vec::new(), input[..cut].to_vec());
            for piece in [&input[cut..], b""] {
                loop {
                    let before = out.len();
                    let n = s.advance(&buf, &mut out, &mut env);
                    buf.drain(..n);
                    if let Some(work) = s.blocking_work() {
                        met.push(work);
                        let done = match work {
                            BlockingWork::Sleep { ms } => WorkDone(ms.into()),
                            BlockingWork::Hash { iterations } => WorkDone(hash(iterations)),
                        };
                        s.resume(done, &mut out, &mut env);
                        continue;
                    }
                    if n == 0 && out.len() == before {
                        break;
                    }
                }
                buf.extend_from_slice(piece);
            }
            prop_assert_eq!(met, works);
            prop_assert_eq!(out, whole);
        }
    }
}

/// The one-pass reader of common heads ([`head::simple_head`]) reads every head it accepts
/// exactly as httparse and the field checks do, and accepts only complete heads.
fn simple_head_agrees(input: &[u8]) {
    let Some(simple) = head::simple_head(input) else {
        return;
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(input);
    assert_eq!(
        parsed,
        Ok(httparse::Status::Complete(simple.len)),
        "{:?}",
        String::from_utf8_lossy(input)
    );
    assert_eq!(req.method.map(str::as_bytes), Some(simple.method));
    assert_eq!(req.path.map(str::as_bytes), Some(simple.target));
    assert_eq!(req.version, Some(simple.minor));
    assert_eq!(Fields::read(req.headers, simple.minor), simple.fields);
}

#[test]
fn simple_head_reads_what_httparse_reads() {
    for input in [
        &b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"[..],
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:\r\nX:\t a\tb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
    ] {
        assert!(head::simple_head(input).is_some());
        simple_head_agrees(input);
    }
    // Left to the general way: bare LF, whitespace at a value's end, obs-text, lower-case
    // method, HTTP/1.2, empty lines first, an incomplete head.
    for input in [
        &b"GET / HTTP/1.1\nHost: a\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: \x80\r\n\r\n",
        b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    ] {
        assert!(head::simple_head(input).is_none(), "{input:?}");
    }
}

proptest! {
    #[test]
    fn prop_simple_head_agrees_with_httparse(
        method in prop::sample::select(vec!["GET", "HEAD", "POST", "get", "G-T", "", "CONNECT"]),
        sp1 in prop::sample::select(vec![" ", "  ", "\t"]),
        target in prop::sample::select(vec!["/", "/plaintext", "/a?b", "*", "http://x:1/y", "/\x7f", "/\u{e9}", ""]),
        sp2 in prop::sample::select(vec![" ", "  "]),
        version in prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "http/1.1"]),
        fields in prop::collection::vec(
            (
                prop::sample::select(vec!["Host", "host", "Content-Length", "Transfer-Encoding", "Connection", "Expect", "X", "Bad Name", "", "X\x01"]),
                prop::sample::select(vec![":", ": ", ":\t", " :"]),
                prop::sample::select(vec!["127.0.0.1:8080", "", "5", "5, 5", "chunked", "gzip, chunked", "close", "keep-alive", "100-continue", "a\tb", "v ", "\u{e9}", "a\x01b", "[::1]"]),
                prop::sample::select(vec!["\r\n", "\n", "\r", "\r\r\n"]),
            ),
            0..5,
        ),
        end in prop::sample::select(vec!["\r\n", "\n", ""]),
        cut in 0usize..200,
    ) {
        let mut head = format!("{method}{sp1}{target}{sp2}{version}\r\n");
        for (name, colon, value, eol) in fields {
            head.push_str(&format!("{name}{colon}{value}{eol}"));
        }
        head.push_str(end);
        let bytes = head.as_bytes();
        simple_head_agrees(bytes);
        simple_head_agrees(&bytes[..cut.min(bytes.len())]);
    }
}

#[test]
fn first_outside_finds_the_first_byte_out_of_range() {
    let ranges = [(0x21u8, 0x7eu8), (b' ', b'~'), (b'A', b'Z')];
    for len in 0..40 {
        for at in 0..=len {
            for bad in [0x00u8, 0x09, 0x20, 0x21, 0x40, 0x5b, 0x7e, 0x7f, 0x80, 0xff] {
                for (lo, hi) in ranges {
                    let good = if (lo..=hi).contains(&b'M') { b'M' } else { lo };
                    let mut s = vec![good; len];
                    if at < len {
                        s[at] = bad;
                        // Bytes after the first bad one must not matter, whatever they are.
                        for (i, b) in s.iter_mut().enumerate().skip(at + 1) {
                            *b = (i * 37) as u8;
                        }
                    }
                    let want = s.iter().position(|&b| b < lo || b > hi);
                    assert_eq!(head::first_outside(&s, lo, hi), want, "{s:?} {lo} {hi}");
                }
            }
        }
    }
}
