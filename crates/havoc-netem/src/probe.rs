//! Run-time detection of the in-kernel delay backend.
//!
//! Kernel configs lie about what loads (KERNEL.md), so the only trustworthy test is to try: add
//! a netem qdisc on a throwaway IFB device inside the namespace and remove the device again.

use havoc_sys::netns::NetNs;

use crate::cmd;

/// True if a `netem` qdisc can be created in `netns`. The integrator uses it to choose between
/// netem and the userspace [`crate::delay::DelayEngine`]. Leaves nothing behind.
pub fn netem_available(netns: &NetNs) -> bool {
    let name = format!("hvprb{}", std::process::id() % 1_000_000);
    let created = cmd::run(netns, "ip", &["link", "add", &name, "type", "ifb"]).is_ok();
    if !created {
        tracing::debug!("netem probe: could not create an IFB device; assuming no netem");
        return false;
    }
    let ok = cmd::run(
        netns,
        "tc",
        &[
            "qdisc", "add", "dev", &name, "root", "netem", "delay", "1ms",
        ],
    )
    .is_ok();
    if let Err(e) = cmd::run(netns, "ip", &["link", "del", "dev", &name]) {
        tracing::warn!(error = %e, device = %name, "netem probe: could not delete its IFB device");
    }
    ok
}
