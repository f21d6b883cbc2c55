//! Error numbers, written by name (`EIO`, case-insensitive) or number (`5`): one table and one
//! type for every fault kind that fails calls (IOChaos, SyscallChaos). Chaos Mesh takes numbers
//! only; both work here.

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::units::clip;

/// An error number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(pub i32);

/// The errno names Havoc knows (Linux numbers, the same on every architecture it runs on).
pub const ERRNOS: &[(&str, i32)] = &[
    ("EPERM", 1),
    ("ENOENT", 2),
    ("ESRCH", 3),
    ("EINTR", 4),
    ("EIO", 5),
    ("ENXIO", 6),
    ("E2BIG", 7),
    ("ENOEXEC", 8),
    ("EBADF", 9),
    ("ECHILD", 10),
    ("EAGAIN", 11),
    ("ENOMEM", 12),
    ("EACCES", 13),
    ("EFAULT", 14),
    ("EBUSY", 16),
    ("EEXIST", 17),
    ("EXDEV", 18),
    ("ENODEV", 19),
    ("ENOTDIR", 20),
    ("EISDIR", 21),
    ("EINVAL", 22),
    ("ENFILE", 23),
    ("EMFILE", 24),
    ("ETXTBSY", 26),
    ("EFBIG", 27),
    ("ENOSPC", 28),
    ("ESPIPE", 29),
    ("EROFS", 30),
    ("EMLINK", 31),
    ("EPIPE", 32),
    ("ERANGE", 34),
    ("EDEADLK", 35),
    ("ENAMETOOLONG", 36),
    ("ENOLCK", 37),
    ("ENOSYS", 38),
    ("ENOTEMPTY", 39),
    ("ELOOP", 40),
    ("ENODATA", 61),
    ("ETIME", 62),
    ("EOVERFLOW", 75),
    ("ENOTSOCK", 88),
    ("EMSGSIZE", 90),
    ("EPROTONOSUPPORT", 93),
    ("EOPNOTSUPP", 95),
    ("EAFNOSUPPORT", 97),
    ("EADDRINUSE", 98),
    ("EADDRNOTAVAIL", 99),
    ("ENETDOWN", 100),
    ("ENETUNREACH", 101),
    ("ENETRESET", 102),
    ("ECONNABORTED", 103),
    ("ECONNRESET", 104),
    ("ENOBUFS", 105),
    ("EISCONN", 106),
    ("ENOTCONN", 107),
    ("ETIMEDOUT", 110),
    ("ECONNREFUSED", 111),
    ("EHOSTDOWN", 112),
    ("EHOSTUNREACH", 113),
    ("EALREADY", 114),
    ("EINPROGRESS", 115),
    ("ESTALE", 116),
    ("EDQUOT", 122),
    ("ECANCELED", 125),
];

impl Errno {
    /// `EIO`, or `None` for a number without a known name.
    pub fn name(self) -> Option<&'static str> {
        ERRNOS.iter().find(|(_, n)| *n == self.0).map(|(s, _)| *s)
    }
}

impl FromStr for Errno {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Ok(n) = t.parse::<i64>() {
            return if (1..=4095).contains(&n) {
                Ok(Errno(n as i32))
            } else {
                Err(format!("errno must be 1..=4095 (e.g. 5 for EIO), got {n}"))
            };
        }
        let upper = t.to_ascii_uppercase();
        if let Some((_, n)) = ERRNOS.iter().find(|(name, _)| *name == upper) {
            return Ok(Errno(*n));
        }
        let names: Vec<&str> = ERRNOS.iter().map(|(n, _)| *n).collect();
        let hint = crate::de::closest(&upper, &names)
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        Err(format!(
            "unknown errno `{}`: {hint}give a number (5) or a name such as EIO, EACCES, ENOSPC, ECONNREFUSED",
            clip(t)
        ))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Errno {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Errno;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an errno name such as `EIO` or a number such as `5`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Errno, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Errno, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Errno, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Errno, E> {
                self.visit_str(&v.to_string())
            }
        }
        // Any: the API server stores `errno: 5` as a JSON number.
        d.deserialize_any(V)
    }
}

impl Serialize for Errno {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_parse_and_print() {
        assert_eq!("eio".parse::<Errno>(), Ok(Errno(5)));
        assert_eq!("111".parse::<Errno>(), Ok(Errno(111)));
        assert_eq!(Errno(111).to_string(), "ECONNREFUSED");
        assert_eq!(Errno(4000).to_string(), "4000");
        assert!("EIOO"
            .parse::<Errno>()
            .unwrap_err()
            .contains("did you mean `EIO`"));
        assert!("0".parse::<Errno>().is_err());
        // One table: no name twice, no number twice.
        let mut names: Vec<_> = ERRNOS.iter().map(|(n, _)| *n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ERRNOS.len());
    }

    #[test]
    fn json_numbers_deserialize_as_the_api_server_stores_them() {
        let e: Errno = serde_json::from_value(serde_json::json!(5)).expect("integer");
        assert_eq!(e, Errno(5));
        let e: Errno = serde_json::from_value(serde_json::json!("EACCES")).expect("name");
        assert_eq!(e, Errno(13));
        let e: Errno = serde_json::from_value(serde_json::json!(111.0)).expect("float");
        assert_eq!(e.to_string(), "ECONNREFUSED");
        assert!(serde_json::from_value::<Errno>(serde_json::json!(0)).is_err());
        assert!(serde_json::from_value::<Errno>(serde_json::json!(-5)).is_err());
        assert!(serde_json::from_value::<Errno>(serde_json::json!([5])).is_err());
    }
}
