//! The experiment document, the fault enum, and loading both from a positioned YAML tree.
//!
//! Two document shapes are accepted:
//! - `kind: Experiment` with `spec.faults`, each fault a mapping with `name`, `kind`, optional
//!   `after` and `duration`, and the fields of its kind;
//! - a single-fault manifest (`kind: StressChaos`, `spec:` holding the fault's fields and
//!   `duration`), as Chaos Mesh writes them: it means an experiment of that one fault.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::de::{self, from_node};
use crate::error::{Problems, SpecError, SpecErrors};
use crate::network::NetworkChaos;
use crate::path::FieldPath;
use crate::process::ProcessChaos;
use crate::stress::StressChaos;
use crate::units::{clip, HumanDuration};
use crate::yaml::{Node, Pos, Value};

/// The longest a fault may last (`duration`, `spec.duration`).
pub const MAX_FAULT_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The latest a fault may start in its experiment (`after`).
pub const MAX_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

pub const API_VERSION: &str = "havoc.dev/v1alpha1";
pub const CHAOS_MESH_API_VERSION: &str = "chaos-mesh.org/v1alpha1";

/// The fault kinds, by their manifest `kind`.
pub const FAULT_KINDS: &[&str] = &[
    "ProcessChaos",
    "StressChaos",
    "NetworkChaos",
    "IOChaos",
    "TimeChaos",
    "SyscallChaos",
    "DNSChaos",
    "HTTPChaos",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Experiment {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ExperimentSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExperimentSpec {
    /// Seed of every random choice; generated and reported when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Default duration of each fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// Loaded separately (see [`load_fault`]), so that each fault's kind decides its fields.
    #[serde(default, deserialize_with = "skip_faults")]
    pub faults: Vec<FaultEntry>,
    /// Probes checked before, during and after the faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_state: Option<crate::probe::SteadyState>,
    /// Which probe breaches stop the experiment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<crate::probe::Abort>,
}

fn skip_faults<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<FaultEntry>, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| Vec::new())
}

/// One fault of an experiment: when, for how long, and what.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultEntry {
    pub name: String,
    /// Start offset inside the experiment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    #[serde(flatten)]
    pub spec: FaultSpec,
}

/// Specs are built once per run; their size does not matter, and boxing would burden every user.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind")]
pub enum FaultSpec {
    ProcessChaos(ProcessChaos),
    StressChaos(StressChaos),
    NetworkChaos(NetworkChaos),
    IOChaos(crate::io::IOChaos),
    TimeChaos(crate::time::TimeChaos),
    SyscallChaos(crate::syscall::SyscallChaos),
    DNSChaos(crate::dns::DNSChaos),
    HTTPChaos(crate::http::HTTPChaos),
}

impl FaultSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            FaultSpec::ProcessChaos(_) => "ProcessChaos",
            FaultSpec::StressChaos(_) => "StressChaos",
            FaultSpec::NetworkChaos(_) => "NetworkChaos",
            FaultSpec::IOChaos(_) => "IOChaos",
            FaultSpec::TimeChaos(_) => "TimeChaos",
            FaultSpec::SyscallChaos(_) => "SyscallChaos",
            FaultSpec::DNSChaos(_) => "DNSChaos",
            FaultSpec::HTTPChaos(_) => "HTTPChaos",
        }
    }

    /// True for the kinds whose targets are network namespaces (a process selector picks the
    /// processes' namespaces, each once), false for those that act on processes.
    pub fn targets_network_namespaces(&self) -> bool {
        matches!(
            self,
            FaultSpec::NetworkChaos(_) | FaultSpec::DNSChaos(_) | FaultSpec::HTTPChaos(_)
        )
    }

    pub fn selector(&self) -> &crate::selector::Selector {
        match self {
            FaultSpec::ProcessChaos(f) => &f.selector,
            FaultSpec::StressChaos(f) => &f.selector,
            FaultSpec::NetworkChaos(f) => &f.selector,
            FaultSpec::IOChaos(f) => &f.selector,
            FaultSpec::TimeChaos(f) => &f.selector,
            FaultSpec::SyscallChaos(f) => &f.selector,
            FaultSpec::DNSChaos(f) => &f.selector,
            FaultSpec::HTTPChaos(f) => &f.selector,
        }
    }

    /// Checks the fault's own fields (selector included); `path` is where the fault sits.
    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        match self {
            FaultSpec::ProcessChaos(f) => f.validate(path, p),
            FaultSpec::StressChaos(f) => f.validate(path, p),
            FaultSpec::NetworkChaos(f) => f.validate(path, p),
            FaultSpec::IOChaos(f) => f.validate(path, p),
            FaultSpec::TimeChaos(f) => f.validate(path, p),
            FaultSpec::SyscallChaos(f) => f.validate(path, p),
            FaultSpec::DNSChaos(f) => f.validate(path, p),
            FaultSpec::HTTPChaos(f) => f.validate(path, p),
        }
    }

    /// A short human description: `pause`, `cpu 2x60% + memory 256MiB`, `loss 10%`.
    pub fn summary(&self) -> String {
        match self {
            FaultSpec::ProcessChaos(p) => match p.action {
                crate::process::ProcessAction::Pause => "pause".into(),
                crate::process::ProcessAction::Kill => {
                    format!("kill with {}", p.effective_signal())
                }
                crate::process::ProcessAction::Signal => match p.interval {
                    Some(i) => format!("{} every {i}", p.effective_signal()),
                    None => format!("{} once", p.effective_signal()),
                },
            },
            FaultSpec::StressChaos(s) => {
                let mut parts = Vec::new();
                if let Some(c) = &s.stressors.cpu {
                    parts.push(format!("cpu {}x{}%", c.workers, c.load));
                }
                if let Some(m) = &s.stressors.memory {
                    parts.push(format!("memory {} in {} worker(s)", m.size, m.workers));
                }
                parts.join(" + ")
            }
            FaultSpec::NetworkChaos(n) => {
                let mut parts = Vec::new();
                if let Some(l) = &n.loss {
                    parts.push(format!("loss {}%", l.loss));
                }
                if let Some(g) = &n.gilbert_elliott {
                    parts.push(format!(
                        "loss gilbert-elliott (mean {:.1}%)",
                        g.mean_loss() * 100.0
                    ));
                }
                if let Some(d) = &n.delay {
                    parts.push(format!("delay {}±{}", d.latency, d.jitter));
                }
                if let Some(d) = &n.duplicate {
                    parts.push(format!("duplicate {}%", d.duplicate));
                }
                if let Some(c) = &n.corrupt {
                    parts.push(format!("corrupt {}%", c.corrupt));
                }
                if let Some(b) = &n.bandwidth {
                    parts.push(format!("bandwidth {}", b.rate));
                }
                if n.action == crate::network::NetworkAction::Partition {
                    parts.push("partition".into());
                }
                parts.join(" + ")
            }
            FaultSpec::IOChaos(io) => io.summary(),
            FaultSpec::TimeChaos(t) => t.summary(),
            FaultSpec::SyscallChaos(s) => s.summary(),
            FaultSpec::DNSChaos(d) => d.summary(),
            FaultSpec::HTTPChaos(h) => h.summary(),
        }
    }
}

impl Experiment {
    /// The fault's duration: its own, else the experiment's default.
    pub fn fault_duration(&self, f: &FaultEntry) -> Option<Duration> {
        f.duration.or(self.spec.duration).map(|d| d.0)
    }

    /// When the fault ends, from the start of the chaos phase: `after + duration`. Validation
    /// bounds both by [`MAX_FAULT_DURATION`] and [`MAX_AFTER`]; the sum saturates anyway, so an
    /// unvalidated experiment cannot overflow it.
    pub fn fault_end(&self, f: &FaultEntry) -> Duration {
        f.after
            .map(|a| a.0)
            .unwrap_or_default()
            .saturating_add(self.fault_duration(f).unwrap_or_default())
    }

    /// When the last fault ends, from the start of the chaos phase.
    pub fn chaos_length(&self) -> Duration {
        self.spec
            .faults
            .iter()
            .map(|f| self.fault_end(f))
            .max()
            .unwrap_or_default()
    }
}

/// Parses and validates one experiment (or single-fault manifest) from YAML text.
pub fn parse_experiment(src: &str) -> Result<Experiment, SpecErrors> {
    let docs = crate::yaml::parse_documents(src).map_err(|e| {
        SpecErrors(vec![SpecError {
            path: FieldPath::root(),
            pos: e.pos,
            message: format!("invalid YAML: {}", e.message),
        }])
    })?;
    match docs.len() {
        0 => Err(single(
            Pos { line: 1, col: 1 },
            FieldPath::root(),
            "the file is empty: expected an Experiment or a single-fault manifest",
        )),
        1 => experiment_from_node(&docs[0]),
        n => Err(single(
            docs[1].pos,
            FieldPath::root(),
            &format!("expected one YAML document, found {n}: put each experiment in its own file"),
        )),
    }
}

fn single(pos: Pos, path: FieldPath, msg: &str) -> SpecErrors {
    SpecErrors(vec![SpecError {
        path,
        pos,
        message: msg.to_string(),
    }])
}

/// Loads and validates an experiment from a parsed document.
pub fn experiment_from_node(root: &Node) -> Result<Experiment, SpecErrors> {
    let mut errors: Vec<SpecError> = Vec::new();
    let top = FieldPath::root();
    if !matches!(root.value, Value::Map(_)) {
        return Err(single(
            root.pos,
            top,
            &format!(
                "expected a mapping with apiVersion, kind, metadata and spec, got {}",
                root.describe()
            ),
        ));
    }
    let known_top = ["apiVersion", "kind", "metadata", "spec"];
    if let Value::Map(entries) = &root.value {
        for (k, _) in entries {
            let name = k.as_scalar().unwrap_or_default();
            if !known_top.contains(&name) {
                let e = <de::DeError as serde::de::Error>::unknown_field(
                    name,
                    &["apiVersion", "kind", "metadata", "spec"],
                );
                errors.push(SpecError {
                    path: top.key(name),
                    pos: k.pos,
                    message: e.message,
                });
            }
        }
    }
    let api_version = required_str(root, "apiVersion", &top, &mut errors);
    let kind = required_str(root, "kind", &top, &mut errors);
    if let Some(av) = &api_version {
        if av != API_VERSION && av != CHAOS_MESH_API_VERSION {
            errors.push(SpecError {
                path: top.key("apiVersion"),
                pos: root.get("apiVersion").map_or(root.pos, |n| n.pos),
                message: format!("unsupported apiVersion `{}`: expected `{API_VERSION}` (or `{CHAOS_MESH_API_VERSION}` for Chaos Mesh manifests)", crate::units::clip(av)),
            });
        }
    }
    let metadata: Option<Metadata> = match root.get("metadata") {
        Some(n) => from_node(n, &top.key("metadata"))
            .map_err(|e| errors.push(e))
            .ok(),
        None => {
            errors.push(SpecError {
                path: top.key("metadata"),
                pos: root.pos,
                message: "is required (at least metadata.name)".into(),
            });
            None
        }
    };
    let spec_node = root.get("spec");
    if spec_node.is_none() {
        errors.push(SpecError {
            path: top.key("spec"),
            pos: root.pos,
            message: "is required".into(),
        });
    }
    let mut problems = Problems::new();
    let mut spec: Option<ExperimentSpec> = None;
    if let (Some(kind), Some(spec_node)) = (kind.as_deref(), spec_node) {
        let sp = top.key("spec");
        if kind == "Experiment" {
            if let Ok(mut s) =
                from_node::<ExperimentSpec>(spec_node, &sp).map_err(|e| errors.push(e))
            {
                match spec_node.get("faults") {
                    None => problems.add(&sp.key("faults"), "is required: list at least one fault"),
                    Some(fnode) => match &fnode.value {
                        Value::Seq(items) => {
                            for (i, item) in items.iter().enumerate() {
                                match load_fault(item, &sp.key("faults").index(i), None) {
                                    Ok(f) => s.faults.push(f),
                                    Err(e) => errors.extend(e),
                                }
                            }
                            if items.is_empty() {
                                problems.add(&sp.key("faults"), "must list at least one fault");
                            }
                        }
                        _ => errors.push(SpecError {
                            path: sp.key("faults"),
                            pos: fnode.pos,
                            message: format!("expected a list of faults, got {}", fnode.describe()),
                        }),
                    },
                }
                spec = Some(s);
            }
        } else if FAULT_KINDS.contains(&kind) {
            let name = metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            match load_fault(spec_node, &sp, Some((kind, name))) {
                Ok(f) => {
                    spec = Some(ExperimentSpec {
                        seed: None,
                        duration: None,
                        faults: vec![f],
                        steady_state: None,
                        abort: None,
                    })
                }
                Err(e) => errors.extend(e),
            }
        } else {
            let mut all: Vec<&str> = vec!["Experiment"];
            all.extend(FAULT_KINDS);
            let hint = de::closest(kind, &all)
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            errors.push(SpecError {
                path: top.key("kind"),
                pos: root.get("kind").map_or(root.pos, |n| n.pos),
                message: format!(
                    "unknown kind `{}`: {hint}expected one of {}",
                    crate::units::clip(kind),
                    all.join(", ")
                ),
            });
        }
    }
    let mut exp = None;
    if let (Some(api_version), Some(kind), Some(metadata), Some(spec)) =
        (api_version, kind, metadata, spec)
    {
        let e = Experiment {
            api_version,
            kind,
            metadata,
            spec,
        };
        validate_experiment(&e, &mut problems);
        exp = Some(e);
    }
    for (path, message) in problems.into_vec() {
        errors.push(SpecError {
            pos: path.locate(root),
            path,
            message,
        });
    }
    if errors.is_empty() {
        Ok(exp.expect("an experiment when there are no errors"))
    } else {
        errors.sort_by_key(|a| (a.pos, a.path.to_string()));
        errors.dedup();
        Err(SpecErrors(errors))
    }
}

fn required_str(
    root: &Node,
    key: &str,
    top: &FieldPath,
    errors: &mut Vec<SpecError>,
) -> Option<String> {
    match root.get(key) {
        Some(n) => match n.as_scalar() {
            Some(s) => Some(s.to_string()),
            None => {
                errors.push(SpecError {
                    path: top.key(key),
                    pos: n.pos,
                    message: format!("expected a string, got {}", n.describe()),
                });
                None
            }
        },
        None => {
            errors.push(SpecError {
                path: top.key(key),
                pos: root.pos,
                message: "is required".into(),
            });
            None
        }
    }
}

/// Keys common to every fault, taken out before the rest is read as the kind's fields.
const COMMON_KEYS: &[&str] = &["name", "kind", "after", "duration", "mode", "value"];

/// Loads one fault. In an experiment `single` is None and `kind`/`name` come from the mapping;
/// for a single-fault manifest they come from the document.
pub fn load_fault(
    node: &Node,
    path: &FieldPath,
    single: Option<(&str, String)>,
) -> Result<FaultEntry, Vec<SpecError>> {
    let mut errors = Vec::new();
    if !matches!(node.value, Value::Map(_)) {
        return Err(vec![SpecError {
            path: path.clone(),
            pos: node.pos,
            message: format!(
                "expected a fault (a mapping with name and kind), got {}",
                node.describe()
            ),
        }]);
    }
    let str_field = |key: &str, errors: &mut Vec<SpecError>| -> Option<String> {
        node.get(key).and_then(|n| match n.as_scalar() {
            Some(s) => Some(s.to_string()),
            None => {
                errors.push(SpecError {
                    path: path.key(key),
                    pos: n.pos,
                    message: format!("expected a string, got {}", n.describe()),
                });
                None
            }
        })
    };
    let (kind, name) = match single {
        Some((k, n)) => {
            for key in ["name", "kind"] {
                if let Some(k) = node.key_node(key) {
                    errors.push(SpecError {
                        path: path.key(key),
                        pos: k.pos,
                        message: format!(
                            "`{key}` belongs at the top of a single-fault manifest, not in spec"
                        ),
                    });
                }
            }
            (Some(k.to_string()), Some(n))
        }
        None => {
            let kind = str_field("kind", &mut errors);
            let name = str_field("name", &mut errors);
            if node.get("kind").is_none() {
                errors.push(SpecError {
                    path: path.key("kind"),
                    pos: node.pos,
                    message: format!("is required: one of {}", FAULT_KINDS.join(", ")),
                });
            }
            if node.get("name").is_none() {
                errors.push(SpecError {
                    path: path.key("name"),
                    pos: node.pos,
                    message: "is required: a short name for this fault, e.g. `pause-worker`".into(),
                });
            }
            (kind, name)
        }
    };
    let dur = |key: &str, errors: &mut Vec<SpecError>| -> Option<HumanDuration> {
        node.get(key).and_then(|n| {
            from_node::<Option<HumanDuration>>(n, &path.key(key))
                .map_err(|e| errors.push(e))
                .ok()
                .flatten()
        })
    };
    let after = dur("after", &mut errors);
    let duration = dur("duration", &mut errors);
    // Chaos Mesh puts mode/value beside the selector; Havoc puts them in it. Accept both.
    let mut rest = node.without_keys(COMMON_KEYS);
    for key in ["mode", "value"] {
        if let Some(v) = node.get(key) {
            if let Value::Map(entries) = &mut rest.value {
                if let Some((_, sel)) = entries
                    .iter_mut()
                    .find(|(k, _)| k.as_scalar() == Some("selector"))
                {
                    if sel.get(key).is_some() {
                        errors.push(SpecError {
                            path: path.key(key),
                            pos: v.pos,
                            message: format!("{key} is given both here and in selector: keep one"),
                        });
                    } else if let Value::Map(se) = &mut sel.value {
                        let knode = node.key_node(key).cloned().unwrap_or_else(|| v.clone());
                        se.push((knode, v.clone()));
                    }
                }
            }
        }
    }
    let spec = match kind.as_deref() {
        Some("ProcessChaos") => from_node(&rest, path).map(FaultSpec::ProcessChaos),
        Some("StressChaos") => from_node(&rest, path).map(FaultSpec::StressChaos),
        Some("NetworkChaos") => from_node(&rest, path).map(FaultSpec::NetworkChaos),
        Some("IOChaos") => from_node(&rest, path).map(FaultSpec::IOChaos),
        Some("TimeChaos") => from_node(&rest, path).map(FaultSpec::TimeChaos),
        Some("SyscallChaos") => from_node(&rest, path).map(FaultSpec::SyscallChaos),
        Some("DNSChaos") => from_node(&rest, path).map(FaultSpec::DNSChaos),
        Some("HTTPChaos") => from_node(&rest, path).map(FaultSpec::HTTPChaos),
        Some(other) => {
            let hint = de::closest(other, FAULT_KINDS)
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            let pos = node.get("kind").map_or(node.pos, |n| n.pos);
            errors.push(SpecError {
                path: path.key("kind"),
                pos,
                message: format!(
                    "unknown fault kind `{}`: {hint}expected one of {}",
                    crate::units::clip(other),
                    FAULT_KINDS.join(", ")
                ),
            });
            return Err(errors);
        }
        None => return Err(errors),
    };
    match spec {
        Ok(spec) if errors.is_empty() => Ok(FaultEntry {
            name: name.unwrap_or_default(),
            after,
            duration,
            spec,
        }),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.push(e);
            Err(errors)
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_'
        })
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Every rule that spans fields or documents: names, durations, per-kind rules.
pub fn validate_experiment(e: &Experiment, p: &mut Problems) {
    let top = FieldPath::root();
    if !valid_name(&e.metadata.name) {
        p.add(&top.key("metadata").key("name"), format!("`{}` is not a valid name: use 1..=63 lowercase letters, digits, `-`, `.` or `_`, starting with a letter or digit", clip(&e.metadata.name)));
    }
    let single = e.kind != "Experiment";
    let sp = top.key("spec");
    crate::probe::validate(e.spec.steady_state.as_ref(), e.spec.abort.as_ref(), &sp, p);
    if let Some(d) = e.spec.duration {
        if !single && d.0 > MAX_FAULT_DURATION {
            p.add(
                &sp.key("duration"),
                format!("must be at most 7 days, got {d}"),
            );
        }
    }
    let mut seen = HashSet::new();
    for (i, f) in e.spec.faults.iter().enumerate() {
        let fp = if single {
            sp.clone()
        } else {
            sp.key("faults").index(i)
        };
        if !single {
            if !valid_name(&f.name) {
                p.add(
                    &fp.key("name"),
                    format!(
                        "`{}` is not a valid name: use 1..=63 lowercase letters, digits and `-`",
                        clip(&f.name)
                    ),
                );
            } else if !seen.insert(f.name.clone()) {
                p.add(
                    &fp.key("name"),
                    format!(
                        "`{}` is used by another fault: fault names must be unique",
                        f.name
                    ),
                );
            }
        }
        match e.fault_duration(f) {
            None => p.add(
                &fp.key("duration"),
                if single {
                    "is required: how long the fault lasts, e.g. `30s`".to_string()
                } else {
                    "is required here or as spec.duration: how long the fault lasts, e.g. `30s`"
                        .to_string()
                },
            ),
            Some(d) if d.is_zero() => {
                let is_kill = matches!(&f.spec, FaultSpec::ProcessChaos(pc) if pc.action == crate::process::ProcessAction::Kill);
                if !is_kill {
                    p.add(&fp.key("duration"), "must be greater than 0");
                }
            }
            Some(d) if d > MAX_FAULT_DURATION => {
                p.add(&fp.key("duration"), "must be at most 7 days")
            }
            _ => {}
        }
        if let Some(a) = f.after {
            if a.0 > MAX_AFTER {
                p.add(&fp.key("after"), format!("must be at most 7 days, got {a}"));
            }
        }
        match &f.spec {
            FaultSpec::ProcessChaos(pc) => pc.validate(&fp, p),
            FaultSpec::StressChaos(sc) => sc.validate(&fp, p),
            FaultSpec::NetworkChaos(nc) => nc.validate(&fp, p),
            FaultSpec::IOChaos(io) => io.validate(&fp, p),
            FaultSpec::TimeChaos(t) => t.validate(&fp, p),
            FaultSpec::SyscallChaos(s) => s.validate(&fp, p),
            FaultSpec::DNSChaos(d) => d.validate(&fp, p),
            FaultSpec::HTTPChaos(h) => h.validate(&fp, p),
        }
    }
}
