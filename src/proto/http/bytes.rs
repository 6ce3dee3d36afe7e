//! The body of `GET /bytes/N`: a repeating static pattern, copied into the output window by
//! `advance`, or lent to a driver that can send it from where it lies ([`Session::static_output`],
//! the zero-copy extension of the contract in [`crate::proto`]).
//!
//! Both ways give the same bytes in the same order, and a session may be driven either way at any
//! moment: lending is only a view of what the next `advance` would copy, and
//! [`HttpSession::static_output_sent`] moves the stream on exactly as copying and sending would.
//!
//! [`Session::static_output`]: crate::proto::Session::static_output

use super::*;
use crate::proto::STATIC_WINDOW;

/// One period of the pattern: byte `i` is [`bytes_pattern`]`(i)`.
const ALPHABET: [u8; 26] = *b"abcdefghijklmnopqrstuvwxyz";

/// The `/bytes` pattern, long enough for a whole lent window ([`STATIC_WINDOW`], the larger of
/// the two windows) starting at any phase: one copy and one send per output window rather than a
/// 26 KiB piece per send (benches/throughput.py measured the smaller pieces at a third of
/// cepoll's `/bytes` rate). An array of periods, so that the compiler repeats one constant
/// rather than evaluating a loop per byte.
static PATTERN: [[u8; 26]; STATIC_WINDOW / 26 + 2] = [ALPHABET; STATIC_WINDOW / 26 + 2];

/// The pattern from phase 0, as bytes.
fn pattern() -> &'static [u8] {
    PATTERN.as_flattened()
}

impl HttpSession {
    /// See [`crate::proto::Session::with_lent_output`].
    pub fn lend_output(&mut self) {
        self.lend = true;
    }

    /// Copies the next piece of a `/bytes` body into `out`, up to the high-water mark; or, when
    /// the driver takes lent output, stops: the body is sent from [`Self::static_output`].
    pub(super) fn on_bytes(&mut self, out: &mut Vec<u8>) -> Option<usize> {
        if self.lend {
            return None;
        }
        let State::Bytes { remaining, phase } = &mut self.state else {
            return None;
        };
        let p = usize::from(*phase) % 26;
        let n = (*remaining as usize).min(OUTPUT_HIGH_WATER.saturating_sub(out.len()));
        out.extend_from_slice(&pattern()[p..p + n]);
        *remaining -= n as u32;
        *phase = ((p + n) % 26) as u8;
        if *remaining == 0 {
            self.finish();
        }
        Some(0)
    }

    /// See [`crate::proto::Session::static_output`]: the next (up to [`STATIC_WINDOW`]) bytes of
    /// a `/bytes` body being streamed; empty in any other state, and for a driver that has not
    /// opted in (it gets them copied by `advance`).
    #[inline]
    pub fn static_output(&self) -> &'static [u8] {
        match self.state {
            State::Bytes { remaining, phase } if self.lend => {
                let p = usize::from(phase) % 26;
                &pattern()[p..p + (remaining as usize).min(STATIC_WINDOW)]
            }
            _ => &[],
        }
    }

    /// See [`crate::proto::Session::static_output_sent`]: `n` bytes of [`Self::static_output`]
    /// have been sent; the body goes on after them (or is complete).
    pub fn static_output_sent(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let State::Bytes { remaining, phase } = &mut self.state else {
            panic!("{n} bytes of static output reported sent, but none was lent");
        };
        assert!(
            n <= (*remaining as usize).min(STATIC_WINDOW),
            "sent past the window"
        );
        *remaining -= n as u32;
        *phase = ((usize::from(*phase) + n) % 26) as u8;
        if *remaining == 0 {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Env, Session, Status};
    use proptest::prelude::*;

    struct NoEnv;

    impl Env for NoEnv {
        fn http_date(&self) -> &[u8] {
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        }
        fn stats_json(&self) -> String {
            String::new()
        }
        fn count_request(&mut self) {}
    }

    #[test]
    fn pattern_is_bytes_pattern() {
        let p = pattern();
        assert!(p.len() >= STATIC_WINDOW + 26);
        assert!(p
            .iter()
            .enumerate()
            .all(|(i, &b)| b == bytes_pattern(i as u64)));
    }

    /// What a driver that never lends sees, and what one that always lends sees, with the
    /// socket taking `sends[k]` bytes on its k-th send (cycled): every byte sent, in order; and
    /// the largest output buffer either held.
    fn serve(input: &[u8], sends: &[usize], lend: bool) -> (Vec<u8>, usize, Status) {
        let mut s = Session::new(crate::proto::Proto::Http);
        if lend {
            s = s.with_lent_output();
        }
        let mut env = NoEnv;
        let (mut input, mut out, mut wire) = (input.to_vec(), Vec::new(), Vec::new());
        let mut peak = 0;
        let mut sends = sends.iter().cycle();
        loop {
            let window = s.static_output();
            if !out.is_empty() || !window.is_empty() {
                // One gather send: the buffer first, then the lent window.
                let n = (*sends.next().unwrap()).min(out.len() + window.len());
                let from_out = n.min(out.len());
                wire.extend(out.drain(..from_out));
                wire.extend_from_slice(&window[..n - from_out]);
                s.static_output_sent(n - from_out);
                // While a window is out, the driver does not ask `advance` for more.
                if !s.static_output().is_empty() {
                    continue;
                }
            }
            let before = out.len();
            let c = s.advance(&input, &mut out, &mut env);
            input.drain(..c);
            peak = peak.max(out.len());
            if c == 0 && out.len() == before && out.is_empty() && s.static_output().is_empty() {
                if !lend && s.has_pending_output() {
                    continue;
                }
                break;
            }
        }
        (wire, peak, s.status())
    }

    const PIPELINE: &[u8] = b"GET /bytes/1000003 HTTP/1.1\r\nHost: x\r\n\r\n\
GET /bytes/5 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n\
GET /bytes/300000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn lending_sends_what_copying_sends_with_no_buffer_for_the_body() {
        for sends in [&[1usize << 20][..], &[1000, 65536, 7], &[262144]] {
            let (copied, copy_peak, copy_status) = serve(PIPELINE, sends, false);
            let (lent, lend_peak, lend_status) = serve(PIPELINE, sends, true);
            assert_eq!(copied.len(), lent.len());
            assert!(copied == lent, "lending changed the bytes sent");
            assert_eq!(copy_status, Status::CloseAfterFlush);
            assert_eq!(lend_status, Status::CloseAfterFlush);
            // Copying streams through the window; lending holds only the heads.
            assert!(copy_peak >= OUTPUT_HIGH_WATER, "{copy_peak}");
            assert!(lend_peak < 1024, "{lend_peak}");
        }
    }

    #[test]
    fn window_is_what_advance_would_copy() {
        let mut s = HttpSession::new();
        let mut env = NoEnv;
        let mut out = Vec::new();
        s.lend_output();
        let req = b"GET /bytes/1000000 HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(s.advance(req, &mut out, &mut env), req.len());
        assert!(out.ends_with(b"\r\n\r\n"), "the body was lent, not copied");
        out.clear(); // the head
                     // Neither side of the pattern's period, nor the window's edge, is special.
        for sent in [7, 26, STATIC_WINDOW - 1, 1, 0, 65536] {
            let window = s.static_output();
            assert_eq!(window.len(), STATIC_WINDOW);
            let State::Bytes { remaining, phase } = s.state else {
                unreachable!("the body is not complete")
            };
            let mut copy = HttpSession {
                state: State::Bytes { remaining, phase },
                ..HttpSession::new()
            };
            copy.advance(b"", &mut out, &mut env);
            assert_eq!(&window[..out.len()], &out[..]);
            out.clear();
            s.static_output_sent(sent);
        }
    }

    #[test]
    fn window_is_capped_and_ends_with_the_body() {
        let mut s = HttpSession::new();
        let mut env = NoEnv;
        let mut out = Vec::new();
        assert!(s.static_output().is_empty());
        s.lend_output();
        let req = b"GET /bytes/300000 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let c = s.advance(req, &mut out, &mut env);
        assert_eq!(s.static_output().len(), STATIC_WINDOW);
        s.static_output_sent(STATIC_WINDOW);
        assert_eq!(s.static_output().len(), 300_000 - STATIC_WINDOW);
        assert!(s.has_pending_output());
        s.static_output_sent(300_000 - STATIC_WINDOW);
        assert!(s.static_output().is_empty());
        // The body is complete: the next request is answered by `advance`.
        out.clear();
        assert_eq!(s.advance(&req[c..], &mut out, &mut env), req.len() - c);
        assert!(out.ends_with(HELLO));
        assert!(s.static_output().is_empty());
        s.static_output_sent(0); // nothing lent, nothing sent: fine
    }

    #[test]
    #[should_panic(expected = "none was lent")]
    fn reporting_unlent_bytes_panics() {
        HttpSession::new().static_output_sent(1);
    }

    #[test]
    fn head_and_echo_lend_nothing() {
        let mut env = NoEnv;
        let mut s = HttpSession::new();
        let mut out = Vec::new();
        s.advance(
            b"HEAD /bytes/1000000 HTTP/1.1\r\nHost: x\r\n\r\n",
            &mut out,
            &mut env,
        );
        assert!(s.static_output().is_empty());
        let echo = Session::new(crate::proto::Proto::Echo).with_lent_output();
        assert!(echo.static_output().is_empty());
        // Not opted in: the body is copied, nothing is lent.
        let mut s = HttpSession::new();
        s.advance(
            b"GET /bytes/100000 HTTP/1.1\r\nHost: x\r\n\r\n",
            &mut out,
            &mut env,
        );
        assert!(out.len() >= OUTPUT_HIGH_WATER);
        assert!(s.static_output().is_empty());
    }

    proptest! {
        /// However the socket splits the sends, lending and copying put the same bytes on the
        /// wire.
        #[test]
        fn prop_lending_equals_copying(sends in prop::collection::vec(1usize..300_000, 1..8)) {
            let (copied, _, _) = serve(PIPELINE, &sends, false);
            let (lent, _, _) = serve(PIPELINE, &sends, true);
            prop_assert!(copied == lent);
        }
    }
}
