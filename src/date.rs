//! The HTTP `Date` header value (IMF-fixdate, RFC 9110 §5.6.7), cached by the drivers so that it
//! is formatted once a second, not once per response.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A formatted date and the second it was made for.
#[derive(Clone, Debug)]
pub struct HttpDate {
    second: u64,
    text: [u8; 29],
}

impl Default for HttpDate {
    fn default() -> Self {
        HttpDate::at(now_seconds())
    }
}

impl HttpDate {
    /// Formats the given Unix time.
    pub fn at(unix_seconds: u64) -> HttpDate {
        HttpDate {
            second: unix_seconds,
            text: format_imf_fixdate(unix_seconds),
        }
    }

    /// Re-formats if the wall-clock second has moved on; cheap otherwise.
    pub fn refresh(&mut self) {
        let now = now_seconds();
        if now != self.second {
            *self = HttpDate::at(now);
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`, by the `httpdate` crate (hyper's): no calendar arithmetic
/// of our own.
pub fn format_imf_fixdate(unix_seconds: u64) -> [u8; 29] {
    // The last second of 9999: httpdate writes four-digit years only (and panics past them).
    const LAST: u64 = 253_402_300_799;
    let time = UNIX_EPOCH + Duration::from_secs(unix_seconds.min(LAST));
    let mut out = [0u8; 29];
    out.copy_from_slice(httpdate::fmt_http_date(time).as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc_examples() {
        assert_eq!(
            &format_imf_fixdate(784_111_777),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(&format_imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            &format_imf_fixdate(951_782_400),
            b"Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            &format_imf_fixdate(1_795_307_696),
            b"Sun, 22 Nov 2026 00:34:56 GMT"
        );
        assert_eq!(
            &format_imf_fixdate(u64::MAX),
            b"Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }
}
