//! `TimeChaos`: shift the clocks a running process reads, as Chaos Mesh's TimeChaos does.
//!
//! Fields follow Chaos Mesh v1alpha1: `timeOffset` (a signed duration such as `-5m` or `+2h`) and
//! `clockIds` (the `CLOCK_*` names; CLOCK_REALTIME when absent).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::path::FieldPath;
use crate::selector::Selector;
use crate::units::clip;

/// A signed duration: `-5m`, `+2h`, `1h30m`, `-150ms`, at most 365 days either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimeOffset {
    /// The offset in nanoseconds (negative: the clock goes back).
    pub nanos: i128,
}

impl TimeOffset {
    /// Split as the kernel's `timespec` adds it: whole seconds (rounded down, so possibly
    /// negative) and nanoseconds in `0..1_000_000_000`.
    pub fn as_sec_nsec(self) -> (i64, u32) {
        let sec = self.nanos.div_euclid(1_000_000_000) as i64;
        let nsec = self.nanos.rem_euclid(1_000_000_000) as u32;
        (sec, nsec)
    }

    pub fn is_zero(self) -> bool {
        self.nanos == 0
    }
}

impl FromStr for TimeOffset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let q = clip(t);
        let (neg, body) = match t.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let d: crate::units::HumanDuration = body.trim().parse().map_err(|e: String| {
            if e.contains("has no unit") || e.contains("invalid duration") {
                format!("invalid time offset `{q}`: expected a signed duration such as `-5m`, `+2h` or `1h30m`")
            } else {
                e
            }
        })?;
        let nanos = d.0.as_nanos() as i128;
        Ok(TimeOffset {
            nanos: if neg { -nanos } else { nanos },
        })
    }
}

impl fmt::Display for TimeOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "+" };
        let d = std::time::Duration::from_nanos(self.nanos.unsigned_abs() as u64);
        write!(f, "{sign}{}", crate::units::HumanDuration(d))
    }
}

impl<'de> Deserialize<'de> for TimeOffset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text(d, "a signed duration such as `-5m` or `+2h`")
    }
}

impl Serialize for TimeOffset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Deserializes a value with a text form from a string or number scalar.
pub(crate) fn text<'de, D, T>(d: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr<Err = String>,
{
    struct V<T>(&'static str, std::marker::PhantomData<T>);
    impl<T: FromStr<Err = String>> serde::de::Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
            s.parse().map_err(E::custom)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
    }
    d.deserialize_str(V(expecting, std::marker::PhantomData))
}

/// A POSIX clock, by its `CLOCK_*` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClockId(pub u32);

/// Every clock Chaos Mesh's TimeChaos accepts, plus CLOCK_TAI, with the Linux ids.
pub const CLOCKS: &[(&str, u32)] = &[
    ("CLOCK_REALTIME", 0),
    ("CLOCK_MONOTONIC", 1),
    ("CLOCK_PROCESS_CPUTIME_ID", 2),
    ("CLOCK_THREAD_CPUTIME_ID", 3),
    ("CLOCK_MONOTONIC_RAW", 4),
    ("CLOCK_REALTIME_COARSE", 5),
    ("CLOCK_MONOTONIC_COARSE", 6),
    ("CLOCK_BOOTTIME", 7),
    ("CLOCK_REALTIME_ALARM", 8),
    ("CLOCK_BOOTTIME_ALARM", 9),
    ("CLOCK_TAI", 11),
];

impl ClockId {
    pub const REALTIME: ClockId = ClockId(0);

    pub fn name(self) -> &'static str {
        CLOCKS
            .iter()
            .find(|(_, id)| *id == self.0)
            .map_or("CLOCK_?", |(n, _)| n)
    }
}

impl FromStr for ClockId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let upper = t.to_ascii_uppercase();
        let full = if upper.starts_with("CLOCK_") {
            upper
        } else {
            format!("CLOCK_{upper}")
        };
        if let Some((_, id)) = CLOCKS.iter().find(|(n, _)| *n == full) {
            return Ok(ClockId(*id));
        }
        let names: Vec<&str> = CLOCKS.iter().map(|(n, _)| *n).collect();
        let hint = crate::de::closest(&full, &names)
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        Err(format!(
            "unknown clock `{}`: {hint}expected one of {}",
            clip(t),
            names.join(", ")
        ))
    }
}

impl fmt::Display for ClockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ClockId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text(d, "a clock name such as `CLOCK_REALTIME`")
    }
}

impl Serialize for ClockId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TimeChaos {
    /// How far the clocks move: `-5m`, `+2h`, `1h30m`.
    pub time_offset: TimeOffset,
    /// Which clocks move (CLOCK_REALTIME when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clock_ids: Vec<ClockId>,
    pub selector: Selector,
}

impl TimeChaos {
    /// The clocks that move: `clockIds`, or CLOCK_REALTIME.
    pub fn clocks(&self) -> Vec<ClockId> {
        if self.clock_ids.is_empty() {
            vec![ClockId::REALTIME]
        } else {
            let mut c = self.clock_ids.clone();
            c.sort();
            c.dedup();
            c
        }
    }

    /// The clocks as a bit mask by id.
    pub fn clock_mask(&self) -> u32 {
        self.clocks().iter().fold(0, |m, c| m | (1 << c.0))
    }

    pub fn summary(&self) -> String {
        let clocks: Vec<&str> = self.clocks().iter().map(|c| c.name()).collect();
        format!("clock {} ({})", self.time_offset, clocks.join(", "))
    }

    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        self.selector.validate(&path.key("selector"), false, p);
        if self.time_offset.is_zero() {
            p.add(
                &path.key("timeOffset"),
                "must not be zero: give e.g. `-5m` or `+2h`",
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.clock_ids.iter().enumerate() {
            if !seen.insert(*c) {
                p.add(
                    &path.key("clockIds").index(i),
                    format!("{c} is listed twice"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_signed_and_split_like_timespec() {
        let o: TimeOffset = "-5m".parse().unwrap();
        assert_eq!(o.as_sec_nsec(), (-300, 0));
        let o: TimeOffset = "-1500ms".parse().unwrap();
        assert_eq!(o.as_sec_nsec(), (-2, 500_000_000));
        let o: TimeOffset = "+2h".parse().unwrap();
        assert_eq!(o.as_sec_nsec(), (7200, 0));
        let o: TimeOffset = "1h30m".parse().unwrap();
        assert_eq!(o.to_string(), "+1h 30m");
        assert!("5".parse::<TimeOffset>().unwrap_err().contains("signed"));
        assert!("-400days".parse::<TimeOffset>().is_err());
    }

    #[test]
    fn clock_names_are_checked_with_a_hint() {
        assert_eq!("CLOCK_BOOTTIME".parse::<ClockId>().unwrap(), ClockId(7));
        assert_eq!("monotonic".parse::<ClockId>().unwrap(), ClockId(1));
        let e = "CLOCK_MONOTONC".parse::<ClockId>().unwrap_err();
        assert!(e.contains("did you mean `CLOCK_MONOTONIC`"), "{e}");
    }
}
