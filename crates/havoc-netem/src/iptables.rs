//! The iptables side of the delay engine: a tagged chain that sends matching packets to NFQUEUE.
//!
//! Layout, for tag `T` and each address family in use (`iptables` / `ip6tables`):
//!
//! ```text
//! -t mangle -N HAVOC-T
//! -t mangle -A HAVOC-T <match> -m comment --comment havoc:T -j NFQUEUE --queue-num N --queue-bypass
//! -t mangle -A PREROUTING -m comment --comment havoc:T -j HAVOC-T
//! ```
//!
//! Why `mangle PREROUTING`: it runs after defragmentation and after conntrack has classified the
//! packet (the `raw` table runs before conntrack, so reordering there would feed conntrack's TCP
//! window tracking out-of-order segments and could make a user's `--ctstate INVALID -j DROP`
//! drop them), it sees both locally delivered and forwarded packets (a pod's or router's netns),
//! and it is on the receive path, which KERNEL.md shows is the only place where holding packets
//! does not starve TCP. The jump is *appended*: an NFQUEUE accept resumes after the whole hook,
//! so rules placed after ours in mangle PREROUTING would be skipped for queued packets; appending
//! leaves every user rule in effect.
//!
//! iptables-nft creates the `mangle` table on first use and never deletes it; when it was absent
//! before, removal deletes it again once it is empty (with `nft delete table`), so the namespace
//! ends exactly as it was.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use havoc_sys::netns::NetNs;

use crate::cmd::{self, CmdError};

/// Prefix of every chain the delay engine creates.
pub const CHAIN_PREFIX: &str = "HAVOC-";
/// Prefix of the comment on every rule the delay engine creates.
pub const COMMENT_PREFIX: &str = "havoc:";
/// Longest tag: iptables chain names are at most 28 characters.
pub const MAX_TAG_LEN: usize = 28 - CHAIN_PREFIX.len();

const TABLE: &str = "mangle";
const HOOK_CHAIN: &str = "PREROUTING";

/// Errors of the iptables layer.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("failed to run {tool}")]
    Tool {
        tool: &'static str,
        #[source]
        source: CmdError,
    },
    #[error("chain {chain} already exists in this namespace: tag {tag:?} is in use (a leftover? see remove_leftovers)")]
    TagInUse { tag: String, chain: String },
}

/// IPv4 or IPv6, i.e. `iptables` or `ip6tables`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn save_tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    fn nft_family(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
}

/// An address prefix such as `10.0.0.0/8` or `fd00::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// A CIDR string that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid CIDR {input:?}: expected ADDRESS or ADDRESS/PREFIX, e.g. 10.0.0.0/8 or fd00::/64")]
pub struct CidrError {
    pub input: String,
}

impl Cidr {
    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError {
            input: s.to_string(),
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| err())?,
            None => max,
        };
        if prefix > max {
            return Err(err());
        }
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

pub(crate) fn chain_name(tag: &str) -> String {
    format!("{CHAIN_PREFIX}{tag}")
}

pub(crate) fn comment(tag: &str) -> String {
    format!("{COMMENT_PREFIX}{tag}")
}

/// True if `tag` can name a chain: 1..=22 characters of `[A-Za-z0-9_.-]`.
pub(crate) fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn ipt(netns: &NetNs, family: Family, args: &[&str]) -> Result<cmd::CmdOutput, IptablesError> {
    // -w: wait for the xtables lock instead of failing when another tool holds it.
    let mut argv = vec!["-w", "5"];
    argv.extend_from_slice(args);
    cmd::run(netns, family.tool(), &argv).map_err(|source| IptablesError::Tool {
        tool: family.tool(),
        source,
    })
}

/// `ip(6)tables-save -t mangle`, empty when the table does not exist.
fn save(netns: &NetNs, family: Family) -> Result<String, IptablesError> {
    cmd::run(netns, family.save_tool(), &["-t", TABLE])
        .map(|o| o.stdout)
        .map_err(|source| IptablesError::Tool {
            tool: family.save_tool(),
            source,
        })
}

/// Whether the mangle table exists: a plain `iptables-save` lists only existing tables, while
/// `-t mangle` would print a fabricated empty one.
fn table_exists(netns: &NetNs, family: Family) -> Result<bool, IptablesError> {
    cmd::run(netns, family.save_tool(), &[])
        .map(|o| o.stdout.lines().any(|l| l.trim() == format!("*{TABLE}")))
        .map_err(|source| IptablesError::Tool {
            tool: family.save_tool(),
            source,
        })
}

/// What [`install`] did for one family, so [`uninstall`] can undo exactly that.
#[derive(Debug, Clone)]
pub(crate) struct Installed {
    pub family: Family,
    pub table_existed: bool,
}

/// Creates the tagged chain with `rules` (argv fragments without `-A CHAIN`) and the jump to it.
/// On failure, whatever was created is removed again.
pub(crate) fn install(
    netns: &NetNs,
    family: Family,
    tag: &str,
    rules: &[Vec<String>],
) -> Result<Installed, IptablesError> {
    let chain = chain_name(tag);
    let table_existed = table_exists(netns, family)?;
    let before = save(netns, family)?;
    if before.lines().any(|l| l.starts_with(&format!(":{chain} "))) {
        return Err(IptablesError::TagInUse {
            tag: tag.to_string(),
            chain,
        });
    }
    let installed = Installed {
        family,
        table_existed,
    };
    let result = (|| {
        ipt(netns, family, &["-t", TABLE, "-N", &chain])?;
        let comment = comment(tag);
        for rule in rules {
            let mut argv: Vec<&str> = vec!["-t", TABLE, "-A", &chain];
            argv.extend(rule.iter().map(String::as_str));
            argv.extend(["-m", "comment", "--comment", &comment]);
            ipt(netns, family, &argv)?;
        }
        ipt(
            netns,
            family,
            &[
                "-t",
                TABLE,
                "-A",
                HOOK_CHAIN,
                "-m",
                "comment",
                "--comment",
                &comment,
                "-j",
                &chain,
            ],
        )?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(installed),
        Err(e) => {
            if let Err(undo) = uninstall(netns, &installed, tag) {
                tracing::warn!(error = %undo, tag, "rollback of a failed install failed");
            }
            Err(e)
        }
    }
}

/// Removes the jumps to the tagged chain and the chain itself; idempotent. Deletes the mangle
/// table when it did not exist before and is empty now.
pub(crate) fn uninstall(netns: &NetNs, inst: &Installed, tag: &str) -> Result<(), IptablesError> {
    remove_tag(netns, inst.family, tag)?;
    if !inst.table_existed {
        drop_table_if_empty(netns, inst.family)?;
    }
    Ok(())
}

fn remove_tag(netns: &NetNs, family: Family, tag: &str) -> Result<(), IptablesError> {
    let chain = chain_name(tag);
    let saved = save(netns, family)?;
    // Delete jumps by rule number, highest first, in every built-in chain that has one.
    for builtin in ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"] {
        let prefix = format!("-A {builtin} ");
        let numbers: Vec<usize> = saved
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .enumerate()
            .filter(|(_, l)| jump_target(l) == Some(chain.as_str()))
            .map(|(i, _)| i + 1)
            .collect();
        for n in numbers.into_iter().rev() {
            ipt(netns, family, &["-t", TABLE, "-D", builtin, &n.to_string()])?;
        }
    }
    if saved.lines().any(|l| l.starts_with(&format!(":{chain} "))) {
        ipt(netns, family, &["-t", TABLE, "-F", &chain])?;
        ipt(netns, family, &["-t", TABLE, "-X", &chain])?;
    }
    Ok(())
}

/// The `-j TARGET` of an iptables-save rule line.
fn jump_target(line: &str) -> Option<&str> {
    let mut it = line.split_whitespace();
    while let Some(tok) = it.next() {
        if tok == "-j" {
            return it.next();
        }
    }
    None
}

/// True if an iptables-save dump of one table has only built-in chains with ACCEPT policy and no
/// rules.
fn table_is_empty(saved: &str) -> bool {
    saved.lines().all(|l| {
        let l = l.trim();
        l.is_empty()
            || l.starts_with('#')
            || l.starts_with('*')
            || l == "COMMIT"
            || (l.starts_with(':')
                && l.split_whitespace().nth(1) == Some("ACCEPT")
                && ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]
                    .contains(&&l[1..l.find(' ').unwrap_or(l.len())]))
    })
}

fn drop_table_if_empty(netns: &NetNs, family: Family) -> Result<(), IptablesError> {
    if !table_exists(netns, family)? {
        return Ok(());
    }
    let saved = save(netns, family)?;
    if !table_is_empty(&saved) {
        return Ok(());
    }
    match cmd::run(
        netns,
        "nft",
        &["delete", "table", family.nft_family(), TABLE],
    ) {
        Ok(_) => Ok(()),
        Err(e) => {
            // Without nft an empty table stays: it has no rules and accepts everything.
            tracing::warn!(error = %e, "could not delete the empty mangle table");
            Ok(())
        }
    }
}

/// A chain or jump rule left behind by a delay engine that did not stop (a crash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayLeftover {
    pub family: Family,
    pub tag: String,
    /// Whether the `HAVOC-<tag>` chain exists.
    pub chain: bool,
    /// Number of jump rules to it from built-in chains.
    pub jumps: usize,
}

/// Lists the delay engine's chains and jump rules in `netns` (both address families).
pub fn leftovers(netns: &NetNs) -> Result<Vec<DelayLeftover>, IptablesError> {
    let mut out: Vec<DelayLeftover> = Vec::new();
    for family in [Family::V4, Family::V6] {
        let saved = save(netns, family)?;
        for line in saved.lines() {
            let tag = if let Some(rest) = line.strip_prefix(':') {
                rest.split_whitespace()
                    .next()
                    .and_then(|c| c.strip_prefix(CHAIN_PREFIX))
                    .map(|t| (t.to_string(), true))
            } else if line.starts_with("-A ") {
                jump_target(line)
                    .and_then(|t| t.strip_prefix(CHAIN_PREFIX))
                    .filter(|_| !line.starts_with(&format!("-A {CHAIN_PREFIX}")))
                    .map(|t| (t.to_string(), false))
            } else {
                None
            };
            let Some((tag, is_chain)) = tag else { continue };
            let entry = match out.iter_mut().find(|l| l.family == family && l.tag == tag) {
                Some(e) => e,
                None => {
                    out.push(DelayLeftover {
                        family,
                        tag,
                        chain: false,
                        jumps: 0,
                    });
                    out.last_mut().expect("just pushed")
                }
            };
            if is_chain {
                entry.chain = true;
            } else {
                entry.jumps += 1;
            }
        }
    }
    Ok(out)
}

/// Removes every leftover whose tag starts with `tag_prefix` (empty = all of Havoc's), then
/// deletes the mangle table of a family if that left it empty. Returns what was removed.
pub fn remove_leftovers(
    netns: &NetNs,
    tag_prefix: &str,
) -> Result<Vec<DelayLeftover>, IptablesError> {
    let found: Vec<DelayLeftover> = leftovers(netns)?
        .into_iter()
        .filter(|l| l.tag.starts_with(tag_prefix))
        .collect();
    for l in &found {
        remove_tag(netns, l.family, &l.tag)?;
    }
    for family in [Family::V4, Family::V6] {
        if found.iter().any(|l| l.family == family) {
            drop_table_if_empty(netns, family)?;
        }
    }
    Ok(found)
}

/// Queue numbers referenced by any iptables rule in `netns` (any table), so the engine does not
/// pick a number that another tool's rule already feeds.
pub(crate) fn referenced_queues(netns: &NetNs) -> Vec<u16> {
    let mut out = Vec::new();
    for family in [Family::V4, Family::V6] {
        let Ok(o) = cmd::run(netns, family.save_tool(), &[]) else {
            continue;
        };
        let mut toks = o.stdout.split_whitespace().peekable();
        while let Some(t) = toks.next() {
            match t {
                "--queue-num" => {
                    if let Some(n) = toks.next().and_then(|n| n.parse().ok()) {
                        out.push(n);
                    }
                }
                "--queue-balance" => {
                    if let Some((a, b)) = toks.next().and_then(|r| r.split_once(':')) {
                        if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                            out.extend(a..=b);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_prints() {
        let c: Cidr = "10.1.0.0/16".parse().expect("parse v4");
        assert_eq!(c.to_string(), "10.1.0.0/16");
        assert_eq!(c.family(), Family::V4);
        let c: Cidr = "fd00::1".parse().expect("parse v6 host");
        assert_eq!(c.prefix, 128);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn tags_must_fit_a_chain_name() {
        assert!(valid_tag("exp-1.a_b"));
        assert!(!valid_tag(""));
        assert!(!valid_tag("has space"));
        assert!(!valid_tag(&"x".repeat(MAX_TAG_LEN + 1)));
    }

    #[test]
    fn empty_table_detection() {
        let empty = "# Generated\n*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
        assert!(table_is_empty(empty));
        assert!(!table_is_empty(
            &empty.replace("COMMIT", "-A INPUT -j ACCEPT\nCOMMIT")
        ));
        assert!(!table_is_empty(
            &empty.replace("INPUT ACCEPT", "INPUT DROP")
        ));
        assert!(!table_is_empty(
            &empty.replace("COMMIT", ":MINE - [0:0]\nCOMMIT")
        ));
    }

    #[test]
    fn jump_target_reads_the_target() {
        let l = "-A PREROUTING -m comment --comment \"havoc:x\" -j HAVOC-x";
        assert_eq!(jump_target(l), Some("HAVOC-x"));
    }
}
