//! The request head's grammar, checked before and after httparse: the request line, the
//! request-target's form, the Host value (authority, reg-name, IP-literal), bare LFs, and the
//! header fields that frame or route a request.
//!
//! These run on every request, so each is a single pass over a few dozen bytes; the small ones
//! are `#[inline]` so that moving them out of `mod.rs` costs no call on the per-request path.

use super::chunked;
use super::response::{self, Canned};
use super::{Method, FIELDS_CAP, LINE_CAP, MAX_HEADERS};

/// The header fields that matter here.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Fields {
    pub(super) content_length: Option<u64>,
    pub(super) chunked: bool,
    pub(super) close: bool,
    pub(super) keep_alive: bool,
    pub(super) expect_continue: bool,
}

impl Fields {
    /// Read and check the fields that frame or route the request; `version` is the minor
    /// version (0: HTTP/1.0, 1: HTTP/1.1).
    #[inline]
    pub(super) fn read(headers: &[httparse::Header<'_>], version: u8) -> Result<Fields, Canned> {
        let mut reader = FieldReader::new(version);
        for h in headers {
            reader.field(h.name.as_bytes(), h.value)?;
        }
        reader.finish()
    }
}

/// Whether the token `name` is `lower` (lower-case letters and '-') in any case. Setting bit 5
/// turns an upper-case letter into its lower case and no other token character into a letter
/// or '-' (only CR would become '-'), so one OR per byte does, folded without early exits.
#[inline]
fn token_is(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len()
        && name
            .iter()
            .zip(lower)
            .fold(0, |diff, (&a, &b)| diff | ((a | 0x20) ^ b))
            == 0
}

/// [`Fields`] as they are read, one field line at a time and in order, so that the first fault
/// in the head is the one answered: the same reading whether httparse split the head or
/// [`simple_head`] did.
pub(super) struct FieldReader {
    f: Fields,
    version: u8,
    /// Transfer codings across every Transfer-Encoding field, in order.
    codings: u32,
    chunked: u32,
    last_chunked: bool,
    unknown: bool,
    hosts: u32,
}

impl FieldReader {
    #[inline]
    pub(super) fn new(version: u8) -> FieldReader {
        FieldReader {
            f: Fields::default(),
            version,
            codings: 0,
            chunked: 0,
            last_chunked: false,
            unknown: false,
            hosts: 0,
        }
    }

    /// One field line: its name, and its value without the whitespace around it.
    #[inline]
    pub(super) fn field(&mut self, name: &[u8], value: &[u8]) -> Result<(), Canned> {
        let f = &mut self.f;
        match name.len() {
            4 if token_is(name, b"host") => {
                // RFC 9112 §3.2: more than one Host, or an invalid value, is 400.
                self.hosts += 1;
                if self.hosts > 1 || !valid_authority(value) {
                    return Err(response::BAD_REQUEST);
                }
            }
            14 if token_is(name, b"content-length") => {
                // A list of identical values is tolerated (RFC 9110 §8.6); differing: 400.
                for v in value.split(|&b| b == b',') {
                    let n = parse_length(trim(v)).ok_or(response::BAD_REQUEST)?;
                    if f.content_length.is_some_and(|c| c != n) {
                        return Err(response::BAD_REQUEST);
                    }
                    f.content_length = Some(n);
                }
            }
            17 if token_is(name, b"transfer-encoding") => {
                // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
                // framing, whatever the codings (a 1.0 proxy could not have framed it so).
                if self.version == 0 {
                    return Err(response::BAD_REQUEST);
                }
                let before = self.codings;
                for v in value.split(|&b| b == b',').map(trim) {
                    // Empty list elements are allowed (RFC 9110 §5.6.1).
                    if v.is_empty() {
                        continue;
                    }
                    // transfer-coding = token *( OWS ";" OWS transfer-parameter ); chunked
                    // takes no parameters, so "chunked;x=y" is not chunked.
                    let name = trim(v.split(|&b| b == b';').next().unwrap_or(v));
                    if name.is_empty() || !name.iter().all(|&b| chunked::tchar(b)) {
                        return Err(response::BAD_REQUEST);
                    }
                    self.codings += 1;
                    self.last_chunked = v.eq_ignore_ascii_case(b"chunked");
                    self.chunked += u32::from(self.last_chunked);
                    self.unknown |= !name.eq_ignore_ascii_case(b"chunked");
                }
                if self.codings == before {
                    return Err(response::BAD_REQUEST);
                }
            }
            10 if token_is(name, b"connection") => {
                for v in value.split(|&b| b == b',').map(trim) {
                    if v.eq_ignore_ascii_case(b"close") {
                        f.close = true;
                    } else if v.eq_ignore_ascii_case(b"keep-alive") {
                        f.keep_alive = true;
                    }
                }
            }
            6 if token_is(name, b"expect") => {
                f.expect_continue = trim(value).eq_ignore_ascii_case(b"100-continue");
            }
            _ => {}
        }
        Ok(())
    }

    /// Every field line has been read: the checks that need them all.
    #[inline]
    pub(super) fn finish(self) -> Result<Fields, Canned> {
        let mut f = self.f;
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is 400 (1.0 predates it).
        if self.hosts == 0 && self.version != 0 {
            return Err(response::BAD_REQUEST);
        }
        if self.codings > 0 {
            // RFC 9112 §6.3: chunked must be last, else the length is unknowable (400); chunked
            // twice is invalid (400, RFC 9112 §7); any other coding is one this server does not
            // decode (501, RFC 9112 §6.1).
            if !self.last_chunked || self.chunked > 1 {
                return Err(response::BAD_REQUEST);
            }
            if self.unknown {
                return Err(response::NOT_IMPLEMENTED);
            }
            f.chunked = true;
        }
        Ok(f)
    }
}

/// A request head read by [`simple_head`].
pub(super) struct SimpleHead<'a> {
    /// The head's length, its final empty line included.
    pub(super) len: usize,
    pub(super) method: &'a [u8],
    pub(super) target: &'a [u8],
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(super) minor: u8,
    pub(super) fields: Result<Fields, Canned>,
}

impl SimpleHead<'_> {
    /// A keep-alive HTTP/1.1 `GET /` or `GET /plaintext` with no body and nothing wrong in its
    /// fields: the most common request, which [`super::HttpSession::answer`] would answer with
    /// [`response::hello`] and then wait for the next head, so its caller may do just that.
    #[inline]
    pub(super) fn is_plain_hello(&self) -> bool {
        self.minor == 1
            && self.method == b"GET"
            && matches!(self.target, b"/plaintext" | b"/")
            && matches!(
                self.fields,
                Ok(Fields {
                    content_length: None | Some(0),
                    chunked: false,
                    close: false,
                    ..
                })
            )
    }
}

/// The head almost every client sends, read in one pass without httparse: an upper-case method,
/// a visible-ASCII target, `HTTP/1.1` or `HTTP/1.0`, then field lines `name:value` with a token
/// name, a value of visible ASCII, SP and HTAB that does not end in whitespace, every line
/// ending in CRLF, within both limits and [`MAX_HEADERS`]. `None` for anything else (or a head
/// not yet complete): the caller then goes the general way, which reads such a head exactly as
/// this does (the same slices into [`FieldReader`]), so this only saves httparse's generality
/// (and its UTF-8 checks) on the common case: a third of a plain request's user time.
#[inline]
pub(super) fn simple_head(buf: &[u8]) -> Option<SimpleHead<'_>> {
    // Each part is scanned to its first byte outside the part's class (`?`: the buffer ended
    // first, the head is incomplete), which must then be the right delimiter.
    // GET, the usual method, without the byte loop.
    let i = if buf.starts_with(b"GET ") {
        3
    } else {
        buf.iter().position(|b| !b.is_ascii_uppercase())?
    };
    if i == 0 || buf[i] != b' ' {
        return None;
    }
    let method = &buf[..i];
    let target_at = i + 1;
    let i = target_at + first_outside(&buf[target_at..], 0x21, 0x7e)?;
    if i == target_at || buf[i] != b' ' {
        return None;
    }
    let target = &buf[target_at..i];
    let minor = match buf.get(i + 1..i + 11)? {
        b"HTTP/1.1\r\n" => 1,
        b"HTTP/1.0\r\n" => 0,
        _ => return None,
    };
    let fields_at = i + 11;
    if fields_at > LINE_CAP {
        return None;
    }
    let mut reader = FieldReader::new(minor);
    let mut fault = None;
    let mut at = fields_at;
    for _ in 0..=MAX_HEADERS {
        let line = buf.get(at..)?;
        if line.starts_with(b"\r\n") {
            let len = at + 2;
            if len > fields_at + FIELDS_CAP {
                return None;
            }
            let fields = match fault {
                Some(c) => Err(c),
                None => reader.finish(),
            };
            return Some(SimpleHead {
                len,
                method,
                target,
                minor,
                fields,
            });
        }
        let name = line.iter().position(|&b| !chunked::tchar(b))?;
        if name == 0 || line[name] != b':' {
            return None;
        }
        let value_at = name
            + 1
            + line[name + 1..]
                .iter()
                .position(|&b| b != b' ' && b != b'\t')?;
        let mut v = value_at + first_outside(&line[value_at..], b' ', b'~')?;
        while line[v] == b'\t' {
            v += 1 + first_outside(&line[v + 1..], b' ', b'~')?;
        }
        if line.get(v..v + 2)? != b"\r\n" || matches!(line[v - 1], b' ' | b'\t') {
            return None;
        }
        if fault.is_none() {
            fault = reader.field(&line[..name], &line[value_at..v]).err();
        }
        at += v + 2;
        if at > fields_at + FIELDS_CAP {
            return None;
        }
    }
    None // more fields than MAX_HEADERS
}

/// The index of the first byte of `s` outside `lo..=hi` (a range within ASCII, `lo > 0`), or
/// `None` if every byte is inside. Eight bytes a step (SWAR): a byte-at-a-time loop costs
/// about as much as the rest of a small request's handling. In each word the flags mark the
/// bytes below `lo` (a borrow in the subtraction), above `hi` (a carry into bit 7 of the
/// addition) and at or above 0x80; a borrow or carry out of one byte can only set a wrong flag
/// in the bytes after a rightly flagged one, so the lowest flag is always right.
#[inline]
pub(super) fn first_outside(s: &[u8], lo: u8, hi: u8) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut words = s.chunks_exact(8);
    for (k, word) in words.by_ref().enumerate() {
        let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let below = w.wrapping_sub(ONES * u64::from(lo)) & !w;
        let above = w.wrapping_add(ONES * u64::from(0x7f - hi)) | w;
        let flags = (below | above) & HIGH;
        if flags != 0 {
            return Some(k * 8 + flags.trailing_zeros() as usize / 8);
        }
    }
    let done = s.len() - words.remainder().len();
    words
        .remainder()
        .iter()
        .position(|&b| b < lo || b > hi)
        .map(|i| done + i)
}

/// What a complete, valid request line says.
#[derive(Clone, Copy, Debug)]
pub(super) struct Line {
    /// Its length, CRLF included.
    pub(super) len: usize,
    /// Offset of the minor version digit.
    pub(super) minor_at: usize,
    /// The minor version: 0 for HTTP/1.0, 1 for 1.1, more for a later 1.x.
    pub(super) minor: u8,
}

/// Check the request line at the start of `buf` (RFC 9112 §3) as far as it has arrived:
/// `Ok(None)` while it is valid so far but incomplete. An error is found at its first offending
/// byte, so the verdict does not depend on how the line was split across reads.
///
/// ```text
/// request-line = method SP request-target SP HTTP-version CRLF
/// method       = token
/// HTTP-version = "HTTP" "/" DIGIT "." DIGIT        ; case-sensitive (RFC 9112 §2.3)
/// ```
///
/// The request-target is one or more visible ASCII characters (its form is checked once the
/// method is known, in [`target_path`]): whitespace, CTLs and non-ASCII bytes inside it are 400
/// (RFC 9112 §3.2). A well-formed version with a major other than 1 is 505 (RFC 9110 §15.6.6).
#[inline]
pub(super) fn request_line(buf: &[u8]) -> Result<Option<Line>, Canned> {
    const BAD: Result<Option<Line>, Canned> = Err(response::BAD_REQUEST);
    // Each part runs to its SP; its bytes are then checked in one pass. A
    // part still arriving is checked as far as it goes, so a bad byte is refused at once.
    let method_end = find_byte(b' ', buf);
    let method = &buf[..method_end.unwrap_or(buf.len())];
    if !method.iter().all(|&b| chunked::tchar(b)) || method_end == Some(0) {
        return BAD;
    }
    let Some(method_end) = method_end else {
        return Ok(None);
    };
    let target = method_end + 1;
    let target_end = find_byte(b' ', &buf[target..]).map(|n| target + n);
    // VCHAR: 0x21..=0x7e, a range check that vectorises.
    let visible = |t: &[u8]| t.iter().all(|&b| b.wrapping_sub(0x21) < 0x5e);
    if !visible(&buf[target..target_end.unwrap_or(buf.len())]) || target_end == Some(target) {
        return BAD;
    }
    let Some(target_end) = target_end else {
        return Ok(None);
    };
    let i = target_end + 1;
    // `0` stands for any digit.
    for (k, &want) in b"HTTP/0.0\r\n".iter().enumerate() {
        let Some(&b) = buf.get(i + k) else {
            return Ok(None);
        };
        let ok = if want == b'0' {
            b.is_ascii_digit()
        } else {
            b == want
        };
        if !ok {
            return BAD;
        }
    }
    if buf[i + 5] != b'1' {
        return Err(response::VERSION_NOT_SUPPORTED);
    }
    Ok(Some(Line {
        len: i + 10,
        minor_at: i + 7,
        minor: buf[i + 7] - b'0',
    }))
}

/// The length of the empty lines (CRLF only) at the start of `buf`, which a server ignores
/// before a request line (RFC 9112 §2.2).
#[inline]
pub(super) fn leading_empty_lines(buf: &[u8]) -> usize {
    buf.chunks_exact(2).take_while(|p| p == b"\r\n").count() * 2
}

/// Whether `head` (as accepted by httparse, which admits no CR without an LF after it) has an
/// LF without a CR before it. Each CR is then followed by its own LF, so the LFs outnumber the
/// CRs exactly by the bare ones. Counted in byte-wide lanes over blocks of at most 255 bytes
/// (so a `u8` cannot overflow): that vectorises 32 bytes a step, where a `usize` count or a scan
/// with look-behind goes a byte or two at a time.
#[inline]
pub(super) fn bare_lf(head: &[u8]) -> bool {
    let count = |c: u8| -> usize {
        head.chunks(255)
            .map(|block| usize::from(block.iter().fold(0u8, |n, &b| n + u8::from(b == c))))
            .sum()
    };
    count(b'\n') != count(b'\r')
}

/// The first `byte` in `hay`. The scans on the request path are a few dozen bytes long, where
/// a plain loop beats memchr's call and dispatch.
#[inline]
pub(super) fn find_byte(byte: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == byte)
}

/// The path (with its query) to route, from a request-target in the form its method allows
/// (RFC 9112 §3.2); `None` for any other: 400.
/// - origin-form `/path?query`, for every method;
/// - absolute-form `http://authority/path?query` (§3.2.2), which a server MUST accept: routed by
///   its path, its authority checked like a Host value (the Host field is then ignored, and is
///   not used here anyway); only the http and https schemes, and an empty host is invalid (RFC
///   9110 §4.2.1), as is userinfo (RFC 9110 §4.2.4);
/// - asterisk-form `*` (§3.2.4), for OPTIONS only;
/// - authority-form is for CONNECT only, which is refused before this.
#[inline]
pub(super) fn target_path(b: &[u8], method: Method) -> Option<&[u8]> {
    if b.first() == Some(&b'/') {
        return Some(b);
    }
    if b == b"*" {
        return (method == Method::Options).then_some(b);
    }
    let colon = b.iter().position(|&c| c == b':')?;
    let scheme = &b[..colon];
    if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
        return None;
    }
    let rest = b[colon + 1..].strip_prefix(b"//")?;
    let end = rest
        .iter()
        .position(|&c| c == b'/' || c == b'?')
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || authority[0] == b':' || !valid_authority(authority) {
        return None;
    }
    Some(&rest[end..])
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2-3.2.3): a Host field value, or the
/// authority of an absolute-form target. An empty value is valid (RFC 9112 §3.2: sent when the
/// target URI has no authority).
#[inline]
fn valid_authority(v: &[u8]) -> bool {
    // The usual `name[:port]` (letters, digits, '.', '-', then digits) in one table-driven
    // pass; anything else (IP-literal, percent-encoding, sub-delims) goes the long way.
    let name = v
        .iter()
        .take_while(|&&b| HOST_NAME_CHAR[usize::from(b)])
        .count();
    match v.get(name) {
        None => return true,
        Some(b':') if v[name + 1..].iter().all(u8::is_ascii_digit) => return true,
        _ => {}
    }
    let (host_ok, port) = match v.strip_prefix(b"[") {
        // IP-literal = "[" ( IPv6address / IPvFuture ) "]"
        Some(rest) => {
            let Some(close) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let port = match &rest[close + 1..] {
                [] => &b""[..],
                [b':', port @ ..] => port,
                _ => return false,
            };
            (ip_literal(&rest[..close]), port)
        }
        // A reg-name (an IPv4address is one too) has no ':'.
        None => match v.iter().position(|&b| b == b':') {
            Some(c) => (reg_name(&v[..c]), &v[c + 1..]),
            None => (reg_name(v), &b""[..]),
        },
    };
    host_ok && port.iter().all(u8::is_ascii_digit)
}

/// Letters, digits, '.' and '-': the characters of almost every Host value's name.
const HOST_NAME_CHAR: [bool; 256] = chunked::byte_class(b".-");

/// `unreserved / sub-delims` (RFC 3986 §2.2-2.3).
const REG_NAME_CHAR: [bool; 256] = chunked::byte_class(b"-._~!$&'()*+,;=");

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`
#[inline]
fn reg_name(h: &[u8]) -> bool {
    let mut i = 0;
    while i < h.len() {
        match h[i] {
            b'%' => {
                if !h
                    .get(i + 1..i + 3)
                    .is_some_and(|x| x.iter().all(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
                continue;
            }
            b if REG_NAME_CHAR[usize::from(b)] => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// The inside of an IP-literal: an IPv6 address (std's parser follows RFC 4291's text forms;
/// RFC 3986 has no zone identifiers), or `IPvFuture = "v" 1*HEXDIG "." 1*( unreserved /
/// sub-delims / ":" )`.
fn ip_literal(s: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = s {
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (ver, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !ver.is_empty()
            && ver.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:".contains(&b));
    }
    std::str::from_utf8(s).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

/// A non-empty run of ASCII digits; one too large for a u64 is still a number, and reads as
/// `u64::MAX` (it is over every limit anyway).
#[inline]
pub(super) fn parse_length(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |acc, &b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

#[inline]
fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}
