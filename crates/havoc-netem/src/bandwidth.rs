//! Bandwidth limits with TBF: on a device's egress directly, on its ingress through an IFB.
//!
//! - Egress: a TBF root qdisc with handle [`ROOT_HANDLE`] (`fa17:`). A device whose root qdisc
//!   is not a default one (`noqueue`, `pfifo_fast`, `mq`, … with handle `0:`) is refused: Havoc
//!   never replaces a user's qdisc.
//! - Ingress: an IFB device `hvifb<n>` created inside the netns with a TBF root, a `clsact`
//!   qdisc on the device (reused when one exists), and a u32 match-all filter at preference
//!   [`FILTER_PREF`] that redirects every arriving packet to the IFB (`mirred egress redirect`;
//!   this kernel has no matchall/flower classifier).
//!
//! Everything Havoc creates is recognisable by name (`hvifb*`), handle (`fa17:`) or filter
//! preference (64023), which is how [`leftovers`] finds what a crashed process left. Applying and
//! removing run under the host-wide [`crate::lock`], so concurrent runs never pick the same IFB
//! name or race a check against a change.
//!
//! The measured effect is the TBF qdisc's own counters ([`BandwidthGuard::stats`]): bytes and
//! packets it sent, packets it dropped (queue over `limit`), how often it throttled
//! (`overlimits`), and the rate that passed over the time the limit was held.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use havoc_sys::netns::NetNs;
use serde_json::Value;

use crate::cmd::{self, CmdError};
use crate::lock::{edit_lock, LockError};

/// Handle of the TBF root qdiscs Havoc installs.
pub const ROOT_HANDLE: &str = "fa17:";
/// Preference of Havoc's ingress redirect filter.
pub const FILTER_PREF: u32 = 64023;
/// Name prefix of Havoc's IFB devices.
pub const IFB_PREFIX: &str = "hvifb";

/// Errors of bandwidth shaping.
#[derive(Debug, thiserror::Error)]
pub enum BandwidthError {
    #[error("invalid bandwidth configuration: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("device {dev} does not exist in the namespace")]
    NoDevice { dev: String },
    #[error(
        "device {dev} already has a root qdisc {kind} (handle {handle}) that Havoc did not \
         install; refusing to replace it"
    )]
    ForeignRootQdisc {
        dev: String,
        kind: String,
        handle: String,
    },
    #[error("device {dev} is already shaped by Havoc ({what}); remove it or its leftover first")]
    AlreadyShaped { dev: String, what: &'static str },
    #[error("failed to run a tool")]
    Tool(#[source] CmdError),
    #[error("unexpected output from {tool}: {detail}")]
    Parse { tool: &'static str, detail: String },
    #[error("failed to take the lock that serialises Havoc's tc changes")]
    Lock(#[source] LockError),
}

/// Counters of Havoc's TBF qdisc (`tc -s qdisc`), since the limit was applied.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ShapeStats {
    /// Bytes and packets the TBF sent on (whole frames, GSO super-packets counted as sent).
    pub bytes_sent: u64,
    pub packets_sent: u64,
    /// Packets dropped because the TBF queue was full (`limit`).
    pub packets_dropped: u64,
    /// Times a packet had to wait for tokens: the limit was binding.
    pub overlimits: u64,
    /// Bytes waiting in the queue when read.
    pub backlog_bytes: u64,
    /// From applying the limit to this reading (or to its removal).
    pub elapsed: Duration,
}

impl ShapeStats {
    /// Bits per second that passed the TBF over [`elapsed`](Self::elapsed). Equals the limit
    /// only if the traffic offered was at least that much for the whole time.
    pub fn rate_bps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.bytes_sent as f64 * 8.0 / secs
        } else {
            0.0
        }
    }
}

/// The stats of the `fa17:` root qdisc of `dev`, if it has one.
fn tbf_stats(
    netns: &NetNs,
    dev: &str,
    since: Instant,
) -> Result<Option<ShapeStats>, BandwidthError> {
    let elapsed = since.elapsed();
    let all = json(netns, "tc", &["-s", "-j", "qdisc", "show", "dev", dev])?;
    Ok(all
        .iter()
        .find(|q| q["root"].as_bool() == Some(true) && q["handle"].as_str() == Some(ROOT_HANDLE))
        .map(|q| {
            let n = |k: &str| q[k].as_u64().unwrap_or(0);
            ShapeStats {
                bytes_sent: n("bytes"),
                packets_sent: n("packets"),
                packets_dropped: n("drops"),
                overlimits: n("overlimits"),
                backlog_bytes: n("backlog"),
                elapsed,
            }
        }))
}

/// Which traffic of the device is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeDirection {
    /// Packets the device sends.
    Egress,
    /// Packets the device receives (through an IFB).
    Ingress,
}

/// A TBF limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandwidthConfig {
    /// Rate in bits per second (counted on whole frames, so TCP goodput is ~4 % lower).
    pub rate_bps: u64,
    /// Bytes that may wait in the TBF queue; default: 50 ms at the rate plus the burst.
    pub limit_bytes: Option<u32>,
    /// Bucket size in bytes; default: the larger of 16 KiB and 10 ms at the rate.
    pub burst_bytes: Option<u32>,
    pub direction: ShapeDirection,
}

impl BandwidthConfig {
    pub fn new(rate_bps: u64, direction: ShapeDirection) -> Self {
        Self {
            rate_bps,
            limit_bytes: None,
            burst_bytes: None,
            direction,
        }
    }

    fn burst(&self) -> u32 {
        self.burst_bytes
            .unwrap_or_else(|| (self.rate_bps / 8 / 100).clamp(16 * 1024, u32::MAX as u64) as u32)
    }

    fn limit(&self) -> u32 {
        self.limit_bytes.unwrap_or_else(|| {
            (self.rate_bps / 8 / 20 + self.burst() as u64).min(u32::MAX as u64) as u32
        })
    }

    fn validate(&self) -> Result<(), BandwidthError> {
        if self.rate_bps < 8 {
            return Err(BandwidthError::InvalidConfig {
                field: "rate_bps",
                reason: format!("{} bit/s is below the 8 bit/s TBF minimum", self.rate_bps),
            });
        }
        if self.rate_bps > u32::MAX as u64 * 8 * 64 {
            return Err(BandwidthError::InvalidConfig {
                field: "rate_bps",
                reason: "too large for TBF".into(),
            });
        }
        if self.burst() < 1600 {
            return Err(BandwidthError::InvalidConfig {
                field: "burst_bytes",
                reason: "must hold at least one full-size frame (1600 bytes)".into(),
            });
        }
        Ok(())
    }

    fn tbf_args(&self) -> Vec<String> {
        vec![
            "tbf".into(),
            "rate".into(),
            format!("{}bit", self.rate_bps),
            "burst".into(),
            self.burst().to_string(),
            "limit".into(),
            self.limit().to_string(),
        ]
    }
}

/// Entry point for bandwidth shaping.
#[derive(Debug)]
pub struct Bandwidth;

#[derive(Debug, Clone)]
enum Applied {
    Egress,
    Ingress {
        ifb: String,
        created_clsact: bool,
        parent: Vec<&'static str>,
    },
}

/// An applied limit; [`recover`](Self::recover) or drop restores the device.
#[derive(Debug)]
pub struct BandwidthGuard {
    netns: NetNs,
    dev: String,
    applied: Applied,
    rate_bps: u64,
    applied_at: Instant,
    /// The last stats read ([`BandwidthGuard::refresh_stats`]); final after recovery.
    stats: Mutex<Option<ShapeStats>>,
    recovered: bool,
    /// Held while the limit is ours: a journal-less sweep leaves the namespace's shaping alone.
    owner: Option<havoc_sys::share::Share>,
    /// When recovery removed the limit (the TBF qdisc, or the ingress redirect).
    effect_ended: Option<Instant>,
}

fn tool(netns: &NetNs, program: &str, args: &[&str]) -> Result<String, BandwidthError> {
    cmd::run(netns, program, args)
        .map(|o| o.stdout)
        .map_err(BandwidthError::Tool)
}

fn json(netns: &NetNs, program: &'static str, args: &[&str]) -> Result<Vec<Value>, BandwidthError> {
    let out = tool(netns, program, args)?;
    if out.trim().is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_str::<Value>(&out) {
        Ok(Value::Array(v)) => Ok(v),
        Ok(other) => Err(BandwidthError::Parse {
            tool: program,
            detail: format!("not an array: {other}"),
        }),
        Err(e) => Err(BandwidthError::Parse {
            tool: program,
            detail: e.to_string(),
        }),
    }
}

fn link_names(netns: &NetNs) -> Result<Vec<String>, BandwidthError> {
    Ok(json(netns, "ip", &["-j", "link", "show"])?
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect())
}

fn qdiscs(netns: &NetNs, dev: &str) -> Result<Vec<Value>, BandwidthError> {
    json(netns, "tc", &["-j", "qdisc", "show", "dev", dev])
}

/// Filters at the ingress hook of `dev`, empty when it has no ingress/clsact qdisc.
fn ingress_filters(netns: &NetNs, dev: &str, parent: &[&str]) -> Vec<Value> {
    let mut args = vec!["-j", "filter", "show", "dev", dev];
    args.extend_from_slice(parent);
    match cmd::run_status(netns, "tc", &args) {
        Ok(o) if o.status.success() => serde_json::from_str::<Value>(&o.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The filter parent argument for the ingress qdisc kind found on a device.
fn ingress_parent(qdiscs: &[Value]) -> Option<Vec<&'static str>> {
    qdiscs.iter().find_map(|q| match q["kind"].as_str() {
        Some("clsact") => Some(vec!["ingress"]),
        Some("ingress") => Some(vec!["parent", "ffff:"]),
        _ => None,
    })
}

/// Root qdisc kinds the kernel attaches by itself.
const DEFAULT_ROOT_KINDS: &[&str] = &[
    "noqueue",
    "pfifo_fast",
    "mq",
    "fq_codel",
    "pfifo",
    "noop",
    "fq",
    "sfq",
    "cake",
];

impl Bandwidth {
    /// Limits `ifname` in `netns` as `cfg` says.
    pub fn apply(
        netns: &NetNs,
        ifname: &str,
        cfg: BandwidthConfig,
    ) -> Result<BandwidthGuard, BandwidthError> {
        cfg.validate()?;
        let lock = edit_lock().map_err(BandwidthError::Lock)?;
        let owner = crate::shaping_owner_name(netns).and_then(|n| {
            havoc_sys::share::Share::take(std::path::Path::new(crate::OWNERS_DIR), &n)
                .map_err(|e| tracing::warn!(error = %e, "cannot take the owner lock of the shaping: a concurrent `havoc recover` may remove it"))
                .ok()
        });
        if !link_names(netns)?.iter().any(|n| n == ifname) {
            return Err(BandwidthError::NoDevice {
                dev: ifname.to_string(),
            });
        }
        let tbf = cfg.tbf_args();
        let tbf: Vec<&str> = tbf.iter().map(String::as_str).collect();
        let qd = qdiscs(netns, ifname)?;
        match cfg.direction {
            ShapeDirection::Egress => {
                if let Some(root) = qd.iter().find(|q| q["root"].as_bool() == Some(true)) {
                    let kind = root["kind"].as_str().unwrap_or("?");
                    let handle = root["handle"].as_str().unwrap_or("?");
                    if handle == ROOT_HANDLE {
                        return Err(BandwidthError::AlreadyShaped {
                            dev: ifname.into(),
                            what: "TBF root qdisc fa17:",
                        });
                    }
                    if handle != "0:" || !DEFAULT_ROOT_KINDS.contains(&kind) {
                        return Err(BandwidthError::ForeignRootQdisc {
                            dev: ifname.into(),
                            kind: kind.into(),
                            handle: handle.into(),
                        });
                    }
                }
                let mut args = vec!["qdisc", "add", "dev", ifname, "root", "handle", ROOT_HANDLE];
                args.extend_from_slice(&tbf);
                tool(netns, "tc", &args)?;
                tracing::info!(dev = ifname, rate_bps = cfg.rate_bps, "egress TBF applied");
                Ok(BandwidthGuard {
                    netns: netns.clone(),
                    dev: ifname.into(),
                    applied: Applied::Egress,
                    rate_bps: cfg.rate_bps,
                    applied_at: Instant::now(),
                    stats: Mutex::new(None),
                    recovered: false,
                    owner,
                    effect_ended: None,
                })
            }
            ShapeDirection::Ingress => {
                let existing_parent = ingress_parent(&qd);
                if let Some(p) = &existing_parent {
                    if ingress_filters(netns, ifname, p)
                        .iter()
                        .any(|f| f["pref"].as_u64() == Some(FILTER_PREF as u64))
                    {
                        return Err(BandwidthError::AlreadyShaped {
                            dev: ifname.into(),
                            what: "ingress filter pref 64023",
                        });
                    }
                }
                let names = link_names(netns)?;
                let ifb = (0..1000)
                    .map(|n| format!("{IFB_PREFIX}{n}"))
                    .find(|n| !names.contains(n))
                    .expect("fewer than 1000 IFB devices");
                let mut guard = BandwidthGuard {
                    netns: netns.clone(),
                    dev: ifname.into(),
                    applied: Applied::Ingress {
                        ifb: ifb.clone(),
                        created_clsact: existing_parent.is_none(),
                        parent: existing_parent.clone().unwrap_or_else(|| vec!["ingress"]),
                    },
                    rate_bps: cfg.rate_bps,
                    applied_at: Instant::now(),
                    stats: Mutex::new(None),
                    recovered: false,
                    owner,
                    effect_ended: None,
                };
                let result = (|| {
                    tool(netns, "ip", &["link", "add", &ifb, "type", "ifb"])?;
                    tool(netns, "ip", &["link", "set", "dev", &ifb, "up"])?;
                    let mut args = vec!["qdisc", "add", "dev", &ifb, "root", "handle", ROOT_HANDLE];
                    args.extend_from_slice(&tbf);
                    tool(netns, "tc", &args)?;
                    if existing_parent.is_none() {
                        tool(netns, "tc", &["qdisc", "add", "dev", ifname, "clsact"])?;
                    }
                    let pref = FILTER_PREF.to_string();
                    let mut args = vec!["filter", "add", "dev", ifname];
                    args.extend(existing_parent.clone().unwrap_or_else(|| vec!["ingress"]));
                    args.extend([
                        "pref", &pref, "protocol", "all", "u32", "match", "u32", "0", "0",
                        "action", "mirred", "egress", "redirect", "dev", &ifb,
                    ]);
                    tool(netns, "tc", &args)?;
                    Ok(())
                })();
                if let Err(e) = result {
                    drop(lock);
                    if let Err(undo) = guard.recover() {
                        tracing::warn!(error = %undo, "rollback of a failed ingress limit failed");
                    }
                    return Err(e);
                }
                tracing::info!(dev = ifname, ifb = %ifb, rate_bps = cfg.rate_bps, "ingress TBF applied");
                guard.applied_at = Instant::now();
                Ok(guard)
            }
        }
    }
}

impl BandwidthGuard {
    /// The IFB device of an ingress limit.
    pub fn ifb(&self) -> Option<&str> {
        match &self.applied {
            Applied::Ingress { ifb, .. } => Some(ifb),
            Applied::Egress => None,
        }
    }

    pub fn device(&self) -> &str {
        &self.dev
    }

    /// The limit asked for, in bit/s.
    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// The device holding the TBF: the IFB for an ingress limit, the device itself for egress.
    fn tbf_device(&self) -> &str {
        self.ifb().unwrap_or(&self.dev)
    }

    /// Reads the TBF's counters now (runs `tc`: about once a second, not per packet) and keeps
    /// them for [`stats`](Self::stats). After recovery the final reading stays.
    pub fn refresh_stats(&self) -> Result<Option<ShapeStats>, BandwidthError> {
        if self.recovered {
            return Ok(self.stats());
        }
        let s = tbf_stats(&self.netns, self.tbf_device(), self.applied_at)?;
        if s.is_some() {
            *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = s;
        }
        Ok(s)
    }

    /// When [`recover`](Self::recover) removed the limit.
    pub fn effect_ended_at(&self) -> Option<Instant> {
        self.effect_ended
    }

    /// Leaves the limit in place as a crash would: the owner lock goes (the kernel drops it when
    /// a holder dies) and nothing is removed. For crash tests of sweeps and replays.
    #[doc(hidden)]
    pub fn abandon(mut self) {
        drop(self.owner.take());
        std::mem::forget(self);
    }

    /// The last counters read: by [`refresh_stats`](Self::refresh_stats), or the final ones
    /// read just before the qdisc was removed.
    pub fn stats(&self) -> Option<ShapeStats> {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes the limit and restores the device. Idempotent; steps whose object is already
    /// gone are skipped, and the first error is returned after every step was tried.
    pub fn recover(&mut self) -> Result<(), BandwidthError> {
        if self.recovered {
            return Ok(());
        }
        // Final counters, just before the qdisc goes.
        if let Err(e) = self.refresh_stats() {
            tracing::debug!(error = %e, dev = %self.dev, "could not read the TBF counters");
        }
        let _lock = edit_lock().map_err(BandwidthError::Lock)?;
        self.recovered = true;
        let owner = self.owner.take();
        let netns = &self.netns;
        let names = link_names(netns)?;
        let dev_exists = names.contains(&self.dev);
        let mut first_err: Option<BandwidthError> = None;
        let mut step = |r: Result<String, BandwidthError>| {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        };
        match &self.applied {
            Applied::Egress => {
                if dev_exists
                    && qdiscs(netns, &self.dev)?.iter().any(|q| {
                        q["root"].as_bool() == Some(true)
                            && q["handle"].as_str() == Some(ROOT_HANDLE)
                    })
                {
                    step(tool(
                        netns,
                        "tc",
                        &[
                            "qdisc",
                            "del",
                            "dev",
                            &self.dev,
                            "root",
                            "handle",
                            ROOT_HANDLE,
                        ],
                    ));
                }
            }
            Applied::Ingress {
                ifb,
                created_clsact,
                parent,
            } => {
                if dev_exists {
                    let ours = ingress_filters(netns, &self.dev, parent)
                        .iter()
                        .any(|f| f["pref"].as_u64() == Some(FILTER_PREF as u64));
                    if ours {
                        let pref = FILTER_PREF.to_string();
                        let mut args = vec!["filter", "del", "dev", self.dev.as_str()];
                        args.extend_from_slice(parent);
                        args.extend(["pref", pref.as_str()]);
                        step(tool(netns, "tc", &args));
                    }
                    if *created_clsact
                        && qdiscs(netns, &self.dev)?
                            .iter()
                            .any(|q| q["kind"].as_str() == Some("clsact"))
                    {
                        step(tool(
                            netns,
                            "tc",
                            &["qdisc", "del", "dev", &self.dev, "clsact"],
                        ));
                    }
                }
                self.effect_ended = Some(Instant::now());
                if names.contains(ifb) {
                    step(tool(netns, "ip", &["link", "del", "dev", ifb]));
                }
            }
        }
        self.effect_ended.get_or_insert_with(Instant::now);
        tracing::info!(dev = %self.dev, "bandwidth limit removed");
        drop(owner.and_then(havoc_sys::share::Share::release));
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for BandwidthGuard {
    fn drop(&mut self) {
        if let Err(e) = self.recover() {
            tracing::warn!(error = %e, dev = %self.dev, "removing the bandwidth limit on drop failed");
        }
    }
}

/// Something a crashed Havoc process left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeLeftover {
    /// A TBF root qdisc with handle `fa17:`.
    RootQdisc { dev: String },
    /// The ingress redirect filter (pref 64023) on a device.
    IngressFilter { dev: String },
    /// An `hvifb*` device.
    Ifb { name: String },
}

/// Lists Havoc's qdiscs, filters and IFB devices in `netns`.
pub fn leftovers(netns: &NetNs) -> Result<Vec<ShapeLeftover>, BandwidthError> {
    let mut out = Vec::new();
    let names = link_names(netns)?;
    for dev in &names {
        let qd = qdiscs(netns, dev)?;
        if qd
            .iter()
            .any(|q| q["root"].as_bool() == Some(true) && q["handle"].as_str() == Some(ROOT_HANDLE))
            && !dev.starts_with(IFB_PREFIX)
        {
            out.push(ShapeLeftover::RootQdisc { dev: dev.clone() });
        }
        if let Some(parent) = ingress_parent(&qd) {
            if ingress_filters(netns, dev, &parent)
                .iter()
                .any(|f| f["pref"].as_u64() == Some(FILTER_PREF as u64))
            {
                out.push(ShapeLeftover::IngressFilter { dev: dev.clone() });
            }
        }
    }
    for name in names.iter().filter(|n| n.starts_with(IFB_PREFIX)) {
        out.push(ShapeLeftover::Ifb { name: name.clone() });
    }
    Ok(out)
}

/// Removes everything [`leftovers`] finds. A `clsact` qdisc that held Havoc's filter is removed
/// too when nothing else is attached to it (an empty clsact does nothing, so this is safe even
/// if a user created it). Returns what was removed.
pub fn remove_leftovers(netns: &NetNs) -> Result<Vec<ShapeLeftover>, BandwidthError> {
    let _lock = edit_lock().map_err(BandwidthError::Lock)?;
    // A live run or agent still shapes this namespace: nothing here is a leftover.
    if crate::shaping_owner_name(netns)
        .is_some_and(|n| havoc_sys::share::held(std::path::Path::new(crate::OWNERS_DIR), &n))
    {
        return Ok(Vec::new());
    }
    let found = leftovers(netns)?;
    for l in &found {
        match l {
            ShapeLeftover::RootQdisc { dev } => {
                tool(
                    netns,
                    "tc",
                    &["qdisc", "del", "dev", dev, "root", "handle", ROOT_HANDLE],
                )?;
            }
            ShapeLeftover::IngressFilter { dev } => {
                let qd = qdiscs(netns, dev)?;
                let Some(parent) = ingress_parent(&qd) else {
                    continue;
                };
                let pref = FILTER_PREF.to_string();
                let mut args = vec!["filter", "del", "dev", dev.as_str()];
                args.extend_from_slice(&parent);
                args.extend(["pref", pref.as_str()]);
                tool(netns, "tc", &args)?;
                let is_clsact = qd.iter().any(|q| q["kind"].as_str() == Some("clsact"));
                if is_clsact
                    && ingress_filters(netns, dev, &["ingress"]).is_empty()
                    && ingress_filters(netns, dev, &["egress"]).is_empty()
                {
                    tool(netns, "tc", &["qdisc", "del", "dev", dev, "clsact"])?;
                }
            }
            ShapeLeftover::Ifb { name } => {
                tool(netns, "ip", &["link", "del", "dev", name])?;
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_scale_with_rate() {
        let c = BandwidthConfig::new(10_000_000, ShapeDirection::Egress);
        assert_eq!(c.burst(), 16 * 1024);
        assert_eq!(c.limit(), 10_000_000 / 8 / 20 + 16 * 1024);
        let c = BandwidthConfig::new(1_000_000_000, ShapeDirection::Egress);
        assert_eq!(c.burst(), 1_250_000);
        assert_eq!(
            c.tbf_args().join(" "),
            "tbf rate 1000000000bit burst 1250000 limit 7500000"
        );
    }

    #[test]
    fn validation() {
        assert!(BandwidthConfig::new(0, ShapeDirection::Egress)
            .validate()
            .is_err());
        let mut c = BandwidthConfig::new(1_000_000, ShapeDirection::Ingress);
        c.burst_bytes = Some(100);
        assert!(c.validate().is_err());
        assert!(BandwidthConfig::new(1_000_000, ShapeDirection::Ingress)
            .validate()
            .is_ok());
    }

    #[test]
    fn ingress_parent_follows_qdisc_kind() {
        let clsact: Vec<Value> =
            serde_json::from_str(r#"[{"kind":"clsact","handle":"ffff:"}]"#).expect("json");
        assert_eq!(ingress_parent(&clsact), Some(vec!["ingress"]));
        let ingress: Vec<Value> =
            serde_json::from_str(r#"[{"kind":"ingress","handle":"ffff:"}]"#).expect("json");
        assert_eq!(ingress_parent(&ingress), Some(vec!["parent", "ffff:"]));
        assert_eq!(ingress_parent(&[]), None);
    }
}
