//! Incremental decoder for `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1).
//!
//! Reads arrive split anywhere (inside a size, between CR and LF, inside a trailer), so the decoder
//! is a byte-level state machine that consumes everything it is given and keeps only a few words
//! of state between calls; chunk data is copied in bulk. Extensions and trailer fields are
//! tolerated and skipped, never stored, so their cost is bounded by line limits rather than by
//! memory. Sizes use checked arithmetic: a size that does not fit in a u64 is malformed (400), one
//! that would take the body past its limit is too large (413) and is refused before any of its
//! data is read.

/// Longest chunk-size line (size, extensions, line ending) tolerated.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section (all trailer field lines together) tolerated.
pub const MAX_TRAILER: usize = 8192;

/// Why a chunked body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// Not valid chunked framing (400).
    Malformed,
    /// The decoded body would exceed the limit (413).
    TooLarge,
    /// The trailer section exceeds [`MAX_TRAILER`] (431).
    TrailersTooLarge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the hex digits of a chunk size.
    Size,
    /// After the digits: skipping extensions up to the LF.
    Ext,
    /// Copying chunk data.
    Data,
    /// Expecting the CR (or a bare LF) that ends chunk data.
    DataCr,
    /// Expecting the LF that ends chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line, skipping to its LF.
    TrailerLine,
    /// Saw the CR of the final empty line; expecting its LF.
    TrailerLf,
    /// The body is complete.
    Done,
}

/// Chunked-body decoder state: a phase, the current chunk's size or remaining data, and the length
/// of the current line (or trailer section).
#[derive(Debug)]
pub struct Decoder {
    phase: Phase,
    line: u32,
    size: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub const fn new() -> Decoder {
        Decoder {
            phase: Phase::Size,
            line: 0,
            size: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Decode from `input`, appending chunk data to `body` (which must not grow past `max`).
    /// Returns the bytes consumed: all of `input`, or fewer when the body ends inside it (the rest
    /// belongs to the next request). Check [`Decoder::is_done`] afterwards.
    pub fn feed(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            match self.phase {
                Phase::Size => {
                    let b = input[i];
                    if let Some(d) = hex(b) {
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(d)))
                            .ok_or(ChunkError::Malformed)?;
                        self.line += 1;
                        if self.line as usize > MAX_CHUNK_LINE {
                            return Err(ChunkError::Malformed);
                        }
                        i += 1;
                    } else {
                        // At least one digit, then extensions / whitespace / the line end.
                        if self.line == 0 || !matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n') {
                            return Err(ChunkError::Malformed);
                        }
                        let room = max.saturating_sub(body.len()) as u64;
                        if self.size > room {
                            return Err(ChunkError::TooLarge);
                        }
                        self.phase = Phase::Ext;
                    }
                }
                Phase::Ext => {
                    let rest = &input[i..];
                    match rest.iter().position(|&b| b == b'\n') {
                        Some(lf) => {
                            self.check_line(lf, MAX_CHUNK_LINE, ChunkError::Malformed)?;
                            i += lf + 1;
                            self.line = 0;
                            self.phase = if self.size == 0 {
                                Phase::TrailerStart
                            } else {
                                Phase::Data
                            };
                        }
                        None => {
                            self.check_line(rest.len(), MAX_CHUNK_LINE, ChunkError::Malformed)?;
                            self.line += rest.len() as u32;
                            i = input.len();
                        }
                    }
                }
                Phase::Data => {
                    let n = (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    body.extend_from_slice(&input[i..i + n]);
                    i += n;
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.phase = Phase::DataCr;
                    }
                }
                Phase::DataCr => {
                    match input[i] {
                        b'\r' => self.phase = Phase::DataLf,
                        b'\n' => self.phase = Phase::Size,
                        _ => return Err(ChunkError::Malformed),
                    }
                    i += 1;
                }
                Phase::DataLf => {
                    if input[i] != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.phase = Phase::Size;
                    i += 1;
                }
                Phase::TrailerStart => match input[i] {
                    b'\r' => {
                        self.phase = Phase::TrailerLf;
                        i += 1;
                    }
                    b'\n' => {
                        self.phase = Phase::Done;
                        i += 1;
                    }
                    _ => self.phase = Phase::TrailerLine,
                },
                Phase::TrailerLine => {
                    // `line` counts the whole trailer section, not one line.
                    let rest = &input[i..];
                    let (n, found) = match rest.iter().position(|&b| b == b'\n') {
                        Some(lf) => (lf + 1, true),
                        None => (rest.len(), false),
                    };
                    self.check_line(n, MAX_TRAILER, ChunkError::TrailersTooLarge)?;
                    self.line += n as u32;
                    i += n;
                    if found {
                        self.phase = Phase::TrailerStart;
                    }
                }
                Phase::TrailerLf => {
                    if input[i] != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.phase = Phase::Done;
                    i += 1;
                }
                Phase::Done => break,
            }
        }
        Ok(i)
    }

    fn check_line(&self, more: usize, max: usize, err: ChunkError) -> Result<(), ChunkError> {
        if self.line as usize + more > max {
            Err(err)
        } else {
            Ok(())
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    /// Decode `wire` fed in pieces of `step` bytes; returns (body, bytes consumed) or the error.
    fn decode(wire: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = Decoder::new();
        let mut body = Vec::new();
        let mut pos = 0;
        while pos < wire.len() && !d.is_done() {
            let end = (pos + step).min(wire.len());
            let n = d.feed(&wire[pos..end], &mut body, MAX)?;
            // Everything offered is consumed, unless the body ended inside it.
            assert!(n == end - pos || (n < end - pos && d.is_done()));
            pos += n;
        }
        if !d.is_done() {
            return Err(ChunkError::Malformed);
        }
        Ok((body, pos))
    }

    #[test]
    fn simple_and_every_step() {
        let wire = b"5\r\nhello\r\n7;ext=1;x\r\n, world\r\n0\r\n\r\nNEXT";
        for step in 1..wire.len() {
            let (body, used) = decode(wire, step).unwrap();
            assert_eq!(body, b"hello, world");
            assert_eq!(&wire[used..], b"NEXT");
        }
    }

    #[test]
    fn trailers_bare_lf_and_uppercase_hex() {
        let wire = b"A\nabcdefghij\n0\nX-Trailer: 1\r\nOther: two\n\r\nREST";
        for step in 1..wire.len() {
            let (body, used) = decode(wire, step).unwrap();
            assert_eq!(body, b"abcdefghij");
            assert_eq!(&wire[used..], b"REST");
        }
    }

    #[test]
    fn leading_zeros_and_whitespace_before_ext() {
        let (body, _) = decode(b"0003 ;a\r\nabc\r\n000\r\n\r\n", 100).unwrap();
        assert_eq!(body, b"abc");
    }

    #[test]
    fn malformed() {
        for wire in [
            &b"\r\n"[..],
            b"x\r\n",
            b"5x\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\rX0\r\n\r\n",
            b"0\r\n\rX",
            b"-1\r\n",
        ] {
            assert_eq!(decode(wire, 1), Err(ChunkError::Malformed), "{wire:?}");
            assert_eq!(decode(wire, 100), Err(ChunkError::Malformed), "{wire:?}");
        }
    }

    #[test]
    fn size_overflow_is_malformed() {
        assert_eq!(
            decode(b"1ffffffffffffffff\r\n", 3),
            Err(ChunkError::Malformed)
        );
        assert_eq!(
            decode(b"ffffffffffffffff\r\n", 3),
            Err(ChunkError::TooLarge)
        );
    }

    #[test]
    fn too_large_refused_before_data() {
        let mut d = Decoder::new();
        let mut body = Vec::new();
        assert_eq!(d.feed(b"80000\r\n", &mut body, MAX), Ok(7));
        assert_eq!(d.feed(&vec![b'x'; 0x80000], &mut body, MAX), Ok(0x80000));
        assert_eq!(d.feed(b"\r\n80000\r\n", &mut body, MAX), Ok(9));
        // Exactly at the limit is fine; one more byte is not.
        let mut d2 = Decoder::new();
        let mut b2 = vec![0; MAX];
        assert_eq!(d2.feed(b"1\r\n", &mut b2, MAX), Err(ChunkError::TooLarge));
        let mut d3 = Decoder::new();
        let mut b3 = vec![0; MAX - 1];
        assert_eq!(d3.feed(b"1\r\n", &mut b3, MAX), Ok(3));
    }

    #[test]
    fn long_lines() {
        let mut ext = b"1;".to_vec();
        ext.resize(MAX_CHUNK_LINE + 10, b'a');
        ext.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(decode(&ext, 7), Err(ChunkError::Malformed));
        let mut zeros = vec![b'0'; MAX_CHUNK_LINE + 1];
        zeros.extend_from_slice(b"\r\n\r\n");
        assert_eq!(decode(&zeros, 5), Err(ChunkError::Malformed));
        let mut tr = b"0\r\n".to_vec();
        for _ in 0..1000 {
            tr.extend_from_slice(b"X-Trailer: 123\r\n");
        }
        tr.extend_from_slice(b"\r\n");
        assert_eq!(decode(&tr, 13), Err(ChunkError::TrailersTooLarge));
    }
}
