//! Durations (`500ms`, `60s`, `5m`, `1h`) and sizes (`64KiB`, `16MiB`), as people write them.
//!
//! A bare number is refused: `lifetime: 60` could mean seconds or milliseconds, and guessing
//! wrong is a security bug, so the error asks for the unit.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

/// The longest duration a setting takes. Nothing here needs more, and a bound keeps every use
/// in range: a deadline (`Instant` + grace period), `expires` as a 15-digit structured-field
/// integer, a timer. Measured: `shutdown.grace_period: 99999999999999999h` used to load and
/// then panic the drain thread at SIGTERM.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

impl HumanDuration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
            format!("{text:?} has no unit; write it with one of ms, s, m, h (e.g. \"{text}s\")")
        })?;
        let (number, unit) = text.split_at(split);
        let n: u64 = number.parse().map_err(|_| {
            format!("{text:?} is not a duration; expected a whole number and a unit, e.g. \"60s\"")
        })?;
        let duration = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            other => {
                return Err(format!(
                    "{text:?} has unknown unit {other:?}; durations take ms, s, m or h"
                ))
            }
        };
        if duration > MAX_DURATION {
            return Err(format!(
                "{text:?} is longer than a year; durations go up to 8760h"
            ));
        }
        Ok(HumanDuration(duration))
    }

    /// In whole seconds, a fraction rounded up, for Pingora's settings that count seconds:
    /// rounding down could cut a wait short, or turn it into 0, which Pingora reads as "none"
    /// or "forever".
    pub fn whole_seconds(&self) -> u64 {
        self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"500ms\", \"60s\", \"5m\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                HumanDuration::parse(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "{n} has no unit; write it with one of ms, s, m, h (e.g. \"{n}s\")"
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "{n} is not a duration; durations are positive with a unit, e.g. \"60s\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number.parse().map_err(|_| {
            format!("{text:?} is not a size; expected a whole number and a unit, e.g. \"16MiB\"")
        })?;
        let factor: u64 =
            match unit.trim() {
                "" | "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                "KB" | "kB" | "MB" | "GB" | "K" | "M" | "G" | "k" | "m" | "g" => {
                    return Err(format!(
                    "{text:?}: write sizes in binary units, B, KiB, MiB or GiB (e.g. \"{n}{}iB\")",
                    unit.trim().chars().next().unwrap_or('M').to_ascii_uppercase()
                ))
                }
                other => {
                    return Err(format!(
                        "{text:?} has unknown unit {other:?}; sizes take B, KiB, MiB or GiB"
                    ))
                }
            };
        n.checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (factor, unit) in [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
            if n >= factor && n.is_multiple_of(factor) {
                return write!(f, "{}{unit}", n / factor);
            }
        }
        write!(f, "{n}B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"64KiB\" or \"16MiB\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{n} is not a size; sizes are not negative")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_go_up_to_a_year() {
        assert_eq!(HumanDuration::parse("8760h").unwrap().0, MAX_DURATION);
        for long in [
            "8761h",
            "525601m",
            "99999999999999999h",
            "18446744073709551615s",
        ] {
            let err = HumanDuration::parse(long).unwrap_err();
            assert!(err.contains("longer than a year"), "{long}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            HumanDuration::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            HumanDuration::parse("60s").unwrap().0,
            Duration::from_secs(60)
        );
        assert_eq!(
            HumanDuration::parse("5m").unwrap().0,
            Duration::from_secs(300)
        );
        assert_eq!(
            HumanDuration::parse("1h").unwrap().0,
            Duration::from_secs(3600)
        );
        assert!(HumanDuration::parse("60").unwrap_err().contains("no unit"));
        assert!(HumanDuration::parse("60 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(HumanDuration::parse("s")
            .unwrap_err()
            .contains("not a duration"));
        assert_eq!(HumanDuration::parse("300s").unwrap().to_string(), "5m");
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("16MiB").unwrap().0, 16 << 20);
        assert_eq!(ByteSize::parse("64KiB").unwrap().0, 64 << 10);
        assert_eq!(ByteSize::parse("1024").unwrap().0, 1024);
        assert!(ByteSize::parse("16MB").unwrap_err().contains("16MiB"));
        assert!(ByteSize::parse("99999999999GiB")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(ByteSize(16 << 20).to_string(), "16MiB");
    }
}
