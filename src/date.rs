//! The HTTP `Date` header value (IMF-fixdate, RFC 9110 §5.6.7), formatted without a calendar crate
//! and cached by the drivers so that it is built once a second, not once per response.

use std::time::{SystemTime, UNIX_EPOCH};

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

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn format_imf_fixdate(unix_seconds: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = unix_seconds / 86_400;
    let secs = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let mut out = [0u8; 29];
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    out[3..5].copy_from_slice(b", ");
    two_digits(&mut out[5..7], day as u64);
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    out[11] = b' ';
    let y = year.clamp(0, 9999) as u64;
    two_digits(&mut out[12..14], y / 100);
    two_digits(&mut out[14..16], y % 100);
    out[16] = b' ';
    two_digits(&mut out[17..19], secs / 3600);
    out[19] = b':';
    two_digits(&mut out[20..22], secs / 60 % 60);
    out[22] = b':';
    two_digits(&mut out[23..25], secs % 60);
    out[25..29].copy_from_slice(b" GMT");
    out
}

fn two_digits(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31): Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
    }
}
