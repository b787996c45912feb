//! Durations, percentages and sizes as people write them (`30s`, `5%`,
//! `500G`): one parser each for the command line and the agent's
//! configuration.

use std::time::Duration;

/// The longest duration accepted, in seconds (about 31,700 years): far
/// beyond any wait or grace period, and far below what overflows a
/// [`Duration`].
pub const MAX_DURATION_SECS: f64 = 1e12;

/// A value that does not parse; the message names the value and says
/// what a good one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not a number followed by a unit.
    #[error("invalid duration {0:?} (e.g. 30s, 5m, 2h, 1d)")]
    Duration(String),
    /// A unit other than ms, s, m, h or d.
    #[error("invalid duration unit in {0:?} (use ms, s, m, h or d)")]
    DurationUnit(String),
    /// Longer than [`MAX_DURATION_SECS`].
    #[error("invalid duration {0:?}: longer than {MAX_DURATION_SECS} seconds")]
    DurationRange(String),
    /// Not a number, with or without `%`.
    #[error("invalid percentage {0:?} (e.g. 5%)")]
    Percent(String),
    /// Below 0 or above 100.
    #[error("percentage {0:?} must be between 0 and 100")]
    PercentRange(String),
    /// Not a number with an optional K, M, G, T or B suffix.
    #[error("invalid size {0:?} (e.g. 500G, 2T, 1048576)")]
    Size(String),
    /// Negative, or more bytes than a `u64` holds.
    #[error("invalid size {0:?}: out of range (0 to 2^64 bytes)")]
    SizeRange(String),
}

/// Parses `500ms`, `30s`, `5m`, `2h`, `1d` or plain seconds (`2`, `1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| Error::Duration(t.to_string()))?;
    let secs_per_unit = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return Err(Error::DurationUnit(t.to_string())),
    };
    let secs = n * secs_per_unit;
    if !secs.is_finite() || !(0.0..=MAX_DURATION_SECS).contains(&secs) {
        return Err(Error::DurationRange(t.to_string()));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a percentage between 0 and 100 (`5`, `5%`, `2.5`).
pub fn parse_percent(s: &str) -> Result<f64, Error> {
    let v: f64 = s.trim_end_matches('%').parse().map_err(|_| Error::Percent(s.to_string()))?;
    if !v.is_finite() || !(0.0..=100.0).contains(&v) {
        return Err(Error::PercentRange(s.to_string()));
    }
    Ok(v)
}

/// Parses a byte count: `500G`, `2T`, `1.5G`, `64K`, `1048576`, `10B`
/// (binary units, suffix in either case; a fraction of a byte is dropped).
pub fn parse_size(s: &str) -> Result<u64, Error> {
    let t = s.trim();
    let (num, bytes_per_unit) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        Some('B') => (&t[..t.len() - 1], 1),
        _ => (t, 1),
    };
    // Whole numbers exactly (a quota of 9007199254740993 bytes stays
    // that); fractions through f64.
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(bytes_per_unit).ok_or_else(|| Error::SizeRange(s.to_string()));
    }
    let v: f64 = num.parse().map_err(|_| Error::Size(s.to_string()))?;
    let bytes = v * bytes_per_unit as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(Error::SizeRange(s.to_string()));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 2 "), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5x"), Err(Error::DurationUnit("5x".into())));
        assert_eq!(parse_duration(""), Err(Error::Duration(String::new())));
        assert_eq!(parse_duration("-1s"), Err(Error::Duration("-1s".into())));
        assert_eq!(parse_duration("99999999999999999999d"), Err(Error::DurationRange("99999999999999999999d".into())));
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("5"), Ok(5.0));
        assert_eq!(parse_percent("5%"), Ok(5.0));
        assert_eq!(parse_percent("2.5"), Ok(2.5));
        assert_eq!(parse_percent("100%"), Ok(100.0));
        assert_eq!(parse_percent("five"), Err(Error::Percent("five".into())));
        assert_eq!(parse_percent("101"), Err(Error::PercentRange("101".into())));
        assert_eq!(parse_percent("NaN"), Err(Error::PercentRange("NaN".into())));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("500G"), Ok(500 << 30));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("10B"), Ok(10));
        assert_eq!(parse_size("lots"), Err(Error::Size("lots".into())));
        assert_eq!(parse_size("-1G"), Err(Error::SizeRange("-1G".into())));
        assert!(parse_size("1e30T").is_err());
        assert_eq!(parse_size("9007199254740993"), Ok(9_007_199_254_740_993));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_size("16777216T"), Err(Error::SizeRange("16777216T".into())));
        assert!(parse_size("é").is_err());
    }
}
