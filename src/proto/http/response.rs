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

/// The head of `200 OK` for `GET /` and `GET /plaintext` on a keep-alive HTTP/1.1 connection,
/// up to the date, and from the date on with the body: the most common response, so it is copied
/// whole from these pieces rather than assembled (`tests::hello_is_what_head_writes` holds them
/// to what [`head`] writes).
const HELLO_BEFORE_DATE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: c10k\r\nDate: ";
const HELLO_AFTER_DATE: &[u8] =
    b"\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

/// Append the whole response to a keep-alive `GET /plaintext` (see [`HELLO_BEFORE_DATE`]).
#[inline]
pub fn hello(out: &mut Vec<u8>, env: &dyn Env) {
    let date = env.http_date();
    if env.server_name() != "c10k" {
        head(
            out,
            env,
            b"200 OK",
            TEXT,
            13,
            ConnectionHeader::Default,
            None,
        );
        out.extend_from_slice(super::HELLO);
        return;
    }
    append!(out, HELLO_BEFORE_DATE, date, HELLO_AFTER_DATE);
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

    struct Named(&'static str);

    impl Env for Named {
        fn http_date(&self) -> &[u8] {
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        }
        fn server_name(&self) -> &str {
            self.0
        }
        fn stats_json(&self) -> String {
            String::new()
        }
        fn count_request(&mut self) {}
    }

    #[test]
    fn hello_is_what_head_writes() {
        for env in [Named("c10k"), Named("other")] {
            let mut assembled = Vec::new();
            head(
                &mut assembled,
                &env,
                b"200 OK",
                TEXT,
                super::super::HELLO.len() as u64,
                ConnectionHeader::Default,
                None,
            );
            assembled.extend_from_slice(super::super::HELLO);
            let mut copied = Vec::new();
            hello(&mut copied, &env);
            assert_eq!(
                String::from_utf8_lossy(&copied),
                String::from_utf8_lossy(&assembled)
            );
        }
    }

    #[test]
    fn decimal_formats() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(13, &mut b), b"13");
        assert_eq!(decimal(1073741824, &mut b), b"1073741824");
        assert_eq!(decimal(u64::MAX, &mut b), b"18446744073709551615");
    }
}
