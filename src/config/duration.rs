//! Control side: parsing of human durations such as `"250ms"`, `"30s"`, `"5m"`.
//!
//! Durations in the configuration are strings with a unit, so that `30` can never be
//! mistaken for milliseconds or seconds. Accepted units: `us`, `ms`, `s`, `m`, `h`.

use std::time::Duration;

/// Parses `"<number><unit>"` (optionally with a fractional part, e.g. `"1.5s"`).
///
/// Returns a short reason on failure, meant to be embedded in a configuration error.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("\"{text}\" has no unit"))?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!("\"{text}\" does not start with a number"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("\"{number}\" is not a number"))?;
    let scale = match unit.trim() {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit \"{other}\"")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("\"{text}\" is too large"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Formats a duration the way the configuration accepts it (`"1500ms"` → `"1.5s"`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}us", d.as_micros())
    } else if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
    }

    #[test]
    fn rejects_missing_or_bad_units() {
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("1e400s").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for d in [
            Duration::from_millis(250),
            Duration::from_secs(30),
            Duration::from_secs(120),
            Duration::from_secs(3600),
            Duration::from_micros(1500),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
