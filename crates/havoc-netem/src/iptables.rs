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
//! Many runs share a namespace. Each one adds and removes only its own objects, by identity:
//! its chain by name, its jumps by their full rule spec (`iptables -D CHAIN <spec>`, never a rule
//! number another run could have shifted). Whether the `mangle` table and its `PREROUTING` base
//! chain exist is shared state, so Havoc creates them itself when they are missing, with the nft
//! comment [`MARKER`] (`nft create table ip mangle { comment "havoc-created"; }`), and deletes a
//! marked chain or table once it is empty, whichever run finishes last. A table or chain without
//! the marker existed before Havoc and is never deleted. All of it runs under the host-wide
//! [`crate::lock`], so two runs never interleave a check with an action.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use havoc_sys::netns::NetNs;

use crate::cmd::{self, CmdError};
use crate::lock::{edit_lock, EditLock, LockError};

/// Prefix of every chain the delay engine creates.
pub const CHAIN_PREFIX: &str = "HAVOC-";
/// Prefix of the comment on every rule the delay engine creates.
pub const COMMENT_PREFIX: &str = "havoc:";
/// Longest tag: iptables chain names are at most 28 characters.
pub const MAX_TAG_LEN: usize = 28 - CHAIN_PREFIX.len();

/// The nft comment on a `mangle` table or base chain that Havoc created (and so may delete).
pub const MARKER: &str = "havoc-created";

const TABLE: &str = "mangle";
const HOOK_CHAIN: &str = "PREROUTING";

/// The mangle base chain a tagged chain is jumped to from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Hook {
    /// Packets arriving (the delay engine: the receive path).
    #[default]
    Prerouting,
    /// Packets the namespace's own processes send (DNS interception: a query is held or
    /// answered before it leaves).
    Output,
}

impl Hook {
    fn chain(self) -> &'static str {
        match self {
            Hook::Prerouting => HOOK_CHAIN,
            Hook::Output => "OUTPUT",
        }
    }

    /// The nft base chain `iptables-nft` itself would create for it.
    fn nft_spec(self) -> &'static str {
        match self {
            Hook::Prerouting => "type filter hook prerouting priority -150",
            Hook::Output => "type route hook output priority -150",
        }
    }
}

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
    #[error("failed to take the lock that serialises Havoc's iptables changes")]
    Lock(#[source] LockError),
}

/// IPv4 or IPv6, i.e. `iptables` or `ip6tables`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tool())
    }
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
    pub hook: Hook,
}

fn lock() -> Result<EditLock, IptablesError> {
    edit_lock().map_err(IptablesError::Lock)
}

/// Creates the mangle table and its PREROUTING base chain, each with the [`MARKER`] comment,
/// where they are missing. Without `nft`, iptables creates them unmarked (and they then stay).
fn ensure_marked_hook(netns: &NetNs, family: Family, hook: Hook) -> Result<(), IptablesError> {
    let fam = family.nft_family();
    let listing = nft_table(netns, family);
    if listing.is_none() {
        let body = format!("{{ comment \"{MARKER}\"; }}");
        if let Err(e) = cmd::run(netns, "nft", &["create", "table", fam, TABLE, &body]) {
            tracing::warn!(error = %e, %family, "could not create a marked mangle table; iptables will create an unmarked one that stays");
            return Ok(());
        }
    }
    let has_hook = listing
        .as_ref()
        .is_some_and(|t| t.chains.iter().any(|c| c.name == hook.chain()));
    if !has_hook {
        let body = format!(
            "{{ {}; policy accept; comment \"{MARKER}\"; }}",
            hook.nft_spec()
        );
        if let Err(e) = cmd::run(
            netns,
            "nft",
            &["create", "chain", fam, TABLE, hook.chain(), &body],
        ) {
            tracing::warn!(error = %e, %family, chain = hook.chain(), "could not create a marked base chain");
        }
    }
    Ok(())
}

/// Creates the tagged chain with `rules` (argv fragments without `-A CHAIN`) and the jump to it.
/// On failure, whatever was created is removed again.
pub(crate) fn install(
    netns: &NetNs,
    family: Family,
    tag: &str,
    rules: &[Vec<String>],
) -> Result<Installed, IptablesError> {
    install_at(netns, family, tag, Hook::Prerouting, rules)
}

/// [`install`] with the jump in the base chain of `hook`.
pub(crate) fn install_at(
    netns: &NetNs,
    family: Family,
    tag: &str,
    hook: Hook,
    rules: &[Vec<String>],
) -> Result<Installed, IptablesError> {
    let chain = chain_name(tag);
    let _lock = lock()?;
    if table_exists(netns, family)? {
        let before = save(netns, family)?;
        if before.lines().any(|l| l.starts_with(&format!(":{chain} "))) {
            return Err(IptablesError::TagInUse {
                tag: tag.to_string(),
                chain,
            });
        }
    }
    ensure_marked_hook(netns, family, hook)?;
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
                hook.chain(),
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
        Ok(()) => Ok(Installed { family, hook }),
        Err(e) => {
            let undo = remove_jumps(netns, family, tag)
                .and_then(|()| remove_chain(netns, family, tag))
                .and_then(|()| drop_marked_if_empty(netns, family).map(|_| ()));
            if let Err(undo) = undo {
                tracing::warn!(error = %undo, tag, "rollback of a failed install failed");
            }
            Err(e)
        }
    }
}

/// Removes the tagged chains of every family in `installed` and the jumps to them; deletes the
/// marked mangle table or PREROUTING chain once empty. Idempotent.
///
/// Returns the packets the chains' rules counted, read after the jumps were removed and before
/// the chains were (so it is final: every packet that entered the queue is in it), or `None` if
/// they could not be read.
/// Removes the jumps, then reads the rule counters, then removes the chains. Returns the rule
/// packets, when the jumps were gone (from then on no packet enters the queue: the fault's
/// effect ends), and the first error.
pub(crate) fn uninstall(
    netns: &NetNs,
    installed: &[Installed],
    tag: &str,
) -> (Option<u64>, std::time::Instant, Result<(), IptablesError>) {
    // The jump is deleted by its exact spec, which is atomic and touches no other rule, so it
    // needs no lock: with many runs ending at once, waiting for the lock here would hold every
    // run's delay past its end. (The save-based removal is the fallback for odd cases.)
    let mut first_err = None;
    for inst in installed {
        let comment = comment(tag);
        let chain = chain_name(tag);
        let exact = [
            "-t",
            TABLE,
            "-D",
            inst.hook.chain(),
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            &chain,
        ];
        if ipt(netns, inst.family, &exact).is_err() {
            if let Err(e) = remove_jumps(netns, inst.family, tag) {
                first_err.get_or_insert(e);
            }
        }
    }
    let jumps_gone = std::time::Instant::now();
    let _lock = match lock() {
        Ok(l) => l,
        Err(e) => return (None, jumps_gone, Err(e)),
    };
    let mut packets = Some(0u64);
    for inst in installed {
        packets = match (packets, chain_packets(netns, inst.family, tag)) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
    for inst in installed {
        let r = remove_chain(netns, inst.family, tag)
            .and_then(|()| drop_marked_if_empty(netns, inst.family).map(|_| ()));
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    (packets, jumps_gone, first_err.map_or(Ok(()), Err))
}

/// Packets counted by the rules of the tagged chain (`iptables -L -v -x`); `None` when the chain
/// does not exist or the tool failed.
pub(crate) fn chain_packets(netns: &NetNs, family: Family, tag: &str) -> Option<u64> {
    let chain = chain_name(tag);
    let out = cmd::run(
        netns,
        family.tool(),
        &["-w", "5", "-t", TABLE, "-L", &chain, "-n", "-v", "-x"],
    )
    .ok()?;
    Some(parse_chain_packets(&out.stdout))
}

/// Sums the `pkts` column of an `iptables -L CHAIN -v -x -n` listing.
fn parse_chain_packets(listing: &str) -> u64 {
    listing
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Deletes every rule, in any chain but the tagged one, that jumps to the tagged chain: by its
/// full spec as iptables-save prints it, so the rule is found by identity wherever it now sits.
/// Caller holds the lock.
fn remove_jumps(netns: &NetNs, family: Family, tag: &str) -> Result<(), IptablesError> {
    if !table_exists(netns, family)? {
        return Ok(());
    }
    let chain = chain_name(tag);
    let saved = save(netns, family)?;
    for line in saved.lines() {
        let Some(rest) = line.strip_prefix("-A ") else {
            continue;
        };
        if jump_target(line) != Some(chain.as_str()) {
            continue;
        }
        let args = split_save_line(rest);
        if args.first().map(String::as_str) == Some(chain.as_str()) {
            continue;
        }
        let mut argv: Vec<&str> = vec!["-t", TABLE, "-D"];
        argv.extend(args.iter().map(String::as_str));
        ipt(netns, family, &argv)?;
    }
    Ok(())
}

/// Flushes and deletes the tagged chain if it exists. Caller holds the lock.
fn remove_chain(netns: &NetNs, family: Family, tag: &str) -> Result<(), IptablesError> {
    if !table_exists(netns, family)? {
        return Ok(());
    }
    let chain = chain_name(tag);
    let saved = save(netns, family)?;
    if saved.lines().any(|l| l.starts_with(&format!(":{chain} "))) {
        ipt(netns, family, &["-t", TABLE, "-F", &chain])?;
        ipt(netns, family, &["-t", TABLE, "-X", &chain])?;
    }
    Ok(())
}

/// Splits an iptables-save rule line into argv: whitespace-separated, `"..."` quoted with `\"`
/// escapes (how iptables-save prints comments).
fn split_save_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
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

/// One chain of an `nft list table` listing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NftChain {
    name: String,
    marked: bool,
    /// Lines that are neither the chain's header (`type ...`) nor its comment: rules.
    rules: usize,
    /// Base chain with a policy other than accept.
    policy_drop: bool,
}

/// What matters of an `nft list table` listing: the marker, the chains and anything else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NftTable {
    marked: bool,
    chains: Vec<NftChain>,
    /// Sets, maps, flowtables, objects: never Havoc's.
    other_objects: usize,
}

fn parse_nft_table(text: &str) -> NftTable {
    let marker = format!("comment \"{MARKER}\"");
    let mut t = NftTable::default();
    let mut depth = 0usize;
    let mut in_chain = false;
    let mut first_line_of_table = false;
    for raw in text.lines() {
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if depth == 0 {
            if l.starts_with("table ") && l.ends_with('{') {
                depth = 1;
                first_line_of_table = true;
            }
            continue;
        }
        if depth == 1 {
            if l == "}" {
                depth = 0;
                continue;
            }
            if first_line_of_table && l == marker {
                t.marked = true;
                first_line_of_table = false;
                continue;
            }
            first_line_of_table = false;
            if let Some(rest) = l.strip_prefix("chain ") {
                t.chains.push(NftChain {
                    name: rest.trim_end_matches('{').trim().to_string(),
                    marked: false,
                    rules: 0,
                    policy_drop: false,
                });
                in_chain = true;
            } else {
                t.other_objects += 1;
                in_chain = false;
            }
            if l.ends_with('{') {
                depth = 2;
            }
            continue;
        }
        // depth >= 2
        if l == "}" {
            depth -= 1;
            continue;
        }
        if l.ends_with('{') {
            depth += 1;
        }
        if depth == 2 && in_chain {
            let c = t.chains.last_mut().expect("inside a chain");
            if l == marker {
                c.marked = true;
            } else if l.starts_with("type ") {
                c.policy_drop = !l.contains("policy accept");
            } else {
                c.rules += 1;
            }
        }
    }
    t
}

/// `nft list table FAMILY mangle`, parsed; `None` when the table does not exist (or no nft).
fn nft_table(netns: &NetNs, family: Family) -> Option<NftTable> {
    cmd::run(netns, "nft", &["list", "table", family.nft_family(), TABLE])
        .ok()
        .map(|o| parse_nft_table(&o.stdout))
}

/// Deletes the marked PREROUTING chain when it holds no rule, then the marked table when it holds
/// nothing. Objects without [`MARKER`] existed before Havoc and are never deleted. Caller holds
/// the lock. Returns whether the table was deleted.
fn drop_marked_if_empty(netns: &NetNs, family: Family) -> Result<bool, IptablesError> {
    let Some(t) = nft_table(netns, family) else {
        return Ok(false);
    };
    let fam = family.nft_family();
    let nft_err = |source| IptablesError::Tool {
        tool: "nft",
        source,
    };
    for c in &t.chains {
        if c.marked && c.rules == 0 && !c.policy_drop {
            cmd::run(netns, "nft", &["delete", "chain", fam, TABLE, &c.name]).map_err(nft_err)?;
        }
    }
    let Some(t) = nft_table(netns, family) else {
        return Ok(false);
    };
    if t.marked && t.chains.is_empty() && t.other_objects == 0 {
        cmd::run(netns, "nft", &["delete", "table", fam, TABLE]).map_err(nft_err)?;
        return Ok(true);
    }
    Ok(false)
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

/// What [`remove_leftovers`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// Chains and jumps of delay engines.
    pub leftovers: Vec<DelayLeftover>,
    /// Families whose Havoc-created (marked) mangle table was empty and was deleted.
    pub tables: Vec<Family>,
}

/// Removes every leftover whose tag starts with `tag_prefix` (empty = all of Havoc's), each by
/// identity, then deletes Havoc's marked mangle table or PREROUTING chain of a family where that
/// left them empty (also when an earlier run left them empty). A table without the marker is
/// never deleted. Returns what was removed.
pub fn remove_leftovers(netns: &NetNs, tag_prefix: &str) -> Result<Removed, IptablesError> {
    let _lock = lock()?;
    // What a live run or agent still holds is not a leftover.
    let found: Vec<DelayLeftover> = leftovers(netns)?
        .into_iter()
        .filter(|l| l.tag.starts_with(tag_prefix))
        .filter(|l| !havoc_sys::share::held(std::path::Path::new(crate::OWNERS_DIR), &l.tag))
        .collect();
    for l in &found {
        remove_jumps(netns, l.family, &l.tag)?;
        remove_chain(netns, l.family, &l.tag)?;
    }
    let mut tables = Vec::new();
    for family in [Family::V4, Family::V6] {
        if drop_marked_if_empty(netns, family)? {
            tables.push(family);
        }
    }
    Ok(Removed {
        leftovers: found,
        tables,
    })
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
    fn nft_listing_shows_marker_chains_and_rules() {
        let ours = "table ip mangle {\n\tcomment \"havoc-created\"\n\tchain PREROUTING {\n\t\tcomment \"havoc-created\"\n\t\ttype filter hook prerouting priority mangle; policy accept;\n\t\t counter packets 0 bytes 0 jump HAVOC-x\n\t}\n\n\tchain HAVOC-x {\n\t}\n}\n";
        let t = parse_nft_table(ours);
        assert!(t.marked);
        assert_eq!(t.other_objects, 0);
        assert_eq!(
            t.chains,
            vec![
                NftChain {
                    name: "PREROUTING".into(),
                    marked: true,
                    rules: 1,
                    policy_drop: false
                },
                NftChain {
                    name: "HAVOC-x".into(),
                    marked: false,
                    rules: 0,
                    policy_drop: false
                }
            ]
        );
        // A user's table: no marker, a drop policy and a set.
        let user = "table ip mangle {\n\tset s {\n\t\ttype ipv4_addr\n\t}\n\tchain INPUT {\n\t\ttype filter hook input priority mangle; policy drop;\n\t}\n}\n";
        let t = parse_nft_table(user);
        assert!(!t.marked);
        assert_eq!(t.other_objects, 1);
        assert!(t.chains[0].policy_drop && !t.chains[0].marked && t.chains[0].rules == 0);
        // The marker must be the table's own comment, not a chain's.
        let chain_only =
            "table ip mangle {\n\tchain PREROUTING {\n\t\tcomment \"havoc-created\"\n\t}\n}\n";
        assert!(!parse_nft_table(chain_only).marked);
    }

    #[test]
    fn save_lines_split_like_a_shell() {
        assert_eq!(
            split_save_line(
                r#"PREROUTING -s 10.0.0.1/32 -m comment --comment "havoc:x y \"q\"" -j HAVOC-x"#
            ),
            vec![
                "PREROUTING",
                "-s",
                "10.0.0.1/32",
                "-m",
                "comment",
                "--comment",
                "havoc:x y \"q\"",
                "-j",
                "HAVOC-x"
            ]
        );
    }

    #[test]
    fn chain_listing_packets_are_summed() {
        let l = "Chain HAVOC-x (1 references)\n    pkts      bytes target     prot opt in     out     source               destination\n      12     1000 NFQUEUE    17   --  *      *       0.0.0.0/0            0.0.0.0/0            /* havoc:x */ NFQUEUE num 5 bypass\n       3      100 NFQUEUE    6    --  *      *       0.0.0.0/0            0.0.0.0/0\n";
        assert_eq!(parse_chain_packets(l), 15);
    }

    #[test]
    fn jump_target_reads_the_target() {
        let l = "-A PREROUTING -m comment --comment \"havoc:x\" -j HAVOC-x";
        assert_eq!(jump_target(l), Some("HAVOC-x"));
    }
}
