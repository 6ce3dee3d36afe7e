//! Echo: every byte back, in order.
//!
//! Echo is the baseline the HTTP numbers are compared against, so it must cost nothing beyond the
//! copy: the session is one byte (an idle echo connection costs only its socket and the driver's
//! buffers) and carries no state between calls, because echo has no message boundaries to track.
//! The only policy it has is back-pressure: it consumes no more input than fits under
//! [`OUTPUT_HIGH_WATER`], so a client that sends without reading stops being read from instead of
//! growing the server's output buffer without bound. On shutdown ([`EchoSession::drain`]) it
//! echoes what has been received and then asks the driver to close.

use super::{Status, OUTPUT_HIGH_WATER};

/// The echo protocol's per-connection state: only whether the server is shutting down.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EchoSession {
    draining: bool,
}

impl EchoSession {
    pub const fn new() -> EchoSession {
        EchoSession { draining: false }
    }

    /// The server is shutting down: echo what the driver already holds, then close.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    pub fn status(&self) -> Status {
        if self.draining {
            Status::CloseAfterFlush
        } else {
            Status::Open
        }
    }

    /// Append as much of `input` to `out` as fits under [`OUTPUT_HIGH_WATER`]; returns the bytes
    /// consumed, which is exactly the bytes appended.
    #[inline]
    pub fn advance(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let n = input.len().min(OUTPUT_HIGH_WATER.saturating_sub(out.len()));
        out.extend_from_slice(&input[..n]);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte() {
        assert_eq!(std::mem::size_of::<EchoSession>(), 1);
    }

    #[test]
    fn drain_echoes_what_was_received_then_closes() {
        let mut s = EchoSession::new();
        let mut out = Vec::new();
        s.drain();
        assert_eq!(s.advance(b"last words", &mut out), 10);
        assert_eq!(out, b"last words");
        assert_eq!(s.status(), Status::CloseAfterFlush);
    }

    #[test]
    fn echoes_everything_that_fits() {
        let mut s = EchoSession::new();
        let mut out = Vec::new();
        assert_eq!(s.advance(b"hello", &mut out), 5);
        assert_eq!(s.advance(b"", &mut out), 0);
        assert_eq!(s.advance(b" world", &mut out), 6);
        assert_eq!(out, b"hello world");
    }

    #[test]
    fn stops_at_high_water() {
        let mut s = EchoSession::new();
        let mut out = vec![0u8; OUTPUT_HIGH_WATER - 3];
        assert_eq!(s.advance(b"abcdef", &mut out), 3);
        assert_eq!(&out[OUTPUT_HIGH_WATER - 3..], b"abc");
        // Full: nothing more is consumed, even past the mark.
        assert_eq!(s.advance(b"def", &mut out), 0);
        out.push(0);
        assert_eq!(s.advance(b"def", &mut out), 0);
        assert_eq!(out.len(), OUTPUT_HIGH_WATER + 1);
    }

    #[test]
    fn large_input_streams_through_window_in_order() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut s = EchoSession::new();
        let (mut input, mut echoed, mut out) = (&data[..], Vec::new(), Vec::new());
        let mut calls = 0;
        while !input.is_empty() {
            let n = s.advance(input, &mut out);
            assert!(out.len() <= OUTPUT_HIGH_WATER);
            input = &input[n..];
            // Drain part of the output, as a slow socket would.
            let k = out.len().min(40_000);
            echoed.extend(out.drain(..k));
            calls += 1;
        }
        echoed.append(&mut out);
        assert_eq!(echoed, data);
        assert!(calls > 10);
    }
}
