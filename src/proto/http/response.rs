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

pub const NOT_FOUND: Canned = Canned {
    status: b"404 Not Found",
    body: b"Not Found\n",
};
pub const METHOD_NOT_ALLOWED: Canned = Canned {
    status: b"405 Method Not Allowed",
    body: b"Method Not Allowed\n",
};
pub const BAD_REQUEST: Canned = Canned {
    status: b"400 Bad Request",
    body: b"Bad Request\n",
};
pub const REQUEST_TIMEOUT: Canned = Canned {
    status: b"408 Request Timeout",
    body: b"Request Timeout\n",
};
pub const CONTENT_TOO_LARGE: Canned = Canned {
    status: b"413 Content Too Large",
    body: b"Content Too Large\n",
};
pub const URI_TOO_LONG: Canned = Canned {
    status: b"414 URI Too Long",
    body: b"URI Too Long\n",
};
pub const FIELDS_TOO_LARGE: Canned = Canned {
    status: b"431 Request Header Fields Too Large",
    body: b"Request Header Fields Too Large\n",
};
pub const NOT_IMPLEMENTED: Canned = Canned {
    status: b"501 Not Implemented",
    body: b"Not Implemented\n",
};
pub const VERSION_NOT_SUPPORTED: Canned = Canned {
    status: b"505 HTTP Version Not Supported",
    body: b"HTTP Version Not Supported\n",
};
pub const SERVICE_UNAVAILABLE: Canned = Canned {
    status: b"503 Service Unavailable",
    body: b"Service Unavailable\n",
};

pub const TEXT: &[u8] = b"text/plain";
pub const OCTETS: &[u8] = b"application/octet-stream";
pub const JSON: &[u8] = b"application/json";

/// The interim response sent before reading a body the client is holding back for.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

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
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status);
    out.extend_from_slice(b"\r\nServer: ");
    out.extend_from_slice(server);
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type);
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(len);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(conn_line);
    if !allow.is_empty() {
        out.extend_from_slice(b"Allow: ");
        out.extend_from_slice(allow);
        out.extend_from_slice(b"\r\n");
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
