//! Which pods a chaos object hits: Chaos Mesh's pod selector, the modes, and seeded selection.
//!
//! Every given criterion must match (they are ANDed). Candidates are sorted by namespace and name
//! before a seeded RNG picks among them, so the same seed over the same pods picks the same pods
//! on every run of the operator. Terminating pods are never candidates.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use havoc_spec::error::Problems;
use havoc_spec::selector::{choose, mode_name, validate_mode};
use havoc_spec::FieldPath;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::NamespacePolicy;

/// Chaos Mesh's `PodSelectorSpec`: all given criteria must match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodSelector {
    /// Namespaces to look in; default: the chaos object's own namespace (or the namespaces of
    /// `pods`, when given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Names of the nodes the pods must run on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Exact pods: namespace -> pod names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pods: BTreeMap<String, Vec<String>>,
    /// Labels of the node the pod runs on (all must match).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selectors: BTreeMap<String, String>,
    /// Pod fields that must equal the given values: `metadata.name`, `metadata.namespace`,
    /// `spec.nodeName`, `spec.serviceAccountName`, `spec.restartPolicy`, `spec.schedulerName`,
    /// `status.phase`, `status.podIP`, `status.nominatedNodeName`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub field_selectors: BTreeMap<String, String>,
    /// Pod labels that must equal the given values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_selectors: BTreeMap<String, String>,
    /// Set-based label requirements (`In`, `NotIn`, `Exists`, `DoesNotExist`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expression_selectors: Vec<ExpressionSelector>,
    /// Pod annotations that must equal the given values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotation_selectors: BTreeMap<String, String>,
    /// Pod phases: `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_phase_selectors: Vec<String>,
}

/// One set-based label requirement, as in a Kubernetes `LabelSelectorRequirement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExpressionSelector {
    /// The label key.
    pub key: String,
    /// How the label relates to `values`.
    pub operator: Operator,
    /// Values for `In` and `NotIn`; empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Operators of [`ExpressionSelector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// The pod fields `fieldSelectors` may name.
pub const FIELD_SELECTORS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.serviceAccountName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

/// The pod phases `podPhaseSelectors` may name.
pub const POD_PHASES: &[&str] = &["Pending", "Running", "Succeeded", "Failed", "Unknown"];

/// How many of the matching pods are hit, with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One pod, chosen at random.
    One,
    /// Every matching pod.
    All,
    /// This many pods, chosen at random.
    Fixed(u32),
    /// This percent of the pods (rounded down), chosen at random.
    FixedPercent(u32),
    /// A random percentage between 0 and this of the pods.
    RandomMaxPercent(u32),
}

impl Mode {
    /// The mode of a spec's `mode` and `value` fields; the error says what `value` must be.
    pub fn from_spec(mode: havoc_spec::Mode, value: Option<&str>) -> Result<Mode, String> {
        let mut p = Problems::new();
        validate_mode(mode, value, &FieldPath::root(), &mut p);
        if let Some((_, msg)) = p.into_vec().into_iter().next() {
            return Err(format!("value: {msg}"));
        }
        let n = || {
            value
                .unwrap_or_default()
                .trim()
                .trim_end_matches('%')
                .parse::<u32>()
                .unwrap_or(0)
        };
        Ok(match mode {
            havoc_spec::Mode::One => Mode::One,
            havoc_spec::Mode::All => Mode::All,
            havoc_spec::Mode::Fixed => Mode::Fixed(n()),
            havoc_spec::Mode::FixedPercent => Mode::FixedPercent(n()),
            havoc_spec::Mode::RandomMaxPercent => Mode::RandomMaxPercent(n()),
        })
    }

    /// The spec's `mode` and `value` for this mode.
    pub fn to_spec(self) -> (havoc_spec::Mode, Option<String>) {
        match self {
            Mode::One => (havoc_spec::Mode::One, None),
            Mode::All => (havoc_spec::Mode::All, None),
            Mode::Fixed(n) => (havoc_spec::Mode::Fixed, Some(n.to_string())),
            Mode::FixedPercent(n) => (havoc_spec::Mode::FixedPercent, Some(n.to_string())),
            Mode::RandomMaxPercent(n) => (havoc_spec::Mode::RandomMaxPercent, Some(n.to_string())),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (m, v) = self.to_spec();
        match v {
            None => f.write_str(mode_name(m)),
            Some(v) => write!(f, "{} {v}", mode_name(m)),
        }
    }
}

/// What selection looks at: the cluster's pods, nodes and namespaces (as listed by the caller).
#[derive(Debug, Clone, Copy)]
pub struct SelectionInput<'a> {
    pub pods: &'a [Pod],
    pub nodes: &'a [Node],
    pub namespaces: &'a [Namespace],
}

/// A namespace the selector named that the policy (or the cluster) does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub namespace: String,
    pub reason: String,
}

/// The outcome of [`select`].
#[derive(Debug, Clone)]
pub struct Selection<'a> {
    /// The chosen pods, sorted by namespace and name. May be empty: the caller decides whether
    /// that is an error.
    pub pods: Vec<&'a Pod>,
    /// How many pods matched the selector before the mode chose among them.
    pub matched: usize,
    /// Namespaces left out, with why; for an event or a condition.
    pub refused: Vec<Refused>,
}

/// A selector that cannot be evaluated; each problem has the field path inside the selector.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct SelectError(pub Vec<(FieldPath, String)>);

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(p, m)| {
                if p.is_root() {
                    m.clone()
                } else {
                    format!("{p}: {m}")
                }
            })
            .collect();
        f.write_str(&parts.join("; "))
    }
}

impl PodSelector {
    /// Checks the selector; `path` is where it sits (`spec.selector`).
    pub fn validate(&self, path: &FieldPath, p: &mut Problems) {
        for (i, ns) in self.namespaces.iter().enumerate() {
            if !valid_dns_label(ns) {
                p.add(
                    &path.key("namespaces").index(i),
                    format!("`{ns}` is not a valid namespace name (lowercase letters, digits and `-`, at most 63)"),
                );
            }
        }
        for (ns, names) in &self.pods {
            let pp = path.key("pods").key(ns.clone());
            if !valid_dns_label(ns) {
                p.add(&pp, format!("`{ns}` is not a valid namespace name"));
            }
            if names.is_empty() {
                p.add(&pp, "list at least one pod name");
            }
            if !self.namespaces.is_empty() && !self.namespaces.contains(ns) {
                p.add(
                    &pp,
                    format!(
                        "namespace `{ns}` is not in namespaces: add it there or remove these pods"
                    ),
                );
            }
        }
        for field in self.field_selectors.keys() {
            if !FIELD_SELECTORS.contains(&field.as_str()) {
                p.add(
                    &path.key("fieldSelectors").key(field.clone()),
                    format!(
                        "unsupported field selector `{field}`: expected one of {}",
                        FIELD_SELECTORS.join(", ")
                    ),
                );
            }
        }
        for (i, e) in self.expression_selectors.iter().enumerate() {
            let ep = path.key("expressionSelectors").index(i);
            if e.key.is_empty() {
                p.add(&ep.key("key"), "must not be empty");
            }
            match e.operator {
                Operator::In | Operator::NotIn if e.values.is_empty() => p.add(
                    &ep.key("values"),
                    format!(
                        "is required with operator {:?}: list at least one value",
                        e.operator
                    ),
                ),
                Operator::Exists | Operator::DoesNotExist if !e.values.is_empty() => p.add(
                    &ep.key("values"),
                    format!("must be empty with operator {:?}", e.operator),
                ),
                _ => {}
            }
        }
        for (i, ph) in self.pod_phase_selectors.iter().enumerate() {
            if !POD_PHASES.contains(&ph.as_str()) {
                p.add(
                    &path.key("podPhaseSelectors").index(i),
                    format!(
                        "unknown pod phase `{ph}`: expected one of {}",
                        POD_PHASES.join(", ")
                    ),
                );
            }
        }
    }

    /// The namespaces this selector looks in, given the chaos object's own namespace.
    pub fn target_namespaces(&self, default_namespace: &str) -> Vec<String> {
        let set: BTreeSet<String> = if !self.namespaces.is_empty() {
            self.namespaces.iter().cloned().collect()
        } else if !self.pods.is_empty() {
            self.pods.keys().cloned().collect()
        } else {
            [default_namespace.to_string()].into()
        };
        set.into_iter().collect()
    }

    /// True if `pod` matches every criterion except namespaces and node labels (which need
    /// the namespace and node lists; see [`select`]).
    pub fn matches_pod(&self, pod: &Pod) -> bool {
        let meta = &pod.metadata;
        let ns = meta.namespace.as_deref().unwrap_or_default();
        let name = meta.name.as_deref().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let node = spec.and_then(|s| s.node_name.as_deref());
        let phase = status.and_then(|s| s.phase.as_deref());
        if !self.pods.is_empty()
            && !self
                .pods
                .get(ns)
                .is_some_and(|names| names.iter().any(|n| n == name))
        {
            return false;
        }
        if !self.nodes.is_empty() && !node.is_some_and(|n| self.nodes.iter().any(|x| x == n)) {
            return false;
        }
        if !self.pod_phase_selectors.is_empty()
            && !phase.is_some_and(|p| self.pod_phase_selectors.iter().any(|x| x == p))
        {
            return false;
        }
        let empty = BTreeMap::new();
        let labels = meta.labels.as_ref().unwrap_or(&empty);
        let annotations = meta.annotations.as_ref().unwrap_or(&empty);
        if !map_matches(&self.label_selectors, labels)
            || !map_matches(&self.annotation_selectors, annotations)
        {
            return false;
        }
        for e in &self.expression_selectors {
            let v = labels.get(&e.key);
            let ok = match e.operator {
                Operator::In => v.is_some_and(|v| e.values.contains(v)),
                Operator::NotIn => !v.is_some_and(|v| e.values.contains(v)),
                Operator::Exists => v.is_some(),
                Operator::DoesNotExist => v.is_none(),
            };
            if !ok {
                return false;
            }
        }
        for (field, want) in &self.field_selectors {
            let got: Option<&str> = match field.as_str() {
                "metadata.name" => Some(name),
                "metadata.namespace" => Some(ns),
                "spec.nodeName" => node,
                "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.as_deref()),
                "spec.restartPolicy" => spec.and_then(|s| s.restart_policy.as_deref()),
                "spec.schedulerName" => spec.and_then(|s| s.scheduler_name.as_deref()),
                "status.phase" => phase,
                "status.podIP" => status.and_then(|s| s.pod_ip.as_deref()),
                "status.nominatedNodeName" => status.and_then(|s| s.nominated_node_name.as_deref()),
                _ => None,
            };
            if got.unwrap_or_default() != want {
                return false;
            }
        }
        true
    }
}

fn map_matches(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// A Kubernetes DNS label (RFC 1123): namespace names.
pub(crate) fn valid_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Selects pods: the namespace policy first (refused namespaces are reported, not searched), then
/// every criterion, then `mode` with an RNG seeded by `seed` over candidates sorted by
/// namespace/name. `default_namespace` is the chaos object's namespace.
pub fn select<'a>(
    selector: &PodSelector,
    mode: Mode,
    seed: u64,
    default_namespace: &str,
    policy: &NamespacePolicy,
    input: &SelectionInput<'a>,
) -> Result<Selection<'a>, SelectError> {
    let mut p = Problems::new();
    selector.validate(&FieldPath::root(), &mut p);
    if !p.is_empty() {
        return Err(SelectError(p.into_vec()));
    }
    let mut allowed = BTreeSet::new();
    let mut refused = Vec::new();
    for ns in selector.target_namespaces(default_namespace) {
        let found = input
            .namespaces
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(ns.as_str()));
        match found.map(|n| policy.permits(n)) {
            None => refused.push(Refused {
                namespace: ns,
                reason: "namespace not found".into(),
            }),
            Some(Err(reason)) => refused.push(Refused {
                namespace: ns,
                reason,
            }),
            Some(Ok(())) => {
                allowed.insert(ns);
            }
        }
    }
    let nodes_ok: Option<BTreeSet<&str>> = (!selector.node_selectors.is_empty()).then(|| {
        let empty = BTreeMap::new();
        input
            .nodes
            .iter()
            .filter(|n| {
                map_matches(
                    &selector.node_selectors,
                    n.metadata.labels.as_ref().unwrap_or(&empty),
                )
            })
            .filter_map(|n| n.metadata.name.as_deref())
            .collect()
    });
    let mut candidates: Vec<&'a Pod> = input
        .pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| {
            pod.metadata
                .namespace
                .as_deref()
                .is_some_and(|ns| allowed.contains(ns))
        })
        .filter(|pod| match &nodes_ok {
            None => true,
            Some(set) => pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| set.contains(n)),
        })
        .filter(|pod| selector.matches_pod(pod))
        .collect();
    candidates.sort_by(|a, b| {
        (a.metadata.namespace.as_deref(), a.metadata.name.as_deref())
            .cmp(&(b.metadata.namespace.as_deref(), b.metadata.name.as_deref()))
    });
    let (m, v) = mode.to_spec();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pods = choose(&candidates, m, v.as_deref(), &mut rng);
    Ok(Selection {
        pods,
        matched: candidates.len(),
        refused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{namespace, node, pod};

    struct World {
        pods: Vec<Pod>,
        nodes: Vec<Node>,
        namespaces: Vec<Namespace>,
    }

    impl World {
        fn input(&self) -> SelectionInput<'_> {
            SelectionInput {
                pods: &self.pods,
                nodes: &self.nodes,
                namespaces: &self.namespaces,
            }
        }
    }

    fn policy() -> NamespacePolicy {
        NamespacePolicy {
            allowed: vec!["shop".into(), "db".into(), "kube-system".into()],
            ..Default::default()
        }
    }

    fn world() -> World {
        let mut pods = vec![
            pod("shop", "web-1", "n1", &[("app", "web"), ("tier", "front")]),
            pod("shop", "web-2", "n2", &[("app", "web"), ("tier", "front")]),
            pod("shop", "cart-1", "n1", &[("app", "cart")]),
            pod("db", "pg-0", "n3", &[("app", "pg")]),
            pod("other", "x-1", "n1", &[("app", "web")]),
            pod("kube-system", "dns-1", "n1", &[("app", "web")]),
        ];
        pods[2].metadata.annotations = Some([("owner".to_string(), "team-a".to_string())].into());
        pods[1].status.as_mut().unwrap().phase = Some("Pending".into());
        World {
            pods,
            nodes: vec![
                node("n1", &[("zone", "a")]),
                node("n2", &[("zone", "b")]),
                node("n3", &[("zone", "a"), ("disk", "ssd")]),
            ],
            namespaces: vec![
                namespace("shop", &[]),
                namespace("db", &[]),
                namespace("other", &[]),
                namespace("kube-system", &[]),
            ],
        }
    }

    fn names(s: &Selection<'_>) -> Vec<String> {
        s.pods
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap(),
                    p.metadata.name.as_deref().unwrap()
                )
            })
            .collect()
    }

    fn sel_in(w: &World, s: &PodSelector, pol: &NamespacePolicy) -> Vec<String> {
        names(&select(s, Mode::All, 1, "shop", pol, &w.input()).expect("a valid selector"))
    }

    fn sel(w: &World, s: PodSelector) -> Vec<String> {
        sel_in(w, &s, &policy())
    }

    #[test]
    fn namespaces_default_to_the_objects_namespace() {
        let w = world();
        assert_eq!(
            sel(&w, PodSelector::default()),
            ["shop/cart-1", "shop/web-1", "shop/web-2"]
        );
        let s = PodSelector {
            namespaces: vec!["db".into(), "shop".into()],
            ..Default::default()
        };
        assert_eq!(sel(&w, s).len(), 4);
    }

    #[test]
    fn label_and_annotation_selectors_must_all_match() {
        let w = world();
        let s = PodSelector {
            label_selectors: [
                ("app".into(), "web".into()),
                ("tier".into(), "front".into()),
            ]
            .into(),
            ..Default::default()
        };
        assert_eq!(sel(&w, s), ["shop/web-1", "shop/web-2"]);
        let s = PodSelector {
            annotation_selectors: [("owner".into(), "team-a".into())].into(),
            ..Default::default()
        };
        assert_eq!(sel(&w, s), ["shop/cart-1"]);
    }

    #[test]
    fn expression_selectors_follow_kubernetes_semantics() {
        let w = world();
        let expr = |op, values: &[&str]| PodSelector {
            expression_selectors: vec![ExpressionSelector {
                key: "tier".into(),
                operator: op,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
            ..Default::default()
        };
        assert_eq!(
            sel(&w, expr(Operator::In, &["front"])),
            ["shop/web-1", "shop/web-2"]
        );
        assert_eq!(
            sel(&w, expr(Operator::NotIn, &["front"])),
            ["shop/cart-1"],
            "NotIn matches pods without the label"
        );
        assert_eq!(
            sel(&w, expr(Operator::Exists, &[])),
            ["shop/web-1", "shop/web-2"]
        );
        assert_eq!(sel(&w, expr(Operator::DoesNotExist, &[])), ["shop/cart-1"]);
    }

    #[test]
    fn field_selectors_read_pod_fields_and_reject_unknown_ones() {
        let w = world();
        let f = |k: &str, v: &str| PodSelector {
            field_selectors: [(k.to_string(), v.to_string())].into(),
            ..Default::default()
        };
        assert_eq!(sel(&w, f("metadata.name", "web-2")), ["shop/web-2"]);
        assert_eq!(sel(&w, f("metadata.namespace", "shop")).len(), 3);
        assert_eq!(
            sel(&w, f("spec.nodeName", "n1")),
            ["shop/cart-1", "shop/web-1"]
        );
        assert_eq!(sel(&w, f("status.phase", "Pending")), ["shop/web-2"]);
        assert_eq!(sel(&w, f("spec.serviceAccountName", "default")).len(), 3);
        assert_eq!(sel(&w, f("status.podIP", "10.1.2.3")).len(), 3);
        let e = select(
            &f("spec.hostname", "x"),
            Mode::All,
            1,
            "shop",
            &policy(),
            &w.input(),
        )
        .expect_err("unknown field selector");
        assert!(
            e.to_string()
                .contains("fieldSelectors.spec.hostname: unsupported field selector"),
            "{e}"
        );
    }

    #[test]
    fn phases_nodes_node_labels_and_pods() {
        let w = world();
        let s = PodSelector {
            pod_phase_selectors: vec!["Running".into()],
            ..Default::default()
        };
        assert_eq!(sel(&w, s), ["shop/cart-1", "shop/web-1"]);
        let s = PodSelector {
            nodes: vec!["n2".into()],
            ..Default::default()
        };
        assert_eq!(sel(&w, s), ["shop/web-2"]);
        let s = PodSelector {
            namespaces: vec!["shop".into(), "db".into()],
            node_selectors: [("zone".into(), "a".into())].into(),
            ..Default::default()
        };
        assert_eq!(sel(&w, s), ["db/pg-0", "shop/cart-1", "shop/web-1"]);
        let s = PodSelector {
            pods: [
                ("db".into(), vec!["pg-0".into()]),
                ("shop".into(), vec!["web-2".into(), "gone".into()]),
            ]
            .into(),
            ..Default::default()
        };
        assert_eq!(
            sel(&w, s),
            ["db/pg-0", "shop/web-2"],
            "pods names namespaces too"
        );
        let bad = PodSelector {
            pod_phase_selectors: vec!["Runing".into()],
            ..Default::default()
        };
        assert!(select(&bad, Mode::All, 1, "shop", &policy(), &w.input()).is_err());
    }

    #[test]
    fn terminating_pods_are_not_candidates() {
        let mut w = world();
        w.pods[0].metadata.deletion_timestamp = Some(crate::fixtures::time(1_700_000_000));
        assert_eq!(
            sel(&w, PodSelector::default()),
            ["shop/cart-1", "shop/web-2"]
        );
    }

    #[test]
    fn refused_namespaces_are_reported_not_searched() {
        let w = world();
        let s = PodSelector {
            namespaces: vec![
                "shop".into(),
                "other".into(),
                "kube-system".into(),
                "missing".into(),
            ],
            ..Default::default()
        };
        let pol = NamespacePolicy {
            allowed: vec!["shop".into(), "kube-system".into()],
            ..Default::default()
        };
        let r = select(&s, Mode::All, 1, "shop", &pol, &w.input()).expect("valid");
        assert_eq!(names(&r), ["shop/cart-1", "shop/web-1", "shop/web-2"]);
        let refused: Vec<&str> = r.refused.iter().map(|x| x.namespace.as_str()).collect();
        assert_eq!(refused, ["kube-system", "missing", "other"]);
        assert!(
            r.refused[0].reason.contains("protected"),
            "{:?}",
            r.refused[0]
        );
        assert_eq!(r.refused[1].reason, "namespace not found");
    }

    #[test]
    fn modes_choose_counts_reproducibly_whatever_the_input_order() {
        let mut w = world();
        w.pods = (0..40)
            .map(|i| pod("shop", &format!("p-{i:02}"), "n1", &[]))
            .collect();
        let pick = |w: &World, mode: Mode, seed: u64| {
            names(
                &select(
                    &PodSelector::default(),
                    mode,
                    seed,
                    "shop",
                    &policy(),
                    &w.input(),
                )
                .unwrap(),
            )
        };
        assert_eq!(pick(&w, Mode::One, 7).len(), 1);
        assert_eq!(pick(&w, Mode::All, 7).len(), 40);
        assert_eq!(pick(&w, Mode::Fixed(5), 7).len(), 5);
        assert_eq!(pick(&w, Mode::Fixed(500), 7).len(), 40);
        assert_eq!(pick(&w, Mode::FixedPercent(25), 7).len(), 10);
        for seed in 0..20 {
            assert!(pick(&w, Mode::RandomMaxPercent(10), seed).len() <= 4);
        }
        let a = pick(&w, Mode::Fixed(5), 42);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(a, sorted, "chosen pods come sorted");
        w.pods.reverse();
        assert_eq!(
            pick(&w, Mode::Fixed(5), 42),
            a,
            "same seed, same pods, any list order"
        );
        let distinct: BTreeSet<Vec<String>> =
            (0..10).map(|s| pick(&w, Mode::Fixed(5), s)).collect();
        assert!(distinct.len() > 5, "different seeds pick differently");
    }

    #[test]
    fn mode_from_spec_checks_the_value() {
        use havoc_spec::Mode as M;
        assert_eq!(Mode::from_spec(M::Fixed, Some("3")), Ok(Mode::Fixed(3)));
        assert_eq!(
            Mode::from_spec(M::FixedPercent, Some("50%")),
            Ok(Mode::FixedPercent(50))
        );
        assert_eq!(Mode::from_spec(M::All, None), Ok(Mode::All));
        assert!(Mode::from_spec(M::Fixed, Some("0"))
            .unwrap_err()
            .contains("whole number >= 1"));
        assert!(Mode::from_spec(M::RandomMaxPercent, Some("101")).is_err());
        assert!(Mode::from_spec(M::Fixed, None)
            .unwrap_err()
            .contains("required"));
        assert_eq!(Mode::FixedPercent(30).to_string(), "fixed-percent 30");
    }

    #[test]
    fn selector_rules_name_the_field() {
        let s = PodSelector {
            namespaces: vec!["Bad_NS".into()],
            expression_selectors: vec![ExpressionSelector {
                key: "a".into(),
                operator: Operator::In,
                values: vec![],
            }],
            pods: [("db".into(), vec![])].into(),
            ..Default::default()
        };
        let mut p = Problems::new();
        s.validate(&FieldPath::root().key("spec").key("selector"), &mut p);
        let paths: Vec<String> = p
            .into_vec()
            .into_iter()
            .map(|(p, _)| p.to_string())
            .collect();
        assert!(
            paths.contains(&"spec.selector.namespaces[0]".to_string()),
            "{paths:?}"
        );
        assert!(paths.contains(&"spec.selector.expressionSelectors[0].values".to_string()));
        assert!(paths.contains(&"spec.selector.pods.db".to_string()));
    }
}
