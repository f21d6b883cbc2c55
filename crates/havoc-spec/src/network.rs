//! `NetworkChaos`: loss, delay, duplication, corruption, partition and bandwidth limits.
//!
//! Field names follow Chaos Mesh v1alpha1 (`action`, `loss.loss`, `delay.latency`, `direction`,
//! `externalTargets`, `bandwidth.rate`...). Havoc adds a Gilbert–Elliott loss model, a choice of
//! what corruption does to checksums, and port and protocol filters.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::path::FieldPath;
use crate::selector::Selector;
use crate::units::{ByteSize, HumanDuration, Percent, Rate};

/// The largest `bandwidth.limit` and `bandwidth.buffer`.
pub const MAX_QUEUE_BYTES: u64 = 1 << 30;

/// What a NetworkChaos does to the selected traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkAction {
    Loss,
    Delay,
    Duplicate,
    Corrupt,
    Partition,
    Bandwidth,
    /// Several of loss, delay, duplicate, corrupt and bandwidth at once.
    Netem,
}

/// Which packets, seen from the target (Chaos Mesh semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Packets the target sends.
    #[default]
    To,
    /// Packets the target receives.
    From,
    Both,
}

/// A transport protocol to filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LossModel {
    #[default]
    Bernoulli,
    GilbertElliott,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumMode {
    /// The application receives garbage with valid checksums.
    #[default]
    Keep,
    /// Checksums are left wrong: the receiving stack drops the packet and counts a checksum error.
    Break,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
/// Random packet loss.
pub struct LossSpec {
    /// Percent of packets dropped, as a string: `"10"`, `"0.5"`.
    pub loss: Percent,
    /// Percent by which each drop decision depends on the previous one (bursts), `"0"` by default.
    #[serde(default)]
    pub correlation: Percent,
}

/// The four-parameter Gilbert–Elliott model of netem's `gemodel`: `p` = P(good→bad),
/// `r` = P(bad→good), `badLoss` = 1-h (loss in the bad state), `goodLoss` = 1-k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GilbertElliott {
    /// Percent chance per packet of moving from the good to the bad state.
    pub p: Percent,
    /// Percent chance per packet of moving from the bad back to the good state.
    pub r: Percent,
    /// Percent of packets lost in the bad state (`"100"` by default).
    #[serde(default = "hundred")]
    pub bad_loss: Percent,
    /// Percent of packets lost in the good state (`"0"` by default).
    #[serde(default)]
    pub good_loss: Percent,
}

fn hundred() -> Percent {
    Percent(100.0)
}

impl GilbertElliott {
    /// The long-run loss ratio of the model, 0..=1.
    pub fn mean_loss(&self) -> f64 {
        let (p, r) = (self.p.fraction(), self.r.fraction());
        if p + r == 0.0 {
            return self.good_loss.fraction();
        }
        let pi_bad = p / (p + r);
        pi_bad * self.bad_loss.fraction() + (1.0 - pi_bad) * self.good_loss.fraction()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
/// Packets sent at once instead of delayed, so they overtake delayed ones.
pub struct ReorderSpec {
    /// Percent of packets sent without the delay.
    pub reorder: Percent,
    /// Percent by which each decision depends on the previous one.
    #[serde(default)]
    pub correlation: Percent,
    /// Reorder only every `gap`-th packet (0: any packet).
    #[serde(default)]
    pub gap: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
/// Added latency.
pub struct DelaySpec {
    /// Delay added to each packet: `100ms`, `1s`.
    pub latency: HumanDuration,
    /// Random variation of the delay, up to `latency`: `10ms`.
    #[serde(default)]
    pub jitter: HumanDuration,
    /// Percent by which each packet's jitter depends on the previous packet's.
    #[serde(default)]
    pub correlation: Percent,
    /// Optional reordering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder: Option<ReorderSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
/// Random packet duplication.
pub struct DuplicateSpec {
    /// Percent of packets sent twice.
    pub duplicate: Percent,
    /// Percent by which each decision depends on the previous one.
    #[serde(default)]
    pub correlation: Percent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
/// Random packet corruption.
pub struct CorruptSpec {
    /// Percent of packets with one flipped bit.
    pub corrupt: Percent,
    /// Percent by which each decision depends on the previous one.
    #[serde(default)]
    pub correlation: Percent,
    /// `keep` (fix checksums: the application gets garbage) or `break` (the stack drops them).
    #[serde(default)]
    pub checksum: ChecksumMode,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
/// A bandwidth limit (token bucket).
pub struct BandwidthSpec {
    /// The rate: `1mbit`, `100kbit`; `mbps` means megabytes per second, as in tc.
    pub rate: Rate,
    /// Bytes that may wait in the queue (tc `limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<ByteSize>,
    /// Bucket size in bytes (tc `burst`/`buffer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer: Option<ByteSize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkChaos {
    pub action: NetworkAction,
    pub selector: Selector,
    #[serde(default)]
    pub direction: Direction,
    /// Only traffic to/from these CIDRs or addresses (default: all traffic).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_targets: Vec<String>,
    /// Interface inside the target namespace (default: every non-loopback interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Only these remote or local ports (TCP/UDP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossSpec>,
    #[serde(default)]
    pub loss_model: LossModel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gilbert_elliott: Option<GilbertElliott>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelaySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<DuplicateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<CorruptSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<BandwidthSpec>,
}

/// A parsed `externalTargets` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{}` is not an IP address or CIDR (like 10.0.0.0/8 or fd00::/64); host names are not resolved", crate::units::clip(s)))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| {
                    format!(
                        "`{}`: prefix length must be 0..={max}",
                        crate::units::clip(s)
                    )
                })?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl NetworkChaos {
    pub fn cidrs(&self) -> Vec<Cidr> {
        self.external_targets
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        self.selector.validate(&path.key("selector"), true, p);
        self.validate_params(path, p);
    }

    /// Checks every fault parameter but not the selector, so that other selectors (the
    /// Kubernetes pod selector) reuse the same rules and messages.
    pub fn validate_params(&self, path: &FieldPath, p: &mut Problems) {
        use NetworkAction as A;
        let given = [
            (
                "loss",
                self.loss.is_some() || self.loss_model == LossModel::GilbertElliott,
            ),
            ("delay", self.delay.is_some()),
            ("duplicate", self.duplicate.is_some()),
            ("corrupt", self.corrupt.is_some()),
            ("bandwidth", self.bandwidth.is_some()),
        ];
        let needed = match self.action {
            A::Loss => Some("loss"),
            A::Delay => Some("delay"),
            A::Duplicate => Some("duplicate"),
            A::Corrupt => Some("corrupt"),
            A::Bandwidth => Some("bandwidth"),
            A::Partition | A::Netem => None,
        };
        match self.action {
            A::Netem => {
                if !given.iter().any(|(_, g)| *g) {
                    p.add(&path.key("action"), "action netem needs at least one of loss, delay, duplicate, corrupt, bandwidth");
                }
            }
            _ => {
                for (name, g) in given {
                    if g && Some(name) != needed {
                        p.add(&path.key(name), format!("{name} does not apply to action {}: use action netem to combine faults", action_name(self.action)));
                    } else if !g && Some(name) == needed {
                        p.add(&path.key(name), format!("is required with action {name}"));
                    }
                }
            }
        }
        match (self.loss_model, &self.gilbert_elliott) {
            (LossModel::GilbertElliott, None) => p.add(
                &path.key("gilbertElliott"),
                "is required with lossModel gilbertElliott (p, r, badLoss, goodLoss)",
            ),
            (LossModel::Bernoulli, Some(_)) => p.add(
                &path.key("gilbertElliott"),
                "only applies with lossModel: gilbertElliott",
            ),
            (LossModel::GilbertElliott, Some(_)) if self.loss.is_some() => p.add(
                &path.key("loss"),
                "give either loss (Bernoulli) or gilbertElliott, not both",
            ),
            _ => {}
        }
        if let Some(ge) = &self.gilbert_elliott {
            if ge.r.0 == 0.0 && ge.p.0 > 0.0 {
                p.add(
                    &path.key("gilbertElliott").key("r"),
                    "r = 0 never leaves the bad state: give r > 0",
                );
            }
        }
        if let Some(d) = &self.delay {
            let dp = path.key("delay");
            if d.latency.0 > std::time::Duration::from_secs(60) {
                p.add(
                    &dp.key("latency"),
                    format!("must be at most 60s, got {}", d.latency),
                );
            }
            if d.jitter.0 > d.latency.0 {
                p.add(
                    &dp.key("jitter"),
                    format!("must not exceed latency ({}), got {}", d.latency, d.jitter),
                );
            }
            if d.latency.0.is_zero() && d.reorder.is_none() {
                p.add(
                    &dp.key("latency"),
                    "must be greater than 0 (or give reorder)",
                );
            }
            if d.reorder.is_some() && d.latency.0.is_zero() {
                p.add(
                    &dp.key("reorder"),
                    "reordering needs latency > 0: reordered packets skip the delay",
                );
            }
        }
        if let Some(b) = &self.bandwidth {
            if b.rate.0 < 8_000 {
                p.add(
                    &path.key("bandwidth").key("rate"),
                    format!("must be at least 8kbit, got {}", b.rate),
                );
            }
            // tc's token bucket keeps both in 32 bits.
            for (key, v) in [("limit", b.limit), ("buffer", b.buffer)] {
                if let Some(v) = v {
                    if v.0 > MAX_QUEUE_BYTES {
                        p.add(
                            &path.key("bandwidth").key(key),
                            format!("must be at most 1GiB, got {v}"),
                        );
                    }
                }
            }
        }
        if self.action == A::Bandwidth && self.direction == Direction::Both {
            // Allowed: shapes egress and ingress separately.
        }
        for (i, t) in self.external_targets.iter().enumerate() {
            if let Err(e) = t.parse::<Cidr>() {
                p.add(&path.key("externalTargets").index(i), e);
            }
        }
        for (i, port) in self.ports.iter().enumerate() {
            if *port == 0 {
                p.add(&path.key("ports").index(i), "must be 1..=65535");
            }
        }
        if !self.ports.is_empty()
            && self.protocols.contains(&Protocol::Icmp)
            && self.protocols.len() == 1
        {
            p.add(
                &path.key("ports"),
                "ICMP has no ports: remove ports or add tcp/udp to protocols",
            );
        }
        if let Some(dev) = &self.device {
            if dev.is_empty()
                || dev.len() > 15
                || dev.contains('/')
                || dev.contains(char::is_whitespace)
            {
                p.add(
                    &path.key("device"),
                    format!(
                        "`{}` is not a valid interface name (1..=15 characters, no `/` or spaces)",
                        crate::units::clip(dev)
                    ),
                );
            }
        }
    }
}

pub fn action_name(a: NetworkAction) -> &'static str {
    match a {
        NetworkAction::Loss => "loss",
        NetworkAction::Delay => "delay",
        NetworkAction::Duplicate => "duplicate",
        NetworkAction::Corrupt => "corrupt",
        NetworkAction::Partition => "partition",
        NetworkAction::Bandwidth => "bandwidth",
        NetworkAction::Netem => "netem",
    }
}
