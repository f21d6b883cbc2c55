//! `DNSChaos`: wrong or late answers to the DNS queries a target sends, as Chaos Mesh's DNSChaos.
//!
//! Fields follow Chaos Mesh v1alpha1: `action` is `error` (the query is answered SERVFAIL) or
//! `random` (an `A` query gets one random IPv4 address, an `AAAA` query one random IPv6 address,
//! both with TTL 10 and the authoritative flag, and any other type SERVFAIL: what Chaos Mesh's
//! `k8s_dns_chaos` server answers); `patterns` picks the names, with Chaos Mesh's rules: a pattern
//! is an exact name, `?` stands for one character, and `*` (only at the end) for any rest; no
//! pattern means every name. Havoc adds:
//! - action `delay`: a matching query is held for `delay`, then sent on to the server it was
//!   addressed to, whose answer is unchanged;
//! - `delay` with `error` or `random`: the forged answer is sent that much later;
//! - `percent` (100 by default): the share of the matching queries that is hit; the others pass.
//!
//! Names are compared case-insensitively and without the final dot (`Example.COM.` matches
//! `example.com`). Chaos Mesh fields that do not apply to host mode (`containerNames`,
//! `remoteCluster`) are refused by name.

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::io::Present;
use crate::path::FieldPath;
use crate::selector::Selector;
use crate::units::{clip, HumanDuration, Percent};

/// The longest `delay`.
pub const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(60);

/// The TTL of a `random` answer (Chaos Mesh's value).
pub const RANDOM_TTL: u32 = 10;

/// What a hit query gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsAction {
    /// SERVFAIL.
    Error,
    /// A random address for `A` and `AAAA`, SERVFAIL for other types.
    Random,
    /// The real answer, `delay` late.
    Delay,
}

impl DnsAction {
    pub fn name(self) -> &'static str {
        match self {
            DnsAction::Error => "error",
            DnsAction::Random => "random",
            DnsAction::Delay => "delay",
        }
    }
}

fn hundred() -> Percent {
    Percent(100.0)
}

fn is_hundred(p: &Percent) -> bool {
    p.0 == 100.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DNSChaos {
    pub action: DnsAction,
    /// Names to hit (Chaos Mesh rules: exact, `?` for one character, `*` only at the end);
    /// empty: every name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    /// Share of the matching queries that are hit (100 by default).
    #[serde(default = "hundred", skip_serializing_if = "is_hundred")]
    pub percent: Percent,
    /// With `delay`: how long a hit query is held. With `error`/`random`: how much later the
    /// forged answer is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
    pub selector: Selector,
    /// Chaos Mesh's container filter: refused in host mode (see [`DNSChaos::validate`]).
    #[serde(default, skip_serializing)]
    pub container_names: Option<Present>,
    /// Chaos Mesh's multi-cluster field: refused.
    #[serde(default, skip_serializing)]
    pub remote_cluster: Option<Present>,
}

impl DNSChaos {
    pub fn summary(&self) -> String {
        let mut s = format!("dns {}", self.action.name());
        if let Some(d) = self.delay {
            if self.action == DnsAction::Delay {
                s.push_str(&format!(" {d}"));
            } else {
                s.push_str(&format!(" after {d}"));
            }
        }
        if self.patterns.is_empty() {
            s.push_str(" for every name");
        } else {
            let list: Vec<String> = self.patterns.iter().map(|p| clip(p).into_owned()).collect();
            s.push_str(&format!(" for {}", list.join(",")));
        }
        if !is_hundred(&self.percent) {
            s.push_str(&format!(" on {}% of queries", self.percent));
        }
        s
    }

    /// Whether a query for `name` is matched by `patterns` (every name when there is none).
    pub fn matches(&self, name: &str) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        let name = normalize(name);
        self.patterns.iter().any(|p| pattern_matches(p, &name))
    }

    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        let sp = path.key("selector");
        self.selector.validate(&sp, true, p);
        if self.selector.host {
            p.add(
                &sp.key("host"),
                "DNSChaos does not target the host's own network namespace: select processes or a netns",
            );
        }
        if self.container_names.is_some() {
            p.add(&path.key("containerNames"), "containerNames selects containers of a Kubernetes pod and is not supported in host mode: select the container's processes with selector.containerIds (or run the manifest through the operator)");
        }
        if self.remote_cluster.is_some() {
            p.add(
                &path.key("remoteCluster"),
                "remoteCluster (Chaos Mesh multi-cluster) is not supported: run the experiment on the cluster itself",
            );
        }
        let pp = path.key("patterns");
        for (i, pat) in self.patterns.iter().enumerate() {
            if let Err(why) = check_pattern(pat) {
                p.add(&pp.index(i), why);
            }
        }
        if !(self.percent.0 > 0.0 && self.percent.0 <= 100.0) {
            p.add(
                &path.key("percent"),
                format!(
                    "must be greater than 0 and at most 100, got {}",
                    self.percent
                ),
            );
        }
        match (self.action, self.delay) {
            (DnsAction::Delay, None) => p.add(
                &path.key("delay"),
                "action delay needs delay: how long a query is held, e.g. `200ms`",
            ),
            (DnsAction::Delay, Some(d)) if d.0.is_zero() => p.add(
                &path.key("delay"),
                "must be greater than 0 with action delay",
            ),
            _ => {}
        }
        if let Some(d) = self.delay {
            if d.0 > MAX_DELAY {
                p.add(&path.key("delay"), format!("must be at most 60s, got {d}"));
            }
        }
    }
}

/// Lower case, without the final dot.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Chaos Mesh's rules for one pattern.
fn check_pattern(pat: &str) -> Result<(), String> {
    let q = clip(pat);
    if pat.trim().is_empty() {
        return Err("must not be empty: leave patterns out to hit every name".into());
    }
    if let Some(i) = pat.find('*') {
        if i != pat.len() - 1 {
            return Err(format!(
                "`{q}`: the wildcard `*` is only allowed at the end of a pattern (Chaos Mesh's rule), e.g. `chaos-mesh.*`; use `?` for one character elsewhere"
            ));
        }
    }
    if let Some(c) = pat
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '/')
    {
        return Err(format!(
            "`{q}`: {c:?} cannot appear in a domain name pattern"
        ));
    }
    if pat.len() > 254 {
        return Err(format!("`{q}` is longer than a domain name can be (253)"));
    }
    Ok(())
}

/// Matches a normalized `name` against one pattern: `?` is one character, a final `*` any rest
/// (also empty), everything else literal (case-insensitive, final dot ignored).
fn pattern_matches(pattern: &str, name: &str) -> bool {
    let pat = normalize(pattern);
    let (body, star) = match pat.strip_suffix('*') {
        Some(b) => (b, true),
        None => (pat.as_str(), false),
    };
    let pb = body.as_bytes();
    let nb = name.as_bytes();
    if nb.len() < pb.len() || (!star && nb.len() != pb.len()) {
        return false;
    }
    pb.iter().zip(nb).all(|(p, n)| *p == b'?' || p == n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chaos(patterns: &[&str]) -> DNSChaos {
        DNSChaos {
            action: DnsAction::Error,
            patterns: patterns.iter().map(|s| s.to_string()).collect(),
            percent: hundred(),
            delay: None,
            selector: Selector {
                pids: vec![1],
                ..Selector::default()
            },
            container_names: None,
            remote_cluster: None,
        }
    }

    fn problems(c: &DNSChaos) -> Vec<(String, String)> {
        let mut p = Problems::new();
        c.validate(&FieldPath::root(), &mut p);
        p.into_vec()
            .into_iter()
            .map(|(f, m)| (f.to_string(), m))
            .collect()
    }

    #[test]
    fn patterns_follow_chaos_mesh_rules() {
        let c = chaos(&["google.com", "chaos-mesh.*", "github.?om"]);
        assert!(c.matches("google.com"));
        assert!(c.matches("Google.COM."));
        assert!(!c.matches("www.google.com"));
        assert!(!c.matches("google.co"));
        assert!(c.matches("chaos-mesh.org"));
        assert!(c.matches("chaos-mesh.org.cn"));
        assert!(!c.matches("chaos-mes.org"));
        assert!(c.matches("github.com"));
        assert!(c.matches("github.xom"));
        assert!(!c.matches("github.cm"));
        assert!(!c.matches("github.coom"));
        assert!(chaos(&[]).matches("anything.at.all"));
    }

    #[test]
    fn star_elsewhere_is_refused_with_its_path_and_the_rule() {
        let c = chaos(&["ok.com", "chaos-*.org", ""]);
        let p = problems(&c);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].0, "patterns[1]");
        assert!(p[0].1.contains("only allowed at the end"), "{}", p[0].1);
        assert_eq!(p[1].0, "patterns[2]");
    }

    #[test]
    fn delay_action_needs_a_delay_and_percent_is_bounded() {
        let mut c = chaos(&[]);
        c.action = DnsAction::Delay;
        c.percent = Percent(0.0);
        let p = problems(&c);
        let fields: Vec<&str> = p.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, vec!["percent", "delay"], "{p:?}");
        c.delay = Some(HumanDuration(std::time::Duration::from_millis(200)));
        c.percent = Percent(50.0);
        assert!(problems(&c).is_empty());
        assert_eq!(
            c.summary(),
            "dns delay 200ms for every name on 50% of queries"
        );
    }

    #[test]
    fn chaos_mesh_fields_of_other_modes_are_refused_by_name() {
        let mut c = chaos(&[]);
        c.container_names = Some(Present);
        c.remote_cluster = Some(Present);
        c.selector.netns = vec!["x".into()];
        c.selector.pids.clear();
        let p = problems(&c);
        let fields: Vec<&str> = p.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, vec!["containerNames", "remoteCluster"], "{p:?}");
    }
}
