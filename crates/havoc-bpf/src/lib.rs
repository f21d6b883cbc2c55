//! Havoc's eBPF network-fault datapath.
//!
//! One TC classifier (`bpf/rules.bpf.c`, program `havoc_rules`) is attached per interface and
//! direction through a TCX link owned by a [`Datapath`]. It walks a table of up to
//! [`MAX_RULES`] [`Rule`]s in slot order; each rule filters on remote CIDRs, ports and protocol
//! and applies loss (optionally correlated), Gilbert–Elliott loss, corruption, duplication or a
//! partition, with per-CPU counters and an optional lease after which it becomes inert.
//!
//! Findings on the kernels Havoc runs on (6.18, TCX) that shape the defaults:
//! - On **egress**, `TC_ACT_SHOT` is reported to the sender (UDP `sendto` returns ENOBUFS).
//!   `TC_ACT_STOLEN` is *not* a silent drop under TCX: `tcx_action_code()` turns it into
//!   `TCX_NEXT` and the packet is sent. A redirect to ifindex 0 is freed by `skb_do_redirect()`
//!   while `sch_handle_egress()` reports success, so egress datapaths use
//!   [`DropVerdict::RedirectVoid`] and drops are invisible to the sender.
//! - **Corruption** with [`ChecksumMode::Break`] leaves a wrong L4 checksum, but a receiver only
//!   checks it when the packet is not `CHECKSUM_PARTIAL`. Locally generated packets crossing a
//!   veth stay `CHECKSUM_PARTIAL` end to end (no device ever computes the checksum), so on veth
//!   "break" only causes `UdpInCsumErrors` when the *sending* device has tx checksum offload
//!   off (`ethtool -K DEV tx off`). No BPF helper can clear `CHECKSUM_PARTIAL`.

mod datapath;
mod leftover;
mod rule;

pub use datapath::{
    prewarm, BpfError, Counters, Datapath, Direction, DropVerdict, RuleId, MAX_RULES, NAME_PREFIX,
    PROGRAM_NAME,
};
pub use leftover::{leftover_programs, LeftoverProgram};
pub use rule::{
    percent_to_prob, Action, AddrSide, ChecksumMode, Cidr, Filter, PortFilter, PortSide, Protocols,
    Rule, RuleError, MAX_PORTS, MAX_V4_CIDRS, MAX_V6_CIDRS,
};
