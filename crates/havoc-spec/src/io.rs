//! `IOChaos`: file-system faults (latency, errors, wrong attributes, corrupted data) on the files
//! under one directory of a process's (or container's) mount namespace.
//!
//! Field names follow Chaos Mesh v1alpha1 (`action`, `volumePath`, `path`, `methods`, `percent`,
//! `delay`, `errno`, `attr`, `mistake`). Havoc adds weighted errors (`faults`, as toda's config
//! has them), errno names beside numbers, and lets `volumePath` be any directory, not only a
//! mount point. Chaos Mesh fields that do not apply to host mode (`containerNames`,
//! `remoteCluster`) are refused by name, with what to write instead.

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Problems;
use crate::path::FieldPath;
use crate::selector::Selector;
use crate::units::{clip, HumanDuration};

/// The longest `delay`: a FUSE request held longer than this looks like a hung disk to most
/// programs and to the kernel's hung-task detector.
pub const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(60);
/// The most `mistake.maxLength` and `mistake.maxOccurrences`.
pub const MAX_MISTAKE: u32 = 1 << 20;

/// What an IOChaos does to the matching operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IoAction {
    /// Each matching operation waits `delay` before it is answered.
    Latency,
    /// Matching operations fail with `errno` (or one of the weighted `faults`).
    Fault,
    /// Attributes returned by getattr/lookup are replaced by `attr`'s fields.
    AttrOverride,
    /// Data read or written is altered (`mistake`).
    Mistake,
}

impl IoAction {
    pub fn name(self) -> &'static str {
        match self {
            IoAction::Latency => "latency",
            IoAction::Fault => "fault",
            IoAction::AttrOverride => "attrOverride",
            IoAction::Mistake => "mistake",
        }
    }
}

/// File-system operations, by Chaos Mesh's names (FUSE's low-level operation names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IoMethod {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Statfs,
    Release,
    Fsync,
    Setxattr,
    Getxattr,
    Listxattr,
    Removexattr,
    Flush,
    Opendir,
    Readdir,
    Releasedir,
    Fsyncdir,
    Access,
    Create,
    Getlk,
    Setlk,
    Bmap,
    Fallocate,
    Lseek,
}

impl IoMethod {
    pub const ALL: &'static [IoMethod] = &[
        IoMethod::Lookup,
        IoMethod::Forget,
        IoMethod::Getattr,
        IoMethod::Setattr,
        IoMethod::Readlink,
        IoMethod::Mknod,
        IoMethod::Mkdir,
        IoMethod::Unlink,
        IoMethod::Rmdir,
        IoMethod::Symlink,
        IoMethod::Rename,
        IoMethod::Link,
        IoMethod::Open,
        IoMethod::Read,
        IoMethod::Write,
        IoMethod::Statfs,
        IoMethod::Release,
        IoMethod::Fsync,
        IoMethod::Setxattr,
        IoMethod::Getxattr,
        IoMethod::Listxattr,
        IoMethod::Removexattr,
        IoMethod::Flush,
        IoMethod::Opendir,
        IoMethod::Readdir,
        IoMethod::Releasedir,
        IoMethod::Fsyncdir,
        IoMethod::Access,
        IoMethod::Create,
        IoMethod::Getlk,
        IoMethod::Setlk,
        IoMethod::Bmap,
        IoMethod::Fallocate,
        IoMethod::Lseek,
    ];

    pub fn name(self) -> &'static str {
        const NAMES: &[&str] = &[
            "lookup",
            "forget",
            "getattr",
            "setattr",
            "readlink",
            "mknod",
            "mkdir",
            "unlink",
            "rmdir",
            "symlink",
            "rename",
            "link",
            "open",
            "read",
            "write",
            "statfs",
            "release",
            "fsync",
            "setxattr",
            "getxattr",
            "listxattr",
            "removexattr",
            "flush",
            "opendir",
            "readdir",
            "releasedir",
            "fsyncdir",
            "access",
            "create",
            "getlk",
            "setlk",
            "bmap",
            "fallocate",
            "lseek",
        ];
        NAMES[self as usize]
    }

    /// Operations that carry file data (the only ones `mistake` alters).
    pub fn carries_data(self) -> bool {
        matches!(self, IoMethod::Read | IoMethod::Write)
    }

    /// Operations whose reply is an attribute set (the only ones `attrOverride` changes).
    pub fn returns_attrs(self) -> bool {
        matches!(
            self,
            IoMethod::Lookup
                | IoMethod::Getattr
                | IoMethod::Setattr
                | IoMethod::Mknod
                | IoMethod::Mkdir
                | IoMethod::Symlink
                | IoMethod::Link
                | IoMethod::Create
        )
    }
}

impl FromStr for IoMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        if let Some(m) = IoMethod::ALL.iter().find(|m| m.name() == lower) {
            return Ok(*m);
        }
        let names: Vec<&str> = IoMethod::ALL.iter().map(|m| m.name()).collect();
        let hint = crate::de::closest(&lower, &names)
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        Err(format!(
            "unknown method `{}`: {hint}expected one of {}",
            clip(s),
            names.join(", ")
        ))
    }
}

impl fmt::Display for IoMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Deserialize/Serialize through `FromStr`/`Display`, from any scalar.
macro_rules! text_scalar {
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
                }
                d.deserialize_str(V)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

text_scalar!(
    IoMethod,
    "a file-system operation such as `read` or `write`"
);

pub use crate::errno::Errno;

/// A permission mode: Chaos Mesh writes it as a decimal number (`420` = 0644); Havoc also takes
/// octal text with a leading zero or `0o` (`"0644"`, `0o644`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perm(pub u16);

impl FromStr for Perm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let parsed = if let Some(o) = t.strip_prefix("0o") {
            u32::from_str_radix(o, 8).ok()
        } else if t.len() > 1 && t.starts_with('0') {
            u32::from_str_radix(&t[1..], 8).ok()
        } else {
            t.parse::<u32>().ok()
        };
        match parsed {
            Some(v) if v <= 0o7777 => Ok(Perm(v as u16)),
            _ => Err(format!(
                "expected a permission mode 0..=0o7777: octal text `\"0644\"` or a decimal number as Chaos Mesh writes it (`420`), got `{}`",
                clip(t)
            )),
        }
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0{:o}", self.0)
    }
}

text_scalar!(Perm, "a permission mode such as \"0644\"");

/// A file type for `attr.kind`, by Chaos Mesh's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileKind {
    NamedPipe,
    CharDevice,
    BlockDevice,
    Directory,
    RegularFile,
    Symlink,
    Socket,
}

/// A point in time, as Chaos Mesh writes it (`{sec: 1700000000, nsec: 0}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timespec {
    pub sec: i64,
    #[serde(default)]
    pub nsec: i64,
}

/// The attributes `attrOverride` reports instead of the real ones; absent fields are left alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AttrOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atime: Option<Timespec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<Timespec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime: Option<Timespec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FileKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perm: Option<Perm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nlink: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u32>,
}

impl AttrOverride {
    /// The names of the fields given, for reports: `perm, size`.
    pub fn given(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let fields: [(&str, bool); 12] = [
            ("ino", self.ino.is_some()),
            ("size", self.size.is_some()),
            ("blocks", self.blocks.is_some()),
            ("atime", self.atime.is_some()),
            ("mtime", self.mtime.is_some()),
            ("ctime", self.ctime.is_some()),
            ("kind", self.kind.is_some()),
            ("perm", self.perm.is_some()),
            ("nlink", self.nlink.is_some()),
            ("uid", self.uid.is_some()),
            ("gid", self.gid.is_some()),
            ("rdev", self.rdev.is_some()),
        ];
        for (name, g) in fields {
            if g {
                v.push(name);
            }
        }
        v
    }
}

/// What replaces altered bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filling {
    Zero,
    Random,
}

/// Chaos Mesh's `mistake`: in each matching read or write, up to `maxOccurrences` runs of up to
/// `maxLength` bytes are replaced by zeros or random bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mistake {
    pub filling: Filling,
    pub max_occurrences: u32,
    pub max_length: u32,
}

/// One of several errors, chosen with probability proportional to `weight`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WeightedErrno {
    pub errno: Errno,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

fn hundred() -> u32 {
    100
}

/// A field accepted by the parser only to be refused by name in validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Present;

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::IgnoredAny::deserialize(d).map(|_| Present)
    }
}

impl Serialize for Present {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IOChaos {
    pub action: IoAction,
    pub selector: Selector,
    /// The directory whose files are faulted, as the target sees it (its mount namespace).
    pub volume_path: String,
    /// A glob of the files affected: relative to `volumePath` or an absolute path under it;
    /// `*` stays within a path segment, `**` spans any number of them. Absent: every file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Operations affected (case-insensitive); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<IoMethod>,
    /// Percent of the matching operations affected, 1..=100 (100 by default).
    #[serde(default = "hundred")]
    pub percent: u32,
    /// With `latency`: how long each affected operation waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
    /// With `fault`: the error returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<Errno>,
    /// With `fault`: several errors, each chosen in proportion to its weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<WeightedErrno>,
    /// With `attrOverride`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attr: Option<AttrOverride>,
    /// With `mistake`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mistake: Option<Mistake>,
    /// Chaos Mesh's container filter: refused in host mode (see [`IOChaos::validate`]).
    #[serde(default, skip_serializing)]
    pub container_names: Option<Present>,
    /// Chaos Mesh's multi-cluster field: refused.
    #[serde(default, skip_serializing)]
    pub remote_cluster: Option<Present>,
}

/// Directories that must never be covered: the whole tree, or kernel interfaces Havoc itself
/// and every process need while the fault is active.
const FORBIDDEN_ROOTS: &[&str] = &["/", "/proc", "/sys", "/dev"];

impl IOChaos {
    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        self.selector.validate(&path.key("selector"), false, p);
        if self.container_names.is_some() {
            p.add(&path.key("containerNames"), "containerNames selects containers of a Kubernetes pod and is not supported in host mode: select the container's processes with selector.containerIds (or run the manifest through the operator)");
        }
        if self.remote_cluster.is_some() {
            p.add(
                &path.key("remoteCluster"),
                "remoteCluster (Chaos Mesh multi-cluster) is not supported: run the experiment on the cluster itself",
            );
        }
        self.validate_params(path, p);
    }

    /// Checks every fault parameter but not the selector (reused by other selectors).
    pub fn validate_params(&self, path: &FieldPath, p: &mut Problems) {
        let vp = path.key("volumePath");
        let v = self.volume_path.as_str();
        if !v.starts_with('/') {
            p.add(
                &vp,
                format!(
                    "must be an absolute directory path such as `/var/lib/app`, got `{}`",
                    clip(v)
                ),
            );
        } else if v.split('/').any(|s| s == ".." || s == ".") {
            p.add(&vp, "must not contain `.` or `..` segments");
        } else if v.contains('\0') {
            p.add(&vp, "must not contain NUL");
        } else {
            let norm = normalize(v);
            if FORBIDDEN_ROOTS
                .iter()
                .any(|r| norm == *r || (*r != "/" && norm.starts_with(&format!("{r}/"))))
            {
                p.add(&vp, format!("`{}` cannot be faulted: covering `/`, `/proc`, `/sys` or `/dev` would break the target and Havoc itself; choose the application's data directory", clip(v)));
            }
        }
        if let Some(g) = &self.path {
            if let Err(e) = Glob::new(g, &self.volume_path) {
                p.add(&path.key("path"), e);
            }
        }
        if self.percent == 0 || self.percent > 100 {
            p.add(
                &path.key("percent"),
                format!(
                    "must be 1..=100 (percent of matching operations affected), got {}",
                    self.percent
                ),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, m) in self.methods.iter().enumerate() {
            if !seen.insert(*m) {
                p.add(
                    &path.key("methods").index(i),
                    format!("`{m}` is listed twice"),
                );
            }
        }
        use IoAction as A;
        let given = [
            ("delay", self.delay.is_some(), A::Latency),
            ("errno", self.errno.is_some(), A::Fault),
            ("faults", !self.faults.is_empty(), A::Fault),
            ("attr", self.attr.is_some(), A::AttrOverride),
            ("mistake", self.mistake.is_some(), A::Mistake),
        ];
        for (name, g, action) in given {
            if g && action != self.action {
                p.add(
                    &path.key(name),
                    format!(
                        "{name} does not apply to action {}: it belongs to action {}",
                        self.action.name(),
                        action.name()
                    ),
                );
            }
        }
        match self.action {
            A::Latency => match self.delay {
                None => p.add(
                    &path.key("delay"),
                    "is required with action latency, e.g. `100ms`",
                ),
                Some(d) if d.0.is_zero() => p.add(&path.key("delay"), "must be greater than 0"),
                Some(d) if d.0 > MAX_DELAY => p.add(
                    &path.key("delay"),
                    format!("must be at most 60s, got {d}"),
                ),
                _ => {}
            },
            A::Fault => {
                if self.errno.is_none() && self.faults.is_empty() {
                    p.add(
                        &path.key("errno"),
                        "is required with action fault (e.g. `EIO` or `5`), or give weighted faults",
                    );
                }
                if self.errno.is_some() && !self.faults.is_empty() {
                    p.add(
                        &path.key("faults"),
                        "give either errno or faults, not both",
                    );
                }
                for (i, f) in self.faults.iter().enumerate() {
                    if f.weight == 0 {
                        p.add(
                            &path.key("faults").index(i).key("weight"),
                            "must be at least 1",
                        );
                    }
                }
            }
            A::AttrOverride => match &self.attr {
                None => p.add(
                    &path.key("attr"),
                    "is required with action attrOverride: give at least one of ino, size, blocks, atime, mtime, ctime, kind, perm, nlink, uid, gid, rdev",
                ),
                Some(a) if a.given().is_empty() => p.add(
                    &path.key("attr"),
                    "give at least one of ino, size, blocks, atime, mtime, ctime, kind, perm, nlink, uid, gid, rdev",
                ),
                Some(a) => {
                    for (key, t) in [("atime", a.atime), ("mtime", a.mtime), ("ctime", a.ctime)] {
                        if let Some(t) = t {
                            if !(0..1_000_000_000).contains(&t.nsec) {
                                p.add(
                                    &path.key("attr").key(key).key("nsec"),
                                    format!("must be 0..=999999999, got {}", t.nsec),
                                );
                            }
                        }
                    }
                    if !self.methods.is_empty() && !self.methods.iter().any(|m| m.returns_attrs()) {
                        p.add(&path.key("methods"), "attrOverride changes the attributes in replies to lookup, getattr, setattr, mknod, mkdir, symlink, link and create: list at least one of them");
                    }
                }
            },
            A::Mistake => match &self.mistake {
                None => p.add(
                    &path.key("mistake"),
                    "is required with action mistake: {filling: zero|random, maxOccurrences, maxLength}",
                ),
                Some(m) => {
                    let mp = path.key("mistake");
                    for (key, v) in [
                        ("maxOccurrences", m.max_occurrences),
                        ("maxLength", m.max_length),
                    ] {
                        if v == 0 || v > MAX_MISTAKE {
                            p.add(
                                &mp.key(key),
                                format!("must be 1..={MAX_MISTAKE}, got {v}"),
                            );
                        }
                    }
                    if !self.methods.is_empty() && !self.methods.iter().any(|m| m.carries_data()) {
                        p.add(
                            &path.key("methods"),
                            "mistake alters the data of read and write: list read and/or write",
                        );
                    }
                }
            },
        }
    }

    /// The compiled `path` glob (validation has checked it).
    pub fn glob(&self) -> Option<Glob> {
        self.path
            .as_deref()
            .and_then(|g| Glob::new(g, &self.volume_path).ok())
    }

    /// `latency 100ms on read,write of **/*.db (50%)`.
    pub fn summary(&self) -> String {
        let what = match self.action {
            IoAction::Latency => format!(
                "latency {}",
                self.delay.map(|d| d.to_string()).unwrap_or_default()
            ),
            IoAction::Fault => {
                if let Some(e) = self.errno {
                    format!("fault {e}")
                } else {
                    let list: Vec<String> = self
                        .faults
                        .iter()
                        .map(|f| format!("{}x{}", f.errno, f.weight))
                        .collect();
                    format!("fault {}", list.join("/"))
                }
            }
            IoAction::AttrOverride => format!(
                "attrOverride {}",
                self.attr
                    .as_ref()
                    .map(|a| a.given().join(","))
                    .unwrap_or_default()
            ),
            IoAction::Mistake => match &self.mistake {
                Some(m) => format!(
                    "mistake {}x{}B {}",
                    m.max_occurrences,
                    m.max_length,
                    match m.filling {
                        Filling::Zero => "zero",
                        Filling::Random => "random",
                    }
                ),
                None => "mistake".into(),
            },
        };
        let methods = if self.methods.is_empty() {
            "all operations".to_string()
        } else {
            self.methods
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut s = format!("{what} on {methods} under {}", self.volume_path);
        if let Some(p) = &self.path {
            s.push_str(&format!(" matching {p}"));
        }
        if self.percent != 100 {
            s.push_str(&format!(" ({}%)", self.percent));
        }
        s
    }
}

/// `/a//b/` -> `/a/b`.
pub fn normalize(p: &str) -> String {
    let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// A path glob over paths relative to `volumePath` (`a/b.txt`): `*` and `?` stay within a
/// segment, `**` as a whole segment spans zero or more segments, `[abc]`/`[a-z]`/`[!x]` classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    segments: Vec<String>,
}

impl Glob {
    /// Compiles `pattern`, which is relative to `volume` or absolute under it.
    pub fn new(pattern: &str, volume: &str) -> Result<Glob, String> {
        let t = pattern.trim();
        if t.is_empty() {
            return Err("must not be empty: leave path out to affect every file".into());
        }
        let rel = if t.starts_with('/') {
            let vol = normalize(volume);
            let norm = normalize(t);
            if norm == vol {
                return Ok(Glob {
                    segments: Vec::new(),
                });
            }
            match norm.strip_prefix(&format!("{}/", vol.trim_end_matches('/'))) {
                Some(r) => r.to_string(),
                None if vol == "/" => norm.trim_start_matches('/').to_string(),
                None => {
                    return Err(format!(
                        "`{}` is not under volumePath `{}`: give a path under it or relative to it, e.g. `**/*.db`",
                        clip(t),
                        clip(volume)
                    ))
                }
            }
        } else {
            t.to_string()
        };
        let segments: Vec<String> = rel
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        for s in &segments {
            if s == ".." {
                return Err("must not contain `..`".into());
            }
            if s.contains("**") && s != "**" {
                return Err(format!(
                    "`**` must be a whole path segment (as in `a/**/b`), got `{}`",
                    clip(s)
                ));
            }
            check_classes(s)?;
        }
        Ok(Glob { segments })
    }

    /// Whether `rel` (relative to the volume, `/`-separated, no leading `/`) matches.
    pub fn matches(&self, rel: &str) -> bool {
        let parts: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        match_segments(&self.segments, &parts)
    }
}

fn check_classes(s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '[' {
            let mut closed = false;
            for (n, c) in chars.by_ref().enumerate() {
                if c == ']' && n > 0 {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err(format!(
                    "unclosed `[` in `{}`: a class is written `[abc]` or `[a-z]`",
                    clip(s)
                ));
            }
        }
    }
    Ok(())
}

fn match_segments(pat: &[String], parts: &[&str]) -> bool {
    match pat.first() {
        None => parts.is_empty(),
        Some(p) if p == "**" => (0..=parts.len()).any(|i| match_segments(&pat[1..], &parts[i..])),
        Some(p) => {
            !parts.is_empty()
                && match_one(p.as_bytes(), parts[0].as_bytes())
                && match_segments(&pat[1..], &parts[1..])
        }
    }
}

/// Matches one segment with `*`, `?` and classes (byte-wise; iterative with backtracking on `*`).
fn match_one(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = class(&p[pi..], s[si]) {
                        if ok {
                            pi += next;
                            si += 1;
                            continue;
                        }
                    }
                }
                c if c == s[si] => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// Whether byte `c` is in the class at the start of `p` (`[...]`), and the class's length.
fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(1), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let start = i;
    let mut hit = false;
    while i < p.len() {
        if p[i] == b']' && i > start {
            return Some((hit != negate, i + 1));
        }
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            if p[i] <= c && c <= p[i + 2] {
                hit = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                hit = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str) -> Glob {
        Glob::new(p, "/data").expect("glob")
    }

    #[test]
    fn globs_match_segments() {
        assert!(g("*.db").matches("a.db"));
        assert!(!g("*.db").matches("x/a.db"));
        assert!(g("**/*.db").matches("a.db"));
        assert!(g("**/*.db").matches("x/y/a.db"));
        assert!(g("/data/logs/**").matches("logs/a/b"));
        assert!(g("/data/logs/**").matches("logs"));
        assert!(!g("/data/logs/**").matches("log/a"));
        assert!(g("f?le[0-9].txt").matches("file7.txt"));
        assert!(!g("f?le[!0-9].txt").matches("file7.txt"));
        assert!(g("/data").matches(""));
    }

    #[test]
    fn globs_are_checked() {
        assert!(Glob::new("/etc/*", "/data").is_err());
        assert!(Glob::new("a**b", "/data").is_err());
        assert!(Glob::new("[abc", "/data").is_err());
        assert!(Glob::new("../x", "/data").is_err());
    }

    #[test]
    fn errnos_and_methods_parse_by_name_or_number() {
        assert_eq!("EIO".parse::<Errno>(), Ok(Errno(5)));
        assert_eq!("enospc".parse::<Errno>(), Ok(Errno(28)));
        assert_eq!("13".parse::<Errno>(), Ok(Errno(13)));
        assert!("EIOO"
            .parse::<Errno>()
            .expect_err("typo")
            .contains("did you mean `EIO`"));
        assert!("0".parse::<Errno>().is_err());
        assert_eq!("READ".parse::<IoMethod>(), Ok(IoMethod::Read));
        assert!("raed"
            .parse::<IoMethod>()
            .expect_err("typo")
            .contains("did you mean `read`"));
        assert_eq!("0644".parse::<Perm>(), Ok(Perm(0o644)));
        assert_eq!("420".parse::<Perm>(), Ok(Perm(0o644)));
        assert!("0999".parse::<Perm>().is_err());
    }
}
