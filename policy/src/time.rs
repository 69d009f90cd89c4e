//! Time as values: the engine never reads a clock; callers pass `now` in.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Seconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// Seconds from `earlier` to `self`; negative when `earlier` is later.
    pub fn seconds_since(self, earlier: UnixTime) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// A duration in whole seconds, written in policy files as `"30s"`, `"5m"`,
/// `"12h"` or `"7d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seconds(pub u32);

impl Seconds {
    /// A number of minutes.
    pub const fn minutes(m: u32) -> Seconds {
        Seconds(m * 60)
    }

    /// A number of hours.
    pub const fn hours(h: u32) -> Seconds {
        Seconds(h * 3600)
    }

    /// A number of days.
    pub const fn days(d: u32) -> Seconds {
        Seconds(d * 86_400)
    }

    /// As a signed count, for comparing with differences of [`UnixTime`]s.
    pub fn as_i64(self) -> i64 {
        i64::from(self.0)
    }
}

/// A duration string is not of the form `<number><s|m|h|d>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: write a whole number and a unit, such as \"30s\", \"5m\", \"12h\" or \"7d\"")]
pub struct BadDuration(String);

impl FromStr for Seconds {
    type Err = BadDuration;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Bounded before anything else: the text comes from a policy file.
        let shown: String = s.chars().take(32).collect();
        let bad = || BadDuration(shown.clone());
        if s.len() > 16 {
            return Err(bad());
        }
        let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (digits, unit) = s.split_at(unit_at);
        if digits.is_empty() {
            return Err(bad());
        }
        let value: u64 = digits.parse().map_err(|_| bad())?;
        let scale: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        let total = value.checked_mul(scale).ok_or_else(bad)?;
        u32::try_from(total).map(Seconds).map_err(|_| bad())
    }
}

impl fmt::Display for Seconds {
    /// The largest unit that divides the value exactly, so `"90m"` stays `90m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s != 0 && s.is_multiple_of(86_400) {
            write!(f, "{}d", s / 86_400)
        } else if s != 0 && s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s != 0 && s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"5m\", \"12h\" or \"7d\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Seconds, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!("30s".parse(), Ok(Seconds(30)));
        assert_eq!("5m".parse(), Ok(Seconds(300)));
        assert_eq!("12h".parse(), Ok(Seconds(43_200)));
        assert_eq!("7d".parse(), Ok(Seconds(604_800)));
        assert_eq!("0s".parse(), Ok(Seconds(0)));
    }

    #[test]
    fn refuses_malformed_and_overflowing() {
        for bad in [
            "",
            "5",
            "m",
            "5 m",
            "-5m",
            "5min",
            "1.5h",
            "5M",
            "99999999999999d",
            "50000d",
            "12345678901234567s",
        ] {
            assert!(bad.parse::<Seconds>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        assert_eq!(Seconds(90 * 60).to_string(), "90m");
        assert_eq!(Seconds(7200).to_string(), "2h");
        assert_eq!(Seconds(45).to_string(), "45s");
        assert_eq!(Seconds(0).to_string(), "0s");
        for s in [Seconds(1), Seconds(61), Seconds(86_400 * 3)] {
            assert_eq!(s.to_string().parse::<Seconds>(), Ok(s));
        }
    }
}
