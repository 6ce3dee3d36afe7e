//! Response heads, written straight into the connection's output buffer.
//!
//! This is on the hot path of every request, so a head is a handful of `extend_from_slice` calls
//! of static pieces plus a stack-formatted decimal length: no `format!`, no intermediate `String`,
//! one `reserve` so the buffer grows at most once.

use crate::proto::Env;

/// How the `Connection` header reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// No header: HTTP/1.1 keep-alive by default.
    Default,
    /// `Connection: keep-alive` (an HTTP/1.0 client that asked for it).
    KeepAlive,
    /// `Connection: close`.
    Close,
}

/// A status with a short text body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Canned {
    pub status: &'static [u8],
    pub body: &'static [u8],
}

/// A [`Canned`] whose body is its reason phrase on a line: the text is written once, and the
/// status line and the body are both made from it at compile time.
macro_rules! canned {
    ($code:literal, $reason:literal) => {
        Canned {
            status: concat!($code, " ", $reason).as_bytes(),
            body: concat!($reason, "\n").as_bytes(),
        }
    };
}

pub const NOT_FOUND: Canned = canned!(404, "Not Found");
pub const METHOD_NOT_ALLOWED: Canned = canned!(405, "Method Not Allowed");
pub const BAD_REQUEST: Canned = canned!(400, "Bad Request");
pub const REQUEST_TIMEOUT: Canned = canned!(408, "Request Timeout");
pub const CONTENT_TOO_LARGE: Canned = canned!(413, "Content Too Large");
pub const URI_TOO_LONG: Canned = canned!(414, "URI Too Long");
pub const FIELDS_TOO_LARGE: Canned = canned!(431, "Request Header Fields Too Large");
pub const NOT_IMPLEMENTED: Canned = canned!(501, "Not Implemented");
pub const VERSION_NOT_SUPPORTED: Canned = canned!(505, "HTTP Version Not Supported");
pub const SERVICE_UNAVAILABLE: Canned = canned!(503, "Service Unavailable");

pub const TEXT: &[u8] = b"text/plain";
pub const OCTETS: &[u8] = b"application/octet-stream";
pub const JSON: &[u8] = b"application/json";

/// The interim response sent before reading a body the client is holding back for.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends each piece in turn: one `extend_from_slice` per piece, unrolled, so that the constant
/// pieces are copied inline (a loop over an array of slices calls memcpy for each).
macro_rules! append {
    ($out:expr, $($piece:expr),+ $(,)?) => {
        $($out.extend_from_slice($piece);)+
    };
}

/// Append a complete response head (status line through the blank line).
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn head(
    out: &mut Vec<u8>,
    env: &dyn Env,
    status: &[u8],
    content_type: &[u8],
    content_length: u64,
    conn: ConnectionHeader,
    allow: Option<&[u8]>,
) {
    let server = env.server_name().as_bytes();
    let date = env.http_date();
    let conn_line: &[u8] = match conn {
        ConnectionHeader::Default => b"",
        ConnectionHeader::KeepAlive => b"Connection: keep-alive\r\n",
        ConnectionHeader::Close => b"Connection: close\r\n",
    };
    let mut digits = [0u8; 20];
    let len = decimal(content_length, &mut digits);
    let allow = allow.unwrap_or(b"");
    out.reserve(
        110 + status.len()
            + server.len()
            + date.len()
            + content_type.len()
            + len.len()
            + conn_line.len()
            + allow.len(),
    );
    append!(
        out,
        b"HTTP/1.1 ",
        status,
        b"\r\nServer: ",
        server,
        b"\r\nDate: ",
        date,
        b"\r\nContent-Type: ",
        content_type,
        b"\r\nContent-Length: ",
        len,
        b"\r\n",
        conn_line,
    );
    if !allow.is_empty() {
        append!(out, b"Allow: ", allow, b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Append a canned text response; `head_only` (a HEAD request) leaves the body out but keeps
/// its Content-Length.
pub fn canned(
    out: &mut Vec<u8>,
    env: &dyn Env,
    c: Canned,
    conn: ConnectionHeader,
    allow: Option<&[u8]>,
    head_only: bool,
) {
    head(out, env, c.status, TEXT, c.body.len() as u64, conn, allow);
    if !head_only {
        out.extend_from_slice(c.body);
    }
}

/// Format `n` in decimal into the end of `buf`; returns the digits.
#[inline]
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_formats() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(13, &mut b), b"13");
        assert_eq!(decimal(1073741824, &mut b), b"1073741824");
        assert_eq!(decimal(u64::MAX, &mut b), b"18446744073709551615");
    }
}
