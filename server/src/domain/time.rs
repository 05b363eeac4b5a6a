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

impl Timestamp {
    /// `YYYY-MM-DDTHH:MM:SSZ` (whole seconds, UTC).
    pub fn to_rfc3339(self) -> String {
        pullpass::time::format_rfc3339(self.as_seconds())
    }

    /// Parses RFC 3339 (`2026-11-23T19:30:00Z`, fractional seconds and
    /// `+hh:mm` offsets allowed).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        pullpass::time::parse_rfc3339_micros(text).map(Self)
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
