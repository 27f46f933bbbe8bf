//! Durations and sizes as a lab writes them (`"1m30s"`, `"64GiB"`), parsed into numbers.

use std::time::Duration;

/// Why a duration or size did not parse; the caller turns it into a diagnostic at the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    pub message: String,
    pub help: String,
}

fn err(message: impl Into<String>, help: &str) -> ValueError {
    ValueError { message: message.into(), help: help.to_string() }
}

const DURATION_HELP: &str = "write a number followed by a unit: `500ms`, `5s`, `1m`, `2h`, or a sum like `1m30s`";
const SIZE_HELP: &str = "write bytes as an integer, or a number and a unit: `512MiB`, `64GiB`, `1.5TB` \
     (B, KB, MB, GB, TB, PB are powers of 1000; KiB, MiB, GiB, TiB, PiB powers of 1024)";

/// Splits `12.5GiB` into its number and the rest.
fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    s.split_at(end)
}

fn parse_number(n: &str) -> Option<f64> {
    if n.is_empty() || n.starts_with('.') || n.ends_with('.') || n.matches('.').count() > 1 {
        return None;
    }
    n.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Parses `500ms`, `5s`, `1m`, `2h` and sums of them like `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(err("empty duration", DURATION_HELP));
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let (number, after) = split_number(rest);
        let value = parse_number(number).ok_or_else(|| err(format!("`{text}` is not a duration"), DURATION_HELP))?;
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let seconds = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "" => return Err(err(format!("duration `{text}` has no unit"), DURATION_HELP)),
            other => return Err(err(format!("unknown duration unit `{other}` in `{text}`"), DURATION_HELP)),
        };
        total += seconds;
        rest = next;
    }
    // A day is far beyond any probe or timeout bai uses; this also keeps the float exact enough.
    if total > 86_400.0 * 365.0 {
        return Err(err(format!("duration `{text}` is too long"), DURATION_HELP));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses a size string into bytes.
pub fn parse_size(text: &str) -> Result<u64, ValueError> {
    let trimmed = text.trim();
    let (number, unit) = split_number(trimmed);
    let value = parse_number(number).ok_or_else(|| err(format!("`{text}` is not a size"), SIZE_HELP))?;
    let factor: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "PB" => 1e15,
        "KiB" => 1024f64,
        "MiB" => 1024f64.powi(2),
        "GiB" => 1024f64.powi(3),
        "TiB" => 1024f64.powi(4),
        "PiB" => 1024f64.powi(5),
        other => return Err(err(format!("unknown size unit `{other}` in `{text}`"), SIZE_HELP)),
    };
    let bytes = (value * factor).round();
    if bytes >= u64::MAX as f64 {
        return Err(err(format!("size `{text}` is too large"), SIZE_HELP));
    }
    Ok(bytes as u64)
}

/// Renders a byte count the way a person would write it back: the shortest exact form, binary units
/// preferred on a tie (`64GiB`, `1500GB`, `3B`).
pub fn format_size(bytes: u64) -> String {
    const BINARY: [(&str, u64); 5] =
        [("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    const DECIMAL: [(&str, u64); 5] = [
        ("PB", 1_000_000_000_000_000),
        ("TB", 1_000_000_000_000),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1000),
    ];
    let exact = |units: &[(&str, u64)]| {
        units
            .iter()
            .find(|(_, f)| bytes >= *f && bytes.is_multiple_of(*f))
            .map(|(unit, f)| format!("{}{unit}", bytes / f))
    };
    let mut best = format!("{bytes}B");
    for candidate in [exact(&BINARY), exact(&DECIMAL)].into_iter().flatten() {
        if candidate.len() < best.len()
            || (candidate.len() == best.len() && best.ends_with("B") && !best.contains('i') && candidate.contains('i'))
        {
            best = candidate;
        }
    }
    best
}

/// A byte count for people to read at a glance: binary units, one decimal (`23.5GiB`).
pub fn format_size_approx(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// Renders a duration compactly (`2s`, `1m30s`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    for (v, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
        if v > 0 {
            out.push_str(&format!("{v}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "5", "s", "5 sec", "5d", "-1s", "1..2s", ".5s", "1e9h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("64GiB").unwrap(), 64 << 30);
        assert_eq!(parse_size("1.5TB").unwrap(), 1_500_000_000_000);
        assert_eq!(parse_size("100").unwrap(), 100);
        for bad in ["", "GiB", "12 parsecs", "-1GiB", "99999999999PiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn approximate_sizes() {
        assert_eq!(format_size_approx(512), "512B");
        assert_eq!(format_size_approx(25_276_502_016), "23.5GiB");
    }

    #[test]
    fn formatting_round_trips() {
        for s in ["512MiB", "64GiB", "1500GB", "3B"] {
            assert_eq!(format_size(parse_size(s).unwrap()), s);
        }
        for s in ["500ms", "5s", "1m30s", "2h"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
