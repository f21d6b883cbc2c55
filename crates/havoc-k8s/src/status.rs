//! The status of a chaos object: phase, conditions, counts, and one compact record per target.
//!
//! A chaos object may hit thousands of pods and its status must stay well under the API server's
//! object size limit (about 50 bytes per target for 5,000 targets in 256 KiB). So:
//! - each record is one short line, `POD CONTAINER12 NODE#[@SINCE][+SERVED] [i=N] [r=N]`: the
//!   container id shortened as `crictl` shows it (the full id is re-read from the pod), the node
//!   as an index into `records.nodes` (node names are long and shared by many pods), and the
//!   target's own fault clock (see [`Record::since_ms`]) as base-36 milliseconds glued to the
//!   node number (`12@4mo`: 4 bytes for an injection within 46 s of the start, where a
//!   ` t=6000` item would cost 7 and push a 5,000-target status over 256 KiB);
//! - agent injection ids are not kept: the operator finds its injections again through the
//!   agent's `List` and the idempotency keys it builds itself (`id=` items written by older
//!   versions are accepted and dropped);
//! - records are grouped by namespace, phase and error, so a namespace is written once per group
//!   and an error once for every pod that failed the same way (a node whose agent is down costs
//!   one message, not one per pod); errors are kept only on failed and gone records, truncated;
//! - a record's counts equal to their phase's default are omitted, and there is no history;
//! - a pod replaced under the same name is told apart from the one injected: a container-level
//!   target by its new container id ([`needs_reinjection`] sees it like a restarted container),
//!   a pod-level one (pod-failure: no container id) by the first [`UID_LEN`] hex digits of its
//!   uid, `u=` in its line (kept only there, so a 5,000-target status of containers is not
//!   longer).

use std::str::FromStr;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Characters of a container id kept in a record, as `crictl ps` shows them.
pub const CONTAINER_ID_LEN: usize = 12;
/// Hex digits of a pod uid kept in a pod-level record (32 bits: telling one pod from its
/// replacement under the same name, not naming pods cluster-wide).
pub const UID_LEN: usize = 8;
/// Bytes of an error message kept in a record.
pub const ERROR_LEN: usize = 200;

/// Condition types the operator maintains.
pub const SELECTED: &str = "Selected";
/// Every selected target has been injected.
pub const ALL_INJECTED: &str = "AllInjected";
/// Every target has been recovered (or is gone).
pub const ALL_RECOVERED: &str = "AllRecovered";
/// The chaos object is paused (`havoc.dev/pause: "true"` annotation).
pub const PAUSED: &str = "Paused";

/// Where a chaos object is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted, nothing done yet.
    #[default]
    Pending,
    /// Listing and choosing pods.
    Selecting,
    /// Injecting into the chosen pods.
    Injecting,
    /// Every fault is in place until the duration ends.
    Running,
    /// Faults removed while paused; injected again on resume.
    Paused,
    /// Removing the faults.
    Recovering,
    /// Every fault was removed (or its pod is gone).
    Finished,
    /// The experiment could not be carried out; see conditions and records.
    Failed,
}

/// Where one target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RecordPhase {
    Injecting,
    Injected,
    Recovering,
    Recovered,
    Failed,
    /// The pod was deleted or replaced while the fault was on it.
    Gone,
}

/// How many targets are in each state.
///
/// Every count is written, zeros included: status is written with a merge patch, and a count
/// left out would keep its old value on the server (`injected: 1000` after the run finished).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    #[serde(default)]
    pub selected: u32,
    #[serde(default)]
    pub injected: u32,
    #[serde(default)]
    pub recovered: u32,
    #[serde(default)]
    pub failed: u32,
    #[serde(default)]
    pub gone: u32,
}

/// The status subresource of every chaos kind.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChaosStatus {
    /// Pending, Selecting, Injecting, Running, Paused, Recovering, Finished or Failed.
    #[serde(default)]
    pub phase: Phase,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Selected, AllInjected, AllRecovered, Paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the first injection started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the faults are due to be removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<Time>,
    /// Targets per state.
    #[serde(default)]
    pub counts: Counts,
    /// The peer addresses of a NetworkChaos with `target` or host names, as last looked up:
    /// `ADDRESS (FROM)`, FROM being `pod NS/NAME` or the host name (at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub peers: Vec<String>,
    /// One record per target: `nodes` (node names) and `groups` (by namespace, phase and error)
    /// of lines `POD CONTAINER12 NODE# [i=INJECTIONS] [r=RECOVERIES] [u=POD-UID8]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "grouped")]
    #[schemars(with = "grouped::Wire")]
    pub records: Vec<Record>,
}

/// One target: a pod (and the container the agent acts in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub namespace: String,
    pub name: String,
    /// The node the pod runs on; empty if not scheduled.
    pub node: String,
    /// The first [`CONTAINER_ID_LEN`] hex digits of the target container's id (no runtime prefix);
    /// empty if none.
    pub container_id: String,
    /// The first [`UID_LEN`] hex digits of the pod's uid when the fault was injected, for
    /// pod-level targets (no container id); empty otherwise.
    pub pod_uid: String,
    pub phase: RecordPhase,
    /// How many times the fault was injected (more than one after pod restarts).
    pub injected: u32,
    /// How many times it was recovered.
    pub recovered: u32,
    /// The last error; kept only while Failed or Gone, at most [`ERROR_LEN`] bytes.
    pub last_error: Option<String>,
    /// The target's own fault clock: when its current period in effect began (once recovered:
    /// its last one), in milliseconds after `startedAt` (which is kept to the whole second, so
    /// the offset is exact), as measured when the injection succeeded. `None` while the fault
    /// is not on it (not injected yet, or taken off by a pause). A record written before this
    /// existed has none: read it through [`ChaosStatus::since_unix_ms`], which falls back to
    /// `startedAt` for an injected record.
    pub since_ms: Option<u64>,
    /// Active time served in periods that ended (before a pause; once recovered, all of them),
    /// in milliseconds. A target is due for recovery when `served + (now - since)` reaches the
    /// duration.
    pub served_ms: u64,
}

/// `0f1e2d3c-4b5a-...` -> `0f1e2d3c`: the part of a pod uid a pod-level record keeps.
pub fn short_uid(uid: &str) -> String {
    uid.chars()
        .filter(char::is_ascii_hexdigit)
        .take(UID_LEN)
        .collect()
}

/// `containerd://0123456789abcdef...` -> `0123456789ab`.
pub fn short_container_id(id: &str) -> String {
    let bare = id.rsplit_once("://").map_or(id, |(_, b)| b);
    bare.chars().take(CONTAINER_ID_LEN).collect()
}

fn truncate(s: &str, max: usize) -> String {
    let one_line = s.replace(['\n', '\r'], " ");
    if one_line.len() <= max {
        return one_line;
    }
    let mut end = max;
    while !one_line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &one_line[..end])
}

impl Record {
    /// A new record for a pod about to be injected.
    pub fn new(pod: &Pod, container_id: &str) -> Self {
        let m = &pod.metadata;
        Record {
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            container_id: short_container_id(container_id),
            pod_uid: if container_id.is_empty() {
                short_uid(m.uid.as_deref().unwrap_or_default())
            } else {
                String::new()
            },
            phase: RecordPhase::Injecting,
            injected: 0,
            recovered: 0,
            last_error: None,
            since_ms: None,
            served_ms: 0,
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn default_injected(&self) -> u32 {
        match self.phase {
            RecordPhase::Injected | RecordPhase::Recovering | RecordPhase::Recovered => 1,
            _ => 0,
        }
    }

    fn default_recovered(&self) -> u32 {
        u32::from(self.phase == RecordPhase::Recovered)
    }
}

impl Record {
    /// The one-line form inside a group: `POD CONTAINER12 NODE# [i=N] [r=N]`; `node`
    /// is the index of the record's node in the node table, `None` if it has none.
    fn line(&self, node: Option<usize>) -> String {
        use std::fmt::Write;
        let mut f = String::with_capacity(48);
        let cid = if self.container_id.is_empty() {
            "-"
        } else {
            &self.container_id
        };
        let _ = write!(f, "{} {cid} ", self.name);
        match node {
            Some(n) => {
                let _ = write!(f, "{n}");
            }
            None => f.push('-'),
        }
        if let Some(t) = self.since_ms {
            f.push('@');
            push_base36(&mut f, t);
        }
        if self.served_ms > 0 {
            f.push('+');
            push_base36(&mut f, self.served_ms);
        }
        if self.injected != self.default_injected() {
            let _ = write!(f, " i={}", self.injected);
        }
        if self.recovered != self.default_recovered() {
            let _ = write!(f, " r={}", self.recovered);
        }
        if !self.pod_uid.is_empty() {
            let _ = write!(f, " u={}", self.pod_uid);
        }
        f
    }
}

fn push_base36(f: &mut String, mut v: u64) {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut buf = [0u8; 13];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = DIGITS[(v % 36) as usize];
        v /= 36;
        if v == 0 {
            break;
        }
    }
    f.extend(buf[i..].iter().map(|&b| b as char));
}

fn parse_base36(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 12 {
        return None;
    }
    u64::from_str_radix(s, 36).ok()
}

/// `12@4mo+1a` -> (`12`, since 4mo, served 1a): the node number and the target's clock.
fn split_clock(field: &str) -> Result<(&str, Option<u64>, u64), String> {
    let end = field.find(['@', '+']).unwrap_or(field.len());
    let (node, mut rest) = field.split_at(end);
    let mut since = None;
    let mut served = 0;
    if let Some(r) = rest.strip_prefix('@') {
        let n = r.find('+').unwrap_or(r.len());
        since = Some(
            parse_base36(&r[..n])
                .ok_or_else(|| format!("`{field}`: `@{}` is not base-36 milliseconds", &r[..n]))?,
        );
        rest = &r[n..];
    }
    if let Some(r) = rest.strip_prefix('+') {
        served = parse_base36(r)
            .ok_or_else(|| format!("`{field}`: `+{r}` is not base-36 milliseconds"))?;
        rest = "";
    }
    if !rest.is_empty() {
        return Err(format!("`{field}`: unexpected `{rest}`"));
    }
    Ok((node, since, served))
}

/// Parses the one-line form; namespace, node and phase come from the group.
fn parse_line(line: &str, g: &grouped::Group, nodes: &[String]) -> Result<Record, String> {
    let mut it = line.split_whitespace();
    let mut next = |what: &str| {
        it.next()
            .map(|s| {
                if s == "-" {
                    String::new()
                } else {
                    s.to_string()
                }
            })
            .ok_or_else(|| {
                format!("record `{line}` has no {what}: expected `POD CONTAINER NODE# [i=N] [r=N]`")
            })
    };
    let name = next("pod name")?;
    let container_id = next("container id")?;
    let node_field = next("node number")?;
    let (node_ix, since_ms, served_ms) =
        split_clock(&node_field).map_err(|e| format!("record `{line}`: {e}"))?;
    let node_ix = if node_ix == "-" { "" } else { node_ix };
    let node = if node_ix.is_empty() {
        String::new()
    } else {
        node_ix
            .parse::<usize>()
            .ok()
            .and_then(|i| nodes.get(i))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "record `{line}`: node number `{node_ix}` is not an index into records.nodes"
                )
            })?
    };
    let mut r = Record {
        namespace: g.namespace.clone(),
        name,
        node,
        container_id,
        pod_uid: String::new(),
        phase: g.phase,
        injected: 0,
        recovered: 0,
        last_error: g.error.clone(),
        since_ms,
        served_ms,
    };
    r.injected = r.default_injected();
    r.recovered = r.default_recovered();
    for tok in it {
        let num = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("record `{line}`: `{tok}` is not a count"))
        };
        match tok.split_once('=') {
            Some(("i", v)) => r.injected = num(v)?,
            Some(("r", v)) => r.recovered = num(v)?,
            Some(("u", v)) => r.pod_uid = v.to_string(),
            // Written by versions that kept the agent's injection id; no longer used.
            Some(("id", _)) => {}
            _ => return Err(format!("record `{line}`: unknown item `{tok}`")),
        }
    }
    Ok(r)
}

/// The wire form of `records`: a node table and groups of one-line records.
mod grouped {
    use super::*;
    use serde::{Deserializer, Serializer};

    /// `records` as written: node names once, then the records by namespace, phase and error.
    #[derive(Serialize, Deserialize, JsonSchema)]
    pub(super) struct Wire {
        /// Node names; a record's NODE# indexes this list.
        #[serde(default)]
        nodes: Vec<String>,
        /// Records of one namespace, phase and error.
        #[serde(default)]
        groups: Vec<Group>,
    }

    /// Records of one namespace, phase and error.
    #[derive(Serialize, Deserialize, JsonSchema)]
    pub(super) struct Group {
        pub(super) namespace: String,
        pub(super) phase: RecordPhase,
        /// The last error of these targets (Failed and Gone only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(super) error: Option<String>,
        /// One line per pod: `POD CONTAINER12 NODE# [i=INJECTIONS] [r=RECOVERIES] [u=POD-UID8]`.
        pub(super) pods: Vec<String>,
    }

    pub(super) fn serialize<S: Serializer>(records: &[Record], s: S) -> Result<S::Ok, S::Error> {
        let mut nodes: Vec<&str> = records
            .iter()
            .map(|r| r.node.as_str())
            .filter(|n| !n.is_empty())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        type Key<'a> = (&'a str, u8, Option<&'a str>);
        let mut groups: std::collections::BTreeMap<Key<'_>, Vec<String>> = Default::default();
        for r in records {
            let node = nodes.binary_search(&r.node.as_str()).ok();
            groups
                .entry((&r.namespace, r.phase as u8, r.last_error.as_deref()))
                .or_default()
                .push(r.line(node));
        }
        let phases = [
            RecordPhase::Injecting,
            RecordPhase::Injected,
            RecordPhase::Recovering,
            RecordPhase::Recovered,
            RecordPhase::Failed,
            RecordPhase::Gone,
        ];
        Wire {
            nodes: nodes.into_iter().map(str::to_string).collect(),
            groups: groups
                .into_iter()
                .map(|((ns, ph, error), pods)| Group {
                    namespace: ns.to_string(),
                    phase: phases[ph as usize],
                    error: error.map(str::to_string),
                    pods,
                })
                .collect(),
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Record>, D::Error> {
        let w = Wire::deserialize(d)?;
        let mut out = Vec::new();
        for g in &w.groups {
            for line in &g.pods {
                out.push(parse_line(line, g, &w.nodes).map_err(serde::de::Error::custom)?);
            }
        }
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(out)
    }
}

impl FromStr for RecordPhase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| e.to_string())
    }
}

impl ChaosStatus {
    /// The record of `namespace/name`, if any.
    pub fn find(&self, namespace: &str, name: &str) -> Option<&Record> {
        self.index(namespace, name).ok().map(|i| &self.records[i])
    }

    /// The record of `namespace/name`, to update.
    pub fn find_mut(&mut self, namespace: &str, name: &str) -> Option<&mut Record> {
        self.index(namespace, name)
            .ok()
            .map(|i| &mut self.records[i])
    }

    fn index(&self, namespace: &str, name: &str) -> Result<usize, usize> {
        self.records
            .binary_search_by(|r| (r.namespace.as_str(), r.name.as_str()).cmp(&(namespace, name)))
    }

    /// The condition of this type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// `startedAt` in Unix milliseconds.
    pub fn started_unix_ms(&self) -> Option<i64> {
        self.started_at.as_ref().map(|t| t.0.as_millisecond())
    }

    /// When `record`'s fault came into effect (its current period; once recovered, its last
    /// one), in Unix milliseconds. A record written before records kept their own clock has no
    /// [`Record::since_ms`]: one in effect (Injected, Recovering) falls back to `startedAt`.
    pub fn since_unix_ms(&self, record: &Record) -> Option<i64> {
        let start = self.started_unix_ms()?;
        running_since(record).map(|ms| start.saturating_add(ms as i64))
    }

    /// `at` (Unix milliseconds) as milliseconds after `startedAt`: what a record keeps. 0 for
    /// a time before the start (clocks of two operator hosts disagreeing) or without a start.
    pub fn offset_ms(&self, at_unix_ms: i64) -> u64 {
        self.started_unix_ms()
            .map_or(0, |s| at_unix_ms.saturating_sub(s).max(0) as u64)
    }
}

/// The start of `record`'s period in effect in ms after `startedAt`; `startedAt` itself (0) for
/// an in-effect record written before records kept their own clock.
fn running_since(record: &Record) -> Option<u64> {
    match record.since_ms {
        Some(ms) => Some(ms),
        None if matches!(
            record.phase,
            RecordPhase::Injected | RecordPhase::Recovering
        ) =>
        {
            Some(0)
        }
        None => None,
    }
}

/// The fault came into effect on `record` `at_ms` after `startedAt` (the moment its injection
/// succeeded): [`mark_injected`], and the target's clock starts unless it runs already. A
/// target injected again after its container restarted or its pod was replaced under the same
/// name continues its own clock: the restart does not buy it a new full duration, so it is
/// recovered when the duration of its first injection (less any pause) is over.
pub fn mark_injected_at(record: &mut Record, at_ms: u64) {
    record.since_ms = Some(running_since(record).unwrap_or(at_ms));
    mark_injected(record);
}

/// The fault was taken off `record` `at_ms` after `startedAt`: [`mark_recovered`], and the
/// period in effect is added to [`Record::served_ms`]. A pause (`paused`) stops the clock (the
/// target gets its remaining time when injected again); a final recovery keeps `since_ms` as
/// the start of the last period, so a recovered record shows when its fault last came into
/// effect and, in `served_ms`, how long it was held in all.
pub fn mark_recovered_at(record: &mut Record, at_ms: u64, paused: bool) {
    if let Some(since) = running_since(record) {
        record.served_ms = record.served_ms.saturating_add(at_ms.saturating_sub(since));
        record.since_ms = if paused { None } else { Some(since) };
    }
    mark_recovered(record);
}

/// The record for `pod`, created in phase Injecting if absent; an existing record keeps its
/// state and takes the pod's current node.
pub fn upsert_target<'a>(
    status: &'a mut ChaosStatus,
    pod: &Pod,
    container_id: &str,
) -> &'a mut Record {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match status.index(ns, name) {
        Ok(i) => {
            if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                status.records[i].node = node.to_string();
            }
            &mut status.records[i]
        }
        Err(i) => {
            status.records.insert(i, Record::new(pod, container_id));
            &mut status.records[i]
        }
    }
}

/// The fault is in place (again).
pub fn mark_injected(record: &mut Record) {
    record.phase = RecordPhase::Injected;
    record.injected += 1;
    record.last_error = None;
}

/// Recovery of this target has started.
pub fn mark_recovering(record: &mut Record) {
    if record.phase != RecordPhase::Recovered {
        record.phase = RecordPhase::Recovering;
    }
}

/// The fault is removed.
pub fn mark_recovered(record: &mut Record) {
    record.phase = RecordPhase::Recovered;
    record.recovered += 1;
    record.last_error = None;
}

/// The pod went away (deleted, evicted, replaced); `reason` is kept, truncated.
pub fn mark_gone(record: &mut Record, reason: &str) {
    record.phase = RecordPhase::Gone;
    record.last_error = Some(truncate(reason, ERROR_LEN));
}

/// Injecting or recovering failed; `err` is kept, truncated.
pub fn mark_failed(record: &mut Record, err: &str) {
    record.phase = RecordPhase::Failed;
    record.last_error = Some(truncate(err, ERROR_LEN));
}

/// True if the fault must be injected again: it was in place, and the target container now has
/// another id (the container restarted, or the pod was replaced under the same name).
pub fn needs_reinjection(record: &Record, current_container_id: &str) -> bool {
    let current = short_container_id(current_container_id);
    record.phase == RecordPhase::Injected
        && !current.is_empty()
        && !record.container_id.is_empty()
        && current != record.container_id
}

/// Sets `type_` to `status`; `lastTransitionTime` changes only when the status does.
pub fn set_condition(
    st: &mut ChaosStatus,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    now: &Time,
) {
    let s = if status { "True" } else { "False" };
    match st.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != s {
                c.last_transition_time = now.clone();
                c.status = s.to_string();
            }
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = st.observed_generation;
        }
        None => st.conditions.push(Condition {
            type_: type_.to_string(),
            status: s.to_string(),
            reason: reason.to_string(),
            message,
            last_transition_time: now.clone(),
            observed_generation: st.observed_generation,
        }),
    }
}

/// Pauses or resumes: the Paused condition, which [`derive_conditions`] keeps.
pub fn set_paused(status: &mut ChaosStatus, paused: bool, now: &Time) {
    let (reason, msg) = if paused {
        (
            "PauseRequested",
            "paused by annotation: faults are removed until resumed",
        )
    } else {
        ("NotPaused", "not paused")
    };
    set_condition(status, PAUSED, paused, reason, msg.to_string(), now);
}

/// Recomputes counts, the four conditions and the phase from the records.
pub fn derive_conditions(status: &mut ChaosStatus, now: &Time) {
    use RecordPhase as R;
    let mut c = Counts {
        selected: status.records.len() as u32,
        ..Default::default()
    };
    let (mut injecting, mut recovering) = (0u32, 0u32);
    for r in &status.records {
        match r.phase {
            R::Injecting => injecting += 1,
            R::Injected => c.injected += 1,
            R::Recovering => recovering += 1,
            R::Recovered => c.recovered += 1,
            R::Failed => c.failed += 1,
            R::Gone => c.gone += 1,
        }
    }
    status.counts = c;
    let n = c.selected;
    // Of the live targets only: a pod deleted mid-run is Gone, no longer live.
    let ever_injected = status
        .records
        .iter()
        .filter(|r| r.injected > 0 && r.phase != R::Gone)
        .count() as u32;
    let live = n - c.gone;
    set_condition(
        status,
        SELECTED,
        n > 0,
        if n > 0 {
            "PodsSelected"
        } else {
            "NoPodsSelected"
        },
        format!("{n} pod(s) selected"),
        now,
    );
    let all_injected = n > 0
        && c.failed == 0
        && injecting == 0
        && status
            .records
            .iter()
            .all(|r| r.injected > 0 || r.phase == R::Gone);
    set_condition(
        status,
        ALL_INJECTED,
        all_injected,
        if all_injected {
            "AllInjected"
        } else if c.failed > 0 {
            "InjectionFailed"
        } else {
            "NotAllInjected"
        },
        format!(
            "{ever_injected} of {live} live target(s) injected, {} failed",
            c.failed
        ),
        now,
    );
    let all_recovered = n > 0 && c.recovered + c.gone == n;
    set_condition(
        status,
        ALL_RECOVERED,
        all_recovered,
        if all_recovered {
            "AllRecovered"
        } else {
            "NotAllRecovered"
        },
        format!("{} of {live} live target(s) recovered", c.recovered),
        now,
    );
    if status.condition(PAUSED).is_none() {
        set_paused(status, false, now);
    }
    let paused = status.condition(PAUSED).is_some_and(|c| c.status == "True");
    status.phase = if paused && recovering == 0 {
        Phase::Paused
    } else if n == 0 {
        status.phase
    } else if recovering > 0 {
        Phase::Recovering
    } else if injecting > 0 {
        Phase::Injecting
    } else if c.injected > 0 {
        Phase::Running
    } else if c.failed > 0 {
        Phase::Failed
    } else {
        Phase::Finished
    };
}

/// Builds the records and status of a large experiment; shared by the size test and the bench.
#[doc(hidden)]
pub mod sample {
    use super::*;

    /// `n` pods named like Deployment pods (`checkout-7d4b9c8f6d-x2x9z`) over 10 namespaces
    /// and 50 nodes, each with one containerd container.
    pub fn pods(n: usize) -> Vec<Pod> {
        use k8s_openapi::api::core::v1::{ContainerStatus, PodSpec, PodStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        const ALNUM: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let apps = ["checkout", "payments", "frontend", "inventory", "recommend"];
        (0..n)
            .map(|i| {
                let h = crate::stable_seed(&i.to_string());
                let suffix: String = (0..5)
                    .map(|k| ALNUM[((h >> (k * 6)) % 27) as usize] as char)
                    .collect();
                let ns = format!("team-{}", i % 10);
                let name = format!(
                    "{}-{:010x}-{suffix}",
                    apps[i % 5],
                    (h >> 24) & 0xff_ffff_ffff
                );
                let uid = format!("{:016x}{:016x}", h, crate::stable_seed(&name));
                Pod {
                    metadata: ObjectMeta {
                        name: Some(name),
                        namespace: Some(ns),
                        uid: Some(format!(
                            "{}-{}-{}-{}-{}",
                            &uid[0..8],
                            &uid[8..12],
                            &uid[12..16],
                            &uid[16..20],
                            &uid[20..32]
                        )),
                        labels: Some([("app".to_string(), apps[i % 5].to_string())].into()),
                        ..Default::default()
                    },
                    spec: Some(PodSpec {
                        node_name: Some(format!(
                            "ip-10-0-{}-{}.ec2.internal",
                            i % 50,
                            (i * 7) % 250
                        )),
                        ..Default::default()
                    }),
                    status: Some(PodStatus {
                        phase: Some("Running".into()),
                        container_statuses: Some(vec![ContainerStatus {
                            name: "app".into(),
                            container_id: Some(format!("containerd://{uid}{uid}")),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                }
            })
            .collect()
    }

    /// Records every pod as injected (one in fifty failed with a long error) and derives conditions.
    pub fn record_all<'a>(pods: impl IntoIterator<Item = &'a Pod>, now: &Time) -> ChaosStatus {
        let mut st = ChaosStatus::default();
        for (i, pod) in pods.into_iter().enumerate() {
            let cid = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c[0].container_id.clone())
                .unwrap_or_default();
            let r = upsert_target(&mut st, pod, &cid);
            // Pods i % 50 == 49 share a node: its agent is unreachable.
            if i % 50 == 49 {
                mark_failed(r, &"rpc error: code = Unavailable desc = connection refused while dialing the agent on the node; ".repeat(4));
            } else {
                // Injected 32 at a time, the last ones ~30 s after the first.
                mark_injected_at(r, 1_000 + i as u64 * 6);
            }
        }
        // What the operator writes besides the records: generation, start and end of the run.
        st.observed_generation = Some(1);
        st.started_at = Some(now.clone());
        st.ends_at = Some(Time(
            now.0 + k8s_openapi::jiff::SignedDuration::from_secs(3600),
        ));
        derive_conditions(&mut st, now);
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{container_id_for, pod, time};

    fn status_with(pods: &[Pod]) -> ChaosStatus {
        let mut st = ChaosStatus::default();
        for p in pods {
            let key = format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap(),
                p.metadata.name.as_deref().unwrap()
            );
            upsert_target(&mut st, p, &container_id_for(&key));
        }
        st
    }

    #[test]
    fn records_follow_injection_and_recovery() {
        let pods = [pod("shop", "b", "n1", &[]), pod("shop", "a", "n1", &[])];
        let mut st = status_with(&pods);
        assert_eq!(
            st.records
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"],
            "kept sorted"
        );
        assert_eq!(st.records[0].phase, RecordPhase::Injecting);
        assert_eq!(st.records[0].container_id.len(), CONTAINER_ID_LEN);
        let r = st.find_mut("shop", "a").unwrap();
        mark_injected(r);
        assert_eq!((r.phase, r.injected), (RecordPhase::Injected, 1));
        mark_recovering(r);
        assert_eq!(r.phase, RecordPhase::Recovering);
        mark_recovered(r);
        assert_eq!((r.phase, r.recovered), (RecordPhase::Recovered, 1));
        mark_recovering(r);
        assert_eq!(
            r.phase,
            RecordPhase::Recovered,
            "recovering a recovered target changes nothing"
        );
        let r = st.find_mut("shop", "b").unwrap();
        mark_failed(r, &"x".repeat(1000));
        assert_eq!(r.phase, RecordPhase::Failed);
        assert!(r.last_error.as_ref().unwrap().len() <= ERROR_LEN + "…".len());
        mark_injected(r);
        assert_eq!(r.last_error, None, "errors are kept only while failed");
        mark_gone(r, "pod deleted");
        assert_eq!(
            (r.phase, r.last_error.as_deref()),
            (RecordPhase::Gone, Some("pod deleted"))
        );
    }

    #[test]
    fn a_pod_replaced_under_the_same_name_is_injected_again() {
        let mut p = pod("shop", "web-0", "n1", &[]);
        let mut st = status_with(std::slice::from_ref(&p));
        mark_injected(&mut st.records[0]);
        let same = upsert_target(&mut st, &p, "containerd://ffff");
        assert_eq!(
            (same.phase, same.injected),
            (RecordPhase::Injected, 1),
            "upsert keeps the state"
        );
        assert_eq!(
            same.container_id,
            short_container_id(&container_id_for("shop/web-0"))
        );
        p.spec.as_mut().unwrap().node_name = Some("n2".into());
        let moved = upsert_target(&mut st, &p, "containerd://abcdef0123456789");
        assert_eq!(moved.node, "n2", "the replacement runs elsewhere");
        assert!(needs_reinjection(moved, "containerd://abcdef0123456789"));
        assert_eq!(st.records.len(), 1);
    }

    #[test]
    fn a_pod_level_record_keeps_the_pods_uid_and_round_trips_it() {
        let mut p = pod("shop", "web-0", "n1", &[]);
        p.metadata.uid = Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into());
        let mut st = ChaosStatus::default();
        let r = upsert_target(&mut st, &p, "");
        assert_eq!(r.pod_uid, "0f1e2d3c");
        mark_injected(r);
        let json = serde_json::to_value(&st).unwrap();
        let line = json["records"]["groups"][0]["pods"][0].as_str().unwrap();
        assert_eq!(line, "web-0 - 0 u=0f1e2d3c");
        let back: ChaosStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, st);
        // Container-level records do not carry it.
        let mut st = ChaosStatus::default();
        assert_eq!(
            upsert_target(&mut st, &p, "containerd://abcdef0123456789").pod_uid,
            ""
        );
    }

    #[test]
    fn a_restarted_container_needs_reinjection() {
        let p = pod("shop", "web-0", "n1", &[]);
        let mut st = status_with(std::slice::from_ref(&p));
        let r = &mut st.records[0];
        let cid = container_id_for("shop/web-0");
        assert!(
            !needs_reinjection(r, "containerd://0000000000000000"),
            "not injected yet"
        );
        mark_injected(r);
        assert!(!needs_reinjection(r, &cid), "same container");
        assert!(
            !needs_reinjection(r, ""),
            "container not running: nothing to inject into yet"
        );
        assert!(
            needs_reinjection(r, "containerd://0000000000000000"),
            "new container id"
        );
        r.container_id = short_container_id("containerd://0000000000000000");
        mark_injected(r);
        assert_eq!(r.injected, 2);
    }

    #[test]
    fn conditions_and_phase_follow_the_records() {
        let pods = [pod("shop", "a", "n1", &[]), pod("shop", "b", "n2", &[])];
        let mut st = ChaosStatus::default();
        derive_conditions(&mut st, &time(100));
        assert_eq!(st.phase, Phase::Pending);
        assert_eq!(st.condition(SELECTED).unwrap().status, "False");
        st = status_with(&pods);
        derive_conditions(&mut st, &time(200));
        assert_eq!(st.phase, Phase::Injecting);
        assert_eq!(st.condition(SELECTED).unwrap().status, "True");
        assert_eq!(st.condition(ALL_INJECTED).unwrap().status, "False");
        for r in &mut st.records {
            mark_injected(r);
        }
        derive_conditions(&mut st, &time(300));
        assert_eq!(st.phase, Phase::Running);
        let c = st.condition(ALL_INJECTED).unwrap();
        assert_eq!(
            (c.status.as_str(), &c.last_transition_time),
            ("True", &time(300))
        );
        assert_eq!(
            st.counts,
            Counts {
                selected: 2,
                injected: 2,
                ..Default::default()
            }
        );
        derive_conditions(&mut st, &time(400));
        assert_eq!(
            st.condition(ALL_INJECTED).unwrap().last_transition_time,
            time(300),
            "unchanged status keeps its time"
        );
        assert_eq!(
            st.condition(SELECTED).unwrap().last_transition_time,
            time(200)
        );
        set_paused(&mut st, true, &time(450));
        derive_conditions(&mut st, &time(450));
        assert_eq!(st.phase, Phase::Paused);
        set_paused(&mut st, false, &time(460));
        mark_recovering(&mut st.records[0]);
        derive_conditions(&mut st, &time(500));
        assert_eq!(st.phase, Phase::Recovering);
        mark_recovered(&mut st.records[0]);
        mark_gone(&mut st.records[1], "pod deleted");
        derive_conditions(&mut st, &time(600));
        assert_eq!(st.phase, Phase::Finished);
        assert_eq!(st.condition(ALL_RECOVERED).unwrap().status, "True");
        assert_eq!(
            st.counts,
            Counts {
                selected: 2,
                recovered: 1,
                gone: 1,
                ..Default::default()
            }
        );
        mark_failed(&mut st.records[0], "agent unreachable");
        derive_conditions(&mut st, &time(700));
        assert_eq!(st.phase, Phase::Failed);
        assert_eq!(
            st.condition(ALL_RECOVERED).unwrap().last_transition_time,
            time(700)
        );
    }

    #[test]
    fn status_round_trips_through_json() {
        let pods = [
            pod("shop", "a", "n1", &[]),
            pod("shop", "b", "n1", &[]),
            pod("db", "c", "", &[]),
        ];
        let mut st = status_with(&pods);
        mark_injected(st.find_mut("shop", "a").unwrap());
        mark_injected(st.find_mut("shop", "b").unwrap());
        mark_injected(st.find_mut("shop", "b").unwrap());
        mark_failed(st.find_mut("db", "c").unwrap(), "boom: error: inside");
        derive_conditions(&mut st, &time(1));
        let json = serde_json::to_value(&st).unwrap();
        let groups = json["records"]["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 2, "{json:#}");
        assert_eq!(json["records"]["nodes"], serde_json::json!(["n1"]));
        assert_eq!(groups[0]["error"], "boom: error: inside");
        assert!(
            groups[0]["pods"][0].as_str().unwrap().ends_with(" -"),
            "no node: {json:#}"
        );
        let line = groups[1]["pods"][1].as_str().unwrap();
        assert!(line.starts_with("b ") && line.ends_with(" 0 i=2"), "{line}");
        let back: ChaosStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, st);
        let bad = serde_json::json!({"records": {"groups": [{"namespace": "a", "phase": "Injected", "pods": ["x"]}]}});
        let e = serde_json::from_value::<ChaosStatus>(bad).unwrap_err();
        assert!(e.to_string().contains("has no container id"), "{e}");
        // Injection ids written by older versions are accepted and dropped.
        let legacy = serde_json::json!({"records": {"nodes": ["n1"], "groups": [{"namespace": "shop", "phase": "Injected", "pods": ["a 0123456789ab 0 id=inj-1"]}]}});
        let old: ChaosStatus = serde_json::from_value(legacy).unwrap();
        let line = serde_json::to_value(&old).unwrap()["records"]["groups"][0]["pods"][0].clone();
        assert_eq!(line, "a 0123456789ab 0");
    }

    #[test]
    fn a_records_own_clock_round_trips_compactly() {
        let pods = [pod("shop", "a", "n1", &[]), pod("shop", "b", "n1", &[])];
        let mut st = status_with(&pods);
        st.started_at = Some(time(1_700_000_000));
        // a came into effect 4,512 ms after the start; b was paused after 61 s in effect.
        mark_injected_at(st.find_mut("shop", "a").unwrap(), 4_512);
        let b = st.find_mut("shop", "b").unwrap();
        mark_injected_at(b, 1_000);
        mark_recovering(b);
        mark_recovered_at(b, 62_000, true);
        b.phase = RecordPhase::Injecting;
        assert_eq!((b.since_ms, b.served_ms), (None, 61_000));
        let json = serde_json::to_value(&st).unwrap();
        let lines: Vec<&str> = json["records"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["pods"].as_array().unwrap())
            .map(|l| l.as_str().unwrap())
            .collect();
        assert!(
            lines.iter().any(|l| l.ends_with(" 0+1b2g i=1 r=1")),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.ends_with(" 0@3hc")), "{lines:?}");
        let back: ChaosStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, st);
        let a = back.find("shop", "a").unwrap();
        assert_eq!(
            back.since_unix_ms(a),
            Some(1_700_000_000_000 + 4_512),
            "measured to the millisecond"
        );
        // Injected again after the pause, then recovered at the end: since is the last
        // period's start, served everything.
        let b = st.find_mut("shop", "b").unwrap();
        mark_injected_at(b, 100_000);
        mark_injected_at(b, 130_000);
        assert_eq!(
            b.since_ms,
            Some(100_000),
            "a re-injection continues the clock"
        );
        mark_recovering(b);
        mark_recovered_at(b, 99_000 + 100_000, false);
        assert_eq!((b.since_ms, b.served_ms), (Some(100_000), 160_000));
        // No node, with a clock.
        let r = parse_line(
            "c 0123456789ab -@a+b i=2",
            &grouped::Group {
                namespace: "x".into(),
                phase: RecordPhase::Injected,
                error: None,
                pods: vec![],
            },
            &[],
        )
        .unwrap();
        assert_eq!(
            (r.node.as_str(), r.since_ms, r.served_ms),
            ("", Some(10), 11)
        );
        for bad in ["c - 0@", "c - 0@zz!", "c - 0+", "c - 0@-1", "c - 0x@1"] {
            let g = grouped::Group {
                namespace: "x".into(),
                phase: RecordPhase::Injected,
                error: None,
                pods: vec![],
            };
            let _ = parse_line(bad, &g, &["n".into()]).expect_err(bad);
        }
    }

    #[test]
    fn a_record_without_a_clock_falls_back_to_started_at() {
        // Written before records kept their own clock.
        let legacy = serde_json::json!({
            "startedAt": "2025-01-01T00:00:00Z",
            "records": {"nodes": ["n1"], "groups": [
                {"namespace": "shop", "phase": "Injected", "pods": ["a 0123456789ab 0"]},
                {"namespace": "shop", "phase": "Injecting", "pods": ["b 0123456789ab 0"]}
            ]}
        });
        let mut st: ChaosStatus = serde_json::from_value(legacy).unwrap();
        let start = st.started_unix_ms().unwrap();
        let a = st.find("shop", "a").unwrap();
        assert_eq!(a.since_ms, None);
        assert_eq!(
            st.since_unix_ms(a),
            Some(start),
            "in effect: since startedAt"
        );
        let b = st.find("shop", "b").unwrap();
        assert_eq!(st.since_unix_ms(b), None, "not in effect");
        // Its clock, once touched, is kept from startedAt.
        let a = st.find_mut("shop", "a").unwrap();
        mark_injected_at(a, 30_000);
        assert_eq!(a.since_ms, Some(0));
        assert_eq!(st.offset_ms(start - 5), 0, "never before the start");
    }

    #[test]
    fn five_thousand_targets_fit_in_256_kib() {
        let pods = sample::pods(5000);
        let st = sample::record_all(&pods, &time(1_700_000_000));
        assert_eq!(st.records.len(), 5000);
        assert_eq!(st.counts.failed, 100);
        let json = serde_json::to_vec(&st).unwrap();
        eprintln!(
            "status of 5000 targets: {} bytes ({:.1} per target)",
            json.len(),
            json.len() as f64 / 5000.0
        );
        assert!(json.len() < 256 * 1024, "status is {} bytes", json.len());
        assert!(
            !String::from_utf8_lossy(&json).contains(" id="),
            "no agent injection ids in status"
        );
        assert!(st.ends_at.is_some() && st.observed_generation.is_some());
        let back: ChaosStatus = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, st);
    }
}
