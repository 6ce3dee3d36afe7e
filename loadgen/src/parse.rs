//! Values with units, shared by the subcommands' options (`cli`) and `compare`'s: durations
//! `500ms`, `10s`, `2m`, `1h` (bare numbers are seconds); counts and rates `10k`, `1.5M`.
//! A leaf: it imports nothing of loadgen, so both sides can use it without importing each other.

use std::time::Duration;

fn parse_number(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1e3),
        Some((i, 'm' | 'M')) => (&s[..i], 1e6),
        Some((i, 'g' | 'G')) => (&s[..i], 1e9),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().map_err(|_| format!("{s:?} is not a number"))?;
    let v = v * mult;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?} is not a non-negative number"));
    }
    Ok(v)
}

/// A count: `100`, `10k`, `1.5M`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let v = parse_number(s)?;
    if v.fract() != 0.0 || v > 1e15 {
        return Err(format!("{s:?} is not a whole number"));
    }
    Ok(v as u64)
}

/// A rate per second: `5000`, `10k`, `0.5`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let v = parse_number(s)?;
    if v <= 0.0 {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(v)
}

/// A duration: `250ms`, `10s`, `1.5s`, `2m`, `1h`, `100us`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 500ms)"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "ns" => v / 1e9,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use ns, us, ms, s, m, h)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_count("10k").unwrap(), 10_000);
        assert!(parse_count("1.5").is_err());
        assert_eq!(parse_rate("1.5k").unwrap(), 1500.0);
        assert!(parse_rate("0").is_err());
    }
}
