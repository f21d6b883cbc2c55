//! `havoc-netem`: Havoc's network shaping backends that do not need eBPF.
//!
//! - [`delay`]: a userspace delay engine on NFQUEUE (delay, jitter, correlation, reordering with
//!   netem's semantics), for kernels without netem (like the one CI runs on).
//! - [`bandwidth`]: TBF rate limits on a device's egress, or on its ingress through an IFB.
//! - [`intercept`]: packets a namespace sends, shown to a handler that passes, holds or answers
//!   them (DNS chaos).
//! - [`probe`]: whether netem exists, so the caller can report which delay backend ran.
//!
//! Every fault returns a guard that undoes it on `stop()`/`recover()` or drop, and every object
//! this crate creates carries a recognisable name (`HAVOC-<tag>` chains, `havoc:<tag>` comments,
//! `hvifb*` devices, qdisc handle `fa17:`), so `leftovers`/`remove_leftovers` can clean up after
//! a crashed process.

/// Where live holders of delay rules and shaping keep their shares ([`havoc_sys::share`]): a
/// sweep without a journal (`havoc recover`) leaves alone what a live run or agent still holds.
pub const OWNERS_DIR: &str = "/run/havoc/owners";

/// The share a live shaping guard holds in a namespace.
pub(crate) fn shaping_owner_name(netns: &havoc_sys::netns::NetNs) -> Option<String> {
    netns.inode().ok().map(|i| format!("shape-{i}"))
}

pub mod bandwidth;
pub mod cmd;
pub mod delay;
pub mod intercept;
pub mod iptables;
pub mod lock;
mod model;
mod nfqueue;
pub mod probe;

pub use bandwidth::{
    Bandwidth, BandwidthConfig, BandwidthError, BandwidthGuard, ShapeDirection, ShapeStats,
};
pub use delay::{
    DelayConfig, DelayEngine, DelayError, DelayStats, Direction, PacketFilter, PortMatch, Protocol,
    Reorder,
};
pub use iptables::{Cidr, DelayLeftover, Removed};
pub use nfqueue::NfqError;
pub use probe::netem_available;
