//! Which targets a fault hits: the selector fields and the modes that pick among matches.
//!
//! Field names follow Chaos Mesh v1alpha1 (`mode`, `value`) and extend its pod selector with
//! host-level criteria. All given criteria must match (they are ANDed). Choosing among the matches
//! is a pure, seeded function, so the same seed picks the same targets everywhere.

use rand::seq::SliceRandom;
use rand::Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::path::FieldPath;

/// How many of the matching targets are hit (Chaos Mesh `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One target, chosen at random.
    #[default]
    One,
    /// Every matching target.
    All,
    /// `value` targets, chosen at random.
    Fixed,
    /// `value` percent of the targets (rounded down), chosen at random.
    FixedPercent,
    /// A random percentage between 0 and `value` of the targets.
    RandomMaxPercent,
}

/// Host-mode target selection.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    /// Process ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<i32>,
    /// Exact process names (`comm`, as shown by `ps -o comm`) or executable base names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub process_names: Vec<String>,
    /// A regular expression matched against the full command line (arguments joined by spaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline_regex: Option<String>,
    /// cgroup paths (as in /proc/PID/cgroup, e.g. `/system.slice/nginx.service`): every process in them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<String>,
    /// Container ids, `containerd://ID`, `docker://ID` or a bare ID (resolved through /proc).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_ids: Vec<String>,
    /// Network namespaces, by name (`ip netns`) or path (`/proc/PID/ns/net`): network faults only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub netns: Vec<String>,
    /// The host's own network namespace: network faults only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host: bool,
    #[serde(default)]
    pub mode: Mode,
    /// The parameter of `fixed`, `fixed-percent` and `random-max-percent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Selector {
    /// True if no criterion at all is given.
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
            && self.process_names.is_empty()
            && self.cmdline_regex.is_none()
            && self.cgroups.is_empty()
            && self.container_ids.is_empty()
            && self.netns.is_empty()
            && !self.host
    }

    /// True if the selector names processes (as opposed to namespaces or the host).
    pub fn selects_processes(&self) -> bool {
        !self.pids.is_empty()
            || !self.process_names.is_empty()
            || self.cmdline_regex.is_some()
            || !self.cgroups.is_empty()
            || !self.container_ids.is_empty()
    }

    /// Checks the selector; `network` allows `netns` and `host`.
    pub fn validate(&self, path: &FieldPath, network: bool, p: &mut Problems) {
        if self.is_empty() {
            let fields = if network {
                "pids, processNames, cmdlineRegex, cgroups, containerIds, netns or host: true"
            } else {
                "pids, processNames, cmdlineRegex, cgroups or containerIds"
            };
            p.add(
                path,
                format!("selector is empty: give at least one of {fields}"),
            );
        }
        if !network {
            if !self.netns.is_empty() {
                p.add(
                    &path.key("netns"),
                    "netns selects network namespaces and only applies to NetworkChaos, DNSChaos and HTTPChaos",
                );
            }
            if self.host {
                p.add(
                    &path.key("host"),
                    "host selects the host network namespace and only applies to NetworkChaos, DNSChaos and HTTPChaos",
                );
            }
        } else if (self.host || !self.netns.is_empty()) && self.selects_processes() {
            p.add(
                path,
                "choose either processes (whose network namespaces are targeted) or netns/host, not both",
            );
        }
        for (i, pid) in self.pids.iter().enumerate() {
            if *pid <= 0 {
                p.add(
                    &path.key("pids").index(i),
                    format!("must be a positive process id, got {pid}"),
                );
            }
        }
        for (i, n) in self.process_names.iter().enumerate() {
            if n.is_empty() {
                p.add(&path.key("processNames").index(i), "must not be empty");
            }
        }
        if let Some(re) = &self.cmdline_regex {
            if let Err(e) = regex::Regex::new(re) {
                let msg = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("invalid")
                    .trim()
                    .to_string();
                p.add(
                    &path.key("cmdlineRegex"),
                    format!("invalid regular expression: {msg}"),
                );
            }
        }
        for (i, c) in self.cgroups.iter().enumerate() {
            if !c.starts_with('/') {
                p.add(
                    &path.key("cgroups").index(i),
                    format!(
                        "must be an absolute cgroup path starting with `/`, got `{}`",
                        crate::units::clip(c)
                    ),
                );
            } else if c.split('/').any(|s| s == "..") {
                p.add(&path.key("cgroups").index(i), "must not contain `..`");
            }
        }
        validate_mode(self.mode, self.value.as_deref(), path, p);
    }
}

/// Checks that `value` fits `mode`.
pub fn validate_mode(mode: Mode, value: Option<&str>, path: &FieldPath, p: &mut Problems) {
    let vpath = path.key("value");
    match (mode, value) {
        (Mode::One | Mode::All, Some(v)) if !v.is_empty() => {
            p.add(&vpath, format!("value is only used with modes fixed, fixed-percent and random-max-percent, not `{}`", mode_name(mode)));
        }
        (Mode::One | Mode::All, _) => {}
        (_, None) => p.add(
            &vpath,
            format!("is required with mode `{}`", mode_name(mode)),
        ),
        (Mode::Fixed, Some(v)) => match v.trim().parse::<u32>() {
            Ok(n) if n >= 1 => {}
            _ => p.add(
                &vpath,
                format!(
                    "must be a whole number >= 1 with mode fixed, got `{}`",
                    crate::units::clip(v)
                ),
            ),
        },
        (_, Some(v)) => match v.trim().trim_end_matches('%').parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => {}
            _ => p.add(
                &vpath,
                format!(
                    "must be a percentage 1..=100 with mode `{}`, got `{}`",
                    mode_name(mode),
                    crate::units::clip(v)
                ),
            ),
        },
    }
}

pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::One => "one",
        Mode::All => "all",
        Mode::Fixed => "fixed",
        Mode::FixedPercent => "fixed-percent",
        Mode::RandomMaxPercent => "random-max-percent",
    }
}

/// Picks targets among `candidates` (which the caller sorts into a stable order) by `mode`.
/// `value` must have passed [`validate_mode`].
pub fn choose<T: Clone>(
    candidates: &[T],
    mode: Mode,
    value: Option<&str>,
    rng: &mut impl Rng,
) -> Vec<T> {
    let n = candidates.len();
    let parse = |v: Option<&str>| {
        v.and_then(|s| s.trim().trim_end_matches('%').parse::<usize>().ok())
            .unwrap_or(0)
    };
    let count = match mode {
        Mode::All => n,
        Mode::One => n.min(1),
        Mode::Fixed => parse(value).min(n),
        Mode::FixedPercent => n * parse(value).min(100) / 100,
        Mode::RandomMaxPercent => {
            let max = parse(value).min(100);
            let pct = rng.random_range(0..=max);
            n * pct / 100
        }
    };
    if count == n {
        return candidates.to_vec();
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(rng);
    let mut chosen: Vec<usize> = idx.into_iter().take(count).collect();
    chosen.sort_unstable();
    chosen.into_iter().map(|i| candidates[i].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn pick(mode: Mode, value: Option<&str>, seed: u64) -> Vec<u32> {
        let c: Vec<u32> = (0..10).collect();
        choose(&c, mode, value, &mut ChaCha8Rng::seed_from_u64(seed))
    }

    #[test]
    fn modes_pick_the_right_counts() {
        assert_eq!(pick(Mode::All, None, 1).len(), 10);
        assert_eq!(pick(Mode::One, None, 1).len(), 1);
        assert_eq!(pick(Mode::Fixed, Some("3"), 1).len(), 3);
        assert_eq!(pick(Mode::Fixed, Some("30"), 1).len(), 10);
        assert_eq!(pick(Mode::FixedPercent, Some("50"), 1).len(), 5);
        assert_eq!(pick(Mode::FixedPercent, Some("25"), 1).len(), 2);
        for seed in 0..50 {
            assert!(pick(Mode::RandomMaxPercent, Some("40"), seed).len() <= 4);
        }
    }

    #[test]
    fn the_same_seed_picks_the_same_targets() {
        for seed in 0..20 {
            assert_eq!(
                pick(Mode::Fixed, Some("3"), seed),
                pick(Mode::Fixed, Some("3"), seed)
            );
        }
        let distinct: std::collections::HashSet<_> =
            (0..20).map(|s| pick(Mode::One, None, s)).collect();
        assert!(distinct.len() > 1, "different seeds should differ");
    }

    #[test]
    fn values_are_checked_against_modes() {
        let mut p = Problems::new();
        validate_mode(Mode::Fixed, Some("0"), &FieldPath::root(), &mut p);
        validate_mode(Mode::FixedPercent, Some("150"), &FieldPath::root(), &mut p);
        validate_mode(Mode::One, Some("3"), &FieldPath::root(), &mut p);
        validate_mode(Mode::RandomMaxPercent, None, &FieldPath::root(), &mut p);
        assert_eq!(p.into_vec().len(), 4);
    }
}
