//! `NetworkChaos`: delay, jitter and reordering (netem semantics, through Havoc's NFQUEUE delay
//! engine on kernels without netem) and bandwidth limits (TBF, ingress through an IFB), in any
//! network namespace.
//!
//! Direction follows Chaos Mesh: `from` = packets the target receives (held on the target's
//! receive path), `to` = packets the target sends (held on the receive path of the namespace at
//! the other end of the target's veth, because holding them on the sender's own OUTPUT hook starves
//! TCP), `both` = both. Loss, corruption, duplication and partition belong to the eBPF datapath.

use std::path::{Path, PathBuf};
use std::time::Duration;

use havoc_netem::delay::{
    DelayConfig, DelayEngine, Direction as DelayDirection, PacketFilter, PortMatch, Reorder,
};
use havoc_netem::{Bandwidth, BandwidthConfig, BandwidthGuard, ShapeDirection};
use havoc_spec::network::{Direction, NetworkAction, NetworkChaos, Protocol};
use havoc_sys::netns::NetNs;

use crate::{Context, Effect, Fault, FaultError, Injection, Target, UndoAction};

pub struct NetworkFault {
    spec: NetworkChaos,
    /// Makes the kernel object names of this fault unique on the host.
    nonce: u32,
}

impl NetworkFault {
    pub fn new(spec: NetworkChaos) -> Self {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id().rotate_left(16);
        Self { spec, nonce }
    }

    fn tag(&self, netns: &Path) -> String {
        let mut h: u32 = 0x811c_9dc5;
        for b in netns.as_os_str().as_encoded_bytes() {
            h = (h ^ *b as u32).wrapping_mul(0x0100_0193);
        }
        format!("h{:08x}{:08x}", self.nonce, h)
    }

    /// The eBPF rules this fault needs (loss, duplicate, corrupt, partition), one per action.
    fn bpf_actions(&self) -> Vec<havoc_bpf::Action> {
        use havoc_bpf::Action;
        let s = &self.spec;
        let mut v = Vec::new();
        if let Some(l) = &s.loss {
            v.push(Action::Loss {
                percent: l.loss.0,
                correlation: l.correlation.0,
            });
        }
        if let Some(g) = &s.gilbert_elliott {
            v.push(Action::GilbertElliott {
                p: g.p.0,
                r: g.r.0,
                one_minus_h: g.bad_loss.0,
                one_minus_k: g.good_loss.0,
            });
        }
        if let Some(d) = &s.duplicate {
            v.push(Action::Duplicate {
                percent: d.duplicate.0,
            });
        }
        if let Some(c) = &s.corrupt {
            let checksum = match c.checksum {
                havoc_spec::network::ChecksumMode::Keep => havoc_bpf::ChecksumMode::Keep,
                havoc_spec::network::ChecksumMode::Break => havoc_bpf::ChecksumMode::Break,
            };
            v.push(Action::Corrupt {
                percent: c.corrupt.0,
                checksum,
            });
        }
        if s.action == NetworkAction::Partition {
            v.push(Action::Partition);
        }
        v
    }

    fn bpf_filter(&self, label: &str) -> Result<havoc_bpf::Filter, FaultError> {
        let s = &self.spec;
        let refuse = |reason: String| FaultError::Refused {
            target: label.to_string(),
            reason,
        };
        let mut cidrs = Vec::new();
        for t in &s.external_targets {
            cidrs.push(
                t.parse::<havoc_bpf::Cidr>()
                    .map_err(|e| refuse(format!("externalTargets `{t}`: {e}")))?,
            );
        }
        let ports = match s.ports.len() {
            0 => havoc_bpf::PortFilter::Any,
            1..=4 => havoc_bpf::PortFilter::List(s.ports.clone()),
            n => {
                return Err(refuse(format!(
                    "the eBPF datapath matches at most 4 ports per fault, got {n}: split the fault"
                )))
            }
        };
        let mut protocols = havoc_bpf::Protocols::ANY;
        for p in &s.protocols {
            match p {
                Protocol::Tcp => protocols.tcp = true,
                Protocol::Udp => protocols.udp = true,
                Protocol::Icmp => {
                    protocols.icmp = true;
                    protocols.icmpv6 = true;
                }
            }
        }
        Ok(havoc_bpf::Filter {
            cidrs,
            addr_side: havoc_bpf::AddrSide::Remote,
            ports,
            port_side: havoc_bpf::PortSide::Either,
            protocols,
        })
    }

    /// The devices that send the packets this fault corrupts with `checksum: break`: their TX
    /// checksum offload must be off, or a local sender's packets keep CHECKSUM_PARTIAL and the
    /// receiver never verifies the checksum we broke.
    fn checksum_senders(&self, ns: &NetNs, devs: &[Link]) -> Vec<(NetNs, String)> {
        let breaks = self
            .spec
            .corrupt
            .as_ref()
            .is_some_and(|c| c.checksum == havoc_spec::network::ChecksumMode::Break);
        if !breaks {
            return Vec::new();
        }
        let mut out = Vec::new();
        for d in devs {
            for dir in self.bpf_directions() {
                match dir {
                    havoc_bpf::Direction::Egress => out.push((ns.clone(), d.name.clone())),
                    havoc_bpf::Direction::Ingress => {
                        if let Some(peer) = veth_peer(ns, d) {
                            if let Ok(ls) = links(&peer) {
                                if let Some(p) = ls.iter().find(|l| Some(l.ifindex) == d.link_index)
                                {
                                    out.push((peer, p.name.clone()));
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn bpf_directions(&self) -> &'static [havoc_bpf::Direction] {
        match self.spec.direction {
            Direction::To => &[havoc_bpf::Direction::Egress],
            Direction::From => &[havoc_bpf::Direction::Ingress],
            Direction::Both => &[havoc_bpf::Direction::Egress, havoc_bpf::Direction::Ingress],
        }
    }
}

/// Rules expire this long after their last renewal: a rule that outlives its holder goes inert.
const LEASE: Duration = Duration::from_secs(5);

fn netns_of(target: &Target) -> Result<(NetNs, PathBuf), FaultError> {
    match target {
        Target::Netns { path, .. } => {
            if !path.exists() {
                return Err(FaultError::TargetGone {
                    target: target.label(),
                });
            }
            Ok((NetNs::from_path(path), path.clone()))
        }
        other => Err(FaultError::Refused {
            target: other.label(),
            reason: "NetworkChaos needs a network namespace".into(),
        }),
    }
}

#[derive(Debug, Clone)]
struct Link {
    name: String,
    ifindex: u32,
    link_index: Option<u32>,
    has_peer_netns: bool,
    up: bool,
    loopback: bool,
}

/// The interfaces of `ns`, over rtnetlink (one round trip, no `ip` process: this is on the path
/// from `havoc run` to the fault in effect, several times).
fn links(ns: &NetNs) -> Result<Vec<Link>, FaultError> {
    let cannot = |e: String| {
        FaultError::Other(format!(
            "cannot list interfaces in {}: {e}",
            ns.path().display()
        ))
    };
    let ls = ns
        .run(havoc_sys::netlink::links)
        .map_err(|e| cannot(e.to_string()))?
        .map_err(|e| cannot(e.to_string()))?;
    Ok(ls
        .into_iter()
        .map(|l| Link {
            name: l.name,
            ifindex: l.index,
            link_index: l.link_index,
            has_peer_netns: l.link_netnsid.is_some(),
            up: l.up,
            loopback: l.loopback,
        })
        .collect())
}

fn host_addresses(ns: &NetNs, dev: &str) -> Vec<havoc_netem::Cidr> {
    let Ok(out) = havoc_netem::cmd::run(ns, "ip", &["-j", "addr", "show", "dev", dev]) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    let mut cidrs = Vec::new();
    for l in v.as_array().into_iter().flatten() {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            if a["scope"] == "link" {
                continue;
            }
            if let Some(local) = a["local"].as_str() {
                let bits = if local.contains(':') { 128 } else { 32 };
                if let Ok(c) = format!("{local}/{bits}").parse() {
                    cidrs.push(c);
                }
            }
        }
    }
    cidrs
}

/// The namespace holding the other end of `dev`'s veth, among named namespaces and the host.
fn veth_peer(ns: &NetNs, dev: &Link) -> Option<NetNs> {
    let peer_index = dev.link_index?;
    if !dev.has_peer_netns {
        return None;
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/run/netns")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    candidates.push(PathBuf::from("/proc/1/ns/net"));
    let own = ns.inode().ok();
    for c in candidates {
        let cand = NetNs::from_path(&c);
        if cand.inode().ok() == own {
            continue;
        }
        if let Ok(ls) = links(&cand) {
            if ls.iter().any(|l| {
                l.ifindex == peer_index && l.link_index == Some(dev.ifindex) && l.has_peer_netns
            }) {
                return Some(cand);
            }
        }
    }
    None
}

/// True if `dev` in `ns` computes TX checksums in hardware (or lazily, on veth).
fn tx_offload_on(ns: &NetNs, dev: &str) -> bool {
    havoc_netem::cmd::run(ns, "ethtool", &["-k", dev])
        .map(|o| o.stdout.lines().any(|l| l.trim() == "tx-checksumming: on"))
        .unwrap_or(false)
}

fn set_tx_offload(ns: &NetNs, dev: &str, on: bool) -> Result<(), String> {
    havoc_netem::cmd::run(
        ns,
        "ethtool",
        &["-K", dev, "tx", if on { "on" } else { "off" }],
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn has_clsact(ns: &NetNs, dev: &str) -> bool {
    havoc_netem::cmd::run(ns, "tc", &["qdisc", "show", "dev", dev])
        .is_ok_and(|o| o.stdout.contains("clsact"))
}

/// Deletes the clsact qdisc of a device if it holds no filter (journal replay). Returns whether
/// it deleted one.
pub fn remove_empty_clsact(netns: &Path, dev: &str) -> Result<bool, String> {
    if !netns.exists() {
        return Ok(false);
    }
    let ns = NetNs::from_path(netns);
    if !has_clsact(&ns, dev) {
        return Ok(false);
    }
    for hook in ["ingress", "egress"] {
        let out = havoc_netem::cmd::run(&ns, "tc", &["filter", "show", "dev", dev, hook])
            .map_err(|e| e.to_string())?;
        if !out.stdout.trim().is_empty() {
            return Ok(false);
        }
    }
    havoc_netem::cmd::run(&ns, "tc", &["qdisc", "del", "dev", dev, "clsact"])
        .map(|_| true)
        .map_err(|e| e.to_string())
}

/// Restores TX checksum offload on a device (journal replay).
pub fn restore_tx_offload(netns: &Path, dev: &str) -> Result<bool, String> {
    if !netns.exists() {
        return Ok(false);
    }
    let ns = NetNs::from_path(netns);
    if tx_offload_on(&ns, dev) {
        return Ok(false);
    }
    set_tx_offload(&ns, dev, true).map(|_| true)
}

fn devices(spec: &NetworkChaos, ns: &NetNs, label: &str) -> Result<Vec<Link>, FaultError> {
    let ls = links(ns)?;
    match &spec.device {
        Some(d) => ls
            .into_iter()
            .find(|l| &l.name == d)
            .map(|l| vec![l])
            .ok_or_else(|| FaultError::Refused {
                target: label.to_string(),
                reason: format!("it has no interface `{d}`"),
            }),
        None => {
            let v: Vec<Link> = ls.into_iter().filter(|l| !l.loopback && l.up).collect();
            if v.is_empty() {
                return Err(FaultError::Refused {
                    target: label.to_string(),
                    reason: "it has no interface that is up besides loopback".into(),
                });
            }
            Ok(v)
        }
    }
}

impl Fault for NetworkFault {
    fn check(&self, target: &Target) -> Result<(), FaultError> {
        let (ns, _) = netns_of(target)?;
        if !self.bpf_actions().is_empty() {
            self.bpf_filter(&target.label())?;
        }
        let devs = devices(&self.spec, &ns, &target.label())?;
        if self.spec.delay.is_some() && self.spec.direction != Direction::From {
            for d in &devs {
                if veth_peer(&ns, d).is_none() {
                    return Err(FaultError::Refused {
                        target: target.label(),
                        reason: format!("delaying packets it sends (direction {:?}) holds them where they arrive, but the other end of `{}` is not in a named netns or the host: use direction from", self.spec.direction, d.name),
                    });
                }
            }
        }
        Ok(())
    }

    fn prepare(&self) {
        if !self.bpf_actions().is_empty() {
            havoc_bpf::prewarm(false);
        }
    }

    fn undo_plan(&self, target: &Target) -> Vec<UndoAction> {
        let Ok((ns, path)) = netns_of(target) else {
            return Vec::new();
        };
        let mut v = Vec::new();
        if self.spec.delay.is_some() {
            v.push(UndoAction::RemoveDelayRules {
                netns: path.clone(),
                tag: self.tag(&path),
            });
            if self.spec.direction != Direction::From {
                if let Ok(devs) = devices(&self.spec, &ns, "") {
                    for d in devs {
                        if let Some(peer) = veth_peer(&ns, &d) {
                            v.push(UndoAction::RemoveDelayRules {
                                netns: peer.path().to_path_buf(),
                                tag: self.tag(&path),
                            });
                        }
                    }
                }
            }
        }
        if self.spec.bandwidth.is_some() {
            v.push(UndoAction::RemoveShaping {
                netns: path.clone(),
            });
            // Ingress shaping adds a clsact qdisc where there is none; if we die between adding
            // it and adding our filter, only this record knows the empty clsact is ours.
            if self.spec.direction != Direction::To {
                if let Ok(devs) = devices(&self.spec, &ns, "") {
                    for d in devs {
                        if !has_clsact(&ns, &d.name) {
                            v.push(UndoAction::RemoveEmptyClsact {
                                netns: path.clone(),
                                dev: d.name,
                            });
                        }
                    }
                }
            }
        }
        if let Ok(devs) = devices(&self.spec, &ns, "") {
            for (sns, dev) in self.checksum_senders(&ns, &devs) {
                if tx_offload_on(&sns, &dev) {
                    v.push(UndoAction::RestoreTxOffload {
                        netns: sns.path().to_path_buf(),
                        dev,
                    });
                }
            }
        }
        v
    }

    fn inject(&self, target: &Target, ctx: &Context) -> Result<Box<dyn Injection>, FaultError> {
        self.check(target)?;
        let (ns, path) = netns_of(target)?;
        let label = target.label();
        let mut inj = NetworkInjection {
            label: label.clone(),
            datapaths: Vec::new(),
            offloads: Vec::new(),
            final_counters: Vec::new(),
            last_renew: std::time::Instant::now(),
            delays: Vec::new(),
            shapes: Vec::new(),
            started: std::time::Instant::now(),
            effect_ended: None,
            summary_req: self.requested(),
            requested: Requested::of(&self.spec),
            recovered: false,
        };
        let devs = devices(&self.spec, &ns, &label)?;
        let remote: Vec<havoc_netem::Cidr> = self
            .spec
            .external_targets
            .iter()
            .filter_map(|s| {
                let s = if s.contains('/') {
                    s.clone()
                } else if s.contains(':') {
                    format!("{s}/128")
                } else {
                    format!("{s}/32")
                };
                s.parse().ok()
            })
            .collect();
        let protocol = match self.spec.protocols.as_slice() {
            [Protocol::Tcp] => Some(havoc_netem::Protocol::Tcp),
            [Protocol::Udp] => Some(havoc_netem::Protocol::Udp),
            [Protocol::Icmp] => Some(havoc_netem::Protocol::Icmp),
            _ => None,
        };
        let ports = if self.spec.ports.is_empty() {
            PortMatch::Any
        } else {
            PortMatch::Either(self.spec.ports.clone())
        };
        let result = (|| -> Result<(), FaultError> {
            for (sns, dev) in self.checksum_senders(&ns, &devs) {
                if tx_offload_on(&sns, &dev) {
                    set_tx_offload(&sns, &dev, false).map_err(|e| {
                        FaultError::Other(format!(
                            "cannot turn off TX checksum offload of {dev} for checksum: break: {e}"
                        ))
                    })?;
                    inj.offloads.push((sns, dev));
                }
            }
            let actions = self.bpf_actions();
            if !actions.is_empty() {
                let filter = self.bpf_filter(&label)?;
                for dev in &devs {
                    for dir in self.bpf_directions() {
                        let mut dp =
                            havoc_bpf::Datapath::attach(&ns, &dev.name, *dir).map_err(|e| {
                                FaultError::Other(format!(
                                    "cannot attach the eBPF datapath to {} {dir} in {label}: {}",
                                    dev.name,
                                    chain(&e)
                                ))
                            })?;
                        let mut ids = Vec::new();
                        for a in &actions {
                            let rule = havoc_bpf::Rule::new(*a)
                                .with_filter(filter.clone())
                                .with_lease(LEASE);
                            ids.push(dp.add_rule(&rule).map_err(|e| {
                                FaultError::Other(format!(
                                    "cannot add rule on {} {dir} in {label}: {}",
                                    dev.name,
                                    chain(&e)
                                ))
                            })?);
                        }
                        inj.datapaths
                            .push((dp, ids, havoc_bpf::Counters::default()));
                    }
                }
            }
            if let Some(d) = &self.spec.delay {
                let base = DelayConfig {
                    tag: Some(self.tag(&path)),
                    delay: d.latency.0,
                    jitter: d.jitter.0,
                    correlation: d.correlation.0,
                    reorder: d.reorder.as_ref().map(|r| Reorder {
                        percent: r.reorder.0,
                        correlation: r.correlation.0,
                        gap: r.gap,
                    }),
                    seed: ctx.seed,
                    ..DelayConfig::default()
                };
                for dev in &devs {
                    if self.spec.direction != Direction::To {
                        let cfg = DelayConfig {
                            filter: PacketFilter {
                                device: Some(dev.name.clone()),
                                remote_cidrs: remote.clone(),
                                protocol,
                                ports: ports.clone(),
                            },
                            direction: DelayDirection::Ingress,
                            ..base.clone()
                        };
                        inj.delays.push(DelayEngine::start(&ns, cfg).map_err(|e| {
                            FaultError::Other(format!(
                                "cannot start the delay engine in {label}: {e}"
                            ))
                        })?);
                    }
                    if self.spec.direction != Direction::From {
                        let peer = veth_peer(&ns, dev).ok_or_else(|| {
                            FaultError::Other(format!("the peer of {} went away", dev.name))
                        })?;
                        let cfg = DelayConfig {
                            filter: PacketFilter {
                                device: None,
                                remote_cidrs: remote.clone(),
                                protocol,
                                ports: ports.clone(),
                            },
                            direction: DelayDirection::EgressAtPeer {
                                peer,
                                target_cidrs: host_addresses(&ns, &dev.name),
                            },
                            ..base.clone()
                        };
                        inj.delays.push(DelayEngine::start(&ns, cfg).map_err(|e| {
                            FaultError::Other(format!(
                                "cannot start the delay engine for packets {label} sends: {e}"
                            ))
                        })?);
                    }
                }
            }
            if let Some(b) = &self.spec.bandwidth {
                for dev in &devs {
                    let dirs: &[ShapeDirection] = match self.spec.direction {
                        Direction::To => &[ShapeDirection::Egress],
                        Direction::From => &[ShapeDirection::Ingress],
                        Direction::Both => &[ShapeDirection::Egress, ShapeDirection::Ingress],
                    };
                    for dir in dirs {
                        let mut cfg = BandwidthConfig::new(b.rate.0, *dir);
                        cfg.limit_bytes = b.limit.map(|l| l.0.min(u32::MAX as u64) as u32);
                        cfg.burst_bytes = b.buffer.map(|l| l.0.min(u32::MAX as u64) as u32);
                        inj.shapes
                            .push(Bandwidth::apply(&ns, &dev.name, cfg).map_err(|e| {
                                FaultError::Other(format!(
                                    "cannot limit bandwidth of {} in {label}: {e}",
                                    dev.name
                                ))
                            })?);
                    }
                }
            }
            Ok(())
        })();
        // On failure `inj` is dropped here and recovers what was already applied.
        result?;
        Ok(Box::new(inj))
    }

    fn requested(&self) -> String {
        let mut s = havoc_spec::FaultSpec::NetworkChaos(self.spec.clone()).summary();
        s.push_str(&format!(" ({:?})", self.spec.direction).to_lowercase());
        s
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

struct NetworkInjection {
    label: String,
    /// Attached datapaths with their rules and the last counters read.
    datapaths: Vec<(
        havoc_bpf::Datapath,
        Vec<havoc_bpf::RuleId>,
        havoc_bpf::Counters,
    )>,
    /// Devices whose TX checksum offload we turned off, to turn back on.
    offloads: Vec<(NetNs, String)>,
    /// Counters of the datapaths after they were detached.
    final_counters: Vec<havoc_bpf::Counters>,
    last_renew: std::time::Instant,
    delays: Vec<DelayEngine>,
    shapes: Vec<BandwidthGuard>,
    started: std::time::Instant,
    /// When recovery removed the last part of the fault that acted on packets.
    effect_ended: Option<std::time::Instant>,
    summary_req: String,
    /// The requested values, reported beside the measured ones as `<metric>_requested`.
    requested: Requested,
    recovered: bool,
}

/// What the spec asked for, in the units of the measured metrics.
#[derive(Debug, Clone, Copy, Default)]
struct Requested {
    loss_percent: Option<f64>,
    duplicate_percent: Option<f64>,
    corrupt_percent: Option<f64>,
    delay_mean_ms: Option<f64>,
    delay_jitter_ms: Option<f64>,
    reorder_percent: Option<f64>,
    rate_bps: Option<f64>,
}

impl Requested {
    fn of(spec: &NetworkChaos) -> Self {
        Requested {
            loss_percent: spec.loss.as_ref().map(|l| l.loss.0),
            duplicate_percent: spec.duplicate.as_ref().map(|d| d.duplicate.0),
            corrupt_percent: spec.corrupt.as_ref().map(|c| c.corrupt.0),
            delay_mean_ms: spec.delay.as_ref().map(|d| d.latency.0.as_secs_f64() * 1e3),
            delay_jitter_ms: spec.delay.as_ref().map(|d| d.jitter.0.as_secs_f64() * 1e3),
            reorder_percent: spec
                .delay
                .as_ref()
                .and_then(|d| d.reorder.as_ref())
                .map(|r| r.reorder.0),
            rate_bps: spec.bandwidth.as_ref().map(|b| b.rate.0 as f64),
        }
    }
}

/// The delay engines' measured effect. Metrics:
/// - `packets_delayed`: held by the engine; `packets_bypassed`: matched the NFQUEUE rules but
///   passed undelayed because the kernel queue or socket was full (fail-open) or no reader was
///   bound; `delay_packets_seen`: received by the engine; `delay_packets_matched`: counted by the
///   rules (= seen + bypassed + kernel drops); `packets_reordered`.
/// - `delay_mean_ms` (and its older name `mean_added_delay_ms`): measured hold time of delayed
///   packets; `delay_jitter_ms`: `sqrt(3)` times their standard deviation, which is the jitter
///   `J` of netem's uniform `[delay - J, delay + J)` (without correlation), so it compares with
///   the request; `delay_stddev_ms`: the standard deviation itself.
/// - `delay_mean_ms_requested`, `delay_jitter_ms_requested`, `reorder_percent(_requested)`.
fn delay_effect(mut e: Effect, delays: &[DelayEngine], req: &Requested) -> (Effect, String) {
    let (mut seen, mut delayed, mut reordered, mut bypassed, mut dropped) = (0u64, 0, 0, 0, 0);
    let mut matched: Option<u64> = Some(0);
    // Pooled mean and variance of the hold times over all engines.
    let (mut n, mut sum, mut sum_sq) = (0f64, 0f64, 0f64);
    for d in delays {
        let s = d.stats();
        seen += s.seen;
        delayed += s.delayed;
        reordered += s.reordered;
        bypassed += s.bypassed;
        dropped += s.kernel_dropped;
        matched = matched.zip(s.rule_packets).map(|(a, b)| a + b);
        if let Some(m) = s.mean_added_delay {
            let k = s.delayed.saturating_sub(s.held) as f64;
            let m = m.as_secs_f64() * 1e3;
            let sd = s.added_delay_stddev.map_or(0.0, |x| x.as_secs_f64() * 1e3);
            n += k;
            sum += k * m;
            sum_sq += (k - 1.0).max(0.0) * sd * sd + k * m * m;
        }
    }
    let mean = if n > 0.0 { sum / n } else { 0.0 };
    let sd = if n > 1.0 {
        ((sum_sq - n * mean * mean) / (n - 1.0)).max(0.0).sqrt()
    } else {
        0.0
    };
    let jitter = sd * 3f64.sqrt();
    e = e
        .metric("delay_packets_seen", seen as f64)
        .metric("packets_delayed", delayed as f64)
        .metric("packets_bypassed", bypassed as f64)
        .metric("packets_reordered", reordered as f64)
        .metric("delay_mean_ms", mean)
        .metric("mean_added_delay_ms", mean)
        .metric("delay_jitter_ms", jitter)
        .metric("delay_stddev_ms", sd);
    if let Some(m) = matched {
        e = e.metric("delay_packets_matched", m as f64);
    }
    if dropped > 0 {
        e = e.metric("delay_packets_dropped_by_kernel", dropped as f64);
    }
    if let Some(r) = req.delay_mean_ms {
        e = e.metric("delay_mean_ms_requested", r);
    }
    if let Some(r) = req.delay_jitter_ms {
        e = e.metric("delay_jitter_ms_requested", r);
    }
    let reorder = if let Some(r) = req.reorder_percent {
        let achieved = if seen > 0 {
            100.0 * reordered as f64 / seen as f64
        } else {
            0.0
        };
        e = e
            .metric("reorder_percent", achieved)
            .metric("reorder_percent_requested", r);
        format!(", {reordered} reordered ({achieved:.2}%, {r}% requested)")
    } else {
        String::new()
    };
    let total = delayed + bypassed;
    let share = |k: u64| {
        if total > 0 {
            100.0 * k as f64 / total as f64
        } else {
            0.0
        }
    };
    let requested = match (req.delay_mean_ms, req.delay_jitter_ms) {
        (Some(m), Some(j)) if j > 0.0 => format!(" ({m:.2} ± {j:.2} ms requested)"),
        (Some(m), _) => format!(" ({m:.2} ms requested)"),
        _ => String::new(),
    };
    let mut part = format!(
        "delayed {delayed} of {total} matching packets ({:.1}%) by {mean:.2} ms on average, \
         jitter {jitter:.2} ms{requested}; {bypassed} ({:.1}%) bypassed the engine undelayed \
         (queue full or no reader){reorder} (backend: nfqueue)",
        share(delayed),
        share(bypassed)
    );
    if dropped > 0 {
        part.push_str(&format!("; the kernel dropped {dropped} (queue full)"));
    }
    (e, part)
}

/// The TBF limits' measured effect: `bytes_sent`, `packets_sent`, `tbf_packets_dropped`,
/// `overlimits` summed over every limited device, and `rate_bps`, the highest rate that passed
/// one limit over the time it was held, beside `rate_bps_requested`.
fn shaping_effect(mut e: Effect, shapes: &[BandwidthGuard], req: &Requested) -> (Effect, String) {
    let (mut bytes, mut packets, mut drops, mut over) = (0u64, 0u64, 0u64, 0u64);
    let mut rate: f64 = 0.0;
    let mut devs = Vec::new();
    for s in shapes {
        let where_ = s.ifb().map_or_else(
            || format!("{} egress", s.device()),
            |i| format!("{} ingress via {i}", s.device()),
        );
        match s.stats() {
            Some(st) => {
                bytes += st.bytes_sent;
                packets += st.packets_sent;
                drops += st.packets_dropped;
                over += st.overlimits;
                rate = rate.max(st.rate_bps());
                devs.push(format!(
                    "{where_}: {} packets, {} bytes in {:.1} s = {:.3} Mbit/s, {} dropped, {} overlimits",
                    st.packets_sent,
                    st.bytes_sent,
                    st.elapsed.as_secs_f64(),
                    st.rate_bps() / 1e6,
                    st.packets_dropped,
                    st.overlimits
                ));
            }
            None => devs.push(format!("{where_}: no counters read yet")),
        }
    }
    e = e
        .metric("bytes_sent", bytes as f64)
        .metric("packets_sent", packets as f64)
        .metric("tbf_packets_dropped", drops as f64)
        .metric("overlimits", over as f64)
        .metric("rate_bps", rate);
    let requested = match req.rate_bps {
        Some(r) => {
            e = e.metric("rate_bps_requested", r);
            format!(" (limit {:.3} Mbit/s)", r / 1e6)
        }
        None => String::new(),
    };
    (e, format!("TBF{requested} on {}", devs.join("; ")))
}

impl NetworkInjection {
    fn read_counters(&mut self) {
        for (dp, ids, total) in &mut self.datapaths {
            let mut t = havoc_bpf::Counters::default();
            for id in ids.iter() {
                if let Ok(c) = dp.counters(*id) {
                    t.seen = t.seen.max(c.seen);
                    t.matched = t.matched.max(c.matched);
                    t.dropped += c.dropped;
                    t.corrupted += c.corrupted;
                    t.duplicated += c.duplicated;
                }
            }
            *total = t;
        }
    }
}

impl Injection for NetworkInjection {
    fn in_effect_until(&self) -> Option<std::time::Instant> {
        self.effect_ended
    }

    fn tick(&mut self) -> Result<(), FaultError> {
        if self.last_renew.elapsed() >= Duration::from_secs(1) {
            self.last_renew = std::time::Instant::now();
            for (dp, ids, _) in &mut self.datapaths {
                for id in ids.iter() {
                    dp.renew(*id, Some(LEASE)).map_err(|e| {
                        FaultError::Other(format!(
                            "cannot renew rule {id} on {}: {}",
                            dp.ifname(),
                            chain(&e)
                        ))
                    })?;
                }
            }
            self.read_counters();
            for d in &self.delays {
                d.refresh_counters();
            }
            for s in &self.shapes {
                if let Err(e) = s.refresh_stats() {
                    tracing::debug!(error = %e, dev = s.device(), "cannot read TBF counters");
                }
            }
        }
        Ok(())
    }

    fn effect(&self) -> Effect {
        let mut e = Effect::default();
        let mut parts = Vec::new();
        let counters: Vec<havoc_bpf::Counters> = if self.datapaths.is_empty() {
            self.final_counters.clone()
        } else {
            self.datapaths.iter().map(|(_, _, c)| *c).collect()
        };
        if !counters.is_empty() {
            let mut t = havoc_bpf::Counters::default();
            for c in &counters {
                t.seen += c.seen;
                t.matched += c.matched;
                t.dropped += c.dropped;
                t.corrupted += c.corrupted;
                t.duplicated += c.duplicated;
            }
            let pct = |n: u64| {
                if t.matched > 0 {
                    100.0 * n as f64 / t.matched as f64
                } else {
                    0.0
                }
            };
            let mut what = Vec::new();
            if t.dropped > 0
                || self.summary_req.contains("loss")
                || self.summary_req.contains("partition")
            {
                what.push(format!("dropped {} ({:.2}%)", t.dropped, pct(t.dropped)));
            }
            if t.corrupted > 0 || self.summary_req.contains("corrupt") {
                what.push(format!(
                    "corrupted {} ({:.2}%)",
                    t.corrupted,
                    pct(t.corrupted)
                ));
            }
            if t.duplicated > 0 || self.summary_req.contains("duplicate") {
                what.push(format!(
                    "duplicated {} ({:.2}%)",
                    t.duplicated,
                    pct(t.duplicated)
                ));
            }
            parts.push(format!(
                "{} of {} matching packets (eBPF, {} hook(s))",
                what.join(", "),
                t.matched,
                counters.len()
            ));
            e = e
                .metric("packets_seen", t.seen as f64)
                .metric("packets_matched", t.matched as f64)
                .metric("packets_dropped", t.dropped as f64)
                .metric("packets_corrupted", t.corrupted as f64)
                .metric("packets_duplicated", t.duplicated as f64);
            let r = &self.requested;
            for (name, requested, n) in [
                ("loss_percent", r.loss_percent, t.dropped),
                ("duplicate_percent", r.duplicate_percent, t.duplicated),
                ("corrupt_percent", r.corrupt_percent, t.corrupted),
            ] {
                if let Some(req) = requested {
                    e = e
                        .metric(name, pct(n))
                        .metric(&format!("{name}_requested"), req);
                }
            }
        }
        if !self.delays.is_empty() {
            let (e2, part) = delay_effect(e, &self.delays, &self.requested);
            e = e2;
            parts.push(part);
        }
        if !self.shapes.is_empty() {
            let (e2, part) = shaping_effect(e, &self.shapes, &self.requested);
            e = e2;
            parts.push(part);
        }
        e.summary = parts.join("; ");
        e.metric("active_seconds", self.started.elapsed().as_secs_f64())
    }

    fn recover(&mut self) -> Result<(), FaultError> {
        if self.recovered {
            return Ok(());
        }
        let mut errors = Vec::new();
        self.read_counters();
        for (dp, ids, _) in &mut self.datapaths {
            for id in ids.drain(..) {
                if let Err(e) = dp.remove_rule(id) {
                    errors.push(chain(&e));
                }
            }
        }
        let rules_gone = std::time::Instant::now();
        // Dropping a datapath detaches its TCX link.
        let counters: Vec<_> = self.datapaths.iter().map(|(_, _, c)| *c).collect();
        self.datapaths.clear();
        self.final_counters = counters;
        for d in &mut self.delays {
            if let Err(e) = d.stop() {
                errors.push(e.to_string());
            }
        }
        for s in &mut self.shapes {
            if let Err(e) = s.recover() {
                errors.push(e.to_string());
            }
        }
        // The fault stopped acting when its last part was removed: the eBPF rules, the jumps to
        // a delay queue, a bandwidth limit. What follows (chains, IFBs, offload) is cleanup.
        self.effect_ended = self
            .delays
            .iter()
            .filter_map(|d| d.effect_ended_at())
            .chain(self.shapes.iter().filter_map(|s| s.effect_ended_at()))
            .chain([rules_gone])
            .max();
        for (ns, dev) in std::mem::take(&mut self.offloads) {
            if let Err(e) = set_tx_offload(&ns, &dev, true) {
                errors.push(format!(
                    "cannot turn TX checksum offload of {dev} back on: {e}"
                ));
                self.offloads.push((ns, dev));
            }
        }
        if !errors.is_empty() {
            return Err(FaultError::Other(format!(
                "recovering {} ({}): {}",
                self.label,
                self.summary_req,
                errors.join("; ")
            )));
        }
        self.recovered = true;
        Ok(())
    }
}

impl Drop for NetworkInjection {
    fn drop(&mut self) {
        let _ = self.recover();
    }
}

/// Removes Havoc's delay rules tagged `tag` from a namespace (journal replay).
pub fn remove_delay_rules(netns: &Path, tag: &str) -> Result<usize, String> {
    if !netns.exists() {
        return Ok(0);
    }
    havoc_netem::iptables::remove_leftovers(&NetNs::from_path(netns), tag)
        .map(|r| r.leftovers.len() + r.tables.len())
        .map_err(|e| e.to_string())
}

/// Removes Havoc's shaping (TBF, IFB) from a namespace (journal replay).
pub fn remove_shaping(netns: &Path) -> Result<usize, String> {
    if !netns.exists() {
        return Ok(0);
    }
    havoc_netem::bandwidth::remove_leftovers(&NetNs::from_path(netns))
        .map(|v| v.len())
        .map_err(|e| e.to_string())
}

/// How long a delay engine may hold a packet at most (for callers sizing timeouts).
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Finds and removes everything of Havoc's in every named network namespace and the host,
/// without a journal: `HAVOC-*` iptables chains, TBF qdiscs and `hvifb*` devices. Programs of
/// the eBPF datapath die with their holder (TCX links); any still listed are reported, not touched.
/// Call only when no havoc run is alive, since it cannot tell whose objects it finds.
pub fn sweep_leftovers() -> Vec<String> {
    let mut namespaces: Vec<PathBuf> = std::fs::read_dir("/run/netns")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    namespaces.sort();
    namespaces.insert(0, PathBuf::from("/proc/1/ns/net"));
    let mut out = Vec::new();
    // Lock files of holders that died (the kernel dropped their locks, not their files).
    for dir in [havoc_netem::OWNERS_DIR, crate::process::PAUSE_LOCK_DIR] {
        let n = havoc_sys::share::remove_unheld(std::path::Path::new(dir));
        if n > 0 {
            out.push(format!("removed {n} lock file(s) of dead holders in {dir}"));
        }
    }
    for path in namespaces {
        let ns = NetNs::from_path(&path);
        match havoc_netem::iptables::remove_leftovers(&ns, "") {
            Ok(r) => {
                out.extend(r.leftovers.iter().map(|l| {
                    format!(
                        "removed delay chain HAVOC-{} ({}, {} jump(s)) in {}",
                        l.tag,
                        l.family,
                        l.jumps,
                        path.display()
                    )
                }));
                out.extend(r.tables.iter().map(|f| {
                    format!(
                        "removed Havoc's empty mangle table ({f}) in {}",
                        path.display()
                    )
                }));
            }
            Err(e) => out.push(format!(
                "cannot check delay rules in {}: {e}",
                path.display()
            )),
        }
        match havoc_netem::bandwidth::remove_leftovers(&ns) {
            Ok(v) => out.extend(
                v.iter()
                    .map(|l| format!("removed {l:?} in {}", path.display())),
            ),
            Err(e) => out.push(format!(
                "cannot check bandwidth limits in {}: {e}",
                path.display()
            )),
        }
    }
    if let Ok(progs) = havoc_bpf::leftover_programs() {
        for p in progs {
            out.push(format!(
                "eBPF program {} ({}) is still loaded and held by a live process or a pin",
                p.id, p.name
            ));
        }
    }
    out
}
