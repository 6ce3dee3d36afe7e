//! Incremental decoder for `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1).
//!
//! Reads arrive split anywhere (inside a size, between CR and LF, inside a trailer), so the decoder
//! is a byte-level state machine that consumes everything it is given and keeps only a few words
//! of state between calls; chunk data is copied in bulk.
//!
//! The framing is checked to the letter of the grammar, because a decoder that is lenient where a
//! proxy in front of it is strict (or the other way round) lets a client smuggle a request past
//! that proxy:
//!
//! ```text
//! chunked-body   = *chunk last-chunk trailer-section CRLF
//! chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size     = 1*HEXDIG
//! last-chunk     = 1*("0") [ chunk-ext ] CRLF
//! chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! chunk-ext-name = token
//! chunk-ext-val  = token / quoted-string
//! trailer-section = *( field-line CRLF )
//! field-line     = field-name ":" OWS field-value OWS
//! ```
//!
//! - Every line ends in CRLF: a bare LF, a bare CR, or anything but CRLF after chunk data is
//!   malformed (400).
//! - Extensions are parsed (token names, token or quoted-string values) and skipped, never
//!   stored; any other byte there (a CTL, NUL, a bare CR) is malformed.
//! - Trailer fields are parsed as field lines (a token name, a colon, a value of visible
//!   characters, SP, HTAB and obs-text) and discarded (RFC 9110 §6.5.1 lets a recipient do so);
//!   obs-fold, whitespace before the colon, or a CTL in the value is malformed.
//! - Nothing is buffered but the body: one chunk-size line may be [`MAX_CHUNK_LINE`] long, all
//!   extensions of a body [`MAX_CHUNK_EXT`] together (as hyper does: otherwise a client could
//!   stream unbounded framing for a bounded body), the trailer section [`MAX_TRAILER`] (431).
//! - A chunk size has at most 16 hex digits, leading zeros included (so it always fits in a u64
//!   and a line of zeros cannot stand in for data); a size that would take the body past its
//!   limit is too large (413) and is refused before any of its data is read.

/// Longest chunk-size line (size, extensions, CRLF) tolerated.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most extension bytes (everything after the size, before the CRLF) over one body.
pub const MAX_CHUNK_EXT: usize = 16 * 1024;
/// Largest trailer section (all trailer field lines together) tolerated.
pub const MAX_TRAILER: usize = 8192;
/// Most hex digits in a chunk size, leading zeros included: 16 digits always fit in a u64.
pub const MAX_SIZE_DIGITS: usize = 16;

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

/// Declared in stream order: the decoder compares phases to tell the chunk-size line, the data
/// and the trailer section apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Reading the hex digits of a chunk size.
    Size,
    /// BWS after the size: only `;` may follow.
    SizeWs,
    /// After `;`: BWS, then the first character of an extension name.
    ExtName0,
    /// Inside an extension name.
    ExtName,
    /// BWS after an extension name: `=` or `;` must follow.
    ExtNameWs,
    /// After `=`: BWS, then a token or a quoted-string.
    ExtVal0,
    /// Inside a token value.
    ExtToken,
    /// Inside a quoted-string value.
    ExtQuoted,
    /// After a backslash inside a quoted-string.
    ExtQuotedPair,
    /// Right after the closing quote.
    ExtQuotedEnd,
    /// BWS after a value: `;` must follow.
    ExtValWs,
    /// Saw the CR ending the chunk-size line; expecting its LF.
    SizeLf,
    /// Copying chunk data.
    Data,
    /// Expecting the CR that ends chunk data.
    DataCr,
    /// Expecting the LF that ends chunk data.
    DataLf,
    /// At the start of a trailer field line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value (after the colon).
    TrailerValue,
    /// Saw the CR ending a trailer field line; expecting its LF.
    TrailerLf,
    /// Saw the CR of the final empty line; expecting its LF.
    EndLf,
    /// The body is complete.
    Done,
}

/// Chunked-body decoder state: a phase, the current chunk's size or remaining data, the length
/// of the current line (or trailer section), and the extension bytes seen so far.
#[derive(Debug)]
pub struct Decoder {
    phase: Phase,
    line: u32,
    ext: u32,
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
            ext: 0,
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
        use ChunkError::Malformed;
        use Phase::*;
        let mut i = 0;
        while i < input.len() {
            if self.phase == Data {
                let n = (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                body.extend_from_slice(&input[i..i + n]);
                i += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.phase = DataCr;
                }
                continue;
            }
            if self.phase == Done {
                break;
            }
            let b = input[i];
            i += 1;
            if self.phase < Data {
                // A byte of the chunk-size line.
                self.line += 1;
                if self.line as usize > MAX_CHUNK_LINE {
                    return Err(Malformed);
                }
                if !matches!(self.phase, Size | SizeLf) {
                    self.ext += 1;
                    if self.ext as usize > MAX_CHUNK_EXT {
                        return Err(Malformed);
                    }
                }
            } else if self.phase >= TrailerStart
                && !(self.phase == EndLf || (self.phase == TrailerStart && b == b'\r'))
            {
                // A byte of a trailer field line; `line` counts the whole section.
                self.line += 1;
                if self.line as usize > MAX_TRAILER {
                    return Err(ChunkError::TrailersTooLarge);
                }
            }
            self.phase = match (self.phase, b) {
                (Size, _) if hex(b).is_some() => {
                    if self.line as usize > MAX_SIZE_DIGITS {
                        return Err(Malformed);
                    }
                    // Cannot overflow: at most 16 digits.
                    self.size = (self.size << 4) | u64::from(hex(b).unwrap_or(0));
                    Size
                }
                // At least one digit, then the body limit, before anything else on the line.
                (Size, _) if self.line == 1 => return Err(Malformed),
                (Size, b' ' | b'\t' | b';' | b'\r') => {
                    if self.size > max.saturating_sub(body.len()) as u64 {
                        return Err(ChunkError::TooLarge);
                    }
                    match b {
                        b';' => ExtName0,
                        b'\r' => SizeLf,
                        _ => SizeWs,
                    }
                }
                (SizeWs | ExtValWs, b' ' | b'\t') => self.phase,
                (SizeWs | ExtValWs, b';') => ExtName0,
                (ExtName0, b' ' | b'\t') => ExtName0,
                (ExtName0 | ExtName, _) if tchar(b) => ExtName,
                (ExtName, b' ' | b'\t') => ExtNameWs,
                (ExtNameWs, b' ' | b'\t') => ExtNameWs,
                (ExtName | ExtNameWs, b'=') => ExtVal0,
                (ExtName | ExtNameWs, b';') => ExtName0,
                (ExtVal0, b' ' | b'\t') => ExtVal0,
                (ExtVal0, b'"') => ExtQuoted,
                (ExtVal0 | ExtToken, _) if tchar(b) => ExtToken,
                (ExtToken | ExtQuotedEnd, b' ' | b'\t') => ExtValWs,
                (ExtToken | ExtQuotedEnd, b';') => ExtName0,
                (ExtName | ExtToken | ExtQuotedEnd, b'\r') => SizeLf,
                (ExtQuoted, b'"') => ExtQuotedEnd,
                (ExtQuoted, b'\\') => ExtQuotedPair,
                // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
                (ExtQuoted, _) if field_vchar(b) => ExtQuoted,
                // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                (ExtQuotedPair, _) if field_vchar(b) => ExtQuoted,
                (SizeLf, b'\n') => {
                    self.line = 0;
                    if self.size == 0 {
                        TrailerStart
                    } else {
                        Data
                    }
                }
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => {
                    self.line = 0;
                    Size
                }
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart | TrailerName, _) if tchar(b) => TrailerName,
                (TrailerName, b':') => TrailerValue,
                (TrailerValue, b'\r') => TrailerLf,
                (TrailerValue, _) if field_vchar(b) => TrailerValue,
                (TrailerLf, b'\n') => TrailerStart,
                (EndLf, b'\n') => Done,
                _ => return Err(Malformed),
            };
        }
        Ok(i)
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

/// A 256-entry class table: one load per byte on the request path instead of a chain of
/// comparisons.
pub(super) const fn byte_class(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

const TCHAR: [bool; 256] = byte_class(b"!#$%&'*+-.^_`|~");

/// `tchar` (RFC 9110 §5.6.2): the characters of a token.
pub(super) fn tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// A byte allowed inside a field value (RFC 9110 §5.5): VCHAR, SP, HTAB, obs-text. Never CR,
/// LF, NUL, another CTL or DEL.
pub(super) fn field_vchar(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff)
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
    fn trailers_and_uppercase_hex() {
        let wire = b"A\r\nabcdefghij\r\n0\r\nX-Trailer: 1\r\nOther:two \t\r\nE:\r\n\r\nREST";
        for step in 1..wire.len() {
            let (body, used) = decode(wire, step).unwrap();
            assert_eq!(body, b"abcdefghij");
            assert_eq!(&wire[used..], b"REST");
        }
    }

    /// Assert `wire` is refused as `err` however it is split.
    fn refused(wire: &[u8], err: ChunkError) {
        for step in [1, 2, 3, 7, wire.len()] {
            assert_eq!(
                decode(wire, step),
                Err(err),
                "{:?} step {step}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    /// RFC 9112 §7.1: `chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF` — only CRLF ends
    /// the chunk-size line and the chunk data (§2.2's leave to accept a bare LF covers the start
    /// line and header fields, not chunked framing).
    #[test]
    fn rfc9112_7_1_crlf_only() {
        for wire in [
            &b"5\nhello\r\n0\r\n\r\n"[..],    // bare LF after the size
            b"5;a=b\nhello\r\n0\r\n\r\n",     // bare LF after an extension
            b"5\r\nhello\n0\r\n\r\n",         // bare LF after the data
            b"5\r\nhello\r0\r\n\r\n",         // bare CR after the data
            b"5\r\nhello0\r\n\r\n",           // nothing after the data
            b"5\r\nhello\r\n0\n\r\n",         // bare LF after the last chunk
            b"5\r\nhello\r\n0\r\n\n",         // bare LF as the final line
            b"5\r\nhello\r\n0\r\nX: 1\n\r\n", // bare LF after a trailer field
            b"5\r5\nhello\r\n0\r\n\r\n",      // bare CR in the size line
            b"5 \r\nhello\r\n0\r\n\r\n",      // BWS not followed by ";"
        ] {
            refused(wire, ChunkError::Malformed);
        }
    }

    /// RFC 9112 §7.1.1: `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`
    /// with a token name and a token or quoted-string value; nothing else may appear there.
    #[test]
    fn rfc9112_7_1_1_extension_grammar() {
        for ext in [
            &b";a"[..],
            b";a=b",
            b" ; a = b ;c;d=\"q \\\" \\\\ \t\x80\"",
            b";a=\"\"",
            b";!#$%&'*+-.^_`|~09AZaz=!#$%&'*+-.^_`|~",
            b"\t;a\t=\tb\t;c",
        ] {
            let mut wire = b"3".to_vec();
            wire.extend_from_slice(ext);
            wire.extend_from_slice(b"\r\nabc\r\n0");
            wire.extend_from_slice(ext);
            wire.extend_from_slice(b"\r\n\r\n");
            for step in 1..wire.len() {
                let (body, used) = decode(&wire, step)
                    .unwrap_or_else(|e| panic!("{:?}: {e:?}", String::from_utf8_lossy(&wire)));
                assert_eq!((&body[..], used), (&b"abc"[..], wire.len()));
            }
        }
        for ext in [
            &b";"[..],         // no name
            b";=b",            // no name
            b";a=",            // no value
            b";a b",           // two tokens
            b";a=b c",         // two tokens
            b";a ",            // trailing BWS
            b";a=b ",          // trailing BWS
            b";a=\"b",         // unterminated quoted-string
            b";a=\"b\"c",      // text after the quoted-string
            b";a=\"b\\\x01\"", // quoted-pair of a CTL
            b";a\x00",         // NUL
            b";a=b\x00",       // NUL
            b";a=\"\x00\"",    // NUL in a quoted-string
            b";a\rb",          // bare CR
            b";a=\"\r\"",      // bare CR in a quoted-string
            b";a=\x7f",        // DEL
            b";a=\x01",        // CTL
            b";a=\"\x1b\"",    // CTL in a quoted-string
            b";a=(b)",         // delimiters are not token characters
            b";a@b",           // "
            b"x",              // no ";"
        ] {
            let mut wire = b"3".to_vec();
            wire.extend_from_slice(ext);
            wire.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
            refused(&wire, ChunkError::Malformed);
        }
    }

    /// RFC 9112 §7.1.2: the trailer section is field lines (RFC 9112 §5, RFC 9110 §5.5), each
    /// ended by CRLF, then CRLF.
    #[test]
    fn rfc9112_7_1_2_trailer_fields() {
        for trailer in [
            &b"X-1: a\r\n  b\r\n"[..], // obs-fold (RFC 9112 §5.2)
            b" X: 1\r\n",              // leading whitespace
            b"X : 1\r\n",              // whitespace before the colon (RFC 9112 §5.1)
            b": 1\r\n",                // empty name
            b"X\r\n",                  // no colon
            b"X(1): 2\r\n",            // not a token
            b"X: a\x00b\r\n",          // NUL (RFC 9110 §5.5)
            b"X: a\rb\r\n",            // bare CR
            b"X: a\x01b\r\n",          // CTL
            b"X: a\x7fb\r\n",          // DEL
            b"X: 1\r\r\n",             // CR CR LF
        ] {
            let mut wire = b"0\r\n".to_vec();
            wire.extend_from_slice(trailer);
            wire.extend_from_slice(b"\r\n");
            refused(&wire, ChunkError::Malformed);
        }
    }

    /// A chunk size is at most 16 hex digits (a u64), leading zeros included: more is an
    /// overflow, refused before it can be mistaken for a small number (RFC 9112 §7.1: "A
    /// recipient MUST anticipate potentially large hexadecimal numerals and prevent parsing
    /// errors due to integer conversion overflows").
    #[test]
    fn rfc9112_7_1_size_digits_capped() {
        let (body, _) = decode(b"0000000000000003\r\nabc\r\n0\r\n\r\n", 5).unwrap();
        assert_eq!(body, b"abc");
        refused(
            b"00000000000000003\r\nabc\r\n0\r\n\r\n",
            ChunkError::Malformed,
        );
        refused(b"00000000000000000\r\n\r\n", ChunkError::Malformed);
        refused(b"10000000000000000\r\n", ChunkError::Malformed);
    }

    /// Extensions are skipped, not stored, but their total over one body is capped: otherwise a
    /// client streams unbounded framing for a 1-byte body.
    #[test]
    fn extension_total_is_capped() {
        let one = format!("1;{}\r\nx\r\n", "e".repeat(1000));
        let n = MAX_CHUNK_EXT / 1000;
        let mut ok = one.repeat(n - 1).into_bytes();
        ok.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(decode(&ok, 4096).unwrap().0.len(), n - 1);
        let mut over = one.repeat(n + 1).into_bytes();
        over.extend_from_slice(b"0\r\n\r\n");
        refused(&over, ChunkError::Malformed);
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
