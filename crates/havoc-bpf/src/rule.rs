//! The rule model: plain data describing which packets a rule matches and what it does to them,
//! plus its validation and its byte encoding into a slot of the BPF rule table.
//!
//! Probabilities are given as percentages (`f64` in `0..=100`, Chaos Mesh style) and converted
//! here to `u32` fractions of 2^32, the unit the datapath compares `bpf_get_prandom_u32()` with.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

/// Maximum number of IPv4 CIDRs a rule can match on.
pub const MAX_V4_CIDRS: usize = 4;
/// Maximum number of IPv6 CIDRs a rule can match on.
pub const MAX_V6_CIDRS: usize = 2;
/// Maximum number of ports in a [`PortFilter::List`].
pub const MAX_PORTS: usize = 4;
/// Size in bytes of one encoded rule (`struct havoc_rule` in `bpf/rules.bpf.c`).
pub(crate) const RULE_SIZE: usize = 144;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RuleError {
    #[error("{field} must be a percentage between 0 and 100, got {value}")]
    Percent { field: &'static str, value: f64 },
    #[error("too many IPv4 CIDRs: {count} (at most {MAX_V4_CIDRS})")]
    TooManyV4 { count: usize },
    #[error("too many IPv6 CIDRs: {count} (at most {MAX_V6_CIDRS})")]
    TooManyV6 { count: usize },
    #[error("port list must have 1 to {MAX_PORTS} ports, got {count}")]
    PortCount { count: usize },
    #[error("port range {lo}-{hi} is empty or starts at 0")]
    PortRange { lo: u16, hi: u16 },
    #[error("invalid CIDR {input:?}: expected ADDRESS or ADDRESS/PREFIX_LEN")]
    Cidr { input: String },
}

/// An IPv4 or IPv6 network, e.g. `10.0.0.0/8` or `fd00::/64`. Host bits are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    /// A network; fails if `prefix_len` is longer than the address.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, RuleError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(RuleError::Cidr {
                input: format!("{addr}/{prefix_len}"),
            });
        }
        Ok(Self { addr, prefix_len })
    }

    /// A single host.
    pub fn host(addr: IpAddr) -> Self {
        let prefix_len = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, prefix_len }
    }

    fn v4_bytes(addr: Ipv4Addr, prefix_len: u8) -> ([u8; 4], [u8; 4]) {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0);
        let net = u32::from(addr) & mask;
        (net.to_be_bytes(), mask.to_be_bytes())
    }

    fn v6_bytes(addr: Ipv6Addr, prefix_len: u8) -> ([u8; 16], [u8; 16]) {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(prefix_len))
            .unwrap_or(0);
        let net = u128::from(addr) & mask;
        (net.to_be_bytes(), mask.to_be_bytes())
    }
}

impl FromStr for Cidr {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || RuleError::Cidr {
            input: s.to_owned(),
        };
        match s.split_once('/') {
            None => s.parse::<IpAddr>().map(Self::host).map_err(|_| err()),
            Some((a, l)) => {
                let addr = a.parse::<IpAddr>().map_err(|_| err())?;
                let len = l.parse::<u8>().map_err(|_| err())?;
                Self::new(addr, len).map_err(|_| err())
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Which address of a packet the rule's CIDRs are compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddrSide {
    /// The remote peer: the source on ingress, the destination on egress.
    #[default]
    Remote,
    Source,
    Destination,
    Either,
}

/// Which port of a packet the rule's port filter is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortSide {
    #[default]
    Destination,
    Source,
    Either,
}

/// Port filter. Packets without ports (ICMP, fragments) never match a port filter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PortFilter {
    #[default]
    Any,
    /// 1 to [`MAX_PORTS`] ports.
    List(Vec<u16>),
    /// Inclusive range, `1 <= lo <= hi`.
    Range(u16, u16),
}

/// Protocol filter; all `false` means any protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Protocols {
    pub tcp: bool,
    pub udp: bool,
    pub icmp: bool,
    pub icmpv6: bool,
    /// Any other IP protocol, including IPv6 packets with extension headers.
    pub other: bool,
}

impl Protocols {
    /// Any protocol.
    pub const ANY: Self = Self {
        tcp: false,
        udp: false,
        icmp: false,
        icmpv6: false,
        other: false,
    };
    pub const TCP: Self = Self {
        tcp: true,
        ..Self::ANY
    };
    pub const UDP: Self = Self {
        udp: true,
        ..Self::ANY
    };

    fn mask(self) -> u8 {
        u8::from(self.tcp)
            | u8::from(self.udp) << 1
            | u8::from(self.icmp) << 2
            | u8::from(self.icmpv6) << 3
            | u8::from(self.other) << 4
    }
}

/// Which packets a rule applies to. The default matches every IPv4/IPv6 packet (non-IP traffic
/// such as ARP is never touched).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    /// Remote networks; empty = any address. An IPv6 packet never matches a rule that only lists
    /// IPv4 networks, and vice versa.
    pub cidrs: Vec<Cidr>,
    pub addr_side: AddrSide,
    pub ports: PortFilter,
    pub port_side: PortSide,
    pub protocols: Protocols,
}

/// What "corrupt" means for the L4 checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChecksumMode {
    /// Fix the checksum: the application receives valid-checksum garbage.
    #[default]
    Keep,
    /// Leave the checksum wrong: the receiving stack drops the packet (UdpInCsumErrors, TCP
    /// retransmits). See the crate docs for the CHECKSUM_PARTIAL caveat on veth.
    Break,
}

/// What a rule does to the packets it matches. Percentages are `0..=100`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Random loss, optionally correlated like netem: `next = (1-ρ)·rand + ρ·last`, lost when
    /// `next < percent`. As with netem (and so Chaos Mesh), a correlation lowers the effective
    /// rate for rates below 50 %: 25 % with ρ = 50 % measured ~6 % (the averaged values cluster
    /// around 1/2). Without correlation the rate is exact.
    Loss { percent: f64, correlation: f64 },
    /// Gilbert–Elliott loss with netem's four parameters: `p` (good→bad), `r` (bad→good),
    /// `one_minus_h` (loss probability in the bad state), `one_minus_k` (in the good state).
    GilbertElliott {
        p: f64,
        r: f64,
        one_minus_h: f64,
        one_minus_k: f64,
    },
    /// Flip one random bit in the first 64 bytes of the L4 payload.
    Corrupt {
        percent: f64,
        checksum: ChecksumMode,
    },
    /// Send a copy of the packet (the copy is not subject to further rules).
    Duplicate { percent: f64 },
    /// Drop every matching packet.
    Partition,
}

/// A fault rule: plain data, validated and encoded by [`crate::Datapath::add_rule`].
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub filter: Filter,
    pub action: Action,
    /// The rule becomes inert this long after it is added (or last renewed); `None` = never.
    pub lease: Option<Duration>,
}

impl Rule {
    /// A rule matching every IP packet, without a lease.
    pub fn new(action: Action) -> Self {
        Self {
            filter: Filter::default(),
            action,
            lease: None,
        }
    }

    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }
}

/// Converts a percentage to a fraction of 2^32 (`u32::MAX` means "always").
pub fn percent_to_prob(field: &'static str, value: f64) -> Result<u32, RuleError> {
    if !value.is_finite() || !(0.0..=100.0).contains(&value) {
        return Err(RuleError::Percent { field, value });
    }
    if value >= 100.0 {
        return Ok(u32::MAX);
    }
    // value/100 * 2^32 < 2^32, so the cast cannot overflow.
    Ok((value / 100.0 * 4_294_967_296.0)
        .round()
        .min(f64::from(u32::MAX)) as u32)
}

// Constants shared with bpf/rules.bpf.c.
const ACT_LOSS: u8 = 1;
const ACT_LOSS_GE: u8 = 2;
const ACT_CORRUPT: u8 = 3;
const ACT_DUPLICATE: u8 = 4;
const ACT_PARTITION: u8 = 5;
const SIDE_SRC: u8 = 0;
const SIDE_DST: u8 = 1;
const SIDE_EITHER: u8 = 2;

/// Offsets in `struct havoc_rule`.
mod off {
    pub const GEN: usize = 0;
    pub const ACTION: usize = 4;
    pub const ADDR_SIDE: usize = 5;
    pub const PORT_SIDE: usize = 6;
    pub const PROTO_MASK: usize = 7;
    pub const EXPIRY: usize = 8;
    pub const N_V4: usize = 16;
    pub const N_V6: usize = 17;
    pub const N_PORTS: usize = 18;
    pub const CSUM_MODE: usize = 19;
    pub const PORT_LO: usize = 20;
    pub const PORT_HI: usize = 22;
    pub const PORTS: usize = 24;
    pub const P: usize = 32;
    pub const V4: usize = 48;
    pub const V6: usize = 80;
}

/// A validated rule in the datapath's encoding, without generation and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encoded([u8; RULE_SIZE]);

impl Encoded {
    /// The slot value with `gen` (0 = inactive) and absolute expiry (monotonic ns, 0 = never).
    pub(crate) fn with(&self, gen: u32, expiry_ns: u64) -> [u8; RULE_SIZE] {
        let mut b = self.0;
        b[off::GEN..off::GEN + 4].copy_from_slice(&gen.to_ne_bytes());
        b[off::EXPIRY..off::EXPIRY + 8].copy_from_slice(&expiry_ns.to_ne_bytes());
        b
    }
}

/// Validates `rule` and encodes it for a datapath attached in direction `ingress`.
pub(crate) fn encode(rule: &Rule, ingress: bool) -> Result<Encoded, RuleError> {
    let mut b = [0u8; RULE_SIZE];
    let f = &rule.filter;

    let (v4, v6): (Vec<&Cidr>, Vec<&Cidr>) = f.cidrs.iter().partition(|c| c.addr.is_ipv4());
    if v4.len() > MAX_V4_CIDRS {
        return Err(RuleError::TooManyV4 { count: v4.len() });
    }
    if v6.len() > MAX_V6_CIDRS {
        return Err(RuleError::TooManyV6 { count: v6.len() });
    }
    for (i, c) in v4.iter().enumerate() {
        let IpAddr::V4(a) = c.addr else {
            unreachable!("partitioned by family")
        };
        let (net, mask) = Cidr::v4_bytes(a, c.prefix_len.min(32));
        let o = off::V4 + i * 8;
        b[o..o + 4].copy_from_slice(&net);
        b[o + 4..o + 8].copy_from_slice(&mask);
    }
    for (i, c) in v6.iter().enumerate() {
        let IpAddr::V6(a) = c.addr else {
            unreachable!("partitioned by family")
        };
        let (net, mask) = Cidr::v6_bytes(a, c.prefix_len.min(128));
        let o = off::V6 + i * 32;
        b[o..o + 16].copy_from_slice(&net);
        b[o + 16..o + 32].copy_from_slice(&mask);
    }
    b[off::N_V4] = v4.len() as u8;
    b[off::N_V6] = v6.len() as u8;
    b[off::ADDR_SIDE] = match (f.addr_side, ingress) {
        (AddrSide::Remote, true) | (AddrSide::Source, _) => SIDE_SRC,
        (AddrSide::Remote, false) | (AddrSide::Destination, _) => SIDE_DST,
        (AddrSide::Either, _) => SIDE_EITHER,
    };

    match &f.ports {
        PortFilter::Any => {}
        PortFilter::List(ports) => {
            if ports.is_empty() || ports.len() > MAX_PORTS {
                return Err(RuleError::PortCount { count: ports.len() });
            }
            b[off::N_PORTS] = ports.len() as u8;
            for (i, p) in ports.iter().enumerate() {
                let o = off::PORTS + i * 2;
                b[o..o + 2].copy_from_slice(&p.to_ne_bytes());
            }
        }
        &PortFilter::Range(lo, hi) => {
            if lo == 0 || lo > hi {
                return Err(RuleError::PortRange { lo, hi });
            }
            b[off::PORT_LO..off::PORT_LO + 2].copy_from_slice(&lo.to_ne_bytes());
            b[off::PORT_HI..off::PORT_HI + 2].copy_from_slice(&hi.to_ne_bytes());
        }
    }
    b[off::PORT_SIDE] = match f.port_side {
        PortSide::Source => SIDE_SRC,
        PortSide::Destination => SIDE_DST,
        PortSide::Either => SIDE_EITHER,
    };
    b[off::PROTO_MASK] = f.protocols.mask();

    let (action, p, csum): (u8, [u32; 4], u8) = match rule.action {
        Action::Loss {
            percent,
            correlation,
        } => (
            ACT_LOSS,
            [percent_to_prob("loss", percent)?, corr(correlation)?, 0, 0],
            0,
        ),
        Action::GilbertElliott {
            p,
            r,
            one_minus_h,
            one_minus_k,
        } => (
            ACT_LOSS_GE,
            [
                percent_to_prob("p", p)?,
                percent_to_prob("r", r)?,
                percent_to_prob("1-h", one_minus_h)?,
                percent_to_prob("1-k", one_minus_k)?,
            ],
            0,
        ),
        Action::Corrupt { percent, checksum } => (
            ACT_CORRUPT,
            [percent_to_prob("corrupt", percent)?, 0, 0, 0],
            u8::from(checksum == ChecksumMode::Break),
        ),
        Action::Duplicate { percent } => (
            ACT_DUPLICATE,
            [percent_to_prob("duplicate", percent)?, 0, 0, 0],
            0,
        ),
        Action::Partition => (ACT_PARTITION, [0; 4], 0),
    };
    b[off::ACTION] = action;
    b[off::CSUM_MODE] = csum;
    for (i, v) in p.iter().enumerate() {
        let o = off::P + i * 4;
        b[o..o + 4].copy_from_slice(&v.to_ne_bytes());
    }
    Ok(Encoded(b))
}

/// Correlation ρ as a fraction of 2^32, capped below 1 (ρ = 1 would freeze the generator).
fn corr(percent: f64) -> Result<u32, RuleError> {
    percent_to_prob("correlation", percent).map(|v| v.min(u32::MAX - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_conversion_is_exact_at_the_ends() {
        assert_eq!(percent_to_prob("x", 0.0), Ok(0));
        assert_eq!(percent_to_prob("x", 100.0), Ok(u32::MAX));
        assert_eq!(percent_to_prob("x", 50.0), Ok(1 << 31));
        assert!(percent_to_prob("x", 100.5).is_err());
        assert!(percent_to_prob("x", f64::NAN).is_err());
        assert!(percent_to_prob("x", -1.0).is_err());
    }

    #[test]
    fn cidr_parses_and_masks_host_bits() {
        let c: Cidr = "10.1.2.3/8".parse().expect("parse cidr");
        assert_eq!(
            Cidr::v4_bytes(Ipv4Addr::new(10, 1, 2, 3), c.prefix_len).0,
            [10, 0, 0, 0]
        );
        assert_eq!(Cidr::v4_bytes(Ipv4Addr::new(10, 1, 2, 3), 0).1, [0; 4]);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
        let h: Cidr = "fd00::1".parse().expect("parse host");
        assert_eq!(h.prefix_len, 128);
    }

    #[test]
    fn encoding_places_fields_at_the_c_offsets() {
        let rule = Rule {
            filter: Filter {
                cidrs: vec![
                    "10.0.0.0/8".parse().expect("cidr"),
                    "fd00::/16".parse().expect("cidr6"),
                ],
                ports: PortFilter::List(vec![9000, 9001]),
                protocols: Protocols::UDP,
                ..Filter::default()
            },
            action: Action::Loss {
                percent: 50.0,
                correlation: 0.0,
            },
            lease: None,
        };
        let e = encode(&rule, true).expect("encode").with(7, 99);
        assert_eq!(u32::from_ne_bytes(e[0..4].try_into().expect("4 bytes")), 7);
        assert_eq!(
            u64::from_ne_bytes(e[8..16].try_into().expect("8 bytes")),
            99
        );
        assert_eq!(e[off::ACTION], ACT_LOSS);
        assert_eq!(e[off::ADDR_SIDE], SIDE_SRC);
        assert_eq!(e[off::PROTO_MASK], 2);
        assert_eq!((e[off::N_V4], e[off::N_V6], e[off::N_PORTS]), (1, 1, 2));
        assert_eq!(u16::from_ne_bytes([e[26], e[27]]), 9001);
        assert_eq!(
            u32::from_ne_bytes(e[32..36].try_into().expect("4 bytes")),
            1 << 31
        );
        assert_eq!(&e[48..56], &[10, 0, 0, 0, 255, 0, 0, 0]);
        assert_eq!(&e[80..82], &[0xfd, 0]);
        assert_eq!(&e[96..99], &[0xff, 0xff, 0]);
        assert_eq!(
            encode(&rule, false).expect("encode").0[off::ADDR_SIDE],
            SIDE_DST
        );
    }

    #[test]
    fn invalid_rules_are_rejected() {
        let many = Filter {
            ports: PortFilter::List(vec![1, 2, 3, 4, 5]),
            ..Filter::default()
        };
        let r = Rule::new(Action::Partition).with_filter(many);
        assert_eq!(encode(&r, true), Err(RuleError::PortCount { count: 5 }));
        let range = Filter {
            ports: PortFilter::Range(10, 5),
            ..Filter::default()
        };
        let r = Rule::new(Action::Partition).with_filter(range);
        assert_eq!(
            encode(&r, true),
            Err(RuleError::PortRange { lo: 10, hi: 5 })
        );
        let r = Rule::new(Action::Duplicate { percent: 101.0 });
        assert!(matches!(encode(&r, true), Err(RuleError::Percent { .. })));
    }
}
