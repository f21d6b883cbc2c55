//! Value types with their own syntax: durations, percentages, byte sizes, signals, rates.
//!
//! Each parses from the friendly text form ("150ms", "25", "256MiB", "SIGTERM") with an error that
//! says what would be right, and serializes back to the same form.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Implements Deserialize (from a string or number scalar) and Serialize (as the Display form).
///
/// `deserialize_any`, not `deserialize_str`: self-describing formats hand a number to
/// `visit_u64`/`visit_i64`/`visit_f64` (the API server stores `percent: 50` as a JSON number),
/// and YAML text reaches `visit_str` unchanged.
macro_rules! text_value {
    ($ty:ty, $expecting:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        s.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                    fn visit_f64<E: de::Error>(self, v: f64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                }
                d.deserialize_any(V)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

/// A duration written as in Go and Chaos Mesh: `150ms`, `30s`, `2m`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

/// The longest duration any field accepts (365 days). Fields have tighter bounds of their own
/// (a fault lasts at most 7 days, a probe timeout at most 10 minutes...); this one keeps every
/// sum and `Instant + duration` of spec values far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let q = clip(t);
        if t == "0" {
            return Ok(Self(Duration::ZERO));
        }
        if t.parse::<f64>().is_ok() {
            return Err(format!("`{q}` has no unit: write e.g. `{q}s` or `{q}ms`"));
        }
        let d = humantime::parse_duration(t).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => {
                format!("`{q}` is too long: durations are at most 365 days")
            }
            _ => format!("invalid duration `{q}`: expected a number with a unit (ns, us, ms, s, m, h), like `150ms`, `30s` or `1m30s`"),
        })?;
        if d > MAX_DURATION {
            return Err(format!("`{q}` is too long: durations are at most 365 days"));
        }
        Ok(Self(d))
    }
}

/// At most 64 characters of `s` for a message, with `…` and the full length when cut: a
/// hostile 10 MB value is never echoed whole.
pub fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => std::borrow::Cow::Borrowed(s),
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}… ({} bytes)", &s[..at], s.len())),
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        write!(f, "{}", humantime::format_duration(self.0)).map(|_| ())?;
        Ok(())
    }
}

text_value!(HumanDuration, "a duration such as `150ms`, `30s` or `2m`");

/// A percentage 0..=100, written `25`, `25.5`, `"25"` or `25%`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Percent(pub f64);

impl Percent {
    pub fn value(self) -> f64 {
        self.0
    }
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

impl FromStr for Percent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let q = clip(t);
        let num = t.strip_suffix('%').unwrap_or(t).trim();
        match num.parse::<f64>() {
            Ok(v) if (0.0..=100.0).contains(&v) => Ok(Percent(v)),
            Ok(v) => Err(format!("must be a percentage in 0..=100, got {v}")),
            Err(_) => Err(format!(
                "expected a percentage in 0..=100 such as `25` or `2.5`, got `{q}`"
            )),
        }
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

text_value!(Percent, "a percentage in 0..=100");

/// Splits `256MiB` into (`256`, `MiB`).
fn split_number(t: &str) -> (&str, &str) {
    let at = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    t.split_at(at)
}

/// The largest size any field accepts.
pub const MAX_BYTES: u64 = 16 << 40;

/// A size in bytes: `512`, `64KB` (1000), `64KiB` (1024), `256MB`, `256MiB`, `1GB`, `1GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let q = clip(t);
        let (num, unit) = split_number(t);
        let unit = unit.trim();
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "ki" | "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mi" | "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gi" | "gib" => 1 << 30,
            "t" | "tb" => 1000u64.pow(4),
            "ti" | "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "invalid size `{q}`: unknown unit `{}`; use B, KB, KiB, MB, MiB, GB or GiB",
                    clip(unit)
                ))
            }
        };
        let v: f64 = num.parse().map_err(|_| {
            format!("invalid size `{q}`: expected a number with a unit, like `256MiB`")
        })?;
        let bytes = v * mult as f64;
        if bytes > MAX_BYTES as f64 {
            return Err(format!("`{q}` is too large: sizes are at most 16TiB"));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if b >= m && b.is_multiple_of(m) {
                return write!(f, "{}{unit}", b / m);
            }
        }
        write!(f, "{b}B")
    }
}

text_value!(ByteSize, "a size such as `256MiB` or `1GB`");

/// A memory amount: absolute, or a percentage of the target cgroup's memory limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemorySize {
    Bytes(ByteSize),
    PercentOfLimit(Percent),
}

impl FromStr for MemorySize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.ends_with('%') {
            t.parse().map(MemorySize::PercentOfLimit)
        } else {
            t.parse().map(MemorySize::Bytes)
        }
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemorySize::Bytes(b) => write!(f, "{b}"),
            MemorySize::PercentOfLimit(p) => write!(f, "{p}%"),
        }
    }
}

text_value!(
    MemorySize,
    "a size such as `256MiB`, or a percentage of the cgroup limit such as `50%`"
);

/// A POSIX signal, by name (`SIGTERM`, `TERM`) or number (`15`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(pub i32);

const SIGNALS: &[(&str, i32)] = &[
    ("SIGHUP", 1),
    ("SIGINT", 2),
    ("SIGQUIT", 3),
    ("SIGILL", 4),
    ("SIGTRAP", 5),
    ("SIGABRT", 6),
    ("SIGBUS", 7),
    ("SIGFPE", 8),
    ("SIGKILL", 9),
    ("SIGUSR1", 10),
    ("SIGSEGV", 11),
    ("SIGUSR2", 12),
    ("SIGPIPE", 13),
    ("SIGALRM", 14),
    ("SIGTERM", 15),
    ("SIGSTKFLT", 16),
    ("SIGCHLD", 17),
    ("SIGCONT", 18),
    ("SIGSTOP", 19),
    ("SIGTSTP", 20),
    ("SIGTTIN", 21),
    ("SIGTTOU", 22),
    ("SIGURG", 23),
    ("SIGXCPU", 24),
    ("SIGXFSZ", 25),
    ("SIGVTALRM", 26),
    ("SIGPROF", 27),
    ("SIGWINCH", 28),
    ("SIGIO", 29),
    ("SIGPWR", 30),
    ("SIGSYS", 31),
];

impl Signal {
    pub const KILL: Signal = Signal(9);
    pub const TERM: Signal = Signal(15);
    pub const STOP: Signal = Signal(19);
    pub const CONT: Signal = Signal(18);

    pub fn number(self) -> i32 {
        self.0
    }

    pub fn name(self) -> String {
        SIGNALS
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(s, _)| s.to_string())
            .unwrap_or_else(|| format!("SIGRTMIN+{}", self.0 - 34))
    }
}

impl FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let q = clip(t);
        if let Ok(n) = t.parse::<i32>() {
            return if (1..=64).contains(&n) {
                Ok(Signal(n))
            } else {
                Err(format!("signal number must be 1..=64, got {n}"))
            };
        }
        let upper = t.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        SIGNALS.iter().find(|(name, _)| *name == full).map(|(_, n)| Signal(*n)).ok_or_else(|| {
            let names: Vec<&str> = SIGNALS.iter().map(|(s, _)| *s).collect();
            let hint = crate::de::closest(&full, &names).map(|c| format!(" (did you mean {c}?)")).unwrap_or_default();
            format!("unknown signal `{q}`{hint}: use a name like SIGTERM, SIGKILL, SIGUSR1, or a number")
        })
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

text_value!(Signal, "a signal name such as SIGTERM, or a number");

/// The fastest rate any field accepts, in bits per second (1 Tbit/s).
pub const MAX_RATE: u64 = 1_000_000_000_000;

/// A data rate in bits per second: `10mbps`, `1gbit`, `500kbit`, `100bps` (tc and Chaos Mesh units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(pub u64);

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let q = clip(t);
        let (num, unit) = split_number(t);
        let v: f64 = num.parse().map_err(|_| {
            format!("invalid rate `{q}`: expected a number with a unit, like `10mbps` or `1gbit`")
        })?;
        // tc's convention: "bit" units are bits per second, "bps" units are BYTES per second.
        let bits: f64 = match unit.to_ascii_lowercase().as_str() {
            "bit" => 1.0,
            "kbit" => 1e3,
            "mbit" => 1e6,
            "gbit" => 1e9,
            "bps" => 8.0,
            "kbps" => 8e3,
            "mbps" => 8e6,
            "gbps" => 8e9,
            _ => {
                return Err(format!(
                    "invalid rate `{q}`: unknown unit `{}`; use bit, kbit, mbit, gbit (bits/s) or bps, kbps, mbps, gbps (bytes/s, as in tc)",
                    clip(unit)
                ))
            }
        };
        if v * bits > MAX_RATE as f64 {
            return Err(format!("`{q}` is too fast: rates are at most 1000gbit"));
        }
        let r = (v * bits).round() as u64;
        if r == 0 {
            return Err(format!("rate must be greater than zero, got `{q}`"));
        }
        Ok(Rate(r))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b.is_multiple_of(1_000_000_000) {
            write!(f, "{}gbit", b / 1_000_000_000)
        } else if b.is_multiple_of(1_000_000) {
            write!(f, "{}mbit", b / 1_000_000)
        } else if b.is_multiple_of(1000) {
            write!(f, "{}kbit", b / 1000)
        } else {
            write!(f, "{b}bit")
        }
    }
}

text_value!(Rate, "a rate such as `10mbit` or `1gbit`");

/// Implements `JsonSchema` as a string with a pattern, for the CRD schemas of the Kubernetes mode.
/// Manifests write these values as strings (`"10"`, `"150ms"`), as Chaos Mesh's CRDs do.
macro_rules! text_schema {
    ($ty:ty, $name:expr, $pattern:expr, $description:expr) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $description,
                })
            }
        }
    };
}

text_schema!(
    HumanDuration,
    "HumanDuration",
    r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$",
    "A duration with a unit: `150ms`, `30s`, `2m`, `1h30m`."
);
text_schema!(
    Percent,
    "Percent",
    r"^(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)%?$",
    "A percentage 0..100 written as a string: `\"25\"`, `\"2.5\"`."
);
text_schema!(
    ByteSize,
    "ByteSize",
    r"^[0-9]+(\.[0-9]+)?\s*([kKmMgGtT][iI]?)?[bB]?$",
    "A size in bytes: `512`, `64KB`, `64KiB`, `256MiB`, `1GiB`."
);
text_schema!(
    MemorySize,
    "MemorySize",
    r"^([0-9]+(\.[0-9]+)?\s*([kKmMgGtT][iI]?)?[bB]?|[0-9]+(\.[0-9]+)?%)$",
    "Memory to hold: a size (`256MiB`, `1GB`) or a percentage of the container's memory limit (`50%`)."
);
text_schema!(
    Rate,
    "Rate",
    r"^[0-9]+(\.[0-9]+)?\s*[kKmMgG]?([bB][iI][tT]|[bB][pP][sS])$",
    "A data rate: `100kbit`, `10mbit`, `1gbit`, `10mbps` (tc units; bps = bytes per second)."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            "1m30s".parse::<HumanDuration>().expect("ok").0,
            Duration::from_secs(90)
        );
        assert_eq!(
            "150ms".parse::<HumanDuration>().expect("ok").0,
            Duration::from_millis(150)
        );
        assert!("30"
            .parse::<HumanDuration>()
            .expect_err("no unit")
            .contains("no unit"));
        assert!("5x".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!("256MiB".parse::<ByteSize>().expect("ok").0, 256 << 20);
        assert_eq!("1GB".parse::<ByteSize>().expect("ok").0, 1_000_000_000);
        assert!(
            matches!("50%".parse::<MemorySize>(), Ok(MemorySize::PercentOfLimit(p)) if p.0 == 50.0)
        );
        assert!("12 parsecs".parse::<ByteSize>().is_err());
    }

    #[test]
    fn signals() {
        assert_eq!("SIGTERM".parse::<Signal>().expect("ok"), Signal::TERM);
        assert_eq!("kill".parse::<Signal>().expect("ok"), Signal::KILL);
        assert_eq!("9".parse::<Signal>().expect("ok"), Signal::KILL);
        assert!("SIGTREM"
            .parse::<Signal>()
            .expect_err("typo")
            .contains("did you mean SIGTERM"));
    }

    #[test]
    fn percents_and_rates() {
        assert_eq!("25%".parse::<Percent>().expect("ok").0, 25.0);
        assert!("150".parse::<Percent>().is_err());
        assert_eq!("10mbit".parse::<Rate>().expect("ok").0, 10_000_000);
        assert_eq!("1mbps".parse::<Rate>().expect("ok").0, 8_000_000);
    }

    #[test]
    fn json_numbers_deserialize_as_the_api_server_stores_them() {
        // kubectl apply of `percent: 50` is stored and read back as a JSON number.
        let p: Percent = serde_json::from_value(serde_json::json!(50)).expect("integer");
        assert_eq!(p.0, 50.0);
        let p: Percent = serde_json::from_value(serde_json::json!(12.5)).expect("float");
        assert_eq!(p.0, 12.5);
        let p: Percent = serde_json::from_value(serde_json::json!("30")).expect("text");
        assert_eq!(p.0, 30.0);
        let e = serde_json::from_value::<Percent>(serde_json::json!(150)).expect_err("range");
        assert!(e.to_string().contains("150"), "{e}");
        let e = serde_json::from_value::<Percent>(serde_json::json!(-1)).expect_err("negative");
        assert!(e.to_string().contains("-1"), "{e}");
        let s: Signal = serde_json::from_value(serde_json::json!(9)).expect("signal number");
        assert_eq!(s, Signal::KILL);
        assert!(serde_json::from_value::<Percent>(serde_json::json!(true)).is_err());
        // Serialized as text, as before.
        assert_eq!(serde_json::to_value(Percent(50.0)).unwrap(), "50");
    }
}
