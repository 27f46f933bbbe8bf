//! Calendar time in UTC from Unix seconds, without a date crate: the lease file and generation records
//! are the only places bai writes a date.

/// A moment in UTC, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
}

impl Utc {
    pub fn from_unix(unix: u64) -> Self {
        let (days, secs) = ((unix / 86_400) as i64, unix % 86_400);
        // Civil-from-days (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Utc { year, month, day, hour: secs / 3600, minute: secs / 60 % 60, second: secs % 60 }
    }

    /// Now; a clock before 1970 reads as 1970.
    pub fn now() -> Self {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Utc::from_unix(unix)
    }

    /// `2026-11-25T01:50:28Z`.
    pub fn rfc3339(&self) -> String {
        let Utc { year, month, day, hour, minute, second } = *self;
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
    }

    /// An RFC 3339 time (`2026-12-06T10:00:00Z`, `2026-12-06T10:00:00.123456789+01:00`, as Docker stamps
    /// log lines) as Unix seconds and nanoseconds; `None` when it is not one.
    pub fn parse_rfc3339(text: &str) -> Option<(i64, u32)> {
        let b = text.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let s = text.get(r)?;
            s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok()).flatten()
        };
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let mut rest = &text[19..];
        let mut nanos = 0u32;
        if let Some(fraction) = rest.strip_prefix('.') {
            let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let kept = &fraction[..digits.min(9)];
            nanos = kept.parse::<u32>().ok()? * 10u32.pow(9 - kept.len() as u32);
            rest = &fraction[digits..];
        }
        let offset = match rest {
            "Z" | "z" => 0,
            _ => {
                let (sign, hm) = match rest.as_bytes().first()? {
                    b'+' => (1, &rest[1..]),
                    b'-' => (-1, &rest[1..]),
                    _ => return None,
                };
                let (h, m) = hm.split_once(':')?;
                if h.len() != 2 || m.len() != 2 {
                    return None;
                }
                sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
            }
        };
        // Days-from-civil (Howard Hinnant's algorithm), the inverse of `from_unix`.
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some((days * 86_400 + hour * 3600 + minute * 60 + second - offset, nanos))
    }

    /// `2026-11-25 01:50:28 UTC`, for people.
    pub fn human(&self) -> String {
        let Utc { year, month, day, hour, minute, second } = *self;
        format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_across_leap_years_and_the_epoch() {
        assert_eq!(Utc::from_unix(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Utc::from_unix(951_782_400).human(), "2000-02-29 00:00:00 UTC");
        assert_eq!(Utc::from_unix(1_764_018_467).rfc3339(), "2025-11-24T21:07:47Z");
    }

    #[test]
    fn rfc3339_times_read_back() {
        for unix in [0u64, 951_782_400, 1_764_018_467, 4_102_444_800] {
            assert_eq!(Utc::parse_rfc3339(&Utc::from_unix(unix).rfc3339()), Some((unix as i64, 0)));
        }
        assert_eq!(Utc::parse_rfc3339("2025-11-24T21:07:47.5Z"), Some((1_764_018_467, 500_000_000)));
        assert_eq!(Utc::parse_rfc3339("2025-11-24T21:07:47.123456789Z"), Some((1_764_018_467, 123_456_789)));
        assert_eq!(Utc::parse_rfc3339("2025-11-24T22:07:47+01:00"), Some((1_764_018_467, 0)));
        for bad in [
            "",
            "2025-11-24",
            "2025-13-24T21:07:47Z",
            "2025-11-24T21:07:47",
            "2025-11-24T21:07:47.Z",
            "x025-11-24T21:07:47Z",
        ] {
            assert_eq!(Utc::parse_rfc3339(bad), None, "{bad}");
        }
    }
}
