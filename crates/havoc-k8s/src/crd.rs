//! The chaos custom resources: `PodChaos`, `NetworkChaos`, `StressChaos`, `TimeChaos`,
//! `SyscallChaos` (Havoc's own), `IOChaos`, `DNSChaos` and `HTTPChaos` in `havoc.dev/v1alpha1`.
//!
//! Field names follow Chaos Mesh v1alpha1, so its manifests need only a new `apiVersion`.
//! The agent-held kinds reuse host mode's fault parameter structs from `havoc-spec`
//! (`loss`, `delay`, `stressors`...), so a fault means the same thing on a host and in a cluster;
//! only the selector differs. Cross-field rules are CEL `x-kubernetes-validations` in the CRD
//! (checked by the API server at `kubectl apply`) and the same rules in Rust (`validate_spec`
//! methods), used by `havoc validate` and by the operator before acting.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use havoc_spec::errno::Errno;
use havoc_spec::error::Problems;
use havoc_spec::io::{AttrOverride, IoAction, IoMethod, Mistake, WeightedErrno};
use havoc_spec::network::{
    BandwidthSpec, CorruptSpec, DelaySpec, Direction, DuplicateSpec, GilbertElliott, LossModel,
    LossSpec, NetworkAction, Protocol,
};
use havoc_spec::selector::validate_mode;
use havoc_spec::stress::Stressors;
use havoc_spec::time::{ClockId, TimeOffset};
use havoc_spec::units::{HumanDuration, Percent};
use havoc_spec::{FaultSpec, FieldPath, SpecError, SpecErrors};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::selector::{Mode, PodSelector};
use crate::status::ChaosStatus;
use crate::{stable_seed, ChaosAction, ChaosObject};

/// The API group of Havoc's resources.
pub const GROUP: &str = "havoc.dev";
/// The version of Havoc's resources.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of Havoc's resources.
pub const API_VERSION: &str = "havoc.dev/v1alpha1";

/// The longest duration a chaos object may ask for.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a PodChaos does to each selected pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PodAction {
    /// Delete the pod (its controller recreates it).
    PodKill,
    /// Make the pod's containers fail to run for `duration`.
    PodFailure,
    /// Kill the named containers (SIGKILL to their init process); the kubelet restarts them.
    ContainerKill,
}

impl PodAction {
    /// The manifest spelling: `pod-kill`.
    pub fn name(self) -> &'static str {
        match self {
            PodAction::PodKill => "pod-kill",
            PodAction::PodFailure => "pod-failure",
            PodAction::ContainerKill => "container-kill",
        }
    }
}

/// Kills pods or containers, or makes pods fail, in the selected pods.
// clippy reads the repeated `type_ = "string"` of printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "havoc.dev",
    version = "v1alpha1",
    kind = "PodChaos",
    plural = "podchaos",
    namespaced,
    status = "ChaosStatus",
    derive = "PartialEq",
    shortname = "hpc",
    category = "havoc",
    category = "chaos",
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "Kills pods or containers, or makes pods fail (havoc.dev)."
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(RULE_VALUE_REQUIRED).message(MSG_VALUE_REQUIRED),
    validation = Rule::new(RULE_VALUE_UNUSED).message(MSG_VALUE_UNUSED),
    validation = Rule::new(RULE_VALUE_FIXED).message(MSG_VALUE_FIXED),
    validation = Rule::new(RULE_VALUE_PERCENT).message(MSG_VALUE_PERCENT),
    validation = Rule::new(RULE_DURATION).message(MSG_DURATION),
    validation = Rule::new("self.action == 'pod-kill' || !has(self.gracePeriod)")
        .message("gracePeriod only applies to action pod-kill"),
    validation = Rule::new("self.action != 'container-kill' || (has(self.containerNames) && size(self.containerNames) > 0)")
        .message("containerNames is required with action container-kill: name the containers to kill"),
    validation = Rule::new("self.action == 'container-kill' || !has(self.containerNames) || size(self.containerNames) == 0")
        .message("containerNames only applies to action container-kill"),
)]
pub struct PodChaosSpec {
    /// `pod-kill`, `pod-failure` or `container-kill`.
    pub action: PodAction,
    /// Which pods are candidates.
    pub selector: PodSelector,
    /// How many candidates are hit: `one`, `all`, `fixed`, `fixed-percent`, `random-max-percent`.
    #[serde(default)]
    pub mode: havoc_spec::Mode,
    /// The count (`fixed`) or percentage (`fixed-percent`, `random-max-percent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub value: Option<String>,
    /// How long the fault lasts (pod-failure); pod-kill and container-kill act once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// Seed of the random choice of pods; default: derived from the object's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Seconds the pod has to stop (pod-kill only); default: the pod's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub grace_period: Option<i64>,
    /// Containers to kill (container-kill, required there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_names: Vec<String>,
}

/// Network faults (loss, delay, duplication, corruption, partition, bandwidth) in the selected pods.
// clippy reads the repeated `type_ = "string"` of printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "havoc.dev",
    version = "v1alpha1",
    kind = "NetworkChaos",
    plural = "networkchaos",
    namespaced,
    status = "ChaosStatus",
    derive = "PartialEq",
    shortname = "hnc",
    category = "havoc",
    category = "chaos",
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "Network faults in the selected pods' network namespaces (havoc.dev)."
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(RULE_VALUE_REQUIRED).message(MSG_VALUE_REQUIRED),
    validation = Rule::new(RULE_VALUE_UNUSED).message(MSG_VALUE_UNUSED),
    validation = Rule::new(RULE_VALUE_FIXED).message(MSG_VALUE_FIXED),
    validation = Rule::new(RULE_VALUE_PERCENT).message(MSG_VALUE_PERCENT),
    validation = Rule::new(RULE_DURATION).message(MSG_DURATION),
    validation = Rule::new("!has(self.target) || !has(self.target.mode) || self.target.mode in ['one', 'all'] || has(self.target.value)")
        .message("target.value is required with target modes fixed (a count), fixed-percent and random-max-percent (a percentage)"),
    validation = Rule::new("self.action != 'loss' || has(self.loss) || has(self.gilbertElliott)")
        .message("action loss needs loss (or lossModel gilbertElliott with gilbertElliott)"),
    validation = Rule::new("self.action != 'delay' || has(self.delay)")
        .message("action delay needs delay"),
    validation = Rule::new("self.action != 'duplicate' || has(self.duplicate)")
        .message("action duplicate needs duplicate"),
    validation = Rule::new("self.action != 'corrupt' || has(self.corrupt)")
        .message("action corrupt needs corrupt"),
    validation = Rule::new("self.action != 'bandwidth' || has(self.bandwidth)")
        .message("action bandwidth needs bandwidth"),
    validation = Rule::new("self.action != 'netem' || has(self.loss) || has(self.gilbertElliott) || has(self.delay) || has(self.duplicate) || has(self.corrupt) || has(self.bandwidth)")
        .message("action netem needs at least one of loss, delay, duplicate, corrupt, bandwidth"),
    validation = Rule::new("self.action in ['loss', 'netem'] || !(has(self.loss) || has(self.gilbertElliott))")
        .message("loss only applies to actions loss and netem"),
    validation = Rule::new("self.action in ['delay', 'netem'] || !has(self.delay)")
        .message("delay only applies to actions delay and netem"),
    validation = Rule::new("self.action in ['duplicate', 'netem'] || !has(self.duplicate)")
        .message("duplicate only applies to actions duplicate and netem"),
    validation = Rule::new("self.action in ['corrupt', 'netem'] || !has(self.corrupt)")
        .message("corrupt only applies to actions corrupt and netem"),
    validation = Rule::new("self.action in ['bandwidth', 'netem'] || !has(self.bandwidth)")
        .message("bandwidth only applies to actions bandwidth and netem"),
)]
pub struct NetworkChaosSpec {
    /// `loss`, `delay`, `duplicate`, `corrupt`, `partition`, `bandwidth`, or `netem` (several at once).
    pub action: NetworkAction,
    /// Which pods are candidates.
    pub selector: PodSelector,
    /// How many candidates are hit: `one`, `all`, `fixed`, `fixed-percent`, `random-max-percent`.
    #[serde(default)]
    pub mode: havoc_spec::Mode,
    /// The count (`fixed`) or percentage (`fixed-percent`, `random-max-percent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub value: Option<String>,
    /// How long the fault lasts; default: until the object is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// Seed of the random choice of pods; default: derived from the object's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Which packets, seen from the selected pod: `to` (sent to the peers), `from` (received
    /// from the peers), `both`. The peers are the `target` pods and `externalTargets`; without
    /// either, all traffic.
    #[serde(default)]
    pub direction: Direction,
    /// The pods on the other side of the traffic (Chaos Mesh's `target`): only packets between
    /// the selected pods and these are hit. Their addresses are read when the fault is injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<NetworkTarget>,
    /// Peers outside the cluster: IP addresses, CIDRs or host names, each with an optional
    /// `:port` (`10.0.0.0/8`, `db.example.com:5432`, `[fd00::1]:80`). Host names are resolved
    /// by the operator when it injects; the addresses are in `status.peers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(min = 1, max = 261)))]
    pub external_targets: Vec<String>,
    /// Interface inside the pod (default: every non-loopback interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Only these remote or local ports (TCP/UDP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 1)))]
    pub ports: Vec<u16>,
    /// Only these protocols: `tcp`, `udp`, `icmp`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<Protocol>,
    /// Drop packets at random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossSpec>,
    /// `bernoulli` (independent, with `loss`) or `gilbertElliott` (bursts, with `gilbertElliott`).
    #[serde(default)]
    pub loss_model: LossModel,
    /// Parameters of the Gilbert–Elliott burst loss model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gilbert_elliott: Option<GilbertElliott>,
    /// Delay packets, with jitter and optional reordering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelaySpec>,
    /// Duplicate packets at random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<DuplicateSpec>,
    /// Corrupt packets at random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<CorruptSpec>,
    /// Limit the bandwidth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<BandwidthSpec>,
}

/// CPU and memory pressure in the selected pods' containers.
// clippy reads the repeated `type_ = "string"` of printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "havoc.dev",
    version = "v1alpha1",
    kind = "StressChaos",
    plural = "stresschaos",
    namespaced,
    status = "ChaosStatus",
    derive = "PartialEq",
    shortname = "hsc",
    category = "havoc",
    category = "chaos",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Duration", type_ = "string", json_path = ".spec.duration"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "CPU and memory pressure in the selected pods' containers (havoc.dev)."
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(RULE_VALUE_REQUIRED).message(MSG_VALUE_REQUIRED),
    validation = Rule::new(RULE_VALUE_UNUSED).message(MSG_VALUE_UNUSED),
    validation = Rule::new(RULE_VALUE_FIXED).message(MSG_VALUE_FIXED),
    validation = Rule::new(RULE_VALUE_PERCENT).message(MSG_VALUE_PERCENT),
    validation = Rule::new(RULE_DURATION).message(MSG_DURATION),
    validation = Rule::new("has(self.stressors.cpu) || has(self.stressors.memory)")
        .message("give at least one stressor: stressors.cpu or stressors.memory"),
)]
pub struct StressChaosSpec {
    /// Which pods are candidates.
    pub selector: PodSelector,
    /// How many candidates are hit: `one`, `all`, `fixed`, `fixed-percent`, `random-max-percent`.
    #[serde(default)]
    pub mode: havoc_spec::Mode,
    /// The count (`fixed`) or percentage (`fixed-percent`, `random-max-percent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub value: Option<String>,
    /// How long the stress lasts; default: until the object is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// Seed of the random choice of pods; default: derived from the object's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// CPU and memory stressors (at least one).
    pub stressors: Stressors,
    /// Containers whose cgroups are stressed (default: every container of the pod).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_names: Vec<String>,
}

/// Shifts the clocks the selected containers' processes read (Chaos Mesh's TimeChaos).
// clippy reads the repeated `type_ = "string"` of printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "havoc.dev",
    version = "v1alpha1",
    kind = "TimeChaos",
    plural = "timechaos",
    namespaced,
    status = "ChaosStatus",
    derive = "PartialEq",
    shortname = "htc",
    category = "havoc",
    category = "chaos",
    printcolumn(name = "Offset", type_ = "string", json_path = ".spec.timeOffset"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "Shifts the clocks the selected containers' processes read (havoc.dev)."
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(RULE_VALUE_REQUIRED).message(MSG_VALUE_REQUIRED),
    validation = Rule::new(RULE_VALUE_UNUSED).message(MSG_VALUE_UNUSED),
    validation = Rule::new(RULE_VALUE_FIXED).message(MSG_VALUE_FIXED),
    validation = Rule::new(RULE_VALUE_PERCENT).message(MSG_VALUE_PERCENT),
    validation = Rule::new(RULE_DURATION).message(MSG_DURATION),
    validation = Rule::new(RULE_ONE_CONTAINER).message(MSG_ONE_CONTAINER),
)]
pub struct TimeChaosSpec {
    /// Which pods are candidates.
    pub selector: PodSelector,
    /// How many candidates are hit: `one`, `all`, `fixed`, `fixed-percent`, `random-max-percent`.
    #[serde(default)]
    pub mode: havoc_spec::Mode,
    /// The count (`fixed`) or percentage (`fixed-percent`, `random-max-percent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub value: Option<String>,
    /// How long the clocks stay shifted; default: until the object is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// Seed of the random choice of pods; default: derived from the object's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// How far the clocks move: `-5m`, `+2h`, `1h30m` (not zero, at most 365 days).
    #[schemars(schema_with = "time_offset_schema")]
    pub time_offset: TimeOffset,
    /// Which clocks move, by `CLOCK_*` name; default: CLOCK_REALTIME.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "clock_ids_schema")]
    pub clock_ids: Vec<ClockId>,
    /// The container whose processes are skewed (at most one name; default: the pod's first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_names: Vec<String>,
}

/// Fails or slows chosen system calls of the selected containers' processes (havoc.dev only).
// clippy reads the repeated `type_ = "string"` of printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "havoc.dev",
    version = "v1alpha1",
    kind = "SyscallChaos",
    plural = "syscallchaos",
    namespaced,
    status = "ChaosStatus",
    derive = "PartialEq",
    shortname = "hyc",
    category = "havoc",
    category = "chaos",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Errno", type_ = "string", json_path = ".spec.errno"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "Fails or slows chosen system calls of the selected containers' processes (havoc.dev)."
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(RULE_VALUE_REQUIRED).message(MSG_VALUE_REQUIRED),
    validation = Rule::new(RULE_VALUE_UNUSED).message(MSG_VALUE_UNUSED),
    validation = Rule::new(RULE_VALUE_FIXED).message(MSG_VALUE_FIXED),
    validation = Rule::new(RULE_VALUE_PERCENT).message(MSG_VALUE_PERCENT),
    validation = Rule::new(RULE_DURATION).message(MSG_DURATION),
    validation = Rule::new(RULE_ONE_CONTAINER).message(MSG_ONE_CONTAINER),
    validation = Rule::new("size(self.syscalls) > 0")
        .message("list at least one system call, e.g. [openat]"),
    validation = Rule::new("has(self.errno) || has(self.delay)")
        .message("give errno (what the call returns), delay (how long it is held), or both"),
    validation = Rule::new("!has(self.path) || self.path.startsWith('/')")
        .message("path must be absolute (start with `/`)"),
)]
pub struct SyscallChaosSpec {
    /// Which pods are candidates.
    pub selector: PodSelector,
    /// How many candidates are hit: `one`, `all`, `fixed`, `fixed-percent`, `random-max-percent`.
    #[serde(default)]
    pub mode: havoc_spec::Mode,
    /// The count (`fixed`) or percentage (`fixed-percent`, `random-max-percent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub value: Option<String>,
    /// How long the fault lasts; default: until the object is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// Seed of the random choice of pods; default: derived from the object's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The calls to fault, by x86-64 Linux name (`openat`, `connect`).
    #[schemars(length(max = 64), inner(length(min = 1, max = 32)))]
    pub syscalls: Vec<String>,
    /// What a hit call returns (a name such as `EACCES` or a number); without it a hit call is
    /// only delayed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numbers_as_text"
    )]
    #[schemars(schema_with = "errno_schema")]
    pub errno: Option<Errno>,
    /// Share of the matching calls that are hit (default `"100"`).
    #[serde(default = "hundred_percent")]
    pub percent: Percent,
    /// Hold each hit call this long first (at most 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
    /// Only calls whose path argument matches this absolute glob (`/data/**/*.db`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub path: Option<String>,
    /// The container whose processes are traced (at most one name; default: the pod's first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_names: Vec<String>,
}

fn hundred_percent() -> Percent {
    Percent(100.0)
}

/// File-system faults under a directory of the selected containers (Chaos Mesh's IOChaos).
// clippy reads the repeated `type_ = "string"` of printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "havoc.dev",
    version = "v1alpha1",
    kind = "IOChaos",
    plural = "iochaos",
    namespaced,
    status = "ChaosStatus",
    derive = "PartialEq",
    shortname = "hioc",
    category = "havoc",
    category = "chaos",
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(name = "Volume", type_ = "string", json_path = ".spec.volumePath"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "File-system faults under a directory of the selected containers (havoc.dev)."
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(RULE_VALUE_REQUIRED).message(MSG_VALUE_REQUIRED),
    validation = Rule::new(RULE_VALUE_UNUSED).message(MSG_VALUE_UNUSED),
    validation = Rule::new(RULE_VALUE_FIXED).message(MSG_VALUE_FIXED),
    validation = Rule::new(RULE_VALUE_PERCENT).message(MSG_VALUE_PERCENT),
    validation = Rule::new(RULE_DURATION).message(MSG_DURATION),
    validation = Rule::new(RULE_ONE_CONTAINER).message(MSG_ONE_CONTAINER),
    validation = Rule::new("self.volumePath.startsWith('/')")
        .message("volumePath must be an absolute directory path, e.g. /var/lib/app"),
    validation = Rule::new("self.action != 'latency' || has(self.delay)")
        .message("action latency needs delay"),
    validation = Rule::new("self.action != 'fault' || has(self.errno) || (has(self.faults) && size(self.faults) > 0)")
        .message("action fault needs errno (or weighted faults)"),
    validation = Rule::new("self.action != 'attrOverride' || has(self.attr)")
        .message("action attrOverride needs attr"),
    validation = Rule::new("self.action != 'mistake' || has(self.mistake)")
        .message("action mistake needs mistake"),
    validation = Rule::new("self.action == 'latency' || !has(self.delay)")
        .message("delay only applies to action latency"),
    validation = Rule::new("self.action == 'fault' || !(has(self.errno) || (has(self.faults) && size(self.faults) > 0))")
        .message("errno and faults only apply to action fault"),
    validation = Rule::new("self.action == 'attrOverride' || !has(self.attr)")
        .message("attr only applies to action attrOverride"),
    validation = Rule::new("self.action == 'mistake' || !has(self.mistake)")
        .message("mistake only applies to action mistake"),
)]
pub struct IOChaosSpec {
    /// `latency`, `fault`, `attrOverride` or `mistake`.
    #[schemars(schema_with = "io_action_schema")]
    pub action: IoAction,
    /// Which pods are candidates.
    pub selector: PodSelector,
    /// How many candidates are hit: `one`, `all`, `fixed`, `fixed-percent`, `random-max-percent`.
    #[serde(default)]
    pub mode: havoc_spec::Mode,
    /// The count (`fixed`) or percentage (`fixed-percent`, `random-max-percent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub value: Option<String>,
    /// How long the fault lasts; default: until the object is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// Seed of the random choice of pods; default: derived from the object's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The directory whose files are faulted, as the container sees it. Any directory (Chaos
    /// Mesh needs a mount point; a mount point works here too and means the same files).
    #[schemars(length(min = 1, max = 4096))]
    pub volume_path: String,
    /// A glob of the files affected, under `volumePath` or relative to it (`**/*.db`);
    /// default: every file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub path: Option<String>,
    /// Operations affected, by Chaos Mesh's (FUSE) names, case-insensitive; default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "io_methods_schema")]
    pub methods: Vec<IoMethod>,
    /// Percent of the matching operations affected, 1..100 (default 100).
    #[serde(default = "hundred")]
    #[schemars(range(min = 1, max = 100))]
    pub percent: u32,
    /// With `latency`: how long each affected operation waits (at most 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
    /// With `fault`: the error returned, a name (`EIO`) or a number (`5`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numbers_as_text"
    )]
    #[schemars(schema_with = "errno_schema")]
    pub errno: Option<Errno>,
    /// With `fault`: several errors, each chosen in proportion to its weight (Havoc only).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "numbers_as_text"
    )]
    #[schemars(schema_with = "io_faults_schema")]
    pub faults: Vec<WeightedErrno>,
    /// With `attrOverride`: the attributes reported instead of the real ones.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numbers_as_text"
    )]
    #[schemars(schema_with = "io_attr_schema")]
    pub attr: Option<AttrOverride>,
    /// With `mistake`: how read or written data is altered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "io_mistake_schema")]
    pub mistake: Option<Mistake>,
    /// The container whose mount namespace is faulted (at most one name; default: the pod's first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_names: Vec<String>,
}

/// Wrong or late answers to the DNS queries the selected pods send (Chaos Mesh's DNSChaos).
///
/// Queries leaving the pod's network namespace (which all its containers share) are intercepted
/// there: matching names are answered by Havoc, the others go to the pod's own server unchanged.
/// Chaos Mesh instead points the container's resolv.conf at its own DNS server; Havoc edits no
/// file, so every container of a selected pod is hit (Chaos Mesh's `containerNames` is refused).
// clippy reads the repeated `type_ = "string"` of printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "havoc.dev",
    version = "v1alpha1",
    kind = "DNSChaos",
    plural = "dnschaos",
    namespaced,
    status = "ChaosStatus",
    derive = "PartialEq",
    shortname = "hdc",
    category = "havoc",
    category = "chaos",
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "Wrong or late answers to the DNS queries of the selected pods (havoc.dev)."
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(RULE_VALUE_REQUIRED).message(MSG_VALUE_REQUIRED),
    validation = Rule::new(RULE_VALUE_UNUSED).message(MSG_VALUE_UNUSED),
    validation = Rule::new(RULE_VALUE_FIXED).message(MSG_VALUE_FIXED),
    validation = Rule::new(RULE_VALUE_PERCENT).message(MSG_VALUE_PERCENT),
    validation = Rule::new(RULE_DURATION).message(MSG_DURATION),
    validation = Rule::new("self.action != 'delay' || has(self.delay)")
        .message("action delay needs delay: how long a query is held, e.g. `200ms`"),
)]
pub struct DNSChaosSpec {
    /// `error` (SERVFAIL), `random` (a random address for A and AAAA, SERVFAIL for other
    /// types), or `delay` (the real answer, `delay` late; Havoc only).
    #[schemars(schema_with = "dns_action_schema")]
    pub action: havoc_spec::dns::DnsAction,
    /// Which pods are candidates.
    pub selector: PodSelector,
    /// How many candidates are hit: `one`, `all`, `fixed`, `fixed-percent`, `random-max-percent`.
    #[serde(default)]
    pub mode: havoc_spec::Mode,
    /// The count (`fixed`) or percentage (`fixed-percent`, `random-max-percent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub value: Option<String>,
    /// How long the fault lasts; default: until the object is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// Seed of the random choice of pods; default: derived from the object's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Names to hit (Chaos Mesh's rules: an exact name, `?` for one character, `*` only at the
    /// end); default: every name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "dns_patterns_schema")]
    pub patterns: Vec<String>,
    /// Share of the matching queries that are hit (default `"100"`; Havoc only).
    #[serde(
        default = "hundred_percent",
        skip_serializing_if = "is_hundred_percent"
    )]
    pub percent: Percent,
    /// With `delay`: how long a hit query is held; with `error`/`random`: how much later the
    /// forged answer is sent (at most 60s; Havoc only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
}

fn is_hundred_percent(p: &Percent) -> bool {
    p.0 == 100.0
}

/// Aborts, delays, rewrites or patches the HTTP requests the selected pods' servers receive, or
/// their responses (Chaos Mesh's HTTPChaos).
///
/// Connections to `port` in the pod's network namespace go through Havoc's interceptor there.
/// Chaos Mesh's `tls` (a Kubernetes secret) is refused: Havoc's agent reads no secrets.
// clippy reads the repeated `type_ = "string"` of printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "havoc.dev",
    version = "v1alpha1",
    kind = "HTTPChaos",
    plural = "httpchaos",
    namespaced,
    status = "ChaosStatus",
    derive = "PartialEq",
    shortname = "hhc",
    category = "havoc",
    category = "chaos",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target"),
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.port"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "Aborts, delays, rewrites or patches HTTP requests or responses of the selected pods' servers (havoc.dev)."
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(RULE_VALUE_REQUIRED).message(MSG_VALUE_REQUIRED),
    validation = Rule::new(RULE_VALUE_UNUSED).message(MSG_VALUE_UNUSED),
    validation = Rule::new(RULE_VALUE_FIXED).message(MSG_VALUE_FIXED),
    validation = Rule::new(RULE_VALUE_PERCENT).message(MSG_VALUE_PERCENT),
    validation = Rule::new(RULE_DURATION).message(MSG_DURATION),
    validation = Rule::new("(has(self.abort) && self.abort) || has(self.delay) || has(self.replace) || has(self.patch)")
        .message("no action: give at least one of abort: true, delay, replace, patch"),
    validation = Rule::new("!has(self.path) || self.path.startsWith('/') || self.path.startsWith('*')")
        .message("path never matches: request paths start with `/` (write e.g. `/api/*`, or `*` for every path)"),
    validation = Rule::new("self.target == 'Response' || !has(self.code)")
        .message("code selects responses by status: it needs `target: Response`"),
    validation = Rule::new("self.target == 'Response' || !has(self.response_headers)")
        .message("response_headers select responses: they need `target: Response`"),
    validation = Rule::new("self.target == 'Request' || !has(self.replace) || !has(self.replace.path)")
        .message("replace.path changes requests: it needs `target: Request`"),
    validation = Rule::new("self.target == 'Request' || !has(self.replace) || !has(self.replace.method)")
        .message("replace.method changes requests: it needs `target: Request`"),
    validation = Rule::new("self.target == 'Request' || !has(self.replace) || !has(self.replace.queries)")
        .message("replace.queries changes requests: it needs `target: Request`"),
    validation = Rule::new("self.target == 'Response' || !has(self.replace) || !has(self.replace.code)")
        .message("replace.code changes responses: it needs `target: Response`"),
    validation = Rule::new("self.target == 'Request' || !has(self.patch) || !has(self.patch.queries)")
        .message("patch.queries changes requests: it needs `target: Request`"),
)]
pub struct HTTPChaosSpec {
    /// `Request` (faulted before the server sees it) or `Response` (before the client does).
    #[schemars(schema_with = "http_target_schema")]
    pub target: havoc_spec::http::HttpTarget,
    /// Which pods are candidates.
    pub selector: PodSelector,
    /// How many candidates are hit: `one`, `all`, `fixed`, `fixed-percent`, `random-max-percent`.
    #[serde(default)]
    pub mode: havoc_spec::Mode,
    /// The count (`fixed`) or percentage (`fixed-percent`, `random-max-percent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub value: Option<String>,
    /// How long the fault lasts; default: until the object is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// Seed of the random choice of pods; default: derived from the object's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The TCP port the pod's server listens on.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Wildcard pattern for the request path (`*` any run of characters, `?` one); default:
    /// every path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub path: Option<String>,
    /// Request method, exact (`GET`); default: every method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    pub method: Option<String>,
    /// With `target: Response`: only responses with this status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub code: Option<u16>,
    /// Headers the request must carry with exactly these values.
    #[serde(
        default,
        rename = "request_headers",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub request_headers: BTreeMap<String, String>,
    /// With `target: Response`: headers the response must carry with exactly these values.
    #[serde(
        default,
        rename = "response_headers",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub response_headers: BTreeMap<String, String>,
    /// Close the connection instead of passing the hit request or response on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<bool>,
    /// Hold the hit request (or response) this long (at most 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
    /// Parts of the hit request or response replaced (path, method, code, body in base64,
    /// queries, headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "http_replace_schema")]
    pub replace: Option<havoc_spec::http::HttpReplace>,
    /// Additions to the hit request or response (a JSON merge patch of the body, queries and
    /// headers appended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "http_patch_schema")]
    pub patch: Option<havoc_spec::http::HttpPatch>,
    /// Share of the matching requests that are hit (default `"100"`; Havoc only).
    #[serde(
        default = "hundred_percent",
        skip_serializing_if = "is_hundred_percent"
    )]
    pub percent: Percent,
}

fn dns_action_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["error", "random", "delay"],
        "description": "`error` (SERVFAIL), `random` (a random address), or `delay` (the real answer, late).",
    })
}

/// The pattern rule sits on each item: a rule over the list would need a comprehension
/// variable, which the CRD's rule analysis does not scope.
fn dns_patterns_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 254,
            "x-kubernetes-validations": [{
                "rule": "self.matches('^[^*]*[*]?$')",
                "message": MSG_DNS_STAR,
            }],
        },
        "description": "Names to hit: an exact name, `?` for one character, `*` only at the end; default: every name.",
    })
}

const MSG_DNS_STAR: &str = "the wildcard `*` is only allowed at the end of a pattern (Chaos Mesh's rule), e.g. `chaos-mesh.*`; use `?` for one character elsewhere";

fn http_target_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["Request", "Response"],
        "description": "`Request` or `Response`.",
    })
}

fn http_replace_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let map = serde_json::json!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": 8192},
    });
    schemars::json_schema!({
        "type": "object",
        "properties": {
            "path": {"type": "string", "minLength": 1, "maxLength": 4096, "description": "Request target only: the new path."},
            "method": {"type": "string", "minLength": 1, "maxLength": 32, "description": "Request target only: the new method."},
            "code": {"type": "integer", "minimum": 100, "maximum": 599, "description": "Response target only: the new status code."},
            "body": {"type": "string", "format": "byte", "description": "The new body, base64-encoded (as Chaos Mesh's `[]byte`)."},
            "queries": map.clone(),
            "headers": map,
        },
        "description": "Parts of the hit request or response replaced; queries and headers are set to these values.",
    })
}

fn http_patch_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let pairs = serde_json::json!({
        "type": "array",
        "maxItems": 64,
        "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "string", "maxLength": 8192}},
    });
    schemars::json_schema!({
        "type": "object",
        "properties": {
            "body": {
                "type": "object",
                "required": ["type", "value"],
                "properties": {
                    "type": {"type": "string", "enum": ["JSON"]},
                    "value": {"type": "string", "maxLength": 65536},
                },
                "description": "A JSON merge patch (RFC 7386) applied to a JSON body.",
            },
            "queries": pairs.clone(),
            "headers": pairs,
        },
        "description": "Additions to the hit request or response: `[name, value]` pairs appended to the queries (requests only) and headers, and a JSON merge patch of the body.",
    })
}

fn hundred() -> u32 {
    100
}

/// Reads a value whose parts are parsed from text (`errno`, `perm`) from a JSON number too:
/// the API server stores `errno: 5` as a number, and havoc-spec's scalar types read text.
fn numbers_as_text<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde_json::Value as J;
    fn fix(v: &mut J, top: bool) {
        match v {
            J::Number(n) if top => *v = J::String(n.to_string()),
            J::Array(items) => items.iter_mut().for_each(|i| fix(i, false)),
            J::Object(m) => {
                for key in ["errno", "perm"] {
                    if let Some(J::Number(n)) = m.get(key) {
                        let text = n.to_string();
                        m.insert(key.into(), J::String(text));
                    }
                }
            }
            _ => {}
        }
    }
    let mut v = J::deserialize(d)?;
    fix(&mut v, true);
    serde_json::from_value(v).map_err(serde::de::Error::custom)
}

const RULE_ONE_CONTAINER: &str = "!has(self.containerNames) || size(self.containerNames) <= 1";
const MSG_ONE_CONTAINER: &str =
    "containerNames takes at most one name: Havoc injects into one container per pod; use one object per container";

fn time_offset_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": r"^[+-]?([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$",
        "maxLength": 64,
        "description": "How far the clocks move: a signed duration such as `-5m`, `+2h` or `1h30m`.",
    })
}

fn clock_ids_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = havoc_spec::time::CLOCKS.iter().map(|(n, _)| *n).collect();
    schemars::json_schema!({
        "type": "array",
        "maxItems": 16,
        "items": {"type": "string", "enum": names},
        "description": "Which clocks move, by `CLOCK_*` name; default: CLOCK_REALTIME.",
    })
}

fn errno_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "description": "An error number: a name such as `EIO` or a number such as `5`.",
    })
}

fn io_action_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["latency", "fault", "attrOverride", "mistake"],
        "description": "`latency`, `fault`, `attrOverride` or `mistake`.",
    })
}

fn io_methods_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {"type": "string", "pattern": "^[A-Za-z]+$", "maxLength": 16},
        "description": "Operations affected (read, write, open, getattr, readdir, ...); default: all.",
    })
}

fn io_faults_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 32,
        "items": {
            "type": "object",
            "required": ["errno"],
            "properties": {
                "errno": {"x-kubernetes-int-or-string": true},
                "weight": {"type": "integer", "minimum": 1, "default": 1},
            },
        },
        "description": "Several errors, each chosen in proportion to its weight.",
    })
}

fn io_attr_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let time = serde_json::json!({
        "type": "object",
        "required": ["sec"],
        "properties": {
            "sec": {"type": "integer", "format": "int64"},
            "nsec": {"type": "integer", "format": "int64", "minimum": 0, "maximum": 999_999_999},
        },
    });
    let unsigned = serde_json::json!({"type": "integer", "minimum": 0});
    schemars::json_schema!({
        "type": "object",
        "properties": {
            "ino": unsigned,
            "size": unsigned,
            "blocks": unsigned,
            "atime": time,
            "mtime": time,
            "ctime": time,
            "kind": {"type": "string", "enum": ["namedPipe", "charDevice", "blockDevice", "directory", "regularFile", "symlink", "socket"]},
            "perm": {"x-kubernetes-int-or-string": true},
            "nlink": unsigned,
            "uid": unsigned,
            "gid": unsigned,
            "rdev": unsigned,
        },
        "description": "The attributes reported instead of the real ones; absent fields are left alone. perm: decimal as Chaos Mesh writes it (420) or octal text (\"0644\").",
    })
}

fn io_mistake_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "required": ["filling", "maxOccurrences", "maxLength"],
        "properties": {
            "filling": {"type": "string", "enum": ["zero", "random"]},
            "maxOccurrences": {"type": "integer", "minimum": 1},
            "maxLength": {"type": "integer", "minimum": 1},
        },
        "description": "In each matching read or write, up to maxOccurrences runs of up to maxLength bytes become zeros or random bytes.",
    })
}

const RULE_VALUE_REQUIRED: &str =
    "!has(self.mode) || self.mode in ['one', 'all'] || has(self.value)";
const MSG_VALUE_REQUIRED: &str =
    "value is required with modes fixed (a count), fixed-percent and random-max-percent (a percentage)";
const RULE_VALUE_UNUSED: &str =
    "!has(self.value) || self.value == '' || (has(self.mode) && !(self.mode in ['one', 'all']))";
const MSG_VALUE_UNUSED: &str =
    "value is only used with modes fixed, fixed-percent and random-max-percent: remove it or change mode";
const RULE_VALUE_FIXED: &str =
    "!has(self.mode) || self.mode != 'fixed' || !has(self.value) || self.value.matches('^[1-9][0-9]*$')";
const MSG_VALUE_FIXED: &str = "value must be a whole number >= 1 with mode fixed, e.g. \"3\"";
const RULE_VALUE_PERCENT: &str = "!has(self.mode) || !(self.mode in ['fixed-percent', 'random-max-percent']) || !has(self.value) || self.value.matches('^([1-9][0-9]?|100)%?$')";
const MSG_VALUE_PERCENT: &str =
    "value must be a percentage 1..100 with modes fixed-percent and random-max-percent, e.g. \"50\"";

const RULE_DURATION: &str = "!has(self.duration) || (duration(self.duration) > duration('0s') && duration(self.duration) <= duration('168h'))";
const MSG_DURATION: &str = "duration must be greater than 0 and at most 7 days (168h), e.g. \"30s\"; leave it out to run until deleted";

/// The other side of a NetworkChaos's traffic: pods chosen like the object's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkTarget {
    /// Which pods are candidates (default namespace: the chaos object's).
    pub selector: PodSelector,
    /// How many candidates are peers: `one`, `all`, `fixed`, `fixed-percent`, `random-max-percent`.
    #[serde(default)]
    pub mode: havoc_spec::Mode,
    /// The count (`fixed`) or percentage (`fixed-percent`, `random-max-percent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub value: Option<String>,
}

impl NetworkTarget {
    /// The mode with its value.
    pub fn mode(&self) -> Mode {
        mode_of(self.mode, self.value.as_deref())
    }
}

/// The host of an `externalTargets` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerHost {
    /// An IP address or CIDR.
    Cidr(havoc_spec::network::Cidr),
    /// A DNS name, resolved when injected.
    Name(String),
}

/// One parsed `externalTargets` entry: `HOST`, `HOST:PORT`, `[IPV6]:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub host: PeerHost,
    pub port: Option<u16>,
}

impl std::str::FromStr for Peer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use havoc_spec::units::clip;
        let t = s.trim();
        let q = clip(t);
        let port_of = |p: &str| -> Result<u16, String> {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{q}`: the port must be 1..=65535, got `{}`", clip(p)))
        };
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{q}`: `[` without `]`; write `[fd00::1]:80`"))?;
            match after {
                "" => (h, None),
                _ => match after.strip_prefix(':') {
                    Some(p) => (h, Some(port_of(p)?)),
                    None => return Err(format!("`{q}`: expected `:PORT` after `]`")),
                },
            }
        } else if t.matches(':').count() == 1 {
            let (h, p) = t.split_once(':').expect("one colon");
            (h, Some(port_of(p)?))
        } else {
            (t, None)
        };
        if let Ok(c) = host.parse::<havoc_spec::network::Cidr>() {
            return Ok(Peer {
                host: PeerHost::Cidr(c),
                port,
            });
        }
        let name = host.trim_end_matches('.');
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let numeric = name
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'/');
        if !name.is_empty() && name.len() <= 253 && !numeric && name.split('.').all(label_ok) {
            return Ok(Peer {
                host: PeerHost::Name(name.to_ascii_lowercase()),
                port,
            });
        }
        Err(format!(
            "`{q}` is not an IP address, CIDR or host name with an optional `:PORT` (like `10.0.0.0/8`, `db.example.com:5432` or `[fd00::1]:80`)"
        ))
    }
}

/// What the operator looks up before it injects a NetworkChaos that names peers.
#[derive(Debug, Clone, PartialEq)]
pub struct Peers {
    /// The target pods, whose IPs are peers.
    pub target: Option<NetworkTarget>,
    /// Host names to resolve (A and AAAA records).
    pub names: Vec<String>,
}

/// The chaos CRDs, for `havoc crds` and for installing.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        PodChaos::crd(),
        NetworkChaos::crd(),
        StressChaos::crd(),
        TimeChaos::crd(),
        SyscallChaos::crd(),
        IOChaos::crd(),
        DNSChaos::crd(),
        HTTPChaos::crd(),
        crate::schedule_crd::Schedule::crd(),
        crate::workflow_crd::Workflow::crd(),
        crate::statuscheck_crd::StatusCheck::crd(),
    ];
    for crd in &mut crds {
        for v in &mut crd.spec.versions {
            if let Some(s) = v
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                strip_unknown_formats(s);
            }
        }
    }
    crds
}

/// The `format`s the API server knows (apiextensions' `SupportedFormats` and the OpenAPI
/// number formats); any other (schemars' `uint32`, `uint64`, `uint8`...) makes every `kubectl
/// apply` warn `unrecognized format`. Unsigned fields keep their `minimum: 0`.
const KNOWN_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "binary",
    "password",
    "date",
    "date-time",
    "datetime",
    "duration",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "bsonobjectid",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
];

type SchemaProps =
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;

fn strip_unknown_formats(s: &mut SchemaProps) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    };
    if s.format
        .as_deref()
        .is_some_and(|f| !KNOWN_FORMATS.contains(&f))
    {
        s.format = None;
    }
    for p in s.properties.iter_mut().flat_map(|m| m.values_mut()) {
        strip_unknown_formats(p);
    }
    match s.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(i)) => strip_unknown_formats(i),
        Some(JSONSchemaPropsOrArray::Schemas(v)) => v.iter_mut().for_each(strip_unknown_formats),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(a)) = s.additional_properties.as_mut() {
        strip_unknown_formats(a);
    }
    for group in [&mut s.all_of, &mut s.any_of, &mut s.one_of] {
        group.iter_mut().flatten().for_each(strip_unknown_formats);
    }
    if let Some(n) = s.not.as_mut() {
        strip_unknown_formats(n);
    }
}

/// The CRDs as a multi-document YAML stream (`---` between documents).
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|c| serde_yaml_ng::to_string(c).expect("a CRD serializes to YAML"))
        .map(|y| format!("---\n{y}"))
        .collect()
}

fn validate_common(
    mode: havoc_spec::Mode,
    value: Option<&str>,
    duration: Option<HumanDuration>,
    selector: &PodSelector,
    sp: &FieldPath,
    p: &mut Problems,
) {
    selector.validate(&sp.key("selector"), p);
    validate_mode(mode, value, sp, p);
    if let Some(d) = duration {
        if d.0.is_zero() || d.0 > MAX_DURATION {
            p.add(&sp.key("duration"), MSG_DURATION);
        }
    }
}

fn mode_of(mode: havoc_spec::Mode, value: Option<&str>) -> Mode {
    // Validation reports a bad value; acting on an unvalidated one selects nothing rather than guess.
    Mode::from_spec(mode, value).unwrap_or(match mode {
        havoc_spec::Mode::One => Mode::One,
        havoc_spec::Mode::All => Mode::All,
        havoc_spec::Mode::Fixed => Mode::Fixed(0),
        havoc_spec::Mode::FixedPercent => Mode::FixedPercent(0),
        havoc_spec::Mode::RandomMaxPercent => Mode::RandomMaxPercent(0),
    })
}

fn into_errors(p: Problems) -> Result<(), SpecErrors> {
    if p.is_empty() {
        return Ok(());
    }
    Err(SpecErrors(
        p.into_vec()
            .into_iter()
            .map(|(path, message)| SpecError {
                path,
                pos: Default::default(),
                message,
            })
            .collect(),
    ))
}

impl PodChaosSpec {
    /// The rules of the CRD's CEL validations and more; `sp` is the spec's path (`spec`).
    pub fn validate_spec(&self, sp: &FieldPath, p: &mut Problems) {
        validate_common(
            self.mode,
            self.value.as_deref(),
            self.duration,
            &self.selector,
            sp,
            p,
        );
        if self.grace_period.is_some() && self.action != PodAction::PodKill {
            p.add(
                &sp.key("gracePeriod"),
                "gracePeriod only applies to action pod-kill",
            );
        }
        if let Some(g) = self.grace_period {
            if g < 0 {
                p.add(
                    &sp.key("gracePeriod"),
                    format!("must be 0 or more seconds, got {g}"),
                );
            }
        }
        match self.action {
            PodAction::ContainerKill if self.container_names.is_empty() => p.add(
                &sp.key("containerNames"),
                "containerNames is required with action container-kill: name the containers to kill",
            ),
            PodAction::PodKill | PodAction::PodFailure if !self.container_names.is_empty() => p.add(
                &sp.key("containerNames"),
                format!("containerNames only applies to action container-kill, not {}", self.action.name()),
            ),
            _ => {}
        }
    }
}

impl NetworkChaosSpec {
    /// The host-mode fault with these parameters (its host selector is empty: the agent targets
    /// the pod's network namespace).
    ///
    /// Only the literal addresses of `externalTargets` are in it: with a `target` or host names,
    /// the operator looks them up first ([`NetworkChaosSpec::lookups`]) and calls
    /// [`NetworkChaosSpec::fault_with_peers`].
    pub fn fault(&self) -> havoc_spec::network::NetworkChaos {
        let literal: Vec<_> = self
            .peers()
            .into_iter()
            .filter_map(|p| match p.host {
                PeerHost::Cidr(c) => Some(c),
                PeerHost::Name(_) => None,
            })
            .collect();
        self.fault_with_peers(&literal)
    }

    /// The parsed `externalTargets` (entries that do not parse are left out; validation names them).
    pub fn peers(&self) -> Vec<Peer> {
        self.external_targets
            .iter()
            .filter_map(|t| t.parse().ok())
            .collect()
    }

    /// What the operator must look up before injecting; `None` when nothing is (no `target`,
    /// no host names).
    pub fn lookups(&self) -> Option<Peers> {
        let names: Vec<String> = self
            .peers()
            .into_iter()
            .filter_map(|p| match p.host {
                PeerHost::Name(n) => Some(n),
                PeerHost::Cidr(_) => None,
            })
            .collect();
        (self.target.is_some() || !names.is_empty()).then(|| Peers {
            target: self.target.clone(),
            names,
        })
    }

    /// The host-mode fault limited to traffic with these peer addresses (and to the port the
    /// `externalTargets` name, if any).
    pub fn fault_with_peers(
        &self,
        peers: &[havoc_spec::network::Cidr],
    ) -> havoc_spec::network::NetworkChaos {
        let mut ports = self.ports.clone();
        if let Some(p) = self.peers().iter().find_map(|p| p.port) {
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let mut external: Vec<String> = peers
            .iter()
            .map(|c| {
                let full = if c.addr.is_ipv4() { 32 } else { 128 };
                if c.prefix == full {
                    c.addr.to_string()
                } else {
                    format!("{}/{}", c.addr, c.prefix)
                }
            })
            .collect();
        external.sort();
        external.dedup();
        havoc_spec::network::NetworkChaos {
            action: self.action,
            selector: Default::default(),
            direction: self.direction,
            external_targets: external,
            device: self.device.clone(),
            ports,
            protocols: self.protocols.clone(),
            loss: self.loss.clone(),
            loss_model: self.loss_model,
            gilbert_elliott: self.gilbert_elliott.clone(),
            delay: self.delay.clone(),
            duplicate: self.duplicate.clone(),
            corrupt: self.corrupt.clone(),
            bandwidth: self.bandwidth.clone(),
        }
    }

    /// The rules of the CRD's CEL validations and host mode's parameter rules.
    pub fn validate_spec(&self, sp: &FieldPath, p: &mut Problems) {
        validate_common(
            self.mode,
            self.value.as_deref(),
            self.duration,
            &self.selector,
            sp,
            p,
        );
        if let Some(t) = &self.target {
            let tp = sp.key("target");
            t.selector.validate(&tp.key("selector"), p);
            validate_mode(t.mode, t.value.as_deref(), &tp, p);
        }
        let ep = sp.key("externalTargets");
        let mut parsed = Vec::new();
        for (i, t) in self.external_targets.iter().enumerate() {
            match t.parse::<Peer>() {
                Ok(peer) => parsed.push((i, peer)),
                Err(e) => p.add(&ep.index(i), e),
            }
        }
        // Havoc filters one set of ports for the whole fault, not one per peer: entries with a
        // port must agree, and cannot be mixed with peers on every port.
        let ported: BTreeSet<u16> = parsed.iter().filter_map(|(_, p)| p.port).collect();
        if let Some(first) = ported.iter().next() {
            if ported.len() > 1 {
                let all: Vec<String> = ported.iter().map(u16::to_string).collect();
                p.add(&ep, format!("entries with a port must all name the same port (got {}): Havoc filters one set of ports per object; use one object per port", all.join(", ")));
            }
            if let Some((i, _)) = parsed.iter().find(|(_, p)| p.port.is_none()) {
                p.add(&ep.index(*i), format!("give this entry a port too (`:{first}`), or move the entries with a port to another object: Havoc filters one set of ports per object"));
            }
            if self.target.is_some() {
                p.add(&sp.key("target"), format!("target pods are peers on every port, but externalTargets name port {first}: use separate objects"));
            }
            if !self.ports.is_empty() {
                p.add(
                    &sp.key("ports"),
                    "give ports either here or in externalTargets (`HOST:PORT`), not both",
                );
            }
        }
        let mut fault = self.fault();
        fault.external_targets.clear();
        fault.validate_params(sp, p);
    }
}

impl StressChaosSpec {
    /// The host-mode fault with these stressors (its host selector is empty: the agent targets
    /// the pod's containers).
    pub fn fault(&self) -> havoc_spec::stress::StressChaos {
        havoc_spec::stress::StressChaos {
            selector: Default::default(),
            stressors: self.stressors.clone(),
        }
    }

    /// The rules of the CRD's CEL validations and host mode's stressor rules.
    pub fn validate_spec(&self, sp: &FieldPath, p: &mut Problems) {
        validate_common(
            self.mode,
            self.value.as_deref(),
            self.duration,
            &self.selector,
            sp,
            p,
        );
        self.stressors.validate(&sp.key("stressors"), p);
    }
}

/// Runs a host-mode validation, keeping every problem but those of its (empty) host selector:
/// in a cluster the pod selector chooses the targets.
fn host_problems(sp: &FieldPath, p: &mut Problems, f: impl FnOnce(&mut Problems)) {
    let mut host = Problems::new();
    f(&mut host);
    let sel = sp.key("selector").to_string();
    for (path, message) in host.into_vec() {
        let s = path.to_string();
        if s != sel && !s.starts_with(&format!("{sel}.")) {
            p.add(&path, message);
        }
    }
}

fn validate_containers(names: &[String], sp: &FieldPath, p: &mut Problems) {
    if names.len() > 1 {
        p.add(&sp.key("containerNames"), MSG_ONE_CONTAINER);
    }
}

impl TimeChaosSpec {
    /// The host-mode fault (its host selector is empty: the agent targets the container's
    /// processes).
    pub fn fault(&self) -> havoc_spec::time::TimeChaos {
        havoc_spec::time::TimeChaos {
            time_offset: self.time_offset,
            clock_ids: self.clock_ids.clone(),
            selector: Default::default(),
        }
    }

    /// The rules of the CRD's CEL validations and host mode's parameter rules.
    pub fn validate_spec(&self, sp: &FieldPath, p: &mut Problems) {
        validate_common(
            self.mode,
            self.value.as_deref(),
            self.duration,
            &self.selector,
            sp,
            p,
        );
        validate_containers(&self.container_names, sp, p);
        host_problems(sp, p, |h| self.fault().validate(sp, h));
    }
}

impl SyscallChaosSpec {
    /// The host-mode fault (its host selector is empty: the agent targets the container's
    /// processes).
    pub fn fault(&self) -> havoc_spec::syscall::SyscallChaos {
        havoc_spec::syscall::SyscallChaos {
            syscalls: self.syscalls.clone(),
            errno: self.errno,
            percent: self.percent,
            delay: self.delay,
            path: self.path.clone(),
            selector: Default::default(),
        }
    }

    /// The rules of the CRD's CEL validations and host mode's parameter rules.
    pub fn validate_spec(&self, sp: &FieldPath, p: &mut Problems) {
        validate_common(
            self.mode,
            self.value.as_deref(),
            self.duration,
            &self.selector,
            sp,
            p,
        );
        validate_containers(&self.container_names, sp, p);
        host_problems(sp, p, |h| self.fault().validate(sp, h));
    }
}

impl IOChaosSpec {
    /// The host-mode fault (its host selector is empty: the agent mounts in the container's
    /// mount namespace).
    pub fn fault(&self) -> havoc_spec::io::IOChaos {
        havoc_spec::io::IOChaos {
            action: self.action,
            selector: Default::default(),
            volume_path: self.volume_path.clone(),
            path: self.path.clone(),
            methods: self.methods.clone(),
            percent: self.percent,
            delay: self.delay,
            errno: self.errno,
            faults: self.faults.clone(),
            attr: self.attr.clone(),
            mistake: self.mistake.clone(),
            container_names: None,
            remote_cluster: None,
        }
    }

    /// The rules of the CRD's CEL validations and host mode's parameter rules.
    pub fn validate_spec(&self, sp: &FieldPath, p: &mut Problems) {
        validate_common(
            self.mode,
            self.value.as_deref(),
            self.duration,
            &self.selector,
            sp,
            p,
        );
        validate_containers(&self.container_names, sp, p);
        self.fault().validate_params(sp, p);
    }
}

impl DNSChaosSpec {
    /// The host-mode fault (its host selector is empty: the agent intercepts in the pod's
    /// network namespace).
    pub fn fault(&self) -> havoc_spec::dns::DNSChaos {
        havoc_spec::dns::DNSChaos {
            action: self.action,
            patterns: self.patterns.clone(),
            percent: self.percent,
            delay: self.delay,
            selector: Default::default(),
            container_names: None,
            remote_cluster: None,
        }
    }

    /// The rules of the CRD's CEL validations and host mode's parameter rules.
    pub fn validate_spec(&self, sp: &FieldPath, p: &mut Problems) {
        validate_common(
            self.mode,
            self.value.as_deref(),
            self.duration,
            &self.selector,
            sp,
            p,
        );
        host_problems(sp, p, |h| self.fault().validate(sp, h));
    }
}

impl HTTPChaosSpec {
    /// The host-mode fault (its host selector is empty: the agent intercepts in the pod's
    /// network namespace).
    pub fn fault(&self) -> havoc_spec::http::HTTPChaos {
        havoc_spec::http::HTTPChaos {
            target: self.target,
            port: self.port,
            path: self.path.clone(),
            method: self.method.clone(),
            code: self.code,
            request_headers: self.request_headers.clone(),
            response_headers: self.response_headers.clone(),
            abort: self.abort,
            delay: self.delay,
            replace: self.replace.clone(),
            patch: self.patch.clone(),
            percent: self.percent,
            tls: None,
            selector: Default::default(),
            container_names: None,
            remote_cluster: None,
        }
    }

    /// The rules of the CRD's CEL validations and host mode's parameter rules.
    pub fn validate_spec(&self, sp: &FieldPath, p: &mut Problems) {
        validate_common(
            self.mode,
            self.value.as_deref(),
            self.duration,
            &self.selector,
            sp,
            p,
        );
        host_problems(sp, p, |h| self.fault().validate(sp, h));
    }
}

/// The seed of an object: its spec's, else a stable hash of its uid (else of namespace/name).
fn seed_of(spec_seed: Option<u64>, meta: &kube::core::ObjectMeta) -> u64 {
    spec_seed.unwrap_or_else(|| match &meta.uid {
        Some(uid) => stable_seed(uid),
        None => stable_seed(&format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )),
    })
}

macro_rules! common_impl {
    () => {
        fn selector(&self) -> &PodSelector {
            &self.spec.selector
        }
        fn mode(&self) -> Mode {
            mode_of(self.spec.mode, self.spec.value.as_deref())
        }
        fn duration(&self) -> Option<Duration> {
            self.spec.duration.map(|d| d.0)
        }
        fn seed(&self) -> u64 {
            seed_of(self.spec.seed, &self.metadata)
        }
        fn status(&self) -> Option<&ChaosStatus> {
            self.status.as_ref()
        }
        fn status_mut(&mut self) -> &mut Option<ChaosStatus> {
            &mut self.status
        }
        fn validate(&self) -> Result<(), SpecErrors> {
            let mut p = Problems::new();
            self.spec
                .validate_spec(&FieldPath::root().key("spec"), &mut p);
            into_errors(p)
        }
    };
}

impl ChaosObject for PodChaos {
    common_impl!();

    fn action(&self) -> ChaosAction {
        match self.spec.action {
            PodAction::PodKill => ChaosAction::PodKill {
                grace_period_seconds: self.spec.grace_period,
            },
            PodAction::PodFailure => ChaosAction::PodFailure,
            PodAction::ContainerKill => ChaosAction::ContainerKill {
                container_names: self.spec.container_names.clone(),
            },
        }
    }

    fn action_name(&self) -> String {
        self.spec.action.name().to_string()
    }
}

impl ChaosObject for NetworkChaos {
    common_impl!();

    fn action(&self) -> ChaosAction {
        ChaosAction::Agent {
            fault: FaultSpec::NetworkChaos(self.spec.fault()),
            container_names: Vec::new(),
        }
    }

    fn lookups(&self) -> Option<Peers> {
        self.spec.lookups()
    }

    fn action_with_peers(&self, peers: &[havoc_spec::network::Cidr]) -> ChaosAction {
        ChaosAction::Agent {
            fault: FaultSpec::NetworkChaos(self.spec.fault_with_peers(peers)),
            container_names: Vec::new(),
        }
    }

    fn action_name(&self) -> String {
        let s = FaultSpec::NetworkChaos(self.spec.fault()).summary();
        if s.is_empty() {
            havoc_spec::network::action_name(self.spec.action).to_string()
        } else {
            s
        }
    }
}

impl ChaosObject for StressChaos {
    common_impl!();

    fn action(&self) -> ChaosAction {
        ChaosAction::Agent {
            fault: FaultSpec::StressChaos(self.spec.fault()),
            container_names: self.spec.container_names.clone(),
        }
    }

    fn action_name(&self) -> String {
        FaultSpec::StressChaos(self.spec.fault()).summary()
    }
}

impl ChaosObject for TimeChaos {
    common_impl!();

    fn action(&self) -> ChaosAction {
        ChaosAction::Agent {
            fault: FaultSpec::TimeChaos(self.spec.fault()),
            container_names: self.spec.container_names.clone(),
        }
    }

    fn action_name(&self) -> String {
        self.spec.fault().summary()
    }
}

impl ChaosObject for SyscallChaos {
    common_impl!();

    fn action(&self) -> ChaosAction {
        ChaosAction::Agent {
            fault: FaultSpec::SyscallChaos(self.spec.fault()),
            container_names: self.spec.container_names.clone(),
        }
    }

    fn action_name(&self) -> String {
        self.spec.fault().summary()
    }
}

impl ChaosObject for IOChaos {
    common_impl!();

    fn action(&self) -> ChaosAction {
        ChaosAction::Agent {
            fault: FaultSpec::IOChaos(self.spec.fault()),
            container_names: self.spec.container_names.clone(),
        }
    }

    fn action_name(&self) -> String {
        self.spec.fault().summary()
    }
}

impl ChaosObject for DNSChaos {
    common_impl!();

    fn action(&self) -> ChaosAction {
        ChaosAction::Agent {
            fault: FaultSpec::DNSChaos(self.spec.fault()),
            container_names: Vec::new(),
        }
    }

    fn action_name(&self) -> String {
        self.spec.fault().summary()
    }
}

impl ChaosObject for HTTPChaos {
    common_impl!();

    fn action(&self) -> ChaosAction {
        ChaosAction::Agent {
            fault: FaultSpec::HTTPChaos(self.spec.fault()),
            container_names: Vec::new(),
        }
    }

    fn action_name(&self) -> String {
        self.spec.fault().summary()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as J;

    fn schema_of(crd: &CustomResourceDefinition) -> J {
        let v = &crd.spec.versions[0];
        serde_json::to_value(
            v.schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap()
    }

    /// Every node of a structural schema has a type (or is int-or-string / preserves unknown
    /// fields), and there is no `$ref`, no `anyOf`/`oneOf`/`allOf` carrying types, and no
    /// `additionalProperties` beside `properties`.
    fn assert_structural(s: &J, path: &str) {
        let o = s
            .as_object()
            .unwrap_or_else(|| panic!("{path}: schema is not an object: {s}"));
        assert!(!o.contains_key("$ref"), "{path}: $ref");
        for k in ["anyOf", "oneOf", "allOf", "not"] {
            assert!(
                !o.contains_key(k),
                "{path}: {k} in a structural schema: {s}"
            );
        }
        let special = o.get("x-kubernetes-int-or-string") == Some(&J::Bool(true))
            || o.get("x-kubernetes-preserve-unknown-fields") == Some(&J::Bool(true));
        assert!(o.contains_key("type") || special, "{path}: no type: {s}");
        assert!(
            !(o.contains_key("properties") && o.contains_key("additionalProperties")),
            "{path}: properties and additionalProperties together"
        );
        if let Some(J::Object(props)) = o.get("properties") {
            assert_eq!(o.get("type"), Some(&J::String("object".into())), "{path}");
            for (k, v) in props {
                assert_structural(v, &format!("{path}.{k}"));
            }
        }
        if let Some(items) = o.get("items") {
            assert_eq!(o.get("type"), Some(&J::String("array".into())), "{path}");
            assert_structural(items, &format!("{path}[]"));
        }
        if let Some(ap @ J::Object(_)) = o.get("additionalProperties") {
            assert_structural(ap, &format!("{path}{{}}"));
        }
    }

    #[test]
    fn crd_schemas_carry_only_formats_the_api_server_knows() {
        fn formats(s: &J, path: &str, out: &mut Vec<String>) {
            match s {
                J::Object(o) => {
                    if let Some(J::String(f)) = o.get("format") {
                        out.push(format!("{path}: {f}"));
                    }
                    for (k, v) in o {
                        formats(v, &format!("{path}.{k}"), out);
                    }
                }
                J::Array(a) => a.iter().for_each(|v| formats(v, path, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        for crd in crds() {
            let j = serde_json::to_value(&crd).unwrap();
            formats(&j, crd.metadata.name.as_deref().unwrap(), &mut found);
        }
        let unknown: Vec<&String> = found
            .iter()
            .filter(|f| {
                let fmt = f.rsplit(": ").next().unwrap();
                !KNOWN_FORMATS.contains(&fmt)
            })
            .collect();
        assert!(unknown.is_empty(), "unknown formats: {unknown:?}");
        // The seed (u64) keeps its lower bound.
        let j = serde_json::to_value(PodChaos::crd()).unwrap();
        let seed = &j["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["seed"];
        assert_eq!(seed["minimum"].as_f64(), Some(0.0), "{seed}");
        assert!(
            !crds_yaml().contains("format: uint"),
            "a uint format in the YAML"
        );
    }

    #[test]
    fn crds_yaml_holds_the_chaos_crds() {
        let yaml = crds_yaml();
        let docs: Vec<CustomResourceDefinition> = serde_yaml_ng::Deserializer::from_str(&yaml)
            .map(|d| CustomResourceDefinition::deserialize(d).expect("a CRD document"))
            .collect();
        let names: Vec<&str> = docs
            .iter()
            .map(|c| c.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "podchaos.havoc.dev",
                "networkchaos.havoc.dev",
                "stresschaos.havoc.dev",
                "timechaos.havoc.dev",
                "syscallchaos.havoc.dev",
                "iochaos.havoc.dev",
                "dnschaos.havoc.dev",
                "httpchaos.havoc.dev",
                "schedules.havoc.dev",
                "workflows.havoc.dev",
                "statuschecks.havoc.dev",
            ]
        );
        for (crd, short) in docs
            .iter()
            .zip(["hpc", "hnc", "hsc", "htc", "hyc", "hioc", "hdc", "hhc"])
        {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(
                crd.spec.names.short_names.as_deref(),
                Some(&[short.to_string()][..])
            );
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&["havoc".to_string(), "chaos".to_string()][..])
            );
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, VERSION);
            assert!(
                v.subresources.as_ref().unwrap().status.is_some(),
                "status subresource"
            );
            let cols: Vec<&str> = v
                .additional_printer_columns
                .as_ref()
                .unwrap()
                .iter()
                .map(|c| c.json_path.as_str())
                .collect();
            assert!(
                cols.contains(&".status.phase")
                    && cols.contains(&".spec.mode")
                    && cols.contains(&".metadata.creationTimestamp"),
                "{cols:?}"
            );
            assert_structural(&schema_of(crd), crd.spec.names.kind.as_str());
        }
        let spec = &schema_of(&docs[1])["properties"]["spec"];
        assert!(
            spec["properties"]["loss"]["properties"]["loss"]["pattern"].is_string(),
            "Percent is a string with a pattern"
        );
        assert_eq!(spec["properties"]["mode"]["enum"][4], "random-max-percent");
        assert!(
            spec["description"]
                .as_str()
                .unwrap()
                .contains("Network faults"),
            "descriptions come from doc comments"
        );
    }

    #[test]
    fn value_patterns_accept_what_the_parsers_accept() {
        let props = schema_of(&NetworkChaos::crd())["properties"]["spec"]["properties"].clone();
        let pattern = |p: &J| regex::Regex::new(p["pattern"].as_str().unwrap()).unwrap();
        let percent = pattern(&props["loss"]["properties"]["loss"]);
        let duration = pattern(&props["duration"]);
        let rate = pattern(&props["bandwidth"]["properties"]["rate"]);
        let size = pattern(&props["bandwidth"]["properties"]["limit"]);
        type Parse = fn(&str) -> bool;
        let cases: [(&regex::Regex, Parse, &[&str], &[&str]); 4] = [
            (
                &percent,
                |s| s.parse::<havoc_spec::units::Percent>().is_ok(),
                &["0", "25", "2.5", "100", "50%", "100.0"],
                &["101", "150", "-1", "ten", "1e2"],
            ),
            (
                &duration,
                |s| s.parse::<HumanDuration>().is_ok(),
                &["0", "150ms", "30s", "1h30m", "2.5s", "10us"],
                &["10", "1d", "ms", "-1s"],
            ),
            (
                &rate,
                |s| s.parse::<havoc_spec::units::Rate>().is_ok(),
                &["1mbit", "100kbit", "10mbps", "1gbit", "8bps"],
                &["1", "fast", "1mb"],
            ),
            (
                &size,
                |s| s.parse::<havoc_spec::units::ByteSize>().is_ok(),
                &["512", "64KB", "64KiB", "256MiB", "1GB"],
                &["big", "1XB"],
            ),
        ];
        for (re, parses, good, bad) in cases {
            for g in good {
                assert!(
                    re.is_match(g) && parses(g),
                    "`{g}` should pass pattern {re} and parse"
                );
            }
            for b in bad {
                assert!(!re.is_match(b), "`{b}` should fail pattern {re}");
            }
        }
    }

    /// (kind index, message of the CEL rule, a spec violating it). The Rust validation must
    /// report the same problem, so `havoc validate` and `kubectl apply` agree.
    fn cel_cases() -> Vec<(usize, &'static str, J)> {
        let sel = serde_json::json!({"namespaces": ["shop"]});
        let pod = |extra: J| {
            let mut s = serde_json::json!({"action": "pod-kill", "selector": sel});
            s.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            s
        };
        let net = |extra: J| {
            let mut s =
                serde_json::json!({"action": "loss", "selector": sel, "loss": {"loss": "10"}});
            s.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            s
        };
        let stress = |extra: J| {
            let mut s = serde_json::json!({"selector": sel, "stressors": {"cpu": {"workers": 1}}});
            s.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            s
        };
        let time = |extra: J| {
            let mut s = serde_json::json!({"selector": sel, "timeOffset": "-5m"});
            s.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            s
        };
        let sys = |extra: J| {
            let mut s =
                serde_json::json!({"selector": sel, "syscalls": ["openat"], "errno": "EACCES"});
            s.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            s
        };
        let io = |extra: J| {
            let mut s = serde_json::json!({"action": "latency", "selector": sel, "volumePath": "/data", "delay": "10ms"});
            s.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            s
        };
        let dns = |extra: J| {
            let mut s = serde_json::json!({"action": "error", "selector": sel});
            s.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            s
        };
        let http = |extra: J| {
            let mut s = serde_json::json!({"target": "Request", "port": 80, "abort": true, "selector": sel});
            s.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            s
        };
        use serde_json::json;
        vec![
            (6, MSG_DURATION, dns(json!({"duration": "200h"}))),
            (
                6,
                MSG_VALUE_FIXED,
                dns(json!({"mode": "fixed", "value": "x"})),
            ),
            (
                6,
                "action delay needs delay",
                dns(json!({"action": "delay"})),
            ),
            (
                6,
                "the wildcard `*` is only allowed at the end of a pattern",
                dns(json!({"patterns": ["ok.org", "chaos-*.org"]})),
            ),
            (
                7,
                MSG_VALUE_REQUIRED,
                http(json!({"mode": "random-max-percent"})),
            ),
            (
                7,
                "no action: give at least one of abort: true, delay, replace, patch",
                http(json!({"abort": false})),
            ),
            (7, "path never matches", http(json!({"path": "api/*"}))),
            (
                7,
                "code selects responses by status: it needs `target: Response`",
                http(json!({"code": 200})),
            ),
            (
                7,
                "response_headers select responses: they need `target: Response`",
                http(json!({"response_headers": {"X-A": "b"}})),
            ),
            (
                7,
                "replace.path changes requests: it needs `target: Request`",
                http(json!({"target": "Response", "replace": {"path": "/x"}})),
            ),
            (
                7,
                "replace.method changes requests: it needs `target: Request`",
                http(json!({"target": "Response", "replace": {"method": "PUT"}})),
            ),
            (
                7,
                "replace.queries changes requests: it needs `target: Request`",
                http(json!({"target": "Response", "replace": {"queries": {"a": "b"}}})),
            ),
            (
                7,
                "replace.code changes responses: it needs `target: Response`",
                http(json!({"replace": {"code": 500}})),
            ),
            (
                7,
                "patch.queries changes requests: it needs `target: Request`",
                http(json!({"target": "Response", "patch": {"queries": [["a", "b"]]}})),
            ),
            (3, MSG_DURATION, time(json!({"duration": "0s"}))),
            (3, MSG_VALUE_REQUIRED, time(json!({"mode": "fixed"}))),
            (
                3,
                "containerNames takes at most one name",
                time(json!({"containerNames": ["a", "b"]})),
            ),
            (
                4,
                "list at least one system call",
                sys(json!({"syscalls": []})),
            ),
            (
                4,
                "give errno (what the call returns), delay",
                sys(json!({"errno": null})),
            ),
            (
                4,
                "containerNames takes at most one name",
                sys(json!({"containerNames": ["a", "b"]})),
            ),
            (
                4,
                "path must be absolute",
                sys(json!({"path": "data/*.db"})),
            ),
            (
                5,
                "volumePath must be an absolute directory path",
                io(json!({"volumePath": "data"})),
            ),
            (5, "action latency needs delay", io(json!({"delay": null}))),
            (
                5,
                "action fault needs errno",
                io(json!({"action": "fault", "delay": null})),
            ),
            (
                5,
                "action attrOverride needs attr",
                io(json!({"action": "attrOverride", "delay": null})),
            ),
            (
                5,
                "action mistake needs mistake",
                io(json!({"action": "mistake", "delay": null})),
            ),
            (
                5,
                "delay only applies to action latency",
                io(json!({"action": "fault", "errno": 5})),
            ),
            (
                5,
                "errno and faults only apply to action fault",
                io(json!({"errno": "EIO"})),
            ),
            (
                5,
                "attr only applies to action attrOverride",
                io(json!({"attr": {"perm": 420}})),
            ),
            (
                5,
                "mistake only applies to action mistake",
                io(json!({"mistake": {"filling": "zero", "maxOccurrences": 1, "maxLength": 1}})),
            ),
            (
                5,
                "containerNames takes at most one name",
                io(json!({"containerNames": ["a", "b"]})),
            ),
            (
                0,
                "containerNames only applies to action container-kill",
                pod(json!({"containerNames": ["app"]})),
            ),
            (0, MSG_DURATION, pod(json!({"duration": "0s"}))),
            (1, MSG_DURATION, net(json!({"duration": "169h"}))),
            (2, MSG_DURATION, stress(json!({"duration": "0"}))),
            (0, MSG_VALUE_REQUIRED, pod(json!({"mode": "fixed"}))),
            (
                0,
                MSG_VALUE_UNUSED,
                pod(json!({"mode": "all", "value": "3"})),
            ),
            (
                0,
                MSG_VALUE_FIXED,
                pod(json!({"mode": "fixed", "value": "0"})),
            ),
            (
                0,
                MSG_VALUE_PERCENT,
                pod(json!({"mode": "fixed-percent", "value": "101"})),
            ),
            (
                0,
                "gracePeriod only applies to action pod-kill",
                pod(json!({"action": "pod-failure", "gracePeriod": 5})),
            ),
            (
                0,
                "containerNames is required with action container-kill",
                pod(json!({"action": "container-kill"})),
            ),
            (
                1,
                MSG_VALUE_REQUIRED,
                net(json!({"mode": "random-max-percent"})),
            ),
            (
                1,
                MSG_VALUE_PERCENT,
                net(json!({"mode": "random-max-percent", "value": "0"})),
            ),
            (
                1,
                "target.value is required with target modes fixed",
                net(json!({"target": {"selector": {}, "mode": "fixed"}})),
            ),
            (1, "action loss needs loss", net(json!({"loss": null}))),
            (
                1,
                "action delay needs delay",
                net(json!({"action": "delay", "loss": null})),
            ),
            (
                1,
                "action duplicate needs duplicate",
                net(json!({"action": "duplicate", "loss": null})),
            ),
            (
                1,
                "action corrupt needs corrupt",
                net(json!({"action": "corrupt", "loss": null})),
            ),
            (
                1,
                "action bandwidth needs bandwidth",
                net(json!({"action": "bandwidth", "loss": null})),
            ),
            (
                1,
                "action netem needs at least one of",
                net(json!({"action": "netem", "loss": null})),
            ),
            (
                1,
                "loss only applies to actions loss and netem",
                net(json!({"action": "partition"})),
            ),
            (
                1,
                "delay only applies to actions delay and netem",
                net(json!({"delay": {"latency": "10ms"}})),
            ),
            (
                1,
                "duplicate only applies to actions duplicate and netem",
                net(json!({"duplicate": {"duplicate": "5"}})),
            ),
            (
                1,
                "corrupt only applies to actions corrupt and netem",
                net(json!({"corrupt": {"corrupt": "5"}})),
            ),
            (
                1,
                "bandwidth only applies to actions bandwidth and netem",
                net(json!({"bandwidth": {"rate": "1mbit"}})),
            ),
            (
                2,
                MSG_VALUE_FIXED,
                stress(json!({"mode": "fixed", "value": "two"})),
            ),
            (
                2,
                "give at least one stressor",
                stress(json!({"stressors": {}})),
            ),
        ]
    }

    fn rust_problems(kind: usize, spec: J) -> Vec<String> {
        let mut p = Problems::new();
        let sp = FieldPath::root().key("spec");
        match kind {
            0 => serde_json::from_value::<PodChaosSpec>(spec)
                .unwrap()
                .validate_spec(&sp, &mut p),
            1 => serde_json::from_value::<NetworkChaosSpec>(spec)
                .unwrap()
                .validate_spec(&sp, &mut p),
            3 => serde_json::from_value::<TimeChaosSpec>(spec)
                .unwrap()
                .validate_spec(&sp, &mut p),
            4 => serde_json::from_value::<SyscallChaosSpec>(spec)
                .unwrap()
                .validate_spec(&sp, &mut p),
            5 => serde_json::from_value::<IOChaosSpec>(spec)
                .unwrap()
                .validate_spec(&sp, &mut p),
            6 => serde_json::from_value::<DNSChaosSpec>(spec)
                .unwrap()
                .validate_spec(&sp, &mut p),
            7 => serde_json::from_value::<HTTPChaosSpec>(spec)
                .unwrap()
                .validate_spec(&sp, &mut p),
            _ => serde_json::from_value::<StressChaosSpec>(spec)
                .unwrap()
                .validate_spec(&sp, &mut p),
        }
        p.into_vec()
            .into_iter()
            .map(|(path, m)| format!("{path}: {m}"))
            .collect()
    }

    #[test]
    fn every_cel_rule_is_in_the_crd_and_in_the_rust_validation() {
        let crds = crds();
        /// Every rule of a schema: the spec's own and those on its fields' items.
        fn rules(s: &J, out: &mut Vec<J>) {
            match s {
                J::Object(o) => {
                    if let Some(J::Array(r)) = o.get("x-kubernetes-validations") {
                        out.extend(r.iter().cloned());
                    }
                    o.values().for_each(|v| rules(v, out));
                }
                J::Array(a) => a.iter().for_each(|v| rules(v, out)),
                _ => {}
            }
        }
        for (kind, message, spec) in cel_cases() {
            let mut all = Vec::new();
            rules(&schema_of(&crds[kind])["properties"]["spec"], &mut all);
            let rules = J::Array(all);
            let present = rules.as_array().unwrap().iter().any(|r| {
                r["message"].as_str().unwrap().starts_with(message) && r["rule"].is_string()
            });
            assert!(
                present,
                "kind {kind}: no CEL rule with message `{message}`: {rules:#}"
            );
            let problems = rust_problems(kind, spec.clone());
            let normalized = |s: &str| s.replace("stressors: give", "give");
            assert!(
                problems.iter().any(|p| normalized(p).contains(message)
                    || (message.starts_with("action ") && p.contains("is required with action"))
                    || (message.contains("only applies")
                        && p.contains("does not apply to action"))
                    || (message == MSG_VALUE_REQUIRED
                        && p.contains("value: is required with mode"))
                    || (message.starts_with("target.value")
                        && p.contains("spec.target.value: is required with mode"))
                    || (message == MSG_VALUE_UNUSED
                        && p.contains("value is only used with modes"))
                    || (message == MSG_VALUE_FIXED && p.contains("whole number >= 1"))
                    || (message == MSG_VALUE_PERCENT && p.contains("percentage 1..=100"))
                    || (message.starts_with("volumePath must be an absolute")
                        && p.contains("spec.volumePath: must be an absolute"))
                    || (message.starts_with("path must be absolute")
                        && p.contains("spec.path:")
                        && p.contains("must be absolute"))
                    || (message.starts_with("errno and faults only apply")
                        && p.contains("errno does not apply to action"))
                    || (message == "path never matches"
                        && p.contains("spec.path:")
                        && p.contains("never matches: request paths start with `/`"))),
                "kind {kind}: Rust validation misses `{message}` for {spec}: {problems:?}"
            );
        }
    }

    fn strip_nulls(v: &mut J) {
        if let J::Object(m) = v {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
    }

    fn cel_check(kind: usize, spec: &J) -> Result<(), Vec<String>> {
        let crd = &crds()[kind];
        let mut spec = spec.clone();
        strip_nulls(&mut spec);
        let object = serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": crd.spec.names.kind,
            "metadata": {"name": "x", "namespace": "shop"},
            "spec": spec,
        });
        kube::core::cel::Validator::new()
            .validate(&schema_of(crd), &object, None)
            .map_err(|e| e.into_vec().into_iter().map(|e| e.message).collect())
    }

    #[test]
    fn the_cel_rules_compile_and_reject_what_they_say() {
        // Evaluated by kube's CEL interpreter, with schema defaults applied as the API server does.
        for (kind, message, spec) in cel_cases() {
            if message.starts_with("response_headers") {
                // kube-cel 0.8 escapes `_` in field names as `__`; the API server (1.36) reads
                // `self.response_headers` as written (it escapes only `__`, `.`, `-`, `/`), so
                // this rule is checked against the real server (havoc-operator's
                // chaos_mesh_dry_run test).
                continue;
            }
            let errors = cel_check(kind, &spec).expect_err(message);
            assert!(
                errors.iter().any(|e| e.starts_with(message)),
                "kind {kind}: `{message}` not raised for {spec}: {errors:?}"
            );
        }
    }

    #[test]
    fn the_cel_rules_are_in_scope_and_within_the_cost_budget() {
        use kube::core::cel::{analyze_rule, compile_schema, ScopeContext};
        for crd in crds() {
            let spec = schema_of(&crd)["properties"]["spec"].clone();
            let compiled = compile_schema(&spec);
            assert!(
                !compiled.has_errors(),
                "{}: {:?}",
                crd.spec.names.kind,
                compiled.compilation_errors()
            );
            for rule in spec["x-kubernetes-validations"].as_array().unwrap() {
                let rule = rule["rule"].as_str().unwrap();
                let warnings = analyze_rule(rule, &compiled, ScopeContext::CrdValidation);
                assert!(
                    warnings.is_empty(),
                    "{}: `{rule}`: {warnings:?}",
                    crd.spec.names.kind
                );
            }
        }
    }

    #[test]
    fn valid_specs_pass_both_validations() {
        use serde_json::json;
        let sel = json!({"namespaces": ["shop"], "labelSelectors": {"app": "web"}});
        let valid = [
            (
                0,
                json!({"action": "container-kill", "selector": sel, "containerNames": ["app"], "mode": "fixed", "value": "2"}),
            ),
            (
                0,
                json!({"action": "pod-kill", "selector": sel, "gracePeriod": 0}),
            ),
            (
                1,
                json!({"action": "netem", "selector": sel, "mode": "fixed-percent", "value": "100", "delay": {"latency": "100ms", "jitter": "10ms"}, "loss": {"loss": "5"}, "duration": "30s"}),
            ),
            (
                1,
                json!({"action": "partition", "selector": sel, "direction": "both"}),
            ),
            (
                1,
                json!({"action": "loss", "selector": sel, "lossModel": "gilbertElliott", "gilbertElliott": {"p": "1", "r": "20"}}),
            ),
            (
                2,
                json!({"selector": sel, "mode": "all", "stressors": {"memory": {"size": "256MiB"}}, "duration": "1m"}),
            ),
            (
                2,
                json!({"selector": sel, "mode": "random-max-percent", "value": "1", "stressors": {"cpu": {"workers": 1}}}),
            ),
            (
                3,
                json!({"selector": sel, "timeOffset": "-1h30m", "clockIds": ["CLOCK_REALTIME", "CLOCK_MONOTONIC"], "containerNames": ["app"], "duration": "1m"}),
            ),
            (
                4,
                json!({"selector": sel, "syscalls": ["openat", "connect"], "errno": 13, "percent": "30", "delay": "5ms", "mode": "one"}),
            ),
            (
                4,
                json!({"selector": sel, "syscalls": ["openat"], "delay": "5ms", "path": "/data/**/*.db"}),
            ),
            (
                5,
                json!({"action": "fault", "selector": sel, "volumePath": "/var/lib/app", "path": "**/*.db", "methods": ["READ", "write"], "percent": 30, "errno": 5}),
            ),
            (
                5,
                json!({"action": "fault", "selector": sel, "volumePath": "/var/lib/app", "faults": [{"errno": "EIO", "weight": 3}, {"errno": 28}]}),
            ),
            (
                5,
                json!({"action": "attrOverride", "selector": sel, "volumePath": "/data", "attr": {"perm": 420, "size": 1, "kind": "regularFile", "mtime": {"sec": 0}}}),
            ),
            (
                5,
                json!({"action": "mistake", "selector": sel, "volumePath": "/data", "methods": ["read"], "mistake": {"filling": "random", "maxOccurrences": 2, "maxLength": 8}}),
            ),
            (
                6,
                json!({"action": "random", "selector": sel, "patterns": ["google.com", "chaos-mesh.*", "github.?om"], "mode": "all", "duration": "5m"}),
            ),
            (
                6,
                json!({"action": "delay", "selector": sel, "delay": "200ms", "percent": "50"}),
            ),
            (
                7,
                json!({"target": "Response", "port": 8080, "selector": sel, "path": "/api/*", "method": "GET", "code": 200,
                       "request_headers": {"X-User": "a"}, "response_headers": {"Content-Type": "application/json"},
                       "delay": "100ms", "replace": {"code": 503, "body": "eyJvayI6ZmFsc2V9", "headers": {"X-A": "b"}},
                       "patch": {"body": {"type": "JSON", "value": "{\"degraded\": true}"}, "headers": [["X-Chaos", "1"]]},
                       "percent": "50"}),
            ),
            (
                7,
                json!({"target": "Request", "port": 80, "selector": sel, "path": "*", "abort": true,
                       "replace": {"path": "/v2", "method": "PUT", "queries": {"a": "b"}}, "patch": {"queries": [["c", "d"]]}}),
            ),
        ];
        for (kind, spec) in valid {
            assert_eq!(
                cel_check(kind, &spec),
                Ok(()),
                "CEL rejects a valid spec: {spec}"
            );
            assert_eq!(rust_problems(kind, spec), Vec::<String>::new());
        }
    }

    #[test]
    fn network_spec_carries_every_host_fault_parameter() {
        // Every field of host mode's NetworkChaos except its selector exists in the CRD spec.
        let host = havoc_spec::network::NetworkChaos {
            action: NetworkAction::Netem,
            selector: Default::default(),
            direction: Direction::Both,
            external_targets: vec!["10.0.0.0/8".into()],
            device: Some("eth0".into()),
            ports: vec![80],
            protocols: vec![Protocol::Tcp],
            loss: Some(LossSpec {
                loss: "5".parse().unwrap(),
                correlation: "1".parse().unwrap(),
            }),
            loss_model: LossModel::Bernoulli,
            gilbert_elliott: Some(GilbertElliott {
                p: "1".parse().unwrap(),
                r: "50".parse().unwrap(),
                bad_loss: "100".parse().unwrap(),
                good_loss: "0".parse().unwrap(),
            }),
            delay: Some(DelaySpec {
                latency: "10ms".parse().unwrap(),
                jitter: "1ms".parse().unwrap(),
                correlation: Default::default(),
                reorder: None,
            }),
            duplicate: Some(DuplicateSpec {
                duplicate: "1".parse().unwrap(),
                correlation: Default::default(),
            }),
            corrupt: Some(CorruptSpec {
                corrupt: "1".parse().unwrap(),
                correlation: Default::default(),
                checksum: Default::default(),
            }),
            bandwidth: Some(BandwidthSpec {
                rate: "1mbit".parse().unwrap(),
                limit: None,
                buffer: None,
            }),
        };
        let mut v = serde_json::to_value(&host).unwrap();
        v.as_object_mut()
            .unwrap()
            .insert("selector".into(), serde_json::json!({}));
        let spec: NetworkChaosSpec =
            serde_json::from_value(v).expect("host parameters fit the CRD spec");
        assert_eq!(spec.fault(), host);
        let props = schema_of(&NetworkChaos::crd())["properties"]["spec"]["properties"].clone();
        for k in serde_json::to_value(&host)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
        {
            assert!(props.get(k).is_some(), "CRD schema lacks `{k}`");
        }
    }

    fn object<K: kube::Resource<DynamicType = ()>>(mut o: K, uid: Option<&str>) -> K {
        o.meta_mut().namespace = Some("shop".into());
        o.meta_mut().uid = uid.map(str::to_string);
        o
    }

    #[test]
    fn chaos_objects_say_what_to_do() {
        let spec: PodChaosSpec = serde_json::from_value(serde_json::json!({
            "action": "pod-kill", "selector": {}, "mode": "fixed", "value": "2", "gracePeriod": 0
        }))
        .unwrap();
        let a = object(PodChaos::new("kill", spec.clone()), Some("u-1"));
        let b = object(PodChaos::new("kill", spec.clone()), Some("u-1"));
        let c = object(PodChaos::new("kill", spec), Some("u-2"));
        assert_eq!(a.seed(), b.seed(), "same uid, same seed");
        assert_ne!(a.seed(), c.seed());
        assert_eq!(a.mode(), Mode::Fixed(2));
        assert_eq!(
            a.action(),
            ChaosAction::PodKill {
                grace_period_seconds: Some(0)
            }
        );
        assert_eq!(a.action_name(), "pod-kill");
        assert!(a.validate().is_ok());
        let mut seeded = a.clone();
        seeded.spec.seed = Some(99);
        assert_eq!(seeded.seed(), 99);

        let net: NetworkChaosSpec = serde_json::from_value(serde_json::json!({
            "action": "loss", "selector": {}, "loss": {"loss": "10"}, "duration": "30s"
        }))
        .unwrap();
        let n = object(NetworkChaos::new("loss", net), Some("u-3"));
        assert_eq!(n.action_name(), "loss 10%");
        assert_eq!(n.duration(), Some(Duration::from_secs(30)));
        match n.action() {
            ChaosAction::Agent {
                fault: FaultSpec::NetworkChaos(f),
                container_names,
            } => {
                assert_eq!(f.loss.unwrap().loss.value(), 10.0);
                assert!(container_names.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let stress: StressChaosSpec = serde_json::from_value(serde_json::json!({
            "selector": {}, "mode": "fixed", "value": "x", "stressors": {"cpu": {"workers": 2, "load": 50}}, "containerNames": ["app"]
        }))
        .unwrap();
        let s = object(StressChaos::new("cpu", stress), None);
        assert_eq!(s.action_name(), "cpu 2x50%");
        assert_eq!(s.mode(), Mode::Fixed(0), "an invalid value selects nothing");
        let e = s.validate().unwrap_err();
        assert_eq!(e.0[0].path.to_string(), "spec.value");
        assert!(
            matches!(s.action(), ChaosAction::Agent { container_names, .. } if container_names == ["app"])
        );
    }
}
