//! Wall-clock instants as stored and shown: microseconds since the Unix epoch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An instant in microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Converts from a `SystemTime` (saturating far outside 1970..2262).
    pub fn from_system_time(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Self(i64::try_from(after.as_micros()).unwrap_or(i64::MAX)),
            Err(before) => Self(-i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }

    /// From microseconds since the epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Whole seconds and the nanoseconds within them (for protobuf).
    pub fn seconds_and_nanos(self) -> (i64, i32) {
        let seconds = self.0.div_euclid(1_000_000);
        let nanos = (self.0.rem_euclid(1_000_000) * 1_000) as i32;
        (seconds, nanos)
    }

    /// From protobuf seconds and nanoseconds.
    pub fn from_seconds_and_nanos(seconds: i64, nanos: i32) -> Self {
        Self(seconds.saturating_mul(1_000_000).saturating_add(i64::from(nanos) / 1_000))
    }

    /// This instant moved forward by `duration` (saturating).
    pub fn plus(self, duration: Duration) -> Self {
        Self(self.0.saturating_add(i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)))
    }

    /// This instant moved back by `duration` (saturating).
    pub fn saturating_minus(self, duration: Duration) -> Self {
        Self(self.0.saturating_sub(i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)))
    }

    /// How long after `earlier` this instant is (zero if not after).
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H.
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Timestamp {
    /// `YYYY-MM-DDTHH:MM:SSZ` (whole seconds, UTC).
    pub fn to_rfc3339(self) -> String {
        let seconds = self.as_seconds();
        let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
        let of_day = seconds.rem_euclid(86_400);
        format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", of_day / 3600, of_day % 3600 / 60, of_day % 60)
    }

    /// Parses RFC 3339 (`2026-11-23T19:30:00Z`, fractional seconds and
    /// `+hh:mm` offsets allowed).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't' | b' ') {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = text.get(range)?;
            part.bytes().all(|b| b.is_ascii_digit()).then(|| part.parse().ok())?
        };
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
        if bytes[13] != b':' || bytes[16] != b':' || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
            return None;
        }
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let mut rest = &text[19..];
        let mut micros = 0i64;
        if let Some(fraction) = rest.strip_prefix('.') {
            let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let padded: String = fraction[..digits].chars().chain(std::iter::repeat('0')).take(6).collect();
            micros = padded.parse().ok()?;
            rest = &fraction[digits..];
        }
        let offset_seconds = match rest {
            "Z" | "z" => 0,
            _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && &rest[3..4] == ":" => {
                let hours: i64 = rest[1..3].parse().ok()?;
                let minutes: i64 = rest[4..6].parse().ok()?;
                let sign = if rest.starts_with('-') { -1 } else { 1 };
                sign * (hours * 3600 + minutes * 60)
            }
            _ => return None,
        };
        let days = days_from_civil(year, month as u32, day as u32);
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
        Some(Self(seconds.checked_mul(1_000_000)?.checked_add(micros)?))
    }

    /// Whole seconds since the epoch.
    pub fn as_seconds(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_parses_zulu_offsets_and_fractions() {
        assert_eq!(Timestamp::parse_rfc3339("1970-01-01T00:00:00Z"), Some(Timestamp::from_micros(0)));
        assert_eq!(Timestamp::parse_rfc3339("2026-11-23T19:30:00Z").unwrap().as_seconds(), 1_795_462_200);
        assert_eq!(Timestamp::parse_rfc3339("2026-11-23T20:30:00.5+01:00").unwrap().as_micros(), 1_795_462_200_500_000);
        for t in ["2026-11-23T19:30:00Z", "2000-02-29T00:00:01Z", "1999-12-31T23:59:59Z"] {
            assert_eq!(Timestamp::parse_rfc3339(t).unwrap().to_rfc3339(), t);
        }
        for bad in
            ["", "2026-11-23", "2026-13-01T00:00:00Z", "2026-11-23T19:30:00", "x026-11-23T19:30:00Z", "1700000000"]
        {
            assert!(Timestamp::parse_rfc3339(bad).is_none(), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn protobuf_round_trip_keeps_microseconds_including_before_1970() {
        for micros in [0, 1, 1_700_000_000_123_456, -1, -1_500_001] {
            let t = Timestamp::from_micros(micros);
            let (s, n) = t.seconds_and_nanos();
            assert!((0..1_000_000_000).contains(&n));
            assert_eq!(Timestamp::from_seconds_and_nanos(s, n), t);
        }
    }
}
