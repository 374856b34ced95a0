//! Human-readable sizes, durations and times, matching the docker CLI's wording
//! (go-units `HumanSize`, `BytesSize`, `HumanDuration`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DECIMAL_UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
const BINARY_UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];

/// Decimal size with `precision` significant digits: `1.5MB`, `77.9MB` (precision 3).
pub fn human_size_precision(size: f64, precision: usize) -> String {
    scaled(size, 1000.0, &DECIMAL_UNITS, precision)
}

/// Decimal size with 4 significant digits, docker's default (`HumanSize`).
pub fn human_size(size: f64) -> String {
    human_size_precision(size, 4)
}

/// Binary size, as `docker stats` shows memory: `1.5MiB`.
pub fn bytes_size(size: f64) -> String {
    scaled(size, 1024.0, &BINARY_UNITS, 4)
}

fn scaled(mut size: f64, base: f64, units: &[&str], precision: usize) -> String {
    let mut unit = 0;
    while size >= base && unit + 1 < units.len() {
        size /= base;
        unit += 1;
    }
    format!("{}{}", format_g(size, precision), units[unit])
}

/// Go's `%.<precision>g`: `precision` significant digits, trailing zeros dropped,
/// exponent form when the exponent reaches the precision.
pub fn format_g(value: f64, precision: usize) -> String {
    let precision = precision.max(1);
    if value == 0.0 || !value.is_finite() {
        return if value.is_finite() {
            "0".to_string()
        } else {
            value.to_string()
        };
    }
    // Round to the precision first: rounding can carry into a new digit (999.95 -> 1000).
    let sci = format!("{:.*e}", precision - 1, value);
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if exponent < -4 || exponent >= precision as i32 {
        let mantissa = trim_fraction(mantissa);
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.abs());
    }
    let decimals = (precision as i32 - 1 - exponent).max(0) as usize;
    trim_fraction(&format!("{value:.decimals$}")).to_string()
}

fn trim_fraction(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// go-units `HumanDuration`: "Less than a second", "2 minutes", "About an hour", "3 days".
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let minutes = seconds / 60;
    let hours = (duration.as_secs_f64() / 3600.0).round() as u64;
    if seconds < 1 {
        "Less than a second".to_string()
    } else if seconds == 1 {
        "1 second".to_string()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".to_string()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".to_string()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", seconds / 3600 / 24 / 365)
    }
}

/// "2 minutes ago" for a past unix time.
pub fn time_ago(then_unix: i64, now_unix: i64) -> String {
    let elapsed = (now_unix - then_unix).max(0) as u64;
    format!("{} ago", human_duration(Duration::from_secs(elapsed)))
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Fields of a container's `State` that decide its status text.
pub struct StateSummary<'a> {
    pub status: &'a str,
    pub exit_code: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub health: Option<&'a str>,
}

/// The status column of `ps`: "Up 3 seconds", "Exited (0) 5 seconds ago", "Created".
pub fn status_text(state: &StateSummary<'_>, now: i64) -> String {
    let since = |t: Option<i64>| {
        human_duration(Duration::from_secs((now - t.unwrap_or(now)).max(0) as u64))
    };
    match state.status {
        "running" => match state.health {
            Some(health) if !health.is_empty() && health != "none" => {
                format!("Up {} ({health})", since(state.started_at))
            }
            _ => format!("Up {}", since(state.started_at)),
        },
        "paused" => format!("Up {} (Paused)", since(state.started_at)),
        "restarting" => format!(
            "Restarting ({}) {} ago",
            state.exit_code,
            since(state.finished_at)
        ),
        "removing" => "Removal In Progress".to_string(),
        "dead" => "Dead".to_string(),
        _ if state.started_at.is_none() => "Created".to_string(),
        _ if state.finished_at.is_none() => String::new(),
        _ => format!(
            "Exited ({}) {} ago",
            state.exit_code,
            since(state.finished_at)
        ),
    }
}

/// Parses a size like `256m`, `1g`, `512k`, `1024` (binary multiples, as docker's
/// `RAMInBytes`).
pub fn parse_ram_size(text: &str) -> Result<i64, String> {
    let trimmed = text.trim();
    let lower = trimmed.to_ascii_lowercase();
    let lower = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size: '{text}'"))?;
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(format!("invalid size: '{text}'")),
    };
    if number < 0.0 {
        return Err(format!("invalid size: '{text}'"));
    }
    Ok((number * multiplier) as i64)
}

/// A `--since`/`--until` value for the API: unix seconds (with fraction) from an RFC 3339
/// time, a unix timestamp, or a duration ago (`10m`, `1h30m`).
pub fn parse_timestamp_arg(text: &str, now: SystemTime) -> Result<String, String> {
    if text.chars().all(|c| c.is_ascii_digit() || c == '.') && !text.is_empty() {
        return Ok(text.to_string());
    }
    if let Ok(duration) = humantime::parse_duration(text) {
        let then = now.checked_sub(duration).unwrap_or(UNIX_EPOCH);
        let secs = then
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Ok(secs.to_string());
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        let since = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| format!("invalid time: {text}"))?;
        return Ok(format!("{}.{:09}", since.as_secs(), since.subsec_nanos()));
    }
    Err(format!("invalid value for time: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_go_units() {
        assert_eq!(human_size_precision(1_500_000.0, 3), "1.5MB");
        assert_eq!(human_size_precision(77_943_123.0, 3), "77.9MB");
        assert_eq!(human_size_precision(999.0, 3), "999B");
        assert_eq!(human_size_precision(0.0, 3), "0B");
        assert_eq!(human_size(4_260_000.0), "4.26MB");
        assert_eq!(human_size(1_234_567_890.0), "1.235GB");
        assert_eq!(bytes_size(1.5 * 1024.0 * 1024.0), "1.5MiB");
        assert_eq!(bytes_size(2.0 * 1024.0 * 1024.0 * 1024.0), "2GiB");
        assert_eq!(format_g(999.96, 4), "1000");
        assert_eq!(format_g(999.96, 3), "1e+03");
    }

    #[test]
    fn durations_like_go_units() {
        let d = Duration::from_secs;
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(d(1)), "1 second");
        assert_eq!(human_duration(d(3)), "3 seconds");
        assert_eq!(human_duration(d(90)), "About a minute");
        assert_eq!(human_duration(d(150)), "2 minutes");
        assert_eq!(human_duration(d(3600)), "About an hour");
        assert_eq!(human_duration(d(5 * 3600)), "5 hours");
        assert_eq!(human_duration(d(3 * 86400)), "3 days");
        assert_eq!(human_duration(d(21 * 86400)), "3 weeks");
        assert_eq!(human_duration(d(90 * 86400)), "3 months");
        assert_eq!(human_duration(d(800 * 86400)), "2 years");
        assert_eq!(time_ago(1000, 1150), "2 minutes ago");
    }

    #[test]
    fn status_column() {
        let now = 10_000;
        let running = StateSummary {
            status: "running",
            exit_code: 0,
            started_at: Some(now - 3),
            finished_at: None,
            health: None,
        };
        assert_eq!(status_text(&running, now), "Up 3 seconds");
        let exited = StateSummary {
            status: "exited",
            exit_code: 0,
            started_at: Some(now - 60),
            finished_at: Some(now - 5),
            health: None,
        };
        assert_eq!(status_text(&exited, now), "Exited (0) 5 seconds ago");
        let created = StateSummary {
            status: "created",
            exit_code: 0,
            started_at: None,
            finished_at: None,
            health: None,
        };
        assert_eq!(status_text(&created, now), "Created");
        let healthy = StateSummary {
            health: Some("healthy"),
            ..running
        };
        assert_eq!(status_text(&healthy, now), "Up 3 seconds (healthy)");
    }

    #[test]
    fn ram_sizes() {
        assert_eq!(parse_ram_size("256m"), Ok(256 * 1024 * 1024));
        assert_eq!(parse_ram_size("1g"), Ok(1 << 30));
        assert_eq!(parse_ram_size("1.5GB"), Ok(3 << 29));
        assert_eq!(parse_ram_size("4096"), Ok(4096));
        assert_eq!(parse_ram_size("512KiB"), Ok(512 * 1024));
        assert!(parse_ram_size("lots").is_err());
        assert!(parse_ram_size("5x").is_err());
    }

    #[test]
    fn timestamp_args() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(
            parse_timestamp_arg("1700000000", now).as_deref(),
            Ok("1700000000")
        );
        assert_eq!(parse_timestamp_arg("10m", now).as_deref(), Ok("9400"));
        assert_eq!(
            parse_timestamp_arg("1970-01-01T00:00:10Z", now).as_deref(),
            Ok("10.000000000")
        );
        assert!(parse_timestamp_arg("yesterday-ish", now).is_err());
    }
}
