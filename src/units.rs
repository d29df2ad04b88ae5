//! Sizes (`16MiB`) and durations (`1s`, `500ms`, `30d`) as the command line reads and prints
//! them.

use std::time::{Duration, SystemTime};

/// Parses a byte size (`16MiB`): the runner's rule, which the shim's config reads too.
pub use wasm_oci_shim::runner::parse_size;

/// Parses a duration as people write them: humantime's (`30d`, `1h30m`, `2 weeks`, `500ms`),
/// or a decimal number with a unit `ms`, `s`, `m` or `h` (`1.5s`; seconds if none).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let typed = || text.to_owned();
    let t = text.trim();
    if let Ok(duration) = humantime::parse_duration(t) {
        return Ok(duration);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| DurationError::Number { text: typed() })?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => {
            return Err(DurationError::Unit { text: typed() });
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|cause| DurationError::Range {
        text: typed(),
        cause,
    })
}

/// A duration that does not parse: what was typed, and how durations are spelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not a number, nor humantime's spelling.
    #[error("invalid duration {text:?}: expected e.g. 500ms, 10s, 1h30m, 30d")]
    Number {
        /// What was typed.
        text: String,
    },
    /// A unit that is not known.
    #[error("invalid duration {text:?}: units are ms, s, m, h, d, w (e.g. 1h30m, 30d)")]
    Unit {
        /// What was typed.
        text: String,
    },
    /// Negative, or too large for a duration.
    #[error("invalid duration {text:?}: {cause}")]
    Range {
        /// What was typed.
        text: String,
        /// Why.
        cause: std::time::TryFromFloatSecsError,
    },
}

/// A size for people, in binary units: `171 B`, `1.5 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How long ago `then` was, as `docker images` says it: `5 seconds ago`, `3 days ago`.
pub fn ago(then: SystemTime) -> String {
    let s = SystemTime::now()
        .duration_since(then)
        .unwrap_or_default()
        .as_secs();
    let (n, unit) = match s {
        0..60 => (s, "second"),
        60..3600 => (s / 60, "minute"),
        3600..86400 => (s / 3600, "hour"),
        _ => (s / 86400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64kib"), Ok(64 << 10));
        assert!(parse_size("16 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("720h"), Ok(Duration::from_secs(720 * 3600)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn sizes_and_ages_for_people() {
        assert_eq!(human_size(171), "171 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
        let now = SystemTime::now();
        assert_eq!(ago(now - Duration::from_secs(1)), "1 second ago");
        assert_eq!(ago(now - Duration::from_secs(7200)), "2 hours ago");
        assert_eq!(ago(now - Duration::from_secs(3 * 86400)), "3 days ago");
    }
}
