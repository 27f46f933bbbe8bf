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
}
