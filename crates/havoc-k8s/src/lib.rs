//! `havoc-k8s`: Havoc's Kubernetes object model.
//!
//! The chaos custom resources (`PodChaos`, `NetworkChaos`, `StressChaos`, `TimeChaos`,
//! `SyscallChaos`, `IOChaos`, `DNSChaos`, `HTTPChaos` in `havoc.dev/v1alpha1`),
//! the Chaos Mesh pod selector and its seeded selection, the namespace policy, the compact status
//! records, and the conversion of Chaos Mesh manifests. Everything here is pure (no I/O, no async),
//! so the operator, the CLI (`havoc crds`, `havoc validate`) and tests share one definition.

mod chaos_mesh;
pub mod convert;
pub mod crd;
pub mod policy;
pub mod program_convert;
pub mod schedule_crd;
pub mod selector;
pub mod status;
pub mod statuscheck_crd;
pub mod workflow_crd;

#[cfg(test)]
mod fixtures;

use std::time::Duration;

pub use convert::{convert, validate_manifest, Manifest};
pub use crd::{
    crds, crds_yaml, DNSChaos, DNSChaosSpec, HTTPChaos, HTTPChaosSpec, IOChaos, IOChaosSpec,
    NetworkChaos, NetworkChaosSpec, NetworkTarget, Peer, PeerHost, Peers, PodAction, PodChaos,
    PodChaosSpec, StressChaos, StressChaosSpec, SyscallChaos, SyscallChaosSpec, TimeChaos,
    TimeChaosSpec,
};
pub use policy::NamespacePolicy;
pub use selector::{select, Mode, PodSelector, Selection, SelectionInput};
pub use status::{ChaosStatus, Record, RecordPhase};

/// What the operator does for a chaos object; one variant per way of acting.
// Built once per reconcile; the signature is shared with the operator, so no boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ChaosAction {
    /// Delete the pod, with this grace period (the pod's own when `None`).
    PodKill { grace_period_seconds: Option<i64> },
    /// Make the pod's containers fail (swap their images for one that cannot start) until recovery.
    PodFailure,
    /// SIGKILL to the init process of the named containers (all when empty), done by the agent.
    ContainerKill { container_names: Vec<String> },
    /// A node-level fault done by the agent in the pod's containers (network ns / cgroup / processes).
    Agent {
        fault: havoc_spec::FaultSpec,
        container_names: Vec<String>,
    },
}

/// Implemented by every chaos kind, so the controller is generic and later kinds
/// (IOChaos, TimeChaos, DNSChaos, HTTPChaos) slot in without reshaping.
pub trait ChaosObject:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Which pods are candidates.
    fn selector(&self) -> &selector::PodSelector;
    /// How many of the candidates are hit; carries its value.
    fn mode(&self) -> selector::Mode;
    /// How long the fault lasts; `None` for instant actions (pod-kill, container-kill) or "until deleted".
    fn duration(&self) -> Option<Duration>;
    /// spec.seed, else derived from metadata.uid (stable hash), so selection is reproducible.
    fn seed(&self) -> u64;
    /// What to do to each selected pod.
    fn action(&self) -> ChaosAction;
    /// The status subresource, if any was written.
    fn status(&self) -> Option<&status::ChaosStatus>;
    /// The status subresource, to update before a status patch.
    fn status_mut(&mut self) -> &mut Option<status::ChaosStatus>;
    /// Short text for printer columns / events: `pod-kill`, `loss 10%`.
    fn action_name(&self) -> String;
    /// Checks the spec with the same rules as the CRD's CEL validations, with field paths
    /// relative to the object (`spec.value`).
    fn validate(&self) -> Result<(), havoc_spec::SpecErrors>;
    /// What must be looked up before injecting (a NetworkChaos's `target` pods and
    /// `externalTargets` host names); `None` when [`ChaosObject::action`] is complete.
    fn lookups(&self) -> Option<crd::Peers> {
        None
    }
    /// The action once the lookups gave these peer addresses (`lookups` is `Some`).
    fn action_with_peers(&self, _peers: &[havoc_spec::network::Cidr]) -> ChaosAction {
        self.action()
    }
}

/// A stable 64-bit seed from a string (FNV-1a), e.g. an object's uid.
pub fn stable_seed(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
